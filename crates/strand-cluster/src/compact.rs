//! Compaction and retention of the blocks in object storage, by one ingester at a time.
//!
//! Every ingester runs a [`Compactor`]; every `compaction_interval` each tries to take the
//! `compactor` lease in the leases bucket (it expires `lease_ttl` after its last renewal,
//! renewed every third of it while held). The holder, for each tenant in the bucket:
//!
//! - deletes the blocks whose newest span was received longer ago than
//!   `storage.retention`, then the oldest while the tenant's blocks take more than
//!   `cluster.objects.max_size`;
//! - merges runs of small blocks as the embedded store does (`storage.compaction_*`),
//!   only blocks no ingester answers for any more (past their handoff and
//!   `keep_after_handoff`): it writes the merged block on local disk, uploads it (its
//!   `meta.json`, naming the inputs in `compacted_from` and carrying their latest handoff
//!   time, last), and then deletes the inputs. From the moment the merged `meta.json` is
//!   there, readers leave the inputs out; a reader that still had one open and finds it
//!   gone lists again.
//!
//! A deleted input leaves a `compacted` marker in its directory, so an ingester that comes
//! back with its local copy after a long absence does not upload it again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use object_store::ObjectStoreExt;
use object_store::path::Path as Key;
use strand_core::metrics::MetricFamily;
use strand_store::block::Block;
use strand_store::{BlockSet, StoreConfig};

use crate::bus::Bus;
use crate::handoff::now_unix_nano;
use crate::objects::{ObjectFs, Objects, ObjectsConfig};

/// The lease key of the compactor.
const LEASE_KEY: &str = "compactor";
/// The marker a compacted input leaves behind.
pub(crate) use strand_store::engine::COMPACTED_MARKER;
/// The most merges one tenant gets per pass (the next pass goes on).
const MERGES_PER_PASS: usize = 16;

/// Compaction counters.
#[derive(Debug, Default)]
pub struct CompactionStats {
    compactions: AtomicU64,
    merged_blocks: AtomicU64,
    retention_deleted: AtomicU64,
    failures: AtomicU64,
}

impl CompactionStats {
    /// For `/metrics`.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let c = |name: &str, help: &str, v: &AtomicU64| {
            MetricFamily::counter(name, help, v.load(Ordering::Relaxed) as f64)
        };
        vec![
            c(
                "strand_cluster_compactions_total",
                "Merges of blocks in object storage this ingester made as the compactor.",
                &self.compactions,
            ),
            c(
                "strand_cluster_compacted_blocks_total",
                "Blocks in object storage merged into others by this ingester.",
                &self.merged_blocks,
            ),
            c(
                "strand_cluster_retention_deleted_blocks_total",
                "Blocks in object storage this ingester deleted for retention.",
                &self.retention_deleted,
            ),
            c(
                "strand_cluster_compaction_failures_total",
                "Compaction or retention passes over object storage that failed (retried).",
                &self.failures,
            ),
        ]
    }
}

/// Compaction and retention of object storage (see the module docs).
pub struct Compactor {
    bus: Arc<Bus>,
    objects: Objects,
    fs: Arc<ObjectFs>,
    me: String,
    cfg: ObjectsConfig,
    store: StoreConfig,
    staging: PathBuf,
    stats: Arc<CompactionStats>,
    /// Each tenant's blocks, kept open between passes.
    sets: parking_lot::Mutex<std::collections::HashMap<String, Arc<BlockSet>>>,
    /// Blocks (tenant, id) a merge failed with, and when: left out of compaction for
    /// [`RETRY_FAILED`], so one unreadable object does not stop every later merge (runs
    /// are chosen oldest first).
    failed: parking_lot::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
}

/// How long blocks a merge failed with are left out of compaction.
const RETRY_FAILED: std::time::Duration = std::time::Duration::from_secs(600);

