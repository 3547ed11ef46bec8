//! PromQL's functions of one native histogram: the statistics `histogram_stddev` and
//! `histogram_stdvar` estimate from the buckets, and `histogram_quantile` and
//! `histogram_fraction` with Prometheus's interpolation (linear in custom buckets and in the
//! zero bucket, exponential in the exponential buckets).

use promflow_plan::{AggOp, BinOp, VectorFn, WindowFn};
use promflow_storage::native_histogram::{fraction_below, Bucket, HistogramError};
use promflow_storage::{FloatHistogram, HistogramSample, SampleSlice};

use crate::{kahan_inc, start, WindowBounds};

/// What a quantile or fraction of a histogram with NaN observations (its sum is NaN and its
/// count more than its buckets') has to say about its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NaNNote {
    /// The quantile fell above every bucket: the answer is NaN.
    QuantileIsNaN,
    /// The quantile counts the NaN observations as the largest: it is skewed higher.
    QuantileSkewed,
    /// The fraction leaves the NaN observations out.
    FractionExcludes,
}

/// The variance of the observations, each bucket's taken at its middle: the arithmetic mean of
/// custom bounds, zero in the zero bucket, the geometric mean of exponential bounds.
pub fn histogram_variance(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut variance, mut c) = (0.0, 0.0);
    for b in h.buckets() {
        let val = if h.uses_custom_buckets() {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let v = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 {
                -v
            } else {
                v
            }
        };
        let delta = val - mean;
        (variance, c) = kahan_inc(b.count * delta * delta, variance, c);
    }
    (variance + c) / h.count
}

/// The `q`-quantile of the observations (`histogram_quantile` of a native histogram).
pub fn histogram_quantile(q: f64, h: &FloatHistogram) -> (f64, Option<NaNNote>) {
    if q < 0.0 {
        return (f64::NEG_INFINITY, None);
    }
    if q > 1.0 {
        return (f64::INFINITY, None);
    }
    if h.count == 0.0 || q.is_nan() {
        return (f64::NAN, None);
    }
    let all = h.buckets();
    // from the top for the upper half, unless NaN observations (uncounted by the buckets) are
    // to be taken as the largest
    let forward = h.sum.is_nan() || q < 0.5;
    let mut rank = if forward { q * h.count } else { (1.0 - q) * h.count };
    let ordered: Box<dyn Iterator<Item = &Bucket>> =
        if forward { Box::new(all.iter()) } else { Box::new(all.iter().rev()) };
    let mut count = 0.0;
    let mut at = None;
    for (i, b) in ordered.enumerate() {
        count += b.count;
        at = Some((i, *b));
        if count >= rank {
            break;
        }
    }
    // no buckets: every observation is NaN
    let Some((pos, mut bucket)) = at else {
        return (f64::NAN, h.sum.is_nan().then_some(NaNNote::QuantileIsNaN));
    };
    let (has_negative, has_positive) = (!h.negative_buckets().is_empty(), !h.positive_buckets().is_empty());
    if !h.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
        if !has_negative && has_positive {
            bucket.lower = 0.0;
        } else if !has_positive && has_negative {
            bucket.upper = 0.0;
        }
    } else if h.uses_custom_buckets() {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return (bucket.upper, None);
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return (bucket.lower, None);
        }
    }
    count = count.min(h.count);
    if count < rank {
        if h.sum.is_nan() {
            return (f64::NAN, Some(NaNNote::QuantileIsNaN));
        }
        return (bucket.upper, None);
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    let mut note = None;
    if h.sum.is_nan() {
        // forward: the buckets after this one complete the count of observations that are not NaN
        let total = count + all[pos + 1..].iter().map(|b| b.count).sum::<f64>();
        if total < h.count {
            note = Some(NaNNote::QuantileSkewed);
        }
    }
    let fraction = rank / bucket.count;
    if h.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return (bucket.lower + (bucket.upper - bucket.lower) * fraction, note);
    }
    let (log_lower, log_upper) = (bucket.lower.abs().log2(), bucket.upper.abs().log2());
    if bucket.lower > 0.0 {
        return ((log_lower + (log_upper - log_lower) * fraction).exp2(), note);
    }
    (-(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2(), note)
}

