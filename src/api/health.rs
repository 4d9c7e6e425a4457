//! `GET /api/health`: is the service up, which build, since when.

use rocket::serde::json::Json;
use rocket::State;
use serde::Serialize;

use super::Started;

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
    pub uptime_seconds: f64,
}

#[rocket::get("/api/health")]
pub fn health(started: &State<Started>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: crate::build::VERSION,
        commit: crate::build::COMMIT,
        uptime_seconds: started.uptime_seconds(),
    })
}
