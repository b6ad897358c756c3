//! The sampling stage at run time, between the receivers and the store: pre-sampling
//! metrics, then (when policies are configured) tail sampling with a durable pending log.
//! This is the one part of the crate with threads, a clock and files.
//!
//! ```text
//! consume(batch) ─► RED metrics + service graph, chain integrity (every span)
//!    │ no policies: ───────────────────────────────────────────► store
//!    │ policies:
//!    ├─► Prepared (spans encoded once) ─► pending log (fsync) ── ack after this
//!    └─► TraceBuffer ─ decided (deadline / caps) ─ kept ─► store ─► decision record
//!                                               └ dropped ─────────► decision record
//! consume_logs(batch) ── default, or no trace id ──────────────────► store
//!    │ sampling.logs: follow_traces
//!    └─► pending log (fsync) ─► TraceBuffer, beside the trace's spans ─ kept ─► store
//! ```
//!
//! The pending log (`<data_dir>/sampling/`) holds every span acknowledged but not yet
//! decided, and every decision once it is carried out (kept spans stored first). At start
//! the log is replayed into the buffer: undecided traces resume with their original
//! first-seen time, decided ones go back into the decision cache. A segment is deleted
//! when no buffered trace, retry or in-flight append still needs it.

pub mod remote;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::buffer::logs_record;
use crate::buffer::{BufferStats, decisions_record};
use crate::red::RedMetrics;
use crate::{DecidedTrace, LogRecord, Prepared, Preparer, SamplingConfig, TraceBuffer};
use parking_lot::Mutex;
use strand_core::{
    BoxFuture, LogBatch, LogSink, MetricFamily, MetricKind, SinkError, SpanBatch, SpanObserver, SpanSink,
    StoredLog, TraceId, TraceStore,
};
use strand_store::fs::{FileSystem, StdFs};
use strand_store::now_unix_nano;
use strand_store::wal::group_commit::{self, Append, Committed, Committer, Flow};
use strand_store::wal::{Wal, frame};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Roll the pending log to a new segment past this size, so old ones can be deleted.
const SEGMENT_BYTES: u64 = 16 << 20;
/// ... or this long after the last roll, when anything was written.
const SEGMENT_AGE: Duration = Duration::from_secs(10);
/// How often due traces are decided and the log maintained.
pub const DECIDE_INTERVAL: Duration = Duration::from_millis(200);

/// Counters of the sampling stage, beyond the buffer's own.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Pending-log appends that failed (the request was refused).
    pub log_errors: AtomicU64,
    /// Writes of kept traces to the store that failed and wait for a retry.
    pub store_retries: AtomicU64,
    /// Records replayed from the pending log at start.
    pub replayed_records: AtomicU64,
    /// Replayed records that could not be decoded (skipped).
    pub corrupt_records: AtomicU64,
}

/// A point-in-time view of the tail sampler for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct TailSnapshot {
    /// Bytes buffered.
    pub buffer_bytes: usize,
    /// Traces buffered.
    pub buffer_traces: usize,
    /// Spans buffered.
    pub buffer_spans: usize,
    /// Log records buffered.
    pub buffer_log_records: usize,
    /// Traces decided but not yet carried out: kept spans being stored, or waiting for a
    /// retry after a failed store write. With `buffer_traces` at 0 too, every trace received
    /// so far is either stored or dropped.
    pub carrying_out: usize,
    /// The buffer's counters.
    pub stats: BufferStats,
}