impl Compactor {
    /// The compactor of ingester `me`: reads blocks through `fs`, merges them in
    /// `staging` (a local directory), by `store`'s compaction bounds and retention.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bus: Arc<Bus>,
        objects: Objects,
        fs: Arc<ObjectFs>,
        me: String,
        cfg: ObjectsConfig,
        store: StoreConfig,
        staging: PathBuf,
        stats: Arc<CompactionStats>,
    ) -> Self {
        Self {
            bus,
            objects,
            fs,
            me,
            cfg,
            store,
            staging,
            stats,
            sets: Default::default(),
            failed: Default::default(),
        }
    }

    /// Tries for the lease every `compaction_interval` and works while holding it, until
    /// `stop`.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let me = Arc::new(self);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(me.cfg.compaction_interval.0) => {}
            }
            let Some(revision) = me.take_lease().await else { continue };
            let lost = Arc::new(AtomicBool::new(false));
            let revision = Arc::new(AtomicU64::new(revision));
            let renewing = tokio::spawn(me.clone().keep_lease(revision.clone(), lost.clone()));
            let work = async {
                if let Err(e) = me.pass(&lost).await {
                    me.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %format!("{e:#}"), "cluster: compacting object storage failed; retrying later");
                }
            };
            let stopping = tokio::select! {
                () = &mut stop => true,
                () = work => false,
            };
            renewing.abort();
            // Only our own lease: one a successor holds stays.
            let held = Some(revision.load(Ordering::Relaxed));
            if !lost.load(Ordering::Relaxed) {
                let _ = me.bus.leases.delete_expect_revision(LEASE_KEY, held).await;
            }
            if stopping {
                return;
            }
        }
    }

    /// The lease's revision when this ingester holds it now.
    async fn take_lease(&self) -> Option<u64> {
        use async_nats::jetstream::kv::{CreateErrorKind, Operation};
        match self.bus.leases.create(LEASE_KEY, self.me.clone().into()).await {
            Ok(revision) => Some(revision),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                // Its own lease from before a restart: taken up again.
                let entry = self.bus.leases.entry(LEASE_KEY).await.ok()??;
                if entry.operation == Operation::Put && entry.value == self.me.as_bytes() {
                    self.bus.leases.update(LEASE_KEY, self.me.clone().into(), entry.revision).await.ok()
                } else {
                    None
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster: compactor lease not taken");
                None
            }
        }
    }

    /// Renews the lease every third of `lease_ttl`; sets `lost` when it cannot.
    async fn keep_lease(self: Arc<Self>, revision: Arc<AtomicU64>, lost: Arc<AtomicBool>) {
        let ttl = self.bus.cfg.lease_ttl.0;
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(ttl / 3).await;
            let sent = tokio::time::Instant::now();
            let held = revision.load(Ordering::Relaxed);
            match self.bus.leases.update(LEASE_KEY, self.me.clone().into(), held).await {
                Ok(r) => {
                    revision.store(r, Ordering::Relaxed);
                    renewed = sent;
                }
                Err(e)
                    if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision
                        || renewed.elapsed() >= ttl * 2 / 3 =>
                {
                    tracing::warn!(error = %e, "cluster: lost the compactor lease; stopping before the next change");
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
                Err(_) => {}
            }
        }
    }

    /// One pass over every tenant of the bucket; a tenant that fails does not hold up
    /// the others (the first failure is returned).
    async fn pass(&self, lost: &AtomicBool) -> anyhow::Result<()> {
        let listed = self.objects.store.list_with_delimiter(Some(&self.objects.prefix)).await?;
        let mut first = None;
        for tenant in listed.common_prefixes.iter().filter_map(|p| p.filename()) {
            if let Err(e) = self.tenant(tenant, lost).await {
                tracing::warn!(tenant, error = %format!("{e:#}"), "cluster: compacting a tenant's blocks failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn tenant(&self, tenant: &str, lost: &AtomicBool) -> anyhow::Result<()> {
        let set = self
            .sets
            .lock()
            .entry(tenant.to_owned())
            .or_insert_with(|| {
                Arc::new(BlockSet::new(self.fs.clone(), Path::new(tenant), self.store.clone()))
            })
            .clone();
        let refresh = |set: Arc<BlockSet>| async move {
            anyhow::Ok(tokio::task::spawn_blocking(move || set.refresh()).await??)
        };
        let refreshed = refresh(set.clone()).await?;
        // Inputs of a merge that did not finish deleting them.
        for id in &refreshed.replaced {
            self.delete(tenant, id, true).await?;
        }
        let now = now_unix_nano();
        let horizon = now.saturating_sub(self.store.retention.as_nanos() as u64);
        if lost.load(Ordering::Relaxed) {
            return Ok(());
        }
        let budget = self.cfg.max_size.map(|b| b.0);
        let deleted = apply_retention(&self.objects, &set, tenant, horizon, budget).await?;
        self.stats.retention_deleted.fetch_add(deleted as u64, Ordering::Relaxed);
        let settled = self.cfg.keep_after_handoff.0.as_nanos() as u64;
        for _ in 0..MERGES_PER_PASS {
            refresh(set.clone()).await?;
            let now = now_unix_nano();
            let failed = {
                let mut failed = self.failed.lock();
                failed.retain(|_, at| at.elapsed() < RETRY_FAILED);
                failed.keys().filter(|(t, _)| t == tenant).map(|(_, id)| id.clone()).collect::<Vec<_>>()
            };
            let run = set.compaction_run(
                |b: &Block| {
                    b.meta.max_received_unix_nano >= horizon
                        && b.handoff().is_none_or(|h| now > h.saturating_add(settled))
                },
                |b: &Block| failed.contains(&b.meta.id),
            );
            if run.len() < 2 || lost.load(Ordering::Relaxed) {
                return Ok(());
            }
            let staging = self.staging.join(tenant);
            let (dir, cfg, inputs) = (staging.clone(), self.store.clone(), run.clone());
            let merged = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&dir);
                strand_store::merge_blocks(&dir, &inputs, cfg)
            })
            .await?;
            let merged = merged.inspect_err(|e| {
                let mut failed = self.failed.lock();
                for b in strand_store::failed_inputs(e, &run) {
                    tracing::warn!(tenant, block = %b.meta.id, "cluster: leaving a block a merge failed with out of compaction for ten minutes");
                    failed.insert((tenant.to_owned(), b.meta.id.clone()), std::time::Instant::now());
                }
            })?;
            let result = self.publish(tenant, &merged, &run, lost).await;
            drop(merged);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&staging)).await;
            result?;
        }
        Ok(())
    }

    /// Uploads `merged` (meta.json last) and deletes its inputs.
    async fn publish(
        &self,
        tenant: &str,
        merged: &Block,
        inputs: &[Arc<Block>],
        lost: &AtomicBool,
    ) -> anyhow::Result<()> {
        let dir = Path::new(tenant).join("blocks").join(&merged.meta.id);
        for f in &merged.meta.files {
            crate::handoff::upload_file(
                &self.objects,
                &merged.dir.join(&f.name),
                self.objects.key(&dir.join(&f.name)),
            )
            .await?;
        }
        if lost.load(Ordering::Relaxed) {
            anyhow::bail!("the compactor lease was lost before the merged block was published");
        }
        // Seen from its inputs' last handoff on: a read at an earlier clock (a querier
        // behind) reads the inputs' data from their ingesters as long as they keep it.
        let mut meta = merged.meta.clone();
        meta.handoff_unix_nano = inputs.iter().filter_map(|b| b.handoff()).max();
        let json = serde_json::to_vec_pretty(&meta)?;
        self.objects.store.put(&self.objects.key(&dir.join("meta.json")), json.into()).await?;
        for b in inputs {
            self.delete(tenant, &b.meta.id, true).await?;
        }
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        self.stats.merged_blocks.fetch_add(inputs.len() as u64, Ordering::Relaxed);
        tracing::info!(tenant, inputs = inputs.len(), spans = merged.meta.span_count, block = %merged.meta.id, "cluster: compacted blocks in object storage");
        Ok(())
    }

    async fn delete(&self, tenant: &str, id: &str, compacted: bool) -> anyhow::Result<()> {
        delete_block(&self.objects, tenant, id, compacted).await
    }
}

