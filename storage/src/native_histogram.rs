//! Native histograms as PromQL computes with them: Prometheus's float histogram, with its
//! sparse exponential buckets (schemas -4 to 8: bucket `i` of schema `s` holds the
//! observations in `(base^(i-1), base^i]`, `base = 2^(2^-s)`), a zero bucket, or custom
//! bucket bounds (schema -53, classic buckets kept as a native histogram).
//!
//! Integer histograms, as instrumentation sends them, become float histograms when they are
//! read: PromQL computes with float histograms only, as Prometheus does. Buckets are held
//! sparse and canonical, as `(index, count)` pairs in index order without empty buckets:
//! the form Prometheus compares histograms in after compacting them, so two equal
//! histograms are equal here field by field, and the algebra (addition across schemas and
//! zero thresholds) works on indexes rather than on spans.

use std::sync::Arc;

/// The schema of a histogram with custom bucket bounds.
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// The lowest and highest exponential schemas.
pub const EXPONENTIAL_SCHEMAS: std::ops::RangeInclusive<i32> = -4..=8;

/// What the producer of a histogram says about counter resets.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum CounterResetHint {
    /// Nothing is known: a reset is detected by comparing with the previous histogram.
    #[default]
    Unknown,
    /// The counter was reset before this histogram.
    CounterReset,
    /// The counter was not reset before this histogram.
    NotCounterReset,
    /// The histogram is a gauge: it may go down without a reset.
    Gauge,
}

/// Why two histograms cannot be combined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistogramError {
    /// One has exponential buckets, the other custom ones.
    #[error("histograms with exponential and custom buckets cannot be combined")]
    MixedSchemas,
    /// A schema outside -4..=8 and not -53.
    #[error("invalid histogram schema {0}")]
    InvalidSchema(i32),
    /// A bucket index outside what a histogram can hold (offsets that add up past `i32`).
    #[error("bucket index {0} is out of range")]
    IndexOutOfRange(i64),
    /// A classic bucket's `le` is NaN.
    #[error("bucket boundary must not be NaN")]
    NaNBound,
    /// A classic bucket's or the histogram's count is negative.
    #[error("count must be non-negative: {0}")]
    NegativeCount(f64),
    /// A classic bucket counts fewer observations than one with a lower `le`.
    #[error("count is not cumulative: le={le} counts {count}, less than a lower bucket")]
    NotCumulative {
        /// The bucket's bound.
        le: f64,
        /// Its count.
        count: f64,
    },
    /// Neither buckets nor a count.
    #[error("count must be provided when no buckets are present")]
    MissingCount,
    /// The `+Inf` bucket and the count disagree.
    #[error("count mismatch: count={count} != le=+Inf count={infinite}")]
    CountMismatch {
        /// The histogram's count.
        count: f64,
        /// The `+Inf` bucket's.
        infinite: f64,
    },
    /// An integer histogram whose count is not the number of observations in its buckets.
    #[error(
        "{buckets} observations found in buckets, but the Count field is {count}: histogram's observation count should equal the number of observations found in the buckets (in absence of NaN)"
    )]
    CountNotBuckets {
        /// The observations the zero bucket and the buckets hold.
        buckets: f64,
        /// The histogram's count.
        count: f64,
    },
    /// An integer histogram with a NaN sum whose count is below the observations in its
    /// buckets (NaN observations count without landing in a bucket, so it may be above).
    #[error(
        "{buckets} observations found in buckets, but the Count field is {count}: histogram's observation count should be at least the number of observations found in the buckets"
    )]
    CountBelowBuckets {
        /// The observations the zero bucket and the buckets hold.
        buckets: f64,
        /// The histogram's count.
        count: f64,
    },
    /// Spans that do not cover exactly the bucket counts given.
    #[error("{side} spans cover {covered} buckets, {given} bucket counts are given")]
    SpansMismatch {
        /// `positive` or `negative`.
        side: &'static str,
        /// The buckets the spans cover.
        covered: u64,
        /// The counts given.
        given: usize,
    },
    /// Integer bucket deltas that add up past `i64` or below zero.
    #[error("bucket has a negative or overflowing count after delta {0}")]
    BadDelta(i64),
    /// Custom bounds that are not finite and strictly increasing, custom buckets with
    /// negative buckets or past the bounds, or custom bounds with an exponential schema.
    #[error("invalid custom buckets: {0}")]
    InvalidCustomBuckets(&'static str),
}

/// A run of consecutive buckets in Prometheus's span notation: `offset` buckets after the
/// previous span's end (the first span's offset is its first index), `length` buckets long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The gap before the span (the first index, for the first span).
    pub offset: i32,
    /// The number of buckets in the span.
    pub length: u32,
}

/// A float histogram. Its buckets are canonical (see the module's documentation); the
/// constructors and every operation keep them so. Serialized whole, as the incremental
/// executor's workers exchange it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FloatHistogram {
    /// What the producer says about counter resets.
    pub hint: CounterResetHint,
    /// The bucket schema: -4..=8, or [`CUSTOM_BUCKETS_SCHEMA`].
    pub schema: i32,
    /// The zero bucket's upper bound: observations in `[-zero_threshold, zero_threshold]`
    /// count in it (unused with custom buckets).
    pub zero_threshold: f64,
    /// The zero bucket's count.
    pub zero_count: f64,
    /// The number of observations.
    pub count: f64,
    /// The sum of the observations.
    pub sum: f64,
    positive: Vec<(i32, f64)>,
    negative: Vec<(i32, f64)>,
    custom_bounds: Arc<[f64]>,
}

