//! Reads with a [`Visibility`], on tokio's blocking pool; [`StoreView`], a store's reads at
//! a clock; and [`BlockSet`], the blocks of a directory read without a WAL or head (a
//! cluster querier's view of object storage).

use super::*;

pub(super) fn get_trace(
    inner: &Arc<Inner>,
    vis: Visibility,
    id: TraceId,
) -> BoxFuture<'static, Result<Option<Trace>, StoreError>> {
    blocking(inner, move |i| i.get_trace(id, vis))
}

pub(super) fn get_traces(
    inner: &Arc<Inner>,
    vis: Visibility,
    ids: Vec<TraceId>,
) -> BoxFuture<'static, Result<Vec<Trace>, StoreError>> {
    blocking(inner, move |i| i.get_traces(&ids, vis))
}

pub(super) fn holds(
    inner: &Arc<Inner>,
    vis: Visibility,
    ids: Vec<TraceId>,
) -> BoxFuture<'static, Result<Vec<bool>, StoreError>> {
    blocking(inner, move |i| i.holds(&ids, vis))
}

pub(super) fn find_traces(
    inner: &Arc<Inner>,
    vis: Visibility,
    query: TraceQuery,
) -> BoxFuture<'static, Result<SearchPage, StoreError>> {
    blocking(inner, move |i| i.search(&query, vis))
}

pub(super) fn services(
    inner: &Arc<Inner>,
    vis: Visibility,
    range: TimeRange,
) -> BoxFuture<'static, Result<Vec<String>, StoreError>> {
    blocking(inner, move |i| i.with_sources(None, vis, range, |s, _| s.services(range)))
}

pub(super) fn operations(
    inner: &Arc<Inner>,
    vis: Visibility,
    service: String,
    range: TimeRange,
) -> BoxFuture<'static, Result<Vec<Operation>, StoreError>> {
    blocking(inner, move |i| i.with_sources(None, vis, range, |s, _| s.operations(&service, range)))
}

pub(super) fn attributes(
    inner: &Arc<Inner>,
    vis: Visibility,
    service: Option<String>,
    range: TimeRange,
) -> BoxFuture<'static, Result<Vec<(String, String)>, StoreError>> {
    blocking(inner, move |i| i.with_sources(None, vis, range, |s, _| s.attributes(service.as_deref(), range)))
}

pub(super) fn dependencies(
    inner: &Arc<Inner>,
    vis: Visibility,
    range: TimeRange,
) -> BoxFuture<'static, Result<Vec<DependencyEdge>, StoreError>> {
    blocking(inner, move |i| i.with_sources(None, vis, range, |s, _| s.dependencies(range)))
}

pub(super) fn trace_logs(
    inner: &Arc<Inner>,
    vis: Visibility,
    id: TraceId,
    span: Option<SpanId>,
) -> BoxFuture<'static, Result<Vec<StoredLog>, StoreError>> {
    blocking(inner, move |i| i.trace_logs(id, span, vis))
}

pub(super) fn find_logs(
    inner: &Arc<Inner>,
    vis: Visibility,
    query: LogQuery,
) -> BoxFuture<'static, Result<LogPage, StoreError>> {
    blocking(inner, move |i| i.find_logs(&query, vis))
}

/// A store's reads with a [`Visibility`]: what a cluster ingester answers a querier.
/// Writes are refused: it is a view.
#[derive(Clone)]
pub struct StoreView {
    inner: Arc<Inner>,
    vis: Visibility,
}

impl Store {
    /// The store's reads, seeing the blocks `vis` admits.
    pub fn view(&self, vis: Visibility) -> StoreView {
        StoreView { inner: self.inner.clone(), vis }
    }

    /// The store's blocks, oldest data first.
    pub fn blocks(&self) -> Vec<Arc<Block>> {
        self.inner.state.read().blocks.clone()
    }

    /// Deletes block `id` (a cluster ingester's block, once object storage holds it and
    /// no read can want this copy). `false` when the store has no such block.
    pub fn remove_block(&self, id: &str) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let _maintenance = inner.maintenance.lock();
        let block = {
            let mut st = inner.state.write();
            let Some(at) = st.blocks.iter().position(|b| b.meta.id == id) else { return Ok(false) };
            st.blocks.remove(at)
        };
        maintenance::delete_block(inner.fs.as_ref(), &block.dir)
            .map_err(|source| StoreError::Io { path: block.dir.display().to_string(), source })?;
        Ok(true)
    }
}

