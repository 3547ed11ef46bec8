//! The per-series operator: instant selections and window functions kept current sample by
//! sample.
//!
//! Each series keeps, in the operator, only the samples its function can still see (the
//! newest one for an instant selection, the window's for a window function). Its value is
//! recomputed by the batch executor's kernel, at the dataflow time of each event that can
//! change it, and only a change leaves the operator (−old, +new):
//!
//! * a sample arrives: it counts from the later of its own timestamp and the time it
//!   arrived, so a late sample is never dropped;
//! * the oldest sample leaves the window or the lookback: each series has one expiry
//!   pending, held with a capability for its time, never sent ahead into differential;
//! * a clock tick, for the series whose value moves with time alone at the moment:
//!   `predict_linear` always (it predicts from the evaluation time); `rate`, `increase` and
//!   `delta` only while their extrapolation is cut short at a window edge (a window not yet
//!   full, a series that stopped), because otherwise the extrapolated span is the whole
//!   window wherever it lies ([`kernels::extrapolated_rate_steady`]).
//!
//! Events are processed in time order once the inputs' frontiers have passed their time, so
//! a value computed at `t` never sees a sample that counts from after `t`.
//!
//! With a [`Grain`] every event takes effect at the grain's next time instead: the series is
//! evaluated there, once for all the events since the grain's previous time.
//!
//! A series keeps fewer samples where its function allows ([`Keep`]): `max_over_time` and
//! `min_over_time` only the samples that may still become the extreme, and the functions that
//! read only a window's ends (`rate`, `increase`, `delta`, `count_over_time`, …), given a
//! storage to read back from, only the window's oldest samples, its newest one and its count.
//! As the window moves past the oldest samples kept, the next ones are read back from storage,
//! for all the series that need them in one read.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use promflow_storage::{
    is_stale_nan, FloatHistogram, HistogramSample, Labels, MatchOp, Matcher, Querier, Sample, SampleSlice,
};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::exchange::{KeyExchange, SeriesRoute};
use super::keys::{Key, KeyMap, KeySet, Keys};
use super::render::without_name;
use super::window_samples::{RareDeque, RareVec, WindowSamples};
use super::{Counters, Grain, Row, Unboxed, Update, Value};
use promflow_kernels::{self as kernels, WindowBounds, WindowEnds};
use promflow_plan::WindowFn;

/// What the operator computes for each series.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SeriesFn {
    /// An instant selection: the newest sample within the lookback, absent when it is a
    /// staleness marker; its timestamp in seconds instead of its value for `timestamp(x)`.
    Last {
        /// The lookback delta in milliseconds.
        lookback: i64,
        /// Whether the value is the sample's timestamp.
        timestamp: bool,
        /// Whether the metric name stays (`info()`'s series; `timestamp(x)` drops it).
        keep_name: bool,
    },
    /// A window function over `(t - range, t]`.
    Window {
        /// The function.
        func: WindowFn,
        /// The window length in milliseconds.
        range: i64,
        /// Its constant scalar arguments.
        args: Vec<f64>,
    },
    /// An anchored window function (`rate`, `increase`, `delta`, `changes`, `resets` over
    /// `x[range] anchored`): the window also takes the last sample at or before its start,
    /// within the lookback, as its left edge.
    Anchored {
        /// The function.
        func: WindowFn,
        /// The window length in milliseconds.
        range: i64,
        /// How far before the window's start its left edge may lie.
        lookback: i64,
    },
}

impl SeriesFn {
    /// How long a sample stays visible.
    pub(crate) fn span(&self) -> i64 {
        match self {
            SeriesFn::Last { lookback, .. } => *lookback,
            SeriesFn::Window { range, .. } => *range,
            SeriesFn::Anchored { range, lookback, .. } => range + lookback,
        }
    }

    /// Whether the result loses the metric name (every window function but
    /// `last_over_time` and `first_over_time`, as in the batch executor).
    pub(crate) fn drops_name(&self) -> bool {
        matches!(self, SeriesFn::Last { timestamp: true, keep_name: false, .. } | SeriesFn::Anchored { .. })
            || matches!(self, SeriesFn::Window { func, .. }
                if !matches!(func, WindowFn::LastOverTime | WindowFn::FirstOverTime))
    }

    /// Whether the value can change with time alone, between samples and expiries.
    fn moves_with_time(&self) -> bool {
        matches!(
            self,
            SeriesFn::Window {
                func: WindowFn::Rate | WindowFn::Increase | WindowFn::Delta | WindowFn::PredictLinear,
                ..
            }
        )
    }

    /// Whether a window kept by its ends folds by pieces ([`folds_by_pieces`]).
    fn folds_by_pieces(&self) -> bool {
        matches!(self, SeriesFn::Window { func, .. } if folds_by_pieces(*func))
    }

    /// Whether the state tracks counter resets (see `SeriesState::resets`).
    fn tracks_resets(&self) -> bool {
        matches!(self, SeriesFn::Window { func: WindowFn::Rate | WindowFn::Increase, .. })
    }

    /// The value at `at` of a series in state `st` (evicted at `at`: its samples are the
    /// window's), and until when it holds with no new sample (`None`: it moves with time now,
    /// and is recomputed at every tick). The extrapolating functions read only the window's
    /// ends and counter resets, not its samples. `eval_time` is the evaluation's time, which
    /// differs from `at` under `@` (`predict_linear` predicts from it).
    fn evaluate(&self, st: &SeriesState, at: i64, eval_time: i64) -> (Option<Value>, Option<i64>) {
        if !st.hists().is_empty() {
            return self.evaluate_with_histograms(st, at, eval_time);
        }
        let (value, until) = self.evaluate_floats(st, at, eval_time);
        (value.map(Value::float), until)
    }

    /// [`SeriesFn::evaluate`] of a series whose visible samples are floats alone.
    fn evaluate_floats(&self, st: &SeriesState, at: i64, eval_time: i64) -> (Option<f64>, Option<i64>) {
        let (t, v) = (st.ts(), st.vs());
        // a value that changes only with samples and expiries
        let steady = |x: Option<f64>| (x, Some(i64::MAX));
        let (func, range, args) = match self {
            SeriesFn::Last { lookback, timestamp, .. } => {
                let (Some(&st), Some(&sv)) = (t.last(), v.last()) else { return steady(None) };
                return steady(if st <= at - lookback || is_stale_nan(sv) {
                    None
                } else if *timestamp {
                    Some(st as f64 / 1000.0)
                } else {
                    Some(sv)
                });
            }
            SeriesFn::Window { func, range, args } => (*func, *range, args),
            SeriesFn::Anchored { func, range, .. } => {
                // the visible samples are the window's and those within the lookback before it
                let b = WindowBounds { start: at - range, end: at, eval_time: at };
                return steady(promflow_kernels::anchored_window(*func, SampleSlice { t, v }, b));
            }
        };
        let b = WindowBounds { start: at - range, end: at, eval_time };
        if kernels::reads_only_ends(func) {
            return match st.ends().and_then(|w| kernels::window_from_ends(func, w, b)) {
                Some((value, until)) => (Some(value), until),
                None => (None, Some(i64::MAX)),
            };
        }
        let window = SampleSlice { t, v };
        match func {
            WindowFn::SumOverTime | WindowFn::AvgOverTime => steady(st.fold(func == WindowFn::AvgOverTime)),
            WindowFn::PredictLinear => (kernels::window(func, window, b, args), None),
            _ => steady(kernels::window(func, window, b, args)),
        }
    }
}

