//! Differential tests against Debian's Prometheus 2.42: the same remote-write payload goes
//! to both servers, then the same queries and Grafana's API calls go to both, and the answers
//! are compared. Sample timestamps never sit on a window boundary, so the 2.x/3.x difference
//! in window closedness (docs/promql-compat.md) does not show.

use crate::common;

use std::process::Command;

use common::*;
use serde_json::Value;

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 240; // one hour

/// A deterministic data set: counters with resets, gauges, several jobs and instances.
fn payload(base: i64) -> Vec<promflow_remote::TimeSeries> {
    let mut out = Vec::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 1000) as f64 / 1000.0
    };
    for (j, (job, instances)) in [("api", 3), ("db", 2), ("cache", 1)].into_iter().enumerate() {
        for i in 0..instances {
            let inst = format!("{job}-{i}:9100");
            for code in ["200", "500"] {
                let mut v = 0.0;
                let samples: Vec<(i64, f64)> = (0..POINTS)
                    .map(|k| {
                        // counters start at 0, where Prometheus 2.x and 3.x extrapolate alike
                        // (docs/promql-compat.md: the zero-point order changed in 3.0)
                        if k > 0 {
                            v += (rnd() * 10.0).floor() + if code == "200" { 5.0 } else { 0.0 };
                        }
                        if k == 120 && i == 0 {
                            v = 3.0; // counter reset
                        }
                        (base + k * STEP_MS + 1_234 + i * 17, v)
                    })
                    .collect();
                out.push(series(
                    &[("__name__", "http_requests_total"), ("job", job), ("instance", &inst), ("code", code)],
                    &samples,
                ));
            }
            let samples: Vec<(i64, f64)> = (0..POINTS)
                // a per-series offset keeps values of different series apart: no ties to break
                .map(|k| {
                    let v = 20.0 + (rnd() * 100.0).round() / 10.0 + i as f64 * 0.001 + j as f64 * 0.0001;
                    (base + k * STEP_MS + 4_321 + i * 13, v)
                })
                .collect();
            out.push(series(
                &[("__name__", "temperature_celsius"), ("job", job), ("instance", &inst)],
                &samples,
            ));
        }
        // a classic histogram per job: cumulative buckets, sum and count
        let bounds = ["0.1", "0.5", "1", "+Inf"];
        let mut counts = [0.0; 4];
        let mut sum = 0.0;
        let mut rows: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 6];
        for k in 0..POINTS {
            let t = base + k * STEP_MS + 2_345;
            if k > 0 {
                for _ in 0..3 {
                    let obs = rnd() * 1.5;
                    sum += obs;
                    for (c, b) in counts.iter_mut().zip([0.1, 0.5, 1.0, f64::INFINITY]) {
                        if obs <= b {
                            *c += 1.0;
                        }
                    }
                }
            }
            for (row, c) in rows.iter_mut().zip(counts) {
                row.push((t, c));
            }
            rows[4].push((t, sum));
            rows[5].push((t, counts[3]));
        }
        for (b, row) in bounds.iter().zip(&rows) {
            out.push(series(&[("__name__", "request_seconds_bucket"), ("job", job), ("le", b)], row));
        }
        out.push(series(&[("__name__", "request_seconds_sum"), ("job", job)], &rows[4]));
        out.push(series(&[("__name__", "request_seconds_count"), ("job", job)], &rows[5]));
    }
    out
}

