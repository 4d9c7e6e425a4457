//! The read cache on the shared Redis (`cache.backend = "redis"`): a write through one
//! worker is read fresh through every other at once, and a Redis that cannot be reached,
//! or dies and comes back under load, never fails a read the database can answer.
//!
//! Needs the Redis on 127.0.0.1:6379 and the `redis-server` program, for a private server
//! that the outage test kills (Debian: redis-server; `bash .ci/run` installs and starts it).
//! Without it the tests print SKIPPED, except under CI=true where they fail. Each test
//! writes under a key prefix of its own and deletes its keys at the end.

mod common;

use common::redis_server::{redis_available, unique_prefix, Keys, PrivateRedis, REDIS};
use common::{client, create_item, sample_or_zero, scrape, TestClient};
use rocket::http::{ContentType, Status};
use serde_json::{json, Value};

/// A worker over the shared SQLite file `database`, with `backend` as its cache.
fn worker(database: &str, backend: &str, redis_url: &str, prefix: &str) -> TestClient {
    client(json!({
        "databases": { "main": { "url": database } },
        "metrics": { "export": { "enabled": false } },
        "cache": { "backend": backend, "ttl_seconds": 60 },
        "redis": { "url": redis_url, "key_prefix": prefix },
    }))
}

/// Redis commands that failed or were not sent because Redis was down, from `sample`.
fn redis_failures(sample: impl Fn(&str) -> f64) -> f64 {
    ["connection", "timeout", "unavailable"]
        .iter()
        .map(|kind| {
            sample(&format!(
                r#"rocket_redis_errors_total{{alias="main",type="{kind}"}}"#
            ))
        })
        .sum()
}

fn rename(worker: &TestClient, id: &str, name: &str) {
    let response = worker
        .put(format!("/api/items/{id}"))
        .header(ContentType::JSON)
        .body(json!({ "name": name, "kind": "book" }).to_string())
        .dispatch();
    assert_eq!(response.status(), Status::Ok);
}

fn name_of(worker: &TestClient, id: &str) -> String {
    let response = worker.get(format!("/api/items/{id}")).dispatch();
    assert_eq!(response.status(), Status::Ok);
    let item: Value = response.into_json().unwrap();
    item["name"].as_str().unwrap().to_string()
}

