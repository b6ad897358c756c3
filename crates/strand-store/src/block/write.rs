//! Encoding a set of spans into a block's files.

use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Int8Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, RecordBatch};
use arrow_array::{UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use strand_core::{Resource, Scope, Span, SpanBatch, StatusCode, StoredSpan};

use super::json::{attrs_to_json, write_attrs, write_events, write_links};
use super::{BlockMeta, FileChecksum, PARENT_ROWS_VERSION};
use crate::error::FormatError;

/// Rows per data page: small pages make a trace lookup read little.
const PAGE_ROWS: usize = 2048;
/// Rows per row group.
const ROW_GROUP_ROWS: usize = 256 * 1024;
/// Rows put in sorted order and handed to the Parquet writer at a time by a cut.
pub(crate) const TAKE_ROWS: usize = 16 * PAGE_ROWS;

/// A block ready to be written: file contents and metadata.
pub struct EncodedBlock {
    /// `spans.parquet`.
    pub spans: Vec<u8>,
    /// `traces.parquet`.
    pub traces: Vec<u8>,
    /// The trace ids' filter (for `filter.bin`).
    pub(crate) filter: crate::cache::TraceFilter,
    /// `meta.json` content.
    pub meta: BlockMeta,
}

/// The columns of `spans.parquet` in every version, `trace_id` to `dropped_links_count`.
fn span_fields() -> Vec<Field> {
    let fsb = |n: &str, w: i32, null: bool| Field::new(n, DataType::FixedSizeBinary(w), null);
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let u32f = |n: &str| Field::new(n, DataType::UInt32, false);
    vec![
        fsb("trace_id", 16, false),
        fsb("span_id", 8, false),
        fsb("parent_span_id", 8, true),
        s("trace_state", false),
        u32f("flags"),
        s("name", false),
        Field::new("kind", DataType::Int8, false),
        Field::new("start_time_unix_nano", DataType::UInt64, false),
        Field::new("duration_nano", DataType::Int64, false),
        Field::new("status_code", DataType::Int8, false),
        s("status_message", false),
        s("service_name", false),
        s("resource_attributes", true),
        u32f("resource_dropped_attributes_count"),
        s("resource_schema_url", false),
        s("scope_name", false),
        s("scope_version", false),
        s("scope_attributes", true),
        u32f("scope_dropped_attributes_count"),
        s("scope_schema_url", false),
        s("attributes", true),
        u32f("dropped_attributes_count"),
        s("events", true),
        u32f("dropped_events_count"),
        s("links", true),
        u32f("dropped_links_count"),
    ]
}

/// The schema of `spans.parquet`: the columns of every version, then (version 4 on, when
/// `parent_rows`) [`PARENT_ROWS_BACK_COLUMN`], then (when `early_end`)
/// [`EARLY_END_COLUMN`].
pub(crate) fn spans_schema_of(parent_rows: bool, early_end: bool) -> Schema {
    let mut fields = span_fields();
    if parent_rows {
        fields.push(Field::new(PARENT_ROWS_BACK_COLUMN, DataType::UInt32, true));
    }
    if early_end {
        fields.push(Field::new(EARLY_END_COLUMN, DataType::UInt64, true));
    }
    Schema::new(fields)
}

/// The schema blocks are written with; a block holding a span whose end precedes its start
/// has one more column ([`spans_schema_early_end`]).
pub(crate) fn spans_schema() -> Schema {
    spans_schema_of(true, false)
}

/// The spans schema of a block holding a span whose end precedes its start: the same
/// columns, then that span's end time (null on every other row). `duration_nano` is 0 on
/// such a row, so it is never negative.
pub(crate) fn spans_schema_early_end() -> Schema {
    spans_schema_of(true, true)
}

/// The column holding the end time of a span that ends before it starts.
pub(crate) const EARLY_END_COLUMN: &str = "end_before_start_unix_nano";

/// The column giving a span's parent as an earlier row of its trace: the row this many
/// rows before its own (version 4 on). `parent_span_id` is then null; it holds the parent
/// only of a span whose parent is not an earlier row of its trace in the block.
pub(crate) const PARENT_ROWS_BACK_COLUMN: &str = "parent_rows_back";

/// A parent given as a row back is one of the first this many rows of its trace: a reader
/// holds the span ids of those only.
pub(crate) const PARENT_ROWS: u64 = 65_536;

/// The position of [`PARENT_ROWS_BACK_COLUMN`] in a version 4 schema.
const PARENT_ROWS_BACK: usize = 26;

pub(crate) fn traces_schema() -> Schema {
    Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("first_row", DataType::UInt32, false),
        Field::new("span_count", DataType::UInt32, false),
        Field::new("root_service", DataType::Utf8, false),
        Field::new("root_name", DataType::Utf8, false),
        Field::new("start_time_unix_nano", DataType::UInt64, false),
        Field::new("duration_nano", DataType::UInt64, false),
        Field::new("error_count", DataType::UInt32, false),
        Field::new("services", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
    ])
}

