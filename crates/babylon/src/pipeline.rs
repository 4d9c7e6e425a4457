//! The one request fairing: each request gets its trace context, the HTTP observer sees
//! it as it arrived, then the gatekeeper screens it; at the response, the observer records
//! it, the answer gets the request's `traceparent` and `X-Request-Id`, and the request its
//! log line and, with `tracing.otlp.endpoint`, its span.
//!
//! One fairing rather than one per concern, for two reasons:
//! - the order is a property of this type, not of `attach` calls: a refused request is
//!   re-routed, so an observer that ran after the gatekeeper would record the rewritten
//!   method and miss the arrival time;
//! - Rocket boxes every fairing callback's future, so each request pays one allocation
//!   per hook instead of one per fairing and hook (measured in BENCHMARKS.md).

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Build, Data, Orbit, Request, Response, Rocket};

use crate::blocking::{ClientAddr, Gatekeeper};
use crate::observe::{route_template, HttpObserver, RequestLines};
use crate::otlp::{RequestSpan, Spans};
use crate::request::{Arrival, RequestRecord};
use crate::settings::TraceparentSenders;
use crate::trace::TraceContext;

pub(crate) struct RequestPipeline {
    /// `None` when metrics are off.
    observer: Option<HttpObserver>,
    /// `None` when tracing is off; with metrics off too, the fairing asks for no response
    /// callback at all.
    tracing: Option<Tracing>,
    /// `None` when request lines are off (`logging.requests`, `log_level = "off"`).
    lines: Option<RequestLines>,
    gatekeeper: Gatekeeper,
}

/// Gives each request its trace context (`tracing.*`).
pub(crate) struct Tracing {
    senders: TraceparentSenders,
    /// Which peers are trusted proxies, for `continue_traceparent_from = "trusted_proxies"`.
    clients: ClientAddr,
    /// `tracing.response_headers`.
    response_headers: bool,
    /// `tracing.otlp.*`: where each request's span goes, if anywhere.
    spans: Option<Spans>,
}

impl Tracing {
    pub(crate) fn new(
        senders: TraceparentSenders,
        clients: ClientAddr,
        response_headers: bool,
        spans: Option<Spans>,
    ) -> Self {
        Tracing {
            senders,
            clients,
            response_headers,
            spans,
        }
    }

    /// Sends the span of `request`, answered with `status`, if spans are exported.
    fn export_span(&self, request: &Request<'_>, status: u16) {
        let Some(spans) = &self.spans else {
            return;
        };
        let record = RequestRecord::of(request);
        let (Some(trace), Some(arrival)) = (record.trace(), record.arrival()) else {
            return;
        };
        spans.request(
            trace,
            arrival.started,
            std::time::Instant::now(),
            RequestSpan {
                method: arrival.method,
                route: route_template(request, record),
                status,
                client: self.clients.of(request),
                blocked: record.blocked().map(|reason| reason.label()),
            },
        );
    }

    /// The context of `request`: its `traceparent` continued if its sender may set one.
    fn context_of(&self, request: &Request<'_>) -> TraceContext {
        let may_continue = match self.senders {
            TraceparentSenders::Anyone => true,
            TraceparentSenders::TrustedProxies => request
                .remote()
                .is_some_and(|peer| self.clients.is_trusted_proxy(peer.ip())),
        };
        TraceContext::start(request.headers().get("traceparent"), may_continue)
    }
}

impl RequestPipeline {
    pub(crate) fn new(
        observer: Option<HttpObserver>,
        tracing: Option<Tracing>,
        lines: Option<RequestLines>,
        gatekeeper: Gatekeeper,
    ) -> Self {
        RequestPipeline {
            observer,
            tracing,
            lines,
            gatekeeper,
        }
    }

    fn exports_spans(&self) -> bool {
        self.tracing.as_ref().is_some_and(|t| t.spans.is_some())
    }
}

