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

use std::collections::{BTreeMap, VecDeque};

use promflow_storage::{is_stale_nan, SampleSlice};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::keys::{KeyMap, KeySet};
use super::{Grain, Row, Update, Value};
use crate::kernels::{self, WindowBounds};
use crate::plan::WindowFn;

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
}

impl SeriesFn {
    /// How long a sample stays visible.
    fn span(&self) -> i64 {
        match self {
            SeriesFn::Last { lookback, .. } => *lookback,
            SeriesFn::Window { range, .. } => *range,
        }
    }

    /// Whether the result loses the metric name (every window function but
    /// `last_over_time` and `first_over_time`, as in the batch executor).
    pub(crate) fn drops_name(&self) -> bool {
        matches!(self, SeriesFn::Last { timestamp: true, .. })
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

    /// Whether the state tracks counter resets (see `SeriesState::resets`).
    fn tracks_resets(&self) -> bool {
        matches!(self, SeriesFn::Window { func: WindowFn::Rate | WindowFn::Increase, .. })
    }

    /// The value at `at` of a series in state `st` (evicted at `at`: its samples are the
    /// window's), and until when it holds with no new sample (`None`: it moves with time now,
    /// and is recomputed at every tick). The extrapolating functions read only the window's
    /// ends and counter resets, not its samples.
    fn evaluate(&self, st: &SeriesState, at: i64) -> (Option<f64>, Option<i64>) {
        let (t, v) = (st.ts(), st.vs());
        // a value that changes only with samples and expiries
        let steady = |x: Option<f64>| (x, Some(i64::MAX));
        let (func, range, args) = match self {
            SeriesFn::Last { lookback, timestamp } => {
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
        };
        let b = WindowBounds { start: at - range, end: at, eval_time: at };
        let window = SampleSlice { t, v };
        let rate = |counter, per_second| {
            let (Some(first), Some(last)) = (window.first(), window.last()) else {
                return (None, Some(i64::MAX));
            };
            let ends =
                kernels::WindowEnds { first, last, len: t.len(), resets: st.resets.iter().map(|r| r.1) };
            match kernels::extrapolated_rate_steady(ends, b, counter, per_second) {
                Some((value, until)) => (Some(value), until),
                None => (None, Some(i64::MAX)),
            }
        };
        match func {
            WindowFn::Rate => rate(true, true),
            WindowFn::Increase => rate(true, false),
            WindowFn::Delta => rate(false, false),
            WindowFn::PredictLinear => (kernels::window(func, window, b, args), None),
            _ => steady(kernels::window(func, window, b, args)),
        }
    }
}

/// One series' state: its visible samples, in time order, and the value last emitted.
#[derive(Default)]
struct SeriesState {
    /// The samples, of which those from `head` on are visible: evicted samples are dropped
    /// from the front in bulk, not one shift of the whole window per eviction.
    t: Vec<i64>,
    v: Vec<f64>,
    head: usize,
    /// For `rate` and `increase`: each counter reset among the visible samples, as the
    /// timestamp and value of the sample before it, oldest first.
    resets: VecDeque<(i64, f64)>,
    emitted: Option<f64>,
    /// The time of the next event pending for this series (its oldest sample leaves, or its
    /// value starts to move with time), if any.
    next: Option<u64>,
}

impl SeriesState {
    /// The visible samples' timestamps.
    fn ts(&self) -> &[i64] {
        &self.t[self.head..]
    }

    /// The visible samples' values.
    fn vs(&self) -> &[f64] {
        &self.v[self.head..]
    }

    /// Adds a sample; an instant selection keeps only the newest.
    fn insert(&mut self, func: &SeriesFn, t: i64, v: f64) {
        match func {
            SeriesFn::Last { .. } => {
                if self.ts().last().is_none_or(|&last| t > last) {
                    self.t.clear();
                    self.v.clear();
                    self.head = 0;
                    self.t.push(t);
                    self.v.push(v);
                }
            }
            SeriesFn::Window { .. } => {
                // range selections never see staleness markers
                if is_stale_nan(v) {
                    return;
                }
                // in order, the common case, without a search of the window
                let i = match self.t.last() {
                    Some(&last) if t <= last => self.head + self.ts().partition_point(|&x| x < t),
                    _ => self.t.len(),
                };
                if self.t.get(i) == Some(&t) {
                    return; // a duplicate timestamp: the first sample stored wins
                }
                let newest = i == self.t.len();
                self.t.insert(i, t);
                self.v.insert(i, v);
                if !func.tracks_resets() {
                    return;
                }
                if !newest {
                    self.find_resets();
                } else if i > self.head && v < self.v[i - 1] {
                    self.resets.push_back((self.t[i - 1], self.v[i - 1]));
                }
            }
        }
    }

    /// Finds the counter resets among the visible samples (after a sample arrived out of
    /// order).
    fn find_resets(&mut self) {
        self.resets.clear();
        for i in self.head + 1..self.t.len() {
            if self.v[i] < self.v[i - 1] {
                self.resets.push_back((self.t[i - 1], self.v[i - 1]));
            }
        }
    }

    /// Drops the samples no longer visible at `at`.
    fn evict(&mut self, span: i64, at: i64) {
        // from the front: an eviction reads the oldest samples only
        let cutoff = at - span;
        while self.t.get(self.head).is_some_and(|&x| x <= cutoff) {
            self.head += 1;
        }
        while self.resets.front().is_some_and(|r| r.0 <= cutoff) {
            self.resets.pop_front();
        }
        // the dropped prefix is freed once it outgrows the visible part: O(1) per sample
        if self.head > 0 && self.head >= self.t.len() - self.head {
            self.t.drain(..self.head);
            self.v.drain(..self.head);
            self.head = 0;
        }
    }
}

/// Events due at one dataflow time.
#[derive(Default)]
struct Due {
    cap: Option<Capability<u64>>,
    samples: Vec<(u64, i64, f64)>,
    /// Series whose next event is due (see `SeriesState::next`).
    expiring: Vec<u64>,
    tick: bool,
}

/// Renders the operator over `rows` (exchanged by series) and this worker's `clock` ticks;
/// with a `grain`, every event takes effect at the grain's next time.
pub(crate) fn render<'s>(
    rows: Stream<'s, u64, Vec<Row>>,
    clock: Stream<'s, u64, Vec<()>>,
    func: SeriesFn,
    grain: Option<Grain>,
) -> Stream<'s, u64, Vec<Update>> {
    rows.binary_frontier(clock, Exchange::new(|r: &Row| r.0), Pipeline, "series", move |_cap, _info| {
        let mut due: BTreeMap<u64, Due> = BTreeMap::new();
        let mut series: KeyMap<u64, SeriesState> = KeyMap::default();
        // series whose value moves with time now: recomputed at every tick
        let mut moving = KeySet::default();
        let span = func.span().max(1);
        let moves = func.moves_with_time();
        let up = move |t: u64| grain.map_or(t, |g| g.up(t));
        move |(input, f_rows), (ticks, f_clock), output| {
            input.for_each_stamp(|cap, data| {
                let Some(&now) = cap.least() else { return };
                for batch in data {
                    for &(s, t, v) in batch.iter() {
                        let at = up((t.max(0) as u64).max(now));
                        let d = due.entry(at).or_default();
                        if d.cap.is_none() {
                            d.cap = Some(cap.delayed(&at, 0));
                        }
                        d.samples.push((s, t, v));
                    }
                }
            });
            ticks.for_each_stamp(|cap, _data| {
                let Some(&now) = cap.least() else { return };
                let at = up(now);
                let d = due.entry(at).or_default();
                if d.cap.is_none() {
                    d.cap = Some(cap.delayed(&at, 0));
                }
                d.tick = true;
            });
            while let Some(entry) = due.first_entry() {
                let at = *entry.key();
                if f_rows.less_equal(&at) || f_clock.less_equal(&at) {
                    break;
                }
                let d = entry.remove();
                let Some(cap) = d.cap else { continue };
                let mut touched: Vec<u64> = Vec::with_capacity(d.samples.len() + d.expiring.len());
                for (s, t, v) in d.samples {
                    series.entry(s).or_default().insert(&func, t, v);
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
                if d.tick && moves {
                    touched.extend(moving.iter().copied());
                }
                touched.sort_unstable();
                touched.dedup();
                let mut session = output.session(&cap);
                let at_ms = at as i64;
                for s in touched {
                    let Some(st) = series.get_mut(&s) else { continue };
                    st.evict(span, at_ms);
                    let (value, steady_until) = func.evaluate(st, at_ms);
                    if value.map(f64::to_bits) != st.emitted.map(f64::to_bits) {
                        if let Some(old) = st.emitted {
                            session.give(((s, Value(old)), at, -1isize));
                        }
                        if let Some(new) = value {
                            session.give(((s, Value(new)), at, 1isize));
                        }
                        st.emitted = value;
                    }
                    let Some(&first) = st.ts().first() else {
                        moving.remove(&s);
                        if st.emitted.is_none() {
                            series.remove(&s);
                        }
                        continue;
                    };
                    // the next event: the oldest visible sample leaves, or the value starts to
                    // move with time
                    let mut when = first.saturating_add(span);
                    if moves {
                        match steady_until {
                            Some(until) => {
                                moving.remove(&s);
                                when = when.min(until);
                            }
                            None => {
                                moving.insert(s);
                            }
                        }
                    }
                    let when = up(when.max(0) as u64);
                    if when > at && st.next.is_none_or(|n| n > when) {
                        st.next = Some(when);
                        let d = due.entry(when).or_default();
                        if d.cap.is_none() {
                            d.cap = Some(cap.delayed(&when));
                        }
                        d.expiring.push(s);
                    }
                }
            }
        }
    })
}
