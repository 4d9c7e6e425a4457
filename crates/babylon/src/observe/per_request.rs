//! The six families every request increments, kept as one histogram per kind of request.
//!
//! django-prometheus' per-request families are five counters and the duration histogram,
//! and each request adds one to all six. Their label sets are all projections of one key:
//! (route, method, status, transport). So babylon keeps one [`ShardedHistogram`] of
//! durations per key and derives the six families from them at scrape time: the counters
//! are the histograms' counts, summed over the labels a family does not carry. A request
//! then makes one observation into its own thread's shard, without a lock or a locked
//! instruction, instead of six atomic updates and a read lock.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rocket::http::Method;
use thread_local::ThreadLocal;

use super::families::Transport;
use crate::metrics::exposition::{model, Detail, FullCollector};
use crate::metrics::sharded::{labelled, model_family, Recording, ShardedHistogram, Snapshot};
use crate::metrics::ExemplarSource;
use crate::prometheus::core::Desc;
use crate::settings::Buckets;

/// What, besides the route, tells kinds of request apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RequestKind {
    pub method: Method,
    pub status: u16,
    pub transport: Transport,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// Histograms by route, then by kind. Two levels so that a lookup borrows the route as
/// `&str` instead of building an owned key.
type ByRoute = FastMap<Box<str>, FastMap<RequestKind, Arc<ShardedHistogram>>>;

/// The per-request families; cheap to clone, clones share the histograms.
#[derive(Clone)]
pub(super) struct RequestFamilies {
    inner: Arc<Inner>,
}

struct Inner {
    descs: Descs,
    latency_buckets: Buckets,
    recording: Recording,
    /// Every histogram, for scrapes and for threads that meet a kind for the first time.
    histograms: RwLock<ByRoute>,
    /// Each thread's copy of the handles it has used, so that it finds them without a lock.
    known_to_thread: ThreadLocal<RefCell<ByRoute>>,
}

struct Descs {
    by_method: Desc,
    by_transport: Desc,
    by_route_transport_method: Desc,
    duration: Desc,
    by_status: Desc,
    by_status_route_method: Desc,
}

fn desc(name: &str, help: &str, labels: &[&str]) -> crate::prometheus::Result<Desc> {
    Desc::new(
        name.to_string(),
        help.to_string(),
        labels.iter().map(|label| label.to_string()).collect(),
        Default::default(),
    )
}

impl RequestFamilies {
    pub(super) fn new(
        latency_buckets: Buckets,
        recording: Recording,
    ) -> crate::prometheus::Result<Self> {
        let descs = Descs {
            by_method: desc(
                "rocket_http_requests_by_method_total",
                "Requests received, by HTTP method.",
                &["method"],
            )?,
            by_transport: desc(
                "rocket_http_requests_by_transport_total",
                "Requests received, by transport (http or https).",
                &["transport"],
            )?,
            by_route_transport_method: desc(
                "rocket_http_requests_by_route_transport_method_total",
                "Requests received, by route template, transport and method.",
                &["route", "transport", "method"],
            )?,
            duration: desc(
                "rocket_http_request_duration_seconds",
                "Time from request arrival to response, by route template and method.",
                &["route", "method"],
            )?,
            by_status: desc(
                "rocket_http_responses_by_status_total",
                "Responses sent, by status code.",
                &["status"],
            )?,
            by_status_route_method: desc(
                "rocket_http_responses_by_status_route_method_total",
                "Responses sent, by status code, route template and method.",
                &["status", "route", "method"],
            )?,
        };
        Ok(RequestFamilies {
            inner: Arc::new(Inner {
                descs,
                latency_buckets,
                recording,
                histograms: RwLock::default(),
                known_to_thread: ThreadLocal::new(),
            }),
        })
    }

