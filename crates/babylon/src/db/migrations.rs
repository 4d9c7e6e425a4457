//! The application's migrations (its `migrations/` folder, embedded at build time with
//! `sqlx::migrate!()` and handed to [`Babylon::with_migrations`](crate::Babylon::with_migrations)),
//! run at start-up, and the applied/unapplied gauges, refreshed while the service runs.

use std::collections::HashSet;

use sqlx::migrate::Migrator;
use sqlx::AnyPool;

use super::errors::DbError;

/// Attempts before giving up on migrations at start-up.
const ATTEMPTS: u32 = 5;

/// Applies pending migrations. PostgreSQL serializes concurrent workers with an advisory
/// lock; SQLite has none, so when several workers start at once on one file, a worker may
/// lose the race ("database is locked", or the version already recorded). It then retries:
/// the next attempt finds the migration applied and has nothing to do.
pub(super) async fn run(
    migrator: &Migrator,
    pool: &AnyPool,
) -> Result<(), sqlx::migrate::MigrateError> {
    let mut attempt = 1;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < ATTEMPTS && retryable(&error) => {
                rocket::warn!("migrations: attempt {attempt} failed ({error}); retrying");
                rocket::tokio::time::sleep(std::time::Duration::from_millis(
                    100 * u64::from(attempt),
                ))
                .await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Races and lock waits are worth another attempt; a changed or missing migration is not.
fn retryable(error: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError::{Execute, ExecuteMigration};
    matches!(
        error,
        Execute(sqlx::Error::Database(_)) | ExecuteMigration(sqlx::Error::Database(_), _)
    )
}

/// How many of this build's migrations are applied, and how many are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MigrationStatus {
    pub applied: usize,
    pub unapplied: usize,
}

/// How many of `migrator`'s migrations are applied to `pool` (none given: none shipped).
pub(super) async fn status(
    migrator: Option<&Migrator>,
    pool: &AnyPool,
) -> Result<MigrationStatus, DbError> {
    let Some(migrator) = migrator else {
        return Ok(MigrationStatus {
            applied: 0,
            unapplied: 0,
        });
    };
    let rows: Vec<(i64,)> =
        match sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            // No bookkeeping table yet: nothing applied.
            Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => Vec::new(),
            Err(error) => return Err(error.into()),
        };
    let applied: HashSet<i64> = rows.into_iter().map(|(version,)| version).collect();
    let shipped: Vec<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    let done = shipped
        .iter()
        .filter(|version| applied.contains(version))
        .count();
    Ok(MigrationStatus {
        applied: done,
        unapplied: shipped.len() - done,
    })
}
