//! The demo end to end: a real `strand` (in-process, free ports), `nats-server` and the five
//! services as processes (`epro run` with the README's arguments: 20 reports, every fifth
//! failing in data-service). Each trace is read back through strand's API and checked whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

/// One span as the API returns it, with its service.
#[derive(Debug, Clone)]
struct S {
    service: String,
    name: String,
    id: String,
    parent: String,
    kind: u64,
    start: u128,
    end: u128,
    error: bool,
    message: String,
    attrs: BTreeMap<String, String>,
}

const SERVER: u64 = 2;
const CLIENT: u64 = 3;
const PRODUCER: u64 = 4;
const CONSUMER: u64 = 5;
const INTERNAL: u64 = 1;

/// The `service.name` of an OTLP/JSON resource (empty when it has none).
fn service_of(resource: &Value) -> String {
    resource["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
        .and_then(|kv| kv["value"]["stringValue"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn spans(trace: &Value) -> Vec<S> {
    let mut out = Vec::new();
    for rs in trace["resourceSpans"].as_array().expect("resourceSpans") {
        let service = service_of(&rs["resource"]);
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            for sp in ss["spans"].as_array().expect("spans") {
                let num = |k: &str| sp[k].as_str().and_then(|s| s.parse::<u128>().ok()).unwrap_or(0);
                let attrs = sp["attributes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|kv| {
                                let v = &kv["value"];
                                let text =
                                    v["stringValue"].as_str().map(str::to_owned).unwrap_or_else(|| {
                                        v.as_object()
                                            .and_then(|o| o.values().next())
                                            .map(|x| x.to_string())
                                            .unwrap_or_default()
                                    });
                                (
                                    kv["key"].as_str().unwrap_or_default().to_owned(),
                                    text.trim_matches('"').to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(S {
                    service: service.clone(),
                    name: sp["name"].as_str().unwrap_or_default().to_owned(),
                    id: sp["spanId"].as_str().unwrap_or_default().to_owned(),
                    parent: sp["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                    kind: sp["kind"].as_u64().unwrap_or(0),
                    start: num("startTimeUnixNano"),
                    end: num("endTimeUnixNano"),
                    error: sp["status"]["code"].as_u64() == Some(2),
                    message: sp["status"]["message"].as_str().unwrap_or_default().to_owned(),
                    attrs,
                });
            }
        }
    }
    out
}

fn one<'a>(spans: &'a [S], service: &str, name: &str, kind: u64) -> &'a S {
    let found: Vec<_> =
        spans.iter().filter(|s| s.service == service && s.name == name && s.kind == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "{service} {name} (kind {kind}) in {:#?}",
        spans.iter().map(|s| (&s.service, &s.name, s.kind)).collect::<Vec<_>>()
    );
    found[0]
}

fn child_of(child: &S, parent: &S) {
    assert_eq!(
        child.parent, parent.id,
        "{} {} should be a child of {} {}",
        child.service, child.name, parent.service, parent.name
    );
}

fn nats_installed() -> bool {
    let found =
        ["/usr/sbin/nats-server", "/usr/bin/nats-server"].iter().any(|p| std::path::Path::new(p).exists());
    if !found {
        let required =
            std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(!required, "nats-server missing: run scripts/test.sh, which installs it");
        eprintln!("SKIPPED: nats-server missing; run scripts/test.sh to install it");
    }
    found
}

async fn start_strand(
    dir: &std::path::Path,
) -> (strand_server::BoundAddrs, tokio::sync::oneshot::Sender<()>) {
    let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut cfg =
        strand_server::Config { data_dir: dir.join("strand"), http_listen: local, ..Default::default() };
    cfg.otlp.grpc_listen = local;
    cfg.otlp.http_listen = local;
    cfg.jaeger.thrift_http_listen = local;
    cfg.jaeger.agent_listen = local;
    cfg.jaeger.agent_binary_listen = local;
    cfg.zipkin.listen = local;
    cfg.remote_sampling.listen = local;
    // Chain integrity settles traces after a second of quiet, not 30 s.
    cfg.integrity.settle_time = strand_core_duration(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(strand_server::run(
        cfg,
        async move {
            let _ = stop_rx.await;
        },
        move |a| {
            let _ = addr_tx.send(a.clone());
        },
    ));
    (addr_rx.await.expect("strand started"), stop_tx)
}

fn strand_core_duration(secs: u64) -> strand_server::config::HumanDuration {
    strand_server::config::HumanDuration(std::time::Duration::from_secs(secs))
}

/// The arguments of the README's `nth` `cargo run -p epro-demo -- run …` command (section
/// "The patient-report demo"), with its strand URL replaced by `strand`.
fn readme_demo_args(nth: usize, strand: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let section = &readme[readme.find("## The patient-report demo").expect("demo section")..];
    let line = section
        .lines()
        .filter_map(|l| l.strip_prefix("cargo run -p epro-demo -- "))
        .nth(nth)
        .expect("the README's epro command");
    let line = line.split(" #").next().unwrap_or(line);
    let mut args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let at = args.iter().position(|a| a == "--strand").expect("--strand") + 1;
    args[at] = strand.to_owned();
    args
}

/// Runs `epro` with `args` and `--exit-after-load` in `dir`; returns its JSON lines (one per
/// submission).
async fn run_epro(args: Vec<String>, dir: std::path::PathBuf) -> Vec<Value> {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_epro"))
            .args(&args)
            .arg("--exit-after-load")
            .arg("--dir")
            .arg(&dir)
            .output()
            .expect("run the demo")
    })
    .await
    .expect("demo task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "epro run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let at = args.iter().position(|a| a == name).unwrap_or_else(|| panic!("{name} in {args:?}"));
    &args[at + 1]
}

/// The README's demo command, run as printed against a real strand: one whole trace per
/// report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_whole_trace_per_report_across_five_services() {
    if !nats_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, stop) = start_strand(dir.path()).await;
    let grpc = addrs.otlp_grpc.expect("otlp grpc");
    let api = format!("http://{}", addrs.http);

    // The README's command, as printed (with this strand's port), stopping after its load.
    let args = readme_demo_args(0, &format!("http://{grpc}"));
    let load: usize = flag(&args, "--load").parse().expect("--load N");
    let fail_every: usize = flag(&args, "--fail-every").parse().expect("--fail-every K");
    let demo_dir = dir.path().join("demo");
    let results = run_epro(args, demo_dir.clone()).await;
    assert_eq!(results.len(), load);
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().expect("status")).collect();
    let expected: Vec<u64> = (1..=load).map(|i| if i % fail_every == 0 { 500 } else { 202 }).collect();
    assert_eq!(statuses, expected, "every {fail_every}th report fails");

    let client = reqwest::Client::new();
    let fetch = |id: String| {
        let client = client.clone();
        let api = api.clone();
        async move {
            // `epro run --exit-after-load` returns once every notification went out and every
            // service stopped, flushing its spans (strand answered each export once it was
            // durable): the trace is whole now.
            let r = client.get(format!("{api}/api/v1/traces/{id}")).send().await.expect("get");
            assert_eq!(r.status(), 200, "trace {id}");
            r.json::<Value>().await.expect("json")
        }
    };

    let logs: BTreeMap<&str, String> =
        ["gateway", "user-service", "epro-service", "data-service", "notify-service"]
            .into_iter()
            .map(|s| (s, std::fs::read_to_string(demo_dir.join(format!("logs/{s}.log"))).expect("log file")))
            .collect();

    for (result, status) in results.iter().zip(&statuses) {
        let trace_id = result["trace_id"].as_str().expect("trace id").to_owned();
        let trace = fetch(trace_id.clone()).await;
        let s = spans(&trace);
        let gw = one(&s, "gateway", "POST /reports", SERVER);
        assert!(gw.parent.is_empty(), "the gateway span is the root");
        let user_call = one(&s, "gateway", "GET", CLIENT);
        child_of(user_call, gw);
        child_of(one(&s, "user-service", "GET /patients/{id}", SERVER), user_call);
        let submit_call = one(&s, "gateway", "epro.Reports/Submit", CLIENT);
        child_of(submit_call, gw);
        let submit = one(&s, "epro-service", "epro.Reports/Submit", SERVER);
        child_of(submit, submit_call);
        let store_call = one(&s, "epro-service", "epro.Data/Store", CLIENT);
        child_of(store_call, submit);
        let store = one(&s, "data-service", "epro.Data/Store", SERVER);
        child_of(store, store_call);
        assert_eq!(store.attrs.get("rpc.system").map(String::as_str), Some("grpc"));

        if *status == 202 {
            let services: BTreeSet<&str> = s.iter().map(|x| x.service.as_str()).collect();
            assert_eq!(
                services,
                BTreeSet::from(["gateway", "user-service", "epro-service", "data-service", "notify-service"])
            );
            assert!(s.iter().all(|x| !x.error), "no error in a successful trace");
            for db in ["INSERT reports", "SELECT reports"] {
                let db = one(&s, "data-service", db, CLIENT);
                child_of(db, store);
                assert_eq!(db.attrs.get("db.system.name").map(String::as_str), Some("sqlite"));
            }
            let publish = one(&s, "data-service", "send patient-report.submitted", PRODUCER);
            child_of(publish, store);
            assert_eq!(publish.attrs.get("messaging.system").map(String::as_str), Some("nats"));
            let consume = one(&s, "notify-service", "process patient-report.submitted", CONSUMER);
            child_of(consume, publish);
            let sms = one(&s, "notify-service", "send-sms", INTERNAL);
            child_of(sms, consume);
            child_of(one(&s, "notify-service", "POST", CLIENT), sms);
            assert!(sms.end > gw.end, "send-sms ends after the HTTP request returned");
            assert!(sms.start >= consume.start);
            let mut written = Vec::new();
            for (service, text) in &logs {
                let lines: Vec<Value> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|l| l["trace_id"] == trace_id.as_str())
                    .collect();
                assert!(!lines.is_empty(), "{service} logged no line with trace id {trace_id}");
                for l in lines {
                    let field = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                    written.push((service.to_string(), field("span_id"), field("message")));
                }
            }
            // The same lines went to strand as OTLP log records: found by the trace id,
            // each under the span that wrote it.
            let stored = client
                .get(format!("{api}/api/v1/logs?traceId={trace_id}"))
                .send()
                .await
                .expect("get logs")
                .json::<Value>()
                .await
                .expect("json");
            let span_ids: BTreeSet<&str> = s.iter().map(|x| x.id.as_str()).collect();
            let mut found = Vec::new();
            for rl in stored["resourceLogs"].as_array().expect("resourceLogs") {
                let service = service_of(&rl["resource"]);
                for sl in rl["scopeLogs"].as_array().expect("scopeLogs") {
                    for r in sl["logRecords"].as_array().expect("logRecords") {
                        let span = r["spanId"]
                            .as_str()
                            .expect("every record of the request has a span")
                            .to_lowercase();
                        assert!(span_ids.contains(span.as_str()), "record {r} names a span of its trace");
                        let body = r["body"]["stringValue"].as_str().expect("text body").to_owned();
                        found.push((service.clone(), span, body));
                    }
                }
            }
            written.sort();
            found.sort();
            assert_eq!(found, written, "the request's log lines are stored under their spans");
        } else {
            assert!(gw.error, "the failed submission's gateway span is an error");
            let db = one(&s, "data-service", "INSERT reports_archive", CLIENT);
            child_of(db, store);
            assert!(db.error && db.message.contains("no such table: reports_archive"), "{db:?}");
            assert!(store.error && submit.error && submit_call.error);
            assert!(!s.iter().any(|x| x.kind == PRODUCER), "nothing is published for a failed report");
            let failed = logs["data-service"]
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|l| l["trace_id"] == trace_id.as_str() && l["level"] == "ERROR");
            assert!(failed, "data-service logged the failure with its trace id");
        }
    }
    let _ = stop.send(());
}

