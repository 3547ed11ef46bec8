//! `/federate`: the newest sample of every series a `match[]` selector picks, with each
//! sample's own timestamp, for another server to scrape with `honor_labels: true`. As
//! Prometheus serves it: in the text exposition format (0.0.4), or in the protobuf format
//! (length-delimited `MetricFamily` messages) to a scraper that prefers it, the only one that
//! carries native histograms; every float family `untyped` without HELP, the external labels
//! (and `instance=""`) appended to series that lack them, no `match[]` an empty answer.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use promflow_scrape::exposition::protobuf::wire;
use promflow_storage::gofmt::format_g;
use promflow_storage::{is_stale_nan, FloatHistogram, Labels, Querier, Timestamp, METRIC_NAME};

use crate::api::{params, parse_selectors};

type Shared = State<std::sync::Arc<crate::AppState>>;

/// The protobuf format's content type, as Prometheus answers it.
const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
/// The text format's.
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A series' newest sample.
#[derive(Clone, Debug, PartialEq)]
enum Newest {
    Float(Timestamp, f64),
    Histogram(Timestamp, Arc<FloatHistogram>),
}

impl Newest {
    fn t(&self) -> Timestamp {
        match self {
            Newest::Float(t, _) | Newest::Histogram(t, _) => *t,
        }
    }
}

/// Serves `GET /federate`.
pub async fn federate(State(state): Shared, q: RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(&q, &headers, &body);
    // Prometheus answers a bad selector with its message as plain text
    let selectors = match parse_selectors(&p) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e.message).into_response(),
    };
    let protobuf = prefers_protobuf(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or(""));
    let lookback = state.query.lookback_delta.as_millis() as i64;
    let external = state.status.external_labels();
    let shared = Arc::clone(&state);
    let runtime = tokio::runtime::Handle::current();
    let answer = state
        .query_pool
        .spawn(move || {
            // in a cluster, every node's series (a node asked by another answers its own)
            let db = crate::api::query::own_storage(&shared, &headers, runtime);
            let now = chrono::Utc::now().timestamp_millis();
            let mut newest: BTreeMap<(String, Labels), Newest> = BTreeMap::new();
            for matchers in &selectors {
                for series in db.select(matchers, now - lookback, now)? {
                    let Some(last) = series.samples.view().last() else { continue };
                    let name = series.labels.get(METRIC_NAME).to_string();
                    newest.insert((name, series.labels), Newest::Float(last.t, last.v));
                }
                for series in db.select_histograms(matchers, now - lookback, now)? {
                    let Some(last) = series.samples.last() else { continue };
                    let name = series.labels.get(METRIC_NAME).to_string();
                    let key = (name, series.labels);
                    // the newer of a series' float and histogram samples is its newest
                    if newest.get(&key).is_none_or(|n| n.t() < last.t) {
                        newest.insert(key, Newest::Histogram(last.t, Arc::clone(&last.h)));
                    }
                }
            }
            newest.retain(|_, n| !matches!(n, Newest::Float(_, v) if is_stale_nan(*v)));
            Ok::<_, promflow_storage::Error>(if protobuf {
                protobuf_exposition(&newest, &external)
            } else {
                text_exposition(&newest, &external).into_bytes()
            })
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|read| read.map_err(|e| e.to_string()));
    match answer {
        Ok(body) => Response::builder()
            .header(header::CONTENT_TYPE, if protobuf { PROTOBUF } else { TEXT })
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => {
            state.http_metrics.federation_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// Whether an `Accept` header asks for the protobuf format before the text format: its
/// delimited `MetricFamily` media type with a quality at least every other's.
fn prefers_protobuf(accept: &str) -> bool {
    let mut best_other = 0.0f64;
    let mut protobuf = None;
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut proto, mut delimited) = (1.0f64, false, false);
        for p in params {
            match p.split_once('=').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim())) {
                Some((k, v)) if k == "q" => q = v.parse().unwrap_or(0.0),
                Some((k, v)) if k == "proto" => proto = v == "io.prometheus.client.MetricFamily",
                Some((k, v)) if k == "encoding" => delimited = v == "delimited",
                _ => {}
            }
        }
        if media == "application/vnd.google.protobuf" && proto && delimited {
            protobuf = Some(protobuf.map_or(q, |p: f64| p.max(q)));
        } else if !media.is_empty() {
            best_other = best_other.max(q);
        }
    }
    protobuf.is_some_and(|q| q > 0.0 && q >= best_other)
}

