//! Contracts between ingest, sampling, store and query.
//!
//! Each trait states who calls it, what `Ok` promises and which errors can come back.
//! Implementations are checked by one conformance suite (see `strand-store`'s
//! `conformance` module) so a later backend behaves like the embedded one.

use std::future::Future;
use std::pin::Pin;

use crate::ids::TraceId;
use crate::metrics::MetricFamily;
use crate::model::{SpanBatch, Trace};
use crate::search::{DependencyEdge, Operation, SearchPage, TimeRange, TraceQuery};

/// A boxed, sendable future, as the traits here return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a sink or writer did not accept a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Too much is in flight; the client should retry later (HTTP 429,
    /// gRPC `RESOURCE_EXHAUSTED`).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The store failed; nothing of the batch is acknowledged (HTTP 503, gRPC
    /// `UNAVAILABLE`).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A rate limit refused the batch; the client should retry after `retry_after_secs`
    /// (HTTP 429 with that `Retry-After`, gRPC `RESOURCE_EXHAUSTED` with that `RetryInfo`).
    #[error("{message}")]
    RateLimited {
        /// What was exceeded.
        message: String,
        /// When a retry could pass, in whole seconds (at least 1).
        retry_after_secs: u64,
    },
}

/// Receives what the receivers decoded. Called concurrently from many request tasks.
pub trait SpanSink: Send + Sync + 'static {
    /// Hands a batch on. `Ok` means every span of it is durably written (per the
    /// configured fsync policy) or deliberately dropped by a sampling decision, which is
    /// counted. An `Err` means the client must retry: nothing was acknowledged.
    fn consume(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>>;
}

/// Why a read (or a store operation other than a write) failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what it should be.
    #[error("corrupt data in {path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file was written by a newer Strand in a format this binary cannot read.
    #[error(
        "{path} has format version {found}, newer than this strand reads (up to {supported}): run a newer strand"
    )]
    NewerFormat {
        /// The file.
        path: String,
        /// The version found.
        found: u32,
        /// The newest version this binary reads.
        supported: u32,
    },
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
    /// The backend does not offer this capability.
    #[error("this backend does not support {0}")]
    Unsupported(&'static str),
    /// The backend cannot serve right now (a dependency is down); retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Too much work is in flight; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request cannot be answered as asked (a parameter the backend rejects).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

/// What a caller can do about an error: the one place a status is chosen from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (HTTP 400, gRPC `INVALID_ARGUMENT`).
    InvalidInput,
    /// The capability does not exist here (HTTP 501, gRPC `UNIMPLEMENTED`).
    Unsupported,
    /// Retry later: too much in flight (HTTP 429, gRPC `RESOURCE_EXHAUSTED`).
    Overloaded,
    /// Retry later: the backend is down or closing (HTTP 503, gRPC `UNAVAILABLE`).
    Unavailable,
    /// A fault of the server or its data (HTTP 500, gRPC `INTERNAL`).
    Internal,
}

impl StoreError {
    /// How the error should be answered.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::InvalidQuery(_) => ErrorKind::InvalidInput,
            StoreError::Unsupported(_) => ErrorKind::Unsupported,
            StoreError::Overloaded(_) => ErrorKind::Overloaded,
            StoreError::Unavailable(_) | StoreError::Closed => ErrorKind::Unavailable,
            StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::NewerFormat { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

impl SinkError {
    /// How the error should be answered.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SinkError::Overloaded(_) | SinkError::RateLimited { .. } => ErrorKind::Overloaded,
            SinkError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

/// Durable span storage. Called concurrently.
pub trait TraceWriter: Send + Sync + 'static {
    /// Writes a batch. Returns only once the batch is durable under the configured fsync
    /// policy. Idempotent on (trace id, span id): writing a span again — a client retry,
    /// a WAL replay — never makes it appear twice in reads.
    fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>>;
}

/// Reads traces back. Called concurrently; implementations do their blocking I/O off the
/// async worker threads.
pub trait TraceReader: Send + Sync + 'static {
    /// The whole trace, each span once, from every place the backend keeps spans; `None`
    /// when no span of it is stored.
    fn get_trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>>;

    /// The traces of `ids` that are stored, in the order asked, each whole (as
    /// [`TraceReader::get_trace`] returns it); unknown ids are left out. Backends answer it
    /// in one pass where they can (one look at their state, one blocking task) instead of
    /// one lookup per id.
    fn get_traces(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Trace>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(self.get_trace(id).await?);
            }
            Ok(out)
        })
    }

    /// Which of `ids` have spans stored here, in the order asked: what a reader merging
    /// several stores asks to find the traces split between them (summarised whole).
    /// Backends answer it without decoding spans where they can.
    fn holds(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let found: std::collections::HashSet<TraceId> =
                self.get_traces(ids.clone()).await?.into_iter().map(|t| t.trace_id).collect();
            Ok(ids.iter().map(|id| found.contains(id)).collect())
        })
    }

    /// One page of traces matching the query, newest first (see [`crate::search`] for the
    /// semantics every backend follows). The same query over the same data gives the same
    /// page; following `next_cursor` neither skips nor repeats a trace while data is written.
    fn find_traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        let _ = query;
        unsupported("search")
    }

    /// Services with spans in the range, sorted.
    fn services(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let _ = range;
        unsupported("service listing")
    }

    /// Operations (span name and kind) of a service, sorted.
    fn operations(
        &self,
        service: String,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        let _ = (service, range);
        unsupported("operation listing")
    }

    /// Attribute `(key, value)` pairs seen on spans of a service (all services when
    /// `None`), for autocompletion, sorted. Backends may leave out values of keys with very
    /// many distinct values.
    fn attributes(
        &self,
        service: Option<String>,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        let _ = (service, range);
        unsupported("attribute listing")
    }

    /// Caller → callee service edges of spans started in the range, sorted by caller then
    /// callee: one call for each span whose parent span belongs to another service
    /// (producer → consumer hops included when the consumer span is the producer's child).
    fn dependencies(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        let _ = range;
        unsupported("dependencies")
    }
}

/// A whole storage backend as the server runs it: span and log writes, reads and its
/// upkeep (log records share the spans' lifecycle: retention, byte budget, flush). The server
/// holds one as `Arc<dyn TraceStore>`, chosen by configuration; every implementation passes
/// the conformance suite (`strand_store::conformance`).
pub trait TraceStore: TraceWriter + TraceReader + crate::logs::LogStore {
    /// Moves everything written so far into the backend's long-term form (the embedded
    /// store cuts its head into a block) and returns once that is durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Runs compaction and retention once, now, as of the backend's clock (backends also
    /// schedule them on their own).
    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Bytes the stored data takes: what retention's byte budget counts.
    fn stored_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The backend's counters and gauges (names `strand_...`).
    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>>;

    /// Bytes received and held in memory until they reach the backend's long-term form
    /// (the embedded store's live and frozen heads), read without waiting: for memory
    /// budgets across several stores. 0 for a backend that holds nothing so.
    fn unwritten_bytes(&self) -> u64 {
        0
    }

    /// Why the backend would not take writes right now, each reason naming what it is
    /// about (`wal: …`, `disk: …`, `flush: …`); empty when ready. For `/readyz`.
    fn not_ready(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    /// Stops background work. Writes already accepted are answered; later ones fail with
    /// [`SinkError::Unavailable`]. Returns once the backend's files are closed.
    fn close(&self) -> BoxFuture<'_, ()>;
}

fn unsupported<'a, T: Send + 'a>(what: &'static str) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(async move { Err(StoreError::Unsupported(what)) })
}
