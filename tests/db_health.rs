//! Database down and back, for real: a private PostgreSQL cluster is stopped under the
//! running service and started again. Health says 503 with a reason, metrics keep being
//! served, and the pool recovers without a restart.

mod common;

use std::time::{Duration, Instant};

use common::pg::TempCluster;
use common::{sample_or_zero, settings};
use rocket::http::{ContentType, Status};
use rocket::local::blocking::Client;
use serde_json::{json, Value};

fn health(client: &Client) -> (Status, Value) {
    let response = client.get("/api/health").dispatch();
    (response.status(), response.into_json().unwrap())
}

#[test]
fn health_reports_an_unreachable_database_and_the_service_recovers() {
    let Some(cluster) = TempCluster::start() else {
        return;
    };
    let overrides = json!({ "databases": { "main": { "url": cluster.url("postgres"), "connect_timeout": 1 } } });
    let app = babylon_app::App::from_figment(settings(overrides)).unwrap();
    let client = Client::tracked(app.rocket().unwrap()).unwrap();

    let (status, body) = health(&client);
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body["database"]["vendor"], "postgresql");

    cluster.stop();
    let (status, body) = health(&client);
    assert_eq!(status, Status::ServiceUnavailable, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["database"]["status"], "unavailable");
    assert!(
        body["database"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let create = client
        .post("/api/items")
        .header(ContentType::JSON)
        .body(r#"{"name":"while down","kind":"book"}"#)
        .dispatch();
    assert_eq!(create.status(), Status::ServiceUnavailable);
    let body: Value = create.into_json().unwrap();
    assert_eq!(body["error"]["reason"], "database_unavailable");
    let metrics = common::from(client.get("/metrics"), "127.0.0.1").dispatch();
    assert_eq!(
        metrics.status(),
        Status::Ok,
        "metrics keep working while the database is down"
    );
    let text = metrics.into_string().unwrap();
    let health_failures = sample_or_zero(
        &text,
        r#"rocket_http_exceptions_by_type_total{type="database_unavailable"}"#,
    );
    assert!(
        health_failures >= 2.0,
        "failed health checks and writes are exceptions of their own type:\n{text}"
    );
    let errors = sample_or_zero(
        &text,
        r#"rocket_db_new_connection_errors_total{alias="main",vendor="postgresql"}"#,
    );
    assert!(errors >= 1.0, "connection failures are counted:\n{text}");

    cluster.start_again();
    // The pool reconnects on its own; allow it a few attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = health(&client);
        if status == Status::Ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not recover: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let create = client
        .post("/api/items")
        .header(ContentType::JSON)
        .body(r#"{"name":"after","kind":"book"}"#)
        .dispatch();
    assert_eq!(create.status(), Status::Created);
}
