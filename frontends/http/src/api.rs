//! Route table and handlers of Prometheus's HTTP API v1.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use promflow_plan::format::{format_timestamp, format_value};
use promflow_plan::{Annotations, Evaluation, Level, QueryOptions, QueryResult};
use promflow_storage::{Labels, Matcher, Querier};
use serde_json::{json, Value};

use crate::params::{limit_param, parse_duration, time_param, Params, MAX_TIME_MS, MIN_TIME_MS};
use crate::{ApiError, AppState};

type Shared = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

/// Builds the router; `route_prefix` is `--web.route-prefix` ("/" for none).
pub fn router(state: Arc<AppState>, route_prefix: &str) -> Router {
    let api = Router::new()
        .route("/query", any(query))
        .route("/query_range", any(query_range))
        .route("/sql", any(crate::sql::sql))
        .route("/format_query", any(format_query))
        .route("/query_exemplars", any(empty_list))
        .route("/series", any(series))
        .route("/labels", any(labels))
        .route("/label/{name}/values", get(label_values))
        .route("/metadata", get(metadata))
        .route("/targets", get(targets))
        .route("/targets/metadata", get(targets_metadata))
        .route("/scrape_pools", get(scrape_pools))
        .route("/rules", get(rules))
        .route("/alerts", get(alerts))
        .route("/alertmanagers", get(alertmanagers))
        .route("/status/buildinfo", get(buildinfo))
        .route("/status/config", get(status_config))
        .route("/status/flags", get(status_flags))
        .route("/status/runtimeinfo", get(runtimeinfo))
        .route("/status/tsdb", get(status_tsdb))
        .route("/status/walreplay", get(walreplay))
        .route("/write", post(remote_write).get(vm_proto_version))
        .route("/read", post(crate::remote_read::remote_read))
        .route("/subscribe", get(crate::subscribe::subscribe))
        .route("/admin/tsdb/{op}", any(admin));
    let root = Router::new()
        .nest("/api/v1", api)
        .route("/-/healthy", any(|| async { "Prometheus Server is Healthy.\n" }))
        .route("/-/ready", any(ready))
        .route("/-/reload", any(reload))
        .route("/-/quit", any(quit))
        .route("/metrics", get(self_metrics))
        .route("/federate", get(crate::federate::federate))
        .route("/metrics/{*group}", put(crate::push::put).post(crate::push::post).delete(crate::push::delete))
        .merge(crate::ui::routes(route_prefix.trim_end_matches('/')))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true).no_br().no_deflate().no_zstd())
        .layer(middleware::from_fn_with_state(state.read_timeout, crate::serve::body_deadline))
        .with_state(state.clone());
    let prefix = route_prefix.trim_end_matches('/');
    let app = if prefix.is_empty() { root } else { Router::new().nest(prefix, root) };
    // outermost, so that every path and method (unknown ones too) is authenticated
    app.layer(middleware::from_fn_with_state(Arc::clone(&state.web), crate::serve::response_headers))
        .layer(middleware::from_fn_with_state(Arc::clone(&state.web), crate::serve::authenticate))
}

async fn observe(State(state): Shared, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    state.http_metrics.observe(&handler, resp.status().as_u16());
    resp
}

/// Prometheus's CORS headers for a request with an `Origin`: the origin is allowed when it
/// matches `--web.cors.origin` (every origin, answered `*`, for the default `.*`); `OPTIONS`
/// answers 204.
async fn cors(State(state): Shared, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let is_options = req.method() == Method::OPTIONS;
    let mut resp = if is_options { StatusCode::NO_CONTENT.into_response() } else { next.run(req).await };
    let Some(origin) = origin else { return resp };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Accept, Authorization, Content-Type, Origin"),
    );
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Date"));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    match &state.cors_origin {
        None => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        Some(allowed) if origin.to_str().is_ok_and(|o| allowed.is_match(o)) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        Some(_) => {}
    }
    resp
}

pub(crate) fn success(data: Value) -> Response {
    json_response(json!({"status": "success", "data": data}).to_string())
}

pub(crate) fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn params(q: &RawQuery, headers: &HeaderMap, body: &Bytes) -> Params {
    Params::new(q.0.as_deref(), headers, body)
}

