//! The `prometheus` crate's gathered families in the full data model of [`model`].

use super::model::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Summary, Untyped,
};
use crate::prometheus::proto;

/// `family` as the full model holds it; nothing it carries is lost.
pub(crate) fn from_prometheus(family: &proto::MetricFamily) -> MetricFamily {
    let kind = family.get_field_type();
    MetricFamily {
        name: family.name().to_string(),
        help: family.help().to_string(),
        r#type: metric_type(kind) as i32,
        metric: family
            .get_metric()
            .iter()
            .map(|metric| series(metric, kind))
            .collect(),
        unit: String::new(),
    }
}

fn metric_type(kind: proto::MetricType) -> MetricType {
    match kind {
        proto::MetricType::COUNTER => MetricType::Counter,
        proto::MetricType::GAUGE => MetricType::Gauge,
        proto::MetricType::SUMMARY => MetricType::Summary,
        proto::MetricType::UNTYPED => MetricType::Untyped,
        proto::MetricType::HISTOGRAM => MetricType::Histogram,
    }
}

/// One series, with the one field its family's type reads (the text encoder reads no
/// other either).
fn series(metric: &proto::Metric, kind: proto::MetricType) -> Metric {
    let mut series = Metric {
        label: metric
            .get_label()
            .iter()
            .map(|pair| LabelPair {
                name: pair.name().to_string(),
                value: pair.value().to_string(),
            })
            .collect(),
        timestamp_ms: metric.timestamp_ms(),
        ..Metric::default()
    };
    match kind {
        proto::MetricType::COUNTER => {
            series.counter = Some(Counter {
                value: metric.get_counter().get_value(),
                ..Counter::default()
            })
        }
        proto::MetricType::GAUGE => {
            series.gauge = Some(Gauge {
                value: metric.get_gauge().get_value(),
            })
        }
        // Deprecated as "protobuf specific" and read by the crate's own text encoder all
        // the same: an untyped family a collector returns must not lose its values here.
        #[allow(deprecated)]
        proto::MetricType::UNTYPED => {
            series.untyped = Some(Untyped {
                value: metric.get_untyped().get_value(),
            })
        }
        proto::MetricType::SUMMARY => {
            let summary = metric.get_summary();
            series.summary = Some(Summary {
                sample_count: summary.sample_count(),
                sample_sum: summary.sample_sum(),
                quantile: summary
                    .get_quantile()
                    .iter()
                    .map(|quantile| Quantile {
                        quantile: quantile.quantile(),
                        value: quantile.value(),
                    })
                    .collect(),
                created_timestamp: None,
            })
        }
        proto::MetricType::HISTOGRAM => {
            let histogram = metric.get_histogram();
            series.histogram = Some(Histogram {
                sample_count: histogram.get_sample_count(),
                sample_sum: histogram.get_sample_sum(),
                bucket: histogram
                    .get_bucket()
                    .iter()
                    .map(|bucket| Bucket {
                        cumulative_count: bucket.cumulative_count(),
                        upper_bound: bucket.upper_bound(),
                        exemplar: None,
                    })
                    .collect(),
                ..Histogram::default()
            })
        }
    }
    series
}

/// `family` as the `prometheus` crate's text encoder takes it: what text 0.0.4 can show.
/// Native buckets, exemplars and created timestamps have no place there, and an explicit
/// `+Inf` bucket is left to the encoder, which writes it from the count.
pub(crate) fn to_prometheus(family: &MetricFamily) -> proto::MetricFamily {
    let mut converted = proto::MetricFamily::default();
    converted.set_name(family.name.clone());
    converted.set_help(family.help.clone());
    let kind = match MetricType::try_from(family.r#type) {
        Ok(MetricType::Counter) => proto::MetricType::COUNTER,
        Ok(MetricType::Gauge) => proto::MetricType::GAUGE,
        Ok(MetricType::Summary) => proto::MetricType::SUMMARY,
        Ok(MetricType::Histogram | MetricType::GaugeHistogram) => proto::MetricType::HISTOGRAM,
        Ok(MetricType::Untyped) | Err(_) => proto::MetricType::UNTYPED,
    };
    converted.set_field_type(kind);
    converted.set_metric(family.metric.iter().map(to_prometheus_series).collect());
    converted
}

