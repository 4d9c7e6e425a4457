//! An application that is not babylon's service: a Rocket app of its own (the guide's
//! `orders` resource) that attaches the babylon library. It gets every family, the
//! health routes, the deny list and rate limit, and the export port, from the same
//! settings (Rocket.toml, `ROCKET_*`, `BABYLON_*`) as the service. The end-to-end
//! Prometheus test scrapes it beside the service's workers.
//!
//! `ROCKET_PORT=8090 BABYLON_METRICS__EXPORT__PORT_RANGE=9190-9199 cargo run --example shop`

#[path = "../docs/guide/orders.rs"]
mod orders;

use babylon::Babylon;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("docs/guide/migrations");

#[rocket::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let figment = babylon::settings::figment();
    let _logging = babylon::logging::Logging::start(&figment);
    let babylon = Babylon::for_routes(figment, &orders::routes())?
        .with_migrations(&MIGRATIONS)
        .with_families::<orders::OrderMetrics>()?;
    let rocket =
        rocket::custom(babylon.figment().clone()).mount("/", babylon.instrument(orders::routes()));
    babylon.attach(rocket)?.launch().await?;
    Ok(())
}
