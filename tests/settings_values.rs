//! Every setting is refused with one clear line, or honoured.
//!
//! For every key babylon reads (found by probing the settings loader, as the docs test
//! does: `common::settings_keys`) and every key of Rocket's own, each absurd value of
//! [`absurd_values`] (zero, negative, huge, empty, wrong types, Unicode, a device, a
//! directory, a file that is not what the key wants) and generated ones:
//!
//! - reading the settings never panics and never hangs;
//! - either it stops, with one line per problem, each naming a key, one of them this key
//!   (or the section that holds it), and nothing else on the line;
//! - or the service built from the settings starts and serves: `/api/live`, a write and a
//!   read, as with any other value.
//!
//! `tests/config.rs` runs the binary's `--check-config` on the same kind of values given
//! as variables, and checks that it reads no file past its bound and opens nothing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::ports::PortBlock;
use figment::providers::Serialized;
use figment::Figment;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use rocket::http::{ContentType, Status};
use rocket::local::blocking::Client;
use serde_json::{json, Value};

/// How long one reading and start may take before the case counts as a hang.
const HANG: Duration = Duration::from_secs(30);

/// Values no key should take as they are, each of a kind a user may write by mistake.
fn absurd_values(dir: &Path) -> Vec<Value> {
    let file = dir.join("a-file.txt");
    std::fs::write(&file, "not what any key wants\n").unwrap();
    let mut values = vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(65_536),
        json!(4_294_967_296u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e30),
        json!(-1.5),
        json!(0.5),
        json!(true),
        json!(false),
        json!(""),
        json!(" "),
        json!("0"),
        json!("-1"),
        json!("abc"),
        json!("18446744073709551616"),
        json!("é∂🙂\u{202e}"),
        json!("a\u{0}b"),
        json!("/dev/zero"),
        json!("/"),
        json!("/nonexistent/babylon"),
        json!("/etc/passwd"),
        json!([]),
        json!([1, "x"]),
        json!({}),
        json!({ "a": 1 }),
    ];
    values.push(json!(dir.display().to_string()));
    values.push(json!(file.display().to_string()));
    values
}

/// What happened to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Refused,
    Honoured,
}

/// Settings every case starts from: a SQLite file of the test's own, a rate limit and a
/// file_sd section (so that their keys can be set alone), the export listener off but on
/// ports the test holds, should a value turn it on.
fn base(dir: &Path, ports: &PortBlock) -> Value {
    json!({
        "log_level": "off",
        "databases": { "main": { "url": format!("sqlite://{}", dir.join("values.sqlite").display()) } },
        "blocking": { "rate_limit": { "per_second": 100000, "burst": 100000 } },
        "metrics": { "export": {
            "enabled": false,
            "port_range": ports.range_setting(),
            "file_sd": { "directory": dir.display().to_string() },
        } },
    })
}

/// Whether `line` names `key`, a section holding it, or a key inside it.
fn names(line: &str, key: &str) -> bool {
    let Some(start) = line.find('`') else {
        return false;
    };
    let Some(named) = line[start + 1..].split('`').next() else {
        return false;
    };
    named == key || key.starts_with(&format!("{named}.")) || named.starts_with(&format!("{key}."))
}

/// Reads the settings of `figment` and, if they are accepted, starts the service and
/// uses it. Runs on a thread of its own, so that a hang is seen as one.
fn try_value(figment: Figment, key: &str, shown: &str) -> Result<Outcome, String> {
    static NAMES: AtomicUsize = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let key_of_case = key.to_string();
    std::thread::spawn(move || {
        let key = key_of_case;
        let result = (|| {
            let app = match babylon_app::App::from_figment(figment) {
                Err(error) => {
                    let text = error.to_string();
                    let lines: Vec<&str> = text.lines().collect();
                    if lines.is_empty()
                        || lines.iter().any(|line| {
                            !(line.starts_with("invalid setting `")
                                || line.starts_with("invalid configuration"))
                        })
                    {
                        return Err(format!("not one line per problem: {text:?}"));
                    }
                    if !lines.iter().any(|line| names(line, &key)) {
                        return Err(format!("no line names `{key}`: {text:?}"));
                    }
                    return Ok(Outcome::Refused);
                }
                Ok(app) => app,
            };
            let rocket = app.rocket().map_err(|error| {
                format!("accepted, then the service could not be built: {error}")
            })?;
            let client = Client::untracked(rocket)
                .map_err(|error| format!("accepted, then Rocket did not start: {error}"))?;
            let live = client.get("/api/live").dispatch().status();
            if live != Status::Ok {
                return Err(format!("accepted, then /api/live answered {live}"));
            }
            let name = format!("item {}", NAMES.fetch_add(1, Ordering::Relaxed));
            let created = client
                .post("/api/items")
                .header(ContentType::JSON)
                .body(json!({ "name": name, "kind": "book" }).to_string())
                .dispatch()
                .status();
            // A size limit of (nearly) nothing is honoured by refusing every body.
            let limited = key.starts_with("limits.") && created == Status::PayloadTooLarge;
            if created != Status::Created && !limited {
                return Err(format!("accepted, then a write answered {created}"));
            }
            let listed = client.get("/api/items").dispatch().status();
            if listed != Status::Ok {
                return Err(format!("accepted, then a read answered {listed}"));
            }
            Ok(Outcome::Honoured)
        })();
        let _ = tx.send(result);
    });
    match rx.recv_timeout(HANG) {
        Ok(result) => result.map_err(|problem| format!("{key} = {shown}: {problem}")),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "{key} = {shown}: still reading or starting after {HANG:?}"
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(format!("{key} = {shown}: panicked"))
        }
    }
}

