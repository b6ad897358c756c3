//! The store engine: WAL writer thread, head, block flusher, compaction and retention.
//!
//! ```text
//! write(batch) ──► bounded queue ──► WAL thread: append records of a group, one fsync,
//!                                      insert into head, answer every writer
//!                                      │ head too big / too old / flush asked
//!                                      ▼
//!                   rotate WAL, freeze head ──► flusher thread: encode block, write it
//!                                               atomically, publish, delete sealed WAL
//!                                               segments
//!                                                 │ wakes
//!                                                 ▼
//!                                  maintenance thread: disk budget, retention, compaction
//! ```
//!
//! Reads see the live head, frozen heads still being written, and blocks. Writes are
//! refused before the WAL while frozen heads hold up too much memory
//! ([`StoreConfig::max_unwritten_bytes`]) or the WAL alone is over the disk budget.
//!
//! - `wal_thread`: group commit, head inserts, head cuts;
//! - `index_thread`: the heads' search indexes;
//! - `flusher`: frozen heads into blocks, in order, failures retried;
//! - `maintenance`: the disk budget, retention and compaction, on their own thread;
//! - `startup`: the data-directory lock, format versions, blocks found at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use strand_core::{
    BoxFuture, Clock, DependencyEdge, LogBatch, LogPage, LogQuery, LogStore, MetricFamily, Operation,
    SearchPage, SinkError, SpanBatch, SpanId, SpanSink, StoreError, StoredLog, SystemClock, TimeRange, Trace,
    TraceId, TraceQuery, TraceReader, TraceStore, TraceWriter,
};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::block::{Block, EncodedBlock, FileChecksum, Verify};
use crate::cache::BlockCache;
use crate::error::FormatError;
use crate::fs::FileSystem;
use crate::head::{Head, HeadIndex, decode_trace};
use crate::index::{IndexBuilder, IndexView, SearchIndex};
use crate::logs::{LogBlockBuilder, decode_records};
use crate::search::{Source, Sources};
use crate::wal::{LogWalRecord, RecordLayout, Wal, WalEntry, WalRecord};

mod flusher;
mod index_thread;
mod maintenance;
mod reads;
mod startup;
mod wal_thread;

use flusher::{flush_loop, write_block};
use index_thread::{INDEX_QUEUE, IndexJob, index_loop};
use maintenance::{maintain, maintenance_loop};
use startup::{check_block_versions, lock_data_dir, open_blocks};
use wal_thread::wal_loop;

pub use maintenance::failed_inputs;
pub use reads::{BlockSet, COMPACTED_MARKER, Refreshed, StoreView, merge_blocks};

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
    /// Cut the head into a block at this many log records.
    pub head_max_log_records: usize,
    /// Cut the head into a block at this many encoded bytes.
    pub head_max_bytes: u64,
    /// Cut the head into a block when its oldest span was received this long ago.
    pub head_max_age: Duration,
    /// Delete blocks whose newest span was received longer ago than this.
    pub retention: Duration,
    /// Delete the oldest blocks while blocks and WAL together exceed this many bytes. The
    /// head is cut at a quarter of it at most, and writes are refused while the WAL alone
    /// is over it.
    pub max_disk_bytes: Option<u64>,
    /// Most encoded bytes of received spans and log records held in memory until they are
    /// in blocks (the live head and frozen heads waiting for the flusher). The head is cut
    /// at half of it at most; writes are refused as overloaded while frozen heads wait and
    /// the total is at the limit, so block writes catch up.
    pub max_unwritten_bytes: u64,
    /// Blocks under half this many rows (spans and log records) are merged, up to this
    /// many rows.
    pub compaction_target_spans: u64,
    /// Compaction merges small blocks by time, in two stages: the blocks cut within one
    /// window, then the blocks of one day (24 windows), each once its window has passed
    /// (or sooner, once the merge would reach half the target), so a span is rewritten at
    /// most twice. Zero: no windows, any two small blocks are merged as soon as they exist
    /// (a growing block is then rewritten with every small block that joins it).
    pub compaction_window: Duration,
    /// Most bytes of blocks a compaction reads per second (its inputs' files, paced by the
    /// span rows merged), which bounds the share of the disk and of a core its reading and
    /// merging of spans take from ingest and queries (log records are read whole first and
    /// the merged block is written, both unpaced). 0: no limit.
    pub compaction_bytes_per_second: u64,
    /// Most bytes of span text (attribute, event or link JSON, as decoded) one compaction
    /// puts in one column of its block: Arrow string columns hold at most 2 GiB, and
    /// spans with large events (stack traces) reach it long before the row target.
    pub compaction_max_text_bytes: u64,
    /// Writes that may wait for the WAL before new ones are refused as overloaded.
    pub max_pending_writes: usize,
    /// How often compaction and retention run.
    pub maintenance_interval: Duration,
    /// Where receive times, head ages and retention's "now" come from.
    pub clock: Arc<dyn Clock>,
    /// Bytes of block indexes kept in memory for queries (see [`crate::cache`]).
    pub cache_bytes: u64,
    /// Bytes of decoded spans the trace reads in flight, and of search indexes not in the
    /// cache the queries in flight load, may hold together, estimated from span counts
    /// before anything is read; a read or query that would pass it is refused as
    /// unavailable (HTTP 503, retry) instead of growing memory. One bigger than the whole
    /// budget runs when nothing else holds any of it; 0 turns the budget off.
    pub max_read_bytes: u64,
    /// Retention (age and bytes) leaves blocks without a handoff time alone: a cluster
    /// ingester's block is the only copy of its data until object storage has it (see
    /// [`Block::handoff`]).
    pub keep_until_handed_over: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            // Two heads are held while one is cut: 500K spans kept the standard profile's
            // 10M-span load at 1.18 GB peak RSS against 1.64 GB with 1M (docs/memory.md),
            // at no more CPU, and blocks of this size are not merged again.
            head_max_spans: 500_000,
            head_max_log_records: 1_000_000,
            head_max_bytes: 512 * 1024 * 1024,
            head_max_age: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_disk_bytes: None,
            max_unwritten_bytes: DEFAULT_MAX_UNWRITTEN_BYTES,
            compaction_target_spans: 1_000_000,
            compaction_window: Duration::from_secs(3600),
            // 1M spans of the standard profile (36 MB) in 9 s at least (docs/memory.md).
            compaction_bytes_per_second: 4 << 20,
            compaction_max_text_bytes: 512 << 20,
            max_pending_writes: 1024,
            maintenance_interval: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
            keep_until_handed_over: false,
        }
    }
}

