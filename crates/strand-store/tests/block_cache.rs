//! Block indexes live in a cache bounded by `cache_bytes`: queries over more blocks than it
//! holds load and evict indexes, stay within the budget and answer exactly as with every
//! index in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use strand_core::{LogStore, TimeRange, TraceQuery, TraceReader};
use strand_store::fs::StdFs;
use strand_store::testdata::{batch, log_batch, trace_id};
use strand_store::{Store, StoreConfig};

const BLOCKS: u8 = 6;

async fn answers(store: &Store) -> (Vec<String>, Vec<String>, Vec<usize>, usize) {
    let q = TraceQuery::all(100);
    let found: Vec<String> =
        store.find_traces(q).await.expect("search").traces.iter().map(|t| t.trace_id.to_string()).collect();
    let services = store.services(TimeRange::ALL).await.expect("services");
    let mut spans = Vec::new();
    for seed in 0..BLOCKS {
        spans.push(store.get_trace_blocking(trace_id(seed)).expect("read").map_or(0, |t| t.spans.len()));
    }
    let logs = store.trace_logs(trace_id(1), None).await.expect("logs").len();
    (found, services, spans, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_more_blocks_than_the_cache_holds_stay_within_it_and_answer_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Compaction off: one block per flush.
    let cfg = || StoreConfig {
        compaction_target_spans: 1,
        compaction_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg()).expect("open");
    for seed in 0..BLOCKS {
        store.append(batch(seed, 8)).await.expect("write");
        store.append_logs(log_batch(seed, 2)).await.expect("write logs");
        store.flush().await.expect("flush");
    }
    assert_eq!(store.snapshot().blocks, usize::from(BLOCKS));
    let want = answers(&store).await;
    assert_eq!(want.2, vec![8; usize::from(BLOCKS)], "{want:?}");
    assert!(want.3 > 0, "{want:?}");
    let all_cached = store.block_cache().bytes();
    assert!(all_cached > 0);
    assert!(store.snapshot().block_resident_bytes > 0);
    store.close();

    // Room for about a third of the indexes.
    let budget = all_cached / 3;
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig { cache_bytes: budget, ..cfg() })
        .expect("reopen");
    let cache = store.block_cache();
    assert!(cache.bytes() <= budget, "{} > {budget} after opening", cache.bytes());
    for round in 0..2 {
        assert_eq!(answers(&store).await, want, "round {round}");
        assert!(cache.bytes() <= budget, "{} > {budget}", cache.bytes());
    }
    assert!(cache.stats.misses.load(Ordering::Relaxed) > 0);
    assert!(cache.stats.evictions.load(Ordering::Relaxed) > 0);
    // A repeated lookup of one trace is served from the cache.
    let hits = cache.stats.hits.load(Ordering::Relaxed);
    store.get_trace_blocking(trace_id(2)).expect("read").expect("trace");
    store.get_trace_blocking(trace_id(2)).expect("read").expect("trace");
    assert!(cache.stats.hits.load(Ordering::Relaxed) > hits);
    // A trace no block holds loads nothing: each block's filter rules it out.
    let misses = cache.stats.misses.load(Ordering::Relaxed);
    assert!(store.get_trace_blocking(trace_id(200)).expect("read").is_none());
    assert_eq!(cache.stats.misses.load(Ordering::Relaxed), misses);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_index_whose_trace_ids_cannot_be_read_is_an_error_not_a_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = strand_store::fs::FaultyFs::new();
    let cfg = || StoreConfig { maintenance_interval: Duration::from_secs(3600), ..StoreConfig::default() };
    let store = Store::open(Arc::new(fs.clone()), dir.path(), cfg()).expect("open");
    store.append(batch(1, 3)).await.expect("write");
    store.flush().await.expect("flush");
    drop(store);
    // A fresh process: nothing of the block in the cache.
    let store = Store::open(Arc::new(fs.clone()), dir.path(), cfg()).expect("reopen");
    let block = std::fs::read_dir(dir.path().join("blocks")).expect("dir").next().expect("a block");
    let traces = block.expect("entry").path().join("traces.parquet");
    // index.bin (version 3) takes its trace ids from traces.parquet, which fails to read:
    // the query fails, rather than rebuilding and caching an index from the spans.
    fs.fail_reads_under(Some(traces));
    let failed = store.services(TimeRange::ALL).await;
    fs.fail_reads_under(None);
    let err = failed.expect_err("traces.parquet unreadable");
    assert!(err.to_string().contains("traces.parquet"), "{err}");
    // Once it reads again, the index is loaded from index.bin.
    assert_eq!(store.services(TimeRange::ALL).await.expect("services").len(), 1);
    assert_eq!(store.stats().derived_files_repaired.load(Ordering::Relaxed), 0);
}