fn spans_props(trace_count: u64) -> WriterProperties {
    let col = |n: &str| ColumnPath::from(n);
    // Only the JSON and time columns are compressed. The rest are random ids or dictionary
    // or RLE encoded already, where zstd saves little; and parquet-rs builds a zstd
    // compressor and decompressor for every compressed column chunk it reads, which made
    // context creation over half of a trace lookup's CPU when all 26 columns used zstd.
    // Parents are mostly rows a few rows back (dictionary and bit packing take those to
    // under a byte), `parent_span_id` mostly null. Times are split into byte streams,
    // whose high bytes zstd takes to almost nothing: 30.5 -> 27.2 bytes per span on the
    // standard profile, against delta encoding, whose widths the jumps between traces set.
    // Level 9 against lower (1M spans, alternated, 2026-12-07): 6 took no less CPU in the
    // cut and 0.4 bytes per span more; 3 took 0.5 µs per span less and 2.6 bytes more.
    let zstd = Compression::ZSTD(ZstdLevel::try_new(9).expect("9 is a valid zstd level"));
    let mut b = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_column_compression(col("attributes"), zstd)
        .set_column_compression(col("events"), zstd)
        .set_column_compression(col("links"), zstd)
        .set_column_compression(col("start_time_unix_nano"), zstd)
        .set_column_compression(col("duration_nano"), zstd)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        // Statistics only for trace ids (lookups skip pages by them). Rows are sorted by
        // trace id, so every row group holds every service, name and time range: other
        // columns' minima and maxima would skip nothing, and comparing every string for
        // them was an eighth of a cut's CPU (perf, standard profile).
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(col("trace_id"), EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(col("trace_id"), true)
        .set_column_bloom_filter_fpp(col("trace_id"), 0.01)
        .set_column_bloom_filter_max_ndv(col("trace_id"), trace_count.max(1));
    // No dictionaries for values distinct on almost every row: interning each one (the
    // JSON columns' hundred bytes) costs CPU until the dictionary gives up.
    for c in [
        "span_id",
        "parent_span_id",
        "start_time_unix_nano",
        "duration_nano",
        "attributes",
        "events",
        "links",
    ] {
        b = b.set_column_dictionary_enabled(col(c), false);
    }
    for c in ["start_time_unix_nano", "duration_nano"] {
        b = b.set_column_encoding(col(c), Encoding::BYTE_STREAM_SPLIT);
    }
    b.build()
}

pub(crate) fn write_parquet(batch: &RecordBatch, props: WriterProperties) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(out)
}

/// Writes the rows of `appended` in `order` (positions in it) as a Parquet file, also
/// giving the row count of each row group written. The order is taken a chunk at a time
/// into the writer, which encodes each chunk's pages at once: besides the file, the caller's
/// one copy of the data is all that is held, not a second, sorted one.
pub(crate) fn write_parquet_sorted(
    appended: &RecordBatch,
    order: &[u32],
    props: WriterProperties,
) -> Result<(Vec<u8>, Vec<u64>), FormatError> {
    let mut out = Vec::new();
    // Columns held as dictionaries are stored as the strings they hold: without the Arrow
    // schema in the file, readers see the plain Parquet string columns.
    let options = ArrowWriterOptions::new().with_properties(props).with_skip_arrow_metadata(true);
    let mut w = ArrowWriter::try_new_with_options(&mut out, appended.schema(), options)?;
    for chunk in order.chunks(TAKE_ROWS) {
        let chunk = UInt32Array::from_iter_values(chunk.iter().copied());
        let sorted = appended
            .columns()
            .iter()
            .map(|c| arrow_select::take::take(c.as_ref(), &chunk, None))
            .collect::<Result<Vec<_>, _>>()?;
        w.write(&RecordBatch::try_new(appended.schema(), sorted)?)?;
    }
    let meta = w.close()?;
    let rows = meta.row_groups().iter().map(|g| g.num_rows() as u64).collect();
    Ok((out, rows))
}

fn append_json<T: ?Sized>(
    b: &mut StringBuilder,
    items: &T,
    empty: bool,
    write: impl FnOnce(&mut StringBuilder, &T),
) {
    if empty {
        b.append_null();
    } else {
        write(b, items);
        b.append_value("");
    }
}

/// Sort key of a span: trace id, start time, span id (as big-endian integers, so they
/// order like the bytes but compare in a few instructions), then the row it was appended
/// at, so among copies of one span the first appended sorts first.
type SortKey = (u128, u64, u64, u32);

/// Keys of one resource's values in the dictionary columns, found once per resource.
#[derive(Clone, Copy)]
pub(crate) struct ResourceKeys {
    service: i32,
    attrs: Option<i32>,
    dropped: u32,
    schema: i32,
}

/// Keys of one scope's values in the dictionary columns, found once per scope.
#[derive(Clone, Copy)]
pub(crate) struct ScopeKeys {
    name: i32,
    version: i32,
    attrs: Option<i32>,
    dropped: u32,
    schema: i32,
}

/// The columns from a row's resource and scope, `service_name` to `scope_schema_url` in
/// both span and log blocks: the same few values on every row of a resource, so held as
/// dictionaries.
#[derive(Default)]
pub(crate) struct OriginColumns {
    service: DictColumn,
    res_attrs: DictColumn,
    res_dropped: UInt32Builder,
    res_schema: DictColumn,
    scope_name: DictColumn,
    scope_version: DictColumn,
    scope_attrs: DictColumn,
    scope_dropped: UInt32Builder,
    scope_schema: DictColumn,
}

impl OriginColumns {
    pub(crate) fn resource_keys(&mut self, resource: &Resource) -> Result<ResourceKeys, FormatError> {
        Ok(ResourceKeys {
            service: self.service.key(resource.service_name())?,
            attrs: attrs_to_json(&resource.attributes).map(|j| self.res_attrs.key(&j)).transpose()?,
            dropped: resource.dropped_attributes_count,
            schema: self.res_schema.key(&resource.schema_url)?,
        })
    }

    pub(crate) fn scope_keys(&mut self, scope: &Scope) -> Result<ScopeKeys, FormatError> {
        Ok(ScopeKeys {
            name: self.scope_name.key(&scope.name)?,
            version: self.scope_version.key(&scope.version)?,
            attrs: attrs_to_json(&scope.attributes).map(|j| self.scope_attrs.key(&j)).transpose()?,
            dropped: scope.dropped_attributes_count,
            schema: self.scope_schema.key(&scope.schema_url)?,
        })
    }

    /// Appends one row.
    pub(crate) fn push(&mut self, res: ResourceKeys, scope: ScopeKeys) {
        self.service.push(Some(res.service));
        self.res_attrs.push(res.attrs);
        self.res_dropped.append_value(res.dropped);
        self.res_schema.push(Some(res.schema));
        self.scope_name.push(Some(scope.name));
        self.scope_version.push(Some(scope.version));
        self.scope_attrs.push(scope.attrs);
        self.scope_dropped.append_value(scope.dropped);
        self.scope_schema.push(Some(scope.schema));
    }

