//! [`init`]: the tracer provider, propagator and `tracing` subscriber from a
//! [`TelemetryConfig`], and the guard that flushes them at the end.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
use crate::config::ExportProtocol;
use crate::config::{SamplerConfig, TelemetryConfig};
use crate::logs::LogLayer;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// An exporter could not be built (bad endpoint, protocol not compiled in).
    #[error("telemetry exporter: {0}")]
    Exporter(String),
    /// A `tracing` subscriber was already installed.
    #[error("a global tracing subscriber is already set: {0}")]
    Subscriber(String),
    /// The log filter did not parse.
    #[error("invalid log level filter `{0}`: {1}")]
    Filter(String, String),
}

/// Keeps telemetry running; dropping it flushes every span and log record still queued and
/// shuts the exporters down (so nothing recorded before shutdown is lost). Keep it in
/// `main` until the service stops.
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    logger_provider: Option<SdkLoggerProvider>,
}

impl TelemetryGuard {
    /// The tracer provider (for spans created with the OpenTelemetry API directly).
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// Exports everything queued now.
    pub fn flush(&self) {
        let _ = self.tracer_provider.force_flush();
        if let Some(l) = &self.logger_provider {
            let _ = l.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush();
        let _ = self.tracer_provider.shutdown();
        if let Some(l) = &self.logger_provider {
            let _ = l.shutdown();
        }
    }
}

/// Installs telemetry for the process: an OTLP span exporter behind a batching processor,
/// the sampler, the resource (`service.name`, `service.version`, configured attributes and
/// the SDK's own), W3C trace-context + baggage propagation, and a `tracing` subscriber
/// (the `RUST_LOG`/`logs.level` filter, `tracing-opentelemetry` so `tracing` spans become
/// OpenTelemetry spans, log lines with trace ids, and the OTLP logs bridge when
/// `logs.export` is set). Must be called inside a Tokio runtime (the gRPC exporter and the
/// Jaeger remote sampler run on it).
pub fn init(cfg: TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    // reqwest 0.13 (the OTLP/HTTP exporters' and the remote sampler's client), when built
    // with rustls and no provider of its own, panics without a process-wide one: ring, if
    // none is installed yet.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut attrs = vec![KeyValue::new("service.name", cfg.service_name.clone())];
    if let Some(v) = &cfg.service_version {
        attrs.push(KeyValue::new("service.version", v.clone()));
    }
    attrs.extend(
        cfg.resource
            .iter()
            .filter(|(k, _)| k.as_str() != "service.name")
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    let resource = Resource::builder().with_attributes(attrs).build();

    let mut tracer_builder =
        SdkTracerProvider::builder().with_resource(resource.clone()).with_sampler(sampler(&cfg)?);
    if cfg.enabled {
        let exporter = span_exporter(&cfg)?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.batch.max_queue_size)
            .with_max_export_batch_size(cfg.batch.max_export_batch_size)
            .with_scheduled_delay(cfg.batch.scheduled_delay)
            .build();
        tracer_builder = tracer_builder
            .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build());
    }
    let tracer_provider = tracer_builder.build();
    global::set_tracer_provider(tracer_provider.clone());
    crate::propagation::install_propagator();

    let logger_provider = if cfg.enabled && cfg.logs.export {
        Some(
            SdkLoggerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(log_exporter(&cfg)?)
                .build(),
        )
    } else {
        None
    };

    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| InitError::Filter(v, e.to_string()))?
        }
        _ => EnvFilter::try_new(&cfg.logs.level)
            .map_err(|e| InitError::Filter(cfg.logs.level.clone(), e.to_string()))?,
    };
    let tracer = tracer_provider.tracer(cfg.service_name.clone());
    let otel_logs = logger_provider
        .as_ref()
        .map(|lp| opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(lp).boxed());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(LogLayer::stdout(cfg.logs.format, cfg.service_name.clone()))
        .with(otel_logs)
        .try_init()
        .map_err(|e| InitError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard { tracer_provider, logger_provider })
}