impl SeriesFn {
    /// [`SeriesFn::evaluate`] of a series with native histograms among its visible samples,
    /// by the kernels the batch executor uses for them. A function that extrapolates is
    /// recomputed at every tick while the series holds histograms.
    fn evaluate_with_histograms(
        &self,
        st: &SeriesState,
        at: i64,
        eval_time: i64,
    ) -> (Option<Value>, Option<i64>) {
        let steady = |x: Option<Value>| (x, Some(i64::MAX));
        let hists = st.hists();
        let (t, v) = (st.ts(), st.vs());
        let from_pair = |(f, h): (Option<f64>, Option<FloatHistogram>)| match (f, h) {
            (Some(f), _) => Some(Value::float(f)),
            (None, Some(h)) => Some(Value::histogram(Arc::new(h))),
            (None, None) => None,
        };
        let mut notes = Vec::new();
        match self {
            SeriesFn::Last { lookback, timestamp, keep_name } => {
                // the newer of the newest float and the newest histogram
                let newest = hists[hists.len() - 1].clone();
                if t.last().is_some_and(|&ft| ft > newest.t) {
                    let (value, until) = self.evaluate_floats(st, at, eval_time);
                    return (value.map(Value::float), until);
                }
                // info()'s series (timestamps that keep the name) hand a histogram on as it
                // is: info() refuses an info series of histograms, as the batch executor does
                steady(if newest.t <= at - lookback {
                    None
                } else if *timestamp && !keep_name {
                    Some(Value::float(newest.t as f64 / 1000.0))
                } else {
                    Some(Value::histogram(newest.h))
                })
            }
            SeriesFn::Anchored { func, range, .. } => {
                let b = WindowBounds { start: at - range, end: at, eval_time: at };
                let floats = SampleSlice { t, v };
                steady(from_pair(kernels::native::extended_window(
                    *func, floats, hists, b, false, &mut notes,
                )))
            }
            SeriesFn::Window { func, range, args } => {
                let b = WindowBounds { start: at - range, end: at, eval_time };
                // a series kept by its ends has the window's first and last floats, which is
                // all the functions that read only the ends look at, but for the count
                let (ends_t, ends_v): (Vec<i64>, Vec<f64>);
                let floats = match (&st.ends, t.first(), v.first()) {
                    // a window with histograms that folds by pieces keeps all its samples
                    (Some(e), Some(&ft), Some(&fv)) if !self.folds_by_pieces() => {
                        if *func == WindowFn::CountOverTime {
                            return steady(Some(Value::float((e.len + hists.len()) as f64)));
                        }
                        (ends_t, ends_v) = if e.last.0 == ft {
                            (vec![ft], vec![fv])
                        } else {
                            (vec![ft, e.last.0], vec![fv, e.last.1])
                        };
                        SampleSlice { t: &ends_t, v: &ends_v }
                    }
                    _ => SampleSlice { t, v },
                };
                let value = from_pair(kernels::native::window(
                    *func,
                    floats,
                    hists,
                    &[],
                    b,
                    *range,
                    args,
                    &mut notes,
                ));
                if self.moves_with_time() {
                    (value, None)
                } else {
                    steady(value)
                }
            }
        }
    }

    /// Sets a window function's first argument (one that changes over time).
    fn set_first_arg(&mut self, value: f64) {
        if let SeriesFn::Window { args, .. } = self {
            if let Some(first) = args.first_mut() {
                *first = value;
            }
        }
    }

    /// For an anchored window, when the oldest sample inside the window will cross its start
    /// (becoming its left edge), which changes the value with no sample arriving.
    fn next_crossing(&self, st: &SeriesState, at: i64) -> Option<i64> {
        let SeriesFn::Anchored { range, .. } = self else { return None };
        let t = st.ts();
        let float = t.get(t.partition_point(|&x| x <= at - range)).copied();
        let h = st.hists();
        let hist = h.get(h.partition_point(|x| x.t <= at - range)).map(|x| x.t);
        let first = float.zip(hist).map(|(f, h)| f.min(h)).or(float).or(hist);
        first.map(|x| x.saturating_add(*range))
    }
}

/// Storage, for the samples an operator does not keep: a querier that sees every batch the
/// append feed has delivered (and maybe more, which the operator allows for).
#[derive(Clone)]
pub(crate) struct ReadBack(pub(crate) Arc<dyn Querier>);

impl fmt::Debug for ReadBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReadBack")
    }
}

/// Which of a series' visible samples the operator keeps.
#[derive(Clone, Debug)]
pub(crate) enum Keep {
    /// All of them.
    All,
    /// For `max_over_time` and `min_over_time`: the candidates, the samples that no later
    /// sample beats. The kernel over the candidates gives the value over the whole window.
    Extremes {
        /// Whether the maximum is wanted.
        max: bool,
    },
    /// For the functions that read only a window's ends ([`kernels::reads_only_ends`]): the
    /// window's oldest samples (its *tail*, up to about `tail_ms` past the window's start), its
    /// newest sample and its count. The samples after the tail are read back from `source`
    /// when the tail has left the window.
    Ends {
        /// How far ahead of the window's start a read-back reaches.
        tail_ms: i64,
        /// Where samples are read back from.
        source: ReadBack,
        /// The selection the operator is fed.
        matchers: Vec<Matcher>,
    },
}

impl Keep {
    /// How the operator for `func` keeps samples: by their ends when storage can be read back
    /// and the window is at least `ends_from` long.
    pub(crate) fn choose(func: &SeriesFn, matchers: &[Matcher], read_back: Option<&(ReadBack, i64)>) -> Keep {
        let SeriesFn::Window { func, range, .. } = func else { return Keep::All };
        match (func, read_back) {
            (WindowFn::MaxOverTime, _) => Keep::Extremes { max: true },
            (WindowFn::MinOverTime, _) => Keep::Extremes { max: false },
            (f, Some((source, ends_from)))
                if (kernels::reads_only_ends(*f) || folds_by_pieces(*f)) && range >= ends_from =>
            {
                let longest = if folds_by_pieces(*f) { MAX_TAIL_MS } else { MAX_ENDS_TAIL_MS };
                let tail_ms = (range / 4).clamp(1, longest);
                Keep::Ends { tail_ms, source: source.clone(), matchers: matchers.to_vec() }
            }
            _ => Keep::All,
        }
    }
}

/// Whether a window function kept by its ends ([`Keep::Ends`]) folds the samples past the
/// window's tail into one compensated sum per piece of the tail's length: `sum_over_time`
/// and `avg_over_time`, which read every sample but only through their sum (and count).
fn folds_by_pieces(func: WindowFn) -> bool {
    matches!(func, WindowFn::SumOverTime | WindowFn::AvgOverTime)
}

/// Whether a piece's sum takes `v` as a batch fold would: a finite value far enough from
/// overflow that a day of such samples sums finitely, so that the mean never switches to its
/// incremental form ([`kernels::MeanFold`]). A window that takes any other value keeps every
/// sample ([`KEEPS_ALL`]).
fn foldable(v: f64) -> bool {
    v.abs() <= 1e290
}

/// [`Ends::until`] of a series kept by its ends that keeps every visible sample in its tail:
/// a window of `sum_over_time` or `avg_over_time` that holds a value its pieces' sums cannot
/// take ([`foldable`]) or a native histogram.
const KEEPS_ALL: i64 = i64::MAX;

