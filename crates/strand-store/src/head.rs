//! The head: recently written spans in memory, grouped by trace, queryable at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use bytes::Bytes;

use strand_core::{Resource, Scope, Span, SpanBatch, SpanId, StoredSpan, TraceId};

use crate::block::EncodedBlock;
use crate::block::write::{ResourceKeys, ScopeKeys, SortedSpans, TAKE_ROWS};
use crate::error::FormatError;
use crate::index::IndexBuilder;
use crate::logs::LogHead;
use crate::wal::{RecordLayout, WalRecord, decode_at};

/// In-memory spans, kept as the encoded WAL records they arrived in (about the size of
/// the protobuf, instead of a heap object per attribute), with an index from trace id to
/// the records holding its spans. Not synchronised: the engine wraps it in a lock.
///
/// Ids come from the network, so the maps keep std's keyed hasher: a client cannot craft
/// colliding ids to make inserts quadratic.
pub struct Head {
    records: Vec<Bytes>,
    traces: HashMap<TraceId, TraceEntry>,
    /// Each span held (its first copy), by sort key and place in `records`: a cut writes
    /// them in order straight from the records, a chunk at a time.
    /// Sorted in place by the cut (a retried write sorts them again, already in order).
    spans: parking_lot::Mutex<Vec<SpanRef>>,
    /// The scope groups of the records, which `spans` refer to.
    origins: Vec<OriginRef>,
    /// Whether a span held ends before it starts (its block needs that column).
    early_end: bool,
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
            spans: parking_lot::Mutex::new(Vec::new()),
            origins: Vec::new(),
            early_end: false,
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
    /// Adds a batch given as its encoded WAL record and that record's layout (see
    /// [`WalRecord::encode_with_layout`]) and its decoded form (used to index it). Spans
    /// already present (same trace and span id) are not counted again; a record adding
    /// nothing new is not kept. Returns how many spans were new.
    pub fn insert(
        &mut self,
        mut encoded: Bytes,
        layout: &RecordLayout,
        batch: &SpanBatch,
        received_unix_nano: u64,
    ) -> usize {
        let relaid;
        let mut layout = layout;
        if layout.spans.len() != batch.span_count() || layout.record_len as usize != encoded.len() {
            // Never from the WAL thread or replay, which hand the layout of this batch's
            // record; encoded again rather than cut from the wrong places.
            let (bytes, l) = WalRecord::encode_with_layout(received_unix_nano, "", batch);
            (encoded, relaid) = (Bytes::from(bytes), l);
            layout = &relaid;
        }
        let idx = self.records.len() as u32;
        let origin_base = self.origins.len() as u32;
        let mut added = 0;
        let spans = batch.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans);
        for (sp, at) in spans.zip(&layout.spans) {
            let trace = self.traces.entry(sp.trace_id).or_default();
            if trace.spans.insert(sp.span_id) {
                added += 1;
                if trace.records.last() != Some(&idx) {
                    trace.records.push(idx);
                }
                self.spans.get_mut().push(SpanRef {
                    trace: u128::from_be_bytes(sp.trace_id.0),
                    start: sp.start_time_unix_nano,
                    span: u64::from_be_bytes(sp.span_id.0),
                    record: idx,
                    offset: at.offset,
                    origin: origin_base + at.origin,
                });
                self.early_end |= sp.end_time_unix_nano < sp.start_time_unix_nano;
            }
        }
        if added > 0 {
            self.origins.extend(layout.origins.iter().map(|o| OriginRef {
                record: idx,
                resource: o.resource,
                scope: o.scope,
            }));
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

    /// Encodes the spans held as a block's span files. The spans are sorted by their keys,
    /// then decoded from their records and written a chunk of rows at a time: a cut holds
    /// the keys and one chunk's columns besides the head, not a columnar copy of it.
    pub fn encode_spans(
        &self,
        id: String,
        min_received_unix_nano: u64,
        max_received_unix_nano: u64,
    ) -> Result<EncodedBlock, FormatError> {
        let mut order = self.spans.lock();
        order.sort_unstable_by_key(|s| (s.trace, s.start, s.span));
        let mut out = SortedSpans::new(self.early_end, self.traces.len() as u64)?;
        let mut origins: Vec<Option<(ResourceKeys, ScopeKeys)>> = vec![None; self.origins.len()];
        let record =
            |i: u32| self.records.get(i as usize).ok_or_else(|| FormatError::invalid("head: no such record"));
        for chunk in order.chunks(TAKE_ROWS) {
            for s in chunk {
                let slot = origins
                    .get_mut(s.origin as usize)
                    .ok_or_else(|| FormatError::invalid("head: no such scope group"))?;
                let keys = match *slot {
                    Some(keys) => keys,
                    None => {
                        let o = self.origins[s.origin as usize];
                        let rec = record(o.record)?;
                        let resource: Resource = decode_at(rec, o.resource)?;
                        let scope: Scope = decode_at(rec, o.scope)?;
                        *slot.insert(out.origin_keys(&resource, &scope)?)
                    }
                };
                let span: Span = decode_at(record(s.record)?, s.offset)?;
                out.push(&span, keys)?;
            }
        }
        out.finish(id, min_received_unix_nano, max_received_unix_nano)
    }

    /// The encoded records holding spans of a trace: cheap to take under a lock, decoded
    /// afterwards with [`decode_trace`].
    pub fn trace_records(&self, id: &TraceId) -> Vec<Bytes> {
        self.traces
            .get(id)
            .map(|t| t.records.iter().filter_map(|&r| self.records.get(r as usize).cloned()).collect())
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

/// A trace's spans in the head: the records holding them, and their ids.
#[derive(Debug, Default)]
struct TraceEntry {
    records: Vec<u32>,
    spans: SpanIds,
}

/// The span ids of one trace: a list while short (most traces: one hash of the trace id
/// per span instead of one more of the pair), a set past [`SpanIds::LIST_MAX`].
#[derive(Debug)]
enum SpanIds {
    List(Vec<SpanId>),
    Set(HashSet<SpanId>),
}

impl Default for SpanIds {
    fn default() -> Self {
        SpanIds::List(Vec::new())
    }
}

impl SpanIds {
    const LIST_MAX: usize = 32;

    /// Adds an id; returns whether it was new.
    fn insert(&mut self, id: SpanId) -> bool {
        match self {
            SpanIds::List(list) if list.contains(&id) => false,
            SpanIds::List(list) if list.len() < Self::LIST_MAX => {
                list.push(id);
                true
            }
            SpanIds::List(list) => {
                let mut set: HashSet<SpanId> = list.drain(..).collect();
                set.insert(id);
                *self = SpanIds::Set(set);
                true
            }
            SpanIds::Set(set) => set.insert(id),
        }
    }
}

/// A span held in the head: its sort key (trace id, start, span id, as big-endian
/// integers) and where its encoding starts.
#[derive(Debug, Clone, Copy)]
struct SpanRef {
    trace: u128,
    start: u64,
    span: u64,
    record: u32,
    offset: u32,
    /// Index into [`Head::origins`].
    origin: u32,
}

/// Where a scope group's resource and scope are encoded.
#[derive(Debug, Clone, Copy)]
struct OriginRef {
    record: u32,
    resource: u32,
    scope: u32,
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
        let (bytes, layout) = WalRecord::encode_with_layout(received, "", &b);
        head.insert(bytes.into(), &layout, &b, received)
    }

    /// A cut straight from the records, a chunk at a time, writes the same files as
    /// decoding every record into a block builder: across chunks, resources, scopes, a
    /// retried batch and a span ending before it starts.
    #[test]
    fn a_cut_from_the_records_writes_what_a_block_builder_writes() {
        use crate::block::BlockBuilder;
        use crate::testdata::{read_parquet, service_batch, skewed_batch, span};
        let mut head = Head::default();
        let mut builder = BlockBuilder::new();
        let mut add = |b: SpanBatch, received: u64| {
            builder.append_batch(&b).expect("appends");
            put(&mut head, b, received)
        };
        const TRACES: u64 = 4_000;
        let tid = |t: u64| TraceId((t.wrapping_mul(0x9e37_79b9_7f4a_7c15) as u128 * 7919).to_be_bytes());
        // Later spans start earlier, so the sorted order differs from the arrival order.
        for i in 0..10u64 {
            for group in 0..TRACES / 50 {
                let spans = (group * 50..(group + 1) * 50)
                    .map(|t| span(tid(t), i, (i > 0).then_some(0), &format!("op-{i}"), 1_000_000 - i * 10, 5))
                    .collect();
                let scope = strand_core::Scope { name: format!("scope-{}", group % 2), ..Default::default() };
                add(service_batch(&format!("svc-{}", (group + i) % 3), vec![], scope, spans), 10 + i);
            }
        }
        for seed in 0..20 {
            add(batch(seed, 4), 30);
        }
        assert_eq!(add(batch(3, 4), 40), 0, "a retried batch adds nothing");
        add(skewed_batch(50, 3), 50);
        assert!(head.span_count() > TAKE_ROWS, "the cut must cross chunks");

        let cut = head.encode_spans("b".into(), 1, 2).expect("cuts");
        let built = builder.finish("b".into(), 1, 2, Vec::new()).expect("builds");
        assert_eq!(cut.meta.span_count, head.span_count() as u64);
        assert_eq!(read_parquet(&cut.spans), read_parquet(&built.spans), "the same rows");
        assert_eq!(cut.traces, built.traces, "the same trace summaries");
        let without_files = |mut m: crate::block::BlockMeta| {
            m.files.clear();
            m
        };
        assert_eq!(without_files(cut.meta), without_files(built.meta));
        let filter = |f: crate::cache::TraceFilter| {
            let mut out = Vec::new();
            f.encode_into(&mut out);
            out
        };
        assert_eq!(filter(cut.filter), filter(built.filter));
    }

    /// A layout that does not go with its record (the store's own paths always hand the
    /// record's own) makes the head encode the record again rather than cut from the wrong
    /// places.
    #[test]
    fn a_record_given_another_records_layout_is_encoded_again() {
        use crate::block::BlockBuilder;
        use crate::testdata::read_parquet;
        let b = batch(1, 4);
        let mut longer = b.clone();
        longer.resource_spans[0].scope_spans[0].spans[0].name = "a much longer span name".into();
        let (_, same_count_other_bytes) = WalRecord::encode_with_layout(5, "", &longer);
        for wrong in [RecordLayout::default(), same_count_other_bytes] {
            let mut head = Head::default();
            let (bytes, _) = WalRecord::encode_with_layout(5, "", &b);
            assert_eq!(head.insert(bytes.into(), &wrong, &b, 5), 4);
            let cut = head.encode_spans("b".into(), 5, 5).expect("cuts");
            let mut want = BlockBuilder::new();
            want.append_batch(&b).expect("appends");
            let want = want.finish("b".into(), 5, 5, Vec::new()).expect("builds");
            assert_eq!(read_parquet(&cut.spans), read_parquet(&want.spans));
        }
    }

    /// A trace's ids are told apart as a list and, past its size, as a set.
    #[test]
    fn span_ids_are_counted_once_in_a_list_and_in_a_set() {
        let mut ids = SpanIds::default();
        let id = |n: u64| SpanId(n.to_be_bytes());
        for n in 0..100 {
            assert!(ids.insert(id(n)), "{n} is new");
            assert!(!ids.insert(id(n)), "{n} is known");
            assert!(!ids.insert(id(n / 2)), "{} is known", n / 2);
        }
        assert!(matches!(ids, SpanIds::Set(ref s) if s.len() == 100));
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
