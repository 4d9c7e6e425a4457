//! The in-process rate limiter: governor's keyed GCRA limiter (a token bucket without a
//! timer per key) over a state map with a bound.
//!
//! - **Who is one client** is decided by [`ClientKey`]: anyone on IPv6 holds at least a
//!   /64, and keyed by whole addresses could rotate through 2^64 of them, each with a
//!   fresh budget.
//! - **A bound on memory.** Every client tracked takes an entry, so a flood of distinct
//!   clients (distinct /64s are cheap too) would grow the map until the next sweep. At
//!   `max_clients` entries, clients not yet tracked share one extra bucket (the overflow
//!   bucket) instead of getting entries of their own: they are limited together, which is
//!   stricter, never looser; clients already tracked keep their own. Every request keyed
//!   to the overflow bucket is counted, and the map is swept of idle clients (at most once
//!   a second while full) to make room again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::{DefaultKeyedStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use super::ClientKey;
use crate::settings::{Ipv6Prefix, RateLimitSettings};

/// How often, at most, a full map is swept of idle clients to make room.
const SWEEP_WHEN_FULL_EVERY: Duration = Duration::from_secs(1);

/// governor's sharded map, holding at most `max_clients` clients plus the overflow bucket.
struct BoundedStore {
    map: DefaultKeyedStateStore<ClientKey>,
    max_clients: usize,
    /// Entries in `map` (the overflow bucket included); made exact again by every sweep.
    entries: AtomicUsize,
    /// Held shared while a new client is counted and inserted, and exclusively while a
    /// sweep removes idle clients and recounts: a recount that raced an insert would
    /// forget it, and the map would then pass the bound by that many entries. Clients
    /// already tracked (nearly every request) do not take it; the one such client that a
    /// sweep removes between its lookup and its update comes back uncounted, and the next
    /// sweep counts it.
    counting: RwLock<()>,
    /// Requests keyed to the overflow bucket (shared with the limiter, which governor
    /// does not let read its store).
    overflowed: Arc<AtomicU64>,
}

