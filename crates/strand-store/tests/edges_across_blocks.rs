//! Dependency edges of traces cut across blocks: a parent in one block and its child in
//! another count as if they had been cut together, whichever arrived first, before and
//! after compaction (of the children's blocks before their parents are cut, too), and
//! across a restart.

use std::sync::Arc;
use std::time::Duration;

use strand_core::{
    Scope, SpanBatch, SpanKind, Status, StatusCode, TimeRange, TraceId, TraceReader, TraceStore,
};
use strand_store::fs::StdFs;
use strand_store::testdata::{service_batch, span};
use strand_store::{Store, StoreConfig};

const MINUTE: u64 = 60_000_000_000;
const T0: u64 = 100 * MINUTE;

fn tid(n: u32) -> TraceId {
    let mut id = [0u8; 16];
    id[12..].copy_from_slice(&(n + 1).to_be_bytes());
    TraceId(id)
}

/// The batches of trace `n` (one per service, as four services would export them):
/// gateway → user-service (an error in trace 2), gateway → notify-service across a queue,
/// notify-service → data-service.
fn trace(n: u32) -> Vec<SpanBatch> {
    let id = tid(n);
    let start = T0 + u64::from(n) * MINUTE;
    let root = span(id, 1, None, "POST /reports", start, 1_000_000);
    let mut http = span(id, 2, Some(1), "GET /users", start + 10, 1_000);
    http.kind = SpanKind::Client;
    let mut produce = span(id, 4, Some(1), "send reports", start + 20, 1_000);
    produce.kind = SpanKind::Producer;
    let mut users = span(id, 3, Some(2), "GET /users", start + 11, 900);
    if n == 2 {
        users.status = Status { code: StatusCode::Error, message: "no such user".into() };
    }
    let mut consume = span(id, 5, Some(4), "process reports", start + 5_000, 1_000);
    consume.kind = SpanKind::Consumer;
    let mut grpc = span(id, 6, Some(5), "epro.Data/Store", start + 5_100, 500);
    grpc.kind = SpanKind::Client;
    let data = span(id, 7, Some(6), "epro.Data/Store", start + 5_150, 400);
    let batch = |service: &str, spans| service_batch(service, vec![], Scope::default(), spans);
    vec![
        batch("gateway", vec![root, http, produce]),
        batch("user-service", vec![users]),
        batch("notify-service", vec![consume, grpc]),
        batch("data-service", vec![data]),
    ]
}

type Edges = Vec<(String, String, u64, u64)>;

async fn edges(store: &Store, range: TimeRange) -> Edges {
    let edges = store.dependencies(range).await.expect("dependencies");
    edges.into_iter().map(|e| (e.parent, e.child, e.call_count, e.error_count)).collect()
}

/// The edges of traces `0..n`: trace 2 has the error.
fn expected(n: u64) -> Edges {
    [
        ("gateway", "notify-service", n, 0),
        ("gateway", "user-service", n, 1),
        ("notify-service", "data-service", n, 0),
    ]
    .into_iter()
    .map(|(p, c, calls, errors)| (p.to_owned(), c.to_owned(), calls, errors))
    .collect()
}

async fn check(store: &Store, traces: u64, when: &str) {
    assert_eq!(edges(store, TimeRange::ALL).await, expected(traces), "{when}");
    let first_minute = TimeRange { start_unix_nano: T0, end_unix_nano: T0 + MINUTE - 1 };
    let first = edges(store, first_minute).await;
    assert_eq!(first.len(), 3, "{when}: {first:?}");
    assert!(first.iter().all(|e| e.2 == 1), "{when}: the range counts one trace: {first:?}");
}

