//! A full disk refuses writes with an error (nothing acknowledged is lost), keeps serving
//! what is stored, and recovers when space returns.

use std::sync::Arc;

use strand_core::{SinkError, TraceStore};
use strand_store::fs::FaultyFs;
use strand_store::testdata::{batch, trace_id};
use strand_store::{Store, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::new();
    let store = Store::open(Arc::new(fs.clone()), dir.path(), StoreConfig::default()).expect("open");
    store.append(batch(1, 3)).await.expect("write with space");
    store.flush().await.expect("flush with space");
    store.append(batch(2, 3)).await.expect("write with space");
    assert!(store.not_ready().await.is_empty(), "ready while there is space");

    fs.set_space(Some(0));
    let err = store.append(batch(3, 3)).await.expect_err("write on a full disk must fail");
    assert!(matches!(err, SinkError::Unavailable(ref m) if m.contains("wal append failed")), "{err}");
    let reasons = store.not_ready().await;
    assert!(reasons.iter().any(|r| r.starts_with("wal: ") && r.contains("No space left")), "{reasons:?}");
    let flush = store.flush().await.expect_err("flush on a full disk must fail");
    assert!(flush.to_string().contains("No space left on device"), "{flush}");
    let reasons = store.not_ready().await;
    assert!(
        reasons.iter().any(|r| r.contains("rotating a segment") && r.contains("No space")),
        "{reasons:?}"
    );
    // Everything acknowledged is still readable, from blocks and from memory.
    assert_eq!(store.get_trace_blocking(trace_id(1)).expect("read").expect("trace 1").spans.len(), 3);
    assert_eq!(store.get_trace_blocking(trace_id(2)).expect("read").expect("trace 2").spans.len(), 3);
    assert!(store.get_trace_blocking(trace_id(3)).expect("read").is_none());

    fs.set_space(None);
    store.append(batch(3, 3)).await.expect("write after space returns");
    store.flush().await.expect("flush after space returns");
    assert_eq!(store.not_ready().await, Vec::<String>::new(), "ready again once writes work");
    store.close();
    drop(store);
    let store = Store::open(Arc::new(fs), dir.path(), StoreConfig::default()).expect("reopen");
    for seed in 1..=3 {
        let t = store.get_trace_blocking(trace_id(seed)).expect("read").expect("trace present");
        assert_eq!(t.spans.len(), 3, "trace {seed}");
    }
    assert_eq!(store.snapshot().head_spans, 0, "everything is in blocks after a clean close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_block_write_makes_the_store_not_ready_until_a_retry_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::new();
    let store = Store::open(Arc::new(fs.clone()), dir.path(), StoreConfig::default()).expect("open");
    store.append(batch(1, 3)).await.expect("write with space");
    // Room for the WAL's new segment, not for a block.
    fs.set_space(Some(64));
    store.flush().await.expect_err("the block cannot be written");
    let reasons = store.not_ready().await;
    assert!(reasons.iter().any(|r| r.starts_with("flush: ") && r.contains("No space")), "{reasons:?}");
    fs.set_space(None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !store.not_ready().await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the flusher's retry never succeeded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(store.get_trace_blocking(trace_id(1)).expect("read").expect("trace 1").spans.len(), 3);
    assert_eq!(store.snapshot().blocks, 1, "the retry wrote the block");
}
