//! Faults the service must survive: SIGTERM in the middle of load, and handlers that panic
//! under load. (Database down and back: tests/db_health.rs; a taken port range and an
//! unusable file_sd directory: tests/processes.rs.)

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ports::PortBlock;
use common::workers::{command_in, start_command, terminate};
use common::{post_json, sample, Outcome};
use rocket::http::Status;
use serde_json::json;

fn bulk_create(port: u16, batch: usize) -> Outcome {
    let items: Vec<String> = (0..50)
        .map(|n| format!(r#"{{"name":"b{batch} {n}","kind":"book"}}"#))
        .collect();
    post_json(port, "/api/items/bulk", &format!("[{}]", items.join(",")))
}

#[test]
fn sigterm_during_load_finishes_in_flight_requests_removes_the_target_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(1);
    let mut command = command_in(dir.path(), &ports);
    command.env("BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY", dir.path());
    let mut worker = start_command(command);
    let app_port = worker.app_port;
    let target = dir
        .path()
        .join(format!("babylon-127.0.0.1-{}.json", worker.export_port()));
    assert!(target.exists());

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut batch = client * 100_000;
                // Until told to stop, or until the server stops accepting connections.
                while !stop.load(Ordering::Relaxed) {
                    let outcome = bulk_create(app_port, batch);
                    let refused = matches!(outcome, Outcome::Refused | Outcome::NoAnswer);
                    outcomes.push(outcome);
                    if refused {
                        break;
                    }
                    batch += 1;
                }
                outcomes
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let signalled = Instant::now();
    let status = terminate(&mut worker);
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();

    let stderr = {
        let mut text = String::new();
        if let Some(mut pipe) = worker.child.stderr.take() {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    };
    assert!(
        status.success(),
        "SIGTERM is a clean shutdown: {status:?}\n{stderr}"
    );
    // Rocket's shutdown: grace 2 s + mercy 3 s (Rocket.toml defaults).
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    assert!(
        !target.exists(),
        "the file_sd target is removed on shutdown"
    );
    let truncated: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Truncated(_)))
        .collect();
    assert!(
        truncated.is_empty(),
        "requests cut off mid-way: {truncated:?}"
    );
    let completed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Complete { status: 201, .. }))
        .count();
    assert!(completed > 0, "load ran before the signal");
    let unexpected: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            !matches!(
                o,
                Outcome::Complete { status: 201, .. } | Outcome::Refused | Outcome::NoAnswer
            )
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than 201 or a refused connection: {unexpected:?}"
    );
}

#[rocket::get("/panic")]
fn panics() -> &'static str {
    panic!("deliberate test panic under load")
}

#[rocket::async_test]
async fn panicking_handlers_under_load_are_counted_and_the_service_keeps_serving() {
    use rocket::futures::future::join_all;
    use rocket::local::asynchronous::Client;
    let dir = tempfile::tempdir().unwrap();
    let app = babylon_app::App::from_figment(common::settings_in(&dir, json!({}))).unwrap();
    let rocket = app
        .rocket()
        .unwrap()
        .mount("/test", babylon::instrument(rocket::routes![panics]));
    let client = Client::tracked(rocket).await.unwrap();
    let requests = (0..300).map(|n| {
        let path = if n % 2 == 0 {
            "/test/panic"
        } else {
            "/api/live"
        };
        let request = client.get(path);
        async move { (path, request.dispatch().await.status()) }
    });
    let answers = join_all(requests).await;
    for (path, status) in &answers {
        let expected = if *path == "/test/panic" {
            Status::InternalServerError
        } else {
            Status::Ok
        };
        assert_eq!(*status, expected, "{path}");
    }
    let text = common::scrape_async(&client).await;
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_exceptions_by_type_total{type="panic"}"#
        ),
        Some(150.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_exceptions_by_route_total{route="/test/panic"}"#
        ),
        Some(150.0)
    );
    assert_eq!(sample(&text, "rocket_http_requests_in_flight"), Some(0.0));
    assert_eq!(
        client.get("/api/live").dispatch().await.status(),
        Status::Ok
    );
}
