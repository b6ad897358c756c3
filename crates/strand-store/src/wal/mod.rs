//! Write-ahead log: every acknowledged batch is here before the client hears "ok".
//!
//! ```text
//! wal/00000000000000000007.wal      one segment; a new one at every start and head cut
//! ┌──────────────────────┬────────────────────────────────────────────────────────┬─────
//! │ magic "STRWAL\0" + v │ record                                                 │ ...
//! │ 8 bytes              │ len u32 LE │ crc32c(payload) │ crc32c(len ++ crc) │ payload │
//! └──────────────────────┴────────────────────────────────────────────────────────┴─────
//! store payload = tag byte ++ postcard(record)
//!   tag 1: WalRecord    { received, tenant, batch: spans }
//!   tag 2: LogWalRecord { received, tenant, batch: log records }
//! ```
//!
//! The tag is the payload's version: a binary that meets a tag above the highest it knows
//! (an older strand on a directory a newer one wrote) stops with an error naming it.
//!
//! The magic's last byte is the segment's framing version ([`SEGMENT_VERSION`], now 2).
//! Version 1 segments (8-byte record headers without the header checksum) are still read;
//! a segment of a newer version than this binary stops the start with an error naming it,
//! and nothing is touched.
//!
//! Replay reads every segment in order and never gives up on intact records:
//! - a record whose header checks out but whose payload does not is skipped and counted;
//! - damage to a header (a flipped bit in a length) is skipped by resynchronising on the
//!   next position where a whole record checks out; the damaged stretch is counted;
//! - only when no valid record follows is the rest a torn tail, truncated with a warning;
//! - a segment whose file header cannot be read at all is moved aside to
//!   `<data-dir>/corrupt/<log>/` and counted, never deleted.
//!
//! New records always go to a fresh segment, so nothing is appended after a torn tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strand_core::{LogBatch, SpanBatch};
use tracing::{error, info, warn};

use crate::error::FormatError;
use crate::fs::{AppendFile, FileSystem};

pub mod group_commit;

/// Segment magic without its version byte.
const MAGIC_PREFIX: &[u8; 7] = b"STRWAL\0";
/// Framing version of the segments this binary writes.
pub const SEGMENT_VERSION: u8 = 2;
/// Bytes of a segment's file header.
const MAGIC_LEN: usize = 8;
/// Bytes before each record's payload: length, payload checksum, header checksum.
const RECORD_HEADER: usize = 12;
/// Record header of version 1 segments: length and payload checksum.
const RECORD_HEADER_V1: usize = 8;
/// Tag (and version) byte in front of a store span record's postcard payload.
const PAYLOAD_VERSION: u8 = 1;
/// Tag byte in front of a store log record's postcard payload.
const LOG_PAYLOAD_TAG: u8 = 2;
/// The highest payload tag this binary reads.
const NEWEST_PAYLOAD: u8 = LOG_PAYLOAD_TAG;
/// Largest record accepted on replay; a length field above it is treated as garbage.
pub const MAX_RECORD_BYTES: u32 = 512 * 1024 * 1024;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading, truncating or creating a segment failed.
    #[error("wal i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A segment was written by a newer Strand.
    #[error(
        "wal segment {path} has format version {version}, newer than this strand reads (up to {SEGMENT_VERSION}): run a newer strand on this data directory"
    )]
    NewerVersion {
        /// The segment.
        path: PathBuf,
        /// Its framing version.
        version: u8,
    },
}

impl From<WalError> for strand_core::StoreError {
    fn from(e: WalError) -> Self {
        match e {
            WalError::Io(source) => strand_core::StoreError::Io { path: "wal".into(), source },
            WalError::NewerVersion { path, version } => strand_core::StoreError::NewerFormat {
                path: path.display().to_string(),
                found: u32::from(version),
                supported: u32::from(SEGMENT_VERSION),
            },
        }
    }
}

/// One received batch as the WAL keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalRecord {
    /// When Strand received the batch (drives retention).
    pub received_unix_nano: u64,
    /// Tenant the batch belongs to; empty for the default tenant.
    pub tenant: String,
    /// The spans.
    pub batch: SpanBatch,
}

