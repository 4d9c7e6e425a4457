//! How a line is written, in either `logging.format`:
//!
//! - `text`: `2026-12-07T05:08:01.657769Z  INFO babylon::request: message key=value …`,
//!   as tracing-subscriber's default format reads (strings quoted, other values as they
//!   display), the level coloured when the output is a terminal and `cli_colors` is on;
//! - `json`: one object per line, in a fixed order — `timestamp` (RFC 3339, UTC),
//!   `level`, `target`, `message` when there is one, then the event's own fields at the
//!   top level, numbers and booleans as JSON numbers and booleans.
//!
//! Written here rather than with tracing-subscriber's formats: its JSON adds the
//! `log.target`, `log.module_path`, `log.file` and `log.line` fields of every bridged
//! `log` record (Rocket's) and puts the target last, and every request writes a line, so
//! the cost counts: control characters are escaped in one pass over the bytes, without
//! formatting a value twice, and a thread re-writes the date only when the second
//! changes (BENCHMARKS.md, "Request lines, and exemplars of the work a request causes").
//!
//! In both formats control characters are escaped (`\n`, `\u001b`), so no value, not even
//! a message quoting a client, can start a line of its own or move a terminal's cursor.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The two formats of `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lines {
    Text { colours: bool },
    Json,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let level = metadata.level();
        match *self {
            Lines::Json => {
                writer.write_str("{\"timestamp\":\"")?;
                timestamp(&mut writer)?;
                write!(writer, "\",\"level\":\"{level}\",\"target\":")?;
                json_string(&mut writer, metadata.target())?;
            }
            Lines::Text { colours } => {
                timestamp(&mut writer)?;
                let (start, end) = match colours {
                    true => (colour(level), "\x1b[0m"),
                    false => ("", ""),
                };
                write!(writer, " {start}{level:>5}{end} ")?;
                escaped(&mut writer, metadata.target(), false)?;
                writer.write_char(':')?;
            }
        }
        // The message first, then the other fields in their order.
        for pass in [Pass::Message, Pass::Fields] {
            let mut fields = Fields {
                lines: *self,
                pass,
                writer: &mut writer,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
        }
        match self {
            Lines::Json => writer.write_str("}\n"),
            Lines::Text { .. } => writer.write_char('\n'),
        }
    }
}

/// The ANSI colour of a level, as tracing-subscriber's default format has them.
fn colour(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Message,
    Fields,
}

