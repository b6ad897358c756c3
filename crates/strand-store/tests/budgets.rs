//! The memory and disk budgets hold under a disk that fails block writes: writes are
//! refused at the memory limit while frozen heads wait, flush requests hear of a failing
//! block write at once, the head is cut early for the disk budget, and retention deletes
//! old blocks while a block write is being retried.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strand_core::{SinkError, SpanBatch, TraceId, TraceStore};
use strand_store::fs::FaultyFs;
use strand_store::testdata::batch;
use strand_store::{Store, StoreConfig};

/// Trace `n` of a test: the fixture trace with a trace id of its own.
fn trace(n: u32) -> (TraceId, SpanBatch) {
    let mut b = batch((n % 200) as u8, 10);
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[15] = 0x5a;
    for rs in &mut b.resource_spans {
        for ss in &mut rs.scope_spans {
            for sp in &mut ss.spans {
                sp.trace_id = TraceId(id);
            }
        }
    }
    (TraceId(id), b)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_heads_waiting_on_a_failing_disk_stop_writes_at_the_memory_limit_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::new();
    let limit = 64 * 1024;
    let cfg = StoreConfig { max_unwritten_bytes: limit, ..StoreConfig::default() };
    let store = Store::open(Arc::new(fs.clone()), dir.path(), cfg.clone()).expect("open");
    fs.fail_writes_under(Some(dir.path().join("blocks")));

    let mut acked = Vec::new();
    let refused = loop {
        assert!(acked.len() < 10_000, "10,000 writes accepted with every block write failing");
        let (id, b) = trace(acked.len() as u32);
        match store.append(b).await {
            Ok(()) => acked.push(id),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&refused, SinkError::Overloaded(m) if m.contains("storage.max_unwritten_size")),
        "{refused}"
    );
    let snap = store.snapshot();
    assert!(snap.frozen_spans > 0, "heads were cut at half the limit and wait for the flusher");
    assert!(snap.unwritten_bytes >= limit, "refused only at the limit: {}", snap.unwritten_bytes);
    assert!(snap.unwritten_bytes < limit + limit / 4, "held near the limit: {}", snap.unwritten_bytes);
    let reasons = store.not_ready().await;
    assert!(reasons.iter().any(|r| r.starts_with("memory: ")), "{reasons:?}");
    assert!(store.stats().writes_refused_memory.load(Ordering::Relaxed) >= 1);

    fs.fail_writes_under(None);
    let (id, b) = trace(acked.len() as u32);
    let mut next = Some(b);
    eventually("writes are accepted again once blocks are written", async || {
        match store.append(next.clone().expect("batch")).await {
            Ok(()) => next.take().is_some(),
            Err(SinkError::Overloaded(_)) => false,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    })
    .await;
    acked.push(id);
    for id in &acked {
        assert!(store.get_trace_blocking(*id).expect("read").is_some(), "trace {id} lost");
    }
    store.close();
    drop(store);
    let store = Store::open(Arc::new(fs), dir.path(), cfg).expect("reopen");
    for id in &acked {
        assert_eq!(store.get_trace_blocking(*id).expect("read").expect("kept").spans.len(), 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_requests_hear_of_a_failing_block_write_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::new();
    let store = Store::open(Arc::new(fs.clone()), dir.path(), StoreConfig::default()).expect("open");
    fs.fail_writes_under(Some(dir.path().join("blocks")));
    for n in 0..3 {
        store.append(trace(n).1).await.expect("the WAL still takes writes");
        // Each flush either cuts a new head (queued behind the failing one) or waits for
        // the failing one; neither may wait for the retries.
        let answer = tokio::time::timeout(Duration::from_secs(10), store.flush()).await;
        let err =
            answer.expect("a flush during a failing block write is answered at once").expect_err("fails");
        assert!(err.to_string().contains("No space left on device"), "{err}");
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), store.flush()).await;
    answer.expect("a flush with nothing new to cut is answered at once").expect_err("fails");

    fs.fail_writes_under(None);
    eventually("the retried writes succeed", async || store.not_ready().await.is_empty()).await;
    store.flush().await.expect("flush once blocks can be written");
    assert_eq!(store.snapshot().frozen_spans, 0);
    for n in 0..3 {
        assert!(store.get_trace_blocking(trace(n).0).expect("read").is_some(), "trace {n} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_budget_holds_the_head_cut_early_and_oldest_blocks_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget = 256 * 1024;
    // The head's own limits (1M spans, 512 MiB, 5 min) would never cut it in this test.
    let cfg = StoreConfig { max_disk_bytes: Some(budget), ..StoreConfig::default() };
    let store = Store::open(Arc::new(FaultyFs::new()), dir.path(), cfg).expect("open");
    let mut written = 0;
    for n in 0..1_000 {
        let (_, b) = trace(n);
        let mut next = Some(b);
        eventually("a write is accepted", async || match store.append(next.clone().expect("batch")).await {
            Ok(()) => next.take().is_some(),
            Err(SinkError::Unavailable(m)) if m.contains("disk budget") => false,
            Err(e) => panic!("unexpected refusal: {e}"),
        })
        .await;
        written += 1;
    }
    assert_eq!(written, 1_000);
    let stats = store.stats();
    eventually("the data directory is within the budget", async || {
        strand_store::testdata::dir_bytes(dir.path()) <= budget
    })
    .await;
    assert!(stats.blocks_written.load(Ordering::Relaxed) >= 4, "the head was cut for the budget");
    assert!(stats.retention_deleted_blocks.load(Ordering::Relaxed) >= 1, "old blocks made room");
    assert!(store.get_trace_blocking(trace(999).0).expect("read").is_some(), "the newest trace is kept");
    assert!(store.get_trace_blocking(trace(0).0).expect("read").is_none(), "the oldest trace went first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_makes_room_while_a_block_write_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::new();
    let budget = 256 * 1024;
    let cfg = StoreConfig { max_disk_bytes: Some(budget), ..StoreConfig::default() };
    let store = Store::open(Arc::new(fs.clone()), dir.path(), cfg).expect("open");
    let mut n = 0;
    while store.snapshot().block_bytes < budget / 2 {
        store.append(trace(n).1).await.expect("write");
        n += 1;
        if n % 50 == 0 {
            store.flush().await.expect("flush");
        }
    }
    let deleted_before = store.stats().retention_deleted_blocks.load(Ordering::Relaxed);
    fs.fail_writes_under(Some(dir.path().join("blocks")));
    // Enough new data in the WAL to push the total over the budget.
    let first_new = n;
    while store.snapshot().wal_bytes < budget * 3 / 4 {
        match store.append(trace(n).1).await {
            Ok(()) => n += 1,
            Err(e) => panic!("the WAL takes writes while blocks can still be deleted: {e}"),
        }
    }
    eventually("retention deletes old blocks while the block write fails", async || {
        store.stats().retention_deleted_blocks.load(Ordering::Relaxed) > deleted_before
            && store.not_ready().await.iter().any(|r| r.starts_with("flush: "))
    })
    .await;
    // With every block gone and the WAL still growing, the WAL alone passes the budget:
    // writes are refused (503) rather than let it grow on.
    let refused = loop {
        match store.append(trace(n).1).await {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(store.snapshot().wal_bytes < 4 * budget, "the WAL grew to four times the budget");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(matches!(&refused, SinkError::Unavailable(m) if m.contains("disk budget is full")), "{refused}");
    assert_eq!(store.snapshot().blocks, 0, "every block was deleted first");
    let reasons = store.not_ready().await;
    assert!(reasons.iter().any(|r| r.starts_with("disk: ")), "{reasons:?}");
    assert!(store.stats().writes_refused_disk_budget.load(Ordering::Relaxed) >= 1);
    fs.fail_writes_under(None);
    eventually("the block write succeeds", async || store.not_ready().await.is_empty()).await;
    let next = trace(n).1;
    eventually("writes are accepted once the WAL became blocks", async || {
        match store.append(next.clone()).await {
            Ok(()) => true,
            Err(SinkError::Unavailable(m)) if m.contains("disk budget") => false,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    })
    .await;
    n += 1;
    for k in first_new..n {
        assert!(store.get_trace_blocking(trace(k).0).expect("read").is_some(), "new trace {k} lost");
    }
}
