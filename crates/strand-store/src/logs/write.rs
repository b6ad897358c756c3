//! Encoding log records into a block's log files.

use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Int8Builder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use strand_core::{AnyValue, LogBatch, LogRecord, StoredLog};

use super::grams::GramCollector;
use crate::block::json::value_from_json;
use crate::block::json::{attrs_to_json, value_to_json};
use crate::block::write::{
    DictColumn, OriginCache, OriginColumns, ResourceKeys, ScopeKeys, dictionary_schema, write_parquet,
    write_parquet_sorted,
};
use crate::error::FormatError;

/// Rows per data page: small pages make a trace lookup read little.
const PAGE_ROWS: usize = 2048;
/// Rows per row group.
const ROW_GROUP_ROWS: usize = 256 * 1024;

pub(crate) fn logs_schema() -> Schema {
    let fsb = |n: &str, w: i32| Field::new(n, DataType::FixedSizeBinary(w), true);
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let u32f = |n: &str| Field::new(n, DataType::UInt32, false);
    Schema::new(vec![
        fsb("trace_id", 16),
        fsb("span_id", 8),
        Field::new("time_unix_nano", DataType::UInt64, false),
        Field::new("observed_time_unix_nano", DataType::UInt64, false),
        Field::new("severity_number", DataType::Int8, false),
        s("severity_text", false),
        s("body", true),
        s("body_value", true),
        s("attributes", true),
        u32f("dropped_attributes_count"),
        u32f("flags"),
        s("event_name", false),
        s("service_name", false),
        s("resource_attributes", true),
        u32f("resource_dropped_attributes_count"),
        s("resource_schema_url", false),
        s("scope_name", false),
        s("scope_version", false),
        s("scope_attributes", true),
        u32f("scope_dropped_attributes_count"),
        s("scope_schema_url", false),
    ])
}

pub(crate) fn log_traces_schema() -> Schema {
    Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("first_row", DataType::UInt32, false),
        Field::new("rows", DataType::UInt32, false),
    ])
}

fn logs_props(trace_count: u64) -> WriterProperties {
    let col = |n: &str| ColumnPath::from(n);
    // Level 3, not the span blocks' 9: at 9 zstd took 44 % of a cut's CPU (perf, standard
    // log profile of `strand bench logs`) to save 5 % of the bytes (26.8 vs 28.3 per record).
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).expect("3 is a valid zstd level"));
    let mut b = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        // Statistics only for trace ids, as in span blocks (see `spans_props`).
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(col("trace_id"), EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(col("trace_id"), true)
        .set_column_bloom_filter_fpp(col("trace_id"), 0.01)
        .set_column_bloom_filter_max_ndv(col("trace_id"), trace_count.max(1));
    // Bodies, attributes, ids and times are mostly distinct per row: no dictionary, zstd
    // over the page finds the repeated templates instead. The resource and scope attribute
    // JSON repeats row after row; a dictionary would store it in less than a byte per row,
    // but interning a 100-byte string per row doubled the encoding's CPU (3.5 vs 1.6 µs per
    // record, `examples/log_cut_cost.rs`); zstd makes the repeats 0.8 bytes per row.
    for c in [
        "body",
        "body_value",
        "attributes",
        "span_id",
        "time_unix_nano",
        "observed_time_unix_nano",
        "resource_attributes",
        "scope_attributes",
    ] {
        b = b.set_column_dictionary_enabled(col(c), false).set_column_compression(col(c), zstd);
    }
    for c in ["time_unix_nano", "observed_time_unix_nano"] {
        b = b.set_column_encoding(col(c), Encoding::DELTA_BINARY_PACKED);
    }
    b.build()
}

/// Sort key of a record: trace id (0 for none), effective time, fingerprint, then the row
/// it was appended at.
type SortKey = (u128, u64, u64, u32);

/// A block's encoded log files and what its metadata says of them.
pub struct EncodedLogs {
    /// `logs.parquet`.
    pub logs: Vec<u8>,
    /// `log_traces.parquet`.
    pub traces: Vec<u8>,
    /// `log_grams.bin`: the text filter of each row group.
    pub grams: Vec<u8>,
    /// Records written (repeated copies dropped).
    pub count: u64,
    /// Earliest and latest effective record time.
    pub time_range: (u64, u64),
    /// The filter of the records' trace ids (for `filter.bin`).
    pub(crate) filter: crate::cache::TraceFilter,
}

