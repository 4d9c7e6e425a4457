//! The deployment babylon sells, tested as hosts: two app hosts with two workers each, one
//! PostgreSQL and one Redis on a third host, and on a fourth a Prometheus that finds the
//! workers (static targets and file_sd), scrapes them through the allow-list and the
//! token, evaluates the shipped rules and alerts, and remote-writes every series into a
//! second Prometheus (the receiver protocol of Thanos Receive, Cortex, Mimir and
//! VictoriaMetrics). Each host is a network namespace of this test's own
//! ([`common::netns`]); nothing leaves the machine.
//!
//! Every export port serves mutual TLS (`metrics.export.tls` with a client CA), and
//! Prometheus scrapes with a client certificate.
//!
//! What it shows: every worker is up, scraped over TLS; a packet capture of those scrapes
//! on the monitoring host's link holds neither the token nor a family name, where the same
//! capture of a plain-HTTP scrape holds both; a scrape from outside the allow-list, without
//! the token or without a client certificate is refused; one client gets one rate limit across both hosts; a write through
//! one host is read fresh through the other; the per-host and fleet recording rules hold
//! real data; the receiver holds babylon's series; and a host whose workers are killed
//! shows as down, with `BabylonHostDown` firing for that host alone.
//!
//! Needs root, `ip` (iproute2), `nsenter` (util-linux), `tcpdump`, `prometheus`,
//! `redis-server` and the PostgreSQL server programs; without them the test prints SKIPPED, except under CI=true where it fails.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Host, Network};
use common::pg::TempCluster;
use common::pki::{self, Ca, Files, Versions};
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
    /// Where each host's export certificate and key are written (`<host>.crt`,
    /// `<host>.key`), signed by `ca`, which also signs the scrapers' certificates.
    tls_dir: std::path::PathBuf,
    ca: Ca,
}

impl FleetSettings {
    /// The export certificate of `host` (naming its address), written on first use.
    fn server_files(&self, host: &Host) -> Files {
        let files = Files {
            cert: self.tls_dir.join(format!("{}.crt", host.name)),
            key: self.tls_dir.join(format!("{}.key", host.name)),
            ca: self.tls_dir.join(format!("{}-ca.crt", host.name)),
        };
        if !files.cert.exists() {
            self.ca.server_for(&[&host.address.to_string()]).write(
                &self.tls_dir,
                &host.name,
                &self.ca,
            );
        }
        files
    }
}