/// The fraction of the observations between `lower` and `upper` (`histogram_fraction` of a
/// native histogram).
pub fn histogram_fraction(lower: f64, upper: f64, h: &FloatHistogram) -> (f64, Option<NaNNote>) {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, None);
    }
    if lower >= upper {
        return (0.0, None);
    }
    let (has_negative, has_positive) = (!h.negative_buckets().is_empty(), !h.positive_buckets().is_empty());
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
    for mut b in h.buckets() {
        let zero_bucket = b.lower <= 0.0 && b.upper >= 0.0;
        if zero_bucket {
            if !has_negative && has_positive {
                b.lower = 0.0;
            } else if !has_positive && has_negative {
                b.upper = 0.0;
            }
        }
        let linear = h.uses_custom_buckets() || zero_bucket;
        let interpolate = |v: f64| {
            // an infinite bucket contributes nothing: its observations cannot be placed
            if linear && b.lower == f64::NEG_INFINITY {
                b.count
            } else {
                rank + b.count * fraction_below(&b, v, linear)
            }
        };
        if lower_rank.is_none() && b.lower >= lower {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && b.lower >= upper {
            upper_rank = Some(rank);
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        if lower_rank.is_none() && b.lower < lower && b.upper > lower {
            lower_rank = Some(interpolate(lower));
        }
        if upper_rank.is_none() && b.lower < upper && b.upper > upper {
            upper_rank = Some(interpolate(upper));
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank += b.count;
    }
    let mut note = None;
    let count = if h.sum.is_nan() {
        let counted: f64 = h.buckets().iter().map(|b| b.count).sum();
        if counted < h.count {
            note = Some(NaNNote::FractionExcludes);
        }
        counted
    } else {
        h.count
    };
    let lower_rank = lower_rank.filter(|r| *r <= count).unwrap_or(count);
    let upper_rank = upper_rank.filter(|r| *r <= count).unwrap_or(count);
    ((upper_rank - lower_rank) / h.count, note)
}

/// What a function over a window of native histograms has to say about it, as Prometheus's
/// annotations (the caller names the metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowNote {
    /// A counter function met a gauge histogram.
    NotCounter,
    /// A gauge function met a counter histogram.
    NotGauge,
    /// Exponential and custom buckets met: no answer.
    MixedSchemas,
    /// Custom buckets of different bounds were subtracted on the bounds they share.
    ReconciledSubtraction,
    /// Custom buckets of different bounds were added on the bounds they share.
    ReconciledAddition,
    /// Floats and histograms met where they cannot be combined: no answer.
    MixedFloatsAndHistograms,
    /// A float function left out the histograms of a window that also holds floats.
    IgnoredHistograms,
    /// A sample's start timestamp lies before the previous sample's timestamp.
    StartOverlap,
    /// What adding up the window's histograms said.
    Sum(SumNotes),
}

/// The increase of a counter histogram (or the change of a gauge one) from the first to the
/// last of `points` (two or more), counter resets accounted for, those that `starts` show
/// too (the points' start timestamps, 0 for none; empty when they have none); `None` when
/// the histograms cannot be combined (Prometheus's `histogramRate`).
fn histogram_increase(
    points: &[HistogramSample],
    starts: &[i64],
    is_counter: bool,
    notes: &mut Vec<WindowNote>,
) -> Option<FloatHistogram> {
    use promflow_storage::native_histogram::CounterResetHint::Gauge;
    let start_reset = |i: usize| {
        i > 0 && i < starts.len() && start::is_reset(starts[i - 1], points[i - 1].t, starts[i], points[i].t)
    };
    let (first, last) = (&points[0].h, &points[points.len() - 1].h);
    if is_counter && (first.hint == Gauge || last.hint == Gauge) {
        notes.push(WindowNote::NotCounter);
    }
    // a reset right after the first histogram: the counter started from nothing
    let mut prev = (**first).clone();
    if is_counter && (start_reset(1) || points[1].h.detect_reset(first)) {
        prev = FloatHistogram::empty_like(&points[1].h);
    }
    if last.uses_custom_buckets() != prev.uses_custom_buckets() {
        notes.push(WindowNote::MixedSchemas);
        return None;
    }
    let mut min_schema = last.schema.min(prev.schema);
    if is_counter {
        for p in &points[1..points.len() - 1] {
            if p.h.hint == Gauge {
                notes.push(WindowNote::NotCounter);
            }
            min_schema = min_schema.min(p.h.schema);
            if p.h.uses_custom_buckets() != prev.uses_custom_buckets() {
                notes.push(WindowNote::MixedSchemas);
                return None;
            }
        }
    }
    let mut last = (**last).clone();
    last.reduce_resolution(min_schema);
    let Ok((mut h, reconciled)) = last.sub(&prev) else {
        notes.push(WindowNote::MixedSchemas);
        return None;
    };
    if reconciled {
        notes.push(WindowNote::ReconciledSubtraction);
    }
    if is_counter {
        let mut prev = &prev;
        for (i, p) in points.iter().enumerate().skip(1) {
            if start_reset(i) || p.h.detect_reset(prev) {
                let Ok((sum, reconciled)) = h.add(prev) else {
                    notes.push(WindowNote::MixedSchemas);
                    return None;
                };
                h = sum;
                if reconciled {
                    notes.push(WindowNote::ReconciledAddition);
                }
            }
            prev = &p.h;
        }
    } else if first.hint != Gauge || points[points.len() - 1].h.hint != Gauge {
        notes.push(WindowNote::NotGauge);
    }
    h.hint = Gauge;
    Some(h)
}

/// `rate`, `increase` (`is_counter`) or `delta` of the histograms in a window `(start, end]`
/// of `range_ms`, extrapolated to the window's edges as Prometheus extrapolates floats, or
/// counted from the first histogram's start timestamp where it lies inside the window
/// (`starts`: the points' start timestamps, empty when they have none; see [`start`]).
#[allow(clippy::too_many_arguments)]
pub fn histogram_rate(
    points: &[HistogramSample],
    starts: &[i64],
    start: i64,
    end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
    notes: &mut Vec<WindowNote>,
) -> Option<FloatHistogram> {
    let first = points.first()?;
    let mut h = match points.len() {
        1 => None,
        _ => Some(histogram_increase(points, starts, is_counter, notes)?),
    };
    let (first_t, last_t) = (first.t, points[points.len() - 1].t);
    let count = h.as_ref().map_or(0.0, |h| h.count);
    let first_start = if is_counter { starts.first().copied().unwrap_or(0) } else { 0 };
    let b = crate::WindowBounds { start, end, eval_time: end };
    let (mut factor, from_start) = start::extrapolation_factor(
        b,
        (first_t, last_t),
        points.len(),
        (count, first.h.count),
        first_start,
        is_counter,
    )?;
    if from_start {
        // counted from zero at the start timestamp: the first histogram is all increase
        h = match h {
            None => {
                let mut h = (*first.h).clone();
                h.hint = promflow_storage::native_histogram::CounterResetHint::Gauge;
                Some(h)
            }
            Some(h) => Some(noted(h.add(&first.h), WindowNote::ReconciledAddition, notes)?),
        };
    }
    let mut h = h?;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    h.scale(factor);
    Some(h)
}

/// `irate` (`is_rate`) or `idelta` of the last two histograms of a window, with their start
/// timestamps (`prev_start`, `last_start`; 0 for none).
pub fn histogram_instant(
    prev: &HistogramSample,
    last: &HistogramSample,
    (prev_start, last_start): (i64, i64),
    is_rate: bool,
    notes: &mut Vec<WindowNote>,
) -> Option<FloatHistogram> {
    use promflow_storage::native_histogram::CounterResetHint::Gauge;
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    let both_gauges = last.h.hint == Gauge && prev.h.hint == Gauge;
    if is_rate && (last.h.hint == Gauge || prev.h.hint == Gauge) {
        notes.push(WindowNote::NotCounter);
    }
    if !is_rate && !both_gauges {
        notes.push(WindowNote::NotGauge);
    }
    let mut h = (*last.h).clone();
    let reset = start::is_reset(prev_start, prev.t, last_start, last.t) || last.h.detect_reset(&prev.h);
    if !is_rate || !reset {
        let Ok((d, reconciled)) = h.sub(&prev.h) else {
            notes.push(WindowNote::MixedSchemas);
            return None;
        };
        if reconciled {
            notes.push(WindowNote::ReconciledSubtraction);
        }
        h = d;
    }
    h.hint = Gauge;
    if is_rate {
        h.divide(interval as f64 / 1000.0);
    }
    Some(h)
}

/// The histogram at `t` on the line from `(t1, h1)` to `(t2, h2)`, `t1 <= t <= t2`; for a
/// counter reset between them (`is_counter`), the line from nothing to `h2`, as Prometheus
/// interpolates at the edges of a smoothed window.
pub fn interpolate(
    (t1, h1): (i64, &FloatHistogram),
    (t2, h2): (i64, &FloatHistogram),
    t: i64,
    is_counter: bool,
    notes: &mut Vec<WindowNote>,
) -> Option<FloatHistogram> {
    if t == t1 {
        return Some(h1.clone());
    }
    if t == t2 {
        return Some(h2.clone());
    }
    let fraction = (t - t1) as f64 / (t2 - t1) as f64;
    if is_counter && h2.detect_reset(h1) {
        let mut h = h2.clone();
        h.scale(fraction);
        return Some(h);
    }
    let mut d = noted(h2.sub(h1), WindowNote::ReconciledSubtraction, notes)?;
    d.scale(fraction);
    noted(d.add(h1), WindowNote::ReconciledAddition, notes)
}

/// The histogram of an addition or subtraction, its reconciliation noted; `None`, noted,
/// when exponential and custom buckets met.
fn noted(
    result: Result<(FloatHistogram, bool), HistogramError>,
    reconciled: WindowNote,
    notes: &mut Vec<WindowNote>,
) -> Option<FloatHistogram> {
    match result {
        Ok((h, was_reconciled)) => {
            if was_reconciled {
                notes.push(reconciled);
            }
            Some(h)
        }
        Err(_) => {
            notes.push(WindowNote::MixedSchemas);
            None
        }
    }
}

/// `rate`, `increase` (`is_counter`) or `delta` of the histograms of an anchored or smoothed
/// window `(start, end]` (`widened`: the window's histograms and those within the lookback
/// beyond its edges), as Prometheus's `extendedHistogramRate`: the right edge minus the
/// left, without extrapolation, plus the counter resets between them.
pub fn extended_histogram_rate(
    widened: &[HistogramSample],
    (start, end): (i64, i64),
    smoothed: bool,
    is_counter: bool,
    is_rate: bool,
    notes: &mut Vec<WindowNote>,
) -> Option<FloatHistogram> {
    use promflow_storage::native_histogram::CounterResetHint::Gauge;
    let mut last = widened.len().checked_sub(1)?;
    let first = widened[..last].partition_point(|p| p.t <= start).saturating_sub(1);
    if smoothed {
        last = widened[..last].partition_point(|p| p.t < end);
    }
    if widened[last].t <= start || (smoothed && widened[first].t > end) {
        return None;
    }
    let used = &widened[first..=last];
    if used.iter().any(|p| p.h.uses_custom_buckets() != used[0].h.uses_custom_buckets()) {
        notes.push(WindowNote::MixedSchemas);
        return None;
    }
    if is_counter && used.iter().any(|p| p.h.hint == Gauge) {
        notes.push(WindowNote::NotCounter);
    }
    let at = |i: usize| (widened[i].t, &*widened[i].h);
    let left = if smoothed && widened[first].t < start {
        interpolate(at(first), at(first + 1), start, is_counter, notes)?
    } else {
        (*widened[first].h).clone()
    };
    let right = if smoothed && last > 0 && widened[last].t > end {
        interpolate(at(last - 1), at(last), end, is_counter, notes)?
    } else {
        (*widened[last].h).clone()
    };
    if !is_counter && (left.hint != Gauge || right.hint != Gauge) {
        notes.push(WindowNote::NotGauge);
    }
    let mut h = noted(right.sub(&left), WindowNote::ReconciledSubtraction, notes)?;
    if is_counter {
        // the resets strictly between the edges, each adding the histogram before it; a
        // reset the smoothed left edge was interpolated across is counted already
        let mut from = first + 1;
        let mut prev = &left;
        if smoothed && widened[first].t < start && widened[first + 1].h.detect_reset(&widened[first].h) {
            prev = &widened[first + 1].h;
            from += 1;
        }
        if from <= last {
            let mut correction: Option<FloatHistogram> = None;
            let mut add = |c: &FloatHistogram, notes: &mut Vec<WindowNote>| -> Option<()> {
                correction = Some(match correction.take() {
                    None => c.clone(),
                    Some(sum) => noted(sum.add(c), WindowNote::ReconciledAddition, notes)?,
                });
                Some(())
            };
            for p in &widened[from..last] {
                if p.h.detect_reset(prev) {
                    add(prev, notes)?;
                }
                prev = &p.h;
            }
            if right.detect_reset(prev) {
                add(prev, notes)?;
            }
            if let Some(c) = correction {
                h = noted(h.add(&c), WindowNote::ReconciledAddition, notes)?;
            }
        }
    }
    if is_rate {
        h.divide((end - start) as f64 / 1000.0);
    }
    h.hint = Gauge;
    Some(h)
}

/// A smoothed instant selection of histograms at `t` (`around`: the histograms within the
/// lookback on either side): the one at `t`, else the line between those around `t` (a
/// counter unless both are gauges), else the newest before `t`.
pub fn smoothed_histogram(
    around: &[HistogramSample],
    t: i64,
    notes: &mut Vec<WindowNote>,
) -> Option<FloatHistogram> {
    use promflow_storage::native_histogram::CounterResetHint::{Gauge, Unknown};
    let i = around.partition_point(|p| p.t < t);
    match (around.get(i), i.checked_sub(1).map(|p| &around[p])) {
        (Some(next), _) if next.t == t => Some((*next.h).clone()),
        (Some(next), Some(prev)) => {
            if next.h.uses_custom_buckets() != prev.h.uses_custom_buckets() {
                notes.push(WindowNote::MixedSchemas);
                return None;
            }
            let is_counter = prev.h.hint != Gauge || next.h.hint != Gauge;
            interpolate((prev.t, &prev.h), (next.t, &next.h), t, is_counter, notes)
        }
        (None, Some(prev)) => {
            let mut h = (*prev.h).clone();
            h.hint = Unknown;
            Some(h)
        }
        _ => None,
    }
}

/// What adding up histograms (`sum` of a group, `sum_over_time`) has to say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SumNotes {
    /// Custom buckets of different bounds were added on the bounds they share.
    pub reconciled: bool,
    /// Histograms saying their counter was reset met histograms saying it was not.
    pub conflicting_resets: bool,
}

