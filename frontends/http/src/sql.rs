//! `/api/v1/sql`: SQL over the metrics, compiled to the same plans as PromQL
//! (`promflow_sql`), evaluated by the batch executor, answered as columns and rows in JSON,
//! or as an Arrow IPC stream for a client that accepts one.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use promflow_sql::{Cell, ExecError, Rows, Settings};
use serde_json::{json, Value};

use crate::api::{lookback, params, query_timeout, success};
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
        Cell::Text(s) => Value::String(s.to_string()),
        Cell::Bool(b) => json!(b),
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
    let p = params(&q, &headers, &body);
    let settings = Settings {
        lookback_ms: lookback(&state, &p)?,
        max_samples: state.query.max_samples,
        timeout: query_timeout(&state, &p)?,
    };
    let rows = tokio::task::spawn_blocking(move || statement.execute(state.db.as_ref(), &settings))
        .await
        .map_err(|e| ApiError::internal(format!("query panicked: {e}")))?
        .map_err(|e| match e {
            ExecError::Engine(promflow_engine::Error::Timeout(_)) => ApiError::timeout(e.to_string()),
            ExecError::NoTable(_) | ExecError::Catalog(_) => {
                ApiError::bad_data(format!("invalid parameter \"query\": {e}"))
            }
            ExecError::Storage(_) => ApiError::internal(e.to_string()),
            ExecError::Engine(_) => ApiError::execution(e.to_string()),
        })?;
    if accepts_arrow(&headers) {
        let stream =
            rows.to_arrow_stream().map_err(|e| ApiError::internal(format!("encoding Arrow: {e}")))?;
        return Ok(([(header::CONTENT_TYPE, promflow_sql::ARROW_STREAM)], stream).into_response());
    }
    Ok(answer(&rows))
}

/// Whether the client asks for an Arrow IPC stream (errors are still JSON, as the API's).
fn accepts_arrow(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |media| media.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(promflow_sql::ARROW_STREAM),
    )
}

/// Rows as the API answers them.
fn answer(rows: &Rows) -> Response {
    let columns: Vec<Value> =
        rows.columns.iter().map(|c| json!({"name": c.name, "type": c.source.kind().name()})).collect();
    let rows: Vec<Value> =
        rows.rows.iter().map(|r| Value::Array(r.iter().map(cell_json).collect())).collect();
    success(json!({"columns": columns, "rows": rows}))
}
