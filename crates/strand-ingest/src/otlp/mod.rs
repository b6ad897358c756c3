//! OTLP receivers. Decoding and validation are shared; [`http`] and [`grpc`] only adapt
//! their transport. Both carry two signals, traces and logs ([`Signal`]); metrics exports,
//! which Strand does not store, are answered "not implemented" with a message saying so,
//! and counted.

pub mod grpc;
pub mod http;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use strand_core::{LogBatch, SpanBatch};
use strand_otlp::{Rejections, json_ids};

use crate::{IngestError, Protocol, Receiver};

/// What a metrics export hears: Strand keeps traces and logs only.
pub const METRICS_REFUSED: &str = "strand stores traces and logs, not metrics: send OTLP metrics to a metrics backend (Prometheus, Mimir, ...)";

/// Body encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

/// One OTLP signal a receiver stores: how its requests decode and where they go.
pub trait Signal: Send + Sync + 'static {
    /// The decoded, validated content of a request.
    type Batch: Send + 'static;
    /// The export response message.
    type Response: prost::Message + serde::Serialize + Default + Send + 'static;
    /// The gRPC method path.
    const GRPC_PATH: &'static str;
    /// The gRPC service name.
    const GRPC_SERVICE: &'static str;

    /// Decodes and converts a request body; CPU-heavy, so large bodies run on the blocking
    /// pool.
    fn decode(format: Format, body: &[u8]) -> Result<(Self::Batch, Rejections), IngestError>;

    /// Stores a decoded request; the answer carries the partial-success report.
    fn export(
        rx: &Receiver,
        protocol: Protocol,
        batch: Self::Batch,
        rejections: Rejections,
    ) -> impl std::future::Future<Output = Result<Self::Response, IngestError>> + Send;

    /// Counts a request refused as a whole.
    fn refused(rx: &Receiver, protocol: Protocol);
}

/// Spans: `TraceService/Export`, `POST /v1/traces`.
#[derive(Debug, Clone, Copy)]
pub struct Traces;

/// Log records: `LogsService/Export`, `POST /v1/logs`.
#[derive(Debug, Clone, Copy)]
pub struct Logs;

impl Signal for Traces {
    type Batch = SpanBatch;
    type Response = ExportTraceServiceResponse;
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";

    fn decode(format: Format, body: &[u8]) -> Result<(SpanBatch, Rejections), IngestError> {
        decode(format, body)
    }

    async fn export(
        rx: &Receiver,
        protocol: Protocol,
        batch: SpanBatch,
        rejections: Rejections,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        rx.store(protocol, batch, &rejections).await?;
        Ok(ExportTraceServiceResponse {
            partial_success: (rejections.count > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejections.count as i64,
                error_message: rejections.message(),
            }),
        })
    }

    fn refused(rx: &Receiver, protocol: Protocol) {
        rx.refused(protocol);
    }
}

impl Signal for Logs {
    type Batch = LogBatch;
    type Response = ExportLogsServiceResponse;
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";

    fn decode(format: Format, body: &[u8]) -> Result<(LogBatch, Rejections), IngestError> {
        let req: ExportLogsServiceRequest = match format {
            Format::Protobuf => prost::Message::decode(body).map_err(|e| {
                IngestError::BadRequest(format!("invalid protobuf ExportLogsServiceRequest: {e}"))
            })?,
            Format::Json => {
                return json_ids::logs_from_json(body).map_err(|e| {
                    IngestError::BadRequest(format!("invalid OTLP/JSON ExportLogsServiceRequest: {e}"))
                });
            }
        };
        Ok(strand_otlp::logs::from_request(req))
    }

    async fn export(
        rx: &Receiver,
        protocol: Protocol,
        batch: LogBatch,
        rejections: Rejections,
    ) -> Result<ExportLogsServiceResponse, IngestError> {
        rx.store_logs(protocol, batch, &rejections).await?;
        Ok(ExportLogsServiceResponse {
            partial_success: (rejections.count > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejections.count as i64,
                error_message: rejections.message(),
            }),
        })
    }

    fn refused(rx: &Receiver, protocol: Protocol) {
        rx.logs_refused(protocol);
    }
}

/// Decodes and converts a trace request body; CPU-heavy, so large bodies run on the
/// blocking pool.
pub fn decode(format: Format, body: &[u8]) -> Result<(SpanBatch, Rejections), IngestError> {
    let req: ExportTraceServiceRequest = match format {
        Format::Protobuf => prost::Message::decode(body).map_err(|e| {
            IngestError::BadRequest(format!("invalid protobuf ExportTraceServiceRequest: {e}"))
        })?,
        Format::Json => {
            return json_ids::traces_from_json(body).map_err(|e| {
                IngestError::BadRequest(format!("invalid OTLP/JSON ExportTraceServiceRequest: {e}"))
            });
        }
    };
    Ok(strand_otlp::from_request(req))
}