impl FloatHistogram {
    /// A total order over histograms, field by field with `f64::total_cmp`: equal exactly
    /// when every bit is, as a collection's values must be (a NaN sum equals itself).
    pub fn total_cmp(&self, o: &FloatHistogram) -> std::cmp::Ordering {
        let floats = |a: &[f64], b: &[f64]| {
            a.len().cmp(&b.len()).then_with(|| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| x.total_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        };
        let buckets = |a: &[(i32, f64)], b: &[(i32, f64)]| {
            a.len().cmp(&b.len()).then_with(|| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        };
        self.schema
            .cmp(&o.schema)
            .then(self.hint.cmp(&o.hint))
            .then(self.count.total_cmp(&o.count))
            .then(self.sum.total_cmp(&o.sum))
            .then(self.zero_count.total_cmp(&o.zero_count))
            .then(self.zero_threshold.total_cmp(&o.zero_threshold))
            .then_with(|| buckets(&self.positive, &o.positive))
            .then_with(|| buckets(&self.negative, &o.negative))
            .then_with(|| floats(&self.custom_bounds, &o.custom_bounds))
    }

    /// A histogram with the given fields and buckets written in span notation, as Prometheus
    /// writes them (each bucket an absolute count). The buckets are made canonical. Refused:
    /// spans that do not cover exactly the counts given, offsets past `i32`, an unknown
    /// schema, and custom bounds that are not finite and increasing, that come with an
    /// exponential schema, or that custom buckets (which have no negative side) run past.
    /// Counts are not checked here (a computed histogram may hold negative ones): senders'
    /// histograms also go through [`FloatHistogram::check_counts`].
    #[allow(clippy::too_many_arguments)]
    pub fn from_spans(
        schema: i32,
        zero_threshold: f64,
        zero_count: f64,
        count: f64,
        sum: f64,
        positive: (&[Span], &[f64]),
        negative: (&[Span], &[f64]),
        custom_bounds: Vec<f64>,
    ) -> Result<FloatHistogram, HistogramError> {
        for (side, (spans, counts)) in [("positive", positive), ("negative", negative)] {
            let covered: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
            if covered != counts.len() as u64 {
                return Err(HistogramError::SpansMismatch { side, covered, given: counts.len() });
            }
        }
        let end: i64 = positive.0.iter().map(|s| i64::from(s.offset) + i64::from(s.length)).sum();
        check_custom_buckets(schema, negative.1.is_empty(), end, &custom_bounds)?;
        FloatHistogram::from_parts(
            CounterResetHint::Unknown,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            spanned(positive.0, positive.1)?,
            spanned(negative.0, negative.1)?,
            custom_bounds,
        )
        .ok_or(HistogramError::InvalidSchema(schema))
    }

    /// A histogram from its buckets as `(index, count)` pairs in any order (made canonical),
    /// with [`FloatHistogram::from_spans`]'s checks of the schema and custom bounds.
    #[allow(clippy::too_many_arguments)]
    pub fn from_buckets(
        hint: CounterResetHint,
        schema: i32,
        zero_threshold: f64,
        zero_count: f64,
        count: f64,
        sum: f64,
        positive: Vec<(i32, f64)>,
        negative: Vec<(i32, f64)>,
        custom_bounds: Vec<f64>,
    ) -> Result<FloatHistogram, HistogramError> {
        let end = positive.iter().map(|b| i64::from(b.0) + 1).max().unwrap_or(0);
        check_custom_buckets(schema, negative.is_empty(), end, &custom_bounds)?;
        FloatHistogram::from_parts(
            hint,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive,
            negative,
            custom_bounds,
        )
        .ok_or(HistogramError::InvalidSchema(schema))
    }

    /// Refuses what no sender may write: a negative count, zero count or bucket count, or a
    /// NaN one.
    pub fn check_counts(&self) -> Result<(), HistogramError> {
        let buckets = self.positive.iter().chain(&self.negative).map(|b| b.1);
        match [self.count, self.zero_count].into_iter().chain(buckets).find(|c| c.is_nan() || *c < 0.0) {
            Some(c) => Err(HistogramError::NegativeCount(c)),
            None => Ok(()),
        }
    }

    /// Refuses an integer histogram (as instrumentation sends them) whose count is not its
    /// buckets' observations, as Prometheus validates one: equal, or at least as many when the
    /// sum is NaN (a NaN observation lands in no bucket). Float histograms are not held to it,
    /// as in Prometheus: their counts need not add up exactly.
    pub fn check_integer_counts(&self) -> Result<(), HistogramError> {
        let buckets = self.zero_count + self.positive.iter().chain(&self.negative).map(|b| b.1).sum::<f64>();
        let count = self.count;
        match () {
            _ if self.sum.is_nan() && buckets > count => {
                Err(HistogramError::CountBelowBuckets { buckets, count })
            }
            _ if !self.sum.is_nan() && buckets != count => {
                Err(HistogramError::CountNotBuckets { buckets, count })
            }
            _ => Ok(()),
        }
    }

    /// A classic histogram (its buckets' `le` bounds with their cumulative counts, in any
    /// order; its `_count` if it has one; its `_sum`) as a histogram of custom buckets with
    /// the same bounds, as Prometheus converts one (`convert_classic_histograms_to_nhcb`, the
    /// test scripts' `load_with_nhcb`). A bound given twice counts once (the first); without
    /// a `+Inf` bucket the count is its count, and without a count the highest bucket's.
    pub fn from_classic(
        buckets: &[(f64, f64)],
        count: Option<f64>,
        sum: f64,
    ) -> Result<FloatHistogram, HistogramError> {
        let mut sorted: Vec<(f64, f64)> = Vec::with_capacity(buckets.len() + 1);
        for &(le, c) in buckets {
            if le.is_nan() {
                return Err(HistogramError::NaNBound);
            }
            if c < 0.0 {
                return Err(HistogramError::NegativeCount(c));
            }
            if !sorted.iter().any(|&(l, _)| l == le) {
                sorted.push((le, c));
            }
        }
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(w) = sorted.windows(2).find(|w| w[1].1 < w[0].1) {
            return Err(HistogramError::NotCumulative { le: w[1].0, count: w[1].1 });
        }
        let count = match (count, sorted.last()) {
            (Some(c), _) if c < 0.0 => return Err(HistogramError::NegativeCount(c)),
            (Some(c), _) => c,
            (None, Some(&(_, highest))) => highest,
            (None, None) => return Err(HistogramError::MissingCount),
        };
        if sorted.last().is_none_or(|&(le, _)| le != f64::INFINITY) {
            sorted.push((f64::INFINITY, count));
        }
        let infinite = sorted.last().map_or(count, |b| b.1);
        if infinite != count {
            return Err(HistogramError::CountMismatch { count, infinite });
        }
        let mut previous = 0.0;
        let positive = sorted
            .iter()
            .enumerate()
            .map(|(i, &(_, cumulative))| {
                let bucket = (i as i32, cumulative - previous);
                previous = cumulative;
                bucket
            })
            .collect();
        Ok(FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count,
            sum,
            positive: canonical(positive),
            custom_bounds: sorted[..sorted.len() - 1].iter().map(|b| b.0).collect(),
            ..Default::default()
        })
    }

    /// A histogram from its parts as storage keeps them: buckets as `(index, count)` pairs
    /// (made canonical here), custom bounds for schema -53.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        hint: CounterResetHint,
        schema: i32,
        zero_threshold: f64,
        zero_count: f64,
        count: f64,
        sum: f64,
        positive: Vec<(i32, f64)>,
        negative: Vec<(i32, f64)>,
        custom_bounds: Vec<f64>,
    ) -> Option<FloatHistogram> {
        if schema != CUSTOM_BUCKETS_SCHEMA && !EXPONENTIAL_SCHEMAS.contains(&schema) {
            return None;
        }
        Some(FloatHistogram {
            hint,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive: canonical(positive),
            negative: canonical(negative),
            custom_bounds: custom_bounds.into(),
        })
    }

