//! Request blocking: a policy decides, before any handler runs, whether a request may pass.
//!
//! - [`client`] finds the client's address (believing proxy headers only from trusted peers),
//! - [`policy`] holds the deny list and the per-client rate limit and gives a verdict,
//! - [`gatekeeper`] applies verdicts to Rocket requests: a refused request is re-routed to a
//!   handler that answers with a JSON error, so the handler it asked for never runs.
//!
//! Who may read metrics is not decided here but where metrics are served
//! ([`crate::metrics::MetricsAccess`], checked by the metrics route and the export
//! listener), so that every spelling of the path the router sends there is checked.
//!
//! Every refusal carries a [`BlockReason`](crate::request::BlockReason), the `reason` label of
//! `api_requests_blocked_total`.

pub(crate) mod client;
pub(crate) mod gatekeeper;
mod metrics;
pub(crate) mod policy;
pub(crate) mod rate_limit;

pub use client::ClientAddr;
pub(crate) use gatekeeper::Gatekeeper;
pub(crate) use metrics::RateLimitCollector;
pub(crate) use policy::Policy;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::request::BlockReason;

/// The verdict on a request, as a future: ready at once when this process decides alone,
/// or a Redis round trip when the rate limit is shared.
///
/// The round trip is boxed, so the in-process path, which every request of the default
/// configuration takes, carries no Redis future in the request fairing's state (measured:
/// inline, that state cost the trivial route about 300 instructions).
pub(crate) enum Screening<'a> {
    /// Decided without waiting; `None` once taken.
    Decided(Option<Result<(), BlockReason>>),
    /// Decided by the shared Redis.
    Pending(Pin<Box<dyn Future<Output = Result<(), BlockReason>> + Send + 'a>>),
}

impl Screening<'_> {
    pub(crate) fn decided(verdict: Result<(), BlockReason>) -> Self {
        Screening::Decided(Some(verdict))
    }
}

impl Future for Screening<'_> {
    type Output = Result<(), BlockReason>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Screening::Decided(verdict) => Poll::Ready(
                verdict
                    .take()
                    .expect("a screening is not polled after it ended"),
            ),
            Screening::Pending(future) => future.as_mut().poll(context),
        }
    }
}
