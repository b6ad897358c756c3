//! Zipkin v2 receiver (`:9411`): `POST /api/v2/spans` with a JSON array of spans
//! (`application/json`) or a proto3 `ListOfSpans` (`application/x-protobuf`), optionally
//! gzip. A body without a Content-Type is refused (415): a web page of another origin can
//! send one without the browser asking first, and every Zipkin reporter names its type. Answers `202 Accepted`, as Zipkin does.
//! `/api/v1/spans` answers 415 naming v2, rather than 404, so a misconfigured v1 client
//! learns why.
//!
//! [`model`] decodes both encodings into one shape; [`convert`] maps it to the OTLP model
//! the way the OpenTelemetry Collector's Zipkin receiver does.

pub mod convert;
pub mod model;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use strand_core::SpanBatch;
use strand_otlp::Rejections;

use crate::http_body::media_type;
use crate::legacy::{receive, refused};
use crate::{IngestError, Protocol, Receiver};

/// Body encodings of Zipkin v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: an array of spans.
    Json,
    /// `application/x-protobuf`: `zipkin.proto3.ListOfSpans`.
    Proto,
}

/// Decodes and converts a request body.
pub fn decode(format: Format, body: &[u8]) -> Result<(SpanBatch, Rejections), IngestError> {
    let spans = match format {
        Format::Json => model::decode_json(body),
        Format::Proto => model::decode_proto(body),
    }
    .map_err(IngestError::BadRequest)?;
    Ok(convert::to_span_batch(spans))
}

/// The routes of the Zipkin receiver.
pub fn router(receiver: Receiver) -> Router {
    Router::new()
        .route("/api/v2/spans", post(submit))
        .route("/api/v1/spans", post(v1))
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver)
}

async fn v1(State(rx): State<Receiver>) -> Response {
    rx.refused(Protocol::Zipkin);
    refused(IngestError::UnsupportedMediaType(
        "Zipkin v1 spans are not supported; POST Zipkin v2 spans to /api/v2/spans".into(),
    ))
}

fn format(headers: &HeaderMap) -> Result<Format, IngestError> {
    match media_type(headers).as_str() {
        "application/json" => Ok(Format::Json),
        "" => Err(IngestError::UnsupportedMediaType(
            "missing Content-Type; send application/json or application/x-protobuf".into(),
        )),
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Proto),
        other => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported Content-Type `{other}`; use application/json or application/x-protobuf"
        ))),
    }
}

async fn submit(State(rx): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let decoder = format(&headers).map(|format| move |b: &[u8]| decode(format, b));
    receive(&rx, Protocol::Zipkin, &headers, body, decoder).await
}
