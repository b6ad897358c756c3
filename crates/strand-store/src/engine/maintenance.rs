//! Retention (by receive age and by the byte budget) and compaction.

use std::collections::HashMap;

use strand_core::{Resource, Scope, StoredSpan};

use super::*;
use crate::block::write::{ResourceKeys, ScopeKeys, SortedSpans};

/// Most bytes of log files one compaction merges.
const MAX_MERGED_LOG_BYTES: u64 = 64 << 20;

/// How often the disk budget is checked when there is one.
const BUDGET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The maintenance thread: retention and compaction every `maintenance_interval`, and the
/// disk budget every second and after each block write (the flusher wakes it). Running
/// apart from the flusher, it deletes old blocks while a block write is failing for want
/// of space. It stops when the flusher does.
pub(super) fn maintenance_loop(inner: &Inner, wake: &Receiver<()>) {
    let mut last_full = Instant::now();
    loop {
        scrub(inner, SCRUB_SLICE);
        match wake.recv_timeout(BUDGET_CHECK_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if last_full.elapsed() >= inner.cfg.maintenance_interval {
            last_full = Instant::now();
            if let Err(e) = maintain(inner) {
                warn!(error = %e, "maintenance failed");
            }
        } else if inner.cfg.max_disk_bytes.is_some() {
            enforce_retention(inner, inner.cfg.clock.now_unix_nano());
        }
    }
}

/// Longest the scrub keeps at it before the maintenance thread's other work.
const SCRUB_SLICE: Duration = Duration::from_millis(500);

/// Checks the blocks opened at start without verifying ([`Verify::Lazy`]) against their
/// checksums, oldest first, for about `slice`. A block is read without the maintenance lock
/// (block writes go on); the lock is taken only to swap in the checked block, or set aside
/// one whose data does not match, and only if the block is still there (retention may have
/// deleted it meanwhile). A block that could not be read for a passing reason (not
/// damage) is left for a minute.
pub(super) fn scrub(inner: &Inner, slice: Duration) {
    let started = Instant::now();
    while started.elapsed() < slice {
        let block = {
            let later = inner.scrub_later.lock();
            let st = inner.state.read();
            st.blocks
                .iter()
                .find(|b| !b.verified() && later.get(&b.meta.id).is_none_or(|t| t.elapsed() >= SCRUB_RETRY))
                .cloned()
        };
        let Some(block) = block else { return };
        let checked = Block::open(&inner.fs, &block.dir, &inner.cache, Verify::Full);
        let _guard = inner.maintenance.lock();
        let mut st = inner.state.write();
        let Some(slot) = st.blocks.iter_mut().find(|b| Arc::ptr_eq(b, &block)) else { continue };
        match checked {
            Ok(checked) => {
                for what in &checked.repaired {
                    warn!(block = %checked.meta.id, damage = %what, "rebuilt a damaged derived file from the block's data");
                }
                inner
                    .stats
                    .derived_files_repaired
                    .fetch_add(checked.repaired.len() as u64, Ordering::Relaxed);
                if let Some(h) = block.handoff() {
                    checked.set_handoff(h);
                }
                *slot = Arc::new(checked);
            }
            Err(e) if is_damage(&e) => {
                st.blocks.retain(|b| !Arc::ptr_eq(b, &block));
                drop(st);
                startup::set_aside(inner.fs.as_ref(), &inner.root, &block.dir, &e, &inner.stats);
            }
            Err(e) => {
                drop(st);
                warn!(block = %block.meta.id, error = %e, "could not verify a block; will try again in a minute");
                inner.scrub_later.lock().insert(block.meta.id.clone(), Instant::now());
            }
        }
    }
}

/// How long the scrub leaves a block it could not read for a passing reason.
const SCRUB_RETRY: Duration = Duration::from_secs(60);

/// Whether a block failed to open because of what its files hold (or lack), rather than
/// a passing failure to read them.
fn is_damage(e: &StoreError) -> bool {
    match e {
        StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        StoreError::Corrupt { .. } | StoreError::NewerFormat { .. } => true,
        _ => false,
    }
}

/// Retention, then compaction (nothing is merged that is about to be deleted; nothing at
/// all while over the disk budget, since a merge needs room for its result).
pub(super) fn maintain(inner: &Inner) -> Result<bool, StoreError> {
    enforce_retention(inner, inner.cfg.clock.now_unix_nano());
    if inner.over_disk_budget.load(Ordering::Relaxed) > 0 {
        return Ok(false);
    }
    compact(inner)
}

/// Clears the disk-budget refusal once blocks and WAL fit the budget again.
pub(super) fn recheck_disk_budget(inner: &Inner) {
    let Some(budget) = inner.cfg.max_disk_bytes else { return };
    let wal = Wal::disk_bytes(inner.fs.as_ref(), &inner.root.join("wal"));
    let blocks: u64 = inner.state.read().blocks.iter().map(|b| b.disk_bytes).sum();
    if wal + blocks <= budget {
        inner.over_disk_budget.store(0, Ordering::Relaxed);
    }
}

/// `d` in nanoseconds, at most `u64::MAX`.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Rows of a block that count against `compaction_target_spans`.
fn rows(b: &Block) -> u64 {
    b.meta.span_count + b.meta.log_count
}

/// A group of small blocks to merge together: its eligible blocks, and whether all are.
type Group<'a> = (Vec<&'a Arc<Block>>, bool);

