//! The read cache, in this process (moka) or in the shared Redis, and its families,
//! `rocket_cache_get_*_total{backend}`.
//!
//! A resource gets its caches from [`Caches`] (Rocket state, or
//! [`Babylon::caches`](crate::Babylon::caches) at start-up): reads go through
//! [`ReadCache::get_or_load`]; writes call [`ReadCache::invalidate`] or
//! [`ReadCache::invalidate_all`].
//!
//! ```
//! use babylon::cache::{Caches, ReadCache};
//!
//! /// The resource's caches, managed as Rocket state.
//! struct OrderCache {
//!     by_id: ReadCache<String, String>,
//! }
//!
//! fn order_cache(caches: &Caches) -> OrderCache {
//!     OrderCache { by_id: caches.read_cache("orders:by_id") }
//! }
//! ```
//! Each worker process has its own in-process cache, so
//! another worker's write is seen there after at most `cache.ttl_seconds`; the Redis one
//! is shared, and a write invalidates it for every worker at once.
//!
//! **No entry is served older than `cache.ttl_seconds`, whatever Redis accepts.** A cache's
//! hash in Redis gets its expiry when it is created, by the script that writes entries
//! (`PUT`), and an entry is written only into a hash whose expiry is set: a failed
//! `PEXPIRE` (an ACL user without it, say) leaves no entry behind. A read serves an entry
//! only from a hash that expires within `ttl_seconds` and was created with this
//! `ttl_seconds` (its marker field), so a hash left without an expiry, or by a deployment
//! with a longer `ttl_seconds`, is a miss, and the next write replaces it.

use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::metrics::counter_vec;
use crate::prometheus::{IntCounter, IntCounterVec, Registry};
use crate::redis_client::{RedisFailure, SharedRedis};
use crate::settings::{Backend, CacheSettings};

/// The `backend` label of the in-process cache's families.
pub(crate) const BACKEND: &str = "moka";
/// The `backend` label of the shared cache's families (django-prometheus' word).
pub(crate) const REDIS_BACKEND: &str = "redis";

/// `rocket_cache_get_total` and friends.
#[derive(Clone)]
pub(crate) struct CacheFamilies {
    get: IntCounterVec,
    hits: IntCounterVec,
    misses: IntCounterVec,
    fail: IntCounterVec,
}

impl CacheFamilies {
    pub(crate) fn register(registry: &Registry) -> crate::prometheus::Result<Self> {
        let family = |name: &str, help: &str| counter_vec(registry, name, help, &["backend"]);
        Ok(CacheFamilies {
            get: family("rocket_cache_get_total", "Cache lookups.")?,
            hits: family(
                "rocket_cache_get_hits_total",
                "Cache lookups answered from the cache.",
            )?,
            misses: family(
                "rocket_cache_get_misses_total",
                "Cache lookups that had to load the value.",
            )?,
            fail: family(
                "rocket_cache_get_fail_total",
                "Cache lookups whose load failed.",
            )?,
        })
    }

    fn counters(&self, backend: &str) -> CacheCounters {
        CacheCounters {
            get: self.get.with_label_values(&[backend]),
            hits: self.hits.with_label_values(&[backend]),
            misses: self.misses.with_label_values(&[backend]),
            fail: self.fail.with_label_values(&[backend]),
        }
    }
}

#[derive(Clone)]
struct CacheCounters {
    get: IntCounter,
    hits: IntCounter,
    misses: IntCounter,
    fail: IntCounter,
}

/// Hands out the read caches of the `cache.*` settings: in this process, or in the
/// shared Redis when `cache.backend = "redis"`; caches that always load when
/// `cache.enabled` is false. Cheap to clone; managed as Rocket state by
/// [`Babylon::attach`](crate::Babylon::attach).
#[derive(Clone)]
pub struct Caches {
    families: CacheFamilies,
    settings: CacheSettings,
    redis: Option<SharedRedis>,
}

impl Caches {
    /// `redis` is the shared Redis, set when a backend uses it.
    pub(crate) fn new(
        families: CacheFamilies,
        settings: &CacheSettings,
        redis: Option<SharedRedis>,
    ) -> Self {
        Caches {
            families,
            settings: settings.clone(),
            redis,
        }
    }

    /// A read cache; `name` must be unique among the service's caches (the shared
    /// backend keeps its entries under it, for every worker).
    pub fn read_cache<K, V>(&self, name: &str) -> ReadCache<K, V>
    where
        K: Hash + Eq + Send + Sync + Clone + CacheKey + 'static,
        V: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    {
        let settings = &self.settings;
        let ttl = Duration::from_secs(settings.ttl_seconds.get());
        match &self.redis {
            Some(redis) if settings.enabled && settings.backend == Backend::Redis => {
                ReadCache::shared(&self.families, redis.clone(), name, ttl)
            }
            _ => ReadCache::new(&self.families, settings.enabled, ttl, settings.max_entries),
        }
    }
}

