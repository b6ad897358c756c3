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
use async_nats::jetstream::kv::CreateErrorKind;
use futures_util::StreamExt as _;
use strand_core::metrics::MetricFamily;
use strand_core::{BoxFuture, LogSink, SinkError, SpanBatch, SpanSink};
use tokio::sync::{Semaphore, watch};

use crate::bus::{Bus, Member, lease_key, partition_consumer, partition_consumer_config};
use crate::{TENANT_HEADER, wire};

/// A tenant's span and log sinks.
pub type TenantSinks = (Arc<dyn SpanSink>, Arc<dyn LogSink>);

/// Where an ingester writes what it consumes: a tenant's sinks (its tail sampler and
/// store). `None` is the single tenant.
pub trait Sinks: Send + Sync + 'static {
    /// Whether `tenant` (from a message header, so from anyone who may publish) is a
    /// tenant id this ingester may store; the reason when not.
    fn check_tenant(&self, tenant: &str) -> Result<(), String>;

    /// Shows `batch` of `tenant` to its chain analyser and RED metrics: every ingester's
    /// sees every span, whichever ingester stores it, so a queue hop whose two traces fall
    /// in two partitions is matched as on one machine, and any ingester can answer for the
    /// RED metrics of the whole cluster.
    fn observe(&self, tenant: Option<&str>, batch: SpanBatch) -> BoxFuture<'_, ()>;

    /// The span and log sinks of `tenant`.
    fn sinks(&self, tenant: Option<&str>) -> BoxFuture<'_, Result<TenantSinks, SinkError>>;

    /// Publishes the undecided traces of tail sampling that fall in `partition` (of
    /// `partitions`) back to the stream, for the ingester taking the partition over to
    /// decide on all of their spans; called once the partition's consumer has stopped,
    /// before its lease goes. What cannot be published stays to be decided here.
    fn hand_back(&self, partition: u32, partitions: u32) -> BoxFuture<'_, ()>;
}

/// Messages one pull request asks for, and how long it waits for them.
const PULL_BATCH: usize = 256;
const PULL_EXPIRES: Duration = Duration::from_millis(500);

/// Pulls of one partition being written at once.
const IN_FLIGHT_PER_PARTITION: usize = 4;

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
    /// When the last create or renewal of the lease was sent (conservative: the lease
    /// lives `lease_ttl` from the server's receipt, which is later).
    renewed: tokio::time::Instant,
    /// Being given back since then: its consumer was told to stop and finishes the
    /// messages in hand; the lease is kept renewed until then, so nobody else consumes
    /// meanwhile, but for `ack_wait` at most (a write hung longer is abandoned, its messages
    /// come again).
    releasing: Option<tokio::time::Instant>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// An ingester's share of the partitions and their consumers.
pub struct Ingester {
    bus: Arc<Bus>,
    me: Member,
    sinks: Arc<dyn Sinks>,
    stats: Stats,
    /// Never held across an await: renewing leases never waits for a consumer.
    owned: parking_lot::Mutex<BTreeMap<u32, Owned>>,
}

impl Ingester {
    /// An ingester registered as `id`, reachable by queriers at `url`.
    pub fn new(bus: Arc<Bus>, id: String, url: String, sinks: Arc<dyn Sinks>) -> Arc<Self> {
        Arc::new(Self {
            bus,
            me: Member {
                id,
                url,
                started_unix_nano: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            },
            sinks,
            stats: Stats::default(),
            owned: Default::default(),
        })
    }

