//! Custom metric families for application code, registered on first use.
//!
//! A handler asks for a family by name; the first call registers it in the service's
//! registry (so it appears on every metrics endpoint), later calls get the same family.
//!
//! ```no_run
//! # use babylon::metrics::{Metrics, CustomMetricError};
//! # fn handler(metrics: &Metrics) -> Result<(), CustomMetricError> {
//! let greetings = metrics.custom().counter(
//!     "babylon_greetings_total",
//!     "Greetings sent, by language.",
//!     &["language"],
//! )?;
//! greetings.with_label_values(&["en"]).inc();
//! # Ok(()) }
//! ```
//!
//! Each call takes a lock and a map lookup; on a hot path, keep the returned family.
//!
//! Every family is [`Capped`]: at most `metrics.max_series_per_family` label sets, then
//! `<overflow>` (see [`super::cardinality`]), so label values taken from requests cannot
//! grow the registry without bound.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use crate::settings::{Buckets, NativeHistogramSettings};

use super::application::{CounterVec, HistogramVec};
use super::cardinality::{Capped, Overflow};
use super::native::NativeConfig;
use super::sharded::{Recording, ShardedCounterVec, ShardedHistogramVec};
use super::{register, register_full};

/// Get-or-register custom families, each capped at `metrics.max_series_per_family` label sets.
pub struct CustomMetrics {
    registry: Registry,
    families: Mutex<HashMap<String, (Family, Vec<String>)>>,
    max_series_per_family: usize,
    /// `babylon_metrics_series_overflow_total{family}`.
    overflow: IntCounterVec,
    /// How histograms record native buckets (`metrics.native_histograms`).
    native: Option<NativeConfig>,
}

#[derive(Clone)]
enum Family {
    Counter(Capped<CounterVec>),
    Gauge(Capped<GaugeVec>),
    Histogram(Capped<HistogramVec>),
}

impl Family {
    fn kind(&self) -> &'static str {
        match self {
            Family::Counter(_) => "counter",
            Family::Gauge(_) => "gauge",
            Family::Histogram(_) => "histogram",
        }
    }
}

#[derive(Debug, thiserror::Error)]
/// Why a custom family could not be handed out.
pub enum CustomMetricError {
    #[error("metric `{name}` is already registered as a {existing}, not a {requested}")]
    /// The name is taken by a family of another type.
    KindMismatch {
        /// The family's name.
        name: String,
        /// The type it was registered with.
        existing: &'static str,
        /// The type asked for now.
        requested: &'static str,
    },
    #[error("metric `{name}` is already registered with labels {existing:?}, not {requested:?}")]
    /// The name is taken with other label names.
    LabelMismatch {
        /// The family's name.
        name: String,
        /// The label names it was registered with.
        existing: Vec<String>,
        /// The label names asked for now.
        requested: Vec<String>,
    },
    #[error("metric `{name}`: {problem}")]
    /// The histogram's bucket bounds are not finite and strictly increasing.
    Buckets {
        /// The family's name.
        name: String,
        /// What is wrong with them.
        problem: String,
    },
    #[error("metric `{name}`: {source}")]
    /// The prometheus crate refused the family (an invalid name, or a clash with a built-in).
    Prometheus {
        /// The family's name.
        name: String,
        /// The prometheus crate's error.
        source: crate::prometheus::Error,
    },
}

