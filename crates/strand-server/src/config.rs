//! Configuration: one YAML file, every key overridable by a `STRAND_*` environment
//! variable and by command-line flags (flags win, then the environment, then the file).
//!
//! Every key has a default, so no file is needed. Unknown keys are errors, and all
//! problems (unknown keys, wrong types, invalid values, from any source) are reported
//! together, each with its key path and where it came from.
//!
//! The environment variable of a key is `STRAND_` and its path in capitals with `.`
//! turned into `_`: `otlp.grpc_listen` is `STRAND_OTLP_GRPC_LISTEN`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
pub use strand_core::units::{ByteSize, HumanDuration, MemorySize, machine_memory};
use strand_core::{StoreError, TraceStore};
use strand_store::fs::StdFs;

/// Where listeners bind by default: this machine only (`listen_all` widens it).
pub const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the WAL and blocks.
    pub data_dir: PathBuf,
    /// Address of the query API, UI, health and admin endpoints.
    pub http_listen: SocketAddr,
    /// Listeners configured on a loopback address (every default) listen on all
    /// interfaces instead, same port (`--listen-all`). Beyond loopback the server needs
    /// `auth.tokens`, or `auth: none` written out.
    pub listen_all: bool,
    /// Who may call the server: bearer tokens with scopes and tenants (`auth: none` for
    /// none, on purpose).
    pub auth: crate::auth::AuthConfig,
    /// TLS on every TCP listener.
    pub tls: crate::tls::TlsConfig,
    /// Cross-origin requests from web pages (the OTLP/HTTP receiver and the query API).
    pub cors: CorsConfig,
    /// Tenants (`X-Scope-OrgID`), each with its own store, and their limits.
    pub multitenancy: crate::tenants::MultitenancyConfig,
    /// Log filter (`info`, `debug`, `strand_store=debug,info`, ...); `RUST_LOG` wins.
    pub log_level: String,
    /// Store a few demo traces from the last minutes at start (`strand serve --demo`): a
    /// first look at the UI without any instrumented service.
    pub demo: bool,
    /// Log line format on stderr: `text` (colours only when stderr is a terminal) or
    /// `json` (one object per line, for log collectors).
    pub log_format: LogFormat,
    /// Bounds on the whole process.
    pub limits: LimitsConfig,
    /// OTLP receivers.
    pub otlp: OtlpConfig,
    /// Connections of the TCP listeners.
    pub connections: ConnectionsConfig,
    /// Jaeger receivers (thrift over HTTP, agent UDP).
    pub jaeger: JaegerConfig,
    /// Zipkin v2 receiver.
    pub zipkin: ZipkinConfig,
    /// The embedded store.
    pub storage: StorageConfig,
    /// Query API bounds.
    pub query: QueryConfig,
    /// Tail sampling (no policies: keep everything).
    pub sampling: strand_sampling::SamplingConfig,
    /// Jaeger remote-sampling strategies served to SDKs (head sampling).
    pub remote_sampling: strand_sampling::remote::RemoteSamplingConfig,
    /// Chain-integrity analysis (where traces lose their context).
    pub integrity: strand_integrity::IntegrityConfig,
    /// Past one machine: this process's role and the NATS JetStream the roles meet on
    /// (`docs/cluster.md`). The default role, `all`, is the single binary.
    pub cluster: strand_cluster::ClusterConfig,
}

/// Cross-origin requests (CORS): off unless origins are listed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins (`https://app.example.com`) whose pages may call the OTLP/HTTP receiver
    /// (browser SDKs) and the query API; `*` for any. Empty: none.
    pub allowed_origins: Vec<String>,
}

/// Connections of every TCP listener (OTLP/gRPC and HTTP, Jaeger thrift, Zipkin, remote
/// sampling, query and UI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Open connections one listener keeps; more are closed at once (counted, logged).
    pub max_per_listener: usize,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: HumanDuration,
    /// An HTTP/1 connection waiting longer than this for a request's whole header block
    /// is closed: a client trickling headers (never idle), or a keep-alive connection
    /// with no next request.
    pub header_read_timeout: HumanDuration,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_per_listener: 4096,
            idle_timeout: HumanDuration(std::time::Duration::from_secs(300)),
            header_read_timeout: HumanDuration(std::time::Duration::from_secs(60)),
        }
    }
}

/// Bounds on the whole process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// One memory budget for ingest: request bytes being received (HTTP bodies and gRPC
    /// messages as they arrive, inflated bodies), decoded batches on their way to the
    /// store, and the stores' data not yet in blocks (live and frozen heads). Beyond it
    /// ingest is refused (429 / `RESOURCE_EXHAUSTED`) while block writes catch up. `auto`:
    /// a quarter of the machine's memory (or of the cgroup's limit), between 256 MiB and
    /// 2 GiB.
    pub memory_size: MemorySize,
}

/// `limits.memory_size` is at least this many times `otlp.max_request_size`.
pub const MEMORY_PER_REQUEST: u64 = 8;

/// Bounds on searches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Results per page when a request names no limit.
    pub default_search_limit: usize,
    /// Most results per page; larger requested limits are reduced (the response says so).
    pub max_search_limit: usize,
    /// Range searched when a request names no start (ending now).
    pub default_search_range: HumanDuration,
    /// Longest range searched; longer requested ranges are shortened (the response says so).
    pub max_search_range: HumanDuration,
    /// Most spans of one trace a response holds; a larger trace is cut to its earliest
    /// spans (the response says so).
    pub max_trace_spans: usize,
    /// Serve the web UI at `/` of the query port.
    pub ui_enabled: bool,
    /// Serve the UI's files from this directory instead of the ones built into the binary
    /// (for UI development: edits show on reload without a rebuild).
    pub ui_dir: Option<PathBuf>,
    /// Compress responses of 1 KiB and more with zstd or gzip, as the client accepts.
    pub compression: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let d = strand_query::QueryLimits::default();
        Self {
            default_search_limit: d.default_limit,
            max_search_limit: d.max_limit,
            default_search_range: HumanDuration(d.default_range),
            max_search_range: HumanDuration(d.max_range),
            max_trace_spans: d.max_trace_spans,
            ui_enabled: true,
            ui_dir: None,
            compression: true,
        }
    }
}

