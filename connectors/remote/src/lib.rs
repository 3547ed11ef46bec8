//! Remote write 1.0 (protobuf + snappy block format): the messages, decoding for the
//! receiver, encoding, and the sender that follows the WAL ([`sender`]).
#![warn(missing_docs)]

pub mod chunks;
pub mod forward;
mod histogram;
pub mod partial;
pub mod read;
pub mod reader;
pub mod sender;
mod wire;

pub use histogram::{BucketSpan, Histogram};
pub use sender::RemoteWriter;
pub use wire::{RequestView, SeriesView, WireExemplar};

use promflow_storage::{Appender, Labels, LabelsRef};
use prost::Message;

/// Errors of remote storage: decoding or applying a remote-write request, setting up an
/// endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not snappy block-compressed.
    #[error("snappy decode: {0}")]
    Snappy(#[from] snap::Error),
    /// The payload is not a WriteRequest.
    #[error("protobuf decode: {0}")]
    Malformed(&'static str),
    /// A series has no labels or an invalid label.
    #[error("invalid series {0}: {1}")]
    InvalidSeries(String, String),
    /// A native histogram is not one (spans that do not match its buckets, negative counts,
    /// custom bounds out of order).
    #[error("invalid histogram: {0}")]
    InvalidHistogram(String),
    /// The body is not zstd-compressed, or decompresses to too much.
    #[error("zstd decode: {0}")]
    Zstd(String),
    /// The body would decompress to more than [`max_decompressed`] allows.
    #[error("body too large: {0}")]
    TooLarge(String),
    /// Storage refused a sample.
    #[error("{0}")]
    Storage(#[from] promflow_storage::Error),
    /// The HTTP client of a remote endpoint (named first) could not be built from its
    /// settings.
    #[error("{0}: {1}")]
    Client(String, String),
    /// Too few nodes of a cluster could store a write's copies (the sender retries).
    #[error("{0}")]
    Unavailable(String),
    /// A cluster peer refused a write's copy (the sender must fix the samples).
    #[error("cluster peer {0}")]
    Peer(String),
}

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series with their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata (accepted and ignored for now).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels, sorted by name by the sender.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native-histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    /// Its labels (a trace ID, typically).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct ExemplarV2 {
    /// Name and value references into the symbol table, pair after pair.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// Metric type enum.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// The most a request body may decompress to: 64 times its size, at least 32 MiB (real
/// remote-write bodies compress 5 to 20 times), at most 256 MiB. A few kilobytes of zeros
/// must not become hundreds of megabytes.
pub fn max_decompressed(compressed: usize) -> usize {
    compressed.saturating_mul(64).clamp(32 << 20, 256 << 20)
}

/// Decompresses a snappy block-format body; [`RequestView::parse`] reads the result. The
/// size the body declares is checked against [`max_decompressed`] before anything is
/// allocated.
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, Error> {
    let declared = snap::raw::decompress_len(body)?;
    let limit = max_decompressed(body.len());
    if declared > limit {
        return Err(Error::TooLarge(format!(
            "a {} byte body declares {declared} bytes decompressed; at most {limit} are taken",
            body.len()
        )));
    }
    Ok(snap::raw::Decoder::new().decompress_vec(body)?)
}

/// Decompresses a zstd body (as vmagent sends to receivers that take it), to at most
/// [`max_decompressed`] bytes.
pub fn decompress_zstd(body: &[u8]) -> Result<Vec<u8>, Error> {
    zstd::bulk::decompress(body, max_decompressed(body.len())).map_err(|e| Error::Zstd(e.to_string()))
}

/// The longest label name a series may have (bytes), as Mimir's default.
pub const MAX_LABEL_NAME_BYTES: usize = 1024;
/// The longest label value a series may have (bytes): label values identify series, and a
/// value this long is a payload, not a name, that every query and the WAL would carry.
pub const MAX_LABEL_VALUE_BYTES: usize = 16 * 1024;
/// How much of a label set an error message quotes.
const QUOTED_LABELS_BYTES: usize = 512;

/// `labels` as text for an error message, cut at [`QUOTED_LABELS_BYTES`]: the answer and the
/// log must not grow with what the sender sent.
fn quoted<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let text =
        promflow_storage::Labels::from_pairs(pairs.into_iter().filter(|(n, _)| !n.is_empty())).to_string();
    promflow_storage::shorten::shortened(&text, QUOTED_LABELS_BYTES).into_owned()
}

/// The remote write protobuf messages: 1.0's `prometheus.WriteRequest` and 2.0's
/// `io.prometheus.write.v2.Request` (labels as references into a symbol table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message1or2 {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

impl Message1or2 {
    /// The name a `Content-Type`'s `proto` parameter and `protobuf_message` give it.
    pub fn name(self) -> &'static str {
        match self {
            Message1or2::V1 => "prometheus.WriteRequest",
            Message1or2::V2 => "io.prometheus.write.v2.Request",
        }
    }

    /// The message a request's `Content-Type` announces: `application/x-protobuf` with no
    /// `proto` parameter (or none at all) is 1.0; anything else is an error naming it.
    pub fn from_content_type(ct: Option<&str>) -> Result<Message1or2, String> {
        let Some(ct) = ct else { return Ok(Message1or2::V1) };
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(format!("unsupported content type {ct:?}; expected application/x-protobuf"));
        }
        for p in parts {
            if let Some(v) = p.strip_prefix("proto=") {
                return match v.trim_matches('"') {
                    "prometheus.WriteRequest" => Ok(Message1or2::V1),
                    "io.prometheus.write.v2.Request" => Ok(Message1or2::V2),
                    other => Err(format!("unknown remote write protobuf message {other}")),
                };
            }
        }
        Ok(Message1or2::V1)
    }
}