/// Default of [`StoreConfig::max_read_bytes`].
pub const DEFAULT_MAX_READ_BYTES: u64 = 512 * 1024 * 1024;

/// Heap bytes one decoded span is counted as by the read budget: a span of the standard
/// `strand bench` profile (seven attributes, an event every fifth span) decodes to about
/// 1 KB; the head's records count 4 bytes per encoded byte (a record is decoded whole).
const DECODED_SPAN_BYTES: u64 = 1024;
const DECODED_PER_ENCODED_BYTE: u64 = 4;
/// A block's search index in memory, per span (`docs/memory.md`: ≈ 65 bytes), for the read
/// budget a query over blocks whose indexes are not in the cache reserves.
const SEARCH_INDEX_SPAN_BYTES: u64 = 65;

/// The bytes trace reads and queries in flight hold, against [`StoreConfig::max_read_bytes`].
#[derive(Debug)]
pub(crate) struct ReadBudget {
    limit: u64,
    in_use: Mutex<u64>,
}

/// Bytes of the read budget held by one read; given back when dropped.
#[derive(Debug)]
pub(crate) struct ReadReservation<'a> {
    budget: &'a ReadBudget,
    bytes: u64,
}

impl ReadBudget {
    /// Reserves `bytes` for `what` (a trace read, a search, ...). `own`: bytes the caller
    /// already holds (a search reading traces); when only those are held, the reservation
    /// is made even past the limit, as for a read alone.
    fn reserve(&self, bytes: u64, what: &str, own: u64) -> Result<ReadReservation<'_>, StoreError> {
        // A read bigger than the whole budget runs alone rather than never (and with a
        // budget of 0, every read counts 0: the budget is off).
        let bytes = bytes.min(self.limit);
        let mut used = self.in_use.lock();
        if used.saturating_add(bytes) > self.limit && *used > own {
            return Err(StoreError::Unavailable(format!(
                "trace reads and queries in flight hold {used} bytes of their {} byte budget \
                 (storage.max_read_size) and this {what} needs about {bytes}; retry shortly",
                self.limit
            )));
        }
        *used += bytes;
        Ok(ReadReservation { budget: self, bytes })
    }

    fn in_use(&self) -> u64 {
        *self.in_use.lock()
    }
}

impl Drop for ReadReservation<'_> {
    fn drop(&mut self) {
        *self.budget.in_use.lock() -= self.bytes;
    }
}

/// Default of [`StoreConfig::max_unwritten_bytes`]: twice the default head size.
pub const DEFAULT_MAX_UNWRITTEN_BYTES: u64 = 1024 * 1024 * 1024;

/// Default of [`StoreConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Counters describing what the store did.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Spans newly stored (duplicates not counted).
    pub spans_written: AtomicU64,
    /// Spans received again and skipped as duplicates in the head.
    pub spans_duplicate: AtomicU64,
    /// Log records written (a retried copy counts again here; readers see it once).
    pub logs_written: AtomicU64,
    /// WAL fsyncs.
    pub wal_fsyncs: AtomicU64,
    /// Total nanoseconds spent in WAL fsync.
    pub wal_fsync_nanos: AtomicU64,
    /// Writes that failed (disk full, i/o error).
    pub write_errors: AtomicU64,
    /// WAL records replayed at start.
    pub wal_replayed_records: AtomicU64,
    /// Nanoseconds the start spent replaying the WAL into the head.
    pub wal_replay_nanos: AtomicU64,
    /// Nanoseconds the start spent opening blocks (their small files).
    pub open_blocks_nanos: AtomicU64,
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
    /// Trace reads refused because the read budget was in use.
    pub reads_refused: AtomicU64,
    /// Damaged derived files (`index.bin`, `log_grams.bin`) rebuilt from their block's data.
    pub derived_files_repaired: AtomicU64,
    /// Compactions done.
    pub compactions: AtomicU64,
    /// Compactions that failed (their inputs are left out of compaction for a while).
    pub compaction_failures: AtomicU64,
    /// Microseconds compactions waited to stay within
    /// [`StoreConfig::compaction_bytes_per_second`].
    pub compaction_paced_micros: AtomicU64,
    /// Blocks deleted by retention (age or bytes).
    pub retention_deleted_blocks: AtomicU64,
    /// Writes refused because received data waiting for blocks reached
    /// [`StoreConfig::max_unwritten_bytes`].
    pub writes_refused_memory: AtomicU64,
    /// Writes refused because the WAL alone exceeded [`StoreConfig::max_disk_bytes`].
    pub writes_refused_disk_budget: AtomicU64,
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
    /// Log records in the live and frozen heads.
    pub head_log_records: usize,
    /// Log records in blocks.
    pub block_log_records: u64,
    /// Bytes of all blocks.
    pub block_bytes: u64,
    /// Bytes of the WAL.
    pub wal_bytes: u64,
    /// Heap bytes open blocks hold outside the block cache (their filters and Parquet
    /// footers).
    pub block_resident_bytes: u64,
    /// Encoded bytes of the live head and of frozen heads not yet written as blocks.
    pub unwritten_bytes: u64,
}

