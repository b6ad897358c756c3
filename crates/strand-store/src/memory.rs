//! The in-memory reference backend: every contract answered by brute force over a map of
//! traces, written to be obviously right rather than fast.
//!
//! It is the second backend the conformance suite runs against (so the suite's
//! expectations are not just "whatever the embedded store does"), and it runs a server
//! that keeps nothing on disk (`storage.backend: memory`): data is lost when the process
//! ends, and memory grows with the data up to retention's byte budget.
//!
//! [`MemoryStore::reopen`] shares the data of a closed store with a new one, which is what a
//! restart means for this backend (the suite's reopen check).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use strand_core::search::{SpanConditions, value_text};
use strand_core::{
    BoxFuture, Clock, Cursor, DependencyEdge, KeyValue, LogBatch, LogPage, LogQuery, LogStore, MetricFamily,
    Operation, SearchPage, SinkError, SpanBatch, SpanId, SpanSink, StatusCode, StoreError, StoredLog,
    StoredSpan, SystemClock, TimeRange, Trace, TraceId, TraceQuery, TraceReader, TraceStore, TraceSummary,
    TraceWriter,
};

use crate::index::MAX_INDEXED_VALUE_LEN;

/// Settings of a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Where receive times come from.
    pub clock: Arc<dyn Clock>,
    /// Spans received longer ago than this are deleted by [`TraceStore::maintain`].
    pub retention: Duration,
    /// The oldest spans are deleted while the stored spans take more than this (their
    /// encoded size).
    pub max_bytes: Option<u64>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock), retention: Duration::from_secs(7 * 24 * 3600), max_bytes: None }
    }
}

struct Entry {
    received: u64,
    bytes: u64,
    span: StoredSpan,
}

struct LogEntry {
    received: u64,
    bytes: u64,
    log: StoredLog,
}

/// What a [`MemoryStore`] holds; shared by [`MemoryStore::reopen`].
#[derive(Default)]
pub struct MemoryData {
    traces: HashMap<TraceId, Vec<Entry>>,
    /// Log records in arrival order.
    logs: Vec<LogEntry>,
    /// Fingerprints of the stored log records, for the duplicate check.
    log_fingerprints: HashSet<u64>,
    /// Every stored span, for the duplicate check.
    ids: HashSet<(TraceId, SpanId)>,
    last_received: u64,
    bytes: u64,
    /// When retention last ran.
    maintained: u64,
}

/// Retention runs at most this often on its own (on writes).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Counters {
    spans_written: AtomicU64,
    spans_duplicate: AtomicU64,
    spans_deleted: AtomicU64,
    logs_written: AtomicU64,
}

/// The in-memory backend; see the module docs.
pub struct MemoryStore {
    data: Arc<RwLock<MemoryData>>,
    cfg: MemoryConfig,
    closed: AtomicBool,
    counters: Counters,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(cfg: MemoryConfig) -> Self {
        Self::reopen(Arc::default(), cfg)
    }

    /// A store over `data` (from [`MemoryStore::data`] of an earlier one).
    pub fn reopen(data: Arc<RwLock<MemoryData>>, cfg: MemoryConfig) -> Self {
        Self { data, cfg, closed: AtomicBool::new(false), counters: Counters::default() }
    }