/// Writes the fields of one pass, leaving out those tracing-log adds.
struct Fields<'a, 'w> {
    lines: Lines,
    pass: Pass,
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

/// How a field's value is written.
enum Value<'v> {
    /// Quoted in both formats.
    Str(&'v str),
    /// Quoted in JSON, as it displays in text.
    Shown(&'v dyn fmt::Debug),
    /// As it displays in both formats (numbers, booleans).
    Bare(&'v dyn fmt::Display),
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: Value<'_>) {
        let name = field.name();
        let is_message = name == "message";
        if self.result.is_err()
            || is_message != (self.pass == Pass::Message)
            || name.starts_with("log.")
        {
            return;
        }
        let writer = &mut *self.writer;
        self.result = match self.lines {
            Lines::Json => (|| {
                writer.write_char(',')?;
                json_string(writer, name)?;
                writer.write_char(':')?;
                match value {
                    Value::Str(text) => json_string(writer, text),
                    Value::Shown(shown) => {
                        writer.write_char('"')?;
                        write!(Escaping { writer, json: true }, "{shown:?}")?;
                        writer.write_char('"')
                    }
                    Value::Bare(bare) => write!(writer, "{bare}"),
                }
            })(),
            Lines::Text { .. } => (|| {
                writer.write_char(' ')?;
                if !is_message {
                    escaped(writer, name, false)?;
                    writer.write_char('=')?;
                }
                match value {
                    Value::Str(text) if is_message => escaped(writer, text, false),
                    Value::Str(text) => {
                        writer.write_char('"')?;
                        escaped(writer, text, true)?;
                        writer.write_char('"')
                    }
                    Value::Shown(shown) => {
                        write!(
                            Escaping {
                                writer,
                                json: false
                            },
                            "{shown:?}"
                        )
                    }
                    Value::Bare(bare) => write!(writer, "{bare}"),
                }
            })(),
        };
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, Value::Str(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, Value::Shown(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, Value::Bare(&value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, Value::Bare(&value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, Value::Bare(&value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match value.is_finite() {
            // Rust writes finite floats as JSON numbers (no exponent, no `NaN`).
            true => self.field(field, Value::Bare(&value)),
            false => self.field(field, Value::Shown(&value)),
        }
    }
}

/// Writes what is formatted into it escaped: for JSON, as the inside of a JSON string;
/// for text, control characters only.
struct Escaping<'a, 'w> {
    writer: &'a mut Writer<'w>,
    json: bool,
}

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escaped(self.writer, text, self.json)
    }
}

/// `text` as a JSON string.
fn json_string(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    escaped(writer, text, true)?;
    writer.write_char('"')
}

/// Writes `text` with its control characters escaped (`\n`, `\t`, `\r`, `\u00XX`), and
/// with `quotes`, `"` and `\` too. Every byte that needs it is ASCII, so the runs between
/// them are whole characters.
fn escaped(writer: &mut Writer<'_>, text: &str, quotes: bool) -> fmt::Result {
    let bytes = text.as_bytes();
    let needs =
        |byte: u8| byte < 0x20 || byte == 0x7f || (quotes && (byte == b'"' || byte == b'\\'));
    // Most values (ids, addresses, route templates) need nothing: one scan, one write.
    if !bytes.iter().any(|&byte| needs(byte)) {
        return writer.write_str(text);
    }
    let mut run = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape = match byte {
            b'"' if quotes => "\\\"",
            b'\\' if quotes => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        writer.write_str(&text[run..at])?;
        match escape {
            "" => write!(writer, "\\u{byte:04x}")?,
            escape => writer.write_str(escape)?,
        }
        run = at + 1;
    }
    writer.write_str(&text[run..])
}

thread_local! {
    /// The second this thread last wrote, and its date and time up to the seconds.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The current time as RFC 3339 in UTC with microseconds: `2026-12-07T05:08:01.657769Z`.
fn timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != seconds {
            second.1.clear();
            write_date_time(&mut second.1, seconds)?;
            second.0 = seconds;
        }
        writer.write_str(&second.1)
    })?;
    write!(writer, ".{:06}Z", now.subsec_micros())
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS` (UTC), by the civil-from-days
/// algorithm of Howard Hinnant's date library.
fn write_date_time(out: &mut String, seconds: u64) -> fmt::Result {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) -> String {
        let mut out = String::new();
        write(&mut Writer::new(&mut out)).unwrap();
        out
    }

    proptest! {
        #[test]
        fn every_string_is_written_as_the_json_string_of_it(text in any::<String>()) {
            let json = written(|w| json_string(w, &text));
            let read: String = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(read, text);
        }

        #[test]
        fn no_text_value_holds_a_control_character(text in any::<String>()) {
            for quotes in [false, true] {
                let out = written(|w| escaped(w, &text, quotes));
                prop_assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f), "{out:?}");
            }
        }

        #[test]
        fn dates_are_the_calendars(seconds in 0u64..=253_402_300_799) {
            // Checked against the day count of a proleptic Gregorian calendar walked
            // year by year.
            let mut out = String::new();
            write_date_time(&mut out, seconds).unwrap();
            let (mut year, mut days) = (1970u64, seconds / 86_400);
            let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
            while days >= if leap(year) { 366 } else { 365 } {
                days -= if leap(year) { 366 } else { 365 };
                year += 1;
            }
            let lengths = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            let mut month = 0;
            while days >= lengths[month] {
                days -= lengths[month];
                month += 1;
            }
            let s = seconds % 86_400;
            let expected = format!(
                "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                month + 1, days + 1, s / 3600, s / 60 % 60, s % 60
            );
            prop_assert_eq!(out, expected);
        }
    }

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        assert_eq!(
            written(|w| json_string(w, "a\"b\\c\nd\u{1}")),
            r#""a\"b\\c\nd\u0001""#
        );
        assert_eq!(written(|w| json_string(w, "\u{7f}é")), "\"\\u007fé\"");
        assert_eq!(
            written(|w| escaped(w, "a\"b\n\u{1b}[2J", false)),
            "a\"b\\n\\u001b[2J"
        );
        let mut out = String::new();
        write_date_time(&mut out, 1_796_620_081).unwrap();
        assert_eq!(out, "2026-12-07T05:08:01");
    }
}