impl WalRecord {
    /// Encodes the record with its record header (current framing).
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(self.received_unix_nano, &self.tenant, &self.batch)
    }

    /// Encodes a record from its parts, without owning the batch: the same bytes as
    /// [`WalRecord::encode`] of a record holding them.
    pub fn encode_parts(received_unix_nano: u64, tenant: &str, batch: &SpanBatch) -> Vec<u8> {
        encode_tagged(PAYLOAD_VERSION, received_unix_nano, tenant, batch)
    }

    /// Encodes a record as [`WalRecord::encode_parts`] does (the same bytes), also giving
    /// where each span, resource and scope starts in them, so that the head can cut its
    /// spans into a block in sorted order a chunk at a time (see [`SpanAt`]).
    pub fn encode_with_layout(
        received_unix_nano: u64,
        tenant: &str,
        batch: &SpanBatch,
    ) -> (Vec<u8>, RecordLayout) {
        // postcard writes a struct as its fields in order and a sequence as its varint
        // length then its items, so writing the pieces one after another gives the bytes
        // of the whole record.
        fn put<T: Serialize + ?Sized>(v: &T, out: Vec<u8>) -> Vec<u8> {
            postcard::to_extend(v, out).expect("encoding into a Vec cannot fail")
        }
        let mut layout = RecordLayout {
            spans: Vec::with_capacity(batch.span_count()),
            origins: Vec::new(),
            record_len: 0,
        };
        let mut out = vec![0u8; RECORD_HEADER + 1];
        out[RECORD_HEADER] = PAYLOAD_VERSION;
        out = put(&received_unix_nano, out);
        out = put(&tenant, out);
        out = put(&batch.resource_spans.len(), out);
        for rs in &batch.resource_spans {
            let resource = offset(&out);
            out = put(&*rs.resource, out);
            out = put(&rs.scope_spans.len(), out);
            for ss in &rs.scope_spans {
                let origin = layout.origins.len() as u32;
                layout.origins.push(OriginAt { resource, scope: offset(&out) });
                out = put(&*ss.scope, out);
                out = put(&ss.spans.len(), out);
                for sp in &ss.spans {
                    layout.spans.push(SpanAt { offset: offset(&out), origin });
                    out = put(sp, out);
                }
            }
        }
        seal_frame(&mut out);
        shrink(&mut out);
        layout.record_len = offset(&out);
        (out, layout)
    }

    /// Decodes a record as [`WalRecord::encode`] wrote it, header included (checksum
    /// verified).
    pub fn decode_framed(framed: &[u8]) -> Result<Self, FormatError> {
        Self::decode(checked_payload(framed)?)
    }

    fn decode(payload: &[u8]) -> Result<Self, FormatError> {
        match WalEntry::decode(payload)? {
            WalEntry::Spans(r) => Ok(r),
            WalEntry::Logs(_) => Err(FormatError::invalid("a log record where a span record was expected")),
        }
    }
}

/// Where the pieces of an encoded span record start (see
/// [`WalRecord::encode_with_layout`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordLayout {
    /// Each span, in the batch's order.
    pub spans: Vec<SpanAt>,
    /// Each scope group (a scope of a resource), in the batch's order.
    pub origins: Vec<OriginAt>,
    /// Bytes of the framed record: a check that a layout goes with its record.
    pub record_len: u32,
}

/// Where a span starts in its encoded record, and its scope group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanAt {
    /// Offset of the span's encoding in the framed record.
    pub offset: u32,
    /// Index of its scope group in [`RecordLayout::origins`].
    pub origin: u32,
}

/// Where the resource and scope of a scope group start in the encoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginAt {
    /// Offset of the resource's encoding.
    pub resource: u32,
    /// Offset of the scope's encoding.
    pub scope: u32,
}

/// An offset into a record being encoded. Records are far below 4 GiB (requests are
/// limited to tens of MiB); a larger one gets offsets past its end, which decode to an
/// error rather than to a wrong value.
fn offset(out: &[u8]) -> u32 {
    u32::try_from(out.len()).unwrap_or(u32::MAX)
}

/// Decodes the value whose encoding starts at `offset` of a framed record (from a
/// [`RecordLayout`] of it).
pub fn decode_at<T: serde::de::DeserializeOwned>(framed: &[u8], offset: u32) -> Result<T, FormatError> {
    let bytes = framed
        .get(offset as usize..)
        .filter(|_| offset as usize >= RECORD_HEADER)
        .ok_or_else(|| FormatError::invalid("offset past the record's end"))?;
    Ok(postcard::take_from_bytes(bytes)?.0)
}

/// One received batch of log records as the WAL keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogWalRecord {
    /// When Strand received the batch (drives retention).
    pub received_unix_nano: u64,
    /// Tenant the batch belongs to; empty for the default tenant.
    pub tenant: String,
    /// The records.
    pub batch: LogBatch,
}

impl LogWalRecord {
    /// Encodes a record from its parts, header included.
    pub fn encode_parts(received_unix_nano: u64, tenant: &str, batch: &LogBatch) -> Vec<u8> {
        encode_tagged(LOG_PAYLOAD_TAG, received_unix_nano, tenant, batch)
    }

    /// Decodes a record as [`LogWalRecord::encode_parts`] wrote it (checksum verified).
    pub fn decode_framed(framed: &[u8]) -> Result<Self, FormatError> {
        match WalEntry::decode(checked_payload(framed)?)? {
            WalEntry::Logs(r) => Ok(r),
            WalEntry::Spans(_) => Err(FormatError::invalid("a span record where a log record was expected")),
        }
    }
}

/// Encodes a store record of either kind from its parts, without owning the batch: the
/// fields of [`WalRecord`] and [`LogWalRecord`] by reference, in the same order, so
/// postcard writes the same bytes as for the owned record.
fn encode_tagged<B: Serialize>(tag: u8, received_unix_nano: u64, tenant: &str, batch: &B) -> Vec<u8> {
    #[derive(Serialize)]
    struct Parts<'a, B> {
        received_unix_nano: u64,
        tenant: &'a str,
        batch: &'a B,
    }
    let mut out = vec![0u8; RECORD_HEADER + 1];
    out[RECORD_HEADER] = tag;
    let parts = Parts { received_unix_nano, tenant, batch };
    let mut out = postcard::to_extend(&parts, out).expect("encoding into a Vec cannot fail");
    seal_frame(&mut out);
    shrink(&mut out);
    out
}