/// The hints of added histograms, for the collision warning.
#[derive(Default)]
struct Hints {
    reset: bool,
    not_reset: bool,
}

impl Hints {
    fn track(&mut self, h: &FloatHistogram) {
        use promflow_storage::native_histogram::CounterResetHint;
        match h.hint {
            CounterResetHint::CounterReset => self.reset = true,
            CounterResetHint::NotCounterReset => self.not_reset = true,
            _ => {}
        }
    }
}

/// The first histogram of a sum, the hints seen so far, and the Kahan compensation to start
/// with (empty, in the first histogram's layout).
fn start_sum<'h>(
    hists: &mut impl Iterator<Item = &'h FloatHistogram>,
) -> (FloatHistogram, Hints, FloatHistogram) {
    let sum = hists.next().cloned().unwrap_or_default();
    let mut hints = Hints::default();
    hints.track(&sum);
    let mut comp = FloatHistogram::empty_like(&sum);
    comp.zero_threshold = sum.zero_threshold;
    (sum, hints, comp)
}

/// `sum + comp`, the hint of `sum`.
fn compensated(sum: &FloatHistogram, comp: &FloatHistogram) -> Result<FloatHistogram, HistogramError> {
    let (mut total, _) = sum.add(comp)?;
    total.hint = sum.hint;
    Ok(total)
}

