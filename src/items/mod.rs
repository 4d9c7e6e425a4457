//! `/api/items`: the example resource, stored in the database and read through the cache.
//! `create` also shows a custom metric, `babylon_items_created_total{kind}`: declared in
//! [`ItemMetrics`], registered at start-up, recorded in one line.
//!
//! Written against babylon's public API only: the handlers, the cache and the SQL
//! ([`store`]) are what a resource of your own has.

use std::sync::Arc;

use rocket::http::Status;
use rocket::response::status::{Created, NoContent};
use rocket::serde::json::Json;
use rocket::{Route, State};
use serde::{Deserialize, Serialize};

use babylon::cache::{Caches, ReadCache};
use babylon::db::{Db, DbError};
use babylon::metrics::{Counter, Families, LabelSet};
use babylon::{FieldErrors, JsonBody, JsonError};

use store::{Item, ItemFields, ItemKind};

pub mod store;

/// Longest accepted item name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Largest page of a listing.
pub const MAX_PER_PAGE: u32 = 100;
/// The page size of a listing that names none.
pub const DEFAULT_PER_PAGE: u32 = 20;
/// Most items one bulk create may carry.
pub const MAX_BULK_ITEMS: usize = 1000;

/// The resource's routes.
pub fn routes() -> Vec<Route> {
    rocket::routes![list, get, create, create_many, update, delete]
}

/// The resource's own families, registered at start-up
/// (`Babylon::with_families::<ItemMetrics>()`).
#[derive(Families, Clone)]
#[families(prefix = "babylon_items")]
pub struct ItemMetrics {
    /// Items created, by kind.
    created_total: Counter<KindLabel>,
}

/// The `kind` label.
#[derive(LabelSet)]
struct KindLabel {
    kind: ItemKind,
}

/// A create or update body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// Trimmed; 1 to 200 characters, no control characters.
    pub name: String,
    /// What the item is.
    pub kind: ItemKind,
}

impl NewItem {
    /// Trims the name and collects its problems under `field_prefix` (`""` or `"[3]."`).
    fn validate(self, field_prefix: &str, problems: &mut FieldErrors) -> ItemFields {
        let name = self.name.trim().to_string();
        let field = format!("{field_prefix}name");
        problems.check(!name.is_empty(), &field, "must not be empty");
        // PostgreSQL refuses NUL in text, and control characters have no place in a name.
        problems.check(
            !name.chars().any(char::is_control),
            &field,
            "must not contain control characters",
        );
        problems.check(
            name.chars().count() <= MAX_NAME_CHARS,
            &field,
            "must be at most 200 characters",
        );
        ItemFields {
            name,
            kind: self.kind,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    /// The items of the page, oldest first.
    pub items: Vec<Item>,
    /// The page's number, from 1.
    pub page: u32,
    /// Items per page.
    pub per_page: u32,
    /// Items in all.
    pub total: i64,
}

/// Read caches of the resource, invalidated by every write: for this process (the memory
/// backend) or for every worker (the Redis one). Managed as Rocket state.
pub struct ItemsCache {
    by_id: ReadCache<String, Item>,
    pages: ReadCache<(u32, u32), Arc<Page>>,
}

impl ItemsCache {
    /// The resource's caches, of the `cache.*` settings' backend.
    pub fn new(caches: &Caches) -> Self {
        ItemsCache {
            by_id: caches.read_cache("items:by_id"),
            pages: caches.read_cache("items:pages"),
        }
    }

    async fn written(&self, id: &str) {
        self.by_id.invalidate(&id.to_string()).await;
        self.pages.invalidate_all().await;
    }
}

/// The `<id>` of an item's path: a UUID, the form every item id has. Anything else names
/// no item and is answered 404 before any statement runs: PostgreSQL refuses some of
/// what a client can put in a path (a NUL) with an error, which would answer a typo
/// with 500 and count a database error.
pub struct ItemId(String);

impl ItemId {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'a> rocket::request::FromParam<'a> for ItemId {
    /// The segment as sent, for the 404's message.
    type Error = &'a str;

    fn from_param(param: &'a str) -> Result<Self, Self::Error> {
        // Stored ids are hyphenated lower case; any spelling of the same UUID finds it.
        // The stored spelling itself, the usual case, is taken as it is: formatting a
        // UUID costs about as much as the rest of the read's handler.
        let id = uuid::Uuid::try_parse(param).map_err(|_| param)?;
        let canonical = param.len() == 36 && !param.bytes().any(|b| b.is_ascii_uppercase());
        Ok(ItemId(match canonical {
            true => param.to_owned(),
            false => id.hyphenated().to_string(),
        }))
    }
}

fn not_found(id: &str) -> JsonError {
    JsonError::new(
        Status::NotFound,
        "not_found",
        format!("no item with id {id}"),
    )
}

#[rocket::get("/api/items?<page>&<per_page>")]
async fn list(
    page: Option<&str>,
    per_page: Option<&str>,
    db: &Db,
    cache: &State<ItemsCache>,
) -> Result<Json<Arc<Page>>, JsonError> {
    let mut problems = FieldErrors::default();
    let mut number =
        |field: &str, text: Option<&str>, default: u32| match text.map(str::parse::<u32>) {
            None => default,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                problems.check(false, field, "must be a whole number");
                default
            }
        };
    let (page, per_page) = (
        number("page", page, 1),
        number("per_page", per_page, DEFAULT_PER_PAGE),
    );
    problems.check(page >= 1, "page", "must be at least 1");
    problems.check(
        (1..=MAX_PER_PAGE).contains(&per_page),
        "per_page",
        "must be between 1 and 100",
    );
    problems.into_result()?;
    let load = async {
        let mut conn = db.connection().await?;
        let offset = i64::from(page - 1) * i64::from(per_page);
        let (items, total) = store::list(&mut conn, offset, i64::from(per_page)).await?;
        Ok::<_, DbError>(Some(Arc::new(Page {
            items,
            page,
            per_page,
            total,
        })))
    };
    let found = cache.pages.get_or_load((page, per_page), load).await?;
    Ok(Json(found.expect("a page always loads")))
}

#[rocket::get("/api/items/<id>")]
async fn get(
    id: Result<ItemId, &str>,
    db: &Db,
    cache: &State<ItemsCache>,
) -> Result<Json<Item>, JsonError> {
    let id = id.map_err(not_found)?;
    let load = async {
        let mut conn = db.connection().await?;
        store::get(&mut conn, id.as_str()).await
    };
    cache
        .by_id
        .get_or_load(id.as_str().to_string(), load)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id.as_str()))
}

