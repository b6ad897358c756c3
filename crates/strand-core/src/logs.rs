//! The log model: OTLP's log data model, field for field, without protobuf types; log
//! searches and the contracts of log storage.
//!
//! Log records are grouped as OTLP groups them (resource → scope → records), sharing their
//! resource and scope through [`Arc`] like spans do. A record's trace and span ids tie it
//! to the span that was current when it was written; records without them are kept too.

use std::fmt;
use std::hash::Hasher;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::contract::{BoxFuture, SinkError, StoreError};
use crate::ids::{SpanId, TraceId};
use crate::model::{AnyValue, KeyValue, Resource, Scope};
use crate::search::{TimeRange, value_text};

/// One log record, as OTLP's `LogRecord` defines it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogRecord {
    /// When the event happened (0 when unknown).
    pub time_unix_nano: u64,
    /// When the event was observed by the collection system.
    pub observed_time_unix_nano: u64,
    /// OTLP `SeverityNumber`: 0 unspecified, 1–4 trace, 5–8 debug, 9–12 info, 13–16 warn,
    /// 17–20 error, 21–24 fatal.
    pub severity_number: u8,
    /// The severity as the source wrote it (`"WARN"`, `"Error"`, ...).
    pub severity_text: String,
    /// The body: text, or any structured value.
    pub body: AnyValue,
    /// Record attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes the SDK dropped.
    pub dropped_attributes_count: u32,
    /// W3C trace flags.
    pub flags: u32,
    /// The trace the record belongs to, if any.
    pub trace_id: Option<TraceId>,
    /// The span that was current when it was written, if any.
    pub span_id: Option<SpanId>,
    /// OTLP `event_name`, for records that are events.
    pub event_name: String,
}

impl LogRecord {
    /// The time a record is ordered and searched by: its own time, or when it was observed
    /// when the source gave none.
    pub fn effective_time(&self) -> u64 {
        if self.time_unix_nano != 0 { self.time_unix_nano } else { self.observed_time_unix_nano }
    }

    /// The body as text: a string body as it is, any other value as JSON-like text, empty
    /// for no body.
    pub fn body_text(&self) -> String {
        match &self.body {
            AnyValue::String(s) => s.clone(),
            other => {
                let mut out = String::new();
                write_value(&mut out, other);
                out
            }
        }
    }
}

/// Writes a value as compact JSON-like text: `{"k":1,"list":[true,"x"]}`; bytes as hex.
fn write_value(out: &mut String, v: &AnyValue) {
    use std::fmt::Write;
    match v {
        AnyValue::Empty => {}
        AnyValue::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        AnyValue::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        AnyValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        AnyValue::Double(d) => {
            let _ = write!(out, "{d}");
        }
        AnyValue::Bytes(b) => b.iter().for_each(|x| {
            let _ = write!(out, "{x:02x}");
        }),
        AnyValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        AnyValue::KvList(kvs) => {
            out.push('{');
            for (i, kv) in kvs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{:?}:", kv.key);
                write_value(out, &kv.value);
            }
            out.push('}');
        }
    }
}

/// The names of OTLP's severity ranges, lowest first: `TRACE` is 1–4, `DEBUG` 5–8, and so on.
pub const SEVERITY_NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// The range name of a severity number (`"INFO"` for 9–12), `"UNSPECIFIED"` for 0.
pub fn severity_name(number: u8) -> &'static str {
    match number {
        1..=24 => SEVERITY_NAMES[usize::from((number - 1) / 4)],
        _ => "UNSPECIFIED",
    }
}

/// Parses a minimum severity as a search takes it: a range name (`warn`, `ERROR`, any
/// case; `WARNING` too) meaning the range's lowest number, or a number 1–24.
pub fn parse_min_severity(s: &str) -> Result<u8, String> {
    let upper = s.trim().to_ascii_uppercase();
    let upper = if upper == "WARNING" { "WARN".to_owned() } else { upper };
    if let Some(i) = SEVERITY_NAMES.iter().position(|n| *n == upper) {
        return Ok(i as u8 * 4 + 1);
    }
    match upper.parse::<u8>() {
        Ok(n @ 1..=24) => Ok(n),
        _ => Err(format!(
            "severity must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL or a number 1-24, not {s:?}"
        )),
    }
}

/// Records of one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeLogs {
    /// The scope, shared by its records.
    pub scope: Arc<Scope>,
    /// The records.
    pub records: Vec<LogRecord>,
}

/// Records of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceLogs {
    /// The resource, shared by its records.
    pub resource: Arc<Resource>,
    /// Records grouped by scope.
    pub scope_logs: Vec<ScopeLogs>,
}

