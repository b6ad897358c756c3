//! `epro run`: every service as its own process (plus `nats-server` when none is given and
//! an SMS gateway stub), on free ports, logs in `<dir>/logs/<service>.log`; and `epro load`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::routing::post;

/// Options of `epro run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// strand's OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    strand: String,
    /// A running NATS server with JetStream; default: start `nats-server -js` on a free port.
    #[arg(long)]
    nats: Option<String>,
    /// Submit this many reports once everything is up (results as JSON lines on stdout).
    #[arg(long)]
    load: Option<usize>,
    /// Make every K-th submission fail in data-service (0: none).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// Stop everything after the load instead of running until Ctrl-C.
    #[arg(long)]
    exit_after_load: bool,
    /// Lose the trace context at this boundary (repeatable): queue, spawn or grpc.
    #[arg(long = "break", value_enum)]
    breaks: Vec<crate::Break>,
    /// Working directory (database, NATS store, logs); default: a new temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Options of `epro load`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// The gateway's base URL.
    #[arg(long)]
    gateway: String,
    /// Reports to submit.
    #[arg(short, long, default_value_t = 10)]
    n: usize,
}

/// A child process stopped with SIGTERM (so it flushes its spans) when dropped.
struct Service {
    name: &'static str,
    child: Child,
}

impl Service {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within 15 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback address free now, for a child process to bind. Taken below the kernel's
/// ephemeral port range: a port from that range (what binding port 0 gives) may be handed
/// to another process's port-0 bind between this check and the child's bind (seen in CI:
/// a test's strand server answered a demo service's health checks), one below it is not.
/// Each call starts after the last port it gave, from a start that differs per process.
fn free_addr() -> anyhow::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const LOWEST: u32 = 10_000;
    let span = ephemeral.saturating_sub(LOWEST);
    if span < 1000 {
        // No room below the ephemeral range: what the kernel gives.
        return Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?);
    }
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(0, seed % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let port = LOWEST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if std::net::TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    anyhow::bail!("no free port between {LOWEST} and {ephemeral}")
}

fn spawn(name: &'static str, logs: &Path, args: &[String]) -> anyhow::Result<Service> {
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .arg(name)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Service { name, child })
}

