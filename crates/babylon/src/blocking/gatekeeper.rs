//! The Rocket side of blocking: the gatekeeper asks the policy about each request and
//! re-routes refused ones. It is driven by [`crate::pipeline::RequestPipeline`]. Scrapes of
//! the main port's metrics route are left to that route, which checks the metrics
//! allow-list and token itself; which requests are scrapes is decided on the path as the
//! router matches it ([`crate::routing`]), never on the raw string.
//!
//! Rocket 0.5 fairings cannot answer a request themselves, so a refused request is
//! rewritten to [`BLOCKED_PATH`], whose only route answers with the JSON error. The handler
//! the client asked for never runs: a blocked POST creates nothing.

use std::sync::Arc;
use std::time::Duration;

use rocket::http::uri::Origin;
use rocket::http::Method;
use rocket::{Orbit, Request, Rocket, Route};

use super::{ClientAddr, Policy, Screening};
use crate::request::JsonError;
use crate::request::RequestRecord;
use crate::routing::RoutedPath;

/// Where refused requests are sent. Requests for it that were not refused get a 404.
pub(crate) const BLOCKED_PATH: &str = "/__babylon/blocked";

/// How often the rate limiter forgets clients that have been quiet long enough.
const FORGET_IDLE_CLIENTS_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Gatekeeper {
    clients: ClientAddr,
    policy: Option<Arc<Policy>>,
    /// The metrics path, when this port serves metrics: its requests are the metrics
    /// route's to judge.
    scrapes: Option<RoutedPath>,
    /// The liveness and readiness paths: rate limited in this process only, so that no
    /// Redis outage can fail a probe (or make it wait).
    probes: Vec<RoutedPath>,
}

impl Gatekeeper {
    pub(crate) fn new(
        clients: ClientAddr,
        policy: Option<Arc<Policy>>,
        scrapes: Option<RoutedPath>,
        probes: Vec<RoutedPath>,
    ) -> Self {
        Gatekeeper {
            clients,
            policy,
            scrapes,
            probes,
        }
    }

    /// Whether the gatekeeper has nothing to check (blocking is off): the pipeline then
    /// skips it entirely.
    pub(crate) fn is_idle(&self) -> bool {
        self.policy.is_none()
    }

    /// Whether `request` may pass, and if not, why.
    pub(crate) fn verdict(&self, request: &Request<'_>) -> Screening<'_> {
        let Some(policy) = &self.policy else {
            return Screening::decided(Ok(()));
        };
        if self.is_scrape(request) {
            return Screening::decided(Ok(()));
        }
        // Only a limit in Redis could make a probe wait or fail; otherwise probes are
        // ordinary requests, and nothing is spent finding them.
        let probe = policy.shares_its_rate_limit()
            && matches!(request.method(), Method::Get | Method::Head)
            && self.probes.iter().any(|path| path.matches(request));
        match self.clients.of(request) {
            Some(client) if probe => policy.check_in_process(client),
            Some(client) => policy.check(client),
            // Without a peer address (only Rocket's local test client) there is nothing to
            // key a deny list or rate limit on.
            None => Screening::decided(Ok(())),
        }
    }

    /// Whether the metrics route answers `request`: a GET or HEAD of the metrics path,
    /// which no other route serves (start-up refuses a `metrics.path` that an
    /// application route matches). Any other method there is an ordinary request.
    fn is_scrape(&self, request: &Request<'_>) -> bool {
        matches!(request.method(), Method::Get | Method::Head)
            && self
                .scrapes
                .as_ref()
                .is_some_and(|path| path.matches(request))
    }

    /// The route that answers refused requests; mount it at `/`.
    pub(crate) fn routes() -> Vec<Route> {
        rocket::routes![blocked]
    }

    /// Starts forgetting idle rate-limit clients every minute until shutdown.
    pub(crate) fn start_forgetting_idle_clients(&self, rocket: &Rocket<Orbit>) {
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
    pub(crate) fn refuse(&self, request: &mut Request<'_>, reason: crate::request::BlockReason) {
        RequestRecord::of(request).set_blocked(reason);
        request.set_method(Method::Get);
        request.set_uri(Origin::parse(BLOCKED_PATH).expect("valid constant path"));
    }
}

/// Answers a refused request; a direct request for this path was not refused and gets 404.
#[rocket::get("/__babylon/blocked")]
fn blocked(request_record: BlockedRecord) -> JsonError {
    JsonError::from(request_record.0)
}

struct BlockedRecord(crate::request::BlockReason);

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
