//! The receiver's store: batches split by trace id and published to JetStream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use strand_core::logs::{LogBatch, LogPage, LogQuery, ResourceLogs, ScopeLogs, StoredLog};
use strand_core::metrics::MetricFamily;
use strand_core::search::{DependencyEdge, Operation, SearchPage, TimeRange, TraceQuery};
use strand_core::{
    BoxFuture, ResourceSpans, ScopeSpans, SinkError, SpanBatch, SpanId, StoreError, Trace, TraceId,
    TraceReader, TraceStore, TraceWriter,
};

use crate::bus::Bus;
use crate::{HANDED_BACK_HEADER, Kind, TENANT_HEADER, partition_of, wire};

/// What the receivers published, shared by every tenant's [`Publisher`].
#[derive(Debug, Default)]
pub struct PublishStats {
    messages: AtomicU64,
    bytes: AtomicU64,
    spans: AtomicU64,
    log_records: AtomicU64,
    failures: AtomicU64,
}

impl PublishStats {
    /// The receivers' counters, for `/metrics`.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let s = self;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        vec![
            MetricFamily::counter(
                "strand_cluster_published_messages_total",
                "Messages JetStream acknowledged to this receiver.",
                n(&s.messages),
            ),
            MetricFamily::counter(
                "strand_cluster_published_bytes_total",
                "Bytes of message bodies JetStream acknowledged to this receiver.",
                n(&s.bytes),
            ),
            MetricFamily::counter(
                "strand_cluster_published_spans_total",
                "Spans published to JetStream and acknowledged.",
                n(&s.spans),
            ),
            MetricFamily::counter(
                "strand_cluster_published_log_records_total",
                "Log records published to JetStream and acknowledged.",
                n(&s.log_records),
            ),
            MetricFamily::counter(
                "strand_cluster_publish_failures_total",
                "Batches JetStream did not take (the client was told to retry).",
                n(&s.failures),
            ),
        ]
    }
}

/// A tenant's receivers' store on a receiver: [`TraceWriter::write`] returns once JetStream
/// has stored every part of the batch (its own durability, replicated when the stream is);
/// reads are not answered here.
pub struct Publisher {
    bus: Arc<Bus>,
    tenant: String,
    stats: Arc<PublishStats>,
    /// Spreads records without a trace id over the partitions.
    next: AtomicU64,
    /// Marks what it publishes as handed back by an ingester ([`HANDED_BACK_HEADER`]).
    handing_back: bool,
}

impl Publisher {
    /// The publisher of `tenant`'s data.
    pub fn new(bus: Arc<Bus>, tenant: &str, stats: Arc<PublishStats>) -> Self {
        Self { bus, tenant: tenant.to_owned(), stats, next: AtomicU64::new(0), handing_back: false }
    }

    /// An ingester's publisher of the undecided traces of a partition it gives up.
    pub fn handing_back(bus: Arc<Bus>, tenant: &str, stats: Arc<PublishStats>) -> Self {
        Self { handing_back: true, ..Self::new(bus, tenant, stats) }
    }

    /// The largest message body the NATS server takes, less room for headers.
    fn max_body(&self) -> usize {
        self.bus.client.server_info().max_payload.saturating_sub(4096).max(4096)
    }

    async fn publish(&self, kind: Kind, bodies: Vec<(u32, Vec<u8>)>) -> Result<(), SinkError> {
        let unavailable = |e: String| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            SinkError::Unavailable(format!("JetStream did not take the batch ({e}); retry"))
        };
        let mut acks = Vec::with_capacity(bodies.len());
        let mut bytes = 0;
        for (p, body) in bodies {
            let mut headers = HeaderMap::new();
            headers.insert(TENANT_HEADER, self.tenant.as_str());
            if self.handing_back {
                headers.insert(HANDED_BACK_HEADER, "1");
            }
            bytes += body.len() as u64;
            let ack = self
                .bus
                .js
                .publish_with_headers(self.bus.subject(kind, p), headers, body.into())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            acks.push(ack.into_future());
        }
        let n = acks.len() as u64;
        match tokio::time::timeout(self.bus.cfg.publish_timeout.0, futures_util::future::try_join_all(acks))
            .await
        {
            Ok(Ok(_)) => {
                self.stats.messages.fetch_add(n, Ordering::Relaxed);
                self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!(
                "no acknowledgement within {} (cluster.publish_timeout)",
                self.bus.cfg.publish_timeout
            ))),
        }
    }
}

