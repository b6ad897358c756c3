//! Thrift readers over a byte slice: the binary protocol (Jaeger over HTTP) and the compact
//! protocol (the Jaeger agent's UDP port).
//!
//! Only what decoding needs: field headers, scalars, strings, list and map headers, and
//! skipping of unknown fields. Hostile input is bounded: every length is checked against
//! the bytes that remain before anything is allocated, and structs nest at most
//! [`MAX_DEPTH`] deep.

use std::fmt;

/// How deeply structs, lists and maps may nest.
pub const MAX_DEPTH: usize = 64;

/// A malformed or truncated thrift payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThriftError {
    /// Byte offset where decoding failed.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ThriftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for ThriftError {}

/// Result of a thrift read.
pub type Result<T> = std::result::Result<T, ThriftError>;

/// Value types, independent of the protocol's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TType {
    /// `bool`.
    Bool,
    /// `byte` (i8).
    I8,
    /// `i16`.
    I16,
    /// `i32`, and enums.
    I32,
    /// `i64`.
    I64,
    /// `double`.
    Double,
    /// `string` and `binary`.
    Binary,
    /// `struct`.
    Struct,
    /// `map`.
    Map,
    /// `set`.
    Set,
    /// `list`.
    List,
    /// `uuid` (16 bytes).
    Uuid,
}

/// Reading thrift values; implemented by [`Binary`] and [`Compact`].
pub trait Protocol<'a> {
    /// The next field's type and id, or `None` at the struct's end.
    fn field(&mut self) -> Result<Option<(TType, i16)>>;
    /// Enters a struct (before its first [`Protocol::field`]).
    fn struct_begin(&mut self) -> Result<()>;
    /// Leaves a struct (after [`Protocol::field`] answered `None`).
    fn struct_end(&mut self);
    /// A `bool`.
    fn bool(&mut self) -> Result<bool>;
    /// A `byte`.
    fn i8(&mut self) -> Result<i8>;
    /// An `i16`.
    fn i16(&mut self) -> Result<i16>;
    /// An `i32`.
    fn i32(&mut self) -> Result<i32>;
    /// An `i64`.
    fn i64(&mut self) -> Result<i64>;
    /// A `double`.
    fn double(&mut self) -> Result<f64>;
    /// A `binary` or `string`, borrowed from the input.
    fn binary(&mut self) -> Result<&'a [u8]>;
    /// A list or set header: element type and count (checked against the remaining bytes).
    fn list(&mut self) -> Result<(TType, usize)>;
    /// A map header: key type, value type and count.
    fn map(&mut self) -> Result<(TType, TType, usize)>;
    /// Current byte offset, for error messages.
    fn offset(&self) -> usize;

    /// A `string`, invalid UTF-8 replaced (the span model notes where, to reject the span).
    fn string(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.binary()?).into_owned())
    }

    /// An error at the current offset.
    fn error(&self, message: impl Into<String>) -> ThriftError {
        ThriftError { offset: self.offset(), message: message.into() }
    }

    /// Skips a value of type `ty`.
    fn skip(&mut self, ty: TType) -> Result<()> {
        skip_at(self, ty, 0)
    }
}

fn skip_at<'a, P: Protocol<'a> + ?Sized>(p: &mut P, ty: TType, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(p.error(format!("values nest deeper than {MAX_DEPTH} levels")));
    }
    match ty {
        TType::Bool => p.bool().map(drop),
        TType::I8 => p.i8().map(drop),
        TType::I16 => p.i16().map(drop),
        TType::I32 => p.i32().map(drop),
        TType::I64 => p.i64().map(drop),
        TType::Double => p.double().map(drop),
        TType::Binary => p.binary().map(drop),
        TType::Uuid => {
            for _ in 0..16 {
                p.i8()?;
            }
            Ok(())
        }
        TType::Struct => {
            p.struct_begin()?;
            while let Some((ty, _)) = p.field()? {
                skip_at(p, ty, depth + 1)?;
            }
            p.struct_end();
            Ok(())
        }
        TType::List | TType::Set => {
            let (elem, n) = p.list()?;
            for _ in 0..n {
                skip_at(p, elem, depth + 1)?;
            }
            Ok(())
        }
        TType::Map => {
            let (k, v, n) = p.map()?;
            for _ in 0..n {
                skip_at(p, k, depth + 1)?;
                skip_at(p, v, depth + 1)?;
            }
            Ok(())
        }
    }
}