/// `io.prometheus.write.v2.Request`, for senders and tests (the receiver reads
/// [`RequestView::parse_v2`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequestV2 {
    /// Every label name and value, once; the first is "".
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    /// The series.
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeriesV2>,
}

/// `io.prometheus.write.v2.TimeSeries` (float samples and native histograms).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeriesV2 {
    /// Name and value references into the symbol table, pair after pair.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<SampleV2>,
    /// Native-histogram samples.
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    /// Exemplars.
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<ExemplarV2>,
}

/// `io.prometheus.write.v2.Sample`: a 1.0 sample with its start timestamp.
#[derive(Clone, PartialEq, Message)]
pub struct SampleV2 {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    /// When the series' count or sum started (ms; 0: not known).
    #[prost(int64, tag = "3")]
    pub start_timestamp: i64,
}

impl WriteRequestV2 {
    /// The 2.0 form of a 1.0 request: each distinct string once in the symbol table.
    pub fn from_v1(req: &WriteRequest) -> WriteRequestV2 {
        let mut symbols = vec![String::new()];
        let mut index: std::collections::HashMap<String, u32> =
            std::collections::HashMap::from([(String::new(), 0)]);
        let mut refer = |s: &str| -> u32 {
            if let Some(i) = index.get(s) {
                return *i;
            }
            let i = symbols.len() as u32;
            symbols.push(s.to_string());
            index.insert(s.to_string(), i);
            i
        };
        let timeseries = req
            .timeseries
            .iter()
            .map(|ts| TimeSeriesV2 {
                labels_refs: ts.labels.iter().flat_map(|l| [refer(&l.name), refer(&l.value)]).collect(),
                samples: ts
                    .samples
                    .iter()
                    .map(|s| SampleV2 { value: s.value, timestamp: s.timestamp, start_timestamp: 0 })
                    .collect(),
                histograms: ts.histograms.clone(),
                exemplars: ts
                    .exemplars
                    .iter()
                    .map(|e| ExemplarV2 {
                        labels_refs: e
                            .labels
                            .iter()
                            .flat_map(|l| [refer(&l.name), refer(&l.value)])
                            .collect(),
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                    .collect(),
            })
            .collect();
        WriteRequestV2 { symbols, timeseries }
    }
}

/// Encodes a 2.0 request as a remote-write body (protobuf, snappy block format).
pub fn encode_v2(req: &WriteRequestV2) -> Vec<u8> {
    compress(&req.encode_to_vec())
}

/// Encodes a `WriteRequest` as a remote-write body (protobuf, snappy block format).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    compress(&req.encode_to_vec())
}

/// Snappy's block format of `raw`, holding only its own bytes: the encoder allocates its
/// worst case (more than `raw`), and a body kept for a retry or a benchmark's replay would
/// hold that for the few bytes it uses.
fn compress(raw: &[u8]) -> Vec<u8> {
    let mut body = snap::raw::Encoder::new().compress_vec(raw).unwrap_or_default();
    body.shrink_to_fit();
    body
}

impl WriteRequest {
    /// Decodes a remote-write 1.0 body (snappy block format, then protobuf) whole, metadata
    /// included (the receiver reads bodies through [`RequestView`] instead).
    pub fn decode_body(body: &[u8]) -> Result<WriteRequest, Error> {
        let raw = decompress(body)?;
        WriteRequest::decode(raw.as_slice()).map_err(|_| Error::Malformed("not a WriteRequest"))
    }
}

/// What [`append_request`] appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Float samples.
    pub samples: usize,
    /// Native histograms.
    pub histograms: usize,
    /// Exemplars storage took (a refused exemplar does not fail the request, as in
    /// Prometheus).
    pub exemplars: usize,
}

