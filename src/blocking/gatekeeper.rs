//! The Rocket side of blocking: the gatekeeper asks the policy (or, for the metrics path,
//! the metrics access check) about each request and re-routes refused ones. It is driven
//! by [`crate::pipeline::RequestPipeline`].
//!
//! Rocket 0.5 fairings cannot answer a request themselves, so a refused request is
//! rewritten to [`BLOCKED_PATH`], whose only route answers with the JSON error. The handler
//! the client asked for never runs: a blocked POST creates nothing.

use std::sync::Arc;
use std::time::Duration;

use rocket::http::uri::Origin;
use rocket::http::Method;
use rocket::{Orbit, Request, Rocket, Route};

use super::{ClientAddr, Policy};
use crate::api::error::JsonError;
use crate::metrics::MetricsAccess;
use crate::request_record::RequestRecord;

/// Where refused requests are sent. Requests for it that were not refused get a 404.
pub const BLOCKED_PATH: &str = "/__babylon/blocked";

/// How often the rate limiter forgets clients that have been quiet long enough.
const FORGET_IDLE_CLIENTS_EVERY: Duration = Duration::from_secs(60);

pub struct Gatekeeper {
    clients: ClientAddr,
    policy: Option<Arc<Policy>>,
    /// The metrics path on this port and who may read it, when the main port serves it.
    metrics: Option<(String, MetricsAccess)>,
}

impl Gatekeeper {
    pub fn new(
        clients: ClientAddr,
        policy: Option<Policy>,
        metrics: Option<(String, MetricsAccess)>,
    ) -> Self {
        Gatekeeper {
            clients,
            policy: policy.map(Arc::new),
            metrics,
        }
    }

    /// Whether the gatekeeper has nothing to check: no policy and no metrics path to guard.
    /// The pipeline then skips it entirely.
    pub fn is_idle(&self) -> bool {
        self.policy.is_none() && self.metrics.is_none()
    }

    /// Whether `request`, whose path is `path`, may pass, and if not, why.
    pub fn verdict(&self, request: &Request<'_>, path: &str) -> Result<(), super::BlockReason> {
        if self.is_idle() {
            return Ok(());
        }
        let client = request.remote().map(|peer| {
            // Headers are only read (a map lookup each) when the peer is a trusted proxy.
            if !self.clients.is_trusted_proxy(peer.ip()) {
                return crate::config::canonical_ip(peer.ip());
            }
            self.clients.resolve(
                peer.ip(),
                request.headers().get("X-Forwarded-For"),
                request.headers().get_one("X-Real-IP"),
            )
        });
        if let Some((metrics_path, access)) = &self.metrics {
            if path == metrics_path.as_str() {
                let authorization = request.headers().get_one("Authorization");
                return access.check(client, authorization);
            }
        }
        match (&self.policy, client) {
            (Some(policy), Some(client)) => policy.check(client),
            // Without a peer address (only Rocket's local test client) there is nothing to
            // key a deny list or rate limit on.
            _ => Ok(()),
        }
    }

    /// The route that answers refused requests; mount it at `/`.
    pub fn routes() -> Vec<Route> {
        rocket::routes![blocked]
    }

    /// Starts forgetting idle rate-limit clients every minute until shutdown.
    pub fn start_forgetting_idle_clients(&self, rocket: &Rocket<Orbit>) {
        let Some(policy) = self.policy.clone() else {
            return;
        };
        let mut shutdown = rocket.shutdown();
        rocket::tokio::spawn(async move {
            let mut every = rocket::tokio::time::interval(FORGET_IDLE_CLIENTS_EVERY);
            loop {
                rocket::tokio::select! {
                    _ = every.tick() => policy.forget_idle_clients(),
                    _ = &mut shutdown => break,
                }
            }
        });
    }

    /// Re-routes a refused request to [`BLOCKED_PATH`], noting the reason in its record.
    pub fn refuse(&self, request: &mut Request<'_>, reason: super::BlockReason) {
        RequestRecord::of(request).set_blocked(reason);
        request.set_method(Method::Get);
        request.set_uri(Origin::parse(BLOCKED_PATH).expect("valid constant path"));
    }
}

/// Answers a refused request; a direct request for this path was not refused and gets 404.
#[rocket::get("/__babylon/blocked")]
fn blocked(request_record: BlockedRecord) -> JsonError {
    let reason = request_record.0;
    let mut error = JsonError::new(reason.status(), reason.label(), reason.message());
    error.retry_after_secs = reason.retry_after_secs();
    error
}

struct BlockedRecord(super::BlockReason);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for BlockedRecord {
    type Error = ();

    async fn from_request(request: &'r Request<'_>) -> rocket::request::Outcome<Self, ()> {
        match RequestRecord::of(request).blocked() {
            Some(reason) => rocket::request::Outcome::Success(BlockedRecord(reason)),
            None => rocket::request::Outcome::Forward(rocket::http::Status::NotFound),
        }
    }
}
