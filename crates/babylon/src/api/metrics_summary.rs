//! `GET /api/metrics`: the seed's metrics as JSON, for people and scripts without
//! Prometheus: API requests, blocked requests by reason, this process' export port.

use std::collections::BTreeMap;

use rocket::serde::json::Json;
use rocket::State;
use serde::Serialize;

use super::Started;
use crate::observe::ApiFamilies;
use crate::request::BlockReason;

/// The export socket this process holds, if any (managed as state).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExportPort(pub Option<std::net::SocketAddr>);

#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub metrics_enabled: bool,
    pub api_requests_total: u64,
    pub blocked_requests: Blocked,
    pub export_port: Option<u16>,
    pub uptime_seconds: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Blocked {
    pub total: u64,
    pub by_reason: BTreeMap<&'static str, u64>,
}

#[rocket::get("/api/metrics")]
pub(crate) fn summary(
    api: &State<ApiFamilies>,
    export: &State<ExportPort>,
    started: &State<Started>,
    enabled: &State<MetricsEnabled>,
) -> Json<Summary> {
    let by_reason: BTreeMap<&'static str, u64> = BlockReason::LABELS
        .iter()
        .map(|reason| {
            (
                *reason,
                api.requests_blocked_total
                    .with_label_values(&[reason])
                    .get(),
            )
        })
        .collect();
    Json(Summary {
        metrics_enabled: enabled.0,
        api_requests_total: api.requests_total.get(),
        blocked_requests: Blocked {
            total: by_reason.values().sum(),
            by_reason,
        },
        export_port: export.0.map(|addr| addr.port()),
        uptime_seconds: started.uptime_seconds(),
    })
}

/// Whether `metrics.enabled` is on (managed as state).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetricsEnabled(pub bool);
