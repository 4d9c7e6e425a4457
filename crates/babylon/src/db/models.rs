//! Model metrics for every table, with no line of application code: the pool reads which
//! table a statement writes from its SQL and, once the write is committed, counts the
//! rows it changed in `rocket_model_{inserts,updates,deletes}_total{model}`.
//!
//! Why by SQL, in the pool: every write of the application goes through [`DbConn`]
//! (crate::db::DbConn), whose statements carry their SQL and whose results carry the rows
//! affected on both SQLite and PostgreSQL (`changes()` and the command tag), so counting
//! there needs neither an ORM nor a hook per model, and it counts only what committed: a
//! single statement once it succeeded (each commits on its own), the statements of
//! `execute_many_atomically` once their transaction committed, never a failed or
//! rolled-back write.
//!
//! What is read: the statement's first keyword after comments, `INSERT [OR …] INTO t`,
//! `REPLACE INTO t`, `UPDATE [OR …] [ONLY] t`, `DELETE FROM [ONLY] t`, with `t` bare
//! (compared in lower case, as both databases fold it), `"quoted"` or `schema.t`. A
//! statement that begins otherwise (`WITH …`, `SELECT`) is not a model write: count such
//! writes with [`ModelFamilies`](super::ModelFamilies) by hand. An upsert counts as
//! inserts (its rows affected do not say which rows were updated).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::metrics::{ModelCounters, ModelFamilies};

/// Tables that are babylon's own bookkeeping, never an application model.
const OWN_TABLES: [&str; 2] = ["babylon_write_probe", "_sqlx_migrations"];

/// How a statement changes its table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Insert,
    Update,
    Delete,
}

/// A write a statement makes: its kind and the table it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelWrite {
    pub(crate) change: Change,
    pub(crate) table: String,
}

/// What `sql` does, as its span names it (`db.operation.name`): its first keyword,
/// upper-cased, when that is one of SQL's statements.
pub(crate) fn operation(sql: &str) -> Option<&'static str> {
    const OPERATIONS: [&str; 16] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "VALUES", "CREATE", "ALTER",
        "DROP", "BEGIN", "COMMIT", "ROLLBACK", "PRAGMA", "EXPLAIN", "TRUNCATE",
    ];
    let first = Words::new(sql).keyword()?;
    OPERATIONS
        .into_iter()
        .find(|operation| operation.eq_ignore_ascii_case(first))
}

/// The write `sql` makes, if it is an `INSERT`, `UPDATE` or `DELETE` of one table. Runs
/// on every statement: a read is told apart by its first word, without allocating.
pub(crate) fn model_write(sql: &str) -> Option<ModelWrite> {
    let mut words = Words::new(sql);
    let first = words.keyword()?;
    let is = |word: &str, keyword: &str| word.eq_ignore_ascii_case(keyword);
    let change = if is(first, "insert") {
        let mut next = words.keyword()?;
        if is(next, "or") {
            words.keyword()?; // REPLACE, IGNORE, ABORT, FAIL, ROLLBACK
            next = words.keyword()?;
        }
        is(next, "into").then_some(Change::Insert)?
    } else if is(first, "replace") {
        is(words.keyword()?, "into").then_some(Change::Insert)?
    } else if is(first, "update") {
        Change::Update
    } else if is(first, "delete") {
        is(words.keyword()?, "from").then_some(Change::Delete)?
    } else {
        return None;
    };
    let mut table = words.table()?;
    if change == Change::Update && table == "or" {
        words.keyword()?;
        table = words.table()?;
    }
    if table == "only" && change != Change::Insert {
        table = words.table()?;
    }
    Some(ModelWrite { change, table })
}

/// Reads SQL words from the start of a statement, skipping white space and comments.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(sql: &'a str) -> Self {
        Words { rest: sql }
    }

    fn skip_blanks(&mut self) {
        loop {
            self.rest = self.rest.trim_start();
            if let Some(comment) = self.rest.strip_prefix("--") {
                self.rest = comment.find('\n').map_or("", |end| &comment[end..]);
            } else if let Some(comment) = self.rest.strip_prefix("/*") {
                self.rest = comment.find("*/").map_or("", |end| &comment[end + 2..]);
            } else {
                return;
            }
        }
    }

    /// The next bare word, as written.
    fn keyword(&mut self) -> Option<&'a str> {
        self.skip_blanks();
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word)
    }

    /// A table name, bare (lower-cased) or quoted, the last part of `schema.table`.
    fn table(&mut self) -> Option<String> {
        let mut name;
        loop {
            self.skip_blanks();
            name = match self.rest.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    self.rest = &quoted[end + 1..];
                    quoted[..end].to_string()
                }
                None => self.keyword()?.to_ascii_lowercase(),
            };
            match self.rest.strip_prefix('.') {
                Some(rest) => self.rest = rest,
                None => return Some(name),
            }
        }
    }
}

