//! The read cache on the shared Redis (`cache.backend = "redis"`): a write through one
//! worker is read fresh through every other at once, and a Redis that cannot be reached
//! never fails a read the database can answer.
//!
//! Needs the Redis on 127.0.0.1:6379 (Debian: redis-server; `bash .ci/run` starts one).
//! Without it the tests print SKIPPED, except under CI=true where they fail. Each test
//! writes under a key prefix of its own and deletes its keys at the end.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{client, sample_or_zero, scrape, TestClient};
use rocket::http::{ContentType, Status};
use serde_json::{json, Value};

const REDIS: &str = "redis://127.0.0.1:6379";

/// Whether the shared Redis answers; under CI=true it must.
fn redis_available() -> bool {
    let up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    if !up {
        let hint = "no Redis on 127.0.0.1:6379 (Debian: apt-get install -y redis-server); `bash .ci/run` starts one";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and {hint}");
        }
        eprintln!("SKIPPED: {hint}");
    }
    up
}

/// A key prefix no other test or run uses.
fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("babylon-test-{test}-{}-{nanos}", std::process::id())
}

/// Deletes every key under `prefix` when dropped.
struct Keys(String);

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(REDIS) else {
            return;
        };
        let Ok(mut connection) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut connection)
            .unwrap_or_default();
        for key in keys {
            let _: Result<(), _> = redis::cmd("DEL").arg(key).query(&mut connection);
        }
    }
}

/// A worker over the shared SQLite file `database`, with `backend` as its cache.
fn worker(database: &str, backend: &str, redis_url: &str, prefix: &str) -> TestClient {
    client(json!({
        "databases": { "main": { "url": database } },
        "metrics": { "export": { "enabled": false } },
        "cache": { "backend": backend, "ttl_seconds": 60 },
        "redis": { "url": redis_url, "key_prefix": prefix },
    }))
}

fn create(worker: &TestClient, name: &str) -> String {
    let response = worker
        .post("/api/items")
        .header(ContentType::JSON)
        .body(json!({ "name": name, "kind": "book" }).to_string())
        .dispatch();
    assert_eq!(response.status(), Status::Created);
    let item: Value = response.into_json().unwrap();
    item["id"].as_str().unwrap().to_string()
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

    let id = create(&a, "Dune");
    assert_eq!(name_of(&b, &id), "Dune", "B loads the item and caches it");
    assert_eq!(name_of(&a, &id), "Dune", "A reads what B cached");
    assert_eq!(total(&b), 1);
    rename(&a, &id, "Dune Messiah");
    assert_eq!(
        name_of(&b, &id),
        "Dune Messiah",
        "B reads A's write at once"
    );
    create(&a, "Children of Dune");
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

    let id = create(&a, "Dune");
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
        sample_or_zero(
            &text,
            r#"rocket_redis_errors_total{alias="main",type="connection"}"#
        ) + sample_or_zero(
            &text,
            r#"rocket_redis_errors_total{alias="main",type="timeout"}"#
        ) >= 5.0,
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
    let figment = common::settings(json!({ "redis": { "url": "rediss://:s3cr3t@host" } }));
    let error = babylon::settings::Settings::from_figment(&figment)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("redis.url") && !error.contains("s3cr3t"),
        "{error}"
    );
}
