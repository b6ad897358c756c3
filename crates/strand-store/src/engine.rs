//! The store engine: WAL writer thread, head, block flusher, compaction and retention.
//!
//! ```text
//! write(batch) ──► bounded queue ──► WAL thread: append records of a group, one fsync,
//!                                      insert into head, answer every writer
//!                                      │ head too big / too old / flush asked
//!                                      ▼
//!                   rotate WAL, freeze head ──► flusher thread: encode block, write it
//!                                               atomically, publish, delete sealed WAL
//!                                               segments; also compaction and retention
//! ```
//!
//! Reads see the live head, frozen heads still being written, and blocks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use strand_core::{
    BoxFuture, Clock, DependencyEdge, MetricFamily, Operation, SearchPage, SinkError, SpanBatch, SpanSink,
    StoreError, SystemClock, TimeRange, Trace, TraceId, TraceQuery, TraceReader, TraceStore, TraceWriter,
};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::block::{Block, BlockBuilder, FileChecksum};
use crate::fs::FileSystem;
use crate::head::{Head, HeadIndex, decode_trace};
use crate::index::{IndexBuilder, IndexView, SearchIndex};
use crate::search::Sources;
use crate::wal::{Wal, WalRecord};

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every acknowledgement (group commit shares one fsync among concurrent writes).
    Always,
    /// Every interval; a crash can lose what was acknowledged within the last interval.
    Interval(Duration),
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// WAL fsync policy.
    pub fsync: FsyncPolicy,
    /// Cut the head into a block at this many spans.
    pub head_max_spans: usize,
    /// Cut the head into a block at this many encoded bytes.
    pub head_max_bytes: u64,
    /// Cut the head into a block when its oldest span was received this long ago.
    pub head_max_age: Duration,
    /// Delete blocks whose newest span was received longer ago than this.
    pub retention: Duration,
    /// Delete the oldest blocks while blocks and WAL together exceed this many bytes.
    pub max_disk_bytes: Option<u64>,
    /// Blocks under half this many spans are merged, up to this many spans.
    pub compaction_target_spans: u64,
    /// Writes that may wait for the WAL before new ones are refused as overloaded.
    pub max_pending_writes: usize,
    /// How often compaction and retention run.
    pub maintenance_interval: Duration,
    /// Where receive times, head ages and retention's "now" come from.
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            head_max_spans: 1_000_000,
            head_max_bytes: 512 * 1024 * 1024,
            head_max_age: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_disk_bytes: None,
            compaction_target_spans: 1_000_000,
            max_pending_writes: 1024,
            maintenance_interval: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Counters describing what the store did.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Spans newly stored (duplicates not counted).
    pub spans_written: AtomicU64,
    /// Spans received again and skipped as duplicates in the head.
    pub spans_duplicate: AtomicU64,
    /// WAL fsyncs.
    pub wal_fsyncs: AtomicU64,
    /// Total nanoseconds spent in WAL fsync.
    pub wal_fsync_nanos: AtomicU64,
    /// Writes that failed (disk full, i/o error).
    pub write_errors: AtomicU64,
    /// WAL records replayed at start.
    pub wal_replayed_records: AtomicU64,
    /// Corrupt WAL records skipped at start.
    pub wal_corrupt_records: AtomicU64,
    /// Torn WAL tails truncated at start.
    pub wal_torn_tails: AtomicU64,
    /// WAL segments with an unreadable header, moved aside unread at start.
    pub wal_segments_set_aside: AtomicU64,
    /// Blocks written by head cuts.
    pub blocks_written: AtomicU64,
    /// Block writes that failed and will be retried.
    pub block_write_errors: AtomicU64,
    /// Corrupt blocks set aside at start.
    pub corrupt_blocks: AtomicU64,
    /// Compactions done.
    pub compactions: AtomicU64,
    /// Blocks deleted by retention (age or bytes).
    pub retention_deleted_blocks: AtomicU64,
}

/// A point-in-time view of the store's size.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    /// Spans in the live head.
    pub head_spans: usize,
    /// Spans in frozen heads waiting to become blocks.
    pub frozen_spans: usize,
    /// Number of blocks.
    pub blocks: usize,
    /// Spans in blocks.
    pub block_spans: u64,
    /// Bytes of all blocks.
    pub block_bytes: u64,
    /// Bytes of the WAL.
    pub wal_bytes: u64,
}

enum Cmd {
    Write { batch: SpanBatch, done: oneshot::Sender<Result<(), SinkError>> },
    Flush { done: oneshot::Sender<Result<(), String>> },
    Shutdown,
}

struct Frozen {
    head: Head,
    through_segment: u64,
}

enum FlushJob {
    Frozen { frozen: Arc<Frozen>, waiters: Vec<oneshot::Sender<Result<(), String>>> },
    Stop,
}

