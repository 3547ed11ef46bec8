//! The remote-write receiver (`/api/v1/write`) and the OTLP receiver
//! (`/api/v1/otlp/v1/metrics`).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Shared;
use promflow_remote::forward::Role;

pub(super) async fn remote_write(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    use promflow_remote::Message1or2;
    // a copy from a cluster peer is stored here, not placed again
    let hop = headers
        .get(promflow_remote::reader::CLUSTER_HOP_HEADER)
        .map(|v| Role::of_hop(v.to_str().unwrap_or_default()));
    // the flag opens the receiver to clients; a cluster's nodes store one another's copies
    // (their recorded series, their scrapes' replicas) whether it is on or not
    let from_peer = hop.is_some() && state.cluster_writes.is_some();
    if !state.remote_write_enabled && !from_peer {
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
        let store = |part: &promflow_remote::RequestView<'_>, role| store_here(&state, part, role);
        match (state.cluster_writes.as_deref(), hop) {
            (Some(cluster), None) => cluster.write(&req, &runtime, store),
            (Some(_), Some(role)) => store(&req, role),
            // one server feeds everything it stores to its views
            (None, _) => store(&req, Role::Primary),
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

/// Stores a remote-write request, or this node's share of one, in one commit: as the
/// series' primary copies or as replicas.
fn store_here(
    state: &crate::AppState,
    part: &promflow_remote::RequestView<'_>,
    role: Role,
) -> Result<promflow_remote::Appended, promflow_remote::Error> {
    let mut app = state.db.appender();
    if role == Role::Replica {
        app.mark_replica();
    }
    match promflow_remote::append_request(part, state.start_zero_samples, app.as_mut()) {
        Ok(written) => app.commit().map(|_| written).map_err(promflow_remote::Error::Storage),
        Err(e) => {
            app.rollback();
            Err(e)
        }
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
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let format = promflow_otlp::Format::from_content_type(content_type.as_deref())?;
        let request = promflow_otlp::decode(&body, format, encoding.as_deref())?;
        match state.cluster_writes.as_deref() {
            Some(cluster) => {
                receiver.write_with(&request, |batch| place_otlp(&state, cluster, batch, &runtime))
            }
            None => receiver.write(&state.db, &request),
        }
    })
    .await;
    match result {
        Ok(Ok(_)) => StatusCode::OK.into_response(),
        Ok(Err(e @ promflow_otlp::Error::Unavailable(_))) => {
            tracing::warn!(error = %e, "OTLP: not stored on enough cluster nodes");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
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

/// One series of a translated OTLP request, gathered for the cluster's placement.
#[derive(Default)]
struct OtlpSeries<'b> {
    labels: Vec<(&'b str, &'b str)>,
    samples: Vec<(i64, f64)>,
    starts: Vec<i64>,
    histograms: Vec<promflow_remote::Histogram>,
    exemplars: Vec<promflow_remote::WireExemplar<'b>>,
}

/// Stores a translated OTLP request on the cluster nodes that own each of its series, as
/// remote write is: this node's share here, the rest as copies. Each series' samples go in
/// time order, the first of two at one time kept, with their start timestamps: what
/// storing the batch here would have stored.
fn place_otlp<'b>(
    state: &crate::AppState,
    cluster: &promflow_remote::forward::ClusterWrites,
    batch: &'b promflow_otlp::Batch,
    runtime: &tokio::runtime::Handle,
) -> Result<promflow_otlp::Written, promflow_otlp::Error> {
    use promflow_storage::Labels;
    use std::collections::{HashMap, HashSet};
    let starts: HashMap<(&Labels, i64), i64> = batch.starts.iter().map(|(l, t, st)| ((l, *t), *st)).collect();
    let mut index: HashMap<&Labels, usize> = HashMap::new();
    let mut series: Vec<OtlpSeries<'b>> = Vec::new();
    let mut of = |labels: &'b Labels| -> usize {
        *index.entry(labels).or_insert_with(|| {
            series.push(OtlpSeries {
                labels: labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect(),
                ..OtlpSeries::default()
            });
            series.len() - 1
        })
    };
    let mut floats: Vec<(usize, i64, f64, &Labels)> =
        batch.floats.iter().map(|(l, t, v)| (of(l), *t, *v, l)).collect();
    let mut histograms: Vec<(usize, i64, &promflow_storage::FloatHistogram, &Labels)> =
        batch.histograms.iter().map(|(l, t, h)| (of(l), *t, h, l)).collect();
    let exemplars: Vec<(usize, &promflow_storage::exemplars::Exemplar)> =
        batch.exemplars.iter().map(|(l, e)| (of(l), e)).collect();
    // stable sorts: of two samples of a series at one time, the first sent stays first
    floats.sort_by_key(|f| (f.0, f.1));
    histograms.sort_by_key(|h| (h.0, h.1));
    let mut seen: HashSet<(usize, i64)> = HashSet::new();
    for (i, t, v, labels) in floats {
        if seen.insert((i, t)) {
            series[i].samples.push((t, v));
            series[i].starts.push(starts.get(&(labels, t)).copied().unwrap_or(0));
        }
    }
    for (i, t, h, labels) in histograms {
        if seen.insert((i, t)) {
            let mut h = promflow_remote::Histogram::from_float_histogram(t, h);
            h.start_timestamp = starts.get(&(labels, t)).copied().unwrap_or(0);
            series[i].histograms.push(h);
        }
    }
    for (i, e) in exemplars {
        series[i].exemplars.push(promflow_remote::WireExemplar {
            labels: e.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect(),
            value: e.value,
            timestamp: e.t,
        });
    }
    let mut view = promflow_remote::RequestView::default();
    for s in &series {
        let starts: &[i64] = if s.starts.iter().any(|&st| st != 0) { &s.starts } else { &[] };
        let parts = promflow_remote::SeriesView {
            labels: &s.labels,
            samples: &s.samples,
            starts,
            histograms: &s.histograms,
            exemplars: &s.exemplars,
        };
        view.push_series(parts).map_err(|e| promflow_otlp::Error::Translation(e.to_string()))?;
    }
    match cluster.write(&view, runtime, |part, role| store_here(state, part, role)) {
        Ok(n) => Ok(promflow_otlp::Written { samples: n.samples, histograms: n.histograms }),
        Err(promflow_remote::Error::Storage(e)) if e.is_sample_error() => {
            Err(promflow_otlp::Error::Sample(e))
        }
        Err(promflow_remote::Error::Storage(e)) => Err(promflow_otlp::Error::Storage(e)),
        Err(promflow_remote::Error::Unavailable(e)) => Err(promflow_otlp::Error::Unavailable(e)),
        Err(e) => Err(promflow_otlp::Error::Refused(e.to_string())),
    }
}
