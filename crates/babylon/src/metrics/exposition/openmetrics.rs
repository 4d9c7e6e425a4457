//! OpenMetrics 1.0 text (<https://prometheus.io/docs/specs/om/open_metrics_spec/>).
//!
//! What differs from text 0.0.4, and why:
//! - a counter family is named without `_total` and its sample with it; a counter whose
//!   name lacks `_total` (the by-name API does not demand it) is written as `unknown`
//!   instead, so that its series keeps the name it has in every other format;
//! - `_created` after counters, histograms and summaries that know when they began;
//! - exemplars after counter and bucket samples, when their labels fit the 128
//!   characters OpenMetrics allows (an exemplar that does not fit is left out, never cut);
//! - `# UNIT` for families named after their base unit (`_seconds`, `_bytes`);
//! - `+Inf`, `-Inf` and `NaN` spelled as OpenMetrics spells them, `"` escaped in HELP;
//! - a histogram whose buckets or sum go below zero has no `_sum` and `_count`, which
//!   OpenMetrics allows only for non-negative observations; its buckets still count them;
//! - `# EOF` at the end.

use std::io::Write;

use super::model::{Exemplar, Histogram, LabelPair, Metric, MetricFamily, MetricType, Timestamp};

/// The longest exemplar label set (names and values, in characters) OpenMetrics allows.
const MAX_EXEMPLAR_LABEL_CHARS: usize = 128;

/// Units a family name may end in that `# UNIT` announces.
const UNITS: [&str; 2] = ["seconds", "bytes"];

/// `families` in OpenMetrics text, appended to `out`.
pub(crate) fn encode(families: &[MetricFamily], out: &mut Vec<u8>) {
    for family in families {
        Family::new(family).write(out);
    }
    out.extend_from_slice(b"# EOF\n");
}

/// A family as OpenMetrics names and types it.
struct Family<'a> {
    family: &'a MetricFamily,
    /// The OpenMetrics family name: without `_total` for a counter.
    name: &'a str,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Unknown,
    Summary,
    Histogram,
    GaugeHistogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Unknown => "unknown",
            Kind::Summary => "summary",
            Kind::Histogram => "histogram",
            Kind::GaugeHistogram => "gaugehistogram",
        }
    }
}

impl<'a> Family<'a> {
    fn new(family: &'a MetricFamily) -> Self {
        let name = family.name.as_str();
        let (name, kind) = match MetricType::try_from(family.r#type) {
            Ok(MetricType::Counter) => match name.strip_suffix("_total") {
                Some(base) => (base, Kind::Counter),
                None => (name, Kind::Unknown),
            },
            Ok(MetricType::Gauge) => (name, Kind::Gauge),
            Ok(MetricType::Summary) => (name, Kind::Summary),
            Ok(MetricType::Histogram) => (name, Kind::Histogram),
            Ok(MetricType::GaugeHistogram) => (name, Kind::GaugeHistogram),
            Ok(MetricType::Untyped) | Err(_) => (name, Kind::Unknown),
        };
        Family { family, name, kind }
    }

    fn unit(&self) -> Option<&str> {
        if !self.family.unit.is_empty() {
            return Some(self.family.unit.as_str()).filter(|unit| self.has_suffix(unit));
        }
        UNITS.into_iter().find(|unit| self.has_suffix(unit))
    }

    fn has_suffix(&self, unit: &str) -> bool {
        self.name
            .strip_suffix(unit)
            .is_some_and(|rest| rest.ends_with('_'))
    }

