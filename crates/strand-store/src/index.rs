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

/// Longest attribute value (bytes) that is indexed.
pub const MAX_INDEXED_VALUE_LEN: usize = 256;
/// Most distinct values of one attribute key per service and source before the key is
/// treated as unindexed.
pub const MAX_VALUES_PER_KEY: usize = 1000;
/// Version of [`SearchIndex`]'s encoding.
pub const INDEX_VERSION: u32 = 1;

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

impl TracePart {
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
    /// Trace ordinals newest first (start descending, id ascending); computed on load.
    #[serde(skip)]
    pub by_start: Vec<u32>,
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

/// The part of a span the dependency computation needs.
#[derive(Debug, Clone, Copy)]
struct SpanLite {
    span_id: u64,
    parent: Option<u64>,
    service: u16,
    error: bool,
    minute: u32,
}

#[derive(Debug)]
struct TraceAcc {
    part: TracePart,
    /// Term ids, sorted, no duplicates.
    terms: Vec<u32>,
    /// Spans in arrival order (duplicates are skipped).
    spans: Vec<SpanLite>,
    /// Span ids, once the trace is too big for a linear duplicate check.
    seen: Option<std::collections::HashSet<u64>>,
}

impl TraceAcc {
    /// Whether the span is new (and now recorded as seen). Linear for small traces, a set
    /// for big ones, so a trace of a million spans costs no more per span than a small one.
    fn is_new(&mut self, span_id: u64) -> bool {
        const LINEAR: usize = 32;
        match &mut self.seen {
            Some(set) => set.insert(span_id),
            None if self.spans.len() < LINEAR => !self.spans.iter().any(|s| s.span_id == span_id),
            None => {
                let mut set: std::collections::HashSet<u64> = self.spans.iter().map(|s| s.span_id).collect();
                let new = set.insert(span_id);
                self.seen = Some(set);
                new
            }
        }
    }
}

/// Name standing for every service beyond the 65 535 one source can tell apart.
const OVERFLOW_SERVICE: &str = "(more than 65535 services)";

/// Interns strings into indexes.
#[derive(Debug, Default)]
struct Dict {
    list: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Dict {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }
}

/// Maps keyed by strings from the network: foldhash with a per-process random seed (fast,
/// and a client cannot precompute colliding keys).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The values of one key of one (service, field), and whether the key gave up on
/// indexing them.
#[derive(Debug, Default)]
struct KeyTerms {
    values: FastMap<String, u32>,
    unindexed: bool,
}

/// Span kinds as term values.
const KIND_TEXT: [&str; 6] = ["0", "1", "2", "3", "4", "5"];

/// Builds an index span by span; also searchable while being built (the head's index).
#[derive(Debug)]
pub struct IndexBuilder {
    services: Dict,
    names: Dict,
    term_ids: FastMap<(u16, Field), FastMap<String, KeyTerms>>,
    terms: Vec<Term>,
    traces: HashMap<TraceId, TraceAcc>,
    min_start: u64,
    max_end: u64,
    scratch: Vec<u32>,
}

fn span_id_u64(b: [u8; 8]) -> u64 {
    u64::from_be_bytes(b)
}

/// Text of an attribute value, borrowed for strings.
/// Text of an attribute value (as [`strand_core::search::value_text`] writes it), borrowed for strings and
/// written into `buf` (reusing its allocation) for numbers and booleans.
fn text_of<'a>(v: &'a AnyValue, buf: &'a mut String) -> Option<&'a str> {
    use std::fmt::Write as _;
    buf.clear();
    let _ = match v {
        AnyValue::String(s) => return Some(s),
        AnyValue::Int(i) => write!(buf, "{i}"),
        AnyValue::Double(d) => write!(buf, "{d}"),
        AnyValue::Bool(b) => write!(buf, "{b}"),
        _ => return None,
    };
    Some(buf)
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self {
            services: Dict::default(),
            names: Dict::default(),
            term_ids: FastMap::default(),
            terms: Vec::new(),
            traces: HashMap::new(),
            min_start: u64::MAX,
            max_end: 0,
            scratch: Vec::new(),
        }
    }
}