enum Cmd {
    Write { batch: SpanBatch, done: oneshot::Sender<Result<(), SinkError>> },
    WriteLogs { batch: LogBatch, done: oneshot::Sender<Result<(), SinkError>> },
    Flush { done: oneshot::Sender<FlushResult> },
    Shutdown,
}

struct Frozen {
    head: Head,
    through_segment: u64,
}

/// What a flush request hears: one failure is told to every request waiting on it.
type FlushResult = Result<(), Arc<StoreError>>;

enum FlushJob {
    Frozen { frozen: Arc<Frozen>, waiters: Vec<oneshot::Sender<FlushResult>> },
    Stop,
}

#[derive(Default)]
struct State {
    head: Head,
    frozen: Vec<Arc<Frozen>>,
    /// Oldest data first ([`by_data_age`]): reads, compaction and retention go in this
    /// order, so the first-received copy of a duplicate span wins everywhere.
    blocks: Vec<Arc<Block>>,
}

/// Which blocks a read sees. A cluster ingester hands its blocks over to object storage
/// (see [`Block::handoff`]): a querier's read carries its clock, and the ingester answers
/// for a block only before the block's handoff time while the querier reads the uploaded
/// copy from then on, so each block is read exactly once whatever the timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Every block.
    All,
    /// Blocks not handed over by this clock (an ingester's answer to a querier).
    HeldAt(u64),
    /// Blocks handed over by this clock (a querier's reading of object storage).
    HandedOverBy(u64),
}

impl Visibility {
    /// Whether a read with this visibility sees `block`.
    pub fn admits(self, block: &Block) -> bool {
        match self {
            Visibility::All => true,
            Visibility::HeldAt(clock) => block.handoff().is_none_or(|h| clock < h),
            Visibility::HandedOverBy(clock) => block.handoff().is_none_or(|h| h <= clock),
        }
    }

    fn blocks(self, blocks: &[Arc<Block>]) -> Vec<Arc<Block>> {
        blocks.iter().filter(|b| self.admits(b)).cloned().collect()
    }
}

/// Orders blocks by their earliest receive time, then id. Not by id alone: a block written
/// while a compaction merged older ones has an older id than the merged block, but newer
/// data.
fn by_data_age(a: &Arc<Block>, b: &Arc<Block>) -> std::cmp::Ordering {
    (a.meta.min_received_unix_nano, &a.meta.id).cmp(&(b.meta.min_received_unix_nano, &b.meta.id))
}

impl State {
    /// The earliest receive time of data not yet in a block (`u64::MAX`: none).
    fn unwritten_since(&self) -> u64 {
        self.frozen
            .iter()
            .map(|f| &f.head)
            .chain([&self.head])
            .filter(|h| !h.is_empty())
            .map(|h| h.min_received())
            .min()
            .unwrap_or(u64::MAX)
    }

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
    /// Block indexes loaded for queries.
    cache: Arc<BlockCache>,
    root: PathBuf,
    cfg: StoreConfig,
    state: RwLock<State>,
    stats: StoreStats,
    /// Serialises changes to the set of blocks on disk: block publication, retention, the
    /// scrub, and a compaction's choice of inputs and its publication (not its merge).
    maintenance: Mutex<()>,
    /// One compaction at a time (the maintenance thread's, or one asked for).
    compaction: Mutex<()>,
    /// Blocks the scrub could not read for a passing reason, and when.
    scrub_later: Mutex<std::collections::HashMap<String, Instant>>,
    /// Blocks a compaction failed with, and when (see [`maintenance::compact`]).
    compaction_later: Mutex<std::collections::HashMap<String, Instant>>,
    /// The open traces of recent blocks this process wrote, by block id (see
    /// [`flusher::OpenTraces`]).
    open_traces: flusher::OpenTraces,
    /// Set when the store is closing: the index thread stops.
    closing: std::sync::atomic::AtomicBool,
    /// What is failing right now, for readiness.
    health: Health,
    /// Encoded bytes of the live head, as of the WAL thread's last group.
    head_bytes: AtomicU64,
    /// Encoded bytes of frozen heads not yet written as blocks.
    frozen_bytes: AtomicU64,
    /// Bytes stored while the WAL alone exceeds the disk budget (retention has nothing
    /// left to delete); 0 otherwise. Set by maintenance.
    over_disk_budget: AtomicU64,
    /// What trace reads and queries in flight hold.
    reads: ReadBudget,
}

/// The last failure of the WAL and of block writes, cleared by the next success. A WAL
/// failure counts for [`WAL_FAILURE_MEMORY`] only: a node that readiness took out of
/// rotation gets no writes that could clear it.
#[derive(Default)]
struct Health {
    wal: Mutex<Option<(String, Instant)>>,
    flush: Mutex<Option<String>>,
}

/// How long a WAL failure keeps the store not ready without a new one.
const WAL_FAILURE_MEMORY: Duration = Duration::from_secs(30);

