//! `/api/v1/sql`: SQL over the metrics, compiled to the same plans as PromQL
//! (`promflow_sql`), evaluated by the batch executor, answered as columns and rows.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use promflow_sql::{Cell, Rows, Statement};
use promflow_storage::{MatchOp, Matcher, Querier};
use serde_json::{json, Value};

use crate::api::{params, query_options, query_timeout, run_query, storage_err, success};
use crate::params::{MAX_TIME_MS, MIN_TIME_MS};
use crate::ApiError;

type Shared = State<std::sync::Arc<crate::AppState>>;

/// The SQL text of a request: `query` from the URL or a form body, or a JSON body's `query`.
fn sql_text(q: &RawQuery, headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_data(format!("invalid JSON body: {e}")))?;
        return v["query"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": a string is required".into()));
    }
    Ok(params(q, headers, body).get("query").unwrap_or("").to_string())
}

/// A cell as JSON: numbers as numbers where finite, NaN and ±Inf as Prometheus's strings.
fn cell_json(c: &Cell) -> Value {
    let number = |v: f64| {
        if v.is_finite() {
            json!(v)
        } else {
            json!(promflow_engine::format::format_value(v))
        }
    };
    match c {
        Cell::Null => Value::Null,
        Cell::Text(s) => json!(s),
        Cell::Timestamp(v) | Cell::Number(v) => number(*v),
    }
}

/// `GET`/`POST /api/v1/sql`.
pub(crate) async fn sql(
    State(state): Shared,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = sql_text(&q, &headers, &body)?;
    let now = chrono::Utc::now().timestamp_millis();
    let statement = promflow_sql::compile(&text, now)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    let query = match statement {
        Statement::Explain(query) => {
            // one row per part, with its first segment's plan (the others differ in ranges)
            let rows: Vec<Value> =
                query.parts.iter().map(|p| json!([p.name, p.segments[0].0.to_string()])).collect();
            let columns = json!([{"name": "column", "type": "text"}, {"name": "plan", "type": "text"}]);
            return Ok(success(json!({"columns": columns, "rows": rows})));
        }
        Statement::Select(query) => query,
        Statement::ShowTables => {
            let names = state.db.label_values("__name__", &[], MIN_TIME_MS, MAX_TIME_MS);
            return Ok(answer(&Rows::tables(names.map_err(storage_err)?)));
        }
        Statement::Describe(metric) => {
            let name = Matcher::new(MatchOp::Equal, "__name__", metric.as_str()).map_err(storage_err)?;
            let names = state.db.label_names(&[name], MIN_TIME_MS, MAX_TIME_MS).map_err(storage_err)?;
            if names.is_empty() {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"query\": no table \"{metric}\""
                )));
            }
            return Ok(answer(&Rows::describe(names)));
        }
    };
    let p = params(&q, &headers, &body);
    let timeout = query_timeout(&state, &p)?;
    let mut results = Vec::with_capacity(query.parts.len());
    for part in &query.parts {
        let mut segments = Vec::with_capacity(part.segments.len());
        for (plan, eval) in &part.segments {
            let range = eval.start != eval.end;
            let opts = query_options(&state, &p, (eval.start, eval.end, eval.step), timeout, range)?;
            segments.push(run_query(state.clone(), plan.clone(), opts).await?.result);
        }
        results.push(segments);
    }
    Ok(answer(&query.rows(&results)))
}

/// Rows as the API answers them.
fn answer(rows: &Rows) -> Response {
    let columns: Vec<Value> =
        rows.columns.iter().map(|c| json!({"name": c.name, "type": c.source.kind().name()})).collect();
    let rows: Vec<Value> =
        rows.rows.iter().map(|r| Value::Array(r.iter().map(cell_json).collect())).collect();
    success(json!({"columns": columns, "rows": rows}))
}
