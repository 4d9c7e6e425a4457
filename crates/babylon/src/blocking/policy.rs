//! The blocking policy: deny list first, then the rate limit.

use std::net::IpAddr;

use super::rate_limit::RateLimit;
use super::Screening;
use crate::redis_client::SharedRedis;
use crate::request::BlockReason;
use crate::settings::{BlockingSettings, CidrList};

pub(crate) struct Policy {
    deny: CidrList,
    rate_limit: Option<RateLimit>,
}

impl Policy {
    /// The policy of `settings`; `redis` is the shared Redis, for a rate limit on the
    /// `redis` backend.
    pub(crate) fn new(settings: &BlockingSettings, redis: Option<SharedRedis>) -> Self {
        Policy {
            deny: settings.deny.clone(),
            rate_limit: settings
                .rate_limit
                .map(|limit| RateLimit::new(limit, redis)),
        }
    }

    /// Whether a request from `client` may pass. A denied client does not use up its
    /// rate-limit budget.
    pub(crate) fn check(&self, client: IpAddr) -> Screening<'_> {
        self.screen(client, RateLimit::check)
    }

    /// Like [`check`](Self::check), with the rate limit decided in this process even when
    /// its buckets live in Redis: for the probes, whose answers must not depend on Redis.
    pub(crate) fn check_in_process(&self, client: IpAddr) -> Screening<'_> {
        self.screen(client, RateLimit::check_in_process)
    }

    /// Whether the rate limit's buckets live in the shared Redis.
    pub(crate) fn shares_its_rate_limit(&self) -> bool {
        self.rate_limit.as_ref().is_some_and(RateLimit::is_shared)
    }

    /// The deny list, then `limit`'s verdict of the rate limit.
    fn screen<'a>(
        &'a self,
        client: IpAddr,
        limit: fn(&'a RateLimit, IpAddr) -> Screening<'a>,
    ) -> Screening<'a> {
        if self.deny.contains(client) {
            return Screening::decided(Err(BlockReason::DenyList));
        }
        match &self.rate_limit {
            Some(rate_limit) => limit(rate_limit, client),
            None => Screening::decided(Ok(())),
        }
    }

    pub(crate) fn forget_idle_clients(&self) {
        if let Some(limiter) = &self.rate_limit {
            limiter.forget_idle_clients();
        }
    }

    /// The rate limit, when there is one (its state is exported as metrics).
    pub(crate) fn rate_limit(&self) -> Option<&RateLimit> {
        self.rate_limit.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RateLimitSettings;
    use std::num::NonZeroU32;

    fn settings() -> BlockingSettings {
        BlockingSettings {
            deny: "192.0.2.0/24"
                .parse::<crate::settings::Cidr>()
                .into_iter()
                .collect(),
            rate_limit: Some(RateLimitSettings {
                per_second: NonZeroU32::new(1).unwrap(),
                burst: NonZeroU32::new(2).unwrap(),
                ipv6_prefix: crate::settings::Ipv6Prefix::SUBNET,
                max_clients: std::num::NonZeroUsize::new(100).unwrap(),
                backend: crate::settings::Backend::Memory,
                when_redis_fails: crate::settings::WhenRedisFails::FailOpen,
            }),
            ..BlockingSettings::default()
        }
    }

    #[rocket::async_test]
    async fn deny_then_rate_limit_per_client() {
        let policy = Policy::new(&settings(), None);
        assert_eq!(
            policy.check("192.0.2.5".parse().unwrap()).await,
            Err(BlockReason::DenyList)
        );
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(policy.check(a).await.is_ok());
        assert!(policy.check(a).await.is_ok());
        let refused = policy.check(a).await.unwrap_err();
        assert_eq!(refused.label(), "rate_limited");
        assert!(refused.retry_after_secs().unwrap() >= 1);
        assert!(
            policy.check(b).await.is_ok(),
            "another client has its own bucket"
        );
    }
}
