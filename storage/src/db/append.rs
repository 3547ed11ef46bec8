//! The appender: samples staged, checked against the bounds they were admitted under, and
//! committed to the WAL and the head in one step.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::compact::head_compactable;
use super::{lock, min_valid, now_ms, read, write, Db, MAX_KEPT_BUFFER};
use crate::exemplars::{Exemplar, ExemplarError};
use crate::head::{index_hash, pack, pack_labels, AppendResult, SeriesRef, U64Map};
use crate::wal::{self, RefSample};
use crate::{
    is_stale_nan, Appender, CommitStats, CommittedBatch, Error, FloatHistogram, HistogramSample, Labels,
    LabelsRef, Prepared, Sample, Timestamp,
};

/// Numbers the appenders, for [`Prepared`] series to name the one that prepared them.
static NEXT_BATCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Db {
    /// A new, empty batch of appends.
    pub fn appender(self: &Arc<Self>) -> Box<dyn Appender> {
        Box::new(DbAppender {
            db: Arc::clone(self),
            batch: NEXT_BATCH.fetch_add(1, Ordering::Relaxed),
            series: Vec::new(),
            by_hash: U64Map::default(),
            collided: Vec::new(),
            packed: Vec::new(),
            samples: Vec::new(),
            histograms: Vec::new(),
            exemplars: Vec::new(),
            starts: Vec::new(),
            latest: self.opts.future_limit.map_or(Timestamp::MAX, |l| now_ms().saturating_add(l)),
            open_id: None,
            oldest: Timestamp::MAX,
            admitted: None,
            replica: false,
        })
    }

    /// Waits until no open appender holds a staged sample older than `t`, for at most
    /// `limit`; returns whether none does. Called by a head cut once appends older than `t`
    /// are refused, so that a sample accepted before the cut reaches the head before the
    /// range is written (Prometheus waits for overlapping appenders the same way).
    pub(super) fn wait_for_appends_below(&self, t: Timestamp, limit: Duration) {
        let open = lock(&self.open_appends);
        let (open, waited) = self
            .appends_closed
            .wait_timeout_while(open, limit, |o| o.oldest.values().any(|&oldest| oldest < t))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if waited.timed_out() {
            // marked under the commit lock, so that a commit either applied before the mark
            // (and the range written next holds its samples) or sees the mark
            drop(open);
            let _commits = lock(&self.writer);
            let mut open = lock(&self.open_appends);
            let late: Vec<u64> = open.oldest.iter().filter(|(_, &o)| o < t).map(|(&id, _)| id).collect();
            tracing::warn!(
                before = t,
                appenders = late.len(),
                "a head cut stopped waiting for open appenders; their samples before the cut will be refused at commit"
            );
            for id in late {
                open.abandoned.insert(id, t);
            }
        }
    }
}

/// A series touched by a batch.
struct BatchSeries {
    /// The labels of a series the head did not have at first append; for one it had, `None`
    /// (its labels are the head's) until an exemplar or the commit needs them.
    labels: Option<Arc<Labels>>,
    /// The labels' index hash ([`index_hash`]).
    hash: u64,
    /// The head's ref when the series existed at first append.
    sref: Option<SeriesRef>,
    /// Newest sample seen (head or batch): timestamp and value bits.
    last: Option<(Timestamp, u64)>,
}

