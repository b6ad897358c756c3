//! The analyser's state in the stream: every span before sampling goes in
//! ([`Observer::observe`]); [`Observer::tick`] settles traces that went quiet, analyses
//! them, counts each call's outcome once on its edge and says which traces' findings
//! changed. Time is passed in; nothing here reads a clock or does I/O.
//!
//! ```text
//! observe ─► pending (trace → spans, last seen) ──settle_time quiet──► analyse ─► retained
//!   │          ▲  a late span moves a retained trace back                        │ hop window
//!   │          └────────────────────────────────────────────────────────────────┤
//!   └─► boundaries (new-root servers and consumers, producers, links,          final analysis
//!       requests in progress) and knowledge (who receives requests,              ─► dropped
//!       callee keys, consumers and producers of destinations)
//! ```
//!
//! Matches between the halves of a break are made one to one and remembered both ways;
//! when a match involves a trace already analysed, that trace is analysed again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use strand_core::{EdgeHealth, Finding, FindingKind, SpanBatch, SpanId, SpanKind, TraceId};

use crate::analysis::{Analysis, Options, Outcome, Peer, Relations, analyse};
use crate::span::{Interner, Lite, path_matches};

const MINUTE: u64 = 60_000_000_000;
/// Slack after a request's end within which work it started still counts as its.
const REQUEST_SLACK: u64 = 1_000_000_000;
/// Longest request considered as the one that started unrooted work.
const MAX_REQUEST: u64 = 600 * 1_000_000_000;
/// Candidate requests named for unrooted work.
const MAX_CANDIDATES: usize = 3;
/// Entries of each expiry queue (new-root servers, requests) at most.
const MAX_QUEUE: usize = 4 * MAX_BOUNDARY_ENTRIES;
/// Distinct (caller, callee, via) edges counted; beyond, new vias count as `other`.
const MAX_EDGES: usize = 10_000;
/// Entries per service or destination in the boundary indexes.
const MAX_BOUNDARY_ENTRIES: usize = 100_000;

/// Settings of the observer, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct ObserverConfig {
    /// Quiet time after which a trace is settled.
    pub settle: u64,
    /// How long a message may wait in a queue.
    pub hop_window: u64,
    /// Clock disagreement tolerated.
    pub clock_skew_tolerance: u64,
    /// Spans held, pending and retained together.
    pub max_spans: usize,
    /// How long per-minute edge counts are kept.
    pub edge_history: u64,
}

impl From<&crate::config::IntegrityConfig> for ObserverConfig {
    fn from(cfg: &crate::config::IntegrityConfig) -> Self {
        Self {
            settle: cfg.settle_time.0.as_nanos() as u64,
            hop_window: cfg.hop_window.0.as_nanos() as u64,
            clock_skew_tolerance: cfg.clock_skew_tolerance.0.as_nanos() as u64,
            max_spans: cfg.max_buffered_spans,
            edge_history: cfg.edge_history.0.as_nanos() as u64,
        }
    }
}

impl Default for ObserverConfig {
    /// The server's defaults (`IntegrityConfig::default()`).
    fn default() -> Self {
        Self::from(&crate::config::IntegrityConfig::default())
    }
}

impl ObserverConfig {
    /// How long a settled trace is kept: a hop window, so late spans and other halves
    /// still find it.
    fn retain(&self) -> u64 {
        self.hop_window.max(self.settle)
    }
}

#[derive(Debug, Default)]
struct Pending {
    spans: Vec<Lite>,
    last_seen: u64,
    /// Calls already counted on their edge, by span and callee (a trace settles more than
    /// once when spans arrive late).
    counted: HashSet<(SpanId, Arc<str>)>,
    /// Findings last reported for the trace (to report changes only).
    reported: Vec<Finding>,
    /// Spans read back from the store: their calls were counted before.
    inherited: HashSet<SpanId>,
}

#[derive(Debug)]
struct Retained {
    trace: Pending,
    settled_at: u64,
}

#[derive(Debug, Clone)]
struct Endpoint {
    trace: TraceId,
    span: Lite,
    /// When it was observed (entries expire after the retention).
    seen: u64,
}

/// What was learned about the services from their spans, each fact with when it was last
/// seen (facts unseen for [`KNOWLEDGE_AGE`] are forgotten, so per-request destinations
/// and addresses do not pile up).
#[derive(Debug, Default)]
struct Knowledge {
    /// Services with SERVER or CONSUMER spans.
    receivers: HashMap<Arc<str>, u64>,
    /// Callee key → the service it reached (`None`: it reached several, so it names none).
    callees: HashMap<Arc<str>, (Option<Arc<str>>, u64)>,
    /// Services some instrumented caller's context reached.
    called: HashMap<Arc<str>, u64>,
    /// Destination → consumer services.
    consumers: HashMap<Arc<str>, (Vec<Arc<str>>, u64)>,
    /// Destinations with producers.
    producers: HashMap<Arc<str>, u64>,
}

/// How long a learned fact lasts without being seen again.
const KNOWLEDGE_AGE: u64 = 24 * 3600 * 1_000_000_000;

