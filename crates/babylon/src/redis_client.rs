//! The shared Redis: `redis.pool_size` multiplexed connections per process (one by
//! default), every command counted, timed and classified like the database's statements.
//!
//! A Redis failure never fails a request by itself: callers fall back (a cache reads the
//! database) and the failure is counted in `rocket_redis_errors_total{type}`.
//!
//! **Down means down at once.** A command that times out, or finds its connection broken,
//! marks Redis down and drops every connection, whatever state they are in: a connection
//! to a host that went silent (no FIN, no RST) would otherwise be reused until the
//! kernel's TCP retries give up, a quarter of an hour later. While Redis is down no
//! command is sent (each fails at once as `unavailable`), so a request waits for an
//! unanswering Redis at most once, `redis.response_timeout_ms`. A probe connects again at
//! once, then every [`PROBE_EVERY`] (resolving the host name afresh each time), and puts
//! Redis back in use when a new connection answers `HELLO`: a Redis that was only slow is
//! used again within a round trip, and one that stopped answering within `PROBE_EVERY` +
//! `connect_timeout_ms` + `response_timeout_ms` of answering again at its address.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError, ScriptInvocation};

use crate::metrics::native::NativeConfig;
use crate::metrics::sharded::{Recording, ShardedHistogramVec};
use crate::metrics::{counter_vec, register_full, ExemplarSource};
use crate::otlp::{Call, Spans};
use crate::prometheus::{IntCounterVec, Registry};
use crate::settings::{Buckets, NativeHistogramSettings, RedisSettings};

/// The `alias` label: the one Redis of `redis.url`.
const ALIAS: &str = "main";

/// How long a probe waits after a failed attempt before connecting again. Its first
/// attempt is at once: a Redis that was only slow is used again within a round trip.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The oldest Redis babylon runs on: `HELLO` (how the version is read) and ACL users
/// came with 6.0; the scripts' writes after `TIME` need 5.0's effects replication.
pub(crate) const MINIMUM_MAJOR_VERSION: u32 = 6;

/// `rocket_redis_*`: commands, failures by type, and latency.
#[derive(Clone)]
pub(crate) struct RedisFamilies {
    commands: IntCounterVec,
    errors: IntCounterVec,
    duration: ShardedHistogramVec,
    /// Where the span of a command sent for a request goes (`tracing.otlp.*`).
    spans: Option<Spans>,
}

impl RedisFamilies {
    /// Registers the families; command durations record native buckets as `native` says;
    /// commands sent for a request get a span in `spans`.
    pub(crate) fn register(
        registry: &Registry,
        native: &NativeHistogramSettings,
        exemplars: bool,
        spans: Option<Spans>,
    ) -> crate::prometheus::Result<Self> {
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
                "Redis commands that failed, by type (connection, timeout, server; unavailable: not sent while Redis is down).",
                &["alias", "type"],
            )?,
            duration: register_full(
                registry,
                ShardedHistogramVec::new(
                    "rocket_redis_command_duration_seconds",
                    "Time from sending a Redis command to its answer, failures included.",
                    &["alias", "command"],
                    (
                        Buckets::try_from(vec![
                            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                            0.1, 0.25, 0.5, 1.0,
                        ])
                        .expect("valid constant buckets"),
                        Recording {
                            native: NativeConfig::from_settings(native),
                            exemplars,
                        },
                    ),
                )?,
            )?,
            spans,
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
    /// Not sent: Redis is down (the last command or probe failed) until a probe connects.
    Unavailable,
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
            RedisFailure::Unavailable => "unavailable",
        }
    }
}

/// Why Redis is down: the failure that took it down, or what the last probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DownCause {
    /// A command or a connection attempt failed so.
    Failure(RedisFailure),
    /// It answers, but is older than babylon needs: its version as it reported it, or
    /// `None` when it does not know `HELLO` (before 6.0).
    UnsupportedVersion(Option<String>),
}

impl DownCause {
    /// A stable word for `/api/health`: `connection`, `timeout`, `server`,
    /// `unsupported_version`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            DownCause::Failure(failure) => failure.label(),
            DownCause::UnsupportedVersion(_) => "unsupported_version",
        }
    }
}

impl std::fmt::Display for DownCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownCause::Failure(failure) => f.write_str(failure.label()),
            DownCause::UnsupportedVersion(version) => write!(
                f,
                "Redis {} is older than {MINIMUM_MAJOR_VERSION}.0, the oldest babylon runs on",
                version.as_deref().unwrap_or("before 6.0")
            ),
        }
    }
}

