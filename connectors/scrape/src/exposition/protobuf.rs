//! The Prometheus protobuf exposition format (`PrometheusProto`): a body of
//! `io.prometheus.client.MetricFamily` messages, each preceded by its length as a varint.
//! It is the one format that carries native histograms.
//!
//! A family becomes series as Prometheus 3's protobuf parser makes them: counters, gauges and
//! untyped metrics one series each under the family's name (no `_total` is added); a summary
//! its `quantile` series, `_sum` and `_count`; a classic histogram its `_bucket` series (with
//! a `+Inf` bucket when the message has none), `_sum` and `_count`. A histogram that has
//! native buckets (any span, a zero threshold or a zero count) is one native histogram
//! series when native histograms are scraped, plus its classic series if it has classic
//! buckets and they are asked for; when native histograms are not scraped, it is read as a
//! classic histogram.

use std::borrow::Cow;

use promflow_storage::gofmt::format_openmetrics_float;
use promflow_storage::native_histogram::{counts_from_deltas, CounterResetHint, FloatHistogram, Span};
use promflow_storage::{Labels, METRIC_NAME};
use prost::Message;

use super::common::{canonical, MetadataSet};
use super::{
    Exposition, HistogramOptions, MetricType, ParseError, ParsedExemplar, ParsedHistogram, ParsedSample,
    Place,
};

/// The messages of `io.prometheus.client` (client_model's `metrics.proto`), for decoding
/// scrapes and for writing test targets.
pub mod wire {
    /// `LabelPair`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        /// The label's name.
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// The label's value.
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        /// Seconds since the epoch.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Nanoseconds within the second.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `Gauge`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        /// The value.
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }

    /// `Counter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        /// The value.
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
        /// An exemplar of the counter.
        #[prost(message, optional, tag = "2")]
        pub exemplar: Option<Exemplar>,
        /// When the counter started.
        #[prost(message, optional, tag = "3")]
        pub created_timestamp: Option<Timestamp>,
    }

    /// `Quantile`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantile {
        /// The quantile (0 to 1).
        #[prost(double, optional, tag = "1")]
        pub quantile: Option<f64>,
        /// Its value.
        #[prost(double, optional, tag = "2")]
        pub value: Option<f64>,
    }

    /// `Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        /// Observations.
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        /// Their sum.
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        /// The quantiles.
        #[prost(message, repeated, tag = "3")]
        pub quantile: Vec<Quantile>,
        /// When the summary started.
        #[prost(message, optional, tag = "4")]
        pub created_timestamp: Option<Timestamp>,
    }

    /// `Untyped`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Untyped {
        /// The value.
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }

    /// `Histogram`: classic buckets, native buckets, or both.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        /// Observations (integer histogram).
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        /// Observations (float histogram); overrides `sample_count` when above 0.
        #[prost(double, optional, tag = "4")]
        pub sample_count_float: Option<f64>,
        /// Their sum.
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        /// Classic buckets, by increasing upper bound; the `+Inf` one is optional.
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        /// When the histogram started.
        #[prost(message, optional, tag = "15")]
        pub created_timestamp: Option<Timestamp>,
        /// The native bucket schema.
        #[prost(sint32, optional, tag = "5")]
        pub schema: Option<i32>,
        /// The zero bucket's threshold.
        #[prost(double, optional, tag = "6")]
        pub zero_threshold: Option<f64>,
        /// The zero bucket's count (integer histogram).
        #[prost(uint64, optional, tag = "7")]
        pub zero_count: Option<u64>,
        /// The zero bucket's count (float histogram).
        #[prost(double, optional, tag = "8")]
        pub zero_count_float: Option<f64>,
        /// Negative buckets' spans.
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        /// Negative buckets as deltas (integer histogram).
        #[prost(sint64, repeated, packed = "false", tag = "10")]
        pub negative_delta: Vec<i64>,
        /// Negative buckets' absolute counts (float histogram).
        #[prost(double, repeated, packed = "false", tag = "11")]
        pub negative_count: Vec<f64>,
        /// Positive buckets' spans.
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        /// Positive buckets as deltas (integer histogram).
        #[prost(sint64, repeated, packed = "false", tag = "13")]
        pub positive_delta: Vec<i64>,
        /// Positive buckets' absolute counts (float histogram).
        #[prost(double, repeated, packed = "false", tag = "14")]
        pub positive_count: Vec<f64>,
        /// Exemplars of a native histogram.
        #[prost(message, repeated, tag = "16")]
        pub exemplars: Vec<Exemplar>,
    }

    /// `Bucket`: one classic bucket.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        /// Observations up to the bound (integer).
        #[prost(uint64, optional, tag = "1")]
        pub cumulative_count: Option<u64>,
        /// Observations up to the bound (float); overrides the integer when above 0.
        #[prost(double, optional, tag = "4")]
        pub cumulative_count_float: Option<f64>,
        /// The inclusive upper bound.
        #[prost(double, optional, tag = "2")]
        pub upper_bound: Option<f64>,
        /// An exemplar in the bucket.
        #[prost(message, optional, tag = "3")]
        pub exemplar: Option<Exemplar>,
    }

    /// `BucketSpan`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        /// Gap to the previous span, or the first bucket's index.
        #[prost(sint32, optional, tag = "1")]
        pub offset: Option<i32>,
        /// Buckets in the span.
        #[prost(uint32, optional, tag = "2")]
        pub length: Option<u32>,
    }

    /// `Exemplar`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        /// Its labels (a trace ID, typically).
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        /// The observed value.
        #[prost(double, optional, tag = "2")]
        pub value: Option<f64>,
        /// When it was observed.
        #[prost(message, optional, tag = "3")]
        pub timestamp: Option<Timestamp>,
    }

    /// `Metric`: one series (or one summary or histogram) of a family.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        /// Its labels, without the name.
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        /// Set for a gauge.
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Gauge>,
        /// Set for a counter.
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Counter>,
        /// Set for a summary.
        #[prost(message, optional, tag = "4")]
        pub summary: Option<Summary>,
        /// Set for an untyped metric.
        #[prost(message, optional, tag = "5")]
        pub untyped: Option<Untyped>,
        /// Set for a histogram or gauge histogram.
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
        /// An explicit timestamp in milliseconds; 0 means none.
        #[prost(int64, optional, tag = "6")]
        pub timestamp_ms: Option<i64>,
    }

    /// `MetricType`'s values.
    pub mod metric_type {
        /// `COUNTER`.
        pub const COUNTER: i32 = 0;
        /// `GAUGE`.
        pub const GAUGE: i32 = 1;
        /// `SUMMARY`.
        pub const SUMMARY: i32 = 2;
        /// `UNTYPED`.
        pub const UNTYPED: i32 = 3;
        /// `HISTOGRAM`.
        pub const HISTOGRAM: i32 = 4;
        /// `GAUGE_HISTOGRAM`.
        pub const GAUGE_HISTOGRAM: i32 = 5;
    }

    /// `MetricFamily`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        /// The family's name.
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// Its help text.
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        /// One of [`metric_type`].
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
        /// Its metrics.
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
        /// Its unit.
        #[prost(string, optional, tag = "5")]
        pub unit: Option<String>,
    }

    /// A scrape body: each family length-delimited, one after the other.
    pub fn encode_delimited(families: &[MetricFamily]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in families {
            prost::Message::encode_length_delimited(f, &mut out).expect("a Vec grows to hold any message");
        }
        out
    }
}

