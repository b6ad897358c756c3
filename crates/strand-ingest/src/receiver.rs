//! What every receiver shares: the sink, the request limits, the in-flight slots and the
//! per-protocol counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strand_core::{LogBatch, LogSink, SpanBatch, SpanSink};
use strand_otlp::Rejections;

use crate::memory::{Charge, MemoryBudget, Stage};
use crate::{IngestError, IngestLimits};

/// The wire protocols Strand receives spans on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC.
    OtlpGrpc,
    /// OTLP over HTTP (protobuf or JSON).
    OtlpHttp,
    /// Jaeger `Batch` in the thrift binary protocol over HTTP (`:14268/api/traces`).
    JaegerThriftHttp,
    /// Jaeger agent `emitBatch` in the thrift compact protocol over UDP (`:6831`).
    JaegerAgentCompact,
    /// Jaeger agent `emitBatch` in the thrift binary protocol over UDP (`:6832`).
    JaegerAgentBinary,
    /// Zipkin v2 JSON or proto3 over HTTP (`:9411/api/v2/spans`).
    Zipkin,
}

impl Protocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [Protocol; 6] = [
        Protocol::OtlpGrpc,
        Protocol::OtlpHttp,
        Protocol::JaegerThriftHttp,
        Protocol::JaegerAgentCompact,
        Protocol::JaegerAgentBinary,
        Protocol::Zipkin,
    ];

    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OtlpGrpc => "otlp_grpc",
            Protocol::OtlpHttp => "otlp_http",
            Protocol::JaegerThriftHttp => "jaeger_thrift_http",
            Protocol::JaegerAgentCompact => "jaeger_agent_compact",
            Protocol::JaegerAgentBinary => "jaeger_agent_binary",
            Protocol::Zipkin => "zipkin",
        }
    }
}

/// Counters of one protocol.
#[derive(Debug, Default)]
pub struct ProtocolCounters {
    /// Spans handed to the sink and acknowledged by it.
    pub spans_accepted: AtomicU64,
    /// Spans rejected one by one (invalid ids, timestamps, ...) while the rest of their
    /// request was stored.
    pub spans_rejected: AtomicU64,
    /// Requests (or datagrams) refused as a whole: malformed, too large, overloaded,
    /// storage unavailable.
    pub requests_refused: AtomicU64,
}

/// Log counters of one protocol (OTLP only carries logs).
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Records in requests that decoded (stored or rejected).
    pub records_received: AtomicU64,
    /// Records handed to the log sink and acknowledged by it.
    pub records_stored: AtomicU64,
    /// Records rejected one by one (malformed ids, ...) while the rest were stored.
    pub records_rejected: AtomicU64,
    /// Log requests refused as a whole.
    pub requests_refused: AtomicU64,
    /// Metrics exports refused (Strand stores no metrics).
    pub metrics_requests_refused: AtomicU64,
}

/// Counters of every protocol.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    counters: [ProtocolCounters; Protocol::ALL.len()],
    logs: [LogCounters; Protocol::ALL.len()],
    /// Requests holding an admission slot now.
    in_flight: std::sync::atomic::AtomicU64,
    /// Bytes of HTTP bodies being received or decoded now.
    pub(crate) receiving_bytes: AtomicU64,
    /// HTTP requests whose body did not fit in the memory budget as it arrived.
    pub(crate) body_budget_refused: AtomicU64,
    /// HTTP requests whose body did not arrive within `body_read_timeout`.
    pub(crate) body_timeouts: AtomicU64,
}