fn nats_server(dir: &Path) -> anyhow::Result<(Service, String)> {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("nats-server not found: install Debian's nats-server package, or pass --nats URL")?;
    let addr = free_addr()?;
    let log = std::fs::File::create(dir.join("logs/nats-server.log"))?;
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &addr.port().to_string(), "-sd"])
        .arg(dir.join("nats"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting nats-server")?;
    let mut server = Service { name: "nats-server", child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("nats-server exited with {status}; see {}", dir.join("logs/nats-server.log").display());
        }
        if Instant::now() > deadline {
            bail!("nats-server did not listen on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, format!("nats://{addr}")))
}

/// Waits until every `(service, url)` answers, failing early when one exits.
async fn wait_ready(services: &mut [Service], checks: &[(&str, String)], logs: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, url) in checks {
        loop {
            if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            for s in services.iter_mut() {
                if let Ok(Some(status)) = s.child.try_wait() {
                    let log =
                        std::fs::read_to_string(logs.join(format!("{}.log", s.name))).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                    bail!("{} exited with {status}:\n{tail}", s.name);
                }
            }
            if Instant::now() > deadline {
                bail!("{name} did not become ready at {url} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The SMS gateway stub: accepts a message after 100 ms (not instrumented: it stands for a
/// third party).
async fn sms_stub() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/sms",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            axum::Json(serde_json::json!({ "status": "queued" }))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/sms"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("epro-demo-").tempdir()?.keep(),
    };
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut services = Vec::new();
    let nats = match args.nats {
        Some(url) => url,
        None => {
            let (server, url) = nats_server(&dir)?;
            services.push(server);
            url
        }
    };
    let sms = sms_stub().await?;
    let [gateway, users, epro, epro_health, data, data_health, notify_health] =
        [(); 7].map(|()| free_addr()).map(|a| a.expect("a free port"));
    let s = |a: SocketAddr| a.to_string();
    let strand = args.strand.clone();
    let breaks = |which: &[crate::Break]| -> Vec<String> {
        args.breaks
            .iter()
            .filter(|b| which.contains(b))
            .flat_map(|b| ["--break".to_owned(), format!("{b:?}").to_lowercase()])
            .collect()
    };
    services.push(spawn(
        "user-service",
        &logs,
        &["--listen".into(), s(users), "--strand".into(), strand.clone()],
    )?);
    services.push(spawn(
        "data-service",
        &logs,
        &[
            "--listen".into(),
            s(data),
            "--health".into(),
            s(data_health),
            "--db".into(),
            dir.join("epro.sqlite").display().to_string(),
            "--nats".into(),
            nats.clone(),
            "--fail-every".into(),
            args.fail_every.to_string(),
            "--strand".into(),
            strand.clone(),
        ]
        .into_iter()
        .chain(breaks(&[crate::Break::Queue, crate::Break::Grpc]))
        .collect::<Vec<_>>(),
    )?);
    services.push(spawn(
        "epro-service",
        &logs,
        &[
            "--listen".into(),
            s(epro),
            "--health".into(),
            s(epro_health),
            "--data".into(),
            format!("http://{data}"),
            "--strand".into(),
            strand.clone(),
        ],
    )?);
    services.push(spawn(
        "notify-service",
        &logs,
        &[
            "--nats".into(),
            nats.clone(),
            "--sms".into(),
            sms,
            "--health".into(),
            s(notify_health),
            "--strand".into(),
            strand.clone(),
        ]
        .into_iter()
        .chain(breaks(&[crate::Break::Spawn]))
        .collect::<Vec<_>>(),
    )?);
    services.push(spawn(
        "gateway",
        &logs,
        &[
            "--listen".into(),
            s(gateway),
            "--users".into(),
            format!("http://{users}"),
            "--epro".into(),
            format!("http://{epro}"),
            "--strand".into(),
            strand,
        ],
    )?);
    let gateway_url = format!("http://{gateway}");
    let checks = [
        ("user-service", format!("http://{users}/healthz")),
        ("data-service", format!("http://{data_health}/healthz")),
        ("epro-service", format!("http://{epro_health}/healthz")),
        ("notify-service", format!("http://{notify_health}/healthz")),
        ("gateway", format!("{gateway_url}/healthz")),
    ];
    wait_ready(&mut services, &checks, &logs).await?;
    eprintln!("epro demo running: POST {gateway_url}/reports; logs in {}", logs.display());
    let mut accepted = 0;
    if let Some(n) = args.load {
        let results = load(LoadArgs { gateway: gateway_url.clone(), n }).await?;
        accepted = results.iter().filter(|r| r["status"] == 202).count() as u64;
    }
    if !args.exit_after_load || args.load.is_none() {
        crate::telemetry::shutdown().await;
    } else {
        // Every accepted report publishes one event; stop once each has been handled and its
        // SMS task has finished, so their spans are in the traces.
        wait_for_notifications(&format!("http://{notify_health}/progress"), accepted).await?;
    }
    // Stop the entry point first, nats-server last.
    for mut s in services.into_iter().rev() {
        tokio::task::spawn_blocking(move || s.stop()).await?;
    }
    Ok(())
}

/// Polls notify-service's `/progress` until `events` events are handled and as many SMS
/// tasks have finished (30 s at most).
async fn wait_for_notifications(url: &str, events: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A status other than 200 (another process on notify-service's port) is an error
        // naming it, not an empty body that fails to parse.
        let progress: serde_json::Value = client.get(url).send().await?.error_for_status()?.json().await?;
        let (handled, sent) = (progress["handled"].as_u64(), progress["sms_done"].as_u64());
        if handled >= Some(events) && sent >= Some(events) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("notify-service handled {progress} of {events} report events within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits `n` reports (patients 1..=n) and prints one
/// JSON line per submission: patient, HTTP status, trace id, report id or error.
pub async fn load(args: LoadArgs) -> anyhow::Result<Vec<serde_json::Value>> {
    let client = reqwest::Client::new();
    let mut out = Vec::with_capacity(args.n);
    for i in 1..=args.n as u64 {
        let answers: Vec<u32> = (0..5).map(|q| ((i + q) % 11) as u32).collect();
        let resp = client
            .post(format!("{}/reports", args.gateway))
            .json(&serde_json::json!({ "patient_id": i, "answers": answers }))
            .send()
            .await
            .context("posting a report")?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let line = serde_json::json!({
            "patient_id": i,
            "status": status,
            "trace_id": body["trace_id"],
            "report_id": body["report_id"],
            "error": body["error"],
        });
        println!("{line}");
        out.push(line);
    }
    Ok(out)
}
