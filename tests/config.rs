//! Settings: every wrong value stops start-up with one message naming the key.

mod common;

use babylon::settings::Settings;
use common::{binary, settings};
use serde_json::{json, Value};

fn error_of(overrides: Value) -> String {
    match Settings::from_figment(&settings(overrides)) {
        Ok(_) => panic!("settings should have been refused"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn wrong_values_name_the_key_and_the_problem() {
    let cases = [
        (
            json!({ "blocking": { "rate_limit": { "per_second": 1, "burst": 1, "ipv6_prefix": 0 } } }),
            [
                "blocking.rate_limit.ipv6_prefix",
                "not an IPv6 prefix length",
            ],
        ),
        (
            json!({ "blocking": { "rate_limit": { "per_second": 1, "burst": 1, "ipv6_prefix": 129 } } }),
            [
                "blocking.rate_limit.ipv6_prefix",
                "not an IPv6 prefix length",
            ],
        ),
        (
            json!({ "blocking": { "rate_limit": { "per_second": 1, "burst": 1, "max_clients": 0 } } }),
            ["blocking.rate_limit.max_clients", "nonzero"],
        ),
        (
            json!({ "metrics": { "export": { "port_range": "9010-9001" } } }),
            ["metrics.export.port_range", "reversed"],
        ),
        (
            json!({ "metrics": { "export": { "port_range": [1, 70000] } } }),
            ["metrics.export.port_range", "outside 1..=65535"],
        ),
        (
            json!({ "metrics": { "export": { "port_range": "0-10" } } }),
            ["metrics.export.port_range", "outside 1..=65535"],
        ),
        (
            json!({ "metrics": { "export": { "allow": ["10.0.0.0/33"] } } }),
            ["metrics.export.allow", "not a CIDR block"],
        ),
        (
            json!({ "metrics": { "export": { "allow": [] } } }),
            ["metrics.export.allow", "empty"],
        ),
        (
            json!({ "metrics": { "export": { "adress": "" } } }),
            ["metrics.export", "adress"],
        ),
        (
            json!({ "tracing": { "enabled": false, "otlp": { "endpoint": "http://127.0.0.1:4317" } } }),
            ["tracing.otlp.endpoint", "needs `tracing.enabled = true`"],
        ),
        (
            json!({ "tracing": { "otlp": { "endpoint": "collector:4317" } } }),
            ["tracing.otlp.endpoint", "no scheme"],
        ),
        (
            json!({ "tracing": { "otlp": { "service_name": " " } } }),
            ["tracing.otlp.service_name", "is empty"],
        ),
        (
            json!({ "metrics": { "enabeld": false } }),
            ["metrics", "enabeld"],
        ),
        (
            json!({ "blocking": { "deny": ["nope"] } }),
            ["blocking.deny", "not a CIDR block"],
        ),
        (
            json!({ "blocking": { "rate_limit": { "per_second": 0, "burst": 5 } } }),
            ["blocking.rate_limit.per_second", "nonzero"],
        ),
        (
            json!({ "blocking": { "rate_limit": { "per_second": 5 } } }),
            ["blocking.rate_limit", "burst"],
        ),
        (
            json!({ "metrics": { "export": { "address": "localhost" } } }),
            ["metrics.export.address", "not an IP address"],
        ),
        (
            json!({ "metrics": { "export": { "port": 9000, "port_range": "9001-9002" } } }),
            ["metrics.export.port", "not both"],
        ),
        (
            json!({ "metrics": { "export": { "token_file": "/nonexistent/token" } } }),
            ["metrics.export.token_file", "cannot read"],
        ),
        (
            json!({ "metrics": { "latency_buckets": [1.0, 0.5] } }),
            ["metrics.latency_buckets", "increase"],
        ),
        (
            json!({ "metrics": { "path": "metrics" } }),
            ["metrics.path", "leading /"],
        ),
        (
            json!({ "metrics": { "namespace": "9x" } }),
            ["metrics.namespace", "prefix"],
        ),
        (
            json!({ "metrics": { "export": { "when_ports_taken": "shrug" } } }),
            ["metrics.export.when_ports_taken", "shrug"],
        ),
        (json!({ "port": "eighty" }), ["port", "eighty"]),
        (
            json!({ "metric": { "enabled": false } }),
            ["metric", "unknown section"],
        ),
        (
            json!({ "databases": { "main": { "max_connections": "many" } } }),
            ["databases.main.max_connections", "many"],
        ),
        (
            json!({ "databases": { "main": { "pool_size": 4 } } }),
            [
                "databases.main.pool_size",
                "unknown key; the keys here are `connect_timeout`",
            ],
        ),
        (
            json!({ "cache": { "ttl": 5 } }),
            [
                "setting `cache.ttl`",
                "unknown key; the keys here are `enabled`, `ttl_seconds`, `max_entries`",
            ],
        ),
    ];
    for (overrides, expected) in cases {
        let message = error_of(overrides.clone());
        for part in expected {
            assert!(
                message.contains(part),
                "for {overrides}: `{message}` lacks `{part}`"
            );
        }
        assert!(!message.contains('\n'), "one line: {message}");
        // Every name stands in one pair of backticks, never one inside another.
        assert!(
            !message.contains("``") && !message.contains("`one of"),
            "nested backticks: {message}"
        );
    }
}

#[test]
fn empty_token_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "  \n").unwrap();
    let message = error_of(json!({ "metrics": { "export": { "token_file": path } } }));
    assert!(
        message.contains("metrics.export.token_file") && message.contains("empty"),
        "{message}"
    );
}

#[test]
fn good_values_in_every_form_are_accepted() {
    for range in [
        json!("9001-9010"),
        json!([9001, 9010]),
        json!({ "start": 9001, "end": 9010 }),
    ] {
        let settings = Settings::from_figment(&settings(
            json!({ "metrics": { "export": { "port_range": range } } }),
        ))
        .unwrap();
        assert_eq!(settings.metrics.export.ports().to_string(), "9001-9010");
    }
    let settings = Settings::from_figment(&settings(json!({
        "metrics": { "export": { "allow": "127.0.0.1/32, 10.0.0.0/8", "address": "", "port": 9100 } },
    })))
    .unwrap();
    assert_eq!(settings.metrics.export.allow.blocks().len(), 2);
    assert_eq!(settings.metrics.export.ports().to_string(), "9100-9100");
}

#[test]
fn binary_accepts_the_shipped_config_in_every_profile() {
    for profile in ["debug", "release", "default"] {
        let (code, stderr) = check_config_within(&[("ROCKET_PROFILE", profile)]);
        assert_eq!(code, Some(0), "{profile}: {stderr}");
    }
}

#[test]
fn binary_refuses_bad_environment_values_with_one_line_and_exit_2() {
    let cases = [
        (
            "BABYLON_METRICS__EXPORT__PORT_RANGE",
            "9010-9001",
            "metrics.export.port_range",
        ),
        (
            "BABYLON_METRICS__EXPORT__ALLOW",
            "10.0.0.0/99",
            "metrics.export.allow",
        ),
        (
            "BABYLON_BLOCKING__RATE_LIMIT__PER_SECOND",
            "0",
            "blocking.rate_limit",
        ),
        (
            "BABYLON_METRICS__EXPORT__TOKEN_FILE",
            "/nonexistent/token",
            "metrics.export.token_file",
        ),
        ("BABYLON_METRICS__NOPE", "1", "nope"),
        ("BABYLON_METRIC__ENABLED", "false", "BABYLON_METRIC"),
    ];
    for (key, value, named) in cases {
        let (code, stderr) = check_config_within(&[(key, value)]);
        assert_eq!(code, Some(2), "{key}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(named),
            "{key}={value}: `{stderr}` does not name {named}"
        );
    }
    let (code, stderr) =
        check_config_within(&[("BABYLON_METRICS__EXPORT__ALLOW", "127.0.0.1/32,::1")]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_metrics_token_never_appears_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cr3t-t0ken\n").unwrap();
    let settings = Settings::from_figment(&settings(
        json!({ "metrics": { "export": { "token_file": path } } }),
    ))
    .unwrap();
    assert!(settings.metrics.export.token.is_some());
    let debug = format!("{settings:?}");
    assert!(!debug.contains("s3cr3t-t0ken"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

/// Every text a database URL with this password can end up in: its `Display` and
/// `Debug`, the refusal of the URL, and the refusal or `Debug` of the whole settings.
fn every_output_of(url: &str) -> Vec<String> {
    let mut outputs = Vec::new();
    match babylon::settings::DatabaseUrl::parse(url, None) {
        Ok(parsed) => {
            outputs.push(parsed.to_string());
            outputs.push(format!("{parsed:?}"));
        }
        Err(problem) => outputs.push(problem),
    }
    match babylon_app::App::from_figment(settings(
        json!({ "databases": { "main": { "url": url } } }),
    )) {
        Ok(app) => outputs.push(format!("{:?}", app.settings())),
        Err(error) => {
            outputs.push(error.to_string());
            outputs.push(format!("{error:?}"));
        }
    }
    outputs
}

/// `text` with every byte but ASCII letters and digits percent-encoded.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

use proptest::strategy::Strategy as _;

proptest::proptest! {
    /// No generated password, written raw or percent-encoded, shows in any output. Every
    /// character of the password is preceded by a `Q`, which nothing else in these outputs
    /// contains: a leak of any two consecutive characters of it shows a `Q`.
    #[test]
    fn no_database_password_appears_in_any_output(
        characters in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::char::range('a', 'z'),
                proptest::char::range('0', '9'),
                proptest::sample::select(vec!['/', '?', '#', ':', '%', ' ', '[', ']', 'é', '€', '\\']),
            ],
            1..12,
        ),
        user in "[a-z]{1,8}",
        port in proptest::prop_oneof![proptest::strategy::Just(String::new()), (1u16..=65535).prop_map(|p| format!(":{p}"))],
    ) {
        let password: String = characters.iter().flat_map(|c| ['Q', *c]).collect();
        for written in [password.clone(), percent_encoded(&password)] {
            let url = format!("postgres://{user}:{written}@db.example{port}/app");
            for output in every_output_of(&url) {
                proptest::prop_assert!(
                    !output.contains('Q') && !output.contains("%51"),
                    "{url} shows its password in {output:?}"
                );
            }
        }
    }
}

#[test]
fn the_binary_names_its_version_and_refuses_unknown_arguments() {
    let version = binary().arg("--version").output().unwrap();
    assert!(version.status.success());
    let text = String::from_utf8(version.stdout).unwrap();
    let expected = format!("babylon {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.contains(", rustc ") && text.ends_with(")\n"), "{text}");

    let help = binary().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8(help.stdout)
        .unwrap()
        .contains("--version"));

    let unknown = binary().arg("--versoin").output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let message = String::from_utf8(unknown.stderr).unwrap();
    assert!(
        message.contains("--versoin") && message.contains("usage: babylon"),
        "{message}"
    );
}

/// Runs `babylon --check-config` with `env` (and the shipped Rocket.toml unless `env`
/// names another), waiting at most 10 s: a hang is a failure, not a stuck test. The exit
/// code and what it wrote to standard error.
fn check_config_within(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = binary();
    command
        .arg("--check-config")
        .env(
            "ROCKET_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Rocket.toml"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--check-config with {env:?} still ran after 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

/// A FIFO in `dir`: opening it for reading would wait for a writer forever.
fn fifo(dir: &std::path::Path) -> String {
    let path = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    path.display().to_string()
}

/// Values an outside test found to pass `--check-config` and then break the service
/// (a panic, an abort, a hang, a 413 for every body, a database chosen by libpq), or to
/// be ignored, each given as the variable a user would set.
fn broken_values(dir: &std::path::Path) -> Vec<(&'static str, String, &'static str)> {
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let fifo = fifo(dir);
    let labels = format!(
        "{{directory=\"{}\",labels={{instance=\"x\"}}}}",
        dir.display()
    );
    // An export certificate, the key of another, and a good pair for a wrong version.
    let ca = common::pki::Ca::new("config test CA");
    let server = ca.server(30).write(dir, "server", &ca);
    let other = ca.server(30).write(dir, "other", &ca);
    let tls = |extra: &str, key: &std::path::Path| {
        format!(
            "{{cert_file=\"{}\",key_file=\"{}\"{extra}}}",
            server.cert.display(),
            key.display()
        )
    };
    vec![
        ("ROCKET_WORKERS", "0".into(), "workers"),
        ("ROCKET_WORKERS", "100000".into(), "workers"),
        ("ROCKET_WORKERS", "-1".into(), "workers"),
        ("ROCKET_MAX_BLOCKING", "0".into(), "max_blocking"),
        ("ROCKET_LIMITS", "{json=-1}".into(), "limits.json"),
        (
            "ROCKET_TLS",
            "{certs=\"a.pem\",key=\"b.pem\"}".into(),
            "tls",
        ),
        ("ROCKET_MTLS", "{ca_certs=\"c.pem\"}".into(), "mtls"),
        ("ROCKET_IP_HEADER", "X-Forwarded-For".into(), "ip_header"),
        ("ROCKET_TEMP_DIR", "/dev/zero".into(), "temp_dir"),
        ("ROCKET_PORTT", "8080".into(), "portt"),
        (
            "BABYLON_CACHE__TTL_SECONDS",
            "40000000000".into(),
            "cache.ttl_seconds",
        ),
        (
            "BABYLON_DATABASES__MAIN__MAX_CONNECTIONS",
            "0".into(),
            "databases.main.max_connections",
        ),
        (
            "BABYLON_DATABASES__MAIN__MAX_CONNECTIONS",
            "4294967296".into(),
            "databases.main.max_connections",
        ),
        (
            "BABYLON_DATABASES__MAIN__CONNECT_TIMEOUT",
            "18446744073709551615".into(),
            "databases.main.connect_timeout",
        ),
        (
            "BABYLON_DATABASES__MAIN__URL",
            "postgres:///".into(),
            "databases.main.url",
        ),
        (
            "BABYLON_DATABASES__MAIN__URL",
            "sqlite:///dev/zero".into(),
            "databases.main.url",
        ),
        (
            "BABYLON_METRICS__EXPORT__TOKEN_FILE",
            "/dev/zero".into(),
            "metrics.export.token_file",
        ),
        (
            "BABYLON_METRICS__EXPORT__TOKEN_FILE",
            fifo.clone(),
            "metrics.export.token_file",
        ),
        (
            "BABYLON_METRICS__EXPORT__TOKEN_FILE",
            dir.display().to_string(),
            "metrics.export.token_file",
        ),
        (
            "BABYLON_METRICS__PATH",
            "/api/metrics".into(),
            "metrics.path",
        ),
        (
            "BABYLON_METRICS__EXPORT__FILE_SD",
            labels,
            "metrics.export.file_sd.labels",
        ),
        (
            "BABYLON_METRICS__EXPORT__TLS",
            tls("", &other.key),
            "metrics.export.tls.key_file",
        ),
        (
            "BABYLON_METRICS__EXPORT__TLS",
            tls(",min_version=\"1.4\"", &server.key),
            "metrics.export.tls.min_version",
        ),
        (
            "BABYLON_METRICS__EXPORT__TLS",
            tls("", std::path::Path::new("/dev/zero")),
            "metrics.export.tls.key_file",
        ),
        ("ROCKET_CONFIG", "/etc/passwd".into(), ""),
        ("ROCKET_CONFIG", "/dev/zero".into(), ""),
        ("ROCKET_CONFIG", fifo, ""),
        ("ROCKET_CONFIG", big.display().to_string(), ""),
        ("ROCKET_CONFIG", "/nonexistent/Rocket.toml".into(), ""),
        ("ROCKET_PROFILE", "relase".into(), "profile"),
    ]
}

#[test]
fn check_config_refuses_each_broken_value_in_one_line_naming_its_source() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value, key) in broken_values(dir.path()) {
        if key.is_empty() && variable != "ROCKET_CONFIG" {
            continue; // Valid alone: kept for the run with several values below.
        }
        let (code, stderr) = check_config_within(&[(variable, &value)]);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(code, Some(2), "{variable}={value}: {stderr}");
        assert_eq!(lines.len(), 1, "{variable}={value}: one line: {stderr}");
        let line = lines[0];
        let logged = common::logs::log_line(line)
            .unwrap_or_else(|| panic!("{variable}={value}: not a log line: {line}"));
        assert!(
            logged.level == "ERROR"
                && logged.target == "babylon"
                && logged.message.starts_with("invalid "),
            "{variable}={value}: {line}"
        );
        let source = if variable == "ROCKET_CONFIG" && value == "/etc/passwd" {
            " (in /etc/passwd)".to_string()
        } else {
            format!(" (from {variable}")
        };
        assert!(
            line.contains(&source),
            "{variable}={value}: no `{source}` in {line}"
        );
        if !key.is_empty() {
            assert!(
                line.contains(&format!("`{key}`")),
                "{variable}={value}: {line}"
            );
        }
        assert!(
            !line.contains("panicked") && !line.contains("RUST_BACKTRACE"),
            "{line}"
        );
    }
}

#[test]
fn check_config_reports_every_wrong_setting_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let several: Vec<(&str, String, &str)> = broken_values(dir.path())
        .into_iter()
        .filter(|(variable, _, key)| !key.is_empty() && seen.insert(*variable))
        .collect();
    let env: Vec<(&str, &str)> = several
        .iter()
        .map(|(variable, value, _)| (*variable, value.as_str()))
        .collect();
    let (code, stderr) = check_config_within(&env);
    assert_eq!(code, Some(2), "{stderr}");
    for (variable, _, key) in &several {
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(&format!("`{key}`"))),
            "{variable}: `{key}` is not reported:\n{stderr}"
        );
    }
    assert_eq!(
        stderr.lines().count(),
        several.len(),
        "one line per wrong setting:\n{stderr}"
    );
}

