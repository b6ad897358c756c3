//! Queries answer the same before and after compaction, on the benchmark's standard
//! profile: traces by id, searches (by service, operation, attribute, status, durations,
//! time, a page at a time), services, operations, attributes, dependencies and logs, with
//! spans sent twice (a retry after a cut).

use std::sync::Arc;
use std::time::Duration;

use strand_bench::ingest::Generator;
use strand_core::{
    AttrFilter, AttrScope, LogQuery, LogStore, SpanBatch, StatusFilter, TimeRange, TraceId, TraceQuery,
    TraceReader, TraceStore, TraceWriter,
};
use strand_store::fs::StdFs;
use strand_store::{Store, StoreConfig};

/// The first half of each scope's spans, and the rest.
fn halves(batch: &SpanBatch) -> (SpanBatch, SpanBatch) {
    let (mut first, mut rest) = (batch.clone(), batch.clone());
    for (f, r) in first.resource_spans.iter_mut().zip(&mut rest.resource_spans) {
        for (fs, rs) in f.scope_spans.iter_mut().zip(&mut r.scope_spans) {
            let half = fs.spans.len() / 2;
            fs.spans.truncate(half);
            rs.spans.drain(..half);
        }
    }
    (first, rest)
}

/// Every page of `query`, with the cursors in between.
async fn pages(store: &Store, mut query: TraceQuery) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let page = store.find_traces(query.clone()).await.expect("search");
        out.push(format!("{:?}", page.traces));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return out,
        }
    }
}

/// The answers compared before and after compaction, each labelled.
async fn answers(store: &Store, ids: &[TraceId], log_ids: &[TraceId]) -> Vec<(String, String)> {
    let all = TimeRange::ALL;
    let mut out = Vec::new();
    for id in ids {
        let trace = store.get_trace(*id).await.expect("read").expect("the trace is stored");
        out.push((format!("trace {}", id.to_hex()), format!("{:?}", trace.spans)));
    }
    for id in log_ids {
        let logs = store.trace_logs(*id, None).await.expect("logs");
        assert!(!logs.is_empty());
        out.push((format!("logs of {}", id.to_hex()), format!("{logs:?}")));
    }
    let services = store.services(all).await.expect("services");
    assert!(services.len() >= 4, "{services:?}");
    out.push(("services".into(), format!("{services:?}")));
    for service in &services {
        let ops = store.operations(service.clone(), all).await.expect("operations");
        out.push((format!("operations of {service}"), format!("{ops:?}")));
        let attrs = store.attributes(Some(service.clone()), all).await.expect("attributes");
        out.push((format!("attributes of {service}"), format!("{attrs:?}")));
    }
    let deps = store.dependencies(all).await.expect("dependencies");
    assert!(!deps.is_empty());
    out.push(("dependencies".into(), format!("{deps:?}")));
    let q = |f: &dyn Fn(&mut TraceQuery)| {
        let mut q = TraceQuery::all(25);
        f(&mut q);
        q
    };
    let attr = |scope, key: &str, value: &str| AttrFilter { scope, key: key.into(), value: value.into() };
    let queries = [
        ("all", q(&|_| {})),
        ("service", q(&|q| q.service = Some(services[1].clone()))),
        ("operation", q(&|q| q.operation = Some("SELECT epro.reports".into()))),
        ("span attribute", q(&|q| q.attributes = vec![attr(AttrScope::Span, "rpc.method", "Submit")])),
        ("resource attribute", q(&|q| q.attributes = vec![attr(AttrScope::Resource, "host.name", "node-1")])),
        ("error", q(&|q| q.status = Some(StatusFilter::Error))),
        ("span duration", q(&|q| q.min_span_duration_nano = Some(20_000_000))),
        ("trace duration", q(&|q| q.max_trace_duration_nano = Some(30_000_000))),
    ];
    for (label, query) in queries {
        let pages = pages(store, query).await;
        assert!(pages.len() > 1 || label == "error", "{label}: one page only");
        out.push((format!("search by {label}"), format!("{pages:?}")));
    }
    let logs = store.find_logs(LogQuery { limit: 7, ..LogQuery::default() }).await.expect("find logs");
    assert!(!logs.records.is_empty());
    out.push(("log search".into(), format!("{:?}", logs.records)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_the_same_before_and_after_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        compaction_target_spans: 1_000_000,
        compaction_window: Duration::ZERO,
        compaction_bytes_per_second: 0,
        // Only the test's own maintenance merges.
        maintenance_interval: Duration::from_secs(24 * 3600),
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open"));
    let mut generator = Generator::new(11, 10, 4, 0);
    let mut ids = Vec::new();
    for round in 0..12u8 {
        let (request, trace_ids, _) = generator.request(400);
        let (batch, rejected) = strand_otlp::from_request(request);
        assert_eq!(rejected.count, 0, "{:?}", rejected.messages);
        ids.extend(trace_ids.into_iter().map(TraceId));
        if round % 3 == 0 {
            // Two blocks; the second half sent again after its cut (a retry whose
            // acknowledgement was lost), into a third.
            let (first, rest) = halves(&batch);
            store.write(first).await.expect("write");
            store.flush().await.expect("flush");
            store.write(rest.clone()).await.expect("write");
            store.flush().await.expect("flush");
            store.write(rest).await.expect("write");
        } else {
            store.write(batch).await.expect("write");
        }
        store.write_logs(strand_store::testdata::log_batch(round, 2)).await.expect("logs");
        store.flush().await.expect("flush");
    }
    let sample: Vec<TraceId> = ids.iter().step_by(7).copied().collect();
    let log_ids: Vec<TraceId> = (0..12).map(strand_store::testdata::trace_id).collect();
    let blocks = store.blocks().len();
    assert!(blocks >= 16, "{blocks} blocks");
    let before = answers(&store, &sample, &log_ids).await;
    TraceStore::maintain(store.as_ref()).await.expect("maintain");
    assert_eq!(store.blocks().len(), 1, "all merged into one block");
    let after = answers(&store, &sample, &log_ids).await;
    assert_eq!(before.len(), after.len());
    for ((label, b), (_, a)) in before.iter().zip(&after) {
        assert!(a == b, "{label} differs after compaction:\nbefore {b}\nafter  {a}");
    }
}
