//! Blocks in S3-compatible object storage, through the `object_store` crate.
//!
//! ```text
//! <url prefix>/<tenant>/blocks/<block id>/meta.json, spans.parquet, traces.parquet, ...
//! ```
//!
//! The layout of a block is the data directory's (see `strand_store::block`), so the
//! store's own block reader reads it: [`ObjectFs`] is a [`FileSystem`] over a bucket.
//! Whole small files (`meta.json`, the filters, the trace and search indexes) are kept in
//! a cache on local disk within a byte budget, so a querier that restarts, or reads a block
//! again, does not fetch them again; the span and log data are read by byte ranges.
//!
//! An ingester uploads a block's data files first and its `meta.json` last, so a block
//! without `meta.json` is one being uploaded and is not read.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use strand_core::units::{ByteSize, HumanDuration};
use strand_store::fs::{AppendFile, FileSystem, ReadAt};

/// The `cluster.objects` section: where blocks live past one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectsConfig {
    /// `s3://bucket` or `s3://bucket/prefix`. Empty: blocks stay on the ingesters' disks
    /// and queriers ask the ingesters for everything.
    pub url: String,
    /// The S3 endpoint of an S3-compatible store (MinIO, RustFS, Ceph, ...). Empty: AWS.
    /// `http://` endpoints are allowed (a store on the same network).
    pub endpoint: String,
    /// The bucket's region.
    pub region: String,
    /// Access key; empty: `AWS_ACCESS_KEY_ID` (or the instance's credentials).
    pub access_key_id: String,
    /// Secret key; empty: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// How long after a block is uploaded queriers start reading it from object storage
    /// instead of asking its ingester (they list the bucket every third of it).
    pub handoff_delay: HumanDuration,
    /// How long an ingester keeps a block on its disk after the handoff (for reads begun
    /// before it and for queriers whose clocks are behind).
    pub keep_after_handoff: HumanDuration,
    /// Querier: where the small files of blocks are cached. Empty: `object-cache` in the
    /// data directory.
    pub cache_dir: String,
    /// Querier: the most bytes the cache of small files keeps on disk.
    pub cache_size: ByteSize,
    /// Ingesters: how often one of them (holding the `compactor` lease) applies retention
    /// and compaction to the bucket (`storage.retention`, `storage.compaction_*`).
    pub compaction_interval: HumanDuration,
    /// The most bytes one tenant's blocks take in the bucket (the oldest go first);
    /// `null`: no bound but `storage.retention`.
    pub max_size: Option<ByteSize>,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            handoff_delay: HumanDuration(Duration::from_secs(30)),
            keep_after_handoff: HumanDuration(Duration::from_secs(300)),
            cache_dir: String::new(),
            cache_size: ByteSize(1 << 30),
            compaction_interval: HumanDuration(Duration::from_secs(60)),
            max_size: None,
        }
    }
}

impl ObjectsConfig {
    /// Whether blocks go to object storage.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Problems with the section, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if !self.enabled() {
            return errs;
        }
        if parse_url(&self.url).is_err() {
            errs.push(format!(
                "cluster.objects.url `{}` must be s3://bucket or s3://bucket/prefix",
                self.url
            ));
        }
        let e = &self.endpoint;
        if !(e.is_empty() || e.starts_with("http://") || e.starts_with("https://")) {
            errs.push(format!("cluster.objects.endpoint `{e}` must be an http:// or https:// URL"));
        }
        if self.handoff_delay.0 < Duration::from_secs(3) {
            errs.push(format!(
                "cluster.objects.handoff_delay must be at least 3s (queriers list the bucket every third of it), not {}",
                self.handoff_delay
            ));
        }
        if self.compaction_interval.0.is_zero() {
            errs.push("cluster.objects.compaction_interval must be greater than zero".into());
        }
        if self.keep_after_handoff.0 < self.handoff_delay.0 {
            errs.push(format!(
                "cluster.objects.keep_after_handoff ({}) must be at least handoff_delay ({})",
                self.keep_after_handoff, self.handoff_delay
            ));
        }
        errs
    }

    /// Connects to the bucket (no request is made until first use).
    pub fn open(&self) -> anyhow::Result<Objects> {
        let (bucket, prefix) = parse_url(&self.url).map_err(anyhow::Error::msg)?;
        // object_store's HTTPS client takes the process's rustls provider: ring, the one
        // in the tree (an error means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if !self.endpoint.is_empty() {
            b = b.with_endpoint(&self.endpoint).with_allow_http(self.endpoint.starts_with("http://"));
        }
        if !self.access_key_id.is_empty() {
            b = b.with_access_key_id(&self.access_key_id);
        }
        if !self.secret_access_key.is_empty() {
            b = b.with_secret_access_key(&self.secret_access_key);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(b.build()?);
        Ok(Objects { store, prefix: Key::from(prefix) })
    }
}