/// `--check-config` starts no thread, opens no socket and reads no file it was not meant
/// to, as `strace` sees it: with Redis backends and PostgreSQL configured, it connects to
/// neither; with a device as a token file, it never opens it.
#[test]
fn check_config_spawns_nothing_connects_nowhere_and_reads_no_device() {
    let Some(strace) = common::tool("strace") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let run = |env: &[(&str, &str)]| -> (Option<i32>, String) {
        let mut command = std::process::Command::new(&strace);
        command
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=clone,clone3,fork,vfork,socket,connect,openat",
                "-o",
            ])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_babylon"))
            .arg("--check-config")
            .env(
                "ROCKET_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Rocket.toml"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let status = command.status().unwrap();
        (status.code(), std::fs::read_to_string(&trace).unwrap())
    };
    let (code, calls) = run(&[
        ("BABYLON_CACHE__BACKEND", "redis"),
        ("BABYLON_REDIS__URL", "redis://127.0.0.1:6379"),
        (
            "BABYLON_DATABASES__MAIN__URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
    ]);
    assert_eq!(code, Some(0), "{calls}");
    for call in [
        "clone(", "clone3(", "fork(", "vfork(", "socket(", "connect(",
    ] {
        assert!(
            !calls.lines().any(|line| line.contains(call)),
            "--check-config made a {call}…):\n{calls}"
        );
    }
    let fifo = fifo(dir.path());
    for device in ["/dev/zero", fifo.as_str()] {
        let (code, calls) = run(&[("BABYLON_METRICS__EXPORT__TOKEN_FILE", device)]);
        assert_eq!(code, Some(2));
        assert!(
            !calls
                .lines()
                .any(|line| line.contains(&format!("\"{device}\""))),
            "--check-config opened {device}:\n{calls}"
        );
    }
}