/// Gives back the room a record's buffer grew beyond its bytes (up to half of it): the
/// head holds records for minutes.
fn shrink(out: &mut Vec<u8>) {
    if out.capacity() - out.len() > out.len() / 8 {
        out.shrink_to_fit();
    }
}

/// A store WAL record of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum WalEntry {
    /// Spans.
    Spans(WalRecord),
    /// Log records.
    Logs(LogWalRecord),
}

impl WalEntry {
    fn decode(payload: &[u8]) -> Result<Self, FormatError> {
        match payload.split_first() {
            Some((&PAYLOAD_VERSION, rest)) => Ok(WalEntry::Spans(postcard::from_bytes(rest)?)),
            Some((&LOG_PAYLOAD_TAG, rest)) => Ok(WalEntry::Logs(postcard::from_bytes(rest)?)),
            Some((&v, _)) => Err(FormatError::UnknownVersion { what: "wal payload", found: u32::from(v) }),
            None => Err(FormatError::invalid("empty payload")),
        }
    }
}

/// The payload of a framed record, its checksum verified.
fn checked_payload(framed: &[u8]) -> Result<&[u8], FormatError> {
    let header =
        framed.get(..RECORD_HEADER).ok_or_else(|| FormatError::invalid("record shorter than its header"))?;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = &framed[RECORD_HEADER..];
    if crc32c::crc32c(payload) != crc {
        return Err(FormatError::Checksum);
    }
    Ok(payload)
}

/// Frames an opaque payload as a record: the log's format for users other than the store
/// (the sampler's pending log). [`Wal::open_payloads`] hands such payloads back.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    out.extend_from_slice(payload);
    seal_frame(&mut out);
    out
}

/// Fills in the record header of `out` (header bytes, then payload).
fn seal_frame(out: &mut [u8]) {
    let payload_len = out.len() - RECORD_HEADER;
    let crc = crc32c::crc32c(&out[RECORD_HEADER..]);
    out[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[0..8]);
    out[8..12].copy_from_slice(&header_crc.to_le_bytes());
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    /// Segments read.
    pub segments: u64,
    /// Records replayed.
    pub records: u64,
    /// Records skipped because their checksum or content was bad, and damaged stretches
    /// skipped to the next valid record.
    pub corrupt_records: u64,
    /// Torn tails truncated.
    pub torn_tails: u64,
    /// Segments whose file header could not be read, moved aside unread.
    pub segments_set_aside: u64,
}

/// The log. Owned by one writer thread.
pub struct Wal {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    seq: u64,
    file: Box<dyn AppendFile>,
    good_len: u64,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".wal")?.parse().ok()
}