/// Why the sampling stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policies are invalid.
    #[error("invalid sampling configuration: {0}")]
    Config(String),
    /// The pending log could not be opened or replayed.
    #[error("opening the sampling log: {0}")]
    Log(#[from] strand_store::wal::WalError),
    /// Storing the traces the replay decided to keep failed.
    #[error("storing traces kept at start: {0}")]
    Store(#[from] SinkError),
    /// The replay task failed.
    #[error("replaying the sampling log: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The sink the receivers write to.
pub struct Pipeline {
    store: Arc<dyn TraceStore>,
    red: Arc<RedMetrics>,
    /// Other observers of every span before sampling (chain integrity).
    observers: Vec<Arc<dyn SpanObserver>>,
    tail: Option<Arc<Tail>>,
    /// Log records wait for their traces' decisions (`sampling.logs: follow_traces`).
    follow_logs: bool,
    stats: Arc<PipelineStats>,
}

struct Tail {
    buffer: Mutex<TraceBuffer>,
    preparer: Arc<Preparer>,
    log: LogWriter,
    retry: Mutex<Vec<DecidedTrace>>,
    /// Traces taken out of the buffer (decided, or back from `retry`) whose decision is being
    /// carried out; set under the buffer's lock, so a snapshot never misses them.
    carrying_out: AtomicU64,
    sync_each: bool,
    /// The last pending-log append's failure, cleared by the next success.
    log_failing: Mutex<Option<(String, Instant)>>,
    /// Pending-log segments holding traces taken out to be decided elsewhere, kept until
    /// they are safely there ([`Pipeline::take_undecided`]).
    handing_over: Mutex<Vec<u64>>,
}

/// Undecided traces taken out of tail sampling to be decided by another sampler.
#[derive(Debug, Default)]
pub struct Handover {
    /// Their spans.
    pub spans: SpanBatch,
    /// Their log records.
    pub logs: LogBatch,
    ids: Vec<TraceId>,
    tags: Vec<u64>,
}

impl Handover {
    /// How many traces.
    pub fn traces(&self) -> usize {
        self.ids.len()
    }
}

impl Pipeline {
    /// Builds the pipeline. With policies configured it opens (and replays) the pending log
    /// under `data_dir/sampling` and carries out what the replay decided; call
    /// [`Pipeline::run_decider`] to keep deciding. `observers` see every span received, as
    /// the RED metrics do, before any sampling decision.
    pub async fn open(
        store: Arc<dyn TraceStore>,
        red: Arc<RedMetrics>,
        observers: Vec<Arc<dyn SpanObserver>>,
        cfg: &SamplingConfig,
        data_dir: &Path,
        sync_each: bool,
    ) -> Result<Self, StartError> {
        let stats = Arc::new(PipelineStats::default());
        let follow_logs = cfg.logs_follow_traces();
        if !cfg.enabled() {
            return Ok(Self { store, red, observers, tail: None, follow_logs, stats });
        }
        let mut buffer = TraceBuffer::new(cfg).map_err(|e| StartError::Config(e.join("; ")))?;
        let preparer = buffer.preparer();
        let dir = data_dir.join("sampling");
        let replay_stats = stats.clone();
        let (log, buffer, (late, late_logs), decided) = tokio::task::spawn_blocking(move || {
            let mut late = Vec::new();
            let mut late_logs = Vec::new();
            let mut decided = Vec::new();
            let preparer = buffer.preparer();
            let (wal, replay) = Wal::open_payloads(Arc::new(StdFs), &dir, |segment, payload| {
                match LogRecord::decode(payload) {
                    Ok(LogRecord::Spans { received_unix_nano, batch }) => {
                        let prepared = Prepared::new(&batch, &preparer);
                        let a = buffer.insert(&prepared, received_unix_nano, segment);
                        late.extend(a.late_kept);
                        decided.extend(a.decided);
                    }
                    Ok(LogRecord::Logs { received_unix_nano, batch }) => {
                        // Whatever `sampling.logs` says now: these records were
                        // acknowledged and wait for a decision.
                        let a = buffer.insert_logs(&batch, received_unix_nano, segment);
                        late_logs.extend(a.logs_now);
                        decided.extend(a.decided);
                    }
                    Ok(LogRecord::Decisions(ds)) => {
                        for (id, keep) in ds {
                            buffer.restore_decision(id, keep);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "skipped an undecodable pending-log record");
                        replay_stats.corrupt_records.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
            replay_stats.replayed_records.fetch_add(replay.records, Ordering::Relaxed);
            replay_stats.corrupt_records.fetch_add(replay.corrupt_records, Ordering::Relaxed);
            if replay.records > 0 {
                info!(
                    records = replay.records,
                    traces = buffer.traces(),
                    spans = buffer.spans(),
                    "resumed tail-sampling decisions from the pending log"
                );
            }
            Ok::<_, strand_store::wal::WalError>((
                LogWriter::start(wal, dir),
                buffer,
                (late, late_logs),
                decided,
            ))
        })
        .await??;
        let tail = Arc::new(Tail {
            buffer: Mutex::new(buffer),
            preparer,
            log,
            retry: Mutex::new(Vec::new()),
            carrying_out: AtomicU64::new(0),
            sync_each,
            log_failing: Mutex::new(None),
            handing_over: Mutex::new(Vec::new()),
        });
        if !late.is_empty() {
            store.write(SpanBatch::from_stored(late)).await?;
        }
        if !late_logs.is_empty() {
            store.write_logs(LogBatch::from_stored(late_logs)).await?;
        }
        let pipeline = Self { store, red, observers, tail: Some(tail), follow_logs, stats };
        pipeline.carry_out(decided).await;
        Ok(pipeline)
    }

    /// The pre-sampling metrics.
    pub fn red(&self) -> &Arc<RedMetrics> {
        &self.red
    }

    /// Counters of the sampling stage.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The tail sampler's state, when tail sampling is on.
    pub fn tail_snapshot(&self) -> Option<TailSnapshot> {
        let tail = self.tail.as_ref()?;
        let b = tail.buffer.lock();
        let carrying_out = tail.carrying_out.load(Ordering::Relaxed) as usize + tail.retry.lock().len();
        Some(TailSnapshot {
            buffer_bytes: b.bytes(),
            buffer_traces: b.traces(),
            buffer_spans: b.spans(),
            buffer_log_records: b.log_records(),
            carrying_out,
            stats: b.stats().clone(),
        })
    }

    /// Why the sampling stage would not take spans as it should right now (`sampling: …`):
    /// its log cannot be written, or its buffer is over 90 % of its byte bound (past it,
    /// traces are decided before their time). Empty when ready, and always without tail
    /// sampling.
    pub fn not_ready(&self) -> Vec<String> {
        let Some(tail) = &self.tail else { return Vec::new() };
        let mut out = Vec::new();
        if let Some((e, at)) = &*tail.log_failing.lock()
            && at.elapsed() < Duration::from_secs(30)
        {
            out.push(format!("sampling: the pending log cannot be written: {e}"));
        }
        let (bytes, max) = {
            let b = tail.buffer.lock();
            (b.bytes(), b.max_bytes())
        };
        if bytes as f64 > max as f64 * 0.9 {
            out.push(format!(
                "sampling: the buffer holds {bytes} of its {max} bytes (max_buffer_bytes): past it, traces are decided before their time"
            ));
        }
        out
    }

    /// Counters and gauges of the sampling stage for `/metrics` (the RED metrics come from
    /// [`Pipeline::red`]).
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let tail = self.tail_snapshot().unwrap_or_default();
        let st = &tail.stats;
        let ps = self.stats();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = vec![
            MetricFamily::gauge(
                "strand_sampling_buffer_bytes",
                "Bytes of spans waiting for a tail-sampling decision.",
                tail.buffer_bytes as f64,
            ),
            MetricFamily::gauge(
                "strand_sampling_buffer_traces",
                "Traces waiting for a decision.",
                tail.buffer_traces as f64,
            ),
            MetricFamily::gauge(
                "strand_sampling_buffer_spans",
                "Spans waiting for a decision.",
                tail.buffer_spans as f64,
            ),
            MetricFamily::gauge(
                "strand_sampling_decisions_in_progress",
                "Traces decided whose kept spans are being stored or wait for a retry.",
                tail.carrying_out as f64,
            ),
            MetricFamily::gauge(
                "strand_sampling_buffer_log_records",
                "Log records waiting for their trace's decision (sampling.logs: follow_traces).",
                tail.buffer_log_records as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_log_records_kept_total",
                "Log records kept with their trace (late ones included).",
                st.logs_kept as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_log_records_dropped_total",
                "Log records dropped with their trace (late ones included).",
                st.logs_dropped as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_log_records_without_spans_total",
                "Log records kept because no span of their trace came within decision_wait.",
                st.logs_without_spans as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_traces_kept_total",
                "Traces kept by tail sampling.",
                st.traces_kept as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_traces_dropped_total",
                "Traces dropped by tail sampling.",
                st.traces_dropped as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_spans_sampled_out_total",
                "Spans dropped by a sampling decision (late spans included).",
                (st.spans_dropped + st.late_spans_dropped) as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_late_spans_kept_total",
                "Spans that arrived after their trace was kept, stored.",
                st.late_spans_kept as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_late_spans_dropped_total",
                "Spans that arrived after their trace was dropped.",
                st.late_spans_dropped as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_traces_capped_total",
                "Traces decided early because they reached max_trace_bytes.",
                st.traces_capped as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_traces_overflowed_total",
                "Traces decided early because the buffer reached max_buffer_bytes.",
                st.traces_overflowed as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_overflow_kept_total",
                "Of those, traces kept by the overflow fallback percentage.",
                st.overflow_kept as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_log_errors_total",
                "Pending-log writes that failed (requests refused).",
                c(&ps.log_errors) as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_store_retries_total",
                "Writes of kept traces that failed and were retried.",
                c(&ps.store_retries) as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_log_replayed_records_total",
                "Pending-log records replayed at start.",
                c(&ps.replayed_records) as f64,
            ),
            MetricFamily::counter(
                "strand_sampling_log_corrupt_records_total",
                "Pending-log records skipped at start because they were corrupt.",
                c(&ps.corrupt_records) as f64,
            ),
        ];
        let mut by_policy = MetricFamily::new(
            "strand_sampling_traces_kept_by_policy_total",
            "Traces kept, per policy that sampled them.",
            MetricKind::Counter,
        );
        let mut kept: Vec<_> = st.kept_by_policy.iter().collect();
        kept.sort();
        for (policy, n) in kept {
            by_policy.push(vec![("policy", policy.to_string())], *n as f64);
        }
        out.push(by_policy);
        out
    }

    /// Decides due traces every [`DECIDE_INTERVAL`] until `stop` resolves. Undecided
    /// traces stay in the pending log at shutdown and resume at the next start.
    pub async fn run_decider(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let Some(tail) = self.tail.clone() else {
            stop.await;
            return;
        };
        let mut tick = tokio::time::interval(DECIDE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let due = {
                let mut b = tail.buffer.lock();
                let decided = b.decide_due(now_unix_nano());
                let retry = std::mem::take(&mut *tail.retry.lock());
                tail.carrying_out.store((decided.len() + retry.len()) as u64, Ordering::Relaxed);
                retry.into_iter().chain(decided).collect()
            };
            self.carry_out(due).await;
            tail.carrying_out.store(0, Ordering::Relaxed);
            let keep_from = {
                let b = tail.buffer.lock();
                let r = tail.retry.lock();
                let held = tail.handing_over.lock();
                b.min_tag().into_iter().chain(r.iter().map(|d| d.tag)).chain(held.iter().copied()).min()
            };
            tail.log.maintain(keep_from);
        }
        tail.log.shutdown();
    }

    /// Takes the undecided traces `pick` selects out of tail sampling, to be decided by
    /// another sampler (in a cluster, the ingester a partition moves to). Their data stays
    /// in the pending log until [`Pipeline::handed_over`] says they are safely elsewhere
    /// (a crash before brings them back here); [`Pipeline::take_back`] returns them when
    /// they could not go. `None` without tail sampling or with nothing to take.
    pub fn take_undecided(&self, pick: impl Fn(&TraceId) -> bool) -> Option<Handover> {
        let tail = self.tail.as_ref()?;
        let taken = {
            let mut b = tail.buffer.lock();
            let taken = b.take_undecided(pick);
            tail.handing_over.lock().extend(taken.iter().map(|u| u.tag));
            taken
        };
        if taken.is_empty() {
            return None;
        }
        let mut h = Handover::default();
        let (mut spans, mut logs) = (Vec::new(), Vec::new());
        for u in taken {
            h.ids.push(u.trace_id);
            h.tags.push(u.tag);
            spans.extend(u.spans);
            logs.extend(u.logs);
        }
        h.spans = SpanBatch::from_stored(spans);
        h.logs = LogBatch::from_stored(logs);
        Some(h)
    }

    /// The traces of `h` are safely with another sampler: the pending log forgets them.
    pub async fn handed_over(&self, h: Handover) {
        let Some(tail) = &self.tail else { return };
        let record: Vec<(TraceId, bool)> = h.ids.iter().map(|id| (*id, false)).collect();
        // Synced: without it a crash would bring them back to be decided here as well.
        if let Err(e) = tail.log.append(decisions_record(&record), true).await {
            warn!(error = %e, "recording traces handed over failed; after a crash they would be decided here too");
        }
        release_tags(&tail.handing_over, &h.tags);
    }

    /// The traces of `h` could not go: back into tail sampling here (logged again).
    pub async fn take_back(&self, h: Handover) -> Result<(), SinkError> {
        let Some(tail) = &self.tail else { return Ok(()) };
        let tags = h.tags.clone();
        let result = async {
            if h.spans.span_count() > 0 {
                self.consume_tail(tail, h.spans).await?;
            }
            if h.logs.record_count() > 0 {
                self.consume_logs_tail(tail, h.logs).await?;
            }
            Ok(())
        }
        .await;
        // On failure their data is still in the pending log's segments: a restart replays it.
        if result.is_ok() {
            release_tags(&tail.handing_over, &tags);
        }
        result
    }

    /// Stores kept traces, then records every decision in the pending log. A failed store
    /// write leaves the trace for the next round (its spans stay in the log).
    async fn carry_out(&self, decided: Vec<DecidedTrace>) {
        let Some(tail) = &self.tail else { return };
        if decided.is_empty() {
            return;
        }
        let (kept, dropped): (Vec<DecidedTrace>, Vec<DecidedTrace>) =
            decided.into_iter().partition(|d| d.keep);
        let mut record: Vec<(TraceId, bool)> = dropped.iter().map(|d| (d.trace_id, false)).collect();
        if !kept.is_empty() {
            match self.store_kept(&kept).await {
                // Traces of which only log records came were not decided: nothing to remember.
                Ok(()) => record.extend(kept.iter().filter(|d| d.sampled()).map(|d| (d.trace_id, true))),
                Err(e) => {
                    warn!(error = %e, traces = kept.len(), "storing kept traces failed; will retry");
                    self.stats.store_retries.fetch_add(1, Ordering::Relaxed);
                    tail.retry.lock().extend(kept);
                }
            }
        }
        if !record.is_empty() {
            // Not synced: a lost decision record only means the trace is decided again
            // after a crash (kept spans are stored idempotently).
            let _ = tail.log.append(decisions_record(&record), false).await;
        }
    }

    /// Writes kept traces' spans, then their log records.
    async fn store_kept(&self, kept: &[DecidedTrace]) -> Result<(), SinkError> {
        let spans: Vec<_> = kept.iter().flat_map(|d| d.spans.iter().cloned()).collect();
        if !spans.is_empty() {
            self.store.write(SpanBatch::from_stored(spans)).await?;
        }
        let logs: Vec<StoredLog> = kept.iter().flat_map(|d| d.logs.iter().cloned()).collect();
        if !logs.is_empty() {
            self.store.write_logs(LogBatch::from_stored(logs)).await?;
        }
        Ok(())
    }

    /// Log records of traces not yet decided go to the pending log and wait in the buffer;
    /// the others are stored now (or dropped with their trace).
    async fn consume_logs_tail(&self, tail: &Tail, batch: LogBatch) -> Result<(), SinkError> {
        let (traced, untraced) = batch.split_by_trace();
        if !untraced.resource_logs.is_empty() {
            self.store.write_logs(untraced).await?;
        }
        if traced.resource_logs.is_empty() {
            return Ok(());
        }
        let now = now_unix_nano();
        let segment = tail.append(logs_record(now, &traced), &self.stats).await?;
        let admitted = tail.buffer.lock().insert_logs(&traced, now, segment);
        tail.log.release(segment);
        self.carry_out(admitted.decided).await;
        if !admitted.logs_now.is_empty() {
            self.store.write_logs(LogBatch::from_stored(admitted.logs_now)).await?;
        }
        Ok(())
    }

    /// Shows a received batch to the RED metrics and every other observer.
    fn observe(&self, batch: &SpanBatch, now: u64) {
        self.red.observe(batch, now);
        for o in &self.observers {
            o.observe(batch, now);
        }
    }

    async fn consume_tail(&self, tail: &Tail, batch: SpanBatch) -> Result<(), SinkError> {
        let now = now_unix_nano();
        let prepared = Prepared::new(&batch, &tail.preparer);
        let segment = tail.append(prepared.to_record(now), &self.stats).await?;
        self.observe(&batch, now);
        let admitted = tail.buffer.lock().insert(&prepared, now, segment);
        tail.log.release(segment);
        self.carry_out(admitted.decided).await;
        if !admitted.late_kept.is_empty() {
            self.store.write(SpanBatch::from_stored(admitted.late_kept)).await?;
        }
        Ok(())
    }
}

/// Removes one occurrence of each of `tags` from `held`.
fn release_tags(held: &Mutex<Vec<u64>>, tags: &[u64]) {
    let mut held = held.lock();
    for t in tags {
        if let Some(i) = held.iter().position(|h| h == t) {
            held.swap_remove(i);
        }
    }
}

impl SpanSink for Pipeline {
    fn consume(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            match &self.tail {
                Some(tail) => self.consume_tail(tail, batch).await,
                None => {
                    self.observe(&batch, now_unix_nano());
                    self.store.write(batch).await
                }
            }
        })
    }
}

impl LogSink for Pipeline {
    fn consume_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            match &self.tail {
                Some(tail) if self.follow_logs => self.consume_logs_tail(tail, batch).await,
                _ => self.store.write_logs(batch).await,
            }
        })
    }
}

