//! RED metrics (rate, errors, duration) per service and operation, and service-graph
//! edges, computed from every span as it arrives — before sampling — so they stay exact
//! when most traces are dropped.
//!
//! Cardinality is bounded: past `max_operations_per_service` distinct span names a
//! service's further operations count under `other`; past `max_services`, further services
//! count under `other`. Edges pair a span with its parent in another service; both halves
//! are remembered for two windows of `edge_window`, so a parent arriving up to that long
//! after its child (or before it) still pairs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use foldhash::HashMap;
use parking_lot::Mutex;
use serde::Serialize;
use strand_core::metrics::{Sample, SampleValue};
use strand_core::{MetricFamily, MetricKind, SpanBatch, SpanId, SpanKind, StatusCode, TraceId};

/// Upper bounds (seconds) of the duration histogram: the collector's spanmetrics defaults.
pub const BUCKETS: [f64; 16] =
    [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];
/// Label value that operations and services beyond the limits fold into.
pub const OTHER: &str = "other";
const MINUTE: u64 = 60_000_000_000;
/// Minutes of history kept for [`RedMetrics::query`].
pub const HISTORY_MINUTES: usize = 60;

/// Bounds of the metrics.
#[derive(Debug, Clone)]
pub struct RedLimits {
    /// Distinct operations per service before the rest fold into `other`.
    pub max_operations_per_service: usize,
    /// Operations per service (the first seen) with a duration histogram of their own in
    /// `/metrics`; the others' durations are exported under `operation="other"`. A
    /// histogram is 19 series, so this keeps the exposition small; the span counter and
    /// the RED API keep every operation.
    pub max_histogram_operations_per_service: usize,
    /// Distinct services before the rest fold into `other`.
    pub max_services: usize,
    /// How long an unpaired span waits for its parent or child (two windows).
    pub edge_window_nanos: u64,
    /// Spans remembered per window for pairing; a busier window rotates early.
    pub max_edge_entries: usize,
}

impl Default for RedLimits {
    fn default() -> Self {
        Self {
            max_operations_per_service: 200,
            max_histogram_operations_per_service: 5,
            max_services: 1000,
            edge_window_nanos: 30_000_000_000,
            max_edge_entries: 500_000,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    count: u64,
    errors: u64,
    sum_nanos: u128,
    buckets: [u64; BUCKETS.len() + 1],
}

/// Labels of an operation's series: service, operation, kind (the histogram's).
fn op_labels(service: &str, op: &str, kind: SpanKind) -> Vec<(&'static str, String)> {
    vec![
        ("service", service.to_owned()),
        ("operation", op.to_owned()),
        ("span_kind", kind.as_str().to_owned()),
    ]
}

/// Labels of a span counter: an operation's, and the status (the counter's).
fn labels(service: &str, op: &str, kind: SpanKind, status: StatusCode) -> Vec<(&'static str, String)> {
    let mut labels = op_labels(service, op, kind);
    labels.push(("status", status.as_str().to_owned()));
    labels
}

impl Totals {
    fn merge(&mut self, other: &Totals) {
        self.count += other.count;
        self.errors += other.errors;
        self.sum_nanos += other.sum_nanos;
        for (b, o) in self.buckets.iter_mut().zip(other.buckets) {
            *b += o;
        }
    }

    fn add(&mut self, nanos: u64, error: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        self.sum_nanos += u128::from(nanos);
        let secs = nanos as f64 / 1e9;
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
    }

    fn minus(&self, earlier: &Totals) -> Totals {
        let mut out = self.clone();
        out.count -= earlier.count.min(out.count);
        out.errors -= earlier.errors.min(out.errors);
        out.sum_nanos -= earlier.sum_nanos.min(out.sum_nanos);
        for (b, e) in out.buckets.iter_mut().zip(earlier.buckets) {
            *b -= e.min(*b);
        }
        out
    }

    /// The `q` quantile in seconds, interpolated within its bucket.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut seen = 0.0;
        for (i, n) in self.buckets.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= rank {
                let lo = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let hi = BUCKETS.get(i).copied().unwrap_or(lo);
                return Some(lo + (hi - lo) * ((rank - seen) / n).clamp(0.0, 1.0));
            }
            seen += n;
        }
        BUCKETS.last().copied()
    }
}

/// Totals per (service, operation, kind), statuses merged.
type OperationTotals = HashMap<(Arc<str>, Arc<str>, SpanKind), Totals>;

