//! babylon's own HTTP API (health, liveness, the metrics summary as JSON, JSON catchers),
//! and what application routes use: the JSON body guard and the error mapping.

mod body;
mod error;
mod health;
pub(crate) mod metrics_summary;

use std::time::Instant;

use rocket::http::Status;
use rocket::{Catcher, Request, Route};

use crate::request::{JsonError, RequestRecord};

/// When this process started, for `uptime_seconds`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started(pub(crate) Instant);

impl Started {
    pub(crate) fn uptime_seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

pub use body::{FieldErrors, JsonBody};
pub(crate) use health::RedisInUse;

/// The paths orchestrators probe (liveness, readiness): their answers must not depend on
/// Redis, so the rate limit checks them in this process only.
pub(crate) const PROBE_PATHS: [&str; 2] = ["/api/live", "/api/health"];

/// babylon's own routes. With metrics on, wrap them with [`crate::observe::instrument`]
/// so that handler panics are counted as such.
pub(crate) fn routes() -> Vec<Route> {
    rocket::routes![health::health, health::live, metrics_summary::summary]
}

/// JSON answers for every error status, including a data guard's refusal.
pub(crate) fn catchers() -> Vec<Catcher> {
    rocket::catchers![json_catcher]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_probe_paths_are_routes() {
        let paths: Vec<String> = super::routes()
            .iter()
            .map(|route| route.uri.path().to_string())
            .collect();
        for probe in super::PROBE_PATHS {
            assert!(
                paths.iter().any(|path| path == probe),
                "{probe} in {paths:?}"
            );
        }
    }
}

#[rocket::catch(default)]
fn json_catcher(status: Status, request: &Request<'_>) -> JsonError {
    if let Some(rejection) = RequestRecord::of(request).rejection() {
        if rejection.status == status {
            return rejection.clone();
        }
    }
    let (reason, message) = match status.code {
        404 => (
            "not_found",
            format!("no route for {} {}", request.method(), request.uri().path()),
        ),
        422 => (
            "invalid_request",
            "the request could not be processed".to_string(),
        ),
        500 => (
            "internal_error",
            "the server failed to handle the request".to_string(),
        ),
        _ => ("error", status.reason_lossy().to_string()),
    };
    JsonError::new(status, reason, message)
}
