//! Write-ahead log: every acknowledged batch is here before the client hears "ok".
//!
//! ```text
//! wal/00000000000000000007.wal      one segment; a new one at every start and head cut
//! ┌──────────────────────┬──────────────────────────────────────────────┬─────
//! │ magic "STRWAL\0\x01" │ record                                       │ ...
//! │ 8 bytes              │ len u32 LE │ crc32c(payload) u32 LE │ payload │
//! └──────────────────────┴──────────────────────────────────────────────┴─────
//! payload = version byte (1) ++ postcard(WalRecord { received_unix_nano, tenant, batch })
//! ```
//!
//! Replay reads every segment in order. A record cut short or failing its checksum at the
//! very end of a segment is a torn write: the segment is truncated there with a warning.
//! A failing record followed by valid data is skipped and counted. Neither stops the start.
//! New records always go to a fresh segment, so nothing is appended after a torn tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strand_core::SpanBatch;
use tracing::{info, warn};

use crate::fs::{AppendFile, FileSystem};

const MAGIC: &[u8; 8] = b"STRWAL\0\x01";
/// Bytes before each record's payload: length and checksum.
const RECORD_HEADER: usize = 8;
const PAYLOAD_VERSION: u8 = 1;
/// Largest record accepted on replay; a length field above it is treated as garbage.
pub const MAX_RECORD_BYTES: u32 = 512 * 1024 * 1024;

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
    /// Encodes the record with its length and checksum header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; RECORD_HEADER + 1];
        out[RECORD_HEADER] = PAYLOAD_VERSION;
        let mut out = postcard::to_extend(self, out).expect("encoding into a Vec cannot fail");
        seal_frame(&mut out);
        out
    }

    /// Decodes a record as [`WalRecord::encode`] wrote it, header included (checksum
    /// verified).
    pub fn decode_framed(framed: &[u8]) -> Result<Self, String> {
        let header = framed.get(..RECORD_HEADER).ok_or("record shorter than its header")?;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let payload = &framed[RECORD_HEADER..];
        if crc32c::crc32c(payload) != crc {
            return Err("record checksum mismatch".into());
        }
        Self::decode(payload)
    }

    fn decode(payload: &[u8]) -> Result<Self, String> {
        match payload.split_first() {
            Some((&PAYLOAD_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!("unknown payload version {v}")),
            None => Err("empty payload".into()),
        }
    }
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

/// Fills in the length and checksum header of `out` (header bytes, then payload).
fn seal_frame(out: &mut [u8]) {
    let payload_len = out.len() - RECORD_HEADER;
    let crc = crc32c::crc32c(&out[RECORD_HEADER..]);
    out[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    /// Segments read.
    pub segments: u64,
    /// Records replayed.
    pub records: u64,
    /// Records skipped because their checksum or content was bad.
    pub corrupt_records: u64,
    /// Torn tails truncated.
    pub torn_tails: u64,
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
    /// (header and payload, as [`WalRecord::encode`] wrote them; a zero-copy slice of the
    /// segment read into memory) and decoded, so replay holds at most one decoded record and
    /// makes no copy per record.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        mut on_record: impl FnMut(Bytes, WalRecord),
    ) -> std::io::Result<(Self, ReplayStats)> {
        Self::open_with(fs, dir, |path, framed, stats| match WalRecord::decode(&framed[RECORD_HEADER..]) {
            Ok(record) => {
                stats.records += 1;
                on_record(framed, record);
            }
            Err(e) => {
                warn!(segment = %path.display(), error = %e, "skipped undecodable wal record");
                stats.corrupt_records += 1;
            }
        })
    }

    /// Opens a log of opaque payloads (written with [`frame`]), handing each checksummed
    /// payload to `on_payload` with the number of the segment holding it, in order. Torn
    /// tails and corrupt records are handled as in [`Wal::open`].
    pub fn open_payloads(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        mut on_payload: impl FnMut(u64, &[u8]),
    ) -> std::io::Result<(Self, ReplayStats)> {
        Self::open_with(fs, dir, |path, framed, stats| {
            stats.records += 1;
            on_payload(segment_seq(path).unwrap_or_default(), &framed[RECORD_HEADER..]);
        })
    }

    fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        mut on_framed: impl FnMut(&Path, Bytes, &mut ReplayStats),
    ) -> std::io::Result<(Self, ReplayStats)> {
        fs.create_dir_all(dir)?;
        let mut stats = ReplayStats::default();
        let mut last_seq = 0;
        let mut segments: Vec<(u64, PathBuf)> =
            fs.list(dir)?.into_iter().filter_map(|p| Some((segment_seq(&p)?, p))).collect();
        segments.sort();
        for (seq, path) in &segments {
            last_seq = *seq;
            stats.segments += 1;
            let bytes = Bytes::from(fs.read_file(path)?);
            let parsed = parse_segment(&bytes);
            stats.corrupt_records += parsed.corrupt;
            if let Some(at) = parsed.torn_at {
                warn!(segment = %path.display(), offset = at, len = bytes.len(), "truncated torn wal record");
                stats.torn_tails += 1;
                fs.truncate(path, at)?;
            }
            for range in parsed.records {
                on_framed(path, bytes.slice(range), &mut stats);
            }
            if parsed.corrupt > 0 {
                warn!(segment = %path.display(), count = parsed.corrupt, "skipped corrupt wal records");
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
            file.append(MAGIC)?;
            file.sync()?;
            fs.sync_dir(dir)?;
        }
        let len = file.len();
        Ok((file, len))
    }

    /// Appends an encoded record (see [`WalRecord::encode`]). On failure the segment is cut
    /// back to its last good length so a later append does not follow garbage.
    pub fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
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

struct ParsedSegment {
    /// Byte ranges of the records that passed their checksum, header included.
    records: Vec<std::ops::Range<usize>>,
    corrupt: u64,
    torn_at: Option<u64>,
}

fn parse_segment(bytes: &[u8]) -> ParsedSegment {
    let mut out = ParsedSegment { records: Vec::new(), corrupt: 0, torn_at: None };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            out.torn_at = Some(0);
        } else {
            out.corrupt = 1;
        }
        return out;
    }
    let mut off = MAGIC.len();
    while off < bytes.len() {
        let rest = &bytes[off..];
        if rest.len() < RECORD_HEADER {
            out.torn_at = Some(off as u64);
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let end = RECORD_HEADER + len as usize;
        if len > MAX_RECORD_BYTES || end > rest.len() {
            out.torn_at = Some(off as u64);
            break;
        }
        let payload = &rest[RECORD_HEADER..end];
        if crc32c::crc32c(payload) != crc {
            if end == rest.len() {
                out.torn_at = Some(off as u64);
                break;
            }
            out.corrupt += 1;
        } else {
            out.records.push(off..off + end);
        }
        off += end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;
    use crate::testdata::batch;

    fn record(n: u8) -> WalRecord {
        WalRecord { received_unix_nano: u64::from(n), tenant: String::new(), batch: batch(n, 3) }
    }

    fn write_segment(records: &[WalRecord]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for r in records {
            bytes.extend(r.encode());
        }
        bytes
    }

    #[test]
    fn records_round_trip() {
        let recs = [record(1), record(2)];
        let bytes = write_segment(&recs);
        let parsed = parse_segment(&bytes);
        assert_eq!(parsed.corrupt, 0);
        assert_eq!(parsed.torn_at, None);
        let decoded: Vec<_> = parsed
            .records
            .iter()
            .map(|r| WalRecord::decode_framed(&bytes[r.clone()]).expect("valid"))
            .collect();
        assert_eq!(decoded, recs);
    }

    #[test]
    fn torn_tail_is_found_at_every_cut() {
        let recs = [record(1), record(2)];
        let bytes = write_segment(&recs);
        let first_end = MAGIC.len() + recs[0].encode().len();
        for cut in first_end + 1..bytes.len() {
            let parsed = parse_segment(&bytes[..cut]);
            assert_eq!(parsed.records.len(), 1, "cut at {cut}");
            assert_eq!(parsed.torn_at, Some(first_end as u64), "cut at {cut}");
            assert_eq!(parsed.corrupt, 0);
        }
    }

    #[test]
    fn corrupt_middle_record_is_skipped_and_counted() {
        let recs = [record(1), record(2), record(3)];
        let mut bytes = write_segment(&recs);
        let second = MAGIC.len() + recs[0].encode().len() + 12;
        bytes[second] ^= 0xff;
        let parsed = parse_segment(&bytes);
        assert_eq!(parsed.corrupt, 1);
        assert_eq!(parsed.torn_at, None);
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(WalRecord::decode_framed(&bytes[parsed.records[1].clone()]).expect("valid"), recs[2]);
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
        assert_eq!(framed[0].1, record(1));
        assert_eq!(framed[0].0, record(1).encode(), "the framed bytes are exactly what was written");
        assert_eq!(stats.torn_tails, 1);
        assert_eq!(wal.current_segment(), 2);
        let seg1 = segment_path(dir.path(), 1);
        assert_eq!(fs.file_size(&seg1).expect("size"), (MAGIC.len() + record(1).encode().len()) as u64);
    }
}