    /// The upper bound of positive bucket `i`: `base^i`, or the custom bound (`-Inf` below the
    /// first custom bucket, `+Inf` for the last).
    fn upper_bound(&self, i: i32) -> f64 {
        if !self.uses_custom_buckets() {
            return bucket_bound(self.schema, i);
        }
        match usize::try_from(i) {
            Err(_) => f64::NEG_INFINITY,
            Ok(i) => self.custom_bounds.get(i).copied().unwrap_or(f64::INFINITY),
        }
    }

    /// Whether the buckets are custom ones (schema -53).
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// The positive buckets (all buckets, with custom bounds): `(index, count)` in index
    /// order, none empty.
    pub fn positive_buckets(&self) -> &[(i32, f64)] {
        &self.positive
    }

    /// The negative buckets: `(index, count)` in index order, none empty; bucket `i` holds
    /// the observations in `[-base^i, -base^(i-1))`.
    pub fn negative_buckets(&self) -> &[(i32, f64)] {
        &self.negative
    }

    /// The custom buckets' upper bounds, without the last bucket's `+Inf`.
    pub fn custom_bounds(&self) -> &[f64] {
        &self.custom_bounds
    }

    /// The positive buckets in span notation.
    pub fn positive_spans(&self) -> (Vec<Span>, Vec<f64>) {
        spans(&self.positive)
    }

    /// The negative buckets in span notation.
    pub fn negative_spans(&self) -> (Vec<Span>, Vec<f64>) {
        spans(&self.negative)
    }

    /// Every count and the sum times `factor` (a histogram times a number).
    pub fn scale(&mut self, factor: f64) {
        self.zero_count *= factor;
        self.count *= factor;
        self.sum *= factor;
        for (_, c) in self.positive.iter_mut().chain(self.negative.iter_mut()) {
            *c *= factor;
        }
        // a factor of zero empties every bucket
        self.positive.retain(|b| b.1 != 0.0);
        self.negative.retain(|b| b.1 != 0.0);
    }

