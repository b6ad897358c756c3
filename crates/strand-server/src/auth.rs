//! Who may call the server: bearer tokens with scopes and tenants, checked on every TCP
//! listener before a request reaches a receiver or the query API.
//!
//! A token is a random 32-byte secret (`strand token new`); the configuration holds only
//! its SHA-256. A request names its token in `Authorization: Bearer <token>` (gRPC: the
//! `authorization` metadata, which OTel SDKs send from `OTEL_EXPORTER_OTLP_HEADERS`), and
//! its tenant in `X-Scope-OrgID` when multi-tenancy is on.
//!
//! What each path needs ([`Need`]): the ingest listeners `write`; the query API and
//! `/api/v1/status` `read`; `/api/v1/admin/*` `admin`; `/metrics` `metrics` or `admin`;
//! `/healthz`, `/readyz`, the UI's own files (which hold no data: the page asks for a
//! token) and the remote-sampling strategies (which SDK samplers fetch without headers)
//! are open. Without tokens, admin requests are taken from loopback only, and never in a
//! form a web page of another origin could send without a CORS preflight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The tenant of every request when multi-tenancy is off (Tempo's name for it).
pub const SINGLE_TENANT: &str = "single-tenant";

/// The header (and gRPC metadata key) naming the tenant.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Send spans and log records (every ingest listener).
    Write,
    /// The query API and the UI's data.
    Read,
    /// `/api/v1/admin/*` (flush) and `/metrics`.
    Admin,
    /// `/metrics` only (for a Prometheus scraper).
    Metrics,
}

impl Scope {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }
}

/// One token in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (named in `/metrics` and in logs; never the token itself).
    pub name: String,
    /// Hex SHA-256 of the token (`strand token new` prints both).
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Tenants it may write or read when multi-tenancy is on; `*` for all.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// Whether requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Tokens when `auth.tokens` lists any; without them the server listens on loopback
    /// only (a listener beyond loopback is refused at start).
    #[default]
    Auto,
    /// No tokens, on purpose: every client that reaches a port may write and read.
    None,
    /// Every request needs a token from `auth.tokens`.
    Tokens,
}

/// The `auth:` section. `auth: none` in the YAML file is short for `auth: { mode: none }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `auto`, `none` or `tokens`.
    pub mode: AuthMode,
    /// The bearer tokens (their hashes) the server accepts.
    pub tokens: Vec<TokenConfig>,
    /// Host names (no port) a loopback client may address without tokens, besides
    /// `localhost` and loopback addresses: a reverse proxy's public name, say.
    pub allowed_hosts: Vec<String>,
}

impl AuthConfig {
    /// Whether requests need a token.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Problems with the section, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        match self.mode {
            AuthMode::Tokens if self.tokens.is_empty() => errs.push(
                "`auth.mode` is `tokens` but `auth.tokens` lists none (make one with `strand token new`)"
                    .into(),
            ),
            AuthMode::None if !self.tokens.is_empty() => errs.push(
                "`auth.mode` is `none` but `auth.tokens` lists tokens: remove them or the `none`".into(),
            ),
            _ => {}
        }
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if !hashes.insert(t.sha256.trim().to_ascii_lowercase()) {
                errs.push(format!("`auth.tokens[{i}]`.sha256: the same token as an earlier entry"));
            }
            let at = format!("`auth.tokens[{i}]`");
            if t.name.trim().is_empty() {
                errs.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(t.name.as_str()) {
                errs.push(format!("{at}.name: `{}` names two tokens", t.name));
            }
            if parse_hash(&t.sha256).is_none() {
                errs.push(format!(
                    "{at}.sha256: must be 64 hex digits, the SHA-256 of the token (`strand token new` prints it)"
                ));
            }
            if t.scopes.is_empty() {
                errs.push(format!("{at}.scopes: must name at least one of write, read, admin, metrics"));
            }
            for tenant in &t.tenants {
                if tenant != "*"
                    && let Err(e) = check_tenant_id(tenant)
                {
                    errs.push(format!("{at}.tenants: {e}"));
                }
            }
        }
        errs
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a token, as the configuration holds it.
pub fn token_hash(token: &str) -> String {
    to_hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// A new random token (`strand_` and 64 hex digits: 32 bytes from the system's random
/// source) and its SHA-256.
pub fn new_token() -> anyhow::Result<(String, String)> {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let token = format!("strand_{}", to_hex(&secret));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// Checks a tenant id: 1–64 characters of `A–Z a–z 0–9 _ . -`, not `.` or `..` (it names
/// a directory).
pub fn check_tenant_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("tenant id `{}` must be 1 to 64 characters", id.escape_debug()));
    }
    if id == "." || id == ".." || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err(format!(
            "tenant id `{}` may hold only letters, digits, `_`, `.` and `-` (and is not `.` or `..`)",
            id.escape_debug()
        ));
    }
    Ok(())
}

