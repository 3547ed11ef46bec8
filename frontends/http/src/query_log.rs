//! `global.query_log_file`: every query the API evaluates, one JSON object a line in
//! Prometheus's layout (`params`, `stats.timings`, `httpRequest`, `ts`), so the tools that read
//! Prometheus's query log read promflow's.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

/// The open query log, if one is configured. Reopened at every configuration load, so a log
/// rotated away is written anew after a reload, as in Prometheus.
#[derive(Default)]
pub struct QueryLog {
    file: Mutex<Option<File>>,
}

/// Where the time of a query went, in Prometheus's `stats.timings` terms.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueryTimings {
    /// Waiting for a slot among `--query.max-concurrency`.
    pub queue: Duration,
    /// Parsing and planning.
    pub preparation: Duration,
    /// Evaluating the plan.
    pub eval: Duration,
    /// Samples read from storage (`totalQueryableSamples`).
    pub samples: usize,
}

/// A logged query: its text and times (milliseconds), and who asked.
pub struct LoggedQuery<'a> {
    /// The PromQL text.
    pub query: &'a str,
    /// The first evaluation time.
    pub start_ms: i64,
    /// The last evaluation time.
    pub end_ms: i64,
    /// The step of a range query, 0 for an instant query.
    pub step_ms: i64,
    /// The client's IP address.
    pub client: String,
    /// `GET` or `POST`.
    pub method: String,
    /// The API path (`/api/v1/query`, `/api/v1/query_range`).
    pub path: String,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl QueryLog {
    /// Opens `path` for appending (created if needed), or closes the log for `None`. An error
    /// leaves the previous log in place.
    pub fn apply(&self, path: Option<&str>) -> std::io::Result<()> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }

    /// Whether queries are logged.
    pub fn enabled(&self) -> bool {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Appends one query's line; a failed write is reported in promflow's log, not to the client.
    pub fn log(&self, q: &LoggedQuery<'_>, t: QueryTimings) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = file.as_mut() else { return };
        let secs = |d: Duration| d.as_secs_f64();
        let line: Value = json!({
            "httpRequest": {"clientIP": q.client, "method": q.method, "path": q.path},
            "params": {
                "query": q.query,
                "start": rfc3339(q.start_ms),
                "end": rfc3339(q.end_ms),
                "step": q.step_ms / 1000,
            },
            // no tracing: Prometheus writes the empty span's id
            "spanID": "0000000000000000",
            "stats": {
                "samples": {"totalQueryableSamples": t.samples},
                "timings": {
                "evalTotalTime": secs(t.eval),
                "resultSortTime": 0.0,
                "queryPreparationTime": secs(t.preparation),
                "innerEvalTime": secs(t.eval),
                "execQueueTime": secs(t.queue),
                "execTotalTime": secs(t.queue + t.preparation + t.eval),
                },
            },
            "ts": rfc3339(promflow_storage::now_ms()),
        });
        if let Err(e) = writeln!(f, "{line}") {
            tracing::warn!(error = %e, "writing the query log failed");
        }
    }
}
