//! `/api/v1/sql`: SQL over the metrics, compiled to the same plans as PromQL
//! (`promflow_sql`), evaluated by the batch executor, answered as columns and rows in JSON,
//! or as an Arrow IPC stream for a client that accepts one.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use promflow_sql::{Cell, ColumnKind, ExecError, Rows, Settings};

use crate::api::{json_response, lookback, params, query_timeout, write_json_string};
use crate::{ApiError, AppState};

type Shared = State<std::sync::Arc<crate::AppState>>;

/// The SQL text of a request: `query` from the URL or a form body, or a JSON body's `query`.
fn sql_text(q: &RawQuery, headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_data(format!("invalid JSON body: {e}")))?;
        return v["query"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": a string is required".into()));
    }
    Ok(params(q, headers, body).get("query").unwrap_or("").to_string())
}

/// Writes a cell of a column of type `kind` as JSON: numbers as numbers where finite (as
/// `serde_json` writes an `f64`; an integer column's as integers, `40` rather than `40.0`, as
/// its Arrow answer and its PostgreSQL text have them), NaN and ±Inf as Prometheus's strings,
/// a `jsonb` column's (native histograms, as the query API writes them) as the JSON it is.
fn write_cell(out: &mut String, c: &Cell, kind: ColumnKind) {
    let integer = kind.is_integer();
    match *c {
        Cell::Null => out.push_str("null"),
        Cell::Text(ref s) if kind == ColumnKind::Json => out.push_str(s),
        Cell::Text(ref s) => write_json_string(out, s),
        Cell::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        // within ±2^63 the cast is exact for an integral double
        Cell::Number(v) if integer && v.fract() == 0.0 && v.abs() < 9.2e18 => {
            let _ = std::fmt::Write::write_fmt(out, format_args!("{}", v as i64));
        }
        Cell::Timestamp(v) | Cell::Number(v) if v.is_finite() => {
            out.push_str(ryu::Buffer::new().format_finite(v))
        }
        Cell::Timestamp(v) | Cell::Number(v) => {
            out.push('"');
            out.push_str(&promflow_plan::format::format_value(v));
            out.push('"');
        }
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
    let statement = promflow_sql::prepare(&text, now)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    let p = params(&q, &headers, &body);
    let canceled = Arc::new(AtomicBool::new(false));
    let settings = Settings {
        lookback_ms: lookback(&state, &p)?,
        max_samples: state.query.max_samples,
        timeout: query_timeout(&state, &p)?,
        canceled: Some(Arc::clone(&canceled)),
    };
    // dropped with this future when the client hangs up: the statement stops at its next check
    let _cancel = crate::api::CancelOnDrop(canceled);
    let arrow = accepts_arrow(&headers);
    let slot = crate::api::query_slot(&state, Some(std::time::Instant::now() + settings.timeout)).await?;
    // the answer is encoded off the async threads too: it can be as long as the query
    let pool = std::sync::Arc::clone(&state.query_pool);
    let runtime = tokio::runtime::Handle::current();
    pool.spawn(move || {
        let _slot = slot;
        let querier = statement_storage(&state, runtime);
        let rows = statement.execute(&querier, &settings).map_err(|e| match e {
            ExecError::Engine(e) => ApiError::from(e),
            ExecError::NoTable(_) | ExecError::Catalog(_) | ExecError::Refused(_) | ExecError::Sql { .. } => {
                ApiError::bad_data(format!("invalid parameter \"query\": {e}"))
            }
            ExecError::Storage(_) => ApiError::internal(e.to_string()),
        })?;
        if arrow {
            let stream =
                rows.to_arrow_stream().map_err(|e| ApiError::internal(format!("encoding Arrow: {e}")))?;
            Ok(([(header::CONTENT_TYPE, promflow_sql::ARROW_STREAM)], stream).into_response())
        } else {
            Ok(json_response(answer(&rows)))
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("query panicked: {e}")))?
}

/// What SQL statements read: this node's storage, and in a cluster every node's, through
/// remote read as federation reads them (without the configured `remote_read` endpoints),
/// the readers' requests running on `runtime`.
pub fn statement_storage(
    state: &AppState,
    runtime: tokio::runtime::Handle,
) -> Arc<dyn promflow_storage::Querier> {
    if state.remote_read.has_cluster_peers() {
        let (db, readers) = (Arc::clone(&state.db), Arc::clone(&state.remote_read));
        Arc::new(promflow_remote::reader::StandingFanout::over_cluster(db, readers, runtime))
    } else {
        state.db.clone()
    }
}

/// Whether the client asks for an Arrow IPC stream (errors are still JSON, as the API's).
fn accepts_arrow(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |media| media.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(promflow_sql::ARROW_STREAM),
    )
}

/// Rows as the API answers them, written out directly: a rows query's answer can be a
/// hundred thousand rows, which a JSON tree would first copy cell by cell.
fn answer(rows: &Rows) -> String {
    let mut out = String::with_capacity(64 + 24 * rows.len() * rows.columns.len());
    out.push_str("{\"status\":\"success\",\"data\":{\"columns\":[");
    for (i, c) in rows.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        write_json_string(&mut out, &c.name);
        out.push_str(",\"type\":");
        write_json_string(&mut out, c.source.kind().name());
        out.push('}');
    }
    out.push_str("],\"rows\":[");
    let kinds: Vec<ColumnKind> = rows.columns.iter().map(|c| c.source.kind()).collect();
    for (i, row) in rows.iter().enumerate() {
        out.push_str(if i > 0 { ",[" } else { "[" });
        for (j, cell) in row.cells().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_cell(&mut out, &cell, kinds[j]);
        }
        out.push(']');
    }
    out.push_str("]}}");
    out
}
