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

/// The shipped Rocket.toml, read by the real binary, with environment overrides.
fn check_config(env: &[(&str, &str)]) -> std::process::Output {
    let mut command = binary();
    command.arg("--check-config").env(
        "ROCKET_CONFIG",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Rocket.toml"),
    );
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[test]
fn binary_accepts_the_shipped_config_in_every_profile() {
    for profile in ["debug", "release", "default"] {
        let out = check_config(&[("ROCKET_PROFILE", profile)]);
        assert!(
            out.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        let out = check_config(&[(key, value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(named),
            "{key}={value}: `{stderr}` does not name {named}"
        );
    }
    let out = check_config(&[("BABYLON_METRICS__EXPORT__ALLOW", "127.0.0.1/32,::1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    match babylon::App::from_figment(settings(json!({ "databases": { "main": { "url": url } } }))) {
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
