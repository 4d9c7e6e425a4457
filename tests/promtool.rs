//! The real `promtool check metrics` accepts our exposition with no error and no lint
//! warning, with every family populated (exceptions, blocked, custom metrics included).

mod common;

use common::{client_with_routes, from, promtool_check_metrics, scrape, tool};
use rocket::http::{ContentType, Status};
use serde_json::json;

#[rocket::get("/panic")]
fn panics() -> &'static str {
    panic!("deliberate test panic")
}

#[test]
fn promtool_accepts_every_family() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let client = client_with_routes(
        json!({ "blocking": { "deny": ["192.0.2.0/24"] } }),
        babylon::instrument(rocket::routes![panics]),
    );
    client.get("/api/health").dispatch();
    client.get("/nowhere").dispatch();
    assert_eq!(
        client.get("/test/panic").dispatch().status(),
        Status::InternalServerError
    );
    from(client.get("/api/health"), "192.0.2.1").dispatch();
    client
        .post("/api/items")
        .header(ContentType::JSON)
        .body(r#"{"name":"a","kind":"book"}"#)
        .dispatch();
    let text = scrape(&client);
    assert!(text.contains("rocket_http_exceptions_by_type_total{type=\"panic\"} 1"));

    let (clean, report) = promtool_check_metrics(&promtool, &text);
    assert!(clean, "promtool check metrics reported:\n{report}");

    // The check is real: a badly named counter is reported.
    let (clean, report) = promtool_check_metrics(
        &promtool,
        "# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n",
    );
    assert!(
        !clean,
        "promtool should have flagged a counter without _total: {report}"
    );
}

/// `metrics.rocket_prometheus`: off (the default), its families are absent; on, its own fairing records its two families
/// into babylon's registry, served beside babylon's and clean for promtool.
#[test]
fn rocket_prometheus_families_are_recorded_only_when_asked_for() {
    let off = client_with_routes(json!({}), vec![]);
    assert_eq!(off.get("/api/live").dispatch().status(), Status::Ok);
    let text = scrape(&off);
    assert!(!text.contains("rocket_http_requests_total"), "{text}");

    let on = client_with_routes(json!({ "metrics": { "rocket_prometheus": true } }), vec![]);
    for _ in 0..3 {
        assert_eq!(on.get("/api/live").dispatch().status(), Status::Ok);
    }
    let text = scrape(&on);
    assert_eq!(
        common::sample(
            &text,
            r#"rocket_http_requests_total{endpoint="/api/live",method="GET",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(text.contains(
        r#"rocket_http_requests_duration_seconds_count{endpoint="/api/live",method="GET",status="200"} 3"#
    ));
    // babylon's own families are recorded as ever.
    assert!(text.contains(r#"rocket_http_requests_by_method_total{method="GET"}"#));
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let (clean, report) = promtool_check_metrics(&promtool, &text);
    assert!(clean, "promtool check metrics reported:\n{report}");
}