/// The reads of a set of blocks found in a directory (a prefix of object storage, through a
/// [`FileSystem`] over it): no WAL, head, cut or maintenance; [`BlockSet::refresh`] picks up
/// blocks added and forgets blocks gone. A block replaced by compaction (named in another's
/// `compacted_from`) is left out. Nothing in the directory is changed.
pub struct BlockSet {
    inner: Arc<Inner>,
    /// Blocks that failed to open, by id, with why (tried again at each refresh).
    failed: parking_lot::Mutex<std::collections::BTreeMap<String, String>>,
}

/// What a [`BlockSet::refresh`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Blocks opened.
    pub added: usize,
    /// Blocks forgotten (deleted, or replaced by compaction).
    pub removed: usize,
    /// Blocks that could not be opened.
    pub failed: usize,
    /// Blocks still there though another names them in its `compacted_from` (a
    /// compaction that did not finish deleting its inputs): left out of reads.
    pub replaced: Vec<String>,
}

/// The marker a block merged into another leaves in its directory (see
/// `strand_cluster::compact`).
pub const COMPACTED_MARKER: &str = "compacted";

impl BlockSet {
    /// The blocks under `<root>/blocks` of `fs`, none opened until [`BlockSet::refresh`].
    /// `cfg` gives the cache and read budgets.
    pub fn new(fs: Arc<dyn FileSystem>, root: &Path, cfg: StoreConfig) -> Self {
        let cache = Arc::new(BlockCache::new(cfg.cache_bytes));
        let inner = Arc::new(Inner {
            fs,
            cache,
            root: root.to_path_buf(),
            reads: ReadBudget { limit: cfg.max_read_bytes, in_use: Mutex::new(0) },
            cfg,
            state: RwLock::new(State::default()),
            stats: StoreStats::default(),
            maintenance: Mutex::new(()),
            compaction: Mutex::new(()),
            scrub_later: Mutex::new(std::collections::HashMap::new()),
            compaction_later: Mutex::new(std::collections::HashMap::new()),
            open_traces: Default::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            health: Health::default(),
            head_bytes: AtomicU64::new(0),
            frozen_bytes: AtomicU64::new(0),
            over_disk_budget: AtomicU64::new(0),
        });
        Self { inner, failed: Default::default() }
    }

    /// Lists the directory and brings the set up to date; blocking (reads each new block's
    /// small files and Parquet footers). A block is there while its `meta.json` is (written
    /// last when a block is uploaded, deleted first when it goes) and no `compacted`
    /// marker says it was merged into another; a block whose `meta.json` names another id
    /// than its directory is not read.
    pub fn refresh(&self) -> Result<Refreshed, StoreError> {
        let inner = &self.inner;
        let _one_at_a_time = inner.maintenance.lock();
        let dir = inner.root.join("blocks");
        let files = match inner.fs.list_tree(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(StoreError::Io { path: dir.display().to_string(), source }),
        };
        // Block directory → (has meta.json, has the compacted marker).
        let mut found: std::collections::BTreeMap<String, (bool, bool)> = Default::default();
        for f in &files {
            let Ok(rel) = f.strip_prefix(&dir) else { continue };
            let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
            let (Some(name), Some(file), None) = (parts.next(), parts.next(), parts.next()) else { continue };
            if name.starts_with('.') {
                continue;
            }
            let e = found.entry(name).or_default();
            e.0 |= file == "meta.json";
            e.1 |= file == COMPACTED_MARKER;
        }
        let current: std::collections::HashMap<String, Arc<Block>> =
            inner.state.read().blocks.iter().map(|b| (b.meta.id.clone(), b.clone())).collect();
        let mut out = Refreshed::default();
        let mut blocks = Vec::with_capacity(found.len());
        let mut failed = std::collections::BTreeMap::new();
        for (name, (has_meta, merged)) in found {
            if !has_meta || merged {
                continue;
            }
            if let Some(b) = current.get(&name) {
                blocks.push(b.clone());
                continue;
            }
            let opened = Block::open(&inner.fs, &dir.join(&name), &inner.cache, Verify::Lazy).and_then(|b| {
                if b.meta.id == name {
                    Ok(b)
                } else {
                    Err(StoreError::Corrupt {
                        path: dir.join(&name).join("meta.json").display().to_string(),
                        reason: format!("names block {}", b.meta.id),
                    })
                }
            });
            match opened {
                Ok(b) => {
                    out.added += 1;
                    blocks.push(Arc::new(b));
                }
                Err(e) => {
                    if !self.failed.lock().contains_key(&name) {
                        warn!(block = %name, error = %e, "could not open a block of object storage");
                    }
                    failed.insert(name, e.to_string());
                    out.failed += 1;
                }
            }
        }
        let replaced: std::collections::HashSet<String> =
            blocks.iter().flat_map(|b| b.meta.compacted_from.iter().cloned()).collect();
        out.replaced =
            blocks.iter().filter(|b| replaced.contains(&b.meta.id)).map(|b| b.meta.id.clone()).collect();
        blocks.retain(|b| !replaced.contains(&b.meta.id));
        blocks.sort_by(by_data_age);
        out.removed = current.keys().filter(|id| !blocks.iter().any(|b| &&b.meta.id == id)).count();
        inner.state.write().blocks = blocks;
        *self.failed.lock() = failed;
        Ok(out)
    }