impl Health {
    fn wal_failed(&self, what: String) {
        *self.wal.lock() = Some((what, Instant::now()));
    }
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
        let replay_started = Instant::now();
        let (wal, replay_stats) = Wal::open(fs.clone(), &wal_dir, |framed, entry| match entry {
            WalEntry::Spans(record) => {
                let n = record.batch.span_count();
                // Encoded again for its layout: the same bytes as the WAL's when this
                // binary wrote them, and the canonical encoding of the record otherwise.
                let (bytes, layout) =
                    WalRecord::encode_with_layout(record.received_unix_nano, &record.tenant, &record.batch);
                drop(framed);
                let added = head.insert(bytes.into(), &layout, &record.batch, record.received_unix_nano);
                stats.spans_duplicate.fetch_add((n - added) as u64, Ordering::Relaxed);
            }
            WalEntry::Logs(record) => {
                head.logs.insert(framed, &record.batch, record.received_unix_nano);
            }
        })?;
        let replay_took = replay_started.elapsed();
        let head_bytes = head.bytes();
        let cache = Arc::new(BlockCache::new(cfg.cache_bytes));
        let open_started = Instant::now();
        let blocks = open_blocks(&fs, root, &stats, &cache)?;
        let open_took = open_started.elapsed();
        info!(
            wal_records = replay_stats.records,
            head_spans = head.span_count(),
            head_bytes,
            wal_replay_ms = replay_took.as_millis() as u64,
            blocks = blocks.len(),
            open_blocks_ms = open_took.as_millis() as u64,
            "store opened"
        );
        stats.wal_replay_nanos.store(replay_took.as_nanos() as u64, Ordering::Relaxed);
        stats.open_blocks_nanos.store(open_took.as_nanos() as u64, Ordering::Relaxed);
        stats.wal_replayed_records.store(replay_stats.records, Ordering::Relaxed);
        stats.wal_corrupt_records.store(replay_stats.corrupt_records, Ordering::Relaxed);
        stats.wal_torn_tails.store(replay_stats.torn_tails, Ordering::Relaxed);
        stats.wal_segments_set_aside.store(replay_stats.segments_set_aside, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            fs,
            cache,
            root: root.to_path_buf(),
            cfg: cfg.clone(),
            state: RwLock::new(State { head, frozen: Vec::new(), blocks }),
            stats,
            maintenance: Mutex::new(()),
            compaction: Mutex::new(()),
            scrub_later: Mutex::new(std::collections::HashMap::new()),
            compaction_later: Mutex::new(std::collections::HashMap::new()),
            open_traces: Default::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            health: Health::default(),
            head_bytes: AtomicU64::new(head_bytes),
            frozen_bytes: AtomicU64::new(0),
            over_disk_budget: AtomicU64::new(0),
            reads: ReadBudget { limit: cfg.max_read_bytes, in_use: Mutex::new(0) },
        });
        let (tx, rx) = mpsc::sync_channel(cfg.max_pending_writes.max(1));
        let (index_tx, index_rx) = mpsc::sync_channel(INDEX_QUEUE);
        let (flush_tx, flush_rx) = mpsc::channel();
        let (wake_tx, wake_rx) = mpsc::channel();
        let wal_inner = inner.clone();
        let wal_thread = std::thread::Builder::new()
            .name("strand-wal".into())
            .spawn(move || wal_loop(wal_inner, wal, rx, flush_tx, index_tx))
            .map_err(io(root))?;
        let flush_inner = inner.clone();
        let flush_thread = std::thread::Builder::new()
            .name("strand-flush".into())
            .spawn(move || flush_loop(&flush_inner, &flush_rx, &wake_tx))
            .map_err(io(root))?;
        let maintenance_inner = inner.clone();
        let maintenance_thread = std::thread::Builder::new()
            .name("strand-maintain".into())
            .spawn(move || maintenance_loop(&maintenance_inner, &wake_rx))
            .map_err(io(root))?;
        let index_inner = inner.clone();
        let index_thread = std::thread::Builder::new()
            .name("strand-index".into())
            .spawn(move || index_loop(&index_inner, index_rx))
            .map_err(io(root))?;
        Ok(Self {
            inner,
            tx,
            threads: Mutex::new(vec![wal_thread, flush_thread, index_thread, maintenance_thread]),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// The block cache (block indexes loaded for queries).
    pub fn block_cache(&self) -> &BlockCache {
        &self.inner.cache
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
        self.submit(Cmd::Write { batch, done }, rx).await
    }

    /// Queues a write for the WAL thread and waits for its answer; a full queue, or data
    /// waiting for blocks over its memory or disk budget, is refused at once.
    async fn submit(&self, cmd: Cmd, rx: oneshot::Receiver<Result<(), SinkError>>) -> Result<(), SinkError> {
        self.inner.admit()?;
        match self.tx.try_send(cmd) {
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

    /// Writes log records; see [`LogStore::write_logs`].
    pub async fn append_logs(&self, batch: LogBatch) -> Result<(), SinkError> {
        if batch.record_count() == 0 {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.submit(Cmd::WriteLogs { batch, done }, rx).await
    }

    /// Cuts the head into a block now and waits until the block is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Cmd::Flush { done }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map_err(|e| {
            StoreError::Unavailable(format!(
                "cutting the head into a block failed (the data stays in the wal): {e}"
            ))
        })
    }

    /// Spans of a trace from head, frozen heads and blocks; blocking (reads files).
    pub fn get_trace_blocking(&self, id: TraceId) -> Result<Option<Trace>, StoreError> {
        self.inner.get_trace(id, Visibility::All)
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
            counter(
                "store_log_records_written_total",
                "Log records written (a retried copy counts again; reads return it once).",
                c(&s.logs_written),
            ),
            counter("wal_fsyncs_total", "WAL fsync calls.", c(&s.wal_fsyncs)),
            counter("wal_fsync_seconds_total", "Time spent in WAL fsync.", c(&s.wal_fsync_nanos) / 1e9),
            counter("store_write_errors_total", "Failed WAL writes.", c(&s.write_errors)),
            counter(
                "wal_replayed_records_total",
                "WAL records replayed at start.",
                c(&s.wal_replayed_records),
            ),
            gauge(
                "store_start_wal_replay_seconds",
                "Time the last start spent replaying the WAL into the head (bounded by the head's size).",
                c(&s.wal_replay_nanos) / 1e9,
            ),
            gauge(
                "store_start_open_blocks_seconds",
                "Time the last start spent opening blocks (their small files; a scrub checks the rest after).",
                c(&s.open_blocks_nanos) / 1e9,
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
            counter(
                "derived_files_repaired_total",
                "Damaged derived block files (index.bin, log_grams.bin) rebuilt from the block's data at start.",
                c(&s.derived_files_repaired),
            ),
            counter("compactions_total", "Compactions.", c(&s.compactions)),
            counter(
                "compaction_failures_total",
                "Compactions that failed; the input whose file failed (else all of them) is left out of compaction for ten minutes.",
                c(&s.compaction_failures),
            ),
            counter(
                "compaction_paced_seconds_total",
                "Time compactions waited to stay within storage.compaction_rate.",
                c(&s.compaction_paced_micros) / 1e6,
            ),
            counter(
                "store_reads_refused_total",
                "Trace reads and queries refused (503) because reads and queries in flight held storage.max_read_size.",
                c(&s.reads_refused),
            ),
            gauge(
                "store_read_bytes",
                "Estimated bytes held by trace reads (decoded spans) and queries (search indexes not in the cache) in flight.",
                self.reads.in_use() as f64,
            ),
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
            gauge(
                "head_log_records",
                "Log records in memory, not yet in blocks.",
                snap.head_log_records as f64,
            ),
            gauge("block_log_records", "Log records in blocks.", snap.block_log_records as f64),
            gauge("disk_bytes", "Bytes of blocks and WAL.", (snap.block_bytes + snap.wal_bytes) as f64),
            gauge(
                "store_unwritten_bytes",
                "Encoded bytes of received spans and log records in memory, not yet in blocks.",
                snap.unwritten_bytes as f64,
            ),
            gauge(
                "store_unwritten_budget_bytes",
                "The limit of unwritten bytes (storage.max_unwritten_size).",
                self.cfg.max_unwritten_bytes as f64,
            ),
            MetricFamily::new(
                "strand_store_writes_refused_total",
                "Writes refused before the WAL: data waiting for blocks at storage.max_unwritten_size (memory, 429), or the WAL alone over storage.max_disk_size (disk_budget, 503).",
                strand_core::MetricKind::Counter,
            )
            .with(vec![("reason", "memory".into())], c(&s.writes_refused_memory))
            .with(vec![("reason", "disk_budget".into())], c(&s.writes_refused_disk_budget)),
            counter(
                "block_cache_hits_total",
                "Block indexes a query found in the block cache.",
                c(&self.cache.stats.hits),
            ),
            counter(
                "block_cache_misses_total",
                "Block indexes a query loaded from disk.",
                c(&self.cache.stats.misses),
            ),
            counter(
                "block_cache_evictions_total",
                "Block indexes dropped from the block cache to keep within storage.cache_size.",
                c(&self.cache.stats.evictions),
            ),
            gauge(
                "block_cache_bytes",
                "Bytes of block indexes held by the block cache.",
                self.cache.bytes() as f64,
            ),
            gauge(
                "block_cache_budget_bytes",
                "The block cache's budget (storage.cache_size).",
                self.cache.budget() as f64,
            ),
            gauge(
                "block_resident_bytes",
                "Bytes every open block keeps in memory whatever the cache holds (trace-id and text filters, Parquet footers).",
                snap.block_resident_bytes as f64,
            ),
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
    /// Encoded bytes received and not yet in blocks: the live head and frozen heads.
    fn unwritten_bytes(&self) -> u64 {
        self.head_bytes.load(Ordering::Relaxed) + self.frozen_bytes.load(Ordering::Relaxed)
    }

    /// The head is cut at this many encoded bytes: its own limit, half the memory for
    /// unwritten data and a quarter of the disk budget, whichever is smallest.
    fn head_cut_bytes(&self) -> u64 {
        let cfg = &self.cfg;
        let mut cap = cfg.head_max_bytes.min(cfg.max_unwritten_bytes / 2);
        if let Some(budget) = cfg.max_disk_bytes {
            cap = cap.min(budget / 4);
        }
        cap.max(1)
    }

    /// Refuses a write while frozen heads wait and the unwritten data is at its memory
    /// limit (overloaded: block writes go first), or while the WAL alone is over the disk
    /// budget (unavailable until blocks are written and old ones deleted).
    fn admit(&self) -> Result<(), SinkError> {
        let frozen = self.frozen_bytes.load(Ordering::Relaxed);
        let unwritten = self.unwritten_bytes();
        if frozen > 0 && unwritten >= self.cfg.max_unwritten_bytes {
            self.stats.writes_refused_memory.fetch_add(1, Ordering::Relaxed);
            return Err(SinkError::Overloaded(format!(
                "{unwritten} bytes of received data wait to be written to blocks, at the limit of {} \
                 (storage.max_unwritten_size); retry later",
                self.cfg.max_unwritten_bytes
            )));
        }
        let stored = self.over_disk_budget.load(Ordering::Relaxed);
        if stored > 0 {
            self.stats.writes_refused_disk_budget.fetch_add(1, Ordering::Relaxed);
            return Err(SinkError::Unavailable(format!(
                "the disk budget is full: {stored} bytes stored, over the {}-byte budget \
                 (storage.max_disk_size), and only data not yet in blocks is left to delete; retry later",
                self.cfg.max_disk_bytes.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Why writes would fail right now (see [`TraceStore::not_ready`]).
    fn not_ready(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((e, at)) = &*self.health.wal.lock()
            && at.elapsed() < WAL_FAILURE_MEMORY
        {
            out.push(format!("wal: the last write failed: {e}"));
        }
        if let Some(e) = &*self.health.flush.lock() {
            out.push(format!("flush: writing a block fails (retrying): {e}"));
        }
        let (frozen, unwritten) = (self.frozen_bytes.load(Ordering::Relaxed), self.unwritten_bytes());
        if frozen > 0 && unwritten >= self.cfg.max_unwritten_bytes {
            out.push(format!(
                "memory: {unwritten} bytes wait to be written to blocks, at the {}-byte limit",
                self.cfg.max_unwritten_bytes
            ));
        }
        if let Some(budget) = self.cfg.max_disk_bytes {
            let snap = self.snapshot();
            let stored = snap.block_bytes + snap.wal_bytes;
            if stored > budget {
                out.push(format!("disk: {stored} bytes stored, over the {budget}-byte budget"));
            }
        }
        out
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
            head_log_records: st.head.logs.count()
                + st.frozen.iter().map(|f| f.head.logs.count()).sum::<usize>(),
            block_log_records: st.blocks.iter().map(|b| b.meta.log_count).sum(),
            block_bytes: st.blocks.iter().map(|b| b.disk_bytes).sum(),
            wal_bytes: Wal::disk_bytes(self.fs.as_ref(), &self.root.join("wal")),
            block_resident_bytes: st
                .blocks
                .iter()
                .map(|b| b.resident_bytes() + b.logs.as_ref().map_or(0, |l| l.resident_bytes()))
                .sum(),
            unwritten_bytes: st.head.bytes() + st.frozen.iter().map(|f| f.head.bytes()).sum::<u64>(),
        }
    }

    /// Runs `f` over a snapshot of every source's search index (the heads' indexes brought
    /// up to date first, outside the state lock). `as_of` defaults to the newest receive
    /// time visible now.
    ///
    /// The search indexes of the blocks overlapping `range` that are not in the cache are
    /// loaded while `f` runs: their estimated size is reserved from the read budget
    /// (`storage.max_read_size`) first, so queries over long ranges running together are
    /// refused (unavailable, retry) rather than holding more than it.
    fn with_sources<T>(
        &self,
        as_of: Option<u64>,
        vis: Visibility,
        range: TimeRange,
        f: impl FnOnce(&Sources, u64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (blocks, heads, newest) = {
            let st = self.state.read();
            let mut heads: Vec<_> = st.frozen.iter().map(|f| f.head.index_handle()).collect();
            heads.push(st.head.index_handle());
            (vis.blocks(&st.blocks), heads, st.newest_received())
        };
        let loading: u64 = blocks
            .iter()
            .filter(|b| {
                let (start, end) = b.time_range();
                start <= range.end_unix_nano && end >= range.start_unix_nano && !b.search_index_cached()
            })
            .map(|b| b.meta.span_count.saturating_mul(SEARCH_INDEX_SPAN_BYTES))
            .sum();
        let reserved = self.reads.reserve(loading, "query's search indexes", 0).inspect_err(|_| {
            self.stats.reads_refused.fetch_add(1, Ordering::Relaxed);
        })?;
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
            g.extend(*first, tail).map_err(|e| e.corrupt_at("head"))?;
            guards.push(parking_lot::RwLockWriteGuard::downgrade(g));
        }
        let mut sources: Vec<Source> = blocks.iter().cloned().map(Source::block).collect();
        sources.extend(guards.iter().map(|g| Source::Head(&g.builder as &dyn IndexView)));
        f(&Sources { sources, as_of: as_of.unwrap_or(newest) }, reserved.bytes)
    }

    fn search(&self, q: &TraceQuery, vis: Visibility) -> Result<SearchPage, StoreError> {
        let as_of = q.cursor.map(|c| c.as_of_unix_nano);
        let range = TimeRange { start_unix_nano: q.start_unix_nano, end_unix_nano: q.end_unix_nano };
        // The traces a search reads (to check span conditions, to count a trace held in
        // several sources), one at a time, are reserved beside its own reservation, and
        // go ahead past the budget when only the search holds it (as a read alone does).
        self.with_sources(as_of, vis, range, |s, own| {
            s.search(q, &|id| Ok(self.read_traces(&[id], vis, own)?.pop()))
        })
    }

    fn get_trace(&self, id: TraceId, vis: Visibility) -> Result<Option<Trace>, StoreError> {
        Ok(self.get_traces(&[id], vis)?.pop())
    }

    /// Which of `ids` have spans in the heads or in a block `vis` admits, without decoding.
    fn holds(&self, ids: &[TraceId], vis: Visibility) -> Result<Vec<bool>, StoreError> {
        let (blocks, in_heads) = {
            let st = self.state.read();
            let in_heads: Vec<bool> = ids
                .iter()
                .map(|id| {
                    !st.head.trace_records(id).is_empty()
                        || st.frozen.iter().any(|f| !f.head.trace_records(id).is_empty())
                })
                .collect();
            (vis.blocks(&st.blocks), in_heads)
        };
        let mut out = Vec::with_capacity(ids.len());
        for (id, in_head) in ids.iter().zip(in_heads) {
            let mut held = in_head;
            for b in blocks.iter().filter(|b| b.may_contain(id)) {
                if held {
                    break;
                }
                held = b.trace_entry(id)?.is_some();
            }
            out.push(held);
        }
        Ok(out)
    }

    /// The stored traces of `ids`, in that order. The state is looked at once for all of
    /// them; under its lock only `Arc`s and record handles are cloned, and decoding happens
    /// after it is released, so lookups never hold up the WAL thread's inserts.
    fn get_traces(&self, ids: &[TraceId], vis: Visibility) -> Result<Vec<Trace>, StoreError> {
        self.read_traces(ids, vis, 0)
    }

    /// [`Self::get_traces`] for a caller holding `own` bytes of the read budget already
    /// (see [`ReadBudget::reserve`]).
    fn read_traces(&self, ids: &[TraceId], vis: Visibility, own: u64) -> Result<Vec<Trace>, StoreError> {
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
            (vis.blocks(&st.blocks), records)
        };
        // One reservation for the whole call, held until the traces are returned (they are
        // in memory until then): reserving trace by trace could refuse a call's second big
        // trace for its own first forever.
        // The blocks' parts of each trace are looked up once, for the estimate and the read.
        let mut estimate = 0u64;
        let mut parts = Vec::with_capacity(ids.len());
        for (id, records) in ids.iter().zip(&records) {
            let mut found = Vec::new();
            for b in blocks.iter().filter(|b| b.may_contain(id)) {
                if let Some(entry) = b.trace_entry(id)? {
                    found.push((b, entry));
                }
            }
            let stored: u64 = found.iter().map(|(_, e)| u64::from(e.rows)).sum();
            parts.push(found);
            let head: u64 = records.iter().map(|r| r.len() as u64).sum();
            estimate = estimate
                .saturating_add(stored.saturating_mul(DECODED_SPAN_BYTES))
                .saturating_add(head.saturating_mul(DECODED_PER_ENCODED_BYTE));
        }
        let _reserved = self.reads.reserve(estimate, "read", own).inspect_err(|_| {
            self.stats.reads_refused.fetch_add(1, Ordering::Relaxed);
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for ((id, records), found) in ids.iter().zip(records).zip(parts) {
            let mut spans = decode_trace(&records, id).map_err(|e| e.corrupt_at("head"))?;
            // Older copies first, so the first-written copy of a duplicate wins.
            let mut from_blocks = Vec::new();
            for (b, entry) in found {
                from_blocks.extend(b.read_entry(entry)?);
            }
            from_blocks.append(&mut spans);
            if !from_blocks.is_empty() {
                out.push(Trace::from_spans(*id, from_blocks));
            }
        }
        Ok(out)
    }
}

impl Inner {
    /// The log records of a trace (of one span), each once, ordered by time: head handles
    /// are cloned under the lock, decoding and block reads happen after it.
    fn trace_logs(
        &self,
        id: TraceId,
        span: Option<SpanId>,
        vis: Visibility,
    ) -> Result<Vec<StoredLog>, StoreError> {
        let (blocks, records) = {
            let st = self.state.read();
            let mut records = Vec::new();
            for f in &st.frozen {
                records.extend(f.head.logs.trace_records(&id));
            }
            records.extend(st.head.logs.trace_records(&id));
            (vis.blocks(&st.blocks), records)
        };
        // Older copies first, so the first-written copy of a repeated record wins.
        let mut out = Vec::new();
        for b in &blocks {
            if let Some(logs) = &b.logs {
                out.extend(logs.read_trace(&id, span)?);
            }
        }
        let keep =
            |l: &StoredLog| l.record.trace_id == Some(id) && span.is_none_or(|s| l.record.span_id == Some(s));
        out.extend(decode_records(&records, keep).map_err(|e| e.corrupt_at("head"))?);
        Ok(strand_core::logs::dedup_and_sort(out))
    }

    /// One page of a log search: each block's matching rows are found from the columns the
    /// query needs; only rows that can be on the page are decoded whole.
    fn find_logs(&self, q: &LogQuery, vis: Visibility) -> Result<LogPage, StoreError> {
        let lower = q.text.as_ref().map(|t| t.to_lowercase());
        let (start, end) = (q.range.start_unix_nano, q.range.end_unix_nano);
        let (blocks, records) = {
            let st = self.state.read();
            let mut records = Vec::new();
            for f in &st.frozen {
                records.extend(f.head.logs.records_in(start, end));
            }
            records.extend(st.head.logs.records_in(start, end));
            (vis.blocks(&st.blocks), records)
        };
        let admitted = |l: &StoredLog| {
            let t = l.record.effective_time();
            q.range.overlaps(t, t) && q.cursor.is_none_or(|c| c.admits(l.order_key()))
        };
        let head = decode_records(&records, |l| admitted(l) && q.matches(l, lower.as_deref()))
            .map_err(|e| e.corrupt_at("head"))?;
        // (time, block, row) of matching block rows not excluded by the cursor's time.
        // Blocks are scanned newest first; once the rows found fill the page with rows newer
        // than anything the blocks left could hold, those are not scanned. A record can be
        // in two blocks (a client's retry after a cut, a replay after a crash), so rows may
        // count one record twice: when the page comes out short, more rows are wanted and
        // the search goes on where it stopped.
        let mut order: Vec<usize> = (0..blocks.len()).filter(|&b| blocks[b].logs.is_some()).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(blocks[b].meta.max_log_time_unix_nano));
        let mut rows: Vec<(u64, usize, u32)> = Vec::new();
        let mut scanned = 0;
        let mut need = q.limit.saturating_add(1);
        loop {
            while scanned < order.len() {
                let bi = order[scanned];
                scanned += 1;
                let b = &blocks[bi];
                let Some(logs) = &b.logs else { continue };
                if b.meta.max_log_time_unix_nano < start || b.meta.min_log_time_unix_nano > end {
                    continue;
                }
                for (t, row) in logs.search(q, lower.as_deref())? {
                    if q.cursor.is_none_or(|c| t <= c.time_unix_nano) {
                        rows.push((t, bi, row));
                    }
                }
                let next_max = order.get(scanned).map(|&nb| blocks[nb].meta.max_log_time_unix_nano);
                if next_max.is_some_and(|m| page_is_full(&mut rows, q, need, m)) {
                    break;
                }
            }
            let (candidates, every_row) = self.materialize(&blocks, &mut rows, q, need, &head)?;
            let page = strand_core::logs::page_of(q, candidates);
            if page.next_cursor.is_some() || (every_row && scanned >= order.len()) {
                return Ok(page);
            }
            need = need.saturating_mul(2);
        }
    }

    /// The head's matches and the newest `need` block rows (plus rows at the cursor's time
    /// and ties at the cut, which may belong on the page), decoded; and whether that was
    /// every row found.
    fn materialize(
        &self,
        blocks: &[Arc<Block>],
        rows: &mut [(u64, usize, u32)],
        q: &LogQuery,
        need: usize,
        head: &[StoredLog],
    ) -> Result<(Vec<StoredLog>, bool), StoreError> {
        rows.sort_unstable_by(|a, b| b.cmp(a));
        let at_cursor = q.cursor.map_or(0, |c| rows.iter().take_while(|r| r.0 == c.time_unix_nano).count());
        let mut keep = rows.len().min(need.saturating_add(at_cursor));
        if let Some(&(last, _, _)) = keep.checked_sub(1).and_then(|i| rows.get(i)) {
            while rows.get(keep).is_some_and(|r| r.0 == last) {
                keep += 1;
            }
        }
        let mut wanted: Vec<(usize, u32)> = rows[..keep].iter().map(|&(_, b, r)| (b, r)).collect();
        wanted.sort_unstable();
        let mut out = head.to_vec();
        for chunk in wanted.chunk_by(|a, b| a.0 == b.0) {
            let Some(logs) = &blocks[chunk[0].0].logs else { continue };
            let ids: Vec<u32> = chunk.iter().map(|r| r.1).collect();
            out.extend(logs.read_rows(&ids)?);
        }
        Ok((out, keep == rows.len()))
    }
}

/// Whether `rows` already hold `need` rows (besides those at the cursor's time, which may
/// fall on either side of it) newer than `newer_than`, so no row at or before that time
/// can be among the newest `need`.
fn page_is_full(rows: &mut [(u64, usize, u32)], q: &LogQuery, need: usize, newer_than: u64) -> bool {
    let at_cursor = q.cursor.map_or(0, |c| rows.iter().filter(|r| r.0 == c.time_unix_nano).count());
    let need = need.saturating_add(at_cursor);
    if rows.len() < need || need == 0 {
        return false;
    }
    let (_, kth, _) = rows.select_nth_unstable_by(need - 1, |a, b| b.0.cmp(&a.0));
    kth.0 > newer_than
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

    fn unwritten_bytes(&self) -> u64 {
        self.inner.unwritten_bytes()
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

    fn not_ready(&self) -> BoxFuture<'_, Vec<String>> {
        let reasons = blocking(&self.inner, |i| Ok(i.not_ready()));
        Box::pin(async move { reasons.await.unwrap_or_else(|e| vec![format!("store: {e}")]) })
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

/// Log reads on tokio's blocking pool.
impl LogStore for Store {
    fn write_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.append_logs(batch))
    }

    fn trace_logs(
        &self,
        trace_id: TraceId,
        span_id: Option<SpanId>,
    ) -> BoxFuture<'_, Result<Vec<StoredLog>, StoreError>> {
        reads::trace_logs(&self.inner, Visibility::All, trace_id, span_id)
    }

    fn find_logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        reads::find_logs(&self.inner, Visibility::All, query)
    }
}

/// Reads on tokio's blocking pool.
impl TraceReader for Store {
    fn get_trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        reads::get_trace(&self.inner, Visibility::All, trace_id)
    }

    fn get_traces(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Trace>, StoreError>> {
        reads::get_traces(&self.inner, Visibility::All, ids)
    }

    fn holds(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<bool>, StoreError>> {
        reads::holds(&self.inner, Visibility::All, ids)
    }

    fn find_traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        reads::find_traces(&self.inner, Visibility::All, query)
    }

    fn services(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        reads::services(&self.inner, Visibility::All, range)
    }

    fn operations(
        &self,
        service: String,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        reads::operations(&self.inner, Visibility::All, service, range)
    }

    fn attributes(
        &self,
        service: Option<String>,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        reads::attributes(&self.inner, Visibility::All, service, range)
    }

    fn dependencies(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        reads::dependencies(&self.inner, Visibility::All, range)
    }
}
