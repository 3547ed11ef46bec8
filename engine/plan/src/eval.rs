//! The executors' contract: the options a query is evaluated with, what stops it, and the
//! result shapes every executor answers in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use promflow_storage::{HistogramSeries, Labels, Series};

use crate::{Annotations, Error};

/// Parameters of one query evaluation.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// First step, in milliseconds.
    pub start: i64,
    /// Last step (inclusive), in milliseconds.
    pub end: i64,
    /// Step width in milliseconds (any positive value for instant queries).
    pub step: i64,
    /// How far back an instant selection looks for a sample, in milliseconds.
    pub lookback_ms: i64,
    /// Most samples the query may load (`--query.max-samples`).
    pub max_samples: usize,
    /// When the query must give up.
    pub deadline: Option<Instant>,
    /// Prometheus's `promql-delayed-name-removal` feature: functions keep `__name__` until the
    /// end of the evaluation, so that annotations can name the metric.
    pub delayed_name_removal: bool,
    /// A range query (`/api/v1/query_range`): the result is a matrix and the expression must
    /// be a scalar or an instant vector, even when `start == end`.
    pub range_query: bool,
    /// Prometheus's `use-start-timestamps` feature: `rate`, `increase`, `irate` and `resets`
    /// see the counter resets that samples' start timestamps show, `rate` and `increase`
    /// count from a start timestamp inside the window instead of extrapolating, and
    /// `start_timestamp` answers.
    pub use_start_timestamps: bool,
    /// Set when whoever asked no longer waits for the answer (the client hung up): the query
    /// stops where it would stop for its deadline.
    pub canceled: Option<Arc<AtomicBool>>,
}

impl QueryOptions {
    /// Options for an instant query at `t` with Prometheus's defaults.
    pub fn instant(t: i64) -> Self {
        QueryOptions {
            start: t,
            end: t,
            step: 1,
            lookback_ms: 300_000,
            max_samples: 50_000_000,
            deadline: None,
            canceled: None,
            delayed_name_removal: false,
            range_query: false,
            use_start_timestamps: false,
        }
    }

    /// What stops this query: its deadline and its cancellation.
    pub fn stop(&self) -> Stop<'_> {
        Stop { deadline: self.deadline, canceled: self.canceled.as_deref() }
    }

    /// The evaluation times of the query's steps, from `start` through `end`.
    pub fn steps(&self) -> Vec<i64> {
        let mut v = Vec::new();
        let mut t = Some(self.start);
        while let Some(x) = t.filter(|x| *x <= self.end) {
            v.push(x);
            t = x.checked_add(self.step.max(1));
        }
        v
    }
}

/// The result of a query, in the shapes Prometheus's API returns.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// A scalar at an instant: (time, value).
    Scalar(i64, f64),
    /// A string at an instant.
    String(i64, String),
    /// An instant vector: labels, time, value.
    Vector(Vec<(Labels, i64, f64)>),
    /// A matrix: series with their points (range queries, or a range selection at an instant).
    Matrix(Vec<Series>),
}

/// A successful evaluation: the result and the warnings and infos raised on the way.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The result.
    pub result: QueryResult,
    /// Prometheus's annotations.
    pub annotations: Annotations,
    /// Samples the evaluation read from storage (what `--query.max-samples` counts).
    pub samples: usize,
    /// The native-histogram points of the result, sorted by labels: for an instant vector
    /// one point per series at the evaluation time, for a matrix the series' histogram
    /// points. A series may have float points in `result` and histogram points here.
    pub histograms: Vec<HistogramSeries>,
}

/// When a query must give up: checked before every operator and for every series (or group,
/// or step) inside an operator's loops, so that neither a deadline nor a client that hung up
/// waits for a whole operator.
#[derive(Clone, Copy)]
pub struct Stop<'a> {
    /// When the query must give up.
    pub deadline: Option<Instant>,
    /// Set when nobody waits for the answer any more.
    pub canceled: Option<&'a AtomicBool>,
}

impl Stop<'_> {
    /// `Err(Canceled)` or `Err(Timeout)` when the query must stop now.
    pub fn check(self) -> Result<(), Error> {
        if self.canceled.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Canceled);
        }
        match self.deadline {
            Some(d) if Instant::now() > d => Err(Error::Timeout("expression evaluation")),
            _ => Ok(()),
        }
    }
}
