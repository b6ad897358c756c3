//! The trace buffer: spans wait here, grouped by trace id, until their trace is decided.
//!
//! ```text
//! batch ──► Prepared (spans encoded once, conditions checked; no lock)
//!             │                                  ▲ the same bytes go to the pending log
//!             ▼
//! TraceBuffer::insert ─ decided before? ─ kept ──► stored now ("late span")
//!             │                         └ dropped ► counted
//!             ▼
//!      Pending trace: encoded spans + TraceFacts, deadline = min(first + wait, root + delay)
//!             │ deadline passes (decide_due) / trace over max_trace_bytes / buffer full
//!             ▼
//!      PolicySet::decide ──► DecidedTrace (kept: spans decoded, root span tagged)
//! ```
//!
//! Memory is counted in bytes: each trace's encoded spans plus a fixed per-trace cost.
//! Time is always passed in (`now`, Unix nanoseconds); nothing here reads a clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use foldhash::{HashMap as FastMap, HashSet as FastSet};
use strand_core::{AnyValue, KeyValue, LogBatch, Resource, Scope, SpanBatch, StoredLog, StoredSpan, TraceId};

use crate::codec::{DecodeError, Dictionary, Reader, put_varint};
use crate::config::SamplingConfig;
use crate::policy::{ConditionSet, PolicySet, TraceFacts, ratio_threshold, trace_id_hash};

/// Attribute on a kept trace's root span naming the policies that kept it.
pub const POLICY_ATTRIBUTE: &str = "strand.sampling.policy";
/// Attribute on a kept trace's root span: the chance such a trace had of being kept.
pub const RATE_ATTRIBUTE: &str = "strand.sampling.rate";
/// Policy name recorded when the overflow fallback kept a trace.
pub const OVERFLOW_POLICY: &str = "strand.overflow";
const OVERFLOW_SALT: &[u8] = b"strand-overflow";

/// Bytes a buffered trace costs besides its encoded spans: the entry, its map slots, its
/// deadline entry. An estimate, checked against the process's memory by `strand bench
/// sampling`.
pub const TRACE_OVERHEAD_BYTES: usize = std::mem::size_of::<Pending>() + 120;

/// What [`Prepared::new`] needs from the buffer: the span conditions and the string
/// dictionary. Shared, so batches are prepared without the buffer's lock.
#[derive(Debug)]
pub struct Preparer {
    conditions: Arc<ConditionSet>,
    dict: Arc<Dictionary>,
}

impl Preparer {
    /// The strings shared by buffered spans.
    pub fn dictionary(&self) -> &Dictionary {
        &self.dict
    }
}

/// A batch made ready for the buffer: every span encoded once ([`crate::codec`]) and
/// checked against the conditions. Built without the buffer's lock.
#[derive(Debug)]
pub struct Prepared {
    groups: Vec<(Arc<Resource>, Arc<Scope>)>,
    spans: Vec<PreparedSpan>,
    data: Vec<u8>,
    dict: Arc<Dictionary>,
    /// Dictionary ids the encoded spans use.
    used: Vec<u32>,
}

#[derive(Debug)]
struct PreparedSpan {
    trace_id: TraceId,
    group: u32,
    is_root: bool,
    start: u64,
    end: u64,
    bits: u64,
    at: u32,
    len: u32,
}

/// Why the pending log could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("invalid pending-log record: {0}")]
pub struct RecordError(String);

impl From<DecodeError> for RecordError {
    fn from(e: DecodeError) -> Self {
        RecordError(e.0.to_string())
    }
}

impl Prepared {
    /// Encodes and checks every span of `batch`.
    pub fn new(batch: &SpanBatch, preparer: &Preparer) -> Self {
        let conditions = &preparer.conditions;
        let mut groups = Vec::new();
        let mut spans = Vec::with_capacity(batch.span_count());
        let mut data = Vec::with_capacity(batch.span_count() * 128);
        let mut enc = preparer.dict.encoder();
        for rs in &batch.resource_spans {
            let resource_bits = conditions.resource_bits(&rs.resource);
            for ss in &rs.scope_spans {
                let group = groups.len() as u32;
                groups.push((rs.resource.clone(), ss.scope.clone()));
                for span in &ss.spans {
                    let at = data.len();
                    enc.span(&mut data, span);
                    spans.push(PreparedSpan {
                        trace_id: span.trace_id,
                        group,
                        is_root: span.parent_span_id.is_none(),
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                        bits: resource_bits | conditions.span_bits(&rs.resource, &ss.scope, span),
                        at: at as u32,
                        len: (data.len() - at) as u32,
                    });
                }
            }
        }
        let used = enc.finish();
        Prepared { groups, spans, data, dict: preparer.dict.clone(), used }
    }

