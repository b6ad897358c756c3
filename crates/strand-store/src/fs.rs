//! The small file-system interface the store writes through.
//!
//! Everything the store does to disk goes through [`FileSystem`], so tests can put a
//! [`FaultyFs`] underneath it and simulate a full disk or a power cut between a write and
//! its fsync.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// A file opened for appending (WAL segments).
#[allow(clippy::len_without_is_empty)]
pub trait AppendFile: Send {
    /// Appends bytes at the end.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (to drop a half-written record).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> u64;
}

/// A file opened for positioned reads (blocks).
#[allow(clippy::len_without_is_empty)]
pub trait ReadAt: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// File length in bytes.
    fn len(&self) -> u64;
    /// Whether [`ReadAt::prefetch`] does anything (a file far away): readers only work out
    /// the ranges for one that does.
    fn wants_prefetch(&self) -> bool {
        false
    }
    /// Says which byte ranges reads are about to ask for, so a file far away (object
    /// storage) can fetch them together, concurrently; a local file ignores it.
    fn prefetch(&self, _ranges: &[std::ops::Range<u64>]) {}
}

/// Disk access used by the store. Implementations are shared across threads.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Paths of the entries of a directory, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Opens (creating if needed) a file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Creates or replaces a file with `data` and fsyncs it.
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Reads a whole file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file for positioned reads.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>>;
    /// Renames a file or directory atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Fsyncs a directory so renames and creations in it are durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Truncates a file to `len` bytes and fsyncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Size of a file in bytes.
    fn file_size(&self, path: &Path) -> io::Result<u64>;
    /// Paths of every file under `dir`, at any depth, sorted (object storage lists them in
    /// one request). The default walks [`FileSystem::list`]: an entry that cannot be
    /// listed is a file.
    fn list_tree(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            let entries = match self.list(&d) {
                Ok(e) => e,
                Err(e) if d == dir => return Err(e),
                Err(_) => {
                    out.push(d);
                    continue;
                }
            };
            todo.extend(entries);
        }
        out.sort();
        Ok(out)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdAppend {
    file: File,
    len: u64,
}

impl AppendFile for StdAppend {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

struct StdRead {
    file: File,
    len: u64,
}

impl ReadAt for StdRead {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            out.push(entry?.path());
        }
        out.sort();
        Ok(out)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Box::new(StdAppend { file, len }))
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(data)?;
        file.sync_all()
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Arc::new(StdRead { file, len }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
}

/// A [`StdFs`] wrapper that injects faults, for tests.
///
/// - [`FaultyFs::set_space`] limits how many more bytes may be written before writes fail
///   with `ENOSPC`, like a full disk.
/// - [`FaultyFs::crash`] cuts every appended file back to its last fsynced length and makes
///   the open handles fail, like a power cut: what was written but not synced is gone.
/// - [`FaultyFs::fail_writes_under`] makes whole-file writes below one directory fail with
///   `ENOSPC` while everything else works: block writes fail, the WAL does not.
/// - [`FaultyFs::hold_reads_under`] makes reads below one directory wait until released,
///   like a very slow disk under one block.
/// - [`FaultyFs::fail_reads_under`] makes reads below one directory fail with `EIO`, like
///   a bad sector under one block.
#[derive(Default, Clone)]
pub struct FaultyFs {
    state: Arc<FaultState>,
}

#[derive(Default)]
struct FaultState {
    space: AtomicU64,
    limited: AtomicBool,
    crashed: AtomicBool,
    synced: Mutex<HashMap<PathBuf, u64>>,
    failing_dir: Mutex<Option<PathBuf>>,
    held_dir: Mutex<Option<PathBuf>>,
    failing_reads: Mutex<Option<PathBuf>>,
    held_changed: parking_lot::Condvar,
    held_reads: AtomicU64,
}

impl FaultState {
    /// Fails a read of `path` below [`FaultyFs::fail_reads_under`]'s directory with `EIO`;
    /// else waits while reads of `path` are held.
    fn before_read(&self, path: &Path) -> io::Result<()> {
        if self.failing_reads.lock().as_ref().is_some_and(|d| path.starts_with(d)) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.wait_if_held(path);
        Ok(())
    }

