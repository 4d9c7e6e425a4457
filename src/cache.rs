//! The in-process read cache (moka) and its families, `rocket_cache_get_*_total{backend}`.
//!
//! Reads go through [`ReadCache::get_or_load`]; writes call [`ReadCache::invalidate`] or
//! [`ReadCache::invalidate_all`]. Each worker process has its own cache, so another
//! worker's write is seen here after at most `cache.ttl_seconds`.

use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use crate::metrics::counter_vec;
use crate::prometheus::{IntCounter, IntCounterVec, Registry};

/// The `backend` label of the cache families.
pub(crate) const BACKEND: &str = "moka";

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

/// A read-through cache; `None` when caching is off (every lookup then loads).
pub(crate) struct ReadCache<K, V> {
    cache: Option<moka::future::Cache<K, V>>,
    counters: CacheCounters,
}

impl<K, V> ReadCache<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `ttl` bounds how stale an entry may get; `max_entries` how many it keeps.
    pub(crate) fn new(
        families: &CacheFamilies,
        enabled: bool,
        ttl: Duration,
        max_entries: u64,
    ) -> Self {
        let cache = enabled.then(|| {
            moka::future::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_entries)
                .build()
        });
        ReadCache {
            cache,
            counters: families.counters(BACKEND),
        }
    }

    /// The cached value, or `load`'s, which is cached when it is `Some`. A failed load is
    /// counted in `rocket_cache_get_fail_total` and returned.
    pub(crate) async fn get_or_load<E>(
        &self,
        key: K,
        load: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<V>, E> {
        let Some(cache) = &self.cache else {
            return load.await;
        };
        self.counters.get.inc();
        if let Some(value) = cache.get(&key).await {
            self.counters.hits.inc();
            return Ok(Some(value));
        }
        self.counters.misses.inc();
        match load.await {
            Ok(Some(value)) => {
                cache.insert(key, value.clone()).await;
                Ok(Some(value))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                self.counters.fail.inc();
                Err(error)
            }
        }
    }

    pub(crate) async fn invalidate(&self, key: &K) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key).await;
        }
    }

    pub(crate) fn invalidate_all(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }
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
