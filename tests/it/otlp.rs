//! The OTLP receiver with the OpenTelemetry Python SDK (PyPI) and its OTLP/HTTP exporter as the
//! sender: counters, gauges, up-down counters, explicit and exponential histograms arrive
//! under the names and labels Prometheus 3's translation gives them, with `target_info`;
//! OTLP/JSON bodies are read; a request with delta temporality is refused whole, or its deltas
//! are added up into cumulative series with `otlp-deltatocumulative`.

use crate::common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Runs a Python snippet with the OpenTelemetry SDK exporting to `endpoint`, returning what
/// it prints; `None` when the SDK is missing outside CI.
fn python_sdk(endpoint: &str, code: &str) -> Option<String> {
    if !python_has("opentelemetry.exporter.otlp.proto.http.metric_exporter") {
        return None;
    }
    let script = format!(
        "from opentelemetry.sdk.metrics import MeterProvider\n\
         from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader\n\
         from opentelemetry.sdk.metrics.view import View, ExponentialBucketHistogramAggregation\n\
         from opentelemetry.sdk.resources import Resource\n\
         from opentelemetry.exporter.otlp.proto.http import Compression\n\
         from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter\n\
         endpoint = {endpoint:?}\n{code}"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The series of an instant query, as `{labels} value` lines sorted (histograms as their
/// count and sum).
fn answer(s: &Server, q: &str) -> Vec<String> {
    let (_, v) = s.get_json(&format!("/api/v1/query?query={}", urlencode(q)));
    let mut out: Vec<String> = result(&v)
        .iter()
        .map(|r| {
            let value = match r.get("histogram") {
                Some(h) => {
                    format!("count={} sum={}", h[1]["count"].as_str().unwrap(), h[1]["sum"].as_str().unwrap())
                }
                None => r["value"][1].as_str().unwrap().to_string(),
            };
            format!("{} {value}", r["metric"])
        })
        .collect();
    out.sort();
    out
}

const SDK_EXPORT: &str = r#"
resource = Resource.create({
    "service.name": "checkout", "service.namespace": "shop", "service.instance.id": "pod-1",
    "deployment.environment": "test", "host.name": "h1",
})
exporter = OTLPMetricExporter(endpoint=endpoint, compression=Compression.Gzip)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
views = [View(instrument_name="rpc.duration", aggregation=ExponentialBucketHistogramAggregation(max_size=20))]
provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
meter = provider.get_meter("io.test.meter", "1.2.3")
requests = meter.create_counter("http.requests", unit="1", description="Requests served")
requests.add(5, {"http.method": "GET", "code": 200})
requests.add(2, {"http.method": "POST", "code": 500})
meter.create_gauge("queue.depth", unit="{items}").set(7.5, {"queue": "a"})
meter.create_up_down_counter("active.requests", unit="1").add(3)
rpc = meter.create_histogram("rpc.duration", unit="s")
for v in [0.1, 0.2, 0.4, 0.8, 1.6]:
    rpc.record(v, {"rpc": "get"})
size = meter.create_histogram("payload.size", unit="By")
for v in [10, 200]:
    size.record(v)
# measurements inside a sampled span carry exemplars naming it
from opentelemetry.sdk.trace import TracerProvider
with TracerProvider().get_tracer("test").start_as_current_span("request") as span:
    size.record(3000)
    requests.add(1, {"http.method": "DELETE", "code": 204})
    ctx = span.get_span_context()
    print(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
assert provider.force_flush(10000)
provider.shutdown()
"#;

#[test]
fn the_opentelemetry_sdk_exports_and_the_series_are_prometheus_3s() {
    let dir = tempfile::tempdir().unwrap();
    let config = "otlp:\n  promote_resource_attributes: [deployment.environment]\n";
    let s = start_promflow(
        dir.path(),
        config,
        &["--web.enable-otlp-receiver", "--enable-feature=exemplar-storage"],
    );
    let endpoint = format!("{}/api/v1/otlp/v1/metrics", s.base);
    let Some(printed) = python_sdk(&endpoint, SDK_EXPORT) else { return };
    let (trace_id, span_id) = printed.trim().split_once(' ').expect("the span's trace and span IDs");
    // an answer line: the resource's job, instance and promoted attribute, and `labels`
    let line = |labels: &[(&str, &str)], value: &str| {
        let mut m = serde_json::Map::new();
        for (k, v) in [("deployment_environment", "test"), ("instance", "pod-1"), ("job", "shop/checkout")]
            .iter()
            .chain(labels)
        {
            m.insert(k.to_string(), Value::String(v.to_string()));
        }
        format!("{} {value}", Value::Object(m))
    };
    assert_eq!(
        answer(&s, "http_requests_total"),
        [
            line(&[("__name__", "http_requests_total"), ("code", "200"), ("http_method", "GET")], "5"),
            line(&[("__name__", "http_requests_total"), ("code", "204"), ("http_method", "DELETE")], "1"),
            line(&[("__name__", "http_requests_total"), ("code", "500"), ("http_method", "POST")], "2"),
        ]
    );
    // the exemplars name the span: on the counter, and on the bucket the observation fell in
    let (_, v) = s.get_json(&format!(
        "/api/v1/query_exemplars?query={}",
        urlencode("http_requests_total or payload_size_bytes_bucket")
    ));
    let got: Vec<(String, String, String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let series = s["seriesLabels"].clone();
            s["exemplars"].as_array().unwrap().clone().into_iter().map(move |e| {
                let text = |v: &Value| v.as_str().unwrap_or("").to_string();
                let name = format!("{}{{le={}}}", text(&series["__name__"]), text(&series["le"]));
                (name, text(&e["labels"]["trace_id"]), text(&e["labels"]["span_id"]), text(&e["value"]))
            })
        })
        .collect();
    let (trace, span) = (trace_id.to_string(), span_id.to_string());
    assert_eq!(
        got,
        [
            ("http_requests_total{le=}".to_string(), trace.clone(), span.clone(), "1".to_string()),
            ("payload_size_bytes_bucket{le=5000}".to_string(), trace, span, "3000".to_string()),
        ],
        "{v}"
    );
    assert_eq!(answer(&s, "queue_depth"), [line(&[("__name__", "queue_depth"), ("queue", "a")], "7.5")]);
    // a non-monotonic sum is a gauge: neither `_total` nor `_ratio`
    assert_eq!(answer(&s, "active_requests"), [line(&[("__name__", "active_requests")], "3")]);
    // the exponential histogram is a native histogram
    assert_eq!(
        answer(&s, "rpc_duration_seconds"),
        [line(&[("__name__", "rpc_duration_seconds"), ("rpc", "get")], "count=5 sum=3.1")]
    );
    let (_, v) = s.get_json(&format!(
        "/api/v1/query?query={}",
        urlencode("histogram_quantile(0.5, rpc_duration_seconds)")
    ));
    let median: f64 = result(&v)[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((0.3..=0.45).contains(&median), "{median}");
    // the explicit-bucket histogram is a classic one, `le` as Prometheus writes it
    let (_, v) = s.get_json(&format!(
        "/api/v1/query?query={}",
        urlencode(r#"payload_size_bytes_bucket{le=~"5|10|250|5000|\\+Inf"}"#)
    ));
    let mut buckets: Vec<(f64, String)> = result(&v)
        .iter()
        .map(|r| {
            (
                r["metric"]["le"].as_str().unwrap().parse().unwrap(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(
        buckets,
        [
            (5.0, "0".into()),
            (10.0, "1".into()),
            (250.0, "2".into()),
            (5000.0, "3".into()),
            (f64::INFINITY, "3".into())
        ]
    );
    assert_eq!(
        answer(&s, "payload_size_bytes_sum"),
        [line(&[("__name__", "payload_size_bytes_sum")], "3210")]
    );
    // the resource's other attributes are on target_info, not on the series
    let (_, v) = s.get_json("/api/v1/query?query=target_info");
    let info = &result(&v)[0]["metric"];
    assert_eq!((info["job"].as_str(), info["instance"].as_str()), (Some("shop/checkout"), Some("pod-1")));
    assert_eq!(info["host_name"], "h1");
    assert_eq!(info["telemetry_sdk_language"], "python");
    assert!(info.get("service_name").is_none(), "{info}");
    let (_, v) = s.get_json("/api/v1/series?match[]=http_requests_total");
    assert!(v["data"].as_array().unwrap().iter().all(|s| s.get("host_name").is_none()), "{v}");
}

/// A request in OTLP/JSON: one gauge, and when `delta` a delta sum beside it.
fn json_request(t_ms: i64, delta: bool) -> Value {
    let point = |v: f64| json!({"timeUnixNano": (t_ms * 1_000_000).to_string(), "asDouble": v, "attributes": [{"key": "k", "value": {"stringValue": "v"}}]});
    let mut metrics = vec![json!({"name": "json.gauge", "unit": "s", "gauge": {"dataPoints": [point(1.5)]}})];
    if delta {
        metrics.push(json!({"name": "deltas", "sum": {"dataPoints": [point(1.0)], "aggregationTemporality": 1, "isMonotonic": true}}));
    }
    json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-job"}}]},
        "scopeMetrics": [{"scope": {"name": "s"}, "metrics": metrics}]
    }]})
}

#[test]
fn json_bodies_are_read_and_bad_requests_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-otlp-receiver"]);
    let post = |body: Vec<u8>, content_type: &str| {
        let r = client()
            .post(s.url("/api/v1/otlp/v1/metrics"))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let now = now_ms();
    // a delta sum fails the whole request: the gauge beside it is not stored either
    let (status, body) = post(json_request(now - 1000, true).to_string().into_bytes(), "application/json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid temporality and type combination for metric \"deltas\""), "{body}");
    assert!(answer(&s, "json_gauge_seconds").is_empty());

    let (status, body) = post(json_request(now - 1000, false).to_string().into_bytes(), "application/json");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(
        answer(&s, "json_gauge_seconds"),
        [r#"{"__name__":"json_gauge_seconds","job":"json-job","k":"v"} 1.5"#]
    );
    // a resource with nothing but its service name has no target_info
    assert!(answer(&s, "target_info").is_empty());

    // what the sender must fix: 400, with the reason
    for (body, ct, says) in [
        (b"{}".to_vec(), "text/plain", "unsupported content type"),
        (b"not json".to_vec(), "application/json", "decoding"),
        (vec![0xff; 16], "application/x-protobuf", "decoding"),
    ] {
        let (status, text) = post(body, ct);
        assert_eq!(status, 400, "{ct}: {text}");
        assert!(text.contains(says), "{ct}: {text}");
    }
    // a sample older than what storage holds for the series: refused, 400
    let (status, body) = post(json_request(now - 60_000, false).to_string().into_bytes(), "application/json");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn without_the_flag_the_receiver_answers_404() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &[]);
    let r = client()
        .post(s.url("/api/v1/otlp/v1/metrics"))
        .header("Content-Type", "application/json")
        .body(json_request(now_ms(), false).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().unwrap().contains("--web.enable-otlp-receiver"));
}

#[test]
fn start_times_are_kept_and_become_zero_samples() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(
        dir.path(),
        "",
        &[
            "--web.enable-otlp-receiver",
            "--enable-feature=st-storage",
            "--enable-feature=use-start-timestamps",
            "--enable-feature=created-timestamp-zero-ingestion",
        ],
    );
    let now = now_ms();
    let start = now - 60_000;
    let point = |t: i64, v: f64| json!({"startTimeUnixNano": (start * 1_000_000).to_string(), "timeUnixNano": (t * 1_000_000).to_string(), "asDouble": v});
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "st"}}]},
        "scopeMetrics": [{"metrics": [{"name": "orders", "sum": {
            "dataPoints": [point(now - 20_000, 5.0), point(now - 10_000, 8.0)],
            "aggregationTemporality": 2, "isMonotonic": true}}]}]
    }]});
    let r = client()
        .post(s.url("/api/v1/otlp/v1/metrics"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let at = |q: &str, t: i64| {
        let (_, v) = s.get_json(&format!("/api/v1/query?query={}&time={}", urlencode(q), t as f64 / 1000.0));
        result(&v).iter().map(|r| r["value"][1].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()
    };
    assert_eq!(at("start_timestamp(orders_total)", now), [format!("{}", start as f64 / 1000.0)]);
    // the zero sample where the count began
    assert_eq!(at("orders_total", start), ["0"]);
    assert_eq!(at("count_over_time(orders_total[2m])", now), ["3"]);
}

/// The SDK exporting delta temporality, in two rounds: a counter, an exponential and an
/// explicit-bucket histogram, each with measurements in both.
const SDK_DELTAS: &str = r#"
import time
from opentelemetry.sdk.metrics import Counter, Histogram
from opentelemetry.sdk.metrics.export import AggregationTemporality
delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
exporter = OTLPMetricExporter(endpoint=endpoint, preferred_temporality=delta)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
views = [View(instrument_name="rpc.duration", aggregation=ExponentialBucketHistogramAggregation(max_size=20))]
resource = Resource.create({"service.name": "deltas", "service.instance.id": "i1"})
provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
meter = provider.get_meter("m")
requests = meter.create_counter("http.requests")
rpc = meter.create_histogram("rpc.duration", unit="s")
size = meter.create_histogram("payload.size", unit="By")
requests.add(5, {"code": "200"})
for v in [0.1, 0.2, 0.4]:
    rpc.record(v)
size.record(10)
assert provider.force_flush(10000)
time.sleep(0.05)
requests.add(3, {"code": "200"})
for v in [0.8, 1.6]:
    rpc.record(v)
size.record(200)
assert provider.force_flush(10000)
provider.shutdown()
"#;

/// With `otlp-deltatocumulative`, deltas are added up into the cumulative series Prometheus 3
/// stores for them: counters, exponential histograms (native) and explicit ones (classic);
/// a delta older than its stream's newest is dropped and the request still succeeds.
#[test]
fn deltas_are_added_up_into_cumulative_series() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(
        dir.path(),
        "",
        &["--web.enable-otlp-receiver", "--enable-feature=otlp-deltatocumulative"],
    );
    let endpoint = format!("{}/api/v1/otlp/v1/metrics", s.base);
    let Some(_) = python_sdk(&endpoint, SDK_DELTAS) else { return };
    let number = |q: &str| -> f64 {
        let (_, v) = s.get_json(&format!("/api/v1/query?query={}", urlencode(q)));
        assert_eq!(result(&v).len(), 1, "{q}: {v}");
        result(&v)[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(
        answer(&s, "http_requests_total"),
        [r#"{"__name__":"http_requests_total","code":"200","instance":"i1","job":"deltas"} 8"#]
    );
    // the counter's series is a counter: two samples, one increase of 3
    assert_eq!(number("count_over_time(http_requests_total[10m])"), 2.0);
    // the exponential histogram's two deltas, as one native histogram (their sums add in
    // floating point: 0.7 + 2.4)
    assert_eq!(number("histogram_count(rpc_duration_seconds)"), 5.0);
    assert!((number("histogram_sum(rpc_duration_seconds)") - 3.1).abs() < 1e-9);
    // the explicit histogram's, as a classic one
    assert_eq!(number("payload_size_bytes_sum"), 210.0);
    assert_eq!(number(r#"payload_size_bytes_bucket{le="10"}"#), 1.0);
    assert_eq!(number(r#"payload_size_bytes_bucket{le="250"}"#), 2.0);

    // a JSON delta sum: a new stream, a point older than its newest (dropped), a later one
    let post = |t_ms: i64, v: f64| {
        let point = json!({"startTimeUnixNano": ((t_ms - 1000) * 1_000_000).to_string(), "timeUnixNano": (t_ms * 1_000_000).to_string(), "asDouble": v});
        let body = json!({"resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-job"}}]},
            "scopeMetrics": [{"metrics": [{"name": "jobs.done", "sum": {"dataPoints": [point], "aggregationTemporality": 1, "isMonotonic": true}}]}]
        }]});
        let r = client()
            .post(s.url("/api/v1/otlp/v1/metrics"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        r.status().as_u16()
    };
    let now = now_ms();
    assert_eq!(post(now - 2000, 4.0), 200);
    assert_eq!(post(now - 3000, 100.0), 200, "an old delta is dropped, not refused");
    assert_eq!(post(now - 1000, 1.5), 200);
    assert_eq!(answer(&s, "jobs_done_total"), [r#"{"__name__":"jobs_done_total","job":"json-job"} 5.5"#]);
}

#[test]
fn both_ways_of_taking_deltas_at_once_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = refused_start(
        dir.path(),
        &[
            "--web.enable-otlp-receiver",
            "--enable-feature=otlp-deltatocumulative,otlp-native-delta-ingestion",
        ],
    );
    assert!(log.contains("cannot enable otlp-deltatocumulative and otlp-native-delta-ingestion"), "{log}");
}
