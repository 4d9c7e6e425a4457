//! An OTLP/gRPC receiver that takes every span and keeps none: the collector of the
//! `on-otlp` benchmark side (bench/sides.sh), so that span export is measured with its
//! protobuf encoding and its gRPC calls, not against a port that refuses them.
//!
//! Prints its endpoint (`http://127.0.0.1:<port>`) as its first line, then runs until it
//! is killed.

use std::io::Write;
use std::time::Duration;

use fake_opentelemetry_collector::FakeCollectorServer;

fn main() {
    let runtime = rocket::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let mut server = FakeCollectorServer::start()
            .await
            .expect("a listening port on 127.0.0.1");
        println!("{}", server.endpoint());
        std::io::stdout().flush().expect("stdout");
        // The receiver hands spans over through a channel of 64, one span at a time, and
        // waits while it is full: take whatever is there as soon as anything is (it polls
        // every 0.1 ms while empty), so that the receiver is never what limits export.
        loop {
            server.exported_spans(1, Duration::from_millis(1)).await;
        }
    });
}