    /// The nine columns, `service_name` to `scope_schema_url`, of the rows pushed since
    /// the last call. The distinct values stay: keys found before remain valid.
    pub(crate) fn finish(&mut self) -> Result<[ArrayRef; 9], FormatError> {
        Ok([
            self.service.finish_keeping_values()?,
            self.res_attrs.finish_keeping_values()?,
            Arc::new(self.res_dropped.finish()),
            self.res_schema.finish_keeping_values()?,
            self.scope_name.finish_keeping_values()?,
            self.scope_version.finish_keeping_values()?,
            self.scope_attrs.finish_keeping_values()?,
            Arc::new(self.scope_dropped.finish()),
            self.scope_schema.finish_keeping_values()?,
        ])
    }
}

/// The keys of the resources and scopes of stored rows (compaction), found once per
/// distinct resource and scope. Keyed by address: every row handed to one cache must stay
/// alive while it is used.
#[derive(Default)]
pub(crate) struct OriginCache {
    resources: std::collections::HashMap<usize, ResourceKeys>,
    scopes: std::collections::HashMap<usize, ScopeKeys>,
}

impl OriginCache {
    pub(crate) fn keys(
        &mut self,
        columns: &mut OriginColumns,
        resource: &Arc<Resource>,
        scope: &Arc<Scope>,
    ) -> Result<(ResourceKeys, ScopeKeys), FormatError> {
        let res = match self.resources.entry(Arc::as_ptr(resource) as usize) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(e) => *e.insert(columns.resource_keys(resource)?),
        };
        let scope = match self.scopes.entry(Arc::as_ptr(scope) as usize) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(e) => *e.insert(columns.scope_keys(scope)?),
        };
        Ok((res, scope))
    }
}

/// The string columns of `spans.parquet` a cut holds as [`DictColumn`]s, besides those of
/// [`OriginColumns`].
const DICT_COLUMNS: &[&str] = &["trace_state", "name", "status_message"];

/// The columns of [`OriginColumns`] held as dictionaries.
const ORIGIN_DICT_COLUMNS: &[&str] = &[
    "service_name",
    "resource_attributes",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_attributes",
    "scope_schema_url",
];

/// `schema` with the string columns named in `columns` and those of [`OriginColumns`] as
/// dictionaries of strings (how a cut holds them; Parquet stores them as the plain string
/// columns of `schema`).
pub(crate) fn dictionary_schema(schema: &Schema, columns: &[&str]) -> Schema {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match columns.iter().chain(ORIGIN_DICT_COLUMNS).any(|c| c == f.name()) {
                true => Arc::new(f.as_ref().clone().with_data_type(dict.clone())),
                false => f.clone(),
            })
            .collect::<Vec<_>>(),
    )
}

/// A string column whose values repeat (those of a resource or scope, span names): rows
/// hold keys into the distinct values, so a resource's attributes are held once per cut
/// instead of once per span (they were over half of a cut's memory).
#[derive(Default)]
pub(crate) struct DictColumn {
    keys: Int32Builder,
    values: StringBuilder,
    /// Keys of the distinct values, by the hash of the value. std's keyed hasher: values
    /// come from the network, and must not be made to collide.
    table: hashbrown::HashTable<i32>,
    hasher: std::hash::RandomState,
}

impl DictColumn {
    /// The key of `v`, added to the distinct values if new. Fails rather than pass what
    /// Arrow's `i32` string offsets hold ([`crate::logs::MAX_COLUMN_BYTES`] of values).
    pub(crate) fn key(&mut self, v: &str) -> Result<i32, FormatError> {
        use std::hash::BuildHasher;
        let Self { values, table, hasher, .. } = self;
        let hash = hasher.hash_one(v.as_bytes());
        if let Some(&k) = table.find(hash, |&k| value_of(values, k) == v.as_bytes()) {
            return Ok(k);
        }
        if values.values_slice().len() + v.len() > crate::logs::MAX_COLUMN_BYTES {
            return Err(FormatError::invalid(format!(
                "a block's distinct values would exceed {} bytes in one column",
                crate::logs::MAX_COLUMN_BYTES
            )));
        }
        let k = arrow_array::builder::ArrayBuilder::len(values) as i32;
        values.append_value(v);
        table.insert_unique(hash, k, |&k| hasher.hash_one(value_of(values, k)));
        Ok(k)
    }

    /// Appends a row holding the value of `key` (from [`DictColumn::key`]), or null.
    pub(crate) fn push(&mut self, key: Option<i32>) {
        self.keys.append_option(key);
    }

    /// Appends a row holding `v`.
    pub(crate) fn push_value(&mut self, v: &str) -> Result<(), FormatError> {
        let k = self.key(v)?;
        self.keys.append_value(k);
        Ok(())
    }

    /// The rows pushed since the last call as a column, keeping the distinct values (and
    /// so the keys already handed out) for the rows that follow. The column's dictionary
    /// holds only the values its rows use, copied once each: a cut's chunks do not each
    /// copy every value the cut has met.
    pub(crate) fn finish_keeping_values(&mut self) -> Result<ArrayRef, FormatError> {
        /// Values up to this many bytes are copied whole into each chunk's column (the
        /// usual few resources and scopes): cheaper than finding the ones its rows use.
        const COPY_WHOLE_BYTES: usize = 64 << 10;
        let keys = self.keys.finish();
        if self.values.values_slice().len() <= COPY_WHOLE_BYTES {
            let values = Arc::new(self.values.finish_cloned());
            return Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values)?));
        }
        // Chunk keys by value key; -1 for a value no row of the chunk has used yet.
        let mut chunk_key = vec![-1i32; arrow_array::builder::ArrayBuilder::len(&self.values)];
        let mut values = StringBuilder::new();
        let mut remapped = Int32Builder::with_capacity(keys.len());
        for k in keys.iter() {
            let Some(k) = k else {
                remapped.append_null();
                continue;
            };
            let slot = chunk_key
                .get_mut(k as usize)
                .ok_or_else(|| FormatError::invalid("dictionary key out of range"))?;
            if *slot < 0 {
                *slot = arrow_array::builder::ArrayBuilder::len(&values) as i32;
                let value = std::str::from_utf8(value_of(&self.values, k))
                    .map_err(|_| FormatError::invalid("a dictionary value is not UTF-8"))?;
                values.append_value(value);
            }
            remapped.append_value(*slot);
        }
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(remapped.finish(), Arc::new(values.finish()))?))
    }

    /// The column, leaving the builder empty.
    pub(crate) fn finish(&mut self) -> Result<ArrayRef, FormatError> {
        self.table.clear();
        let keys = self.keys.finish();
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(self.values.finish()))?))
    }
}

