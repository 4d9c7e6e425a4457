// The stock reference app, shared by the two stock examples (which differ only in their
// allocator). Not an example of its own: Cargo only builds `examples/*/main.rs` from here.

use std::time::Instant;

use rocket::serde::json::Json;
use rocket::{Build, Rocket, State};
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

/// A minimal Rocket app with only rocket_prometheus' stock fairing (one counter and one
/// histogram per request), serving the same trivial route as babylon's `/api/live`.
pub fn rocket() -> Rocket<Build> {
    let prometheus = PrometheusMetrics::new();
    rocket::build()
        .attach(prometheus.clone())
        .manage(Started(Instant::now()))
        .mount("/", rocket::routes![live])
        .mount("/metrics", prometheus)
}
