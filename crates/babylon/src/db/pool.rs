//! Our `rocket_db_pools::Pool`: a sqlx 0.8 `any` pool (SQLite or PostgreSQL, chosen by the
//! URL at run time) whose connections record every statement, and which never hands out a
//! connection whose session it is unsure of.
//!
//! sqlx tracks whether a connection is inside a transaction with a counter of its own, and
//! a failed `COMMIT` or `ROLLBACK` can leave that counter and the database disagreeing. On
//! SQLite a full disk does exactly that: the failed statement makes SQLite roll the whole
//! transaction back, sqlx's `ROLLBACK` then fails ("no transaction is active") and sqlx
//! still counts one open transaction; the next `begin()` on that connection issues a
//! `SAVEPOINT`, which opens a real transaction, and after one more failure `ROLLBACK TO`
//! leaves it open for good. Every later write on that connection, each answered as a
//! success, went into a transaction nobody would ever commit, while the write lock it held
//! made every other connection wait and fail ("database is locked").
//!
//! So a [`DbConn`] knows what state its session is in: it is returned to the pool only
//! after an operation that succeeded, or that the database refused for its data (a
//! constraint, no such row) outside a transaction. Anything else, any failure inside a
//! transaction, and an operation abandoned midway (its future dropped) closes the
//! connection instead; the pool opens a fresh one when needed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rocket::figment::Figment;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::query::{Query, QueryAs};
use sqlx::{Any, AnyPool, Connection, Execute, FromRow};

use super::errors::DbError;
use super::metrics::{Instruments, Statement};
use super::models::{model_write, ModelRecorder, ModelWrite};
use super::write_health::WriteHealth;
use crate::settings::{state_directory, DatabaseUrl, Vendor};

/// The settings every SQLite connection gets when it opens.
const SQLITE_PRAGMAS: [&str; 4] = [
    // WAL lets readers run beside the writer.
    "PRAGMA journal_mode = WAL",
    // FULL (SQLite's default, stated here because durability depends on it): in WAL mode
    // every commit syncs the WAL, so a write answered 2xx survives a crash of the process
    // (SIGKILL) and of the machine (power loss). NORMAL would survive only the former.
    "PRAGMA synchronous = FULL",
    // Concurrent writers wait for the lock instead of failing at once.
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
];

/// What the pool and every connection it hands out record into.
#[derive(Default)]
struct Shared {
    /// Set once the service has wired the pool's metrics.
    instruments: OnceLock<Instruments>,
    /// Set with them: counts committed writes by model.
    models: OnceLock<ModelRecorder>,
    writes: WriteHealth,
}

impl Shared {
    /// Counts the rows of committed model writes.
    fn committed(&self, writes: &[(ModelWrite, u64)]) {
        if let Some(models) = self.models.get() {
            for (write, rows) in writes {
                models.committed(write, *rows);
            }
        }
    }

    /// Records an operation's outcome: a failure is classified and counted in
    /// `rocket_db_errors_total`, and a write's outcome goes to the write health.
    fn settled<T>(&self, access: Access, result: Result<T, sqlx::Error>) -> Result<T, DbError> {
        let outcome = result.map_err(|source| {
            let error = DbError::from(source);
            if let Some(instruments) = self.instruments.get() {
                instruments.error(error.kind);
            }
            error
        });
        if access == Access::Write {
            match &outcome {
                Ok(_) => self.writes.succeeded(),
                Err(error) => self.writes.failed(error.kind),
            }
        }
        outcome
    }

    async fn time<T>(
        &self,
        statement: Statement,
        sql: &str,
        write: Option<&ModelWrite>,
        run: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        match self.instruments.get() {
            Some(instruments) => instruments.time(statement, sql, write, run).await,
            None => run.await,
        }
    }
}

/// A pool plus the handles it records into, once the service has wired them.
pub struct DbPool {
    pool: AnyPool,
    url: DatabaseUrl,
    shared: Arc<Shared>,
}

impl DbPool {
    /// Which database this pool talks to.
    pub fn vendor(&self) -> Vendor {
        self.url.vendor()
    }

    /// The validated URL (its `Display` hides any password).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The sqlx pool underneath, for migrations and the pool gauges.
    pub fn sqlx_pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts recording into `instruments`; the first call wins.
    pub fn instrument(&self, instruments: Instruments) {
        let _ = self.shared.instruments.set(instruments);
    }

