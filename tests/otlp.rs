//! `tracing.otlp.*` on the real binary, against a real OTLP/gRPC receiver (the
//! fake-opentelemetry-collector crate's tonic server, started here): a request's server
//! span carries the trace of the answer's `traceparent` and of the exemplar a real
//! Prometheus keeps, its database statements and Redis commands are client spans under it,
//! an unsampled trace is not exported, and export heals by itself after a collector that
//! went silent comes back.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::redis_server::{unique_prefix, Keys, REDIS};
use common::silent_proxy::SilentProxy;
use common::workers::{command_in, start_command, Worker};
use common::{http_answer, Answer};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};

/// A real OTLP receiver on a runtime of its own, and every span it has received so far.
struct Collector {
    runtime: rocket::tokio::runtime::Runtime,
    server: FakeCollectorServer,
    received: Vec<ExportedSpan>,
}

impl Collector {
    fn start() -> Collector {
        let runtime = rocket::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(FakeCollectorServer::start()).unwrap();
        Collector {
            runtime,
            server,
            received: Vec::new(),
        }
    }

    /// The spans received once `done` holds for them, or after 30 s, whatever they are.
    fn spans_once(&mut self, done: impl Fn(&[ExportedSpan]) -> bool) -> &[ExportedSpan] {
        self.spans_within(Duration::from_secs(30), done)
    }

    /// The spans received once `done` holds for them, or after `patience`.
    fn spans_within(
        &mut self,
        patience: Duration,
        done: impl Fn(&[ExportedSpan]) -> bool,
    ) -> &[ExportedSpan] {
        let deadline = Instant::now() + patience;
        while !done(&self.received) && Instant::now() < deadline {
            let more = self
                .runtime
                .block_on(self.server.exported_spans(1, Duration::from_millis(200)));
            self.received.extend(more);
        }
        &self.received
    }
}

/// A worker on its own SQLite database in `dir`, exporting spans to `endpoint` at once
/// (a batch every 100 ms rather than every 5 s) and giving up on an export after 1 s,
/// continuing anyone's trace, with its item reads cached in the shared Redis under
/// `prefix` and its export port on loopback; `env` goes on top.
fn worker(
    dir: &tempfile::TempDir,
    ports: &common::ports::PortBlock,
    endpoint: &str,
    prefix: &Keys,
    env: &[(&str, &str)],
) -> Worker {
    let mut command = command_in(dir.path(), ports);
    command
        .env("BABYLON_TRACING__OTLP__ENDPOINT", endpoint)
        .env("BABYLON_TRACING__OTLP__SERVICE_NAME", "babylon-test")
        .env("BABYLON_TRACING__CONTINUE_TRACEPARENT_FROM", "anyone")
        .env("BABYLON_CACHE__BACKEND", "redis")
        .env("BABYLON_REDIS__URL", REDIS)
        .env("BABYLON_REDIS__KEY_PREFIX", &prefix.0)
        .env("BABYLON_METRICS__EXPORT__ADDRESS", "127.0.0.1")
        .env("BABYLON_TRACING__OTLP__EXPORT_INTERVAL_MS", "100")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000");
    command.envs(env.iter().copied());
    start_command(command)
}

/// The trace id and span id of an answer's `traceparent`.
fn ids_of(answer: &Answer) -> (String, String) {
    let traceparent = answer
        .header("traceparent")
        .unwrap_or_else(|| panic!("no traceparent in {answer:?}"));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

/// The value of attribute `name`, as written: the receiver keeps each value's `Debug`
/// form, `Some(AnyValue { value: Some(StringValue("POST")) })`.
fn attribute<'s>(span: &'s ExportedSpan, name: &str) -> Option<&'s str> {
    let debug = span.attributes.get(name)?;
    let (_, value) = debug.split_once("Value(")?;
    let value = &value[..value.find(')')?];
    Some(value.trim_matches('"'))
}

/// A `traceparent` of a caller's span, sampled or not.
fn caller(trace_id: &str, span_id: &str, sampled: bool) -> String {
    format!(
        "00-{trace_id}-{span_id}-{}",
        if sampled { "01" } else { "00" }
    )
}

