//! End-to-end: the HTTP API of the real binary, fed through the remote-write receiver.

use crate::common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const BASE: i64 = 1_700_000_000_000;

fn seeded() -> (tempfile::TempDir, Server) {
    seeded_with(&[])
}

/// A server with the test data and extra flags.
fn seeded_with(flags: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--web.enable-remote-write-receiver"];
    args.extend_from_slice(flags);
    let s = start_promflow(dir.path(), "global:\n  scrape_interval: 15s\n", &args);
    let mut ts = Vec::new();
    for (job, inst, mult) in [("api", "a:1", 1.0), ("api", "b:1", 2.0), ("db", "c:1", 3.0)] {
        let samples: Vec<(i64, f64)> =
            (0..40).map(|i| (BASE + i * 15_000 + 7, i as f64 * 10.0 * mult)).collect();
        ts.push(series(&[("__name__", "http_requests_total"), ("job", job), ("instance", inst)], &samples));
    }
    ts.push(series(&[("__name__", "temperature"), ("room", "a\"b")], &[(BASE + 1_007, 21.5)]));
    ts.push(series(
        &[("__name__", "my.metric"), ("service.name", "checkout"), ("msg", "multi\nline")],
        &[(BASE + 2_003, 7.0)],
    ));
    let (code, body) = remote_write(&s, ts);
    assert_eq!(code, 204, "{body}");
    (dir, s)
}

#[test]
fn instant_and_range_queries_have_prometheus_shapes() {
    let (_dir, s) = seeded();
    let t = (BASE + 300_000) as f64 / 1000.0;
    let (code, v) = s.get_json(&format!("/api/v1/query?query=http_requests_total&time={t}"));
    assert_eq!(code, 200);
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let r = result(&v);
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["metric"]["__name__"], "http_requests_total");
    assert_eq!(r[0]["value"][0], serde_json::json!(1700000300));
    assert!(r[0]["value"][1].is_string());

    // sum by job of rate: 10/15 per second per unit multiplier
    let (_, v) = s.post_form(
        "/api/v1/query",
        &[("query", "sum by (job) (rate(http_requests_total[2m]))"), ("time", &t.to_string())],
    );
    let r = result(&v);
    assert_eq!(r.len(), 2);
    let api = r.iter().find(|x| x["metric"]["job"] == "api").unwrap();
    let val: f64 = api["value"][1].as_str().unwrap().parse().unwrap();
    assert!((val - 2.0).abs() < 1e-9, "{val}");

    let (code, v) = s.get_json(&format!(
        "/api/v1/query_range?query=http_requests_total{{job%3D%22db%22}}&start={}&end={}&step=60",
        BASE / 1000 + 60,
        BASE / 1000 + 300
    ));
    assert_eq!(code, 200);
    assert_eq!(v["data"]["resultType"], "matrix");
    let vals = result(&v)[0]["values"].as_array().unwrap();
    assert_eq!(vals.len(), 5);
    assert_eq!(vals[0][0], serde_json::json!(1700000060));

    // a range query is a matrix even when it has one step; a range selector is refused
    let (code, v) = s.get_json("/api/v1/query_range?query=1%2B1&start=1700000000&end=1700000000&step=15");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix", "{v}");
    let (code, _) =
        s.get_json("/api/v1/query_range?query=temperature[5m]&start=1700000000&end=1700000000&step=15");
    assert_eq!(code, 400);

    let (_, v) = s.get_json("/api/v1/query?query=1%2B1&time=1700000000");
    assert_eq!(v["data"], serde_json::json!({"resultType":"scalar","result":[1700000000,"2"]}));
    let (_, v) = s.get_json("/api/v1/query?query=%22hello%22&time=1700000000.5");
    assert_eq!(v["data"], serde_json::json!({"resultType":"string","result":[1700000000.5,"hello"]}));
    let (_, v) = s.get_json(&format!("/api/v1/query?query=temperature%20%2F%200&time={t}"));
    assert_eq!(result(&v)[0]["value"][1], "+Inf");
    assert_eq!(result(&v)[0]["metric"]["room"], "a\"b");

    // UTF-8 names (Prometheus 3): quoted in selectors and in grouping; `.` matches newlines
    let (code, v) = s.post_form(
        "/api/v1/query",
        &[
            ("query", "sum by (\"service.name\") ({\"my.metric\", msg=~\"multi.line\"})"),
            ("time", &t.to_string()),
        ],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(result(&v)[0]["metric"]["service.name"], "checkout", "{v}");
    assert_eq!(result(&v)[0]["value"][1], "7");
}