#[rocket::async_trait]
impl Fairing for RequestPipeline {
    fn info(&self) -> Info {
        let mut kind = Kind::Ignite | Kind::Liftoff;
        let headers = self.tracing.as_ref().is_some_and(|t| t.response_headers);
        let sees_responses =
            self.observer.is_some() || self.lines.is_some() || headers || self.exports_spans();
        if sees_responses || self.tracing.is_some() || !self.gatekeeper.is_idle() {
            kind = kind | Kind::Request;
        }
        if sees_responses {
            kind = kind | Kind::Response;
        }
        Info {
            name: "babylon request pipeline (tracing, metrics, request lines, blocking)",
            kind,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> rocket::fairing::Result {
        Ok(rocket.mount("/", Gatekeeper::routes()))
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        self.gatekeeper.start_forgetting_idle_clients(rocket);
    }

    async fn on_request(&self, request: &mut Request<'_>, _: &mut Data<'_>) {
        let trace = self
            .tracing
            .as_ref()
            .map(|tracing| tracing.context_of(request));
        let observed = self
            .observer
            .as_ref()
            .is_some_and(|observer| observer.observes(request));
        let arrival = (observed || self.lines.is_some() || self.exports_spans()).then(|| Arrival {
            started: std::time::Instant::now(),
            method: request.method(),
            observed,
        });
        // The pipeline runs first, so the record it starts is the request's only one; a
        // record some layer made before would leave the request unobserved.
        let started =
            (arrival.is_some() || trace.is_some()) && RequestRecord::start(request, arrival, trace);
        if let (true, Some(observer), Some(arrival)) =
            (started && observed, &self.observer, arrival)
        {
            observer.arrived(&arrival, trace.as_ref());
        }
        // Redis commands of the rate limit are the request's, for their exemplars.
        let verdict = crate::trace::within(trace, self.gatekeeper.verdict(request)).await;
        if let Err(reason) = verdict {
            self.gatekeeper.refuse(request, reason);
        }
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        if self
            .tracing
            .as_ref()
            .is_some_and(|tracing| tracing.response_headers)
        {
            if let Some(trace) = RequestRecord::of(request).trace() {
                response.set_header(Header::new("traceparent", trace.traceparent()));
                response.set_header(Header::new("X-Request-Id", trace.request_id()));
            }
        }
        if let Some(observer) = &self.observer {
            observer.finish(request, response).await;
        }
        if let Some(lines) = &self.lines {
            lines.write(request, response.status().code);
        }
        if let Some(tracing) = &self.tracing {
            tracing.export_span(request, response.status().code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::{ClientAddr, Policy};
    use crate::metrics::Metrics;
    use crate::observe::{ApiFamilies, HttpFamilies};
    use crate::settings::{BlockingSettings, MetricsSettings};

    fn observer() -> HttpObserver {
        let settings = MetricsSettings::default();
        let metrics = Metrics::new(&settings).unwrap();
        let http = HttpFamilies::register(metrics.registry(), &settings, true).unwrap();
        let api = ApiFamilies::register(metrics.registry(), true).unwrap();
        HttpObserver::new(http, api, ClientAddr::default(), &settings)
    }

    fn gatekeeper(blocking: bool) -> Gatekeeper {
        let policy =
            blocking.then(|| std::sync::Arc::new(Policy::new(&BlockingSettings::default(), None)));
        Gatekeeper::new(ClientAddr::default(), policy, None, Vec::new())
    }

    fn kind(pipeline: RequestPipeline) -> Kind {
        pipeline.info().kind
    }

    #[test]
    fn with_everything_off_rocket_calls_no_babylon_code_per_request() {
        let kind = kind(RequestPipeline::new(None, None, None, gatekeeper(false)));
        assert!(!kind.is(Kind::Request) && !kind.is(Kind::Response));
        assert!(kind.is(Kind::Ignite), "the blocked route is still mounted");
    }

    #[test]
    fn blocking_alone_screens_requests_but_records_no_responses() {
        let kind = kind(RequestPipeline::new(None, None, None, gatekeeper(true)));
        assert!(kind.is(Kind::Request) && !kind.is(Kind::Response));
    }

    #[test]
    fn metrics_observe_both_ends_of_a_request() {
        for blocking in [false, true] {
            let kind = kind(RequestPipeline::new(
                Some(observer()),
                None,
                None,
                gatekeeper(blocking),
            ));
            assert!(kind.is(Kind::Request) && kind.is(Kind::Response));
        }
    }

    #[test]
    fn request_lines_alone_see_both_ends_of_a_request() {
        let lines = RequestLines::new(ClientAddr::default());
        let kind = kind(RequestPipeline::new(
            None,
            None,
            Some(lines),
            gatekeeper(false),
        ));
        assert!(kind.is(Kind::Request) && kind.is(Kind::Response));
    }

    #[test]
    fn tracing_alone_sees_both_ends_of_a_request() {
        let tracing = Tracing::new(
            TraceparentSenders::TrustedProxies,
            ClientAddr::default(),
            true,
            None,
        );
        let kind = kind(RequestPipeline::new(
            None,
            Some(tracing),
            None,
            gatekeeper(false),
        ));
        assert!(kind.is(Kind::Request) && kind.is(Kind::Response));
    }
}
