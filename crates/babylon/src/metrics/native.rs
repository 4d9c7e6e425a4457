//! Native (exponential) histogram buckets, as Prometheus defines them: at schema `s`,
//! every power of two is split into `2^s` buckets whose bounds grow by the factor
//! `2^(2^-s)`, bucket `k` holding the values in `(2^((k-1)/2^s), 2^(k/2^s)]`; values
//! whose magnitude is at most the zero threshold go to the zero bucket.
//!
//! - [`NativeConfig`]: the schema, zero threshold and bucket limit the settings chose;
//! - [`NativeShard`]: one thread's buckets, written by that thread alone with plain loads
//!   and stores, in blocks made as values first land in them;
//! - [`NativeSnapshot`]: the shards summed, reduced to at most `max_buckets` buckets by
//!   halving the resolution, and written as spans and deltas.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::exposition::model::{BucketSpan, Histogram};
use crate::settings::NativeHistogramSettings;

/// The finest and coarsest schemas Prometheus reads.
pub(crate) const MAX_SCHEMA: i8 = 8;
pub(crate) const MIN_SCHEMA: i8 = -4;

/// What the settings chose for every native histogram of the registry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NativeConfig {
    /// The resolution observations are recorded at.
    pub(crate) schema: i8,
    /// Magnitudes at most this count in the zero bucket.
    pub(crate) zero_threshold: f64,
    /// A scrape halves the resolution until the buckets in use are at most this many.
    pub(crate) max_buckets: u32,
}

impl NativeConfig {
    /// What `metrics.native_histograms` asks for; `None` when it is off.
    pub(crate) fn from_settings(settings: &NativeHistogramSettings) -> Option<Self> {
        settings.enabled.then(|| NativeConfig {
            schema: Self::schema_for(settings.bucket_factor.get()),
            zero_threshold: settings.zero_threshold.get(),
            max_buckets: settings.max_buckets.get(),
        })
    }

    /// The finest schema whose growth factor is at most `bucket_factor` (as client_golang
    /// picks it from `NativeHistogramBucketFactor`), kept within -4..=8.
    pub(crate) fn schema_for(bucket_factor: f64) -> i8 {
        // factor = 2^(2^-schema), so schema = -log2(log2(factor)).
        let schema = -(bucket_factor.log2().log2()).floor();
        schema.clamp(f64::from(MIN_SCHEMA), f64::from(MAX_SCHEMA)) as i8
    }
}

/// The upper bounds within `[0.5, 1)` of a power of two at a positive schema, the way
/// `math.Frexp` splits a value: `2^(i/2^s) / 2` for `i` in `0..2^s`, computed in f64. They
/// agree with client_golang's table to within one unit in the last place, so only a
/// value equal to a boundary to the last bit can land in the bucket next to the one
/// client_golang would pick.
fn bounds(schema: i8) -> &'static [f64] {
    static BOUNDS: [OnceLock<Vec<f64>>; MAX_SCHEMA as usize + 1] =
        [const { OnceLock::new() }; MAX_SCHEMA as usize + 1];
    BOUNDS[schema as usize].get_or_init(|| {
        let per_power = 1u32 << schema;
        (0..per_power)
            .map(|i| (f64::from(i) / f64::from(per_power)).exp2() / 2.0)
            .collect()
    })
}

/// `value` (positive or negative, but not NaN) split like Go's `math.Frexp`: a fraction in
/// `[0.5, 1)` and an exponent, `|value| = fraction * 2^exponent`.
fn frexp(value: f64) -> (f64, i32) {
    let magnitude = value.abs();
    if magnitude == 0.0 || !magnitude.is_finite() {
        return (magnitude, 0);
    }
    let bits = magnitude.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first.
        let (fraction, exponent) = frexp(magnitude * 2f64.powi(64));
        return (fraction, exponent - 64);
    }
    let fraction = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (fraction, biased - 1022)
}

