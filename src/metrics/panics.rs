//! Telling panics apart from other server errors.
//!
//! Rocket catches a panicking handler and answers 500, but a fairing cannot see why a
//! response is a 500. [`instrument`] wraps each route's handler: when the handler panics,
//! the wrapper notes `panic` in the request's record and lets the panic continue, so
//! Rocket's own handling (log line, 500 catcher) is unchanged.
//!
//! ```
//! # use rocket::get;
//! #[get("/boom")]
//! fn boom() -> &'static str { panic!("boom") }
//!
//! let routes = babylon::metrics::panics::instrument(rocket::routes![boom]);
//! # let _ = routes;
//! ```

use std::panic::AssertUnwindSafe;

use rocket::futures::FutureExt;
use rocket::route::{Handler, Outcome};
use rocket::{Data, Request, Route};

use crate::request_record::RequestRecord;

/// The `type` label of `rocket_http_exceptions_by_type_total` for a panicking handler.
pub const PANIC: &str = "panic";

/// Wraps every route's handler so that its panics are counted as `type="panic"`.
pub fn instrument(routes: Vec<Route>) -> Vec<Route> {
    routes
        .into_iter()
        .map(|mut route| {
            route.handler = Box::new(PanicRecorder(route.handler));
            route
        })
        .collect()
}

#[derive(Clone)]
struct PanicRecorder(Box<dyn Handler>);

#[rocket::async_trait]
impl Handler for PanicRecorder {
    async fn handle<'r>(&self, request: &'r Request<'_>, data: Data<'r>) -> Outcome<'r> {
        let result = AssertUnwindSafe(self.0.handle(request, data))
            .catch_unwind()
            .await;
        match result {
            Ok(outcome) => outcome,
            Err(panic) => {
                RequestRecord::of(request).set_exception(PANIC);
                std::panic::resume_unwind(panic)
            }
        }
    }
}
