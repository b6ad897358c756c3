//! The flusher thread: frozen heads become blocks, written atomically; it also runs
//! maintenance on schedule.

use super::*;
use crate::logs::{LOG_GRAMS_FILE, LOG_TRACES_FILE, LOGS_FILE};

pub(super) fn flush_loop(inner: Arc<Inner>, rx: Receiver<FlushJob>) {
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
pub(super) fn write_frozen_until_done(
    inner: &Inner,
    frozen: &Arc<Frozen>,
    waiters: Vec<oneshot::Sender<FlushResult>>,
) {
    // A frozen head already published (a flush request waiting on it) needs nothing.
    let pending = inner.state.read().frozen.iter().any(|f| Arc::ptr_eq(f, frozen));
    let mut result = if pending { write_frozen(inner, frozen).map_err(Arc::new) } else { Ok(()) };
    let mut waiters = Some(waiters);
    let mut delay = Duration::from_millis(100);
    while let Err(e) = &result {
        inner.stats.block_write_errors.fetch_add(1, Ordering::Relaxed);
        *inner.health.flush.lock() = Some(e.to_string());
        warn!(error = %e, "block write failed; will retry");
        for w in waiters.take().unwrap_or_default() {
            let _ = w.send(Err(e.clone()));
        }
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
        result = write_frozen(inner, frozen).map_err(Arc::new);
    }
    *inner.health.flush.lock() = None;
    for w in waiters.take().unwrap_or_default() {
        let _ = w.send(Ok(()));
    }
}

pub(super) fn write_frozen(inner: &Inner, frozen: &Arc<Frozen>) -> Result<(), StoreError> {
    let _guard = inner.maintenance.lock();
    let mut builder = BlockBuilder::new();
    let corrupt_head = |e: FormatError| e.corrupt_at("head");
    for record in frozen.head.batches() {
        builder.append_batch(&record.map_err(corrupt_head)?.1).map_err(corrupt_head)?;
    }
    let logs = frozen.head.logs.take_builder().map_err(corrupt_head)?;
    // The head's own search index (kept up to date by the index thread) becomes the block's.
    let index = {
        let (handle, first, tail) = frozen.head.index_handle();
        let mut guard = handle.write();
        guard.extend(first, &tail).map_err(corrupt_head)?;
        guard.builder.finish()
    };
    let (min_received, max_received) = (frozen.head.min_received(), frozen.head.max_received());
    let block = write_block(inner, builder, logs, &index, min_received, max_received, Vec::new())?;
    {
        let mut st = inner.state.write();
        st.blocks.push(Arc::new(block));
        st.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
    }
    inner.stats.blocks_written.fetch_add(1, Ordering::Relaxed);
    Wal::remove_through(inner.fs.as_ref(), &inner.root.join("wal"), frozen.through_segment)
        .map_err(|source| StoreError::Io { path: "wal (removing flushed segments)".into(), source })?;
    Ok(())
}

/// Encodes and writes a block atomically; returns it opened.
pub(super) fn write_block(
    inner: &Inner,
    builder: BlockBuilder,
    logs: LogBlockBuilder,
    index: &SearchIndex,
    min_received: u64,
    max_received: u64,
    compacted_from: Vec<String>,
) -> Result<Block, StoreError> {
    let fs = inner.fs.as_ref();
    let id = new_block_id();
    let encoding = |e: FormatError| e.corrupt_at(format!("block {id} (encoding)"));
    let mut encoded =
        builder.finish(id.clone(), min_received, max_received, compacted_from).map_err(encoding)?;
    let index = index.encode().map_err(encoding)?;
    encoded.meta.files.push(FileChecksum::of("index.bin", &index));
    let logs = if logs.is_empty() { None } else { Some(logs.finish().map_err(encoding)?) };
    if let Some(l) = &logs {
        encoded.meta.format_version = crate::block::FORMAT_VERSION;
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
    Block::open(&inner.fs, &fin, &inner.cache)
}

static BLOCK_SEQ: AtomicU64 = AtomicU64::new(0);

pub(super) fn new_block_id() -> String {
    format!("{:020}-{:06}", now_unix_nano(), BLOCK_SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000)
}