/// The bytes of distinct value `k` of a [`DictColumn`].
fn value_of(values: &StringBuilder, k: i32) -> &[u8] {
    let o = values.offsets_slice();
    &values.values_slice()[o[k as usize] as usize..o[k as usize + 1] as usize]
}

/// Arrow column builders for the rows of `spans.parquet` (one chunk of a cut or a merge,
/// or a whole [`BlockBuilder`]), with the string columns that repeat held as dictionaries.
struct SpanColumns {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent: FixedSizeBinaryBuilder,
    trace_state: DictColumn,
    flags: UInt32Builder,
    name: DictColumn,
    kind: Int8Builder,
    start: UInt64Builder,
    duration: Int64Builder,
    status_code: Int8Builder,
    status_message: DictColumn,
    /// Kept across [`SpanColumns::finish`]: the keys of resources and scopes found once
    /// stay valid for every chunk of a cut.
    origin: OriginColumns,
    attrs: StringBuilder,
    dropped_attrs: UInt32Builder,
    events: StringBuilder,
    dropped_events: UInt32Builder,
    links: StringBuilder,
    dropped_links: UInt32Builder,
    /// Rows (in append order) of spans ending before they start, with their end times:
    /// rare, so the column is built only at the end, and only when there are any.
    early_ends: Vec<(u32, u64)>,
    rows: u32,
}

impl SpanColumns {
    fn new() -> Self {
        Self {
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            parent: FixedSizeBinaryBuilder::new(8),
            trace_state: DictColumn::default(),
            flags: UInt32Builder::new(),
            name: DictColumn::default(),
            kind: Int8Builder::new(),
            start: UInt64Builder::new(),
            duration: Int64Builder::new(),
            status_code: Int8Builder::new(),
            status_message: DictColumn::default(),
            origin: OriginColumns::default(),
            attrs: StringBuilder::new(),
            dropped_attrs: UInt32Builder::new(),
            events: StringBuilder::new(),
            dropped_events: UInt32Builder::new(),
            links: StringBuilder::new(),
            dropped_links: UInt32Builder::new(),
            early_ends: Vec::new(),
            rows: 0,
        }
    }

    fn append(&mut self, sp: &Span, res: ResourceKeys, scope: ScopeKeys) -> Result<(), FormatError> {
        let row = self.rows;
        self.rows += 1;
        self.trace_id.append_value(sp.trace_id.0)?;
        self.span_id.append_value(sp.span_id.0)?;
        match sp.parent_span_id {
            Some(p) => self.parent.append_value(p.0)?,
            None => self.parent.append_null(),
        }
        self.trace_state.push_value(&sp.trace_state)?;
        self.flags.append_value(sp.flags);
        self.name.push_value(&sp.name)?;
        self.kind.append_value(sp.kind as i8);
        self.start.append_value(sp.start_time_unix_nano);
        // A span ending before it starts keeps its end apart; its duration is 0.
        let (start, end) = (sp.start_time_unix_nano, sp.end_time_unix_nano);
        if end < start {
            self.early_ends.push((row, end));
        }
        self.duration.append_value(end.saturating_sub(start).min(i64::MAX as u64) as i64);
        self.status_code.append_value(sp.status.code as i8);
        self.status_message.push_value(&sp.status.message)?;
        self.origin.push(res, scope);
        append_json(&mut self.attrs, &sp.attributes[..], sp.attributes.is_empty(), write_attrs);
        self.dropped_attrs.append_value(sp.dropped_attributes_count);
        append_json(&mut self.events, &sp.events[..], sp.events.is_empty(), write_events);
        self.dropped_events.append_value(sp.dropped_events_count);
        append_json(&mut self.links, &sp.links[..], sp.links.is_empty(), write_links);
        self.dropped_links.append_value(sp.dropped_links_count);
        Ok(())
    }

    /// The rows appended since the last call, as a batch of the dictionary form of the
    /// spans schema (with the early-end column when `early_end`, which must be set when
    /// any row ends before it starts), leaving the builders empty.
    fn finish(&mut self, early_end: bool) -> Result<RecordBatch, FormatError> {
        if !early_end && !self.early_ends.is_empty() {
            return Err(FormatError::invalid(
                "a span ends before it starts in a block begun without that column",
            ));
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent.finish()),
            self.trace_state.finish()?,
            Arc::new(self.flags.finish()),
            self.name.finish()?,
            Arc::new(self.kind.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status_code.finish()),
            self.status_message.finish()?,
        ];
        columns.extend(self.origin.finish()?);
        columns.extend::<[ArrayRef; 6]>([
            Arc::new(self.attrs.finish()),
            Arc::new(self.dropped_attrs.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.dropped_events.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.dropped_links.finish()),
        ]);
        // Filled in from the sorted rows (`ParentRows`).
        columns.push(arrow_array::new_null_array(&DataType::UInt32, self.rows as usize));
        if early_end {
            let mut ends = vec![None; self.rows as usize];
            for (row, end) in self.early_ends.drain(..) {
                ends[row as usize] = Some(end);
            }
            columns.push(Arc::new(UInt64Array::from(ends)));
        }
        self.rows = 0;
        Ok(RecordBatch::try_new(span_batch_schema(early_end), columns)?)
    }
}

/// The schema of the batches [`SpanColumns`] builds.
fn span_batch_schema(early_end: bool) -> Arc<Schema> {
    let schema = if early_end { spans_schema_early_end() } else { spans_schema() };
    Arc::new(dictionary_schema(&schema, DICT_COLUMNS))
}

