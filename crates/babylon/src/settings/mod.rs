//! Typed settings, read with figment from Rocket.toml profiles and then the environment.
//!
//! Every key of our sections (`metrics`, `blocking`, `cache`, `databases`) is also settable as
//! `BABYLON_<SECTION>__<KEY>`, with `__` between nesting levels, for example
//! `BABYLON_METRICS__EXPORT__PORT_RANGE=9001-9010`. Rocket's own keys keep their `ROCKET_`
//! variables (`ROCKET_PORT`, `ROCKET_PROFILE`, …).
//!
//! Loading validates everything up front, Rocket's own keys and `databases.main`
//! included: every wrong value of one reading becomes a line of one [`ConfigError`],
//! naming the key, where its value came from, and the problem.

mod database_url;
mod errors;
mod files;
mod otlp_endpoint;
mod redis_url;
mod rocket_keys;
mod tls;
mod types;

use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Serialized};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::Deserialize;

use self::errors::Fault;
pub(crate) use self::errors::Problems;

pub(crate) use database_url::state_directory;
pub use database_url::{DatabaseUrl, Vendor};
pub use errors::{ConfigError, Problem};
pub use otlp_endpoint::OtlpEndpoint;
pub use redis_url::RedisUrl;
pub use rocket_keys::{MAX_BLOCKING, MAX_DATABASE_CONNECTIONS, MAX_DATABASE_SECONDS, MAX_WORKERS};
pub(crate) use tls::{unix_seconds, Fingerprint, TlsFileError, TlsIdentity};
pub use tls::{ExportTlsSettings, TlsVersion};
pub use types::{
    canonical_ip, BucketFactor, Buckets, Cidr, CidrList, ExportAddress, Ipv6Prefix, Namespace,
    PortRange, UrlPath, ZeroThreshold,
};

/// Prefix of the environment variables that override our settings.
pub const ENV_PREFIX: &str = "BABYLON_";

/// All of babylon's own settings, validated. Read them from [`Babylon::settings`](crate::Babylon::settings);
/// they are made only by [`Settings::from_figment`], so every value held is a valid one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// `metrics.*`
    pub metrics: MetricsSettings,
    /// `blocking.*`
    pub blocking: BlockingSettings,
    /// `cache.*`
    pub cache: CacheSettings,
    /// `redis.*`
    pub redis: RedisSettings,
    /// `tracing.*`
    pub tracing: TracingSettings,
    /// `logging.*`
    pub logging: LogSettings,
    /// `databases.main.url`, validated (rocket_db_pools reads the rest of `databases.main`).
    pub database_url: DatabaseUrl,
}

/// `tracing.*`: the W3C trace context every request gets, and the exemplars that lead
/// from the metrics to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TracingSettings {
    /// Off: no `traceparent` or `X-Request-Id` on answers, no request id in error bodies,
    /// no exemplars.
    pub enabled: bool,
    /// Whose `traceparent` header a request continues; from anyone else a new trace is
    /// started.
    pub continue_traceparent_from: TraceparentSenders,
    /// Whether answers carry `traceparent` and `X-Request-Id` (off: the ids stay inside,
    /// in exemplars and error bodies).
    pub response_headers: bool,
    /// `tracing.otlp.*`: spans sent to an OpenTelemetry collector.
    pub otlp: OtlpSettings,
}

/// `tracing.otlp.*`: a span per request, with a child span per database statement and
/// Redis command, sent over OTLP/gRPC to a collector (an OpenTelemetry Collector, Tempo,
/// Jaeger). Off unless `endpoint` is set.
///
/// The exporter also reads the OpenTelemetry SDK's environment variables for what these
/// settings leave open: `OTEL_EXPORTER_OTLP_HEADERS` (e.g. a token for a hosted backend),
/// `OTEL_EXPORTER_OTLP_COMPRESSION`, `OTEL_EXPORTER_OTLP_TIMEOUT` and
/// `OTEL_RESOURCE_ATTRIBUTES`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct OtlpSettings {
    /// The collector's OTLP/gRPC address, `http://host:4317` (or `https://`, which
    /// trusts Mozilla's root certificates); `None` exports nothing.
    pub endpoint: Option<OtlpEndpoint>,
    /// The `service.name` of every exported span.
    pub service_name: String,
    /// Most finished spans waiting for export; a span that finds the queue full is
    /// dropped and counted (`babylon_otlp_spans_total{outcome="dropped"}`).
    pub queue_size: NonZeroU32,
    /// Longest a span waits before its batch is sent (a batch also leaves as soon as
    /// [`OtlpSettings::BATCH_SIZE`] spans wait).
    pub export_interval_ms: NonZeroU32,
}

impl OtlpSettings {
    /// Spans sent in one export call at most.
    pub const BATCH_SIZE: usize = 512;
    /// The largest `queue_size`. The queue reserves a slot of about 360 bytes per span
    /// when export starts (some 360 MB at this bound), and a waiting span holds its
    /// attributes besides.
    pub const MAX_QUEUE_SIZE: u32 = 1_000_000;
    /// The longest `export_interval_ms`: a minute.
    pub const MAX_EXPORT_INTERVAL_MS: u32 = 60_000;
}

