//! The log of the real binary: one line per request with its trace and request ids, in
//! either `logging.format`; every line in that format, Rocket's included; which lines
//! `logging.requests` and `log_level` let through; no secret in any of them; and the way
//! from an exemplar in a real Prometheus to the request's log line.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::logs::{json_line, log_line, text_line, LogLine};
use common::workers::{command_without_export_in, start_command_keeping_every_line, Worker};
use common::{http_answer, Answer};

/// The bearer token the workers here require for `/metrics`.
const TOKEN: &str = "Qtok-4f0c1e";

fn worker(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Worker {
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut command = command_without_export_in(dir.path());
    command
        .env("BABYLON_METRICS__EXPORT__TOKEN_FILE", &token_file)
        .env("BABYLON_TRACING__CONTINUE_TRACEPARENT_FROM", "anyone");
    for (key, value) in env {
        command.env(key, value);
    }
    start_command_keeping_every_line(command)
}

/// The worker's request lines, once there are `count` of them (at most 30 s).
fn request_lines(worker: &Worker, count: usize) -> Vec<LogLine> {
    let read = || -> Vec<LogLine> {
        worker
            .lines()
            .iter()
            .filter_map(|line| log_line(line))
            .filter(|line| line.target == "babylon::request")
            .collect()
    };
    common::wait_for(Duration::from_secs(30), || read().len() >= count);
    read()
}

/// What the request line of `answer` must say, besides its ids.
struct Expected {
    method: &'static str,
    route: &'static str,
    blocked: Option<&'static str>,
}

#[test]
fn every_request_gets_one_line_naming_its_trace_in_either_format() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let worker = worker(
            &dir,
            &[
                ("BABYLON_LOGGING__FORMAT", format),
                ("ROCKET_LOG_LEVEL", "normal"),
            ],
        );
        let port = worker.app_port;
        let continued = "0af7651916cd43dd8448eb211c80319c";
        let traceparent = format!("00-{continued}-b7ad6b7169203331-01");
        let bearer = format!("Bearer {TOKEN}");
        let asked: Vec<(Answer, Expected)> = vec![
            (
                http_answer(
                    port,
                    "GET",
                    "/api/items",
                    &[("traceparent", &traceparent)],
                    "",
                ),
                Expected {
                    method: "GET",
                    route: "/api/items",
                    blocked: None,
                },
            ),
            (
                http_answer(port, "GET", "/no/such/path?token=Qquery-9", &[], ""),
                Expected {
                    method: "GET",
                    route: "<unmatched>",
                    blocked: None,
                },
            ),
            (
                http_answer(
                    port,
                    "POST",
                    "/api/items",
                    &[("Content-Type", "application/json")],
                    r#"{"name": 5}"#,
                ),
                Expected {
                    method: "POST",
                    route: "/api/items",
                    blocked: None,
                },
            ),
            (
                http_answer(port, "GET", "/metrics", &[], ""),
                Expected {
                    method: "GET",
                    route: "<blocked>",
                    blocked: Some("metrics_unauthorized"),
                },
            ),
            (
                http_answer(port, "GET", "/metrics", &[("Authorization", &bearer)], ""),
                Expected {
                    method: "GET",
                    route: "/metrics",
                    blocked: None,
                },
            ),
        ];
        let statuses: Vec<u16> = asked.iter().map(|(answer, _)| answer.status).collect();
        assert_eq!(statuses, [200, 404, 422, 401, 200], "{format}");

        let lines = request_lines(&worker, asked.len());
        assert_eq!(
            lines.len(),
            asked.len(),
            "{format}: one line per request: {lines:#?}"
        );
        for (answer, expected) in &asked {
            let traceparent = answer.header("traceparent").expect("every answer has one");
            let trace_id = traceparent.split('-').nth(1).unwrap();
            let request_id = answer.header("x-request-id").unwrap();
            let line = lines
                .iter()
                .find(|line| line.field("request_id") == Some(request_id))
                .unwrap_or_else(|| panic!("{format}: no line for {request_id}: {lines:#?}"));
            let mut expected_fields = BTreeMap::from([
                ("method", expected.method.to_string()),
                ("route", expected.route.to_string()),
                ("status", answer.status.to_string()),
                ("client", "127.0.0.1".to_string()),
                ("trace_id", trace_id.to_string()),
                ("request_id", request_id.to_string()),
            ]);
            if let Some(reason) = expected.blocked {
                expected_fields.insert("blocked", reason.to_string());
            }
            let mut fields = line.fields.clone();
            let seconds: f64 = fields.remove("duration_seconds").unwrap().parse().unwrap();
            assert!(seconds > 0.0 && seconds < 60.0, "{format}: {line:?}");
            let fields: BTreeMap<&str, String> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            assert_eq!(fields, expected_fields, "{format}");
            assert_eq!((line.level.as_str(), line.message.as_str()), ("INFO", ""));
        }
        let first = asked[0].0.header("traceparent").unwrap();
        assert!(
            first.contains(continued),
            "the trace sent was continued: {first}"
        );

        let all = worker.lines();
        let read = |line: &str| match format {
            "text" => text_line(line),
            _ => json_line(line),
        };
        for line in &all {
            let parsed = read(line).unwrap_or_else(|| panic!("{format}: not a log line: {line}"));
            let about_a_request = parsed.target.starts_with("rocket::server")
                && [
                    "GET /",
                    "POST /",
                    "Matched",
                    "Outcome",
                    "No matching",
                    "Response",
                ]
                .iter()
                .any(|start| parsed.message.starts_with(start));
            assert!(
                !about_a_request && !parsed.target.ends_with("items::_"),
                "{format}: Rocket's own record of a request is left out: {line}"
            );
            assert!(
                !line.contains("Qquery-9"),
                "{format}: the query is never logged: {line}"
            );
        }
        assert!(
            all.iter()
                .filter_map(|line| read(line))
                .any(|line| line.target == "rocket::launch"),
            "{format}: Rocket's launch lines at `normal`, in the same format"
        );
    }
}

