//! What babylon adds around each handler: panics told apart from other server errors, and
//! the request's trace made [current](crate::trace::current) while the handler runs.
//!
//! Rocket catches a panicking handler and answers 500, but a fairing cannot see why a
//! response is a 500. [`instrument`] wraps each route's handler: when the handler panics,
//! a guard dropped during the unwinding notes `panic` in the request's record, and the
//! panic continues, so Rocket's own handling (500 catcher) is unchanged. While the
//! handler's future is polled, the request's trace context is the thread's current one,
//! so that the database and Redis durations it causes carry exemplars of it.
//!
//! ```
//! # use rocket::get;
//! #[get("/boom")]
//! fn boom() -> &'static str { panic!("boom") }
//!
//! let routes = babylon::instrument(rocket::routes![boom]);
//! # let _ = routes;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use rocket::route::{BoxFuture, Handler, Outcome};
use rocket::{Data, Request, Route};

use crate::request::RequestRecord;
use crate::trace::{self, TraceContext};

/// The `type` label of `rocket_http_exceptions_by_type_total` for a panicking handler.
pub(super) const PANIC: &str = "panic";

/// Wraps every route's handler so that its panics are counted as `type="panic"` and the
/// request's trace is [current](crate::trace::current) while it runs.
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

// Written out rather than with `async_trait`, as Rocket does for closures: the inner
// handler's boxed future is polled in place, so the request data and the outcome (each
// hundreds of bytes) are not copied into and out of a second async state machine
// (callgrind: 565 fewer instructions per request than `catch_unwind` in an async fn,
// BENCHMARKS.md).
impl Handler for PanicRecorder {
    fn handle<'r, 'life0, 'life1, 'async_trait>(
        &'life0 self,
        request: &'r Request<'life1>,
        data: Data<'r>,
    ) -> BoxFuture<'async_trait, Outcome<'r>>
    where
        'r: 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(PanicWatch {
            handler: self.0.handle(request, data),
            request,
            trace: RequestRecord::of(request).trace().copied(),
        })
    }
}

/// A handler's future that notes in the request's record when polling it panics, and
/// makes the request's trace current while it is polled.
struct PanicWatch<'a, 'r, 'c> {
    handler: BoxFuture<'a, Outcome<'r>>,
    request: &'a Request<'c>,
    trace: Option<TraceContext>,
}

impl<'r> Future for PanicWatch<'_, 'r, '_> {
    type Output = Outcome<'r>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<'r>> {
        // Dropped at the end of this call, or during the unwinding if the handler panics.
        let _guard = PanicGuard(self.request);
        let _trace = trace::enter(self.trace);
        self.handler.as_mut().poll(cx)
    }
}

/// Notes a panic in the request's record if dropped while the thread unwinds.
struct PanicGuard<'a, 'r>(&'a Request<'r>);

impl Drop for PanicGuard<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            RequestRecord::of(self.0).set_exception(PANIC);
        }
    }
}