impl Default for OtlpSettings {
    fn default() -> Self {
        OtlpSettings {
            endpoint: None,
            service_name: "babylon".to_string(),
            queue_size: NonZeroU32::new(2048).expect("nonzero"),
            export_interval_ms: NonZeroU32::new(5000).expect("nonzero"),
        }
    }
}

impl TracingSettings {
    fn validate(&self, problems: &mut Problems) {
        if self.otlp.endpoint.is_some() && !self.enabled {
            problems.invalid(
                "tracing.otlp.endpoint",
                "exporting spans needs `tracing.enabled = true` (without it requests have no trace context); set one or remove the other".to_string(),
            );
        }
        if self.otlp.queue_size.get() > OtlpSettings::MAX_QUEUE_SIZE {
            problems.invalid(
                "tracing.otlp.queue_size",
                format!(
                    "{} is more than {}, the most spans that may wait for export",
                    self.otlp.queue_size,
                    OtlpSettings::MAX_QUEUE_SIZE
                ),
            );
        }
        if self.otlp.export_interval_ms.get() > OtlpSettings::MAX_EXPORT_INTERVAL_MS {
            problems.invalid(
                "tracing.otlp.export_interval_ms",
                format!(
                    "{} ms is more than a minute ({} ms), the longest a span may wait for export",
                    self.otlp.export_interval_ms,
                    OtlpSettings::MAX_EXPORT_INTERVAL_MS
                ),
            );
        }
        if self.otlp.service_name.trim().is_empty() {
            problems.invalid(
                "tracing.otlp.service_name",
                "is empty; name the service its spans are filed under, e.g. \"babylon\""
                    .to_string(),
            );
        }
    }
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            enabled: true,
            continue_traceparent_from: TraceparentSenders::TrustedProxies,
            response_headers: true,
            otlp: OtlpSettings::default(),
        }
    }
}

/// `logging.*`: the format of every log line, and the line each request gets.
///
/// Not `log`: Rocket 0.5 takes that key for its old name of `log_level`.
///
/// Which lines are written besides the request lines follows Rocket's `log_level`:
/// `critical` (release builds' default) warnings and errors, `normal` (debug builds')
/// information too, `debug` everything, `off` nothing but the start-up lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LogSettings {
    /// How every line is written: babylon's, Rocket's and the application's alike.
    pub format: LogFormat,
    /// One line per request (method, route template, status, duration, client, blocked
    /// reason, trace id and request id), whatever `log_level` says unless it is `off`.
    pub requests: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            requests: true,
        }
    }
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `2026-12-07T05:00:00.000000Z  INFO babylon::request: method=GET …`: for people.
    Text,
    /// One JSON object per line, its fields at the top level: for a log pipeline.
    Json,
}

/// `tracing.continue_traceparent_from`: whose trace context a request continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceparentSenders {
    /// Only the peers in `blocking.trusted_proxies` (a gateway, a proxy, a service mesh):
    /// a client elsewhere cannot pick the trace id its requests are filed under, nor
    /// point an exemplar at a trace of its choosing.
    TrustedProxies,
    /// Every client, for a service reached directly by callers that trace.
    Anyone,
}

/// The database used when `databases.main.url` is not set: a SQLite file beside the
/// process (or in systemd's `$STATE_DIRECTORY`), created when missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://babylon.sqlite";

/// `cache.*`: the in-process read cache of the example resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CacheSettings {
    /// Off: every read goes to the database.
    pub enabled: bool,
    /// How long an entry may be served; bounds staleness across worker processes.
    pub ttl_seconds: NonZeroU64,
    /// Most entries each cache holds (the in-process backend; Redis bounds its memory
    /// itself, with `maxmemory`).
    pub max_entries: u64,
    /// Where cached reads live: in each process, or in the shared Redis of `redis.url`.
    pub backend: Backend,
}

impl CacheSettings {
    /// The longest `ttl_seconds`: a year. A read cache bounds staleness in seconds, and
    /// beyond this the in-process cache would refuse it (moka panics above 1,000 years).
    pub const MAX_TTL_SECONDS: u64 = 365 * 24 * 60 * 60;

    fn validate(&self, problems: &mut Problems) {
        if self.ttl_seconds.get() > Self::MAX_TTL_SECONDS {
            problems.invalid(
                "cache.ttl_seconds",
                format!(
                    "{} s is more than a year ({} s), the longest an entry may be served",
                    self.ttl_seconds,
                    Self::MAX_TTL_SECONDS
                ),
            );
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            ttl_seconds: NonZeroU64::new(5).expect("nonzero"),
            max_entries: 10_000,
            backend: Backend::Memory,
        }
    }
}

/// `cache.backend` and `blocking.rate_limit.backend`: where state that workers could share
/// lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In each process: the cache is per worker (another worker's write is seen after at
    /// most `cache.ttl_seconds`), and so is the rate limit (N workers allow N times it).
    #[default]
    Memory,
    /// In the shared Redis of `redis.url`, one for every worker on every host: a write
    /// invalidates the cache for all at once, and a client has one rate limit.
    Redis,
}