/// The longest tail of a window that folds by pieces ([`folds_by_pieces`]): the window keeps
/// one sum per tail length past its tail, so a shorter tail would cost more than it saves (a
/// `[1d]` window keeps up to 240 samples and 48 sums of 24 bytes).
const MAX_TAIL_MS: i64 = 30 * 60 * 1000;

/// The longest tail of a window of a function that reads only its ends: 20 samples of a
/// series scraped every 15 s. Every sample past the tail is read back once whatever the
/// tail's length, which sets only how often a window reads back (one selection for all the
/// operator's series that need it) and how many samples it keeps: a `[1h]` window keeps up
/// to 40 of its 240, a `[1d]` window 40 of its 5,760.
const MAX_ENDS_TAIL_MS: i64 = 5 * 60 * 1000;

/// Up to how many series a read-back asks storage for one by one, rather than for the whole
/// selection over the union of their ranges.
const FEW_SERIES: usize = 8;

/// What a series kept by its ends ([`Keep::Ends`]) knows of the window past its tail.
#[derive(Clone)]
struct Ends {
    /// The tail holds every window sample up to this time (a multiple of the tail length, so
    /// that series with the same timestamps are read back together).
    until: i64,
    /// How many samples the window holds.
    len: usize,
    /// The newest sample.
    last: (i64, f64),
    /// Whether only the whole window read back can set the state right: a sample came out of
    /// order (only storage knows its place), or more samples left than were counted.
    reread: bool,
    /// For the functions that fold by pieces ([`folds_by_pieces`]): the samples past the
    /// tail as one compensated sum per piece `(end - tail_ms, end]`, oldest first. A
    /// read-back takes whole pieces' samples into the tail, and drops those pieces. Boxed,
    /// and absent for the other functions, which keep most of the windows kept by their
    /// ends.
    #[allow(clippy::box_collection)] // the box is the point: a thin pointer in every slot
    pieces: Option<Box<Vec<Piece>>>,
}

/// The compensated sum of a window's samples in `(end - tail_ms, end]` past its tail.
#[derive(Clone, Copy)]
struct Piece {
    end: i64,
    sum: kernels::SumFold,
}

impl Ends {
    /// Adds a sample past the tail to its piece: samples come in time order, so it is the
    /// last piece or a new one.
    fn add_to_piece(&mut self, (t, v): (i64, f64), tail_ms: i64) {
        let end = ((t - 1).div_euclid(tail_ms) + 1).saturating_mul(tail_ms);
        let pieces = self.pieces.get_or_insert_default();
        match pieces.last_mut() {
            Some(p) if p.end == end => p.sum.push(v),
            _ => {
                let mut sum = kernels::SumFold::default();
                sum.push(v);
                pieces.push(Piece { end, sum });
            }
        }
    }

    /// `sum_over_time` (or with `mean`, `avg_over_time`) of a window whose visible tail holds
    /// `tail`: the tail's fold, then the pieces' sums in time order, and the mean over the
    /// window's count.
    fn fold(&self, tail: &[f64], mean: bool) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let mut sum = kernels::SumFold::default();
        tail.iter().for_each(|&v| sum.push(v));
        self.pieces.iter().flat_map(|p| p.iter()).for_each(|p| sum.merge(p.sum));
        Some(if mean { sum.value() / self.len as f64 } else { sum.value() })
    }
}

/// A read-back a series needs: its samples in `after < t <= upto`.
#[derive(Clone, Copy)]
struct Want {
    after: i64,
    upto: i64,
    /// The whole window (after an out-of-order sample), not the tail's continuation.
    whole: bool,
    /// For a continuation, the tail's end once it is read ([`Ends::until`]); `upto` is that
    /// or the newest sample, whichever is earlier.
    tail_until: i64,
}

/// The end of a tail read back when the window starts after `cutoff`: at least `tail_ms`
/// further, on a multiple of `tail_ms`.
fn tail_end(cutoff: i64, tail_ms: i64) -> i64 {
    (cutoff.div_euclid(tail_ms) + 2).saturating_mul(tail_ms)
}

/// Whether sample value `later` beats the earlier `earlier` as the window's maximum (or
/// minimum): as in the kernel's fold, a NaN loses to anything after it, and a tie goes to the
/// earlier sample.
fn beats(max: bool, later: f64, earlier: f64) -> bool {
    earlier.is_nan() || if max { later > earlier } else { later < earlier }
}

/// An operator's series. Dropped with its dataflow (its view uninstalled), it takes the
/// samples it held off [`Counters::samples_kept`].
struct SeriesMap {
    series: KeyMap<Key, SeriesState>,
    counters: Arc<Counters>,
}

impl std::ops::Deref for SeriesMap {
    type Target = KeyMap<Key, SeriesState>;
    fn deref(&self) -> &Self::Target {
        &self.series
    }
}

impl std::ops::DerefMut for SeriesMap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.series
    }
}

impl Drop for SeriesMap {
    fn drop(&mut self) {
        let held: i64 = self.series.values().map(|st| st.counted as i64).sum();
        self.counters.samples_kept.fetch_sub(held, Ordering::Relaxed);
    }
}

/// One series' state: its visible samples kept ([`Keep`]), in time order, and the value last
/// emitted.
#[derive(Default)]
struct SeriesState {
    /// The float samples kept; evicted ones are dropped from the front in bulk.
    samples: WindowSamples,
    /// For `rate` and `increase`: each counter reset among the visible samples, as the
    /// timestamp and value of the sample before it, oldest first.
    resets: RareDeque<(i64, f64)>,
    /// With [`Keep::Ends`], while the window holds a sample (boxed: a thin pointer for the
    /// series of every other operator).
    ends: Option<Box<Ends>>,
    /// The visible native-histogram samples, in time order, whatever [`Keep`] says (most
    /// series have none); an instant selection keeps only the newest sample of either kind.
    hists: RareVec<HistogramSample>,
    emitted: Option<Value>,
    /// The time of the next event pending for this series (its oldest sample leaves, or its
    /// value starts to move with time), if any.
    next: Option<u64>,
    /// How many visible samples were kept when last counted ([`Counters::samples_kept`]).
    counted: u32,
    /// Whether samples went straight into the state since the last round, which then
    /// evaluates the series.
    absorbed: bool,
    /// For `sum_over_time` and `avg_over_time`: the fold of the visible samples at the last
    /// evaluation, which the next resumes when the window only grew since (boxed: most
    /// series are of other functions).
    folded: Cell<Option<Box<Folded>>>,
}

/// A window's fold ([`SeriesState::fold`]) over its first `len` visible samples, the first at
/// `first`. Samples only ever join a window at its end (one that comes out of order drops
/// the fold) or leave it at its start (which changes `first`), so the fold is that of a
/// prefix of the visible samples as long as `first` is still the window's first timestamp.
#[derive(Clone, Copy)]
struct Folded {
    first: i64,
    len: usize,
    fold: Fold,
}

/// The running state of a window function that folds every sample.
#[derive(Clone, Copy)]
enum Fold {
    Sum(kernels::SumFold),
    Mean(kernels::MeanFold),
}

impl Fold {
    fn push(&mut self, v: f64) {
        match self {
            Fold::Sum(f) => f.push(v),
            Fold::Mean(f) => f.push(v),
        }
    }