/// An admission slot, held while a request is handled; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    stats: Arc<ReceiverStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ReceiverStats {
    /// The counters of `protocol`.
    pub fn of(&self, protocol: Protocol) -> &ProtocolCounters {
        &self.counters[protocol as usize]
    }

    /// The log counters of `protocol`.
    pub fn logs_of(&self, protocol: Protocol) -> &LogCounters {
        &self.logs[protocol as usize]
    }

    /// The counters as metric families, labelled by protocol.
    pub fn metric_families(&self) -> Vec<strand_core::MetricFamily> {
        type Field = fn(&ProtocolCounters) -> &std::sync::atomic::AtomicU64;
        let families: [(&str, &str, Field); 3] = [
            ("strand_receiver_spans_accepted_total", "Spans stored, per receiver protocol.", |p| {
                &p.spans_accepted
            }),
            (
                "strand_receiver_spans_rejected_total",
                "Invalid spans rejected one by one (the rest of their request was stored).",
                |p| &p.spans_rejected,
            ),
            (
                "strand_receiver_requests_refused_total",
                "Requests or datagrams refused as a whole (malformed, too large, overloaded, storage unavailable).",
                |p| &p.requests_refused,
            ),
        ];
        families
            .into_iter()
            .map(|(name, help, field)| {
                let mut f = strand_core::MetricFamily::new(name, help, strand_core::MetricKind::Counter);
                for protocol in Protocol::ALL {
                    let value = field(self.of(protocol)).load(std::sync::atomic::Ordering::Relaxed);
                    f.push(vec![("protocol", protocol.as_str().to_owned())], value as f64);
                }
                f
            })
            .chain(self.log_families())
            .chain([
                strand_core::MetricFamily::gauge(
                    "strand_receiver_requests_in_flight",
                    "Ingest requests holding an admission slot (all protocols).",
                    self.in_flight.load(std::sync::atomic::Ordering::Relaxed) as f64,
                ),
                strand_core::MetricFamily::gauge(
                    "strand_receiver_body_bytes_receiving",
                    "Bytes of HTTP request bodies being received or decoded (all HTTP receivers).",
                    self.receiving_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64,
                ),
                strand_core::MetricFamily::counter(
                    "strand_receiver_body_budget_refused_total",
                    "HTTP requests refused (429) because their body did not fit in the memory budget (limits.memory_size) as it arrived.",
                    self.body_budget_refused.load(std::sync::atomic::Ordering::Relaxed) as f64,
                ),
                strand_core::MetricFamily::counter(
                    "strand_receiver_body_timeouts_total",
                    "HTTP requests refused (408) because their body did not arrive within body_read_timeout.",
                    self.body_timeouts.load(std::sync::atomic::Ordering::Relaxed) as f64,
                ),
            ])
            .collect()
    }
}

impl ReceiverStats {
    /// The log counters as metric families, labelled by the OTLP protocols.
    fn log_families(&self) -> Vec<strand_core::MetricFamily> {
        type Field = fn(&LogCounters) -> &AtomicU64;
        let families: [(&str, &str, Field); 5] = [
            (
                "strand_receiver_log_records_received_total",
                "Log records in requests that decoded, per protocol.",
                |c| &c.records_received,
            ),
            ("strand_receiver_log_records_stored_total", "Log records stored, per protocol.", |c| {
                &c.records_stored
            }),
            (
                "strand_receiver_log_records_rejected_total",
                "Invalid log records rejected one by one (the rest of their request was stored).",
                |c| &c.records_rejected,
            ),
            (
                "strand_receiver_log_requests_refused_total",
                "Log requests refused as a whole (malformed, too large, overloaded, storage unavailable).",
                |c| &c.requests_refused,
            ),
            (
                "strand_receiver_metrics_requests_refused_total",
                "OTLP metrics exports refused: strand stores traces and logs only.",
                |c| &c.metrics_requests_refused,
            ),
        ];
        families
            .into_iter()
            .map(|(name, help, field)| {
                let mut f = strand_core::MetricFamily::new(name, help, strand_core::MetricKind::Counter);
                for protocol in [Protocol::OtlpGrpc, Protocol::OtlpHttp] {
                    let value = field(self.logs_of(protocol)).load(Ordering::Relaxed);
                    f.push(vec![("protocol", protocol.as_str().to_owned())], value as f64);
                }
                f
            })
            .collect()
    }
}

/// Shared state of the receivers: cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    sink: Arc<dyn SpanSink>,
    logs: Option<Arc<dyn LogSink>>,
    pub(crate) limits: IngestLimits,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Bytes being received, decoded and stored (see [`IngestLimits::memory_bytes`]).
    pub(crate) memory: Arc<MemoryBudget>,
    pub(crate) stats: Arc<ReceiverStats>,
}