impl Tail {
    /// Appends a record to the pending log; a failure is counted, remembered for readiness
    /// and refused as retryable.
    async fn append(&self, record: Vec<u8>, stats: &PipelineStats) -> Result<u64, SinkError> {
        match self.log.append(record, self.sync_each).await {
            Ok(segment) => {
                *self.log_failing.lock() = None;
                Ok(segment)
            }
            Err(e) => {
                stats.log_errors.fetch_add(1, Ordering::Relaxed);
                *self.log_failing.lock() = Some((e.to_string(), Instant::now()));
                Err(SinkError::Unavailable(format!("sampling log write failed: {e}")))
            }
        }
    }
}

enum Cmd {
    Append { payload: Vec<u8>, sync: bool, done: oneshot::Sender<std::io::Result<u64>> },
    Maintain { keep_from: Option<u64> },
    Shutdown,
}

/// The pending log's writer: a thread running the store's group-commit loop (one fsync for
/// every append waiting) with [`LogCommitter`].
struct LogWriter {
    tx: mpsc::SyncSender<Cmd>,
    /// Appends acknowledged but not yet in the buffer, per segment.
    outstanding: Arc<Mutex<BTreeMap<u64, usize>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LogWriter {
    fn start(wal: Wal, dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::sync_channel(1024);
        let outstanding = Arc::new(Mutex::new(BTreeMap::new()));
        let out = outstanding.clone();
        let thread = std::thread::Builder::new()
            .name("strand-sampling-log".into())
            .spawn(move || log_thread(wal, dir, rx, out))
            .expect("spawning the sampling log thread");
        Self { tx, outstanding, thread: Mutex::new(Some(thread)) }
    }

    async fn append(&self, payload: Vec<u8>, sync: bool) -> std::io::Result<u64> {
        let (done, rx) = oneshot::channel();
        let closed = || std::io::Error::other("sampling log is closed");
        match self.tx.try_send(Cmd::Append { payload, sync, done }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(cmd)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(cmd))
                    .await
                    .map_err(|_| closed())?
                    .map_err(|_| closed())?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(closed()),
        }
        rx.await.map_err(|_| closed())?
    }

