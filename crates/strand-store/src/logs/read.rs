//! Opening a block's log files; reading records by trace and by search.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int8Type, UInt64Type};
use arrow_array::{Array, RecordBatch, StringArray};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::reader::Length;
use strand_core::{AnyValue, LogQuery, LogRecord, SpanId, StoreError, StoredLog, TraceId, find_attr};

use super::grams::{GramCollector, GramSets, LOG_GRAMS_FILE, needle_grams};
use super::write::logs_schema;
use super::{LOG_TRACES_FILE, LOGS_FILE};
use crate::block::guard;
use crate::block::json::{attrs_from_json, value_from_json};
use crate::block::read::{
    FileReader, IndexEntry, ResourceScopeColumns, SharedParts, check_file, corrupt, expected, fsb, io_err,
    range_selection, read_checked, read_index, trace_index_heap_bytes, u32_column,
};
use crate::block::{BlockMeta, FileChecksum};
use crate::cache::{BlockCache, Part, TraceFilter};
use crate::error::FormatError;
use crate::fs::FileSystem;

/// A block's log part, open: the parquet footer, the text filter and a trace-id filter
/// stay in memory; the trace index is loaded when a lookup needs it and kept in the
/// store's [`BlockCache`].
pub struct LogFiles {
    path: PathBuf,
    file: FileReader,
    footer: ArrowReaderMetadata,
    /// The block's cache key.
    key: Arc<str>,
    fs: Arc<dyn FileSystem>,
    cache: Arc<BlockCache>,
    /// Size and checksum of `log_traces.parquet`.
    index_file: FileChecksum,
    filter: TraceFilter,
    /// The text filter; `None` for blocks written before it.
    grams: Option<GramSets>,
    rows: u64,
    /// Bytes of the log files.
    pub disk_bytes: u64,
}

/// A text filter rebuilt from the records: the file's new bytes and what was wrong with it.
pub type RebuiltFilter = (Vec<u8>, String);

/// Columns a search reads before it knows which rows it wants.
const TIME: usize = 2;
const OBSERVED: usize = 3;
const SEVERITY: usize = 4;
const BODY: usize = 6;
const BODY_VALUE: usize = 7;
const ATTRS: usize = 8;
const SERVICE: usize = 12;
const RES_ATTRS: usize = 13;

