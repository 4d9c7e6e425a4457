//! The Rocket side of blocking: a request fairing that asks the policy (or, for the
//! metrics path, the metrics access check) and re-routes refused requests.
//!
//! Rocket 0.5 fairings cannot answer a request themselves, so a refused request is
//! rewritten to [`BLOCKED_PATH`], whose only route answers with the JSON error. The handler
//! the client asked for never runs: a blocked POST creates nothing.

use std::sync::Arc;
use std::time::Duration;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::uri::Origin;
use rocket::http::Method;
use rocket::{Build, Data, Orbit, Request, Rocket, Route};

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

    fn verdict(&self, request: &Request<'_>) -> Result<(), super::BlockReason> {
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
        if let Some((path, access)) = &self.metrics {
            if request.uri().path() == path.as_str() {
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

    pub fn routes() -> Vec<Route> {
        rocket::routes![blocked]
    }
}

#[rocket::async_trait]
impl Fairing for Gatekeeper {
    fn info(&self) -> Info {
        Info {
            name: "babylon request blocking",
            kind: Kind::Ignite | Kind::Liftoff | Kind::Request,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> rocket::fairing::Result {
        Ok(rocket.mount("/", Self::routes()))
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
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

    async fn on_request(&self, request: &mut Request<'_>, _: &mut Data<'_>) {
        if let Err(reason) = self.verdict(request) {
            RequestRecord::of(request).set_blocked(reason);
            request.set_method(Method::Get);
            request.set_uri(Origin::parse(BLOCKED_PATH).expect("valid constant path"));
        }
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