    fn bytes_of(&self, s: &PreparedSpan) -> &[u8] {
        &self.data[s.at as usize..(s.at + s.len) as usize]
    }

    /// The record written to the pending log: the groups, the dictionary strings the
    /// spans use, then each span's trace id, group and encoded bytes (the same bytes the
    /// buffer keeps).
    pub fn to_record(&self, received_unix_nano: u64) -> Vec<u8> {
        let groups: Vec<(&Resource, &Scope)> = self.groups.iter().map(|(r, s)| (&**r, &**s)).collect();
        let mut out = Vec::with_capacity(self.data.len() + 64 + self.spans.len() * 20 + self.used.len() * 24);
        out.push(RECORD_SPANS);
        out.extend_from_slice(&received_unix_nano.to_le_bytes());
        out = postcard::to_extend(&groups, out).expect("encoding into a Vec cannot fail");
        let entries = self.dict.entries(&self.used);
        put_varint(&mut out, entries.len() as u64);
        for (id, s) in &entries {
            put_varint(&mut out, u64::from(*id));
            put_varint(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        put_varint(&mut out, self.spans.len() as u64);
        for s in &self.spans {
            out.extend_from_slice(&s.trace_id.0);
            put_varint(&mut out, u64::from(s.group));
            put_varint(&mut out, u64::from(s.len));
            out.extend_from_slice(self.bytes_of(s));
        }
        out
    }
}

/// Spans in the compact encoding with the record's own dictionary strings.
const RECORD_SPANS: u8 = 3;
/// Spans as postcard-encoded `Span`s (written before the compact encoding; still read).
const RECORD_SPANS_POSTCARD: u8 = 1;
const RECORD_DECISIONS: u8 = 2;
const RECORD_LOGS: u8 = 4;

/// A record of the pending log, read back at start-up.
#[derive(Debug)]
pub enum LogRecord {
    /// Spans received at a time.
    Spans {
        /// When they were received (Unix ns): their traces' clocks restart from here.
        received_unix_nano: u64,
        /// The spans.
        batch: SpanBatch,
    },
    /// Decisions taken (kept traces were durably stored before this was written).
    Decisions(Vec<(TraceId, bool)>),
    /// Log records waiting for their traces' decisions (`sampling.logs: follow_traces`).
    Logs {
        /// When they were received (Unix ns).
        received_unix_nano: u64,
        /// The records, each with a trace id.
        batch: LogBatch,
    },
}

/// Encodes log records received at a time for the pending log.
pub fn logs_record(received_unix_nano: u64, batch: &LogBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + batch.record_count() * 128);
    out.push(RECORD_LOGS);
    out.extend_from_slice(&received_unix_nano.to_le_bytes());
    postcard::to_extend(batch, out).expect("encoding into a Vec cannot fail")
}

/// Encodes decisions for the pending log.
pub fn decisions_record(decisions: &[(TraceId, bool)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 10 + decisions.len() * 17);
    out.push(RECORD_DECISIONS);
    put_varint(&mut out, decisions.len() as u64);
    for (id, keep) in decisions {
        out.extend_from_slice(&id.0);
        out.push(u8::from(*keep));
    }
    out
}

impl LogRecord {
    /// Decodes a pending-log record; never panics on bad input.
    pub fn decode(payload: &[u8]) -> Result<Self, RecordError> {
        let bad = |m: &str| RecordError(m.to_string());
        let mut rd = Reader::new(payload);
        match rd.byte()? {
            tag @ (RECORD_SPANS | RECORD_SPANS_POSTCARD) => {
                let received_unix_nano = u64::from_le_bytes(rd.array()?);
                let (groups, r): (Vec<(Resource, Scope)>, &[u8]) =
                    postcard::take_from_bytes(rd.rest).map_err(|e| RecordError(format!("groups: {e}")))?;
                let groups: Vec<(Arc<Resource>, Arc<Scope>)> =
                    groups.into_iter().map(|(r, s)| (Arc::new(r), Arc::new(s))).collect();
                rd = Reader::new(r);
                let mut strings: FastMap<u32, Arc<str>> = FastMap::default();
                if tag == RECORD_SPANS {
                    for _ in 0..rd.varint()? {
                        let id = u32::try_from(rd.varint()?).map_err(|_| bad("string id"))?;
                        strings.insert(id, Arc::from(rd.str()?));
                    }
                }
                let resolve = |id: u32| strings.get(&id).cloned();
                let n = rd.varint()?;
                let mut spans = Vec::with_capacity((n as usize).min(rd.rest.len()));
                for _ in 0..n {
                    let trace_id = if tag == RECORD_SPANS { Some(TraceId(rd.array()?)) } else { None };
                    let group = rd.varint()? as usize;
                    let len = usize::try_from(rd.varint()?).map_err(|_| bad("span length"))?;
                    let bytes = rd.take(len)?;
                    let (resource, scope) =
                        groups.get(group).ok_or_else(|| bad("span group out of range"))?;
                    let span = match trace_id {
                        Some(id) => {
                            let mut one = Reader::new(bytes);
                            let span = one.span(id, &resolve)?;
                            if !one.rest.is_empty() {
                                return Err(bad("bytes after a span"));
                            }
                            span
                        }
                        None => postcard::from_bytes(bytes).map_err(|e| RecordError(format!("span: {e}")))?,
                    };
                    spans.push(StoredSpan { resource: resource.clone(), scope: scope.clone(), span });
                }
                Ok(LogRecord::Spans { received_unix_nano, batch: SpanBatch::from_stored(spans) })
            }
            RECORD_DECISIONS => {
                let n = rd.varint()?;
                let mut out = Vec::with_capacity((n as usize).min(rd.rest.len() / 17));
                for _ in 0..n {
                    let id = TraceId(rd.array()?);
                    out.push((id, rd.byte()? != 0));
                }
                Ok(LogRecord::Decisions(out))
            }
            RECORD_LOGS => {
                let received_unix_nano = u64::from_le_bytes(rd.array()?);
                let batch =
                    postcard::from_bytes(rd.rest).map_err(|e| RecordError(format!("log records: {e}")))?;
                Ok(LogRecord::Logs { received_unix_nano, batch })
            }
            other => Err(RecordError(format!("unknown record type {other}"))),
        }
    }
}

/// Why a trace was decided when it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionReason {
    /// Its root span arrived `decision_delay` ago.
    RootSeen,
    /// `decision_wait` passed since its first span, root or not.
    Timeout,
    /// It reached `max_trace_bytes`.
    TraceTooBig,
    /// The buffer reached `max_buffer_bytes` and it was closest to its deadline.
    BufferFull,
    /// Asked for (shutdown of a test, `decide_all`).
    Forced,
}