impl QueryConfig {
    /// The query API's bounds.
    pub fn to_limits(&self) -> strand_query::QueryLimits {
        strand_query::QueryLimits {
            default_limit: self.default_search_limit,
            max_limit: self.max_search_limit,
            default_range: self.default_search_range.0,
            max_range: self.max_search_range.0,
            max_trace_spans: self.max_trace_spans,
        }
    }
}

/// OTLP receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP/gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address.
    pub http_listen: SocketAddr,
    /// Whether the gRPC receiver runs.
    pub grpc_enabled: bool,
    /// Whether the HTTP receiver runs.
    pub http_enabled: bool,
    /// Largest request accepted, before and after decompression.
    pub max_request_size: ByteSize,
    /// Requests handled at once across both receivers; more get 429 / RESOURCE_EXHAUSTED.
    /// A request takes its slot once its body has arrived.
    pub max_concurrent_requests: usize,
    /// Longest an HTTP request body may take to arrive (all HTTP receivers); slower: 408.
    pub body_read_timeout: HumanDuration,
}

/// Jaeger receivers. They share `otlp.max_request_size` and `otlp.max_concurrent_requests`
/// with the OTLP receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerConfig {
    /// Thrift binary over HTTP (`POST /api/traces`) listen address.
    pub thrift_http_listen: SocketAddr,
    /// Whether the thrift HTTP receiver runs.
    pub thrift_http_enabled: bool,
    /// Agent UDP (compact thrift `emitBatch`) listen address.
    pub agent_listen: SocketAddr,
    /// Agent UDP (binary thrift `emitBatch`) listen address.
    pub agent_binary_listen: SocketAddr,
    /// Whether the agent UDP receivers (both ports) run.
    pub agent_enabled: bool,
    /// With multitenancy, the tenant whose store takes the agent's spans (UDP carries no
    /// header); `single-tenant` by default.
    pub agent_tenant: String,
}

impl Default for JaegerConfig {
    fn default() -> Self {
        Self {
            thrift_http_listen: SocketAddr::from((LOOPBACK, 14268)),
            thrift_http_enabled: true,
            agent_listen: SocketAddr::from((LOOPBACK, 6831)),
            agent_binary_listen: SocketAddr::from((LOOPBACK, 6832)),
            agent_enabled: true,
            agent_tenant: crate::auth::SINGLE_TENANT.to_owned(),
        }
    }
}

/// Zipkin v2 receiver (`POST /api/v2/spans`, JSON and proto3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Whether the receiver runs.
    pub enabled: bool,
}

impl Default for ZipkinConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from((LOOPBACK, 9411)), enabled: true }
    }
}

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Before every acknowledgement (group commit).
    Always,
    /// Every `fsync_interval`; a crash may lose the last interval's acknowledged spans.
    Interval,
}

/// How the server's own log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where spans are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The embedded store in `data_dir`: WAL, head and Parquet blocks.
    #[default]
    Embedded,
    /// Memory only: no spans are written to disk and all are lost at exit (for demos and
    /// tests). Retention and `max_disk_size` (counted as encoded bytes in memory) still
    /// apply. Tail sampling's pending log and remote sampling's state still live in
    /// `data_dir`.
    Memory,
}

/// The store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Backend: `embedded` (default) or `memory`.
    pub backend: Backend,
    /// WAL fsync policy: `always` or `interval`.
    pub fsync: Fsync,
    /// Interval for `fsync: interval`.
    pub fsync_interval: HumanDuration,
    /// Cut the in-memory head into a block at this many spans.
    pub head_max_spans: usize,
    /// ... or at this many log records.
    pub head_max_log_records: usize,
    /// ... or at this much encoded data.
    pub head_max_size: ByteSize,
    /// ... or when its oldest span was received this long ago.
    pub head_max_age: HumanDuration,
    /// Delete data received longer ago than this.
    pub retention: HumanDuration,
    /// Delete the oldest blocks while the data directory exceeds this; `null` for no limit.
    /// The head is cut at a quarter of it, and writes get 503 while the WAL alone is over it.
    pub max_disk_size: Option<ByteSize>,
    /// Memory for received data not yet in blocks (the head and heads waiting to be
    /// written); writes get 429 at it while block writes catch up.
    pub max_unwritten_size: ByteSize,
    /// Blocks under half this many spans are merged up to this many.
    pub compaction_target_spans: u64,
    /// Most bytes of blocks compaction reads per second; 0 for no limit.
    pub compaction_rate: ByteSize,
    /// Small blocks cut within one window are merged, then those of one day (24 windows);
    /// 0s: any two small blocks are merged at once.
    pub compaction_window: HumanDuration,
    /// Writes that may queue for the WAL before clients are told to back off (429).
    pub max_pending_writes: usize,
    /// How often compaction and retention run.
    pub maintenance_interval: HumanDuration,
    /// Memory for block indexes loaded by queries (least recently used out beyond it).
    pub cache_size: ByteSize,
    /// Memory the trace reads and queries in flight may hold together (decoded spans and
    /// search indexes not in the cache, estimated from span counts before reading); a
    /// read or query beyond it is answered 503 with `Retry-After`.
    pub max_read_size: ByteSize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./strand-data"),
            http_listen: SocketAddr::from((LOOPBACK, 16686)),
            listen_all: false,
            auth: crate::auth::AuthConfig::default(),
            tls: crate::tls::TlsConfig::default(),
            cors: CorsConfig::default(),
            multitenancy: crate::tenants::MultitenancyConfig::default(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            demo: false,
            limits: LimitsConfig::default(),
            otlp: OtlpConfig::default(),
            connections: ConnectionsConfig::default(),
            jaeger: JaegerConfig::default(),
            zipkin: ZipkinConfig::default(),
            storage: StorageConfig::default(),
            query: QueryConfig::default(),
            sampling: strand_sampling::SamplingConfig::default(),
            remote_sampling: strand_sampling::remote::RemoteSamplingConfig::default(),
            integrity: strand_integrity::IntegrityConfig::default(),
            cluster: strand_cluster::ClusterConfig::default(),
        }
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from((LOOPBACK, 4317)),
            http_listen: SocketAddr::from((LOOPBACK, 4318)),
            grpc_enabled: true,
            http_enabled: true,
            max_request_size: ByteSize(16 * 1024 * 1024),
            max_concurrent_requests: 64,
            body_read_timeout: HumanDuration(std::time::Duration::from_secs(30)),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        let d = strand_store::StoreConfig::default();
        Self {
            backend: Backend::Embedded,
            fsync: Fsync::Always,
            fsync_interval: HumanDuration(Duration::from_millis(100)),
            head_max_spans: d.head_max_spans,
            head_max_log_records: d.head_max_log_records,
            head_max_size: ByteSize(d.head_max_bytes),
            head_max_age: HumanDuration(d.head_max_age),
            retention: HumanDuration(d.retention),
            max_disk_size: None,
            max_unwritten_size: ByteSize(d.max_unwritten_bytes),
            compaction_target_spans: d.compaction_target_spans,
            compaction_rate: ByteSize(d.compaction_bytes_per_second),
            compaction_window: HumanDuration(d.compaction_window),
            max_pending_writes: d.max_pending_writes,
            maintenance_interval: HumanDuration(d.maintenance_interval),
            cache_size: ByteSize(d.cache_bytes),
            max_read_size: ByteSize(d.max_read_bytes),
        }
    }
}

