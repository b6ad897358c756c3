//! The in-memory reference backend passes the backend conformance suite.

use std::sync::Arc;

use parking_lot::RwLock;
use strand_core::BoxFuture;
use strand_store::conformance::{self, Harness, Options};
use strand_store::memory::{MemoryConfig, MemoryData, MemoryStore};

/// Memory that outlives one store, as a data directory outlives one process.
#[derive(Default)]
struct Memory(Arc<RwLock<MemoryData>>);

impl Harness for Memory {
    type Store = MemoryStore;

    fn open(&self, opts: Options) -> BoxFuture<'_, MemoryStore> {
        let cfg = MemoryConfig { clock: opts.clock, retention: opts.retention, max_bytes: opts.max_bytes };
        Box::pin(std::future::ready(MemoryStore::reopen(self.0.clone(), cfg)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_conformance() {
    conformance::run_all(Memory::default).await;
}