/// A cache key as text: the field of the entry in the shared Redis.
pub trait CacheKey {
    /// The key as one word, unique within its cache; the field `:ttl_ms` is babylon's
    /// own (the cache's marker), never a key's.
    fn field(&self) -> String;
}

/// The field of a cache's hash that holds the `ttl_seconds` (in ms) it was created with.
const TTL_FIELD: &str = ":ttl_ms";

/// Writes one entry. KEYS[1]: the cache's hash; ARGV[1]: the field, ARGV[2]: the value,
/// ARGV[3]: the time to live in ms, ARGV[4]: [`TTL_FIELD`]. A hash that is not one this script made with this time
/// to live (another type, no expiry, a longer one, another marker) is replaced; a new hash
/// gets its marker and expiry before any entry, so an entry never lands in a hash without
/// an expiry, even when `PEXPIRE` fails.
const PUT: &str = r"
local ttl = ARGV[3]
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' then
  local left = redis.call('PTTL', KEYS[1])
  if kind ~= 'hash' or left < 0 or left > tonumber(ttl)
      or redis.call('HGET', KEYS[1], ARGV[4]) ~= ttl then
    redis.call('DEL', KEYS[1])
    kind = 'none'
  end
end
if kind == 'none' then
  redis.call('HSET', KEYS[1], ARGV[4], ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 0
";

impl CacheKey for String {
    fn field(&self) -> String {
        self.clone()
    }
}

impl CacheKey for u32 {
    fn field(&self) -> String {
        self.to_string()
    }
}

impl CacheKey for (u32, u32) {
    fn field(&self) -> String {
        format!("{}:{}", self.0, self.1)
    }
}

/// Where a cache keeps its entries.
enum Store<K, V> {
    /// In this process.
    Memory(moka::future::Cache<K, V>),
    /// In one hash of the shared Redis, `<prefix>:cache:<name>`, one field per entry, so
    /// that invalidating everything is one `DEL` that every worker sees at once. The hash
    /// expires `ttl` after its first entry, so no entry is served older than `ttl`.
    Redis(Box<RedisStore>),
}

/// A cache's hash in the shared Redis (boxed in [`Store`]: the client is large).
struct RedisStore {
    redis: SharedRedis,
    hash: String,
    /// The time to live in ms, as the script and the marker field write it.
    ttl_ms: u64,
    put: redis::Script,
}

impl RedisStore {
    /// The entry of `field`, if its hash may be served from: created with this time to
    /// live, and expiring within it.
    async fn get(&self, field: &str) -> Result<Option<Vec<u8>>, RedisFailure> {
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("HMGET")
            .arg(&self.hash)
            .arg(field)
            .arg(TTL_FIELD)
            .cmd("PTTL")
            .arg(&self.hash);
        let ((value, marker), left_ms): ((Option<Vec<u8>>, Option<String>), i64) =
            self.redis.run_pipeline("HGET", &pipeline).await?;
        let made_with_this_ttl = marker.and_then(|ms| ms.parse::<u64>().ok()) == Some(self.ttl_ms);
        let expiring_within_it =
            u64::try_from(left_ms).is_ok_and(|left| left > 0 && left <= self.ttl_ms);
        Ok(value.filter(|_| made_with_this_ttl && expiring_within_it))
    }

    async fn put(&self, field: &str, value: Vec<u8>) -> Result<(), RedisFailure> {
        let mut invocation = self.put.key(&self.hash);
        invocation
            .arg(field)
            .arg(value)
            .arg(self.ttl_ms)
            .arg(TTL_FIELD);
        self.redis.run_script("HSET", &invocation).await
    }
}

/// A read-through cache (see [`Caches::read_cache`]): `rocket_cache_get_*_total` count
/// its lookups.
pub struct ReadCache<K, V> {
    /// `None` when caching is off (every lookup then loads).
    store: Option<Store<K, V>>,
    counters: CacheCounters,
}

impl<K, V> ReadCache<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + CacheKey + 'static,
    V: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
{
    /// An in-process cache: `ttl` bounds how stale an entry may get; `max_entries` how
    /// many it keeps.
    fn new(families: &CacheFamilies, enabled: bool, ttl: Duration, max_entries: u64) -> Self {
        let store = enabled.then(|| {
            Store::Memory(
                moka::future::Cache::builder()
                    .time_to_live(ttl)
                    .max_capacity(max_entries)
                    .build(),
            )
        });
        ReadCache {
            store,
            counters: families.counters(BACKEND),
        }
    }

    /// A cache named `name` in the shared Redis: one for every worker. `ttl` is at least a
    /// millisecond (validation keeps `cache.ttl_seconds` between 1 s and a year).
    fn shared(families: &CacheFamilies, redis: SharedRedis, name: &str, ttl: Duration) -> Self {
        ReadCache {
            store: Some(Store::Redis(Box::new(RedisStore {
                hash: redis.key(&format!("cache:{name}")),
                redis,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
                put: redis::Script::new(PUT),
            }))),
            counters: families.counters(REDIS_BACKEND),
        }
    }

    /// The cached value, or `load`'s, which is cached when it is `Some`. A failed load is
    /// counted in `rocket_cache_get_fail_total` and returned. So is a failure of Redis,
    /// but then the value is loaded: a read the database can answer never fails for the
    /// cache.
    pub async fn get_or_load<E>(
        &self,
        key: K,
        load: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<V>, E> {
        let Some(store) = &self.store else {
            return load.await;
        };
        self.counters.get.inc();
        let cached = match store {
            Store::Memory(cache) => Ok(cache.get(&key).await),
            Store::Redis(store) => store
                .get(&key.field())
                .await
                .map(|bytes| bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok())),
        };
        match cached {
            Ok(Some(value)) => {
                self.counters.hits.inc();
                return Ok(Some(value));
            }
            Ok(None) => self.counters.misses.inc(),
            Err(_) => self.counters.fail.inc(),
        }
        // Writing is pointless while Redis does not answer; when it answered with an error
        // (a foreign key of another type at the hash), the write replaces what is there.
        let redis_answers = !matches!(cached, Err(failure) if failure != RedisFailure::Server);
        match load.await {
            Ok(Some(value)) => {
                if redis_answers {
                    self.insert(store, key, &value).await;
                }
                Ok(Some(value))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                self.counters.fail.inc();
                Err(error)
            }
        }
    }

    async fn insert(&self, store: &Store<K, V>, key: K, value: &V) {
        match store {
            Store::Memory(cache) => cache.insert(key, value.clone()).await,
            Store::Redis(store) => {
                let field = key.field();
                let Ok(bytes) = serde_json::to_vec(value) else {
                    return;
                };
                if field != TTL_FIELD {
                    // A failure is counted by the client; the value is served all the same.
                    let _ = store.put(&field, bytes).await;
                }
            }
        }
    }

    /// Drops `key` for every reader of this cache.
    pub async fn invalidate(&self, key: &K) {
        match &self.store {
            None => {}
            Some(Store::Memory(cache)) => cache.invalidate(key).await,
            Some(Store::Redis(store)) => {
                let command = redis::cmd("HDEL").arg(&store.hash).arg(key.field()).clone();
                if store.redis.run::<()>("HDEL", &command).await.is_err() {
                    warn_stale(&store.hash);
                }
            }
        }
    }

    /// Drops every entry for every reader of this cache.
    pub async fn invalidate_all(&self) {
        match &self.store {
            None => {}
            Some(Store::Memory(cache)) => cache.invalidate_all(),
            Some(Store::Redis(store)) => {
                let command = redis::cmd("DEL").arg(&store.hash).clone();
                if store.redis.run::<()>("DEL", &command).await.is_err() {
                    warn_stale(&store.hash);
                }
            }
        }
    }
}

/// An invalidation that did not reach Redis leaves other workers reading the old value
/// until the hash expires.
fn warn_stale(hash: &str) {
    rocket::warn!("babylon: could not invalidate {hash} in Redis; other workers may read the old value for up to cache.ttl_seconds");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rocket::async_test]
    async fn hits_misses_failures_and_invalidation_are_counted() {
        let families = CacheFamilies::register(&Registry::new()).unwrap();
        let cache: ReadCache<u32, String> =
            ReadCache::new(&families, true, Duration::from_secs(60), 100);
        let load = |v: &str| {
            let v = v.to_string();
            async move { Ok::<_, ()>(Some(v)) }
        };
        assert_eq!(cache.get_or_load(1, load("a")).await, Ok(Some("a".into())));
        assert_eq!(
            cache.get_or_load(1, load("b")).await,
            Ok(Some("a".into())),
            "served from the cache"
        );
        cache.invalidate(&1).await;
        assert_eq!(cache.get_or_load(1, load("c")).await, Ok(Some("c".into())));
        assert_eq!(
            cache
                .get_or_load(2, async { Err::<Option<String>, ()>(()) })
                .await,
            Err(())
        );
        let c = &cache.counters;
        assert_eq!(
            (c.get.get(), c.hits.get(), c.misses.get(), c.fail.get()),
            (4, 1, 3, 1)
        );
    }
}
