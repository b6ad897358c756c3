//! A cluster role's parts in this process (`cluster.role`; see `strand_cluster` and
//! docs/cluster.md): the NATS connection, and what each tenant's stack uses instead of the
//! embedded store on a receiver (a publisher) or a querier (the ingesters, merged).

use std::sync::{Arc, OnceLock, Weak};

use anyhow::Context as _;
use strand_cluster::bus::Bus;
use strand_cluster::compact::{CompactionStats, Compactor};
use strand_cluster::handoff::{RemoteBlocks, UploadStats, Uploader};
use strand_cluster::ingester::{Ingester, Sinks};
use strand_cluster::objects::{ObjectFs, Objects, ObjectsConfig};
use strand_cluster::publish::{PublishStats, Publisher};
use strand_cluster::querier::{Members, RemoteStore};
use strand_cluster::{ClusterConfig, Role};
use strand_core::metrics::MetricFamily;
use strand_core::{BoxFuture, SinkError, TraceStore};

use crate::auth::SINGLE_TENANT;
use crate::tenants::{TenantError, Tenants};

/// How long a role waits for NATS at start before giving up.
const NATS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// This process's part in a cluster.
pub struct Node {
    /// The role.
    pub role: Role,
    bus: Arc<Bus>,
    published: Arc<PublishStats>,
    members: Option<Arc<Members>>,
    ingester: OnceLock<Arc<Ingester>>,
    /// The bucket blocks go to, when they do.
    objects: Option<Objects>,
    objects_cfg: ObjectsConfig,
    /// The bucket as a file system the store's block reader reads (queriers read blocks
    /// there, ingesters compact them).
    object_fs: Option<Arc<ObjectFs>>,
    /// Where an ingester's compactor writes merged blocks before uploading them.
    staging: std::path::PathBuf,
    compactions: Arc<CompactionStats>,
    /// Querier: the budgets of reads of blocks in object storage.
    store_cfg: strand_store::StoreConfig,
    uploads: Arc<UploadStats>,
}

impl Node {
    /// Connects to NATS for a cluster role; `None` for the single binary. A querier
    /// caches small block files from object storage in `data_dir` (unless
    /// `cluster.objects.cache_dir` says where), and reads blocks within `store`'s budgets.
    pub async fn open(
        cfg: &ClusterConfig,
        data_dir: &std::path::Path,
        store: strand_store::StoreConfig,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if cfg.role == Role::All {
            return Ok(None);
        }
        let objects = if cfg.objects.enabled() && matches!(cfg.role, Role::Ingester | Role::Querier) {
            Some(cfg.objects.open().context("cluster.objects")?)
        } else {
            None
        };
        let object_fs = match &objects {
            Some(objects) => {
                let dir = if cfg.objects.cache_dir.is_empty() {
                    data_dir.join("object-cache")
                } else {
                    std::path::PathBuf::from(&cfg.objects.cache_dir)
                };
                let fs = ObjectFs::new(
                    objects.clone(),
                    tokio::runtime::Handle::current(),
                    &dir,
                    cfg.objects.cache_size.0,
                )
                .with_context(|| format!("opening the object cache in {}", dir.display()))?;
                Some(Arc::new(fs))
            }
            _ => None,
        };
        let bus = Arc::new(Bus::open(cfg, NATS_WAIT).await?);
        let members = if cfg.role == Role::Querier { Some(Members::new(bus.clone())?) } else { None };
        tracing::info!(
            role = cfg.role.as_str(),
            nats = %cfg.nats_url,
            stream = %cfg.stream_name(),
            partitions = cfg.partitions,
            "cluster: joined"
        );
        Ok(Some(Arc::new(Self {
            role: cfg.role,
            bus,
            published: Arc::default(),
            members,
            ingester: OnceLock::new(),
            objects,
            objects_cfg: cfg.objects.clone(),
            object_fs,
            store_cfg: store,
            uploads: Arc::default(),
            staging: data_dir.join("compaction-staging"),
            compactions: Arc::default(),
        })))
    }

    /// Ingester: the bucket its blocks are handed over to, when they are.
    pub fn objects(&self) -> Option<&Objects> {
        self.objects.as_ref().filter(|_| self.role == Role::Ingester)
    }

    /// Ingester: hands `store`'s blocks of `tenant` over to object storage until `stop`.
    pub fn upload(
        &self,
        tenant: &str,
        store: Arc<strand_store::Store>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let objects = self.objects()?.clone();
        let uploader = Uploader::new(objects, store, tenant, self.objects_cfg.clone(), self.uploads.clone());
        Some(tokio::spawn(uploader.run(stop)))
    }

