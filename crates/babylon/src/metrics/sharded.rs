//! Histograms, counters and gauges that each thread records into alone, summed whenever
//! they are read.
//!
//! The `prometheus` crate's `Histogram` makes four locked read-modify-writes per
//! observation (its hot/cold shard count, a bucket, the sum, the count), and its counters
//! and gauges one per update, so that any thread may record at any moment. A request made
//! about twenty of them, and the locked instructions, not the arithmetic, were most of
//! what recording a request cost (see BENCHMARKS.md). Here every thread owns a shard ([`thread_local::ThreadLocal`]) and is
//! the only writer of it, so an observation is plain loads and stores; a scrape adds the
//! shards up. Values stay atomics only so that the reader may load them while the owner
//! writes. `ThreadLocal` keeps some threads' values side by side in one array, so each
//! shard is padded to its own cache line: otherwise two threads' writes would still move
//! one line between their cores.
//!
//! A reader may see one in-flight observation in the buckets but not yet in the sum. The
//! count is the sum of the buckets, so the exposition's `_count` always equals its
//! `+Inf` bucket, and every counter and bucket only grows from one read to the next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

use crate::prometheus::core::{Collector, Desc};
use crate::prometheus::proto;
use crate::settings::Buckets;

/// A histogram with fixed upper bounds, recorded per thread.
pub struct ShardedHistogram {
    /// A value above the last bound lands in the `+Inf` bucket.
    bounds: Buckets,
    shards: ThreadLocal<CachePadded<Shard>>,
}

/// One thread's part: a count per bucket (not cumulative; the last is `+Inf`) and the sum.
struct Shard {
    buckets: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
}

/// Adds to a cell only this thread writes: a load and a store, no locked instruction.
fn add_as_sole_writer(cell: &AtomicU64, add: impl FnOnce(u64) -> u64) {
    cell.store(add(cell.load(Ordering::Relaxed)), Ordering::Relaxed);
}

impl ShardedHistogram {
    /// An empty histogram with these upper bounds.
    pub fn new(bounds: Buckets) -> Self {
        ShardedHistogram {
            bounds,
            shards: ThreadLocal::new(),
        }
    }

    /// Records one value into the calling thread's shard.
    pub fn observe(&self, value: f64) {
        let shard = self.shards.get_or(|| {
            CachePadded::new(Shard {
                buckets: (0..=self.bounds.bounds().len())
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                sum_bits: AtomicU64::new(0f64.to_bits()),
            })
        });
        let bounds = self.bounds.bounds();
        let bucket = bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(bounds.len());
        add_as_sole_writer(&shard.buckets[bucket], |count| count + 1);
        add_as_sole_writer(&shard.sum_bits, |sum| {
            (f64::from_bits(sum) + value).to_bits()
        });
    }

    /// The histogram as every thread has recorded it so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::empty(self.bounds.bounds().len());
        for shard in self.shards.iter() {
            for (total, count) in snapshot.buckets.iter_mut().zip(shard.buckets.iter()) {
                *total += count.load(Ordering::Relaxed);
            }
            snapshot.sum += f64::from_bits(shard.sum_bits.load(Ordering::Relaxed));
        }
        snapshot
    }

    /// The upper bounds of the buckets.
    pub fn bounds(&self) -> &Buckets {
        &self.bounds
    }
}

/// Summed shards of one histogram, or of several with the same bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: Vec<u64>,
    sum: f64,
}

impl Snapshot {
    fn empty(finite_buckets: usize) -> Self {
        Snapshot {
            buckets: vec![0; finite_buckets + 1],
            sum: 0.0,
        }
    }

    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Adds another snapshot of a histogram with the same bounds.
    pub fn merge(&mut self, other: &Snapshot) {
        for (total, count) in self.buckets.iter_mut().zip(&other.buckets) {
            *total += count;
        }
        self.sum += other.sum;
    }

