//! The example resource and the DB, model and cache families, against SQLite and the real
//! PostgreSQL (a fresh database per test, so tests never collide).

mod common;

use common::pg::{self, TestDatabase};
use common::{sample, sample_or_zero};
use rocket::http::{ContentType, Status};
use rocket::local::blocking::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Where one test's data lives; dropped (file removed, database dropped) after the test.
enum Backend {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

impl Backend {
    fn vendor(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    fn url(&self) -> String {
        match self {
            Backend::Sqlite(dir) => {
                format!("sqlite://{}", dir.path().join("items.sqlite").display())
            }
            Backend::Postgres(db) => db.url.clone(),
        }
    }

    fn settings(&self, overrides: Value) -> figment::Figment {
        let base = common::settings(json!({ "databases": { "main": { "url": self.url() } } }));
        base.merge(figment::providers::Serialized::globals(overrides))
    }

    fn client(&self, overrides: Value) -> Client {
        let app = babylon_app::App::from_figment(self.settings(overrides)).expect("valid settings");
        Client::tracked(app.rocket().expect("builds")).expect("ignites")
    }
}

/// SQLite always; PostgreSQL when the shared server runs (required under CI=true).
fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite(tempfile::tempdir().unwrap())];
    if let Some(admin) = pg::server_url() {
        all.push(Backend::Postgres(TestDatabase::create(&admin)));
    }
    all
}

fn post(client: &Client, path: &str, body: Value) -> (Status, Value) {
    let response = client
        .post(path)
        .header(ContentType::JSON)
        .body(body.to_string())
        .dispatch();
    let status = response.status();
    (status, response.into_json().unwrap_or(Value::Null))
}

fn get(client: &Client, path: &str) -> (Status, Value) {
    let response = client.get(path).dispatch();
    let status = response.status();
    (status, response.into_json().unwrap_or(Value::Null))
}

fn scrape(client: &Client) -> String {
    common::from(client.get("/metrics"), "127.0.0.1")
        .dispatch()
        .into_string()
        .unwrap()
}

