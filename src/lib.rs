//! The babylon service: the [`babylon`] library attached to a Rocket that serves the
//! template's example resource, `/api/items` ([`items`]).
//!
//! This crate uses only the library's public API, so that everything the example
//! resource does, a resource of yours can do: add a module beside [`items`], list its
//! routes in [`routes`], and its migrations in `migrations/`
//! (docs/guide/adding-a-resource.md).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use babylon::{Babylon, StartError};
use rocket::{Build, Rocket, Route};

pub mod items;

/// Every migration of `migrations/`, embedded at build time, applied at start-up.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();

/// The application's routes: each resource's.
pub fn routes() -> Vec<Route> {
    [items::routes()].concat()
}

/// The service: babylon set up from the settings, for the application's routes.
pub struct App {
    babylon: Babylon,
}

impl App {
    /// Reads Rocket.toml (profile from `ROCKET_PROFILE`) and the environment.
    pub fn from_env() -> Result<App, StartError> {
        babylon::settings::check_config_file()?;
        Self::from_figment(babylon::settings::figment())
    }

    /// Reads and validates the settings of `figment` (see
    /// [`babylon::settings::figment_from`] for one that ignores the working directory's
    /// Rocket.toml), refusing those that conflict with [`routes`].
    pub fn from_figment(figment: figment::Figment) -> Result<App, StartError> {
        let babylon = Babylon::for_routes(figment, &routes())?
            .with_migrations(&MIGRATIONS)
            .with_model_name("items", items::store::MODEL)
            .with_families::<items::ItemMetrics>()?;
        Ok(App { babylon })
    }

    /// The validated settings.
    pub fn settings(&self) -> &babylon::settings::Settings {
        self.babylon.settings()
    }

    /// babylon, as set up from the settings (the runtime, the export banner).
    pub fn babylon(&self) -> &Babylon {
        &self.babylon
    }

    /// Builds the Rocket: the application's routes and state, with babylon attached.
    /// With metrics and export enabled this binds the export port now, so that a taken
    /// range fails here, before anything is served.
    pub fn rocket(&self) -> Result<Rocket<Build>, StartError> {
        let babylon = &self.babylon;
        let rocket = rocket::custom(babylon.figment().clone())
            .mount("/", babylon.instrument(routes()))
            .manage(items::ItemsCache::new(babylon.caches()));
        babylon.attach(rocket)
    }
}