/// What [`RedMetrics::series`] is asked.
#[derive(Debug, Clone)]
pub struct SeriesQuery<'a> {
    /// Services to include; all when empty.
    pub services: &'a [String],
    /// Span kinds to include; all when empty.
    pub kinds: &'a [SpanKind],
    /// One series per operation instead of per service.
    pub by_operation: bool,
    /// When the points are (Unix nanoseconds).
    pub points: &'a [u64],
    /// How far back from each point its spans are counted.
    pub window: u64,
    /// The latency quantile each point carries (0 to 1).
    pub quantile: f64,
}

/// One series of [`RedMetrics::series`].
#[derive(Debug, Clone, PartialEq)]
pub struct RedSeries {
    /// Service.
    pub service: String,
    /// Operation, when grouped by operation.
    pub operation: Option<String>,
    /// Its points, in time order.
    pub points: Vec<RedPoint>,
}

/// One point: the spans of the window before `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedPoint {
    /// When (Unix nanoseconds).
    pub at: u64,
    /// Spans.
    pub requests: u64,
    /// Spans with error status.
    pub errors: u64,
    /// The asked quantile of their durations, in seconds (from the histogram).
    pub quantile_seconds: Option<f64>,
}

/// Series key within a service: operation, kind, status.
type CellKey = (Arc<str>, SpanKind, StatusCode);

#[derive(Debug)]
struct Service {
    name: Arc<str>,
    /// Operations with their own series, numbered in the order they were first seen.
    operations: HashMap<Arc<str>, u32>,
    cells: HashMap<CellKey, Totals>,
    /// Root spans (no parent) per operation, operations folded into `other` excluded.
    roots: HashMap<Arc<str>, u64>,
}

/// A span remembered for pairing: its service (index into `State::services`) and status.
#[derive(Debug, Clone, Copy)]
struct Known {
    service: u32,
    error: bool,
}

#[derive(Debug, Default)]
struct Generation {
    spans: HashMap<(TraceId, SpanId), Known>,
    waiting: HashMap<(TraceId, SpanId), Vec<Known>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct EdgeTotals {
    calls: u64,
    failed: u64,
}

#[derive(Debug)]
struct State {
    services: Vec<Service>,
    service_index: HashMap<Arc<str>, u32>,
    other: Arc<str>,
    cur: Generation,
    prev: Generation,
    rotated_at: u64,
    edges: HashMap<(u32, u32), EdgeTotals>,
    history: VecDeque<(u64, OperationTotals)>,
    started: u64,
}

/// The metrics. Shared by every receiver task; one short lock per batch.
#[derive(Debug)]
pub struct RedMetrics {
    limits: RedLimits,
    state: Mutex<State>,
}

/// One operation's figures over a time range ([`RedMetrics::query`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationRed {
    /// Service.
    pub service: String,
    /// Span name (or `other`).
    pub operation: String,
    /// Span kind.
    pub span_kind: &'static str,
    /// Spans.
    pub requests: u64,
    /// Spans per second over the range.
    pub request_rate: f64,
    /// Spans with error status.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Mean duration (ms).
    pub avg_ms: f64,
    /// Median (ms), from the histogram.
    pub p50_ms: Option<f64>,
    /// 95th percentile (ms).
    pub p95_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
}

impl RedMetrics {
    /// Empty metrics; `now` is when counting starts.
    pub fn new(limits: RedLimits, now: u64) -> Self {
        let state = State {
            services: Vec::new(),
            service_index: HashMap::default(),
            other: Arc::from(OTHER),
            cur: Generation::default(),
            prev: Generation::default(),
            rotated_at: now,
            edges: HashMap::default(),
            history: VecDeque::new(),
            started: now,
        };
        Self { limits, state: Mutex::new(state) }
    }

