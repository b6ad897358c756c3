//! The embedded store passes the backend conformance suite, with spans in the head and
//! with spans in blocks.

use std::sync::Arc;

use strand_core::{BoxFuture, SinkError, SpanBatch, StoreError, Trace, TraceId, TraceReader, TraceWriter};
use strand_store::fs::StdFs;
use strand_store::{Store, StoreConfig, conformance};

struct Tmp(Store, #[allow(dead_code)] tempfile::TempDir);

/// Writes, then flushes the head so reads come from Parquet blocks.
struct Flushing(Tmp);

fn open() -> Tmp {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    Tmp(store, dir)
}

impl TraceWriter for Tmp {
    fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        self.0.write(batch)
    }
}

impl TraceReader for Tmp {
    fn get_trace(&self, id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        self.0.get_trace(id)
    }
}

impl TraceWriter for Flushing {
    fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.0.0.append(batch).await?;
            self.0.0.flush().await.map_err(SinkError::Unavailable)
        })
    }
}

impl TraceReader for Flushing {
    fn get_trace(&self, id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        self.0.get_trace(id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_passes_conformance() {
    conformance::run_all(|| async { open() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_pass_conformance() {
    conformance::run_all(|| async { Flushing(open()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_store_passes_conformance() {
    // Each write closes the store (which cuts its head into a block) and opens it again.
    struct Reopening(parking_lot::Mutex<Option<Arc<Store>>>, tempfile::TempDir);
    impl TraceWriter for Reopening {
        fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(async move {
                let store = self.0.lock().take().expect("store present");
                store.append(batch).await?;
                store.close();
                let reopened = Store::open(Arc::new(StdFs), self.1.path(), StoreConfig::default())
                    .map_err(|e| SinkError::Unavailable(e.to_string()))?;
                *self.0.lock() = Some(Arc::new(reopened));
                Ok(())
            })
        }
    }
    impl TraceReader for Reopening {
        fn get_trace(&self, id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
            let store = self.0.lock().clone().expect("store present");
            Box::pin(async move { store.get_trace(id).await })
        }
    }
    conformance::run_all(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
        Reopening(parking_lot::Mutex::new(Some(Arc::new(store))), dir)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_fsync_passes_conformance() {
    conformance::run_all(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig {
            fsync: strand_store::FsyncPolicy::Interval(std::time::Duration::from_millis(5)),
            ..StoreConfig::default()
        };
        Tmp(Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open"), dir)
    })
    .await;
}