    fn value(&self) -> f64 {
        match self {
            Fold::Sum(f) => f.value(),
            Fold::Mean(f) => f.value(),
        }
    }
}

impl SeriesState {
    /// The visible samples' timestamps.
    fn ts(&self) -> &[i64] {
        self.samples.ts()
    }

    /// The visible samples' values.
    fn vs(&self) -> &[f64] {
        self.samples.vs()
    }

    /// `avg_over_time` (`mean`) or `sum_over_time` of the visible samples: the last
    /// evaluation's fold, resumed when the window only grew since (an arrival after an
    /// expiry: the fold of a prefix, so the same value bit for bit), else folded afresh.
    fn fold(&self, mean: bool) -> Option<f64> {
        if let Some(e) = self.ends.as_ref().filter(|e| e.until != KEEPS_ALL) {
            return e.fold(self.vs(), mean);
        }
        let v = self.vs();
        let first = *self.ts().first()?;
        let fresh = Folded {
            first,
            len: 0,
            fold: if mean { Fold::Mean(Default::default()) } else { Fold::Sum(Default::default()) },
        };
        let mut f = match self.folded.take() {
            Some(f) if f.first == first && f.len <= v.len() && matches!(f.fold, Fold::Mean(_)) == mean => f,
            Some(mut f) => {
                *f = fresh;
                f
            }
            None => Box::new(fresh),
        };
        v[f.len..].iter().for_each(|&x| f.fold.push(x));
        f.len = v.len();
        let value = f.fold.value();
        self.folded.set(Some(f));
        Some(value)
    }

    /// Adds a sample that counts from `at` on, as `keep` says; an instant selection keeps only
    /// the newest.
    fn insert(&mut self, func: &SeriesFn, keep: &Keep, (t, value): (i64, Value), at: i64) {
        let v = match value.unbox() {
            Unboxed::Float(v) => v,
            Unboxed::Histogram(h) => {
                if let (Some(e), true) = (self.ends.as_mut(), func.folds_by_pieces()) {
                    // the pieces' sums are of floats alone: the whole window is read back
                    // and kept
                    e.reread |= e.until != KEEPS_ALL;
                }
                return self.insert_histogram(func, HistogramSample { t, h });
            }
        };
        match (func, keep) {
            (SeriesFn::Last { .. }, _) => {
                if self.newest().is_none_or(|last| t > last) {
                    self.hists.clear();
                    self.samples.set_only(t, v);
                }
            }
            // range selections never see staleness markers
            (SeriesFn::Window { .. } | SeriesFn::Anchored { .. }, _) if is_stale_nan(v) => {}
            (SeriesFn::Anchored { .. }, _) => self.insert_any(false, t, v),
            (SeriesFn::Window { .. }, Keep::All) => self.insert_any(func.tracks_resets(), t, v),
            (SeriesFn::Window { .. }, Keep::Extremes { max }) => self.insert_candidate(*max, t, v),
            (SeriesFn::Window { range, .. }, Keep::Ends { tail_ms, .. }) => {
                self.insert_end(func, (t, v), at - range, *tail_ms)
            }
        }
    }

    /// The visible histograms.
    fn hists(&self) -> &[HistogramSample] {
        &self.hists
    }

    /// The newest visible sample's time, float or histogram.
    fn newest(&self) -> Option<i64> {
        self.ts().last().copied().max(self.hists().last().map(|h| h.t))
    }

    /// The oldest visible sample's time, float or histogram.
    fn oldest(&self) -> Option<i64> {
        let (f, h) = (self.ts().first().copied(), self.hists().first().map(|h| h.t));
        f.zip(h).map(|(f, h)| f.min(h)).or(f).or(h)
    }

    /// How many visible samples are kept, floats and histograms.
    fn kept(&self) -> usize {
        self.ts().len() + self.hists().len()
    }

    /// Adds a native-histogram sample: an instant selection keeps it when it is the newest
    /// sample, a window keeps every one in time order (a duplicate timestamp: the first
    /// stored wins).
    fn insert_histogram(&mut self, func: &SeriesFn, h: HistogramSample) {
        if let SeriesFn::Last { .. } = func {
            if self.newest().is_none_or(|last| h.t > last) {
                self.samples.clear();
                self.hists.set_only(h);
            }
            return;
        }
        let i = self.hists.partition_point(|x| x.t < h.t);
        if self.hists.get(i).is_none_or(|x| x.t != h.t) {
            self.hists.insert(i, h);
        }
    }

    /// Where a sample at `t` goes among the visible ones, and whether one is there already.
    fn place(&self, t: i64) -> (usize, bool) {
        let ts = self.ts();
        // in order, the common case, without a search of the window
        let i = match ts.last() {
            Some(&last) if t <= last => ts.partition_point(|&x| x < t),
            _ => ts.len(),
        };
        (i, ts.get(i) == Some(&t))
    }

    /// Adds a sample to a series that keeps every sample.
    fn insert_any(&mut self, track_resets: bool, t: i64, v: f64) {
        let (i, taken) = self.place(t);
        if taken {
            return; // a duplicate timestamp: the first sample stored wins
        }
        let newest = i == self.samples.len();
        self.samples.insert(i, t, v);
        if !newest {
            self.folded.set(None); // no longer a prefix of the visible samples
        }
        if !track_resets {
            return;
        }
        if !newest {
            self.find_resets();
        } else if i > 0 && v < self.vs()[i - 1] {
            self.resets.push((self.ts()[i - 1], self.vs()[i - 1]));
        }
    }

    /// Adds a sample to a series that keeps the candidates for its extreme: unless a later
    /// candidate beats it, it becomes one and ends the candidacy of the earlier ones it beats.
    /// Candidates are ordered from best to worst, so only the next one can beat it, and the
    /// ones it beats are those just before it.
    fn insert_candidate(&mut self, max: bool, t: i64, v: f64) {
        let (i, taken) = self.place(t);
        let vs = self.vs();
        if taken || vs.get(i).is_some_and(|&later| beats(max, later, v)) {
            return;
        }
        let mut j = i;
        while j > 0 && beats(max, v, vs[j - 1]) {
            j -= 1;
        }
        self.samples.replace(j, i, t, v);
    }

    /// Adds a sample to a series kept by its ends whose window starts after `cutoff`.
    fn insert_end(&mut self, func: &SeriesFn, (t, v): (i64, f64), cutoff: i64, tail_ms: i64) {
        let pieces = func.folds_by_pieces();
        let Some(e) = self.ends.as_mut() else {
            if t > cutoff {
                self.samples.clear();
                self.resets.clear();
                self.folded.set(None);
                self.samples.push(t, v);
                let until = if pieces && (!foldable(v) || !self.hists.is_empty()) {
                    KEEPS_ALL
                } else {
                    tail_end(cutoff, tail_ms).max(t)
                };
                self.ends = Some(Box::new(Ends { until, len: 1, last: (t, v), reread: false, pieces: None }));
            }
            return;
        };
        if t <= e.last.0 {
            // out of order (a duplicate changes nothing: the first sample stored wins); a
            // read-back may also have seen it already, before it came
            e.reread |= t < e.last.0;
            return;
        }
        if t <= cutoff {
            return; // what the window holds leaves it now too
        }
        e.len += 1;
        if t <= e.until {
            self.samples.push(t, v);
        } else if pieces {
            e.add_to_piece((t, v), tail_ms);
        }
        // a value the pieces' sums cannot take: the whole window is read back and kept
        e.reread |= pieces && !foldable(v) && e.until != KEEPS_ALL;
        if func.tracks_resets() && v < e.last.1 {
            self.resets.push(e.last);
        }
        e.last = (t, v);
    }

