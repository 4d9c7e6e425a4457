//! Launches babylon. `--check-config` validates the settings and exits without opening
//! any listener; `--version` names the build.

use std::process::ExitCode;

const USAGE: &str = "usage: babylon [--check-config | --version | --help]\n\n  \
    --check-config  read Rocket.toml and the ROCKET_* and BABYLON_* variables, report every problem, open nothing\n  \
    --version       print the version, the commit and the compiler, and exit\n";

#[global_allocator]
static ALLOCATOR: babylon::memory::Allocator = babylon::memory::Allocator;

fn main() -> ExitCode {
    // Before anything else: pages touched earlier keep their size.
    let small_pages = babylon::memory::keep_pages_small();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check_only = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => false,
        ["--check-config"] => true,
        ["--version"] | ["-V"] => {
            use babylon::build::{COMMIT, RUSTC, VERSION};
            println!("babylon {VERSION} (commit {COMMIT}, rustc {RUSTC})");
            return ExitCode::SUCCESS;
        }
        ["--help"] | ["-h"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("babylon: unexpected arguments {args:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The settings are read and checked before anything else exists but the log's
    // writer: no runtime, no socket, so a wrong value (even `workers = 0`) is only a line
    // (in the log's format, from `logging.format` when that one at least is valid).
    let figment = babylon::settings::figment();
    let _logging = match check_only {
        // `--check-config` starts no thread (tests/config.rs).
        true => babylon::logging::Logging::start_without_a_thread(&figment),
        false => babylon::logging::Logging::start(&figment),
    };
    if let Err(error) = small_pages {
        tracing::warn!("{error}");
    }
    let app = match babylon_app::App::from_env() {
        Ok(app) => app,
        Err(error) => {
            babylon::logging::start_up_failed(error);
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("babylon: configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match app.babylon().runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            babylon::logging::start_up_failed(format_args!(
                "cannot start the async runtime: {error}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let force_end = app.babylon().rocket_config().shutdown.force;
    let code = runtime.block_on(run(app));
    if force_end {
        // As `rocket::execute` does: tasks still running get half a second.
        runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    }
    code
}

async fn run(app: babylon_app::App) -> ExitCode {
    // Before any listener or connection is opened: each needs a descriptor (crates/babylon/src/limits.rs).
    match babylon::limits::raise_open_files_limit() {
        Ok(Some(raised)) => babylon::logging::start_up(raised),
        Ok(None) => {}
        Err(error) => tracing::warn!("{error}"),
    }
    let rocket = match app.rocket() {
        Ok(rocket) => rocket,
        Err(error) => {
            babylon::logging::start_up_failed(error);
            return ExitCode::FAILURE;
        }
    };
    if let Some(banner) = app.babylon().export_banner(&rocket) {
        babylon::logging::start_up(banner);
    }
    // Written whatever the log level, like the export banner: in release Rocket logs only
    // errors, and with `port = 0` this line is the only place the chosen port shows.
    let rocket = rocket.attach(rocket::fairing::AdHoc::on_liftoff(
        "babylon listening banner",
        |rocket| {
            Box::pin(async move {
                let config = rocket.config();
                babylon::logging::start_up(format_args!(
                    "listening on http://{}",
                    std::net::SocketAddr::new(config.address, config.port)
                ));
            })
        },
    ));
    match rocket.launch().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => match error.kind() {
            rocket::error::ErrorKind::Shutdown(rocket, None) if drained(rocket).await => {
                ExitCode::SUCCESS
            }
            _ => {
                babylon::logging::start_up_failed(error);
                ExitCode::FAILURE
            }
        },
    }
}

/// Waits, up to the shutdown's grace and mercy periods, for the requests still in flight.
///
/// Rocket 0.5.2's accept loop ends as soon as a shutdown is requested; when it wins the
/// race against Rocket's own wait for the same request (about one `SIGTERM` in thirty
/// under load), `launch` returns "shutdown failed" at once, with responses still being
/// written and the shutdown fairings not run. Each request holds a reference to the
/// Rocket instance, so when ours is the last one they have all finished, as the graceful
/// path would have waited for; the instance (and with it the file_sd target, removed when
/// dropped) goes when the error does.
async fn drained(rocket: &std::sync::Arc<rocket::Rocket<rocket::Orbit>>) -> bool {
    let shutdown = &rocket.config().shutdown;
    let patience =
        std::time::Duration::from_secs(u64::from(shutdown.grace) + u64::from(shutdown.mercy) + 1);
    let deadline = std::time::Instant::now() + patience;
    while std::sync::Arc::strong_count(rocket) > 1 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        rocket::tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}
