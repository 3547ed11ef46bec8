//! Remote read (`prometheus.ReadRequest` → `prometheus.ReadResponse`, protobuf in snappy's
//! block format): the messages a server answers with samples.

use prost::Message;

use crate::{Error, Label, TimeSeries};

/// `prometheus.ReadRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadRequest {
    /// The queries, answered in order.
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// The answer kinds the client takes, in its order of preference (empty: samples).
    #[prost(enumeration = "ResponseType", repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

/// `prometheus.ReadRequest.ResponseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResponseType {
    /// One `ReadResponse` with every sample.
    Samples = 0,
    /// A stream of `ChunkedReadResponse` frames of XOR chunks.
    StreamedXorChunks = 1,
}

/// `prometheus.Query`.
#[derive(Clone, PartialEq, Message)]
pub struct Query {
    /// Start of the range, in ms (inclusive).
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    /// End of the range, in ms (inclusive).
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    /// The series' matchers.
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
    /// What the client will do with the samples (ignored: every sample is returned).
    #[prost(message, optional, tag = "4")]
    pub hints: Option<ReadHints>,
}

/// `prometheus.LabelMatcher`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelMatcher {
    /// `EQ`, `NEQ`, `RE`, `NRE`.
    #[prost(enumeration = "MatcherType", tag = "1")]
    pub r#type: i32,
    /// Label name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Value or regular expression.
    #[prost(string, tag = "3")]
    pub value: String,
}

/// `prometheus.LabelMatcher.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MatcherType {
    /// `=`.
    Eq = 0,
    /// `!=`.
    Neq = 1,
    /// `=~`.
    Re = 2,
    /// `!~`.
    Nre = 3,
}

/// `prometheus.ReadHints`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadHints {
    /// Query step.
    #[prost(int64, tag = "1")]
    pub step_ms: i64,
    /// The function applied to the series.
    #[prost(string, tag = "2")]
    pub func: String,
    /// Start of the selection.
    #[prost(int64, tag = "3")]
    pub start_ms: i64,
    /// End of the selection.
    #[prost(int64, tag = "4")]
    pub end_ms: i64,
    /// Grouping labels.
    #[prost(string, repeated, tag = "5")]
    pub grouping: Vec<String>,
    /// Whether the grouping is `by` (else `without`).
    #[prost(bool, tag = "6")]
    pub by: bool,
    /// Range of the selection.
    #[prost(int64, tag = "7")]
    pub range_ms: i64,
}

/// `prometheus.ReadResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadResponse {
    /// One result per query, in the queries' order.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

/// `prometheus.QueryResult`.
#[derive(Clone, PartialEq, Message)]
pub struct QueryResult {
    /// The series with their samples in the range.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

impl ReadRequest {
    /// Decodes a remote-read request body (snappy block format, then protobuf).
    pub fn decode_body(body: &[u8]) -> Result<ReadRequest, Error> {
        let raw = crate::decompress(body)?;
        ReadRequest::decode(raw.as_slice()).map_err(|_| Error::Malformed("not a ReadRequest"))
    }

    /// The request body: protobuf in snappy's block format.
    pub fn encode_body(&self) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&self.encode_to_vec()).unwrap_or_default()
    }
}

impl ReadResponse {
    /// Decodes a `SAMPLES` answer's body.
    pub fn decode_body(body: &[u8]) -> Result<ReadResponse, Error> {
        let raw = crate::decompress(body)?;
        ReadResponse::decode(raw.as_slice()).map_err(|_| Error::Malformed("not a ReadResponse"))
    }

    /// The response body: protobuf in snappy's block format.
    pub fn encode_body(&self) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&self.encode_to_vec()).unwrap_or_default()
    }
}

/// A label pair of a response.
pub fn label(name: &str, value: &str) -> Label {
    Label { name: name.to_string(), value: value.to_string() }
}
