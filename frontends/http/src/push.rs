//! The Pushgateway API (`--web.enable-pushgateway`): `PUT`, `POST` and `DELETE` on
//! `/metrics/job/<job>{/<label>/<value>}`. The groups and how they are ingested:
//! [`promflow_scrape::push`].

//!
//! In a cluster, a group lives on one node, the first of its ranking by a hash of its grouping
//! labels: a push or delete that reaches another node is relayed there and answered with that
//! node's answer, so that pushes to any node change the same group.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

type Shared = State<std::sync::Arc<crate::AppState>>;

/// `PUT`: replaces the whole group.
pub async fn put(state: Shared, Path(group): Path<String>, ask: Ask, body: Bytes) -> Response {
    push(state, group, true, ask, body).await
}

/// `POST`: replaces the families pushed, keeps the group's others.
pub async fn post(state: Shared, Path(group): Path<String>, ask: Ask, body: Bytes) -> Response {
    push(state, group, false, ask, body).await
}

/// What a push or delete is relayed with: its method, path and headers.
type Ask = (Method, Uri, HeaderMap);

/// `DELETE`: removes the group (its series become stale).
pub async fn delete(State(state): Shared, Path(group): Path<String>, ask: Ask) -> Response {
    let Some(gw) = state.push.clone() else { return disabled() };
    if let Some(answer) = relay_to_owner(&state, &group, ask, Bytes::new()).await {
        return answer;
    }
    match tokio::task::spawn_blocking(move || gw.delete(&group)).await {
        Ok(Ok(())) => StatusCode::ACCEPTED.into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn push(State(state): Shared, group: String, replace_all: bool, ask: Ask, body: Bytes) -> Response {
    let Some(gw) = state.push.clone() else { return disabled() };
    if let Some(answer) = relay_to_owner(&state, &group, ask, body.clone()).await {
        return answer;
    }
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

/// In a cluster, relays a push or delete of `group` to the node that keeps the group, unless
/// that is this node or the request is itself a relay; that node's answer, or a 503 when it
/// does not answer (the group stays where it is, and the sender retries).
async fn relay_to_owner(state: &crate::AppState, group: &str, ask: Ask, body: Bytes) -> Option<Response> {
    let cluster = state.cluster_writes.as_deref()?;
    let (method, uri, headers) = ask;
    if headers.contains_key(promflow_remote::reader::CLUSTER_HOP_HEADER) {
        return None;
    }
    let key = match promflow_scrape::push::grouping_key(group) {
        Ok(key) => key,
        Err(e) => return Some((StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()),
    };
    let pairs: Vec<(&str, &str)> = key.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    let owner = cluster.sole_owner(promflow_remote::forward::series_hash(&pairs))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    Some(match cluster.relay(&owner, method.as_str(), path, content_type, body.to_vec()).await {
        Ok((status, body)) => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), body).into_response()
        }
        Err(e) => {
            tracing::warn!(peer = %owner, error = %e, "push: the cluster node that keeps the group did not answer");
            let text = format!("the cluster node that keeps this group ({owner}) did not answer: {e}\n");
            (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
        }
    })
}
