//! Function kernels, written once as plain functions over sample columns so that the batch
//! executor and the dataflow renderer call the same code.
//!
//! Window kernels receive the samples of one series inside one window as a [`SampleSlice`]:
//! a timestamp and a value column (staleness markers already removed), which for samples
//! read from a block are slices of the block's decoded Arrow arrays. They also get the
//! window's bounds in milliseconds, and return `None` where Prometheus returns no element.
#![warn(missing_docs)]

pub mod native;
pub mod start;

use promflow_storage::{Sample, SampleSlice, Samples};

use promflow_plan::format::civil_from_days;
use promflow_plan::{AggOp, BinOp, DateFn, Edges, Error, MapFn, TrigFn, WindowFn};

/// The bounds of a window: samples have `start < t <= end` (left-open, as in Prometheus 3).
#[derive(Clone, Copy, Debug)]
pub struct WindowBounds {
    /// Exclusive lower bound in milliseconds.
    pub start: i64,
    /// Inclusive upper bound in milliseconds.
    pub end: i64,
    /// The evaluation step the window belongs to (differs from `end` under `@`/`offset`).
    pub eval_time: i64,
}

impl WindowBounds {
    /// The window length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.end - self.start) as f64 / 1000.0
    }
}

/// Evaluates window function `func` over `samples`; `args` are its scalar arguments at this
/// step (φ for `quantile_over_time`, seconds for `predict_linear`, factors for smoothing).
pub fn window(func: WindowFn, samples: SampleSlice<'_>, bounds: WindowBounds, args: &[f64]) -> Option<f64> {
    use WindowFn::*;
    if samples.is_empty() {
        return None;
    }
    match func {
        Rate | Increase | Delta | CountOverTime | LastOverTime | FirstOverTime | PresentOverTime
        | TsOfLastOverTime | TsOfFirstOverTime => {
            window_from_ends(func, window_ends(samples)?, bounds).map(|(v, _)| v)
        }
        Irate => instant_delta(samples, true),
        Idelta => instant_delta(samples, false),
        Deriv => linear_regression(samples, samples.t[0]).map(|(slope, _)| slope),
        PredictLinear => {
            // predicted from the evaluation time, even when `@` anchors the window elsewhere
            let (slope, intercept) = linear_regression(samples, bounds.eval_time)?;
            Some(slope * args.first().copied().unwrap_or(0.0) + intercept)
        }
        Changes => {
            let c =
                samples.v.windows(2).filter(|w| !(w[1] == w[0] || (w[1].is_nan() && w[0].is_nan()))).count();
            Some(c as f64)
        }
        Resets => Some(samples.v.windows(2).filter(|w| w[1] < w[0]).count() as f64),
        AvgOverTime => Some(mean(samples.v.iter().copied())),
        MinOverTime => Some(samples.v.iter().fold(f64::NAN, |a, &v| if a.is_nan() || v < a { v } else { a })),
        MaxOverTime => Some(samples.v.iter().fold(f64::NAN, |a, &v| if a.is_nan() || v > a { v } else { a })),
        SumOverTime => Some(kahan_sum(samples.v.iter().copied())),
        StddevOverTime => Some(variance(samples.v.iter().copied()).sqrt()),
        StdvarOverTime => Some(variance(samples.v.iter().copied())),
        QuantileOverTime => {
            let mut vals: Vec<f64> = samples.v.to_vec();
            Some(quantile(args.first().copied().unwrap_or(f64::NAN), &mut vals))
        }
        // a NaN makes the median undefined: NaN, not a median of the rest
        MadOverTime if samples.v.iter().any(|v| v.is_nan()) => Some(f64::NAN),
        MadOverTime => {
            let mut vals: Vec<f64> = samples.v.to_vec();
            let median = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }
        TsOfMinOverTime => {
            let mut best = samples.get(0);
            for s in samples.iter().skip(1) {
                // ties go to the latest sample, as in Prometheus
                if s.v <= best.v || best.v.is_nan() {
                    best = s;
                }
            }
            Some(best.t as f64 / 1000.0)
        }
        TsOfMaxOverTime => {
            let mut best = samples.get(0);
            for s in samples.iter().skip(1) {
                if s.v >= best.v || best.v.is_nan() {
                    best = s;
                }
            }
            Some(best.t as f64 / 1000.0)
        }
        AbsentOverTime => None,
        DoubleExponentialSmoothing => {
            let sf = args.first().copied().unwrap_or(f64::NAN);
            let tf = args.get(1).copied().unwrap_or(f64::NAN);
            double_exponential_smoothing(samples, sf, tf)
        }
    }
}

/// The quantities of Prometheus's extrapolation over one window.
struct Extrapolation {
    /// Last minus first value, counter resets compensated.
    result: f64,
    /// Seconds extrapolated before the first sample and after the last.
    to_start: f64,
    to_end: f64,
    /// Seconds between the first and last sample.
    sampled: f64,
    /// Whether either side was cut short (to half an interval, or to the counter's zero).
    clamped: bool,
    /// Milliseconds after the last sample at which the end side is cut short.
    end_threshold_ms: f64,
}