/// Appends every sample of `req` to `app` with its start timestamp, stopping at the first
/// series or sample that is refused, so the caller can roll the whole request back as
/// Prometheus does. With `zero_samples` (`created-timestamp-zero-ingestion`), a zero sample
/// goes before each sample at its start timestamp.
pub fn append_request(
    req: &RequestView<'_>,
    zero_samples: bool,
    app: &mut dyn Appender,
) -> Result<Appended, Error> {
    let mut appended = Appended::default();
    // every series' labels, checked and normalized, so that the appender can look them all
    // up at once: a series' pairs are `pairs[range]`
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for series in req.series() {
        let start = pairs.len();
        pairs.extend_from_slice(series.labels);
        check_names(&mut pairs[start..])?;
        // an empty value means no label: the others move up over it
        let mut kept = start;
        for i in start..pairs.len() {
            if !pairs[i].1.is_empty() {
                pairs[kept] = pairs[i];
                kept += 1;
            }
        }
        pairs.truncate(kept);
        ranges.push(start..kept);
    }
    let refs: Vec<LabelsRef<'_>> = ranges
        .iter()
        .zip(req.series())
        .map(|(range, series)| {
            LabelsRef::from_normalized(&pairs[range.clone()]).ok_or_else(|| {
                Error::InvalidSeries(quoted(series.labels.iter().copied()), "labels out of order".into())
            })
        })
        .collect::<Result<_, _>>()?;
    let prepared = app.prepare_refs(&refs);
    for ((series, &labels), prepared) in req.series().zip(&refs).zip(prepared) {
        let (samples, hists) = (series.samples, series.histograms);
        validate(labels)?;
        // start timestamps are rare: the series' labels are built only for them
        let has_starts =
            series.starts.iter().any(|&st| st != 0) || hists.iter().any(|h| h.start_timestamp != 0);
        let owned_for_starts = has_starts.then(|| labels.to_labels());
        for (i, &(t, v)) in samples.iter().enumerate() {
            if let (true, Some(owned), Some(&st)) = (zero_samples, &owned_for_starts, series.starts.get(i)) {
                append_zero_sample(owned, &series, (t, st), None, app);
            }
            match prepared {
                Some(p) => app.append_prepared(p, t, v),
                None => app.append_ref(labels, t, v),
            }
            .map_err(|e| {
                if e.is_sample_error() {
                    Error::InvalidSeries(quoted(labels.pairs()), format!("{e} (timestamp {t})"))
                } else {
                    Error::Storage(e)
                }
            })?;
            appended.samples += 1;
            if let (Some(owned), Some(&st)) = (&owned_for_starts, series.starts.get(i)) {
                if st != 0 {
                    app.set_start_timestamp(owned, t, st).map_err(Error::Storage)?;
                }
            }
        }
        if hists.is_empty() && series.exemplars.is_empty() {
            continue;
        }
        let owned = owned_for_starts.unwrap_or_else(|| labels.to_labels());
        for h in hists {
            let refused = |e: String| {
                Error::InvalidSeries(quoted(labels.pairs()), format!("{e} (timestamp {})", h.timestamp))
            };
            let fh = h.to_float_histogram().map_err(|e| refused(e.to_string()))?;
            if zero_samples {
                append_zero_sample(&owned, &series, (h.timestamp, h.start_timestamp), Some(&fh), app);
            }
            app.append_histogram(&owned, h.timestamp, fh).map_err(|e| {
                if e.is_sample_error() {
                    refused(e.to_string())
                } else {
                    Error::Storage(e)
                }
            })?;
            appended.histograms += 1;
            if h.start_timestamp != 0 {
                app.set_start_timestamp(&owned, h.timestamp, h.start_timestamp).map_err(Error::Storage)?;
            }
        }
        for e in series.exemplars {
            let exemplar = promflow_storage::exemplars::Exemplar {
                labels: Labels::from_pairs(e.labels.iter().copied()),
                value: e.value,
                t: e.timestamp,
            };
            match app.append_exemplar(&owned, exemplar) {
                Ok(()) => appended.exemplars += 1,
                Err(err) => tracing::debug!(error = %err, series = %owned, "remote write: exemplar refused"),
            }
        }
    }
    Ok(appended)
}

