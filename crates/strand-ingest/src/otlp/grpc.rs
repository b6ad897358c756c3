//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! Written by hand instead of with the generated `TraceServiceServer` for two reasons: the
//! request arrives as raw bytes, so large ones are decoded on the blocking pool rather than
//! on an async worker; and malformed protobuf is answered `INVALID_ARGUMENT` (the generated
//! codec says `INTERNAL`). Message size (after decompression) is capped by tonic and an
//! oversized message answered `RESOURCE_EXHAUSTED`; gzip and zstd are accepted.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::{Format, decode, export};
use crate::{IngestError, Protocol, Receiver};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Maps an ingest error to its gRPC status.
pub fn status(e: IngestError) -> Status {
    match e {
        IngestError::BadRequest(m) | IngestError::UnsupportedMediaType(m) => Status::invalid_argument(m),
        IngestError::TooLarge(m) | IngestError::Overloaded(m) => Status::resource_exhausted(m),
        IngestError::Unavailable(m) => Status::unavailable(m),
    }
}

/// Passes request bytes through undecoded; encodes responses with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

#[derive(Debug, Clone, Copy, Default)]
struct ResponseEncoder;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("encoding response: {e}")))
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

struct Export(Receiver);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let result = async {
                let _slot = receiver.admit()?;
                let body = request.into_inner();
                let (batch, rejections) = if body.len() > receiver.limits.blocking_decode_threshold {
                    tokio::task::spawn_blocking(move || decode(Format::Protobuf, &body))
                        .await
                        .map_err(|e| IngestError::Unavailable(format!("decode task failed: {e}")))??
                } else {
                    decode(Format::Protobuf, &body)?
                };
                export(&receiver, Protocol::OtlpGrpc, batch, rejections).await
            }
            .await;
            if result.is_err() {
                receiver.refused(Protocol::OtlpGrpc);
            }
            result.map(Response::new).map_err(status)
        })
    }
}

/// The OTLP trace service, ready to add to a tonic server.
#[derive(Clone)]
pub struct TraceGrpcService {
    receiver: Receiver,
    accept: EnabledCompressionEncodings,
    send: EnabledCompressionEncodings,
}

/// Builds the service: decoded (and decompressed) messages are capped at the receiver's
/// `max_request_bytes`; gzip and zstd requests are accepted; answers are gzipped when the
/// client accepts it.
pub fn service(receiver: Receiver) -> TraceGrpcService {
    let mut accept = EnabledCompressionEncodings::default();
    accept.enable(CompressionEncoding::Gzip);
    accept.enable(CompressionEncoding::Zstd);
    let mut send = EnabledCompressionEncodings::default();
    send.enable(CompressionEncoding::Gzip);
    TraceGrpcService { receiver, accept, send }
}

impl NamedService for TraceGrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tower_service::Service<http::Request<B>> for TraceGrpcService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented(format!("unknown method {}", req.uri().path())).into_http());
            }
            let max = this.receiver.limits.max_request_bytes;
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(this.accept, this.send)
                .apply_max_message_size_config(Some(max), None);
            let mut resp = grpc.unary(Export(this.receiver), req).await;
            // tonic answers an oversized message with OUT_OF_RANGE; gRPC and OTLP clients
            // expect RESOURCE_EXHAUSTED for it.
            let headers = resp.headers_mut();
            if headers.get(Status::GRPC_STATUS).is_some_and(|v| v == "11") {
                headers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("8"));
            }
            Ok(resp)
        })
    }
}
