//! Typed settings, read with figment from Rocket.toml profiles and then the environment.
//!
//! Every key of our sections (`metrics`, `blocking`, `cache`, `databases`) is also settable as
//! `BABYLON_<SECTION>__<KEY>`, with `__` between nesting levels, for example
//! `BABYLON_METRICS__EXPORT__PORT_RANGE=9001-9010`. Rocket's own keys keep their `ROCKET_`
//! variables (`ROCKET_PORT`, `ROCKET_PROFILE`, …).
//!
//! Loading validates everything up front: a wrong value becomes one [`ConfigError`] whose
//! message names the key and the problem.

mod database_url;
mod redis_url;
mod types;

use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Serialized};
use figment::Figment;
use serde::Deserialize;

pub(crate) use database_url::state_directory;
pub use database_url::{DatabaseUrl, Vendor};
pub use redis_url::RedisUrl;
pub use types::{
    canonical_ip, Buckets, Cidr, CidrList, ExportAddress, Ipv6Prefix, Namespace, PortRange, UrlPath,
};

/// Prefix of the environment variables that override our settings.
pub const ENV_PREFIX: &str = "BABYLON_";

/// All of babylon's own settings, validated. Read them from [`App::settings`](crate::App::settings);
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
    /// `databases.main.url`, validated (rocket_db_pools reads the rest of `databases.main`).
    pub database_url: DatabaseUrl,
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

    fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl_seconds.get() > Self::MAX_TTL_SECONDS {
            return Err(ConfigError::invalid(
                "cache.ttl_seconds",
                format!(
                    "{} s is more than a year ({} s), the longest an entry may be served",
                    self.ttl_seconds,
                    Self::MAX_TTL_SECONDS
                ),
            ));
        }
        Ok(())
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

    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must be one word, e.g. \"babylon\"",
            ));
        }
        if self.pool_size.get() > Self::MAX_POOL_SIZE {
            return Err(ConfigError::invalid(
                "redis.pool_size",
                format!(
                    "{} connections per worker is more than the {} allowed; one connection multiplexes every command, so a few are plenty",
                    self.pool_size,
                    Self::MAX_POOL_SIZE
                ),
            ));
        }
        if let Some(path) = &self.tls_ca_file {
            const KEY: &str = "redis.tls_ca_file";
            if !self.url.as_ref().is_some_and(RedisUrl::is_tls) {
                return Err(ConfigError::invalid(
                    KEY,
                    "is only for a TLS connection: redis.url must start with rediss://",
                ));
            }
            let pem = std::fs::read(path).map_err(|error| {
                ConfigError::invalid(KEY, format!("cannot read {}: {error}", path.display()))
            })?;
            if !pem
                .windows(CERTIFICATE_PEM.len())
                .any(|window| window == CERTIFICATE_PEM)
            {
                return Err(ConfigError::invalid(
                    KEY,
                    format!(
                        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        path.display()
                    ),
                ));
            }
            self.tls_ca = Some(pem);
        }
        Ok(())
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
}

/// The name of babylon's database under `databases`: `databases.main.*`.
const DATABASE_NAME: &str = "main";