    /// Finds the counter resets among the visible samples (after a sample arrived out of
    /// order).
    fn find_resets(&mut self) {
        self.resets.clear();
        let (ts, vs) = (self.samples.ts(), self.samples.vs());
        for i in 1..ts.len() {
            if vs[i] < vs[i - 1] {
                self.resets.push((ts[i - 1], vs[i - 1]));
            }
        }
    }

    /// Drops the samples no longer visible at `at`; returns the read-back a series kept by its
    /// ends needs: the tail's continuation once the tail has left the window, the whole window
    /// after a sample came out of order.
    fn evict(&mut self, span: i64, at: i64, keep: &Keep) -> Option<Want> {
        // from the front: an eviction reads the oldest samples only
        let cutoff = at - span;
        let gone = self.samples.evict_through(cutoff);
        let hists_gone = self.hists.partition_point(|h| h.t <= cutoff);
        self.hists.drop_first(hists_gone);
        self.resets.drop_front_while(|r| r.0 <= cutoff);
        let (Keep::Ends { tail_ms, .. }, Some(e)) = (keep, self.ends.as_mut()) else { return None };
        // more gone than counted: the count is off, which only storage can set right
        e.reread |= gone > e.len;
        e.len = e.len.saturating_sub(gone);
        if e.reread {
            return Some(Want { after: cutoff, upto: e.last.0, whole: true, tail_until: 0 });
        }
        if e.len == 0 || e.last.0 <= cutoff {
            self.ends = None;
            self.resets.clear();
            return None;
        }
        let tail_gone = self.samples.is_empty();
        // a series sampled less often than every half tail reads on as far as two of its
        // intervals (the window's mean spacing), so that it finds its next samples rather
        // than an empty range, which would read the whole window back at every sample
        let spacing = (e.last.0 - cutoff) / e.len as i64;
        let tail_until = tail_end(cutoff.saturating_add((2 * spacing - *tail_ms).max(0)), *tail_ms);
        tail_gone.then(|| Want { after: e.until, upto: tail_until.min(e.last.0), whole: false, tail_until })
    }

    /// Takes what storage holds in the range of `want` (stale markers removed) for a series
    /// kept by its ends whose window starts after `cutoff`; returns the read-back of the whole
    /// window when the tail's continuation found nothing (a gap longer than the tail). Storage
    /// may hold samples the operator has not been given yet: those after the newest sample
    /// given are not asked for, and one before it counts as out of order when it comes
    /// ([`SeriesState::insert_end`]).
    fn read_back(
        &mut self,
        want: Want,
        samples: &[(i64, f64)],
        cutoff: i64,
        tail_ms: i64,
        func: &SeriesFn,
    ) -> Option<Want> {
        let e = self.ends.as_mut()?;
        let pieces = func.folds_by_pieces();
        if want.whole {
            self.samples.clear();
            self.resets.clear();
            let (Some(&first), Some(&last)) = (samples.first(), samples.last()) else {
                self.ends = None;
                return None;
            };
            // the tail is rebuilt: a fold of its old prefix no longer applies
            self.folded.set(None);
            let keeps_all = pieces && (!self.hists.is_empty() || samples.iter().any(|s| !foldable(s.1)));
            let until = if keeps_all { KEEPS_ALL } else { tail_end(cutoff, tail_ms).max(first.0) };
            **e = Ends { until, len: samples.len(), last, reread: false, pieces: None };
            for (i, &(t, v)) in samples.iter().enumerate() {
                if t <= until {
                    self.samples.push(t, v);
                } else if pieces {
                    e.add_to_piece((t, v), tail_ms);
                }
                if func.tracks_resets() && i > 0 && v < samples[i - 1].1 {
                    self.resets.push(samples[i - 1]);
                }
            }
            return None;
        }
        for &(t, v) in samples {
            if t <= cutoff {
                e.len = e.len.saturating_sub(1); // left with the tail, past what it held
            } else {
                self.samples.push(t, v);
            }
        }
        e.until = want.tail_until;
        // the pieces read back into the tail (every piece, when the read reached the newest
        // sample)
        if let Some(pieces) = e.pieces.as_mut() {
            let read = pieces.partition_point(|p| p.end <= e.until);
            pieces.drain(..read);
        }
        if e.len == 0 {
            self.ends = None;
            self.resets.clear();
            return None;
        }
        self.samples.is_empty().then_some(Want { after: cutoff, upto: e.last.0, whole: true, tail_until: 0 })
    }

    /// What the functions that read only the window's ends need ([`kernels::reads_only_ends`]).
    fn ends(&self) -> Option<WindowEnds<impl Iterator<Item = f64> + '_>> {
        let (t, v) = (self.ts(), self.vs());
        let first = Sample { t: *t.first()?, v: *v.first()? };
        let (last, len) = match &self.ends {
            Some(e) => (Sample { t: e.last.0, v: e.last.1 }, e.len),
            None => (Sample { t: *t.last()?, v: *v.last()? }, t.len()),
        };
        Some(WindowEnds { first, last, len, resets: self.resets.iter().map(|r| r.1) })
    }
}

/// Events due at one dataflow time.
#[derive(Default)]
struct Due {
    samples: Vec<Row>,
    /// Series whose next event is due (see `SeriesState::next`).
    expiring: Vec<Key>,
    /// Series that took their samples as they came (see `SeriesState::absorbed`).
    absorbed: Vec<Key>,
    tick: bool,
    /// The window function's first argument from this time on, when it changed.
    arg: Option<f64>,
}

/// Reads back what `wants` asks for (by series key) from `source`, stale markers removed: one
/// series at a time for a few, else one selection of `matchers` over the union of the ranges.
fn read_back(
    source: &ReadBack,
    matchers: &[Matcher],
    keys: &Keys,
    wants: &[(Key, Want)],
) -> KeyMap<Key, Vec<(i64, f64)>> {
    let mut out: KeyMap<Key, Vec<(i64, f64)>> = KeyMap::default();
    let mut take = |key: Key, want: Want, samples: SampleSlice<'_>| {
        let w = samples.window(want.after, want.upto);
        out.entry(key).or_default().extend(w.iter().filter(|s| !is_stale_nan(s.v)).map(|s| (s.t, s.v)));
    };
    let warn = |e: promflow_storage::Error| tracing::warn!(error = %e, "reading a window back from storage");
    if wants.len() <= FEW_SERIES {
        for &(key, want) in wants {
            let labels: Labels = keys.labels(key);
            let exact: Vec<Matcher> = labels
                .iter()
                .filter_map(|l| Matcher::new(MatchOp::Equal, l.name.as_str(), l.value.as_str()).ok())
                .collect();
            match source.0.select(&exact, want.after.saturating_add(1), want.upto) {
                Ok(found) => found
                    .iter()
                    .filter(|x| x.labels == labels)
                    .for_each(|x| take(key, want, x.samples.view())),
                Err(e) => warn(e),
            }
        }
        return out;
    }
    let after = wants.iter().map(|w| w.1.after).min().unwrap_or(0);
    let upto = wants.iter().map(|w| w.1.upto).max().unwrap_or(0);
    let by_key: KeyMap<Key, Want> = wants.iter().copied().collect();
    match source.0.select(matchers, after.saturating_add(1), upto) {
        Ok(found) => {
            for x in found {
                let Some(key) = keys.find(&x.labels) else { continue };
                if let Some(&want) = by_key.get(&key) {
                    take(key, want, x.samples.view());
                }
            }
        }
        Err(e) => warn(e),
    }
    out
}

