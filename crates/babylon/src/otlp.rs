//! Span export over OTLP (`tracing.otlp.*`): a server span per request and a client span
//! per database statement and Redis command, under the request's own trace context, so
//! that the trace id a collector shows is the one of the answer's `traceparent`, the
//! exemplars and the log line.
//!
//! For application code: [`Tracer`], a request guard, opens a [`Span`] of the handler's
//! own work (a call to another service, say) under the request's span:
//!
//! ```
//! use babylon::otlp::Tracer;
//!
//! #[rocket::get("/quote")]
//! async fn quote(tracer: Tracer) -> String {
//!     let mut span = tracer.span("GET partner /prices");
//!     span.set_attribute("server.address", "partner.internal");
//!     // The partner's spans become children of this one.
//!     let _traceparent = span.traceparent();
//!     // … the call; on failure: span.fail("timeout");
//!     span.end();
//!     "42".to_string()
//! }
//! ```
//!
//! The spans are built here from ids babylon already has (`crate::trace`), not by an
//! OpenTelemetry tracer: one `SpanData` per finished span, put in a bounded queue (never
//! blocking a request: a span that finds it full is dropped and counted), from which a
//! thread of its own sends batches through opentelemetry-otlp's gRPC exporter. Not the
//! SDK's `BatchSpanProcessor`: it drops spans from a full queue without a trace outside
//! its own logs, and babylon counts every span it does not deliver. With no endpoint set
//! nothing of this exists and requests pay one `None` check.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Build, Orbit, Rocket};

use crate::metrics::counter_vec;
use crate::metrics::exemplar::unix_nanos;
use crate::prometheus::{IntCounter, Registry};
use crate::settings::{OtlpEndpoint, OtlpSettings};
use crate::trace::TraceContext;

/// `babylon_otlp_spans_total{outcome}`: registered whether or not spans are exported, so
/// that the exposition lists the same families in every configuration.
#[derive(Clone)]
pub(crate) struct SpanCounts {
    exported: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
}

impl SpanCounts {
    pub(crate) fn register(registry: &Registry) -> crate::prometheus::Result<Self> {
        let family = counter_vec(
            registry,
            "babylon_otlp_spans_total",
            "Finished spans for the OTLP collector of tracing.otlp.endpoint, by outcome: \
             exported (the collector accepted them), failed (their export failed) or \
             dropped (the queue of tracing.otlp.queue_size was full); failed and dropped \
             spans are lost.",
            &["outcome"],
        )?;
        Ok(SpanCounts {
            exported: family.with_label_values(&["exported"]),
            failed: family.with_label_values(&["failed"]),
            dropped: family.with_label_values(&["dropped"]),
        })
    }
}

/// The spans of this process' requests, for [`Tracer`]: `None` when none are exported.
/// Managed as Rocket state whatever the settings.
pub(crate) struct SpanSink(pub(crate) Option<Spans>);

/// A request guard that opens [`Span`]s of a handler's own work under its request's span:
/// `tracer: Tracer` among the handler's parameters. It never fails: with
/// `tracing.otlp.endpoint` unset, for a trace its caller did not sample, or with
/// `tracing.enabled = false`, its spans are exported nowhere (and without tracing they
/// have no `traceparent`).
pub struct Tracer {
    spans: Option<Spans>,
    trace: Option<TraceContext>,
}

impl Tracer {
    /// The tracer of a request with context `trace`, exporting to `sink`.
    pub(crate) fn new(sink: Option<&SpanSink>, trace: Option<TraceContext>) -> Tracer {
        Tracer {
            spans: sink.and_then(|sink| sink.0.clone()),
            trace,
        }
    }

    /// Opens a client span named `name` under the request's span, starting now; it ends
    /// when [`Span::end`] is called or it is dropped. Name it by what it does, with few
    /// distinct values (`GET partner /prices`, not the full URL): trace backends group by
    /// name.
    pub fn span(&self, name: impl Into<Cow<'static, str>>) -> Span {
        let context = self.trace.map(|trace| trace.child());
        Span {
            export: self
                .spans
                .clone()
                .filter(|_| context.is_some_and(|context| context.is_sampled())),
            context,
            name: name.into(),
            started: Instant::now(),
            attributes: Vec::new(),
            error: None,
        }
    }
}