/// Writes `spans.parquet` from rows handed over in sorted order (trace id, start, span id),
/// a chunk at a time, summarising the traces for `traces.parquet` as they pass: the file
/// and the summaries are all it holds besides the chunk being built.
pub(crate) struct SortedSpans {
    writer: ArrowWriter<Vec<u8>>,
    early_end: bool,
    columns: SpanColumns,
    summaries: Summaries,
    parents: ParentRows,
    rows: u64,
    min_start: u64,
    max_end: u64,
}

impl SortedSpans {
    /// A writer for a block of about `trace_count` traces (sizes the trace id filter);
    /// `early_end` when a span ends before it starts (the block gets that column).
    pub(crate) fn new(early_end: bool, trace_count: u64) -> Result<Self, FormatError> {
        // Columns held as dictionaries are stored as the strings they hold: without the
        // Arrow schema in the file, readers see the plain Parquet string columns.
        let options = ArrowWriterOptions::new()
            .with_properties(spans_props(trace_count))
            .with_skip_arrow_metadata(true);
        let writer = ArrowWriter::try_new_with_options(Vec::new(), span_batch_schema(early_end), options)?;
        Ok(Self {
            writer,
            early_end,
            columns: SpanColumns::new(),
            summaries: Summaries::default(),
            parents: ParentRows::default(),
            rows: 0,
            min_start: u64::MAX,
            max_end: 0,
        })
    }

    /// The dictionary keys of a resource and a scope, for [`SortedSpans::push`]; found
    /// once per distinct resource and scope.
    pub(crate) fn origin_keys(
        &mut self,
        resource: &Resource,
        scope: &Scope,
    ) -> Result<(ResourceKeys, ScopeKeys), FormatError> {
        Ok((self.columns.origin.resource_keys(resource)?, self.columns.origin.scope_keys(scope)?))
    }

    /// Appends the next row in sorted order.
    pub(crate) fn push(
        &mut self,
        sp: &Span,
        (res, scope): (ResourceKeys, ScopeKeys),
    ) -> Result<(), FormatError> {
        self.columns.append(sp, res, scope)?;
        if self.columns.rows as usize >= TAKE_ROWS {
            let chunk = self.columns.finish(self.early_end)?;
            self.write(&chunk)?;
        }
        Ok(())
    }

    /// Writes rows that follow, in sorted order, those written so far.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), FormatError> {
        self.summaries.add_sorted(batch, self.rows)?;
        let (start, end) = row_times(batch)?;
        for (s, e) in start.iter().zip(end) {
            self.min_start = self.min_start.min(*s);
            self.max_end = self.max_end.max(e);
        }
        let batch = self.parents.resolve(batch, self.rows)?;
        self.rows += batch.num_rows() as u64;
        self.writer.write(&batch)?;
        Ok(())
    }

    /// Writes the last rows and encodes the block's span files and metadata (naming no
    /// compacted blocks: the block's writer fills those in).
    pub(crate) fn finish(
        mut self,
        id: String,
        min_received_unix_nano: u64,
        max_received_unix_nano: u64,
    ) -> Result<EncodedBlock, FormatError> {
        if self.columns.rows > 0 {
            let chunk = self.columns.finish(self.early_end)?;
            self.write(&chunk)?;
        }
        let spans = self.writer.into_inner()?;
        let traces = self.summaries.encode()?;
        let list = &self.summaries.list;
        let hex =
            |t: Option<&Summary>| t.map(|t| strand_core::TraceId(t.trace_id).to_hex()).unwrap_or_default();
        let meta = BlockMeta {
            format_version: PARENT_ROWS_VERSION,
            id,
            span_count: self.rows,
            trace_count: list.len() as u64,
            min_start_unix_nano: if self.rows == 0 { 0 } else { self.min_start },
            max_end_unix_nano: self.max_end,
            min_received_unix_nano,
            max_received_unix_nano,
            min_trace_id: hex(list.first()),
            max_trace_id: hex(list.last()),
            compacted_from: Vec::new(),
            compaction_level: 0,
            log_count: 0,
            min_log_time_unix_nano: 0,
            max_log_time_unix_nano: 0,
            files: vec![
                FileChecksum::of("spans.parquet", &spans),
                FileChecksum::of("traces.parquet", &traces),
            ],
            handoff_unix_nano: None,
        };
        let filter = crate::cache::TraceFilter::new(list.iter().map(|s| &s.trace_id));
        Ok(EncodedBlock { spans, traces, filter, meta })
    }
}

/// Finds, for rows handed over in sorted order, the earlier row of its trace that holds
/// each span's parent, so `spans.parquet` stores a few rows back instead of an eight-byte
/// id: the parent column was 5 of 34.4 bytes a span on the standard profile, distances
/// take under one. A span whose parent is not an earlier row of its trace in the block (a root's
/// child starting first, a parent in another block or never received) keeps its
/// `parent_span_id`; so does one whose parent is past the first [`PARENT_ROWS`] rows of
/// its trace, which bounds what writers and readers hold for one huge trace.
#[derive(Default)]
struct ParentRows {
    /// The trace of the last row.
    trace: Option<[u8; 16]>,
    /// Rows of it handed over so far.
    trace_rows: u64,
    /// Its rows so far (up to [`PARENT_ROWS`]): span id, row.
    rows: Vec<(u64, u64)>,
    /// The same by span id (the last row of each), once the trace has more rows than a
    /// scan should look through. std's keyed hasher: span ids come from the network.
    by_id: Option<std::collections::HashMap<u64, u64>>,
}

impl ParentRows {
    /// Rows of a trace looked through one by one; past them, by a hash map.
    const SCAN_ROWS: usize = 32;

