//! The metrics route on the main port, which checks who may read metrics itself, with the
//! same [`MetricsAccess`] as the export listener.
//!
//! The check lives in the handler rather than in a fairing that compares the request's
//! path with `metrics.path`: the router sends many spellings of that path here
//! (`/%6Detrics`, `//metrics`, `/metrics/`, …), and whatever reaches the handler is
//! checked. A refusal is noted in the request's record, so `api_requests_blocked_total`
//! counts it and the HTTP families label it `<blocked>`.

use rocket::http::{Header, Method};
use rocket::route::{Handler, Outcome};
use rocket::{Data, Request, Route};

use super::MetricsAccess;
use crate::blocking::ClientAddr;
use crate::metrics::{Format, Metrics};
use crate::request::JsonError;
use crate::request::RequestRecord;

/// The route serving `metrics` at `path` to the clients `access` lets in.
pub(crate) fn route(
    path: &str,
    metrics: Metrics,
    access: MetricsAccess,
    clients: ClientAddr,
) -> Route {
    Route::new(
        Method::Get,
        path,
        MetricsHandler {
            metrics,
            access,
            clients,
        },
    )
}

#[derive(Clone)]
struct MetricsHandler {
    metrics: Metrics,
    access: MetricsAccess,
    /// Finds the client behind a trusted proxy, as the blocking policy does.
    clients: ClientAddr,
}

#[rocket::async_trait]
impl Handler for MetricsHandler {
    async fn handle<'r>(&self, request: &'r Request<'_>, _: Data<'r>) -> Outcome<'r> {
        let client = self.clients.of(request);
        let authorization = request.headers().get_one("Authorization");
        if let Err(reason) = self.access.check(client, authorization).await {
            RequestRecord::of(request).set_blocked(reason);
            return Outcome::from(request, JsonError::from(reason));
        }
        let accept = request.headers().get_one("Accept");
        let format = Format::negotiate(accept, request.uri().query().map(|query| query.as_str()));
        let body = self.metrics.render_as(format);
        Outcome::from(request, Negotiated { format, body })
    }
}

/// The exposition in the format the request asked for, with that format's exact
/// `Content-Type` (Prometheus picks its parser by it) and `Vary: Accept`.
struct Negotiated {
    format: Format,
    body: Vec<u8>,
}

impl<'r> rocket::response::Responder<'r, 'static> for Negotiated {
    fn respond_to(self, request: &'r Request<'_>) -> rocket::response::Result<'static> {
        let mut response = self.body.respond_to(request)?;
        response.set_header(Header::new("Content-Type", self.format.content_type()));
        response.set_header(Header::new("Vary", "Accept"));
        Ok(response)
    }
}
