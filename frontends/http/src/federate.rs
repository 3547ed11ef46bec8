//! `/federate`: the newest sample of every series a `match[]` selector picks, in the text
//! exposition format (0.0.4) with each sample's own timestamp, for another server to scrape
//! with `honor_labels: true`. As Prometheus serves it: every family `untyped` without HELP,
//! the external labels (and `instance=""`) appended to series that lack them, no `match[]`
//! an empty answer.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use promflow_storage::gofmt::format_g;
use promflow_storage::{is_stale_nan, Labels, Querier, Sample, METRIC_NAME};

use crate::api::{params, parse_selectors};

type Shared = State<std::sync::Arc<crate::AppState>>;

/// Serves `GET /federate`.
pub async fn federate(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(&q, &headers, &body);
    // Prometheus answers a bad selector with its message as plain text
    let selectors = match parse_selectors(&p) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e.message).into_response(),
    };
    let lookback = state.query.lookback_delta.as_millis() as i64;
    let external = state.status.external_labels();
    let db = std::sync::Arc::clone(&state.db);
    let answer = tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now().timestamp_millis();
        let mut newest: BTreeMap<(String, Labels), Sample> = BTreeMap::new();
        for matchers in &selectors {
            for series in db.select(matchers, now - lookback, now)? {
                let Some(last) = series.samples.view().last() else { continue };
                if is_stale_nan(last.v) {
                    continue;
                }
                let name = series.labels.get(METRIC_NAME).to_string();
                newest.insert((name, series.labels), last);
            }
        }
        Ok::<_, promflow_storage::Error>(exposition(&newest, &external))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|read| read.map_err(|e| e.to_string()));
    match answer {
        Ok(text) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(Body::from(text))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => {
            state.http_metrics.federation_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// The text format of `newest` (ordered by metric name, then labels): a `# TYPE … untyped`
/// line per family, then each series' labels, the external labels it lacks (sorted by name;
/// `instance` among them with an empty value unless configured), value and timestamp.
fn exposition(newest: &BTreeMap<(String, Labels), Sample>, external: &Labels) -> String {
    let mut appended: Vec<(&str, &str)> =
        external.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    if !appended.iter().any(|(n, _)| *n == "instance") {
        appended.push(("instance", ""));
        appended.sort();
    }
    let mut out = String::new();
    let mut family: Option<&str> = None;
    for ((name, labels), sample) in newest {
        if family != Some(name.as_str()) {
            let _ = writeln!(out, "# TYPE {name} untyped");
            family = Some(name);
        }
        out.push_str(name);
        let own =
            labels.iter().filter(|l| l.name != METRIC_NAME).map(|l| (l.name.as_str(), l.value.as_str()));
        let added = appended.iter().copied().filter(|(n, _)| !labels.contains(n));
        let mut first = true;
        for (n, v) in own.chain(added) {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(n);
            out.push_str("=\"");
            promflow_storage::self_metrics::escape_label_value(&mut out, v);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        let _ = writeln!(out, " {} {}", format_g(sample.v, None), sample.t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_untyped_and_series_get_the_external_labels_they_lack() {
        let mut newest = BTreeMap::new();
        let up = Labels::from_pairs([("__name__", "up"), ("instance", "h:9100"), ("job", "node")]);
        let sum = Labels::from_pairs([("__name__", "job:up:sum"), ("job", "node"), ("cluster", "own")]);
        let odd = Labels::from_pairs([("__name__", "up"), ("instance", "a\"b\\c\nd"), ("job", "x")]);
        for (labels, v) in [(up, 1.0), (sum, 2.5e9), (odd, f64::NAN)] {
            newest.insert((labels.get(METRIC_NAME).to_string(), labels), Sample { t: 1_700_000_000_123, v });
        }
        let external = Labels::from_pairs([("cluster", "eu")]);
        assert_eq!(
            exposition(&newest, &external),
            "# TYPE job:up:sum untyped\n\
             job:up:sum{cluster=\"own\",job=\"node\",instance=\"\"} 2.5e+09 1700000000123\n\
             # TYPE up untyped\n\
             up{instance=\"a\\\"b\\\\c\\nd\",job=\"x\",cluster=\"eu\"} NaN 1700000000123\n\
             up{instance=\"h:9100\",job=\"node\",cluster=\"eu\"} 1 1700000000123\n"
        );
    }
}
