//! Compaction: cutting the head into blocks, merging blocks, and retention.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{
    lock, now_ms, read, write, write_head_block, write_series_block, CompactionReport, Db, SERIES_PER_BATCH,
};
use crate::block::{Block, BlockMeta, BlockWriter, STALE_SERIES_HINT, TMP_SUFFIX};
use crate::head::SeriesRef;
use crate::start::merge_runs;
use crate::wal;
use crate::{Error, HistogramSample, Labels, Samples, StartRun, Timestamp};

/// Runs [`Db::compact`] every `every` until the database is dropped.
pub(super) fn spawn_compactor(db: Weak<Db>, every: Duration) {
    let weak = db.clone();
    let spawned = std::thread::Builder::new().name("promflow-compactor".into()).spawn(move || loop {
        // woken early by a commit that leaves the head with a range to cut, or by `close`
        std::thread::park_timeout(every);
        let Some(db) = weak.upgrade() else { return };
        if db.closing.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = db.compact() {
            tracing::error!(error = %e, "compaction failed; retrying at the next interval");
        }
    });
    match spawned {
        Ok(handle) => {
            if let Some(db) = db.upgrade() {
                *lock(&db.compactor) = Some(handle);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start the compaction thread; blocks will not be cut")
        }
    }
}

/// Hands the pages glibc's allocator holds free back to the system. Writing blocks and
/// dropping series free hundreds of megabytes at a million series; glibc keeps what lies
/// below its heaps' tops, so without this the resident memory stays at the compaction's peak.
/// (The `promflow` binary allocates with jemalloc, whose background thread does this on its
/// own; glibc still serves a program that embeds the storage without it, and C code.)
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether a head spanning `min..=max` has a block range to cut: it spans more than one and
/// a half block durations (Prometheus's rule), so the newest half block stays appendable.
pub(super) fn head_compactable(min: Timestamp, max: Timestamp, block_duration: i64) -> bool {
    max.saturating_sub(min) > (block_duration / 2).saturating_mul(3)
}

impl Db {
    /// Cuts every complete block range out of the head, merges blocks, and applies
    /// retention. Runs by itself every [`DbOptions::compaction_interval`]; safe to call any
    /// time (calls are serialised).
    pub fn compact(&self) -> Result<CompactionReport, Error> {
        let _running = lock(&self.compacting);
        self.counters.compactions_triggered.fetch_add(1, Ordering::Relaxed);
        let mut report = CompactionReport::default();
        self.load_new_blocks();
        while let Some(deleted) = self.compact_head()? {
            report.head_blocks += 1;
            report.wal_segments_deleted += deleted;
        }
        // a cut has just taken out every series without samples in the range kept
        if report.head_blocks == 0 {
            report.stale_series_removed = self.compact_stale_series()?;
        }
        report.merged_blocks = self.merge_blocks()?;
        report.deleted_blocks = self.apply_retention();
        if report.head_blocks + report.stale_series_removed + report.merged_blocks > 0 {
            release_free_memory();
        }
        Ok(report)
    }

    /// Writes the head's oldest block range to a block once the head spans more than one and
    /// a half block durations, then truncates the head and checkpoints the WAL. Returns the
    /// number of WAL segments deleted, or `None` when there was nothing to cut.
    fn compact_head(&self) -> Result<Option<usize>, Error> {
        let dur = self.opts.block_duration.max(1);
        let Some((hmin, hmax)) = read(&self.head).time_range() else { return Ok(None) };
        if !head_compactable(hmin, hmax, dur) {
            return Ok(None);
        }
        // a head reaching back to the oldest timestamps cuts its first range from there
        let range_from = |hmin: Timestamp| hmin.div_euclid(dur).checked_mul(dur).unwrap_or(Timestamp::MIN);
        let mut mint = range_from(hmin);
        let mut maxt = mint.saturating_add(dur);
        // in-order appends below `maxt` are already refused (the head spans more than 1.5
        // blocks); out-of-order ones are until the head is truncated. Set under the lock that
        // appenders register their oldest sample with, then wait for the appenders that
        // staged samples in the range: the range is complete and immutable while written.
        {
            let _open = lock(&self.open_appends);
            self.ooo_floor.store(maxt, Ordering::SeqCst);
            self.min_valid.fetch_max(maxt, Ordering::SeqCst);
        }
        self.wait_for_appends_below(maxt, self.opts.cut_waits_for_appenders);
        // what the waited-for appenders committed may lie before the planned range (admitted
        // before other writers moved the bounds on): the cut starts from the head's oldest
        // sample as it is now, so that the truncation below loses none. The range only moves
        // earlier, below the `maxt` every append was held to.
        let now_oldest = read(&self.head).time_range().map_or(hmin, |r| r.0);
        if range_from(now_oldest) < mint {
            mint = range_from(now_oldest);
            maxt = mint.saturating_add(dur);
        }
        let started = Instant::now();
        let written = write_head_block(&self.blocks_dir, || read(&self.head), mint, maxt);
        let written = written.and_then(|meta| meta.map_or(Ok(()), |m| self.add_block(&m)));
        self.counters.compaction(written.is_ok(), started.elapsed());
        if let Err(e) = written {
            self.ooo_floor.store(Timestamp::MIN, Ordering::SeqCst);
            return Err(e);
        }
        self.floor.fetch_max(maxt, Ordering::SeqCst);
        self.min_valid.fetch_max(maxt, Ordering::SeqCst);
        let mut w = lock(&self.writer);
        let removed = write(&self.head).truncate(maxt);
        self.counters.head_truncations.fetch_add(1, Ordering::Relaxed);
        self.counters.series_removed.fetch_add(removed as u64, Ordering::Relaxed);
        let head = read(&self.head);
        self.ooo_floor.store(Timestamp::MIN, Ordering::SeqCst);
        let keep_from = {
            let mut holds = lock(&self.wal_holds);
            holds.retain(|h| h.strong_count() > 0);
            holds.iter().filter_map(|h| h.upgrade()).map(|h| h.load(Ordering::Acquire)).min()
        };
        let hold = (keep_from.unwrap_or(u64::MAX), maxt.saturating_sub(crate::wal_tail::HOLD_MAX_MS));
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        let deleted = w.wal.checkpoint(head.all_series(), maxt, hold).inspect_err(|_| {
            // the head is truncated either way; the WAL keeps segments it could have dropped
            self.counters.checkpoints_failed.fetch_add(1, Ordering::Relaxed);
            self.counters.head_truncations_failed.fetch_add(1, Ordering::Relaxed);
        })?;
        tracing::info!(
            mint,
            maxt,
            removed_series = removed,
            wal_segments_deleted = deleted,
            "cut a block from the head"
        );
        Ok(Some(deleted))
    }

    /// Once at least the threshold's fraction of the head's series are stale (their newest
    /// sample a staleness marker: their target is gone), writes those series to blocks, one
    /// per block range their samples span, and takes them out of the head, as Prometheus's
    /// `stale_series_compaction_threshold` does. Series churn (pods replaced, rollouts)
    /// otherwise piles up in memory until their range is cut, up to three hours later.
    /// Returns how many series were taken out.
    ///
    /// A series that takes a sample while its blocks are written stays in the head (its
    /// samples are then in both, and queries and merges see each once). The removal is
    /// written to the WAL, so a restart does not bring the series back. The blocks carry
    /// [`STALE_SERIES_HINT`]: they do not move the head's lower bound at open, and they are
    /// merged only once the head has cut their range.
    fn compact_stale_series(&self) -> Result<usize, Error> {
        let threshold = f64::from_bits(self.stale_threshold.load(Ordering::Relaxed));
        let dur = self.opts.block_duration.max(1);
        let (found, span) = {
            let head = read(&self.head);
            let (stale, all) = (head.num_stale_series(), head.num_series());
            if threshold <= 0.0 || stale == 0 || (stale as f64) < threshold * all as f64 {
                return Ok(0);
            }
            // the regular cut, due within a tenth of a block, takes them out anyway
            if head.time_range().is_some_and(|(min, max)| max.saturating_sub(min) > dur / 10 * 14) {
                return Ok(0);
            }
            let found = head.stale_series();
            let span = found
                .iter()
                .filter_map(|s| head.time_range_of(s.r))
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
            (found, span)
        };
        let Some((first, last)) = span else { return Ok(0) };
        self.counters.stale_compactions.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let refs: Vec<SeriesRef> = found.iter().map(|s| s.r).collect();
        let mut mint = first.div_euclid(dur).checked_mul(dur).unwrap_or(Timestamp::MIN);
        while mint <= last {
            let maxt = mint.saturating_add(dur);
            let written = write_series_block(
                &self.blocks_dir,
                || read(&self.head),
                &refs,
                mint,
                maxt,
                Some(STALE_SERIES_HINT),
            );
            let written = written.and_then(|meta| meta.map_or(Ok(()), |m| self.add_block(&m)));
            if let Err(e) = written {
                self.counters.stale_compactions_failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            if maxt == Timestamp::MAX {
                break;
            }
            mint = maxt;
        }
        let mut w = lock(&self.writer);
        let locked = Instant::now();
        let removed = write(&self.head).remove_series_unchanged(&found);
        let locked = locked.elapsed();
        let super::Writer { wal, buf, .. } = &mut *w;
        buf.clear();
        wal::encode_series_removed(buf, removed.iter().copied());
        // the series are out of the head already: a failed write leaves them in the WAL, so
        // a restart brings them back beside their blocks (queries see each sample once)
        if let Err(e) = wal.write(buf, Timestamp::MIN) {
            self.counters.stale_compactions_failed.fetch_add(1, Ordering::Relaxed);
            self.counters.wal_writes_failed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        drop(w);
        self.counters.series_removed.fetch_add(removed.len() as u64, Ordering::Relaxed);
        lock(&self.counters.stale_compaction_seconds).observe(started.elapsed().as_secs_f64());
        tracing::info!(
            series = removed.len(),
            changed = found.len() - removed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            // how long appends waited on the removal
            head_locked_ms = locked.as_millis() as u64,
            "took stale series out of the head into blocks"
        );
        Ok(removed.len())
    }

    /// Opens blocks that appeared in the blocks folder since open (written by
    /// `promflow tsdb create-blocks-from`), as Prometheus picks up backfilled blocks.
    fn load_new_blocks(&self) {
        let Ok(entries) = std::fs::read_dir(&self.blocks_dir) else { return };
        let known: BTreeSet<String> = read(&self.blocks).iter().map(|b| b.meta().ulid.clone()).collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX)
                || known.contains(&name)
                || !entry.path().join(crate::block::META_FILE).is_file()
            {
                continue;
            }
            match Block::open(&entry.path()) {
                Ok(b) => {
                    tracing::info!(block = %name, "loaded a block added to the data directory");
                    let mut blocks = write(&self.blocks);
                    blocks.push(Arc::new(b));
                    blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
                    self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if lock(&self.unreadable_blocks).insert(name.clone()) {
                        self.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(block = %name, error = %e, "skipping unreadable new block");
                    }
                }
            }
        }
    }

    /// Opens a block just written and makes it visible to queries.
    fn add_block(&self, meta: &BlockMeta) -> Result<(), Error> {
        let block = Arc::new(Block::open(&self.blocks_dir.join(&meta.ulid))?);
        let mut blocks = write(&self.blocks);
        blocks.push(block);
        blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
        self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes blocks from the query path and deletes their directories.
    fn delete_blocks(&self, ulids: &BTreeSet<String>) {
        let gone: Vec<Arc<Block>> = {
            let mut blocks = write(&self.blocks);
            let (gone, kept) = blocks.drain(..).partition(|b| ulids.contains(&b.meta().ulid));
            *blocks = kept;
            gone
        };
        if !gone.is_empty() {
            self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        }
        for b in gone {
            if let Err(e) = std::fs::remove_dir_all(b.dir()) {
                tracing::warn!(block = %b.dir().display(), error = %e, "could not delete block directory");
            }
        }
    }

    /// Merges overlapping blocks, and blocks that together fill an aligned range three times
    /// larger than theirs (6h, 18h, 54h, … for 2h blocks, up to `max_block_duration`). Returns the number
    /// of blocks written.
    fn merge_blocks(&self) -> Result<usize, Error> {
        let mut written = 0;
        loop {
            let mut blocks = read(&self.blocks).clone();
            // a stale-series block whose range the head has not cut yet waits for that cut's
            // block, which it overlaps: merged earlier, it would lose its hint
            let floor = self.floor.load(Ordering::SeqCst);
            blocks.retain(|b| !b.meta().holds_stale_series() || b.meta().max_time <= floor);
            let Some(group) =
                plan_merge(&blocks, self.opts.block_duration.max(1), self.opts.max_block_duration)
            else {
                return Ok(written);
            };
            let level = group.iter().map(|b| b.meta().compaction.level).max().unwrap_or(1) + 1;
            let overlapping = group.windows(2).any(|p| p[1].meta().min_time < p[0].meta().max_time);
            let started = Instant::now();
            let merged = self.merge(&group, level);
            self.counters.compaction(merged.is_ok(), started.elapsed());
            merged?;
            if overlapping {
                self.counters.vertical_compactions.fetch_add(1, Ordering::Relaxed);
            }
            written += 1;
        }
    }

    /// Writes one block of compaction `level` holding the data of `group` (without deleted
    /// samples) and deletes the group.
    pub(super) fn merge(&self, group: &[Arc<Block>], level: u32) -> Result<(), Error> {
        let sources: BTreeSet<String> =
            group.iter().flat_map(|b| b.meta().compaction.sources.iter().cloned()).collect();
        let mint = group.iter().map(|b| b.meta().min_time).min().unwrap_or(0);
        let maxt = group.iter().map(|b| b.meta().max_time).max().unwrap_or(0);
        let entries = series_in_label_order(group);
        let mut writer = BlockWriter::create(&self.blocks_dir, level, sources.into_iter().collect())?;
        let result = (|| {
            let mut start = 0;
            while start < entries.len() {
                let mut end = (start + SERIES_PER_BATCH).min(entries.len());
                while end < entries.len() && entries[end].0 == entries[end - 1].0 {
                    end += 1;
                }
                let chunk = &entries[start..end];
                let mut read_back: Vec<Vec<Samples>> = Vec::with_capacity(group.len());
                let mut hists_back: Vec<Vec<Vec<HistogramSample>>> = Vec::with_capacity(group.len());
                let mut starts_back: Vec<Vec<Vec<StartRun>>> = Vec::with_capacity(group.len());
                let mut positions: Vec<usize> = vec![0; group.len()];
                for (bi, b) in group.iter().enumerate() {
                    let ids: Vec<u32> = chunk.iter().filter(|e| e.1 == bi).map(|e| e.2).collect();
                    read_back.push(b.read(&ids, Timestamp::MIN, Timestamp::MAX)?);
                    hists_back.push(b.read_histograms(&ids, Timestamp::MIN, Timestamp::MAX)?);
                    starts_back.push(b.read_starts(&ids, Timestamp::MIN, Timestamp::MAX)?);
                }
                let mut i = 0;
                while i < chunk.len() {
                    let mut parts: Vec<Samples> = Vec::new();
                    let mut hist_parts: Vec<Vec<HistogramSample>> = Vec::new();
                    let mut start_parts: Vec<Vec<StartRun>> = Vec::new();
                    let (serial, bi, id) = chunk[i];
                    let labels = Arc::new(group[bi].index().labels(id));
                    while i < chunk.len() && chunk[i].0 == serial {
                        let bi = chunk[i].1;
                        parts.push(std::mem::take(&mut read_back[bi][positions[bi]]));
                        hist_parts.push(std::mem::take(&mut hists_back[bi][positions[bi]]));
                        start_parts.push(std::mem::take(&mut starts_back[bi][positions[bi]]));
                        positions[bi] += 1;
                        i += 1;
                    }
                    let (hists, starts) = (merge_histograms(hist_parts), merge_runs(start_parts));
                    writer.add(labels, Samples::merge(parts).iter(), &hists, &starts)?;
                }
                start = end;
            }
            Ok::<(), Error>(())
        })();
        if let Err(e) = result {
            writer.abort();
            return Err(e);
        }
        if let Some(meta) = writer.finish(Some((mint, maxt)))? {
            self.add_block(&meta)?;
        }
        self.delete_blocks(&group.iter().map(|b| b.meta().ulid.clone()).collect());
        tracing::info!(blocks = group.len(), level, mint, maxt, "merged blocks");
        Ok(())
    }

    /// Deletes whole blocks beyond the retention time (counted back from the newest block's
    /// end) and, oldest first, while blocks and WAL exceed the retention size.
    fn apply_retention(&self) -> usize {
        let blocks = read(&self.blocks).clone();
        let mut doomed: BTreeSet<String> = BTreeSet::new();
        // measured from the newest block's end, but never from the future: blocks ahead of
        // the clock (written before a future limit was set) must not push the present out
        let newest = blocks.iter().map(|b| b.meta().max_time).max().map(|n| n.min(now_ms()));
        if let (Some(keep), Some(newest)) = (self.opts.retention_time, newest) {
            for b in &blocks {
                if newest.saturating_sub(b.meta().max_time) > keep {
                    doomed.insert(b.meta().ulid.clone());
                }
            }
            if !doomed.is_empty() {
                self.counters.time_retentions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let by_time = doomed.len();
        if let Some(limit) = self.opts.retention_size {
            let mut total: u64 = lock(&self.writer).wal.size_bytes()
                + blocks
                    .iter()
                    .filter(|b| !doomed.contains(&b.meta().ulid))
                    .map(|b| b.size_bytes())
                    .sum::<u64>();
            for b in &blocks {
                if total <= limit {
                    break;
                }
                if doomed.insert(b.meta().ulid.clone()) {
                    total = total.saturating_sub(b.size_bytes());
                }
            }
            if doomed.len() > by_time {
                self.counters.size_retentions.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !doomed.is_empty() {
            tracing::info!(blocks = doomed.len(), "deleting blocks beyond retention");
            self.delete_blocks(&doomed);
        }
        doomed.len()
    }
}

/// Every series of `group` in label order, as (n, block, id), where `n` numbers the label
/// sets: equal for the same series in several blocks. Each block's ids are in label order
/// already, so the blocks are merged, with only each block's next series unpacked.
fn series_in_label_order(group: &[Arc<Block>]) -> Vec<(u32, usize, u32)> {
    let next = |bi: usize, id: u32| {
        let index = group[bi].index();
        ((id as usize) < index.len()).then(|| (index.labels(id), id))
    };
    let mut heads: Vec<Option<(Labels, u32)>> = (0..group.len()).map(|bi| next(bi, 0)).collect();
    let mut entries = Vec::with_capacity(group.iter().map(|b| b.index().len()).sum());
    let mut serial = 0u32;
    while let Some(least) = heads.iter().flatten().map(|(l, _)| l).min().cloned() {
        for (bi, head) in heads.iter_mut().enumerate() {
            if let Some((_, id)) = head.as_ref().filter(|(l, _)| *l == least) {
                let id = *id;
                entries.push((serial, bi, id));
                *head = next(bi, id + 1);
            }
        }
        serial += 1;
    }
    entries
}

/// Which blocks to merge next: a set of overlapping blocks, or else the blocks that fill an
/// aligned range of the next size up, once a newer block shows that range is complete.
fn plan_merge(blocks: &[Arc<Block>], block_duration: i64, max_range: i64) -> Option<Vec<Arc<Block>>> {
    // overlaps first: blocks are sorted by min_time, so a run of overlaps is contiguous
    let mut i = 0;
    while i < blocks.len() {
        let mut end = blocks[i].meta().max_time;
        let mut j = i + 1;
        while j < blocks.len() && blocks[j].meta().min_time < end {
            end = end.max(blocks[j].meta().max_time);
            j += 1;
        }
        if j - i > 1 {
            return Some(blocks[i..j].to_vec());
        }
        i = j;
    }
    let newest = blocks.iter().map(|b| b.meta().max_time).max()?;
    let mut range = block_duration.saturating_mul(3);
    while range <= max_range {
        let mut k = 0;
        while k < blocks.len() {
            let start =
                blocks[k].meta().min_time.div_euclid(range).checked_mul(range).unwrap_or(Timestamp::MIN);
            let stop = start.saturating_add(range);
            let group: Vec<Arc<Block>> =
                blocks[k..].iter().take_while(|b| b.meta().min_time < stop).cloned().collect();
            k += group.len().max(1);
            let fits = group.iter().all(|b| b.meta().max_time <= stop);
            if fits && group.len() > 1 && stop <= newest {
                return Some(group);
            }
        }
        let next = range.saturating_mul(3);
        if next == range {
            break;
        }
        range = next;
    }
    None
}

/// Joins the histogram samples of one series from several sources (each in time order) into
/// one list in time order; of samples at the same time, the first source's stays.
pub(super) fn merge_histograms(mut parts: Vec<Vec<HistogramSample>>) -> Vec<HistogramSample> {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all: Vec<HistogramSample> = parts.concat();
    all.sort_by_key(|s| s.t);
    all.dedup_by_key(|s| s.t);
    all
}
