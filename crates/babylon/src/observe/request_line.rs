//! The log line each request gets (`logging.requests`), written when its response is ready.
//!
//! It names the route template, never the path or the query: those can carry tokens,
//! and the template is what the metrics are labelled with, so a line and a series are
//! found by the same words. The client is the address the blocking policy judges (behind
//! `blocking.trusted_proxies`, the forwarded one).

use std::time::Instant;

use rocket::Request;

use super::families::route_of;
use crate::blocking::ClientAddr;
use crate::logging::REQUEST_TARGET;
use crate::request::RequestRecord;

pub(crate) struct RequestLines {
    clients: ClientAddr,
}

impl RequestLines {
    pub(crate) fn new(clients: ClientAddr) -> Self {
        RequestLines { clients }
    }

    /// Writes the line of `request`, answered with `status`.
    pub(crate) fn write(&self, request: &Request<'_>, status: u16) {
        let record = RequestRecord::of(request);
        let Some(arrival) = record.arrival() else {
            return;
        };
        let seconds = Instant::now()
            .saturating_duration_since(arrival.started)
            .as_secs_f64();
        let trace = record.trace();
        tracing::info!(
            target: REQUEST_TARGET,
            method = arrival.method.as_str(),
            route = route_of(request, record),
            status,
            duration_seconds = seconds,
            client = self.clients.of(request).map(tracing::field::display),
            blocked = record.blocked().map(|reason| reason.label()),
            trace_id = trace.map(|trace| tracing::field::display(trace.trace_id())),
            request_id = trace.map(|trace| tracing::field::display(trace.span_id())),
        );
    }
}
