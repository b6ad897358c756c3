//! The ingester: partition leases in a JetStream key-value bucket, one durable pull
//! consumer per owned partition, each message written to the store before it is
//! acknowledged.
//!
//! Balancing needs no protocol of ours. Every third of `lease_ttl` each ingester renews its
//! registration and its leases, counts the registered ingesters `n`, gives back leases
//! beyond `ceil(partitions / n)` (after its consumer of that partition has finished the
//! messages in hand) and claims free ones up to that share with a create-if-absent. A
//! killed ingester's registration and leases expire after `lease_ttl`; the others then
//! claim its partitions, and JetStream redelivers every message it had not acknowledged.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::kv::CreateErrorKind;
use futures_util::StreamExt as _;
use strand_core::metrics::MetricFamily;
use strand_core::{BoxFuture, LogSink, SinkError, SpanSink};
use tokio::sync::{Semaphore, watch};

use crate::bus::{Bus, Member};
use crate::{TENANT_HEADER, wire};

/// A tenant's span and log sinks.
pub type TenantSinks = (Arc<dyn SpanSink>, Arc<dyn LogSink>);

/// Where an ingester writes what it consumes: a tenant's sinks (its tail sampler and
/// store). `None` is the single tenant.
pub trait Sinks: Send + Sync + 'static {
    /// Whether `tenant` (from a message header, so from anyone who may publish) is a
    /// tenant id this ingester may store; the reason when not.
    fn check_tenant(&self, tenant: &str) -> Result<(), String>;

    /// The span and log sinks of `tenant`.
    fn sinks(&self, tenant: Option<&str>) -> BoxFuture<'_, Result<TenantSinks, SinkError>>;
}

/// Messages one partition's consumer handles at once.
const IN_FLIGHT_PER_PARTITION: usize = 32;

#[derive(Debug, Default)]
struct Stats {
    acked: AtomicU64,
    retried: AtomicU64,
    poison: AtomicU64,
    ack_failures: AtomicU64,
    leases_lost: AtomicU64,
    owned: AtomicU64,
}

struct Owned {
    revision: u64,
    /// When the lease was last created or renewed.
    renewed: tokio::time::Instant,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// An ingester's share of the partitions and their consumers.
pub struct Ingester {
    bus: Arc<Bus>,
    me: Member,
    sinks: Arc<dyn Sinks>,
    stats: Stats,
    owned: tokio::sync::Mutex<BTreeMap<u32, Owned>>,
}

impl Ingester {
    /// An ingester registered as `id`, reachable by queriers at `url`.
    pub fn new(bus: Arc<Bus>, id: String, url: String, sinks: Arc<dyn Sinks>) -> Arc<Self> {
        Arc::new(Self {
            bus,
            me: Member { id, url },
            sinks,
            stats: Stats::default(),
            owned: Default::default(),
        })
    }

