//! Redis goes silent (no FIN, no RST, no answer) under load, then answers again at its
//! address: babylon must stop waiting for it at once, keep every probe of the service
//! answering, and use Redis again within seconds, whatever its old connections are doing.
//!
//! Two workers, each with the read cache and the rate limit in Redis, one `fail_open` and
//! one `fail_closed`, reach the shared Redis through a proxy of the test's own
//! (`common::silent_proxy`) that goes silent and heals. The connections it carried while
//! silent stay dead after it heals, so only a new connection can reach Redis again.
//!
//! Needs the Redis on 127.0.0.1:6379; without it the test prints SKIPPED, except under
//! CI=true where it fails.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_server::{redis_available, unique_prefix, Keys};
use common::silent_proxy::SilentProxy;
use common::workers::{command_without_export_in, start_command, Worker};
use common::{http_get, http_request_from, sample_at};
use serde_json::Value;

/// `redis.response_timeout_ms` and `redis.connect_timeout_ms` of the workers.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// `PROBE_EVERY` of crates/babylon/src/redis_client.rs.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The writer's `path`: it renames the item (to its own name) with a PUT.
const WRITE: &str = "PUT";

/// One answer: which worker, which path, the status, how long it took.
#[derive(Debug, Clone)]
struct Answer {
    port: u16,
    path: &'static str,
    status: u16,
    took: Duration,
    during_silence: bool,
}

fn worker(dir: &std::path::Path, proxy: &SilentProxy, prefix: &str, when: &str) -> Worker {
    let mut command = command_without_export_in(dir);
    command
        .env("BABYLON_CACHE__BACKEND", "redis")
        .env("BABYLON_CACHE__TTL_SECONDS", "60")
        .env("BABYLON_BLOCKING__RATE_LIMIT__BACKEND", "redis")
        .env("BABYLON_BLOCKING__RATE_LIMIT__PER_SECOND", "100000")
        .env("BABYLON_BLOCKING__RATE_LIMIT__BURST", "100000")
        .env("BABYLON_BLOCKING__RATE_LIMIT__WHEN_REDIS_FAILS", when)
        .env("BABYLON_REDIS__URL", proxy.redis_url())
        .env("BABYLON_REDIS__KEY_PREFIX", prefix)
        .env(
            "BABYLON_REDIS__RESPONSE_TIMEOUT_MS",
            RESPONSE_TIMEOUT.as_millis().to_string(),
        )
        .env(
            "BABYLON_REDIS__CONNECT_TIMEOUT_MS",
            CONNECT_TIMEOUT.as_millis().to_string(),
        );
    start_command(command)
}

