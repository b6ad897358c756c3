//! Tenants: each one a whole stack of its own — store (WAL, head, blocks, indexes) in its
//! own directory, tail sampler, RED metrics, chain-integrity analyser, receivers and query
//! API — so no search, trace, service list, dependency graph, log or integrity edge can
//! reach another tenant's data: a request is routed to its tenant's stack before any of
//! these sees it.
//!
//! Without multi-tenancy there is one stack, `single-tenant`, in the data directory itself
//! (the layout of every earlier version). With it, that stack stays (it holds the data from
//! before, and the Jaeger agent's UDP spans, which carry no tenant), and every other tenant
//! lives in `data_dir/tenants/<id>/`, opened at start when it exists and on its first
//! write otherwise, at most `multitenancy.max_tenants` of them; reads of a tenant that
//! never wrote are answered by an empty store in memory.
//!
//! Per-tenant limits (`multitenancy.limits`): ingest rate in spans (and log records) and in
//! bytes per second, refused beyond with 429 / RESOURCE_EXHAUSTED and `Retry-After`;
//! retention and disk budget of the tenant's store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use strand_core::{
    BoxFuture, ChainIntegrity, KeyValue, LogBatch, LogSink, LogStore, SinkError, SpanBatch, SpanObserver,
    SpanSink, TraceReader, TraceStore,
};
use strand_ingest::Receiver;
use strand_integrity::ChainAnalyser;
use strand_sampling::runtime::Pipeline;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::auth::{Caller, Listener, SINGLE_TENANT};
use crate::config::{self, ByteSize, Config, HumanDuration};

/// The `multitenancy:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultitenancyConfig {
    /// `X-Scope-OrgID` selects the tenant of every request; off: one tenant,
    /// `single-tenant`, and the header is ignored.
    pub enabled: bool,
    /// Most tenants the server keeps; a request for one more is refused (each tenant has
    /// its own WAL, head and background threads).
    pub max_tenants: usize,
    /// Per-tenant limits; an entry for `*` applies to tenants without their own.
    pub limits: Vec<TenantLimits>,
}

impl Default for MultitenancyConfig {
    fn default() -> Self {
        Self { enabled: false, max_tenants: 100, limits: Vec::new() }
    }
}

/// Limits of one tenant (or of every tenant without an entry, `tenant: "*"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// The tenant id, or `*`.
    pub tenant: String,
    /// Spans and log records per second, with a second's worth as burst.
    #[serde(default)]
    pub ingest_spans_per_second: Option<f64>,
    /// Bytes per second of span and log data as decoded (names, attributes, events,
    /// bodies; about the size of its OTLP protobuf), with a second's worth as burst.
    #[serde(default)]
    pub ingest_bytes_per_second: Option<ByteSize>,
    /// The tenant's retention (instead of `storage.retention`).
    #[serde(default)]
    pub retention: Option<HumanDuration>,
    /// The tenant's disk budget (instead of `storage.max_disk_size`).
    #[serde(default)]
    pub max_disk_size: Option<ByteSize>,
}

impl MultitenancyConfig {
    /// The limits of `tenant`: its own entry, else the `*` entry.
    pub fn limits_of(&self, tenant: &str) -> Option<&TenantLimits> {
        self.limits
            .iter()
            .find(|l| l.tenant == tenant)
            .or_else(|| self.limits.iter().find(|l| l.tenant == "*"))
    }

    /// Problems with the section, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.max_tenants == 0 {
            errs.push("`multitenancy.max_tenants`: must be greater than zero".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.limits.iter().enumerate() {
            let at = format!("`multitenancy.limits[{i}]`");
            if l.tenant != "*"
                && let Err(e) = crate::auth::check_tenant_id(&l.tenant)
            {
                errs.push(format!("{at}.tenant: {e}"));
            }
            if !seen.insert(l.tenant.as_str()) {
                errs.push(format!("{at}.tenant: `{}` has two entries", l.tenant));
            }
            if l.ingest_spans_per_second.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                errs.push(format!("{at}.ingest_spans_per_second: must be greater than zero"));
            }
            if l.ingest_bytes_per_second.is_some_and(|b| b.0 == 0) {
                errs.push(format!("{at}.ingest_bytes_per_second: must be greater than zero"));
            }
            if l.retention.is_some_and(|r| r.0.is_zero()) {
                errs.push(format!("{at}.retention: must be greater than zero"));
            }
            if l.max_disk_size.is_some_and(|b| b.0 == 0) {
                errs.push(format!("{at}.max_disk_size: must be greater than zero"));
            }
        }
        errs
    }
}