/// The sum of `hists` (at least one), Kahan-compensated as Prometheus adds histograms, or
/// the error of the first pair that cannot be added.
pub fn histogram_sum<'h>(
    mut hists: impl Iterator<Item = &'h FloatHistogram>,
) -> Result<(FloatHistogram, SumNotes), HistogramError> {
    let (mut sum, mut hints, mut comp) = start_sum(&mut hists);
    let mut notes = SumNotes::default();
    for h in hists {
        hints.track(h);
        notes.reconciled |= sum.kahan_add(h, &mut comp)?;
    }
    notes.conflicting_resets = hints.reset && hints.not_reset;
    Ok((compensated(&sum, &comp)?, notes))
}

/// The mean of `hists` (at least one), as Prometheus averages histograms: a compensated sum
/// divided by the count while the sum stays finite, an incremental mean once it would
/// overflow.
pub fn histogram_mean<'h>(
    mut hists: impl Iterator<Item = &'h FloatHistogram>,
) -> Result<(FloatHistogram, SumNotes), HistogramError> {
    let (mut sum, mut hints, mut comp) = start_sum(&mut hists);
    let mut mean: Option<FloatHistogram> = None;
    let mut notes = SumNotes::default();
    let mut count = 1.0;
    for h in hists {
        hints.track(h);
        count += 1.0;
        if mean.is_none() {
            let (mut next, mut next_comp) = (sum.clone(), comp.clone());
            notes.reconciled |= next.kahan_add(h, &mut next_comp)?;
            if !next.has_overflow() {
                (sum, comp) = (next, next_comp);
                continue;
            }
            // the sum would overflow: from here on, the mean is kept instead
            let mut m = sum.clone();
            m.divide(count - 1.0);
            comp.divide(count - 1.0);
            mean = Some(m);
        }
        let q = (count - 1.0) / count;
        comp.scale(q);
        let mut to_add = h.clone();
        to_add.divide(count);
        let m = mean.as_mut().expect("set above");
        m.scale(q);
        notes.reconciled |= m.kahan_add(&to_add, &mut comp)?;
    }
    notes.conflicting_resets = hints.reset && hints.not_reset;
    let result = match mean {
        Some(m) => compensated(&m, &comp)?,
        None => {
            sum.divide(count);
            comp.divide(count);
            compensated(&sum, &comp)?
        }
    };
    Ok((result, notes))
}

