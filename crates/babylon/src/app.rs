//! The composition root: builds every family, manages Rocket state, attaches the
//! fairings and binds the export port. Nothing in the crate depends on it.

use std::time::Instant;

use figment::Figment;
use rocket::{Build, Rocket};
use rocket_db_pools::Database;

use crate::api::items::ItemsCache;
use crate::api::metrics_summary::{ExportPort, MetricsEnabled};
use crate::api::{self, RedisInUse, Started};
use crate::blocking::{ClientAddr, Gatekeeper, Policy, RateLimitCollector};
use crate::cache::CacheFamilies;
use crate::db::{self, DbFamilies, ModelFamilies};
use crate::export::{
    self, ExportError, ExportFairing, ExportListener, FileSdError, MetricsAccess, Scrapes,
    TargetFile,
};
use crate::metrics::Metrics;
use crate::observe::{self, ApiFamilies, HttpFamilies, HttpObserver};
use crate::pipeline::RequestPipeline;
use crate::redis_client::{RedisFamilies, SharedRedis};
use crate::routing;
use crate::settings::{self, ConfigError, MetricsSettings, Problems, Settings};

/// Why the service could not start.
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
    /// The Redis client could not be set up from `redis.url`.
    #[error("cannot set up the Redis client of redis.url: {:?}", .0.kind())]
    Redis(#[from] redis::RedisError),
}

/// The main port's metrics route must be the only route of its path: the gatekeeper
/// leaves GET and HEAD of that path to it, so a route of the application there would be
/// served past the deny list and the rate limit (and Rocket would refuse an identical
/// one at launch, naming no setting).
fn refuse_a_shadowed_metrics_path(metrics: &MetricsSettings, problems: &mut Problems) {
    if !(metrics.enabled && metrics.serve_on_main_port) {
        return;
    }
    let path = routing::RoutedPath::new(metrics.path.as_str());
    let mut routes = api::routes().into_iter().chain(Gatekeeper::routes());
    if let Some(route) = routes.find(|route| path.is_matched_by(route.uri.path())) {
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

/// The service with its settings read and validated, ready to build a Rocket.
pub struct App {
    figment: Figment,
    settings: Settings,
}

impl App {
    /// Reads Rocket.toml (profile from `ROCKET_PROFILE`) and the environment.
    pub fn from_env() -> Result<App, ConfigError> {
        settings::check_config_file()?;
        Self::from_figment(settings::figment())
    }

    /// Reads and validates the settings of `figment` (see [`settings::figment_from`]
    /// for one that ignores the working directory's Rocket.toml).
    pub fn from_figment(figment: Figment) -> Result<App, ConfigError> {
        let (settings, mut problems) = Settings::read(&figment);
        if let Some(settings) = &settings {
            refuse_a_shadowed_metrics_path(&settings.metrics, &mut problems);
        }
        problems.into_result(&figment)?;
        let settings = settings.expect("settings are read whenever nothing is wrong");
        Ok(App { figment, settings })
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
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

    /// Builds the Rocket. With metrics and export enabled this binds the export port now,
    /// so that a taken range fails here, before anything is served.
    pub fn rocket(&self) -> Result<Rocket<Build>, StartError> {
        let Settings {
            metrics: metrics_settings,
            blocking,
            ..
        } = &self.settings;
        // Every family is registered here, once, whatever is enabled: the exposition
        // lists the same families in every configuration.
        let metrics = Metrics::new(metrics_settings)?;
        let registry = metrics.registry();
        let http = HttpFamilies::register(registry, metrics_settings)?;
        let api = ApiFamilies::register(registry)?;
        let db_families = DbFamilies::register(registry)?;
        let models = ModelFamilies::register(registry)?;
        let cache = CacheFamilies::register(registry)?;
        let redis_families = RedisFamilies::register(registry)?;
        // Nothing connects to Redis unless a backend in use lives there.
        let redis = match self.settings.uses_redis() {
            true => SharedRedis::new(&self.settings.redis, redis_families)?,
            false => None,
        };

        let clients = ClientAddr::new(blocking.trusted_proxies.clone());
        let policy = blocking
            .enabled
            .then(|| std::sync::Arc::new(Policy::new(blocking, redis.clone())));
        if let Some(policy) = policy.as_ref().filter(|p| p.rate_limit().is_some()) {
            let collector = RateLimitCollector::new(policy.clone())?;
            registry.register(Box::new(collector))?;
        }
        let access = MetricsAccess::new(&metrics_settings.export);
        let path = metrics_settings.path.as_str();

        let mut rocket = rocket::custom(self.figment.clone())
            .manage(Started(Instant::now()))
            .manage(MetricsEnabled(metrics_settings.enabled))
            .manage(ItemsCache::new(&cache, &self.settings.cache, redis.clone()))
            .manage(RedisInUse(redis.clone()))
            .manage(db_families)
            .manage(models)
            .manage(api.clone())
            .attach(db::Db::init())
            .attach(db::DbSetup)
            // Counting panics wraps every handler (one boxed future per request), so only
            // when there are metrics to count them in.
            .mount(
                "/",
                if metrics_settings.enabled {
                    observe::instrument(api::routes())
                } else {
                    api::routes()
                },
            )
            .register("/", api::catchers());

        let on_main_port = metrics_settings.enabled && metrics_settings.serve_on_main_port;
        let observer = metrics_settings
            .enabled
            .then(|| HttpObserver::new(http, api.clone(), clients.clone(), metrics_settings));
        // The metrics route checks its readers itself; the policy leaves scrapes to it, so
        // that a flood that fills the rate limiter cannot hide itself by refusing scrapes.
        let scrapes = on_main_port.then(|| routing::RoutedPath::new(path));
        rocket = rocket.attach(RequestPipeline::new(
            observer,
            Gatekeeper::new(
                clients.clone(),
                policy,
                scrapes,
                api::PROBE_PATHS.map(routing::RoutedPath::new).to_vec(),
            ),
        ));

        if let Some(redis) = redis {
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
                            Some(TargetFile::write(file_sd, export.address, listener.port())?)
                        }
                        None => None,
                    };
                    let scrapes = Scrapes {
                        metrics: metrics.clone(),
                        api,
                        path: path.to_string(),
                        access,
                    };
                    rocket = rocket.attach(ExportFairing::new(listener, target_file, scrapes));
                }
            }
        }
        Ok(rocket.manage(ExportPort(export_port)).manage(metrics))
    }

    /// The line `main` prints once the export port is bound, whatever the log level: in
    /// release Rocket logs only errors, and operators still need to know the port.
    pub fn export_banner(&self, rocket: &Rocket<Build>) -> Option<String> {
        let addr = rocket.state::<ExportPort>()?.0?;
        let export = &self.settings.metrics.export;
        Some(format!(
            "babylon: metrics export listening on {addr}{} (port {} of {})",
            self.settings.metrics.path.as_str(),
            addr.port(),
            export.ports()
        ))
    }
}
