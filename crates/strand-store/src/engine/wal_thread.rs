//! The WAL thread: the store's [`Committer`] on the shared group-commit loop. Each group
//! gets one receive time; once its records are durable (per the fsync policy) they go into
//! the head, the decoded batches to the index thread, and the writers hear "ok". Between
//! groups it fsyncs on the interval policy and cuts the head into a frozen head when it is
//! due or a flush asks.

use crate::wal::group_commit::{self, Append, Committed, Committer, Flow};

use super::*;

/// A write whose record is in the WAL.
enum Written {
    Spans(SpanBatch, RecordLayout),
    Logs(LogBatch),
}

/// The store's side of the group-commit loop.
struct StoreCommitter {
    inner: Arc<Inner>,
    flush_tx: mpsc::Sender<FlushJob>,
    index_tx: SyncSender<IndexJob>,
    /// Receive time of the group being written.
    received: u64,
    last_received: u64,
    unsynced: bool,
    last_sync: Instant,
    /// Where the spans are in the records of the group's span writes, in order (taken by
    /// [`Committer::committed`], which sees the jobs in the order their records were made).
    layouts: std::collections::VecDeque<RecordLayout>,
}

pub(super) fn wal_loop(
    inner: Arc<Inner>,
    wal: Wal,
    rx: Receiver<Cmd>,
    flush_tx: mpsc::Sender<FlushJob>,
    index_tx: SyncSender<IndexJob>,
) {
    let last_received = inner.state.read().newest_received();
    let mut committer = StoreCommitter {
        inner,
        flush_tx,
        index_tx,
        received: 0,
        last_received,
        unsynced: false,
        last_sync: Instant::now(),
        layouts: std::collections::VecDeque::new(),
    };
    group_commit::run(wal, &rx, &mut committer, Duration::from_millis(50));
}

impl Committer for StoreCommitter {
    type Job = Cmd;

    fn begin_group(&mut self) {
        // Receive times strictly increase from group to group, so a search snapshot taken
        // between two groups tells them apart whatever the clock's resolution.
        self.received =
            strand_core::clock::next_receive_time(self.inner.cfg.clock.now_unix_nano(), self.last_received);
        self.last_received = self.received;
    }

    fn record(&mut self, job: &Cmd) -> Option<Append> {
        match job {
            Cmd::Write { batch, .. } => {
                let (bytes, layout) = WalRecord::encode_with_layout(self.received, "", batch);
                self.layouts.push_back(layout);
                Some(Append { bytes, sync: self.inner.cfg.fsync == FsyncPolicy::Always })
            }
            Cmd::WriteLogs { batch, .. } => Some(Append {
                bytes: LogWalRecord::encode_parts(self.received, "", batch),
                sync: self.inner.cfg.fsync == FsyncPolicy::Always,
            }),
            Cmd::Flush { .. } | Cmd::Shutdown => None,
        }
    }

