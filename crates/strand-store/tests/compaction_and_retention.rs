//! Small blocks are merged without duplicates; retention deletes by receive age and by
//! byte budget.

use std::sync::Arc;
use std::time::Duration;

use strand_store::fs::StdFs;
use strand_store::testdata::{batch, trace_id};
use strand_store::{Store, StoreConfig, now_unix_nano};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_are_compacted_and_duplicates_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { compaction_target_spans: 1000, ..StoreConfig::default() };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open");
    for seed in 0..4 {
        store.append(batch(seed, 5)).await.expect("write");
        // The same trace again in the next block: a client retry after a cut.
        store.append(batch(0, 5)).await.expect("write");
        store.flush().await.expect("flush");
    }
    assert_eq!(store.snapshot().blocks, 4);
    assert!(store.compact_now().expect("compact"));
    let snap = store.snapshot();
    assert_eq!(snap.blocks, 1);
    assert_eq!(snap.block_spans, 20, "duplicates of trace 0 dropped");
    for seed in 0..4 {
        assert_eq!(store.get_trace_blocking(trace_id(seed)).expect("read").expect("trace").spans.len(), 5);
    }
    assert_eq!(std::fs::read_dir(dir.path().join("blocks")).expect("dir").count(), 1);
    assert!(!store.compact_now().expect("compact"), "nothing left to merge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_counts_from_receive_time_and_keeps_the_byte_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { retention: Duration::from_secs(3600), ..StoreConfig::default() };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open");
    // Fixture spans are timestamped in 2023: old timestamps must not be dropped on arrival.
    for seed in 0..3 {
        store.append(batch(seed, 5)).await.expect("write");
        store.flush().await.expect("flush");
    }
    store.enforce_retention(now_unix_nano());
    assert_eq!(store.snapshot().blocks, 3, "recently received data is kept");
    store.enforce_retention(now_unix_nano() + 2 * 3600 * 1_000_000_000);
    assert_eq!(store.snapshot().blocks, 0, "data received over an hour ago is deleted");
    assert!(store.get_trace_blocking(trace_id(0)).expect("read").is_none());
    drop(store);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    for seed in 0..3 {
        store.append(batch(seed, 5)).await.expect("write");
        store.flush().await.expect("flush");
    }
    let snap = store.snapshot();
    let per_block = snap.block_bytes / 3;
    drop(store);
    let cfg = StoreConfig {
        max_disk_bytes: Some(snap.wal_bytes + per_block * 2 + per_block / 2),
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("reopen");
    store.enforce_retention(now_unix_nano());
    assert_eq!(store.snapshot().blocks, 2, "the oldest block goes to keep the byte budget");
    assert!(store.get_trace_blocking(trace_id(0)).expect("read").is_none(), "oldest deleted first");
    assert!(store.get_trace_blocking(trace_id(2)).expect("read").is_some());
}
