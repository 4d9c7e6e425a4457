//! The blocking policy: refused requests never reach their handler, get a JSON error with
//! the right status, and are counted by reason.

mod common;

use common::{client, from, sample, scrape};
use rocket::http::{ContentType, Header, Status};
use serde_json::{json, Value};

fn create<'c>(
    client: &'c rocket::local::blocking::Client,
    peer: &str,
) -> rocket::local::blocking::LocalResponse<'c> {
    from(client.post("/api/items"), peer)
        .header(ContentType::JSON)
        .body(r#"{"name":"widget","kind":"tool"}"#)
        .dispatch()
}

fn item_count(client: &rocket::local::blocking::Client) -> usize {
    let page: Value = client.get("/api/items").dispatch().into_json().unwrap();
    page["total"].as_u64().expect("a page has a total") as usize
}

#[test]
fn denied_post_gets_403_json_and_creates_nothing() {
    let client = client(json!({ "blocking": { "deny": ["203.0.113.0/24", "2001:db8::/32"] } }));
    for peer in ["203.0.113.50", "2001:db8::1"] {
        let response = create(&client, peer);
        assert_eq!(response.status(), Status::Forbidden);
        assert_eq!(response.content_type(), Some(ContentType::JSON));
        let body: Value = response.into_json().unwrap();
        assert_eq!(body["error"]["reason"], "deny_list");
        assert_eq!(body["error"]["status"], 403);
    }
    assert_eq!(
        item_count(&client),
        0,
        "a blocked POST must have no side effect"
    );
    assert_eq!(create(&client, "198.51.100.1").status(), Status::Created);
    assert_eq!(item_count(&client), 1);
    let text = scrape(&client);
    assert_eq!(
        sample(&text, r#"api_requests_blocked_total{reason="deny_list"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"babylon_items_created_total{kind="tool"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_requests_by_route_transport_method_total{method="POST",route="<blocked>",transport="http"}"#
        ),
        Some(2.0),
        "blocked requests keep their method and share one route label"
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after_per_client() {
    let client = client(json!({ "blocking": { "rate_limit": { "per_second": 1, "burst": 3 } } }));
    let statuses: Vec<u16> = (0..5)
        .map(|_| {
            from(client.get("/api/health"), "198.51.100.1")
                .dispatch()
                .status()
                .code
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let refused = from(client.get("/api/health"), "198.51.100.1").dispatch();
    let retry_after: u64 = refused
        .headers()
        .get_one("Retry-After")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = refused.into_json().unwrap();
    assert_eq!(body["error"]["reason"], "rate_limited");
    // Another client has its own bucket.
    assert_eq!(
        from(client.get("/api/health"), "198.51.100.2")
            .dispatch()
            .status(),
        Status::Ok
    );
    // A rate-limited POST creates nothing either.
    assert_eq!(
        create(&client, "198.51.100.1").status(),
        Status::TooManyRequests
    );
    assert_eq!(item_count(&client), 0);
    let text = scrape(&client);
    assert_eq!(
        sample(
            &text,
            r#"api_requests_blocked_total{reason="rate_limited"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"rocket_http_responses_by_status_total{status="429"}"#
        ),
        Some(4.0)
    );
}

#[test]
fn forwarded_headers_are_ignored_unless_the_peer_is_a_trusted_proxy() {
    let deny = json!(["203.0.113.0/24"]);
    // Untrusted peer: a denied client cannot hide behind a header…
    let plain = client(json!({ "blocking": { "deny": deny } }));
    let spoof = from(plain.get("/api/health"), "203.0.113.9")
        .header(Header::new("X-Forwarded-For", "198.51.100.1"));
    assert_eq!(spoof.dispatch().status(), Status::Forbidden);
    // …and an allowed client cannot be framed by one.
    let framed = from(plain.get("/api/health"), "198.51.100.1")
        .header(Header::new("X-Real-IP", "203.0.113.9"));
    assert_eq!(framed.dispatch().status(), Status::Ok);

    // Trusted proxy: its headers name the client.
    let proxied =
        client(json!({ "blocking": { "deny": deny, "trusted_proxies": ["10.0.0.0/8"] } }));
    let via_proxy = from(proxied.get("/api/health"), "10.1.2.3")
        .header(Header::new("X-Forwarded-For", "203.0.113.9"));
    assert_eq!(via_proxy.dispatch().status(), Status::Forbidden);
    let via_proxy = from(proxied.get("/api/health"), "10.1.2.3")
        .header(Header::new("X-Real-IP", "198.51.100.1"));
    assert_eq!(via_proxy.dispatch().status(), Status::Ok);
    let garbage = from(proxied.get("/api/health"), "10.1.2.3")
        .header(Header::new("X-Forwarded-For", "not an address"));
    assert_eq!(
        garbage.dispatch().status(),
        Status::Ok,
        "garbage falls back to the proxy's own address"
    );
}

#[test]
fn blocking_disabled_lets_everyone_through() {
    let client = client(json!({ "blocking": { "enabled": false, "deny": ["0.0.0.0/0"] } }));
    assert_eq!(create(&client, "203.0.113.9").status(), Status::Created);
}

#[test]
fn the_internal_blocked_route_is_not_reachable_directly() {
    let client = client(json!({}));
    assert_eq!(
        client.get("/__babylon/blocked").dispatch().status(),
        Status::NotFound
    );
}

#[test]
fn invalid_bodies_get_422_naming_the_field_and_oversized_bodies_413() {
    let client = client(json!({ "limits": { "json": 64 } }));
    let response = client
        .post("/api/items")
        .header(ContentType::JSON)
        .body(r#"{"name":"x","kind":"car"}"#)
        .dispatch();
    assert_eq!(response.status(), Status::UnprocessableEntity);
    let body: Value = response.into_json().unwrap();
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "kind");
    let response = client
        .post("/api/items")
        .header(ContentType::JSON)
        .body(r#"{"name":"   ","kind":"book"}"#)
        .dispatch();
    let body: Value = response.into_json().unwrap();
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "name");
    let big = format!(r#"{{"name":"{}","kind":"book"}}"#, "x".repeat(100));
    assert_eq!(
        client
            .post("/api/items")
            .header(ContentType::JSON)
            .body(big)
            .dispatch()
            .status(),
        Status::PayloadTooLarge
    );
    let response = client
        .post("/api/items")
        .header(ContentType::Text)
        .body("hi")
        .dispatch();
    assert_eq!(response.status(), Status::UnsupportedMediaType);
    assert_eq!(item_count(&client), 0);
}

/// Requests from `peers`, one each; how many got through.
fn allowed(client: &rocket::local::blocking::Client, peers: impl Iterator<Item = String>) -> usize {
    peers
        .filter(|peer| from(client.get("/api/live"), peer).dispatch().status() == Status::Ok)
        .count()
}

#[test]
fn an_ipv6_client_rotating_addresses_in_its_subnet_is_limited_as_one() {
    let limit = json!({ "per_second": 1, "burst": 5 });
    let client = client(json!({ "blocking": { "rate_limit": limit } }));
    // 200 addresses of one /64, as any IPv6 host may use.
    let one_subnet = (0..200u32).map(|n| format!("2001:db8:1:2:{:x}:{:x}::1", n >> 8, n & 0xff));
    assert_eq!(allowed(&client, one_subnet), 5, "one burst for the /64");
    assert_eq!(
        allowed(&client, std::iter::once("2001:db8:1:3::1".into())),
        1,
        "another /64"
    );
    // IPv4 written as IPv4-mapped IPv6 is the IPv4 client.
    assert_eq!(allowed(&client, (0..6).map(|_| "192.0.2.9".to_string())), 5);
    assert_eq!(
        allowed(&client, std::iter::once("::ffff:192.0.2.9".into())),
        0
    );
    let text = scrape(&client);
    assert_eq!(
        sample(
            &text,
            r#"api_requests_blocked_total{reason="rate_limited"}"#
        ),
        Some(197.0)
    );

    // With a /128 prefix every address is a client of its own.
    let limit = json!({ "per_second": 1, "burst": 5, "ipv6_prefix": 128 });
    let client = common::client(json!({ "blocking": { "rate_limit": limit } }));
    let one_subnet = (0..20u32).map(|n| format!("2001:db8:1:2::{n:x}"));
    assert_eq!(allowed(&client, one_subnet), 20);
}

#[test]
fn a_flood_of_distinct_clients_stays_within_max_clients() {
    let limit = json!({ "per_second": 1, "burst": 2, "max_clients": 50 });
    let client = client(json!({ "blocking": { "rate_limit": limit } }));
    let flood = (0..2000u32).map(|n| format!("2001:db8:{:x}:{:x}::1", n >> 8, n & 0xff));
    let started = std::time::Instant::now();
    let through = allowed(&client, flood);
    // 50 clients with one request each; the other 1,950 share one bucket of 2, which
    // refills one request a second while the flood lasts (on a busy machine, more than
    // a second).
    let refilled = started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        (50 + 2..=50 + 2 + refilled).contains(&through),
        "{through} requests through, expected 52 plus at most {refilled} refilled"
    );
    let text = scrape(&client);
    assert_eq!(
        sample(&text, "api_rate_limit_clients"),
        Some(51.0),
        "50 clients and the shared bucket"
    );
    assert_eq!(sample(&text, "api_rate_limit_overflow_total"), Some(1950.0));
    // A client tracked before the map filled keeps its own budget.
    let early = "2001:db8:0:0::1".to_string();
    assert_eq!(
        allowed(&client, std::iter::once(early)),
        1,
        "its second request"
    );
}

/// Every path of the application's routes, as a client writes it.
const APPLICATION_PATHS: [&str; 8] = [
    "/api/live",
    "/api/health",
    "/api/metrics",
    "/api/items",
    "/api/items/bulk",
    "/api/items/0190a3c4-0000-7000-8000-000000000000",
    "/api/items/anything",
    "/__babylon/blocked",
];

#[test]
fn a_metrics_path_that_an_application_route_matches_is_refused_naming_the_setting() {
    for path in APPLICATION_PATHS {
        let settings = common::settings(json!({ "metrics": { "path": path } }));
        let error = match babylon_app::App::from_figment(settings) {
            Ok(_) => panic!("metrics.path = {path} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("`metrics.path`") && error.contains(path) && !error.contains('\n'),
            "{error}"
        );
        // Served on the export port only, the path collides with nothing.
        let settings =
            common::settings(json!({ "metrics": { "path": path, "serve_on_main_port": false } }));
        assert!(babylon_app::App::from_figment(settings).is_ok(), "{path}");
    }
}

/// The deny list applies to every request the metrics handler does not answer itself:
/// every method on every path, the metrics path included; only a GET or HEAD of the
/// metrics path reaches the metrics handler, which refuses the client by its own rule.
#[test]
fn every_request_but_a_scrape_is_screened_whatever_the_metrics_path() {
    use rocket::http::Method;
    for metrics_path in ["/metrics", "/api/stats", "/api/items/bulk/x", "/items"] {
        let client = client(json!({
            "blocking": { "deny": ["203.0.113.0/24"] },
            "metrics": { "path": metrics_path } }));
        for path in APPLICATION_PATHS.iter().chain([&metrics_path]) {
            for method in common::METHODS {
                let response = from(client.req(method, *path), "203.0.113.9")
                    .header(ContentType::JSON)
                    .body(r#"{"name":"widget","kind":"tool"}"#)
                    .dispatch();
                let status = response.status();
                let reason = if method == Method::Head {
                    None
                } else {
                    let body: Value = response.into_json().unwrap_or_default();
                    body["error"]["reason"].as_str().map(String::from)
                };
                let scrape = *path == metrics_path && matches!(method, Method::Get | Method::Head);
                let expected = if scrape {
                    "metrics_forbidden"
                } else {
                    "deny_list"
                };
                assert_eq!(
                    status,
                    Status::Forbidden,
                    "{method} {path} (metrics at {metrics_path})"
                );
                if let Some(reason) = reason {
                    assert_eq!(
                        reason, expected,
                        "{method} {path} (metrics at {metrics_path})"
                    );
                }
            }
        }
        assert_eq!(item_count(&client), 0, "metrics at {metrics_path}");
    }
}
