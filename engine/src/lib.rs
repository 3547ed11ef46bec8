//! promflow's engine: the plan IR that every front end compiles to, the function kernels,
//! and the batch executor that evaluates a plan over storage's querier.
//!
//! The engine depends on storage only; it knows nothing of PromQL or SQL text, nor of HTTP.
#![warn(missing_docs)]

pub mod annotations;
pub mod batch;
pub mod dataflow;
pub mod format;
pub mod kernels;
pub mod live;
pub mod plan;
pub mod rules;
pub mod template;

pub use annotations::{Annotations, Level};
pub use batch::{evaluate, Evaluation, QueryOptions, QueryResult};
pub use plan::Plan;

/// Evaluation errors, each mapped by the HTTP layer to Prometheus's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A semantic error found while evaluating (Prometheus's `execution` error type).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its deadline (Prometheus's `timeout` error type).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query was canceled: nobody waits for its answer any more (Prometheus's `canceled`).
    #[error("query was canceled")]
    Canceled,
    /// Too many samples would be loaded (an `execution` error in Prometheus).
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The plan is malformed for the executor (a front-end bug, or an unsupported feature).
    #[error("{0}")]
    Plan(String),
    /// The incremental executor cannot maintain this expression (yet); the batch executor
    /// can still evaluate it.
    #[error("not supported by the incremental executor: {0}")]
    Unsupported(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] promflow_storage::Error),
}