/// `redis.*`: the shared Redis that the `redis` backends use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://host:6379[/db]`, `rediss://host:6380[/db]` (TLS) or
    /// `unix:///path/to/redis.sock`; needed by any `redis` backend.
    pub url: Option<RedisUrl>,
    /// The prefix of every key babylon writes, so that several deployments can share one
    /// Redis.
    pub key_prefix: String,
    /// How long connecting may take, in milliseconds.
    pub connect_timeout_ms: NonZeroU64,
    /// How long one command may take, in milliseconds; a slower one counts as a failure
    /// and the request goes on without Redis.
    pub response_timeout_ms: NonZeroU64,
    /// Connections each worker keeps to Redis, 1 to 64; each one multiplexes every
    /// concurrent command, so one is enough until its round trips queue.
    pub pool_size: std::num::NonZeroU8,
    /// A PEM file of the certificate authorities that a `rediss://` server's certificate
    /// must chain to; unset: Mozilla's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// The certificates of `tls_ca_file`, read during validation.
    #[serde(skip)]
    pub(crate) tls_ca: Option<Vec<u8>>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            key_prefix: "babylon".to_string(),
            connect_timeout_ms: NonZeroU64::new(1000).expect("nonzero"),
            response_timeout_ms: NonZeroU64::new(250).expect("nonzero"),
            pool_size: std::num::NonZeroU8::MIN,
            tls_ca_file: None,
            tls_ca: None,
        }
    }
}

impl RedisSettings {
    /// The most connections `pool_size` may ask for.
    pub const MAX_POOL_SIZE: u8 = 64;
    /// The longest `connect_timeout_ms` and `response_timeout_ms`: a minute.
    pub const MAX_TIMEOUT_MS: u64 = 60_000;

    fn validate(&mut self, problems: &mut Problems) {
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            problems.invalid(
                "redis.key_prefix",
                "must be one word of printable characters, e.g. \"babylon\"",
            );
        }
        if self.pool_size.get() > Self::MAX_POOL_SIZE {
            problems.invalid(
                "redis.pool_size",
                format!(
                    "{} connections per worker is more than the {} allowed; one connection multiplexes every command, so a few are plenty",
                    self.pool_size,
                    Self::MAX_POOL_SIZE
                ),
            );
        }
        for (key, millis) in [
            ("redis.connect_timeout_ms", self.connect_timeout_ms),
            ("redis.response_timeout_ms", self.response_timeout_ms),
        ] {
            if millis.get() > Self::MAX_TIMEOUT_MS {
                problems.invalid(
                    key,
                    format!(
                        "{millis} ms: give at most {} ms (a minute); a request waits this long for a Redis that does not answer",
                        Self::MAX_TIMEOUT_MS
                    ),
                );
            }
        }
        if let Some(path) = &self.tls_ca_file {
            const KEY: &str = "redis.tls_ca_file";
            if !self.url.as_ref().is_some_and(RedisUrl::is_tls) {
                problems.invalid(
                    KEY,
                    "is only for a TLS connection: redis.url must start with rediss://",
                );
                return;
            }
            match files::read_bounded(path, files::DOCUMENT_LIMIT) {
                Err(problem) => problems.invalid(KEY, problem),
                Ok(pem)
                    if !pem
                        .windows(CERTIFICATE_PEM.len())
                        .any(|window| window == CERTIFICATE_PEM) =>
                {
                    problems.invalid(
                        KEY,
                        format!(
                            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            path.display()
                        ),
                    )
                }
                Ok(pem) => self.tls_ca = Some(pem),
            }
        }
    }
}

/// What every PEM certificate starts with.
const CERTIFICATE_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----";

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RedisUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The names of babylon's sections, as [`Sections`] reads them.
const SECTIONS: [&str; 6] = [
    "metrics", "blocking", "cache", "redis", "tracing", "logging",
];

/// Our sections of the configuration; Rocket's own keys sit beside them.
#[derive(Deserialize)]
struct Sections {
    #[serde(default)]
    metrics: MetricsSettings,
    #[serde(default)]
    blocking: BlockingSettings,
    #[serde(default)]
    cache: CacheSettings,
    #[serde(default)]
    redis: RedisSettings,
    #[serde(default)]
    tracing: TracingSettings,
    #[serde(default)]
    logging: LogSettings,
}

/// The name of babylon's database under `databases`: `databases.main.*`.
const DATABASE_NAME: &str = "main";

