//! Search index of one source of spans (a block, or the head).
//!
//! Per trace, a *part* (the trace as seen by this source): start, end, span and error
//! counts, root candidate, services with counts, first receive time. A term dictionary
//! maps `(service, field, key, value)` to the traces having a span with it: span name,
//! kind, ERROR status, and attribute values (span, resource, scope, event and link
//! attributes, compared as text; see [`strand_core::search`]). Dependency edges between
//! services are counted per minute.
//!
//! Blocks store the finished index as `index.bin` (zstd-compressed postcard of
//! [`SearchIndex`], postings delta-encoded); the head keeps an [`IndexBuilder`] that queries bring up to date.
//!
//! Attribute values longer than [`MAX_INDEXED_VALUE_LEN`] bytes, and keys with more than
//! [`MAX_VALUES_PER_KEY`] distinct values for a service in one source (ids, URLs), are
//! not indexed: the key is listed as unindexed and searches on it read the candidate
//! traces instead. The dictionary therefore stays small however many distinct values
//! arrive.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use strand_core::{
    AnyValue, KeyValue, Operation, Resource, Scope, Span, SpanBatch, SpanKind, StatusCode, TraceId,
};

mod block_index;
mod builder;
mod edges;

pub(crate) use block_index::intersect;
use block_index::parse_kind;
pub use builder::IndexBuilder;
pub use edges::{CrossEdge, Link};
use edges::{SpanLite, edge_list, trace_edges};

/// How far outside a head's span times a block may hold a parent or child of its spans
/// for the cut to look there (see [`IndexBuilder::links_with`]), and how far outside a
/// dependency query's range a block may hold a cross edge counted in it: a consumer can
/// start well after its producer ended. A cut asks the blocks in the window only about
/// traces open on one side (a span whose parent is not beside it), but a block written
/// before a restart is asked about every trace of the head, which loads its trace index
/// (its filter lets about 1 % of them through): the window stays a few minutes wide.
pub const LINK_WINDOW_NANOS: u64 = 10 * 60 * 1_000_000_000;

/// Longest attribute value (bytes) that is indexed.
pub const MAX_INDEXED_VALUE_LEN: usize = 256;
/// Most distinct values of one attribute key per service and source before the key is
/// treated as unindexed.
pub const MAX_VALUES_PER_KEY: usize = 1000;
/// Version of [`SearchIndex`]'s encoding: 2 adds the cross edges' service table and the
/// cross edges after the rest (version 1 files, which end before them, are read as having
/// none); 3 leaves the trace ids out of the trace parts (16 bytes a trace, 1.6 a span on
/// the standard profile): they are the block's `traces.parquet` ids, in the same order,
/// checked against a CRC-32C of them written before the parts.
pub const INDEX_VERSION: u32 = 3;

/// What a term says about a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Field {
    /// The span belongs to the service (key and value empty).
    Service,
    /// Span name (value).
    Name,
    /// Span kind (value: OTLP number).
    Kind,
    /// Status ERROR (key and value empty).
    Error,
    /// Attribute `key` has text `value`.
    Attr,
    /// Operation listing: span name (key) seen with kind (value: OTLP number).
    NameKind,
}

/// A term: service (index into the source's service list), field, key, value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Term {
    /// Service index.
    pub service: u16,
    /// Field.
    pub field: Field,
    /// Attribute key (or span name for [`Field::NameKind`]).
    pub key: String,
    /// Value text.
    pub value: String,
}

/// The root candidate of a trace part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootPart {
    /// Whether the span has no parent.
    pub is_root: bool,
    /// Its start.
    pub start: u64,
    /// Its service (index).
    pub service: u16,
    /// Its name (index into the source's names).
    pub name: u32,
}

impl RootPart {
    /// Ordering: a real root beats a span with a parent, then the earlier start wins.
    pub(crate) fn better_than(&self, other: &RootPart) -> bool {
        (!self.is_root, self.start) < (!other.is_root, other.start)
    }
}

