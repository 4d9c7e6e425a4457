//! Exemplars: for each bucket of a histogram (and for a counter), one recent observation
//! with the trace and span of the request that made it, so that a point on a dashboard
//! leads to that request's trace and log lines.
//!
//! Sampling: each thread keeps one exemplar per bucket and replaces it at most once per
//! [`INTERVAL`]; a scrape shows, per bucket, the newest of the threads' exemplars. The
//! cost of an observation is then a comparison of two timestamps, and a few plain stores
//! once a second. Each cell is written by its thread alone, as a sequence lock: the
//! reader retries (a bounded number of times) when it caught the writer in the middle,
//! so it never shows the trace id of one request with the value of another.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::exposition::model;
use crate::trace::{SpanId, TraceContext, TraceId};

/// How often a thread may replace the exemplar of one bucket.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// The request an observation belongs to, and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExemplarSource {
    trace_id: TraceId,
    span_id: SpanId,
    /// Nanoseconds since the epoch.
    at: u64,
}

impl ExemplarSource {
    /// The span of `trace`, observed at `now` (read from the monotonic clock the request
    /// was timed with, so no second clock is read).
    pub fn new(trace: &TraceContext, now: Instant) -> Self {
        ExemplarSource {
            trace_id: trace.trace_id(),
            span_id: trace.span_id(),
            at: unix_nanos(now),
        }
    }
}

/// The wall-clock time of `instant`, in nanoseconds since the epoch: both clocks are read
/// once, at the first call, and the monotonic difference is added to the wall-clock one
/// (exemplars and exported spans place their times alike).
pub(crate) fn unix_nanos(instant: Instant) -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (anchor, anchor_nanos) = *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), wall.as_nanos() as u64)
    });
    let since = instant.saturating_duration_since(anchor).as_nanos() as u64;
    let before = anchor.saturating_duration_since(instant).as_nanos() as u64;
    (anchor_nanos + since).saturating_sub(before)
}

/// An exemplar as it was kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Kept {
    source: ExemplarSource,
    value: f64,
}

impl Kept {
    /// The newer of two exemplars.
    pub(crate) fn newest(a: Option<Kept>, b: Option<Kept>) -> Option<Kept> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.source.at > a.source.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The exemplar as the data model holds it: `trace_id` and `span_id` labels (56
    /// characters, well inside OpenMetrics' 128), the value and the time.
    pub(crate) fn to_model(self) -> model::Exemplar {
        model::Exemplar {
            label: vec![
                model::LabelPair {
                    name: "trace_id".into(),
                    value: self.source.trace_id.to_string(),
                },
                model::LabelPair {
                    name: "span_id".into(),
                    value: self.source.span_id.to_string(),
                },
            ],
            value: self.value,
            timestamp: Some(model::Timestamp {
                seconds: (self.source.at / 1_000_000_000) as i64,
                nanos: (self.source.at % 1_000_000_000) as i32,
            }),
        }
    }
}

/// One thread's exemplar of one bucket or counter, written by that thread alone.
#[derive(Default)]
pub(crate) struct ExemplarCell {
    /// Odd while the owner writes.
    sequence: AtomicU64,
    trace_high: AtomicU64,
    trace_low: AtomicU64,
    span: AtomicU64,
    value: AtomicU64,
    /// Nanoseconds since the epoch; 0 while empty.
    at: AtomicU64,
}

impl ExemplarCell {
    /// Keeps `value` from `source`, unless the exemplar kept is younger than [`INTERVAL`].
    /// Only the thread that owns the cell calls this.
    pub(crate) fn offer(&self, value: f64, source: &ExemplarSource) {
        let kept_at = self.at.load(Ordering::Relaxed);
        if kept_at != 0 && source.at < kept_at + INTERVAL.as_nanos() as u64 {
            return;
        }
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let trace = source.trace_id.get();
        self.trace_high
            .store((trace >> 64) as u64, Ordering::Relaxed);
        self.trace_low.store(trace as u64, Ordering::Relaxed);
        self.span.store(source.span_id.get(), Ordering::Relaxed);
        self.value.store(value.to_bits(), Ordering::Relaxed);
        self.at.store(source.at, Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::Release);
    }

    /// The exemplar kept, if any. `None` too if the owner was writing each time it looked
    /// (a few tries): the next scrape will see it.
    pub(crate) fn read(&self) -> Option<Kept> {
        for _ in 0..8 {
            let before = self.sequence.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let trace = (u128::from(self.trace_high.load(Ordering::Relaxed)) << 64)
                | u128::from(self.trace_low.load(Ordering::Relaxed));
            let span = self.span.load(Ordering::Relaxed);
            let value = f64::from_bits(self.value.load(Ordering::Relaxed));
            let at = self.at.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) != before {
                continue;
            }
            if at == 0 {
                return None;
            }
            return Some(Kept {
                source: ExemplarSource {
                    trace_id: TraceId::from_raw(trace)?,
                    span_id: SpanId::from_raw(span)?,
                    at,
                },
                value,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(seconds: u64) -> ExemplarSource {
        let trace = TraceContext::start(std::iter::empty(), false);
        ExemplarSource {
            trace_id: trace.trace_id(),
            span_id: trace.span_id(),
            at: seconds * 1_000_000_000,
        }
    }

    #[test]
    fn a_cell_keeps_at_most_one_exemplar_per_interval() {
        let cell = ExemplarCell::default();
        assert_eq!(cell.read(), None);
        let first = source(100);
        cell.offer(0.5, &first);
        assert_eq!(cell.read().unwrap().source, first);
        // Within the interval: the first stays.
        cell.offer(0.7, &source(100));
        assert_eq!(cell.read().unwrap().value, 0.5);
        // A second later: replaced.
        let later = source(101);
        cell.offer(0.7, &later);
        let kept = cell.read().unwrap();
        assert_eq!((kept.source, kept.value), (later, 0.7));
        assert_eq!(Kept::newest(Some(kept), cell.read()), Some(kept));
    }

    #[test]
    fn a_reader_never_mixes_two_exemplars() {
        let cell = ExemplarCell::default();
        let sources: Vec<_> = (1..=2000).map(source).collect();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for (n, source) in sources.iter().enumerate() {
                    cell.offer(n as f64, source);
                }
            });
            for _ in 0..20_000 {
                if let Some(kept) = cell.read() {
                    let n = kept.value as usize;
                    assert_eq!(kept.source, sources[n]);
                }
            }
        });
    }

    #[test]
    fn the_model_names_trace_and_span() {
        let kept = Kept {
            source: source(1_700_000_000),
            value: 0.25,
        };
        let exemplar = kept.to_model();
        assert_eq!(exemplar.label[0].name, "trace_id");
        assert_eq!(exemplar.label[0].value.len(), 32);
        assert_eq!(exemplar.label[1].value.len(), 16);
        assert_eq!(exemplar.timestamp.unwrap().seconds, 1_700_000_000);
    }

    #[test]
    fn instants_become_wall_clock_time() {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let derived = unix_nanos(now);
        assert!(derived.abs_diff(wall) < 50_000_000, "{derived} vs {wall}");
        assert_eq!(
            unix_nanos(now + Duration::from_secs(2)) - derived,
            2_000_000_000
        );
    }
}