/// The [`Appender`] of a [`Db`].
struct DbAppender {
    db: Arc<Db>,
    /// This appender's number ([`Prepared::batch`]).
    batch: u32,
    series: Vec<BatchSeries>,
    /// Index hash → index into `series` of the first series with that hash.
    by_hash: U64Map<u32>,
    /// Indices of series whose hash collided with an earlier one's.
    collided: Vec<u32>,
    /// Scratch space for the labels of the series being looked up, packed.
    packed: Vec<u8>,
    /// (index into `series`, t, value) in append order.
    samples: Vec<(u32, Timestamp, Staged)>,
    /// The histograms staged, with their fingerprints, as [`Staged::Histogram`] indexes them.
    histograms: Vec<(Arc<FloatHistogram>, u64)>,
    /// Exemplars staged: (index into `series`, exemplar), in append order.
    exemplars: Vec<(u32, Exemplar)>,
    /// Start timestamps staged: (index into `samples`, start timestamp), in append order.
    starts: Vec<(usize, Timestamp)>,
    /// The newest timestamp the appender takes: its creation time plus the future limit.
    latest: Timestamp,
    /// The appender's key in [`Db::open_appends`] once it has staged a sample.
    open_id: Option<u64>,
    /// The oldest staged timestamp (`i64::MAX` before the first).
    oldest: Timestamp,
    /// The loosest bounds any staged sample was admitted under: the commit checks against
    /// these, not against bounds that moved since (other commits, a head cut).
    admitted: Option<Bounds>,
    /// [`Appender::mark_replica`].
    replica: bool,
}

/// A staged sample's value. Floats and histograms are staged in one list so that a series'
/// samples are checked again at commit in the order they were appended.
#[derive(Clone, Copy, Debug)]
enum Staged {
    /// A float value.
    Float(f64),
    /// The histogram at this index of [`DbAppender::histograms`].
    Histogram(u32),
}

impl Staged {
    /// The value bits: a float's, or the fingerprint of the histogram in `histograms`.
    fn bits(self, histograms: &[(Arc<FloatHistogram>, u64)]) -> u64 {
        match self {
            Staged::Float(v) => v.to_bits(),
            Staged::Histogram(i) => histograms[i as usize].1,
        }
    }
}

/// The oldest staged sample of every open appender, by appender.
#[derive(Default)]
pub(super) struct OpenAppends {
    next_id: u64,
    oldest: U64Map<Timestamp>,
    /// Appenders a head cut stopped waiting for, with the end of the range it cut: their
    /// samples before it can no longer be stored.
    abandoned: U64Map<Timestamp>,
}

impl DbAppender {
    /// The end of the range a head cut wrote without waiting for this appender, if one did.
    fn abandoned_below(&self) -> Option<Timestamp> {
        self.open_id.and_then(|id| lock(&self.db.open_appends).abandoned.get(&id).copied())
    }
}

impl Drop for DbAppender {
    fn drop(&mut self) {
        if let Some(id) = self.open_id.take() {
            let mut open = lock(&self.db.open_appends);
            open.oldest.remove(&id);
            open.abandoned.remove(&id);
            drop(open);
            self.db.appends_closed.notify_all();
        }
    }
}

fn validate(labels: &Labels) -> Result<(), Error> {
    if labels.is_empty() {
        return Err(Error::InvalidLabels("empty label set".into()));
    }
    if labels.iter().any(|l| l.name.is_empty() || l.value.is_empty()) {
        return Err(Error::InvalidLabels(format!("empty label name or value in {labels}")));
    }
    Ok(())
}

/// The time bounds a sample must meet, read once per append.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// Older in-order samples are out of bounds.
    min_valid: Timestamp,
    /// The oldest sample the out-of-order window takes (`i64::MAX` without a window).
    ooo_min: Timestamp,
}

impl Bounds {
    /// The bounds that admit what either admits.
    fn loosest(self, other: Bounds) -> Bounds {
        Bounds { min_valid: self.min_valid.min(other.min_valid), ooo_min: self.ooo_min.min(other.ooo_min) }
    }
}

impl Db {
    fn bounds(&self) -> Bounds {
        let window = self.ooo_window.load(Ordering::Relaxed);
        let ooo_min = if window > 0 {
            self.head_max
                .load(Ordering::Relaxed)
                .saturating_sub(window)
                .max(self.ooo_floor.load(Ordering::Relaxed))
                .max(Timestamp::MIN + 1)
        } else {
            Timestamp::MAX
        };
        Bounds { min_valid: self.min_valid.load(Ordering::Relaxed), ooo_min }
    }
}

