//! Who may call what: every endpoint (ingest by four protocols, the query APIs, the UI,
//! admin, metrics, health) × {no token, a bad token, a token without the scope, the right
//! token}, each with the exact status it must get; and, without tokens, admin requests only
//! from loopback and never in a form a page of another origin could send.

mod common;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use strand_server::auth::{Scope, TokenConfig};

const FIXTURE_TRACE: &str = "5b8efff798038103d269b633813fc60c";
const PY_COLLECTOR: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-collector.thrift");

/// A token and its configuration entry.
pub fn token(name: &str, scopes: &[Scope], tenants: &[&str]) -> (String, TokenConfig) {
    let (token, sha256) = strand_server::auth::new_token().expect("token");
    let entry = TokenConfig {
        name: name.into(),
        sha256,
        scopes: scopes.to_vec(),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
    };
    (token, entry)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Needs {
    Open,
    Write,
    Read,
    Admin,
    Metrics,
}

struct Endpoint {
    name: &'static str,
    needs: Needs,
    /// HTTP method, URL, content type, body; `None` for the OTLP/gRPC export.
    http: Option<(reqwest::Method, String, Option<&'static str>, Vec<u8>)>,
    /// The status of a request that passes (HTTP status, or 0 for a gRPC OK).
    ok: u16,
}

fn endpoints(server: &common::TestServer) -> Vec<Endpoint> {
    let otlp = std::fs::read(common::fixture("otlp/trace.json")).expect("fixture");
    let zipkin = std::fs::read(common::fixture("zipkin/simple-db-p6.json")).expect("fixture");
    let q = |p: &str| server.query(p);
    let get = |name, needs, url: String, ok| Endpoint {
        name,
        needs,
        http: Some((reqwest::Method::GET, url, None, Vec::new())),
        ok,
    };
    vec![
        Endpoint {
            name: "OTLP/HTTP export",
            needs: Needs::Write,
            http: Some((reqwest::Method::POST, server.otlp_url(), Some("application/json"), otlp)),
            ok: 200,
        },
        Endpoint { name: "OTLP/gRPC export", needs: Needs::Write, http: None, ok: 0 },
        Endpoint {
            name: "Jaeger thrift HTTP",
            needs: Needs::Write,
            http: Some((
                reqwest::Method::POST,
                format!("http://{}/api/traces", server.jaeger_http),
                Some("application/x-thrift"),
                PY_COLLECTOR.to_vec(),
            )),
            ok: 202,
        },
        Endpoint {
            name: "Zipkin v2",
            needs: Needs::Write,
            http: Some((
                reqwest::Method::POST,
                format!("http://{}/api/v2/spans", server.zipkin),
                Some("application/json"),
                zipkin,
            )),
            ok: 202,
        },
        get("native trace by id", Needs::Read, q(&format!("/api/v1/traces/{FIXTURE_TRACE}")), 200),
        get("native search", Needs::Read, q("/api/v1/search?since=1h"), 200),
        get("native services", Needs::Read, q("/api/v1/services"), 200),
        get("native dependencies", Needs::Read, q("/api/v1/dependencies"), 200),
        get("logs by trace", Needs::Read, q(&format!("/api/v1/logs?traceId={FIXTURE_TRACE}")), 200),
        get("integrity edges", Needs::Read, q("/api/v1/integrity/edges"), 200),
        get("RED metrics", Needs::Read, q("/api/v1/metrics/red"), 200),
        get("status", Needs::Read, q("/api/v1/status"), 200),
        get("Jaeger services", Needs::Read, q("/api/services"), 200),
        get("Jaeger trace", Needs::Read, q(&format!("/api/traces/{FIXTURE_TRACE}")), 200),
        get("Jaeger api_v3 services", Needs::Read, q("/api/v3/services"), 200),
        get("Tempo search", Needs::Read, q("/api/search?q=%7B%7D"), 200),
        get("Tempo trace", Needs::Read, q(&format!("/api/v2/traces/{FIXTURE_TRACE}")), 200),
        get("Tempo tags", Needs::Read, q("/api/v2/search/tags"), 200),
        Endpoint {
            name: "admin flush",
            needs: Needs::Admin,
            http: Some((
                reqwest::Method::POST,
                q("/api/v1/admin/flush"),
                Some("application/json"),
                b"{}".to_vec(),
            )),
            ok: 200,
        },
        get("metrics", Needs::Metrics, q("/metrics"), 200),
        get("healthz", Needs::Open, q("/healthz"), 200),
        get("readyz", Needs::Open, q("/readyz"), 200),
        get("UI page", Needs::Open, q("/"), 200),
        get("UI script", Needs::Open, q("/static/app.js"), 200),
        get(
            "remote sampling",
            Needs::Open,
            format!("http://{}/sampling?service=x", server.remote_sampling.expect("on")),
            200,
        ),
    ]
}

/// What a call got: an HTTP status, or for gRPC 0 (OK) or 1000 + the gRPC code.
async fn call(server: &common::TestServer, ep: &Endpoint, auth: Option<&str>) -> u16 {
    match &ep.http {
        Some((method, url, content_type, body)) => {
            let mut req = reqwest::Client::new().request(method.clone(), url).body(body.clone());
            if let Some(ct) = content_type {
                req = req.header("content-type", *ct);
            }
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.header("x-scope-orgid", "acme").send().await.expect("request").status().as_u16()
        }
        None => {
            let body: serde_json::Value =
                serde_json::from_slice(&std::fs::read(common::fixture("otlp/trace.json")).expect("fixture"))
                    .expect("json");
            let export: ExportTraceServiceRequest = serde_json::from_value(body).expect("otlp json");
            let mut client =
                TraceServiceClient::connect(format!("http://{}", server.grpc)).await.expect("connect");
            let mut req = tonic::Request::new(export);
            if let Some(a) = auth {
                req.metadata_mut().insert("authorization", a.parse().expect("metadata"));
            }
            req.metadata_mut().insert("x-scope-orgid", "acme".parse().expect("metadata"));
            match client.export(req).await {
                Ok(_) => 0,
                Err(status) => 1000 + status.code() as u16,
            }
        }
    }
}

const UNAUTHENTICATED: u16 = 1000 + tonic::Code::Unauthenticated as u16;
const PERMISSION_DENIED: u16 = 1000 + tonic::Code::PermissionDenied as u16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_caller_as_its_scope_and_tenant_say() {
    // Tenants on; every request below names tenant `acme`.
    let (writer, w) = token("writer", &[Scope::Write], &["acme"]);
    let (reader, r) = token("reader", &[Scope::Read], &["acme"]);
    let (admin, a) = token("admin", &[Scope::Admin], &[]);
    let (scraper, m) = token("scraper", &[Scope::Metrics], &[]);
    let (other_writer, ow) = token("globex-writer", &[Scope::Write], &["globex"]);
    let (other_reader, or) = token("globex-reader", &[Scope::Read], &["globex"]);
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.auth.tokens = vec![w, r, a, m, ow, or];
    })
    .await;
    let bearer = |t: &str| format!("Bearer {t}");
    let mut wrong = Vec::new();
    for ep in endpoints(&server) {
        // The right token; one without the scope; one with the scope for another tenant
        // (admin and metrics are server-wide: their tokens name no tenant).
        let (right, lacking, elsewhere) = match ep.needs {
            Needs::Write => (Some(&writer), &reader, Some(&other_writer)),
            Needs::Read => (Some(&reader), &writer, Some(&other_reader)),
            Needs::Admin => (Some(&admin), &reader, None),
            Needs::Metrics => (Some(&scraper), &writer, None),
            Needs::Open => (None, &writer, None),
        };
        let grpc = ep.http.is_none();
        let (no, forbidden) = if grpc { (UNAUTHENTICATED, PERMISSION_DENIED) } else { (401, 403) };
        let open = ep.needs == Needs::Open;
        let mut cases = vec![
            ("no token", None, if open { ep.ok } else { no }),
            ("bad token", Some("Bearer strand_0000".to_owned()), if open { ep.ok } else { no }),
            ("not a bearer", Some(format!("Basic {writer}")), if open { ep.ok } else { no }),
            ("wrong scope", Some(bearer(lacking)), if open { ep.ok } else { forbidden }),
            ("right token", right.map(|t| bearer(t)), ep.ok),
        ];
        if let Some(t) = elsewhere {
            cases.push(("wrong tenant", Some(bearer(t)), forbidden));
        }
        for (case, auth, want) in cases {
            let got = call(&server, &ep, auth.as_deref()).await;
            if got != want {
                wrong.push(format!("{} with {case}: got {got}, want {want}", ep.name));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));

    // 0 cross-tenant reads: globex's reader, on its own tenant (its only one, so no header
    // needed), finds none of what acme's writer sent.
    let client = reqwest::Client::new();
    let read = |path: &str| client.get(server.query(path)).bearer_auth(&other_reader).send();
    for path in [
        format!("/api/v1/traces/{FIXTURE_TRACE}"),
        format!("/api/traces/{FIXTURE_TRACE}"),
        format!("/api/v2/traces/{FIXTURE_TRACE}"),
    ] {
        assert_eq!(read(&path).await.expect("get").status(), 404, "{path}");
    }
    for (path, list) in [
        ("/api/v1/services", "services"),
        ("/api/v1/search?since=1h", "traces"),
        ("/api/v1/dependencies", "dependencies"),
        ("/api/search?q=%7B%7D", "traces"),
    ] {
        let resp = read(path).await.expect("get");
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body[list], serde_json::json!([]), "{path}: {body}");
    }
    let logs: serde_json::Value = read(&format!("/api/v1/logs?traceId={FIXTURE_TRACE}"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(logs["resourceLogs"], serde_json::json!([]), "{logs}");
    // ... while acme's reader finds the fixture trace.
    let resp = client
        .get(server.query(&format!("/api/v1/traces/{FIXTURE_TRACE}")))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);

    // The admin token also reads /metrics; refusals are counted there, tokens never shown.
    let metrics = reqwest::Client::new()
        .get(server.query("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    let refused = |reason: &str| {
        common::metric_value(
            &text,
            &format!("strand_auth_failures_total{{listener=\"query\",reason=\"{reason}\"}}"),
        )
    };
    assert!(refused("missing_token").is_some_and(|n| n >= 14.0), "{text}");
    assert!(refused("scope").is_some_and(|n| n >= 14.0), "{text}");
    assert!(refused("tenant").is_some_and(|n| n >= 14.0), "{text}");
    assert!(!text.contains(&writer) && !text.contains(&reader), "no token in /metrics");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tenants_a_token_reads_everything_its_scope_allows() {
    let (writer, w) = token("writer", &[Scope::Write], &[]);
    let (reader, r) = token("reader", &[Scope::Read], &[]);
    let server = common::start(|c| c.auth.tokens = vec![w, r]).await;
    let body = std::fs::read(common::fixture("otlp/trace.json")).expect("fixture");
    let client = reqwest::Client::new();
    let sent = client
        .post(server.otlp_url())
        .bearer_auth(&writer)
        .header("content-type", "application/json")
        .header("x-scope-orgid", "ignored-without-tenants")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(sent.status(), 200);
    let got = client
        .get(server.query(&format!("/api/v1/traces/{FIXTURE_TRACE}")))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why_in_each_listeners_error_shape() {
    let (reader, r) = token("reader", &[Scope::Read], &[]);
    let server = common::start(|c| c.auth.tokens = vec![r]).await;
    let client = reqwest::Client::new();
    // The query API: {"error": …} and a WWW-Authenticate challenge.
    let resp = client.get(server.query("/api/v1/services")).send().await.expect("get");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"strand\"");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Authorization: Bearer")), "{body}");
    // OTLP/HTTP: a google.rpc.Status in the request's encoding, naming the missing scope.
    let resp = client
        .post(server.otlp_url())
        .bearer_auth(&reader)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["code"], 7, "{body}");
    assert_eq!(body["message"], "token `reader` lacks the `write` scope");
    let resp = client
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let status = <strand_ingest::otlp::http::RpcStatus as prost::Message>::decode(
        resp.bytes().await.expect("body").as_ref(),
    )
    .expect("a google.rpc.Status");
    assert_eq!(status.code, 16);
    // gRPC: UNAUTHENTICATED with the message.
    let mut grpc = TraceServiceClient::connect(format!("http://{}", server.grpc)).await.expect("connect");
    let err = grpc.export(ExportTraceServiceRequest::default()).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("OTEL_EXPORTER_OTLP_HEADERS"), "{err}");
    // A token is never written to the server's log (the refusals above are only counted).
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_admin_takes_no_request_a_foreign_page_could_send() {
    let server = common::start(|_| {}).await;
    let client = reqwest::Client::new();
    let flush = || client.post(server.query("/api/v1/admin/flush"));
    // A simple request (no content type, or text/plain as a form can send) is refused.
    let resp = flush().send().await.expect("post");
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("application/json")), "{body}");
    assert_eq!(flush().header("content-type", "text/plain").send().await.expect("post").status(), 403);
    // A foreign origin, or a browser's cross-site mark, is refused even with the type.
    let json = || flush().header("content-type", "application/json");
    let resp = json().header("origin", "http://evil.example").send().await.expect("post");
    assert_eq!(resp.status(), 403);
    let resp = json().header("sec-fetch-site", "cross-site").send().await.expect("post");
    assert_eq!(resp.status(), 403);
    // The server's own page (same origin) and a command-line client are served.
    let own = format!("http://{}", server.http);
    assert_eq!(json().header("origin", own).send().await.expect("post").status(), 200);
    assert_eq!(json().send().await.expect("post").status(), 200);
    // Reads need nothing without tokens; the query port's answers forbid framing and sniffing.
    let resp = client.get(server.query("/api/v1/services")).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    // A page whose domain was made to resolve to 127.0.0.1 names its own host: refused.
    let resp = client
        .get(server.query("/api/v1/services"))
        .header("host", "rebound.example")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("rebound.example")), "{body}");
    let resp =
        client.get(server.query("/api/v1/services")).header("host", "localhost").send().await.expect("get");
    assert_eq!(resp.status(), 200);
    // The gRPC port speaks HTTP/2 only: an HTTP/1.1 post (what a page can send without a
    // preflight) gets no answer.
    let http1 = client
        .post(format!("http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", server.grpc))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await;
    assert!(http1.is_err(), "HTTP/1.1 on the gRPC port: {http1:?}");
    // Zipkin takes no body without a declared type (a page could post one cross-origin).
    let zipkin = std::fs::read(common::fixture("zipkin/simple-db-p6.json")).expect("fixture");
    let resp = client
        .post(format!("http://{}/api/v2/spans", server.zipkin))
        .body(zipkin)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 415);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_origins_are_listed() {
    let allowed = "https://app.example.com";
    let server = common::start(|c| c.cors.allowed_origins = vec![allowed.into()]).await;
    let client = reqwest::Client::new();
    let preflight = |url: String, origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
    };
    let resp = preflight(server.otlp_url(), allowed).send().await.expect("preflight");
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], allowed);
    assert!(
        resp.headers()["access-control-allow-headers"].to_str().is_ok_and(|h| h.contains("content-type"))
    );
    assert!(resp.headers()["vary"].to_str().is_ok_and(|v| v.contains("Access-Control-Request-Headers")));
    let resp = preflight(server.otlp_url(), "https://other.example").send().await.expect("preflight");
    assert!(resp.headers().get("access-control-allow-origin").is_none(), "{:?}", resp.headers());
    assert_eq!(resp.headers()["vary"], "Origin", "answers differ by origin once origins are listed");
    let resp =
        client.get(server.query("/api/v1/services")).header("origin", allowed).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], allowed);
    server.stop().await;
    // Off by default: no CORS header for anyone.
    let server = common::start(|_| {}).await;
    let resp =
        client.get(server.query("/api/v1/services")).header("origin", allowed).send().await.expect("get");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}