    /// The exposition's form: cumulative buckets for the finite bounds (the encoder adds
    /// `+Inf` from the count).
    pub fn to_proto(&self, bounds: &Buckets) -> proto::Histogram {
        let mut cumulative = 0;
        let buckets = bounds
            .bounds()
            .iter()
            .zip(&self.buckets)
            .map(|(bound, count)| {
                cumulative += count;
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut histogram = proto::Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(self.count());
        histogram.set_sample_sum(self.sum);
        histogram
    }
}

/// An unlabelled [`ShardedHistogram`] registered as a family of its own. Cheap to clone;
/// clones record into the same histogram.
#[derive(Clone)]
pub struct HistogramFamily {
    desc: Arc<Desc>,
    histogram: Arc<ShardedHistogram>,
}

impl HistogramFamily {
    pub fn new(name: &str, help: &str, bounds: Buckets) -> crate::prometheus::Result<Self> {
        Ok(HistogramFamily {
            desc: Arc::new(unlabelled_desc(name, help)?),
            histogram: Arc::new(ShardedHistogram::new(bounds)),
        })
    }

    pub fn observe(&self, value: f64) {
        self.histogram.observe(value);
    }
}

impl Collector for HistogramFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let snapshot = self.histogram.snapshot();
        let mut metric = proto::Metric::default();
        metric.set_histogram(snapshot.to_proto(self.histogram.bounds()));
        vec![family(
            &self.desc,
            proto::MetricType::HISTOGRAM,
            vec![metric],
        )]
    }
}

/// A whole number each thread adds to alone; the total is the sum of the threads' parts.
/// A gauge's part on one thread may be negative (a request that arrived on one thread and
/// finished on another); parts are kept as two's complement, so the total still adds up.
#[derive(Default)]
struct ShardedSum {
    shards: ThreadLocal<CachePadded<AtomicU64>>,
}

impl ShardedSum {
    fn add(&self, delta: i64) {
        add_as_sole_writer(self.shards.get_or_default(), |part| {
            part.wrapping_add_signed(delta)
        });
    }

    fn total(&self) -> i64 {
        self.shards.iter().fold(0u64, |total, part| {
            total.wrapping_add(part.load(Ordering::Relaxed))
        }) as i64
    }
}

/// An unlabelled family whose one value is a [`ShardedSum`]; the wrappers below decide
/// what may be added, how the total reads and what type the family has.
#[derive(Clone)]
struct SumFamily {
    desc: Arc<Desc>,
    sum: Arc<ShardedSum>,
}

impl SumFamily {
    fn new(name: &str, help: &str) -> crate::prometheus::Result<Self> {
        Ok(SumFamily {
            desc: Arc::new(unlabelled_desc(name, help)?),
            sum: Arc::default(),
        })
    }

    fn collect(&self, kind: proto::MetricType, metric: proto::Metric) -> Vec<proto::MetricFamily> {
        vec![family(&self.desc, kind, vec![metric])]
    }
}

/// An unlabelled counter recorded per thread. Cheap to clone; clones count together.
#[derive(Clone)]
pub(crate) struct CounterFamily(SumFamily);

impl CounterFamily {
    pub(crate) fn new(name: &str, help: &str) -> crate::prometheus::Result<Self> {
        SumFamily::new(name, help).map(CounterFamily)
    }

    pub(crate) fn inc(&self) {
        self.0.sum.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.sum.total() as u64
    }
}

/// An unlabelled gauge of things in progress, moved up and down per thread. Cheap to
/// clone; clones share it.
///
/// A reader that loads one thread's part just before an arrival there, and another's just
/// after the matching departure, would sum to one less than the truth; a count of things
/// in progress is never negative, so the total is clamped at zero.
#[derive(Clone)]
pub struct InFlightGauge(SumFamily);

impl InFlightGauge {
    pub fn new(name: &str, help: &str) -> crate::prometheus::Result<Self> {
        SumFamily::new(name, help).map(InFlightGauge)
    }