// ---- queries ----

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
fn fanout(state: &AppState, runtime: tokio::runtime::Handle) -> promflow_remote::reader::Fanout<'_> {
    let oldest = state.db.oldest_sample_time();
    promflow_remote::reader::Fanout::new(state.db.as_ref(), oldest, state.remote_read.current(), runtime)
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

async fn run_query(
    state: Arc<AppState>,
    plan: promflow_plan::Plan,
    mut opts: QueryOptions,
) -> Result<Evaluation, ApiError> {
    let slot = query_slot(&state, opts.deadline).await?;
    let canceled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts.canceled = Some(Arc::clone(&canceled));
    let _cancel = CancelOnDrop(canceled);
    let runtime = tokio::runtime::Handle::current();
    let res = tokio::task::spawn_blocking(move || {
        // the slot is the evaluation's, held until it ends even if the client left
        let _slot = slot;
        let storage = fanout(&state, runtime);
        let mut res = promflow_batch::evaluate(&plan, &storage, &opts);
        if let Ok(r) = &mut res {
            for w in storage.warnings() {
                r.annotations.add(Level::Warning, w, None);
            }
        }
        res
    })
    .await
    .map_err(|e| ApiError::internal(format!("query panicked: {e}")))?;
    res.map_err(ApiError::from)
}

async fn query(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = params(&q, &headers, &body);
    let text = p.get("query").unwrap_or("").to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let t = time_param(&p, "time", Some(now))?;
    let timeout = query_timeout(&state, &p)?;
    let plan = compile(&text, &state.query.compile)?;
    if p.get("explain").is_some_and(|v| v == "1" || v == "true") {
        return Ok(success(json!({"resultType": "explain", "result": plan.to_string()})));
    }
    let opts = query_options(&state, &p, (t, t, 1), timeout, false)?;
    let res = run_query(state, plan, opts).await?;
    Ok(json_response(render_result(&res.result, &res.annotations)))
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
        range_query,
        canceled: None,
    })
}

async fn query_range(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
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
    let plan = compile(p.get("query").unwrap_or(""), &compile_opts)?;
    let opts = query_options(&state, &p, (start, end, step_ms), timeout, true)?;
    let res = run_query(state, plan, opts).await?;
    Ok(json_response(render_result(&res.result, &res.annotations)))
}

/// Renders a query result and its warnings and infos as Prometheus's JSON, by hand:
/// timestamps must be printed as seconds without a trailing `.0`, which a generic serializer
/// cannot do.
pub fn render_result(res: &QueryResult, annotations: &Annotations) -> String {
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
            for (i, (labels, t, val)) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, labels);
                let _ = write!(out, ",\"value\":[{},\"{}\"]}}", format_timestamp(*t), format_value(*val));
            }
            out.push(']');
        }
        QueryResult::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":[");
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, p) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "[{},\"{}\"]", format_timestamp(p.t), format_value(p.v));
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    for (key, level) in [("warnings", Level::Warning), ("infos", Level::Info)] {
        let texts = annotations.texts(level, Some(MAX_ANNOTATIONS));
        if !texts.is_empty() {
            let _ = write!(out, ",\"{key}\":{}", json!(texts));
        }
    }
    out.push('}');
    out
}

/// How many warnings, and how many infos, a response lists (Prometheus's limit).
const MAX_ANNOTATIONS: usize = 10;

fn labels_json(l: &Labels) -> Value {
    Value::Object(l.iter().map(|x| (x.name.clone(), Value::String(x.value.clone()))).collect())
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

async fn format_query(q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = params(&q, &headers, &body);
    let text = promflow_promql::format_query(p.get("query").unwrap_or(""))
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    Ok(success(Value::String(text)))
}

async fn empty_list() -> Response {
    success(json!([]))
}

// ---- metadata ----

pub(crate) fn parse_selectors(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut out = Vec::new();
    for s in p.all("match[]") {
        let plan = promflow_promql::compile(s, &Default::default())
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        match plan {
            promflow_plan::Plan::Select { matchers, .. } => {
                if matchers.iter().all(|m| m.matches_empty()) {
                    return Err(ApiError::bad_data(
                        "invalid parameter \"match[]\": match[] must contain at least one non-empty matcher"
                            .into(),
                    ));
                }
                out.push(matchers)
            }
            _ => {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"match[]\": {s:?} is not a series selector"
                )))
            }
        }
    }
    Ok(out)
}

fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((time_param(p, "start", Some(MIN_TIME_MS))?, time_param(p, "end", Some(MAX_TIME_MS))?))
}

fn storage_err(e: promflow_storage::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

fn truncate<T>(mut v: Vec<T>, limit: usize) -> Vec<T> {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
    }
    v
}

async fn series(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = params(&q, &headers, &body);
    let sels = parse_selectors(&p)?;
    if sels.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided".into()));
    }
    let (mint, maxt) = time_range(&p)?;
    let limit = limit_param(&p)?;
    // the remote_read endpoints are asked too, off the async workers
    let runtime = tokio::runtime::Handle::current();
    let found = tokio::task::spawn_blocking(move || {
        let storage = fanout(&state, runtime);
        let mut all: Vec<Labels> = Vec::new();
        for m in &sels {
            all.extend(storage.series(m, mint, maxt)?);
        }
        Ok::<_, promflow_storage::Error>(all)
    })
    .await
    .map_err(|e| ApiError::internal(format!("series lookup panicked: {e}")))?;
    let mut all = found.map_err(storage_err)?;
    all.sort();
    all.dedup();
    Ok(success(Value::Array(truncate(all, limit).iter().map(labels_json).collect())))
}

async fn labels(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = params(&q, &headers, &body);
    let sels = parse_selectors(&p)?;
    let (mint, maxt) = time_range(&p)?;
    let limit = limit_param(&p)?;
    let mut names: Vec<String> = Vec::new();
    if sels.is_empty() {
        names = state.db.label_names(&[], mint, maxt).map_err(storage_err)?;
    } else {
        for m in &sels {
            names.extend(state.db.label_names(m, mint, maxt).map_err(storage_err)?);
        }
        names.sort();
        names.dedup();
    }
    Ok(success(json!(truncate(names, limit))))
}

/// Undoes Grafana's and Prometheus's `U__` escaping of a label name in a URL path.
pub fn unescape_label_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("U__") else { return name.to_string() };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let hex: String = chars.by_ref().take_while(|&c| c != '_').collect();
        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            Some(ch) => out.push(ch),
            None => return name.to_string(),
        }
    }
    out
}

async fn label_values(
    State(state): Shared,
    Path(name): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let p = params(&q, &headers, &Bytes::new());
    let name = unescape_label_name(&name);
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let sels = parse_selectors(&p)?;
    let (mint, maxt) = time_range(&p)?;
    let limit = limit_param(&p)?;
    let mut values: Vec<String> = Vec::new();
    if sels.is_empty() {
        values = state.db.label_values(&name, &[], mint, maxt).map_err(storage_err)?;
    } else {
        for m in &sels {
            values.extend(state.db.label_values(&name, m, mint, maxt).map_err(storage_err)?);
        }
        values.sort();
        values.dedup();
    }
    Ok(success(json!(truncate(values, limit))))
}

