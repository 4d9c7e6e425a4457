//! The exposition formats a scraper may ask for, and which one it gets.
//!
//! - Prometheus text 0.0.4: the `prometheus` crate's own encoder, unchanged;
//! - OpenMetrics 1.0 text (`openmetrics`): adds `_created`, exemplars and `# EOF`;
//! - Prometheus protobuf (`model`, length-delimited `MetricFamily` messages): the only
//!   format that carries native histograms.
//!
//! Every format is encoded from the same gathered families, so what one scrape shows in
//! one format another shows in any other.

mod convert;
pub(crate) mod model;
mod openmetrics;

use std::cell::RefCell;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

use crate::prometheus::core::{Collector, Desc};
use crate::prometheus::{proto, Registry};

/// A format of the metrics exposition. Which one a scrape gets is decided by
/// [`Format::negotiate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4: what any client that states no preference gets.
    Text,
    /// OpenMetrics 1.0.0 text: `_created` series and exemplars.
    OpenMetrics,
    /// Prometheus protobuf (`io.prometheus.client.MetricFamily`, length-delimited):
    /// native histograms, exemplars and created timestamps.
    Protobuf,
}

impl Format {
    /// Every format, in the order the `?format=` values are documented.
    pub const ALL: [Format; 3] = [Format::Text, Format::OpenMetrics, Format::Protobuf];

    /// The `Content-Type` an answer in this format carries; Prometheus picks its parser
    /// from it.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
        }
    }

    /// The value of `?format=` that forces this format.
    pub const fn query_value(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::OpenMetrics => "openmetrics",
            Format::Protobuf => "protobuf",
        }
    }

    /// The format for a request with this query string and `Accept` header.
    ///
    /// A `format` parameter in the query (`text`, `openmetrics`, `protobuf`) decides,
    /// for scrape jobs that must force one; any other value of it gets text. Otherwise
    /// the `Accept` header's media ranges are weighed by their q-values, as Prometheus
    /// sends them; on equal weight a format named outright beats one reached through a
    /// wildcard, and the range listed first wins. Nothing acceptable, no header or an
    /// unreadable one gets text: a scrape is never answered 406.
    ///
    /// ```
    /// use babylon::metrics::Format;
    ///
    /// // What Prometheus 2.42 sends with native histograms on:
    /// let prometheus = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
    ///     encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;q=0.5,\
    ///     application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// assert_eq!(Format::negotiate(Some(prometheus), None), Format::Protobuf);
    /// assert_eq!(Format::negotiate(Some(prometheus), Some("format=text")), Format::Text);
    /// assert_eq!(Format::negotiate(Some("*/*"), None), Format::Text);
    /// assert_eq!(Format::negotiate(None, None), Format::Text);
    /// ```
    pub fn negotiate(accept: Option<&str>, query: Option<&str>) -> Format {
        if let Some(forced) = query.and_then(forced_format) {
            return forced;
        }
        accept.map_or(Format::Text, best_accepted)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.query_value())
    }
}

/// The `format` parameter of a query string, if it has one: the format it names, or
/// text for a value that names none.
fn forced_format(query: &str) -> Option<Format> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("format="))?;
    Some(
        Format::ALL
            .into_iter()
            .find(|format| format.query_value() == value)
            .unwrap_or(Format::Text),
    )
}

/// Media ranges beyond this many are not read: a header is not a way to make a scrape
/// expensive.
const MAX_MEDIA_RANGES: usize = 32;

/// How well one format is accepted: its q-value, and whether a range named it outright
/// and where. Compared field by field, so a higher q wins, then an outright name, then
/// the earlier range.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Acceptance {
    q: f64,
    named: bool,
    earlier: std::cmp::Reverse<usize>,
}