impl StorageConfig {
    /// The store's settings.
    pub fn to_store_config(&self) -> strand_store::StoreConfig {
        strand_store::StoreConfig {
            fsync: match self.fsync {
                Fsync::Always => strand_store::FsyncPolicy::Always,
                Fsync::Interval => strand_store::FsyncPolicy::Interval(self.fsync_interval.0),
            },
            head_max_spans: self.head_max_spans,
            head_max_log_records: self.head_max_log_records,
            head_max_bytes: self.head_max_size.0,
            head_max_age: self.head_max_age.0,
            retention: self.retention.0,
            max_disk_bytes: self.max_disk_size.map(|b| b.0),
            max_unwritten_bytes: self.max_unwritten_size.0,
            compaction_target_spans: self.compaction_target_spans,
            compaction_bytes_per_second: self.compaction_rate.0,
            compaction_window: self.compaction_window.0,
            max_pending_writes: self.max_pending_writes,
            maintenance_interval: self.maintenance_interval.0,
            cache_bytes: self.cache_size.0,
            max_read_bytes: self.max_read_size.0,
            ..strand_store::StoreConfig::default()
        }
    }

    /// Opens the configured backend (blocking: the embedded store replays its WAL).
    pub fn open_backend(&self, data_dir: &std::path::Path) -> Result<Arc<dyn TraceStore>, StoreError> {
        Ok(match self.backend {
            Backend::Embedded => {
                Arc::new(strand_store::Store::open(Arc::new(StdFs), data_dir, self.to_store_config())?)
            }
            Backend::Memory => {
                Arc::new(strand_store::memory::MemoryStore::new(strand_store::memory::MemoryConfig {
                    retention: self.retention.0,
                    max_bytes: self.max_disk_size.map(|b| b.0),
                    ..Default::default()
                }))
            }
        })
    }
}

impl Config {
    /// The most the stores may hold before it is in blocks: `storage.max_unwritten_size`,
    /// and at most three quarters of `limits.memory_size`, so that a quarter of the
    /// memory budget is always left for requests being received (the heads are cut at
    /// half of it).
    pub fn max_unwritten_bytes(&self) -> u64 {
        self.storage.max_unwritten_size.0.min(self.memory_budget_bytes() / 4 * 3).max(1)
    }

    /// `limits.memory_size` in bytes; `auto` is raised to [`MEMORY_PER_REQUEST`] times
    /// `otlp.max_request_size` when the machine's quarter is smaller (a set size that small
    /// is a configuration error).
    pub fn memory_budget_bytes(&self) -> u64 {
        let bytes = self.limits.memory_size.bytes();
        match self.limits.memory_size {
            MemorySize::Auto => bytes.max(self.otlp.max_request_size.0.saturating_mul(MEMORY_PER_REQUEST)),
            MemorySize::Bytes(_) => bytes,
        }
    }