async fn metadata(State(state): Shared, q: RawQuery) -> ApiResult {
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let limit = p.get("limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(-1);
    let metric = p.get("metric").unwrap_or("");
    let mut map = serde_json::Map::new();
    for (_, md) in state.scrape.metadata() {
        if !metric.is_empty() && md.family != metric {
            continue;
        }
        let entry = map.entry(md.family.clone()).or_insert_with(|| json!([]));
        let item = json!({"type": md.metric_type.as_str(), "help": md.help, "unit": md.unit});
        if let Some(a) = entry.as_array_mut() {
            if !a.contains(&item) {
                a.push(item);
            }
        }
    }
    if limit >= 0 {
        let keys: Vec<String> = map.keys().skip(limit as usize).cloned().collect();
        for k in keys {
            map.remove(&k);
        }
    }
    Ok(success(Value::Object(map)))
}

async fn targets(State(state): Shared, q: RawQuery) -> ApiResult {
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let want = p.get("state").unwrap_or("any");
    let pool = p.get("scrapePool");
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    for t in state.scrape.targets() {
        if pool.is_some_and(|p| p != t.scrape_pool) {
            continue;
        }
        if t.dropped {
            dropped.push(
                json!({"discoveredLabels": labels_json(&t.discovered_labels), "scrapePool": t.scrape_pool}),
            );
            continue;
        }
        active.push(json!({
            "discoveredLabels": labels_json(&t.discovered_labels),
            "labels": labels_json(&t.labels),
            "scrapePool": t.scrape_pool,
            "scrapeUrl": t.scrape_url,
            "globalUrl": t.scrape_url,
            "lastError": t.last_error,
            "lastScrape": t.last_scrape.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "lastScrapeDuration": t.last_duration.as_secs_f64(),
            "health": t.health,
            "scrapeInterval": promflow_config::format_duration(t.interval),
            "scrapeTimeout": promflow_config::format_duration(t.timeout),
        }));
    }
    let mut data = serde_json::Map::new();
    if want == "active" || want == "any" || want.is_empty() {
        data.insert("activeTargets".into(), Value::Array(active));
    }
    if want == "dropped" || want == "any" || want.is_empty() {
        data.insert("droppedTargets".into(), Value::Array(dropped));
    }
    Ok(success(Value::Object(data)))
}

async fn targets_metadata(State(state): Shared, q: RawQuery) -> ApiResult {
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let metric = p.get("metric").unwrap_or("");
    let limit = p.get("limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(-1);
    let target_matchers = match p.get("match_target").filter(|s| !s.is_empty()) {
        Some(sel) => match promflow_promql::compile(sel, &Default::default()) {
            Ok(promflow_plan::Plan::Select { matchers, .. }) => matchers,
            _ => return Err(ApiError::bad_data(format!("invalid parameter \"match_target\": {sel:?}"))),
        },
        None => vec![],
    };
    let mut out = Vec::new();
    for (target, md) in state.scrape.metadata() {
        if limit >= 0 && out.len() as i64 >= limit {
            break;
        }
        if !metric.is_empty() && md.family != metric {
            continue;
        }
        if !target_matchers.iter().all(|m| m.matches_labels(&target)) {
            continue;
        }
        let mut item = json!({"target": labels_json(&target), "type": md.metric_type.as_str(), "help": md.help, "unit": md.unit});
        if metric.is_empty() {
            item["metric"] = Value::String(md.family.clone());
        }
        out.push(item);
    }
    Ok(success(Value::Array(out)))
}

async fn scrape_pools(State(state): Shared) -> ApiResult {
    let mut pools: Vec<String> = state.scrape.targets().into_iter().map(|t| t.scrape_pool).collect();
    pools.sort();
    pools.dedup();
    Ok(success(json!({"scrapePools": pools})))
}

async fn rules(State(state): Shared, q: RawQuery) -> ApiResult {
    use promflow_rules::RuleSpec;
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let (with_alerts, with_records) = match p.get("type").unwrap_or("") {
        "" => (true, true),
        "alert" => (true, false),
        "record" => (false, true),
        other => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"type\": not supported value {other:?}"
            )))
        }
    };
    let exclude_alerts = p.get("exclude_alerts").is_some_and(|v| v == "true");
    let (names, groups, files) = (p.all("rule_name[]"), p.all("rule_group[]"), p.all("file[]"));
    let wanted = |set: &[&str], v: &str| set.is_empty() || set.contains(&v);
    let mut out = Vec::new();
    for g in state.rules.groups() {
        if !wanted(&groups, &g.name) || !wanted(&files, &g.file) {
            continue;
        }
        let mut rules = Vec::new();
        for r in g.rules.iter().filter(|r| wanted(&names, r.spec.name())) {
            let mut v = match &r.spec {
                RuleSpec::Record(_) if !with_records => continue,
                RuleSpec::Alert(_) if !with_alerts => continue,
                RuleSpec::Record(rec) => {
                    let mut v = json!({"name": rec.name, "query": rec.query});
                    // `omitempty` in Prometheus
                    if !rec.labels.is_empty() {
                        v["labels"] = string_map(rec.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    }
                    v
                }
                RuleSpec::Alert(a) => {
                    let mut v = json!({
                        "state": r.alert_state().as_str(),
                        "name": a.name,
                        "query": a.query,
                        "duration": go_seconds(a.for_ms),
                        "keepFiringFor": go_seconds(a.keep_firing_for_ms),
                        "labels": string_map(a.labels.iter().map(|(k, t, _)| (k.as_str(), t.as_str()))),
                        "annotations": string_map(a.annotations.iter().map(|(k, t, _)| (k.as_str(), t.as_str()))),
                    });
                    if !exclude_alerts {
                        v["alerts"] = Value::Array(r.alerts.iter().map(alert_json).collect());
                    }
                    v
                }
            };
            v["health"] = Value::from(r.health.as_str());
            if let Some(e) = &r.last_error {
                v["lastError"] = Value::from(e.clone());
            }
            v["evaluationTime"] = Value::from(r.evaluation_time.as_secs_f64());
            v["lastEvaluation"] = Value::from(rfc3339_ms(r.last_evaluation_ms));
            v["type"] =
                Value::from(if matches!(r.spec, RuleSpec::Record(_)) { "recording" } else { "alerting" });
            rules.push(v);
        }
        if rules.is_empty() {
            continue;
        }
        out.push(json!({
            "name": g.name,
            "file": g.file,
            "rules": rules,
            // Go prints a whole float64 without a fraction: `60`, not `60.0`
            "interval": go_seconds(g.interval_ms),
            "limit": g.limit,
            "evaluationTime": g.evaluation_time.as_secs_f64(),
            "lastEvaluation": rfc3339_ms(g.last_evaluation_ms),
        }));
    }
    Ok(success(json!({"groups": out})))
}