impl LogFiles {
    /// Opens the log files of the block in `dir`, checking the record count `meta.json`
    /// gives and, when `full`, every file against its checksum. `filter` is the trace-id
    /// filter from `filter.bin`; without it the trace index is read to build one. A
    /// damaged text filter (`log_grams.bin`, derived from the records) is rebuilt from the
    /// records: it comes back with what was wrong, for the caller to write back.
    pub fn open(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        meta: &BlockMeta,
        key: &Arc<str>,
        cache: &Arc<BlockCache>,
        full: bool,
        filter: Option<TraceFilter>,
    ) -> Result<(Self, Option<RebuiltFilter>), StoreError> {
        let (files, count) = (&meta.files, meta.log_count);
        if full {
            check_file(fs.as_ref(), dir, files, LOGS_FILE)?;
        }
        let index_file = expected(dir, files, LOG_TRACES_FILE)?.clone();
        let path = dir.join(LOGS_FILE);
        let file = FileReader(fs.open_read(&path).map_err(|e| io_err(&path, e))?);
        // The page index is loaded into the cache when rows are read (`read_ranges`).
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Skip);
        let footer = guard(|| Ok(ArrowReaderMetadata::load(&file, options)?))
            .map_err(|e| e.corrupt_at(path.display()))?;
        if footer.schema().fields() != logs_schema().fields() {
            return Err(corrupt(&path, "unexpected schema"));
        }
        let rows = footer.metadata().file_metadata().num_rows() as u64;
        if rows != count {
            return Err(corrupt(&path, format!("{rows} rows, meta.json says {count}")));
        }
        // The trace index is read to be checked, or to build a filter `filter.bin` lacks.
        let filter = match filter {
            Some(f) if !full => f,
            stored => {
                let index_bytes = Bytes::from(read_checked(fs.as_ref(), dir, files, LOG_TRACES_FILE)?);
                let index = decode_log_index(index_bytes, &dir.join(LOG_TRACES_FILE), rows)?;
                match stored {
                    // Read only to be checked: not kept (it would push out what queries use).
                    Some(f) => f,
                    None => {
                        let bytes = trace_index_heap_bytes(&index);
                        let built = TraceFilter::new(index.iter().map(|e| &e.trace_id));
                        cache.insert(key, Part::LogTraceIndex, Arc::new(index), bytes);
                        built
                    }
                }
            }
        };
        let key = key.clone();
        let group_rows: Vec<u64> =
            footer.metadata().row_groups().iter().map(|g| g.num_rows() as u64).collect();
        let stored_grams = files.iter().any(|f| f.name == LOG_GRAMS_FILE).then(|| {
            let bytes = read_checked(fs.as_ref(), dir, files, LOG_GRAMS_FILE)?;
            let sets = GramSets::decode(&bytes, &group_rows)
                .map_err(|e| e.corrupt_at(dir.join(LOG_GRAMS_FILE).display()))?;
            Ok::<_, StoreError>((sets, bytes.len() as u64))
        });
        let mut out = Self {
            disk_bytes: file.len() + index_file.bytes,
            path,
            file,
            footer,
            key,
            fs: fs.clone(),
            cache: cache.clone(),
            index_file,
            filter,
            grams: None,
            rows,
        };
        let mut rebuilt = None;
        match stored_grams {
            Some(Ok((sets, len))) => {
                out.disk_bytes += len;
                out.grams = Some(sets);
            }
            Some(Err(e)) => {
                let mut grams = GramCollector::default();
                let records = out.read_all()?;
                let mut at = records.iter();
                for &n in &group_rows {
                    for l in at.by_ref().take(n as usize) {
                        grams.add_body(&l.record.body);
                        grams.row();
                    }
                    grams.end_group();
                }
                let bytes = grams.finish();
                out.disk_bytes += bytes.len() as u64;
                out.grams =
                    Some(GramSets::decode(&bytes, &group_rows).map_err(|e| e.corrupt_at("rebuilt filter"))?);
                rebuilt = Some((bytes, e.to_string()));
            }
            None => {}
        }
        Ok((out, rebuilt))
    }

    /// Records held (each once).
    pub fn count(&self) -> u64 {
        self.rows
    }

    /// The records of a trace (of one span of it), in file order.
    pub fn read_trace(&self, id: &TraceId, span: Option<SpanId>) -> Result<Vec<StoredLog>, StoreError> {
        if !self.filter.may_contain(&id.0) {
            return Ok(Vec::new());
        }
        let index = self.trace_index()?;
        let Ok(pos) = index.binary_search_by(|e| e.trace_id.cmp(&id.0)) else {
            return Ok(Vec::new());
        };
        let e = index[pos];
        let mut out = self.read_ranges(&[(u64::from(e.first_row), u64::from(e.rows))])?;
        if let Some(span) = span {
            out.retain(|l| l.record.span_id == Some(span));
        }
        Ok(out)
    }

    /// Where each trace's records are, from the cache or `log_traces.parquet`.
    fn trace_index(&self) -> Result<Arc<Vec<IndexEntry>>, StoreError> {
        self.cache.get_or_load(&self.key, Part::LogTraceIndex, || {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            let data =
                read_checked(self.fs.as_ref(), dir, std::slice::from_ref(&self.index_file), LOG_TRACES_FILE)?;
            let index = decode_log_index(Bytes::from(data), &dir.join(LOG_TRACES_FILE), self.rows)?;
            let bytes = trace_index_heap_bytes(&index);
            Ok((index, bytes))
        })
    }

    /// The trace-id filter (for `filter.bin`).
    pub(crate) fn filter(&self) -> &TraceFilter {
        &self.filter
    }

    /// Heap bytes held whatever the cache does (the Parquet footer without its page
    /// index, the trace-id and text filters).
    pub fn resident_bytes(&self) -> u64 {
        let footer = self.footer.metadata().memory_size() as u64;
        footer + self.filter.heap_bytes() + self.grams.as_ref().map_or(0, GramSets::heap_bytes)
    }

    /// Every record (for compaction).
    pub fn read_all(&self) -> Result<Vec<StoredLog>, StoreError> {
        self.read_ranges(&[(0, self.rows)])
    }

    /// The rows (ascending) given, decoded.
    pub fn read_rows(&self, rows: &[u32]) -> Result<Vec<StoredLog>, StoreError> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &r in rows {
            match ranges.last_mut() {
                Some((start, len)) if *start + *len == u64::from(r) => *len += 1,
                _ => ranges.push((u64::from(r), 1)),
            }
        }
        self.read_ranges(&ranges)
    }

    /// The row groups a search must read, with their first rows: for a text (lowercase),
    /// those whose filter may hold it; otherwise all.
    pub fn groups_to_search(&self, lower_text: Option<&str>) -> Vec<(usize, u32)> {
        let needle = lower_text.and_then(needle_grams);
        let mut out = Vec::new();
        let mut row = 0u32;
        for (g, rg) in self.footer.metadata().row_groups().iter().enumerate() {
            let first = row;
            row += rg.num_rows() as u32;
            if let (Some(grams), Some(needle)) = (&self.grams, &needle)
                && !grams.may_contain(g, needle)
            {
                continue;
            }
            out.push((g, first));
        }
        out
    }

    /// Rows matching the query's conditions and time range, with their effective time:
    /// reads only the columns the conditions need, never whole records, in the row groups
    /// [`LogFiles::groups_to_search`] gives, on up to [`SCAN_THREADS`] threads.
    pub fn search(&self, q: &LogQuery, lower_text: Option<&str>) -> Result<Vec<(u64, u32)>, StoreError> {
        let starts = self.groups_to_search(lower_text);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, SCAN_THREADS);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let scan = || -> Result<Vec<(u64, u32)>, FormatError> {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(g, first_row)) = starts.get(i) else { return Ok(out) };
                guard(|| self.search_group(g, first_row, q, lower_text, &mut out))?;
            }
        };
        let results: Vec<Result<Vec<(u64, u32)>, FormatError>> = if threads == 1 || starts.len() < 2 {
            vec![scan()]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads.min(starts.len())).map(|_| s.spawn(scan)).collect();
                handles.into_iter().map(|h| h.join().unwrap_or(Err(FormatError::ReaderPanicked))).collect()
            })
        };
        let mut out = Vec::new();
        for r in results {
            out.extend(r.map_err(|e| e.corrupt_at(self.path.display()))?);
        }
        Ok(out)
    }

    fn search_group(
        &self,
        group: usize,
        first_row: u32,
        q: &LogQuery,
        lower_text: Option<&str>,
        out: &mut Vec<(u64, u32)>,
    ) -> Result<(), FormatError> {
        // A text condition is checked first, on the bodies alone: the other columns are
        // then read only for the rows whose bodies hold the text (none, mostly, for a rare
        // text), not decoded for every row of the group.
        let text_rows = match lower_text {
            Some(needle) => {
                let rows = self.rows_with_text(group, needle)?;
                if rows.is_empty() {
                    return Ok(());
                }
                Some(rows)
            }
            None => None,
        };
        let mut cols = vec![TIME, OBSERVED, SEVERITY];
        if q.service.is_some() {
            cols.push(SERVICE);
        }
        if !q.attributes.is_empty() {
            cols.extend([ATTRS, RES_ATTRS]);
        }
        let mask = ProjectionMask::roots(
            self.footer.metadata().file_metadata().schema_descr(),
            cols.iter().copied(),
        );
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(self.file.clone(), self.footer.clone())
                .with_row_groups(vec![group])
                .with_projection(mask)
                .with_batch_size(8192);
        if let Some(rows) = &text_rows {
            // Runs of consecutive rows, as rows of the file.
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for &r in rows {
                let at = u64::from(first_row) + u64::from(r);
                match runs.last_mut() {
                    Some((start, len)) if *start + *len == at => *len += 1,
                    _ => runs.push((at, 1)),
                }
            }
            let Some((_, selection)) = range_selection(self.footer.metadata(), &runs) else {
                return Ok(());
            };
            builder = builder.with_row_selection(selection);
        }
        let reader = builder.build()?;
        // The row (within the group) of each row read, in order.
        let mut rows_read = 0usize;
        let row_at = |i: usize| -> Result<u32, FormatError> {
            match &text_rows {
                Some(rows) => rows
                    .get(i)
                    .copied()
                    .ok_or_else(|| FormatError::invalid("a row group gave more rows than were selected")),
                None => Ok(i as u32),
            }
        };
        for batch in reader {
            let b = batch?;
            let named = |name: &str| b.column_by_name(name);
            let bad = |what: &str| FormatError::invalid(format!("log column {what} has the wrong type"));
            let u64c = |name: &str| {
                named(name).and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(|| bad(name))
            };
            let strc =
                |name: &str| named(name).and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| bad(name));
            let time = u64c("time_unix_nano")?;
            let observed = u64c("observed_time_unix_nano")?;
            let severity = named("severity_number")
                .and_then(|c| c.as_primitive_opt::<Int8Type>())
                .ok_or_else(|| bad("severity_number"))?;
            let service = if q.service.is_some() { Some(strc("service_name")?) } else { None };
            let attrs = if q.attributes.is_empty() {
                None
            } else {
                Some((strc("attributes")?, strc("resource_attributes")?))
            };
            for i in 0..b.num_rows() {
                let this = first_row.saturating_add(row_at(rows_read + i)?);
                let t = match time.value(i) {
                    0 => observed.value(i),
                    t => t,
                };
                if t < q.range.start_unix_nano || t > q.range.end_unix_nano {
                    continue;
                }
                if (severity.value(i) as u8) < q.min_severity {
                    continue;
                }
                if let (Some(want), Some(col)) = (&q.service, service)
                    && col.value(i) != want
                {
                    continue;
                }
                if let Some((a, r)) = attrs
                    && !attrs_match(&q.attributes, a, r, i)?
                {
                    continue;
                }
                out.push((t, this));
            }
            rows_read += b.num_rows();
        }
        if text_rows.as_ref().is_some_and(|rows| rows.len() != rows_read) {
            return Err(FormatError::invalid("a row group gave fewer rows than were selected"));
        }
        Ok(())
    }

    /// The rows (within row group `group`) whose bodies hold `needle` (lowercase),
    /// ascending.
    fn rows_with_text(&self, group: usize, needle: &str) -> Result<Vec<u32>, FormatError> {
        let mask =
            ProjectionMask::roots(self.footer.metadata().file_metadata().schema_descr(), [BODY, BODY_VALUE]);
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(self.file.clone(), self.footer.clone())
                .with_row_groups(vec![group])
                .with_projection(mask)
                .with_batch_size(8192)
                .build()?;
        let mut rows = Vec::new();
        let mut row = 0u32;
        for batch in reader {
            let b = batch?;
            let strc = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| FormatError::invalid(format!("log column {name} has the wrong type")))
            };
            let hits = text_matches(strc("body")?, strc("body_value")?, needle)?;
            rows.extend(hits.iter().enumerate().filter(|(_, hit)| **hit).map(|(i, _)| row + i as u32));
            row += b.num_rows() as u32;
        }
        Ok(rows)
    }

    fn read_ranges(&self, ranges: &[(u64, u64)]) -> Result<Vec<StoredLog>, StoreError> {
        guard(|| self.read_ranges_unguarded(ranges)).map_err(|e| e.corrupt_at(self.path.display()))
    }

    fn read_ranges_unguarded(&self, ranges: &[(u64, u64)]) -> Result<Vec<StoredLog>, FormatError> {
        let footer = self.cache.get_or_load(&self.key, Part::LogPages, || {
            crate::block::read::with_page_index(&self.footer, &self.file)
        })?;
        let Some((groups, selection)) = range_selection(footer.metadata(), ranges) else {
            return Ok(Vec::new());
        };
        if self.file.0.wants_prefetch() {
            self.file.0.prefetch(&crate::block::read::page_ranges(footer.metadata(), &groups, ranges));
        }
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(self.file.clone(), (*footer).clone())
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_batch_size(8192)
            .build()?;
        let mut decoder = RowDecoder::default();
        let mut out = Vec::new();
        for batch in reader {
            decoder.decode(&batch?, &mut out)?;
        }
        Ok(out)
    }
}