/// The spans of one trace, by kind.
fn of_trace<'s>(
    spans: &'s [ExportedSpan],
    trace_id: &str,
) -> BTreeMap<&'s str, Vec<&'s ExportedSpan>> {
    let mut by_kind: BTreeMap<&str, Vec<&ExportedSpan>> = BTreeMap::new();
    for span in spans.iter().filter(|span| span.trace_id == trace_id) {
        by_kind.entry(span.kind.as_str()).or_default().push(span);
    }
    by_kind
}

/// A collector, and a worker exporting to it, with what the worker needs kept alive.
struct Scene {
    collector: Collector,
    worker: Worker,
    _keys: Keys,
    _ports: common::ports::PortBlock,
    _dir: tempfile::TempDir,
}

/// The scene of `test`; `None` (a skip, which fails under CI=true) without the shared
/// Redis.
fn scene(test: &str) -> Option<Scene> {
    if !common::redis_server::redis_available() {
        return None;
    }
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = common::ports::PortBlock::reserve(1);
    let keys = Keys(unique_prefix(test));
    let worker = worker(&dir, &ports, &collector.server.endpoint(), &keys, &[]);
    Some(Scene {
        collector,
        worker,
        _keys: keys,
        _ports: ports,
        _dir: dir,
    })
}

#[test]
fn a_requests_span_and_its_calls_carry_the_trace_of_its_answer_and_of_its_exemplar() {
    let Some(mut scene) = scene("otlp") else {
        return;
    };
    let (collector, worker) = (&mut scene.collector, &mut scene.worker);

    // A write (INSERT) under a caller's trace, then a cached read (Redis, then SELECT).
    let write_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let write = http_answer(
        worker.app_port,
        "POST",
        "/api/items",
        &[
            (
                "traceparent",
                &caller(write_trace, "00f067aa0ba902b7", true),
            ),
            ("Content-Type", "application/json"),
        ],
        r#"{"name":"traced","kind":"book"}"#,
    );
    assert_eq!(write.status, 201, "{write:?}");
    let (trace_id, request_span) = ids_of(&write);
    assert_eq!(trace_id, write_trace);
    assert_eq!(write.header("x-request-id"), Some(request_span.as_str()));
    let id = common::created_id(&write.body);
    let read = http_answer(worker.app_port, "GET", &format!("/api/items/{id}"), &[], "");
    assert_eq!(read.status, 200);
    let (read_trace, read_span) = ids_of(&read);

    let spans = collector.spans_once(|spans| {
        let write = of_trace(spans, write_trace);
        let read = of_trace(spans, &read_trace);
        write.contains_key("SPAN_KIND_SERVER")
            && write.contains_key("SPAN_KIND_CLIENT")
            && read.contains_key("SPAN_KIND_SERVER")
            && read
                .get("SPAN_KIND_CLIENT")
                .is_some_and(|calls| calls.len() >= 2)
    });

    // The write: a server span that is the answer's, under the caller's span.
    let write_spans = of_trace(spans, write_trace);
    let server = write_spans["SPAN_KIND_SERVER"].as_slice();
    assert_eq!(server.len(), 1, "{server:#?}");
    let server = server[0];
    assert_eq!(server.span_id, request_span);
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(server.name, "POST /api/items");
    assert_eq!(attribute(server, "http.request.method"), Some("POST"));
    assert_eq!(attribute(server, "http.route"), Some("/api/items"));
    assert_eq!(attribute(server, "http.response.status_code"), Some("201"));
    assert_eq!(attribute(server, "client.address"), Some("127.0.0.1"));
    assert!(server
        .status
        .as_ref()
        .is_none_or(|s| s.code != "STATUS_CODE_ERROR"));
    assert!(
        server.start_time_unix_nano > 0 && server.start_time_unix_nano <= server.end_time_unix_nano
    );
    // Its statements and its cache invalidation: client spans under it, inside its time,
    // one of them the INSERT.
    let calls = &write_spans["SPAN_KIND_CLIENT"];
    for call in calls {
        assert_eq!(call.parent_span_id, request_span, "{call:#?}");
        assert_ne!(call.span_id, request_span);
        let system = attribute(call, "db.system.name");
        assert!(matches!(system, Some("sqlite" | "redis")), "{call:#?}");
        assert!(
            call.start_time_unix_nano >= server.start_time_unix_nano,
            "{call:#?}\n{server:#?}"
        );
        assert!(
            call.end_time_unix_nano <= server.end_time_unix_nano,
            "{call:#?}\n{server:#?}"
        );
    }
    let insert = calls
        .iter()
        .find(|call| call.name == "INSERT items")
        .unwrap_or_else(|| panic!("no INSERT span: {calls:#?}"));
    assert_eq!(attribute(insert, "db.operation.name"), Some("INSERT"));
    assert_eq!(attribute(insert, "db.collection.name"), Some("items"));

    // The read: a new trace (no traceparent sent), its cache lookup in Redis and its
    // SELECT under it.
    let read_spans = of_trace(spans, &read_trace);
    let server = read_spans["SPAN_KIND_SERVER"][0];
    assert_eq!(server.span_id, read_span);
    assert_eq!(server.parent_span_id, "", "a new trace has no parent");
    assert_eq!(server.name, "GET /api/items/<id>");
    let systems: Vec<(&str, &str)> = read_spans["SPAN_KIND_CLIENT"]
        .iter()
        .map(|call| {
            assert_eq!(call.parent_span_id, read_span, "{call:#?}");
            (
                attribute(call, "db.system.name").unwrap_or(""),
                call.name.as_str(),
            )
        })
        .collect();
    assert!(
        systems.iter().any(|(system, _)| *system == "redis"),
        "{systems:?}"
    );
    assert!(systems.contains(&("sqlite", "SELECT")), "{systems:?}");

    // A real Prometheus keeps the write's exemplar: the same trace and span.
    let prometheus = common::prometheus::Prometheus::keeping_exemplars_of(worker.export_port());
    let mut exemplars = Vec::new();
    common::wait_for(Duration::from_secs(30), || {
        exemplars = prometheus.exemplar_ids(
            r#"rocket_http_request_duration_seconds_bucket{route="/api/items",method="POST"}"#,
        );
        !exemplars.is_empty()
    });
    assert_eq!(
        exemplars,
        [(write_trace.to_string(), request_span.clone())],
        "{}",
        prometheus.log()
    );
    let exported = common::sample_at(
        worker.export_port(),
        r#"babylon_otlp_spans_total{outcome="exported"}"#,
    );
    assert!(exported >= 5.0, "{exported}");
    common::workers::terminate(worker);
}

