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
        let mut first = None;
        for block in self.store.blocks() {
            let done = match block.handoff() {
                None => self.upload(&block).await,
                Some(h) if now_unix_nano() > h.saturating_add(keep) => {
                    let (store, id) = (self.store.clone(), block.meta.id.clone());
                    drop(block);
                    match tokio::task::spawn_blocking(move || store.remove_block(&id)).await {
                        Ok(Ok(removed)) => {
                            self.stats.deleted.fetch_add(u64::from(removed), Ordering::Relaxed);
                            Ok(())
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(e) => Err(e.into()),
                    }
                }
                Some(_) => Ok(()),
            };
            // One block that fails does not hold up the others.
            if let Err(e) = done {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Records `block`'s handoff time in its directory and in memory.
    async fn record(&self, block: &Arc<Block>, handoff: u64) -> anyhow::Result<()> {
        let b = block.clone();
        tokio::task::spawn_blocking(move || b.record_handoff(handoff)).await??;
        Ok(())
    }

    fn key(&self, id: &str, name: &str) -> Key {
        self.objects.key(&self.dir.join(id).join(name))
    }

    async fn upload(&self, block: &Arc<Block>) -> anyhow::Result<()> {
        let id = &block.meta.id;
        let meta_key = self.key(id, "meta.json");
        // Uploaded before a restart: its handoff stands.
        match self.objects.store.get(&meta_key).await {
            Ok(found) => {
                let meta: BlockMeta = serde_json::from_slice(&found.bytes().await?)?;
                if meta.files != block.meta.files {
                    anyhow::bail!(
                        "object storage holds another block under id {id}: this one is not uploaded (its data stays here)"
                    );
                }
                if let Some(h) = meta.handoff_unix_nano {
                    return self.record(block, h).await;
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // Merged into another block by the compactor while this ingester was away: that
        // block holds the data; this copy goes.
        match self.objects.store.head(&self.key(id, crate::compact::COMPACTED_MARKER)).await {
            Ok(_) => return self.record(block, 1).await,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut bytes = 0;
        for f in &block.meta.files {
            bytes += upload_file(&self.objects, &block.dir.join(&f.name), self.key(id, &f.name)).await?;
        }
        let delay = self.cfg.handoff_delay.0;
        let handoff = now_unix_nano() + delay.as_nanos() as u64;
        let mut meta = block.meta.clone();
        meta.handoff_unix_nano = Some(handoff);
        let json = serde_json::to_vec_pretty(&meta)?;
        bytes += json.len() as u64;
        let started = Instant::now();
        self.objects.store.put(&meta_key, json.into()).await?;
        // Queriers must have listed the block by its handoff (they list every third of the
        // delay): an upload this slow eats into that margin.
        if started.elapsed() > delay / 4 {
            tracing::warn!(block = %id, took_ms = started.elapsed().as_millis() as u64, "cluster: writing a block's meta.json took over a quarter of handoff_delay; raise cluster.objects.handoff_delay");
        }
        self.record(block, handoff).await?;
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
    /// One listing at a time.
    listing: tokio::sync::Mutex<()>,
    /// When the last listing that succeeded started, in milliseconds after `epoch`, plus
    /// one (0: never).
    listed_ms: AtomicU64,
    epoch: Instant,
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
        Self {
            set: BlockSet::new(fs, Path::new(tenant), store),
            listing: Default::default(),
            listed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            cfg,
        }
    }

    /// Lists the bucket again; blocking work runs on the blocking pool.
    pub async fn refresh(self: &Arc<Self>) -> Result<(), StoreError> {
        self.refresh_if_older(None).await
    }

    /// How long ago the last listing that succeeded started (`None`: never).
    fn listing_age(&self) -> Option<Duration> {
        let at = self.listed_ms.load(Ordering::Acquire);
        (at != 0).then(|| self.epoch.elapsed().saturating_sub(Duration::from_millis(at - 1)))
    }

    /// Lists the bucket unless a listing started within `fresh` meanwhile (`None`: always).
    async fn refresh_if_older(self: &Arc<Self>, fresh: Option<Duration>) -> Result<(), StoreError> {
        let _one = self.listing.lock().await;
        if let Some(fresh) = fresh
            && self.listing_age().is_some_and(|age| age <= fresh)
        {
            return Ok(());
        }
        let started = self.epoch.elapsed();
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
        self.listed_ms.store(started.as_millis() as u64 + 1, Ordering::Release);
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
        let fresh = self.cfg.handoff_delay.0 / 2;
        if self.listing_age().is_none_or(|age| age > fresh) {
            self.refresh_if_older(Some(fresh)).await?;
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