impl IndexBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spans indexed (duplicates not counted).
    pub fn span_count(&self) -> usize {
        self.traces.values().map(|t| t.spans.len()).sum()
    }

    fn term(&mut self, service: u16, field: Field, key: &str, value: &str) -> Option<u32> {
        let keys = self.term_ids.entry((service, field)).or_default();
        let kt = match keys.get_mut(key) {
            Some(kt) => kt,
            None => keys.entry(key.to_owned()).or_default(),
        };
        if kt.unindexed {
            return None;
        }
        if let Some(&id) = kt.values.get(value) {
            return Some(id);
        }
        if field == Field::Attr
            && (value.len() > MAX_INDEXED_VALUE_LEN || kt.values.len() >= MAX_VALUES_PER_KEY)
        {
            kt.unindexed = true;
            return None;
        }
        let id = self.terms.len() as u32;
        kt.values.insert(value.to_owned(), id);
        self.terms.push(Term { service, field, key: key.to_owned(), value: value.to_owned() });
        Some(id)
    }

    fn attr_terms(&mut self, service: u16, attrs: &[KeyValue], out: &mut Vec<u32>) {
        let mut buf = String::new();
        for kv in attrs {
            if let Some(text) = text_of(&kv.value, &mut buf) {
                out.extend(self.term(service, Field::Attr, &kv.key, text));
            }
        }
    }

    /// A service's index; past 65 535 services in one source, the rest share one entry.
    fn service_id(&mut self, name: &str) -> u16 {
        let full = self.services.list.len() >= usize::from(u16::MAX);
        let name = if full && !self.services.ids.contains_key(name) { OVERFLOW_SERVICE } else { name };
        self.services.id(name).min(u32::from(u16::MAX)) as u16
    }

    fn key_unindexed(&self, service: u16, key: &str) -> bool {
        self.term_ids.get(&(service, Field::Attr)).and_then(|k| k.get(key)).is_some_and(|kt| kt.unindexed)
    }

    /// Indexes a batch received at `received_unix_nano`.
    pub fn add_batch(&mut self, batch: &SpanBatch, received_unix_nano: u64) {
        for rs in &batch.resource_spans {
            let service = self.service_id(rs.resource.service_name());
            let mut shared = Vec::new();
            self.attr_terms(service, &rs.resource.attributes, &mut shared);
            shared.extend(self.term(service, Field::Service, "", ""));
            for ss in &rs.scope_spans {
                let mut scope_terms = shared.clone();
                self.attr_terms(service, &ss.scope.attributes, &mut scope_terms);
                for span in &ss.spans {
                    self.add_span(service, &scope_terms, span, received_unix_nano);
                }
            }
        }
    }

    /// Indexes spans read back from a block; `received` gives each trace's receive time.
    pub fn add_stored(&mut self, spans: &[strand_core::StoredSpan], received: impl Fn(&TraceId) -> u64) {
        let mut last: Option<(*const Resource, *const Scope, Vec<u32>, u16)> = None;
        for s in spans {
            let key = (std::sync::Arc::as_ptr(&s.resource), std::sync::Arc::as_ptr(&s.scope));
            let fresh = !matches!(&last, Some((r, sc, _, _)) if (*r, *sc) == key);
            if fresh {
                let service = self.service_id(s.resource.service_name());
                let mut shared = Vec::new();
                self.attr_terms(service, &s.resource.attributes, &mut shared);
                self.attr_terms(service, &s.scope.attributes, &mut shared);
                shared.extend(self.term(service, Field::Service, "", ""));
                last = Some((key.0, key.1, shared, service));
            }
            let Some((_, _, shared, service)) = last.take() else { continue };
            self.add_span(service, &shared, &s.span, received(&s.span.trace_id));
            last = Some((key.0, key.1, shared, service));
        }
    }

    fn add_span(&mut self, service: u16, shared: &[u32], span: &Span, received: u64) {
        let span_id = span_id_u64(span.span_id.0);
        {
            let acc = self.traces.entry(span.trace_id).or_insert_with(|| TraceAcc {
                part: TracePart::new(span.trace_id.0),
                terms: Vec::new(),
                spans: Vec::new(),
                seen: None,
            });
            if !acc.is_new(span_id) {
                return; // the same span again (a retry)
            }
            let error = span.status.code == StatusCode::Error;
            acc.spans.push(SpanLite {
                span_id,
                parent: span.parent_span_id.map(|p| span_id_u64(p.0)),
                service,
                error,
                minute: (span.start_time_unix_nano / 60_000_000_000) as u32,
            });
        }
        let error = span.status.code == StatusCode::Error;
        let end = span.end_time_unix_nano.max(span.start_time_unix_nano);
        let duration = end - span.start_time_unix_nano;
        self.min_start = self.min_start.min(span.start_time_unix_nano);
        self.max_end = self.max_end.max(end);
        let name = self.names.id(&span.name);
        let kind = KIND_TEXT.get(span.kind as usize).copied().unwrap_or("0");
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend_from_slice(shared);
        ids.extend(self.term(service, Field::Name, "", &span.name));
        ids.extend(self.term(service, Field::Kind, "", kind));
        ids.extend(self.term(service, Field::NameKind, &span.name, kind));
        if error {
            ids.extend(self.term(service, Field::Error, "", ""));
        }
        self.attr_terms(service, &span.attributes, &mut ids);
        for e in &span.events {
            self.attr_terms(service, &e.attributes, &mut ids);
        }
        for l in &span.links {
            self.attr_terms(service, &l.attributes, &mut ids);
        }
        let Some(acc) = self.traces.get_mut(&span.trace_id) else { return };
        for &id in &ids {
            if let Err(pos) = acc.terms.binary_search(&id) {
                acc.terms.insert(pos, id);
            }
        }
        self.scratch = ids;
        let p = &mut acc.part;
        p.start = p.start.min(span.start_time_unix_nano);
        p.end = p.end.max(end);
        p.min_received = p.min_received.min(received);
        p.span_count += 1;
        p.error_count += u32::from(error);
        match p.services.iter_mut().find(|s| s.service == service) {
            Some(s) => {
                s.spans += 1;
                s.errors += u32::from(error);
                s.min_duration = s.min_duration.min(duration);
                s.max_duration = s.max_duration.max(duration);
            }
            None => p.services.push(ServicePart {
                service,
                spans: 1,
                errors: u32::from(error),
                min_duration: duration,
                max_duration: duration,
            }),
        }
        let root = RootPart {
            is_root: span.parent_span_id.is_none(),
            start: span.start_time_unix_nano,
            service,
            name,
        };
        if p.root.as_ref().is_none_or(|r| root.better_than(r)) {
            p.root = Some(root);
        }
    }

    /// The finished, sorted index.
    pub fn finish(&self) -> SearchIndex {
        let mut ids: Vec<&TraceId> = self.traces.keys().collect();
        ids.sort_unstable();
        let mut postings: Vec<Vec<u32>> = vec![Vec::new(); self.terms.len()];
        let mut traces = Vec::with_capacity(ids.len());
        let mut edges: HashMap<(u32, u16, u16), (u32, u32)> = HashMap::new();
        for (ord, id) in ids.into_iter().enumerate() {
            let acc = &self.traces[id];
            for &t in &acc.terms {
                postings[t as usize].push(ord as u32);
            }
            trace_edges(&acc.spans, &mut edges);
            traces.push(acc.part.clone());
        }
        let mut terms: Vec<Postings> = self
            .terms
            .iter()
            .zip(postings)
            .filter(|(t, _)| !(t.field == Field::Attr && self.key_unindexed(t.service, &t.key)))
            .map(|(t, p)| Postings { term: t.clone(), traces: p })
            .collect();
        terms.sort_unstable_by(|a, b| a.term.cmp(&b.term));
        let mut unindexed: Vec<(u16, String)> = self
            .term_ids
            .iter()
            .filter(|((_, field), _)| *field == Field::Attr)
            .flat_map(|((svc, _), keys)| {
                keys.iter().filter(|(_, kt)| kt.unindexed).map(|(k, _)| (*svc, k.clone()))
            })
            .collect();
        unindexed.sort_unstable();
        let edges = edge_list(edges, 0, u32::MAX);
        let mut idx = SearchIndex {
            version: INDEX_VERSION,
            services: self.services.list.clone(),
            names: self.names.list.clone(),
            traces,
            terms,
            unindexed,
            edges,
            by_start: Vec::new(),
        };
        idx.order_by_start();
        idx
    }
}

