//! The compact encoding of a buffered span, and the dictionary it shares strings through.
//!
//! A buffered span is kept as bytes until its trace is decided, so its size is the
//! buffer's memory. The encoding leaves out what the buffer already knows (the trace id,
//! resource and scope) and writes attribute keys and span and event names as small
//! numbers into a [`Dictionary`] shared by every trace: the same twenty keys repeat on
//! every span of a service. Strings are interned the second time they are seen (the first
//! batch carrying a new key writes it inline, then records it), up to [`MAX_ENTRIES`]
//! strings of at most [`MAX_STRING`] bytes; past that every new string stays inline, so
//! hostile cardinality costs bytes, never unbounded dictionary growth.
//!
//! ```text
//! span   = span_id[8] parent(0 | 1 span_id[8]) str(trace_state) varint(flags) istr(name)
//!          u8(kind) u64le(start) varint(end - start, wrapping) attrs varint(dropped_attrs)
//!          varint(n) event* varint(dropped_events) varint(n) link* varint(dropped_links)
//!          u8(status code) str(status message)
//! event  = varint(time - start, wrapping) istr(name) attrs varint(dropped)
//! link   = trace_id[16] span_id[8] str(trace_state) attrs varint(dropped) varint(flags)
//! attrs  = varint(n) (istr(key) value)*
//! value  = 0 | 1 str | 2 u8 | 3 zigzag-varint | 4 f64le | 5 bytes | 6 varint(n) value* | 7 attrs
//! istr   = varint(id << 1 | 1)  (dictionary)  |  varint(len << 1) utf8  (inline)
//! str    = varint(len) utf8
//! ```
//!
//! Decoding never panics: truncated or corrupt bytes are an error.

use std::sync::Arc;

use foldhash::{HashMap as FastMap, HashSet as FastSet};
use parking_lot::RwLock;
use strand_core::{AnyValue, Event, KeyValue, Link, Span, SpanId, SpanKind, Status, StatusCode, TraceId};

/// Most strings a dictionary holds.
pub const MAX_ENTRIES: usize = 1 << 16;
/// Longest string a dictionary holds, in bytes.
pub const MAX_STRING: usize = 128;
/// Deepest nesting of array / key-value-list values decoded.
const MAX_DEPTH: u32 = 64;

#[derive(Debug, Default)]
struct Table {
    ids: FastMap<Arc<str>, u32>,
    strings: Vec<Arc<str>>,
    bytes: usize,
}

/// Strings shared by every buffered span. Ids are never reused or reassigned, so bytes
/// encoded against the dictionary stay valid for as long as it lives.
#[derive(Debug, Default)]
pub struct Dictionary {
    table: RwLock<Table>,
}

impl Dictionary {
    /// Strings held.
    pub fn len(&self) -> usize {
        self.table.read().strings.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes it holds (string bytes plus map and vector entries).
    pub fn bytes(&self) -> usize {
        self.table.read().bytes
    }

    /// Encodes spans of one batch against the dictionary; strings it does not hold yet
    /// are added when the encoder is finished.
    pub(crate) fn encoder(&self) -> Encoder<'_> {
        let table = self.table.read();
        let used = vec![0u64; table.strings.len().div_ceil(64)];
        Encoder { dict: self, table: Some(table), misses: FastSet::default(), used }
    }

    /// Looks ids up while decoding.
    pub(crate) fn resolver(&self) -> impl Fn(u32) -> Option<Arc<str>> + '_ {
        let table = self.table.read();
        move |id| table.strings.get(id as usize).cloned()
    }

    /// The strings with these ids (for a pending-log record).
    pub(crate) fn entries(&self, ids: &[u32]) -> Vec<(u32, Arc<str>)> {
        let table = self.table.read();
        ids.iter().filter_map(|&id| Some((id, table.strings.get(id as usize)?.clone()))).collect()
    }
}

/// Encodes spans while holding the dictionary's read lock.
pub(crate) struct Encoder<'d> {
    dict: &'d Dictionary,
    table: Option<parking_lot::RwLockReadGuard<'d, Table>>,
    /// Strings to add (each once, however many spans carried it).
    misses: FastSet<Box<str>>,
    /// Ids written (a bit per dictionary entry), for the pending-log record's own copy of
    /// the strings.
    used: Vec<u64>,
}

