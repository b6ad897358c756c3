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

use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue, global};

pub use config::{BatchConfig, ExportProtocol, LogFormat, LogsConfig, SamplerConfig, TelemetryConfig};
pub use init::{InitError, TelemetryGuard, init};
pub use task::{spawn_blocking_detached, spawn_blocking_in_trace, spawn_detached, spawn_in_trace};

static SCOPE: LazyLock<InstrumentationScope> = LazyLock::new(|| {
    InstrumentationScope::builder("strand-instrument").with_version(env!("CARGO_PKG_VERSION")).build()
});

/// Starts a span of this crate's scope under `parent` and returns `parent` with it.
pub(crate) fn start_span(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    parent: &Context,
) -> Context {
    let tracer = global::tracer_provider().tracer_with_scope(SCOPE.clone());
    let span = tracer.span_builder(name).with_kind(kind).with_attributes(attributes).start_with_context(&tracer, parent);
    parent.with_span(span)
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