/// A token bucket: `rate` per second, a second's worth of burst. A batch larger than the
/// burst passes when the bucket is full and leaves it in debt, so no batch size is refused
/// forever.
struct Bucket {
    rate: f64,
    state: parking_lot::Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self { rate, state: parking_lot::Mutex::new((rate, Instant::now())) }
    }

    /// Gives back what a refused request had taken.
    fn refund(&self, n: f64) {
        let mut s = self.state.lock();
        s.0 = (s.0 + n).min(self.rate);
    }

    /// Takes `n`, or says how many seconds until it could.
    fn take(&self, n: f64) -> Result<(), u64> {
        let mut s = self.state.lock();
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
        s.1 = now;
        let need = n.min(self.rate);
        if s.0 >= need {
            s.0 -= n;
            Ok(())
        } else {
            Err((((need - s.0) / self.rate).ceil() as u64).max(1))
        }
    }
}

/// The memory every tenant's store holds for data not yet in blocks, bounded together by
/// `storage.max_unwritten_size`: each store also keeps that bound on its own, so without
/// this N tenants could hold N times it.
pub struct Unwritten {
    limit: u64,
    stores: parking_lot::RwLock<Vec<Arc<dyn TraceStore>>>,
    /// A flush this pool started and that has not finished.
    flushing: Arc<std::sync::atomic::AtomicBool>,
    refused: AtomicU64,
}

impl Unwritten {
    fn new(limit: u64) -> Self {
        Self { limit, stores: Default::default(), flushing: Default::default(), refused: AtomicU64::new(0) }
    }

    /// Bytes every store holds before they are in blocks.
    fn total(&self) -> u64 {
        self.stores.read().iter().map(|s| s.unwritten_bytes()).sum()
    }

    /// From three quarters of the limit on, has the store holding the most cut its head
    /// into a block ([`Self::cut_biggest`]), so the total comes down without waiting for
    /// heads to age out; at the limit, refuses the write.
    fn admit(&self) -> Result<(), SinkError> {
        if self.stores.read().len() < 2 {
            return Ok(()); // one store keeps the bound itself
        }
        let total = self.total();
        if total >= self.limit / 4 * 3 {
            self.cut_biggest();
        }
        if total < self.limit {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(SinkError::Overloaded(format!(
            "{total} bytes of all tenants' received data wait to be written to blocks, at the limit of {} \
             (storage.max_unwritten_size or three quarters of limits.memory_size, shared by the tenants); retry later",
            self.limit
        )))
    }

    /// Has the store holding the most data not yet in blocks cut its head into a block,
    /// one cut at a time (also asked by the memory budget when it refuses requests while
    /// the stores hold more than half of it). Outside a tokio runtime, does nothing.
    fn cut_biggest(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let stores = self.stores.read();
        if let Some(biggest) = stores.iter().max_by_key(|s| s.unwritten_bytes()).cloned()
            && !self.flushing.swap(true, Ordering::AcqRel)
        {
            /// Clears the flag however the flush ends (a panic included).
            struct Done(Arc<std::sync::atomic::AtomicBool>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                }
            }
            let done = Done(self.flushing.clone());
            runtime.spawn(async move {
                let _done = done;
                if let Err(e) = biggest.flush().await {
                    tracing::warn!(error = %e, "cutting a head for the shared memory bound failed");
                }
            });
        }
    }
}

/// A tenant's ingest limits in front of its pipeline, and what they refused.
pub struct Limited {
    tenant: String,
    inner: Arc<Pipeline>,
    spans: Option<(Bucket, f64)>,
    bytes: Option<(Bucket, u64)>,
    unwritten: Arc<Unwritten>,
    refused: AtomicU64,
}

