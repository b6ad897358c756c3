//! Trace search over a snapshot of the store's sources (head, frozen heads, blocks).
//!
//! Each source's index yields candidate traces with an upper bound of their position in
//! the result order (a source only knows part of a trace, and the whole trace can only
//! start earlier). Candidates are taken best bound first; each is resolved into the whole
//! trace's summary (its parts in every source merged) and, when the index alone cannot
//! prove that one span meets every condition, checked against the trace's spans. A
//! resolved trace is emitted once no pending candidate could still come before it, so the
//! order is exact (start descending, trace id ascending) and pagination is keyset-based.

use std::cell::OnceCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use strand_core::search::SpanConditions;
use strand_core::{
    AttrScope, Cursor, DependencyEdge, Operation, SearchPage, ServiceSpans, StatusFilter, StoreError,
    TimeRange, Trace, TraceId, TraceQuery, TraceSummary,
};

use crate::block::Block;
use crate::index::{Candidates, Field, IndexView, RootPart, SearchIndex, TermRef, TracePart};

/// Most candidate traces a search reads spans of before giving up with a warning.
pub const MAX_VERIFIED_TRACES: usize = 20_000;

/// One source of a snapshot: a block, whose index is loaded (through the block cache) the
/// first time this snapshot needs it, or a head's index.
pub(crate) enum Source<'a> {
    /// A block.
    Block {
        /// The block.
        block: Arc<Block>,
        /// Its index, once loaded.
        index: OnceCell<Arc<SearchIndex>>,
    },
    /// A head (live or frozen).
    Head(&'a dyn IndexView),
}

impl Source<'_> {
    /// A block source.
    pub fn block(block: Arc<Block>) -> Self {
        Source::Block { block, index: OnceCell::new() }
    }

    fn view(&self) -> Result<&dyn IndexView, StoreError> {
        match self {
            Source::Head(v) => Ok(*v),
            Source::Block { block, index } => {
                if let Some(i) = index.get() {
                    return Ok(&**i);
                }
                let loaded = block.search_index()?;
                Ok(&**index.get_or_init(|| loaded))
            }
        }
    }

    /// Earliest span start and latest span end, known without loading a block's index.
    fn time_range(&self) -> (u64, u64) {
        match self {
            Source::Head(v) => v.time_range(),
            Source::Block { block, .. } => block.time_range(),
        }
    }

    /// Whether the source may hold a part of trace `id` (`false`: certainly not).
    fn may_hold(&self, id: &TraceId) -> bool {
        match self {
            Source::Head(_) => true,
            Source::Block { block, .. } => block.may_contain(id),
        }
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        let (s, e) = self.time_range();
        s <= e && s <= end && e >= start
    }
}

/// The sources of a snapshot and what it may count of them.
pub(crate) struct Sources<'a> {
    /// Blocks, then heads.
    pub sources: Vec<Source<'a>>,
    /// Receive-time watermark of the snapshot.
    pub as_of: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rank(u64, Reverse<TraceId>);

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    /// Upper bound of the trace's rank.
    bound: Rank,
    verify: bool,
}

struct Ready {
    rank: Rank,
    summary: TraceSummary,
    /// The trace has parts in more than one source.
    parts: usize,
}

impl PartialEq for Ready {
    fn eq(&self, o: &Self) -> bool {
        self.rank == o.rank
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ready {
    fn cmp(&self, o: &Self) -> Ordering {
        self.rank.cmp(&o.rank)
    }
}

fn sorted<'v>(mut v: Vec<Candidate>) -> Box<dyn Iterator<Item = Candidate> + 'v> {
    v.sort_unstable_by(|a, b| b.cmp(a));
    Box::new(v.into_iter())
}

/// Candidates of every source, merged best bound first.
struct Pending<'v> {
    sources: Vec<Box<dyn Iterator<Item = Candidate> + 'v>>,
    heads: BinaryHeap<(Candidate, usize)>,
}

impl<'v> Pending<'v> {
    fn new(mut sources: Vec<Box<dyn Iterator<Item = Candidate> + 'v>>) -> Self {
        let heads = sources.iter_mut().enumerate().filter_map(|(i, s)| s.next().map(|c| (c, i))).collect();
        Self { sources, heads }
    }

    fn peek(&self) -> Option<&Candidate> {
        self.heads.peek().map(|(c, _)| c)
    }

    fn pop(&mut self) -> Option<Candidate> {
        let (c, i) = self.heads.pop()?;
        if let Some(next) = self.sources.get_mut(i).and_then(Iterator::next) {
            self.heads.push((next, i));
        }
        Some(c)
    }
}

/// A query prepared once: attribute values expanded to their comparable forms.
struct Prepared<'q> {
    q: &'q TraceQuery,
    conditions: SpanConditions<'q>,
    kind: String,
}