/// Counts committed model writes of one pool; the application may name a table's model
/// ([`Babylon::with_model_name`](crate::Babylon::with_model_name)), else the model is the
/// table's name.
#[derive(Clone)]
pub(crate) struct ModelRecorder {
    families: ModelFamilies,
    names: Arc<HashMap<String, String>>,
    /// Each model's counters, resolved on its first write.
    counters: Arc<Mutex<HashMap<String, ModelCounters>>>,
}

impl ModelRecorder {
    pub(crate) fn new(families: ModelFamilies, names: HashMap<String, String>) -> Self {
        ModelRecorder {
            families,
            names: Arc::new(names),
            counters: Arc::default(),
        }
    }

    /// Counts `rows` changed by a committed `write`.
    pub(crate) fn committed(&self, write: &ModelWrite, rows: u64) {
        if rows == 0 || OWN_TABLES.contains(&write.table.as_str()) {
            return;
        }
        let model = self
            .names
            .get(&write.table)
            .map_or(write.table.as_str(), String::as_str);
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let counters = counters
            .entry(model.to_string())
            .or_insert_with(|| self.families.model(model));
        match write.change {
            Change::Insert => counters.inserts.inc_by(rows),
            Change::Update => counters.updates.inc_by(rows),
            Change::Delete => counters.deletes.inc_by(rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(sql: &str) -> Option<(Change, String)> {
        model_write(sql).map(|w| (w.change, w.table))
    }

    #[test]
    fn the_table_of_every_spelling_of_a_write_is_found() {
        use Change::*;
        let cases: &[(&str, Change, &str)] = &[
            ("INSERT INTO items (id) VALUES ($1)", Insert, "items"),
            ("insert into Items(id) values ($1)", Insert, "items"),
            ("  \n\tINSERT\nINTO\titems VALUES ($1)", Insert, "items"),
            (
                "-- a comment\nINSERT INTO items VALUES ($1)",
                Insert,
                "items",
            ),
            (
                "/* a\ncomment */ INSERT /* x */ INTO items VALUES ($1)",
                Insert,
                "items",
            ),
            ("INSERT OR REPLACE INTO items VALUES ($1)", Insert, "items"),
            ("insert or ignore into items values ($1)", Insert, "items"),
            ("REPLACE INTO items VALUES ($1)", Insert, "items"),
            ("INSERT INTO public.items VALUES ($1)", Insert, "items"),
            (
                "INSERT INTO \"Order Lines\" VALUES ($1)",
                Insert,
                "Order Lines",
            ),
            (
                "INSERT INTO \"public\".\"items\" VALUES ($1)",
                Insert,
                "items",
            ),
            (
                "INSERT INTO items VALUES ($1) ON CONFLICT (id) DO NOTHING",
                Insert,
                "items",
            ),
            ("UPDATE items SET name = $1 WHERE id = $2", Update, "items"),
            ("update only items set name = $1", Update, "items"),
            ("UPDATE OR ROLLBACK items SET name = $1", Update, "items"),
            ("UPDATE items_2024 SET n = 1", Update, "items_2024"),
            ("DELETE FROM items WHERE id = $1", Delete, "items"),
            ("delete from only items", Delete, "items"),
            ("DELETE FROM s.items RETURNING id", Delete, "items"),
        ];
        for (sql, change, table) in cases {
            assert_eq!(write(sql), Some((*change, table.to_string())), "{sql}");
        }
    }

    #[test]
    fn reads_and_unknown_shapes_are_not_model_writes() {
        for sql in [
            "SELECT * FROM items",
            "select 1",
            "WITH x AS (SELECT 1) INSERT INTO items SELECT * FROM x",
            "PRAGMA journal_mode = WAL",
            "CREATE TABLE items (id TEXT)",
            "",
            "   ",
            "-- only a comment",
            "/* unterminated",
            "INSERT",
            "INSERT items VALUES (1)",
            "DELETE items",
            "INSERT INTO \"unterminated",
            "INSERT INTO ",
        ] {
            assert_eq!(write(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn only_committed_rows_of_application_tables_are_counted() {
        let registry = crate::prometheus::Registry::new();
        let families = ModelFamilies::register(&registry).unwrap();
        let names = HashMap::from([("items".to_string(), "item".to_string())]);
        let recorder = ModelRecorder::new(families.clone(), names);
        let items = model_write("INSERT INTO items VALUES (1), (2)").unwrap();
        recorder.committed(&items, 2);
        let orders = model_write("DELETE FROM orders").unwrap();
        recorder.committed(&orders, 3);
        let probe = model_write("UPDATE babylon_write_probe SET probed_at = 1").unwrap();
        recorder.committed(&probe, 1);
        assert_eq!(families.model("item").inserts.get(), 2);
        assert_eq!(families.model("items").inserts.get(), 0);
        assert_eq!(families.model("orders").deletes.get(), 3);
        assert_eq!(families.model("babylon_write_probe").updates.get(), 0);
    }
}
