//! Telemetry for Rust services that keeps every trace whole across boundaries: HTTP in and
//! out, gRPC, message queues, spawned tasks, and log lines. Built on the `opentelemetry`
//! crates and `tracing` — no second SDK. Depends on no other Strand crate.
//!
//! # Set-up
//!
//! One call from a config (YAML or code; the standard `OTEL_*` variables win) installs the
//! tracer provider with an OTLP exporter, the W3C trace-context + baggage propagator, and a
//! `tracing` subscriber whose log lines carry `trace_id` and `span_id`. The guard flushes
//! and shuts down on drop, so no span recorded before shutdown is lost.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = strand_instrument::TelemetryConfig::from_yaml(
//!     "service_name: gateway\nendpoint: http://localhost:4317\nsampler: { type: parent_based_trace_id_ratio, ratio: 0.2 }\n",
//! )?;
//! let _telemetry = strand_instrument::init(cfg)?;
//! tracing::info!(patient = 42, "report received"); // {"trace_id": ..., "span_id": ..., ...}
//! # Ok(()) }
//! ```
//!
//! A service's whole set-up, as the README shows it (the README's lines are checked to be
//! these):
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
//! # async fn submit() -> &'static str { "ok" }
//! let cfg = strand_instrument::TelemetryConfig::from_yaml(&std::fs::read_to_string("telemetry.yaml")?)?;
//! let _telemetry = strand_instrument::init(cfg)?; // flushes and shuts down on drop
//! let app = axum::Router::new()
//!     .route("/reports", axum::routing::post(submit))
//!     .layer(strand_instrument::http_server::HttpServerLayer::new());
//! # let _: axum::Router = app;
//! # Ok(()) }
//! ```
//!
//! # Integrations (one feature each)
//!
//! | boundary | feature | what |
//! |---|---|---|
//! | HTTP server | `axum` | [`http_server::HttpServerLayer`]: SERVER span `METHOD /route/{template}` |
//! | HTTP client | `reqwest` | [`http_client::TracedRequest::send_traced`]: CLIENT span, `traceparent` sent |
//! | gRPC | `tonic` | [`grpc::GrpcServerLayer`], [`grpc::GrpcClientLayer`] |
//! | NATS / JetStream | `nats` | [`nats::publish_jetstream`], [`nats::process_jetstream`] |
//! | AMQP 0.9.1 | `amqp` | [`amqp::publish`], [`amqp::process`] |
//! | tasks | always | [`spawn_in_trace`], [`spawn_detached`], [`spawn_blocking_in_trace`] |
//! | any string map | always | [`propagation::inject`] / [`propagation::extract`] |
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! let app: Router = Router::new()
//!     .route("/patients/{id}", get(|| async { "ok" }))
//!     .layer(strand_instrument::http_server::HttpServerLayer::new()); // after the routes
//! # }
//! ```
//!
//! An HTTP call from a handler carries the trace on:
//!
//! ```no_run
//! # #[cfg(feature = "reqwest")]
//! # async fn f() -> reqwest::Result<()> {
//! use strand_instrument::http_client::TracedRequest as _;
//! let patient = reqwest::Client::new().get("http://user-service/patients/42").send_traced().await?;
//! # Ok(()) }
//! ```
//!
//! gRPC with tonic, both ends:
//!
//! ```no_run
//! # #[cfg(feature = "tonic")]
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use strand_instrument::grpc::{GrpcClientLayer, GrpcServerLayer};
//! // server: every method gets a SERVER span parented to the caller
//! let server = tonic::transport::Server::builder().layer(GrpcServerLayer);
//! // client: wrap the channel, then hand it to a generated client (`Client::new(channel)`)
//! let channel = tonic::transport::Endpoint::from_static("http://data-service:50051").connect_lazy();
//! let channel = tower::ServiceBuilder::new().layer(GrpcClientLayer).service(channel);
//! # let _ = (server, channel); Ok(()) }
//! ```
//!
//! NATS JetStream, publisher and consumer:
//!
//! ```no_run
//! # #[cfg(feature = "nats")]
//! # async fn f(js: async_nats::jetstream::Context, msg: async_nats::jetstream::Message) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use strand_instrument::nats;
//! nats::publish_jetstream(&js, "patient-report.submitted", Default::default(), "{}".into()).await?;
//! // in the consumer: a CONSUMER span parented to the publisher's PRODUCER span
//! nats::process_jetstream(&msg, || async { Ok::<_, std::io::Error>(()) }).await?;
//! msg.ack().await?;
//! # Ok(()) }
//! ```
//!
//! AMQP with lapin:
//!
//! ```no_run
//! # #[cfg(feature = "amqp")]
//! # async fn f(channel: lapin::Channel, delivery: lapin::message::Delivery) -> Result<(), Box<dyn std::error::Error>> {
//! use strand_instrument::amqp;
//! amqp::publish(&channel, "", "sms", b"hello", lapin::BasicProperties::default()).await?;
//! amqp::process(&delivery, || async { Ok::<_, std::io::Error>(()) }).await?;
//! # Ok(()) }
//! ```
//!
//! Background work keeps the request's trace but not its lifetime:
//!
//! ```
//! # async fn handler() {
//! strand_instrument::spawn_detached("send-sms", async {
//!     // spans and log lines here belong to the request's trace,
//!     // even when this runs on long after the response went out
//! });
//! # }
//! ```
//!
//! Spans made by this crate use the OpenTelemetry API directly (an unsampled request costs
//! almost nothing); `tracing` spans opened inside a handler become their children through
//! `tracing-opentelemetry`.

