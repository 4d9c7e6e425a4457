//! The real binary, as users start it: several workers with one config each take the next
//! free export port; a taken range stops start-up with one line naming it.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use common::ports::PortBlock;
use common::workers::{command, start, start_command, terminate, Worker};
use common::{http_get, refusing_port, sample};

#[test]
fn three_workers_take_three_consecutive_export_ports() {
    let range = PortBlock::reserve(5);
    let workers: Vec<Worker> = (0..3).map(|_| start(&range)).collect();
    let ports: Vec<u16> = workers.iter().map(Worker::export_port).collect();
    let first = range.first();
    assert_eq!(ports, [first, first + 1, first + 2]);
    for worker in &workers {
        let (status, body) = http_get(worker.app_port, "/api/metrics");
        assert_eq!(status, 200);
        let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            summary["export_port"],
            worker.export_port(),
            "/api/metrics names the export port"
        );
        // Each worker's export port serves that worker's own registry.
        let (status, text) = http_get(worker.export_port(), "/metrics");
        assert_eq!(status, 200);
        assert_eq!(sample(&text, "api_requests_total"), Some(1.0));
        assert!(sample(&text, "process_start_time_seconds").is_some());
    }
}

#[test]
fn all_ports_taken_fails_start_up_naming_the_range() {
    let range = PortBlock::reserve(2);
    let _held: Vec<TcpListener> = (range.first()..=range.last())
        .map(|p| TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).unwrap())
        .collect();
    let output = command(&range).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| {
            common::logs::log_line(l).is_some_and(|l| l.level == "ERROR" && l.target == "babylon")
        })
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        line.contains(&range.range_setting()) && line.contains("metrics.export.port_range"),
        "{line}"
    );

    // Or, when the settings say so, the worker runs without export.
    let mut lenient = command(&range);
    lenient.env(
        "BABYLON_METRICS__EXPORT__WHEN_PORTS_TAKEN",
        "run_without_export",
    );
    let mut child = lenient.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the lenient worker keeps running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn check_config_opens_no_listener() {
    // One reserved port for the application, one for export.
    let ports = PortBlock::reserve(2);
    let (app_port, export_port) = (ports.first(), ports.last());
    let output = command(&ports)
        .env("ROCKET_PORT", app_port.to_string())
        .env(
            "BABYLON_METRICS__EXPORT__PORT_RANGE",
            export_port.to_string(),
        )
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(output.status.success());
    // Both ports are still free: nothing was bound.
    assert!(TcpListener::bind((Ipv4Addr::UNSPECIFIED, export_port)).is_ok());
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, app_port)).is_ok());
}

#[test]
fn release_profile_serves_metrics_on_the_export_port_only() {
    let range = PortBlock::reserve(2);
    let mut command = command(&range);
    command.env("ROCKET_PROFILE", "release");
    let worker = start_command(command);
    assert_eq!(http_get(worker.app_port, "/metrics").0, 404);
    assert_eq!(http_get(worker.app_port, "/api/health").0, 200);
    assert_eq!(http_get(worker.export_port(), "/metrics").0, 200);
}

#[test]
fn unreachable_database_at_start_up_names_the_setting_and_hides_the_password() {
    let (_reserved, closed) = refusing_port();
    let ports = PortBlock::reserve(1);
    // Raw, a `/` or `#` ends the URL's authority early: the password must still not show.
    for (password, secret) in [
        ("hunter2", "hunter2"),
        ("hunt%2Fer%40%3F", "hunt%2Fer%40%3F"),
        ("pa/ss", "pa/ss"),
        ("12/word", "12/word"),
        ("se#cret", "se#cret"),
    ] {
        let mut command = command(&ports);
        command
            .env(
                "BABYLON_DATABASES__MAIN__URL",
                format!("postgres://app:{password}@127.0.0.1:{closed}/app"),
            )
            .env("BABYLON_DATABASES__MAIN__CONNECT_TIMEOUT", "1");
        let output = command.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!all.contains(secret), "the password {secret} leaked: {all}");
        assert!(all.contains("databases.main.url"), "{all}");
        if password.contains(['/', '#']) {
            // Refused as a setting, before anything connects.
            assert_eq!(output.status.code(), Some(2), "{all}");
        } else {
            assert_eq!(output.status.code(), Some(1), "{all}");
            assert!(all.contains("Connection refused"), "{all}");
        }
    }
}