/// The listener a request came in on, which decides what its paths need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// OTLP over gRPC.
    OtlpGrpc,
    /// OTLP over HTTP.
    OtlpHttp,
    /// Jaeger thrift over HTTP (with `/api/sampling` beside it).
    JaegerHttp,
    /// Zipkin v2.
    Zipkin,
    /// The remote-sampling strategies.
    RemoteSampling,
    /// The query API, UI, health, metrics and admin endpoints.
    Query,
}

impl Listener {
    /// Its name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::OtlpGrpc => "otlp_grpc",
            Listener::OtlpHttp => "otlp_http",
            Listener::JaegerHttp => "jaeger_thrift_http",
            Listener::Zipkin => "zipkin",
            Listener::RemoteSampling => "remote_sampling",
            Listener::Query => "query",
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, the UI's files, sampling strategies.
    Open,
    /// A token with this scope (and, with tenants, the request's tenant).
    Scope(Scope),
    /// `/metrics`: the `metrics` or the `admin` scope.
    Metrics,
}

/// What a request for `path` on `listener` needs.
pub fn need(listener: Listener, path: &str) -> Need {
    match listener {
        Listener::RemoteSampling => Need::Open,
        Listener::JaegerHttp if path == "/api/sampling" || path == "/sampling" => Need::Open,
        Listener::OtlpGrpc | Listener::OtlpHttp | Listener::JaegerHttp | Listener::Zipkin => {
            Need::Scope(Scope::Write)
        }
        Listener::Query => match path {
            "/healthz" | "/readyz" => Need::Open,
            "/metrics" => Need::Metrics,
            p if p.starts_with("/api/v1/admin/") => Need::Scope(Scope::Admin),
            p if p.starts_with("/api/") => Need::Scope(Scope::Read),
            _ => Need::Open,
        },
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header (401).
    Missing,
    /// A token the server does not know, or a malformed header (401).
    Invalid,
    /// The token lacks the scope (403).
    Scope {
        /// The token's name.
        token: String,
        /// The scope it lacks.
        need: &'static str,
    },
    /// The token may not use the tenant (403).
    Tenant {
        /// The token's name.
        token: String,
        /// The tenant the request named.
        tenant: String,
    },
    /// Multi-tenancy is on and the request names no tenant the server can take (401, as
    /// Tempo, Loki and Mimir answer a request without an org id).
    NoTenant(String),
    /// `X-Scope-OrgID` is not a valid tenant id (400).
    BadTenant(String),
    /// Admin without tokens from beyond loopback (403).
    NotLoopback,
    /// A request a web page of another origin could send without a preflight (403).
    CrossOrigin(String),
    /// Without tokens, a request to a loopback listener addressed to another host (403).
    ForeignHost(String),
}

impl Denied {
    /// Its label in `strand_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Missing => "missing_token",
            Denied::Invalid => "invalid_token",
            Denied::Scope { .. } => "scope",
            Denied::Tenant { .. } => "tenant",
            Denied::NoTenant(_) => "no_tenant",
            Denied::BadTenant(_) => "bad_tenant",
            Denied::NotLoopback => "not_loopback",
            Denied::CrossOrigin(_) => "cross_origin",
            Denied::ForeignHost(_) => "foreign_host",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Denied::Missing | Denied::Invalid | Denied::NoTenant(_) => StatusCode::UNAUTHORIZED,
            Denied::BadTenant(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        match self {
            Denied::Missing | Denied::Invalid | Denied::NoTenant(_) => tonic::Code::Unauthenticated,
            Denied::BadTenant(_) => tonic::Code::InvalidArgument,
            _ => tonic::Code::PermissionDenied,
        }
    }

    fn message(&self) -> String {
        match self {
            Denied::Missing => {
                "this server requires a token: send `Authorization: Bearer <token>` (OTel SDKs: \
                 OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>)"
                    .into()
            }
            Denied::Invalid => "the bearer token is not valid on this server".into(),
            Denied::Scope { token, need } => format!("token `{token}` lacks the `{need}` scope"),
            Denied::Tenant { token, tenant } => format!("token `{token}` may not use tenant `{tenant}`"),
            Denied::NoTenant(msg) | Denied::BadTenant(msg) | Denied::CrossOrigin(msg) => msg.clone(),
            Denied::NotLoopback => {
                "admin endpoints answer only loopback clients when no auth tokens are configured".into()
            }
            Denied::ForeignHost(host) => format!(
                "without tokens this server answers a loopback client only when it addresses \
                 localhost, a loopback address or one of auth.allowed_hosts, not `{}`",
                host.escape_debug()
            ),
        }
    }
}

/// A request's caller, as the middleware found it: put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant whose data the request writes or reads.
    pub tenant: String,
    /// The token's name, when a token was used.
    pub token: Option<String>,
    /// The tenants the caller may use; `None` for any.
    pub tenants: Option<Vec<String>>,
}

