//! babylon: a Rocket web backend whose metrics are part of the product.
//!
//! [`App`] holds validated settings; [`App::rocket`] builds the Rocket that `main` launches
//! and tests drive with Rocket's local client. The data path of a request reads top to
//! bottom: [`config`] -> [`pipeline`] (observe, then screen) -> guards
//! -> handlers ([`api`]) -> response -> metrics.

pub mod api;
pub mod blocking;
pub mod cache;
pub mod config;
pub mod db;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod request_record;
pub mod routing;

/// The `prometheus` crate as rocket_prometheus re-exports it, so that application code
/// registering custom families uses the very version our registry is built on.
pub use rocket_prometheus::prometheus;

use std::time::Instant;

use figment::Figment;
use rocket::{Build, Rocket};
use rocket_db_pools::Database;

use api::metrics_summary::{ExportPort, MetricsEnabled};
use api::Started;
use blocking::{ClientAddr, Gatekeeper, Policy};
use config::{ConfigError, Settings};
use metrics::exporter::{ExportError, ExportFairing, ExportListener};
use metrics::file_sd::{FileSdError, TargetFile};
use metrics::observer::HttpObserver;
use metrics::{Metrics, MetricsAccess};
use pipeline::RequestPipeline;

/// Facts about this build, also exported as `babylon_build_info`.
pub mod build {
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    pub const RUSTC: &str = env!("BUILD_RUSTC_VERSION");
    pub const COMMIT: &str = env!("BUILD_GIT_COMMIT");
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    FileSd(#[from] FileSdError),
    #[error("cannot set up the metrics registry: {0}")]
    Registry(#[from] crate::prometheus::Error),
}

/// The service with its settings read and validated, ready to build a Rocket.
pub struct App {
    figment: Figment,
    settings: Settings,
}

impl App {
    /// Reads Rocket.toml (profile from `ROCKET_PROFILE`) and the environment.
    pub fn from_env() -> Result<App, ConfigError> {
        Self::from_figment(config::figment())
    }

    pub fn from_figment(figment: Figment) -> Result<App, ConfigError> {
        let settings = Settings::from_figment(&figment)?;
        Ok(App { figment, settings })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Builds the Rocket. With metrics and export enabled this binds the export port now,
    /// so that a taken range fails here, before anything is served.
    pub fn rocket(&self) -> Result<Rocket<Build>, StartError> {
        let Settings {
            metrics: metrics_settings,
            blocking,
            ..
        } = &self.settings;
        let metrics = Metrics::new(metrics_settings)?;
        let clients = ClientAddr::new(blocking.trusted_proxies.clone());
        let policy = blocking
            .enabled
            .then(|| std::sync::Arc::new(Policy::new(blocking)));
        if let Some(policy) = policy.as_ref().filter(|p| p.rate_limiter().is_some()) {
            let collector = metrics::rate_limit::RateLimitCollector::new(policy.clone())?;
            metrics.registry().register(Box::new(collector))?;
        }
        let access = MetricsAccess::new(&metrics_settings.export);
        let path = metrics_settings.path.as_str();

        let mut rocket = rocket::custom(self.figment.clone())
            .manage(Started(Instant::now()))
            .manage(MetricsEnabled(metrics_settings.enabled))
            .manage(api::items::ItemsCache::new(
                metrics.cache(),
                &self.settings.cache,
            ))
            .attach(db::Db::init())
            .attach(db::DbSetup)
            // Counting panics wraps every handler (one boxed future per request), so only
            // when there are metrics to count them in.
            .mount(
                "/",
                if metrics_settings.enabled {
                    metrics::panics::instrument(api::routes())
                } else {
                    api::routes()
                },
            )
            .register("/", api::catchers());

        let on_main_port = metrics_settings.enabled && metrics_settings.serve_on_main_port;
        let observer = metrics_settings
            .enabled
            .then(|| HttpObserver::new(metrics.clone(), clients.clone(), metrics_settings));
        // The metrics route checks its readers itself; the policy leaves scrapes to it, so
        // that a flood that fills the rate limiter cannot hide itself by refusing scrapes.
        let scrapes = on_main_port.then(|| routing::RoutedPath::new(path));
        rocket = rocket.attach(RequestPipeline::new(
            observer,
            Gatekeeper::new(clients.clone(), policy, scrapes),
        ));

        let mut export_port = None;
        if metrics_settings.enabled {
            if on_main_port {
                let route = metrics::endpoint::route(
                    path,
                    metrics.clone(),
                    access.clone(),
                    clients.clone(),
                );
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
                    rocket = rocket.attach(ExportFairing::new(
                        listener,
                        target_file,
                        metrics.clone(),
                        path,
                        access,
                        clients,
                    ));
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