#[test]
fn delayed_name_removal_is_opt_in() {
    let t = ((BASE + 300_000) as f64 / 1000.0).to_string();
    let by_name = "sum by (__name__) (rate(http_requests_total[5m]))";
    // without the feature, rate() drops the name at once
    let (_dir, s) = seeded();
    let (_, v) = s.post_form("/api/v1/query", &[("query", by_name), ("time", &t)]);
    assert_eq!(result(&v)[0]["metric"], serde_json::json!({}), "{v}");
    drop(s);
    // with it, the name is there for `by (__name__)` and removed from the result at the end
    let (_dir, s) = seeded_with(&["--enable-feature=promql-delayed-name-removal"]);
    let (_, v) = s.post_form("/api/v1/query", &[("query", by_name), ("time", &t)]);
    assert_eq!(result(&v).len(), 1, "{v}");
    assert_eq!(result(&v)[0]["metric"], serde_json::json!({}), "{v}");
    let (_, v) = s.post_form(
        "/api/v1/query",
        &[
            ("query", "label_replace(rate(http_requests_total[5m]), \"n\", \"$1\", \"__name__\", \"(.+)\")"),
            ("time", &t),
        ],
    );
    assert_eq!(result(&v)[0]["metric"]["n"], "http_requests_total", "{v}");
    assert!(result(&v)[0]["metric"].get("__name__").is_none(), "{v}");
    // a filtering comparison across vectors keeps the mark: no name in the result
    let (_, v) = s.post_form(
        "/api/v1/query",
        &[("query", "rate(http_requests_total[5m]) > ignoring(foo) (http_requests_total * 0)"), ("time", &t)],
    );
    assert!(!result(&v).is_empty(), "{v}");
    for r in result(&v) {
        assert!(r["metric"].get("__name__").is_none(), "{v}");
    }
}

#[test]
fn warnings_and_infos_come_with_results() {
    let (_dir, s) = seeded();
    let t = (BASE + 300_000) as f64 / 1000.0;
    // a counter-style function over a name without a counter suffix: Prometheus's info
    let (code, v) =
        s.post_form("/api/v1/query", &[("query", "rate(temperature[10m:1m])"), ("time", &t.to_string())]);
    assert_eq!(code, 200, "{v}");
    let infos = v["infos"].as_array().expect("infos");
    assert_eq!(infos.len(), 1, "{v}");
    assert!(
        infos[0].as_str().unwrap().starts_with(
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"temperature\""
        ),
        "{v}"
    );
    assert!(v.get("warnings").is_none(), "{v}");
    // an out-of-range quantile: a warning, and still a result
    let (code, v) = s.post_form(
        "/api/v1/query",
        &[("query", "quantile(1.5, http_requests_total)"), ("time", &t.to_string())],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(result(&v)[0]["value"][1], "+Inf", "{v}");
    let warnings = v["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("PromQL warning: quantile value should be between 0 and 1, got 1.5"),
        "{v}"
    );
    // none on a clean query
    let (_, v) =
        s.post_form("/api/v1/query", &[("query", "rate(http_requests_total[5m])"), ("time", &t.to_string())]);
    assert!(v.get("infos").is_none() && v.get("warnings").is_none(), "{v}");
}

#[test]
fn errors_are_json_with_prometheus_types() {
    let (_dir, s) = seeded();
    let (code, v) = s.get_json("/api/v1/query?query=sum(");
    assert_eq!(code, 400);
    assert_eq!(v["errorType"], "bad_data");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("invalid parameter \"query\": 1:"), "{msg}");
    assert!(msg.contains("parse error"), "{msg}");

    let (code, v) = s.get_json("/api/v1/query_range?query=up&start=10&end=5&step=1");
    assert_eq!(code, 400);
    assert_eq!(v["error"], "end timestamp must not be before start time");
    let (code, v) = s.get_json("/api/v1/query_range?query=up&start=0&end=5&step=0");
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().starts_with("zero or negative query resolution step widths"));
    let (code, v) = s.get_json("/api/v1/query_range?query=up&end=5&step=1");
    assert_eq!(code, 400);
    assert_eq!(v["error"], "invalid parameter \"start\": cannot parse \"\" to a valid timestamp");
    let (code, _) = s.get_json("/api/v1/query_range?query=up&start=0&end=100000&step=1");
    assert_eq!(code, 400);
    let (code, v) = s.get_json("/api/v1/series");
    assert_eq!(code, 400);
    assert_eq!(v["error"], "no match[] parameter provided");
    let (code, v) = s.get_json("/api/v1/series?match[]=%7Bjob%3D%22%22%7D");
    assert_eq!(code, 400, "{v}");

    // many-to-many matching is an execution error (422)
    let t = (BASE + 300_000) / 1000;
    let (code, v) = s.get_json(&format!(
        "/api/v1/query?query=http_requests_total%20%2B%20on(job)%20http_requests_total&time={t}"
    ));
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["errorType"], "execution");
}

