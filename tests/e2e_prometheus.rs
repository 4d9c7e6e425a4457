//! End to end: the real binary (several workers, one config), an application that is not
//! babylon's service but attaches the library (examples/shop.rs), a real Prometheus
//! started from the repository's prometheus.yml and rules, and every query the dashboards
//! and recording rules make. A panel that queries a metric babylon does not export fails
//! here.
//!
//! prometheus.yml is rewritten only where a test must differ: temporary paths, the ports
//! the workers really got, and 1 s scrape/evaluation intervals so the test is quick.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ports::PortBlock;
use common::prometheus::{Place, Prometheus};
use common::redis_server::{redis_available, unique_prefix, Keys, REDIS};
use common::wait_for;
use common::workers::{command, start_command, Worker};
use common::{http_get, http_get_from, tool};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The static targets of prometheus.yml (`127.0.0.1:8001`, …), in order.
fn static_ports(config: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = config
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| {
            line.match_indices("127.0.0.1:")
                .map(move |(i, _)| &line[i + 10..])
        })
        .filter_map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect();
    ports.dedup();
    ports
}

/// prometheus.yml for this test run: same jobs, rules and discovery, with the workers' real
/// ports, absolute rule paths, the test's file_sd directory, and 1 s intervals.
fn rewrite_config(config: &str, port_map: &[(u16, u16)], file_sd_dir: &Path) -> String {
    let mut text = config.to_string();
    for (from, to) in port_map {
        text = text.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
    }
    text = text.replace("prometheus/", &format!("{REPO}/prometheus/"));
    text = text.replace("file_sd/", &format!("{}/", file_sd_dir.display()));
    let interval = |line: &str, key: &str| line.trim_start().starts_with(key);
    text.lines()
        .map(|line| {
            if interval(line, "scrape_interval:") || interval(line, "evaluation_interval:") {
                let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
                let key = line.trim_start().split(':').next().unwrap();
                format!("{indent}{key}: 1s")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `expr` of every panel target in `dashboards/*.json`, with the panel title.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(Path::new(REPO).join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            collect_panel_queries(&dashboard["panels"], &mut queries);
        }
    }
    queries
}

fn collect_panel_queries(panels: &Value, queries: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((title.clone(), expr.to_string()));
            }
        }
        // Rows nest their panels.
        collect_panel_queries(&panel["panels"], queries);
    }
}

/// Grafana's variables as a dashboard user would have them: every job and instance.
fn substitute_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("${__rate_interval}", "15s")
        .replace("$__interval", "5s")
        .replace("${job:regex}", ".*")
        .replace("${instance:regex}", ".*")
        .replace("$job", ".*")
        .replace("${job}", ".*")
        .replace("$instance", ".*")
        .replace("${instance}", ".*")
}

/// The `record:` names of prometheus/recording_rules.yml.
fn recorded_series() -> Vec<String> {
    let rules =
        std::fs::read_to_string(Path::new(REPO).join("prometheus/recording_rules.yml")).unwrap();
    rules
        .lines()
        .filter_map(|line| {
            line.trim_start()
                .trim_start_matches("- ")
                .strip_prefix("record:")
        })
        .map(|name| name.trim().trim_matches('"').to_string())
        .collect()
}

/// The example application, built by `cargo test` beside the test binaries
/// (`target/<profile>/examples/shop`).
fn example(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

/// The example application, on the application port `ports.first()` and the export port
/// `ports.last()` (both held by the caller), announcing itself in `file_sd`.
struct Shop {
    child: std::process::Child,
    port: u16,
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Shop {
    fn start(program: &Path, ports: &PortBlock, file_sd: &Path, database: &Path) -> Shop {
        let child = std::process::Command::new(program)
            .env("ROCKET_CONFIG", Path::new(REPO).join("Rocket.toml"))
            .env("ROCKET_PROFILE", "debug")
            .env("ROCKET_PORT", ports.first().to_string())
            .env("ROCKET_LOG_LEVEL", "off")
            .env(
                "BABYLON_METRICS__EXPORT__PORT_RANGE",
                format!("{0}-{0}", ports.last()),
            )
            .env("BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY", file_sd)
            .env(
                "BABYLON_DATABASES__MAIN__URL",
                format!("sqlite://{}", database.join("shop.sqlite").display()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let shop = Shop {
            child,
            port: ports.first(),
        };
        let live = wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, shop.port)).is_ok()
                && http_get(shop.port, "/api/live").0 == 200
        });
        assert!(
            live,
            "the example application did not start on {}",
            shop.port
        );
        shop
    }
}

