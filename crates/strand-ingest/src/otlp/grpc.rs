//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::OtlpReceiver;
use crate::IngestError;

/// Maps an ingest error to its gRPC status.
pub fn status(e: IngestError) -> Status {
    match e {
        IngestError::BadRequest(m) | IngestError::UnsupportedMediaType(m) => Status::invalid_argument(m),
        IngestError::TooLarge(m) | IngestError::Overloaded(m) => Status::resource_exhausted(m),
        IngestError::Unavailable(m) => Status::unavailable(m),
    }
}

#[tonic::async_trait]
impl TraceService for OtlpReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = request.into_inner();
        let large = req.resource_spans.len() > 8
            || req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>() > 256;
        // tonic has decoded the protobuf; converting and validating a large request is
        // still real CPU work, so it leaves the async workers.
        let (batch, rejections) = if large {
            tokio::task::spawn_blocking(move || strand_otlp::from_request(req))
                .await
                .map_err(|e| Status::internal(format!("conversion task failed: {e}")))?
        } else {
            strand_otlp::from_request(req)
        };
        OtlpReceiver::export(self, batch, rejections).await.map(Response::new).map_err(status)
    }
}

/// The tonic service: limits the decoded (and decompressed) message size and accepts
/// gzip and zstd.
pub fn service(receiver: OtlpReceiver) -> TraceServiceServer<OtlpReceiver> {
    let max = receiver.limits.max_request_bytes;
    TraceServiceServer::new(receiver)
        .max_decoding_message_size(max)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
}