#[test]
fn metadata_endpoints() {
    let (_dir, s) = seeded();
    let (_, v) = s.get_json("/api/v1/labels");
    assert_eq!(v["data"], serde_json::json!(["__name__", "instance", "job", "msg", "room", "service.name"]));
    let (_, v) = s.post_form("/api/v1/labels", &[("match[]", "temperature")]);
    assert_eq!(v["data"], serde_json::json!(["__name__", "room"]));
    let (_, v) = s.get_json("/api/v1/label/job/values");
    assert_eq!(v["data"], serde_json::json!(["api", "db"]));
    let (_, v) = s.get_json("/api/v1/label/__name__/values?limit=1");
    assert_eq!(v["data"], serde_json::json!(["http_requests_total"]));
    let (_, v) = s.get_json("/api/v1/series?match[]=http_requests_total%7Bjob%3D~%22d.%22%7D");
    assert_eq!(
        v["data"],
        serde_json::json!([{"__name__":"http_requests_total","instance":"c:1","job":"db"}])
    );
    let (_, v) = s.get_json("/api/v1/label/U__jo_62_/values");
    assert_eq!(v["data"], serde_json::json!(["api", "db"]));

    let (_, v) = s.post_form(
        "/api/v1/query_exemplars",
        &[("query", "test"), ("start", "1700000000000"), ("end", "1700000001000")],
    );
    assert_eq!(v, serde_json::json!({"status":"success","data":[]}));
    let (_, v) = s.get_json("/api/v1/status/buildinfo");
    assert!(v["data"]["version"].as_str().unwrap().starts_with("3."));
    assert!(v["data"].get("features").is_none());
    let (_, v) = s.get_json("/api/v1/format_query?query=sum(rate(foo%5B5m%5D))by(job)");
    assert_eq!(v["data"], "sum by (job) (rate(foo[5m]))");
    let (_, v) = s.get_json("/api/v1/status/flags");
    assert_eq!(v["data"]["query.lookback-delta"], "5m");
    let (_, v) = s.get_json("/api/v1/status/tsdb");
    assert_eq!(v["data"]["headStats"]["numSeries"], 5);
    for path in [
        "/api/v1/rules",
        "/api/v1/alerts",
        "/api/v1/status/config",
        "/api/v1/status/runtimeinfo",
        "/api/v1/targets",
        "/api/v1/metadata",
        "/api/v1/targets/metadata",
    ] {
        let (code, v) = s.get_json(path);
        assert_eq!(code, 200, "{path}");
        assert_eq!(v["status"], "success", "{path}");
    }
    let (_, v) = s.get_json("/api/v1/query?query=up&explain=1");
    assert!(v["data"]["result"].as_str().unwrap().starts_with("Select {__name__=\"up\"}"), "{v}");
}