/// Builds a block's log part from records appended in any order: each goes straight into
/// Arrow column builders and a sort key; [`LogBlockBuilder::finish`] sorts, drops repeated
/// copies (the first appended wins) and encodes.
pub struct LogBlockBuilder {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    time: UInt64Builder,
    observed: UInt64Builder,
    severity: Int8Builder,
    severity_text: DictColumn,
    body: StringBuilder,
    body_value: StringBuilder,
    attrs: StringBuilder,
    dropped_attrs: UInt32Builder,
    flags: UInt32Builder,
    event_name: DictColumn,
    origin: OriginColumns,
    keys: Vec<SortKey>,
    /// Bytes appended to each big string column so far (bounded by [`MAX_COLUMN_BYTES`]).
    string_bytes: [usize; 3],
}

/// Most bytes one string column of a block may hold: Arrow's string offsets are `i32`, and
/// appending past them would panic. A cut or merge over it fails with an error instead
/// (the data stays in the WAL or in the blocks merged).
pub const MAX_COLUMN_BYTES: usize = 1 << 30;

impl Default for LogBlockBuilder {
    fn default() -> Self {
        Self {
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            time: UInt64Builder::new(),
            observed: UInt64Builder::new(),
            severity: Int8Builder::new(),
            severity_text: DictColumn::default(),
            body: StringBuilder::new(),
            body_value: StringBuilder::new(),
            attrs: StringBuilder::new(),
            dropped_attrs: UInt32Builder::new(),
            flags: UInt32Builder::new(),
            event_name: DictColumn::default(),
            origin: OriginColumns::default(),
            keys: Vec::new(),
            string_bytes: [0; 3],
        }
    }
}

impl LogBlockBuilder {
    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Records appended (repeated copies included).
    pub fn rows(&self) -> usize {
        self.keys.len()
    }

    /// Appends a batch. Resource and scope attributes are encoded once per group.
    pub fn append_batch(&mut self, batch: &LogBatch) -> Result<(), FormatError> {
        for rl in &batch.resource_logs {
            let res = self.origin.resource_keys(&rl.resource)?;
            for sl in &rl.scope_logs {
                let scope = self.origin.scope_keys(&sl.scope)?;
                for r in &sl.records {
                    self.append(r, rl.resource.service_name(), res, scope)?;
                }
            }
        }
        Ok(())
    }

