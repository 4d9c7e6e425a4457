//! Why a request was refused before its handler ran: the `reason` label of
//! `api_requests_blocked_total`, and the status and message it is answered with.

use std::time::Duration;

use rocket::http::Status;

use super::JsonError;

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
    /// The shared rate limit's Redis did not answer and `blocking.rate_limit.when_redis_fails`
    /// is `fail_closed`.
    RateLimiterUnavailable,
}

impl BlockReason {
    /// Every `reason` label value, so the counter can start at zero for each.
    pub const LABELS: [&'static str; 5] = [
        "deny_list",
        "rate_limited",
        "metrics_forbidden",
        "metrics_unauthorized",
        "rate_limiter_unavailable",
    ];

    /// The `reason` label of `api_requests_blocked_total`.
    pub fn label(&self) -> &'static str {
        match self {
            BlockReason::DenyList => Self::LABELS[0],
            BlockReason::RateLimited { .. } => Self::LABELS[1],
            BlockReason::MetricsForbidden => Self::LABELS[2],
            BlockReason::MetricsUnauthorized => Self::LABELS[3],
            BlockReason::RateLimiterUnavailable => Self::LABELS[4],
        }
    }

    pub fn status(&self) -> Status {
        match self {
            BlockReason::DenyList | BlockReason::MetricsForbidden => Status::Forbidden,
            BlockReason::RateLimited { .. } => Status::TooManyRequests,
            BlockReason::MetricsUnauthorized => Status::Unauthorized,
            BlockReason::RateLimiterUnavailable => Status::ServiceUnavailable,
        }
    }

    /// A sentence for the JSON error body.
    pub fn message(&self) -> &'static str {
        match self {
            BlockReason::DenyList => "requests from your address are denied",
            BlockReason::RateLimited { .. } => "too many requests; retry later",
            BlockReason::MetricsForbidden => "your address may not read metrics",
            BlockReason::MetricsUnauthorized => "reading metrics needs a valid bearer token",
            BlockReason::RateLimiterUnavailable => {
                "the rate limiter cannot decide right now; retry shortly"
            }
        }
    }

    /// Whole seconds for a `Retry-After` header, rounded up and at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            BlockReason::RateLimited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
            BlockReason::RateLimiterUnavailable => Some(1),
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
