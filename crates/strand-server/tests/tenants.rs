//! Tenants (`X-Scope-OrgID`): two tenants send through every ingest protocol, and no read
//! API — search, trace by id, services, dependencies, logs, integrity, Jaeger, Tempo,
//! metrics — shows one tenant's data to the other; each tenant has its own directory and
//! its own limits (ingest rate, retention).

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use strand_core::units::HumanDuration;
use strand_integrity::scenario::{Shape, submission};
use strand_server::tenants::TenantLimits;

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

/// An OTLP/JSON export of one span of `service` in trace `trace`, and a log line under it.
fn export(service: &str, trace: &str) -> (Value, Value) {
    let now = now_ns();
    let resource = json!({ "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] });
    let callee = json!({ "attributes": [{ "key": "service.name", "value": { "stringValue": format!("{service}-db") } }] });
    // A client span and its server span in a second service: one dependency edge.
    let spans = json!({ "resourceSpans": [
        { "resource": resource, "scopeSpans": [{ "spans": [{
            "traceId": trace, "spanId": "0102030405060708", "name": format!("{service} work"), "kind": 3,
            "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
            "attributes": [{ "key": "patient.id", "value": { "stringValue": format!("{service}-patient") } }]
        }]}]},
        { "resource": callee, "scopeSpans": [{ "spans": [{
            "traceId": trace, "spanId": "1102030405060708", "parentSpanId": "0102030405060708",
            "name": "query", "kind": 2,
            "startTimeUnixNano": (now - 900_000).to_string(), "endTimeUnixNano": (now - 100_000).to_string()
        }]}]}
    ]});
    let logs = json!({ "resourceLogs": [{ "resource": resource, "scopeLogs": [{ "logRecords": [{
        "timeUnixNano": now.to_string(), "severityNumber": 9, "severityText": "INFO",
        "body": { "stringValue": format!("{service} handled it") },
        "traceId": trace, "spanId": "0102030405060708"
    }]}]}]});
    (spans, logs)
}

async fn post(url: String, tenant: Option<&str>, body: &Value) -> u16 {
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/json").json(body);
    if let Some(t) = tenant {
        req = req.header("x-scope-orgid", t);
    }
    req.send().await.expect("post").status().as_u16()
}

async fn get(server: &common::TestServer, tenant: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(server.query(path));
    if let Some(t) = tenant {
        req = req.header("x-scope-orgid", t);
    }
    let resp = req.send().await.expect("get");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

const ACME: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const GLOBEX: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_api_shows_one_tenants_data_to_another() {
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.integrity.settle_time = HumanDuration(Duration::from_secs(1));
        c.integrity.hop_window = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let otlp = |path: &str| format!("http://{}{path}", server.otlp_http);
    for (tenant, service, trace) in [("acme", "acme-billing", ACME), ("globex", "globex-shipping", GLOBEX)] {
        let (spans, logs) = export(service, trace);
        assert_eq!(post(otlp("/v1/traces"), Some(tenant), &spans).await, 200);
        assert_eq!(post(otlp("/v1/logs"), Some(tenant), &logs).await, 200);
    }
    // Each tenant also gets a submission whose queue hop lost its context (a broken chain
    // and service edges), with different trace ids.
    let start = now_ns() - 30_000_000_000;
    let mut broken = Vec::new();
    for (tenant, n) in [("acme", 0u64), ("globex", 10)] {
        let sub = submission(n, start, Shape::BreakQueue);
        for (_, batch) in &sub.batches {
            use prost::Message as _;
            let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                resource_spans: strand_otlp::to_resource_spans(batch),
            };
            let resp = reqwest::Client::new()
                .post(otlp("/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .header("x-scope-orgid", tenant)
                .body(req.encode_to_vec())
                .send()
                .await
                .expect("post");
            assert_eq!(resp.status(), 200);
        }
        broken.push(sub.traces[0].to_hex());
    }
    // Zipkin into acme only.
    let zipkin = std::fs::read(common::fixture("zipkin/simple-db-p6.json")).expect("fixture");
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v2/spans", server.zipkin))
        .header("content-type", "application/json")
        .header("x-scope-orgid", "acme")
        .body(zipkin)
        .send()
        .await
        .expect("zipkin");
    assert_eq!(resp.status(), 202);

    // A request without a tenant is refused, as Tempo, Loki and Mimir do.
    let (status, body) = get(&server, None, "/api/v1/services").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("X-Scope-OrgID")), "{body}");
    let (spans, _) = export("nobody", ACME);
    assert_eq!(post(otlp("/v1/traces"), None, &spans).await, 401);
    assert_eq!(post(otlp("/v1/traces"), Some("../etc"), &spans).await, 400);

    let mine_and_theirs = [
        ("acme", ACME, GLOBEX, "acme-billing", "globex-shipping", 0),
        ("globex", GLOBEX, ACME, "globex-shipping", "acme-billing", 1),
    ];
    for (tenant, own, other, own_service, other_service, i) in mine_and_theirs {
        let t = Some(tenant);
        // Trace by id: its own, never the other's, in every API.
        for path in ["/api/v1/traces/", "/api/traces/", "/api/v2/traces/", "/api/v3/traces/"] {
            assert_eq!(get(&server, t, &format!("{path}{own}")).await.0, 200, "{tenant} {path}");
            assert_eq!(
                get(&server, t, &format!("{path}{other}")).await.0,
                404,
                "{tenant} reads {other} at {path}"
            );
        }
        // Services and search.
        let (_, services) = get(&server, t, "/api/v1/services").await;
        let text = services.to_string();
        assert!(text.contains(own_service) && !text.contains(other_service), "{tenant}: {text}");
        let (_, jaeger) = get(&server, t, "/api/services").await;
        assert!(!jaeger.to_string().contains(other_service), "{tenant}: {jaeger}");
        let (_, found) = get(&server, t, "/api/v1/search?since=1h&limit=100").await;
        let found = found.to_string();
        assert!(found.contains(own) && !found.contains(other), "{tenant} search: {found}");
        let (_, tempo) = get(&server, t, "/api/search?q=%7B%7D&limit=100").await;
        assert!(tempo.to_string().contains(own) && !tempo.to_string().contains(other), "{tenant}: {tempo}");
        let q = format!("/api/v1/search?since=1h&attr=patient.id={other_service}-patient");
        let (_, by_attr) = get(&server, t, &q).await;
        assert_eq!(by_attr["traces"], json!([]), "{tenant} finds the other's attribute value");
        // Logs by trace id and by text.
        let (_, logs) = get(&server, t, &format!("/api/v1/logs?traceId={own}")).await;
        assert!(logs.to_string().contains(&format!("{own_service} handled it")), "{tenant}: {logs}");
        let (_, logs) = get(&server, t, &format!("/api/v1/logs?traceId={other}")).await;
        assert!(!logs.to_string().contains("handled it"), "{tenant} reads the other's logs: {logs}");
        let (status, logs) = get(&server, t, "/api/v1/logs?q=handled").await;
        assert_eq!(status, 200, "{logs}");
        let logs = logs.to_string();
        assert!(logs.contains(own_service) && !logs.contains(other_service), "{tenant}: {logs}");
        // Dependencies: each tenant's own edge, not the other's.
        let (_, deps) = get(&server, t, "/api/v1/dependencies").await;
        let deps = deps.to_string();
        assert!(deps.contains(&format!("{own_service}-db")), "{tenant}: {deps}");
        assert!(!deps.contains(other_service), "{tenant} sees the other's edge: {deps}");
        // Integrity: each tenant finds its own broken chain and not the other's.
        let own_broken = broken[i].clone();
        let other_broken = broken[1 - i].clone();
        let page = common::eventually("the broken chain to be found", || {
            let (server, own_broken) = (&server, own_broken.clone());
            async move {
                let (_, page) = get(server, t, "/api/v1/search?integrity=broken&since=1h&limit=50").await;
                page.to_string().contains(&own_broken).then_some(page)
            }
        })
        .await;
        assert!(!page.to_string().contains(&other_broken), "{tenant} sees the other's broken chain: {page}");
        let (_, edges) = get(&server, t, "/api/v1/integrity/edges").await;
        assert!(edges.to_string().contains("notify-service"), "{tenant}: {edges}");
    }
    // Reading a tenant that never wrote finds nothing and creates nothing.
    let (status, services) = get(&server, Some("nobody-yet"), "/api/v1/services").await;
    assert_eq!((status, &services["services"]), (200, &json!([])), "{services}");
    assert_eq!(get(&server, Some("nobody-yet"), &format!("/api/v1/traces/{ACME}")).await.0, 404);
    // Nor does a write to a path no receiver has, one that stores nothing (Zipkin v1: 415)
    // or a method that stores nothing; none of them is stored for others to read.
    let (spans, _) = export("nobody", ACME);
    assert_eq!(post(otlp("/v1/nothing"), Some("nobody-yet"), &spans).await, 404);
    let v1 = format!("http://{}/api/v1/spans", server.zipkin);
    assert_eq!(post(v1, Some("nobody-yet"), &json!([])).await, 415);
    let get_traces = reqwest::Client::new()
        .get(otlp("/v1/traces"))
        .header("x-scope-orgid", "nobody-yet")
        .send()
        .await
        .expect("get");
    assert_eq!(get_traces.status(), 405);
    let data = server.dir.path().join("data");
    assert!(!data.join("tenants/nobody-yet").exists(), "a read or a bad path made a tenant directory");
    // Each tenant has its own directory; /metrics labels series by tenant.
    assert!(data.join("tenants/acme/wal").is_dir() && data.join("tenants/globex/wal").is_dir());
    let metrics = reqwest::get(server.query("/metrics")).await.expect("metrics").text().await.expect("text");
    for tenant in ["acme", "globex"] {
        let series =
            format!("strand_receiver_spans_accepted_total{{tenant=\"{tenant}\",protocol=\"otlp_http\"}}");
        assert!(common::metric_value(&metrics, &series).is_some_and(|n| n >= 1.0), "{series} in\n{metrics}");
    }
    // The tenant list: every open tenant (no tokens here).
    let (_, list) = get(&server, None, "/api/v1/tenants").await;
    assert_eq!(list["multitenancy"], true);
    let tenants: Vec<&str> =
        list["tenants"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    assert!(tenants.contains(&"acme") && tenants.contains(&"globex"), "{list}");
    assert!(!tenants.contains(&"nobody-yet"), "{list}");
    // After a restart the tenants' data is where it was, and still apart.
    let dir = server.stop().await;
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.data_dir = dir.path().join("data");
    })
    .await;
    assert_eq!(get(&server, Some("acme"), &format!("/api/v1/traces/{ACME}")).await.0, 200);
    assert_eq!(get(&server, Some("acme"), &format!("/api/v1/traces/{GLOBEX}")).await.0, 404);
    assert_eq!(get(&server, Some("globex"), &format!("/api/v1/traces/{GLOBEX}")).await.0, 200);
    server.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_ingest_rate_gets_429_and_the_others_do_not() {
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.multitenancy.limits = vec![TenantLimits {
            tenant: "small".into(),
            ingest_spans_per_second: Some(2.0),
            ingest_bytes_per_second: None,
            retention: None,
            max_disk_size: None,
        }];
    })
    .await;
    let send = |tenant: &'static str, (seed, spans): (u8, u8)| send_batch(&server, tenant, seed, spans);
    let batch = |seed: u8, spans: u8| (seed, spans);
    // A batch over the second's burst passes on a full bucket and leaves it 6 in debt: the
    // next one must wait about (2 + 6) / 2 = 4 s, and Retry-After says so.
    assert_eq!(send("small", batch(1, 8)).await.status(), 200);
    let over = send("small", batch(2, 8)).await;
    assert_eq!(over.status(), 429);
    let wait: u64 =
        over.headers()["retry-after"].to_str().ok().and_then(|s| s.parse().ok()).expect("seconds");
    assert!((3..=4).contains(&wait), "Retry-After {wait}");
    // A gRPC client is told the same wait in the status's RetryInfo.
    let mut grpc =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            format!("http://{}", server.grpc),
        )
        .await
        .expect("connect");
    let mut req =
        tonic::Request::new(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans: strand_otlp::to_resource_spans(&strand_store::testdata::batch(3, 4)),
        });
    req.metadata_mut().insert("x-scope-orgid", "small".parse().expect("metadata"));
    let err = grpc.export(req).await.expect_err("over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("tenant `small` is over its ingest limit of 2 spans"), "{err}");
    assert!(!err.details().is_empty(), "a RetryInfo rides along");
    assert!(err.message().contains("; retry in "), "{err}");
    // Another tenant, without limits, is not held back.
    for seed in 3..8 {
        assert_eq!(send("big", batch(seed, 8)).await.status(), 200);
    }
    let metrics = reqwest::get(server.query("/metrics")).await.expect("metrics").text().await.expect("text");
    assert_eq!(
        common::metric_value(&metrics, "strand_tenant_ingest_refused_total{tenant=\"small\"}"),
        Some(12.0),
        "{metrics}"
    );
    assert_eq!(
        common::metric_value(&metrics, "strand_tenant_ingest_refused_total{tenant=\"big\"}"),
        Some(0.0)
    );
    // The bucket refills: a few seconds later the small tenant may send again.
    common::eventually("the small tenant's bucket to refill", || {
        let send = &send;
        async move { (send("small", batch(9, 8)).await.status() == 200).then_some(()) }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_a_short_retention_loses_its_old_blocks_and_the_others_keep_theirs() {
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.storage.maintenance_interval = HumanDuration(Duration::from_millis(200));
        c.multitenancy.limits = vec![TenantLimits {
            tenant: "brief".into(),
            ingest_spans_per_second: None,
            ingest_bytes_per_second: None,
            retention: Some(HumanDuration(Duration::from_secs(1))),
            max_disk_size: None,
        }];
    })
    .await;
    for tenant in ["brief", "lasting"] {
        let (spans, _) = export(&format!("{tenant}-svc"), ACME);
        assert_eq!(post(server.otlp_url(), Some(tenant), &spans).await, 200);
    }
    server.flush().await;
    common::eventually("the brief tenant's trace to expire", || {
        let server = &server;
        async move { (get(server, Some("brief"), &format!("/api/v1/traces/{ACME}")).await.0 == 404).then_some(()) }
    })
    .await;
    assert_eq!(get(&server, Some("lasting"), &format!("/api/v1/traces/{ACME}")).await.0, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jaeger_agents_udp_spans_go_to_the_configured_tenant() {
    const PY_AGENT: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-agent.thrift");
    const AGENT_TRACE: &str = "5eed0000000000000000000000000010";
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.jaeger.agent_tenant = "edge".into();
    })
    .await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.send_to(PY_AGENT, server.jaeger_agent).await.expect("send datagram");
    let path = format!("/api/v1/traces/{AGENT_TRACE}");
    common::eventually("the agent's trace in tenant edge", || {
        let (server, path) = (&server, path.clone());
        async move { (get(server, Some("edge"), &path).await.0 == 200).then_some(()) }
    })
    .await;
    assert_eq!(get(&server, Some("single-tenant"), &path).await.0, 404);
    assert!(server.dir.path().join("data/tenants/edge/wal").is_dir());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_unwritten_data_is_bounded_together() {
    // Each store would take up to 1 MiB of unwritten data (and cuts its head at half of it);
    // three tenants together must not hold more than 1 MiB either.
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.storage.max_unwritten_size = "1MiB".parse().expect("size");
    })
    .await;
    let unwritten = || async {
        let text = reqwest::get(server.query("/metrics")).await.expect("metrics").text().await.expect("text");
        let total: f64 = ["t1", "t2", "t3"]
            .iter()
            .filter_map(|t| {
                common::metric_value(&text, &format!("strand_store_unwritten_bytes{{tenant=\"{t}\"}}"))
            })
            .sum();
        (total, text)
    };
    // Round-robin writes: without the shared bound the three heads would reach 1.5 MiB
    // together before each cut its own at 512 KiB.
    let mut most = 0.0f64;
    for seed in 0..80u8 {
        for tenant in ["t1", "t2", "t3"] {
            common::eventually("a write to be taken", || async {
                (send_batch(&server, tenant, seed, 200).await.status() == 200).then_some(())
            })
            .await;
            most = most.max(unwritten().await.0);
        }
    }
    let limit = 1024.0 * 1024.0;
    assert!(most > 0.6 * limit, "the test loaded too little to matter: {most} bytes at most");
    assert!(most <= limit + 128.0 * 1024.0, "{most} bytes unwritten together, over the 1 MiB bound");
    let (_, metrics) = unwritten().await;
    assert!(metrics.contains("strand_tenants_writes_refused_memory_total"), "{metrics}");
    server.stop().await;
}

/// Posts `testdata::batch(seed, spans)` as OTLP/HTTP protobuf to `tenant`.
async fn send_batch(server: &common::TestServer, tenant: &str, seed: u8, spans: u8) -> reqwest::Response {
    use prost::Message as _;
    let body = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: strand_otlp::to_resource_spans(&strand_store::testdata::batch(seed, spans)),
    }
    .encode_to_vec();
    reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .header("x-scope-orgid", tenant)
        .body(body)
        .send()
        .await
        .expect("post")
}
