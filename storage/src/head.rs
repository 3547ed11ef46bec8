//! The in-memory head: every series with its compressed chunks, and an inverted index from
//! label pairs to series refs for matcher evaluation.
//!
//! The head is not synchronised itself; [`crate::Db`] wraps it in a lock.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::chunk::{ChunkIter, OpenChunk};
use crate::postings::{Postings, RefSet};
use crate::start::{StartRun, StartRuns, StartTimestamps};
use crate::{FloatHistogram, HistogramSample, HistogramSeries, Labels, Matcher, Sample, Series, Timestamp};

/// A series' identifier, as written in the WAL.
pub(crate) type SeriesRef = u64;

/// Hasher for keys that are already hashes or dense integers: one multiply and a rotate so
/// both the low bits (bucket) and the high bits (hashbrown's tag) vary.
#[derive(Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(26)
    }
}

/// A map keyed by `u64` hashes or refs.
pub(crate) type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

/// One series in memory.
#[derive(Debug)]
pub(crate) struct MemSeries {
    /// The series' labels.
    pub(crate) labels: PackedLabels,
    /// Full chunks, in the chunk store.
    sealed: SealedChain,
    open: OpenChunk,
    /// Newest in-order sample: timestamp ([`NO_SAMPLE`] when none) and value bits.
    last: (Timestamp, u64),
    /// What few series have, boxed so that the others pay one pointer for it.
    rare: Option<Box<Rare>>,
}

/// The newest timestamp of a series without samples: a sample cannot have it, as it is
/// older than any other ([`MemSeries::refuses`]).
const NO_SAMPLE: Timestamp = Timestamp::MIN;

/// The samples of a head series that most series never have.
#[derive(Debug, Default)]
struct Rare {
    /// Samples older than the newest taken within the out-of-order window, sorted by time.
    /// They are merged with the chunks on every read and go to a block with the rest.
    ooo: Vec<Sample>,
    /// Native-histogram samples, sorted by time (in order and out of order alike).
    hists: Option<HistogramSamples>,
}

mod chunk_store;
mod histograms;
mod packed;
mod series_table;

use chunk_store::{ChunkStore, SealedChain};

use histograms::HistogramSamples;
pub use packed::PackedLabels;
pub(crate) use packed::{index_hash, pack, pack_labels, PackedRef};
use series_table::SeriesTable;

impl MemSeries {
    fn new(labels: PackedLabels) -> Self {
        MemSeries {
            labels,
            sealed: SealedChain::default(),
            open: OpenChunk::new(),
            last: (NO_SAMPLE, 0),
            rare: None,
        }
    }

    /// The out-of-order samples, sorted by time.
    fn ooo(&self) -> &[Sample] {
        self.rare.as_deref().map_or(&[], |r| r.ooo.as_slice())
    }

    /// The native-histogram samples, if the series has any.
    fn hists(&self) -> Option<&HistogramSamples> {
        self.rare.as_deref().and_then(|r| r.hists.as_ref())
    }

    /// Whether the series has native-histogram samples.
    fn has_hists(&self) -> bool {
        self.hists().is_some()
    }

    /// The rare parts, made if the series has none yet.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Drops the rare parts once they hold nothing.
    fn tidy_rare(&mut self) {
        if self.rare.as_deref().is_some_and(|r| r.ooo.is_empty() && r.hists.is_none()) {
            self.rare = None;
        }
    }

    /// Makes the sample at `t` with value bits `bits` the newest; returns, when the head's
    /// set of stale series may have to change, whether the sample is a staleness marker.
    fn set_newest(&mut self, t: Timestamp, bits: u64) -> Option<bool> {
        let was_stale = self.newest_may_be_stale();
        self.last = (t, bits);
        let stale = bits == crate::STALE_NAN_BITS;
        (was_stale || stale).then_some(stale)
    }

    /// Whether the newest sample may be a staleness marker: a float one's bits say so for
    /// sure, a histogram series' newest bits are a fingerprint, which says nothing.
    fn newest_may_be_stale(&self) -> bool {
        self.last.1 == crate::STALE_NAN_BITS || self.has_hists()
    }

    /// Samples held, of every kind.
    fn num_samples(&self) -> usize {
        self.sealed.samples() + self.open.len() + self.ooo().len() + self.hists().map_or(0, |h| h.len())
    }

    /// The newest sample's timestamp and value bits.
    pub(crate) fn last(&self) -> Option<(Timestamp, u64)> {
        (self.last.0 != NO_SAMPLE).then_some(self.last)
    }

    /// Moves the open chunk, full, to `store` as series `r`'s and starts a new one.
    fn seal_open(&mut self, store: &mut ChunkStore, r: SeriesRef) {
        let next = self.open.successor();
        let full = std::mem::replace(&mut self.open, next);
        self.sealed.push(store, &full, r);
    }

    /// Chunks held, full and open.
    fn num_chunks(&self) -> u64 {
        u64::from(self.sealed.chunks()) + u64::from(!self.open.is_empty())
    }

    fn first_t(&self) -> Option<Timestamp> {
        let chunks = self.sealed.min_t().or_else(|| (!self.open.is_empty()).then(|| self.open.min_t()));
        let firsts = [chunks, self.ooo().first().map(|s| s.t), self.hists().and_then(|h| h.first_t())];
        firsts.into_iter().flatten().min()
    }

    /// Why a sample at `t` with value bits `bits` cannot follow the newest sample, if it
    /// cannot ([`refusal`]).
    fn refuses(&self, t: Timestamp, bits: u64) -> Option<AppendResult> {
        refusal(self.last(), t, bits)
    }

    /// The histogram samples in `mint..=maxt`, decoded.
    fn histograms_in(&self, mint: Timestamp, maxt: Timestamp) -> Vec<HistogramSample> {
        self.hists().map_or_else(Vec::new, |h| h.range(mint, maxt))
    }

    /// Whether some histogram sample lies in `mint..=maxt`.
    fn has_histograms_in(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        self.hists().is_some_and(|h| h.any_in(mint, maxt))
    }

