//! Encoding [`Batch`]es as Jaeger clients do — binary protocol for HTTP, a compact-protocol
//! `emitBatch` message for the agent's UDP port — for tests, benchmarks and fuzz seeds.
//! Fields are written in id order and optional ones only when set, as generated thrift code
//! does, so a payload captured from a real client re-encodes byte for byte.

use super::model::{Batch, Log, Process, Span, SpanRef, Tag};

/// Thrift type codes of the binary protocol (the compact ones are mapped from these).
#[derive(Clone, Copy)]
enum Ty {
    Bool = 2,
    Double = 4,
    I32 = 8,
    I64 = 10,
    Binary = 11,
    Struct = 12,
    List = 15,
}

trait Writer {
    fn field(&mut self, ty: Ty, id: i16);
    fn stop(&mut self);
    fn struct_begin(&mut self);
    fn struct_end(&mut self);
    fn bool_field(&mut self, id: i16, v: bool);
    fn i32(&mut self, v: i32);
    fn i64(&mut self, v: i64);
    fn double(&mut self, v: f64);
    fn binary(&mut self, v: &[u8]);
    fn list(&mut self, elem: Ty, n: usize);
}

/// Binary protocol writer.
#[derive(Default)]
struct BinaryWriter(Vec<u8>);

impl Writer for BinaryWriter {
    fn field(&mut self, ty: Ty, id: i16) {
        self.0.push(ty as u8);
        self.0.extend_from_slice(&id.to_be_bytes());
    }
    fn stop(&mut self) {
        self.0.push(0);
    }
    fn struct_begin(&mut self) {}
    fn struct_end(&mut self) {}
    fn bool_field(&mut self, id: i16, v: bool) {
        self.field(Ty::Bool, id);
        self.0.push(u8::from(v));
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn binary(&mut self, v: &[u8]) {
        self.i32(v.len() as i32);
        self.0.extend_from_slice(v);
    }
    fn list(&mut self, elem: Ty, n: usize) {
        self.0.push(elem as u8);
        self.i32(n as i32);
    }
}

/// Compact protocol writer.
#[derive(Default)]
struct CompactWriter {
    out: Vec<u8>,
    last: Vec<i16>,
    current: i16,
}

fn compact_code(ty: Ty) -> u8 {
    match ty {
        Ty::Bool => 1,
        Ty::I32 => 5,
        Ty::I64 => 6,
        Ty::Double => 7,
        Ty::Binary => 8,
        Ty::List => 9,
        Ty::Struct => 12,
    }
}

impl CompactWriter {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn header(&mut self, code: u8, id: i16) {
        let delta = i32::from(id) - i32::from(self.current);
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | code);
        } else {
            self.out.push(code);
            self.zigzag(id.into());
        }
        self.current = id;
    }
}