impl Knowledge {
    /// Learns that callee key `key` reached `service`.
    fn learn_callee(&mut self, key: &Arc<str>, service: &Arc<str>, now: u64) {
        match self.callees.get_mut(key) {
            Some((known, seen)) => {
                if known.as_ref().is_some_and(|k| k != service) {
                    *known = None; // one key, several services: ambiguous from now on
                }
                *seen = now;
            }
            None => {
                self.callees.insert(key.clone(), (Some(service.clone()), now));
            }
        }
    }

    fn forget_before(&mut self, horizon: u64) {
        self.receivers.retain(|_, seen| *seen >= horizon);
        self.callees.retain(|_, (_, seen)| *seen >= horizon);
        self.called.retain(|_, seen| *seen >= horizon);
        self.consumers.retain(|_, (_, seen)| *seen >= horizon);
        self.producers.retain(|_, seen| *seen >= horizon);
    }
}

#[derive(Debug, Default)]
struct Boundaries {
    /// SERVER spans without a parent by what a call to them must match (see
    /// [`match_keys`]), then by start (and arrival, to keep equal starts apart).
    server_roots: HashMap<Arc<str>, HashMap<Arc<str>, ByStart<Endpoint>>>,
    /// The same entries in arrival order, for expiry.
    server_roots_seen: VecDeque<(u64, ServerKey, (u64, u64))>,
    /// Arrivals so far (the tie-breaker of equal starts).
    arrivals: u64,
    /// Destination → CONSUMER spans without a parent or links.
    consumer_roots: HashMap<Arc<str>, VecDeque<Endpoint>>,
    /// Destination → PRODUCER spans.
    producers: HashMap<Arc<str>, VecDeque<Endpoint>>,
    /// Producer `(trace, span)` → the consumer continuing it (child or link).
    continued: Aged<(TraceId, SpanId), Peer>,
    /// Service → SERVER and CONSUMER spans (requests), by start (and arrival): trace, end.
    requests: HashMap<Arc<str>, ByStart<(TraceId, u64)>>,
    /// The same entries in arrival order, for expiry.
    requests_seen: VecDeque<(u64, Arc<str>, (u64, u64))>,
}

/// A map whose entries live between one and two ages: two generations, the older dropped
/// whole when the newer is an age old (cheap, unlike scanning for expired entries).
#[derive(Debug)]
struct Aged<K, V> {
    cur: HashMap<K, V>,
    prev: HashMap<K, V>,
    since: u64,
}

impl<K, V> Default for Aged<K, V> {
    fn default() -> Self {
        Self { cur: HashMap::default(), prev: HashMap::default(), since: 0 }
    }
}

impl<K: std::hash::Hash + Eq, V> Aged<K, V> {
    fn get(&self, k: &K) -> Option<&V> {
        self.cur.get(k).or_else(|| self.prev.get(k))
    }

    fn contains(&self, k: &K) -> bool {
        self.cur.contains_key(k) || self.prev.contains_key(k)
    }

    fn insert(&mut self, k: K, v: V) {
        self.cur.insert(k, v);
    }

    /// Inserts unless present.
    fn insert_new(&mut self, k: K, v: impl FnOnce() -> V) {
        if !self.contains(&k) {
            self.cur.insert(k, v());
        }
    }

    /// Starts a new generation when the current one is `age` old.
    fn rotate(&mut self, now: u64, age: u64) {
        if now.saturating_sub(self.since) >= age {
            self.prev = std::mem::take(&mut self.cur);
            self.since = now;
        }
    }
}

impl Boundaries {
    /// Forgets the oldest new-root server.
    fn expire_server_root(&mut self) {
        let Some((_, key, at)) = self.server_roots_seen.pop_front() else { return };
        if let Some(by_key) = self.server_roots.get_mut(&key.0) {
            if let Some(roots) = by_key.get_mut(&key.1) {
                roots.remove(&at);
                if roots.is_empty() {
                    by_key.remove(&key.1);
                }
            }
            if by_key.is_empty() {
                self.server_roots.remove(&key.0);
            }
        }
    }

    /// Forgets the oldest request.
    fn expire_request(&mut self) {
        let Some((_, service, at)) = self.requests_seen.pop_front() else { return };
        if let Some(requests) = self.requests.get_mut(&service) {
            requests.remove(&at);
            if requests.is_empty() {
                self.requests.remove(&service);
            }
        }
    }
}

/// Entries by their span's start, then arrival (so equal starts stay apart).
type ByStart<T> = BTreeMap<(u64, u64), T>;

/// Saved per-minute counts of one edge: caller, callee, via, and `(minute, counts)`.
pub type SavedEdge = (String, String, String, Vec<(u64, EdgeCount)>);

/// Counts of one edge in one minute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EdgeCount {
    /// Calls whose context crossed.
    pub crossed: u64,
    /// Calls whose context was lost.
    pub lost: u64,
}

type EdgeKey = (Arc<str>, Arc<str>, Arc<str>);

