//! `query`, `query_range` and `format_query`: PromQL evaluated in batch, answered as
//! Prometheus's JSON; query slots, timeouts and cancellation.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, Uri};
use promflow_plan::format::{format_timestamp, format_value, write_histogram};
use promflow_plan::{Evaluation, Level, QueryOptions, QueryResult};
use promflow_storage::{HistogramSample, Labels, Sample};
use serde_json::{json, Value};

use super::{json_response, params, success, ApiResult, Shared};
use crate::params::{parse_duration, time_param, Params};
use crate::query_log::{LoggedQuery, QueryOrigin, QueryTimings};
use crate::{ApiError, AppState, ClientAddr};

pub(crate) fn query_timeout(state: &AppState, p: &Params) -> Result<Duration, ApiError> {
    let mut timeout = state.query.timeout;
    if let Some(t) = p.get("timeout").filter(|t| !t.is_empty()) {
        let d = parse_duration(t)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        timeout = timeout.min(d);
    }
    Ok(timeout)
}

pub(crate) fn lookback(state: &AppState, p: &Params) -> Result<i64, ApiError> {
    match p.get("lookback_delta").filter(|t| !t.is_empty()) {
        // zero or negative means the server's default, as in Prometheus's engine
        Some(t) if t.parse::<f64>().is_ok_and(|f| f <= 0.0) => {
            Ok(state.query.lookback_delta.as_millis() as i64)
        }
        Some(t) => parse_duration(t)
            .map(|d| if d.is_zero() { state.query.lookback_delta } else { d }.as_millis() as i64)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"lookback_delta\": {e}"))),
        None => Ok(state.query.lookback_delta.as_millis() as i64),
    }
}

/// The storage queries read: promflow's own, and the `remote_read` endpoints (only the
/// local one when there are none). Blocks on the endpoints: use from `spawn_blocking`.
pub(crate) fn fanout(
    state: &AppState,
    runtime: tokio::runtime::Handle,
) -> promflow_remote::reader::Fanout<'_> {
    promflow_remote::reader::Fanout::over(state.db.as_ref(), &state.remote_read, runtime)
}

/// What one server's own storage answers a request with `headers` (federation, remote read
/// served to others): in a cluster every node's, unless another node asks (its requests carry
/// `promflow-cluster-hop`), which this node answers from its own storage alone.
pub(crate) fn own_storage<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    runtime: tokio::runtime::Handle,
) -> promflow_remote::reader::Fanout<'a> {
    use promflow_remote::reader::{Fanout, CLUSTER_HOP_HEADER};
    if headers.contains_key(CLUSTER_HOP_HEADER) {
        Fanout::new(state.db.as_ref(), None, Vec::new(), runtime)
    } else {
        Fanout::over_cluster(state.db.as_ref(), &state.remote_read, runtime)
    }
}

fn compile(q: &str, opts: &promflow_promql::CompileOptions) -> Result<promflow_plan::Plan, ApiError> {
    promflow_promql::compile(q, opts).map_err(|e| match e {
        promflow_promql::Error::Parse(m) => ApiError::bad_data(format!("invalid parameter \"query\": {m}")),
        promflow_promql::Error::Unsupported(m) | promflow_promql::Error::Invalid(m) => ApiError::execution(m),
    })
}