    fn release(&self, segment: u64) {
        release(&self.outstanding, segment);
    }

    fn maintain(&self, keep_from: Option<u64>) {
        let _ = self.tx.try_send(Cmd::Maintain { keep_from });
    }

    fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Shutdown);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// Gives back one outstanding append of `segment`.
fn release(outstanding: &Mutex<BTreeMap<u64, usize>>, segment: u64) {
    let mut o = outstanding.lock();
    if let Some(n) = o.get_mut(&segment) {
        *n -= 1;
        if *n == 0 {
            o.remove(&segment);
        }
    }
}

fn log_thread(
    wal: Wal,
    dir: PathBuf,
    rx: mpsc::Receiver<Cmd>,
    outstanding: Arc<Mutex<BTreeMap<u64, usize>>>,
) {
    let mut committer = LogCommitter { dir, outstanding, written: 0, rolled: Instant::now() };
    group_commit::run(wal, &rx, &mut committer, Duration::from_secs(1));
}

/// The pending log's side of the store's group-commit loop: answers appends with their
/// segment, rolls segments by size and age, and deletes those no trace needs any more.
struct LogCommitter {
    dir: PathBuf,
    outstanding: Arc<Mutex<BTreeMap<u64, usize>>>,
    /// Bytes written to the current segment.
    written: u64,
    rolled: Instant,
}