impl Wal {
    /// Opens the log in `dir`, replaying every existing segment, and starts a new segment
    /// for writes.
    ///
    /// Records are handed to `on_record` one at a time, in order, as their framed bytes
    /// (header and payload, as [`WalRecord::encode`] writes them; a zero-copy slice of the
    /// segment read into memory, or a re-framed copy for a version 1 segment or a repaired
    /// header) and decoded, so replay holds at most one decoded record.
    ///
    /// A record whose payload version is newer than this binary's stops the open with
    /// [`WalError::NewerVersion`] before any file is changed.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        mut on_record: impl FnMut(Bytes, WalEntry),
    ) -> Result<(Self, ReplayStats), WalError> {
        let newer_payload = |payload: &[u8]| payload.first().copied().filter(|v| *v > NEWEST_PAYLOAD);
        Self::open_with(fs, dir, newer_payload, |path, framed, stats| {
            match WalEntry::decode(&framed[RECORD_HEADER..]) {
                Ok(record) => {
                    stats.records += 1;
                    on_record(framed, record);
                }
                Err(e) => {
                    warn!(segment = %path.display(), error = %e, "skipped undecodable wal record");
                    stats.corrupt_records += 1;
                }
            }
        })
    }

    /// Opens a log of opaque payloads (written with [`frame`]), handing each checksummed
    /// payload to `on_payload` with the number of the segment holding it, in order. Damage
    /// is handled as in [`Wal::open`].
    pub fn open_payloads(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        mut on_payload: impl FnMut(u64, &[u8]),
    ) -> Result<(Self, ReplayStats), WalError> {
        Self::open_with(
            fs,
            dir,
            |_| None,
            |path, framed, stats| {
                stats.records += 1;
                on_payload(segment_seq(path).unwrap_or_default(), &framed[RECORD_HEADER..]);
            },
        )
    }

    fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        newer_payload: impl Fn(&[u8]) -> Option<u8>,
        mut on_framed: impl FnMut(&Path, Bytes, &mut ReplayStats),
    ) -> Result<(Self, ReplayStats), WalError> {
        fs.create_dir_all(dir)?;
        let mut stats = ReplayStats::default();
        let mut last_seq = 0;
        let mut segments: Vec<(u64, PathBuf)> =
            fs.list(dir)?.into_iter().filter_map(|p| Some((segment_seq(&p)?, p))).collect();
        segments.sort();
        // First every segment is read and parsed, and every version checked: nothing is
        // changed until this binary is known to read all of it.
        let mut parsed = Vec::with_capacity(segments.len());
        for (seq, path) in &segments {
            last_seq = *seq;
            let bytes = Bytes::from(fs.read_file(path)?);
            if let Some(version) = newer_version(&bytes) {
                return Err(WalError::NewerVersion { path: path.clone(), version });
            }
            let segment = parse_segment(&bytes);
            let newer = segment
                .iter()
                .find_map(|p| p.records.iter().find_map(|r| newer_payload(r.payload(&bytes, p.framing))));
            if let Some(version) = newer {
                return Err(WalError::NewerVersion { path: path.clone(), version });
            }
            parsed.push((path, bytes, segment));
        }
        for (path, bytes, segment) in parsed {
            stats.segments += 1;
            let Some(segment) = segment else {
                set_aside(fs.as_ref(), dir, path, None)?;
                stats.segments_set_aside += 1;
                continue;
            };
            if segment.header_damaged {
                // Its records were found without the file header; a copy of the file as it
                // was goes aside for inspection.
                set_aside(fs.as_ref(), dir, path, Some(&bytes))?;
                stats.segments_set_aside += 1;
            }
            stats.corrupt_records += segment.corrupt;
            if let Some(at) = segment.torn_at {
                warn!(segment = %path.display(), offset = at, len = bytes.len(), "truncated torn wal record");
                stats.torn_tails += 1;
                fs.truncate(path, at)?;
            }
            if segment.repaired > 0 {
                warn!(segment = %path.display(), count = segment.repaired, "recovered wal records behind damaged headers");
            }
            for record in &segment.records {
                let framed = match record {
                    Found::Framed(range) if segment.framing == Framing::V2 => bytes.slice(range.clone()),
                    _ => Bytes::from(frame(record.payload(&bytes, segment.framing))),
                };
                on_framed(path, framed, &mut stats);
            }
            if segment.corrupt > 0 {
                warn!(segment = %path.display(), count = segment.corrupt, "skipped corrupt wal records");
            }
        }
        if stats.segments > 0 {
            info!(segments = stats.segments, records = stats.records, "replayed wal");
        }
        let seq = last_seq + 1;
        let (file, good_len) = Self::create_segment(fs.as_ref(), dir, seq)?;
        Ok((Self { fs, dir: dir.to_path_buf(), seq, file, good_len }, stats))
    }

    fn create_segment(
        fs: &dyn FileSystem,
        dir: &Path,
        seq: u64,
    ) -> std::io::Result<(Box<dyn AppendFile>, u64)> {
        let path = segment_path(dir, seq);
        let mut file = fs.open_append(&path)?;
        if file.len() == 0 {
            file.append(&magic(SEGMENT_VERSION))?;
            file.sync()?;
            fs.sync_dir(dir)?;
        }
        let len = file.len();
        Ok((file, len))
    }

    /// Appends an encoded record (see [`WalRecord::encode`]). On failure the segment is cut
    /// back to its last good length so a later append does not follow garbage.
    pub fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        if record.len() > RECORD_HEADER + MAX_RECORD_BYTES as usize {
            // Replay would not accept it: refuse it now rather than lose it later.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("wal record of {} bytes is over the {MAX_RECORD_BYTES}-byte limit", record.len()),
            ));
        }
        if let Err(e) = self.file.append(record) {
            // Best effort: if even the truncate fails, replay will treat the rest as torn.
            let _ = self.file.truncate(self.good_len);
            return Err(e);
        }
        self.good_len = self.file.len();
        Ok(())
    }

    /// Makes all appended records durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync()
    }

    /// Seals the current segment and starts the next; returns the sealed segment's number.
    pub fn rotate(&mut self) -> std::io::Result<u64> {
        self.file.sync()?;
        let sealed = self.seq;
        let (file, len) = Self::create_segment(self.fs.as_ref(), &self.dir, sealed + 1)?;
        self.file = file;
        self.good_len = len;
        self.seq = sealed + 1;
        Ok(sealed)
    }

    /// The segment being written.
    pub fn current_segment(&self) -> u64 {
        self.seq
    }

    /// Deletes every segment numbered `through` or lower (their content is in blocks).
    pub fn remove_through(fs: &dyn FileSystem, dir: &Path, through: u64) -> std::io::Result<()> {
        for path in fs.list(dir)? {
            if segment_seq(&path).is_some_and(|s| s <= through) {
                fs.remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Total bytes of all segments.
    pub fn disk_bytes(fs: &dyn FileSystem, dir: &Path) -> u64 {
        fs.list(dir)
            .unwrap_or_default()
            .iter()
            .filter(|p| segment_seq(p).is_some())
            .filter_map(|p| fs.file_size(p).ok())
            .sum()
    }
}

/// Puts a segment aside under `<dir>/../corrupt/<dir name>/` so nothing deletes it with the
/// replayed segments: moved when `copy` is `None`, else a copy of `copy` is written (the
/// segment itself stays to be replayed). An existing file there is never overwritten.
fn set_aside(fs: &dyn FileSystem, dir: &Path, path: &Path, copy: Option<&[u8]>) -> std::io::Result<()> {
    let log = dir.file_name().map(ToOwned::to_owned).unwrap_or_else(|| "wal".into());
    let aside_dir = dir.parent().unwrap_or(dir).join("corrupt").join(log);
    fs.create_dir_all(&aside_dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("segment.wal").to_owned();
    let taken = fs.list(&aside_dir)?;
    let aside = (0..)
        .map(|n| aside_dir.join(if n == 0 { name.clone() } else { format!("{name}.{n}") }))
        .find(|p| !taken.contains(p))
        .expect("some name is free");
    error!(segment = %path.display(), copy_at = %aside.display(), "wal segment with an unreadable file header set aside");
    match copy {
        Some(bytes) => fs.write_file(&aside, bytes)?,
        None => fs.rename(path, &aside)?,
    }
    fs.sync_dir(&aside_dir)
}

fn magic(version: u8) -> [u8; MAGIC_LEN] {
    let mut m = [0u8; MAGIC_LEN];
    m[..7].copy_from_slice(MAGIC_PREFIX);
    m[7] = version;
    m
}

/// The version of a segment written by a newer Strand, if it is one.
fn newer_version(bytes: &[u8]) -> Option<u8> {
    (bytes.len() >= MAGIC_LEN && bytes.starts_with(MAGIC_PREFIX) && bytes[7] > SEGMENT_VERSION)
        .then(|| bytes[7])
}

/// How a segment's records are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `len | crc(payload)`.
    V1,
    /// `len | crc(payload) | crc(len ++ crc(payload))`.
    V2,
}

/// What the bytes at one offset of a segment are.
#[derive(Debug, PartialEq, Eq)]
enum At {
    /// A whole, checked record ending at this offset.
    Record(usize),
    /// A record whose header checks out but whose payload does not; it ends here.
    BadPayload(usize),
    /// A record whose header checks out but which runs past the end of the segment.
    Cut,
    /// Not the start of a record.
    Garbage,
}

impl Framing {
    fn header_len(self) -> usize {
        match self {
            Framing::V1 => RECORD_HEADER_V1,
            Framing::V2 => RECORD_HEADER,
        }
    }

    /// What starts at `off`; `work` counts the bytes checksummed, so a search for the
    /// next record can be bounded.
    fn at(self, bytes: &[u8], off: usize, work: &mut usize) -> At {
        let rest = &bytes[off..];
        let header = self.header_len();
        if rest.len() < header {
            return At::Garbage;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        // No record is empty (eight zero bytes would otherwise pass for one).
        let header_ok = len > 0
            && len <= MAX_RECORD_BYTES
            && match self {
                // Version 1 has no header checksum: only a whole record vouches for its length.
                Framing::V1 => true,
                Framing::V2 => {
                    crc32c::crc32c(&rest[..8]) == u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]])
                }
            };
        if !header_ok {
            return At::Garbage;
        }
        let end = header + len as usize;
        if end > rest.len() {
            return if self == Framing::V2 { At::Cut } else { At::Garbage };
        }
        *work += len as usize;
        if crc32c::crc32c(&rest[header..end]) == crc {
            At::Record(off + end)
        } else if self == Framing::V2 {
            At::BadPayload(off + end)
        } else {
            At::Garbage
        }
    }

    /// Whether `payload` is the payload of the record whose damaged header starts at `off`:
    /// the header's payload checksum still matches it.
    fn vouches_for(self, bytes: &[u8], off: usize, payload: std::ops::Range<usize>) -> bool {
        let header = self.header_len();
        off + header <= payload.start
            && payload.start < payload.end
            && bytes.len() >= off + 8
            && crc32c::crc32c(&bytes[payload])
                == u32::from_le_bytes([bytes[off + 4], bytes[off + 5], bytes[off + 6], bytes[off + 7]])
    }
}