fn best_accepted(accept: &str) -> Format {
    let mut best: Option<(Acceptance, Format)> = None;
    for (position, range) in accept.split(',').take(MAX_MEDIA_RANGES).enumerate() {
        let Some(range) = MediaRange::parse(range) else {
            continue;
        };
        for format in Format::ALL {
            let Some(named) = range.matches(format) else {
                continue;
            };
            let acceptance = Acceptance {
                q: range.q,
                named,
                earlier: std::cmp::Reverse(position),
            };
            if acceptance.q > 0.0 && best.is_none_or(|(current, _)| acceptance > current) {
                best = Some((acceptance, format));
            }
        }
    }
    best.map_or(Format::Text, |(_, format)| format)
}

/// One media range of an `Accept` header: `type/subtype` with its parameters.
struct MediaRange<'a> {
    essence: &'a str,
    parameters: Vec<(&'a str, &'a str)>,
    q: f64,
}

impl<'a> MediaRange<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.split(';');
        let essence = parts.next()?.trim();
        if !essence.contains('/') {
            return None;
        }
        let mut q = 1.0;
        let mut parameters = Vec::new();
        for parameter in parts {
            let (name, value) = parameter.split_once('=')?;
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            if name.eq_ignore_ascii_case("q") {
                // An unreadable weight accepts nothing rather than everything.
                q = value
                    .parse::<f64>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0);
            } else {
                parameters.push((name, value));
            }
        }
        Some(MediaRange {
            essence,
            parameters,
            q,
        })
    }

    /// Whether this range accepts `format`: `Some(true)` by naming it, `Some(false)`
    /// through a wildcard (which stands for text only: text is what a client that names
    /// no format gets), `None` not at all.
    fn matches(&self, format: Format) -> Option<bool> {
        let (essence, required): (&str, &[(&str, &[&str])]) = match format {
            Format::Text => ("text/plain", &[("version", &["0.0.4"])]),
            // Prometheus 2.x also asks for the 0.0.1 draft, which 1.0.0 reads the same.
            Format::OpenMetrics => (
                "application/openmetrics-text",
                &[("version", &["1.0.0", "0.0.1"])],
            ),
            Format::Protobuf => (
                "application/vnd.google.protobuf",
                &[
                    ("proto", &["io.prometheus.client.MetricFamily"]),
                    ("encoding", &["delimited"]),
                ],
            ),
        };
        if self.essence.eq_ignore_ascii_case(essence) {
            let satisfied = required.iter().all(|(name, allowed)| {
                self.parameter(name)
                    .is_none_or(|value| allowed.contains(&value))
            });
            return satisfied.then_some(true);
        }
        let wildcard = self.essence == "*/*" || self.essence.eq_ignore_ascii_case("text/*");
        (format == Format::Text && wildcard).then_some(false)
    }

    fn parameter(&self, name: &str) -> Option<&'a str> {
        self.parameters
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    }
}

pub(crate) use openmetrics::encode as encode_openmetrics;

/// How much of the data model a scrape asks a collector for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// What text 0.0.4 shows: no native buckets, exemplars or created timestamps, so a
    /// collector need not read them.
    Text,
    /// Everything the collector knows.
    Full,
}

/// A collector whose families hold more than the `prometheus` crate's model does: native
/// buckets, exemplars, created timestamps. Registered wrapped in [`FullModel`], it is a
/// plain `prometheus` collector to the registry.
pub(crate) trait FullCollector: Send + Sync + 'static {
    /// The families it collects, as [`Collector::desc`] describes them.
    fn descs(&self) -> Vec<&Desc>;

    /// Its families with what `detail` asks for.
    fn collect_model(&self, detail: Detail) -> Vec<model::MetricFamily>;
}

thread_local! {
    /// While [`gather`] runs on this thread, the families [`FullModel`] collectors
    /// collected in full.
    static FULL_GATHER: RefCell<Option<Vec<model::MetricFamily>>> = const { RefCell::new(None) };
}

/// A [`FullCollector`] registered in a `prometheus` registry. Gathered for text, it
/// gives the text view of its families; gathered by [`gather`], it hands its families in
/// full to the gathering thread instead, so that the registry (which knows only its own
/// model) passes over it and nothing is lost on the way.
pub(crate) struct FullModel<C>(pub(crate) C);