/// `s3://bucket[/prefix]` → (bucket, prefix).
fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or("not an s3:// URL")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("no bucket".into());
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// A connected bucket and the prefix Strand's objects live under.
#[derive(Clone)]
pub struct Objects {
    /// The bucket.
    pub store: Arc<dyn ObjectStore>,
    /// Everything of this cluster lives under it.
    pub prefix: Key,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Objects({} under `{}`)", self.store, self.prefix)
    }
}

impl Objects {
    /// The key of `path` (relative, `/`-separated) under the prefix.
    pub fn key(&self, path: &Path) -> Key {
        let mut key = self.prefix.clone();
        for part in path.components() {
            if let std::path::Component::Normal(p) = part {
                key = key.join(p.to_string_lossy().as_ref());
            }
        }
        key
    }
}

/// Maps an object-store error to an I/O error of the same meaning.
pub(crate) fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

/// Read-ahead of a ranged read: parquet's page reader reads a column chunk in small pieces.
const READ_AHEAD: usize = 256 << 10;

/// Whether a block file is read whole (and cached on local disk) rather than by ranges.
fn read_whole(name: &str) -> bool {
    !matches!(name, "spans.parquet" | "logs.parquet")
}

/// A [`FileSystem`] over a bucket, for reading blocks (see the module docs): synchronous
/// calls block on the runtime given at creation, so they run on blocking threads (the
/// store's reads do). Everything that would change the bucket is refused.
pub struct ObjectFs {
    objects: Objects,
    runtime: tokio::runtime::Handle,
    cache: Arc<DiskCache>,
    recent: Arc<Recent>,
}

impl ObjectFs {
    /// Reads `objects` on `runtime`, caching small files in `cache_dir` within `cache_bytes`.
    pub fn new(
        objects: Objects,
        runtime: tokio::runtime::Handle,
        cache_dir: &Path,
        cache_bytes: u64,
    ) -> io::Result<Self> {
        Ok(Self {
            objects,
            runtime,
            cache: Arc::new(DiskCache::open(cache_dir, cache_bytes)?),
            recent: Arc::default(),
        })
    }

    /// The cache's counters.
    pub fn cache(&self) -> &DiskCache {
        &self.cache
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = object_store::Result<T>>) -> io::Result<T> {
        self.runtime.block_on(f).map_err(io_error)
    }

    fn read_only(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, format!("{what}: blocks in object storage are only read"))
    }
}

struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    key: Key,
    len: u64,
    runtime: tokio::runtime::Handle,
    /// This file's number in `recent`.
    file: u64,
    /// The ranges fetched last, of every open file.
    recent: Arc<Recent>,
    /// Prefetched pages are kept here too, so a warm read does not go to the bucket.
    cache: Arc<DiskCache>,
}

/// The most bytes of fetched ranges kept in memory, over all open files.
const RECENT_BYTES: usize = 64 << 20;
/// The most bytes one prefetch fetches (a larger read fetches the rest as it goes).
const PREFETCH_BYTES: u64 = 16 << 20;

/// Ranges fetched last from every open file: (file, offset, bytes), newest last, within
/// [`RECENT_BYTES`] together.
#[derive(Default)]
struct Recent {
    ranges: Mutex<std::collections::VecDeque<(u64, u64, Bytes)>>,
    bytes: std::sync::atomic::AtomicUsize,
    files: std::sync::atomic::AtomicU64,
}