#[test]
fn a_trace_its_caller_did_not_sample_is_not_exported() {
    let Some(mut scene) = scene("otlp-sampling") else {
        return;
    };
    let (collector, worker) = (&mut scene.collector, &mut scene.worker);
    let unsampled = "11111111111111111111111111111111";
    let sampled = "22222222222222222222222222222222";
    for (trace, is_sampled) in [(unsampled, false), (sampled, true)] {
        let answer = http_answer(
            worker.app_port,
            "GET",
            "/api/items",
            &[(
                "traceparent",
                &caller(trace, "00f067aa0ba902b7", is_sampled),
            )],
            "",
        );
        assert_eq!(answer.status, 200);
        // The answer keeps the caller's decision.
        let flags = answer
            .header("traceparent")
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap();
        assert_eq!(flags, if is_sampled { "01" } else { "00" });
    }
    // Spans leave in the order they ended: once the later request's span is in, the
    // earlier one's would be too.
    let spans =
        collector.spans_once(|spans| of_trace(spans, sampled).contains_key("SPAN_KIND_SERVER"));
    assert!(
        of_trace(spans, sampled).contains_key("SPAN_KIND_SERVER"),
        "{spans:#?}"
    );
    assert!(of_trace(spans, unsampled).is_empty(), "{spans:#?}");
}

