//! The in-process read cache (moka) and its families, `rocket_cache_get_*_total{backend}`.
//!
//! Reads go through [`ReadCache::get_or_load`]; writes call [`ReadCache::invalidate`] or
//! [`ReadCache::invalidate_all`]. Each worker process has its own cache, so another
//! worker's write is seen here after at most `cache.ttl_seconds`.

use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::metrics::counter_vec;
use crate::prometheus::{IntCounter, IntCounterVec, Registry};
use crate::redis_client::SharedRedis;

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

/// A cache key as text: the field of the entry in the shared Redis.
pub(crate) trait CacheKey {
    /// The key as one word, unique within its cache.
    fn field(&self) -> String;
}

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
    ttl_seconds: u64,
}

/// A read-through cache; `None` when caching is off (every lookup then loads).
pub(crate) struct ReadCache<K, V> {
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
    pub(crate) fn new(
        families: &CacheFamilies,
        enabled: bool,
        ttl: Duration,
        max_entries: u64,
    ) -> Self {
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

    /// A cache named `name` in the shared Redis: one for every worker.
    pub(crate) fn shared(
        families: &CacheFamilies,
        redis: SharedRedis,
        name: &str,
        ttl: Duration,
    ) -> Self {
        ReadCache {
            store: Some(Store::Redis(Box::new(RedisStore {
                hash: redis.key(&format!("cache:{name}")),
                redis,
                ttl_seconds: ttl.as_secs().max(1),
            }))),
            counters: families.counters(REDIS_BACKEND),
        }
    }

    /// The cached value, or `load`'s, which is cached when it is `Some`. A failed load is
    /// counted in `rocket_cache_get_fail_total` and returned. So is a failure of Redis,
    /// but then the value is loaded: a read the database can answer never fails for the
    /// cache.
    pub(crate) async fn get_or_load<E>(
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
            Store::Redis(store) => {
                let command = redis::cmd("HGET").arg(&store.hash).arg(key.field()).clone();
                store
                    .redis
                    .run::<Option<Vec<u8>>>("HGET", &command)
                    .await
                    .map(|bytes| bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
            }
        };
        match cached {
            Ok(Some(value)) => {
                self.counters.hits.inc();
                return Ok(Some(value));
            }
            Ok(None) => self.counters.misses.inc(),
            Err(_) => self.counters.fail.inc(),
        }
        let redis_failed = cached.is_err();
        match load.await {
            Ok(Some(value)) => {
                if !redis_failed {
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
                let RedisStore {
                    redis,
                    hash,
                    ttl_seconds,
                } = &**store;
                let Ok(bytes) = serde_json::to_vec(value) else {
                    return;
                };
                // One round trip: the entry, and the hash's expiry if it has none yet.
                let mut pipeline = redis::pipe();
                pipeline
                    .cmd("HSET")
                    .arg(hash)
                    .arg(key.field())
                    .arg(bytes)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(hash)
                    .arg(*ttl_seconds)
                    .arg("NX")
                    .ignore();
                // A failure is counted by the client; the value is served all the same.
                let _ = redis.run_pipeline("HSET", &pipeline).await;
            }
        }
    }

    /// Drops `key` for every reader of this cache.
    pub(crate) async fn invalidate(&self, key: &K) {
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
    pub(crate) async fn invalidate_all(&self) {
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