    /// Whether both hold the same observations, bit for bit (NaN equals NaN), whatever
    /// their counter reset hints (Prometheus's `Equals`, which PromQL's `==` uses).
    pub fn same_as(&self, other: &FloatHistogram) -> bool {
        let same = |a: f64, b: f64| a.to_bits() == b.to_bits();
        let same_buckets = |a: &[(i32, f64)], b: &[(i32, f64)]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && same(x.1, y.1))
        };
        self.schema == other.schema
            && same(self.zero_threshold, other.zero_threshold)
            && same(self.zero_count, other.zero_count)
            && same(self.count, other.count)
            && same(self.sum, other.sum)
            && self.custom_bounds == other.custom_bounds
            && same_buckets(&self.positive, &other.positive)
            && same_buckets(&self.negative, &other.negative)
    }

    /// The histogram without the observations above `rhs` (`upper`, PromQL's `</`) or below
    /// it (`>/`): a bucket the bound cuts keeps the share of its count its width below (or
    /// above) the bound suggests, interpolated as `histogram_fraction` interpolates, and the
    /// sum is estimated anew from the buckets' midpoints, as Prometheus's `TrimBuckets` does.
    pub fn trim(&self, rhs: f64, upper: bool) -> FloatHistogram {
        let custom = self.uses_custom_buckets();
        let mut h = self.clone();
        let (mut count, mut sum, mut trimmed) = (0.0, 0.0, false);
        let (has_positive, has_negative) = (!h.positive.is_empty(), !h.negative.is_empty());
        let bounds = |i: i32, positive: bool| -> (f64, f64) {
            if positive {
                (self.upper_bound(i - 1), self.upper_bound(i))
            } else {
                (-self.upper_bound(i), -self.upper_bound(i - 1))
            }
        };
        for (positive, buckets) in [(true, &mut h.positive), (false, &mut h.negative)] {
            for (i, c) in buckets.iter_mut() {
                let (lower, up) = bounds(*i, positive);
                let b = Bucket { lower, upper: up, lower_inclusive: false, upper_inclusive: true, count: *c };
                let whole = if upper { up <= rhs } else { lower >= rhs };
                let cut = if upper { lower < rhs } else { up > rhs };
                if whole {
                    count += *c;
                    sum += trim_midpoint(lower, up, positive, custom) * *c;
                } else if cut {
                    let (keep, midpoint) = trim_bucket(&b, rhs, upper, positive, custom);
                    count += keep;
                    sum += midpoint * keep;
                    if *c != keep {
                        *c = keep;
                        trimmed = true;
                    }
                } else {
                    *c = 0.0;
                    trimmed = true;
                }
            }
        }
        if h.zero_count > 0.0 {
            let (keep, midpoint) = trim_zero_bucket(&h, rhs, has_negative, has_positive, upper);
            if h.zero_count != keep {
                h.zero_count = keep;
                trimmed = true;
            }
            sum += midpoint * keep;
            count += keep;
        }
        if trimmed {
            h.count = count;
            h.sum = sum;
            h.positive.retain(|b| b.1 != 0.0);
            h.negative.retain(|b| b.1 != 0.0);
        }
        h
    }

    /// An empty histogram with `like`'s schema and custom bounds: what a counter started
    /// from before its first histogram.
    pub fn empty_like(like: &FloatHistogram) -> FloatHistogram {
        FloatHistogram {
            schema: like.schema,
            custom_bounds: Arc::clone(&like.custom_bounds),
            ..Default::default()
        }
    }

    /// Whether the counter was reset between `previous` and `self`: the hint says so, or a
    /// count, the zero bucket or a bucket went down, or the buckets became finer or the zero
    /// bucket narrower (Prometheus's `DetectReset`).
    pub fn detect_reset(&self, previous: &FloatHistogram) -> bool {
        match self.hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.count < previous.count {
            return true;
        }
        let mut prev = previous.clone();
        if self.uses_custom_buckets() {
            if !previous.uses_custom_buckets() {
                return true;
            }
            if self.custom_bounds != previous.custom_bounds {
                // compared on the bounds both have
                let shared: Vec<f64> = self
                    .custom_bounds
                    .iter()
                    .copied()
                    .filter(|b| previous.custom_bounds.contains(b))
                    .collect();
                let mut cur = self.clone();
                cur.reduce_custom_bounds(&shared);
                prev.reduce_custom_bounds(&shared);
                return buckets_went_down(&prev.positive, &cur.positive);
            }
        } else if previous.uses_custom_buckets() {
            return true;
        }
        if self.schema > previous.schema || self.zero_threshold < previous.zero_threshold {
            return true;
        }
        prev.widen_zero_bucket(self.zero_threshold);
        if prev.zero_threshold != self.zero_threshold || self.zero_count < prev.zero_count {
            // the wider threshold fell inside a bucket of the previous histogram
            return true;
        }
        prev.reduce_resolution(self.schema);
        buckets_went_down(&prev.positive, &self.positive) || buckets_went_down(&prev.negative, &self.negative)
    }

    /// `self += other`, with Kahan compensation kept in `comp` (start it as
    /// [`empty_like`](Self::empty_like) `self`): adding many histograms keeps the precision a
    /// compensated float sum keeps. The sum is `self + comp` once everything is added. Says
    /// whether custom bounds were reconciled, as [`add`](Self::add) does.
    pub fn kahan_add(
        &mut self,
        other: &FloatHistogram,
        comp: &mut FloatHistogram,
    ) -> Result<bool, HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::MixedSchemas);
        }
        let mut b = other.clone();
        let mut reconciled = false;
        if self.uses_custom_buckets() {
            if self.custom_bounds != b.custom_bounds {
                let shared: Vec<f64> =
                    self.custom_bounds.iter().copied().filter(|x| b.custom_bounds.contains(x)).collect();
                comp.custom_bounds = Arc::clone(&self.custom_bounds);
                self.reduce_custom_bounds(&shared);
                comp.reduce_custom_bounds(&shared);
                b.reduce_custom_bounds(&shared);
                reconciled = true;
            }
        } else {
            let schema = self.schema.min(b.schema);
            comp.schema = self.schema;
            for h in [&mut *self, &mut *comp, &mut b] {
                h.reduce_resolution(schema);
            }
            // widening may grow a threshold to a bucket's bound: all three to the widest
            for _ in 0..2 {
                let threshold = self.zero_threshold.max(b.zero_threshold).max(comp.zero_threshold);
                for h in [&mut *self, &mut *comp, &mut b] {
                    h.widen_zero_bucket(threshold);
                }
            }
        }
        self.hint = match (self.hint, b.hint) {
            (x, y) if x == y => x,
            (CounterResetHint::Gauge, _) | (_, CounterResetHint::Gauge) => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        };
        (self.zero_count, comp.zero_count) = kahan_inc(b.zero_count, self.zero_count, comp.zero_count);
        (self.count, comp.count) = kahan_inc(b.count, self.count, comp.count);
        (self.sum, comp.sum) = kahan_inc(b.sum, self.sum, comp.sum);
        kahan_buckets(&mut self.positive, &mut comp.positive, &b.positive);
        kahan_buckets(&mut self.negative, &mut comp.negative, &b.negative);
        Ok(reconciled)
    }

    /// The histogram as Go's `FloatHistogram.String` writes it (`{count:20, sum:10,
    /// [-2,-1):2, [-0.001,0.001]:2, (0.5,1]:1}`): what `count_values` labels a histogram with.
    pub fn go_string(&self) -> String {
        use crate::gofmt::format_g;
        let g = |v: f64| format_g(v, None);
        let bucket = |lower: f64, upper: f64, count: f64| {
            let (open, close) = (if lower < 0.0 { '[' } else { '(' }, if upper > 0.0 { ']' } else { ')' });
            format!("{open}{},{}{close}:{}", g(lower), g(upper), g(count))
        };
        let mut parts = vec![format!("count:{}", g(self.count)), format!("sum:{}", g(self.sum))];
        parts.extend(
            self.negative
                .iter()
                .rev()
                .map(|&(i, c)| bucket(-self.upper_bound(i), -self.upper_bound(i - 1), c)),
        );
        if self.zero_count != 0.0 {
            parts.push(format!("[-{0},{0}]:{1}", g(self.zero_threshold), g(self.zero_count)));
        }
        parts.extend(
            self.positive.iter().map(|&(i, c)| bucket(self.upper_bound(i - 1), self.upper_bound(i), c)),
        );
        format!("{{{}}}", parts.join(", "))
    }

    /// Whether a count, the sum or a bucket is infinite: a sum that overflowed.
    pub fn has_overflow(&self) -> bool {
        [self.zero_count, self.count, self.sum].iter().any(|v| v.is_infinite())
            || self.positive.iter().chain(&self.negative).any(|b| b.1.is_infinite())
    }

    /// Every count and the sum divided by `divisor` (a histogram divided by a number, an
    /// average of histograms).
    pub fn divide(&mut self, divisor: f64) {
        self.zero_count /= divisor;
        self.count /= divisor;
        self.sum /= divisor;
        if divisor == 0.0 {
            // as in Prometheus: division by zero leaves no bucket
            self.positive.clear();
            self.negative.clear();
            return;
        }
        for (_, c) in self.positive.iter_mut().chain(self.negative.iter_mut()) {
            *c /= divisor;
        }
        self.positive.retain(|b| b.1 != 0.0);
        self.negative.retain(|b| b.1 != 0.0);
    }

    /// `self + other`: at the lower of the two schemas and the wider zero bucket, as
    /// Prometheus adds histograms. With custom buckets of different bounds, both are first
    /// reduced to the bounds they share; the answer says whether that happened (Prometheus
    /// notes it: "mismatched custom buckets were reconciled").
    pub fn add(&self, other: &FloatHistogram) -> Result<(FloatHistogram, bool), HistogramError> {
        self.combine(other, 1.0)
    }

    /// `self - other`, as [`FloatHistogram::add`] of `other` negated.
    pub fn sub(&self, other: &FloatHistogram) -> Result<(FloatHistogram, bool), HistogramError> {
        self.combine(other, -1.0)
    }

    /// `self + sign × other`.
    fn combine(&self, other: &FloatHistogram, sign: f64) -> Result<(FloatHistogram, bool), HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::MixedSchemas);
        }
        let (mut a, mut b) = (self.clone(), other.clone());
        let mut reconciled = false;
        if a.uses_custom_buckets() {
            if a.custom_bounds != b.custom_bounds {
                let shared: Vec<f64> =
                    a.custom_bounds.iter().copied().filter(|x| b.custom_bounds.contains(x)).collect();
                a.reduce_custom_bounds(&shared);
                b.reduce_custom_bounds(&shared);
                reconciled = true;
            }
        } else {
            let schema = a.schema.min(b.schema);
            a.reduce_resolution(schema);
            b.reduce_resolution(schema);
            let threshold = a.zero_threshold.max(b.zero_threshold);
            a.widen_zero_bucket(threshold);
            b.widen_zero_bucket(threshold);
            // widening may have grown either threshold to a bucket's bound: both to the wider
            let threshold = a.zero_threshold.max(b.zero_threshold);
            a.widen_zero_bucket(threshold);
            b.widen_zero_bucket(threshold);
        }
        a.hint = match (a.hint, b.hint) {
            (x, y) if x == y => x,
            (CounterResetHint::Gauge, _) | (_, CounterResetHint::Gauge) => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        };
        a.zero_count += sign * b.zero_count;
        a.count += sign * b.count;
        a.sum += sign * b.sum;
        a.positive = merged(&a.positive, &b.positive, sign);
        a.negative = merged(&a.negative, &b.negative, sign);
        Ok((a, reconciled))
    }

    /// Lowers the resolution to `schema` (no higher than the current one): each bucket's
    /// count goes to the bucket of `schema` that holds it.
    pub fn reduce_resolution(&mut self, schema: i32) {
        if self.uses_custom_buckets() || schema >= self.schema {
            return;
        }
        let delta = self.schema - schema;
        // bucket i covers (base^(i-1), base^i]: its upper bound's index at the lower schema
        let target = |i: i32| ((i - 1) >> delta) + 1;
        for buckets in [&mut self.positive, &mut self.negative] {
            let mut out: Vec<(i32, f64)> = Vec::with_capacity(buckets.len());
            for &(i, c) in buckets.iter() {
                match out.last_mut() {
                    Some((j, sum)) if *j == target(i) => *sum += c,
                    _ => out.push((target(i), c)),
                }
            }
            *buckets = canonical(out);
        }
        self.schema = schema;
    }

    /// Widens the zero bucket to at least `threshold`: every bucket reaching below it is
    /// merged into the zero bucket, and the threshold grows to the upper bound of the
    /// widest bucket merged, as Prometheus widens it.
    pub fn widen_zero_bucket(&mut self, threshold: f64) {
        if self.uses_custom_buckets() || threshold <= self.zero_threshold {
            return;
        }
        let schema = self.schema;
        let mut threshold = threshold;
        // merging a bucket may grow the threshold into the next one, on either side
        loop {
            let mut merged_any = false;
            for buckets in [&mut self.positive, &mut self.negative] {
                let mut merged = 0;
                for &(i, c) in buckets.iter() {
                    if bucket_bound(schema, i - 1) >= threshold {
                        break;
                    }
                    self.zero_count += c;
                    threshold = threshold.max(bucket_bound(schema, i));
                    merged += 1;
                }
                merged_any |= merged > 0;
                buckets.drain(..merged);
            }
            if !merged_any {
                break;
            }
        }
        self.zero_threshold = threshold;
    }

    /// Keeps only the custom bounds in `bounds` (a subset of the current ones, in order):
    /// each bucket's count goes to the first kept bound at or above its own.
    fn reduce_custom_bounds(&mut self, bounds: &[f64]) {
        let kept = |i: i32| {
            let upper = self.custom_bounds.get(i as usize).copied().unwrap_or(f64::INFINITY);
            bounds.iter().position(|&b| b >= upper).unwrap_or(bounds.len()) as i32
        };
        let mut out: Vec<(i32, f64)> = Vec::with_capacity(self.positive.len());
        for &(i, c) in &self.positive {
            match out.last_mut() {
                Some((j, sum)) if *j == kept(i) => *sum += c,
                _ => out.push((kept(i), c)),
            }
        }
        self.positive = canonical(out);
        self.custom_bounds = bounds.into();
    }
}

