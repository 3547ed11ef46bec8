//! End-to-end storage: offline backfill (`promflow tsdb create-blocks-from openmetrics`)
//! against promtool's, every backfilled sample read back bit for bit, and acknowledged samples
//! surviving `kill -9` in the middle of a remote-write stream.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

const STEP_S: i64 = 30;
const HOURS: i64 = 7;

/// A deterministic OpenMetrics file: counters with resets, decimal and full-precision gauges,
/// a classic histogram, a NaN; 7 hours at 30 s starting on `base_s` (seconds).
fn openmetrics(base_s: i64) -> (String, u64) {
    let mut out = String::new();
    let mut n = 0u64;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64 / 10_000.0
    };
    let steps = HOURS * 3600 / STEP_S;
    let mut line = |out: &mut String, series: &str, v: String, k: i64| {
        // some samples carry milliseconds, as scrapes' timestamps do
        let ms = if k % 7 == 3 { ".25" } else { "" };
        out.push_str(&format!("{series} {v} {}{ms}\n", base_s + k * STEP_S));
        n += 1;
    };
    out.push_str("# HELP app_requests Requests served.\n# TYPE app_requests counter\n");
    for inst in 0..4 {
        for code in ["200", "500"] {
            let mut v = 0u64;
            for k in 0..steps {
                v = if k == steps / 2 && inst == 1 { 3 } else { v + (rnd() * 20.0) as u64 };
                line(
                    &mut out,
                    &format!("app_requests_total{{code=\"{code}\",instance=\"i{inst}:80\"}}"),
                    v.to_string(),
                    k,
                );
            }
        }
    }
    out.push_str("# TYPE node_cpu_seconds counter\n");
    for cpu in 0..2 {
        let mut v = 1000.0f64;
        for k in 0..steps {
            v = ((v * 100.0).round() + (rnd() * 300.0).round()) / 100.0;
            line(
                &mut out,
                &format!("node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"user\"}}"),
                format!("{v:?}"),
                k,
            );
        }
    }
    out.push_str("# TYPE app_temperature gauge\n");
    for inst in 0..3 {
        for k in 0..steps {
            let v = if k == 100 && inst == 0 {
                f64::NAN
            } else {
                20.0 + (k as f64 / 17.0).sin() * inst as f64 / 3.0
            };
            let text = if v.is_nan() { "NaN".to_string() } else { format!("{v:?}") };
            line(&mut out, &format!("app_temperature{{instance=\"i{inst}:80\"}}"), text, k);
        }
    }
    out.push_str("# TYPE app_latency_seconds histogram\n");
    let bounds = ["0.1", "0.5", "1.0", "+Inf"];
    let mut counts = [0u64; 4];
    let mut sum = 0.0f64;
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    for _ in 0..steps {
        let mut row = Vec::new();
        let obs = (rnd() * 10.0) as u64;
        for _ in 0..obs {
            let x = rnd() * 1.5;
            sum += x;
            for (b, c) in bounds.iter().zip(counts.iter_mut()) {
                if *b == "+Inf" || x <= b.parse::<f64>().unwrap() {
                    *c += 1;
                }
            }
        }
        for (b, c) in bounds.iter().zip(counts) {
            row.push((format!("app_latency_seconds_bucket{{le=\"{b}\"}}"), c.to_string()));
        }
        row.push(("app_latency_seconds_sum".into(), format!("{sum:?}")));
        row.push(("app_latency_seconds_count".into(), counts[3].to_string()));
        rows.push(row);
    }
    // OpenMetrics wants each series' samples together: one series after the other
    for col in 0..rows[0].len() {
        for (k, row) in rows.iter().enumerate() {
            line(&mut out, &row[col].0, row[col].1.clone(), k as i64);
        }
    }
    out.push_str("# EOF\n");
    (out, n)
}

fn backfill(bin: &Path, input: &Path, out: &Path) -> String {
    let o = Command::new(bin)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(input)
        .arg(out)
        .output()
        .expect("run backfill");
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{} failed: {text}", bin.display());
    text
}

fn get(s: &Server, path: &str) -> serde_json::Value {
    let (code, v) = s.get_json(path);
    assert_eq!(code, 200, "{path}: {v}");
    v
}