#[derive(Default)]
struct State {
    head: Head,
    frozen: Vec<Arc<Frozen>>,
    blocks: Vec<Arc<Block>>,
}

impl State {
    /// The latest receive time of anything stored.
    fn newest_received(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| b.meta.max_received_unix_nano)
            .chain(self.frozen.iter().map(|f| f.head.max_received()))
            .chain([self.head.max_received()])
            .max()
            .unwrap_or(0)
    }
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    root: PathBuf,
    cfg: StoreConfig,
    state: RwLock<State>,
    stats: StoreStats,
    /// Serialises block publication, compaction and retention.
    maintenance: Mutex<()>,
    /// Set when the store is closing: the flusher stops retrying failed writes.
    closing: std::sync::atomic::AtomicBool,
}

/// The embedded store. Cheap to share behind an `Arc`; see the module docs.
pub struct Store {
    inner: Arc<Inner>,
    tx: SyncSender<Cmd>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Exclusive lock on `<root>/LOCK`, held until the store is closed.
    lock: Mutex<Option<std::fs::File>>,
}

/// Nanoseconds since the Unix epoch, now, by the system clock.
pub fn now_unix_nano() -> u64 {
    SystemClock.now_unix_nano()
}

static BLOCK_SEQ: AtomicU64 = AtomicU64::new(0);

fn new_block_id() -> String {
    format!("{:020}-{:06}", now_unix_nano(), BLOCK_SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000)
}

