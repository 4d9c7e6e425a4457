//! Our `rocket_db_pools::Pool`: a sqlx 0.8 `any` pool (SQLite or PostgreSQL, chosen by the
//! URL at run time) whose connections record every statement.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rocket::figment::Figment;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::query::{Query, QueryAs};
use sqlx::{Any, AnyPool, Connection, FromRow};

use super::errors::DbError;
use super::metrics::{Instruments, Statement};
use super::url::{DatabaseUrl, Vendor};

/// systemd's per-service state directory; relative SQLite paths land there when set.
pub const STATE_DIRECTORY_ENV: &str = "STATE_DIRECTORY";

/// The state directory for relative SQLite paths, if the service manager gave one.
pub fn state_directory() -> Option<PathBuf> {
    // systemd may list several directories separated by ':'; the first is ours.
    let value = std::env::var_os(STATE_DIRECTORY_ENV)?;
    let first = value.to_str()?.split(':').next()?.to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// A pool plus the handles it records into, once the service has wired them.
pub struct DbPool {
    pool: AnyPool,
    url: DatabaseUrl,
    instruments: Arc<OnceLock<Instruments>>,
}

impl DbPool {
    pub fn vendor(&self) -> Vendor {
        self.url.vendor()
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn sqlx_pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts recording into `instruments`; the first call wins.
    pub fn instrument(&self, instruments: Instruments) {
        let _ = self.instruments.set(instruments);
    }

    fn instruments(&self) -> Option<&Instruments> {
        self.instruments.get()
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
        match rocket::tokio::time::timeout(left, conn.execute(sqlx::query("SELECT 1"))).await {
            Ok(result) => result.map(drop),
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
                instruments: self.instruments.clone(),
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
        let instruments: Arc<OnceLock<Instruments>> = Arc::default();
        let on_connect = instruments.clone();
        let vendor = url.vendor();
        let mut options = AnyPoolOptions::new()
            .max_connections(u32::try_from(config.max_connections).unwrap_or(u32::MAX))
            .min_connections(config.min_connections.unwrap_or(0))
            .acquire_timeout(Duration::from_secs(config.connect_timeout))
            .after_connect(move |conn, _| {
                let instruments = on_connect.clone();
                Box::pin(async move {
                    if let Some(instruments) = instruments.get() {
                        instruments.connection_opened();
                    }
                    if vendor == Vendor::Sqlite {
                        // WAL lets readers run beside the writer; busy_timeout makes
                        // concurrent writers wait for the lock instead of failing.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            });
        if let Some(idle) = config.idle_timeout {
            options = options.idle_timeout(Duration::from_secs(idle));
        }
        // Lazy: no connection is opened until first use, so start-up does not hang on an
        // unreachable server; migrations at ignite report that instead.
        let pool = options
            .connect_lazy(url.connect_url())
            .map_err(DbError::from)?;
        Ok(DbPool {
            pool,
            url,
            instruments,
        })
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

/// A pooled connection whose statements are counted, timed and classified.
pub struct DbConn {
    conn: PoolConnection<Any>,
    instruments: Arc<OnceLock<Instruments>>,
}

impl DbConn {
    async fn observe<T>(
        instruments: &OnceLock<Instruments>,
        statement: Statement,
        run: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, DbError> {
        match instruments.get() {
            Some(instruments) => instruments.observe(statement, run).await,
            None => run.await.map_err(DbError::from),
        }
    }

    /// Executes one statement; returns the rows affected.
    pub async fn execute<'q>(
        &mut self,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<u64, DbError> {
        let result: AnyQueryResult = Self::observe(
            &self.instruments,
            Statement::Single,
            query.execute(&mut *self.conn),
        )
        .await?;
        Ok(result.rows_affected())
    }

    pub async fn fetch_all<'q, T>(
        &mut self,
        query: QueryAs<'q, Any, T, AnyArguments<'q>>,
    ) -> Result<Vec<T>, DbError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        Self::observe(
            &self.instruments,
            Statement::Single,
            query.fetch_all(&mut *self.conn),
        )
        .await
    }

    pub async fn fetch_optional<'q, T>(
        &mut self,
        query: QueryAs<'q, Any, T, AnyArguments<'q>>,
    ) -> Result<Option<T>, DbError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        Self::observe(
            &self.instruments,
            Statement::Single,
            query.fetch_optional(&mut *self.conn),
        )
        .await
    }

    pub async fn fetch_one<'q, T>(
        &mut self,
        query: QueryAs<'q, Any, T, AnyArguments<'q>>,
    ) -> Result<T, DbError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        Self::observe(
            &self.instruments,
            Statement::Single,
            query.fetch_one(&mut *self.conn),
        )
        .await
    }

    /// Runs bulk statements in one transaction, each counted as `execute_many`: either
    /// every row lands or none does. Returns the rows affected.
    pub async fn execute_many_atomically<'q>(
        &mut self,
        statements: Vec<Query<'q, Any, AnyArguments<'q>>>,
    ) -> Result<u64, DbError> {
        let instruments = self.instruments.clone();
        let record = |error: DbError| {
            if let Some(instruments) = instruments.get() {
                instruments.error(error.kind);
            }
            error
        };
        let mut transaction = self.conn.begin().await.map_err(|e| record(e.into()))?;
        let mut rows = 0;
        for statement in statements {
            // On error the transaction is dropped, which rolls it back.
            let result = Self::observe(
                &self.instruments,
                Statement::Bulk,
                statement.execute(&mut *transaction),
            )
            .await?;
            rows += result.rows_affected();
        }
        transaction.commit().await.map_err(|e| record(e.into()))?;
        Ok(rows)
    }
}