/// Parses a whole protobuf body.
pub(super) fn parse(mut body: &[u8], opts: &HistogramOptions) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut metadata = MetadataSet::default();
    let mut family_no = 0;
    while !body.is_empty() {
        family_no += 1;
        let error = |message: String| ParseError { place: Place::MetricFamily(family_no), message };
        let len = prost::decode_length_delimiter(&mut body).map_err(|e| error(e.to_string()))?;
        if len > body.len() {
            return Err(error(format!("message of {len} bytes, {} left in the body", body.len())));
        }
        let (message, rest) = body.split_at(len);
        body = rest;
        let family = wire::MetricFamily::decode(message).map_err(|e| error(e.to_string()))?;
        read_family(&family, opts, &mut out, &mut metadata).map_err(error)?;
    }
    out.metadata = metadata.into_vec();
    Ok(out)
}

fn metric_type(code: i32) -> Option<MetricType> {
    use wire::metric_type::*;
    Some(match code {
        COUNTER => MetricType::Counter,
        GAUGE => MetricType::Gauge,
        SUMMARY => MetricType::Summary,
        UNTYPED => MetricType::Unknown,
        HISTOGRAM => MetricType::Histogram,
        GAUGE_HISTOGRAM => MetricType::GaugeHistogram,
        _ => return None,
    })
}