impl Store {
    /// Opens (or creates) a store in `root`: removes unfinished block directories, opens
    /// blocks (setting corrupt ones aside under `corrupt/`), replays the WAL and starts the
    /// writer and flusher threads.
    pub fn open(fs: Arc<dyn FileSystem>, root: &Path, cfg: StoreConfig) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        let blocks_dir = root.join("blocks");
        let wal_dir = root.join("wal");
        fs.create_dir_all(&blocks_dir).map_err(io(&blocks_dir))?;
        let lock = lock_data_dir(root)?;
        let stats = StoreStats::default();
        // Files from a newer strand stop the start before anything is changed: the blocks'
        // versions are read first, and the WAL checks its own before it replays.
        check_block_versions(fs.as_ref(), &blocks_dir)?;
        let mut head = Head::default();
        let (wal, replay_stats) = Wal::open(fs.clone(), &wal_dir, |framed, record| {
            let n = record.batch.span_count();
            let added = head.insert(framed, &record.batch, record.received_unix_nano);
            stats.spans_duplicate.fetch_add((n - added) as u64, Ordering::Relaxed);
        })?;
        let blocks = open_blocks(fs.as_ref(), root, &stats)?;
        stats.wal_replayed_records.store(replay_stats.records, Ordering::Relaxed);
        stats.wal_corrupt_records.store(replay_stats.corrupt_records, Ordering::Relaxed);
        stats.wal_torn_tails.store(replay_stats.torn_tails, Ordering::Relaxed);
        stats.wal_segments_set_aside.store(replay_stats.segments_set_aside, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            fs,
            root: root.to_path_buf(),
            cfg: cfg.clone(),
            state: RwLock::new(State { head, frozen: Vec::new(), blocks }),
            stats,
            maintenance: Mutex::new(()),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::sync_channel(cfg.max_pending_writes.max(1));
        let (index_tx, index_rx) = mpsc::sync_channel(INDEX_QUEUE);
        let (flush_tx, flush_rx) = mpsc::channel();
        let wal_inner = inner.clone();
        let wal_thread = std::thread::Builder::new()
            .name("strand-wal".into())
            .spawn(move || wal_loop(wal_inner, wal, rx, flush_tx, index_tx))
            .map_err(io(root))?;
        let flush_inner = inner.clone();
        let flush_thread = std::thread::Builder::new()
            .name("strand-flush".into())
            .spawn(move || flush_loop(flush_inner, flush_rx))
            .map_err(io(root))?;
        let index_inner = inner.clone();
        let index_thread = std::thread::Builder::new()
            .name("strand-index".into())
            .spawn(move || index_loop(&index_inner, index_rx))
            .map_err(io(root))?;
        Ok(Self {
            inner,
            tx,
            threads: Mutex::new(vec![wal_thread, flush_thread, index_thread]),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// Current sizes.
    pub fn snapshot(&self) -> StoreSnapshot {
        self.inner.snapshot()
    }

    /// Writes a batch; see [`TraceWriter::write`].
    pub async fn append(&self, batch: SpanBatch) -> Result<(), SinkError> {
        if batch.span_count() == 0 {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        match self.tx.try_send(Cmd::Write { batch, done }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(SinkError::Overloaded("write queue is full".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(SinkError::Unavailable("store is shut down".into()));
            }
        }
        rx.await.map_err(|_| SinkError::Unavailable("store is shut down".into()))?
    }

    /// Cuts the head into a block now and waits until the block is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Cmd::Flush { done }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map_err(StoreError::Unavailable)
    }

    /// Spans of a trace from head, frozen heads and blocks; blocking (reads files).
    pub fn get_trace_blocking(&self, id: TraceId) -> Result<Option<Trace>, StoreError> {
        self.inner.get_trace(id)
    }

    /// Runs compaction once (normally done by the flusher thread); returns whether it
    /// merged anything.
    pub fn compact_now(&self) -> Result<bool, StoreError> {
        compact(&self.inner).map_err(|reason| StoreError::Unavailable(format!("compaction failed: {reason}")))
    }

    /// Applies retention as of `now_unix_nano` (normally done by the flusher thread).
    pub fn enforce_retention(&self, now_unix_nano: u64) {
        enforce_retention(&self.inner, now_unix_nano)
    }

    /// Stops the threads: pending writes are answered, the head is written to a block, and
    /// the data directory is unlocked. Blocks until done.
    pub fn close(&self) {
        drop(self.begin_close());
    }

    /// Takes what closing needs; dropping the result stops the threads, waits for them and
    /// unlocks the data directory (blocking).
    fn begin_close(&self) -> Closing {
        self.inner.closing.store(true, Ordering::SeqCst);
        Closing {
            tx: self.tx.clone(),
            threads: std::mem::take(&mut *self.threads.lock()),
            lock: self.lock.lock().take(),
        }
    }
}

impl Inner {
    /// Counters and gauges for `/metrics`; blocking (lists the WAL directory).
    fn metrics(&self) -> Vec<MetricFamily> {
        let snap = self.snapshot();
        let s = &self.stats;
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let counter =
            |name: &str, help: &str, value| MetricFamily::counter(format!("strand_{name}"), help, value);
        let gauge =
            |name: &str, help: &str, value| MetricFamily::gauge(format!("strand_{name}"), help, value);
        vec![
            counter("store_spans_written_total", "Spans newly stored.", c(&s.spans_written)),
            counter(
                "store_spans_duplicate_total",
                "Spans received again and skipped.",
                c(&s.spans_duplicate),
            ),
            counter("wal_fsyncs_total", "WAL fsync calls.", c(&s.wal_fsyncs)),
            counter("wal_fsync_seconds_total", "Time spent in WAL fsync.", c(&s.wal_fsync_nanos) / 1e9),
            counter("store_write_errors_total", "Failed WAL writes.", c(&s.write_errors)),
            counter(
                "wal_replayed_records_total",
                "WAL records replayed at start.",
                c(&s.wal_replayed_records),
            ),
            counter(
                "wal_corrupt_records_total",
                "Corrupt WAL records (or damaged stretches) skipped at start.",
                c(&s.wal_corrupt_records),
            ),
            counter("wal_torn_tails_total", "Torn WAL tails truncated at start.", c(&s.wal_torn_tails)),
            counter(
                "wal_segments_set_aside_total",
                "WAL segments with an unreadable header moved to corrupt/ at start.",
                c(&s.wal_segments_set_aside),
            ),
            counter("blocks_written_total", "Blocks written from the head.", c(&s.blocks_written)),
            counter("block_write_errors_total", "Failed block writes (retried).", c(&s.block_write_errors)),
            counter("corrupt_blocks_total", "Corrupt blocks set aside at start.", c(&s.corrupt_blocks)),
            counter("compactions_total", "Compactions.", c(&s.compactions)),
            counter(
                "retention_deleted_blocks_total",
                "Blocks deleted by retention.",
                c(&s.retention_deleted_blocks),
            ),
            gauge(
                "head_spans",
                "Spans in memory, not yet in blocks.",
                (snap.head_spans + snap.frozen_spans) as f64,
            ),
            gauge("blocks", "Blocks.", snap.blocks as f64),
            gauge("block_spans", "Spans in blocks.", snap.block_spans as f64),
            gauge("disk_bytes", "Bytes of blocks and WAL.", (snap.block_bytes + snap.wal_bytes) as f64),
        ]
    }
}

/// Threads of a closing store and its data-directory lock. Dropping it (on a blocking
/// thread: the WAL queue may be full) tells the threads to stop, waits for them and only
/// then releases the lock, however the close ends.
struct Closing {
    tx: SyncSender<Cmd>,
    threads: Vec<JoinHandle<()>>,
    lock: Option<std::fs::File>,
}

impl Drop for Closing {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            let _ = self.tx.send(Cmd::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.lock.take();
    }
}

impl Inner {
    fn snapshot(&self) -> StoreSnapshot {
        let st = self.state.read();
        StoreSnapshot {
            head_spans: st.head.span_count(),
            frozen_spans: st.frozen.iter().map(|f| f.head.span_count()).sum(),
            blocks: st.blocks.len(),
            block_spans: st.blocks.iter().map(|b| b.meta.span_count).sum(),
            block_bytes: st.blocks.iter().map(|b| b.disk_bytes).sum(),
            wal_bytes: Wal::disk_bytes(self.fs.as_ref(), &self.root.join("wal")),
        }
    }

    /// Runs `f` over a snapshot of every source's search index (the heads' indexes brought
    /// up to date first, outside the state lock). `as_of` defaults to the newest receive
    /// time visible now.
    fn with_sources<T>(&self, as_of: Option<u64>, f: impl FnOnce(&Sources) -> T) -> Result<T, StoreError> {
        let (blocks, heads, newest) = {
            let st = self.state.read();
            let mut heads: Vec<_> = st.frozen.iter().map(|f| f.head.index_handle()).collect();
            heads.push(st.head.index_handle());
            (st.blocks.clone(), heads, st.newest_received())
        };
        let mut guards = Vec::with_capacity(heads.len());
        for (index, first, tail) in &heads {
            // Searches share the index; only bringing it up to date is exclusive.
            let g = index.read();
            if g.indexed() >= first + tail.len() {
                guards.push(g);
                continue;
            }
            drop(g);
            let mut g = index.write();
            g.extend(*first, tail).map_err(|reason| StoreError::Corrupt { path: "head".into(), reason })?;
            guards.push(parking_lot::RwLockWriteGuard::downgrade(g));
        }
        let mut views: Vec<&dyn IndexView> =
            blocks.iter().map(|b| b.search_index() as &dyn IndexView).collect();
        views.extend(guards.iter().map(|g| &g.builder as &dyn IndexView));
        Ok(f(&Sources { views, as_of: as_of.unwrap_or(newest) }))
    }

    fn search(&self, q: &TraceQuery) -> Result<SearchPage, StoreError> {
        let as_of = q.cursor.map(|c| c.as_of_unix_nano);
        self.with_sources(as_of, |s| s.search(q, &|id| self.get_trace(id)))?
    }

    fn get_trace(&self, id: TraceId) -> Result<Option<Trace>, StoreError> {
        Ok(self.get_traces(&[id])?.pop())
    }

    /// The stored traces of `ids`, in that order. The state is looked at once for all of
    /// them; under its lock only `Arc`s and record handles are cloned, and decoding happens
    /// after it is released, so lookups never hold up the WAL thread's inserts.
    fn get_traces(&self, ids: &[TraceId]) -> Result<Vec<Trace>, StoreError> {
        let (blocks, records) = {
            let st = self.state.read();
            let records: Vec<_> = ids
                .iter()
                .map(|id| {
                    let mut records = Vec::new();
                    for f in &st.frozen {
                        records.extend(f.head.trace_records(id));
                    }
                    records.extend(st.head.trace_records(id));
                    records
                })
                .collect();
            (st.blocks.clone(), records)
        };
        let mut out = Vec::with_capacity(ids.len());
        for (id, records) in ids.iter().zip(records) {
            let mut spans = decode_trace(&records, id)
                .map_err(|e| StoreError::Corrupt { path: "head".into(), reason: e })?;
            // Older copies first, so the first-written copy of a duplicate wins.
            let mut from_blocks = Vec::new();
            for b in blocks.iter().filter(|b| b.may_contain(id)) {
                from_blocks.extend(b.read_trace(id)?);
            }
            from_blocks.append(&mut spans);
            if !from_blocks.is_empty() {
                out.push(Trace::from_spans(*id, from_blocks));
            }
        }
        Ok(out)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl TraceStore for Store {
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::flush(self))
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        blocking(&self.inner, |i| maintain(i).map(|_| ()))
    }

    fn stored_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        blocking(&self.inner, |i| {
            let blocks: u64 = i.state.read().blocks.iter().map(|b| b.disk_bytes).sum();
            Ok(blocks + Wal::disk_bytes(i.fs.as_ref(), &i.root.join("wal")))
        })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        let metrics = blocking(&self.inner, |i| Ok(i.metrics()));
        Box::pin(async move { metrics.await.unwrap_or_default() })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let closing = self.begin_close();
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || drop(closing)).await;
        })
    }
}

