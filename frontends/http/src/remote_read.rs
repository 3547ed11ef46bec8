//! `POST /api/v1/read`: remote read, so a Prometheus server can use promflow as remote
//! storage (`remote_read` in its configuration). Every query's series come back with all
//! their samples in the range, in the first answer kind the client accepts: one
//! `ReadResponse` (`SAMPLES`, native histograms included), or `ChunkedReadResponse` frames of
//! chunks (`STREAMED_XOR_CHUNKS`: XOR chunks of floats, float histogram chunks of native
//! histograms). As Prometheus serves it: an equality matcher on an external label with
//! its value is dropped (the series do not carry it), and each series gains the external
//! labels it lacks.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use promflow_remote::chunks::{
    chunks_of, write_frame, Chunk, ChunkedReadResponse, ChunkedSeries, FLOAT_HISTOGRAM, STREAMED_CONTENT_TYPE,
};
use promflow_remote::read::{label, MatcherType, QueryResult, ReadRequest, ReadResponse, ResponseType};
use promflow_remote::{Histogram, Sample, TimeSeries};
use promflow_storage::{HistogramSample, Labels, MatchOp, Matcher, Querier};
use std::collections::HashMap;

type Shared = State<std::sync::Arc<crate::AppState>>;

/// Why a read is refused.
enum Refusal {
    BadRequest(String),
    Internal(String),
}