/// A subquery's samples: the content of the inner collection (`updates`) at every multiple
/// of `step` from `start` on, as one sample per element stamped with the step, sent at the
/// step's time once the inner collection is complete there. No step is skipped, however far
/// the frontier jumps: what the samples feed is evaluated at every step's time too (a
/// subquery over a subquery reads those values). A pinned subquery (`@`) samples no step
/// after `until`.
pub(crate) fn sample<'s>(
    updates: Stream<'s, u64, Vec<Update>>,
    step: u64,
    start: u64,
    until: Option<u64>,
) -> Stream<'s, u64, Vec<Row>> {
    let step = step.max(1);
    let align = move |t: u64| t.div_ceil(step).saturating_mul(step);
    // an element's updates meet on one worker, whichever operator made them
    updates.unary_frontier(KeyExchange::new(|u: &Update| u.0 .0 .0), "subquery", move |cap, _info| {
        let mut cap = Some(cap);
        let mut pending: BTreeMap<u64, Vec<(Key, Value, isize)>> = BTreeMap::new();
        // the inner collection's content: (element, value) → count
        let mut content: BTreeMap<(Key, Value), isize> = BTreeMap::new();
        let mut next = align(start);
        move |(input, frontier), output| {
            input.for_each(|_, data| {
                for ((k, v), t, d) in data.drain(..) {
                    pending.entry(t).or_default().push((k, v, d));
                }
            });
            if until.is_some_and(|u| next > u) {
                // nothing more to sample: let the updates go
                cap = None;
                pending.clear();
                content.clear();
            }
            let Some(c) = cap.as_mut() else { return };
            let front = frontier.frontier().iter().min().copied();
            // every step the frontier has passed
            while front.is_none_or(|f| f > next) {
                if content.is_empty() {
                    // nothing to sample until the next update: skip the empty steps at once
                    // (a view built at the clock's start and read at today's time)
                    let update = pending.keys().next().copied().unwrap_or(u64::MAX);
                    let skip_to = align(update.min(front.unwrap_or(u64::MAX)));
                    if skip_to > next {
                        next = skip_to;
                        if front.is_some_and(|f| f <= next) || until.is_some_and(|u| next > u) {
                            break;
                        }
                    }
                }
                while let Some(entry) = pending.first_entry() {
                    if *entry.key() > next {
                        break;
                    }
                    for (k, v, d) in entry.remove() {
                        let n = content.entry((k, v.clone())).or_default();
                        *n += d;
                        if *n == 0 {
                            content.remove(&(k, v));
                        }
                    }
                }
                if front.is_none() && pending.is_empty() && content.is_empty() {
                    break;
                }
                c.downgrade(&next);
                let mut session = output.session(&*c);
                for ((k, v), &n) in &content {
                    if n > 0 {
                        // a subquery's histograms carry no reset hints, as in the batch
                        // executor: the windows over them detect resets themselves
                        let v = match v.clone().unbox() {
                            Unboxed::Histogram(mut h) => {
                                kernels::native::forget_reset_hint(&mut h);
                                Value::histogram(h)
                            }
                            Unboxed::Float(x) => Value::float(x),
                        };
                        session.give((*k, next as i64, v));
                    }
                }
                next = next.saturating_add(step);
                if front.is_none() || until.is_some_and(|u| next > u) {
                    break;
                }
            }
            if front.is_none() || until.is_some_and(|u| next > u) {
                cap = None;
            } else {
                c.downgrade(&next);
            }
        }
    })
}

/// What the operator's second input brings: a tick of the clock at the message's time (`None`:
/// what the clock input sends), or a new value of the window function's first argument from
/// a time on.
pub(crate) type Tick = Option<(u64, f64)>;

/// The per-series operator's state and logic, apart from timely: the timely operator
/// ([`render`]) and the shared operator of many views ([`super::hub`]) both drive it. Events
/// wait in a queue by the time they take effect; [`SeriesOp::run_first`] runs the first
/// time's events once the caller knows nothing more can come before it.
pub(crate) struct SeriesOp {
    func: SeriesFn,
    keep: Keep,
    pinned: Option<i64>,
    grain: Option<Grain>,
    keys: Keys,
    counters: Arc<Counters>,
    due: BTreeMap<u64, Due>,
    series: SeriesMap,
    /// Series whose value moves with time now: recomputed at every tick.
    moving: KeySet,
    span: i64,
    /// Whether values can move with time alone (pinned, only `predict_linear`'s: it predicts
    /// from the evaluation's time).
    moves: bool,
    drops_name: bool,
    /// Each series' output key when the function drops the name.
    names: KeyMap<Key, Key>,
}

impl SeriesOp {
    /// An operator computing `func` per series, keeping samples as `keep` says (`keys` names
    /// the series for read-backs); with a `grain`, every event takes effect at the grain's
    /// next time. A `pinned` operator (`@ t`) evaluates every series at `t` whatever the
    /// time: it ignores samples after `t`, and its values change only as samples arrive.
    pub(crate) fn new(
        func: SeriesFn,
        keep: Keep,
        pinned: Option<i64>,
        grain: Option<Grain>,
        keys: Keys,
        counters: Arc<Counters>,
    ) -> SeriesOp {
        let moves = match pinned {
            None => func.moves_with_time(),
            Some(_) => matches!(func, SeriesFn::Window { func: WindowFn::PredictLinear, .. }),
        };
        SeriesOp {
            span: func.span().max(1),
            moves,
            drops_name: func.drops_name(),
            series: SeriesMap { series: KeyMap::default(), counters: Arc::clone(&counters) },
            func,
            keep,
            pinned,
            grain,
            keys,
            counters,
            due: BTreeMap::new(),
            moving: KeySet::default(),
            names: KeyMap::default(),
        }
    }

    fn up(&self, t: u64) -> u64 {
        self.grain.map_or(t, |g| g.up(t))
    }

    /// The time an event may take effect at once, given that no input can bring anything
    /// before `earliest` (the least of the inputs' frontiers): a sample that counts from it
    /// goes straight into its series' state when nothing is due before it, instead of
    /// waiting in the queue (a view's history, and most samples of the feed, which arrive
    /// after their timestamp).
    pub(crate) fn straight(&self, earliest: u64) -> Option<u64> {
        let earliest = (earliest < u64::MAX).then(|| self.up(earliest))?;
        // samples queued at that time came first: one taken straight would pass them, and a
        // series' older samples would then come out of order (a view's history arrives in
        // pieces, some queued, the next taken straight)
        let after_queued = match self.due.first_key_value() {
            None => true,
            Some((&k, d)) => k > earliest || (k == earliest && d.samples.is_empty()),
        };
        after_queued.then_some(earliest)
    }

