//! Queries: the head and every overlapping block, merged so that each sample is seen once.

use std::sync::Arc;

use super::compact::merge_histograms;
use super::{read, Db};
use crate::block::{Block, Listed, SeriesReader};
use crate::head::{Head, SeriesRef};
use crate::samples::JoinBuffers;
use crate::start::merge_runs;
use crate::{Error, HistogramSeries, Labels, Matcher, Querier, Samples, Series, StartTimestamps, Timestamp};

/// The union of two sorted, unique lists of label sets, sorted and unique; `b`'s sets are
/// cloned only where `a` lacks them.
fn union_of_sorted(a: Vec<Labels>, b: &[Labels]) -> Vec<Labels> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let mut b = b.iter().peekable();
    for l in a {
        while let Some(next) = b.next_if(|n| *n < &l) {
            out.push(next.clone());
        }
        b.next_if(|n| *n == &l);
        out.push(l);
    }
    out.extend(b.cloned());
    out
}

/// Merges per-source lists of series (each sorted by labels) into one sorted list, joining
/// the samples of series found in several sources: into `joiner`'s columns when given (a
/// group of a read in groups, whose series are let go together), else each series into
/// columns of its own (a series may then outlive the others).
fn merge_series(mut parts: Vec<Vec<Series>>, joiner: Option<&mut JoinBuffers>) -> Vec<Series> {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all: Vec<Series> = parts.concat();
    all.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut labels: Vec<Labels> = Vec::with_capacity(all.len());
    let mut samples: Vec<Vec<Samples>> = Vec::with_capacity(all.len());
    for s in all {
        if labels.last() != Some(&s.labels) {
            labels.push(s.labels);
            samples.push(Vec::new());
        }
        if let Some(pending) = samples.last_mut() {
            pending.push(s.samples);
        }
    }
    let joined = match joiner {
        Some(joiner) => joiner.join(samples),
        None => samples.into_iter().map(Samples::merge).collect(),
    };
    labels.into_iter().zip(joined).map(|(labels, samples)| Series { labels, samples }).collect()
}

/// `read` of every block (or a block's part), in the order of `blocks`: on this thread for one
/// block, else on as many threads as the process may run on, each taking the next block not
/// yet taken.
///
/// A query over days reads several blocks, each mostly decompressing and decoding pages:
/// work that needs nothing from the other blocks, and the only part of a query's evaluation
/// that spreads over the cores without changing the engine. The threads are started from
/// the query's own thread, whose CPU priority they inherit.
fn read_blocks<B: Sync, T: Send>(
    blocks: &[B],
    read: impl Fn(&B) -> Result<T, Error> + Sync,
) -> Result<Vec<T>, Error> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(blocks.len());
    if threads <= 1 {
        return blocks.iter().map(&read).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(block) = blocks.get(i) else { return done };
            done.push((i, read(block)));
        }
    };
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut done = work();
        for helper in helpers {
            // a panicking read is a bug: the query fails as it would on one thread
            done.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, part)| part).collect()
}

/// A series of a group read series by series: its labels, its id in each of the blocks that
/// hold it, its samples in the head, and how many samples it has at most.
struct Wanted<'a> {
    labels: &'a Labels,
    /// (the block's position in the query's blocks, the series' id there), in block order.
    parts: Vec<(usize, u32)>,
    head: Option<&'a Samples>,
    rows: usize,
}

/// What a read series by series keeps from group to group: the columns it fills, and a
/// reader of each of the query's blocks once it reads one, which stays in the frame it is
/// in, so that the next group's series go on from there.
struct Reading<'a> {
    joiner: JoinBuffers,
    readers: Vec<Option<SeriesReader<'a>>>,
}

