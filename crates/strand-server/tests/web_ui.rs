//! The web UI in a real browser: a server loaded with the UI fixtures, driven by
//! `tests/browser/ui.test.mjs` (headless Chromium through playwright-core), and the UI's
//! trace model tested under Node (`tests/browser/model.test.mjs`).
//!
//! Node, `tests/browser/node_modules` and Chromium come from `scripts/test.sh`. Without them
//! the test fails when `INTEROP_TESTS_REQUIRED` or `CI` is set and is skipped (loudly)
//! otherwise.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Moves every time in an OTLP/JSON request by `offset` nanoseconds.
fn shift_times(request: &mut Value, offset: u64) {
    let shift = |v: &mut Value| {
        let n: u64 = v.as_str().and_then(|s| s.parse().ok()).expect("time as a decimal string");
        *v = Value::String((n + offset).to_string());
    };
    for rs in request["resourceSpans"].as_array_mut().expect("resourceSpans") {
        for ss in rs["scopeSpans"].as_array_mut().expect("scopeSpans") {
            for span in ss["spans"].as_array_mut().expect("spans") {
                shift(&mut span["startTimeUnixNano"]);
                shift(&mut span["endTimeUnixNano"]);
                for event in span.get_mut("events").and_then(Value::as_array_mut).into_iter().flatten() {
                    shift(&mut event["timeUnixNano"]);
                }
            }
        }
    }
}

