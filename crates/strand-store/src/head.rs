//! The head: recently written spans in memory, grouped by trace, queryable at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use bytes::Bytes;

use strand_core::{SpanBatch, SpanId, StoredSpan, TraceId};

use crate::error::FormatError;
use crate::index::IndexBuilder;
use crate::logs::LogHead;
use crate::wal::WalRecord;

/// In-memory spans, kept as the encoded WAL records they arrived in (about the size of
/// the protobuf, instead of a heap object per attribute), with an index from trace id to
/// the records holding its spans. Not synchronised: the engine wraps it in a lock.
///
/// Ids come from the network, so the maps keep std's keyed hasher: a client cannot craft
/// colliding ids to make inserts quadratic.
pub struct Head {
    records: Vec<Bytes>,
    traces: HashMap<TraceId, Vec<u32>>,
    keys: HashSet<(TraceId, SpanId)>,
    span_count: usize,
    bytes: u64,
    min_received: u64,
    max_received: u64,
    index: Arc<RwLock<HeadIndex>>,
    progress: Arc<AtomicUsize>,
    /// Log records received since the last cut; cut with the spans.
    pub logs: LogHead,
}

impl Default for Head {
    fn default() -> Self {
        let progress = Arc::new(AtomicUsize::new(0));
        let index = HeadIndex { builder: IndexBuilder::new(), indexed: 0, progress: progress.clone() };
        Self {
            records: Vec::new(),
            traces: HashMap::new(),
            keys: HashSet::new(),
            span_count: 0,
            bytes: 0,
            min_received: 0,
            max_received: 0,
            index: Arc::new(RwLock::new(index)),
            progress,
            logs: LogHead::default(),
        }
    }
}

/// The head's search index, built off the ingest path: the store's index thread (and a
/// search that finds it behind) indexes the records that arrived since.
#[derive(Debug)]
pub struct HeadIndex {
    /// The index of records `[0, indexed)`.
    pub builder: IndexBuilder,
    indexed: usize,
    /// `indexed`, readable without the lock (a long search holds it).
    progress: Arc<AtomicUsize>,
}

impl HeadIndex {
    /// Indexes records that follow the ones already indexed, starting at position `first`;
    /// records already indexed by a concurrent reader are skipped.
    pub fn extend(&mut self, first: usize, records: &[Bytes]) -> Result<(), FormatError> {
        let skip = self.indexed.saturating_sub(first);
        if first > self.indexed {
            // Cannot happen: `first` was read from this index, which only grows.
            return Err(FormatError::invalid("head index: records out of order"));
        }
        self.index_records(records.get(skip..).unwrap_or_default())
    }

    /// Indexes the record at `position` from its already decoded batch, if it is the next
    /// one; returns whether it was.
    pub fn add_decoded(&mut self, position: usize, received_unix_nano: u64, batch: &SpanBatch) -> bool {
        if position != self.indexed {
            return false;
        }
        self.builder.add_batch(batch, received_unix_nano);
        self.indexed += 1;
        self.progress.store(self.indexed, Ordering::Release);
        true
    }

    /// Records indexed so far.
    pub fn indexed(&self) -> usize {
        self.indexed
    }

    fn index_records(&mut self, records: &[Bytes]) -> Result<(), FormatError> {
        for rec in records {
            let r = WalRecord::decode_framed(rec)?;
            self.builder.add_batch(&r.batch, r.received_unix_nano);
            self.indexed += 1;
            self.progress.store(self.indexed, Ordering::Release);
        }
        Ok(())
    }
}

