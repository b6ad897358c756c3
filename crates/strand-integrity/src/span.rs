//! The part of a span the analyser needs ([`Lite`]): identity, parent, kind, service,
//! times, sampling flag, links, and what it says about the boundary it crosses (callee,
//! destination, message id, method and path).

use std::sync::Arc;

use foldhash::HashSet;
use strand_core::{AnyValue, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, find_attr};

/// Shared strings: services, callee keys, destinations and routes repeat across spans.
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<Arc<str>>,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.set.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.set.insert(a.clone());
        a
    }

    /// Forgets strings nothing else holds (call now and then to bound memory).
    pub fn prune(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
    }

    /// Strings held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// What a span says about the boundary it crosses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boundary {
    /// Who a CLIENT span calls: `peer:<peer.service>`, `rpc:<rpc.service>` or
    /// `addr:<host>:<port>`.
    pub callee: Option<Arc<str>>,
    /// `rpc.service/rpc.method`, on both ends of an RPC.
    pub rpc: Option<Arc<str>>,
    /// `rpc.system` (`grpc`, ...).
    pub rpc_system: Option<Arc<str>>,
    /// `http.request.method`.
    pub method: Option<Arc<str>>,
    /// The path: a client's from `url.full`, a server's `url.path` (or `http.route`).
    pub path: Option<Arc<str>>,
    /// A server's `http.route` template (`/patients/{id}`).
    pub route: Option<Arc<str>>,
    /// `messaging.destination.name`.
    pub destination: Option<Arc<str>>,
    /// `messaging.message.id`.
    pub message_id: Option<Arc<str>>,
    /// The span talks to a database (`db.system`, `db.system.name`): its callee is never
    /// instrumented.
    pub database: bool,
    /// The span is messaging (`messaging.system`).
    pub messaging: bool,
}

/// A span as the analyser keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lite {
    /// The span's id.
    pub span_id: SpanId,
    /// Its parent, if any.
    pub parent: Option<SpanId>,
    /// Its kind.
    pub kind: SpanKind,
    /// `service.name` of its resource.
    pub service: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
    /// Start, Unix nanoseconds.
    pub start: u64,
    /// End (never before the start).
    pub end: u64,
    /// False only when the span's flags say its context was not sampled (an SDK that
    /// fills in flags and leaves the sampled bit clear).
    pub sampled: bool,
    /// Status ERROR.
    pub error: bool,
    /// Spans it links to.
    pub links: Vec<(TraceId, SpanId)>,
    /// What it says about its boundary.
    pub boundary: Boundary,
}

/// OTLP span flags: the W3C sampled bit, and "the flags carry is-remote" (set by SDKs that
/// fill in the flags field at all).
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;

fn text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::String(s) if !s.is_empty() => Some(s.clone()),
        AnyValue::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `host:port` and path of a URL (`scheme://host[:port]/path?query`), without a URL crate:
/// only what is needed to tell callees apart.
fn url_parts(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = match scheme {
        "https" => "443",
        _ => "80",
    };
    let host_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_owned()
    } else {
        format!("{authority}:{default}")
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Some((host_port, path.to_owned()))
}

impl Lite {
    /// The analyser's view of `span`, sent by `resource`.
    pub fn of(span: &Span, resource: &Resource, strings: &mut Interner) -> Self {
        let attrs = &span.attributes;
        let get = |k: &str| find_attr(attrs, k).and_then(text);
        let mut b = Boundary {
            database: find_attr(attrs, "db.system").is_some() || find_attr(attrs, "db.system.name").is_some(),
            messaging: find_attr(attrs, "messaging.system").is_some(),
            ..Boundary::default()
        };
        if let Some(d) = get("messaging.destination.name") {
            b.destination = Some(strings.get(&d));
        }
        if let Some(m) = get("messaging.message.id") {
            b.message_id = Some(strings.get(&m));
        }
        if let Some(m) = get("http.request.method").or_else(|| get("http.method")) {
            b.method = Some(strings.get(&m));
        }
        if let (Some(svc), Some(method)) = (get("rpc.service"), get("rpc.method")) {
            b.rpc = Some(strings.get(&format!("{svc}/{method}")));
        }
        if let Some(system) = get("rpc.system") {
            b.rpc_system = Some(strings.get(&system));
        }
        match span.kind {
            SpanKind::Client | SpanKind::Producer => {
                let url = get("url.full").or_else(|| get("http.url")).and_then(|u| url_parts(&u));
                if let Some((_, path)) = &url {
                    b.path = Some(strings.get(path));
                }
                let callee = if let Some(peer) = get("peer.service") {
                    Some(format!("peer:{peer}"))
                } else if let Some(svc) = get("rpc.service") {
                    Some(format!("rpc:{svc}"))
                } else if let Some(host) = get("server.address").or_else(|| get("net.peer.name")) {
                    match get("server.port").or_else(|| get("net.peer.port")) {
                        Some(port) => Some(format!("addr:{host}:{port}")),
                        None => url.as_ref().map(|(hp, _)| format!("addr:{hp}")),
                    }
                } else {
                    url.as_ref().map(|(hp, _)| format!("addr:{hp}"))
                };
                b.callee = callee.map(|c| strings.get(&c));
            }
            SpanKind::Server | SpanKind::Consumer => {
                if let Some(p) = get("url.path").or_else(|| get("http.target")) {
                    let p = p.split('?').next().unwrap_or(&p).to_owned();
                    b.path = Some(strings.get(&p));
                }
                if let Some(r) = get("http.route") {
                    b.route = Some(strings.get(&r));
                }
            }
            _ => {}
        }
        let flags = span.flags;
        Lite {
            span_id: span.span_id,
            parent: span.parent_span_id,
            kind: span.kind,
            service: strings.get(resource.service_name()),
            name: strings.get(&span.name),
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano.max(span.start_time_unix_nano),
            sampled: !((flags & HAS_IS_REMOTE != 0 || flags & 0xff != 0) && flags & SAMPLED == 0),
            error: span.status.code == StatusCode::Error,
            links: span.links.iter().map(|l| (l.trace_id, l.span_id)).collect(),
            boundary: b,
        }
    }

