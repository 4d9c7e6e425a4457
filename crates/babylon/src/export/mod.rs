//! Serving metrics to scrapers, and deciding who may read them.
//!
//! - `access`: the allow-list and the bearer token, checked wherever metrics are served,
//! - `listener`: the per-process export listener on the first free port of a range,
//! - `tls`: HTTPS and mutual TLS on that listener, its certificates reloaded as they change,
//! - `endpoint`: the metrics route on the main (application) port,
//! - `file_sd`: the export target this process announces to Prometheus' file-based
//!   discovery.
//!
//! Both ways of serving check access themselves, on the path as it is matched, so every
//! spelling of the path that reaches metrics is checked.

mod access;
mod endpoint;
mod file_sd;
mod listener;
mod tls;

pub use access::MetricsAccess;
pub(crate) use endpoint::route;
pub(crate) use file_sd::FileSdError;
pub(crate) use file_sd::{Scheme, TargetFile};
pub(crate) use listener::ExportError;
pub(crate) use listener::{ExportFairing, ExportListener, Scrapes};
pub(crate) use tls::ExportTls;