    /// Starts counting committed writes by model (`rocket_model_*`); the first call wins.
    pub(crate) fn count_models(&self, models: ModelRecorder) {
        let _ = self.shared.models.set(models);
    }

    fn instruments(&self) -> Option<&Instruments> {
        self.shared.instruments.get()
    }

    /// Whether writes currently reach storage, as the latest write found out.
    pub fn writes(&self) -> &WriteHealth {
        &self.shared.writes
    }

    /// Makes the row [`DbPool::probe_write`] rewrites, if it is not there: babylon's own
    /// table, `babylon_write_probe`, beside the application's (the same statements as the
    /// service's migration of that name, so either may come first). Like migrations, on
    /// the uncounted pool: start-up bookkeeping is not the application's traffic; and
    /// nothing is written when the row exists, so a read-only database starts as before.
    pub(crate) async fn ensure_write_probe(&self) -> Result<(), sqlx::Error> {
        let pool = self.sqlx_pool();
        let present = sqlx::query("SELECT probed_at FROM babylon_write_probe WHERE id = 1")
            .fetch_optional(pool)
            .await;
        if matches!(present, Ok(Some(_))) {
            return Ok(());
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS babylon_write_probe (id INTEGER PRIMARY KEY, probed_at BIGINT NOT NULL)",
        )
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO babylon_write_probe (id, probed_at) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Writes one row of `babylon_write_probe` (a table of its own, so no data of the
    /// application's is touched): `/api/health` calls it while writes are failing, to see
    /// when they work again even if no request writes. The outcome lands in
    /// [`DbPool::writes`].
    pub async fn probe_write(&self, timeout: Duration) -> Result<(), DbError> {
        let probe = async {
            let mut conn = self.connection().await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                });
            conn.execute(
                sqlx::query("UPDATE babylon_write_probe SET probed_at = $1 WHERE id = 1").bind(now),
            )
            .await
        };
        match rocket::tokio::time::timeout(timeout, probe).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(self.timed_out(false)),
        }
    }

    /// Whether the database answers `SELECT 1` within `timeout`. Not getting a connection
    /// in time counts as a connection error, like any failed acquire.
    pub async fn ping(&self, timeout: Duration) -> Result<(), DbError> {
        let started = std::time::Instant::now();
        let mut conn = match rocket::tokio::time::timeout(timeout, self.connection()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(self.timed_out(true)),
        };
        let left = timeout.saturating_sub(started.elapsed());
        match rocket::tokio::time::timeout(left, conn.ping()).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(false)),
        }
    }

    fn timed_out(&self, acquiring: bool) -> DbError {
        let error = DbError::from(sqlx::Error::PoolTimedOut);
        if let Some(instruments) = self.instruments() {
            if acquiring {
                instruments.connection_failed(error.kind);
            } else {
                instruments.error(error.kind);
            }
        }
        error
    }

    /// Why a connection cannot be opened, from one direct attempt: a pool only reports
    /// "timed out", which hides "connection refused" or "password authentication failed".
    pub async fn diagnose(&self) -> Option<String> {
        let attempt = sqlx::AnyConnection::connect(self.url.connect_url());
        match rocket::tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("no answer within 5 s".into()),
        }
    }

    /// A connection from the pool; failures count as connection errors.
    pub async fn connection(&self) -> Result<DbConn, DbError> {
        match self.pool.acquire().await {
            Ok(conn) => Ok(DbConn {
                conn,
                shared: self.shared.clone(),
                session: Session::Clean,
            }),
            Err(source) => {
                let error = DbError::from(source);
                if let Some(instruments) = self.instruments() {
                    instruments.connection_failed(error.kind);
                }
                Err(error)
            }
        }
    }
}

#[rocket::async_trait]
impl rocket_db_pools::Pool for DbPool {
    type Connection = DbConn;
    type Error = DbError;