impl Recent {
    fn add(&self, file: u64, offset: u64, data: Bytes) {
        use std::sync::atomic::Ordering;
        let mut ranges = self.ranges.lock();
        let mut total = self.bytes.load(Ordering::Relaxed) + data.len();
        ranges.push_back((file, offset, data));
        while total > RECENT_BYTES && ranges.len() > 1 {
            if let Some((_, _, old)) = ranges.pop_front() {
                total -= old.len();
            }
        }
        self.bytes.store(total, Ordering::Relaxed);
    }

    /// The newest range of `file` holding `offset`: (its offset, its bytes).
    fn find(&self, file: u64, offset: u64) -> Option<(u64, Bytes)> {
        self.ranges
            .lock()
            .iter()
            .rev()
            .find(|(f, at, d)| *f == file && offset >= *at && offset < at + d.len() as u64)
            .map(|(_, at, d)| (*at, d.clone()))
    }

    fn holds(&self, file: u64, r: &std::ops::Range<u64>) -> bool {
        self.ranges
            .lock()
            .iter()
            .any(|(f, at, d)| *f == file && *at <= r.start && r.end <= at + d.len() as u64)
    }
}

impl ObjectReader {
    fn remember(&self, offset: u64, data: Bytes) {
        self.recent.add(self.file, offset, data);
    }

    fn holds(&self, r: &std::ops::Range<u64>) -> bool {
        self.recent.holds(self.file, r)
    }

    fn page_key(&self, r: &std::ops::Range<u64>) -> String {
        format!("{}@{}-{}", self.key, r.start, r.end)
    }
}

impl ReadAt for ObjectReader {
    fn wants_prefetch(&self) -> bool {
        true
    }

    /// Fetches the pages a read is about to ask for at once (`get_ranges` coalesces
    /// neighbours and fetches concurrently), from the disk cache when there.
    fn prefetch(&self, ranges: &[std::ops::Range<u64>]) {
        let mut fetch = Vec::new();
        let mut total = 0;
        for r in ranges.iter().filter(|r| r.start < r.end && r.end <= self.len && !self.holds(r)) {
            total += r.end - r.start;
            if total > PREFETCH_BYTES {
                break;
            }
            match self.cache.get(&self.page_key(r)) {
                Some(data) if data.len() as u64 == r.end - r.start => {
                    self.remember(r.start, Bytes::from(data))
                }
                _ => fetch.push(r.clone()),
            }
        }
        if fetch.is_empty() {
            return;
        }
        // A failure here is not the read's: the read itself fetches what it lacks.
        if let Ok(pages) = self.runtime.block_on(self.store.get_ranges(&self.key, &fetch)) {
            for (r, data) in fetch.iter().zip(pages) {
                self.cache.put(&self.page_key(r), &data);
                self.remember(r.start, data);
            }
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let copy = |buf: &mut [u8], at: u64, data: &Bytes| {
            let from = (offset - at) as usize;
            let n = buf.len().min(data.len() - from);
            buf[..n].copy_from_slice(&data[from..from + n]);
            n
        };
        if let Some((at, data)) = self.recent.find(self.file, offset) {
            return Ok(copy(buf, at, &data));
        }
        let end = (offset + buf.len().max(READ_AHEAD) as u64).min(self.len);
        let data = self.runtime.block_on(self.store.get_range(&self.key, offset..end)).map_err(io_error)?;
        if data.is_empty() {
            return Ok(0);
        }
        let n = copy(buf, offset, &data);
        self.remember(offset, data);
        Ok(n)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl FileSystem for ObjectFs {
    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Err(Self::read_only("create_dir_all"))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let prefix = self.objects.key(dir);
        let listed = self.block_on(self.objects.store.list_with_delimiter(Some(&prefix)))?;
        let mut out: Vec<PathBuf> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|o| &o.location))
            .filter_map(|k| k.filename().map(|name| dir.join(name)))
            .collect();
        out.sort();
        Ok(out)
    }

    fn open_append(&self, _: &Path) -> io::Result<Box<dyn AppendFile>> {
        Err(Self::read_only("open_append"))
    }