/// Splits spans by the partition of their trace, keeping resource and scope groups.
pub fn split_spans(batch: SpanBatch, partitions: u32) -> BTreeMap<u32, SpanBatch> {
    let mut parts: BTreeMap<u32, SpanBatch> = BTreeMap::new();
    for rs in batch.resource_spans {
        for ss in rs.scope_spans {
            for span in ss.spans {
                let part = parts.entry(partition_of(&span.trace_id, partitions)).or_default();
                if !part.resource_spans.last().is_some_and(|r| Arc::ptr_eq(&r.resource, &rs.resource)) {
                    part.resource_spans
                        .push(ResourceSpans { resource: rs.resource.clone(), scope_spans: Vec::new() });
                }
                let group = part.resource_spans.last_mut().expect("pushed above");
                if !group.scope_spans.last().is_some_and(|s| Arc::ptr_eq(&s.scope, &ss.scope)) {
                    group.scope_spans.push(ScopeSpans { scope: ss.scope.clone(), spans: Vec::new() });
                }
                group.scope_spans.last_mut().expect("pushed above").spans.push(span);
            }
        }
    }
    parts
}

/// Splits log records by the partition of their trace; records without one go to
/// `untraced`.
pub fn split_logs(batch: LogBatch, partitions: u32, untraced: u32) -> BTreeMap<u32, LogBatch> {
    let mut parts: BTreeMap<u32, LogBatch> = BTreeMap::new();
    for rl in batch.resource_logs {
        for sl in rl.scope_logs {
            for record in sl.records {
                let p = record.trace_id.map_or(untraced, |t| partition_of(&t, partitions));
                let part = parts.entry(p).or_default();
                if !part.resource_logs.last().is_some_and(|r| Arc::ptr_eq(&r.resource, &rl.resource)) {
                    part.resource_logs
                        .push(ResourceLogs { resource: rl.resource.clone(), scope_logs: Vec::new() });
                }
                let group = part.resource_logs.last_mut().expect("pushed above");
                if !group.scope_logs.last().is_some_and(|s| Arc::ptr_eq(&s.scope, &sl.scope)) {
                    group.scope_logs.push(ScopeLogs { scope: sl.scope.clone(), records: Vec::new() });
                }
                group.scope_logs.last_mut().expect("pushed above").records.push(record);
            }
        }
    }
    parts
}

/// How a batch is cut into messages that fit.
struct Fit<B, I> {
    /// What one item is called in the error.
    item: &'static str,
    encode: fn(&B) -> Vec<u8>,
    flatten: fn(B) -> Vec<I>,
    regroup: fn(Vec<I>) -> B,
}

const SPANS_FIT: Fit<SpanBatch, strand_core::StoredSpan> = Fit {
    item: "span",
    encode: wire::encode_spans,
    flatten: |b| b.into_stored().collect(),
    regroup: SpanBatch::from_stored,
};

const LOGS_FIT: Fit<LogBatch, StoredLog> = Fit {
    item: "log record",
    encode: wire::encode_logs,
    flatten: |b| b.into_stored().collect(),
    regroup: LogBatch::from_stored,
};

impl<B, I> Fit<B, I> {
    /// Message bodies of at most `max` bytes holding `batch` (halved until each fits); an
    /// error when one item alone is larger.
    fn bodies(&self, batch: B, max: usize) -> Result<Vec<Vec<u8>>, String> {
        let body = (self.encode)(&batch);
        if body.len() <= max {
            return Ok(vec![body]);
        }
        let mut items = (self.flatten)(batch);
        if items.len() <= 1 {
            return Err(format!(
                "one {} takes {} bytes encoded, more than the {max} a NATS message holds (the server's max_payload)",
                self.item,
                body.len()
            ));
        }
        let second = items.split_off(items.len() / 2);
        let mut out = self.bodies((self.regroup)(items), max)?;
        out.extend(self.bodies((self.regroup)(second), max)?);
        Ok(out)
    }
}

fn too_large(e: String) -> SinkError {
    // Retrying cannot help, but the contract has no "never" answer for a sink: say why.
    SinkError::Unavailable(format!("{e}; raise max_payload on the NATS server"))
}

impl TraceWriter for Publisher {
    fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let spans = batch.span_count() as u64;
            let max = self.max_body();
            let mut bodies = Vec::new();
            for (p, part) in split_spans(batch, self.bus.cfg.partitions) {
                bodies.extend(SPANS_FIT.bodies(part, max).map_err(too_large)?.into_iter().map(|b| (p, b)));
            }
            self.publish(Kind::Spans, bodies).await?;
            self.stats.spans.fetch_add(spans, Ordering::Relaxed);
            Ok(())
        })
    }
}

