//! Typed custom families: declared once as a struct, registered at start-up, recorded
//! with label sets the compiler checks.
//!
//! ```
//! use babylon::metrics::{Counter, Families, Gauge, Histogram, LabelSet, LabelValue, Metrics};
//!
//! #[derive(Families)]
//! #[families(prefix = "shop")]
//! struct ShopMetrics {
//!     /// Orders placed, by kind.
//!     orders_total: Counter<OrderLabels>,
//!     /// Time to store an order.
//!     store_seconds: Histogram,
//!     /// Orders waiting to ship.
//!     queue_depth: Gauge,
//! }
//!
//! #[derive(LabelSet)]
//! struct OrderLabels {
//!     kind: OrderKind,
//! }
//!
//! #[derive(LabelValue)]
//! enum OrderKind {
//!     Book,
//!     PowerTool,
//! }
//!
//! # let figment = babylon::settings::figment_from(serde_json::json!({}));
//! # let settings = babylon::settings::Settings::from_figment(&figment).unwrap();
//! # let metrics = Metrics::new(&settings.metrics).unwrap();
//! // At start-up: a clash or a bad label stops start-up, naming the family.
//! let shop = ShopMetrics::register(&metrics).unwrap();
//! // In a handler: one line each.
//! shop.orders_total.with(&OrderLabels { kind: OrderKind::PowerTool }).inc();
//! shop.queue_depth.set(3.0);
//! let stored = shop.store_seconds.time_fn(|| "stored");
//! # assert_eq!(stored, "stored");
//!
//! let text = String::from_utf8(metrics.render()).unwrap();
//! assert!(text.contains("# HELP shop_orders_total Orders placed, by kind.\n"));
//! assert!(text.contains("shop_orders_total{kind=\"power_tool\"} 1\n"));
//! assert!(text.contains("shop_queue_depth 3\n"));
//! assert!(text.contains("shop_store_seconds_count 1\n"));
//! ```
//!
//! `#[derive(Families)]` names each family after its field (after `prefix_` when the
//! struct has `#[families(prefix = "…")]`, or `#[family(name = "…")]` on the field) and
//! takes its HELP text from the field's doc comment. It refuses at compile time a family
//! without a doc comment, a name Prometheus does not accept, a counter whose name does not
//! end in `_total` and a gauge or histogram whose name does. A histogram takes
//! `#[family(buckets = [0.01, 0.1, 1.0])]` (Prometheus' default buckets otherwise).
//!
//! Every family is capped like the other custom families: at most
//! `metrics.max_series_per_family` label sets, then `<overflow>`.

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;

use crate::prometheus::{self, GaugeVec};

use super::application::{CounterSeries, CounterVec, HistogramVec, Series};

use super::cardinality::Capped;
use super::{CustomMetricError, Metrics};

pub use babylon_macros::{Families, LabelSet, LabelValue};

/// A struct of families, registered together: derive it with `#[derive(Families)]`.
pub trait Families: Sized {
    /// Registers every family of the struct in `metrics`' registry.
    fn register(metrics: &Metrics) -> Result<Self, CustomMetricError>;
}

/// The values of a family's labels, one field per label: derive it with
/// `#[derive(LabelSet)]` on a struct whose fields are [`LabelValue`]s. `()` is the label
/// set of a family without labels.
pub trait LabelSet {
    /// The label names, in the order of [`LabelSet::with_values`].
    const NAMES: &'static [&'static str];
    /// Calls `f` with the label values, in the order of [`LabelSet::NAMES`].
    fn with_values<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R;
}

impl LabelSet for () {
    const NAMES: &'static [&'static str] = &[];
    fn with_values<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R {
        f(&[])
    }
}

/// A value of one label: text, a number, a `bool`, or an enum that derives
/// `#[derive(LabelValue)]` (each variant its name in snake case, so the label's values
/// are bounded by the type).
pub trait LabelValue {
    /// The value as it appears in the exposition.
    fn label_value(&self) -> Cow<'_, str>;
}