fn total(worker: &TestClient) -> i64 {
    let response = worker.get("/api/items").dispatch();
    assert_eq!(response.status(), Status::Ok);
    response.into_json::<Value>().unwrap()["total"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_write_through_one_worker_is_read_fresh_through_another() {
    if !redis_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("shared.sqlite").display());
    let prefix = unique_prefix("fresh");
    let _keys = Keys(prefix.clone());
    let a = worker(&database, "redis", REDIS, &prefix);
    let b = worker(&database, "redis", REDIS, &prefix);

    let id = create_item(&a, "Dune");
    assert_eq!(name_of(&b, &id), "Dune", "B loads the item and caches it");
    assert_eq!(name_of(&a, &id), "Dune", "A reads what B cached");
    assert_eq!(total(&b), 1);
    rename(&a, &id, "Dune Messiah");
    assert_eq!(
        name_of(&b, &id),
        "Dune Messiah",
        "B reads A's write at once"
    );
    create_item(&a, "Children of Dune");
    assert_eq!(total(&b), 2, "B's cached page went with A's write");

    let text_a = scrape(&a);
    assert!(
        sample_or_zero(&text_a, r#"rocket_cache_get_hits_total{backend="redis"}"#) >= 1.0,
        "A was served an entry that B cached:\n{text_a}"
    );
    assert_eq!(
        sample_or_zero(&text_a, r#"rocket_cache_get_fail_total{backend="redis"}"#),
        0.0
    );
    assert!(
        sample_or_zero(
            &text_a,
            r#"rocket_redis_commands_total{alias="main",command="HGET"}"#
        ) >= 1.0
    );
    assert_eq!(
        sample_or_zero(&text_a, r#"rocket_cache_get_total{backend="moka"}"#),
        0.0,
        "the in-process cache is not used"
    );

    // The contrast that makes this test able to fail: with the in-process backend, B keeps
    // serving its own copy after A's write, for up to cache.ttl_seconds.
    let memory_a = worker(&database, "memory", REDIS, &prefix);
    let memory_b = worker(&database, "memory", REDIS, &prefix);
    assert_eq!(name_of(&memory_b, &id), "Dune Messiah");
    rename(&memory_a, &id, "God Emperor");
    assert_eq!(
        name_of(&memory_b, &id),
        "Dune Messiah",
        "per-process caches go stale"
    );
}

#[test]
fn an_unreachable_redis_fails_no_read_the_database_can_answer() {
    // Needs no Redis: the point is that there is none.
    let (_refusing, port) = common::refusing_port();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("alone.sqlite").display());
    let unreachable = format!("redis://127.0.0.1:{port}");
    let a = worker(&database, "redis", &unreachable, &unique_prefix("down"));

    let id = create_item(&a, "Dune");
    for _ in 0..3 {
        assert_eq!(name_of(&a, &id), "Dune");
    }
    rename(&a, &id, "Dune Messiah");
    assert_eq!(name_of(&a, &id), "Dune Messiah", "no stale copy anywhere");
    assert_eq!(total(&a), 1);

    let text = scrape(&a);
    assert!(
        sample_or_zero(&text, r#"rocket_cache_get_fail_total{backend="redis"}"#) >= 5.0,
        "every lookup that Redis failed is counted:\n{text}"
    );
    assert_eq!(
        sample_or_zero(&text, r#"rocket_cache_get_hits_total{backend="redis"}"#),
        0.0
    );
    assert!(
        redis_failures(|series| sample_or_zero(&text, series)) >= 5.0,
        "{text}"
    );
}

#[test]
fn the_redis_backend_needs_a_redis_url() {
    let figment = common::settings(json!({ "cache": { "backend": "redis" } }));
    let error = babylon::settings::Settings::from_figment(&figment)
        .expect_err("refused")
        .to_string();
    assert!(error.contains("redis.url"), "{error}");
    let refused = |redis: Value| {
        let figment = common::settings(json!({ "redis": redis }));
        babylon::settings::Settings::from_figment(&figment)
            .expect_err("refused")
            .to_string()
    };
    let error = refused(json!({ "url": "rediss://:s3cr3t@host/#insecure" }));
    assert!(
        error.contains("redis.url") && error.contains("tls_ca_file") && !error.contains("s3cr3t"),
        "{error}"
    );
    let error = refused(json!({ "url": "redis://host", "tls_ca_file": "/etc/hostname" }));
    assert!(
        error.contains("redis.tls_ca_file") && error.contains("rediss://"),
        "{error}"
    );
    let error = refused(json!({ "url": "rediss://host", "tls_ca_file": "/nonexistent.pem" }));
    assert!(error.contains("cannot read /nonexistent.pem"), "{error}");
    let error = refused(json!({ "url": "rediss://host", "tls_ca_file": "Cargo.toml" }));
    assert!(error.contains("holds no PEM certificate"), "{error}");
    let error = refused(json!({ "url": "redis://host", "pool_size": 65 }));
    assert!(error.contains("redis.pool_size"), "{error}");
    let error = refused(json!({ "url": "redis://host", "pool_size": 0 }));
    assert!(error.contains("redis.pool_size"), "{error}");
}

#[test]
fn the_cache_reaches_redis_over_tls_and_an_untrusted_certificate_fails_no_read() {
    if common::tool("redis-server").is_none() || common::tool("openssl").is_none() {
        return;
    }
    let port = common::ports::PortBlock::reserve(1);
    let redis = PrivateRedis::start_tls(port.first());
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("tls.sqlite").display());
    let prefix = unique_prefix("tls");
    let over_tls = |ca_file: Option<&std::path::Path>, pool_size: u8| {
        client(json!({
            "databases": { "main": { "url": database } },
            "metrics": { "export": { "enabled": false } },
            "cache": { "backend": "redis", "ttl_seconds": 60 },
            "redis": { "url": redis.url(), "key_prefix": prefix, "tls_ca_file": ca_file, "pool_size": pool_size },
        }))
    };
    const HITS: &str = r#"rocket_cache_get_hits_total{backend="redis"}"#;
    const FAILS: &str = r#"rocket_cache_get_fail_total{backend="redis"}"#;

    // Trusting the server's CA, over a pool of three connections.
    let trusting = over_tls(Some(redis.ca_file()), 3);
    let id = create_item(&trusting, "Dune");
    for _ in 0..6 {
        assert_eq!(name_of(&trusting, &id), "Dune");
    }
    let text = scrape(&trusting);
    assert!(sample_or_zero(&text, HITS) >= 5.0, "{text}");
    assert_eq!(sample_or_zero(&text, FAILS), 0.0, "{text}");

    // Trusting only Mozilla's roots, which did not sign the test certificate: every
    // lookup fails the handshake and is read from the database instead.
    let doubting = over_tls(None, 1);
    for _ in 0..3 {
        assert_eq!(name_of(&doubting, &id), "Dune");
    }
    let text = scrape(&doubting);
    assert_eq!(sample_or_zero(&text, HITS), 0.0, "{text}");
    assert!(sample_or_zero(&text, FAILS) >= 3.0, "{text}");
}

#[test]
fn redis_killed_and_restarted_under_load_fails_no_request_and_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    if common::tool("redis-server").is_none() {
        return;
    }
    const HITS: &str = r#"rocket_cache_get_hits_total{backend="redis"}"#;
    const FAILS: &str = r#"rocket_cache_get_fail_total{backend="redis"}"#;
    let redis_port = common::ports::PortBlock::reserve(1);
    let mut redis = PrivateRedis::start(redis_port.first());
    let export_ports = common::ports::PortBlock::reserve(1);
    let dir = tempfile::tempdir().unwrap();
    let mut command = common::workers::command_in(dir.path(), &export_ports);
    command
        .env("BABYLON_CACHE__BACKEND", "redis")
        .env("BABYLON_CACHE__TTL_SECONDS", "60")
        .env("BABYLON_REDIS__URL", redis.url())
        .env("BABYLON_REDIS__KEY_PREFIX", unique_prefix("outage"));
    let mut worker = common::workers::start_command(command);
    let port = worker.app_port;
    let (status, body) = common::http_request_from(
        std::net::Ipv4Addr::LOCALHOST,
        port,
        "POST",
        "/api/items",
        &[("Content-Type", "application/json")],
        r#"{"name": "Dune", "kind": "book"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = common::created_id(&body);

    // Four clients read the item without pause while Redis dies and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answers, path) = (stop.clone(), answers.clone(), format!("/api/items/{id}"));
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                // Bounded: at most 20,000 reads per client, whatever happens.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, body) = common::http_get(port, &path);
                    let name = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|item| item["name"].as_str().map(str::to_string));
                    seen.push((status, name));
                }
                answers.lock().unwrap().extend(seen);
            })
        })
        .collect();
    common::wait_until("cache hits while Redis runs", || {
        common::sample_at(port, HITS) >= 20.0
    });

    redis.kill();
    let fails_before = common::sample_at(port, FAILS);
    common::wait_until("failed lookups counted while Redis is down", || {
        common::sample_at(port, FAILS) >= fails_before + 20.0
    });
    let (status, body) = common::http_request_from(
        std::net::Ipv4Addr::LOCALHOST,
        port,
        "PUT",
        &format!("/api/items/{id}"),
        &[("Content-Type", "application/json")],
        r#"{"name": "Dune Messiah", "kind": "book"}"#,
    );
    assert_eq!(status, 200, "a write while Redis is down: {body}");

    redis.restart();
    let hits_down = common::sample_at(port, HITS);
    common::wait_until(
        "cache hits again after Redis came back, without a restart",
        || common::sample_at(port, HITS) >= hits_down + 20.0,
    );
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }

    let answers = answers.lock().unwrap();
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} reads failed: {:?}\n{}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)],
        worker.output()
    );
    assert!(answers.iter().all(|(_, name)| name.is_some()));
    let (status, body) = common::http_get(port, &format!("/api/items/{id}"));
    assert_eq!(status, 200);
    assert!(
        body.contains("Dune Messiah"),
        "fresh after the outage: {body}"
    );
    let errors = redis_failures(|series| common::sample_at(port, series));
    assert!(errors >= 20.0, "Redis failures counted: {errors}");
    eprintln!(
        "redis outage: {} reads, all 200; {} lookups failed over to the database",
        answers.len(),
        common::sample_at(port, FAILS)
    );
}

