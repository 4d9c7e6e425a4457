//! HTTPS and mutual TLS on the export port (`metrics.export.tls`), with certificates the
//! tests make: who gets in, how each refused handshake is counted, and certificates
//! replaced under a scraper.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{self, client_config, Ca, Files, Versions};
use common::ports::PortBlock;
use common::{client, http_get, sample};
use serde_json::{json, Value};

const TOKEN: &str = "s3cr3t";
const BEARER: &str = "Authorization: Bearer s3cr3t";

/// A service whose export port serves TLS to holders of [`TOKEN`], with its own CA,
/// certificate and files.
struct TlsPort {
    dir: tempfile::TempDir,
    _ports: PortBlock,
    port: u16,
    ca: Ca,
    /// The certificate served at start-up.
    cert: pki::Pair,
    /// Where the settings read it (and the CA, as `client_ca_file` when mutual).
    files: Files,
    _service: common::TestClient,
}

impl TlsPort {
    /// A certificate valid for `days`; with `mutual`, `client_ca_file` is its CA; `extra`
    /// is merged into `metrics.export.tls`.
    fn start(days: i64, mutual: bool, extra: Value) -> TlsPort {
        let dir = tempfile::tempdir().unwrap();
        let ports = PortBlock::reserve(1);
        let ca = Ca::new("babylon test CA");
        let cert = ca.server(days);
        let files = cert.write(dir.path(), "server", &ca);
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        let mut tls = json!({ "cert_file": files.cert, "key_file": files.key });
        if mutual {
            tls["client_ca_file"] = json!(files.ca);
        }
        tls.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let service = client(json!({ "metrics": { "export": {
            "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1",
            "token_file": token, "tls": tls,
        }}}));
        assert_eq!(
            service.get("/api/live").dispatch().status(),
            rocket::http::Status::Ok
        );
        TlsPort {
            dir,
            port: ports.first(),
            _ports: ports,
            ca,
            cert,
            files,
            _service: service,
        }
    }
}

