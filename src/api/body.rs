//! `JsonBody<T>`: the JSON request-body guard of our routes.
//!
//! Unlike Rocket's `Json<T>` it records how many body bytes it actually read (for
//! `rocket_http_request_body_bytes`), and its refusals are JSON errors that name the
//! field: 413 for a body over the `json` limit, 422 for a body that does not fit `T`,
//! 415 for a non-JSON content type.

use rocket::data::{self, Data, FromData, ToByteUnit};
use rocket::http::Status;
use rocket::serde::json::serde_json::json;
use rocket::serde::DeserializeOwned;
use rocket::Request;

use crate::request::JsonError;
use crate::request::RequestRecord;

/// How long a client may take to send its whole body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bodies above the `limits.json` setting (default 1 MiB) are refused with 413.
const DEFAULT_LIMIT_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
pub(super) struct JsonBody<T>(pub T);

fn reject<'r, T>(request: &'r Request<'_>, error: JsonError) -> data::Outcome<'r, T, ()> {
    let status = error.status;
    RequestRecord::of(request).set_rejection(error);
    data::Outcome::Error((status, ()))
}

#[rocket::async_trait]
impl<'r, T: DeserializeOwned> FromData<'r> for JsonBody<T> {
    type Error = ();

    async fn from_data(request: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self, ()> {
        if request.content_type().is_some_and(|ct| !ct.is_json()) {
            return reject(
                request,
                JsonError::new(
                    Status::UnsupportedMediaType,
                    "unsupported_media_type",
                    "send the body as application/json",
                ),
            );
        }
        let limit = request
            .limits()
            .get("json")
            .unwrap_or(DEFAULT_LIMIT_BYTES.bytes());
        // A client that stops sending half way must not hold the request forever (Rocket 0.5
        // has no read timeout of its own).
        let read = rocket::tokio::time::timeout(BODY_READ_TIMEOUT, data.open(limit).into_bytes());
        let Ok(read) = read.await else {
            return reject(
                request,
                JsonError::new(
                    Status::RequestTimeout,
                    "body_timeout",
                    format!(
                        "the body did not arrive within {} s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                ),
            );
        };
        let body = match read {
            Ok(body) => body,
            Err(error) => {
                return reject(
                    request,
                    JsonError::new(
                        Status::BadRequest,
                        "unreadable_body",
                        format!("the request body could not be read: {error}"),
                    ),
                );
            }
        };
        RequestRecord::of(request).add_body_bytes_read(body.n.written as u64);
        if !body.is_complete() {
            return reject(
                request,
                JsonError::new(
                    Status::PayloadTooLarge,
                    "body_too_large",
                    format!("the body exceeds the limit of {limit}"),
                ),
            );
        }
        match parse(&body) {
            Ok(value) => data::Outcome::Success(JsonBody(value)),
            Err((field, problem)) => reject(
                request,
                JsonError::new(
                    Status::UnprocessableEntity,
                    "invalid_body",
                    format!("the body is not valid: {problem}"),
                )
                .with_details(json!({ "fields": [{ "field": field, "problem": problem }] })),
            ),
        }
    }
}

/// Parses a whole JSON document into `T`; on failure, the path of the offending field
/// (`.` for the document itself) and the problem.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, (String, String)> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| (error.path().to_string(), error.inner().to_string()))?;
    deserializer
        .end()
        .map_err(|error| (".".to_string(), error.to_string()))?;
    Ok(value)
}

/// Field-level validation after parsing: collects every problem, then refuses with 422.
#[derive(Default)]
pub(super) struct FieldErrors(Vec<serde_json::Value>);

impl FieldErrors {
    pub(super) fn check(&mut self, ok: bool, field: &str, problem: &str) {
        if !ok {
            self.0.push(json!({ "field": field, "problem": problem }));
        }
    }

    pub(super) fn into_result(self) -> Result<(), JsonError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = self.0.iter().filter_map(|e| e["field"].as_str()).collect();
        Err(JsonError::new(
            Status::UnprocessableEntity,
            "invalid_body",
            format!("invalid fields: {}", fields.join(", ")),
        )
        .with_details(json!({ "fields": self.0 })))
    }
}