/// A span of a handler's own work, from [`Tracer::span`]: exported under the request's
/// span when it ends (with [`Span::end`] or when dropped).
pub struct Span {
    export: Option<Spans>,
    context: Option<TraceContext>,
    name: Cow<'static, str>,
    started: Instant,
    attributes: Vec<KeyValue>,
    error: Option<Cow<'static, str>>,
}

/// The value of a span attribute: text, an integer, a float or a flag.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// Text, e.g. `server.address`.
    Text(String),
    /// An integer, e.g. `http.response.status_code`.
    Int(i64),
    /// A float.
    Float(f64),
    /// A flag.
    Bool(bool),
}

impl From<&str> for AttributeValue {
    fn from(text: &str) -> Self {
        AttributeValue::Text(text.to_string())
    }
}

impl From<String> for AttributeValue {
    fn from(text: String) -> Self {
        AttributeValue::Text(text)
    }
}

impl From<i64> for AttributeValue {
    fn from(value: i64) -> Self {
        AttributeValue::Int(value)
    }
}

impl From<u16> for AttributeValue {
    fn from(value: u16) -> Self {
        AttributeValue::Int(i64::from(value))
    }
}

impl From<f64> for AttributeValue {
    fn from(value: f64) -> Self {
        AttributeValue::Float(value)
    }
}

impl From<bool> for AttributeValue {
    fn from(value: bool) -> Self {
        AttributeValue::Bool(value)
    }
}

impl Span {
    /// The `traceparent` header naming this span, for the call it times: the callee
    /// continues the trace under it. `None` with `tracing.enabled = false`.
    pub fn traceparent(&self) -> Option<String> {
        self.context.map(|context| context.traceparent())
    }

    /// Sets attribute `key`; OpenTelemetry's semantic conventions name the usual ones
    /// (`server.address`, `http.request.method`, `http.response.status_code`,
    /// `rpc.service`). A key set twice keeps the last value.
    pub fn set_attribute(&mut self, key: &'static str, value: impl Into<AttributeValue>) {
        let value = match value.into() {
            AttributeValue::Text(text) => opentelemetry::Value::from(text),
            AttributeValue::Int(value) => opentelemetry::Value::from(value),
            AttributeValue::Float(value) => opentelemetry::Value::from(value),
            AttributeValue::Bool(value) => opentelemetry::Value::from(value),
        };
        self.attributes
            .retain(|attribute| attribute.key.as_str() != key);
        self.attributes.push(KeyValue::new(key, value));
    }

    /// Marks the work failed: the span gets an error status and `error.type =
    /// error_type`, a short class of failure (`timeout`, `500`, `connection_refused`).
    pub fn fail(&mut self, error_type: impl Into<Cow<'static, str>>) {
        self.error = Some(error_type.into());
    }

    /// Ends the span now; dropping it does the same.
    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(spans), Some(context)) = (&self.export, &self.context) else {
            return;
        };
        let mut attributes = std::mem::take(&mut self.attributes);
        let status = status_of(self.error.take(), &mut attributes);
        spans.finish(Finished {
            span: context,
            parent_is_remote: false,
            kind: SpanKind::Client,
            name: std::mem::take(&mut self.name),
            started: self.started,
            ended: Instant::now(),
            attributes,
            status,
        });
    }
}

/// Where finished spans go. Cloned into every layer that makes spans; the exporter starts
/// when Rocket ignites (its gRPC channel runs on Rocket's runtime), and spans finished
/// before that are dropped.
#[derive(Clone)]
pub(crate) struct Spans(Arc<Exporting>);

struct Exporting {
    settings: OtlpSettings,
    endpoint: OtlpEndpoint,
    counts: SpanCounts,
    /// Set when the exporter starts.
    queue: OnceLock<SyncSender<Message>>,
    scope: InstrumentationScope,
}

/// What the export thread is sent.
// Every message but the last is a span: boxing it would cost an allocation per span and
// save nothing.
#[allow(clippy::large_enum_variant)]
enum Message {
    Span(SpanData),
    /// Send what is queued, then say so and stop.
    Drain(SyncSender<()>),
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    #[error("tracing.otlp.endpoint = \"{endpoint}\": the OTLP exporter cannot be built: {reason}")]
    Build {
        endpoint: OtlpEndpoint,
        reason: String,
    },
    #[error("the OTLP exporter must start inside the Tokio runtime that serves requests")]
    NoRuntime,
    #[error("the OTLP export thread cannot be started: {0}")]
    Thread(std::io::Error),
}