/// What the extrapolating functions (`rate`, `increase`, `delta`) need to know of a window's
/// samples. The batch executor takes it from the samples ([`window_ends`]); the
/// incremental executor keeps it current as samples come and go, without walking the window.
#[derive(Clone, Debug)]
pub struct WindowEnds<R> {
    /// The oldest sample in the window.
    pub first: Sample,
    /// The newest sample in the window.
    pub last: Sample,
    /// How many samples the window holds.
    pub len: usize,
    /// The value before each counter reset (a sample lower than the one before it), oldest
    /// first.
    pub resets: R,
}

/// A window's ends and counter resets, from its samples (`None` when it has none).
pub fn window_ends(samples: SampleSlice<'_>) -> Option<WindowEnds<impl Iterator<Item = f64> + '_>> {
    let (first, last) = (samples.first()?, samples.last()?);
    let resets = samples.v.windows(2).filter(|w| w[1] < w[0]).map(|w| w[0]);
    Some(WindowEnds { first, last, len: samples.len(), resets })
}

fn extrapolation(
    w: WindowEnds<impl Iterator<Item = f64>>,
    b: WindowBounds,
    is_counter: bool,
) -> Option<Extrapolation> {
    if w.len < 2 {
        return None;
    }
    let WindowEnds { first, last, .. } = w;
    let mut result = last.v - first.v;
    if is_counter {
        for prev in w.resets {
            result += prev;
        }
    }
    let mut to_start = (first.t - b.start) as f64 / 1000.0;
    let mut to_end = (b.end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg = sampled / (w.len - 1) as f64;
    let threshold = avg * 1.1;
    let mut clamped = false;
    if to_start >= threshold {
        to_start = avg / 2.0;
        clamped = true;
    }
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
            clamped = true;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
        clamped = true;
    }
    Some(Extrapolation { result, to_start, to_end, sampled, clamped, end_threshold_ms: threshold * 1000.0 })
}

/// Whether `func`'s value depends only on what [`WindowEnds`] holds of a window, so that it can
/// be kept current without the samples between the window's ends.
pub fn reads_only_ends(func: WindowFn) -> bool {
    use WindowFn::*;
    matches!(
        func,
        Rate | Increase
            | Delta
            | CountOverTime
            | LastOverTime
            | FirstOverTime
            | PresentOverTime
            | TsOfLastOverTime
            | TsOfFirstOverTime
    )
}

/// The value of a function that reads only a window's ends ([`reads_only_ends`]; `None` for
/// another function, or no value), and until when it holds while the window slides forward
/// with time alone (see [`extrapolated_rate_steady`]; `i64::MAX` when only samples change it).
pub fn window_from_ends(
    func: WindowFn,
    w: WindowEnds<impl Iterator<Item = f64>>,
    b: WindowBounds,
) -> Option<(f64, Option<i64>)> {
    use WindowFn::*;
    let steady = |v: f64| Some((v, Some(i64::MAX)));
    match func {
        Rate => extrapolated_rate_steady(w, b, true, true),
        Increase => extrapolated_rate_steady(w, b, true, false),
        Delta => extrapolated_rate_steady(w, b, false, false),
        CountOverTime => steady(w.len as f64),
        LastOverTime => steady(w.last.v),
        FirstOverTime => steady(w.first.v),
        PresentOverTime => steady(1.0),
        TsOfLastOverTime => steady(w.last.t as f64 / 1000.0),
        TsOfFirstOverTime => steady(w.first.t as f64 / 1000.0),
        _ => None,
    }
}

/// Prometheus's extrapolated rate (the difference between the first and last samples, counter
/// resets compensated, extrapolated towards the window's bounds by at most half an average
/// sample interval, and never below zero for counters), and until when it keeps that value
/// while the window slides forward with time alone (the first end time, in milliseconds, at
/// which it may change). While neither side is cut short, the extrapolated span is the whole
/// window wherever it lies; the start side can only stop being cut as the window moves on, and
/// the end side is cut once the last sample is more than 1.1 intervals old. `None` for the
/// time when a side is cut now, and the value moves with time.
pub fn extrapolated_rate_steady(
    w: WindowEnds<impl Iterator<Item = f64>>,
    b: WindowBounds,
    is_counter: bool,
    is_rate: bool,
) -> Option<(f64, Option<i64>)> {
    let last = w.last;
    let e = extrapolation(w, b, is_counter)?;
    let mut factor = (e.sampled + e.to_start + e.to_end) / e.sampled;
    if is_rate {
        factor /= b.seconds();
    }
    let steady_until = (!e.clamped).then(|| last.t + e.end_threshold_ms.ceil() as i64);
    Some((e.result * factor, steady_until))
}

fn instant_delta(samples: SampleSlice<'_>, is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let last = samples.get(samples.len() - 1);
    let prev = samples.get(samples.len() - 2);
    let mut result = if is_rate && last.v < prev.v { last.v } else { last.v - prev.v };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares fit of value against time (seconds relative to `intercept_t` ms): returns
/// (slope per second, value at `intercept_t`). Needs two samples.
pub fn linear_regression(samples: SampleSlice<'_>, intercept_t: i64) -> Option<(f64, f64)> {
    if samples.len() < 2 {
        return None;
    }
    let (mut n, mut sum_x, mut sum_y, mut sum_xy, mut sum_x2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut const_y = true;
    let first_y = samples.v[0];
    for s in samples.iter() {
        if s.v != first_y {
            const_y = false;
        }
        let x = (s.t - intercept_t) as f64 / 1000.0;
        n += 1.0;
        sum_x += x;
        sum_y += s.v;
        sum_xy += x * s.v;
        sum_x2 += x * x;
    }
    if const_y && first_y.is_finite() {
        return Some((0.0, first_y));
    }
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    Some((slope, intercept))
}

fn double_exponential_smoothing(samples: SampleSlice<'_>, sf: f64, tf: f64) -> Option<f64> {
    if samples.len() < 2 || !(sf > 0.0 && sf < 1.0) || !(tf > 0.0 && tf < 1.0) {
        return None;
    }
    let (mut s0, mut s1) = (0.0, samples.v[0]);
    let mut trend = samples.v[1] - samples.v[0];
    for (i, &v) in samples.v.iter().enumerate().skip(1) {
        if i > 1 {
            trend = tf * (s1 - s0) + (1.0 - tf) * trend;
        }
        let next = sf * v + (1.0 - sf) * (s1 + trend);
        s0 = s1;
        s1 = next;
    }
    Some(s1)
}

/// Kahan-compensated sum, as Prometheus 3 sums.
pub fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let mut fold = SumFold::default();
    vals.for_each(|v| fold.push(v));
    fold.value()
}

pub use promflow_storage::native_histogram::kahan_inc;

/// Arithmetic mean as Prometheus 3 computes `avg` and `avg_over_time`: a Kahan-compensated
/// sum divided by the count while the sum stays finite, switching to an incremental mean
/// once it would overflow.
pub fn mean(vals: impl Iterator<Item = f64>) -> f64 {
    let mut fold = MeanFold::default();
    vals.for_each(|v| fold.push(v));
    fold.value()
}

/// The state of [`kahan_sum`] after a prefix of its values: pushing the rest gives the same
/// sum, bit for bit, as summing them all, which lets a window that only grew resume.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SumFold {
    sum: f64,
    c: f64,
}

impl SumFold {
    /// Adds the next value.
    pub fn push(&mut self, v: f64) {
        (self.sum, self.c) = kahan_inc(v, self.sum, self.c);
    }

    /// Adds the fold of the values that follow this fold's: the sum of both runs within the
    /// compensated sum's error bound, though not bit for bit the sum of pushing every value
    /// (a window kept as the folds of its pieces).
    pub fn merge(&mut self, next: SumFold) {
        (self.sum, self.c) = kahan_inc(next.sum, self.sum, self.c);
        self.c += next.c;
    }

    /// The running sum and its compensation: a part of a sum to be sent elsewhere and
    /// [`merged`](SumFold::merge) there, which keeps what the running sum alone has lost
    /// (`1e100 + 2` keeps the 2).
    pub fn parts(&self) -> (f64, f64) {
        (self.sum, self.c)
    }

    /// The fold whose [`parts`](SumFold::parts) are `sum` and `c`.
    pub fn from_parts(sum: f64, c: f64) -> SumFold {
        SumFold { sum, c }
    }

    /// The sum of the values pushed.
    pub fn value(&self) -> f64 {
        if self.c.is_finite() {
            self.sum + self.c
        } else {
            self.sum
        }
    }
}

/// The state of [`mean`] after a prefix of its values (see [`SumFold`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeanFold {
    count: f64,
    sum: f64,
    c: f64,
    /// Set once the sum would overflow: from then on `avg` holds the running mean.
    incremental: bool,
    avg: f64,
}

