//! Strand's receivers: protocol in, [`strand_core::SpanBatch`] out to a
//! [`strand_core::SpanSink`].
//!
//! - [`otlp::http`]: OTLP/HTTP `POST /v1/traces` and `/v1/logs` (protobuf and JSON, gzip).
//! - [`otlp::grpc`]: OTLP/gRPC `TraceService/Export` and `LogsService/Export` (gzip, zstd).
//! - [`jaeger`]: Jaeger thrift over HTTP (`/api/traces`) and the agent's compact-thrift UDP.
//! - [`zipkin`]: Zipkin v2 `POST /api/v2/spans`, JSON and proto3.
//! - [`Receiver`]: what every receiver shares (sink, limits, in-flight slots, counters).
//! - [`http_body`]: bounded reading, gzip and off-thread decoding of HTTP bodies.
//! - [`limits`]: request size limits shared by the receivers.
//! - [`memory`]: the memory budget of received, decoded and unwritten data.
//! - [`IngestError`]: what a receiver can answer besides success; each protocol maps it to
//!   its status codes in one place.

pub mod http_body;
pub mod jaeger;
mod legacy;
pub mod limits;
pub mod memory;
pub mod otlp;
mod receiver;
pub mod zipkin;

pub use limits::IngestLimits;
pub use receiver::{LogCounters, Protocol, ProtocolCounters, Receiver, ReceiverStats};

/// Why a request was not (wholly) accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Malformed body (HTTP 400, gRPC `INVALID_ARGUMENT`).
    #[error("{0}")]
    BadRequest(String),
    /// Body or decompressed body over the limit (HTTP 413, gRPC `RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    TooLarge(String),
    /// Content type or encoding not supported (HTTP 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Backpressure: retry later (HTTP 429, gRPC `RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    Overloaded(String),
    /// Storage failed: retry later (HTTP 503, gRPC `UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// The body did not arrive within `body_read_timeout` (HTTP 408).
    #[error("{0}")]
    Timeout(String),
    /// A rate limit refused it: retry after this many seconds (HTTP 429 with that
    /// `Retry-After`, gRPC `RESOURCE_EXHAUSTED` with that `RetryInfo`).
    #[error("{0}")]
    RateLimited(String, u64),
}

impl IngestError {
    /// When a client should retry, for the errors a retry can cure.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            IngestError::Overloaded(_) | IngestError::Unavailable(_) => Some(1),
            IngestError::RateLimited(_, secs) => Some((*secs).max(1)),
            _ => None,
        }
    }
}

impl From<strand_core::SinkError> for IngestError {
    fn from(e: strand_core::SinkError) -> Self {
        match e {
            strand_core::SinkError::Overloaded(m) => Self::Overloaded(m),
            strand_core::SinkError::Unavailable(m) => Self::Unavailable(m),
            strand_core::SinkError::RateLimited { message, retry_after_secs } => {
                Self::RateLimited(message, retry_after_secs)
            }
        }
    }
}
