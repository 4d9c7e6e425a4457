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