    /// The enabled listeners: (key, address, whether it is UDP).
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr, bool)> {
        let mut out = vec![("http_listen", self.http_listen, false)];
        if self.otlp.grpc_enabled {
            out.push(("otlp.grpc_listen", self.otlp.grpc_listen, false));
        }
        if self.otlp.http_enabled {
            out.push(("otlp.http_listen", self.otlp.http_listen, false));
        }
        if self.jaeger.thrift_http_enabled {
            out.push(("jaeger.thrift_http_listen", self.jaeger.thrift_http_listen, false));
        }
        if self.jaeger.agent_enabled {
            out.push(("jaeger.agent_listen", self.jaeger.agent_listen, true));
            out.push(("jaeger.agent_binary_listen", self.jaeger.agent_binary_listen, true));
        }
        if self.zipkin.enabled {
            out.push(("zipkin.listen", self.zipkin.listen, false));
        }
        if self.remote_sampling.enabled {
            out.push(("remote_sampling.listen", self.remote_sampling.listen, false));
        }
        out
    }

    /// Ingesters and queriers take no spans from clients (receivers do): their ingest and
    /// remote-sampling listeners are off, whatever else the shared file says.
    fn apply_role(&mut self) {
        use strand_cluster::Role;
        if matches!(self.cluster.role, Role::Ingester | Role::Querier) {
            // Demo traces go through a receiver like any others.
            self.demo = false;
            self.otlp.grpc_enabled = false;
            self.otlp.http_enabled = false;
            self.jaeger.thrift_http_enabled = false;
            self.jaeger.agent_enabled = false;
            self.zipkin.enabled = false;
            self.remote_sampling.enabled = false;
        }
    }

    /// `listen_all`: every listener on a loopback address moves to all interfaces.
    fn apply_listen_all(&mut self) {
        if !self.listen_all {
            return;
        }
        for addr in [
            &mut self.http_listen,
            &mut self.otlp.grpc_listen,
            &mut self.otlp.http_listen,
            &mut self.jaeger.thrift_http_listen,
            &mut self.jaeger.agent_listen,
            &mut self.jaeger.agent_binary_listen,
            &mut self.zipkin.listen,
            &mut self.remote_sampling.listen,
        ] {
            if addr.ip().is_loopback() {
                let any: std::net::IpAddr = if addr.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                addr.set_ip(any);
            }
        }
    }

    /// Listeners beyond loopback need tokens, or `auth: none` written out; the agent's UDP
    /// ports, which carry no token, stay on loopback when tokens are required.
    fn check_exposure(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let exposed: Vec<String> = self
            .listeners()
            .into_iter()
            .filter(|(_, addr, _)| !addr.ip().is_loopback())
            .map(|(key, addr, _)| format!("`{key}` {addr}"))
            .collect();
        if !exposed.is_empty() && !self.auth.required() && self.auth.mode != crate::auth::AuthMode::None {
            errs.push(format!(
                "listening beyond loopback ({}) without auth tokens: add `auth.tokens` (`strand token new` makes one), \
                 or write `auth: none` to let every client that reaches these ports write and read",
                exposed.join(", ")
            ));
        }
        if self.auth.required() {
            for (key, addr, udp) in self.listeners() {
                if udp && !addr.ip().is_loopback() {
                    errs.push(format!(
                        "`{key}` {addr}: the Jaeger agent's UDP ports carry no token, so with `auth.tokens` they \
                         listen on loopback only (or set `jaeger.agent_enabled: false`)"
                    ));
                }
            }
        }
        errs
    }

    fn validate(&self) -> Vec<String> {
        let mut errs = self.sampling.validate();
        errs.extend(self.auth.validate());
        errs.extend(self.tls.validate());
        errs.extend(self.multitenancy.validate());
        if let Err(e) = crate::auth::check_tenant_id(&self.jaeger.agent_tenant) {
            errs.push(format!("`jaeger.agent_tenant`: {e}"));
        } else if !self.multitenancy.enabled && self.jaeger.agent_tenant != crate::auth::SINGLE_TENANT {
            errs.push("`jaeger.agent_tenant`: tenants need `multitenancy.enabled: true`".into());
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let scoped =
                t.scopes.iter().any(|s| matches!(s, crate::auth::Scope::Write | crate::auth::Scope::Read));
            if !self.multitenancy.enabled && !t.tenants.is_empty() {
                errs.push(format!(
                    "`auth.tokens[{i}]`.tenants: tenants need `multitenancy.enabled: true` (without it the token would read and write everything)"
                ));
            }
            if self.multitenancy.enabled && scoped && t.tenants.is_empty() {
                errs.push(format!(
                    "`auth.tokens[{i}]`.tenants: with multitenancy a write or read token lists its tenants (or `*` for all)"
                ));
            }
        }
        if self.cors.allowed_origins.iter().any(|o| o == "*") && !self.auth.required() {
            errs.push(
                "`cors.allowed_origins`: `*` without auth tokens would let every web page read and write; list origins, or add tokens".into(),
            );
        }
        errs.extend(self.check_exposure());
        for origin in &self.cors.allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').contains(['?', '#', ' '])
                    && origin.split("://").nth(1).is_some_and(|h| !h.is_empty() && !h.contains('/')));
            if !ok {
                errs.push(format!(
                    "`cors.allowed_origins`: `{origin}` is not an origin (scheme://host[:port], or `*`)"
                ));
            }
        }
        errs.extend(self.remote_sampling.validate());
        errs.extend(self.integrity.validate());
        errs.extend(self.cluster.validate());
        if self.cluster.role == strand_cluster::Role::Ingester
            && (self.storage.fsync != Fsync::Always || self.storage.backend != Backend::Embedded)
        {
            errs.push(
                "an ingester acknowledges JetStream messages once they are durable: it needs `storage.backend: embedded` and `storage.fsync: always`".into(),
            );
        }
        let mut positive = |path: &str, ok: bool| {
            if !ok {
                errs.push(format!("`{path}`: must be greater than zero"));
            }
        };
        positive("otlp.max_request_size", self.otlp.max_request_size.0 > 0);
        positive("otlp.max_concurrent_requests", self.otlp.max_concurrent_requests > 0);
        positive("storage.fsync_interval", !self.storage.fsync_interval.0.is_zero());
        positive("connections.header_read_timeout", !self.connections.header_read_timeout.0.is_zero());
        positive("storage.head_max_spans", self.storage.head_max_spans > 0);
        positive("storage.head_max_log_records", self.storage.head_max_log_records > 0);
        positive("storage.head_max_size", self.storage.head_max_size.0 > 0);
        positive("storage.max_unwritten_size", self.storage.max_unwritten_size.0 > 0);
        positive("storage.head_max_age", !self.storage.head_max_age.0.is_zero());
        positive("storage.retention", !self.storage.retention.0.is_zero());
        positive("storage.compaction_target_spans", self.storage.compaction_target_spans > 0);
        positive("storage.max_pending_writes", self.storage.max_pending_writes > 0);
        positive("storage.maintenance_interval", !self.storage.maintenance_interval.0.is_zero());
        positive("query.default_search_limit", self.query.default_search_limit > 0);
        positive("query.max_search_limit", self.query.max_search_limit > 0);
        positive("query.default_search_range", !self.query.default_search_range.0.is_zero());
        positive("query.max_search_range", !self.query.max_search_range.0.is_zero());
        positive("query.max_trace_spans", self.query.max_trace_spans > 0);
        if self.query.default_search_limit > self.query.max_search_limit {
            errs.push("`query.default_search_limit`: must not exceed `query.max_search_limit`".into());
        }
        let least = self.otlp.max_request_size.0.saturating_mul(MEMORY_PER_REQUEST);
        if let MemorySize::Bytes(b) = self.limits.memory_size
            && b.0 < least
        {
            errs.push(format!(
                "`limits.memory_size`: {b} must be at least {MEMORY_PER_REQUEST} × `otlp.max_request_size` ({}): a request holds its body, its inflated copy and its decoded spans (about 3 times its size), and a quarter of the budget is kept for requests",
                ByteSize(least)
            ));
        }
        if self.storage.max_disk_size.is_some_and(|b| b.0 == 0) {
            errs.push("`storage.max_disk_size`: must be greater than zero, or null for no limit".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            errs.push("`data_dir`: must not be empty".into());
        }
        errs
    }
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The YAML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "in {}", p.display()),
            Source::Env(v) => write!(f, "from environment variable {v}"),
            Source::Flag(fl) => write!(f, "from flag {fl}"),
        }
    }
}