/// Traffic of every kind, until `stop` is set: plain, DB reads and writes (including a
/// conflict), unmatched paths, invalid bodies and denied clients; and orders for the
/// example application on `shop_port`.
fn send_traffic(
    workers: Vec<(u16, u16)>,
    shop_port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            post_json(
                shop_port,
                "/api/orders",
                r#"{"item":"tea","quantity":2,"kind":"retail"}"#,
            );
            for (app_port, _) in &workers {
                let port = *app_port;
                http_get(port, "/api/live");
                http_get(port, "/api/health");
                http_get(port, "/api/items?per_page=5");
                http_get(port, &format!("/api/items/{n}"));
                http_get(port, "/wp-login.php");
                post_json(
                    port,
                    "/api/items",
                    &format!(r#"{{"name":"e2e {port} {n}","kind":"book"}}"#),
                );
                post_json(port, "/api/items", r#"{"name":"duplicate","kind":"tool"}"#);
                post_json(port, "/api/items", r#"{"name":"","kind":"car"}"#);
                // 127.0.0.2 is on the deny list of this test's configuration.
                http_get_from(Ipv4Addr::new(127, 0, 0, 2), port, "/api/live", &[]);
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn post_json(port: u16, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn prometheus_scrapes_every_worker_and_every_dashboard_query_has_data() {
    every_dashboard_query_has_data(&[], &[]);
}

/// The same with native histograms on: Prometheus 2.42 scrapes protobuf and stores every
/// histogram as one native series, without `_bucket`, `_sum` and `_count`, and every
/// query still has data, but those that 2.42 cannot answer from native histograms
/// (`label_replace` drops their samples; docs/metrics.md says so): those must be empty,
/// so that the documented gap is the only one.
#[test]
fn every_dashboard_query_has_data_from_native_histograms_too() {
    every_dashboard_query_has_data(
        &["--enable-feature=exemplar-storage,native-histograms"],
        &[
            "label_replace(rate(rocket_http_request_duration_seconds{",
            "job_host:rocket_http_request_duration_seconds:p99_5m",
        ],
    );
}

/// Workers, the example application and a real Prometheus started with `flags` on the
/// repository's prometheus.yml; under traffic, every dashboard query and every recording
/// rule has data, but those containing one of `empty_here`, which have none.
fn every_dashboard_query_has_data(flags: &[&str], empty_here: &[&str]) {
    if tool("prometheus").is_none() || tool("promtool").is_none() || !redis_available() {
        return;
    }
    let Some(shop_program) = example("shop") else {
        common::skip::skip(
            "examples/shop is not built (`cargo test` builds it; `--test e2e_prometheus` alone does not)",
        );
        return;
    };
    let config = std::fs::read_to_string(Path::new(REPO).join("prometheus.yml")).unwrap();
    let configured = static_ports(&config);
    assert!(
        configured.len() >= 3,
        "prometheus.yml should list at least three worker ports: {configured:?}"
    );

    // Workers, one config: each takes the next free port of the range, as in production.
    let range = PortBlock::reserve(configured.len() as u16);
    let file_sd = tempfile::tempdir().unwrap();
    let database = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", database.path().join("e2e.sqlite").display());
    // The cache and the rate limit on Redis, so that the Redis panels have data: the
    // first worker on the shared Redis, the others on one that refuses every connection
    // (its failures and their latency are what the error panels show).
    let prefix = unique_prefix("e2e");
    let _keys = Keys(prefix.clone());
    let (_refusing, refusing_port) = common::refusing_port();
    let workers: Vec<Worker> = configured
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let redis_url = match i {
                0 => REDIS.to_string(),
                _ => format!("redis://127.0.0.1:{refusing_port}"),
            };
            let mut command = command(&range);
            command
                .env("BABYLON_DATABASES__MAIN__URL", &url)
                .env(
                    "BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY",
                    file_sd.path(),
                )
                .env("BABYLON_BLOCKING__DENY", "127.0.0.2/32")
                .env("BABYLON_BLOCKING__RATE_LIMIT__PER_SECOND", "10000")
                .env("BABYLON_BLOCKING__RATE_LIMIT__BURST", "10000")
                .env("BABYLON_BLOCKING__RATE_LIMIT__BACKEND", "redis")
                .env("BABYLON_CACHE__BACKEND", "redis")
                .env("BABYLON_REDIS__URL", redis_url)
                .env("BABYLON_REDIS__KEY_PREFIX", &prefix);
            start_command(command)
        })
        .collect();
    let port_map: Vec<(u16, u16)> = configured
        .iter()
        .copied()
        .zip(workers.iter().map(Worker::export_port))
        .collect();
    let shop_ports = PortBlock::reserve(2);
    let shop_database = tempfile::tempdir().unwrap();
    let shop = Shop::start(
        &shop_program,
        &shop_ports,
        file_sd.path(),
        shop_database.path(),
    );
    let prometheus = Prometheus::start(
        &rewrite_config(&config, &port_map, file_sd.path()),
        Place::Loopback,
        flags,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = send_traffic(
        workers
            .iter()
            .map(|w| (w.app_port, w.export_port()))
            .collect(),
        shop.port,
        stop.clone(),
    );

    // Every worker is a target of the static job and of the file_sd job, the example
    // application of the file_sd job, and all are up.
    let expected_targets = workers.len() * 2 + 1;
    let mut targets = Vec::new();
    let all_up = wait_for(Duration::from_secs(60), || {
        targets = prometheus.targets();
        targets.len() == expected_targets && targets.iter().all(|t| t["health"] == "up")
    });
    assert!(
        all_up,
        "expected {expected_targets} targets up, got {targets:#?}\n{}",
        prometheus.log()
    );
    // The targets page reports a scrape's health before its `up` sample can be queried:
    // wait for the samples too.
    let up_series = |worker: &Worker| {
        prometheus
            .query(&format!(
                r#"up{{instance="127.0.0.1:{}"}} == 1"#,
                worker.export_port()
            ))
            .len()
    };
    wait_for(Duration::from_secs(30), || {
        workers.iter().all(|worker| up_series(worker) == 2)
    });
    for worker in &workers {
        assert_eq!(
            up_series(worker),
            2,
            "worker on {} is scraped, and up, in both jobs",
            worker.export_port()
        );
    }

    // Give rates and recording rules a few samples, then check every query.
    let queries = dashboard_queries();
    assert!(!queries.is_empty(), "no dashboard queries found");
    let recorded = recorded_series();
    assert!(!recorded.is_empty(), "no recording rules found");
    let all: Vec<(String, String)> = queries
        .iter()
        .map(|(title, expr)| (format!("panel `{title}`"), substitute_variables(expr)))
        .chain(
            recorded
                .iter()
                .map(|name| (format!("recording rule `{name}`"), name.clone())),
        )
        .collect();
    let (expected_empty, expected_data): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(_, expr)| empty_here.iter().any(|part| expr.contains(part)));
    assert_eq!(
        expected_empty.len(),
        empty_here.len(),
        "each known gap names one query: {expected_empty:#?}"
    );
    let mut missing = Vec::new();
    wait_for(Duration::from_secs(90), || {
        missing = expected_data
            .iter()
            .filter(|(_, expr)| prometheus.query(expr).is_empty())
            .map(|(what, expr)| format!("{what}: {expr}"))
            .collect();
        missing.is_empty()
    });
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(
        missing.is_empty(),
        "queries without data ({flags:?}):\n{}",
        missing.join("\n")
    );
    for (what, expr) in &expected_empty {
        assert!(
            prometheus.query(expr).is_empty(),
            "{what} has data now ({flags:?}): update docs/metrics.md's note on it: {expr}"
        );
    }
}
