//! The rate limiter in the shared Redis: one bucket per client for every worker of every
//! host, tested and updated by one Lua script, which Redis runs atomically.
//!
//! The script is governor's GCRA, step for step, so both backends limit alike: a client's
//! state is its theoretical arrival time (TAT); a request at `now` is allowed when
//! `now >= TAT - tau`, and then moves TAT to `max(TAT, now) + t`, where `t` is the time one
//! request earns back (`1 / per_second`) and `tau = t * (burst - 1)`.
//!
//! - **One clock.** `now` is the Redis server's `TIME`, not the worker's, so hosts whose
//!   clocks disagree still share one limit.
//! - **No state for idle clients.** Each key expires when its bucket is full again
//!   (at TAT), which is when governor's sweep would forget it in memory: a flood of
//!   rotating addresses leaves at most `burst / per_second` seconds of keys behind.
//! - **Microseconds.** Times are integral microseconds, exact in Lua's doubles for
//!   centuries; a rate above a million requests a second per client is taken as one
//!   a microsecond.
//! - **Only its own values.** A key's value is trusted only if this script could have
//!   written it: an integer no further ahead than one request can put it
//!   (`now + tau + t`). Anything else under the key (`nan`, a huge number, another type)
//!   is taken as absent and overwritten, with an expiry, by the next request, so a
//!   foreign value can neither block a client for long nor make `Retry-After` exceed one
//!   interval `t`, the longest this limit ever asks a client to wait.

use std::time::Duration;

use super::ClientKey;
use crate::redis_client::{RedisFailure, SharedRedis};
use crate::settings::RateLimitSettings;

/// GCRA over one key. KEYS[1]: the client's bucket; ARGV[1]: `t`, ARGV[2]: `tau`, both in
/// microseconds. Returns 0 when the request is allowed, else the microseconds until it
/// would be.
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local stored = redis.pcall('GET', KEYS[1])
local tat = type(stored) == 'string' and tonumber(stored) or nil
if tat == nil or tat ~= tat or tat % 1 ~= 0 or tat > now + tau + t then
  tat = now
end
local earliest = tat - tau
if now < earliest then
  return earliest - now
end
local next_tat = math.max(tat, now) + t
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
";

/// The `command` label of the script's calls in `rocket_redis_*`.
const COMMAND: &str = "EVALSHA";

pub(crate) struct SharedLimiter {
    redis: SharedRedis,
    script: redis::Script,
    /// `<redis.key_prefix>:rate:`, followed by the client key.
    key_prefix: String,
    /// Microseconds one request earns back.
    t_micros: u64,
    /// Microseconds of requests beyond the first that may come at once.
    tau_micros: u64,
}

impl SharedLimiter {
    pub(crate) fn new(settings: &RateLimitSettings, redis: SharedRedis) -> Self {
        let t = Duration::from_secs(1) / settings.per_second.get();
        Self::with_interval(redis, t, settings.burst.get())
    }

