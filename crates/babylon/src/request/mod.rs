//! The request context: what the layers of one request tell each other, and the JSON error
//! body every layer answers with.
//!
//! - [`RequestRecord`]: facts about a request (arrival, refusal, panic, body bytes) kept in
//!   Rocket's request-local cache for the HTTP observer to read at the end,
//! - [`BlockReason`]: why a request was refused before its handler ran,
//! - [`JsonError`]: `{"error": {"status", "reason", "message"}}`, the body of every error.
//!
//! It depends on Rocket only, so that every subsystem above can use it.

mod block_reason;
mod error;
mod record;

pub(crate) use block_reason::BlockReason;
pub use error::JsonError;
pub(crate) use error::Recorded;
pub(crate) use record::{Arrival, RequestRecord};