#[test]
fn ui_trace_model_unit_tests() {
    if common::node_with_playwright().is_none() {
        return;
    }
    common::run_node(&["--test", "model.test.mjs"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_headless_chromium() {
    if common::node_with_playwright().is_none() {
        return;
    }
    let server = common::start(|_| {}).await;
    // The UI fixtures ten minutes ago, a minute apart, so "the last hour" finds them.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64;
    let base = now - Duration::from_secs(600).as_nanos() as u64;
    for (i, name) in ["patient-report.json", "patient-report-slow.json", "xss.json"].iter().enumerate() {
        let text = std::fs::read_to_string(common::fixture(&format!("ui/{name}"))).expect("fixture");
        let mut request: Value = serde_json::from_str(&text).expect("fixture json");
        shift_times(&mut request, base + i as u64 * 60_000_000_000);
        server.export(&request).await;
    }
    // The official OTLP example, at its own (2018) time: opened by id.
    server.export_json(std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")).await;

    let url = format!("http://{}", server.http);
    let artifacts = common::repo().join("test-artifacts/ui");
    let envs = [("STRAND_URL", url), ("STRAND_UI_ARTIFACTS", artifacts.display().to_string())];
    // The browser runs in a child process; the server keeps serving on this runtime.
    tokio::task::spawn_blocking(move || {
        common::run_node(&["--test", "--test-concurrency=1", "ui.test.mjs"], &envs)
    })
    .await
    .expect("browser tests");
    server.stop().await;
}

#[tokio::test]
async fn ui_files_are_served_with_types_etags_and_a_strict_policy() {
    let server = common::start(|_| {}).await;
    let client = reqwest::Client::new();
    for page in
        ["/", "/search?service=a", "/trace/0af7651916cd43dd8448eb211c80319c", "/dependencies", "/compare"]
    {
        let resp = client.get(server.query(page)).send().await.expect("get");
        assert_eq!(resp.status(), 200, "{page}");
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8", "{page}");
        let csp = resp.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(resp.text().await.expect("body").contains(r#"<script type="module" src="/static/app.js">"#));
    }
    let js = client.get(server.query("/static/trace.js")).send().await.expect("get");
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    let etag = js.headers()["etag"].clone();
    assert!(js.text().await.expect("body").contains("class TraceView"));
    let again =
        client.get(server.query("/static/trace.js")).header("if-none-match", etag).send().await.expect("get");
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.expect("body").is_empty());

    // Unknown files and paths: 404; a browser gets the page that says so, an API client text.
    let missing = client.get(server.query("/static/../Cargo.toml")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    let page =
        client.get(server.query("/no/such/page")).header("accept", "text/html").send().await.expect("get");
    assert_eq!(page.status(), 404);
    assert!(page.text().await.expect("body").contains("/static/app.js"));
    let api =
        client.get(server.query("/api/v1/nope")).header("accept", "text/html").send().await.expect("get");
    assert_eq!(api.status(), 404);
    assert_eq!(api.text().await.expect("body"), "no such path: /api/v1/nope");
    // The APIs beside the UI are unchanged.
    let health = client.get(server.query("/healthz")).send().await.expect("get");
    assert_eq!(health.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_says_when_a_trace_was_cut_to_the_span_cap() {
    if common::node_with_playwright().is_none() {
        return;
    }
    let server = common::start(|c| c.query.max_trace_spans = 2).await;
    server.export_batch(&strand_store::testdata::batch(1, 5)).await;
    let envs = [
        ("STRAND_URL", format!("http://{}", server.http)),
        ("STRAND_TRACE", strand_store::testdata::trace_id(1).to_hex()),
    ];
    tokio::task::spawn_blocking(move || common::run_node(&["--test", "truncated.test.mjs"], &envs))
        .await
        .expect("browser test");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_asks_for_a_token_when_the_server_requires_one() {
    if common::node_with_playwright().is_none() {
        return;
    }
    let entry = |name: &str, scope| {
        let (token, sha256) = strand_server::auth::new_token().expect("token");
        (
            token,
            strand_server::auth::TokenConfig {
                name: name.into(),
                sha256,
                scopes: vec![scope],
                tenants: Vec::new(),
            },
        )
    };
    let (reader, r) = entry("browser", strand_server::auth::Scope::Read);
    let (writer, w) = entry("sdk", strand_server::auth::Scope::Write);
    let server = common::start(|c| c.auth.tokens = vec![r, w]).await;
    export_as(&server, &writer, None, &strand_store::testdata::batch(1, 5)).await;
    let envs = [
        ("STRAND_URL", format!("http://{}", server.http)),
        ("STRAND_TOKEN", reader),
        ("STRAND_TRACE", strand_store::testdata::trace_id(1).to_hex()),
    ];
    tokio::task::spawn_blocking(move || common::run_node(&["--test", "token.test.mjs"], &envs))
        .await
        .expect("browser test");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_picks_among_the_tenants_a_token_may_read() {
    if common::node_with_playwright().is_none() {
        return;
    }
    let (reader, sha256) = strand_server::auth::new_token().expect("token");
    let server = common::start(|c| {
        c.multitenancy.enabled = true;
        c.auth.tokens = vec![strand_server::auth::TokenConfig {
            name: "browser".into(),
            sha256,
            scopes: vec![strand_server::auth::Scope::Read, strand_server::auth::Scope::Write],
            tenants: vec!["acme".into(), "globex".into()],
        }];
    })
    .await;
    for (tenant, seed) in [("acme", 1), ("globex", 2)] {
        export_as(&server, &reader, Some(tenant), &strand_store::testdata::batch(seed, 3)).await;
    }
    let envs = [
        ("STRAND_URL", format!("http://{}", server.http)),
        ("STRAND_TOKEN", reader),
        ("STRAND_ACME_TRACE", strand_store::testdata::trace_id(1).to_hex()),
        ("STRAND_GLOBEX_TRACE", strand_store::testdata::trace_id(2).to_hex()),
    ];
    tokio::task::spawn_blocking(move || common::run_node(&["--test", "tenants.test.mjs"], &envs))
        .await
        .expect("browser test");
    server.stop().await;
}

/// Exports a batch as OTLP/HTTP protobuf with a token (and a tenant); asserts it was taken.
async fn export_as(
    server: &common::TestServer,
    token: &str,
    tenant: Option<&str>,
    batch: &strand_core::SpanBatch,
) {
    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: strand_otlp::to_resource_spans(batch),
    };
    let mut req = reqwest::Client::new()
        .post(server.otlp_url())
        .bearer_auth(token)
        .header("content-type", "application/x-protobuf");
    if let Some(t) = tenant {
        req = req.header("x-scope-orgid", t);
    }
    let resp = req.body(prost::Message::encode_to_vec(&request)).send().await.expect("post");
    assert_eq!(resp.status(), 200);
}