/// A request as the token check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The listener it came in on.
    pub listener: Listener,
    /// Its method.
    pub method: &'a Method,
    /// Its path.
    pub path: &'a str,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// The host it is addressed to (`Host`, or HTTP/2's `:authority`).
    pub host: Option<&'a str>,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// Whether the host a request names is checked (not over TLS, whose certificate a
    /// rebinding page cannot present, nor on the HTTP/2-only gRPC port, which browsers
    /// cannot speak in the clear).
    pub check_host: bool,
}

/// The name of a `Host` value, without its port, lowercase, without a trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a `Host` value names this machine's loopback: `localhost` (or a name under
/// it), `127.x.x.x` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host);
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The peer address of a connection, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
    /// `None` for all tenants (`*`).
    tenants: Option<Vec<String>>,
}

/// The tokens and tenancy rules of a running server, and what they refused.
pub struct Authority {
    tokens: Vec<Token>,
    allowed_hosts: Vec<String>,
    multitenant: bool,
    failures: parking_lot::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    allowed: AtomicU64,
}

impl Authority {
    /// From the validated configuration.
    pub fn new(cfg: &AuthConfig, multitenant: bool) -> Self {
        let tokens = cfg
            .tokens
            .iter()
            .filter_map(|t| {
                Some(Token {
                    name: t.name.clone(),
                    hash: parse_hash(&t.sha256)?,
                    scopes: t.scopes.clone(),
                    tenants: (!t.tenants.iter().any(|x| x == "*")).then(|| t.tenants.clone()),
                })
            })
            .collect();
        let allowed_hosts = cfg.allowed_hosts.iter().map(|h| host_name(h)).collect();
        Self { tokens, allowed_hosts, multitenant, failures: Default::default(), allowed: AtomicU64::new(0) }
    }

    /// Whether requests need a token.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token a header names, compared in constant time against every configured hash
    /// (no early exit, so the time taken tells nothing about which one matched).
    fn token(&self, headers: &HeaderMap) -> Result<Option<&Token>, Denied> {
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
        let value = value.to_str().map_err(|_| Denied::Invalid)?.trim();
        let (kind, secret) = value.split_once(' ').ok_or(Denied::Invalid)?;
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(Denied::Invalid);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.trim().as_bytes());
        let mut found = None;
        for t in &self.tokens {
            let diff = t.hash.iter().zip(digest.as_ref()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(diff) == 0 {
                found = Some(t);
            }
        }
        found.map(Some).ok_or(Denied::Invalid)
    }