/// A decided trace.
#[derive(Debug)]
pub struct DecidedTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// Whether it is kept.
    pub keep: bool,
    /// Why it was decided now.
    pub reason: DecisionReason,
    /// Policies that kept it.
    pub policies: Vec<Arc<str>>,
    /// Chance of being kept (see [`crate::policy::Verdict::rate`]).
    pub rate: Option<f64>,
    /// Its spans, when kept (the root, or else the earliest span, carries
    /// [`POLICY_ATTRIBUTE`] and [`RATE_ATTRIBUTE`]).
    pub spans: Vec<StoredSpan>,
    /// Spans it had.
    pub span_count: usize,
    /// Its log records, when kept (`sampling.logs: follow_traces`).
    pub logs: Vec<StoredLog>,
    /// Log records it had.
    pub log_count: usize,
    /// The smallest tag its spans were inserted with (the pending-log segment).
    pub tag: u64,
}

/// A trace taken out of the buffer before its decision ([`TraceBuffer::take_undecided`]).
#[derive(Debug, Clone)]
pub struct Undecided {
    /// The trace.
    pub trace_id: TraceId,
    /// Its spans so far.
    pub spans: Vec<StoredSpan>,
    /// Its log records so far.
    pub logs: Vec<StoredLog>,
    /// The smallest tag its data was inserted with (the pending-log segment).
    pub tag: u64,
}