    pub fn inc(&self) {
        self.0.sum.add(1);
    }

    pub fn dec(&self) {
        self.0.sum.add(-1);
    }

    pub fn get(&self) -> u64 {
        self.0.sum.total().max(0) as u64
    }
}

impl Collector for CounterFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let metric = with_counter(proto::Metric::default(), self.get());
        self.0.collect(proto::MetricType::COUNTER, metric)
    }
}

impl Collector for InFlightGauge {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let mut gauge = proto::Gauge::default();
        gauge.set_value(self.get() as f64);
        self.0
            .collect(proto::MetricType::GAUGE, proto::Metric::from_gauge(gauge))
    }
}

/// `metric` (with whatever labels it has) holding a counter of `value`.
pub(crate) fn with_counter(mut metric: proto::Metric, value: u64) -> proto::Metric {
    let mut counter = proto::Counter::default();
    counter.set_value(value as f64);
    metric.set_counter(counter);
    metric
}

fn unlabelled_desc(name: &str, help: &str) -> crate::prometheus::Result<Desc> {
    Desc::new(
        name.to_string(),
        help.to_string(),
        Vec::new(),
        Default::default(),
    )
}

/// A family of `kind` named and described by `desc`, holding `metrics`.
pub(crate) fn family(
    desc: &Desc,
    kind: proto::MetricType,
    metrics: Vec<proto::Metric>,
) -> proto::MetricFamily {
    let mut family = proto::MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> ShardedHistogram {
        ShardedHistogram::new(Buckets::try_from(vec![0.1, 1.0]).unwrap())
    }

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let histogram = histogram();
        for value in [0.05, 0.1, 0.5, 7.0, f64::INFINITY] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets, [2, 1, 2]);
        assert_eq!(snapshot.count(), 5);
        let proto = snapshot.to_proto(histogram.bounds());
        let cumulative: Vec<_> = proto
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(cumulative, [(0.1, 2), (1.0, 3)]);
        assert_eq!(proto.get_sample_count(), 5);
    }

    #[test]
    fn every_threads_observations_are_summed() {
        let histogram = histogram();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        histogram.observe(0.5);
                    }
                });
            }
        });
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 80_000);
        assert_eq!(snapshot.sum(), 40_000.0);
    }

    #[test]
    fn a_gauge_moved_on_different_threads_sums_to_its_value() {
        let in_flight = InFlightGauge::new("in_flight", "help").unwrap();
        in_flight.inc();
        in_flight.inc();
        // Both requests finish on another thread: its part goes negative.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                in_flight.dec();
                in_flight.dec();
            });
        });
        assert_eq!(in_flight.get(), 0);
        // A reader that saw only the departures clamps to zero rather than go negative.
        in_flight.dec();
        assert_eq!(in_flight.get(), 0);
        in_flight.inc();
        in_flight.inc();
        let collected = in_flight.collect();
        assert_eq!(collected[0].get_metric()[0].get_gauge().get_value(), 1.0);
    }

    #[test]
    fn a_counter_counts_every_thread() {
        let counter = CounterFamily::new("requests_total", "help").unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| (0..1000).for_each(|_| counter.inc()));
            }
        });
        assert_eq!(counter.get(), 4000);
        let collected = counter.collect();
        assert_eq!(collected[0].get_field_type(), proto::MetricType::COUNTER);
        assert_eq!(
            collected[0].get_metric()[0].get_counter().get_value(),
            4000.0
        );
    }

    #[test]
    fn merged_snapshots_add_up() {
        let (a, b) = (histogram(), histogram());
        a.observe(0.01);
        b.observe(3.0);
        b.observe(3.0);
        let mut total = a.snapshot();
        total.merge(&b.snapshot());
        assert_eq!(total.buckets, [1, 0, 2]);
        assert_eq!(total.sum(), 6.01);
    }
}
