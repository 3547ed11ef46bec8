//! Remote write 1.0 (protobuf + snappy block format): the messages, decoding for the
//! receiver, encoding, and the sender that follows the WAL ([`sender`]).
#![warn(missing_docs)]

pub mod read;
pub mod sender;
mod wire;

pub use sender::RemoteWriter;
pub use wire::RequestView;

use promflow_storage::{Appender, LabelsRef};
use prost::Message;

/// Errors decoding or applying a remote-write request.
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
    /// Storage refused a sample.
    #[error("{0}")]
    Storage(#[from] promflow_storage::Error),
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

/// Decompresses a snappy block-format body; [`RequestView::parse`] reads the result.
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(snap::raw::Decoder::new().decompress_vec(body)?)
}

/// Encodes a `WriteRequest` as a remote-write body (protobuf, snappy block format).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

/// Appends every sample of `req` to `app`, stopping at the first series or sample that is
/// refused, so the caller can roll the whole request back as Prometheus does. Returns the
/// sample count.
pub fn append_request(req: &RequestView<'_>, app: &mut dyn Appender) -> Result<usize, Error> {
    let mut n = 0;
    let mut scratch: Vec<(&str, &str)> = Vec::new();
    for (pairs, samples) in req.series() {
        scratch.clear();
        scratch.extend_from_slice(pairs);
        let labels = LabelsRef::normalize(&mut scratch);
        validate(labels)?;
        for &(t, v) in samples {
            app.append_ref(labels, t, v).map_err(|e| match e {
                promflow_storage::Error::OutOfOrder
                | promflow_storage::Error::OutOfBounds
                | promflow_storage::Error::DuplicateTimestamp => {
                    Error::InvalidSeries(labels.to_labels().to_string(), format!("{e} (timestamp {t})"))
                }
                other => Error::Storage(other),
            })?;
            n += 1;
        }
    }
    Ok(n)
}

fn validate(labels: LabelsRef<'_>) -> Result<(), Error> {
    if labels.is_empty() {
        return Err(Error::InvalidSeries("{}".into(), "series has no labels".into()));
    }
    if labels.get(promflow_storage::METRIC_NAME).is_empty() {
        return Err(Error::InvalidSeries(labels.to_labels().to_string(), "series has no metric name".into()));
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
                labels: vec![Label { name: "__name__".into(), value: "x".into() }],
                samples: vec![Sample { value: 1.5, timestamp: 1000 }],
            }],
            metadata: vec![],
        };
        let raw = decompress(&encode(&req)).unwrap();
        let view = RequestView::parse(&raw).unwrap();
        let series: Vec<_> = view.series().collect();
        assert_eq!(series, vec![(&[("__name__", "x")][..], &[(1000, 1.5)][..])]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decompress(b"not snappy at all").is_err());
    }
}