/// A service's spans in a trace part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePart {
    /// Service index.
    pub service: u16,
    /// Spans.
    pub spans: u32,
    /// Spans with status ERROR.
    pub errors: u32,
    /// Shortest span duration (ns).
    pub min_duration: u64,
    /// Longest span duration (ns).
    pub max_duration: u64,
}

/// A trace as one source sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePart {
    /// Trace id bytes.
    pub id: [u8; 16],
    /// Earliest span start.
    pub start: u64,
    /// Latest span end.
    pub end: u64,
    /// Earliest receive time of its spans here.
    pub min_received: u64,
    /// Spans.
    pub span_count: u32,
    /// Spans with status ERROR.
    pub error_count: u32,
    /// Root candidate.
    pub root: Option<RootPart>,
    /// Services.
    pub services: Vec<ServicePart>,
}

/// A [`TracePart`] as `index.bin` version 3 holds it: without its id.
#[derive(Deserialize)]
pub(crate) struct TracePartNoId {
    start: u64,
    end: u64,
    min_received: u64,
    span_count: u32,
    error_count: u32,
    root: Option<RootPart>,
    services: Vec<ServicePart>,
}

impl TracePartNoId {
    /// The part, with its id.
    pub(crate) fn with_id(self, id: [u8; 16]) -> TracePart {
        let TracePartNoId { start, end, min_received, span_count, error_count, root, services } = self;
        TracePart { id, start, end, min_received, span_count, error_count, root, services }
    }
}

impl TracePart {
    /// Serializes as a [`TracePartNoId`]: every field but the id, in order.
    pub(crate) fn without_id(&self) -> impl Serialize + '_ {
        (
            self.start,
            self.end,
            self.min_received,
            self.span_count,
            self.error_count,
            &self.root,
            &self.services,
        )
    }

    fn new(id: [u8; 16]) -> Self {
        Self {
            id,
            start: u64::MAX,
            end: 0,
            min_received: u64::MAX,
            span_count: 0,
            error_count: 0,
            root: None,
            services: Vec::new(),
        }
    }
}

/// One dependency edge count in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCount {
    /// Minutes since the Unix epoch of the child spans' starts.
    pub minute: u32,
    /// Parent service index.
    pub parent: u16,
    /// Child service index.
    pub child: u16,
    /// Calls.
    pub calls: u32,
    /// Calls whose child span had status ERROR.
    pub errors: u32,
}

/// A term and the ordinals of the traces having it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postings {
    /// The term.
    pub term: Term,
    /// Trace ordinals (into [`SearchIndex::traces`]), ascending; delta-encoded on disk.
    pub traces: Vec<u32>,
}

/// The finished index of a block.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchIndex {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// Service names; terms and parts refer to them by index.
    pub services: Vec<String>,
    /// Root span names.
    pub names: Vec<String>,
    /// Trace parts sorted by trace id.
    pub traces: Vec<TracePart>,
    /// Terms, sorted.
    pub terms: Vec<Postings>,
    /// `(service, key)` pairs whose values are not (all) indexed, sorted.
    pub unindexed: Vec<(u16, String)>,
    /// Dependency edges, by minute.
    pub edges: Vec<EdgeCount>,
    /// Dependency edges to spans in other blocks, sorted by trace and child span (encoded
    /// after the rest with their service table, see [`INDEX_VERSION`]).
    #[serde(skip)]
    pub cross_edges: Vec<CrossEdge>,
    /// The services cross edges name (those of the other block's spans among them).
    #[serde(skip)]
    pub cross_services: Vec<String>,
    /// Trace ordinals newest first (start descending, id ascending); computed on load.
    #[serde(skip)]
    pub by_start: Vec<u32>,
}