impl Head {
    /// Adds a batch given as its encoded WAL record (see [`WalRecord::encode`]) and its
    /// decoded form (used only to index it). Spans already present (same trace and span id)
    /// are not counted again; a record adding nothing new is not kept. Returns how many
    /// spans were new.
    pub fn insert(&mut self, encoded: Bytes, batch: &SpanBatch, received_unix_nano: u64) -> usize {
        let idx = self.records.len() as u32;
        let mut added = 0;
        for sp in batch.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
            if self.keys.insert((sp.trace_id, sp.span_id)) {
                added += 1;
                let recs = self.traces.entry(sp.trace_id).or_default();
                if recs.last() != Some(&idx) {
                    recs.push(idx);
                }
            }
        }
        if added > 0 {
            if self.span_count == 0 {
                self.min_received = received_unix_nano;
            }
            self.min_received = self.min_received.min(received_unix_nano);
            self.max_received = self.max_received.max(received_unix_nano);
            self.bytes += encoded.len() as u64;
            self.records.push(encoded);
        }
        self.span_count += added;
        added
    }

    /// The encoded records holding spans of a trace: cheap to take under a lock, decoded
    /// afterwards with [`decode_trace`].
    pub fn trace_records(&self, id: &TraceId) -> Vec<Bytes> {
        self.traces
            .get(id)
            .map(|recs| recs.iter().filter_map(|&r| self.records.get(r as usize).cloned()).collect())
            .unwrap_or_default()
    }

    /// The spans of a trace held here (a span repeated by a retry may appear twice; readers
    /// deduplicate).
    pub fn get(&self, id: &TraceId) -> Result<Vec<StoredSpan>, FormatError> {
        decode_trace(&self.trace_records(id), id)
    }

    /// Every record, decoded, in arrival order, with its receive time.
    pub fn batches(&self) -> impl Iterator<Item = Result<(u64, SpanBatch), FormatError>> + '_ {
        self.records.iter().map(|rec| WalRecord::decode_framed(rec).map(|r| (r.received_unix_nano, r.batch)))
    }

    /// The shared index and the position of the newest record (for handing the index a
    /// batch the writer has just inserted, see [`HeadIndex::add_decoded`]).
    pub fn newest_record(&self) -> (Arc<RwLock<HeadIndex>>, Option<usize>) {
        (self.index.clone(), self.records.len().checked_sub(1))
    }

    /// The shared index, how many records it had indexed, and the records after those
    /// (cheap handles): lets a reader bring the index up to date (see [`HeadIndex::extend`])
    /// after releasing the store's lock. Never waits for the index's lock, which a long
    /// search may hold, so callers holding the store's lock never stall on it.
    pub fn index_handle(&self) -> (Arc<RwLock<HeadIndex>>, usize, Vec<Bytes>) {
        let from = self.progress.load(Ordering::Acquire);
        (self.index.clone(), from, self.records.get(from..).map(<[Bytes]>::to_vec).unwrap_or_default())
    }
}

/// Decodes records (from [`Head::trace_records`]) and keeps the spans of one trace.
pub fn decode_trace(records: &[Bytes], id: &TraceId) -> Result<Vec<StoredSpan>, FormatError> {
    let mut out = Vec::new();
    for rec in records {
        let batch = WalRecord::decode_framed(rec)?.batch;
        out.extend(batch.into_stored().filter(|s| s.span.trace_id == *id));
    }
    Ok(out)
}

impl Head {
    /// Number of distinct spans held.
    pub fn span_count(&self) -> usize {
        self.span_count
    }

    /// Encoded bytes held, spans and log records.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.logs.bytes()
    }

    /// Earliest receive time of a held span or log record (0 when empty).
    pub fn min_received(&self) -> u64 {
        match (self.span_count, self.logs.is_empty()) {
            (0, true) => 0,
            (0, false) => self.logs.min_received(),
            (_, true) => self.min_received,
            _ => self.min_received.min(self.logs.min_received()),
        }
    }

    /// Latest receive time of a held span or log record.
    pub fn max_received(&self) -> u64 {
        self.max_received.max(self.logs.max_received())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.span_count == 0 && self.logs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{batch, trace_id};

    fn put(head: &mut Head, b: SpanBatch, received: u64) -> usize {
        let rec = WalRecord { received_unix_nano: received, tenant: String::new(), batch: b };
        head.insert(rec.encode().into(), &rec.batch, received)
    }

    #[test]
    fn insert_is_idempotent_on_trace_and_span_id() {
        let mut head = Head::default();
        assert_eq!(put(&mut head, batch(1, 4), 10), 4);
        assert_eq!(put(&mut head, batch(1, 4), 20), 0);
        assert_eq!(put(&mut head, batch(2, 3), 5), 3);
        assert_eq!(head.span_count(), 7);
        assert_eq!(head.batches().count(), 2, "a record adding nothing is not kept");
        assert_eq!((head.min_received(), head.max_received()), (5, 10));
        let spans = head.get(&trace_id(1)).expect("decodes");
        let mut want: Vec<_> = batch(1, 4).into_stored().collect();
        let mut got = spans;
        want.sort_by_key(|s| s.span.span_id);
        got.sort_by_key(|s| s.span.span_id);
        assert_eq!(got, want, "spans come back whole from the encoded record");
        assert!(head.get(&trace_id(9)).expect("decodes").is_empty());
    }
}