impl DecidedTrace {
    /// Whether the policies decided the trace. `false` when only log records of it came
    /// within the wait: they are kept, since nothing dropped their trace, and no decision
    /// is remembered, so spans arriving later are decided as a new trace.
    pub fn sampled(&self) -> bool {
        self.span_count > 0
    }
}

/// What [`TraceBuffer::insert`] did with a batch.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Spans of traces already kept: store them now.
    pub late_kept: Vec<StoredSpan>,
    /// Spans of traces already dropped.
    pub late_dropped: usize,
    /// Traces decided early by this insert (too big, buffer full).
    pub decided: Vec<DecidedTrace>,
    /// Log records to store now: of traces already kept, or with no trace id.
    pub logs_now: Vec<StoredLog>,
}

/// Counters of what the buffer did.
#[derive(Debug, Default, Clone)]
pub struct BufferStats {
    /// Traces kept.
    pub traces_kept: u64,
    /// Traces dropped.
    pub traces_dropped: u64,
    /// Spans kept at decision time.
    pub spans_kept: u64,
    /// Spans dropped at decision time.
    pub spans_dropped: u64,
    /// Late spans of kept traces, stored.
    pub late_spans_kept: u64,
    /// Late spans of dropped traces, dropped.
    pub late_spans_dropped: u64,
    /// Traces decided early because they reached `max_trace_bytes`.
    pub traces_capped: u64,
    /// Traces decided early because the buffer was full.
    pub traces_overflowed: u64,
    /// Of those, kept by the overflow fallback alone.
    pub overflow_kept: u64,
    /// Traces kept, per top-level policy name.
    pub kept_by_policy: HashMap<Arc<str>, u64>,
    /// Log records kept with their trace (late ones included).
    pub logs_kept: u64,
    /// Log records dropped with their trace (late ones included).
    pub logs_dropped: u64,
    /// Log records kept because no span of their trace came within the wait.
    pub logs_without_spans: u64,
}

#[derive(Debug)]
struct Pending {
    first_seen: u64,
    deadline: u64,
    root_seen: bool,
    tag: u64,
    facts: TraceFacts,
    groups: Vec<(Arc<Resource>, Arc<Scope>)>,
    data: Vec<u8>,
    /// Log records: each a group index (varint) and the record (postcard).
    logs: Vec<u8>,
    log_count: u32,
}

impl Pending {
    fn new(now: u64, wait: u64, tag: u64) -> Self {
        Pending {
            first_seen: now,
            // Entered in `deadlines` by the caller, once it knows whether the root came.
            deadline: now.saturating_add(wait),
            root_seen: false,
            tag,
            facts: TraceFacts::default(),
            groups: Vec::new(),
            data: Vec::new(),
            logs: Vec::new(),
            log_count: 0,
        }
    }

    fn cost(&self) -> usize {
        TRACE_OVERHEAD_BYTES + self.data.capacity() + self.logs.capacity() + self.groups.capacity() * 16
    }

    /// The index of a resource and scope among the trace's groups, added when new.
    fn group(&mut self, resource: &Arc<Resource>, scope: &Arc<Scope>) -> u32 {
        let found = self.groups.iter().position(|(r, sc)| {
            (Arc::ptr_eq(r, resource) || **r == **resource) && (Arc::ptr_eq(sc, scope) || **sc == **scope)
        });
        (match found {
            Some(l) => l,
            None => {
                self.groups.push((resource.clone(), scope.clone()));
                self.groups.len() - 1
            }
        }) as u32
    }
}

/// Remembers the last `cap` trace ids inserted (first in, first out).
#[derive(Debug)]
struct DecisionCache {
    set: FastSet<TraceId>,
    order: VecDeque<TraceId>,
    cap: usize,
}

impl DecisionCache {
    fn new(cap: usize) -> Self {
        Self { set: FastSet::default(), order: VecDeque::new(), cap }
    }

    fn insert(&mut self, id: TraceId) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }

    fn contains(&self, id: &TraceId) -> bool {
        self.set.contains(id)
    }
}