impl<C: FullCollector> Collector for FullModel<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let full = FULL_GATHER.with_borrow(Option::is_some);
        if full {
            let families = self.0.collect_model(Detail::Full);
            FULL_GATHER.with_borrow_mut(|gathered| {
                gathered
                    .as_mut()
                    .expect("set while gather runs")
                    .extend(families)
            });
            Vec::new()
        } else {
            self.0
                .collect_model(Detail::Text)
                .iter()
                .map(convert::to_prometheus)
                .collect()
        }
    }
}

/// Every family of `registry` in the full model, sorted by name as the registry sorts
/// them, series sorted by label values, `namespace` applied to the full collectors'
/// families as the registry applies it to its own.
pub(crate) fn gather(registry: &Registry, namespace: Option<&str>) -> Vec<model::MetricFamily> {
    /// Puts back what the thread had, however `gather` ends: a collector that panicked
    /// must not leave this thread handing full families to every later text scrape.
    struct Restore(Option<Vec<model::MetricFamily>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FULL_GATHER.set(self.0.take());
        }
    }
    let restore = Restore(FULL_GATHER.replace(Some(Vec::new())));
    let plain = registry.gather();
    let full = FULL_GATHER.take().expect("set at the start of gather");
    drop(restore);
    let mut by_name: BTreeMap<String, model::MetricFamily> = plain
        .iter()
        .map(|family| {
            let family = convert::from_prometheus(family);
            (family.name.clone(), family)
        })
        .collect();
    for mut family in full.into_iter().filter(|family| !family.metric.is_empty()) {
        if let Some(namespace) = namespace {
            family.name = format!("{namespace}_{}", family.name);
        }
        match by_name.entry(family.name.clone()) {
            Entry::Vacant(entry) => {
                entry.insert(family);
            }
            Entry::Occupied(mut entry) => entry.get_mut().metric.extend(family.metric),
        }
    }
    let mut families: Vec<_> = by_name.into_values().collect();
    for family in &mut families {
        // As the registry orders its own: by label values, then by label count.
        family.metric.sort_by(|a, b| {
            a.label
                .len()
                .cmp(&b.label.len())
                .then_with(|| {
                    let values = |metric: &model::Metric| {
                        metric
                            .label
                            .iter()
                            .map(|pair| pair.value.clone())
                            .collect::<Vec<_>>()
                    };
                    values(a).cmp(&values(b))
                })
                .then_with(|| a.timestamp_ms.cmp(&b.timestamp_ms))
        });
    }
    families
}