    /// Receivers and queriers keep no data: no store, tail sampling or chain analysis of
    /// their own (the ingesters run them, with every span of a trace in one place).
    pub fn stateless(&self) -> bool {
        matches!(self.role, Role::Receiver | Role::Querier)
    }

    /// The store of `tenant`'s stack in this role; `None`: the embedded store (ingesters).
    pub fn store_for(&self, tenant: &str) -> Option<Arc<dyn TraceStore>> {
        match self.role {
            Role::Receiver => {
                Some(Arc::new(Publisher::new(self.bus.clone(), tenant, self.published.clone())))
            }
            Role::Querier => {
                let blocks = self.object_fs.as_ref().map(|fs| {
                    let blocks = Arc::new(RemoteBlocks::new(
                        fs.clone(),
                        tenant,
                        self.objects_cfg.clone(),
                        self.store_cfg.clone(),
                    ));
                    tokio::spawn(RemoteBlocks::keep_listing(Arc::downgrade(&blocks)));
                    blocks
                });
                Some(Arc::new(RemoteStore::new(
                    self.members.clone().expect("a querier lists members"),
                    (tenant != SINGLE_TENANT).then(|| tenant.to_owned()),
                    blocks,
                )))
            }
            Role::Ingester | Role::All => None,
        }
    }

    /// A querier's chain integrity for `tenant`: the ingesters' analysers, merged.
    pub fn integrity_for(&self, tenant: &str) -> Option<Arc<dyn strand_core::ChainIntegrity>> {
        let members = self.members.clone()?;
        Some(Arc::new(strand_cluster::querier::RemoteIntegrity::new(
            members,
            (tenant != SINGLE_TENANT).then(|| tenant.to_owned()),
        )))
    }

    /// A querier's RED and service-performance routes: forwarded to an ingester, whose
    /// RED metrics count every span of the cluster.
    pub fn red_proxy(&self, tenant: &str) -> axum::Router {
        use axum::extract::State;
        use axum::response::IntoResponse as _;
        let members = self.members.clone().expect("a querier lists members");
        let state = (members, (tenant != SINGLE_TENANT).then(|| tenant.to_owned()));
        let forward = |State((members, tenant)): State<(Arc<Members>, Option<String>)>,
                       uri: axum::http::Uri| async move {
            let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
            match members.proxy_get(tenant.as_deref(), &path).await {
                Ok((status, kind, body)) => {
                    let status = axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                    let kind = kind.unwrap_or_else(|| "application/json".into());
                    (status, [(axum::http::header::CONTENT_TYPE, kind)], body).into_response()
                }
                Err(e) => strand_query::ApiError::from(e).into_response(),
            }
        };
        axum::Router::new()
            .route("/api/v1/metrics/red", axum::routing::get(forward))
            .route("/api/metrics/minstep", axum::routing::get(forward))
            .route("/api/metrics/{kind}", axum::routing::get(forward))
            .with_state(state)
    }

    /// Starts consuming (ingesters): registers as reachable at `url` and balances the
    /// partitions until `stopped()` ends (and, with object storage, takes turns at
    /// compacting it); the returned task ends once the leases are given back.
    pub fn start_ingester<F>(
        &self,
        cfg: &ClusterConfig,
        url: String,
        tenants: &Arc<Tenants>,
        stopped: impl Fn() -> F,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = if cfg.ingester_id.is_empty() { host_name()? } else { cfg.ingester_id.clone() };
        tracing::info!(ingester = %id, url = %url, "cluster: ingester registering");
        let sinks = Arc::new(TenantSinks {
            tenants: Arc::downgrade(tenants),
            bus: self.bus.clone(),
            published: self.published.clone(),
        });
        let ingester = Ingester::new(self.bus.clone(), id.clone(), url, sinks);
        let _ = self.ingester.set(ingester.clone());
        if let (Some(objects), Some(fs)) = (self.objects(), &self.object_fs) {
            let compactor = Compactor::new(
                self.bus.clone(),
                objects.clone(),
                fs.clone(),
                id,
                self.objects_cfg.clone(),
                self.store_cfg.clone(),
                self.staging.clone(),
                self.compactions.clone(),
            );
            tokio::spawn(compactor.run(stopped()));
        }
        Ok(tokio::spawn(ingester.run(stopped())))
    }

