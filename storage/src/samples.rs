//! A series' samples as two columns, the shape the query kernels read.
//!
//! Samples read from a block are slices of the Arrow arrays decoded from its Parquet file:
//! the timestamp column as Parquet gives it, the value column as decoded from its custom
//! encoding (see `block/values.rs`), both shared, not copied, by every series of the batch.
//! A read that keeps less than half of a batch's rows (a short time range out of a long
//! block) copies them out instead, so that it does not keep the whole batch alive.
//! The head's samples are decoded from its chunks into the same shape.

use std::ops::Range;

use arrow_buffer::{Buffer, ScalarBuffer};

use crate::{Sample, Timestamp};

/// Owned columns of samples in strictly increasing timestamp order. Cloning and slicing
/// share the underlying Arrow buffers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    t: ScalarBuffer<i64>,
    v: ScalarBuffer<f64>,
}

impl Samples {
    /// Columns from two vectors of equal length (panics otherwise: a caller bug).
    pub fn new(t: Vec<Timestamp>, v: Vec<f64>) -> Self {
        assert_eq!(t.len(), v.len(), "timestamp and value columns differ in length");
        Samples { t: t.into(), v: v.into() }
    }

    /// Columns sharing two Arrow buffers of equal length.
    pub(crate) fn from_buffers(t: ScalarBuffer<i64>, v: ScalarBuffer<f64>) -> Self {
        debug_assert_eq!(t.len(), v.len());
        Samples { t, v }
    }

    /// Bytes of the buffers these columns keep alive, shared or not.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.t.inner().capacity() + self.v.inner().capacity()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// A borrowed view, what kernels take.
    pub fn view(&self) -> SampleSlice<'_> {
        SampleSlice { t: &self.t, v: &self.v }
    }

    /// The samples at `range`, sharing the buffers.
    pub fn slice(&self, range: Range<usize>) -> Samples {
        let len = range.end - range.start;
        Samples { t: self.t.slice(range.start, len), v: self.v.slice(range.start, len) }
    }

    /// The samples one by one.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Sample> + ExactSizeIterator + Clone + '_ {
        self.view().iter()
    }

    /// The samples of every part, each part in time order, joined into one series; where
    /// parts share a timestamp, the sample of the earlier part in `parts` is kept.
    ///
    /// Parts that follow one another in time (a series read from consecutive blocks) are
    /// joined column by column; a single part is returned as it is, sharing its buffers.
    pub fn merge(parts: Vec<Samples>) -> Samples {
        JoinBuffers::default().join(vec![parts]).pop().unwrap_or_default()
    }

    /// The order of `parts` (none empty) in which each ends before the next begins, if
    /// there is one: then they are joined by copying, without comparing timestamps.
    fn in_turn(parts: &[Samples]) -> Option<Vec<usize>> {
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by_key(|&i| parts[i].t[0]);
        let in_turn = order.windows(2).all(|w| parts[w[0]].t[parts[w[0]].len() - 1] < parts[w[1]].t[0]);
        in_turn.then_some(order)
    }

    /// Both series' samples in time order, this one's where both have a timestamp.
    fn merged_with(&self, other: &Samples) -> Samples {
        let total = self.len() + other.len();
        let (mut t, mut v) = (Vec::with_capacity(total), Vec::with_capacity(total));
        let (mut i, mut j) = (0, 0);
        while i < self.len() || j < other.len() {
            let take_self = j == other.len() || (i < self.len() && self.t[i] <= other.t[j]);
            if take_self {
                if j < other.len() && other.t[j] == self.t[i] {
                    j += 1;
                }
                t.push(self.t[i]);
                v.push(self.v[i]);
                i += 1;
            } else {
                t.push(other.t[j]);
                v.push(other.v[j]);
                j += 1;
            }
        }
        Samples::new(t, v)
    }

    /// Keeps the samples for which `keep` holds (copies only when something is dropped).
    pub fn filtered(self, keep: impl Fn(Sample) -> bool) -> Samples {
        if self.iter().all(&keep) {
            return self;
        }
        self.iter().filter(|&s| keep(s)).collect()
    }

    /// Without staleness markers (copies only when there is one).
    ///
    /// Every query reads its series through this, so the search for a marker compares a
    /// block of values at a time without a branch for each, which runs on several values
    /// at once; `filtered` would test them one by one.
    pub fn without_stale_markers(self) -> Samples {
        let marked = self
            .v
            .chunks(64)
            .any(|block| block.iter().fold(false, |seen, v| seen | (v.to_bits() == crate::STALE_NAN_BITS)));
        if !marked {
            return self;
        }
        self.filtered(|s| !crate::is_stale_nan(s.v))
    }
}

