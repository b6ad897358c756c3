//! Opening a block and reading spans back.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int8Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use strand_core::{
    Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, StoreError, StoredSpan, TraceId,
};

use super::json::{attrs_from_json, events_from_json, links_from_json};
use super::write::{EARLY_END_COLUMN, PARENT_ROWS, PARENT_ROWS_BACK_COLUMN, spans_schema_of};
use super::{BlockMeta, FORMAT_VERSION, guard};
use crate::cache::{BlockCache, BlockFilters, FILTER_FILE, Part, TraceFilter};
use crate::error::FormatError;
use crate::fs::{FileSystem, ReadAt};
use crate::index::{IndexBuilder, SearchIndex};

/// Adapts a [`ReadAt`] to parquet's reader interface.
#[derive(Clone)]
pub(crate) struct FileReader(pub(crate) Arc<dyn ReadAt>);

/// Reads a file from a position on. Parquet reads a page header through it (the page
/// itself through [`ChunkReader::get_bytes`]) a few bytes at a time, a call each: from a
/// local file each call asked the kernel, a sixth of a text search's CPU (perf, 10M log
/// records), so reads smaller than [`READ_AHEAD`] are served from that many bytes read at
/// once. A file far away (object storage, whose reads the block prefetches by the ranges
/// it will read) is read as asked.
pub(crate) struct PosReader {
    file: Arc<dyn ReadAt>,
    /// The file position of the byte after those in `buf`.
    pos: u64,
    buf: Vec<u8>,
    /// How much of `buf` has been handed out.
    taken: usize,
}

/// Bytes a [`PosReader`] reads at once for smaller reads: a page header (tens of bytes
/// without statistics) and the start of its page.
const READ_AHEAD: usize = 512;

impl PosReader {
    fn new(file: Arc<dyn ReadAt>, pos: u64) -> Self {
        Self { file, pos, buf: Vec::new(), taken: 0 }
    }
}

