//! The flusher thread: frozen heads become blocks, written atomically, oldest first; each
//! written block wakes the maintenance thread (the disk budget may now be exceeded).

use super::*;
use crate::cache::FILTER_FILE;
use crate::logs::{LOG_GRAMS_FILE, LOG_TRACES_FILE, LOGS_FILE};
use std::collections::HashMap;

pub(super) fn flush_loop(inner: &Inner, rx: &Receiver<FlushJob>, wake_maintenance: &mpsc::Sender<()>) {
    let mut queue = FlushQueue::default();
    loop {
        let wait = queue
            .retry_at
            .map_or(Duration::from_millis(500), |at| at.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(FlushJob::Frozen { frozen, waiters }) => queue.push(inner, frozen, waiters),
            Ok(FlushJob::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if queue.write_due(inner) {
            let _ = wake_maintenance.send(());
        }
    }
}

/// Frozen heads waiting to be written, oldest first (their WAL segments are deleted in that
/// order), and the failure that holds them up.
#[derive(Default)]
struct FlushQueue {
    waiting: std::collections::VecDeque<(Arc<Frozen>, Vec<oneshot::Sender<FlushResult>>)>,
    /// The last write's failure: flush requests arriving meanwhile hear it at once instead
    /// of waiting for a retry that may take as long as the disk stays full.
    failure: Option<Arc<StoreError>>,
    retry_at: Option<Instant>,
    delay: Duration,
}

impl FlushQueue {
    fn push(&mut self, inner: &Inner, frozen: Arc<Frozen>, mut waiters: Vec<oneshot::Sender<FlushResult>>) {
        let pending = inner.state.read().frozen.iter().any(|f| Arc::ptr_eq(f, &frozen));
        if !pending {
            // Already written (a flush request waiting on it found it published).
            waiters.into_iter().for_each(|w| drop(w.send(Ok(()))));
            return;
        }
        if let Some(e) = &self.failure {
            waiters.drain(..).for_each(|w| drop(w.send(Err(e.clone()))));
        }
        match self.waiting.iter_mut().find(|(f, _)| Arc::ptr_eq(f, &frozen)) {
            Some((_, queued)) => queued.extend(waiters),
            None => self.waiting.push_back((frozen, waiters)),
        }
    }

    /// Writes the waiting frozen heads in order until one fails (then retried with backoff,
    /// up to 5 s apart, until it succeeds or the store closes; its WAL segments keep the
    /// data safe meanwhile). Returns whether a block was written.
    fn write_due(&mut self, inner: &Inner) -> bool {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        let mut wrote = false;
        while let Some((frozen, waiters)) = self.waiting.front_mut() {
            let pending = inner.state.read().frozen.iter().any(|f| Arc::ptr_eq(f, frozen));
            match if pending { write_frozen(inner, frozen) } else { Ok(()) } {
                Ok(()) => {
                    waiters.drain(..).for_each(|w| drop(w.send(Ok(()))));
                    self.waiting.pop_front();
                    (self.failure, self.retry_at, self.delay) = (None, None, Duration::ZERO);
                    *inner.health.flush.lock() = None;
                    wrote = true;
                }
                Err(e) => {
                    let e = Arc::new(e);
                    inner.stats.block_write_errors.fetch_add(1, Ordering::Relaxed);
                    *inner.health.flush.lock() = Some(e.to_string());
                    warn!(error = %e, "block write failed; will retry");
                    waiters.drain(..).for_each(|w| drop(w.send(Err(e.clone()))));
                    self.delay = (self.delay * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                    self.retry_at = Some(Instant::now() + self.delay);
                    self.failure = Some(e);
                    break;
                }
            }
        }
        wrote
    }
}

pub(super) fn write_frozen(inner: &Inner, frozen: &Arc<Frozen>) -> Result<(), StoreError> {
    let _guard = inner.maintenance.lock();
    let corrupt_head = |e: FormatError| e.corrupt_at("head");
    let logs = frozen.head.logs.take_builder().map_err(corrupt_head)?;
    // The head's own search index (kept up to date by the index thread) becomes the block's.
    let (handle, first, tail) = frozen.head.index_handle();
    handle.write().extend(first, &tail).map_err(corrupt_head)?;
    // Blocks are read for edges across blocks without holding the head index's lock (the
    // index thread's catch-up would wait for it, and searches behind it).
    let (mut ids, open, range) = {
        use crate::index::IndexView;
        let guard = handle.read();
        let ids = guard.builder.trace_ids().copied().collect::<Vec<_>>();
        (ids, guard.builder.open_trace_ids(), guard.builder.time_range())
    };
    ids.sort_unstable();
    let shared = traces_in_blocks(inner, &ids, &open, range, frozen.head.min_received());
    let index = {
        let guard = handle.read();
        let mut links = Vec::new();
        let mut counted = std::collections::HashSet::new();
        for (id, spans) in &shared {
            links.extend(guard.builder.links_with(id, spans));
            counted.extend(guard.builder.counted_in(id, spans).into_iter().map(|span| (*id, span)));
        }
        guard.builder.finish_with(links, &counted)
    };
    let (min_received, max_received) = (frozen.head.min_received(), frozen.head.max_received());
    let spans = |id: String| frozen.head.encode_spans(id, min_received, max_received);
    let block = write_block(inner, spans, logs, &index, &[])?;
    inner.open_traces.record(&block.meta.id, open);
    inner.open_traces.record_cut(&block.meta.id, block.meta.max_received_unix_nano, ids);
    {
        let mut st = inner.state.write();
        st.blocks.push(Arc::new(block));
        let waiting = st.frozen.len();
        st.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
        if st.frozen.len() < waiting {
            inner.frozen_bytes.fetch_sub(frozen.head.bytes(), Ordering::Relaxed);
        }
    }
    inner.stats.blocks_written.fetch_add(1, Ordering::Relaxed);
    // The block is durable and published: segments that could not be deleted now are
    // deleted with the next cut's (a restart would replay spans the block already holds,
    // which reads and compaction take once).
    if let Err(e) = Wal::remove_through(inner.fs.as_ref(), &inner.root.join("wal"), frozen.through_segment) {
        warn!(error = %e, "could not delete the wal segments of a written block; the next cut will");
    }
    if inner.over_disk_budget.load(Ordering::Relaxed) > 0 {
        // The WAL just shrank: writes refused for the disk budget need not wait for the
        // maintenance thread (which may be in a long compaction) to notice.
        super::maintenance::recheck_disk_budget(inner);
    }
    Ok(())
}

/// The open traces (see [`IndexBuilder::open_trace_ids`]) of the blocks this process
/// wrote, cut or merged, most recent last. A cut asks a block in its window only about
/// the head's own open traces and those of the block's that the head holds: an edge
/// between the two is a child on one side whose parent is on the other, so that child's
/// trace is open on its side. A block not known here (written before a restart, or
/// forgotten) is asked about every trace of the head.
#[derive(Default)]
pub(super) struct OpenTraces(Mutex<KnownOpen>);

#[derive(Default)]
struct KnownOpen {
    blocks: std::collections::VecDeque<(String, Arc<[TraceId]>)>,
    /// Trace ids held, all blocks together.
    ids: usize,
    /// Every trace id (sorted) of the blocks cut in the last [`RETRY_WINDOW_NANOS`] (by
    /// their latest receive time), with that time, at most [`MAX_CUT_IDS`] ids: a retried
    /// batch in a later head may repeat spans they hold (see [`traces_in_blocks`]).
    cut: std::collections::VecDeque<(String, u64, Arc<[TraceId]>)>,
    /// Trace ids in `cut`.
    cut_ids: usize,
}

/// Open traces of one block beyond which it is not remembered (it is asked about every
/// trace then).
const MAX_OPEN_TRACES: usize = 64 * 1024;
/// Open trace ids remembered, all blocks together (16 MiB): the oldest blocks are
/// forgotten first (cuts look in the last ten minutes only).
const MAX_REMEMBERED: usize = 1024 * 1024;

impl OpenTraces {
    pub(super) fn record(&self, block: &str, open: Vec<TraceId>) {
        if open.len() > MAX_OPEN_TRACES {
            return;
        }
        let mut known = self.0.lock();
        known.ids += open.len();
        known.blocks.push_back((block.to_owned(), open.into()));
        while known.ids > MAX_REMEMBERED {
            let Some((_, gone)) = known.blocks.pop_front() else { break };
            known.ids -= gone.len();
        }
    }

    /// Remembers every trace (`ids`, sorted) of a block just cut, received until
    /// `max_received`, forgetting blocks cut longer ago than [`RETRY_WINDOW_NANOS`] before
    /// it and the oldest beyond [`MAX_CUT_IDS`].
    pub(super) fn record_cut(&self, block: &str, max_received: u64, ids: Vec<TraceId>) {
        if ids.len() > MAX_CUT_IDS {
            return;
        }
        let (count, ids): (usize, Arc<[TraceId]>) = (ids.len(), ids.into());
        let mut known = self.0.lock();
        known.cut_ids += count;
        known.cut.push_back((block.to_owned(), max_received, ids));
        while let Some((_, oldest, gone)) = known.cut.front() {
            if known.cut_ids <= MAX_CUT_IDS && oldest.saturating_add(RETRY_WINDOW_NANOS) >= max_received {
                break;
            }
            known.cut_ids -= gone.len();
            known.cut.pop_front();
        }
    }

    /// The traces of the blocks cut [`RETRY_WINDOW_NANOS`] or less before
    /// `received_from` (by their latest receive time), by block id; some may be gone since
    /// (merged, deleted).
    fn cut_since(&self, received_from: u64) -> HashMap<String, Arc<[TraceId]>> {
        let known = self.0.lock();
        known
            .cut
            .iter()
            .filter(|(_, max_received, _)| max_received.saturating_add(RETRY_WINDOW_NANOS) >= received_from)
            .map(|(id, _, ids)| (id.clone(), ids.clone()))
            .collect()
    }

    /// The open traces of the blocks `blocks` holds that are known, forgetting those of
    /// blocks it no longer holds (deleted, merged).
    fn of(&self, blocks: &[Arc<Block>]) -> HashMap<String, Arc<[TraceId]>> {
        let current: std::collections::HashSet<&str> = blocks.iter().map(|b| b.meta.id.as_str()).collect();
        let mut known = self.0.lock();
        known.blocks.retain(|(id, _)| current.contains(id.as_str()));
        known.ids = known.blocks.iter().map(|(_, open)| open.len()).sum();
        known.blocks.iter().cloned().collect()
    }
}

/// Blocks cut this long or less before a head began are asked about every trace both
/// hold: an exporter retries a batch whose acknowledgement it lost within seconds (its
/// request timeout, then a backoff).
const RETRY_WINDOW_NANOS: u64 = 60 * 1_000_000_000;
/// Trace ids of the blocks cut in that window remembered (16 MiB; a minute of 100K spans/s
/// in 10-span traces is 600K).
const MAX_CUT_IDS: usize = 1024 * 1024;

/// The spans blocks already written hold of the traces of a head being cut (`ids`, sorted;
/// `open`, its open traces; span times `range`; `received_from`, its earliest receive
/// time), a trace of a block at a time: for the dependency edges between the two (a trace
/// cut across blocks), and for retried copies in the head of spans a block holds, whose
/// edges that block counted. Each block whose times are near the head's is asked, through
/// its trace filter and trace index, about the traces that may have such an edge (see
/// [`OpenTraces`]); the blocks cut a minute or less before the head began, about every
/// trace both hold (a retried batch may hold whole traces, open nowhere), and a block
/// merged from one of them since, about every trace of the head. Earlier heads are all
/// blocks by now (the flusher writes them in order); later ones find their edges to this
/// one when they are cut. A block that cannot be read is left out, logged.
fn traces_in_blocks(
    inner: &Inner,
    ids: &[TraceId],
    open: &[TraceId],
    range: (u64, u64),
    received_from: u64,
) -> Vec<(TraceId, Vec<strand_core::StoredSpan>)> {
    let (from, to) = (
        range.0.saturating_sub(crate::index::LINK_WINDOW_NANOS),
        range.1.saturating_add(crate::index::LINK_WINDOW_NANOS),
    );
    let blocks: Vec<Arc<Block>> = inner.state.read().blocks.clone();
    let known = inner.open_traces.of(&blocks);
    let recent = inner.open_traces.cut_since(received_from);
    let near = blocks.into_iter().filter(|b| {
        let (s, e) = b.time_range();
        s <= to && e >= from
    });
    let mut shared = Vec::new();
    for b in near {
        // A block merged from one cut in the window (since) is asked about every trace.
        let merged_recent = b.meta.compacted_from.iter().any(|input| recent.contains_key(input));
        let asked: std::borrow::Cow<[TraceId]> = match known.get(&b.meta.id) {
            Some(theirs) if !merged_recent => {
                let mut asked: Vec<TraceId> = open.to_vec();
                asked.extend(theirs.iter().filter(|id| ids.binary_search(id).is_ok()));
                if let Some(all) = recent.get(&b.meta.id) {
                    asked.extend(crate::index::intersect(all, ids));
                }
                asked.sort_unstable();
                asked.dedup();
                asked.into()
            }
            _ => ids.into(),
        };
        for id in asked.iter() {
            match b.read_trace(id) {
                Ok(spans) if !spans.is_empty() => shared.push((*id, spans)),
                Ok(_) => {}
                Err(e) => {
                    warn!(block = %b.meta.id, error = %e, "could not read a block for edges across blocks; leaving it out");
                    break;
                }
            }
        }
    }
    shared
}

/// Encodes and writes a block atomically; returns it opened. `spans` encodes its span
/// files given the block's id; `compacted_from` names the blocks it replaces.
pub(super) fn write_block(
    inner: &Inner,
    spans: impl FnOnce(String) -> Result<EncodedBlock, FormatError>,
    logs: LogBlockBuilder,
    index: &SearchIndex,
    compacted_from: &[String],
) -> Result<Block, StoreError> {
    let fs = inner.fs.as_ref();
    let id = new_block_id();
    let encoding = |e: FormatError| e.corrupt_at(format!("block {id} (encoding)"));
    let mut encoded = spans(id.clone()).map_err(encoding)?;
    encoded.meta.compacted_from = compacted_from.to_vec();
    let index = index.encode().map_err(encoding)?;
    encoded.meta.files.push(FileChecksum::of("index.bin", &index));
    let mut logs = if logs.is_empty() { None } else { Some(logs.finish().map_err(encoding)?) };
    let filters = crate::cache::BlockFilters {
        spans: std::mem::take(&mut encoded.filter),
        logs: logs.as_mut().map(|l| std::mem::take(&mut l.filter)),
    }
    .encode();
    encoded.meta.files.push(FileChecksum::of(FILTER_FILE, &filters));
    if let Some(l) = &logs {
        encoded.meta.format_version = encoded.meta.format_version.max(crate::block::LOGS_VERSION);
        encoded.meta.log_count = l.count;
        (encoded.meta.min_log_time_unix_nano, encoded.meta.max_log_time_unix_nano) = l.time_range;
        encoded.meta.files.push(FileChecksum::of(LOGS_FILE, &l.logs));
        encoded.meta.files.push(FileChecksum::of(LOG_TRACES_FILE, &l.traces));
        encoded.meta.files.push(FileChecksum::of(LOG_GRAMS_FILE, &l.grams));
    }
    let blocks_dir = inner.root.join("blocks");
    let tmp = blocks_dir.join(format!(".tmp-{id}"));
    let fin = blocks_dir.join(&id);
    let result = (|| -> std::io::Result<()> {
        fs.create_dir_all(&tmp)?;
        fs.write_file(&tmp.join("spans.parquet"), &encoded.spans)?;
        fs.write_file(&tmp.join("traces.parquet"), &encoded.traces)?;
        fs.write_file(&tmp.join("index.bin"), &index)?;
        fs.write_file(&tmp.join(FILTER_FILE), &filters)?;
        if let Some(l) = &logs {
            fs.write_file(&tmp.join(LOGS_FILE), &l.logs)?;
            fs.write_file(&tmp.join(LOG_TRACES_FILE), &l.traces)?;
            fs.write_file(&tmp.join(LOG_GRAMS_FILE), &l.grams)?;
        }
        let meta = serde_json::to_vec_pretty(&encoded.meta).map_err(std::io::Error::other)?;
        fs.write_file(&tmp.join("meta.json"), &meta)?;
        fs.sync_dir(&tmp)?;
        fs.rename(&tmp, &fin)?;
        fs.sync_dir(&blocks_dir)
    })();
    if let Err(source) = result {
        let _ = fs.remove_dir_all(&tmp);
        return Err(StoreError::Io { path: tmp.display().to_string(), source });
    }
    // Its files were just written from memory: it needs no verifying.
    Block::open(&inner.fs, &fin, &inner.cache, Verify::Written)
}

static BLOCK_SEQ: AtomicU64 = AtomicU64::new(0);

pub(super) fn new_block_id() -> String {
    format!("{:020}-{:06}", now_unix_nano(), BLOCK_SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000)
}