impl MeanFold {
    /// Adds the next value.
    pub fn push(&mut self, v: f64) {
        self.count += 1.0;
        let count = self.count;
        if count == 1.0 {
            self.sum = v;
            return;
        }
        if !self.incremental {
            let (t, nc) = kahan_inc(v, self.sum, self.c);
            if !t.is_infinite() {
                self.sum = t;
                self.c = nc;
                return;
            }
            self.incremental = true;
            self.avg = self.sum / (count - 1.0);
            self.c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (self.avg, self.c) = kahan_inc(v / count, q * self.avg, q * self.c);
    }

    /// The mean of the values pushed (NaN for none).
    pub fn value(&self) -> f64 {
        if self.incremental {
            self.avg + self.c
        } else {
            (self.sum + self.c) / self.count
        }
    }
}

/// Population variance (Welford's method, as Prometheus computes stdvar).
pub fn variance(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut n, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in vals {
        n += 1.0;
        let delta = v - mean;
        mean += delta / n;
        m2 += delta * (v - mean);
    }
    if n == 0.0 {
        f64::NAN
    } else {
        m2 / n
    }
}

/// The φ-quantile of `vals` with linear interpolation (Prometheus's `quantile`): NaN for an
/// empty input, -Inf for φ < 0, +Inf for φ > 1.
pub fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go's sort.Float64s puts NaN first; the interpolation below depends on that order
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(vals.len() - 1);
    let weight = rank - rank.floor();
    vals[lower] * (1.0 - weight) + vals[upper] * weight
}

