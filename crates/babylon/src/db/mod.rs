//! The database layer: our pool type under rocket_db_pools, errors, metrics (statements,
//! connections, migrations, and the model families of the application's writes), and
//! the application's migrations.
//!
//! # Model metrics
//!
//! Every `INSERT`, `UPDATE` and `DELETE` that a [`DbConn`] runs counts the rows it
//! changed in `rocket_model_{inserts,updates,deletes}_total{model}` once it is committed,
//! the model named as its table (or as [`Babylon::with_model_name`](crate::Babylon::with_model_name)
//! says): a new table has its model metrics with no line of code. The pool reads the
//! table from the statement's SQL (`models` says which shapes); write other statements'
//! counts with [`ModelFamilies`] (Rocket state) by hand.
//!
//! # Handlers
//!
//! Handlers take a connection with rocket_db_pools' guard:
//!
//! ```no_run
//! use babylon::db::Db;
//! use rocket_db_pools::Connection;
//!
//! #[rocket::get("/count")]
//! async fn count(mut db: Connection<Db>) -> Option<String> {
//!     let (n,): (i64,) = db.fetch_one(sqlx::query_as("SELECT COUNT(*) FROM items")).await.ok()?;
//!     Some(n.to_string())
//! }
//! ```

mod errors;
pub(crate) mod metrics;
mod migrations;
mod models;
mod pool;
mod write_health;

use std::collections::HashMap;
use std::time::Duration;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::{Build, Orbit, Rocket};
use rocket_db_pools::Database;
use sqlx::migrate::Migrator;

pub use errors::{DbError, DbErrorKind};
pub(crate) use metrics::DbFamilies;
pub use metrics::{ModelCounters, ModelFamilies};
use models::ModelRecorder;
pub use pool::{DbConn, DbPool};

use crate::metrics::Metrics;

/// The service's database, configured under `databases.main`.
#[derive(Database)]
#[database("main")]
pub struct Db(DbPool);

/// How often the migration gauges are re-read while the service runs.
const MIGRATION_REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Runs after `Db::init()`: wires the pool's metrics, applies the application's
/// migrations, and keeps the migration gauges current.
pub(crate) struct DbSetup {
    migrations: Option<&'static Migrator>,
    /// Model names of tables whose model is not named as the table.
    model_names: HashMap<String, String>,
}

impl DbSetup {
    pub(crate) fn new(
        migrations: Option<&'static Migrator>,
        model_names: HashMap<String, String>,
    ) -> Self {
        DbSetup {
            migrations,
            model_names,
        }
    }
}

#[rocket::async_trait]
impl Fairing for DbSetup {
    fn info(&self) -> Info {
        Info {
            name: "babylon database setup",
            kind: Kind::Ignite | Kind::Liftoff,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        let (Some(db), Some(metrics), Some(families), Some(models)) = (
            Db::fetch(&rocket),
            rocket.state::<Metrics>(),
            rocket.state::<DbFamilies>(),
            rocket.state::<ModelFamilies>(),
        ) else {
            rocket::error!("babylon: the database pool was not initialised");
            return Err(rocket);
        };
        let pool = &db.0;
        pool.instrument(families.instruments(Db::NAME, pool.vendor()));
        pool.count_models(ModelRecorder::new(models.clone(), self.model_names.clone()));
        let applied = match self.migrations {
            Some(migrator) => migrations::run(migrator, pool.sqlx_pool()).await,
            None => Ok(()),
        };
        if let Err(error) = applied {
            let cause = pool.diagnose().await.unwrap_or_else(|| error.to_string());
            rocket::error!(
                "babylon: cannot apply migrations to {} (setting databases.main.url): {cause}",
                pool.url()
            );
            return Err(rocket);
        }
        if let Err(error) = pool.ensure_write_probe().await {
            rocket::warn!("babylon: the write probe's table is missing and cannot be made ({error}); /api/health cannot probe writes");
        }
        refresh_migration_gauges(self.migrations, pool, families).await;
        match metrics::PoolGauges::new(Db::NAME, pool.sqlx_pool().clone()) {
            Ok(gauges) => {
                if let Err(error) = metrics.registry().register(Box::new(gauges)) {
                    rocket::warn!("pool gauges not registered: {error}");
                }
            }
            Err(error) => rocket::warn!("pool gauges not created: {error}"),
        }
        Ok(rocket)
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        let (Some(db), Some(families)) = (Db::fetch(rocket), rocket.state::<DbFamilies>()) else {
            return;
        };
        let (pool, families) = (db.0.sqlx_pool().clone(), families.clone());
        let url = db.0.url().clone();
        let migrator = self.migrations;
        let mut shutdown = rocket.shutdown();
        rocket::tokio::spawn(async move {
            let mut every = rocket::tokio::time::interval(MIGRATION_REFRESH_EVERY);
            loop {
                rocket::tokio::select! {
                    _ = every.tick() => {
                        if let Ok(status) = migrations::status(migrator, &pool).await {
                            set_migration_gauges(&families, status);
                        } else {
                            rocket::debug!("migration status of {url} unavailable");
                        }
                    }
                    _ = &mut shutdown => break,
                }
            }
        });
    }
}

async fn refresh_migration_gauges(
    migrator: Option<&Migrator>,
    pool: &DbPool,
    families: &DbFamilies,
) {
    match migrations::status(migrator, pool.sqlx_pool()).await {
        Ok(status) => set_migration_gauges(families, status),
        Err(error) => rocket::warn!("migration status unavailable: {error}"),
    }
}

fn set_migration_gauges(families: &DbFamilies, status: migrations::MigrationStatus) {
    let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    families
        .migrations_applied
        .with_label_values(&[Db::NAME])
        .set(to_i64(status.applied));
    families
        .migrations_unapplied
        .with_label_values(&[Db::NAME])
        .set(to_i64(status.unapplied));
}
