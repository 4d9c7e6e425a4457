//! SQL for the `items` table, on both databases. The pool counts every committed write in
//! the model families (`model="item"`, named in `App::from_figment`).

use serde::{Deserialize, Serialize};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, FromRow};

use babylon::db::{DbConn, DbError};
use babylon::metrics::LabelValue;

/// The `model` label of the model families for the `items` table.
pub const MODEL: &str = "item";

/// Rows per INSERT statement of a bulk create: 5 parameters a row stays far below
/// SQLite's and PostgreSQL's parameter limits.
const ROWS_PER_STATEMENT: usize = 100;

/// What an item is; the schema allows these three. As a label value (`LabelValue`), its
/// name in snake case, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, LabelValue)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// `book`.
    Book,
    /// `tool`.
    Tool,
    /// `other`.
    Other,
}

impl ItemKind {
    /// The kind as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Book => "book",
            ItemKind::Tool => "tool",
            ItemKind::Other => "other",
        }
    }

    fn parse(text: &str) -> Option<ItemKind> {
        [ItemKind::Book, ItemKind::Tool, ItemKind::Other]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// An item as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// A UUIDv7, hyphenated lower case.
    pub id: String,
    /// Unique among items.
    pub name: String,
    /// What it is.
    pub kind: ItemKind,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// A row as stored; `kind` is checked by the schema and parsed here.
#[derive(FromRow)]
struct ItemRow {
    id: String,
    name: String,
    kind: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ItemRow> for Item {
    type Error = DbError;

    fn try_from(row: ItemRow) -> Result<Item, DbError> {
        let kind = ItemKind::parse(&row.kind).ok_or_else(|| {
            DbError::from(sqlx::Error::Decode(
                format!("unknown item kind `{}`", row.kind).into(),
            ))
        })?;
        Ok(Item {
            id: row.id,
            name: row.name,
            kind,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// What a create or update writes.
#[derive(Debug, Clone)]
pub struct ItemFields {
    /// The validated name.
    pub name: String,
    /// The kind.
    pub kind: ItemKind,
}

const COLUMNS: &str = "id, name, kind, created_at, updated_at";

fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn new_item(fields: ItemFields, now: i64) -> Item {
    Item {
        id: uuid::Uuid::now_v7().to_string(),
        name: fields.name,
        kind: fields.kind,
        created_at: now,
        updated_at: now,
    }
}

/// One page of items, oldest first (UUIDv7 ids sort by creation time).
pub async fn list(conn: &mut DbConn, offset: i64, limit: i64) -> Result<(Vec<Item>, i64), DbError> {
    let sql = format!("SELECT {COLUMNS} FROM items ORDER BY id LIMIT $1 OFFSET $2");
    let rows: Vec<ItemRow> = conn
        .fetch_all(sqlx::query_as(&sql).bind(limit).bind(offset))
        .await?;
    let (total,): (i64,) = conn
        .fetch_one(sqlx::query_as("SELECT COUNT(*) FROM items"))
        .await?;
    let items = rows
        .into_iter()
        .map(Item::try_from)
        .collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// The item `id`, if there is one.
pub async fn get(conn: &mut DbConn, id: &str) -> Result<Option<Item>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM items WHERE id = $1");
    let row: Option<ItemRow> = conn
        .fetch_optional(sqlx::query_as(&sql).bind(id.to_string()))
        .await?;
    row.map(Item::try_from).transpose()
}

/// Inserts one item, made from `fields`, and counts it.
pub async fn insert(conn: &mut DbConn, fields: ItemFields) -> Result<Item, DbError> {
    let item = new_item(fields, now_millis());
    let sql = format!("INSERT INTO items ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
    conn.execute(bind_item(sqlx::query(&sql), &item)).await?;
    Ok(item)
}

/// Inserts every item or none (one transaction), in multi-row statements.
pub async fn insert_many(conn: &mut DbConn, all: Vec<ItemFields>) -> Result<Vec<Item>, DbError> {
    let now = now_millis();
    let items: Vec<Item> = all
        .into_iter()
        .map(|fields| new_item(fields, now))
        .collect();
    let statements: Vec<String> = items
        .chunks(ROWS_PER_STATEMENT)
        .map(|chunk| multi_row_insert(chunk.len()))
        .collect();
    let queries: Vec<Query<'_, Any, AnyArguments<'_>>> = statements
        .iter()
        .zip(items.chunks(ROWS_PER_STATEMENT))
        .map(|(sql, chunk)| chunk.iter().fold(sqlx::query(sql), bind_item))
        .collect();
    conn.execute_many_atomically(queries).await?;
    Ok(items)
}

/// Returns the updated item, or `None` when there is no such id.
pub async fn update(
    conn: &mut DbConn,
    id: &str,
    fields: ItemFields,
) -> Result<Option<Item>, DbError> {
    let sql = "UPDATE items SET name = $1, kind = $2, updated_at = $3 WHERE id = $4";
    let query = sqlx::query(sql)
        .bind(fields.name)
        .bind(fields.kind.as_str())
        .bind(now_millis())
        .bind(id.to_string());
    let rows = conn.execute(query).await?;
    if rows == 0 {
        return Ok(None);
    }
    get(conn, id).await
}

/// Whether a row was deleted.
pub async fn delete(conn: &mut DbConn, id: &str) -> Result<bool, DbError> {
    let rows = conn
        .execute(sqlx::query("DELETE FROM items WHERE id = $1").bind(id.to_string()))
        .await?;
    Ok(rows > 0)
}

fn bind_item<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    item: &Item,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(item.id.clone())
        .bind(item.name.clone())
        .bind(item.kind.as_str())
        .bind(item.created_at)
        .bind(item.updated_at)
}

/// `INSERT … VALUES ($1, …, $5), ($6, …, $10), …` for `rows` rows.
fn multi_row_insert(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let first = row * 5 + 1;
            format!(
                "(${}, ${}, ${}, ${}, ${})",
                first,
                first + 1,
                first + 2,
                first + 3,
                first + 4
            )
        })
        .collect();
    format!("INSERT INTO items ({COLUMNS}) VALUES {}", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_placeholders_are_numbered_in_order() {
        assert_eq!(
            multi_row_insert(2),
            "INSERT INTO items (id, name, kind, created_at, updated_at) VALUES ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)"
        );
    }
}
