//! The WAL thread: group commit (one fsync for every write waiting), inserts into the head,
//! and head cuts.

use super::*;

pub(super) fn wal_loop(
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
pub(super) fn interval_sync(inner: &Inner, wal: &mut Wal, unsynced: &mut bool, last_sync: &mut Instant) {
    if let FsyncPolicy::Interval(every) = inner.cfg.fsync
        && *unsynced
        && last_sync.elapsed() >= every
    {
        let _ = sync_wal(inner, wal);
        *unsynced = false;
        *last_sync = Instant::now();
    }
}

pub(super) fn sync_wal(inner: &Inner, wal: &mut Wal) -> std::io::Result<()> {
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

pub(super) fn maybe_cut(
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
