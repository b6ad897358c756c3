//! Blocks handed from ingesters to object storage, read there by queriers.
//!
//! An ingester cuts its head into blocks on its own disk as the single binary does. Its
//! [`Uploader`] copies each new block to `<tenant>/blocks/<id>/` in the bucket (data files
//! first, `meta.json` last) and stamps the uploaded `meta.json` with a handoff time, the
//! upload's end plus `handoff_delay`.
//!
//! Each querier read carries the querier's clock. An ingester answers for a block only
//! while that clock is before the block's handoff ([`Visibility::HeldAt`]); the querier
//! reads the uploaded copy from the handoff on ([`Visibility::HandedOverBy`]). Both
//! compare the same two numbers, so every block is read exactly once, whatever the timing.
//! The querier's listing must hold a block by its handoff: it lists the bucket every third
//! of `handoff_delay` and, when its listing is older than half of it, lists before
//! answering. The ingester deletes its copy `keep_after_handoff` after the handoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use object_store::path::Path as Key;
use strand_core::StoreError;
use strand_core::metrics::MetricFamily;
use strand_store::block::{Block, BlockMeta};
use strand_store::{BlockSet, Store, StoreConfig, StoreView, Visibility};
use tokio::io::AsyncWriteExt as _;

use crate::objects::{Objects, ObjectsConfig};

/// How often an ingester looks for blocks to upload or delete.
const UPLOAD_EVERY: Duration = Duration::from_secs(1);

/// Upload counters of an ingester, over its tenants.
#[derive(Debug, Default)]
pub struct UploadStats {
    blocks: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
    deleted: AtomicU64,
}