/// `databases.main.*` as rocket_db_pools will read it: its own `Config`, extracted the way
/// its `Database::init` does (same focus, same defaults), so that a wrong value stops
/// start-up here with the key named, and a key it does not know is refused rather than
/// ignored. Its own type, not a copy of its fields, keeps the check in step on upgrade.
fn database_config(figment: &Figment) -> Result<rocket_db_pools::Config, ConfigError> {
    type Table = std::collections::BTreeMap<String, figment::value::Value>;
    let section = format!("databases.{DATABASE_NAME}");
    let in_section = |mut error: figment::Error| {
        let mut path = vec!["databases".to_string(), DATABASE_NAME.to_string()];
        path.append(&mut error.path);
        error.path = path;
        ConfigError::from_figment(error)
    };
    let workers: usize = figment
        .extract_inner(rocket::Config::WORKERS)
        .unwrap_or_else(|_| rocket::Config::default().workers);
    let config: rocket_db_pools::Config = figment
        .focus(&section)
        .join(Serialized::default("max_connections", workers * 4))
        .join(Serialized::default("connect_timeout", 5))
        .extract()
        .map_err(in_section)?;
    let known: Table = Figment::from(Serialized::defaults(&config))
        .extract()
        .map_err(ConfigError::from_figment)?;
    let given: Table = figment.focus(&section).extract().map_err(in_section)?;
    if let Some(unknown) = given.keys().find(|key| !known.contains_key(*key)) {
        let keys: Vec<String> = known.keys().map(|key| format!("`{key}`")).collect();
        let key = format!("{section}.{unknown}");
        let origin = origin_of(figment, &key, "");
        return Err(ConfigError::Parse(format!(
            "setting `{key}`{origin}: unknown key; the keys here are {}",
            keys.join(", ")
        )));
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
    /// Requests whose path starts with one of these are not recorded at all.
    pub exclude_paths: Vec<String>,
    /// Most label sets a custom family may grow to; further ones record as `<overflow>`.
    pub max_series_per_family: std::num::NonZeroUsize,
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
            exclude_paths: Vec::new(),
            max_series_per_family: std::num::NonZeroUsize::new(1000).expect("nonzero"),
            export: ExportSettings::default(),
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
    /// What to do when every port of the range is taken.
    pub when_ports_taken: WhenPortsTaken,
    /// Where this process announces its export target for Prometheus' file_sd.
    pub file_sd: Option<FileSdSettings>,
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
            when_ports_taken: WhenPortsTaken::Fail,
            file_sd: None,
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
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.directory.is_dir() {
            return Err(ConfigError::invalid(
                "metrics.export.file_sd.directory",
                format!("{} is not an existing directory", self.directory.display()),
            ));
        }
        if let Some(host) = &self.host {
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(ConfigError::invalid(
                    "metrics.export.file_sd.host",
                    format!("`{host}` is not a host name or address"),
                ));
            }
        }
        if let Some(bad) = self.labels.keys().find(|name| !is_label_name(name)) {
            return Err(ConfigError::invalid(
                "metrics.export.file_sd.labels",
                format!("`{bad}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"),
            ));
        }
        Ok(())
    }
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

/// A setting that stops start-up. The message names the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing failed (wrong type, unknown key, bad value); figment names the key.
    #[error("invalid {0}")]
    Parse(String),
    /// A value parsed but breaks a rule that spans keys or needs the file system.
    #[error("invalid setting `{key}`: {problem}")]
    Invalid {
        /// The dotted key, e.g. `metrics.export.port`.
        key: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            problem: problem.into(),
        }
    }

    /// One line from figment's first error: the dotted key, where the value came from
    /// (file or variable), and what is wrong.
    fn from_figment(error: figment::Error) -> Self {
        let Some(first) = error.into_iter().next() else {
            return ConfigError::Parse("invalid configuration".into());
        };
        let key = first.path.join(".");
        let origin = first.metadata.as_ref().map(|metadata| {
            match (env_prefix(&metadata.name), &metadata.source) {
                // figment renders env keys as `A.B`; name the variable the user really set.
                (Some(prefix), _) if !first.path.is_empty() => {
                    format!(" (from {prefix}{})", first.path.join("__").to_uppercase())
                }
                (_, Some(source)) => format!(" (in {source})"),
                (_, None) => format!(" (in {})", metadata.name),
            }
        });
        let origin = origin.unwrap_or_default();
        ConfigError::Parse(if key.is_empty() {
            format!("{}{origin}", first.kind)
        } else {
            format!("setting `{key}`{origin}: {}", describe(&first.kind))
        })
    }
}

/// figment's description of a problem, except where figment wraps a list of names in a
/// second pair of backticks (`` `one of `a`, `b`` ``): an unknown key or value.
fn describe(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let names = |names: &[&str]| -> String {
        let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
        quoted.join(", ")
    };
    match kind {
        Kind::UnknownField(_, []) => "unknown key; this section has no keys".into(),
        Kind::UnknownField(_, expected) => {
            format!("unknown key; the keys here are {}", names(expected))
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value `{found}`; the values here are {}",
                names(expected)
            )
        }
        other => other.to_string(),
    }
}

/// Top-level keys read by other Rocket components; Rocket's own keys are found at run time.
const OTHER_COMPONENTS_KEYS: [&str; 5] = ["databases", "secret_key", "tls", "mtls", "template_dir"];