/// What the OTLP logs receivers hand on: records grouped as OTLP groups them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogBatch {
    /// Records grouped by resource and scope.
    pub resource_logs: Vec<ResourceLogs>,
}

impl LogBatch {
    /// Number of records in the batch.
    pub fn record_count(&self) -> usize {
        self.resource_logs.iter().flat_map(|rl| &rl.scope_logs).map(|sl| sl.records.len()).sum()
    }

    /// About the memory the decoded batch holds (see [`crate::SpanBatch::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        use crate::model::{attrs_heap_bytes, grouped_bytes, value_heap_bytes};
        let record = |r: &LogRecord| {
            std::mem::size_of::<LogRecord>()
                + r.severity_text.len()
                + value_heap_bytes(&r.body)
                + attrs_heap_bytes(&r.attributes)
                + r.event_name.len()
        };
        self.resource_logs
            .iter()
            .map(|rl| {
                let scopes = rl.scope_logs.iter().map(|sl| (&*sl.scope, sl.records.as_slice()));
                grouped_bytes::<ResourceLogs, ScopeLogs, _>(&rl.resource, scopes, record)
            })
            .sum()
    }

    /// Flattens the batch into stored records, each with its resource and scope.
    pub fn into_stored(self) -> impl Iterator<Item = StoredLog> {
        self.resource_logs.into_iter().flat_map(|rl| {
            let resource = rl.resource;
            rl.scope_logs.into_iter().flat_map(move |sl| {
                let resource = resource.clone();
                let scope = sl.scope;
                sl.records.into_iter().map(move |record| StoredLog {
                    resource: resource.clone(),
                    scope: scope.clone(),
                    record,
                })
            })
        })
    }

    /// Groups stored records by resource and scope (equal content counts as the same), in
    /// first-seen order.
    pub fn from_stored(records: impl IntoIterator<Item = StoredLog>) -> Self {
        let mut batch = LogBatch::default();
        for l in records {
            let ri = match batch
                .resource_logs
                .iter()
                .rposition(|rl| Arc::ptr_eq(&rl.resource, &l.resource) || *rl.resource == *l.resource)
            {
                Some(i) => i,
                None => {
                    batch.resource_logs.push(ResourceLogs { resource: l.resource, scope_logs: Vec::new() });
                    batch.resource_logs.len() - 1
                }
            };
            let rl = &mut batch.resource_logs[ri];
            let si = match rl
                .scope_logs
                .iter()
                .rposition(|sl| Arc::ptr_eq(&sl.scope, &l.scope) || *sl.scope == *l.scope)
            {
                Some(i) => i,
                None => {
                    rl.scope_logs.push(ScopeLogs { scope: l.scope, records: Vec::new() });
                    rl.scope_logs.len() - 1
                }
            };
            rl.scope_logs[si].records.push(l.record);
        }
        batch
    }

    /// Splits the batch into the records that carry a trace id and those that do not, each
    /// part keeping its resource and scope groups (empty groups left out).
    pub fn split_by_trace(self) -> (LogBatch, LogBatch) {
        let (mut traced, mut untraced) = (LogBatch::default(), LogBatch::default());
        for rl in self.resource_logs {
            let (mut with, mut without) = (Vec::new(), Vec::new());
            for sl in rl.scope_logs {
                let (a, b): (Vec<LogRecord>, Vec<LogRecord>) =
                    sl.records.into_iter().partition(|r| r.trace_id.is_some());
                for (part, records) in [(&mut with, a), (&mut without, b)] {
                    if !records.is_empty() {
                        part.push(ScopeLogs { scope: sl.scope.clone(), records });
                    }
                }
            }
            for (batch, scope_logs) in [(&mut traced, with), (&mut untraced, without)] {
                if !scope_logs.is_empty() {
                    batch.resource_logs.push(ResourceLogs { resource: rl.resource.clone(), scope_logs });
                }
            }
        }
        (traced, untraced)
    }
}

/// A log record together with the resource and scope it came with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredLog {
    /// Resource of the record.
    pub resource: Arc<Resource>,
    /// Scope of the record.
    pub scope: Arc<Scope>,
    /// The record.
    pub record: LogRecord,
}

impl StoredLog {
    /// A stable 64-bit digest of the record with its service: two copies of one record (a
    /// client's retry) have the same one. Readers drop repeated copies by it, and search
    /// pages break ties of equal times with it, so it must not change between releases:
    /// it is FNV-1a over the record's fields in a fixed order.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(self.resource.service_name(), &self.record)
    }

    /// The order of search results and of a trace's records: time, then fingerprint.
    pub fn order_key(&self) -> (u64, u64) {
        (self.record.effective_time(), self.fingerprint())
    }
}