    /// `batch` (rows that follow `first_row` rows already handed over) with its parents
    /// given as rows back where they can be.
    fn resolve(&mut self, batch: &RecordBatch, first_row: u64) -> Result<RecordBatch, FormatError> {
        use arrow_array::cast::AsArray;
        let bad = |what: &str| FormatError::invalid(format!("{what} column has the wrong type"));
        let trace_id = batch.column(0).as_fixed_size_binary_opt().ok_or_else(|| bad("trace_id"))?;
        let span_id = batch.column(1).as_fixed_size_binary_opt().ok_or_else(|| bad("span_id"))?;
        let parent = batch.column(2).as_fixed_size_binary_opt().ok_or_else(|| bad("parent"))?;
        let n = batch.num_rows();
        let mut parents = FixedSizeBinaryBuilder::with_capacity(n, 8);
        let mut back = UInt32Builder::with_capacity(n);
        let id_of = |a: &arrow_array::FixedSizeBinaryArray, r: usize| -> Result<u64, FormatError> {
            let bytes: [u8; 8] = a.value(r).try_into().map_err(|_| FormatError::invalid("span id width"))?;
            Ok(u64::from_be_bytes(bytes))
        };
        for r in 0..n {
            let row = first_row + r as u64;
            let tid: [u8; 16] =
                trace_id.value(r).try_into().map_err(|_| FormatError::invalid("trace id width"))?;
            if self.trace != Some(tid) {
                self.trace = Some(tid);
                self.rows.clear();
                self.rows.shrink_to(Self::SCAN_ROWS * 4);
                self.by_id = None;
                self.trace_rows = 0;
            }
            if arrow_array::Array::is_null(parent, r) {
                parents.append_null();
                back.append_null();
            } else {
                let p = id_of(parent, r)?;
                let earlier = match &self.by_id {
                    Some(map) => map.get(&p).copied(),
                    None => self.rows.iter().rev().find(|(id, _)| *id == p).map(|&(_, at)| at),
                };
                match earlier.and_then(|at| u32::try_from(row - at).ok()) {
                    Some(d) => {
                        parents.append_null();
                        back.append_value(d);
                    }
                    None => {
                        parents.append_value(p.to_be_bytes())?;
                        back.append_null();
                    }
                }
            }
            let id = id_of(span_id, r)?;
            self.trace_rows += 1;
            match &mut self.by_id {
                _ if self.trace_rows > PARENT_ROWS => {}
                Some(map) => {
                    map.insert(id, row);
                }
                None if self.rows.len() < Self::SCAN_ROWS => self.rows.push((id, row)),
                None => {
                    self.rows.push((id, row));
                    self.by_id = Some(self.rows.drain(..).collect());
                }
            }
        }
        let mut columns = batch.columns().to_vec();
        columns[2] = Arc::new(parents.finish());
        columns[PARENT_ROWS_BACK] = Arc::new(back.finish());
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }
}

/// Each row's start and end time (the early-end column's value where it has one).
fn row_times(batch: &RecordBatch) -> Result<(&[u64], impl Iterator<Item = u64> + '_), FormatError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, UInt64Type};
    let bad = || FormatError::invalid("time column has the wrong type");
    let start = batch.column(7).as_primitive_opt::<UInt64Type>().ok_or_else(bad)?;
    let duration = batch.column(8).as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
    let early = match batch.column_by_name(EARLY_END_COLUMN) {
        Some(c) => Some(c.as_primitive_opt::<UInt64Type>().ok_or_else(bad)?),
        None => None,
    };
    let starts = start.values();
    let ends =
        (0..batch.num_rows()).map(move |r| match early.filter(|e| arrow_array::Array::is_valid(e, r)) {
            Some(e) => e.value(r),
            None => starts[r].wrapping_add(duration.value(r) as u64),
        });
    Ok((starts, ends))
}

/// Builds a block from spans appended in any order (what cuts and merges write in chunks,
/// built whole: tests compare them with it), without keeping the spans themselves:
/// each span goes straight into Arrow column builders and a sort key;
/// [`BlockBuilder::finish`] sorts the keys, drops repeated copies of a span (same trace
/// id, start and span id: a retry; the first appended wins) and writes the rows in order.
pub struct BlockBuilder {
    columns: SpanColumns,
    keys: Vec<SortKey>,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self { columns: SpanColumns::new(), keys: Vec::new() }
    }

    /// Spans appended so far (repeated copies included).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends a batch's spans. Resource and scope attributes are encoded once per distinct
    /// resource or scope of the batch.
    pub fn append_batch(&mut self, batch: &SpanBatch) -> Result<(), FormatError> {
        for rs in &batch.resource_spans {
            let res = self.columns.origin.resource_keys(&rs.resource)?;
            for ss in &rs.scope_spans {
                let scope = self.columns.origin.scope_keys(&ss.scope)?;
                for sp in &ss.spans {
                    self.append(sp, res, scope)?;
                }
            }
        }
        Ok(())
    }

    /// Appends stored spans (for compaction), encoding each distinct resource and scope once.
    pub fn append_stored<'a>(
        &mut self,
        spans: impl IntoIterator<Item = &'a StoredSpan>,
    ) -> Result<(), FormatError> {
        let mut seen = OriginCache::default();
        for s in spans {
            let (res, scope) = seen.keys(&mut self.columns.origin, &s.resource, &s.scope)?;
            self.append(&s.span, res, scope)?;
        }
        Ok(())
    }

    fn append(&mut self, sp: &Span, res: ResourceKeys, scope: ScopeKeys) -> Result<(), FormatError> {
        let row = self.keys.len() as u32;
        self.keys.push((
            u128::from_be_bytes(sp.trace_id.0),
            sp.start_time_unix_nano,
            u64::from_be_bytes(sp.span_id.0),
            row,
        ));
        self.columns.append(sp, res, scope)
    }

    /// Sorts the rows by trace id, start time and span id and encodes the block's files.
    pub fn finish(
        mut self,
        id: String,
        min_received_unix_nano: u64,
        max_received_unix_nano: u64,
        compacted_from: Vec<String>,
    ) -> Result<EncodedBlock, FormatError> {
        self.keys.sort_unstable();
        self.keys.dedup_by(|later, first| (later.0, later.1, later.2) == (first.0, first.1, first.2));
        let trace_count = 1 + self.keys.windows(2).filter(|w| w[0].0 != w[1].0).count() as u64;
        let early_end = !self.columns.early_ends.is_empty();
        let appended = self.columns.finish(early_end)?;
        let mut out = SortedSpans::new(early_end, trace_count)?;
        for chunk in self.keys.chunks(TAKE_ROWS) {
            let chunk = UInt32Array::from_iter_values(chunk.iter().map(|k| k.3));
            let sorted = appended
                .columns()
                .iter()
                .map(|c| arrow_select::take::take(c.as_ref(), &chunk, None))
                .collect::<Result<Vec<_>, _>>()?;
            out.write(&RecordBatch::try_new(appended.schema(), sorted)?)?;
        }
        let mut block = out.finish(id, min_received_unix_nano, max_received_unix_nano)?;
        block.meta.compacted_from = compacted_from;
        Ok(block)
    }
}

