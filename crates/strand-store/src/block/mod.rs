//! Immutable blocks: a head cut into Parquet files.
//!
//! ```text
//! blocks/<block id>/
//!   spans.parquet    one row per span, sorted by trace id, then start time, then span id
//!   traces.parquet   one row per trace: the per-block trace-summary table (sorted by trace id)
//!   index.bin        the block's search index (see [`crate::index`]); blocks written before
//!                    it existed are indexed when opened
//!   logs.parquet     log records, when the cut had any (see [`crate::logs`])
//!   log_traces.parquet  their trace index
//!   filter.bin       Bloom filters of the trace ids of spans and of log records (derived;
//!                    blocks written before it get one when first verified)
//!   meta.json        BlockMeta: format version, counts, time and trace-id ranges
//! ```
//!
//! A block is written into `blocks/.tmp-<id>/`, every file fsynced, then renamed into
//! place and the parent directory fsynced, so a block is either whole or absent.
//! `meta.json` records each data file's size and CRC32C. Opening a block at start reads
//! only `meta.json`, `filter.bin` and the Parquet footers ([`Verify::Lazy`]); a background
//! scrub then checks every file of each block against its checksum ([`Verify::Full`]),
//! rebuilds damaged derived files and sets aside a block whose data does not match. Reads
//! before that are guarded (the Parquet reader can panic on malformed input).
//!
//! ## `spans.parquet` (format version 1)
//!
//! | column | type | notes |
//! |---|---|---|
//! | `trace_id` | fixed_len_byte_array(16) | bloom filter; row-group and page min/max |
//! | `span_id` | fixed_len_byte_array(8) | |
//! | `parent_span_id` | fixed_len_byte_array(8), nullable | null for roots; from version 4, also null when `parent_rows_back` gives the parent |
//! | `trace_state` | string | |
//! | `flags` | uint32 | |
//! | `name` | string | dictionary encoded |
//! | `kind` | int8 | OTLP numbering: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer |
//! | `start_time_unix_nano` | uint64 | |
//! | `duration_nano` | int64 | `end - start` (wrapping), so any end time round-trips |
//! | `status_code` | int8 | 0 unset, 1 ok, 2 error |
//! | `status_message` | string | |
//! | `service_name` | string | resource `service.name`, dictionary encoded |
//! | `resource_attributes` | string (JSON), nullable | see [`json`] |
//! | `resource_dropped_attributes_count` | uint32 | |
//! | `resource_schema_url` | string | |
//! | `scope_name`, `scope_version` | string | |
//! | `scope_attributes` | string (JSON), nullable | |
//! | `scope_dropped_attributes_count` | uint32 | |
//! | `scope_schema_url` | string | |
//! | `attributes` | string (JSON), nullable | span attributes |
//! | `dropped_attributes_count` | uint32 | |
//! | `events` | string (JSON list), nullable | `[{time_unix_nano,name,attributes,dropped_attributes_count}]` |
//! | `dropped_events_count` | uint32 | |
//! | `links` | string (JSON list), nullable | `[{trace_id,span_id,trace_state,attributes,dropped_attributes_count,flags}]` |
//! | `dropped_links_count` | uint32 | |
//! | `parent_rows_back` | uint32, nullable | version 4 on: the parent is the span of the row this many rows before, in the same trace |
//!
//! A version 4 block gives a span's parent as a distance back to an earlier row of its
//! trace whenever there is one holding the parent's span id (rows are sorted by start
//! time, so parents come first but for skewed clocks); `parent_span_id` then stays null and
//! holds only the parents found nowhere earlier in the trace. Readers take the parent's
//! id from that row (DuckDB: a self-join on `file_row_number`, see the README).
//!
//! Encoding: 2048-row pages with page indexes (a trace lookup reads only the pages holding
//! its rows); the JSON columns and the two time columns are zstd (level 9) compressed, the
//! times in `BYTE_STREAM_SPLIT` encoding; the rest are left to Parquet's dictionary and RLE
//! encodings (see `spans_props` for why). Blocks written before used delta encoding for
//! the times, and before version 4 zstd for `parent_span_id`; readers take any of these.
//!
//! ## `traces.parquet`
//!
//! `trace_id`, `first_row` (uint32: row of its first span in `spans.parquet`),
//! `span_count` (uint32), `root_service`, `root_name`, `start_time_unix_nano` (uint64),
//! `duration_nano` (uint64), `error_count` (uint32), `services` (list of strings).
//! The root is the earliest span without a parent (or the earliest span when every span
//! has one).

