//! OTLP/HTTP receiver: `POST /v1/traces`.
//!
//! Content types `application/x-protobuf` and `application/json`; `Content-Encoding`
//! `gzip` or none. Bodies may be chunked (no `Content-Length`). Errors answer with an
//! OTLP `Status` message in the request's format.

use std::io::Read;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;

use super::{Format, OtlpReceiver, decode};
use crate::IngestError;

/// `google.rpc.Status`, which OTLP/HTTP error bodies carry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The routes of the OTLP/HTTP receiver.
pub fn router(receiver: OtlpReceiver) -> Router {
    Router::new()
        .route("/v1/traces", post(export_traces))
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver)
}

fn error_response(format: Format, e: IngestError) -> Response {
    let (status, grpc_code) = match &e {
        IngestError::BadRequest(_) => (StatusCode::BAD_REQUEST, 3),
        IngestError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 8),
        IngestError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 3),
        IngestError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, 8),
        IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 14),
    };
    let body = RpcStatus { code: grpc_code, message: e.to_string() };
    let mut resp = match format {
        Format::Protobuf => {
            (status, [(header::CONTENT_TYPE, "application/x-protobuf")], body.encode_to_vec()).into_response()
        }
        Format::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "code": body.code, "message": body.message }).to_string(),
        )
            .into_response(),
    };
    if matches!(e, IngestError::Overloaded(_) | IngestError::Unavailable(_)) {
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

fn content_format(headers: &HeaderMap) -> Result<Format, IngestError> {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        "" => Err(IngestError::UnsupportedMediaType(
            "missing Content-Type; use application/x-protobuf or application/json".into(),
        )),
        other => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported Content-Type `{other}`; use application/x-protobuf or application/json"
        ))),
    }
}

enum Encoding {
    Identity,
    Gzip,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let raw = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        other => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported Content-Encoding `{other}`; use gzip or none"
        ))),
    }
}

/// Reads the body, refusing more than `limit` bytes without buffering them.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, IngestError> {
    let too_large = || IngestError::TooLarge(format!("request body exceeds the limit of {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| IngestError::BadRequest(format!("failed to read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Inflates gzip, refusing output beyond `limit` (a gzip bomb costs at most `limit`).
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::BadRequest(format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge(format!(
            "decompressed request body exceeds the limit of {limit} bytes"
        )));
    }
    Ok(out)
}

async fn export_traces(State(rx): State<OtlpReceiver>, headers: HeaderMap, body: Body) -> Response {
    let format = match content_format(&headers) {
        Ok(f) => f,
        Err(e) => return error_response(Format::Json, e),
    };
    match handle(&rx, format, &headers, body).await {
        Ok(resp) => match format {
            Format::Protobuf => {
                ([(header::CONTENT_TYPE, "application/x-protobuf")], resp.encode_to_vec()).into_response()
            }
            Format::Json => match serde_json::to_vec(&resp) {
                Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                Err(e) => error_response(format, IngestError::Unavailable(format!("encoding response: {e}"))),
            },
        },
        Err(e) => error_response(format, e),
    }
}

async fn handle(
    rx: &OtlpReceiver,
    format: Format,
    headers: &HeaderMap,
    body: Body,
) -> Result<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse, IngestError> {
    let encoding = content_encoding(headers)?;
    let _slot = rx.admit()?;
    let limit = rx.limits.max_request_bytes;
    let raw = read_body(body, headers, limit).await?;
    // Inflating gzip is CPU work too, so compressed bodies always leave the async workers.
    let off_thread = raw.len() > rx.limits.blocking_decode_threshold || matches!(encoding, Encoding::Gzip);
    let work = move || -> Result<_, IngestError> {
        let inflated;
        let bytes: &[u8] = match encoding {
            Encoding::Identity => &raw,
            Encoding::Gzip => {
                inflated = gunzip(&raw, limit)?;
                &inflated
            }
        };
        decode(format, bytes)
    };
    let (batch, rejections) = if off_thread {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| IngestError::Unavailable(format!("decode task failed: {e}")))??
    } else {
        work()?
    };
    rx.export(batch, rejections).await
}
