//! Starting a real strand server for tests: in-process on port 0, or as a child process.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strand_server::Config;
use tokio::sync::oneshot;

/// A server running inside the test's runtime.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub jaeger_http: SocketAddr,
    pub jaeger_agent: SocketAddr,
    /// Jaeger agent UDP, binary thrift.
    pub jaeger_agent_binary: SocketAddr,
    pub zipkin: SocketAddr,
    pub remote_sampling: Option<SocketAddr>,
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("valid address")
}

/// Starts a server on free ports with a fresh data directory.
pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config {
        data_dir: dir.path().join("data"),
        http_listen: local(),
        otlp: strand_server::config::OtlpConfig {
            grpc_listen: local(),
            http_listen: local(),
            ..Default::default()
        },
        jaeger: strand_server::config::JaegerConfig {
            thrift_http_listen: local(),
            agent_listen: local(),
            agent_binary_listen: local(),
            ..Default::default()
        },
        zipkin: strand_server::config::ZipkinConfig { listen: local(), ..Default::default() },
        remote_sampling: strand_sampling::remote::RemoteSamplingConfig {
            listen: local(),
            ..Default::default()
        },
        ..Default::default()
    };
    adjust(&mut cfg);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let task = tokio::spawn(strand_server::run(
        cfg,
        async move {
            let _ = stop_rx.await;
        },
        move |a| {
            let _ = addr_tx.send(a.clone());
        },
    ));
    let addrs = addr_rx.await.expect("server bound its listeners");
    TestServer {
        grpc: addrs.otlp_grpc.expect("grpc enabled"),
        otlp_http: addrs.otlp_http.expect("http enabled"),
        jaeger_http: addrs.jaeger_thrift_http.expect("jaeger thrift enabled"),
        jaeger_agent: addrs.jaeger_agent.expect("jaeger agent enabled"),
        jaeger_agent_binary: addrs.jaeger_agent_binary.expect("jaeger agent enabled"),
        zipkin: addrs.zipkin.expect("zipkin enabled"),
        remote_sampling: addrs.remote_sampling,
        http: addrs.http,
        dir,
        stop: Some(stop_tx),
        task: Some(task),
    }
}

impl TestServer {
    pub fn otlp_url(&self) -> String {
        format!("http://{}/v1/traces", self.otlp_http)
    }