/// The buffer. Not thread-safe: one owner (the server wraps it in a mutex).
#[derive(Debug)]
pub struct TraceBuffer {
    policies: PolicySet,
    delay: u64,
    wait: u64,
    max_buffer_bytes: usize,
    max_trace_bytes: usize,
    overflow_threshold: u64,
    overflow_ratio: f64,
    traces: FastMap<TraceId, Pending>,
    deadlines: BTreeSet<(u64, TraceId)>,
    tags: BTreeMap<u64, usize>,
    bytes: usize,
    spans: usize,
    log_records: usize,
    kept: DecisionCache,
    dropped: DecisionCache,
    stats: BufferStats,
    preparer: Arc<Preparer>,
}

impl TraceBuffer {
    /// A buffer for a valid configuration (see [`SamplingConfig::validate`]).
    pub fn new(cfg: &SamplingConfig) -> Result<Self, Vec<String>> {
        let policies = PolicySet::compile(&cfg.policies)?;
        let conditions = policies.conditions();
        let nanos = |d: std::time::Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let overflow_ratio = cfg.overflow_sampling_percentage / 100.0;
        Ok(Self {
            policies,
            delay: nanos(cfg.decision_delay.0),
            wait: nanos(cfg.decision_wait.0),
            max_buffer_bytes: cfg.max_buffer_bytes.0.try_into().unwrap_or(usize::MAX),
            max_trace_bytes: cfg.max_trace_bytes.0.try_into().unwrap_or(usize::MAX),
            overflow_threshold: ratio_threshold(overflow_ratio),
            overflow_ratio,
            traces: FastMap::default(),
            deadlines: BTreeSet::new(),
            tags: BTreeMap::new(),
            bytes: 0,
            spans: 0,
            log_records: 0,
            kept: DecisionCache::new(cfg.decision_cache.sampled_cache_size),
            dropped: DecisionCache::new(cfg.decision_cache.non_sampled_cache_size),
            stats: BufferStats::default(),
            preparer: Arc::new(Preparer { conditions, dict: Arc::new(Dictionary::default()) }),
        })
    }

    /// What [`Prepared::new`] needs.
    pub fn preparer(&self) -> Arc<Preparer> {
        self.preparer.clone()
    }

    /// Bytes buffered: encoded spans, per-trace overhead and the string dictionary.
    pub fn bytes(&self) -> usize {
        self.bytes + self.preparer.dict.bytes()
    }

    /// Traces buffered.
    pub fn traces(&self) -> usize {
        self.traces.len()
    }

    /// Spans buffered.
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// The byte bound (`max_buffer_bytes`).
    pub fn max_bytes(&self) -> usize {
        self.max_buffer_bytes
    }

    /// Log records buffered.
    pub fn log_records(&self) -> usize {
        self.log_records
    }

    /// What the buffer did so far.
    pub fn stats(&self) -> &BufferStats {
        &self.stats
    }

    /// The smallest tag of any buffered span (the oldest pending-log segment still needed).
    pub fn min_tag(&self) -> Option<u64> {
        self.tags.keys().next().copied()
    }

    /// Adds prepared spans received at `now`, tagged with `tag` (the pending-log segment
    /// holding them).
    pub fn insert(&mut self, prepared: &Prepared, now: u64, tag: u64) -> Admitted {
        let mut out = Admitted::default();
        // Group the batch's spans by trace so each trace grows once per batch.
        let mut keyed: Vec<(u128, u32)> = (prepared.spans.iter().enumerate())
            .map(|(i, s)| (u128::from_be_bytes(s.trace_id.0), i as u32))
            .collect();
        keyed.sort_unstable();
        let order: Vec<u32> = keyed.iter().map(|&(_, i)| i).collect();
        let mut i = 0;
        while i < order.len() {
            let trace_id = prepared.spans[order[i] as usize].trace_id;
            let mut j = i;
            while j < order.len() && keyed[j].0 == keyed[i].0 {
                j += 1;
            }
            self.insert_trace(prepared, &order[i..j], trace_id, now, tag, &mut out);
            i = j;
        }
        self.hold_bound(now, &mut out);
        out
    }

