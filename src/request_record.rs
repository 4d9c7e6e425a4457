//! What the layers of a request learn about it, for the metrics fairing to read at the end.
//!
//! Rocket gives each request a typed local cache; this record lives there. Fields are set
//! once (`OnceLock`) by whichever layer knows the fact: the metrics fairing at arrival,
//! the blocking fairing when it refuses, a handler wrapper when a handler panics, the JSON
//! body guard when it reads the body.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use rocket::http::Method;
use rocket::Request;

use crate::api::error::JsonError;
use crate::blocking::BlockReason;

#[derive(Default)]
pub struct RequestRecord {
    /// Set by the metrics fairing when it starts observing the request.
    arrival: OnceLock<Arrival>,
    blocked: OnceLock<BlockReason>,
    exception: OnceLock<&'static str>,
    body_bytes_read: AtomicU64,
    rejection: OnceLock<JsonError>,
}

/// The request as it arrived, before any fairing rewrote it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub started: Instant,
    pub method: Method,
}

impl RequestRecord {
    pub fn of<'r>(request: &'r Request<'_>) -> &'r RequestRecord {
        request.local_cache(RequestRecord::default)
    }

    pub fn set_arrival(&self, arrival: Arrival) {
        let _ = self.arrival.set(arrival);
    }

    pub fn arrival(&self) -> Option<Arrival> {
        self.arrival.get().copied()
    }

    pub fn set_blocked(&self, reason: BlockReason) {
        let _ = self.blocked.set(reason);
    }

    pub fn blocked(&self) -> Option<BlockReason> {
        self.blocked.get().copied()
    }

    /// Records why the handler failed; the first cause wins.
    pub fn set_exception(&self, kind: &'static str) {
        let _ = self.exception.set(kind);
    }

    pub fn exception(&self) -> Option<&'static str> {
        self.exception.get().copied()
    }

    pub fn add_body_bytes_read(&self, bytes: u64) {
        self.body_bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn body_bytes_read(&self) -> u64 {
        self.body_bytes_read.load(Ordering::Relaxed)
    }

    /// A data guard's refusal, kept for the catcher that answers the request (Rocket 0.5
    /// catchers cannot see a guard's error value otherwise).
    pub fn set_rejection(&self, error: JsonError) {
        let _ = self.rejection.set(error);
    }

    pub fn rejection(&self) -> Option<&JsonError> {
        self.rejection.get()
    }
}