/// `families` as length-delimited `MetricFamily` messages, appended to `out`.
pub(crate) fn encode_protobuf(families: &[model::MetricFamily], out: &mut Vec<u8>) {
    for family in families {
        prost::Message::encode_length_delimited(family, out)
            .expect("a Vec grows to hold whatever is encoded into it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector of the full model whose collection panics when told to.
    #[derive(Clone)]
    struct Fragile {
        desc: std::sync::Arc<Desc>,
        panics: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl FullCollector for Fragile {
        fn descs(&self) -> Vec<&Desc> {
            vec![&self.desc]
        }

        fn collect_model(&self, _: Detail) -> Vec<model::MetricFamily> {
            if self.panics.load(std::sync::atomic::Ordering::Relaxed) {
                panic!("deliberate collector panic");
            }
            vec![model::MetricFamily {
                name: "fragile".into(),
                help: "Help.".into(),
                r#type: model::MetricType::Gauge as i32,
                metric: vec![model::Metric {
                    gauge: Some(model::Gauge { value: 1.0 }),
                    ..model::Metric::default()
                }],
                unit: String::new(),
            }]
        }
    }

    #[test]
    fn a_panicking_collector_leaves_later_text_scrapes_whole() {
        let registry = Registry::new();
        let fragile = Fragile {
            desc: std::sync::Arc::new(
                Desc::new("fragile".into(), "Help.".into(), vec![], Default::default()).unwrap(),
            ),
            panics: Default::default(),
        };
        registry
            .register(Box::new(FullModel(fragile.clone())))
            .unwrap();
        fragile
            .panics
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let full =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gather(&registry, None)));
        assert!(full.is_err());
        fragile
            .panics
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // The same thread's next text gather still gets the family.
        assert_eq!(registry.gather().len(), 1);
        assert_eq!(gather(&registry, None).len(), 1);
    }

    const PROMETHEUS_2_42: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_2_42_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// Prometheus 3.x's default `scrape_protocols`, with `escaping` parameters.
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    const PROMETHEUS_3_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

    fn negotiate(accept: &str) -> Format {
        Format::negotiate(Some(accept), None)
    }

    #[test]
    fn prometheus_gets_its_first_choice() {
        assert_eq!(negotiate(PROMETHEUS_2_42), Format::OpenMetrics);
        assert_eq!(negotiate(PROMETHEUS_2_42_NATIVE), Format::Protobuf);
        assert_eq!(negotiate(PROMETHEUS_3), Format::OpenMetrics);
        assert_eq!(negotiate(PROMETHEUS_3_NATIVE), Format::Protobuf);
        // A job with `scrape_protocols: [PrometheusText0.0.4]`.
        assert_eq!(negotiate("text/plain;version=0.0.4"), Format::Text);
    }

    #[test]
    fn weights_decide_then_names_then_order() {
        assert_eq!(
            negotiate("text/plain;q=0.9, application/openmetrics-text;q=0.8"),
            Format::Text
        );
        assert_eq!(
            negotiate("application/openmetrics-text, text/plain"),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("text/plain, application/openmetrics-text"),
            Format::Text
        );
        // A wildcard at the same weight as a named format loses to it.
        assert_eq!(
            negotiate("*/*, application/vnd.google.protobuf"),
            Format::Protobuf
        );
        // A wildcard with more weight than the named format stands for text.
        assert_eq!(
            negotiate("application/openmetrics-text;q=0.2, */*;q=0.9"),
            Format::Text
        );
        assert_eq!(
            negotiate("APPLICATION/OpenMetrics-Text ; Version=\"1.0.0\" ; Q=1"),
            Format::OpenMetrics
        );
    }

    #[test]
    fn anything_unknown_absent_or_refused_gets_text() {
        for accept in [
            "",
            "application/json",
            "application/openmetrics-text;version=2.0.0",
            "application/vnd.google.protobuf;proto=other.Message",
            "application/vnd.google.protobuf;encoding=text",
            "text/plain;version=1.0.0",
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;q=high",
            "application/openmetrics-text;q=2",
            "application/openmetrics-text;version",
            "garbage",
            ";;;,,,",
            "\u{0}\u{ff}",
        ] {
            assert_eq!(negotiate(accept), Format::Text, "{accept:?}");
        }
        assert_eq!(Format::negotiate(None, None), Format::Text);
        // A range past the 32nd is not read.
        let long = format!("{}application/openmetrics-text", "x/y,".repeat(40));
        assert_eq!(negotiate(&long), Format::Text);
    }

    #[test]
    fn the_query_forces_a_format() {
        for format in Format::ALL {
            let query = format!("format={format}");
            assert_eq!(
                Format::negotiate(Some(PROMETHEUS_2_42_NATIVE), Some(&query)),
                format
            );
            let among_others = format!("a=1&format={}&b", format.query_value());
            assert_eq!(Format::negotiate(None, Some(&among_others)), format);
        }
        assert_eq!(
            Format::negotiate(Some(PROMETHEUS_2_42_NATIVE), Some("format=yaml")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(
                Some(PROMETHEUS_2_42_NATIVE),
                Some("formats=text&x=format=text")
            ),
            Format::Protobuf
        );
    }
}
