//! Micro-benchmarks of what metrics cost per request and per scrape.
//!
//! `cargo bench --bench recording` — numbers are quoted in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use babylon::__internal::{http_families, new_trace, Exchange, HttpFamilies, Transport};
use babylon::metrics::ExemplarSource;
use babylon::metrics::{Format, Metrics};
use criterion::{criterion_group, criterion_main, Criterion};
use rocket::http::Method;
use rocket::local::blocking::Client;
use serde_json::json;

// The binary's allocator (crates/babylon/src/memory.rs), so that these numbers are the service's.
#[global_allocator]
static ALLOCATOR: babylon::memory::Allocator = babylon::memory::Allocator;

/// A registry with the HTTP families, and room for the 10,000-series registry of the
/// render benchmark (rendered in every exposition format).
fn metrics() -> (Metrics, HttpFamilies) {
    let figment = babylon::settings::figment_from(json!({
        "metrics": { "max_series_per_family": 100_000 },
    }));
    let settings = babylon::settings::Settings::from_figment(&figment).unwrap();
    let metrics = Metrics::new(&settings.metrics).unwrap();
    let http = http_families(&metrics, &settings.metrics, true).unwrap();
    (metrics, http)
}

/// Recording one finished request into every HTTP family, with its exemplar (kept once a
/// second per bucket, so almost every call only compares timestamps, as in a busy worker).
fn observe(c: &mut Criterion) {
    let (_metrics, http) = metrics();
    let exemplar = ExemplarSource::new(&new_trace(), std::time::Instant::now());
    let exchange = Exchange {
        route: "/api/items/<id>",
        method: Method::Get,
        transport: Transport::Http,
        status: 200,
        seconds: 0.0003,
        request_body_bytes: 0,
        response_body_bytes: Some(120),
        exception: None,
        exemplar: Some(exemplar),
    };
    c.bench_function("observe one request (all HTTP families)", |b| {
        b.iter(|| http.observe(black_box(&exchange)))
    });
}

/// One histogram observation: the `prometheus` crate's (four locked read-modify-writes)
/// against babylon's per-thread one (plain loads and stores), same bounds, same value.
fn histogram(c: &mut Criterion) {
    let buckets = babylon::settings::Buckets::django_latency();
    let shared = babylon::prometheus::Histogram::with_opts(
        babylon::prometheus::HistogramOpts::new("shared", "help").buckets(buckets.to_vec()),
    )
    .unwrap();
    let sharded = babylon::__internal::ShardedHistogram::new(buckets);
    let mut group = c.benchmark_group("one histogram observation");
    group.bench_function("prometheus::Histogram", |b| {
        b.iter(|| shared.observe(black_box(0.0003)))
    });
    group.bench_function("ShardedHistogram", |b| {
        b.iter(|| sharded.observe(black_box(0.0003)))
    });
    // Every available core observing at once, as the workers of a busy service do: the
    // shared histogram's cache lines then move between cores on every observation.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    group.bench_function(format!("prometheus::Histogram, {threads} threads"), |b| {
        b.iter_custom(|iters| on_every_core(threads, iters, || shared.observe(0.0003)))
    });
    group.bench_function(format!("ShardedHistogram, {threads} threads"), |b| {
        b.iter_custom(|iters| on_every_core(threads, iters, || sharded.observe(0.0003)))
    });
    group.finish();
}

/// Wall time for `threads` threads to run `observe` `iters` times each.
fn on_every_core(threads: usize, iters: u64, observe: impl Fn() + Sync) -> Duration {
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| (0..iters).for_each(|_| observe()));
        }
    });
    start.elapsed()
}

/// A whole request through Rocket's local client, with metrics and blocking each on or
/// off: the differences are the per-request costs of the fairings.
fn local_request(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let client = |metrics: bool, blocking: bool| {
        let file = format!("{metrics}-{blocking}.sqlite");
        let url = format!("sqlite://{}", dir.path().join(file).display());
        let settings = babylon::settings::figment_from(json!({
            "log_level": "off",
            "databases": { "main": { "url": url } },
            "metrics": { "enabled": metrics, "export": { "enabled": false } },
            "blocking": {
                "enabled": blocking,
                "deny": ["192.0.2.0/24"],
                "rate_limit": { "per_second": 1000000, "burst": 1000000 },
            },
        }));
        let app = babylon_app::App::from_figment(settings).unwrap();
        Client::untracked(app.rocket().unwrap()).unwrap()
    };
    let mut group = c.benchmark_group("GET /api/live via local client");
    for (name, metrics, blocking) in [
        ("metrics+blocking on", true, true),
        ("metrics on, blocking off", true, false),
        ("metrics off, blocking on", false, true),
        ("metrics+blocking off", false, false),
    ] {
        let client = client(metrics, blocking);
        let peer = "127.0.0.1:4000".parse().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| client.get("/api/live").remote(peer).dispatch())
        });
    }
    group.finish();
}

/// Rendering a registry of about 10,000 series, as a scrape does.
fn render(c: &mut Criterion) {
    let (metrics, http) = metrics();
    // 100 routes x 4 methods x (18 histogram series + 4 counters) = ~8,800, plus the rest.
    for route in 0..100 {
        for method in [Method::Get, Method::Post, Method::Put, Method::Delete] {
            let route = format!("/api/r{route}/<id>");
            http.observe(&Exchange {
                route: &route,
                method,
                transport: Transport::Http,
                status: 200,
                seconds: 0.01,
                request_body_bytes: 10,
                response_body_bytes: Some(100),
                exception: None,
                exemplar: Some(ExemplarSource::new(&new_trace(), std::time::Instant::now())),
            });
        }
    }
    let custom = metrics
        .custom()
        .counter("bench_padding_total", "Padding series.", &["n"])
        .unwrap();
    let series = |m: &Metrics| {
        String::from_utf8(m.render())
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count()
    };
    let mut n = 0;
    while series(&metrics) < 10_000 {
        for _ in 0..100 {
            custom.with_label_values(&[&n.to_string()]).inc();
            n += 1;
        }
    }
    println!("registry: {} series", series(&metrics));
    // One render per second is a scrape interval of 1 s; its share of one core is the
    // time per render divided by that second.
    let mut group = c.benchmark_group("render 10k series");
    for format in Format::ALL {
        let bytes = metrics.render_as(format).len();
        println!("{format}: {bytes} bytes per scrape");
        group.bench_function(format.to_string(), |b| {
            b.iter(|| black_box(metrics.render_as(format)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = observe, histogram, local_request, render
}
criterion_main!(benches);
