//! OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs`; `POST /v1/metrics` answers
//! 404 with a message saying Strand does not store metrics (and is counted).
//!
//! Content types `application/x-protobuf` and `application/json`; `Content-Encoding`
//! `gzip` or none. Bodies may be chunked (no `Content-Length`). Errors answer with an
//! OTLP `Status` message in the request's format.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;

use super::{Format, Logs, METRICS_REFUSED, Signal, Traces};
use crate::http_body::{content_encoding, read_and_decode};
use crate::{IngestError, Protocol, Receiver};

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
pub fn router(receiver: Receiver) -> Router {
    Router::new()
        .route("/v1/traces", post(export::<Traces>))
        .route("/v1/logs", post(export::<Logs>))
        .route("/v1/metrics", post(refuse_metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver)
}

/// An OTLP/HTTP error answer: `status` with a `google.rpc.Status` body in `format`.
pub fn status_response(status: StatusCode, format: Format, body: RpcStatus) -> Response {
    match format {
        Format::Protobuf => {
            (status, [(header::CONTENT_TYPE, "application/x-protobuf")], body.encode_to_vec()).into_response()
        }
        Format::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "code": body.code, "message": body.message }).to_string(),
        )
            .into_response(),
    }
}

fn error_response(format: Format, e: IngestError) -> Response {
    let (status, grpc_code) = match &e {
        IngestError::BadRequest(_) => (StatusCode::BAD_REQUEST, 3),
        IngestError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 8),
        IngestError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 3),
        IngestError::Overloaded(_) | IngestError::RateLimited(..) => (StatusCode::TOO_MANY_REQUESTS, 8),
        IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 14),
        IngestError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, 4),
    };
    let mut resp = status_response(status, format, RpcStatus { code: grpc_code, message: e.to_string() });
    if let Some(secs) = e.retry_after_secs() {
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
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

async fn export<S: Signal>(State(rx): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let format = match content_format(&headers) {
        Ok(f) => f,
        Err(e) => {
            S::refused(&rx, Protocol::OtlpHttp);
            return error_response(Format::Json, e);
        }
    };
    let result = handle::<S>(&rx, format, &headers, body).await;
    if result.is_err() {
        S::refused(&rx, Protocol::OtlpHttp);
    }
    match result {
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

async fn handle<S: Signal>(
    rx: &Receiver,
    format: Format,
    headers: &HeaderMap,
    body: Body,
) -> Result<S::Response, IngestError> {
    let encoding = content_encoding(headers)?;
    let ((batch, rejections), _slot) =
        read_and_decode(rx, headers, body, encoding, move |bytes| S::decode(format, bytes)).await?;
    S::export(rx, Protocol::OtlpHttp, batch, rejections).await
}

/// `POST /v1/metrics`: 404 (the status OTLP/HTTP clients treat as "not retryable") with an
/// OTLP `Status` saying why, in the request's format.
async fn refuse_metrics(State(rx): State<Receiver>, headers: HeaderMap) -> Response {
    rx.metrics_refused(Protocol::OtlpHttp);
    let body = RpcStatus { code: 12, message: METRICS_REFUSED.into() };
    match content_format(&headers) {
        Ok(Format::Protobuf) => {
            (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/x-protobuf")], body.encode_to_vec())
                .into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "code": body.code, "message": body.message }).to_string(),
        )
            .into_response(),
    }
}