fn db_series(name: &str, vendor: &str) -> String {
    format!(r#"{name}{{alias="main",vendor="{vendor}"}}"#)
}

#[test]
fn create_read_update_delete_and_paginate() {
    for backend in backends() {
        let vendor = backend.vendor();
        let client = backend.client(json!({}));
        let mut ids = Vec::new();
        for n in 0..5 {
            let (status, item) = post(
                &client,
                "/api/items",
                json!({ "name": format!("item {n}"), "kind": "book" }),
            );
            assert_eq!(status, Status::Created, "{vendor}: {item}");
            ids.push(item["id"].as_str().unwrap().to_string());
        }
        let (status, item) = get(&client, &format!("/api/items/{}", ids[0]));
        assert_eq!(
            (status, item["name"].as_str()),
            (Status::Ok, Some("item 0")),
            "{vendor}"
        );

        let (_, page) = get(&client, "/api/items?page=2&per_page=2");
        assert_eq!(page["total"], 5, "{vendor}");
        let names: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["item 2", "item 3"],
            "{vendor}: pages are in creation order"
        );
        assert_eq!(
            get(&client, "/api/items?page=0").0,
            Status::UnprocessableEntity
        );
        let (status, body) = get(&client, "/api/items?per_page=101");
        assert_eq!(status, Status::UnprocessableEntity);
        assert_eq!(body["error"]["details"]["fields"][0]["field"], "per_page");

        let response = client
            .put(format!("/api/items/{}", ids[1]))
            .header(ContentType::JSON)
            .body(r#"{"name":"renamed","kind":"tool"}"#)
            .dispatch();
        assert_eq!(response.status(), Status::Ok, "{vendor}");
        let (_, item) = get(&client, &format!("/api/items/{}", ids[1]));
        assert_eq!(
            (item["name"].as_str(), item["kind"].as_str()),
            (Some("renamed"), Some("tool")),
            "{vendor}: the cache was invalidated"
        );

        assert_eq!(
            client
                .delete(format!("/api/items/{}", ids[2]))
                .dispatch()
                .status(),
            Status::NoContent
        );
        assert_eq!(
            get(&client, &format!("/api/items/{}", ids[2])).0,
            Status::NotFound,
            "{vendor}"
        );
        assert_eq!(
            client
                .delete(format!("/api/items/{}", ids[2]))
                .dispatch()
                .status(),
            Status::NotFound
        );
        let missing = client
            .put("/api/items/nope")
            .header(ContentType::JSON)
            .body(r#"{"name":"x","kind":"tool"}"#)
            .dispatch();
        assert_eq!(missing.status(), Status::NotFound);

        let (status, body) = post(
            &client,
            "/api/items",
            json!({ "name": "item 0", "kind": "book" }),
        );
        assert_eq!(
            (status, body["error"]["reason"].as_str()),
            (Status::Conflict, Some("conflict")),
            "{vendor}"
        );
        let (status, body) = post(
            &client,
            "/api/items",
            json!({ "name": "", "kind": "gadget" }),
        );
        assert_eq!(status, Status::UnprocessableEntity);
        assert_eq!(body["error"]["details"]["fields"][0]["field"], "kind");

        let text = scrape(&client);
        assert_eq!(
            sample(&text, r#"rocket_model_inserts_total{model="item"}"#),
            Some(5.0),
            "{vendor}"
        );
        assert_eq!(
            sample(&text, r#"rocket_model_updates_total{model="item"}"#),
            Some(1.0),
            "{vendor}"
        );
        assert_eq!(
            sample(&text, r#"rocket_model_deletes_total{model="item"}"#),
            Some(1.0),
            "{vendor}"
        );
        let unique = format!(
            r#"rocket_db_refusals_total{{alias="main",type="unique_violation",vendor="{vendor}"}}"#
        );
        assert_eq!(sample(&text, &unique), Some(1.0), "{vendor}");
        assert_eq!(
            text.lines()
                .filter(|line| line.starts_with("rocket_db_errors_total{"))
                .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>(),
            0.0,
            "{vendor}: a client's duplicate is no database error"
        );
        assert!(
            sample_or_zero(&text, &db_series("rocket_db_execute_total", vendor)) >= 10.0,
            "{vendor}"
        );
        assert!(
            sample_or_zero(&text, &db_series("rocket_db_new_connections_total", vendor)) >= 1.0,
            "{vendor}"
        );
        assert!(
            sample_or_zero(
                &text,
                &db_series("rocket_db_query_duration_seconds_count", vendor)
            ) >= 10.0
        );
        let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
            .count();
        assert_eq!(
            sample(&text, r#"rocket_migrations_applied{alias="main"}"#),
            Some(shipped as f64),
            "{vendor}: every migration in migrations/ is applied"
        );
        assert_eq!(
            sample(&text, r#"rocket_migrations_unapplied{alias="main"}"#),
            Some(0.0),
            "{vendor}"
        );
        // A returned connection goes back to the pool asynchronously, so only bounds hold.
        let max = sample(&text, r#"rocket_db_pool_max_connections{alias="main"}"#).unwrap();
        let idle = sample(
            &text,
            r#"rocket_db_pool_connections{alias="main",state="idle"}"#,
        )
        .unwrap();
        let in_use = sample(
            &text,
            r#"rocket_db_pool_connections{alias="main",state="in_use"}"#,
        )
        .unwrap();
        assert!(
            max >= 1.0 && idle >= 0.0 && in_use >= 0.0 && idle + in_use <= max,
            "{vendor}: {idle} + {in_use} > {max}"
        );
    }
}

#[test]
fn reads_go_through_the_cache_and_writes_invalidate_it() {
    for backend in backends() {
        let client = backend.client(json!({}));
        let (_, item) = post(
            &client,
            "/api/items",
            json!({ "name": "cached", "kind": "other" }),
        );
        let path = format!("/api/items/{}", item["id"].as_str().unwrap());
        for _ in 0..3 {
            assert_eq!(get(&client, &path).0, Status::Ok);
        }
        let before = scrape(&client);
        let series = |name: &str| format!(r#"{name}{{backend="moka"}}"#);
        assert_eq!(
            sample(&before, &series("rocket_cache_get_total")),
            Some(3.0)
        );
        assert_eq!(
            sample(&before, &series("rocket_cache_get_misses_total")),
            Some(1.0)
        );
        assert_eq!(
            sample(&before, &series("rocket_cache_get_hits_total")),
            Some(2.0)
        );
        assert_eq!(
            sample(&before, &series("rocket_cache_get_fail_total")),
            Some(0.0)
        );
        // A cache hit runs no statement.
        let executed = sample(
            &before,
            &db_series("rocket_db_execute_total", backend.vendor()),
        )
        .unwrap();
        get(&client, &path);
        let after = scrape(&client);
        assert_eq!(
            sample(
                &after,
                &db_series("rocket_db_execute_total", backend.vendor())
            ),
            Some(executed)
        );
        assert_eq!(
            sample(&after, &series("rocket_cache_get_hits_total")),
            Some(3.0)
        );

        client.delete(&path).dispatch();
        assert_eq!(
            get(&client, &path).0,
            Status::NotFound,
            "a delete invalidates the entry"
        );
    }
}

#[test]
fn bulk_create_is_one_execute_many_and_all_or_nothing() {
    for backend in backends() {
        let vendor = backend.vendor();
        let client = backend.client(json!({}));
        let items: Vec<Value> = (0..250)
            .map(|n| json!({ "name": format!("bulk {n}"), "kind": "tool" }))
            .collect();
        let (status, body) = post(&client, "/api/items/bulk", Value::Array(items));
        assert_eq!(status, Status::Created, "{vendor}: {body}");
        assert_eq!(body["created"], 250);
        let text = scrape(&client);
        // 250 rows in statements of 100: three execute_many, no single executes for them.
        assert_eq!(
            sample(&text, &db_series("rocket_db_execute_many_total", vendor)),
            Some(3.0),
            "{vendor}"
        );
        assert_eq!(
            sample(&text, r#"rocket_model_inserts_total{model="item"}"#),
            Some(250.0),
            "bulk rows are counted"
        );

        // Row 180 clashes with an existing name: the second statement fails, so the first
        // statement's 100 rows must be rolled back too.
        let half_way: Vec<Value> = (0..250)
            .map(|n| json!({ "name": if n == 180 { "bulk 7".to_string() } else { format!("second {n}") }, "kind": "book" }))
            .collect();
        let (status, _) = post(&client, "/api/items/bulk", Value::Array(half_way));
        assert_eq!(status, Status::Conflict, "{vendor}");
        assert_eq!(
            get(&client, "/api/items").1["total"],
            250,
            "{vendor}: nothing of the failed bulk remains"
        );
        let text = scrape(&client);
        assert_eq!(
            sample(&text, r#"rocket_model_inserts_total{model="item"}"#),
            Some(250.0)
        );

        let (status, body) = post(
            &client,
            "/api/items/bulk",
            json!([{ "name": "ok", "kind": "book" }, { "name": " ", "kind": "book" }]),
        );
        assert_eq!(status, Status::UnprocessableEntity);
        assert_eq!(body["error"]["details"]["fields"][0]["field"], "[1].name");
        // A field left out is named, not reported at the document (`.`).
        let (status, body) = post(&client, "/api/items/bulk", json!([{ "name": "ok" }]));
        assert_eq!(status, Status::UnprocessableEntity);
        assert_eq!(body["error"]["details"]["fields"][0]["field"], "[0].kind");
        let too_many: Vec<Value> = (0..1001)
            .map(|n| json!({ "name": format!("x{n}"), "kind": "book" }))
            .collect();
        assert_eq!(
            post(&client, "/api/items/bulk", Value::Array(too_many)).0,
            Status::UnprocessableEntity
        );
        assert_eq!(
            post(&client, "/api/items/bulk", json!([])).0,
            Status::UnprocessableEntity
        );
    }
}

#[test]
fn an_oversized_body_is_refused_before_the_database() {
    for backend in backends() {
        let client = backend.client(json!({ "limits": { "json": 256 } }));
        let before = sample_or_zero(
            &scrape(&client),
            &db_series("rocket_db_execute_total", backend.vendor()),
        );
        let items: Vec<Value> = (0..20)
            .map(|n| json!({ "name": format!("item number {n}"), "kind": "book" }))
            .collect();
        assert_eq!(
            post(&client, "/api/items/bulk", Value::Array(items)).0,
            Status::PayloadTooLarge
        );
        let text = scrape(&client);
        assert_eq!(
            sample_or_zero(
                &text,
                &db_series("rocket_db_execute_total", backend.vendor())
            ),
            before
        );
        assert_eq!(
            sample_or_zero(
                &text,
                &db_series("rocket_db_execute_many_total", backend.vendor())
            ),
            0.0
        );
    }
}

#[rocket::async_test]
async fn two_hundred_concurrent_creates_all_land_and_are_counted_exactly() {
    use rocket::futures::future::join_all;
    use rocket::local::asynchronous::Client;
    for backend in backends() {
        let vendor = backend.vendor();
        let app = babylon_app::App::from_figment(backend.settings(json!({}))).unwrap();
        let client = Client::tracked(app.rocket().unwrap()).await.unwrap();
        let creates = (0..200).map(|n| {
            let request = client
                .post("/api/items")
                .header(ContentType::JSON)
                .body(json!({ "name": format!("c{n}"), "kind": "book" }).to_string());
            async move { request.dispatch().await.status() }
        });
        let statuses = join_all(creates).await;
        assert!(
            statuses.iter().all(|s| *s == Status::Created),
            "{vendor}: {statuses:?}"
        );
        let page: Value = client
            .get("/api/items")
            .dispatch()
            .await
            .into_json()
            .await
            .unwrap();
        assert_eq!(page["total"], 200, "{vendor}");
        let text = common::scrape_async(&client).await;
        assert_eq!(
            sample(&text, r#"rocket_model_inserts_total{model="item"}"#),
            Some(200.0),
            "{vendor}"
        );
        assert_eq!(
            sample(&text, r#"babylon_items_created_total{kind="book"}"#),
            Some(200.0),
            "{vendor}"
        );
        assert_eq!(
            sample(
                &text,
                r#"rocket_http_responses_by_status_route_method_total{method="POST",route="/api/items",status="201"}"#
            ),
            Some(200.0)
        );
        assert_eq!(sample(&text, "rocket_http_requests_in_flight"), Some(0.0));
    }
}

/// Runs the body's statements through the public database API, as a resource of the
/// application would: one by one, all in one transaction (`atomic`), or fetching their
/// `RETURNING` rows (`fetch`).
#[rocket::post("/sql?<atomic>&<fetch>", data = "<body>")]
async fn run_sql(
    atomic: bool,
    fetch: bool,
    body: babylon::JsonBody<Vec<String>>,
    db: &babylon::db::Db,
) -> Result<&'static str, babylon::JsonError> {
    let mut conn = db.connection().await?;
    let statements = &body.0;
    if atomic {
        let queries = statements.iter().map(|sql| sqlx::query(sql)).collect();
        conn.execute_many_atomically(queries).await?;
    } else {
        for sql in statements {
            if fetch {
                conn.fetch_all(sqlx::query_as::<_, (i64,)>(sql)).await?;
            } else {
                conn.execute(sqlx::query(sql)).await?;
            }
        }
    }
    Ok("done")
}

/// The query of `/test/sql`, its statements, the answer, and the inserts, updates and
/// deletes they add.
type WriteCase = (
    &'static str,
    &'static [&'static str],
    Status,
    (f64, f64, f64),
);

/// A table the application adds has its model families with no line of code: every
/// committed `INSERT`, `UPDATE` and `DELETE` is counted under the table's name, by rows,
/// and nothing that failed or was rolled back is; on SQLite and PostgreSQL alike. The
/// items table keeps the model name the service gives it.
#[test]
fn a_new_table_counts_its_committed_writes_with_no_line_of_code() {
    for backend in backends() {
        let vendor = backend.vendor();
        let app = babylon_app::App::from_figment(backend.settings(json!({}))).unwrap();
        let rocket = app
            .rocket()
            .unwrap()
            .mount("/test", rocket::routes![run_sql]);
        let client = Client::tracked(rocket).unwrap();
        let run = |query: &str, statements: &[&str]| {
            let response = client
                .post(format!("/test/sql?{query}"))
                .header(ContentType::JSON)
                .body(json!(statements).to_string())
                .dispatch();
            response.status()
        };
        let one = |statements: &[&str]| run("atomic=false&fetch=false", statements);
        let counts = || {
            let text = scrape(&client);
            let count = |change: &str| {
                sample_or_zero(
                    &text,
                    &format!("rocket_model_{change}_total{{model=\"orders\"}}"),
                )
            };
            (count("inserts"), count("updates"), count("deletes"))
        };
        assert_eq!(
            one(&["CREATE TABLE orders (id BIGINT PRIMARY KEY, n BIGINT NOT NULL UNIQUE)"]),
            Status::Ok,
            "{vendor}"
        );
        let mut expected = (0.0, 0.0, 0.0);
        let cases: &[WriteCase] = &[
            (
                "atomic=false&fetch=false",
                &["INSERT INTO orders (id, n) VALUES (1, 1), (2, 2), (3, 3)"],
                Status::Ok,
                (3.0, 0.0, 0.0),
            ),
            (
                "atomic=false&fetch=false",
                &["insert into Orders (id, n) values (4, 4)"],
                Status::Ok,
                (1.0, 0.0, 0.0),
            ),
            (
                "atomic=false&fetch=false",
                &["-- a comment\nINSERT INTO orders (id, n) VALUES (5, 1)"],
                Status::Conflict,
                (0.0, 0.0, 0.0),
            ),
            (
                "atomic=false&fetch=false",
                &["UPDATE orders SET n = n + 10 WHERE id <= 2"],
                Status::Ok,
                (0.0, 2.0, 0.0),
            ),
            (
                "atomic=false&fetch=false",
                &["UPDATE orders SET n = 0 WHERE id = 99"],
                Status::Ok,
                (0.0, 0.0, 0.0),
            ),
            (
                "atomic=true&fetch=false",
                &[
                    "INSERT INTO orders (id, n) VALUES (6, 6)",
                    "INSERT INTO orders (id, n) VALUES (7, 3)",
                ],
                Status::Conflict,
                (0.0, 0.0, 0.0),
            ),
            (
                "atomic=true&fetch=false",
                &[
                    "INSERT INTO orders (id, n) VALUES (8, 8)",
                    "DELETE FROM orders WHERE id = 8",
                ],
                Status::Ok,
                (1.0, 0.0, 1.0),
            ),
            (
                "atomic=false&fetch=true",
                &["INSERT INTO orders (id, n) VALUES (20, 20), (21, 21) RETURNING id"],
                Status::Ok,
                (2.0, 0.0, 0.0),
            ),
            (
                "atomic=false&fetch=false",
                &["DELETE FROM orders WHERE id = 1"],
                Status::Ok,
                (0.0, 0.0, 1.0),
            ),
            (
                "atomic=false&fetch=false",
                &["SELECT 1"],
                Status::Ok,
                (0.0, 0.0, 0.0),
            ),
        ];
        for (query, statements, status, (inserts, updates, deletes)) in cases {
            assert_eq!(run(query, statements), *status, "{vendor}: {statements:?}");
            expected = (
                expected.0 + inserts,
                expected.1 + updates,
                expected.2 + deletes,
            );
            assert_eq!(counts(), expected, "{vendor}: after {statements:?}");
        }
        // The rows left are what the counters say were inserted and not deleted.
        let left = (expected.0 - expected.2) as usize;
        assert_eq!(one(&["/* the rest */ DELETE FROM orders"]), Status::Ok);
        assert_eq!(
            counts(),
            (expected.0, expected.1, expected.2 + left as f64),
            "{vendor}"
        );

        // The items table keeps its model name; babylon's own table counts as no model.
        let (status, _) = post(
            &client,
            "/api/items",
            json!({ "name": "Dune", "kind": "book" }),
        );
        assert_eq!(status, Status::Created);
        let text = scrape(&client);
        assert_eq!(
            sample(&text, "rocket_model_inserts_total{model=\"item\"}"),
            Some(1.0),
            "{vendor}"
        );
        assert!(!text.contains("model=\"items\""), "{vendor}");
        assert!(!text.contains("model=\"babylon_write_probe\""), "{vendor}");
    }
}