/// Milliseconds as seconds the way Go's JSON prints a float64 (`60`, `1.5`).
fn go_seconds(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn string_map<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Object(pairs.map(|(k, v)| (k.to_string(), Value::from(v))).collect())
}

/// An alert as `/api/v1/alerts` and `/api/v1/rules` show it.
fn alert_json(a: &promflow_rules::Alert) -> Value {
    let mut v = json!({
        "labels": labels_json(&a.labels),
        "annotations": string_map(a.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        "state": a.state.as_str(),
        "activeAt": rfc3339_ms(Some(a.active_at)),
        "value": go_float_e(a.value),
    });
    if let Some(since) = a.keep_firing_since {
        v["keepFiringSince"] = Value::from(rfc3339_ms(Some(since)));
    }
    v
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`: shortest digits, exponent with a sign and at
/// least two digits (`1e+00`, `1.2345675e+06`).
fn go_float_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// A millisecond time as Go's JSON encoding of a `time.Time` (its zero value when unset).
fn rfc3339_ms(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

async fn alerts(State(state): Shared) -> Response {
    let alerts: Vec<Value> = state.rules.alerts().iter().map(alert_json).collect();
    success(json!({"alerts": alerts}))
}

async fn alertmanagers(State(state): Shared) -> Response {
    let n = Arc::clone(&state.notifier);
    // discovery may read files
    let (active, dropped) = tokio::task::spawn_blocking(move || n.alertmanagers()).await.unwrap_or_default();
    let urls = |v: Vec<String>| v.into_iter().map(|url| json!({"url": url})).collect::<Vec<_>>();
    success(json!({"activeAlertmanagers": urls(active), "droppedAlertmanagers": urls(dropped)}))
}

// ---- status ----

async fn buildinfo(State(state): Shared) -> Response {
    success(json!({
        "version": state.status.version,
        "revision": format!("promflow-{}", env!("CARGO_PKG_VERSION")),
        "branch": "main",
        "buildUser": "promflow",
        "buildDate": "",
        "goVersion": "rust",
    }))
}

async fn status_config(State(state): Shared) -> Response {
    let yaml = state.status.config_yaml.read().map(|c| c.clone()).unwrap_or_default();
    success(json!({ "yaml": yaml }))
}

async fn status_flags(State(state): Shared) -> Response {
    let map: serde_json::Map<String, Value> =
        state.status.flags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    success(Value::Object(map))
}

async fn runtimeinfo(State(state): Shared) -> Response {
    let st = &state.status;
    let start = chrono::DateTime::from_timestamp(st.start_seconds, 0).unwrap_or_default();
    let last = chrono::DateTime::from_timestamp(st.last_reload_seconds.load(Ordering::SeqCst), 0)
        .unwrap_or_default();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    success(json!({
        "startTime": start.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": st.reload_ok.load(Ordering::SeqCst),
        "lastConfigTime": last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "corruptionCount": state.db.stats(0).wal_corruptions,
        // promflow's: blocks skipped at start because they could not be read
        "unreadableBlocks": state.db.stats(0).unreadable_blocks,
        "goroutineCount": 0,
        "GOMAXPROCS": threads,
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": st.storage_retention,
    }))
}

async fn status_tsdb(State(state): Shared, q: RawQuery) -> ApiResult {
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let limit = match p.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::bad_data("limit must be a positive number".into()))?,
        None => 10,
    };
    let s = state.db.stats(limit);
    let pairs = |v: &[(String, u64)]| -> Value {
        Value::Array(v.iter().map(|(n, c)| json!({"name": n, "value": c})).collect())
    };
    Ok(success(json!({
        "headStats": {
            "numSeries": s.num_series,
            "numLabelPairs": s.num_label_pairs,
            "chunkCount": s.num_chunks,
            "minTime": s.min_time.unwrap_or(i64::MAX),
            "maxTime": s.max_time.unwrap_or(i64::MIN),
        },
        "seriesCountByMetricName": pairs(&s.series_count_by_metric),
        "labelValueCountByLabelName": pairs(&s.label_value_count_by_label_name),
        "memoryInBytesByLabelName": [],
        "seriesCountByLabelValuePair": pairs(&s.series_count_by_label_value_pair),
    })))
}

async fn walreplay() -> Response {
    success(json!({"min": 0, "max": 0, "current": 0}))
}

/// The TSDB admin API (`--web.enable-admin-api`): `snapshot`, `delete_series` and
/// `clean_tombstones`, with Prometheus's parameters, answers and errors.
async fn admin(
    State(state): Shared,
    Path(op): Path<String>,
    method: Method,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !matches!(op.as_str(), "snapshot" | "delete_series" | "clean_tombstones") {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    if method != Method::POST && method != Method::PUT {
        return Ok(StatusCode::METHOD_NOT_ALLOWED.into_response());
    }
    if !state.admin_enabled {
        return Err(ApiError {
            error_type: "unavailable",
            message: "admin APIs disabled".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        });
    }
    let p = params(&q, &headers, &body);
    let db = Arc::clone(&state.db);
    // the work is file I/O: off the async workers
    let blocking = |f: Box<dyn FnOnce() -> Result<Response, ApiError> + Send>| async move {
        tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(e.to_string()))?
    };
    match op.as_str() {
        "snapshot" => {
            let skip_head = match p.get("skip_head") {
                None | Some("") => false,
                Some(v) => parse_go_bool(v).ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "unable to parse boolean 'skip_head' argument: strconv.ParseBool: parsing {v:?}: invalid syntax"
                    ))
                })?,
            };
            let now = chrono::Utc::now();
            let nanos = now.timestamp_nanos_opt().unwrap_or_default() as u64;
            let name = format!(
                "{}-{:016x}",
                now.format("%Y%m%dT%H%M%SZ"),
                nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            );
            blocking(Box::new(move || {
                db.snapshot(&name, skip_head)
                    .map_err(|e| ApiError::internal(format!("create snapshot: {e}")))?;
                Ok(success(json!({ "name": name })))
            }))
            .await
        }
        "delete_series" => {
            let sels = parse_selectors(&p)?;
            if sels.is_empty() {
                return Err(ApiError::bad_data("no match[] parameter provided".into()));
            }
            let (mint, maxt) = time_range(&p)?;
            blocking(Box::new(move || {
                for m in &sels {
                    db.delete_series(m, mint, maxt).map_err(|e| ApiError::internal(e.to_string()))?;
                }
                Ok(StatusCode::NO_CONTENT.into_response())
            }))
            .await
        }
        _ => {
            blocking(Box::new(move || {
                db.clean_tombstones().map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }))
            .await
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

// ---- ingest ----

async fn remote_write(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    use promflow_remote::Message1or2;
    if !state.remote_write_enabled {
        return (
            StatusCode::NOT_FOUND,
            "remote write receiver needs to be enabled with --web.enable-remote-write-receiver\n",
        )
            .into_response();
    }
    let unsupported = |e: String| (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{e}\n")).into_response();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let message = match Message1or2::from_content_type(content_type) {
        Ok(m) => m,
        Err(e) => return unsupported(e),
    };
    let encoding = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None => "snappy",
        Some(e) if e.eq_ignore_ascii_case("snappy") => "snappy",
        Some(e) if e.eq_ignore_ascii_case("zstd") => "zstd",
        Some(e) => {
            return unsupported(format!("unsupported content encoding {e:?}; snappy and zstd are accepted"))
        }
    };
    state.http_metrics.observe_remote_write(message.name(), encoding);
    let result = tokio::task::spawn_blocking(move || {
        let raw = match encoding {
            "zstd" => promflow_remote::decompress_zstd(&body)?,
            _ => promflow_remote::decompress(&body)?,
        };
        let req = match message {
            Message1or2::V1 => promflow_remote::RequestView::parse(&raw)?,
            Message1or2::V2 => promflow_remote::RequestView::parse_v2(&raw)?,
        };
        let mut app = state.db.appender();
        match promflow_remote::append_request(&req, app.as_mut()) {
            Ok(n) => app.commit().map(|_| n).map_err(promflow_remote::Error::Storage),
            Err(e) => {
                app.rollback();
                Err(e)
            }
        }
    })
    .await;
    // remote write 2.0 answers say what was written (histograms and exemplars are not stored)
    let written = |n: usize, mut r: Response| {
        if message == Message1or2::V2 {
            let h = r.headers_mut();
            for (name, v) in [
                ("x-prometheus-remote-write-samples-written", n),
                ("x-prometheus-remote-write-histograms-written", 0),
                ("x-prometheus-remote-write-exemplars-written", 0),
            ] {
                h.insert(name, v.into());
            }
        }
        r
    };
    match result {
        Ok(Ok(n)) => written(n, StatusCode::NO_CONTENT.into_response()),
        Ok(Err(e @ promflow_remote::Error::TooLarge(_))) => {
            tracing::warn!(error = %e, "remote write: request rejected");
            written(0, (StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")).into_response())
        }
        Ok(Err(promflow_remote::Error::Storage(e))) if !e.is_sample_error() => {
            tracing::error!(error = %e, "remote write: storage failed");
            written(0, (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "remote write: request rejected");
            written(0, (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response())
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// vmagent asks a remote-write URL `?get_vm_proto_version=1` whether it takes its protocol:
/// Prometheus's protobuf compressed with zstd instead of snappy. The receiver does ("1").
async fn vm_proto_version(State(state): Shared, RawQuery(q): RawQuery) -> Response {
    let asked = q.is_some_and(|q| q.split('&').any(|p| p.starts_with("get_vm_proto_version")));
    if !state.remote_write_enabled || !asked {
        return (StatusCode::METHOD_NOT_ALLOWED, "remote write takes POST requests\n").into_response();
    }
    "1".into_response()
}

// ---- lifecycle ----

async fn ready(State(state): Shared) -> Response {
    if state.status.ready.load(Ordering::SeqCst) {
        "Prometheus Server is Ready.\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

fn lifecycle_guard(state: &AppState, method: &Method) -> Option<Response> {
    if !state.lifecycle_enabled {
        return Some((StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response());
    }
    if method != Method::POST && method != Method::PUT {
        return Some((StatusCode::METHOD_NOT_ALLOWED, "Only POST or PUT requests allowed\n").into_response());
    }
    None
}

async fn reload(State(state): Shared, method: Method) -> Response {
    if let Some(r) = lifecycle_guard(&state, &method) {
        return r;
    }
    let f = state.reload.clone();
    match tokio::task::spawn_blocking(move || f()).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn quit(State(state): Shared, method: Method) -> Response {
    if let Some(r) = lifecycle_guard(&state, &method) {
        return r;
    }
    state.quit.send_replace(true);
    "Requesting termination... Goodbye!\n".into_response()
}

async fn self_metrics(State(state): Shared) -> Response {
    let body = crate::metrics::render(&state);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
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
    fn u_escaping() {
        assert_eq!(unescape_label_name("U__my_2e_label"), "my.label");
        assert_eq!(unescape_label_name("U__a__b"), "a_b");
        assert_eq!(unescape_label_name("job"), "job");
    }
}