/// Threads one block's search uses at most.
pub const SCAN_THREADS: usize = 4;

/// Which rows' bodies contain `needle` (lowercase), ignoring case. For an ASCII needle the
/// text bodies of the whole batch are lowercased in one pass and searched with one
/// substring finder, each match mapped back to its row; otherwise row by row.
fn text_matches(body: &StringArray, value: &StringArray, needle: &str) -> Result<Vec<bool>, FormatError> {
    let n = body.len();
    let mut hits = vec![false; n];
    if needle.is_ascii() && !needle.is_empty() && n > 0 {
        let offsets = body.value_offsets();
        let start = offsets[0] as usize;
        let end = offsets[n] as usize;
        let lower = body.value_data()[start..end].to_ascii_lowercase();
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let row_end = |row: usize| offsets[row + 1] as usize - start;
        let (mut row, mut from) = (0usize, 0usize);
        while let Some(pos) = finder.find(&lower[from..]) {
            let at = from + pos;
            while row_end(row) <= at {
                row += 1;
            }
            if at + needle.len() <= row_end(row) {
                // Within one body (a match across two bodies does not count).
                hits[row] = !body.is_null(row);
                if row + 1 >= n {
                    break;
                }
                from = row_end(row);
            } else {
                from = at + 1;
            }
        }
    } else {
        for (i, hit) in hits.iter_mut().enumerate() {
            *hit = !body.is_null(i) && strand_core::logs::contains_ignore_case(body.value(i), needle);
        }
    }
    // Structured bodies are searched as their text; no body matches only the empty text.
    for (i, hit) in hits.iter_mut().enumerate() {
        if !body.is_null(i) {
            continue;
        }
        *hit = if value.is_null(i) {
            needle.is_empty()
        } else {
            let record = LogRecord { body: value_from_json(value.value(i))?, ..LogRecord::default() };
            strand_core::logs::contains_ignore_case(&record.body_text(), needle)
        };
    }
    Ok(hits)
}