fn sampler(cfg: &TelemetryConfig) -> Result<Sampler, InitError> {
    Ok(match &cfg.sampler {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio { ratio } => Sampler::TraceIdRatioBased(*ratio),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedTraceIdRatio { ratio } => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(*ratio)))
        }
        #[cfg(feature = "jaeger-remote")]
        SamplerConfig::JaegerRemote { endpoint, refresh_interval, initial_ratio } => {
            let remote = Sampler::jaeger_remote(
                opentelemetry_sdk::runtime::Tokio,
                reqwest_otel_http::Client::new(),
                Sampler::TraceIdRatioBased(*initial_ratio),
                cfg.service_name.clone(),
            )
            .with_endpoint(endpoint.clone())
            .with_update_interval(*refresh_interval)
            .build()
            .map_err(|e| InitError::Exporter(format!("jaeger remote sampler: {e}")))?;
            Sampler::ParentBased(Box::new(remote))
        }
        #[cfg(not(feature = "jaeger-remote"))]
        SamplerConfig::JaegerRemote { .. } => {
            return Err(InitError::Exporter(
                "the jaeger_remote sampler needs strand-instrument's `jaeger-remote` feature".into(),
            ));
        }
    })
}

/// Built without `otlp-grpc` and `otlp-http`: there is no exporter, and `init` with
/// `enabled: true` says so (the type has no values, so nothing is ever exported through it).
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
#[derive(Debug)]
enum NoExporter {}

#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
impl opentelemetry_sdk::trace::SpanExporter for NoExporter {
    async fn export(
        &self,
        _batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        match *self {}
    }
}

#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
impl opentelemetry_sdk::logs::LogExporter for NoExporter {
    async fn export(
        &self,
        _batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        match *self {}
    }
}

#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
fn span_exporter(_: &TelemetryConfig) -> Result<NoExporter, InitError> {
    Err(no_exporter())
}

#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
fn log_exporter(_: &TelemetryConfig) -> Result<NoExporter, InitError> {
    Err(no_exporter())
}

#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
fn no_exporter() -> InitError {
    InitError::Exporter(
        "no OTLP exporter is compiled in (features otlp-grpc, otlp-http); set enabled: false".into(),
    )
}

/// An OTLP exporter of either signal (`SpanExporter`, `LogExporter`: the same builder
/// shape) for the configured protocol and endpoint.
#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
macro_rules! otlp_exporter {
    ($exporter:ty, $cfg:expr, $endpoint:expr) => {{
        let cfg: &TelemetryConfig = $cfg;
        let endpoint: String = $endpoint;
        let timeout = cfg.batch.export_timeout;
        let built = match cfg.protocol {
            #[cfg(feature = "otlp-grpc")]
            ExportProtocol::Grpc => {
                <$exporter>::builder().with_tonic().with_endpoint(endpoint).with_timeout(timeout).build()
            }
            #[cfg(feature = "otlp-http")]
            ExportProtocol::HttpProtobuf | ExportProtocol::HttpJson => <$exporter>::builder()
                .with_http()
                .with_protocol(http_protocol(cfg.protocol))
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .build(),
            #[allow(unreachable_patterns)]
            other => {
                return Err(InitError::Exporter(format!(
                    "protocol {other:?} is not compiled in (features otlp-grpc, otlp-http)"
                )));
            }
        };
        built.map_err(|e| InitError::Exporter(e.to_string()))
    }};
}

#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
fn span_exporter(cfg: &TelemetryConfig) -> Result<opentelemetry_otlp::SpanExporter, InitError> {
    otlp_exporter!(opentelemetry_otlp::SpanExporter, cfg, cfg.traces_endpoint())
}

#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
fn log_exporter(cfg: &TelemetryConfig) -> Result<opentelemetry_otlp::LogExporter, InitError> {
    otlp_exporter!(opentelemetry_otlp::LogExporter, cfg, cfg.logs_endpoint())
}

#[cfg(feature = "otlp-http")]
fn http_protocol(p: ExportProtocol) -> opentelemetry_otlp::Protocol {
    match p {
        ExportProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        _ => opentelemetry_otlp::Protocol::HttpBinary,
    }
}
