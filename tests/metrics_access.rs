//! Who may read metrics, on the main port (local client) and on the export port (real
//! sockets): the allow-list answers 403, the bearer token 401, each counted as blocked; and
//! no spelling of the metrics path gets past either (a property test against the real
//! binary, both ports).

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

/// The whole response, headers included, to a raw request on `port`.
fn raw_response(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
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
    // Any other method: 405 naming the methods the port serves (RFC 9110 §15.5.6).
    let response = raw_response(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(&response[9..12], "405", "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nallow: get, head\r\n"),
        "{response}"
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

/// Headers a client could use to claim another address, each with the claim.
const ADDRESS_CLAIMS: [&str; 7] = [
    "X-Forwarded-For",
    "X-Real-IP",
    "Forwarded",
    "True-Client-IP",
    "CF-Connecting-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
];

/// The export port sits behind no proxy: its client is the socket's peer, whatever
/// `blocking.trusted_proxies` says and whatever a header claims, in both directions (a
/// claim neither lets an outsider in nor shuts an insider out).
#[test]
fn export_port_decides_its_client_from_the_socket_alone() {
    let ports = PortBlock::reserve(1);
    let client = client(json!({
        "blocking": { "trusted_proxies": ["127.0.0.0/8"] },
        "metrics": { "export": {
            "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1",
            "allow": ["10.0.0.5/32", "127.0.0.3/32"] } } }));
    let summary: serde_json::Value = client.get("/api/metrics").dispatch().into_json().unwrap();
    let port = summary["export_port"].as_u64().unwrap() as u16;
    let prometheus = "10.0.0.5";
    let mut refused = 0;
    for header in ADDRESS_CLAIMS {
        let claims = [
            prometheus.to_string(),
            format!("198.51.100.1, {prometheus}"),
            format!("for={prometheus}"),
            format!("for=\"{prometheus}:9090\""),
        ];
        for claim in &claims {
            let headers = [(header, claim.as_str())];
            let (status, body) = http_get_from(Ipv4Addr::LOCALHOST, port, "/metrics", &headers);
            assert_eq!(status, 403, "{header}: {claim} from 127.0.0.1: {body}");
            refused += 1;
            // 127.0.0.3 is allowed by its own address; claiming an outside one changes nothing.
            let headers = [(header, "192.0.2.1")];
            let (status, body) =
                http_get_from(Ipv4Addr::new(127, 0, 0, 3), port, "/metrics", &headers);
            assert_eq!(status, 200, "{header} from 127.0.0.3: {body}");
        }
    }
    let (_, text) = http_get_from(Ipv4Addr::new(127, 0, 0, 3), port, "/metrics", &[]);
    assert_eq!(
        sample(
            &text,
            r#"api_requests_blocked_total{reason="metrics_forbidden"}"#
        ),
        Some(f64::from(refused))
    );
}

/// One way to write the metrics path in a request line.
#[derive(Debug, Clone)]
struct Spelling {
    method: &'static str,
    target: String,
}

/// `/metrics` as a client might spell it to slip past a check on the raw string: letters
/// percent-encoded (either hex case) or upper-cased, extra, trailing and encoded slashes,
/// dot segments, a query.
fn spelling() -> impl proptest::strategy::Strategy<Value = Spelling> {
    use proptest::prelude::*;
    let letter = |c: char| {
        prop_oneof![
            3 => Just(c.to_string()),
            1 => Just(format!("%{:02x}", c as u8)),
            1 => Just(format!("%{:02X}", c as u8)),
            1 => Just(c.to_ascii_uppercase().to_string()),
        ]
    };
    let name: Vec<_> = "metrics".chars().map(letter).collect();
    let before = prop_oneof![
        Just("/"),
        Just("//"),
        Just("///"),
        Just("/./"),
        Just("/x/../"),
        Just("/%2F"),
        Just("/%2f/")
    ];
    let after = prop_oneof![
        Just(""),
        Just("/"),
        Just("//"),
        Just("/."),
        Just("%2F"),
        Just("%20"),
        Just(";x")
    ];
    let query = prop_oneof![
        Just(""),
        Just("?"),
        Just("?x=1"),
        Just("?a&b=%2F"),
        Just("#f")
    ];
    let method = prop_oneof![Just("GET"), Just("HEAD")];
    (method, before, name, after, query).prop_map(|(method, before, name, after, query)| Spelling {
        method,
        target: format!("{before}{}{after}{query}", name.concat()),
    })
}

#[test]
fn no_spelling_of_the_metrics_path_reads_metrics_without_permission() {
    use proptest::test_runner::{Config, TestRunner};
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(1);
    let mut command = common::workers::command_in(dir.path(), &ports);
    command
        .env("BABYLON_METRICS__EXPORT__ALLOW", "127.0.0.1/32")
        .env(
            "BABYLON_METRICS__EXPORT__TOKEN_FILE",
            token_file(&dir, "t0k"),
        );
    let worker = common::workers::start_command(command);
    let main_port = worker.app_port;
    let export_port = worker.export_port();
    // 127.0.0.2 is loopback but outside the allow-list 127.0.0.1/32.
    let outside = Ipv4Addr::new(127, 0, 0, 2);
    let (allowed, tokenless) = (Ipv4Addr::LOCALHOST, Vec::new());
    let token = vec![("Authorization", "Bearer t0k")];

    // The canonical spelling with permission is served on both ports: the test can see a
    // success when there is one.
    for port in [main_port, export_port] {
        let (status, body) =
            common::http_request_from(allowed, port, "GET", "/metrics", &token, "");
        assert_eq!(status, 200, "port {port}: {body}");
    }

    let refused = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u64>::new());
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&spelling(), |spelling| {
            // Without the token from inside the allow-list, and with it from outside.
            for (source, headers) in [(allowed, &tokenless), (outside, &token)] {
                for port in [main_port, export_port] {
                    let (status, body) = common::http_request_from(
                        source,
                        port,
                        spelling.method,
                        &spelling.target,
                        headers,
                        "",
                    );
                    let start: String = body.chars().take(120).collect();
                    proptest::prop_assert!(
                        matches!(status, 400 | 401 | 403 | 404) && !body.contains("# TYPE"),
                        "{spelling:?} from {source} on port {port}: {status} {start}…"
                    );
                    if matches!(status, 401 | 403) {
                        *refused.borrow_mut().entry(status).or_default() += 1;
                    }
                }
            }
            Ok(())
        })
        .unwrap();

    // Every refusal, on either port, is counted as blocked, by reason.
    let (_, text) = common::http_request_from(allowed, export_port, "GET", "/metrics", &token, "");
    let refused = refused.into_inner();
    for (status, reason) in [(401, "metrics_unauthorized"), (403, "metrics_forbidden")] {
        let counted = sample(
            &text,
            &format!(r#"api_requests_blocked_total{{reason="{reason}"}}"#),
        );
        let seen = refused.get(&status).copied().unwrap_or(0);
        assert!(
            seen > 0,
            "no spelling reached the check with {status}: {refused:?}"
        );
        assert_eq!(counted, Some(seen as f64), "{reason}");
    }
    // Scrapes are not API traffic (`count_scrapes` is off), whichever spelling reached the
    // metrics route: none is recorded under its route.
    assert!(
        !text.contains(r#"route="/metrics""#),
        "a spelling of the metrics path was recorded as a request"
    );
}

/// The password of the user `prometheus` in [`basic_auth_service`].
const PASSWORD: &str = "correct horse";

/// A service exporting on `ports` to the user `prometheus` (password [`PASSWORD`]) and,
/// when given, to the bearer `token` (its file inside `dir`).
fn basic_auth_service(
    ports: &PortBlock,
    dir: &tempfile::TempDir,
    token: Option<&str>,
) -> common::TestClient {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let mut export = json!({
        "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1",
        "basic_auth_users": { "prometheus": hash },
    });
    if let Some(token) = token {
        export["token_file"] = json!(token_file(dir, token));
    }
    let client = client(json!({ "metrics": { "export": export } }));
    assert_eq!(client.get("/api/live").dispatch().status(), Status::Ok);
    client
}

/// `metrics.export.basic_auth_users` on the export port, with curl as the scraper: a
/// user's password gets in (and again, from the digest of the first success), a wrong
/// password, an unknown user and no credentials get 401 and count like a wrong token;
/// the bearer token still works beside the users.
#[test]
fn export_port_admits_basic_auth_users_as_curl_sends_them() {
    let Some(curl) = common::tool("curl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(1);
    let _service = basic_auth_service(&ports, &dir, Some("s3cr3t"));
    let url = format!("http://127.0.0.1:{}/metrics", ports.first());
    let scrape = |args: &[&str]| -> (u16, String) {
        let output = std::process::Command::new(&curl)
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_string())
    };
    let right = format!("prometheus:{PASSWORD}");
    assert_eq!(scrape(&["-u", &right]).0, 200);
    assert_eq!(scrape(&["-u", &right]).0, 200);
    assert_eq!(scrape(&["-u", "prometheus:correct horsE"]).0, 401);
    assert_eq!(scrape(&["-u", &format!("grafana:{PASSWORD}")]).0, 401);
    assert_eq!(scrape(&["-u", "prometheus"]).0, 401);
    assert_eq!(scrape(&[]).0, 401);
    let (status, body) = scrape(&["-H", "Authorization: Bearer s3cr3t"]);
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &body,
            r#"api_requests_blocked_total{reason="metrics_unauthorized"}"#
        ),
        Some(4.0),
        "{body}"
    );
}