impl UploadStats {
    /// For `/metrics`.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        vec![
            MetricFamily::counter(
                "strand_cluster_blocks_uploaded_total",
                "Blocks this ingester uploaded to object storage.",
                self.blocks.load(Ordering::Relaxed) as f64,
            ),
            MetricFamily::counter(
                "strand_cluster_block_upload_bytes_total",
                "Bytes of blocks this ingester uploaded to object storage.",
                self.bytes.load(Ordering::Relaxed) as f64,
            ),
            MetricFamily::counter(
                "strand_cluster_block_upload_failures_total",
                "Block uploads that failed (retried).",
                self.failures.load(Ordering::Relaxed) as f64,
            ),
            MetricFamily::counter(
                "strand_cluster_blocks_handed_over_total",
                "Blocks deleted from this ingester's disk after their handoff to object storage.",
                self.deleted.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

/// The now of the system clock, in Unix nanoseconds.
pub fn now_unix_nano() -> u64 {
    strand_store::now_unix_nano()
}

/// Copies one tenant's blocks of an ingester's store to object storage and deletes them
/// after the handoff (see the module docs).
pub struct Uploader {
    objects: Objects,
    store: Arc<Store>,
    /// `<tenant>/blocks`, relative to the objects' prefix.
    dir: PathBuf,
    cfg: ObjectsConfig,
    stats: Arc<UploadStats>,
}

impl Uploader {
    /// Uploads `store`'s blocks as `tenant`'s.
    pub fn new(
        objects: Objects,
        store: Arc<Store>,
        tenant: &str,
        cfg: ObjectsConfig,
        stats: Arc<UploadStats>,
    ) -> Self {
        Self { objects, store, dir: Path::new(tenant).join("blocks"), cfg, stats }
    }

    /// Uploads and deletes until `stop`; a failed upload is logged and tried again.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut failing = false;
        loop {
            match self.pass().await {
                Ok(()) => failing = false,
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(error = %e, "cluster: uploading blocks to object storage failed; retrying");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(UPLOAD_EVERY) => {}
            }
        }
    }

    /// Uploads every block not handed over yet and deletes those past their keep time.
    pub async fn pass(&self) -> anyhow::Result<()> {
        let keep = self.cfg.keep_after_handoff.0.as_nanos() as u64;
        for block in self.store.blocks() {
            match block.handoff() {
                None => self.upload(&block).await?,
                Some(h) if now_unix_nano() > h.saturating_add(keep) => {
                    let (store, id) = (self.store.clone(), block.meta.id.clone());
                    drop(block);
                    if tokio::task::spawn_blocking(move || store.remove_block(&id)).await?? {
                        self.stats.deleted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn key(&self, id: &str, name: &str) -> Key {
        self.objects.key(&self.dir.join(id).join(name))
    }

    async fn upload(&self, block: &Block) -> anyhow::Result<()> {
        let id = &block.meta.id;
        let meta_key = self.key(id, "meta.json");
        // Uploaded before a restart: its handoff stands.
        match self.objects.store.get(&meta_key).await {
            Ok(found) => {
                let meta: BlockMeta = serde_json::from_slice(&found.bytes().await?)?;
                if let Some(h) = meta.handoff_unix_nano {
                    block.set_handoff(h);
                    return Ok(());
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // Merged into another block by the compactor while this ingester was away: that
        // block holds the data; this copy goes.
        match self.objects.store.head(&self.key(id, crate::compact::COMPACTED_MARKER)).await {
            Ok(_) => {
                block.set_handoff(1);
                return Ok(());
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut bytes = 0;
        for f in &block.meta.files {
            bytes += upload_file(&self.objects, &block.dir.join(&f.name), self.key(id, &f.name)).await?;
        }
        let handoff = now_unix_nano() + self.cfg.handoff_delay.0.as_nanos() as u64;
        let mut meta = block.meta.clone();
        meta.handoff_unix_nano = Some(handoff);
        let json = serde_json::to_vec_pretty(&meta)?;
        bytes += json.len() as u64;
        self.objects.store.put(&meta_key, json.into()).await?;
        block.set_handoff(handoff);
        self.stats.blocks.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        tracing::debug!(block = %id, bytes, "cluster: block uploaded");
        Ok(())
    }
}

/// Streams a file to `key` (one PUT when small, a multipart upload otherwise).
pub(crate) async fn upload_file(objects: &Objects, path: &Path, key: Key) -> anyhow::Result<u64> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut out = object_store::buffered::BufWriter::new(objects.store.clone(), key);
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; 8 << 20];
        let mut filled = 0;
        while filled < buf.len() {
            let n = file.read(&mut buf[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        total += filled as u64;
        out.put(bytes::Bytes::from(buf)).await?;
    }
    out.shutdown().await?;
    Ok(total)
}

/// A querier's view of one tenant's blocks in object storage (see the module docs).
pub struct RemoteBlocks {
    set: BlockSet,
    listed: tokio::sync::Mutex<Option<Instant>>,
    cfg: ObjectsConfig,
}

impl RemoteBlocks {
    /// `tenant`'s blocks of the bucket `fs` reads; `store` gives the cache and read budgets.
    pub fn new(
        fs: Arc<dyn strand_store::fs::FileSystem>,
        tenant: &str,
        cfg: ObjectsConfig,
        store: StoreConfig,
    ) -> Self {
        Self { set: BlockSet::new(fs, Path::new(tenant), store), listed: Default::default(), cfg }
    }

    /// Lists the bucket again; blocking work runs on the blocking pool.
    pub async fn refresh(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut listed = self.listed.lock().await;
        let started = Instant::now();
        let me = self.clone();
        let changed = tokio::task::spawn_blocking(move || me.set.refresh())
            .await
            .map_err(|e| StoreError::Unavailable(format!("listing object storage: {e}")))??;
        if changed.added + changed.removed > 0 {
            tracing::debug!(
                added = changed.added,
                removed = changed.removed,
                "cluster: block listing changed"
            );
        }
        *listed = Some(started);
        Ok(())
    }

    /// Lists the bucket every third of `handoff_delay` for as long as the blocks are used.
    pub async fn keep_listing(blocks: std::sync::Weak<Self>) {
        let mut failing = false;
        loop {
            let Some(me) = blocks.upgrade() else { return };
            match me.refresh().await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cluster: listing blocks in object storage failed; retrying");
                    }
                    failing = true;
                }
            }
            let every = me.cfg.handoff_delay.0 / 3;
            drop(me);
            tokio::time::sleep(every).await;
        }
    }

    /// The blocks handed over by `clock`, with a listing recent enough to hold every one
    /// of them (listed first when the last listing is older than half of `handoff_delay`).
    pub async fn view_at(self: &Arc<Self>, clock: u64) -> Result<StoreView, StoreError> {
        let stale = self.listed.lock().await.is_none_or(|at| at.elapsed() > self.cfg.handoff_delay.0 / 2);
        if stale {
            self.refresh().await?;
        }
        Ok(self.set.view(Visibility::HandedOverBy(clock)))
    }

    /// The blocks open now.
    pub fn blocks(&self) -> Vec<Arc<Block>> {
        self.set.blocks()
    }

    /// The block set read.
    pub fn set(&self) -> &BlockSet {
        &self.set
    }
}
