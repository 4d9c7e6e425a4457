//! Real babylon processes for the tests that start the built binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{binary, free_port};

/// A running babylon process, killed when dropped.
pub struct Worker {
    pub child: Child,
    pub app_port: u16,
    pub export_port: u16,
}

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
pub fn command_in(dir: &std::path::Path, app_port: u16, range: (u16, u16)) -> Command {
    let mut command = command(app_port, range);
    let url = format!("sqlite://{}", dir.join("babylon.sqlite").display());
    command.env("BABYLON_DATABASES__MAIN__URL", url);
    command
}

pub fn command(app_port: u16, range: (u16, u16)) -> Command {
    let mut command = binary();
    command
        .env("BABYLON_DATABASES__MAIN__URL", shared_database())
        .env(
            "ROCKET_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Rocket.toml"),
        )
        .env("ROCKET_PROFILE", "debug")
        .env("ROCKET_PORT", app_port.to_string())
        .env("ROCKET_CLI_COLORS", "false")
        .env(
            "BABYLON_METRICS__EXPORT__PORT_RANGE",
            format!("{}-{}", range.0, range.1),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts a worker and waits for its log to name its export port and for the app port.
pub fn start(range: (u16, u16)) -> Worker {
    let app_port = free_port();
    start_command(command(app_port, range), app_port)
}

pub fn start_command(mut command: Command, app_port: u16) -> Worker {
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut export_port = None;
    let mut launched = false;
    while !(launched && export_port.is_some()) {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(wait) else {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "worker did not start (export {export_port:?}, launched {launched}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        if let Some(rest) = line.split_once("(port ").map(|(_, rest)| rest) {
            export_port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
        }
        launched |= line.contains("Rocket has launched");
    }
    // Keep draining the log so the worker never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Worker {
        child,
        app_port,
        export_port: export_port.unwrap(),
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
