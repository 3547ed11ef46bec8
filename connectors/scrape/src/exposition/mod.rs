//! Parsers for the exposition formats a scrape target may answer with:
//!
//! * the Prometheus text format 0.0.4 (and 1.0.0, which adds quoted UTF-8 names such as
//!   `{"my.metric", "a.b"="c"} 1`), lenient like Prometheus's own parser;
//! * OpenMetrics 1.0, strict: single spaces, no blank lines or free comments, `# EOF` required;
//! * the protobuf format (`PrometheusProto`), the one that carries native histograms.
//!
//! [`parse`] reads a whole body into an [`Exposition`]: every sample with its full label set
//! (including `__name__`), plus the HELP / TYPE / UNIT metadata per metric family. Behaviour
//! follows Prometheus 3's `model/textparse`:
//!
//! * `le` labels (after a histogram `# TYPE`) and `quantile` labels (after a summary `# TYPE`)
//!   are normalised to canonical float text (`le="1"` → `le="1.0"`, `le="1000000"` → `le="1e+06"`);
//! * OpenMetrics `_created` samples are kept as ordinary series ([`read_created_lines`] makes
//!   them start timestamps instead), exemplars are kept with their sample, timestamps in float
//!   seconds become milliseconds; protobuf created timestamps are the samples' start
//!   timestamps;
//! * values use Go's `ParseFloat` syntax (`NaN`, `+Inf`, `-Inf`, `Inf`, exponents), with hex
//!   floats and `_` refused;
//! * a NaN value is stored as the canonical NaN, never as the staleness marker.
//!
//! Any malformed input, including HTML error pages and binary data, yields a [`ParseError`]
//! naming the line (or the protobuf message); the parsers never panic.
//!
//! [`HistogramOptions`] carry a job's native-histogram settings: whether native histograms
//! are read, whether classic buckets are kept beside them, and whether classic histograms
//! become histograms with custom buckets (`convert_classic_histograms_to_nhcb`, any format).

mod common;
mod created;
mod nhcb;
mod openmetrics;
pub mod protobuf;
mod text;

#[cfg(test)]
mod tests;

use promflow_storage::native_histogram::FloatHistogram;
use promflow_storage::Labels;

/// The exposition format of a scrape body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4 / 1.0.0 (`text/plain`).
    #[default]
    Text,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages
    /// (`application/vnd.google.protobuf`).
    Protobuf,
}

/// Picks the format from a scrape response's `Content-Type`: `application/openmetrics-text`
/// (any parameters, any case) is OpenMetrics, `application/vnd.google.protobuf` protobuf;
/// `text/plain`, anything else, or a missing header is the Prometheus text format.
pub fn format_from_content_type(ct: Option<&str>) -> Format {
    let Some(ct) = ct else { return Format::Text };
    let media_type = ct.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
        Format::OpenMetrics
    } else if media_type.eq_ignore_ascii_case("application/vnd.google.protobuf") {
        Format::Protobuf
    } else {
        Format::Text
    }
}

/// How a scrape reads histograms: a job's `scrape_native_histograms`,
/// `always_scrape_classic_histograms` and `convert_classic_histograms_to_nhcb`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramOptions {
    /// A protobuf histogram with native buckets is read as a native histogram; otherwise
    /// it is read as a classic one.
    pub native: bool,
    /// The classic buckets of a histogram read as a native one, or converted to custom
    /// buckets, are kept as `_bucket`/`_sum`/`_count` series too.
    pub keep_classic: bool,
    /// A classic histogram becomes a native histogram with custom buckets (schema -53).
    pub classic_to_custom_buckets: bool,
}

/// One native histogram read from an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedHistogram {
    /// The series' labels, including `__name__`.
    pub labels: Labels,
    /// The explicit timestamp in milliseconds, if the metric carried one.
    pub timestamp_ms: Option<i64>,
    /// The histogram.
    pub histogram: FloatHistogram,
    /// When its count began (ms): a protobuf `created_timestamp`, or an OpenMetrics `_created`
    /// line once [`read_created_lines`] has read it.
    pub start_ms: Option<i64>,
    /// Its exemplars (a protobuf native histogram's, or a converted classic histogram's
    /// buckets').
    pub exemplars: Vec<ParsedExemplar>,
}

