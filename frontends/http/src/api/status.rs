//! `status/*` and the admin endpoints (`admin/tsdb/*`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::metadata::{off_the_workers, parse_selectors, peers_data, time_range};
use super::{params, success, success_warned, ApiResult, Shared};
use crate::ApiError;

pub(super) async fn buildinfo(State(state): Shared) -> Response {
    success(json!({
        "version": state.status.version,
        "revision": format!("promflow-{}", env!("CARGO_PKG_VERSION")),
        "branch": "main",
        "buildUser": "promflow",
        "buildDate": "",
        "goVersion": "rust",
    }))
}

pub(super) async fn status_config(State(state): Shared) -> Response {
    let yaml = state.status.config_yaml.read().map(|c| c.clone()).unwrap_or_default();
    success(json!({ "yaml": yaml }))
}

pub(super) async fn status_flags(State(state): Shared) -> Response {
    let map: serde_json::Map<String, Value> =
        state.status.flags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    success(Value::Object(map))
}

pub(super) async fn runtimeinfo(State(state): Shared) -> Response {
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

/// `/api/v1/status/tsdb`: the head's series counts and cardinalities. On a cluster, the
/// whole cluster's ([`cluster_tsdb_status`]); a node asked by a peer answers for itself.
pub(super) async fn status_tsdb(State(state): Shared, q: RawQuery, headers: HeaderMap) -> ApiResult {
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let limit = match p.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::bad_data("limit must be a positive number".into()))?,
        None => 10,
    };
    // every node lists all of its label pairs, from which the cluster's counts are made
    let path = format!("/api/v1/status/tsdb?limit={EVERY_PAIR}");
    let peers = peers_data(&state, &headers, &path).await;
    let own_limit = if peers.is_some() { EVERY_PAIR } else { limit };
    // the head's lists are made under its lock: off the async workers
    let own = tsdb_status(&off_the_workers(&state, "TSDB status", move |s| Ok(s.db.stats(own_limit))).await?);
    let Some((theirs, warnings)) = peers else { return Ok(success(own)) };
    let copies = state.remote_read.replication();
    Ok(success_warned(cluster_tsdb_status(std::iter::once(own).chain(theirs), copies, limit), warnings))
}

/// A limit that lists every label pair of a head.
const EVERY_PAIR: usize = u32::MAX as usize;

/// The `status/tsdb` answer for `s`.
fn tsdb_status(s: &promflow_storage::DbStats) -> Value {
    let pairs = |v: &[(String, u64)]| -> Value {
        Value::Array(v.iter().map(|(n, c)| json!({"name": n, "value": c})).collect())
    };
    json!({
        "headStats": {
            "numSeries": s.num_series,
            "numLabelPairs": s.num_label_pairs,
            "chunkCount": s.num_chunks,
            "minTime": s.min_time.unwrap_or(i64::MAX),
            "maxTime": s.max_time.unwrap_or(i64::MIN),
        },
        "seriesCountByMetricName": pairs(&s.series_count_by_metric),
        "labelValueCountByLabelName": pairs(&s.label_value_count_by_label_name),
        "memoryInBytesByLabelName": pairs(&s.memory_in_bytes_by_label_name),
        "seriesCountByLabelValuePair": pairs(&s.series_count_by_label_value_pair),
    })
}

/// The cluster's `status/tsdb` from its nodes' answers, each listing every label pair of its
/// head with its series count: series and chunk counts are the nodes' added up and divided
/// by the `copies` each series is stored in; the label pairs, and so the values of each
/// label name and their bytes, are the distinct ones of every node. The lists keep their
/// `limit` largest.
fn cluster_tsdb_status(nodes: impl Iterator<Item = Value>, copies: usize, limit: usize) -> Value {
    let copies = copies.max(1) as u64;
    let once = |n: u64| n.div_ceil(copies);
    let (mut series, mut chunks, mut min_time, mut max_time) = (0u64, 0u64, i64::MAX, i64::MIN);
    let mut pairs: HashMap<String, u64> = HashMap::new();
    for node in nodes {
        let head = &node["headStats"];
        series += head["numSeries"].as_u64().unwrap_or(0);
        chunks += head["chunkCount"].as_u64().unwrap_or(0);
        min_time = min_time.min(head["minTime"].as_i64().unwrap_or(i64::MAX));
        max_time = max_time.max(head["maxTime"].as_i64().unwrap_or(i64::MIN));
        for pair in node["seriesCountByLabelValuePair"].as_array().into_iter().flatten() {
            if let (Some(name), Some(count)) = (pair["name"].as_str(), pair["value"].as_u64()) {
                *pairs.entry(name.to_string()).or_default() += count;
            }
        }
    }
    let (mut by_metric, mut values, mut bytes) = (Vec::new(), HashMap::new(), HashMap::new());
    for (pair, count) in &pairs {
        // a label name has no `=`: the first one ends it
        let Some((name, value)) = pair.split_once('=') else { continue };
        if name == promflow_storage::METRIC_NAME {
            by_metric.push((value.to_string(), once(*count)));
        }
        *values.entry(name.to_string()).or_insert(0u64) += 1;
        *bytes.entry(name.to_string()).or_insert(0u64) += value.len() as u64;
    }
    let largest = |mut v: Vec<(String, u64)>| -> Value {
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(limit);
        Value::Array(v.into_iter().map(|(n, c)| json!({"name": n, "value": c})).collect())
    };
    json!({
        "headStats": {
            "numSeries": once(series),
            "numLabelPairs": pairs.len(),
            "chunkCount": once(chunks),
            "minTime": min_time,
            "maxTime": max_time,
        },
        "seriesCountByMetricName": largest(by_metric),
        "labelValueCountByLabelName": largest(values.into_iter().collect()),
        "memoryInBytesByLabelName": largest(bytes.into_iter().collect()),
        "seriesCountByLabelValuePair": largest(pairs.into_iter().map(|(p, c)| (p, once(c))).collect()),
    })
}

pub(super) async fn walreplay() -> Response {
    success(json!({"min": 0, "max": 0, "current": 0}))
}

/// The TSDB admin API (`--web.enable-admin-api`): `snapshot`, `delete_series` and
/// `clean_tombstones`, with Prometheus's parameters, answers and errors.
pub(super) async fn admin(
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