    /// The data, to hand to [`MemoryStore::reopen`].
    pub fn data(&self) -> Arc<RwLock<MemoryData>> {
        self.data.clone()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::SeqCst) { Err(StoreError::Closed) } else { Ok(()) }
    }

    fn insert(&self, batch: SpanBatch) -> Result<(), SinkError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SinkError::Unavailable("store is closed".into()));
        }
        let mut d = self.data.write();
        // Receive times are strictly increasing, so a search snapshot taken between two
        // writes tells them apart.
        let received = strand_core::clock::next_receive_time(self.cfg.clock.now_unix_nano(), d.last_received);
        d.last_received = received;
        for span in batch.into_stored() {
            if !d.ids.insert((span.span.trace_id, span.span.span_id)) {
                self.counters.spans_duplicate.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let bytes = encoded_len(&span);
            d.traces.entry(span.span.trace_id).or_default().push(Entry { received, bytes, span });
            d.bytes += bytes;
            self.counters.spans_written.fetch_add(1, Ordering::Relaxed);
        }
        // Retention schedules itself: on a write once the interval has passed, or at once
        // when the byte budget is exceeded.
        let due = received.saturating_sub(d.maintained) >= MAINTENANCE_INTERVAL.as_nanos() as u64
            || self.cfg.max_bytes.is_some_and(|b| d.bytes > b);
        drop(d);
        if due {
            self.enforce_retention();
        }
        Ok(())
    }

    fn insert_logs(&self, batch: LogBatch) -> Result<(), SinkError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SinkError::Unavailable("store is closed".into()));
        }
        let mut d = self.data.write();
        let received = strand_core::clock::next_receive_time(self.cfg.clock.now_unix_nano(), d.last_received);
        d.last_received = received;
        for log in batch.into_stored() {
            if !d.log_fingerprints.insert(log.fingerprint()) {
                continue;
            }
            let bytes = postcard::to_allocvec(&log.record).map_or(0, |v| v.len() as u64);
            d.bytes += bytes;
            d.logs.push(LogEntry { received, bytes, log });
            self.counters.logs_written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn trace(d: &MemoryData, id: &TraceId) -> Option<Trace> {
        let entries = d.traces.get(id)?;
        Some(Trace::from_spans(*id, entries.iter().map(|e| e.span.clone()).collect()))
    }

    /// Spans of every trace overlapping `range`, for the listings.
    fn spans_in(d: &MemoryData, range: TimeRange) -> impl Iterator<Item = &StoredSpan> {
        d.traces
            .values()
            .flatten()
            .map(|e| &e.span)
            .filter(move |s| range.overlaps(s.span.start_time_unix_nano, s.span.end_time_unix_nano))
    }

    fn search(&self, q: &TraceQuery) -> SearchPage {
        let d = self.data.read();
        let as_of = q.cursor.map_or(d.last_received, |c| c.as_of_unix_nano);
        let after = q.cursor.map(|c| (c.start_unix_nano, std::cmp::Reverse(c.trace_id)));
        let conditions = SpanConditions::new(q);
        // The snapshot: only spans received by `as_of` count, for matching and summaries.
        let mut hits: Vec<TraceSummary> = d
            .traces
            .iter()
            .filter(|(_, entries)| entries.iter().any(|e| e.received <= as_of && conditions.matches(&e.span)))
            .map(|(id, entries)| {
                let visible: Vec<StoredSpan> =
                    entries.iter().filter(|e| e.received <= as_of).map(|e| e.span.clone()).collect();
                TraceSummary::of(*id, &visible)
            })
            .filter(|t| {
                q.min_trace_duration_nano.is_none_or(|m| t.duration_nano >= m)
                    && q.max_trace_duration_nano.is_none_or(|m| t.duration_nano <= m)
                    && after.is_none_or(|a| (t.start_unix_nano, std::cmp::Reverse(t.trace_id)) < a)
            })
            .collect();
        hits.sort_by_key(|t| std::cmp::Reverse((t.start_unix_nano, std::cmp::Reverse(t.trace_id))));
        let mut page = SearchPage::default();
        if hits.len() > q.limit {
            hits.truncate(q.limit);
            page.next_cursor = hits.last().map(|t| Cursor {
                as_of_unix_nano: as_of,
                start_unix_nano: t.start_unix_nano,
                trace_id: t.trace_id,
            });
        }
        page.traces = hits;
        page
    }

    fn dependencies(d: &MemoryData, range: TimeRange) -> Vec<DependencyEdge> {
        // Edges are counted per minute of the child span's start, as the embedded store does.
        let minute = |ns: u64| ns / 60_000_000_000;
        let (from, to) = (minute(range.start_unix_nano), minute(range.end_unix_nano));
        let mut edges: HashMap<(String, String), (u64, u64)> = HashMap::new();
        for entries in d.traces.values() {
            let service_of: HashMap<_, _> =
                entries.iter().map(|e| (e.span.span.span_id, e.span.resource.service_name())).collect();
            for e in entries {
                let child = e.span.resource.service_name();
                let Some(parent) = e.span.span.parent_span_id.and_then(|p| service_of.get(&p)) else {
                    continue;
                };
                if *parent != child && (from..=to).contains(&minute(e.span.span.start_time_unix_nano)) {
                    let entry = edges.entry(((*parent).to_owned(), child.to_owned())).or_default();
                    entry.0 += 1;
                    entry.1 += u64::from(e.span.span.status.code == StatusCode::Error);
                }
            }
        }
        DependencyEdge::from_counts(edges)
    }

    /// Deletes spans received before the retention's cutoff; then, over the byte budget,
    /// whole traces, least recently received first, down to 90 % of the budget (so a
    /// store at its budget does not evict on every write).
    fn enforce_retention(&self) {
        let now = self.cfg.clock.now_unix_nano();
        let cutoff = now.saturating_sub(self.cfg.retention.as_nanos() as u64);
        let mut d = self.data.write();
        d.maintained = now;
        let MemoryData { traces, ids, bytes, logs, log_fingerprints, .. } = &mut *d;
        logs.retain(|e| {
            let keep = e.received >= cutoff;
            if !keep {
                log_fingerprints.remove(&e.log.fingerprint());
                *bytes -= e.bytes;
            }
            keep
        });
        let mut deleted = 0u64;
        let mut forget = |id: &TraceId, e: &Entry, bytes: &mut u64| {
            ids.remove(&(*id, e.span.span.span_id));
            *bytes -= e.bytes;
            deleted += 1;
        };
        traces.retain(|id, es| {
            es.retain(|e| {
                let keep = e.received >= cutoff;
                if !keep {
                    forget(id, e, bytes);
                }
                keep
            });
            !es.is_empty()
        });
        if let Some(budget) = self.cfg.max_bytes
            && *bytes > budget
        {
            let low_water = budget / 10 * 9;
            let mut by_age: Vec<(u64, TraceId)> = traces
                .iter()
                .map(|(id, es)| (es.iter().map(|e| e.received).max().unwrap_or(0), *id))
                .collect();
            by_age.sort_unstable();
            for (_, id) in by_age {
                if *bytes <= low_water {
                    break;
                }
                if let Some(es) = traces.remove(&id) {
                    es.iter().for_each(|e| forget(&id, e, bytes));
                }
            }
            // Then log records, oldest received first (they are in arrival order).
            let over = logs.iter().take_while(|e| {
                let go = *bytes > low_water;
                if go {
                    *bytes -= e.bytes;
                    log_fingerprints.remove(&e.log.fingerprint());
                }
                go
            });
            let n = over.count();
            logs.drain(..n);
        }
        self.counters.spans_deleted.fetch_add(deleted, Ordering::Relaxed);
    }
}

