//! The histograms and counters of application code, typed ([`Histogram`](super::Histogram),
//! [`Counter`](super::Counter)) or by name ([`CustomMetrics`](super::CustomMetrics)):
//! babylon's own lock-free per-thread families, so that they record what its own do —
//! classic and native buckets (`metrics.native_histograms`), and exemplars of the request
//! being handled.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::cardinality::LabelledFamily;
use super::exemplar::ExemplarSource;
use super::sharded::{ShardedCounter, ShardedCounterVec, ShardedHistogram, ShardedHistogramVec};
use crate::trace::TraceContext;

/// A histogram family of application code, one [`Series`] per label set. Cheap to
/// clone; clones share the series.
#[derive(Clone)]
pub struct HistogramVec(pub(super) ShardedHistogramVec);

impl LabelledFamily for HistogramVec {
    type Child = Series;

    fn child(&self, values: &[&str]) -> Series {
        Series(self.0.with_label_values(values))
    }
}

/// One label set's histogram. An observation made while a request's handler runs keeps
/// that request as its bucket's exemplar (its `trace_id` and `span_id`; at most one per
/// bucket per thread per second): a spike in an application histogram leads to the
/// request behind it, as babylon's own do.
#[derive(Clone)]
pub struct Series(Arc<ShardedHistogram>);

impl Series {
    /// Records one observation; within a request's handler, with that request as its
    /// exemplar ([`crate::trace::current`]).
    pub fn observe(&self, value: f64) {
        match crate::trace::current() {
            Some(trace) => self.observe_for(value, &trace),
            None => self.0.observe(value),
        }
    }

    /// Records one observation made for the request of `trace`, as its exemplar: for
    /// work a handler spawned, where no request is current.
    pub fn observe_for(&self, value: f64, trace: &TraceContext) {
        let exemplar = ExemplarSource::new(trace, Instant::now());
        self.0.observe_with(value, Some(&exemplar));
    }

    /// Awaits `work` and records how long it took, in seconds.
    pub async fn time<T>(&self, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = work.await;
        self.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Runs `work` and records how long it took, in seconds.
    pub fn time_fn<T>(&self, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        self.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Observations recorded so far.
    pub fn count(&self) -> u64 {
        self.0.snapshot().count()
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        self.0.snapshot().sum()
    }
}

/// A counter family of application code, one [`CounterSeries`] per label set. Cheap to
/// clone; clones share the series.
#[derive(Clone)]
pub struct CounterVec(pub(super) ShardedCounterVec);

impl LabelledFamily for CounterVec {
    type Child = CounterSeries;

    fn child(&self, values: &[&str]) -> CounterSeries {
        CounterSeries(self.0.with_label_values(values))
    }
}

/// One label set's counter. A count made while a request's handler runs keeps that
/// request as the counter's exemplar (at most one per thread per second).
#[derive(Clone)]
pub struct CounterSeries(Arc<ShardedCounter>);

impl CounterSeries {
    /// Adds one; within a request's handler, with that request as its exemplar.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`; within a request's handler, with that request as its exemplar.
    pub fn inc_by(&self, n: u64) {
        match crate::trace::current() {
            Some(trace) => self.inc_by_for(n, &trace),
            None => self.0.inc_by_with(n, None),
        }
    }

    /// Adds `n` for the request of `trace`, as its exemplar: for work a handler spawned.
    pub fn inc_by_for(&self, n: u64, trace: &TraceContext) {
        let exemplar = ExemplarSource::new(trace, Instant::now());
        self.0.inc_by_with(n, Some(&exemplar));
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}