/// A trace whose findings changed: what the findings log records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    /// The trace.
    pub trace_id: TraceId,
    /// Its earliest span start.
    pub start_unix_nano: u64,
    /// When the findings were made.
    pub recorded_unix_nano: u64,
    /// The findings (empty: the trace is whole after all).
    pub findings: Vec<Finding>,
}

/// The analyser's stream state. One per server, behind a lock.
#[derive(Debug)]
pub struct Observer {
    cfg: ObserverConfig,
    strings: Interner,
    pending: HashMap<TraceId, Pending>,
    retained: HashMap<TraceId, Retained>,
    /// Retained traces by settle time, for eviction (stale entries are skipped).
    retained_order: VecDeque<(u64, TraceId)>,
    spans_held: usize,
    knowledge: Knowledge,
    boundaries: Boundaries,
    /// Matched halves, both ways: `(trace, span)` → the other half.
    pairs: Aged<(TraceId, SpanId), Peer>,
    /// Traces whose analysis must be redone (the other half of a break was matched).
    dirty: Vec<TraceId>,
    /// Traces dropped after their hop window: a span of one arriving later is a fragment
    /// whose parents were seen (their absence is no finding).
    dropped: Aged<TraceId, ()>,
    /// The time of the analysis under way (matching waits for the hop window by it).
    now: u64,
    /// Per edge and minute (of the call's start), outcomes of calls.
    edges: HashMap<EdgeKey, BTreeMap<u64, EdgeCount>>,
    /// Per caller and callee, outcomes since start (monotonic, for `/metrics`).
    totals: HashMap<(Arc<str>, Arc<str>), EdgeCount>,
    /// Spans observed.
    pub spans_observed: u64,
    /// Traces analysed when they settled (again when late spans arrived).
    pub traces_analysed: u64,
    /// Traces settled before their quiet time because `max_spans` was reached.
    pub traces_settled_early: u64,
}

impl Observer {
    /// An empty observer.
    pub fn new(cfg: ObserverConfig) -> Self {
        Self {
            cfg,
            strings: Interner::default(),
            pending: HashMap::default(),
            retained: HashMap::default(),
            retained_order: VecDeque::new(),
            spans_held: 0,
            knowledge: Knowledge::default(),
            boundaries: Boundaries::default(),
            pairs: Aged::default(),
            dirty: Vec::new(),
            dropped: Aged::default(),
            now: 0,
            edges: HashMap::default(),
            totals: HashMap::default(),
            spans_observed: 0,
            traces_analysed: 0,
            traces_settled_early: 0,
        }
    }