/// A record found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// A record as written: header and payload.
    Framed(std::ops::Range<usize>),
    /// The payload of a record whose header was damaged but whose payload checks out
    /// against it: replayed re-framed.
    Payload(std::ops::Range<usize>),
}

impl Found {
    fn payload<'b>(&self, bytes: &'b [u8], framing: Framing) -> &'b [u8] {
        match self {
            Found::Framed(r) => &bytes[r.start + framing.header_len()..r.end],
            Found::Payload(r) => &bytes[r.clone()],
        }
    }
}

struct ParsedSegment {
    framing: Framing,
    /// The records that passed their checksums, in order.
    records: Vec<Found>,
    /// Records lost to damage (bad payloads, damaged stretches).
    corrupt: u64,
    /// Records recovered behind a damaged header.
    repaired: u64,
    /// Where a torn tail starts, if the segment ends in one.
    torn_at: Option<u64>,
    /// The segment's file header was damaged; its records were found without it.
    header_damaged: bool,
}

/// Parses a segment; `None` when neither its file header nor a search for records finds
/// anything this binary reads.
fn parse_segment(bytes: &[u8]) -> Option<ParsedSegment> {
    if bytes.len() < MAGIC_LEN {
        // A segment cut inside its own file header never held a record.
        let torn = magic(SEGMENT_VERSION).starts_with(bytes) || magic(1).starts_with(bytes);
        return torn.then(|| ParsedSegment {
            framing: Framing::V2,
            records: Vec::new(),
            corrupt: 0,
            repaired: 0,
            torn_at: Some(0),
            header_damaged: false,
        });
    }
    if bytes[..MAGIC_LEN] == magic(2) {
        return Some(parse_records(bytes, Framing::V2));
    }
    if bytes[..MAGIC_LEN] == magic(1) {
        return Some(parse_records(bytes, Framing::V1));
    }
    // A damaged file header: look for records of either framing behind it.
    [Framing::V2, Framing::V1]
        .into_iter()
        .map(|f| parse_records(bytes, f))
        .find(|p| !p.records.is_empty())
        .map(|p| ParsedSegment { header_damaged: true, ..p })
}

