//! promflow's plan IR and the semantics every executor shares.
//!
//! The front ends (PromQL, SQL) compile text to a [`Plan`]; the executors (the batch executor
//! and the incremental one) run it. This crate is what they agree on, and holds no executor:
//!
//! * [`ir`]: the plan's nodes and their `EXPLAIN` text;
//! * [`eval`]: a query's options, what stops it, and the result shapes;
//! * [`semantics`]: PromQL's label semantics (grouping keys, result labels, relabelling);
//! * [`annotations`]: Prometheus's warnings and infos, with the source position they cite;
//! * [`format`]: numbers and times printed as Prometheus (Go) prints them;
//! * [`Error`]: the evaluation errors every executor returns.
//!
//! It depends on storage's series model only: no dataflow runtime, no async runtime.
#![warn(missing_docs)]

pub mod annotations;
pub mod eval;
pub mod format;
pub mod ir;
pub mod semantics;

pub use annotations::{Annotations, Level};
pub use eval::{Evaluation, QueryOptions, QueryResult, Stop};
pub use ir::*;

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