/// The run of small blocks (under half of `compaction_target_spans` rows each) to merge
/// next, within the target and the text bounds; fewer than two: nothing to do. `blocks`
/// come in data age order; only those `eligible` admits are merged. `unwritten_since` is
/// the earliest receive time of data not yet in a block (`u64::MAX`: none).
///
/// Merges go by time in two stages ([`StoreConfig::compaction_window`]): the blocks cut
/// within one window are merged together (level 1); then a day's (24 windows') level-1
/// blocks and the blocks left alone in their window (level 2), which are not merged again.
/// A group is merged once it is over: its time has passed by the head's longest age, no
/// data received in it waits to be written, and each of its blocks is eligible (verified;
/// in a cluster, settled in object storage). Before that, it is merged as soon as a run of
/// its blocks reaches half the target (the merged block is then not small). Windows go
/// before days, each oldest first. A span is so rewritten twice at most; merging every new
/// small block into a growing one rewrote it once for every block that joined.
pub(crate) fn choose_run<'a>(
    blocks: impl Iterator<Item = &'a Arc<Block>>,
    eligible: impl Fn(&Block) -> bool,
    cfg: &StoreConfig,
    now: u64,
    unwritten_since: u64,
) -> Vec<Arc<Block>> {
    let small = blocks.filter(|b| rows(b) < cfg.compaction_target_spans / 2);
    let window = nanos(cfg.compaction_window);
    if window == 0 {
        return first_run(small.filter(|b| eligible(b)), cfg, true);
    }
    let day = window.saturating_mul(24);
    let grace = nanos(cfg.head_max_age);
    // Groups by (stage, index of the window or day): their eligible blocks in data age
    // order, and whether all of them are.
    let mut groups: std::collections::BTreeMap<(u8, u64), Group<'a>> = Default::default();
    let mut add = |key, b: &'a Arc<Block>| {
        let (members, settled) = groups.entry(key).or_insert((Vec::new(), true));
        if eligible(b) {
            members.push(b);
        } else {
            *settled = false;
        }
    };
    for b in small {
        let start = b.meta.min_received_unix_nano;
        match b.meta.compaction_level {
            0 => add((0, start / window), b),
            1 => add((1, start / day), b),
            _ => {}
        }
    }
    let over = |(stage, index): (u8, u64), settled: bool| {
        let end = index.saturating_add(1).saturating_mul(if stage == 0 { window } else { day });
        settled && now >= end.saturating_add(grace) && unwritten_since >= end
    };
    // The blocks of a window that is over and not merged (alone, or beyond a bound) wait
    // for their day.
    let leftovers: Vec<(u64, &Arc<Block>)> = groups
        .iter()
        .filter(|(key, (_, settled))| key.0 == 0 && over(**key, *settled))
        .flat_map(|(key, (members, _))| members.iter().map(move |&b| (key.1 / 24, b)))
        .collect();
    for (day_index, b) in leftovers {
        let (members, _) = groups.entry((1, day_index)).or_insert((Vec::new(), true));
        members.push(b);
        members.sort_by(|a, b| by_data_age(a, b));
    }
    for (key, (members, settled)) in groups {
        let run = first_run(members.into_iter(), cfg, over(key, settled));
        if run.len() >= 2 {
            return run;
        }
    }
    Vec::new()
}

