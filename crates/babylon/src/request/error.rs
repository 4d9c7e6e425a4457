//! JSON errors: every error babylon answers has the body `{"error": {"status", "reason",
//! "message"}}`, whether a handler, a catcher or the blocking policy produced it.

use std::io::Cursor;

use rocket::http::{ContentType, Header, Status};
use rocket::response::{self, Responder, Response};
use rocket::serde::json::serde_json::json;
use rocket::Request;

use super::RequestRecord;

/// A JSON error response.
#[derive(Debug, Clone)]
pub struct JsonError {
    /// The HTTP status.
    pub status: Status,
    /// A stable, machine-readable word (`not_found`, `rate_limited`, `invalid_body` …).
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
    /// Field-level details (e.g. which fields of a body were invalid).
    pub details: Option<serde_json::Value>,
    /// Seconds for a `Retry-After` header, if the client should retry.
    pub retry_after_secs: Option<u64>,
}

impl JsonError {
    /// An error with a status, a stable reason word and a message.
    pub fn new(status: Status, reason: &'static str, message: impl Into<String>) -> Self {
        JsonError {
            status,
            reason,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    /// Tells the client, in a `Retry-After` header, to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Adds field-level details (`error.details`).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The JSON body. As the answer to a request it also names the request's id
    /// (`error.request_id`), when tracing is on.
    pub fn body(&self) -> String {
        self.body_of(None)
    }

    /// The body, naming the request it answers when its id is known.
    fn body_of(&self, request_id: Option<String>) -> String {
        let mut error = json!({
            "status": self.status.code,
            "reason": self.reason,
            "message": self.message,
        });
        if let Some(details) = &self.details {
            error["details"] = details.clone();
        }
        if let Some(request_id) = request_id {
            error["request_id"] = request_id.into();
        }
        json!({ "error": error }).to_string()
    }
}

impl<'r> Responder<'r, 'static> for JsonError {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        let record = RequestRecord::of(request);
        if self.status.code >= 500 {
            // A server-side failure of a handler: the metrics count it as an exception.
            record.set_exception(self.reason);
        }
        let body = self.body_of(record.trace().map(|trace| trace.request_id()));
        let mut response = Response::build();
        response
            .status(self.status)
            .header(ContentType::JSON)
            .sized_body(body.len(), Cursor::new(body));
        if let Some(secs) = self.retry_after_secs {
            response.header(Header::new("Retry-After", secs.to_string()));
        }
        response.ok()
    }
}

/// A response that is not a [`JsonError`] but still reports a server-side failure, so the
/// metrics count it as an exception of the given type.
pub(crate) struct Recorded<R> {
    pub exception: Option<&'static str>,
    pub response: R,
}

impl<'r, 'o: 'r, R: Responder<'r, 'o>> Responder<'r, 'o> for Recorded<R> {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'o> {
        if let Some(kind) = self.exception {
            RequestRecord::of(request).set_exception(kind);
        }
        self.response.respond_to(request)
    }
}
