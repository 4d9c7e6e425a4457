//! The guide's resource (docs/guide/adding-a-resource.md) is compiled from the very file
//! the guide shows, registered the way the guide says, and works on SQLite and the real
//! PostgreSQL: its families appear on both metrics endpoints, pass `promtool check
//! metrics`, and its table has model metrics with no line of code. tests/docs.rs checks
//! that the guide's code blocks are this file's and the service's.

mod common;

#[path = "../docs/guide/orders.rs"]
mod orders;

use babylon::Babylon;
use common::pg::{self, TestDatabase};
use common::ports::PortBlock;
use common::{http_get, promtool_check_metrics, sample, tool};
use rocket::http::{ContentType, Status};
use rocket::local::blocking::Client;
use serde_json::{json, Value};

/// The guide's migration, as `migrations/` of the service would hold it.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("docs/guide/migrations");

/// The service of the guide: `App::from_figment` and `App::rocket` of `src/lib.rs` with
/// the guide's lines for the orders resource, and the export port on `ports`.
fn client(url: &str, ports: &PortBlock) -> Client {
    let figment = common::settings(json!({
        "databases": { "main": { "url": url } },
        "metrics": { "export": {
            "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1",
        } },
    }));
    let babylon = Babylon::for_routes(figment, &orders::routes())
        .expect("valid settings")
        .with_migrations(&MIGRATIONS)
        .with_families::<orders::OrderMetrics>()
        .expect("the guide's families register");
    let rocket =
        rocket::custom(babylon.figment().clone()).mount("/", babylon.instrument(orders::routes()));
    Client::tracked(babylon.attach(rocket).expect("builds")).expect("ignites")
}

fn post(client: &Client, body: Value) -> (Status, Value) {
    let response = client
        .post("/api/orders")
        .header(ContentType::JSON)
        .body(body.to_string())
        .dispatch();
    let status = response.status();
    (status, response.into_json().unwrap_or(Value::Null))
}

#[test]
fn the_guides_resource_works_and_is_measured_on_both_databases() {
    let sqlite = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}",
        sqlite.path().join("shop.sqlite").display()
    )];
    let postgres = pg::server_url().map(|admin| TestDatabase::create(&admin));
    urls.extend(postgres.iter().map(|db| db.url.clone()));
    for url in &urls {
        let ports = PortBlock::reserve(1);
        let client = client(url, &ports);
        let mut ids = Vec::new();
        for (item, kind) in [("tea", "retail"), ("rice", "wholesale"), ("jam", "retail")] {
            let (status, order) = post(
                &client,
                json!({ "item": item, "quantity": 2, "kind": kind }),
            );
            assert_eq!(status, Status::Created, "{url}: {order}");
            assert_eq!(order["kind"], kind);
            ids.push(order["id"].as_str().unwrap().to_string());
        }
        let (status, refused) = post(
            &client,
            json!({ "item": " ", "quantity": 0, "kind": "retail" }),
        );
        assert_eq!(status, Status::UnprocessableEntity);
        assert_eq!(
            refused["error"]["message"],
            "invalid fields: item, quantity"
        );
        let (status, refused) = post(
            &client,
            json!({ "item": "x", "quantity": 1, "kind": "gift" }),
        );
        assert_eq!(status, Status::UnprocessableEntity, "{refused}");
        let found = client.get(format!("/api/orders/{}", ids[1])).dispatch();
        assert_eq!(found.status(), Status::Ok);
        assert_eq!(found.into_json::<Value>().unwrap()["item"], "rice");
        assert_eq!(
            client.get("/api/orders/none").dispatch().status(),
            Status::NotFound
        );

        let main = common::scrape(&client);
        let (status, export) = http_get(ports.first(), "/metrics");
        assert_eq!(status, 200, "{export}");
        for text in [&main, &export] {
            for (series, value) in [
                ("shop_orders_placed_total{kind=\"retail\"}", 2.0),
                ("shop_orders_placed_total{kind=\"wholesale\"}", 1.0),
                ("shop_order_store_seconds_count", 3.0),
                ("shop_orders_stored", 3.0),
                ("rocket_model_inserts_total{model=\"orders\"}", 3.0),
            ] {
                assert_eq!(sample(text, series), Some(value), "{url}: {series}");
            }
            assert!(text.contains("# HELP shop_orders_placed_total Orders placed, by kind.\n"));
            assert!(text.contains("route=\"/api/orders/<id>\""), "{url}");
        }
        let Some(promtool) = tool("promtool") else {
            continue;
        };
        let (clean, report) = promtool_check_metrics(&promtool, &export);
        assert!(clean, "promtool check metrics reported:\n{report}");
    }
}
