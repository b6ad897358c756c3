//! Encoding a set of spans into a block's files.

use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Int8Builder, Int64Builder, ListBuilder, StringBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use strand_core::{StatusCode, StoredSpan};

use super::json::{attrs_to_json, write_attrs, write_events, write_links};
use super::{BlockMeta, FORMAT_VERSION, FileChecksum};

/// Rows per data page: small pages make a trace lookup read little.
const PAGE_ROWS: usize = 2048;
/// Rows per row group.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// A block ready to be written: file contents and metadata.
pub struct EncodedBlock {
    /// `spans.parquet`.
    pub spans: Vec<u8>,
    /// `traces.parquet`.
    pub traces: Vec<u8>,
    /// `meta.json` content.
    pub meta: BlockMeta,
}

pub(crate) fn spans_schema() -> Schema {
    let fsb = |n: &str, w: i32, null: bool| Field::new(n, DataType::FixedSizeBinary(w), null);
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let u32f = |n: &str| Field::new(n, DataType::UInt32, false);
    Schema::new(vec![
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
    ])
}

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
    // Only the JSON columns are compressed. The rest are random ids or dictionary, RLE or
    // delta encoded already, where zstd saves little; and parquet-rs builds a zstd
    // compressor and decompressor for every compressed column chunk it reads, which made
    // context creation over half of a trace lookup's CPU when all 26 columns used zstd.
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
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled(col("trace_id"), EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(col("trace_id"), true)
        .set_column_bloom_filter_fpp(col("trace_id"), 0.01)
        .set_column_bloom_filter_max_ndv(col("trace_id"), trace_count.max(1));
    for c in ["span_id", "start_time_unix_nano", "duration_nano"] {
        b = b.set_column_dictionary_enabled(col(c), false);
    }
    for c in ["start_time_unix_nano", "duration_nano"] {
        b = b.set_column_encoding(col(c), Encoding::DELTA_BINARY_PACKED);
    }
    b.build()
}

fn write_parquet(batch: &RecordBatch, props: WriterProperties) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Per-resource or per-scope values computed once per distinct `Arc`, not once per span.
struct Interned<'a> {
    by_ptr: std::collections::HashMap<usize, usize>,
    values: Vec<(&'a str, Option<String>)>,
}

impl<'a> Interned<'a> {
    fn new() -> Self {
        Self { by_ptr: std::collections::HashMap::new(), values: Vec::new() }
    }

