//! Log lines, all in one format (`logging.format`): babylon's and the application's
//! [`tracing`] events, the `log` records of Rocket and other crates, and panics.
//!
//! A `main` starts logging once, before anything else reads the settings, and keeps the
//! returned [`Logging`] until it returns, so that every line is written before the
//! process ends:
//!
//! ```no_run
//! let figment = babylon::settings::figment();
//! let _logging = babylon::logging::Logging::start(&figment);
//! match babylon::Babylon::from_figment(figment) {
//!     Ok(_babylon) => babylon::logging::start_up("ready"),
//!     Err(error) => babylon::logging::start_up_failed(&error),
//! }
//! ```
//!
//! Which lines are written follows Rocket's `log_level`: `critical` warnings and errors,
//! `normal` information too, `debug` everything (with the libraries' own records),
//! `off` nothing. Beside that level: request lines follow `logging.requests` (and `off`),
//! and [start-up lines](start_up) are always written. Application code logs with
//! `tracing`'s macros, as babylon does; its lines share the format and the level.
//!
//! Lines go to standard output, written by a thread of their own so that a slow reader
//! (journald, a full pipe) never holds up a request; nothing is dropped (a writer that
//! falls 128 Ki lines behind makes the next line wait). Failures to start go to standard
//! error, where a shell and `--check-config` show them.

mod bridge;
mod lines;

use std::fmt;
use std::io::IsTerminal;

use figment::Figment;
use rocket::config::LogLevel;
use tracing::level_filters::LevelFilter;
use tracing::Level;
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter, MakeWriterExt};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::Registry;

use self::bridge::LogBridge;
use self::lines::Lines;
use crate::settings::{LogFormat, LogSettings};

/// The target of start-up lines: written at every level.
pub(crate) const START_TARGET: &str = "babylon";
/// The target of request lines (`logging.requests`).
pub(crate) const REQUEST_TARGET: &str = "babylon::request";

/// Logging, started; dropping it writes out every line still queued.
#[must_use = "dropping Logging stops writing lines; keep it until `main` returns"]
pub struct Logging {
    _queued: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// What decides which lines are written, read from the settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Choice {
    settings: LogSettings,
    level: LevelFilter,
    colours: bool,
}

impl Choice {
    /// Read leniently: a wrong `logging.*` or `log_level` falls back to its default here,
    /// and the settings' validation reports it (in the format chosen so far).
    fn read(figment: &Figment) -> Choice {
        let settings = figment
            .extract_inner::<LogSettings>("logging")
            .unwrap_or_default();
        let level = figment
            .extract_inner::<LogLevel>("log_level")
            .unwrap_or(rocket::Config::default().log_level);
        let colours = figment.extract_inner::<bool>("cli_colors").unwrap_or(true)
            && settings.format == LogFormat::Text
            && std::io::stdout().is_terminal();
        Choice::new(settings, level, colours)
    }

    fn new(settings: LogSettings, level: LogLevel, colours: bool) -> Choice {
        Choice {
            settings,
            level: level_filter(level),
            colours,
        }
    }

    /// Whether lines of `target` at `level` are written.
    pub(super) fn writes(&self, target: &str, level: &Level) -> bool {
        match target {
            START_TARGET => true,
            REQUEST_TARGET => self.requests(),
            _ => *level <= self.level,
        }
    }

    /// At `debug` every record is written, the libraries' own too.
    pub(super) fn everything(&self) -> bool {
        self.level == LevelFilter::TRACE
    }

    pub(super) fn requests(&self) -> bool {
        self.settings.requests && self.level != LevelFilter::OFF
    }
}

/// What Rocket's `log_level` lets through, as Rocket's own logger reads it.
fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Critical => LevelFilter::WARN,
        LogLevel::Normal => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::TRACE,
        LogLevel::Off => LevelFilter::OFF,
    }
}

/// Whether `logging.requests` and Rocket's `log_level` ask for request lines.
pub(crate) fn writes_request_lines(settings: LogSettings, level: LogLevel) -> bool {
    Choice::new(settings, level, false).requests()
}