/// The first run of `blocks` (consecutive, within the bounds) ready to merge: two blocks
/// at least, and `closed` (no more are coming) or half the target reached.
fn first_run<'a>(
    blocks: impl Iterator<Item = &'a Arc<Block>>,
    cfg: &StoreConfig,
    closed: bool,
) -> Vec<Arc<Block>> {
    let target = cfg.compaction_target_spans;
    let max_text = cfg.compaction_max_text_bytes;
    let log_bytes = |b: &Block| b.logs.as_ref().map_or(0, |l| l.disk_bytes);
    let ready = |run: &[Arc<Block>], total: u64| run.len() >= 2 && (closed || total >= target / 2);
    let mut run: Vec<Arc<Block>> = Vec::new();
    let (mut total, mut total_log_bytes, mut total_text) = (0, 0, 0);
    for b in blocks {
        // Log text compresses about 5 to 10 times: bounding the merged log files keeps
        // each of the merge's string columns well under what one block may hold; span
        // text is bounded by its decoded size, which the Parquet footers give.
        let text = b.span_text_bytes();
        if total + rows(b) > target
            || total_log_bytes + log_bytes(b) > MAX_MERGED_LOG_BYTES
            || total_text + text > max_text
        {
            if ready(&run, total) {
                return run;
            }
            run.clear();
            (total, total_log_bytes, total_text) = (0, 0, 0);
            if rows(b) > target || log_bytes(b) > MAX_MERGED_LOG_BYTES || text > max_text {
                // Too big to merge with anything.
                continue;
            }
        }
        total += rows(b);
        total_log_bytes += log_bytes(b);
        total_text += text;
        run.push(b.clone());
    }
    if ready(&run, total) { run } else { Vec::new() }
}

/// The level of a merge of `blocks` (see [`choose_run`]): 1 for blocks cut within one
/// window, 2 otherwise; 0 when compaction does not go by windows.
fn merged_level(blocks: &[Arc<Block>], cfg: &StoreConfig) -> u32 {
    let window = nanos(cfg.compaction_window);
    if window == 0 {
        // No levels without windows (see [`choose_run`]).
        return 0;
    }
    let within = |b: &Arc<Block>| (b.meta.compaction_level, b.meta.min_received_unix_nano / window);
    let first = blocks.first().map(within);
    if blocks.iter().all(|b| Some(within(b)) == first && b.meta.compaction_level == 0) { 1 } else { 2 }
}

/// Rows a merge decodes from each input at a time.
const MERGE_SLICE_ROWS: u64 = 8 * 1024;

/// One input of a merge: its spans in row order (trace id, start, span id), decoded a
/// slice at a time by one reader.
struct MergeInput<'a> {
    block: &'a Block,
    rows: crate::block::read::RowsInOrder,
    slice: std::vec::IntoIter<StoredSpan>,
    last: Option<RowKey>,
    /// Rows taken so far, checked against `meta.json` at the end.
    taken: u64,
}

impl MergeInput<'_> {
    fn next(&mut self) -> Result<Option<StoredSpan>, StoreError> {
        let damaged = |what: String| {
            let path = self.block.dir.join("spans.parquet");
            Err(FormatError::invalid(what).corrupt_at(path.display()))
        };
        let span = loop {
            if let Some(s) = self.slice.next() {
                break s;
            }
            match self.rows.next_batch()? {
                Some(rows) => self.slice = rows.into_iter(),
                None if self.taken == self.block.meta.span_count => return Ok(None),
                None => {
                    let want = self.block.meta.span_count;
                    return damaged(format!("{} rows where meta.json says {want}", self.taken));
                }
            }
        };
        // The merge relies on each input's order; a block out of order is damaged.
        let key = row_key(&span);
        if self.last.is_some_and(|last| key < last) {
            return damaged("rows out of order".into());
        }
        self.last = Some(key);
        self.taken += 1;
        Ok(Some(span))
    }
}

