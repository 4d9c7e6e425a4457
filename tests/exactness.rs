//! Exact counts under load: many concurrent clients send exactly K requests of every kind
//! to the real binary while a scraper reads its export port, then every counter must equal
//! what the clients saw: no lost and no doubled increments.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::ports::PortBlock;
use common::workers::{command_in, start_command};
use common::{http_get, http_request_from, sample, sample_or_zero};

const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 150;

/// One request over a fresh connection from `source`; the status code.
fn send(source: Ipv4Addr, port: u16, method: &str, path: &str, body: &str) -> u16 {
    let json = [("Content-Type", "application/json")];
    http_request_from(source, port, method, path, &json, body).0
}

/// The request a client sends at step `n`: every route, status and blocking outcome.
fn request(client: usize, n: usize) -> (Ipv4Addr, &'static str, String, String) {
    let local = Ipv4Addr::LOCALHOST;
    let denied = Ipv4Addr::new(127, 0, 0, 2);
    match n % 8 {
        0 => (local, "GET", "/api/live".into(), String::new()),
        1 => (local, "GET", "/api/health".into(), String::new()),
        2 => (
            local,
            "POST",
            "/api/items".into(),
            format!(r#"{{"name":"c{client} n{n}","kind":"book"}}"#),
        ),
        3 => (
            local,
            "POST",
            "/api/items".into(),
            r#"{"name":"always the same","kind":"tool"}"#.into(),
        ),
        4 => (
            local,
            "POST",
            "/api/items".into(),
            r#"{"name":"","kind":"car"}"#.into(),
        ),
        5 => (local, "GET", format!("/no/such/path/{n}"), String::new()),
        6 => (
            denied,
            "POST",
            "/api/items".into(),
            format!(r#"{{"name":"denied {client} {n}","kind":"book"}}"#),
        ),
        _ => (local, "GET", "/api/items?per_page=3".into(), String::new()),
    }
}

#[test]
fn every_counter_equals_what_the_clients_saw() {
    let dir = tempfile::tempdir().unwrap();
    let ports = PortBlock::reserve(1);
    let mut command = command_in(dir.path(), &ports);
    command.env("BABYLON_BLOCKING__DENY", "127.0.0.2/32");
    let worker = start_command(command);
    let app_port = worker.app_port;

    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let (scraping, export_port) = (scraping.clone(), worker.export_port());
        std::thread::spawn(move || {
            let mut scrapes = 0;
            while scraping.load(Ordering::Relaxed) {
                assert_eq!(http_get(export_port, "/metrics").0, 200);
                scrapes += 1;
            }
            scrapes
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                let mut seen: Vec<(&'static str, u16)> = Vec::new();
                for n in 0..REQUESTS_PER_CLIENT {
                    let (source, method, path, body) = request(client, n);
                    seen.push((method, send(source, app_port, method, &path, &body)));
                }
                seen
            })
        })
        .collect();
    let seen: Vec<(&str, u16)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    scraping.store(false, Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    assert!(scrapes > 0, "the scraper ran during the load");

    let total = CLIENTS * REQUESTS_PER_CLIENT;
    assert_eq!(seen.len(), total);
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut by_method: BTreeMap<&str, usize> = BTreeMap::new();
    for (method, status) in &seen {
        *by_status.entry(*status).or_default() += 1;
        *by_method.entry(*method).or_default() += 1;
    }
    let (_, text) = http_get(worker.export_port(), "/metrics");
    let count = |series: &str| sample_or_zero(&text, series) as usize;

    assert_eq!(
        count("api_requests_total"),
        total,
        "scrapes of the export port are not API requests"
    );
    for (status, n) in &by_status {
        assert_eq!(
            count(&format!(
                r#"rocket_http_responses_by_status_total{{status="{status}"}}"#
            )),
            *n,
            "status {status}"
        );
    }
    for (method, n) in &by_method {
        assert_eq!(
            count(&format!(
                r#"rocket_http_requests_by_method_total{{method="{method}"}}"#
            )),
            *n,
            "{method}"
        );
    }
    assert_eq!(
        count(r#"api_requests_blocked_total{reason="deny_list"}"#),
        by_status[&403]
    );
    assert_eq!(
        count(r#"rocket_model_inserts_total{model="item"}"#),
        by_status[&201]
    );
    assert_eq!(
        count(r#"babylon_items_created_total{kind="book"}"#)
            + count(r#"babylon_items_created_total{kind="tool"}"#),
        by_status[&201]
    );
    // The duplicate name is created once and refused every other time.
    assert_eq!(
        by_status[&409],
        CLIENTS * REQUESTS_PER_CLIENT.div_ceil(8) - 1
    );
    let histogram_count: usize = text
        .lines()
        .filter(|l| l.starts_with("rocket_http_request_duration_seconds_count{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap() as usize)
        .sum();
    assert_eq!(
        histogram_count, total,
        "each request is observed once in the duration histogram"
    );
    assert_eq!(sample(&text, "rocket_http_requests_in_flight"), Some(0.0));
    let (_, page) = http_get(app_port, "/api/items?per_page=1");
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!(
        page["total"].as_u64().unwrap() as usize,
        by_status[&201],
        "every 201 is a row; no blocked POST left one"
    );
}