/// Columns that series are written into one after another ([`JoinBuffers::fill`], and
/// [`JoinBuffers::join`] on top of it), in chunks kept to be used again once every series
/// written into them is dropped.
///
/// A query that reads a selection over days in groups of series (`Querier::select_in_groups`)
/// joins each series' parts of a dozen blocks: into memory of its own for every series,
/// that is tens of megabytes of new allocations a group, which the allocator hands back to
/// the system between groups and the kernel faults in again page by page (on a week's
/// `rate`, a fifth of the query's time went to those faults). Written into the same
/// chunks group after group, the pages stay the process's.
#[derive(Default)]
pub(crate) struct JoinBuffers {
    /// The chunks of the last fill, shared with the series written into them.
    last: Vec<(Buffer, Buffer)>,
}

/// Samples a chunk of [`JoinBuffers`] holds, unless one series alone holds more: 2 MiB a
/// column. jemalloc hands an allocation of more than 8 MiB back to the system as soon as it
/// is freed, so chunks stay below that, and the allocator keeps them for the next query
/// too.
const JOIN_CHUNK_SAMPLES: usize = 1 << 18;

/// A chunk being filled: its two columns.
struct Chunk {
    t: Vec<Timestamp>,
    v: Vec<f64>,
}

impl Chunk {
    /// Samples it has room for.
    fn room(&self) -> usize {
        self.t.capacity().min(self.v.capacity()) - self.t.len()
    }
}