/// What every read on a receiver answers.
fn ask_a_querier<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(async { Err(StoreError::Unsupported("queries on a receiver (ask a querier)")) })
}

impl TraceReader for Publisher {
    fn get_trace(&self, _: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        ask_a_querier()
    }

    fn find_traces(&self, _: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        ask_a_querier()
    }

    fn services(&self, _: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        ask_a_querier()
    }

    fn operations(&self, _: String, _: TimeRange) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        ask_a_querier()
    }

    fn attributes(
        &self,
        _: Option<String>,
        _: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        ask_a_querier()
    }

    fn dependencies(&self, _: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        ask_a_querier()
    }
}

impl strand_core::LogStore for Publisher {
    fn write_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let records = batch.record_count() as u64;
            let max = self.max_body();
            let untraced =
                (self.next.fetch_add(1, Ordering::Relaxed) % u64::from(self.bus.cfg.partitions)) as u32;
            let mut bodies = Vec::new();
            for (p, part) in split_logs(batch, self.bus.cfg.partitions, untraced) {
                bodies.extend(LOGS_FIT.bodies(part, max).map_err(too_large)?.into_iter().map(|b| (p, b)));
            }
            self.publish(Kind::Logs, bodies).await?;
            self.stats.log_records.fetch_add(records, Ordering::Relaxed);
            Ok(())
        })
    }

    fn trace_logs(&self, _: TraceId, _: Option<SpanId>) -> BoxFuture<'_, Result<Vec<StoredLog>, StoreError>> {
        ask_a_querier()
    }

    fn find_logs(&self, _: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        ask_a_querier()
    }
}

impl TraceStore for Publisher {
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Nothing is held: every acknowledged batch is in JetStream already.
        Box::pin(async { Ok(()) })
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn stored_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        // The receivers' counters are the process's, not a tenant's: see [`PublishStats`].
        Box::pin(async { Vec::new() })
    }

    fn not_ready(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            if self.bus.connected() {
                Vec::new()
            } else {
                vec![format!("nats: not connected to {}", self.bus.cfg.nats_url)]
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.bus.client.flush().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strand_core::{KeyValue, Resource, Scope, Span};

    fn span(trace: u8, id: u8) -> Span {
        let mut s = Span::new(TraceId([trace; 16]), SpanId([id; 8]), format!("op {id}"), 1, 2);
        s.attributes = vec![KeyValue::new("k", strand_core::AnyValue::String("v".repeat(200)))];
        s
    }

    fn batch(spans: Vec<Span>) -> SpanBatch {
        SpanBatch {
            resource_spans: vec![ResourceSpans {
                resource: Arc::new(Resource::default()),
                scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans }],
            }],
        }
    }

    #[test]
    fn a_batch_splits_by_trace_and_keeps_every_span_once() {
        let spans: Vec<Span> = (1..=40).map(|i| span(i % 7 + 1, i)).collect();
        let parts = split_spans(batch(spans.clone()), 4);
        assert!(parts.len() > 1, "seven traces over four partitions");
        let mut seen = Vec::new();
        for (p, part) in &parts {
            for s in part.clone().into_stored() {
                assert_eq!(partition_of(&s.span.trace_id, 4), *p);
                seen.push(s.span.span_id);
            }
            // One resource and scope group per part: groups are kept, not repeated per span.
            assert_eq!(part.resource_spans.len(), 1);
            assert_eq!(part.resource_spans[0].scope_spans.len(), 1);
        }
        seen.sort();
        let mut want: Vec<_> = spans.iter().map(|s| s.span_id).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn oversized_parts_become_several_messages() {
        let spans: Vec<Span> = (1..=50).map(|i| span(1, i)).collect();
        let one = wire::encode_spans(&batch(spans.clone())).len();
        let bodies = SPANS_FIT.bodies(batch(spans), one / 3).expect("splits");
        assert!(bodies.len() >= 3, "{} bodies", bodies.len());
        let mut n = 0;
        for b in &bodies {
            assert!(b.len() <= one / 3);
            match wire::decode(b).expect("decodes") {
                wire::Payload::Spans(s) => n += s.span_count(),
                wire::Payload::Logs(_) => panic!("spans expected"),
            }
        }
        assert_eq!(n, 50);
        let err = SPANS_FIT.bodies(batch(vec![span(1, 1)]), 10).expect_err("one span too big");
        assert!(err.contains("max_payload"), "{err}");
    }
}
