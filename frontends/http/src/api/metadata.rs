//! `series`, `labels`, `label/<name>/values`, `metadata`, `targets`, `targets/metadata` and
//! `scrape_pools`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use promflow_storage::{Labels, Matcher, Querier};
use serde_json::{json, Value};

use promflow_remote::reader::CLUSTER_HOP_HEADER;

use super::query::{fanout, labels_json, write_labels};
use super::{json_response, params, success, success_warned, ApiResult, Shared};
use crate::params::{limit_param, time_param, Params, MAX_TIME_MS, MIN_TIME_MS};
use crate::{ApiError, AppState};

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

pub(super) fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((time_param(p, "start", Some(MIN_TIME_MS))?, time_param(p, "end", Some(MAX_TIME_MS))?))
}

fn storage_err(e: promflow_storage::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Runs a storage lookup on the query pool: over a million series a lookup with a matcher
/// takes tens of milliseconds, which an async worker must not be held for, and which must
/// not take the CPU from ingest.
pub(super) async fn off_the_workers<T: Send + 'static>(
    state: &Arc<AppState>,
    what: &'static str,
    lookup: impl FnOnce(Arc<AppState>) -> Result<T, promflow_storage::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = Arc::clone(state);
    state
        .query_pool
        .spawn(move || lookup(shared))
        .await
        .map_err(|e| ApiError::internal(format!("{what} panicked: {e}")))?
        .map_err(storage_err)
}

/// The index entries a lookup may read and still run on the async worker that took its
/// request ([`lookup`]): about 50 µs of work (a week's lookup of 27 series over thirteen
/// lists of 27 reads 700 entries in about 16 µs), short enough not to hold up the worker's
/// other requests, and of the order of what handing it to the query pool and back costs in
/// thread switches.
const INLINE_LOOKUP_ENTRIES: usize = 2_000;

/// Whether a lookup of `selectors` over `mint..=maxt` is known to be small: its postings
/// lists together at most [`INLINE_LOOKUP_ENTRIES`] long
/// ([`promflow_storage::Db::lookup_cost`]). Most lookups Grafana makes (a metric's series,
/// one job's instances) are.
fn small_lookup(state: &AppState, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> bool {
    !selectors.is_empty()
        && selectors
            .iter()
            .try_fold(0usize, |sum, m| Some(sum.saturating_add(state.db.lookup_cost(m, mint, maxt)?)))
            .is_some_and(|cost| cost <= INLINE_LOOKUP_ENTRIES)
}

/// Runs a storage lookup right here on the async worker when `inline` (a small lookup that
/// asks no remote endpoint: the hand-off to the query pool and back would cost more than
/// it), else on the query pool ([`off_the_workers`]).
async fn lookup<T: Send + 'static>(
    state: &Arc<AppState>,
    what: &'static str,
    inline: bool,
    read: impl FnOnce(Arc<AppState>) -> Result<T, promflow_storage::Error> + Send + 'static,
) -> Result<T, ApiError> {
    if !inline {
        return off_the_workers(state, what, read).await;
    }
    // as on the pool, a panic answers 500 rather than dropping the connection
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(Arc::clone(state))))
        .map_err(|_| ApiError::internal(format!("{what} panicked")))?
        .map_err(storage_err)
}

fn truncate<T>(mut v: Vec<T>, limit: usize) -> Vec<T> {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
    }
    v
}

