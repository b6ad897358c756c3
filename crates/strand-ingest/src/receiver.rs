//! What every receiver shares: the sink, the request limits, the in-flight slots and the
//! per-protocol counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strand_core::{SpanBatch, SpanSink};
use strand_otlp::Rejections;

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
    /// Zipkin v2 JSON or proto3 over HTTP (`:9411/api/v2/spans`).
    Zipkin,
}

impl Protocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [Protocol; 5] = [
        Protocol::OtlpGrpc,
        Protocol::OtlpHttp,
        Protocol::JaegerThriftHttp,
        Protocol::JaegerAgentCompact,
        Protocol::Zipkin,
    ];

    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OtlpGrpc => "otlp_grpc",
            Protocol::OtlpHttp => "otlp_http",
            Protocol::JaegerThriftHttp => "jaeger_thrift_http",
            Protocol::JaegerAgentCompact => "jaeger_agent_compact",
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

/// Counters of every protocol.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    counters: [ProtocolCounters; Protocol::ALL.len()],
    /// Requests holding an admission slot now.
    in_flight: std::sync::atomic::AtomicU64,
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
            .chain([strand_core::MetricFamily::gauge(
                "strand_receiver_requests_in_flight",
                "Ingest requests holding an admission slot (all protocols).",
                self.in_flight.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )])
            .collect()
    }
}

/// Shared state of the receivers: cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    sink: Arc<dyn SpanSink>,
    pub(crate) limits: IngestLimits,
    in_flight: Arc<tokio::sync::Semaphore>,
    stats: Arc<ReceiverStats>,
}

impl Receiver {
    /// A receiver handing batches to `sink`.
    pub fn new(sink: Arc<dyn SpanSink>, limits: IngestLimits) -> Self {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests.max(1)));
        Self { sink, limits, in_flight, stats: Arc::default() }
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
}