impl TraceWriter for Store {
    fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.append(batch))
    }
}

impl SpanSink for Store {
    fn consume(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.append(batch))
    }
}

/// Runs a blocking read on tokio's blocking pool.
fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'static, Result<T, StoreError>> {
    let inner = inner.clone();
    Box::pin(
        async move { tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|_| StoreError::Closed)? },
    )
}

/// Reads on tokio's blocking pool.
impl TraceReader for Store {
    fn get_trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        blocking(&self.inner, move |i| i.get_trace(trace_id))
    }

    fn get_traces(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Trace>, StoreError>> {
        blocking(&self.inner, move |i| i.get_traces(&ids))
    }

    fn find_traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        blocking(&self.inner, move |i| i.search(&query))
    }

    fn services(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        blocking(&self.inner, move |i| i.with_sources(None, |s| s.services(range)))
    }

    fn operations(
        &self,
        service: String,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        blocking(&self.inner, move |i| i.with_sources(None, |s| s.operations(&service, range)))
    }

    fn attributes(
        &self,
        service: Option<String>,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        blocking(&self.inner, move |i| i.with_sources(None, |s| s.attributes(service.as_deref(), range)))
    }

    fn dependencies(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        blocking(&self.inner, move |i| i.with_sources(None, |s| s.dependencies(range)))
    }
}