    async fn init(figment: &Figment) -> Result<Self, Self::Error> {
        let config: rocket_db_pools::Config = figment
            .extract()
            .map_err(|e| configuration(e.to_string()))?;
        let url =
            DatabaseUrl::parse(&config.url, state_directory().as_deref()).map_err(configuration)?;
        sqlx::any::install_default_drivers();
        let shared = Arc::new(Shared::default());
        let on_connect = shared.clone();
        let vendor = url.vendor();
        let mut options = AnyPoolOptions::new()
            .max_connections(u32::try_from(config.max_connections).unwrap_or(u32::MAX))
            .min_connections(config.min_connections.unwrap_or(0))
            .acquire_timeout(Duration::from_secs(config.connect_timeout))
            .after_connect(move |conn, _| {
                let shared = on_connect.clone();
                Box::pin(async move {
                    if let Some(instruments) = shared.instruments.get() {
                        instruments.connection_opened();
                    }
                    if vendor == Vendor::Sqlite {
                        for pragma in SQLITE_PRAGMAS {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            // The last line of defence for connections used without a DbConn (migrations):
            // one that sqlx still counts inside a transaction is closed, not pooled.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }));
        if let Some(idle) = config.idle_timeout {
            options = options.idle_timeout(Duration::from_secs(idle));
        }
        // Lazy: no connection is opened until first use, so start-up does not hang on an
        // unreachable server; migrations at ignite report that instead.
        let pool = options
            .connect_lazy(url.connect_url())
            .map_err(DbError::from)?;
        Ok(DbPool { pool, url, shared })
    }

    async fn get(&self) -> Result<Self::Connection, Self::Error> {
        self.connection().await
    }

    /// Rocket calls this when shutdown *begins*, while in-flight requests still run (its
    /// grace period follows). Closing the pool here would answer those requests "database
    /// unavailable", so the pool stays open; its connections close when the service ends.
    async fn close(&self) {
        rocket::info!("database pool stays open for in-flight requests; it closes at exit");
    }
}

fn configuration(message: impl Into<String>) -> DbError {
    let message: String = message.into();
    DbError::from(sqlx::Error::Configuration(message.into()))
}

/// What a [`DbConn`] knows about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    /// Outside any transaction, as the pool handed it out.
    Clean,
    /// An operation failed, or was abandoned midway, and may have left a transaction
    /// open or the connection half way through a message: close it, never reuse it.
    Unknown,
}

/// Whether an operation writes, for [`WriteHealth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// A pooled connection whose statements are counted, timed and classified, and which goes
/// back to the pool only when its session is known to be clean (see the module docs).
pub struct DbConn {
    conn: PoolConnection<Any>,
    shared: Arc<Shared>,
    session: Session,
}

impl Drop for DbConn {
    fn drop(&mut self) {
        if self.session == Session::Unknown || self.conn.is_in_transaction() {
            rocket::warn!(
                "closing a database connection after a failed or interrupted operation; the pool opens a new one"
            );
            self.conn.close_on_drop();
        }
    }
}

impl DbConn {
    /// Runs one statement outside a transaction. Until it ends the session counts as
    /// unknown, so a connection whose statement was abandoned midway (this future dropped)
    /// is closed; a success or a refusal leaves it clean.
    async fn single<'c, T, F>(
        &'c mut self,
        access: Access,
        sql: &str,
        write: Option<&ModelWrite>,
        run: impl FnOnce(&'c mut sqlx::AnyConnection) -> F,
    ) -> Result<T, DbError>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let DbConn {
            conn,
            shared,
            session,
        } = self;
        *session = Session::Unknown;
        let result = shared.time(Statement::Single, sql, write, run(conn)).await;
        let outcome = shared.settled(access, result);
        if outcome
            .as_ref()
            .map_or_else(|e| e.kind.is_refusal(), |_| true)
        {
            *session = Session::Clean;
        }
        outcome
    }

    /// Executes one writing statement; returns the rows affected. An `INSERT`, `UPDATE`
    /// or `DELETE` counts them in the model families once it succeeded (see
    /// [model metrics](crate::db#model-metrics)).
    pub async fn execute<'q>(
        &mut self,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<u64, DbError> {
        let sql = query.sql();
        let write = model_write(sql);
        let done: AnyQueryResult = self
            .single(Access::Write, sql, write.as_ref(), |conn| {
                query.execute(conn)
            })
            .await?;
        let rows = done.rows_affected();
        if let Some(write) = write {
            self.shared.committed(&[(write, rows)]);
        }
        Ok(rows)
    }

    /// Runs a query that returns rows; one that writes (`INSERT … RETURNING`) counts as
    /// a write for the write health, and its fetched rows in the model families.
    async fn fetch<'c, T, F>(
        &'c mut self,
        sql: &str,
        rows: impl FnOnce(&T) -> u64,
        run: impl FnOnce(&'c mut sqlx::AnyConnection) -> F,
    ) -> Result<T, DbError>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let write = model_write(sql);
        let access = match write {
            Some(_) => Access::Write,
            None => Access::Read,
        };
        let shared = self.shared.clone();
        let fetched = self.single(access, sql, write.as_ref(), run).await?;
        if let Some(write) = write {
            shared.committed(&[(write, rows(&fetched))]);
        }
        Ok(fetched)
    }

    /// `SELECT 1`: whether the database answers at all.
    pub async fn ping(&mut self) -> Result<(), DbError> {
        const PING: &str = "SELECT 1";
        self.single(Access::Read, PING, None, |conn| {
            sqlx::query(PING).execute(conn)
        })
        .await
        .map(drop)
    }

    /// Every row of `query`, counted and timed in the DB families.
    pub async fn fetch_all<'q, T>(
        &mut self,
        query: QueryAs<'q, Any, T, AnyArguments<'q>>,
    ) -> Result<Vec<T>, DbError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        let sql = query.sql();
        self.fetch(
            sql,
            |rows: &Vec<T>| rows.len() as u64,
            |conn| query.fetch_all(conn),
        )
        .await
    }

    /// The first row of `query`, if any, counted and timed in the DB families.
    pub async fn fetch_optional<'q, T>(
        &mut self,
        query: QueryAs<'q, Any, T, AnyArguments<'q>>,
    ) -> Result<Option<T>, DbError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        let sql = query.sql();
        self.fetch(
            sql,
            |row: &Option<T>| u64::from(row.is_some()),
            |conn| query.fetch_optional(conn),
        )
        .await
    }

    /// Exactly one row of `query` (none is [`DbErrorKind::RowNotFound`](super::DbErrorKind::RowNotFound)), counted and timed.
    pub async fn fetch_one<'q, T>(
        &mut self,
        query: QueryAs<'q, Any, T, AnyArguments<'q>>,
    ) -> Result<T, DbError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        let sql = query.sql();
        self.fetch(sql, |_: &T| 1, |conn| query.fetch_one(conn))
            .await
    }

    /// Runs bulk statements in one transaction, each counted as `execute_many`: either
    /// every row lands or none does. Returns the rows affected. Any failure closes the
    /// connection afterwards: after one, sqlx's count of open transactions and the
    /// database's may disagree, and nothing cheap tells which is right.
    pub async fn execute_many_atomically<'q>(
        &mut self,
        statements: Vec<Query<'q, Any, AnyArguments<'q>>>,
    ) -> Result<u64, DbError> {
        self.session = Session::Unknown;
        let shared = &self.shared;
        let conn = &mut *self.conn;
        let mut writes = Vec::new();
        let result = async {
            let mut transaction = conn.begin().await?;
            let mut rows = 0;
            for statement in statements {
                let sql = statement.sql();
                let write = model_write(sql);
                let executed = shared
                    .time(
                        Statement::Bulk,
                        sql,
                        write.as_ref(),
                        statement.execute(&mut *transaction),
                    )
                    .await;
                match executed {
                    Ok(done) => {
                        rows += done.rows_affected();
                        writes.extend(write.map(|write| (write, done.rows_affected())));
                    }
                    Err(error) => {
                        // Now rather than when the connection closes: until then SQLite's
                        // write lock would make every other writer wait.
                        let _ = transaction.rollback().await;
                        return Err(error);
                    }
                }
            }
            transaction.commit().await?;
            Ok(rows)
        }
        .await;
        let outcome = self.shared.settled(Access::Write, result);
        if outcome.is_ok() {
            // Committed: every row of the transaction counts, and only then.
            self.shared.committed(&writes);
            if !self.conn.is_in_transaction() {
                self.session = Session::Clean;
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbErrorKind;
    use rocket_db_pools::Pool;
    use sqlx::Executor;

    /// A one-connection pool on a SQLite file in `dir`, so every checkout would get the
    /// same connection back if the pool kept it.
    async fn pool(dir: &tempfile::TempDir) -> (DbPool, String) {
        let url = format!("sqlite://{}", dir.path().join("pool.sqlite").display());
        let figment = Figment::from(rocket::Config::default()).merge((
            "",
            serde_json::json!({ "url": url, "max_connections": 1, "connect_timeout": 5 }),
        ));
        let pool = DbPool::init(&figment).await.unwrap();
        pool.sqlx_pool()
            .execute("CREATE TABLE t (v TEXT NOT NULL)")
            .await
            .unwrap();
        (pool, format!("{url}?mode=rw"))
    }

    fn insert(value: &str) -> Query<'static, Any, AnyArguments<'static>> {
        sqlx::query("INSERT INTO t (v) VALUES ($1)").bind(value.to_string())
    }

    async fn committed(url: &str) -> Vec<String> {
        let mut reader = sqlx::SqliteConnection::connect(url).await.unwrap();
        let rows: Vec<(String,)> = sqlx::query_as("SELECT v FROM t ORDER BY v")
            .fetch_all(&mut reader)
            .await
            .unwrap();
        rows.into_iter().map(|(v,)| v).collect()
    }

    #[rocket::async_test]
    async fn sqlite_connections_sync_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _) = pool(&dir).await;
        let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(pool.sqlx_pool())
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
    }

    /// The data-loss defect, without a full disk: `max_page_count` makes the file "full"
    /// (SQLITE_FULL, as ENOSPC does) for one connection only. A one-row insert that fails
    /// so makes SQLite roll the whole transaction back (sqlx's ROLLBACK then fails and its
    /// count stays at one); a two-row insert only its own statement, which left the
    /// `SAVEPOINT` sqlx issued next as a transaction open for good. No later write may end
    /// up inside a transaction that is never committed.
    #[rocket::async_test]
    async fn a_failed_transaction_never_leaves_a_write_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, url) = pool(&dir).await;
        let big = "x".repeat(50_000);
        let one_row = || insert(&big);
        let two_rows = || {
            sqlx::query("INSERT INTO t (v) VALUES ($1), ($2)")
                .bind(big.clone())
                .bind(big.clone())
        };
        for statement in [one_row(), two_rows(), two_rows()] {
            let mut conn = pool.connection().await.unwrap();
            let (pages,): (i64,) = conn
                .fetch_one(sqlx::query_as("PRAGMA page_count"))
                .await
                .unwrap();
            conn.execute(sqlx::query(&format!("PRAGMA max_page_count = {pages}")))
                .await
                .unwrap();
            let failed = conn
                .execute_many_atomically(vec![statement])
                .await
                .unwrap_err();
            assert_eq!(failed.kind, DbErrorKind::StorageFull);
        }
        let mut conn = pool.connection().await.unwrap();
        conn.execute(insert("single")).await.unwrap();
        conn.execute_many_atomically(vec![insert("bulk 1"), insert("bulk 2")])
            .await
            .unwrap();
        drop(conn);
        assert_eq!(
            committed(&url).await,
            ["bulk 1", "bulk 2", "single"],
            "every write answered as done is committed, as another connection sees"
        );
        assert_eq!(pool.writes().failure(), None, "the later writes succeeded");
    }

    #[rocket::async_test]
    async fn an_abandoned_operation_closes_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, url) = pool(&dir).await;
        // Another writer holds the lock, so the insert below waits for it (busy_timeout).
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        other.execute("BEGIN IMMEDIATE").await.unwrap();
        let mut conn = pool.connection().await.unwrap();
        // Given up while it waits, as when a client goes away mid-request.
        let abandoned = rocket::tokio::time::timeout(
            Duration::from_millis(100),
            conn.execute_many_atomically(vec![insert("never")]),
        )
        .await;
        assert!(abandoned.is_err(), "the insert was still waiting");
        assert_eq!(conn.session, Session::Unknown);
        drop(conn);
        other.execute("ROLLBACK").await.unwrap();
        let mut conn = pool.connection().await.unwrap();
        conn.execute(insert("after")).await.unwrap();
        assert_eq!(conn.session, Session::Clean);
        drop(conn);
        assert_eq!(committed(&url).await, ["after"]);
    }
}
