//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use babylon::settings::figment_from;
use figment::Figment;
use rocket::local::blocking::{Client, LocalRequest};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Settings for an in-process test, with its SQLite database inside `dir`: no export
/// listener unless a test asks for one.
pub fn settings_in(dir: &TempDir, overrides: Value) -> Figment {
    let url = format!("sqlite://{}", dir.path().join("babylon.sqlite").display());
    let mut base = json!({
        "metrics": { "export": { "enabled": false } },
        "databases": { "main": { "url": url } },
        "log_level": "off",
    });
    merge(&mut base, overrides);
    figment_from(base)
}

/// Settings for tests that only parse them and never open the database.
pub fn settings(overrides: Value) -> Figment {
    let mut base = json!({ "databases": { "main": { "url": "sqlite::memory:" } } });
    merge(
        &mut base,
        json!({ "metrics": { "export": { "enabled": false } }, "log_level": "off" }),
    );
    merge(&mut base, overrides);
    figment_from(base)
}

fn merge(base: &mut Value, overrides: Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(overrides)) => {
            for (key, value) in overrides {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, value) => *base = value,
    }
}

/// A local client and the directory holding its database, removed when dropped.
pub struct TestClient {
    client: Client,
    _dir: TempDir,
}

impl std::ops::Deref for TestClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A local client over the service built from `overrides`, on a fresh SQLite database.
pub fn client(overrides: Value) -> TestClient {
    client_with_routes(overrides, Vec::new())
}

/// Like [`client`], with extra routes mounted under `/test`.
pub fn client_with_routes(overrides: Value, routes: Vec<rocket::Route>) -> TestClient {
    let dir = tempfile::tempdir().unwrap();
    let app =
        babylon_app::App::from_figment(settings_in(&dir, overrides)).expect("valid test settings");
    let rocket = app.rocket().expect("service builds").mount("/test", routes);
    TestClient {
        client: Client::tracked(rocket).expect("valid rocket"),
        _dir: dir,
    }
}

/// Every method a client might send, for tests that try each on every path.
pub const METHODS: [rocket::http::Method; 7] = [
    rocket::http::Method::Get,
    rocket::http::Method::Head,
    rocket::http::Method::Post,
    rocket::http::Method::Put,
    rocket::http::Method::Delete,
    rocket::http::Method::Patch,
    rocket::http::Method::Options,
];

/// Requests from a given peer address (the local client has none by default).
pub fn from<'c>(request: LocalRequest<'c>, peer: &str) -> LocalRequest<'c> {
    let addr: SocketAddr = format!("{peer}:40000")
        .parse()
        .or_else(|_| format!("[{peer}]:40000").parse())
        .unwrap();
    request.remote(addr)
}

/// The metrics text as served on the main port to a loopback client.
pub fn scrape(client: &Client) -> String {
    let response = from(client.get("/metrics"), "127.0.0.1").dispatch();
    assert_eq!(response.status().code, 200, "scrape refused");
    response.into_string().unwrap()
}

/// [`scrape`] for Rocket's asynchronous local client.
pub async fn scrape_async(client: &rocket::local::asynchronous::Client) -> String {
    let request = client
        .get("/metrics")
        .remote("127.0.0.1:1".parse().unwrap());
    request.dispatch().await.into_string().await.unwrap()
}

/// The value of one sample, `name{labels}` written exactly as the exposition writes it
/// (labels sorted by name), or `None` when absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse().ok()).flatten()
        })
}

pub fn sample_or_zero(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// The value of `series` (0 when absent) in the exposition a worker serves on the
/// metrics path of its main port, `127.0.0.1:port`.
pub fn sample_at(port: u16, series: &str) -> f64 {
    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    sample_or_zero(&text, series)
}

/// An external program a test needs. Missing: the test is skipped ([`skip::skip`]: said on
/// the terminal and in the binary's closing summary), except under CI=true where a missing
/// tool is a failure.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let package = match name {
            "promtool" | "prometheus" => "prometheus",
            "psql" => "postgresql-client",
            "initdb" | "pg_ctl" => "postgresql",
            "nix-instantiate" => "nix-bin",
            "mkfs.ext4" | "e2fsck" => "e2fsprogs",
            "losetup" => "mount",
            "nsenter" | "unshare" => "util-linux",
            other => other,
        };
        skip::skip(&format!(
            "`{name}` is not installed (Debian: apt-get install -y {package}); `bash .ci/run` installs it"
        ));
    }
    found
}

/// A Python 3 that has `prometheus_client`, whose OpenMetrics parser is strict: Debian's
/// `/usr/bin/python3` with `python3-prometheus-client` (what `.ci/run` installs), else a
/// `python3` on `PATH` that has it. Missing: skipped, as [`tool`] does.
pub fn python_with_prometheus_client() -> Option<PathBuf> {
    let has_client = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let found = std::iter::once(PathBuf::from("/usr/bin/python3"))
        .chain(tool("python3"))
        .find(|python| has_client(python));
    if found.is_none() {
        skip::skip(
            "no python3 with prometheus_client (Debian: apt-get install -y python3-prometheus-client); `bash .ci/run` installs it",
        );
    }
    found
}