/// Takes an exclusive lock on `<root>/LOCK` so two processes never share a data directory.
fn lock_data_dir(root: &Path) -> Result<std::fs::File, StoreError> {
    let path = root.join("LOCK");
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Io {
            path: root.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::ResourceBusy,
                "data directory is in use by another strand process",
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Reads every block's layout version (only that) and refuses a newer one.
fn check_block_versions(fs: &dyn FileSystem, blocks_dir: &Path) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: u32,
    }
    let entries = fs
        .list(blocks_dir)
        .map_err(|source| StoreError::Io { path: blocks_dir.display().to_string(), source })?;
    for dir in entries {
        if dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".tmp-")) {
            continue;
        }
        let meta = dir.join("meta.json");
        // A missing or unreadable meta.json is damage, handled when the block is opened.
        let Ok(bytes) = fs.read_file(&meta) else { continue };
        if let Ok(Version { format_version }) = serde_json::from_slice(&bytes)
            && format_version > crate::block::FORMAT_VERSION
        {
            return Err(StoreError::NewerFormat {
                path: meta.display().to_string(),
                found: format_version,
                supported: crate::block::FORMAT_VERSION,
            });
        }
    }
    Ok(())
}

fn open_blocks(fs: &dyn FileSystem, root: &Path, stats: &StoreStats) -> Result<Vec<Arc<Block>>, StoreError> {
    let blocks_dir = root.join("blocks");
    let entries = fs
        .list(&blocks_dir)
        .map_err(|source| StoreError::Io { path: blocks_dir.display().to_string(), source })?;
    let mut blocks = Vec::new();
    for dir in entries {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with(".tmp-") {
            warn!(dir = %dir.display(), "removing unfinished block");
            let _ = fs.remove_dir_all(&dir);
            continue;
        }
        match Block::open(fs, &dir) {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(e) => {
                stats.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
                let aside = root.join("corrupt").join(&name);
                error!(block = %name, error = %e, moved_to = %aside.display(), "set aside corrupt block");
                let _ = fs.create_dir_all(&root.join("corrupt"));
                if let Err(e) = fs.rename(&dir, &aside) {
                    error!(block = %name, error = %e, "could not move corrupt block");
                }
            }
        }
    }
    // A compaction that crashed after publishing its result leaves its inputs behind.
    let replaced: std::collections::HashSet<String> =
        blocks.iter().flat_map(|b| b.meta.compacted_from.iter().cloned()).collect();
    blocks.retain(|b| {
        if replaced.contains(&b.meta.id) {
            info!(block = %b.meta.id, "removing block replaced by compaction");
            let _ = fs.remove_dir_all(&b.dir);
            false
        } else {
            true
        }
    });
    blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    Ok(blocks)
}