/// Whether row `i`'s record or resource attributes hold every `want`ed value. A value whose
/// text appears in neither JSON cell cannot match, so most rows are refused without parsing
/// (JSON writes a value's text as it is, unless it needs escapes: such values are always
/// checked by parsing).
fn attrs_match(
    want: &[(String, String)],
    attrs: &StringArray,
    res: &StringArray,
    i: usize,
) -> Result<bool, FormatError> {
    fn cell(a: &StringArray, i: usize) -> Option<&str> {
        (!a.is_null(i)).then(|| a.value(i))
    }
    let cells = [cell(attrs, i), cell(res, i)];
    for (_, v) in want {
        // A number may be written differently in JSON (a double `1e16` for
        // `10000000000000000`): numbers other than integers JSON writes digit for digit
        // are checked by parsing.
        let verbatim_number = v.parse::<i64>().is_ok_and(|i| i.unsigned_abs() < 1_000_000_000_000_000);
        let number = v.parse::<f64>().is_ok();
        let plain = (verbatim_number || !number) && !v.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        let present =
            cells.iter().flatten().any(|c| memchr::memmem::find(c.as_bytes(), v.as_bytes()).is_some());
        if plain && !present {
            return Ok(false);
        }
    }
    let record = attrs_from_json(cells[0])?;
    let resource = attrs_from_json(cells[1])?;
    Ok(want.iter().all(|(k, v)| {
        [&record, &resource].iter().any(|list| {
            find_attr(list, k).and_then(strand_core::search::value_text).as_deref() == Some(v.as_str())
        })
    }))
}