impl Committer for LogCommitter {
    type Job = Cmd;

    fn record(&mut self, job: &Cmd) -> Option<Append> {
        match job {
            Cmd::Append { payload, sync, .. } => Some(Append { bytes: frame(payload), sync: *sync }),
            Cmd::Maintain { .. } | Cmd::Shutdown => None,
        }
    }

    fn committed(
        &mut self,
        wal: &mut Wal,
        group: Vec<Committed<Cmd>>,
        synced: Option<&std::io::Result<()>>,
    ) -> Flow {
        let mut maintain = None;
        let mut shutdown = false;
        for Committed { job, bytes, appended } in group {
            match job {
                Cmd::Append { sync, done, .. } => {
                    if matches!(appended, Some(Ok(_))) {
                        // In the segment whether or not the fsync worked: it counts for rolls.
                        self.written += bytes.as_ref().map_or(0, |b| b.len() as u64);
                    }
                    let res = match (appended, synced) {
                        (Some(Ok(_)), Some(Err(e))) if sync => {
                            Err(std::io::Error::new(e.kind(), e.to_string()))
                        }
                        (Some(res), _) => res,
                        (None, _) => Err(std::io::Error::other("nothing appended")),
                    };
                    if let Ok(seg) = &res {
                        *self.outstanding.lock().entry(*seg).or_default() += 1;
                    }
                    if let Err(Ok(seg)) = done.send(res) {
                        // The request went away: nobody will insert these spans.
                        release(&self.outstanding, seg);
                    }
                }
                Cmd::Maintain { keep_from } => maintain = Some(keep_from),
                Cmd::Shutdown => shutdown = true,
            }
        }
        if let Some(keep_from) = maintain {
            self.maintain(wal, keep_from);
        }
        if shutdown { Flow::Stop } else { Flow::Continue }
    }