#[test]
fn remote_write_rejects_bad_input_without_losing_data() {
    let (_dir, s) = seeded();
    let r = client()
        .post(s.url("/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .body("garbage")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // an out-of-order sample rejects the request, and nothing of it is stored
    let (code, body) = remote_write(
        &s,
        vec![
            series(&[("__name__", "fresh")], &[(BASE + 5, 1.0)]),
            series(&[("__name__", "temperature"), ("room", "a\"b")], &[(BASE, 1.0)]),
        ],
    );
    assert_eq!(code, 400);
    assert!(body.contains("out of order"), "{body}");
    let (_, v) = s.get_json(&format!("/api/v1/query?query=fresh&time={}", BASE / 1000 + 10));
    assert_eq!(result(&v).len(), 0);
    // the server is still healthy
    assert_eq!(s.get_text("/-/healthy").0, 200);
}

#[test]
fn cors_gzip_and_form_precedence() {
    let (_dir, s) = seeded();
    // as Prometheus: CORS headers answer a request that names its origin
    let r = client()
        .request(reqwest::Method::OPTIONS, s.url("/api/v1/query"))
        .header("Origin", "https://grafana.example.com")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = client().request(reqwest::Method::OPTIONS, s.url("/api/v1/query")).send().unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client().post(s.url("/api/v1/query?query=1")).form(&[("query", "2")]).send().unwrap();
    let v: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(v["data"]["result"][1], "2");
    // gzip when asked: a small answer (101 points) compressed whole and sent with its length,
    // a large one (10,001 points) compressed as it streams; both decode to the plain answer
    let raw = reqwest::blocking::Client::builder().gzip(false).build().unwrap();
    let range = |end: u32| format!("/api/v1/query_range?query=vector(1)&start=0&end={end}&step=1");
    for (path, whole) in [(range(100), true), (range(10_000), false)] {
        let path = path.as_str();
        let plain = raw.get(s.url(path)).send().unwrap();
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let plain = plain.text().unwrap();
        let r = raw.get(s.url(path)).header("Accept-Encoding", "deflate, gzip;q=0.8").send().unwrap();
        let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(header("content-encoding").as_deref(), Some("gzip"), "{path}");
        assert_eq!(header("vary").as_deref(), Some("accept-encoding"), "{path}");
        let length = header("content-length");
        let packed = r.bytes().unwrap();
        assert!(packed.len() < plain.len(), "{path}: {} of {}", packed.len(), plain.len());
        assert_eq!(length, whole.then(|| packed.len().to_string()), "{path}");
        // reqwest's own gzip decoder reads it back
        assert_eq!(client().get(s.url(path)).send().unwrap().text().unwrap(), plain, "{path}");
        // not when refused
        let r = raw.get(s.url(path)).header("Accept-Encoding", "gzip;q=0, br").send().unwrap();
        assert!(r.headers().get("content-encoding").is_none(), "{path}");
        assert_eq!(r.text().unwrap(), plain, "{path}");
    }
}

#[test]
fn hostile_queries_get_errors_not_crashes() {
    let (_dir, s) = seeded();
    let t = (BASE + 300_000) / 1000;
    // a subquery that would need 3e10 inner steps is refused
    let (code, v) =
        s.get_json(&format!("/api/v1/query?query=max_over_time(temperature%5B1y%3A1ms%5D)&time={t}"));
    assert_eq!(code, 422, "{v}");
    // deep nesting is parsed and evaluated without blowing the stack
    let deep = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
    let (code, v) = s.post_form("/api/v1/query", &[("query", &deep), ("time", "100")]);
    assert!(code == 200 || code == 400, "{code} {v}");
    for q in ["", "foo{", "rate(foo)", "sum by (", "\u{0}\u{1}"] {
        let (code, v) = s.post_form("/api/v1/query", &[("query", q)]);
        assert_eq!(code, 400, "{q:?}: {v}");
        assert_eq!(v["errorType"], "bad_data");
    }
    // refused when it runs, as Prometheus does (checked against 2.42)
    let (code, v) =
        s.post_form("/api/v1/query", &[("query", "label_replace(up, \"a\", \"b\", \"c\", \"(\")")]);
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["error"], "invalid regular expression in label_replace(): (");
    assert_eq!(s.get_text("/-/healthy").0, 200);
}

#[test]
fn review_regressions() {
    let (_dir, s) = seeded();
    let t = (BASE + 300_000) / 1000;
    let instant = |q: &str| -> Value {
        let (code, v) = s.post_form("/api/v1/query", &[("query", q), ("time", &t.to_string())]);
        assert_eq!(code, 200, "{q}: {v}");
        v
    };
    // `or` completes a series with the same labels: the classic `or vector(0)` in a subquery
    let v = instant("max_over_time((sum(nonexistent) or vector(0))[5m:1m])");
    assert_eq!(result(&v)[0]["value"][1], "0", "{v}");
    // `@ start()` inside a subquery means the query's start, not the subquery's
    let direct = instant("http_requests_total{instance=\"c:1\"}");
    let anchored = instant("max_over_time((http_requests_total{instance=\"c:1\"} @ start())[1m:10s])");
    assert_eq!(result(&anchored)[0]["value"][1], result(&direct)[0]["value"][1]);
    // lookback_delta=0 means the default
    let (_, v) = s.post_form(
        "/api/v1/query",
        &[("query", "http_requests_total"), ("time", &t.to_string()), ("lookback_delta", "0")],
    );
    assert_eq!(result(&v).len(), 3, "{v}");
    // negative steps and out-of-range times are bad data, not a runaway query
    let (code, v) = s.get_json("/api/v1/query_range?query=up&start=0&end=10&step=-1");
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().starts_with("zero or negative"), "{v}");
    let (code, _) =
        s.get_json("/api/v1/query_range?query=up&start=9223372036000000&end=9223372036854774&step=3600");
    assert_eq!(code, 400);
}