/// [`StoredLog::fingerprint`] of a record of `service`, without building a [`StoredLog`].
pub fn fingerprint(service: &str, r: &LogRecord) -> u64 {
    let mut h = Fnv64::default();
    h.write(service.as_bytes());
    h.write_u8(0xff);
    h.write_u64(r.time_unix_nano);
    h.write_u64(r.observed_time_unix_nano);
    h.write_u8(r.severity_number);
    h.write(r.severity_text.as_bytes());
    h.write_u8(0xff);
    hash_value(&mut h, &r.body);
    for kv in &r.attributes {
        h.write(kv.key.as_bytes());
        h.write_u8(0xfe);
        hash_value(&mut h, &kv.value);
    }
    h.write_u32(r.flags);
    h.write(&r.trace_id.map(|t| t.0).unwrap_or_default());
    h.write(&r.span_id.map(|s| s.0).unwrap_or_default());
    h.write(r.event_name.as_bytes());
    h.finish()
}

fn hash_value(h: &mut Fnv64, v: &AnyValue) {
    match v {
        AnyValue::Empty => h.write_u8(0),
        AnyValue::String(s) => {
            h.write_u8(1);
            h.write(s.as_bytes());
            h.write_u8(0xff);
        }
        AnyValue::Bool(b) => h.write(&[2, u8::from(*b)]),
        AnyValue::Int(i) => {
            h.write_u8(3);
            h.write_i64(*i);
        }
        AnyValue::Double(d) => {
            h.write_u8(4);
            h.write_u64(d.to_bits());
        }
        AnyValue::Bytes(b) => {
            h.write_u8(5);
            h.write_usize(b.len());
            h.write(b);
        }
        AnyValue::Array(items) => {
            h.write_u8(6);
            h.write_usize(items.len());
            items.iter().for_each(|i| hash_value(h, i));
        }
        AnyValue::KvList(kvs) => {
            h.write_u8(7);
            h.write_usize(kvs.len());
            for kv in kvs {
                h.write(kv.key.as_bytes());
                h.write_u8(0xfe);
                hash_value(h, &kv.value);
            }
        }
    }
}

/// FNV-1a, 64 bits: tiny and fixed forever, which is all [`StoredLog::fingerprint`] needs.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    // Integers are hashed little-endian whatever the platform, so digests agree everywhere.
    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_le_bytes());
    }
}

/// Drops repeated copies of a record (same [`StoredLog::fingerprint`]; the first wins) and
/// sorts by [`StoredLog::order_key`].
pub fn dedup_and_sort(records: Vec<StoredLog>) -> Vec<StoredLog> {
    let mut keyed: Vec<((u64, u64), StoredLog)> = records.into_iter().map(|l| (l.order_key(), l)).collect();
    // Stable: among equal keys the first written stays first and is the one kept.
    keyed.sort_by_key(|(k, _)| *k);
    keyed.dedup_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, l)| l).collect()
}

/// Where the next page of a log search starts: after the record with this time and
/// fingerprint (results run newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogCursor {
    /// [`LogRecord::effective_time`] of the last record returned.
    pub time_unix_nano: u64,
    /// [`StoredLog::fingerprint`] of the last record returned.
    pub fingerprint: u64,
}

impl LogCursor {
    /// The cursor pointing after `log`.
    pub fn after(log: &StoredLog) -> Self {
        let (time_unix_nano, fingerprint) = log.order_key();
        Self { time_unix_nano, fingerprint }
    }

    /// Whether a record with this order key comes after the cursor (newest first).
    pub fn admits(&self, key: (u64, u64)) -> bool {
        key < (self.time_unix_nano, self.fingerprint)
    }
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "l1.{:x}.{:x}", self.time_unix_nano, self.fingerprint)
    }
}

impl FromStr for LogCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not a log cursor returned by this server: {s:?}");
        let mut parts = s.split('.');
        if parts.next() != Some("l1") {
            return Err(bad());
        }
        let mut num = || parts.next().and_then(|p| u64::from_str_radix(p, 16).ok()).ok_or_else(bad);
        let (time_unix_nano, fingerprint) = (num()?, num()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self { time_unix_nano, fingerprint })
    }
}