#[rocket::post("/api/items", data = "<body>")]
async fn create(
    body: JsonBody<NewItem>,
    db: &Db,
    cache: &State<ItemsCache>,
    metrics: &State<ItemMetrics>,
) -> Result<Created<Json<Item>>, JsonError> {
    let mut problems = FieldErrors::default();
    let fields = body.0.validate("", &mut problems);
    problems.into_result()?;
    let mut conn = db.connection().await?;
    let item = store::insert(&mut conn, fields).await?;
    cache.written(&item.id).await;

    metrics
        .created_total
        .with(&KindLabel { kind: item.kind })
        .inc();

    Ok(Created::new(format!("/api/items/{}", item.id)).body(Json(item)))
}

/// The answer to a bulk create.
#[derive(Debug, Serialize)]
pub struct CreatedMany {
    /// How many items were created.
    pub created: usize,
    /// The items, in the order sent.
    pub items: Vec<Item>,
}

/// Creates every item in one transaction, or none.
#[rocket::post("/api/items/bulk", data = "<body>")]
async fn create_many(
    body: JsonBody<Vec<NewItem>>,
    db: &Db,
    cache: &State<ItemsCache>,
) -> Result<Created<Json<CreatedMany>>, JsonError> {
    let mut problems = FieldErrors::default();
    let count = body.0.len();
    problems.check(
        (1..=MAX_BULK_ITEMS).contains(&count),
        "items",
        "send between 1 and 1000 items",
    );
    let all: Vec<ItemFields> = body
        .0
        .into_iter()
        .enumerate()
        .map(|(i, new)| new.validate(&format!("[{i}]."), &mut problems))
        .collect();
    problems.into_result()?;
    let mut conn = db.connection().await?;
    let created = store::insert_many(&mut conn, all).await?;
    cache.pages.invalidate_all().await;
    Ok(Created::new("/api/items").body(Json(CreatedMany {
        created: created.len(),
        items: created,
    })))
}

#[rocket::put("/api/items/<id>", data = "<body>")]
async fn update(
    id: Result<ItemId, &str>,
    body: JsonBody<NewItem>,
    db: &Db,
    cache: &State<ItemsCache>,
) -> Result<Json<Item>, JsonError> {
    let id = id.map_err(not_found)?;
    let mut problems = FieldErrors::default();
    let fields = body.0.validate("", &mut problems);
    problems.into_result()?;
    let mut conn = db.connection().await?;
    let updated = store::update(&mut conn, id.as_str(), fields).await?;
    cache.written(id.as_str()).await;
    updated.map(Json).ok_or_else(|| not_found(id.as_str()))
}

#[rocket::delete("/api/items/<id>")]
async fn delete(
    id: Result<ItemId, &str>,
    db: &Db,
    cache: &State<ItemsCache>,
) -> Result<NoContent, JsonError> {
    let id = id.map_err(not_found)?;
    let mut conn = db.connection().await?;
    let deleted = store::delete(&mut conn, id.as_str()).await?;
    cache.written(id.as_str()).await;
    if deleted {
        Ok(NoContent)
    } else {
        Err(not_found(id.as_str()))
    }
}