/// `databases.main.*` as rocket_db_pools will read it: its own `Config`, extracted the way
/// its `Database::init` does (same focus, same defaults), so that a wrong value stops
/// start-up here with the key named, and a key it does not know is refused rather than
/// ignored. Its own type, not a copy of its fields, keeps the check in step on upgrade.
fn database_config(figment: &Figment) -> Result<rocket_db_pools::Config, Fault> {
    type Table = std::collections::BTreeMap<String, Value>;
    let section = format!("databases.{DATABASE_NAME}");
    let in_section = |error: figment::Error| {
        let mut fault = Fault::from_figment(error);
        let mut path = vec!["databases".to_string(), DATABASE_NAME.to_string()];
        path.append(&mut fault.path);
        fault.path = path;
        fault
    };
    // rocket_db_pools' default, from a valid `workers` (a wrong one is reported by itself).
    let workers: usize = figment
        .extract_inner(rocket::Config::WORKERS)
        .unwrap_or_else(|_| rocket::Config::default().workers)
        .clamp(1, MAX_WORKERS);
    let config: rocket_db_pools::Config = figment
        .focus(&section)
        .join(Serialized::default("max_connections", workers * 4))
        .join(Serialized::default("connect_timeout", 5))
        .extract()
        .map_err(in_section)?;
    let known: Table = Figment::from(Serialized::defaults(&config))
        .extract()
        .map_err(Fault::from_figment)?;
    let given: Table = figment.focus(&section).extract().map_err(in_section)?;
    if let Some(unknown) = given.keys().find(|key| !known.contains_key(*key)) {
        let keys: Vec<String> = known.keys().map(|key| format!("`{key}`")).collect();
        return Err(Fault::at(
            vec!["databases".into(), DATABASE_NAME.into(), unknown.clone()],
            format!("unknown key; the keys here are {}", keys.join(", ")),
        ));
    }
    Ok(config)
}

/// `metrics.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MetricsSettings {
    /// Off: no fairing, no export listener, no metrics route.
    pub enabled: bool,
    /// Where metrics are served, on the main port and on the export port.
    pub path: UrlPath,
    /// Whether the main (application) port serves `path` too.
    pub serve_on_main_port: bool,
    /// Optional prefix of every metric family name.
    pub namespace: Option<Namespace>,
    /// Count scrapes of `path` as API traffic (off: scrapes leave the HTTP families alone).
    pub count_scrapes: bool,
    /// Upper bounds of `rocket_http_request_duration_seconds`, in seconds.
    pub latency_buckets: Buckets,
    /// `metrics.native_histograms.*`: exponential buckets beside the classic ones.
    pub native_histograms: NativeHistogramSettings,
    /// Requests whose path starts with one of these are not recorded at all.
    pub exclude_paths: Vec<String>,
    /// Most label sets a custom family may grow to; further ones record as `<overflow>`.
    pub max_series_per_family: std::num::NonZeroUsize,
    /// Also record rocket_prometheus' two stock families (`rocket_http_requests_total`,
    /// `rocket_http_requests_duration_seconds`) with its own fairing, for dashboards made
    /// for it; off: its fairing is not attached.
    pub rocket_prometheus: bool,
    /// `metrics.export.*`
    pub export: ExportSettings,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            path: UrlPath::try_from("/metrics".to_string()).expect("valid default"),
            serve_on_main_port: true,
            namespace: None,
            count_scrapes: false,
            latency_buckets: Buckets::django_latency(),
            native_histograms: NativeHistogramSettings::default(),
            exclude_paths: Vec::new(),
            max_series_per_family: std::num::NonZeroUsize::new(1000).expect("nonzero"),
            rocket_prometheus: false,
            export: ExportSettings::default(),
        }
    }
}

/// `metrics.native_histograms.*`: the exponential buckets every babylon histogram records
/// beside its classic ones, which Prometheus reads from the protobuf format. The defaults
/// are client_golang's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct NativeHistogramSettings {
    /// Off: the histograms record classic buckets only.
    pub enabled: bool,
    /// The largest growth from one bucket's bound to the next: the finest schema whose
    /// factor `2^(2^-schema)` is at most this is used (1.1: schema 3, eight buckets per
    /// power of two).
    pub bucket_factor: BucketFactor,
    /// A scrape halves the resolution of a histogram until it uses at most this many
    /// buckets.
    pub max_buckets: NonZeroU32,
    /// Observations whose magnitude is at most this count in the zero bucket.
    pub zero_threshold: ZeroThreshold,
}

impl Default for NativeHistogramSettings {
    fn default() -> Self {
        NativeHistogramSettings {
            enabled: true,
            bucket_factor: BucketFactor::try_from(1.1).expect("valid default"),
            max_buckets: NonZeroU32::new(160).expect("nonzero"),
            zero_threshold: ZeroThreshold::default(),
        }
    }
}

/// `metrics.export.*`: the per-process export listener and who may read metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// Whether this process opens an export listener at all.
    pub enabled: bool,
    /// `port_range` as set: each process binds the first free port of this range.
    port_range: Option<PortRange>,
    /// `port` as set: a fixed export port (exclusive with `port_range`).
    port: Option<u16>,
    /// The ports to try, decided from `port` and `port_range` by validation: only a valid
    /// range can be held here.
    #[serde(skip)]
    ports: PortRange,
    /// `""`: every interface, IPv4 and IPv6.
    pub address: ExportAddress,
    /// Who may read metrics, on every port that serves them.
    pub allow: CidrList,
    /// File holding a bearer token that scrapers must send.
    pub token_file: Option<PathBuf>,
    /// Users who may read metrics with HTTP basic auth: user -> bcrypt hash of the
    /// password, as the Prometheus exporter toolkit's `basic_auth_users`.
    pub basic_auth_users: BasicAuthUsers,
    /// What to do when every port of the range is taken.
    pub when_ports_taken: WhenPortsTaken,
    /// Where this process announces its export target for Prometheus' file_sd.
    pub file_sd: Option<FileSdSettings>,
    /// HTTPS (and, with a client CA, mutual TLS) on the export port.
    pub tls: Option<ExportTlsSettings>,
    /// Read from `token_file` during validation; never deserialized from settings.
    #[serde(skip)]
    pub token: Option<Token>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            enabled: true,
            port_range: None,
            port: None,
            ports: PortRange::default(),
            address: ExportAddress::EveryInterface,
            allow: ["127.0.0.0/8", "::1/128"]
                .iter()
                .map(|block| block.parse().expect("valid default"))
                .collect(),
            token_file: None,
            basic_auth_users: BasicAuthUsers::default(),
            when_ports_taken: WhenPortsTaken::Fail,
            file_sd: None,
            tls: None,
            token: None,
        }
    }
}