#[test]
fn remote_write_2_0_and_zstd_bodies_are_received() {
    let (_dir, s) = seeded();
    let t = BASE + 3_600_000;
    let v1 = promflow_remote::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "rw2"), ("k", "a")], &[(t, 1.0), (t + 1000, 2.0)]),
            series(&[("__name__", "rw2"), ("k", "b")], &[(t, 3.0)]),
        ],
        metadata: vec![],
    };
    let v2 = promflow_remote::WriteRequestV2::from_v1(&v1);
    let send = |content_type: &str, encoding: &str, body: Vec<u8>| {
        client()
            .post(s.url("/api/v1/write"))
            .header("Content-Type", content_type)
            .header("Content-Encoding", encoding)
            .body(body)
            .send()
            .unwrap()
    };
    let ct2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    let r = send(ct2, "snappy", promflow_remote::encode_v2(&v2));
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers()["x-prometheus-remote-write-samples-written"], "3");
    assert_eq!(r.headers()["x-prometheus-remote-write-histograms-written"], "0");
    let (_, v) =
        s.get_json(&format!("/api/v1/query?query=sum(count_over_time(rw2[1h]))&time={}", t / 1000 + 2));
    assert_eq!(result(&v)[0]["value"][1], "3", "{v}");
    // zstd, as vmagent compresses for receivers that take it, for 1.0 and 2.0 bodies
    let zstd = |raw: Vec<u8>| zstd::bulk::compress(&raw, 3).unwrap();
    let later = promflow_remote::WriteRequest {
        timeseries: vec![series(&[("__name__", "rw2"), ("k", "c")], &[(t, 5.0)])],
        metadata: vec![],
    };
    let raw1 = promflow_remote::decompress(&promflow_remote::encode(&later)).unwrap();
    let r = send("application/x-protobuf", "zstd", zstd(raw1));
    assert_eq!(r.status().as_u16(), 204);
    assert!(
        r.headers().get("x-prometheus-remote-write-samples-written").is_none(),
        "1.0 answers carry no counts"
    );
    let mut v2c = promflow_remote::WriteRequestV2::from_v1(&later);
    v2c.timeseries[0].labels_refs[3] = v2c.symbols.len() as u32 + 1;
    let raw2 = promflow_remote::decompress(&promflow_remote::encode_v2(&v2c)).unwrap();
    let r = send(ct2, "zstd", zstd(raw2));
    assert_eq!(r.status().as_u16(), 400, "a label reference past the symbol table");
    assert_eq!(r.headers()["x-prometheus-remote-write-samples-written"], "0");
    let (_, v) = s.get_json(&format!("/api/v1/query?query=rw2{{k=\"c\"}}&time={}", t / 1000 + 2));
    assert_eq!(result(&v)[0]["value"][1], "5", "{v}");
    // vmagent's question whether zstd bodies are taken
    assert_eq!(s.get_text("/api/v1/write?get_vm_proto_version=1"), (200, "1".to_string()));
    // what is not supported is a 415 that says what is
    let r = send("application/x-protobuf;proto=io.prometheus.write.v3.Request", "snappy", vec![]);
    assert_eq!(r.status().as_u16(), 415);
    assert!(r.text().unwrap().contains("v3"));
    let r = send("application/json", "snappy", vec![]);
    assert_eq!(r.status().as_u16(), 415);
    let r = send("application/x-protobuf", "gzip", vec![]);
    assert_eq!(r.status().as_u16(), 415);
    let (_, text) = s.get_text("/metrics");
    assert!(
        text.contains("promflow_remote_write_received_requests_total{encoding=\"zstd\",message=\"io.prometheus.write.v2.Request\"} 1"),
        "{}",
        text.lines().filter(|l| l.contains("received_requests")).collect::<Vec<_>>().join("\n")
    );
}

/// The keys of a query log line, nested ones as `outer.inner`, sorted.
fn log_keys(line: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for (k, v) in line.as_object().unwrap() {
        match v.as_object() {
            Some(inner) if k != "stats" => keys.extend(inner.keys().map(|i| format!("{k}.{i}"))),
            _ => keys.push(k.clone()),
        }
    }
    keys.extend(
        line["stats"]["timings"].as_object().into_iter().flatten().map(|(k, _)| format!("stats.timings.{k}")),
    );
    keys.sort();
    keys
}

