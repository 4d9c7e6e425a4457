//! The deployment babylon sells, tested as hosts: two app hosts with two workers each, one
//! PostgreSQL and one Redis on a third host, and on a fourth a Prometheus that finds the
//! workers (static targets and file_sd), scrapes them through the allow-list and the
//! token, evaluates the shipped rules and alerts, and remote-writes every series into a
//! second Prometheus (the receiver protocol of Thanos Receive, Cortex, Mimir and
//! VictoriaMetrics). Each host is a network namespace of this test's own
//! ([`common::netns`]); nothing leaves the machine.
//!
//! What it shows: every worker is up; a scrape from outside the allow-list or without the
//! token is refused; one client gets one rate limit across both hosts; a write through
//! one host is read fresh through the other; the per-host and fleet recording rules hold
//! real data; the receiver holds babylon's series; and a host whose workers are killed
//! shows as down, with `BabylonHostDown` firing for that host alone.
//!
//! Needs root, `ip` (iproute2), `nsenter` (util-linux), `prometheus`, `redis-server` and
//! the PostgreSQL server programs; without them the test prints SKIPPED, except under CI=true where it fails.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Host, Network};
use common::pg::TempCluster;
use common::prometheus::{value, Place, Prometheus};
use common::wait_for;
use common::workers::{base, start_command, Worker};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "fleet-test-token-7c1f";
const BURST: usize = 20;
/// The ports inside the namespaces: the test's own, so fixed ones cannot collide.
const REDIS_PORT: u16 = 6379;
const PROMETHEUS_PORT: u16 = 9090;
const RECEIVER_PORT: u16 = 9091;
/// Every `for:` of the shipped alerts, shortened so the test need not wait minutes; the
/// expressions are the shipped ones.
const ALERT_FOR: &str = "3s";