/// Retention of `tenant`'s blocks of `set`: deletes those whose newest span was received
/// before `horizon`, then, oldest data first, those over `budget` bytes; returns how many.
pub async fn apply_retention(
    objects: &Objects,
    set: &BlockSet,
    tenant: &str,
    horizon: u64,
    budget: Option<u64>,
) -> anyhow::Result<usize> {
    let blocks = set.blocks();
    let mut total: u64 = blocks.iter().map(|b| b.disk_bytes).sum();
    let mut deleted = 0;
    // Oldest data first (the set's order).
    for b in &blocks {
        let expired = b.meta.max_received_unix_nano < horizon;
        if !expired && budget.is_none_or(|budget| total <= budget) {
            continue;
        }
        delete_block(objects, tenant, &b.meta.id, false).await?;
        total = total.saturating_sub(b.disk_bytes);
        deleted += 1;
        let why = if expired { "storage.retention" } else { "cluster.objects.max_size" };
        tracing::info!(tenant, block = %b.meta.id, why, "cluster: deleted a block in object storage for retention");
    }
    Ok(deleted)
}

/// Deletes block `id` of `tenant`: `meta.json` first (readers stop listing it), then the
/// rest; a compacted input leaves its marker.
async fn delete_block(objects: &Objects, tenant: &str, id: &str, compacted: bool) -> anyhow::Result<()> {
    let dir = Path::new(tenant).join("blocks").join(id);
    let key = |name: &str| objects.key(&dir.join(name));
    if compacted {
        objects.store.put(&key(COMPACTED_MARKER), bytes::Bytes::from_static(b"{}").into()).await?;
    }
    delete_quietly(objects, &key("meta.json")).await?;
    let prefix = objects.key(&dir);
    let listed = objects.store.list_with_delimiter(Some(&prefix)).await?;
    for o in listed.objects {
        if o.location.filename() != Some(COMPACTED_MARKER) {
            delete_quietly(objects, &o.location).await?;
        }
    }
    Ok(())
}

/// Deletes an object; one already gone is fine.
async fn delete_quietly(objects: &Objects, key: &Key) -> object_store::Result<()> {
    match objects.store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
