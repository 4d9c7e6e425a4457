//! Real babylon processes for the tests that start the built binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::binary;
use super::ports::PortBlock;

/// A running babylon process, killed when dropped.
pub struct Worker {
    pub child: Child,
    /// The application port, chosen by the kernel (`ROCKET_PORT=0`) and read back from
    /// the worker's "listening on" line.
    pub app_port: u16,
    export_port: Option<u16>,
    /// The last lines the worker printed (Rocket logs to standard output).
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    /// Every line with `babylon: ` in it (babylon's start-up lines, its notices), however
    /// much Rocket logged after it.
    notices: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Worker {
    /// The export port the worker announced; panics if it runs without export.
    pub fn export_port(&self) -> u16 {
        self.export_port
            .expect("this worker announced no export port (export disabled?)")
    }

    /// The lines with `babylon: ` in them, the first [`NOTICES_KEPT`].
    pub fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }

    /// The last lines of the worker's standard output ([`LOG_LINES_KEPT`] unless it was
    /// started with [`start_command_keeping_every_line`]).
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().cloned().collect()
    }

    /// The last lines of the worker's standard output and all of its standard error, for
    /// a failing assertion's message.
    pub fn output(&mut self) -> String {
        let mut text: Vec<String> = self.log.lock().unwrap().iter().cloned().collect();
        if let Some(mut pipe) = self.child.stderr.take() {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            text.push(stderr);
        }
        text.join("\n")
    }
}

/// Lines of a worker's output kept for [`Worker::output`].
const LOG_LINES_KEPT: usize = 200;

/// Lines of babylon's own kept for [`Worker::notices`].
pub const NOTICES_KEPT: usize = 1000;

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The database of every worker a test starts: one SQLite file, as workers would share.
pub fn shared_database() -> &'static str {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    Box::leak(format!("sqlite://{}", dir.path().join("workers.sqlite").display()).into_boxed_str())
}

/// [`command`] with the worker's own SQLite database inside `dir`.
pub fn command_in(dir: &std::path::Path, ports: &PortBlock) -> Command {
    let mut command = command(ports);
    command.env("BABYLON_DATABASES__MAIN__URL", database_in(dir));
    command
}

/// A SQLite database of a worker's own inside `dir`.
fn database_in(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("babylon.sqlite").display())
}

/// A worker on an application port the kernel picks, exporting on the first free port
/// of `ports` (which the caller keeps reserved for as long as the worker runs).
pub fn command(ports: &PortBlock) -> Command {
    let mut command = base();
    command.env("BABYLON_METRICS__EXPORT__PORT_RANGE", ports.range_setting());
    command
}

/// A worker without an export listener, with its own SQLite database inside `dir`; its
/// main port serves metrics (the debug profile).
pub fn command_without_export_in(dir: &std::path::Path) -> Command {
    let mut command = base();
    command
        .env("BABYLON_METRICS__EXPORT__ENABLED", "false")
        .env("BABYLON_DATABASES__MAIN__URL", database_in(dir));
    command
}

/// A worker's command without export settings: on the shared database, an application
/// port the kernel picks, the repository's Rocket.toml, the debug profile.
pub fn base() -> Command {
    let mut command = binary();
    command
        .env("BABYLON_DATABASES__MAIN__URL", shared_database())
        .env(
            "ROCKET_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Rocket.toml"),
        )
        .env("ROCKET_PROFILE", "debug")
        .env("ROCKET_PORT", "0")
        .env("ROCKET_CLI_COLORS", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts a worker exporting on `ports`; see [`start_command`].
pub fn start(ports: &PortBlock) -> Worker {
    start_command(command(ports))
}

/// Starts a worker and waits for its "listening on" line, which names the application
/// port; the export banner, printed before it, names the export port.
pub fn start_command(command: Command) -> Worker {
    start_keeping(command, LOG_LINES_KEPT)
}

/// [`start_command`], keeping every line the worker writes (for a test that reads them
/// all).
pub fn start_command_keeping_every_line(command: Command) -> Worker {
    start_keeping(command, usize::MAX)
}

fn start_keeping(mut command: Command, lines_kept: usize) -> Worker {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut export_port = None;
    let mut early = Vec::new();
    let app_port = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(wait) else {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "worker did not start (export port {export_port:?}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        if let Some(rest) = line.split_once("(port ").map(|(_, rest)| rest) {
            export_port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
        }
        let address = super::logs::listening_address(&line);
        early.push(line);
        if let Some(address) = address {
            break address.port();
        }
    };
    // Keep draining the log so the worker never blocks on a full pipe, keeping its tail.
    let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (kept, kept_notices) = (log.clone(), notices.clone());
    let keep = move |line: String| {
        if line.contains("babylon: ") {
            let mut notices = kept_notices.lock().unwrap();
            if notices.len() < NOTICES_KEPT {
                notices.push(line.clone());
            }
        }
        let mut kept = kept.lock().unwrap();
        if kept.len() == lines_kept {
            kept.pop_front();
        }
        kept.push_back(line);
    };
    early.into_iter().for_each(&keep);
    std::thread::spawn(move || rx.iter().for_each(keep));
    Worker {
        child,
        app_port,
        export_port,
        log,
        notices,
    }
}

/// Sends SIGTERM, as systemd and `kill` do, and waits for the exit status.
pub fn terminate(worker: &mut Worker) -> ExitStatus {
    let pid = worker.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = worker.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