pub(super) async fn series(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = params(&q, &headers, &body);
    let sels = parse_selectors(&p)?;
    if sels.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided".into()));
    }
    let (mint, maxt) = time_range(&p)?;
    let limit = limit_param(&p)?;
    // one selector's answer is sorted and unique already
    let merge = sels.len() > 1;
    // the remote_read endpoints are asked too, off the async workers
    let runtime = tokio::runtime::Handle::current();
    let local_only = state.remote_read.current().is_empty();
    let inline = local_only && small_lookup(&state, &sels, mint, maxt);
    let (mut all, warnings) = lookup(&state, "series lookup", inline, move |state| {
        let mut all: Vec<Labels> = Vec::new();
        if local_only {
            for m in &sels {
                all.extend(state.db.series(m, mint, maxt)?);
            }
            return Ok((all, Vec::new()));
        }
        let storage = fanout(&state, runtime);
        for m in &sels {
            all.extend(storage.series(m, mint, maxt)?);
        }
        Ok((all, storage.warnings()))
    })
    .await?;
    if merge {
        all.sort();
        all.dedup();
    }
    // written out directly: a lookup over many series builds no JSON tree
    let mut body = String::from(r#"{"status":"success","data":["#);
    for (i, labels) in truncate(all, limit).iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_labels(&mut body, labels);
    }
    body.push(']');
    if !warnings.is_empty() {
        body.push_str(r#","warnings":"#);
        body.push_str(&Value::from(warnings).to_string());
    }
    body.push('}');
    Ok(json_response(body))
}

/// `/api/v1/query_exemplars`: the exemplars in `start..end` of the series any selector of
/// `query` matches, in Prometheus's shape (`seriesLabels`, and `exemplars` with `labels`,
/// `value` as text and `timestamp` in seconds). In a cluster, every node's, a series' copies'
/// exemplars once each ([`peers_data`]).
pub(super) async fn query_exemplars(
    State(state): Shared,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let query = p.get("query").ok_or_else(|| ApiError::bad_data("query parameter is required".into()))?;
    let selectors =
        promflow_promql::selector_matchers(query).map_err(|e| ApiError::bad_data(e.to_string()))?;
    let (mint, maxt) = time_range(&p)?;
    if maxt < mint {
        return Err(ApiError::bad_data("end timestamp must not be before start timestamp".into()));
    }
    let found = state.db.select_exemplars(&selectors, mint, maxt);
    let seconds = |t: i64| {
        serde_json::from_str::<Value>(&promflow_plan::format::format_timestamp(t)).unwrap_or(Value::Null)
    };
    let answer: Vec<Value> = found
        .iter()
        .map(|s| {
            let exemplars: Vec<Value> = s
                .exemplars
                .iter()
                .map(|e| {
                    json!({
                        "labels": labels_json(&e.labels),
                        "value": promflow_plan::format::format_value(e.value),
                        "timestamp": seconds(e.t),
                    })
                })
                .collect();
            json!({ "seriesLabels": labels_json(&s.series), "exemplars": exemplars })
        })
        .collect();
    let path = format!("/api/v1/query_exemplars?{}", p.to_query());
    let Some((theirs, warnings)) = peers_data(&state, &headers, &path).await else {
        return Ok(success(Value::Array(answer)));
    };
    // by series, each exemplar once (a series stored on two nodes has its exemplars on both),
    // in time order
    let mut by_series: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    for mut item in answer.into_iter().chain(theirs.into_iter().flat_map(|d| match d {
        Value::Array(items) => items,
        _ => Vec::new(),
    })) {
        let series = item["seriesLabels"].take();
        let entry = by_series.entry(series.to_string()).or_insert_with(|| (series, Vec::new()));
        if let Value::Array(exemplars) = item["exemplars"].take() {
            entry.1.extend(exemplars);
        }
    }
    let answer: Vec<Value> = by_series
        .into_values()
        .map(|(series, mut exemplars)| {
            keep_first(&mut exemplars, Value::to_string);
            exemplars.sort_by(|a, b| {
                a["timestamp"].as_f64().unwrap_or(0.0).total_cmp(&b["timestamp"].as_f64().unwrap_or(0.0))
            });
            json!({ "seriesLabels": series, "exemplars": exemplars })
        })
        .collect();
    Ok(success_warned(Value::Array(answer), warnings))
}

/// Keeps the first of the items of `list` with the same `key`, in their order: what several
/// nodes' answers list twice (a series' copies, a target during a peer-list change) once.
fn keep_first(list: &mut Vec<Value>, key: impl Fn(&Value) -> String) {
    let mut seen = HashSet::new();
    list.retain(|item| seen.insert(key(item)));
}