impl ExportSettings {
    /// The range used when neither `port` nor `port_range` is set (django-prometheus'
    /// documented example range).
    pub const DEFAULT_PORTS: (u16, u16) = (8001, 8050);

    /// The ports to try: `port` as a one-port range, else `port_range`, else
    /// [`DEFAULT_PORTS`](Self::DEFAULT_PORTS).
    pub fn ports(&self) -> PortRange {
        self.ports
    }
}

/// `metrics.export.file_sd.*`: each process writes `<directory>/babylon-<host>-<port>.json`, a
/// Prometheus file_sd target list naming its export port, and removes it when it stops,
/// so Prometheus scrapes exactly the live workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileSdSettings {
    /// An existing directory that Prometheus' `file_sd_configs` reads.
    pub directory: PathBuf,
    /// The host Prometheus uses to reach this process. Default: the export address when
    /// it is a specific one, else 127.0.0.1.
    pub host: Option<String>,
    /// Extra target labels (e.g. `env = "staging"`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl FileSdSettings {
    /// The labels every target file carries; `labels` may not set them.
    pub const OWN_LABELS: [&'static str; 3] = ["instance", "job", "babylon_export_port"];

    fn validate(&self, problems: &mut Problems) {
        if !self.directory.is_dir() {
            problems.invalid(
                "metrics.export.file_sd.directory",
                format!("{} is not an existing directory", self.directory.display()),
            );
        }
        if let Some(host) = &self.host {
            if !is_host(host) {
                problems.invalid(
                    "metrics.export.file_sd.host",
                    format!(
                        "`{}` is not a host name or an IP address",
                        host.escape_debug()
                    ),
                );
            }
        }
        if let Some(bad) = self.labels.keys().find(|name| !is_label_name(name)) {
            problems.invalid(
                "metrics.export.file_sd.labels",
                format!("`{bad}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"),
            );
        }
        if let Some(own) = self
            .labels
            .keys()
            .find(|name| Self::OWN_LABELS.contains(&name.as_str()))
        {
            problems.invalid(
                "metrics.export.file_sd.labels",
                format!(
                    "`{own}` is set by babylon on every target ({}); choose another name",
                    Self::OWN_LABELS.join(", ")
                ),
            );
        }
    }
}

/// An IP address, or a DNS name: dot-separated labels of ASCII letters, digits and `-`
/// (not at a label's ends), as Prometheus needs a target's host.
fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    host.len() <= 253 && host.split('.').all(label)
}

fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
/// `metrics.export.when_ports_taken`: what to do when every export port is taken.
pub enum WhenPortsTaken {
    /// Start-up fails with a message naming the range (the default).
    Fail,
    /// Log a warning and serve without an export listener, as django-prometheus does.
    RunWithoutExport,
}

/// `metrics.export.basic_auth_users`: user name -> bcrypt hash of the password. `Debug`
/// prints the user names only.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct BasicAuthUsers(std::collections::BTreeMap<String, String>);

impl BasicAuthUsers {
    /// Whether no user is configured (basic auth is then not offered).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bcrypt hash of `user`'s password.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.0.get(user).map(String::as_str)
    }

    /// One sentence for each user name or hash that cannot be used.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (user, hash) in &self.0 {
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                problems.push(format!(
                    "user {user:?}: a user name is not empty and holds no `:` or control character"
                ));
            }
            if let Err(problem) = check_bcrypt_hash(hash) {
                problems.push(format!("user {user:?}: {problem}"));
            }
        }
        problems
    }
}

/// A bcrypt hash as `htpasswd -nbB` and Python's `bcrypt` write it: `$2a$`, `$2b$` or
/// `$2y$`, a cost of 04 to 31, 53 characters of salt and hash. Checked here, in ASCII,
/// before the bcrypt crate parses it.
fn check_bcrypt_hash(hash: &str) -> Result<(), String> {
    let explain = "is not a bcrypt hash (`$2b$12$` and 53 more characters: `htpasswd -nbBC 12 \"\" PASSWORD | tr -d ':\\n'`)";
    let bytes = hash.as_bytes();
    let well_formed = bytes.len() == 60
        && bytes.is_ascii()
        && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
        && bytes[6] == b'$'
        && hash[4..6]
            .parse::<u32>()
            .is_ok_and(|cost| (4..=31).contains(&cost))
        && bytes[7..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/');
    if !well_formed || hash.parse::<bcrypt::HashParts>().is_err() {
        return Err(format!("the password hash {explain}"));
    }
    Ok(())
}

impl std::fmt::Debug for BasicAuthUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The metrics bearer token. `Debug` never prints it, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token's bytes, for a constant-time comparison.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// `blocking.*`: the policy that stops requests before their handler runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BlockingSettings {
    /// Off: no request is screened.
    pub enabled: bool,
    /// Clients in these blocks get 403.
    pub deny: CidrList,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed. Empty: none.
    pub trusted_proxies: CidrList,
    /// Per-client-IP rate limit; absent: no limit.
    pub rate_limit: Option<RateLimitSettings>,
}