#[test]
fn backfilled_directory_answers_like_promtools() {
    let Some(promtool) = peer("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = (now_ms() / 1000 - 30 * 3600) / 3600 * 3600;
    let (text, samples) = openmetrics(base);
    let input = dir.path().join("input.om");
    std::fs::write(&input, text).unwrap();
    let ours = backfill(Path::new(env!("CARGO_BIN_EXE_promflow")), &input, &dir.path().join("data"));
    let theirs = backfill(&promtool, &input, &dir.path().join("prom-data"));
    // the same blocks: one header plus one line per 2h-aligned range
    assert_eq!(ours.lines().count(), theirs.lines().count(), "{ours}\n{theirs}");
    let column = |t: &str, i: usize| -> Vec<String> {
        t.lines().skip(1).map(|l| l.split_whitespace().nth(i).unwrap_or("").to_string()).collect()
    };
    for i in [1, 2, 4, 6] {
        assert_eq!(column(&ours, i), column(&theirs, i), "column {i}:\n{ours}\n{theirs}");
    }
    let total: u64 = column(&ours, 4).iter().map(|n| n.parse::<u64>().unwrap()).sum();
    assert_eq!(total, samples);

    let Some(prom) = start_prometheus(dir.path(), "global:\n  scrape_interval: 15s\n") else { return };
    let pf = start_promflow(dir.path(), "global:\n  scrape_interval: 15s\n", &[]);
    // evaluation times off the 30 s sample grid: Prometheus 2.42 closes windows on the left
    // and Prometheus 3 (and promflow) do not, which only shows for samples on a boundary
    let (start, end) = (base + 7, base + HOURS * 3600 + 7);
    let mut failures = Vec::new();
    // every raw sample, bit for bit (values compared as the API's text)
    for name in ["app_requests_total", "node_cpu_seconds_total", "app_temperature", "app_latency_seconds_sum"]
    {
        let path = format!("/api/v1/query?query={name}[{HOURS}h]&time={end}");
        let (a, b) = (get(&pf, &path), get(&prom, &path));
        let key = |v: &serde_json::Value| {
            let mut r = result(v).clone();
            r.sort_by_key(|x| x["metric"].to_string());
            r
        };
        if key(&a) != key(&b) {
            let (ka, kb) = (key(&a), key(&b));
            let detail = ka.iter().zip(&kb).find(|(x, y)| x != y).map(|(x, y)| {
                let (vx, vy) = (x["values"].as_array().unwrap(), y["values"].as_array().unwrap());
                let first = vx.iter().zip(vy).find(|(p, q)| p != q);
                format!("{}: {} vs {} points, first difference {first:?}", x["metric"], vx.len(), vy.len())
            });
            failures.push(format!("raw {name} differs: {} vs {} series; {detail:?}", ka.len(), kb.len()));
        }
    }
    let queries = [
        "sum by (code) (rate(app_requests_total[5m]))",
        "increase(app_requests_total[1h])",
        "rate(node_cpu_seconds_total[10m])",
        "avg_over_time(app_temperature[30m])",
        "histogram_quantile(0.9, rate(app_latency_seconds_bucket[15m]))",
        "app_temperature",
    ];
    for q in queries {
        let enc: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
        for path in [
            // from the third hour on: near a counter's start, Prometheus 2.42 and 3 extrapolate
            // `rate` towards zero differently (docs/promql-compat.md)
            format!("/api/v1/query_range?query={enc}&start={}&end={end}&step=300", start + 2 * 3600),
            format!("/api/v1/query?query={enc}&time={}", start + 3 * 3600 + 7),
        ] {
            if let Err(e) = same(&canonical(&get(&pf, &path)), &canonical(&get(&prom, &path))) {
                failures.push(format!("{q}: {e}"));
            }
        }
    }
    for path in [
        format!("/api/v1/series?match[]=app_requests_total&start={start}&end={end}"),
        format!("/api/v1/label/instance/values?start={}&end={}", start + 3600, start + 7200),
        format!("/api/v1/labels?match[]=app_temperature&start={start}&end={end}"),
        format!("/api/v1/series?match[]={{__name__=~\"app_.*\",instance=~\"i0:80|i2:80\"}}&start={start}&end={end}"),
    ] {
        let (a, b) = (get(&pf, &path), get(&prom, &path));
        let sorted = |v: &serde_json::Value| {
            let mut d: Vec<String> =
                v["data"].as_array().unwrap().iter().map(|x| x.to_string()).collect();
            d.sort();
            d
        };
        if sorted(&a) != sorted(&b) {
            failures.push(format!("{path}: {a} vs {b}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_backfilled_block_reads_back_every_sample_bit_for_bit() {
    use promflow_storage::{Db, DbOptions, MatchOp, Matcher, Querier};
    let dir = tempfile::tempdir().unwrap();
    let (text, samples) = openmetrics(1_700_000_000 / 3600 * 3600);
    let input = dir.path().join("input.om");
    std::fs::write(&input, &text).unwrap();
    backfill(Path::new(env!("CARGO_BIN_EXE_promflow")), &input, dir.path());
    let opts = DbOptions { compaction_interval: None, ..DbOptions::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    let all = [Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap()];
    let series = db.select(&all, i64::MIN, i64::MAX).unwrap();
    db.close().unwrap();
    let values: Vec<(i64, f64)> = series.iter().flat_map(|s| s.samples.iter().map(|x| (x.t, x.v))).collect();
    let rows = values.len() as u64;
    assert_eq!(rows, samples);
    // every (timestamp, value) of the file reads back bit for bit (NaN compared as NaN)
    let key = |t: i64, v: f64| (t, if v.is_nan() { u64::MAX } else { v.to_bits() });
    let mut want: Vec<(i64, u64)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut it = l.rsplit(' ');
            let t: f64 = it.next().unwrap().parse().unwrap();
            let v: f64 = it.next().unwrap().parse().unwrap();
            key((t * 1000.0) as i64, v)
        })
        .collect();
    let mut got: Vec<(i64, u64)> = values.iter().map(|&(t, v)| key(t, v)).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert!(got == want, "values differ from the input");
}

#[test]
fn kill_9_during_remote_write_keeps_every_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let base = now_ms() - 600_000;
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, url) = (Arc::clone(&acked), Arc::clone(&stop), s.url("/api/v1/write"));
        std::thread::spawn(move || {
            let client = client();
            for batch in 0..100_000i64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ts: Vec<_> = (0..50)
                    .map(|i| {
                        series(
                            &[("__name__", "stream"), ("i", &i.to_string())],
                            &[(base + batch, batch as f64)],
                        )
                    })
                    .collect();
                let body = promflow_remote::encode(&promflow_remote::WriteRequest {
                    timeseries: ts,
                    metadata: vec![],
                });
                let sent = client
                    .post(&url)
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .body(body)
                    .send();
                match sent {
                    Ok(r) if r.status().as_u16() == 204 => acked.lock().unwrap().push(batch),
                    _ => break,
                }
            }
        })
    };
    assert!(wait_for(std::time::Duration::from_secs(30), || (acked.lock().unwrap().len() >= 200)
        .then_some(()))
    .is_some());
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, free_port(), &[]);
    let end = (base + 100_000) as f64 / 1000.0;
    let v = get(&s, &format!("/api/v1/query?query=count_over_time(stream[10m])&time={end}"));
    assert_eq!(result(&v).len(), 50, "{v}");
    for r in result(&v) {
        let n: usize = r["value"][1].as_str().unwrap().parse().unwrap();
        assert!(n >= acked.len(), "{n} samples of {} acknowledged survived: {r}", acked.len());
    }
}