impl Encoder<'_> {
    fn istr(&mut self, out: &mut Vec<u8>, s: &str) {
        let table = self.table.as_ref().expect("table held until finish");
        if let Some(&id) = table.ids.get(s) {
            put_varint(out, (u64::from(id) << 1) | 1);
            self.used[id as usize / 64] |= 1 << (id % 64);
            return;
        }
        if s.len() <= MAX_STRING
            && table.strings.len() + self.misses.len() < MAX_ENTRIES
            && !self.misses.contains(s)
        {
            self.misses.insert(s.into());
        }
        put_varint(out, (s.len() as u64) << 1);
        out.extend_from_slice(s.as_bytes());
    }

    fn attrs(&mut self, out: &mut Vec<u8>, attrs: &[KeyValue]) {
        put_varint(out, attrs.len() as u64);
        for kv in attrs {
            self.istr(out, &kv.key);
            self.value(out, &kv.value);
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, v: &AnyValue) {
        match v {
            AnyValue::Empty => out.push(0),
            AnyValue::String(s) => {
                out.push(1);
                put_str(out, s);
            }
            AnyValue::Bool(b) => out.extend_from_slice(&[2, u8::from(*b)]),
            AnyValue::Int(i) => {
                out.push(3);
                put_varint(out, ((*i << 1) ^ (*i >> 63)) as u64);
            }
            AnyValue::Double(d) => {
                out.push(4);
                out.extend_from_slice(&d.to_le_bytes());
            }
            AnyValue::Bytes(b) => {
                out.push(5);
                put_varint(out, b.len() as u64);
                out.extend_from_slice(b);
            }
            AnyValue::Array(items) => {
                out.push(6);
                put_varint(out, items.len() as u64);
                for item in items {
                    self.value(out, item);
                }
            }
            AnyValue::KvList(kvs) => {
                out.push(7);
                self.attrs(out, kvs);
            }
        }
    }

    /// Appends `span` (without its trace id) to `out`.
    pub(crate) fn span(&mut self, out: &mut Vec<u8>, span: &Span) {
        let start = span.start_time_unix_nano;
        out.extend_from_slice(&span.span_id.0);
        match span.parent_span_id {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&p.0);
            }
            None => out.push(0),
        }
        put_str(out, &span.trace_state);
        put_varint(out, u64::from(span.flags));
        self.istr(out, &span.name);
        out.push(span.kind as u8);
        out.extend_from_slice(&start.to_le_bytes());
        put_varint(out, span.end_time_unix_nano.wrapping_sub(start));
        self.attrs(out, &span.attributes);
        put_varint(out, u64::from(span.dropped_attributes_count));
        put_varint(out, span.events.len() as u64);
        for e in &span.events {
            put_varint(out, e.time_unix_nano.wrapping_sub(start));
            self.istr(out, &e.name);
            self.attrs(out, &e.attributes);
            put_varint(out, u64::from(e.dropped_attributes_count));
        }
        put_varint(out, u64::from(span.dropped_events_count));
        put_varint(out, span.links.len() as u64);
        for l in &span.links {
            out.extend_from_slice(&l.trace_id.0);
            out.extend_from_slice(&l.span_id.0);
            put_str(out, &l.trace_state);
            self.attrs(out, &l.attributes);
            put_varint(out, u64::from(l.dropped_attributes_count));
            put_varint(out, u64::from(l.flags));
        }
        put_varint(out, u64::from(span.dropped_links_count));
        out.push(span.status.code as u8);
        put_str(out, &span.status.message);
    }

    /// Releases the read lock and adds the strings seen for the first time; returns the
    /// ids written, ascending.
    pub(crate) fn finish(mut self) -> Vec<u32> {
        self.table = None;
        let mut used = Vec::new();
        for (w, bits) in self.used.iter().enumerate() {
            let mut bits = *bits;
            while bits != 0 {
                used.push(w as u32 * 64 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        if self.misses.is_empty() {
            return used;
        }
        let mut table = self.dict.table.write();
        for s in std::mem::take(&mut self.misses) {
            if table.strings.len() >= MAX_ENTRIES || table.ids.contains_key(&*s) {
                continue;
            }
            let s: Arc<str> = Arc::from(s);
            let id = table.strings.len() as u32;
            table.bytes += s.len() + 64;
            table.ids.insert(s.clone(), id);
            table.strings.push(s);
        }
        used
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid encoded span: {0}")]
pub struct DecodeError(pub &'static str);

/// A cursor over encoded bytes.
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first().ok_or(DecodeError("truncated number"))?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("number too long"))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError("count out of range"))
    }

    /// A count of items each at least one byte long: never more than the bytes left.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.rest.len() as u64 {
            return Err(DecodeError("count beyond the data"));
        }
        Ok(n as usize)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.rest.split_at_checked(n).ok_or(DecodeError("truncated"))?;
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("invalid UTF-8"))
    }

    fn istr(&mut self, resolve: &impl Fn(u32) -> Option<Arc<str>>) -> Result<String, DecodeError> {
        let tag = self.varint()?;
        if tag & 1 == 1 {
            let id = u32::try_from(tag >> 1).map_err(|_| DecodeError("string id out of range"))?;
            return resolve(id).map(|s| s.to_string()).ok_or(DecodeError("unknown string id"));
        }
        let n = usize::try_from(tag >> 1).map_err(|_| DecodeError("string too long"))?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map(str::to_string).map_err(|_| DecodeError("invalid UTF-8"))
    }

    fn attrs(
        &mut self,
        resolve: &impl Fn(u32) -> Option<Arc<str>>,
        depth: u32,
    ) -> Result<Vec<KeyValue>, DecodeError> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.istr(resolve)?;
            out.push(KeyValue { key, value: self.value(resolve, depth)? });
        }
        Ok(out)
    }

    fn value(
        &mut self,
        resolve: &impl Fn(u32) -> Option<Arc<str>>,
        depth: u32,
    ) -> Result<AnyValue, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError("values nested too deeply"));
        }
        Ok(match self.byte()? {
            0 => AnyValue::Empty,
            1 => AnyValue::String(self.str()?),
            2 => AnyValue::Bool(self.byte()? != 0),
            3 => {
                let z = self.varint()?;
                AnyValue::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            4 => AnyValue::Double(f64::from_le_bytes(self.array()?)),
            5 => {
                let n = self.count()?;
                AnyValue::Bytes(self.take(n)?.to_vec())
            }
            6 => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(resolve, depth + 1)?);
                }
                AnyValue::Array(items)
            }
            7 => AnyValue::KvList(self.attrs(resolve, depth + 1)?),
            _ => return Err(DecodeError("unknown value type")),
        })
    }

    /// Decodes one span of trace `trace_id`.
    pub(crate) fn span(
        &mut self,
        trace_id: TraceId,
        resolve: &impl Fn(u32) -> Option<Arc<str>>,
    ) -> Result<Span, DecodeError> {
        let span_id = SpanId(self.array()?);
        let parent_span_id = match self.byte()? {
            0 => None,
            1 => Some(SpanId(self.array()?)),
            _ => return Err(DecodeError("invalid parent marker")),
        };
        let trace_state = self.str()?;
        let flags = self.u32()?;
        let name = self.istr(resolve)?;
        let kind = SpanKind::from_i32(i32::from(self.byte()?));
        let start = u64::from_le_bytes(self.array()?);
        let end = start.wrapping_add(self.varint()?);
        let attributes = self.attrs(resolve, 0)?;
        let dropped_attributes_count = self.u32()?;
        let n = self.count()?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let time_unix_nano = start.wrapping_add(self.varint()?);
            let name = self.istr(resolve)?;
            let attributes = self.attrs(resolve, 0)?;
            events.push(Event { time_unix_nano, name, attributes, dropped_attributes_count: self.u32()? });
        }
        let dropped_events_count = self.u32()?;
        let n = self.count()?;
        let mut links = Vec::with_capacity(n);
        for _ in 0..n {
            let trace_id = TraceId(self.array()?);
            let span_id = SpanId(self.array()?);
            let trace_state = self.str()?;
            let attributes = self.attrs(resolve, 0)?;
            let dropped_attributes_count = self.u32()?;
            links.push(Link {
                trace_id,
                span_id,
                trace_state,
                attributes,
                dropped_attributes_count,
                flags: self.u32()?,
            });
        }
        let dropped_links_count = self.u32()?;
        let code = StatusCode::from_i32(i32::from(self.byte()?));
        let status = Status { code, message: self.str()? };
        Ok(Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            flags,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
        })
    }
}
