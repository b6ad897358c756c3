//! Log records in the embedded store: the same WAL, head cuts, blocks, compaction and
//! retention as spans, so logs and traces of one time live and die together.
//!
//! - In the WAL a batch of records is one record with payload tag 2 (see [`crate::wal`]).
//! - [`LogHead`]: recent records in memory, kept as their encoded WAL records with an index
//!   from trace id to the records holding it; it is part of the store's head and is cut
//!   with it.
//! - A cut writes the head's records into the same block directory as its spans:
//!
//! ```text
//! blocks/<block id>/
//!   logs.parquet        one row per record, sorted by trace id (records without one
//!                       first), then time, then fingerprint
//!   log_traces.parquet  one row per trace: trace_id, first_row, rows (the lookup index)
//!   log_grams.bin       per row group of logs.parquet, the trigrams of its bodies (the
//!                       text search filter; see the `grams` module; blocks written before
//!                       it have none and are always read)
//! ```
//!
//! ## `logs.parquet` (block format version 1)
//!
//! | column | type | notes |
//! |---|---|---|
//! | `trace_id` | fixed_len_byte_array(16), nullable | bloom filter; null: no trace context |
//! | `span_id` | fixed_len_byte_array(8), nullable | |
//! | `time_unix_nano` | uint64 | 0 when the source gave none (the observed time then orders it) |
//! | `observed_time_unix_nano` | uint64 | |
//! | `severity_number` | int8 | OTLP numbering, 0–24 |
//! | `severity_text` | string | dictionary encoded |
//! | `body` | string, nullable | a text body; null when the body is structured or absent |
//! | `body_value` | string (JSON), nullable | a structured body as typed JSON (see [`crate::block::json`]) |
//! | `attributes` | string (JSON), nullable | |
//! | `dropped_attributes_count` | uint32 | |
//! | `flags` | uint32 | |
//! | `event_name` | string | |
//! | `service_name` | string | resource `service.name`, dictionary encoded |
//! | `resource_attributes` | string (JSON), nullable | |
//! | `resource_dropped_attributes_count` | uint32 | |
//! | `resource_schema_url` | string | |
//! | `scope_name`, `scope_version` | string | |
//! | `scope_attributes` | string (JSON), nullable | |
//! | `scope_dropped_attributes_count` | uint32 | |
//! | `scope_schema_url` | string | |
//!
//! Bodies and attributes are zstd-compressed in 2048-row pages: records of one trace sit
//! together and repeat templates, which is what makes them small. Repeated copies of a
//! record (a client's retry: same [`strand_core::StoredLog::fingerprint`]) are written once.
//!
//! ```sql
//! -- DuckDB
//! SELECT to_timestamp(time_unix_nano / 1e9) AS time, service_name, severity_text, body
//! FROM 'blocks/*/logs.parquet' WHERE trace_id = unhex('5b8efff798038103d269b633813fc60c');
//! ```

mod grams;
mod head;
mod read;
mod write;

pub use grams::LOG_GRAMS_FILE;
pub use head::{LogColumns, LogHead, decode_records};
pub use read::LogFiles;
pub use write::{EncodedLogs, LogBlockBuilder, MAX_COLUMN_BYTES};

/// File names of a block's log part.
pub const LOGS_FILE: &str = "logs.parquet";
/// The trace index of a block's log part.
pub const LOG_TRACES_FILE: &str = "log_traces.parquet";