/// A span's place in a block's row order: trace id, start, span id.
type RowKey = (u128, u64, u64);

/// The [`RowKey`] of a span.
fn row_key(s: &StoredSpan) -> RowKey {
    (
        u128::from_be_bytes(s.span.trace_id.0),
        s.span.start_time_unix_nano,
        u64::from_be_bytes(s.span.span_id.0),
    )
}

/// Merges `blocks` (oldest data first, so the first-written copy of a duplicate wins)
/// into one block written (not published) in `inner`'s directory, naming them in its
/// `compacted_from`; returns it with its open traces (see
/// [`IndexBuilder::open_trace_ids`]), or `None` when retention deleted an input while the
/// merge was paced (see [`Pace`]).
///
/// Each input's rows are already in order, so they are read side by side a slice at a
/// time and written as they come: a merge holds a slice of each input and one chunk of
/// the output's columns, not a copy of the merged block.
pub(crate) fn merge(
    inner: &Inner,
    blocks: &[Arc<Block>],
) -> Result<Option<(Block, Vec<TraceId>)>, StoreError> {
    let mut index = IndexBuilder::new();
    let mut logs = LogBlockBuilder::default();
    let mut links = Vec::new();
    let mut searches = Vec::with_capacity(blocks.len());
    for b in blocks {
        if let Some(l) = &b.logs {
            logs.append_stored(&l.read_all()?).map_err(|e| e.corrupt_at(b.dir.display()))?;
        }
        let search = b.search_index()?;
        links.extend(search.links());
        searches.push(search);
    }
    let encoding = |e: FormatError| e.corrupt_at("compaction (encoding)");
    let early_end = blocks.iter().any(|b| b.has_early_end());
    let traces = blocks.iter().map(|b| b.meta.trace_count).sum();
    let mut out = SortedSpans::new(early_end, traces).map_err(encoding)?;
    let mut inputs: Vec<MergeInput> = blocks
        .iter()
        .map(|b| {
            let rows = b.rows_in_order(MERGE_SLICE_ROWS as usize)?;
            Ok(MergeInput { block: b, rows, slice: Vec::new().into_iter(), last: None, taken: 0 })
        })
        .collect::<Result<_, StoreError>>()?;
    // The smallest key first; among copies of one span, the oldest input's.
    let mut next: std::collections::BinaryHeap<std::cmp::Reverse<(RowKey, usize)>> =
        std::collections::BinaryHeap::new();
    let mut heads: Vec<Option<StoredSpan>> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter_mut().enumerate() {
        let first = input.next()?;
        if let Some(s) = &first {
            next.push(std::cmp::Reverse((row_key(s), i)));
        }
        heads.push(first);
    }
    // Spans go to the search index by input, each with its input's receive times.
    let mut for_index: Vec<Vec<StoredSpan>> = vec![Vec::new(); inputs.len()];
    let mut add_to_index = |i: usize, spans: &mut Vec<StoredSpan>| {
        let search = &searches[i];
        let b = &blocks[i];
        let received =
            |id: &TraceId| search.part(id).map_or(b.meta.min_received_unix_nano, |p| p.min_received);
        index.add_stored(spans, received);
        spans.clear();
    };
    let mut origins = HeldOrigins::default();
    let mut last = None;
    let mut pace = Pace::new(inner, blocks);
    let mut merged_rows = 0u64;
    while let Some(std::cmp::Reverse((key, i))) = next.pop() {
        let Some(span) = heads[i].take() else { continue };
        merged_rows += 1;
        if merged_rows.is_multiple_of(MERGE_SLICE_ROWS) && !pace.wait(merged_rows) {
            return Ok(None);
        }
        if let Some(following) = inputs[i].next()? {
            next.push(std::cmp::Reverse((row_key(&following), i)));
            heads[i] = Some(following);
        }
        if last == Some(key) {
            // A later copy of a span an older input holds (a retry cut into two blocks).
            continue;
        }
        last = Some(key);
        let keys = origins.keys(&mut out, &span).map_err(encoding)?;
        out.push(&span.span, keys).map_err(encoding)?;
        for_index[i].push(span);
        if for_index[i].len() as u64 >= MERGE_SLICE_ROWS {
            // All inputs, oldest first: the index keeps the first copy of a span it sees.
            for (i, spans) in for_index.iter_mut().enumerate() {
                add_to_index(i, spans);
            }
        }
    }
    for (i, spans) in for_index.iter_mut().enumerate() {
        add_to_index(i, spans);
    }
    // Cross edges stay cross edges, also between two inputs: another block may hold the
    // same one (a retried copy of a span), and each is counted once by its child span.
    let open = index.open_trace_ids();
    // Retried copies among the inputs are merged into one span, whose edges are counted
    // once from the merged spans.
    let index = index.finish_with(links, &Default::default());
    let min_received = blocks.iter().map(|b| b.meta.min_received_unix_nano).min().unwrap_or(0);
    let max_received = blocks.iter().map(|b| b.meta.max_received_unix_nano).max().unwrap_or(0);
    let ids: Vec<String> = blocks.iter().map(|b| b.meta.id.clone()).collect();
    let level = merged_level(blocks, &inner.cfg);
    let spans = |id: String| {
        let mut block = out.finish(id, min_received, max_received)?;
        block.meta.compaction_level = level;
        Ok(block)
    };
    Ok(Some((write_block(inner, spans, logs, &index, &ids)?, open)))
}

