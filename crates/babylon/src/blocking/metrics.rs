//! `api_rate_limit_clients`, `api_rate_limit_overflow_total` and
//! `api_rate_limit_errors_total`: how much state the in-process limiter holds, how often
//! its bound made new clients share one bucket, and how many checks the shared Redis did
//! not answer. Read from the limiter at scrape time, so recording costs nothing per
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::blocking::Policy;
use crate::prometheus::core::{Collector, Desc};
use crate::prometheus::proto::MetricFamily;
use crate::prometheus::{IntCounter, IntGauge, Opts};

pub(crate) struct RateLimitCollector {
    policy: Arc<Policy>,
    clients: IntGauge,
    overflow: IntCounter,
    errors: IntCounter,
    /// The limiter's overflow count at the previous scrape.
    overflow_seen: AtomicU64,
    /// The limiter's error count at the previous scrape.
    errors_seen: AtomicU64,
}

impl RateLimitCollector {
    pub(crate) fn new(policy: Arc<Policy>) -> crate::prometheus::Result<Self> {
        Ok(RateLimitCollector {
            policy,
            clients: IntGauge::with_opts(Opts::new(
                "api_rate_limit_clients",
                "Clients (IPv4 addresses, IPv6 prefixes) the rate limiter tracks; at most blocking.rate_limit.max_clients, plus one shared bucket.",
            ))?,
            overflow: IntCounter::with_opts(Opts::new(
                "api_rate_limit_overflow_total",
                "Requests from clients the full rate limiter did not track, which share one bucket.",
            ))?,
            errors: IntCounter::with_opts(Opts::new(
                "api_rate_limit_errors_total",
                "Rate-limit checks the shared Redis did not answer; blocking.rate_limit.when_redis_fails decided them.",
            ))?,
            overflow_seen: AtomicU64::new(0),
            errors_seen: AtomicU64::new(0),
        })
    }
}

impl Collector for RateLimitCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.clients
            .desc()
            .into_iter()
            .chain(self.overflow.desc())
            .chain(self.errors.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(limit) = self.policy.rate_limit() {
            self.clients
                .set(i64::try_from(limit.clients()).unwrap_or(i64::MAX));
            catch_up(&self.overflow, &self.overflow_seen, limit.overflowed());
            catch_up(&self.errors, &self.errors_seen, limit.errors());
        }
        self.clients
            .collect()
            .into_iter()
            .chain(self.overflow.collect())
            .chain(self.errors.collect())
            .collect()
    }
}

/// Adds to `counter` what the limiter counted since the previous scrape. Swapped, so that
/// concurrent scrapes add each event once.
fn catch_up(counter: &IntCounter, seen: &AtomicU64, now: u64) {
    let before = seen.swap(now, Ordering::Relaxed);
    counter.inc_by(now.saturating_sub(before));
}