impl LabelValue for str {
    fn label_value(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl LabelValue for String {
    fn label_value(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl LabelValue for Cow<'_, str> {
    fn label_value(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl<T: LabelValue + ?Sized> LabelValue for &T {
    fn label_value(&self) -> Cow<'_, str> {
        (**self).label_value()
    }
}

impl LabelValue for bool {
    fn label_value(&self) -> Cow<'_, str> {
        Cow::Borrowed(if *self { "true" } else { "false" })
    }
}

macro_rules! number_label_values {
    ($($number:ty),*) => {$(
        impl LabelValue for $number {
            fn label_value(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
number_label_values!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// What `#[derive(Families)]` knows of one field: its name, HELP text and buckets.
#[derive(Debug, Clone, Copy)]
pub struct FamilyDef {
    /// The family's name, before `metrics.namespace`.
    pub name: &'static str,
    /// The HELP text.
    pub help: &'static str,
    /// A histogram's bucket upper bounds; `None`: Prometheus' default buckets.
    pub buckets: Option<&'static [f64]>,
}

/// A family type a [`Families`] struct may hold: [`Counter`], [`Gauge`], [`Histogram`].
pub trait Family: Sized {
    /// Registers the family `def` in `metrics`' registry.
    fn register(metrics: &Metrics, def: &FamilyDef) -> Result<Self, CustomMetricError>;
}

/// A family type over a capped `prometheus` vector: the struct, `Clone` (whatever `L`
/// is: label sets need not be `Clone`), registration through [`CustomMetrics`] (so the
/// name, type and label checks are the by-name API's), and `with`.
///
/// [`CustomMetrics`]: super::CustomMetrics
macro_rules! family_type {
    ($(#[$doc:meta])* $name:ident, $vec:ty, $child:ty, |$custom:ident, $def:ident, $labels:ident| $register:expr) => {
        $(#[$doc])*
        pub struct $name<L = ()> {
            family: Capped<$vec>,
            _labels: PhantomData<fn(&L)>,
        }

        impl<L> Clone for $name<L> {
            fn clone(&self) -> Self {
                $name {
                    family: self.family.clone(),
                    _labels: PhantomData,
                }
            }
        }

        impl<L: LabelSet> Family for $name<L> {
            fn register(metrics: &Metrics, $def: &FamilyDef) -> Result<Self, CustomMetricError> {
                let ($custom, $labels) = (metrics.custom(), L::NAMES);
                Ok($name {
                    family: $register?,
                    _labels: PhantomData,
                })
            }
        }

        impl<L: LabelSet> $name<L> {
            /// The series of one label set.
            pub fn with(&self, labels: &L) -> $child {
                labels.with_values(|values| self.family.with_label_values(values)).into()
            }
        }
    };
}

family_type!(
    /// An integer counter family with the labels of `L` (none by default).
    Counter, CounterVec, CounterSeries,
    |custom, def, labels| custom.counter(def.name, def.help, labels)
);

family_type!(
    /// A gauge family (a value that goes up and down) with the labels of `L`.
    Gauge, GaugeVec, prometheus::Gauge,
    |custom, def, labels| custom.gauge(def.name, def.help, labels)
);

family_type!(
    /// A histogram family with the labels of `L`; without buckets of its own
    /// ([`FamilyDef::buckets`]), Prometheus' default ones.
    Histogram, HistogramVec, Series,
    |custom, def, labels| custom.histogram(
        def.name,
        def.help,
        labels,
        def.buckets.unwrap_or(prometheus::DEFAULT_BUCKETS),
    )
);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.family.with_label_values(&[]).inc();
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.family.with_label_values(&[]).inc_by(n);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.family.with_label_values(&[]).get()
    }
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.family.with_label_values(&[]).set(value);
    }

    /// Adds `delta` (negative to subtract).
    pub fn add(&self, delta: f64) {
        self.family.with_label_values(&[]).add(delta);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.family.with_label_values(&[]).inc();
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.family.with_label_values(&[]).dec();
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        self.family.with_label_values(&[]).get()
    }
}

impl Histogram {
    fn series(&self) -> Series {
        self.family.with_label_values(&[])
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        self.series().observe(value);
    }

    /// Awaits `work` and records how long it took, in seconds.
    pub async fn time<T>(&self, work: impl Future<Output = T>) -> T {
        self.series().time(work).await
    }

    /// Runs `work` and records how long it took, in seconds.
    pub fn time_fn<T>(&self, work: impl FnOnce() -> T) -> T {
        self.series().time_fn(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(max_series_per_family: u64) -> Metrics {
        let figment = crate::settings::figment_from(serde_json::json!({
            "metrics": { "max_series_per_family": max_series_per_family },
        }));
        let settings = crate::settings::Settings::from_figment(&figment).unwrap();
        Metrics::new(&settings.metrics).unwrap()
    }

    #[derive(Families)]
    struct Orders {
        /// Orders, by customer.
        orders_total: Counter<Customer>,
        /// Seconds to store.
        #[family(name = "orders_store_seconds", buckets = [0.5, 1.0])]
        store: Histogram<Customer>,
    }

    #[derive(LabelSet)]
    struct Customer {
        customer: u32,
        r#type: &'static str,
    }

    #[test]
    fn a_typed_family_is_capped_and_labelled_by_field_name() {
        let metrics = metrics(2);
        let orders = Orders::register(&metrics).unwrap();
        for customer in 0..5 {
            orders
                .orders_total
                .with(&Customer {
                    customer,
                    r#type: "retail",
                })
                .inc();
        }
        orders
            .store
            .with(&Customer {
                customer: 0,
                r#type: "retail",
            })
            .observe(0.7);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("orders_total{customer=\"1\",type=\"retail\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("orders_total{customer=\"<overflow>\",type=\"<overflow>\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "orders_store_seconds_bucket{customer=\"0\",type=\"retail\",le=\"1\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_clash_with_a_family_of_another_type_or_labels_names_the_family() {
        let metrics = metrics(100);
        metrics
            .custom()
            .gauge("orders_total", "Orders.", &["customer", "type"])
            .unwrap();
        let error = Orders::register(&metrics).err().unwrap().to_string();
        assert!(
            error.contains("`orders_total`") && error.contains("gauge"),
            "{error}"
        );

        #[derive(Families)]
        #[allow(dead_code)] // Registered only to provoke the clash.
        struct Builtin {
            /// Clashes with babylon's own family.
            babylon_build_info: Gauge,
        }
        let error = Builtin::register(&metrics).err().unwrap().to_string();
        assert!(error.contains("`babylon_build_info`"), "{error}");
    }
}
