//! OTLP/gRPC receivers: `opentelemetry.proto.collector.trace.v1.TraceService/Export` and
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export`; `MetricsService/Export`
//! answers `UNIMPLEMENTED` with a message saying Strand does not store metrics.
//!
//! Written by hand instead of with the generated servers for two reasons: the request
//! arrives as raw bytes, so large ones are decoded on the blocking pool rather than on an
//! async worker; and malformed protobuf is answered `INVALID_ARGUMENT` (the generated
//! codec says `INTERNAL`). Message size (after decompression) is capped by tonic and an
//! oversized message answered `RESOURCE_EXHAUSTED`; gzip and zstd are accepted.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::{Format, Logs, METRICS_REFUSED, Signal, Traces};
use crate::memory::{Charge, MemoryBudget, Stage};
use crate::{IngestError, Protocol, Receiver};

/// Maps an ingest error to its gRPC status. An overload's `RESOURCE_EXHAUSTED` carries a
/// `google.rpc.RetryInfo` (retry in 1 s): OTLP exporters retry that code only with one,
/// and drop the data otherwise; a message too large gets none (retrying cannot help).
pub fn status(e: IngestError) -> Status {
    match e {
        IngestError::BadRequest(m) | IngestError::UnsupportedMediaType(m) => Status::invalid_argument(m),
        IngestError::TooLarge(m) => Status::resource_exhausted(m),
        IngestError::Overloaded(m) => retry_later(m, 1),
        IngestError::RateLimited(m, secs) => retry_later(m, secs.max(1)),
        IngestError::Unavailable(m) => Status::unavailable(m),
        IngestError::Timeout(m) => Status::deadline_exceeded(m),
    }
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.Status`, what the `grpc-status-details-bin` trailer holds.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `RESOURCE_EXHAUSTED` with a `RetryInfo` of `secs` seconds.
fn retry_later(message: String, secs: u64) -> Status {
    let seconds = i64::try_from(secs).unwrap_or(i64::MAX);
    let retry = RetryInfo { retry_delay: Some(ProtoDuration { seconds, nanos: 0 }) };
    let details = RpcStatus {
        code: tonic::Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![ProtoAny { type_url: RETRY_INFO_TYPE.into(), value: retry.encode_to_vec() }],
    };
    Status::with_details(tonic::Code::ResourceExhausted, message, details.encode_to_vec().into())
}

/// Passes request bytes through undecoded; encodes responses (`R`) with prost. When the
/// request is compressed, the inflated message tonic hands over is taken from the memory
/// budget here, before tonic waits for the end of the stream.
struct RawCodec<R> {
    inflated: Option<(Arc<MemoryBudget>, Held)>,
    response: PhantomData<R>,
}

struct RawDecoder {
    inflated: Option<(Arc<MemoryBudget>, Held)>,
}

struct ResponseEncoder<R>(PhantomData<R>);

impl<R: Message + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ResponseEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder<R> {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder { inflated: self.inflated.clone() }
    }
}

impl<R: Message> Encoder for ResponseEncoder<R> {
    type Item = R;
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
        if let Some((budget, held)) = &self.inflated {
            let taken = budget.take(&mut held.charge.lock(), n as u64, Stage::Message);
            if let Err(e) = taken {
                held.refused.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(status(e));
            }
        }
        Ok(Some(src.copy_to_bytes(n)))
    }
}

struct Export<S>(Receiver, PhantomData<S>);

impl<S: Signal> UnaryService<Bytes> for Export<S> {
    type Response = S::Response;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let result = async {
                let _slot = receiver.admit()?;
                // The message's bytes were taken from the memory budget as they arrived
                // (and once inflated); they are given back once it is decoded and gone,
                // and the decoded batch is taken instead when it is stored.
                let held = request.extensions().get::<Held>().cloned();
                let body = request.into_inner();
                let (batch, rejections) = if body.len() > receiver.limits.blocking_decode_threshold {
                    tokio::task::spawn_blocking(move || S::decode(Format::Protobuf, &body))
                        .await
                        .map_err(|e| IngestError::Unavailable(format!("decode task failed: {e}")))??
                } else {
                    let decoded = S::decode(Format::Protobuf, &body)?;
                    drop(body);
                    decoded
                };
                if let Some(held) = held {
                    *held.charge.lock() = Charge::default();
                }
                S::export(&receiver, Protocol::OtlpGrpc, batch, rejections).await
            }
            .await;
            if result.is_err() {
                S::refused(&receiver, Protocol::OtlpGrpc);
            }
            result.map(Response::new).map_err(status)
        })
    }
}

/// An OTLP export service of one signal, ready to add to a tonic server.
pub struct OtlpGrpcService<S> {
    receiver: Receiver,
    accept: EnabledCompressionEncodings,
    send: EnabledCompressionEncodings,
    signal: PhantomData<S>,
}

impl<S> Clone for OtlpGrpcService<S> {
    fn clone(&self) -> Self {
        Self { receiver: self.receiver.clone(), accept: self.accept, send: self.send, signal: PhantomData }
    }
}

/// The OTLP trace service.
pub type TraceGrpcService = OtlpGrpcService<Traces>;
/// The OTLP logs service.
pub type LogsGrpcService = OtlpGrpcService<Logs>;

/// Builds a service: decoded (and decompressed) messages are capped at the receiver's
/// `max_request_bytes`; gzip and zstd requests are accepted; answers are gzipped when the
/// client accepts it.
fn build<S>(receiver: Receiver) -> OtlpGrpcService<S> {
    let mut accept = EnabledCompressionEncodings::default();
    accept.enable(CompressionEncoding::Gzip);
    accept.enable(CompressionEncoding::Zstd);
    let mut send = EnabledCompressionEncodings::default();
    send.enable(CompressionEncoding::Gzip);
    OtlpGrpcService { receiver, accept, send, signal: PhantomData }
}

