//! The benchmark's reference with babylon's allocator and page setting
//! (`babylon::memory`): the same app as `stock_rocket_prometheus`, so that comparing the
//! two stock builds shows what the allocator buys, and comparing babylon with this one
//! shows what babylon's own request path costs.
//!
//! `ROCKET_PORT=18090 cargo run --release --example stock_rocket_prometheus_mimalloc`

#[path = "stock/app.rs"]
mod app;

#[global_allocator]
static ALLOCATOR: babylon::memory::Allocator = babylon::memory::Allocator;

fn main() {
    if let Err(error) = babylon::memory::keep_pages_small() {
        eprintln!("warning: {error}");
    }
    if let Err(error) = rocket::execute(app::rocket().launch()) {
        eprintln!("{error}");
        std::process::exit(1);
    }
}
