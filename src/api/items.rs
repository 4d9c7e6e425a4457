//! `/api/items`: the example resource. It also shows a custom metric,
//! `babylon_items_created_total{kind}`, recorded in a few lines inside the handler.
//!
//! Items live in memory for now; the database layer replaces [`ItemStore`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use rocket::http::Status;
use rocket::response::status::Created;
use rocket::serde::json::Json;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};

use super::body::{FieldErrors, JsonBody};
use super::error::JsonError;
use crate::metrics::Metrics;

/// Longest accepted item name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Book,
    Tool,
    Other,
}

impl ItemKind {
    fn label(self) -> &'static str {
        match self {
            ItemKind::Book => "book",
            ItemKind::Tool => "tool",
            ItemKind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub id: u64,
    pub name: String,
    pub kind: ItemKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    pub name: String,
    pub kind: ItemKind,
}

/// In-memory items, keyed by id.
#[derive(Default)]
pub struct ItemStore {
    items: Mutex<BTreeMap<u64, Item>>,
}

impl ItemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Item>> {
        self.items
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn routes() -> Vec<Route> {
    rocket::routes![list, get, create]
}

#[rocket::get("/api/items")]
fn list(store: &State<ItemStore>) -> Json<Vec<Item>> {
    Json(store.lock().values().cloned().collect())
}

#[rocket::get("/api/items/<id>")]
fn get(id: u64, store: &State<ItemStore>) -> Result<Json<Item>, JsonError> {
    store.lock().get(&id).cloned().map(Json).ok_or_else(|| {
        JsonError::new(
            Status::NotFound,
            "not_found",
            format!("no item with id {id}"),
        )
    })
}

#[rocket::post("/api/items", data = "<body>")]
fn create(
    body: JsonBody<NewItem>,
    store: &State<ItemStore>,
    metrics: &State<Metrics>,
) -> Result<Created<Json<Item>>, JsonError> {
    let JsonBody(new) = body;
    let name = new.name.trim().to_string();
    let mut problems = FieldErrors::default();
    problems.check(!name.is_empty(), "name", "must not be empty");
    problems.check(
        name.chars().count() <= MAX_NAME_CHARS,
        "name",
        "must be at most 200 characters",
    );
    problems.into_result()?;

    let item = {
        let mut items = store.lock();
        let id = items.keys().next_back().map_or(1, |last| last + 1);
        let item = Item {
            id,
            name,
            kind: new.kind,
        };
        items.insert(id, item.clone());
        item
    };

    // A custom metric: registered on first use, then on every metrics endpoint.
    metrics
        .custom()
        .counter(
            "babylon_items_created_total",
            "Items created, by kind.",
            &["kind"],
        )
        .map_err(|error| {
            JsonError::new(
                Status::InternalServerError,
                "metrics_error",
                error.to_string(),
            )
        })?
        .with_label_values(&[item.kind.label()])
        .inc();

    Ok(Created::new(format!("/api/items/{}", item.id)).body(Json(item)))
}
