//! `api_rate_limit_clients` and `api_rate_limit_overflow_total`: how much state the rate
//! limiter holds, and how often its bound made new clients share one bucket. Read from the
//! limiter at scrape time, so recording costs nothing per request.

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
    /// The limiter's overflow count at the previous scrape.
    overflow_seen: AtomicU64,
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
            overflow_seen: AtomicU64::new(0),
        })
    }
}

impl Collector for RateLimitCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.clients
            .desc()
            .into_iter()
            .chain(self.overflow.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(limiter) = self.policy.rate_limiter() {
            self.clients
                .set(i64::try_from(limiter.clients()).unwrap_or(i64::MAX));
            // Swapped, so that concurrent scrapes add each request once.
            let now = limiter.overflowed();
            let before = self.overflow_seen.swap(now, Ordering::Relaxed);
            self.overflow.inc_by(now.saturating_sub(before));
        }
        self.clients
            .collect()
            .into_iter()
            .chain(self.overflow.collect())
            .collect()
    }
}