/// A program in a host's namespace, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis on `host`, waited for (at most 10 s).
fn start_redis(host: &Host, dir: &std::path::Path) -> Daemon {
    let server = common::tool("redis-server").expect("checked by the caller");
    let child = host
        .command(server)
        .args(["--bind", &host.address.to_string()])
        .args(["--port", &REDIS_PORT.to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let address = SocketAddr::from((host.address, REDIS_PORT));
    let up = wait_for(Duration::from_secs(10), || {
        host.run(|| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok())
    });
    assert!(up, "Redis on {address} did not start");
    Daemon(child)
}

/// The fleet's settings every worker shares, as a deployment would give them.
struct FleetSettings {
    database_url: String,
    redis_url: String,
    token_file: std::path::PathBuf,
    file_sd: std::path::PathBuf,
    prometheus: Host,
}

/// A worker on `host`, exporting on 8001-8002 of the host's address to `prometheus` only.
fn start_worker(host: &Host, fleet: &FleetSettings) -> Worker {
    let mut command = base();
    command
        .env("ROCKET_ADDRESS", host.address.to_string())
        .env("BABYLON_DATABASES__MAIN__URL", &fleet.database_url)
        .env("BABYLON_METRICS__EXPORT__PORT_RANGE", "8001-8002")
        .env("BABYLON_METRICS__EXPORT__ADDRESS", host.address.to_string())
        .env(
            "BABYLON_METRICS__EXPORT__ALLOW",
            format!("{}/32", fleet.prometheus.address),
        )
        .env("BABYLON_METRICS__EXPORT__TOKEN_FILE", &fleet.token_file)
        .env(
            "BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY",
            &fleet.file_sd,
        )
        .env(
            "BABYLON_METRICS__EXPORT__FILE_SD__HOST",
            host.address.to_string(),
        )
        .env("BABYLON_REDIS__URL", &fleet.redis_url)
        .env("BABYLON_CACHE__BACKEND", "redis")
        .env("BABYLON_CACHE__TTL_SECONDS", "60")
        .env("BABYLON_BLOCKING__RATE_LIMIT__BACKEND", "redis")
        .env("BABYLON_BLOCKING__RATE_LIMIT__PER_SECOND", "1")
        .env("BABYLON_BLOCKING__RATE_LIMIT__BURST", BURST.to_string())
        // The test checks one limit, with Redis answering: a check slowed past the default
        // 250 ms by a busy machine would count as Redis down and be decided locally.
        .env("BABYLON_REDIS__RESPONSE_TIMEOUT_MS", "5000");
    start_command(host.wrap(&command))
}

/// The main port of `worker` on `host`.
fn app(host: &Host, worker: &Worker) -> SocketAddr {
    SocketAddr::from((host.address, worker.app_port))
}

/// The export port of `worker` on `host`.
fn export(host: &Host, worker: &Worker) -> SocketAddr {
    SocketAddr::from((host.address, worker.export_port()))
}

/// The shipped alerts with every `for:` shortened to [`ALERT_FOR`].
fn fast_alerts() -> String {
    let text = std::fs::read_to_string(format!("{REPO}/prometheus/alerts.yml")).unwrap();
    text.lines()
        .map(|line| match line.trim_start().strip_prefix("for:") {
            Some(_) => {
                let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
                format!("{indent}for: {ALERT_FOR}")
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fleet Prometheus: static targets and file_sd, both through the token, the shipped
/// rules, remote write into the receiver.
fn prometheus_config(
    static_targets: &[SocketAddr],
    fleet: &FleetSettings,
    alerts: &std::path::Path,
    receiver: SocketAddr,
) -> String {
    let targets: Vec<String> = static_targets
        .iter()
        .map(|target| format!("\"{target}\""))
        .collect();
    let authorization = format!(
        "authorization: {{ type: Bearer, credentials_file: \"{}\" }}",
        fleet.token_file.display()
    );
    format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels: {{ fleet: "netns-test" }}
rule_files:
  - "{REPO}/prometheus/recording_rules.yml"
  - "{alerts}"
scrape_configs:
  - job_name: babylon
    {authorization}
    static_configs:
      - targets: [{targets}]
  - job_name: babylon_file_sd
    {authorization}
    file_sd_configs:
      - files: ["{file_sd}/*.json"]
        refresh_interval: 1s
remote_write:
  - url: "http://{receiver}/api/v1/write"
    queue_config: {{ batch_send_deadline: 1s }}
"#,
        alerts = alerts.display(),
        targets = targets.join(", "),
        file_sd = fleet.file_sd.display(),
    )
}

/// `up` of every target, as `instance` → (job, value).
fn up(prometheus: &Prometheus) -> Vec<(String, String, f64)> {
    prometheus
        .query("up")
        .iter()
        .map(|sample| {
            (
                sample["metric"]["job"].as_str().unwrap_or("").to_string(),
                sample["metric"]["instance"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                value(sample),
            )
        })
        .collect()
}

/// The values of `promql` by the label `by`.
fn by_label(prometheus: &Prometheus, promql: &str, by: &str) -> Vec<(String, f64)> {
    let mut values: Vec<(String, f64)> = prometheus
        .query(promql)
        .iter()
        .map(|sample| {
            (
                sample["metric"][by].as_str().unwrap_or("").to_string(),
                value(sample),
            )
        })
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    values
}

#[test]
fn two_hosts_share_one_database_redis_and_prometheus() {
    for tool in ["prometheus", "redis-server", "psql"] {
        if common::tool(tool).is_none() {
            return;
        }
    }
    let Some(network) = Network::create(&["db", "app1", "app2", "monitor", "client"]) else {
        return;
    };
    let (db, app1, app2, monitor, client) = (
        network.host("db"),
        network.host("app1"),
        network.host("app2"),
        network.host("monitor"),
        network.host("client"),
    );

    let Some(postgres) = TempCluster::start_on(db) else {
        return;
    };
    postgres.psql("postgres", "CREATE DATABASE fleet");
    let state = tempfile::tempdir().unwrap();
    let _redis = start_redis(db, state.path());
    let token_file = state.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let file_sd = state.path().join("file_sd");
    std::fs::create_dir(&file_sd).unwrap();
    let fleet = FleetSettings {
        database_url: postgres.network_url("fleet"),
        redis_url: format!("redis://{}:{REDIS_PORT}", db.address),
        token_file,
        file_sd,
        prometheus: monitor.clone(),
    };

    let hosts = [app1, app2];
    let mut workers: Vec<(&Host, Worker)> = hosts
        .iter()
        .flat_map(|host| [*host, *host])
        .map(|host| (host, start_worker(host, &fleet)))
        .collect();
    let exports: Vec<SocketAddr> = workers.iter().map(|(h, w)| export(h, w)).collect();
    assert_eq!(
        exports.iter().map(SocketAddr::port).collect::<Vec<_>>(),
        [8001, 8002, 8001, 8002],
        "each host's workers take the first free ports of the range"
    );

    // Who may read metrics: only the monitoring host, and only with the token.
    let first = exports[0];
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        client.get(first, "/metrics", &[]).0,
        403,
        "outside the allow-list"
    );
    assert_eq!(
        client
            .get(first, "/metrics", &[("Authorization", &bearer)])
            .0,
        403,
        "the token does not open the allow-list"
    );
    assert_eq!(monitor.get(first, "/metrics", &[]).0, 401, "no token");
    assert_eq!(
        monitor
            .get(first, "/metrics", &[("Authorization", &bearer)])
            .0,
        200
    );

    let alerts = state.path().join("alerts.yml");
    std::fs::write(&alerts, fast_alerts()).unwrap();
    let receiver_config = "global:\n  evaluation_interval: 1s\n";
    let receiver = Prometheus::start(
        receiver_config,
        Place::On(monitor, RECEIVER_PORT),
        &["--web.enable-remote-write-receiver"],
    );
    let prometheus = Prometheus::start(
        &prometheus_config(&exports, &fleet, &alerts, receiver.address()),
        Place::On(monitor, PROMETHEUS_PORT),
        &[],
    );

    // Every worker is a target of both jobs, and all eight are up.
    let mut seen = Vec::new();
    let all_up = wait_for(Duration::from_secs(60), || {
        seen = up(&prometheus);
        seen.len() == 8 && seen.iter().all(|(_, _, up)| *up == 1.0)
    });
    assert!(
        all_up,
        "expected 8 targets up: {seen:?}\n{}",
        prometheus.log()
    );
    for export in &exports {
        let jobs: Vec<&str> = seen
            .iter()
            .filter(|(_, instance, _)| *instance == export.to_string())
            .map(|(job, _, _)| job.as_str())
            .collect();
        assert_eq!(
            jobs.len(),
            2,
            "{export} scraped by the static and the file_sd job: {seen:?}"
        );
    }

    // One client, one limit, across both hosts: round-robin over the four workers.
    let requests = 4 * BURST;
    let started = Instant::now();
    let statuses: Vec<u16> = (0..requests)
        .map(|i| {
            let (host, worker) = &workers[i % workers.len()];
            client.get(app(host, worker), "/api/metrics", &[]).0
        })
        .collect();
    let elapsed = started.elapsed();
    let allowed = statuses.iter().filter(|status| **status == 200).count();
    let refilled = elapsed.as_secs() as usize + 1;
    assert!(
        (BURST..=BURST + refilled).contains(&allowed),
        "one limit of {BURST} across 2 hosts x 2 workers (+{refilled} refilled in {elapsed:?}): {allowed} allowed, {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 429).count(),
        requests - allowed
    );

    // A write through one host is read fresh through the other: one database, one cache.
    let (a, b) = (app(app1, &workers[0].1), app(app2, &workers[2].1));
    let (status, body) = monitor.http(
        a,
        "POST",
        "/api/items",
        &[("Content-Type", "application/json")],
        r#"{"name": "Dune", "kind": "book"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = common::created_id(&body);
    let item = format!("/api/items/{id}");
    for _ in 0..2 {
        let (status, body) = monitor.get(b, &item, &[]);
        assert!(
            status == 200 && body.contains("\"Dune\""),
            "{status} {body}"
        );
    }
    let (status, body) = monitor.http(
        a,
        "PUT",
        &item,
        &[("Content-Type", "application/json")],
        r#"{"name": "Dune Messiah", "kind": "book"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = monitor.get(b, &item, &[]);
    assert!(
        status == 200 && body.contains("Dune Messiah"),
        "the other host reads the write at once: {status} {body}"
    );

    // The fleet rules on real data: per host and for the whole job.
    let hosts_of = |promql: &str| by_label(&prometheus, promql, "host");
    let expected_hosts = vec![
        (app1.address.to_string(), 2.0),
        (app2.address.to_string(), 2.0),
    ];
    let mut workers_up = Vec::new();
    let rules_hold = wait_for(Duration::from_secs(30), || {
        workers_up = hosts_of(r#"job_host:up:sum{job="babylon"}"#);
        workers_up == expected_hosts
            && hosts_of(r#"job_host:rocket_http_requests:rate5m{job="babylon"}"#).len() == 2
            && !prometheus
                .query(r#"job:rocket_http_requests:rate5m{job="babylon"}"#)
                .is_empty()
    });
    assert!(rules_hold, "per-host rules: {workers_up:?}");

    // Remote write: the receiver holds the scraped series and the recorded ones, with
    // the fleet's external label.
    let received = wait_for(Duration::from_secs(30), || {
        receiver
            .query(r#"up{job="babylon", fleet="netns-test"} == 1"#)
            .len()
            == 4
            && !receiver
                .query(r#"job_host:up:sum{fleet="netns-test"}"#)
                .is_empty()
            && !receiver
                .query(
                    r#"rocket_http_requests_by_route_transport_method_total{route="/api/metrics"}"#,
                )
                .is_empty()
    });
    assert!(
        received,
        "the receiver holds babylon's series: {:?}\n{}",
        receiver.query("count by (__name__) ({fleet=\"netns-test\"})"),
        prometheus.log()
    );

    // app2 goes down: its workers are killed, as a host that loses power would lose them.
    for (host, worker) in &mut workers {
        if host.name == "app2" {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
    }
    let all_of = |targets: &[(String, String, f64)], host: &Host, expected: f64| {
        let of_host: Vec<f64> = targets
            .iter()
            .filter(|(_, instance, _)| instance.starts_with(&format!("{}:", host.address)))
            .map(|(_, _, up)| *up)
            .collect();
        of_host.len() == 4 && of_host.iter().all(|up| *up == expected)
    };
    let app2_down = wait_for(Duration::from_secs(30), || {
        seen = up(&prometheus);
        all_of(&seen, app2, 0.0) && all_of(&seen, app1, 1.0)
    });
    assert!(app2_down, "app2 down, app1 up: {seen:?}");
    let mut firing = Vec::new();
    let fired = wait_for(Duration::from_secs(60), || {
        firing = by_label(
            &prometheus,
            r#"ALERTS{alertname="BabylonHostDown", alertstate="firing"}"#,
            "host",
        );
        !firing.is_empty()
    });
    assert!(
        fired,
        "BabylonHostDown fires for app2:\n{}",
        prometheus.log()
    );
    assert_eq!(firing, [(app2.address.to_string(), 1.0)], "for app2 alone");
    assert_eq!(
        hosts_of(r#"job_host:up:sum{job="babylon"}"#),
        [
            (app1.address.to_string(), 2.0),
            (app2.address.to_string(), 0.0)
        ]
    );
    eprintln!(
        "fleet: 2 hosts x 2 workers, burst {BURST}: one client allowed {allowed} of {requests} in {elapsed:?}; \
         8 targets up; receiver got the series; BabylonHostDown fired for {} alone",
        app2.address
    );
}
