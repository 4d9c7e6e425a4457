//! `GET /api/health` (readiness): is the service up, can it reach its database, which build, since when.
//! 200 when everything answers; 503 with the reason when the database does not, so a load
//! balancer stops sending traffic until the pool has reconnected by itself.

use std::time::Duration;

use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::State;
use serde::Serialize;

use super::error::Recorded;
use super::Started;
use crate::db::Db;

/// A database that does not answer `SELECT 1` within this long is reported unavailable.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency is down.
    pub status: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
    pub uptime_seconds: f64,
    pub database: DatabaseHealth,
}

#[derive(Debug, Serialize)]
pub struct DatabaseHealth {
    pub status: &'static str,
    pub vendor: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /api/live`: liveness only, no dependency checked (for probes that must not take
/// the service out because the database is down, and as the trivial benchmark route).
#[derive(Debug, Serialize)]
pub struct Live {
    pub status: &'static str,
    pub uptime_seconds: f64,
}

#[rocket::get("/api/live")]
pub fn live(started: &State<Started>) -> Json<Live> {
    Json(Live {
        status: "ok",
        uptime_seconds: started.uptime_seconds(),
    })
}

#[rocket::get("/api/health")]
pub async fn health(started: &State<Started>, db: &Db) -> Recorded<(Status, Json<Health>)> {
    let database = match db.ping(DATABASE_TIMEOUT).await {
        Ok(()) => DatabaseHealth {
            status: "ok",
            vendor: db.vendor().label(),
            reason: None,
        },
        Err(error) => DatabaseHealth {
            status: "unavailable",
            vendor: db.vendor().label(),
            reason: Some(error.to_string()),
        },
    };
    let healthy = database.reason.is_none();
    let health = Health {
        status: if healthy { "ok" } else { "unavailable" },
        version: crate::build::VERSION,
        commit: crate::build::COMMIT,
        uptime_seconds: started.uptime_seconds(),
        database,
    };
    let status = if healthy {
        Status::Ok
    } else {
        Status::ServiceUnavailable
    };
    Recorded {
        exception: (!healthy).then_some("database_unavailable"),
        response: (status, Json(health)),
    }
}