/// One side of a binary operator at one step.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    /// A float sample (or a scalar).
    Float(f64),
    /// A native histogram.
    Histogram(&'a FloatHistogram),
}

impl Operand<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Operand::Float(_) => "float",
            Operand::Histogram(_) => "histogram",
        }
    }
}

/// What a binary operator over histograms has to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BinaryNote {
    /// The operator does not apply to these types (`float + histogram`): no element.
    Incompatible(String),
    /// Exponential and custom buckets met: no element.
    IncompatibleLayout,
    /// Custom buckets of different bounds were reconciled (`true`: in an addition).
    Reconciled(bool),
    /// A histogram saying its counter was reset met one saying it was not.
    CounterResetCollision(bool),
}

/// What a binary operator yields at one step where a histogram is involved (or a trim
/// operator is): a histogram (`*`, `/` by a number, `+` and `-` of histograms, trims of a
/// histogram), or the left histogram and whether a comparison (`==`, `!=`) holds. `None` when
/// the operator does not take these types (`float + histogram`): no element, even with
/// `bool`, and an info.
pub fn binary(
    op: BinOp,
    l: Operand<'_>,
    r: Operand<'_>,
    notes: &mut Vec<BinaryNote>,
) -> Option<(Option<FloatHistogram>, bool)> {
    use promflow_storage::native_histogram::CounterResetHint::{CounterReset, Gauge, NotCounterReset};
    let incompatible = |notes: &mut Vec<BinaryNote>| {
        notes.push(BinaryNote::Incompatible(format!(
            "incompatible sample types encountered for binary operator {:?}: {} {} {}",
            op.symbol(),
            l.type_name(),
            op.symbol(),
            r.type_name()
        )));
        None
    };
    match (l, r) {
        (Operand::Float(f), Operand::Histogram(h)) | (Operand::Histogram(h), Operand::Float(f))
            if op == BinOp::Mul =>
        {
            let mut h = h.clone();
            h.scale(f);
            if f < 0.0 {
                h.hint = Gauge;
            }
            Some((Some(h), true))
        }
        (Operand::Histogram(h), Operand::Float(f)) if op == BinOp::Div => {
            let mut h = h.clone();
            h.divide(f);
            if f < 0.0 {
                h.hint = Gauge;
            }
            Some((Some(h), true))
        }
        (Operand::Histogram(h), Operand::Float(f)) if op.is_trim() => {
            Some((Some(h.trim(f, op == BinOp::TrimUpper)), true))
        }
        (Operand::Histogram(a), Operand::Histogram(b)) => match op {
            BinOp::Add | BinOp::Sub => {
                let addition = op == BinOp::Add;
                let result = if addition { a.add(b) } else { a.sub(b) };
                let Ok((mut h, reconciled)) = result else {
                    notes.push(BinaryNote::IncompatibleLayout);
                    return None;
                };
                if reconciled {
                    notes.push(BinaryNote::Reconciled(addition));
                }
                if matches!(
                    (a.hint, b.hint),
                    (CounterReset, NotCounterReset) | (NotCounterReset, CounterReset)
                ) {
                    notes.push(BinaryNote::CounterResetCollision(addition));
                }
                if !addition {
                    h.hint = Gauge;
                }
                Some((Some(h), true))
            }
            BinOp::Eq => Some((Some(a.clone()), a.same_as(b))),
            BinOp::Ne => Some((Some(a.clone()), !a.same_as(b))),
            _ => incompatible(notes),
        },
        _ => incompatible(notes),
    }
}