    fn idle(&mut self, _wal: &mut Wal) -> Flow {
        Flow::Continue
    }

    fn finish(&mut self, wal: &mut Wal, left: Vec<Cmd>) {
        for cmd in left {
            if let Cmd::Append { done, .. } = cmd {
                let _ = done.send(Err(std::io::Error::other("sampling log is closed")));
            }
        }
        let _ = wal.sync();
    }
}

impl LogCommitter {
    /// Rolls to a new segment past [`SEGMENT_BYTES`] or [`SEGMENT_AGE`], and deletes every
    /// segment before the oldest one still needed (by a buffered trace, a retry or an
    /// append not yet in the buffer).
    fn maintain(&mut self, wal: &mut Wal, keep_from: Option<u64>) {
        if self.written > 0 && (self.written >= SEGMENT_BYTES || self.rolled.elapsed() >= SEGMENT_AGE) {
            match wal.rotate() {
                Ok(_) => {
                    self.written = 0;
                    self.rolled = Instant::now();
                }
                Err(e) => warn!(error = %e, "rolling the sampling log failed"),
            }
        }
        let current = wal.current_segment();
        let in_flight = self.outstanding.lock().keys().next().copied();
        let floor = [keep_from, in_flight, Some(current)].into_iter().flatten().min().unwrap_or(current);
        if floor > 0
            && let Err(e) = Wal::remove_through(&StdFs as &dyn FileSystem, &self.dir, floor - 1)
        {
            warn!(error = %e, "deleting old sampling log segments failed");
        }
    }
}