/// One bucket with its bounds, as PromQL's functions and the API read a histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// The lower bound.
    pub lower: f64,
    /// The upper bound.
    pub upper: f64,
    /// Whether an observation equal to the lower bound counts in the bucket.
    pub lower_inclusive: bool,
    /// Whether an observation equal to the upper bound counts in the bucket.
    pub upper_inclusive: bool,
    /// The observations the bucket counts.
    pub count: f64,
}

impl FloatHistogram {
    /// Every bucket that counts something, lowest first: the negative buckets, the zero
    /// bucket, the positive buckets (with custom bounds: from `-Inf` to the first bound, up
    /// to `+Inf`). A bucket that overlaps the zero bucket ends at its threshold, as in
    /// Prometheus's iterator.
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        if self.uses_custom_buckets() {
            out.extend(self.positive.iter().map(|&(i, count)| Bucket {
                lower: self.upper_bound(i - 1),
                upper: self.upper_bound(i),
                lower_inclusive: i == 0,
                upper_inclusive: true,
                count,
            }));
            return out;
        }
        let zt = self.zero_threshold;
        out.extend(self.negative.iter().rev().map(|&(i, count)| {
            let (lower, upper) = (-bucket_bound(self.schema, i), -bucket_bound(self.schema, i - 1));
            let upper = if upper < 0.0 && upper > -zt { -zt } else { upper };
            Bucket { lower, upper, lower_inclusive: lower < 0.0, upper_inclusive: upper > 0.0, count }
        }));
        if self.zero_count > 0.0 {
            out.push(Bucket {
                lower: -zt,
                upper: zt,
                lower_inclusive: true,
                upper_inclusive: true,
                count: self.zero_count,
            });
        }
        out.extend(self.positive.iter().map(|&(i, count)| {
            let (lower, upper) = (bucket_bound(self.schema, i - 1), bucket_bound(self.schema, i));
            let lower = if lower > 0.0 && lower < zt { zt } else { lower };
            Bucket { lower, upper, lower_inclusive: lower < 0.0, upper_inclusive: upper > 0.0, count }
        }));
        out
    }
}

/// `v` as an integer when it is exactly one: a whole number below 2^53 in magnitude (not
/// negative zero), so that counts stored as integers, or as integer differences, come back
/// bit for bit.
pub(crate) fn exact_integer(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 && v.to_bits() != (-0.0f64).to_bits())
        .then_some(v as i64)
}

/// The hint's byte in the binary encodings (WAL and blocks).
pub(crate) fn hint_byte(hint: CounterResetHint) -> u8 {
    match hint {
        CounterResetHint::Unknown => 0,
        CounterResetHint::CounterReset => 1,
        CounterResetHint::NotCounterReset => 2,
        CounterResetHint::Gauge => 3,
    }
}

/// The hint a byte of the binary encodings stands for.
pub(crate) fn hint_of_byte(b: u8) -> Option<CounterResetHint> {
    Some(match b {
        0 => CounterResetHint::Unknown,
        1 => CounterResetHint::CounterReset,
        2 => CounterResetHint::NotCounterReset,
        3 => CounterResetHint::Gauge,
        _ => return None,
    })
}

impl FloatHistogram {
    /// Appends the histogram's binary encoding (the WAL's): the hint byte, the schema as a
    /// varint, zero threshold, zero count, count and sum as little-endian `f64`s, then the
    /// positive buckets, the negative buckets and the custom bounds, each as a varint length
    /// followed by (varint index delta, `f64` count) pairs or `f64` bounds.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        use crate::codec::{put_uvarint, put_varint};
        out.push(hint_byte(self.hint));
        put_varint(out, i64::from(self.schema));
        for f in [self.zero_threshold, self.zero_count, self.count, self.sum] {
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        for buckets in [&self.positive, &self.negative] {
            put_uvarint(out, buckets.len() as u64);
            let mut prev = 0i64;
            for &(i, c) in buckets.iter() {
                put_varint(out, i64::from(i) - prev);
                prev = i64::from(i);
                out.extend_from_slice(&c.to_bits().to_le_bytes());
            }
        }
        put_uvarint(out, self.custom_bounds.len() as u64);
        for b in self.custom_bounds.iter() {
            out.extend_from_slice(&b.to_bits().to_le_bytes());
        }
    }