    fn write_file(&self, _: &Path, _: &[u8]) -> io::Result<()> {
        Err(Self::read_only("write_file"))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let key = self.objects.key(path);
        let cacheable = path.file_name().and_then(|n| n.to_str()).is_some_and(read_whole);
        // meta.json is never cached: its absence marks a block being uploaded, and a
        // block's small files are only trusted once it is there.
        let cacheable = cacheable && path.file_name().is_some_and(|n| n != "meta.json");
        if cacheable && let Some(data) = self.cache.get(key.as_ref()) {
            return Ok(data);
        }
        let data = self.block_on(async { self.objects.store.get(&key).await?.bytes().await })?;
        if cacheable {
            self.cache.put(key.as_ref(), &data);
        }
        Ok(data.to_vec())
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        let key = self.objects.key(path);
        let meta = self.block_on(self.objects.store.head(&key))?;
        Ok(Arc::new(ObjectReader {
            store: self.objects.store.clone(),
            key,
            len: meta.size,
            runtime: self.runtime.clone(),
            file: self.recent.files.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            recent: self.recent.clone(),
            cache: self.cache.clone(),
        }))
    }

    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        Err(Self::read_only("rename"))
    }

    fn remove_file(&self, _: &Path) -> io::Result<()> {
        Err(Self::read_only("remove_file"))
    }

    fn remove_dir_all(&self, _: &Path) -> io::Result<()> {
        Err(Self::read_only("remove_dir_all"))
    }

    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Err(Self::read_only("sync_dir"))
    }

    fn truncate(&self, _: &Path, _: u64) -> io::Result<()> {
        Err(Self::read_only("truncate"))
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        let key = self.objects.key(path);
        Ok(self.block_on(self.objects.store.head(&key))?.size)
    }

    /// One listing of everything under `dir` (paged by the client), not one per directory.
    fn list_tree(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        use futures_util::StreamExt as _;
        let prefix = self.objects.key(dir);
        let listed: Vec<object_store::Result<object_store::ObjectMeta>> =
            self.runtime.block_on(self.objects.store.list(Some(&prefix)).collect());
        let mut out = Vec::with_capacity(listed.len());
        for meta in listed {
            let meta = meta.map_err(io_error)?;
            let Some(rest) = meta.location.prefix_match(&prefix) else { continue };
            let mut path = dir.to_path_buf();
            for part in rest {
                path.push(part.as_ref());
            }
            out.push(path);
        }
        out.sort();
        Ok(out)
    }
}

/// Whole objects kept on local disk, least recently used first out once their bytes pass
/// the budget. Blocks never change, so an entry never goes stale; a file that fails to
/// read back is fetched again (and block files are checksummed by their readers anyway).
pub struct DiskCache {
    dir: PathBuf,
    budget: u64,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Entry file name → (bytes, last use).
    entries: HashMap<String, (u64, u64)>,
    bytes: u64,
    tick: u64,
    hits: u64,
    misses: u64,
}

