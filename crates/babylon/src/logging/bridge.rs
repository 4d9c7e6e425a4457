//! Rocket's and other crates' `log` records, handed to `tracing` after Rocket's
//! conventions.

use std::fmt::{self, Write as _};

use super::Choice;

/// Hands the `log` records of Rocket and other crates to `tracing`, so that they share
/// the format, after Rocket's conventions:
/// - its launch lines (`rocket::launch`) are information, whatever level they carry;
/// - hyper's, rustls' and r2d2's records show only at `debug`;
/// - the records that hold what a client sent are never written, at any level: the
///   request as it came (`GET /reset?token=…:`, and at `debug` every header,
///   `Authorization` and `Cookie` included), an unmatched request's path, and why a
///   route's guard failed (Rocket's `Json` puts the whole body there). Request lines name
///   the route template instead;
/// - with request lines on, Rocket's other records about each request (the route
///   matched, the outcome, the catcher, a panic's advice) are left out below `debug`:
///   the request line says all of it in one line.
pub(super) struct LogBridge(pub(super) Choice);

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let from = |prefix: &str| record.target().starts_with(prefix);
        let about_a_request = AboutARequest::of(record);
        if about_a_request == Some(AboutARequest::WhatTheClientSent) {
            return;
        }
        if !self.0.everything() {
            if from("hyper") || from("rustls") || from("r2d2") {
                return;
            }
            if self.0.requests() && about_a_request.is_some() {
                return;
            }
        }
        let level = match from("rocket::launch") {
            true => log::Level::Info,
            false => record.level(),
        };
        let tracing_level = tracing_log::AsTrace::as_trace(&level);
        if !self.0.writes(record.target(), &tracing_level) {
            return;
        }
        let _ = tracing_log::format_trace(
            &log::Record::builder()
                .level(level)
                .target(record.target())
                .args(*record.args())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {}
}

/// The beginnings of what Rocket 0.5's server writes about each request it handles
/// (`rocket/src/server.rs`), besides the request itself, that hold nothing the client
/// sent.
const ROCKET_REQUEST_RECORDS: &[&str] = &[
    "Matched: ",
    "Outcome: ",
    "Response succeeded.",
    "Autohandling HEAD request.",
    "Responding with registered ",
    "No 4",
    "No 5",
    "Handler ",
    "A handler panicked.",
    "This is an application bug.",
    "A panic in Rust must be treated",
    "Panicking is not a suitable",
    "Unwinding, the result of a panic",
    "Panics will degrade application",
    "Instead of panicking, return",
    "Values of either type can be returned",
    "A panic is treated as an internal server error.",
];

/// A record Rocket writes about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AboutARequest {
    /// It holds what the client sent: the path and query, headers, a guard's error
    /// (which may quote the body).
    WhatTheClientSent,
    /// The route, the outcome, the catcher, a panic's advice.
    Progress,
}

impl AboutARequest {
    /// What `record` is, if Rocket wrote it about a request: from its server, the request
    /// itself (`GET /path:`, at `debug` `received request: Request { … }`), an unmatched
    /// path, or one of [`ROCKET_REQUEST_RECORDS`]; from the code its route attribute
    /// generates (in the application's module, marked indented), why a guard failed or
    /// forwarded.
    fn of(record: &log::Record<'_>) -> Option<AboutARequest> {
        let target = record.target();
        if target.ends_with("::_") && !target.starts_with("rocket::") {
            return Some(AboutARequest::WhatTheClientSent);
        }
        if !target.starts_with("rocket::server") {
            return None;
        }
        let mut start = Beginning::default();
        let _ = write!(start, "{}", record.args());
        let start = start.as_str();
        let the_request = target == "rocket::server"
            && (start.starts_with("received request: ")
                || (record.level() == log::Level::Info
                    && start.split_once(' ').is_some_and(|(method, rest)| {
                        method.bytes().all(|b| b.is_ascii_uppercase()) && rest.starts_with('/')
                    })));
        let indented = target == "rocket::server::_";
        if the_request || (indented && start.starts_with("No matching routes for ")) {
            Some(AboutARequest::WhatTheClientSent)
        } else if indented && ROCKET_REQUEST_RECORDS.iter().any(|p| start.starts_with(p)) {
            Some(AboutARequest::Progress)
        } else {
            None
        }
    }
}