    /// Takes a sample that arrived at dataflow time `now` (`straight` from
    /// [`SeriesOp::straight`]); returns the time it takes effect at, or `None` when a pinned
    /// operator ignores it.
    pub(crate) fn push_sample(&mut self, now: u64, straight: Option<u64>, (s, t, v): Row) -> Option<u64> {
        if self.pinned.is_some_and(|p| t > p) {
            return None;
        }
        let at = self.up((t.max(0) as u64).max(now));
        let d = self.due.entry(at).or_default();
        if straight == Some(at) {
            let st = self.series.entry(s).or_default();
            if !std::mem::replace(&mut st.absorbed, true) {
                d.absorbed.push(s);
            }
            st.insert(&self.func, &self.keep, (t, v), at as i64);
        } else {
            d.samples.push((s, t, v));
        }
        Some(at)
    }

    /// Takes a tick of the clock, or a new value of the first argument, that arrived at
    /// `now`; returns the time it takes effect at.
    pub(crate) fn push_tick(&mut self, now: u64, tick: &Tick) -> u64 {
        let at = self.up(match tick {
            Some((t, _)) => (*t).max(now),
            None => now,
        });
        let d = self.due.entry(at).or_default();
        match tick {
            Some((_, value)) => d.arg = Some(*value),
            None => d.tick = true,
        }
        at
    }

    /// Whether the clock's ticks can change its values (see [`SeriesOp::push_tick`]).
    pub(crate) fn takes_ticks(&self) -> bool {
        self.moves
    }

    /// Every series' value as last emitted, by output key: the operator's output now.
    pub(crate) fn values(&self) -> Vec<(Key, Value)> {
        let key = |s: &Key| if self.drops_name { self.names.get(s).copied() } else { Some(*s) };
        self.series.iter().filter_map(|(s, st)| Some((key(s)?, st.emitted.clone()?))).collect()
    }

    /// The first time events are due at.
    pub(crate) fn first_due(&self) -> Option<u64> {
        self.due.keys().next().copied()
    }

    /// Runs the events due at the first due time: evaluates the series they touch, calls
    /// `emit(key, old, new)` for each whose value changed, and returns the later times at
    /// which it put events (the series' next expiries).
    pub(crate) fn run_first(
        &mut self,
        mut emit: impl FnMut(Key, Option<&Value>, Option<&Value>),
    ) -> Vec<u64> {
        let mut later = Vec::new();
        let Some((at, d)) = self.due.pop_first() else { return later };
        let at_ms = at as i64;
        // the time the series are evaluated at
        let eval_ms = self.pinned.unwrap_or(at_ms);
        let (series, keep, span) = (&mut self.series, &self.keep, self.span);
        let mut touched: Vec<Key> = d.absorbed;
        touched.reserve(d.samples.len() + d.expiring.len());
        for (s, t, v) in d.samples {
            series.entry(s).or_default().insert(&self.func, keep, (t, v), at_ms);
            touched.push(s);
        }
        for s in d.expiring {
            if let Some(st) = series.get_mut(&s) {
                if st.next == Some(at) {
                    st.next = None;
                }
            }
            touched.push(s);
        }
        if d.tick && self.moves {
            touched.extend(self.moving.iter().copied());
        }
        if let Some(value) = d.arg {
            // every series' value depends on it
            self.func.set_first_arg(value);
            touched.extend(series.keys().copied());
        }
        touched.sort_unstable();
        touched.dedup();
        let mut wants: Vec<(Key, Want)> = Vec::new();
        for &s in &touched {
            if let Some(want) = series.get_mut(&s).and_then(|st| st.evict(span, eval_ms, keep)) {
                wants.push((s, want));
            }
        }
        if let Keep::Ends { tail_ms, source, matchers } = keep {
            // the tails' continuations first; a series that finds none (a gap) is read whole
            // in a second round
            for _round in 0..2 {
                if wants.is_empty() {
                    break;
                }
                let mut read = read_back(source, matchers, &self.keys, &wants);
                let got: usize = read.values().map(Vec::len).sum();
                series.counters.read_back.fetch_add(got as u64, Ordering::Relaxed);
                let mut again = Vec::new();
                for (s, want) in wants.drain(..) {
                    let Some(st) = series.get_mut(&s) else { continue };
                    let samples = read.remove(&s).unwrap_or_default();
                    let whole = st.read_back(want, &samples, at_ms - span, *tail_ms, &self.func);
                    again.extend(whole.map(|w| (s, w)));
                }
                wants = again;
            }
        }
        let (mut kept, mut records): (i64, usize) = (0, 0);
        for s in touched {
            let Some(st) = series.get_mut(&s) else { continue };
            st.absorbed = false;
            let now_kept = st.kept();
            kept += now_kept as i64 - st.counted as i64;
            // a window's count fits: a u32 of samples is 136 years of one a second
            st.counted = now_kept as u32;
            let (value, steady_until) = self.func.evaluate(st, eval_ms, at_ms);
            if value != st.emitted {
                let k = if self.drops_name { self.keys.rewrite(&mut self.names, s, without_name) } else { s };
                records += usize::from(st.emitted.is_some()) + usize::from(value.is_some());
                emit(k, st.emitted.as_ref(), value.as_ref());
                st.emitted = value;
            }
            let Some(first) = st.oldest() else {
                self.moving.remove(&s);
                if st.emitted.is_none() {
                    series.remove(&s);
                }
                continue;
            };
            // the next event: the oldest visible sample leaves (never, pinned), a sample
            // crosses an anchored window's start, or the value starts to move with time
            let mut when = i64::MAX;
            if self.pinned.is_none() {
                when = first.saturating_add(span);
                if let Some(crossing) = self.func.next_crossing(st, at_ms) {
                    when = when.min(crossing);
                }
            }
            if self.moves {
                match steady_until {
                    Some(until) => {
                        self.moving.remove(&s);
                        when = when.min(until);
                    }
                    None => {
                        self.moving.insert(s);
                    }
                }
            }
            if when == i64::MAX {
                continue;
            }
            let when = self.grain.map_or(when.max(0) as u64, |g| g.up(when.max(0) as u64));
            if when > at && st.next.is_none_or(|n| n > when) {
                st.next = Some(when);
                self.due.entry(when).or_default().expiring.push(s);
                later.push(when);
            }
        }
        self.counters.samples_kept.fetch_add(kept, Ordering::Relaxed);
        self.counters.count(super::Operator::Series, records);
        later
    }
}