/// What `histogram_quantile` found for one group of classic buckets at one step.
#[derive(Clone, Copy, Debug)]
pub struct BucketQuantile {
    /// The estimated quantile.
    pub value: f64,
    /// When counts decreased from one bucket to the next and had to be raised: the smallest
    /// and largest upper bound raised and the largest raise (Prometheus reports it as info).
    pub forced_monotonic: Option<(f64, f64, f64)>,
}

/// Differences this small between neighbouring bucket counts are floating-point noise, and are
/// evened out silently in either direction (Prometheus's `smallDeltaTolerance`).
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// Whether `a` and `b` are equal within the relative tolerance `eps` (Prometheus's
/// `util/almost.Equal`).
pub fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    let sum = a.abs() + b.abs();
    if a == 0.0 || b == 0.0 || sum < f64::MIN_POSITIVE {
        return (a - b).abs() < eps * f64::MIN_POSITIVE;
    }
    (a - b).abs() / sum.min(f64::MAX) < eps
}

/// `histogram_quantile` over classic buckets given as (upper bound, cumulative count),
/// following Prometheus's `BucketQuantile` (+Inf bucket required, equal bounds merged,
/// decreasing counts raised to keep the cumulative counts monotonic).
pub fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> BucketQuantile {
    let plain = |value| BucketQuantile { value, forced_monotonic: None };
    if q.is_nan() {
        return plain(f64::NAN);
    }
    if q < 0.0 {
        return plain(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return plain(f64::INFINITY);
    }
    let Some(mut merged) = coalesced_buckets(buckets) else { return plain(f64::NAN) };
    let mut forced: Option<(f64, f64, f64)> = None;
    let mut prev = merged[0].1;
    for b in merged.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        // `prev` stays put when a count is evened out or raised: it is the running maximum
        if almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) {
            b.1 = prev;
        } else if curr < prev {
            b.1 = prev;
            let (lo, hi, diff) = forced.get_or_insert((f64::INFINITY, f64::NEG_INFINITY, 0.0));
            *lo = lo.min(b.0);
            *hi = hi.max(b.0);
            *diff = diff.max(prev - curr);
        } else {
            prev = curr;
        }
    }
    let value = quantile_of_monotonic(q, &merged);
    BucketQuantile { value, forced_monotonic: forced }
}

/// The buckets sorted by upper bound with equal bounds merged (Prometheus's
/// `coalesceBuckets`), or `None` when there is no `+Inf` bucket, where the estimators give NaN.
fn coalesced_buckets(buckets: &mut [(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    Some(merged)
}

/// `histogram_fraction` over classic buckets given as (upper bound, cumulative count): the
/// estimated share of observations in `[lower, upper]`, interpolating linearly within a bucket,
/// following Prometheus's `BucketFraction` (no monotonicity fix).
pub fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [(f64, f64)]) -> f64 {
    let Some(merged) = coalesced_buckets(buckets) else { return f64::NAN };
    let count = merged[merged.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
    // the first bucket starts at 0 when its bound is positive, else at -Inf
    let mut lower_bound = if merged[0].0 <= 0.0 { f64::NEG_INFINITY } else { 0.0 };
    for (i, &(upper_bound, c)) in merged.iter().enumerate() {
        if i > 0 {
            lower_bound = merged[i - 1].0;
        }
        // no interpolation inside a bucket of infinite width
        let interpolate = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                c
            } else {
                rank + (c - rank) * (v - lower_bound) / (upper_bound - lower_bound)
            }
        };
        if lower_rank.is_none() && lower_bound >= lower {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && lower_bound >= upper {
            upper_rank = Some(rank);
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        if lower_rank.is_none() && lower_bound < lower && upper_bound > lower {
            lower_rank = Some(interpolate(lower));
        }
        if upper_rank.is_none() && lower_bound < upper && upper_bound > upper {
            upper_rank = Some(interpolate(upper));
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank = c;
    }
    let clamp = |r: Option<f64>| r.filter(|&r| r <= count).unwrap_or(count);
    (clamp(upper_rank) - clamp(lower_rank)) / count
}

fn quantile_of_monotonic(q: f64, merged: &[(f64, f64)]) -> f64 {
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let rank = q * observations;
    let b = merged[..merged.len() - 1].iter().position(|x| x.1 >= rank).unwrap_or(merged.len() - 1);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut bucket_start, mut count_start) = (0.0, 0.0);
    let bucket_end = merged[b].0;
    let mut count = merged[b].1;
    if b > 0 {
        bucket_start = merged[b - 1].0;
        count_start = merged[b - 1].1;
        count -= count_start;
    }
    let rank_in = rank - count_start;
    bucket_start + (bucket_end - bucket_start) * (rank_in / count)
}

/// The edges of an anchored or smoothed window `(start, end]` read from `samples`, the window
/// widened by the lookback (on the left, and for `smoothed` on the right too), following
/// Prometheus's `extendedRate` and `extendFloats`: the value at the left edge is the last
/// sample at or before `start` and at the right edge the last sample (both interpolated to the
/// edge when smoothed); `inner` are the samples strictly between the edges.
struct WindowEdges<'s> {
    left: f64,
    right: f64,
    inner: SampleSlice<'s>,
    /// When the sample the left edge comes from was taken.
    left_sample_t: i64,
}

fn window_edges(
    samples: SampleSlice<'_>,
    b: WindowBounds,
    smoothed: bool,
    is_counter: bool,
) -> Option<WindowEdges<'_>> {
    let (start, end) = (b.start, b.end);
    let ts = samples.t;
    let mut last = samples.len().checked_sub(1)?;
    let first = ts[..last].partition_point(|&t| t <= start).saturating_sub(1);
    if smoothed {
        last = ts[..last].partition_point(|&t| t < end);
    }
    if ts[last] <= start {
        return None;
    }
    let left = edge_value(samples, first, start, smoothed && ts[first] < start, is_counter);
    let right = if smoothed && last > 0 && ts[last] > end {
        edge_value(samples, last - 1, end, true, is_counter)
    } else {
        samples.v[last]
    };
    let inner_from = if ts[first] <= start { first + 1 } else { first };
    let inner_to = if ts[last] >= end { last } else { last + 1 };
    let inner =
        if inner_from <= inner_to { samples.slice(inner_from..inner_to) } else { SampleSlice::default() };
    Some(WindowEdges { left, right, inner, left_sample_t: ts[first] })
}

