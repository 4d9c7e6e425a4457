//! CPU the server spends per scrape of the export port, in plain HTTP and over TLS
//! (`metrics.export.tls`): two release servers, one of each, scraped in turn by this
//! process; the servers' own CPU time (user + system, from /proc) is divided by the
//! scrapes. Each mode runs several rounds and is reported as a mean with its 95 %
//! confidence interval, so the TLS cost reads as a difference of two such means.
//!
//! Modes: a new connection per scrape; over TLS, a full handshake per scrape (resumption
//! off in the client), a resumed one (the client keeps TLS 1.3 session tickets, as
//! Prometheus does across its connections) and one connection kept alive for every scrape
//! (what Prometheus does between scrapes).
//!
//!   cargo bench --bench export_tls [-- --rounds R --scrapes N]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

/// The certificates and client configurations of the TLS tests (the HTTPS client there is
/// not used here).
#[allow(dead_code)]
#[path = "../tests/common/pki.rs"]
mod pki;

/// The export ports of the two servers (a benchmark holds them for its run; tests never
/// use fixed ports).
const PLAIN_PORT: u16 = 18291;
const TLS_PORT: u16 = 18292;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &std::path::Path, name: &str, port: u16, tls: Option<(&str, &str)>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_babylon"));
        command
            .env("ROCKET_PROFILE", "release")
            .env(
                "ROCKET_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Rocket.toml"),
            )
            .env("ROCKET_PORT", "0")
            .env(
                "BABYLON_DATABASES__MAIN__URL",
                format!("sqlite://{}", dir.join(format!("{name}.sqlite")).display()),
            )
            .env("BABYLON_METRICS__EXPORT__PORT", port.to_string())
            .env("BABYLON_METRICS__EXPORT__ADDRESS", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((cert, key)) = tls {
            command
                .env("BABYLON_METRICS__EXPORT__TLS__CERT_FILE", cert)
                .env("BABYLON_METRICS__EXPORT__TLS__KEY_FILE", key);
        }
        let child = command.spawn().expect("the release binary starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{name} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port }
    }

    /// User and system CPU time so far, in seconds.
    fn cpu_seconds(&self) -> [f64; 2] {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which may hold spaces) closed by ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        [11, 12].map(|field| fields[field].parse::<f64>().unwrap() / ticks)
    }
}

const REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// Reads one response to [`REQUEST`] and returns its body length.
fn read_response(reader: &mut impl BufRead) -> usize {
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the connection closed before a response");
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().unwrap());
            }
        }
        assert!(
            !line.starts_with("HTTP/1.1 ") || line.starts_with("HTTP/1.1 200"),
            "{line}"
        );
    }
    let length = length.expect("a content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    length
}

fn tcp(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    // Closed with a reset, so that tens of thousands of connections leave no TIME_WAIT
    // behind to exhaust the ephemeral ports.
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    stream
}

/// How a mode reaches the server.
#[derive(Clone, Copy)]
enum Mode {
    PlainNewConnection,
    PlainKeptAlive,
    TlsFullHandshake,
    TlsResumed,
    TlsKeptAlive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::PlainNewConnection => "plain HTTP, new connection per scrape",
            Mode::PlainKeptAlive => "plain HTTP, one kept-alive connection",
            Mode::TlsFullHandshake => "TLS, full handshake per scrape",
            Mode::TlsResumed => "TLS, resumed handshake per scrape",
            Mode::TlsKeptAlive => "TLS, one kept-alive connection",
        }
    }
}

/// `scrapes` scrapes of `server` in `mode`; returns how many handshakes were resumed.
fn scrape(server: &Server, mode: Mode, scrapes: usize, clients: &Clients) -> usize {
    let mut resumed = 0;
    match mode {
        Mode::PlainNewConnection => {
            for _ in 0..scrapes {
                let mut stream = tcp(server.port);
                stream.write_all(REQUEST).unwrap();
                read_response(&mut BufReader::new(stream));
            }
        }
        Mode::PlainKeptAlive => {
            let mut stream = BufReader::new(tcp(server.port));
            for _ in 0..scrapes {
                stream.get_mut().write_all(REQUEST).unwrap();
                read_response(&mut stream);
            }
        }
        Mode::TlsFullHandshake | Mode::TlsResumed => {
            let config = match mode {
                Mode::TlsFullHandshake => &clients.no_resumption,
                _ => &clients.resumption,
            };
            for _ in 0..scrapes {
                let mut tls = tls_stream(server.port, config);
                tls.write_all(REQUEST).unwrap();
                let mut reader = BufReader::new(tls);
                read_response(&mut reader);
                if reader.get_ref().conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    resumed += 1;
                }
            }
        }
        Mode::TlsKeptAlive => {
            let mut reader = BufReader::new(tls_stream(server.port, &clients.resumption));
            for _ in 0..scrapes {
                reader.get_mut().write_all(REQUEST).unwrap();
                read_response(&mut reader);
            }
        }
    }
    resumed
}