/// Whether babylon uses Redis now, for `/api/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedisHealth {
    /// Nothing has been sent yet.
    NotConnected,
    /// Connected; no command has failed on these connections.
    Up,
    /// Not used since `since`: commands fail at once while a probe reconnects.
    Down { since: SystemTime, cause: DownCause },
}

/// The process' connection to the shared Redis. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedRedis {
    link: Arc<Link>,
    key_prefix: String,
    response_timeout: Duration,
    families: RedisFamilies,
}

/// The connections and their state, shared by every clone and by the probe.
struct Link {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// A whole connection attempt: connecting, then `HELLO`.
    attempt_timeout: Duration,
    pool_size: usize,
    state: Mutex<LinkState>,
    /// Which connection the next command takes, round-robin.
    next: AtomicUsize,
    /// Held while the first connection is made, so that concurrent first commands wait
    /// for one attempt instead of each making their own.
    first_connect: rocket::tokio::sync::Mutex<()>,
    /// Whether a probe is running (at most one at a time).
    probing: AtomicBool,
}

enum LinkState {
    /// Nothing sent yet: the first command (or the warm-up at lift-off) connects.
    NotConnected,
    /// In use. `generation` tells the connections of successive reconnections apart, so
    /// that a late failure on dropped connections cannot take down their successors.
    Up {
        connections: Arc<[MultiplexedConnection]>,
        generation: u64,
    },
    /// Not used; a probe reconnects.
    Down {
        since: SystemTime,
        cause: DownCause,
        generation: u64,
    },
}

impl LinkState {
    fn generation(&self) -> u64 {
        match self {
            LinkState::NotConnected => 0,
            LinkState::Up { generation, .. } | LinkState::Down { generation, .. } => *generation,
        }
    }
}

/// What a command may use now.
enum Pick {
    Connection(MultiplexedConnection, u64),
    NotConnected,
    Down,
}

