//! The rate limit on the shared Redis (`blocking.rate_limit.backend = "redis"`): worker
//! processes behind one address enforce one limit per client, where per-process limiters
//! allow each worker's share again; and a Redis that dies under load and comes back is
//! counted, decided as `when_redis_fails` says, and used again without a restart.
//!
//! Needs the Redis on 127.0.0.1:6379 and the `redis-server` program (Debian:
//! redis-server; `bash .ci/run` installs and starts it). Without them the tests print
//! SKIPPED, except under CI=true where they fail.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ports::PortBlock;
use common::redis_server::{redis_available, unique_prefix, Keys, PrivateRedis, REDIS};
use common::workers::{command_without_export_in, start_command, Worker};
use common::{http_get, http_get_from, sample_at};

const RATE_LIMITED: &str = r#"api_requests_blocked_total{reason="rate_limited"}"#;
const UNAVAILABLE: &str = r#"api_requests_blocked_total{reason="rate_limiter_unavailable"}"#;
const LIMITER_ERRORS: &str = "api_rate_limit_errors_total";
const SCRIPT_CALLS: &str = r#"rocket_redis_commands_total{alias="main",command="EVALSHA"}"#;
const BURST: usize = 30;

/// The value of `series` in a worker's exposition on its main port.
fn sample_of(worker: &Worker, series: &str) -> f64 {
    sample_at(worker.app_port, series)
}

/// A worker limiting each client to `burst` requests and then `per_second`, on `backend`,
/// believing the `X-Forwarded-For` of loopback peers as it would nginx's.
fn limited_worker(dir: &std::path::Path, backend: &str, redis_url: &str, prefix: &str) -> Command {
    let mut command = command_without_export_in(dir);
    command
        .env("BABYLON_BLOCKING__TRUSTED_PROXIES", "127.0.0.1/32")
        .env("BABYLON_BLOCKING__RATE_LIMIT__PER_SECOND", "1")
        .env("BABYLON_BLOCKING__RATE_LIMIT__BURST", BURST.to_string())
        .env("BABYLON_BLOCKING__RATE_LIMIT__BACKEND", backend)
        .env("BABYLON_REDIS__URL", redis_url)
        .env("BABYLON_REDIS__KEY_PREFIX", prefix);
    command
}

/// Sends `requests` requests of one client, round-robin over `workers` as a proxy in
/// front of them would, each from another address of the client's /64. Returns the
/// statuses and the time from the first request to the last answer.
fn round_robin(workers: &[Worker], requests: usize) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let statuses = (0..requests)
        .map(|i| {
            let worker = &workers[i % workers.len()];
            let client = format!("2001:db8:77:1::{:x}", i + 1);
            http_get_from(
                Ipv4Addr::LOCALHOST,
                worker.app_port,
                "/api/metrics",
                &[("X-Forwarded-For", &client)],
            )
            .0
        })
        .collect();
    (statuses, started.elapsed())
}

/// What one client got through `workers` workers on `backend`.
struct Run {
    allowed: usize,
    refused: usize,
    elapsed: Duration,
    counted_refusals: f64,
    limiter_errors: f64,
}

fn run(backend: &str, workers: usize, requests: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix(&format!("limit-{backend}"));
    let _keys = Keys(prefix.clone());
    let workers: Vec<Worker> = (0..workers)
        .map(|_| {
            let mut command = limited_worker(dir.path(), backend, REDIS, &prefix);
            // The test checks one limit, with Redis answering: a check slowed past the
            // default 250 ms by a busy machine would count as Redis down and be decided
            // by each worker alone.
            command.env("BABYLON_REDIS__RESPONSE_TIMEOUT_MS", "5000");
            start_command(command)
        })
        .collect();
    let (statuses, elapsed) = round_robin(&workers, requests);
    let allowed = statuses.iter().filter(|status| **status == 200).count();
    let refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(
        allowed + refused,
        requests,
        "only 200 and 429: {statuses:?}"
    );
    let total = |series: &str| workers.iter().map(|w| sample_of(w, series)).sum();
    Run {
        allowed,
        refused,
        elapsed,
        counted_refusals: total(RATE_LIMITED),
        limiter_errors: total(LIMITER_ERRORS),
    }
}

#[test]
fn three_workers_behind_one_address_enforce_one_limit_per_client() {
    if !redis_available() {
        return;
    }
    let requests = 4 * BURST;
    let shared = run("redis", 3, requests);
    // A bucket refills one request a second: while the requests last, at most that many
    // more may pass, never a worker's share.
    let refilled = shared.elapsed.as_secs() as usize + 1;
    assert!(
        (BURST..=BURST + refilled).contains(&shared.allowed),
        "one limit of {BURST} across three workers (+{refilled} refilled in {:?}): {} allowed",
        shared.elapsed,
        shared.allowed
    );
    assert_eq!(
        shared.counted_refusals, shared.refused as f64,
        "every 429 counted as rate_limited, by the worker that refused it"
    );
    assert_eq!(shared.limiter_errors, 0.0);

    // The contrast that makes the test able to fail: per-process limiters let each
    // worker allow the client a whole burst.
    let per_process = run("memory", 3, requests);
    assert!(
        per_process.allowed >= 3 * BURST,
        "per-process limits allow each worker's burst: {} allowed",
        per_process.allowed
    );
    eprintln!(
        "rate limit across 3 workers, burst {BURST}, {requests} requests of one client: \
         redis backend allowed {} in {:?}, memory backend allowed {}",
        shared.allowed, shared.elapsed, per_process.allowed
    );
}

