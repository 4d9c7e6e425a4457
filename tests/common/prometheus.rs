//! A real Prometheus for the tests, on loopback or on a host of a test network, killed
//! when dropped, and queried through its HTTP API.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::netns::Host;
use super::ports::PortBlock;
use super::wait_for;

/// Where a Prometheus listens.
pub enum Place<'a> {
    /// 127.0.0.1, on a port reserved for as long as it runs.
    Loopback,
    /// `host`'s address and `port`, inside its namespace (no reservation needed: the
    /// namespace is the test's own).
    On(&'a Host, u16),
}

/// A running Prometheus, killed when dropped.
pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    /// The host whose namespace it runs in; `None`: loopback of the test's own.
    host: Option<Host>,
    /// Keeps a loopback port ours until Prometheus has stopped.
    _reserved: Option<PortBlock>,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with `config` (the text of a prometheus.yml) and `extra_args`,
    /// and waits, at most 30 s, until it is ready.
    pub fn start(config: &str, place: Place<'_>, extra_args: &[&str]) -> Prometheus {
        let program = super::tool("prometheus").expect("checked by the caller");
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let (address, host, reserved) = match place {
            Place::Loopback => {
                let reserved = PortBlock::reserve(1);
                let address = SocketAddr::from((Ipv4Addr::LOCALHOST, reserved.first()));
                (address, None, Some(reserved))
            }
            Place::On(host, port) => (
                SocketAddr::from((host.address, port)),
                Some(host.clone()),
                None,
            ),
        };
        let mut command = Command::new(program);
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .args(extra_args);
        let mut command = match &host {
            Some(host) => host.wrap(&command),
            None => command,
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        let prometheus = Prometheus {
            child,
            address,
            host,
            _reserved: reserved,
            dir,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            prometheus
                .try_get("/-/ready")
                .is_some_and(|(status, _)| status == 200)
        });
        assert!(
            ready,
            "Prometheus did not become ready: {}",
            prometheus.log()
        );
        prometheus
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path`, or `None` when nothing answers (yet).
    fn try_get(&self, path: &str) -> Option<(u16, String)> {
        let address = self.address;
        let attempt = move || {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
                .ok()
                .map(|_| super::http_request_at(address, "GET", path, &[], ""))
        };
        match &self.host {
            Some(host) => host.run(attempt),
            None => attempt(),
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|| panic!("Prometheus on {} does not answer", self.address))
    }

    /// Runs an instant query; the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", percent_encode(promql)));
        assert_eq!(status, 200, "query `{promql}` failed: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The exemplars of the series `promql` selects over the last hour: the `data` array
    /// of `/api/v1/query_exemplars`, one entry per series with its `exemplars`.
    pub fn query_exemplars(&self, promql: &str) -> Vec<Value> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (status, body) = self.get(&format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            percent_encode(promql),
            now - 3600,
            now + 60
        ));
        assert_eq!(status, 200, "exemplars of `{promql}` failed: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["data"].as_array().cloned().unwrap_or_default()
    }

    /// The `(trace_id, span_id)` of every exemplar [`Prometheus::query_exemplars`]
    /// finds for `promql`.
    pub fn exemplar_ids(&self, promql: &str) -> Vec<(String, String)> {
        self.query_exemplars(promql)
            .iter()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .map(|exemplar| {
                let label =
                    |name: &str| exemplar["labels"][name].as_str().unwrap_or("").to_string();
                (label("trace_id"), label("span_id"))
            })
            .collect()
    }

    /// A Prometheus on loopback keeping exemplars, whose one job `openmetrics` scrapes
    /// `127.0.0.1:port` every second in its default format (OpenMetrics), once that
    /// target is up.
    pub fn keeping_exemplars_of(port: u16) -> Prometheus {
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: openmetrics\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        );
        let prometheus = Prometheus::start(
            &config,
            Place::Loopback,
            &["--enable-feature=exemplar-storage"],
        );
        for target in prometheus.scraped_targets(1, &config) {
            assert_eq!(target["health"], "up", "{target:#}");
        }
        prometheus
    }

    /// The active targets once there are `count` and each has been scraped (health not
    /// `unknown`), waiting at most 30 s; panics with `context` and the log otherwise.
    pub fn scraped_targets(&self, count: usize, context: &str) -> Vec<Value> {
        let mut targets = Vec::new();
        let scraped = super::wait_for(Duration::from_secs(30), || {
            targets = self.targets();
            targets.len() == count && targets.iter().all(|t| t["health"] != "unknown")
        });
        assert!(scraped, "{context}\n{targets:#?}\n{}", self.log());
        targets
    }

    /// The active targets.
    pub fn targets(&self) -> Vec<Value> {
        let (_, body) = self.get("/api/v1/targets?state=active");
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        answer["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The value of one sample of an instant query's result.
pub fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
