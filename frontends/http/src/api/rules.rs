//! `rules`, `alerts` and `alertmanagers`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::metadata::peers_data;
use super::query::labels_json;
use super::{params, success, ApiResult, Shared};
use crate::params::Params;
use crate::{ApiError, AppState};

pub(super) async fn rules(State(state): Shared, q: RawQuery, headers: HeaderMap) -> ApiResult {
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let groups = groups_json(&state, &p)?;
    let path = format!("/api/v1/rules?{}", q.0.unwrap_or_default());
    let groups = with_peers_groups(&state, &headers, &path, groups).await;
    Ok(success(json!({"groups": groups})))
}

/// The rule groups as `/api/v1/rules` shows them, as this node has them, filtered by the
/// request's parameters `p`.
fn groups_json(state: &AppState, p: &Params) -> Result<Vec<Value>, ApiError> {
    use promflow_rules::RuleSpec;
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
    Ok(out)
}

/// `groups` (this node's answer to `path`) with, in a cluster, each group as the node that
/// evaluated it last shows it: while the cluster's dataflow computation is formed each
/// group is evaluated on one node only, which alone holds its alerts and current status.
/// A request from a peer is answered from this node alone ([`peers_data`]).
async fn with_peers_groups(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    mut groups: Vec<Value>,
) -> Vec<Value> {
    // a group a failed peer evaluated is evaluated by the others since
    let Some((answers, _)) = peers_data(state, headers, path).await else { return groups };
    for mut data in answers {
        let Value::Array(theirs) = data["groups"].take() else {
            tracing::warn!(path, "a cluster peer's rules answer has no groups");
            continue;
        };
        for mut their in theirs {
            let Some(ours) = groups.iter_mut().find(|g| same_group(g, &their)) else { continue };
            if last_evaluation(&their) > last_evaluation(ours) {
                // the rule file's path as this node knows it
                their["file"] = ours["file"].take();
                *ours = their;
            }
        }
    }
    groups
}

/// Whether two nodes' groups are the same group: the same name, in rule files of the same
/// name (the nodes may keep the files under other paths).
fn same_group(a: &Value, b: &Value) -> bool {
    let file_name = |g: &Value| {
        let path = g["file"].as_str().unwrap_or_default();
        std::path::Path::new(path).file_name().map(|f| f.to_os_string())
    };
    a["name"] == b["name"] && file_name(a) == file_name(b)
}

/// A group's `lastEvaluation`, as a time (the earliest time when it cannot be read).
fn last_evaluation(group: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    group["lastEvaluation"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_default()
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

/// Every pending and firing alert, group by group, rule by rule: in a cluster, from each
/// group's answer as [`with_peers_groups`] picks it.
pub(super) async fn alerts(State(state): Shared, headers: HeaderMap) -> ApiResult {
    let path = "/api/v1/rules?type=alert";
    let p = params(&RawQuery(Some("type=alert".into())), &HeaderMap::new(), &Bytes::new());
    let groups = with_peers_groups(&state, &headers, path, groups_json(&state, &p)?).await;
    let alerts: Vec<Value> = groups
        .into_iter()
        .flat_map(|mut g| match g["rules"].take() {
            Value::Array(rules) => rules,
            _ => Vec::new(),
        })
        .flat_map(|mut r| match r["alerts"].take() {
            Value::Array(alerts) => alerts,
            _ => Vec::new(),
        })
        .collect();
    Ok(success(json!({"alerts": alerts})))
}

pub(super) async fn alertmanagers(State(state): Shared) -> Response {
    let n = Arc::clone(&state.notifier);
    // discovery may read files
    let (active, dropped) = tokio::task::spawn_blocking(move || n.alertmanagers()).await.unwrap_or_default();
    let urls = |v: Vec<String>| v.into_iter().map(|url| json!({"url": url})).collect::<Vec<_>>();
    success(json!({"activeAlertmanagers": urls(active), "droppedAlertmanagers": urls(dropped)}))
}