    /// Records one request of `kind` to `route` that took `seconds`, with `exemplar` as
    /// the request it was.
    pub(super) fn record(
        &self,
        route: &str,
        kind: RequestKind,
        seconds: f64,
        exemplar: Option<&ExemplarSource>,
    ) {
        let known = self.inner.known_to_thread.get_or_default();
        if let Some(histogram) = known.borrow().get(route).and_then(|kinds| kinds.get(&kind)) {
            histogram.observe_with(seconds, exemplar);
            return;
        }
        let histogram = self.inner.shared_histogram(route, kind);
        histogram.observe_with(seconds, exemplar);
        known
            .borrow_mut()
            .entry(route.into())
            .or_default()
            .insert(kind, histogram);
    }
}

impl Inner {
    /// The histogram of `kind` requests to `route`, made on first use.
    fn shared_histogram(&self, route: &str, kind: RequestKind) -> Arc<ShardedHistogram> {
        let mut histograms = self
            .histograms
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        histograms
            .entry(route.into())
            .or_default()
            .entry(kind)
            .or_insert_with(|| {
                Arc::new(ShardedHistogram::with(
                    self.latency_buckets.clone(),
                    self.recording,
                ))
            })
            .clone()
    }

    /// Every histogram's snapshot, with its route and kind.
    fn snapshots(&self, detail: Detail) -> Vec<(Box<str>, RequestKind, Snapshot)> {
        let histograms = self
            .histograms
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        histograms
            .iter()
            .flat_map(|(route, kinds)| {
                kinds.iter().map(|(kind, histogram)| {
                    (route.clone(), *kind, histogram.snapshot_with(detail))
                })
            })
            .collect()
    }
}

/// A counter's value and when its first contributor began.
#[derive(Clone, Copy)]
struct Count {
    value: u64,
    created: SystemTime,
}

/// Sums counts per label set; ordered, so that the exposition is too.
type Tally<'a, const N: usize> = BTreeMap<[&'a str; N], Count>;

fn tally<'a, const N: usize>(tally: &mut Tally<'a, N>, key: [&'a str; N], snapshot: &Snapshot) {
    let count = tally.entry(key).or_insert(Count {
        value: 0,
        created: snapshot.created(),
    });
    count.value += snapshot.count();
    count.created = count.created.min(snapshot.created());
}

fn counter_family<const N: usize>(desc: &Desc, tally: Tally<'_, N>) -> model::MetricFamily {
    let metrics = tally
        .into_iter()
        .map(|(values, count)| model::Metric {
            counter: Some(model::Counter {
                value: count.value as f64,
                exemplar: None,
                created_timestamp: Some(model::Timestamp::of(count.created)),
            }),
            ..labelled(desc, &values)
        })
        .collect();
    model_family(desc, model::MetricType::Counter, metrics)
}

impl FullCollector for RequestFamilies {
    fn descs(&self) -> Vec<&Desc> {
        let descs = &self.inner.descs;
        vec![
            &descs.by_method,
            &descs.by_transport,
            &descs.by_route_transport_method,
            &descs.duration,
            &descs.by_status,
            &descs.by_status_route_method,
        ]
    }