    /// Shows every span published, of every partition, to the chain analysers, until
    /// `stop` is true. Best effort: what is published while no consumer runs is not seen.
    async fn observe_all(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.observe_until_stopped(&mut stop).await {
                tracing::warn!(error = %format!("{e:#}"), "cluster: following every partition for chain analysis failed; retrying in 1 s");
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

    async fn observe_until_stopped(&self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        use async_nats::jetstream::consumer::{DeliverPolicy, push};
        let mut messages = self
            .bus
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.bus.client.new_inbox(),
                description: Some(format!("strand: chain analysis on {}", self.me.id)),
                filter_subject: format!("{}.*.spans", self.bus.cfg.name),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await?
            .messages()
            .await?;
        loop {
            tokio::select! {
                _ = stopped(stop) => return Ok(()),
                next = messages.next() => match next {
                    None => anyhow::bail!("the analysis consumer's stream ended"),
                    // The ordered consumer recreates itself from the last message it
                    // delivered (a missed heartbeat, a reconnect): ride through.
                    Some(Err(e)) => tracing::debug!(error = %e, "cluster: the analysis consumer recovers"),
                    // Spans an ingester handed back were seen when first published.
                    Some(Ok(msg)) if msg.headers.as_ref().is_some_and(|h| h.get(crate::HANDED_BACK_HEADER).is_some()) => {}
                    Some(Ok(msg)) => {
                        let tenant = msg.headers.as_ref().and_then(|h| h.get(TENANT_HEADER)).map(|v| v.as_str().to_owned());
                        if tenant.as_deref().is_some_and(|t| self.sinks.check_tenant(t).is_err()) {
                            continue;
                        }
                        if let Ok(wire::Payload::Spans(batch)) = wire::decode(&msg.payload) {
                            self.sinks.observe(tenant.as_deref(), batch).await;
                        }
                    }
                }
            }
        }
    }

    /// Balances and consumes until `stop` resolves; then finishes the messages in hand,
    /// gives its leases back and leaves the registry, so others take over at once.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let (stop_observing, observing) = watch::channel(false);
        let observer = tokio::spawn(self.clone().observe_all(observing));
        let mut tick = tokio::time::interval(self.bus.cfg.lease_ttl.0 / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        // A partition given back goes as soon as its consumer is done, not a tick later.
        let mut release_check = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    if let Err(e) = self.balance().await {
                        tracing::warn!(error = %format!("{e:#}"), "cluster: balancing partitions failed; retrying");
                    }
                }
                _ = release_check.tick() => {
                    if self.owned.lock().values().any(|o| self.released(o)) {
                        self.finish_releases().await;
                    }
                }
            }
        }
        // Every consumer stops at once; the leases stay renewed until each has finished
        // the messages in hand, then go back.
        for o in self.owned.lock().values_mut() {
            o.releasing.get_or_insert_with(tokio::time::Instant::now);
            let _ = o.stop.send(true);
        }
        while !self.owned.lock().is_empty() {
            tokio::select! {
                _ = tick.tick() => self.renew().await,
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
            self.finish_releases().await;
        }
        let _ = stop_observing.send(true);
        let _ = observer.await;
        if let Err(e) = self.bus.members.delete(&self.me.id).await {
            tracing::warn!(error = %e, "cluster: leaving the registry failed (it expires)");
        }
        tracing::info!(ingester = %self.me.id, "cluster: left, partitions given back");
    }