    /// Adds log records received at `now`, tagged with `tag`: each waits with its trace's
    /// spans for the decision, or follows a decision already taken. Records without a
    /// trace id come back in [`Admitted::logs_now`].
    pub fn insert_logs(&mut self, batch: &LogBatch, now: u64, tag: u64) -> Admitted {
        let mut out = Admitted::default();
        for rl in &batch.resource_logs {
            for sl in &rl.scope_logs {
                for record in &sl.records {
                    let stored = || StoredLog {
                        resource: rl.resource.clone(),
                        scope: sl.scope.clone(),
                        record: record.clone(),
                    };
                    let Some(trace_id) = record.trace_id else {
                        out.logs_now.push(stored());
                        continue;
                    };
                    if self.kept.contains(&trace_id) {
                        self.stats.logs_kept += 1;
                        out.logs_now.push(stored());
                        continue;
                    }
                    if self.dropped.contains(&trace_id) {
                        self.stats.logs_dropped += 1;
                        continue;
                    }
                    let is_new = !self.traces.contains_key(&trace_id);
                    let pending =
                        Self::pending(&mut self.traces, &mut self.tags, self.wait, (trace_id, now, tag));
                    let before = if is_new { 0 } else { pending.cost() };
                    let group = pending.group(&rl.resource, &sl.scope);
                    put_varint(&mut pending.logs, u64::from(group));
                    pending.logs = postcard::to_extend(record, std::mem::take(&mut pending.logs))
                        .expect("encoding into a Vec cannot fail");
                    pending.log_count += 1;
                    let (deadline, size, after) =
                        (pending.deadline, pending.data.len() + pending.logs.len(), pending.cost());
                    if is_new {
                        self.deadlines.insert((deadline, trace_id));
                    }
                    self.bytes = self.bytes + after - before;
                    self.log_records += 1;
                    if size >= self.max_trace_bytes {
                        self.stats.traces_capped += 1;
                        if let Some(d) = self.decide(trace_id, DecisionReason::TraceTooBig, now) {
                            out.decided.push(d);
                        }
                    }
                }
            }
        }
        self.hold_bound(now, &mut out);
        out
    }