    /// Decides a request: its caller, or why it is refused.
    pub fn check(&self, ask: &Ask<'_>) -> Result<Option<Caller>, Denied> {
        let Ask { listener, method, path, headers, host, peer, check_host } = *ask;
        let need = need(listener, path);
        if need == Need::Open {
            return Ok(None);
        }
        let token = if self.required() { Some(self.token(headers)?.ok_or(Denied::Missing)?) } else { None };
        if token.is_none()
            && check_host
            && peer.is_some_and(|p| p.ip().is_loopback())
            && host.is_some_and(|h| !is_loopback_host(h) && !self.allowed_hosts.contains(&host_name(h)))
        {
            // Without tokens, a loopback client is answered only when it addresses
            // loopback (or an allowed host): a page whose domain was made to resolve to
            // 127.0.0.1 (DNS rebinding) looks same-origin to the browser but names its
            // own host.
            return Err(Denied::ForeignHost(host.unwrap_or_default().to_owned()));
        }
        if let Some(t) = token {
            let ok = match need {
                Need::Scope(s) => t.scopes.contains(&s),
                Need::Metrics => t.scopes.iter().any(|s| matches!(s, Scope::Metrics | Scope::Admin)),
                Need::Open => true,
            };
            if !ok {
                let need = match need {
                    Need::Scope(s) => s.as_str(),
                    _ => "metrics",
                };
                return Err(Denied::Scope { token: t.name.clone(), need });
            }
        } else if need == Need::Scope(Scope::Admin) {
            // Without tokens, what changes the server's state answers loopback clients
            // only, and never a request a web page of another origin could send.
            if !peer.is_some_and(|p| p.ip().is_loopback()) {
                return Err(Denied::NotLoopback);
            }
            check_not_cross_origin(method, headers, host)?;
        }
        // The tenant list itself is read before a tenant is chosen.
        let tenant = if path == "/api/v1/tenants" {
            SINGLE_TENANT.to_owned()
        } else {
            self.tenant(headers, token, need)?
        };
        Ok(Some(Caller {
            tenant,
            token: token.map(|t| t.name.clone()),
            tenants: token.and_then(|t| t.tenants.clone()),
        }))
    }