    /// Reads one histogram written by [`encode`](Self::encode); `None` when the bytes are not
    /// one (counts are checked against the bytes left before anything is allocated).
    pub(crate) fn decode(c: &mut crate::codec::Cursor<'_>) -> Option<FloatHistogram> {
        let hint = hint_of_byte(c.take(1)?[0])?;
        let schema = i32::try_from(c.varint()?).ok()?;
        let mut f = || c.u64().map(f64::from_bits);
        let (zero_threshold, zero_count, count, sum) = (f()?, f()?, f()?, f()?);
        let buckets = |c: &mut crate::codec::Cursor<'_>| -> Option<Vec<(i32, f64)>> {
            let n = usize::try_from(c.uvarint()?).ok()?;
            // each bucket takes at least nine bytes
            if n > c.remaining() / 9 {
                return None;
            }
            let mut out = Vec::with_capacity(n);
            let mut prev = 0i64;
            for _ in 0..n {
                prev = prev.checked_add(c.varint()?)?;
                out.push((i32::try_from(prev).ok()?, f64::from_bits(c.u64()?)));
            }
            Some(out)
        };
        let positive = buckets(c)?;
        let negative = buckets(c)?;
        let n = usize::try_from(c.uvarint()?).ok()?;
        if n > c.remaining() / 8 {
            return None;
        }
        let custom_bounds = (0..n).map(|_| c.u64().map(f64::from_bits)).collect::<Option<Vec<f64>>>()?;
        FloatHistogram::from_parts(
            hint,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive,
            negative,
            custom_bounds,
        )
    }

    /// A 64-bit value that stands for the histogram where storage compares a sample with the
    /// newest of its series (an identical repeat is dropped, another value at the same time
    /// is a duplicate): a negative NaN, which no float sample compares equal to unless it
    /// carries the very same bits, and never the staleness marker.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut bytes = Vec::with_capacity(64);
        self.encode(&mut bytes);
        0xfff0_0000_0000_0001 | (xxhash_rust::xxh64::xxh64(&bytes, 0) & 0x000f_ffff_ffff_fffe)
    }
}

/// The upper bound of exponential bucket `index` of `schema` (`base^index`), as Prometheus
/// computes it: exact powers of two below schema 1, `2^(index / 2^schema)` above.
pub fn bucket_bound(schema: i32, index: i32) -> f64 {
    if schema <= 0 {
        let exponent = i64::from(index) << -schema;
        // the last bucket of finite observations ends at the largest float, below the
        // bucket of infinite ones
        if exponent == 1024 {
            return f64::MAX;
        }
        return (2f64).powi(exponent.clamp(-1100, 1100) as i32);
    }
    let per_doubling = 1i32 << schema;
    let (whole, fraction) = (index.div_euclid(per_doubling), index.rem_euclid(per_doubling));
    let mantissa = (2f64).powf(f64::from(fraction) / f64::from(per_doubling));
    mantissa * (2f64).powi(whole)
}

/// The middle of what survives of a bucket between `lower` and `upper`: the arithmetic mean
/// for custom buckets, the geometric one for exponential buckets, and for an infinite bound
/// the finite one (or half of it).
fn trim_midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        return match upper {
            u if u.is_infinite() => 0.0,
            u if u > 0.0 => u / 2.0,
            u => u,
        };
    }
    if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let mean = (lower * upper).abs().sqrt();
    if positive {
        mean
    } else {
        -mean
    }
}

/// What a trim at `rhs` keeps of a bucket it cuts, and the middle of the kept part.
fn trim_bucket(b: &Bucket, rhs: f64, upper: bool, positive: bool, linear: bool) -> (f64, f64) {
    let zero_if_inf = |x: f64| if x.is_infinite() { 0.0 } else { x };
    if b.lower == f64::NEG_INFINITY {
        // only custom buckets start at -Inf: the bucket is taken to start at 0 where it can
        if upper {
            if rhs >= b.upper {
                return (b.count, 0.0);
            }
            if rhs > 0.0 && b.upper > 0.0 && b.upper.is_finite() {
                return (b.count * rhs / b.upper, rhs / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, rhs);
            }
            return (0.0, zero_if_inf(b.upper));
        }
        if rhs >= 0.0 && b.upper > rhs && b.upper.is_finite() {
            return (b.count * (1.0 - rhs / b.upper), (rhs + b.upper) / 2.0);
        }
        return (0.0, zero_if_inf(b.upper));
    }
    if b.upper == f64::INFINITY {
        if upper {
            return (0.0, zero_if_inf(b.lower));
        }
        if rhs >= b.lower {
            return (b.count, rhs);
        }
        return (0.0, zero_if_inf(b.lower));
    }
    let below = if rhs <= b.lower {
        0.0
    } else if rhs >= b.upper {
        b.count
    } else {
        b.count * fraction_below(b, rhs, linear)
    };
    if upper {
        (below, trim_midpoint(b.lower, rhs, positive, linear))
    } else {
        (b.count - below, trim_midpoint(rhs, b.upper, positive, linear))
    }
}