    /// The pending entry of a trace, created at `now` when new (its deadline not yet in
    /// `deadlines`); its tag lowered to `tag` when that is older.
    fn pending<'a>(
        traces: &'a mut FastMap<TraceId, Pending>,
        tags: &mut BTreeMap<u64, usize>,
        wait: u64,
        (trace_id, now, tag): (TraceId, u64, u64),
    ) -> &'a mut Pending {
        let pending = traces.entry(trace_id).or_insert_with(|| {
            *tags.entry(tag).or_default() += 1;
            Pending::new(now, wait, tag)
        });
        if pending.tag > tag {
            // A replayed or reordered batch: keep the smallest segment the trace needs.
            Self::move_tag(tags, pending.tag, tag);
            pending.tag = tag;
        }
        pending
    }

    /// Decides the traces closest to their deadline until the buffer is within its bound.
    fn hold_bound(&mut self, now: u64, out: &mut Admitted) {
        while self.bytes() > self.max_buffer_bytes {
            let Some(&(_, id)) = self.deadlines.first() else { break };
            self.stats.traces_overflowed += 1;
            if let Some(d) = self.decide(id, DecisionReason::BufferFull, now) {
                out.decided.push(d);
            }
        }
    }

    fn insert_trace(
        &mut self,
        prepared: &Prepared,
        idx: &[u32],
        trace_id: TraceId,
        now: u64,
        tag: u64,
        out: &mut Admitted,
    ) {
        if self.kept.contains(&trace_id) {
            self.stats.late_spans_kept += idx.len() as u64;
            let resolve = self.preparer.dict.resolver();
            for &k in idx {
                let s = &prepared.spans[k as usize];
                let (resource, scope) = &prepared.groups[s.group as usize];
                if let Ok(span) = Reader::new(prepared.bytes_of(s)).span(trace_id, &resolve) {
                    out.late_kept.push(StoredSpan { resource: resource.clone(), scope: scope.clone(), span });
                }
            }
            return;
        }
        if self.dropped.contains(&trace_id) {
            self.stats.late_spans_dropped += idx.len() as u64;
            out.late_dropped += idx.len();
            return;
        }
        let is_new = !self.traces.contains_key(&trace_id);
        let pending = Self::pending(&mut self.traces, &mut self.tags, self.wait, (trace_id, now, tag));
        let before = if is_new { 0 } else { pending.cost() };
        let needed: usize = idx.iter().map(|&k| prepared.spans[k as usize].len as usize + 2).sum();
        if pending.data.capacity() - pending.data.len() < needed {
            let grow = needed.max(pending.data.capacity() / 2);
            pending.data.reserve_exact(grow);
        }
        let mut root = false;
        let mut last_group: Option<(u32, u32)> = None;
        for &k in idx {
            let s = &prepared.spans[k as usize];
            let local = match last_group {
                Some((g, l)) if g == s.group => l,
                _ => {
                    let (resource, scope) = &prepared.groups[s.group as usize];
                    let l = pending.group(resource, scope);
                    last_group = Some((s.group, l));
                    l
                }
            };
            put_varint(&mut pending.data, u64::from(local));
            pending.data.extend_from_slice(prepared.bytes_of(s));
            pending.facts.add(s.start, s.end, s.bits);
            root |= s.is_root;
        }
        if root && !pending.root_seen {
            pending.root_seen = true;
            let due = now.saturating_add(self.delay).max(pending.first_seen);
            if due < pending.deadline {
                if !is_new {
                    self.deadlines.remove(&(pending.deadline, trace_id));
                }
                pending.deadline = due;
                if !is_new {
                    self.deadlines.insert((due, trace_id));
                }
            }
        }
        if is_new {
            self.deadlines.insert((pending.deadline, trace_id));
        }
        let after = pending.cost();
        self.bytes = self.bytes + after - before;
        self.spans += idx.len();
        if pending.data.len() + pending.logs.len() >= self.max_trace_bytes {
            self.stats.traces_capped += 1;
            if let Some(d) = self.decide(trace_id, DecisionReason::TraceTooBig, now) {
                out.decided.push(d);
            }
        }
    }

    fn move_tag(tags: &mut BTreeMap<u64, usize>, from: u64, to: u64) {
        if let Some(n) = tags.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                tags.remove(&from);
            }
        }
        *tags.entry(to).or_default() += 1;
    }

    /// Decides every trace whose deadline is at or before `now`.
    pub fn decide_due(&mut self, now: u64) -> Vec<DecidedTrace> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let reason = match self.traces.get(&id) {
                Some(p) if p.root_seen => DecisionReason::RootSeen,
                _ => DecisionReason::Timeout,
            };
            if let Some(d) = self.decide(id, reason, now) {
                out.push(d);
            }
        }
        out
    }

    /// Decides every buffered trace now.
    pub fn decide_all(&mut self, now: u64) -> Vec<DecidedTrace> {
        let ids: Vec<TraceId> = self.deadlines.iter().map(|(_, id)| *id).collect();
        ids.into_iter().filter_map(|id| self.decide(id, DecisionReason::Forced, now)).collect()
    }

    /// Takes the undecided traces `pick` selects out of the buffer, with their spans and
    /// log records (their partition moves to another sampler, which decides them).
    pub fn take_undecided(&mut self, pick: impl Fn(&TraceId) -> bool) -> Vec<Undecided> {
        let ids: Vec<TraceId> = self.traces.keys().filter(|id| pick(id)).copied().collect();
        ids.into_iter()
            .filter_map(|id| {
                let p = self.remove(&id)?;
                Some(Undecided {
                    trace_id: id,
                    spans: decode_spans(&p, id, &self.preparer.dict),
                    logs: decode_logs(&p),
                    tag: p.tag,
                })
            })
            .collect()
    }

    /// Records a decision read back from the pending log: the trace leaves the buffer
    /// without output (its spans were stored or dropped before the record was written).
    pub fn restore_decision(&mut self, trace_id: TraceId, keep: bool) {
        self.remove(&trace_id);
        if keep { self.kept.insert(trace_id) } else { self.dropped.insert(trace_id) }
    }

    fn remove(&mut self, id: &TraceId) -> Option<Pending> {
        let p = self.traces.remove(id)?;
        self.deadlines.remove(&(p.deadline, *id));
        if let Some(n) = self.tags.get_mut(&p.tag) {
            *n -= 1;
            if *n == 0 {
                self.tags.remove(&p.tag);
            }
        }
        self.bytes -= p.cost();
        self.spans -= p.facts.span_count as usize;
        self.log_records -= p.log_count as usize;
        Some(p)
    }

    fn decide(&mut self, trace_id: TraceId, reason: DecisionReason, now: u64) -> Option<DecidedTrace> {
        let p = self.remove(&trace_id)?;
        let log_count = p.log_count as usize;
        if p.facts.span_count == 0 {
            self.stats.logs_without_spans += log_count as u64;
            return Some(DecidedTrace {
                trace_id,
                keep: true,
                reason,
                policies: Vec::new(),
                rate: None,
                spans: Vec::new(),
                span_count: 0,
                logs: decode_logs(&p),
                log_count,
                tag: p.tag,
            });
        }
        let mut verdict = self.policies.decide(&trace_id, &p.facts, now);
        if reason == DecisionReason::BufferFull
            && !verdict.keep
            && trace_id_hash(OVERFLOW_SALT, &trace_id) <= self.overflow_threshold
        {
            self.stats.overflow_kept += 1;
            verdict.keep = true;
            verdict.policies = vec![Arc::from(OVERFLOW_POLICY)];
            verdict.rate = Some(self.overflow_ratio);
        }
        let span_count = p.facts.span_count as usize;
        let mut spans = Vec::new();
        let mut logs = Vec::new();
        if verdict.keep {
            self.kept.insert(trace_id);
            self.stats.traces_kept += 1;
            self.stats.spans_kept += span_count as u64;
            for name in &verdict.policies {
                *self.stats.kept_by_policy.entry(name.clone()).or_default() += 1;
            }
            spans = decode_spans(&p, trace_id, &self.preparer.dict);
            annotate(&mut spans, &verdict.policies, verdict.rate);
            logs = decode_logs(&p);
            self.stats.logs_kept += log_count as u64;
        } else {
            self.dropped.insert(trace_id);
            self.stats.traces_dropped += 1;
            self.stats.spans_dropped += span_count as u64;
            self.stats.logs_dropped += log_count as u64;
        }
        Some(DecidedTrace {
            trace_id,
            keep: verdict.keep,
            reason,
            policies: verdict.policies,
            rate: verdict.rate,
            spans,
            span_count,
            logs,
            log_count,
            tag: p.tag,
        })
    }
}

