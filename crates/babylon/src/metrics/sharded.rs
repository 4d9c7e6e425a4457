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
use std::time::SystemTime;

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

use super::exemplar::{ExemplarCell, ExemplarSource, Kept};
use super::exposition::{model, Detail, FullCollector};
use super::native::{NativeConfig, NativeShard, NativeSnapshot};
use crate::prometheus::core::{Collector, Desc};
use crate::prometheus::proto;
use crate::settings::Buckets;

/// What a histogram records besides its classic buckets and sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recording {
    /// Native (exponential) buckets, when `metrics.native_histograms` is on.
    pub(crate) native: Option<NativeConfig>,
    /// An exemplar per bucket, when `tracing` is on.
    pub(crate) exemplars: bool,
}

/// A histogram with fixed upper bounds, recorded per thread, with native (exponential)
/// buckets and exemplars beside them as its [`Recording`] says.
pub struct ShardedHistogram {
    /// A value above the last bound lands in the `+Inf` bucket.
    bounds: Buckets,
    recording: Recording,
    /// When the histogram was made: its `_created`.
    created: SystemTime,
    shards: ThreadLocal<CachePadded<Shard>>,
}

/// One thread's part: a count per bucket (not cumulative; the last is `+Inf`), the sum,
/// the native buckets and an exemplar per bucket.
struct Shard {
    buckets: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
    native: Option<NativeShard>,
    exemplars: Option<Box<[ExemplarCell]>>,
}

/// Adds to a cell only this thread writes: a load and a store, no locked instruction.
fn add_as_sole_writer(cell: &AtomicU64, add: impl FnOnce(u64) -> u64) {
    cell.store(add(cell.load(Ordering::Relaxed)), Ordering::Relaxed);
}

impl ShardedHistogram {
    /// An empty histogram with these upper bounds, and nothing else.
    pub fn new(bounds: Buckets) -> Self {
        ShardedHistogram::with(bounds, Recording::default())
    }

    /// An empty histogram with these upper bounds, recording what `recording` says.
    pub fn with(bounds: Buckets, recording: Recording) -> Self {
        ShardedHistogram {
            bounds,
            recording,
            created: SystemTime::now(),
            shards: ThreadLocal::new(),
        }
    }

    /// Records one value into the calling thread's shard.
    pub fn observe(&self, value: f64) {
        self.observe_with(value, None);
    }