impl Limited {
    fn new(
        tenant: &str,
        inner: Arc<Pipeline>,
        limits: Option<&TenantLimits>,
        unwritten: Arc<Unwritten>,
    ) -> Self {
        let spans = limits.and_then(|l| l.ingest_spans_per_second).map(|r| (Bucket::new(r), r));
        let bytes = limits.and_then(|l| l.ingest_bytes_per_second).map(|b| (Bucket::new(b.0 as f64), b.0));
        Self { tenant: tenant.to_owned(), inner, spans, bytes, unwritten, refused: AtomicU64::new(0) }
    }

    fn admit(&self, items: usize, bytes: impl FnOnce() -> usize) -> Result<(), SinkError> {
        self.unwritten.admit()?;
        if let Some((bucket, rate)) = &self.spans
            && let Err(wait) = bucket.take(items as f64)
        {
            self.refused.fetch_add(items as u64, Ordering::Relaxed);
            return Err(SinkError::RateLimited {
                message: format!(
                    "tenant `{}` is over its ingest limit of {rate} spans and log records per second; retry in {wait} s",
                    self.tenant
                ),
                retry_after_secs: wait,
            });
        }
        if let Some((bucket, rate)) = &self.bytes
            && let Err(wait) = bucket.take(bytes() as f64)
        {
            if let Some((spans, _)) = &self.spans {
                spans.refund(items as f64);
            }
            self.refused.fetch_add(items as u64, Ordering::Relaxed);
            return Err(SinkError::RateLimited {
                message: format!(
                    "tenant `{}` is over its ingest limit of {} per second; retry in {wait} s",
                    self.tenant,
                    ByteSize(*rate)
                ),
                retry_after_secs: wait,
            });
        }
        Ok(())
    }
}

impl SpanSink for Limited {
    fn consume(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.admit(batch.span_count(), || span_bytes(&batch))?;
            self.inner.consume(batch).await
        })
    }
}

impl LogSink for Limited {
    fn consume_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.admit(batch.record_count(), || log_bytes(&batch))?;
            self.inner.consume_logs(batch).await
        })
    }
}

fn value_bytes(v: &strand_core::AnyValue) -> usize {
    use strand_core::AnyValue as V;
    match v {
        V::String(s) => s.len(),
        V::Bytes(b) => b.len(),
        V::Empty => 0,
        V::Bool(_) => 1,
        V::Int(_) | V::Double(_) => 8,
        V::Array(items) => items.iter().map(value_bytes).sum(),
        V::KvList(kvs) => attrs_bytes(kvs),
    }
}

fn attrs_bytes(attrs: &[KeyValue]) -> usize {
    attrs.iter().map(|kv| kv.key.len() + value_bytes(&kv.value) + 4).sum()
}

/// About the OTLP protobuf size of a batch: ids, times, names, attributes, events, links.
pub fn span_bytes(batch: &SpanBatch) -> usize {
    batch
        .resource_spans
        .iter()
        .map(|rs| {
            attrs_bytes(&rs.resource.attributes)
                + rs.scope_spans
                    .iter()
                    .map(|ss| {
                        ss.spans
                            .iter()
                            .map(|s| {
                                56 + s.name.len()
                                    + s.trace_state.len()
                                    + s.status.message.len()
                                    + attrs_bytes(&s.attributes)
                                    + s.events
                                        .iter()
                                        .map(|e| 12 + e.name.len() + attrs_bytes(&e.attributes))
                                        .sum::<usize>()
                                    + s.links
                                        .iter()
                                        .map(|l| 28 + l.trace_state.len() + attrs_bytes(&l.attributes))
                                        .sum::<usize>()
                            })
                            .sum::<usize>()
                    })
                    .sum::<usize>()
        })
        .sum()
}

/// About the OTLP protobuf size of a log batch.
pub fn log_bytes(batch: &LogBatch) -> usize {
    batch
        .resource_logs
        .iter()
        .map(|rl| {
            attrs_bytes(&rl.resource.attributes)
                + rl.scope_logs
                    .iter()
                    .flat_map(|sl| &sl.records)
                    .map(|r| 48 + value_bytes(&r.body) + r.severity_text.len() + attrs_bytes(&r.attributes))
                    .sum::<usize>()
        })
        .sum()
}