fn decode_logs(p: &Pending) -> Vec<StoredLog> {
    let mut out = Vec::with_capacity(p.log_count as usize);
    let mut rest = &p.logs[..];
    while !rest.is_empty() {
        let mut rd = Reader::new(rest);
        let Ok(group) = rd.varint() else { break };
        let Ok((record, r)) = postcard::take_from_bytes(rd.rest) else { break };
        rest = r;
        if let Some((resource, scope)) = p.groups.get(group as usize) {
            out.push(StoredLog { resource: resource.clone(), scope: scope.clone(), record });
        }
    }
    out
}

fn decode_spans(p: &Pending, trace_id: TraceId, dict: &Dictionary) -> Vec<StoredSpan> {
    let resolve = dict.resolver();
    let mut out = Vec::with_capacity(p.facts.span_count as usize);
    let mut rd = Reader::new(&p.data);
    while !rd.rest.is_empty() {
        let Ok(group) = rd.varint() else { break };
        let Ok(span) = rd.span(trace_id, &resolve) else { break };
        if let Some((resource, scope)) = p.groups.get(group as usize) {
            out.push(StoredSpan { resource: resource.clone(), scope: scope.clone(), span });
        }
    }
    out
}

/// Tags the root span (or, without one, the earliest span) with why the trace was kept.
fn annotate(spans: &mut [StoredSpan], policies: &[Arc<str>], rate: Option<f64>) {
    let target = spans.iter().position(|s| s.span.parent_span_id.is_none()).or_else(|| {
        (0..spans.len()).min_by_key(|&i| (spans[i].span.start_time_unix_nano, spans[i].span.span_id))
    });
    let Some(i) = target else { return };
    let attrs = &mut spans[i].span.attributes;
    attrs.retain(|kv| kv.key != POLICY_ATTRIBUTE && kv.key != RATE_ATTRIBUTE);
    let names: Vec<&str> = policies.iter().map(|p| &**p).collect();
    attrs.push(KeyValue::new(POLICY_ATTRIBUTE, AnyValue::String(names.join(","))));
    if let Some(rate) = rate {
        attrs.push(KeyValue::new(RATE_ATTRIBUTE, AnyValue::Double(rate)));
    }
}