/// Sets its flag when dropped: when the handler's future is dropped because the client
/// hung up, the query it started stops at its next check.
pub(crate) struct CancelOnDrop(pub(crate) Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A slot among `--query.max-concurrency`, waited for within the query's deadline, as
/// Prometheus's query queue counts towards the timeout.
pub(crate) async fn query_slot(
    state: &AppState,
    deadline: Option<Instant>,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let wait = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
    match tokio::time::timeout(wait, Arc::clone(&state.query_slots).acquire_owned()).await {
        Ok(Ok(slot)) => Ok(slot),
        _ => Err(ApiError::timeout("query timed out in query queue".into())),
    }
}

/// Evaluates `plan`, compiled from `text` with `compile`, in a query slot; in a cluster, its
/// aggregations in parts on the nodes where it can ([`crate::pushdown`]). The timings are
/// there whether or not it succeeds, for the query log.
async fn run_query(
    state: Arc<AppState>,
    plan: promflow_plan::Plan,
    mut opts: QueryOptions,
    (text, compile): (&str, &promflow_promql::CompileOptions),
) -> (Result<Evaluation, ApiError>, QueryTimings) {
    let queued = Instant::now();
    let slot = match query_slot(&state, opts.deadline).await {
        Ok(s) => s,
        Err(e) => return (Err(e), QueryTimings { queue: queued.elapsed(), ..QueryTimings::default() }),
    };
    let queue = queued.elapsed();
    let canceled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts.canceled = Some(Arc::clone(&canceled));
    let _cancel = CancelOnDrop(canceled);
    let runtime = tokio::runtime::Handle::current();
    let started = Instant::now();
    let pool = Arc::clone(&state.query_pool);
    let template = crate::pushdown::part_template(text, compile, &opts);
    let res = pool
        .spawn(move || {
            // the slot is the evaluation's, held until it ends even if the client left
            let _slot = slot;
            crate::pushdown::evaluate_over_cluster(&state, &plan, &opts, Some(template), runtime)
        })
        .await;
    let eval = started.elapsed();
    let mut timings = QueryTimings { queue, eval, ..QueryTimings::default() };
    let res = match res {
        Ok(Ok(r)) => {
            timings.samples = r.samples;
            Ok(r)
        }
        Ok(Err(e)) => Err(ApiError::from(e)),
        Err(e) => Err(ApiError::internal(format!("query panicked: {e}"))),
    };
    (res, timings)
}

/// Who asked a query, for the query log.
pub(super) struct Asker {
    method: Method,
    uri: Uri,
    client: Option<ClientAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Asker {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Asker {
            method: parts.method.clone(),
            // the path as the client wrote it, not as seen under the nested API router
            uri: parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or_else(|| parts.uri.clone(), |u| u.0.clone()),
            client: parts.extensions.get::<ClientAddr>().copied(),
        })
    }
}

/// Counts a query's timings in the engine's metrics, and writes its line to the query log
/// when one is configured: evaluated queries, whether they succeeded or failed, as Prometheus
/// logs them (a query that does not parse never reaches the log).
fn record_query(
    state: &AppState,
    asker: &Asker,
    query: &str,
    (start, end, step): (i64, i64, i64),
    t: QueryTimings,
    outcome: Result<Evaluation, ApiError>,
) -> Result<Evaluation, ApiError> {
    if outcome.is_ok() {
        state.http_metrics.observe_query(&t);
    }
    if !state.query_log.enabled() {
        return outcome;
    }
    let error = outcome.as_ref().err().map(|e| e.message.clone());
    let entry = LoggedQuery {
        query,
        start_ms: start,
        end_ms: end,
        step_ms: step,
        origin: QueryOrigin::Http {
            client: asker.client.map(|c| c.0.ip().to_string()).unwrap_or_default(),
            method: asker.method.to_string(),
            path: asker.uri.path().to_string(),
        },
        error: error.as_deref(),
    };
    state.query_log.log(&entry, t);
    outcome
}

pub(super) async fn query(
    State(state): Shared,
    asker: Asker,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let text = p.get("query").unwrap_or("").to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let t = time_param(&p, "time", Some(now))?;
    let timeout = query_timeout(&state, &p)?;
    let prepared = Instant::now();
    let plan = compile(&text, &state.query.compile)?;
    let preparation = prepared.elapsed();
    if p.get("explain").is_some_and(|v| v == "1" || v == "true") {
        return Ok(success(json!({"resultType": "explain", "result": plan.to_string()})));
    }
    let opts = query_options(&state, &p, (t, t, 1), timeout, false)?;
    let (res, timings) = run_query(Arc::clone(&state), plan, opts, (&text, &state.query.compile)).await;
    let res = record_query(&state, &asker, &text, (t, t, 0), QueryTimings { preparation, ..timings }, res)?;
    Ok(json_response(render_result(&res)))
}

/// The evaluation settings of a query over `(start, end, step)` in milliseconds, from the
/// server's flags and the request's `lookback_delta`.
fn query_options(
    state: &AppState,
    p: &Params,
    (start, end, step): (i64, i64, i64),
    timeout: Duration,
    range_query: bool,
) -> Result<QueryOptions, ApiError> {
    Ok(QueryOptions {
        start,
        end,
        step,
        lookback_ms: lookback(state, p)?,
        max_samples: state.query.max_samples,
        deadline: Some(Instant::now() + timeout),
        delayed_name_removal: state.query.delayed_name_removal,
        use_start_timestamps: state.query.use_start_timestamps,
        range_query,
        canceled: None,
    })
}