/// How a case prepares the private Redis before the cache first writes.
#[derive(Debug, Clone, Copy)]
enum Before {
    Nothing,
    /// The item's entry, stale, in a hash without an expiry: what an `EXPIRE` that failed
    /// after its `HSET` left behind.
    HashWithoutExpiry,
    /// The item's entry, stale, in a hash made for a one-hour time to live.
    HashOfALongerTtl,
    /// A string where the cache's hash goes.
    StringAtTheHash,
}

/// An entry is never read after `cache.ttl_seconds`, whatever Redis accepts: for a user
/// that may not set expiries, and for hashes that the cache did not make with this time
/// to live. Each case reads an item through the cache, changes it behind the cache's back
/// (another worker, with no cache), and reads it again once `ttl_seconds` has passed.
#[test]
fn no_entry_is_read_after_ttl_seconds_whatever_redis_accepts() {
    if common::tool("redis-server").is_none() {
        return;
    }
    let port = common::ports::PortBlock::reserve(1);
    let redis = PrivateRedis::start(port.first());
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut admin = admin.get_connection().unwrap();
    let acl = |connection: &mut redis::Connection, user: &str, rules: &[&str]| {
        let mut command = redis::cmd("ACL");
        command
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(">pw")
            .arg("~*");
        for rule in rules {
            command.arg(*rule);
        }
        command.query::<()>(connection).unwrap();
    };
    acl(
        &mut admin,
        "no_expiry",
        &["+@all", "-expire", "-pexpire", "-expireat", "-pexpireat"],
    );
    acl(&mut admin, "no_pexpire", &["+@all", "-pexpire"]);
    let as_user = |user: &str| format!("redis://{user}:pw@127.0.0.1:{}", redis.port);
    let cases = [
        ("the default user", redis.url(), Before::Nothing),
        (
            "a user without any EXPIRE",
            as_user("no_expiry"),
            Before::Nothing,
        ),
        (
            "a user without PEXPIRE",
            as_user("no_pexpire"),
            Before::Nothing,
        ),
        (
            "a hash without an expiry",
            redis.url(),
            Before::HashWithoutExpiry,
        ),
        (
            "a hash of a one-hour ttl",
            redis.url(),
            Before::HashOfALongerTtl,
        ),
        ("a string at the hash", redis.url(), Before::StringAtTheHash),
    ];
    for (case, url, before) in cases {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", dir.path().join("ttl.sqlite").display());
        let prefix = unique_prefix("ttl");
        let cached = client(json!({
            "databases": { "main": { "url": database } },
            "cache": { "backend": "redis", "ttl_seconds": 1 },
            "redis": { "url": url, "key_prefix": prefix },
        }));
        let behind = client(json!({
            "databases": { "main": { "url": database } },
            "cache": { "enabled": false },
        }));
        let id = create_item(&behind, "v1");
        let hash = format!("{prefix}:cache:items:by_id");
        let stale = json!({ "id": id, "name": "stale", "kind": "book",
                            "created_at": 0, "updated_at": 0 })
        .to_string();
        let mut seed = redis::pipe();
        match before {
            Before::Nothing => {}
            Before::HashWithoutExpiry => {
                seed.cmd("HSET").arg(&hash).arg(&id).arg(&stale);
            }
            Before::HashOfALongerTtl => {
                seed.cmd("HSET")
                    .arg(&hash)
                    .arg(&id)
                    .arg(&stale)
                    .arg(":ttl_ms")
                    .arg("3600000");
                seed.cmd("PEXPIRE").arg(&hash).arg(3_600_000);
            }
            Before::StringAtTheHash => {
                seed.cmd("SET").arg(&hash).arg("not a hash");
            }
        }
        if !matches!(before, Before::Nothing) {
            seed.query::<()>(&mut admin).unwrap();
        }

        assert_eq!(
            name_of(&cached, &id),
            "v1",
            "{case}: nothing stale is served"
        );
        assert_eq!(name_of(&cached, &id), "v1", "{case}");
        rename(&behind, &id, "v2");
        let renamed = std::time::Instant::now();
        if matches!(before, Before::Nothing) && url == redis.url() {
            // The contrast that lets this test fail: within the time to live the cache
            // serves what it holds.
            assert_eq!(name_of(&cached, &id), "v1", "{case}: the entry is cached");
        }
        std::thread::sleep(
            std::time::Duration::from_millis(1050).saturating_sub(renamed.elapsed()),
        );
        assert_eq!(
            name_of(&cached, &id),
            "v2",
            "{case}: read {:?} after the change, with ttl_seconds = 1",
            renamed.elapsed()
        );
        // No entry under the prefix lives forever: a hash without an expiry holds at
        // most its marker (its PEXPIRE was refused before any entry went in).
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut admin)
            .unwrap();
        for key in keys {
            let left: i64 = redis::cmd("PTTL").arg(&key).query(&mut admin).unwrap();
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut admin).unwrap();
            let fields: Vec<String> = match kind.as_str() {
                "hash" => redis::cmd("HKEYS").arg(&key).query(&mut admin).unwrap(),
                _ => vec![format!("a {kind}")],
            };
            assert!(
                left > 0 || fields.iter().all(|field| field == ":ttl_ms"),
                "{case}: {key} holds {fields:?} and has no expiry ({left})"
            );
        }
    }
}
