//! The HTTP observer: records every request from arrival to response.
//!
//! It is driven by [`crate::pipeline::RequestPipeline`], which shows it each request as it
//! arrived (method and time), before the gatekeeper may re-route a refused request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use rocket::http::Method;
use rocket::tokio::io::{AsyncRead, ReadBuf};
use rocket::{Request, Response};

use super::families::{
    route_of, ApiFamilies, Exchange, HttpFamilies, Transport, BLOCKED_ROUTE, UNMATCHED_ROUTE,
};
use crate::blocking::ClientAddr;
use crate::metrics::sharded::HistogramFamily;
use crate::metrics::ExemplarSource;
use crate::request::{Arrival, RequestRecord};
use crate::routing::{self, RoutedPath};
use crate::settings::MetricsSettings;
use crate::trace::TraceContext;

pub(crate) struct HttpObserver {
    http: HttpFamilies,
    api: ApiFamilies,
    /// Decides whether an `X-Forwarded-Proto` header is believed.
    clients: ClientAddr,
    /// The metrics path, whose requests are not observed unless scrapes count.
    skip_exact: Option<RoutedPath>,
    /// `metrics.exclude_paths`.
    skip_prefixes: Vec<String>,
}

impl HttpObserver {
    pub(crate) fn new(
        http: HttpFamilies,
        api: ApiFamilies,
        clients: ClientAddr,
        settings: &MetricsSettings,
    ) -> Self {
        HttpObserver {
            http,
            api,
            clients,
            skip_exact: (!settings.count_scrapes).then(|| RoutedPath::new(settings.path.as_str())),
            skip_prefixes: settings.exclude_paths.clone(),
        }
    }

    /// `https` when a trusted proxy says it terminated TLS; babylon itself serves plain HTTP.
    fn transport(&self, request: &Request<'_>) -> Transport {
        let via_trusted_proxy = request
            .remote()
            .is_some_and(|peer| self.clients.is_trusted_proxy(peer.ip()));
        // The header is only looked up (a map lookup) when a trusted proxy sent it.
        let forwarded_https = || {
            request
                .headers()
                .get_one("X-Forwarded-Proto")
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
        };
        if via_trusted_proxy && forwarded_https() {
            Transport::Https
        } else {
            Transport::Http
        }
    }

    /// Whether `request` is recorded. Decided on the path as the router matches it (the
    /// decoded, non-empty segments), so `/%6Detrics` or `//metrics` is the scrape that
    /// `/metrics` is, not another request.
    pub(crate) fn observes(&self, request: &Request<'_>) -> bool {
        let is_scrape = self
            .skip_exact
            .as_ref()
            .is_some_and(|path| path.matches(request));
        !is_scrape
            && !self
                .skip_prefixes
                .iter()
                .any(|prefix| routing::starts_with(request, prefix))
    }

    /// Counts a request whose record the pipeline started with `arrival`.
    pub(crate) fn arrived(&self, arrival: &Arrival, trace: Option<&TraceContext>) {
        let exemplar = trace.map(|trace| ExemplarSource::new(trace, arrival.started));
        self.api.requests_total.inc_with(exemplar.as_ref());
        self.http.requests_in_flight.inc();
    }

    /// Records a request's response into every HTTP family.
    pub(crate) async fn finish<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        let record = RequestRecord::of(request);
        if let Some(reason) = record.blocked() {
            // Counted even for unobserved paths: a refused scrape is still a refusal.
            self.api.blocked(reason);
        }
        let Some(arrival) = record.arrival().filter(|arrival| arrival.observed) else {
            return;
        };
        let http = &self.http;
        http.requests_in_flight.dec();

        let route = route_of(request, record);
        let status = response.status().code;
        let exception = (status >= 500 && route != UNMATCHED_ROUTE && route != BLOCKED_ROUTE)
            .then(|| record.exception().unwrap_or("server_error"));
        let response_body_bytes = if arrival.method == Method::Head {
            Some(0)
        } else {
            match response.body_mut().size().await {
                Some(size) => Some(size as u64),
                None => {
                    count_streamed_body(response, http.response_body_bytes.clone());
                    None
                }
            }
        };
        let now = Instant::now();
        http.observe(&Exchange {
            route,
            method: arrival.method,
            transport: self.transport(request),
            status,
            seconds: now.saturating_duration_since(arrival.started).as_secs_f64(),
            request_body_bytes: record.body_bytes_read(),
            response_body_bytes,
            exception,
            exemplar: record.trace().map(|trace| ExemplarSource::new(trace, now)),
        });
    }
}

/// Replaces a streamed body by one that counts what is actually sent and observes the
/// count when the stream is dropped (finished, or abandoned by the client).
fn count_streamed_body(response: &mut Response<'_>, histogram: HistogramFamily) {
    let inner = response.body_mut().take();
    response.set_streamed_body(CountingBody {
        inner,
        sent: 0,
        histogram,
    });
}

struct CountingBody<B> {
    inner: B,
    sent: u64,
    histogram: HistogramFamily,
}

impl<B: AsyncRead + Unpin> AsyncRead for CountingBody<B> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.sent += (buf.filled().len() - before) as u64;
        poll
    }
}

impl<B> Drop for CountingBody<B> {
    fn drop(&mut self) {
        self.histogram.observe(self.sent as f64);
    }
}
