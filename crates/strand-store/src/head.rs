//! The head: recently written spans in memory, grouped by trace, queryable at once.

use std::collections::{HashMap, HashSet};

use strand_core::{SpanBatch, SpanId, StoredSpan, TraceId};

/// Spans of one trace in the head.
#[derive(Default)]
struct HeadTrace {
    spans: Vec<StoredSpan>,
    ids: HashSet<SpanId>,
}

/// In-memory spans. Not synchronised: the engine wraps it in a lock.
///
/// Ids come from the network, so the maps keep std's keyed hasher: a client cannot craft
/// colliding ids to make inserts quadratic.
#[derive(Default)]
pub struct Head {
    traces: HashMap<TraceId, HeadTrace>,
    span_count: usize,
    bytes: u64,
    min_received: u64,
    max_received: u64,
}

impl Head {
    /// Adds a batch's spans, skipping spans already present (same trace and span id).
    /// `bytes` is the batch's encoded size, used to account memory. Returns how many
    /// spans were new.
    pub fn insert(&mut self, batch: SpanBatch, received_unix_nano: u64, bytes: u64) -> usize {
        let mut added = 0;
        for s in batch.into_stored() {
            let t = self.traces.entry(s.span.trace_id).or_default();
            if t.ids.insert(s.span.span_id) {
                t.spans.push(s);
                added += 1;
            }
        }
        if added > 0 {
            if self.span_count == 0 {
                self.min_received = received_unix_nano;
            }
            self.min_received = self.min_received.min(received_unix_nano);
            self.max_received = self.max_received.max(received_unix_nano);
        }
        self.span_count += added;
        self.bytes += bytes;
        added
    }

    /// The spans of a trace held here.
    pub fn get(&self, id: &TraceId) -> Option<&[StoredSpan]> {
        self.traces.get(id).map(|t| t.spans.as_slice())
    }

    /// Number of spans held.
    pub fn span_count(&self) -> usize {
        self.span_count
    }

    /// Encoded bytes of what was inserted (an estimate of memory held).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Earliest receive time of a held span (0 when empty).
    pub fn min_received(&self) -> u64 {
        self.min_received
    }

    /// Latest receive time of a held span.
    pub fn max_received(&self) -> u64 {
        self.max_received
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.span_count == 0
    }

    /// All spans, in no particular order.
    pub fn spans(&self) -> impl Iterator<Item = &StoredSpan> {
        self.traces.values().flat_map(|t| t.spans.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::batch;

    #[test]
    fn insert_is_idempotent_on_trace_and_span_id() {
        let mut head = Head::default();
        assert_eq!(head.insert(batch(1, 4), 10, 100), 4);
        assert_eq!(head.insert(batch(1, 4), 20, 100), 0);
        assert_eq!(head.insert(batch(2, 3), 5, 100), 3);
        assert_eq!(head.span_count(), 7);
        assert_eq!((head.min_received(), head.max_received()), (5, 10));
        let id = batch(1, 1).resource_spans[0].scope_spans[0].spans[0].trace_id;
        assert_eq!(head.get(&id).map(<[_]>::len), Some(4));
    }
}