    /// The set's reads, seeing the blocks `vis` admits.
    pub fn view(&self, vis: Visibility) -> StoreView {
        StoreView { inner: self.inner.clone(), vis }
    }

    /// The blocks open now.
    pub fn blocks(&self) -> Vec<Arc<Block>> {
        self.inner.state.read().blocks.clone()
    }

    /// Blocks that could not be opened at the last refresh, with why.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.failed.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The oldest run of blocks `eligible` admits that compaction would merge (by the
    /// rules and bounds of the set's [`StoreConfig`]); fewer than two: nothing to merge.
    /// Blocks not yet eligible hold their compaction window open; blocks `left_out` (a
    /// merge failed with them) are left out as if absent.
    pub fn compaction_run(
        &self,
        eligible: impl Fn(&Block) -> bool,
        left_out: impl Fn(&Block) -> bool,
    ) -> Vec<Arc<Block>> {
        let st = self.inner.state.read();
        let now = self.inner.cfg.clock.now_unix_nano();
        let blocks = st.blocks.iter().filter(|b| !left_out(b));
        maintenance::choose_run(blocks, eligible, &self.inner.cfg, now, u64::MAX)
    }
}

/// Merges `blocks` (oldest data first; from anywhere, object storage included) into one
/// block written on local disk under `<dir>/blocks/`, as compaction writes it (its
/// `compacted_from` names them); blocking. Not paced: a cluster's compactor does nothing
/// else, and its stop would wait for a paced merge.
pub fn merge_blocks(dir: &Path, blocks: &[Arc<Block>], cfg: StoreConfig) -> Result<Block, StoreError> {
    let cfg = StoreConfig { compaction_bytes_per_second: 0, ..cfg };
    let staging = BlockSet::new(Arc::new(crate::fs::StdFs), dir, cfg);
    let blocks_dir = dir.join("blocks");
    staging
        .inner
        .fs
        .create_dir_all(&blocks_dir)
        .map_err(|source| StoreError::Io { path: blocks_dir.display().to_string(), source })?;
    maintenance::merge(&staging.inner, blocks)?
        .map(|(block, _)| block)
        .ok_or_else(|| StoreError::Unavailable("the merge was stopped".into()))
}

impl LogStore for StoreView {
    fn write_logs(&self, _: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Err(SinkError::Unavailable("a store view takes no writes".into())) })
    }

    fn trace_logs(
        &self,
        trace_id: TraceId,
        span_id: Option<SpanId>,
    ) -> BoxFuture<'_, Result<Vec<StoredLog>, StoreError>> {
        trace_logs(&self.inner, self.vis, trace_id, span_id)
    }

    fn find_logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        find_logs(&self.inner, self.vis, query)
    }
}