/// A window function over a window that holds native histograms (`hists`, with their start
/// timestamps `starts`, empty when they have none) and maybe floats, as Prometheus computes
/// it: a histogram for the rates and sums of histograms, a float for counts and for the float
/// functions (which leave the histograms out, saying so), nothing where floats and
/// histograms cannot be combined. `range_ms` is the window's length; what the answer has to
/// say goes to `notes`.
#[allow(clippy::too_many_arguments)]
pub fn window(
    func: WindowFn,
    floats: SampleSlice<'_>,
    hists: &[HistogramSample],
    starts: &[i64],
    b: WindowBounds,
    range_ms: i64,
    args: &[f64],
    notes: &mut Vec<WindowNote>,
) -> (Option<f64>, Option<FloatHistogram>) {
    let mixed = |notes: &mut Vec<WindowNote>| {
        notes.push(WindowNote::MixedFloatsAndHistograms);
        (None, None)
    };
    match func {
        WindowFn::Rate | WindowFn::Increase | WindowFn::Delta => {
            if !floats.is_empty() {
                return mixed(notes);
            }
            let counter = func != WindowFn::Delta;
            if counter && start::any_overlap(starts, hists.iter().map(|h| h.t)) {
                notes.push(WindowNote::StartOverlap);
            }
            let starts = if counter { starts } else { &[] };
            let rate = func == WindowFn::Rate;
            (None, histogram_rate(hists, starts, b.start, b.end, range_ms, counter, rate, notes))
        }
        WindowFn::Irate | WindowFn::Idelta => {
            // the last two samples, floats or histograms
            let floats_after = |t: i64| floats.t.iter().filter(|&&x| x > t).count();
            if hists.len() >= 2 && floats_after(hists[hists.len() - 2].t) == 0 {
                let k = hists.len();
                let irate = func == WindowFn::Irate;
                let pair = match starts {
                    [.., a, b] if irate => (*a, *b),
                    _ => (0, 0),
                };
                (None, histogram_instant(&hists[k - 2], &hists[k - 1], pair, irate, notes))
            } else if floats.len() >= 2 && hists.last().is_none_or(|h| h.t < floats.t[floats.len() - 2]) {
                (crate::window(func, floats, b, args), None)
            } else if floats.len() + hists.len() >= 2 {
                mixed(notes)
            } else {
                (None, None)
            }
        }
        WindowFn::CountOverTime => (Some((floats.len() + hists.len()) as f64), None),
        // the time of the first or last sample, float or histogram
        WindowFn::TsOfFirstOverTime => {
            let first = floats.t.first().copied().into_iter().chain(hists.first().map(|h| h.t)).min();
            (first.map(|t| t as f64 / 1000.0), None)
        }
        WindowFn::TsOfLastOverTime => {
            let last = floats.t.last().copied().into_iter().chain(hists.last().map(|h| h.t)).max();
            (last.map(|t| t as f64 / 1000.0), None)
        }
        WindowFn::PresentOverTime => (Some(1.0), None),
        WindowFn::LastOverTime | WindowFn::FirstOverTime => {
            let last = func == WindowFn::LastOverTime;
            let (h, f) = if last {
                (hists.last(), floats.t.last().map(|&t| (t, floats.v[floats.len() - 1])))
            } else {
                (hists.first(), floats.t.first().map(|&t| (t, floats.v[0])))
            };
            match (h, f) {
                (Some(h), Some((t, v))) if (t > h.t) == last => (Some(v), None),
                (Some(h), _) => (None, Some((*h.h).clone())),
                (None, f) => (f.map(|f| f.1), None),
            }
        }
        WindowFn::SumOverTime | WindowFn::AvgOverTime => {
            if !floats.is_empty() {
                return mixed(notes);
            }
            let each = hists.iter().map(|s| &*s.h);
            let total =
                if func == WindowFn::AvgOverTime { histogram_mean(each) } else { histogram_sum(each) };
            match total {
                Ok((total, sum_notes)) => {
                    notes.push(WindowNote::Sum(sum_notes));
                    (None, Some(total))
                }
                Err(_) => {
                    notes.push(WindowNote::MixedSchemas);
                    (None, None)
                }
            }
        }
        WindowFn::Resets if floats.is_empty() && !starts.is_empty() => {
            let resets = (1..hists.len()).filter(|&i| {
                let (prev, cur) = (&hists[i - 1], &hists[i]);
                start::is_reset(starts[i - 1], prev.t, starts[i], cur.t) || cur.h.detect_reset(&prev.h)
            });
            (Some(resets.count() as f64), None)
        }
        WindowFn::Resets | WindowFn::Changes => {
            (Some(resets_or_changes(func == WindowFn::Resets, floats, hists)), None)
        }
        _ => {
            if floats.is_empty() {
                return (None, None);
            }
            notes.push(WindowNote::IgnoredHistograms);
            (crate::window(func, floats, b, args), None)
        }
    }
}