/// The sinks of receivers that must store nothing: the one the tenants' receivers are
/// made from, and the empty stack's (reads of tenants that never wrote).
pub struct Refuse;

impl SpanSink for Refuse {
    fn consume(&self, _: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Err(SinkError::Unavailable("this tenant has no store yet; retry".into())) })
    }
}

impl LogSink for Refuse {
    fn consume_logs(&self, _: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Err(SinkError::Unavailable("this tenant has no store yet; retry".into())) })
    }
}

/// One tenant's stack.
pub struct Stack {
    /// Its id.
    pub tenant: String,
    /// Its store.
    pub store: Arc<dyn TraceStore>,
    /// Its tail sampler, RED metrics and span observers.
    pub pipeline: Arc<Pipeline>,
    /// Its chain-integrity analyser.
    pub integrity: Option<Arc<ChainAnalyser>>,
    /// Its RED metrics (every span received, before sampling; on an ingester every span
    /// of the cluster).
    pub red: Arc<strand_sampling::red::RedMetrics>,
    /// Its receivers' front (the Jaeger agent's UDP ports use the primary stack's).
    pub receiver: Receiver,
    limited: Arc<Limited>,
    routes: Routes,
}

struct Routes {
    otlp_grpc: Router,
    otlp_http: Router,
    jaeger: Router,
    zipkin: Router,
    query: Router,
}

impl Stack {
    fn router(&self, listener: Listener) -> Option<Router> {
        Some(match listener {
            Listener::OtlpGrpc => self.routes.otlp_grpc.clone(),
            Listener::OtlpHttp => self.routes.otlp_http.clone(),
            Listener::JaegerHttp => self.routes.jaeger.clone(),
            Listener::Zipkin => self.routes.zipkin.clone(),
            Listener::Query => self.routes.query.clone(),
            Listener::RemoteSampling => return None,
        })
    }

    /// What its receivers write to: its pipeline behind its limits.
    pub fn sinks(&self) -> (Arc<dyn SpanSink>, Arc<dyn LogSink>) {
        (self.limited.clone(), self.limited.clone())
    }

    /// Spans and log records its ingest limits refused.
    pub fn refused(&self) -> u64 {
        self.limited.refused.load(Ordering::Relaxed)
    }
}

/// Every tenant's stack, opened on demand.
pub struct Tenants {
    cfg: Arc<Config>,
    base: Receiver,
    stop: watch::Receiver<bool>,
    stacks: parking_lot::RwLock<BTreeMap<String, Arc<Stack>>>,
    opening: tokio::sync::Mutex<()>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Answers reads for a tenant that has never written: an empty store in memory, so a
    /// read creates no directory, thread or stack.
    empty: parking_lot::Mutex<Option<Arc<Stack>>>,
    /// The tenants' stores' unwritten data, bounded together.
    unwritten: Arc<Unwritten>,
    /// This process's cluster role, when it is not the single binary.
    node: Option<Arc<crate::cluster::Node>>,
}

/// Why a tenant's stack is not there.
#[derive(Debug)]
pub enum TenantError {
    /// `multitenancy.max_tenants` stacks are open.
    TooMany(usize),
    /// Opening its store, sampler or analyser failed.
    Open(anyhow::Error),
}