/// The labels a federated series is served with: its own but the name, then the external
/// labels it lacks (sorted by name; `instance` among them with an empty value unless
/// configured).
fn served_labels<'a>(
    labels: &'a Labels,
    appended: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let own = labels.iter().filter(|l| l.name != METRIC_NAME).map(|l| (l.name.as_str(), l.value.as_str()));
    own.chain(appended.iter().copied().filter(|(n, _)| !labels.contains(n)))
}

/// The external labels to append, with `instance` (empty) unless one is configured.
fn appended(external: &Labels) -> Vec<(&str, &str)> {
    let mut appended: Vec<(&str, &str)> =
        external.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    if !appended.iter().any(|(n, _)| *n == "instance") {
        appended.push(("instance", ""));
        appended.sort();
    }
    appended
}

/// The text format of `newest` (ordered by metric name, then labels): a `# TYPE … untyped`
/// line per family, then each series' labels, value and timestamp. The text format has no
/// native histograms: they are left out, as Prometheus leaves them out.
fn text_exposition(newest: &BTreeMap<(String, Labels), Newest>, external: &Labels) -> String {
    let appended = appended(external);
    let mut out = String::new();
    let mut family: Option<&str> = None;
    for ((name, labels), sample) in newest {
        let Newest::Float(t, v) = sample else { continue };
        if family != Some(name.as_str()) {
            let _ = writeln!(out, "# TYPE {name} untyped");
            family = Some(name);
        }
        out.push_str(name);
        let mut first = true;
        for (n, v) in served_labels(labels, &appended) {
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
        let _ = writeln!(out, " {} {}", format_g(*v, None), t);
    }
    out
}

/// The protobuf format of `newest`: a family per metric name and kind, float samples
/// `UNTYPED`, native histograms `HISTOGRAM` with float counts. A histogram of custom
/// buckets has no place in the format's messages and is left out.
fn protobuf_exposition(newest: &BTreeMap<(String, Labels), Newest>, external: &Labels) -> Vec<u8> {
    let appended = appended(external);
    let mut families: Vec<wire::MetricFamily> = Vec::new();
    for ((name, labels), sample) in newest {
        let label = served_labels(labels, &appended)
            .map(|(n, v)| wire::LabelPair { name: Some(n.to_string()), value: Some(v.to_string()) })
            .collect();
        let (kind, metric) = match sample {
            Newest::Float(t, v) => (
                wire::metric_type::UNTYPED,
                wire::Metric {
                    label,
                    untyped: Some(wire::Untyped { value: Some(*v) }),
                    timestamp_ms: Some(*t),
                    ..Default::default()
                },
            ),
            Newest::Histogram(_, h) if h.uses_custom_buckets() => continue,
            Newest::Histogram(t, h) => (
                wire::metric_type::HISTOGRAM,
                wire::Metric {
                    label,
                    histogram: Some(native(h)),
                    timestamp_ms: Some(*t),
                    ..Default::default()
                },
            ),
        };
        match families.last_mut() {
            Some(f) if f.name.as_deref() == Some(name) && f.r#type == Some(kind) => f.metric.push(metric),
            _ => families.push(wire::MetricFamily {
                name: Some(name.clone()),
                help: None,
                r#type: Some(kind),
                metric: vec![metric],
                unit: None,
            }),
        }
    }
    wire::encode_delimited(&families)
}

/// A native histogram as the protobuf format's message, with float counts.
fn native(h: &FloatHistogram) -> wire::Histogram {
    let (positive_span, positive_count) = spans(h.positive_buckets());
    let (negative_span, negative_count) = spans(h.negative_buckets());
    wire::Histogram {
        sample_count_float: Some(h.count),
        sample_sum: Some(h.sum),
        schema: Some(h.schema),
        zero_threshold: Some(h.zero_threshold),
        zero_count_float: Some(h.zero_count),
        positive_span,
        positive_count,
        negative_span,
        negative_count,
        ..Default::default()
    }
}

/// Buckets (index, count), sorted by index, as spans and their counts: a span's offset is
/// its first index's distance from the previous span's end (from 0 for the first).
fn spans(buckets: &[(i32, f64)]) -> (Vec<wire::BucketSpan>, Vec<f64>) {
    let mut spans: Vec<wire::BucketSpan> = Vec::new();
    let mut next: Option<i32> = None;
    for &(i, _) in buckets {
        match (next, spans.last_mut()) {
            (Some(n), Some(last)) if n == i => last.length = Some(last.length.unwrap_or(0) + 1),
            _ => spans.push(wire::BucketSpan { offset: Some(i - next.unwrap_or(0)), length: Some(1) }),
        }
        next = Some(i + 1);
    }
    (spans, buckets.iter().map(|b| b.1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_scrape::exposition::{parse_with, Format, HistogramOptions};

    fn latency() -> FloatHistogram {
        FloatHistogram::from_buckets(
            promflow_storage::native_histogram::CounterResetHint::Unknown,
            1,
            0.001,
            1.0,
            9.0,
            7.5,
            vec![(-2, 1.0), (-1, 2.0), (3, 4.0)],
            vec![(0, 1.0)],
            vec![],
        )
        .unwrap()
    }

    fn newest() -> BTreeMap<(String, Labels), Newest> {
        let mut newest = BTreeMap::new();
        let up = Labels::from_pairs([("__name__", "up"), ("instance", "h:9100"), ("job", "node")]);
        let sum = Labels::from_pairs([("__name__", "job:up:sum"), ("job", "node"), ("cluster", "own")]);
        let odd = Labels::from_pairs([("__name__", "up"), ("instance", "a\"b\\c\nd"), ("job", "x")]);
        for (labels, v) in [(up, 1.0), (sum, 2.5e9), (odd, f64::NAN)] {
            newest.insert((labels.get(METRIC_NAME).to_string(), labels), Newest::Float(1_700_000_000_123, v));
        }
        let h = latency();
        let lat = Labels::from_pairs([("__name__", "latency"), ("job", "api")]);
        newest.insert(("latency".into(), lat), Newest::Histogram(1_700_000_000_500, Arc::new(h)));
        newest
    }

    #[test]
    fn families_are_untyped_and_series_get_the_external_labels_they_lack() {
        let external = Labels::from_pairs([("cluster", "eu")]);
        assert_eq!(
            text_exposition(&newest(), &external),
            "# TYPE job:up:sum untyped\n\
             job:up:sum{cluster=\"own\",job=\"node\",instance=\"\"} 2.5e+09 1700000000123\n\
             # TYPE up untyped\n\
             up{instance=\"a\\\"b\\\\c\\nd\",job=\"x\",cluster=\"eu\"} NaN 1700000000123\n\
             up{instance=\"h:9100\",job=\"node\",cluster=\"eu\"} 1 1700000000123\n"
        );
    }

    #[test]
    fn the_protobuf_format_carries_native_histograms() {
        let external = Labels::from_pairs([("cluster", "eu")]);
        let body = protobuf_exposition(&newest(), &external);
        let opts = HistogramOptions { native: true, ..Default::default() };
        let expo = parse_with(&body, Format::Protobuf, &opts).unwrap();
        assert_eq!(expo.histograms.len(), 1);
        let got = &expo.histograms[0];
        assert_eq!(got.labels.get("cluster"), "eu");
        assert_eq!(got.timestamp_ms, Some(1_700_000_000_500));
        let want = latency();
        assert_eq!(got.histogram.positive_buckets(), want.positive_buckets());
        assert_eq!(got.histogram.negative_buckets(), want.negative_buckets());
        assert_eq!((got.histogram.count, got.histogram.sum, got.histogram.zero_count), (9.0, 7.5, 1.0));
        let floats: Vec<(String, f64)> =
            expo.samples.iter().map(|s| (s.labels.metric_name().to_string(), s.value)).collect();
        assert_eq!(floats.len(), 3, "{floats:?}");
        assert!(prefers_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,text/plain;version=0.0.4;q=0.4"
        ));
        assert!(!prefers_protobuf("text/plain;version=0.0.4;q=0.5,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.4"));
        assert!(!prefers_protobuf("*/*"));
        assert!(!prefers_protobuf(""));
    }

    #[test]
    fn buckets_become_spans() {
        let (spans, counts) = spans(&[(-2, 1.0), (-1, 2.0), (3, 4.0)]);
        let got: Vec<(i32, u32)> = spans.iter().map(|s| (s.offset.unwrap(), s.length.unwrap())).collect();
        assert_eq!(got, [(-2, 2), (3, 1)]);
        assert_eq!(counts, [1.0, 2.0, 4.0]);
    }
}