    /// Counts every span of a batch received at `now`. A span seen again within the
    /// pairing window (a client's retry after a 429 or a timeout) is not counted twice.
    pub fn observe(&self, batch: &SpanBatch, now: u64) {
        let mut st = self.state.lock();
        st.snapshot_if_due(now);
        if now.saturating_sub(st.rotated_at) >= self.limits.edge_window_nanos
            || st.cur.spans.len() >= self.limits.max_edge_entries
        {
            st.prev = std::mem::take(&mut st.cur);
            st.rotated_at = now;
        }
        for rs in &batch.resource_spans {
            let sid = st.service_id(rs.resource.service_name(), &self.limits);
            let State { services, cur, prev, edges, other, .. } = &mut *st;
            let svc = &mut services[sid as usize];
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let key = (span.trace_id, span.span_id);
                if cur.spans.contains_key(&key) || prev.spans.contains_key(&key) {
                    continue;
                }
                let error = span.status.code == StatusCode::Error;
                let op: Arc<str> = match svc.operations.get_key_value(span.name.as_str()) {
                    Some((k, _)) => k.clone(),
                    None if svc.operations.len() < self.limits.max_operations_per_service => {
                        let k: Arc<str> = Arc::from(span.name.as_str());
                        let order = svc.operations.len() as u32;
                        svc.operations.insert(k.clone(), order);
                        k
                    }
                    None => other.clone(),
                };
                if span.parent_span_id.is_none() && !Arc::ptr_eq(&op, other) {
                    *svc.roots.entry(op.clone()).or_default() += 1;
                }
                svc.cells
                    .entry((op, span.kind, span.status.code))
                    .or_default()
                    .add(span.duration_nanos(), error);
                let me = Known { service: sid, error };
                pair(cur, prev, edges, span.trace_id, span.span_id, span.parent_span_id, me);
            }
        }
    }

    /// Root spans received per service and operation since start (operations beyond the
    /// per-service limit and services beyond `max_services` are not counted): what adaptive sampling steers by.
    pub fn root_counts(&self) -> Vec<(Arc<str>, Arc<str>, u64)> {
        let st = self.state.lock();
        st.services
            .iter()
            .filter(|svc| !Arc::ptr_eq(&svc.name, &st.other))
            .flat_map(|svc| svc.roots.iter().map(|(op, n)| (svc.name.clone(), op.clone(), *n)))
            .collect()
    }

    /// The metrics of every span seen, for `/metrics`: span counts per service, operation,
    /// kind and status; duration histograms per service, operation and kind (statuses
    /// merged; per operation for the first
    /// [`RedLimits::max_histogram_operations_per_service`] of each service); and the
    /// service graph's calls and failed calls.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let st = self.state.lock();
        let mut requests = MetricFamily::new(
            "strand_span_requests_total",
            "Spans received, before sampling, per service, operation, kind and status.",
            MetricKind::Counter,
        );
        let mut histograms: BTreeMap<(Arc<str>, Arc<str>, SpanKind), Totals> = BTreeMap::new();
        for svc in &st.services {
            for ((op, kind, status), t) in &svc.cells {
                requests.push(labels(&svc.name, op, *kind, *status), t.count as f64);
                let own = svc.operations.get(op).is_some_and(|&order| {
                    (order as usize) < self.limits.max_histogram_operations_per_service
                });
                let op = if own { op.clone() } else { st.other.clone() };
                histograms.entry((svc.name.clone(), op, *kind)).or_default().merge(t);
            }
        }
        requests.samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut durations = MetricFamily::new(
            "strand_span_duration_seconds",
            "Span durations, before sampling.",
            MetricKind::Histogram,
        );
        for ((svc, op, kind), t) in histograms {
            let mut cumulative = 0;
            let buckets = BUCKETS
                .iter()
                .zip(&t.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    (*bound, cumulative)
                })
                .collect();
            durations.samples.push(Sample {
                labels: op_labels(&svc, &op, kind),
                value: SampleValue::Histogram { buckets, sum: t.sum_nanos as f64 / 1e9, count: t.count },
            });
        }
        let edges = st.named_edges();
        let mut calls = MetricFamily::new(
            "strand_service_graph_requests_total",
            "Calls from a client service to a server service (parent and child span in different services), before sampling.",
            MetricKind::Counter,
        );
        let mut failed = MetricFamily::new(
            "strand_service_graph_request_failed_total",
            "Of those, calls where either span has error status.",
            MetricKind::Counter,
        );
        for (c, s, e) in &edges {
            let l = vec![("client", c.to_string()), ("server", s.to_string())];
            calls.push(l.clone(), e.calls as f64);
            failed.push(l, e.failed as f64);
        }
        vec![requests, durations, calls, failed]
    }

    /// Figures per operation of `service` (every service when `None`) over the last
    /// `range_nanos` before `now`, at minute resolution; also returns the start actually
    /// covered (later than asked when the history is shorter).
    pub fn query(&self, service: Option<&str>, range_nanos: u64, now: u64) -> (u64, Vec<OperationRed>) {
        let mut st = self.state.lock();
        st.snapshot_if_due(now);
        let want = now.saturating_sub(range_nanos);
        // Snapshots are taken at the first event of a minute, so a minute without one is a
        // minute without events: the next snapshot's totals held all through it.
        let wm = want / MINUTE * MINUTE;
        let (from, base) = match st.history.iter().position(|(t, _)| *t > wm) {
            Some(0) => (st.started, None),
            Some(i) if st.history[i - 1].0 == wm => (wm.max(st.started), Some(&st.history[i - 1].1)),
            Some(i) => (wm.max(st.started), Some(&st.history[i].1)),
            None => match st.history.back() {
                Some((t, snap)) => ((*t).max(st.started), Some(snap)),
                None => (st.started, None),
            },
        };
        let secs = (now.saturating_sub(from) as f64 / 1e9).max(1e-9);
        let current = st.totals();
        let mut out: Vec<OperationRed> = current
            .iter()
            .filter(|((s, _, _), _)| service.is_none_or(|want| &**s == want))
            .filter_map(|(key, t)| {
                let t = match base.and_then(|b| b.get(key)) {
                    Some(earlier) => t.minus(earlier),
                    None => t.clone(),
                };
                (t.count > 0).then(|| OperationRed {
                    service: key.0.to_string(),
                    operation: key.1.to_string(),
                    span_kind: key.2.as_str(),
                    requests: t.count,
                    request_rate: t.count as f64 / secs,
                    errors: t.errors,
                    error_rate: t.errors as f64 / t.count as f64,
                    avg_ms: t.sum_nanos as f64 / t.count as f64 / 1e6,
                    p50_ms: t.quantile(0.5).map(|s| s * 1e3),
                    p95_ms: t.quantile(0.95).map(|s| s * 1e3),
                    p99_ms: t.quantile(0.99).map(|s| s * 1e3),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.service, &a.operation, a.span_kind).cmp(&(&b.service, &b.operation, b.span_kind))
        });
        (from, out)
    }

    /// Time series for Jaeger's Monitor tab: for each of `points` (Unix nanoseconds), the
    /// spans of the services named (all when empty) and kinds named (all when empty) over
    /// the `window` before it, grouped by service, or by service and operation. Minute
    /// resolution: a point counts up to the end of its minute (in the current minute,
    /// everything so far); points older than the history kept are left out. Series are
    /// sorted by their labels.
    pub fn series(&self, q: &SeriesQuery<'_>, now: u64) -> Vec<RedSeries> {
        let mut st = self.state.lock();
        st.snapshot_if_due(now);
        let current = st.totals();
        let oldest = st.history.front().map_or(now, |(t, _)| *t);
        // Older minutes were dropped from the history: what came before `oldest` is unknown.
        let truncated = st.history.len() > HISTORY_MINUTES;
        // Totals up to the end of the minute holding `t`: the first snapshot taken after it
        // (a minute without a snapshot had no events until the next one), else the current.
        // Where the totals at `t` are (see above): nothing yet, a snapshot, or the current.
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        enum Source {
            Empty,
            Snapshot(usize),
            Current,
        }
        let source_at = |t: u64| -> Option<Source> {
            if t < st.started {
                return Some(Source::Empty);
            }
            let next = (t / MINUTE * MINUTE).saturating_add(MINUTE);
            if truncated && next < oldest {
                return None;
            }
            Some(st.history.iter().position(|(s, _)| *s >= next).map_or(Source::Current, Source::Snapshot))
        };
        let group = |totals: &OperationTotals| -> BTreeMap<(String, Option<String>), Totals> {
            let mut out: BTreeMap<(String, Option<String>), Totals> = BTreeMap::new();
            for ((svc, op, kind), t) in totals {
                if (!q.services.is_empty() && !q.services.iter().any(|s| s == &**svc))
                    || (!q.kinds.is_empty() && !q.kinds.contains(kind))
                {
                    continue;
                }
                let key = (svc.to_string(), q.by_operation.then(|| op.to_string()));
                out.entry(key).or_default().merge(t);
            }
            out
        };
        // Each source is grouped once (many points share one), under the lock; the rest is
        // done after it, so receivers wait for as little as possible.
        let mut grouped: HashMap<Source, BTreeMap<(String, Option<String>), Totals>> = HashMap::default();
        let mut pairs = Vec::with_capacity(q.points.len());
        for &t in q.points {
            let (Some(end), Some(start)) = (source_at(t), source_at(t.saturating_sub(q.window))) else {
                continue;
            };
            for src in [end, start] {
                grouped.entry(src).or_insert_with(|| match src {
                    Source::Empty => BTreeMap::new(),
                    Source::Snapshot(i) => group(&st.history[i].1),
                    Source::Current => group(&current),
                });
            }
            pairs.push((t, end, start));
        }
        drop(st);
        let mut series: BTreeMap<(String, Option<String>), Vec<RedPoint>> = BTreeMap::new();
        for (t, end, start) in pairs {
            let (Some(end), Some(start)) = (grouped.get(&end), grouped.get(&start)) else { continue };
            for (key, total) in end {
                let d = match start.get(key) {
                    Some(earlier) => total.minus(earlier),
                    None => total.clone(),
                };
                series.entry(key.clone()).or_default().push(RedPoint {
                    at: t,
                    requests: d.count,
                    errors: d.errors,
                    quantile_seconds: d.quantile(q.quantile),
                });
            }
        }
        series
            .into_iter()
            .map(|((service, operation), points)| RedSeries { service, operation, points })
            .collect()
    }

    /// Service-graph edges so far: `(client, server, calls, failed)`, sorted.
    pub fn edges(&self) -> Vec<(String, String, u64, u64)> {
        let st = self.state.lock();
        st.named_edges()
            .into_iter()
            .map(|(c, s, e)| (c.to_string(), s.to_string(), e.calls, e.failed))
            .collect()
    }
}

