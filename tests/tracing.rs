//! W3C trace context on every answer, request ids in error bodies, whose `traceparent`
//! is continued, and exemplars that lead from a real Prometheus back to the request.

mod common;

use common::ports::PortBlock;
use common::{client, client_with_routes, from, tool};
use proptest::prelude::*;
use rocket::http::{ContentType, Header, Status};
use rocket::local::blocking::LocalResponse;
use serde_json::{json, Value};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The answer's `traceparent` split into trace id and span id, after checking its form
/// and that `X-Request-Id` is the span id.
fn trace_of(response: &LocalResponse<'_>) -> (String, String) {
    let traceparent = response
        .headers()
        .get_one("traceparent")
        .expect("every answer carries traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{traceparent}");
    assert!(
        parts[1].len() == 32 && parts[2].len() == 16,
        "{traceparent}"
    );
    assert!(
        traceparent[3..]
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{traceparent}"
    );
    assert_eq!(
        response.headers().get_one("X-Request-Id"),
        Some(parts[2]),
        "the request id is the span id"
    );
    (parts[1].to_string(), parts[2].to_string())
}

#[rocket::get("/panic")]
fn panics() -> &'static str {
    panic!("deliberate test panic")
}

/// An application's histograms and counters keep the exemplar of the request that
/// recorded into them: inside the handler by itself, from a spawned task with the context
/// passed on.
#[rocket::get("/sizes")]
async fn sizes(
    metrics: &rocket::State<babylon::metrics::Metrics>,
    trace: babylon::trace::TraceContext,
) -> &'static str {
    let sizes = metrics
        .custom()
        .histogram("app_sizes_bytes", "Sizes.", &["where"], &[10.0, 100.0])
        .unwrap();
    sizes.with_label_values(&["handler"]).observe(5.0);
    metrics
        .custom()
        .counter("app_sized_total", "Things sized.", &[])
        .unwrap()
        .with_label_values(&[])
        .inc();
    let spawned = sizes.with_label_values(&["spawned"]);
    rocket::tokio::spawn(async move {
        assert!(
            babylon::trace::current().is_none(),
            "no request is current in a task"
        );
        spawned.observe_for(50.0, &trace);
    })
    .await
    .unwrap();
    "ok"
}

