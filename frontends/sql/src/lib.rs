//! promflow's SQL front end: every metric is a table, and a `SELECT` over one compiles to the
//! engine's plan IR, the same IR PromQL compiles to, so both run on the same executors.
//!
//! A table's columns are its series' label names (text, `NULL` where a series lacks the
//! label), `ts` (the sample's timestamp) and `value` (double); labels named `ts` or `value`
//! appear as `label_ts` and `label_value`. Staleness markers are never rows.
//!
//! What a query becomes (`docs/sql.md` has the full list):
//! - rows of samples (`SELECT job, ts, value FROM m WHERE …`): a range selection of the
//!   table's series over the `ts` bounds, evaluated at the upper bound;
//! - aggregates over the samples (`SELECT job, max(value) FROM m WHERE … GROUP BY job`): the
//!   window function over the same range per series, then the aggregation across the group
//!   (`max by (job) (max_over_time(m[…]))`): the PromQL twin of the query, operator for
//!   operator;
//! - a standing query (one aggregate per group over `ts > now() - INTERVAL '…'`): one plan
//!   evaluated at every time, for rules' `sql:` and websocket subscriptions ([`standing`]).
//!
//! What the plan IR does not express (filters on values, `OR`, `DISTINCT`, window functions,
//! `CASE`, casts, set operations, subqueries, joins, CTEs) runs on the relational engine,
//! Apache DataFusion, over the metrics as tables (`engine`).
//!
//! Queries over the catalogs clients read to learn the tables (`pg_catalog`,
//! `information_schema`, `SELECT version()`) are metadata, not samples: a small interpreter
//! answers them from storage's metric and label names instead. The same interpreter joins,
//! filters and orders the rows of the metric queries inside `WITH`, joins and subqueries that
//! the relational engine cannot plan.
//!
//! [`compile`] turns text into a [`Statement`] ([`prepare`] also hands what does not lower to
//! the relational engine); [`Statement::execute`] runs it against
//! storage with the batch executor and answers [`Rows`]; [`pg::serve`] answers the same on
//! the PostgreSQL wire protocol.

mod arrow;
mod binary;
mod bind;
mod catalog;
mod compile;
mod cursor;
#[cfg(feature = "engine")]
mod engine;
mod exec;
pub mod pg;
mod rows;
mod standing;

pub use arrow::ARROW_STREAM;
pub use compile::{
    compile, parse, prepare, Column, ColumnKind, Eval, Part, Query, Source, Statement, MAX_NESTING,
    MAX_OPERATORS,
};
pub use exec::{ExecError, Settings};
pub use rows::{Cell, Row, Rows};
pub use standing::standing;

/// What went wrong with a SQL text: the message names the problem and where it is.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// The text is not SQL the parser accepts (the parser's message, with line and column).
    #[error("{0}")]
    Parse(String),
    /// The text is SQL, but not a query over promflow's tables that this front end accepts.
    #[error("{message} at line {line}, column {column}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Where (1-based), or 0 where the parser gave no position.
        line: u64,
        /// Where (1-based).
        column: u64,
    },
    /// The statement is nested or chained more deeply than promflow evaluates
    /// ([`MAX_OPERATORS`], [`MAX_NESTING`]); PostgreSQL's SQLSTATE 54001.
    #[error("{0}")]
    TooComplex(String),
    /// A query that cannot stand (a rule's `sql:`, a subscription): it does not compile to
    /// one value per group over a window that slides with `now()` (`standing`).
    #[error("{0}")]
    NotStanding(String),
}
