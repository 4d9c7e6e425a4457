//! The per-client rate limit: one GCRA bucket per client, kept in this process
//! ([`memory`], the default) or in the shared Redis ([`shared`]), where every worker of
//! every host draws on the same bucket.
//!
//! - **Who is one client** ([`ClientKey`]): an IPv4 address, or an IPv6 prefix
//!   (`ipv6_prefix`, /64 by default), in both backends alike.
//! - **Same semantics in both backends.** A client may send `burst` requests at once, then
//!   one every `1 / per_second`; a refused request learns when it may retry. The Redis
//!   script computes what governor computes, on the Redis server's clock, so hosts whose
//!   clocks differ still share one limit.
//! - **When Redis does not answer** (`when_redis_fails`): `fail_open` lets this worker's
//!   own in-process limiter decide, so the limit still holds per worker (never unlimited);
//!   `fail_closed` refuses with 503 `rate_limiter_unavailable`. Either way the check is
//!   counted in `api_rate_limit_errors_total` and the change of state is logged once, not
//!   per request.

mod memory;
mod shared;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Screening;
use crate::redis_client::SharedRedis;
use crate::request::BlockReason;
use crate::settings::{canonical_ip, Backend, Ipv6Prefix, RateLimitSettings, WhenRedisFails};

use self::memory::InProcessLimiter;
use self::shared::SharedLimiter;

/// What the limiter keys a bucket on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    /// An IPv4 address, or an IPv6 address cut to the configured prefix.
    Client(IpAddr),
    /// The bucket that clients share once the in-process map holds `max_clients` others.
    Overflow,
}

impl ClientKey {
    /// The key of `address`: IPv4 (mapped or not) whole, IPv6 cut to `prefix`.
    pub(crate) fn of(address: IpAddr, prefix: Ipv6Prefix) -> ClientKey {
        ClientKey::Client(match canonical_ip(address) {
            IpAddr::V6(v6) => IpAddr::V6(prefix.of(v6)),
            v4 => v4,
        })
    }
}

/// The rate limit of `blocking.rate_limit`, on its backend.
pub(crate) struct RateLimit {
    /// The in-process limiter: the limit itself with the memory backend, the fallback of
    /// `fail_open` with the Redis one.
    local: InProcessLimiter,
    /// The limiter in the shared Redis, with the redis backend.
    shared: Option<SharedLimiter>,
    when_redis_fails: WhenRedisFails,
    /// Checks the shared Redis did not answer.
    errors: AtomicU64,
    /// Whether the last check reached Redis: failures and recoveries are logged on change.
    redis_answering: AtomicBool,
}

impl RateLimit {
    /// The limit of `settings`; `redis` is the shared Redis, used when the backend is
    /// `redis` (validation makes sure it is set then).
    pub(crate) fn new(settings: RateLimitSettings, redis: Option<SharedRedis>) -> Self {
        let shared = redis
            .filter(|_| settings.backend == Backend::Redis)
            .map(|redis| SharedLimiter::new(&settings, redis));
        Self::of(
            InProcessLimiter::new(settings),
            shared,
            settings.when_redis_fails,
        )
    }

    fn of(
        local: InProcessLimiter,
        shared: Option<SharedLimiter>,
        when_redis_fails: WhenRedisFails,
    ) -> Self {
        RateLimit {
            local,
            shared,
            when_redis_fails,
            errors: AtomicU64::new(0),
            redis_answering: AtomicBool::new(true),
        }
    }

    /// Whether `client` may send a request now; refused as `rate_limited` (with the time
    /// until it may) or, with `fail_closed` while Redis does not answer,
    /// `rate_limiter_unavailable`.
    pub(crate) fn check(&self, client: IpAddr) -> Screening<'_> {
        let key = ClientKey::of(client, self.local.ipv6_prefix());
        match &self.shared {
            None => Screening::decided(self.local.check(key).map_err(rate_limited)),
            Some(shared) => Screening::Pending(Box::pin(self.check_shared(shared, key))),
        }
    }

    /// Whether the buckets live in the shared Redis.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The verdict of this process' own limiter, whatever the backend.
    pub(crate) fn check_in_process(&self, client: IpAddr) -> Screening<'_> {
        let key = ClientKey::of(client, self.local.ipv6_prefix());
        Screening::decided(self.local.check(key).map_err(rate_limited))
    }

    async fn check_shared(
        &self,
        shared: &SharedLimiter,
        key: ClientKey,
    ) -> Result<(), BlockReason> {
        match shared.check(key).await {
            Ok(verdict) => {
                if !self.redis_answering.swap(true, Ordering::Relaxed) {
                    rocket::warn!("babylon: the shared rate limit's Redis answers again; every worker draws on one limit again");
                }
                verdict.map_err(rate_limited)
            }
            Err(failure) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if self.redis_answering.swap(false, Ordering::Relaxed) {
                    rocket::warn!(
                        "babylon: the shared rate limit's Redis does not answer ({}); {}",
                        failure.label(),
                        match self.when_redis_fails {
                            WhenRedisFails::FailOpen =>
                                "each worker limits clients by itself until it answers (fail_open)",
                            WhenRedisFails::FailClosed =>
                                "requests are refused with 503 until it answers (fail_closed)",
                        }
                    );
                }
                self.when_unanswered(key)
            }
        }
    }

    /// The verdict on a request whose check the shared Redis did not answer.
    fn when_unanswered(&self, key: ClientKey) -> Result<(), BlockReason> {
        match self.when_redis_fails {
            WhenRedisFails::FailOpen => self.local.check(key).map_err(rate_limited),
            WhenRedisFails::FailClosed => Err(BlockReason::RateLimiterUnavailable),
        }
    }

    /// Forgets in-process clients whose buckets are full again.
    pub(crate) fn forget_idle_clients(&self) {
        self.local.forget_idle_clients();
    }

    /// Clients (and the overflow bucket, once used) this process' limiter tracks.
    pub(crate) fn clients(&self) -> usize {
        self.local.clients()
    }

    /// Requests keyed to the in-process overflow bucket since start.
    pub(crate) fn overflowed(&self) -> u64 {
        self.local.overflowed()
    }

    /// Checks the shared Redis did not answer, since start.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

