//! Dependency edges: parent → child service pairs of a trace's spans, counted per minute.

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

/// Counts parent → child service edges of one trace's spans.
pub(super) fn trace_edges(spans: &[SpanLite], edges: &mut HashMap<(u32, u16, u16), (u32, u32)>) {
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
