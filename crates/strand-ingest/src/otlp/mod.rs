//! OTLP receivers. Decoding and validation are shared; [`http`] and [`grpc`] only adapt
//! their transport.

pub mod grpc;
pub mod http;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use strand_core::SpanBatch;
use strand_otlp::Rejections;

use crate::{IngestError, Protocol, Receiver};

/// Stores a decoded request; the answer carries the partial-success report for rejected
/// spans.
async fn export(
    rx: &Receiver,
    protocol: Protocol,
    batch: SpanBatch,
    rejections: Rejections,
) -> Result<ExportTraceServiceResponse, IngestError> {
    rx.store(protocol, batch, &rejections).await?;
    Ok(response(&rejections))
}

fn response(rejections: &Rejections) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (rejections.count > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejections.count as i64,
            error_message: rejections.message(),
        }),
    }
}

/// Body encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

/// Decodes and converts a request body; CPU-heavy, so large bodies run on the blocking pool.
pub fn decode(format: Format, body: &[u8]) -> Result<(SpanBatch, Rejections), IngestError> {
    let req: ExportTraceServiceRequest = match format {
        Format::Protobuf => prost::Message::decode(body).map_err(|e| {
            IngestError::BadRequest(format!("invalid protobuf ExportTraceServiceRequest: {e}"))
        })?,
        Format::Json => serde_json::from_slice(body).map_err(|e| {
            IngestError::BadRequest(format!("invalid OTLP/JSON ExportTraceServiceRequest: {e}"))
        })?,
    };
    Ok(strand_otlp::from_request(req))
}
