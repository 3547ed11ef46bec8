//! `global.query_log_file`: every query the API and the rules evaluate, one JSON object a line
//! in Prometheus's layout (`params`, `stats.timings`, `httpRequest` or `ruleGroup`, `error`,
//! `ts`), so the tools that read Prometheus's query log read promflow's.

use std::time::Duration;

use promflow_storage::json_log::{rfc3339_ms, JsonLog};
use serde_json::json;

/// The open query log, if one is configured. Reopened at every configuration load, so a log
/// rotated away is written anew after a reload, as in Prometheus.
#[derive(Default)]
pub struct QueryLog {
    file: JsonLog,
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

/// Who asked a logged query: the key Prometheus's query log files it under.
pub enum QueryOrigin<'a> {
    /// An API request (`httpRequest`).
    Http {
        /// The client's IP address.
        client: String,
        /// `GET` or `POST`.
        method: String,
        /// The API path (`/api/v1/query`, `/api/v1/query_range`).
        path: String,
    },
    /// A rule evaluation (`ruleGroup`).
    RuleGroup {
        /// The rule file.
        file: &'a str,
        /// The group's name.
        name: &'a str,
    },
}

/// A logged query: its text and times (milliseconds), who asked, and why it failed.
pub struct LoggedQuery<'a> {
    /// The PromQL text.
    pub query: &'a str,
    /// The first evaluation time.
    pub start_ms: i64,
    /// The last evaluation time.
    pub end_ms: i64,
    /// The step of a range query, 0 for an instant query.
    pub step_ms: i64,
    /// Who asked.
    pub origin: QueryOrigin<'a>,
    /// The evaluation's error, for a query that failed.
    pub error: Option<&'a str>,
}

impl QueryLog {
    /// Opens `path` for appending (created if needed), or closes the log for `None`. An error
    /// leaves the previous log in place.
    pub fn apply(&self, path: Option<&str>) -> std::io::Result<()> {
        self.file.apply(path)
    }

    /// Whether queries are logged.
    pub fn enabled(&self) -> bool {
        self.file.enabled()
    }

    /// Lines that could not be written.
    pub fn failures(&self) -> u64 {
        self.file.failures()
    }

    /// Appends one query's line; a failed write is reported in promflow's log, not to the client.
    pub fn log(&self, q: &LoggedQuery<'_>, t: QueryTimings) {
        let secs = |d: Duration| d.as_secs_f64();
        let mut line = json!({
            "params": {
                "query": q.query,
                "start": rfc3339_ms(q.start_ms),
                "end": rfc3339_ms(q.end_ms),
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
            "ts": rfc3339_ms(promflow_storage::now_ms()),
        });
        let (key, origin) = match &q.origin {
            QueryOrigin::Http { client, method, path } => {
                ("httpRequest", json!({"clientIP": client, "method": method, "path": path}))
            }
            QueryOrigin::RuleGroup { file, name } => ("ruleGroup", json!({"file": file, "name": name})),
        };
        line[key] = origin;
        if let Some(e) = q.error {
            line["error"] = json!(e);
        }
        self.file.write(&line);
    }
}