impl Spans {
    /// The span sink of `settings`, `None` when no endpoint is set.
    pub(crate) fn new(settings: &OtlpSettings, counts: SpanCounts) -> Option<Spans> {
        let endpoint = settings.endpoint.clone()?;
        Some(Spans(Arc::new(Exporting {
            settings: settings.clone(),
            endpoint,
            counts,
            queue: OnceLock::new(),
            scope: InstrumentationScope::builder("babylon")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })))
    }

    /// Builds the exporter and starts the thread that sends its batches; call it inside
    /// the runtime that will keep running while spans are exported (tonic's channel
    /// spawns its worker there). Nothing connects yet: the channel connects on the first
    /// export, and anew after a failure, so a collector that comes up later is reached.
    pub(crate) fn start(&self) -> Result<(), ExportError> {
        let runtime =
            rocket::tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let exporting = &self.0;
        if exporting.queue.get().is_some() {
            return Ok(());
        }
        if runtime.runtime_flavor() == rocket::tokio::runtime::RuntimeFlavor::CurrentThread {
            // The export thread waits for each export on this runtime, which only a
            // thread inside its `block_on` drives (Rocket's blocking local client, say).
            rocket::warn!("babylon: Rocket runs on a single-threaded runtime: spans reach the OTLP collector only while it is serving a request");
        }
        // The SDK's detectors first (OTEL_RESOURCE_ATTRIBUTES, telemetry.sdk.*), then the
        // setting, which wins over OTEL_SERVICE_NAME.
        let resource = Resource::builder()
            .with_service_name(exporting.settings.service_name.clone())
            .build();
        let exporter = Exporter {
            connection: connect(&exporting.endpoint, &resource, &runtime)?,
            resource,
            runtime,
            counts: exporting.counts.clone(),
            failing: false,
            endpoint: exporting.endpoint.clone(),
        };
        let (queue, waiting) =
            std::sync::mpsc::sync_channel(exporting.settings.queue_size.get() as usize);
        let interval =
            Duration::from_millis(u64::from(exporting.settings.export_interval_ms.get()));
        std::thread::Builder::new()
            .name("babylon-otlp".to_string())
            .spawn(move || send_batches(waiting, exporter, interval))
            .map_err(ExportError::Thread)?;
        let _ = exporting.queue.set(queue);
        Ok(())
    }