/// The index of the bucket holding a magnitude `|value|` above the zero threshold, at
/// `schema` (client_golang's rule, so that both agree on every boundary). Infinity goes
/// to the last bucket, whose upper bound is the largest a schema has.
pub(crate) fn bucket_index(value: f64, schema: i8) -> i32 {
    if value.is_infinite() {
        return if schema >= 0 {
            1024 << schema
        } else {
            1024 >> -schema
        };
    }
    let (fraction, exponent) = frexp(value);
    if schema > 0 {
        let bounds = bounds(schema);
        let within = bounds.partition_point(|bound| *bound < fraction) as i32;
        within + (exponent - 1) * bounds.len() as i32
    } else {
        // At schema 0 and below, bucket k's upper bound is 2^(k * 2^-schema).
        let mut index = exponent;
        if fraction == 0.5 {
            index -= 1;
        }
        let offset = (1 << -schema) - 1;
        (index + offset) >> -schema
    }
}

/// The bucket at one resolution lower that holds bucket `index`: it covers `2 * index - 1`
/// and `2 * index`.
pub(crate) fn halve(index: i32) -> i32 {
    (index + 1) >> 1
}

/// Native buckets span magnitudes from 2^-128 to 2^128 (2.9e-39 to 3.4e38, the range of
/// an `f32`): a value beyond counts in the edge bucket, infinity in the top one. Bounded,
/// a thread's buckets fit a small table made once; client_golang's default zero
/// threshold is 2^-128, so with it nothing is lost at the bottom.
const LOWEST_POWER: i32 = -128;
const HIGHEST_POWER: i32 = 128;

/// Buckets are kept in blocks of this many, each made when a value first lands in it.
const BLOCK: usize = 64;

/// The bucket indices a schema records: those of 2^-128 (exclusive) to 2^128.
fn index_range(schema: i8) -> std::ops::RangeInclusive<i32> {
    let lowest = bucket_index(f64::from(LOWEST_POWER).exp2(), schema) + 1;
    let highest = bucket_index(f64::from(HIGHEST_POWER).exp2(), schema);
    lowest..=highest
}