/// Polls `done` every 50 ms until it holds or `limit` passes; whether it held.
pub fn wait_for(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// Waits, at most 15 s, until `done` holds; fails naming `what` otherwise.
pub fn wait_until(what: &str, done: impl FnMut() -> bool) {
    assert!(
        wait_for(std::time::Duration::from_secs(15), done),
        "{what} within 15 s"
    );
}

/// Creates the book `name` through Rocket's local client, asserting 201; its `id`.
pub fn create_item(client: &Client, name: &str) -> String {
    let response = client
        .post("/api/items")
        .header(rocket::http::ContentType::JSON)
        .body(json!({ "name": name, "kind": "book" }).to_string())
        .dispatch();
    assert_eq!(response.status(), rocket::http::Status::Created);
    created_id(&response.into_string().unwrap_or_default())
}

/// The `id` of the JSON item in a 201 answer's `body`.
pub fn created_id(body: &str) -> String {
    let item: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON item ({e}): {body}"));
    item["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_string()
}

/// The built service binary.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_babylon"))
}

/// A loopback port that refuses connections for as long as the returned socket lives: it
/// is bound but never listens, so no other test can take it in the meantime (a port that
/// was merely free a moment ago once turned out to be another test's HTTP server).
pub fn refusing_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// How one raw HTTP exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A whole response: status line, headers and exactly Content-Length body bytes.
    Complete { status: u16, body: String },
    /// The connection was refused: nothing was sent.
    Refused,
    /// Sent, then the connection ended before any byte of a response: a server that had
    /// stopped accepting resets queued connections so, and one that died mid-request too.
    NoAnswer,
    /// Some of a response, then the connection ended.
    Truncated(String),
}

/// Sends one raw HTTP/1.0 `request` to `127.0.0.1:port` and reads the answer to the end,
/// waiting at most `patience` for each read, without panicking on a server that is gone:
/// fault tests need to tell the cases apart.
pub fn exchange(port: u16, request: &str, patience: std::time::Duration) -> Outcome {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)) else {
        return Outcome::Refused;
    };
    // A server that stops answering must not hang the test.
    let _ = stream.set_read_timeout(Some(patience));
    if stream.write_all(request.as_bytes()).is_err() {
        return Outcome::NoAnswer;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    if response.is_empty() {
        return Outcome::NoAnswer;
    }
    let text = String::from_utf8_lossy(&response).to_string();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Truncated(text);
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        })
        .and_then(Result::ok);
    match (head.get(9..12).and_then(|s| s.parse().ok()), length) {
        (Some(status), Some(length)) if body.len() == length => Outcome::Complete {
            status,
            body: body.to_string(),
        },
        _ => Outcome::Truncated(text),
    }
}

/// A JSON `POST` to `127.0.0.1:port`; see [`exchange`].
pub fn post_json(port: u16, path: &str, body: &str) -> Outcome {
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        std::time::Duration::from_secs(60),
    )
}

/// A raw HTTP/1.0 request to `127.0.0.1:port` (1.0: no server answers it with a chunked
/// body), sent from the loopback address `source` (e.g. 127.0.0.2, to be outside an
/// allow-list), with extra header lines and a body. Returns the status code and the body.
pub fn http_request_from(
    source: std::net::Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::net::{Ipv4Addr, SocketAddr};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket
        .connect(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())
        .unwrap();
    let answer = send_request(socket.into(), method, path, headers, body);
    (answer.status, answer.body)
}

/// A raw HTTP/1.0 request to `address` (any host the calling thread can reach, e.g. from
/// inside a network namespace); see [`http_request_from`].
pub fn http_request_at(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let stream = std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    let answer = send_request(stream, method, path, headers, body);
    (answer.status, answer.body)
}

/// Writes one request on `stream` and reads the answer to the end (at most 60 s of
/// silence).
fn send_request(
    mut stream: std::net::TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{extra}{length}Connection: close\r\n\r\n{body}").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    Answer::parse(&response)
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    fn parse(response: &str) -> Answer {
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        Answer {
            status: response[9..12].parse().unwrap(),
            headers,
            body: body.to_string(),
        }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A raw HTTP/1.0 request to `127.0.0.1:port`, answered whole, headers included.
pub fn http_answer(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let stream = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).unwrap();
    send_request(stream, method, path, headers, body)
}

/// A raw GET from `source`; see [`http_request_from`].
pub fn http_get_from(
    source: std::net::Ipv4Addr,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_request_from(source, port, "GET", path, headers, "")
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_from(std::net::Ipv4Addr::LOCALHOST, port, path, &[])
}
pub mod ledger;
pub mod logs;
pub mod netns;
pub mod pg;
pub mod pki;
pub mod ports;
pub mod prometheus;
pub mod redis_server;
pub mod settings_keys;
pub mod silent_proxy;
pub mod skip;
pub mod workers;

/// Runs `promtool check metrics` on `text`: whether it passed with nothing to report,
/// and what it reported.
pub fn promtool_check_metrics(promtool: &std::path::Path, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && report.trim().is_empty(), report)
}
