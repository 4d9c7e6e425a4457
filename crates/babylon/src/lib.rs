#![doc = include_str!("../README.md")]
//!
//! # Public surface
//!
//! - [`Babylon`] and [`StartError`]: set up from the settings and attached to a Rocket,
//!   and why that could fail;
//! - [`settings`]: the validated settings and how they are read ([`settings::figment`],
//!   [`settings::figment_from`]);
//! - [`metrics`]: the registry handle [`Metrics`](metrics::Metrics), managed as Rocket
//!   state; typed families for application code ([`Families`](metrics::Families) and
//!   its derives), and families by name ([`custom`](metrics::Metrics::custom));
//! - [`prometheus`]: the crate those families are built from;
//! - [`db`]: the database under `databases.main`, for handlers of application routes,
//!   and the model families of their writes;
//! - [`cache`]: read caches for application resources, in this process or in Redis;
//! - [`JsonError`]: the JSON error body every error answer has; database and
//!   custom-metric errors convert into it with `?`;
//! - [`JsonBody`] and [`FieldErrors`]: the JSON body guard that names the field it
//!   refuses, and field validation that refuses with one 422;
//! - [`instrument`]: counts panics of application routes as `type="panic"`;
//! - [`logging`]: every log line in one format, for a `main` to start;
//! - [`trace`] and [`otlp`]: a request's trace context, and spans of a handler's own work
//!   ([`Tracer`](otlp::Tracer)) exported with the request's;
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

// The derives of `metrics` name `::babylon`, also inside this crate's own tests.
extern crate self as babylon;

mod api;
mod app;
mod blocking;
pub mod build;
pub mod cache;
pub mod db;
mod export;
pub mod limits;
pub mod logging;
pub mod memory;
pub mod metrics;
mod observe;
pub mod otlp;
mod pipeline;
mod redis_client;
mod request;
mod routing;
pub mod settings;
pub mod trace;

pub use api::{FieldErrors, JsonBody};
pub use app::{Babylon, StartError};
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
    pub use crate::metrics::sharded::{Recording, ShardedHistogram};
    pub use crate::observe::bench::*;
}
