//! The structs of `jaeger.thrift` (and the agent's `emitBatch` message), decoded with
//! either protocol.
//!
//! Field ids and types follow jaeger-idl's `thrift/jaeger.thrift`. As generated thrift code
//! does, unknown fields and fields of an unexpected type are skipped; a missing required
//! field leaves its default, which conversion then rejects where it matters (zero ids, no
//! start time).

use super::thrift::{Binary, Compact, Protocol, Result, TType};

/// `Tag.vType`.
pub mod tag_type {
    /// `vStr`.
    pub const STRING: i32 = 0;
    /// `vDouble`.
    pub const DOUBLE: i32 = 1;
    /// `vBool`.
    pub const BOOL: i32 = 2;
    /// `vLong`.
    pub const LONG: i32 = 3;
    /// `vBinary`.
    pub const BINARY: i32 = 4;
}

/// `SpanRef.refType`: `CHILD_OF`.
pub const CHILD_OF: i32 = 0;
/// `SpanRef.refType`: `FOLLOWS_FROM`.
pub const FOLLOWS_FROM: i32 = 1;

/// A typed key-value pair.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Which of the values is meant ([`tag_type`]).
    pub v_type: i32,
    /// String value.
    pub v_str: Option<String>,
    /// Double value.
    pub v_double: Option<f64>,
    /// Bool value.
    pub v_bool: Option<bool>,
    /// Integer value.
    pub v_long: Option<i64>,
    /// Binary value.
    pub v_binary: Option<Vec<u8>>,
    /// The key or string value was not valid UTF-8 (kept with U+FFFD in its place).
    pub invalid_utf8: bool,
}

/// A timestamped set of fields (an OTLP event).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Log {
    /// Microseconds since the epoch.
    pub timestamp: i64,
    /// Fields; `event` names the event.
    pub fields: Vec<Tag>,
}

/// A reference to another span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanRef {
    /// [`CHILD_OF`] or [`FOLLOWS_FROM`].
    pub ref_type: i32,
    /// Low 64 bits of the trace id.
    pub trace_id_low: i64,
    /// High 64 bits of the trace id.
    pub trace_id_high: i64,
    /// Span id.
    pub span_id: i64,
}

/// One span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    /// Low 64 bits of the trace id.
    pub trace_id_low: i64,
    /// High 64 bits of the trace id (0 for 64-bit ids).
    pub trace_id_high: i64,
    /// Span id.
    pub span_id: i64,
    /// Parent span id; 0 for none.
    pub parent_span_id: i64,
    /// Operation name.
    pub operation_name: String,
    /// References to other spans.
    pub references: Vec<SpanRef>,
    /// Bit 1 sampled, bit 2 debug.
    pub flags: i32,
    /// Start, microseconds since the epoch; `None` when the field was missing.
    pub start_time: Option<i64>,
    /// Duration in microseconds.
    pub duration: i64,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Logs.
    pub logs: Vec<Log>,
    /// What was not valid UTF-8 (the operation name, a tag), when something was: the span
    /// is rejected, as the other receivers reject a span they cannot read.
    pub invalid_utf8: Option<String>,
}

/// The process (service instance) that reported a batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Process {
    /// `service.name`.
    pub service_name: String,
    /// Resource attributes.
    pub tags: Vec<Tag>,
    /// What was not valid UTF-8 (the service name, a tag), when something was: every span
    /// of the batch is rejected.
    pub invalid_utf8: Option<String>,
}

/// What a Jaeger client sends: one process and its spans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// The reporting process.
    pub process: Process,
    /// Its spans.
    pub spans: Vec<Span>,
}

/// Decodes a `Batch` in the binary protocol, as POSTed to the collector's `/api/traces`.
pub fn decode_binary_batch(buf: &[u8]) -> Result<Batch> {
    let mut p = Binary::new(buf);
    let batch = read_batch(&mut p)?;
    if p.remaining() > 0 {
        return Err(p.error(format!("{} unexpected bytes after the Batch", p.remaining())));
    }
    Ok(batch)
}

/// Decodes a Jaeger agent datagram: a compact-protocol `Agent.emitBatch` message (`:6831`).
pub fn decode_compact_emit_batch(buf: &[u8]) -> Result<Batch> {
    let mut p = Compact::new(buf);
    let header = p.message_header()?;
    read_emit_batch(&mut p, &header.name)
}

/// Decodes a Jaeger agent datagram: a binary-protocol `Agent.emitBatch` message (`:6832`),
/// what the Node `jaeger-client` and the OTel JS Jaeger exporter send by default.
pub fn decode_binary_emit_batch(buf: &[u8]) -> Result<Batch> {
    let mut p = Binary::new(buf);
    let header = p.message_header()?;
    let batch = read_emit_batch(&mut p, &header.name)?;
    if p.remaining() > 0 {
        return Err(p.error(format!("{} unexpected bytes after the emitBatch message", p.remaining())));
    }
    Ok(batch)
}

/// The arguments of an `emitBatch` message, its header read.
fn read_emit_batch<'a, P: Protocol<'a>>(p: &mut P, method: &str) -> Result<Batch> {
    if method != "emitBatch" {
        return Err(p.error(format!(
            "unsupported agent method `{method}`: only emitBatch (jaeger.thrift) is accepted"
        )));
    }
    let mut batch = None;
    read_struct(p, |p, ty, id| {
        Ok(match (id, ty) {
            (1, TType::Struct) => {
                batch = Some(read_batch(p)?);
                true
            }
            _ => false,
        })
    })?;
    batch.ok_or_else(|| p.error("emitBatch carries no batch"))
}