/// `rate`, `increase` and `delta` over an anchored or smoothed window (see [`WindowEdges`]):
/// the difference of the edges, without extrapolation, plus the counter resets between them.
pub fn extended_rate(
    samples: SampleSlice<'_>,
    b: WindowBounds,
    smoothed: bool,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    let e = window_edges(samples, b, smoothed, is_counter)?;
    if smoothed && e.left_sample_t > b.end {
        return None;
    }
    let mut result = e.right - e.left;
    if is_counter {
        // the counter resets between the edges, each adding the value before it
        let mut prev = e.left;
        for &v in e.inner.v {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
        if e.right < prev {
            result += prev;
        }
    }
    if is_rate {
        result /= b.seconds();
    }
    Some(result)
}

/// The value at time `t`: sample `i`'s own, or, with `interpolate`, the line from sample `i`
/// to sample `i + 1` read at `t` (a counter reset between them counts from zero).
fn edge_value(samples: SampleSlice<'_>, i: usize, t: i64, interpolate: bool, is_counter: bool) -> f64 {
    if !interpolate || i + 1 >= samples.len() {
        return samples.v[i];
    }
    let (p1, p2) = (samples.get(i), samples.get(i + 1));
    let y1 = if is_counter && p2.v < p1.v { 0.0 } else { p1.v };
    y1 + (p2.v - y1) * (t - p1.t) as f64 / (p2.t - p1.t) as f64
}

/// The samples an anchored `changes` or `resets` looks at in the widened window: from the last
/// sample at or before `start` on, or `None` when no sample lies after `start`.
pub fn anchored_from(samples: SampleSlice<'_>, start: i64) -> Option<SampleSlice<'_>> {
    let after = samples.t.partition_point(|&t| t <= start);
    if after >= samples.len() {
        return None;
    }
    Some(samples.slice(after.saturating_sub(1)..samples.len()))
}

/// A smoothed instant selection at `t`: the sample at `t`, else the line between the samples
/// around `t`, else the newest sample before `t` (all within the lookback on either side).
pub fn smoothed_value(samples: SampleSlice<'_>, t: i64) -> Option<f64> {
    let i = samples.t.partition_point(|&x| x < t);
    let next = (i < samples.len()).then(|| samples.get(i));
    match (next, i.checked_sub(1).map(|p| samples.get(p))) {
        (Some(s), _) if s.t == t => Some(s.v),
        (Some(next), Some(prev)) => {
            Some(prev.v + (next.v - prev.v) * (t - prev.t) as f64 / (next.t - prev.t) as f64)
        }
        (None, Some(prev)) => Some(prev.v),
        _ => None,
    }
}

/// The window Prometheus returns for an anchored or smoothed range selection read directly
/// (`extendFloats`): a point at `start` (the edge value), the samples strictly inside, and a
/// point at `end`.
pub fn extend_window(samples: SampleSlice<'_>, b: WindowBounds, smoothed: bool) -> Samples {
    let Some(e) = window_edges(samples, b, smoothed, false) else { return Samples::default() };
    std::iter::once(Sample { t: b.start, v: e.left })
        .chain(e.inner.iter())
        .chain(std::iter::once(Sample { t: b.end, v: e.right }))
        .collect()
}

/// How many members of a group `topk`, `bottomk` and `limitk` keep for the parameter `k`:
/// none below 1, the whole part of `k` above, at most a billion. (A NaN `k` is the
/// caller's error to raise; it keeps none here.)
pub fn rank_count(k: f64) -> usize {
    if k >= 1.0 {
        k.min(1e9) as usize
    } else {
        0
    }
}

/// The members `topk` (or, with `top` false, `bottomk`) keeps of `candidates` (index, value),
/// in input order, chosen exactly as Prometheus does: a binary heap of at most `k` elements
/// whose root is the weakest kept value (NaN weakest of all), replaced only by a strictly
/// stronger one. Ties between equal values therefore go the way they go in Prometheus.
pub fn heap_select(candidates: &[(usize, f64)], k: usize, top: bool) -> Vec<usize> {
    // `weaker(a, b)`: a sits nearer the root than b (Go's `Less` of the heap type)
    let weaker = |a: f64, b: f64| a.is_nan() || if top { a < b } else { a > b };
    let mut heap: Vec<(usize, f64)> = Vec::with_capacity(k.min(candidates.len()));
    let down = |heap: &mut Vec<(usize, f64)>, mut i: usize| {
        let n = heap.len();
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let mut j = left;
            if left + 1 < n && weaker(heap[left + 1].1, heap[left].1) {
                j = left + 1;
            }
            if !weaker(heap[j].1, heap[i].1) {
                break;
            }
            heap.swap(i, j);
            i = j;
        }
    };
    for &(idx, v) in candidates {
        if heap.len() < k {
            heap.push((idx, v));
            let mut j = heap.len() - 1;
            while j > 0 {
                let parent = (j - 1) / 2;
                if !weaker(heap[j].1, heap[parent].1) {
                    break;
                }
                heap.swap(parent, j);
                j = parent;
            }
        } else if k > 0 {
            let root = heap[0].1;
            let stronger = if top { root < v } else { root > v };
            if stronger || (root.is_nan() && !v.is_nan()) {
                heap[0] = (idx, v);
                down(&mut heap, 0);
            }
        }
    }
    let mut kept: Vec<usize> = heap.into_iter().map(|(i, _)| i).collect();
    kept.sort_unstable();
    kept
}

/// Natural order of label values, as Prometheus's `sort_by_label` uses: runs of digits compare
/// as numbers, other runs as text, and a string that runs out first sorts first.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let numeric = |c: &str| c.bytes().all(|b| b.is_ascii_digit());
        let ord = if numeric(x) && numeric(y) {
            let (tx, ty) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
        } else {
            x.cmp(y)
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Applies a per-value function; `args` are its scalar arguments at this step and `t_ms`
/// the sample time (for `timestamp`).
pub fn map(func: MapFn, v: f64, args: &[f64], t_ms: i64) -> f64 {
    match func {
        MapFn::Abs => v.abs(),
        MapFn::Ceil => v.ceil(),
        MapFn::Floor => v.floor(),
        MapFn::Exp => v.exp(),
        MapFn::Sqrt => v.sqrt(),
        MapFn::Ln => v.ln(),
        MapFn::Log2 => v.log2(),
        MapFn::Log10 => v.log10(),
        MapFn::Sgn => {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }
        MapFn::Round => {
            let to = args.first().copied().unwrap_or(1.0);
            let inv = 1.0 / to;
            (v * inv + 0.5).floor() / inv
        }
        MapFn::Clamp => go_max(args[0], go_min(args[1], v)),
        MapFn::ClampMin => go_max(args[0], v),
        MapFn::ClampMax => go_min(args[0], v),
        MapFn::Trig(f) => trig(f, v),
        MapFn::Date(f) => date(f, v),
        MapFn::Timestamp => t_ms as f64 / 1000.0,
        // read from storage by the executor, never from a value: there is none to map to
        MapFn::StartTimestamp => f64::NAN,
        MapFn::Negate => -v,
    }
}

/// Go's `math.Max`: NaN if either argument is NaN.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN if either argument is NaN.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn trig(f: TrigFn, v: f64) -> f64 {
    match f {
        TrigFn::Acos => v.acos(),
        TrigFn::Acosh => v.acosh(),
        TrigFn::Asin => v.asin(),
        TrigFn::Asinh => v.asinh(),
        TrigFn::Atan => v.atan(),
        TrigFn::Atanh => v.atanh(),
        TrigFn::Cos => v.cos(),
        TrigFn::Cosh => v.cosh(),
        TrigFn::Sin => v.sin(),
        TrigFn::Sinh => v.sinh(),
        TrigFn::Tan => v.tan(),
        TrigFn::Tanh => v.tanh(),
        TrigFn::Deg => v.to_degrees(),
        TrigFn::Rad => v.to_radians(),
    }
}

/// Calendar fields of `secs` seconds since the epoch, in UTC.
pub fn date(f: DateFn, secs: f64) -> f64 {
    if !secs.is_finite() {
        return f64::NAN;
    }
    // Go's time.Unix(int64(v), 0) truncates toward zero
    let s = secs.trunc() as i64;
    let days = s.div_euclid(86_400);
    let rem = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match f {
        DateFn::DayOfMonth => d as f64,
        DateFn::DayOfWeek => ((days + 4).rem_euclid(7)) as f64,
        DateFn::DayOfYear => (days - days_from_civil(y, 1, 1) + 1) as f64,
        DateFn::DaysInMonth => days_in_month(y, m) as f64,
        DateFn::Hour => (rem / 3600) as f64,
        DateFn::Minute => ((rem % 3600) / 60) as f64,
        DateFn::Month => m as f64,
        DateFn::Year => y as f64,
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil calendar algorithm (the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Applies an arithmetic or comparison operator to two values. For comparisons the result
/// is 1 or 0; the caller decides whether to filter.
pub fn binary(op: BinOp, a: f64, b: f64) -> f64 {
    use BinOp::*;
    match op {
        Add => a + b,
        Sub => a - b,
        Mul => a * b,
        Div => a / b,
        Mod => a % b,
        Pow => a.powf(b),
        Atan2 => a.atan2(b),
        Eq => (a == b) as u8 as f64,
        Ne => (a != b) as u8 as f64,
        Gt => (a > b) as u8 as f64,
        Lt => (a < b) as u8 as f64,
        Ge => (a >= b) as u8 as f64,
        Le => (a <= b) as u8 as f64,
        // not operators of floats: set operators select, trims cut histograms
        And | Or | Unless | TrimUpper | TrimLower => f64::NAN,
    }
}

/// SQL's `percentile_cont(q)` of `vals` as PostgreSQL computes it: sorted ascending (NaN
/// after every number), at rank `q · (n − 1)` the lower value plus the rank's fraction of the
/// step to the next, `lo + f · (hi − lo)`. Prometheus's `quantile` weighs the two instead
/// (`lo · (1 − f) + hi · f`), which differs in the last digit. NaN for no values.
pub fn percentile_cont(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    vals.sort_by(|a, b| a.total_cmp(b));
    // total_cmp puts negative NaN first: PostgreSQL sorts every NaN last
    vals.sort_by_key(|v| v.is_nan());
    let rank = q.clamp(0.0, 1.0) * (vals.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    if lo == hi {
        vals[lo]
    } else {
        vals[lo] + (rank - lo as f64) * (vals[hi] - vals[lo])
    }
}

/// The value an aggregation gives a group of `vals` (`param` is `quantile`'s φ); the
/// aggregations that select series rather than compute a value (`topk`, `limitk`, …)
/// answer NaN here.
pub fn aggregate_values(op: AggOp, vals: &mut [f64], param: f64) -> f64 {
    match op {
        AggOp::Sum => kahan_sum(vals.iter().copied()),
        AggOp::Avg => mean(vals.iter().copied()),
        AggOp::Min => vals.iter().copied().fold(f64::NAN, |a, v| if a.is_nan() || v < a { v } else { a }),
        AggOp::Max => vals.iter().copied().fold(f64::NAN, |a, v| if a.is_nan() || v > a { v } else { a }),
        AggOp::Count => vals.len() as f64,
        AggOp::Group => 1.0,
        AggOp::Stddev => variance(vals.iter().copied()).sqrt(),
        AggOp::Stdvar => variance(vals.iter().copied()),
        AggOp::Quantile => quantile(param, vals),
        AggOp::Topk | AggOp::Bottomk | AggOp::Limitk | AggOp::LimitRatio | AggOp::CountValues => f64::NAN,
    }
}

/// Applies a binary operator; comparisons without `bool` filter, keeping the left value.
pub fn combine(op: BinOp, lv: f64, rv: f64, return_bool: bool) -> Option<f64> {
    let r = binary(op, lv, rv);
    if !op.is_comparison() || return_bool {
        Some(r)
    } else if r == 1.0 {
        Some(lv)
    } else {
        None
    }
}

/// A window function over an anchored window (`widened`: the window's samples and those
/// within the lookback before it); `None` where it has no value.
pub fn anchored_window(func: WindowFn, widened: SampleSlice<'_>, b: WindowBounds) -> Option<f64> {
    extended_window(func, widened, b, Edges::Anchored, &[]).ok().flatten()
}

/// A window function over an anchored or smoothed window: `widened` holds the window's
/// samples and those within the lookback beyond its edges. Prometheus allows `changes` and
/// `resets` anchored, and `rate`, `increase` and `delta` either way; the front end rejects
/// the rest.
pub fn extended_window(
    func: WindowFn,
    widened: SampleSlice<'_>,
    b: WindowBounds,
    edges: Edges,
    args: &[f64],
) -> Result<Option<f64>, Error> {
    let smoothed = edges == Edges::Smoothed;
    Ok(match func {
        WindowFn::Rate => extended_rate(widened, b, smoothed, true, true),
        WindowFn::Increase => extended_rate(widened, b, smoothed, true, false),
        WindowFn::Delta => extended_rate(widened, b, smoothed, false, false),
        WindowFn::Changes | WindowFn::Resets if !smoothed => {
            anchored_from(widened, b.start).and_then(|w| window(func, w, b, args))
        }
        _ => return Err(Error::Plan(format!("{func:?} cannot read an {edges:?} window"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    #[test]
    fn rate_of_steady_counter() {
        // 10 per 10s for a minute, window (0, 60s]
        let samples: Samples = (1..=6).map(|i| s(i * 10_000, i as f64 * 10.0)).collect();
        let b = WindowBounds { start: 0, end: 60_000, eval_time: 60_000 };
        let r = window(WindowFn::Rate, samples.view(), b, &[]).unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn counter_reset_is_compensated() {
        let samples: Samples = vec![s(10_000, 5.0), s(20_000, 10.0), s(30_000, 2.0)].into();
        let b = WindowBounds { start: 5_000, end: 35_000, eval_time: 35_000 };
        let inc = window(WindowFn::Increase, samples.view(), b, &[]).unwrap();
        // raw increase 5 + 2 = 7 over 20s sampled, extrapolated by 5s each side -> 7 * 30/20,
        // but to-zero limits the start: 20 * 5/7 = 14.3s > 5s, so 5s is kept.
        assert!((inc - 10.5).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn percentile_cont_interpolates_as_postgresql() {
        let mut vals = vec![104.0, 100.0, 109.0, 101.0, 102.0, 103.0, 105.0, 106.0, 107.0, 108.0];
        // PostgreSQL: 108 + 0.1 * (109 - 108) = 108.1; Prometheus's weighing gives 108.10000000000001
        assert_eq!(percentile_cont(0.9, &mut vals).to_bits(), 108.1f64.to_bits());
        let mut with_nan = vec![f64::NAN, 1.0, 3.0];
        assert_eq!(percentile_cont(0.5, &mut with_nan), 3.0);
        assert!(percentile_cont(0.5, &mut []).is_nan());
    }

    #[test]
    fn quantile_interpolates() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(1.5, &mut v), f64::INFINITY);
    }

    #[test]
    fn anchored_and_smoothed_increase() {
        // extended_vectors.test: `metric 1+1x4 9+1x4` every 15s, increase(metric[1m] …)
        let vals = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0, 10.0, 11.0, 12.0, 13.0];
        let samples: Samples =
            vals.iter().enumerate().map(|(i, &v)| Sample { t: i as i64 * 15_000, v }).collect();
        let samples = samples.view();
        let at = |t: i64, smoothed: bool| {
            let b = WindowBounds { start: t - 60_000, end: t, eval_time: t };
            let after = if smoothed { 300_000 } else { 0 };
            let lo = samples.t.partition_point(|&t| t <= b.start - 300_000);
            let hi = samples.t.partition_point(|&t| t <= b.end + after);
            extended_rate(samples.slice(lo..hi), b, smoothed, true, false).unwrap()
        };
        let anchored = [0.0, 1.0, 2.0, 3.0, 4.0, 7.0, 7.0, 7.0, 7.0];
        let smoothed = [1.0 / 3.0, 4.0 / 3.0, 7.0 / 3.0, 10.0 / 3.0, 5.0, 7.0, 7.0, 7.0, 6.0];
        for (i, t) in (5_000..=125_000).step_by(15_000).enumerate() {
            assert!((at(t, false) - anchored[i]).abs() < 1e-9, "anchored at {t}: {}", at(t, false));
            assert!((at(t, true) - smoothed[i]).abs() < 1e-9, "smoothed at {t}: {}", at(t, true));
        }
    }

    #[test]
    fn natural_order() {
        use std::cmp::Ordering::*;
        assert_eq!(natural_cmp("a2", "a10"), Less);
        assert_eq!(natural_cmp("a10", "a2"), Greater);
        assert_eq!(natural_cmp("a", "a1"), Less);
        assert_eq!(natural_cmp("b", "a10"), Greater);
        assert_eq!(natural_cmp("007", "7"), Equal);
        assert_eq!(natural_cmp("99999999999999999999", "100000000000000000000"), Less);
    }

    #[test]
    fn dates() {
        // 2024-02-29T13:45:00Z
        let t = 1_709_214_300.0;
        assert_eq!(date(DateFn::Year, t), 2024.0);
        assert_eq!(date(DateFn::Month, t), 2.0);
        assert_eq!(date(DateFn::DayOfMonth, t), 29.0);
        assert_eq!(date(DateFn::DaysInMonth, t), 29.0);
        assert_eq!(date(DateFn::Hour, t), 13.0);
        assert_eq!(date(DateFn::Minute, t), 45.0);
        assert_eq!(date(DateFn::DayOfWeek, t), 4.0);
        assert_eq!(date(DateFn::DayOfYear, t), 60.0);
    }

    #[test]
    fn histogram_quantile_classic() {
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        let q = bucket_quantile(0.5, &mut b).value;
        assert!((q - 0.1).abs() < 1e-12, "{q}");
    }
}
