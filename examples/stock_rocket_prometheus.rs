//! The benchmark's reference: a minimal Rocket app with only rocket_prometheus' stock
//! fairing (one counter and one histogram per request), serving the same trivial route as
//! babylon's `/api/live`. Built and started by `bench/run.sh`; not part of the service.
//!
//! `ROCKET_PORT=18090 cargo run --release --example stock_rocket_prometheus`

use std::time::Instant;

use rocket::serde::json::Json;
use rocket::State;
use rocket_prometheus::PrometheusMetrics;
use serde::Serialize;

#[derive(Serialize)]
struct Live {
    status: &'static str,
    uptime_seconds: f64,
}

struct Started(Instant);

#[rocket::get("/api/live")]
fn live(started: &State<Started>) -> Json<Live> {
    Json(Live {
        status: "ok",
        uptime_seconds: started.0.elapsed().as_secs_f64(),
    })
}

#[rocket::launch]
fn rocket() -> _ {
    let prometheus = PrometheusMetrics::new();
    rocket::build()
        .attach(prometheus.clone())
        .manage(Started(Instant::now()))
        .mount("/", rocket::routes![live])
        .mount("/metrics", prometheus)
}