impl SharedRedis {
    /// A client of `redis.url` that connects on its first command (or at [`connect`]);
    /// `None` when no URL is set.
    ///
    /// [`connect`]: SharedRedis::connect
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
        // Every failure type is exposed at 0 from the start, so that a rate over them is
        // defined before the first failure.
        for failure in [
            RedisFailure::Connection,
            RedisFailure::Timeout,
            RedisFailure::Server,
            RedisFailure::Unavailable,
        ] {
            families.errors.with_label_values(&[ALIAS, failure.label()]);
        }
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms.get());
        let response_timeout = Duration::from_millis(settings.response_timeout_ms.get());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        Ok(Some(SharedRedis {
            link: Arc::new(Link {
                client,
                config,
                attempt_timeout: connect_timeout + response_timeout,
                pool_size: usize::from(settings.pool_size.get()),
                state: Mutex::new(LinkState::NotConnected),
                next: AtomicUsize::new(0),
                first_connect: rocket::tokio::sync::Mutex::new(()),
                probing: AtomicBool::new(false),
            }),
            key_prefix: settings.key_prefix.clone(),
            response_timeout,
            families,
        }))
    }

    /// `<redis.key_prefix>:<name>`.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.key_prefix)
    }

    /// Connects now if nothing has been sent yet, so that no request waits for the first
    /// connection: the service calls it at lift-off, before the first request is served.
    /// Bounded by `connect_timeout_ms` + `response_timeout_ms`; a failure leaves Redis
    /// down, and probed.
    pub(crate) async fn connect(&self) {
        let _first = self.link.first_connect.lock().await;
        if matches!(self.link.pick(), Pick::NotConnected) {
            self.link.connect_or_go_down().await;
        }
    }

    /// Whether Redis is in use now.
    pub(crate) fn health(&self) -> RedisHealth {
        match &*self.link.state() {
            LinkState::NotConnected => RedisHealth::NotConnected,
            LinkState::Up { .. } => RedisHealth::Up,
            LinkState::Down { since, cause, .. } => RedisHealth::Down {
                since: *since,
                cause: cause.clone(),
            },
        }
    }

    /// Runs `command` (its name is the `command` label), counted and timed.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        name: &'static str,
        command: &Cmd,
    ) -> Result<T, RedisFailure> {
        let (mut connection, generation) = self.connection().await?;
        self.observe(name, generation, command.query_async(&mut connection))
            .await
    }

    /// Runs a Lua script (`EVALSHA`, loading it first when this Redis does not know it
    /// yet, as after a restart), counted and timed as one `name` command.
    pub(crate) async fn run_script<T: FromRedisValue>(
        &self,
        name: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisFailure> {
        let (mut connection, generation) = self.connection().await?;
        self.observe(name, generation, invocation.invoke_async(&mut connection))
            .await
    }

    /// Runs `pipeline` as one round trip, counted and timed as one `name` command.
    pub(crate) async fn run_pipeline<T: FromRedisValue>(
        &self,
        name: &'static str,
        pipeline: &Pipeline,
    ) -> Result<T, RedisFailure> {
        let (mut connection, generation) = self.connection().await?;
        self.observe(name, generation, pipeline.query_async::<T>(&mut connection))
            .await
    }

    /// The next connection of the pool, made by the first command; none while Redis is
    /// down (counted as `unavailable`).
    async fn connection(&self) -> Result<(MultiplexedConnection, u64), RedisFailure> {
        loop {
            match self.link.pick() {
                Pick::Connection(connection, generation) => return Ok((connection, generation)),
                Pick::Down => {
                    self.count_failure(RedisFailure::Unavailable);
                    return Err(RedisFailure::Unavailable);
                }
                Pick::NotConnected => self.connect().await,
            }
        }
    }

    async fn observe<T>(
        &self,
        name: &'static str,
        generation: u64,
        answer: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisFailure> {
        let started = Instant::now();
        let answer = rocket::tokio::time::timeout(self.response_timeout, answer).await;
        let labels = [ALIAS, name];
        self.families.commands.with_label_values(&labels).inc();
        let now = Instant::now();
        let trace = crate::trace::current();
        let exemplar = trace.map(|trace| ExemplarSource::new(&trace, now));
        self.families.duration.observe_with(
            &labels,
            (now - started).as_secs_f64(),
            exemplar.as_ref(),
        );
        let outcome = match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(RedisFailure::of(&error)),
            Err(_elapsed) => Err(RedisFailure::Timeout),
        };
        if let (Some(spans), Some(trace)) = (&self.families.spans, trace) {
            spans.call(
                &trace,
                started,
                now,
                Call {
                    system: "redis",
                    operation: Some(name),
                    collection: None,
                    error: outcome.as_ref().err().map(|failure| failure.label()),
                },
            );
        }
        let failure = match outcome {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        self.count_failure(failure);
        // An error answer says the connection works; anything else may be a dead one.
        if failure != RedisFailure::Server {
            self.link.go_down(generation, DownCause::Failure(failure));
        }
        Err(failure)
    }

    fn count_failure(&self, failure: RedisFailure) {
        self.families
            .errors
            .with_label_values(&[ALIAS, failure.label()])
            .inc();
    }
}

impl Link {
    fn state(&self) -> MutexGuard<'_, LinkState> {
        // Every critical section replaces the state whole, so a poisoned lock still
        // holds a consistent one.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pick(&self) -> Pick {
        match &*self.state() {
            LinkState::NotConnected => Pick::NotConnected,
            LinkState::Down { .. } => Pick::Down,
            LinkState::Up {
                connections,
                generation,
            } => {
                let index = match connections.len() {
                    1 => 0,
                    pool => self.next.fetch_add(1, Ordering::Relaxed) % pool,
                };
                Pick::Connection(connections[index].clone(), *generation)
            }
        }
    }

    /// The first connection: in use if it answers, else Redis is down and probed.
    async fn connect_or_go_down(self: &Arc<Self>) {
        match self.connect_all().await {
            Ok(connections) => self.put_in_use(connections),
            Err(cause) => {
                rocket::warn!("babylon: Redis does not answer ({cause}); it is not used, and commands fail at once, until a probe reaches it");
                {
                    let mut state = self.state();
                    let generation = state.generation();
                    *state = LinkState::Down {
                        since: SystemTime::now(),
                        cause,
                        generation,
                    };
                }
                self.start_probe();
            }
        }
    }

    /// Marks Redis down after a failure on the connections of `generation`, dropping them,
    /// and starts the probe. A failure on connections already replaced changes nothing.
    fn go_down(self: &Arc<Self>, generation: u64, cause: DownCause) {
        {
            let mut state = self.state();
            if !matches!(&*state, LinkState::Up { generation: current, .. } if *current == generation)
            {
                return;
            }
            *state = LinkState::Down {
                since: SystemTime::now(),
                cause: cause.clone(),
                generation,
            };
        }
        rocket::warn!(
            "babylon: Redis stopped answering ({cause}); its connections are dropped and commands fail at once until a probe (every {} ms) reaches it",
            PROBE_EVERY.as_millis()
        );
        self.start_probe();
    }

    /// Connects every [`PROBE_EVERY`] until Redis answers, then puts it back in use. At
    /// most one runs at a time; it ends when the client is dropped.
    fn start_probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let link: Weak<Link> = Arc::downgrade(self);
        rocket::tokio::spawn(async move {
            for attempt in 0u64.. {
                if attempt > 0 {
                    rocket::tokio::time::sleep(PROBE_EVERY).await;
                }
                let Some(link) = link.upgrade() else {
                    return;
                };
                match link.connect_all().await {
                    Ok(connections) => {
                        // Cleared before the connections go in use: a failure right after
                        // starts a new probe instead of finding this one still marked.
                        link.probing.store(false, Ordering::Release);
                        let down_for = match &*link.state() {
                            LinkState::Down { since, .. } => since.elapsed().unwrap_or_default(),
                            _ => Duration::ZERO,
                        };
                        link.put_in_use(connections);
                        rocket::warn!(
                            "babylon: Redis answers again after {:.1} s down; it is used again",
                            down_for.as_secs_f64()
                        );
                        return;
                    }
                    Err(cause) => link.probe_failed(cause),
                }
            }
        });
    }

    /// Keeps the latest cause for `/api/health`, logging a version babylon cannot use once.
    fn probe_failed(&self, cause: DownCause) {
        let mut state = self.state();
        if let LinkState::Down { cause: current, .. } = &mut *state {
            if *current != cause {
                if let DownCause::UnsupportedVersion(_) = cause {
                    rocket::error!("babylon: {cause}; it is not used (redis.url)");
                }
                *current = cause;
            }
        }
    }

    fn put_in_use(&self, connections: Vec<MultiplexedConnection>) {
        let mut state = self.state();
        let generation = state.generation() + 1;
        *state = LinkState::Up {
            connections: connections.into(),
            generation,
        };
    }

    /// `pool_size` new connections, each answering `HELLO` with a version babylon runs on.
    async fn connect_all(&self) -> Result<Vec<MultiplexedConnection>, DownCause> {
        let mut connections = Vec::with_capacity(self.pool_size);
        for _ in 0..self.pool_size {
            let attempt = rocket::tokio::time::timeout(self.attempt_timeout, self.connect_one());
            let connection = attempt
                .await
                .map_err(|_elapsed| DownCause::Failure(RedisFailure::Timeout))??;
            connections.push(connection);
        }
        Ok(connections)
    }

    async fn connect_one(&self) -> Result<MultiplexedConnection, DownCause> {
        let failure = |error: RedisError| DownCause::Failure(RedisFailure::of(&error));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(failure)?;
        // Without arguments HELLO changes nothing and names the server's version; every
        // ACL user may send it. Before 6.0 it is an unknown command.
        let hello: Result<HashMap<String, redis::Value>, RedisError> =
            redis::cmd("HELLO").query_async(&mut connection).await;
        let version = match hello {
            Ok(properties) => match properties.get("version") {
                Some(redis::Value::BulkString(bytes)) => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                Some(redis::Value::SimpleString(text)) => Some(text.clone()),
                _ => None,
            },
            Err(error) if RedisFailure::of(&error) == RedisFailure::Server => {
                return Err(DownCause::UnsupportedVersion(None))
            }
            Err(error) => return Err(failure(error)),
        };
        if supported(version.as_deref()) {
            Ok(connection)
        } else {
            Err(DownCause::UnsupportedVersion(version))
        }
    }
}