/// Reads a struct, handing each field to `field`, which answers whether it consumed the
/// value; values it leaves are skipped.
fn read_struct<'a, P: Protocol<'a>>(
    p: &mut P,
    mut field: impl FnMut(&mut P, TType, i16) -> Result<bool>,
) -> Result<()> {
    p.struct_begin()?;
    while let Some((ty, id)) = p.field()? {
        if !field(p, ty, id)? {
            p.skip(ty)?;
        }
    }
    p.struct_end();
    Ok(())
}

/// Reads a list whose elements must be of type `want`.
fn read_list<'a, P: Protocol<'a>, T>(
    p: &mut P,
    want: TType,
    what: &str,
    mut elem: impl FnMut(&mut P) -> Result<T>,
) -> Result<Vec<T>> {
    let (ty, n) = p.list()?;
    if n > 0 && ty != want {
        return Err(p.error(format!("list<{what}> holds elements of type {ty:?}")));
    }
    // The count is bounded by the remaining bytes, not by memory: grow as elements arrive.
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(elem(p)?);
    }
    Ok(out)
}

fn read_batch<'a, P: Protocol<'a>>(p: &mut P) -> Result<Batch> {
    let mut batch = Batch::default();
    read_struct(p, |p, ty, id| {
        Ok(match (id, ty) {
            (1, TType::Struct) => {
                batch.process = read_process(p)?;
                true
            }
            (2, TType::List) => {
                batch.spans = read_list(p, TType::Struct, "Span", read_span)?;
                true
            }
            _ => false,
        })
    })?;
    Ok(batch)
}

/// A string, noting in `bad` when it was not valid UTF-8.
fn utf8<'a, P: Protocol<'a>>(p: &mut P, bad: &mut bool) -> Result<String> {
    let bytes = p.binary()?;
    Ok(match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            *bad = true;
            String::from_utf8_lossy(bytes).into_owned()
        }
    })
}

/// Where invalid UTF-8 was among `tags`, if anywhere.
fn bad_tag(tags: &[Tag], what: &str) -> Option<String> {
    tags.iter().find(|t| t.invalid_utf8).map(|t| format!("{what} `{}`", t.key))
}

fn read_process<'a, P: Protocol<'a>>(p: &mut P) -> Result<Process> {
    let mut process = Process::default();
    let mut bad_name = false;
    read_struct(p, |p, ty, id| {
        Ok(match (id, ty) {
            (1, TType::Binary) => {
                process.service_name = utf8(p, &mut bad_name)?;
                true
            }
            (2, TType::List) => {
                process.tags = read_tags(p)?;
                true
            }
            _ => false,
        })
    })?;
    process.invalid_utf8 =
        if bad_name { Some("serviceName".into()) } else { bad_tag(&process.tags, "process tag") };
    Ok(process)
}

fn read_tags<'a, P: Protocol<'a>>(p: &mut P) -> Result<Vec<Tag>> {
    read_list(p, TType::Struct, "Tag", read_tag)
}

fn read_tag<'a, P: Protocol<'a>>(p: &mut P) -> Result<Tag> {
    let mut tag = Tag::default();
    read_struct(p, |p, ty, id| {
        match (id, ty) {
            (1, TType::Binary) => tag.key = utf8(p, &mut tag.invalid_utf8)?,
            (2, TType::I32) => tag.v_type = p.i32()?,
            (3, TType::Binary) => tag.v_str = Some(utf8(p, &mut tag.invalid_utf8)?),
            (4, TType::Double) => tag.v_double = Some(p.double()?),
            (5, TType::Bool) => tag.v_bool = Some(p.bool()?),
            (6, TType::I64) => tag.v_long = Some(p.i64()?),
            (7, TType::Binary) => tag.v_binary = Some(p.binary()?.to_vec()),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(tag)
}

fn read_log<'a, P: Protocol<'a>>(p: &mut P) -> Result<Log> {
    let mut log = Log::default();
    read_struct(p, |p, ty, id| {
        match (id, ty) {
            (1, TType::I64) => log.timestamp = p.i64()?,
            (2, TType::List) => log.fields = read_tags(p)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(log)
}

fn read_ref<'a, P: Protocol<'a>>(p: &mut P) -> Result<SpanRef> {
    let mut r = SpanRef::default();
    read_struct(p, |p, ty, id| {
        match (id, ty) {
            (1, TType::I32) => r.ref_type = p.i32()?,
            (2, TType::I64) => r.trace_id_low = p.i64()?,
            (3, TType::I64) => r.trace_id_high = p.i64()?,
            (4, TType::I64) => r.span_id = p.i64()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(r)
}

fn read_span<'a, P: Protocol<'a>>(p: &mut P) -> Result<Span> {
    let mut s = Span::default();
    let mut bad_name = false;
    read_struct(p, |p, ty, id| {
        match (id, ty) {
            (1, TType::I64) => s.trace_id_low = p.i64()?,
            (2, TType::I64) => s.trace_id_high = p.i64()?,
            (3, TType::I64) => s.span_id = p.i64()?,
            (4, TType::I64) => s.parent_span_id = p.i64()?,
            (5, TType::Binary) => s.operation_name = utf8(p, &mut bad_name)?,
            (6, TType::List) => s.references = read_list(p, TType::Struct, "SpanRef", read_ref)?,
            (7, TType::I32) => s.flags = p.i32()?,
            (8, TType::I64) => s.start_time = Some(p.i64()?),
            (9, TType::I64) => s.duration = p.i64()?,
            (10, TType::List) => s.tags = read_tags(p)?,
            (11, TType::List) => s.logs = read_list(p, TType::Struct, "Log", read_log)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    s.invalid_utf8 = if bad_name {
        Some("operationName".into())
    } else {
        bad_tag(&s.tags, "tag").or_else(|| s.logs.iter().find_map(|l| bad_tag(&l.fields, "log field")))
    };
    Ok(s)
}
