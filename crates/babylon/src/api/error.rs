//! How errors of the layers below become answers: every status babylon gives for a
//! database or custom-metric error is chosen here, in one place, so that a handler
//! returning `Result<_, JsonError>` uses `?` on them.

use rocket::http::Status;

use crate::db::{DbError, DbErrorKind};
use crate::metrics::CustomMetricError;
use crate::request::JsonError;

/// How a client is told of a database error: the HTTP status and a sentence; the reason
/// word is the kind's own ([`DbErrorKind::reason`]).
fn answer(kind: DbErrorKind) -> (Status, &'static str) {
    match kind {
        DbErrorKind::UniqueViolation => (
            Status::Conflict,
            "a value that must be unique is already taken",
        ),
        DbErrorKind::ForeignKeyViolation | DbErrorKind::CheckViolation | DbErrorKind::NotNullViolation => (
            Status::UnprocessableEntity,
            "the data breaks a database constraint",
        ),
        DbErrorKind::RowNotFound => (
            Status::NotFound,
            "no such row",
        ),
        DbErrorKind::Connection | DbErrorKind::Timeout => (
            Status::ServiceUnavailable,
            "the database cannot be reached; retry later",
        ),
        DbErrorKind::StorageFull => (
            Status::InsufficientStorage,
            "the database's storage is full, so nothing was written; retry once space is freed",
        ),
        DbErrorKind::ReadOnly => (
            Status::ServiceUnavailable,
            "the database's storage is read-only, so nothing was written; retry later",
        ),
        DbErrorKind::StorageIo => (
            Status::ServiceUnavailable,
            "the database's storage failed while writing, so whether the write was stored is not known; check before retrying",
        ),
        DbErrorKind::Busy => (
            Status::ServiceUnavailable,
            "the database is busy with other writes, so nothing was written; retry",
        ),
        DbErrorKind::Other => (
            Status::InternalServerError,
            "the database failed the request",
        ),
    }
}

impl From<DbError> for JsonError {
    fn from(error: DbError) -> JsonError {
        let kind = error.kind;
        if !kind.is_refusal() {
            // The client learns the cause as a stable word; the log gets the database's
            // own words (an operator needs "disk I/O error", the client does not).
            rocket::error!("{error}");
        }
        let (status, message) = answer(kind);
        let answer = JsonError::new(status, kind.reason(), message);
        match kind {
            DbErrorKind::Busy => answer.retry_after(1),
            _ => answer,
        }
    }
}

/// An error of sqlx itself, for a handler that runs a query on the pool underneath
/// (`DbPool::sqlx_pool`): classified and answered as a [`DbError`].
impl From<sqlx::Error> for JsonError {
    fn from(error: sqlx::Error) -> JsonError {
        JsonError::from(DbError::from(error))
    }
}

/// A custom family asked for with the name of another family's type or labels: a
/// mistake in the application's code, answered 500 and logged.
impl From<CustomMetricError> for JsonError {
    fn from(error: CustomMetricError) -> JsonError {
        rocket::error!("{error}");
        JsonError::new(
            Status::InternalServerError,
            "metrics_error",
            error.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_get_their_statuses() {
        let unavailable = JsonError::from(DbError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(unavailable.status, Status::ServiceUnavailable);
        assert_eq!(unavailable.reason, "database_unavailable");
        assert_eq!(unavailable.retry_after_secs, None);
        assert_eq!(
            answer(DbErrorKind::StorageFull).0,
            Status::InsufficientStorage
        );
        assert_eq!(answer(DbErrorKind::Busy).0, Status::ServiceUnavailable);
    }
}
