//! PromQL's functions of one native histogram: the statistics `histogram_stddev` and
//! `histogram_stdvar` estimate from the buckets, and `histogram_quantile` and
//! `histogram_fraction` with Prometheus's interpolation (linear in custom buckets and in the
//! zero bucket, exponential in the exponential buckets).

use promflow_storage::native_histogram::Bucket;
use promflow_storage::FloatHistogram;

use crate::kahan_inc;

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
    let Some((pos, mut bucket)) = at else { return (f64::NAN, None) };
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

/// The part of a bucket's width at or below `v` (strictly inside its finite bounds): linear,
/// or on a logarithmic scale for exponential buckets.
fn fraction_below(b: &Bucket, v: f64, linear: bool) -> f64 {
    if linear {
        return (v - b.lower) / (b.upper - b.lower);
    }
    let (log_lower, log_upper, log_v) = (b.lower.abs().log2(), b.upper.abs().log2(), v.abs().log2());
    if v > 0.0 {
        (log_v - log_lower) / (log_upper - log_lower)
    } else {
        1.0 - (log_v - log_upper) / (log_lower - log_upper)
    }
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