/// `global.query_log_file` gets one JSON line per query in Prometheus's layout (checked key by
/// key against Prometheus 2.42's log of the same queries), and is reopened at a reload, so a
/// rotated log is written anew.
#[test]
fn the_query_log_has_prometheus_lines_and_is_reopened_at_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("queries.log");
    let config = format!("global:\n  query_log_file: {}\n", log.display());
    let pf = start_promflow(dir.path(), &config, &["--web.enable-lifecycle"]);
    let (code, _) = pf.get_json("/api/v1/query?query=vector(1)&time=1700000000");
    assert_eq!(code, 200);
    let (code, _) = pf.post_form(
        "/api/v1/query_range",
        &[("query", "up"), ("start", "1700000000"), ("end", "1700000060"), ("step", "15")],
    );
    assert_eq!(code, 200);
    let lines = json_lines;
    let ours = lines(&log);
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(ours[0]["params"]["query"], "vector(1)");
    assert_eq!(ours[0]["params"]["start"], "2023-11-14T22:13:20.000Z");
    assert_eq!(ours[0]["params"]["step"], 0);
    assert_eq!(ours[0]["httpRequest"]["path"], "/api/v1/query");
    assert_eq!(ours[0]["httpRequest"]["method"], "GET");
    assert_eq!(ours[0]["httpRequest"]["clientIP"], "127.0.0.1");
    assert_eq!(ours[1]["params"]["step"], 15);
    assert_eq!(ours[1]["httpRequest"]["method"], "POST");
    assert!(ours[1]["stats"]["timings"]["evalTotalTime"].as_f64().is_some(), "{}", ours[1]);

    if let Some(prom) =
        common::start_prometheus(dir.path(), &config.replace("queries.log", "prometheus-queries.log"))
    {
        let (code, _) = prom.get_json("/api/v1/query?query=vector(1)&time=1700000000");
        assert_eq!(code, 200);
        let theirs = lines(&dir.path().join("prometheus-queries.log"));
        assert_eq!(theirs.len(), 1, "{theirs:?}");
        assert_eq!(
            log_keys(&theirs[0]),
            log_keys(&ours[0]),
            "Prometheus: {}\npromflow: {}",
            theirs[0],
            ours[0]
        );
        assert_eq!(theirs[0]["params"], ours[0]["params"]);
    }

    // a rotated log: the reload opens the configured path again
    std::fs::rename(&log, dir.path().join("queries.log.1")).unwrap();
    let reloaded = common::client().post(pf.url("/-/reload")).send().unwrap();
    assert_eq!(reloaded.status(), 200);
    let (code, _) = pf.get_json("/api/v1/query?query=vector(2)&time=1700000000");
    assert_eq!(code, 200);
    let after = lines(&log);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["params"]["query"], "vector(2)");
}

/// The query log also has the queries that failed in evaluation (with their `error`) and every
/// rule evaluation (under `ruleGroup` instead of `httpRequest`), as Prometheus 2.42's has (its
/// lines for the same queries and rules have the same keys).
#[test]
fn the_query_log_has_failed_queries_and_rule_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: logged\n  interval: 1s\n  rules:\n  - record: one\n    expr: vector(1)\n",
    )
    .unwrap();
    let config = |log: &str| {
        format!("global:\n  query_log_file: {}\nrule_files: [rules.yml]\n", dir.path().join(log).display())
    };
    let lines = |name: &str| json_lines(&dir.path().join(name));
    // a query whose time runs out before it starts: evaluated, failed, logged
    let failing = "/api/v1/query?query=vector(3)&time=1700000000&timeout=0.000001";
    let rule_line = |name: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = lines(name).into_iter().find(|l| l.get("ruleGroup").is_some()) {
                return l;
            }
            assert!(std::time::Instant::now() < deadline, "no rule evaluation in {name}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let pf = start_promflow(dir.path(), &config("queries.log"), &[]);
    let (code, body) = pf.get_json(failing);
    assert_eq!(code, 503, "{body}");
    let ours = rule_line("queries.log");
    assert_eq!(ours["params"]["query"], "vector(1)");
    assert_eq!(ours["params"]["step"], 0);
    assert_eq!(ours["ruleGroup"]["name"], "logged");
    assert!(ours["ruleGroup"]["file"].as_str().unwrap().ends_with("rules.yml"), "{ours}");
    let failed =
        lines("queries.log").into_iter().find(|l| l["params"]["query"] == "vector(3)").expect("failed query");
    assert!(failed["error"].as_str().unwrap().contains("timed out"), "{failed}");
    assert_eq!(failed["httpRequest"]["path"], "/api/v1/query");

    if let Some(prom) = common::start_prometheus(dir.path(), &config("prometheus-queries.log")) {
        // a microsecond is now and then enough for Prometheus to answer `vector(3)` before it
        // checks its deadline: ask again (a bounded number of times) for the failure to log
        let code = (0..5).map(|_| prom.get_json(failing).0).find(|&code| code == 503).unwrap_or(200);
        assert_eq!(code, 503, "Prometheus answered a query of a microsecond's timeout five times");
        let theirs = rule_line("prometheus-queries.log");
        assert_eq!(log_keys(&theirs), log_keys(&ours), "Prometheus: {theirs}\npromflow: {ours}");
        let theirs_failed = lines("prometheus-queries.log")
            .into_iter()
            .find(|l| l["params"]["query"] == "vector(3)" && l.get("error").is_some())
            .expect("Prometheus logs the failed query");
        assert_eq!(
            log_keys(&theirs_failed),
            log_keys(&failed),
            "Prometheus: {theirs_failed}\npromflow: {failed}"
        );
    }
}

