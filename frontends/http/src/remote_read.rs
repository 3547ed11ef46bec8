//! `POST /api/v1/read`: remote read, so a Prometheus server can use promflow as remote
//! storage (`remote_read` in its configuration). Every query's series come back with all
//! their samples in the range, as one `ReadResponse` (the `SAMPLES` answer, which every
//! client accepts). As Prometheus serves it: an equality matcher on an external label with
//! its value is dropped (the series do not carry it), and each series gains the external
//! labels it lacks.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use promflow_remote::read::{label, MatcherType, QueryResult, ReadRequest, ReadResponse};
use promflow_remote::{Sample, TimeSeries};
use promflow_storage::{Labels, MatchOp, Matcher, Querier};

type Shared = State<std::sync::Arc<crate::AppState>>;

/// Why a read is refused.
enum Refusal {
    BadRequest(String),
    Internal(String),
}

/// Serves `POST /api/v1/read`.
pub async fn remote_read(State(state): Shared, body: Bytes) -> Response {
    let external = state.status.external_labels();
    let limit = state.remote_read_sample_limit;
    let db = std::sync::Arc::clone(&state.db);
    let answer = tokio::task::spawn_blocking(move || answer(&body, db.as_ref(), &external, limit)).await;
    match answer {
        Ok(Ok(body)) => {
            ([(header::CONTENT_TYPE, "application/x-protobuf"), (header::CONTENT_ENCODING, "snappy")], body)
                .into_response()
        }
        Ok(Err(Refusal::BadRequest(e))) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Ok(Err(Refusal::Internal(e))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn answer(body: &[u8], db: &dyn Querier, external: &Labels, limit: i64) -> Result<Vec<u8>, Refusal> {
    let req = ReadRequest::decode_body(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    if !req.takes_samples() {
        return Err(Refusal::BadRequest(
            "the client accepts only streamed XOR chunks; promflow answers remote read with samples".into(),
        ));
    }
    let mut samples_left = if limit > 0 { limit } else { i64::MAX };
    let mut results = Vec::with_capacity(req.queries.len());
    for q in &req.queries {
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
        let mut timeseries = Vec::with_capacity(found.len());
        for s in found {
            samples_left -= s.samples.len() as i64;
            if samples_left < 0 {
                return Err(Refusal::BadRequest(format!(
                    "exceeded sample limit ({limit}): narrow the query or raise --storage.remote.read-sample-limit"
                )));
            }
            let mut labels = s.labels;
            labels.add_missing(external);
            timeseries.push(TimeSeries {
                labels: labels.iter().map(|l| label(&l.name, &l.value)).collect(),
                samples: s.samples.iter().map(|x| Sample { value: x.v, timestamp: x.t }).collect(),
            });
        }
        results.push(QueryResult { timeseries });
    }
    Ok(ReadResponse { results }.encode_body())
}