/// A collector that goes silent (a dead host: no answer, no reset) loses the spans sent
/// meanwhile, counted as failed; requests are answered all along; once it is back, spans
/// reach it again without a restart.
#[test]
fn export_heals_by_itself_when_a_silent_collector_comes_back() {
    let mut collector = Collector::start();
    let proxy = SilentProxy::start(collector.server.address());
    let dir = tempfile::tempdir().unwrap();
    let ports = common::ports::PortBlock::reserve(1);
    if !common::redis_server::redis_available() {
        return;
    }
    let keys = Keys(unique_prefix("otlp-heal"));
    let mut worker = worker(
        &dir,
        &ports,
        &format!("http://{}", proxy.address),
        &keys,
        &[],
    );
    let request = |trace: &str| {
        let started = Instant::now();
        let answer = http_answer(
            worker.app_port,
            "GET",
            "/api/live",
            &[("traceparent", &caller(trace, "00f067aa0ba902b7", true))],
            "",
        );
        assert_eq!(answer.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a request waited for the collector"
        );
    };
    let before = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    request(before);
    let spans = collector.spans_once(|spans| !of_trace(spans, before).is_empty());
    assert!(
        !of_trace(spans, before).is_empty(),
        "{}",
        worker.lines().join("\n")
    );

    proxy.go_silent();
    let failed = || {
        common::sample_at(
            worker.export_port(),
            r#"babylon_otlp_spans_total{outcome="failed"}"#,
        )
    };
    let lost = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    common::wait_until("an export to the silent collector fails", || {
        request(lost);
        failed() >= 1.0
    });

    proxy.heal();
    let after = "cccccccccccccccccccccccccccccccc";
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        request(after);
        let spans = collector.spans_within(Duration::from_secs(2), |spans| {
            !of_trace(spans, after).is_empty()
        });
        if !of_trace(spans, after).is_empty() {
            break;
        }
    }
    assert!(
        !of_trace(&collector.received, after).is_empty(),
        "no span reached the collector after it came back:\n{}",
        worker.lines().join("\n")
    );
    common::workers::terminate(&mut worker);
}

/// A path no route matches can carry anything (a token in the query, say): its span is
/// named by the method alone and holds no part of the path, as its metrics and log line.
#[test]
fn an_unmatched_requests_span_names_no_part_of_its_path() {
    let Some(mut scene) = scene("otlp-unmatched") else {
        return;
    };
    let (collector, worker) = (&mut scene.collector, &mut scene.worker);
    let answer = http_answer(worker.app_port, "GET", "/reset/s3cr3t?token=t0k3n", &[], "");
    assert_eq!(answer.status, 404);
    let (trace_id, span_id) = ids_of(&answer);
    let spans = collector.spans_once(|spans| !of_trace(spans, &trace_id).is_empty());
    let server = of_trace(spans, &trace_id)
        .remove("SPAN_KIND_SERVER")
        .unwrap_or_else(|| panic!("no span of the 404: {spans:#?}"))[0];
    assert_eq!(server.span_id, span_id);
    assert_eq!(server.name, "GET");
    assert_eq!(attribute(server, "http.route"), None);
    assert_eq!(attribute(server, "http.response.status_code"), Some("404"));
    let written = format!("{server:?}");
    assert!(
        !written.contains("s3cr3t") && !written.contains("t0k3n"),
        "{written}"
    );
}