/// A cursor over the input shared by both protocols.
#[derive(Debug)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: impl Into<String>) -> ThriftError {
        ThriftError { offset: self.pos, message: message.into() }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!("truncated: {what} needs {n} bytes, {} remain", self.remaining())));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("structs nest deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        Ok(())
    }

    /// A collection of `n` elements needs at least `n` bytes (every element takes one
    /// or more), so larger counts are refused before anything is allocated.
    fn count(&self, n: i64, what: &str) -> Result<usize> {
        if n < 0 {
            return Err(self.error(format!("negative {what} size {n}")));
        }
        let n = n as u64;
        if n > self.remaining() as u64 {
            return Err(self.error(format!(
                "{what} of {n} elements cannot fit in the {} bytes that remain",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
}

/// `TBinaryProtocol`: big-endian fixed-width integers, `i32` lengths.
#[derive(Debug)]
pub struct Binary<'a> {
    cur: Cursor<'a>,
}

impl<'a> Binary<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { cur: Cursor { buf, pos: 0, depth: 0 } }
    }

    fn ttype(&self, code: u8) -> Result<TType> {
        Ok(match code {
            2 => TType::Bool,
            3 => TType::I8,
            4 => TType::Double,
            6 => TType::I16,
            8 => TType::I32,
            10 => TType::I64,
            11 => TType::Binary,
            12 => TType::Struct,
            13 => TType::Map,
            14 => TType::Set,
            15 => TType::List,
            16 => TType::Uuid,
            other => return Err(self.cur.error(format!("unknown binary-protocol type {other}"))),
        })
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.cur.remaining()
    }

    /// A message header: strict (`0x8001` version word with the type, the name, the
    /// sequence id), as Jaeger clients and the OTel JS exporter write it, or the old
    /// non-strict form (the name, the type byte, the sequence id).
    pub fn message_header(&mut self) -> Result<MessageHeader> {
        let first = self.i32()?;
        if first < 0 {
            let word = first as u32;
            if word & 0xffff_0000 != 0x8001_0000 {
                return Err(self.cur.error(format!(
                    "not a binary-protocol message (version word {word:#010x}, want 0x8001....)"
                )));
            }
            let name = self.string()?;
            let seq_id = self.i32()?;
            return Ok(MessageHeader { name, kind: (word & 0xff) as u8, seq_id });
        }
        let name = String::from_utf8_lossy(self.cur.take(first as usize, "method name")?).into_owned();
        let kind = self.cur.u8("message type")?;
        let seq_id = self.i32()?;
        Ok(MessageHeader { name, kind, seq_id })
    }
}

impl<'a> Protocol<'a> for Binary<'a> {
    fn field(&mut self) -> Result<Option<(TType, i16)>> {
        let code = self.cur.u8("field type")?;
        if code == 0 {
            return Ok(None);
        }
        let ty = self.ttype(code)?;
        Ok(Some((ty, self.i16()?)))
    }

    fn struct_begin(&mut self) -> Result<()> {
        self.cur.enter()
    }

    fn struct_end(&mut self) {
        self.cur.depth = self.cur.depth.saturating_sub(1);
    }

    fn bool(&mut self) -> Result<bool> {
        Ok(self.cur.u8("bool")? != 0)
    }

    fn i8(&mut self) -> Result<i8> {
        Ok(self.cur.u8("byte")? as i8)
    }

    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.cur.array("i16")?))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.cur.array("i32")?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.cur.array("i64")?))
    }

    fn double(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.cur.array("double")?))
    }

    fn binary(&mut self) -> Result<&'a [u8]> {
        let len = self.i32()?;
        if len < 0 {
            return Err(self.cur.error(format!("negative string length {len}")));
        }
        self.cur.take(len as usize, "string")
    }

    fn list(&mut self) -> Result<(TType, usize)> {
        let elem = self.cur.u8("list element type")?;
        let elem = self.ttype(elem)?;
        let n = self.i32()?;
        Ok((elem, self.cur.count(n.into(), "list")?))
    }

    fn map(&mut self) -> Result<(TType, TType, usize)> {
        let k = self.cur.u8("map key type")?;
        let k = self.ttype(k)?;
        let v = self.cur.u8("map value type")?;
        let v = self.ttype(v)?;
        let n = self.i32()?;
        Ok((k, v, self.cur.count(n.into(), "map")?))
    }

    fn offset(&self) -> usize {
        self.cur.pos
    }
}