    /// Records one value into the calling thread's shard, with the request it came from
    /// as its bucket's exemplar if the bucket has none younger than a second.
    pub fn observe_with(&self, value: f64, exemplar: Option<&ExemplarSource>) {
        let shard = self.shards.get_or(|| {
            let buckets = self.bounds.bounds().len() + 1;
            CachePadded::new(Shard {
                buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
                sum_bits: AtomicU64::new(0f64.to_bits()),
                native: self.recording.native.map(|_| NativeShard::new()),
                exemplars: self
                    .recording
                    .exemplars
                    .then(|| (0..buckets).map(|_| ExemplarCell::default()).collect()),
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
        // After the classic bucket: a reader that sees the native count sees the classic
        // one too, so a snapshot's count is never below its native buckets' sum.
        if let (Some(native), Some(config)) = (&shard.native, &self.recording.native) {
            native.observe(value, config);
        }
        if let (Some(cells), Some(source)) = (&shard.exemplars, exemplar) {
            cells[bucket].offer(value, source);
        }
    }

    /// The classic buckets as every thread has recorded them so far.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(Detail::Text)
    }

    /// The histogram as every thread has recorded it so far, with the native buckets when
    /// `detail` asks for them.
    pub(crate) fn snapshot_with(&self, detail: Detail) -> Snapshot {
        let mut snapshot = Snapshot::empty(self.bounds.bounds().len(), self.created);
        let full = detail == Detail::Full;
        let native = self.recording.native.filter(|_| full);
        snapshot.native = native.as_ref().map(NativeSnapshot::empty);
        for shard in self.shards.iter() {
            // Native first: what it counted, the classic buckets read next hold too.
            if let (Some(total), Some(native)) = (&mut snapshot.native, &shard.native) {
                total.add(native);
            }
            if let Some(cells) = shard.exemplars.as_ref().filter(|_| full) {
                snapshot.exemplars.resize(cells.len(), None);
                for (newest, cell) in snapshot.exemplars.iter_mut().zip(cells.iter()) {
                    *newest = Kept::newest(*newest, cell.read());
                }
            }
            for (total, count) in snapshot.buckets.iter_mut().zip(shard.buckets.iter()) {
                *total += count.load(Ordering::Acquire);
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
    /// When the first of the histograms summed here was made.
    created: SystemTime,
    native: Option<NativeSnapshot>,
    /// The newest exemplar per bucket (the last is `+Inf`'s); empty when none are kept.
    exemplars: Vec<Option<Kept>>,
}

impl Snapshot {
    fn empty(finite_buckets: usize, created: SystemTime) -> Self {
        Snapshot {
            buckets: vec![0; finite_buckets + 1],
            sum: 0.0,
            created,
            native: None,
            exemplars: Vec::new(),
        }
    }

    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// When the first histogram summed here was made.
    pub(crate) fn created(&self) -> SystemTime {
        self.created
    }

    /// Adds another snapshot of a histogram with the same bounds.
    pub fn merge(&mut self, other: &Snapshot) {
        for (total, count) in self.buckets.iter_mut().zip(&other.buckets) {
            *total += count;
        }
        self.sum += other.sum;
        self.created = self.created.min(other.created);
        if let (Some(total), Some(native)) = (&mut self.native, &other.native) {
            total.merge(native);
        }
        if self.exemplars.len() < other.exemplars.len() {
            self.exemplars.resize(other.exemplars.len(), None);
        }
        for (newest, other) in self.exemplars.iter_mut().zip(&other.exemplars) {
            *newest = Kept::newest(*newest, *other);
        }
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

    /// The full model's form: cumulative classic buckets for the finite bounds with their
    /// exemplars (and a `+Inf` bucket when it has one), the creation time, and the native
    /// buckets if the snapshot has them, with every exemplar beside them.
    pub(crate) fn into_model(self, bounds: &Buckets) -> model::Histogram {
        let exemplar = |index: usize| {
            self.exemplars
                .get(index)
                .copied()
                .flatten()
                .map(Kept::to_model)
        };
        let mut cumulative = 0;
        let mut bucket: Vec<model::Bucket> = bounds
            .bounds()
            .iter()
            .zip(&self.buckets)
            .enumerate()
            .map(|(index, (bound, count))| {
                cumulative += count;
                model::Bucket {
                    cumulative_count: cumulative,
                    upper_bound: *bound,
                    exemplar: exemplar(index),
                }
            })
            .collect();
        if let Some(exemplar) = exemplar(bounds.bounds().len()) {
            bucket.push(model::Bucket {
                cumulative_count: self.count(),
                upper_bound: f64::INFINITY,
                exemplar: Some(exemplar),
            });
        }
        let mut histogram = model::Histogram {
            sample_count: self.count(),
            sample_sum: self.sum,
            bucket,
            created_timestamp: Some(model::Timestamp::of(self.created)),
            ..model::Histogram::default()
        };
        if let Some(native) = self.native {
            // Read native first, classic second (see `snapshot_with`).
            debug_assert!(native.count() <= histogram.sample_count);
            native.write_into(&mut histogram);
            // The native buckets' exemplars are the classic buckets'.
            histogram.exemplars = histogram
                .bucket
                .iter()
                .filter_map(|bucket| bucket.exemplar.clone())
                .collect();
        }
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
    pub(crate) fn new(
        name: &str,
        help: &str,
        bounds: Buckets,
        recording: Recording,
    ) -> crate::prometheus::Result<Self> {
        Ok(HistogramFamily {
            desc: Arc::new(unlabelled_desc(name, help)?),
            histogram: Arc::new(ShardedHistogram::with(bounds, recording)),
        })
    }

    pub fn observe(&self, value: f64) {
        self.histogram.observe(value);
    }
}

impl FullCollector for HistogramFamily {
    fn descs(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect_model(&self, detail: Detail) -> Vec<model::MetricFamily> {
        let snapshot = self.histogram.snapshot_with(detail);
        let metric = model::Metric {
            histogram: Some(snapshot.into_model(self.histogram.bounds())),
            ..model::Metric::default()
        };
        vec![model_family(
            &self.desc,
            model::MetricType::Histogram,
            vec![metric],
        )]
    }
}

/// What a [`ShardedVec`] holds one of per label set.
pub(crate) trait Child: Send + Sync + 'static {
    /// What every child of one family is made with.
    type Config: Send + Sync + 'static;
    /// The family's type.
    const TYPE: model::MetricType;
    fn make(config: &Self::Config) -> Self;
    /// The child's value as a series without its labels.
    fn model(&self, config: &Self::Config, detail: Detail) -> model::Metric;
}

/// A labelled family of children recorded per thread ([`ShardedHistogram`]s,
/// [`ShardedCounter`]s), one per label set. Cheap to clone; clones share the children. A
/// caller resolves its label set once ([`ShardedVec::with_label_values`], a read lock)
/// and records into the child it gets, without a lock.
pub(crate) struct ShardedVec<C: Child> {
    inner: Arc<VecInner<C>>,
}

impl<C: Child> Clone for ShardedVec<C> {
    fn clone(&self) -> Self {
        ShardedVec {
            inner: self.inner.clone(),
        }
    }
}

struct VecInner<C: Child> {
    desc: Desc,
    config: C::Config,
    children: std::sync::RwLock<std::collections::BTreeMap<Vec<String>, Arc<C>>>,
}

/// Labelled histograms: the database and Redis durations, application histograms.
pub(crate) type ShardedHistogramVec = ShardedVec<ShardedHistogram>;
/// Labelled counters with exemplars: application counters.
pub(crate) type ShardedCounterVec = ShardedVec<ShardedCounter>;

impl<C: Child> ShardedVec<C> {
    pub(crate) fn new(
        name: &str,
        help: &str,
        labels: &[&str],
        config: C::Config,
    ) -> crate::prometheus::Result<Self> {
        let desc = Desc::new(
            name.to_string(),
            help.to_string(),
            labels.iter().map(|label| label.to_string()).collect(),
            Default::default(),
        )?;
        Ok(ShardedVec {
            inner: Arc::new(VecInner {
                desc,
                config,
                children: Default::default(),
            }),
        })
    }

    /// Runs `record` on the child of the label set `values`, made on first use: under
    /// the read lock the `prometheus` crate's vectors take too, without cloning the
    /// handle (a shared reference count) as [`Self::with_label_values`] does.
    fn record(&self, values: &[&str], record: impl FnOnce(&C)) {
        let children = self
            .inner
            .children
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        match children
            .iter()
            .find(|(key, _)| key.iter().map(String::as_str).eq(values.iter().copied()))
        {
            Some((_, child)) => record(child),
            None => {
                drop(children);
                record(&self.with_label_values(values));
            }
        }
    }

    /// The child of the label set `values` (in the order of the family's labels), made
    /// on first use.
    pub(crate) fn with_label_values(&self, values: &[&str]) -> Arc<C> {
        let inner = &self.inner;
        let found = inner
            .children
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .find(|(key, _)| key.iter().map(String::as_str).eq(values.iter().copied()))
            .map(|(_, child)| child.clone());
        found.unwrap_or_else(|| {
            inner
                .children
                .write()
                .unwrap_or_else(|poison| poison.into_inner())
                .entry(values.iter().map(|value| value.to_string()).collect())
                .or_insert_with(|| Arc::new(C::make(&inner.config)))
                .clone()
        })
    }
}

impl ShardedHistogramVec {
    /// Records `value` (and `exemplar`, where the family keeps exemplars) into the
    /// histogram of the label set `values`.
    pub(crate) fn observe_with(
        &self,
        values: &[&str],
        value: f64,
        exemplar: Option<&ExemplarSource>,
    ) {
        self.record(values, |histogram| histogram.observe_with(value, exemplar));
    }
}

impl Child for ShardedHistogram {
    type Config = (Buckets, Recording);
    const TYPE: model::MetricType = model::MetricType::Histogram;

    fn make((bounds, recording): &Self::Config) -> Self {
        ShardedHistogram::with(bounds.clone(), *recording)
    }

    fn model(&self, (bounds, _): &Self::Config, detail: Detail) -> model::Metric {
        model::Metric {
            histogram: Some(self.snapshot_with(detail).into_model(bounds)),
            ..model::Metric::default()
        }
    }
}

impl<C: Child> FullCollector for ShardedVec<C> {
    fn descs(&self) -> Vec<&Desc> {
        vec![&self.inner.desc]
    }

    fn collect_model(&self, detail: Detail) -> Vec<model::MetricFamily> {
        let inner = &self.inner;
        let children = inner
            .children
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let metrics = children
            .iter()
            .map(|(values, child)| {
                merge_labels(
                    child.model(&inner.config, detail),
                    labelled(&inner.desc, values),
                )
            })
            .collect();
        vec![model_family(&inner.desc, C::TYPE, metrics)]
    }
}

/// `series` with the labels of `labelled`.
fn merge_labels(series: model::Metric, labelled: model::Metric) -> model::Metric {
    model::Metric {
        label: labelled.label,
        ..series
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

/// A counter recorded per thread, with the newest exemplar of each thread when it keeps
/// exemplars.
pub(crate) struct ShardedCounter {
    sum: ShardedSum,
    /// When the counter was made: its `_created`.
    created: SystemTime,
    exemplars: Option<ThreadLocal<CachePadded<ExemplarCell>>>,
}

impl ShardedCounter {
    fn new(exemplars: bool) -> Self {
        ShardedCounter {
            sum: ShardedSum::default(),
            created: SystemTime::now(),
            exemplars: exemplars.then(ThreadLocal::new),
        }
    }

    /// Adds `n`, with the request it came from as the thread's exemplar if it has none
    /// younger than a second.
    pub(crate) fn inc_by_with(&self, n: u64, exemplar: Option<&ExemplarSource>) {
        self.sum.add(n as i64);
        if let (Some(cells), Some(source)) = (&self.exemplars, exemplar) {
            cells.get_or_default().offer(n as f64, source);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.sum.total() as u64
    }
}

impl Child for ShardedCounter {
    /// Whether exemplars are kept.
    type Config = bool;
    const TYPE: model::MetricType = model::MetricType::Counter;

    fn make(exemplars: &bool) -> Self {
        ShardedCounter::new(*exemplars)
    }

    fn model(&self, _: &bool, detail: Detail) -> model::Metric {
        let exemplar = match (&self.exemplars, detail) {
            (Some(cells), Detail::Full) => cells
                .iter()
                .fold(None, |newest, cell| Kept::newest(newest, cell.read())),
            _ => None,
        };
        model::Metric {
            counter: Some(model::Counter {
                value: self.get() as f64,
                exemplar: exemplar.map(Kept::to_model),
                created_timestamp: Some(model::Timestamp::of(self.created)),
            }),
            ..model::Metric::default()
        }
    }
}

/// An unlabelled counter recorded per thread. Cheap to clone; clones count together.
#[derive(Clone)]
pub(crate) struct CounterFamily {
    desc: Arc<Desc>,
    counter: Arc<ShardedCounter>,
}

impl CounterFamily {
    pub(crate) fn new(name: &str, help: &str, exemplars: bool) -> crate::prometheus::Result<Self> {
        Ok(CounterFamily {
            desc: Arc::new(unlabelled_desc(name, help)?),
            counter: Arc::new(ShardedCounter::new(exemplars)),
        })
    }

    #[cfg(test)]
    pub(crate) fn inc(&self) {
        self.inc_with(None);
    }

    /// Adds one, with the request it came from as the thread's exemplar if it has none
    /// younger than a second.
    pub(crate) fn inc_with(&self, exemplar: Option<&ExemplarSource>) {
        self.counter.inc_by_with(1, exemplar);
    }

    pub(crate) fn get(&self) -> u64 {
        self.counter.get()
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

impl FullCollector for CounterFamily {
    fn descs(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect_model(&self, detail: Detail) -> Vec<model::MetricFamily> {
        let metric = self.counter.model(&false, detail);
        vec![model_family(
            &self.desc,
            model::MetricType::Counter,
            vec![metric],
        )]
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

fn unlabelled_desc(name: &str, help: &str) -> crate::prometheus::Result<Desc> {
    Desc::new(
        name.to_string(),
        help.to_string(),
        Vec::new(),
        Default::default(),
    )
}

/// A series with `desc`'s labels set to `values` (in the order of its labels), the pairs
/// ordered by name as the `prometheus` crate orders them.
pub(crate) fn labelled<V: AsRef<str>>(desc: &Desc, values: &[V]) -> model::Metric {
    let mut label: Vec<model::LabelPair> = desc
        .variable_labels
        .iter()
        .zip(values)
        .map(|(name, value)| model::LabelPair {
            name: name.clone(),
            value: value.as_ref().to_string(),
        })
        .collect();
    label.sort_by(|a, b| a.name.cmp(&b.name));
    model::Metric {
        label,
        ..model::Metric::default()
    }
}

/// A family of the full model, of `kind`, named and described by `desc`, holding
/// `metrics`.
pub(crate) fn model_family(
    desc: &Desc,
    kind: model::MetricType,
    metric: Vec<model::Metric>,
) -> model::MetricFamily {
    model::MetricFamily {
        name: desc.fq_name.clone(),
        help: desc.help.clone(),
        r#type: kind as i32,
        metric,
        unit: String::new(),
    }
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
        let counter = CounterFamily::new("requests_total", "help", false).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| (0..1000).for_each(|_| counter.inc()));
            }
        });
        assert_eq!(counter.get(), 4000);
        let collected = super::super::exposition::FullModel(counter.clone()).collect();
        assert_eq!(collected[0].get_field_type(), proto::MetricType::COUNTER);
        assert_eq!(
            collected[0].get_metric()[0].get_counter().get_value(),
            4000.0
        );
    }

    /// A family that moved from the `prometheus` crate's `HistogramVec` to a sharded one
    /// reads the same in text 0.0.4, byte for byte.
    #[test]
    fn a_sharded_vec_reads_as_the_prometheus_vec_it_replaces() {
        use crate::prometheus::{Encoder, HistogramOpts, HistogramVec, Registry, TextEncoder};
        let bounds = Buckets::try_from(vec![0.001, 0.01, 0.1, 1.0]).unwrap();
        let labels = ["alias", "command"];
        let (old, new) = (Registry::new(), Registry::new());
        let prometheus_vec = HistogramVec::new(
            HistogramOpts::new("d_seconds", "Help.").buckets(bounds.to_vec()),
            &labels,
        )
        .unwrap();
        old.register(Box::new(prometheus_vec.clone())).unwrap();
        let native = NativeConfig::from_settings(&Default::default());
        let sharded = ShardedHistogramVec::new(
            "d_seconds",
            "Help.",
            &labels,
            (
                bounds,
                Recording {
                    native,
                    exemplars: true,
                },
            ),
        )
        .unwrap();
        super::super::register_full(&new, sharded.clone()).unwrap();
        let text = |registry: &Registry| {
            let mut out = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(&new), text(&old), "no series yet");
        for (values, value) in [
            (["main", "GET"], 0.0004),
            (["main", "SET"], 0.02),
            (["main", "GET"], 7.0),
            (["b\"q", "GET"], 0.01),
        ] {
            prometheus_vec.with_label_values(&values).observe(value);
            sharded.observe_with(&values, value, None);
        }
        assert_eq!(text(&new), text(&old));
        assert!(text(&new).contains(r#"d_seconds_bucket{alias="main",command="GET",le="+Inf"} 2"#));
    }

    proptest::proptest! {
        /// The native and classic views of the same observations agree: every
        /// observation is in one classic bucket and one native bucket (or the zero
        /// bucket), on any thread, and both share the count and the sum.
        #[test]
        fn native_and_classic_views_agree(
            values in proptest::collection::vec(
                proptest::prop_oneof![-1e3..1e3f64, 0.0..1e-6f64, 1e-9..100.0f64],
                0..300,
            ),
            threads in 1usize..4,
        ) {
            let native = NativeConfig::from_settings(&Default::default());
            let histogram = ShardedHistogram::with(
                Buckets::django_latency(),
                Recording { native, exemplars: false },
            );
            std::thread::scope(|scope| {
                for part in values.chunks(values.len().div_ceil(threads).max(1)) {
                    let histogram = &histogram;
                    scope.spawn(move || part.iter().for_each(|value| histogram.observe(*value)));
                }
            });
            let model = histogram
                .snapshot_with(Detail::Full)
                .into_model(histogram.bounds());
            let native_count = model.zero_count as i64
                + [&model.positive_delta, &model.negative_delta]
                    .iter()
                    .map(|deltas| {
                        // Deltas to counts: each bucket's count is the running sum.
                        deltas.iter().scan(0i64, |count, delta| { *count += delta; Some(*count) }).sum::<i64>()
                    })
                    .sum::<i64>();
            proptest::prop_assert_eq!(model.sample_count, values.len() as u64);
            proptest::prop_assert_eq!(native_count, values.len() as i64);
            let sum: f64 = values.iter().sum();
            proptest::prop_assert!((model.sample_sum - sum).abs() <= 1e-9 * (1.0 + sum.abs()) * values.len() as f64);
            let text = histogram.snapshot();
            proptest::prop_assert_eq!(text.count(), model.sample_count);
        }
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
