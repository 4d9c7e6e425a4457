//! Database errors, classified once: the `type` label of `rocket_db_errors_total` and the
//! stable reason word clients see (the HTTP status is `api::error`'s to choose).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What kind of failure a database error is: the `type` label of `rocket_db_errors_total`.
pub enum DbErrorKind {
    /// Could not reach the database (refused, reset, TLS, pool closed).
    Connection,
    /// No connection became free, or the server did not answer, in time.
    Timeout,
    /// The database's storage is full (SQLite `SQLITE_FULL`, PostgreSQL `53100`).
    StorageFull,
    /// The database's storage refuses writes (SQLite `SQLITE_READONLY`, PostgreSQL
    /// `25006`, e.g. a hot standby).
    ReadOnly,
    /// The storage failed otherwise (SQLite `SQLITE_IOERR`, PostgreSQL `58030`). A write
    /// to a SQLite file whose file system was just remounted read-only fails so; the
    /// connections opened afterwards get `ReadOnly`. Unlike the kinds above, the write may
    /// have reached the disk (a failed sync after the commit record was written), so its
    /// fate is unknown.
    StorageIo,
    /// Another writer held the lock for longer than the busy timeout, or the server gave up
    /// on the statement to resolve a conflict (SQLite `SQLITE_BUSY`, PostgreSQL `40001`,
    /// `40P01`, `55P03`): retrying may succeed.
    Busy,
    /// A unique constraint refused the row.
    UniqueViolation,
    /// A foreign key refused the row.
    ForeignKeyViolation,
    /// A `NOT NULL` column got no value.
    NotNullViolation,
    /// A `CHECK` constraint refused the row.
    CheckViolation,
    /// A row the statement needed was not there.
    RowNotFound,
    /// Anything else the database or the driver reported.
    Other,
}

impl DbErrorKind {
    /// Every kind, so that each one's series can be exposed from start-up.
    pub const ALL: [DbErrorKind; 12] = [
        DbErrorKind::Connection,
        DbErrorKind::Timeout,
        DbErrorKind::StorageFull,
        DbErrorKind::ReadOnly,
        DbErrorKind::StorageIo,
        DbErrorKind::Busy,
        DbErrorKind::UniqueViolation,
        DbErrorKind::ForeignKeyViolation,
        DbErrorKind::NotNullViolation,
        DbErrorKind::CheckViolation,
        DbErrorKind::RowNotFound,
        DbErrorKind::Other,
    ];

    /// The `type` label value.
    pub fn label(self) -> &'static str {
        match self {
            DbErrorKind::Connection => "connection",
            DbErrorKind::Timeout => "timeout",
            DbErrorKind::StorageFull => "storage_full",
            DbErrorKind::ReadOnly => "read_only",
            DbErrorKind::StorageIo => "storage_io",
            DbErrorKind::Busy => "busy",
            DbErrorKind::UniqueViolation => "unique_violation",
            DbErrorKind::ForeignKeyViolation => "foreign_key_violation",
            DbErrorKind::NotNullViolation => "not_null_violation",
            DbErrorKind::CheckViolation => "check_violation",
            DbErrorKind::RowNotFound => "row_not_found",
            DbErrorKind::Other => "other",
        }
    }

    /// Whether the database refused one statement because of the data it was given, and
    /// so left the session exactly as it was: everything else is a failure whose effect on
    /// the session (an open transaction, a broken connection) is not known.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            DbErrorKind::UniqueViolation
                | DbErrorKind::ForeignKeyViolation
                | DbErrorKind::NotNullViolation
                | DbErrorKind::CheckViolation
                | DbErrorKind::RowNotFound
        )
    }

    /// Whether the storage under the database is the cause: full, read-only or failing.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            DbErrorKind::StorageFull | DbErrorKind::ReadOnly | DbErrorKind::StorageIo
        )
    }

    /// Classifies a sqlx error by its SQLSTATE, SQLite result code or I/O kind.
    pub fn of(error: &sqlx::Error) -> DbErrorKind {
        use sqlx::error::ErrorKind;
        match error {
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => DbErrorKind::UniqueViolation,
                ErrorKind::ForeignKeyViolation => DbErrorKind::ForeignKeyViolation,
                ErrorKind::NotNullViolation => DbErrorKind::NotNullViolation,
                ErrorKind::CheckViolation => DbErrorKind::CheckViolation,
                _ => vendor_code(db.as_ref()).unwrap_or(DbErrorKind::Other),
            },
            sqlx::Error::PoolTimedOut => DbErrorKind::Timeout,
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                DbErrorKind::Timeout
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbErrorKind::Connection,
            sqlx::Error::RowNotFound => DbErrorKind::RowNotFound,
            _ => DbErrorKind::Other,
        }
    }
}