fn wal_loop(
    inner: Arc<Inner>,
    mut wal: Wal,
    rx: Receiver<Cmd>,
    flush_tx: mpsc::Sender<FlushJob>,
    index_tx: SyncSender<IndexJob>,
) {
    const GROUP: usize = 512;
    let tick = Duration::from_millis(50);
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let mut shutting_down = false;
    let mut last_received = inner.state.read().newest_received();
    while !shutting_down {
        let first = match rx.recv_timeout(tick) {
            Ok(cmd) => cmd,
            Err(RecvTimeoutError::Timeout) => {
                interval_sync(&inner, &mut wal, &mut unsynced, &mut last_sync);
                maybe_cut(&inner, &mut wal, &flush_tx, Vec::new(), false);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(cmd) => group.push(cmd),
                Err(_) => break,
            }
        }
        // Receive times strictly increase from group to group, so a search snapshot taken
        // between two groups tells them apart whatever the clock's resolution.
        let received = strand_core::clock::next_receive_time(inner.cfg.clock.now_unix_nano(), last_received);
        last_received = received;
        let mut written = Vec::new();
        let mut flush_waiters = Vec::new();
        for cmd in group {
            match cmd {
                Cmd::Write { batch, done } => {
                    let record = WalRecord { received_unix_nano: received, tenant: String::new(), batch };
                    let bytes = record.encode();
                    match wal.append(&bytes) {
                        Ok(()) => written.push((record.batch, bytes, done)),
                        Err(e) => {
                            inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                            warn!(error = %e, "wal append failed");
                            let _ = done.send(Err(SinkError::Unavailable(format!("wal append failed: {e}"))));
                        }
                    }
                }
                Cmd::Flush { done } => flush_waiters.push(done),
                Cmd::Shutdown => shutting_down = true,
            }
        }
        if !written.is_empty() {
            let synced = match inner.cfg.fsync {
                FsyncPolicy::Always => sync_wal(&inner, &mut wal),
                FsyncPolicy::Interval(_) => {
                    unsynced = true;
                    Ok(())
                }
            };
            if let Err(e) = synced {
                for (_, _, done) in written {
                    let _ = done.send(Err(SinkError::Unavailable(format!("wal fsync failed: {e}"))));
                }
            } else {
                let mut st = inner.state.write();
                let mut replies = Vec::with_capacity(written.len());
                for (batch, bytes, done) in written {
                    let n = batch.span_count();
                    let added = st.head.insert(bytes.into(), &batch, received);
                    inner.stats.spans_written.fetch_add(added as u64, Ordering::Relaxed);
                    inner.stats.spans_duplicate.fetch_add((n - added) as u64, Ordering::Relaxed);
                    replies.push(done);
                    if added > 0
                        && let (index, Some(position)) = st.head.newest_record()
                    {
                        // The decoded batch goes to the index thread, which then needs
                        // not decode the record again; if it is behind, it catches up
                        // from the records instead.
                        let _ = index_tx.try_send(IndexJob { index, position, received, batch });
                    }
                }
                drop(st);
                for done in replies {
                    let _ = done.send(Ok(()));
                }
            }
        }
        interval_sync(&inner, &mut wal, &mut unsynced, &mut last_sync);
        let force = !flush_waiters.is_empty() || shutting_down;
        maybe_cut(&inner, &mut wal, &flush_tx, flush_waiters, force);
    }
    if unsynced {
        sync_wal(&inner, &mut wal).ok();
    }
    // Anything still queued after shutdown is refused rather than left hanging.
    while let Ok(cmd) = rx.try_recv() {
        if let Cmd::Write { done, .. } = cmd {
            let _ = done.send(Err(SinkError::Unavailable("store is shutting down".into())));
        }
    }
    let _ = flush_tx.send(FlushJob::Stop);
}

/// Under `FsyncPolicy::Interval`, fsyncs once the interval has passed since the last sync
/// and something is unsynced. A failure is counted and logged by `sync_wal`; the writes were
/// already acknowledged, which is what the interval policy trades for speed.
fn interval_sync(inner: &Inner, wal: &mut Wal, unsynced: &mut bool, last_sync: &mut Instant) {
    if let FsyncPolicy::Interval(every) = inner.cfg.fsync
        && *unsynced
        && last_sync.elapsed() >= every
    {
        let _ = sync_wal(inner, wal);
        *unsynced = false;
        *last_sync = Instant::now();
    }
}

fn sync_wal(inner: &Inner, wal: &mut Wal) -> std::io::Result<()> {
    let t = Instant::now();
    let r = wal.sync();
    inner.stats.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
    inner.stats.wal_fsync_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    if let Err(e) = &r {
        inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        warn!(error = %e, "wal fsync failed");
    }
    r
}

fn maybe_cut(
    inner: &Inner,
    wal: &mut Wal,
    flush_tx: &mpsc::Sender<FlushJob>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    force: bool,
) {
    let due = {
        let st = inner.state.read();
        let h = &st.head;
        !h.is_empty()
            && (force
                || h.span_count() >= inner.cfg.head_max_spans
                || h.bytes() >= inner.cfg.head_max_bytes
                || inner.cfg.clock.now_unix_nano().saturating_sub(h.min_received())
                    >= inner.cfg.head_max_age.as_nanos() as u64)
    };
    if !due {
        // Nothing to cut; a flush request still waits for earlier frozen heads.
        if !waiters.is_empty() {
            let frozen = inner.state.read().frozen.last().cloned();
            match frozen {
                Some(frozen) => {
                    let _ = flush_tx.send(FlushJob::Frozen { frozen, waiters });
                }
                None => waiters.into_iter().for_each(|w| {
                    let _ = w.send(Ok(()));
                }),
            }
        }
        return;
    }
    let sealed = match wal.rotate() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "wal rotation failed; head stays in memory");
            waiters.into_iter().for_each(|w| {
                let _ = w.send(Err(format!("wal rotation failed: {e}")));
            });
            return;
        }
    };
    let frozen = {
        let mut st = inner.state.write();
        let head = std::mem::take(&mut st.head);
        let frozen = Arc::new(Frozen { head, through_segment: sealed });
        st.frozen.push(frozen.clone());
        frozen
    };
    let _ = flush_tx.send(FlushJob::Frozen { frozen, waiters });
}