    /// Waits while reads of `path` are held; counts each read that had to wait.
    fn wait_if_held(&self, path: &Path) {
        let mut held = self.held_dir.lock();
        let mut counted = false;
        while held.as_ref().is_some_and(|d| path.starts_with(d)) {
            if !counted {
                self.held_reads.fetch_add(1, Ordering::SeqCst);
                counted = true;
            }
            self.held_changed.wait(&mut held);
        }
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated crash"));
        }
        Ok(())
    }

    fn take_space(&self, n: u64) -> io::Result<()> {
        self.check_alive()?;
        if !self.limited.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.space
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| cur.checked_sub(n))
            .map(|_| ())
            .map_err(|_| io::Error::from_raw_os_error(28))
    }
}

impl FaultyFs {
    /// A file system with unlimited space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `bytes` more bytes of writes; `None` lifts the limit.
    pub fn set_space(&self, bytes: Option<u64>) {
        match bytes {
            Some(b) => {
                self.state.space.store(b, Ordering::SeqCst);
                self.state.limited.store(true, Ordering::SeqCst);
            }
            None => self.state.limited.store(false, Ordering::SeqCst),
        }
    }

    /// Simulates a power cut; see the type's docs.
    pub fn crash(&self) -> io::Result<()> {
        let synced = self.state.synced.lock();
        self.state.crashed.store(true, Ordering::SeqCst);
        for (path, len) in synced.iter() {
            if path.exists() {
                OpenOptions::new().write(true).open(path)?.set_len(*len)?;
            }
        }
        Ok(())
    }

    /// Makes [`FileSystem::write_file`] fail with `ENOSPC` for every path below `dir`;
    /// `None` ends it.
    pub fn fail_writes_under(&self, dir: Option<PathBuf>) {
        *self.state.failing_dir.lock() = dir;
    }

    /// Makes every read of a path below `dir` wait until this is called again with
    /// `None`.
    pub fn hold_reads_under(&self, dir: Option<PathBuf>) {
        *self.state.held_dir.lock() = dir;
        self.state.held_changed.notify_all();
    }

    /// Makes every read of a path below `dir` fail with `EIO` (a bad disk sector); `None`
    /// ends it.
    pub fn fail_reads_under(&self, dir: Option<PathBuf>) {
        *self.state.failing_reads.lock() = dir;
    }

    /// Reads that waited under [`FaultyFs::hold_reads_under`] so far.
    pub fn held_reads(&self) -> u64 {
        self.state.held_reads.load(Ordering::SeqCst)
    }

    /// After a crash, lets a new store open the same directory.
    pub fn restart(&self) {
        self.state.crashed.store(false, Ordering::SeqCst);
        self.state.synced.lock().clear();
    }
}

struct FaultyAppend {
    inner: Box<dyn AppendFile>,
    path: PathBuf,
    state: Arc<FaultState>,
}

impl AppendFile for FaultyAppend {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.state.take_space(data.len() as u64)?;
        self.inner.append(data)
    }

    fn sync(&mut self) -> io::Result<()> {
        // Holding the lock orders this sync wholly before or after a simulated crash.
        let mut synced = self.state.synced.lock();
        self.state.check_alive()?;
        self.inner.sync()?;
        synced.insert(self.path.clone(), self.inner.len());
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.truncate(len)?;
        self.state.synced.lock().insert(self.path.clone(), len);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }
}

struct FaultyRead {
    inner: Arc<dyn ReadAt>,
    path: PathBuf,
    state: Arc<FaultState>,
}

impl ReadAt for FaultyRead {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.state.before_read(&self.path)?;
        self.inner.read_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl FileSystem for FaultyFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        StdFs.create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        StdFs.list(dir)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.state.check_alive()?;
        let inner = StdFs.open_append(path)?;
        self.state.synced.lock().entry(path.to_path_buf()).or_insert(inner.len());
        Ok(Box::new(FaultyAppend { inner, path: path.to_path_buf(), state: self.state.clone() }))
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if self.state.failing_dir.lock().as_ref().is_some_and(|d| path.starts_with(d)) {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.state.take_space(data.len() as u64)?;
        StdFs.write_file(path, data)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.state.before_read(path)?;
        StdFs.read_file(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        self.state.before_read(path)?;
        let inner = StdFs.open_read(path)?;
        Ok(Arc::new(FaultyRead { inner, path: path.to_path_buf(), state: self.state.clone() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        StdFs.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.state.synced.lock().remove(path);
        StdFs.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        StdFs.remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        StdFs.sync_dir(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.state.check_alive()?;
        StdFs.truncate(path, len)
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        StdFs.file_size(path)
    }
}
