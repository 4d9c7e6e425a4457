//! Request blocking: a policy decides, before any handler runs, whether a request may pass.
//!
//! - [`client`] finds the client's address (believing proxy headers only from trusted peers),
//! - [`policy`] holds the deny list and the per-client rate limit and gives a verdict,
//! - [`gatekeeper`] applies verdicts to Rocket requests: a refused request is re-routed to a
//!   handler that answers with a JSON error, so the handler it asked for never runs.
//!
//! Who may read metrics is not decided here but where metrics are served
//! ([`crate::metrics::MetricsAccess`], checked by the metrics route and the export
//! listener), so that every spelling of the path the router sends there is checked.
//!
//! Every refusal carries a [`BlockReason`], the `reason` label of
//! `api_requests_blocked_total`.

pub mod client;
pub mod gatekeeper;
pub mod policy;
pub mod rate_limit;

use std::time::Duration;

use rocket::http::Status;

use crate::api::error::JsonError;

pub use client::ClientAddr;
pub use gatekeeper::Gatekeeper;
pub use policy::Policy;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// The client address is on `blocking.deny`.
    DenyList,
    /// The client exceeded `blocking.rate_limit`; it may retry after the given time.
    RateLimited { retry_after: Duration },
    /// A metrics read from an address outside `metrics.export.allow`.
    MetricsForbidden,
    /// A metrics read without the right bearer token.
    MetricsUnauthorized,
}

impl BlockReason {
    /// Every `reason` label value, so the counter can start at zero for each.
    pub const LABELS: [&'static str; 4] = [
        "deny_list",
        "rate_limited",
        "metrics_forbidden",
        "metrics_unauthorized",
    ];

    /// The `reason` label of `api_requests_blocked_total`.
    pub fn label(&self) -> &'static str {
        match self {
            BlockReason::DenyList => Self::LABELS[0],
            BlockReason::RateLimited { .. } => Self::LABELS[1],
            BlockReason::MetricsForbidden => Self::LABELS[2],
            BlockReason::MetricsUnauthorized => Self::LABELS[3],
        }
    }

    pub fn status(&self) -> Status {
        match self {
            BlockReason::DenyList | BlockReason::MetricsForbidden => Status::Forbidden,
            BlockReason::RateLimited { .. } => Status::TooManyRequests,
            BlockReason::MetricsUnauthorized => Status::Unauthorized,
        }
    }

    /// A sentence for the JSON error body.
    pub fn message(&self) -> &'static str {
        match self {
            BlockReason::DenyList => "requests from your address are denied",
            BlockReason::RateLimited { .. } => "too many requests; retry later",
            BlockReason::MetricsForbidden => "your address may not read metrics",
            BlockReason::MetricsUnauthorized => "reading metrics needs a valid bearer token",
        }
    }

    /// Whole seconds for a `Retry-After` header, rounded up and at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            BlockReason::RateLimited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
            _ => None,
        }
    }
}

impl From<BlockReason> for JsonError {
    fn from(reason: BlockReason) -> JsonError {
        let error = JsonError::new(reason.status(), reason.label(), reason.message());
        match reason.retry_after_secs() {
            Some(secs) => error.retry_after(secs),
            None => error,
        }
    }
}
