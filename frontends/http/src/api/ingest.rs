//! The remote-write receiver (`/api/v1/write`) and the OTLP receiver
//! (`/api/v1/otlp/v1/metrics`).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Shared;

pub(super) async fn remote_write(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
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
    // a copy from a cluster peer is stored here, not placed again
    let hop = headers.contains_key(promflow_remote::reader::CLUSTER_HOP_HEADER);
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let raw = match encoding {
            "zstd" => promflow_remote::decompress_zstd(&body)?,
            _ => promflow_remote::decompress(&body)?,
        };
        let req = match message {
            Message1or2::V1 => promflow_remote::RequestView::parse(&raw)?,
            Message1or2::V2 => promflow_remote::RequestView::parse_v2(&raw)?,
        };
        let store = |part: &promflow_remote::RequestView<'_>| {
            let mut app = state.db.appender();
            match promflow_remote::append_request(part, state.start_zero_samples, app.as_mut()) {
                Ok(written) => app.commit().map(|_| written).map_err(promflow_remote::Error::Storage),
                Err(e) => {
                    app.rollback();
                    Err(e)
                }
            }
        };
        match state.cluster_writes.as_deref().filter(|_| !hop) {
            Some(cluster) => cluster.write(&req, &runtime, store),
            None => store(&req),
        }
    })
    .await;
    // remote write 2.0 answers say what was written
    let written = |n: promflow_remote::Appended, mut r: Response| {
        if message == Message1or2::V2 {
            let h = r.headers_mut();
            for (name, v) in [
                ("x-prometheus-remote-write-samples-written", n.samples),
                ("x-prometheus-remote-write-histograms-written", n.histograms),
                ("x-prometheus-remote-write-exemplars-written", n.exemplars),
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
            written(Default::default(), (StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")).into_response())
        }
        Ok(Err(e @ promflow_remote::Error::Unavailable(_))) => {
            tracing::warn!(error = %e, "remote write: not stored on enough cluster nodes");
            written(Default::default(), (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response())
        }
        Ok(Err(promflow_remote::Error::Storage(e))) if !e.is_sample_error() => {
            tracing::error!(error = %e, "remote write: storage failed");
            written(Default::default(), (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "remote write: request rejected");
            written(Default::default(), (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response())
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// vmagent asks a remote-write URL `?get_vm_proto_version=1` whether it takes its protocol:
/// Prometheus's protobuf compressed with zstd instead of snappy. The receiver does ("1").
pub(super) async fn vm_proto_version(State(state): Shared, RawQuery(q): RawQuery) -> Response {
    let asked = q.is_some_and(|q| q.split('&').any(|p| p.starts_with("get_vm_proto_version")));
    if !state.remote_write_enabled || !asked {
        return (StatusCode::METHOD_NOT_ALLOWED, "remote write takes POST requests\n").into_response();
    }
    "1".into_response()
}

/// `POST /api/v1/otlp/v1/metrics`: an OTLP metrics export, answered 200 with an empty body
/// once stored, 400 when the sender must change it, 500 when storage failed.
pub(super) async fn otlp_write(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let Some(receiver) = state.otlp.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "otlp write receiver needs to be enabled with --web.enable-otlp-receiver\n",
        )
            .into_response();
    };
    let header_text =
        |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).map(str::to_string);
    let (content_type, encoding) = (header_text(header::CONTENT_TYPE), header_text(header::CONTENT_ENCODING));
    let result = tokio::task::spawn_blocking(move || {
        let format = promflow_otlp::Format::from_content_type(content_type.as_deref())?;
        let request = promflow_otlp::decode(&body, format, encoding.as_deref())?;
        receiver.write(&state.db, &request)
    })
    .await;
    match result {
        Ok(Ok(_)) => StatusCode::OK.into_response(),
        Ok(Err(e)) if e.is_senders() => {
            tracing::warn!(error = %e, "OTLP: request rejected");
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "OTLP: storage failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