/// `/api/health`'s `redis.status`.
fn redis_status(port: u16) -> String {
    let (status, body) = http_get(port, "/api/health");
    assert_eq!(status, 200, "health never fails for Redis: {body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    health["redis"]["status"]
        .as_str()
        .unwrap_or("absent")
        .to_string()
}

#[test]
fn a_redis_that_goes_silent_is_dropped_at_once_and_used_again_within_seconds() {
    if !redis_available() {
        return;
    }
    let proxy = SilentProxy::start("127.0.0.1:6379".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("failover");
    let _keys = Keys(prefix.clone());
    let open = worker(dir.path(), &proxy, &prefix, "fail_open");
    let closed = worker(dir.path(), &proxy, &prefix, "fail_closed");
    let (status, body) = http_request_from(
        Ipv4Addr::LOCALHOST,
        open.app_port,
        "POST",
        "/api/items",
        &[("Content-Type", "application/json")],
        r#"{"name": "Dune", "kind": "book"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let item = format!("/api/items/{}", common::created_id(&body));
    let item: &'static str = Box::leak(item.into_boxed_str());
    for port in [open.app_port, closed.app_port] {
        assert_eq!(redis_status(port), "ok");
    }

    // Per worker: two readers of the item (cache and rate limit in Redis), a writer (rate
    // limit, then two invalidations in Redis), and a prober of liveness, as an
    // orchestrator would send.
    let silent = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let clients: Vec<_> = [open.app_port, closed.app_port]
        .into_iter()
        .flat_map(|port| {
            [
                (port, item),
                (port, item),
                (port, WRITE),
                (port, "/api/live"),
            ]
        })
        .map(|(port, path)| {
            let (silent, stop, answers) = (silent.clone(), stop.clone(), answers.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                // Bounded: at most 20,000 requests per client, whatever happens.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let during_silence = silent.load(Ordering::SeqCst);
                    let started = Instant::now();
                    let (status, _) = match path {
                        WRITE => http_request_from(
                            Ipv4Addr::LOCALHOST,
                            port,
                            "PUT",
                            item,
                            &[("Content-Type", "application/json")],
                            r#"{"name": "Dune", "kind": "book"}"#,
                        ),
                        _ => http_get(port, path),
                    };
                    seen.push(Answer {
                        port,
                        path,
                        status,
                        took: started.elapsed(),
                        during_silence,
                    });
                    if path == "/api/live" {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                answers.lock().unwrap().extend(seen);
            })
        })
        .collect();
    const HITS: &str = r#"rocket_cache_get_hits_total{backend="redis"}"#;
    common::wait_until("cache hits through the proxy", || {
        sample_at(open.app_port, HITS) >= 20.0 && sample_at(closed.app_port, HITS) >= 20.0
    });

    // Redis goes silent for 3 s.
    silent.store(true, Ordering::SeqCst);
    proxy.go_silent();
    common::wait_until("both workers see Redis down", || {
        redis_status(open.app_port) == "unavailable"
            && redis_status(closed.app_port) == "unavailable"
    });
    std::thread::sleep(Duration::from_secs(3));
    let health: Value = serde_json::from_str(&http_get(closed.app_port, "/api/health").1).unwrap();
    assert_eq!(health["redis"]["reason"], "timeout", "{health}");
    assert!(health["redis"]["down_since"].as_u64().is_some(), "{health}");

    // It answers again at its address; every connection it had is dead.
    proxy.heal();
    silent.store(false, Ordering::SeqCst);
    let healed = Instant::now();
    let mut recovered = Vec::new();
    for worker in [&open, &closed] {
        let back = common::wait_for(Duration::from_secs(15), || {
            redis_status(worker.app_port) == "ok"
        });
        assert!(back, "Redis in use again within 15 s of answering");
        recovered.push(healed.elapsed());
    }
    let hits_back = sample_at(open.app_port, HITS);
    common::wait_until("cache hits again", || {
        sample_at(open.app_port, HITS) >= hits_back + 20.0
    });
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    // Used again within the stated bound: a probe's wait, plus one attempt that may have
    // started just before Redis answered, plus one that succeeds; 2 s of slack for a
    // loaded machine.
    let bound = PROBE_EVERY + 2 * (CONNECT_TIMEOUT + RESPONSE_TIMEOUT);
    let slowest = recovered.iter().max().copied().unwrap();
    assert!(
        slowest <= bound + Duration::from_secs(2),
        "Redis used again {slowest:?} after it answered (bound {bound:?})"
    );

    let answers = answers.lock().unwrap();
    let silence: Vec<&Answer> = answers.iter().filter(|a| a.during_silence).collect();
    // Liveness never depends on Redis: every probe 200 (its rate limit is this worker's
    // own, so it sends Redis nothing).
    let probes: Vec<&&Answer> = silence.iter().filter(|a| a.path == "/api/live").collect();
    assert!(probes.len() >= 10, "liveness was probed during the silence");
    assert!(
        probes.iter().all(|a| a.status == 200),
        "/api/live during the silence: {:?}",
        probes
            .iter()
            .filter(|a| a.status != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
    let slowest_probe = probes.iter().map(|a| a.took).max().unwrap();
    // fail_open answers every read; fail_closed answers 200 or 503.
    for answer in answers.iter().filter(|a| a.path != "/api/live") {
        let allowed =
            answer.status == 200 || (answer.port == closed.app_port && answer.status == 503);
        assert!(allowed, "{answer:?}");
    }
    assert!(
        silence
            .iter()
            .any(|a| a.port == closed.app_port && a.status == 503),
        "fail_closed refused while Redis was silent"
    );
    // A request waits for a silent Redis at most once, `response_timeout_ms`: only the
    // commands in flight when it went silent, one per client of Redis (two readers and a
    // writer per worker), wait for their timeout; every later one is refused at once
    // (`unavailable`) until Redis is back. Counted by the workers, so the figure does not
    // depend on how busy this machine is.
    // A command whose connection is dropped while it waits fails as `connection`.
    let timeouts = |port: u16| {
        sample_at(
            port,
            r#"rocket_redis_errors_total{alias="main",type="timeout"}"#,
        ) + sample_at(
            port,
            r#"rocket_redis_errors_total{alias="main",type="connection"}"#,
        )
    };
    let not_sent = |port: u16| {
        sample_at(
            port,
            r#"rocket_redis_errors_total{alias="main",type="unavailable"}"#,
        )
    };
    let reads = |port: u16| {
        silence
            .iter()
            .filter(|a| a.port == port && a.path != "/api/live")
            .count()
    };
    for port in [open.app_port, closed.app_port] {
        assert!(
            reads(port) >= 50,
            "port {port} served reads during the silence: {}",
            reads(port)
        );
        assert!(
            (1.0..=3.0).contains(&timeouts(port)),
            "port {port}: {} commands waited for their timeout ({} were not sent)",
            timeouts(port),
            not_sent(port)
        );
        assert!(
            not_sent(port) >= 50.0,
            "port {port}: {} not sent",
            not_sent(port)
        );
    }
    let longest = silence.iter().map(|a| a.took).max().unwrap();
    let waited = |port: u16| {
        silence
            .iter()
            .filter(|a| a.port == port && a.path != "/api/live" && a.took >= RESPONSE_TIMEOUT)
            .count()
    };
    eprintln!(
        "redis silent 3 s: used again {:?} and {:?} after it answered (bound {bound:?}); \
         {} and {} reads and writes during the silence, {} and {} of them took >= \
         {RESPONSE_TIMEOUT:?}, the longest {longest:?}; {} and {} commands timed out, {} and {} \
         were not sent; {} liveness probes, all 200, the slowest {slowest_probe:?}",
        recovered[0],
        recovered[1],
        reads(open.app_port),
        reads(closed.app_port),
        waited(open.app_port),
        waited(closed.app_port),
        timeouts(open.app_port),
        timeouts(closed.app_port),
        not_sent(open.app_port),
        not_sent(closed.app_port),
        probes.len(),
    );
}
