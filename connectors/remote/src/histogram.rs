//! Remote write's native histograms (`prometheus.Histogram`, the same message in 1.0 and
//! 2.0): integer histograms with delta-encoded bucket counts, or float histograms with
//! absolute ones, in span notation, converted to and from storage's [`FloatHistogram`].

use promflow_storage::native_histogram::{
    counts_from_deltas, CounterResetHint, FloatHistogram, HistogramError, Span,
};

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
    /// When the histogram's count began (ms since the epoch, 0 for unknown; remote write
    /// 2.0 only).
    #[prost(int64, tag = "17")]
    pub start_timestamp: i64,
}

fn spans(s: &[BucketSpan]) -> Vec<Span> {
    s.iter().map(|s| Span { offset: s.offset, length: s.length }).collect()
}

impl Histogram {
    /// The histogram as storage keeps it, after Prometheus's checks: spans that cover exactly
    /// the buckets given, no negative count, custom bounds (only with schema -53) finite and
    /// strictly increasing, and an integer histogram's count its buckets' observations.
    pub fn to_float_histogram(&self) -> Result<FloatHistogram, Error> {
        let invalid = |e: HistogramError| Error::InvalidHistogram(e.to_string());
        let (positive, negative) = if self.count_float.is_some() {
            (self.positive_counts.clone(), self.negative_counts.clone())
        } else {
            (
                counts_from_deltas(&self.positive_deltas).map_err(invalid)?,
                counts_from_deltas(&self.negative_deltas).map_err(invalid)?,
            )
        };
        let count = self.count_float.unwrap_or(self.count_int.unwrap_or(0) as f64);
        let zero_count = self.zero_count_float.unwrap_or(self.zero_count_int.unwrap_or(0) as f64);
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
        .map_err(invalid)?;
        h.check_counts().map_err(invalid)?;
        if self.count_float.is_none() {
            h.check_integer_counts().map_err(invalid)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An integer histogram of a zero bucket of 1 and buckets of 2 and 3.
    fn integer(count: u64, sum: f64) -> Histogram {
        Histogram {
            count_int: Some(count),
            sum,
            zero_threshold: 0.001,
            zero_count_int: Some(1),
            positive_spans: vec![BucketSpan { offset: 0, length: 2 }],
            positive_deltas: vec![2, 1],
            ..Histogram::default()
        }
    }

    #[test]
    fn an_integer_histograms_count_is_its_buckets_observations() {
        assert!(integer(6, 1.5).to_float_histogram().is_ok());
        let e = integer(7, 1.5).to_float_histogram().unwrap_err().to_string();
        assert!(e.contains("6 observations found in buckets, but the Count field is 7"), "{e}");
        assert!(integer(5, 1.5).to_float_histogram().is_err());
        // NaN observations count without landing in a bucket
        assert!(integer(7, f64::NAN).to_float_histogram().is_ok());
        let e = integer(5, f64::NAN).to_float_histogram().unwrap_err().to_string();
        assert!(e.contains("should be at least"), "{e}");
        // float histograms are not held to it, as in Prometheus
        let float = Histogram {
            count_int: None,
            count_float: Some(7.0),
            zero_count_int: None,
            zero_count_float: Some(1.0),
            positive_deltas: vec![],
            positive_counts: vec![2.0, 3.0],
            ..integer(0, 1.5)
        };
        assert!(float.to_float_histogram().is_ok());
    }
}