    /// Renews every lease held (those being given back too); a lease that cannot be
    /// renewed is lost and its consumer stops at once. A lease not renewed for
    /// `lease_ttl` (NATS unreachable) may be someone else's by now: its consumer stops
    /// too.
    async fn renew(&self) {
        let held: Vec<(u32, u64)> = self.owned.lock().iter().map(|(p, o)| (*p, o.revision)).collect();
        let sent = tokio::time::Instant::now();
        // All at once: one slow answer must not age the others.
        let renewals = futures_util::future::join_all(held.iter().map(|(p, revision)| {
            self.bus.leases.update(lease_key(*p), self.me.id.clone().into(), *revision)
        }))
        .await;
        for ((p, _), renewed) in held.into_iter().zip(renewals) {
            let mut owned = self.owned.lock();
            let Some(o) = owned.get_mut(&p) else { continue };
            match renewed {
                Ok(rev) => {
                    o.revision = rev;
                    o.renewed = sent;
                }
                Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(partition = p, "cluster: lost the partition's lease");
                    self.stats.leases_lost.fetch_add(1, Ordering::Relaxed);
                    let o = owned.remove(&p).expect("looked up above");
                    let _ = o.stop.send(true);
                }
                Err(e) if o.renewed.elapsed() >= self.bus.cfg.lease_ttl.0 => {
                    tracing::warn!(partition = p, error = %e, "cluster: lease not renewed within lease_ttl; consumer stopped");
                    self.stats.leases_lost.fetch_add(1, Ordering::Relaxed);
                    let o = owned.remove(&p).expect("looked up above");
                    let _ = o.stop.send(true);
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cluster: renewing the lease failed; retrying")
                }
            }
        }
        self.stats.owned.store(self.owned.lock().len() as u64, Ordering::Relaxed);
    }

    /// Whether a partition being given back can go: its consumer has finished, or has been
    /// draining for longer than `ack_wait` (then it is abandoned).
    fn released(&self, o: &Owned) -> bool {
        o.releasing.is_some_and(|since| {
            if o.task.is_finished() {
                return true;
            }
            let overdue = since.elapsed() >= self.bus.cfg.ack_wait.0;
            if overdue {
                o.task.abort();
            }
            overdue
        })
    }

    /// Gives back the leases whose consumers have finished (or were abandoned).
    async fn finish_releases(&self) {
        let done: Vec<(u32, u64)> = {
            let mut owned = self.owned.lock();
            let done: Vec<u32> = owned.iter().filter(|(_, o)| self.released(o)).map(|(p, _)| *p).collect();
            done.into_iter().filter_map(|p| owned.remove(&p).map(|o| (p, o.revision))).collect()
        };
        for (p, revision) in done {
            self.sinks.hand_back(p, self.bus.cfg.partitions).await;
            if let Err(e) = self.bus.leases.delete_expect_revision(lease_key(p), Some(revision)).await {
                tracing::warn!(partition = p, error = %e, "cluster: giving the lease back failed (it expires)");
            }
            tracing::info!(partition = p, ingester = %self.me.id, "cluster: gave the partition back");
        }
        self.stats.owned.store(self.owned.lock().len() as u64, Ordering::Relaxed);
    }

    async fn balance(self: &Arc<Self>) -> anyhow::Result<()> {
        let cfg = &self.bus.cfg;
        self.renew().await;
        self.finish_releases().await;
        self.bus.members.put(&self.me.id, serde_json::to_vec(&self.me)?.into()).await?;
        let members = self.bus.members().await?;
        let n = members.len().max(1) as u32;
        let share = cfg.partitions.div_ceil(n) as usize;
        let kept = {
            let mut owned = self.owned.lock();
            let mut kept: Vec<u32> =
                owned.iter().filter(|(_, o)| o.releasing.is_none()).map(|(p, _)| *p).collect();
            // Beyond the share: the highest go back once their consumers are done.
            while kept.len() > share {
                let p = kept.pop().expect("more than the share");
                if let Some(o) = owned.get_mut(&p) {
                    o.releasing.get_or_insert_with(tokio::time::Instant::now);
                    let _ = o.stop.send(true);
                }
            }
            kept.len()
        };
        if kept >= share {
            return Ok(());
        }
        // Start at a point of our own, so ingesters starting together do not all race for
        // partition 0.
        let start = members.iter().position(|m| m.id == self.me.id).unwrap_or(0) as u32 * cfg.partitions / n;
        let mut taken = kept;
        for i in 0..cfg.partitions {
            if taken >= share {
                break;
            }
            let p = (start + i) % cfg.partitions;
            if self.owned.lock().contains_key(&p) {
                continue;
            }
            let sent = tokio::time::Instant::now();
            match self.bus.leases.create(lease_key(p), self.me.id.clone().into()).await {
                Ok(revision) => {
                    self.start_consuming(p, revision, sent);
                    taken += 1;
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
                        self.start_consuming(p, revision, sent);
                        taken += 1;
                        tracing::info!(partition = p, ingester = %self.me.id, "cluster: took its partition back after a restart");
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.stats.owned.store(self.owned.lock().len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn start_consuming(self: &Arc<Self>, p: u32, revision: u64, renewed: tokio::time::Instant) {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(self.clone().consume(p, rx));
        self.owned.lock().insert(p, Owned { revision, renewed, releasing: None, stop, task });
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
        let consumer = self
            .bus
            .stream
            .get_or_create_consumer(&partition_consumer(cfg, p), partition_consumer_config(cfg, p))
            .await?;
        let slots = Arc::new(Semaphore::new(IN_FLIGHT_PER_PARTITION));
        let mut handlers = tokio::task::JoinSet::new();
        // One short pull request at a time, each read to its end: a request left open when
        // the partition moves would have the server deliver to no one, and those messages
        // would hold the consumer's pending slots until `ack_wait`.
        let result = loop {
            let done = *stop.borrow();
            if done {
                break Ok(());
            }
            let mut batch =
                match consumer.batch().max_messages(PULL_BATCH).expires(PULL_EXPIRES).messages().await {
                    Ok(b) => b,
                    Err(e) => break Err(e.into()),
                };
            let mut failed = None;
            let mut msgs = Vec::new();
            while let Some(next) = batch.next().await {
                match next {
                    Ok(m) => msgs.push(m),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let done = *stop.borrow();
            if done {
                // Handed back at once for the partition's next owner.
                for msg in msgs {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                }
            } else if !msgs.is_empty() {
                let slot = slots.clone().acquire_owned().await.expect("never closed");
                let me = self.clone();
                handlers.spawn(async move {
                    me.handle_many(p, msgs).await;
                    drop(slot);
                });
            }
            while handlers.try_join_next().is_some() {}
            if let Some(e) = failed {
                break Err(anyhow::anyhow!("pulling messages: {e}"));
            }
        };
        // The messages in hand are finished (written and acknowledged) before the partition
        // can move.
        while handlers.join_next().await.is_some() {}
        result
    }

    /// Writes one pull's messages: the readable ones of each tenant and kind as one batch
    /// (one WAL record, one commit), then acknowledges them all; a refusal hands them all
    /// back.
    async fn handle_many(&self, p: u32, msgs: Vec<async_nats::jetstream::Message>) {
        type Group = (Vec<async_nats::jetstream::Message>, Vec<wire::Payload>);
        let mut groups: BTreeMap<(Option<String>, bool), Group> = BTreeMap::new();
        for msg in msgs {
            let tenant =
                msg.headers.as_ref().and_then(|h| h.get(TENANT_HEADER)).map(|v| v.as_str().to_owned());
            if let Some(Err(e)) = tenant.as_deref().map(|t| self.sinks.check_tenant(t)) {
                self.stats.poison.fetch_add(1, Ordering::Relaxed);
                tracing::error!(partition = p, error = %e, "cluster: message for an invalid tenant; terminated");
                let _ = msg.ack_with(AckKind::Term).await;
                continue;
            }
            match wire::decode(&msg.payload) {
                Ok(payload) => {
                    let spans = matches!(payload, wire::Payload::Spans(_));
                    let g = groups.entry((tenant, spans)).or_default();
                    g.0.push(msg);
                    g.1.push(payload);
                }
                Err(e @ wire::DecodeError::Unknown(_)) => {
                    // A newer ingester can read it: left for one, never dropped.
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(partition = p, error = %e, "cluster: message in a newer format; handed back");
                    let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(60)))).await;
                }
                Err(e) => {
                    // Redelivering cannot help: the message is set aside for good.
                    self.stats.poison.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(partition = p, subject = %msg.subject, error = %e, "cluster: message not readable; terminated");
                    let _ = msg.ack_with(AckKind::Term).await;
                }
            }
        }
        for ((tenant, spans), (msgs, payloads)) in groups {
            let written = match self.sinks.sinks(tenant.as_deref()).await {
                Ok((span_sink, log_sink)) => {
                    if spans {
                        let mut batch = strand_core::SpanBatch::default();
                        for p in payloads {
                            if let wire::Payload::Spans(b) = p {
                                batch.resource_spans.extend(b.resource_spans);
                            }
                        }
                        span_sink.consume(batch).await
                    } else {
                        let mut batch = strand_core::LogBatch::default();
                        for p in payloads {
                            if let wire::Payload::Logs(b) = p {
                                batch.resource_logs.extend(b.resource_logs);
                            }
                        }
                        log_sink.consume_logs(batch).await
                    }
                }
                Err(e) => Err(e),
            };
            match written {
                // Durable in the store: now JetStream may forget them. `double_ack` waits
                // for the server's confirmation; should one be lost, the redelivered copy is
                // written again, which the store's idempotent writes make harmless.
                Ok(()) => {
                    let acks = msgs.iter().map(|m| m.double_ack());
                    for r in futures_util::future::join_all(acks).await {
                        match r {
                            Ok(()) => {
                                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                self.stats.ack_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(partition = p, error = %e, "cluster: acknowledgement not confirmed; the message may come again");
                            }
                        }
                    }
                }
                Err(e) => {
                    self.stats.retried.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                    let delay = match &e {
                        SinkError::RateLimited { retry_after_secs, .. } => {
                            Duration::from_secs(*retry_after_secs)
                        }
                        _ => Duration::from_secs(1),
                    };
                    tracing::warn!(partition = p, error = %e, "cluster: the store refused messages; redelivered later");
                    for m in msgs {
                        let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
                    }
                }
            }
        }
    }

    /// The partitions held now.
    pub fn partitions(&self) -> Vec<u32> {
        self.owned.lock().keys().copied().collect()
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
