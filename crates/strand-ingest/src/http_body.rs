//! Request bodies of the HTTP receivers (OTLP/HTTP, Jaeger thrift, Zipkin): read under a
//! size limit without buffering more than it, inflate gzip, deflate (zlib) or zstd under the
//! same limit (the encodings the OpenTelemetry Collector's HTTP receivers take), and decode
//! on the blocking pool when the work is large.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::receiver::Slot;
use crate::{IngestError, Receiver, ReceiverStats};

/// `Content-Encoding` of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Not compressed.
    Identity,
    /// gzip.
    Gzip,
    /// `deflate` or `zlib`: zlib-wrapped deflate, as HTTP defines `deflate` and the
    /// collector reads both.
    Deflate,
    /// zstd.
    Zstd,
}

/// The request's `Content-Encoding`: gzip, deflate (zlib), zstd or none.
pub fn content_encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let raw = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" | "zlib" => Ok(Encoding::Deflate),
        "zstd" => Ok(Encoding::Zstd),
        other => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported Content-Encoding `{other}`; use gzip, deflate, zstd or none"
        ))),
    }
}

/// The media type of `Content-Type`, lowercased, without parameters; empty when absent.
pub fn media_type(headers: &HeaderMap) -> String {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Reads the body, refusing more than `limit` bytes without buffering them, taking each
/// chunk's bytes from `budget` (the bytes all bodies being received may hold: 429 when it
/// is spent) and giving up after `timeout` (408). The permit holds the body's bytes.
///
/// A refused body is drained (discarded, bounded by [`DRAIN_BYTES`] and [`DRAIN_TIME`])
/// before the 413 goes out: closing a socket with unread data makes the kernel reset the
/// connection, and a client still sending would see the reset instead of the answer.
pub async fn read_body(
    rx: &Receiver,
    body: Body,
    headers: &HeaderMap,
) -> Result<(Bytes, Receiving), IngestError> {
    let timeout = rx.limits.body_read_timeout;
    let mut held = Receiving { permit: None, stats: rx.stats.clone() };
    let read = read_body_budgeted(body, headers, rx.limits.max_request_bytes, &rx.receiving, &mut held);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok((bytes, held)),
        Ok(Err(e)) => {
            if matches!(e, IngestError::Overloaded(_)) {
                rx.stats.body_budget_refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
        }
        Err(_) => {
            rx.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
            Err(IngestError::Timeout(format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            )))
        }
    }
}

/// The receive budget a body holds while it is read and decoded, counted in
/// `strand_receiver_body_bytes_receiving`; given back when dropped.
pub struct Receiving {
    permit: Option<OwnedSemaphorePermit>,
    stats: Arc<ReceiverStats>,
}

impl Receiving {
    fn add(&mut self, permit: OwnedSemaphorePermit) {
        self.stats.receiving_bytes.fetch_add(permit.num_permits() as u64, Ordering::Relaxed);
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if let Some(p) = &self.permit {
            self.stats.receiving_bytes.fetch_sub(p.num_permits() as u64, Ordering::Relaxed);
        }
    }
}

async fn read_body_budgeted(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    budget: &Arc<Semaphore>,
    held: &mut Receiving,
) -> Result<Bytes, IngestError> {
    let too_large = || IngestError::TooLarge(format!("request body exceeds the limit of {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if declared.is_some_and(|n| n > limit as u64) {
        if declared.is_some_and(|n| n <= DRAIN_BYTES) {
            drain(&mut body).await;
        }
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| IngestError::BadRequest(format!("failed to read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(&mut body).await;
                return Err(too_large());
            }
            let n = u32::try_from(data.len()).map_err(|_| too_large())?;
            if n > 0 {
                let Ok(permit) = budget.clone().try_acquire_many_owned(n) else {
                    // Drained, as for 413, so the client sees the 429 and not a reset.
                    drain(&mut body).await;
                    return Err(IngestError::Overloaded(
                        "the request bodies being received fill the receive budget; retry later".into(),
                    ));
                };
                held.add(permit);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The most of a refused body read and thrown away so the client sees the 413.
pub const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// The longest a refused body is drained.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards what is left of `body`, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(body: &mut Body) {
    let discard = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Inflates gzip, refusing output beyond `limit` (a gzip bomb costs at most `limit`).
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    inflate(Encoding::Gzip, body, limit)
}

/// Decompresses a body in `encoding`, refusing output beyond `limit` (a decompression bomb
/// costs at most `limit`).
pub fn inflate(encoding: Encoding, body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    let take = limit as u64 + 1;
    let (name, read) = match encoding {
        Encoding::Identity => return Ok(body.to_vec()),
        Encoding::Gzip => ("gzip", flate2::read::MultiGzDecoder::new(body).take(take).read_to_end(&mut out)),
        Encoding::Deflate => {
            ("deflate", flate2::read::ZlibDecoder::new(body).take(take).read_to_end(&mut out))
        }
        Encoding::Zstd => {
            ("zstd", zstd::stream::read::Decoder::new(body).and_then(|d| d.take(take).read_to_end(&mut out)))
        }
    };
    read.map_err(|e| IngestError::BadRequest(format!("invalid {name} body: {e}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge(format!(
            "decompressed request body exceeds the limit of {limit} bytes"
        )));
    }
    Ok(out)
}

/// Reads the body ([`read_body`]), takes an admission slot ([`Receiver::admit`]: only now,
/// so a client still sending holds none), inflates the body (`encoding` from
/// [`content_encoding`]) and runs `decode` on the plain bytes: on the blocking pool when the
/// body is large or compressed (both are CPU work), inline otherwise. The slot comes back
/// with the result, for the caller to hold while it stores it.
pub async fn read_and_decode<T: Send + 'static>(
    rx: &Receiver,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    decode: impl FnOnce(&[u8]) -> Result<T, IngestError> + Send + 'static,
) -> Result<(T, Slot), IngestError> {
    let limit = rx.limits.max_request_bytes;
    let (raw, _receiving) = read_body(rx, body, headers).await?;
    let slot = rx.admit()?;
    let off_thread = raw.len() > rx.limits.blocking_decode_threshold || encoding != Encoding::Identity;
    let work = move || match encoding {
        Encoding::Identity => decode(&raw),
        compressed => decode(&inflate(compressed, &raw, limit)?),
    };
    let decoded = if off_thread {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| IngestError::Unavailable(format!("decode task failed: {e}")))?
    } else {
        work()
    };
    Ok((decoded?, slot))
}