impl Default for BlockingSettings {
    fn default() -> Self {
        BlockingSettings {
            enabled: true,
            deny: CidrList::default(),
            trusted_proxies: CidrList::default(),
            rate_limit: None,
        }
    }
}

/// `blocking.rate_limit.*`: a token bucket per client: an IPv4 address, or an IPv6
/// prefix.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitSettings {
    /// Sustained requests per second per client.
    pub per_second: NonZeroU32,
    /// Requests a client may send at once above the sustained rate.
    pub burst: NonZeroU32,
    /// How many leading bits of an IPv6 address are one client (IPv4, and IPv4-mapped
    /// IPv6, is always keyed by the whole address).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: Ipv6Prefix,
    /// Most clients the in-process limiter tracks at once; beyond it, new clients share
    /// one bucket.
    #[serde(default = "default_max_clients")]
    pub max_clients: std::num::NonZeroUsize,
    /// Where the buckets live: in each process, or in the shared Redis of `redis.url`.
    #[serde(default)]
    pub backend: Backend,
    /// What decides while the shared Redis does not answer (the `redis` backend only).
    #[serde(default)]
    pub when_redis_fails: WhenRedisFails,
}

/// `blocking.rate_limit.when_redis_fails`: the verdict on a request whose check the
/// shared Redis did not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenRedisFails {
    /// This worker's own in-process limiter decides: the limit holds per worker, as with
    /// the `memory` backend, until Redis answers again.
    #[default]
    FailOpen,
    /// The request is refused with 503 `rate_limiter_unavailable` and `Retry-After: 1`.
    FailClosed,
}

impl RateLimitSettings {
    /// `max_clients` when not set: about 5 MiB of limiter state.
    pub const DEFAULT_MAX_CLIENTS: usize = 100_000;
}

fn default_ipv6_prefix() -> Ipv6Prefix {
    Ipv6Prefix::SUBNET
}

fn default_max_clients() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(RateLimitSettings::DEFAULT_MAX_CLIENTS).expect("nonzero")
}

/// Top-level keys read besides babylon's sections and Rocket's keys: rocket_db_pools'
/// `databases`, and `config`, which is how `ROCKET_CONFIG` (the file Rocket reads the
/// others from) shows among the `ROCKET_` variables.
const OTHER_COMPONENTS_KEYS: [&str; 2] = ["databases", "config"];

/// Refuses top-level keys nobody reads: a misspelt section (`[default.metric]`,
/// `BABYLON_METRIC__ENABLED`) would otherwise be silently ignored, and so would keys of
/// Rocket features babylon does not build in (`tls`).
fn reject_unknown_sections(figment: &Figment) -> Result<(), Fault> {
    type Table = std::collections::BTreeMap<String, Value>;
    let present: Table = figment.extract().map_err(Fault::from_figment)?;
    let rocket_keys: Table = Figment::from(rocket::Config::default())
        .extract()
        .map_err(Fault::from_figment)?;
    let known = |key: &str| {
        SECTIONS.contains(&key)
            || OTHER_COMPONENTS_KEYS.contains(&key)
            || rocket_keys.contains_key(key)
    };
    let Some(key) = present.keys().find(|key| !known(key)) else {
        return Ok(());
    };
    let message = match rocket_keys::NOT_BUILT_IN
        .iter()
        .find(|(name, _)| name == key)
    {
        Some((_, why)) => why.to_string(),
        None => format!(
            "unknown section; babylon reads {}, `databases` and Rocket's own keys",
            SECTIONS.map(|section| format!("`{section}`")).join(", ")
        ),
    };
    let mut fault = Fault::at(vec![key.clone()], message);
    fault.suffix = "__…";
    Err(fault)
}

/// Checks the file Rocket reads its settings from before anything reads it: the one
/// `ROCKET_CONFIG` names must exist and be a regular file (figment would quietly skip a
/// missing one, a device or a directory), and no settings file may be larger than 1 MiB,
/// so that naming `/dev/zero` or a log by mistake cannot hang or exhaust start-up.
pub fn check_config_file() -> Result<(), ConfigError> {
    let named = std::env::var_os("ROCKET_CONFIG");
    let path = PathBuf::from(named.clone().unwrap_or_else(|| "Rocket.toml".into()));
    // Where figment looks: an absolute path as it is; a relative one in the working
    // directory, then in each directory above it.
    let found = match path.is_absolute() {
        true => path.exists().then(|| path.clone()),
        false => std::env::current_dir().ok().and_then(|cwd| {
            cwd.ancestors()
                .map(|dir| dir.join(&path))
                .find(|candidate| candidate.exists())
        }),
    };
    let origin = if named.is_some() {
        " (from ROCKET_CONFIG)"
    } else {
        ""
    };
    match (found, named.is_some()) {
        (None, false) => Ok(()),
        (None, true) => Err(ConfigError::before_reading(
            origin,
            format!(
                "{} does not exist (a relative path is looked for in the working directory and above it)",
                path.display()
            ),
        )),
        (Some(file), _) => files::check_regular_file(&file, files::DOCUMENT_LIMIT)
            .map_err(|problem| ConfigError::before_reading(origin, problem)),
    }
}

