//! HTTP observation: the families every request records, the observer that records them
//! from arrival to response, and the handler wrapper that tells panics apart from other
//! server errors.
//!
//! - `families`: django-prometheus' HTTP families (`rocket_http_*`) and the API families
//!   (`api_requests_total`, `api_requests_blocked_total`),
//! - `per_request`: the six families every request increments, kept as one histogram per
//!   kind of request,
//! - `observer`: records each request; driven by the request pipeline,
//! - `request_line`: the log line each request gets,
//! - [`instrument`]: counts handler panics as `type="panic"`.

mod families;
mod observer;
mod panics;
mod per_request;
mod request_line;

pub(crate) use families::{route_template, ApiFamilies, HttpFamilies};
pub(crate) use observer::HttpObserver;
pub use panics::instrument;
pub(crate) use request_line::RequestLines;

/// What babylon's own benchmarks reach through `babylon::__internal`.
pub(crate) mod bench {
    pub use super::families::{Exchange, HttpFamilies, Transport};

    /// The HTTP families, registered in `metrics`' registry with `settings`' buckets and
    /// native histograms, keeping exemplars if `exemplars`.
    pub fn http_families(
        metrics: &crate::metrics::Metrics,
        settings: &crate::settings::MetricsSettings,
        exemplars: bool,
    ) -> crate::prometheus::Result<HttpFamilies> {
        HttpFamilies::register(metrics.registry(), settings, exemplars)
    }

    /// A new trace, as a request without a `traceparent` gets.
    pub fn new_trace() -> crate::trace::TraceContext {
        crate::trace::TraceContext::start(std::iter::empty(), false)
    }
}
