//! A cluster role's parts in this process (`cluster.role`; see `strand_cluster` and
//! docs/cluster.md): the NATS connection, and what each tenant's stack uses instead of the
//! embedded store on a receiver (a publisher) or a querier (the ingesters, merged).

use std::sync::{Arc, OnceLock, Weak};

use anyhow::Context as _;
use strand_cluster::bus::Bus;
use strand_cluster::ingester::{Ingester, Sinks};
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
}

impl Node {
    /// Connects to NATS for a cluster role; `None` for the single binary.
    pub async fn open(cfg: &ClusterConfig) -> anyhow::Result<Option<Arc<Self>>> {
        if cfg.role == Role::All {
            return Ok(None);
        }
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
        })))
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
            Role::Querier => Some(Arc::new(RemoteStore::new(
                self.members.clone().expect("a querier lists members"),
                (tenant != SINGLE_TENANT).then(|| tenant.to_owned()),
            ))),
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
    /// partitions until `stop`; the returned task ends once the leases are given back.
    pub fn start_ingester(
        &self,
        cfg: &ClusterConfig,
        url: String,
        tenants: &Arc<Tenants>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let id = if cfg.ingester_id.is_empty() { host_name()? } else { cfg.ingester_id.clone() };
        tracing::info!(ingester = %id, url = %url, "cluster: ingester registering");
        let sinks = Arc::new(TenantSinks(Arc::downgrade(tenants)));
        let ingester = Ingester::new(self.bus.clone(), id, url, sinks);
        let _ = self.ingester.set(ingester.clone());
        Ok(tokio::spawn(ingester.run(stop)))
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
struct TenantSinks(Weak<Tenants>);

impl Sinks for TenantSinks {
    fn check_tenant(&self, tenant: &str) -> Result<(), String> {
        crate::auth::check_tenant_id(tenant)
    }

    fn observe(&self, tenant: Option<&str>, batch: strand_core::SpanBatch) -> BoxFuture<'_, ()> {
        let tenant = tenant.unwrap_or(SINGLE_TENANT).to_owned();
        Box::pin(async move {
            let Some(tenants) = self.0.upgrade() else { return };
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

    fn sinks(
        &self,
        tenant: Option<&str>,
    ) -> BoxFuture<'_, Result<strand_cluster::ingester::TenantSinks, SinkError>> {
        let tenant = tenant.unwrap_or(SINGLE_TENANT).to_owned();
        Box::pin(async move {
            let tenants = self.0.upgrade().ok_or_else(|| SinkError::Unavailable("shutting down".into()))?;
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