/// Paces a merge to [`StoreConfig::compaction_bytes_per_second`]: every slice of rows
/// merged stands for its share of the inputs' bytes, and the merge waits until those could
/// have been read at the rate. The merge runs on the maintenance thread, so the disk
/// budget, which that thread checks every second, is checked here meanwhile.
struct Pace<'a> {
    inner: &'a Inner,
    inputs: &'a [Arc<Block>],
    started: Instant,
    /// The inputs' bytes per row over the rate; zero: no pacing.
    per_row: Duration,
    budget_checked: Instant,
}

impl<'a> Pace<'a> {
    fn new(inner: &'a Inner, inputs: &'a [Arc<Block>]) -> Self {
        let rate = inner.cfg.compaction_bytes_per_second;
        let rows: u64 = inputs.iter().map(|b| b.meta.span_count).sum();
        let bytes: u64 = inputs.iter().map(|b| b.disk_bytes).sum();
        let per_row = if rate == 0 || rows == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(bytes as f64 / rate as f64 / rows as f64)
        };
        let now = Instant::now();
        Self { inner, inputs, started: now, per_row, budget_checked: now }
    }

    /// Waits, if `rows` came early, in steps (a closing store does not wait for the pace),
    /// checking the disk budget every second. Returns `false` when retention deleted an
    /// input meanwhile: the merge is void.
    fn wait(&mut self, rows: u64) -> bool {
        if self.per_row.is_zero() {
            return true;
        }
        // A pace past what an Instant holds (a rate of a few bytes a second) is no pace.
        let pace = self.per_row.saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX));
        let Some(due) = self.started.checked_add(pace) else { return true };
        let mut inputs_kept = true;
        while !self.inner.closing.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.inner.cfg.max_disk_bytes.is_some() && now - self.budget_checked >= BUDGET_CHECK_INTERVAL {
                self.budget_checked = now;
                enforce_retention(self.inner, self.inner.cfg.clock.now_unix_nano());
                inputs_kept = all_held(&self.inner.state.read(), self.inputs);
                if !inputs_kept {
                    break;
                }
            }
            if now >= due {
                break;
            }
            // Counted as it goes, so `/metrics` shows a long wait while it lasts.
            let step = (due - now).min(Duration::from_millis(100));
            std::thread::sleep(step);
            self.inner.stats.compaction_paced_micros.fetch_add(step.as_micros() as u64, Ordering::Relaxed);
        }
        inputs_kept
    }
}

/// The dictionary keys of the resources and scopes a merge has met, by the address of
/// their shared values (a slice of decoded rows shares one per distinct value), which
/// are held so that no other value takes an address while the merge runs.
#[derive(Default)]
struct HeldOrigins {
    seen: HashMap<(usize, usize), (ResourceKeys, ScopeKeys)>,
    held: Vec<(Arc<Resource>, Arc<Scope>)>,
}

