//! OTLP receivers. Decoding and validation are shared; [`http`] and [`grpc`] only adapt
//! their transport.

pub mod grpc;
pub mod http;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use strand_core::{SpanBatch, SpanSink};
use strand_otlp::Rejections;

use crate::{IngestError, IngestLimits};

/// Shared state of the OTLP receivers.
#[derive(Clone)]
pub struct OtlpReceiver {
    sink: Arc<dyn SpanSink>,
    limits: IngestLimits,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl OtlpReceiver {
    /// A receiver handing batches to `sink`.
    pub fn new(sink: Arc<dyn SpanSink>, limits: IngestLimits) -> Self {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests.max(1)));
        Self { sink, limits, in_flight }
    }

    /// A slot for one request, or `Overloaded` when `max_concurrent_requests` are in flight.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, IngestError> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            IngestError::Overloaded(format!(
                "{} requests already in flight; retry later",
                self.limits.max_concurrent_requests
            ))
        })
    }

    /// Converts a decoded request and hands it on; the answer carries the partial-success
    /// report for rejected spans.
    async fn export(
        &self,
        batch: SpanBatch,
        rejections: Rejections,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        if batch.span_count() > 0 {
            self.sink.consume(batch).await?;
        }
        Ok(response(&rejections))
    }
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
