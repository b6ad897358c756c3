//! The embedded store passes the backend conformance suite: spans in the head, in Parquet
//! blocks and after a restart, with both fsync policies, and with a block cache too small
//! to keep any block index (every query loads them from disk).

use std::sync::Arc;

use strand_core::BoxFuture;
use strand_store::conformance::{self, Harness, Options};
use strand_store::fs::StdFs;
use strand_store::{FsyncPolicy, Store, StoreConfig};

/// The embedded store in a temporary data directory of its own.
struct Embedded {
    dir: tempfile::TempDir,
    fsync: FsyncPolicy,
    cache_bytes: u64,
}

impl Embedded {
    fn new(fsync: FsyncPolicy) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            fsync,
            cache_bytes: strand_store::engine::DEFAULT_CACHE_BYTES,
        }
    }
}

impl Harness for Embedded {
    type Store = Store;

    fn open(&self, opts: Options) -> BoxFuture<'_, Store> {
        let cfg = StoreConfig {
            fsync: self.fsync,
            retention: opts.retention,
            max_disk_bytes: opts.max_bytes,
            clock: opts.clock,
            cache_bytes: self.cache_bytes,
            ..StoreConfig::default()
        };
        Box::pin(async move { Store::open(Arc::new(StdFs), self.dir.path(), cfg).expect("open") })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_conformance() {
    conformance::run_all(|| Embedded::new(FsyncPolicy::Always)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_with_interval_fsync_passes_conformance() {
    let every = std::time::Duration::from_millis(5);
    conformance::run_all(|| Embedded::new(FsyncPolicy::Interval(every))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_without_a_block_cache_passes_conformance() {
    conformance::run_all(|| Embedded { cache_bytes: 0, ..Embedded::new(FsyncPolicy::Always) }).await;
}
