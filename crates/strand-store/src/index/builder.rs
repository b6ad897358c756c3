//! [`IndexBuilder`]: the index of a source being filled (the head), span by span.

use super::*;

#[derive(Debug)]
pub(super) struct TraceAcc {
    part: TracePart,
    /// Term ids, sorted, no duplicates.
    terms: Vec<u32>,
    /// Spans in arrival order (duplicates are skipped).
    pub(super) spans: Vec<SpanLite>,
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
pub(super) const OVERFLOW_SERVICE: &str = "(more than 65535 services)";

/// Interns strings into indexes.
#[derive(Debug, Default)]
pub(super) struct Dict {
    pub(super) list: Vec<String>,
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
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The values of one key of one (service, field), and whether the key gave up on
/// indexing them.
#[derive(Debug, Default)]
pub(super) struct KeyTerms {
    values: FastMap<String, u32>,
    unindexed: bool,
}

/// Span kinds as term values.
pub(super) const KIND_TEXT: [&str; 6] = ["0", "1", "2", "3", "4", "5"];

/// What a span name gives a span of one service and kind: the name's id and its name,
/// kind and name-with-kind terms. Found once per distinct (service, kind, name), not by
/// four lookups a span: those terms never stop being indexed (only attributes do).
#[derive(Debug, Clone, Copy)]
struct NameTerms {
    name: u32,
    terms: [Option<u32>; 3],
}

/// Builds an index span by span; also searchable while being built (the head's index).
#[derive(Debug)]
pub struct IndexBuilder {
    pub(super) services: Dict,
    names: Dict,
    term_ids: FastMap<(u16, Field), FastMap<String, KeyTerms>>,
    /// By service and kind, then by span name.
    name_terms: FastMap<(u16, u8), FastMap<String, NameTerms>>,
    terms: Vec<Term>,
    pub(super) traces: FastMap<TraceId, TraceAcc>,
    min_start: u64,
    max_end: u64,
    scratch: Vec<u32>,
}

pub(super) fn span_id_u64(b: [u8; 8]) -> u64 {
    u64::from_be_bytes(b)
}

/// Text of an attribute value, borrowed for strings.
/// Text of an attribute value (as [`strand_core::search::value_text`] writes it), borrowed for strings and
/// written into `buf` (reusing its allocation) for numbers and booleans.
pub(super) fn text_of<'a>(v: &'a AnyValue, buf: &'a mut String) -> Option<&'a str> {
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
            name_terms: FastMap::default(),
            terms: Vec::new(),
            traces: FastMap::default(),
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
                minute: super::edges::minute_of(span.start_time_unix_nano),
            });
        }
        let error = span.status.code == StatusCode::Error;
        let end = span.end_time_unix_nano.max(span.start_time_unix_nano);
        let duration = end - span.start_time_unix_nano;
        self.min_start = self.min_start.min(span.start_time_unix_nano);
        self.max_end = self.max_end.max(end);
        let named = self.name_terms(service, span);
        let name = named.name;
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend_from_slice(shared);
        ids.extend(named.terms.into_iter().flatten());
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

    /// The name id and name terms of `span` in `service`.
    fn name_terms(&mut self, service: u16, span: &Span) -> NameTerms {
        let kind_key = (service, span.kind as u8);
        if let Some(found) = self.name_terms.get(&kind_key).and_then(|m| m.get(span.name.as_str())) {
            return *found;
        }
        let kind = KIND_TEXT.get(span.kind as usize).copied().unwrap_or("0");
        let found = NameTerms {
            name: self.names.id(&span.name),
            terms: [
                self.term(service, Field::Name, "", &span.name),
                self.term(service, Field::Kind, "", kind),
                self.term(service, Field::NameKind, &span.name, kind),
            ],
        };
        self.name_terms.entry(kind_key).or_default().insert(span.name.clone(), found);
        found
    }

    /// The finished, sorted index.
    pub fn finish(&self) -> SearchIndex {
        self.finish_with(Vec::new(), &std::collections::HashSet::new())
    }

    /// The finished index, with edges to spans in other sources (see
    /// [`IndexBuilder::links_with`]). An edge there is counted once across sources by its
    /// (trace, child span), never among this source's own edges as well: a merge keeps the
    /// cross edges of its inputs, since a retried copy of a span may keep one in another
    /// block too. Nor are the edges of the child spans in `counted_elsewhere` (trace, span:
    /// retried copies another source counted with their parents, see
    /// [`IndexBuilder::counted_in`]).
    pub fn finish_with(
        &self,
        links: Vec<Link>,
        counted_elsewhere: &std::collections::HashSet<(TraceId, u64)>,
    ) -> SearchIndex {
        let cross: std::collections::HashSet<(TraceId, u64)> =
            links.iter().map(|l| (l.trace_id, l.child_span)).collect();
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
            let elsewhere = |span| {
                cross.contains(&(*id, span))
                    || (!counted_elsewhere.is_empty() && counted_elsewhere.contains(&(*id, span)))
            };
            trace_edges(&acc.spans, elsewhere, &mut edges);
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
            cross_edges: Vec::new(),
            cross_services: Vec::new(),
            by_start: Vec::new(),
        };
        idx.add_links(links);
        idx.order_by_start();
        idx
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
            trace_edges(&acc.spans, |_| false, &mut edges);
        }
        edge_list(edges, from_minute, to_minute)
    }

    fn cross_edges(&self, _from_minute: u32, _to_minute: u32) -> Vec<Link> {
        Vec::new()
    }

    fn time_range(&self) -> (u64, u64) {
        (self.min_start, self.max_end)
    }
}