#[test]
fn workers_started_at_once_on_a_fresh_sqlite_file_all_come_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fresh.sqlite").display());
    let range = PortBlock::reserve(4);
    let workers: Vec<Worker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (url, range) = (url.clone(), &range);
                scope.spawn(move || {
                    let mut command = command(range);
                    command.env("BABYLON_DATABASES__MAIN__URL", url);
                    start_command(command)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = workers.iter().map(Worker::export_port).collect();
    ports.sort_unstable();
    assert_eq!(ports, (range.first()..=range.last()).collect::<Vec<_>>());
    for worker in &workers {
        let (status, body) = http_get(worker.app_port, "/api/health");
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn file_sd_targets_follow_the_live_workers() {
    let dir = tempfile::tempdir().unwrap();
    let range = PortBlock::reserve(3);
    let mut workers: Vec<Worker> = (0..2)
        .map(|_| {
            let mut command = command(&range);
            command
                .env("BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY", dir.path())
                .env(
                    "BABYLON_METRICS__EXPORT__FILE_SD__LABELS",
                    "{env = \"test\"}",
                );
            start_command(command)
        })
        .collect();
    let target_of = |port: u16| -> serde_json::Value {
        let text =
            std::fs::read_to_string(dir.path().join(format!("babylon-127.0.0.1-{port}.json")))
                .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    for worker in &workers {
        let target = target_of(worker.export_port());
        assert_eq!(
            target[0]["targets"][0],
            format!("127.0.0.1:{}", worker.export_port())
        );
        assert_eq!(target[0]["labels"]["env"], "test");
        // The announced target really serves this worker's metrics.
        assert_eq!(http_get(worker.export_port(), "/metrics").0, 200);
    }
    let stopped = workers.remove(0);
    let port = stopped.export_port();
    let mut stopped = stopped;
    let status = terminate(&mut stopped);
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    assert!(
        !dir.path()
            .join(format!("babylon-127.0.0.1-{port}.json"))
            .exists(),
        "the stopped worker's target is removed"
    );
    assert!(
        dir.path()
            .join(format!(
                "babylon-127.0.0.1-{}.json",
                workers[0].export_port()
            ))
            .exists(),
        "the live worker's target stays"
    );
}

#[test]
fn an_unusable_file_sd_directory_stops_start_up() {
    let ports = PortBlock::reserve(1);
    let mut command = command(&ports);
    command.env(
        "BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY",
        "/nonexistent/targets",
    );
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("metrics.export.file_sd.directory"),
        "{stderr}"
    );
}

#[test]
#[cfg(target_os = "linux")]
fn the_worker_runs_without_transparent_huge_pages() {
    // crates/babylon/src/memory.rs: with huge pages, mimalloc's arenas made a worker's memory resident
    // in 2 MiB steps (BENCHMARKS.md, "Allocator").
    let ports = PortBlock::reserve(1);
    let worker = start(&ports);
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.child.id())).unwrap();
    let thp_enabled = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line (Linux >= 5.0) in {status}"));
    assert_eq!(thp_enabled.trim(), "0", "transparent huge pages are on");
}

#[test]
fn a_worker_restarted_right_after_serving_scrapes_gets_its_export_port_back() {
    // One port only: if the new worker cannot bind it, start-up fails.
    let ports = PortBlock::reserve(1);
    let mut first = start(&ports);
    for _ in 0..3 {
        // HTTP/1.0: the worker closes each connection first, so they linger in TIME_WAIT
        // on its export port after it exits.
        assert_eq!(http_get(first.export_port(), "/metrics").0, 200);
    }
    assert!(terminate(&mut first).success());
    let second = start(&ports);
    assert_eq!(second.export_port(), ports.first());
}

#[test]
fn the_service_answers_while_more_idle_connections_are_open_than_its_soft_file_limit() {
    // The test itself holds the connections, so it needs the room too.
    babylon::limits::raise_open_files_limit().unwrap();
    const SOFT_LIMIT: usize = 256;
    let ports = PortBlock::reserve(1);
    let worker_command = command(&ports);
    let program = worker_command.get_program().to_owned();
    // The worker starts with a soft limit of 256 (the hard one stays), as under a shell or
    // service manager that keeps the traditional low soft limit.
    let mut shell = std::process::Command::new("sh");
    shell
        .arg("-c")
        .arg(format!("ulimit -S -n {SOFT_LIMIT} && exec \"$0\""))
        .arg(program);
    for (key, value) in worker_command.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    shell
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let worker = start_command(shell);

    // Idle connections: accepted, and never a byte sent.
    let idle: Vec<std::net::TcpStream> = (0..SOFT_LIMIT * 3 / 2)
        .map(|n| {
            let address = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, worker.app_port));
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection {n} was not accepted: {e}"))
        })
        .collect();
    for _ in 0..3 {
        for (port, path) in [
            (worker.app_port, "/api/health"),
            (worker.export_port(), "/metrics"),
        ] {
            let answer = common::exchange(
                port,
                &format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n"),
                Duration::from_secs(5),
            );
            assert!(
                matches!(answer, common::Outcome::Complete { status: 200, .. }),
                "{path} with {} idle connections: {answer:?}",
                idle.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, text) = http_get(worker.export_port(), "/metrics");
    let open_fds = sample(&text, "process_open_fds").unwrap();
    assert!(
        open_fds > SOFT_LIMIT as f64,
        "the worker holds the idle connections: {open_fds} descriptors"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", worker.child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "soft raised to hard: {limits}"
    );
    drop(idle);
}