/// Every finished span is counted once, as exported, failed or dropped, whatever the
/// collector does: here it is silent from the start (each export waits out its 3 s
/// timeout) and the queue holds four spans, so the requests made during an export find
/// it full.
#[test]
fn every_span_is_counted_once_as_exported_failed_or_dropped() {
    if !common::redis_server::redis_available() {
        return;
    }
    let collector = Collector::start();
    let proxy = SilentProxy::start(collector.server.address());
    proxy.go_silent();
    let dir = tempfile::tempdir().unwrap();
    let ports = common::ports::PortBlock::reserve(1);
    let keys = Keys(unique_prefix("otlp-counted"));
    let worker = worker(
        &dir,
        &ports,
        &format!("http://{}", proxy.address),
        &keys,
        &[
            ("BABYLON_TRACING__OTLP__QUEUE_SIZE", "4"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ],
    );
    let port = worker.export_port();
    let count = |outcome: &str| {
        common::sample_or_zero(
            &common::http_get(port, "/metrics").1,
            &format!("babylon_otlp_spans_total{{outcome=\"{outcome}\"}}"),
        )
    };
    let live = || {
        assert_eq!(
            http_answer(worker.app_port, "GET", "/api/live", &[], "").status,
            200
        )
    };
    // One span, whose export then blocks the export thread; the rest arrive meanwhile.
    live();
    std::thread::sleep(Duration::from_millis(500));
    const REQUESTS: f64 = 40.0;
    for _ in 1..REQUESTS as usize {
        live();
    }
    let counted = || count("exported") + count("failed") + count("dropped");
    common::wait_until("every span is counted", || counted() == REQUESTS);
    assert_eq!(count("exported"), 0.0);
    assert!(count("dropped") >= 1.0, "dropped {}", count("dropped"));
    assert!(count("failed") >= 1.0, "failed {}", count("failed"));
    // Counted once: nothing more comes.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(counted(), REQUESTS);
}

/// A handler's own work, timed with the public `Tracer`: a client span under the
/// request's span, with the handler's name, attributes and failure, and whose
/// `traceparent` is the one the handler would pass on.
#[rocket::get("/partner")]
fn partner(tracer: babylon::otlp::Tracer) -> String {
    let mut span = tracer.span("GET partner /prices");
    span.set_attribute("server.address", "partner.internal");
    span.set_attribute("http.response.status_code", 503u16);
    span.fail("503");
    let traceparent = span.traceparent().unwrap_or_default();
    span.end();
    traceparent
}

#[test]
fn a_handlers_own_span_is_exported_under_its_request() {
    let mut collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings_in(
        &dir,
        serde_json::json!({ "tracing": { "otlp": {
            "endpoint": collector.server.endpoint(),
            "export_interval_ms": 100,
        } } }),
    );
    let rocket = babylon_app::App::from_figment(settings)
        .unwrap()
        .rocket()
        .unwrap()
        .mount("/test", rocket::routes![partner]);
    // Rocket's runtime must keep running while spans are exported: the collector's
    // multi-threaded one, not the blocking client's own.
    let (request_id, handed_on, client) = collector.runtime.block_on(async {
        let client = rocket::local::asynchronous::Client::tracked(rocket)
            .await
            .unwrap();
        let response = client.get("/test/partner").dispatch().await;
        let request_id = response
            .headers()
            .get_one("X-Request-Id")
            .unwrap()
            .to_string();
        let handed_on = response.into_string().await.unwrap();
        (request_id, handed_on, client)
    });
    let parts: Vec<&str> = handed_on.split('-').collect();
    assert_eq!(parts.len(), 4, "{handed_on}");
    let (trace_id, span_id) = (parts[1].to_string(), parts[2].to_string());
    let spans = collector.spans_once(|spans| {
        of_trace(spans, &trace_id).contains_key("SPAN_KIND_CLIENT")
            && of_trace(spans, &trace_id).contains_key("SPAN_KIND_SERVER")
    });
    let by_kind = of_trace(spans, &trace_id);
    let own = by_kind
        .get("SPAN_KIND_CLIENT")
        .unwrap_or_else(|| panic!("no span of the handler's own: {spans:#?}"))[0];
    assert_eq!(own.span_id, span_id, "the span the traceparent named");
    assert_eq!(own.parent_span_id, request_id, "under the request's span");
    assert_eq!(own.name, "GET partner /prices");
    assert_eq!(attribute(own, "server.address"), Some("partner.internal"));
    assert_eq!(attribute(own, "http.response.status_code"), Some("503"));
    assert_eq!(attribute(own, "error.type"), Some("503"));
    assert_eq!(
        own.status.as_ref().map(|s| s.code.as_str()),
        Some("STATUS_CODE_ERROR")
    );
    assert_eq!(by_kind["SPAN_KIND_SERVER"][0].span_id, request_id);
    drop(client);
}
