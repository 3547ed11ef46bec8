//! Remote write's native histograms (`prometheus.Histogram`, the same message in 1.0 and
//! 2.0): integer histograms with delta-encoded bucket counts, or float histograms with
//! absolute ones, in span notation, converted to and from storage's [`FloatHistogram`].

use promflow_storage::native_histogram::{CounterResetHint, FloatHistogram, Span, CUSTOM_BUCKETS_SCHEMA};

use crate::Error;

/// `prometheus.BucketSpan`: a run of buckets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    /// Gap to the previous span, or the first bucket's index.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Buckets in the run.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `prometheus.Histogram`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// The count of an integer histogram.
    #[prost(uint64, optional, tag = "1")]
    pub count_int: Option<u64>,
    /// The count of a float histogram.
    #[prost(double, optional, tag = "2")]
    pub count_float: Option<f64>,
    /// The sum of the observations.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// The bucket schema (-4 to 8, or -53 for custom bounds).
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// The zero bucket's threshold.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// The zero bucket's count, integer histogram.
    #[prost(uint64, optional, tag = "6")]
    pub zero_count_int: Option<u64>,
    /// The zero bucket's count, float histogram.
    #[prost(double, optional, tag = "7")]
    pub zero_count_float: Option<f64>,
    /// Negative buckets' spans.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Negative buckets' counts as deltas (integer histogram).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative buckets' absolute counts (float histogram).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Positive buckets' spans.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    /// Positive buckets' counts as deltas (integer histogram).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive buckets' absolute counts (float histogram).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// 0 unknown, 1 counter reset, 2 no counter reset, 3 gauge.
    #[prost(int32, tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Custom buckets' upper bounds (schema -53).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

fn invalid(what: String) -> Error {
    Error::InvalidHistogram(what)
}

/// Absolute counts from an integer histogram's deltas.
fn from_deltas(deltas: &[i64]) -> Result<Vec<f64>, Error> {
    let mut count = 0i64;
    deltas
        .iter()
        .map(|&d| {
            count = count.checked_add(d).ok_or_else(|| invalid("bucket count overflows".into()))?;
            if count < 0 {
                return Err(invalid(format!("bucket has a negative count {count}")));
            }
            Ok(count as f64)
        })
        .collect()
}

fn spans(s: &[BucketSpan]) -> Vec<Span> {
    s.iter().map(|s| Span { offset: s.offset, length: s.length }).collect()
}

impl Histogram {
    /// The histogram as storage keeps it, after Prometheus's checks: spans that cover exactly
    /// the buckets given, no negative count, custom bounds (only with schema -53) finite and
    /// strictly increasing.
    pub fn to_float_histogram(&self) -> Result<FloatHistogram, Error> {
        let float = self.count_float.is_some();
        let (positive, negative) = if float {
            (self.positive_counts.clone(), self.negative_counts.clone())
        } else {
            (from_deltas(&self.positive_deltas)?, from_deltas(&self.negative_deltas)?)
        };
        for (side, spans, counts) in
            [("positive", &self.positive_spans, &positive), ("negative", &self.negative_spans, &negative)]
        {
            let covered: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
            if covered != counts.len() as u64 {
                return Err(invalid(format!(
                    "{side} spans cover {covered} buckets, {} bucket counts are given",
                    counts.len()
                )));
            }
            if let Some(c) = counts.iter().find(|c| **c < 0.0) {
                return Err(invalid(format!("{side} bucket has a negative count {c}")));
            }
        }
        let count = self.count_float.unwrap_or(self.count_int.unwrap_or(0) as f64);
        let zero_count = self.zero_count_float.unwrap_or(self.zero_count_int.unwrap_or(0) as f64);
        if count < 0.0 || zero_count < 0.0 {
            return Err(invalid("negative count".into()));
        }
        let custom = self.schema == CUSTOM_BUCKETS_SCHEMA;
        if custom {
            if !self.negative_spans.is_empty() {
                return Err(invalid("custom buckets have no negative buckets".into()));
            }
            if self.custom_values.iter().any(|b| !b.is_finite())
                || self.custom_values.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(invalid("custom bucket bounds must be finite and increasing".into()));
            }
            let last =
                self.positive_spans.iter().map(|s| i64::from(s.offset) + i64::from(s.length)).sum::<i64>();
            if last > self.custom_values.len() as i64 + 1 {
                return Err(invalid("more custom buckets than bounds".into()));
            }
        } else if !self.custom_values.is_empty() {
            return Err(invalid(format!("schema {} has no custom bounds", self.schema)));
        }
        let mut h = FloatHistogram::from_spans(
            self.schema,
            self.zero_threshold,
            zero_count,
            count,
            self.sum,
            (&spans(&self.positive_spans), &positive),
            (&spans(&self.negative_spans), &negative),
            self.custom_values.clone(),
        )
        .map_err(|e| invalid(e.to_string()))?;
        h.hint = match self.reset_hint {
            1 => CounterResetHint::CounterReset,
            2 => CounterResetHint::NotCounterReset,
            3 => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        };
        Ok(h)
    }

    /// A float histogram's message at `timestamp`.
    pub fn from_float_histogram(timestamp: i64, h: &FloatHistogram) -> Histogram {
        let (pos_spans, pos_counts) = h.positive_spans();
        let (neg_spans, neg_counts) = h.negative_spans();
        let to_msg =
            |s: Vec<Span>| s.into_iter().map(|s| BucketSpan { offset: s.offset, length: s.length }).collect();
        Histogram {
            count_float: Some(h.count),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count_float: Some(h.zero_count),
            negative_spans: to_msg(neg_spans),
            negative_counts: neg_counts,
            positive_spans: to_msg(pos_spans),
            positive_counts: pos_counts,
            reset_hint: match h.hint {
                CounterResetHint::Unknown => 0,
                CounterResetHint::CounterReset => 1,
                CounterResetHint::NotCounterReset => 2,
                CounterResetHint::Gauge => 3,
            },
            timestamp,
            custom_values: h.custom_bounds().to_vec(),
            ..Histogram::default()
        }
    }
}