/// Every problem found while loading the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The environment variable name for a key path.
pub fn env_name(path: &str) -> String {
    format!("STRAND_{}", path.replace('.', "_").to_ascii_uppercase())
}

fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(v, &p, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn set(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, k) in parts.iter().enumerate() {
        let Value::Object(m) = cur else { return };
        if i == parts.len() - 1 {
            m.insert((*k).to_string(), value);
            return;
        }
        cur = m.entry((*k).to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Checks `user` against the schema, collecting unknown keys and misplaced mappings;
/// returns the known leaves the user set.
fn walk(
    schema: &Value,
    user: &Value,
    prefix: &str,
    src: &Source,
    errs: &mut Vec<String>,
    set_leaves: &mut Vec<(String, Value, Source)>,
) {
    match (schema, user) {
        (Value::Object(sm), Value::Object(um)) => {
            for (k, uv) in um {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match sm.get(k) {
                    Some(sv) => walk(sv, uv, &p, src, errs, set_leaves),
                    None => {
                        let known: Vec<&str> = sm.keys().map(String::as_str).collect();
                        errs.push(format!(
                            "`{p}` {src}: unknown key (known keys here: {})",
                            known.join(", ")
                        ));
                    }
                }
            }
        }
        (Value::Object(_), _) => errs.push(format!("`{prefix}` {src}: expected a mapping of keys")),
        (_, uv) => set_leaves.push((prefix.to_string(), uv.clone(), src.clone())),
    }
}

/// Turns a text value (environment, flag) into the JSON type the key's default has.
fn scalar(schema_leaf: &Value, raw: &str) -> Value {
    match schema_leaf {
        Value::Bool(_) => match raw.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(raw.into()),
        },
        Value::Number(_) | Value::Null => {
            if let Ok(n) = raw.trim().parse::<u64>() {
                Value::from(n)
            } else if let Some(f) = raw.trim().parse::<f64>().ok().filter(|f| f.is_finite()) {
                Value::from(f)
            } else if raw.trim() == "null" {
                Value::Null
            } else {
                Value::String(raw.into())
            }
        }
        _ => Value::String(raw.into()),
    }
}

/// Inputs to [`load`].
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The YAML file, if any.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; only `STRAND_*` are looked at).
    pub env: Vec<(String, String)>,
    /// Flag settings: (flag as typed, key path, value).
    pub flags: Vec<(String, String, String)>,
    /// `--sampling-config FILE`: a YAML file holding the `sampling:` section's keys; it
    /// replaces that section.
    pub sampling_file: Option<PathBuf>,
    /// `--sampling SHORTHAND` (`errors-plus=5%`, `5%`, `all`): replaces the policies.
    pub sampling_shorthand: Option<String>,
}

/// Environment variables starting with `STRAND_` that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &crate::search_cmd::CLIENT_ENV;

/// Loads the configuration from defaults, file, environment and flags.
pub fn load(sources: &Sources) -> Result<Config, ConfigErrors> {
    let schema = serde_json::to_value(Config::default()).expect("the default config serializes");
    let mut errs = Vec::new();
    let mut set_leaves = Vec::new();
    if let Some(path) = &sources.file {
        match read_yaml(path) {
            Ok(user) => walk(
                &schema,
                &auth_shorthand(user),
                "",
                &Source::File(path.clone()),
                &mut errs,
                &mut set_leaves,
            ),
            Err(e) => errs.push(e),
        }
    }
    let mut schema_leaves = Vec::new();
    leaves(&schema, "", &mut schema_leaves);
    for (name, raw) in &sources.env {
        if !name.starts_with("STRAND_") || NON_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        match schema_leaves.iter().find(|(p, _)| env_name(p) == *name) {
            Some((path, leaf)) => {
                set_leaves.push((path.clone(), scalar(leaf, raw), Source::Env(name.clone())))
            }
            None => errs.push(format!("environment variable {name}: not a configuration key")),
        }
    }
    for (flag, path, raw) in &sources.flags {
        match lookup(&schema, path) {
            Some(leaf @ (Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Null)) => {
                set_leaves.push((path.clone(), scalar(leaf, raw), Source::Flag(flag.clone())))
            }
            _ => errs.push(format!("`{path}` from flag {flag}: unknown key")),
        }
    }
    // Check each setting on its own against the defaults, so every bad value is reported.
    let mut merged = schema.clone();
    for (path, value, src) in &set_leaves {
        let mut probe = schema.clone();
        set(&mut probe, path, value.clone());
        match serde_json::from_value::<Config>(probe) {
            Ok(_) => set(&mut merged, path, value.clone()),
            Err(e) => errs.push(format!("`{path}` {src}: {e}")),
        }
    }
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    let mut cfg: Config = serde_json::from_value(merged).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
    cfg.apply_role();
    cfg.apply_listen_all();
    if let Some(path) = &sources.sampling_file {
        let parsed = read_yaml(path).and_then(|v| {
            serde_json::from_value::<strand_sampling::SamplingConfig>(sampling_section(v))
                .map_err(|e| format!("--sampling-config {}: {e}", path.display()))
        });
        match parsed {
            Ok(s) => cfg.sampling = s,
            Err(e) => return Err(ConfigErrors(vec![e])),
        }
    }
    if let Some(short) = &sources.sampling_shorthand {
        match strand_sampling::SamplingConfig::shorthand(short) {
            Ok(policies) => cfg.sampling.policies = policies,
            Err(e) => return Err(ConfigErrors(vec![format!("--sampling: {e}")])),
        }
    }
    let problems = cfg.validate();
    if problems.is_empty() { Ok(cfg) } else { Err(ConfigErrors(problems)) }
}

