//! The database and model families (docs/metrics.md, "Database" and "Models"), and the handles a
//! pool records into.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use sqlx::AnyPool;

use super::errors::DbErrorKind;
use super::models::{operation, ModelWrite};
use crate::metrics::native::NativeConfig;
use crate::metrics::sharded::{Recording, ShardedHistogram, ShardedHistogramVec};
use crate::metrics::{counter_vec, gauge_vec, register_full, ExemplarSource};
use crate::otlp::{Call, Spans};
use crate::prometheus::core::{Collector, Desc};
use crate::prometheus::proto::MetricFamily;
use crate::prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use crate::settings::{Buckets, NativeHistogramSettings, Vendor};

/// Query latency buckets, in seconds: statements are much faster than requests.
const QUERY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `rocket_db_*` and `rocket_migrations_*`.
#[derive(Clone)]
pub(crate) struct DbFamilies {
    new_connections: IntCounterVec,
    new_connection_errors: IntCounterVec,
    execute: IntCounterVec,
    execute_many: IntCounterVec,
    errors: IntCounterVec,
    refusals: IntCounterVec,
    query_duration: ShardedHistogramVec,
    pub migrations_applied: IntGaugeVec,
    pub migrations_unapplied: IntGaugeVec,
    /// Where the span of a statement made for a request goes (`tracing.otlp.*`).
    spans: Option<Spans>,
}

impl DbFamilies {
    /// Registers the families; statement durations record native buckets as `native`
    /// says; statements made for a request get a span in `spans`.
    pub(crate) fn register(
        registry: &Registry,
        native: &NativeHistogramSettings,
        exemplars: bool,
        spans: Option<Spans>,
    ) -> crate::prometheus::Result<Self> {
        let alias_vendor = &["alias", "vendor"];
        Ok(DbFamilies {
            new_connections: counter_vec(
                registry,
                "rocket_db_new_connections_total",
                "Database connections opened by the pool.",
                alias_vendor,
            )?,
            new_connection_errors: counter_vec(
                registry,
                "rocket_db_new_connection_errors_total",
                "Failures to get a database connection (connect refused, timed out …).",
                alias_vendor,
            )?,
            execute: counter_vec(
                registry,
                "rocket_db_execute_total",
                "Single statements executed.",
                alias_vendor,
            )?,
            execute_many: counter_vec(
                registry,
                "rocket_db_execute_many_total",
                "Multi-row (bulk) statements executed.",
                alias_vendor,
            )?,
            errors: counter_vec(
                registry,
                "rocket_db_errors_total",
                "Failures of the database (unreachable, timed out, storage, busy, other), by type.",
                &["alias", "vendor", "type"],
            )?,
            refusals: counter_vec(
                registry,
                "rocket_db_refusals_total",
                "Statements the database refused for the data they carried (constraint violations, no row where one was needed), by type: answered 4xx.",
                &["alias", "vendor", "type"],
            )?,
            query_duration: register_full(
                registry,
                ShardedHistogramVec::new(
                    "rocket_db_query_duration_seconds",
                    "Time to execute a statement.",
                    alias_vendor,
                    (
                        Buckets::try_from(QUERY_BUCKETS.to_vec()).expect("valid constant buckets"),
                        Recording {
                            native: NativeConfig::from_settings(native),
                            exemplars,
                        },
                    ),
                )?,
            )?,
            migrations_applied: gauge_vec(
                registry,
                "rocket_migrations_applied",
                "Migrations applied to the database.",
                &["alias"],
            )?,
            migrations_unapplied: gauge_vec(
                registry,
                "rocket_migrations_unapplied",
                "Migrations shipped with this build but not applied.",
                &["alias"],
            )?,
            spans,
        })
    }

    /// Handles with the `alias` and `vendor` labels resolved once, for one pool. Every
    /// `type` of the error and refusal counters is exposed at 0 from here on, so that a
    /// rate over them is defined before the first error.
    pub(crate) fn instruments(&self, alias: &str, vendor: Vendor) -> Instruments {
        let labels = [alias, vendor.label()];
        let instruments = Instruments {
            new_connections: self.new_connections.with_label_values(&labels),
            new_connection_errors: self.new_connection_errors.with_label_values(&labels),
            execute: self.execute.with_label_values(&labels),
            execute_many: self.execute_many.with_label_values(&labels),
            query_duration: self.query_duration.with_label_values(&labels),
            errors: self.errors.clone(),
            refusals: self.refusals.clone(),
            alias: alias.to_string(),
            vendor,
            spans: self.spans.clone(),
        };
        for kind in DbErrorKind::ALL {
            instruments.counter(kind);
        }
        instruments
    }
}

/// What kind of statement is being run: `execute` or `execute_many`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statement {
    Single,
    Bulk,
}

/// One pool's handles.
pub struct Instruments {
    new_connections: IntCounter,
    new_connection_errors: IntCounter,
    execute: IntCounter,
    execute_many: IntCounter,
    query_duration: Arc<ShardedHistogram>,
    errors: IntCounterVec,
    refusals: IntCounterVec,
    alias: String,
    vendor: Vendor,
    spans: Option<Spans>,
}

impl Instruments {
    pub fn connection_opened(&self) {
        self.new_connections.inc();
    }