/// `TCompactProtocol`: zigzag varints, field-id deltas, bools folded into field headers.
#[derive(Debug)]
pub struct Compact<'a> {
    cur: Cursor<'a>,
    last_field: Vec<i16>,
    current_field: i16,
    pending_bool: Option<bool>,
}

/// A compact-protocol message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// Method name.
    pub name: String,
    /// 1 call, 2 reply, 3 exception, 4 oneway.
    pub kind: u8,
    /// Sequence id.
    pub seq_id: i32,
}

impl<'a> Compact<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            cur: Cursor { buf, pos: 0, depth: 0 },
            last_field: Vec::new(),
            current_field: 0,
            pending_bool: None,
        }
    }

    /// Reads a message header (protocol id 0x82, version 1).
    pub fn message_header(&mut self) -> Result<MessageHeader> {
        let id = self.cur.u8("protocol id")?;
        if id != 0x82 {
            return Err(self
                .cur
                .error(format!("not a compact-protocol message (protocol id {id:#04x}, want 0x82)")));
        }
        let vt = self.cur.u8("version and type")?;
        if vt & 0x1f != 1 {
            return Err(self.cur.error(format!("unsupported compact-protocol version {}", vt & 0x1f)));
        }
        let seq_id = self.varint("sequence id")? as u32 as i32;
        let name = self.string()?;
        Ok(MessageHeader { name, kind: vt >> 5, seq_id })
    }

    fn varint(&mut self, what: &str) -> Result<u64> {
        let mut out = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.cur.u8(what)?;
            if shift == 63 && b > 1 {
                return Err(self.cur.error(format!("{what}: varint overflows 64 bits")));
            }
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(self.cur.error(format!("{what}: varint longer than 10 bytes")))
    }

    fn zigzag(&mut self, what: &str) -> Result<i64> {
        let v = self.varint(what)?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn ttype(&self, code: u8) -> Result<TType> {
        Ok(match code {
            1 | 2 => TType::Bool,
            3 => TType::I8,
            4 => TType::I16,
            5 => TType::I32,
            6 => TType::I64,
            7 => TType::Double,
            8 => TType::Binary,
            9 => TType::List,
            10 => TType::Set,
            11 => TType::Map,
            12 => TType::Struct,
            13 => TType::Uuid,
            other => return Err(self.cur.error(format!("unknown compact-protocol type {other}"))),
        })
    }

    fn narrow<T: TryFrom<i64>>(&self, v: i64, what: &str) -> Result<T> {
        T::try_from(v).map_err(|_| self.cur.error(format!("{what} value {v} out of range")))
    }
}

