//! The Strand span model and the contracts between Strand's parts.
//!
//! This crate has no I/O and no protocol types. Receivers convert wire formats into
//! [`SpanBatch`]es at the edge; the store keeps [`StoredSpan`]s; queries return
//! [`Trace`]s.
//!
//! - [`ids`]: [`TraceId`] and [`SpanId`], validated and hex-formatted.
//! - [`model`]: resources, scopes, spans, events, links and attribute values, mirroring
//!   the OTLP span model field for field.
//! - [`contract`]: [`SpanSink`], [`TraceWriter`] and [`TraceReader`], with the promises
//!   each implementation makes.

pub mod contract;
pub mod ids;
pub mod model;

pub use contract::{BoxFuture, SinkError, SpanSink, StoreError, TraceReader, TraceWriter};
pub use ids::{IdError, SpanId, TraceId};
pub use model::{
    AnyValue, Event, KeyValue, Link, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch,
    SpanKind, Status, StatusCode, StoredSpan, Trace, find_attr,
};
