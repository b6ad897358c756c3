//! Small blocks are merged without duplicates. (Retention by age and by bytes is part of
//! the conformance suite.)

use std::sync::Arc;

use strand_core::TraceStore;
use strand_store::fs::StdFs;
use strand_store::testdata::{batch, trace_id};
use strand_store::{Store, StoreConfig};

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
    TraceStore::maintain(&store).await.expect("maintain");
    let snap = store.snapshot();
    assert_eq!(snap.blocks, 1);
    assert_eq!(snap.block_spans, 20, "duplicates of trace 0 dropped");
    for seed in 0..4 {
        assert_eq!(store.get_trace_blocking(trace_id(seed)).expect("read").expect("trace").spans.len(), 5);
    }
    let blocks = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("blocks"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let merged = blocks();
    assert_eq!(merged.len(), 1);
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(blocks(), merged, "nothing left to merge: the merged block is not rewritten");
}