    fn committed(
        &mut self,
        wal: &mut Wal,
        group: Vec<Committed<Cmd>>,
        synced: Option<&std::io::Result<()>>,
    ) -> Flow {
        let inner = self.inner.clone();
        let mut written = Vec::new();
        let mut flush_waiters = Vec::new();
        let mut shutting_down = false;
        for Committed { job, bytes, appended } in group {
            let (written_job, done) = match job {
                Cmd::Write { batch, done } => {
                    // Always there; an empty layout would make the head encode the record again.
                    let layout = self.layouts.pop_front().unwrap_or_default();
                    (Written::Spans(batch, layout), done)
                }
                Cmd::WriteLogs { batch, done } => (Written::Logs(batch), done),
                Cmd::Flush { done } => {
                    flush_waiters.push(done);
                    continue;
                }
                Cmd::Shutdown => {
                    shutting_down = true;
                    continue;
                }
            };
            match (appended, synced) {
                (Some(Err(e)), _) => {
                    inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "wal append failed");
                    inner.health.wal_failed(format!("append: {e}"));
                    let _ = done.send(Err(SinkError::Unavailable(format!("wal append failed: {e}"))));
                }
                (_, Some(Err(e))) => {
                    inner.health.wal_failed(format!("fsync: {e}"));
                    let _ = done.send(Err(SinkError::Unavailable(format!("wal fsync failed: {e}"))));
                }
                _ => written.push((written_job, bytes.unwrap_or_default(), done)),
            }
        }
        if !written.is_empty() {
            *inner.health.wal.lock() = None;
            if inner.cfg.fsync != FsyncPolicy::Always {
                self.unsynced = true;
            }
            let received = self.received;
            let mut st = inner.state.write();
            let mut replies = Vec::with_capacity(written.len());
            for (job, bytes, done) in written {
                replies.push(done);
                let (batch, layout) = match job {
                    Written::Spans(batch, layout) => (batch, layout),
                    Written::Logs(batch) => {
                        let n = st.head.logs.insert(bytes.into(), &batch, received);
                        inner.stats.logs_written.fetch_add(n as u64, Ordering::Relaxed);
                        if n > 0 {
                            // Columns are built off this thread; the cut decodes what the
                            // index thread could not take.
                            let (columns, position) = st.head.logs.columns();
                            let _ = self.index_tx.try_send(IndexJob::Logs { columns, position, batch });
                        }
                        continue;
                    }
                };
                let n = batch.span_count();
                let added = st.head.insert(bytes.into(), &layout, &batch, received);
                inner.stats.spans_written.fetch_add(added as u64, Ordering::Relaxed);
                inner.stats.spans_duplicate.fetch_add((n - added) as u64, Ordering::Relaxed);
                if added > 0
                    && let (index, Some(position)) = st.head.newest_record()
                {
                    // The decoded batch goes to the index thread, which then needs not
                    // decode the record again; if it is behind, it catches up from the
                    // records instead.
                    let _ = self.index_tx.try_send(IndexJob::Spans { index, position, received, batch });
                }
            }
            inner.head_bytes.store(st.head.bytes(), Ordering::Relaxed);
            drop(st);
            for done in replies {
                let _ = done.send(Ok(()));
            }
        }
        self.interval_sync(wal);
        let force = !flush_waiters.is_empty() || shutting_down;
        maybe_cut(&inner, wal, &self.flush_tx, flush_waiters, force);
        if shutting_down { Flow::Stop } else { Flow::Continue }
    }

    fn idle(&mut self, wal: &mut Wal) -> Flow {
        self.interval_sync(wal);
        maybe_cut(&self.inner, wal, &self.flush_tx, Vec::new(), false);
        Flow::Continue
    }

    fn finish(&mut self, wal: &mut Wal, left: Vec<Cmd>) {
        if self.unsynced {
            self.sync(wal).ok();
        }
        // Anything still queued after shutdown is refused rather than left hanging.
        for cmd in left {
            if let Cmd::Write { done, .. } | Cmd::WriteLogs { done, .. } = cmd {
                let _ = done.send(Err(SinkError::Unavailable("store is shutting down".into())));
            }
        }
        let _ = self.flush_tx.send(FlushJob::Stop);
    }

    fn fsynced(&mut self, took: Duration, result: &std::io::Result<()>) {
        let stats = &self.inner.stats;
        stats.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
        stats.wal_fsync_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        if let Err(e) = result {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "wal fsync failed");
        }
    }
}

impl StoreCommitter {
    fn sync(&mut self, wal: &mut Wal) -> std::io::Result<()> {
        let started = Instant::now();
        let result = wal.sync();
        self.fsynced(started.elapsed(), &result);
        result
    }

    /// Under `FsyncPolicy::Interval`, fsyncs once the interval has passed since the last
    /// sync and something is unsynced. A failure is counted and logged; the writes were
    /// already acknowledged, which is what the interval policy trades for speed.
    fn interval_sync(&mut self, wal: &mut Wal) {
        if let FsyncPolicy::Interval(every) = self.inner.cfg.fsync
            && self.unsynced
            && self.last_sync.elapsed() >= every
        {
            let _ = self.sync(wal);
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
    }
}

/// Cuts the head into a frozen head for the flusher when it is due (size, age) or `force`d
/// (a flush request, shutdown); a flush request with nothing to cut waits for the frozen
/// heads already queued. The size that makes a cut due also answers to the memory and disk
/// budgets ([`Inner::head_cut_bytes`]).
fn maybe_cut(
    inner: &Inner,
    wal: &mut Wal,
    flush_tx: &mpsc::Sender<FlushJob>,
    waiters: Vec<oneshot::Sender<FlushResult>>,
    force: bool,
) {
    let due = {
        let st = inner.state.read();
        let h = &st.head;
        !h.is_empty()
            && (force
                || h.span_count() >= inner.cfg.head_max_spans
                || h.logs.count() >= inner.cfg.head_max_log_records
                || h.bytes() >= inner.head_cut_bytes()
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
            inner.health.wal_failed(format!("rotating a segment to cut the head: {e}"));
            let e = Arc::new(StoreError::Io { path: "wal (rotating a segment)".into(), source: e });
            waiters.into_iter().for_each(|w| {
                let _ = w.send(Err(e.clone()));
            });
            return;
        }
    };
    let frozen = {
        let mut st = inner.state.write();
        let head = std::mem::take(&mut st.head);
        inner.frozen_bytes.fetch_add(head.bytes(), Ordering::Relaxed);
        inner.head_bytes.store(0, Ordering::Relaxed);
        let frozen = Arc::new(Frozen { head, through_segment: sealed });
        st.frozen.push(frozen.clone());
        frozen
    };
    let _ = flush_tx.send(FlushJob::Frozen { frozen, waiters });
}
