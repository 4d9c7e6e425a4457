//! The HTTP fairing: every HTTP family of docs/metrics.md, recorded as the requests really went.

mod common;

use common::{client, client_with_routes, from, sample, scrape};
use rocket::http::{ContentType, Status};
use serde_json::json;

#[rocket::get("/panic")]
fn panics() -> &'static str {
    panic!("deliberate test panic")
}

#[rocket::get("/fail")]
fn fails() -> Result<&'static str, babylon::JsonError> {
    Err(babylon::JsonError::new(
        Status::ServiceUnavailable,
        "backend_down",
        "down",
    ))
}

#[test]
fn exposition_has_every_family_and_the_right_content_type() {
    let client = client(json!({}));
    client.get("/api/health").dispatch();
    let response = from(client.get("/metrics"), "127.0.0.1").dispatch();
    assert_eq!(
        response.content_type().unwrap().to_string(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.into_string().unwrap();
    for family in [
        "rocket_http_requests_by_method_total",
        "rocket_http_requests_by_transport_total",
        "rocket_http_requests_by_route_transport_method_total",
        "rocket_http_request_duration_seconds",
        "rocket_http_responses_by_status_total",
        "rocket_http_responses_by_status_route_method_total",
        "rocket_http_request_body_bytes",
        "rocket_http_response_body_bytes",
        "rocket_http_requests_in_flight",
        "api_requests_total",
        "api_requests_blocked_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "babylon_build_info",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "missing family {family}"
        );
    }
    let info = text
        .lines()
        .find(|l| l.starts_with("babylon_build_info{"))
        .unwrap();
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && info.ends_with(" 1"),
        "{info}"
    );
}

#[test]
fn routes_are_labelled_by_template_and_unmatched_paths_share_one_value() {
    let client = client(json!({}));
    for id in [1, 2, 3] {
        client.get(format!("/api/items/{id}")).dispatch();
    }
    for path in ["/wp-admin", "/.env", "/random/a/b/c"] {
        assert_eq!(client.get(path).dispatch().status(), Status::NotFound);
    }
    let text = scrape(&client);
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_route_transport_method_total{method="GET",route="/api/items/<id>",transport="http"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_route_transport_method_total{method="GET",route="<unmatched>",transport="http"}"#
        ),
        Some(3.0)
    );
    assert!(
        !text.contains("wp-admin") && !text.contains(".env"),
        "raw paths must never become labels"
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_responses_by_status_total{status="404"}"#
        ),
        Some(6.0)
    );
    // A 404 is not an exception.
    assert!(sample(
        &text,
        r#"rocket_http_exceptions_by_type_total{type="server_error"}"#
    )
    .is_none());
    assert_eq!(sample(&text, "rocket_http_requests_in_flight"), Some(0.0));
}

#[test]
fn each_request_is_observed_once_in_the_duration_histogram() {
    let client = client(json!({}));
    client.get("/api/health").dispatch();
    client.get("/api/health").dispatch();
    client
        .post("/api/items")
        .header(ContentType::JSON)
        .body("{")
        .dispatch();
    let text = scrape(&client);
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_request_duration_seconds_count{method="GET",route="/api/health"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_request_duration_seconds_count{method="POST",route="/api/items"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_responses_by_status_route_method_total{method="POST",route="/api/items",status="422"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_method_total{method="GET"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "api_requests_total"),
        Some(3.0),
        "scrapes are not API requests"
    );
}

#[test]
fn latency_buckets_come_from_settings() {
    let client = client(json!({ "metrics": { "latency_buckets": [0.5, 2.0] } }));
    client.get("/api/health").dispatch();
    let text = scrape(&client);
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with(
                "rocket_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/health\"",
            )
        })
        .collect();
    assert_eq!(buckets.len(), 3, "{buckets:?}");
    assert!(buckets[0].contains("le=\"0.5\"") && buckets[2].contains("le=\"+Inf\""));
}

#[test]
fn body_sizes_are_bytes_actually_read_and_sent() {
    let client = client(json!({}));
    let body = r#"{"name":"hammer","kind":"tool"}"#;
    let response = client
        .post("/api/items")
        .header(ContentType::JSON)
        .body(body)
        .dispatch();
    assert_eq!(response.status(), Status::Created);
    let sent = response.into_bytes().unwrap().len();
    // A request that claims a body its handler never reads: nothing was read.
    client
        .get("/api/health")
        .header(rocket::http::Header::new("Content-Length", "999"))
        .dispatch();
    let text = scrape(&client);
    assert_eq!(
        sample(&text, "rocket_http_request_body_bytes_sum"),
        Some(body.len() as f64)
    );
    assert_eq!(
        sample(&text, "rocket_http_request_body_bytes_count"),
        Some(2.0)
    );
    let sent_sum = sample(&text, "rocket_http_response_body_bytes_sum").unwrap();
    assert!(
        sent_sum >= sent as f64,
        "response bytes {sent_sum} < {sent}"
    );
}