const QUERIES: &[&str] = &[
    "http_requests_total",
    "http_requests_total{job=\"api\"}",
    "http_requests_total{job!=\"api\"}",
    "http_requests_total{job=~\"a.*|db\",code!~\"5..\"}",
    "http_requests_total offset 5m",
    "temperature_celsius offset 10m",
    "rate(http_requests_total[5m])",
    "irate(http_requests_total[1m])",
    "increase(http_requests_total[10m])",
    "rate(http_requests_total{code=\"500\"}[2m] offset 3m)",
    "sum(rate(http_requests_total[5m]))",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance) (rate(http_requests_total[5m]))",
    "avg by (job) (temperature_celsius)",
    "min by (code) (http_requests_total)",
    "max without (code, instance) (http_requests_total)",
    "count by (job) (temperature_celsius)",
    "count(http_requests_total)",
    "temperature_celsius * 1.8 + 32",
    "2 * temperature_celsius - 1",
    "temperature_celsius > 25",
    "temperature_celsius > bool 25",
    "25 < temperature_celsius",
    "http_requests_total / 1000",
    "rate(http_requests_total[5m]) / on(job, instance) group_left sum by (job, instance) (rate(http_requests_total[5m]))",
    "sum by (job) (rate(http_requests_total{code=\"500\"}[5m])) / sum by (job) (rate(http_requests_total[5m]))",
    "temperature_celsius - temperature_celsius offset 5m",
    "sum(increase(http_requests_total[15m])) by (code) > 100",
    "-temperature_celsius",
    "avg(temperature_celsius) == bool avg(temperature_celsius)",
    "max(temperature_celsius) - min(temperature_celsius)",
    // functions over windows
    "delta(temperature_celsius[10m])",
    "idelta(temperature_celsius[5m])",
    "deriv(temperature_celsius[10m])",
    "predict_linear(temperature_celsius[10m], 600)",
    "changes(temperature_celsius[15m])",
    "resets(http_requests_total[30m])",
    "avg_over_time(temperature_celsius[10m])",
    "min_over_time(temperature_celsius[10m])",
    "max_over_time(temperature_celsius[10m])",
    "sum_over_time(temperature_celsius[3m])",
    "count_over_time(temperature_celsius[7m])",
    "last_over_time(temperature_celsius[2m])",
    "present_over_time(temperature_celsius[2m])",
    "stddev_over_time(temperature_celsius[10m])",
    "stdvar_over_time(temperature_celsius[10m])",
    "quantile_over_time(0.9, temperature_celsius[10m])",
    "absent_over_time(nonexistent_metric[5m])",
    "absent_over_time(temperature_celsius[5m])",
    "irate(http_requests_total[5m] offset 1m)",
    "rate(http_requests_total[1h])",
    "increase(http_requests_total{code=\"500\"}[2m])",
    // subqueries and @
    "max_over_time(rate(http_requests_total[2m])[10m:1m])",
    "avg_over_time(temperature_celsius[10m:30s])",
    "min_over_time(sum by (job) (temperature_celsius)[15m:2m] offset 1m)",
    "rate(http_requests_total[5m:15s])",
    "temperature_celsius @ end()",
    "rate(http_requests_total[5m] @ start())",
    "temperature_celsius offset -5m",
    "sum_over_time(temperature_celsius[5m] @ end() offset 10m)",
    "max_over_time(deriv(temperature_celsius[5m])[20m:] @ end())",
    "temperature_celsius - temperature_celsius @ start()",
    // per-value functions
    "abs(temperature_celsius - 25)",
    "ceil(temperature_celsius)",
    "floor(temperature_celsius)",
    "round(temperature_celsius)",
    "round(temperature_celsius, 0.5)",
    "sqrt(temperature_celsius)",
    "exp(temperature_celsius / 10)",
    "ln(temperature_celsius)",
    "log2(temperature_celsius)",
    "log10(temperature_celsius)",
    "sgn(temperature_celsius - 25)",
    "clamp(temperature_celsius, 22, 27)",
    "clamp_min(temperature_celsius, 25)",
    "clamp_max(temperature_celsius, 25)",
    "timestamp(temperature_celsius)",
    "sin(temperature_celsius)",
    "atan2(temperature_celsius, 10)",
    "deg(temperature_celsius)",
    "hour(timestamp(temperature_celsius))",
    "minute()",
    "day_of_week()",
    "days_in_month()",
    "year(vector(1700000000))",
    // aggregations
    "stddev(temperature_celsius)",
    "stdvar by (job) (temperature_celsius)",
    "group by (job) (temperature_celsius)",
    // on tied values 2.x and 3.x keep different series (docs/promql-compat.md): no ties here
    "topk(2, temperature_celsius)",
    "bottomk(2, temperature_celsius)",
    "topk by (job) (1, temperature_celsius)",
    "quantile(0.5, temperature_celsius)",
    "quantile by (job) (0.9, temperature_celsius)",
    "count_values(\"value\", round(temperature_celsius))",
    "count_values by (job) (\"v\", ceil(temperature_celsius / 10))",
    "sum by (job, code) (increase(http_requests_total[5m]))",
    "avg without (job) (temperature_celsius)",
    "count(count by (job) (temperature_celsius))",
    "sum(http_requests_total) by (code)",
    // vector matching and sets
    "http_requests_total{code=\"500\"} / ignoring(code) http_requests_total{code=\"200\"}",
    "http_requests_total / on(job, instance) group_left temperature_celsius",
    "temperature_celsius * on(job, instance) group_right http_requests_total",
    "temperature_celsius and on(job) (temperature_celsius > 25)",
    "temperature_celsius unless temperature_celsius{job=\"db\"}",
    "temperature_celsius{job=\"api\"} or temperature_celsius{job=\"db\"}",
    "http_requests_total{code=\"200\"} > on(job, instance) http_requests_total{code=\"500\"}",
    "http_requests_total{code=\"200\"} >= bool ignoring(code) http_requests_total{code=\"500\"}",
    "temperature_celsius != 25.5",
    "temperature_celsius % 7",
    "temperature_celsius ^ 2",
    "2 ^ 3 ^ 2",
    "(1 + 2) * 3 - 4 / 2",
    "10 % 3",
    "1 < bool 2",
    // label functions and shaping
    "label_replace(temperature_celsius, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
    "label_replace(temperature_celsius, \"job\", \"x-$1\", \"job\", \"a(.*)\")",
    "label_join(temperature_celsius, \"id\", \"/\", \"job\", \"instance\")",
    "sort(temperature_celsius)",
    "sort_desc(sum by (job) (temperature_celsius))",
    "vector(1)",
    "scalar(sum(temperature_celsius))",
    "scalar(temperature_celsius)",
    "time()",
    "absent(nonexistent_metric{job=\"x\"})",
    "absent(temperature_celsius)",
    "absent(nonexistent_metric{job=\"x\", instance=~\"y.*\"})",
    "label_replace(temperature_celsius, \"instance\", \"\", \"instance\", \".*\")",
    "count by (job) (label_replace(http_requests_total, \"code\", \"\", \"code\", \".*\"))",
    "http_requests_total{code=\"200\"} or on(job, instance) temperature_celsius",
    "(http_requests_total > 100) unless on(code) http_requests_total{code=\"500\"}",
    "sum by (job) (temperature_celsius) / ignoring(job) group_left count(temperature_celsius)",
    "temperature_celsius > on(job) group_left avg by (job) (temperature_celsius)",
    "quantile_over_time(0.25, temperature_celsius[15m:1m])",
    "changes(round(temperature_celsius)[10m:30s])",
    "sum(temperature_celsius) + scalar(count(temperature_celsius))",
    // classic histograms
    "histogram_quantile(0.9, rate(request_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(request_seconds_bucket[10m])))",
    "histogram_quantile(0.99, sum by (job, le) (increase(request_seconds_bucket[15m])))",
    "rate(request_seconds_sum[5m]) / rate(request_seconds_count[5m])",
    "sum by (job) (rate(request_seconds_count[5m]))",
];