    fn collect_model(&self, detail: Detail) -> Vec<model::MetricFamily> {
        let snapshots = self.inner.snapshots(detail);
        let statuses: Vec<String> = snapshots
            .iter()
            .map(|(_, kind, _)| kind.status.to_string())
            .collect();
        let mut by_method = Tally::new();
        let mut by_transport = Tally::new();
        let mut by_route_transport_method = Tally::new();
        let mut by_status = Tally::new();
        let mut by_status_route_method = Tally::new();
        let mut durations: BTreeMap<[&str; 2], Snapshot> = BTreeMap::new();
        for ((route, kind, snapshot), status) in snapshots.iter().zip(&statuses) {
            let (route, method) = (&**route, kind.method.as_str());
            let transport = kind.transport.label();
            tally(&mut by_method, [method], snapshot);
            tally(&mut by_transport, [transport], snapshot);
            tally(
                &mut by_route_transport_method,
                [route, transport, method],
                snapshot,
            );
            tally(&mut by_status, [status.as_str()], snapshot);
            tally(
                &mut by_status_route_method,
                [status.as_str(), route, method],
                snapshot,
            );
            durations
                .entry([route, method])
                .and_modify(|total| total.merge(snapshot))
                .or_insert_with(|| snapshot.clone());
        }
        let descs = &self.inner.descs;
        let durations = durations
            .into_iter()
            .map(|(values, snapshot)| model::Metric {
                histogram: Some(snapshot.into_model(&self.inner.latency_buckets)),
                ..labelled(&descs.duration, &values)
            })
            .collect();
        vec![
            counter_family(&descs.by_method, by_method),
            counter_family(&descs.by_transport, by_transport),
            counter_family(&descs.by_route_transport_method, by_route_transport_method),
            model_family(&descs.duration, model::MetricType::Histogram, durations),
            counter_family(&descs.by_status, by_status),
            counter_family(&descs.by_status_route_method, by_status_route_method),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::FullModel;
    use crate::prometheus::core::Collector;
    use crate::prometheus::proto;

    fn kind(method: Method, status: u16) -> RequestKind {
        RequestKind {
            method,
            status,
            transport: Transport::Http,
        }
    }

    fn samples(families: &[proto::MetricFamily], name: &str) -> Vec<(Vec<String>, u64)> {
        let family = families.iter().find(|f| f.name() == name).unwrap();
        family
            .get_metric()
            .iter()
            .map(|metric| {
                let labels = metric
                    .get_label()
                    .iter()
                    .map(|pair| format!("{}={}", pair.name(), pair.value()))
                    .collect();
                let value = match family.get_field_type() {
                    proto::MetricType::HISTOGRAM => metric.get_histogram().get_sample_count(),
                    _ => metric.get_counter().get_value() as u64,
                };
                (labels, value)
            })
            .collect()
    }

    #[test]
    fn each_family_sums_the_kinds_it_does_not_label() {
        let families =
            RequestFamilies::new(Buckets::django_latency(), Recording::default()).unwrap();
        families.record("/a", kind(Method::Get, 200), 0.01, None);
        families.record("/a", kind(Method::Get, 404), 0.01, None);
        families.record("/b", kind(Method::Post, 200), 0.2, None);
        std::thread::scope(|scope| {
            scope.spawn(|| families.record("/a", kind(Method::Get, 200), 0.3, None));
        });
        let collected = FullModel(families.clone()).collect();
        let l = |pairs: &[&str]| pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            samples(&collected, "rocket_http_requests_by_method_total"),
            [(l(&["method=GET"]), 3), (l(&["method=POST"]), 1)]
        );
        assert_eq!(
            samples(&collected, "rocket_http_responses_by_status_total"),
            [(l(&["status=200"]), 3), (l(&["status=404"]), 1)]
        );
        assert_eq!(
            samples(&collected, "rocket_http_request_duration_seconds"),
            [
                (l(&["method=GET", "route=/a"]), 3),
                (l(&["method=POST", "route=/b"]), 1)
            ]
        );
        assert_eq!(
            samples(
                &collected,
                "rocket_http_responses_by_status_route_method_total"
            ),
            [
                (l(&["method=GET", "route=/a", "status=200"]), 2),
                (l(&["method=POST", "route=/b", "status=200"]), 1),
                (l(&["method=GET", "route=/a", "status=404"]), 1),
            ]
        );
        let durations = collected
            .iter()
            .find(|f| f.name() == "rocket_http_request_duration_seconds")
            .unwrap();
        let get_a = durations.get_metric()[0].get_histogram();
        assert!((get_a.get_sample_sum() - 0.32).abs() < 1e-9);
        assert_eq!(get_a.get_bucket()[0].cumulative_count(), 2);
    }
}