pub(super) async fn query_range(
    State(state): Shared,
    asker: Asker,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let start = time_param(&p, "start", None)?;
    let end = time_param(&p, "end", None)?;
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start time".into()));
    }
    let zero_step = || {
        ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        )
    };
    let step = match p.get("step") {
        Some(s) if s.parse::<f64>().is_ok_and(|f| f <= 0.0) => return Err(zero_step()),
        Some(s) if !s.is_empty() => {
            parse_duration(s).map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?
        }
        _ => {
            return Err(ApiError::bad_data(
                "invalid parameter \"step\": cannot parse \"\" to a valid duration".into(),
            ))
        }
    };
    let step_ms = step.as_millis() as i64;
    if step_ms <= 0 {
        return Err(zero_step());
    }
    if (end as i128 - start as i128) / step_ms as i128 > 11_000 {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    let timeout = query_timeout(&state, &p)?;
    // step() and range() in the query stand for this query's resolution and span
    let compile_opts = promflow_promql::CompileOptions {
        step,
        range: Duration::from_millis((end - start) as u64),
        ..state.query.compile.clone()
    };
    let text = p.get("query").unwrap_or("");
    let prepared = Instant::now();
    let plan = compile(text, &compile_opts)?;
    let preparation = prepared.elapsed();
    let opts = query_options(&state, &p, (start, end, step_ms), timeout, true)?;
    let (res, timings) = run_query(Arc::clone(&state), plan, opts, (text, &compile_opts)).await;
    let t = QueryTimings { preparation, ..timings };
    let res = record_query(&state, &asker, text, (start, end, step_ms), t, res)?;
    Ok(json_response(render_result(&res)))
}

/// Renders a query result and its warnings and infos as Prometheus's JSON, by hand:
/// timestamps must be printed as seconds without a trailing `.0`, which a generic serializer
/// cannot do. A native histogram is a `histogram` (in a vector) or among the `histograms` of
/// a series (in a matrix), as Prometheus writes them.
pub fn render_result(evaluation: &Evaluation) -> String {
    let (res, histograms) = (&evaluation.result, &evaluation.histograms);
    let mut out = String::with_capacity(256);
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":");
    match res {
        QueryResult::Scalar(t, v) => {
            let _ = write!(out, "\"scalar\",\"result\":[{},\"{}\"]", format_timestamp(*t), format_value(*v));
        }
        QueryResult::String(t, s) => {
            let _ = write!(out, "\"string\",\"result\":[{},{}]", format_timestamp(*t), json!(s));
        }
        QueryResult::Vector(v) => {
            out.push_str("\"vector\",\"result\":[");
            // floats in the result's order; histograms merged in by labels (a vector that
            // holds histograms is in label order: sorting by value leaves them out)
            let mut hists =
                histograms.iter().filter_map(|s| s.samples.first().map(|p| (&s.labels, p))).peekable();
            let mut first = true;
            let mut sep = |out: &mut String| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
            };
            for (labels, t, val) in v {
                while let Some((hl, p)) = hists.next_if(|(hl, _)| *hl < labels) {
                    sep(&mut out);
                    write_histogram_sample(&mut out, hl, p);
                }
                sep(&mut out);
                out.push_str("{\"metric\":");
                write_labels(&mut out, labels);
                let _ = write!(out, ",\"value\":[{},\"{}\"]}}", format_timestamp(*t), format_value(*val));
            }
            for (hl, p) in hists {
                sep(&mut out);
                write_histogram_sample(&mut out, hl, p);
            }
            out.push(']');
        }
        QueryResult::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":[");
            let mut hists = histograms.iter().peekable();
            let mut first = true;
            let mut sep = |out: &mut String| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
            };
            for s in m {
                while let Some(h) = hists.next_if(|h| h.labels < s.labels) {
                    sep(&mut out);
                    write_series(&mut out, &h.labels, &[], &h.samples);
                }
                sep(&mut out);
                let own = hists.next_if(|h| h.labels == s.labels).map_or(&[][..], |h| &h.samples[..]);
                let floats: Vec<Sample> = s.samples.iter().collect();
                write_series(&mut out, &s.labels, &floats, own);
            }
            for h in hists {
                sep(&mut out);
                write_series(&mut out, &h.labels, &[], &h.samples);
            }
            out.push(']');
        }
    }
    out.push('}');
    for (key, level) in [("warnings", Level::Warning), ("infos", Level::Info)] {
        let texts = evaluation.annotations.texts(level, Some(MAX_ANNOTATIONS));
        if !texts.is_empty() {
            let _ = write!(out, ",\"{key}\":{}", json!(texts));
        }
    }
    out.push('}');
    out
}