#[test]
fn application_histograms_and_counters_keep_the_exemplar_of_the_request_behind_them() {
    let client = client_with_routes(
        json!({ "tracing": { "continue_traceparent_from": "anyone" } }),
        babylon::instrument(rocket::routes![sizes]),
    );
    let response = from(client.get("/test/sizes"), "127.0.0.1")
        .header(Header::new("traceparent", TRACEPARENT))
        .dispatch();
    let (_, span) = trace_of(&response);
    let exposition = from(client.get("/metrics?format=openmetrics"), "127.0.0.1")
        .dispatch()
        .into_string()
        .unwrap();
    let exemplar = format!(r#"# {{trace_id="{TRACE_ID}",span_id="{span}"}}"#);
    for (place, bucket) in [("handler", "10"), ("spawned", "100")] {
        let series = format!(r#"app_sizes_bytes_bucket{{where="{place}",le="{bucket}"}} 1 "#);
        let line = exposition
            .lines()
            .find(|line| line.starts_with(&series))
            .unwrap_or_else(|| panic!("no {series}in\n{exposition}"));
        assert!(line.contains(&exemplar), "{line}");
    }
    let counted = exposition
        .lines()
        .find(|line| line.starts_with("app_sized_total 1 "))
        .unwrap_or_else(|| panic!("no app_sized_total in\n{exposition}"));
    assert!(counted.contains(&exemplar), "{counted}");
}

/// The request guard and `trace::current` give a handler the trace its answer carries.
#[rocket::get("/trace")]
fn own_trace(trace: babylon::trace::TraceContext) -> String {
    let current = babylon::trace::current().expect("current while the handler runs");
    assert_eq!(current, trace);
    trace.traceparent()
}

#[rocket::get("/maybe-trace")]
fn maybe_trace(trace: Option<babylon::trace::TraceContext>) -> String {
    assert_eq!(trace, babylon::trace::current());
    trace.map_or_else(|| "none".to_string(), |trace| trace.request_id())
}

#[test]
fn a_handler_takes_its_trace_as_a_guard_or_from_the_thread() {
    let routes = || babylon::instrument(rocket::routes![own_trace, maybe_trace]);
    let client = client_with_routes(json!({}), routes());
    let response = from(client.get("/test/trace"), "127.0.0.1").dispatch();
    let header = response
        .headers()
        .get_one("traceparent")
        .unwrap()
        .to_string();
    assert_eq!(response.into_string().unwrap(), header);
    let response = from(client.get("/test/maybe-trace"), "127.0.0.1").dispatch();
    let id = response
        .headers()
        .get_one("X-Request-Id")
        .unwrap()
        .to_string();
    assert_eq!(response.into_string().unwrap(), id);
    assert!(
        babylon::trace::current().is_none(),
        "outside a handler, none"
    );

    let off = client_with_routes(json!({ "tracing": { "enabled": false } }), routes());
    let response = from(off.get("/test/maybe-trace"), "127.0.0.1").dispatch();
    assert_eq!(response.into_string().unwrap(), "none");
    let response = from(off.get("/test/trace"), "127.0.0.1").dispatch();
    assert_eq!(response.status(), Status::InternalServerError);
}

#[test]
fn every_answer_carries_its_trace_and_every_error_body_its_request_id() {
    let client = client_with_routes(
        json!({ "blocking": { "deny": ["192.0.2.0/24"] } }),
        babylon::instrument(rocket::routes![panics]),
    );
    let mut request_ids = std::collections::BTreeSet::new();
    let mut answers = vec![
        (from(client.get("/api/health"), "127.0.0.1").dispatch(), 200),
        (from(client.get("/metrics"), "127.0.0.1").dispatch(), 200),
        (from(client.get("/nowhere"), "127.0.0.1").dispatch(), 404),
        (from(client.get("/api/health"), "192.0.2.7").dispatch(), 403),
        (from(client.get("/test/panic"), "127.0.0.1").dispatch(), 500),
    ];
    answers.push((
        from(client.post("/api/items"), "127.0.0.1")
            .header(ContentType::JSON)
            .body(r#"{"name": 7}"#)
            .dispatch(),
        422,
    ));
    for (response, status) in answers {
        assert_eq!(response.status().code, status);
        let (_, request_id) = trace_of(&response);
        assert!(request_ids.insert(request_id.clone()), "ids are unique");
        if status >= 400 {
            let body: Value = response.into_json().unwrap();
            assert_eq!(
                body["error"]["request_id"], request_id,
                "the {status} body names its request: {body}"
            );
        }
    }
}

#[test]
fn a_traceparent_is_continued_only_from_whom_the_settings_trust() {
    let with_traceparent = |client: &common::TestClient, peer: &str| {
        let response = from(client.get("/api/health"), peer)
            .header(Header::new("traceparent", TRACEPARENT))
            .dispatch();
        assert_eq!(response.status(), Status::Ok);
        trace_of(&response)
    };
    // The default: only trusted proxies, and there are none.
    let default = client(json!({}));
    let (trace, span) = with_traceparent(&default, "127.0.0.1");
    assert_ne!(trace, TRACE_ID, "a client cannot pick its trace id");
    assert_ne!(span, "00f067aa0ba902b7");

    let behind_proxy = client(json!({ "blocking": { "trusted_proxies": ["10.0.0.0/8"] } }));
    assert_eq!(with_traceparent(&behind_proxy, "10.1.2.3").0, TRACE_ID);
    assert_ne!(with_traceparent(&behind_proxy, "127.0.0.1").0, TRACE_ID);

    let anyone = client(json!({ "tracing": { "continue_traceparent_from": "anyone" } }));
    let (trace, span) = with_traceparent(&anyone, "203.0.113.9");
    assert_eq!(trace, TRACE_ID);
    assert_ne!(
        span, "00f067aa0ba902b7",
        "the request has a span of its own"
    );
}

#[test]
fn tracing_off_leaves_answers_and_bodies_as_they_were() {
    let client = client(json!({ "tracing": { "enabled": false } }));
    let response = from(client.get("/nowhere"), "127.0.0.1").dispatch();
    assert_eq!(response.status(), Status::NotFound);
    assert!(response.headers().get_one("traceparent").is_none());
    assert!(response.headers().get_one("X-Request-Id").is_none());
    let body: Value = response.into_json().unwrap();
    assert!(body["error"].get("request_id").is_none(), "{body}");
}

#[test]
fn without_response_headers_the_ids_stay_in_error_bodies() {
    let client = client(json!({ "tracing": { "response_headers": false } }));
    let response = from(client.get("/nowhere"), "127.0.0.1").dispatch();
    assert_eq!(response.status(), Status::NotFound);
    assert!(response.headers().get_one("traceparent").is_none());
    assert!(response.headers().get_one("X-Request-Id").is_none());
    let body: Value = response.into_json().unwrap();
    let request_id = body["error"]["request_id"].as_str().unwrap();
    assert_eq!(request_id.len(), 16, "{body}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever `traceparent` a client sends (wrong lengths, version ff, zero ids, other
    /// characters, 10 kB), the request is served as without one, under a new trace.
    #[test]
    fn malformed_traceparents_start_a_new_trace(value in prop_oneof![
        "[ -~]{0,80}",
        "[0-9a-f]{54,56}",
        Just("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()),
        Just("00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string()),
        Just("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_string()),
        Just(format!("00-{}", "a".repeat(10_000))),
    ]) {
        thread_local! {
            static CLIENT: common::TestClient =
                client(json!({ "tracing": { "continue_traceparent_from": "anyone" } }));
        }
        CLIENT.with(|client| {
            let response = from(client.get("/api/live"), "127.0.0.1")
                .header(Header::new("traceparent", value.clone()))
                .dispatch();
            prop_assert_eq!(response.status(), Status::Ok);
            let (trace, _) = trace_of(&response);
            prop_assert!(!value.contains(&trace), "{} continued from {:?}", trace, value);
            Ok(())
        })?;
    }
}

/// The exemplars of the work a request causes: its database statements and its Redis
/// commands (here, the shared rate limit's, made before the handler runs) keep the
/// request's trace and span, in OpenMetrics; an unrelated request's do not.
#[test]
fn database_and_redis_durations_keep_the_exemplar_of_the_request_behind_them() {
    use common::redis_server::{redis_available, unique_prefix, Keys, REDIS};
    if !redis_available() {
        return;
    }
    let prefix = unique_prefix("tracing");
    let _keys = Keys(prefix.clone());
    let client = client(json!({
        "tracing": { "continue_traceparent_from": "anyone" },
        "redis": { "url": REDIS, "key_prefix": prefix },
        "blocking": { "rate_limit": { "per_second": 10000, "burst": 10000, "backend": "redis" } },
    }));
    // Not a probe path (/api/health), which the rate limit leaves alone.
    let response = from(client.get("/api/items"), "127.0.0.1")
        .header(Header::new("traceparent", TRACEPARENT))
        .dispatch();
    assert_eq!(response.status(), Status::Ok);
    let (trace, span) = trace_of(&response);
    assert_eq!(trace, TRACE_ID);
    let exposition = from(client.get("/metrics?format=openmetrics"), "127.0.0.1")
        .dispatch()
        .into_string()
        .unwrap();
    let exemplar = format!(r#"# {{trace_id="{TRACE_ID}",span_id="{span}"}}"#);
    for family in [
        "rocket_db_query_duration_seconds_bucket{",
        "rocket_redis_command_duration_seconds_bucket{",
    ] {
        let samples: Vec<&str> = exposition
            .lines()
            .filter(|line| line.starts_with(family))
            .collect();
        assert!(
            samples.iter().any(|line| line.contains(&exemplar)),
            "no bucket of {family}…}} keeps the request's exemplar {exemplar}: {samples:#?}"
        );
    }
    // The scrape itself ran no statement: no exemplar names a trace but the request's.
    let traces: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter(|line| line.starts_with("rocket_db_query_duration_seconds_bucket{"))
        .filter_map(|line| line.split_once("# {trace_id=\"")?.1.get(..32))
        .collect();
    assert_eq!(traces.into_iter().collect::<Vec<_>>(), [TRACE_ID]);
}

/// A request sent with a `traceparent` is found again from Prometheus: the exemplars of
/// its duration bucket and of `api_requests_total` name its trace, in the OpenMetrics
/// job of a real Prometheus 2.42 with exemplar storage on, and its answer carried it.
#[test]
fn prometheus_finds_the_request_behind_an_exemplar() {
    use common::prometheus::Prometheus;
    if tool("prometheus").is_none() {
        return;
    }
    let ports = PortBlock::reserve(1);
    let client = client(json!({
        "tracing": { "continue_traceparent_from": "anyone" },
        "metrics": { "export": {
            "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1" } },
    }));
    let prometheus = Prometheus::keeping_exemplars_of(ports.first());
    let response = from(client.get("/api/health"), "127.0.0.1")
        .header(Header::new("traceparent", TRACEPARENT))
        .dispatch();
    assert_eq!(response.status(), Status::Ok);
    let (trace, span) = trace_of(&response);
    assert_eq!(trace, TRACE_ID);

    let names_the_request = |promql: &str| {
        prometheus.query_exemplars(promql).iter().any(|series| {
            series["exemplars"].as_array().is_some_and(|exemplars| {
                exemplars.iter().any(|exemplar| {
                    exemplar["labels"]["trace_id"] == TRACE_ID
                        && exemplar["labels"]["span_id"] == span.as_str()
                })
            })
        })
    };
    for promql in [
        r#"rocket_http_request_duration_seconds_bucket{route="/api/health"}"#,
        "api_requests_total",
        "rocket_db_query_duration_seconds_bucket",
    ] {
        let found = common::wait_for(std::time::Duration::from_secs(30), || {
            names_the_request(promql)
        });
        assert!(
            found,
            "no exemplar of {promql} names trace {TRACE_ID} span {span}: {:#?}\n{}",
            prometheus.query_exemplars(promql),
            prometheus.log()
        );
    }
}