/// One sample read from an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// The series' labels, including `__name__`; labels with empty values are dropped.
    pub labels: Labels,
    /// The explicit timestamp in milliseconds, if the line carried one (OpenMetrics seconds
    /// are converted, truncating toward zero as Prometheus does).
    pub timestamp_ms: Option<i64>,
    /// The sample value; NaN is always the canonical NaN, never a staleness marker.
    pub value: f64,
    /// When its count began (ms), for a counter's, histogram's or summary's sample: a
    /// protobuf `created_timestamp`, or an OpenMetrics `_created` line once
    /// [`read_created_lines`] has read it.
    pub start_ms: Option<i64>,
    /// The sample's exemplar (OpenMetrics, and a protobuf counter or classic bucket).
    pub exemplar: Option<ParsedExemplar>,
}

/// An exemplar read from an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedExemplar {
    /// Its labels (a trace ID, typically).
    pub labels: Labels,
    /// The observed value.
    pub value: f64,
    /// When it was observed (ms), if the exposition says.
    pub timestamp_ms: Option<i64>,
}

/// A metric family type, as declared by a `# TYPE` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram` (classic buckets).
    Histogram,
    /// `gaugehistogram` (OpenMetrics only).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics only).
    Info,
    /// `stateset` (OpenMetrics only).
    StateSet,
    /// `unknown` (OpenMetrics), `untyped` (text format), or no `# TYPE` line at all.
    #[default]
    Unknown,
}

impl MetricType {
    /// The name Prometheus's metadata API uses: `counter`, `gauge`, `histogram`,
    /// `gaugehistogram`, `summary`, `info`, `stateset` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for MetricType {
    /// Writes [`MetricType::as_str`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata of one metric family, merged from its `# HELP`, `# TYPE` and `# UNIT` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricMetadata {
    /// The family name as written on the metadata lines (OpenMetrics family names exclude
    /// suffixes such as `_total`; text-format names are usually the full sample name).
    pub family: String,
    /// The declared type; [`MetricType::Unknown`] when there was no `# TYPE` line.
    pub metric_type: MetricType,
    /// The unescaped HELP text, or "".
    pub help: String,
    /// The unit from `# UNIT` (OpenMetrics only), or "".
    pub unit: String,
}

/// Everything read from one scrape body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Samples in the order they appear.
    pub samples: Vec<ParsedSample>,
    /// Native histograms in the order they appear.
    pub histograms: Vec<ParsedHistogram>,
    /// One entry per family with metadata lines, in order of first appearance.
    pub metadata: Vec<MetricMetadata>,
}

/// Why a body could not be parsed. Displays as `line N: message` (or
/// `metric family N: message` for protobuf).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct ParseError {
    /// Where the problem was found.
    pub place: Place,
    /// What was wrong, e.g. `expected '=' after label name, got "}"`.
    pub message: String,
}

/// Where in a body a [`ParseError`] was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A 1-based line of a text body.
    Line(usize),
    /// The 1-based message of a protobuf body.
    MetricFamily(usize),
}

impl std::fmt::Display for Place {
    /// `line N` or `metric family N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::MetricFamily(n) => write!(f, "metric family {n}"),
        }
    }
}

/// Parses an OpenMetrics body (promtool's backfill input) without collecting it: each sample
/// goes to `sink` as it is read, so files far larger than memory allows for parsed samples
/// can be read. Returns the metadata; errors as [`parse`].
pub fn parse_openmetrics_each(
    body: &[u8],
    sink: &mut dyn FnMut(ParsedSample),
) -> Result<Vec<MetricMetadata>, ParseError> {
    openmetrics::parse_each(body, sink)
}

/// Reads an OpenMetrics exposition's `_created` lines of counters, histograms and summaries
/// as the start timestamps of their families' samples, dropping them as series.
pub fn read_created_lines(exposition: &mut Exposition) {
    created::apply(exposition);
}

/// Parses a whole scrape body in the given format, with histograms read as classic ones.
/// The first malformed line fails the whole body, as a Prometheus scrape does.
pub fn parse(body: &[u8], format: Format) -> Result<Exposition, ParseError> {
    parse_with(body, format, &HistogramOptions::default())
}

/// Parses a whole scrape body in the given format, reading histograms as `options` say.
pub fn parse_with(body: &[u8], format: Format, options: &HistogramOptions) -> Result<Exposition, ParseError> {
    let mut exposition = match format {
        Format::Text => text::parse(body)?,
        Format::OpenMetrics => openmetrics::parse(body)?,
        Format::Protobuf => protobuf::parse(body, options)?,
    };
    if options.classic_to_custom_buckets {
        nhcb::convert(&mut exposition, options.keep_classic);
    }
    Ok(exposition)
}
