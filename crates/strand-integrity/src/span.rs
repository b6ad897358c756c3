//! The part of a span the analyser needs ([`Lite`]): identity, parent, kind, service,
//! times, sampling flag, links, and what it says about the boundary it crosses (callee,
//! destination, message id, method and path).

use std::sync::Arc;

use foldhash::HashSet;
use strand_core::{AnyValue, Resource, Span, SpanId, SpanKind, StatusCode, TraceId};

/// Shared strings: services, callee keys, destinations and routes repeat across spans.
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<Arc<str>>,
    scratch: String,
    /// The boundary of spans that say nothing about one.
    empty: Arc<Boundary>,
    /// Strings held after the last prune.
    pruned_at: usize,
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

    /// The shared copy of an attribute value's text.
    fn text(&mut self, t: Text<'_>) -> Arc<str> {
        match t {
            Text::Str(s) => self.get(s),
            Text::Int(_) => self.joined(&[&t]),
        }
    }

    /// The shared copy of `parts` written one after the other (built in a reused buffer:
    /// no allocation unless the string is new).
    pub fn joined(&mut self, parts: &[&dyn std::fmt::Display]) -> Arc<str> {
        use std::fmt::Write as _;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        for p in parts {
            let _ = write!(buf, "{p}");
        }
        let a = self.get(&buf);
        self.scratch = buf;
        a
    }

    /// Forgets strings nothing else holds, when the set has doubled since it was last
    /// pruned (so the cost stays proportional to the strings added).
    pub fn prune_if_grown(&mut self) {
        if self.set.len() > 2 * self.pruned_at + 4096 {
            self.set.retain(|a| Arc::strong_count(a) > 1);
            self.pruned_at = self.set.len();
        }
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
    /// How a CLIENT or PRODUCER span's call crosses (for edge health): the RPC system
    /// (`grpc`), `http`, `messaging:<destination>`, else `call`.
    pub via: Option<Arc<str>>,
    /// `messaging.message.id`.
    pub message_id: Option<Arc<str>>,
    /// The span talks to a database (`db.system`, `db.system.name`): its callee is never
    /// instrumented.
    pub database: bool,
    /// The span is messaging (`messaging.system`).
    pub messaging: bool,
    /// The host a client called (`server.address`, the URL's host) or a server was
    /// addressed as (`server.address`).
    pub host: Option<Arc<str>>,
    /// The call got an answer (`http.response.status_code` or `rpc.grpc.status_code`).
    pub responded: bool,
    /// The call failed in a way that says why (`error.type`).
    pub error_type: bool,
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
    /// Its flags say its parent is remote (in another process).
    pub remote_parent: bool,
    /// Spans it links to.
    pub links: Vec<(TraceId, SpanId)>,
    /// What it says about its boundary (shared: spans that say nothing share one empty).
    pub boundary: Arc<Boundary>,
}

/// OTLP span flags: the W3C sampled bit, and "the flags carry is-remote" (set by SDKs that
/// fill in the flags field at all).
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Host, port and path of a URL (`scheme://host[:port]/path?query`), borrowed, without a
/// URL crate: only what is needed to tell callees apart.
fn url_parts(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p),
        _ => (authority, if scheme == "https" { "443" } else { "80" }),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Some((host, port, path))
}

/// An attribute value the analyser reads: text, or an integer (ports).
#[derive(Debug, Clone, Copy)]
enum Text<'a> {
    Str(&'a str),
    Int(i64),
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Text::Str(s) => f.write_str(s),
            Text::Int(i) => write!(f, "{i}"),
        }
    }
}

/// The attributes [`Lite::of`] looks at, borrowed from the span.
#[derive(Default)]
struct Attrs<'a> {
    database: bool,
    messaging: bool,
    destination: Option<Text<'a>>,
    message_id: Option<Text<'a>>,
    method: Option<Text<'a>>,
    rpc_service: Option<Text<'a>>,
    rpc_method: Option<Text<'a>>,
    rpc_system: Option<Text<'a>>,
    url: Option<Text<'a>>,
    peer: Option<Text<'a>>,
    host: Option<Text<'a>>,
    port: Option<Text<'a>>,
    path: Option<Text<'a>>,
    route: Option<Text<'a>>,
    responded: bool,
    error_type: bool,
}

impl Lite {
    /// The analyser's view of `span`, sent by `resource`.
    pub fn of(span: &Span, resource: &Resource, strings: &mut Interner) -> Self {
        let service = strings.get(resource.service_name());
        Self::of_service(span, service, strings)
    }