impl HeldOrigins {
    fn keys(
        &mut self,
        out: &mut SortedSpans,
        s: &StoredSpan,
    ) -> Result<(ResourceKeys, ScopeKeys), FormatError> {
        let at = (Arc::as_ptr(&s.resource) as usize, Arc::as_ptr(&s.scope) as usize);
        if let Some(&keys) = self.seen.get(&at) {
            return Ok(keys);
        }
        let keys = out.origin_keys(&s.resource, &s.scope)?;
        self.seen.insert(at, keys);
        self.held.push((s.resource.clone(), s.scope.clone()));
        Ok(keys)
    }
}

/// Whether the store still holds every one of `blocks` (retention may delete them while
/// they are merged).
fn all_held(st: &State, blocks: &[Arc<Block>]) -> bool {
    blocks.iter().all(|c| st.blocks.iter().any(|b| Arc::ptr_eq(b, c)))
}

/// How long the inputs of a failed compaction are left out of compaction: a block that
/// cannot be merged (an unreadable file, a bug) would otherwise fail every run, and, as
/// runs are chosen oldest first, stop every other block from being merged.
const COMPACTION_RETRY: Duration = Duration::from_secs(600);

/// The inputs of a merge that failed with `e` to blame: the one whose file failed, when the
/// error names one; else all of them.
pub fn failed_inputs<'a>(e: &StoreError, inputs: &'a [Arc<Block>]) -> Vec<&'a Arc<Block>> {
    let path = match e {
        StoreError::Io { path, .. } | StoreError::Corrupt { path, .. } => Some(Path::new(path)),
        _ => None,
    };
    match inputs.iter().find(|b| path.is_some_and(|p| p.starts_with(&b.dir))) {
        Some(culprit) => vec![culprit],
        None => inputs.iter().collect(),
    }
}