/// `resets` or `changes` over floats and histograms together, in time order: a float next to
/// a histogram is a change, and a reset.
pub fn resets_or_changes(resets: bool, floats: SampleSlice<'_>, hists: &[HistogramSample]) -> f64 {
    enum Point<'a> {
        Float(f64),
        Hist(&'a FloatHistogram),
    }
    let mut points: Vec<(i64, Point<'_>)> = floats.iter().map(|s| (s.t, Point::Float(s.v))).collect();
    points.extend(hists.iter().map(|h| (h.t, Point::Hist(&h.h))));
    points.sort_by_key(|p| p.0);
    let count = points
        .windows(2)
        .filter(|w| match (&w[0].1, &w[1].1) {
            (Point::Float(a), Point::Float(b)) if resets => b < a,
            (Point::Float(a), Point::Float(b)) => a != b && !(a.is_nan() && b.is_nan()),
            (Point::Hist(a), Point::Hist(b)) if resets => b.detect_reset(a),
            (Point::Hist(a), Point::Hist(b)) => !a.same_as(b),
            _ => true,
        })
        .count();
    count as f64
}

/// What an aggregation of a group holding native histograms has to say about its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateNote {
    /// `sum` or `avg` of floats and histograms together: no answer.
    MixedFloatsAndHistograms,
    /// Exponential and custom buckets met in a `sum` or `avg`, first at the histogram of
    /// this index: no answer.
    MixedSchemas {
        /// The histogram that could not be added.
        at: usize,
    },
    /// A float aggregation left the histograms out.
    IgnoredHistograms,
    /// What adding up the histograms said.
    Sum(SumNotes),
}