fn parse_records(bytes: &[u8], framing: Framing) -> ParsedSegment {
    let mut out = ParsedSegment {
        framing,
        records: Vec::new(),
        corrupt: 0,
        repaired: 0,
        torn_at: None,
        header_damaged: false,
    };
    // Searching for the next record after damage checksums candidate payloads; version 1
    // headers vouch for nothing, so the search is bounded (past it, the rest is torn).
    let budget = bytes.len().saturating_mul(4).saturating_add(64 << 20);
    let mut work = 0;
    let mut off = MAGIC_LEN;
    while off < bytes.len() {
        match framing.at(bytes, off, &mut work) {
            At::Record(end) => {
                out.records.push(Found::Framed(off..end));
                off = end;
            }
            // At the very end, a bad payload is the usual torn write (length written,
            // data not): cut it off. Anywhere else, skip the one damaged record.
            At::BadPayload(end) if end < bytes.len() => {
                out.corrupt += 1;
                off = end;
            }
            At::BadPayload(_) | At::Cut => {
                out.torn_at = Some(off as u64);
                break;
            }
            At::Garbage => {
                let mut next = None;
                for p in off + 1..bytes.len() {
                    if work > budget {
                        break;
                    }
                    if matches!(framing.at(bytes, p, &mut work), At::Record(_)) {
                        next = Some(p);
                        break;
                    }
                }
                let end = next.unwrap_or(bytes.len());
                // A damaged length or header checksum leaves the payload intact: its own
                // checksum, still in the header, says so.
                let payload = off + framing.header_len()..end;
                if framing.vouches_for(bytes, off, payload.clone()) {
                    out.records.push(Found::Payload(payload));
                    out.repaired += 1;
                } else if next.is_some() {
                    out.corrupt += 1;
                } else {
                    out.torn_at = Some(off as u64);
                    break;
                }
                off = end;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;
    use crate::testdata::batch;
    use strand_core::{ScopeSpans, Span};

    fn record(n: u8) -> WalRecord {
        WalRecord { received_unix_nano: u64::from(n), tenant: String::new(), batch: batch(n, 3) }
    }

    /// The layout points at every span, resource and scope of a batch with several
    /// resources and scopes, and the bytes are those of the plain encoding.
    #[test]
    fn a_record_encoded_with_its_layout_is_the_same_record() {
        let mut b = batch(1, 3);
        let mut other = batch(2, 2).resource_spans.remove(0);
        other.scope_spans.push(ScopeSpans {
            scope: Arc::new(strand_core::Scope { name: "second".into(), ..Default::default() }),
            spans: batch(3, 4).resource_spans.remove(0).scope_spans.remove(0).spans,
        });
        b.resource_spans.push(other);
        let (bytes, layout) = WalRecord::encode_with_layout(77, "t", &b);
        assert_eq!(bytes, WalRecord::encode_parts(77, "t", &b));
        let mut want = Vec::new();
        for rs in &b.resource_spans {
            for ss in &rs.scope_spans {
                for sp in &ss.spans {
                    want.push((sp.clone(), (*rs.resource).clone(), (*ss.scope).clone()));
                }
            }
        }
        assert_eq!((layout.spans.len(), layout.origins.len()), (9, 3));
        for (at, (span, resource, scope)) in layout.spans.iter().zip(&want) {
            let origin = layout.origins[at.origin as usize];
            assert_eq!(&decode_at::<Span>(&bytes, at.offset).expect("a span"), span);
            assert_eq!(
                &decode_at::<strand_core::Resource>(&bytes, origin.resource).expect("a resource"),
                resource
            );
            assert_eq!(&decode_at::<strand_core::Scope>(&bytes, origin.scope).expect("a scope"), scope);
        }
        assert!(decode_at::<Span>(&bytes, bytes.len() as u32 + 1).is_err());
        assert!(decode_at::<Span>(&bytes, 0).is_err(), "the header is not a value");
    }

    fn write_segment(records: &[WalRecord]) -> Vec<u8> {
        let mut bytes = magic(SEGMENT_VERSION).to_vec();
        for r in records {
            bytes.extend(r.encode());
        }
        bytes
    }

    /// The records a parse found, decoded.
    fn decoded(parsed: &ParsedSegment, bytes: &[u8]) -> Vec<WalRecord> {
        parsed
            .records
            .iter()
            .map(|r| WalRecord::decode(r.payload(bytes, parsed.framing)).expect("valid"))
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let recs = [record(1), record(2)];
        let bytes = write_segment(&recs);
        let parsed = parse_segment(&bytes).expect("readable segment");
        assert_eq!((parsed.corrupt, parsed.repaired, parsed.torn_at), (0, 0, None));
        assert_eq!(decoded(&parsed, &bytes), recs);
        let Found::Framed(first) = &parsed.records[0] else { panic!("framed") };
        assert_eq!(WalRecord::decode_framed(&bytes[first.clone()]).expect("valid"), recs[0]);
    }

    #[test]
    fn torn_tail_is_found_at_every_cut() {
        let recs = [record(1), record(2)];
        let bytes = write_segment(&recs);
        let first_end = MAGIC_LEN + recs[0].encode().len();
        for cut in first_end + 1..bytes.len() {
            let parsed = parse_segment(&bytes[..cut]).expect("readable segment");
            assert_eq!(parsed.records.len(), 1, "cut at {cut}");
            assert_eq!(parsed.torn_at, Some(first_end as u64), "cut at {cut}");
            assert_eq!(parsed.corrupt, 0);
        }
    }

    #[test]
    fn corrupt_middle_record_is_skipped_and_counted() {
        let recs = [record(1), record(2), record(3)];
        let mut bytes = write_segment(&recs);
        let second = MAGIC_LEN + recs[0].encode().len() + 12;
        bytes[second] ^= 0xff;
        let parsed = parse_segment(&bytes).expect("readable segment");
        assert_eq!((parsed.corrupt, parsed.torn_at), (1, None));
        assert_eq!(decoded(&parsed, &bytes), [recs[0].clone(), recs[2].clone()]);
    }

    #[test]
    fn a_damaged_length_loses_nothing_when_the_payload_is_intact() {
        let recs: Vec<_> = (1..=5).map(record).collect();
        let mut bytes = write_segment(&recs);
        let second = MAGIC_LEN + recs[0].encode().len();
        // One flipped bit in the second record's length: its header no longer checks out,
        // but its payload still matches the payload checksum beside the length.
        bytes[second + 2] ^= 0x10;
        let parsed = parse_segment(&bytes).expect("readable segment");
        assert_eq!((parsed.corrupt, parsed.repaired, parsed.torn_at), (0, 1, None));
        assert_eq!(decoded(&parsed, &bytes), recs);
        // The last record's length damaged too: recovered up to the end of the segment.
        let last = bytes.len() - recs[4].encode().len();
        bytes[last] ^= 0x01;
        let parsed = parse_segment(&bytes).expect("readable segment");
        assert_eq!((parsed.corrupt, parsed.repaired, parsed.torn_at), (0, 2, None));
        assert_eq!(decoded(&parsed, &bytes), recs);
    }

    #[test]
    fn a_damaged_length_and_payload_lose_that_record_only() {
        let recs: Vec<_> = (1..=5).map(record).collect();
        let mut bytes = write_segment(&recs);
        let second = MAGIC_LEN + recs[0].encode().len();
        bytes[second + 2] ^= 0x10;
        bytes[second + 40] ^= 0x10;
        let parsed = parse_segment(&bytes).expect("readable segment");
        assert_eq!((parsed.corrupt, parsed.repaired, parsed.torn_at), (1, 0, None), "nothing truncated");
        assert_eq!(decoded(&parsed, &bytes), [&recs[..1], &recs[2..]].concat());
    }

    #[test]
    fn version_1_segments_resynchronise_too() {
        let recs: Vec<_> = (1..=4).map(record).collect();
        let mut bytes = magic(1).to_vec();
        for r in &recs {
            let framed = r.encode();
            let payload = &framed[RECORD_HEADER..];
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        let second = MAGIC_LEN + RECORD_HEADER_V1 + recs[0].encode().len() - RECORD_HEADER;
        bytes[second + 1] ^= 0x01;
        let parsed = parse_segment(&bytes).expect("readable segment");
        assert_eq!(
            (parsed.framing, parsed.corrupt, parsed.repaired, parsed.torn_at),
            (Framing::V1, 0, 1, None)
        );
        assert_eq!(decoded(&parsed, &bytes), recs);
    }

    #[test]
    fn a_damaged_file_header_still_replays_its_records_and_keeps_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal_dir = dir.path().join("wal");
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let (mut wal, _) = Wal::open(fs.clone(), &wal_dir, |_, _| {}).expect("open");
        wal.append(&record(1).encode()).expect("append");
        wal.append(&record(2).encode()).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let seg1 = segment_path(&wal_dir, 1);
        let mut bytes = std::fs::read(&seg1).expect("read");
        bytes[0] ^= 0xff;
        std::fs::write(&seg1, &bytes).expect("write");
        let mut replayed = Vec::new();
        let (_, stats) = Wal::open(fs.clone(), &wal_dir, |_, r| replayed.push(r)).expect("reopen");
        assert_eq!(replayed, [WalEntry::Spans(record(1)), WalEntry::Spans(record(2))]);
        assert_eq!(stats.segments_set_aside, 1);
        let aside = dir.path().join("corrupt/wal").join(seg1.file_name().expect("name"));
        assert_eq!(std::fs::read(&aside).expect("a copy is kept"), bytes);
    }

    #[test]
    fn an_unreadable_segment_is_set_aside_not_deleted_and_newer_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal_dir = dir.path().join("wal");
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let (wal, _) = Wal::open(fs.clone(), &wal_dir, |_, _| {}).expect("open");
        drop(wal);
        let garbage = vec![0x5a_u8; 300];
        std::fs::write(segment_path(&wal_dir, 1), &garbage).expect("write");
        let (wal, stats) =
            Wal::open(fs.clone(), &wal_dir, |_, _| panic!("nothing to replay")).expect("reopen");
        assert_eq!(stats.segments_set_aside, 1);
        Wal::remove_through(fs.as_ref(), &wal_dir, wal.current_segment()).expect("remove");
        let aside = dir.path().join("corrupt/wal").join(segment_path(&wal_dir, 1).file_name().expect("name"));
        assert_eq!(std::fs::read(&aside).expect("set aside, not deleted"), garbage);

        // A newer framing, and a record with a newer payload version: refused, untouched.
        std::fs::write(segment_path(&wal_dir, 7), magic(9)).expect("write");
        let err = Wal::open(fs.clone(), &wal_dir, |_, _| {}).err().expect("a newer segment is refused");
        assert!(err.to_string().contains("format version 9"), "{err}");
        assert!(segment_path(&wal_dir, 7).exists(), "the newer segment is left alone");
        std::fs::remove_file(segment_path(&wal_dir, 7)).expect("remove");
        let mut newer = magic(SEGMENT_VERSION).to_vec();
        newer.extend(frame(&[NEWEST_PAYLOAD + 1, 0, 0]));
        newer.extend(&record(3).encode()[..20]);
        std::fs::write(segment_path(&wal_dir, 8), &newer).expect("write");
        let err = Wal::open(fs, &wal_dir, |_, _| {}).err().expect("a newer record is refused");
        assert!(err.to_string().contains(&format!("format version {}", NEWEST_PAYLOAD + 1)), "{err}");
        assert_eq!(
            std::fs::read(segment_path(&wal_dir, 8)).expect("read"),
            newer,
            "its torn tail is not cut"
        );
    }

    #[test]
    fn log_records_replay_beside_span_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let (mut wal, _) = Wal::open(fs.clone(), dir.path(), |_, _| {}).expect("open");
        let logs = crate::testdata::log_batch(4, 3);
        let encoded = LogWalRecord::encode_parts(9, "", &logs);
        wal.append(&record(1).encode()).expect("append");
        wal.append(&encoded).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let mut replayed = Vec::new();
        Wal::open(fs, dir.path(), |f, r| replayed.push((f, r))).expect("reopen");
        let want = LogWalRecord { received_unix_nano: 9, tenant: String::new(), batch: logs };
        assert_eq!(replayed[0].1, WalEntry::Spans(record(1)));
        assert_eq!(replayed[1].1, WalEntry::Logs(want.clone()));
        assert_eq!(LogWalRecord::decode_framed(&replayed[1].0).expect("decodes"), want);
        assert!(LogWalRecord::decode_framed(&replayed[0].0).is_err(), "kinds are told apart");
        assert!(WalRecord::decode_framed(&replayed[1].0).is_err(), "kinds are told apart");
    }

    #[test]
    fn open_replays_truncates_and_starts_a_new_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let mut replayed = Vec::new();
        let (mut wal, _) = Wal::open(fs.clone(), dir.path(), |_, r| replayed.push(r)).expect("open");
        assert!(replayed.is_empty());
        wal.append(&record(1).encode()).expect("append");
        let half = record(2).encode();
        wal.append(&half[..half.len() / 2]).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let mut framed = Vec::new();
        let (wal, stats) = Wal::open(fs.clone(), dir.path(), |f, r| framed.push((f, r))).expect("reopen");
        assert_eq!(framed.len(), 1);
        assert_eq!(framed[0].1, WalEntry::Spans(record(1)));
        assert_eq!(framed[0].0, record(1).encode(), "the framed bytes are exactly what was written");
        assert_eq!(stats.torn_tails, 1);
        assert_eq!(wal.current_segment(), 2);
        let seg1 = segment_path(dir.path(), 1);
        assert_eq!(fs.file_size(&seg1).expect("size"), (MAGIC_LEN + record(1).encode().len()) as u64);
    }
}