/// The figment babylon reads: Rocket's (Rocket.toml, `ROCKET_*`), then `BABYLON_*`.
pub fn figment() -> Figment {
    with_env(rocket::Config::figment())
}

/// Adds the `BABYLON_*` variables on top of `base` (tests build their own base).
pub fn with_env(base: Figment) -> Figment {
    base.merge(Env::prefixed(ENV_PREFIX).split("__").global())
        .join(default_database())
}

/// `databases.main.url` for rocket_db_pools when nobody set one.
fn default_database() -> Serialized<serde_json::Value> {
    Serialized::global(
        "databases",
        serde_json::json!({ "main": { "url": DEFAULT_DATABASE_URL } }),
    )
}

/// A figment with Rocket's defaults and the given values merged on top, for tests and
/// tools that must not read the working directory's Rocket.toml.
pub fn figment_from<T: serde::Serialize>(values: T) -> Figment {
    Figment::from(rocket::Config::default())
        .merge(Serialized::globals(values))
        .join(default_database())
}

/// What parsing gives when every value fits its type.
struct Parsed {
    rocket: rocket::Config,
    sections: Sections,
    database: rocket_db_pools::Config,
}

/// Parses everything; the first value that does not fit its type is the error.
fn parse(figment: &Figment) -> Result<Parsed, Fault> {
    let rocket = rocket::Config::try_from(figment).map_err(Fault::from_figment)?;
    reject_unknown_sections(figment)?;
    let sections: Sections = figment.extract().map_err(Fault::from_figment)?;
    let database = database_config(figment)?;
    Ok(Parsed {
        rocket,
        sections,
        database,
    })
}

/// Most values set aside while parsing: a bound on the rounds below.
const MOST_FAULTS: usize = 64;

/// Parses `figment`, recording every value that does not fit its type: each one is set
/// aside (its default takes its place) and the rest parsed again, so one reading finds
/// them all. `None` when the settings cannot be read at all, or still do not parse.
fn parse_collecting(figment: &Figment, problems: &mut Problems) -> Option<(Parsed, Dict)> {
    let mut values: Dict = match figment.extract() {
        Ok(values) => values,
        Err(error) => {
            Fault::from_figment(error).record(problems);
            return None;
        }
    };
    let mut set_aside: Vec<Vec<String>> = Vec::new();
    for _ in 0..MOST_FAULTS {
        let current = Figment::from(Serialized::globals(&values)).join(default_database());
        let fault = match parse(&current) {
            Ok(parsed) => return Some((parsed, values)),
            Err(fault) => fault,
        };
        // A section that misses a key only because a wrong value of it was set aside has
        // been reported already.
        let follows_from_one_set_aside = fault.missing
            && set_aside
                .iter()
                .any(|path| path.starts_with(&fault.path) || fault.path.starts_with(path));
        if !follows_from_one_set_aside {
            fault.record(problems);
        }
        if !remove(&mut values, &fault.path) {
            return None;
        }
        set_aside.push(fault.path);
    }
    None
}

