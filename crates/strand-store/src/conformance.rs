//! The conformance suite every `TraceWriter` + `TraceReader` backend runs.
//!
//! A backend's test calls [`run_all`] with a constructor; each check writes fixture traces
//! (see [`crate::testdata`]) and asserts what a reader must return. Failures panic with a
//! message naming the check, as test assertions do.

use strand_core::{SpanBatch, TraceId, TraceReader, TraceWriter};

use crate::testdata::{batch, trace_id};

async fn read<R: TraceReader + ?Sized>(r: &R, id: TraceId) -> Option<strand_core::Trace> {
    r.get_trace(id).await.expect("get_trace must not fail on a healthy backend")
}

fn sorted_spans(b: &SpanBatch) -> Vec<strand_core::StoredSpan> {
    let mut v: Vec<_> = b.clone().into_stored().collect();
    v.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.span_id));
    v
}

/// Written spans read back field for field: resource, scope and every span field.
pub async fn written_trace_reads_back_whole<B: TraceWriter + TraceReader>(b: &B) {
    let input = batch(1, 5);
    b.write(input.clone()).await.expect("write");
    let trace = read(b, trace_id(1)).await.expect("conformance: written trace must be found");
    assert_eq!(trace.spans, sorted_spans(&input), "conformance: trace must read back unchanged");
}

/// An id never written is absent.
pub async fn unknown_trace_is_none<B: TraceWriter + TraceReader>(b: &B) {
    assert!(read(b, trace_id(250)).await.is_none(), "conformance: unknown trace must be None");
}

/// Writing the same spans again (a retry) does not duplicate them.
pub async fn rewrites_are_idempotent<B: TraceWriter + TraceReader>(b: &B) {
    b.write(batch(2, 4)).await.expect("write");
    b.write(batch(2, 4)).await.expect("write again");
    let trace = read(b, trace_id(2)).await.expect("conformance: trace must be found");
    assert_eq!(trace.spans.len(), 4, "conformance: a retried write must not duplicate spans");
}

/// Spans of one trace written in separate batches come back as one trace.
pub async fn trace_split_across_writes_is_merged<B: TraceWriter + TraceReader>(b: &B) {
    let whole = batch(3, 6);
    let mut first = whole.clone();
    let mut second = whole.clone();
    first.resource_spans[0].scope_spans[0].spans.truncate(2);
    second.resource_spans[0].scope_spans[0].spans.drain(..2);
    b.write(second).await.expect("write");
    b.write(first).await.expect("write");
    let trace = read(b, trace_id(3)).await.expect("conformance: trace must be found");
    assert_eq!(trace.spans, sorted_spans(&whole), "conformance: split trace must be merged");
}

/// Traces do not bleed into each other.
pub async fn traces_are_kept_apart<B: TraceWriter + TraceReader>(b: &B) {
    for seed in 10..20 {
        b.write(batch(seed, 3)).await.expect("write");
    }
    for seed in 10..20 {
        let t = read(b, trace_id(seed)).await.expect("conformance: trace must be found");
        assert_eq!(t.spans.len(), 3);
        assert!(
            t.spans.iter().all(|s| s.span.trace_id == trace_id(seed)),
            "conformance: foreign span in trace"
        );
    }
}

/// Runs every check, each on a fresh backend from `make`. `after_write` lets a backend
/// move data between its tiers (for the embedded store: flush the head into blocks) so
/// the checks cover every tier.
pub async fn run_all<B, F, Fut>(make: F)
where
    B: TraceWriter + TraceReader,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = B>,
{
    written_trace_reads_back_whole(&make().await).await;
    unknown_trace_is_none(&make().await).await;
    rewrites_are_idempotent(&make().await).await;
    trace_split_across_writes_is_merged(&make().await).await;
    traces_are_kept_apart(&make().await).await;
}