/// With `stale_series_compaction_threshold` set, series whose sender marked them stale leave
/// the head at the next compaction round (once a minute) while their samples still answer
/// queries, from blocks, and a `kill -9` and restart does not bring them back.
#[test]
fn stale_series_leave_the_head_and_still_answer_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = "storage:\n  tsdb:\n    stale_series_compaction_threshold: 0.5\n";
    let mut s = start_promflow(dir.path(), config, &["--web.enable-remote-write-receiver"]);
    let t0 = now_ms() - 120_000;
    let pods: Vec<String> = (0..4).map(|i| format!("pod-{i}")).collect();
    let ts = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // three pods go away, and their sender marks their series stale
            let last = if i < 3 { promflow_storage::stale_nan() } else { 3.0 };
            series(
                &[("__name__", "churn"), ("pod", p)],
                &[(t0, 1.0), (t0 + 15_000, 2.0), (t0 + 30_000, last)],
            )
        })
        .collect();
    let (code, body) = remote_write(&s, ts);
    assert_eq!(code, 204, "{body}");
    assert_eq!(metric(&s, "prometheus_tsdb_head_stale_series"), 3.0);
    let query =
        format!("/api/v1/query?query=count_over_time(churn[1m])&time={}", (t0 + 30_000) as f64 / 1000.0);
    let before = canonical(&get(&s, &query));
    assert_eq!(before.len(), 4, "{before:?}");
    let left = wait_for(std::time::Duration::from_secs(150), || {
        (metric(&s, "prometheus_tsdb_head_series") == 1.0).then_some(())
    });
    assert!(left.is_some(), "the stale series are still in the head:\n{}", s.logs());
    assert_eq!(metric(&s, "prometheus_tsdb_stale_series_compactions_triggered_total"), 1.0);
    assert_eq!(canonical(&get(&s, &query)), before);
    assert!(!s.logs().contains("settings are ignored"), "{}", s.logs());
    s.kill9();
    let s = start_promflow_with(dir.path(), &dir.path().join("prometheus.yml"), free_port(), &[]);
    assert_eq!(metric(&s, "prometheus_tsdb_head_series"), 1.0);
    assert_eq!(canonical(&get(&s, &query)), before);
}