/// Appends a zero sample (an empty histogram for `histogram`) at `start`, before the sample
/// at `t` whose count began there, unless the series sends a sample at `start` itself (a
/// delta's start is the previous delta's time); one refused (out of order once stored: the
/// start does not move) is left out (`created-timestamp-zero-ingestion`).
fn append_zero_sample(
    labels: &Labels,
    series: &SeriesView<'_, '_>,
    (t, start): (i64, i64),
    histogram: Option<&promflow_storage::FloatHistogram>,
    app: &mut dyn Appender,
) {
    let sent =
        series.samples.iter().any(|s| s.0 == start) || series.histograms.iter().any(|h| h.timestamp == start);
    if start == 0 || start >= t || sent {
        return;
    }
    let _ = match histogram {
        Some(h) => app.append_histogram(labels, start, promflow_storage::FloatHistogram::empty_like(h)),
        None => app.append(labels, start, 0.0),
    };
}

/// Refuses a series with an empty label name or a name given twice, as Prometheus's
/// receiver does (which duplicate should win is the sender's to fix, not ours to guess), and
/// names or values longer than [`MAX_LABEL_NAME_BYTES`] and [`MAX_LABEL_VALUE_BYTES`].
fn check_names(pairs: &mut [(&str, &str)]) -> Result<(), Error> {
    let described = |pairs: &[(&str, &str)]| quoted(pairs.iter().copied());
    if let Some((n, v)) =
        pairs.iter().find(|(n, v)| n.len() > MAX_LABEL_NAME_BYTES || v.len() > MAX_LABEL_VALUE_BYTES)
    {
        let (what, len, limit) = if n.len() > MAX_LABEL_NAME_BYTES {
            ("name", n.len(), MAX_LABEL_NAME_BYTES)
        } else {
            ("value", v.len(), MAX_LABEL_VALUE_BYTES)
        };
        return Err(Error::InvalidSeries(
            described(pairs),
            format!("label {what} of {len} bytes; at most {limit} are taken"),
        ));
    }
    if pairs.iter().any(|(n, v)| n.is_empty() && !v.is_empty()) {
        return Err(Error::InvalidSeries(described(pairs), "empty label name".into()));
    }
    if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidSeries(described(pairs), format!("duplicate label name {:?}", w[0].0)));
        }
    }
    Ok(())
}

fn validate(labels: LabelsRef<'_>) -> Result<(), Error> {
    if labels.is_empty() {
        return Err(Error::InvalidSeries("{}".into(), "series has no labels".into()));
    }
    if labels.get(promflow_storage::METRIC_NAME).is_empty() {
        return Err(Error::InvalidSeries(quoted(labels.pairs()), "series has no metric name".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                exemplars: Vec::new(),
                labels: vec![Label { name: "__name__".into(), value: "x".into() }],
                samples: vec![Sample { value: 1.5, timestamp: 1000 }],
                histograms: vec![],
            }],
            metadata: vec![],
        };
        let raw = decompress(&encode(&req)).unwrap();
        let view = RequestView::parse(&raw).unwrap();
        let series: Vec<_> = view.series().map(|s| (s.labels, s.samples)).collect();
        assert_eq!(series, vec![(&[("__name__", "x")][..], &[(1000, 1.5)][..])]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decompress(b"not snappy at all").is_err());
    }
}