    /// One request earned back every `t`, `burst` at once.
    pub(super) fn with_interval(redis: SharedRedis, t: Duration, burst: u32) -> Self {
        let t_micros = u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1);
        SharedLimiter {
            key_prefix: redis.key("rate:"),
            redis,
            script: redis::Script::new(GCRA),
            t_micros,
            tau_micros: t_micros.saturating_mul(u64::from(burst.max(1)) - 1),
        }
    }

    /// `Ok(Ok(()))` if the client of `key` may send a request now, `Ok(Err(wait))` if it
    /// may after `wait`, `Err` if Redis did not answer.
    pub(crate) async fn check(&self, key: ClientKey) -> Result<Result<(), Duration>, RedisFailure> {
        let mut invocation = self.script.key(self.bucket(key));
        invocation.arg(self.t_micros).arg(self.tau_micros);
        let wait_micros: u64 = self.redis.run_script(COMMAND, &invocation).await?;
        Ok(match wait_micros {
            0 => Ok(()),
            // The script never asks for more than one interval; this holds even against a
            // script of another version under the same keys.
            wait => Err(Duration::from_micros(wait.min(self.t_micros))),
        })
    }

    /// The Redis key of a client's bucket.
    fn bucket(&self, key: ClientKey) -> String {
        match key {
            ClientKey::Client(address) => format!("{}{address}", self.key_prefix),
            // Only the in-process map has an overflow bucket; Redis bounds its keys by
            // their expiry.
            ClientKey::Overflow => format!("{}overflow", self.key_prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use governor::{Quota, RateLimiter};

    use super::*;
    use crate::redis_client::testing;
    use crate::settings::Ipv6Prefix;

    const HOUR: Duration = Duration::from_secs(3600);

    fn key(address: &str) -> ClientKey {
        ClientKey::of(address.parse::<IpAddr>().unwrap(), Ipv6Prefix::SUBNET)
    }

    /// Deletes the buckets a test used.
    async fn forget(limiter: &SharedLimiter, keys: &[ClientKey]) {
        for key in keys {
            let command = redis::cmd("DEL").arg(limiter.bucket(*key)).clone();
            let _ = limiter.redis.run::<()>("DEL", &command).await;
        }
    }

    #[rocket::async_test]
    async fn allows_what_governor_allows_and_no_more() {
        let Some(redis) = testing::shared("gcra") else {
            return;
        };
        // One request an hour: nothing refills while the test runs, however slowly.
        for burst in [1u32, 2, 7, 50] {
            let limiter = SharedLimiter::with_interval(redis.clone(), HOUR, burst);
            let quota = Quota::with_period(HOUR)
                .unwrap()
                .allow_burst(std::num::NonZeroU32::new(burst).unwrap());
            let governor = RateLimiter::direct(quota);
            let client = key("198.51.100.7");
            let mut in_redis = Vec::new();
            let mut in_memory = Vec::new();
            for _ in 0..burst + 5 {
                in_redis.push(limiter.check(client).await.expect("Redis answers").is_ok());
                in_memory.push(governor.check().is_ok());
            }
            assert_eq!(in_redis, in_memory, "burst {burst}");
            assert_eq!(
                in_redis.iter().filter(|allowed| **allowed).count(),
                burst as usize
            );
            forget(&limiter, &[client]).await;
        }
    }

    #[rocket::async_test]
    async fn a_refusal_says_when_the_next_request_is_allowed_and_the_key_expires_then() {
        let Some(redis) = testing::shared("retry") else {
            return;
        };
        let limiter = SharedLimiter::with_interval(redis, HOUR, 3);
        let client = key("2001:db8:1:2::a");
        for _ in 0..3 {
            assert_eq!(limiter.check(client).await, Ok(Ok(())));
        }
        let wait = limiter.check(client).await.unwrap().unwrap_err();
        assert!(
            wait <= HOUR && wait > HOUR - Duration::from_secs(60),
            "the first request's hour, less the time since: {wait:?}"
        );
        // The bucket is full again, and so forgotten, three hours after the last request.
        let ttl: i64 = limiter
            .redis
            .run("PTTL", redis::cmd("PTTL").arg(limiter.bucket(client)))
            .await
            .unwrap();
        assert!(
            ttl > 3 * 3_540_000 && ttl <= 3 * 3_600_000,
            "expires when full again: {ttl} ms"
        );
        forget(&limiter, &[client]).await;
    }

    #[rocket::async_test]
    async fn one_ipv6_subnet_is_one_client_and_another_has_its_own() {
        let Some(redis) = testing::shared("subnet") else {
            return;
        };
        let limiter = SharedLimiter::with_interval(redis, HOUR, 2);
        let allowed = async |address: &str| limiter.check(key(address)).await.unwrap().is_ok();
        assert!(allowed("2001:db8:1:2::1").await);
        assert!(allowed("2001:db8:1:2:ffff::9").await);
        assert!(
            !allowed("2001:db8:1:2::3").await,
            "the /64's burst of 2 is spent"
        );
        assert!(
            allowed("2001:db8:1:3::1").await,
            "the next /64 is another client"
        );
        assert!(allowed("::ffff:198.51.100.7").await);
        assert!(allowed("198.51.100.7").await);
        assert!(
            !allowed("198.51.100.7").await,
            "mapped IPv4 is the same client"
        );
        forget(
            &limiter,
            &[
                key("2001:db8:1:2::"),
                key("2001:db8:1:3::"),
                key("198.51.100.7"),
            ],
        )
        .await;
    }

    #[rocket::async_test]
    async fn time_earned_back_allows_again() {
        let Some(redis) = testing::shared("refill") else {
            return;
        };
        let limiter = SharedLimiter::with_interval(redis, HOUR, 2);
        let client = key("203.0.113.9");
        assert_eq!(limiter.check(client).await, Ok(Ok(())));
        assert_eq!(limiter.check(client).await, Ok(Ok(())));
        assert!(limiter.check(client).await.unwrap().is_err());
        // Move the bucket's arrival time back by one interval, as if an hour had passed.
        let bucket = limiter.bucket(client);
        let tat: i64 = limiter
            .redis
            .run("GET", redis::cmd("GET").arg(&bucket))
            .await
            .unwrap();
        let earlier = tat - i64::try_from(limiter.t_micros).unwrap();
        let command = redis::cmd("SET").arg(&bucket).arg(earlier).clone();
        limiter.redis.run::<()>("SET", &command).await.unwrap();
        assert_eq!(
            limiter.check(client).await,
            Ok(Ok(())),
            "one request earned back"
        );
        assert!(
            limiter.check(client).await.unwrap().is_err(),
            "and only one"
        );
        forget(&limiter, &[client]).await;
    }

    /// Values the script did not write: strings, non-numbers, non-integers, numbers far
    /// ahead, and keys of other types.
    const FOREIGN: [&str; 12] = [
        "nan",
        "inf",
        "-inf",
        "abc",
        "",
        "1e309",
        "1.5",
        "9223372036854775807",
        "-9223372036854775808",
        "99999999999999999999999999",
        "0x7fffffffffffffff",
        " 12 ",
    ];

    #[rocket::async_test]
    async fn a_value_it_did_not_write_is_taken_as_absent_and_overwritten_with_an_expiry() {
        let Some(redis) = testing::shared("foreign") else {
            return;
        };
        let burst = 3;
        let limiter = SharedLimiter::with_interval(redis, HOUR, burst);
        let client = key("198.51.100.23");
        let bucket = limiter.bucket(client);
        let set = |value: &str| redis::cmd("SET").arg(&bucket).arg(value).clone();
        let mut cases: Vec<(String, redis::Cmd)> = FOREIGN
            .iter()
            .map(|value| (format!("{value:?}"), set(value)))
            .collect();
        for (kind, command) in [
            (
                "hash",
                redis::cmd("HSET").arg(&bucket).arg("f").arg("v").clone(),
            ),
            ("list", redis::cmd("RPUSH").arg(&bucket).arg("v").clone()),
            ("set", redis::cmd("SADD").arg(&bucket).arg("v").clone()),
        ] {
            cases.push((kind.to_string(), command));
        }
        for (what, write) in cases {
            forget(&limiter, &[client]).await;
            limiter.redis.run::<()>("SET", &write).await.unwrap();
            let mut allowed = 0;
            for _ in 0..burst + 2 {
                match limiter.check(client).await {
                    Ok(Ok(())) => allowed += 1,
                    Ok(Err(wait)) => assert!(wait <= HOUR, "{what}: asked to wait {wait:?}"),
                    Err(failure) => panic!("{what}: the check failed ({failure:?})"),
                }
            }
            assert_eq!(allowed, burst, "{what}: a fresh bucket's burst, no more");
            let ttl: i64 = limiter
                .redis
                .run("PTTL", redis::cmd("PTTL").arg(&bucket))
                .await
                .unwrap();
            assert!(ttl > 0, "{what}: the key has an expiry again ({ttl})");
        }
        forget(&limiter, &[client]).await;
    }

    #[rocket::async_test]
    async fn no_stored_value_makes_a_client_wait_longer_than_one_interval() {
        use proptest::prelude::*;
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, TestRunner};
        let Some(redis) = testing::shared("wait-bound") else {
            return;
        };
        let limiter = SharedLimiter::with_interval(redis, Duration::from_secs(2), 4);
        let client = key("198.51.100.24");
        let bucket = limiter.bucket(client);
        let values = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            "\\PC{0,12}",
            prop::sample::select(FOREIGN.to_vec()).prop_map(String::from),
        ];
        // Generated up front: each case is checked against Redis, asynchronously.
        let mut runner = TestRunner::new(Config::default());
        let cases: Vec<String> = (0..200)
            .map(|_| values.new_tree(&mut runner).unwrap().current())
            .collect();
        for value in cases {
            let command = redis::cmd("SET").arg(&bucket).arg(&value).clone();
            limiter.redis.run::<()>("SET", &command).await.unwrap();
            for _ in 0..6 {
                if let Err(wait) = limiter.check(client).await.expect("Redis answers") {
                    assert!(wait <= Duration::from_secs(2), "{value:?}: {wait:?}");
                }
            }
        }
        forget(&limiter, &[client]).await;
    }

    #[rocket::async_test]
    async fn an_unreachable_redis_is_a_failure_not_a_verdict() {
        let (_refusing, url) = testing::refusing_url();
        let redis = testing::client(&url, "down");
        let limiter = SharedLimiter::with_interval(redis, HOUR, 2);
        // The first check finds no connection to be had; Redis is down from then on.
        for _ in 0..2 {
            let failure = limiter.check(key("203.0.113.9")).await.unwrap_err();
            assert_eq!(failure, RedisFailure::Unavailable);
        }
    }
}