fn to_prometheus_series(metric: &Metric) -> proto::Metric {
    let mut converted = proto::Metric::from_label(
        metric
            .label
            .iter()
            .map(|pair| {
                let mut converted = proto::LabelPair::default();
                converted.set_name(pair.name.clone());
                converted.set_value(pair.value.clone());
                converted
            })
            .collect(),
    );
    if metric.timestamp_ms != 0 {
        converted.set_timestamp_ms(metric.timestamp_ms);
    }
    if let Some(counter) = &metric.counter {
        let mut value = proto::Counter::default();
        value.set_value(counter.value);
        converted.set_counter(value);
    }
    if let Some(gauge) = &metric.gauge {
        let mut value = proto::Gauge::default();
        value.set_value(gauge.value);
        converted.set_gauge(value);
    }
    // Deprecated as "protobuf specific"; the text encoder still reads it (see above).
    #[allow(deprecated)]
    if let Some(untyped) = &metric.untyped {
        let mut value = proto::Untyped::default();
        value.set_value(untyped.value);
        converted.set_untyped(value);
    }
    if let Some(summary) = &metric.summary {
        let mut value = proto::Summary::default();
        value.set_sample_count(summary.sample_count);
        value.set_sample_sum(summary.sample_sum);
        value.set_quantile(
            summary
                .quantile
                .iter()
                .map(|quantile| {
                    let mut converted = proto::Quantile::default();
                    converted.set_quantile(quantile.quantile);
                    converted.set_value(quantile.value);
                    converted
                })
                .collect(),
        );
        converted.set_summary(value);
    }
    if let Some(histogram) = &metric.histogram {
        let mut value = proto::Histogram::default();
        value.set_sample_count(histogram.sample_count);
        value.set_sample_sum(histogram.sample_sum);
        value.set_bucket(
            histogram
                .bucket
                .iter()
                .filter(|bucket| bucket.upper_bound != f64::INFINITY)
                .map(|bucket| {
                    let mut converted = proto::Bucket::default();
                    converted.set_cumulative_count(bucket.cumulative_count);
                    converted.set_upper_bound(bucket.upper_bound);
                    converted
                })
                .collect(),
        );
        converted.set_histogram(value);
    }
    converted
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::prometheus::{Encoder, TextEncoder};

    fn label_pairs() -> impl Strategy<Value = Vec<proto::LabelPair>> {
        proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 0..3).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name(name);
                    pair.set_value(value);
                    pair
                })
                .collect()
        })
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            0.0..1e6f64
        ]
    }

    /// A family as the `prometheus` crate's collectors make them: any type but untyped, labels,
    /// values (infinities and NaN included), histograms with finite bounds only.
    fn family() -> impl Strategy<Value = proto::MetricFamily> {
        // Not untyped: the text encoder panics on it ("not implemented"), so no registry
        // that is ever scraped holds one.
        let kind = prop_oneof![
            Just(proto::MetricType::COUNTER),
            Just(proto::MetricType::GAUGE),
            Just(proto::MetricType::SUMMARY),
            Just(proto::MetricType::HISTOGRAM),
        ];
        let metric = (
            label_pairs(),
            value(),
            any::<u64>(),
            proptest::collection::vec((-1e6..1e6f64, any::<u64>()), 0..4),
            prop_oneof![Just(0i64), any::<i64>()],
        );
        (
            "[a-z_]{1,12}",
            "\\PC{0,20}",
            kind,
            // A registry gathers no family without series.
            proptest::collection::vec(metric, 1..4),
        )
            .prop_map(|(name, help, kind, metrics)| {
                let mut family = proto::MetricFamily::default();
                family.set_name(name);
                family.set_help(help);
                family.set_field_type(kind);
                let metrics = metrics
                    .into_iter()
                    .map(|(labels, value, count, buckets, timestamp)| {
                        let mut metric = proto::Metric::from_label(labels);
                        if timestamp != 0 {
                            metric.set_timestamp_ms(timestamp);
                        }
                        match kind {
                            proto::MetricType::COUNTER => {
                                let mut counter = proto::Counter::default();
                                counter.set_value(value);
                                metric.set_counter(counter);
                            }
                            proto::MetricType::GAUGE => {
                                let mut gauge = proto::Gauge::default();
                                gauge.set_value(value);
                                metric.set_gauge(gauge);
                            }
                            #[allow(deprecated)]
                            proto::MetricType::UNTYPED => {
                                let mut untyped = proto::Untyped::default();
                                untyped.set_value(value);
                                metric.set_untyped(untyped);
                            }
                            proto::MetricType::SUMMARY => {
                                let mut summary = proto::Summary::default();
                                summary.set_sample_count(count);
                                summary.set_sample_sum(value);
                                summary.set_quantile(
                                    buckets
                                        .iter()
                                        .map(|(q, _)| {
                                            let mut quantile = proto::Quantile::default();
                                            quantile.set_quantile(q.abs() / 1e6);
                                            quantile.set_value(*q);
                                            quantile
                                        })
                                        .collect(),
                                );
                                metric.set_summary(summary);
                            }
                            proto::MetricType::HISTOGRAM => {
                                let mut histogram = proto::Histogram::default();
                                histogram.set_sample_count(count);
                                histogram.set_sample_sum(value);
                                histogram.set_bucket(
                                    buckets
                                        .iter()
                                        .map(|(bound, count)| {
                                            let mut bucket = proto::Bucket::default();
                                            bucket.set_upper_bound(*bound);
                                            bucket.set_cumulative_count(*count);
                                            bucket
                                        })
                                        .collect(),
                                );
                                metric.set_histogram(histogram);
                            }
                        }
                        metric
                    })
                    .collect();
                family.set_metric(metrics);
                family
            })
    }

    fn text(families: &[proto::MetricFamily]) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        out
    }

    proptest! {
        /// What collectors of the full model hand the text encoder is what a collector of
        /// the `prometheus` crate's model would have: the text exposition is unchanged,
        /// byte for byte, for any family.
        #[test]
        fn the_text_of_a_family_survives_the_full_model(families in proptest::collection::vec(family(), 1..4)) {
            let through_model: Vec<_> = families
                .iter()
                .map(|family| to_prometheus(&from_prometheus(family)))
                .collect();
            prop_assert_eq!(text(&through_model), text(&families));
            for (before, after) in families.iter().zip(&through_model) {
                let (before, after) = (format!("{before:?}"), format!("{after:?}"));
                prop_assert_eq!(before, after);
            }
        }
    }
}