impl Logging {
    /// Installs the logging that `figment`'s `logging.*` and `log_level` ask for, as the
    /// process's `tracing` subscriber, `log` logger and panic hook, its lines written by
    /// a thread of its own.
    ///
    /// Where the process already has a subscriber or a logger (an application that set
    /// up its own), that one is kept and receives babylon's lines.
    pub fn start(figment: &Figment) -> Logging {
        let (stdout, queued) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("babylon-log")
            .finish(std::io::stdout());
        Self::install(figment, Some((stdout, queued)))
    }

    /// As [`Logging::start`], but each line is written by the thread that logs it, before
    /// it goes on, and no thread is started: for a command that only checks and exits
    /// (`--check-config`).
    pub fn start_without_a_thread(figment: &Figment) -> Logging {
        Self::install(figment, None)
    }

    /// Installs the logging, its lines written through `queue` (the writer thread's end,
    /// and the guard that drains it when dropped), or directly without one.
    fn install(
        figment: &Figment,
        queue: Option<(
            tracing_appender::non_blocking::NonBlocking,
            tracing_appender::non_blocking::WorkerGuard,
        )>,
    ) -> Logging {
        let (queue, queued) = queue.unzip();
        let choice = Choice::read(figment);
        let failures = |meta: &tracing::Metadata<'_>| {
            meta.target() == START_TARGET && *meta.level() == Level::ERROR
        };
        let writer = std::io::stderr.with_filter(failures).or_else(Stdout(queue));
        let lines = lines_layer(choice, writer);
        // Not `try_init`, which would also take the `log` logger for a bridge that cannot
        // leave Rocket's records about each request out.
        let installed =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(lines))
                .is_ok();
        if installed {
            if log::set_boxed_logger(Box::new(LogBridge(choice))).is_ok() {
                log::set_max_level(tracing_log::AsLog::as_log(&choice.level));
            }
            install_panic_hook();
        }
        Logging {
            _queued: queued.filter(|_| installed),
        }
    }
}

/// The layer that writes the lines `choice` lets through to `writer`, in its format.
fn lines_layer<W>(choice: Choice, writer: W) -> impl Layer<Registry> + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::filter::filter_fn(move |meta| {
        choice.writes(meta.target(), meta.level())
    });
    let format = match choice.settings.format {
        LogFormat::Text => Lines::Text {
            colours: choice.colours,
        },
        LogFormat::Json => Lines::Json,
    };
    tracing_subscriber::fmt::layer()
        .event_format(format)
        .with_writer(writer)
        .with_filter(filter)
}

/// Standard output: through the queue when there is one, else directly.
struct Stdout(Option<tracing_appender::non_blocking::NonBlocking>);

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = EitherWriter<tracing_appender::non_blocking::NonBlocking, std::io::Stdout>;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.0 {
            Some(queue) => EitherWriter::A(queue.make_writer()),
            None => EitherWriter::B(std::io::stdout()),
        }
    }
}

/// A start-up line: written whatever `log_level` says, like Rocket's launch lines, since
/// with `port = 0` the listening line is the only place the chosen port shows.
pub fn start_up(message: impl fmt::Display) {
    tracing::info!(target: START_TARGET, "{message}");
}

/// A reason the process cannot start or run, one line each: written whatever
/// `log_level` says, to standard error.
pub fn start_up_failed(problem: impl fmt::Display) {
    for line in problem.to_string().lines() {
        tracing::error!(target: START_TARGET, "{line}");
    }
}