/// A lookup's answer with the other cluster nodes' answers to the same lookup (`path`)
/// merged in, sorted and unique: a node answers these from its own storage. A request from
/// a peer ([`CLUSTER_HOP_HEADER`]) is answered from this node alone. A peer that fails is
/// logged and left out, and named in the warnings returned when the answer may lack data
/// for it ([`peers_data`]).
async fn with_peers(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    values: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    if answered_alone(state, headers) {
        return (values, Vec::new());
    }
    let (values, failed) = state.remote_read.merge_peers_lists(path, values).await;
    (values, failures_to_warn(state, path, failed))
}

/// The `data` of every other cluster node's answer to `path` (asked as a hop, so answered
/// from that node alone), or `None` when this request is answered from this node alone
/// ([`answered_alone`]). A peer that fails is left out; with the data, the warnings of
/// [`failures_to_warn`].
pub(super) async fn peers_data(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Option<(Vec<Value>, Vec<String>)> {
    if answered_alone(state, headers) {
        return None;
    }
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    for data in state.remote_read.ask_peers_data(path).await {
        match data {
            Ok(data) => out.push(data),
            Err(e) => failed.push(e),
        }
    }
    Some((out, failures_to_warn(state, path, failed)))
}

/// Whether a request is answered from this node alone: it comes from a peer
/// ([`CLUSTER_HOP_HEADER`]), or there is no cluster.
fn answered_alone(state: &AppState, headers: &HeaderMap) -> bool {
    headers.contains_key(CLUSTER_HOP_HEADER) || !state.remote_read.has_cluster_peers()
}

/// Logs why each peer `failed` to answer `path`, and returns those reasons as the answer's
/// warnings when it may lack data for them
/// ([`promflow_remote::reader::RemoteReaders::may_lack_data`]), none otherwise.
fn failures_to_warn(state: &AppState, path: &str, mut failed: Vec<String>) -> Vec<String> {
    for e in &failed {
        tracing::warn!(error = %e, path, "a cluster peer did not answer a lookup");
    }
    if !state.remote_read.may_lack_data(failed.len()) {
        failed.clear();
    }
    failed
}

pub(super) async fn labels(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> ApiResult {
    let p = params(&q, &headers, &body);
    let sels = parse_selectors(&p)?;
    let (mint, maxt) = time_range(&p)?;
    let limit = limit_param(&p)?;
    let peers_path = format!("/api/v1/labels?{}", p.to_query());
    let inline = small_lookup(&state, &sels, mint, maxt);
    let names = lookup(&state, "label names lookup", inline, move |state| {
        if sels.is_empty() {
            return state.db.label_names(&[], mint, maxt);
        }
        let mut names: Vec<String> = Vec::new();
        for m in &sels {
            names.extend(state.db.label_names(m, mint, maxt)?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    })
    .await?;
    let (names, warnings) = with_peers(&state, &headers, &peers_path, names).await;
    Ok(success_warned(json!(truncate(names, limit)), warnings))
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

pub(super) async fn label_values(
    State(state): Shared,
    Path(name): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let p = params(&q, &headers, &Bytes::new());
    // passed on to cluster peers as it came, escaped for the path
    let peers_path = format!(
        "/api/v1/label/{}/values?{}",
        form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>(),
        p.to_query()
    );
    let name = unescape_label_name(&name);
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let sels = parse_selectors(&p)?;
    let (mint, maxt) = time_range(&p)?;
    let limit = limit_param(&p)?;
    let inline = small_lookup(&state, &sels, mint, maxt);
    let values = lookup(&state, "label values lookup", inline, move |state| {
        if sels.is_empty() {
            return state.db.label_values(&name, &[], mint, maxt);
        }
        let mut values: Vec<String> = Vec::new();
        for m in &sels {
            values.extend(state.db.label_values(&name, m, mint, maxt)?);
        }
        values.sort();
        values.dedup();
        Ok(values)
    })
    .await?;
    let (values, warnings) = with_peers(&state, &headers, &peers_path, values).await;
    Ok(success_warned(json!(truncate(values, limit)), warnings))
}

/// `/api/v1/metadata`: the metric families' types, help and units the scrapes brought, by
/// family; in a cluster every node's (each knows its own targets' only).
pub(super) async fn metadata(State(state): Shared, q: RawQuery, headers: HeaderMap) -> ApiResult {
    let p = params(&q, &headers, &Bytes::new());
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
    // the peers are asked for everything: the limit counts families over the whole cluster
    let path = format!(
        "/api/v1/metadata?metric={}",
        form_urlencoded::byte_serialize(metric.as_bytes()).collect::<String>()
    );
    let (theirs, warnings) = peers_data(&state, &headers, &path).await.unwrap_or_default();
    for data in theirs {
        let Value::Object(families) = data else { continue };
        for (family, items) in families {
            let entry = map.entry(family).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                for item in items.as_array().into_iter().flatten() {
                    if !a.contains(item) {
                        a.push(item.clone());
                    }
                }
            }
        }
    }
    if limit >= 0 {
        let keys: Vec<String> = map.keys().skip(limit as usize).cloned().collect();
        for k in keys {
            map.remove(&k);
        }
    }
    Ok(success_warned(Value::Object(map), warnings))
}

/// `/api/v1/targets`: the scrape targets, active and dropped. In a cluster every node's:
/// each scrapes its share and holds its targets' health; a target two nodes list (while a
/// peer-list change is reloaded) is shown once.
pub(super) async fn targets(State(state): Shared, q: RawQuery, headers: HeaderMap) -> ApiResult {
    let p = params(&q, &headers, &Bytes::new());
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
    let path = format!("/api/v1/targets?{}", p.to_query());
    let (theirs, warnings) = peers_data(&state, &headers, &path).await.unwrap_or_default();
    for mut data in theirs {
        for (list, key) in [(&mut active, "activeTargets"), (&mut dropped, "droppedTargets")] {
            let Value::Array(items) = data[key].take() else { continue };
            list.extend(items);
        }
    }
    keep_first(&mut active, |t| format!("{} {}", t["scrapePool"], t["labels"]));
    keep_first(&mut dropped, |t| format!("{} {}", t["scrapePool"], t["discoveredLabels"]));
    let mut data = serde_json::Map::new();
    if want == "active" || want == "any" || want.is_empty() {
        data.insert("activeTargets".into(), Value::Array(active));
    }
    if want == "dropped" || want == "any" || want.is_empty() {
        data.insert("droppedTargets".into(), Value::Array(dropped));
    }
    Ok(success_warned(Value::Object(data), warnings))
}

/// `/api/v1/targets/metadata`: the metadata each target's scrapes brought; in a cluster every
/// node's targets'.
pub(super) async fn targets_metadata(State(state): Shared, q: RawQuery, headers: HeaderMap) -> ApiResult {
    let p = params(&q, &headers, &Bytes::new());
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
    let path = format!("/api/v1/targets/metadata?{}", p.to_query());
    let (theirs, warnings) = peers_data(&state, &headers, &path).await.unwrap_or_default();
    for data in theirs {
        let Value::Array(items) = data else { continue };
        out.extend(items);
    }
    // each target is one node's; one two nodes list (a peer-list change) is shown once
    keep_first(&mut out, Value::to_string);
    if limit >= 0 {
        out.truncate(limit as usize);
    }
    Ok(success_warned(Value::Array(out), warnings))
}

pub(super) async fn scrape_pools(State(state): Shared) -> ApiResult {
    let mut pools: Vec<String> = state.scrape.targets().into_iter().map(|t| t.scrape_pool).collect();
    pools.sort();
    pools.dedup();
    Ok(success(json!({"scrapePools": pools})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u_escaping() {
        assert_eq!(unescape_label_name("U__my_2e_label"), "my.label");
        assert_eq!(unescape_label_name("U__a__b"), "a_b");
        assert_eq!(unescape_label_name("job"), "job");
    }
}