/// How a sample is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    /// After the series' newest sample.
    InOrder,
    /// Older than the series' newest, within the out-of-order window.
    OutOfOrder,
    /// Dropped silently (see [`check`]).
    Skip,
}

/// Decides how a sample at `t` with value bits `bits` (a float's, or a histogram's
/// fingerprint) is taken given the series' newest sample and the bounds.
fn admit(last: Option<(Timestamp, u64)>, t: Timestamp, bits: u64, b: Bounds) -> Result<Admit, Error> {
    let in_window = t >= b.ooo_min;
    if t < b.min_valid && !in_window {
        return Err(Error::OutOfBounds);
    }
    match check(last, t, bits) {
        Ok(true) => Ok(Admit::InOrder),
        Ok(false) => Ok(Admit::Skip),
        Err(Error::OutOfOrder) if in_window => Ok(Admit::OutOfOrder),
        Err(e) => Err(e),
    }
}

/// Checks a sample at `t` with value bits `bits` against the newest sample; `Ok(true)` means
/// store it, `Ok(false)` means drop it silently (identical repeat, or a staleness marker with
/// nothing to mark stale).
fn check(last: Option<(Timestamp, u64)>, t: Timestamp, bits: u64) -> Result<bool, Error> {
    let v = f64::from_bits(bits);
    match last {
        Some((lt, _)) if t < lt => Err(Error::OutOfOrder),
        Some((lt, lv)) if t == lt => {
            if bits == lv {
                Ok(false)
            } else {
                Err(Error::DuplicateTimestamp)
            }
        }
        None if is_stale_nan(v) => Ok(false),
        Some((_, lv)) if is_stale_nan(v) && is_stale_nan(f64::from_bits(lv)) => Ok(false),
        _ => Ok(true),
    }
}

/// What a batch looks a series up by: owned labels (scrapes, rules) or labels borrowed from
/// a decoded request (remote write), so a known series costs no allocation.
trait SeriesKey {
    /// Appends the key's labels, [packed](pack) as the head keeps them, to `out`.
    fn pack(&self, out: &mut Vec<u8>);
    fn is(&self, labels: &Labels) -> bool;
    fn to_labels(&self) -> Labels;
}

impl SeriesKey for &Labels {
    fn pack(&self, out: &mut Vec<u8>) {
        pack_labels(self, out);
    }
    fn is(&self, labels: &Labels) -> bool {
        **self == *labels
    }
    fn to_labels(&self) -> Labels {
        (*self).clone()
    }
}

impl SeriesKey for LabelsRef<'_> {
    fn pack(&self, out: &mut Vec<u8>) {
        pack(self.pairs(), out);
    }
    fn is(&self, labels: &Labels) -> bool {
        labels.eq_ref(*self)
    }
    fn to_labels(&self) -> Labels {
        LabelsRef::to_labels(self)
    }
}

impl DbAppender {
    /// Index of the series `key` in the batch, adding it (with the head's state) if new.
    fn series_index(&mut self, key: impl SeriesKey) -> Result<u32, Error> {
        // packed into the appender's scratch buffer: the head's index hashes, and its series
        // compare, those bytes
        let mut packed = std::mem::take(&mut self.packed);
        packed.clear();
        key.pack(&mut packed);
        let found = self.series_index_packed(&key, &packed);
        self.packed = packed;
        found
    }

