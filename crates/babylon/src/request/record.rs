//! What the layers of a request learn about it, for the HTTP observer to read at the end.
//!
//! Rocket gives each request a typed local cache; this record lives there. The HTTP
//! observer creates it with the arrival; the other fields are set once (`OnceLock`) by
//! whichever layer knows the fact: the gatekeeper when it refuses, a handler wrapper when a
//! handler panics, the JSON body guard when it reads the body.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use rocket::http::{Method, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::Request;

use super::BlockReason;
use super::JsonError;
use crate::otlp::{SpanSink, Tracer};
use crate::trace::{NoTraceContext, TraceContext};

#[derive(Default)]
pub(crate) struct RequestRecord {
    /// Set when the pipeline starts the record, if the request is observed or logged: a
    /// plain field, because the record is created right then (a `OnceLock` costs a
    /// synchronised write per request).
    arrival: Option<Arrival>,
    /// Set with the record, when tracing is on: the request's trace, span and id.
    trace: Option<TraceContext>,
    blocked: OnceLock<BlockReason>,
    exception: OnceLock<&'static str>,
    body_bytes_read: AtomicU64,
    rejection: OnceLock<JsonError>,
}

/// The request as it arrived, before the gatekeeper may have rewritten it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub started: Instant,
    pub method: Method,
    /// Whether the HTTP families record it (metrics on, path not excluded); an arrival
    /// that is not observed is kept for the request line alone.
    pub observed: bool,
}

impl RequestRecord {
    /// The request's record, created empty if no layer has made it yet.
    pub(crate) fn of<'r>(request: &'r Request<'_>) -> &'r RequestRecord {
        request.local_cache(RequestRecord::default)
    }

    /// Creates the record of a request that has just arrived, with its arrival when it is
    /// observed and its trace context when tracing is on; whether it did. The pipeline
    /// sees each request first, so no record exists yet; if one did, the caller must
    /// leave the request unobserved (its response would find no arrival to measure from).
    #[must_use]
    pub(crate) fn start(
        request: &Request<'_>,
        arrival: Option<Arrival>,
        trace: Option<TraceContext>,
    ) -> bool {
        let mut created = false;
        request.local_cache(|| {
            created = true;
            RequestRecord {
                arrival,
                trace,
                ..RequestRecord::default()
            }
        });
        created
    }

    /// The request's trace context, when tracing is on.
    pub(crate) fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    pub(crate) fn arrival(&self) -> Option<Arrival> {
        self.arrival
    }

    pub(crate) fn set_blocked(&self, reason: BlockReason) {
        let _ = self.blocked.set(reason);
    }

    pub(crate) fn blocked(&self) -> Option<BlockReason> {
        self.blocked.get().copied()
    }

    /// Records why the handler failed; the first cause wins.
    pub(crate) fn set_exception(&self, kind: &'static str) {
        let _ = self.exception.set(kind);
    }

    pub(crate) fn exception(&self) -> Option<&'static str> {
        self.exception.get().copied()
    }

    pub(crate) fn add_body_bytes_read(&self, bytes: u64) {
        self.body_bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn body_bytes_read(&self) -> u64 {
        self.body_bytes_read.load(Ordering::Relaxed)
    }

    /// A data guard's refusal, kept for the catcher that answers the request (Rocket 0.5
    /// catchers cannot see a guard's error value otherwise).
    pub(crate) fn set_rejection(&self, error: JsonError) {
        let _ = self.rejection.set(error);
    }

    pub(crate) fn rejection(&self) -> Option<&JsonError> {
        self.rejection.get()
    }
}

/// A handler's own trace context: `trace: TraceContext` (or `Option<TraceContext>` where
/// `tracing.enabled` may be false) among its parameters, for a log line of its own or a
/// call made on the request's behalf (`traceparent`).
#[rocket::async_trait]
impl<'r> FromRequest<'r> for TraceContext {
    type Error = NoTraceContext;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, NoTraceContext> {
        match RequestRecord::of(request).trace() {
            Some(trace) => Outcome::Success(*trace),
            None => Outcome::Error((Status::InternalServerError, NoTraceContext)),
        }
    }
}

/// The tracer of a handler's own spans: `tracer: Tracer` among its parameters.
#[rocket::async_trait]
impl<'r> FromRequest<'r> for Tracer {
    type Error = std::convert::Infallible;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(Tracer::new(
            request.rocket().state::<SpanSink>(),
            RequestRecord::of(request).trace().copied(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocket::local::blocking::Client;

    #[test]
    fn a_request_is_started_once() {
        let client = Client::untracked(rocket::build()).unwrap();
        let request = client.post("/items");
        let arrival = Arrival {
            started: Instant::now(),
            method: Method::Post,
            observed: true,
        };
        assert!(RequestRecord::of(request.inner()).arrival().is_none());
        let fresh = client.post("/items");
        assert!(RequestRecord::start(fresh.inner(), Some(arrival), None));
        assert!(
            !RequestRecord::start(fresh.inner(), Some(arrival), None),
            "a second start must report that the request is already recorded"
        );
        let recorded = RequestRecord::of(fresh.inner()).arrival().unwrap();
        assert_eq!(recorded.method, Method::Post);
        assert_eq!(recorded.started, arrival.started);
        assert!(
            !RequestRecord::start(request.inner(), Some(arrival), None),
            "a record made by another layer first leaves the request unobserved"
        );
    }
}
