//! The metrics route on the main port. Who may read it is decided earlier, by the
//! blocking fairing, with the same [`super::MetricsAccess`] as the export listener.

use rocket::http::{ContentType, Method};
use rocket::route::{Handler, Outcome};
use rocket::{Data, Request, Route};

use super::{Metrics, TEXT_CONTENT_TYPE};

/// The route serving `metrics` at `path`.
pub fn route(path: &str, metrics: Metrics) -> Route {
    Route::new(Method::Get, path, MetricsHandler(metrics))
}

#[derive(Clone)]
struct MetricsHandler(Metrics);

#[rocket::async_trait]
impl Handler for MetricsHandler {
    async fn handle<'r>(&self, request: &'r Request<'_>, _: Data<'r>) -> Outcome<'r> {
        let content_type = ContentType::parse_flexible(TEXT_CONTENT_TYPE).expect("valid constant");
        Outcome::from(request, (content_type, self.0.render()))
    }
}