    /// Appends stored records (for compaction), encoding each distinct resource and scope
    /// once.
    pub fn append_stored<'a>(
        &mut self,
        logs: impl IntoIterator<Item = &'a StoredLog>,
    ) -> Result<(), FormatError> {
        let mut seen = OriginCache::default();
        for l in logs {
            let (res, scope) = seen.keys(&mut self.origin, &l.resource, &l.scope)?;
            self.append(&l.record, l.resource.service_name(), res, scope)?;
        }
        Ok(())
    }

    fn append(
        &mut self,
        r: &LogRecord,
        service: &str,
        res: ResourceKeys,
        scope: ScopeKeys,
    ) -> Result<(), FormatError> {
        let attrs_json = attrs_to_json(&r.attributes);
        let body_json = match &r.body {
            AnyValue::String(_) | AnyValue::Empty => None,
            other => Some(value_to_json(other)),
        };
        // What this row adds to each of the big string columns: body, structured body,
        // attributes (resource and scope JSON are held once per distinct value).
        let adds = [
            r.body.as_str().map_or(0, str::len),
            body_json.as_ref().map_or(0, String::len),
            attrs_json.as_ref().map_or(0, String::len),
        ];
        for (total, add) in self.string_bytes.iter_mut().zip(adds) {
            *total += add;
        }
        if self.string_bytes.iter().any(|b| *b > MAX_COLUMN_BYTES) || self.keys.len() >= u32::MAX as usize {
            return Err(FormatError::invalid(format!(
                "a block's log records would exceed {MAX_COLUMN_BYTES} bytes in one column"
            )));
        }
        let row = self.keys.len() as u32;
        let fingerprint = strand_core::logs::fingerprint(service, r);
        self.keys.push((
            r.trace_id.map_or(0, |t| u128::from_be_bytes(t.0)),
            r.effective_time(),
            fingerprint,
            row,
        ));
        match r.trace_id {
            Some(t) => self.trace_id.append_value(t.0)?,
            None => self.trace_id.append_null(),
        }
        match r.span_id {
            Some(s) => self.span_id.append_value(s.0)?,
            None => self.span_id.append_null(),
        }
        self.time.append_value(r.time_unix_nano);
        self.observed.append_value(r.observed_time_unix_nano);
        self.severity.append_value(r.severity_number as i8);
        self.severity_text.push_value(&r.severity_text)?;
        self.body.append_option(r.body.as_str());
        self.body_value.append_option(body_json);
        self.attrs.append_option(attrs_json);
        self.dropped_attrs.append_value(r.dropped_attributes_count);
        self.flags.append_value(r.flags);
        self.event_name.push_value(&r.event_name)?;
        self.origin.push(res, scope);
        Ok(())
    }

    /// Sorts, drops repeated copies and encodes the log files.
    pub fn finish(mut self) -> Result<EncodedLogs, FormatError> {
        self.keys.sort_unstable();
        self.keys.dedup_by(|later, first| (later.0, later.1, later.2) == (first.0, first.1, first.2));
        let order: Vec<u32> = self.keys.iter().map(|k| k.3).collect();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.observed.finish()),
            Arc::new(self.severity.finish()),
            self.severity_text.finish()?,
            Arc::new(self.body.finish()),
            Arc::new(self.body_value.finish()),
            Arc::new(self.attrs.finish()),
            Arc::new(self.dropped_attrs.finish()),
            Arc::new(self.flags.finish()),
            self.event_name.finish()?,
        ];
        columns.extend(self.origin.finish()?);
        // Rows stay where they were appended; they are written in sorted order.
        let schema = dictionary_schema(&logs_schema(), &["severity_text", "event_name"]);
        let appended = RecordBatch::try_new(Arc::new(schema), columns)?;
        // The lookup index: one row per trace, over the sorted keys (records without a
        // trace, key 0, are not in it).
        let mut index_ids = FixedSizeBinaryBuilder::new(16);
        let mut first_row = UInt32Builder::new();
        let mut rows = UInt32Builder::new();
        let mut i = 0;
        while i < self.keys.len() {
            let t = self.keys[i].0;
            let end = self.keys[i..].iter().position(|k| k.0 != t).map_or(self.keys.len(), |p| i + p);
            if t != 0 {
                index_ids.append_value(t.to_be_bytes())?;
                first_row.append_value(i as u32);
                rows.append_value((end - i) as u32);
            }
            i = end;
        }
        let trace_count = arrow_array::builder::ArrayBuilder::len(&index_ids) as u64;
        let ids: Vec<[u8; 16]> =
            index_ids.values_slice().chunks_exact(16).map(|c| c.try_into().unwrap_or_default()).collect();
        let index = RecordBatch::try_new(
            Arc::new(log_traces_schema()),
            vec![Arc::new(index_ids.finish()), Arc::new(first_row.finish()), Arc::new(rows.finish())],
        )?;
        let index_props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
            .build();
        let min = self.keys.iter().map(|k| k.1).min().unwrap_or(0);
        let max = self.keys.iter().map(|k| k.1).max().unwrap_or(0);
        let (logs, group_rows) = write_parquet_sorted(&appended, &order, logs_props(trace_count))?;
        Ok(EncodedLogs {
            grams: body_grams(&appended, &order, &group_rows)?,
            logs,
            traces: write_parquet(&index, index_props)?,
            count: self.keys.len() as u64,
            time_range: (min, max),
            filter: crate::cache::TraceFilter::new(ids.iter()),
        })
    }
}

/// The text filter of the records of `batch` taken in `order`, one trigram set per row
/// group of `group_rows`.
fn body_grams(batch: &RecordBatch, order: &[u32], group_rows: &[u64]) -> Result<Vec<u8>, FormatError> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let (body, value) = (batch.column(6).as_string::<i32>(), batch.column(7).as_string::<i32>());
    let mut grams = GramCollector::default();
    let mut row = 0usize;
    for &n in group_rows {
        let group = order
            .get(row..row + n as usize)
            .ok_or_else(|| FormatError::invalid("row groups hold more rows than were written"))?;
        for &i in group {
            let i = i as usize;
            if !body.is_null(i) {
                grams.add(body.value(i).as_bytes());
            } else if !value.is_null(i) {
                grams.add_body(&value_from_json(value.value(i))?);
            }
            grams.row();
        }
        grams.end_group();
        row += n as usize;
    }
    Ok(grams.finish())
}
