//! The composition root: reads the settings, registers every family, and attaches
//! babylon to a Rocket (state, fairings, routes, the export port). Nothing in the crate
//! depends on it.

use std::collections::HashMap;
use std::time::Instant;

use figment::Figment;
use rocket::{Build, Rocket, Route};
use rocket_db_pools::Database;
use sqlx::migrate::Migrator;

use crate::api::metrics_summary::{ExportPort, MetricsEnabled};
use crate::api::{self, RedisInUse, Started};
use crate::blocking::{ClientAddr, Gatekeeper, Policy, RateLimitCollector};
use crate::cache::{CacheFamilies, Caches};
use crate::db::{self, DbFamilies, ModelFamilies};
use crate::export::{
    self, ExportError, ExportFairing, ExportListener, ExportTls, FileSdError, MetricsAccess,
    Scheme, Scrapes, TargetFile,
};
use crate::metrics::{CustomMetricError, Families, Metrics};
use crate::observe::{self, ApiFamilies, HttpFamilies, HttpObserver, RequestLines};
use crate::otlp::{SpanCounts, SpanExport, SpanSink, Spans};
use crate::pipeline::{RequestPipeline, Tracing};
use crate::redis_client::{RedisFamilies, SharedRedis};
use crate::routing;
use crate::settings::{self, ConfigError, MetricsSettings, Problems, Settings};

