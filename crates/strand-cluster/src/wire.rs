//! What crosses the wire between the roles: the JetStream messages (a tag byte, then the
//! batch in postcard, the WAL's encoding) and the read protocol queriers speak to
//! ingesters (`POST /api/v1/cluster/read`, a postcard [`ReadRequest`] in, a postcard
//! `Result<ReadResponse, WireError>` out). Both carry a version in their first byte, so a
//! newer peer is refused by name instead of being misread.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use strand_core::logs::{LogBatch, LogPage, LogQuery, StoredLog};
use strand_core::search::{DependencyEdge, Operation, SearchPage, TimeRange, TraceQuery};
use strand_core::{
    BrokenTrace, ChainIntegrity, EdgeHealth, ErrorKind, Integrity, IntegrityFilter, LogStore, SpanBatch,
    SpanId, StoreError, Trace, TraceId, TraceReader, TraceStore,
};

/// Tag of a message holding spans (format 1).
const SPANS_V1: u8 = 1;
/// Tag of a message holding log records (format 1).
const LOGS_V1: u8 = 2;
/// Version byte of the read protocol without a clock (answered from every block).
const READ_V1: u8 = 1;
/// Version byte of the read protocol with the querier's clock: the request is
/// `(clock, ReadRequest)`, and the ingester answers for the blocks it had not handed over
/// to object storage by that clock (see [`crate::handoff`]). Answers stay version 1.
const READ_V2: u8 = 2;
/// Media type of the read protocol's bodies.
pub const READ_MEDIA_TYPE: &str = "application/x-strand-read";
/// The read protocol's path on an ingester's query port.
pub const READ_PATH: &str = "/api/v1/cluster/read";
/// The largest read request an ingester takes: a query, or a trace to analyse (at most
/// `query.max_trace_spans` spans).
const MAX_READ_REQUEST: usize = 64 << 20;

/// A message's batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Spans.
    Spans(SpanBatch),
    /// Log records.
    Logs(LogBatch),
}

/// Encodes spans as a message body.
pub fn encode_spans(batch: &SpanBatch) -> Vec<u8> {
    tagged(SPANS_V1, batch)
}

/// Encodes log records as a message body.
pub fn encode_logs(batch: &LogBatch) -> Vec<u8> {
    tagged(LOGS_V1, batch)
}

fn tagged<T: Serialize>(tag: u8, value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![tag]).expect("encoding into a Vec cannot fail")
}

/// Why a message body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A format this binary does not know (a newer receiver): a newer ingester can read it.
    Unknown(String),
    /// Damaged: nothing will ever read it.
    Bad(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Unknown(m) | DecodeError::Bad(m) => f.write_str(m),
        }
    }
}

/// Decodes a message body.
pub fn decode(body: &[u8]) -> Result<Payload, DecodeError> {
    match body.split_first() {
        Some((&SPANS_V1, rest)) => postcard::from_bytes(rest)
            .map(Payload::Spans)
            .map_err(|e| DecodeError::Bad(format!("undecodable spans: {e}"))),
        Some((&LOGS_V1, rest)) => postcard::from_bytes(rest)
            .map(Payload::Logs)
            .map_err(|e| DecodeError::Bad(format!("undecodable log records: {e}"))),
        Some((tag, _)) => Err(DecodeError::Unknown(format!(
            "message format {tag} is unknown to this strand (a newer receiver wrote it?): upgrade the ingesters first"
        ))),
        None => Err(DecodeError::Bad("empty message".into())),
    }
}