/// A worker on `host`, exporting on 8001-8002 of the host's address to `prometheus` only,
/// over mutual TLS.
fn start_worker(host: &Host, fleet: &FleetSettings) -> Worker {
    let tls = fleet.server_files(host);
    let mut command = base();
    command
        .env("BABYLON_METRICS__EXPORT__TLS__CERT_FILE", &tls.cert)
        .env("BABYLON_METRICS__EXPORT__TLS__KEY_FILE", &tls.key)
        .env("BABYLON_METRICS__EXPORT__TLS__CLIENT_CA_FILE", &tls.ca)
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

/// A packet capture (tcpdump) on a host's link, of the packets `filter` selects.
struct Capture {
    tcpdump: Child,
    /// The pcap stream tcpdump writes to its standard output, as far as it has come.
    pcap: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Capture {
    /// Starts capturing on `host`'s eth0 and waits until tcpdump listens (at most 10 s).
    fn start(host: &Host, filter: &str) -> Capture {
        use std::io::{BufRead, Read};
        let program = common::tool("tcpdump").expect("checked by the caller");
        let mut tcpdump = host
            .command(program)
            .args(["-i", "eth0", "-n", "-U", "-s", "0", "-w", "-", filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = tcpdump.stdout.take().unwrap();
        let pcap = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let written = pcap.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(read @ 1..) = stdout.read(&mut chunk) {
                written.lock().unwrap().extend_from_slice(&chunk[..read]);
            }
        });
        let stderr = tcpdump.stderr.take().unwrap();
        let (lines, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut heard = Vec::new();
        loop {
            match said.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => heard.push(line),
                Err(_) => {
                    let _ = tcpdump.kill();
                    panic!("tcpdump did not start capturing: {heard:?}");
                }
            }
        }
        Capture {
            tcpdump,
            pcap,
            reader,
        }
    }

    /// Stops the capture (SIGINT: tcpdump writes out what it holds) once what it has
    /// written satisfies `seen`, or after 10 s, and returns it: tcpdump writes a packet
    /// some time after it crossed the link.
    fn stop_once(mut self, seen: impl Fn(&Pcap) -> bool) -> Pcap {
        wait_for(Duration::from_secs(10), || {
            seen(&Pcap(self.pcap.lock().unwrap().clone()))
        });
        let pid = rustix::process::Pid::from_raw(self.tcpdump.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let _ = self.tcpdump.wait();
        self.reader.join().unwrap();
        let bytes = std::mem::take(&mut *self.pcap.lock().unwrap());
        Pcap(bytes)
    }
}

/// A capture file, as tcpdump wrote it.
struct Pcap(Vec<u8>);

impl Pcap {
    /// How many packets it holds (pcap: a 24-byte header, then records of a 16-byte
    /// header whose third field is the captured length, and the packet).
    fn packets(&self) -> usize {
        let mut at = 24;
        let mut count = 0;
        while at + 16 <= self.0.len() {
            let length = u32::from_le_bytes(self.0[at + 8..at + 12].try_into().unwrap()) as usize;
            at += 16 + length;
            count += 1;
        }
        count
    }

    fn contains(&self, text: &str) -> bool {
        self.0
            .windows(text.len())
            .any(|window| window == text.as_bytes())
    }
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

/// The fleet Prometheus: static targets and file_sd, both through the token and mutual
/// TLS with `client`'s certificate, the shipped rules, remote write into the receiver.
/// The file_sd job sets no `scheme`: the target files carry `__scheme__: https`.
fn prometheus_config(
    static_targets: &[SocketAddr],
    fleet: &FleetSettings,
    client: &Files,
    alerts: &std::path::Path,
    receiver: SocketAddr,
) -> String {
    let targets: Vec<String> = static_targets
        .iter()
        .map(|target| format!("\"{target}\""))
        .collect();
    let authorization = format!(
        "authorization: {{ type: Bearer, credentials_file: \"{}\" }}\n    tls_config: {{ ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\" }}",
        fleet.token_file.display(),
        client.ca.display(),
        client.cert.display(),
        client.key.display(),
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
    scheme: https
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
    for tool in ["prometheus", "redis-server", "psql", "tcpdump"] {
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
    let tls_dir = state.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let fleet = FleetSettings {
        database_url: postgres.network_url("fleet"),
        redis_url: format!("redis://{}:{REDIS_PORT}", db.address),
        token_file,
        file_sd,
        prometheus: monitor.clone(),
        tls_dir,
        ca: Ca::new("fleet CA"),
    };
    // The scrapers' client certificate (Prometheus', and the test's own reads).
    let scraper = fleet.ca.client("prometheus");
    let scraper_files = scraper.write(&fleet.tls_dir, "prometheus", &fleet.ca);

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

    // Who may read metrics: only the monitoring host, only over TLS with a client
    // certificate of the fleet's CA, and only with the token.
    let first = exports[0];
    let bearer = format!("Bearer {TOKEN}");
    let authorization = format!("Authorization: {bearer}");
    let with_certificate = pki::client_config(&fleet.ca, Some(&scraper), Versions::Both);
    let without_certificate = pki::client_config(&fleet.ca, None, Versions::Both);
    let read = |host: &Host, config: &std::sync::Arc<rustls::ClientConfig>, headers: &[&str]| {
        host.run(|| pki::get_at(first, config, "/metrics", headers))
            .map(|response| response.status)
    };
    assert_eq!(
        read(client, &with_certificate, &[]),
        Ok(403),
        "outside the allow-list"
    );
    assert_eq!(
        read(client, &with_certificate, &[&authorization]),
        Ok(403),
        "the token does not open the allow-list"
    );
    assert_eq!(read(monitor, &with_certificate, &[]), Ok(401), "no token");
    assert!(
        read(monitor, &without_certificate, &[&authorization]).is_err(),
        "no client certificate"
    );
    assert_eq!(read(monitor, &with_certificate, &[&authorization]), Ok(200));
    assert_eq!(
        monitor.get(first, "/metrics", &[]).0,
        400,
        "plain HTTP to the TLS port"
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
        &prometheus_config(
            &exports,
            &fleet,
            &scraper_files,
            &alerts,
            receiver.address(),
        ),
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

    // What crosses the monitoring host's link while Prometheus scrapes the eight targets
    // over TLS: neither the token nor a family name. The control: the same capture of a
    // plain-HTTP scrape (a main port, which serves metrics in the debug profile) holds
    // both, so the search would find them.
    let secrets = [
        TOKEN,
        "babylon_build_info",
        "api_requests_total",
        "process_threads",
    ];
    let capture = Capture::start(monitor, "tcp port 8001 or tcp port 8002");
    std::thread::sleep(Duration::from_secs(3));
    let over_tls = capture.stop_once(|_| true);
    assert!(
        over_tls.packets() >= 24 && over_tls.0.len() >= 24 * 1024,
        "too little captured to judge: {} packets, {} bytes",
        over_tls.packets(),
        over_tls.0.len()
    );
    let main_port = app(app1, &workers[0].1);
    let capture = Capture::start(monitor, &format!("tcp port {}", main_port.port()));
    let (status, body) = monitor.get(main_port, "/metrics", &[("Authorization", &bearer)]);
    let in_cleartext = capture.stop_once(|pcap| secrets.iter().all(|secret| pcap.contains(secret)));
    assert_eq!(status, 200, "{body}");
    for secret in secrets {
        assert!(
            in_cleartext.contains(secret),
            "the plain-HTTP capture lacks {secret:?}: the search cannot see cleartext"
        );
        assert!(
            !over_tls.contains(secret),
            "{secret:?} crossed the link in cleartext during the TLS scrapes"
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
         8 targets up over mutual TLS ({} packets, {} bytes captured, no secret in them); \
         receiver got the series; BabylonHostDown fired for {} alone",
        over_tls.packets(),
        over_tls.0.len(),
        app2.address
    );
}