impl<'q> Prepared<'q> {
    fn new(q: &'q TraceQuery) -> Self {
        Self {
            q,
            conditions: SpanConditions::new(q),
            kind: q.kind.map(|k| (k as u8).to_string()).unwrap_or_default(),
        }
    }

    /// Span conditions besides the service.
    fn span_conditions(&self) -> usize {
        let q = self.q;
        usize::from(q.operation.is_some())
            + usize::from(q.kind.is_some())
            + usize::from(q.status.is_some())
            + q.attributes.len()
            + usize::from(q.min_span_duration_nano.is_some() || q.max_span_duration_nano.is_some())
    }

    fn groups(&self, view: &dyn IndexView, svc: u16) -> Vec<Vec<TermRef<'_>>> {
        let q = self.q;
        let one = |field, key, value| vec![TermRef { field, key, value }];
        let mut groups = vec![one(Field::Service, "", "")];
        if let Some(op) = &q.operation {
            groups.push(one(Field::Name, "", op));
        }
        if q.kind.is_some() {
            groups.push(one(Field::Kind, "", &self.kind));
        }
        if q.status == Some(StatusFilter::Error) {
            groups.push(one(Field::Error, "", ""));
        }
        for (a, forms) in q.attributes.iter().zip(self.conditions.forms()) {
            if !view.is_unindexed(svc, &a.key) {
                groups.push(
                    forms.iter().map(|f| TermRef { field: Field::Attr, key: &a.key, value: f }).collect(),
                );
            }
        }
        groups
    }

    /// Whether the index proves a candidate of service `svc` matches (given its spans all
    /// lie in the time range).
    fn index_is_exact(&self, view: &dyn IndexView, svc: u16) -> bool {
        let q = self.q;
        self.span_conditions() <= 1
            && q.status != Some(StatusFilter::Ok)
                        // One duration bound is proven by the per-service duration range; both need a
            // single span within both.
            && !(q.min_span_duration_nano.is_some() && q.max_span_duration_nano.is_some())
            && q.attributes.iter().all(|a| a.scope == AttrScope::Any && !view.is_unindexed(svc, &a.key))
    }

    /// A source's candidates, best bound first: sparse sets are filtered and sorted, dense
    /// ones walked lazily in the index's newest-first order (so a page of a common query
    /// touches a few hundred traces per block, not all of them).
    fn candidates<'v>(
        &'v self,
        view: &'v dyn IndexView,
        as_of: u64,
    ) -> Box<dyn Iterator<Item = Candidate> + 'v> {
        let q = self.q;
        let services: Vec<u16> = match &q.service {
            Some(s) => match view.service_names().iter().position(|n| n == s) {
                Some(i) => vec![i as u16],
                None => return Box::new(std::iter::empty()),
            },
            None => (0..view.service_names().len() as u16).collect(),
        };
        let exact = services.iter().all(|&s| self.index_is_exact(view, s));
        let found = view.candidates(&services, &|svc| self.groups(view, svc));
        let check = move |part: &TracePart| self.check_part(part, &services, exact, as_of);
        match found {
            Candidates::Ords { ords, parts, by_start } if ords.len() * 16 >= parts.len() => {
                let mut member = vec![0u64; parts.len().div_ceil(64)];
                for &o in &ords {
                    member[o as usize / 64] |= 1 << (o % 64);
                }
                Box::new(by_start.iter().filter_map(move |&o| {
                    let hit = member.get(o as usize / 64).is_some_and(|w| w & (1 << (o % 64)) != 0);
                    if hit { parts.get(o as usize).and_then(&check) } else { None }
                }))
            }
            Candidates::Ords { ords, parts, .. } => {
                sorted(ords.iter().filter_map(|&o| parts.get(o as usize)).filter_map(&check).collect())
            }
            Candidates::Parts(list) => sorted(list.into_iter().filter_map(&check).collect()),
        }
    }

    /// Whether a candidate's part can still match, and whether its spans must be read.
    fn check_part(&self, part: &TracePart, services: &[u16], exact: bool, as_of: u64) -> Option<Candidate> {
        let q = self.q;
        if part.min_received > as_of || part.start > q.end_unix_nano || part.end < q.start_unix_nano {
            return None;
        }
        let (min_d, max_d) = (q.min_span_duration_nano, q.max_span_duration_nano);
        if (min_d.is_some() || max_d.is_some())
            && !part.services.iter().any(|sp| {
                services.contains(&sp.service)
                    && min_d.is_none_or(|m| sp.max_duration >= m)
                    && max_d.is_none_or(|m| sp.min_duration <= m)
            })
        {
            return None;
        }
        let within = part.start >= q.start_unix_nano && part.end <= q.end_unix_nano;
        Some(Candidate { bound: Rank(part.start, Reverse(TraceId(part.id))), verify: !exact || !within })
    }
}