/// Edge counts of the minutes in `[from, to]`, sorted by minute, parent, child.
fn edge_list(counts: HashMap<(u32, u16, u16), (u32, u32)>, from: u32, to: u32) -> Vec<EdgeCount> {
    let mut edges: Vec<EdgeCount> = counts
        .into_iter()
        .filter(|((m, _, _), _)| (from..=to).contains(m))
        .map(|((minute, parent, child), (calls, errors))| EdgeCount { minute, parent, child, calls, errors })
        .collect();
    edges.sort_unstable_by_key(|e| (e.minute, e.parent, e.child));
    edges
}

/// Counts parent → child service edges of one trace's spans.
fn trace_edges(spans: &[SpanLite], edges: &mut HashMap<(u32, u16, u16), (u32, u32)>) {
    let mut by_id: Vec<(u64, u16)> = spans.iter().map(|s| (s.span_id, s.service)).collect();
    by_id.sort_unstable();
    for s in spans {
        let Some(parent) = s.parent else { continue };
        let Ok(p) = by_id.binary_search_by_key(&parent, |x| x.0) else { continue };
        let parent_service = by_id[p].1;
        if parent_service != s.service {
            let e = edges.entry((s.minute, parent_service, s.service)).or_default();
            e.0 += 1;
            e.1 += u32::from(s.error);
        }
    }
}

