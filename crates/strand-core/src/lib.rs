//! The Strand span model and the contracts between Strand's parts.
//!
//! This crate has no I/O and no protocol types. Receivers convert wire formats into
//! [`SpanBatch`]es at the edge; the store keeps [`StoredSpan`]s; queries return
//! [`Trace`]s.
//!
//! - [`ids`]: [`TraceId`] and [`SpanId`], validated and hex-formatted.
//! - [`model`]: resources, scopes, spans, events, links and attribute values, mirroring
//!   the OTLP span model field for field.
//! - [`search`]: trace search queries, summaries, operations and dependency edges.
//! - [`units`]: sizes and durations written with units (`16MiB`, `30s`).
//! - [`contract`]: [`SpanSink`], [`TraceWriter`], [`TraceReader`] and [`TraceStore`], with
//!   the promises each implementation makes.
//! - [`integrity`]: chain-integrity findings and edge health, [`ChainIntegrity`] (what the
//!   query APIs ask) and [`SpanObserver`] (how analysers see every span before sampling).
//! - [`logs`]: the OTLP log data model ([`LogBatch`], [`StoredLog`]), log searches, and
//!   [`LogSink`] / [`LogStore`], the contracts of log ingest and storage.
//! - [`clock`]: [`Clock`], the time source components are given.
//! - [`metrics`]: [`MetricFamily`], how components report their metrics.
//!
//! ```
//! use strand_core::{SpanId, TraceId};
//!
//! // OTLP/JSON ids arrive in either case; Strand prints them lowercase.
//! let id: TraceId = "5B8EFFF798038103D269B633813FC60C".parse()?;
//! assert_eq!(id.to_string(), "5b8efff798038103d269b633813fc60c");
//! // All-zero and wrong-length ids are invalid, as OTLP defines them.
//! assert!(SpanId::from_slice(&[0; 8]).is_err());
//! # Ok::<(), strand_core::IdError>(())
//! ```

pub mod clock;
pub mod contract;
pub mod ids;
pub mod integrity;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod search;
pub mod units;

pub use clock::{Clock, ManualClock, SystemClock};
pub use contract::{
    BoxFuture, ErrorKind, SinkError, SpanSink, StoreError, TraceReader, TraceStore, TraceWriter,
};
pub use ids::{IdError, SpanId, TraceId};
pub use integrity::{
    BrokenTrace, ChainIntegrity, Confidence, EdgeHealth, Finding, FindingKind, Integrity, IntegrityFilter,
    SpanObserver,
};
pub use logs::{
    LogBatch, LogCursor, LogPage, LogQuery, LogRecord, LogSink, LogStore, ResourceLogs, ScopeLogs, StoredLog,
};
pub use metrics::{MetricFamily, MetricKind};
pub use model::{
    AnyValue, Event, KeyValue, Link, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanKind,
    Status, StatusCode, StoredSpan, Trace, find_attr,
};
pub use search::{
    AttrFilter, AttrScope, Cursor, DependencyEdge, Operation, SearchPage, ServiceSpans, StatusFilter,
    TimeRange, TraceQuery, TraceSummary,
};