/// Starts Prometheus 2.42 and promflow and remote-writes the same payload to both; `None`
/// when Prometheus is not installed (outside CI).
fn seeded_pair(dir: &std::path::Path) -> Option<(Server, Server, i64)> {
    let prom = start_prometheus(dir, "global:\n  scrape_interval: 15s\n")?;
    let pf =
        start_promflow(dir, "global:\n  scrape_interval: 15s\n", &["--web.enable-remote-write-receiver"]);
    let base = (now_ms() - (POINTS + 4) * STEP_MS) / 60_000 * 60_000;
    let data = payload(base);
    assert_eq!(remote_write(&prom, data.clone()).0, 204);
    assert_eq!(remote_write(&pf, data).0, 204);
    Some((pf, prom, base))
}

#[test]
fn same_answers_as_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let Some((pf, prom, base)) = seeded_pair(dir.path()) else { return };

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut compare = |what: String, path: String| {
        let (ca, a) = pf.get_json(&path);
        let (cb, b) = prom.get_json(&path);
        checked += 1;
        if ca != cb {
            failures.push(format!("{what}: status {ca} vs {cb}: {a} / {b}"));
        } else if let Err(e) = same(&canonical(&a), &canonical(&b)) {
            failures.push(format!("{what}: {e}"));
        }
    };
    for q in QUERIES {
        let enc: String = form_urlencoded(q);
        // never a multiple of a subquery step either: 2.x closes subquery windows on the left
        for t in [base + 20 * 60_000 + 500, base + 45 * 60_000 + 7_777, base + POINTS * STEP_MS + 2_222] {
            compare(format!("{q} @{t}"), format!("/api/v1/query?query={enc}&time={}", t as f64 / 1000.0));
        }
        let path = format!(
            "/api/v1/query_range?query={enc}&start={}&end={}&step=37",
            (base + 10 * 60_000 + 1_111) as f64 / 1000.0,
            (base + 58 * 60_000) / 1000
        );
        compare(format!("range {q}"), path);
    }
    eprintln!("differential: {} of {checked} answers identical to Prometheus 2.42", checked - failures.len());
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