impl Receiver {
    /// A receiver handing batches to `sink`.
    pub fn new(sink: Arc<dyn SpanSink>, limits: IngestLimits) -> Self {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests.max(1)));
        let memory = MemoryBudget::new(limits.memory_bytes);
        Self { sink, logs: None, limits, in_flight, memory, stats: Arc::default() }
    }

    /// The receiver, also storing OTLP log records in `logs`. Without one, log exports are
    /// refused as unavailable.
    pub fn with_logs(mut self, logs: Arc<dyn LogSink>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// A receiver handing batches to other sinks (a tenant's) with its own counters, under
    /// the same bounds: the requests in flight and the memory budget are shared with this
    /// receiver and every other one made from it.
    pub fn with_sinks(&self, sink: Arc<dyn SpanSink>, logs: Option<Arc<dyn LogSink>>) -> Self {
        Self {
            sink,
            logs,
            limits: self.limits,
            in_flight: self.in_flight.clone(),
            memory: self.memory.clone(),
            stats: Arc::default(),
        }
    }

    /// The memory budget this receiver shares with every one made from it.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    /// Counters per protocol, for `/metrics`.
    pub fn stats(&self) -> Arc<ReceiverStats> {
        self.stats.clone()
    }

    /// A slot for one request, or `Overloaded` when `max_concurrent_requests` are in flight.
    pub fn admit(&self) -> Result<Slot, IngestError> {
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            IngestError::Overloaded(format!(
                "{} requests already in flight; retry later",
                self.limits.max_concurrent_requests
            ))
        })?;
        self.stats.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Slot { _permit: permit, stats: self.stats.clone() })
    }

    /// Hands a decoded batch to the sink; returns once it is durable (or refused). Callers
    /// count a refusal with [`Receiver::refused`], whatever stage it came from.
    pub async fn store(
        &self,
        protocol: Protocol,
        batch: SpanBatch,
        rejections: &Rejections,
    ) -> Result<(), IngestError> {
        let counters = self.stats.of(protocol);
        let n = batch.span_count() as u64;
        if n > 0 {
            let mut decoded = Charge::default();
            self.memory.take(&mut decoded, batch.approx_bytes() as u64, Stage::Decoded)?;
            self.sink.consume(batch).await?;
        }
        counters.spans_accepted.fetch_add(n, Ordering::Relaxed);
        counters.spans_rejected.fetch_add(rejections.count, Ordering::Relaxed);
        if rejections.count > 0 {
            tracing::debug!(
                protocol = protocol.as_str(),
                rejected = rejections.count,
                reasons = %rejections.message(),
                "spans rejected"
            );
        }
        Ok(())
    }

    /// Counts a request refused before it reached the sink.
    pub fn refused(&self, protocol: Protocol) {
        self.stats.of(protocol).requests_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands decoded log records to the log sink; returns once they are durable (or
    /// refused). Callers count a refusal with [`Receiver::logs_refused`].
    pub async fn store_logs(
        &self,
        protocol: Protocol,
        batch: LogBatch,
        rejections: &Rejections,
    ) -> Result<(), IngestError> {
        let counters = self.stats.logs_of(protocol);
        let n = batch.record_count() as u64;
        counters.records_received.fetch_add(n + rejections.count, Ordering::Relaxed);
        if n > 0 {
            let sink = self.logs.as_ref().ok_or_else(|| {
                IngestError::Unavailable("this server has no log storage configured".into())
            })?;
            let mut decoded = Charge::default();
            self.memory.take(&mut decoded, batch.approx_bytes() as u64, Stage::Decoded)?;
            sink.consume_logs(batch).await?;
        }
        counters.records_stored.fetch_add(n, Ordering::Relaxed);
        counters.records_rejected.fetch_add(rejections.count, Ordering::Relaxed);
        if rejections.count > 0 {
            tracing::debug!(
                protocol = protocol.as_str(),
                rejected = rejections.count,
                reasons = %rejections.message(),
                "log records rejected"
            );
        }
        Ok(())
    }

    /// Counts a log request refused as a whole.
    pub fn logs_refused(&self, protocol: Protocol) {
        self.stats.logs_of(protocol).requests_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused metrics export.
    pub fn metrics_refused(&self, protocol: Protocol) {
        self.stats.logs_of(protocol).metrics_requests_refused.fetch_add(1, Ordering::Relaxed);
    }
}