pub mod config;
mod init;
pub mod logs;
pub mod propagation;
mod task;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "tonic")]
pub mod grpc;
#[cfg(feature = "reqwest")]
pub mod http_client;
#[cfg(feature = "axum")]
pub mod http_server;
#[cfg(feature = "nats")]
pub mod nats;

use std::borrow::Cow;
use std::sync::LazyLock;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue, global};

pub use config::{BatchConfig, ExportProtocol, LogFormat, LogsConfig, SamplerConfig, TelemetryConfig};
pub use init::{InitError, TelemetryGuard, init};
pub use task::{spawn_blocking_detached, spawn_blocking_in_trace, spawn_detached, spawn_in_trace};

static SCOPE: LazyLock<InstrumentationScope> = LazyLock::new(|| {
    InstrumentationScope::builder("strand-instrument").with_version(env!("CARGO_PKG_VERSION")).build()
});

/// Starts a span (this crate's instrumentation scope) under `parent` and returns `parent`
/// with it: for boundaries this crate has no adapter for, such as a database call. End it
/// with `cx.span().end()`; run the work inside with `FutureExt::with_context(cx.clone())`.
///
/// ```
/// use opentelemetry::trace::{SpanKind, TraceContextExt as _};
/// use opentelemetry::{Context, KeyValue};
/// let cx = strand_instrument::start_span(
///     "INSERT reports",
///     SpanKind::Client,
///     vec![KeyValue::new("db.system.name", "sqlite")],
///     &Context::current(),
/// );
/// // ... run the statement ...
/// cx.span().end();
/// ```
pub fn start_span(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    parent: &Context,
) -> Context {
    start_span_with(&tracer(), name, kind, attributes, parent)
}

/// This crate's tracer from the global provider installed now.
pub(crate) fn tracer() -> BoxedTracer {
    global::tracer_provider().tracer_with_scope(SCOPE.clone())
}

/// [`start_span`] with a tracer the caller keeps.
pub(crate) fn start_span_with(
    tracer: &BoxedTracer,
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    parent: &Context,
) -> Context {
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    parent.with_span(span)
}

/// A tracer fetched from the global provider on first use and kept (a layer's requests
/// then skip the global lookup). The provider installed when the first request arrives is
/// the one used, so install telemetry before serving.
#[cfg(feature = "axum")]
#[derive(Clone, Default)]
pub(crate) struct CachedTracer(std::sync::Arc<std::sync::OnceLock<BoxedTracer>>);

#[cfg(feature = "axum")]
impl CachedTracer {
    pub(crate) fn get(&self) -> &BoxedTracer {
        self.0.get_or_init(tracer)
    }
}

#[cfg(feature = "axum")]
impl std::fmt::Debug for CachedTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedTracer")
    }
}

/// Runs `f` with `cx` current, then ends `cx`'s span, in error when `f` failed.
#[cfg(any(feature = "nats", feature = "amqp"))]
pub(crate) async fn run_in_span<F, Fut, T, E>(cx: Context, f: F) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    use opentelemetry::trace::FutureExt as _;
    let result = f().with_context(cx.clone()).await;
    let span = cx.span();
    if let Err(e) = &result {
        span.set_attribute(KeyValue::new("error.type", "handler"));
        span.set_status(opentelemetry::trace::Status::error(e.to_string()));
    }
    span.end();
    result
}

/// Decodes `%XX` escapes (W3C baggage and `OTEL_RESOURCE_ATTRIBUTES` values, `grpc-message`);
/// anything else stays as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