/// The export port's metrics, read over TLS by a client of `ca` presenting `identity`.
fn metrics(port: u16, ca: &Ca, identity: Option<&pki::Pair>) -> String {
    let response = pki::get(
        port,
        &client_config(ca, identity, Versions::Both),
        "/metrics",
        &[BEARER],
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

fn handshake_errors(body: &str, reason: &str) -> f64 {
    sample(
        body,
        &format!(r#"babylon_export_tls_handshake_errors_total{{reason="{reason}"}}"#),
    )
    .unwrap_or_else(|| panic!("no handshake error series for {reason}:\n{body}"))
}

fn reloads(body: &str, result: &str) -> f64 {
    sample(
        body,
        &format!(r#"babylon_export_tls_cert_reloads_total{{result="{result}"}}"#),
    )
    .unwrap_or_else(|| panic!("no reload series for {result}:\n{body}"))
}

/// With `client_ca_file`, a client of that CA with the token reads metrics; without the
/// token it gets 401 over TLS; without a certificate, with one of another CA, with an
/// expired one, offering only TLS 1.2 to a port that asks for 1.3, distrusting the
/// server, or speaking plain HTTP, it does not, and each refusal is counted under its
/// reason, the others staying at zero.
#[test]
fn mutual_tls_admits_only_clients_of_its_ca_and_counts_each_refusal() {
    let tls = TlsPort::start(90, true, json!({ "min_version": "1.3" }));
    let (port, ca) = (tls.port, &tls.ca);
    let prometheus = ca.client("prometheus");
    let body = metrics(port, ca, Some(&prometheus));
    assert!(body.contains("babylon_export_tls_cert_expiry_timestamp_seconds"));
    for reason in [
        "no_client_certificate",
        "unknown_ca",
        "expired",
        "bad_certificate",
        "plaintext",
        "protocol",
        "refused_by_client",
        "aborted",
        "timeout",
    ] {
        assert_eq!(handshake_errors(&body, reason), 0.0, "{reason}");
    }

    let unauthorized = pki::get(
        port,
        &client_config(ca, Some(&prometheus), Versions::Both),
        "/metrics",
        &[],
    )
    .unwrap();
    assert_eq!(unauthorized.status, 401, "{}", unauthorized.body);

    let other = Ca::new("another CA");
    let refused = [
        (
            "no_client_certificate",
            client_config(ca, None, Versions::Both),
        ),
        (
            "unknown_ca",
            client_config(ca, Some(&other.client("prometheus")), Versions::Both),
        ),
        (
            "expired",
            client_config(ca, Some(&ca.expired_client("prometheus")), Versions::Both),
        ),
        (
            "protocol",
            client_config(ca, Some(&prometheus), Versions::Tls12Only),
        ),
        (
            "refused_by_client",
            client_config(&other, Some(&prometheus), Versions::Both),
        ),
    ];
    for (reason, config) in &refused {
        let outcome = pki::get(port, config, "/metrics", &[BEARER]);
        assert!(outcome.is_err(), "{reason}: {outcome:?}");
    }
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("https_required"), "{body}");

    // The server counts after it has answered the handshake: wait for the last ones.
    let mut body = String::new();
    let counted = common::wait_for(Duration::from_secs(10), || {
        body = metrics(port, ca, Some(&prometheus));
        refused
            .iter()
            .all(|(reason, _)| handshake_errors(&body, reason) == 1.0)
            && handshake_errors(&body, "plaintext") == 1.0
    });
    assert!(counted, "{body}");
    for reason in ["bad_certificate", "aborted", "timeout"] {
        assert_eq!(handshake_errors(&body, reason), 0.0, "{reason}:\n{body}");
    }
}

/// Without `client_ca_file` the port asks for no client certificate: a client that
/// trusts the CA reads metrics over TLS 1.2 and 1.3 alike.
#[test]
fn without_a_client_ca_any_client_that_trusts_the_server_reads() {
    let tls = TlsPort::start(90, false, json!({}));
    for versions in [Versions::Both, Versions::Tls12Only] {
        let response = pki::get(
            tls.port,
            &client_config(&tls.ca, None, versions),
            "/metrics",
            &[BEARER],
        )
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
    }
}

/// Scrapes every 100 ms, each on a new connection (a new handshake), while the
/// certificate and key are replaced: none fails, the scraper sees the old certificate,
/// then only the new one, and the reload is counted.
#[test]
fn a_certificate_rotated_under_scrapes_every_100ms_loses_none() {
    let tls = TlsPort::start(30, true, json!({}));
    let (port, ca, old, server) = (tls.port, &tls.ca, &tls.cert, &tls.files);
    let prometheus = ca.client("prometheus");
    let config = client_config(ca, Some(&prometheus), Versions::Both);
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (stop, config) = (stop.clone(), config.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                seen.push(pki::get(port, &config, "/metrics", &[BEARER]));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let new = ca.server(365);
    new.replace(server);
    let served_new = common::wait_for(Duration::from_secs(15), || {
        pki::get(port, &config, "/metrics", &[BEARER]).is_ok_and(|r| r.server_cert == new.der)
    });
    // A second more of scrapes with the new certificate.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let seen = scraper.join().unwrap();
    assert!(served_new, "the new certificate was never served");
    let failed: Vec<_> = seen.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} scrapes failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    let certs: Vec<&Vec<u8>> = seen
        .iter()
        .map(|r| &r.as_ref().unwrap().server_cert)
        .collect();
    assert!(seen.len() >= 10, "only {} scrapes", seen.len());
    assert_eq!(
        certs[0], &old.der,
        "the first scrape saw another certificate"
    );
    assert_eq!(certs[certs.len() - 1], &new.der);
    let switch = certs.iter().position(|cert| **cert == new.der).unwrap();
    assert!(
        certs[switch..].iter().all(|cert| **cert == new.der),
        "the old certificate came back after the new one"
    );
    assert!(certs[..switch].iter().all(|cert| **cert == old.der));
    let last = seen.last().unwrap().as_ref().unwrap();
    assert!(reloads(&last.body, "loaded") >= 1.0, "{}", last.body);
}

/// A replacement that does not load (a certificate file of garbage, then a key that is
/// not the certificate's) keeps the certificate in use, and each is counted once
/// however long it stays; a good pair afterwards is taken, and the expiry gauge follows
/// the certificate served.
#[test]
fn a_replacement_that_does_not_load_keeps_the_certificate_in_use() {
    let tls = TlsPort::start(30, false, json!({}));
    let (port, ca, old, server, dir) = (tls.port, &tls.ca, &tls.cert, &tls.files, &tls.dir);
    let config = client_config(ca, None, Versions::Both);
    let scrape = || pki::get(port, &config, "/metrics", &[BEARER]).unwrap();
    let expiry =
        |body: &str| sample(body, "babylon_export_tls_cert_expiry_timestamp_seconds").unwrap();
    let before = scrape();
    let old_expiry = expiry(&before.body);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (old_expiry - (now + 30.0 * 86400.0)).abs() < 120.0,
        "expiry {old_expiry} is not 30 days from {now}"
    );

    // Scrapes until `done` holds of a response (at most 15 s), and returns that one.
    let scrape_until = |done: &dyn Fn(&pki::Response) -> bool| {
        let mut response = scrape();
        let held = common::wait_for(Duration::from_secs(15), || {
            response = scrape();
            done(&response)
        });
        assert!(held, "{}", response.body);
        response
    };

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    std::fs::rename(&garbage, &server.cert).unwrap();
    let response = scrape_until(&|r| reloads(&r.body, "refused") == 1.0);
    assert_eq!(response.server_cert, old.der);
    // Counted once, not at every look at the unchanged files.
    std::thread::sleep(Duration::from_secs(3));
    let response = scrape();
    assert_eq!(reloads(&response.body, "refused"), 1.0);
    assert_eq!(expiry(&response.body), old_expiry);

    // The old certificate back, with the key of another: refused too. The key goes
    // first, so that no moment in between holds a pair that loads.
    let other = ca.server(60);
    std::fs::write(&server.key, &other.key_pem).unwrap();
    std::fs::write(&server.cert, &old.cert_pem).unwrap();
    let response = scrape_until(&|r| reloads(&r.body, "refused") == 2.0);
    assert_eq!(response.server_cert, old.der);
    assert_eq!(reloads(&response.body, "loaded"), 0.0);

    other.replace(server);
    let response = scrape_until(&|r| r.server_cert == other.der);
    assert!(reloads(&response.body, "loaded") >= 1.0);
    assert!((expiry(&response.body) - (old_expiry + 30.0 * 86400.0)).abs() < 120.0);
}

/// The commented TLS block of the repository's prometheus.yml, uncommented, with the CA,
/// certificate and key files given.
fn prometheus_yml_tls_block(ca: &std::path::Path, client: &Files) -> String {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prometheus.yml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.trim() == "# scheme: https")
        .expect("prometheus.yml shows `scheme: https`, commented");
    let block: Vec<String> = lines[start..start + 5]
        .iter()
        .map(|line| line.replacen("# ", "", 1))
        .collect();
    assert!(block[4].trim().starts_with("key_file:"), "{block:#?}");
    block
        .join("\n")
        .replace("/run/secrets/babylon-ca.crt", &ca.display().to_string())
        .replace(
            "/run/secrets/prometheus-client.crt",
            &client.cert.display().to_string(),
        )
        .replace(
            "/run/secrets/prometheus-client.key",
            &client.key.display().to_string(),
        )
        + "\n"
}

/// Real clients over mutual TLS: a Prometheus configured with the TLS block of the
/// repository's prometheus.yml scrapes the target up; one without a client certificate
/// is down and counted; curl reads metrics with the client certificate and fails
/// without it.
#[test]
fn prometheus_and_curl_scrape_over_mutual_tls() {
    use common::prometheus::{Place, Prometheus};
    let Some(curl) = common::tool("curl") else {
        return;
    };
    if common::tool("prometheus").is_none() {
        return;
    }
    let tls = TlsPort::start(90, true, json!({}));
    let (port, ca, server, dir) = (tls.port, &tls.ca, &tls.files, &tls.dir);
    let client = ca.client("prometheus").write(dir.path(), "prometheus", ca);
    let token = dir.path().join("prometheus-token");
    std::fs::write(&token, TOKEN).unwrap();

    let url = format!("https://127.0.0.1:{port}/metrics");
    let curl_get = |with_certificate: bool| {
        let mut command = std::process::Command::new(&curl);
        command
            .args(["-sS", "--max-time", "10", "-H", BEARER, "--cacert"])
            .arg(&server.ca);
        if with_certificate {
            command
                .arg("--cert")
                .arg(&client.cert)
                .arg("--key")
                .arg(&client.key);
        }
        command.arg(&url).output().unwrap()
    };
    let read = curl_get(true);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(String::from_utf8_lossy(&read.stdout).contains("babylon_build_info"));
    let refused = curl_get(false);
    assert!(
        !refused.status.success(),
        "curl without a certificate read metrics"
    );

    let job = |name: &str, tls: &str| {
        format!(
            "  - job_name: {name}\n    scrape_interval: 1s\n    authorization:\n      type: Bearer\n      credentials_file: {}\n{tls}    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            token.display(),
        )
    };
    let indent = |block: String| {
        block
            .lines()
            .map(|line| format!("    {}\n", line.trim_start_matches("    ")))
            .collect::<String>()
    };
    let with_certificate = indent(prometheus_yml_tls_block(&server.ca, &client));
    let without_certificate = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n",
        server.ca.display()
    );
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("mtls", &with_certificate),
        job("no_certificate", &without_certificate)
    );
    let prometheus = Prometheus::start(&config, Place::Loopback, &[]);
    for target in &prometheus.scraped_targets(2, &config) {
        let job = target["labels"]["job"].as_str().unwrap();
        let expected = if job == "mtls" { "up" } else { "down" };
        assert_eq!(target["health"], expected, "{config}\n{target:#}");
        if job == "no_certificate" {
            assert!(
                target["lastError"]
                    .as_str()
                    .unwrap()
                    .contains("certificate"),
                "{target:#}"
            );
        }
    }
    let body = metrics(port, ca, Some(&ca.client("reader")));
    assert!(
        handshake_errors(&body, "no_client_certificate") >= 2.0,
        "{body}"
    );
}