/// A real Prometheus scrapes the export port with `basic_auth` and a password file, as
/// docs/security.md tells operators to configure it: the target is up, with the
/// worker's families; a second job with a wrong password is down with a 401.
#[test]
fn prometheus_scrapes_with_basic_auth() {
    use common::prometheus::{Place, Prometheus};
    if common::tool("prometheus").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(1);
    let _service = basic_auth_service(&ports, &dir, None);
    let right = dir.path().join("right");
    let wrong = dir.path().join("wrong");
    std::fs::write(&right, format!("{PASSWORD}\n")).unwrap();
    std::fs::write(&wrong, "correct horsE\n").unwrap();
    let job = |name: &str, password: &std::path::Path| {
        format!(
            "  - job_name: {name}\n    scrape_interval: 1s\n    basic_auth:\n      username: prometheus\n      password_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            password.display(),
            ports.first()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("right", &right),
        job("wrong", &wrong)
    );
    let prometheus = Prometheus::start(&config, Place::Loopback, &[]);
    for target in &prometheus.scraped_targets(2, &config) {
        let job = target["labels"]["job"].as_str().unwrap();
        let expected = if job == "right" { "up" } else { "down" };
        assert_eq!(target["health"], expected, "{target:#}");
        if job == "wrong" {
            assert!(
                target["lastError"].as_str().unwrap().contains("401"),
                "{target:#}"
            );
        }
    }
    let up = common::wait_for(std::time::Duration::from_secs(30), || {
        !prometheus
            .query(r#"api_requests_total{job="right"}"#)
            .is_empty()
    });
    assert!(
        up,
        "no sample of the worker's families\n{}",
        prometheus.log()
    );
}
