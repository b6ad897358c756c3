//! Dependency edges: parent → child service pairs of a trace's spans, counted per minute.

use super::builder::span_id_u64;
use super::*;

/// The part of a span the dependency computation needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct SpanLite {
    pub(super) span_id: u64,
    pub(super) parent: Option<u64>,
    pub(super) service: u16,
    pub(super) error: bool,
    pub(super) minute: u32,
}

/// Edge counts of the minutes in `[from, to]`, sorted by minute, parent, child.
pub(super) fn edge_list(counts: HashMap<(u32, u16, u16), (u32, u32)>, from: u32, to: u32) -> Vec<EdgeCount> {
    let mut edges: Vec<EdgeCount> = counts
        .into_iter()
        .filter(|((m, _, _), _)| (from..=to).contains(m))
        .map(|((minute, parent, child), (calls, errors))| EdgeCount { minute, parent, child, calls, errors })
        .collect();
    edges.sort_unstable_by_key(|e| (e.minute, e.parent, e.child));
    edges
}

/// Counts parent → child service edges of one trace's spans, but for the child spans
/// `counted_elsewhere` names (their edges are cross edges, counted once across sources).
pub(super) fn trace_edges(
    spans: &[SpanLite],
    counted_elsewhere: impl Fn(u64) -> bool,
    edges: &mut HashMap<(u32, u16, u16), (u32, u32)>,
) {
    let mut by_id: Vec<(u64, u16)> = spans.iter().map(|s| (s.span_id, s.service)).collect();
    by_id.sort_unstable();
    for s in spans {
        let Some(parent) = s.parent else { continue };
        if counted_elsewhere(s.span_id) {
            continue;
        }
        let Ok(p) = by_id.binary_search_by_key(&parent, |x| x.0) else { continue };
        let parent_service = by_id[p].1;
        if parent_service != s.service {
            let e = edges.entry((s.minute, parent_service, s.service)).or_default();
            e.0 += 1;
            e.1 += u32::from(s.error);
        }
    }
}

/// A dependency edge between a span of one source and a span of another: a parent and its
/// child cut into different blocks. The block cut later finds it (see
/// [`IndexBuilder::links_with`]) and keeps it in its index; compaction keeps it while the
/// two spans stay in different blocks. Counted once per (trace, child span), however many
/// sources hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossEdge {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The child span's id.
    pub child_span: u64,
    /// The parent span's id.
    pub parent_span: u64,
    /// Minute of the child span's start.
    pub minute: u32,
    /// Parent service, an index into [`SearchIndex::cross_services`].
    pub parent: u16,
    /// Child service, an index into [`SearchIndex::cross_services`].
    pub child: u16,
    /// Whether the child span had status ERROR.
    pub error: bool,
}

/// A [`CrossEdge`] with its services by name, before an index gives them numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The trace.
    pub trace_id: TraceId,
    /// The child span's id.
    pub child_span: u64,
    /// The parent span's id.
    pub parent_span: u64,
    /// Minute of the child span's start.
    pub minute: u32,
    /// Parent service.
    pub parent: String,
    /// Child service.
    pub child: String,
    /// Whether the child span had status ERROR.
    pub error: bool,
}

/// The minute an edge is counted in: its child span's start.
pub(super) fn minute_of(start_unix_nano: u64) -> u32 {
    (start_unix_nano / 60_000_000_000) as u32
}

impl IndexBuilder {
    /// The edges between this source's spans of trace `id` and `other`, the same trace's
    /// spans from another source, in both directions: a span here whose parent is there,
    /// and a span there whose parent is here. A span held on both sides (a retried copy)
    /// links nothing, and neither does one whose parent is on its own side too: those
    /// edges are counted where both are. Edges within one service are not dependencies and are left out, as
    /// within a source.
    pub fn links_with(&self, id: &TraceId, other: &[strand_core::StoredSpan]) -> Vec<Link> {
        let Some(acc) = self.traces.get(id) else { return Vec::new() };
        let here: HashMap<u64, &SpanLite> = acc.spans.iter().map(|s| (s.span_id, s)).collect();
        let there: HashMap<u64, &strand_core::StoredSpan> = other
            .iter()
            .map(|s| (span_id_u64(s.span.span_id.0), s))
            .filter(|(sid, _)| !here.contains_key(sid))
            .collect();
        let all_there: std::collections::HashSet<u64> =
            other.iter().map(|s| span_id_u64(s.span.span_id.0)).collect();
        let name = |service: u16| self.services.list.get(usize::from(service)).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for s in acc.spans.iter() {
            // A span held there too (a retried copy) was counted there with its parent.
            if all_there.contains(&s.span_id) {
                continue;
            }
            let Some(p) = s.parent.and_then(|p| there.get(&p)) else { continue };
            if p.resource.service_name() != name(s.service) {
                out.push(Link {
                    trace_id: *id,
                    child_span: s.span_id,
                    parent_span: span_id_u64(p.span.span_id.0),
                    minute: s.minute,
                    parent: p.resource.service_name().to_owned(),
                    child: name(s.service),
                    error: s.error,
                });
            }
        }
        // A span there whose parent is there too was counted there, even if here holds a
        // (retried) copy of the parent.
        for (&child_span, c) in &there {
            let Some(parent) = c.span.parent_span_id.map(|p| span_id_u64(p.0)) else { continue };
            if all_there.contains(&parent) {
                continue;
            }
            let Some(p) = here.get(&parent) else { continue };
            if c.resource.service_name() != name(p.service) {
                out.push(Link {
                    trace_id: *id,
                    child_span,
                    parent_span: p.span_id,
                    minute: minute_of(c.span.start_time_unix_nano),
                    parent: name(p.service),
                    child: c.resource.service_name().to_owned(),
                    error: c.span.status.code == StatusCode::Error,
                });
            }
        }
        out
    }

