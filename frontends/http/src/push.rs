//! The Pushgateway API (`--web.enable-pushgateway`): `PUT`, `POST` and `DELETE` on
//! `/metrics/job/<job>{/<label>/<value>}`. The groups and how they are ingested:
//! [`promflow_scrape::push`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

type Shared = State<std::sync::Arc<crate::AppState>>;

/// `PUT`: replaces the whole group.
pub async fn put(state: Shared, Path(group): Path<String>, body: Bytes) -> Response {
    push(state, group, true, body).await
}

/// `POST`: replaces the families pushed, keeps the group's others.
pub async fn post(state: Shared, Path(group): Path<String>, body: Bytes) -> Response {
    push(state, group, false, body).await
}

/// `DELETE`: removes the group (its series become stale).
pub async fn delete(State(state): Shared, Path(group): Path<String>) -> Response {
    let Some(gw) = state.push.clone() else { return disabled() };
    match tokio::task::spawn_blocking(move || gw.delete(&group)).await {
        Ok(Ok(())) => StatusCode::ACCEPTED.into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn push(State(state): Shared, group: String, replace_all: bool, body: Bytes) -> Response {
    let Some(gw) = state.push.clone() else { return disabled() };
    match tokio::task::spawn_blocking(move || gw.push(&group, replace_all, &body)).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn disabled() -> Response {
    (StatusCode::NOT_FOUND, "the Pushgateway API needs to be enabled with --web.enable-pushgateway\n")
        .into_response()
}