impl Read for PosReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.taken == self.buf.len() {
            if out.len() >= READ_AHEAD || self.file.wants_prefetch() {
                let n = self.file.read_at(out, self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            self.buf.resize(READ_AHEAD, 0);
            self.taken = 0;
            let read = self.file.read_at(&mut self.buf, self.pos);
            // Nothing of a failed read is handed out (a retry after EINTR reads again).
            self.buf.truncate(*read.as_ref().unwrap_or(&0));
            let n = read?;
            self.pos += n as u64;
        }
        let n = out.len().min(self.buf.len() - self.taken);
        out[..n].copy_from_slice(&self.buf[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

impl Length for FileReader {
    fn len(&self) -> u64 {
        self.0.len()
    }
}

impl ChunkReader for FileReader {
    type T = PosReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<PosReader> {
        Ok(PosReader::new(self.0.clone(), start))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buf = vec![0u8; length];
        let mut at = 0;
        while at < length {
            match self.0.read_at(&mut buf[at..], start + at as u64) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Bytes::from(buf))
    }
}

/// Where a trace's rows are in a block file (`spans.parquet`, `logs.parquet`): one row of
/// `traces.parquet` or `log_traces.parquet`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexEntry {
    pub(crate) trace_id: [u8; 16],
    pub(crate) first_row: u32,
    pub(crate) rows: u32,
}

/// The row groups of a file holding the row `ranges` (`(first, count)`, ascending), and the
/// selection of those rows counted from the first of those groups; `None` when no group
/// holds any.
pub(crate) fn range_selection(
    metadata: &parquet::file::metadata::ParquetMetaData,
    ranges: &[(u64, u64)],
) -> Option<(Vec<usize>, RowSelection)> {
    let (first, last) = (ranges.first()?, ranges.last()?);
    let (lo, hi) = (first.0, last.0 + last.1);
    let mut groups = Vec::new();
    let mut offset = None;
    let mut start = 0u64;
    for (i, rg) in metadata.row_groups().iter().enumerate() {
        let end = start + rg.num_rows() as u64;
        if end > lo && start < hi {
            groups.push(i);
            offset.get_or_insert(start);
        }
        start = end;
    }
    let mut at = offset?;
    let mut selectors = Vec::with_capacity(ranges.len() * 2);
    for &(s, len) in ranges {
        if s > at {
            selectors.push(RowSelector::skip((s - at) as usize));
        }
        selectors.push(RowSelector::select(len as usize));
        at = s + len;
    }
    Some((groups, RowSelection::from(selectors)))
}

/// The byte ranges a read of rows `ranges` (`(first, count)`, ascending) in row groups
/// `groups` of a file fetches: in every column, the pages holding any of those rows (from
/// the offset index) and the chunk's dictionary page; whole column chunks without an
/// offset index. Passed to [`ReadAt::prefetch`] before such a read.
pub(crate) fn page_ranges(
    metadata: &parquet::file::metadata::ParquetMetaData,
    groups: &[usize],
    ranges: &[(u64, u64)],
) -> Vec<std::ops::Range<u64>> {
    let overlaps = |lo: u64, hi: u64| ranges.iter().any(|&(s, n)| s < hi && lo < s + n);
    let mut starts = Vec::with_capacity(metadata.num_row_groups());
    let mut at = 0u64;
    for rg in metadata.row_groups() {
        starts.push(at);
        at += rg.num_rows() as u64;
    }
    let mut out = Vec::new();
    for &g in groups {
        let Some(rg) = metadata.row_groups().get(g) else { continue };
        let (start, end) = (starts[g], starts[g] + rg.num_rows() as u64);
        for (c, column) in rg.columns().iter().enumerate() {
            let pages = metadata.page_index().and_then(|p| p.offset_index(g, c));
            let Some(locations) = pages.map(|p| p.page_locations()).filter(|l| !l.is_empty()) else {
                let (offset, len) = column.byte_range();
                out.push(offset..offset + len);
                continue;
            };
            if let Some(dict) = column.dictionary_page_offset() {
                let first = locations[0].offset;
                if dict >= 0 && first > dict {
                    out.push(dict as u64..first as u64);
                }
            }
            for (i, page) in locations.iter().enumerate() {
                let lo = start + page.first_row_index as u64;
                let hi = locations.get(i + 1).map_or(end, |next| start + next.first_row_index as u64);
                if overlaps(lo, hi) && page.offset >= 0 && page.compressed_page_size > 0 {
                    let from = page.offset as u64;
                    out.push(from..from + page.compressed_page_size as u64);
                }
            }
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

/// The file holding an ingester's block's handoff time (see [`Block::record_handoff`]).
pub const HANDOFF_FILE: &str = "handoff";

/// An open block. Its metadata, parquet footer (without the page index) and trace-id
/// filter stay in memory; its search and trace indexes and page index are loaded when a
/// query needs them and kept in the store's [`BlockCache`].
pub struct Block {
    /// `meta.json`.
    pub meta: BlockMeta,
    /// The block's directory.
    pub dir: PathBuf,
    /// Bytes of the block's files.
    pub disk_bytes: u64,
    /// The cache key of the block's parts (its id).
    key: Arc<str>,
    fs: Arc<dyn FileSystem>,
    cache: Arc<BlockCache>,
    spans: FileReader,
    footer: ArrowReaderMetadata,
    filter: TraceFilter,
    /// The block's log records, when it has any.
    pub logs: Option<crate::logs::LogFiles>,
    /// Derived files (`index.bin`, `log_grams.bin`, `filter.bin`) found damaged by
    /// [`Block::open`] and rebuilt from the block's data, each with what was wrong.
    pub repaired: Vec<String>,
    /// See [`Block::verified`].
    verified: std::sync::atomic::AtomicBool,
    /// See [`Block::handoff`]; 0: none.
    handoff: std::sync::atomic::AtomicU64,
}

/// Length of a block's `meta.json` (0 when it cannot be read: only sizes depend on it).
fn meta_len(fs: &dyn FileSystem, dir: &Path) -> u64 {
    fs.file_size(&dir.join("meta.json")).unwrap_or(0)
}

impl Drop for Block {
    fn drop(&mut self) {
        self.cache.forget(&self.key);
    }
}

/// The size and checksum `meta.json` (`files`) gives block file `name` of `dir`.
pub(crate) fn expected<'a>(
    dir: &Path,
    files: &'a [super::FileChecksum],
    name: &str,
) -> Result<&'a super::FileChecksum, StoreError> {
    files
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| corrupt(&dir.join("meta.json"), format!("no checksum for {name}")))
}

/// Fails unless `bytes` and `crc32c` are what `want` says of the file at `path`.
fn compare(path: &Path, bytes: u64, crc32c: u32, want: &super::FileChecksum) -> Result<(), StoreError> {
    if (bytes, crc32c) == (want.bytes, want.crc32c) {
        return Ok(());
    }
    Err(corrupt(
        path,
        format!(
            "checksum mismatch: {bytes} bytes crc32c {crc32c:08x}, meta.json says {} bytes crc32c {:08x}",
            want.bytes, want.crc32c
        ),
    ))
}

/// Reads block file `name` of `dir`, checking it against its size and CRC32C in `files`.
pub(crate) fn read_checked(
    fs: &dyn FileSystem,
    dir: &Path,
    files: &[super::FileChecksum],
    name: &str,
) -> Result<Vec<u8>, StoreError> {
    let want = expected(dir, files, name)?;
    let path = dir.join(name);
    let data = fs.read_file(&path).map_err(|e| io_err(&path, e))?;
    compare(&path, data.len() as u64, crc32c::crc32c(&data), want)?;
    Ok(data)
}

/// Checks block file `name` of `dir` against its size and CRC32C in `files` without
/// holding it in memory (read in 1 MiB pieces): for the scrub, which only checks.
pub(crate) fn check_file(
    fs: &dyn FileSystem,
    dir: &Path,
    files: &[super::FileChecksum],
    name: &str,
) -> Result<(), StoreError> {
    let want = expected(dir, files, name)?;
    let path = dir.join(name);
    let file = fs.open_read(&path).map_err(|e| io_err(&path, e))?;
    let (mut crc, mut at) = (0u32, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read_at(&mut buf, at).map_err(|e| io_err(&path, e))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    compare(&path, at, crc, want)
}

/// Replaces derived file `name` of a block with `data` and its checksum in `meta.json`,
/// each by an atomic rename (a crash in between leaves a checksum mismatch, which the next
/// start repairs the same way).
fn rewrite_derived(
    fs: &dyn FileSystem,
    dir: &Path,
    meta: &mut BlockMeta,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs.write_file(&tmp, data)?;
    fs.rename(&tmp, &dir.join(name))?;
    meta.files.retain(|f| f.name != name);
    meta.files.push(super::FileChecksum::of(name, data));
    let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    let tmp = dir.join(".meta.json.tmp");
    fs.write_file(&tmp, &json)?;
    fs.rename(&tmp, &dir.join("meta.json"))?;
    fs.sync_dir(dir)
}

pub(crate) fn corrupt(path: &Path, reason: impl ToString) -> StoreError {
    StoreError::Corrupt { path: path.display().to_string(), reason: reason.to_string() }
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

/// How much of a block [`Block::open`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Every file against its size and CRC32C in `meta.json`, and that they fit together;
    /// damaged derived files are rebuilt from the data and written back. The store's
    /// background scrub does this once for every block opened at start.
    Full,
    /// Only what serving needs: `meta.json`, `filter.bin` (checked; rebuilt when damaged)
    /// and the Parquet footers. The rest is checked when it is first read, and by the
    /// scrub. This is how a store opens its blocks at start.
    Lazy,
    /// As [`Verify::Lazy`], for a block this process has just written from memory: it
    /// counts as verified.
    Written,
}

/// Makes every opened block's cache key unique, so a block replaced by a newer opening of
/// the same directory (the scrub's) never drops its successor's cached parts.
static OPENINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Block {
    /// Opens a block directory, checking as much as `verify` says. A trace index read to
    /// build a missing or damaged filter is offered to `cache`; one read only to be checked
    /// is not.
    pub fn open(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        cache: &Arc<BlockCache>,
        verify: Verify,
    ) -> Result<Self, StoreError> {
        let full = verify == Verify::Full;
        let meta_path = dir.join("meta.json");
        let meta_bytes = fs.read_file(&meta_path).map_err(|e| io_err(&meta_path, e))?;
        // The version is read on its own first: a newer layout may not parse as this one.
        #[derive(serde::Deserialize)]
        struct Version {
            format_version: u32,
        }
        if let Ok(Version { format_version }) = serde_json::from_slice(&meta_bytes)
            && format_version > FORMAT_VERSION
        {
            return Err(StoreError::NewerFormat {
                path: meta_path.display().to_string(),
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let meta: BlockMeta = serde_json::from_slice(&meta_bytes).map_err(|e| corrupt(&meta_path, e))?;
        if !(1..=FORMAT_VERSION).contains(&meta.format_version) {
            return Err(corrupt(&meta_path, format!("unsupported format version {}", meta.format_version)));
        }
        let has = |name: &str| meta.files.iter().any(|f| f.name == name);
        let has_filters = has(FILTER_FILE);
        let spans_path = dir.join("spans.parquet");
        let traces_path = dir.join("traces.parquet");
        if full {
            check_file(fs.as_ref(), dir, &meta.files, "spans.parquet")?;
        }
        // filter.bin is derived from the trace indexes: damaged, it is rebuilt below.
        let stored_filters = has_filters.then(|| {
            let data = read_checked(fs.as_ref(), dir, &meta.files, FILTER_FILE)?;
            let filters = BlockFilters::decode(&data)
                .filter(|f| f.logs.is_some() == (meta.log_count > 0))
                .ok_or_else(|| corrupt(&dir.join(FILTER_FILE), "not a filter file of this block"))?;
            Ok::<_, StoreError>(filters)
        });
        // The trace index, when it must be read: to verify it, or to build the filter.
        let index = match (&stored_filters, full) {
            (Some(Ok(_)), false) => None,
            _ => {
                let traces = Bytes::from(read_checked(fs.as_ref(), dir, &meta.files, "traces.parquet")?);
                Some(decode_trace_index(traces, &traces_path, meta.span_count)?)
            }
        };
        // index.bin is derived from the spans: damaged, it is rebuilt below. A full check
        // reads it; otherwise it is checked when a query first loads it.
        let has_index = has("index.bin");
        let stored_index =
            (has_index && full).then(|| check_file(fs.as_ref(), dir, &meta.files, "index.bin"));
        let spans = FileReader(fs.open_read(&spans_path).map_err(|e| io_err(&spans_path, e))?);
        // The page index (a location per page and column: a third of a byte per span) is
        // loaded into the cache when rows are read (`Block::pages`), not kept per block.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Skip);
        let footer = guard(|| Ok(ArrowReaderMetadata::load(&spans, options)?))
            .map_err(|e| e.corrupt_at(spans_path.display()))?;
        // Version 4 on, parents are given as rows back; any version may have the column of
        // spans ending before they start.
        let parent_rows = meta.format_version >= super::PARENT_ROWS_VERSION;
        let fields = footer.schema().fields();
        if [false, true].iter().all(|&early| fields != spans_schema_of(parent_rows, early).fields()) {
            return Err(corrupt(&spans_path, "unexpected schema"));
        }
        let rows = footer.metadata().file_metadata().num_rows();
        if rows != meta.span_count as i64 {
            return Err(corrupt(&spans_path, format!("{rows} rows, meta.json says {}", meta.span_count)));
        }
        let key: Arc<str> = Arc::from(
            format!("{}#{}", meta.id, OPENINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).as_str(),
        );
        let (filter, log_filter) = match &stored_filters {
            Some(Ok(f)) => (f.spans.clone(), f.logs.clone()),
            _ => (TraceFilter::new(index.as_deref().unwrap_or_default().iter().map(|e| &e.trace_id)), None),
        };
        let mut block = Self {
            filter,
            disk_bytes: 0,
            meta,
            dir: dir.to_path_buf(),
            key,
            fs: fs.clone(),
            cache: cache.clone(),
            spans,
            footer,
            logs: None,
            repaired: Vec::new(),
            verified: (verify != Verify::Lazy).into(),
            handoff: std::sync::atomic::AtomicU64::new(0),
        };
        // An uploaded copy's meta.json carries it; an ingester's own copy has it in a file
        // of its own (written when the block was handed over).
        let recorded = fs
            .read_file(&dir.join(HANDOFF_FILE))
            .ok()
            .and_then(|d| std::str::from_utf8(&d).ok().and_then(|t| t.trim().parse::<u64>().ok()));
        if let Some(t) = block.meta.handoff_unix_nano.or(recorded) {
            block.set_handoff(t);
        }
        if block.meta.log_count > 0 {
            let (logs, rebuilt) =
                crate::logs::LogFiles::open(fs, dir, &block.meta, &block.key, cache, full, log_filter)?;
            block.logs = Some(logs);
            if let Some((grams, reason)) = rebuilt {
                block.repair(fs.as_ref(), crate::logs::LOG_GRAMS_FILE, &grams, reason);
            }
        }
        match stored_index {
            Some(Ok(())) => {}
            // Blocks written before index.bin existed, or whose index.bin is damaged:
            // index them now (receive times per trace are lost: the block's earliest).
            None if has_index => {}
            other => {
                let search = block.index_from_spans()?;
                if search.traces.len() as u64 != block.meta.trace_count {
                    return Err(corrupt(&traces_path, "trace count does not match meta.json"));
                }
                if let Some(Err(e)) = other {
                    let data = search.encode().map_err(|e| e.corrupt_at(dir.join("index.bin").display()))?;
                    block.repair(fs.as_ref(), "index.bin", &data, e.to_string());
                }
                let bytes = search.heap_bytes();
                cache.insert(&block.key, Part::SearchIndex, Arc::new(search), bytes);
            }
        }
        let filters_were_stored = matches!(stored_filters, Some(Ok(_)));
        match stored_filters {
            Some(Ok(_)) => {}
            // Blocks written before filter.bin existed get one when fully checked (then
            // their next start reads no trace index); a damaged one is rebuilt at once.
            damage => {
                if let Some(Err(e)) = &damage {
                    let data = block.filters().encode();
                    block.repair(fs.as_ref(), FILTER_FILE, &data, e.to_string());
                } else if full {
                    let data = block.filters().encode();
                    if let Err(e) = rewrite_derived(fs.as_ref(), dir, &mut block.meta, FILTER_FILE, &data) {
                        tracing::warn!(block = %block.meta.id, error = %e, "could not add filter.bin");
                    }
                }
            }
        }
        block.disk_bytes = meta_len(fs.as_ref(), dir) + block.meta.files.iter().map(|f| f.bytes).sum::<u64>();
        // A trace index read only to be checked (by the scrub) is not kept: it would push
        // out what queries use.
        if let Some(index) = index.filter(|_| !filters_were_stored) {
            let bytes = trace_index_heap_bytes(&index);
            cache.insert(&block.key, Part::TraceIndex, Arc::new(index), bytes);
        }
        Ok(block)
    }

    /// When the block was handed over to object storage (see
    /// [`BlockMeta::handoff_unix_nano`]): reads at a clock from then on are answered from
    /// the uploaded copy, not this one. `None`: never.
    pub fn handoff(&self) -> Option<u64> {
        Some(self.handoff.load(std::sync::atomic::Ordering::Acquire)).filter(|&t| t != 0)
    }

    /// Records the block's handoff time ([`Block::handoff`]) in memory.
    pub fn set_handoff(&self, unix_nano: u64) {
        self.handoff.store(unix_nano.max(1), std::sync::atomic::Ordering::Release);
    }

    /// Records the block's handoff time in its directory (`handoff`, fsynced; read back
    /// when the block is opened again) and then in memory.
    pub fn record_handoff(&self, unix_nano: u64) -> Result<(), StoreError> {
        let path = self.dir.join(HANDOFF_FILE);
        self.fs.write_file(&path, unix_nano.to_string().as_bytes()).map_err(|e| io_err(&path, e))?;
        self.set_handoff(unix_nano);
        Ok(())
    }

    /// The block's filters, as `filter.bin` holds them.
    fn filters(&self) -> BlockFilters {
        BlockFilters { spans: self.filter.clone(), logs: self.logs.as_ref().map(|l| l.filter().clone()) }
    }

    /// Bytes of the largest span text column (attribute, event or link JSON) as decoded:
    /// what merging the block adds to that column of a compaction's result. From the
    /// Parquet footer: each column chunk's unencoded byte-array size where the writer kept
    /// it (blocks written before 2026-12-07, which kept column statistics), else its
    /// uncompressed size (the JSON columns are plain-encoded: the text and 4 bytes a value).
    pub fn span_text_bytes(&self) -> u64 {
        let md = self.footer.metadata();
        let schema = md.file_metadata().schema_descr();
        (0..schema.num_columns())
            .filter(|&c| matches!(schema.column(c).name(), "attributes" | "events" | "links"))
            .map(|c| {
                md.row_groups()
                    .iter()
                    .map(|rg| {
                        let chunk = rg.column(c);
                        chunk.unencoded_byte_array_data_bytes().unwrap_or(chunk.uncompressed_size()).max(0)
                            as u64
                    })
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether every file of the block was checked against its checksum (or written by
    /// this process); see [`Verify`].
    pub fn verified(&self) -> bool {
        self.verified.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Has the block checked again, whole, as after a start (the store's scrub looks for
    /// blocks not verified): reading it failed in a way that may be damage.
    pub fn unverify(&self) {
        self.verified.store(false, std::sync::atomic::Ordering::Release);
    }

    /// Records that derived file `name` was damaged (`reason`) and rebuilt as `data`, and
    /// writes it back; if that fails the block is served from the rebuilt copy in memory.
    fn repair(&mut self, fs: &dyn FileSystem, name: &str, data: &[u8], reason: String) {
        if let Err(e) = rewrite_derived(fs, &self.dir, &mut self.meta, name, data) {
            tracing::warn!(block = %self.meta.id, file = name, error = %e, "could not write a rebuilt file back");
        }
        self.repaired.push(format!("{name}: {reason}"));
    }

    /// The search index built from the block's spans.
    fn index_from_spans(&self) -> Result<SearchIndex, StoreError> {
        let mut builder = IndexBuilder::new();
        let received = self.meta.min_received_unix_nano;
        self.for_each_slice(|spans| {
            builder.add_stored(&spans, |_| received);
            Ok(())
        })?;
        Ok(builder.finish())
    }

    /// The block's search index, from the cache or its file. Damaged since the block was
    /// opened, it is rebuilt from the spans (and written back at the next start, whose
    /// checksums find the damage). One whose checksum holds but which disagrees with
    /// `meta.json` (written so by a bug, not damaged) is rebuilt each time it is loaded.
    pub fn search_index(&self) -> Result<Arc<SearchIndex>, StoreError> {
        self.cache.get_or_load(&self.key, Part::SearchIndex, || {
            let search = if self.meta.files.iter().any(|f| f.name == "index.bin") {
                // A version 3 index takes its trace ids from traces.parquet. When that read
                // fails (a passing object-store error on a querier, or damage the scrub
                // deals with), the error is the answer: rebuilding from the spans would
                // cache an index without its edges across blocks.
                let mut ids_failed = None;
                let decoded = read_checked(self.fs.as_ref(), &self.dir, &self.meta.files, "index.bin")
                    .and_then(|data| {
                        decode_search_index(&data, &self.dir, self.meta.trace_count, || {
                            let index = self.trace_index().map_err(|e| {
                                let what = format!("its trace ids are those of traces.parquet: {e}");
                                ids_failed = Some(e);
                                FormatError::invalid(what)
                            })?;
                            Ok(index.iter().map(|e| e.trace_id).collect())
                        })
                    });
                if let Some(e) = ids_failed {
                    return Err(e);
                }
                match decoded {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(block = %self.meta.id, error = %e, "search index unreadable; rebuilding it from the spans");
                        self.index_from_spans()?
                    }
                }
            } else {
                // A block written before index.bin existed.
                self.index_from_spans()?
            };
            let bytes = search.heap_bytes();
            Ok((search, bytes))
        })
    }

    /// Whether the block's search index is in the cache now (a query using it loads
    /// nothing).
    pub fn search_index_cached(&self) -> bool {
        self.cache.holds(&self.key, Part::SearchIndex)
    }

    /// Where each trace's spans are, from the cache or `traces.parquet`.
    fn trace_index(&self) -> Result<Arc<Vec<IndexEntry>>, StoreError> {
        self.cache.get_or_load(&self.key, Part::TraceIndex, || {
            let path = self.dir.join("traces.parquet");
            let data = read_checked(self.fs.as_ref(), &self.dir, &self.meta.files, "traces.parquet")?;
            let index = decode_trace_index(Bytes::from(data), &path, self.meta.span_count)?;
            let bytes = trace_index_heap_bytes(&index);
            Ok((index, bytes))
        })
    }

    /// Whether the block may hold spans of this trace (`false`: certainly not), answered
    /// from memory.
    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.filter.may_contain(&id.0)
    }

    /// Earliest span start and latest span end, from `meta.json`.
    pub fn time_range(&self) -> (u64, u64) {
        (self.meta.min_start_unix_nano, self.meta.max_end_unix_nano)
    }

    /// Heap bytes the open block holds whatever the cache does (its trace-id filter and
    /// the footer of `spans.parquet`, without its page index).
    pub fn resident_bytes(&self) -> u64 {
        self.filter.heap_bytes() + self.footer.metadata().memory_size() as u64
    }

    /// The spans of one trace held in this block.
    pub fn read_trace(&self, id: &TraceId) -> Result<Vec<StoredSpan>, StoreError> {
        match self.trace_entry(id)? {
            Some(entry) => self.read_entry(entry),
            None => Ok(Vec::new()),
        }
    }

    /// The spans of the trace whose trace-index entry is `entry` (from
    /// [`Block::trace_entry`]).
    pub(crate) fn read_entry(&self, entry: IndexEntry) -> Result<Vec<StoredSpan>, StoreError> {
        self.read_rows(u64::from(entry.first_row), u64::from(entry.rows))
    }

    /// Where a trace's spans are in this block (its trace-index entry), if it holds any.
    pub(crate) fn trace_entry(&self, id: &TraceId) -> Result<Option<IndexEntry>, StoreError> {
        if !self.may_contain(id) {
            return Ok(None);
        }
        let index = self.trace_index()?;
        Ok(index.binary_search_by(|e| e.trace_id.cmp(&id.0)).ok().map(|pos| index[pos]))
    }

    /// Every span in the block, a slice of rows at a time in row order (for compaction and
    /// rebuilding the search index): decoded spans take several times their columnar size,
    /// so a whole block is never decoded at once.
    pub fn for_each_slice(
        &self,
        mut f: impl FnMut(Vec<StoredSpan>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // One reader from the first row: a span's parent may be a row of an earlier slice.
        let mut rows = self.rows_in_order(SLICE_ROWS as usize)?;
        while let Some(slice) = rows.next_batch()? {
            f(slice)?;
        }
        Ok(())
    }

    /// Every span of the block in row order, decoded `batch` rows at a time by one reader
    /// (compaction): rows of one resource or scope share one value across the whole block.
    pub(crate) fn rows_in_order(&self, batch: usize) -> Result<RowsInOrder, StoreError> {
        let path = self.dir.join("spans.parquet");
        let reader = guard(|| {
            Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(self.spans.clone(), self.footer.clone())
                .with_batch_size(batch)
                .build()?)
        })
        .map_err(|e| e.corrupt_at(path.display()))?;
        Ok(RowsInOrder { reader, decoder: RowDecoder::default(), next_row: 0, path })
    }

    /// Whether `spans.parquet` has the column of spans ending before they start.
    pub(crate) fn has_early_end(&self) -> bool {
        self.footer.schema().column_with_name(EARLY_END_COLUMN).is_some()
    }

    fn read_rows(&self, first: u64, count: u64) -> Result<Vec<StoredSpan>, StoreError> {
        let path = self.dir.join("spans.parquet");
        guard(|| self.read_rows_unguarded(first, count)).map_err(|e| e.corrupt_at(path.display()))
    }

    /// The footer of `spans.parquet` with its page index, from the cache or the file.
    fn pages(&self) -> Result<Arc<ArrowReaderMetadata>, FormatError> {
        self.cache.get_or_load(&self.key, Part::SpanPages, || with_page_index(&self.footer, &self.spans))
    }

    fn read_rows_unguarded(&self, first: u64, count: u64) -> Result<Vec<StoredSpan>, FormatError> {
        let footer = self.pages()?;
        let Some((groups, selection)) = range_selection(footer.metadata(), &[(first, count)]) else {
            return Ok(Vec::new());
        };
        if self.spans.0.wants_prefetch() {
            self.spans.0.prefetch(&page_ranges(footer.metadata(), &groups, &[(first, count)]));
        }
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(self.spans.clone(), (*footer).clone())
                .with_row_groups(groups)
                .with_row_selection(selection)
                .with_batch_size(8192)
                .build()?;
        let mut decoder = RowDecoder::default();
        let mut out = Vec::with_capacity(count as usize);
        let mut row = first;
        for batch in reader {
            let batch = batch?;
            decoder.decode(&batch, row, &mut out)?;
            row += batch.num_rows() as u64;
        }
        Ok(out)
    }
}

/// `footer`, read without its page index, with the page index of `file` added (for
/// reads of a few rows), and the heap bytes of the whole.
pub(crate) fn with_page_index(
    footer: &ArrowReaderMetadata,
    file: &FileReader,
) -> Result<(ArrowReaderMetadata, u64), FormatError> {
    let mut reader = ParquetMetaDataReader::new_with_metadata(footer.metadata().as_ref().clone())
        .with_page_index_policy(PageIndexPolicy::Optional);
    reader.read_page_indexes(file)?;
    let full = ArrowReaderMetadata::try_new(Arc::new(reader.finish()?), ArrowReaderOptions::new())?;
    let bytes = full.metadata().memory_size() as u64;
    Ok((full, bytes))
}

/// A block's spans in row order, a batch at a time (see [`Block::rows_in_order`]).
pub(crate) struct RowsInOrder {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    decoder: RowDecoder,
    /// The row the next batch starts at.
    next_row: u64,
    path: PathBuf,
}

impl RowsInOrder {
    /// The next batch of spans, `None` after the last.
    pub(crate) fn next_batch(&mut self) -> Result<Option<Vec<StoredSpan>>, StoreError> {
        let Self { reader, decoder, next_row, path } = self;
        guard(|| {
            let Some(batch) = reader.next() else { return Ok(None) };
            let batch = batch?;
            let mut out = Vec::with_capacity(batch.num_rows());
            decoder.decode(&batch, *next_row, &mut out)?;
            *next_row += batch.num_rows() as u64;
            Ok(Some(out))
        })
        .map_err(|e| e.corrupt_at(path.display()))
    }
}

/// Rows [`Block::for_each_slice`] decodes at a time.
const SLICE_ROWS: u64 = 64 * 1024;

/// Decodes `index.bin` of the block in `dir`, which holds `traces` traces.
fn decode_search_index(
    data: &[u8],
    dir: &Path,
    traces: u64,
    ids: impl FnOnce() -> Result<Vec<[u8; 16]>, FormatError>,
) -> Result<SearchIndex, StoreError> {
    let path = dir.join("index.bin");
    let search = SearchIndex::decode(data, ids).map_err(|e| e.corrupt_at(path.display()))?;
    if search.traces.len() as u64 != traces {
        return Err(corrupt(&path, "trace count does not match meta.json"));
    }
    Ok(search)
}

/// Decodes the trace index `traces.parquet` (at `path`) of a block of `spans` spans,
/// checking that it covers every span once, in trace-id order.
fn decode_trace_index(data: Bytes, path: &Path, spans: u64) -> Result<Vec<IndexEntry>, StoreError> {
    let index = guard(|| read_index(data)).map_err(|e| e.corrupt_at(path.display()))?;
    let covered: u64 = index.iter().map(|e| u64::from(e.rows)).sum();
    if covered != spans || index.windows(2).any(|w| w[0].trace_id >= w[1].trace_id) {
        return Err(corrupt(path, "trace index does not match spans"));
    }
    Ok(index)
}

/// Heap bytes of a trace index.
pub(crate) fn trace_index_heap_bytes(index: &[IndexEntry]) -> u64 {
    std::mem::size_of_val(index) as u64
}

/// Reads a trace index file (`traces.parquet`, `log_traces.parquet`: trace id, first row,
/// rows in its first three columns).
pub(crate) fn read_index(traces: Bytes) -> Result<Vec<IndexEntry>, FormatError> {
    // Only those three: the rest of `traces.parquet` (root names, service lists) is most
    // of its decoding, and a lookup after a start or a cut's look for edges across blocks
    // loads the index of every block it asks.
    let builder = ParquetRecordBatchReaderBuilder::try_new(traces)?;
    let three = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [0, 1, 2]);
    let reader = builder.with_projection(three).build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let ids = fsb(&batch, 0, 16)?;
        let first = u32_column(&batch, 1)?;
        let rows = u32_column(&batch, 2)?;
        for i in 0..batch.num_rows() {
            let trace_id: [u8; 16] =
                ids.value(i).try_into().map_err(|_| FormatError::invalid("trace id width"))?;
            out.push(IndexEntry { trace_id, first_row: first.value(i), rows: rows.value(i) });
        }
    }
    Ok(out)
}

pub(crate) fn fsb(batch: &RecordBatch, col: usize, width: i32) -> Result<&FixedSizeBinaryArray, FormatError> {
    let a = batch
        .column(col)
        .as_fixed_size_binary_opt()
        .ok_or_else(|| FormatError::invalid(format!("column {col} is not fixed-size binary")))?;
    if a.value_length() != width {
        return Err(FormatError::invalid(format!("column {col} has width {}", a.value_length())));
    }
    Ok(a)
}

pub(crate) fn u32_column(b: &RecordBatch, i: usize) -> Result<&arrow_array::UInt32Array, FormatError> {
    b.column(i)
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| FormatError::invalid(format!("column {i} is not uint32")))
}

/// Resource columns of a row: attributes JSON, dropped count, schema URL.
type ResourceKey = (Option<String>, u32, String);
/// Scope columns of a row: name, version, attributes JSON, dropped count, schema URL.
type ScopeKey = (String, String, Option<String>, u32, String);

/// The eight resource and scope columns of a span or log row, in the order both
/// schemas keep them: resource attributes, dropped count, schema URL; scope name,
/// version, attributes, dropped count, schema URL.
pub(crate) struct ResourceScopeColumns<'a> {
    res_attrs: &'a arrow_array::StringArray,
    res_dropped: &'a arrow_array::UInt32Array,
    res_schema: &'a arrow_array::StringArray,
    scope_name: &'a arrow_array::StringArray,
    scope_version: &'a arrow_array::StringArray,
    scope_attrs: &'a arrow_array::StringArray,
    scope_dropped: &'a arrow_array::UInt32Array,
    scope_schema: &'a arrow_array::StringArray,
}

impl<'a> ResourceScopeColumns<'a> {
    /// The columns starting at `first`.
    pub(crate) fn of(b: &'a RecordBatch, first: usize) -> Result<Self, FormatError> {
        let s = |i: usize| {
            b.column(i)
                .as_string_opt::<i32>()
                .ok_or_else(|| FormatError::invalid(format!("column {i} is not a string")))
        };
        Ok(Self {
            res_attrs: s(first)?,
            res_dropped: u32_column(b, first + 1)?,
            res_schema: s(first + 2)?,
            scope_name: s(first + 3)?,
            scope_version: s(first + 4)?,
            scope_attrs: s(first + 5)?,
            scope_dropped: u32_column(b, first + 6)?,
            scope_schema: s(first + 7)?,
        })
    }
}

/// Resources and scopes already decoded: rows with equal ones share one `Arc`.
#[derive(Default)]
pub(crate) struct SharedParts {
    resources: HashMap<ResourceKey, Arc<Resource>>,
    scopes: HashMap<ScopeKey, Arc<Scope>>,
}

impl SharedParts {
    /// The resource and scope of row `i`.
    pub(crate) fn get(
        &mut self,
        c: &ResourceScopeColumns<'_>,
        i: usize,
    ) -> Result<(Arc<Resource>, Arc<Scope>), FormatError> {
        let opt = |a: &arrow_array::StringArray| (!a.is_null(i)).then(|| a.value(i).to_owned());
        let res_key = (opt(c.res_attrs), c.res_dropped.value(i), c.res_schema.value(i).to_owned());
        let resource = match self.resources.get(&res_key) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(Resource {
                    attributes: attrs_from_json(res_key.0.as_deref())?,
                    dropped_attributes_count: res_key.1,
                    schema_url: res_key.2.clone(),
                });
                self.resources.insert(res_key, r.clone());
                r
            }
        };
        let scope_key = (
            c.scope_name.value(i).to_owned(),
            c.scope_version.value(i).to_owned(),
            opt(c.scope_attrs),
            c.scope_dropped.value(i),
            c.scope_schema.value(i).to_owned(),
        );
        let scope = match self.scopes.get(&scope_key) {
            Some(sc) => sc.clone(),
            None => {
                let sc = Arc::new(Scope {
                    name: scope_key.0.clone(),
                    version: scope_key.1.clone(),
                    attributes: attrs_from_json(scope_key.2.as_deref())?,
                    dropped_attributes_count: scope_key.3,
                    schema_url: scope_key.4.clone(),
                });
                self.scopes.insert(scope_key, sc.clone());
                sc
            }
        };
        Ok((resource, scope))
    }
}

/// Turns rows back into spans, sharing equal resources and scopes.
#[derive(Default)]
struct RowDecoder {
    parts: SharedParts,
    /// The trace of the last row decoded, the row its first decoded row is at, and the span
    /// ids of its rows decoded so far, up to the first [`PARENT_ROWS`] (the parents
    /// `parent_rows_back` may refer to).
    trace: Option<TraceId>,
    trace_first_row: u64,
    trace_span_ids: Vec<SpanId>,
}

impl RowDecoder {
    /// Decodes rows that follow the rows this decoder decoded before (if any), the first
    /// of them at `first_row` in the file. A trace's rows are decoded from its first: a
    /// parent given as a row back is looked up among them.
    fn decode(
        &mut self,
        b: &RecordBatch,
        first_row: u64,
        out: &mut Vec<StoredSpan>,
    ) -> Result<(), FormatError> {
        let trace_id = fsb(b, 0, 16)?;
        let span_id = fsb(b, 1, 8)?;
        let parent = fsb(b, 2, 8)?;
        let bad = |i: usize, what: &str| FormatError::invalid(format!("column {i} is not {what}"));
        let s = |i: usize| b.column(i).as_string_opt::<i32>().ok_or_else(|| bad(i, "a string"));
        let u32c = |i: usize| u32_column(b, i);
        let i8c = |i: usize| b.column(i).as_primitive_opt::<Int8Type>().ok_or_else(|| bad(i, "int8"));
        let trace_state = s(3)?;
        let flags = u32c(4)?;
        let name = s(5)?;
        let kind = i8c(6)?;
        let start = b.column(7).as_primitive_opt::<UInt64Type>().ok_or_else(|| bad(7, "uint64"))?;
        let duration = b.column(8).as_primitive_opt::<Int64Type>().ok_or_else(|| bad(8, "int64"))?;
        let status_code = i8c(9)?;
        let status_message = s(10)?;
        let parts = ResourceScopeColumns::of(b, 12)?;
        let attrs = s(20)?;
        let dropped_attrs = u32c(21)?;
        let events = s(22)?;
        let dropped_events = u32c(23)?;
        let links = s(24)?;
        let dropped_links = u32c(25)?;
        // Version 4 on: parents as rows back. Version 3 on: the end times of spans ending
        // before they start.
        let rows_back =
            match b.column_by_name(PARENT_ROWS_BACK_COLUMN) {
                Some(c) => Some(c.as_primitive_opt::<UInt32Type>().ok_or_else(|| {
                    FormatError::invalid(format!("{PARENT_ROWS_BACK_COLUMN} is not uint32"))
                })?),
                None => None,
            };
        let early_end = match b.column_by_name(EARLY_END_COLUMN) {
            Some(c) => Some(
                c.as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| FormatError::invalid(format!("{EARLY_END_COLUMN} is not uint64")))?,
            ),
            None => None,
        };
        for i in 0..b.num_rows() {
            let (resource, scope) = self.parts.get(&parts, i)?;
            let id_err = |e: strand_core::IdError| FormatError::invalid(e.to_string());
            let start_ns = start.value(i);
            let row = first_row + i as u64;
            let tid = TraceId::from_slice(trace_id.value(i)).map_err(id_err)?;
            let sid = SpanId::from_slice(span_id.value(i)).map_err(id_err)?;
            if self.trace != Some(tid) {
                self.trace = Some(tid);
                self.trace_first_row = row;
                self.trace_span_ids.clear();
            }
            let back = rows_back.filter(|c| !c.is_null(i)).map(|c| u64::from(c.value(i)));
            let parent_span_id = match (parent.is_null(i), back) {
                (true, None) => None,
                (false, None) => Some(SpanId::from_slice(parent.value(i)).map_err(id_err)?),
                (true, Some(back)) => {
                    let at = row
                        .checked_sub(back)
                        .filter(|&at| back > 0 && at >= self.trace_first_row)
                        .and_then(|at| self.trace_span_ids.get((at - self.trace_first_row) as usize))
                        .ok_or_else(|| {
                            FormatError::invalid(format!(
                                "row {row}: its parent, {back} rows back, is not in its trace"
                            ))
                        })?;
                    Some(*at)
                }
                (false, Some(_)) => {
                    return Err(FormatError::invalid(format!(
                        "row {row} has both a parent id and a parent row"
                    )));
                }
            };
            // Only a file giving parents as rows back needs the trace's span ids.
            if rows_back.is_some() && (self.trace_span_ids.len() as u64) < PARENT_ROWS {
                self.trace_span_ids.push(sid);
            }
            let span = Span {
                trace_id: tid,
                span_id: sid,
                parent_span_id,
                trace_state: trace_state.value(i).to_owned(),
                flags: flags.value(i),
                name: name.value(i).to_owned(),
                kind: SpanKind::from_i32(i32::from(kind.value(i))),
                start_time_unix_nano: start_ns,
                end_time_unix_nano: match early_end {
                    Some(c) if !c.is_null(i) => c.value(i),
                    _ => start_ns.wrapping_add(duration.value(i) as u64),
                },
                attributes: attrs_from_json((!attrs.is_null(i)).then(|| attrs.value(i)))?,
                dropped_attributes_count: dropped_attrs.value(i),
                events: events_from_json((!events.is_null(i)).then(|| events.value(i)))?,
                dropped_events_count: dropped_events.value(i),
                links: links_from_json((!links.is_null(i)).then(|| links.value(i)))?,
                dropped_links_count: dropped_links.value(i),
                status: Status {
                    code: StatusCode::from_i32(i32::from(status_code.value(i))),
                    message: status_message.value(i).to_owned(),
                },
            };
            out.push(StoredSpan { resource, scope, span });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use strand_core::{Span, SpanId, TraceId};

    use super::RowDecoder;
    use crate::block::BlockBuilder;
    use crate::testdata::{read_parquet, service_batch, span};

    /// Spans whose parents are earlier rows of their trace (the usual case), later rows
    /// (a child starting before its parent), absent, or one of two copies of an id; in a
    /// trace long enough to be looked up by hash and to cross the writer's chunks.
    fn traces() -> Vec<Span> {
        let tid = |t: u8| TraceId([t; 16]);
        let mut spans = Vec::new();
        // A root and nine children, each starting after its parent.
        spans.extend((0..10).map(|i| span(tid(1), i, (i > 0).then_some(i / 3), "fan", 1_000 + i * 10, 5)));
        // A child that starts before its parent, and one whose parent never arrived.
        spans.push(span(tid(2), 0, None, "root", 2_000, 50));
        spans.push(span(tid(2), 1, Some(0), "early child", 1_990, 5));
        spans.push(span(tid(2), 2, Some(77), "orphan", 2_010, 5));
        // Two spans with one id (a client bug), and a child of that id.
        spans.push(span(tid(3), 5, None, "twin", 3_000, 5));
        spans.push(span(tid(3), 5, None, "twin", 3_001, 5));
        spans.push(span(tid(3), 6, Some(5), "child of a twin", 3_002, 5));
        // A binary tree of TREE spans: past the scan's rows and the writer's 32K chunks,
        // with parents up to 70,000 rows back, the last ones past the rows a parent may be
        // given as a row back in (PARENT_ROWS).
        spans.extend((0..TREE).map(|i| span(tid(4), i, (i > 0).then(|| (i - 1) / 2), "tree", 4_000 + i, 1)));
        spans
    }

    /// A file whose next read fails once when told to.
    struct Flaky {
        data: Vec<u8>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl crate::fs::ReadAt for Flaky {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let from = (offset as usize).min(self.data.len());
            let n = buf.len().min(self.data.len() - from);
            buf[..n].copy_from_slice(&self.data[from..from + n]);
            Ok(n)
        }

        fn len(&self) -> u64 {
            self.data.len() as u64
        }
    }

    /// Small reads served from the read-ahead, large ones straight from the file, and a
    /// read retried after an interruption, all give the file's bytes in order.
    #[test]
    fn a_position_reader_gives_the_files_bytes_in_order() {
        use std::io::Read;
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = std::sync::Arc::new(Flaky { data: data.clone(), fail: false.into() });
        let mut r = super::PosReader::new(file.clone(), 100);
        let mut got = Vec::new();
        for (i, size) in [1, 3, 700, 2, 600, 9, 1, 2000].into_iter().enumerate() {
            if i == 0 || i == 3 || i == 6 {
                file.fail.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let mut buf = vec![0u8; size];
            r.read_exact(&mut buf).expect("reads");
            got.extend(buf);
        }
        assert_eq!(got, data[100..100 + got.len()]);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("reads to the end");
        assert_eq!(rest, data[100 + got.len()..]);
    }

    /// Spans in the tree-shaped trace.
    const TREE: u64 = 140_000;

    #[test]
    fn parents_given_as_rows_back_decode_to_their_ids_across_batches() {
        let spans = traces();
        let mut b = BlockBuilder::new();
        b.append_batch(&service_batch("svc", vec![], Default::default(), spans.clone())).expect("appends");
        let encoded = b.finish("b".into(), 1, 2, Vec::new()).expect("encodes");
        let file = read_parquet(&encoded.spans);
        assert_eq!(file.num_rows(), spans.len());

        // Only the spans without an earlier row holding their parent keep its id: the early
        // child, the orphan and the tree's spans whose parents are past the first
        // PARENT_ROWS rows of their trace.
        let parent_ids = file.column(2);
        let far = (1..TREE).filter(|i| (i - 1) / 2 >= super::PARENT_ROWS).count();
        assert!(far > 0);
        assert_eq!(parent_ids.len() - parent_ids.null_count(), 2 + far);
        assert_eq!(file.schema().field(26).name(), "parent_rows_back");

        let want: HashMap<(TraceId, SpanId, u64), Option<SpanId>> = spans
            .iter()
            .map(|s| ((s.trace_id, s.span_id, s.start_time_unix_nano), s.parent_span_id))
            .collect();
        // Decoded in batches of every size from one row to all of them (cutting traces
        // anywhere), each span has the parent it was written with.
        for size in [3, 1000, 32_768, file.num_rows()] {
            let mut decoder = RowDecoder::default();
            let mut out = Vec::new();
            for first in (0..file.num_rows()).step_by(size) {
                let batch = file.slice(first, size.min(file.num_rows() - first));
                decoder.decode(&batch, first as u64, &mut out).expect("decodes");
            }
            assert_eq!(out.len(), spans.len());
            for s in &out {
                let key = (s.span.trace_id, s.span.span_id, s.span.start_time_unix_nano);
                assert_eq!(
                    Some(&s.span.parent_span_id),
                    want.get(&key),
                    "batches of {size}: {:?}",
                    s.span.name
                );
            }
        }

        // Rows read from the middle of a trace cannot find their parents: an error, not a
        // wrong parent or a panic.
        let mut decoder = RowDecoder::default();
        let mut out = Vec::new();
        let middle = file.num_rows() - TREE as usize + 1000;
        let err = decoder.decode(&file.slice(middle, 100), middle as u64, &mut out);
        assert!(err.is_err(), "decoded {} rows", out.len());
    }
}