    fn write(&self, out: &mut Vec<u8>) {
        let name = self.name;
        if !self.family.help.is_empty() {
            write_all(out, &["# HELP ", name, " "]);
            escape_into(out, &self.family.help);
            out.push(b'\n');
        }
        write_all(out, &["# TYPE ", name, " ", self.kind.as_str(), "\n"]);
        if let Some(unit) = self.unit() {
            write_all(out, &["# UNIT ", name, " ", unit, "\n"]);
        }
        for metric in &self.family.metric {
            let sample = Sample { out, metric };
            match self.kind {
                Kind::Counter => {
                    let counter = metric.counter.clone().unwrap_or_default();
                    sample.write(
                        &[name, "_total"],
                        None,
                        Value::Float(counter.value),
                        counter.exemplar.as_ref(),
                    );
                    Sample { out, metric }.created(name, counter.created_timestamp);
                }
                Kind::Gauge => {
                    let value = metric.gauge.as_ref().map_or(0.0, |gauge| gauge.value);
                    sample.write(&[name], None, Value::Float(value), None);
                }
                Kind::Unknown => {
                    let value = (metric.untyped.as_ref().map(|untyped| untyped.value))
                        .or(metric.counter.as_ref().map(|counter| counter.value))
                        .unwrap_or(0.0);
                    sample.write(&[name], None, Value::Float(value), None);
                }
                Kind::Summary => write_summary(out, name, metric),
                Kind::Histogram | Kind::GaugeHistogram => {
                    let histogram = metric.histogram.clone().unwrap_or_default();
                    write_histogram(out, name, metric, &histogram, self.kind);
                }
            }
        }
    }
}

fn write_summary(out: &mut Vec<u8>, name: &str, metric: &Metric) {
    let summary = metric.summary.clone().unwrap_or_default();
    for quantile in &summary.quantile {
        let q = float_text(quantile.quantile);
        Sample { out, metric }.write(
            &[name],
            Some(("quantile", &q)),
            Value::Float(quantile.value),
            None,
        );
    }
    Sample { out, metric }.write(
        &[name, "_sum"],
        None,
        Value::Float(summary.sample_sum),
        None,
    );
    Sample { out, metric }.write(
        &[name, "_count"],
        None,
        Value::Count(summary.sample_count),
        None,
    );
    Sample { out, metric }.created(name, summary.created_timestamp);
}

fn write_histogram(
    out: &mut Vec<u8>,
    name: &str,
    metric: &Metric,
    histogram: &Histogram,
    kind: Kind,
) {
    let mut saw_infinity = false;
    for bucket in &histogram.bucket {
        saw_infinity |= bucket.upper_bound == f64::INFINITY;
        let le = float_text(bucket.upper_bound);
        Sample { out, metric }.write(
            &[name, "_bucket"],
            Some(("le", &le)),
            Value::Count(bucket.cumulative_count),
            bucket.exemplar.as_ref(),
        );
    }
    if !saw_infinity {
        Sample { out, metric }.write(
            &[name, "_bucket"],
            Some(("le", "+Inf")),
            Value::Count(histogram.sample_count),
            None,
        );
    }
    let (count, sum) = match kind {
        Kind::GaugeHistogram => ("_gcount", "_gsum"),
        _ => ("_count", "_sum"),
    };
    let below_zero = histogram.sample_sum < 0.0
        || histogram.sample_sum.is_nan()
        || histogram
            .bucket
            .iter()
            .any(|bucket| bucket.upper_bound < 0.0);
    if kind == Kind::GaugeHistogram || !below_zero {
        Sample { out, metric }.write(
            &[name, count],
            None,
            Value::Count(histogram.sample_count),
            None,
        );
        Sample { out, metric }.write(&[name, sum], None, Value::Float(histogram.sample_sum), None);
    }
    if kind == Kind::Histogram {
        Sample { out, metric }.created(name, histogram.created_timestamp);
    }
}

enum Value {
    Float(f64),
    Count(u64),
}

/// One line of one series.
struct Sample<'o, 'm> {
    out: &'o mut Vec<u8>,
    metric: &'m Metric,
}