/// Writes one series of a matrix: its float `values` and its `histograms`, each only when
/// it has some, as Prometheus writes them.
fn write_series(out: &mut String, labels: &Labels, floats: &[Sample], hists: &[HistogramSample]) {
    out.push_str("{\"metric\":");
    write_labels(out, labels);
    if !floats.is_empty() {
        out.push_str(",\"values\":[");
        for (j, p) in floats.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{},\"{}\"]", format_timestamp(p.t), format_value(p.v));
        }
        out.push(']');
    }
    if !hists.is_empty() {
        out.push_str(",\"histograms\":[");
        for (j, p) in hists.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{},", format_timestamp(p.t));
            write_histogram(out, &p.h);
            out.push(']');
        }
        out.push(']');
    }
    out.push('}');
}

/// Writes one element of a vector whose value is a native histogram.
fn write_histogram_sample(out: &mut String, labels: &Labels, p: &HistogramSample) {
    out.push_str("{\"metric\":");
    write_labels(out, labels);
    let _ = write!(out, ",\"histogram\":[{},", format_timestamp(p.t));
    write_histogram(out, &p.h);
    out.push_str("]}");
}

/// How many warnings, and how many infos, a response lists (Prometheus's limit).
const MAX_ANNOTATIONS: usize = 10;

pub(super) fn labels_json(l: &Labels) -> Value {
    Value::Object(l.iter().map(|x| (x.name.to_string(), Value::String(x.value.to_string()))).collect())
}

/// Writes a label set as the API's JSON object, as [`labels_json`] would serialize (a label
/// set is sorted by name, as a JSON map orders it), without building the map: every sample of
/// a query's result and of a subscription's change goes through here.
pub(crate) fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, label) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, &label.name);
        out.push(':');
        write_json_string(out, &label.value);
    }
    out.push('}');
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // every escaped byte is ASCII, so `i` is on a character boundary
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

pub(super) async fn format_query(q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = params(&q, &headers, &body);
    let text = promflow_promql::format_query(p.get("query").unwrap_or(""))
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    Ok(success(Value::String(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_written_as_serde_json_writes_them() {
        let l = Labels::from_pairs([
            ("__name__", "up"),
            ("quote", "a\"b\\c"),
            ("controls", "\n\r\t\u{8}\u{c}\u{1}\u{1f}"),
            ("unicode", "é/✓"),
            ("empty_name_is_dropped", ""),
        ]);
        let mut out = String::new();
        write_labels(&mut out, &l);
        assert_eq!(out, labels_json(&l).to_string());
        out.clear();
        write_labels(&mut out, &Labels::new());
        assert_eq!(out, "{}");
    }

    #[test]
    fn histograms_are_written_beside_floats_in_label_order() {
        use promflow_storage::native_histogram::Span;
        use promflow_storage::{FloatHistogram, HistogramSeries};
        let h = FloatHistogram::from_spans(
            0,
            0.001,
            2.0,
            5.0,
            3.5,
            (&[Span { offset: 0, length: 1 }], &[3.0]),
            (&[], &[]),
            Vec::new(),
        )
        .unwrap();
        let name = |n: &str| Labels::from_pairs([("__name__", n)]);
        let point = HistogramSample { t: 1500, h: Arc::new(h) };
        let vector = Evaluation {
            result: QueryResult::Vector(vec![(name("a"), 1500, 1.0), (name("c"), 1500, 2.0)]),
            annotations: Default::default(),
            samples: 0,
            histograms: vec![HistogramSeries { labels: name("b"), samples: vec![point.clone()] }],
        };
        let got: Value = serde_json::from_str(&render_result(&vector)).unwrap();
        let result = &got["data"]["result"];
        assert_eq!(result[0]["metric"]["__name__"], "a");
        assert_eq!(
            result[1],
            json!({"metric": {"__name__": "b"}, "histogram": [1.5, {"count": "5", "sum": "3.5",
                "buckets": [[3, "-0.001", "0.001", "2"], [0, "0.5", "1", "3"]]}]})
        );
        assert_eq!(result[2]["value"], json!([1.5, "2"]));
        let matrix = Evaluation {
            result: QueryResult::Matrix(vec![promflow_storage::Series {
                labels: name("b"),
                samples: vec![Sample { t: 1000, v: 4.0 }].into_iter().collect(),
            }]),
            ..vector
        };
        let got: Value = serde_json::from_str(&render_result(&matrix)).unwrap();
        assert_eq!(got["data"]["result"][0]["values"], json!([[1, "4"]]));
        assert_eq!(got["data"]["result"][0]["histograms"][0][0], json!(1.5));
    }
}