impl DiskCache {
    /// Opens (creating) the cache in `dir`, counting what an earlier process left there.
    pub fn open(dir: &Path, budget: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut state = CacheState::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let bytes = entry.metadata()?.len();
            state.bytes += bytes;
            state.entries.insert(name, (bytes, 0));
        }
        let cache = Self { dir: dir.to_path_buf(), budget, state: Mutex::new(state) };
        cache.evict();
        Ok(cache)
    }

    /// The file name an object key is kept under.
    fn name(key: &str) -> String {
        key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let name = Self::name(key);
        let mut st = self.state.lock();
        if !st.entries.contains_key(&name) {
            st.misses += 1;
            return None;
        }
        st.tick += 1;
        let tick = st.tick;
        // Each entry ends with the CRC32C of what comes before: a torn or damaged entry
        // is a miss (and goes), never bad data.
        let read = std::fs::read(self.dir.join(&name)).ok().and_then(|mut data| {
            let body = data.len().checked_sub(4)?;
            let crc = u32::from_le_bytes(data[body..].try_into().ok()?);
            data.truncate(body);
            (crc32c::crc32c(&data) == crc).then_some(data)
        });
        match read {
            Some(data) => {
                st.hits += 1;
                if let Some(e) = st.entries.get_mut(&name) {
                    e.1 = tick;
                }
                Some(data)
            }
            None => {
                if let Some((bytes, _)) = st.entries.remove(&name) {
                    st.bytes -= bytes;
                }
                let _ = std::fs::remove_file(self.dir.join(&name));
                st.misses += 1;
                None
            }
        }
    }

    fn put(&self, key: &str, data: &[u8]) {
        if data.len() as u64 > self.budget / 4 {
            return;
        }
        let name = Self::name(key);
        // Unique per write: two writers of one key never share a temporary file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!("{name}.{}.tmp", WRITES.fetch_add(1, Ordering::Relaxed)));
        let mut entry = Vec::with_capacity(data.len() + 4);
        entry.extend_from_slice(data);
        entry.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        if std::fs::write(&tmp, &entry).and_then(|()| std::fs::rename(&tmp, self.dir.join(&name))).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        {
            let mut st = self.state.lock();
            st.tick += 1;
            let tick = st.tick;
            if let Some((old, _)) = st.entries.insert(name, (data.len() as u64, tick)) {
                st.bytes -= old;
            }
            st.bytes += data.len() as u64;
        }
        self.evict();
    }

    fn evict(&self) {
        let mut st = self.state.lock();
        while st.bytes > self.budget {
            let Some(oldest) = st.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((bytes, _)) = st.entries.remove(&oldest) {
                st.bytes -= bytes;
            }
            let _ = std::fs::remove_file(self.dir.join(&oldest));
        }
    }

    /// (hits, misses, bytes held).
    pub fn counts(&self) -> (u64, u64, u64) {
        let st = self.state.lock();
        (st.hits, st.misses, st.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        assert_eq!(parse_url("s3://b"), Ok(("b".into(), String::new())));
        assert_eq!(parse_url("s3://b/x/y/"), Ok(("b".into(), "x/y".into())));
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("gs://b").is_err());
        let cfg = ObjectsConfig { url: "http://b".into(), ..Default::default() };
        assert!(cfg.validate()[0].contains("cluster.objects.url"), "{:?}", cfg.validate());
        let cfg = ObjectsConfig {
            url: "s3://b".into(),
            handoff_delay: HumanDuration(Duration::from_secs(60)),
            ..Default::default()
        };
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let cfg = ObjectsConfig { keep_after_handoff: HumanDuration(Duration::from_secs(1)), ..cfg };
        assert!(cfg.validate()[0].contains("keep_after_handoff"), "{:?}", cfg.validate());
    }

    #[test]
    fn the_disk_cache_keeps_recent_entries_within_its_budget_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("strand-objcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DiskCache::open(&dir, 1000).expect("opens");
        cache.put("p/t/blocks/a/index.bin", &[1; 200]);
        cache.put("p/t/blocks/b/index.bin", &[2; 200]);
        assert_eq!(cache.get("p/t/blocks/a/index.bin").as_deref(), Some(&[1u8; 200][..]));
        // Over the budget: the least recently used (b) goes.
        for i in 0..4 {
            cache.put(&format!("p/t/blocks/c{i}/index.bin"), &[3; 200]);
        }
        assert!(cache.get("p/t/blocks/b/index.bin").is_none());
        assert!(cache.counts().2 <= 1000, "{:?}", cache.counts());
        // Too big for a quarter of the budget: not kept.
        cache.put("big", &[0; 300]);
        assert!(cache.get("big").is_none());
        // A damaged entry is a miss, and goes.
        let damaged = dir.join(DiskCache::name("p/t/blocks/c2/index.bin"));
        std::fs::write(&damaged, [3u8; 204]).expect("damage");
        assert!(cache.get("p/t/blocks/c2/index.bin").is_none());
        assert!(!damaged.exists());
        drop(cache);
        let again = DiskCache::open(&dir, 1000).expect("reopens");
        assert!(again.counts().2 > 0 && again.counts().2 <= 1000);
        assert!(again.get("p/t/blocks/c3/index.bin").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
