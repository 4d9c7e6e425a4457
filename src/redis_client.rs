//! The shared Redis: `redis.pool_size` multiplexed connections per process (redis'
//! `ConnectionManager`, which reconnects by itself; one by default), every command
//! counted, timed and classified like the database's statements.
//!
//! A Redis failure never fails a request by itself: callers fall back (a cache reads the
//! database) and the failure is counted in `rocket_redis_errors_total{type}`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, ScriptInvocation};

use crate::metrics::{counter_vec, register};
use crate::prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Registry};
use crate::settings::RedisSettings;

/// The `alias` label: the one Redis of `redis.url`.
const ALIAS: &str = "main";

/// `rocket_redis_*`: commands, failures by type, and latency.
#[derive(Clone)]
pub(crate) struct RedisFamilies {
    commands: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
}

impl RedisFamilies {
    pub(crate) fn register(registry: &Registry) -> crate::prometheus::Result<Self> {
        Ok(RedisFamilies {
            commands: counter_vec(
                registry,
                "rocket_redis_commands_total",
                "Commands sent to Redis, by command.",
                &["alias", "command"],
            )?,
            errors: counter_vec(
                registry,
                "rocket_redis_errors_total",
                "Redis commands that failed, by type (connection, timeout, server).",
                &["alias", "type"],
            )?,
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rocket_redis_command_duration_seconds",
                        "Time from sending a Redis command to its answer, failures included.",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0,
                    ]),
                    &["alias", "command"],
                )?,
            )?,
        })
    }
}

/// Why a Redis command failed: the `type` label of `rocket_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisFailure {
    /// Redis could not be reached, or the connection dropped.
    Connection,
    /// No answer within `redis.response_timeout_ms`.
    Timeout,
    /// Redis answered with an error, or with a value of another type.
    Server,
}

impl RedisFailure {
    fn of(error: &RedisError) -> RedisFailure {
        if error.is_timeout() {
            RedisFailure::Timeout
        } else if error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
        {
            RedisFailure::Connection
        } else {
            RedisFailure::Server
        }
    }

    /// The `type` label: `connection`, `timeout` or `server`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RedisFailure::Connection => "connection",
            RedisFailure::Timeout => "timeout",
            RedisFailure::Server => "server",
        }
    }
}

/// The process' connection to the shared Redis. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedRedis {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// `redis.pool_size` connections, each made on first use, inside the runtime (the
    /// manager spawns its connection task there); each connects lazily and reconnects by
    /// itself.
    connections: Arc<[OnceLock<ConnectionManager>]>,
    /// Which connection the next command takes, round-robin.
    next: Arc<AtomicUsize>,
    key_prefix: String,
    response_timeout: Duration,
    families: RedisFamilies,
}

impl SharedRedis {
    /// A lazily connecting client of `redis.url`; `None` when no URL is set.
    pub(crate) fn new(
        settings: &RedisSettings,
        families: RedisFamilies,
    ) -> Result<Option<SharedRedis>, RedisError> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let client = match &settings.tls_ca {
            Some(pem) => redis::Client::build_with_tls(
                url.expose(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            None => redis::Client::open(url.expose())?,
        };
        let response_timeout = Duration::from_millis(settings.response_timeout_ms.get());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(
                settings.connect_timeout_ms.get(),
            )))
            .set_response_timeout(Some(response_timeout))
            // A request waits for one reconnection attempt at most; the next request
            // tries again.
            .set_number_of_retries(1);
        Ok(Some(SharedRedis {
            client,
            config,
            connections: (0..settings.pool_size.get())
                .map(|_| OnceLock::new())
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
            key_prefix: settings.key_prefix.clone(),
            response_timeout,
            families,
        }))
    }

    /// `<redis.key_prefix>:<name>`.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.key_prefix)
    }

    /// Runs `command` (its name is the `command` label), counted and timed.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        name: &'static str,
        command: &Cmd,
    ) -> Result<T, RedisFailure> {
        let mut connection = self.connection()?;
        self.observe(name, command.query_async(&mut connection))
            .await
    }

    /// The next connection of the pool, made on its first command.
    fn connection(&self) -> Result<ConnectionManager, RedisFailure> {
        let slot = match self.connections.len() {
            1 => &self.connections[0],
            pool => &self.connections[self.next.fetch_add(1, Ordering::Relaxed) % pool],
        };
        if let Some(connection) = slot.get() {
            return Ok(connection.clone());
        }
        let made =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                .map_err(|error| RedisFailure::of(&error))?;
        Ok(slot.get_or_init(|| made).clone())
    }

    /// Runs a Lua script (`EVALSHA`, loading it first when this Redis does not know it
    /// yet, as after a restart), counted and timed as one `name` command.
    pub(crate) async fn run_script<T: FromRedisValue>(
        &self,
        name: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisFailure> {
        let mut connection = self.connection()?;
        self.observe(name, invocation.invoke_async(&mut connection))
            .await
    }

    /// Runs `pipeline` as one round trip, counted and timed as one `name` command.
    pub(crate) async fn run_pipeline(
        &self,
        name: &'static str,
        pipeline: &Pipeline,
    ) -> Result<(), RedisFailure> {
        let mut connection = self.connection()?;
        self.observe(name, pipeline.query_async::<()>(&mut connection))
            .await
    }

    async fn observe<T>(
        &self,
        name: &'static str,
        answer: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisFailure> {
        let started = Instant::now();
        let answer = rocket::tokio::time::timeout(self.response_timeout, answer).await;
        let labels = [ALIAS, name];
        self.families.commands.with_label_values(&labels).inc();
        self.families
            .duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        let failure = match answer {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => RedisFailure::of(&error),
            Err(_elapsed) => RedisFailure::Timeout,
        };
        self.families
            .errors
            .with_label_values(&[ALIAS, failure.label()])
            .inc();
        Err(failure)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::settings::RedisUrl;

    /// A client of `url` whose keys start with a prefix no other test or run uses.
    pub(crate) fn client(url: &str, test: &str) -> SharedRedis {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        let settings = RedisSettings {
            url: Some(RedisUrl::parse(url).expect("a valid test URL")),
            key_prefix: format!("babylon-unit-{test}-{}-{nanos}", std::process::id()),
            ..RedisSettings::default()
        };
        let families = RedisFamilies::register(&Registry::new()).expect("fresh registry");
        SharedRedis::new(&settings, families)
            .expect("a valid client")
            .expect("a URL is set")
    }

    /// A Redis URL whose port refuses connections for as long as the returned socket
    /// lives: bound, never listening, so nothing else can take the port meanwhile.
    pub(crate) fn refusing_url() -> (socket2::Socket, String) {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        socket
            .bind(&std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)).into())
            .expect("a loopback port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .expect("an IPv4 address")
            .port();
        (socket, format!("redis://127.0.0.1:{port}"))
    }

    /// A client of the shared Redis on 127.0.0.1:6379; `None` (the test skips) when it
    /// does not answer, except under CI=true, where that fails.
    pub(crate) fn shared(test: &str) -> Option<SharedRedis> {
        if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
            let hint = "no Redis on 127.0.0.1:6379 (Debian: apt-get install -y redis-server); `bash .ci/run` starts one";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and {hint}"
            );
            eprintln!("SKIPPED: {hint}");
            return None;
        }
        Some(client("redis://127.0.0.1:6379", test))
    }
}