/// What a span counts against the byte budget: its encoded size.
fn encoded_len(s: &StoredSpan) -> u64 {
    postcard::to_allocvec(&s.span).map_or(0, |v| v.len() as u64)
}

fn ready<'a, T: Send + 'a>(v: Result<T, StoreError>) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(std::future::ready(v))
}

impl TraceWriter for MemoryStore {
    fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(std::future::ready(self.insert(batch)))
    }
}

impl SpanSink for MemoryStore {
    fn consume(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        self.write(batch)
    }
}

impl TraceReader for MemoryStore {
    fn get_trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        ready(self.check_open().map(|()| Self::trace(&self.data.read(), &trace_id)))
    }

    fn get_traces(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Trace>, StoreError>> {
        ready(self.check_open().map(|()| {
            let d = self.data.read();
            ids.iter().filter_map(|id| Self::trace(&d, id)).collect()
        }))
    }

    fn find_traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        ready(self.check_open().map(|()| self.search(&query)))
    }

    fn services(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        ready(self.check_open().map(|()| {
            let d = self.data.read();
            let names: BTreeSet<String> =
                Self::spans_in(&d, range).map(|s| s.resource.service_name().to_owned()).collect();
            names.into_iter().collect()
        }))
    }

    fn operations(
        &self,
        service: String,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        ready(self.check_open().map(|()| {
            let d = self.data.read();
            let ops: BTreeSet<Operation> = Self::spans_in(&d, range)
                .filter(|s| s.resource.service_name() == service)
                .map(|s| Operation { name: s.span.name.clone(), span_kind: s.span.kind })
                .collect();
            ops.into_iter().collect()
        }))
    }

    fn attributes(
        &self,
        service: Option<String>,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        ready(self.check_open().map(|()| {
            let d = self.data.read();
            let mut out: BTreeSet<(String, String)> = BTreeSet::new();
            let mut add = |attrs: &[KeyValue]| {
                for kv in attrs {
                    if let Some(text) = value_text(&kv.value).filter(|t| t.len() <= MAX_INDEXED_VALUE_LEN) {
                        out.insert((kv.key.clone(), text));
                    }
                }
            };
            for s in Self::spans_in(&d, range)
                .filter(|s| service.as_deref().is_none_or(|svc| s.resource.service_name() == svc))
            {
                add(&s.span.attributes);
                add(&s.resource.attributes);
                add(&s.scope.attributes);
                s.span.events.iter().for_each(|e| add(&e.attributes));
                s.span.links.iter().for_each(|l| add(&l.attributes));
            }
            out.into_iter().collect()
        }))
    }

    fn dependencies(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        ready(self.check_open().map(|()| Self::dependencies(&self.data.read(), range)))
    }
}