    /// Sends what is queued and stops the export thread, waiting at most 5 s for it. It
    /// blocks: call it off the runtime's workers.
    pub(crate) fn shut_down(&self) {
        const PATIENCE: Duration = Duration::from_secs(5);
        let Some(queue) = self.0.queue.get() else {
            return;
        };
        let deadline = Instant::now() + PATIENCE;
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let mut drain = Message::Drain(done);
        // Behind every span queued so far; a full queue is waited for, up to the patience.
        loop {
            match queue.try_send(drain) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    drain = again;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => {
                    rocket::warn!(
                        "babylon: spans still queued for the OTLP collector at shutdown are lost"
                    );
                    return;
                }
            }
        }
        if finished
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            rocket::warn!(
                "babylon: spans still queued for the OTLP collector at shutdown may be lost"
            );
        }
    }

    /// The server span of a request answered with `span.status`, from `started` (its
    /// arrival) to `ended`.
    pub(crate) fn request(
        &self,
        trace: &TraceContext,
        started: Instant,
        ended: Instant,
        span: RequestSpan<'_>,
    ) {
        if !trace.is_sampled() {
            return;
        }
        let method = span.method.as_str();
        let mut attributes = Vec::with_capacity(6);
        attributes.push(KeyValue::new("http.request.method", method));
        let name = match span.route {
            Some(route) => {
                attributes.push(KeyValue::new("http.route", route.to_string()));
                Cow::Owned(format!("{method} {route}"))
            }
            None => Cow::Borrowed(method),
        };
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(span.status),
        ));
        if let Some(client) = span.client {
            attributes.push(KeyValue::new("client.address", client.to_string()));
        }
        if let Some(reason) = span.blocked {
            attributes.push(KeyValue::new("babylon.blocked", reason));
        }
        // A server span is an error for the server's own failures only (OpenTelemetry's
        // HTTP conventions): a 4xx is the client's.
        let error = (span.status >= 500).then(|| span.status.to_string());
        let status = status_of(error, &mut attributes);
        self.finish(Finished {
            span: trace,
            parent_is_remote: true,
            kind: SpanKind::Server,
            name,
            started,
            ended,
            attributes,
            status,
        });
    }

    /// A client span under the request `trace`: one statement or command it made, from
    /// `started` to `ended`.
    pub(crate) fn call(&self, trace: &TraceContext, started: Instant, ended: Instant, call: Call) {
        if !trace.is_sampled() {
            return;
        }
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new("db.system.name", call.system));
        let name = match (call.operation, call.collection) {
            (Some(operation), Some(collection)) => Cow::Owned(format!("{operation} {collection}")),
            (Some(operation), None) => Cow::Borrowed(operation),
            (None, _) => Cow::Borrowed(call.system),
        };
        if let Some(operation) = call.operation {
            attributes.push(KeyValue::new("db.operation.name", operation));
        }
        if let Some(collection) = call.collection {
            attributes.push(KeyValue::new("db.collection.name", collection.to_string()));
        }
        let status = status_of(call.error, &mut attributes);
        self.finish(Finished {
            span: &trace.child(),
            parent_is_remote: false,
            kind: SpanKind::Client,
            name,
            started,
            ended,
            attributes,
            status,
        });
    }

    fn finish(&self, span: Finished<'_>) {
        let Some(queue) = self.0.queue.get() else {
            return;
        };
        let trace_id = opentelemetry::trace::TraceId::from(span.span.trace_id().get());
        let span_id = span.span.span_id().get();
        let parent = span.span.parent_span_id();
        let span = SpanData {
            span_context: SpanContext::new(
                trace_id,
                opentelemetry::trace::SpanId::from(span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: opentelemetry::trace::SpanId::from(parent.map_or(0, |p| p.get())),
            parent_span_is_remote: parent.is_some() && span.parent_is_remote,
            span_kind: span.kind,
            name: span.name,
            start_time: wall_clock(span.started),
            end_time: wall_clock(span.ended),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: span.status,
            instrumentation_scope: self.0.scope.clone(),
        };
        // Never waits: a request is not held up by a slow or absent collector.
        if queue.try_send(Message::Span(span)).is_err() {
            self.0.counts.dropped.inc();
        }
    }
}

/// What the server span of a request says besides its ids and times.
pub(crate) struct RequestSpan<'a> {
    pub(crate) method: rocket::http::Method,
    /// The route template; `None` for a request no route matched or one refused before
    /// routing (the span is then named by the method alone: never by the raw path).
    pub(crate) route: Option<&'a str>,
    pub(crate) status: u16,
    pub(crate) client: Option<IpAddr>,
    /// Why the blocking policy refused the request, if it did.
    pub(crate) blocked: Option<&'static str>,
}

/// A database statement or Redis command, as its client span names it (OpenTelemetry's
/// database conventions).
pub(crate) struct Call<'a> {
    /// `db.system.name`: `postgresql`, `sqlite`, `redis`.
    pub(crate) system: &'static str,
    /// `db.operation.name`: `INSERT`, `GET`, `EVALSHA`, when known.
    pub(crate) operation: Option<&'static str>,
    /// `db.collection.name`: the table written, when known.
    pub(crate) collection: Option<&'a str>,
    /// `error.type` of a failed call.
    pub(crate) error: Option<&'static str>,
}

/// The status of a span whose work failed with `error` (an error status, and `error.type`
/// among its `attributes`), or of one that did not.
fn status_of(
    error: Option<impl Into<opentelemetry::Value>>,
    attributes: &mut Vec<KeyValue>,
) -> Status {
    match error {
        Some(error) => {
            attributes.push(KeyValue::new("error.type", error));
            Status::error("")
        }
        None => Status::Unset,
    }
}

struct Finished<'a> {
    /// The span's own ids and its parent's.
    span: &'a TraceContext,
    /// Whether the parent is another process' (a caller's span).
    parent_is_remote: bool,
    kind: SpanKind,
    name: Cow<'static, str>,
    started: Instant,
    ended: Instant,
    attributes: Vec<KeyValue>,
    status: Status,
}

/// The wall-clock time of `instant`, as exemplars place theirs.
fn wall_clock(instant: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_nanos(instant))
}