impl Tenants {
    /// Opens the `single-tenant` stack in the data directory and, with multi-tenancy,
    /// every tenant's directory found under `tenants/`. `base` holds the receivers' shared
    /// bounds; the stacks' background tasks end when `stop` turns true.
    pub async fn start(
        cfg: Arc<Config>,
        base: Receiver,
        stop: watch::Receiver<bool>,
        node: Option<Arc<crate::cluster::Node>>,
    ) -> anyhow::Result<Arc<Self>> {
        let me = Arc::new(Self {
            cfg: cfg.clone(),
            base,
            stop,
            stacks: Default::default(),
            opening: tokio::sync::Mutex::new(()),
            tasks: Default::default(),
            empty: Default::default(),
            unwritten: Arc::new(Unwritten::new(cfg.max_unwritten_bytes())),
            node,
        });
        // The receivers' memory budget counts the stores' unwritten data too.
        let (unwritten, relieve) = (me.unwritten.clone(), me.unwritten.clone());
        me.base.memory().hold_also(move || unwritten.total(), move || relieve.cut_biggest());
        me.open(SINGLE_TENANT).await.map_err(|e| match e {
            TenantError::Open(e) => e,
            TenantError::TooMany(n) => anyhow::anyhow!("multitenancy.max_tenants is {n}"),
        })?;
        if cfg.multitenancy.enabled {
            let dir = cfg.data_dir.join("tenants");
            let mut found = Vec::new();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if entry.path().is_dir() && crate::auth::check_tenant_id(&name).is_ok() {
                        found.push(name);
                    }
                }
            }
            found.sort();
            // Every tenant with data is opened, however many: `max_tenants` bounds new ones.
            for tenant in found {
                if let Err(e) = me.open_unbounded(&tenant).await {
                    let msg = match e {
                        TenantError::Open(e) => format!("{e:#}"),
                        TenantError::TooMany(n) => {
                            format!("more tenant directories than multitenancy.max_tenants ({n})")
                        }
                    };
                    anyhow::bail!("opening tenant `{tenant}`: {msg}");
                }
            }
        }
        Ok(me)
    }

    /// The stacks open now (the empty stack of tenants without data excepted).
    pub fn open_stacks(&self) -> Vec<Arc<Stack>> {
        self.stacks.read().values().cloned().collect()
    }

    /// Whether the header selects tenants.
    pub fn multitenant(&self) -> bool {
        self.cfg.multitenancy.enabled
    }

    /// The `single-tenant` stack (the data directory itself).
    pub fn primary(&self) -> Arc<Stack> {
        self.stacks.read().get(SINGLE_TENANT).cloned().expect("the primary stack is opened at start")
    }

    /// The largest request a receiver takes (`otlp.max_request_size`).
    pub fn max_request_bytes(&self) -> u64 {
        self.cfg.otlp.max_request_size.0
    }

    /// The ingest memory budget (`limits.memory_size`) every receiver shares.
    pub fn memory(&self) -> &Arc<strand_ingest::memory::MemoryBudget> {
        self.base.memory()
    }

    /// Writes refused because the tenants' unwritten data together was at
    /// `storage.max_unwritten_size`.
    pub fn refused_for_memory(&self) -> u64 {
        self.unwritten.refused.load(Ordering::Relaxed)
    }

    /// Every open stack, by tenant id.
    pub fn all(&self) -> Vec<Arc<Stack>> {
        self.stacks.read().values().cloned().collect()
    }

    /// The stack of `tenant`, opened when needed.
    pub async fn get(&self, tenant: &str) -> Result<Arc<Stack>, TenantError> {
        if let Some(s) = self.stacks.read().get(tenant) {
            return Ok(s.clone());
        }
        self.open(tenant).await
    }

    /// The stack that answers `listener` for `tenant`: for reads of a tenant that has no
    /// stack and no directory, the empty one; otherwise its own, opened when needed.
    pub async fn for_request(
        &self,
        tenant: &str,
        listener: Listener,
        method: &axum::http::Method,
        path: &str,
    ) -> Result<Arc<Stack>, TenantError> {
        if let Some(s) = self.stacks.read().get(tenant) {
            return Ok(s.clone());
        }
        // Only a request that can store something makes a new tenant: not a read, not a
        // request for a path or method no receiver stores. The others are answered by the
        // empty stack, whose receivers refuse every write.
        let stores = method == axum::http::Method::POST
            && match listener {
                Listener::OtlpHttp => path == "/v1/traces" || path == "/v1/logs",
                Listener::OtlpGrpc => {
                    path == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        || path == "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
                }
                Listener::JaegerHttp => path == "/api/traces",
                Listener::Zipkin => path == "/api/v2/spans",
                Listener::Query | Listener::RemoteSampling => false,
            };
        // A querier's tenants have their data on the ingesters, a receiver's nowhere: their
        // stacks keep nothing on disk and answer reads as their role does.
        let remote = self.node.as_ref().is_some_and(|n| n.stateless());
        if !stores && !remote && !self.dir(tenant).exists() {
            if let Some(e) = self.empty.lock().clone() {
                return Ok(e);
            }
            let empty =
                Arc::new(self.open_stack("", &self.cfg.data_dir, true).await.map_err(TenantError::Open)?);
            return Ok(self.empty.lock().get_or_insert(empty).clone());
        }
        self.open(tenant).await
    }

    fn dir(&self, tenant: &str) -> PathBuf {
        if tenant == SINGLE_TENANT {
            self.cfg.data_dir.clone()
        } else {
            self.cfg.data_dir.join("tenants").join(tenant)
        }
    }

    async fn open(&self, tenant: &str) -> Result<Arc<Stack>, TenantError> {
        self.open_bounded(tenant, true).await
    }

    async fn open_unbounded(&self, tenant: &str) -> Result<Arc<Stack>, TenantError> {
        self.open_bounded(tenant, false).await
    }

    async fn open_bounded(&self, tenant: &str, bounded: bool) -> Result<Arc<Stack>, TenantError> {
        let _one_at_a_time = self.opening.lock().await;
        if let Some(s) = self.stacks.read().get(tenant) {
            return Ok(s.clone());
        }
        let max = self.cfg.multitenancy.max_tenants;
        // The primary stack is not counted: it exists whether or not tenants are on.
        if bounded && tenant != SINGLE_TENANT && self.stacks.read().len() > max {
            return Err(TenantError::TooMany(max));
        }
        let stack = self.open_stack(tenant, &self.dir(tenant), false).await.map_err(TenantError::Open)?;
        let stack = Arc::new(stack);
        self.stacks.write().insert(tenant.to_owned(), stack.clone());
        if tenant != SINGLE_TENANT {
            tracing::info!(tenant, "opened the tenant's store");
        }
        Ok(stack)
    }

    /// Opens a tenant's stack in `dir`; `empty`: the stack for reads of tenants without
    /// data (a memory store, no sampler, analyser or background task, nothing on disk).
    async fn open_stack(&self, tenant: &str, dir: &Path, empty: bool) -> anyhow::Result<Stack> {
        let cfg = &self.cfg;
        let limits = cfg.multitenancy.limits_of(tenant);
        let mut storage = cfg.storage.clone();
        storage.max_unwritten_size = config::ByteSize(cfg.max_unwritten_bytes());
        if empty {
            storage.backend = config::Backend::Memory;
        }
        if let Some(l) = limits {
            if let Some(r) = l.retention {
                storage.retention = r;
            }
            if let Some(b) = l.max_disk_size {
                storage.max_disk_size = Some(b);
            }
        }
        let (storage_c, dir_c) = (storage.clone(), dir.to_owned());
        // A receiver publishes to JetStream and a querier asks the ingesters: neither
        // keeps data, samples or analyses chains (the ingesters do, with whole traces).
        let stateless = self.node.as_ref().is_some_and(|n| n.stateless());
        // An ingester whose blocks go to object storage hands each block over
        // (`strand_cluster::handoff`); its own store sees them until then.
        let handing_over = self.node.as_ref().filter(|n| !empty && n.objects().is_some()).cloned();
        let mut handed: Option<Arc<strand_store::Store>> = None;
        let store: Arc<dyn TraceStore> =
            match self.node.as_ref().filter(|_| !empty).and_then(|n| n.store_for(tenant)) {
                Some(store) => store,
                None if handing_over.is_some() => {
                    let mut scfg = storage.to_store_config();
                    // Compacting here would upload the merged data a second time: blocks
                    // are compacted in object storage.
                    scfg.compaction_target_spans = 0;
                    // Retention never deletes a block the bucket does not have yet.
                    scfg.keep_until_handed_over = true;
                    let store = tokio::task::spawn_blocking(move || {
                        strand_store::Store::open(Arc::new(strand_store::fs::StdFs), &dir_c, scfg)
                    })
                    .await
                    .context("store open task failed")?
                    .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
                    let store = Arc::new(store);
                    handed = Some(store.clone());
                    store
                }
                None => tokio::task::spawn_blocking(move || storage_c.open_backend(&dir_c))
                    .await
                    .context("store open task failed")?
                    .with_context(|| {
                        format!("opening the {:?} store in {}", storage.backend, dir.display())
                    })?,
            };
        let red = Arc::new(strand_sampling::red::RedMetrics::new(
            strand_sampling::red::RedLimits::default(),
            strand_store::now_unix_nano(),
        ));
        let integrity = if cfg.integrity.enabled && !empty && !stateless {
            // The findings log and edge counts live beside the data; a memory store keeps none.
            let idir = (storage.backend == config::Backend::Embedded).then(|| dir.to_owned());
            let (icfg, reader, retention) =
                (cfg.integrity.clone(), store.clone() as Arc<dyn TraceReader>, storage.retention.0);
            let analyser = tokio::task::spawn_blocking(move || {
                ChainAnalyser::open(
                    icfg,
                    idir.as_deref(),
                    reader,
                    retention,
                    Arc::new(strand_core::SystemClock),
                )
            })
            .await
            .context("integrity open task failed")?
            .context("starting the chain-integrity analyser")?;
            Some(Arc::new(analyser))
        } else {
            None
        };
        // An ingester's analyser sees every partition's spans through a consumer of its
        // own (`strand_cluster::ingester`), not only what this ingester stores.
        let ingester = self.node.as_ref().is_some_and(|n| n.role == strand_cluster::Role::Ingester);
        let observers: Vec<Arc<dyn SpanObserver>> = if ingester {
            Vec::new()
        } else {
            integrity.iter().map(|a| a.clone() as Arc<dyn SpanObserver>).collect()
        };
        let no_sampling = strand_sampling::SamplingConfig::default();
        let pipeline = Arc::new(
            Pipeline::open(
                store.clone(),
                // An ingester's RED counts every partition (fed with its analyser, see
                // `cluster`); what its pipeline counts, its own partitions, is not shown.
                if ingester {
                    Arc::new(strand_sampling::red::RedMetrics::new(
                        strand_sampling::red::RedLimits::default(),
                        strand_store::now_unix_nano(),
                    ))
                } else {
                    red.clone()
                },
                observers,
                if empty || stateless { &no_sampling } else { &cfg.sampling },
                dir,
                storage.fsync == config::Fsync::Always,
            )
            .await
            .context("starting tail sampling")?,
        );
        // Rate limits apply where clients send (receivers); an ingester keeps only the
        // shared memory bound, whose refusal hands the message back for later.
        let limited = Arc::new(Limited::new(
            tenant,
            pipeline.clone(),
            if ingester { None } else { limits },
            self.unwritten.clone(),
        ));
        if !empty {
            self.unwritten.stores.write().push(store.clone());
        }
        // Log records are stored as they come, or wait for their trace's tail decision
        // (`sampling.logs: follow_traces`).
        let receiver = if empty {
            // Whatever reaches the empty stack's receivers is refused, never stored where
            // every tenant without data reads.
            self.base.with_sinks(Arc::new(Refuse), Some(Arc::new(Refuse)))
        } else {
            self.base.with_sinks(limited.clone(), Some(limited.clone()))
        };
        let mut chain = integrity.clone().map(|a| a as Arc<dyn ChainIntegrity>);
        if cfg.integrity.enabled && !empty {
            // A querier's analysis is the ingesters'.
            if let Some(remote) = self.node.as_ref().and_then(|n| n.integrity_for(tenant)) {
                chain = Some(remote);
            }
        }
        let mut query = strand_query::router(
            store.clone() as Arc<dyn TraceReader>,
            cfg.query.to_limits(),
            chain,
            Some(store.clone() as Arc<dyn LogStore>),
        )
        .merge(match self.node.as_ref().filter(|n| n.role == strand_cluster::Role::Querier) {
            // Any ingester's RED covers the whole cluster: a querier asks one.
            Some(node) => node.red_proxy(tenant),
            None => crate::red_router(red.clone()),
        });
        if self.node.as_ref().is_some_and(|n| n.role == strand_cluster::Role::Ingester) {
            // Queriers read this ingester's store through the cluster's read protocol.
            let view_at = handed.clone().map(|s| {
                Arc::new(move |clock| s.view(strand_store::Visibility::HeldAt(clock)))
                    as strand_cluster::wire::ViewAt
            });
            query = query.merge(strand_cluster::wire::router(
                store.clone(),
                view_at,
                integrity.clone().map(|a| a as Arc<dyn ChainIntegrity>),
            ));
        }
        let query = query.fallback(|uri: axum::http::Uri| async move {
            (StatusCode::NOT_FOUND, format!("no such path: {}", uri.path()))
        });
        let routes = Routes {
            otlp_grpc: tonic::service::Routes::new(strand_ingest::otlp::grpc::service(receiver.clone()))
                .add_service(strand_ingest::otlp::grpc::logs_service(receiver.clone()))
                .add_service(strand_ingest::otlp::grpc::metrics_service(receiver.clone()))
                .into_axum_router(),
            otlp_http: strand_ingest::otlp::http::router(receiver.clone()),
            jaeger: strand_ingest::jaeger::router(receiver.clone()),
            zipkin: strand_ingest::zipkin::router(receiver.clone()),
            query,
        };
        let stack = |routes| Stack {
            tenant: tenant.to_owned(),
            store,
            pipeline: pipeline.clone(),
            integrity: integrity.clone(),
            red: red.clone(),
            receiver,
            limited,
            routes,
        };
        if empty {
            return Ok(stack(routes));
        }
        let mut tasks = self.tasks.lock();
        if let (Some(node), Some(store)) = (&handing_over, handed) {
            let mut stop = self.stop.clone();
            tasks.extend(node.upload(tenant, store, async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
        }
        {
            let (p, mut stop) = (pipeline.clone(), self.stop.clone());
            tasks.push(tokio::spawn(async move {
                p.run_decider(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
            }));
        }
        if let Some(a) = integrity.clone() {
            let mut stop = self.stop.clone();
            tasks.push(tokio::spawn(async move {
                a.run(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
            }));
        }
        Ok(stack(routes))
    }

    /// After `stop`: waits for the stacks' background tasks, then closes every store
    /// (cutting each head into a block).
    pub async fn close(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        for stack in self.all() {
            stack.store.close().await;
        }
    }
}

/// The handler every tenant-scoped request of a listener goes through: to the stack of
/// the caller's tenant (set by the auth middleware), in the listener's error shape when
/// that stack cannot be had.
pub async fn dispatch(State((tenants, listener)): State<(Arc<Tenants>, Listener)>, req: Request) -> Response {
    let tenant = match req.extensions().get::<Caller>() {
        Some(c) => c.tenant.clone(),
        None if !tenants.multitenant() => SINGLE_TENANT.to_owned(),
        None => {
            let msg = "no tenant: send X-Scope-OrgID with the tenant id";
            return crate::auth::error_response(
                listener,
                req.headers(),
                StatusCode::UNAUTHORIZED,
                tonic::Code::Unauthenticated,
                msg.into(),
            );
        }
    };
    let stack = match tenants.for_request(&tenant, listener, req.method(), req.uri().path()).await {
        Ok(s) => s,
        Err(TenantError::TooMany(n)) => {
            let msg = format!(
                "tenant `{tenant}` cannot be added: the server holds multitenancy.max_tenants ({n}) tenants"
            );
            return crate::auth::error_response(
                listener,
                req.headers(),
                StatusCode::FORBIDDEN,
                tonic::Code::PermissionDenied,
                msg,
            );
        }
        Err(TenantError::Open(e)) => {
            tracing::error!(tenant, error = format!("{e:#}"), "cannot open the tenant's store");
            let msg = format!("tenant `{tenant}`'s store cannot be opened; retry later");
            return crate::auth::error_response(
                listener,
                req.headers(),
                StatusCode::SERVICE_UNAVAILABLE,
                tonic::Code::Unavailable,
                msg,
            );
        }
    };
    // Handed on as a new request carrying only what the stack needs: the outer route's
    // path parameters (`/api/{*rest}`) must not reach the stack's own routes.
    let (parts, body) = req.into_parts();
    let mut inner = Request::new(body);
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = parts.uri;
    *inner.version_mut() = parts.version;
    *inner.headers_mut() = parts.headers;
    if let Some(c) = parts.extensions.get::<Caller>() {
        inner.extensions_mut().insert(c.clone());
    }
    if let Some(p) = parts.extensions.get::<crate::auth::Peer>() {
        inner.extensions_mut().insert(*p);
    }
    match stack.router(listener) {
        Some(router) => match router.oneshot(inner).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