    fn tenant(&self, headers: &HeaderMap, token: Option<&Token>, need: Need) -> Result<String, Denied> {
        if !self.multitenant || need == Need::Metrics || need == Need::Scope(Scope::Admin) {
            return Ok(SINGLE_TENANT.to_owned());
        }
        let named = match headers.get(TENANT_HEADER) {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| Denied::BadTenant("X-Scope-OrgID is not text".into()))?.trim();
                check_tenant_id(v).map_err(|e| Denied::BadTenant(format!("X-Scope-OrgID: {e}")))?;
                Some(v.to_owned())
            }
        };
        let allowed = token.and_then(|t| t.tenants.as_ref());
        match (named, allowed) {
            (Some(tenant), Some(list)) if !list.contains(&tenant) => {
                Err(Denied::Tenant { token: token.map(|t| t.name.clone()).unwrap_or_default(), tenant })
            }
            (Some(tenant), _) => Ok(tenant),
            (None, Some(list)) if list.len() == 1 => Ok(list[0].clone()),
            (None, Some(list)) => Err(Denied::NoTenant(format!(
                "no tenant: send X-Scope-OrgID (this token may use {})",
                list.join(", ")
            ))),
            (None, None) => Err(Denied::NoTenant("no tenant: send X-Scope-OrgID with the tenant id".into())),
        }
    }

    fn count(&self, listener: Listener, denied: &Denied) {
        *self.failures.lock().entry((listener.as_str(), denied.reason())).or_default() += 1;
    }

    /// `strand_auth_failures_total{listener,reason}` and the requests let through.
    pub fn metric_families(&self) -> Vec<strand_core::MetricFamily> {
        let mut failures = strand_core::MetricFamily::new(
            "strand_auth_failures_total",
            "Requests refused before reaching a receiver or the query API, by listener and reason.",
            strand_core::MetricKind::Counter,
        );
        for ((listener, reason), n) in self.failures.lock().iter() {
            failures = failures
                .with(vec![("listener", (*listener).into()), ("reason", (*reason).into())], *n as f64);
        }
        vec![
            failures,
            strand_core::MetricFamily::counter(
                "strand_auth_allowed_total",
                "Requests that needed a token or a tenant and were let through.",
                self.allowed.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

/// Refuses an admin request without a token that a page of another origin could have
/// sent: one the browser marks cross-site, one with a foreign `Origin`, and a `POST`
/// without `Content-Type: application/json` (a "simple" request, sent without a preflight).
fn check_not_cross_origin(method: &Method, headers: &HeaderMap, host: Option<&str>) -> Result<(), Denied> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(site) = get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Err(Denied::CrossOrigin(format!(
            "admin requests from another site are refused (Sec-Fetch-Site: {site})"
        )));
    }
    if let Some(origin) = get("origin") {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        // No host to compare with (possible over HTTP/2): refused rather than assumed same.
        if host.is_none_or(|h| !origin_host.eq_ignore_ascii_case(h)) {
            return Err(Denied::CrossOrigin(format!(
                "admin requests from another origin are refused (Origin: {origin})"
            )));
        }
    }
    if method != Method::GET && method != Method::HEAD {
        let media =
            get("content-type").and_then(|c| c.split(';').next()).unwrap_or("").trim().to_ascii_lowercase();
        if media != "application/json" {
            return Err(Denied::CrossOrigin(
                "admin requests need `Content-Type: application/json` (a web page of another origin cannot send that without asking first)".into(),
            ));
        }
    }
    Ok(())
}

/// The middleware's state: the authority and the listener it guards.
#[derive(Clone)]
pub struct Guard {
    /// Tokens and tenancy rules.
    pub authority: Arc<Authority>,
    /// The listener guarded.
    pub listener: Listener,
    /// Whether the host a request addresses is checked (see [`Ask::check_host`]).
    pub check_host: bool,
}

/// The middleware: refuses what the caller may not do, in the listener's error shape
/// (gRPC status, OTLP `Status`, or `{"error": …}`), or passes the request on with its
/// [`Caller`] in the extensions.
pub async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    // A Host header that is not text names no host of ours.
    let host = match req.headers().get(header::HOST) {
        Some(h) => Some(h.to_str().unwrap_or("\u{fffd}").to_owned()),
        None => req.uri().authority().map(|a| a.as_str().to_owned()),
    };
    let ask = Ask {
        listener: g.listener,
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
        host: host.as_deref(),
        peer,
        check_host: g.check_host,
    };
    match g.authority.check(&ask) {
        Ok(caller) => {
            if let Some(caller) = caller {
                g.authority.allowed.fetch_add(1, Ordering::Relaxed);
                req.extensions_mut().insert(caller);
            }
            next.run(req).await
        }
        Err(denied) => {
            g.authority.count(g.listener, &denied);
            refusal(g.listener, req.headers(), &denied)
        }
    }
}

fn refusal(listener: Listener, headers: &HeaderMap, denied: &Denied) -> Response {
    let mut resp = error_response(listener, headers, denied.status(), denied.grpc_code(), denied.message());
    if matches!(denied, Denied::Missing | Denied::Invalid) {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"strand\""));
    }
    resp
}

