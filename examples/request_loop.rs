//! Sends `GET /api/live` through Rocket's local client a given number of times, for
//! `bench/instructions.sh`, which runs it under callgrind: instruction counts are
//! repeatable where wall-clock timings on a shared machine are not.
//!
//! `cargo run --release --example request_loop -- <metrics on|off> <blocking on|off> <requests>`

use rocket::local::blocking::Client;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [metrics, blocking, requests] = args.as_slice() else {
        eprintln!("usage: request_loop <metrics on|off> <blocking on|off> <requests>");
        std::process::exit(2);
    };
    let on = |value: &str| match value {
        "on" => true,
        "off" => false,
        other => {
            eprintln!("expected on or off, got {other:?}");
            std::process::exit(2);
        }
    };
    let Ok(requests) = requests.parse::<u32>() else {
        eprintln!("requests must be a whole number, got {requests:?}");
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("loop.sqlite").display());
    let settings = babylon::config::figment_from(json!({
        "log_level": "off",
        "databases": { "main": { "url": url } },
        "metrics": { "enabled": on(metrics), "export": { "enabled": false } },
        "blocking": {
            "enabled": on(blocking),
            "deny": ["192.0.2.0/24"],
            "rate_limit": { "per_second": 1000000, "burst": 1000000 },
        },
    }));
    let app = babylon::App::from_figment(settings).expect("valid settings");
    let client = Client::untracked(app.rocket().expect("a rocket")).expect("ignition");
    let peer = "127.0.0.1:4000".parse().expect("a socket address");
    for _ in 0..requests {
        let response = client.get("/api/live").remote(peer).dispatch();
        assert_eq!(response.status().code, 200);
    }
}