impl Sample<'_, '_> {
    /// `name` (its parts written one after the other), the series' labels and `extra`,
    /// the value, the series' timestamp if it has one, and `exemplar` if it fits.
    fn write(
        self,
        name: &[&str],
        extra: Option<(&str, &str)>,
        value: Value,
        exemplar: Option<&Exemplar>,
    ) {
        let out = self.out;
        write_all(out, name);
        write_labels(out, &self.metric.label, extra);
        out.push(b' ');
        match value {
            Value::Float(value) => out.extend_from_slice(float_text(value).as_bytes()),
            Value::Count(count) => write_display(out, count),
        }
        if self.metric.timestamp_ms != 0 {
            out.push(b' ');
            write_display(out, self.metric.timestamp_ms as f64 / 1000.0);
        }
        if let Some(exemplar) = exemplar.filter(|exemplar| fits(exemplar)) {
            out.extend_from_slice(b" # ");
            write_labels(out, &exemplar.label, None);
            out.push(b' ');
            out.extend_from_slice(float_text(exemplar.value).as_bytes());
            if let Some(timestamp) = exemplar.timestamp {
                out.push(b' ');
                write_timestamp(out, timestamp);
            }
        }
        out.push(b'\n');
    }

    /// `<name>_created`, when the series knows when it began.
    fn created(self, name: &str, created: Option<Timestamp>) {
        let Some(created) = created else {
            return;
        };
        let out = self.out;
        write_all(out, &[name, "_created"]);
        write_labels(out, &self.metric.label, None);
        out.push(b' ');
        write_timestamp(out, created);
        out.push(b'\n');
    }
}

fn fits(exemplar: &Exemplar) -> bool {
    let chars: usize = exemplar
        .label
        .iter()
        .map(|pair| pair.name.chars().count() + pair.value.chars().count())
        .sum();
    chars <= MAX_EXEMPLAR_LABEL_CHARS
}

fn write_labels(out: &mut Vec<u8>, labels: &[LabelPair], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push(b'{');
    let pairs = labels
        .iter()
        .map(|pair| (pair.name.as_str(), pair.value.as_str()))
        .chain(extra);
    for (index, (name, value)) in pairs.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_all(out, &[name, "=\""]);
        escape_into(out, value);
        out.push(b'"');
    }
    out.push(b'}');
}

/// A label value or HELP text with `\`, `"` and line feeds escaped.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(byte),
        }
    }
}

/// A number as OpenMetrics spells it: the shortest decimal that reads back as the same
/// value, or `+Inf`, `-Inf`, `NaN`.
fn float_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        value.to_string()
    }
}

/// Seconds since the epoch with nanoseconds, as exemplars and `_created` carry them.
fn write_timestamp(out: &mut Vec<u8>, timestamp: Timestamp) {
    write!(
        out,
        "{}.{:09}",
        timestamp.seconds,
        timestamp.nanos.clamp(0, 999_999_999)
    )
    .expect("writing into a Vec cannot fail");
}

fn write_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    write!(out, "{value}").expect("writing into a Vec cannot fail");
}

