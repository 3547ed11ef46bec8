//! The messages of a partial aggregation between a cluster's nodes
//! (`POST /api/v1/cluster/partial`, protobuf in snappy's block format): the node a query was
//! asked asks each other node for an aggregation's part over the series it holds, and learns
//! which series those were, so that it can make sure every series counts once.

use prost::Message;

use crate::{Error, Label};

/// The path a node serves partial aggregations at.
pub const PARTIAL_PATH: &str = "/api/v1/cluster/partial";

/// Which aggregation of which query to evaluate in part, and how.
#[derive(Clone, PartialEq, Message)]
pub struct PartialRequest {
    /// The query's text, which the node compiles as the asking node did.
    #[prost(string, tag = "1")]
    pub query: String,
    /// The digest of the aggregation's plan, which names it among the query's aggregations
    /// (a node whose plan differs finds none and refuses).
    #[prost(fixed64, tag = "2")]
    pub aggregate: u64,
    /// The first step, in milliseconds.
    #[prost(int64, tag = "3")]
    pub start_ms: i64,
    /// The last step.
    #[prost(int64, tag = "4")]
    pub end_ms: i64,
    /// The step width.
    #[prost(int64, tag = "5")]
    pub step_ms: i64,
    /// The query's own first step (`@ start()`).
    #[prost(int64, tag = "6")]
    pub query_start_ms: i64,
    /// The query's own last step (`@ end()`).
    #[prost(int64, tag = "7")]
    pub query_end_ms: i64,
    /// The lookback of instant selections.
    #[prost(int64, tag = "8")]
    pub lookback_ms: i64,
    /// What `step()` stands for in the query's text (a range query's step).
    #[prost(int64, tag = "9")]
    pub compile_step_ms: i64,
    /// What `range()` stands for (a range query's span).
    #[prost(int64, tag = "10")]
    pub compile_range_ms: i64,
    /// Prometheus's `promql-delayed-name-removal`.
    #[prost(bool, tag = "11")]
    pub delayed_name_removal: bool,
    /// Prometheus's `use-start-timestamps`.
    #[prost(bool, tag = "12")]
    pub use_start_timestamps: bool,
    /// How long the asking node waits for the answer.
    #[prost(int64, tag = "13")]
    pub timeout_ms: i64,
    /// The label hashes of the series to leave out: other nodes count them.
    #[prost(fixed64, repeated, tag = "14")]
    pub exclude: Vec<u64>,
    /// Whether the answer lists each series' hash without its metric name too.
    #[prost(bool, tag = "15")]
    pub unnamed: bool,
}

/// An aggregation's part over the series a node holds, and which series those were.
#[derive(Clone, PartialEq, Message)]
pub struct PartialResponse {
    /// The groups with a value at some step.
    #[prost(message, repeated, tag = "1")]
    pub groups: Vec<PartialGroup>,
    /// The annotations the evaluation raised.
    #[prost(message, repeated, tag = "2")]
    pub annotations: Vec<Annotation>,
    /// Every series the selections read (excluded ones aside): its label hash,
    #[prost(fixed64, repeated, tag = "3")]
    pub series: Vec<u64>,
    /// the digest of the samples read of it (equal digests: the same samples),
    #[prost(fixed64, repeated, tag = "4")]
    pub digests: Vec<u64>,
    /// and, when asked, the hash of its labels without the metric name.
    #[prost(fixed64, repeated, tag = "5")]
    pub unnamed: Vec<u64>,
}

/// One group of a part ([`PartialResponse`]).
#[derive(Clone, PartialEq, Message)]
pub struct PartialGroup {
    /// The group's labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// A member's metric name is to be removed (delayed name removal).
    #[prost(bool, tag = "2")]
    pub drop_name: bool,
    /// The part's value at each step.
    #[prost(double, repeated, tag = "3")]
    pub values: Vec<f64>,
    /// How many members had a value at each step.
    #[prost(uint64, repeated, tag = "4")]
    pub counts: Vec<u64>,
    /// For `sum` and `avg`, the compensation of the part's Kahan sum at each step (what the
    /// value lost to rounding); absent, each is 0.
    #[prost(double, repeated, tag = "5")]
    pub compensations: Vec<f64>,
}

/// An annotation of a part's evaluation.
#[derive(Clone, PartialEq, Message)]
pub struct Annotation {
    /// A warning (else an info).
    #[prost(bool, tag = "1")]
    pub warning: bool,
    /// The message, without its `PromQL …:` prefix and position.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The line of the position it points at (0: none).
    #[prost(uint32, tag = "3")]
    pub line: u32,
    /// The column.
    #[prost(uint32, tag = "4")]
    pub col: u32,
}

impl PartialRequest {
    /// Decodes a request body, at most [`crate::max_decompressed`] bytes once decompressed.
    pub fn decode_body(body: &[u8]) -> Result<PartialRequest, Error> {
        let raw = crate::decompress(body)?;
        PartialRequest::decode(raw.as_slice()).map_err(|_| Error::Malformed("not a PartialRequest"))
    }

    /// The request body.
    pub fn encode_body(&self) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&self.encode_to_vec()).unwrap_or_default()
    }
}

impl PartialResponse {
    /// Decodes an answer's body.
    pub fn decode_body(body: &[u8]) -> Result<PartialResponse, Error> {
        let raw = crate::decompress(body)?;
        PartialResponse::decode(raw.as_slice()).map_err(|_| Error::Malformed("not a PartialResponse"))
    }

    /// The answer's body.
    pub fn encode_body(&self) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&self.encode_to_vec()).unwrap_or_default()
    }
}