/// `op` of a group holding the histograms `hists` (at least one) and the floats `floats`
/// (`param`: the aggregation's parameter), as Prometheus aggregates them: `count` and `group`
/// count both, `sum` and `avg` add histograms (nothing for a mix), the others are of the
/// floats alone.
pub fn aggregate(
    op: AggOp,
    floats: &mut [f64],
    hists: &[&FloatHistogram],
    param: f64,
    notes: &mut Vec<AggregateNote>,
) -> (Option<f64>, Option<FloatHistogram>) {
    let float_result =
        |floats: &mut [f64]| (!floats.is_empty()).then(|| crate::aggregate_values(op, floats, param));
    match op {
        AggOp::Count => (Some((floats.len() + hists.len()) as f64), None),
        AggOp::Group => (Some(1.0), None),
        AggOp::Sum | AggOp::Avg => {
            if !floats.is_empty() {
                notes.push(AggregateNote::MixedFloatsAndHistograms);
                return (None, None);
            }
            let each = hists.iter().copied();
            let total = if op == AggOp::Avg { histogram_mean(each) } else { histogram_sum(each) };
            match total {
                Ok((sum, sum_notes)) => {
                    notes.push(AggregateNote::Sum(sum_notes));
                    (None, Some(sum))
                }
                Err(_) => {
                    let custom = hists[0].uses_custom_buckets();
                    let at = hists.iter().position(|h| h.uses_custom_buckets() != custom).unwrap_or(0);
                    notes.push(AggregateNote::MixedSchemas { at });
                    (None, None)
                }
            }
        }
        AggOp::Min | AggOp::Max | AggOp::Stddev | AggOp::Stdvar | AggOp::Quantile => {
            notes.push(AggregateNote::IgnoredHistograms);
            (float_result(floats), None)
        }
        _ => (float_result(floats), None),
    }
}

/// A function over an anchored or smoothed window that holds histograms (`floats` and
/// `hists`: the window's samples widened by the lookback), as Prometheus computes it:
/// `rate`, `increase` and `delta` from the edges, `resets` and `changes` from the last sample
/// at or before the start, floats and histograms alike; a mix of both is no answer for the
/// rates.
pub fn extended_window(
    func: WindowFn,
    floats: SampleSlice<'_>,
    hists: &[HistogramSample],
    b: WindowBounds,
    smoothed: bool,
    notes: &mut Vec<WindowNote>,
) -> (Option<f64>, Option<FloatHistogram>) {
    if matches!(func, WindowFn::Resets | WindowFn::Changes) {
        let before = |t: i64| t <= b.start;
        let anchor = floats
            .t
            .iter()
            .copied()
            .filter(|&t| before(t))
            .chain(hists.iter().map(|h| h.t).filter(|&t| before(t)))
            .max();
        let after = floats.t.iter().any(|&t| t > b.start) || hists.iter().any(|h| h.t > b.start);
        if !after {
            return (None, None);
        }
        let from = anchor.unwrap_or(i64::MIN);
        let fl = floats.slice(floats.t.partition_point(|&t| t < from)..floats.len());
        let hs = &hists[hists.partition_point(|h| h.t < from)..];
        return (Some(resets_or_changes(func == WindowFn::Resets, fl, hs)), None);
    }
    if !floats.is_empty() {
        notes.push(WindowNote::MixedFloatsAndHistograms);
        return (None, None);
    }
    let h = match func {
        WindowFn::Rate | WindowFn::Increase | WindowFn::Delta => extended_histogram_rate(
            hists,
            (b.start, b.end),
            smoothed,
            func != WindowFn::Delta,
            func == WindowFn::Rate,
            notes,
        ),
        _ => None,
    };
    (None, h)
}

/// `histogram_count`, `histogram_sum`, `histogram_avg`, `histogram_stddev` or
/// `histogram_stdvar` of `h` (`None` for any other function).
pub fn statistic(func: VectorFn, h: &FloatHistogram) -> Option<f64> {
    Some(match func {
        VectorFn::HistogramCount => h.count,
        VectorFn::HistogramSum => h.sum,
        VectorFn::HistogramAvg => h.sum / h.count,
        VectorFn::HistogramStddev => histogram_variance(h).sqrt(),
        VectorFn::HistogramStdvar => histogram_variance(h),
        _ => return None,
    })
}

/// Sets a hint that says whether a counter was reset (not a gauge hint) to unknown, leaving
/// the detection to whoever reads the histogram: what a subquery's samples carry.
pub fn forget_reset_hint(h: &mut std::sync::Arc<FloatHistogram>) {
    use promflow_storage::native_histogram::CounterResetHint::{CounterReset, NotCounterReset, Unknown};
    if matches!(h.hint, CounterReset | NotCounterReset) {
        std::sync::Arc::make_mut(h).hint = Unknown;
    }
}