    /// Whether this CLIENT span's call could have reached an instrumented service (not a
    /// database, not a messaging client).
    pub fn calls_a_service(&self) -> bool {
        self.kind == SpanKind::Client && !self.boundary.database && !self.boundary.messaging
    }

    /// How the call crosses its boundary, for edge health: `grpc`/`rpc`, `http`,
    /// `messaging:<destination>`, else `call`.
    pub fn via(&self) -> String {
        if let Some(d) = &self.boundary.destination {
            return format!("messaging:{d}");
        }
        if self.boundary.rpc.is_some() || self.boundary.rpc_system.is_some() {
            return self.boundary.rpc_system.as_deref().unwrap_or("rpc").to_owned();
        }
        if self.boundary.method.is_some() || self.boundary.path.is_some() {
            return "http".into();
        }
        "call".into()
    }
}

/// Whether a server's path or route template matches a client's request path:
/// `/patients/{id}` (or `/patients/:id`) matches `/patients/42`.
pub fn path_matches(client_path: &str, server: &Boundary) -> bool {
    if server.path.as_deref() == Some(client_path) {
        return true;
    }
    let Some(route) = &server.route else { return false };
    let mut want = route.split('/');
    let mut got = client_path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) => {
                let param = (w.starts_with('{') && w.ends_with('}')) || w.starts_with(':');
                if w == "*" || w.starts_with("{*") {
                    return true;
                }
                if !param && w != g {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strand_core::KeyValue;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs.iter().map(|(k, v)| KeyValue::new(*k, AnyValue::String((*v).into()))).collect()
    }

    #[test]
    fn urls_give_host_port_and_path() {
        assert_eq!(
            url_parts("http://user-service/patients/41?x=1"),
            Some(("user-service:80".into(), "/patients/41".into()))
        );
        assert_eq!(url_parts("https://u:p@sms:8443/messages"), Some(("sms:8443".into(), "/messages".into())));
        assert_eq!(url_parts("not a url"), None);
    }

    #[test]
    fn route_templates_match_paths() {
        let server = |route: &str| Boundary { route: Some(route.into()), ..Boundary::default() };
        assert!(path_matches("/patients/42", &server("/patients/{id}")));
        assert!(path_matches("/patients/42", &server("/patients/:id")));
        assert!(!path_matches("/patients/42/x", &server("/patients/{id}")));
        assert!(!path_matches("/reports", &server("/patients/{id}")));
        assert!(path_matches("/static/a/b.js", &server("/static/{*rest}")));
    }

    #[test]
    fn clients_name_their_callee() {
        let mut strings = Interner::default();
        let resource = Resource { attributes: attrs(&[("service.name", "gateway")]), ..Resource::default() };
        let id = TraceId([1; 16]);
        let mut span = Span::new(id, SpanId([1; 8]), "GET", 10, 20);
        span.kind = SpanKind::Client;
        span.attributes = attrs(&[("url.full", "http://user-service:8080/patients/41")]);
        let lite = Lite::of(&span, &resource, &mut strings);
        assert_eq!(lite.boundary.callee.as_deref(), Some("addr:user-service:8080"));
        assert_eq!(lite.boundary.path.as_deref(), Some("/patients/41"));
        span.attributes =
            attrs(&[("rpc.system", "grpc"), ("rpc.service", "epro.Data"), ("rpc.method", "Store")]);
        let lite = Lite::of(&span, &resource, &mut strings);
        assert_eq!(lite.boundary.callee.as_deref(), Some("rpc:epro.Data"));
        assert_eq!(lite.boundary.rpc.as_deref(), Some("epro.Data/Store"));
        span.attributes = attrs(&[("peer.service", "billing"), ("server.address", "10.0.0.1")]);
        assert_eq!(Lite::of(&span, &resource, &mut strings).boundary.callee.as_deref(), Some("peer:billing"));
        // Flags: unknown (0) counts as sampled; filled in without the sampled bit does not.
        assert!(Lite::of(&span, &resource, &mut strings).sampled);
        span.flags = 0x100;
        assert!(!Lite::of(&span, &resource, &mut strings).sampled);
        span.flags = 0x101;
        assert!(Lite::of(&span, &resource, &mut strings).sampled);
    }
}