impl SearchIndex {
    /// Estimated heap bytes held (the block cache's weight of it).
    pub fn heap_bytes(&self) -> u64 {
        use std::mem::size_of;
        let text = |s: &String| (size_of::<String>() + s.capacity()) as u64;
        let traces: u64 = self
            .traces
            .iter()
            .map(|t| (size_of::<TracePart>() + t.services.capacity() * size_of::<ServicePart>()) as u64)
            .sum();
        let terms: u64 = self
            .terms
            .iter()
            .map(|p| {
                size_of::<Postings>() as u64
                    + p.term.key.capacity() as u64
                    + p.term.value.capacity() as u64
                    + p.traces.capacity() as u64 * 4
            })
            .sum();
        let unindexed: u64 = self.unindexed.iter().map(|(_, k)| 8 + text(k)).sum();
        self.services.iter().chain(&self.names).map(text).sum::<u64>()
            + traces
            + terms
            + unindexed
            + (self.edges.capacity() * size_of::<EdgeCount>()) as u64
            + (self.cross_edges.capacity() * size_of::<CrossEdge>()) as u64
            + self.cross_services.iter().map(text).sum::<u64>()
            + self.by_start.capacity() as u64 * 4
    }
}

/// Candidate traces of one source.
pub enum Candidates<'a> {
    /// Parts, in no particular order.
    Parts(Vec<&'a TracePart>),
    /// Ordinals (ascending) into `parts`, with every ordinal listed newest first.
    Ords {
        /// Candidate ordinals.
        ords: Vec<u32>,
        /// All parts.
        parts: &'a [TracePart],
        /// All ordinals, newest first.
        by_start: &'a [u32],
    },
}

/// What an index answers about its source, whether finished (a block) or being built (the
/// head).
pub trait IndexView {
    /// Service names.
    fn service_names(&self) -> &[String];
    /// Root span name by index.
    fn name(&self, id: u32) -> &str;
    /// Whether a service's attribute key is not fully indexed.
    fn is_unindexed(&self, service: u16, key: &str) -> bool;
    /// Candidate traces: those having, for some service in `services`, every group of
    /// `groups(service)` (a group matches when any of its terms does).
    fn candidates<'q>(
        &self,
        services: &[u16],
        groups: &dyn Fn(u16) -> Vec<Vec<TermRef<'q>>>,
    ) -> Candidates<'_>;
    /// The part of a trace.
    fn part_of(&self, id: &TraceId) -> Option<&TracePart>;
    /// Operations of a service (name, kind).
    fn operations(&self, service: u16) -> Vec<Operation>;
    /// `(key, value)` of indexed attributes of a service.
    fn attributes(&self, service: u16) -> Vec<(String, String)>;
    /// Edges with child-span minute in `[from, to]`.
    fn edges(&self, from_minute: u32, to_minute: u32) -> Vec<EdgeCount>;
    /// Edges to spans in other sources with child-span minute in `[from, to]` (only blocks
    /// have them: they are found when a block is cut).
    fn cross_edges(&self, from_minute: u32, to_minute: u32) -> Vec<Link>;
    /// Earliest span start and latest span end.
    fn time_range(&self) -> (u64, u64);
}

/// A term a query asks for (borrowed).
#[derive(Debug, Clone, Copy)]
pub struct TermRef<'a> {
    /// Field.
    pub field: Field,
    /// Key.
    pub key: &'a str,
    /// Value.
    pub value: &'a str,
}

#[cfg(test)]
mod tests {
    use super::builder::{OVERFLOW_SERVICE, text_of};
    use super::*;
    use crate::error::FormatError;
    use crate::testdata;
    use strand_core::{SpanId, Status};

    /// Decodes an encoded index, giving it its own trace ids (as `traces.parquet` does).
    fn round_trip(idx: &SearchIndex) -> Result<SearchIndex, FormatError> {
        let ids: Vec<[u8; 16]> = idx.traces.iter().map(|t| t.id).collect();
        SearchIndex::decode(&idx.encode()?, || Ok(ids))
    }