impl StateStore for BoundedStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if self.map.contains_key(key) {
            return self.map.measure_and_replace(key, f);
        }
        let _counting = self.counting.read().unwrap_or_else(PoisonError::into_inner);
        // A new client. Counted before it is inserted, so that racing inserts cannot
        // together pass the bound.
        if self.entries.fetch_add(1, Ordering::Relaxed) < self.max_clients {
            return self.map.measure_and_replace(key, f);
        }
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        if !self.map.contains_key(&ClientKey::Overflow) {
            // The overflow bucket is the one entry allowed beyond the bound.
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
        self.map.measure_and_replace(&ClientKey::Overflow, f)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let _counting = self
            .counting
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.map.retain_recent(drop_below);
        self.entries.store(self.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

pub(crate) struct InProcessLimiter {
    limiter: RateLimiter<ClientKey, BoundedStore, DefaultClock>,
    clock: DefaultClock,
    ipv6_prefix: Ipv6Prefix,
    overflowed: Arc<AtomicU64>,
    /// When a full map was last swept.
    last_sweep_when_full: Mutex<Option<Instant>>,
}

impl InProcessLimiter {
    pub(crate) fn new(settings: RateLimitSettings) -> Self {
        let quota = Quota::per_second(settings.per_second).allow_burst(settings.burst);
        Self::with_quota(quota, settings.ipv6_prefix, settings.max_clients.get())
    }

    /// One request earned back every `t`, `burst` at once, for /64 clients and up to
    /// 1,000 of them: for tests that must not see a bucket refill.
    #[cfg(test)]
    pub(super) fn with_interval(t: Duration, burst: u32) -> Self {
        let quota = Quota::with_period(t)
            .expect("a nonzero interval")
            .allow_burst(std::num::NonZeroU32::new(burst).expect("a nonzero burst"));
        Self::with_quota(quota, Ipv6Prefix::SUBNET, 1000)
    }

    fn with_quota(quota: Quota, ipv6_prefix: Ipv6Prefix, max_clients: usize) -> Self {
        let overflowed = Arc::new(AtomicU64::new(0));
        let store = BoundedStore {
            map: DefaultKeyedStateStore::default(),
            max_clients,
            entries: AtomicUsize::new(0),
            counting: RwLock::new(()),
            overflowed: overflowed.clone(),
        };
        let clock = DefaultClock::default();
        InProcessLimiter {
            limiter: RateLimiter::new(quota, store, clock.clone()),
            clock,
            ipv6_prefix,
            overflowed,
            last_sweep_when_full: Mutex::new(None),
        }
    }

    /// How many leading bits of an IPv6 address are one client.
    pub(crate) fn ipv6_prefix(&self) -> Ipv6Prefix {
        self.ipv6_prefix
    }

    /// `Ok` if the client of `key` may send a request now, else how long until it may.
    pub(crate) fn check(&self, key: ClientKey) -> Result<(), Duration> {
        let overflowed_before = self.overflowed();
        let verdict = self
            .limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()));
        if self.overflowed() != overflowed_before {
            self.sweep_when_full();
        }
        verdict
    }

    /// Forgets clients whose buckets are full again, so the map does not keep them.
    pub(crate) fn forget_idle_clients(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients (and the overflow bucket, once used) the limiter tracks now.
    pub(crate) fn clients(&self) -> usize {
        self.limiter.len()
    }

    /// Requests keyed to the shared overflow bucket since start.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    fn sweep_when_full(&self) {
        let mut last = match self.last_sweep_when_full.try_lock() {
            Ok(last) => last,
            // Another request is sweeping right now.
            Err(_) => return,
        };
        if last.is_some_and(|at| at.elapsed() < SWEEP_WHEN_FULL_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};
    use std::num::NonZeroU32;

    fn limiter(burst: u32, max_clients: usize) -> InProcessLimiter {
        // One request an hour: no bucket refills, and no sweep forgets a client, however
        // slowly a test runs.
        let quota = Quota::per_hour(NonZeroU32::new(1).unwrap())
            .allow_burst(NonZeroU32::new(burst).unwrap());
        InProcessLimiter::with_quota(quota, Ipv6Prefix::SUBNET, max_clients)
    }

    /// The key of `host` in the /64 numbered `subnet`.
    fn in_subnet(subnet: u64, host: u64) -> ClientKey {
        let address = Ipv6Addr::from((u128::from(subnet) << 64) | u128::from(host));
        ClientKey::of(IpAddr::V6(address), Ipv6Prefix::SUBNET)
    }

    #[test]
    fn a_flood_from_one_subnet_is_limited_as_one_client() {
        let limiter = limiter(10, 1000);
        let allowed = (0..10_000u64)
            .filter(|host| limiter.check(in_subnet(42, host * 7919)).is_ok())
            .count();
        assert_eq!(allowed, 10, "one burst for the whole /64");
        assert_eq!(limiter.clients(), 1);
        assert!(
            limiter.check(in_subnet(43, 1)).is_ok(),
            "another /64 has its own"
        );
    }

    #[test]
    fn a_flood_of_distinct_subnets_stays_within_the_bound() {
        let max_clients = 1000;
        let limiter = limiter(3, max_clients);
        let flood = 100_000u64;
        for subnet in 0..flood {
            let _ = limiter.check(in_subnet(subnet, 1));
            assert!(
                limiter.clients() <= max_clients + 1,
                "after subnet {subnet}"
            );
        }
        assert_eq!(
            limiter.clients(),
            max_clients + 1,
            "the bound and the overflow bucket"
        );
        assert_eq!(limiter.overflowed(), flood - max_clients as u64);
        // A client tracked before the flood keeps its own budget.
        let early = in_subnet(0, 1);
        assert!(limiter.check(early).is_ok() && limiter.check(early).is_ok());
        assert!(limiter.check(early).is_err(), "its burst of 3 is spent");
        // New clients share the overflow bucket, which the flood has emptied.
        assert!(limiter.check(in_subnet(flood + 1, 1)).is_err());
    }

    #[test]
    fn sweeps_racing_new_clients_never_let_the_map_pass_the_bound() {
        let max_clients = 200;
        let limiter = std::sync::Arc::new(limiter(3, max_clients));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let (limiter, done) = (limiter.clone(), done.clone());
            std::thread::spawn(move || {
                let mut sweeps = 0u64;
                while !done.load(Ordering::Relaxed) {
                    limiter.forget_idle_clients();
                    sweeps += 1;
                }
                sweeps
            })
        };
        let flooders: Vec<_> = (0..4u64)
            .map(|thread| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    let mut most = 0;
                    for subnet in 0..20_000u64 {
                        let _ = limiter.check(in_subnet(thread << 32 | subnet, 1));
                        most = most.max(limiter.clients());
                    }
                    most
                })
            })
            .collect();
        let most = flooders.into_iter().map(|t| t.join().unwrap()).max();
        done.store(true, Ordering::Relaxed);
        let sweeps = sweeper.join().unwrap();
        assert!(sweeps > 0);
        assert_eq!(
            most,
            Some(max_clients + 1),
            "the bound and the overflow bucket, never more ({sweeps} sweeps raced the flood)"
        );
    }

    #[test]
    fn state_per_client_is_small() {
        // What the bound of `max_clients` costs: one map entry each (key and state), plus
        // the map's own overhead of about one control byte per slot and spare capacity.
        let entry = std::mem::size_of::<(ClientKey, governor::state::InMemoryState)>();
        assert!(entry <= 32, "{entry} bytes");
    }
}
