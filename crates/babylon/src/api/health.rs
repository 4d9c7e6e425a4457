//! `GET /api/health` (readiness): is the service up, can it reach its database, do writes
//! reach storage, which build, since when.
//!
//! 200 when everything answers. 503 with a stable reason word when the database does not
//! answer (`unavailable`), or answers but writes fail for a storage cause — full, read-only
//! (`degraded`): a load balancer then stops sending traffic until it recovers by itself.
//! While writes are failing and no request has tried one for a while, each check writes one
//! probe row, so recovery shows even when no traffic writes. The database's own error text
//! goes to the log, never to the client.

use std::time::Duration;

use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::State;
use serde::Serialize;

use super::Started;
use crate::db::Db;
use crate::redis_client::{RedisHealth, SharedRedis};
use crate::request::Recorded;

/// A database that does not answer `SELECT 1` within this long is reported unavailable.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// While requests keep failing to write, their failures say all; once none has failed for
/// this long (traffic stopped, or a load balancer took the service out), each check writes
/// a probe row to see whether writes work again. A small probe can succeed where a big
/// write would not, so it is not trusted over recent real failures.
const PROBE_WHEN_QUIET_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub(super) struct Health {
    /// `ok`; `unavailable` when the database does not answer; `degraded` when it answers
    /// but writes fail.
    pub status: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
    pub uptime_seconds: f64,
    pub database: DatabaseHealth,
    /// Present when a backend uses the shared Redis. It never makes the answer 503: every
    /// worker shares that Redis, and each serves without it (see docs/api.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisReport>,
}

/// The shared Redis, when a backend (the cache, the rate limit) uses it.
pub(crate) struct RedisInUse(pub(crate) Option<SharedRedis>);

#[derive(Debug, Serialize)]
pub(super) struct RedisReport {
    /// `ok`; `unavailable` while it is down (commands fail at once and each backend falls
    /// back, until a probe reaches it); `not_connected` before the first connection.
    pub status: &'static str,
    /// Why it is down: `connection`, `timeout`, `server` or `unsupported_version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Unix time (seconds) since when it has been down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_since: Option<u64>,
}

impl RedisReport {
    fn of(redis: &SharedRedis) -> RedisReport {
        match redis.health() {
            RedisHealth::NotConnected => RedisReport {
                status: "not_connected",
                reason: None,
                down_since: None,
            },
            RedisHealth::Up => RedisReport {
                status: "ok",
                reason: None,
                down_since: None,
            },
            RedisHealth::Down { since, cause } => RedisReport {
                status: "unavailable",
                reason: Some(cause.reason()),
                down_since: since
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|since| since.as_secs()),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct DatabaseHealth {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub vendor: &'static str,
    /// Why it is unavailable: the reason word of the error a request would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Whether writes reach storage; absent while the database does not answer at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes: Option<WritesHealth>,
}

#[derive(Debug, Serialize)]
pub(super) struct WritesHealth {
    /// `ok` or `failing`.
    pub status: &'static str,
    /// Why writes fail: `storage_full`, `storage_read_only` or `storage_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Unix time (seconds) of the first failure of the current run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<u64>,
}

/// `GET /api/live`: liveness only, no dependency checked (for probes that must not take
/// the service out because the database is down, and as the trivial benchmark route).
#[derive(Debug, Serialize)]
pub(super) struct Live {
    pub status: &'static str,
    pub uptime_seconds: f64,
}

#[rocket::get("/api/live")]
pub(super) fn live(started: &State<Started>) -> Json<Live> {
    Json(Live {
        status: "ok",
        uptime_seconds: started.uptime_seconds(),
    })
}

#[rocket::get("/api/health")]
pub(super) async fn health(
    started: &State<Started>,
    db: &Db,
    redis: &State<RedisInUse>,
) -> Recorded<(Status, Json<Health>)> {
    let vendor = db.vendor().label();
    let database = match db.ping(DATABASE_TIMEOUT).await {
        Ok(()) => DatabaseHealth {
            status: "ok",
            vendor,
            reason: None,
            writes: Some(writes(db).await),
        },
        Err(error) => {
            rocket::warn!("health: the database check failed: {error}");
            DatabaseHealth {
                status: "unavailable",
                vendor,
                reason: Some(error.kind.reason()),
                writes: None,
            }
        }
    };
    let (status, problem) = match (&database.reason, &database.writes) {
        (Some(reason), _) => ("unavailable", Some(*reason)),
        (None, Some(WritesHealth { reason, .. })) if reason.is_some() => ("degraded", *reason),
        _ => ("ok", None),
    };
    let health = Health {
        status,
        version: crate::build::VERSION,
        commit: crate::build::COMMIT,
        uptime_seconds: started.uptime_seconds(),
        database,
        redis: redis.0.as_ref().map(RedisReport::of),
    };
    let code = if problem.is_none() {
        Status::Ok
    } else {
        Status::ServiceUnavailable
    };
    Recorded {
        exception: problem,
        response: (code, Json(health)),
    }
}

/// Whether writes reach storage. Only while they are failing, and no request has tried one
/// lately, does this write (one probe row): a healthy service's checks stay read-only.
async fn writes(db: &Db) -> WritesHealth {
    let quiet = |latest: std::time::SystemTime| {
        latest
            .elapsed()
            .map_or(true, |quiet| quiet >= PROBE_WHEN_QUIET_FOR)
    };
    if db
        .writes()
        .failure()
        .is_some_and(|failure| quiet(failure.latest))
    {
        if let Err(error) = db.probe_write(DATABASE_TIMEOUT).await {
            rocket::warn!("health: the write probe failed: {error}");
        }
    }
    match db.writes().failure() {
        None => WritesHealth {
            status: "ok",
            reason: None,
            failing_since: None,
        },
        Some(failure) => WritesHealth {
            status: "failing",
            reason: Some(failure.kind.reason()),
            failing_since: failure
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|since| since.as_secs()),
        },
    }
}