    /// This source's spans of trace `id` that `other` (the same trace's spans from other
    /// sources) holds too, with their parents: retried copies (a batch sent again after
    /// its first copy was cut into a block) whose edges were counted there, so they are
    /// not counted here again. A copy whose parent is not there was not counted there.
    pub fn counted_in(&self, id: &TraceId, other: &[strand_core::StoredSpan]) -> Vec<u64> {
        let Some(acc) = self.traces.get(id) else { return Vec::new() };
        let there: std::collections::HashSet<u64> =
            other.iter().map(|s| span_id_u64(s.span.span_id.0)).collect();
        acc.spans
            .iter()
            .filter(|s| there.contains(&s.span_id) && s.parent.is_some_and(|p| there.contains(&p)))
            .map(|s| s.span_id)
            .collect()
    }

    /// The ids of the traces indexed.
    pub fn trace_ids(&self) -> impl Iterator<Item = &TraceId> {
        self.traces.keys()
    }

    /// The traces, sorted, that have a span whose parent is not among the trace's spans
    /// here (a root lost, a parent sent earlier or later): only they can have an edge to
    /// another source, by a parent held there.
    pub fn open_trace_ids(&self) -> Vec<TraceId> {
        let mut ids: Vec<u64> = Vec::new();
        let mut open: Vec<TraceId> = self
            .traces
            .iter()
            .filter(|(_, acc)| {
                ids.clear();
                ids.extend(acc.spans.iter().map(|s| s.span_id));
                ids.sort_unstable();
                acc.spans.iter().any(|s| s.parent.is_some_and(|p| ids.binary_search(&p).is_err()))
            })
            .map(|(id, _)| *id)
            .collect();
        open.sort_unstable();
        open
    }
}

impl SearchIndex {
    /// Adds edges to spans in other sources, giving their services numbers in the cross
    /// edges' own service table (so the services listed for the block stay those with
    /// spans in it); one per (trace, child span).
    pub fn add_links(&mut self, links: impl IntoIterator<Item = Link>) {
        for l in links {
            let mut service = |name: &str| match self.cross_services.iter().position(|s| s == name) {
                Some(i) => Some(i as u16),
                None if self.cross_services.len() < usize::from(u16::MAX) => {
                    self.cross_services.push(name.to_owned());
                    Some((self.cross_services.len() - 1) as u16)
                }
                None => None,
            };
            // Past 65 535 services in one block's cross edges, the rest are not kept.
            let (Some(parent), Some(child)) = (service(&l.parent), service(&l.child)) else { continue };
            self.cross_edges.push(CrossEdge {
                trace_id: l.trace_id.0,
                child_span: l.child_span,
                parent_span: l.parent_span,
                minute: l.minute,
                parent,
                child,
                error: l.error,
            });
        }
        self.cross_edges.sort_unstable_by_key(|e| (e.trace_id, e.child_span));
        self.cross_edges.dedup_by_key(|e| (e.trace_id, e.child_span));
    }

    /// The cross edges with their services by name.
    pub fn links(&self) -> impl Iterator<Item = Link> + '_ {
        self.cross_edges.iter().map(|e| self.link(e))
    }

    pub(super) fn link(&self, e: &CrossEdge) -> Link {
        let name = |i: u16| self.cross_services.get(usize::from(i)).cloned().unwrap_or_default();
        Link {
            trace_id: TraceId(e.trace_id),
            child_span: e.child_span,
            parent_span: e.parent_span,
            minute: e.minute,
            parent: name(e.parent),
            child: name(e.child),
            error: e.error,
        }
    }
}