    /// [`series_index`](Self::series_index) for `key`, whose packed labels are `packed`.
    fn series_index_packed(&mut self, key: &impl SeriesKey, packed: &[u8]) -> Result<u32, Error> {
        let hash = index_hash(packed);
        if let Some(&i) = self.by_hash.get(&hash) {
            if self.holds(i, key, packed) {
                return Ok(i);
            }
            if let Some(&j) = self.collided.iter().find(|&&j| self.holds(j, key, packed)) {
                return Ok(j);
            }
        }
        let idx = u32::try_from(self.series.len())
            .map_err(|_| Error::InvalidLabels("too many series in one batch".into()))?;
        let entry = {
            let head = read(&self.db.head);
            match head.lookup_by(hash, |l| l.view().is(packed)).and_then(|r| head.get(r).map(|s| (r, s))) {
                Some((r, s)) => BatchSeries { labels: None, hash, sref: Some(r), last: s.last() },
                None => {
                    let labels = key.to_labels();
                    validate(&labels)?;
                    BatchSeries { labels: Some(Arc::new(labels)), hash, sref: None, last: None }
                }
            }
        };
        self.series.push(entry);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push(idx),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(idx);
            }
        }
        Ok(idx)
    }

    /// Whether the batch's series `idx` is the series `key`. One found in the head is compared
    /// with the head's labels, or with those it left behind if it has been removed since.
    fn holds(&self, idx: u32, key: &impl SeriesKey, packed: &[u8]) -> bool {
        let s = &self.series[idx as usize];
        match (&s.labels, s.sref) {
            (Some(labels), _) => key.is(labels),
            (None, Some(r)) => {
                let head = read(&self.db.head);
                head.get(r)
                    .map(|m| &m.labels)
                    .or_else(|| head.departed(r))
                    .is_some_and(|l| l.view().is(packed))
            }
            (None, None) => false,
        }
    }

    /// The labels of the batch's series `idx`, taken from the head the first time for a
    /// series the head has (`None` if it has been removed since).
    fn shared_labels(&mut self, idx: u32) -> Option<Arc<Labels>> {
        let s = &mut self.series[idx as usize];
        if s.labels.is_none() {
            let head = read(&self.db.head);
            let r = s.sref?;
            let packed = head.get(r).map(|m| &m.labels).or_else(|| head.departed(r))?;
            s.labels = Some(Arc::new(packed.to_labels()));
        }
        s.labels.clone()
    }

    /// Stages `(t, v)` for the batch's series `idx`.
    fn append_at(&mut self, idx: u32, t: Timestamp, v: Staged, bounds: Bounds) -> Result<(), Error> {
        let bits = v.bits(&self.histograms);
        let s = &mut self.series[idx as usize];
        match admit(s.last, t, bits, bounds)? {
            Admit::InOrder => {
                s.last = Some((t, bits));
                self.samples.push((idx, t, v));
            }
            Admit::OutOfOrder => {
                // a conflicting value at a timestamp the series has is refused now, not
                // dropped silently at commit
                let stored = s.sref.and_then(|r| read(&self.db.head).value_at(r, t));
                let batched = self
                    .samples
                    .iter()
                    .find(|&&(i, bt, _)| i == idx && bt == t)
                    .map(|x| x.2.bits(&self.histograms));
                match stored.or(batched) {
                    Some(old) if old != bits => return Err(Error::DuplicateTimestamp),
                    Some(_) => {}
                    None => self.samples.push((idx, t, v)),
                }
            }
            Admit::Skip => {}
        }
        Ok(())
    }

    /// The bounds `t` must meet, or the out-of-bounds error (counted). A `t` older than any
    /// staged before is registered in [`Db::open_appends`] under the same lock as the bounds
    /// are read, so a head cut either refuses it or waits for this appender's commit.
    fn bounds_for(&mut self, t: Timestamp) -> Result<Bounds, Error> {
        if t > self.latest {
            self.db.out_of_bounds.fetch_add(1, Ordering::Relaxed);
            let limit_ms = self.db.opts.future_limit.unwrap_or(0);
            return Err(Error::TooFarInFuture { t, limit_ms });
        }
        let db = Arc::clone(&self.db);
        let mut open = (t < self.oldest).then(|| lock(&db.open_appends));
        let bounds = db.bounds();
        if t < bounds.min_valid && t < bounds.ooo_min {
            db.out_of_bounds.fetch_add(1, Ordering::Relaxed);
            return Err(Error::OutOfBounds);
        }
        if let Some(open) = open.as_mut() {
            let id = *self.open_id.get_or_insert_with(|| {
                open.next_id += 1;
                open.next_id
            });
            open.oldest.insert(id, t);
            self.oldest = t;
        }
        self.admitted = Some(self.admitted.map_or(bounds, |a| a.loosest(bounds)));
        Ok(bounds)
    }
}