/// One sign's buckets of one thread.
struct Side {
    lowest: i32,
    highest: i32,
    blocks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl Side {
    fn new(schema: i8) -> Self {
        let range = index_range(schema);
        let (lowest, highest) = (*range.start(), *range.end());
        let buckets = (highest - lowest + 1) as usize;
        Side {
            lowest,
            highest,
            blocks: (0..buckets.div_ceil(BLOCK))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Counts one value in bucket `index`. Only the owning thread calls this: a load and a
    /// store. The store releases, so that a reader who sees it also sees what the
    /// thread recorded before it (the classic bucket of the same observation).
    fn count(&self, index: i32) {
        let at = (index.clamp(self.lowest, self.highest) - self.lowest) as usize;
        let block =
            self.blocks[at / BLOCK].get_or_init(|| (0..BLOCK).map(|_| AtomicU64::new(0)).collect());
        let cell = &block[at % BLOCK];
        cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// Adds this side's counts to `into`, by bucket index.
    fn add_to(&self, into: &mut BTreeMap<i32, u64>) {
        for (block_at, block) in self.blocks.iter().enumerate() {
            let Some(counts) = block.get() else { continue };
            for (slot, count) in counts.iter().enumerate() {
                let count = count.load(Ordering::Acquire);
                if count > 0 {
                    let index = self.lowest + (block_at * BLOCK + slot) as i32;
                    *into.entry(index).or_default() += count;
                }
            }
        }
    }
}

/// One thread's native buckets of one histogram.
pub(crate) struct NativeShard {
    zero: AtomicU64,
    positive: OnceLock<Side>,
    negative: OnceLock<Side>,
}

impl NativeShard {
    pub(crate) fn new() -> Self {
        NativeShard {
            zero: AtomicU64::new(0),
            positive: OnceLock::new(),
            negative: OnceLock::new(),
        }
    }

    /// Counts `value` in its bucket. NaN lands in none: it is counted in the histogram's
    /// count alone, as Prometheus reads it.
    pub(crate) fn observe(&self, value: f64, config: &NativeConfig) {
        if value.is_nan() {
            return;
        }
        if value.abs() <= config.zero_threshold {
            self.zero
                .store(self.zero.load(Ordering::Relaxed) + 1, Ordering::Release);
            return;
        }
        let side = if value > 0.0 {
            &self.positive
        } else {
            &self.negative
        };
        side.get_or_init(|| Side::new(config.schema))
            .count(bucket_index(value, config.schema));
    }
}

/// Native buckets of every thread, summed, at the schema they were recorded at or a
/// coarser one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NativeSnapshot {
    pub(crate) schema: i8,
    /// Written with at most this many buckets.
    pub(crate) max_buckets: u32,
    pub(crate) zero_threshold: f64,
    pub(crate) zero_count: u64,
    pub(crate) positive: BTreeMap<i32, u64>,
    pub(crate) negative: BTreeMap<i32, u64>,
}

impl NativeSnapshot {
    pub(crate) fn empty(config: &NativeConfig) -> Self {
        NativeSnapshot {
            schema: config.schema,
            max_buckets: config.max_buckets,
            zero_threshold: config.zero_threshold,
            zero_count: 0,
            positive: BTreeMap::new(),
            negative: BTreeMap::new(),
        }
    }

    /// Adds one thread's buckets.
    pub(crate) fn add(&mut self, shard: &NativeShard) {
        self.zero_count += shard.zero.load(Ordering::Acquire);
        if let Some(side) = shard.positive.get() {
            side.add_to(&mut self.positive);
        }
        if let Some(side) = shard.negative.get() {
            side.add_to(&mut self.negative);
        }
    }

    /// Adds another snapshot recorded at the same schema.
    pub(crate) fn merge(&mut self, other: &NativeSnapshot) {
        self.zero_count += other.zero_count;
        for (index, count) in &other.positive {
            *self.positive.entry(*index).or_default() += count;
        }
        for (index, count) in &other.negative {
            *self.negative.entry(*index).or_default() += count;
        }
    }

    /// Every observation in a bucket, the zero bucket included.
    pub(crate) fn count(&self) -> u64 {
        self.zero_count + self.positive.values().sum::<u64>() + self.negative.values().sum::<u64>()
    }

    /// Halves the resolution until at most `max_buckets` buckets are in use, or the
    /// coarsest schema is reached.
    pub(crate) fn limit(&mut self, max_buckets: u32) {
        while self.positive.len() + self.negative.len() > max_buckets as usize
            && self.schema > MIN_SCHEMA
        {
            self.schema -= 1;
            for side in [&mut self.positive, &mut self.negative] {
                let mut halved = BTreeMap::new();
                for (index, count) in std::mem::take(side) {
                    *halved.entry(halve(index)).or_default() += count;
                }
                *side = halved;
            }
        }
    }

    /// Writes the buckets into `histogram` as Prometheus' protobuf carries them, at most
    /// `max_buckets` of them: spans of consecutive buckets and each bucket's difference to
    /// the one before. A histogram with no bucket in use gets the no-op span that marks it
    /// native all the same.
    pub(crate) fn write_into(mut self, histogram: &mut Histogram) {
        self.limit(self.max_buckets);
        histogram.schema = i32::from(self.schema);
        histogram.zero_threshold = self.zero_threshold;
        histogram.zero_count = self.zero_count;
        (histogram.positive_span, histogram.positive_delta) = spans_and_deltas(&self.positive);
        (histogram.negative_span, histogram.negative_delta) = spans_and_deltas(&self.negative);
        if histogram.positive_span.is_empty()
            && histogram.negative_span.is_empty()
            && self.zero_threshold == 0.0
        {
            histogram.positive_span.push(BucketSpan {
                offset: 0,
                length: 0,
            });
        }
    }
}

/// Spans of consecutive indices and the count deltas, as protobuf carries them. Gaps of
/// one or two empty buckets are written as zero counts inside a span, which costs less
/// than starting a new span (client_golang does the same).
fn spans_and_deltas(buckets: &BTreeMap<i32, u64>) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let (mut next_index, mut previous_count) = (0i32, 0i64);
    for (&index, &count) in buckets {
        let gap = index - next_index;
        match spans.last_mut() {
            Some(span) if gap <= 2 => {
                for _ in 0..gap {
                    deltas.push(-previous_count);
                    previous_count = 0;
                }
                span.length += gap as u32 + 1;
            }
            _ => spans.push(BucketSpan {
                offset: if spans.is_empty() { index } else { gap },
                length: 1,
            }),
        }
        deltas.push(count as i64 - previous_count);
        previous_count = count as i64;
        next_index = index + 1;
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The lower and upper bound of bucket `index` at `schema`.
    fn bucket_bounds(index: i32, schema: i8) -> (f64, f64) {
        let width = (-f64::from(schema)).exp2();
        (
            (f64::from(index - 1) * width).exp2(),
            (f64::from(index) * width).exp2(),
        )
    }

    #[test]
    fn the_bucket_factor_picks_the_schema_client_golang_picks() {
        assert_eq!(NativeConfig::schema_for(1.1), 3);
        assert_eq!(NativeConfig::schema_for(2.0), 0);
        assert_eq!(NativeConfig::schema_for(1.00271), 8);
        assert_eq!(NativeConfig::schema_for(1.0001), 8);
        assert_eq!(NativeConfig::schema_for(4.0), -1);
        assert_eq!(NativeConfig::schema_for(1e9), -4);
        // Schema 3's factor is 2^(1/8) = 1.0905: 1.09 is finer than that allows.
        assert_eq!(NativeConfig::schema_for(1.09), 4);
    }

    #[test]
    fn boundaries_are_client_golangs() {
        // client_golang's table of bounds within [0.5, 1) at schema 3
        // (nativeHistogramBounds[3]), which every boundary is a power of two times. Ours
        // are computed in f64 and agree to the last bit or next to it.
        let published: [f64; 8] = [
            0.5,
            0.5452538663326288,
            0.5946035575013605,
            0.6484197773255048,
            0.7071067811865475,
            0.7711054127039704,
            0.8408964152537144,
            0.9170040432046711,
        ];
        for (ours, theirs) in bounds(3).iter().zip(published) {
            let ulps = (ours.to_bits() as i64 - theirs.to_bits() as i64).abs();
            assert!(ulps <= 1, "{ours} against {theirs}");
        }
        // 0.003 at schema 3 falls in (0.002762, 0.003012]: bounds[4] and bounds[5] / 2^8.
        let index = bucket_index(0.003, 3);
        assert_eq!(index, -67);
        let (lower, upper) = bucket_bounds(index, 3);
        assert!(
            (lower / (0.7071067811865475 / 256.0) - 1.0).abs() < 1e-15,
            "{lower}"
        );
        assert!(
            (upper / (0.7711054127039704 / 256.0) - 1.0).abs() < 1e-15,
            "{upper}"
        );
        assert_eq!(bucket_index(0.7711054127039704 / 256.0, 3), -67);
        assert_eq!(bucket_index(0.7711054127039705 / 256.0, 3), -66);
        // A boundary is the upper bound of its bucket at every schema: every power of two
        // from schema 0 up, every 2^(2^-schema)-th one below.
        for schema in MIN_SCHEMA..=MAX_SCHEMA {
            let step = 1 << (-schema).max(0);
            for power in [-20, -1, 0, 1, 7].map(|power| power * step) {
                let value = f64::from(power).exp2();
                let index = bucket_index(value, schema);
                let next = bucket_index(value * (1.0 + f64::EPSILON), schema);
                assert_eq!(next, index + 1, "2^{power} at schema {schema}");
                let (_, upper) = bucket_bounds(index, schema);
                assert_eq!(upper, value, "2^{power} at schema {schema}");
            }
        }
        assert_eq!(bucket_index(1.0, 3), 0);
        assert_eq!(bucket_index(1.0001, 3), 1);
        assert_eq!(bucket_index(0.5, 0), -1);
        assert_eq!(bucket_index(f64::INFINITY, 3), 8192);
        assert_eq!(bucket_index(f64::MIN_POSITIVE / 4.0, 0), -1024);
    }

    #[test]
    fn halving_merges_pairs_of_buckets() {
        // Bucket k at schema s lies in bucket ceil(k / 2) at schema s - 1.
        for index in -10..10 {
            let (lower, upper) = bucket_bounds(index, 3);
            let (coarse_lower, coarse_upper) = bucket_bounds(halve(index), 2);
            assert!(coarse_lower <= lower && upper <= coarse_upper, "{index}");
        }
        assert_eq!(halve(-1), 0);
        assert_eq!(halve(0), 0);
        assert_eq!(halve(1), 1);
        assert_eq!(halve(2), 1);
        assert_eq!(halve(3), 2);
    }

    #[test]
    fn spans_bridge_small_gaps_and_start_new_ones_for_large() {
        let buckets = BTreeMap::from([(-2, 1), (-1, 3), (2, 2), (10, 1)]);
        let (spans, deltas) = spans_and_deltas(&buckets);
        assert_eq!(
            spans,
            [
                BucketSpan {
                    offset: -2,
                    length: 5
                },
                BucketSpan {
                    offset: 7,
                    length: 1
                }
            ]
        );
        // Counts 1, 3, 0, 0, 2 | 1.
        assert_eq!(deltas, [1, 2, -3, 0, 2, -1]);
    }

    #[test]
    fn values_beyond_the_range_count_in_the_edge_buckets() {
        let config = NativeConfig {
            zero_threshold: 0.0,
            ..config()
        };
        let shard = NativeShard::new();
        for value in [1e300, f64::INFINITY, 1e-300, -1e300, f64::NAN, 0.0] {
            shard.observe(value, &config);
        }
        let mut snapshot = NativeSnapshot::empty(&config);
        snapshot.add(&shard);
        let range = index_range(3);
        assert_eq!(
            snapshot.positive,
            BTreeMap::from([(*range.start(), 1), (*range.end(), 2)])
        );
        assert_eq!(snapshot.negative, BTreeMap::from([(*range.end(), 1)]));
        // NaN is in no bucket; zero is in the zero bucket even with a zero threshold of 0.
        assert_eq!((snapshot.zero_count, snapshot.count()), (1, 5));
    }

    fn config() -> NativeConfig {
        NativeConfig {
            schema: 3,
            zero_threshold: 1e-9,
            max_buckets: 160,
        }
    }

    proptest! {
        /// Every recorded value is in the bucket whose bounds hold it, wherever its
        /// block lands, and a snapshot adds them all up.
        #[test]
        fn every_value_lands_in_the_bucket_that_holds_it(
            values in proptest::collection::vec(
                prop_oneof![
                    -1e300..1e300f64,
                    -1.0..1.0f64,
                    (1e-300..1e-200f64),
                    Just(0.0),
                    Just(f64::INFINITY),
                ],
                1..200,
            ),
            schema in MIN_SCHEMA..=MAX_SCHEMA,
        ) {
            let config = NativeConfig { schema, ..config() };
            let shard = NativeShard::new();
            for value in &values {
                shard.observe(*value, &config);
                if value.abs() > config.zero_threshold && value.is_finite() {
                    let (lower, upper) = bucket_bounds(bucket_index(*value, schema), schema);
                    let magnitude = value.abs();
                    // exp2 of the bound rounds; allow one part in 10^12 either side.
                    prop_assert!(lower * (1.0 - 1e-12) <= magnitude && magnitude <= upper * (1.0 + 1e-12),
                        "{value} not in ({lower}, {upper}] at schema {schema}");
                }
            }
            let mut snapshot = NativeSnapshot::empty(&config);
            snapshot.add(&shard);
            prop_assert_eq!(snapshot.count(), values.len() as u64);
        }

        /// Halving the resolution keeps every observation, and ends at most at the limit.
        #[test]
        fn limiting_the_buckets_loses_no_observation(
            values in proptest::collection::vec(1e-6..1e6f64, 1..500),
            max_buckets in 1u32..200,
        ) {
            let shard = NativeShard::new();
            for value in &values {
                shard.observe(*value, &config());
            }
            let mut snapshot = NativeSnapshot::empty(&config());
            snapshot.add(&shard);
            let before = snapshot.clone();
            snapshot.limit(max_buckets);
            prop_assert_eq!(snapshot.count(), values.len() as u64);
            prop_assert!(snapshot.positive.len() <= max_buckets as usize || snapshot.schema == MIN_SCHEMA);
            // Each bucket at the coarser schema holds what the finer buckets it covers held.
            let steps = before.schema - snapshot.schema;
            let mut expected = BTreeMap::new();
            for (index, count) in &before.positive {
                let mut coarse = *index;
                for _ in 0..steps {
                    coarse = halve(coarse);
                }
                *expected.entry(coarse).or_insert(0u64) += count;
            }
            prop_assert_eq!(&snapshot.positive, &expected);
        }
    }
}
