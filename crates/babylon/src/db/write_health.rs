//! Whether writes currently reach storage, as the service's own writes found out.
//!
//! A database can answer `SELECT 1` while every write fails: a full disk, a file system
//! the kernel remounted read-only. `/api/health` must not say `ok` then. Every write of a
//! pool reports its outcome here; a failure caused by storage marks writes as failing, and
//! the next successful write (a request's, or the probe `/api/health` makes while writes
//! are failing) clears it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use super::errors::DbErrorKind;

/// The outcome of the latest write, shared by a pool and its connections.
#[derive(Debug, Default)]
pub struct WriteHealth {
    /// Read on every write: the common case (writes succeed) takes no lock.
    failing: AtomicBool,
    latest_failure: Mutex<Option<WriteFailure>>,
}

/// Why writes are failing, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFailure {
    /// The cause of the latest failure.
    pub kind: DbErrorKind,
    /// The first failure of the current run of failures.
    pub since: SystemTime,
    /// The latest failure.
    pub latest: SystemTime,
}

impl WriteHealth {
    /// A write was stored.
    pub fn succeeded(&self) {
        if self.failing.load(Ordering::Acquire) {
            *self.lock() = None;
            self.failing.store(false, Ordering::Release);
        }
    }

    /// A write failed with `kind`. Only storage causes mark writes as failing: a refused
    /// statement is the client's, a lost connection shows in the database check, and a
    /// busy database clears by itself.
    pub fn failed(&self, kind: DbErrorKind) {
        if !kind.is_storage() {
            return;
        }
        let now = SystemTime::now();
        let mut latest = self.lock();
        let since = latest.map_or(now, |failure| failure.since);
        *latest = Some(WriteFailure {
            kind,
            since,
            latest: now,
        });
        self.failing.store(true, Ordering::Release);
    }

    /// The current failure, if the latest write failed for a storage cause.
    pub fn failure(&self) -> Option<WriteFailure> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<WriteFailure>> {
        // The value is a plain Copy: a panic elsewhere cannot leave it half written.
        self.latest_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_mark_writes_failing_until_a_write_succeeds() {
        let health = WriteHealth::default();
        assert_eq!(health.failure(), None);
        health.failed(DbErrorKind::UniqueViolation);
        health.failed(DbErrorKind::Busy);
        health.failed(DbErrorKind::Connection);
        assert_eq!(health.failure(), None, "not storage causes");

        health.failed(DbErrorKind::StorageFull);
        let first = health.failure().unwrap();
        assert_eq!(first.kind, DbErrorKind::StorageFull);
        health.failed(DbErrorKind::ReadOnly);
        let latest = health.failure().unwrap();
        assert_eq!(latest.kind, DbErrorKind::ReadOnly, "the latest cause");
        assert_eq!(
            latest.since, first.since,
            "since the first failure of the run"
        );
        assert!(latest.latest >= first.latest);

        health.succeeded();
        assert_eq!(health.failure(), None);
    }
}
