//! What the Jaeger and Zipkin conversions share: regrouping spans by resource and scope
//! (both protocols carry them per span or per batch, OTLP per group), the status rule for
//! HTTP codes, and microsecond timestamps.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use strand_core::{Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanKind, StatusCode};
use strand_otlp::Rejections;

use crate::http_body::{content_encoding, read_and_decode};
use crate::{IngestError, Protocol, Receiver};

/// Handles one Jaeger or Zipkin HTTP request: `decoder` is what the request's content type
/// selected (or why it is refused); the body is read, inflated, decoded and stored under one
/// in-flight slot, and the answer is [`accepted`] or [`refused`] (counted).
pub(crate) async fn receive<F>(
    rx: &Receiver,
    protocol: Protocol,
    headers: &HeaderMap,
    body: Body,
    decoder: Result<F, IngestError>,
) -> Response
where
    F: FnOnce(&[u8]) -> Result<(SpanBatch, Rejections), IngestError> + Send + 'static,
{
    let result = async {
        let decode = decoder?;
        let encoding = content_encoding(headers)?;
        let ((batch, rejections), _slot) = read_and_decode(rx, headers, body, encoding, decode).await?;
        rx.store(protocol, batch, &rejections).await?;
        Ok(rejections)
    }
    .await;
    match result {
        Ok(rejections) => accepted(&rejections),
        Err(e) => {
            rx.refused(protocol);
            refused(e)
        }
    }
}

/// Builds a [`SpanBatch`] from spans that arrive one by one with their resource and scope.
#[derive(Default)]
pub(crate) struct BatchBuilder {
    batch: SpanBatch,
    resources: HashMap<String, usize>,
    scopes: HashMap<(usize, String, String), usize>,
}

impl BatchBuilder {
    /// Adds `span` under the resource identified by `resource_key` (built by `resource` the
    /// first time the key is seen) and the scope `name`/`version`.
    pub fn push(
        &mut self,
        resource_key: &str,
        resource: impl FnOnce() -> Resource,
        scope: (String, String),
        span: Span,
    ) {
        let ri = match self.resources.get(resource_key) {
            Some(&i) => i,
            None => {
                self.batch
                    .resource_spans
                    .push(ResourceSpans { resource: Arc::new(resource()), scope_spans: Vec::new() });
                let i = self.batch.resource_spans.len() - 1;
                self.resources.insert(resource_key.to_owned(), i);
                i
            }
        };
        let rs = &mut self.batch.resource_spans[ri];
        let si = *self.scopes.entry((ri, scope.0, scope.1)).or_insert_with_key(|(_, name, version)| {
            rs.scope_spans.push(ScopeSpans {
                scope: Arc::new(Scope { name: name.clone(), version: version.clone(), ..Scope::default() }),
                spans: Vec::new(),
            });
            rs.scope_spans.len() - 1
        });
        rs.scope_spans[si].spans.push(span);
    }

    /// The batch, groups in first-seen order.
    pub fn finish(self) -> SpanBatch {
        self.batch
    }
}

/// Span status implied by an HTTP status code, as the OpenTelemetry HTTP conventions and
/// the collector's Jaeger receiver read it: 4xx is an error for a client, not for a server;
/// 5xx and codes outside 100–599 are errors.
pub(crate) fn status_from_http(code: i64, kind: SpanKind) -> StatusCode {
    match code {
        100..=399 => StatusCode::Unset,
        400..=499 if kind == SpanKind::Server => StatusCode::Unset,
        _ => StatusCode::Error,
    }
}

/// Microseconds since the epoch as nanoseconds; `None` when negative or out of range.
pub(crate) fn micros_to_nanos(us: i64) -> Option<u64> {
    u64::try_from(us).ok()?.checked_mul(1000)
}

/// Span kind from its lowercase name (`span.kind` tags).
pub(crate) fn kind_from_name(name: &str) -> Option<SpanKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "client" => SpanKind::Client,
        "server" => SpanKind::Server,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

/// The answer to an accepted request: `202 Accepted`, empty when every span was stored;
/// otherwise a JSON body saying how many spans were rejected and why (the rest are
/// stored), in the shape of OTLP's partial success.
fn accepted(rejections: &Rejections) -> Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    if rejections.count == 0 {
        return StatusCode::ACCEPTED.into_response();
    }
    let body = serde_json::json!({
        "rejectedSpans": rejections.count,
        "errorMessage": rejections.message(),
    });
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The answer to a refused request: its status and the reason as plain text, as the Jaeger
/// collector and Zipkin server answer.
pub(crate) fn refused(e: IngestError) -> Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let status = match &e {
        crate::IngestError::BadRequest(_) => StatusCode::BAD_REQUEST,
        crate::IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        crate::IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        crate::IngestError::Overloaded(_) | crate::IngestError::RateLimited(..) => {
            StatusCode::TOO_MANY_REQUESTS
        }
        crate::IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        crate::IngestError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
    };
    let retry = e.retry_after_secs();
    let mut resp =
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{e}\n")).into_response();
    if let Some(secs) = retry {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