    /// Posts an OTLP/JSON export request and asserts it was accepted.
    pub async fn export_json(&self, body: impl Into<reqwest::Body>) {
        let resp = reqwest::Client::new()
            .post(self.otlp_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    }

    /// Posts a span batch as OTLP/HTTP protobuf, as an SDK would; asserts it was accepted.
    pub async fn export_batch(&self, batch: &strand_core::SpanBatch) {
        export_batch_to(&self.otlp_http.to_string(), batch).await;
    }

    /// [`TestServer::export_json`] of a JSON value.
    pub async fn export(&self, body: &serde_json::Value) {
        self.export_json(serde_json::to_vec(body).expect("json")).await;
    }

    pub fn query(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `POST /api/v1/admin/flush` as a loopback admin without a token does it; asserts 200.
    pub async fn flush(&self) {
        let resp = reqwest::Client::new()
            .post(self.query("/api/v1/admin/flush"))
            .header("content-type", "application/json")
            .send()
            .await
            .expect("flush");
        assert_eq!(resp.status(), 200, "flush");
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server ran cleanly");
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

/// A `strand serve` child process.
pub struct ChildServer {
    pub child: Child,
    pub otlp_http: String,
    pub grpc: String,
    pub http: String,
}

/// Starts the binary on `data_dir` with free ports; waits until it listens.
pub fn spawn_binary(data_dir: &Path, extra: &[&str]) -> ChildServer {
    let info = data_dir.with_extension(format!("listen-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&info);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.with_extension("log"))
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_strand"))
        .args([
            "serve",
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
            "--jaeger-thrift-listen",
            "127.0.0.1:0",
            "--jaeger-agent-listen",
            "127.0.0.1:0",
            "--jaeger-agent-binary-listen",
            "127.0.0.1:0",
            "--zipkin-listen",
            "127.0.0.1:0",
            "--remote-sampling-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-info-file")
        .arg(&info)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn strand");
    let mut server =
        ChildServer { child, otlp_http: String::new(), grpc: String::new(), http: String::new() };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&info) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("listen info json");
            // Ingesters and queriers have no ingest listeners: empty then.
            server.otlp_http = v["otlp_http"].as_str().unwrap_or_default().to_owned();
            server.grpc = v["otlp_grpc"].as_str().unwrap_or_default().to_owned();
            server.http = v["http"].as_str().expect("http").to_owned();
            let _ = std::fs::remove_file(&info);
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("strand exited early with {status}; log: {}", log_text(data_dir));
        }
        assert!(Instant::now() < deadline, "strand did not start in time; log: {}", log_text(data_dir));
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn log_text(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default()
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fixture under the repository's `testdata/`.
pub fn fixture(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel);
    assert!(root.exists(), "fixture {} missing", root.display());
    root
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python interpreter from a venv `scripts/test.sh` installs (`venv` under the repository,
/// or the path in `env_override`), or `None` (after saying why) when the test may be
/// skipped: it is required when `INTEROP_TESTS_REQUIRED` or `CI` is set.
pub fn interop_python(env_override: &str, venv: &str, what: &str) -> Option<PathBuf> {
    let python = std::env::var_os(env_override)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(venv).join("bin/python"));
    if python.exists() {
        return Some(python);
    }
    let required = std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
    assert!(!required, "{} missing: run scripts/test.sh, which installs {what}", python.display());
    eprintln!("SKIPPED: {} missing; run scripts/test.sh to install {what}", python.display());
    None
}

/// Polls `check` every 20 ms until it yields a value, for at most 30 s; then fails naming
/// `what`. Tests synchronise with this, never by sleeping a fixed time.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after 30 s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of an unlabelled (or fully labelled, e.g. `name{k="v"}`) series in Prometheus
/// text; `None` when the series is absent.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `node`, or `None` (after saying why) when the browser tests may be skipped.
pub fn node_with_playwright() -> Option<PathBuf> {
    let dir = repo().join("tests/browser");
    let chromium =
        std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    let node_ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let missing = if !node_ok {
        Some("node".to_string())
    } else if !dir.join("node_modules/playwright-core").exists() {
        Some(format!("{}/node_modules/playwright-core", dir.display()))
    } else if !chromium.exists() {
        Some(chromium.display().to_string())
    } else {
        None
    };
    let Some(missing) = missing else { return Some("node".into()) };
    let required = std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
    assert!(!required, "{missing} missing: run scripts/test.sh, which installs the browser test tools");
    eprintln!("SKIPPED: {missing} missing; run scripts/test.sh to install the browser test tools");
    None
}

/// Runs `node` with `args` in `tests/browser`; fails the test when it fails.
pub fn run_node(args: &[&str], envs: &[(&str, String)]) {
    let out = Command::new("node")
        .args(args)
        .current_dir(repo().join("tests/browser"))
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "node {args:?} failed:\n{stdout}\n{stderr}");
}

/// Posts a span batch as OTLP/HTTP protobuf to the receiver at `otlp_http` (`host:port`);
/// asserts it was accepted.
pub async fn export_batch_to(otlp_http: &str, batch: &strand_core::SpanBatch) {
    use prost::Message as _;
    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: strand_otlp::to_resource_spans(batch),
    };
    let resp = reqwest::Client::new()
        .post(format!("http://{otlp_http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
}

/// GETs `url` and returns its JSON body; asserts the answer was 200.
pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = reqwest::get(url).await.expect("get");
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.expect("json")
}