impl State {
    /// The index of a service, registering it (or `other`, past the limit).
    fn service_id(&mut self, name: &str, limits: &RedLimits) -> u32 {
        if let Some(&i) = self.service_index.get(name) {
            return i;
        }
        let key =
            if self.services.len() < limits.max_services { Arc::from(name) } else { self.other.clone() };
        if let Some(&i) = self.service_index.get(&key) {
            return i;
        }
        let i = self.services.len() as u32;
        self.services.push(Service {
            name: key.clone(),
            operations: HashMap::default(),
            cells: HashMap::default(),
            roots: HashMap::default(),
        });
        self.service_index.insert(key, i);
        i
    }

    /// Edges with service names, sorted.
    fn named_edges(&self) -> Vec<(&Arc<str>, &Arc<str>, EdgeTotals)> {
        let name = |i: u32| &self.services[i as usize].name;
        let mut v: Vec<_> = self.edges.iter().map(|((c, s), e)| (name(*c), name(*s), *e)).collect();
        v.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        v
    }

    /// Totals per (service, operation, kind), statuses merged (errors counted apart).
    fn totals(&self) -> OperationTotals {
        let mut out = OperationTotals::default();
        for svc in &self.services {
            for ((op, kind, _), t) in &svc.cells {
                let e = out.entry((svc.name.clone(), op.clone(), *kind)).or_default();
                e.count += t.count;
                e.errors += t.errors;
                e.sum_nanos += t.sum_nanos;
                for (a, b) in e.buckets.iter_mut().zip(t.buckets) {
                    *a += b;
                }
            }
        }
        out
    }