/// The part of a bucket's width at or below `v` (inside its bounds), linear or on a
/// logarithmic scale (exponential buckets), as quantiles and fractions interpolate.
pub fn fraction_below(b: &Bucket, v: f64, linear: bool) -> f64 {
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

/// What a trim at `rhs` keeps of the zero bucket, linearly, and the middle of the kept part;
/// the bucket is taken to end at 0 on a side without buckets.
fn trim_zero_bucket(
    h: &FloatHistogram,
    rhs: f64,
    has_negative: bool,
    has_positive: bool,
    upper: bool,
) -> (f64, f64) {
    let (mut lower, mut up) = (-h.zero_threshold, h.zero_threshold);
    if has_negative && !has_positive {
        up = 0.0;
    }
    if has_positive && !has_negative {
        lower = 0.0;
    }
    if upper {
        if rhs <= lower {
            return (0.0, 0.0);
        }
        if rhs >= up {
            return (h.zero_count, (lower + up) / 2.0);
        }
        (h.zero_count * (rhs - lower) / (up - lower), (lower + rhs) / 2.0)
    } else {
        if rhs <= lower {
            return (h.zero_count, (lower + up) / 2.0);
        }
        if rhs >= up {
            return (0.0, 0.0);
        }
        (h.zero_count * (up - rhs) / (up - lower), (rhs + up) / 2.0)
    }
}

/// One step of Kahan–Neumaier summation: adds `inc` to `sum` with compensation `c` (the
/// compensation is dropped once the sum overflows), as Prometheus's `kahansum.Inc`.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Adds `add`'s buckets to `sum`'s with Kahan compensation in `comp` (all in index order).
fn kahan_buckets(sum: &mut Vec<(i32, f64)>, comp: &mut Vec<(i32, f64)>, add: &[(i32, f64)]) {
    let at = |v: &[(i32, f64)], i: i32| v.binary_search_by_key(&i, |b| b.0).map_or(0.0, |k| v[k].1);
    let mut indexes: Vec<i32> = sum.iter().chain(comp.iter()).chain(add).map(|b| b.0).collect();
    indexes.sort_unstable();
    indexes.dedup();
    let (mut s_out, mut c_out) = (Vec::with_capacity(indexes.len()), Vec::with_capacity(indexes.len()));
    for i in indexes {
        let (s, c) = kahan_inc(at(add, i), at(sum, i), at(comp, i));
        s_out.push((i, s));
        c_out.push((i, c));
    }
    *sum = canonical(s_out);
    *comp = canonical(c_out);
}

/// Whether a bucket of `prev` counts more than the same bucket of `cur` (absent: zero); both
/// in index order.
fn buckets_went_down(prev: &[(i32, f64)], cur: &[(i32, f64)]) -> bool {
    let mut j = 0;
    for &(i, c) in prev {
        while j < cur.len() && cur[j].0 < i {
            j += 1;
        }
        let now = if j < cur.len() && cur[j].0 == i { cur[j].1 } else { 0.0 };
        if c > now {
            return true;
        }
    }
    false
}

/// Buckets in span notation as `(index, count)` pairs.
fn spanned(spans: &[Span], counts: &[f64]) -> Result<Vec<(i32, f64)>, HistogramError> {
    let mut out = Vec::with_capacity(counts.len());
    let (mut index, mut counts) = (0i64, counts.iter());
    for (n, span) in spans.iter().enumerate() {
        index = if n == 0 { i64::from(span.offset) } else { index + i64::from(span.offset) };
        for _ in 0..span.length {
            let Some(&c) = counts.next() else { return Ok(out) };
            // offsets a sender chose must not overflow the index
            let i = i32::try_from(index).map_err(|_| HistogramError::IndexOutOfRange(index))?;
            out.push((i, c));
            index += 1;
        }
    }
    Ok(out)
}

/// Custom bounds only with schema -53, finite and strictly increasing; custom buckets
/// without negative ones and none past the `+Inf` bucket (`end` is one past the highest
/// index).
fn check_custom_buckets(
    schema: i32,
    no_negative: bool,
    end: i64,
    bounds: &[f64],
) -> Result<(), HistogramError> {
    if schema != CUSTOM_BUCKETS_SCHEMA {
        if !bounds.is_empty() {
            return Err(HistogramError::InvalidCustomBuckets("custom bounds need schema -53"));
        }
        return Ok(());
    }
    if !no_negative {
        return Err(HistogramError::InvalidCustomBuckets("custom buckets have no negative buckets"));
    }
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(HistogramError::InvalidCustomBuckets("bounds must be finite and increasing"));
    }
    if end > bounds.len() as i64 + 1 {
        return Err(HistogramError::InvalidCustomBuckets("more buckets than bounds"));
    }
    Ok(())
}

/// An integer histogram's absolute bucket counts from its deltas (each bucket's count is the
/// previous one's plus its delta), refusing a count below zero or past `i64`.
pub fn counts_from_deltas(deltas: &[i64]) -> Result<Vec<f64>, HistogramError> {
    let mut count = 0i64;
    deltas
        .iter()
        .map(|&d| {
            count = count.checked_add(d).filter(|c| *c >= 0).ok_or(HistogramError::BadDelta(d))?;
            Ok(count as f64)
        })
        .collect()
}

/// `(index, count)` pairs sorted by index, equal indexes summed, empty buckets dropped.
fn canonical(mut buckets: Vec<(i32, f64)>) -> Vec<(i32, f64)> {
    buckets.sort_by_key(|b| b.0);
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(buckets.len());
    for (i, c) in buckets {
        match out.last_mut() {
            Some((j, sum)) if *j == i => *sum += c,
            _ => out.push((i, c)),
        }
    }
    out.retain(|b| b.1 != 0.0);
    out
}

/// Canonical buckets `a + sign × b`.
fn merged(a: &[(i32, f64)], b: &[(i32, f64)], sign: f64) -> Vec<(i32, f64)> {
    let mut all = a.to_vec();
    all.extend(b.iter().map(|&(i, c)| (i, sign * c)));
    canonical(all)
}

