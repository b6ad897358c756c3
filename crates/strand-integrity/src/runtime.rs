//! [`ChainAnalyser`]: the analyser at run time. It sees every span before sampling
//! ([`SpanObserver`]), settles and analyses traces once a second, keeps the findings of
//! settled traces in an index (for trace reads and `integrity=` searches) and in a log on
//! disk, and answers the query APIs ([`ChainIntegrity`]).
//!
//! ```text
//! <data-dir>/integrity/<segment>.wal   findings log: one record per change of a trace's
//!                                      findings (postcard, framed as the store's WAL);
//!                                      rewritten at start and hourly to what is still kept
//! <data-dir>/integrity/edges.json      per-minute edge counts, saved every minute and at stop
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use strand_core::metrics::MetricFamily;
use strand_core::{
    BoxFuture, BrokenTrace, ChainIntegrity, Clock, EdgeHealth, Finding, FindingKind, Integrity,
    IntegrityFilter, MetricKind, SpanBatch, SpanObserver, Trace, TraceId, TraceReader,
};
use strand_store::fs::{FileSystem, StdFs};
use strand_store::wal::{Wal, WalError, frame};
use tracing::{info, warn};

use crate::config::IntegrityConfig;
use crate::observer::{Observer, ObserverConfig, Recorded};
use crate::span::Lite;

/// How often traces are settled.
pub const TICK: Duration = Duration::from_secs(1);
/// Version byte in front of each findings-log record.
const RECORD_VERSION: u8 = 1;
/// Stored traces read back per tick to complete traces with absent parents.
const MAX_LOOKUPS_PER_TICK: usize = 1000;

/// Why the analyser could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The findings log could not be opened.
    #[error("opening the integrity findings log: {0}")]
    Log(#[from] WalError),
    /// Rewriting the findings log failed.
    #[error("rewriting the integrity findings log: {0}")]
    Io(#[from] std::io::Error),
}

/// One settled trace with findings, as the index keeps it.
#[derive(Debug, Clone)]
struct Entry {
    start: u64,
    recorded: u64,
    /// When the trace was first recorded broken (what a search's snapshot compares).
    first_recorded: u64,
    kinds: u8,
    findings: Arc<Vec<Finding>>,
}

/// Settled traces with findings: by id, and in search order (start descending, then id).
#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<TraceId, Entry>,
    order: BTreeSet<(std::cmp::Reverse<u64>, TraceId)>,
}

impl Index {
    fn apply(&mut self, r: &Recorded, cap: usize) {
        let mut first_recorded = r.recorded_unix_nano;
        if let Some(old) = self.by_id.remove(&r.trace_id) {
            self.order.remove(&(std::cmp::Reverse(old.start), r.trace_id));
            first_recorded = old.first_recorded;
        }
        if r.findings.is_empty() {
            return;
        }
        let kinds = r.findings.iter().fold(0u8, |k, f| k | f.kind.bit());
        self.by_id.insert(
            r.trace_id,
            Entry {
                start: r.start_unix_nano,
                recorded: r.recorded_unix_nano,
                first_recorded,
                kinds,
                findings: Arc::new(r.findings.clone()),
            },
        );
        self.order.insert((std::cmp::Reverse(r.start_unix_nano), r.trace_id));
        while self.by_id.len() > cap {
            let Some(oldest) = self.order.pop_last() else { break };
            self.by_id.remove(&oldest.1);
        }
    }

    fn forget_before(&mut self, recorded: u64) {
        let old: Vec<TraceId> =
            self.by_id.iter().filter(|(_, e)| e.recorded < recorded).map(|(id, _)| *id).collect();
        for id in old {
            if let Some(e) = self.by_id.remove(&id) {
                self.order.remove(&(std::cmp::Reverse(e.start), id));
            }
        }
    }

    fn records(&self) -> impl Iterator<Item = Recorded> + '_ {
        self.by_id.iter().map(|(id, e)| Recorded {
            trace_id: *id,
            start_unix_nano: e.start,
            recorded_unix_nano: e.recorded,
            findings: (*e.findings).clone(),
        })
    }
}

/// The findings log on disk.
struct Log {
    wal: Wal,
    dir: PathBuf,
    rewritten: Instant,
}

fn encode(r: &Recorded) -> Vec<u8> {
    postcard::to_extend(r, vec![RECORD_VERSION]).expect("encoding into a Vec cannot fail")
}