/// Whether a Redis of `version` (as `HELLO` names it: `7.0.15`) is one babylon runs on.
fn supported(version: Option<&str>) -> bool {
    version
        .and_then(|version| version.split('.').next()?.parse::<u32>().ok())
        .is_some_and(|major| major >= MINIMUM_MAJOR_VERSION)
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
        let families = RedisFamilies::register(&Registry::new(), &Default::default(), true, None)
            .expect("fresh registry");
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
            // Straight to the terminal: libtest captures what a test prints.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "SKIPPED {}: {hint}\n",
                    std::thread::current().name().unwrap_or(test)
                )
                .as_bytes(),
            );
            return None;
        }
        Some(client("redis://127.0.0.1:6379", test))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_6_0_on_are_supported() {
        for version in ["6.0.0", "6.2.14", "7.0.15", "7.4.1", "10.0.0"] {
            assert!(supported(Some(version)), "{version}");
        }
        for version in [
            Some("5.0.7"),
            Some("4.0.14"),
            Some("2.8.24"),
            Some(""),
            Some("x.y"),
            None,
        ] {
            assert!(!supported(version), "{version:?}");
        }
    }

    /// The commands of `buffer` that have arrived whole (RESP arrays of bulk strings),
    /// each as its first word, taken out of `buffer`.
    fn whole_commands(buffer: &mut Vec<u8>) -> Vec<String> {
        let mut commands = Vec::new();
        loop {
            let text = String::from_utf8_lossy(buffer).into_owned();
            let mut lines = text.split("\r\n");
            let Some(count) = lines
                .next()
                .and_then(|header| header.strip_prefix('*')?.parse::<usize>().ok())
            else {
                return commands;
            };
            // Each argument is `$len` and its bytes, on two lines.
            let arguments: Vec<&str> = lines.by_ref().take(2 * count).collect();
            if arguments.len() < 2 * count || !text.contains("\r\n") {
                return commands;
            }
            let consumed = arguments.iter().map(|line| line.len() + 2).sum::<usize>()
                + text.find("\r\n").unwrap()
                + 2;
            if consumed > buffer.len() {
                return commands;
            }
            commands.push(arguments.get(1).unwrap_or(&"").to_ascii_uppercase());
            buffer.drain(..consumed);
        }
    }

    /// A server that speaks Redis' protocol like a Redis older than 6.0, to every
    /// connection: `HELLO` is unknown, or names the version given; every other command is
    /// answered `+OK`. (No such Redis can be installed here.) Serves until the returned
    /// flag is set.
    fn old_redis(version: Option<&'static str>) -> (Arc<AtomicBool>, String) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let stopped = stopped.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut pending = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !stopped.load(Ordering::Relaxed) {
                        match stream.read(&mut chunk) {
                            Ok(0) => return,
                            Ok(read) => pending.extend_from_slice(&chunk[..read]),
                            Err(_) => continue,
                        }
                        let answers: String = whole_commands(&mut pending)
                            .iter()
                            .map(|command| match (command.as_str(), version) {
                                ("HELLO", None) => "-ERR unknown command 'HELLO'\r\n".to_string(),
                                ("HELLO", Some(version)) => format!(
                                    "*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n${}\r\n{version}\r\n",
                                    version.len()
                                ),
                                _ => "+OK\r\n".to_string(),
                            })
                            .collect();
                        if stream.write_all(answers.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (stop, url)
    }

    #[rocket::async_test]
    async fn a_redis_older_than_6_is_not_used() {
        for (version, expected) in [
            (None, DownCause::UnsupportedVersion(None)),
            (
                Some("5.0.7"),
                DownCause::UnsupportedVersion(Some("5.0.7".into())),
            ),
        ] {
            let (stop, url) = old_redis(version);
            let redis = testing::client(&url, "old");
            redis.connect().await;
            match redis.health() {
                RedisHealth::Down { cause, .. } => assert_eq!(cause, expected),
                other => panic!("{version:?}: {other:?}"),
            }
            let command = redis::cmd("GET").arg("x").clone();
            assert_eq!(
                redis.run::<Option<String>>("GET", &command).await,
                Err(RedisFailure::Unavailable),
                "{version:?}: nothing is sent to it"
            );
            // A probe is at work meanwhile, and finds the same.
            rocket::tokio::time::sleep(PROBE_EVERY * 2).await;
            match redis.health() {
                RedisHealth::Down { cause, .. } => assert_eq!(cause, expected, "{version:?}"),
                other => panic!("{version:?}: {other:?}"),
            }
            drop(redis);
            stop.store(true, Ordering::Relaxed);
        }
    }

    #[rocket::async_test]
    async fn the_redis_of_this_machine_is_supported() {
        let Some(redis) = testing::shared("version") else {
            return;
        };
        redis.connect().await;
        assert_eq!(redis.health(), RedisHealth::Up);
    }
}