/// Canonical buckets in span notation: one span per run of consecutive indexes.
fn spans(buckets: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut next = None;
    for &(i, _) in buckets {
        match (next, spans.last_mut()) {
            (Some(n), Some(last)) if n == i => last.length += 1,
            (Some(n), _) => spans.push(Span { offset: i - n, length: 1 }),
            (None, _) => spans.push(Span { offset: i, length: 1 }),
        }
        next = Some(i + 1);
    }
    (spans, buckets.iter().map(|b| b.1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exponential(schema: i32, positive: &[(i32, f64)]) -> FloatHistogram {
        let count = positive.iter().map(|b| b.1).sum();
        FloatHistogram { schema, count, positive: canonical(positive.to_vec()), ..Default::default() }
    }

    #[test]
    fn spans_become_canonical_buckets_and_back() {
        let spans = [Span { offset: -1, length: 3 }, Span { offset: 2, length: 2 }];
        let h = FloatHistogram::from_spans(
            0,
            0.0,
            0.0,
            8.0,
            4.0,
            (&spans, &[1.0, 0.0, 2.0, 3.0, 2.0]),
            (&[], &[]),
            vec![],
        )
        .unwrap();
        // the empty bucket is dropped; the spans come back split around it
        assert_eq!(h.positive_buckets(), &[(-1, 1.0), (1, 2.0), (4, 3.0), (5, 2.0)]);
        let (s, c) = h.positive_spans();
        assert_eq!(
            s,
            vec![
                Span { offset: -1, length: 1 },
                Span { offset: 1, length: 1 },
                Span { offset: 2, length: 2 }
            ]
        );
        assert_eq!(c, vec![1.0, 2.0, 3.0, 2.0]);
        assert!(FloatHistogram::from_spans(9, 0.0, 0.0, 0.0, 0.0, (&[], &[]), (&[], &[]), vec![]).is_err());
    }

    #[test]
    fn bounds_are_powers_of_the_schema_s_base() {
        assert_eq!(bucket_bound(0, 3), 8.0);
        assert_eq!(bucket_bound(-2, 1), 16.0);
        assert_eq!(bucket_bound(1, 2), 2.0);
        assert!((bucket_bound(1, 1) - std::f64::consts::SQRT_2).abs() < 1e-15);
        assert_eq!(bucket_bound(3, -8), 0.5);
    }

    #[test]
    fn a_lower_schema_merges_the_buckets_it_covers() {
        // schema 1 buckets 1..=4 are (1,√2], (√2,2], (2,2√2], (2√2,4]: schema 0's 1, 1, 2, 2
        let mut h = exponential(1, &[(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (-1, 5.0), (0, 6.0)]);
        h.reduce_resolution(0);
        assert_eq!(h.positive_buckets(), &[(0, 11.0), (1, 3.0), (2, 7.0)]);
    }

    #[test]
    fn addition_and_subtraction_meet_at_the_lower_schema() {
        let a = exponential(1, &[(1, 1.0), (2, 2.0)]);
        let b = exponential(0, &[(1, 4.0), (3, 1.0)]);
        let (sum, reconciled) = a.add(&b).unwrap();
        assert!(!reconciled);
        assert_eq!((sum.schema, sum.count), (0, 8.0));
        assert_eq!(sum.positive_buckets(), &[(1, 7.0), (3, 1.0)]);
        let (difference, _) = sum.sub(&b).unwrap();
        assert_eq!(difference.positive_buckets(), &[(1, 3.0)]);
        assert_eq!(difference.count, 3.0);
        // a bucket that subtracts to zero is gone; one that goes negative stays
        let (negative, _) = a.sub(&exponential(1, &[(1, 1.0), (2, 3.0)])).unwrap();
        assert_eq!(negative.positive_buckets(), &[(2, -1.0)]);
        let custom = FloatHistogram { schema: CUSTOM_BUCKETS_SCHEMA, ..Default::default() };
        assert_eq!(a.add(&custom), Err(HistogramError::MixedSchemas));
    }

    #[test]
    fn a_wider_zero_bucket_takes_the_buckets_below_it() {
        let mut h = exponential(0, &[(-1, 1.0), (0, 2.0), (1, 4.0)]);
        h.negative = vec![(0, 3.0)];
        // 0.75 reaches into bucket 0, (0.5, 1]: it is merged and the threshold grows to 1
        h.widen_zero_bucket(0.75);
        assert_eq!(h.zero_threshold, 1.0);
        assert_eq!(h.zero_count, 6.0);
        assert_eq!(h.positive_buckets(), &[(1, 4.0)]);
        assert!(h.negative_buckets().is_empty());
    }

    #[test]
    fn custom_buckets_of_other_bounds_are_reconciled_to_the_shared_ones() {
        let custom = |bounds: Vec<f64>, buckets: &[(i32, f64)]| FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: buckets.iter().map(|b| b.1).sum(),
            positive: buckets.to_vec(),
            custom_bounds: bounds.into(),
            ..Default::default()
        };
        let a = custom(vec![1.0, 2.0, 5.0], &[(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]);
        let b = custom(vec![2.0, 5.0], &[(0, 1.0), (1, 1.0), (2, 1.0)]);
        let (sum, reconciled) = a.add(&b).unwrap();
        assert!(reconciled);
        assert_eq!(sum.custom_bounds(), &[2.0, 5.0]);
        assert_eq!(sum.positive_buckets(), &[(0, 4.0), (1, 4.0), (2, 5.0)]);
        let (same, reconciled) = a.add(&a).unwrap();
        assert!(!reconciled);
        assert_eq!(same.positive_buckets()[3], (3, 8.0));
    }

    #[test]
    fn classic_buckets_become_custom_buckets_of_the_same_bounds() {
        let h = FloatHistogram::from_classic(
            &[(0.5, 2.0), (0.1, 1.0), (f64::INFINITY, 5.0), (1.0, 2.0)],
            Some(5.0),
            3.5,
        )
        .unwrap();
        assert!(h.uses_custom_buckets());
        assert_eq!(h.custom_bounds(), &[0.1, 0.5, 1.0]);
        // (-inf, 0.1]: 1, (0.1, 0.5]: 1, (0.5, 1]: 0 (dropped), (1, +Inf): 3
        assert_eq!(h.positive_buckets(), &[(0, 1.0), (1, 1.0), (3, 3.0)]);
        assert_eq!((h.count, h.sum), (5.0, 3.5));
        // no +Inf bucket: the count fills it; no count: the highest bucket's
        let h = FloatHistogram::from_classic(&[(1.0, 2.0)], Some(3.0), 0.0).unwrap();
        assert_eq!(h.positive_buckets(), &[(0, 2.0), (1, 1.0)]);
        assert_eq!(FloatHistogram::from_classic(&[(1.0, 2.0)], None, 0.0).unwrap().count, 2.0);
        let err = |b: &[(f64, f64)], c| FloatHistogram::from_classic(b, c, 0.0).unwrap_err();
        assert_eq!(
            err(&[(1.0, 3.0), (2.0, 2.0)], None),
            HistogramError::NotCumulative { le: 2.0, count: 2.0 }
        );
        assert_eq!(err(&[], None), HistogramError::MissingCount);
        assert_eq!(err(&[(f64::NAN, 1.0)], None), HistogramError::NaNBound);
        assert_eq!(
            err(&[(f64::INFINITY, 4.0)], Some(5.0)),
            HistogramError::CountMismatch { count: 5.0, infinite: 4.0 }
        );
    }

    #[test]
    fn buckets_list_bounds_from_the_lowest_up() {
        let h = FloatHistogram::from_spans(
            0,
            0.5,
            3.0,
            10.0,
            0.0,
            (&[Span { offset: 0, length: 2 }], &[1.0, 2.0]),
            (&[Span { offset: 1, length: 1 }], &[4.0]),
            Vec::new(),
        )
        .unwrap();
        let got: Vec<(f64, f64, f64)> = h.buckets().iter().map(|b| (b.lower, b.upper, b.count)).collect();
        // bucket 0 (0.5, 1] starts at the zero threshold; negative bucket 1 is [-2, -1)
        assert_eq!(got, vec![(-2.0, -1.0, 4.0), (-0.5, 0.5, 3.0), (0.5, 1.0, 1.0), (1.0, 2.0, 2.0)]);
        let custom =
            FloatHistogram::from_classic(&[(1.0, 2.0), (5.0, 3.0), (f64::INFINITY, 4.0)], None, 9.0).unwrap();
        let got: Vec<(f64, f64, bool)> =
            custom.buckets().iter().map(|b| (b.lower, b.upper, b.lower_inclusive)).collect();
        assert_eq!(got, vec![(f64::NEG_INFINITY, 1.0, true), (1.0, 5.0, false), (5.0, f64::INFINITY, false)]);
    }

    #[test]
    fn scaling_multiplies_every_count_and_the_sum() {
        let mut h = exponential(0, &[(1, 2.0)]);
        h.sum = 3.0;
        h.scale(0.5);
        assert_eq!((h.count, h.sum, h.positive_buckets()), (1.0, 1.5, &[(1, 1.0)][..]));
        h.scale(0.0);
        assert!(h.positive_buckets().is_empty());
    }
}