/// One trace's summary row.
struct Summary {
    trace_id: [u8; 16],
    first_row: u32,
    span_count: u32,
    /// The root so far (whether it lacks a parent, its service and name), as indexes into
    /// [`Summaries::strings`].
    root: Option<(bool, u32, u32)>,
    start: u64,
    end: u64,
    errors: u32,
    /// Its services, as indexes into [`Summaries::strings`].
    services: Vec<u32>,
}

/// The summaries of the traces of rows handed over in sorted order.
#[derive(Default)]
struct Summaries {
    list: Vec<Summary>,
    /// Service and root span names, each once.
    strings: Vec<String>,
    string_ids: std::collections::HashMap<String, u32>,
}

/// The values of a [`DictColumn`] by row.
#[derive(Clone, Copy)]
struct DictStrings<'a> {
    keys: &'a [i32],
    values: &'a arrow_array::StringArray,
}

impl<'a> DictStrings<'a> {
    fn of(column: &'a ArrayRef) -> Option<Self> {
        use arrow_array::cast::AsArray;
        let dict = column.as_dictionary_opt::<Int32Type>()?;
        Some(Self { keys: dict.keys().values(), values: dict.values().as_string_opt::<i32>()? })
    }

    fn key(&self, row: usize) -> usize {
        self.keys[row] as usize
    }
}