/// An error answer in the listener's shape: a gRPC status for gRPC requests, an OTLP
/// `google.rpc.Status` in the request's encoding on the OTLP/HTTP port, `{"error": …}`
/// elsewhere.
pub fn error_response(
    listener: Listener,
    headers: &HeaderMap,
    status: StatusCode,
    grpc_code: tonic::Code,
    msg: String,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media.starts_with("application/grpc") || listener == Listener::OtlpGrpc {
        tonic::Status::new(grpc_code, msg).into_http::<Body>()
    } else if listener == Listener::OtlpHttp {
        use strand_ingest::otlp::{Format, http};
        let format = if media == "application/json" { Format::Json } else { Format::Protobuf };
        http::status_response(status, format, http::RpcStatus { code: grpc_code as i32, message: msg })
    } else {
        (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(tokens: &[(&str, &[Scope], &[&str])], multitenant: bool) -> (Authority, Vec<String>) {
        let mut secrets = Vec::new();
        let mut cfg = AuthConfig::default();
        for (name, scopes, tenants) in tokens {
            let (secret, sha256) = new_token().expect("token");
            secrets.push(secret);
            cfg.tokens.push(TokenConfig {
                name: (*name).into(),
                sha256,
                scopes: scopes.to_vec(),
                tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            });
        }
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        (Authority::new(&cfg, multitenant), secrets)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    const LOOPBACK: &str = "127.0.0.1:5000";

    fn decide(
        a: &Authority,
        listener: Listener,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<Option<Caller>, Denied> {
        a.check(&Ask { listener, method, path, headers, host: None, peer, check_host: false })
    }

    #[test]
    fn without_tokens_a_loopback_client_is_answered_for_loopback_hosts_only() {
        let cfg = AuthConfig { allowed_hosts: vec!["Traces.Example.com.".into()], ..AuthConfig::default() };
        let a = Authority::new(&cfg, false);
        let ask = |host: &'static str, peer: &str, check_host| {
            let h = HeaderMap::new();
            a.check(&Ask {
                listener: Listener::Query,
                method: &Method::GET,
                path: "/api/v1/search",
                headers: &h,
                host: Some(host),
                peer: Some(peer.parse().expect("addr")),
                check_host,
            })
        };
        let local = "127.0.0.1:5000";
        for ok in [
            "localhost:16686",
            "localhost.",
            "127.0.0.1:16686",
            "[::1]:16686",
            "[::1]",
            "LOCALHOST",
            "app.localhost",
            "127.0.0.2",
            "traces.example.com:443",
        ] {
            assert!(ask(ok, local, true).is_ok(), "{ok}");
        }
        for bad in ["evil.example:16686", "evil.example", "10.0.0.1:80", "localhost.evil.example", "\u{fffd}"]
        {
            assert_eq!(ask(bad, local, true), Err(Denied::ForeignHost(bad.into())), "{bad}");
        }
        // A client from elsewhere (auth: none on a listener beyond loopback) names the
        // server's own name; over TLS or gRPC the host is not checked.
        assert!(ask("strand.example", "10.1.2.3:5000", true).is_ok());
        assert!(ask("evil.example", local, false).is_ok());
        // With tokens the host does not matter: a rebinding page has no token.
        let (a, s) = authority(&[("r", &[Scope::Read], &[])], false);
        let h = headers(&[("authorization", &format!("Bearer {}", s[0]))]);
        let ask = Ask {
            listener: Listener::Query,
            method: &Method::GET,
            path: "/api/v1/search",
            headers: &h,
            host: Some("evil.example"),
            peer: Some(local.parse().expect("addr")),
            check_host: true,
        };
        assert!(a.check(&ask).is_ok());
    }

    #[test]
    fn an_admin_origin_without_a_host_to_compare_is_refused() {
        let json = headers(&[("content-type", "application/json"), ("origin", "http://127.0.0.1:16686")]);
        assert!(check_not_cross_origin(&Method::POST, &json, None).is_err());
        assert!(check_not_cross_origin(&Method::POST, &json, Some("127.0.0.1:16686")).is_ok());
        assert!(check_not_cross_origin(&Method::POST, &json, Some("127.0.0.1:9999")).is_err());
    }

    #[test]
    fn without_tokens_admin_answers_loopback_only() {
        let (a, _) = authority(&[], false);
        let json = headers(&[("content-type", "application/json")]);
        let flush = |peer: &str| {
            decide(
                &a,
                Listener::Query,
                &Method::POST,
                "/api/v1/admin/flush",
                &json,
                Some(peer.parse().expect("addr")),
            )
        };
        assert_eq!(flush("10.0.0.7:5000"), Err(Denied::NotLoopback));
        assert_eq!(flush("[::1]:5000").map(|c| c.map(|c| c.tenant)), Ok(Some(SINGLE_TENANT.into())));
        assert!(flush(LOOPBACK).is_ok());
        // No peer known: refused, not assumed local.
        assert_eq!(
            decide(&a, Listener::Query, &Method::POST, "/api/v1/admin/flush", &json, None),
            Err(Denied::NotLoopback)
        );
        // Reads and writes need nothing without tokens.
        let peer = Some("10.0.0.7:5000".parse().expect("addr"));
        assert!(decide(&a, Listener::Query, &Method::GET, "/api/v1/search", &HeaderMap::new(), peer).is_ok());
        assert!(decide(&a, Listener::OtlpHttp, &Method::POST, "/v1/traces", &HeaderMap::new(), peer).is_ok());
    }

    #[test]
    fn a_token_is_found_by_its_hash_in_any_bearer_spelling() {
        let (a, s) = authority(&[("w", &[Scope::Write], &[]), ("r", &[Scope::Read], &[])], false);
        let check = |auth: String| {
            decide(
                &a,
                Listener::Query,
                &Method::GET,
                "/api/v1/search",
                &headers(&[("authorization", &auth)]),
                None,
            )
        };
        assert_eq!(check(format!("Bearer {}", s[1])).map(|c| c.and_then(|c| c.token)), Ok(Some("r".into())));
        assert!(check(format!("bearer  {} ", s[1])).is_ok());
        assert_eq!(check(format!("Bearer {}", s[0])), Err(Denied::Scope { token: "w".into(), need: "read" }));
        assert_eq!(check(format!("Bearer {}x", s[1])), Err(Denied::Invalid));
        assert_eq!(check(s[1].clone()), Err(Denied::Invalid));
        assert_eq!(token_hash(&s[0]).len(), 64);
        // Open paths need no token even when tokens are required.
        assert_eq!(decide(&a, Listener::Query, &Method::GET, "/healthz", &HeaderMap::new(), None), Ok(None));
        assert_eq!(decide(&a, Listener::Query, &Method::GET, "/", &HeaderMap::new(), None), Ok(None));
        assert_eq!(
            decide(&a, Listener::JaegerHttp, &Method::GET, "/api/sampling", &HeaderMap::new(), None),
            Ok(None)
        );
        assert_eq!(
            decide(&a, Listener::JaegerHttp, &Method::POST, "/api/traces", &HeaderMap::new(), None),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn the_tenant_comes_from_the_header_or_the_tokens_only_tenant() {
        let (a, s) = authority(
            &[
                ("one", &[Scope::Read], &["acme"]),
                ("two", &[Scope::Read], &["acme", "globex"]),
                ("all", &[Scope::Read], &["*"]),
            ],
            true,
        );
        let check = |token: &str, tenant: Option<&str>| {
            let mut pairs = vec![("authorization", format!("Bearer {token}"))];
            if let Some(t) = tenant {
                pairs.push(("x-scope-orgid", t.to_owned()));
            }
            let h: Vec<(&'static str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            decide(&a, Listener::Query, &Method::GET, "/api/v1/search", &headers(&h), None)
                .map(|c| c.map(|c| c.tenant))
        };
        assert_eq!(check(&s[0], None), Ok(Some("acme".into())));
        assert_eq!(check(&s[0], Some("acme")), Ok(Some("acme".into())));
        assert_eq!(
            check(&s[0], Some("globex")),
            Err(Denied::Tenant { token: "one".into(), tenant: "globex".into() })
        );
        assert_eq!(check(&s[1], Some("globex")), Ok(Some("globex".into())));
        assert!(matches!(check(&s[1], None), Err(Denied::NoTenant(m)) if m.contains("acme, globex")));
        assert!(matches!(check(&s[2], None), Err(Denied::NoTenant(_))));
        assert_eq!(check(&s[2], Some("anyone")), Ok(Some("anyone".into())));
        assert!(matches!(check(&s[2], Some("a/b")), Err(Denied::BadTenant(_))));
        // The tenant list is read before a tenant is chosen; admin is server-wide.
        let h = headers(&[("authorization", &format!("Bearer {}", s[1]))]);
        let list = decide(&a, Listener::Query, &Method::GET, "/api/v1/tenants", &h, None)
            .expect("allowed")
            .expect("caller");
        assert_eq!(list.tenants, Some(vec!["acme".to_owned(), "globex".to_owned()]));
    }

    #[test]
    fn tenant_ids_are_safe_directory_names() {
        for ok in ["acme", "team-1", "a.b_c", "X"] {
            assert!(check_tenant_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(check_tenant_id(bad).is_err(), "{bad:?}");
        }
    }
}