/// One question a querier asks an ingester: a [`strand_core::TraceReader`] or
/// [`strand_core::LogStore`] call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadRequest {
    /// [`strand_core::TraceReader::get_traces`].
    Traces(Vec<TraceId>),
    /// [`strand_core::TraceReader::find_traces`].
    Find(TraceQuery),
    /// [`strand_core::TraceReader::services`].
    Services(TimeRange),
    /// [`strand_core::TraceReader::operations`].
    Operations(String, TimeRange),
    /// [`strand_core::TraceReader::attributes`].
    Attributes(Option<String>, TimeRange),
    /// [`strand_core::TraceReader::dependencies`].
    Dependencies(TimeRange),
    /// [`strand_core::LogStore::trace_logs`].
    TraceLogs(TraceId, Option<SpanId>),
    /// [`strand_core::LogStore::find_logs`].
    FindLogs(LogQuery),
    /// [`ChainIntegrity::of_trace`] of a trace as the querier read it.
    IntegrityOf(Trace),
    /// [`ChainIntegrity::kinds_of`].
    KindsOf(Vec<TraceId>),
    /// [`ChainIntegrity::find_broken`].
    FindBroken {
        /// The finding kinds asked for.
        filter: IntegrityFilter,
        /// Earliest trace start.
        start_unix_nano: u64,
        /// Latest trace start.
        end_unix_nano: u64,
        /// Strictly after this (start, id) in the search order.
        after: Option<(u64, TraceId)>,
        /// Recorded no later than this.
        as_of_unix_nano: u64,
        /// At most this many.
        limit: usize,
    },
    /// [`ChainIntegrity::edges`].
    IntegrityEdges(u64, u64),
    /// [`strand_core::TraceReader::holds`] (added last: variants are numbered on the wire).
    Holds(Vec<TraceId>),
}

/// An ingester's answer, one variant per [`ReadRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadResponse {
    /// Traces found, in the order asked.
    Traces(Vec<Trace>),
    /// A search page.
    Find(SearchPage),
    /// Service names.
    Services(Vec<String>),
    /// Operations.
    Operations(Vec<Operation>),
    /// Attribute pairs.
    Attributes(Vec<(String, String)>),
    /// Dependency edges.
    Dependencies(Vec<DependencyEdge>),
    /// Log records.
    Logs(Vec<StoredLog>),
    /// A log search page.
    LogPage(LogPage),
    /// A trace's integrity, when it could be told.
    Integrity(Option<Integrity>),
    /// Finding kinds by position.
    Kinds(Vec<u8>),
    /// Broken traces, in search order.
    Broken(Vec<BrokenTrace>),
    /// Edge health.
    Edges(Vec<EdgeHealth>),
    /// Which of the ids asked are held, by position.
    Holds(Vec<bool>),
}

/// A failed read, as the ingester's store reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// What the caller can do about it.
    pub kind: WireKind,
    /// The store's message.
    pub message: String,
}

/// [`ErrorKind`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireKind {
    /// The request is wrong.
    InvalidInput,
    /// The store cannot do this.
    Unsupported,
    /// Retry later: too much in flight.
    Overloaded,
    /// Retry later: unavailable.
    Unavailable,
    /// A fault of the ingester or its data.
    Internal,
}

impl WireError {
    fn of(e: &StoreError) -> Self {
        let kind = match e.kind() {
            ErrorKind::InvalidInput => WireKind::InvalidInput,
            ErrorKind::Unsupported => WireKind::Unsupported,
            ErrorKind::Overloaded => WireKind::Overloaded,
            ErrorKind::Unavailable => WireKind::Unavailable,
            ErrorKind::Internal => WireKind::Internal,
        };
        Self { kind, message: e.to_string() }
    }

    /// The error a querier reports for it, naming the ingester.
    pub fn into_store_error(self, ingester: &str) -> StoreError {
        let message = format!("ingester {ingester}: {}", self.message);
        match self.kind {
            WireKind::InvalidInput => StoreError::InvalidQuery(message),
            WireKind::Unsupported => StoreError::Unsupported("a query the ingesters' store does not answer"),
            WireKind::Overloaded => StoreError::Overloaded(message),
            WireKind::Unavailable => StoreError::Unavailable(message),
            WireKind::Internal => StoreError::Corrupt { path: ingester.to_owned(), reason: self.message },
        }
    }
}

/// Encodes a read request body, with the querier's clock (Unix nanoseconds) when it reads
/// the blocks in object storage itself; without (version 1) ingesters answer from every
/// block they hold.
pub fn encode_request(clock: Option<u64>, req: &ReadRequest) -> Vec<u8> {
    match clock {
        Some(clock) => {
            postcard::to_extend(&(clock, req), vec![READ_V2]).expect("encoding into a Vec cannot fail")
        }
        None => tagged(READ_V1, req),
    }
}

