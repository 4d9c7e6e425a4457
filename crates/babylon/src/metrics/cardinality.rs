//! A cap on how many label sets a family may grow to.
//!
//! Custom families take label values from application code, which may take them from
//! requests. A [`Capped`] family admits the first `limit` distinct label sets; any further
//! set is recorded under the value `<overflow>` for every label, and
//! `babylon_metrics_series_overflow_total{family}` counts each such record. So no request
//! can make the registry, the scrape, or Prometheus' storage grow without bound, and the
//! overflow is visible rather than silent.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use crate::prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec};

/// The label value every label gets once a family is full.
pub(crate) const OVERFLOW_VALUE: &str = "<overflow>";

/// A labelled family: babylon's [`CounterVec`](super::CounterVec) and
/// [`HistogramVec`](super::HistogramVec), the `prometheus` crate's `GaugeVec`.
pub trait LabelledFamily: Clone {
    type Child;
    fn child(&self, values: &[&str]) -> Self::Child;
}

/// For the tests below, which count with the `prometheus` crate's own counters.
#[cfg(test)]
impl LabelledFamily for IntCounterVec {
    type Child = IntCounter;
    fn child(&self, values: &[&str]) -> Self::Child {
        self.with_label_values(values)
    }
}

impl LabelledFamily for GaugeVec {
    type Child = Gauge;
    fn child(&self, values: &[&str]) -> Gauge {
        self.with_label_values(values)
    }
}

/// A family with at most `metrics.max_series_per_family` label sets; cheap to clone,
/// clones share the count. [`Capped::with_label_values`] works like the `prometheus`
/// crate's own.
#[derive(Clone)]
pub struct Capped<F> {
    family: F,
    admitted: Arc<Mutex<HashSet<u64>>>,
    limit: usize,
    label_count: usize,
    overflow: Overflow,
}

/// This family's child of `babylon_metrics_series_overflow_total{family}`, made on the
/// family's first use (so the series appears with the family's own first series, not
/// when the family is registered).
#[derive(Clone)]
pub(crate) struct Overflow {
    counters: IntCounterVec,
    family: Arc<str>,
    child: Arc<OnceLock<IntCounter>>,
}

impl Overflow {
    /// The child `{family="<family>"}` of `counters`.
    pub(crate) fn new(counters: IntCounterVec, family: &str) -> Self {
        Overflow {
            counters,
            family: family.into(),
            child: Arc::default(),
        }
    }

    fn counter(&self) -> &IntCounter {
        self.child
            .get_or_init(|| self.counters.with_label_values(&[&*self.family]))
    }
}

impl<F> std::fmt::Debug for Capped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capped")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<F: LabelledFamily> Capped<F> {
    /// `overflow` counts this family's records beyond `limit` label sets.
    pub(crate) fn new(family: F, label_count: usize, limit: usize, overflow: Overflow) -> Self {
        Capped {
            family,
            admitted: Arc::default(),
            limit,
            label_count,
            overflow,
        }
    }

    /// The uncapped family, for registration and reading.
    pub fn family(&self) -> &F {
        &self.family
    }

    /// The child for `values`, or the overflow child once the family is full. Like
    /// prometheus' own `with_label_values`, the number of values must match the labels.
    pub fn with_label_values(&self, values: &[&str]) -> F::Child {
        let overflow = self.overflow.counter();
        if self.label_count == 0 || self.admit(values) {
            return self.family.child(values);
        }
        overflow.inc();
        self.family.child(&vec![OVERFLOW_VALUE; self.label_count])
    }

    fn admit(&self, values: &[&str]) -> bool {
        let mut hasher = DefaultHasher::new();
        values.hash(&mut hasher);
        let key = hasher.finish();
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if admitted.contains(&key) {
            return true;
        }
        if admitted.len() < self.limit {
            admitted.insert(key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::Opts;

    #[test]
    fn label_sets_beyond_the_limit_share_the_overflow_value_and_are_counted() {
        let family =
            IntCounterVec::new(Opts::new("orders_total", "Orders."), &["customer", "kind"])
                .unwrap();
        let overflows =
            IntCounterVec::new(Opts::new("overflow_total", "Overflow."), &["family"]).unwrap();
        let capped = Capped::new(
            family.clone(),
            2,
            3,
            Overflow::new(overflows.clone(), "orders_total"),
        );
        let overflow = overflows.with_label_values(&["orders_total"]);
        for customer in 0..10 {
            capped
                .with_label_values(&[&customer.to_string(), "a"])
                .inc();
        }
        capped.with_label_values(&["1", "a"]).inc(); // admitted before: not an overflow
        assert_eq!(family.with_label_values(&["1", "a"]).get(), 2);
        assert_eq!(
            family
                .with_label_values(&[OVERFLOW_VALUE, OVERFLOW_VALUE])
                .get(),
            7
        );
        assert_eq!(overflow.get(), 7);
        // Three admitted sets and the overflow set: the family stopped growing.
        assert_eq!(
            crate::prometheus::core::Collector::collect(&family)[0]
                .get_metric()
                .len(),
            4
        );
    }
}
