//! The built-in metric families of DESIGN.md, registered once per registry.

use crate::prometheus::core::Collector;
use crate::prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rocket::http::Method;

use crate::blocking::BlockReason;
use crate::config::MetricsSettings;

/// Registers `collector` and hands it back, so families read as one expression each.
pub(crate) fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> crate::prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// Registers a labelled integer counter family.
pub(crate) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> crate::prometheus::Result<IntCounterVec> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// Registers a labelled integer gauge family.
pub(crate) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> crate::prometheus::Result<IntGaugeVec> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// Label value of requests that matched no route: one value for every scanner path.
pub const UNMATCHED_ROUTE: &str = "<unmatched>";
/// Label value of requests the blocking policy refused before routing.
pub const BLOCKED_ROUTE: &str = "<blocked>";

/// django-prometheus' HTTP families, renamed `django_` -> `rocket_`, `view` -> `route`.
#[derive(Clone)]
pub struct HttpFamilies {
    pub requests_by_method: IntCounterVec,
    pub requests_by_transport: IntCounterVec,
    pub requests_by_route_transport_method: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub responses_by_status: IntCounterVec,
    pub responses_by_status_route_method: IntCounterVec,
    pub exceptions_by_type: IntCounterVec,
    pub exceptions_by_route: IntCounterVec,
    pub request_body_bytes: Histogram,
    pub response_body_bytes: Histogram,
    pub requests_in_flight: IntGauge,
    children: Arc<ChildCache>,
}

/// One finished request, as the HTTP fairing saw it.
pub struct Exchange<'a> {
    pub route: &'a str,
    pub method: Method,
    pub transport: Transport,
    pub status: u16,
    pub seconds: f64,
    pub request_body_bytes: u64,
    /// `None` when the body is streamed: it is observed when the stream ends.
    pub response_body_bytes: Option<u64>,
    /// Why the handler failed, for a server error of a matched route.
    pub exception: Option<&'a str>,
}

impl HttpFamilies {
    pub fn register(
        registry: &Registry,
        settings: &MetricsSettings,
    ) -> crate::prometheus::Result<Self> {
        // Powers of two from 64 B to 16 MiB, like django-prometheus' body-size buckets.
        let body_buckets = || exponential_buckets(64.0, 2.0, 19).expect("valid constant buckets");
        Ok(HttpFamilies {
            requests_by_method: counter_vec(
                registry,
                "rocket_http_requests_by_method_total",
                "Requests received, by HTTP method.",
                &["method"],
            )?,
            requests_by_transport: counter_vec(
                registry,
                "rocket_http_requests_by_transport_total",
                "Requests received, by transport (http or https).",
                &["transport"],
            )?,
            requests_by_route_transport_method: counter_vec(
                registry,
                "rocket_http_requests_by_route_transport_method_total",
                "Requests received, by route template, transport and method.",
                &["route", "transport", "method"],
            )?,
            request_duration_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rocket_http_request_duration_seconds",
                        "Time from request arrival to response, by route template and method.",
                    )
                    .buckets(settings.latency_buckets.to_vec()),
                    &["route", "method"],
                )?,
            )?,
            responses_by_status: counter_vec(
                registry,
                "rocket_http_responses_by_status_total",
                "Responses sent, by status code.",
                &["status"],
            )?,
            responses_by_status_route_method: counter_vec(
                registry,
                "rocket_http_responses_by_status_route_method_total",
                "Responses sent, by status code, route template and method.",
                &["status", "route", "method"],
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
            request_body_bytes: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rocket_http_request_body_bytes",
                        "Request body bytes actually read by the handler.",
                    )
                    .buckets(body_buckets()),
                )?,
            )?,
            response_body_bytes: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rocket_http_response_body_bytes",
                        "Response body bytes actually sent.",
                    )
                    .buckets(body_buckets()),
                )?,
            )?,
            children: Arc::default(),
            requests_in_flight: register(
                registry,
                IntGauge::new(
                    "rocket_http_requests_in_flight",
                    "Requests being handled right now.",
                )?,
            )?,
        })
    }

    /// Records one finished request. The labelled children of the per-request families are
    /// resolved once per (route, method, status, transport) and kept, so a request costs a
    /// map lookup under a read lock and a few atomic adds: no label hashing per family and
    /// no allocation.
    pub fn observe(&self, exchange: &Exchange<'_>) {
        let key = ChildKey {
            method: exchange.method,
            status: exchange.status,
            transport: exchange.transport,
        };
        let recorded = self.children.with(exchange.route, key, |children| {
            children.record(exchange.seconds);
        });
        if !recorded {
            let children = self.resolve(exchange.route, key);
            children.record(exchange.seconds);
            self.children.insert(exchange.route, key, children);
        }
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

    fn resolve(&self, route: &str, key: ChildKey) -> Children {
        let method = key.method.as_str();
        let transport = key.transport.label();
        let status = key.status.to_string();
        Children {
            by_method: self.requests_by_method.with_label_values(&[method]),
            by_transport: self.requests_by_transport.with_label_values(&[transport]),
            by_route_transport_method: self
                .requests_by_route_transport_method
                .with_label_values(&[route, transport, method]),
            duration: self
                .request_duration_seconds
                .with_label_values(&[route, method]),
            by_status: self.responses_by_status.with_label_values(&[&status]),
            by_status_route_method: self
                .responses_by_status_route_method
                .with_label_values(&[&status, route, method]),
        }
    }
}