fn rate_limited(retry_after: std::time::Duration) -> BlockReason {
    BlockReason::RateLimited { retry_after }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_client::testing;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A limit of `burst` requests and then one an hour, on the Redis of `url`.
    fn on_redis(url: &str, burst: u32, when_redis_fails: WhenRedisFails) -> RateLimit {
        let redis = testing::client(url, "limit");
        RateLimit::of(
            InProcessLimiter::with_interval(HOUR, burst),
            Some(SharedLimiter::with_interval(redis, HOUR, burst)),
            when_redis_fails,
        )
    }

    #[rocket::async_test]
    async fn without_redis_fail_open_limits_per_worker_and_counts_every_check() {
        let (_refusing, url) = testing::refusing_url();
        let limit = on_redis(&url, 3, WhenRedisFails::FailOpen);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let mut verdicts = Vec::new();
        for _ in 0..5 {
            verdicts.push(limit.check(client).await.map_err(|reason| reason.label()));
        }
        assert_eq!(
            verdicts,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Err("rate_limited"),
                Err("rate_limited")
            ],
            "the in-process limiter decides: never unlimited"
        );
        assert_eq!(limit.errors(), 5);
        assert_eq!(limit.clients(), 1);
    }

    #[rocket::async_test]
    async fn without_redis_fail_closed_refuses_and_counts_every_check() {
        let (_refusing, url) = testing::refusing_url();
        let limit = on_redis(&url, 3, WhenRedisFails::FailClosed);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            let refused = limit.check(client).await.unwrap_err();
            assert_eq!(refused, BlockReason::RateLimiterUnavailable);
            assert_eq!(refused.status().code, 503);
            assert_eq!(refused.retry_after_secs(), Some(1));
        }
        assert_eq!(limit.errors(), 3);
        assert_eq!(limit.clients(), 0, "the in-process limiter is not asked");
    }

    #[rocket::async_test]
    async fn with_redis_the_shared_bucket_decides_and_nothing_is_counted_as_an_error() {
        if testing::shared("probe").is_none() {
            return;
        }
        let limit = on_redis("redis://127.0.0.1:6379", 2, WhenRedisFails::FailClosed);
        let client: IpAddr = "203.0.113.4".parse().unwrap();
        assert!(limit.check(client).await.is_ok());
        assert!(limit.check(client).await.is_ok());
        let refused = limit.check(client).await.unwrap_err();
        assert_eq!(refused.label(), "rate_limited");
        assert!(refused.retry_after_secs().unwrap() > 3000);
        assert_eq!(limit.errors(), 0);
        assert_eq!(limit.clients(), 0, "the in-process limiter is not asked");
    }

    #[test]
    fn keys_cut_ipv6_to_the_prefix_and_unmap_ipv4() {
        let prefix = Ipv6Prefix::SUBNET;
        let in_subnet = |subnet: u64, host: u64| {
            IpAddr::V6(Ipv6Addr::from(
                (u128::from(subnet) << 64) | u128::from(host),
            ))
        };
        assert_eq!(
            ClientKey::of(in_subnet(7, 1), prefix),
            ClientKey::of(in_subnet(7, u64::MAX), prefix)
        );
        assert_ne!(
            ClientKey::of(in_subnet(7, 1), prefix),
            ClientKey::of(in_subnet(8, 1), prefix)
        );
        let v4 = Ipv4Addr::new(198, 51, 100, 7);
        assert_eq!(
            ClientKey::of(IpAddr::V6(v4.to_ipv6_mapped()), prefix),
            ClientKey::Client(IpAddr::V4(v4))
        );
    }
}