impl SearchIndex {
    /// Encodes for `index.bin`: postings delta-encoded, then postcard.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut delta = self.clone();
        for p in &mut delta.terms {
            let mut prev = 0;
            for t in &mut p.traces {
                let v = *t;
                *t = v - prev;
                prev = v;
            }
        }
        let raw = postcard::to_allocvec(&delta).map_err(|e| e.to_string())?;
        zstd::bulk::compress(&raw, 3).map_err(|e| e.to_string())
    }

    /// Decodes `index.bin`, checking that it is consistent.
    pub fn decode(data: &[u8]) -> Result<Self, String> {
        let raw = zstd::stream::decode_all(data).map_err(|e| format!("index.bin: {e}"))?;
        let mut idx: SearchIndex = postcard::from_bytes(&raw).map_err(|e| format!("index.bin: {e}"))?;
        if idx.version != INDEX_VERSION {
            return Err(format!("index.bin: unsupported version {}", idx.version));
        }
        let n = idx.traces.len() as u64;
        for p in &mut idx.terms {
            let mut acc = 0u64;
            for t in &mut p.traces {
                acc += u64::from(*t);
                if acc >= n {
                    return Err("index.bin: posting out of range".into());
                }
                *t = acc as u32;
            }
        }
        let services = idx.services.len();
        let names = idx.names.len();
        let bad_part = idx.traces.iter().any(|t| {
            t.services.iter().any(|s| usize::from(s.service) >= services)
                || t.root
                    .as_ref()
                    .is_some_and(|r| usize::from(r.service) >= services || r.name as usize >= names)
        });
        if bad_part
            || idx.terms.iter().any(|p| usize::from(p.term.service) >= services)
            || idx.edges.iter().any(|e| usize::from(e.parent.max(e.child)) >= services)
            || idx.traces.windows(2).any(|w| w[0].id >= w[1].id)
        {
            return Err("index.bin: inconsistent".into());
        }
        idx.order_by_start();
        Ok(idx)
    }

    fn order_by_start(&mut self) {
        let mut order: Vec<u32> = (0..self.traces.len() as u32).collect();
        order.sort_unstable_by_key(|&o| {
            let t = &self.traces[o as usize];
            (std::cmp::Reverse(t.start), t.id)
        });
        self.by_start = order;
    }

    /// The part of a trace, if this source has spans of it.
    pub fn part(&self, id: &TraceId) -> Option<&TracePart> {
        self.traces.binary_search_by(|t| t.id.cmp(&id.0)).ok().map(|i| &self.traces[i])
    }

    fn postings(&self, service: u16, field: Field, key: &str, value: &str) -> Option<&[u32]> {
        self.terms
            .binary_search_by(|p| {
                let t = &p.term;
                (t.service, t.field, t.key.as_str(), t.value.as_str()).cmp(&(service, field, key, value))
            })
            .ok()
            .map(|i| self.terms[i].traces.as_slice())
    }

    fn terms_of(&self, service: u16, field: Field) -> &[Postings] {
        let lo = self.terms.partition_point(|p| (p.term.service, p.term.field) < (service, field));
        let hi = self.terms.partition_point(|p| (p.term.service, p.term.field) <= (service, field));
        &self.terms[lo..hi]
    }
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

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn union(lists: &[&[u32]]) -> Vec<u32> {
    let mut out: Vec<u32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn parse_kind(v: &str) -> SpanKind {
    SpanKind::from_i32(v.parse().unwrap_or(0))
}

impl IndexView for SearchIndex {
    fn service_names(&self) -> &[String] {
        &self.services
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map(String::as_str).unwrap_or("")
    }

    fn is_unindexed(&self, service: u16, key: &str) -> bool {
        self.unindexed.binary_search_by(|(s, k)| (*s, k.as_str()).cmp(&(service, key))).is_ok()
    }

    fn candidates<'q>(
        &self,
        services: &[u16],
        groups: &dyn Fn(u16) -> Vec<Vec<TermRef<'q>>>,
    ) -> Candidates<'_> {
        let mut all: Vec<Vec<u32>> = Vec::new();
        for &svc in services {
            let mut acc: Option<Vec<u32>> = None;
            for group in groups(svc) {
                let lists: Vec<&[u32]> =
                    group.iter().filter_map(|t| self.postings(svc, t.field, t.key, t.value)).collect();
                let hits = if lists.len() == 1 { lists[0].to_vec() } else { union(&lists) };
                acc = Some(match acc {
                    None => hits,
                    Some(prev) => intersect(&prev, &hits),
                });
                if acc.as_ref().is_some_and(Vec::is_empty) {
                    break;
                }
            }
            if let Some(hits) = acc {
                all.push(hits);
            }
        }
        let ords = if all.len() == 1 {
            all.pop().unwrap_or_default()
        } else {
            union(&all.iter().map(Vec::as_slice).collect::<Vec<_>>())
        };
        Candidates::Ords { ords, parts: &self.traces, by_start: &self.by_start }
    }

    fn part_of(&self, id: &TraceId) -> Option<&TracePart> {
        self.part(id)
    }

    fn operations(&self, service: u16) -> Vec<Operation> {
        self.terms_of(service, Field::NameKind)
            .iter()
            .map(|p| Operation { name: p.term.key.clone(), span_kind: parse_kind(&p.term.value) })
            .collect()
    }

    fn attributes(&self, service: u16) -> Vec<(String, String)> {
        self.terms_of(service, Field::Attr)
            .iter()
            .map(|p| (p.term.key.clone(), p.term.value.clone()))
            .collect()
    }

    fn edges(&self, from_minute: u32, to_minute: u32) -> Vec<EdgeCount> {
        self.edges.iter().filter(|e| e.minute >= from_minute && e.minute <= to_minute).copied().collect()
    }

    fn time_range(&self) -> (u64, u64) {
        let start = self.traces.iter().map(|t| t.start).min().unwrap_or(u64::MAX);
        let end = self.traces.iter().map(|t| t.end).max().unwrap_or(0);
        (start, end)
    }
}