/// Every series of a group once, in label order, with where it is in `runs` (each block's
/// listed series of the group, in label order) and in `head` (in label order).
fn wanted_series<'a>(runs: &[&'a [Listed]], head: &'a [Series]) -> Vec<Wanted<'a>> {
    let mut next: Vec<usize> = vec![0; runs.len()];
    let mut next_head = 0;
    let mut wanted = Vec::new();
    loop {
        // the smallest labels not yet taken, in any source
        let smallest = runs
            .iter()
            .zip(&next)
            .filter_map(|(run, &i)| run.get(i).map(|l| &l.labels))
            .chain(head.get(next_head).map(|s| &s.labels))
            .min();
        let Some(labels) = smallest else { return wanted };
        let mut series = Wanted { labels, parts: Vec::new(), head: None, rows: 0 };
        for (k, run) in runs.iter().enumerate() {
            if let Some(listed) = run.get(next[k]).filter(|l| &l.labels == labels) {
                series.parts.push((k, listed.id));
                series.rows += listed.rows as usize;
                next[k] += 1;
            }
        }
        if let Some(s) = head.get(next_head).filter(|s| &s.labels == labels) {
            series.head = Some(&s.samples);
            series.rows += s.samples.len();
            next_head += 1;
        }
        wanted.push(series);
    }
}

/// The series `wanted` of `blocks` (all version 2) and the head, each series' parts decoded
/// one after another straight into the columns of `reading`: no column of a block's own,
/// and no copy to join them.
///
/// On one thread: split over two, a group's runs of series (128 Ki samples, a dozen blocks)
/// take less than a frame of each block, so both threads decompress nearly every frame. On
/// two cores a week's `sum by` took as long either way (0.41–0.49 s, this machine's noise)
/// and a third less CPU on one thread (0.45–0.48 s against 0.63–0.69 s).
fn read_series_by_series<'a>(
    blocks: &'a [Arc<Block>],
    wanted: &[Wanted<'_>],
    mint: Timestamp,
    maxt: Timestamp,
    reading: &mut Reading<'a>,
) -> Result<Vec<Series>, Error> {
    let Reading { joiner, readers } = reading;
    for w in wanted {
        for &(k, _) in &w.parts {
            if readers[k].is_none() {
                readers[k] = Some(blocks[k].series_reader()?);
            }
        }
    }
    let sizes: Vec<usize> = wanted.iter().map(|w| w.rows).collect();
    let samples = joiner.fill(&sizes, |i, t, v| {
        let w = &wanted[i];
        let start = t.len();
        // where each part ends, and whether each began after the one before ended
        let mut ends = Vec::with_capacity(w.parts.len() + 1);
        let mut in_turn = true;
        let mut add = |from: usize, t: &[Timestamp]| {
            in_turn &= from == start || from == t.len() || t[from - 1] < t[from];
            ends.push(t.len());
        };
        for &(k, id) in &w.parts {
            let from = t.len();
            if let Some(reader) = &mut readers[k] {
                reader.read(id, mint, maxt, t, v)?;
            }
            add(from, t);
        }
        if let Some(head) = w.head {
            let from = t.len();
            t.extend_from_slice(head.view().t);
            v.extend_from_slice(head.view().v);
            add(from, t);
        }
        if !in_turn {
            // blocks (or the head) overlapping in time: joined as `merge_series` joins
            // them, earlier parts first on a tie
            let mut parts = Vec::with_capacity(ends.len());
            let mut at = start;
            for &end in &ends {
                parts.push(Samples::new(t[at..end].to_vec(), v[at..end].to_vec()));
                at = end;
            }
            let merged = Samples::merge(parts);
            t.truncate(start);
            v.truncate(start);
            t.extend_from_slice(merged.view().t);
            v.extend_from_slice(merged.view().v);
        }
        Ok::<(), Error>(())
    })?;
    Ok(wanted
        .iter()
        .zip(samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|(w, samples)| Series { labels: w.labels.clone(), samples })
        .collect())
}

/// The positions of the items of `sorted` (in label order) whose labels lie in `first..=last`.
fn run_within<T>(
    sorted: &[T],
    labels: impl Fn(&T) -> &Labels,
    first: &Labels,
    last: &Labels,
) -> std::ops::Range<usize> {
    let start = sorted.partition_point(|x| labels(x) < first);
    start..sorted.partition_point(|x| labels(x) <= last).max(start)
}

/// The samples a group of [`Db::select_in_groups`] read through a version 1 block holds at
/// most, unless one series alone holds more: 4 Mi samples, 64 MiB as columns. A Parquet page
/// where two groups meet is decoded for both; at this size that is a few percent of a
/// week's reading.
const GROUP_SAMPLES: u64 = 4 << 20;