/// Refuses top-level keys nobody reads: a misspelt section (`[default.metric]`,
/// `BABYLON_METRIC__ENABLED`) would otherwise be silently ignored.
fn reject_unknown_sections(figment: &Figment) -> Result<(), ConfigError> {
    type Table = std::collections::BTreeMap<String, figment::value::Value>;
    let present: Table = figment.extract().map_err(ConfigError::from_figment)?;
    let rocket_keys: Table = Figment::from(rocket::Config::default())
        .extract()
        .map_err(ConfigError::from_figment)?;
    let known = |key: &str| {
        ["metrics", "blocking", "cache", "redis"].contains(&key)
            || OTHER_COMPONENTS_KEYS.contains(&key)
            || rocket_keys.contains_key(key)
    };
    // ROCKET_* variables are Rocket's namespace (ROCKET_CONFIG, ROCKET_PROFILE …): its rules.
    let from_rocket_env = |key: &str| {
        figment
            .find_metadata(key)
            .is_some_and(|metadata| env_prefix(&metadata.name) == Some("ROCKET_"))
    };
    let Some(key) = present
        .keys()
        .find(|key| !known(key) && !from_rocket_env(key))
    else {
        return Ok(());
    };
    let origin = origin_of(figment, key, "__…");
    Err(ConfigError::Parse(format!(
        "setting `{key}`{origin}: unknown section; babylon reads `metrics`, `blocking`, `cache`, `redis`, `databases` and Rocket's own keys"
    )))
}

/// Where the value of the dotted `key` came from, as ` (from BABYLON_A__B<suffix>)` or
/// ` (in Rocket.toml)`; empty when figment does not know.
fn origin_of(figment: &Figment, key: &str, suffix: &str) -> String {
    figment
        .find_metadata(key)
        .map(
            |metadata| match (env_prefix(&metadata.name), &metadata.source) {
                (Some(prefix), _) => format!(
                    " (from {prefix}{}{suffix})",
                    key.replace('.', "__").to_uppercase()
                ),
                (None, Some(source)) => format!(" (in {source})"),
                (None, None) => format!(" (in {})", metadata.name),
            },
        )
        .unwrap_or_default()
}

/// `BABYLON_` from figment's provider name "`BABYLON_` environment variable(s)".
fn env_prefix(provider_name: &str) -> Option<&str> {
    let rest = provider_name.strip_suffix("` environment variable(s)")?;
    rest.strip_prefix('`')
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

impl Settings {
    /// Reads and validates every section. Rocket's own keys are checked too, so that a
    /// bad `port` is reported here as one line rather than by Rocket at launch.
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        rocket::Config::try_from(figment).map_err(ConfigError::from_figment)?;
        reject_unknown_sections(figment)?;
        let Sections {
            mut metrics,
            blocking,
            cache,
            mut redis,
        } = figment.extract().map_err(ConfigError::from_figment)?;
        metrics.validate()?;
        for (key, backend) in backends(&cache, &blocking) {
            if backend == Some(Backend::Redis) && redis.url.is_none() {
                return Err(ConfigError::invalid(
                    "redis.url",
                    format!(
                        "`{key} = \"redis\"` needs the Redis to use, e.g. redis://127.0.0.1:6379"
                    ),
                ));
            }
        }
        cache.validate()?;
        redis.validate()?;
        let database = database_config(figment)?;
        let database_url = DatabaseUrl::parse(&database.url, state_directory().as_deref())
            .map_err(|problem| ConfigError::invalid("databases.main.url", problem))?;
        Ok(Settings {
            metrics,
            blocking,
            cache,
            redis,
            database_url,
        })
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
    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.exclude_paths.iter().any(|path| !path.starts_with('/')) {
            return Err(ConfigError::invalid(
                "metrics.exclude_paths",
                "every entry must start with /",
            ));
        }
        self.export.validate()
    }
}

impl ExportSettings {
    pub(crate) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.port.is_some() && self.port_range.is_some() {
            return Err(ConfigError::invalid(
                "metrics.export.port",
                "set either `port` or `port_range`, not both",
            ));
        }
        self.ports = match (self.port, self.port_range) {
            (Some(port), _) => PortRange::single(port)
                .map_err(|problem| ConfigError::invalid("metrics.export.port", problem))?,
            (None, Some(range)) => range,
            (None, None) => PortRange::default(),
        };
        if self.allow.is_empty() {
            return Err(ConfigError::invalid(
                "metrics.export.allow",
                "the list is empty, so nobody could read metrics; list CIDR blocks (\"0.0.0.0/0\" and \"::/0\" allow everyone)",
            ));
        }
        if let Some(path) = &self.token_file {
            self.token = Some(read_token(path)?);
        }
        if let Some(file_sd) = &self.file_sd {
            file_sd.validate()?;
        }
        Ok(())
    }
}

fn read_token(path: &Path) -> Result<Token, ConfigError> {
    const KEY: &str = "metrics.export.token_file";
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::invalid(KEY, format!("cannot read {}: {error}", path.display()))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::invalid(
            KEY,
            format!("{} is empty: it must hold the bearer token", path.display()),
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::invalid(
            KEY,
            format!(
                "{} holds whitespace inside the token; a bearer token is one word",
                path.display()
            ),
        ));
    }
    Ok(Token(token.to_string()))
}