impl LogStore for MemoryStore {
    fn write_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(std::future::ready(self.insert_logs(batch)))
    }

    fn trace_logs(
        &self,
        trace_id: TraceId,
        span_id: Option<SpanId>,
    ) -> BoxFuture<'_, Result<Vec<StoredLog>, StoreError>> {
        let found = self.check_open().map(|()| {
            let d = self.data.read();
            let logs = d.logs.iter().map(|e| &e.log).filter(|l| {
                l.record.trace_id == Some(trace_id) && span_id.is_none_or(|s| l.record.span_id == Some(s))
            });
            strand_core::logs::dedup_and_sort(logs.cloned().collect())
        });
        ready(found)
    }

    fn find_logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        let page = self.check_open().map(|()| {
            let lower = query.text.as_ref().map(|t| t.to_lowercase());
            let d = self.data.read();
            let matching = d.logs.iter().map(|e| &e.log).filter(|l| {
                let t = l.record.effective_time();
                query.range.overlaps(t, t) && query.matches(l, lower.as_deref())
            });
            strand_core::logs::page_of(&query, matching.cloned().collect())
        });
        ready(page)
    }
}

impl TraceStore for MemoryStore {
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Nothing to move: memory is the only tier.
        ready(self.check_open())
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        ready(self.check_open().map(|()| self.enforce_retention()))
    }

    fn stored_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        ready(Ok(self.data.read().bytes))
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let d = self.data.read();
        let spans: usize = d.traces.values().map(Vec::len).sum();
        let metrics = vec![
            MetricFamily::counter(
                "store_spans_written_total",
                "Spans newly stored.",
                c(&self.counters.spans_written),
            ),
            MetricFamily::counter(
                "store_spans_duplicate_total",
                "Spans received again and skipped.",
                c(&self.counters.spans_duplicate),
            ),
            MetricFamily::counter(
                "retention_deleted_spans_total",
                "Spans deleted by retention (age or bytes).",
                c(&self.counters.spans_deleted),
            ),
            MetricFamily::counter(
                "store_log_records_written_total",
                "Log records newly stored.",
                c(&self.counters.logs_written),
            ),
            MetricFamily::gauge("strand_memory_spans", "Spans held in memory.", spans as f64),
            MetricFamily::gauge(
                "strand_memory_log_records",
                "Log records held in memory.",
                d.logs.len() as f64,
            ),
            MetricFamily::gauge(
                "strand_memory_bytes",
                "Encoded bytes of the spans held in memory.",
                d.bytes as f64,
            ),
        ];
        Box::pin(std::future::ready(metrics))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.closed.store(true, Ordering::SeqCst);
        Box::pin(std::future::ready(()))
    }
}