fn read_family(
    f: &wire::MetricFamily,
    opts: &HistogramOptions,
    out: &mut Exposition,
    metadata: &mut MetadataSet,
) -> Result<(), String> {
    let name = f.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err("metric family without a name".into());
    }
    let code = f.r#type.unwrap_or(wire::metric_type::COUNTER);
    let mtype = metric_type(code).ok_or_else(|| format!("unknown metric type {code} for metric {name:?}"))?;
    let unit = f.unit.as_deref().unwrap_or("");
    if !unit.is_empty() {
        let stem = match name.strip_suffix("_total") {
            Some(stem) if mtype == MetricType::Counter => stem,
            _ => name,
        };
        if !stem.strip_suffix(unit).is_some_and(|s| s.ends_with('_')) {
            return Err(format!("unit {unit:?} not a suffix of metric {name:?}"));
        }
    }
    if f.metric.is_empty() {
        return Ok(());
    }
    let entry = metadata.entry(name);
    entry.metric_type = mtype;
    entry.help = f.help.clone().unwrap_or_default();
    entry.unit = unit.to_string();
    // what a metric without its type's message reads as (all fields unset)
    let defaults = Defaults::default();
    for m in &f.metric {
        // 0 stands for "no timestamp", as in Prometheus: proto2's optional int64 is set by
        // some clients to 0 when they mean none
        let timestamp_ms = m.timestamp_ms.filter(|t| *t != 0);
        let series =
            |suffix: &str, extra: Option<(&str, String)>| series_labels(name, suffix, &m.label, extra);
        let start_ms = match mtype {
            MetricType::Counter => m.counter.as_ref().and_then(|c| c.created_timestamp.as_ref()),
            MetricType::Summary => m.summary.as_ref().and_then(|s| s.created_timestamp.as_ref()),
            MetricType::Histogram => m.histogram.as_ref().and_then(|h| h.created_timestamp.as_ref()),
            _ => None,
        }
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
        let mut float = |labels: Labels, value: f64, exemplar: Option<&wire::Exemplar>| {
            let exemplar = exemplar.map(parsed_exemplar);
            out.samples.push(ParsedSample {
                labels,
                timestamp_ms,
                value: canonical(value),
                start_ms,
                exemplar,
            })
        };
        match mtype {
            MetricType::Counter => {
                let counter = m.counter.as_ref().unwrap_or(&defaults.counter);
                float(series("", None)?, counter.value.unwrap_or(0.0), counter.exemplar.as_ref())
            }
            MetricType::Gauge => {
                float(series("", None)?, m.gauge.as_ref().and_then(|g| g.value).unwrap_or(0.0), None)
            }
            MetricType::Unknown => {
                float(series("", None)?, m.untyped.as_ref().and_then(|u| u.value).unwrap_or(0.0), None)
            }
            MetricType::Summary => {
                let s = m.summary.as_ref().unwrap_or(&defaults.summary);
                float(series("_count", None)?, s.sample_count.unwrap_or(0) as f64, None);
                float(series("_sum", None)?, s.sample_sum.unwrap_or(0.0), None);
                for q in &s.quantile {
                    let quantile = format_openmetrics_float(q.quantile.unwrap_or(0.0));
                    float(series("", Some(("quantile", quantile)))?, q.value.unwrap_or(0.0), None);
                }
            }
            MetricType::Histogram | MetricType::GaugeHistogram => {
                let h = m.histogram.as_ref().unwrap_or(&defaults.histogram);
                let native = opts.native && has_native_buckets(h);
                if native {
                    let mut histogram = native_histogram(h)?;
                    if mtype == MetricType::GaugeHistogram {
                        histogram.hint = CounterResetHint::Gauge;
                    }
                    // a native histogram's exemplars need timestamps, as in Prometheus: its own,
                    // or else its classic buckets'
                    let own: Vec<&wire::Exemplar> = h.exemplars.iter().collect();
                    let from_buckets: Vec<&wire::Exemplar> =
                        h.bucket.iter().filter_map(|b| b.exemplar.as_ref()).collect();
                    let exemplars = if own.is_empty() { from_buckets } else { own }
                        .into_iter()
                        .filter(|e| e.timestamp.is_some())
                        .map(parsed_exemplar)
                        .collect();
                    out.histograms.push(ParsedHistogram {
                        labels: series("", None)?,
                        timestamp_ms,
                        start_ms,
                        histogram,
                        exemplars,
                    });
                }
                if !native || (opts.keep_classic && !h.bucket.is_empty()) {
                    let count = h
                        .sample_count_float
                        .filter(|c| *c > 0.0)
                        .unwrap_or(h.sample_count.unwrap_or(0) as f64);
                    float(series("_count", None)?, count, None);
                    float(series("_sum", None)?, h.sample_sum.unwrap_or(0.0), None);
                    let mut has_infinite = false;
                    for b in &h.bucket {
                        let le = b.upper_bound.unwrap_or(0.0);
                        has_infinite |= le == f64::INFINITY;
                        let cumulative = b
                            .cumulative_count_float
                            .filter(|c| *c > 0.0)
                            .unwrap_or(b.cumulative_count.unwrap_or(0) as f64);
                        let labels = series("_bucket", Some(("le", format_openmetrics_float(le))))?;
                        float(labels, cumulative, b.exemplar.as_ref());
                    }
                    if !has_infinite {
                        float(series("_bucket", Some(("le", "+Inf".to_string())))?, count, None);
                    }
                }
            }
            MetricType::Info | MetricType::StateSet => unreachable!("not a protobuf metric type"),
        }
    }
    Ok(())
}