    /// Takes in every span of a batch received at `now`.
    pub fn observe(&mut self, batch: &SpanBatch, now: u64) {
        for rs in &batch.resource_spans {
            let service = self.strings.get(rs.resource.service_name());
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let lite = Lite::of_service(span, service.clone(), &mut self.strings);
                self.learn(span.trace_id, &lite, now);
                let trace = span.trace_id;
                // A span sent twice (a retry) is dropped when the trace settles.
                let p = match self.pending.get_mut(&trace) {
                    Some(p) => p,
                    None => {
                        // A late span of a settled trace: it settles again, with everything.
                        let p = self.retained.remove(&trace).map(|r| r.trace).unwrap_or_default();
                        self.pending.entry(trace).or_insert(p)
                    }
                };
                p.spans.push(lite);
                p.last_seen = now;
                self.spans_held += 1;
                self.spans_observed += 1;
            }
        }
    }

    /// What one span teaches: who receives requests, the boundary indexes, and which
    /// producers are continued.
    fn learn(&mut self, trace: TraceId, s: &Lite, now: u64) {
        let k = &mut self.knowledge;
        let b = &mut self.boundaries;
        let endpoint = || Endpoint { trace, span: s.clone(), seen: now };
        let push = |q: &mut VecDeque<Endpoint>, e: Endpoint| {
            if q.len() >= MAX_BOUNDARY_ENTRIES {
                q.pop_front();
            }
            q.push_back(e);
        };
        match s.kind {
            SpanKind::Server | SpanKind::Consumer => {
                match k.receivers.get_mut(&s.service) {
                    Some(seen) => *seen = now,
                    None => {
                        k.receivers.insert(s.service.clone(), now);
                    }
                }
                let requests = b.requests.entry(s.service.clone()).or_default();
                if requests.len() >= MAX_BOUNDARY_ENTRIES {
                    requests.pop_first();
                }
                b.arrivals += 1;
                requests.insert((s.start, b.arrivals), (trace, s.end));
                b.requests_seen.push_back((now, s.service.clone(), (s.start, b.arrivals)));
                if b.requests_seen.len() > MAX_QUEUE {
                    b.expire_request();
                }
                if s.kind == SpanKind::Server {
                    // A server that says its RPC service (`rpc:<service>`) tells its callers'
                    // key.
                    if let Some(key) = &s.boundary.callee {
                        k.learn_callee(key, &s.service, now);
                    }
                    if s.parent.is_none()
                        && let Some(key) = server_key(&s.boundary, &mut self.strings)
                    {
                        let roots = b
                            .server_roots
                            .entry(key.0.clone())
                            .or_default()
                            .entry(key.1.clone())
                            .or_default();
                        if roots.len() >= MAX_BOUNDARY_ENTRIES {
                            roots.pop_first();
                        }
                        b.arrivals += 1;
                        roots.insert((s.start, b.arrivals), endpoint());
                        b.server_roots_seen.push_back((now, key, (s.start, b.arrivals)));
                        if b.server_roots_seen.len() > MAX_QUEUE {
                            b.expire_server_root();
                        }
                    }
                } else if let Some(d) = &s.boundary.destination {
                    let (consumers, seen) = k.consumers.entry(d.clone()).or_default();
                    *seen = now;
                    if !consumers.contains(&s.service) {
                        consumers.push(s.service.clone());
                        consumers.sort();
                    }
                    if s.parent.is_none() && s.links.is_empty() {
                        push(b.consumer_roots.entry(d.clone()).or_default(), endpoint());
                    }
                }
                if s.kind == SpanKind::Consumer {
                    let me = Peer { trace_id: trace, span_id: s.span_id, service: s.service.clone() };
                    if let Some(p) = s.parent {
                        b.continued.insert_new((trace, p), || me.clone());
                    }
                    for l in &s.links {
                        b.continued.insert_new(*l, || me.clone());
                    }
                }
            }
            SpanKind::Producer => {
                if let Some(d) = &s.boundary.destination {
                    match k.producers.get_mut(d) {
                        Some(seen) => *seen = now,
                        None => {
                            k.producers.insert(d.clone(), now);
                        }
                    }
                    push(b.producers.entry(d.clone()).or_default(), endpoint());
                }
            }
            _ => {}
        }
    }

    /// Settles the traces quiet for the settle time (and the oldest, beyond `max_spans`),
    /// analyses them and the traces whose other half was matched, and finally analyses and
    /// drops the traces retained for a hop window. Returns the traces whose findings changed.
    pub fn tick(&mut self, now: u64) -> Vec<Recorded> {
        self.now = now;
        let mut out = Vec::new();
        let mut due: Vec<(u64, TraceId)> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.last_seen) >= self.cfg.settle)
            .map(|(id, p)| (p.last_seen, *id))
            .collect();
        if self.spans_held > self.cfg.max_spans {
            // Too much held: settle the quietest traces now, then drop retained ones.
            let mut rest: Vec<(u64, TraceId, usize)> = self
                .pending
                .iter()
                .filter(|(_, p)| now.saturating_sub(p.last_seen) < self.cfg.settle)
                .map(|(id, p)| (p.last_seen, *id, p.spans.len()))
                .collect();
            rest.sort_unstable();
            let mut excess = self.spans_held - self.cfg.max_spans;
            for (seen, id, n) in rest {
                if excess == 0 {
                    break;
                }
                due.push((seen, id));
                excess = excess.saturating_sub(n);
                self.traces_settled_early += 1;
            }
        }
        due.sort_unstable();
        for (_, id) in due {
            let Some(p) = self.pending.remove(&id) else { continue };
            let p = self.settle(id, p, now, &mut out);
            self.retained.insert(id, Retained { trace: p, settled_at: now });
            self.retained_order.push_back((now, id));
        }
        self.redo_dirty(now, &mut out);
        // Retained traces past the hop window (or beyond the span budget): final analysis.
        let retain = self.cfg.retain();
        while let Some(&(at, id)) = self.retained_order.front() {
            let over = self.spans_held > self.cfg.max_spans;
            if now.saturating_sub(at) < retain && !over {
                break;
            }
            self.retained_order.pop_front();
            match self.retained.get(&id) {
                Some(r) if r.settled_at == at => {}
                _ => continue, // moved back to pending, or settled again later
            }
            let Some(r) = self.retained.remove(&id) else { continue };
            let p = self.settle(id, r.trace, now, &mut out);
            self.spans_held = self.spans_held.saturating_sub(p.spans.len());
            self.dropped.insert(id, ());
        }
        self.redo_dirty(now, &mut out);
        self.expire(now);
        out
    }

    /// Analyses traces whose other half was just matched, if they were already analysed.
    fn redo_dirty(&mut self, now: u64, out: &mut Vec<Recorded>) {
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 4 {
            rounds += 1;
            let dirty = std::mem::take(&mut self.dirty);
            for id in dirty {
                if let Some(mut r) = self.retained.remove(&id) {
                    r.trace = self.settle(id, r.trace, now, out);
                    self.retained.insert(id, r);
                }
            }
        }
    }

    /// Analyses a settled trace, counts its calls' outcomes once, learns callee keys from
    /// its crossed calls and records changed findings.
    fn settle(&mut self, id: TraceId, mut p: Pending, now: u64, out: &mut Vec<Recorded>) -> Pending {
        self.traces_analysed += 1;
        let opts = self.options(now);
        let mut spans = std::mem::take(&mut p.spans);
        let before = spans.len();
        spans.sort_unstable_by_key(|s| s.span_id);
        spans.dedup_by_key(|s| s.span_id);
        self.spans_held -= before - spans.len();
        let mut analysis = analyse(id, &spans, self, opts);
        if self.dropped.contains(&id) {
            // A late fragment of a trace analysed whole before it was dropped.
            analysis
                .findings
                .retain(|f| !matches!(f.kind, FindingKind::MissingParent | FindingKind::MissingRoot));
        }
        for c in &analysis.calls {
            if p.inherited.contains(&c.span_id) {
                continue; // read back from the store: counted when its trace settled
            }
            if c.outcome == Outcome::Crossed {
                // A crossed call's key reaches the callee's service, which an instrumented
                // caller reaches.
                if let Some(key) = &c.callee_key {
                    self.knowledge.learn_callee(key, &c.callee, now);
                }
                match self.knowledge.called.get_mut(&c.callee) {
                    Some(seen) => *seen = now,
                    None => {
                        self.knowledge.called.insert(c.callee.clone(), now);
                    }
                }
            }
            // Once per call and callee (a producer whose message several services consume
            // counts once for each).
            if !p.counted.insert((c.span_id, c.callee.clone())) {
                continue;
            }
            let via = if self.edges.len() < MAX_EDGES
                || self.edges.contains_key(&(c.caller.clone(), c.callee.clone(), c.via.clone()))
            {
                c.via.clone()
            } else {
                self.strings.get("other")
            };
            let minute = c.start / MINUTE * MINUTE;
            let cell = self
                .edges
                .entry((c.caller.clone(), c.callee.clone(), via))
                .or_default()
                .entry(minute)
                .or_default();
            let total = self.totals.entry((c.caller.clone(), c.callee.clone())).or_default();
            match c.outcome {
                Outcome::Crossed => {
                    cell.crossed += 1;
                    total.crossed += 1;
                }
                Outcome::Lost => {
                    cell.lost += 1;
                    total.lost += 1;
                }
            }
        }
        if analysis.findings != p.reported {
            out.push(Recorded {
                trace_id: id,
                start_unix_nano: spans.iter().map(|s| s.start).min().unwrap_or(0),
                recorded_unix_nano: now,
                findings: analysis.findings.clone(),
            });
            p.reported = analysis.findings;
        }
        p.spans = spans;
        p
    }

    fn options(&self, now: u64) -> Options {
        Options {
            now,
            hop_window_nanos: self.cfg.hop_window,
            clock_skew_tolerance_nanos: self.cfg.clock_skew_tolerance,
        }
    }

    /// Drops boundary entries, continuations and pairs older than twice the retention
    /// (continuations and pairs by generation), and edge minutes older than the edge history.
    fn expire(&mut self, now: u64) {
        // Kept well past the last analysis of any trace that may ask (a trace is analysed a
        // last time when it is dropped, a retention after it settled).
        let horizon = now.saturating_sub(2 * (self.cfg.retain() + self.cfg.settle));
        let b = &mut self.boundaries;
        while b.server_roots_seen.front().is_some_and(|(seen, _, _)| *seen < horizon) {
            b.expire_server_root();
        }
        while b.requests_seen.front().is_some_and(|(seen, _, _)| *seen < horizon) {
            b.expire_request();
        }
        for map in [&mut b.consumer_roots, &mut b.producers] {
            for q in map.values_mut() {
                while q.front().is_some_and(|e| e.seen < horizon) {
                    q.pop_front();
                }
            }
            map.retain(|_, q| !q.is_empty());
        }
        let age = 2 * (self.cfg.retain() + self.cfg.settle);
        b.continued.rotate(now, age);
        self.pairs.rotate(now, age);
        self.dropped.rotate(now, age);
        self.knowledge.forget_before(now.saturating_sub(KNOWLEDGE_AGE));
        let oldest_minute = now.saturating_sub(self.cfg.edge_history) / MINUTE * MINUTE;
        for minutes in self.edges.values_mut() {
            *minutes = minutes.split_off(&oldest_minute);
        }
        self.edges.retain(|_, m| !m.is_empty());
        self.strings.prune_if_grown();
    }

    /// Adds spans of a settled trace read back from the store that the stream did not
    /// bring (its earlier part arrived before a restart, or before it was last dropped) and
    /// analyses it again. Returns the changed findings, if any.
    pub fn merge_stored(&mut self, id: TraceId, spans: Vec<Lite>, now: u64) -> Vec<Recorded> {
        let mut out = Vec::new();
        let Some(mut r) = self.retained.remove(&id) else { return out };
        let known: HashSet<SpanId> = r.trace.spans.iter().map(|s| s.span_id).collect();
        let before = r.trace.spans.len();
        let new: Vec<Lite> = spans.into_iter().filter(|s| !known.contains(&s.span_id)).collect();
        r.trace.inherited.extend(new.iter().map(|s| s.span_id));
        r.trace.spans.extend(new);
        let added = r.trace.spans.len() - before;
        if added > 0 {
            self.spans_held += added;
            r.trace = self.settle(id, r.trace, now, &mut out);
        }
        self.retained.insert(id, r);
        self.redo_dirty(now, &mut out);
        out
    }

    /// Whether the trace is still settling (spans arrived within the settle time).
    pub fn is_pending(&self, id: &TraceId) -> bool {
        self.pending.contains_key(id)
    }

    /// Analyses a trace as read from the store, with what was learned from other traces.
    /// Reading changes nothing: halves already matched are named, no new match is made.
    pub fn analyse_read(&self, id: TraceId, spans: &[Lite], now: u64) -> Analysis {
        analyse(id, spans, &mut ReadOnly(self), self.options(now))
    }

    /// Whether the stream analysed this trace and still holds it (its recorded findings,
    /// or none, are its verdict).
    pub fn holds(&self, id: &TraceId) -> bool {
        self.retained.contains_key(id)
    }

    /// The shared strings (for turning read spans into [`Lite`]s).
    pub fn strings(&mut self) -> &mut Interner {
        &mut self.strings
    }

    /// Edge health of calls that started in `[start, end]`.
    pub fn edges(&self, start: u64, end: u64) -> Vec<EdgeHealth> {
        let mut out: Vec<EdgeHealth> = self
            .edges
            .iter()
            .filter_map(|((caller, callee, via), minutes)| {
                let from = start / MINUTE * MINUTE;
                let sum = minutes.range(from..=end).fold(EdgeCount::default(), |a, (_, c)| EdgeCount {
                    crossed: a.crossed + c.crossed,
                    lost: a.lost + c.lost,
                });
                (sum.crossed + sum.lost > 0).then(|| EdgeHealth {
                    caller: caller.to_string(),
                    callee: callee.to_string(),
                    via: via.to_string(),
                    crossed: sum.crossed,
                    lost: sum.lost,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.caller, &a.callee, &a.via).cmp(&(&b.caller, &b.callee, &b.via)));
        out
    }

    /// Outcomes per caller and callee since start, for `/metrics`: `(caller, callee, counts)`.
    pub fn totals(&self) -> Vec<(String, String, EdgeCount)> {
        let mut v: Vec<_> =
            self.totals.iter().map(|((a, b), c)| (a.to_string(), b.to_string(), *c)).collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// The per-minute edge counts, for saving across restarts.
    pub fn edge_minutes(&self) -> Vec<SavedEdge> {
        self.edges
            .iter()
            .map(|((a, b, via), m)| {
                (a.to_string(), b.to_string(), via.to_string(), m.iter().map(|(k, v)| (*k, *v)).collect())
            })
            .collect()
    }

    /// Restores saved per-minute edge counts (the totals for `/metrics` start again at
    /// zero, as counters do after a restart).
    pub fn restore_edges(&mut self, saved: Vec<SavedEdge>) {
        for (a, b, via, minutes) in saved {
            let key = (self.strings.get(&a), self.strings.get(&b), self.strings.get(&via));
            let e = self.edges.entry(key).or_default();
            for (m, c) in minutes {
                let cell = e.entry(m).or_default();
                cell.crossed += c.crossed;
                cell.lost += c.lost;
            }
        }
    }

    /// Traces settling and spans held.
    pub fn held(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.retained.len(), self.spans_held)
    }

    fn pair(&mut self, a: (TraceId, &Lite), b: &Peer) {
        let me = Peer { trace_id: a.0, span_id: a.1.span_id, service: a.1.service.clone() };
        self.pairs.insert((a.0, a.1.span_id), b.clone());
        self.pairs.insert((b.trace_id, b.span_id), me);
        if b.trace_id != a.0 {
            self.dirty.push(b.trace_id);
        }
    }

    fn paired(&self, trace: TraceId, span: SpanId) -> Option<Peer> {
        self.pairs.get(&(trace, span)).cloned()
    }

    fn is_paired(&self, trace: TraceId, span: SpanId) -> bool {
        self.pairs.contains(&(trace, span))
    }
}

/// The first segment of a path, or `*` for a route parameter (`{id}`, `:id`) or none.
fn first_segment(path: &str) -> &str {
    match path.trim_start_matches('/').split('/').next() {
        Some(seg) if !seg.is_empty() && !seg.starts_with('{') && !seg.starts_with(':') => seg,
        _ => "*",
    }
}

/// What a new-root server is indexed by: `("rpc", <service/method>)`, or its HTTP method
/// (`*` when unknown) and the first segment of its route or path. Both parts are interned,
/// so equal keys compare by content and look up by `&str` pairs without allocating.
type ServerKey = (Arc<str>, Arc<str>);

/// Where a new-root server is indexed.
fn server_key(b: &crate::span::Boundary, strings: &mut Interner) -> Option<ServerKey> {
    if let Some(rpc) = &b.rpc {
        return Some((strings.get("rpc"), rpc.clone()));
    }
    let path = b.route.as_deref().or(b.path.as_deref())?;
    let seg = strings.get(first_segment(path));
    Some((strings.get(b.method.as_deref().unwrap_or("*")), seg))
}

/// The keys a call may find its server under: the same RPC method, or its HTTP method (or
/// any) and its path's first segment (or a parameter there).
fn match_keys(b: &crate::span::Boundary) -> Vec<(&str, &str)> {
    if let Some(rpc) = &b.rpc {
        return vec![("rpc", rpc)];
    }
    let Some(path) = b.path.as_deref() else { return Vec::new() };
    let seg = first_segment(path);
    let method = b.method.as_deref().unwrap_or("*");
    let mut keys = Vec::with_capacity(4);
    for m in [method, "*"] {
        for s in [seg, "*"] {
            if !keys.contains(&(m, s)) {
                keys.push((m, s));
            }
        }
    }
    keys
}

/// Entries of `q` observed in `[from, to]` (entries are pushed in observation order).
fn observed_between(q: &VecDeque<Endpoint>, from: u64, to: u64) -> impl Iterator<Item = &Endpoint> {
    let first = q.partition_point(|e| e.seen < from);
    q.range(first..).take_while(move |e| e.seen <= to)
}

/// How far apart a span's own time and the time its other half was received may be:
/// clocks differ, exporters batch, and a trace settles late.
const OBSERVED_SLACK: u64 = 120 * 1_000_000_000;

fn peer(e: &Endpoint) -> Peer {
    Peer { trace_id: e.trace, span_id: e.span.span_id, service: e.span.service.clone() }
}

/// Whether two messaging spans carry the same message id.
fn same_id(a: &Lite, b: &Lite) -> bool {
    a.boundary.message_id.is_some() && a.boundary.message_id == b.boundary.message_id
}

/// Whether the message ids of two messaging spans allow them to be the same message.
fn same_message(a: &Lite, b: &Lite) -> bool {
    match (&a.boundary.message_id, &b.boundary.message_id) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

impl Relations for Observer {
    fn receives_requests(&self, service: &str) -> bool {
        self.knowledge.receivers.contains_key(service)
    }

    fn callee_service(&self, key: &str) -> Option<Arc<str>> {
        self.knowledge.callees.get(key).and_then(|(s, _)| s.clone())
    }

    fn consumers_of(&self, destination: &str) -> Vec<Arc<str>> {
        self.knowledge.consumers.get(destination).map(|(c, _)| c.clone()).unwrap_or_default()
    }

    fn has_producers(&self, destination: &str) -> bool {
        self.knowledge.producers.contains_key(destination)
    }

    fn has_instrumented_caller(&self, service: &str) -> bool {
        self.knowledge.called.contains_key(service)
    }

    fn consumer_linking(&self, trace: TraceId, span: SpanId) -> Option<Peer> {
        self.boundaries.continued.get(&(trace, span)).filter(|p| p.trace_id != trace).cloned()
    }

    fn consumer_root_for(&mut self, trace: TraceId, producer: &Lite) -> Option<Peer> {
        if let Some(p) = self.paired(trace, producer.span_id) {
            return Some(p);
        }
        let dest = producer.boundary.destination.as_ref()?;
        let (tol, window) = (self.cfg.clock_skew_tolerance, self.cfg.hop_window);
        let (from, to) = (
            producer.start.saturating_sub(OBSERVED_SLACK),
            producer.end.saturating_add(window + OBSERVED_SLACK),
        );
        // Before the hop window has passed, only the same message id says this consumer got
        // this producer's message (a healthy message may still be queued).
        let waited = self.now.saturating_sub(producer.start) >= window;
        let found = observed_between(self.boundaries.consumer_roots.get(dest)?, from, to)
            .filter(|c| {
                c.trace != trace
                    && c.span.start.saturating_add(tol) >= producer.start
                    && c.span.start.saturating_sub(producer.start) <= window
                    && (same_id(&c.span, producer) || (waited && same_message(&c.span, producer)))
                    && !self.is_paired(c.trace, c.span.span_id)
            })
            .min_by_key(|c| (c.span.start, c.span.span_id))
            .map(peer)?;
        self.pair((trace, producer), &found);
        Some(found)
    }

    fn producer_for(&mut self, trace: TraceId, consumer: &Lite) -> Option<Peer> {
        if let Some(p) = self.paired(trace, consumer.span_id) {
            return Some(p);
        }
        let dest = consumer.boundary.destination.as_ref()?;
        let (tol, window) = (self.cfg.clock_skew_tolerance, self.cfg.hop_window);
        let (from, to) = (
            consumer.start.saturating_sub(window + OBSERVED_SLACK),
            consumer.end.saturating_add(OBSERVED_SLACK),
        );
        let now = self.now;
        let found = observed_between(self.boundaries.producers.get(dest)?, from, to)
            .filter(|p| {
                // Matched on the same message id, or once the producer has waited the hop
                // window without a consumer of its own.
                let waited = now.saturating_sub(p.span.start) >= window;
                p.trace != trace
                    && p.span.start <= consumer.start.saturating_add(tol)
                    && consumer.start.saturating_sub(p.span.start) <= window
                    && (same_id(&p.span, consumer) || (waited && same_message(&p.span, consumer)))
                    && !self.boundaries.continued.contains(&(p.trace, p.span.span_id))
                    && !self.is_paired(p.trace, p.span.span_id)
            })
            .max_by_key(|p| (p.span.start, std::cmp::Reverse(p.span.span_id)))
            .map(peer)?;
        self.pair((trace, consumer), &found);
        Some(found)
    }

    fn server_root_for(&mut self, trace: TraceId, client: &Lite, callee: Option<&str>) -> Option<Peer> {
        if let Some(p) = self.paired(trace, client.span_id) {
            return Some(p);
        }
        let tol = self.cfg.clock_skew_tolerance;
        let fits = |e: &Endpoint| {
            let s = &e.span;
            e.trace != trace
                && s.service != client.service
                && s.start.saturating_add(tol) >= client.start
                && s.start <= client.end.saturating_add(tol)
                && match (&client.boundary.rpc, &s.boundary.rpc) {
                    (Some(a), Some(b)) => a == b,
                    (Some(_), None) | (None, Some(_)) => false,
                    (None, None) => {
                        client
                            .boundary
                            .method
                            .as_ref()
                            .zip(s.boundary.method.as_ref())
                            .is_none_or(|(a, b)| a == b)
                            && client.boundary.path.as_deref().is_some_and(|p| path_matches(p, &s.boundary))
                            // A callee not yet known by its key must be the host called:
                            // method and path alone match any service's new requests.
                            && (callee.is_some()
                                || client.boundary.host.is_some() && client.boundary.host == s.boundary.host)
                    }
                }
        };
        let roots = &self.boundaries.server_roots;
        // Servers that could have answered this call and started within the client span
        // (the tolerance around it).
        let window = (client.start.saturating_sub(tol), 0)..=(client.end.saturating_add(tol), u64::MAX);
        let candidates: Vec<&Endpoint> = match_keys(&client.boundary)
            .iter()
            .filter_map(|(class, key)| roots.get(*class)?.get(*key))
            .flat_map(|r| r.range(window.clone()).map(|(_, e)| e))
            .filter(|e| callee.is_none_or(|c| *e.span.service == *c) && fits(e))
            .collect();
        let found = candidates
            .into_iter()
            .filter(|e| !self.is_paired(e.trace, e.span.span_id))
            .min_by_key(|e| (e.span.start.abs_diff(client.start), e.span.span_id))
            .map(peer)?;
        self.pair((trace, client), &found);
        Some(found)
    }

    fn client_for(&mut self, trace: TraceId, server: &Lite) -> Option<Peer> {
        self.paired(trace, server.span_id)
    }

    fn requests_at(&self, service: &str, at: u64, exclude: TraceId) -> Vec<TraceId> {
        let Some(requests) = self.boundaries.requests.get(service) else { return Vec::new() };
        // Latest start first, back over the longest request worth considering.
        let mut out: Vec<TraceId> = Vec::new();
        for (_, (trace, end)) in requests.range((at.saturating_sub(MAX_REQUEST), 0)..=(at, u64::MAX)).rev() {
            if *trace != exclude && at <= end.saturating_add(REQUEST_SLACK) && !out.contains(trace) {
                out.push(*trace);
                if out.len() == MAX_CANDIDATES {
                    break;
                }
            }
        }
        out
    }
}

/// The observer's knowledge and existing matches, for reads: no match is made.
struct ReadOnly<'a>(&'a Observer);

impl Relations for ReadOnly<'_> {
    fn receives_requests(&self, service: &str) -> bool {
        self.0.receives_requests(service)
    }

    fn callee_service(&self, key: &str) -> Option<Arc<str>> {
        self.0.callee_service(key)
    }

    fn consumers_of(&self, destination: &str) -> Vec<Arc<str>> {
        self.0.consumers_of(destination)
    }

    fn has_producers(&self, destination: &str) -> bool {
        self.0.has_producers(destination)
    }

    fn has_instrumented_caller(&self, service: &str) -> bool {
        self.0.has_instrumented_caller(service)
    }

    fn consumer_linking(&self, trace: TraceId, span: SpanId) -> Option<Peer> {
        self.0.consumer_linking(trace, span)
    }

    fn consumer_root_for(&mut self, trace: TraceId, producer: &Lite) -> Option<Peer> {
        self.0.paired(trace, producer.span_id)
    }

    fn producer_for(&mut self, trace: TraceId, consumer: &Lite) -> Option<Peer> {
        self.0.paired(trace, consumer.span_id)
    }

    fn server_root_for(&mut self, trace: TraceId, client: &Lite, _callee: Option<&str>) -> Option<Peer> {
        self.0.paired(trace, client.span_id)
    }

    fn client_for(&mut self, trace: TraceId, server: &Lite) -> Option<Peer> {
        self.0.paired(trace, server.span_id)
    }

    fn requests_at(&self, service: &str, at: u64, exclude: TraceId) -> Vec<TraceId> {
        self.0.requests_at(service, at, exclude)
    }
}
