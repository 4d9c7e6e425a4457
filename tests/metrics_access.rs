//! Who may read metrics, on the main port (local client) and on the export port (real
//! sockets): the allow-list answers 403, the bearer token 401, each counted as blocked.

mod common;

use std::net::Ipv4Addr;

use common::ports::PortBlock;
use common::{client, from, http_get_from, sample};
use rocket::http::{Header, Status};
use serde_json::json;

fn token_file(dir: &tempfile::TempDir, token: &str) -> String {
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.display().to_string()
}

#[test]
fn main_port_allow_list_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let client = client(json!({ "metrics": { "export": {
        "allow": ["127.0.0.1/32"], "token_file": token_file(&dir, "tok-123") } } }));

    let forbidden = from(client.get("/metrics"), "192.0.2.1")
        .header(Header::new("Authorization", "Bearer tok-123"))
        .dispatch();
    assert_eq!(forbidden.status(), Status::Forbidden);
    let body: serde_json::Value = forbidden.into_json().unwrap();
    assert_eq!(body["error"]["reason"], "metrics_forbidden");

    assert_eq!(
        from(client.get("/metrics"), "127.0.0.1")
            .dispatch()
            .status(),
        Status::Unauthorized
    );
    let wrong = from(client.get("/metrics"), "127.0.0.1")
        .header(Header::new("Authorization", "Bearer tok-124"));
    assert_eq!(wrong.dispatch().status(), Status::Unauthorized);

    let ok = from(client.get("/metrics"), "127.0.0.1")
        .header(Header::new("Authorization", "Bearer tok-123"))
        .dispatch();
    assert_eq!(ok.status(), Status::Ok);
    let text = ok.into_string().unwrap();
    assert_eq!(
        sample(
            &text,
            r#"api_requests_blocked_total{reason="metrics_forbidden"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"api_requests_blocked_total{reason="metrics_unauthorized"}"#
        ),
        Some(2.0)
    );
}

/// A metrics read from `source`, with the token if given.
fn get(source: Ipv4Addr, port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    http_get_from(source, port, path, &headers)
}

#[test]
fn export_port_applies_the_same_rules_from_a_real_disallowed_address() {
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(3);
    let (start, end) = (ports.first(), ports.last());
    let client = client(json!({ "metrics": { "export": {
        "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1",
        "allow": ["127.0.0.1/32"], "token_file": token_file(&dir, "s3cr3t") } } }));
    let summary: serde_json::Value = client.get("/api/metrics").dispatch().into_json().unwrap();
    let port = summary["export_port"].as_u64().unwrap() as u16;
    assert!((start..=end).contains(&port));

    // 127.0.0.2 is loopback but outside the allow-list 127.0.0.1/32.
    let (status, body) = get(
        Ipv4Addr::new(127, 0, 0, 2),
        port,
        "/metrics",
        Some("s3cr3t"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("metrics_forbidden"));
    assert_eq!(get(Ipv4Addr::LOCALHOST, port, "/metrics", None).0, 401);
    assert_eq!(
        get(Ipv4Addr::LOCALHOST, port, "/metrics", Some("nope")).0,
        401
    );
    assert_eq!(
        get(Ipv4Addr::LOCALHOST, port, "/other", Some("s3cr3t")).0,
        404
    );
    let (status, body) = get(Ipv4Addr::LOCALHOST, port, "/metrics", Some("s3cr3t"));
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &body,
            r#"api_requests_blocked_total{reason="metrics_forbidden"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"api_requests_blocked_total{reason="metrics_unauthorized"}"#
        ),
        Some(2.0)
    );
}