/// The empty messages a metric without one reads as.
#[derive(Default)]
struct Defaults {
    counter: wire::Counter,
    summary: wire::Summary,
    histogram: wire::Histogram,
}

fn parsed_exemplar(e: &wire::Exemplar) -> ParsedExemplar {
    let labels = Labels::from_pairs(
        e.label.iter().map(|l| (l.name.clone().unwrap_or_default(), l.value.clone().unwrap_or_default())),
    );
    let timestamp_ms = e.timestamp.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    ParsedExemplar { labels, value: e.value.unwrap_or(0.0), timestamp_ms }
}

/// Prometheus's test for native buckets: a histogram without any span, zero threshold or
/// zero count is a classic one (an instrumentation library marks an empty native
/// histogram with an empty span).
fn has_native_buckets(h: &wire::Histogram) -> bool {
    !h.positive_span.is_empty()
        || !h.negative_span.is_empty()
        || h.zero_threshold.unwrap_or(0.0) > 0.0
        || h.zero_count.unwrap_or(0) > 0
        || h.zero_count_float.unwrap_or(0.0) > 0.0
}

/// The native part of a histogram message: a float histogram when it has a float count
/// or float zero count above 0, as Prometheus decides, an integer one otherwise.
fn native_histogram(h: &wire::Histogram) -> Result<FloatHistogram, String> {
    let float = h.sample_count_float.unwrap_or(0.0) > 0.0 || h.zero_count_float.unwrap_or(0.0) > 0.0;
    let spans = |s: &[wire::BucketSpan]| -> Vec<Span> {
        s.iter().map(|s| Span { offset: s.offset.unwrap_or(0), length: s.length.unwrap_or(0) }).collect()
    };
    let (positive, negative, count, zero_count) = if float {
        (
            h.positive_count.clone(),
            h.negative_count.clone(),
            h.sample_count_float.unwrap_or(0.0),
            h.zero_count_float.unwrap_or(0.0),
        )
    } else {
        (
            counts_from_deltas(&h.positive_delta).map_err(|e| e.to_string())?,
            counts_from_deltas(&h.negative_delta).map_err(|e| e.to_string())?,
            h.sample_count.unwrap_or(0) as f64,
            h.zero_count.unwrap_or(0) as f64,
        )
    };
    let histogram = FloatHistogram::from_spans(
        h.schema.unwrap_or(0),
        h.zero_threshold.unwrap_or(0.0),
        zero_count,
        count,
        h.sample_sum.unwrap_or(0.0),
        (&spans(&h.positive_span), &positive),
        (&spans(&h.negative_span), &negative),
        Vec::new(),
    )
    .map_err(|e| e.to_string())?;
    histogram.check_counts().map_err(|e| e.to_string())?;
    if !float {
        histogram.check_integer_counts().map_err(|e| e.to_string())?;
    }
    Ok(histogram)
}

/// A series' labels: the family name with `suffix`, the metric's labels (empty values
/// dropped), and the `le` or `quantile` label.
fn series_labels(
    family: &str,
    suffix: &str,
    pairs: &[wire::LabelPair],
    extra: Option<(&str, String)>,
) -> Result<Labels, String> {
    let mut seen: Vec<&str> = Vec::with_capacity(pairs.len() + 1);
    for p in pairs {
        let name = p.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(format!("metric {family:?} has a label without a name"));
        }
        if name == METRIC_NAME || seen.contains(&name) || extra.as_ref().is_some_and(|(n, _)| *n == name) {
            return Err(format!("metric {family:?} has the label {name:?} twice"));
        }
        seen.push(name);
    }
    let name: Cow<'_, str> =
        if suffix.is_empty() { Cow::Borrowed(family) } else { Cow::Owned(format!("{family}{suffix}")) };
    let pairs = pairs.iter().map(|p| {
        (Cow::Borrowed(p.name.as_deref().unwrap_or("")), Cow::Borrowed(p.value.as_deref().unwrap_or("")))
    });
    let extra = extra.map(|(n, v)| (Cow::Borrowed(n), Cow::Owned(v)));
    Ok(Labels::from_pairs(std::iter::once((Cow::Borrowed(METRIC_NAME), name)).chain(pairs).chain(extra)))
}