fn decode(payload: &[u8]) -> Option<Recorded> {
    match payload.split_first() {
        Some((&RECORD_VERSION, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Stats {
    log_errors: AtomicU64,
    lookups: AtomicU64,
    records: AtomicU64,
}

/// The chain-integrity analyser of one server.
pub struct ChainAnalyser {
    cfg: IntegrityConfig,
    clock: Arc<dyn Clock>,
    observer: Mutex<Observer>,
    index: RwLock<Index>,
    log: Mutex<Option<Log>>,
    edges_path: Option<PathBuf>,
    reader: Arc<dyn TraceReader>,
    /// How long findings are kept (the store's retention).
    retention: Duration,
    stats: Stats,
}

impl ChainAnalyser {
    /// Opens the analyser. With a data directory it replays the findings log (keeping what
    /// is younger than `retention`), rewrites it to that, and restores the saved edge
    /// counts; without one it keeps everything in memory. `reader` is the store, read back
    /// to complete traces whose parents the stream did not bring.
    pub fn open(
        cfg: IntegrityConfig,
        data_dir: Option<&Path>,
        reader: Arc<dyn TraceReader>,
        retention: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpenError> {
        let observer = Observer::new(ObserverConfig::from(&cfg));
        let me = Self {
            observer: Mutex::new(observer),
            index: RwLock::new(Index::default()),
            log: Mutex::new(None),
            edges_path: data_dir.map(|d| d.join("integrity").join("edges.json")),
            reader,
            retention,
            stats: Stats::default(),
            clock,
            cfg,
        };
        if let Some(dir) = data_dir {
            let dir = dir.join("integrity");
            let mut replayed = Vec::new();
            let (wal, replay) = Wal::open_payloads(Arc::new(StdFs), &dir, |_, payload| {
                if let Some(r) = decode(payload) {
                    replayed.push(r);
                }
            })?;
            {
                let mut index = me.index.write();
                for r in &replayed {
                    index.apply(r, me.cfg.max_indexed_traces);
                }
                index.forget_before(me.clock.now_unix_nano().saturating_sub(retention.as_nanos() as u64));
            }
            let mut log = Log { wal, dir, rewritten: Instant::now() };
            me.rewrite(&mut log)?;
            *me.log.lock() = Some(log);
            if replay.records > 0 {
                info!(traces = me.index.read().by_id.len(), "resumed chain-integrity findings");
            }
            if let Some(path) = &me.edges_path
                && let Ok(bytes) = std::fs::read(path)
            {
                match serde_json::from_slice(&bytes) {
                    Ok(saved) => me.observer.lock().restore_edges(saved),
                    Err(e) => warn!(file = %path.display(), error = %e, "ignoring unreadable edge counts"),
                }
            }
        }
        Ok(me)
    }

    /// Writes what the index keeps into the current segment and deletes the older ones.
    fn rewrite(&self, log: &mut Log) -> std::io::Result<()> {
        let current = log.wal.current_segment();
        for r in self.index.read().records() {
            log.wal.append(&frame(&encode(&r)))?;
        }
        log.wal.sync()?;
        if current > 0 {
            Wal::remove_through(&StdFs as &dyn FileSystem, &log.dir, current - 1)?;
        }
        log.rewritten = Instant::now();
        Ok(())
    }

    /// Settles and analyses traces every second until `stop` resolves; saves the edge
    /// counts every minute and at the end, rewrites the findings log hourly.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved = Instant::now();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            self.tick().await;
            if saved.elapsed() >= Duration::from_secs(60) {
                saved = Instant::now();
                self.save_edges().await;
            }
        }
        self.save_edges().await;
    }

    /// One round: settle, analyse, complete traces with absent parents from the store,
    /// then record changed findings in the log (synced) and then the index, so a finding a
    /// search returns is durable. The analysis and the file writes run on the blocking
    /// pool.
    pub async fn tick(self: &Arc<Self>) {
        let now = self.clock.now_unix_nano();
        let me = self.clone();
        let mut records =
            tokio::task::spawn_blocking(move || me.observer.lock().tick(now)).await.unwrap_or_default();
        let structural: Vec<TraceId> = records
            .iter()
            .filter(|r| {
                r.findings
                    .iter()
                    .any(|f| matches!(f.kind, FindingKind::MissingParent | FindingKind::MissingRoot))
            })
            .map(|r| r.trace_id)
            .take(MAX_LOOKUPS_PER_TICK)
            .collect();
        if !structural.is_empty() {
            self.stats.lookups.fetch_add(structural.len() as u64, Ordering::Relaxed);
            if let Ok(traces) = self.reader.get_traces(structural).await {
                let me = self.clone();
                let merged = tokio::task::spawn_blocking(move || {
                    let mut strings = crate::span::Interner::default();
                    let stored: Vec<(TraceId, Vec<Lite>)> = traces
                        .iter()
                        .map(|t| {
                            (
                                t.trace_id,
                                t.spans
                                    .iter()
                                    .map(|s| Lite::of(&s.span, &s.resource, &mut strings))
                                    .collect(),
                            )
                        })
                        .collect();
                    let mut obs = me.observer.lock();
                    stored
                        .into_iter()
                        .flat_map(|(id, lites)| obs.merge_stored(id, lites, now))
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                records.extend(merged);
            }
        }
        if records.is_empty() {
            return;
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.record(&records, now)).await;
    }

    /// Writes changed findings to the log, syncs it, then shows them in the index.
    fn record(&self, records: &[Recorded], now: u64) {
        self.stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut log = self.log.lock();
        if let Some(log) = log.as_mut() {
            let mut write = || -> std::io::Result<()> {
                for r in records {
                    log.wal.append(&frame(&encode(r)))?;
                }
                log.wal.sync()
            };
            if let Err(e) = write() {
                self.stats.log_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "writing the integrity findings log failed");
            }
        }
        {
            let mut index = self.index.write();
            for r in records {
                index.apply(r, self.cfg.max_indexed_traces);
            }
        }
        if let Some(log) = log.as_mut()
            && log.rewritten.elapsed() >= Duration::from_secs(3600)
        {
            self.index.write().forget_before(now.saturating_sub(self.retention.as_nanos() as u64));
            let rolled = log.wal.rotate().and_then(|_| self.rewrite(log));
            if let Err(e) = rolled {
                self.stats.log_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "rewriting the integrity findings log failed");
            }
        }
    }

    async fn save_edges(&self) {
        let Some(path) = self.edges_path.clone() else { return };
        let minutes = self.observer.lock().edge_minutes();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&minutes)?)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            self.stats.log_errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "saving integrity edge counts failed");
        }
    }

    /// `strand_chain_calls_total{caller,callee,outcome}` and the analyser's own gauges and
    /// counters.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let obs = self.observer.lock();
        let mut calls = MetricFamily::new(
            "strand_chain_calls_total",
            "Calls between services (client/server and producer/consumer, counted before sampling once their trace settled) whose trace context crossed or was lost.",
            MetricKind::Counter,
        );
        for (caller, callee, c) in obs.totals() {
            for (outcome, n) in [("crossed", c.crossed), ("lost", c.lost)] {
                calls.push(
                    vec![("caller", caller.clone()), ("callee", callee.clone()), ("outcome", outcome.into())],
                    n as f64,
                );
            }
        }
        let (pending, retained, spans) = obs.held();
        vec![
            calls,
            MetricFamily::counter(
                "strand_integrity_spans_observed_total",
                "Spans the chain-integrity analyser looked at.",
                obs.spans_observed as f64,
            ),
            MetricFamily::counter(
                "strand_integrity_traces_analysed_total",
                "Traces analysed when they settled (again when late spans or the other half of a break arrived).",
                obs.traces_analysed as f64,
            ),
            MetricFamily::counter(
                "strand_integrity_traces_settled_early_total",
                "Traces analysed before their settle time because integrity.max_buffered_spans was reached.",
                obs.traces_settled_early as f64,
            ),
            MetricFamily::gauge(
                "strand_integrity_traces_settling",
                "Traces waiting to settle.",
                pending as f64,
            ),
            MetricFamily::gauge(
                "strand_integrity_traces_retained",
                "Settled traces kept for the hop window.",
                retained as f64,
            ),
            MetricFamily::gauge("strand_integrity_spans_held", "Spans held by the analyser.", spans as f64),
            MetricFamily::gauge(
                "strand_integrity_broken_traces_indexed",
                "Settled traces with findings in the index.",
                self.index.read().by_id.len() as f64,
            ),
            MetricFamily::counter(
                "strand_integrity_store_lookups_total",
                "Stored traces read back to complete traces with absent parents.",
                self.stats.lookups.load(Ordering::Relaxed) as f64,
            ),
            MetricFamily::counter(
                "strand_integrity_log_errors_total",
                "Writes of the findings log or the edge counts that failed.",
                self.stats.log_errors.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

impl SpanObserver for ChainAnalyser {
    fn observe(&self, batch: &SpanBatch, received_unix_nano: u64) {
        self.observer.lock().observe(batch, received_unix_nano);
    }
}

impl ChainIntegrity for ChainAnalyser {
    fn of_trace(&self, trace: &Trace) -> BoxFuture<'_, Option<Integrity>> {
        let id = trace.trace_id;
        let now = self.clock.now_unix_nano();
        let mut strings = crate::span::Interner::default();
        let lites: Vec<Lite> =
            trace.spans.iter().map(|s| Lite::of(&s.span, &s.resource, &mut strings)).collect();
        let (pending, held) = {
            let obs = self.observer.lock();
            (obs.is_pending(&id), obs.holds(&id))
        };
        // Only a settling trace needs what other traces taught (under the lock ingest takes
        // too); otherwise its own spans say whether it is one tree.
        let analysis = if pending {
            self.observer.lock().analyse_read(id, &lites, now)
        } else {
            crate::analysis::analyse_alone(
                id,
                &lites,
                crate::analysis::Options {
                    now,
                    hop_window_nanos: self.cfg.hop_window.0.as_nanos() as u64,
                    clock_skew_tolerance_nanos: self.cfg.clock_skew_tolerance.0.as_nanos() as u64,
                },
            )
        };
        let recorded =
            if pending { None } else { self.index.read().by_id.get(&id).map(|e| e.findings.clone()) };
        let findings = match recorded {
            // Settled and recorded broken.
            Some(f) => (*f).clone(),
            // Settled and analysed whole (still held): nothing was recorded.
            None if held => Vec::new(),
            // Settling, as it stands; or unknown to the stream (older than it remembers, or
            // from before a restart): what the trace shows by itself.
            None => analysis.findings,
        };
        Box::pin(async move { Some(Integrity { settled: !pending, complete: analysis.complete, findings }) })
    }

    fn kinds_of(&self, ids: &[TraceId]) -> BoxFuture<'_, Vec<u8>> {
        let kinds = {
            let index = self.index.read();
            ids.iter().map(|id| index.by_id.get(id).map_or(0, |e| e.kinds)).collect()
        };
        Box::pin(async move { kinds })
    }

    fn find_broken(
        &self,
        filter: IntegrityFilter,
        start_unix_nano: u64,
        end_unix_nano: u64,
        after: Option<(u64, TraceId)>,
        as_of_unix_nano: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<BrokenTrace>, strand_core::StoreError>> {
        let found = self.broken(filter, start_unix_nano, end_unix_nano, after, as_of_unix_nano, limit);
        Box::pin(async move { Ok(found) })
    }

    fn edges(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> BoxFuture<'_, Result<Vec<EdgeHealth>, strand_core::StoreError>> {
        let edges = self.observer.lock().edges(start_unix_nano, end_unix_nano);
        Box::pin(async move { Ok(edges) })
    }
}

impl ChainAnalyser {
    /// [`ChainIntegrity::find_broken`], answered from the index at once.
    fn broken(
        &self,
        filter: IntegrityFilter,
        start_unix_nano: u64,
        end_unix_nano: u64,
        after: Option<(u64, TraceId)>,
        as_of_unix_nano: u64,
        limit: usize,
    ) -> Vec<BrokenTrace> {
        use std::ops::Bound;
        let index = self.index.read();
        let from = match after {
            Some((start, id)) => Bound::Excluded((std::cmp::Reverse(start), id)),
            None => Bound::Included((std::cmp::Reverse(end_unix_nano), TraceId([0; 16]))),
        };
        index
            .order
            .range((from, Bound::Unbounded))
            .take_while(|(std::cmp::Reverse(start), _)| *start >= start_unix_nano)
            .filter_map(|(std::cmp::Reverse(start), id)| {
                let e = index.by_id.get(id)?;
                (*start <= end_unix_nano && e.first_recorded <= as_of_unix_nano && filter.matches(e.kinds))
                    .then_some(BrokenTrace { start_unix_nano: *start, trace_id: *id, kinds: e.kinds })
            })
            .take(limit)
            .collect()
    }
}