/// The samples a group read series by series holds at most, unless one series alone holds
/// more: 128 Ki samples, 2 MiB as columns, which stay in a core's second-level cache from
/// their decoding to the query's use of them. A week's `sum by` of `rate` over 35 million
/// samples, on one core, takes 0.40–0.43 s in groups of 256 Ki samples against 0.53–0.61 s
/// in groups of 4 Mi (where every sample went to memory and came back), and half the peak
/// memory. The readers keep their frames from group to group, so small groups decompress no
/// frame twice.
const SERIES_GROUP_SAMPLES: u64 = 1 << 17;

/// How [`Db::select_in_groups`] cuts its work: the samples of a group through version 1
/// blocks, and of a group read series by series.
#[derive(Clone, Copy, Debug)]
struct Groups {
    samples: u64,
    series_samples: u64,
}

impl Default for Groups {
    fn default() -> Self {
        Groups { samples: GROUP_SAMPLES, series_samples: SERIES_GROUP_SAMPLES }
    }
}

/// Series a selection reads from the head per hold of its lock. A commit waits for the
/// lock, and queries run below ingest's CPU priority: a query thread that loses the CPU
/// while it holds the lock keeps every commit waiting until it gets the CPU back and ends
/// its part. A part is therefore a fraction of a millisecond's reading. A head cut, at
/// ingest's priority, reads 2,048 series per hold.
const SERIES_PER_SELECT_PART: usize = 256;

impl Db {
    /// The head's series matching `matchers`, read by `read_part` [`SERIES_PER_SELECT_PART`]
    /// at a time under the head's lock, then sorted by `labels`. A series removed from the
    /// head between two parts (by a cut, which writes its block first) is found in the blocks
    /// read after.
    fn select_head<T>(
        &self,
        matchers: &[Matcher],
        read_part: impl Fn(&Head, &[SeriesRef], &mut Vec<T>),
        labels: impl Fn(&T) -> &Labels,
    ) -> Vec<T> {
        let refs = read(&self.head).selection(matchers);
        let mut out = Vec::new();
        for part in refs.chunks(SERIES_PER_SELECT_PART) {
            read_part(&read(&self.head), part, &mut out);
        }
        out.sort_unstable_by(|a, b| labels(a).cmp(labels(b)));
        out
    }