    /// The time ranges of the chunks holding samples at `mint` or later, with a way to decode
    /// each, oldest first. A range starts at the oldest sample the head keeps of its chunk,
    /// and decoding skips those before it (what a truncation left in the chunk it cut).
    fn chunks<'a>(
        &'a self,
        store: &'a ChunkStore,
        mint: Timestamp,
    ) -> impl Iterator<Item = (Timestamp, Timestamp, impl Iterator<Item = Sample> + 'a)> + 'a {
        let mut sealed: Vec<_> = self.sealed.newest_first(store, mint).collect();
        sealed.reverse();
        let sealed = sealed.into_iter().map(|(from, c)| (from, c.max_t, samples_from(c.iter(), from)));
        let open = (!self.open.is_empty())
            .then(|| (self.open.min_t(), self.open.max_t(), samples_from(self.open.iter(), Timestamp::MIN)));
        sealed.chain(open)
    }

    /// Whether some sample lies in `mint..=maxt`.
    fn has_samples_in(&self, store: &ChunkStore, mint: Timestamp, maxt: Timestamp) -> bool {
        if self.ooo().iter().any(|s| s.t >= mint && s.t <= maxt) || self.has_histograms_in(mint, maxt) {
            return true;
        }
        match (self.first_t(), self.last()) {
            (Some(first), Some((last, _))) if first > maxt || last < mint => return false,
            // the range holds the first sample: no chunk need be read (a whole-history lookup,
            // as every SQL statement's of its tables' columns, is the common case). The newest
            // sample remembered may be one a deletion or truncation removed: no proof.
            (Some(first), _) if (mint..=maxt).contains(&first) => return true,
            (None, _) | (_, None) => return false,
            _ => {}
        }
        self.chunks(store, mint).any(|(cmin, cmax, mut it)| {
            if cmax < mint || cmin > maxt {
                return false;
            }
            // a chunk's first and last samples are real samples: no decoding if either is in
            if (mint..=maxt).contains(&cmin) || (mint..=maxt).contains(&cmax) {
                return true;
            }
            it.any(|s| s.t >= mint && s.t <= maxt)
        })
    }

    /// Appends the samples in `mint..=maxt` to `out`.
    fn samples_in(&self, store: &ChunkStore, mint: Timestamp, maxt: Timestamp, out: &mut Vec<Sample>) {
        let from = out.len();
        for (cmin, cmax, it) in self.chunks(store, mint) {
            if cmax < mint {
                continue;
            }
            if cmin > maxt {
                break;
            }
            // at most the chunk's samples: one allocation, not one per doubling
            out.reserve(it.size_hint().1.unwrap_or(0));
            out.extend(it.skip_while(|s| s.t < mint).take_while(|s| s.t <= maxt));
        }
        let ooo = self.ooo().iter().filter(|x| x.t >= mint && x.t <= maxt);
        if ooo.clone().next().is_some() {
            out.extend(ooo);
            out[from..].sort_by_key(|x| x.t);
        }
    }

    /// Deletes the samples in `mint..=maxt` of this series, `r`; returns how many went. The
    /// chunks are written anew, after a mark that the old ones, which stay in the store until
    /// their segments go, are no longer the series'.
    fn delete_range(
        &mut self,
        store: &mut ChunkStore,
        r: SeriesRef,
        mint: Timestamp,
        maxt: Timestamp,
    ) -> u64 {
        let mut all = Vec::new();
        self.samples_in(store, Timestamp::MIN, Timestamp::MAX, &mut all);
        let before = all.len() as u64;
        all.retain(|s| s.t < mint || s.t > maxt);
        if let Some(rare) = self.rare.as_deref_mut() {
            rare.ooo = Vec::new();
        }
        self.tidy_rare();
        if self.sealed.chunks() > 0 {
            store.write_reset(r);
        }
        self.sealed = SealedChain::default();
        self.open = OpenChunk::new();
        for s in &all {
            if self.open.is_full() {
                self.seal_open(store, r);
            }
            self.open.append(s.t, s.v);
        }
        before - all.len() as u64 + self.retain_histograms(|t| t < mint || t > maxt)
    }

    /// Drops the samples older than `mint`; returns (samples, chunks) dropped.
    fn truncate(&mut self, store: &ChunkStore, mint: Timestamp) -> (u64, u64) {
        let (mut samples, mut chunks) = (self.retain_histograms(|t| t >= mint), 0u64);
        if let Some(rare) = self.rare.as_deref_mut() {
            let before = rare.ooo.len();
            rare.ooo.retain(|s| s.t >= mint);
            samples += (before - rare.ooo.len()) as u64;
            if rare.ooo.is_empty() {
                rare.ooo = Vec::new();
            }
        }
        self.tidy_rare();
        let (sealed_samples, sealed_chunks) = self.sealed.truncate(store, mint);
        samples += sealed_samples;
        chunks += sealed_chunks;
        // the open chunk is newer than every full one: it holds older samples only if no
        // full chunk is left
        if self.sealed.chunks() == 0 && !self.open.is_empty() && self.open.min_t() < mint {
            let (kept, cut) = rebuild_from(self.open.iter(), mint);
            samples += cut;
            if kept.is_empty() {
                chunks += 1;
            }
            self.open = kept;
        }
        (samples, chunks)
    }

    /// Keeps the histogram samples whose time satisfies `keep`; returns how many went.
    fn retain_histograms(&mut self, keep: impl Fn(Timestamp) -> bool) -> u64 {
        let Some(rare) = self.rare.as_deref_mut() else { return 0 };
        let Some(hists) = rare.hists.as_mut() else { return 0 };
        let gone = hists.retain(keep);
        if hists.is_empty() {
            rare.hists = None;
        }
        self.tidy_rare();
        gone
    }
}

/// Why a sample at `t` with value bits `bits` cannot follow a series' newest sample `last`,
/// if it cannot: older, or at the same time (an identical repeat is ignored).
pub(crate) fn refusal(last: Option<(Timestamp, u64)>, t: Timestamp, bits: u64) -> Option<AppendResult> {
    if t == NO_SAMPLE {
        // it could not be told from no sample at all
        return Some(AppendResult::OutOfOrder);
    }
    let (lt, lv) = last?;
    if t < lt {
        Some(AppendResult::OutOfOrder)
    } else if t == lt {
        Some(if bits == lv { AppendResult::Ignored } else { AppendResult::Duplicate })
    } else {
        None
    }
}

/// The samples of `it` from `from` on.
fn samples_from(it: ChunkIter<'_>, from: Timestamp) -> impl Iterator<Item = Sample> + '_ {
    it.skip_while(move |s| s.t < from)
}

/// A chunk holding the samples of `it` from `mint` on, and how many were left out.
fn rebuild_from(it: ChunkIter<'_>, mint: Timestamp) -> (OpenChunk, u64) {
    let mut kept = OpenChunk::new();
    let mut cut = 0;
    for s in it {
        if s.t < mint {
            cut += 1;
        } else {
            kept.append(s.t, s.v);
        }
    }
    (kept, cut)
}

/// A series found stale by [`Head::stale_series`].
#[derive(Debug, Clone)]
pub(crate) struct StaleSeries {
    /// Its ref.
    pub(crate) r: SeriesRef,
    /// Its newest sample and sample count when found.
    seen: ((Timestamp, u64), usize),
}

/// What [`Head::append`] did with a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendResult {
    /// Stored.
    Appended,
    /// Same timestamp and value bits as the newest sample: nothing to do.
    Ignored,
    /// Older than the newest sample.
    OutOfOrder,
    /// Same timestamp as the newest sample, different value.
    Duplicate,
    /// No series with that ref.
    UnknownSeries,
}

/// Counters and label statistics of the head.
#[derive(Debug, Default)]
pub(crate) struct HeadStats {
    pub(crate) num_series: u64,
    pub(crate) num_stale_series: u64,
    pub(crate) num_samples: u64,
    pub(crate) num_chunks: u64,
    pub(crate) min_time: Option<Timestamp>,
    pub(crate) max_time: Option<Timestamp>,
    pub(crate) series_count_by_metric: Vec<(String, u64)>,
    pub(crate) label_value_count_by_label_name: Vec<(String, u64)>,
    /// Bytes of the distinct values of each label name, as Prometheus's
    /// `memoryInBytesByLabelName`.
    pub(crate) memory_in_bytes_by_label_name: Vec<(String, u64)>,
    pub(crate) series_count_by_label_value_pair: Vec<(String, u64)>,
    pub(crate) num_label_pairs: u64,
}

/// The in-memory head.
#[derive(Debug, Default)]
pub(crate) struct Head {
    /// Series by ref, each boxed: a slot of a page is then 8 bytes ([`SeriesTable`]).
    series: SeriesTable,
    /// Index hash ([`packed::index_hash`]) → the first series with that hash.
    by_hash: U64Map<SeriesRef>,
    /// Series whose hash collided with an earlier series' hash (rare): searched linearly.
    collided: Vec<SeriesRef>,
    /// The labels of the series the last truncation removed, until the next one: an
    /// appender that found such a series before it was removed creates it again from them
    /// ([`Head::departed`]).
    departed: U64Map<PackedLabels>,
    /// Truncations that removed series.
    removals: u64,
    /// Label pairs → sorted series refs.
    postings: Postings,
    /// The series' full chunks.
    chunks: ChunkStore,
    num_samples: u64,
    num_chunks: u64,
    /// Series holding native-histogram samples: when none does, a histogram selection
    /// costs nothing (float queries make one each).
    histogram_series: usize,
    /// Start timestamps of the series that have any, beside the series so that the others
    /// pay nothing for them.
    starts: U64Map<StartRuns>,
    /// Series whose newest sample is a staleness marker: their target or sender is gone, so
    /// they are what a stale-series compaction takes out of the head.
    stale: U64Map<()>,
    min_time: Option<Timestamp>,
    max_time: Option<Timestamp>,
}

impl Head {
    /// An empty head keeping its full chunks in files in `dir`, where it finds the chunks an
    /// earlier process left for the WAL's replay to take back ([`Head::recover_chunks`]).
    pub(crate) fn with_chunk_dir(dir: std::path::PathBuf) -> std::io::Result<Self> {
        Ok(Head { chunks: ChunkStore::open(dir)?, ..Head::default() })
    }

    /// The oldest sample the head holds, if any.
    pub(crate) fn min_time(&self) -> Option<Timestamp> {
        self.min_time
    }
}

fn full_range(mint: Timestamp, maxt: Timestamp) -> bool {
    mint == Timestamp::MIN && maxt == Timestamp::MAX
}

/// Sorts descending by count, then ascending by name, and keeps `limit` entries.
fn top(mut v: Vec<(String, u64)>, limit: usize) -> Vec<(String, u64)> {
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(limit);
    v
}

