//! The benchmark's reference: a minimal Rocket app with only rocket_prometheus' stock
//! fairing (one counter and one histogram per request), serving the same trivial route as
//! babylon's `/api/live`, with the system allocator, as one would write it. Built and
//! started by `bench/run.sh`; not part of the service.
//!
//! `ROCKET_PORT=18090 cargo run --release --example stock_rocket_prometheus`

#[path = "stock/app.rs"]
mod app;

#[rocket::launch]
fn rocket() -> _ {
    app::rocket()
}