#[test]
fn which_lines_are_written_follows_log_level_and_logging_requests() {
    // (log_level, logging.requests, request lines?, information lines?)
    for (level, requests, request_lines_written, information) in [
        ("normal", "false", false, true),
        ("critical", "true", true, false),
        ("off", "true", false, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let worker = worker(
            &dir,
            &[
                ("ROCKET_LOG_LEVEL", level),
                ("BABYLON_LOGGING__REQUESTS", requests),
            ],
        );
        assert_eq!(
            http_answer(worker.app_port, "GET", "/api/live", &[], "").status,
            200
        );
        // A marker written after the request's line would be: the worker's shutdown lines
        // are warnings, so wait for the request's line or, where none is due, for a second.
        let case = format!("log_level={level} requests={requests}");
        let found = common::wait_for(
            Duration::from_secs(if request_lines_written { 30 } else { 1 }),
            || {
                worker
                    .lines()
                    .iter()
                    .filter_map(|l| log_line(l))
                    .any(|l| l.target == "babylon::request")
            },
        );
        assert_eq!(found, request_lines_written, "{case}");
        let lines: Vec<LogLine> = worker.lines().iter().filter_map(|l| log_line(l)).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.target == "babylon" && l.message.starts_with("listening on")),
            "{case}: the start-up line is always written"
        );
        let informs = lines
            .iter()
            .any(|l| l.level == "INFO" && l.target.starts_with("rocket::"));
        assert_eq!(informs, information, "{case}: {lines:#?}");
    }
}