    /// `encode` writes what postcard writes for the whole index with its postings
    /// delta-encoded and its trace parts without their ids, and it decodes back with the
    /// ids it is given.
    #[test]
    fn the_index_is_encoded_as_the_struct_with_delta_encoded_postings() {
        let mut b = IndexBuilder::new();
        for t in 0..6 {
            let spans = (0..3).map(|i| span(t, i, i.checked_sub(1), "op", 100, Vec::new())).collect();
            b.add_batch(&testdata::service_batch("svc", Vec::new(), Default::default(), spans), 1);
            b.add_batch(&testdata::batch(t, 2), 1);
        }
        let idx = b.finish_with(Vec::new(), &Default::default());
        assert!(idx.terms.iter().any(|p| p.traces.len() > 2), "the test needs gaps to encode");
        let mut delta = idx.clone();
        for p in &mut delta.terms {
            let mut prev = 0;
            for t in &mut p.traces {
                (*t, prev) = (*t - prev, *t);
            }
        }
        let parts: Vec<_> = delta.traces.iter().map(TracePart::without_id).collect();
        let ids: Vec<u8> = idx.traces.iter().flat_map(|t| t.id).collect();
        let head = (INDEX_VERSION, crc32c::crc32c(&ids), &delta.services, &delta.names, parts);
        let want = postcard::to_allocvec(&head).expect("encodes");
        let want = postcard::to_extend(&delta.terms, want).expect("encodes");
        let want = postcard::to_extend(&(&delta.unindexed, &delta.edges), want).expect("encodes");
        let want = postcard::to_extend(&(&idx.cross_services, &idx.cross_edges), want).expect("encodes");
        let encoded = idx.encode().expect("encodes");
        assert_eq!(zstd::stream::decode_all(&encoded[..]).expect("zstd"), want);
        assert_eq!(round_trip(&idx).expect("decodes"), idx);
        // The ids come from the caller: too few, or others, are an error, not a wrong index.
        let short = SearchIndex::decode(&encoded, || Ok(vec![[0; 16]; idx.traces.len() - 1]));
        assert!(short.is_err());
        let mut others: Vec<[u8; 16]> = idx.traces.iter().map(|t| t.id).collect();
        others[0][15] ^= 1;
        let err = SearchIndex::decode(&encoded, || Ok(others)).expect_err("other ids");
        assert!(err.to_string().contains("not those the index was written for"), "{err}");
    }

    /// A version 2 file (trace ids inside) still decodes, without asking for ids.
    #[test]
    fn a_version_2_index_with_its_trace_ids_still_decodes() {
        let mut b = IndexBuilder::new();
        for t in 0..3 {
            b.add_batch(&testdata::batch(t, 2), 1);
        }
        let idx = b.finish_with(Vec::new(), &Default::default());
        let mut delta = idx.clone();
        for p in &mut delta.terms {
            let mut prev = 0;
            for t in &mut p.traces {
                (*t, prev) = (*t - prev, *t);
            }
        }
        delta.version = 2;
        let raw = postcard::to_allocvec(&delta).expect("encodes");
        let raw = postcard::to_extend(&(&idx.cross_services, &idx.cross_edges), raw).expect("encodes");
        let v2 = zstd::bulk::compress(&raw, 3).expect("zstd");
        let decoded = SearchIndex::decode(&v2, || panic!("a version 2 file holds its ids")).expect("decodes");
        assert_eq!(decoded.traces, idx.traces);
        assert_eq!(decoded.terms, idx.terms);
    }

