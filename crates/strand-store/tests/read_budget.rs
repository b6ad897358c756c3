//! Trace reads in flight hold at most `max_read_bytes` of decoded spans together: a read
//! that would pass it is refused at once as unavailable, and served again once the reads
//! before it are done.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strand_core::{ErrorKind, StoreError, TraceReader};
use strand_store::fs::FaultyFs;
use strand_store::testdata::{batch, trace_id};
use strand_store::{Store, StoreConfig};

/// A store whose read budget has room for three decoded spans, holding a five-span trace
/// (seed 1) in a block: reading it takes all of the budget.
async fn a_block_over_the_budget() -> (tempfile::TempDir, FaultyFs, Arc<Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::new();
    let cfg = StoreConfig { max_read_bytes: 3 * 1024, ..StoreConfig::default() };
    let store = Arc::new(Store::open(Arc::new(fs.clone()), dir.path(), cfg).expect("open"));
    store.append(batch(1, 5)).await.expect("write");
    store.flush().await.expect("flush");
    (dir, fs, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_past_the_budget_is_refused_while_others_hold_it() {
    let (dir, fs, store) = a_block_over_the_budget().await;
    store.append(batch(2, 1)).await.expect("write");
    let read = |seed: u8| {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.get_trace_blocking(trace_id(seed)))
    };
    // A first read loads the block's trace index; the next one stalls reading its spans.
    assert_eq!(read(1).await.expect("task").expect("read").expect("trace 1").spans.len(), 5);
    let block = std::fs::read_dir(dir.path().join("blocks")).expect("dir").next().expect("a block");
    fs.hold_reads_under(Some(block.expect("entry").path()));
    let stalled = read(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs.held_reads() == 0 {
        assert!(Instant::now() < deadline, "the read never reached the block");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let refused = read(2).await.expect("task");
    let err: StoreError = refused.expect_err("the budget is held by the stalled read");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("storage.max_read_size"), "names the setting: {err}");
    assert_eq!(store.stats().reads_refused.load(Ordering::Relaxed), 1);

    fs.hold_reads_under(None);
    assert_eq!(stalled.await.expect("task").expect("read").expect("trace 1").spans.len(), 5);
    let served = read(2).await.expect("task").expect("read once the budget is free");
    assert_eq!(served.expect("trace 2").spans.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_read_together_past_the_budget_are_served_when_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { max_read_bytes: 3 * 1024, ..StoreConfig::default() };
    let store = Store::open(Arc::new(strand_store::fs::StdFs), dir.path(), cfg).expect("open");
    for seed in [1, 3] {
        store.append(batch(seed, 5)).await.expect("write");
    }
    store.flush().await.expect("flush");
    // Each trace alone is over the budget; one call reading both must not be refused for
    // its own first trace.
    let traces = store.get_traces(vec![trace_id(1), trace_id(3)]).await.expect("read both");
    assert_eq!(traces.iter().map(|t| t.spans.len()).collect::<Vec<_>>(), [5, 5]);
    assert_eq!(store.stats().reads_refused.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_loading_search_indexes_reserves_them_and_one_using_the_cache_does_not() {
    let (dir, fs, store) = a_block_over_the_budget().await;
    let all = strand_core::TimeRange { start_unix_nano: 0, end_unix_nano: u64::MAX };
    let block = std::fs::read_dir(dir.path().join("blocks")).expect("dir").next().expect("a block");
    let block = block.expect("entry").path();
    // A read stalled in the block holds the whole budget (five decoded spans).
    let stall = || {
        let store = store.clone();
        assert_eq!(store.get_trace_blocking(trace_id(1)).expect("read").expect("trace 1").spans.len(), 5);
        fs.hold_reads_under(Some(block.clone()));
        tokio::task::spawn_blocking(move || store.get_trace_blocking(trace_id(1)))
    };
    let stalled = stall();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs.held_reads() == 0 {
        assert!(Instant::now() < deadline, "the read never reached the block");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The block's search index is not in memory: the query would load it (about 65 bytes a
    // span) and there is no room.
    let err = store.services(all).await.expect_err("no room for the block's search index");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("query's search indexes needs about 325"), "{err}");
    assert_eq!(store.stats().reads_refused.load(Ordering::Relaxed), 1);
    fs.hold_reads_under(None);
    assert_eq!(stalled.await.expect("task").expect("read").expect("trace 1").spans.len(), 5);
    let services = store.services(all).await.expect("room once the read is done");
    assert_eq!(services.len(), 1, "{services:?}");

    // Now the index is in the cache: the same query loads nothing and needs no room.
    let stalled = stall();
    while fs.held_reads() == 0 {
        assert!(Instant::now() < deadline, "the read never reached the block");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.services(all).await.expect("served from the cache"), services);
    // A search that reads the trace to check its spans (its range starts inside the
    // trace) reserves that read too: refused while the stalled read holds the budget.
    let base = 1_700_000_000_000_000_000u64 + 1_000_000_000;
    let inside = strand_core::TraceQuery { start_unix_nano: base + 1500, ..strand_core::TraceQuery::all(10) };
    let mut search = {
        let (store, q) = (store.clone(), inside.clone());
        tokio::spawn(async move { store.find_traces(q).await })
    };
    // A search let through would stall on the held block: the reads are let go before
    // asserting, whatever happened.
    let refused = tokio::time::timeout(Duration::from_secs(10), &mut search).await;
    fs.hold_reads_under(None);
    stalled.await.expect("task").expect("read");
    let refused = refused.expect("refused at once, not reading the held block").expect("task");
    let err = refused.expect_err("no room for the trace it reads");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(store.stats().reads_refused.load(Ordering::Relaxed), 2);
    let page = store.find_traces(inside).await.expect("room once the read is done");
    assert_eq!(page.traces.iter().map(|t| t.trace_id).collect::<Vec<_>>(), [trace_id(1)]);
}