/// Turns rows back into records, sharing equal resources and scopes.
#[derive(Default)]
struct RowDecoder {
    parts: SharedParts,
}

impl RowDecoder {
    fn decode(&mut self, b: &RecordBatch, out: &mut Vec<StoredLog>) -> Result<(), FormatError> {
        let bad = |i: usize, what: &str| FormatError::invalid(format!("log column {i} is not {what}"));
        let s = |i: usize| b.column(i).as_string_opt::<i32>().ok_or_else(|| bad(i, "a string"));
        let u32c = |i: usize| u32_column(b, i);
        let u64c = |i: usize| b.column(i).as_primitive_opt::<UInt64Type>().ok_or_else(|| bad(i, "uint64"));
        let trace_id = fsb(b, 0, 16)?;
        let span_id = fsb(b, 1, 8)?;
        let (time, observed) = (u64c(TIME)?, u64c(OBSERVED)?);
        let severity =
            b.column(SEVERITY).as_primitive_opt::<Int8Type>().ok_or_else(|| bad(SEVERITY, "int8"))?;
        let severity_text = s(5)?;
        let (body, body_value, attrs) = (s(BODY)?, s(BODY_VALUE)?, s(ATTRS)?);
        let dropped = u32c(9)?;
        let flags = u32c(10)?;
        let event_name = s(11)?;
        let parts = ResourceScopeColumns::of(b, RES_ATTRS)?;
        let id_err = |e: strand_core::IdError| FormatError::invalid(e.to_string());
        for i in 0..b.num_rows() {
            let (resource, scope) = self.parts.get(&parts, i)?;
            let body = if !body.is_null(i) {
                AnyValue::String(body.value(i).to_owned())
            } else if !body_value.is_null(i) {
                value_from_json(body_value.value(i))?
            } else {
                AnyValue::Empty
            };
            let record = LogRecord {
                time_unix_nano: time.value(i),
                observed_time_unix_nano: observed.value(i),
                severity_number: severity.value(i) as u8,
                severity_text: severity_text.value(i).to_owned(),
                body,
                attributes: attrs_from_json((!attrs.is_null(i)).then(|| attrs.value(i)))?,
                dropped_attributes_count: dropped.value(i),
                flags: flags.value(i),
                trace_id: if trace_id.is_null(i) {
                    None
                } else {
                    Some(TraceId::from_slice(trace_id.value(i)).map_err(id_err)?)
                },
                span_id: if span_id.is_null(i) {
                    None
                } else {
                    Some(SpanId::from_slice(span_id.value(i)).map_err(id_err)?)
                },
                event_name: event_name.value(i).to_owned(),
            };
            out.push(StoredLog { resource, scope, record });
        }
        Ok(())
    }
}