    /// A 10 ns server span of trace `[trace; 16]` (ids as in [`testdata::span`]).
    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start: u64, attrs: Vec<KeyValue>) -> Span {
        let mut s = testdata::span(TraceId([trace; 16]), id.into(), parent.map(u64::from), name, start, 10);
        s.attributes = attrs;
        s
    }

    /// A trace is open when one of its spans has a parent the source does not hold,
    /// whatever the order the spans came in; a root alone, or a whole trace, is not.
    #[test]
    fn open_traces_are_those_with_a_span_whose_parent_is_elsewhere() {
        let mut b = IndexBuilder::new();
        let spans = vec![
            span(1, 2, Some(1), "child first", 100, Vec::new()),
            span(1, 1, None, "root", 90, Vec::new()),
            span(2, 1, None, "root alone", 90, Vec::new()),
            span(3, 1, None, "root", 90, Vec::new()),
            span(3, 3, Some(2), "grandchild of a parent elsewhere", 110, Vec::new()),
            span(4, 7, Some(5), "parent elsewhere", 100, Vec::new()),
        ];
        b.add_batch(&batch("svc", spans), 1);
        // A retried copy of trace 1's child changes nothing.
        b.add_batch(&batch("svc", vec![span(1, 2, Some(1), "child first", 100, Vec::new())]), 2);
        assert_eq!(b.open_trace_ids(), vec![TraceId([3; 16]), TraceId([4; 16])]);
    }

    fn batch(service: &str, spans: Vec<Span>) -> SpanBatch {
        testdata::service_batch(service, Vec::new(), Scope::default(), spans)
    }

    fn kv(k: &str, v: AnyValue) -> KeyValue {
        KeyValue { key: k.into(), value: v }
    }

    fn parts(c: Candidates<'_>) -> Vec<&TracePart> {
        match c {
            Candidates::Parts(p) => p,
            Candidates::Ords { ords, parts, by_start } => {
                assert_eq!(by_start.len(), parts.len());
                ords.iter().map(|&o| &parts[o as usize]).collect()
            }
        }
    }

    fn groups_for<'a>(terms: &'a [TermRef<'a>]) -> impl Fn(u16) -> Vec<Vec<TermRef<'a>>> + 'a {
        move |_| terms.iter().map(|t| vec![*t]).collect()
    }

    #[test]
    fn builder_and_finished_index_answer_alike() {
        let mut b = IndexBuilder::new();
        b.add_batch(
            &batch("front", vec![span(1, 1, None, "GET /", 100, vec![kv("code", AnyValue::Int(500))])]),
            7,
        );
        let mut err = span(1, 2, Some(1), "db", 110, vec![]);
        err.status = Status { code: StatusCode::Error, message: String::new() };
        b.add_batch(
            &batch("back", vec![err, span(2, 3, None, "db", 50, vec![kv("code", AnyValue::Int(200))])]),
            9,
        );
        // A retried span is not counted twice.
        b.add_batch(&batch("front", vec![span(1, 1, None, "GET /", 100, vec![])]), 11);
        let idx = round_trip(&b.finish()).expect("decodes");
        let views: [&dyn IndexView; 2] = [&b, &idx];
        for v in views {
            let svc = |n: &str| v.service_names().iter().position(|s| s == n).expect("service") as u16;
            let code500 = [TermRef { field: Field::Attr, key: "code", value: "500" }];
            let hits = parts(v.candidates(&[svc("front")], &groups_for(&code500)));
            assert_eq!(hits.len(), 1);
            let p = hits[0];
            assert_eq!(
                (p.id, p.start, p.end, p.span_count, p.error_count, p.min_received),
                ([1; 16], 100, 120, 2, 1, 7)
            );
            let root = p.root.as_ref().expect("root");
            assert!(root.is_root);
            assert_eq!(
                (v.service_names()[root.service as usize].as_str(), v.name(root.name)),
                ("front", "GET /")
            );
            assert!(parts(v.candidates(&[svc("back")], &groups_for(&code500))).is_empty());
            let error = [TermRef { field: Field::Error, key: "", value: "" }];
            assert_eq!(parts(v.candidates(&[svc("back")], &groups_for(&error))).len(), 1);
            let any = [TermRef { field: Field::Service, key: "", value: "" }];
            assert_eq!(parts(v.candidates(&[svc("front"), svc("back")], &groups_for(&any))).len(), 2);
            let edges = v.edges(0, u32::MAX);
            assert_eq!(edges.len(), 1);
            assert_eq!(
                (edges[0].parent, edges[0].child, edges[0].calls, edges[0].errors),
                (svc("front"), svc("back"), 1, 1)
            );
            assert_eq!(
                v.operations(svc("back")),
                vec![Operation { name: "db".into(), span_kind: SpanKind::Server }]
            );
            assert_eq!(v.time_range(), (50, 120));
        }
    }

    /// One span name under two kinds in one service: each span's kind terms are its own.
    #[test]
    fn a_name_used_with_two_kinds_indexes_each_kind() {
        let mut b = IndexBuilder::new();
        let mut client = span(2, 2, None, "call", 60, vec![]);
        client.kind = SpanKind::Client;
        b.add_batch(&batch("svc", vec![span(1, 1, None, "call", 50, vec![]), client]), 1);
        let idx = round_trip(&b.finish()).expect("decodes");
        let views: [&dyn IndexView; 2] = [&b, &idx];
        for v in views {
            let svc = v.service_names().iter().position(|s| s == "svc").expect("service") as u16;
            let ids = |field, key, value| {
                let t = [TermRef { field, key, value }];
                let mut ids: Vec<[u8; 16]> =
                    parts(v.candidates(&[svc], &groups_for(&t))).iter().map(|p| p.id).collect();
                ids.sort_unstable();
                ids
            };
            assert_eq!(ids(Field::Kind, "", "2"), vec![[1; 16]], "server");
            assert_eq!(ids(Field::Kind, "", "3"), vec![[2; 16]], "client");
            assert_eq!(ids(Field::NameKind, "call", "3"), vec![[2; 16]]);
            assert_eq!(ids(Field::Name, "", "call"), vec![[1; 16], [2; 16]]);
        }
    }

    #[test]
    fn high_cardinality_and_long_values_are_not_indexed() {
        let mut b = IndexBuilder::new();
        let spans = (0..(MAX_VALUES_PER_KEY + 1) as u64)
            .map(|i| {
                let mut s = span(
                    1,
                    1,
                    None,
                    "op",
                    1,
                    vec![kv("user", AnyValue::Int(i as i64)), kv("k", AnyValue::String("x".repeat(300)))],
                );
                s.span_id = SpanId((i + 1).to_be_bytes());
                s
            })
            .collect();
        b.add_batch(&batch("svc", spans), 1);
        let idx = b.finish();
        assert!(idx.is_unindexed(0, "user") && idx.is_unindexed(0, "k") && b.is_unindexed(0, "user"));
        let listed = vec![("service.name".to_string(), "svc".to_string())];
        assert_eq!(idx.attributes(0), listed, "no values of unindexed keys are listed");
        assert_eq!(b.attributes(0), listed);
    }

    #[test]
    fn big_traces_are_deduplicated_and_services_beyond_u16_share_one_entry() {
        let mut b = IndexBuilder::new();
        let spans: Vec<Span> = (0..100u64)
            .map(|i| {
                let mut s = span(1, 1, None, "op", 1, vec![]);
                s.span_id = SpanId((i % 70 + 1).to_be_bytes());
                s
            })
            .collect();
        b.add_batch(&batch("svc", spans.clone()), 1);
        b.add_batch(&batch("svc", spans), 2);
        assert_eq!(b.span_count(), 70, "repeats past the linear-check size are still dropped");
        let many = SpanBatch {
            resource_spans: (0..u32::from(u16::MAX) + 5)
                .map(|i| {
                    batch(&format!("s{i}"), vec![span(2, 1, None, "op", 1, vec![])]).resource_spans.remove(0)
                })
                .collect(),
        };
        b.add_batch(&many, 3);
        let idx = b.finish();
        assert_eq!(idx.services.len(), usize::from(u16::MAX) + 1);
        assert_eq!(idx.services.last().map(String::as_str), Some(OVERFLOW_SERVICE));
    }

    #[test]
    fn indexed_text_is_the_text_searches_compare() {
        let mut buf = String::from("stale");
        for v in
            [AnyValue::Int(-5), AnyValue::Double(72.5), AnyValue::Bool(true), AnyValue::String("x".into())]
        {
            assert_eq!(text_of(&v, &mut buf).map(str::to_owned), strand_core::search::value_text(&v));
        }
        assert_eq!(text_of(&AnyValue::Bytes(vec![1]), &mut buf), None);
    }

    #[test]
    fn decode_rejects_inconsistent_indexes() {
        let mut b = IndexBuilder::new();
        b.add_batch(&batch("svc", vec![span(1, 1, None, "op", 1, vec![])]), 1);
        let mut idx = b.finish();
        idx.terms[0].traces = vec![5];
        assert!(round_trip(&idx).is_err());
        assert!(SearchIndex::decode(b"garbage", || Ok(Vec::new())).is_err());
    }
}