/// opentelemetry-otlp's gRPC exporter of `endpoint`, its spans filed under `resource`.
/// Built inside `runtime`: tonic's channel spawns its worker there. Nothing connects yet.
fn connect(
    endpoint: &OtlpEndpoint,
    resource: &Resource,
    runtime: &rocket::tokio::runtime::Handle,
) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let _inside = runtime.enter();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.as_str())
        .build()
        .map_err(|error| ExportError::Build {
            endpoint: endpoint.clone(),
            reason: error.to_string(),
        })?;
    exporter.set_resource(resource);
    Ok(exporter)
}

/// Sends the spans of `waiting` in batches of at most [`OtlpSettings::BATCH_SIZE`], a
/// batch as soon as it is full or `interval` after the last one, until told to drain.
fn send_batches(waiting: Receiver<Message>, mut exporter: Exporter, interval: Duration) {
    let mut batch = Vec::with_capacity(OtlpSettings::BATCH_SIZE);
    let mut due = Instant::now() + interval;
    loop {
        match waiting.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(Message::Span(span)) => {
                batch.push(span);
                if batch.len() < OtlpSettings::BATCH_SIZE {
                    continue;
                }
            }
            Ok(Message::Drain(done)) => {
                exporter.export(std::mem::take(&mut batch));
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                exporter.export(std::mem::take(&mut batch));
                return;
            }
        }
        exporter.export(std::mem::replace(
            &mut batch,
            Vec::with_capacity(OtlpSettings::BATCH_SIZE),
        ));
        due = Instant::now() + interval;
    }
}

/// opentelemetry-otlp's exporter, used by the export thread alone: it counts what it
/// sends into `babylon_otlp_spans_total`, says once when exports start failing and once
/// when they work again, and after a failed export sends the next batch on a new
/// connection.
///
/// Why a new connection: a collector whose host died or whose link dropped leaves the
/// HTTP/2 connection open with nobody at the other end; every export on it times out, for
/// ever, while tonic waits for a reset that never comes. HTTP/2 pings would find it out,
/// but gRPC servers refuse frequent pings (grpc-go's default allows one per five minutes),
/// so the failed export itself is the signal.
struct Exporter {
    connection: opentelemetry_otlp::SpanExporter,
    resource: Resource,
    runtime: rocket::tokio::runtime::Handle,
    counts: SpanCounts,
    /// Whether the last export failed.
    failing: bool,
    endpoint: OtlpEndpoint,
}

impl Exporter {
    /// Sends `batch`, waiting for the collector's answer (at most
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s).
    fn export(&mut self, batch: Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = batch.len() as u64;
        match self.runtime.block_on(self.connection.export(batch)) {
            Ok(()) => {
                self.counts.exported.inc_by(spans);
                if std::mem::replace(&mut self.failing, false) {
                    rocket::info!(
                        "babylon: spans reach the OTLP collector at {} again",
                        self.endpoint
                    );
                }
            }
            Err(error) => {
                self.counts.failed.inc_by(spans);
                if !std::mem::replace(&mut self.failing, true) {
                    rocket::warn!(
                        "babylon: {spans} spans could not be exported to the OTLP collector at {} and are lost ({error}); babylon_otlp_spans_total{{outcome=\"failed\"}} counts every lost span until exports work again",
                        self.endpoint
                    );
                }
                if let Ok(connection) = connect(&self.endpoint, &self.resource, &self.runtime) {
                    self.connection = connection;
                }
            }
        }
    }
}

/// Starts the exporter when Rocket ignites and drains it when Rocket shuts down.
pub(crate) struct SpanExport(pub(crate) Spans);

#[rocket::async_trait]
impl Fairing for SpanExport {
    fn info(&self) -> Info {
        Info {
            name: "babylon OTLP span export",
            kind: Kind::Ignite | Kind::Shutdown,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> rocket::fairing::Result {
        match self.0.start() {
            Ok(()) => {
                crate::logging::start_up(format_args!(
                    "babylon: exporting spans to {} (OTLP/gRPC)",
                    self.0 .0.endpoint
                ));
                Ok(rocket)
            }
            Err(error) => {
                crate::logging::start_up_failed(format_args!("babylon: {error}"));
                Err(rocket)
            }
        }
    }

    async fn on_shutdown(&self, _: &Rocket<Orbit>) {
        let spans = self.0.clone();
        let _ = rocket::tokio::task::spawn_blocking(move || spans.shut_down()).await;
    }
}
