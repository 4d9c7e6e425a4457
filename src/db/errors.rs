//! Database errors, classified once: the `type` label of `rocket_db_errors_total` and the
//! HTTP answer a handler gives.

use rocket::http::Status;

use crate::api::error::JsonError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Could not reach the database (refused, reset, TLS, pool closed).
    Connection,
    /// No connection became free, or the server did not answer, in time.
    Timeout,
    UniqueViolation,
    ForeignKeyViolation,
    NotNullViolation,
    CheckViolation,
    /// A row the statement needed was not there.
    RowNotFound,
    Other,
}

impl DbErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            DbErrorKind::Connection => "connection",
            DbErrorKind::Timeout => "timeout",
            DbErrorKind::UniqueViolation => "unique_violation",
            DbErrorKind::ForeignKeyViolation => "foreign_key_violation",
            DbErrorKind::NotNullViolation => "not_null_violation",
            DbErrorKind::CheckViolation => "check_violation",
            DbErrorKind::RowNotFound => "row_not_found",
            DbErrorKind::Other => "other",
        }
    }

    /// Whether the database itself is out of reach (as opposed to refusing a statement).
    pub fn is_unavailable(self) -> bool {
        matches!(self, DbErrorKind::Connection | DbErrorKind::Timeout)
    }

    pub fn of(error: &sqlx::Error) -> DbErrorKind {
        use sqlx::error::ErrorKind;
        match error {
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => DbErrorKind::UniqueViolation,
                ErrorKind::ForeignKeyViolation => DbErrorKind::ForeignKeyViolation,
                ErrorKind::NotNullViolation => DbErrorKind::NotNullViolation,
                ErrorKind::CheckViolation => DbErrorKind::CheckViolation,
                _ => DbErrorKind::Other,
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

/// A failed database operation. `Display` never includes the URL or bound values.
#[derive(Debug, thiserror::Error)]
#[error("database {kind}: {source}", kind = .kind.label())]
pub struct DbError {
    pub kind: DbErrorKind,
    #[source]
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

impl From<DbError> for JsonError {
    fn from(error: DbError) -> JsonError {
        match error.kind {
            DbErrorKind::UniqueViolation => JsonError::new(
                Status::Conflict,
                "conflict",
                "a value that must be unique is already taken (for items: the name)",
            ),
            DbErrorKind::ForeignKeyViolation
            | DbErrorKind::CheckViolation
            | DbErrorKind::NotNullViolation => JsonError::new(
                Status::UnprocessableEntity,
                "constraint_violation",
                "the data breaks a database constraint",
            ),
            DbErrorKind::RowNotFound => {
                JsonError::new(Status::NotFound, "not_found", "no such row")
            }
            DbErrorKind::Connection | DbErrorKind::Timeout => JsonError::new(
                Status::ServiceUnavailable,
                "database_unavailable",
                "the database cannot be reached; retry later",
            ),
            DbErrorKind::Other => {
                rocket::error!("{error}");
                JsonError::new(
                    Status::InternalServerError,
                    "database_error",
                    "the database failed the request",
                )
            }
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
        assert!(DbErrorKind::Timeout.is_unavailable());
        assert!(!DbErrorKind::UniqueViolation.is_unavailable());
        let answer = JsonError::from(DbError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(answer.status, Status::ServiceUnavailable);
    }
}