    /// [`Querier::select_in_groups`] in groups of about as many samples as `groups` says (by the
    /// blocks' row counts and the head's samples), cut at series boundaries: each block's
    /// series of a group are a run of its listed series, read with a row selection of their
    /// own.
    fn select_in_groups_of(
        &self,
        groups: Groups,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        each: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<(), Error> {
        if mint > maxt {
            return Ok(());
        }
        // the head before the blocks, as for `select`
        let head = self.select_head(
            matchers,
            |h, refs, out| h.select_part(refs, mint, maxt, out),
            |s: &Series| &s.labels,
        );
        let blocks = self.blocks_in(mint, maxt);
        let listed: Vec<Vec<Listed>> = blocks.iter().map(|b| b.listed(matchers, mint, maxt)).collect();
        // every matching series once, in label order, with its samples (or rows) in all sources
        let mut sizes: Vec<(&Labels, u64)> = listed
            .iter()
            .flatten()
            .map(|l| (&l.labels, l.rows))
            .chain(head.iter().map(|s| (&s.labels, s.samples.len() as u64)))
            .collect();
        sizes.sort_by(|a, b| a.0.cmp(b.0));
        sizes.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        let by_series = blocks.iter().all(|b| b.reads_series_by_series());
        let mut reading =
            Reading { joiner: JoinBuffers::default(), readers: blocks.iter().map(|_| None).collect() };
        let group_samples = if by_series { groups.series_samples } else { groups.samples };
        let mut from = 0;
        while from < sizes.len() {
            let mut to = from + 1;
            let mut samples = sizes[from].1;
            while to < sizes.len() && samples + sizes[to].1 <= group_samples {
                samples += sizes[to].1;
                to += 1;
            }
            let (first, last) = (sizes[from].0, sizes[to - 1].0);
            // each block's series of the group (a run of its list, which is in label order),
            // in the order of `blocks`
            let runs: Vec<&[Listed]> =
                listed.iter().map(|l| &l[run_within(l, |s| &s.labels, first, last)]).collect();
            let head_run = &head[run_within(&head, |s| &s.labels, first, last)];
            let series = if by_series {
                let wanted = wanted_series(&runs, head_run);
                read_series_by_series(&blocks, &wanted, mint, maxt, &mut reading)?
            } else {
                let runs: Vec<(&Arc<Block>, &[Listed])> =
                    blocks.iter().zip(runs).filter(|(_, run)| !run.is_empty()).collect();
                let mut parts = read_blocks(&runs, |(b, run)| b.read_listed(run, mint, maxt))?;
                parts.push(head_run.to_vec());
                merge_series(parts, Some(&mut reading.joiner))
            };
            if !each(series) {
                return Ok(());
            }
            from = to;
        }
        Ok(())
    }

    /// An upper bound of the index entries a lookup of `matchers` over `mint..=maxt` reads
    /// (the series, label names or label values of a selection) in the head and in each
    /// block, found from the lengths of the postings lists it would read, without reading
    /// them. `None` when it cannot be known that way: a matcher that tests values one by one
    /// (a regex other than a set of literals), or no matcher that narrows the selection; and
    /// while a commit holds the head, so that a caller that must not wait for it (an async
    /// worker) hands the lookup to a thread that may.
    pub fn lookup_cost(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Option<usize> {
        let head = match self.head.try_read() {
            Ok(head) => head,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let mut cost = head.selection_cost(matchers)?;
        drop(head);
        for b in self.blocks_in(mint, maxt) {
            cost = cost.saturating_add(b.index().selection_cost(matchers)?);
        }
        Some(cost)
    }

    /// The blocks that may hold samples in `mint..=maxt`.
    pub(super) fn blocks_in(&self, mint: Timestamp, maxt: Timestamp) -> Vec<Arc<Block>> {
        read(&self.blocks).iter().filter(|b| b.overlaps(mint, maxt)).cloned().collect()
    }
}

impl Querier for Db {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error> {
        // the head before the blocks: a cut adds its block before it truncates the head, so a
        // range that moves between the two reads is seen at least once (then merged), never
        // missed
        if mint > maxt {
            return Ok(Vec::new());
        }
        let head = self.select_head(
            matchers,
            |h, refs, out| h.select_part(refs, mint, maxt, out),
            |s: &Series| &s.labels,
        );
        let mut parts = read_blocks(&self.blocks_in(mint, maxt), |b| b.select(matchers, mint, maxt))?;
        parts.push(head);
        Ok(merge_series(parts, None))
    }

    fn select_in_groups(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        each: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<(), Error> {
        self.select_in_groups_of(Groups::default(), matchers, mint, maxt, each)
    }

    fn has_histograms(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<bool, Error> {
        Ok(read(&self.head).has_histograms(matchers, mint, maxt)
            || self.blocks_in(mint, maxt).iter().any(|b| b.has_histograms(matchers, mint, maxt)))
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<HistogramSeries>, Error> {
        // the head before the blocks, as for floats
        let head = if mint <= maxt && read(&self.head).keeps_histograms() {
            self.select_head(
                matchers,
                |h, refs, out| h.select_histograms_part(refs, mint, maxt, out),
                |s: &HistogramSeries| &s.labels,
            )
        } else {
            Vec::new()
        };
        let mut parts =
            read_blocks(&self.blocks_in(mint, maxt), |b| b.select_histograms(matchers, mint, maxt))?;
        parts.push(head);
        parts.retain(|p| !p.is_empty());
        if parts.len() <= 1 {
            return Ok(parts.pop().unwrap_or_default());
        }
        let mut all: Vec<HistogramSeries> = parts.concat();
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut out: Vec<HistogramSeries> = Vec::with_capacity(all.len());
        for s in all {
            match out.last_mut() {
                Some(prev) if prev.labels == s.labels => {
                    let joined = merge_histograms(vec![std::mem::take(&mut prev.samples), s.samples]);
                    prev.samples = joined;
                }
                _ => out.push(s),
            }
        }
        Ok(out)
    }

    fn select_start_timestamps(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<StartTimestamps>, Error> {
        // the head before the blocks, as for samples
        let head = read(&self.head).select_starts(matchers, mint, maxt);
        let mut all = Vec::new();
        for b in self.blocks_in(mint, maxt) {
            all.extend(b.select_starts(matchers, mint, maxt)?);
        }
        if all.is_empty() {
            return Ok(head);
        }
        all.extend(head);
        // stable: a series' parts stay in the order of their sources, oldest block first
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut out: Vec<StartTimestamps> = Vec::with_capacity(all.len());
        for s in all {
            match out.last_mut() {
                Some(prev) if prev.labels == s.labels => {
                    prev.runs = merge_runs(vec![std::mem::take(&mut prev.runs), s.runs]);
                }
                _ => out.push(s),
            }
        }
        Ok(out)
    }

    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, Error> {
        // sorted and unique from the head and after each block: most of a block's series
        // are already there (found in the head or a block before) and are not built again.
        // The blocks the range covers whole answer as one, from the lookup cache when it
        // has their answer.
        let mut out = read(&self.head).series_labels(matchers, mint, maxt);
        let (whole, cut): (Vec<_>, Vec<_>) =
            self.blocks_in(mint, maxt).into_iter().partition(|b| b.covered_by(mint, maxt));
        if !whole.is_empty() {
            let of_whole = self.lookups.series(matchers, &whole, || {
                whole.iter().fold(Vec::new(), |acc, b| {
                    b.merge_series_labels(matchers, Timestamp::MIN, Timestamp::MAX, acc)
                })
            });
            out = union_of_sorted(out, &of_whole);
        }
        for b in cut {
            out = b.merge_series_labels(matchers, mint, maxt, out);
        }
        Ok(out)
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error> {
        let mut out = read(&self.head).label_names(matchers, mint, maxt);
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(out);
        }
        for b in blocks {
            if matchers.is_empty() {
                out.extend(b.index().label_names().map(str::to_string));
            } else {
                out.extend(b.series_label_names(matchers, mint, maxt).into_iter().map(str::to_string));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error> {
        let mut out = read(&self.head).label_values(name, matchers, mint, maxt);
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(out);
        }
        for b in blocks {
            if matchers.is_empty() {
                out.extend(b.index().label_values(name).map(str::to_string));
            } else {
                out.extend(b.series_label_values(name, matchers, mint, maxt).into_iter().map(str::to_string));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbOptions;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn groups_join_to_the_whole_selection_in_label_order() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions { compaction_interval: None, ..DbOptions::default() };
        let db = Db::open(dir.path(), opts).unwrap();
        let series: Vec<Labels> = (0..12)
            .map(|i| Labels::from_pairs([("__name__", "m".to_string()), ("i", format!("{i:02}"))]))
            .collect();
        let mut t = 0;
        while t < 7 * HOUR {
            let mut app = db.appender();
            // a third of the series stop at 3 h: blocks after that list fewer series
            for (i, l) in series.iter().enumerate().filter(|(i, _)| i % 3 != 0 || t < 3 * HOUR) {
                app.append(l, t, (t / 15_000 + i as i64) as f64 * 0.5).unwrap();
            }
            app.commit().unwrap();
            t += 15_000;
        }
        db.compact().unwrap();
        assert!(db.blocks_in(0, 7 * HOUR).len() >= 2, "the head was cut into blocks");
        let matchers = [Matcher::new(crate::MatchOp::Equal, "__name__", "m").unwrap()];
        for (mint, maxt) in [(0, 7 * HOUR), (HOUR + 7, 5 * HOUR), (6 * HOUR, 7 * HOUR), (3 * HOUR, 3 * HOUR)]
        {
            let whole = db.select(&matchers, mint, maxt).unwrap();
            for group_samples in [1, 2_000, 5_000, u64::MAX] {
                let mut groups: Vec<Vec<Series>> = Vec::new();
                let cut = Groups { samples: group_samples, series_samples: group_samples };
                db.select_in_groups_of(cut, &matchers, mint, maxt, &mut |g| {
                    groups.push(g);
                    true
                })
                .unwrap();
                let joined: Vec<Series> = groups.iter().flatten().cloned().collect();
                assert_eq!(joined, whole, "{mint}..={maxt} in groups of {group_samples}");
                if group_samples == 1 {
                    assert_eq!(groups.len(), whole.len(), "one series a group");
                }
            }
            // a caller that stops after the first group gets no other
            let mut calls = 0;
            let groups = Groups { samples: 1, series_samples: 1 };
            db.select_in_groups_of(groups, &matchers, mint, maxt, &mut |_| {
                calls += 1;
                false
            })
            .unwrap();
            assert_eq!(calls, usize::from(!whole.is_empty()));
        }
    }

    /// Copies the block directories of the database in `from` into `to`.
    fn copy_blocks(from: &std::path::Path, to: &std::path::Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let block = entry.unwrap().path();
            if !block.join("meta.json").exists() {
                continue;
            }
            let copy = to.join(block.file_name().unwrap());
            std::fs::create_dir(&copy).unwrap();
            for file in std::fs::read_dir(&block).unwrap() {
                let file = file.unwrap().path();
                std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
            }
        }
    }

    #[test]
    fn series_read_series_by_series_answer_as_whole_reads_across_overlaps_deletions_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let opts = || DbOptions { compaction_interval: None, ..DbOptions::default() };
        let series: Vec<Labels> = (0..8)
            .map(|i| Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]))
            .collect();
        // the same series over [from, from + 7h) every 15 s, cut into blocks
        let fill = |path: &std::path::Path, from: Timestamp, scale: f64| {
            let db = Db::open(path, opts()).unwrap();
            let mut t = from;
            while t < from + 7 * HOUR {
                let mut app = db.appender();
                for (i, l) in series.iter().enumerate() {
                    app.append(l, t, (t / 15_000 + i as i64) as f64 * scale).unwrap();
                }
                app.commit().unwrap();
                t += 15_000;
            }
            db.compact().unwrap();
        };
        fill(dir.path(), 0, 0.5);
        // another database's blocks, overlapping these in time, some timestamps shared
        fill(other.path(), 2 * HOUR + 7_500, 0.25);
        let blocks_of =
            |path: &std::path::Path| path.join(crate::db::PROMFLOW_DIR).join(crate::db::BLOCKS_DIR);
        copy_blocks(&blocks_of(other.path()), &blocks_of(dir.path()));
        let db = Db::open(dir.path(), opts()).unwrap();
        let blocks = db.blocks_in(0, 10 * HOUR);
        assert!(blocks.windows(2).any(|w| w[0].meta().max_time > w[1].meta().min_time), "blocks overlap");
        let three = [Matcher::new(crate::MatchOp::Equal, "i", "3").unwrap()];
        db.delete_series(&three, HOUR, 3 * HOUR).unwrap();
        let matchers = [Matcher::new(crate::MatchOp::Equal, "__name__", "m").unwrap()];
        for (mint, maxt) in [(0, 10 * HOUR), (HOUR + 7, 5 * HOUR), (2 * HOUR, 2 * HOUR + 7_500)] {
            let whole = db.select(&matchers, mint, maxt).unwrap();
            assert!(!whole.is_empty());
            // the lookups list what the read holds: its series, one label's values, the names
            let listed: Vec<Labels> = whole.iter().map(|s| s.labels.clone()).collect();
            assert_eq!(db.series(&matchers, mint, maxt).unwrap(), listed, "{mint}..={maxt}");
            let values: Vec<String> = listed.iter().map(|l| l.get("i").to_string()).collect();
            assert_eq!(db.label_values("i", &matchers, mint, maxt).unwrap(), values);
            assert_eq!(db.label_names(&matchers, mint, maxt).unwrap(), ["__name__", "i"]);
            for series_samples in [u64::MAX, SERIES_GROUP_SAMPLES, 1, 5_000] {
                let groups = Groups { samples: u64::MAX, series_samples };
                let mut read: Vec<Series> = Vec::new();
                db.select_in_groups_of(groups, &matchers, mint, maxt, &mut |g| {
                    read.extend(g);
                    true
                })
                .unwrap();
                assert_eq!(read, whole, "{mint}..={maxt} in groups of {series_samples}");
            }
        }
    }
}