impl IndexView for IndexBuilder {
    fn service_names(&self) -> &[String] {
        &self.services.list
    }

    fn name(&self, id: u32) -> &str {
        self.names.list.get(id as usize).map(String::as_str).unwrap_or("")
    }

    fn is_unindexed(&self, service: u16, key: &str) -> bool {
        self.key_unindexed(service, key)
    }

    fn candidates<'q>(
        &self,
        services: &[u16],
        groups: &dyn Fn(u16) -> Vec<Vec<TermRef<'q>>>,
    ) -> Candidates<'_> {
        let lookup = |svc: u16, t: &TermRef| {
            self.term_ids
                .get(&(svc, t.field))
                .and_then(|k| k.get(t.key))
                .filter(|kt| !kt.unindexed)
                .and_then(|kt| kt.values.get(t.value))
                .copied()
        };
        let resolved: Vec<Vec<Vec<u32>>> = services
            .iter()
            .map(|&svc| {
                groups(svc).iter().map(|g| g.iter().filter_map(|t| lookup(svc, t)).collect()).collect()
            })
            .collect();
        // A service with a group none of whose terms exists cannot match.
        let live: Vec<&Vec<Vec<u32>>> =
            resolved.iter().filter(|gs| gs.iter().all(|g| !g.is_empty())).collect();
        if live.is_empty() {
            return Candidates::Parts(Vec::new());
        }
        Candidates::Parts(
            self.traces
                .values()
                .filter(|acc| {
                    live.iter()
                        .any(|gs| gs.iter().all(|g| g.iter().any(|id| acc.terms.binary_search(id).is_ok())))
                })
                .map(|acc| &acc.part)
                .collect(),
        )
    }

    fn part_of(&self, id: &TraceId) -> Option<&TracePart> {
        self.traces.get(id).map(|a| &a.part)
    }

    fn operations(&self, service: u16) -> Vec<Operation> {
        self.term_ids
            .get(&(service, Field::NameKind))
            .map(|keys| {
                keys.iter()
                    .flat_map(|(name, kinds)| {
                        kinds
                            .values
                            .keys()
                            .map(|k| Operation { name: name.clone(), span_kind: parse_kind(k) })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn attributes(&self, service: u16) -> Vec<(String, String)> {
        self.term_ids
            .get(&(service, Field::Attr))
            .map(|keys| {
                keys.iter()
                    .filter(|(_, kt)| !kt.unindexed)
                    .flat_map(|(k, kt)| kt.values.keys().map(|v| (k.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn edges(&self, from_minute: u32, to_minute: u32) -> Vec<EdgeCount> {
        let mut edges = HashMap::new();
        for acc in self.traces.values() {
            trace_edges(&acc.spans, &mut edges);
        }
        edge_list(edges, from_minute, to_minute)
    }

    fn time_range(&self) -> (u64, u64) {
        (self.min_start, self.max_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use strand_core::{SpanId, Status};

    /// A 10 ns server span of trace `[trace; 16]` (ids as in [`testdata::span`]).
    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start: u64, attrs: Vec<KeyValue>) -> Span {
        let mut s = testdata::span(TraceId([trace; 16]), id.into(), parent.map(u64::from), name, start, 10);
        s.attributes = attrs;
        s
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
        let idx = SearchIndex::decode(&b.finish().encode().expect("encodes")).expect("decodes");
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
        assert!(SearchIndex::decode(&idx.encode().expect("encodes")).is_err());
        assert!(SearchIndex::decode(b"garbage").is_err());
    }
}