/// Batches the index thread may have queued before the WAL thread stops handing them over.
const INDEX_QUEUE: usize = 256;

/// A batch just inserted into a head, for that head's index.
struct IndexJob {
    index: Arc<parking_lot::RwLock<HeadIndex>>,
    position: usize,
    received: u64,
    batch: SpanBatch,
}

/// Keeps the heads' search indexes close behind their records, off the ingest path, so a
/// search rarely has to index much itself: indexes the batches the WAL thread hands over
/// (already decoded), and catches up from the records when it missed some.
fn index_loop(inner: &Inner, rx: Receiver<IndexJob>) {
    let catch_up = || {
        let heads: Vec<_> = {
            let st = inner.state.read();
            st.frozen.iter().map(|f| f.head.index_handle()).chain([st.head.index_handle()]).collect()
        };
        for (index, first, tail) in heads {
            if let Err(e) = index.write().extend(first, &tail) {
                warn!(error = %e, "indexing the head failed");
            }
        }
    };
    while !inner.closing.load(Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(job) => {
                let mut index = job.index.write();
                let behind = job.position > index.indexed();
                if !index.add_decoded(job.position, job.received, &job.batch) && behind {
                    drop(index);
                    catch_up();
                }
            }
            Err(RecvTimeoutError::Timeout) => catch_up(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn flush_loop(inner: Arc<Inner>, rx: Receiver<FlushJob>) {
    let mut last_maintenance = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(FlushJob::Frozen { frozen, waiters }) => write_frozen_until_done(&inner, &frozen, waiters),
            Ok(FlushJob::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if last_maintenance.elapsed() >= inner.cfg.maintenance_interval {
            last_maintenance = Instant::now();
            if let Err(e) = maintain(&inner) {
                warn!(error = %e, "maintenance failed");
            }
        }
    }
}

/// Writes a frozen head as a block. After a failure (a full disk) the waiters hear of it at
/// once, and the write is retried with backoff until it succeeds or the store closes; the
/// WAL segments keep the data safe meanwhile, so a restart replays it.
fn write_frozen_until_done(
    inner: &Inner,
    frozen: &Arc<Frozen>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
) {
    // A frozen head already published (a flush request waiting on it) needs nothing.
    let pending = inner.state.read().frozen.iter().any(|f| Arc::ptr_eq(f, frozen));
    let mut result = if pending { write_frozen(inner, frozen) } else { Ok(()) };
    let mut waiters = Some(waiters);
    let mut delay = Duration::from_millis(100);
    while let Err(e) = &result {
        inner.stats.block_write_errors.fetch_add(1, Ordering::Relaxed);
        warn!(error = %e, "block write failed; will retry");
        for w in waiters.take().unwrap_or_default() {
            let _ = w.send(Err(e.clone()));
        }
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
        result = write_frozen(inner, frozen);
    }
    for w in waiters.take().unwrap_or_default() {
        let _ = w.send(Ok(()));
    }
}

fn write_frozen(inner: &Inner, frozen: &Arc<Frozen>) -> Result<(), String> {
    let _guard = inner.maintenance.lock();
    let mut builder = BlockBuilder::new();
    for record in frozen.head.batches() {
        builder.append_batch(&record?.1)?;
    }
    // The head's own search index (kept up to date by the index thread) becomes the block's.
    let index = {
        let (handle, first, tail) = frozen.head.index_handle();
        let mut guard = handle.write();
        guard.extend(first, &tail)?;
        guard.builder.finish()
    };
    let (min_received, max_received) = (frozen.head.min_received(), frozen.head.max_received());
    let block = write_block(inner, builder, &index, min_received, max_received, Vec::new())?;
    {
        let mut st = inner.state.write();
        st.blocks.push(Arc::new(block));
        st.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
    }
    inner.stats.blocks_written.fetch_add(1, Ordering::Relaxed);
    Wal::remove_through(inner.fs.as_ref(), &inner.root.join("wal"), frozen.through_segment)
        .map_err(|e| format!("removing flushed wal segments: {e}"))?;
    Ok(())
}

/// Encodes and writes a block atomically; returns it opened.
fn write_block(
    inner: &Inner,
    builder: BlockBuilder,
    index: &SearchIndex,
    min_received: u64,
    max_received: u64,
    compacted_from: Vec<String>,
) -> Result<Block, String> {
    let fs = inner.fs.as_ref();
    let id = new_block_id();
    let mut encoded = builder.finish(id.clone(), min_received, max_received, compacted_from)?;
    let index = index.encode()?;
    encoded.meta.files.push(FileChecksum::of("index.bin", &index));
    let blocks_dir = inner.root.join("blocks");
    let tmp = blocks_dir.join(format!(".tmp-{id}"));
    let fin = blocks_dir.join(&id);
    let result = (|| -> std::io::Result<()> {
        fs.create_dir_all(&tmp)?;
        fs.write_file(&tmp.join("spans.parquet"), &encoded.spans)?;
        fs.write_file(&tmp.join("traces.parquet"), &encoded.traces)?;
        fs.write_file(&tmp.join("index.bin"), &index)?;
        let meta = serde_json::to_vec_pretty(&encoded.meta).map_err(std::io::Error::other)?;
        fs.write_file(&tmp.join("meta.json"), &meta)?;
        fs.sync_dir(&tmp)?;
        fs.rename(&tmp, &fin)?;
        fs.sync_dir(&blocks_dir)
    })();
    if let Err(e) = result {
        let _ = fs.remove_dir_all(&tmp);
        return Err(format!("writing block {id}: {e}"));
    }
    Block::open(fs, &fin).map_err(|e| e.to_string())
}

/// Retention, then compaction (nothing is merged that is about to be deleted).
fn maintain(inner: &Inner) -> Result<bool, StoreError> {
    enforce_retention(inner, inner.cfg.clock.now_unix_nano());
    compact(inner).map_err(|reason| StoreError::Unavailable(format!("compaction failed: {reason}")))
}

/// Merges the oldest run of small blocks. Returns whether it merged anything.
fn compact(inner: &Inner) -> Result<bool, String> {
    let _guard = inner.maintenance.lock();
    let target = inner.cfg.compaction_target_spans;
    let candidates: Vec<Arc<Block>> = {
        let st = inner.state.read();
        let mut run = Vec::new();
        let mut total = 0;
        for b in st.blocks.iter().filter(|b| b.meta.span_count < target / 2) {
            if total + b.meta.span_count > target {
                break;
            }
            total += b.meta.span_count;
            run.push(b.clone());
        }
        run
    };
    if candidates.len() < 2 {
        return Ok(false);
    }
    // Oldest block first, so the first-written copy of a duplicate wins.
    let mut builder = BlockBuilder::new();
    let mut index = IndexBuilder::new();
    for b in &candidates {
        let spans = b.read_all().map_err(|e| e.to_string())?;
        builder.append_stored(&spans)?;
        let received = |id: &TraceId| {
            b.search_index().part(id).map_or(b.meta.min_received_unix_nano, |p| p.min_received)
        };
        index.add_stored(&spans, received);
    }
    let min_received = candidates.iter().map(|b| b.meta.min_received_unix_nano).min().unwrap_or(0);
    let max_received = candidates.iter().map(|b| b.meta.max_received_unix_nano).max().unwrap_or(0);
    let ids: Vec<String> = candidates.iter().map(|b| b.meta.id.clone()).collect();
    let merged = write_block(inner, builder, &index.finish(), min_received, max_received, ids.clone())?;
    info!(inputs = ids.len(), spans = merged.meta.span_count, block = %merged.meta.id, "compacted blocks");
    {
        let mut st = inner.state.write();
        st.blocks.retain(|b| !ids.contains(&b.meta.id));
        st.blocks.push(Arc::new(merged));
        st.blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    }
    for b in &candidates {
        if let Err(e) = inner.fs.remove_dir_all(&b.dir) {
            warn!(block = %b.meta.id, error = %e, "could not delete compacted block");
        }
    }
    inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

fn enforce_retention(inner: &Inner, now: u64) {
    let _guard = inner.maintenance.lock();
    let cutoff = now.saturating_sub(inner.cfg.retention.as_nanos() as u64);
    let wal_bytes = Wal::disk_bytes(inner.fs.as_ref(), &inner.root.join("wal"));
    let doomed: Vec<Arc<Block>> = {
        let mut st = inner.state.write();
        let mut doomed = Vec::new();
        st.blocks.retain(|b| {
            let keep = b.meta.max_received_unix_nano >= cutoff;
            if !keep {
                doomed.push(b.clone());
            }
            keep
        });
        if let Some(budget) = inner.cfg.max_disk_bytes {
            let mut total: u64 = wal_bytes + st.blocks.iter().map(|b| b.disk_bytes).sum::<u64>();
            // Oldest received first.
            st.blocks.sort_by_key(|b| b.meta.min_received_unix_nano);
            while total > budget && !st.blocks.is_empty() {
                let b = st.blocks.remove(0);
                total -= b.disk_bytes;
                doomed.push(b);
            }
            st.blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        }
        doomed
    };
    for b in doomed {
        info!(block = %b.meta.id, spans = b.meta.span_count, "retention deleted block");
        inner.stats.retention_deleted_blocks.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = inner.fs.remove_dir_all(&b.dir) {
            warn!(block = %b.meta.id, error = %e, "could not delete block");
        }
    }
}