/// Appends each batch and cuts it into a block of its own.
async fn cut_each(store: &Store, batches: Vec<SpanBatch>) {
    for b in batches {
        store.append(b).await.expect("write");
        store.flush().await.expect("flush");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_of_a_trace_cut_across_blocks_are_those_of_one_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Blocks of 1 to 3 spans: a compaction merges runs of them into blocks of at most 8.
    let small = StoreConfig {
        compaction_target_spans: 8,
        compaction_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(StdFs), dir.path(), small.clone()).expect("open");
    // Every service's batch of every trace is cut into a block of its own. Trace 1 arrives
    // children first (each parent is cut after its children); trace 0's gateway batch is
    // sent again after the rest (a retry), so two blocks hold its parents; trace 2's
    // gateway and user-service batches share a block, and the user-service one is sent
    // again after the rest, so a later block holds a copy of a child whose edge the first
    // block counts.
    for n in 0..3 {
        let mut batches = trace(n);
        if n == 1 {
            batches.reverse();
        }
        if n == 0 {
            batches.push(batches[0].clone());
        }
        if n == 2 {
            let gateway = batches.remove(0);
            store.append(gateway).await.expect("write");
            batches.push(batches[0].clone());
        }
        cut_each(&store, batches).await;
    }
    // Traces 3 and 4 arrive leaves first (user-service, data-service), then their parents
    // (notify-service, gateway): trace 3's parents after a compaction merged the block of
    // its user-service span with others (the gateway's block, which holds no span without
    // its parent, must still be linked to it), trace 4's after a restart.
    let split = |n| {
        let t = trace(n);
        (vec![t[1].clone(), t[3].clone()], vec![t[2].clone(), t[0].clone()])
    };
    let (leaves, parents) = split(3);
    cut_each(&store, leaves).await;
    assert_eq!(store.snapshot().blocks, 15);
    check(&store, 3, "after cutting every batch into a block of its own (but one)").await;

    loop {
        let before = store.snapshot().blocks;
        TraceStore::maintain(&store).await.expect("maintain");
        if store.snapshot().blocks == before {
            break;
        }
    }
    // Runs of small blocks (fewer than 4 spans each, at most 8 together) are merged into
    // three; trace 2's four-span block and the last (trace 3's data-service span) stay.
    // Trace 3's user-service span is in a merged block, which the gateway's cut below
    // must link to although the gateway's spans all have their parents beside them.
    assert_eq!(store.snapshot().blocks, 5, "{:?}", store.snapshot());
    check(&store, 3, "after compacting into blocks that still split traces").await;
    let compacted = store.snapshot().blocks;
    cut_each(&store, parents).await;
    assert_eq!(store.snapshot().blocks, compacted + 2);
    check(&store, 4, "after cutting parents whose children's blocks were merged").await;

    let (leaves, parents) = split(4);
    cut_each(&store, leaves).await;
    drop(store);
    let store = Store::open(Arc::new(StdFs), dir.path(), small.clone()).expect("reopen");
    cut_each(&store, parents).await;
    check(&store, 5, "after cutting parents whose children were cut before a restart").await;
    drop(store);

    let whole = StoreConfig { compaction_target_spans: 1000, ..small };
    let store = Store::open(Arc::new(StdFs), dir.path(), whole).expect("reopen");
    check(&store, 5, "after a restart").await;
    // Compaction merges blocks once the scrub after start has checked them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.snapshot().blocks > 1 {
        assert!(std::time::Instant::now() < deadline, "never compacted: {:?}", store.snapshot());
        TraceStore::maintain(&store).await.expect("maintain");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    check(&store, 5, "after compacting into one block").await;
}

/// All batches of trace `n` as one (a collector forwards whole traces).
fn whole(n: u32) -> SpanBatch {
    SpanBatch { resource_spans: trace(n).into_iter().flat_map(|b| b.resource_spans).collect() }
}

/// A batch holding whole traces sent again after its first copy was cut into a block (its
/// acknowledgement lost) is cut into a later block: its edges are counted once, before
/// and after compaction, also when the first copy's block was merged meanwhile; and once
/// when the earlier block held only a child of it (that block counted no edge for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_in_a_later_block_counts_its_edges_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        maintenance_interval: Duration::from_secs(24 * 3600),
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open");
    cut_each(&store, vec![whole(0)]).await;
    // The retry shares its head with trace 1 (the cut does not see it as open).
    store.append(whole(0)).await.expect("write");
    store.append(whole(1)).await.expect("write");
    store.flush().await.expect("flush");
    // Trace 2: the user-service batch alone first, then the whole trace with it again.
    cut_each(&store, vec![trace(2)[1].clone(), whole(2)]).await;
    assert_eq!(store.snapshot().blocks, 4);
    check(&store, 3, "retried whole traces cut into later blocks").await;
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(store.snapshot().blocks, 1);
    check(&store, 3, "after compacting into one block").await;
    cut_each(&store, vec![whole(1)]).await;
    check(&store, 3, "a retry cut after its first copy's block was merged").await;
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(store.snapshot().blocks, 1);
    check(&store, 3, "after compacting the retry too").await;
}