/// Worker options for the outage test: a limit no reader reaches, so that every refusal
/// is the limiter's failure, never the client's rate.
fn outage_worker(dir: &std::path::Path, redis: &PrivateRedis, prefix: &str, when: &str) -> Worker {
    let mut command = limited_worker(dir, "redis", &redis.url(), prefix);
    command
        .env("BABYLON_BLOCKING__RATE_LIMIT__PER_SECOND", "100000")
        .env("BABYLON_BLOCKING__RATE_LIMIT__BURST", "100000")
        .env("BABYLON_BLOCKING__RATE_LIMIT__WHEN_REDIS_FAILS", when);
    start_command(command)
}

#[test]
fn redis_killed_and_restarted_under_load_is_decided_as_configured_and_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    if common::tool("redis-server").is_none() {
        return;
    }
    let redis_port = PortBlock::reserve(1);
    let mut redis = PrivateRedis::start(redis_port.first());
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("limit-outage");
    let mut open = outage_worker(dir.path(), &redis, &prefix, "fail_open");
    let mut closed = outage_worker(dir.path(), &redis, &prefix, "fail_closed");

    // Two clients per worker read without pause while Redis dies and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [open.app_port, closed.app_port]
        .into_iter()
        .flat_map(|port| [port, port])
        .map(|port| {
            let (stop, answers) = (stop.clone(), answers.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                // Bounded: at most 20,000 requests per client, whatever happens.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, body) = http_get(port, "/api/items");
                    seen.push((port, status, body));
                }
                answers.lock().unwrap().extend(seen);
            })
        })
        .collect();
    common::wait_until("checks in Redis while it runs", || {
        sample_of(&open, SCRIPT_CALLS) >= 20.0 && sample_of(&closed, SCRIPT_CALLS) >= 20.0
    });
    assert_eq!(sample_of(&open, LIMITER_ERRORS), 0.0);

    redis.kill();
    common::wait_until("limiter errors counted while Redis is down", || {
        sample_of(&open, LIMITER_ERRORS) >= 20.0 && sample_of(&closed, LIMITER_ERRORS) >= 20.0
    });
    redis.restart();
    let errors_when_back = |worker: &Worker| sample_of(worker, LIMITER_ERRORS);
    // Back: checks succeed again (the script is loaded into the new server by itself),
    // so the error counts stop growing while the script calls go on.
    let mut settled = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !settled && Instant::now() < deadline {
        let before = (errors_when_back(&open), errors_when_back(&closed));
        let calls = sample_of(&open, SCRIPT_CALLS);
        std::thread::sleep(Duration::from_millis(300));
        settled = (errors_when_back(&open), errors_when_back(&closed)) == before
            && sample_of(&open, SCRIPT_CALLS) >= calls + 20.0;
    }
    assert!(settled, "checks in Redis resumed without a restart");
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }

    let answers = answers.lock().unwrap();
    let of = |port: u16, status: u16| {
        answers
            .iter()
            .filter(|(p, s, _)| *p == port && *s == status)
            .count()
    };
    let unexpected: Vec<_> = answers
        .iter()
        .filter(|(port, status, _)| {
            !(*status == 200 || (*port == closed.app_port && *status == 503))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "fail_open answers every request, fail_closed answers 200 or 503: {:?}\n{}\n{}",
        &unexpected[..unexpected.len().min(5)],
        open.output(),
        closed.output()
    );
    let refused = of(closed.app_port, 503);
    assert!(refused > 0, "fail_closed refused while Redis was down");
    assert!(
        answers
            .iter()
            .all(|(_, status, body)| *status != 503 || body.contains("rate_limiter_unavailable")),
        "a 503 says why"
    );
    assert_eq!(
        sample_of(&closed, UNAVAILABLE),
        refused as f64,
        "every refusal counted as rate_limiter_unavailable"
    );
    assert_eq!(
        sample_of(&closed, RATE_LIMITED),
        0.0,
        "and none as rate_limited"
    );
    assert_eq!(sample_of(&open, RATE_LIMITED), 0.0);
    assert_eq!(sample_of(&open, UNAVAILABLE), 0.0);
    let notices = open.notices().join("\n");
    assert!(
        notices.contains("does not answer") && notices.contains("answers again"),
        "the outage and the recovery are logged: {notices}"
    );
    eprintln!(
        "limiter outage: fail_open answered {} requests, all 200; fail_closed answered {} 200 and {refused} 503; {} and {} checks failed",
        of(open.app_port, 200),
        of(closed.app_port, 200),
        sample_of(&open, LIMITER_ERRORS),
        sample_of(&closed, LIMITER_ERRORS),
    );
}