/// Renders the operator over `rows` (exchanged by series to the worker `route` names, in
/// whichever process: a series' samples meet on one worker whichever process appends them)
/// and this worker's `clock` ticks ([`SeriesOp::new`] says what the other arguments mean).
/// Each event time is held with a capability until its events have run.
#[allow(clippy::too_many_arguments)]
pub(crate) fn render<'s>(
    rows: Stream<'s, u64, Vec<Row>>,
    route: SeriesRoute,
    clock: Stream<'s, u64, Vec<Tick>>,
    func: SeriesFn,
    keep: Keep,
    pinned: Option<i64>,
    grain: Option<Grain>,
    keys: Keys,
    counters: Arc<Counters>,
) -> Stream<'s, u64, Vec<Update>> {
    let owner = KeyExchange::new(move |r: &Row| route.worker(r.0));
    rows.binary_frontier(clock, owner, Pipeline, "series", move |_cap, _info| {
        let mut op = SeriesOp::new(func, keep, pinned, grain, keys, counters);
        let mut caps: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        move |(input, f_rows), (ticks, f_clock), output| {
            let floor = |f: &timely::progress::frontier::MutableAntichain<u64>| {
                f.frontier().iter().min().copied().unwrap_or(u64::MAX)
            };
            let straight = op.straight(floor(f_rows).min(floor(f_clock)));
            input.for_each_stamp(|cap, data| {
                let Some(&now) = cap.least() else { return };
                for row in data.flat_map(|batch| batch.iter()) {
                    if let Some(at) = op.push_sample(now, straight, row.clone()) {
                        caps.entry(at).or_insert_with(|| cap.delayed(&at, 0));
                    }
                }
            });
            ticks.for_each_stamp(|cap, data| {
                let Some(&now) = cap.least() else { return };
                for tick in data.flat_map(|batch| batch.iter()) {
                    let at = op.push_tick(now, tick);
                    caps.entry(at).or_insert_with(|| cap.delayed(&at, 0));
                }
            });
            while let Some(at) = op.first_due() {
                if f_rows.less_equal(&at) || f_clock.less_equal(&at) {
                    break;
                }
                let Some(cap) = caps.remove(&at) else {
                    // every event time is held when its first event comes
                    op.run_first(|_, _, _| {});
                    continue;
                };
                let mut session = output.session(&cap);
                let later = op.run_first(|k, old, new| {
                    if let Some(old) = old {
                        session.give(((k, old.clone()), at, -1isize));
                    }
                    if let Some(new) = new {
                        session.give(((k, new.clone()), at, 1isize));
                    }
                });
                drop(session);
                for when in later {
                    caps.entry(when).or_insert_with(|| cap.delayed(&when));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view holds one state per series it selects, a million and more at scale: the fields
    /// most series leave empty stay behind thin pointers.
    #[test]
    fn a_series_state_stays_small() {
        assert!(std::mem::size_of::<SeriesState>() <= 128, "{} bytes", std::mem::size_of::<SeriesState>());
    }

    /// A resumed fold gives the same bits as folding the visible samples afresh, whatever the
    /// order samples come in and however the window moves.
    #[test]
    fn resumed_fold_equals_fresh_fold() {
        const RANGE: i64 = 10_000;
        let func = SeriesFn::Window { func: WindowFn::SumOverTime, range: RANGE, args: vec![] };
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for mean in [false, true] {
            let fresh = |st: &SeriesState| {
                let v = st.vs().iter().copied();
                if mean {
                    kernels::mean(v)
                } else {
                    kernels::kahan_sum(v)
                }
            };
            let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            let mut st = SeriesState::default();
            let (mut at, mut resumed) = (0i64, 0);
            for step in 0..5_000 {
                let arrival = at + 1_000 + (next() % 50) as i64;
                // the oldest sample leaves before the next arrival: the expiry's evaluation
                if let Some(&oldest) = st.ts().first() {
                    if oldest + RANGE < arrival {
                        st.evict(RANGE, oldest + RANGE, &Keep::All);
                        if let Some(got) = st.fold(mean) {
                            assert!(same(got, fresh(&st)), "after an expiry: {got} != {}", fresh(&st));
                        }
                    }
                }
                at = arrival;
                // mostly in order, now and then out of order; magnitudes Kahan has to mend,
                // and now and then an overflow, for the mean's incremental mode
                let t = if next() % 10 == 0 { at - (next() % 9_000) as i64 } else { at };
                let v = match next() % 50 {
                    0 => f64::MAX / 2.0,
                    1 => -1e16,
                    n => n as f64 * 0.1 + 1e16 * (step % 2) as f64,
                };
                st.insert(&func, &Keep::All, (t, Value::float(v)), at);
                st.evict(RANGE, at, &Keep::All);
                let folded = st.folded.take();
                resumed += usize::from(folded.as_ref().is_some_and(|f| st.ts().first() == Some(&f.first)));
                st.folded.set(folded);
                let got = st.fold(mean).unwrap();
                assert!(same(got, fresh(&st)), "after an arrival: {got} != {}", fresh(&st));
            }
            assert!(resumed > 3_000, "the fold was resumed only {resumed} times in 5,000");
        }
    }

    /// A sample that arrives while earlier ones wait in the queue at its time goes after them,
    /// not straight into its series: a view's history comes in pieces, and a later piece
    /// taken before an earlier one would put every sample of the earlier out of order (a
    /// window kept by its ends then reads its whole window back).
    #[test]
    fn a_sample_does_not_pass_those_queued_at_its_time() {
        use promflow_storage::{Db, DbOptions};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        const HOUR: i64 = 3_600_000;
        let func = SeriesFn::Window { func: WindowFn::SumOverTime, range: 2 * HOUR, args: vec![] };
        let keep = Keep::Ends { tail_ms: HOUR / 2, source: ReadBack(db), matchers: Vec::new() };
        let counters: Arc<Counters> = Arc::default();
        let keys = Keys::default();
        let key = keys.intern(Labels::from_pairs([("__name__", "x")]));
        let mut op = SeriesOp::new(func, keep, None, None, keys, Arc::clone(&counters));
        let at = 10 * HOUR as u64;
        // a tick due earlier keeps the first piece from going straight in: it is queued
        op.push_tick(at - 1, &None);
        let straight = op.straight(at);
        assert_eq!(straight, None);
        op.push_sample(at, straight, (key, 9 * HOUR, Value::float(1.0)));
        op.run_first(|_, _, _| {});
        // the next piece comes while the first still waits at the same time
        let straight = op.straight(at);
        assert_eq!(straight, None, "a sample would pass those queued at its time");
        op.push_sample(at, straight, (key, 9 * HOUR + 1_000, Value::float(2.0)));
        op.run_first(|_, _, _| {});
        // (keyed by the series' labels without the metric name)
        let values: Vec<Value> = op.values().into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, vec![Value::float(3.0)]);
        assert_eq!(counters.read_back.load(Ordering::Relaxed), 0, "the window was read back");
    }

    /// The sums by piece widen every series' state by one pointer, not by a vector.
    #[test]
    fn a_series_state_carries_its_pieces_in_one_pointer() {
        assert_eq!(std::mem::size_of::<Option<Ends>>(), 48);
    }

    /// A window that keeps every sample because of a value its pieces' sums cannot take folds
    /// afresh once it is read back whole: a sample that came out of order is in the middle of
    /// the rebuilt tail, so the fold of the old tail is not the fold of a prefix of it.
    #[test]
    fn a_window_read_back_whole_folds_afresh() {
        const TAIL: i64 = 900_000;
        let func = SeriesFn::Window { func: WindowFn::SumOverTime, range: 3_600_000, args: vec![] };
        let mut st = SeriesState::default();
        let samples = [(1_000, 1e291), (2_000, -1e291), (3_000, 5.0), (4_000, 1.0)];
        for (t, v) in [samples[0], samples[1], samples[3]] {
            st.insert_end(&func, (t, v), 0, TAIL);
        }
        assert_eq!(st.ends.as_ref().map(|e| e.until), Some(KEEPS_ALL));
        assert_eq!(st.fold(false), Some(1.0));
        // the sample at 3 s comes after the one at 4 s: the window is read back whole
        st.insert_end(&func, samples[2], 0, TAIL);
        assert!(st.ends.as_ref().is_some_and(|e| e.reread));
        st.read_back(Want { after: 0, upto: 4_000, whole: true, tail_until: 0 }, &samples, 0, TAIL, &func);
        assert_eq!(st.fold(false), Some(6.0));
    }
}