impl Sources<'_> {
    /// The whole trace's summary from its parts in every source, and how many sources
    /// hold a part of it.
    fn summary(&self, id: &TraceId) -> Result<Option<(TraceSummary, usize)>, StoreError> {
        let mut out = TraceSummary {
            trace_id: *id,
            root_service: String::new(),
            root_name: String::new(),
            start_unix_nano: u64::MAX,
            duration_nano: 0,
            span_count: 0,
            error_count: 0,
            services: Vec::new(),
        };
        let mut end = 0;
        let mut root: Option<(RootPart, usize)> = None;
        let mut parts = 0;
        for (vi, source) in self.sources.iter().enumerate() {
            if !source.may_hold(id) {
                continue;
            }
            let view = source.view()?;
            let Some(p) = view.part_of(id) else { continue };
            if p.min_received > self.as_of {
                continue;
            }
            parts += 1;
            out.start_unix_nano = out.start_unix_nano.min(p.start);
            end = end.max(p.end);
            out.span_count += u64::from(p.span_count);
            out.error_count += u64::from(p.error_count);
            for s in &p.services {
                let name = &view.service_names()[usize::from(s.service)];
                match out.services.iter_mut().find(|x| &x.name == name) {
                    Some(x) => {
                        x.span_count += u64::from(s.spans);
                        x.error_count += u64::from(s.errors);
                    }
                    None => out.services.push(ServiceSpans {
                        name: name.clone(),
                        span_count: u64::from(s.spans),
                        error_count: u64::from(s.errors),
                    }),
                }
            }
            if let Some(r) = &p.root
                && root.as_ref().is_none_or(|(best, _)| r.better_than(best))
            {
                root = Some((r.clone(), vi));
            }
        }
        if parts == 0 {
            return Ok(None);
        }
        if let Some((r, vi)) = root {
            let view = self.sources[vi].view()?;
            out.root_service = view.service_names()[usize::from(r.service)].clone();
            out.root_name = view.name(r.name).to_owned();
        }
        out.duration_nano = end.saturating_sub(out.start_unix_nano);
        out.services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some((out, parts)))
    }

    /// Runs a search; `read` fetches a whole trace for span-level checks.
    pub fn search(
        &self,
        q: &TraceQuery,
        read: &dyn Fn(TraceId) -> Result<Option<Trace>, StoreError>,
    ) -> Result<SearchPage, StoreError> {
        let prepared = Prepared::new(q);
        let mut found = Vec::new();
        for source in self.sources.iter().filter(|s| s.overlaps(q.start_unix_nano, q.end_unix_nano)) {
            found.push(prepared.candidates(source.view()?, self.as_of));
        }
        let mut pending = Pending::new(found);
        let mut ready: BinaryHeap<Ready> = BinaryHeap::new();
        let mut resolved: HashSet<TraceId> = HashSet::new();
        let after = q.cursor.map(|c| Rank(c.start_unix_nano, Reverse(c.trace_id)));
        let mut page = SearchPage::default();
        let mut verified = 0;
        let want = q.limit.saturating_add(1);
        let mut out: Vec<Ready> = Vec::new();
        loop {
            while let Some(top) = ready.peek() {
                if out.len() >= want || pending.peek().is_some_and(|c| c.bound >= top.rank) {
                    break;
                }
                out.extend(ready.pop());
            }
            if out.len() >= want {
                break;
            }
            let Some(c) = pending.pop() else {
                while out.len() < want {
                    match ready.pop() {
                        Some(r) => out.push(r),
                        None => break,
                    }
                }
                break;
            };
            let id = c.bound.1.0;
            if !resolved.insert(id) {
                continue;
            }
            let Some((summary, parts)) = self.summary(&id)? else { continue };
            let rank = Rank(summary.start_unix_nano, Reverse(id));
            if after.is_some_and(|a| rank >= a)
                || q.min_trace_duration_nano.is_some_and(|m| summary.duration_nano < m)
                || q.max_trace_duration_nano.is_some_and(|m| summary.duration_nano > m)
            {
                continue;
            }
            if c.verify {
                if verified >= MAX_VERIFIED_TRACES {
                    page.warnings.push(format!(
                        "stopped after checking the spans of {MAX_VERIFIED_TRACES} candidate traces; \
                         narrow the query (time range, service, operation) for complete results"
                    ));
                    break;
                }
                verified += 1;
                let Some(trace) = read(id)? else { continue };
                if !trace.spans.iter().any(|s| prepared.conditions.matches(s)) {
                    continue;
                }
            }
            ready.push(Ready { rank, summary, parts });
        }
        if out.len() > q.limit {
            out.truncate(q.limit);
            page.next_cursor = out.last().map(|r| Cursor {
                as_of_unix_nano: self.as_of,
                start_unix_nano: r.rank.0,
                trace_id: r.rank.1.0,
            });
        }
        // A trace in several sources may hold the same span twice (a client retry after a
        // head cut, before compaction merges the copies), which the parts' counts would
        // count twice: the counts of such a trace on the page come from its spans, each
        // once. Start, duration and root are the same either way, so ranks and cursors are.
        for r in out.iter_mut().filter(|r| r.parts > 1) {
            if let Some(trace) = read(r.summary.trace_id)? {
                let fresh = TraceSummary::of(r.summary.trace_id, &trace.spans);
                r.summary.span_count = fresh.span_count;
                r.summary.error_count = fresh.error_count;
                r.summary.services = fresh.services;
            }
        }
        page.traces = out.into_iter().map(|r| r.summary).collect();
        Ok(page)
    }

    /// The indexes of the sources with spans in the range (blocks' loaded as needed).
    fn overlapping(&self, range: TimeRange) -> Result<Vec<&dyn IndexView>, StoreError> {
        self.sources
            .iter()
            .filter(|s| s.overlaps(range.start_unix_nano, range.end_unix_nano))
            .map(Source::view)
            .collect()
    }

    /// Services with spans in sources overlapping the range, sorted.
    pub fn services(&self, range: TimeRange) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> =
            self.overlapping(range)?.into_iter().flat_map(|v| v.service_names().iter().cloned()).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn service_id(view: &dyn IndexView, service: &str) -> Option<u16> {
        view.service_names().iter().position(|n| n == service).map(|i| i as u16)
    }

    /// Operations of a service, sorted by name then kind.
    pub fn operations(&self, service: &str, range: TimeRange) -> Result<Vec<Operation>, StoreError> {
        let mut out: Vec<Operation> = self
            .overlapping(range)?
            .into_iter()
            .filter_map(|v| Self::service_id(v, service).map(|id| v.operations(id)))
            .flatten()
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Indexed `(key, value)` pairs of a service (or of all services), sorted.
    pub fn attributes(
        &self,
        service: Option<&str>,
        range: TimeRange,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for v in self.overlapping(range)? {
            let ids: Vec<u16> = match service {
                Some(s) => Self::service_id(v, s).into_iter().collect(),
                None => (0..v.service_names().len() as u16).collect(),
            };
            for id in ids {
                out.extend(v.attributes(id));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Service edges whose child spans started in the range, by (parent, child).
    pub fn dependencies(&self, range: TimeRange) -> Result<Vec<DependencyEdge>, StoreError> {
        let minute = |ns: u64| (ns / 60_000_000_000).min(u64::from(u32::MAX)) as u32;
        let (from, to) = (minute(range.start_unix_nano), minute(range.end_unix_nano));
        let mut edges: HashMap<(String, String), (u64, u64)> = HashMap::new();
        // Edges across blocks, once each however many blocks hold them. A block may hold
        // one whose child started outside its own times (the child is in another block),
        // by up to the window a cut looks in.
        let mut across: HashMap<(TraceId, u64), (String, String, bool)> = HashMap::new();
        let window = crate::index::LINK_WINDOW_NANOS;
        let widened = TimeRange {
            start_unix_nano: range.start_unix_nano.saturating_sub(window),
            end_unix_nano: range.end_unix_nano.saturating_add(window),
        };
        for v in self.overlapping(widened)? {
            let names = v.service_names();
            let name = |i: u16| names[usize::from(i)].clone();
            for e in v.edges(from, to) {
                let entry = edges.entry((name(e.parent), name(e.child))).or_default();
                entry.0 += u64::from(e.calls);
                entry.1 += u64::from(e.errors);
            }
            for l in v.cross_edges(from, to) {
                across.entry((l.trace_id, l.child_span)).or_insert((l.parent, l.child, l.error));
            }
        }
        for (parent, child, error) in across.into_values() {
            let entry = edges.entry((parent, child)).or_default();
            entry.0 += 1;
            entry.1 += u64::from(error);
        }
        Ok(DependencyEdge::from_counts(edges))
    }
}