    /// [`Lite::of`] with the resource's service already interned (spans of one resource
    /// share it).
    pub fn of_service(span: &Span, service: Arc<str>, strings: &mut Interner) -> Self {
        // One pass over the attributes, borrowing (integers, such as ports, written out).
        let mut a = Attrs::default();
        for kv in &span.attributes {
            let v = match &kv.value {
                AnyValue::String(s) if !s.is_empty() => Text::Str(s),
                AnyValue::Int(i) => Text::Int(*i),
                _ => continue,
            };
            match kv.key.as_str() {
                "db.system" | "db.system.name" => a.database = true,
                "messaging.system" => a.messaging = true,
                "messaging.destination.name" => a.destination = Some(v),
                "messaging.message.id" => a.message_id = Some(v),
                "http.request.method" => a.method = Some(v),
                "http.method" => a.method = a.method.or(Some(v)),
                "rpc.service" => a.rpc_service = Some(v),
                "rpc.method" => a.rpc_method = Some(v),
                "rpc.system" => a.rpc_system = Some(v),
                "url.full" => a.url = Some(v),
                "http.url" => a.url = a.url.or(Some(v)),
                "peer.service" => a.peer = Some(v),
                "server.address" => a.host = Some(v),
                "net.peer.name" => a.host = a.host.or(Some(v)),
                "server.port" => a.port = Some(v),
                "net.peer.port" => a.port = a.port.or(Some(v)),
                "url.path" => a.path = Some(v),
                "http.target" => a.path = a.path.or(Some(v)),
                "http.route" => a.route = Some(v),
                "http.response.status_code" | "http.status_code" | "rpc.grpc.status_code" => {
                    a.responded = true
                }
                "error.type" => a.error_type = true,
                _ => {}
            }
        }
        let mut b = Boundary {
            database: a.database,
            messaging: a.messaging,
            responded: a.responded,
            error_type: a.error_type,
            ..Boundary::default()
        };
        b.destination = a.destination.map(|t| strings.text(t));
        // Message ids and request paths are nearly all different: kept, not interned.
        b.message_id = a.message_id.map(|t| Arc::from(t.to_string()));
        b.method = a.method.map(|t| strings.text(t));
        b.rpc_system = a.rpc_system.map(|t| strings.text(t));
        if let (Some(svc), Some(method)) = (a.rpc_service, a.rpc_method) {
            b.rpc = Some(strings.joined(&[&svc, &"/", &method]));
        }
        match span.kind {
            SpanKind::Client | SpanKind::Producer => {
                let url = a.url.as_ref().and_then(|u| match u {
                    Text::Str(u) => url_parts(u),
                    Text::Int(_) => None,
                });
                if let Some((_, _, path)) = url {
                    b.path = Some(Arc::from(path));
                }
                b.host = match (a.host, url) {
                    (Some(h), _) => Some(strings.text(h)),
                    (None, Some((h, _, _))) => Some(strings.get(h)),
                    (None, None) => None,
                };
                b.callee = if let Some(peer) = a.peer {
                    Some(strings.joined(&[&"peer:", &peer]))
                } else if let Some(svc) = a.rpc_service {
                    Some(strings.joined(&[&"rpc:", &svc]))
                } else if let (Some(host), Some(port)) = (a.host, a.port) {
                    Some(strings.joined(&[&"addr:", &host, &":", &port]))
                } else {
                    url.map(|(host, port, _)| strings.joined(&[&"addr:", &host, &":", &port]))
                };
                b.via = Some(if let Some(d) = &b.destination {
                    strings.joined(&[&"messaging:", d])
                } else if b.rpc.is_some() || b.rpc_system.is_some() {
                    b.rpc_system.clone().unwrap_or_else(|| strings.get("rpc"))
                } else if b.method.is_some() || b.path.is_some() {
                    strings.get("http")
                } else {
                    strings.get("call")
                });
            }
            SpanKind::Server | SpanKind::Consumer => {
                match a.path {
                    Some(Text::Str(p)) => b.path = Some(Arc::from(p.split('?').next().unwrap_or(p))),
                    Some(t @ Text::Int(_)) => b.path = Some(Arc::from(t.to_string())),
                    None => {}
                }
                b.route = a.route.map(|t| strings.text(t));
                b.host = a.host.map(|t| strings.text(t));
                if span.kind == SpanKind::Server
                    && let Some(svc) = a.rpc_service
                {
                    // What a client of this server calls it by.
                    b.callee = Some(strings.joined(&[&"rpc:", &svc]));
                }
            }
            _ => {}
        }
        let flags = span.flags;
        Lite {
            span_id: span.span_id,
            parent: span.parent_span_id,
            kind: span.kind,
            service,
            name: strings.get(&span.name),
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano.max(span.start_time_unix_nano),
            sampled: !((flags & HAS_IS_REMOTE != 0 || flags & 0xff != 0) && flags & SAMPLED == 0),
            remote_parent: flags & (HAS_IS_REMOTE | IS_REMOTE) == HAS_IS_REMOTE | IS_REMOTE,
            error: span.status.code == StatusCode::Error,
            links: span.links.iter().map(|l| (l.trace_id, l.span_id)).collect(),
            boundary: if b == Boundary::default() { strings.empty.clone() } else { Arc::new(b) },
        }
    }

    /// Whether this CLIENT span's call could have reached an instrumented service (not a
    /// database, not a messaging client).
    pub fn calls_a_service(&self) -> bool {
        self.kind == SpanKind::Client && !self.boundary.database && !self.boundary.messaging
    }

    /// Whether a CLIENT span failed without an answer, or said why it failed (connection
    /// refused, a timeout, a proxy's 503): no server need have seen the call.
    pub fn failed_unanswered(&self) -> bool {
        self.error && (!self.boundary.responded || self.boundary.error_type)
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
            Some(("user-service", "80", "/patients/41"))
        );
        assert_eq!(url_parts("https://u:p@sms:8443/messages"), Some(("sms", "8443", "/messages")));
        assert_eq!(url_parts("https://sms/"), Some(("sms", "443", "/")));
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