fn tls_stream(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(config.clone(), name).unwrap();
    rustls::StreamOwned::new(connection, tcp(port))
}

struct Clients {
    resumption: Arc<rustls::ClientConfig>,
    no_resumption: Arc<rustls::ClientConfig>,
}

/// Mean and half-width of the 95 % confidence interval (Student's t).
fn interval(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    // t(0.975) for 1..=9 degrees of freedom, then the normal's 1.96.
    const T: [f64; 9] = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26];
    let t = T.get(samples.len() - 2).copied().unwrap_or(1.96);
    (mean, t * (variance / n).sqrt())
}

fn main() {
    let mut rounds = 5;
    let mut scrapes = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            "--scrapes" => scrapes = args.next().unwrap().parse().unwrap(),
            // `cargo bench` passes --bench.
            _ => {}
        }
    }
    assert!(rounds >= 2, "--rounds: at least 2, for an interval");

    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("benchmark CA");
    let files = ca.server(30).write(dir.path(), "server", &ca);

    let plain = Server::start(dir.path(), "plain", PLAIN_PORT, None);
    let tls = Server::start(
        dir.path(),
        "tls",
        TLS_PORT,
        Some((files.cert.to_str().unwrap(), files.key.to_str().unwrap())),
    );

    let resumption = pki::client_config(&ca, None, pki::Versions::Both);
    let mut no_resumption = (*resumption).clone();
    no_resumption.resumption = rustls::client::Resumption::disabled();
    let clients = Clients {
        resumption,
        no_resumption: Arc::new(no_resumption),
    };

    let modes = [
        (Mode::PlainNewConnection, &plain),
        (Mode::PlainKeptAlive, &plain),
        (Mode::TlsFullHandshake, &tls),
        (Mode::TlsResumed, &tls),
        (Mode::TlsKeptAlive, &tls),
    ];
    // Warm both servers (and the client's session cache).
    for (mode, server) in modes {
        scrape(server, mode, 50, &clients);
    }
    // Per mode: total, user and system µs per scrape, one sample per round.
    let mut results: Vec<[Vec<f64>; 3]> = vec![Default::default(); modes.len()];
    let mut resumed = 0;
    for _ in 0..rounds {
        // Modes interleaved within each round, so drift of the machine spreads over all.
        for (i, (mode, server)) in modes.iter().enumerate() {
            let before = server.cpu_seconds();
            resumed += scrape(server, *mode, scrapes, &clients);
            let after = server.cpu_seconds();
            let per_scrape = |at: usize| (after[at] - before[at]) / scrapes as f64 * 1e6;
            let (user, system) = (per_scrape(0), per_scrape(1));
            results[i][0].push(user + system);
            results[i][1].push(user);
            results[i][2].push(system);
        }
    }
    println!(
        "server CPU per scrape of the export port, µs (mean ± 95 % CI of {rounds} rounds of {scrapes} scrapes)"
    );
    println!(
        "{:<40} {:>16} {:>16} {:>16}",
        "mode", "user + system", "user", "system"
    );
    let mut means = Vec::new();
    for ((mode, _), samples) in modes.iter().zip(&results) {
        let [total, user, system] = samples.each_ref().map(|s| interval(s));
        means.push(total.0);
        let cell = |(mean, half): (f64, f64)| format!("{mean:.1} ± {half:.1}");
        println!(
            "{:<40} {:>16} {:>16} {:>16}",
            mode.name(),
            cell(total),
            cell(user),
            cell(system)
        );
    }
    println!(
        "TLS minus plain: new connection, full handshake {:+.1}; resumed {:+.1}; kept alive {:+.1}",
        means[2] - means[0],
        means[3] - means[0],
        means[4] - means[1]
    );
    println!(
        "resumed handshakes: {resumed} of {} in the resumed mode",
        rounds * scrapes
    );
}