/// Plain HTTP, or HTTPS terminated by a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Http,
    Https,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Https => "https",
        }
    }
}

/// What, besides the route, selects the labelled children of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ChildKey {
    method: Method,
    status: u16,
    transport: Transport,
}

/// The labelled children one kind of request increments.
struct Children {
    by_method: IntCounter,
    by_transport: IntCounter,
    by_route_transport_method: IntCounter,
    duration: Histogram,
    by_status: IntCounter,
    by_status_route_method: IntCounter,
}

impl Children {
    fn record(&self, seconds: f64) {
        self.by_method.inc();
        self.by_transport.inc();
        self.by_route_transport_method.inc();
        self.duration.observe(seconds);
        self.by_status.inc();
        self.by_status_route_method.inc();
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Resolved children by route, then by (method, status, transport). Two levels so that a
/// lookup borrows the route as `&str` instead of building an owned key.
#[derive(Default)]
struct ChildCache {
    routes: RwLock<FastMap<Box<str>, FastMap<ChildKey, Children>>>,
}

impl ChildCache {
    /// Runs `f` on the cached children; whether they were cached.
    fn with(&self, route: &str, key: ChildKey, f: impl FnOnce(&Children)) -> bool {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        match routes.get(route).and_then(|by_key| by_key.get(&key)) {
            Some(children) => {
                f(children);
                true
            }
            None => false,
        }
    }

    fn insert(&self, route: &str, key: ChildKey, children: Children) {
        let mut routes = self
            .routes
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        routes
            .entry(route.into())
            .or_default()
            .entry(key)
            .or_insert(children);
    }
}

/// The seed's two custom families.
#[derive(Clone)]
pub struct ApiFamilies {
    pub requests_total: IntCounter,
    pub requests_blocked_total: IntCounterVec,
}

impl ApiFamilies {
    pub fn register(registry: &Registry) -> crate::prometheus::Result<Self> {
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
            requests_total: register(
                registry,
                IntCounter::new(
                    "api_requests_total",
                    "API requests received (blocked ones included; metrics scrapes not).",
                )?,
            )?,
            requests_blocked_total,
        })
    }

    pub fn blocked(&self, reason: BlockReason) {
        self.requests_blocked_total
            .with_label_values(&[reason.label()])
            .inc();
    }
}

/// `babylon_build_info{version,rustc,commit} 1`, the analogue of `python_info`.
pub fn register_build_info(registry: &Registry) -> crate::prometheus::Result<()> {
    let info = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "babylon_build_info",
                "Build of the running babylon binary; the value is always 1.",
            ),
            &["version", "rustc", "commit"],
        )?,
    )?;
    info.with_label_values(&[
        crate::build::VERSION,
        crate::build::RUSTC,
        crate::build::COMMIT,
    ])
    .set(1);
    Ok(())
}