#[test]
fn no_password_or_token_reaches_the_log_even_at_debug() {
    let secrets = [
        "Qdbpass-31",
        "Qredispass-17",
        TOKEN,
        "Qwrong-token-5",
        "Qbasic-pw-8",
        "Qquery-42",
    ];
    let redis_url = format!("redis://:{}@127.0.0.1:6379/0", secrets[1]);
    let database_url = format!("postgres://postgres:{}@127.0.0.1:5432/test", secrets[0]);
    let basic = format!("Basic {}", base64("prometheus:".to_string() + secrets[4]));
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let mut worker = worker(
            &dir,
            &[
                ("BABYLON_LOGGING__FORMAT", format),
                ("ROCKET_LOG_LEVEL", "debug"),
                ("BABYLON_DATABASES__MAIN__URL", &database_url),
                ("BABYLON_REDIS__URL", &redis_url),
                ("BABYLON_CACHE__BACKEND", "redis"),
            ],
        );
        let port = worker.app_port;
        let wrong = format!("Bearer {}", secrets[3]);
        let right = format!("Bearer {TOKEN}");
        for (path, headers) in [
            ("/metrics", vec![("Authorization", right.as_str())]),
            ("/metrics", vec![("Authorization", wrong.as_str())]),
            ("/metrics", vec![("Authorization", basic.as_str())]),
            (
                "/api/items?token=Qquery-42",
                vec![("Cookie", "session=Qquery-42")],
            ),
        ] {
            http_answer(port, "GET", path, &headers, "");
        }
        let body = format!(r#"{{"name": 7, "password": "{}"}}"#, secrets[5]);
        http_answer(
            port,
            "POST",
            "/api/items",
            &[("Content-Type", "application/json")],
            &body,
        );
        assert!(
            request_lines(&worker, 5).len() >= 5,
            "{format}: {}",
            worker.output()
        );
        common::workers::terminate(&mut worker);
        let output = worker.output();
        assert!(
            output.lines().count() > 50,
            "{format}: `debug` logs plenty: {output}"
        );
        for secret in secrets {
            assert!(
                !output.contains(secret),
                "{format}: {secret} leaked:\n{output}"
            );
        }
    }
}

/// docs/metrics.md, "From a panel to a request", walked on the real binary and a real
/// Prometheus 2.42: the exemplar Prometheus keeps for a request's duration bucket names a
/// trace and a span, and the worker's log has the line of that request under both ids.
#[test]
fn an_exemplar_in_prometheus_leads_to_the_requests_log_line() {
    use common::prometheus::Prometheus;
    if common::tool("prometheus").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = common::ports::PortBlock::reserve(1);
    let mut command = common::workers::command_in(dir.path(), &ports);
    command
        .env("BABYLON_LOGGING__FORMAT", "json")
        .env("BABYLON_METRICS__EXPORT__ADDRESS", "127.0.0.1");
    let worker = start_command_keeping_every_line(command);
    let prometheus = Prometheus::keeping_exemplars_of(worker.export_port());
    let answer = http_answer(worker.app_port, "GET", "/api/items", &[], "");
    assert_eq!(answer.status, 200);

    let exemplar_ids = || {
        prometheus
            .exemplar_ids(r#"rocket_http_request_duration_seconds_bucket{route="/api/items"}"#)
    };
    let mut found = Vec::new();
    common::wait_for(Duration::from_secs(30), || {
        found = exemplar_ids();
        !found.is_empty()
    });
    let (trace_id, span_id) = found
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no exemplar for /api/items:\n{}", prometheus.log()));
    // The only request to /api/items: its exemplar, its answer and its line agree.
    assert_eq!(answer.header("x-request-id"), Some(span_id.as_str()));
    let line = request_lines(&worker, 1)
        .into_iter()
        .find(|line| line.field("request_id") == Some(span_id.as_str()))
        .unwrap_or_else(|| panic!("no log line with request_id {span_id}"));
    assert_eq!(line.field("trace_id"), Some(trace_id.as_str()));
    assert_eq!(line.field("route"), Some("/api/items"));
}

fn base64(text: String) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