#[test]
fn admin_api_deletes_snapshots_and_cleans() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver", "--web.enable-admin-api"]);
    let base = now_ms() - 120_000;
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (base + i * 1000, i as f64)).collect();
    let (code, _) = remote_write(
        &s,
        vec![
            series(&[("__name__", "gone"), ("k", "a")], &samples),
            series(&[("__name__", "kept")], &samples),
        ],
    );
    assert_eq!(code, 204);
    let post = |path: &str| client().post(s.url(path)).send().unwrap();
    let r = post("/api/v1/admin/tsdb/delete_series");
    assert_eq!(r.status().as_u16(), 400, "match[] is required");
    let r = post("/api/v1/admin/tsdb/delete_series?match[]=gone");
    assert_eq!(r.status().as_u16(), 204);
    let at = (base + 9_000) as f64 / 1000.0;
    let v = get(&s, &format!("/api/v1/query?query=gone&time={at}"));
    assert!(result(&v).is_empty(), "{v}");
    let v = get(&s, &format!("/api/v1/query?query=kept&time={at}"));
    assert_eq!(result(&v).len(), 1, "{v}");
    let r = post("/api/v1/admin/tsdb/snapshot");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    let name = v["data"]["name"].as_str().unwrap().to_string();
    assert!(dir.path().join("data/promflow/snapshots").join(&name).join("promflow/blocks").is_dir(), "{v}");
    assert_eq!(post("/api/v1/admin/tsdb/clean_tombstones").status().as_u16(), 204);
    assert_eq!(client().get(s.url("/api/v1/admin/tsdb/snapshot")).send().unwrap().status().as_u16(), 405);
    // the deletion survives a restart (WAL tombstones)
    drop(s);
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, free_port(), &[]);
    let v = get(&s, &format!("/api/v1/query?query=gone&time={at}"));
    assert!(result(&v).is_empty(), "{v}");
    let r = client().post(s.url("/api/v1/admin/tsdb/clean_tombstones")).send().unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(v["error"], "admin APIs disabled", "{v}");
}

/// The server allocates with jemalloc under the settings it embeds. Were their symbol
/// misnamed, jemalloc would ignore them without a word and run without its background
/// thread, the one that returns freed memory to the system.
#[test]
fn the_server_allocates_with_jemalloc_and_its_background_thread() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_promflow(dir.path(), "", &[]);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.child.id())).unwrap();
    let names: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "jemalloc_bg_thd"), "threads: {names:?}");
}