impl CustomMetrics {
    pub(crate) fn new(
        registry: Registry,
        max_series_per_family: usize,
        native: &NativeHistogramSettings,
    ) -> crate::prometheus::Result<Self> {
        let overflow = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "babylon_metrics_series_overflow_total",
                    "Records that went to the <overflow> label set because their family was full (metrics.max_series_per_family).",
                ),
                &["family"],
            )?,
        )?;
        Ok(CustomMetrics {
            registry,
            families: Mutex::new(HashMap::new()),
            max_series_per_family,
            overflow,
            native: NativeConfig::from_settings(native),
        })
    }

    fn capped<F: super::cardinality::LabelledFamily>(
        &self,
        name: &str,
        family: F,
        labels: &[&str],
    ) -> Capped<F> {
        let overflow = Overflow::new(self.overflow.clone(), name);
        Capped::new(family, labels.len(), self.max_series_per_family, overflow)
    }

    /// An integer counter family; by convention its name ends in `_total`. A count made
    /// while a request's handler runs keeps that request as its exemplar
    /// ([`CounterSeries::inc`](super::CounterSeries::inc)).
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<Capped<CounterVec>, CustomMetricError> {
        self.get_or_register(name, labels, "counter", || {
            ShardedCounterVec::new(name, help, labels, true)
                .map(|family| Family::Counter(self.capped(name, CounterVec(family), labels)))
        })
        .map(|family| match family {
            Family::Counter(counter) => counter,
            _ => unreachable!("kind checked by get_or_register"),
        })
    }

    /// A gauge family (a value that goes up and down).
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<Capped<GaugeVec>, CustomMetricError> {
        self.get_or_register(name, labels, "gauge", || {
            GaugeVec::new(Opts::new(name, help), labels)
                .map(|family| Family::Gauge(self.capped(name, family, labels)))
        })
        .map(|family| match family {
            Family::Gauge(gauge) => gauge,
            _ => unreachable!("kind checked by get_or_register"),
        })
    }

    /// A histogram family with the given bucket upper bounds (finite, strictly
    /// increasing); it also records native buckets as `metrics.native_histograms` says,
    /// and exemplars of the request being handled ([`Series::observe`](super::Series::observe)).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<Capped<HistogramVec>, CustomMetricError> {
        let bounds = Buckets::increasing(buckets.to_vec()).map_err(|problem| {
            CustomMetricError::Buckets {
                name: name.to_string(),
                problem,
            }
        })?;
        let recording = Recording {
            native: self.native,
            exemplars: true,
        };
        self.get_or_register(name, labels, "histogram", || {
            ShardedHistogramVec::new(name, help, labels, (bounds, recording))
                .map(|family| Family::Histogram(self.capped(name, HistogramVec(family), labels)))
        })
        .map(|family| match family {
            Family::Histogram(histogram) => histogram,
            _ => unreachable!("kind checked by get_or_register"),
        })
    }

    fn get_or_register(
        &self,
        name: &str,
        labels: &[&str],
        requested: &'static str,
        create: impl FnOnce() -> crate::prometheus::Result<Family>,
    ) -> Result<Family, CustomMetricError> {
        let prometheus_error = |source| CustomMetricError::Prometheus {
            name: name.to_string(),
            source,
        };
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((existing, existing_labels)) = families.get(name) {
            if existing.kind() != requested {
                return Err(CustomMetricError::KindMismatch {
                    name: name.to_string(),
                    existing: existing.kind(),
                    requested,
                });
            }
            if existing_labels
                .iter()
                .map(String::as_str)
                .ne(labels.iter().copied())
            {
                return Err(CustomMetricError::LabelMismatch {
                    name: name.to_string(),
                    existing: existing_labels.clone(),
                    requested: labels.iter().map(|l| l.to_string()).collect(),
                });
            }
            return Ok(existing.clone());
        }
        let family = create().map_err(prometheus_error)?;
        match &family {
            Family::Counter(c) => register_full(&self.registry, c.family().0.clone()).map(drop),
            Family::Gauge(g) => register(&self.registry, g.family().clone()).map(drop),
            Family::Histogram(h) => register_full(&self.registry, h.family().0.clone()).map(drop),
        }
        .map_err(prometheus_error)?;
        let label_names = labels.iter().map(|l| l.to_string()).collect();
        families.insert(name.to_string(), (family.clone(), label_names));
        Ok(family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_finite_and_increasing_negative_ones_included() {
        let custom = CustomMetrics::new(Registry::new(), 100, &Default::default()).unwrap();
        let temperature = custom
            .histogram(
                "room_celsius",
                "Rooms.",
                &[],
                &[-10.0, 0.0, 20.0, f64::INFINITY],
            )
            .unwrap();
        let series = temperature.with_label_values(&[]);
        for value in [-20.0, -5.0, 25.0] {
            series.observe(value);
        }
        assert_eq!((series.count(), series.sum()), (3, 0.0));
        for (bounds, problem) in [
            (vec![], "empty"),
            (vec![1.0, 1.0], "increase strictly"),
            (vec![2.0, 1.0], "increase strictly"),
            (vec![f64::NAN], "not a finite number"),
            (vec![f64::NEG_INFINITY, 1.0], "not a finite number"),
        ] {
            let error = custom
                .histogram("bad_seconds", "Bad.", &[], &bounds)
                .unwrap_err();
            assert!(
                matches!(&error, CustomMetricError::Buckets { problem: p, .. } if p.contains(problem)),
                "{bounds:?}: {error}"
            );
        }
    }

    #[test]
    fn same_family_twice_and_kind_mismatch() {
        let custom = CustomMetrics::new(Registry::new(), 100, &Default::default()).unwrap();
        let first = custom
            .counter("orders_total", "Orders.", &["kind"])
            .unwrap();
        first.with_label_values(&["a"]).inc();
        let again = custom
            .counter("orders_total", "Orders.", &["kind"])
            .unwrap();
        assert_eq!(again.with_label_values(&["a"]).get(), 1);
        let err = custom
            .gauge("orders_total", "Orders.", &["kind"])
            .unwrap_err();
        assert!(err.to_string().contains("already registered as a counter"));
        let err = custom
            .counter("orders_total", "Orders.", &["other"])
            .unwrap_err();
        assert!(matches!(err, CustomMetricError::LabelMismatch { .. }));
        assert!(custom.counter("bad name", "x", &[]).is_err());
    }
}
