//! Opening a data directory: the lock, format versions, and the blocks found.

use super::maintenance::{DELETING_PREFIX, delete_block};
use super::*;

/// Takes an exclusive lock on `<root>/LOCK` so two processes never share a data directory.
pub(super) fn lock_data_dir(root: &Path) -> Result<std::fs::File, StoreError> {
    let path = root.join("LOCK");
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Io {
            path: root.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::ResourceBusy,
                "data directory is in use by another strand process",
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Reads every block's layout version (only that) and refuses a newer one.
pub(super) fn check_block_versions(fs: &dyn FileSystem, blocks_dir: &Path) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: u32,
    }
    let entries = fs
        .list(blocks_dir)
        .map_err(|source| StoreError::Io { path: blocks_dir.display().to_string(), source })?;
    for dir in entries {
        if dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".tmp-") || n.starts_with(DELETING_PREFIX))
        {
            continue;
        }
        let meta = dir.join("meta.json");
        // A missing or unreadable meta.json is damage, handled when the block is opened.
        let Ok(bytes) = fs.read_file(&meta) else { continue };
        if let Ok(Version { format_version }) = serde_json::from_slice(&bytes)
            && format_version > crate::block::FORMAT_VERSION
        {
            return Err(StoreError::NewerFormat {
                path: meta.display().to_string(),
                found: format_version,
                supported: crate::block::FORMAT_VERSION,
            });
        }
    }
    Ok(())
}

/// Moves a damaged block directory to `<root>/corrupt/`, counted and logged.
pub(super) fn set_aside(fs: &dyn FileSystem, root: &Path, dir: &Path, e: &StoreError, stats: &StoreStats) {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    stats.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
    let aside = root.join("corrupt").join(name);
    error!(block = %name, error = %e, moved_to = %aside.display(), "set aside corrupt block");
    let _ = fs.create_dir_all(&root.join("corrupt"));
    if let Err(e) = fs.rename(dir, &aside) {
        error!(block = %name, error = %e, "could not move corrupt block");
    }
}

pub(super) fn open_blocks(
    fs_arc: &Arc<dyn FileSystem>,
    root: &Path,
    stats: &StoreStats,
    cache: &Arc<BlockCache>,
) -> Result<Vec<Arc<Block>>, StoreError> {
    let fs = fs_arc.as_ref();
    let blocks_dir = root.join("blocks");
    let entries = fs
        .list(&blocks_dir)
        .map_err(|source| StoreError::Io { path: blocks_dir.display().to_string(), source })?;
    let mut blocks = Vec::new();
    let mut unopened = Vec::new();
    for dir in entries {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with(".tmp-") {
            warn!(dir = %dir.display(), "removing unfinished block");
            let _ = fs.remove_dir_all(&dir);
            continue;
        }
        if name.starts_with(DELETING_PREFIX) {
            info!(dir = %dir.display(), "finishing the deletion of a block");
            let _ = fs.remove_dir_all(&dir);
            continue;
        }
        match Block::open(fs_arc, &dir, cache, Verify::Lazy) {
            Ok(b) => {
                for what in &b.repaired {
                    warn!(block = %name, damage = %what, "rebuilt a damaged derived file from the block's data");
                }
                stats.derived_files_repaired.fetch_add(b.repaired.len() as u64, Ordering::Relaxed);
                blocks.push(Arc::new(b));
            }
            Err(e) => unopened.push((name, dir, e)),
        }
    }
    // A compaction that crashed after publishing its result leaves its inputs behind,
    // whole or (deleted by a strand before `.deleting-`) in part: nothing of them is lost.
    let replaced: std::collections::HashSet<String> =
        blocks.iter().flat_map(|b| b.meta.compacted_from.iter().cloned()).collect();
    for (name, dir, e) in unopened {
        if replaced.contains(&name) {
            info!(block = %name, "removing what is left of a block replaced by compaction");
            let _ = fs.remove_dir_all(&dir);
            continue;
        }
        set_aside(fs, root, &dir, &e, stats);
    }
    blocks.retain(|b| {
        if replaced.contains(&b.meta.id) {
            info!(block = %b.meta.id, "removing block replaced by compaction");
            let _ = delete_block(fs, &b.dir);
            false
        } else {
            true
        }
    });
    blocks.sort_by(by_data_age);
    Ok(blocks)
}