/// The `le` bounds and the `_count` of `family`'s histogram for `handler` in a `/metrics` page.
fn duration_histogram(metrics: &str, family: &str, handler: &str) -> (Vec<String>, f64) {
    let selector = format!("handler=\"{handler}\"");
    let mut bounds = Vec::new();
    let mut count = 0.0;
    for line in metrics.lines().filter(|l| l.contains(&selector)) {
        if let Some(rest) = line.strip_prefix(&format!("{family}_bucket{{")) {
            let le = rest.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            bounds.push(le.to_string());
        } else if line.starts_with(&format!("{family}_count{{")) {
            count = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        }
    }
    (bounds, count)
}

/// `prometheus_http_request_duration_seconds` counts every API request by handler, in
/// Prometheus's buckets, and `prometheus_engine_query_duration_seconds` every query's timings
/// by slice (both checked against Prometheus 2.42's `/metrics`), so the Prometheus mixin's
/// latency panels have data.
#[test]
fn http_request_durations_are_histograms_by_handler() {
    let dir = tempfile::tempdir().unwrap();
    let pf = start_promflow(dir.path(), "", &[]);
    let prom = common::start_prometheus(dir.path(), "global:\n  scrape_interval: 1h\n");
    let family = "prometheus_http_request_duration_seconds";
    let mut pages = Vec::new();
    for server in std::iter::once(&pf).chain(prom.as_ref()) {
        for _ in 0..3 {
            assert_eq!(server.get_json("/api/v1/query?query=vector(1)").0, 200);
        }
        pages.push(server.get_text("/metrics").1);
    }
    let (ours, count) = duration_histogram(&pages[0], family, "/api/v1/query");
    assert_eq!(count, 3.0, "{}", pages[0]);
    assert_eq!(ours.last().map(String::as_str), Some("+Inf"), "{ours:?}");
    assert!(pages[0].contains(&format!("# TYPE {family} histogram")));
    if let Some(theirs) = pages.get(1) {
        assert_eq!(duration_histogram(theirs, family, "/api/v1/query"), (ours, 3.0), "Prometheus's buckets");
    }
    // the engine's query timings: a summary by slice, with Prometheus's series
    let engine = |page: &str| -> Vec<String> {
        let mut series: Vec<String> = page
            .lines()
            .filter(|l| l.starts_with("prometheus_engine_query_duration_seconds"))
            .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string())
            .collect();
        series.sort();
        series
    };
    let ours = engine(&pages[0]);
    assert!(
        pages[0].contains("prometheus_engine_query_duration_seconds_count{slice=\"inner_eval\"} 3"),
        "{ours:?}"
    );
    assert!(ours.contains(
        &"prometheus_engine_query_duration_seconds{slice=\"inner_eval\",quantile=\"0.9\"}".to_string()
    ));
    if let Some(theirs) = pages.get(1) {
        assert_eq!(engine(theirs), ours, "Prometheus's engine timings");
    }
}