    /// Balances and consumes until `stop` resolves; then finishes the messages in hand,
    /// gives its leases back and leaves the registry, so others take over at once.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.bus.cfg.lease_ttl.0 / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    if let Err(e) = self.balance().await {
                        tracing::warn!(error = %format!("{e:#}"), "cluster: balancing partitions failed; retrying");
                        self.stop_expired().await;
                    }
                }
            }
        }
        let mut owned = self.owned.lock().await;
        let parts: Vec<u32> = owned.keys().copied().collect();
        for p in parts {
            self.give_back(&mut owned, p).await;
        }
        if let Err(e) = self.bus.members.delete(&self.me.id).await {
            tracing::warn!(error = %e, "cluster: leaving the registry failed (it expires)");
        }
        tracing::info!(ingester = %self.me.id, "cluster: left, partitions given back");
    }

    async fn balance(self: &Arc<Self>) -> anyhow::Result<()> {
        let cfg = &self.bus.cfg;
        self.bus.members.put(&self.me.id, serde_json::to_vec(&self.me)?.into()).await?;
        let mut owned = self.owned.lock().await;
        let mut lost = Vec::new();
        for (p, o) in owned.iter_mut() {
            match self.bus.leases.update(lease_key(*p), self.me.id.clone().into(), o.revision).await {
                Ok(rev) => {
                    o.revision = rev;
                    o.renewed = tokio::time::Instant::now();
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cluster: lost the partition's lease");
                    lost.push(*p);
                }
            }
        }
        for p in lost {
            self.stats.leases_lost.fetch_add(1, Ordering::Relaxed);
            if let Some(o) = owned.remove(&p) {
                let _ = o.stop.send(true);
                let _ = o.task.await;
            }
        }
        let members = self.bus.members().await?;
        let n = members.len().max(1) as u32;
        let share = cfg.partitions.div_ceil(n) as usize;
        while owned.len() > share {
            let p = *owned.keys().next_back().expect("more than the share");
            self.give_back(&mut owned, p).await;
        }
        if owned.len() < share {
            // Start at a point of our own, so ingesters starting together do not all race
            // for partition 0.
            let start =
                members.iter().position(|m| m.id == self.me.id).unwrap_or(0) as u32 * cfg.partitions / n;
            for i in 0..cfg.partitions {
                if owned.len() >= share {
                    break;
                }
                let p = (start + i) % cfg.partitions;
                if owned.contains_key(&p) {
                    continue;
                }
                match self.bus.leases.create(lease_key(p), self.me.id.clone().into()).await {
                    Ok(revision) => {
                        self.start_consuming(&mut owned, p, revision);
                        tracing::info!(partition = p, ingester = %self.me.id, "cluster: took the partition");
                    }
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                        // Our own lease from before a restart (same id): take it up again at
                        // once, so what the crash left unacknowledged comes back to this
                        // store, which drops the copies it already has.
                        if let Some(entry) = self.bus.leases.entry(lease_key(p)).await?
                            && entry.operation == async_nats::jetstream::kv::Operation::Put
                            && entry.value == self.me.id.as_bytes()
                            && let Ok(revision) = self
                                .bus
                                .leases
                                .update(lease_key(p), self.me.id.clone().into(), entry.revision)
                                .await
                        {
                            self.start_consuming(&mut owned, p, revision);
                            tracing::info!(partition = p, ingester = %self.me.id, "cluster: took its partition back after a restart");
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.stats.owned.store(owned.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn start_consuming(self: &Arc<Self>, owned: &mut BTreeMap<u32, Owned>, p: u32, revision: u64) {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(self.clone().consume(p, rx));
        owned.insert(p, Owned { revision, renewed: tokio::time::Instant::now(), stop, task });
    }

    /// While NATS cannot be reached no lease is renewed: once a lease may have expired,
    /// another ingester may hold it, so its consumer stops (JetStream cannot deliver to it
    /// meanwhile either).
    async fn stop_expired(&self) {
        let mut owned = self.owned.lock().await;
        let ttl = self.bus.cfg.lease_ttl.0;
        let expired: Vec<u32> =
            owned.iter().filter(|(_, o)| o.renewed.elapsed() >= ttl).map(|(p, _)| *p).collect();
        for p in expired {
            tracing::warn!(partition = p, "cluster: lease not renewed within lease_ttl; consumer stopped");
            self.stats.leases_lost.fetch_add(1, Ordering::Relaxed);
            if let Some(o) = owned.remove(&p) {
                let _ = o.stop.send(true);
                let _ = o.task.await;
            }
        }
        self.stats.owned.store(owned.len() as u64, Ordering::Relaxed);
    }

    async fn give_back(&self, owned: &mut BTreeMap<u32, Owned>, p: u32) {
        let Some(o) = owned.remove(&p) else { return };
        let _ = o.stop.send(true);
        let _ = o.task.await;
        if let Err(e) = self.bus.leases.delete_expect_revision(lease_key(p), Some(o.revision)).await {
            tracing::warn!(partition = p, error = %e, "cluster: giving the lease back failed (it expires)");
        }
        self.stats.owned.store(owned.len() as u64, Ordering::Relaxed);
        tracing::info!(partition = p, ingester = %self.me.id, "cluster: gave the partition back");
    }

    async fn consume(self: Arc<Self>, p: u32, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.consume_until_stopped(p, &mut stop).await {
                tracing::warn!(partition = p, error = %format!("{e:#}"), "cluster: consuming failed; retrying in 1 s");
            }
            let done = *stop.borrow();
            if done {
                return;
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn consume_until_stopped(
        self: &Arc<Self>,
        p: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let cfg = &self.bus.cfg;
        let name = format!("{}-p{p}", cfg.name);
        let consumer: pull::Stream = self
            .bus
            .stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("strand: partition {p}")),
                    filter_subject: format!("{}.{p}.*", cfg.name),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: cfg.ack_wait.0,
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await?
            .stream()
            .max_messages_per_batch(64)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        let mut messages = consumer;
        let slots = Arc::new(Semaphore::new(IN_FLIGHT_PER_PARTITION));
        let mut handlers = tokio::task::JoinSet::new();
        let result = loop {
            tokio::select! {
                _ = stopped(stop) => break Ok(()),
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
                next = messages.next() => match next {
                    None => break Err(anyhow::anyhow!("the consumer's message stream ended")),
                    Some(Err(e)) => break Err(e.into()),
                    Some(Ok(msg)) => {
                        let slot = slots.clone().acquire_owned().await.expect("never closed");
                        let me = self.clone();
                        handlers.spawn(async move {
                            me.handle(p, msg).await;
                            drop(slot);
                        });
                    }
                }
            }
        };
        // The messages in hand are finished (written and acknowledged) before the
        // partition can move: fewer redeliveries to the next owner.
        while handlers.join_next().await.is_some() {}
        result
    }

    async fn handle(&self, p: u32, msg: async_nats::jetstream::Message) {
        let tenant = msg.headers.as_ref().and_then(|h| h.get(TENANT_HEADER)).map(|v| v.as_str().to_owned());
        if let Some(Err(e)) = tenant.as_deref().map(|t| self.sinks.check_tenant(t)) {
            self.stats.poison.fetch_add(1, Ordering::Relaxed);
            tracing::error!(partition = p, error = %e, "cluster: message for an invalid tenant; terminated");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
        let payload = match wire::decode(&msg.payload) {
            Ok(payload) => payload,
            Err(e @ wire::DecodeError::Unknown(_)) => {
                // A newer ingester can read it: left for one, never dropped.
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partition = p, error = %e, "cluster: message in a newer format; handed back");
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(60)))).await;
                return;
            }
            Err(e) => {
                // Redelivering cannot help: the message is set aside for good.
                self.stats.poison.fetch_add(1, Ordering::Relaxed);
                tracing::error!(partition = p, subject = %msg.subject, error = %e, "cluster: message not readable; terminated");
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        let written = match self.sinks.sinks(tenant.as_deref()).await {
            Ok((spans, logs)) => match payload {
                wire::Payload::Spans(b) => spans.consume(b).await,
                wire::Payload::Logs(b) => logs.consume_logs(b).await,
            },
            Err(e) => Err(e),
        };
        match written {
            // Durable in the store: now JetStream may forget it. `double_ack` waits for
            // the server's confirmation; should it be lost, the redelivered copy is
            // written again, which the store's idempotent writes make harmless.
            Ok(()) => match msg.double_ack().await {
                Ok(()) => {
                    self.stats.acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.ack_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(partition = p, error = %e, "cluster: acknowledgement not confirmed; the message may come again");
                }
            },
            Err(e) => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                let delay = match &e {
                    SinkError::RateLimited { retry_after_secs, .. } => Duration::from_secs(*retry_after_secs),
                    _ => Duration::from_secs(1),
                };
                tracing::warn!(partition = p, error = %e, "cluster: the store refused a message; redelivered later");
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// The partitions held now.
    pub async fn partitions(&self) -> Vec<u32> {
        self.owned.lock().await.keys().copied().collect()
    }

    /// Counters and gauges of the consumers and leases.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        vec![
            MetricFamily::gauge(
                "strand_cluster_partitions_owned",
                "Partitions this ingester holds the lease of.",
                n(&s.owned),
            ),
            MetricFamily::counter(
                "strand_cluster_consumed_messages_total",
                "Messages written to the store and acknowledged to JetStream.",
                n(&s.acked),
            ),
            MetricFamily::counter(
                "strand_cluster_redelivery_requests_total",
                "Messages the store refused for now (overloaded, rate-limited, failing), handed back for redelivery.",
                n(&s.retried),
            ),
            MetricFamily::counter(
                "strand_cluster_unreadable_messages_total",
                "Messages that could not be decoded, terminated (never redelivered).",
                n(&s.poison),
            ),
            MetricFamily::counter(
                "strand_cluster_ack_failures_total",
                "Acknowledgements JetStream did not confirm (the message may be written again; reads drop the copy).",
                n(&s.ack_failures),
            ),
            MetricFamily::counter(
                "strand_cluster_leases_lost_total",
                "Partition leases that could not be renewed (taken over after expiring).",
                n(&s.leases_lost),
            ),
        ]
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn lease_key(p: u32) -> String {
    format!("p{p}")
}