impl TraceReader for StoreView {
    fn get_trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        get_trace(&self.inner, self.vis, trace_id)
    }

    fn get_traces(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Trace>, StoreError>> {
        get_traces(&self.inner, self.vis, ids)
    }

    fn holds(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<bool>, StoreError>> {
        holds(&self.inner, self.vis, ids)
    }

    fn find_traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        find_traces(&self.inner, self.vis, query)
    }

    fn services(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        services(&self.inner, self.vis, range)
    }

    fn operations(
        &self,
        service: String,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        operations(&self.inner, self.vis, service, range)
    }

    fn attributes(
        &self,
        service: Option<String>,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        attributes(&self.inner, self.vis, service, range)
    }

    fn dependencies(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        dependencies(&self.inner, self.vis, range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;
    use crate::testdata::{batch, trace_id};

    fn found(view: &StoreView) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(view.get_trace(trace_id(1))).expect("read").is_some()
    }

    #[test]
    fn a_handed_over_block_is_read_from_one_side_of_its_handoff_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
        rt.block_on(async {
            store.append(batch(1, 4)).await.expect("write");
            store.flush().await.expect("flush");
        });
        let blocks = store.blocks();
        assert_eq!(blocks.len(), 1);
        let block = &blocks[0];
        assert_eq!(block.handoff(), None);
        assert!(found(&store.view(Visibility::HeldAt(5))), "no handoff: the store answers");
        block.set_handoff(100);
        assert!(found(&store.view(Visibility::HeldAt(99))), "before the handoff");
        assert!(!found(&store.view(Visibility::HeldAt(100))), "from the handoff on");
        assert!(found(&store.view(Visibility::All)));

        // The same directory read as a block set (a querier's view of object storage).
        let set = BlockSet::new(Arc::new(StdFs), dir.path(), StoreConfig::default());
        assert_eq!(set.refresh().expect("refresh"), Refreshed { added: 1, ..Refreshed::default() });
        assert_eq!(set.refresh().expect("refresh"), Refreshed::default(), "nothing new");
        // A block without a handoff time (compacted in object storage) is always read.
        assert!(found(&set.view(Visibility::HandedOverBy(0))));
        set.blocks()[0].set_handoff(100);
        assert!(!found(&set.view(Visibility::HandedOverBy(99))), "the ingester still answers");
        assert!(found(&set.view(Visibility::HandedOverBy(100))));

        assert!(store.remove_block(&block.meta.id).expect("remove"));
        assert!(!store.remove_block(&block.meta.id).expect("remove again"), "gone");
        assert!(!found(&store.view(Visibility::All)));
        assert_eq!(set.refresh().expect("refresh").removed, 1);
        assert!(set.blocks().is_empty());
        drop(rt);
    }

    #[test]
    fn handoffs_survive_a_restart_and_retention_keeps_what_is_not_handed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let clock = Arc::new(strand_core::ManualClock::new(crate::conformance::START));
        let cfg = StoreConfig {
            retention: std::time::Duration::from_secs(3600),
            keep_until_handed_over: true,
            clock: clock.clone(),
            ..StoreConfig::default()
        };
        let store = Store::open(Arc::new(StdFs), dir.path(), cfg.clone()).expect("open");
        rt.block_on(async {
            store.append(batch(1, 4)).await.expect("write");
            store.flush().await.expect("flush");
            store.append(batch(2, 4)).await.expect("write");
            store.flush().await.expect("flush");
        });
        let blocks = store.blocks();
        blocks[0].record_handoff(77).expect("record");
        drop(blocks);
        store.close();
        drop(store);
        clock.advance(std::time::Duration::from_secs(7200));
        let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("reopen");
        let blocks = store.blocks();
        assert_eq!(blocks.iter().map(|b| b.handoff()).collect::<Vec<_>>(), vec![Some(77), None]);
        drop(blocks);
        rt.block_on(store.maintain()).expect("maintain");
        // Both are past retention; only the one object storage has goes.
        assert_eq!(store.blocks().iter().map(|b| b.handoff()).collect::<Vec<_>>(), vec![None]);
        drop(rt);
    }

    #[test]
    fn a_block_set_reads_only_whole_unmerged_blocks_named_as_their_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
        for seed in 1..=3 {
            rt.block_on(async {
                store.append(batch(seed, 2)).await.expect("write");
                store.flush().await.expect("flush");
            });
        }
        let ids: Vec<String> = store.blocks().iter().map(|b| b.meta.id.clone()).collect();
        store.close();
        drop(store);
        let blocks = dir.path().join("blocks");
        // Being uploaded: no meta.json yet.
        std::fs::remove_file(blocks.join(&ids[0]).join("meta.json")).expect("remove");
        // Merged into another.
        std::fs::write(blocks.join(&ids[1]).join(COMPACTED_MARKER), b"{}").expect("marker");
        // A copy under another name.
        let copy = blocks.join("not-its-id");
        std::fs::create_dir(&copy).expect("dir");
        for f in std::fs::read_dir(blocks.join(&ids[2])).expect("ls").flatten() {
            std::fs::copy(f.path(), copy.join(f.file_name())).expect("copy");
        }
        let set = BlockSet::new(Arc::new(StdFs), dir.path(), StoreConfig::default());
        let r = set.refresh().expect("refresh");
        assert_eq!((r.added, r.failed), (1, 1), "{r:?}");
        assert_eq!(set.blocks().iter().map(|b| b.meta.id.clone()).collect::<Vec<_>>(), vec![ids[2].clone()]);
        assert!(set.failed()[0].1.contains("names block"), "{:?}", set.failed());
        drop(rt);
    }
}