fn write_all(out: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Bucket, Counter, Gauge, Untyped};
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
        pairs
            .iter()
            .map(|(name, value)| LabelPair {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect()
    }

    fn family(name: &str, kind: MetricType, metric: Vec<Metric>) -> MetricFamily {
        MetricFamily {
            name: name.into(),
            help: "Help with \"quotes\", \\ and\nlines.".into(),
            r#type: kind as i32,
            metric,
            unit: String::new(),
        }
    }

    fn encoded(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        encode(families, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn exemplar(trace_id: &str) -> Exemplar {
        Exemplar {
            label: labels(&[("trace_id", trace_id)]),
            value: 0.25,
            timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
        }
    }

    #[test]
    fn a_counter_is_named_without_total_and_carries_its_exemplar_and_creation() {
        let text = encoded(&[family(
            "requests_total",
            MetricType::Counter,
            vec![Metric {
                label: labels(&[("path", "/a\"b")]),
                counter: Some(Counter {
                    value: 3.0,
                    exemplar: Some(exemplar("4bf92f3577b34da6a3ce929d0e0e4736")),
                    created_timestamp: Some(Timestamp {
                        seconds: 1_600_000_000,
                        nanos: 0,
                    }),
                }),
                ..Metric::default()
            }],
        )]);
        assert_eq!(
            text,
            "# HELP requests Help with \\\"quotes\\\", \\\\ and\\nlines.\n\
             # TYPE requests counter\n\
             requests_total{path=\"/a\\\"b\"} 3 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.25 1700000000.005000000\n\
             requests_created{path=\"/a\\\"b\"} 1600000000.000000000\n\
             # EOF\n"
        );
    }

    #[test]
    fn a_counter_without_total_keeps_its_name_as_unknown() {
        let text = encoded(&[family(
            "hits",
            MetricType::Counter,
            vec![Metric {
                counter: Some(Counter {
                    value: 2.0,
                    ..Counter::default()
                }),
                ..Metric::default()
            }],
        )]);
        assert!(text.contains("# TYPE hits unknown\nhits 2\n"), "{text}");
    }

    #[test]
    fn histograms_end_in_inf_count_sum_and_created() {
        let histogram = Histogram {
            sample_count: 4,
            sample_sum: 1.5,
            bucket: vec![
                Bucket {
                    cumulative_count: 1,
                    upper_bound: 0.1,
                    exemplar: Some(exemplar("a")),
                },
                Bucket {
                    cumulative_count: 3,
                    upper_bound: 1.0,
                    exemplar: None,
                },
            ],
            created_timestamp: Some(Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Histogram::default()
        };
        let text = encoded(&[family(
            "latency_seconds",
            MetricType::Histogram,
            vec![Metric {
                histogram: Some(histogram),
                ..Metric::default()
            }],
        )]);
        assert!(
            text.ends_with(
                "# TYPE latency_seconds histogram\n\
                 # UNIT latency_seconds seconds\n\
                 latency_seconds_bucket{le=\"0.1\"} 1 # {trace_id=\"a\"} 0.25 1700000000.005000000\n\
                 latency_seconds_bucket{le=\"1\"} 3\n\
                 latency_seconds_bucket{le=\"+Inf\"} 4\n\
                 latency_seconds_count 4\n\
                 latency_seconds_sum 1.5\n\
                 latency_seconds_created 1.000000000\n\
                 # EOF\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_histogram_below_zero_has_no_sum_or_count() {
        let negative = Histogram {
            sample_count: 1,
            sample_sum: -2.0,
            bucket: vec![Bucket {
                cumulative_count: 1,
                upper_bound: -1.0,
                exemplar: None,
            }],
            ..Histogram::default()
        };
        let text = encoded(&[family(
            "offset",
            MetricType::Histogram,
            vec![Metric {
                histogram: Some(negative),
                ..Metric::default()
            }],
        )]);
        assert!(!text.contains("offset_sum") && !text.contains("offset_count"));
        assert!(text.contains("offset_bucket{le=\"+Inf\"} 1\n"));
    }

    #[test]
    fn special_values_and_long_exemplars() {
        let gauge = |value| Metric {
            gauge: Some(Gauge { value }),
            ..Metric::default()
        };
        let text = encoded(&[family(
            "g",
            MetricType::Gauge,
            vec![
                gauge(f64::INFINITY),
                gauge(f64::NEG_INFINITY),
                gauge(f64::NAN),
            ],
        )]);
        assert!(text.contains("g +Inf\ng -Inf\ng NaN\n"), "{text}");
        let long = Metric {
            counter: Some(Counter {
                value: 1.0,
                exemplar: Some(exemplar(&"x".repeat(121))),
                ..Counter::default()
            }),
            ..Metric::default()
        };
        let just_fits = Metric {
            counter: Some(Counter {
                value: 1.0,
                exemplar: Some(exemplar(&"x".repeat(120))),
                ..Counter::default()
            }),
            ..Metric::default()
        };
        let text = encoded(&[family(
            "c_total",
            MetricType::Counter,
            vec![long, just_fits],
        )]);
        assert_eq!(text.matches(" # {").count(), 1, "{text}");
    }

    #[test]
    fn untyped_is_unknown_and_timestamps_are_seconds() {
        let text = encoded(&[family(
            "u",
            MetricType::Untyped,
            vec![Metric {
                untyped: Some(Untyped { value: 7.5 }),
                timestamp_ms: 1_500,
                ..Metric::default()
            }],
        )]);
        assert!(text.contains("# TYPE u unknown\nu 7.5 1.5\n"), "{text}");
    }
}