/// Why babylon could not be set up or attached.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong; the message names it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The export port could not be bound.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The file_sd target file could not be written.
    #[error(transparent)]
    FileSd(#[from] FileSdError),
    /// A family could not be registered (a `metrics.namespace` that makes names clash).
    #[error("cannot set up the metrics registry: {0}")]
    Registry(#[from] crate::prometheus::Error),
    /// An application family could not be registered ([`Babylon::with_families`]): its
    /// name clashes with another family, or Prometheus refuses it; the message names it.
    #[error("cannot register the application's metric families: {0}")]
    Families(#[from] CustomMetricError),
    /// The Redis client could not be set up from `redis.url`.
    #[error("cannot set up the Redis client of redis.url: {:?}", .0.kind())]
    Redis(#[from] redis::RedisError),
}

/// The main port's metrics route must be the only route of its path: the gatekeeper
/// leaves GET and HEAD of that path to it, so a route of the application there would be
/// served past the deny list and the rate limit (and Rocket would refuse an identical
/// one at launch, naming no setting).
fn refuse_a_shadowed_metrics_path(
    metrics: &MetricsSettings,
    routes: &[&Route],
    problems: &mut Problems,
) {
    if !(metrics.enabled && metrics.serve_on_main_port) {
        return;
    }
    let path = routing::RoutedPath::new(metrics.path.as_str());
    if let Some(route) = routes
        .iter()
        .find(|route| path.is_matched_by(route.uri.path()))
    {
        problems.invalid(
            "metrics.path",
            format!(
                "`{}` is served by the application route {} {}; choose a path no route matches, e.g. \"/metrics\"",
                metrics.path.as_str(),
                route.method,
                route.uri
            ),
        );
    }
}

/// Every family, registered once in one registry whatever is enabled (so the exposition
/// lists the same families in every configuration), and the clients built from the
/// settings. Nothing here opens a socket.
struct Parts {
    metrics: Metrics,
    http: HttpFamilies,
    api: ApiFamilies,
    db: DbFamilies,
    models: ModelFamilies,
    caches: Caches,
    redis: Option<SharedRedis>,
    policy: Option<std::sync::Arc<Policy>>,
    clients: ClientAddr,
    /// rocket_prometheus' fairing, recording its two families into our registry, when
    /// `metrics.rocket_prometheus` asks for it.
    rocket_prometheus: Option<std::sync::Arc<rocket_prometheus::PrometheusMetrics>>,
    /// The export port's TLS, when `metrics.export.tls` is set.
    export_tls: Option<std::sync::Arc<ExportTls>>,
    /// Where spans go, when `tracing.otlp.endpoint` is set.
    spans: Option<Spans>,
}

/// rocket_prometheus' own fairing, its two families registered in `registry`.
fn rocket_prometheus_fairing(
    registry: &crate::prometheus::Registry,
) -> crate::prometheus::Result<std::sync::Arc<rocket_prometheus::PrometheusMetrics>> {
    let fairing = rocket_prometheus::PrometheusMetrics::with_registry(registry.clone());
    registry.register(Box::new(fairing.http_requests_total().clone()))?;
    registry.register(Box::new(fairing.http_requests_duration_seconds().clone()))?;
    Ok(std::sync::Arc::new(fairing))
}

impl Parts {
    fn new(settings: &Settings) -> Result<Parts, StartError> {
        let Settings {
            metrics: metrics_settings,
            blocking,
            ..
        } = settings;
        let metrics = Metrics::new(metrics_settings)?;
        let registry = metrics.registry();
        let exemplars = settings.tracing.enabled;
        let http = HttpFamilies::register(registry, metrics_settings, exemplars)?;
        let api = ApiFamilies::register(registry, exemplars)?;
        let native = &metrics_settings.native_histograms;
        let span_counts = SpanCounts::register(registry)?;
        let spans = match settings.tracing.enabled {
            true => Spans::new(&settings.tracing.otlp, span_counts),
            false => None,
        };
        let db = DbFamilies::register(registry, native, exemplars, spans.clone())?;
        let models = ModelFamilies::register(registry)?;
        let cache_families = CacheFamilies::register(registry)?;
        let redis_families = RedisFamilies::register(registry, native, exemplars, spans.clone())?;
        // Nothing connects to Redis unless a backend in use lives there.
        let redis = match settings.uses_redis() {
            true => SharedRedis::new(&settings.redis, redis_families)?,
            false => None,
        };
        let caches = Caches::new(cache_families, &settings.cache, redis.clone());
        let clients = ClientAddr::new(blocking.trusted_proxies.clone());
        let policy = blocking
            .enabled
            .then(|| std::sync::Arc::new(Policy::new(blocking, redis.clone())));
        if let Some(policy) = policy.as_ref().filter(|p| p.rate_limit().is_some()) {
            let collector = RateLimitCollector::new(policy.clone())?;
            registry.register(Box::new(collector))?;
        }
        let rocket_prometheus = match metrics_settings.enabled && metrics_settings.rocket_prometheus
        {
            true => Some(rocket_prometheus_fairing(registry)?),
            false => None,
        };
        let export = &metrics_settings.export;
        let export_tls = match &export.tls {
            Some(tls) if metrics_settings.enabled && export.enabled => {
                Some(std::sync::Arc::new(ExportTls::new(tls, registry)?))
            }
            _ => None,
        };
        Ok(Parts {
            rocket_prometheus,
            export_tls,
            spans,
            metrics,
            http,
            api,
            db,
            models,
            caches,
            redis,
            policy,
            clients,
        })
    }
}
/// babylon, set up from validated settings: attach it to a Rocket with
/// [`Babylon::attach`].
///
/// Every family is registered when it is made, so that an application can register its
/// own in the same registry ([`Babylon::metrics`]) and make its read caches
/// ([`Babylon::caches`]) before anything is served; nothing opens a socket until
/// [`Babylon::attach`].
pub struct Babylon {
    figment: Figment,
    settings: Settings,
    parts: Parts,
    migrations: Option<&'static Migrator>,
    /// Tables whose `model` label is not their name: table -> model.
    model_names: HashMap<String, String>,
    /// The application's [`Families`], each managed as Rocket state by [`Babylon::attach`].
    families: Vec<ManageFamilies>,
}

/// Puts one [`Families`] struct into a Rocket's state.
type ManageFamilies = Box<dyn Fn(Rocket<Build>) -> Rocket<Build> + Send + Sync>;

impl Babylon {
    /// Reads Rocket.toml (profile from `ROCKET_PROFILE`) and the environment.
    pub fn from_env() -> Result<Babylon, StartError> {
        settings::check_config_file()?;
        Self::from_figment(settings::figment())
    }

    /// Reads and validates the settings of `figment` (see [`settings::figment_from`]
    /// for one that ignores the working directory's Rocket.toml).
    pub fn from_figment(figment: Figment) -> Result<Babylon, StartError> {
        Self::for_routes(figment, &[])
    }

    /// As [`Babylon::from_figment`], and also refuses settings that conflict with
    /// `routes`, the application's own (a `metrics.path` one of them serves), so that
    /// `--check-config` finds the conflict before anything starts.
    /// [`Babylon::attach`] checks the routes mounted by then in any case.
    pub fn for_routes(figment: Figment, routes: &[Route]) -> Result<Babylon, StartError> {
        let (settings, mut problems) = Settings::read(&figment);
        if let Some(settings) = &settings {
            let ours = api::routes().into_iter().chain(Gatekeeper::routes());
            let all: Vec<Route> = ours.chain(routes.iter().cloned()).collect();
            let all: Vec<&Route> = all.iter().collect();
            refuse_a_shadowed_metrics_path(&settings.metrics, &all, &mut problems);
        }
        problems.into_result(&figment)?;
        let settings = settings.expect("settings are read whenever nothing is wrong");
        let parts = Parts::new(&settings)?;
        Ok(Babylon {
            // Rocket's records reach the log as plain text (`babylon::logging`); the
            // log's own colours follow `cli_colors`.
            figment: figment.merge(("cli_colors", false)),
            settings,
            parts,
            migrations: None,
            model_names: HashMap::new(),
            families: Vec::new(),
        })
    }

    /// Names the model of `table` in `rocket_model_{inserts,updates,deletes}_total{model}`.
    /// Without it, every table's writes count with no line of code, the model named as
    /// the table (see [`db`](crate::db#model-metrics)); this keeps, say, the Django
    /// model's singular name (`items` -> `item`) on existing dashboards.
    pub fn with_model_name(mut self, table: &str, model: &str) -> Babylon {
        self.model_names
            .insert(table.to_string(), model.to_string());
        self
    }

    /// Registers the application's families `F` (a struct that derives
    /// [`Families`](crate::metrics::Families) and `Clone`) now, so that a name that
    /// clashes stops start-up naming the family, and manages them as Rocket state on
    /// [`Babylon::attach`]: a handler takes `families: &State<F>`.
    pub fn with_families<F>(mut self) -> Result<Babylon, StartError>
    where
        F: Families + Clone + Send + Sync + 'static,
    {
        let families = F::register(self.metrics())?;
        self.families
            .push(Box::new(move |rocket| rocket.manage(families.clone())));
        Ok(self)
    }

    /// The migrations to apply to `databases.main` at start-up (the `migrations/` folder
    /// of the application, embedded with `sqlx::migrate!()`), and to count in
    /// `rocket_migrations_{applied,unapplied}_by_connection`.
    pub fn with_migrations(mut self, migrations: &'static Migrator) -> Babylon {
        self.migrations = Some(migrations);
        self
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The figment the settings were read from, for `rocket::custom`.
    pub fn figment(&self) -> &Figment {
        &self.figment
    }

    /// The registry every family lives in: register the application's own here.
    pub fn metrics(&self) -> &Metrics {
        &self.parts.metrics
    }

    /// Read caches of the `cache.*` settings' backend, for the application's resources.
    pub fn caches(&self) -> &Caches {
        &self.parts.caches
    }

    /// Rocket's own settings (`workers`, `shutdown`, …), validated with the rest.
    pub fn rocket_config(&self) -> rocket::Config {
        rocket::Config::try_from(&self.figment).unwrap_or_default()
    }

    /// The async runtime to serve on, with Rocket's `workers` and `max_blocking` threads,
    /// as `rocket::execute` would build it, but from settings validated first, so that a
    /// wrong value is one line rather than a panic (`workers = 0`) or an abort (100,000).
    pub fn runtime(&self) -> std::io::Result<rocket::tokio::runtime::Runtime> {
        let config = self.rocket_config();
        rocket::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers)
            .max_blocking_threads(config.max_blocking)
            .thread_name("rocket-worker-thread")
            .enable_all()
            .build()
    }

    /// Application routes with their panics counted as `type="panic"` (see
    /// [`instrument`](crate::instrument)), or as they are when metrics are off.
    pub fn instrument(&self, routes: Vec<Route>) -> Vec<Route> {
        match self.settings.metrics.enabled {
            true => observe::instrument(routes),
            false => routes,
        }
    }

    /// Attaches babylon to `rocket`, which should be built from [`Babylon::figment`]:
    /// the database of `databases.main`, the request pipeline (HTTP families, deny list,
    /// rate limit), the health and metrics routes, JSON catchers, and, with metrics and
    /// export enabled, the export port, bound now so that a taken range fails here,
    /// before anything is served. Mount the application's routes first: a `metrics.path`
    /// that one of them serves is refused.
    pub fn attach(&self, rocket: Rocket<Build>) -> Result<Rocket<Build>, StartError> {
        let Parts {
            metrics,
            http,
            api,
            db: db_families,
            models,
            caches,
            redis,
            policy,
            clients,
            rocket_prometheus,
            export_tls,
            spans,
        } = &self.parts;
        let metrics_settings = &self.settings.metrics;
        let mut problems = Problems::default();
        refuse_a_shadowed_metrics_path(
            metrics_settings,
            &rocket.routes().collect::<Vec<_>>(),
            &mut problems,
        );
        problems.into_result(&self.figment)?;
        let access = MetricsAccess::new(&metrics_settings.export);
        let path = metrics_settings.path.as_str();

        let rocket = self
            .families
            .iter()
            .fold(rocket, |rocket, manage| manage(rocket));
        let mut rocket = rocket
            .manage(Started(Instant::now()))
            .manage(MetricsEnabled(metrics_settings.enabled))
            .manage(RedisInUse(redis.clone()))
            .manage(caches.clone())
            .manage(db_families.clone())
            .manage(models.clone())
            .manage(api.clone())
            .manage(SpanSink(spans.clone()))
            .attach(db::Db::init())
            .attach(db::DbSetup::new(self.migrations, self.model_names.clone()))
            .mount("/", self.instrument(api::routes()))
            .register("/", api::catchers());

        let on_main_port = metrics_settings.enabled && metrics_settings.serve_on_main_port;
        let observer = metrics_settings.enabled.then(|| {
            HttpObserver::new(http.clone(), api.clone(), clients.clone(), metrics_settings)
        });
        // The metrics route checks its readers itself; the policy leaves scrapes to it, so
        // that a flood that fills the rate limiter cannot hide itself by refusing scrapes.
        let scrapes = on_main_port.then(|| routing::RoutedPath::new(path));
        let tracing_settings = &self.settings.tracing;
        let tracing = tracing_settings.enabled.then(|| {
            Tracing::new(
                tracing_settings.continue_traceparent_from,
                clients.clone(),
                tracing_settings.response_headers,
                spans.clone(),
            )
        });
        if let Some(spans) = spans {
            rocket = rocket.attach(SpanExport(spans.clone()));
        }
        let lines = crate::logging::writes_request_lines(
            self.settings.logging,
            self.rocket_config().log_level,
        )
        .then(|| RequestLines::new(clients.clone()));
        rocket = rocket.attach(RequestPipeline::new(
            observer,
            tracing,
            lines,
            Gatekeeper::new(
                clients.clone(),
                policy.clone(),
                scrapes,
                api::PROBE_PATHS.map(routing::RoutedPath::new).to_vec(),
            ),
        ));

        if let Some(fairing) = rocket_prometheus {
            rocket = rocket.attach(fairing.clone());
        }

        if let Some(redis) = redis.clone() {
            // Rocket awaits lift-off before it serves, so no request waits for the first
            // connection; a Redis that does not answer delays start-up by at most
            // connect_timeout_ms + response_timeout_ms, and is then probed.
            rocket = rocket.attach(rocket::fairing::AdHoc::on_liftoff(
                "babylon: connect to the shared Redis",
                move |_| Box::pin(async move { redis.connect().await }),
            ));
        }

        let mut export_port = None;
        if metrics_settings.enabled {
            if on_main_port {
                let route = export::route(path, metrics.clone(), access.clone(), clients.clone());
                rocket = rocket.mount("/", vec![route]);
            }
            if metrics_settings.export.enabled {
                if let Some(listener) = ExportListener::bind(&metrics_settings.export)? {
                    export_port =
                        Some(listener.local_addr().map_err(|source| ExportError::Bind {
                            address: std::net::SocketAddr::from(([0, 0, 0, 0], listener.port())),
                            source,
                        })?);
                    let export = &metrics_settings.export;
                    let target_file = match &export.file_sd {
                        Some(file_sd) => {
                            let scheme = match export.tls {
                                Some(_) => Scheme::Https,
                                None => Scheme::Http,
                            };
                            Some(TargetFile::write(
                                file_sd,
                                export.address,
                                listener.port(),
                                scheme,
                            )?)
                        }
                        None => None,
                    };
                    let scrapes = Scrapes {
                        metrics: metrics.clone(),
                        api: api.clone(),
                        path: path.to_string(),
                        access,
                    };
                    rocket = rocket.attach(ExportFairing::new(
                        listener,
                        target_file,
                        scrapes,
                        export_tls.clone(),
                    ));
                }
            }
        }
        Ok(rocket
            .manage(ExportPort(export_port))
            .manage(metrics.clone()))
    }

    /// A Rocket built from [`Babylon::figment`] with babylon attached and nothing else.
    pub fn rocket(&self) -> Result<Rocket<Build>, StartError> {
        self.attach(rocket::custom(self.figment.clone()))
    }

    /// The line `main` prints once the export port is bound, whatever the log level: in
    /// release Rocket logs only errors, and operators still need to know the port.
    pub fn export_banner(&self, rocket: &Rocket<Build>) -> Option<String> {
        let addr = rocket.state::<ExportPort>()?.0?;
        let export = &self.settings.metrics.export;
        let over = match &export.tls {
            None => "",
            Some(tls) if tls.client_ca_file.is_some() => " over HTTPS with client certificates",
            Some(_) => " over HTTPS",
        };
        Some(format!(
            "metrics export listening on {addr}{}{over} (port {} of {})",
            self.settings.metrics.path.as_str(),
            addr.port(),
            export.ports()
        ))
    }
}
