//! Request bodies of the HTTP receivers (OTLP/HTTP, Jaeger thrift, Zipkin): read under a
//! size limit without buffering more than it, inflate gzip under the same limit, and decode
//! on the blocking pool when the work is large.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::{IngestError, Receiver};

/// `Content-Encoding` of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Not compressed.
    Identity,
    /// gzip.
    Gzip,
}

/// The request's `Content-Encoding`: gzip or none.
pub fn content_encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let raw = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        other => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported Content-Encoding `{other}`; use gzip or none"
        ))),
    }
}

/// The media type of `Content-Type`, lowercased, without parameters; empty when absent.
pub fn media_type(headers: &HeaderMap) -> String {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Reads the body, refusing more than `limit` bytes without buffering them.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, IngestError> {
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

/// Reads the body, inflates it (`encoding` from [`content_encoding`]) and runs `decode` on
/// the plain bytes: on the blocking pool when the body is large or compressed (both are CPU
/// work), inline otherwise.
pub async fn read_and_decode<T: Send + 'static>(
    rx: &Receiver,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    decode: impl FnOnce(&[u8]) -> Result<T, IngestError> + Send + 'static,
) -> Result<T, IngestError> {
    let limit = rx.limits.max_request_bytes;
    let raw = read_body(body, headers, limit).await?;
    let off_thread = raw.len() > rx.limits.blocking_decode_threshold || encoding == Encoding::Gzip;
    let work = move || match encoding {
        Encoding::Identity => decode(&raw),
        Encoding::Gzip => decode(&gunzip(&raw, limit)?),
    };
    if off_thread {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| IngestError::Unavailable(format!("decode task failed: {e}")))?
    } else {
        work()
    }
}