impl Writer for CompactWriter {
    fn field(&mut self, ty: Ty, id: i16) {
        self.header(compact_code(ty), id);
    }
    fn stop(&mut self) {
        self.out.push(0);
    }
    fn struct_begin(&mut self) {
        self.last.push(self.current);
        self.current = 0;
    }
    fn struct_end(&mut self) {
        self.current = self.last.pop().unwrap_or(0);
    }
    fn bool_field(&mut self, id: i16, v: bool) {
        self.header(if v { 1 } else { 2 }, id);
    }
    fn i32(&mut self, v: i32) {
        self.zigzag(v.into());
    }
    fn i64(&mut self, v: i64) {
        self.zigzag(v);
    }
    fn double(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn binary(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.out.extend_from_slice(v);
    }
    fn list(&mut self, elem: Ty, n: usize) {
        let code = compact_code(elem);
        if n < 15 {
            self.out.push(((n as u8) << 4) | code);
        } else {
            self.out.push(0xf0 | code);
            self.varint(n as u64);
        }
    }
}

/// A `Batch` in the binary protocol: the body of `POST /api/traces`.
pub fn binary_batch(batch: &Batch) -> Vec<u8> {
    let mut w = BinaryWriter::default();
    write_batch(&mut w, batch);
    w.0
}

/// An `Agent.emitBatch` oneway message in the strict binary protocol: one UDP datagram for
/// the agent's binary port.
pub fn binary_emit_batch(batch: &Batch, seq_id: i32) -> Vec<u8> {
    let mut w = BinaryWriter::default();
    w.i32(0x8001_0004_u32 as i32); // version 1, oneway
    w.binary(b"emitBatch");
    w.i32(seq_id);
    w.field(Ty::Struct, 1);
    write_batch(&mut w, batch);
    w.stop();
    w.0
}

/// An `Agent.emitBatch` oneway message in the compact protocol: one UDP datagram.
pub fn compact_emit_batch(batch: &Batch, seq_id: i32) -> Vec<u8> {
    let mut w = CompactWriter::default();
    w.out.push(0x82);
    w.out.push((4 << 5) | 1); // oneway, version 1
    w.varint(u64::from(seq_id as u32));
    w.binary(b"emitBatch");
    w.struct_begin();
    w.field(Ty::Struct, 1);
    write_batch(&mut w, batch);
    w.stop();
    w.struct_end();
    w.out
}

fn write_struct<W: Writer>(w: &mut W, fields: impl FnOnce(&mut W)) {
    w.struct_begin();
    fields(w);
    w.stop();
    w.struct_end();
}

fn write_list<W: Writer, T>(w: &mut W, id: i16, items: &[T], item: impl Fn(&mut W, &T)) {
    w.field(Ty::List, id);
    w.list(Ty::Struct, items.len());
    for i in items {
        item(w, i);
    }
}

fn write_batch<W: Writer>(w: &mut W, b: &Batch) {
    write_struct(w, |w| {
        w.field(Ty::Struct, 1);
        write_process(w, &b.process);
        write_list(w, 2, &b.spans, write_span);
    });
}

fn write_process<W: Writer>(w: &mut W, p: &Process) {
    write_struct(w, |w| {
        w.field(Ty::Binary, 1);
        w.binary(p.service_name.as_bytes());
        if !p.tags.is_empty() {
            write_list(w, 2, &p.tags, write_tag);
        }
    });
}

fn write_tag<W: Writer>(w: &mut W, t: &Tag) {
    write_struct(w, |w| {
        w.field(Ty::Binary, 1);
        w.binary(t.key.as_bytes());
        w.field(Ty::I32, 2);
        w.i32(t.v_type);
        if let Some(v) = &t.v_str {
            w.field(Ty::Binary, 3);
            w.binary(v.as_bytes());
        }
        if let Some(v) = t.v_double {
            w.field(Ty::Double, 4);
            w.double(v);
        }
        if let Some(v) = t.v_bool {
            w.bool_field(5, v);
        }
        if let Some(v) = t.v_long {
            w.field(Ty::I64, 6);
            w.i64(v);
        }
        if let Some(v) = &t.v_binary {
            w.field(Ty::Binary, 7);
            w.binary(v);
        }
    });
}

fn write_ref<W: Writer>(w: &mut W, r: &SpanRef) {
    write_struct(w, |w| {
        w.field(Ty::I32, 1);
        w.i32(r.ref_type);
        for (id, v) in [(2, r.trace_id_low), (3, r.trace_id_high), (4, r.span_id)] {
            w.field(Ty::I64, id);
            w.i64(v);
        }
    });
}

fn write_log<W: Writer>(w: &mut W, l: &Log) {
    write_struct(w, |w| {
        w.field(Ty::I64, 1);
        w.i64(l.timestamp);
        write_list(w, 2, &l.fields, write_tag);
    });
}

fn write_span<W: Writer>(w: &mut W, s: &Span) {
    write_struct(w, |w| {
        for (id, v) in [(1, s.trace_id_low), (2, s.trace_id_high), (3, s.span_id), (4, s.parent_span_id)] {
            w.field(Ty::I64, id);
            w.i64(v);
        }
        w.field(Ty::Binary, 5);
        w.binary(s.operation_name.as_bytes());
        if !s.references.is_empty() {
            write_list(w, 6, &s.references, write_ref);
        }
        w.field(Ty::I32, 7);
        w.i32(s.flags);
        if let Some(start) = s.start_time {
            w.field(Ty::I64, 8);
            w.i64(start);
        }
        w.field(Ty::I64, 9);
        w.i64(s.duration);
        if !s.tags.is_empty() {
            write_list(w, 10, &s.tags, write_tag);
        }
        if !s.logs.is_empty() {
            write_list(w, 11, &s.logs, write_log);
        }
    });
}