/// `auth: none` is short for `auth: { mode: none }`.
fn auth_shorthand(mut user: Value) -> Value {
    if let Some(auth) = user.get_mut("auth")
        && auth.as_str() == Some("none")
    {
        *auth = serde_json::json!({ "mode": "none" });
    }
    user
}

/// Collector `tail_sampling` keys with no meaning here: the buffer is bounded in bytes
/// (`max_buffer_bytes`), not in traces.
const COLLECTOR_ONLY_SAMPLING_KEYS: [&str; 2] = ["num_traces", "expected_new_traces_per_sec"];

/// The `sampling:` section from a `--sampling-config` file, which may hold the section's
/// keys, a bare list of policies, a collector `tail_sampling:` block, or a collector
/// configuration with `processors: { tail_sampling: … }` (also `tail_sampling/name`).
fn sampling_section(v: Value) -> Value {
    let mut v = match v {
        Value::Array(policies) => return serde_json::json!({ "policies": policies }),
        other => other,
    };
    if let Some(processors) = v.get("processors").and_then(Value::as_object)
        && let Some((_, ts)) =
            processors.iter().find(|(k, _)| *k == "tail_sampling" || k.starts_with("tail_sampling/"))
    {
        v = ts.clone();
    } else if let Some(ts) = v.get("tail_sampling") {
        v = ts.clone();
    }
    if let Value::Object(map) = &mut v {
        for key in COLLECTOR_ONLY_SAMPLING_KEYS {
            map.remove(key);
        }
    }
    v
}