/// Every key of babylon's sections and of Rocket's own.
fn every_key() -> BTreeSet<String> {
    let mut keys = common::settings_keys::babylon_keys();
    keys.extend(common::settings_keys::rocket_keys());
    keys
}

#[test]
fn every_key_refuses_an_absurd_value_in_one_line_or_honours_it() {
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(4);
    let base = base(dir.path(), &ports);
    let keys = every_key();
    assert!(keys.len() >= 60, "{} keys found: {keys:?}", keys.len());
    let values = absurd_values(dir.path());
    let mut failures = Vec::new();
    let (mut refused, mut honoured) = (0, 0);
    for key in &keys {
        for value in &values {
            let figment = common::settings(base.clone()).merge(Serialized::global(key, value));
            match try_value(figment, key, &value.to_string()) {
                Ok(Outcome::Refused) => refused += 1,
                Ok(Outcome::Honoured) => {
                    honoured += 1;
                    if std::env::var_os("SHOW_HONOURED").is_some() {
                        eprintln!("honoured: {key} = {value}");
                    }
                }
                Err(failure) => failures.push(failure),
            }
        }
    }
    eprintln!(
        "{} keys × {} values: {refused} refused in one line each, {honoured} honoured, {} failed",
        keys.len(),
        values.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        keys.len() * values.len(),
        failures.join("\n")
    );
}

/// serde_json values of every shape, for keys that expect one.
fn arbitrary_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "\\PC{0,20}".prop_map(Value::from),
        "[0-9a-z./:_ -]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

#[test]
fn generated_values_of_every_key_are_refused_in_one_line_or_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(4);
    let base = base(dir.path(), &ports);
    let keys: Vec<String> = every_key().into_iter().collect();
    let strategy = (prop::sample::select(keys), arbitrary_value());
    let mut runner = TestRunner::new(Config::default());
    let mut failures = Vec::new();
    const CASES: usize = 400;
    for _ in 0..CASES {
        let (key, value) = strategy.new_tree(&mut runner).unwrap().current();
        let figment = common::settings(base.clone()).merge(Serialized::global(&key, &value));
        if let Err(failure) = try_value(figment, &key, &value.to_string()) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CASES} generated cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn several_wrong_settings_are_all_reported_in_one_reading() {
    let settings = common::settings(json!({
        "workers": 0,
        "metrics": { "path": "no-slash", "export": { "port": 0 } },
        "cache": { "ttl_seconds": 40_000_000_000u64 },
        "blocking": { "deny": ["not a block"] },
        "redis": { "pool_size": 200, "connect_timeout_ms": 0 },
        "databases": { "main": { "max_connections": 0 } },
    }));
    let error = babylon_app::App::from_figment(settings)
        .err()
        .expect("every one of these is wrong")
        .to_string();
    for key in [
        "workers",
        "metrics.path",
        "metrics.export.port",
        "cache.ttl_seconds",
        "blocking.deny",
        "redis.pool_size",
        "redis.connect_timeout_ms",
        "databases.main.max_connections",
    ] {
        assert!(
            error.lines().any(|line| names(line, key)),
            "{key} is not reported:\n{error}"
        );
    }
    assert_eq!(error.lines().count(), 8, "one line each:\n{error}");
}