    /// A connection could not be had; counted as a connection error and by type.
    pub fn connection_failed(&self, kind: DbErrorKind) {
        self.new_connection_errors.inc();
        self.error(kind);
    }

    /// Counts a failed operation: a refusal of its data (a client's conflicting or
    /// missing data, answered 4xx) in `rocket_db_refusals_total`, anything else in
    /// `rocket_db_errors_total`, so that no client can raise the database's error rate.
    pub fn error(&self, kind: DbErrorKind) {
        self.counter(kind).inc();
    }

    fn counter(&self, kind: DbErrorKind) -> IntCounter {
        let family = if kind.is_refusal() {
            &self.refusals
        } else {
            &self.errors
        };
        family.with_label_values(&[&self.alias, self.vendor.label(), kind.label()])
    }

    /// Runs one statement (`sql`, whose model write the caller has read from it),
    /// counting and timing it, and giving it a span when it is made for a request whose
    /// spans are exported. Its error is the caller's to
    /// classify and count ([`Instruments::error`]), once per failed operation.
    pub(crate) async fn time<T>(
        &self,
        statement: Statement,
        sql: &str,
        write: Option<&ModelWrite>,
        run: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        match statement {
            Statement::Single => self.execute.inc(),
            Statement::Bulk => self.execute_many.inc(),
        }
        let started = Instant::now();
        let result = run.await;
        let now = Instant::now();
        let trace = crate::trace::current();
        let exemplar = trace.map(|trace| ExemplarSource::new(&trace, now));
        self.query_duration
            .observe_with((now - started).as_secs_f64(), exemplar.as_ref());
        if let (Some(spans), Some(trace)) = (&self.spans, trace) {
            spans.call(
                &trace,
                started,
                now,
                Call {
                    system: self.vendor.label(),
                    operation: operation(sql),
                    collection: write.map(|write| write.table.as_str()),
                    error: result
                        .as_ref()
                        .err()
                        .map(|error| DbErrorKind::of(error).label()),
                },
            );
        }
        result
    }
}

/// `rocket_db_pool_connections{alias,state}` and `rocket_db_pool_max_connections{alias}`,
/// read from the pool at scrape time so they are never stale.
pub(crate) struct PoolGauges {
    pool: AnyPool,
    connections: IntGaugeVec,
    max_connections: IntGaugeVec,
    alias: String,
}

impl PoolGauges {
    pub(crate) fn new(alias: &str, pool: AnyPool) -> crate::prometheus::Result<Self> {
        Ok(PoolGauges {
            pool,
            connections: IntGaugeVec::new(
                Opts::new(
                    "rocket_db_pool_connections",
                    "Connections held by the pool, by state (idle, in_use).",
                ),
                &["alias", "state"],
            )?,
            max_connections: IntGaugeVec::new(
                Opts::new(
                    "rocket_db_pool_max_connections",
                    "Most connections the pool may hold.",
                ),
                &["alias"],
            )?,
            alias: alias.to_string(),
        })
    }
}

impl Collector for PoolGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.connections
            .desc()
            .into_iter()
            .chain(self.max_connections.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let size = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        self.connections
            .with_label_values(&[&self.alias, "idle"])
            .set(idle);
        self.connections
            .with_label_values(&[&self.alias, "in_use"])
            .set((size - idle).max(0));
        self.max_connections
            .with_label_values(&[&self.alias])
            .set(i64::from(self.pool.options().get_max_connections()));
        self.connections
            .collect()
            .into_iter()
            .chain(self.max_connections.collect())
            .collect()
    }
}

/// `rocket_model_{inserts,updates,deletes}_total{model}`, django-prometheus' model
/// families: the rows an application's writes changed, per model (a bulk write counts
/// every row). Managed as Rocket state; take one model's counters with
/// [`ModelFamilies::model`], once, and count with them after each write commits.
#[derive(Clone)]
pub struct ModelFamilies {
    inserts: IntCounterVec,
    updates: IntCounterVec,
    deletes: IntCounterVec,
}

/// One model's counters.
#[derive(Clone)]
pub struct ModelCounters {
    /// `rocket_model_inserts_total{model}`.
    pub inserts: IntCounter,
    /// `rocket_model_updates_total{model}`.
    pub updates: IntCounter,
    /// `rocket_model_deletes_total{model}`.
    pub deletes: IntCounter,
}

impl ModelFamilies {
    pub(crate) fn register(registry: &Registry) -> crate::prometheus::Result<Self> {
        Ok(ModelFamilies {
            inserts: counter_vec(
                registry,
                "rocket_model_inserts_total",
                "Rows inserted, by model (bulk inserts count every row).",
                &["model"],
            )?,
            updates: counter_vec(
                registry,
                "rocket_model_updates_total",
                "Rows updated, by model.",
                &["model"],
            )?,
            deletes: counter_vec(
                registry,
                "rocket_model_deletes_total",
                "Rows deleted, by model.",
                &["model"],
            )?,
        })
    }

    /// The counters of the model `name` (its `model` label, e.g. `"item"`).
    pub fn model(&self, name: &str) -> ModelCounters {
        ModelCounters {
            inserts: self.inserts.with_label_values(&[name]),
            updates: self.updates.with_label_values(&[name]),
            deletes: self.deletes.with_label_values(&[name]),
        }
    }
}