/// A log search. Every condition given must hold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogQuery {
    /// Records of this service (`service.name`) only.
    pub service: Option<String>,
    /// Records at or above this severity number (0: any, unspecified included).
    pub min_severity: u8,
    /// Case-insensitive substring of the body text.
    pub text: Option<String>,
    /// Record or resource attributes that must equal these values (compared as text).
    pub attributes: Vec<(String, String)>,
    /// Records whose [`LogRecord::effective_time`] lies in this range.
    pub range: TimeRange,
    /// At most this many records.
    pub limit: usize,
    /// Continue after a previous page.
    pub cursor: Option<LogCursor>,
}

impl Default for LogQuery {
    /// Every record of all time, 20 to a page.
    fn default() -> Self {
        Self {
            service: None,
            min_severity: 0,
            text: None,
            attributes: Vec::new(),
            range: TimeRange::ALL,
            limit: 20,
            cursor: None,
        }
    }
}

impl LogQuery {
    /// Whether a record matches every condition except the time range and cursor.
    /// `lower_text` is [`LogQuery::text`] lowercased (done once per search).
    pub fn matches(&self, log: &StoredLog, lower_text: Option<&str>) -> bool {
        let r = &log.record;
        if r.severity_number < self.min_severity {
            return false;
        }
        if let Some(s) = &self.service
            && log.resource.service_name() != s
        {
            return false;
        }
        for (k, v) in &self.attributes {
            let found = r
                .attributes
                .iter()
                .chain(&log.resource.attributes)
                .any(|kv| kv.key == *k && value_text(&kv.value).as_deref() == Some(v.as_str()));
            if !found {
                return false;
            }
        }
        if let Some(t) = lower_text {
            return contains_ignore_case(&r.body_text(), t);
        }
        true
    }
}

/// Whether `haystack` contains `lower_needle` (already lowercase), ignoring case.
pub fn contains_ignore_case(haystack: &str, lower_needle: &str) -> bool {
    if lower_needle.is_empty() {
        return true;
    }
    if haystack.is_ascii() && lower_needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), lower_needle.as_bytes());
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(lower_needle)
}

/// One page of a log search, newest first.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LogPage {
    /// The records.
    pub records: Vec<StoredLog>,
    /// Where the next page starts; `None` when this page holds the last match.
    pub next_cursor: Option<LogCursor>,
}

/// Receives decoded log records. Called concurrently from many request tasks.
pub trait LogSink: Send + Sync + 'static {
    /// Hands a batch on. `Ok` means every record is durable (per the fsync policy) or
    /// deliberately dropped by sampling; an `Err` means the client must retry.
    fn consume_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>>;
}

/// Log storage: durable writes, lookups by trace and span, search. Called concurrently.
pub trait LogStore: Send + Sync + 'static {
    /// Writes a batch; returns once it is durable under the fsync policy. Idempotent: a
    /// record written again (a client retry, a WAL replay) is read back once.
    fn write_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>>;

    /// The records of a trace (of one of its spans when `span_id` is given), each once,
    /// ordered by time (then fingerprint), from every place the backend keeps records.
    fn trace_logs(
        &self,
        trace_id: TraceId,
        span_id: Option<SpanId>,
    ) -> BoxFuture<'_, Result<Vec<StoredLog>, StoreError>>;

    /// One page of records matching the query, newest first. Following `next_cursor`
    /// neither skips nor repeats a record of the data that was there at the first page.
    fn find_logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>>;
}

/// Log stores are log sinks.
impl<T: LogStore + ?Sized> LogSink for T {
    fn consume_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        self.write_logs(batch)
    }
}