impl JoinBuffers {
    /// Each series' `parts` joined as [`Samples::merge`] joins them, in order. Series of
    /// parts that follow one another in time are copied into shared chunks (see
    /// [`JoinBuffers::fill`]).
    pub(crate) fn join(&mut self, series: Vec<Vec<Samples>>) -> Vec<Samples> {
        enum Joined {
            Done(Samples),
            Copied(Vec<Samples>, Vec<usize>),
        }
        let joined: Vec<Joined> = series
            .into_iter()
            .map(|mut parts| {
                parts.retain(|p| !p.is_empty());
                if parts.len() <= 1 {
                    return Joined::Done(parts.pop().unwrap_or_default());
                }
                match Samples::in_turn(&parts) {
                    Some(order) => Joined::Copied(parts, order),
                    None => {
                        let mut parts = parts.into_iter();
                        let first = parts.next().unwrap_or_default();
                        Joined::Done(parts.fold(first, |kept, next| kept.merged_with(&next)))
                    }
                }
            })
            .collect();
        let copied: Vec<(&[Samples], &[usize])> = joined
            .iter()
            .filter_map(|j| match j {
                Joined::Copied(parts, order) => Some((parts.as_slice(), order.as_slice())),
                Joined::Done(_) => None,
            })
            .collect();
        let sizes: Vec<usize> =
            copied.iter().map(|(parts, _)| parts.iter().map(Samples::len).sum()).collect();
        let filled = self.fill(&sizes, |i, t, v| {
            let (parts, order) = copied[i];
            for &k in order {
                t.extend_from_slice(&parts[k].t);
                v.extend_from_slice(&parts[k].v);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        let mut filled = match filled {
            Ok(filled) => filled.into_iter(),
            Err(never) => match never {},
        };
        joined
            .into_iter()
            .map(|j| match j {
                Joined::Done(s) => s,
                Joined::Copied(..) => filled.next().unwrap_or_default(),
            })
            .collect()
    }

    /// Series written one after another by `write(i, t, v)`, which appends series `i`'s
    /// samples to the columns `t` and `v`, at most `sizes[i]` of them: each series is a
    /// slice of shared chunks, the last fill's that no series holds any more, else new ones.
    pub(crate) fn fill<E>(
        &mut self,
        sizes: &[usize],
        mut write: impl FnMut(usize, &mut Vec<Timestamp>, &mut Vec<f64>) -> Result<(), E>,
    ) -> Result<Vec<Samples>, E> {
        let mut left: usize = sizes.iter().sum();
        let mut spare = if left > 0 { self.reclaim() } else { Vec::new() };
        let mut filled: Vec<Chunk> = Vec::new();
        // where each series is: its chunk and rows there
        let mut at: Vec<(usize, Range<usize>)> = Vec::with_capacity(sizes.len());
        for (i, &len) in sizes.iter().enumerate() {
            if filled.last().is_none_or(|c| c.room() < len) {
                // a chunk no larger than what is left to write, nor smaller than the series
                let want = left.min(JOIN_CHUNK_SAMPLES).max(len);
                let chunk = match spare.iter().position(|c| c.room() >= want) {
                    Some(k) => spare.swap_remove(k),
                    None => Chunk { t: Vec::with_capacity(want), v: Vec::with_capacity(want) },
                };
                filled.push(chunk);
            }
            // the last chunk, which the test above made sure of
            let index = filled.len() - 1;
            let chunk = &mut filled[index];
            let start = chunk.t.len();
            write(i, &mut chunk.t, &mut chunk.v)?;
            at.push((index, start..chunk.t.len()));
            left -= len;
        }
        let columns: Vec<(ScalarBuffer<i64>, ScalarBuffer<f64>)> =
            filled.into_iter().map(|c| (ScalarBuffer::from(c.t), ScalarBuffer::from(c.v))).collect();
        if !columns.is_empty() {
            self.last = columns.iter().map(|(t, v)| (t.inner().clone(), v.inner().clone())).collect();
        }
        Ok(at
            .into_iter()
            .map(|(index, rows)| {
                let (t, v) = &columns[index];
                Samples { t: t.slice(rows.start, rows.len()), v: v.slice(rows.start, rows.len()) }
            })
            .collect())
    }

    /// The last fill's chunks that no series written into them holds any more, emptied.
    fn reclaim(&mut self) -> Vec<Chunk> {
        let mut free = Vec::new();
        for (t, v) in self.last.drain(..) {
            if let (Ok(mut t), Ok(mut v)) = (t.into_vec::<i64>(), v.into_vec::<f64>()) {
                t.clear();
                v.clear();
                free.push(Chunk { t, v });
            }
        }
        free
    }
}

impl FromIterator<Sample> for Samples {
    fn from_iter<I: IntoIterator<Item = Sample>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let (mut t, mut v) = (Vec::with_capacity(iter.size_hint().0), Vec::with_capacity(iter.size_hint().0));
        for s in iter {
            t.push(s.t);
            v.push(s.v);
        }
        Samples::new(t, v)
    }
}

impl From<Vec<Sample>> for Samples {
    fn from(v: Vec<Sample>) -> Self {
        v.into_iter().collect()
    }
}

/// Borrowed columns of samples in time order: `t[i]` and `v[i]` are one sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleSlice<'a> {
    /// Timestamps, milliseconds.
    pub t: &'a [Timestamp],
    /// Values, staleness markers included unless the caller dropped them.
    pub v: &'a [f64],
}

impl<'a> SampleSlice<'a> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Sample `i` (panics past the end, like indexing).
    pub fn get(&self, i: usize) -> Sample {
        Sample { t: self.t[i], v: self.v[i] }
    }

    /// The oldest sample.
    pub fn first(&self) -> Option<Sample> {
        (!self.is_empty()).then(|| self.get(0))
    }

    /// The newest sample.
    pub fn last(&self) -> Option<Sample> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// The samples at `range`.
    pub fn slice(&self, range: Range<usize>) -> SampleSlice<'a> {
        SampleSlice { t: &self.t[range.clone()], v: &self.v[range] }
    }

    /// The samples with `start < t <= end` (a left-open window, as Prometheus 3's).
    pub fn window(&self, start: Timestamp, end: Timestamp) -> SampleSlice<'a> {
        self.slice(self.window_range(start, end))
    }

    /// The positions of [`window`](Self::window)'s samples, to read a column aligned with
    /// these samples (such as their start timestamps) over the same window.
    pub fn window_range(&self, start: Timestamp, end: Timestamp) -> Range<usize> {
        let lo = self.t.partition_point(|&t| t <= start);
        let hi = self.t.partition_point(|&t| t <= end);
        lo..hi.max(lo)
    }

    /// [`window_range`](Self::window_range) of a window that starts no earlier than
    /// position `from` (where the previous of windows in time order started): the search
    /// gallops forward from there, touching the samples near it rather than bisecting the
    /// whole series at every step of a range query.
    pub fn window_range_from(&self, from: usize, start: Timestamp, end: Timestamp) -> Range<usize> {
        let from = from.min(self.t.len());
        let lo = from + partition_point_near(&self.t[from..], |t| t <= start);
        let hi = lo + partition_point_near(&self.t[lo..], |t| t <= end);
        lo..hi
    }

    /// The samples one by one.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Sample> + ExactSizeIterator + Clone + 'a {
        let (t, v) = (self.t, self.v);
        t.iter().zip(v).map(|(&t, &v)| Sample { t, v })
    }

    /// An owned copy.
    pub fn to_samples(&self) -> Samples {
        Samples::new(self.t.to_vec(), self.v.to_vec())
    }
}