impl Head {
    /// The ref of the series with exactly these labels (`hash` is their index hash,
    /// [`PackedLabels::index_hash_of`]).
    pub(crate) fn lookup(&self, labels: &Labels, hash: u64) -> Option<SeriesRef> {
        self.lookup_by(hash, |l| l.eq_labels(labels))
    }

    /// The ref of the series with hash `hash` whose labels satisfy `is_it`.
    pub(crate) fn lookup_by(&self, hash: u64, is_it: impl Fn(&PackedLabels) -> bool) -> Option<SeriesRef> {
        let r = *self.by_hash.get(&hash)?;
        if self.series.get(&r).is_some_and(|s| is_it(&s.labels)) {
            return Some(r);
        }
        self.collided.iter().copied().find(|r| self.series.get(r).is_some_and(|s| is_it(&s.labels)))
    }

    /// [`lookup_by`](Self::lookup_by) for many series at once: `hashes[i]` is the hash of the
    /// series `is_it(i, _)` recognises. The lookups go stage by stage over all of them (the
    /// hash index, then the series map, then the series, then their labels), so the cache
    /// misses of one stage overlap instead of each series waiting out its chain of misses
    /// before the next one starts.
    pub(crate) fn lookup_many(
        &self,
        hashes: &[u64],
        is_it: impl Fn(usize, PackedRef<'_>) -> bool,
    ) -> Vec<Option<(SeriesRef, &MemSeries)>> {
        let refs: Vec<Option<SeriesRef>> = hashes.iter().map(|h| self.by_hash.get(h).copied()).collect();
        let series: Vec<Option<&MemSeries>> =
            refs.iter().map(|r| r.and_then(|r| self.series.get(&r))).collect();
        let labels: Vec<Option<PackedRef<'_>>> = series.iter().map(|s| s.map(|s| s.labels.view())).collect();
        refs.into_iter()
            .zip(series.into_iter().zip(labels))
            .enumerate()
            .map(|(i, (r, (s, labels)))| match (r, s, labels) {
                (Some(r), Some(s), Some(l)) if is_it(i, l) => Some((r, s)),
                (Some(_), _, _) => self.collided.iter().find_map(|&c| {
                    let s = self.get(c)?;
                    is_it(i, s.labels.view()).then_some((c, s))
                }),
                (None, _, _) => None,
            })
            .collect()
    }

    /// Reads the series that `refs` name, their newest samples and the last bytes of their
    /// open chunks, so that appends to them right after find them in the cache. A batch's series are spread over the
    /// whole head: read stage by stage (the series map, the series, their chunks' ends), the
    /// reads of one stage do not wait for each other, and their cache misses overlap instead
    /// of each append waiting out its own chain of them.
    pub(crate) fn prefetch(&self, refs: impl Iterator<Item = SeriesRef>) {
        let series: Vec<&MemSeries> = refs.filter_map(|r| self.get(r)).collect();
        // the newest sample and the open chunk may sit on different cache lines of a series
        let newest = series.iter().fold(0i64, |acc, s| acc ^ s.last.0);
        let chunks: Vec<&[u8]> = series.iter().map(|s| s.open.bytes()).collect();
        let ends = chunks.iter().fold(0u8, |acc, c| acc ^ c.last().copied().unwrap_or(0));
        std::hint::black_box((newest, ends));
    }

    /// The series with ref `r`.
    pub(crate) fn get(&self, r: SeriesRef) -> Option<&MemSeries> {
        self.series.get(&r)
    }

    /// The labels of series `r`, if the last truncation removed it.
    pub(crate) fn departed(&self, r: SeriesRef) -> Option<&PackedLabels> {
        self.departed.get(&r)
    }

    /// How many truncations have removed series.
    pub(crate) fn removals(&self) -> u64 {
        self.removals
    }

    /// Adds a series under ref `r`, unless one with these labels exists: returns the ref the
    /// labels now live under. A ref already taken by other labels is a caller bug; the
    /// series is then not added and `None` is returned.
    pub(crate) fn create(&mut self, r: SeriesRef, labels: &Labels, hash: u64) -> Option<SeriesRef> {
        if let Some(existing) = self.lookup(labels, hash) {
            return Some(existing);
        }
        if self.series.contains_key(&r) {
            return None;
        }
        self.postings.insert(r, labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push(r),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
        self.series.insert(r, Box::new(MemSeries::new(PackedLabels::new(labels))));
        Some(r)
    }

    /// Appends a sample to series `r`, enforcing timestamp order.
    pub(crate) fn append(&mut self, r: SeriesRef, t: Timestamp, v: f64) -> AppendResult {
        let Some(s) = self.series.get_mut(&r) else { return AppendResult::UnknownSeries };
        let bits = v.to_bits();
        if let Some(refused) = s.refuses(t, bits) {
            return refused;
        }
        if s.open.is_full() {
            s.seal_open(&mut self.chunks, r);
        }
        if s.open.is_empty() {
            self.num_chunks += 1;
        }
        s.open.append(t, v);
        if let Some(stale) = s.set_newest(t, bits) {
            self.note_staleness(r, stale);
        }
        self.count_sample(t);
        AppendResult::Appended
    }

    /// Takes series `r`'s full chunks back from the chunk files an earlier process left, from
    /// `floor` on, if the series has none yet and those files hold its chain: the WAL's
    /// replay then skips the samples they hold ([`Head::set_replayed_newest`]). Returns the oldest
    /// and newest times of what was taken back.
    pub(crate) fn recover_chunks(
        &mut self,
        r: SeriesRef,
        floor: Timestamp,
    ) -> Option<(Timestamp, Timestamp)> {
        let s = self.series.get_mut(&r).filter(|s| s.sealed.chunks() == 0 && s.open.is_empty())?;
        let (chain, newest) = SealedChain::recover(&self.chunks, r, floor)?;
        let oldest = chain.min_t()?;
        self.num_chunks += u64::from(chain.chunks());
        self.num_samples += chain.samples() as u64;
        self.min_time = Some(self.min_time.map_or(oldest, |m| m.min(oldest)));
        self.max_time = Some(self.max_time.map_or(newest, |m| m.max(newest)));
        s.sealed = chain;
        Some((oldest, newest))
    }

    /// Makes `(t, bits)` series `r`'s newest sample, as the append of a sample its
    /// recovered full chunks hold ([`Head::recover_chunks`]) would have, without storing or
    /// counting it: the replay tracks such samples apart and hands the newest over before
    /// anything reads it.
    pub(crate) fn set_replayed_newest(&mut self, r: SeriesRef, (t, bits): (Timestamp, u64)) {
        let Some(s) = self.series.get_mut(&r) else { return };
        if s.last() == Some((t, bits)) {
            return;
        }
        if let Some(stale) = s.set_newest(t, bits) {
            self.note_staleness(r, stale);
        }
    }

    /// Makes series `r`'s newest sample that of its recovered chunks, whose newest time is
    /// `newest`, if the WAL's replay left an older one (a WAL that lost its tail, as a power
    /// loss may leave it): later samples must follow what the chunks hold.
    pub(crate) fn settle_recovered(&mut self, r: SeriesRef, newest: Timestamp) {
        let Some(s) = self.series.get_mut(&r) else { return };
        if s.last().is_some_and(|(t, _)| t >= newest) {
            return;
        }
        let Some(sample) = s.sealed.newest_sample(&self.chunks) else { return };
        if s.last().is_some_and(|(t, _)| t >= sample.t) {
            return;
        }
        if let Some(stale) = s.set_newest(sample.t, sample.v.to_bits()) {
            self.note_staleness(r, stale);
        }
    }

    /// The highest series ref the chunk files an earlier process left name: new series must
    /// get higher refs, or they would take those chunks for theirs.
    pub(crate) fn max_recovered_series(&self) -> SeriesRef {
        self.chunks.max_recovered_series()
    }

    /// Frees what the chunk store knows of the chains an earlier process left, once the
    /// WAL's replay has taken back those of the series it holds.
    pub(crate) fn forget_recovered(&mut self) {
        self.chunks.forget_recovered();
    }

    /// Records whether series `r`'s newest sample, just appended, is a staleness marker.
    fn note_staleness(&mut self, r: SeriesRef, stale: bool) {
        if stale {
            self.stale.insert(r, ());
        } else {
            self.stale.remove(&r);
        }
    }

    /// How many series have a staleness marker as their newest sample.
    pub(crate) fn num_stale_series(&self) -> usize {
        self.stale.len()
    }

    /// Appends a native-histogram sample to series `r`, under the order rules of
    /// [`append`](Self::append): a series' floats and histograms share one timeline. `bits`
    /// is `h`'s [fingerprint](FloatHistogram::fingerprint), which the caller has.
    pub(crate) fn append_histogram(
        &mut self,
        r: SeriesRef,
        t: Timestamp,
        h: Arc<FloatHistogram>,
        bits: u64,
    ) -> AppendResult {
        let Some(s) = self.series.get_mut(&r) else { return AppendResult::UnknownSeries };
        if let Some(refused) = s.refuses(t, bits) {
            return refused;
        }
        if !s.has_hists() {
            self.histogram_series += 1;
        }
        let stale = crate::is_stale_nan(h.sum);
        s.rare_mut().hists.get_or_insert_default().push(HistogramSample { t, h });
        s.last = (t, bits);
        // a histogram series' newest bits are a fingerprint: the set says whether it was stale
        if stale || self.stale.contains_key(&r) {
            self.note_staleness(r, stale);
        }
        self.count_sample(t);
        AppendResult::Appended
    }

    /// Stores an out-of-order histogram sample of series `r` (`bits`: its fingerprint),
    /// refusing a different value at a timestamp the series already has.
    pub(crate) fn insert_ooo_histogram(
        &mut self,
        r: SeriesRef,
        t: Timestamp,
        h: Arc<FloatHistogram>,
        bits: u64,
    ) -> AppendResult {
        if let Some(old) = self.value_at(r, t) {
            return if old == bits { AppendResult::Ignored } else { AppendResult::Duplicate };
        }
        let Some(s) = self.series.get_mut(&r) else { return AppendResult::UnknownSeries };
        if !s.has_hists() {
            self.histogram_series += 1;
        }
        s.rare_mut().hists.get_or_insert_default().insert(HistogramSample { t, h });
        self.count_sample(t);
        AppendResult::Appended
    }

    /// Records the start timestamp (0: none) of series `r`'s sample at `t`, before that
    /// sample is stored (see [`StartRuns::record`]).
    pub(crate) fn record_start(&mut self, r: SeriesRef, t: Timestamp, start: Timestamp) {
        let Some(s) = self.series.get(&r) else { return };
        let prev = s.last().map(|(t, _)| t);
        match self.starts.get_mut(&r) {
            Some(runs) => runs.record(prev, t, start),
            None if start != 0 => self.starts.entry(r).or_default().record(prev, t, start),
            None => {}
        }
    }

    /// Whether some series has start timestamps.
    pub(crate) fn keeps_starts(&self) -> bool {
        !self.starts.is_empty()
    }

    /// Whether series `r`'s sample at `t` has a start timestamp.
    pub(crate) fn has_start(&self, r: SeriesRef, t: Timestamp) -> bool {
        self.starts.get(&r).is_some_and(|runs| runs.covers(t))
    }

    /// Series `r`'s start-timestamp runs in `mint..=maxt`.
    pub(crate) fn starts_of(&self, r: SeriesRef, mint: Timestamp, maxt: Timestamp) -> Vec<StartRun> {
        self.starts.get(&r).map_or_else(Vec::new, |runs| runs.in_range(mint, maxt))
    }

    /// Matching series with start timestamps in `mint..=maxt`, sorted by labels.
    pub(crate) fn select_starts(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<StartTimestamps> {
        if mint > maxt || self.starts.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<StartTimestamps> = self
            .postings(matchers)
            .into_iter()
            .filter_map(|r| Some((self.starts.get(&r)?, self.series.get(&r)?)))
            .filter_map(|(runs, s)| {
                let runs = runs.in_range(mint, maxt);
                (!runs.is_empty()).then(|| StartTimestamps { labels: s.labels.to_labels(), runs })
            })
            .collect();
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Counts a stored sample at `t`.
    fn count_sample(&mut self, t: Timestamp) {
        self.num_samples += 1;
        self.min_time = Some(self.min_time.map_or(t, |m| m.min(t)));
        self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
    }

    /// Drops every sample older than `mint` and the series left without samples (their
    /// newest sample is then forgotten too); returns how many series were removed.
    pub(crate) fn truncate(&mut self, mint: Timestamp) -> usize {
        if self.min_time.is_none_or(|t| t >= mint) {
            return 0;
        }
        let mut removed: Vec<SeriesRef> = Vec::new();
        let mut new_min: Option<Timestamp> = None;
        for (r, s) in self.series.iter_mut() {
            let had_histograms = s.has_hists();
            let (samples, chunks) = s.truncate(&self.chunks, mint);
            if had_histograms && !s.has_hists() {
                self.histogram_series -= 1;
            }
            self.num_samples -= samples;
            self.num_chunks -= chunks;
            match s.first_t() {
                Some(t) => new_min = Some(new_min.map_or(t, |m| m.min(t))),
                None => removed.push(r),
            }
        }
        self.starts.retain(|_, runs| !runs.delete_range(Timestamp::MIN, mint - 1));
        let removed = self.remove_series(removed).len();
        self.chunks.release_older_than(mint);
        self.min_time = new_min;
        if new_min.is_none() {
            self.max_time = None;
        }
        removed
    }

    /// Takes the series `refs` out of the head with all they hold; returns those it held,
    /// sorted. Their labels stay until the next removal ([`Head::departed`]). The full chunks
    /// stay in the chunk files until a truncation releases their segments.
    pub(crate) fn remove_series(&mut self, mut refs: Vec<SeriesRef>) -> Vec<SeriesRef> {
        refs.sort_unstable();
        refs.dedup();
        refs.retain(|r| self.series.contains_key(r));
        self.departed.clear();
        if !refs.is_empty() {
            self.removals += 1;
        }
        for &r in &refs {
            let Some(s) = self.series.remove(&r) else { continue };
            self.num_samples -= s.num_samples() as u64;
            self.num_chunks -= s.num_chunks();
            if s.has_hists() {
                self.histogram_series -= 1;
            }
            self.starts.remove(&r);
            self.stale.remove(&r);
            let hash = s.labels.index_hash();
            self.collided.retain(|&c| c != r);
            if self.by_hash.get(&hash) == Some(&r) {
                self.by_hash.remove(&hash);
                // a collided series with the same hash takes the slot
                if let Some(pos) = self
                    .collided
                    .iter()
                    .position(|c| self.series.get(c).is_some_and(|o| o.labels.index_hash() == hash))
                {
                    let other = self.collided.swap_remove(pos);
                    self.by_hash.insert(hash, other);
                }
            }
            self.departed.insert(r, s.labels);
        }
        self.departed.shrink_to_fit();
        self.stale.shrink_to_fit();
        let gone = RefSet::new(&refs);
        self.postings.remove_where(|r| gone.contains(r));
        refs
    }

    /// The series whose newest sample is a staleness marker, sorted by their labels (which
    /// stay packed), each with its newest sample and its sample count: a series whose newest
    /// sample or count has changed since is not one to remove
    /// ([`Head::remove_series_unchanged`]).
    pub(crate) fn stale_series(&self) -> Vec<StaleSeries> {
        let mut found: Vec<(SeriesRef, &MemSeries)> =
            self.stale.keys().filter_map(|&r| Some((r, self.series.get(&r)?))).collect();
        found.sort_unstable_by(|a, b| a.1.labels.cmp_labels(&b.1.labels));
        found.into_iter().map(|(r, s)| StaleSeries { r, seen: (s.last, s.num_samples()) }).collect()
    }

    /// Removes those of `series` that are as [`Head::stale_series`] saw them: still stale,
    /// with the same newest sample and sample count. Returns the refs removed.
    pub(crate) fn remove_series_unchanged(&mut self, series: &[StaleSeries]) -> Vec<SeriesRef> {
        let unchanged: Vec<SeriesRef> = series
            .iter()
            .filter(|s| {
                self.stale.contains_key(&s.r)
                    && self.series.get(&s.r).is_some_and(|m| (m.last, m.num_samples()) == s.seen)
            })
            .map(|s| s.r)
            .collect();
        self.remove_series(unchanged)
    }

    /// The value bits of series `r`'s sample at `t`, if it has one (a histogram's
    /// [fingerprint](FloatHistogram::fingerprint)).
    pub(crate) fn value_at(&self, r: SeriesRef, t: Timestamp) -> Option<u64> {
        let s = self.series.get(&r)?;
        if let Some(h) = s.histograms_in(t, t).first() {
            return Some(h.h.fingerprint());
        }
        let mut at = Vec::new();
        s.samples_in(&self.chunks, t, t, &mut at);
        at.first().map(|s| s.v.to_bits())
    }

    /// Stores an out-of-order sample of series `r` (older than its newest), refusing a
    /// different value at a timestamp the series already has.
    pub(crate) fn insert_ooo(&mut self, r: SeriesRef, t: Timestamp, v: f64) -> AppendResult {
        if let Some(old) = self.value_at(r, t) {
            return if old == v.to_bits() { AppendResult::Ignored } else { AppendResult::Duplicate };
        }
        let Some(s) = self.series.get_mut(&r) else { return AppendResult::UnknownSeries };
        let ooo = &mut s.rare_mut().ooo;
        let i = ooo.partition_point(|x| x.t < t);
        ooo.insert(i, Sample { t, v });
        self.count_sample(t);
        AppendResult::Appended
    }

    /// Deletes series `r`'s samples in `mint..=maxt` (the series stays, with its newest
    /// sample remembered, until truncation finds it empty).
    pub(crate) fn delete_range(&mut self, r: SeriesRef, mint: Timestamp, maxt: Timestamp) {
        if self.starts.get_mut(&r).is_some_and(|runs| runs.delete_range(mint, maxt)) {
            self.starts.remove(&r);
        }
        if let Some(s) = self.series.get_mut(&r) {
            let had_histograms = s.has_hists();
            let chunks_before = s.num_chunks();
            self.num_samples -= s.delete_range(&mut self.chunks, r, mint, maxt);
            if had_histograms && !s.has_hists() {
                self.histogram_series -= 1;
            }
            // samples written anew after a gap may take more bytes, and so more chunks
            self.num_chunks = self.num_chunks - chunks_before + s.num_chunks();
        }
    }

    /// Refs of matching series with samples in `mint..=maxt` (label order not guaranteed).
    pub(crate) fn matching_refs(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<SeriesRef> {
        self.postings(matchers)
            .into_iter()
            .filter(|r| self.series.get(r).is_some_and(|s| s.has_samples_in(&self.chunks, mint, maxt)))
            .collect()
    }

    /// Refs of the series with samples in `mint..=maxt`, sorted by their labels (which stay
    /// packed: a cut unpacks them a batch at a time, [`Head::labels_of`]).
    pub(crate) fn refs_in_range(&self, mint: Timestamp, maxt: Timestamp) -> Vec<SeriesRef> {
        let mut found: Vec<(&PackedLabels, SeriesRef)> = self
            .series
            .iter()
            .filter(|(_, s)| s.has_samples_in(&self.chunks, mint, maxt))
            .map(|(r, s)| (&s.labels, r))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp_labels(b.0));
        found.into_iter().map(|(_, r)| r).collect()
    }

    /// The labels of series `r`, unpacked.
    pub(crate) fn labels_of(&self, r: SeriesRef) -> Option<Labels> {
        self.series.get(&r).map(|s| s.labels.to_labels())
    }

    /// Appends series `r`'s samples in `mint..=maxt` to `out`.
    pub(crate) fn samples_of(&self, r: SeriesRef, mint: Timestamp, maxt: Timestamp, out: &mut Vec<Sample>) {
        if let Some(s) = self.series.get(&r) {
            s.samples_in(&self.chunks, mint, maxt, out);
        }
    }

    /// Oldest and newest sample timestamps.
    pub(crate) fn time_range(&self) -> Option<(Timestamp, Timestamp)> {
        Some((self.min_time?, self.max_time?))
    }

    /// Series `r`'s oldest and newest sample timestamps (the newest may be one a deletion
    /// removed).
    pub(crate) fn time_range_of(&self, r: SeriesRef) -> Option<(Timestamp, Timestamp)> {
        let s = self.series.get(&r)?;
        Some((s.first_t()?, s.last()?.0))
    }

    /// Every series with its labels (for checkpoints).
    pub(crate) fn all_series(&self) -> impl Iterator<Item = (SeriesRef, Labels)> + '_ {
        self.series.iter().map(|(r, s)| (r, s.labels.to_labels()))
    }

    /// Number of series.
    pub(crate) fn num_series(&self) -> usize {
        self.series.len()
    }

    /// Sorted refs of the series matching every matcher (label-only; no time filtering).
    fn postings(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        let all = || {
            let mut refs: Vec<SeriesRef> = self.series.keys().collect();
            refs.sort_unstable();
            refs
        };
        self.postings
            .select(matchers, all, |r, name| self.series.get(&r).map(|s| Cow::Borrowed(s.labels.get(name))))
    }

    /// Sorted refs of the series matching every matcher, for a selection read part by part
    /// ([`Head::select_part`] and the like) by a caller that takes the head's lock for each
    /// part: one over a million series would otherwise hold it for seconds, and every commit
    /// with it.
    pub(crate) fn selection(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        self.postings(matchers)
    }

    /// Matching series with their samples in `mint..=maxt`, sorted by labels, read in one
    /// part (the database reads the head in several).
    #[cfg(test)]
    pub(crate) fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<Series> {
        let mut out = Vec::new();
        self.select_part(&self.selection(matchers), mint, maxt, &mut out);
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Appends the series `refs` that have samples in `mint..=maxt` to `out`, with those
    /// samples, in the order of `refs`. A ref no longer in the head is skipped.
    pub(crate) fn select_part(
        &self,
        refs: &[SeriesRef],
        mint: Timestamp,
        maxt: Timestamp,
        out: &mut Vec<Series>,
    ) {
        if mint > maxt {
            return;
        }
        let mut samples = Vec::new();
        for s in refs.iter().filter_map(|r| self.series.get(r)) {
            s.samples_in(&self.chunks, mint, maxt, &mut samples);
            if !samples.is_empty() {
                out.push(Series {
                    labels: s.labels.to_labels(),
                    samples: std::mem::take(&mut samples).into(),
                });
            }
        }
    }

    /// Whether some series has histogram samples.
    pub(crate) fn keeps_histograms(&self) -> bool {
        self.histogram_series > 0
    }

    /// Appends the series `refs` that have histogram samples in `mint..=maxt` to `out`, with
    /// those samples, in the order of `refs`.
    pub(crate) fn select_histograms_part(
        &self,
        refs: &[SeriesRef],
        mint: Timestamp,
        maxt: Timestamp,
        out: &mut Vec<HistogramSeries>,
    ) {
        if mint > maxt || self.histogram_series == 0 {
            return;
        }
        out.extend(refs.iter().filter_map(|r| self.series.get(r)).filter(|s| s.has_hists()).filter_map(
            |s| {
                let samples = s.histograms_in(mint, maxt);
                (!samples.is_empty()).then(|| HistogramSeries { labels: s.labels.to_labels(), samples })
            },
        ));
    }

    /// Whether a matching series has histogram samples in `mint..=maxt`.
    pub(crate) fn has_histograms(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> bool {
        if mint > maxt || self.histogram_series == 0 {
            return false;
        }
        self.postings(matchers)
            .into_iter()
            .filter_map(|r| self.series.get(&r))
            .any(|s| s.has_histograms_in(mint, maxt))
    }

    /// Appends series `r`'s histogram samples in `mint..=maxt` to `out`.
    pub(crate) fn histograms_of(
        &self,
        r: SeriesRef,
        mint: Timestamp,
        maxt: Timestamp,
        out: &mut Vec<HistogramSample>,
    ) {
        if let Some(s) = self.series.get(&r) {
            out.extend(s.histograms_in(mint, maxt));
        }
    }

    /// Matching series with samples in range (all matching series for the full range).
    fn matching<'a>(
        &'a self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> impl Iterator<Item = &'a MemSeries> + 'a {
        let refs = if mint > maxt { Vec::new() } else { self.postings(matchers) };
        let full = self.covers_all(mint, maxt);
        refs.into_iter()
            .filter_map(|r| self.series.get(&r))
            .filter(move |s| full || s.has_samples_in(&self.chunks, mint, maxt))
    }

    /// Whether `mint..=maxt` holds every sample of the head: then no series need be looked
    /// at for its samples (a lookup over "everything the head has", as Grafana's label
    /// pickers make, is the common case).
    fn covers_all(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        full_range(mint, maxt) || self.time_range().is_some_and(|(lo, hi)| mint <= lo && maxt >= hi)
    }

    /// An upper bound of the series refs a lookup of `matchers` reads
    /// ([`crate::postings::selection_cost`]).
    pub(crate) fn selection_cost(&self, matchers: &[Matcher]) -> Option<usize> {
        self.postings.selection_cost(matchers)
    }

    /// Label sets of matching series, sorted.
    pub(crate) fn series_labels(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<Labels> {
        let mut out: Vec<Labels> =
            self.matching(matchers, mint, maxt).map(|s| s.labels.to_labels()).collect();
        // sorted once built: the new label sets lie side by side in memory, where the packed
        // ones are spread over the heap and every comparison would miss the cache
        out.sort_unstable();
        out
    }

    /// Sorted label names of matching series.
    pub(crate) fn label_names(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<String> {
        let mut out: Vec<String> = if matchers.is_empty() && full_range(mint, maxt) {
            self.postings.names().map(|(n, _)| n.clone()).collect()
        } else {
            let mut names: HashSet<&str> = HashSet::new();
            for s in self.matching(matchers, mint, maxt) {
                names.extend(s.labels.iter().map(|(n, _)| n));
            }
            names.into_iter().map(str::to_string).collect()
        };
        out.sort_unstable();
        out
    }

    /// Sorted values of label `name` in matching series.
    pub(crate) fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<String> {
        let mut out: Vec<String> = if matchers.is_empty() {
            let Some(values) = self.postings.values(name) else { return Vec::new() };
            if mint > maxt {
                return Vec::new();
            }
            let full = self.covers_all(mint, maxt);
            values
                .iter()
                .filter(|(_, refs)| {
                    full || refs.iter().any(|r| {
                        self.series.get(&r).is_some_and(|s| s.has_samples_in(&self.chunks, mint, maxt))
                    })
                })
                .map(|(v, _)| v.clone())
                .collect()
        } else {
            let mut values: HashSet<&str> = HashSet::new();
            for s in self.matching(matchers, mint, maxt) {
                let v = s.labels.get(name);
                if !v.is_empty() {
                    values.insert(v);
                }
            }
            values.into_iter().map(str::to_string).collect()
        };
        out.sort_unstable();
        out
    }

    /// Counters and top-`limit` label statistics.
    pub(crate) fn stats(&self, limit: usize) -> HeadStats {
        let mut pairs = Vec::new();
        let mut value_counts = Vec::new();
        let mut memory = Vec::new();
        for (name, values) in self.postings.names() {
            value_counts.push((name.clone(), values.len() as u64));
            let mut bytes = 0u64;
            for (value, refs) in values {
                pairs.push((name.as_str(), value.as_str(), refs.len() as u64));
                bytes += value.len() as u64;
            }
            memory.push((name.clone(), bytes));
        }
        let num_label_pairs = pairs.len() as u64;
        // format only the pairs that can make the top list
        pairs.sort_unstable_by(|a, b| b.2.cmp(&a.2).then_with(|| (a.0, a.1).cmp(&(b.0, b.1))));
        pairs.truncate(limit);
        let by_pair = pairs.into_iter().map(|(n, v, c)| (format!("{n}={v}"), c)).collect();
        let by_metric = self
            .postings
            .values(crate::METRIC_NAME)
            .map(|values| values.iter().map(|(v, refs)| (v.clone(), refs.len() as u64)).collect())
            .unwrap_or_default();
        HeadStats {
            num_series: self.series.len() as u64,
            num_stale_series: self.stale.len() as u64,
            num_samples: self.num_samples,
            num_chunks: self.num_chunks,
            min_time: self.min_time,
            max_time: self.max_time,
            series_count_by_metric: top(by_metric, limit),
            label_value_count_by_label_name: top(value_counts, limit),
            memory_in_bytes_by_label_name: top(memory, limit),
            series_count_by_label_value_pair: top(by_pair, limit),
            num_label_pairs,
        }
    }

    /// Recounts samples and chunks from the chunks themselves (test cross-check).
    #[cfg(test)]
    fn recount(&self) -> (u64, u64) {
        let mut counts = (0, 0);
        for (_, s) in self.series.iter() {
            let (samples, chunks) = s.sealed.recount(&self.chunks);
            let others = s.num_samples() - s.sealed.samples();
            counts.0 += samples + others as u64;
            counts.1 += chunks + u64::from(!s.open.is_empty());
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postings::intersect;
    use crate::MatchOp;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher::new(op, name, value).unwrap()
    }

    fn add(h: &mut Head, r: SeriesRef, l: Labels, samples: &[(i64, f64)]) {
        let hash = PackedLabels::index_hash_of(&l);
        assert_eq!(h.create(r, &l, hash), Some(r));
        for &(t, v) in samples {
            assert_eq!(h.append(r, t, v), AppendResult::Appended);
        }
    }

    fn names(series: &[Series]) -> Vec<String> {
        series.iter().map(|s| s.labels.to_string()).collect()
    }

    fn sample_head() -> Head {
        let mut h = Head::default();
        add(&mut h, 1, ls(&[("__name__", "up"), ("job", "a"), ("instance", "1")]), &[(10, 1.0), (20, 1.0)]);
        add(&mut h, 2, ls(&[("__name__", "up"), ("job", "b"), ("instance", "2")]), &[(30, 0.0)]);
        add(&mut h, 3, ls(&[("__name__", "http_requests"), ("job", "a")]), &[(10, 5.0)]);
        add(&mut h, 4, ls(&[("__name__", "http_requests"), ("job", "b"), ("code", "500")]), &[(15, 7.0)]);
        h
    }

    #[test]
    fn stale_series_are_tracked_and_only_unchanged_ones_removed() {
        let mut h = sample_head();
        let stale = crate::stale_nan();
        for (r, t) in [(1, 30), (2, 40), (3, 20)] {
            assert_eq!(h.append(r, t, stale), AppendResult::Appended);
        }
        assert_eq!(h.num_stale_series(), 3);
        // a series that comes back is not stale any more
        assert_eq!(h.append(3, 25, 6.0), AppendResult::Appended);
        assert_eq!(h.num_stale_series(), 2);
        let found = h.stale_series();
        assert_eq!(found.iter().map(|s| s.r).collect::<Vec<_>>(), vec![1, 2], "sorted by labels");
        // series 2 takes a sample after it was found: it stays, though stale again
        assert_eq!(h.append(2, 50, stale), AppendResult::Appended);
        let (samples, chunks) = (h.num_samples, h.num_chunks);
        assert_eq!(h.remove_series_unchanged(&found), vec![1]);
        assert!(h.get(1).is_none() && h.departed(1).is_some());
        assert_eq!((h.num_samples, h.num_chunks), (samples - 3, chunks - 1));
        assert_eq!(h.recount(), (h.num_samples, h.num_chunks));
        assert_eq!(h.num_stale_series(), 1);
        assert!(h.postings(&[m(MatchOp::Equal, "instance", "1")]).is_empty());
        let gone = ls(&[("__name__", "up"), ("job", "a"), ("instance", "1")]);
        assert_eq!(h.lookup(&gone, PackedLabels::index_hash_of(&gone)), None);

        // a histogram whose sum is a staleness marker makes its series stale, the next one not
        let hist = |sum: f64| {
            let h =
                FloatHistogram::from_classic(&[(1.0, 2.0), (f64::INFINITY, 3.0)], Some(3.0), sum).unwrap();
            let bits = h.fingerprint();
            (Arc::new(h), bits)
        };
        add(&mut h, 9, ls(&[("__name__", "latency")]), &[]);
        for (t, sum, stale) in [(10, 1.0, 1), (20, stale, 2), (30, 4.0, 1)] {
            let (v, bits) = hist(sum);
            assert_eq!(h.append_histogram(9, t, v, bits), AppendResult::Appended);
            assert_eq!(h.num_stale_series(), stale, "at {t}");
        }
    }

    #[test]
    fn append_order_rules() {
        let mut h = Head::default();
        add(&mut h, 1, ls(&[("a", "b")]), &[(10, 1.0)]);
        assert_eq!(h.append(1, 5, 1.0), AppendResult::OutOfOrder);
        assert_eq!(h.append(1, 10, 2.0), AppendResult::Duplicate);
        assert_eq!(h.append(1, 10, 1.0), AppendResult::Ignored);
        assert_eq!(h.append(9, 10, 1.0), AppendResult::UnknownSeries);
        assert_eq!(h.append(1, 11, 1.0), AppendResult::Appended);
    }

    /// A series whose samples take a bit each fills chunks of 120; one whose values move
    /// fills chunks of [`MAX_CHUNK_BYTES`](crate::chunk::MAX_CHUNK_BYTES) first. Reads find
    /// every sample across the chunk boundaries either way.
    #[test]
    fn chunks_are_cut_at_120_samples_or_at_their_size() {
        let mut h = Head::default();
        add(&mut h, 1, ls(&[("a", "b")]), &[]);
        add(&mut h, 2, ls(&[("a", "c")]), &[]);
        let moving = |t: i64| (t * 7919 % 1000) as f64 / 3.0;
        for t in 0..250 {
            assert_eq!(h.append(1, t, 1.0), AppendResult::Appended);
            assert_eq!(h.append(2, t, moving(t)), AppendResult::Appended);
        }
        let steady = h.get(1).unwrap();
        assert_eq!(steady.sealed.chunks(), 2);
        assert_eq!(steady.open.len(), 10);
        let moves = h.get(2).unwrap();
        assert!(moves.sealed.chunks() > 5, "{} chunks", moves.sealed.chunks());
        assert_eq!(h.recount(), (500, 3 + moves.num_chunks()));
        assert_eq!((h.num_samples, h.num_chunks), h.recount());
        let all = h.select(&[], 100, 130);
        assert_eq!(all[0].samples.len(), 31);
        assert_eq!(all[0].samples.view().get(0), Sample { t: 100, v: 1.0 });
        let v = all[1].samples.view();
        assert_eq!(
            (0..v.len()).map(|i| (v.get(i).t, v.get(i).v)).collect::<Vec<_>>(),
            (100..=130).map(|t| (t, moving(t))).collect::<Vec<_>>()
        );
        assert!(steady.has_samples_in(&h.chunks, 119, 120));
        assert!(!steady.has_samples_in(&h.chunks, 250, i64::MAX));
    }

    #[test]
    fn gap_inside_chunk_is_not_a_sample() {
        let mut h = Head::default();
        add(&mut h, 1, ls(&[("a", "b")]), &[(0, 1.0), (100, 1.0)]);
        assert!(h.select(&[], 10, 90).is_empty());
        assert!(h.series_labels(&[], 10, 90).is_empty());
        assert!(h.label_values("a", &[], 10, 90).is_empty());
        assert_eq!(h.label_values("a", &[], 0, 0), vec!["b"]);
    }

    /// A head holds a `MemSeries` for every series, each in its own allocation: at 120 bytes
    /// it takes glibc's 128-byte chunk. A field more moves every series to the next size.
    #[test]
    fn a_series_fits_a_128_byte_allocation() {
        assert!(std::mem::size_of::<MemSeries>() <= 120, "{}", std::mem::size_of::<MemSeries>());
    }

    /// With its full chunks in files, a head answers as it does with them in memory: after
    /// appends across many chunk writes, a truncation that cuts through every series' oldest
    /// chunk, and a deletion that rewrites all of one series' chunks.
    #[test]
    fn chunks_in_files_answer_as_chunks_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut on_disk = Head::with_chunk_dir(dir.path().join("chunks")).unwrap();
        let mut in_memory = Head::default();
        // values that XOR-encode to several bytes, so the chunks span many buffer writes
        let value = |r: u64, t: i64| ((t * 7919 + r as i64 * 104_729) % 100_003) as f64 / 7.0;
        for h in [&mut on_disk, &mut in_memory] {
            for r in 0..2000u64 {
                add(h, r, ls(&[("__name__", "x"), ("series", &r.to_string())]), &[]);
            }
            for t in 0..600 {
                for r in 0..2000u64 {
                    assert_eq!(h.append(r, t, value(r, t)), AppendResult::Appended);
                }
            }
        }
        let files = std::fs::read_dir(dir.path().join("chunks")).unwrap().count();
        assert_eq!(files, 1);
        let bits = |h: &Head, mint, maxt| -> Vec<(String, Vec<(i64, u64)>)> {
            h.select(&[], mint, maxt)
                .into_iter()
                .map(|s| {
                    let v = s.samples.view();
                    (s.labels.to_string(), (0..v.len()).map(|i| (v.get(i).t, v.get(i).v.to_bits())).collect())
                })
                .collect()
        };
        let all = bits(&on_disk, 0, 599);
        assert_eq!(all.len(), 2000);
        assert!(all.iter().all(|(_, s)| s.len() == 600));
        assert_eq!(all, bits(&in_memory, 0, 599));
        for h in [&mut on_disk, &mut in_memory] {
            h.truncate(130);
            h.delete_range(7, 200, 450);
        }
        assert_eq!(bits(&on_disk, 0, 599), bits(&in_memory, 0, 599));
        assert_eq!(on_disk.recount(), in_memory.recount());
        assert_eq!(on_disk.recount().0, 2000 * 470 - 251);
        assert_eq!((on_disk.num_samples, on_disk.num_chunks), on_disk.recount());
    }

    /// Random appends, truncations and deletions over chunks in files answer as a plain
    /// model of the samples does, and the head's counts match its chunks.
    #[test]
    fn chained_chunks_answer_as_a_model_through_truncations_and_deletions() {
        use crate::chunk::tests::Rng;
        let dir = tempfile::tempdir().unwrap();
        let mut h = Head::with_chunk_dir(dir.path().join("chunks")).unwrap();
        let mut model: Vec<std::collections::BTreeMap<i64, f64>> = vec![Default::default(); 40];
        let mut rng = Rng(0x5eed);
        for r in 0..model.len() as u64 {
            add(&mut h, r, ls(&[("series", &r.to_string())]), &[]);
        }
        let mut t = 0i64;
        for round in 0..60 {
            for _ in 0..50 {
                t += 1 + rng.below(3) as i64;
                for (r, m) in model.iter_mut().enumerate() {
                    if rng.below(4) > 0 {
                        let v = if r % 2 == 0 { (rng.below(1000) as f64) / 8.0 } else { 5.0 };
                        assert_eq!(h.append(r as u64, t, v), AppendResult::Appended);
                        m.insert(t, v);
                    }
                }
            }
            match round % 3 {
                0 => {
                    let mint = t - 200 + rng.below(100) as i64;
                    h.truncate(mint);
                    for m in &mut model {
                        m.retain(|&k, _| k >= mint);
                    }
                }
                1 => {
                    let r = rng.below(model.len() as u64);
                    let (from, to) = (t - 150, t - 100 + rng.below(100) as i64);
                    h.delete_range(r, from, to);
                    model[r as usize].retain(|&k, _| k < from || k > to);
                }
                _ => {}
            }
            for _ in 0..5 {
                let (mint, maxt) = (t - rng.below(400) as i64, t - rng.below(100) as i64);
                for s in h.select(&[], mint, maxt) {
                    let r: usize = s.labels.get("series").parse().unwrap();
                    let v = s.samples.view();
                    let got: Vec<(i64, f64)> = (0..v.len()).map(|i| (v.get(i).t, v.get(i).v)).collect();
                    let want: Vec<(i64, f64)> = model[r].range(mint..=maxt).map(|(&k, &v)| (k, v)).collect();
                    assert_eq!(got, want, "series {r} over {mint}..={maxt} in round {round}");
                }
            }
            let samples: usize = model.iter().map(|m| m.len()).sum();
            assert_eq!(h.recount().0, samples as u64);
            assert_eq!((h.num_samples, h.num_chunks), h.recount(), "round {round}");
        }
    }

    #[test]
    fn a_sample_at_the_oldest_timestamp_goes_with_the_out_of_order_ones() {
        let mut h = Head::default();
        add(&mut h, 1, ls(&[("__name__", "x")]), &[]);
        assert_eq!(h.append(1, Timestamp::MIN, 1.0), AppendResult::OutOfOrder);
        assert_eq!(h.insert_ooo(1, Timestamp::MIN, 1.0), AppendResult::Appended);
        assert_eq!(h.get(1).unwrap().last(), None);
        assert_eq!(h.append(1, 10, 2.0), AppendResult::Appended);
        assert_eq!(h.value_at(1, Timestamp::MIN), Some(1.0f64.to_bits()));
    }

    #[test]
    fn create_reuses_existing_labels() {
        let mut h = Head::default();
        let l = ls(&[("a", "b")]);
        add(&mut h, 1, l.clone(), &[]);
        assert_eq!(h.create(2, &l, PackedLabels::index_hash_of(&l)), Some(1));
        assert_eq!(h.num_series(), 1);
        assert_eq!(h.create(1, &ls(&[("x", "y")]), 7), None);
    }

    #[test]
    fn hash_collisions_are_resolved_by_equality() {
        let mut h = Head::default();
        let a = ls(&[("a", "1")]);
        let b = ls(&[("a", "2")]);
        // force both under the same hash
        assert_eq!(h.create(1, &a, 42), Some(1));
        assert_eq!(h.create(2, &b, 42), Some(2));
        assert_eq!(h.lookup(&a, 42), Some(1));
        assert_eq!(h.lookup(&b, 42), Some(2));
        assert_eq!(h.lookup(&ls(&[("a", "3")]), 42), None);
    }

    #[test]
    fn many_lookups_at_once_find_what_single_lookups_find() {
        let mut h = Head::default();
        let (a, b, c) = (ls(&[("a", "1")]), ls(&[("a", "2")]), ls(&[("a", "3")]));
        // `a` and `b` share a hash; `c` is not in the head
        assert_eq!(h.create(1, &a, 42), Some(1));
        assert_eq!(h.create(2, &b, 42), Some(2));
        let keys = [b.clone(), c.clone(), a.clone(), c.clone()];
        let hashes = [42, 42, 42, PackedLabels::index_hash_of(&c)];
        let found: Vec<Option<SeriesRef>> = h
            .lookup_many(&hashes, |i, l| l.eq_labels(&keys[i]))
            .into_iter()
            .map(|f| f.map(|(r, _)| r))
            .collect();
        assert_eq!(found, vec![Some(2), None, Some(1), None]);
        for (key, hash) in keys.iter().zip(hashes) {
            assert_eq!(h.lookup(key, hash), found[keys.iter().position(|k| k == key).unwrap()]);
        }
    }

    #[test]
    fn matchers_of_every_kind() {
        let h = sample_head();
        let all = i64::MIN;
        let sel = |ms: &[Matcher]| names(&h.select(ms, all, i64::MAX));
        assert_eq!(
            sel(&[m(MatchOp::Equal, "__name__", "up")]),
            vec![
                "{__name__=\"up\", instance=\"1\", job=\"a\"}",
                "{__name__=\"up\", instance=\"2\", job=\"b\"}"
            ]
        );
        assert_eq!(
            sel(&[m(MatchOp::Equal, "__name__", "up"), m(MatchOp::NotEqual, "job", "a")]),
            vec!["{__name__=\"up\", instance=\"2\", job=\"b\"}"]
        );
        assert_eq!(
            sel(&[m(MatchOp::Regex, "__name__", "up|http_.*"), m(MatchOp::Equal, "job", "a")]),
            vec!["{__name__=\"http_requests\", job=\"a\"}", "{__name__=\"up\", instance=\"1\", job=\"a\"}"]
        );
        assert_eq!(
            sel(&[m(MatchOp::NotRegex, "job", "a"), m(MatchOp::Equal, "__name__", "http_requests")]),
            vec!["{__name__=\"http_requests\", code=\"500\", job=\"b\"}"]
        );
        // matchers that match the empty string: absent labels count as ""
        assert_eq!(
            sel(&[m(MatchOp::Equal, "code", ""), m(MatchOp::Equal, "job", "b")]),
            vec!["{__name__=\"up\", instance=\"2\", job=\"b\"}"]
        );
        assert_eq!(
            sel(&[m(MatchOp::Regex, "code", "500|"), m(MatchOp::Equal, "__name__", "http_requests")]).len(),
            2
        );
        assert_eq!(
            sel(&[m(MatchOp::NotEqual, "code", "")]),
            vec!["{__name__=\"http_requests\", code=\"500\", job=\"b\"}"]
        );
        assert_eq!(sel(&[m(MatchOp::NotRegex, "code", "")]).len(), 1);
        assert_eq!(sel(&[m(MatchOp::Regex, "instance", ".+")]).len(), 2);
        // every matcher matches "": all series are candidates
        assert_eq!(sel(&[m(MatchOp::Regex, "job", ".*")]).len(), 4);
        assert_eq!(sel(&[m(MatchOp::NotEqual, "job", "zzz")]).len(), 4);
        assert_eq!(sel(&[]).len(), 4);
        // nothing matches
        assert!(sel(&[m(MatchOp::Equal, "__name__", "nope")]).is_empty());
        assert!(sel(&[m(MatchOp::Equal, "nolabel", "x")]).is_empty());
        assert!(sel(&[m(MatchOp::Regex, "job", "c")]).is_empty());
        assert!(sel(&[m(MatchOp::Equal, "__name__", "up"), m(MatchOp::Equal, "job", "zzz")]).is_empty());
    }

    #[test]
    fn time_ranges_are_inclusive() {
        let h = sample_head();
        let up = [m(MatchOp::Equal, "__name__", "up")];
        let r = h.select(&up, 20, 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].samples.iter().collect::<Vec<_>>(), vec![Sample { t: 20, v: 1.0 }]);
        assert_eq!(r[1].samples.iter().collect::<Vec<_>>(), vec![Sample { t: 30, v: 0.0 }]);
        assert_eq!(h.select(&up, 21, 29).len(), 0);
        assert_eq!(h.select(&up, 30, 20).len(), 0);
        assert_eq!(h.series_labels(&[], 0, 12).len(), 2);
        assert_eq!(h.label_names(&[], 30, 30), vec!["__name__", "instance", "job"]);
        assert_eq!(h.label_names(&[], i64::MIN, i64::MAX), vec!["__name__", "code", "instance", "job"]);
        assert_eq!(h.label_values("job", &[], 30, 40), vec!["b"]);
        // the head's whole span, 10..=30, takes every value without looking at samples;
        // a narrower range still drops the values without a sample in it
        assert_eq!(h.label_values("job", &[], 10, 30), vec!["a", "b"]);
        assert_eq!(h.label_values("instance", &[], 10, 30), vec!["1", "2"]);
        assert_eq!(h.label_values("instance", &[], 11, 30), vec!["1", "2"]);
        assert_eq!(h.label_values("instance", &[], 21, 30), vec!["2"]);
        assert!(h.label_values("job", &[], 21, 29).is_empty());
        assert_eq!(h.label_values("__name__", &[], i64::MIN, i64::MAX), vec!["http_requests", "up"]);
        assert_eq!(
            h.label_values("job", &[m(MatchOp::Equal, "__name__", "http_requests")], 0, 12),
            vec!["a"]
        );
        assert_eq!(
            h.label_names(&[m(MatchOp::Equal, "job", "a")], i64::MIN, i64::MAX),
            vec!["__name__", "instance", "job"]
        );
        assert!(h.label_values("missing", &[], i64::MIN, i64::MAX).is_empty());
    }

    #[test]
    fn stats_top_lists() {
        let h = sample_head();
        let s = h.stats(2);
        assert_eq!((s.num_series, s.num_samples, s.num_chunks), (4, 5, 4));
        assert_eq!((s.min_time, s.max_time), (Some(10), Some(30)));
        assert_eq!(s.series_count_by_metric, vec![("http_requests".into(), 2), ("up".into(), 2)]);
        assert_eq!(s.label_value_count_by_label_name, vec![("__name__".into(), 2), ("instance".into(), 2)]);
        // `up` and `http_requests`; then `500`
        assert_eq!(s.memory_in_bytes_by_label_name, vec![("__name__".into(), 15), ("code".into(), 3)]);
        assert_eq!(
            s.series_count_by_label_value_pair,
            vec![("__name__=http_requests".into(), 2), ("__name__=up".into(), 2)]
        );
        // __name__×2, job×2, instance×2, code×1
        assert_eq!(s.num_label_pairs, 7);
    }

    #[test]
    fn intersect_sorted_lists() {
        let mut a = vec![1, 3, 5, 7, 9, 11];
        intersect(&mut a, &[2, 3, 4, 9, 10, 11, 12]);
        assert_eq!(a, vec![3, 9, 11]);
        let mut b = vec![1, 2];
        intersect(&mut b, &[]);
        assert!(b.is_empty());
    }
}