impl Summaries {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    /// Summarises rows sorted by trace id and start time that follow, in that order, the
    /// `first_row` rows already summarised (a trace may go on from the previous batch).
    fn add_sorted(&mut self, b: &RecordBatch, first_row: u64) -> Result<(), FormatError> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Int8Type, Int64Type, UInt64Type};
        let col = |i: usize| b.column(i);
        let bad = |what: &str| FormatError::invalid(format!("{what} column has the wrong type"));
        let trace_id = col(0).as_fixed_size_binary_opt().ok_or_else(|| bad("trace_id"))?;
        let parent = col(2).as_fixed_size_binary_opt().ok_or_else(|| bad("parent"))?;
        let start = col(7).as_primitive_opt::<UInt64Type>().ok_or_else(|| bad("start"))?;
        let duration = col(8).as_primitive_opt::<Int64Type>().ok_or_else(|| bad("duration"))?;
        let status = col(9).as_primitive_opt::<Int8Type>().ok_or_else(|| bad("status"))?;
        let name = DictStrings::of(col(5)).ok_or_else(|| bad("name"))?;
        let service = DictStrings::of(col(11)).ok_or_else(|| bad("service"))?;
        // Each of this batch's service values interned once.
        let mut service_ids: Vec<Option<u32>> = vec![None; arrow_array::Array::len(service.values)];
        for row in 0..b.num_rows() {
            let tid: [u8; 16] =
                trace_id.value(row).try_into().map_err(|_| FormatError::invalid("trace id width"))?;
            if self.list.last().is_none_or(|l| l.trace_id != tid) {
                self.list.push(Summary {
                    trace_id: tid,
                    first_row: u32::try_from(first_row + row as u64)
                        .map_err(|_| FormatError::invalid("a block holds at most 2^32 spans"))?,
                    span_count: 0,
                    root: None,
                    start: u64::MAX,
                    end: 0,
                    errors: 0,
                    services: Vec::new(),
                });
            }
            let key = service.key(row);
            let svc = match service_ids.get(key).copied().flatten() {
                Some(id) => id,
                None => {
                    let id = self.intern(service.values.value(key));
                    if let Some(slot) = service_ids.get_mut(key) {
                        *slot = Some(id);
                    }
                    id
                }
            };
            let is_root = arrow_array::Array::is_null(parent, row);
            // Prefer a span without parent; among equals, the earliest (rows are sorted).
            let new_root = self.list.last().is_some_and(|t| t.root.is_none_or(|(r, _, _)| is_root && !r));
            let root_name = if new_root { Some(self.intern(name.values.value(name.key(row)))) } else { None };
            let Some(t) = self.list.last_mut() else { continue };
            let s = start.value(row);
            t.span_count += 1;
            t.start = t.start.min(s);
            t.end = t.end.max(s.wrapping_add(duration.value(row) as u64));
            if status.value(row) == StatusCode::Error as i8 {
                t.errors += 1;
            }
            if !t.services.contains(&svc) {
                t.services.push(svc);
            }
            if let Some(n) = root_name {
                t.root = Some((is_root, svc, n));
            }
        }
        Ok(())
    }

    fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let n = self.list.len();
        let text = |i: u32| self.strings.get(i as usize).map_or("", String::as_str);
        let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
        let mut first_row = UInt32Builder::with_capacity(n);
        let mut span_count = UInt32Builder::with_capacity(n);
        let mut root_service = StringBuilder::new();
        let mut root_name = StringBuilder::new();
        let mut start = UInt64Builder::with_capacity(n);
        let mut duration = UInt64Builder::with_capacity(n);
        let mut errors = UInt32Builder::with_capacity(n);
        let mut services = ListBuilder::new(StringBuilder::new());
        for t in &self.list {
            trace_id.append_value(t.trace_id)?;
            first_row.append_value(t.first_row);
            span_count.append_value(t.span_count);
            root_service.append_value(t.root.map_or("", |(_, s, _)| text(s)));
            root_name.append_value(t.root.map_or("", |(_, _, n)| text(n)));
            start.append_value(t.start);
            duration.append_value(t.end.saturating_sub(t.start));
            errors.append_value(t.errors);
            let mut names: Vec<&str> = t.services.iter().map(|&s| text(s)).collect();
            names.sort_unstable();
            for s in names {
                services.values().append_value(s);
            }
            services.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(trace_id.finish()),
            Arc::new(first_row.finish()),
            Arc::new(span_count.finish()),
            Arc::new(root_service.finish()),
            Arc::new(root_name.finish()),
            Arc::new(start.finish()),
            Arc::new(duration.finish()),
            Arc::new(errors.finish()),
            Arc::new(services.finish()),
        ];
        let batch = RecordBatch::try_new(Arc::new(traces_schema()), columns)?;
        // Ids are unique and times random: no dictionaries for them; first rows ascend.
        let col = |n: &str| ColumnPath::from(n);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")));
        for c in ["trace_id", "first_row", "start_time_unix_nano", "duration_nano"] {
            props = props.set_column_dictionary_enabled(col(c), false);
        }
        for c in ["start_time_unix_nano", "duration_nano"] {
            props = props.set_column_encoding(col(c), Encoding::BYTE_STREAM_SPLIT);
        }
        let props = props.set_column_encoding(col("first_row"), Encoding::DELTA_BINARY_PACKED).build();
        write_parquet(&batch, props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    use strand_core::TraceId;

    use crate::testdata::{read_parquet as read, service_batch, span};

    /// A dictionary column finished chunk by chunk gives each chunk's rows their values,
    /// whether its values are copied whole (few) or only those the chunk uses (many).
    #[test]
    fn a_dictionary_column_finished_by_chunks_keeps_its_keys() {
        use arrow_array::cast::AsArray;
        for width in [8, 4096] {
            let mut col = DictColumn::default();
            let value = |i: usize| format!("{i:0width$}");
            let mut want = Vec::new();
            let mut got = Vec::new();
            for chunk in 0..3 {
                let mut rows = Vec::new();
                for r in 0..40 {
                    let v = (chunk * 7 + r * 3) % 50;
                    if r % 9 == 4 {
                        col.push(None);
                        rows.push(None);
                    } else {
                        let k = col.key(&value(v)).expect("a key");
                        col.push(Some(k));
                        rows.push(Some(value(v)));
                    }
                }
                want.extend(rows);
                let array = col.finish_keeping_values().expect("a column");
                let dict = array.as_dictionary::<Int32Type>();
                let values = dict.values().as_string::<i32>();
                assert!(arrow_array::Array::len(values) <= 50);
                got.extend(dict.keys().iter().map(|k| k.map(|k| values.value(k as usize).to_owned())));
            }
            assert_eq!(got, want, "values {width} bytes wide");
        }
    }

    /// Rows are appended span by span across thousands of traces, later spans starting
    /// earlier, so the sorted order differs from the appended one everywhere and spans
    /// several chunks of the writer.
    #[test]
    fn a_cut_larger_than_a_chunk_is_sorted_and_summarised_across_chunks() {
        const TRACES: u64 = 3_500;
        const SPANS: u64 = 10;
        let tid = |t: u64| TraceId((t.wrapping_mul(0x9e37_79b9_7f4a_7c15) as u128 * 7919).to_be_bytes());
        let mut b = BlockBuilder::new();
        for i in 0..SPANS {
            for t in 0..TRACES {
                let parent = (i > 0).then_some(0);
                let sp = span(tid(t), i, parent, &format!("op-{i}"), 1_000_000 - i * 10, 5);
                let service = format!("svc-{}", (t + i) % 3);
                b.append_batch(&service_batch(&service, vec![], Default::default(), vec![sp]))
                    .expect("appends");
            }
        }
        // A retried copy of one span: kept once.
        let again = span(tid(7), 3, Some(0), "op-3", 1_000_000 - 30, 5);
        b.append_batch(&service_batch("svc-1", vec![], Default::default(), vec![again])).expect("appends");
        assert!(b.len() > TAKE_ROWS, "the test must cross chunks");
        let encoded = b.finish("b".into(), 1, 2, Vec::new()).expect("encodes");
        assert_eq!(encoded.meta.span_count, TRACES * SPANS);

        let spans = read(&encoded.spans);
        assert_eq!(spans.num_rows() as u64, TRACES * SPANS);
        let ids = spans.column(0).as_fixed_size_binary();
        let span_ids = spans.column(1).as_fixed_size_binary();
        let starts = spans.column(7).as_primitive::<UInt64Type>();
        let key = |r: usize| (ids.value(r), starts.value(r), span_ids.value(r));
        for r in 1..spans.num_rows() {
            assert!(key(r - 1) < key(r), "row {r} is out of order or repeated");
        }

        let traces = read(&encoded.traces);
        assert_eq!(traces.num_rows() as u64, TRACES);
        let (first, count) = (
            traces.column(1).as_primitive::<arrow_array::types::UInt32Type>(),
            traces.column(2).as_primitive::<arrow_array::types::UInt32Type>(),
        );
        let (root_service, root_name) =
            (traces.column(3).as_string::<i32>(), traces.column(4).as_string::<i32>());
        let services = spans.column(11).as_string::<i32>();
        for t in 0..traces.num_rows() {
            let rows = first.value(t) as usize..(first.value(t) + count.value(t)) as usize;
            assert_eq!(rows.len() as u64, SPANS);
            assert!(rows.clone().all(|r| ids.value(r) == traces.column(0).as_fixed_size_binary().value(t)));
            // The root (span 0) starts last, so it is the last row of its trace.
            let root = rows.end - 1;
            assert_eq!(root_name.value(t), "op-0", "trace {t}");
            assert_eq!(root_service.value(t), services.value(root), "trace {t}");
            // Spans i of trace t are in service (t + i) % 3: every trace crosses all three.
            let listed = traces.column(8).as_list::<i32>().value(t);
            let listed: Vec<&str> = listed.as_string::<i32>().iter().flatten().collect();
            assert_eq!(listed, ["svc-0", "svc-1", "svc-2"], "trace {t}: each service once, sorted");
        }
    }
}