pub mod json;
pub(crate) mod read;
pub(crate) mod write;

pub use read::{Block, Verify};
pub use write::{BlockBuilder, EncodedBlock};

/// Runs parquet-reading code, turning a panic inside it into an error: blocks are
/// checksummed, so this is the second line of defence against malformed files.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, FormatError>) -> Result<T, FormatError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(Err(FormatError::ReaderPanicked))
}

use serde::{Deserialize, Serialize};

use crate::error::FormatError;

/// Newest version of the block layout described in the module docs. Versions 1 to 3 were
/// each written only by blocks that needed them, so older strands read every block they
/// could: 1 is
/// spans only; 2 a block holding log records (`logs.parquet`; see [`crate::logs`]), which a
/// strand without log support refuses instead of compacting the records away; 3 a block
/// holding a span whose end precedes its start (its `spans.parquet` has the
/// `end_before_start_unix_nano` column, so `duration_nano` is never negative); 4 every
/// block written since 2026-12-07, whose `spans.parquet` gives most parents as a row back
/// (`parent_rows_back`) instead of their ids.
pub const FORMAT_VERSION: u32 = 4;
/// Version of a block without log records.
pub const SPANS_ONLY_VERSION: u32 = 1;
/// Version of a block with log records.
pub const LOGS_VERSION: u32 = 2;
/// Version of a block with a span ending before it starts (before version 4).
pub const EARLY_END_VERSION: u32 = 3;
/// Version of a block whose `spans.parquet` has the `parent_rows_back` column.
pub const PARENT_ROWS_VERSION: u32 = 4;

/// Contents of `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Block id (also its directory name); ids sort by creation time.
    pub id: String,
    /// Spans in the block.
    pub span_count: u64,
    /// Traces in the block.
    pub trace_count: u64,
    /// Earliest span start.
    pub min_start_unix_nano: u64,
    /// Latest span end.
    pub max_end_unix_nano: u64,
    /// Earliest receive time of a span in the block.
    pub min_received_unix_nano: u64,
    /// Latest receive time of a span in the block (retention counts from here).
    pub max_received_unix_nano: u64,
    /// Smallest trace id, hex.
    pub min_trace_id: String,
    /// Largest trace id, hex.
    pub max_trace_id: String,
    /// Blocks this one replaced through compaction (deleted once this one is durable).
    #[serde(default)]
    pub compacted_from: Vec<String>,
    /// How many stages of compaction by time the block's spans went through: 0 for a cut
    /// head, 1 for a merge within one `compaction_window`, 2 across windows of a day (see
    /// `engine::maintenance`). Absent (0) in blocks written before there were levels.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compaction_level: u32,
    /// Log records in the block (`logs.parquet`; see [`crate::logs`]); 0 when it has none.
    #[serde(default)]
    pub log_count: u64,
    /// Earliest effective time of a log record in the block.
    #[serde(default)]
    pub min_log_time_unix_nano: u64,
    /// Latest effective time of a log record in the block.
    #[serde(default)]
    pub max_log_time_unix_nano: u64,
    /// Size and CRC32C of each data file, checked before a file is parsed.
    pub files: Vec<FileChecksum>,
    /// In a copy uploaded to object storage by a cluster ingester: from this time (by the
    /// reader's clock) queriers read the block from object storage and the ingester stops
    /// answering for it (see `strand_cluster`'s `objects`). Absent in a data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_unix_nano: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Size and checksum of one file of a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChecksum {
    /// File name within the block directory.
    pub name: String,
    /// Length in bytes.
    pub bytes: u64,
    /// CRC32C of the whole file.
    pub crc32c: u32,
}

impl FileChecksum {
    /// Describes `data` as file `name`.
    pub fn of(name: &str, data: &[u8]) -> Self {
        Self { name: name.into(), bytes: data.len() as u64, crc32c: crc32c::crc32c(data) }
    }
}

#[cfg(test)]
mod tests {
    use super::guard;
    use crate::error::FormatError;

    #[test]
    fn guard_turns_a_panic_into_an_error() {
        let r: Result<(), FormatError> = guard(|| panic!("malformed page"));
        assert!(matches!(r, Err(FormatError::ReaderPanicked)), "{r:?}");
        assert_eq!(guard(|| Ok::<_, FormatError>(5)).ok(), Some(5));
    }
}
