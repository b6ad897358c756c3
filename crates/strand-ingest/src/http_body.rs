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

use crate::memory::{Charge, MemoryBudget, Stage};
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
/// chunk's bytes from the receiver's memory budget (429 when it is full) and giving up
/// after `body_read_timeout` (408). The returned [`Receiving`] holds the body's bytes.
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
    let mut held = Receiving::new(rx);
    let read = read_body_budgeted(body, headers, rx.limits.max_request_bytes, &mut held);
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

/// The memory budget a request holds while it is read and decoded: its body's bytes
/// (counted in `strand_receiver_body_bytes_receiving` too) and their inflated copy; given
/// back when dropped.
#[derive(Debug)]
pub struct Receiving {
    body: Charge,
    inflated: Charge,
    budget: Arc<MemoryBudget>,
    stats: Arc<ReceiverStats>,
}

impl Receiving {
    fn new(rx: &Receiver) -> Self {
        Self {
            body: Charge::default(),
            inflated: Charge::default(),
            budget: rx.memory.clone(),
            stats: rx.stats.clone(),
        }
    }

    /// Takes `n` more bytes of the body from the budget.
    fn take_body(&mut self, n: u64) -> Result<(), IngestError> {
        self.budget.take(&mut self.body, n, Stage::Body)?;
        self.stats.receiving_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Takes `n` more bytes of the inflated body from the budget.
    fn take_inflated(&mut self, n: u64) -> Result<(), IngestError> {
        self.budget.take(&mut self.inflated, n, Stage::Inflated)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.stats.receiving_bytes.fetch_sub(self.body.bytes(), Ordering::Relaxed);
    }
}

async fn read_body_budgeted(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
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
            if let Err(e) = held.take_body(data.len() as u64) {
                // Drained, as for 413, so the client sees the 429 and not a reset.
                drain(&mut body).await;
                return Err(e);
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
    inflate_counted(encoding, body, limit, |_| Ok(()))
}

/// Output is produced (and counted) this many bytes at a time.
const INFLATE_STEP: u64 = 64 * 1024;

/// [`inflate`], handing `count` the output buffer's growth in capacity as it grows, step
/// by step (an error from it stops the inflating).
fn inflate_counted(
    encoding: Encoding,
    body: &[u8],
    limit: usize,
    mut count: impl FnMut(u64) -> Result<(), IngestError>,
) -> Result<Vec<u8>, IngestError> {
    let (name, mut reader): (_, Box<dyn Read + '_>) = match encoding {
        Encoding::Identity => {
            count(body.len() as u64)?;
            return Ok(body.to_vec());
        }
        Encoding::Gzip => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(body))),
        Encoding::Deflate => ("deflate", Box::new(flate2::read::ZlibDecoder::new(body))),
        Encoding::Zstd => (
            "zstd",
            Box::new(
                zstd::stream::read::Decoder::new(body)
                    .map_err(|e| IngestError::BadRequest(format!("invalid zstd body: {e}")))?,
            ),
        ),
    };
    // What is counted is the buffer's capacity as it grows, not only the bytes in it.
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    let mut counted = 0;
    loop {
        count((out.capacity() - counted) as u64)?;
        counted = out.capacity();
        let room = (limit as u64 + 1).saturating_sub(out.len() as u64).min(INFLATE_STEP);
        let n = (&mut reader)
            .take(room)
            .read_to_end(&mut out)
            .map_err(|e| IngestError::BadRequest(format!("invalid {name} body: {e}")))?;
        if out.len() > limit {
            return Err(IngestError::TooLarge(format!(
                "decompressed request body exceeds the limit of {limit} bytes"
            )));
        }
        if (n as u64) < room {
            count((out.capacity() - counted) as u64)?;
            return Ok(out);
        }
    }
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
    let (raw, mut receiving) = read_body(rx, body, headers).await?;
    let slot = rx.admit()?;
    let off_thread = raw.len() > rx.limits.blocking_decode_threshold || encoding != Encoding::Identity;
    // The body and its inflated copy are dropped with the closure, and their bytes given
    // back with `receiving`, once decoded; the decoded batch is taken from the budget when
    // it is stored.
    let work = move || match encoding {
        Encoding::Identity => decode(&raw),
        compressed => decode(&inflate_counted(compressed, &raw, limit, |n| receiving.take_inflated(n))?),
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