/// Selects one page of a search from matching records in any order: newest first after
/// the cursor, at most `limit`, duplicates dropped. Backends collect candidates however
/// they can and finish with this, so every backend pages the same way.
pub fn page_of(query: &LogQuery, candidates: Vec<StoredLog>) -> LogPage {
    let mut keyed: Vec<((u64, u64), StoredLog)> = candidates
        .into_iter()
        .map(|l| (l.order_key(), l))
        .filter(|(k, _)| query.cursor.is_none_or(|c| c.admits(*k)))
        .collect();
    keyed.sort_by_key(|k| std::cmp::Reverse(k.0));
    keyed.dedup_by_key(|(k, _)| *k);
    let more = keyed.len() > query.limit;
    keyed.truncate(query.limit);
    let next_cursor = if more { keyed.last().map(|(_, l)| LogCursor::after(l)) } else { None };
    LogPage { records: keyed.into_iter().map(|(_, l)| l).collect(), next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(service: &str, time: u64, body: &str) -> StoredLog {
        let resource = Resource {
            attributes: vec![KeyValue::new("service.name", AnyValue::String(service.into()))],
            ..Resource::default()
        };
        StoredLog {
            resource: Arc::new(resource),
            scope: Arc::default(),
            record: LogRecord {
                time_unix_nano: time,
                severity_number: 9,
                body: AnyValue::String(body.into()),
                ..LogRecord::default()
            },
        }
    }

    #[test]
    fn split_by_trace_keeps_groups_and_drops_empty_ones() {
        let mut a = log("a", 1, "traced");
        a.record.trace_id = Some(TraceId([1; 16]));
        let b = log("a", 2, "untraced");
        let c = log("b", 3, "untraced too");
        let batch = LogBatch::from_stored([a.clone(), b.clone(), c.clone()]);
        let (traced, untraced) = batch.split_by_trace();
        assert_eq!(traced.into_stored().collect::<Vec<_>>(), vec![a]);
        assert_eq!(untraced.resource_logs.len(), 2);
        assert_eq!(untraced.into_stored().collect::<Vec<_>>(), vec![b, c]);
        let (none, _) = LogBatch::from_stored([log("c", 4, "x")]).split_by_trace();
        assert!(none.resource_logs.is_empty());
    }

    #[test]
    fn severity_names_and_numbers() {
        assert_eq!(severity_name(0), "UNSPECIFIED");
        assert_eq!(severity_name(9), "INFO");
        assert_eq!(severity_name(16), "WARN");
        assert_eq!(severity_name(24), "FATAL");
        assert_eq!(severity_name(25), "UNSPECIFIED");
        assert_eq!(parse_min_severity("warn"), Ok(13));
        assert_eq!(parse_min_severity("Warning"), Ok(13));
        assert_eq!(parse_min_severity("17"), Ok(17));
        assert!(parse_min_severity("0").is_err());
        assert!(parse_min_severity("loud").expect_err("not a severity").contains("TRACE, DEBUG"));
    }

    #[test]
    fn fingerprint_tells_records_apart_and_copies_alike() {
        let a = log("api", 5, "user 1 logged in");
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), log("api", 5, "user 2 logged in").fingerprint());
        assert_ne!(a.fingerprint(), log("web", 5, "user 1 logged in").fingerprint());
        assert_ne!(a.fingerprint(), log("api", 6, "user 1 logged in").fingerprint());
        // Fixed forever: cursors handed out by one release are read by the next.
        assert_eq!(log("api", 5, "x").fingerprint(), 0xac1d_d8d4_5627_579d);
    }

    #[test]
    fn pages_run_newest_first_without_skips_or_repeats() {
        let all: Vec<_> = (0..10).map(|i| log("api", 100 + i / 2, &format!("line {i}"))).collect();
        let mut q = LogQuery { limit: 3, ..LogQuery::default() };
        let mut seen = Vec::new();
        loop {
            let page = page_of(&q, all.iter().rev().cloned().chain(all.iter().cloned()).collect());
            assert!(page.records.len() <= 3);
            seen.extend(page.records.iter().map(|l| l.record.body_text()));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c.to_string().parse().expect("cursor round-trips")),
                None => break,
            }
        }
        assert_eq!(seen.len(), 10, "{seen:?}");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 10, "no record twice");
    }

    #[test]
    fn queries_match_service_severity_text_and_attributes() {
        let mut l = log("api", 1, "Payment DECLINED for order 17");
        l.record.attributes.push(KeyValue::new("order", AnyValue::Int(17)));
        let q = |f: fn(&mut LogQuery)| {
            let mut q = LogQuery::default();
            f(&mut q);
            q
        };
        assert!(q(|_| {}).matches(&l, None));
        assert!(q(|_| {}).matches(&l, Some("declined")));
        assert!(!q(|_| {}).matches(&l, Some("accepted")));
        assert!(q(|q| q.service = Some("api".into())).matches(&l, None));
        assert!(!q(|q| q.service = Some("web".into())).matches(&l, None));
        assert!(!q(|q| q.min_severity = 13).matches(&l, None));
        assert!(q(|q| q.attributes = vec![("order".into(), "17".into())]).matches(&l, None));
        assert!(q(|q| q.attributes = vec![("service.name".into(), "api".into())]).matches(&l, None));
        assert!(!q(|q| q.attributes = vec![("order".into(), "18".into())]).matches(&l, None));
        assert!(contains_ignore_case("Zürich ÄRGER", "ärger"));
        assert!("l2.1.2".parse::<LogCursor>().is_err());
        assert!("l1.1.2.3".parse::<LogCursor>().is_err());
    }
}
