//! babylon: a Rocket web backend whose Prometheus metrics are part of the product.
//!
//! [`App`] reads and validates the settings; [`App::rocket`] builds the Rocket that the
//! `babylon` binary launches and that tests drive with Rocket's local client:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = babylon::App::from_env()?;
//! let rocket = app.rocket()?;
//! rocket.launch().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Public surface
//!
//! - [`App`] and [`StartError`]: the service, and why it could not start;
//! - [`settings`]: the validated settings and how they are read ([`settings::figment`],
//!   [`settings::figment_from`]);
//! - [`metrics`]: the registry handle [`Metrics`](metrics::Metrics), managed as Rocket
//!   state, and its [`custom`](metrics::Metrics::custom) families for application code;
//! - [`prometheus`]: the crate those families are built from;
//! - [`db`]: the database under `databases.main`, for handlers of application routes;
//! - [`JsonError`]: the JSON error body every error answer has; database errors convert
//!   into it with `?`;
//! - [`instrument`]: counts panics of application routes as `type="panic"`;
//! - [`memory`] and [`limits`]: process set-up for a `main` (allocator, open files);
//! - [`build`]: the version, commit and compiler of this build.
//!
//! Everything else is internal. The modules depend on one another in one direction,
//! from the leaves (`settings`, `build`, `routing`) through the metrics core, the request
//! context and the subsystems (`blocking`, `db`, `cache`, `observe`, `export`) to the
//! HTTP API and the composition root (`app`); `tests/architecture.rs` fails when an
//! import points the other way. `docs/architecture.md` draws the map.

#![deny(missing_docs)]
#![deny(unreachable_pub)]
#![forbid(unsafe_code)]

mod api;
mod app;
mod blocking;
pub mod build;
mod cache;
pub mod db;
mod export;
pub mod limits;
pub mod memory;
pub mod metrics;
mod observe;
mod pipeline;
mod redis_client;
mod request;
mod routing;
pub mod settings;

pub use app::{App, StartError};
pub use observe::instrument;
pub use request::JsonError;

/// The `prometheus` crate our registry is built on, so that application code registering
/// custom families uses the very same version.
pub use prometheus;

/// Not part of the API: internal types that babylon's own benchmarks and property tests
/// reach. They may change in any release.
#[doc(hidden)]
pub mod __internal {
    pub use crate::blocking::ClientAddr;
    pub use crate::export::MetricsAccess;
    pub use crate::metrics::sharded::ShardedHistogram;
    pub use crate::observe::bench::*;
}