/// The kinds sqlx leaves as "other", read from the vendor's own error code.
fn vendor_code(error: &dyn sqlx::error::DatabaseError) -> Option<DbErrorKind> {
    use sqlx::error::DatabaseError;
    if let Some(sqlite) = error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        // The extended result code; its low byte is the primary code.
        // https://www.sqlite.org/rescode.html
        let extended: i32 = sqlite.code()?.parse().ok()?;
        return match extended & 0xff {
            SQLITE_BUSY | SQLITE_LOCKED => Some(DbErrorKind::Busy),
            SQLITE_READONLY => Some(DbErrorKind::ReadOnly),
            SQLITE_IOERR => Some(DbErrorKind::StorageIo),
            SQLITE_FULL => Some(DbErrorKind::StorageFull),
            _ => None,
        };
    }
    let postgres = error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    // https://www.postgresql.org/docs/current/errcodes-appendix.html
    let code = postgres.code();
    if code.starts_with("08") {
        // connection_exception and its subclasses.
        return Some(DbErrorKind::Connection);
    }
    match code {
        // The server is shutting down, crashed, or not yet accepting connections; or it
        // has no connection slot left: all clear by themselves, as a refused connect does.
        "57P01" | "57P02" | "57P03" | "53300" => Some(DbErrorKind::Connection),
        // statement_timeout or a cancel: the server gave up waiting.
        "57014" => Some(DbErrorKind::Timeout),
        "53100" => Some(DbErrorKind::StorageFull),
        "25006" => Some(DbErrorKind::ReadOnly),
        "58030" => Some(DbErrorKind::StorageIo),
        "40001" | "40P01" | "55P03" => Some(DbErrorKind::Busy),
        _ => None,
    }
}

// SQLite's primary result codes (sqlite3.h), for the kinds sqlx does not classify.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;

/// A failed database operation. `Display` never includes the URL or bound values.
#[derive(Debug, thiserror::Error)]
#[error("database {kind}: {source}", kind = .kind.label())]
pub struct DbError {
    /// What kind of failure it is.
    pub kind: DbErrorKind,
    #[source]
    /// The driver's error, for the log.
    pub source: sqlx::Error,
}

impl From<sqlx::Error> for DbError {
    fn from(source: sqlx::Error) -> Self {
        DbError {
            kind: DbErrorKind::of(&source),
            source,
        }
    }
}

impl DbErrorKind {
    /// A stable word for clients and `/api/health` (`storage_full`, `conflict`, …): the
    /// `reason` of the JSON error a handler answers with (see `api::error`).
    pub fn reason(self) -> &'static str {
        match self {
            DbErrorKind::UniqueViolation => "conflict",
            DbErrorKind::ForeignKeyViolation
            | DbErrorKind::CheckViolation
            | DbErrorKind::NotNullViolation => "constraint_violation",
            DbErrorKind::RowNotFound => "not_found",
            DbErrorKind::Connection | DbErrorKind::Timeout => "database_unavailable",
            DbErrorKind::StorageFull => "storage_full",
            DbErrorKind::ReadOnly => "storage_read_only",
            DbErrorKind::StorageIo => "storage_error",
            DbErrorKind::Busy => "database_busy",
            DbErrorKind::Other => "database_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_errors_are_classified() {
        assert_eq!(
            DbErrorKind::of(&sqlx::Error::PoolTimedOut),
            DbErrorKind::Timeout
        );
        assert_eq!(
            DbErrorKind::of(&sqlx::Error::PoolClosed),
            DbErrorKind::Connection
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            DbErrorKind::of(&sqlx::Error::Io(refused)),
            DbErrorKind::Connection
        );
    }

    /// Real SQLite errors, provoked on a real database file.
    #[rocket::async_test]
    async fn sqlite_result_codes_are_classified() {
        use sqlx::{Connection, Executor};
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("codes.sqlite").display()
        );
        let mut first = sqlx::SqliteConnection::connect(&url).await.unwrap();
        first
            .execute("CREATE TABLE t (v TEXT UNIQUE)")
            .await
            .unwrap();
        let kind_of = |result: Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>| {
            DbError::from(result.unwrap_err()).kind
        };

        first.execute("INSERT INTO t VALUES ('a')").await.unwrap();
        let duplicate = first.execute("INSERT INTO t VALUES ('a')").await;
        assert_eq!(kind_of(duplicate), DbErrorKind::UniqueViolation);
        assert!(DbErrorKind::UniqueViolation.is_refusal());

        // The database may not grow past its current pages: what a full disk gives.
        first.execute("PRAGMA max_page_count = 2").await.unwrap();
        let big = "x".repeat(100_000);
        let full = sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(big)
            .execute(&mut first)
            .await;
        assert_eq!(kind_of(full), DbErrorKind::StorageFull);

        first.execute("PRAGMA query_only = ON").await.unwrap();
        let read_only = first.execute("INSERT INTO t VALUES ('b')").await;
        assert_eq!(kind_of(read_only), DbErrorKind::ReadOnly);
        first.execute("PRAGMA query_only = OFF").await.unwrap();

        first.execute("BEGIN IMMEDIATE").await.unwrap();
        let mut second = sqlx::SqliteConnection::connect(&url).await.unwrap();
        second.execute("PRAGMA busy_timeout = 0").await.unwrap();
        let busy = second.execute("BEGIN IMMEDIATE").await;
        assert_eq!(kind_of(busy), DbErrorKind::Busy);
        for kind in [
            DbErrorKind::StorageFull,
            DbErrorKind::ReadOnly,
            DbErrorKind::Busy,
        ] {
            assert!(!kind.is_refusal(), "{kind:?}");
        }
    }
}