/// Merges the oldest run of small blocks. Returns whether it merged anything. A merge that
/// fails leaves the input whose file failed (all of them when the error names none) out of
/// compaction for [`COMPACTION_RETRY`] (counted in `strand_compaction_failures_total`), so
/// the other blocks are merged meanwhile, and has the scrub check that input again.
///
/// Only choosing the inputs and publishing the result hold the maintenance lock: block
/// writes go on while the inputs are read and merged (and retention and the scrub too when
/// the merge runs off the maintenance thread; on it, a paced merge runs retention for the
/// disk budget itself, see [`Pace`]). Inputs that retention deleted meanwhile make the
/// merge void: it is discarded, not published.
pub(super) fn compact(inner: &Inner) -> Result<bool, StoreError> {
    let _compacting = inner.compaction.lock();
    let candidates: Vec<Arc<Block>> = {
        let _guard = inner.maintenance.lock();
        let st = inner.state.read();
        let mut later = inner.compaction_later.lock();
        later.retain(|_, failed| failed.elapsed() < COMPACTION_RETRY);
        // Blocks a merge failed with are left out as if absent: their window is not held
        // open by them. A block not yet verified is not read whole before the scrub has
        // checked it.
        let blocks = st.blocks.iter().filter(|b| !later.contains_key(&b.meta.id));
        let now = inner.cfg.clock.now_unix_nano();
        choose_run(blocks, |b| b.verified(), &inner.cfg, now, st.unwritten_since())
    };
    if candidates.len() < 2 {
        return Ok(false);
    }
    let merged = merge(inner, &candidates).inspect_err(|e| {
        let failed = failed_inputs(e, &candidates);
        let ids: Vec<&str> = failed.iter().map(|b| b.meta.id.as_str()).collect();
        warn!(error = %e, blocks = ?ids, "compaction failed; leaving the blocks out of compaction for ten minutes");
        inner.stats.compaction_failures.fetch_add(1, Ordering::Relaxed);
        inner.compaction_later.lock().extend(failed.iter().map(|b| (b.meta.id.clone(), Instant::now())));
        if let [culprit] = failed[..] {
            // The scrub checks it again, whole: damage sets it aside; a read that fails
            // for a passing reason is retried.
            culprit.unverify();
        }
    })?;
    let Some((merged, open)) = merged else {
        info!("retention deleted an input of the compaction while it was paced; stopping it");
        return Ok(false);
    };
    let ids: Vec<String> = candidates.iter().map(|b| b.meta.id.clone()).collect();
    let (merged_id, merged_spans) = (merged.meta.id.clone(), merged.meta.span_count);
    let guard = inner.maintenance.lock();
    {
        let mut st = inner.state.write();
        if !all_held(&st, &candidates) {
            drop(st);
            info!(block = %merged.meta.id, "retention deleted an input of the compaction meanwhile; discarding its result");
            if let Err(e) = delete_block(inner.fs.as_ref(), &merged.dir) {
                warn!(block = %merged.meta.id, error = %e, "could not delete a discarded compaction result");
            }
            return Ok(false);
        }
        st.blocks.retain(|b| !ids.contains(&b.meta.id));
        st.blocks.push(Arc::new(merged));
        st.blocks.sort_by(by_data_age);
    }
    // Under the maintenance lock, as a cut prunes the remembered open traces of blocks it
    // does not see: recorded before publication, a cut could forget them.
    inner.open_traces.record(&merged_id, open);
    drop(guard);
    info!(inputs = ids.len(), spans = merged_spans, block = %merged_id, "compacted blocks");
    for b in &candidates {
        if let Err(e) = delete_block(inner.fs.as_ref(), &b.dir) {
            warn!(block = %b.meta.id, error = %e, "could not delete compacted block");
        }
    }
    inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

pub(super) fn enforce_retention(inner: &Inner, now: u64) {
    let _guard = inner.maintenance.lock();
    let cutoff = now.saturating_sub(inner.cfg.retention.as_nanos() as u64);
    let wal_bytes = Wal::disk_bytes(inner.fs.as_ref(), &inner.root.join("wal"));
    let doomed: Vec<Arc<Block>> = {
        let mut st = inner.state.write();
        let mut doomed = Vec::new();
        // A block not yet handed over to object storage is the only copy of its data.
        let held = inner.cfg.keep_until_handed_over;
        let deletable = |b: &Block| !held || b.handoff().is_some();
        st.blocks.retain(|b| {
            let keep = b.meta.max_received_unix_nano >= cutoff || !deletable(b);
            if !keep {
                doomed.push(b.clone());
            }
            keep
        });
        if let Some(budget) = inner.cfg.max_disk_bytes {
            let mut total: u64 = wal_bytes + st.blocks.iter().map(|b| b.disk_bytes).sum::<u64>();
            // Blocks are kept oldest data first: the oldest go first.
            while total > budget {
                let Some(at) = st.blocks.iter().position(|b| deletable(b)) else { break };
                let b = st.blocks.remove(at);
                total -= b.disk_bytes;
                doomed.push(b);
            }
            // What is left over the budget is data not yet in blocks: refuse writes until
            // cuts turn it into (smaller) blocks.
            let over = if total > budget { total } else { 0 };
            if inner.over_disk_budget.swap(over, Ordering::Relaxed) == 0 && over > 0 {
                warn!(stored = over, budget, "the WAL alone is over the disk budget; refusing writes");
            }
        }
        doomed
    };
    for b in doomed {
        info!(block = %b.meta.id, spans = b.meta.span_count, "retention deleted block");
        inner.stats.retention_deleted_blocks.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = delete_block(inner.fs.as_ref(), &b.dir) {
            warn!(block = %b.meta.id, error = %e, "could not delete block");
        }
    }
}

/// Name prefix of a block directory being deleted.
pub(super) const DELETING_PREFIX: &str = ".deleting-";

/// Deletes a block directory so that a crash part-way never leaves a half block under a
/// block's name (which the next start would report as damage): it is renamed to
/// `.deleting-<id>` (durably), then removed; start-up finishes such deletions.
pub(super) fn delete_block(fs: &dyn FileSystem, dir: &Path) -> std::io::Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let doomed = dir.with_file_name(format!("{DELETING_PREFIX}{name}"));
    fs.rename(dir, &doomed)?;
    if let Some(parent) = dir.parent() {
        fs.sync_dir(parent)?;
    }
    fs.remove_dir_all(&doomed)
}