/// Decodes a read request body: the clock (none in version 1) and the request.
fn decode_request(body: &[u8]) -> Result<(Option<u64>, ReadRequest), String> {
    match body.split_first() {
        Some((&READ_V1, rest)) => postcard::from_bytes(rest)
            .map(|r| (None, r))
            .map_err(|e| format!("undecodable read request: {e}")),
        Some((&READ_V2, rest)) => postcard::from_bytes::<(u64, ReadRequest)>(rest)
            .map(|(c, r)| (Some(c), r))
            .map_err(|e| format!("undecodable read request: {e}")),
        Some((v, _)) => {
            Err(format!("read protocol version {v} is unknown to this ingester: upgrade it first"))
        }
        None => Err("empty read request".into()),
    }
}

/// Decodes a read answer body.
pub fn decode_response(body: &[u8]) -> Result<Result<ReadResponse, WireError>, String> {
    match body.split_first() {
        Some((&READ_V1, rest)) => postcard::from_bytes(rest).map_err(|e| format!("undecodable answer: {e}")),
        Some((v, _)) => Err(format!("read protocol version {v} is unknown to this querier")),
        None => Err("empty answer".into()),
    }
}

/// An ingester's store seen at a querier's clock (see [`crate::handoff`]).
pub type ViewAt = Arc<dyn Fn(u64) -> strand_store::StoreView + Send + Sync>;

/// What an ingester answers queriers from.
#[derive(Clone)]
struct Sources {
    store: Arc<dyn TraceStore>,
    /// With blocks in object storage: the store at a querier's clock.
    view_at: Option<ViewAt>,
    integrity: Option<Arc<dyn ChainIntegrity>>,
}

/// The ingester's side of the read protocol, over its store (seen through `view_at` when
/// its blocks are handed over to object storage) and chain analyser. A request carries a
/// trace for [`ReadRequest::IntegrityOf`], hence the body limit of a trace read.
pub fn router(
    store: Arc<dyn TraceStore>,
    view_at: Option<ViewAt>,
    integrity: Option<Arc<dyn ChainIntegrity>>,
) -> Router {
    Router::new()
        .route(READ_PATH, axum::routing::post(read))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_READ_REQUEST))
        .with_state(Sources { store, view_at, integrity })
}

