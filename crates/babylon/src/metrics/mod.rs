//! The metrics core: one Prometheus registry per service, the primitives every family is
//! built from, and the custom-metrics API for application code.
//!
//! - [`Metrics`]: the registry handle (managed as Rocket state) and its exposition,
//! - `sharded`: histograms and counters each thread records into alone, summed when read,
//! - `cardinality`: the cap on label sets a custom family may grow to,
//! - [`Families`]: typed custom families for application code, declared as a struct and
//!   registered at start-up (`typed`),
//! - [`CustomMetrics`]: get-or-register custom families by name.
//!
//! The families babylon records live with the subsystem that records them (`observe`,
//! `db`, `cache`, `blocking`) and are registered into this registry by the application's
//! composition root. This module depends only on `prometheus`, the build facts and the
//! bucket type of the settings.

mod application;
pub(crate) mod cardinality;
mod custom;
pub(crate) mod exemplar;
pub(crate) mod exposition;
pub(crate) mod native;
pub(crate) mod sharded;
mod typed;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::prometheus::core::Collector;
use crate::prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub use application::{CounterSeries, CounterVec, HistogramVec, Series};
pub use cardinality::Capped;
pub use custom::{CustomMetricError, CustomMetrics};
pub use exemplar::ExemplarSource;
pub use exposition::Format;
pub use typed::{Counter, Families, Family, FamilyDef, Gauge, Histogram, LabelSet, LabelValue};

use crate::settings::MetricsSettings;

/// The service's registry. Cheap to clone; every clone is the same registry. Managed as
/// Rocket state, so handlers take `&State<Metrics>` to reach [`Metrics::custom`].
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// `metrics.namespace`, which the registry puts before the names it gathers.
    namespace: Option<String>,
    custom: CustomMetrics,
    /// Per [`Format`]: the size of the last exposition in it, and some headroom.
    last_render_bytes: [AtomicUsize; 3],
}

impl Metrics {
    /// A registry prefixed by `metrics.namespace` if set, holding `babylon_build_info` and
    /// the `process_*` families; the service's own families are added by their subsystems.
    pub fn new(settings: &MetricsSettings) -> crate::prometheus::Result<Self> {
        let prefix = settings
            .namespace
            .as_ref()
            .map(|ns| ns.as_str().to_string());
        let registry = Registry::new_custom(prefix.clone(), None)?;
        register_build_info(&registry)?;
        registry.register(Box::new(
            crate::prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            inner: Arc::new(Inner {
                custom: CustomMetrics::new(
                    registry.clone(),
                    settings.max_series_per_family.get(),
                    &settings.native_histograms,
                )?,
                last_render_bytes: Format::ALL.map(|_| AtomicUsize::new(16 * 1024)),
                registry,
                namespace: prefix,
            }),
        })
    }

    /// The registry itself, for collectors of the service's own families.
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Where application code adds its own families; see [`CustomMetrics`].
    pub fn custom(&self) -> &CustomMetrics {
        &self.inner.custom
    }

    /// Every family in the text exposition format 0.0.4.
    pub fn render(&self) -> Vec<u8> {
        self.render_as(Format::Text)
    }

    /// Every family in `format`. The buffer starts at the size of the previous exposition
    /// in that format, so a scrape encodes without growing it step by step.
    pub fn render_as(&self, format: Format) -> Vec<u8> {
        let last_bytes = &self.inner.last_render_bytes[format as usize];
        let mut buffer = Vec::with_capacity(last_bytes.load(Ordering::Relaxed));
        match format {
            Format::Text => TextEncoder::new()
                .encode(&self.inner.registry.gather(), &mut buffer)
                .expect("encoding into a Vec cannot fail"),
            Format::OpenMetrics | Format::Protobuf => {
                let families =
                    exposition::gather(&self.inner.registry, self.inner.namespace.as_deref());
                if format == Format::OpenMetrics {
                    exposition::encode_openmetrics(&families, &mut buffer);
                } else {
                    exposition::encode_protobuf(&families, &mut buffer);
                }
            }
        }
        // A little headroom for series that appear before the next scrape.
        last_bytes.store(buffer.len() + buffer.len() / 8, Ordering::Relaxed);
        buffer
    }
}

/// Registers `collector` and hands it back, so families read as one expression each.
pub(crate) fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> crate::prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// Registers `collector`, whose families hold more than the `prometheus` crate's model
/// (see [`exposition::FullCollector`]), and hands it back.
pub(crate) fn register_full<C: exposition::FullCollector + Clone>(
    registry: &Registry,
    collector: C,
) -> crate::prometheus::Result<C> {
    registry.register(Box::new(exposition::FullModel(collector.clone())))?;
    Ok(collector)
}

/// Registers a labelled integer counter family.
pub(crate) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> crate::prometheus::Result<IntCounterVec> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// Registers a labelled integer gauge family.
pub(crate) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> crate::prometheus::Result<IntGaugeVec> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// `babylon_build_info{version,rustc,commit} 1`, the analogue of `python_info`.
fn register_build_info(registry: &Registry) -> crate::prometheus::Result<()> {
    let info = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "babylon_build_info",
                "Build of the running babylon binary; the value is always 1.",
            ),
            &["version", "rustc", "commit"],
        )?,
    )?;
    info.with_label_values(&[
        crate::build::VERSION,
        crate::build::RUSTC,
        crate::build::COMMIT,
    ])
    .set(1);
    Ok(())
}