/// The trace service (see [`build`]).
pub fn service(receiver: Receiver) -> TraceGrpcService {
    build(receiver)
}

/// The logs service (see [`build`]).
pub fn logs_service(receiver: Receiver) -> LogsGrpcService {
    build(receiver)
}

/// `MetricsService`: every call is answered `UNIMPLEMENTED` with [`METRICS_REFUSED`] and
/// counted, instead of tonic's message-less answer for an unknown service.
#[derive(Clone)]
pub struct MetricsGrpcService(Receiver);

/// The metrics service that refuses metrics.
pub fn metrics_service(receiver: Receiver) -> MetricsGrpcService {
    MetricsGrpcService(receiver)
}

impl NamedService for MetricsGrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl<B: Send + 'static> tower_service::Service<http::Request<B>> for MetricsGrpcService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<B>) -> Self::Future {
        self.0.metrics_refused(Protocol::OtlpGrpc);
        Box::pin(async { Ok(Status::unimplemented(METRICS_REFUSED).into_http()) })
    }
}

impl NamedService for TraceGrpcService {
    const NAME: &'static str = Traces::GRPC_SERVICE;
}

impl NamedService for LogsGrpcService {
    const NAME: &'static str = Logs::GRPC_SERVICE;
}

impl<S: Signal, B> tower_service::Service<http::Request<B>> for OtlpGrpcService<S>
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
            if req.uri().path() != S::GRPC_PATH {
                return Ok(Status::unimplemented(format!("unknown method {}", req.uri().path())).into_http());
            }
            let max = this.receiver.limits.max_request_bytes;
            let held = Held::default();
            // A message sent uncompressed is the frames' bytes, taken as they arrived; a
            // compressed one is inflated into a second buffer, taken by the decoder.
            let compressed = req
                .headers()
                .get("grpc-encoding")
                .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
            let inflated = compressed.then(|| (this.receiver.memory.clone(), held.clone()));
            let mut grpc = Grpc::new(RawCodec::<S::Response> { inflated, response: PhantomData })
                .apply_compression_config(this.accept, this.send)
                .apply_max_message_size_config(Some(max), None);
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(held.clone());
            let budgeted =
                Budgeted { inner: Box::pin(body), budget: this.receiver.memory.clone(), held: held.clone() };
            let req = http::Request::from_parts(parts, budgeted);
            let receiver = this.receiver.clone();
            let mut resp = grpc.unary(Export::<S>(this.receiver, PhantomData), req).await;
            if held.refused.load(std::sync::atomic::Ordering::Relaxed) {
                // Refused while the message arrived, before `Export` saw it.
                S::refused(&receiver, Protocol::OtlpGrpc);
            }
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

/// A request's bytes of the memory budget, shared by its [`Budgeted`] body (which takes
/// them as frames arrive), the decoder (which takes an inflated message) and [`Export`]
/// (which gives them back once the message is decoded).
type Held = Arc<HeldInner>;

#[derive(Default)]
struct HeldInner {
    charge: parking_lot::Mutex<Charge>,
    /// The budget refused a frame.
    refused: std::sync::atomic::AtomicBool,
}

/// A gRPC request body whose data frames are taken from the memory budget as they arrive,
/// before tonic buffers them into a message. A frame that does not fit ends the body with
/// `RESOURCE_EXHAUSTED` (and a `RetryInfo`), which tonic answers with.
struct Budgeted<B> {
    inner: std::pin::Pin<Box<B>>,
    budget: Arc<MemoryBudget>,
    held: Held,
}

impl<B> http_body::Body for Budgeted<B>
where
    B: http_body::Body,
    B::Error: Into<StdError>,
{
    type Data = B::Data;
    type Error = StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, StdError>>> {
        let frame = match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let n = frame.data_ref().map_or(0, |d| d.remaining() as u64);
        let this = &*self;
        let taken = this.budget.take(&mut this.held.charge.lock(), n, Stage::Message);
        match taken {
            Ok(()) => Poll::Ready(Some(Ok(frame))),
            Err(e) => {
                this.held.refused.store(true, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(status(e)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod retry_info_tests {
    use super::*;

    #[test]
    fn an_overload_says_when_to_retry_and_a_message_too_large_does_not() {
        let st = status(IngestError::Overloaded("write queue is full".into()));
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        let details = RpcStatus::decode(st.details()).expect("google.rpc.Status");
        assert_eq!(details.code, tonic::Code::ResourceExhausted as i32);
        assert_eq!(details.message, "write queue is full");
        let [any] = details.details.as_slice() else { panic!("one detail: {details:?}") };
        assert_eq!(any.type_url, RETRY_INFO_TYPE);
        let retry = RetryInfo::decode(any.value.as_slice()).expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(ProtoDuration { seconds: 1, nanos: 0 }));
        // A rate limit's wait is passed on.
        let limited = status(IngestError::RateLimited("over the tenant's rate".into(), 4));
        let details = RpcStatus::decode(limited.details()).expect("google.rpc.Status");
        let retry = RetryInfo::decode(details.details[0].value.as_slice()).expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(ProtoDuration { seconds: 4, nanos: 0 }));
        let too_large = status(IngestError::TooLarge("over 16 MiB".into()));
        assert_eq!(too_large.code(), tonic::Code::ResourceExhausted);
        assert!(too_large.details().is_empty());
    }
}