impl Appender for DbAppender {
    fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) -> Result<(), Error> {
        let bounds = self.bounds_for(t)?;
        let idx = self.series_index(labels)?;
        self.append_at(idx, t, Staged::Float(v), bounds)
    }

    fn append_ref(&mut self, labels: LabelsRef<'_>, t: Timestamp, v: f64) -> Result<(), Error> {
        let bounds = self.bounds_for(t)?;
        let idx = self.series_index(labels)?;
        self.append_at(idx, t, Staged::Float(v), bounds)
    }

    fn prepare_refs(&mut self, keys: &[LabelsRef<'_>]) -> Vec<Option<Prepared>> {
        // hashed before the lock is taken; then nothing but lookups under it
        let mut packed: Vec<u8> = Vec::new();
        let mut ends: Vec<usize> = Vec::with_capacity(keys.len());
        for key in keys {
            key.pack(&mut packed);
            ends.push(packed.len());
        }
        let range = |i: usize| if i == 0 { 0 } else { ends[i - 1] }..ends[i];
        let hashes: Vec<u64> = (0..keys.len()).map(|i| index_hash(&packed[range(i)])).collect();
        let db = Arc::clone(&self.db);
        let head = read(&db.head);
        let found = head.lookup_many(&hashes, |i, l| l.is(&packed[range(i)]));
        found
            .into_iter()
            .zip(hashes)
            .map(|(found, hash)| {
                // a series of the batch already (or its hash's): `append_ref` tells them apart
                if self.by_hash.contains_key(&hash) {
                    return None;
                }
                let (r, s) = found?;
                let last = s.last();
                let idx = u32::try_from(self.series.len()).ok()?;
                self.series.push(BatchSeries { labels: None, hash, sref: Some(r), last });
                self.by_hash.insert(hash, idx);
                Some(Prepared { batch: self.batch, index: idx })
            })
            .collect()
    }

    fn append_prepared(&mut self, series: Prepared, t: Timestamp, v: f64) -> Result<(), Error> {
        if series.batch != self.batch || series.index as usize >= self.series.len() {
            return Err(Error::NotPrepared);
        }
        let bounds = self.bounds_for(t)?;
        self.append_at(series.index, t, Staged::Float(v), bounds)
    }

    fn append_histogram(&mut self, labels: &Labels, t: Timestamp, h: FloatHistogram) -> Result<(), Error> {
        let bounds = self.bounds_for(t)?;
        let idx = self.series_index(labels)?;
        let at = u32::try_from(self.histograms.len())
            .map_err(|_| Error::InvalidLabels("too many histograms in one batch".into()))?;
        let fingerprint = h.fingerprint();
        self.histograms.push((Arc::new(h), fingerprint));
        let staged = self.append_at(idx, t, Staged::Histogram(at), bounds);
        if !self.samples.last().is_some_and(|s| matches!(s.2, Staged::Histogram(i) if i == at)) {
            // not staged (refused, or an identical repeat): not kept either
            self.histograms.pop();
        }
        staged
    }

    fn append_exemplar(&mut self, labels: &Labels, e: Exemplar) -> Result<(), Error> {
        if self.db.exemplars.capacity() == 0 {
            return Ok(());
        }
        let idx = self.series_index(labels)?;
        // against the stored newest now, and against the batch's own
        let staged_newest = self.exemplars.iter().rev().find(|(i, _)| *i == idx).map(|(_, e)| e);
        match staged_newest {
            Some(newest) if *newest == e => return Ok(()),
            Some(newest) if e.t < newest.t => return Err(Error::Exemplar(ExemplarError::OutOfOrder)),
            _ => {}
        }
        let Some(labels) = self.shared_labels(idx) else { return Ok(()) };
        if self.db.exemplars.admits(&labels, &e).map_err(Error::Exemplar)? {
            self.exemplars.push((idx, e));
        }
        Ok(())
    }

    fn set_start_timestamp(&mut self, labels: &Labels, t: Timestamp, start: Timestamp) -> Result<(), Error> {
        if !self.db.opts.start_timestamps || start == 0 {
            return Ok(());
        }
        let idx = self.series_index(labels)?;
        // the sample was staged just before, as a rule
        if let Some(k) = self.samples.iter().rposition(|&(i, st, _)| i == idx && st == t) {
            match self.starts.last_mut() {
                Some(last) if last.0 == k => last.1 = start,
                _ => self.starts.push((k, start)),
            }
        }
        Ok(())
    }

    fn mark_replica(&mut self) {
        self.replica = true;
    }

    fn commit(mut self: Box<Self>) -> Result<CommitStats, Error> {
        let db = Arc::clone(&self.db);
        let mut series = std::mem::take(&mut self.series);
        let samples = std::mem::take(&mut self.samples);
        let histograms = std::mem::take(&mut self.histograms);
        let exemplars = std::mem::take(&mut self.exemplars);
        let staged_starts = std::mem::take(&mut self.starts);
        let bits = |v: Staged| v.bits(&histograms);
        let admitted = self.admitted;
        if samples.is_empty() {
            return Ok(CommitStats::default());
        }
        let mut guard = lock(&db.writer);
        let writer = &mut *guard;
        let abandoned_below = self.abandoned_below();

        // Re-validate against the head as it is now: the commit lock keeps it unchanged
        // until we apply. A concurrent commit may have created our new series or advanced
        // our series' newest sample since `append`. Time bounds are those the samples were
        // admitted under: a head cut waits for this commit ([`Db::wait_for_appends_below`]),
        // and bounds moved by other commits must not turn an accepted sample away.
        let mut refs: Vec<Option<SeriesRef>> = Vec::with_capacity(series.len());
        let mut keep = vec![false; samples.len()];
        let mut starts: Option<Vec<Option<Timestamp>>> = None;
        let mut refused: Option<(u64, Error)> = None;
        {
            let head = read(&db.head);
            let mut last: Vec<Option<(Timestamp, u64)>> = Vec::with_capacity(series.len());
            for s in &mut series {
                let live = s.sref.and_then(|r| head.get(r).map(|m| (r, m)));
                if live.is_none() && s.labels.is_none() {
                    // removed by a truncation since `append`: created again from the labels
                    // it left, unless another commit has done so
                    s.labels = s.sref.and_then(|r| head.departed(r)).map(|l| Arc::new(l.to_labels()));
                }
                let by_labels = || {
                    let r = head.lookup(s.labels.as_ref()?, s.hash)?;
                    head.get(r).map(|m| (r, m))
                };
                match live.or_else(by_labels) {
                    Some((r, m)) => {
                        refs.push(Some(r));
                        last.push(m.last());
                    }
                    None => {
                        refs.push(None);
                        last.push(None);
                    }
                }
            }
            let bounds = admitted.unwrap_or_else(|| db.bounds());
            // only when a cut gave up waiting for this appender: a sample in the range it
            // wrote would be lost with the head's truncation
            let cut = abandoned_below.unwrap_or(Timestamp::MIN);
            for (k, &(idx, t, v)) in keep.iter_mut().zip(&samples) {
                let verdict = if t < cut {
                    Err(Error::OutOfBounds)
                } else if refs[idx as usize].is_none() && series[idx as usize].labels.is_none() {
                    Err(Error::SeriesRemoved)
                } else {
                    admit(last[idx as usize], t, bits(v), bounds)
                };
                match verdict {
                    Ok(Admit::InOrder) => {
                        *k = true;
                        last[idx as usize] = Some((t, bits(v)));
                    }
                    Ok(Admit::OutOfOrder) => *k = true,
                    Ok(Admit::Skip) => {}
                    Err(e) => match &mut refused {
                        Some((n, _)) => *n += 1,
                        None => refused = Some((1, e)),
                    },
                }
            }
            // the start timestamp of each kept sample that has one, and a 0 for each that
            // takes, out of order, the place of a sample with one
            if !staged_starts.is_empty() || head.keeps_starts() {
                let mut per_sample = vec![None; samples.len()];
                for &(k, start) in &staged_starts {
                    per_sample[k] = Some(start);
                }
                for (k, &(idx, t, _)) in samples.iter().enumerate() {
                    let replaces = || refs[idx as usize].is_some_and(|r| head.has_start(r, t));
                    if per_sample[k].is_none() && keep[k] && replaces() {
                        per_sample[k] = Some(0);
                    }
                }
                starts = Some(per_sample);
            }
        }
        if let Some((n, e)) = &refused {
            db.commit_refused.fetch_add(*n, Ordering::Relaxed);
            tracing::warn!(samples = n, staged = samples.len(), reason = %e, "samples made unacceptable by a concurrent commit were refused");
        }
        // the rest is committed; the refusal is the caller's to report
        let refusal = |stored: usize| match refused {
            Some((n, reason)) => Err(Error::Refused {
                refused: n,
                staged: samples.len() as u64,
                stored,
                reason: Box::new(reason),
            }),
            None => Ok(()),
        };

        // refs for series that are new and got at least one sample
        let mut new_series: Vec<u32> = Vec::new();
        for (&(idx, _, _), _) in samples.iter().zip(&keep).filter(|(_, k)| **k) {
            if refs[idx as usize].is_none() {
                refs[idx as usize] = Some(writer.next_ref);
                writer.next_ref += 1;
                new_series.push(idx);
            }
        }
        let ref_of = |idx: u32| refs[idx as usize].unwrap_or(0);
        let kept = || samples.iter().zip(&keep).filter(|(_, k)| **k).map(|(s, _)| *s);
        let num_samples = kept().count();
        if num_samples == 0 {
            return refusal(0).map(|()| CommitStats::default());
        }

        // one write(2) for the whole batch
        writer.buf.clear();
        wal::encode_series(
            &mut writer.buf,
            new_series.iter().filter_map(|&i| Some((ref_of(i), series[i as usize].labels.as_deref()?))),
        );
        // before the samples: replay records a start as the commit does, before its sample
        if let Some(starts) = &starts {
            wal::encode_start_timestamps(
                &mut writer.buf,
                samples
                    .iter()
                    .zip(starts)
                    .enumerate()
                    .filter(|(k, _)| keep[*k])
                    .filter_map(|(_, (&(idx, t, _), start))| start.map(|st| (ref_of(idx), t, st))),
            );
        }
        wal::encode_samples(
            &mut writer.buf,
            kept().filter_map(|(idx, t, v)| match v {
                Staged::Float(v) => Some(RefSample { r: ref_of(idx), t, v }),
                Staged::Histogram(_) => None,
            }),
        );
        // after the floats: a series whose floats and histograms interleave in the batch is
        // put back in order at replay, as out-of-order samples are
        wal::encode_histograms(
            &mut writer.buf,
            kept().filter_map(|(idx, t, v)| match v {
                Staged::Histogram(i) => Some((ref_of(idx), t, &*histograms[i as usize].0)),
                Staged::Float(_) => None,
            }),
        );
        // the exemplars of series that are stored (or got a sample of this batch)
        let exemplars: Vec<(u32, SeriesRef, Exemplar)> =
            exemplars.into_iter().filter_map(|(idx, e)| refs[idx as usize].map(|r| (idx, r, e))).collect();
        wal::encode_exemplars(&mut writer.buf, exemplars.iter().map(|(_, r, e)| (*r, e)));
        let max_t = kept().map(|(_, t, _)| t).max().unwrap_or(Timestamp::MIN);
        let written = writer.wal.write(&writer.buf, max_t);
        if writer.buf.capacity() > MAX_KEPT_BUFFER {
            writer.buf = Vec::new();
        }
        if written.is_err() {
            db.counters.wal_writes_failed.fetch_add(1, Ordering::Relaxed);
        }
        written?;
        db.counters.series_created.fetch_add(new_series.len() as u64, Ordering::Relaxed);

        let removals = {
            let mut head = write(&db.head);
            for &i in &new_series {
                let s = &series[i as usize];
                let r = ref_of(i);
                let Some(labels) = &s.labels else { continue };
                if head.create(r, labels, s.hash) != Some(r) {
                    // cannot happen: the ref is fresh and the labels were absent under the lock
                    tracing::error!(series = %labels, "new series clashed with an existing one");
                }
            }
            for (k, &(idx, t, v)) in samples.iter().enumerate().filter(|(k, _)| keep[*k]) {
                if let Some(start) = starts.as_ref().and_then(|s| s[k]) {
                    head.record_start(ref_of(idx), t, start);
                }
                let appended = match v {
                    Staged::Float(v) => head.append(ref_of(idx), t, v),
                    Staged::Histogram(i) => {
                        let (h, bits) = &histograms[i as usize];
                        head.append_histogram(ref_of(idx), t, Arc::clone(h), *bits)
                    }
                };
                let res = match appended {
                    AppendResult::OutOfOrder => {
                        let res = match v {
                            Staged::Float(v) => head.insert_ooo(ref_of(idx), t, v),
                            Staged::Histogram(i) => {
                                let (h, bits) = &histograms[i as usize];
                                head.insert_ooo_histogram(ref_of(idx), t, Arc::clone(h), *bits)
                            }
                        };
                        if matches!(res, AppendResult::Appended) {
                            db.counters.out_of_order_appended.fetch_add(1, Ordering::Relaxed);
                        }
                        res
                    }
                    other => other,
                };
                if !matches!(res, AppendResult::Appended | AppendResult::Ignored) {
                    tracing::debug!(result = ?res, "head refused an out-of-order sample of the batch");
                }
            }
            if let Some((min, max)) = head.time_range() {
                db.head_max.fetch_max(max, Ordering::Relaxed);
                // cut now rather than at the compactor's next round: a backfill would pile
                // hours of samples into the head in between
                if head_compactable(min, max, db.opts.block_duration) {
                    if let Some(compactor) = lock(&db.compactor).as_ref() {
                        compactor.thread().unpark();
                    }
                }
            }
            let floor = db.floor.load(Ordering::Relaxed);
            db.min_valid
                .fetch_max(min_valid(floor, head.time_range(), db.opts.block_duration), Ordering::Relaxed);
            head.removals()
        };

        for (idx, _, e) in exemplars {
            if let Some(labels) = &series[idx as usize].labels {
                db.exemplars.add(labels, e);
            }
        }

        let mut subs = lock(&db.subscribers);
        if !subs.is_empty() {
            let batch = Arc::new(CommittedBatch {
                samples: kept()
                    .filter_map(|(idx, t, v)| match v {
                        Staged::Float(v) => Some((ref_of(idx), Sample { t, v })),
                        Staged::Histogram(_) => None,
                    })
                    .collect(),
                histograms: kept()
                    .filter_map(|(idx, t, v)| match v {
                        Staged::Histogram(i) => Some((
                            ref_of(idx),
                            HistogramSample { t, h: Arc::clone(&histograms[i as usize].0) },
                        )),
                        Staged::Float(_) => None,
                    })
                    .collect(),
                created: new_series
                    .iter()
                    .filter_map(|&i| Some((ref_of(i), Arc::clone(series[i as usize].labels.as_ref()?))))
                    .collect(),
                removals,
                replica: self.replica,
                db: Arc::downgrade(&db),
            });
            subs.retain(|(tx, wake)| {
                let sent = tx.send(Arc::clone(&batch)).is_ok();
                if let (true, Some(wake)) = (sent, wake) {
                    wake();
                }
                sent
            });
        }
        drop(subs);
        refusal(num_samples)?;
        Ok(CommitStats { samples: num_samples, new_series: new_series.len() })
    }

    fn rollback(self: Box<Self>) {}
}
