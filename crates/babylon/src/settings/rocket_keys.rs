//! Rocket's own keys and `databases.main` (rocket_db_pools'): read by those crates, and
//! checked here, so that a value they would take and then break on (a runtime that cannot
//! start, a pool that can hold no connection, an overflowing timeout) or silently ignore
//! (Rocket's TLS, which is not built in) stops start-up naming its key.

use figment::value::{Dict, Value};
use figment::Provider;

use super::errors::Problems;

/// Most `workers` (async threads): more than a few per core buys nothing, and tens of
/// thousands of threads abort the process.
pub const MAX_WORKERS: usize = 1024;
/// Most `max_blocking` threads.
pub const MAX_BLOCKING: usize = 100_000;
/// Most `databases.main.max_connections`: rocket_db_pools' default for the most
/// `workers` (4 each). Each is a server process on PostgreSQL, whose own default limit is
/// 100; far more is a typo (4294967296 asked for 240 GB).
pub const MAX_DATABASE_CONNECTIONS: usize = 4 * MAX_WORKERS;
/// Most `databases.main.connect_timeout` and `idle_timeout`, in seconds: a day.
pub const MAX_DATABASE_SECONDS: u64 = 24 * 60 * 60;

/// Top-level keys that Rocket or its other components would read and babylon does not
/// honour (features not built in, a deprecated name): each is refused with what to do
/// instead, rather than accepted and ignored.
pub(super) const NOT_BUILT_IN: [(&str, &str); 5] = [
    (
        "log",
        "is Rocket 0.5's old name of `log_level`, which Rocket would only warn about; babylon's log settings are under `logging` (`logging.format`, `logging.requests`)",
    ),
    (
        "tls",
        "babylon's main port serves plain HTTP (Rocket's TLS is not built in), so this would be ignored; put a TLS-terminating proxy in front of it (docs/security.md)",
    ),
    (
        "mtls",
        "babylon's main port serves plain HTTP (Rocket's TLS is not built in), so client certificates cannot be checked there; let the TLS-terminating proxy check them (docs/security.md)",
    ),
    (
        "secret_key",
        "babylon uses no private cookies (Rocket's `secrets` is not built in), so this key would be ignored; remove it",
    ),
    (
        "template_dir",
        "babylon renders no templates, so this key would be ignored; remove it",
    ),
];

/// Rocket's keys as Rocket parsed them (`config`) and as given (`values`, read from
/// `figment`).
pub(super) fn check_rocket(
    config: &rocket::Config,
    values: &Dict,
    figment: &figment::Figment,
    problems: &mut Problems,
) {
    // babylon finds the client itself (the TCP peer, or a trusted proxy's header), so
    // Rocket's header would change nothing: only `false`, or Rocket's own default, is
    // not a setting the user would expect to work.
    let defaults = rocket::Config::default().metadata().name;
    let ip_header_given = figment
        .find_metadata("ip_header")
        .is_some_and(|metadata| metadata.name != defaults);
    if ip_header_given && config.ip_header.is_some() {
        problems.invalid(
            "ip_header",
            "babylon takes the client's address from the connection, or from a header only when the peer is in `blocking.trusted_proxies`, so this header would be ignored; set `ip_header = false`",
        );
    }
    if !(1..=MAX_WORKERS).contains(&config.workers) {
        problems.invalid(
            "workers",
            format!(
                "{} async worker threads: give 1 to {MAX_WORKERS} (the default is one per core)",
                config.workers
            ),
        );
    }
    if !(1..=MAX_BLOCKING).contains(&config.max_blocking) {
        problems.invalid(
            "max_blocking",
            format!(
                "{} blocking threads: give 1 to {MAX_BLOCKING} (the default is 512)",
                config.max_blocking
            ),
        );
    }
    if let Some(Value::Dict(_, limits)) = values.get("limits") {
        for (name, value) in limits {
            let negative = match value {
                Value::Num(_, number) => {
                    number.to_i128().is_some_and(|n| n < 0)
                        || number.to_f64().is_some_and(|f| f < 0.0)
                }
                _ => false,
            };
            if negative {
                problems.invalid(
                    format!("limits.{name}"),
                    "a size limit cannot be negative: give bytes (`1048576`) or a size (`\"1 MiB\"`)",
                );
            }
        }
    }
    let temp_dir = config.temp_dir.relative();
    if !temp_dir.is_dir() {
        problems.invalid(
            "temp_dir",
            format!("{} is not an existing directory", temp_dir.display()),
        );
    }
}

/// The profile `ROCKET_PROFILE` selects must be one Rocket knows (`debug`, `release`) or
/// one the settings define: a misspelt one (`relase`) would select an empty profile.
pub(super) fn check_profile(figment: &figment::Figment, problems: &mut Problems) {
    let selected = figment.profile();
    let builtin = [
        rocket::Config::DEBUG_PROFILE,
        rocket::Config::RELEASE_PROFILE,
        figment::Profile::Default,
        figment::Profile::Global,
    ];
    // The profiles the settings define, from the values figment has read already.
    if builtin.contains(selected) || figment.profiles().any(|profile| profile == selected) {
        return;
    }
    let mut known: Vec<String> = figment
        .profiles()
        .chain(&builtin[..2])
        .filter(|profile| **profile != figment::Profile::Global)
        .map(|profile| format!("`{profile}`"))
        .collect();
    known.sort();
    known.dedup();
    problems.invalid_from(
        "profile",
        " (from ROCKET_PROFILE)",
        format!(
            "no profile `{selected}` is defined; the profiles are {}",
            known.join(", ")
        ),
    );
}

/// `databases.main` as rocket_db_pools will read it.
pub(super) fn check_database(config: &rocket_db_pools::Config, problems: &mut Problems) {
    const KEY: &str = "databases.main";
    if !(1..=MAX_DATABASE_CONNECTIONS).contains(&config.max_connections) {
        problems.invalid(
            format!("{KEY}.max_connections"),
            format!(
                "{} connections: give 1 to {MAX_DATABASE_CONNECTIONS} (the default is 4 per worker thread)",
                config.max_connections
            ),
        );
    }
    if let Some(min) = config.min_connections {
        if usize::try_from(min).map_or(true, |min| min > config.max_connections) {
            problems.invalid(
                format!("{KEY}.min_connections"),
                format!(
                    "{min} is more than max_connections ({})",
                    config.max_connections
                ),
            );
        }
    }
    if !(1..=MAX_DATABASE_SECONDS).contains(&config.connect_timeout) {
        problems.invalid(
            format!("{KEY}.connect_timeout"),
            format!(
                "{} s: give 1 to {MAX_DATABASE_SECONDS} seconds (the default is 5)",
                config.connect_timeout
            ),
        );
    }
    if let Some(idle) = config.idle_timeout {
        if !(1..=MAX_DATABASE_SECONDS).contains(&idle) {
            problems.invalid(
                format!("{KEY}.idle_timeout"),
                format!("{idle} s: give 1 to {MAX_DATABASE_SECONDS} seconds, or leave it unset"),
            );
        }
    }
    if config.extensions.is_some() {
        problems.invalid(
            format!("{KEY}.extensions"),
            "babylon loads no SQLite extensions, so this key would be ignored; remove it",
        );
    }
}