/// Panics become one error line (two with `RUST_BACKTRACE`) in the log's format.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|panic| {
        let message = match panic.payload() {
            payload if payload.is::<&str>() => payload.downcast_ref::<&str>().copied(),
            payload => payload.downcast_ref::<String>().map(String::as_str),
        }
        .unwrap_or("(no message)");
        let location = panic
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        let thread = std::thread::current();
        tracing::error!(
            target: "babylon::panic",
            thread = thread.name().unwrap_or("unnamed"),
            location,
            "panicked: {message}"
        );
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(target: "babylon::panic", "{backtrace}");
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_follows_rockets_and_start_up_lines_are_always_written() {
        let figment = |level: &str, requests: bool| {
            Figment::from(figment::providers::Serialized::defaults(
                rocket::Config::default(),
            ))
            .merge(("log_level", level))
            .merge(("logging.requests", requests))
        };
        for (level, info, warn) in [
            ("off", false, false),
            ("critical", false, true),
            ("normal", true, true),
            ("debug", true, true),
        ] {
            for requests in [true, false] {
                let choice = Choice::read(&figment(level, requests));
                assert_eq!(
                    choice.writes("babylon::cache", &Level::INFO),
                    info,
                    "{level}"
                );
                assert_eq!(
                    choice.writes("rocket::server", &Level::WARN),
                    warn,
                    "{level}"
                );
                assert!(choice.writes(START_TARGET, &Level::INFO), "{level}");
                assert!(choice.writes(START_TARGET, &Level::ERROR), "{level}");
                assert_eq!(
                    choice.writes(REQUEST_TARGET, &Level::INFO),
                    requests && level != "off",
                    "{level} requests={requests}"
                );
            }
        }
    }

    /// Where the lines of a test go.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    type Object = serde_json::Map<String, serde_json::Value>;

    /// The lines written while `body` runs, in `format`.
    fn lines_of(format: LogFormat, body: impl FnOnce()) -> Vec<String> {
        let settings = LogSettings {
            format,
            requests: true,
        };
        let captured = Captured::default();
        let layer = lines_layer(
            Choice::new(settings, LogLevel::Normal, false),
            captured.clone(),
        );
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), body);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The lines written while `body` runs, with `logging.format = "json"`, and the
    /// objects they hold.
    fn json_lines_of(body: impl FnOnce()) -> Vec<(String, Object)> {
        lines_of(LogFormat::Json, body)
            .into_iter()
            .map(|line| {
                let object = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                (line, object)
            })
            .collect()
    }

    #[test]
    fn text_lines_put_the_message_first_and_quote_strings() {
        let lines = lines_of(LogFormat::Text, || {
            tracing::warn!(
                target: "babylon::cache",
                route = "/a b",
                status = 200u16,
                client = Some(tracing::field::display("::1")),
                "two\nlines {}",
                7
            );
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let (timestamp, rest) = lines[0].split_once(' ').unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.len() == 27,
            "{timestamp}"
        );
        assert_eq!(
            rest,
            r#" WARN babylon::cache: two\nlines 7 route="/a b" status=200 client=::1"#
        );
    }

    #[test]
    fn json_lines_put_the_fields_at_the_top_level_in_a_fixed_order() {
        let lines = json_lines_of(|| {
            tracing::info!(
                target: REQUEST_TARGET,
                method = "GET",
                status = 200u16,
                duration_seconds = 0.25,
                client = Some(tracing::field::display("::1")),
                blocked = None::<&str>,
                ok = true,
            );
            tracing::warn!(target: "babylon::cache", quote = "a\"b", "two\nlines {}", 7);
            tracing::debug!("not at `normal`");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let raw = lines[0].0.clone();
        let keys = [
            "timestamp",
            "level",
            "target",
            "method",
            "status",
            "duration_seconds",
            "client",
            "ok",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|key| {
                raw.find(&format!("\"{key}\":"))
                    .unwrap_or_else(|| panic!("{key}: {raw}"))
            })
            .collect();
        assert!(at.is_sorted() && at[0] == 1, "in this order: {raw}");
        let lines: Vec<Object> = lines.into_iter().map(|(_, object)| object).collect();
        assert_eq!(
            lines[0].len(),
            keys.len(),
            "no `blocked` when there is none; no message when none was given: {raw}"
        );
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["duration_seconds"], 0.25);
        assert_eq!(lines[0]["client"], "::1");
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["message"], "two\nlines 7");
        assert_eq!(lines[1]["quote"], "a\"b");
        let timestamp = lines[0]["timestamp"].as_str().unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.starts_with("20"),
            "{timestamp}"
        );
    }

    #[test]
    fn a_panic_is_one_error_line_naming_where_it_happened() {
        let previous = std::panic::take_hook();
        install_panic_hook();
        let lines = json_lines_of(|| {
            let _ = std::panic::catch_unwind(|| panic!("boom {}", 7));
        });
        std::panic::set_hook(previous);
        let panic = lines
            .iter()
            .map(|(_, object)| object)
            .find(|line| line["target"] == "babylon::panic")
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert_eq!(panic["level"], "ERROR");
        assert_eq!(panic["message"], "panicked: boom 7");
        let location = panic["location"].as_str().unwrap();
        assert!(
            location.starts_with("crates/babylon/src/logging/mod.rs:"),
            "{location}"
        );
    }
}