    /// The role's counters and gauges (the publishers' are their stores').
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let mut out = vec![MetricFamily::gauge(
            "strand_cluster_nats_connected",
            "1 while the connection to NATS is up.",
            if self.bus.connected() { 1.0 } else { 0.0 },
        )];
        if self.role == Role::Receiver {
            out.extend(self.published.metric_families());
        }
        if let Some(i) = self.ingester.get() {
            out.extend(i.metric_families());
        }
        if let Some(m) = &self.members {
            out.extend(m.metric_families());
        }
        if self.objects().is_some() {
            out.extend(self.uploads.metric_families());
            out.extend(self.compactions.metric_families());
        }
        if let Some(fs) = &self.object_fs {
            let (hits, misses, bytes) = fs.cache().counts();
            out.push(MetricFamily::counter(
                "strand_cluster_object_cache_hits_total",
                "Reads of small block files answered from the querier's disk cache.",
                hits as f64,
            ));
            out.push(MetricFamily::counter(
                "strand_cluster_object_cache_misses_total",
                "Reads of small block files fetched from object storage.",
                misses as f64,
            ));
            out.push(MetricFamily::gauge(
                "strand_cluster_object_cache_bytes",
                "Bytes the querier's disk cache of small block files holds.",
                bytes as f64,
            ));
        }
        out
    }
}

/// The host name, an ingester's id when none is configured.
pub(crate) fn host_name() -> anyhow::Result<String> {
    let name = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .context("cluster.ingester_id is not set and the host name is unknown")?;
    Ok(name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect())
}

/// An ingester writes each tenant's messages through that tenant's pipeline (tail
/// sampling, RED, chain analysis, store).
struct TenantSinks {
    tenants: Weak<Tenants>,
    /// Where undecided traces of a partition given up are published back.
    bus: Arc<Bus>,
    published: Arc<PublishStats>,
}

impl Sinks for TenantSinks {
    fn check_tenant(&self, tenant: &str) -> Result<(), String> {
        crate::auth::check_tenant_id(tenant)
    }

    fn observe(&self, tenant: Option<&str>, batch: strand_core::SpanBatch) -> BoxFuture<'_, ()> {
        let tenant = tenant.unwrap_or(SINGLE_TENANT).to_owned();
        Box::pin(async move {
            let Some(tenants) = self.tenants.upgrade() else { return };
            if tenant != SINGLE_TENANT && !tenants.multitenant() {
                return;
            }
            if let Ok(stack) = tenants.get(&tenant).await {
                let now = strand_store::now_unix_nano();
                stack.red.observe(&batch, now);
                if let Some(analyser) = &stack.integrity {
                    use strand_core::SpanObserver as _;
                    analyser.observe(&batch, now);
                }
            }
        })
    }

    fn hand_back(&self, partition: u32, partitions: u32) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(tenants) = self.tenants.upgrade() else { return };
            for stack in tenants.open_stacks() {
                let pick =
                    |id: &strand_core::TraceId| strand_cluster::partition_of(id, partitions) == partition;
                let Some(handover) = stack.pipeline.take_undecided(pick) else { continue };
                let n = handover.traces();
                let publisher =
                    Publisher::handing_back(self.bus.clone(), &stack.tenant, self.published.clone());
                use strand_core::{LogStore as _, TraceWriter as _};
                let mut sent = publisher.write(handover.spans.clone()).await;
                if sent.is_ok() && handover.logs.record_count() > 0 {
                    sent = publisher.write_logs(handover.logs.clone()).await;
                }
                match sent {
                    Ok(()) => {
                        tracing::info!(tenant = %stack.tenant, partition, traces = n, "cluster: undecided traces handed back with the partition");
                        stack.pipeline.handed_over(handover).await;
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %stack.tenant, partition, traces = n, error = %e, "cluster: could not hand undecided traces back; deciding them here");
                        if let Err(e) = stack.pipeline.take_back(handover).await {
                            tracing::warn!(error = %e, "cluster: undecided traces wait in the sampling log for a restart");
                        }
                    }
                }
            }
        })
    }

    fn sinks(
        &self,
        tenant: Option<&str>,
    ) -> BoxFuture<'_, Result<strand_cluster::ingester::TenantSinks, SinkError>> {
        let tenant = tenant.unwrap_or(SINGLE_TENANT).to_owned();
        Box::pin(async move {
            let tenants =
                self.tenants.upgrade().ok_or_else(|| SinkError::Unavailable("shutting down".into()))?;
            if tenant != SINGLE_TENANT && !tenants.multitenant() {
                return Err(SinkError::Unavailable(format!(
                    "a message for tenant `{tenant}` reached an ingester without multitenancy (enable it on every role)"
                )));
            }
            match tenants.get(&tenant).await {
                // The pipeline behind the tenants' shared memory bound.
                Ok(stack) => Ok(stack.sinks()),
                Err(TenantError::TooMany(n)) => {
                    Err(SinkError::Overloaded(format!("multitenancy.max_tenants ({n}) tenants are open")))
                }
                Err(TenantError::Open(e)) => {
                    Err(SinkError::Unavailable(format!("opening tenant `{tenant}`: {e:#}")))
                }
            }
        })
    }
}