/// Serves `POST /api/v1/read`.
pub async fn remote_read(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let external = state.status.external_labels();
    let limit = state.remote_read_sample_limit;
    let shared = std::sync::Arc::clone(&state);
    let runtime = tokio::runtime::Handle::current();
    let answer = state
        .query_pool
        .spawn(move || {
            // in a cluster, every node's series (a node asked by another answers its own)
            let storage = crate::api::query::own_storage(&shared, &headers, runtime);
            answer(&body, &storage, &external, limit)
        })
        .await;
    match answer {
        Ok(Ok(Answer::Samples(body))) => {
            ([(header::CONTENT_TYPE, "application/x-protobuf"), (header::CONTENT_ENCODING, "snappy")], body)
                .into_response()
        }
        Ok(Ok(Answer::Streamed(body))) => {
            ([(header::CONTENT_TYPE, STREAMED_CONTENT_TYPE)], body).into_response()
        }
        Ok(Err(Refusal::BadRequest(e))) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Ok(Err(Refusal::Internal(e))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// A body in the kind the client takes first: one `ReadResponse`, or chunked frames.
enum Answer {
    Samples(Vec<u8>),
    Streamed(Vec<u8>),
}

/// A frame is closed once its chunks pass this size, as Prometheus's server does (its
/// `remote-read-max-bytes-in-frame` default).
const MAX_BYTES_IN_FRAME: usize = 1 << 20;

fn answer(body: &[u8], db: &dyn Querier, external: &Labels, limit: i64) -> Result<Answer, Refusal> {
    let req = ReadRequest::decode_body(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    // the first kind in the client's order that promflow knows; samples when none is named
    let known = req.accepted_response_types.iter().find_map(|t| match ResponseType::try_from(*t) {
        Ok(ResponseType::Samples) => Some(false),
        Ok(ResponseType::StreamedXorChunks) => Some(true),
        Err(_) => None,
    });
    let streamed = match known {
        Some(streamed) => streamed,
        None if req.accepted_response_types.is_empty() => false,
        None => return Err(Refusal::BadRequest("none of the accepted response types is known".into())),
    };
    let mut samples_left = if limit > 0 { limit } else { i64::MAX };
    let mut results = Vec::with_capacity(req.queries.len());
    let mut frames = Vec::new();
    for (index, q) in req.queries.iter().enumerate() {
        let mut matchers = Vec::with_capacity(q.matchers.len());
        for m in &q.matchers {
            let op = match MatcherType::try_from(m.r#type) {
                Ok(MatcherType::Eq) => MatchOp::Equal,
                Ok(MatcherType::Neq) => MatchOp::NotEqual,
                Ok(MatcherType::Re) => MatchOp::Regex,
                Ok(MatcherType::Nre) => MatchOp::NotRegex,
                Err(_) => return Err(Refusal::BadRequest(format!("unknown matcher type {}", m.r#type))),
            };
            // the series do not carry the external labels: a matcher for one is the server's
            if op == MatchOp::Equal && external.contains(&m.name) && external.get(&m.name) == m.value {
                continue;
            }
            matchers.push(
                Matcher::new(op, &m.name, &m.value)
                    .map_err(|e| Refusal::BadRequest(format!("matcher {}: {e}", m.name)))?,
            );
        }
        let found = db
            .select(&matchers, q.start_timestamp_ms, q.end_timestamp_ms)
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        // a series' native histograms go with its floats; a series of histograms alone too
        let mut hists: HashMap<Labels, Vec<HistogramSample>> = db
            .select_histograms(&matchers, q.start_timestamp_ms, q.end_timestamp_ms)
            .map_err(|e| Refusal::Internal(e.to_string()))?
            .into_iter()
            .map(|h| (h.labels, h.samples))
            .collect();
        let mut series: Vec<(Labels, Vec<Sample>, Vec<HistogramSample>)> = found
            .into_iter()
            .map(|s| {
                let h = hists.remove(&s.labels).unwrap_or_default();
                let floats = s.samples.iter().map(|x| Sample { value: x.v, timestamp: x.t }).collect();
                (s.labels, floats, h)
            })
            .collect();
        series.extend(hists.into_iter().map(|(labels, h)| (labels, Vec::new(), h)));
        series.sort_by(|a, b| a.0.cmp(&b.0));
        if streamed {
            // streamed answers are bounded by their frames, not by the sample limit (as in
            // Prometheus)
            stream_frames(&mut frames, index as i64, series, external);
            continue;
        }
        let mut timeseries = Vec::with_capacity(series.len());
        for (labels, samples, h) in series {
            samples_left -= (samples.len() + h.len()) as i64;
            if samples_left < 0 {
                return Err(Refusal::BadRequest(format!(
                    "exceeded sample limit ({limit}): narrow the query or raise --storage.remote.read-sample-limit"
                )));
            }
            timeseries.push(TimeSeries {
                exemplars: Vec::new(),
                labels: wire_labels(labels, external),
                samples,
                histograms: h.iter().map(|p| Histogram::from_float_histogram(p.t, &p.h)).collect(),
            });
        }
        results.push(QueryResult { timeseries });
    }
    if streamed {
        return Ok(Answer::Streamed(frames));
    }
    Ok(Answer::Samples(ReadResponse { results }.encode_body()))
}

/// A series' labels as sent: with the external labels it lacks.
fn wire_labels(mut labels: Labels, external: &Labels) -> Vec<promflow_remote::Label> {
    labels.add_missing(external);
    labels.iter().map(|l| label(&l.name, &l.value)).collect()
}

/// Appends the frames answering query `index` to `out`: each series' floats as XOR chunks and
/// its native histograms as float histogram chunks, in time order, a frame closed when it
/// passes [`MAX_BYTES_IN_FRAME`] (a series may go on in the next).
fn stream_frames(
    out: &mut Vec<u8>,
    index: i64,
    series: Vec<(Labels, Vec<Sample>, Vec<HistogramSample>)>,
    external: &Labels,
) {
    let mut frame = ChunkedReadResponse { chunked_series: Vec::new(), query_index: index };
    let mut size = 0;
    for (labels, floats, hists) in series {
        let labels = wire_labels(labels, external);
        let samples: Vec<(i64, f64)> = floats.iter().map(|x| (x.timestamp, x.value)).collect();
        let mut chunks = chunks_of(&samples);
        chunks.extend(promflow_storage::encode_float_histogram_chunks(&hists).into_iter().map(|c| Chunk {
            min_time_ms: c.min_t,
            max_time_ms: c.max_t,
            r#type: FLOAT_HISTOGRAM,
            data: c.data,
        }));
        // a series that changed kind: its chunks in time order, as Prometheus keeps them
        chunks.sort_by_key(|c| c.min_time_ms);
        let mut part = ChunkedSeries { labels: labels.clone(), chunks: Vec::new() };
        for chunk in chunks {
            size += chunk.data.len();
            part.chunks.push(chunk);
            if size >= MAX_BYTES_IN_FRAME {
                frame.chunked_series.push(std::mem::replace(
                    &mut part,
                    ChunkedSeries { labels: labels.clone(), chunks: Vec::new() },
                ));
                write_frame(out, &frame);
                frame.chunked_series.clear();
                size = 0;
            }
        }
        if !part.chunks.is_empty() {
            frame.chunked_series.push(part);
        }
    }
    if !frame.chunked_series.is_empty() {
        write_frame(out, &frame);
    }
}
