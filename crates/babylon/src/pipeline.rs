//! The one request fairing: the HTTP observer sees each request as it arrived, then the
//! gatekeeper screens it; at the response, the observer records it.
//!
//! One fairing rather than one per concern, for two reasons:
//! - the order is a property of this type, not of `attach` calls: a refused request is
//!   re-routed, so an observer that ran after the gatekeeper would record the rewritten
//!   method and miss the arrival time;
//! - Rocket boxes every fairing callback's future, so each request pays one allocation
//!   per hook instead of one per fairing and hook (measured in BENCHMARKS.md).

use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Build, Data, Orbit, Request, Response, Rocket};

use crate::blocking::Gatekeeper;
use crate::observe::HttpObserver;

pub(crate) struct RequestPipeline {
    /// `None` when metrics are off: then the fairing asks for no response callback at all.
    observer: Option<HttpObserver>,
    gatekeeper: Gatekeeper,
}

impl RequestPipeline {
    pub(crate) fn new(observer: Option<HttpObserver>, gatekeeper: Gatekeeper) -> Self {
        RequestPipeline {
            observer,
            gatekeeper,
        }
    }
}

#[rocket::async_trait]
impl Fairing for RequestPipeline {
    fn info(&self) -> Info {
        let mut kind = Kind::Ignite | Kind::Liftoff;
        if self.observer.is_some() || !self.gatekeeper.is_idle() {
            kind = kind | Kind::Request;
        }
        if self.observer.is_some() {
            kind = kind | Kind::Response;
        }
        Info {
            name: "babylon request pipeline (metrics, blocking)",
            kind,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> rocket::fairing::Result {
        Ok(rocket.mount("/", Gatekeeper::routes()))
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        self.gatekeeper.start_forgetting_idle_clients(rocket);
    }

    async fn on_request(&self, request: &mut Request<'_>, _: &mut Data<'_>) {
        if let Some(observer) = &self.observer {
            observer.arrive(request);
        }
        if let Err(reason) = self.gatekeeper.verdict(request).await {
            self.gatekeeper.refuse(request, reason);
        }
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        if let Some(observer) = &self.observer {
            observer.finish(request, response).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::{ClientAddr, Policy};
    use crate::metrics::Metrics;
    use crate::observe::{ApiFamilies, HttpFamilies};
    use crate::settings::{BlockingSettings, MetricsSettings};

    fn observer() -> HttpObserver {
        let settings = MetricsSettings::default();
        let metrics = Metrics::new(&settings).unwrap();
        let http = HttpFamilies::register(metrics.registry(), &settings).unwrap();
        let api = ApiFamilies::register(metrics.registry()).unwrap();
        HttpObserver::new(http, api, ClientAddr::default(), &settings)
    }

    fn gatekeeper(blocking: bool) -> Gatekeeper {
        let policy =
            blocking.then(|| std::sync::Arc::new(Policy::new(&BlockingSettings::default(), None)));
        Gatekeeper::new(ClientAddr::default(), policy, None, Vec::new())
    }

    fn kind(pipeline: RequestPipeline) -> Kind {
        pipeline.info().kind
    }

    #[test]
    fn with_everything_off_rocket_calls_no_babylon_code_per_request() {
        let kind = kind(RequestPipeline::new(None, gatekeeper(false)));
        assert!(!kind.is(Kind::Request) && !kind.is(Kind::Response));
        assert!(kind.is(Kind::Ignite), "the blocked route is still mounted");
    }

    #[test]
    fn blocking_alone_screens_requests_but_records_no_responses() {
        let kind = kind(RequestPipeline::new(None, gatekeeper(true)));
        assert!(kind.is(Kind::Request) && !kind.is(Kind::Response));
    }

    #[test]
    fn metrics_observe_both_ends_of_a_request() {
        for blocking in [false, true] {
            let kind = kind(RequestPipeline::new(Some(observer()), gatekeeper(blocking)));
            assert!(kind.is(Kind::Request) && kind.is(Kind::Response));
        }
    }
}
