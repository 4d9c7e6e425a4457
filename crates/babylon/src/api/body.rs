//! `JsonBody<T>`: the JSON request-body guard for application routes, and
//! `FieldErrors`, the 422 of field-level validation.
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

/// A JSON request body parsed into `T`, as a data guard: `data = "<body>"` and a
/// parameter `body: JsonBody<T>`.
///
/// Unlike Rocket's `Json<T>`, it records how many body bytes it read (for
/// `rocket_http_request_body_bytes`), and it refuses with a [`JsonError`] that names the
/// field: 413 above the `limits.json` setting (1 MiB by default), 415 for a content type
/// that is not JSON, 422 for a body that does not fit `T` (`{"field": "items[3].name",
/// "problem": …}`), 408 for a client that takes more than 10 s to send it.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

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
            Err(problem) => reject(
                request,
                JsonError::new(
                    Status::UnprocessableEntity,
                    "invalid_body",
                    format!("the body is not valid: {}", problem.problem),
                )
                .with_details(problem.details()),
            ),
        }
    }
}

/// Why a body does not fit its type: the field (a path such as `items[3].name`, or `.`
/// for the document itself), the problem, and for a body that is not JSON at all, where
/// in it the syntax broke.
#[derive(Debug, PartialEq)]
struct BodyProblem {
    field: String,
    problem: String,
    at: Option<(usize, usize)>,
}

impl BodyProblem {
    fn details(&self) -> serde_json::Value {
        let mut field = json!({ "field": self.field, "problem": self.problem });
        if let Some((line, column)) = self.at {
            field["line"] = line.into();
            field["column"] = column.into();
        }
        json!({ "fields": [field] })
    }
}

/// Parses a whole JSON document into `T`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyProblem> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        problem(&path, error.into_inner())
    })?;
    deserializer.end().map_err(|error| problem(".", error))?;
    Ok(value)
}

/// Names the field of `error`, found at `path` (serde_path_to_error's `?` when the
/// syntax broke before any field, `.` at the document).
fn problem(path: &str, error: serde_json::Error) -> BodyProblem {
    use serde_json::error::Category;
    let problem = error.to_string();
    match error.classify() {
        // serde reports a missing field at the struct that lacks it: name the field.
        Category::Data => {
            let missing = problem
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (missing, path) {
                (Some(name), "." | "?") => name.to_string(),
                (Some(name), _) => format!("{path}.{name}"),
                (None, "?") => ".".to_string(),
                (None, _) => path.to_string(),
            };
            BodyProblem {
                field,
                problem,
                at: None,
            }
        }
        Category::Syntax | Category::Eof | Category::Io => BodyProblem {
            field: if path == "?" { "." } else { path }.to_string(),
            problem,
            at: Some((error.line(), error.column())),
        },
    }
}

/// Field-level validation after parsing: collects every problem, then refuses with one
/// 422 that names them all.
///
/// ```
/// use babylon::FieldErrors;
///
/// let mut problems = FieldErrors::default();
/// problems.check(!"".is_empty(), "name", "must not be empty");
/// problems.check(3 <= 100, "per_page", "must be at most 100");
/// let refused = problems.into_result().unwrap_err();
/// assert_eq!(refused.status.code, 422);
/// assert_eq!(refused.message, "invalid fields: name");
/// ```
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<serde_json::Value>);

impl FieldErrors {
    /// Notes that `field` has `problem` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, problem: &str) {
        if !ok {
            self.0.push(json!({ "field": field, "problem": problem }));
        }
    }

    /// `Ok` when no check failed; else the 422 `invalid_body` naming every field.
    pub fn into_result(self) -> Result<(), JsonError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // Deserialized only to provoke errors.
    struct Item {
        name: String,
        kind: String,
    }

    fn problem_of<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> BodyProblem {
        parse::<T>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_missing_field_is_named() {
        let missing = problem_of::<Item>(r#"{"kind": "book"}"#);
        assert_eq!(missing.field, "name");
        assert_eq!(missing.at, None);
        let nested = problem_of::<Vec<Item>>(r#"[{"name": "a", "kind": "b"}, {"name": "c"}]"#);
        assert_eq!(nested.field, "[1].kind");
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let wrong = problem_of::<Vec<Item>>(r#"[{"name": "a", "kind": 7}]"#);
        assert_eq!(wrong.field, "[0].kind");
    }

    #[test]
    fn broken_json_says_where() {
        let broken = problem_of::<Item>("{\n  \"name\": \"a\",\n  kind");
        assert_eq!(broken.field, ".");
        assert_eq!(broken.at, Some((3, 3)));
        let details = broken.details();
        assert_eq!(details["fields"][0]["line"], 3);
        assert_eq!(details["fields"][0]["column"], 3);
        let truncated = problem_of::<Item>(r#"{"name": "a""#);
        assert_eq!(truncated.at, Some((1, 12)));
        let trailing = problem_of::<Item>(r#"{"name": "a", "kind": "b"} x"#);
        assert_eq!((trailing.field.as_str(), trailing.at), (".", Some((1, 28))));
    }
}