/// `sorted.partition_point(pred)`, found by galloping from the start: probes at 1, 2, 4, …
/// until `pred` fails, then bisection of the last stride. Costs the logarithm of the answer,
/// not of the length.
fn partition_point_near(sorted: &[Timestamp], pred: impl Fn(Timestamp) -> bool) -> usize {
    // every position before `lo` satisfies `pred`
    let (mut lo, mut stride) = (0, 1);
    while lo + stride <= sorted.len() && pred(sorted[lo + stride - 1]) {
        lo += stride;
        stride *= 2;
    }
    let hi = (lo + stride).min(sorted.len());
    lo + sorted[lo..hi].partition_point(|&t| pred(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    /// Windows searched forward from the last one's start are the windows bisected over the
    /// whole series, for steps shorter and longer than the windows, and past either end.
    #[test]
    fn forward_window_search_finds_the_bisected_windows() {
        let t: Vec<i64> = (0..1_000).map(|i| i * 15 + (i % 7)).collect();
        let samples = Samples::new(t.clone(), vec![1.0; t.len()]);
        let view = samples.view();
        for (range, step) in [(60, 15), (60, 3_600), (3_600, 60), (1, 1), (20_000, 500)] {
            let mut from = 0;
            let mut at = -5_000;
            while at < 20_000 {
                let want = view.window_range(at - range, at);
                let got = view.window_range_from(from, at - range, at);
                assert_eq!(got, want, "window ({}, {at}]", at - range);
                from = got.start;
                at += step;
            }
        }
        // a stale or out-of-range start position searches what is left
        assert_eq!(view.window_range_from(5_000, 0, 100), 1_000..1_000);
        assert_eq!(Samples::default().view().window_range_from(0, 0, 10), 0..0);
    }

    #[test]
    fn columns_round_trip_and_share_buffers() {
        let all: Samples = vec![s(1, 1.0), s(2, 2.0), s(3, 3.0), s(4, 4.0)].into();
        assert_eq!(all.len(), 4);
        let mid = all.slice(1..3);
        assert_eq!(mid.iter().collect::<Vec<_>>(), vec![s(2, 2.0), s(3, 3.0)]);
        assert_eq!(mid.view().t.as_ptr(), all.view().t[1..].as_ptr(), "slicing copies nothing");
        let w = all.view().window(1, 3);
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![s(2, 2.0), s(3, 3.0)]);
        assert_eq!(w.first(), Some(s(2, 2.0)));
        assert_eq!(w.last(), Some(s(3, 3.0)));
        assert!(all.view().window(4, 10).is_empty());
        assert_eq!(
            all.clone().filtered(|x| x.t % 2 == 0).iter().collect::<Vec<_>>(),
            vec![s(2, 2.0), s(4, 4.0)]
        );
    }

    #[test]
    fn merging_joins_parts_in_time_and_keeps_the_earlier_part_on_a_tie() {
        let part = |ts: &[i64], v: f64| -> Samples { ts.iter().map(|&t| s(t, v)).collect() };
        // parts in time order, handed over out of order: joined without a merge
        let joined = Samples::merge(vec![part(&[5, 6], 2.0), part(&[], 9.0), part(&[1, 2, 3], 1.0)]);
        assert_eq!(
            joined.iter().collect::<Vec<_>>(),
            vec![s(1, 1.0), s(2, 1.0), s(3, 1.0), s(5, 2.0), s(6, 2.0)]
        );
        // overlapping parts: interleaved, the first part's sample kept where both have one
        let merged =
            Samples::merge(vec![part(&[2, 4, 6], 1.0), part(&[1, 2, 3, 6, 7], 2.0), part(&[3], 3.0)]);
        assert_eq!(
            merged.iter().collect::<Vec<_>>(),
            vec![s(1, 2.0), s(2, 1.0), s(3, 2.0), s(4, 1.0), s(6, 1.0), s(7, 2.0)]
        );
        // parts touching at one timestamp overlap
        let touching = Samples::merge(vec![part(&[3, 4], 2.0), part(&[1, 2, 3], 1.0)]);
        assert_eq!(touching.iter().collect::<Vec<_>>(), vec![s(1, 1.0), s(2, 1.0), s(3, 2.0), s(4, 2.0)]);
        let one = part(&[1, 2], 1.0);
        let alone = Samples::merge(vec![Samples::default(), one.clone()]);
        assert_eq!(alone.view().t.as_ptr(), one.view().t.as_ptr(), "a single part is not copied");
    }

    #[test]
    fn staleness_markers_are_dropped_and_other_nans_kept() {
        let values: Vec<f64> = (0..200).map(|i| i as f64).collect();
        let clean = Samples::new((0..200).collect(), values.clone());
        let same = clean.clone().without_stale_markers();
        assert_eq!(same.view().v.as_ptr(), clean.view().v.as_ptr(), "nothing to drop: not copied");
        let mut marked = values;
        marked[130] = crate::stale_nan();
        marked[0] = crate::stale_nan();
        marked[7] = f64::NAN;
        let kept = Samples::new((0..200).collect(), marked).without_stale_markers();
        assert_eq!(kept.len(), 198);
        assert!(kept.iter().all(|s| s.t != 0 && s.t != 130));
        assert!(kept.iter().any(|s| s.t == 7 && s.v.is_nan()), "a NaN that is no marker stays");
    }

    #[test]
    fn joins_reuse_their_columns_once_no_series_of_theirs_is_held() {
        let part = |ts: std::ops::Range<i64>| -> Samples { ts.map(|t| s(t, t as f64)).collect() };
        let series = || vec![vec![part(10..20), part(0..10)], vec![part(5..7)], vec![part(0..3), part(3..9)]];
        let mut joiner = JoinBuffers::default();
        let first = joiner.join(series());
        assert_eq!(first[0].iter().collect::<Vec<_>>(), part(0..20).iter().collect::<Vec<_>>());
        assert_eq!(first[2].iter().collect::<Vec<_>>(), part(0..9).iter().collect::<Vec<_>>());
        assert_eq!(first[2].view().t.as_ptr(), first[0].view().t[20..].as_ptr(), "one column for the join");
        let columns = first[0].view().t.as_ptr();
        // a series of the first join still held: its columns are left alone
        let kept = first[2].clone();
        drop(first);
        let second = joiner.join(vec![vec![part(100..110), part(90..100)]]);
        assert_ne!(second[0].view().t.as_ptr(), columns);
        assert_eq!(kept.iter().collect::<Vec<_>>(), part(0..9).iter().collect::<Vec<_>>());
        assert_eq!(second[0].iter().collect::<Vec<_>>(), part(90..110).iter().collect::<Vec<_>>());
        // once nothing of the last join is held, the next is copied into its columns
        let columns = second[0].view().t.as_ptr();
        drop(second);
        let third = joiner.join(vec![vec![part(5..7)], vec![part(3..9), part(0..3)]]);
        assert_eq!(third[1].view().t.as_ptr(), columns, "the columns are used again");
        assert_eq!(third[0].iter().collect::<Vec<_>>(), part(5..7).iter().collect::<Vec<_>>());
        assert_eq!(third[1].iter().collect::<Vec<_>>(), part(0..9).iter().collect::<Vec<_>>());
    }

    #[test]
    fn joins_larger_than_a_chunk_are_spread_over_chunks() {
        let part = |ts: std::ops::Range<i64>| -> Samples { ts.map(|t| s(t, t as f64)).collect() };
        let half = (JOIN_CHUNK_SAMPLES / 2 + 1) as i64;
        let big = 2 * JOIN_CHUNK_SAMPLES as i64;
        let mut joiner = JoinBuffers::default();
        let joined = joiner.join(vec![
            vec![part(half..2 * half), part(0..half)],
            vec![part(0..half), part(half..2 * half)],
            vec![part(0..big), part(big..big + 5)],
        ]);
        assert_eq!(joined[0].iter().collect::<Vec<_>>(), part(0..2 * half).iter().collect::<Vec<_>>());
        assert_eq!(joined[1].iter().collect::<Vec<_>>(), part(0..2 * half).iter().collect::<Vec<_>>());
        assert_eq!(joined[2].iter().collect::<Vec<_>>(), part(0..big + 5).iter().collect::<Vec<_>>());
        assert_eq!(joiner.last.len(), 3, "a chunk for each series, none too small for its series");
    }
}