/// The `# TYPE` of each family a `/metrics` page declares.
fn family_types(page: &str) -> std::collections::BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The families the Prometheus mixin's alerts and dashboards read about a Prometheus server
/// (storage, compaction, scraping limits, notifications, the engine, rules, templates, the
/// process) are served with the types Prometheus 2.42 gives them, and say what they mean.
#[test]
fn self_metrics_have_prometheus_families_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let pf = start_promflow(dir.path(), "", &["--query.max-concurrency=7"]);
    let ours = family_types(&pf.get_text("/metrics").1);
    let families = [
        "process_max_fds",
        "process_open_fds",
        "process_virtual_memory_bytes",
        "process_virtual_memory_max_bytes",
        "prometheus_engine_queries",
        "prometheus_engine_queries_concurrent_max",
        "prometheus_engine_query_log_enabled",
        "prometheus_engine_query_log_failures_total",
        "prometheus_notifications_alertmanagers_discovered",
        "prometheus_rule_evaluation_duration_seconds",
        "prometheus_rule_group_duration_seconds",
        "prometheus_target_scrape_pool_exceeded_label_limits_total",
        "prometheus_target_scrape_pool_reloads_failed_total",
        "prometheus_target_scrape_pool_reloads_total",
        "prometheus_target_scrapes_exceeded_body_size_limit_total",
        "prometheus_template_text_expansion_failures_total",
        "prometheus_template_text_expansions_total",
        "prometheus_tsdb_checkpoint_creations_failed_total",
        "prometheus_tsdb_checkpoint_creations_total",
        "prometheus_tsdb_compaction_duration_seconds",
        "prometheus_tsdb_compactions_failed_total",
        "prometheus_tsdb_compactions_total",
        "prometheus_tsdb_compactions_triggered_total",
        "prometheus_tsdb_data_replay_duration_seconds",
        "prometheus_tsdb_head_max_time_seconds",
        "prometheus_tsdb_head_min_time_seconds",
        "prometheus_tsdb_head_out_of_order_samples_appended_total",
        "prometheus_tsdb_head_series_created_total",
        "prometheus_tsdb_head_series_removed_total",
        "prometheus_tsdb_head_truncations_failed_total",
        "prometheus_tsdb_head_truncations_total",
        "prometheus_tsdb_lowest_timestamp",
        "prometheus_tsdb_lowest_timestamp_seconds",
        "prometheus_tsdb_reloads_failures_total",
        "prometheus_tsdb_reloads_total",
        "prometheus_tsdb_retention_limit_bytes",
        "prometheus_tsdb_size_retentions_total",
        "prometheus_tsdb_time_retentions_total",
        "prometheus_tsdb_vertical_compactions_total",
        "prometheus_tsdb_wal_segment_current",
        "prometheus_tsdb_wal_truncations_failed_total",
        "prometheus_tsdb_wal_truncations_total",
        "prometheus_tsdb_wal_writes_failed_total",
        "prometheus_web_federation_errors_total",
        "prometheus_web_federation_warnings_total",
        "promhttp_metric_handler_requests_in_flight",
        "promhttp_metric_handler_requests_total",
    ];
    let missing: Vec<&str> = families.iter().copied().filter(|f| !ours.contains_key(*f)).collect();
    assert!(missing.is_empty(), "families missing: {missing:?}");
    if let Some(prom) = common::start_prometheus(dir.path(), "global:\n  scrape_interval: 1h\n") {
        let theirs = family_types(&prom.get_text("/metrics").1);
        for f in families {
            assert_eq!(ours.get(f), theirs.get(f), "the type of {f}");
        }
    }
    let value = |name: &str| -> f64 {
        let page = pf.get_text("/metrics").1;
        let line =
            page.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("prometheus_engine_queries_concurrent_max"), 7.0);
    assert_eq!(value("prometheus_engine_query_log_enabled"), 0.0);
    assert!(value("process_open_fds") > 3.0);
    assert!(value("prometheus_tsdb_head_series_created_total") >= value("prometheus_tsdb_head_series"));
    assert_eq!(value("promhttp_metric_handler_requests_in_flight"), 1.0);
}

/// `status/tsdb`'s `memoryInBytesByLabelName` adds up the bytes of each label name's distinct
/// values in the head, as Prometheus 2.42 does beside it on the same series.
#[test]
fn label_memory_by_name_matches_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let pf = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let prom = common::start_prometheus(dir.path(), "global:\n  scrape_interval: 1h\n");
    let now = now_ms();
    let series = || {
        vec![
            common::series(&[("__name__", "m"), ("job", "a"), ("instance", "x1")], &[(now, 1.0)]),
            common::series(&[("__name__", "m"), ("job", "a"), ("instance", "x22")], &[(now, 1.0)]),
            common::series(&[("__name__", "mm"), ("job", "bbb")], &[(now, 1.0)]),
        ]
    };
    let memory = |server: &Server| {
        let (_, v) = server.get_json("/api/v1/status/tsdb");
        let mut pairs: Vec<(String, u64)> = v["data"]["memoryInBytesByLabelName"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["value"].as_u64().unwrap()))
            .collect();
        pairs.sort();
        pairs
    };
    assert_eq!(common::remote_write(&pf, series()).0, 204);
    let ours = memory(&pf);
    assert_eq!(ours, vec![("__name__".into(), 3), ("instance".into(), 5), ("job".into(), 4)]);
    if let Some(prom) = &prom {
        assert_eq!(common::remote_write(prom, series()).0, 204);
        assert_eq!(memory(prom), ours, "Prometheus");
    }
}