/// Removes the value at `path`; whether there was one.
fn remove(values: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [key] => values.remove(key).is_some(),
        [key, rest @ ..] => match values.get_mut(key) {
            Some(Value::Dict(_, inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

impl Settings {
    /// Reads and validates every section, Rocket's own keys and `databases.main`
    /// included, so that a bad `workers` or `max_connections` is reported here as one
    /// line rather than by Rocket at launch (or as a panic). Every wrong setting is
    /// reported, not only the first.
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        let (settings, problems) = Self::read(figment);
        problems.into_result(figment)?;
        Ok(settings.expect("settings are read whenever nothing is wrong"))
    }

    /// The settings (`None` when they cannot be read at all) and every problem found.
    pub(crate) fn read(figment: &Figment) -> (Option<Settings>, Problems) {
        let mut problems = Problems::default();
        let Some((parsed, values)) = parse_collecting(figment, &mut problems) else {
            if problems.is_empty() {
                problems.unreadable("the settings cannot be read");
            }
            return (None, problems);
        };
        let Parsed {
            rocket,
            sections,
            database,
        } = parsed;
        let Sections {
            mut metrics,
            blocking,
            cache,
            mut redis,
            tracing,
            logging,
        } = sections;
        rocket_keys::check_rocket(&rocket, &values, figment, &mut problems);
        rocket_keys::check_profile(figment, &mut problems);
        metrics.validate(&mut problems);
        for (key, backend) in backends(&cache, &blocking) {
            if backend == Some(Backend::Redis) && redis.url.is_none() {
                problems.invalid(
                    "redis.url",
                    format!(
                        "`{key} = \"redis\"` needs the Redis to use, e.g. redis://127.0.0.1:6379"
                    ),
                );
            }
        }
        cache.validate(&mut problems);
        redis.validate(&mut problems);
        tracing.validate(&mut problems);
        rocket_keys::check_database(&database, &mut problems);
        let database_url = match DatabaseUrl::parse(&database.url, state_directory().as_deref()) {
            Ok(url) => url,
            Err(problem) => {
                problems.invalid("databases.main.url", problem);
                DatabaseUrl::parse(DEFAULT_DATABASE_URL, None).expect("the default is valid")
            }
        };
        let settings = Settings {
            metrics,
            blocking,
            cache,
            redis,
            tracing,
            logging,
            database_url,
        };
        (Some(settings), problems)
    }
}

/// The backend keys and the backend each one uses, `None` where the feature is off.
fn backends(
    cache: &CacheSettings,
    blocking: &BlockingSettings,
) -> [(&'static str, Option<Backend>); 2] {
    [
        ("cache.backend", cache.enabled.then_some(cache.backend)),
        (
            "blocking.rate_limit.backend",
            blocking
                .rate_limit
                .filter(|_| blocking.enabled)
                .map(|limit| limit.backend),
        ),
    ]
}

impl Settings {
    /// Whether a backend in use (the cache, the rate limit) lives in the shared Redis.
    pub fn uses_redis(&self) -> bool {
        backends(&self.cache, &self.blocking)
            .iter()
            .any(|(_, backend)| *backend == Some(Backend::Redis))
    }
}

impl MetricsSettings {
    fn validate(&mut self, problems: &mut Problems) {
        if self.exclude_paths.iter().any(|path| !path.starts_with('/')) {
            problems.invalid("metrics.exclude_paths", "every entry must start with /");
        }
        self.export.validate(problems);
    }
}

impl ExportSettings {
    pub(crate) fn validate(&mut self, problems: &mut Problems) {
        if self.port.is_some() && self.port_range.is_some() {
            problems.invalid(
                "metrics.export.port",
                "set either `port` or `port_range`, not both",
            );
        }
        self.ports = match (self.port, self.port_range) {
            (Some(port), _) => PortRange::single(port).unwrap_or_else(|problem| {
                problems.invalid("metrics.export.port", problem);
                PortRange::default()
            }),
            (None, Some(range)) => range,
            (None, None) => PortRange::default(),
        };
        if self.allow.is_empty() {
            problems.invalid(
                "metrics.export.allow",
                "the list is empty, so nobody could read metrics; list CIDR blocks (\"0.0.0.0/0\" and \"::/0\" allow everyone)",
            );
        }
        if let Some(path) = &self.token_file {
            match read_token(path) {
                Ok(token) => self.token = Some(token),
                Err(problem) => problems.invalid("metrics.export.token_file", problem),
            }
        }
        for problem in self.basic_auth_users.problems() {
            problems.invalid("metrics.export.basic_auth_users", problem);
        }
        if let Some(file_sd) = &self.file_sd {
            file_sd.validate(problems);
        }
        if let Some(tls) = &mut self.tls {
            match tls.load() {
                Ok(identity) => tls.identity = Some(identity),
                Err(TlsFileError { key, message }) => problems.invalid(key, message),
            }
        }
    }
}

fn read_token(path: &Path) -> Result<Token, String> {
    let bytes = files::read_bounded(path, files::SECRET_LIMIT)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "{} is empty: it must hold the bearer token",
            path.display()
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} holds whitespace inside the token; a bearer token is one word",
            path.display()
        ));
    }
    Ok(Token(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_bcrypt_hashes_are_taken() {
        let good = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(check_bcrypt_hash(&good), Ok(()));
        let mut bad = vec![
            String::new(),
            "pw".to_string(),
            good.replacen("$2b$", "$2c$", 1),
            good.replacen("$04$", "$99$", 1),
            good[..59].to_string(),
            format!("{good}x"),
            good.replacen('$', "#", 1),
        ];
        // RUSTSEC-2026-0199: 60 bytes with a character of several bytes across the
        // places bcrypt slices the text at; refused before bcrypt sees it.
        for at in [2, 5, 7, 29, 30] {
            let mut text: Vec<char> = good.chars().collect();
            text[at] = 'é';
            let text: String = text.into_iter().collect();
            bad.push(text.chars().take(59).collect());
        }
        for hash in bad {
            assert!(check_bcrypt_hash(&hash).is_err(), "{hash:?} was taken");
        }
    }

    #[test]
    fn users_are_named_and_their_hashes_never_printed() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let users: BasicAuthUsers = serde_json::from_value(serde_json::json!({
            "prometheus": hash, "": hash, "a:b": hash, "grafana": "plain",
        }))
        .unwrap();
        let problems = users.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("\"grafana\"") && p.contains("bcrypt")));
        assert!(problems.iter().any(|p| p.contains("\"a:b\"")));
        let debug = format!("{users:?}");
        assert!(
            debug.contains("prometheus") && !debug.contains(&hash),
            "{debug}"
        );
    }
}
