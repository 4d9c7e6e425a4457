//! `logging.format = "json"`: one object per line, in a fixed order —
//! `timestamp` (RFC 3339, UTC), `level`, `target`, `message` when there is one, then the
//! event's own fields at the top level, numbers and booleans as JSON numbers and
//! booleans.
//!
//! Written here rather than with tracing-subscriber's JSON format, which adds the
//! `log.target`, `log.module_path`, `log.file` and `log.line` fields of every bridged
//! `log` record (Rocket's), and puts the target last.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub(super) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
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
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"target\":", metadata.level())?;
        string(&mut writer, metadata.target())?;
        let mut fields = Fields {
            writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        fields.writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`, leaving out those tracing-log adds.
struct Fields<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = (|| {
            self.writer.write_char(',')?;
            string(&mut self.writer, field.name())?;
            self.writer.write_char(':')?;
            value(&mut self.writer)
        })();
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| string(w, &format!("{value:?}")));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match value.is_finite() {
            // Rust writes finite floats as JSON numbers (no exponent, no `NaN`).
            true => self.field(field, |w| write!(w, "{value}")),
            false => self.field(field, |w| string(w, &value.to_string())),
        }
    }
}

/// `text` as a JSON string.
fn string(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c.is_control()) {
        writer.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().expect("found there");
        match c {
            '"' => writer.write_str("\\\"")?,
            '\\' => writer.write_str("\\\\")?,
            '\n' => writer.write_str("\\n")?,
            '\r' => writer.write_str("\\r")?,
            '\t' => writer.write_str("\\t")?,
            c => write!(writer, "\\u{:04x}", c as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    writer.write_str(rest)?;
    writer.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn as_json(text: &str) -> String {
        let mut out = String::new();
        string(&mut Writer::new(&mut out), text).unwrap();
        out
    }

    proptest! {
        #[test]
        fn every_string_is_written_as_the_json_string_of_it(text in any::<String>()) {
            let written = as_json(&text);
            let read: String = serde_json::from_str(&written).unwrap();
            prop_assert_eq!(read, text);
        }
    }

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        assert_eq!(as_json("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(as_json("\u{7f}é"), "\"\\u007fé\"");
    }
}