fn form_urlencoded(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON "shape" of a value: object keys with the shapes of their values, array element
/// shapes, scalar types. Prometheus's keys must all be present in promflow's answer.
fn shape_covers(ours: &Value, theirs: &Value, path: &str, errs: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, vb) in b {
                match a.get(k) {
                    Some(va) => shape_covers(va, vb, &format!("{path}.{k}"), errs),
                    None => errs.push(format!("{path}: missing key {k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                shape_covers(x, y, &format!("{path}[0]"), errs);
            }
        }
        (a, b) => {
            let kind = |v: &Value| match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            if kind(a) != kind(b) {
                errs.push(format!("{path}: {} vs {}", kind(a), kind(b)));
            }
        }
    }
}

/// (method, path with query string, form body) of one call.
type GrafanaCall<'a> = (&'a str, String, Vec<(&'a str, String)>);

#[test]
fn grafana_calls_answer_like_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let Some((pf, prom, base)) = seeded_pair(dir.path()) else { return };
    let (s, e) = ((base / 1000).to_string(), ((base + POINTS * STEP_MS) / 1000).to_string());
    let t = ((base + 30 * 60_000) / 1000).to_string();
    // (method, path, form) as Grafana sends them (compat.md §1.2)
    let calls: Vec<GrafanaCall> = vec![
        ("POST", "/api/v1/query".into(), vec![("query", "1+1".into()), ("time", "4".into())]),
        ("GET", "/api/v1/status/buildinfo".into(), vec![]),
        (
            "POST",
            "/api/v1/query_range".into(),
            vec![
                ("query", "sum by (job) (rate(http_requests_total[5m]))".into()),
                ("start", s.clone()),
                ("end", e.clone()),
                ("step", "60".into()),
            ],
        ),
        ("POST", "/api/v1/query".into(), vec![("query", "temperature_celsius".into()), ("time", t.clone())]),
        (
            "POST",
            "/api/v1/query_exemplars".into(),
            vec![("query", "test".into()), ("start", format!("{s}000")), ("end", format!("{e}000"))],
        ),
        ("GET", "/api/v1/rules".into(), vec![]),
        ("GET", format!("/api/v1/label/__name__/values?start={s}&end={e}&limit=40000"), vec![]),
        (
            "POST",
            "/api/v1/labels".into(),
            vec![("start", s.clone()), ("end", e.clone()), ("limit", "40000".into())],
        ),
        (
            "POST",
            "/api/v1/labels".into(),
            vec![("match[]", "temperature_celsius".into()), ("start", s.clone()), ("end", e.clone())],
        ),
        ("GET", format!("/api/v1/label/job/values?match[]=http_requests_total&start={s}&end={e}"), vec![]),
        (
            "POST",
            "/api/v1/series".into(),
            vec![
                ("match[]", "{__name__!=\"\"}".into()),
                ("start", s.clone()),
                ("end", e.clone()),
                ("limit", "40000".into()),
            ],
        ),
        ("GET", "/api/v1/metadata".into(), vec![]),
        ("GET", "/api/v1/status/flags".into(), vec![]),
        ("GET", "/api/v1/status/config".into(), vec![]),
        ("GET", "/api/v1/status/runtimeinfo".into(), vec![]),
        ("GET", "/api/v1/status/tsdb".into(), vec![]),
        ("GET", "/api/v1/targets".into(), vec![]),
        ("GET", "/api/v1/alerts".into(), vec![]),
        ("POST", "/api/v1/query".into(), vec![("query", "sum(".into())]),
        (
            "POST",
            "/api/v1/query_range".into(),
            vec![("query", "up".into()), ("start", e.clone()), ("end", s.clone()), ("step", "15".into())],
        ),
    ];
    let mut errs = Vec::new();
    for (method, path, form) in &calls {
        let send = |srv: &Server| {
            let c = client();
            let r = if *method == "POST" { c.post(srv.url(path)).form(form) } else { c.get(srv.url(path)) };
            let r = r.send().unwrap();
            let code = r.status().as_u16();
            let v: Value = serde_json::from_str(&r.text().unwrap()).unwrap_or(Value::Null);
            (code, v)
        };
        let (ca, a) = send(&pf);
        let (cb, b) = send(&prom);
        if ca != cb {
            errs.push(format!("{method} {path}: status {ca} vs {cb}"));
            continue;
        }
        let mut e = Vec::new();
        if path.ends_with("/status/flags") {
            // flag names differ between 2.42 and 3.x; Grafana only reads the envelope
            shape_covers(&a["status"], &b["status"], ".status", &mut e);
            assert!(a["data"].as_object().is_some_and(|m| m.values().all(|v| v.is_string())), "{a}");
        } else {
            shape_covers(&a, &b, "", &mut e);
        }
        errs.extend(e.into_iter().map(|x| format!("{method} {path}: {x}")));
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn promtool_query_instant_gets_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let Some(promtool) = peer("promtool") else { return };
    let Some((pf, prom, base)) = seeded_pair(dir.path()) else { return };
    let t = ((base + 30 * 60_000) / 1000).to_string();
    for q in ["sum by (job) (rate(http_requests_total[5m]))", "temperature_celsius{job=\"db\"}"] {
        let run = |srv: &Server| {
            let out = Command::new(&promtool)
                .args(["query", "instant", "--time", &t, &srv.base, q])
                .output()
                .unwrap();
            assert!(out.status.success(), "promtool failed: {}", String::from_utf8_lossy(&out.stderr));
            let mut lines: Vec<String> =
                String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            lines.sort();
            lines
        };
        let (ours, theirs) = (run(&pf), run(&prom));
        assert_eq!(ours.len(), theirs.len(), "{q}: {ours:?} vs {theirs:?}");
        for (a, b) in ours.iter().zip(&theirs) {
            // `{labels} => value @[time]`: labels and time exactly, the value within 1e-12
            // (promflow sums with Kahan compensation as Prometheus 3 does; 2.42 does not)
            let split = |l: &str| -> (String, f64, String) {
                let (lhs, rest) = l.split_once(" => ").expect("promtool line");
                let (v, t) = rest.split_once(' ').expect("value and time");
                (lhs.to_string(), v.parse().unwrap(), t.to_string())
            };
            let ((la, va, ta), (lb, vb, tb)) = (split(a), split(b));
            assert_eq!((la, ta), (lb, tb), "{q}");
            assert!((va - vb).abs() <= 1e-12 * va.abs().max(vb.abs()), "{q}: {a} vs {b}");
        }
    }
}

/// Counter native histograms (exponential buckets, schema 0, integer counts), two jobs of two
/// instances over an hour, with a counter reset: what remote write 1.0 carries.
/// Answers of promflow and Prometheus compared path by path, the differences kept.
#[derive(Default)]
struct Comparison {
    checked: usize,
    failures: Vec<String>,
}

impl Comparison {
    /// Compares `q` at each instant (ms) and as a range `(start ms, end ms, step s)`. An
    /// empty answer from Prometheus counts as a difference: the query would check nothing.
    fn query(&mut self, pf: &Server, prom: &Server, q: &str, instants: &[i64], range: (i64, i64, u32)) {
        let enc = form_urlencoded(q);
        let mut paths: Vec<String> = instants
            .iter()
            .map(|t| format!("/api/v1/query?query={enc}&time={}", *t as f64 / 1000.0))
            .collect();
        paths.push(format!(
            "/api/v1/query_range?query={enc}&start={}&end={}&step={}",
            range.0 as f64 / 1000.0,
            range.1 as f64 / 1000.0,
            range.2
        ));
        for path in paths {
            let (ca, a) = pf.get_json(&path);
            let (cb, b) = prom.get_json(&path);
            self.checked += 1;
            if (ca, canonical(&a).is_empty()) != (cb, false) {
                self.failures.push(format!("{q}: status {ca} vs {cb} (or an empty answer): {a} / {b}"));
            } else if let Err(e) = same(&canonical(&a), &canonical(&b)) {
                self.failures.push(format!("{q} ({path}): {e}"));
            }
        }
    }

    /// Counts one check, failed with `failure` if there is one.
    fn check(&mut self, failure: Option<String>) {
        self.checked += 1;
        self.failures.extend(failure);
    }

    /// Prints the count and fails the test on any difference.
    fn finish(self, what: &str) {
        eprintln!(
            "{what}: {} of {} answers identical to Prometheus 2.42",
            self.checked - self.failures.len(),
            self.checked
        );
        assert!(
            self.failures.is_empty(),
            "{} differences:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn histogram_payload(base: i64) -> Vec<promflow_remote::TimeSeries> {
    use promflow_remote::{BucketSpan, Histogram};
    let mut out = Vec::new();
    for (j, job) in ["api", "db"].into_iter().enumerate() {
        for i in 0..2i64 {
            let mut buckets = [1000i64 + i * 7, 2000 + j as i64 * 11, 500, 50];
            let mut zero = 300i64;
            let mut sum = 10_000.0;
            let hists = (0..POINTS)
                .map(|k| {
                    if k > 0 {
                        for (b, c) in buckets.iter_mut().enumerate() {
                            *c += (k * 3 + b as i64 * 5 + i) % 7;
                        }
                        zero += k % 2;
                        sum += 12.5 + (k % 5) as f64;
                    }
                    if k == 140 && i == 1 {
                        buckets = [3, 4, 1, 0];
                        zero = 1;
                        sum = 9.0;
                    }
                    let count = buckets.iter().sum::<i64>() + zero;
                    let mut prev = 0;
                    let deltas = buckets
                        .iter()
                        .map(|&c| {
                            let d = c - prev;
                            prev = c;
                            d
                        })
                        .collect();
                    Histogram {
                        count_int: Some(count as u64),
                        sum,
                        schema: 0,
                        zero_threshold: 0.001,
                        zero_count_int: Some(zero as u64),
                        positive_spans: vec![BucketSpan { offset: 0, length: 4 }],
                        positive_deltas: deltas,
                        timestamp: base + k * STEP_MS + 3_456 + i * 19,
                        ..Histogram::default()
                    }
                })
                .collect();
            let mut ts = series(
                &[("__name__", "rpc_duration_seconds"), ("job", job), ("instance", &format!("{job}-{i}"))],
                &[],
            );
            ts.histograms = hists;
            out.push(ts);
        }
    }
    out
}

/// Queries over native histograms that Prometheus 2.42 answers with Prometheus 3's
/// semantics: counts, sums, fractions at bucket bounds (no interpolation, which changed in
/// 3.0), rates and increases away from the counter's zero point, and the histograms
/// themselves as the API writes them. Left out because 2.42 does not implement them as 3.x
/// does (the PromQL corpus checks them): a histogram times or divided by a number (2.42
/// answers it unchanged), a histogram minus a histogram (2.42 answers 0), `resets` and
/// `changes` of histograms (2.42 counts none), `last_over_time` and `avg` of histograms (2.42
/// has no answer).
const HISTOGRAM_QUERIES: &[&str] = &[
    "rpc_duration_seconds",
    "histogram_count(rpc_duration_seconds)",
    "histogram_sum(rpc_duration_seconds)",
    "histogram_count(rate(rpc_duration_seconds[5m]))",
    "histogram_sum(rate(rpc_duration_seconds[5m]))",
    "rate(rpc_duration_seconds[5m])",
    "increase(rpc_duration_seconds[10m])",
    "sum by (job) (rate(rpc_duration_seconds[5m]))",
    "histogram_count(sum by (job) (increase(rpc_duration_seconds[10m])))",
    "histogram_fraction(0, 2, rpc_duration_seconds)",
    "histogram_fraction(1, 4, rate(rpc_duration_seconds[5m]))",
    "sum(rpc_duration_seconds)",
    "count_over_time(rpc_duration_seconds[5m])",
];

#[test]
fn native_histograms_answer_like_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let config = "global:\n  scrape_interval: 15s\n";
    let flags = ["--enable-feature=native-histograms"];
    let Some(prom) = start_prometheus_with(dir.path(), config, free_port(), &flags) else { return };
    let pf = start_promflow(dir.path(), config, &["--web.enable-remote-write-receiver"]);
    let base = (now_ms() - (POINTS + 4) * STEP_MS) / 60_000 * 60_000;
    let data = histogram_payload(base);
    assert_eq!(remote_write(&prom, data.clone()), (204, String::new()));
    assert_eq!(remote_write(&pf, data).0, 204);

    let mut comparison = Comparison::default();
    for q in HISTOGRAM_QUERIES {
        let instants = [base + 20 * 60_000 + 500, base + 45 * 60_000 + 7_777];
        comparison.query(&pf, &prom, q, &instants, (base + 10 * 60_000 + 1_111, base + 58 * 60_000, 97));
    }
    comparison.finish("native histograms");

    // a histogram whose spans do not match its buckets is the sender's to fix: 400, nothing
    // of the request stored
    let mut bad = histogram_payload(now_ms());
    bad.truncate(1);
    bad[0].histograms.truncate(1);
    bad[0].histograms[0].positive_deltas.pop();
    bad[0].labels[1].value = "bad".into();
    let (status, body) = remote_write(&pf, bad);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("spans cover 4 buckets"), "{body}");
    let (_, v) = pf.get_json("/api/v1/series?match[]=rpc_duration_seconds{instance=%22bad%22}");
    assert_eq!(v["data"], serde_json::json!([]), "{v}");
}

/// How long one value of the protobuf target lasts: both servers scrape every 500 ms, so
/// each sees every value, at the timestamp the target gives it.
const SLOT_MS: i64 = 2_000;

/// The protobuf target's families at `slot`: native counter histograms, a classic one, a
/// counter, a gauge, a summary, all with the slot's timestamp; and a native histogram with
/// no timestamp that never changes. (Prometheus 2.42 knows neither gauge histograms nor float
/// histograms in this format: they are checked in the unit tests.)
fn proto_families(
    slot: i64,
    first_slot: i64,
) -> Vec<promflow_scrape::exposition::protobuf::wire::MetricFamily> {
    use promflow_scrape::exposition::protobuf::wire::*;
    let n = (slot - first_slot + 1) as u64;
    let ts = Some(slot * SLOT_MS);
    let pair = |name: &str, value: &str| LabelPair { name: Some(name.into()), value: Some(value.into()) };
    let family = |name: &str, kind: i32, metric: Vec<Metric>| MetricFamily {
        name: Some(name.into()),
        help: Some(format!("{name} help")),
        r#type: Some(kind),
        metric,
        unit: None,
    };
    let native = |svc: &str, k: u64| Metric {
        label: vec![pair("svc", svc)],
        timestamp_ms: ts,
        histogram: Some(Histogram {
            sample_count: Some(2 * n * k),
            sample_sum: Some(2.5 * (n * k) as f64),
            schema: Some(0),
            zero_threshold: Some(0.001),
            zero_count: Some(0),
            // buckets (1, 2] and (2, 4] count alike, so quantiles and fractions fall on a
            // bucket's edge, where Prometheus 2.x and 3.x interpolate alike
            positive_span: vec![BucketSpan { offset: Some(1), length: Some(2) }],
            positive_delta: vec![(n * k) as i64, 0],
            ..Default::default()
        }),
        ..Default::default()
    };
    let bucket =
        |le: f64, c: u64| Bucket { cumulative_count: Some(c), upper_bound: Some(le), ..Default::default() };
    vec![
        family("rpc_seconds", metric_type::HISTOGRAM, vec![native("a", 1), native("b", 3)]),
        family(
            "legacy_seconds",
            metric_type::HISTOGRAM,
            vec![Metric {
                timestamp_ms: ts,
                histogram: Some(Histogram {
                    sample_count: Some(2 * n),
                    sample_sum: Some(n as f64),
                    bucket: vec![bucket(0.5, n), bucket(1.0, 2 * n)],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        family(
            "requests_total",
            metric_type::COUNTER,
            vec![Metric {
                label: vec![pair("code", "200")],
                timestamp_ms: ts,
                counter: Some(Counter { value: Some(10.0 * n as f64), ..Default::default() }),
                ..Default::default()
            }],
        ),
        family(
            "temperature",
            metric_type::GAUGE,
            vec![Metric {
                timestamp_ms: ts,
                gauge: Some(Gauge { value: Some((slot % 7) as f64 + 0.5) }),
                ..Default::default()
            }],
        ),
        family(
            "rpc_latency",
            metric_type::SUMMARY,
            vec![Metric {
                timestamp_ms: ts,
                summary: Some(Summary {
                    sample_count: Some(n),
                    sample_sum: Some(0.25 * n as f64),
                    quantile: vec![
                        Quantile { quantile: Some(0.5), value: Some(0.125) },
                        Quantile { quantile: Some(0.99), value: Some(0.5) },
                    ],
                    created_timestamp: None,
                }),
                ..Default::default()
            }],
        ),
        family(
            "static_seconds",
            metric_type::HISTOGRAM,
            vec![Metric {
                histogram: Some(Histogram {
                    sample_count: Some(3),
                    sample_sum: Some(3.0),
                    schema: Some(1),
                    zero_threshold: Some(0.01),
                    zero_count: Some(1),
                    positive_span: vec![BucketSpan { offset: Some(-1), length: Some(3) }],
                    positive_delta: vec![1, 0, -1],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
    ]
}

/// The protobuf format's content type.
const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Serves [`proto_families`] in the protobuf format whatever is asked for, and keeps the
/// request line and `Accept` header of each request.
fn start_proto_target() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&seen);
    let first_slot = now_ms() / SLOT_MS;
    let port = serve_http(move |request, accept| {
        kept.lock().unwrap().push(format!("{request} {accept}"));
        let families = proto_families(now_ms() / SLOT_MS, first_slot);
        (PROTOBUF.to_string(), promflow_scrape::exposition::protobuf::wire::encode_delimited(&families))
    });
    (port, seen)
}

/// The timestamps (ms) of a series' samples in the last minute.
fn sample_times(s: &Server, series: &str) -> Vec<i64> {
    let (_, v) = s.get_json(&format!("/api/v1/query?query={}", form_urlencoded(&format!("{series}[1m]"))));
    let Some(first) = v["data"]["result"].as_array().and_then(|r| r.first().cloned()) else {
        return Vec::new();
    };
    first["values"]
        .as_array()
        .map(|p| p.iter().map(|p| (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64).collect())
        .unwrap_or_default()
}

const PROTO_QUERIES: &[&str] = &[
    "rpc_seconds",
    "histogram_count(rpc_seconds)",
    "histogram_sum(rpc_seconds)",
    "histogram_count(rate(rpc_seconds[6s]))",
    "histogram_sum(increase(rpc_seconds[6s]))",
    "histogram_fraction(0, 2, rpc_seconds)",
    "histogram_quantile(0.5, rate(rpc_seconds[6s]))",
    "sum by (job) (rate(rpc_seconds[6s]))",
    "legacy_seconds_bucket",
    "legacy_seconds_count",
    "histogram_quantile(0.5, rate(legacy_seconds_bucket[6s]))",
    "rate(requests_total[6s])",
    "temperature",
    "rpc_latency",
    "rpc_latency_sum",
];

#[test]
fn scraping_a_protobuf_target_stores_what_prometheus_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (target, requests) = start_proto_target();
    let job = |from: &str, native: &str| {
        format!(
            "scrape_configs:\n  - job_name: proto\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n{native}    params:\n      from: [{from}]\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        )
    };
    let flags = ["--enable-feature=native-histograms"];
    let Some(prom) = start_prometheus_with(dir.path(), &job("prometheus", ""), free_port(), &flags) else {
        return;
    };
    let pf = start_promflow(dir.path(), &job("promflow", "    scrape_native_histograms: true\n"), &[]);

    // both must hold ten values, from a slot both have seen on
    let common = wait_for(std::time::Duration::from_secs(60), || {
        let (a, b) = (sample_times(&pf, "requests_total"), sample_times(&prom, "requests_total"));
        let first = *a.first()?.max(b.first()?);
        let last = *a.last()?.min(b.last()?);
        (last - first >= 9 * SLOT_MS).then_some((first, last))
    });
    let (first, last) = common.expect("both servers scrape the target");
    // promflow asked for protobuf first, as Prometheus 3 does with native histograms on
    let asked = requests.lock().unwrap().clone();
    let ours = asked.iter().find(|r| r.contains("from=promflow")).expect("promflow scraped");
    assert!(
        ours.contains(" application/vnd.google.protobuf;proto=io.prometheus.client.metricfamily;encoding=delimited;q=0.6,"),
        "{ours}"
    );

    let mut comparison = Comparison::default();
    for q in PROTO_QUERIES {
        // evaluation times half a second after a sample: no window edge on a sample
        let start = first + 3 * SLOT_MS + 500;
        comparison.query(&pf, &prom, q, &[start, last + 500], (start, last + 500, 1));
    }
    // the histogram without a timestamp: each server has its own scrape times, but the same
    // histogram; and each counts a native histogram as one scraped sample. Bucket bounds of
    // schemas above 0 may differ in the last place (docs/promql-compat.md), so numbers are
    // compared as numbers.
    for q in ["static_seconds", "histogram_count(static_seconds)", "scrape_samples_scraped"] {
        let path =
            format!("/api/v1/query?query={}&time={}", form_urlencoded(q), (now_ms() - 1000) as f64 / 1000.0);
        let values = |s: &Server| -> Vec<(String, Vec<f64>)> {
            let (_, v) = s.get_json(&path);
            let numbers = |v: &Value| -> Vec<f64> {
                let mut out = Vec::new();
                let mut stack = vec![v.clone()];
                while let Some(v) = stack.pop() {
                    match v {
                        Value::String(s) => out.extend(s.parse::<f64>().ok()),
                        Value::Array(a) => stack.extend(a.into_iter().rev()),
                        Value::Object(o) => {
                            stack.extend(o.into_iter().map(|(_, v)| v).collect::<Vec<_>>().into_iter().rev())
                        }
                        _ => {}
                    }
                }
                out
            };
            result(&v)
                .iter()
                .map(|r| (r["metric"].to_string(), numbers(&r.get("histogram").unwrap_or(&r["value"])[1])))
                .collect()
        };
        let (a, b) = (values(&pf), values(&prom));
        let close = |x: &f64, y: &f64| (x - y).abs() <= 1e-15 * x.abs().max(y.abs());
        let agree = a.len() == b.len()
            && a.iter().zip(&b).all(|(x, y)| {
                x.0 == y.0 && x.1.len() == y.1.len() && x.1.iter().zip(&y.1).all(|(p, q)| close(p, q))
            });
        comparison.check((!agree || a.is_empty()).then(|| format!("{q}: {a:?} vs {b:?}")));
    }
    // the same series, by name and labels
    let series = |s: &Server| -> Vec<String> {
        let (_, v) =
            s.get_json(&format!("/api/v1/series?match[]=%7Bjob%3D%22proto%22%7D&start={}", first / 1000));
        let mut names: Vec<String> = v["data"].as_array().unwrap().iter().map(|s| s.to_string()).collect();
        names.sort();
        names
    };
    let (a, b) = (series(&pf), series(&prom));
    comparison.check((a != b).then(|| format!("series differ:\n promflow: {a:?}\n prometheus: {b:?}")));
    comparison.finish("protobuf scrape");
}

/// An OpenMetrics body whose exemplars change every [`SLOT_MS`], with the slot's timestamp.
/// Its `le` values are written as Prometheus 3 normalises them, which 2.42 keeps as written.
fn exemplar_body(slot: i64) -> String {
    let ts = format!("{}.{:03}", slot * SLOT_MS / 1000, slot * SLOT_MS % 1000);
    let n = slot % 1000;
    format!(
        "# TYPE rpc_seconds histogram\n\
         rpc_seconds_bucket{{le=\"0.1\"}} {n} # {{trace_id=\"a{slot}\"}} 0.05 {ts}\n\
         rpc_seconds_bucket{{le=\"1.0\"}} {} # {{trace_id=\"b{slot}\",span_id=\"s{slot}\"}} 0.5 {ts}\n\
         rpc_seconds_bucket{{le=\"+Inf\"}} {}\n\
         rpc_seconds_sum {}\n\
         rpc_seconds_count {}\n\
         # TYPE requests counter\n\
         requests_total{{code=\"200\"}} {} # {{trace_id=\"c{slot}\"}} 1 {ts}\n\
         # EOF\n",
        2 * n,
        3 * n,
        1.5 * n as f64,
        3 * n,
        10 * n
    )
}

#[test]
fn exemplars_from_an_openmetrics_target_answer_like_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let target = serve_http(|_, _| {
        let body = exemplar_body(now_ms() / SLOT_MS);
        ("application/openmetrics-text; version=1.0.0; charset=utf-8".to_string(), body.into_bytes())
    });
    let config = format!(
        "scrape_configs:\n  - job_name: om\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    );
    let flags = ["--enable-feature=exemplar-storage"];
    let Some(prom) = start_prometheus_with(dir.path(), &config, free_port(), &flags) else { return };
    let pf = start_promflow(dir.path(), &config, &flags);
    // both scrape for eight slots; the exemplars of the last three full ones are compared
    // (each server's first scrape comes when its start-up allows)
    std::thread::sleep(std::time::Duration::from_millis((8 * SLOT_MS) as u64));
    let (start, end) = ((now_ms() / SLOT_MS - 4) * SLOT_MS, (now_ms() / SLOT_MS - 1) * SLOT_MS);
    let mut comparison = Comparison::default();
    for q in [
        "rpc_seconds_bucket",
        "requests_total",
        "sum by (le) (rate(rpc_seconds_bucket[1m])) / ignoring(le) group_left requests_total",
        "nothing_here",
    ] {
        let path = format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            form_urlencoded(q),
            start as f64 / 1000.0,
            end as f64 / 1000.0
        );
        let answer = |s: &Server| {
            let (code, v) = s.get_json(&path);
            let mut series: Vec<String> =
                v["data"].as_array().cloned().unwrap_or_default().iter().map(|s| s.to_string()).collect();
            series.sort();
            (code, series)
        };
        let (a, b) = (answer(&pf), answer(&prom));
        let empty_for_a_selector = q != "nothing_here" && b.1.is_empty();
        comparison.check(
            (a != b || empty_for_a_selector).then(|| format!("{q}:\n promflow:   {a:?}\n prometheus: {b:?}")),
        );
    }
    // a query that does not parse is the client's error in both
    let bad = "/api/v1/query_exemplars?query=rate(";
    let (ca, _) = pf.get_json(bad);
    let (cb, _) = prom.get_json(bad);
    comparison.check((ca != cb).then(|| format!("bad query: {ca} vs {cb}")));
    comparison.finish("exemplars");
}