#[test]
fn panics_and_handler_errors_are_exceptions_by_type_and_route() {
    let client = client_with_routes(
        json!({}),
        babylon::instrument(rocket::routes![panics, fails]),
    );
    assert_eq!(
        client.get("/test/panic").dispatch().status(),
        Status::InternalServerError
    );
    assert_eq!(
        client.get("/test/panic").dispatch().status(),
        Status::InternalServerError
    );
    assert_eq!(
        client.get("/test/fail").dispatch().status(),
        Status::ServiceUnavailable
    );
    // The service keeps serving after a panic.
    assert_eq!(client.get("/api/health").dispatch().status(), Status::Ok);
    let text = scrape(&client);
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_exceptions_by_type_total{type="panic"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_exceptions_by_type_total{type="backend_down"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_exceptions_by_route_total{route="/test/panic"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_exceptions_by_route_total{route="/test/fail"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_responses_by_status_total{status="500"}"#
        ),
        Some(2.0)
    );
}

#[test]
fn scrapes_count_only_when_configured_and_excluded_paths_are_ignored() {
    let counted =
        client(json!({ "metrics": { "count_scrapes": true, "exclude_paths": ["/api/health"] } }));
    scrape(&counted);
    counted.get("/api/health").dispatch();
    let text = scrape(&counted);
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_route_transport_method_total{method="GET",route="/metrics",transport="http"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains(r#"route="/api/health""#));
}

#[test]
fn namespace_prefixes_every_family() {
    let client = client(json!({ "metrics": { "namespace": "shop" } }));
    client.get("/api/health").dispatch();
    let text = scrape(&client);
    assert!(text.contains("shop_rocket_http_requests_by_method_total{method=\"GET\"} 1"));
    assert!(text.contains("shop_api_requests_total 1"));
    assert!(!text.lines().any(|l| l.starts_with("rocket_")));
}

/// Creates one item of each kind given, with distinct names.
fn create_items(client: &rocket::local::blocking::Client, kinds: &[&str]) {
    for (n, kind) in kinds.iter().enumerate() {
        let body = format!(r#"{{"name":"item {n}","kind":"{kind}"}}"#);
        let response = client
            .post("/api/items")
            .header(ContentType::JSON)
            .body(body)
            .dispatch();
        assert_eq!(response.status(), Status::Created, "{kind}");
    }
}

#[test]
fn custom_metric_of_the_items_route_appears_on_the_endpoint() {
    let client = client(json!({}));
    create_items(&client, &["book", "book", "tool"]);
    let text = scrape(&client);
    assert_eq!(
        sample(&text, r#"babylon_items_created_total{kind="book"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"babylon_items_created_total{kind="tool"}"#),
        Some(1.0)
    );
}

#[test]
fn metrics_disabled_attaches_nothing_and_the_service_works() {
    let client = client(json!({ "metrics": { "enabled": false } }));
    assert_eq!(client.get("/api/health").dispatch().status(), Status::Ok);
    assert_eq!(
        from(client.get("/metrics"), "127.0.0.1")
            .dispatch()
            .status(),
        Status::NotFound
    );
    // No fairing observed the request: the registry holds no HTTP sample.
    let registry = client
        .rocket()
        .state::<babylon::metrics::Metrics>()
        .unwrap();
    let text = String::from_utf8(registry.render()).unwrap();
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_method_total{method="GET"}"#
        ),
        None
    );
    assert_eq!(sample(&text, "api_requests_total"), Some(0.0));
    let summary: serde_json::Value = client.get("/api/metrics").dispatch().into_json().unwrap();
    assert_eq!(summary["metrics_enabled"], false);
    assert_eq!(summary["export_port"], serde_json::Value::Null);
}

#[test]
fn main_port_can_stop_serving_metrics() {
    let client = client(json!({ "metrics": { "serve_on_main_port": false } }));
    assert_eq!(
        from(client.get("/metrics"), "127.0.0.1")
            .dispatch()
            .status(),
        Status::NotFound
    );
}

#[test]
fn api_metrics_json_reports_totals_and_blocked_by_reason() {
    let client = client(json!({ "blocking": { "deny": ["192.0.2.0/24"] } }));
    client.get("/api/health").dispatch();
    from(client.get("/api/health"), "192.0.2.7").dispatch();
    from(client.get("/metrics"), "198.51.100.1").dispatch();
    let summary: serde_json::Value = client.get("/api/metrics").dispatch().into_json().unwrap();
    assert_eq!(summary["metrics_enabled"], true);
    // Two health checks and this request itself; the refused scrape is not API traffic.
    assert_eq!(summary["api_requests_total"], 3, "{summary}");
    assert_eq!(summary["blocked_requests"]["total"], 2);
    assert_eq!(summary["blocked_requests"]["by_reason"]["deny_list"], 1);
    assert_eq!(
        summary["blocked_requests"]["by_reason"]["metrics_forbidden"],
        1
    );
    assert!(summary["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let health: serde_json::Value = client.get("/api/health").dispatch().into_json().unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"]["status"], "ok");
    let live: serde_json::Value = client.get("/api/live").dispatch().into_json().unwrap();
    assert_eq!(live["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
}

/// Held open until the test releases it, so the in-flight gauge can be read mid-request.
#[rocket::get("/hold")]
async fn hold(
    gate: &rocket::State<std::sync::Arc<rocket::tokio::sync::Semaphore>>,
) -> &'static str {
    let _permit = gate.acquire().await.expect("gate open");
    "released"
}

#[rocket::async_test]
async fn in_flight_gauge_counts_requests_being_handled() {
    use rocket::local::asynchronous::Client;
    let gate = std::sync::Arc::new(rocket::tokio::sync::Semaphore::new(0));
    let dir = tempfile::tempdir().unwrap();
    let app = babylon_app::App::from_figment(common::settings_in(&dir, json!({}))).unwrap();
    let rocket = app
        .rocket()
        .unwrap()
        .mount("/test", rocket::routes![hold])
        .manage(gate.clone());
    let client = Client::tracked(rocket).await.unwrap();

    let held = (
        client.get("/test/hold").dispatch(),
        client.get("/test/hold").dispatch(),
    );
    let scrape_while_held = async {
        // Poll until both requests wait in their handler; bounded so a bug fails, not hangs.
        for _ in 0..100_000 {
            let text = common::scrape_async(&client).await;
            if sample(&text, "rocket_http_requests_in_flight") == Some(2.0) {
                gate.add_permits(2);
                return text;
            }
            rocket::tokio::task::yield_now().await;
        }
        gate.add_permits(2);
        panic!("the in-flight gauge never showed the two held requests")
    };
    let (text, (first, second)) = rocket::tokio::join!(scrape_while_held, async {
        rocket::tokio::join!(held.0, held.1)
    });
    assert_eq!(sample(&text, "rocket_http_requests_in_flight"), Some(2.0));
    assert_eq!(first.into_string().await.as_deref(), Some("released"));
    assert_eq!(second.into_string().await.as_deref(), Some("released"));
    let text = common::scrape_async(&client).await;
    assert_eq!(sample(&text, "rocket_http_requests_in_flight"), Some(0.0));
}

#[test]
fn transport_is_https_only_when_a_trusted_proxy_says_so() {
    let client = client(json!({ "blocking": { "trusted_proxies": ["10.0.0.0/8"] } }));
    let https = rocket::http::Header::new("X-Forwarded-Proto", "https");
    from(client.get("/api/health"), "10.0.0.1")
        .header(https.clone())
        .dispatch();
    from(client.get("/api/health"), "198.51.100.1")
        .header(https)
        .dispatch();
    let text = scrape(&client);
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_transport_total{transport="https"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_transport_total{transport="http"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn a_full_custom_family_records_into_overflow_and_says_so() {
    let client = client(json!({ "metrics": { "max_series_per_family": 2 } }));
    create_items(&client, &["book", "tool", "other", "other"]);
    let text = scrape(&client);
    assert_eq!(
        sample(&text, r#"babylon_items_created_total{kind="book"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"babylon_items_created_total{kind="tool"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"babylon_items_created_total{kind="other"}"#),
        None,
        "the family is full"
    );
    assert_eq!(
        sample(&text, r#"babylon_items_created_total{kind="<overflow>"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"babylon_metrics_series_overflow_total{family="babylon_items_created_total"}"#
        ),
        Some(2.0)
    );
}