    fn get<T>(&mut self, item: &'a Arc<T>, f: impl FnOnce(&'a T) -> (&'a str, Option<String>)) -> usize {
        let key = Arc::as_ptr(item) as *const () as usize;
        *self.by_ptr.entry(key).or_insert_with(|| {
            self.values.push(f(item));
            self.values.len() - 1
        })
    }
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

/// Encodes spans (any order, no duplicates) into a block with the given id. Works from
/// references: nothing is cloned but the column data itself.
pub fn encode_block(
    id: String,
    mut spans: Vec<&StoredSpan>,
    min_received_unix_nano: u64,
    max_received_unix_nano: u64,
    compacted_from: Vec<String>,
) -> Result<EncodedBlock, String> {
    spans.sort_unstable_by_key(|s| (s.span.trace_id, s.span.start_time_unix_nano, s.span.span_id));
    let n = spans.len();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut trace_state = StringBuilder::new();
    let mut flags = UInt32Builder::with_capacity(n);
    let mut name = StringBuilder::new();
    let mut kind = Int8Builder::with_capacity(n);
    let mut start = UInt64Builder::with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let mut status_code = Int8Builder::with_capacity(n);
    let mut status_message = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut res_attrs = StringBuilder::new();
    let mut res_dropped = UInt32Builder::with_capacity(n);
    let mut res_schema = StringBuilder::new();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut scope_attrs = StringBuilder::new();
    let mut scope_dropped = UInt32Builder::with_capacity(n);
    let mut scope_schema = StringBuilder::new();
    let mut attrs = StringBuilder::with_capacity(n, n * 128);
    let mut dropped_attrs = UInt32Builder::with_capacity(n);
    let mut events = StringBuilder::new();
    let mut dropped_events = UInt32Builder::with_capacity(n);
    let mut links = StringBuilder::new();
    let mut dropped_links = UInt32Builder::with_capacity(n);

    let mut resources = Interned::new();
    let mut scopes = Interned::new();
    let mut summaries = Summaries::default();
    let err = |e: arrow_schema::ArrowError| e.to_string();
    for (row, s) in spans.iter().enumerate() {
        let sp = &s.span;
        let r = resources.get(&s.resource, |r| (r.service_name(), attrs_to_json(&r.attributes)));
        let (svc, res_json) = &resources.values[r];
        summaries.add(row, s, svc);
        trace_id.append_value(sp.trace_id.0).map_err(err)?;
        span_id.append_value(sp.span_id.0).map_err(err)?;
        match sp.parent_span_id {
            Some(p) => parent.append_value(p.0).map_err(err)?,
            None => parent.append_null(),
        }
        trace_state.append_value(&sp.trace_state);
        flags.append_value(sp.flags);
        name.append_value(&sp.name);
        kind.append_value(sp.kind as i8);
        start.append_value(sp.start_time_unix_nano);
        duration.append_value(sp.end_time_unix_nano.wrapping_sub(sp.start_time_unix_nano) as i64);
        status_code.append_value(sp.status.code as i8);
        status_message.append_value(&sp.status.message);
        service.append_value(svc);
        res_attrs.append_option(res_json.as_deref());
        res_dropped.append_value(s.resource.dropped_attributes_count);
        res_schema.append_value(&s.resource.schema_url);
        let sc = scopes.get(&s.scope, |sc| ("", attrs_to_json(&sc.attributes)));
        scope_name.append_value(&s.scope.name);
        scope_version.append_value(&s.scope.version);
        scope_attrs.append_option(scopes.values[sc].1.as_deref());
        scope_dropped.append_value(s.scope.dropped_attributes_count);
        scope_schema.append_value(&s.scope.schema_url);
        append_json(&mut attrs, &sp.attributes[..], sp.attributes.is_empty(), write_attrs);
        dropped_attrs.append_value(sp.dropped_attributes_count);
        append_json(&mut events, &sp.events[..], sp.events.is_empty(), write_events);
        dropped_events.append_value(sp.dropped_events_count);
        append_json(&mut links, &sp.links[..], sp.links.is_empty(), write_links);
        dropped_links.append_value(sp.dropped_links_count);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(flags.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(duration.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
        Arc::new(service.finish()),
        Arc::new(res_attrs.finish()),
        Arc::new(res_dropped.finish()),
        Arc::new(res_schema.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
        Arc::new(scope_attrs.finish()),
        Arc::new(scope_dropped.finish()),
        Arc::new(scope_schema.finish()),
        Arc::new(attrs.finish()),
        Arc::new(dropped_attrs.finish()),
        Arc::new(events.finish()),
        Arc::new(dropped_events.finish()),
        Arc::new(links.finish()),
        Arc::new(dropped_links.finish()),
    ];
    let batch = RecordBatch::try_new(Arc::new(spans_schema()), columns).map_err(err)?;
    let trace_count = summaries.list.len() as u64;
    let spans_bytes = write_parquet(&batch, spans_props(trace_count))?;
    let traces_bytes = summaries.encode()?;

    let meta = BlockMeta {
        format_version: FORMAT_VERSION,
        id,
        span_count: n as u64,
        trace_count,
        min_start_unix_nano: spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap_or(0),
        max_end_unix_nano: spans.iter().map(|s| s.span.end_time_unix_nano).max().unwrap_or(0),
        min_received_unix_nano,
        max_received_unix_nano,
        min_trace_id: spans.first().map(|s| s.span.trace_id.to_hex()).unwrap_or_default(),
        max_trace_id: spans.last().map(|s| s.span.trace_id.to_hex()).unwrap_or_default(),
        compacted_from,
        files: vec![
            FileChecksum::of("spans.parquet", &spans_bytes),
            FileChecksum::of("traces.parquet", &traces_bytes),
        ],
    };
    Ok(EncodedBlock { spans: spans_bytes, traces: traces_bytes, meta })
}

/// One trace's summary row, built while the sorted spans stream past.
struct Summary<'a> {
    trace_id: [u8; 16],
    first_row: u32,
    span_count: u32,
    /// The root so far: whether it lacks a parent, its service and span.
    root: Option<(bool, &'a str, &'a StoredSpan)>,
    start: u64,
    end: u64,
    errors: u32,
    services: Vec<&'a str>,
}

#[derive(Default)]
struct Summaries<'a> {
    list: Vec<Summary<'a>>,
}

impl<'a> Summaries<'a> {
    fn add(&mut self, row: usize, s: &'a StoredSpan, service: &'a str) {
        let sp = &s.span;
        if self.list.last().is_none_or(|l| l.trace_id != sp.trace_id.0) {
            self.list.push(Summary {
                trace_id: sp.trace_id.0,
                first_row: row as u32,
                span_count: 0,
                root: None,
                start: u64::MAX,
                end: 0,
                errors: 0,
                services: Vec::new(),
            });
        }
        let Some(t) = self.list.last_mut() else { return };
        t.span_count += 1;
        t.start = t.start.min(sp.start_time_unix_nano);
        t.end = t.end.max(sp.end_time_unix_nano);
        if sp.status.code == StatusCode::Error {
            t.errors += 1;
        }
        if !t.services.contains(&service) {
            t.services.push(service);
        }
        let is_root = sp.parent_span_id.is_none();
        // Prefer a span without parent; among equals, the earliest (spans arrive sorted).
        if t.root.is_none_or(|(r, _, _)| is_root && !r) {
            t.root = Some((is_root, service, s));
        }
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        let n = self.list.len();
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
            trace_id.append_value(t.trace_id).map_err(|e| e.to_string())?;
            first_row.append_value(t.first_row);
            span_count.append_value(t.span_count);
            root_service.append_value(t.root.map_or("", |(_, svc, _)| svc));
            root_name.append_value(t.root.map_or("", |(_, _, s)| s.span.name.as_str()));
            start.append_value(t.start);
            duration.append_value(t.end.saturating_sub(t.start));
            errors.append_value(t.errors);
            let mut names = t.services.clone();
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
        let batch = RecordBatch::try_new(Arc::new(traces_schema()), columns).map_err(|e| e.to_string())?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
            .build();
        write_parquet(&batch, props)
    }
}