/// The README's `--break` command: each boundary that loses its context is found on its
/// edge, and the halves name each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_boundary_is_found_on_its_edge() {
    if !nats_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, stop) = start_strand(dir.path()).await;
    let grpc = addrs.otlp_grpc.expect("otlp grpc");
    let api = format!("http://{}", addrs.http);
    let args = readme_demo_args(1, &format!("http://{grpc}"));
    assert!(args.iter().filter(|a| *a == "--break").count() == 3, "{args:?}");
    let results = run_epro(args, dir.path().join("demo")).await;
    assert!(!results.is_empty());

    let client = reqwest::Client::new();
    let get = |path: String| {
        let (client, api) = (client.clone(), api.clone());
        async move {
            client.get(format!("{api}{path}")).send().await.expect("get").json::<Value>().await.expect("json")
        }
    };
    // Every trace has settled (a second of quiet) once the search finds each kind.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = get("/api/v1/search?integrity=broken&limit=100".into()).await;
        let kinds: BTreeSet<String> = page["traces"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["integrity"].as_array().cloned().unwrap_or_default())
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        let want =
            ["client_without_server", "producer_without_consumer", "consumer_new_root", "unrooted_work"];
        if want.iter().all(|k| kinds.contains(*k)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "kinds found so far: {kinds:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let finding = |trace: &Value, kind: &str| -> Value {
        trace["integrity"]["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {}", trace["integrity"]))
    };
    for r in &results {
        // The gateway's trace: epro-service's gRPC call lost its context.
        let gateway = get(format!("/api/v1/traces/{}", r["trace_id"].as_str().expect("trace id"))).await;
        let f = finding(&gateway, "client_without_server");
        assert_eq!(f["services"], serde_json::json!(["epro-service", "data-service"]), "{f}");
        // The other half: data-service's own trace, which also lost the queue hop ...
        let data_id = f["relatedTraceId"].as_str().expect("the data-service trace").to_owned();
        let data = get(format!("/api/v1/traces/{data_id}")).await;
        assert_eq!(finding(&data, "client_without_server")["relatedTraceId"], r["trace_id"]);
        let hop = finding(&data, "producer_without_consumer");
        assert_eq!(hop["services"], serde_json::json!(["data-service", "notify-service"]), "{hop}");
        // ... to notify-service's trace, whose SMS task was spawned without it.
        let notify_id = hop["relatedTraceId"].as_str().expect("the notify-service trace").to_owned();
        let notify = get(format!("/api/v1/traces/{notify_id}")).await;
        let back = finding(&notify, "consumer_new_root");
        assert_eq!(back["relatedTraceId"], data_id.as_str());
        assert_eq!(back["services"], serde_json::json!(["data-service", "notify-service"]));
    }
    // The SMS tasks: traces of their own in notify-service, their requests among the
    // candidates (one submission at a time: exactly one request in progress).
    let tasks = get("/api/v1/search?integrity=unrooted_work&limit=100".into()).await;
    let tasks = tasks["traces"].as_array().expect("traces");
    assert_eq!(tasks.len(), results.len(), "one task trace per submission");
    for t in tasks {
        let trace = get(format!("/api/v1/traces/{}", t["traceId"].as_str().expect("id"))).await;
        let f = finding(&trace, "unrooted_work");
        assert_eq!(f["services"], serde_json::json!(["", "notify-service"]));
        let candidate = f["relatedTraceId"].as_str().expect("a candidate request").to_owned();
        let request = get(format!("/api/v1/traces/{candidate}")).await;
        assert!(
            request["resourceSpans"].to_string().contains("process patient-report.submitted"),
            "the candidate is a notify-service request"
        );
    }
    // Edge health counts every lost hop.
    let edges = get("/api/v1/integrity/edges".into()).await;
    let lost = |caller: &str, callee: &str| -> u64 {
        edges["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["caller"] == caller && e["callee"] == callee)
            .map(|e| e["lost"].as_u64().unwrap_or(0))
            .sum()
    };
    let n = results.len() as u64;
    assert_eq!(
        (lost("epro-service", "data-service"), lost("data-service", "notify-service")),
        (n, n),
        "{edges}"
    );
    let _ = stop.send(());
}