/// The first bytes written to it, enough to tell a record by its beginning without
/// formatting all of it.
struct Beginning {
    bytes: [u8; 64],
    len: usize,
}

impl Default for Beginning {
    fn default() -> Self {
        Beginning {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl Beginning {
    fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.bytes[..self.len]) {
            Ok(text) => text,
            Err(error) => {
                std::str::from_utf8(&self.bytes[..error.valid_up_to()]).expect("valid up to there")
            }
        }
    }
}

impl fmt::Write for Beginning {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let taken = text.len().min(room);
        self.bytes[self.len..self.len + taken].copy_from_slice(&text.as_bytes()[..taken]);
        self.len += taken;
        match taken < text.len() {
            true => Err(fmt::Error),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(
        target: &str,
        level: log::Level,
        message: fmt::Arguments<'_>,
    ) -> Option<AboutARequest> {
        AboutARequest::of(
            &log::Record::builder()
                .target(target)
                .level(level)
                .args(message)
                .build(),
        )
    }

    #[test]
    fn rockets_records_about_a_request_are_told_from_the_others() {
        use log::Level::{Error, Info, Warn};
        use AboutARequest::{Progress, WhatTheClientSent as Sent};
        let table = [
            ("rocket::server", Info, "GET /api/items:", Some(Sent)),
            (
                "rocket::server",
                Info,
                "DELETE /api/items/4?token=x:",
                Some(Sent),
            ),
            (
                "rocket::server",
                log::Level::Debug,
                "received request: Request {",
                Some(Sent),
            ),
            (
                "rocket::server::_",
                Error,
                "No matching routes for GET /x?t=1.",
                Some(Sent),
            ),
            (
                "babylon_app::items::_",
                Warn,
                "Data guard `Json<A>` failed: Parse(\"{}\").",
                Some(Sent),
            ),
            (
                "shop::_",
                Warn,
                "Query string failed to match route declaration.",
                Some(Sent),
            ),
            (
                "rocket::server::_",
                Info,
                "Matched: (list) GET /api/items",
                Some(Progress),
            ),
            (
                "rocket::server::_",
                Info,
                "Outcome: Success(200 OK)",
                Some(Progress),
            ),
            (
                "rocket::server::_",
                Info,
                "Response succeeded.",
                Some(Progress),
            ),
            (
                "rocket::server::_",
                Warn,
                "Responding with registered (json) 404 catcher.",
                Some(Progress),
            ),
            (
                "rocket::server::_",
                Warn,
                "No 404 catcher registered. Using Rocket default.",
                Some(Progress),
            ),
            (
                "rocket::server::_",
                Error,
                "Handler boom panicked.",
                Some(Progress),
            ),
            (
                "rocket::server::_",
                Warn,
                "A panic is treated as an internal server error.",
                Some(Progress),
            ),
            (
                "rocket::server",
                Info,
                "Shutdown requested. Waiting for pending I/O...",
                None,
            ),
            (
                "rocket::server",
                Warn,
                "Received SIGTERM. Requesting shutdown.",
                None,
            ),
            (
                "rocket::server",
                Info,
                "Server failed prior to shutdown: x:",
                None,
            ),
            (
                "rocket::server::_",
                Warn,
                "Failed to write response: broken pipe.",
                None,
            ),
            ("rocket::server::_", Warn, "Remote left: reset.", None),
            ("rocket::launch", Info, "GET /api/items:", None),
            ("rocket::launch::_", Info, "Matched: nothing", None),
            ("babylon_app::items", Warn, "Data guard", None),
        ];
        for (target, level, message, expected) in table {
            assert_eq!(
                about(target, level, format_args!("{message}")),
                expected,
                "{message}"
            );
        }
    }

    #[test]
    fn a_long_record_is_told_by_its_first_bytes() {
        let long = "x".repeat(10_000);
        assert_eq!(
            about(
                "rocket::server::_",
                log::Level::Info,
                format_args!("Matched: {long}")
            ),
            Some(AboutARequest::Progress)
        );
        let mut beginning = Beginning::default();
        let _ = write!(beginning, "{}", "é".repeat(40));
        assert_eq!(
            beginning.as_str(),
            "é".repeat(32),
            "cut at a character boundary"
        );
    }
}