fn read_yaml(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let v: Value = serde_saphyr::from_str(&text)
        .map_err(|e| format!("config file {} is not valid YAML: {e}", path.display()))?;
    Ok(if v.is_null() { Value::Object(Map::new()) } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::NamedTempFile, PathBuf) {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), text).expect("write");
        let p = f.path().to_path_buf();
        (f, p)
    }

    #[test]
    fn defaults_need_no_file() {
        let cfg = load(&Sources::default()).expect("defaults are valid");
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.data_dir, PathBuf::from("./strand-data"));
        assert_eq!(cfg.otlp.grpc_listen.port(), 4317);
        assert_eq!(cfg.otlp.http_listen.port(), 4318);
        assert_eq!(cfg.http_listen.port(), 16686);
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        let (_f, path) = file(
            "data_dir: /from/file\notlp:\n  max_request_size: 1MiB\nstorage:\n  retention: 2d\n  fsync: interval\n",
        );
        let cfg = load(&Sources {
            file: Some(path),
            env: vec![
                ("STRAND_DATA_DIR".into(), "/from/env".into()),
                ("STRAND_STORAGE_HEAD_MAX_SPANS".into(), "10".into()),
            ],
            flags: vec![("--data-dir".into(), "data_dir".into(), "/from/flag".into())],
            ..Sources::default()
        })
        .expect("valid");
        assert_eq!(cfg.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(cfg.otlp.max_request_size, ByteSize(1 << 20));
        assert_eq!(cfg.storage.retention, HumanDuration(Duration::from_secs(2 * 86400)));
        assert_eq!(cfg.storage.fsync, Fsync::Interval);
        assert_eq!(cfg.storage.head_max_spans, 10);
    }

    #[test]
    fn remote_sampling_from_file_env_and_flags() {
        let (_f, path) =
            file("remote_sampling:\n  adaptive:\n    enabled: true\n    calculation_interval: 30s\n");
        let cfg = load(&Sources {
            file: Some(path),
            env: vec![("STRAND_REMOTE_SAMPLING_STRATEGIES_FILE".into(), "/etc/strategies.json".into())],
            flags: vec![(
                "--set remote_sampling.adaptive.target_traces_per_second".into(),
                "remote_sampling.adaptive.target_traces_per_second".into(),
                "0.5".into(),
            )],
            ..Sources::default()
        })
        .expect("valid");
        let r = &cfg.remote_sampling;
        assert_eq!(r.listen.port(), 5778);
        assert!(r.adaptive.enabled);
        assert_eq!(r.adaptive.calculation_interval, HumanDuration(Duration::from_secs(30)));
        assert_eq!(r.adaptive.target_traces_per_second, 0.5);
        assert_eq!(r.strategies_file, Some(PathBuf::from("/etc/strategies.json")));
        let errs = load(&Sources {
            flags: vec![(
                "--set x".into(),
                "remote_sampling.default_sampling_probability".into(),
                "1.5".into(),
            )],
            ..Sources::default()
        })
        .expect_err("out of range");
        assert!(errs.0[0].contains("remote_sampling.default_sampling_probability"), "{errs:?}");
    }

    #[test]
    fn collector_tail_sampling_files_load_as_they_are() {
        // A whole collector configuration, its processor block picked out.
        let example =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/collector-tail-sampling.yaml");
        let cfg = load(&Sources { sampling_file: Some(example), ..Sources::default() })
            .expect("the example is valid");
        let names: Vec<&str> = cfg.sampling.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["errors", "slow-checkout", "no-health-checks", "some-of-the-rest"]);
        assert_eq!(cfg.sampling.decision_wait, HumanDuration(Duration::from_secs(10)));
        // A `tail_sampling:` block on its own, a named processor, and a bare policy list.
        let policy = "{ name: all, type: always_sample }";
        for text in [
            format!("tail_sampling:\n  num_traces: 10\n  policies: [{policy}]\n"),
            format!("processors:\n  tail_sampling/errors:\n    policies: [{policy}]\n"),
            format!("- {policy}\n"),
        ] {
            let (_f, path) = file(&text);
            let cfg = load(&Sources { sampling_file: Some(path), ..Sources::default() })
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cfg.sampling.policies[0].name, "all", "{text}");
        }
        // A key neither Strand nor the ignored collector ones: refused, named.
        let (_g, path) = file("tail_sampling:\n  sample_on_first_match: true\n  policies: []\n");
        let err = load(&Sources { sampling_file: Some(path), ..Sources::default() })
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("sample_on_first_match"), "{err}");
    }

    #[test]
    fn sampling_comes_from_the_section_a_file_or_the_shorthand() {
        let section = "sampling:\n  decision_wait: 10s\n  policies:\n    - { name: slow, type: latency, latency: { threshold_ms: 500 } }\n";
        let (_f, path) = file(section);
        let cfg = load(&Sources { file: Some(path.clone()), ..Sources::default() }).expect("valid");
        assert_eq!(cfg.sampling.policies[0].name, "slow");
        assert_eq!(cfg.sampling.decision_wait, HumanDuration(Duration::from_secs(10)));

        let (_g, sampling) = file("policies:\n  - { name: all, type: always_sample }\n");
        let cfg =
            load(&Sources { file: Some(path.clone()), sampling_file: Some(sampling), ..Sources::default() })
                .expect("valid");
        assert_eq!(cfg.sampling.policies[0].name, "all");
        assert_eq!(
            cfg.sampling.decision_wait,
            HumanDuration(Duration::from_secs(30)),
            "the file replaces the section"
        );

        let cfg = load(&Sources { sampling_shorthand: Some("errors-plus=5%".into()), ..Sources::default() })
            .expect("valid");
        assert_eq!(cfg.sampling.policies.len(), 2);

        let example =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/sampling-errors-plus-5pct.yaml");
        let cfg = load(&Sources { sampling_file: Some(example), ..Sources::default() })
            .expect("the example is valid");
        assert_eq!(
            cfg.sampling.policies,
            strand_sampling::SamplingConfig::shorthand("errors-plus=5%")
                .expect("valid")
                .into_iter()
                .zip(["errors", "five-percent"])
                .map(|(mut p, n)| {
                    p.name = n.into();
                    p
                })
                .collect::<Vec<_>>()
        );

        let (_h, bad) = file("sampling:\n  policies:\n    - { name: x, type: latency }\n");
        let err = load(&Sources { file: Some(bad), ..Sources::default() }).expect_err("invalid").to_string();
        assert!(err.contains("policy `x` (latency): needs a `latency:` block"), "{err}");
        let err = load(&Sources { sampling_shorthand: Some("half".into()), ..Sources::default() })
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("--sampling: unknown sampling shorthand `half`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let (_f, path) = file(
            "otlp:\n  grpc_listn: 1.2.3.4:1\n  max_request_size: lots\nstorage:\n  retention: 7\n  fsync: sometimes\nbogus: 1\n",
        );
        let err = load(&Sources {
            file: Some(path.clone()),
            env: vec![
                ("STRAND_NOPE".into(), "x".into()),
                ("STRAND_HTTP_LISTEN".into(), "not-an-addr".into()),
            ],
            flags: vec![],
            ..Sources::default()
        })
        .expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "`otlp.grpc_listn`",
            "unknown key",
            "`otlp.max_request_size`",
            "`storage.retention`",
            "`storage.fsync`",
            "`bogus`",
            "STRAND_NOPE",
            "`http_listen` from environment variable STRAND_HTTP_LISTEN",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        assert_eq!(err.0.len(), 7, "{text}");
    }

    #[test]
    fn env_names_are_unique() {
        let schema = serde_json::to_value(Config::default()).expect("serializes");
        let mut l = Vec::new();
        leaves(&schema, "", &mut l);
        let mut names: Vec<String> = l.iter().map(|(p, _)| env_name(p)).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(names.contains(&"STRAND_OTLP_GRPC_LISTEN".to_string()));
    }

    #[test]
    fn readme_configuration_example_is_valid_and_shows_the_defaults() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
        let section = readme.split("## Configuration").nth(1).expect("configuration section");
        let yaml = section.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("yaml block");
        let (_f, path) = file(yaml);
        let cfg = load(&Sources { file: Some(path), ..Sources::default() }).expect("README example loads");
        assert_eq!(cfg, Config::default(), "the README example must show the defaults");
    }

    #[test]
    fn listeners_stay_on_loopback_unless_auth_is_decided() {
        let d = Config::default();
        assert!(d.listeners().iter().all(|(_, a, _)| a.ip().is_loopback()), "{:?}", d.listeners());
        // --listen-all without tokens or `auth: none`: refused, naming the listeners.
        let flags = |extra: &[(&str, &str)]| Sources {
            flags: extra
                .iter()
                .map(|(k, v)| (format!("--set {k}"), (*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Sources::default()
        };
        let err = load(&flags(&[("listen_all", "true")])).expect_err("refused").to_string();
        assert!(err.contains("`otlp.grpc_listen` 0.0.0.0:4317"), "{err}");
        assert!(err.contains("auth: none"), "{err}");
        // `auth: none` written out (the file's shorthand) lets every listener out.
        let (_f, path) = file("listen_all: true\nauth: none\n");
        let cfg = load(&Sources { file: Some(path), ..Sources::default() }).expect("loads");
        assert_eq!(cfg.auth.mode, crate::auth::AuthMode::None);
        assert!(cfg.listeners().iter().all(|(_, a, _)| a.ip().is_unspecified()), "{:?}", cfg.listeners());
        assert_eq!(cfg.http_listen.port(), 16686);
        // An explicit address elsewhere stays as written.
        let cfg =
            load(&flags(&[("listen_all", "true"), ("auth.mode", "none"), ("http_listen", "10.1.2.3:80")]))
                .expect("loads");
        assert_eq!(cfg.http_listen.to_string(), "10.1.2.3:80");
        // With tokens, the agent's UDP ports (no token possible) must stay on loopback.
        let (_f, path) = file(&format!(
            "listen_all: true\nauth:\n  tokens:\n    - {{ name: a, sha256: {}, scopes: [write] }}\n",
            "ab".repeat(32)
        ));
        let err =
            load(&Sources { file: Some(path.clone()), ..Sources::default() }).expect_err("udp").to_string();
        assert!(err.contains("`jaeger.agent_listen` 0.0.0.0:6831") && err.contains("UDP"), "{err}");
        let ok = Sources {
            file: Some(path),
            flags: vec![("--set".into(), "jaeger.agent_enabled".into(), "false".into())],
            ..Sources::default()
        };
        assert!(load(&ok).expect("loads").auth.required());
    }

    #[test]
    fn auth_and_tls_mistakes_are_reported_by_key() {
        let (_f, path) = file(
            "auth:\n  mode: none\n  tokens:\n    - { name: a, sha256: nothex, scopes: [] , tenants: [\"../x\"] }\n    - { name: a, sha256: nothex, scopes: [read] }\ntls:\n  cert_file: c.pem\ncors:\n  allowed_origins: [\"example.com\"]\n",
        );
        let err = load(&Sources { file: Some(path), ..Sources::default() }).expect_err("invalid").to_string();
        for needle in [
            "`auth.mode` is `none` but `auth.tokens` lists tokens",
            "`auth.tokens[0]`.sha256: must be 64 hex digits",
            "`auth.tokens[0]`.scopes: must name at least one",
            "`auth.tokens[0]`.tenants: tenant id `../x`",
            "`auth.tokens[1]`.name: `a` names two tokens",
            "`tls.key_file`: required with `tls.cert_file`",
            "`cors.allowed_origins`: `example.com` is not an origin",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        let (_f, path) = file("auth:\n  mode: tokens\n");
        let err =
            load(&Sources { file: Some(path), ..Sources::default() }).expect_err("no tokens").to_string();
        assert!(err.contains("`auth.mode` is `tokens` but `auth.tokens` lists none"), "{err}");
    }

    #[test]
    fn sizes_and_durations_parse_and_print() {
        assert_eq!("16MiB".parse::<ByteSize>(), Ok(ByteSize(16 << 20)));
        assert_eq!(" 16 MiB ".parse::<ByteSize>(), Ok(ByteSize(16 << 20)));
        assert_eq!("5 s".parse::<HumanDuration>(), Ok(HumanDuration(Duration::from_secs(5))));
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
        assert_eq!("7d".parse::<HumanDuration>(), Ok(HumanDuration(Duration::from_secs(604_800))));
        assert_eq!(HumanDuration(Duration::from_millis(1500)).to_string(), "1500ms");
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert!("10".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn the_memory_budget_is_sized_from_the_machine_or_set() {
        let gib = 1u64 << 30;
        // auto: a quarter of the machine, between 256 MiB and 2 GiB; the least when unknown.
        assert_eq!(MemorySize::Auto.bytes_of(Some(24 * gib)), 2 * gib);
        assert_eq!(MemorySize::Auto.bytes_of(Some(4 * gib)), gib);
        assert_eq!(MemorySize::Auto.bytes_of(Some(512 << 20)), 256 << 20);
        assert_eq!(MemorySize::Auto.bytes_of(None), 256 << 20);
        assert!(machine_memory().is_some_and(|m| m > 0), "this machine's memory is known");
        let set = MemorySize::Bytes(ByteSize(300 << 20));
        assert_eq!(set.bytes_of(Some(24 * gib)), 300 << 20);
        // Written and read back as config writes it.
        assert_eq!("auto".parse::<MemorySize>(), Ok(MemorySize::Auto));
        assert_eq!("300MiB".parse::<MemorySize>(), Ok(set));
        assert_eq!(set.to_string(), "300MiB");
        let err = "lots".parse::<MemorySize>().expect_err("no size");
        assert!(err.contains("`auto`"), "{err}");
        // The stores keep a quarter of it for requests being received.
        let mut cfg = Config::default();
        cfg.limits.memory_size = MemorySize::Bytes(ByteSize(400 << 20));
        assert_eq!(cfg.max_unwritten_bytes(), 300 << 20);
        cfg.limits.memory_size = MemorySize::Bytes(ByteSize(8 * gib));
        assert_eq!(
            cfg.max_unwritten_bytes(),
            cfg.storage.max_unwritten_size.0,
            "storage.max_unwritten_size is the smaller"
        );
        // auto makes room for the largest requests.
        cfg.limits.memory_size = MemorySize::Auto;
        cfg.otlp.max_request_size = ByteSize(gib);
        assert_eq!(cfg.memory_budget_bytes(), 8 * gib);
        // Too small for one request in its quarter: refused, by key.
        let (_f, path) = file("limits:\n  memory_size: 64MiB\n");
        let err = load(&Sources { file: Some(path), ..Sources::default() }).expect_err("too small");
        assert!(
            err.to_string().contains(
                "`limits.memory_size`: 64MiB must be at least 8 × `otlp.max_request_size` (128MiB)"
            ),
            "{err}"
        );
        let (_f, path) = file("limits:\n  memory_size: 128MiB\n");
        let cfg = load(&Sources { file: Some(path), ..Sources::default() }).expect("valid");
        assert_eq!(cfg.limits.memory_size, MemorySize::Bytes(ByteSize(128 << 20)));
    }
}