/// Decodes the log trace index at `path` of a file of `rows` records, checking its order
/// and bounds.
fn decode_log_index(data: Bytes, path: &Path, rows: u64) -> Result<Vec<IndexEntry>, StoreError> {
    let index = guard(|| read_index(data)).map_err(|e| e.corrupt_at(path.display()))?;
    let in_order = index.windows(2).all(|w| w[0].trace_id < w[1].trace_id);
    let in_bounds = index.iter().all(|e| u64::from(e.first_row) + u64::from(e.rows) <= rows);
    if !in_order || !in_bounds {
        return Err(corrupt(path, "log trace index does not match logs.parquet"));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use arrow_array::StringArray;

    use super::*;

    #[test]
    fn text_matches_finds_each_row_once_and_never_across_rows() {
        let body = StringArray::from(vec![
            Some("Payment DECLINED"),
            Some("decl"),
            Some("ined by bank"), // "declined" only across the two rows above
            None,
            Some("x declined declined"),
            Some("Zürich DECLINED"),
        ]);
        let value =
            StringArray::from(vec![None, None, None, Some(r#"{"msg":"Declined twice"}"#), None, None]);
        let hits = text_matches(&body, &value, "declined").expect("matches");
        assert_eq!(hits, [true, false, false, true, true, true]);
        // A needle outside ASCII goes row by row.
        let hits = text_matches(&body, &value, "zürich").expect("matches");
        assert_eq!(hits, [false, false, false, false, false, true]);
        // Sliced arrays (offsets not starting at 0) map matches to the right rows.
        let sliced = body.slice(2, 4);
        let values = value.slice(2, 4);
        let hits = text_matches(&sliced, &values, "declined").expect("matches");
        assert_eq!(hits, [false, true, true, true]);
    }

    #[test]
    fn attribute_prefilter_never_refuses_a_match() {
        let attrs = StringArray::from(vec![
            Some(r#"{"n":4242,"ratio":1e20,"name":"a\"b","flag":true}"#),
            Some(r#"{"n":42}"#),
        ]);
        let res = StringArray::from(vec![Some(r#"{"service.name":"api"}"#), None]);
        let want = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert!(attrs_match(&want("n", "4242"), &attrs, &res, 0).expect("ok"));
        assert!(!attrs_match(&want("n", "4242"), &attrs, &res, 1).expect("ok"));
        assert!(attrs_match(&want("ratio", "100000000000000000000"), &attrs, &res, 0).expect("ok"));
        assert!(attrs_match(&want("name", "a\"b"), &attrs, &res, 0).expect("ok"));
        assert!(attrs_match(&want("flag", "true"), &attrs, &res, 0).expect("ok"));
        let big = StringArray::from(vec![Some(r#"{"size":1e16}"#)]);
        assert!(attrs_match(&want("size", "10000000000000000"), &big, &res, 0).expect("ok"));
        assert!(attrs_match(&want("service.name", "api"), &attrs, &res, 0).expect("ok"));
        assert!(!attrs_match(&want("service.name", "api"), &attrs, &res, 1).expect("ok"));
    }
}
