//! The HTTP families every request records (django-prometheus' names, `django_` ->
//! `rocket_`), and the API families of requests received and refused.

use crate::prometheus::{IntCounterVec, Registry};

use rocket::http::Method;

use super::per_request::{RequestFamilies, RequestKind};
use crate::metrics::native::NativeConfig;
use crate::metrics::sharded::{CounterFamily, HistogramFamily, InFlightGauge, Recording};
use crate::metrics::ExemplarSource;
use crate::metrics::{counter_vec, register, register_full};
use crate::request::BlockReason;
use crate::settings::{Buckets, MetricsSettings};

/// Label value of requests that matched no route: one value for every scanner path.
pub(super) const UNMATCHED_ROUTE: &str = "<unmatched>";
/// Label value of requests the blocking policy refused before routing.
pub(super) const BLOCKED_ROUTE: &str = "<blocked>";

/// The route template a request is recorded and logged under: its route's, or one of
/// the two above.
pub(super) fn route_of<'r>(
    request: &'r rocket::Request<'_>,
    record: &crate::request::RequestRecord,
) -> &'r str {
    match (record.blocked(), request.route()) {
        (Some(_), _) => BLOCKED_ROUTE,
        (None, Some(route)) => route.uri.path(),
        (None, None) => UNMATCHED_ROUTE,
    }
}

/// The route template a request matched; `None` when it matched none or was refused
/// before routing.
pub(crate) fn route_template<'r>(
    request: &'r rocket::Request<'_>,
    record: &crate::request::RequestRecord,
) -> Option<&'r str> {
    match route_of(request, record) {
        UNMATCHED_ROUTE | BLOCKED_ROUTE => None,
        route => Some(route),
    }
}

/// django-prometheus' HTTP families, renamed `django_` -> `rocket_`, `view` -> `route`.
#[derive(Clone)]
pub struct HttpFamilies {
    /// The five per-request counters and the duration histogram.
    requests: RequestFamilies,
    /// `rocket_http_exceptions_by_type_total{type}`.
    pub exceptions_by_type: IntCounterVec,
    /// `rocket_http_exceptions_by_route_total{route}`.
    pub exceptions_by_route: IntCounterVec,
    /// `rocket_http_request_body_bytes`.
    pub request_body_bytes: HistogramFamily,
    /// `rocket_http_response_body_bytes`.
    pub response_body_bytes: HistogramFamily,
    /// `rocket_http_requests_in_flight`.
    pub requests_in_flight: InFlightGauge,
}

/// One finished request, as the HTTP fairing saw it.
pub struct Exchange<'a> {
    /// The route template, or `<unmatched>` / `<blocked>`.
    pub route: &'a str,
    /// The method as it arrived.
    pub method: Method,
    /// Plain HTTP or HTTPS at a trusted proxy.
    pub transport: Transport,
    /// The response status code.
    pub status: u16,
    /// From arrival to response, in seconds.
    pub seconds: f64,
    /// Request body bytes the handler read.
    pub request_body_bytes: u64,
    /// `None` when the body is streamed: it is observed when the stream ends.
    pub response_body_bytes: Option<u64>,
    /// Why the handler failed, for a server error of a matched route.
    pub exception: Option<&'a str>,
    /// The request, as the exemplar of its duration (when exemplars are kept).
    pub exemplar: Option<ExemplarSource>,
}

impl HttpFamilies {
    /// Registers the HTTP families, with `metrics.latency_buckets` for the durations,
    /// native buckets as `metrics.native_histograms` says, and exemplars of the durations
    /// if `exemplars`.
    pub fn register(
        registry: &Registry,
        settings: &MetricsSettings,
        exemplars: bool,
    ) -> crate::prometheus::Result<Self> {
        // Powers of two from 64 B to 16 MiB, like django-prometheus' body-size buckets.
        let body_buckets = || Buckets::exponential(64.0, 2.0, 19).expect("valid constant buckets");
        let native = NativeConfig::from_settings(&settings.native_histograms);
        let sizes = Recording {
            native,
            exemplars: false,
        };
        Ok(HttpFamilies {
            requests: register_full(
                registry,
                RequestFamilies::new(
                    settings.latency_buckets.clone(),
                    Recording { native, exemplars },
                )?,
            )?,
            exceptions_by_type: counter_vec(
                registry,
                "rocket_http_exceptions_by_type_total",
                "Handler errors and panics answered with a server error, by type.",
                &["type"],
            )?,
            exceptions_by_route: counter_vec(
                registry,
                "rocket_http_exceptions_by_route_total",
                "Handler errors and panics answered with a server error, by route template.",
                &["route"],
            )?,
            request_body_bytes: register_full(
                registry,
                HistogramFamily::new(
                    "rocket_http_request_body_bytes",
                    "Request body bytes actually read by the handler.",
                    body_buckets(),
                    sizes,
                )?,
            )?,
            response_body_bytes: register_full(
                registry,
                HistogramFamily::new(
                    "rocket_http_response_body_bytes",
                    "Response body bytes actually sent.",
                    body_buckets(),
                    sizes,
                )?,
            )?,
            requests_in_flight: register(
                registry,
                InFlightGauge::new(
                    "rocket_http_requests_in_flight",
                    "Requests being handled right now.",
                )?,
            )?,
        })
    }

    /// Records one finished request. Everything a successful request records goes into its
    /// own thread's shards, without a lock (see [`super::sharded`]).
    pub fn observe(&self, exchange: &Exchange<'_>) {
        let kind = RequestKind {
            method: exchange.method,
            status: exchange.status,
            transport: exchange.transport,
        };
        self.requests.record(
            exchange.route,
            kind,
            exchange.seconds,
            exchange.exemplar.as_ref(),
        );
        if let Some(kind) = exchange.exception {
            self.exceptions_by_type.with_label_values(&[kind]).inc();
            self.exceptions_by_route
                .with_label_values(&[exchange.route])
                .inc();
        }
        self.request_body_bytes
            .observe(exchange.request_body_bytes as f64);
        if let Some(bytes) = exchange.response_body_bytes {
            self.response_body_bytes.observe(bytes as f64);
        }
    }
}

/// Plain HTTP, or HTTPS terminated by a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain HTTP.
    Http,
    /// HTTPS, terminated by a trusted proxy.
    Https,
}

impl Transport {
    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Https => "https",
        }
    }
}

/// The seed's two custom families.
#[derive(Clone)]
pub(crate) struct ApiFamilies {
    pub requests_total: CounterFamily,
    pub requests_blocked_total: IntCounterVec,
}

impl ApiFamilies {
    /// Registers the API families; `api_requests_total` keeps exemplars if `exemplars`.
    pub(crate) fn register(
        registry: &Registry,
        exemplars: bool,
    ) -> crate::prometheus::Result<Self> {
        let requests_blocked_total = counter_vec(
            registry,
            "api_requests_blocked_total",
            "Requests refused before their handler ran, by reason.",
            &["reason"],
        )?;
        // Every reason starts at zero, so dashboards and rates see the series from the start.
        for reason in BlockReason::LABELS {
            requests_blocked_total.with_label_values(&[reason]);
        }
        Ok(ApiFamilies {
            requests_total: register_full(
                registry,
                CounterFamily::new(
                    "api_requests_total",
                    "API requests received (blocked ones included; metrics scrapes not).",
                    exemplars,
                )?,
            )?,
            requests_blocked_total,
        })
    }

    pub(crate) fn blocked(&self, reason: BlockReason) {
        self.requests_blocked_total
            .with_label_values(&[reason.label()])
            .inc();
    }
}