impl<'a> Protocol<'a> for Compact<'a> {
    fn field(&mut self) -> Result<Option<(TType, i16)>> {
        let header = self.cur.u8("field header")?;
        if header == 0 {
            return Ok(None);
        }
        let code = header & 0x0f;
        let delta = i16::from(header >> 4);
        let id = if delta == 0 {
            let v = self.zigzag("field id")?;
            self.narrow(v, "field id")?
        } else {
            self.current_field.checked_add(delta).ok_or_else(|| self.cur.error("field id overflows i16"))?
        };
        let ty = self.ttype(code)?;
        self.pending_bool = match code {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        };
        self.current_field = id;
        Ok(Some((ty, id)))
    }

    fn struct_begin(&mut self) -> Result<()> {
        self.cur.enter()?;
        self.last_field.push(self.current_field);
        self.current_field = 0;
        Ok(())
    }

    fn struct_end(&mut self) {
        self.cur.depth = self.cur.depth.saturating_sub(1);
        self.current_field = self.last_field.pop().unwrap_or(0);
    }

    fn bool(&mut self) -> Result<bool> {
        if let Some(b) = self.pending_bool.take() {
            return Ok(b);
        }
        // A bool inside a list is a whole byte: 1 true, 2 (or 0) false.
        Ok(self.cur.u8("bool")? == 1)
    }

    fn i8(&mut self) -> Result<i8> {
        Ok(self.cur.u8("byte")? as i8)
    }

    fn i16(&mut self) -> Result<i16> {
        let v = self.zigzag("i16")?;
        self.narrow(v, "i16")
    }

    fn i32(&mut self) -> Result<i32> {
        let v = self.zigzag("i32")?;
        self.narrow(v, "i32")
    }

    fn i64(&mut self) -> Result<i64> {
        self.zigzag("i64")
    }

    fn double(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.cur.array("double")?))
    }

    fn binary(&mut self) -> Result<&'a [u8]> {
        let len = self.varint("string length")?;
        let len = usize::try_from(len).map_err(|_| self.cur.error("string length overflows"))?;
        self.cur.take(len, "string")
    }

    fn list(&mut self) -> Result<(TType, usize)> {
        let header = self.cur.u8("list header")?;
        let elem = self.ttype(header & 0x0f)?;
        let n = match header >> 4 {
            15 => {
                let n = self.varint("list size")?;
                i64::try_from(n).unwrap_or(i64::MAX)
            }
            n => i64::from(n),
        };
        Ok((elem, self.cur.count(n, "list")?))
    }

    fn map(&mut self) -> Result<(TType, TType, usize)> {
        let n = self.varint("map size")?;
        let n = self.cur.count(i64::try_from(n).unwrap_or(i64::MAX), "map")?;
        if n == 0 {
            return Ok((TType::Binary, TType::Binary, 0));
        }
        let kv = self.cur.u8("map types")?;
        Ok((self.ttype(kv >> 4)?, self.ttype(kv & 0x0f)?, n))
    }

    fn offset(&self) -> usize {
        self.cur.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_reads_scalars_and_refuses_oversized_lengths() {
        // field i64 id 1 = -2, field string id 2 = "ab", stop.
        let buf = [10, 0, 1, 255, 255, 255, 255, 255, 255, 255, 254, 11, 0, 2, 0, 0, 0, 2, b'a', b'b', 0];
        let mut p = Binary::new(&buf);
        assert_eq!(p.field().expect("field"), Some((TType::I64, 1)));
        assert_eq!(p.i64().expect("i64"), -2);
        assert_eq!(p.field().expect("field"), Some((TType::Binary, 2)));
        assert_eq!(p.string().expect("string"), "ab");
        assert_eq!(p.field().expect("stop"), None);

        let huge_string = [0x7f, 0xff, 0xff, 0xff, b'a'];
        let err = Binary::new(&huge_string).binary().expect_err("too long");
        assert!(err.to_string().contains("truncated: string needs 2147483647 bytes, 1 remain"), "{err}");
        let huge_list = [12, 0x7f, 0xff, 0xff, 0xff];
        let err = Binary::new(&huge_list).list().expect_err("too long");
        assert!(err.to_string().contains("list of 2147483647 elements cannot fit"), "{err}");
        let negative = [12, 0xff, 0xff, 0xff, 0xff];
        assert!(
            Binary::new(&negative)
                .list()
                .expect_err("negative")
                .to_string()
                .contains("negative list size -1")
        );
    }

    #[test]
    fn compact_reads_deltas_bools_and_zigzag() {
        // field 1 bool true (delta 1, type 1), field 3 i32 = -3 (delta 2, type 5, zigzag 5),
        // field 300 i64 = 150 (long form: type 6, zigzag id 600, zigzag 300), stop.
        let buf = [0x11, 0x25, 0x05, 0x06, 0xd8, 0x04, 0xac, 0x02, 0x00];
        let mut p = Compact::new(&buf);
        p.struct_begin().expect("begin");
        assert_eq!(p.field().expect("f1"), Some((TType::Bool, 1)));
        assert!(p.bool().expect("bool"));
        assert_eq!(p.field().expect("f3"), Some((TType::I32, 3)));
        assert_eq!(p.i32().expect("i32"), -3);
        assert_eq!(p.field().expect("f300"), Some((TType::I64, 300)));
        assert_eq!(p.i64().expect("i64"), 150);
        assert_eq!(p.field().expect("stop"), None);
        p.struct_end();
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        // A list of lists of lists ... deeper than MAX_DEPTH, each with one element.
        let mut buf = Vec::new();
        for _ in 0..(MAX_DEPTH + 10) {
            buf.extend_from_slice(&[15, 0, 0, 0, 1]);
        }
        let mut p = Binary::new(&buf);
        let err = p.skip(TType::List).expect_err("too deep");
        assert!(err.to_string().contains("nest deeper"), "{err}");
    }
}
