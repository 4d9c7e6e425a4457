//! Metrics: one Prometheus registry per service, the built-in families, and the ways they
//! are recorded and read.
//!
//! - [`families`]: the families of DESIGN.md and how one request is observed,
//! - [`per_request`]: the six families every request increments, as one histogram per
//!   kind of request,
//! - [`sharded`]: histograms each thread records into alone, summed when read,
//! - [`observer`]: records every request from arrival to response,
//! - [`panics`]: a handler wrapper that tells panics apart from other server errors,
//! - [`custom`]: get-or-register custom families for application code,
//! - [`access`]: who may read metrics,
//! - [`exporter`]: the per-process export listener on a port of the range,
//! - [`file_sd`]: the export target announced to Prometheus' file-based discovery,
//! - [`endpoint`]: the metrics route on the main port,
//! - [`rate_limit`]: the rate limiter's state.

pub mod access;
pub mod cardinality;
pub mod custom;
pub mod endpoint;
pub mod exporter;
pub mod families;
pub mod file_sd;
pub mod observer;
pub mod panics;
pub mod per_request;
pub mod rate_limit;
pub mod sharded;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::prometheus::{Encoder, Registry, TextEncoder};

pub use access::MetricsAccess;
pub use custom::{CustomMetricError, CustomMetrics};
pub use families::{ApiFamilies, HttpFamilies};

use crate::cache::CacheFamilies;
use crate::config::MetricsSettings;
use crate::db::metrics::{DbFamilies, ModelFamilies};

/// The `Content-Type` of the Prometheus text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The service's registry and its families. Cheap to clone; every clone is the same
/// registry. Managed as Rocket state, so handlers take `&State<Metrics>`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http: HttpFamilies,
    api: ApiFamilies,
    db: DbFamilies,
    models: ModelFamilies,
    cache: CacheFamilies,
    custom: CustomMetrics,
    last_render_bytes: AtomicUsize,
}

impl Metrics {
    /// A registry with every built-in family, prefixed by `metrics.namespace` if set.
    pub fn new(settings: &MetricsSettings) -> crate::prometheus::Result<Self> {
        let prefix = settings
            .namespace
            .as_ref()
            .map(|ns| ns.as_str().to_string());
        let registry = Registry::new_custom(prefix, None)?;
        let http = HttpFamilies::register(&registry, settings)?;
        let api = ApiFamilies::register(&registry)?;
        let db = DbFamilies::register(&registry)?;
        let models = ModelFamilies::register(&registry)?;
        let cache = CacheFamilies::register(&registry)?;
        families::register_build_info(&registry)?;
        registry.register(Box::new(
            crate::prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            inner: Arc::new(Inner {
                custom: CustomMetrics::new(registry.clone(), settings.max_series_per_family.get())?,
                last_render_bytes: AtomicUsize::new(16 * 1024),
                registry,
                http,
                api,
                db,
                models,
                cache,
            }),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn http(&self) -> &HttpFamilies {
        &self.inner.http
    }

    pub fn api(&self) -> &ApiFamilies {
        &self.inner.api
    }

    pub fn db(&self) -> &DbFamilies {
        &self.inner.db
    }

    pub fn models(&self) -> &ModelFamilies {
        &self.inner.models
    }

    pub fn cache(&self) -> &CacheFamilies {
        &self.inner.cache
    }

    /// Where application code adds its own families; see [`CustomMetrics`].
    pub fn custom(&self) -> &CustomMetrics {
        &self.inner.custom
    }

    /// Every family in the text exposition format. The buffer starts at the size of the
    /// previous exposition, so a scrape encodes without growing it step by step.
    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(self.inner.last_render_bytes.load(Ordering::Relaxed));
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut buffer)
            .expect("encoding into a Vec cannot fail");
        // A little headroom for series that appear before the next scrape.
        self.inner
            .last_render_bytes
            .store(buffer.len() + buffer.len() / 8, Ordering::Relaxed);
        buffer
    }
}