    fn snapshot_if_due(&mut self, now: u64) {
        let minute = now / MINUTE * MINUTE;
        if self.history.back().is_some_and(|(t, _)| *t >= minute) {
            return;
        }
        let snap = self.totals();
        self.history.push_back((minute, snap));
        while self.history.len() > HISTORY_MINUTES + 1 {
            self.history.pop_front();
        }
    }
}

fn edge(edges: &mut HashMap<(u32, u32), EdgeTotals>, parent: Known, child: Known) {
    if parent.service == child.service {
        return;
    }
    let e = edges.entry((parent.service, child.service)).or_default();
    e.calls += 1;
    e.failed += u64::from(parent.error || child.error);
}

/// Pairs a span with its parent and with children that arrived before it.
fn pair(
    cur: &mut Generation,
    prev: &mut Generation,
    edges: &mut HashMap<(u32, u32), EdgeTotals>,
    trace: TraceId,
    id: SpanId,
    parent: Option<SpanId>,
    me: Known,
) {
    for waiting in [cur.waiting.remove(&(trace, id)), prev.waiting.remove(&(trace, id))].into_iter().flatten()
    {
        for child in waiting {
            edge(edges, me, child);
        }
    }
    if let Some(p) = parent {
        match cur.spans.get(&(trace, p)).or_else(|| prev.spans.get(&(trace, p))) {
            Some(&parent) => edge(edges, parent, me),
            None => cur.waiting.entry((trace, p)).or_default().push(me),
        }
    }
    cur.spans.insert((trace, id), me);
}
