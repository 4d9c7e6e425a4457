//! `/api/orders`: the resource of docs/guide/adding-a-resource.md, with a labeled counter,
//! a timed block, a gauge, and model metrics for free.

use babylon::db::Db;
use babylon::metrics::{Counter, Families, Gauge, Histogram, LabelSet, LabelValue};
use babylon::{FieldErrors, JsonBody, JsonError};
use rocket::response::status::Created;
use rocket::serde::json::Json;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};

pub(crate) fn routes() -> Vec<Route> {
    rocket::routes![create, get]
}

#[derive(Families, Clone)]
#[families(prefix = "shop")]
pub(crate) struct OrderMetrics {
    /// Orders placed, by kind.
    orders_placed_total: Counter<ByKind>,
    /// Seconds to store an order.
    order_store_seconds: Histogram,
    /// Orders stored.
    orders_stored: Gauge,
}

#[derive(LabelSet)]
struct ByKind {
    kind: OrderKind,
}

#[derive(Clone, Copy, Serialize, Deserialize, LabelValue)]
#[serde(rename_all = "snake_case")]
enum OrderKind {
    Retail,
    Wholesale,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: i64,
    kind: OrderKind,
}

#[derive(Serialize, sqlx::FromRow)]
struct Order {
    id: String,
    item: String,
    quantity: i64,
    kind: String,
}

#[rocket::post("/api/orders", data = "<body>")]
async fn create(
    body: JsonBody<NewOrder>,
    db: &Db,
    m: &State<OrderMetrics>,
) -> Result<Created<Json<Order>>, JsonError> {
    let new = body.0;
    let mut problems = FieldErrors::default();
    problems.check(!new.item.trim().is_empty(), "item", "must not be empty");
    problems.check(new.quantity > 0, "quantity", "must be at least 1");
    problems.into_result()?;
    let order = Order {
        id: uuid::Uuid::now_v7().to_string(),
        item: new.item.trim().to_string(),
        quantity: new.quantity,
        kind: new.kind.label_value().into_owned(),
    };
    let insert =
        sqlx::query("INSERT INTO orders (id, item, quantity, kind) VALUES ($1, $2, $3, $4)")
            .bind(order.id.clone())
            .bind(order.item.clone())
            .bind(order.quantity)
            .bind(order.kind.clone());
    let mut conn = db.connection().await?;
    let store = conn.execute(insert);
    m.order_store_seconds.time(store).await?;
    m.orders_placed_total.with(&ByKind { kind: new.kind }).inc();
    let count = sqlx::query_as("SELECT COUNT(*) FROM orders");
    let (stored,): (i64,) = conn.fetch_one(count).await?;
    m.orders_stored.set(stored as f64);
    Ok(Created::new(format!("/api/orders/{}", order.id)).body(Json(order)))
}

#[rocket::get("/api/orders/<id>")]
async fn get(id: &str, db: &Db) -> Result<Option<Json<Order>>, JsonError> {
    let query = sqlx::query_as("SELECT id, item, quantity, kind FROM orders WHERE id = $1");
    let mut conn = db.connection().await?;
    let order = conn.fetch_optional(query.bind(id.to_string())).await?;
    Ok(order.map(Json))
}
