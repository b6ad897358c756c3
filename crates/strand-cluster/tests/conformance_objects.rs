//! The object-storage backend passes the backend conformance suite: a store whose blocks are
//! handed over to a real S3-compatible server (`s3s-fs`, built by `scripts/test.sh`) as soon
//! as they are cut, read back through the bucket and merged with what the store still
//! holds, as a querier reads an ingester and the bucket. Every check's data is read right
//! after the write (head), after a flush (blocks in the bucket, the local copies deleted)
//! and after a restart; retention by age and by bytes applies to the bucket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use strand_cluster::handoff::{RemoteBlocks, UploadStats, Uploader};
use strand_cluster::objects::{ObjectFs, Objects, ObjectsConfig};
use strand_cluster::querier::RemoteStore;
use strand_core::units::HumanDuration;
use strand_core::{
    BoxFuture, Clock, DependencyEdge, LogBatch, LogPage, LogQuery, LogStore, MetricFamily, Operation,
    SearchPage, SinkError, SpanBatch, SpanId, StoreError, StoredLog, TimeRange, Trace, TraceId, TraceQuery,
    TraceReader, TraceStore, TraceWriter,
};
use strand_store::conformance::{self, Harness, Options};
use strand_store::{Store, StoreConfig, Visibility};

const KEY: &str = "conformance";
const SECRET: &str = "conformancesecret";
const TENANT: &str = "single-tenant";

struct S3 {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` with a bucket `strand` on a free port; `None` when it is missing and not
/// required.
fn s3() -> Option<S3> {
    let bin = std::env::var_os("S3S_FS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/s3s/bin/s3s-fs"));
    if !bin.exists() {
        let required =
            std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(!required, "s3s-fs missing at {}: run scripts/test.sh, which builds it", bin.display());
        eprintln!("SKIPPED: s3s-fs missing; run scripts/test.sh to build it");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("strand")).expect("bucket");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            KEY,
            "--secret-key",
            SECRET,
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "s3s-fs did not listen within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(S3 { child, endpoint: format!("http://127.0.0.1:{port}"), _dir: dir })
}

/// One backend: a data directory and a prefix of its own in the bucket.
struct ObjectsHarness {
    dir: tempfile::TempDir,
    cfg: ObjectsConfig,
}

static PREFIXES: AtomicU32 = AtomicU32::new(0);

impl ObjectsHarness {
    fn new(s3: &S3) -> Self {
        let n = PREFIXES.fetch_add(1, Ordering::Relaxed);
        let cfg = ObjectsConfig {
            url: format!("s3://strand/conformance-{n}"),
            endpoint: s3.endpoint.clone(),
            access_key_id: KEY.into(),
            secret_access_key: SECRET.into(),
            // Handed over as soon as uploaded, the local copy deleted at the next pass.
            handoff_delay: HumanDuration(std::time::Duration::ZERO),
            keep_after_handoff: HumanDuration(std::time::Duration::ZERO),
            ..ObjectsConfig::default()
        };
        Self { dir: tempfile::tempdir().expect("tempdir"), cfg }
    }
}

/// The store and its blocks in the bucket, read together.
struct Tiered {
    local: Arc<Store>,
    reads: RemoteStore,
    blocks: Arc<RemoteBlocks>,
    uploader: Uploader,
    objects: Objects,
    opts: Options,
}

impl Harness for ObjectsHarness {
    type Store = Tiered;

    fn open(&self, opts: Options) -> BoxFuture<'_, Tiered> {
        Box::pin(async move {
            let store_cfg = StoreConfig {
                retention: opts.retention,
                max_disk_bytes: opts.max_bytes,
                clock: opts.clock.clone(),
                ..StoreConfig::default()
            };
            let local_cfg = StoreConfig { compaction_target_spans: 0, ..store_cfg.clone() };
            let local = Arc::new(
                Store::open(Arc::new(strand_store::fs::StdFs), &self.dir.path().join("data"), local_cfg)
                    .expect("open the store"),
            );
            let objects = self.cfg.open().expect("bucket");
            let fs = ObjectFs::new(
                objects.clone(),
                tokio::runtime::Handle::current(),
                &self.dir.path().join("cache"),
                64 << 20,
            )
            .expect("object cache");
            let blocks = Arc::new(RemoteBlocks::new(Arc::new(fs), TENANT, self.cfg.clone(), store_cfg));
            let view = local.clone();
            let reads = RemoteStore::tiered(
                Arc::new(move |clock| view.view(Visibility::HeldAt(clock))),
                blocks.clone(),
            );
            let uploader = Uploader::new(
                objects.clone(),
                local.clone(),
                TENANT,
                self.cfg.clone(),
                Arc::new(UploadStats::default()),
            );
            Tiered { local, reads, blocks, uploader, objects, opts }
        })
    }
}

impl Tiered {
    /// Uploads every block, then deletes the local copies (handed over at once).
    async fn hand_over(&self) -> Result<(), StoreError> {
        let failed = |e: anyhow::Error| StoreError::Unavailable(format!("handing blocks over: {e:#}"));
        self.uploader.pass().await.map_err(failed)?;
        self.uploader.pass().await.map_err(failed)?;
        // What was flushed is read from the bucket alone from now on.
        assert!(self.local.blocks().is_empty(), "every block handed over and deleted locally");
        self.blocks.refresh().await
    }
}

impl TraceWriter for Tiered {
    fn write(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        self.local.write(batch)
    }
}

impl TraceReader for Tiered {
    fn get_trace(&self, id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        self.reads.get_trace(id)
    }

    fn get_traces(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Trace>, StoreError>> {
        self.reads.get_traces(ids)
    }

    fn find_traces(&self, q: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        self.reads.find_traces(q)
    }

    fn services(&self, r: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.reads.services(r)
    }

    fn operations(&self, s: String, r: TimeRange) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        self.reads.operations(s, r)
    }

    fn attributes(
        &self,
        s: Option<String>,
        r: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        self.reads.attributes(s, r)
    }

    fn dependencies(&self, r: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        self.reads.dependencies(r)
    }
}

impl LogStore for Tiered {
    fn write_logs(&self, batch: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        self.local.write_logs(batch)
    }

    fn trace_logs(&self, t: TraceId, s: Option<SpanId>) -> BoxFuture<'_, Result<Vec<StoredLog>, StoreError>> {
        self.reads.trace_logs(t, s)
    }

    fn find_logs(&self, q: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        self.reads.find_logs(q)
    }
}

impl TraceStore for Tiered {
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            TraceStore::flush(self.local.as_ref()).await?;
            self.hand_over().await
        })
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.local.maintain().await?;
            self.hand_over().await?;
            let horizon =
                self.opts.clock.now_unix_nano().saturating_sub(self.opts.retention.as_nanos() as u64);
            strand_cluster::compact::apply_retention(
                &self.objects,
                self.blocks.set(),
                TENANT,
                horizon,
                self.opts.max_bytes,
            )
            .await
            .map_err(|e| StoreError::Unavailable(format!("retention: {e:#}")))?;
            self.blocks.refresh().await
        })
    }

    fn stored_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.blocks.refresh().await?;
            let remote: u64 = self.blocks.blocks().iter().map(|b| b.disk_bytes).sum();
            Ok(self.local.stored_bytes().await? + remote)
        })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        self.local.metrics()
    }

    fn not_ready(&self) -> BoxFuture<'_, Vec<String>> {
        self.local.not_ready()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        TraceStore::close(self.local.as_ref())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_in_object_storage_pass_conformance() {
    let Some(s3) = s3() else { return };
    conformance::run_all(|| ObjectsHarness::new(&s3)).await;
}
