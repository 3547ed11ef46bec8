//! Route table and handlers of Prometheus's HTTP API v1: the router and its middleware
//! here, the lifecycle endpoints and `/metrics`; the API's handlers by area in `query.rs`,
//! `metadata.rs`, `rules.rs`, `status.rs` and `ingest.rs`.

mod ingest;
mod metadata;
pub(crate) mod query;
mod rules;
mod status;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use serde_json::{json, Value};

use crate::params::Params;
use crate::{ApiError, AppState};

use ingest::{otlp_write, remote_write, vm_proto_version};
pub(crate) use metadata::parse_selectors;
use metadata::{
    label_values, labels, metadata, query_exemplars, scrape_pools, series, targets, targets_metadata,
};
use query::{format_query, query, query_range};
pub(crate) use query::{lookback, query_slot, query_timeout, write_json_string, write_labels, CancelOnDrop};
use rules::{alertmanagers, alerts, rules};
use status::{admin, buildinfo, runtimeinfo, status_config, status_flags, status_tsdb, walreplay};

type Shared = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

/// Builds the router; `route_prefix` is `--web.route-prefix` ("/" for none).
pub fn router(state: Arc<AppState>, route_prefix: &str) -> Router {
    let api = Router::new()
        .route("/query", any(query))
        .route("/query_range", any(query_range))
        .route("/sql", any(crate::sql::sql))
        .route("/format_query", any(format_query))
        .route("/query_exemplars", any(query_exemplars))
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
        // Prometheus reads OTLP bodies up to 32 MiB; axum's default stops at 2 MiB
        .route(
            "/otlp/v1/metrics",
            post(otlp_write).layer(axum::extract::DefaultBodyLimit::max(promflow_otlp::BODY_LIMIT)),
        )
        .route("/read", post(crate::remote_read::remote_read))
        .route("/cluster/partial", post(crate::pushdown::partial))
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
        .merge(crate::ui::routes(route_prefix.trim_end_matches('/'), &state.page_title))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .layer(middleware::from_fn(crate::gzip::gzip_whole_answers))
        // gzip at its fastest level: at deflate's default level, compressing a large answer
        // (a range query over 10k series, a series lookup) took a third of its time, to
        // make it 15 % smaller
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .no_br()
                .no_deflate()
                .no_zstd()
                .quality(tower_http::CompressionLevel::Fastest),
        )
        .layer(middleware::from_fn_with_state(state.read_timeout, crate::serve::body_deadline))
        .with_state(state.clone());
    let prefix = route_prefix.trim_end_matches('/');
    let app = if prefix.is_empty() {
        root
    } else {
        // as in Prometheus: the bare root and the prefix with its slash lead to the graph page
        let graph = format!("{prefix}/graph");
        let graph_too = graph.clone();
        Router::new()
            .nest(prefix, root)
            .route("/", get(move || async move { Redirect::to(&graph) }))
            .route(&format!("{prefix}/"), get(move || async move { Redirect::to(&graph_too) }))
    };
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
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    state.http_metrics.observe(&handler, resp.status().as_u16(), started.elapsed());
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

/// A success answer with `warnings`, as Prometheus lists them (none: no `warnings` key).
pub(crate) fn success_warned(data: Value, warnings: Vec<String>) -> Response {
    if warnings.is_empty() {
        return success(data);
    }
    json_response(json!({"status": "success", "data": data, "warnings": warnings}).to_string())
}

pub(crate) fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn params(q: &RawQuery, headers: &HeaderMap, body: &Bytes) -> Params {
    Params::new(q.0.as_deref(), headers, body)
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