async fn read(State(sources): State<Sources>, body: Bytes) -> Response {
    let (clock, req) = match decode_request(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let answer = match (clock, &sources.view_at) {
        (Some(clock), Some(view_at)) => answer(&view_at(clock), sources.integrity.as_deref(), req).await,
        _ => answer(&*sources.store, sources.integrity.as_deref(), req).await,
    }
    .map_err(|e| WireError::of(&e));
    ([(header::CONTENT_TYPE, READ_MEDIA_TYPE)], tagged(READ_V1, &answer)).into_response()
}

/// The most ids, results or spans one read asks for: a querier asks for a page or a
/// trace's worth, never more; anything larger is refused rather than built.
const MAX_READ_ITEMS: usize = 100_000;

/// Refuses a request asking for more than [`MAX_READ_ITEMS`].
fn bounded(req: &ReadRequest) -> Result<(), StoreError> {
    let asked = match req {
        ReadRequest::Traces(ids) | ReadRequest::KindsOf(ids) | ReadRequest::Holds(ids) => ids.len(),
        ReadRequest::Find(q) => q.limit,
        ReadRequest::FindLogs(q) => q.limit,
        ReadRequest::FindBroken { limit, .. } => *limit,
        ReadRequest::IntegrityOf(t) => t.spans.len(),
        _ => 0,
    };
    if asked > MAX_READ_ITEMS {
        return Err(StoreError::InvalidQuery(format!(
            "a cluster read asks for {asked} items, more than the {MAX_READ_ITEMS} one read may"
        )));
    }
    Ok(())
}

/// Answers `req` from `store` and the chain analyser `integrity`.
pub(crate) async fn answer<S: TraceReader + LogStore + ?Sized>(
    store: &S,
    integrity: Option<&dyn ChainIntegrity>,
    req: ReadRequest,
) -> Result<ReadResponse, StoreError> {
    bounded(&req)?;
    let chain = || integrity.ok_or(StoreError::Unsupported("chain integrity (it is off on this ingester)"));
    Ok(match req {
        ReadRequest::Traces(ids) => ReadResponse::Traces(store.get_traces(ids).await?),
        ReadRequest::Holds(ids) => ReadResponse::Holds(store.holds(ids).await?),
        ReadRequest::Find(q) => ReadResponse::Find(store.find_traces(q).await?),
        ReadRequest::Services(r) => ReadResponse::Services(store.services(r).await?),
        ReadRequest::Operations(s, r) => ReadResponse::Operations(store.operations(s, r).await?),
        ReadRequest::Attributes(s, r) => ReadResponse::Attributes(store.attributes(s, r).await?),
        ReadRequest::Dependencies(r) => ReadResponse::Dependencies(store.dependencies(r).await?),
        ReadRequest::TraceLogs(t, s) => ReadResponse::Logs(store.trace_logs(t, s).await?),
        ReadRequest::FindLogs(q) => ReadResponse::LogPage(store.find_logs(q).await?),
        ReadRequest::IntegrityOf(trace) => ReadResponse::Integrity(chain()?.of_trace(&trace).await),
        ReadRequest::KindsOf(ids) => ReadResponse::Kinds(chain()?.kinds_of(&ids).await),
        ReadRequest::FindBroken { filter, start_unix_nano, end_unix_nano, after, as_of_unix_nano, limit } => {
            ReadResponse::Broken(
                chain()?
                    .find_broken(filter, start_unix_nano, end_unix_nano, after, as_of_unix_nano, limit)
                    .await?,
            )
        }
        ReadRequest::IntegrityEdges(start, end) => ReadResponse::Edges(chain()?.edges(start, end).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_formats_are_named() {
        let batch = strand_core::SpanBatch::default();
        assert_eq!(decode(&encode_spans(&batch)), Ok(Payload::Spans(batch)));
        let logs = LogBatch::default();
        assert_eq!(decode(&encode_logs(&logs)), Ok(Payload::Logs(logs)));
        let err = decode(&[9, 1, 2]).expect_err("unknown tag");
        assert!(matches!(&err, DecodeError::Unknown(m) if m.contains("format 9")), "{err}");
        assert!(matches!(decode(&[SPANS_V1, 0xff]), Err(DecodeError::Bad(_))));
        assert!(decode(&[]).is_err());
        assert!(decode(&[SPANS_V1, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn oversized_reads_are_refused() {
        assert!(bounded(&ReadRequest::Find(TraceQuery::all(20))).is_ok());
        let e = bounded(&ReadRequest::Find(TraceQuery::all(MAX_READ_ITEMS + 1))).expect_err("too many");
        assert!(matches!(e, StoreError::InvalidQuery(ref m) if m.contains("100000")), "{e}");
        assert!(bounded(&ReadRequest::Traces(vec![TraceId([1; 16]); MAX_READ_ITEMS + 1])).is_err());
    }

    #[test]
    fn read_requests_round_trip() {
        let req = ReadRequest::Find(TraceQuery::all(20));
        let body = encode_request(Some(7), &req);
        assert_eq!(body[0], READ_V2);
        assert_eq!(decode_request(&body), Ok((Some(7), req.clone())));
        // Version 1 (no clock) is still read.
        assert_eq!(decode_request(&encode_request(None, &req)), Ok((None, req)));
        let e = decode_request(&[9, 0]).expect_err("unknown version");
        assert!(e.contains("version 9"), "{e}");
        assert!(decode_request(&[READ_V2, 0xff]).is_err());
        let answer: Result<ReadResponse, WireError> =
            Err(WireError { kind: WireKind::Overloaded, message: "busy".into() });
        let decoded = decode_response(&tagged(READ_V1, &answer)).expect("decodes");
        assert_eq!(decoded, answer);
        let e = decoded.expect_err("an error").into_store_error("i-1");
        assert!(matches!(e, StoreError::Overloaded(ref m) if m == "ingester i-1: busy"), "{e}");
        assert!(decode_response(&[2]).is_err());
    }
}
