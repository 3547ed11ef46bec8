//! Query latency and restart time at a million active series, side by side: promflow,
//! Debian's Prometheus 2.42 and Debian's VictoriaMetrics 1.79, each alone in turn, loaded with
//! the same remote-write stream as `benches/ingest.rs`.
//!
//! Run with `cargo bench --bench queries_at_scale`. Environment (defaults in brackets):
//! `BENCH_SERIES` [1000000], `BENCH_ROUNDS` [80] samples per series at 15 s (20 minutes),
//! `BENCH_REPS` [5] timed runs of each query, `BENCH_CONNS` [4] senders, `BENCH_SYSTEMS`
//! [promflow,prometheus,vm] (a set: they load in that order), `BENCH_ROTATE` [0] how many
//! places that order is rotated (0, 1, 2 in three runs give each system each place),
//! `BENCH_PROMFLOW` [this build's] the promflow binary,
//! `BENCH_QUERIES` [all] the numbers (from 1, comma-separated) of the queries to ask (to
//! profile one), `BENCH_LOOP_QUERY` [11] the number of the query asked in a loop during
//! ingest, `BENCH_LOOP_ROUNDS` [40] the rounds sent for that (0 skips it), `BENCH_DAYS` [0]
//! days of samples instead of `BENCH_ROUNDS`, `BENCH_LOAD_CPUS` [1] the CPUs (a `taskset`
//! list) the server takes the load on: `0,1` shortens the hour Prometheus takes to load two
//! hours of a million series on one core; what is measured afterwards runs on CPU 1 alone,
//! and the restart starts pinned there again. `BENCH_KEEP_SNAPSHOT` [none] a path where the
//! compacted snapshot of promflow or Prometheus is moved instead of removed, to study its
//! files (the run prints their bytes by file name either way).
//!
//! With `BENCH_DAYS`, the samples (one every 15 s up to now) go out as a backfill does, 20 a
//! series in each request, so that all but the newest hours are in blocks (parts) by the
//! time the queries are asked; the queries are then the long-range set (ranges over the
//! whole span at a 1 h step, lookups over the whole span), asked once the server's
//! compaction has been still for 75 s, and nothing is sent beside a query loop.
//!
//! Per system: load every round, then ask each query once to warm up and `BENCH_REPS` times
//! timed (20 times as many when the warm-up took under 10 ms; the median is reported),
//! then measure what the data takes once compacted (a snapshot with the head written as a
//! block; VictoriaMetrics's parts after a forced merge), then `kill -9` the server and time
//! its restart on the same data until it answers ready and its first query. Then more rounds are sent, in four
//! groups: alone, with the heaviest query asked in a loop, alone, in the loop again; the
//! ingest rate and the answer times of the remote-write requests in each mode are compared.
//! The server runs under
//! `taskset -c 1`, this process on CPU 0. Answers are compared with promflow's: series by
//! series, values to a relative 1e-9. VictoriaMetrics's PromQL dialect differs (its `rate`
//! does not extrapolate, for one), so where an answer differs only the timing is comparable,
//! and the table says so. Every request carries `nocache=1`, which makes VictoriaMetrics
//! evaluate a repeated query rather than answer it from its cache of rollup results.

mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use workload::common::{median, rss_kib};
use workload::{
    all_series, encode_rounds, env, percentile, pin_process, pin_self, send, send_history, send_timed,
    wait_for_compaction, Rounds, System, CLIENT_CPU, INTERVAL_MS, SERVER_CPU,
};

/// How long one query may take before it counts as timed out.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// A query whose warm-up answer comes faster than this is timed `BENCH_REPS` ×
/// [`QUICK_REPS`] times.
const QUICK: Duration = Duration::from_millis(10);
/// How many times more often a quick query is timed: one answered in a fraction of a
/// millisecond varies from one request to the next by as much as it takes.
const QUICK_REPS: usize = 20;

/// How long a restart may take.
const RESTART_LIMIT: Duration = Duration::from_secs(900);

/// One request of the query set.
enum Ask {
    /// `/api/v1/query` half a sample interval before the newest sample.
    Instant(&'static str),
    /// `/api/v1/query_range` over the data after its first five minutes, 60 s step, off the
    /// samples' grid as instant queries are.
    Range(&'static str),
    /// `/api/v1/query_range` over the data after its first hour, 1 h step, off the grid.
    LongRange(&'static str),
    /// `/api/v1/label/<name>/values` over the data's span.
    LabelValues(&'static str),
    /// `/api/v1/label/<name>/values?match[]=…` over the data's span: a variable's values
    /// among one metric's series.
    LabelValuesOf(&'static str, &'static str),
    /// `/api/v1/labels?match[]=…` over the data's span.
    LabelNamesOf(&'static str),
    /// `/api/v1/series?match[]=…` over the data's span.
    Series(&'static str),
}

/// The query set: what dashboards and rules ask of a server at this size, over this
/// workload (about 185 series a host, 5,400 hosts at a million series).
fn queries() -> Vec<(&'static str, Ask)> {
    const RATE: &str = r#"rate(http_requests_total{handler="/api/v1/orders",code="500"}[5m])"#;
    const SUM_BY: &str = "sum by (mode) (rate(node_cpu_seconds_total[5m]))";
    const QUANTILE: &str =
        "histogram_quantile(0.9, sum by (handler, le) (rate(http_request_duration_seconds_bucket[5m])))";
    vec![
        ("`rate` over 10.8k series", Ask::Instant(RATE)),
        ("the same, 15 steps", Ask::Range(RATE)),
        ("`sum by (mode)` of `rate` over 173k series", Ask::Instant(SUM_BY)),
        ("the same, 15 steps", Ask::Range(SUM_BY)),
        ("`histogram_quantile` by handler over 324k buckets", Ask::Instant(QUANTILE)),
        ("the same, 15 steps", Ask::Range(QUANTILE)),
        ("label values of `instance` (10.8k)", Ask::LabelValues("instance")),
        ("label values of `__name__`", Ask::LabelValues("__name__")),
        ("series of one host (155)", Ask::Series(r#"{instance="host-00042:9100"}"#)),
        ("series of one metric (5.4k)", Ask::Series("node_load1")),
        ("`count` of every series (1M)", Ask::Instant(r#"count({__name__=~".+"})"#)),
    ]
}

/// The long-range set (`BENCH_DAYS`): what a dashboard over a week asks, at a 1 h step.
fn long_queries() -> Vec<(&'static str, Ask)> {
    vec![
        ("`sum by (mode)` of `rate`", Ask::LongRange("sum by (mode) (rate(node_cpu_seconds_total[1h]))")),
        (
            "`rate` of one handler's errors",
            Ask::LongRange(r#"rate(http_requests_total{handler="/api/v1/orders",code="500"}[1h])"#),
        ),
        (
            "`histogram_quantile` by handler",
            Ask::LongRange(
                "histogram_quantile(0.9, sum by (handler, le) (rate(http_request_duration_seconds_bucket[1h])))",
            ),
        ),
        ("`max_over_time` of `node_load1` per host", Ask::LongRange("max_over_time(node_load1[1h])")),
        ("label values of `instance`", Ask::LabelValues("instance")),
        ("label values of `instance` of one metric", Ask::LabelValuesOf("instance", "node_cpu_seconds_total")),
        ("label names of one metric", Ask::LabelNamesOf("node_cpu_seconds_total")),
        ("series of one metric", Ask::Series("node_load1")),
    ]
}

/// The span of the loaded data, in milliseconds.
#[derive(Clone, Copy)]
struct Span {
    first_ms: i64,
    last_ms: i64,
}

/// Queries are evaluated this far off the 15 s grid of the samples, so no sample sits on
/// the left edge of a range: Prometheus 2.x takes such a sample into the range and 3.x (and
/// promflow) does not, which would make every `rate` differ.
const OFF_GRID_MS: i64 = 7_500;

impl Ask {
    /// Asks `base`; the answer's `data`, or `None` on an error or a timeout.
    fn ask(&self, http: &reqwest::blocking::Client, base: &str, span: Span) -> Option<Value> {
        let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
        // a lookup's parameters: its selector, if any, and the data's whole span
        let whole_span = |m: Option<&str>| {
            let mut params: Vec<(&str, String)> = m.map(|m| ("match[]", m.to_string())).into_iter().collect();
            params.extend([("start", secs(span.first_ms)), ("end", secs(span.last_ms))]);
            params
        };
        let (path, params): (String, Vec<(&str, String)>) = match self {
            Ask::Instant(q) => (
                "/api/v1/query".into(),
                vec![("query", q.to_string()), ("time", secs(span.last_ms - OFF_GRID_MS))],
            ),
            Ask::Range(q) => (
                "/api/v1/query_range".into(),
                vec![
                    ("query", q.to_string()),
                    ("start", secs(span.first_ms + 5 * 60_000 - OFF_GRID_MS)),
                    ("end", secs(span.last_ms - OFF_GRID_MS)),
                    ("step", "60".into()),
                ],
            ),
            Ask::LongRange(q) => (
                "/api/v1/query_range".into(),
                vec![
                    ("query", q.to_string()),
                    ("start", secs(span.first_ms + 3_600_000 - OFF_GRID_MS)),
                    ("end", secs(span.last_ms - OFF_GRID_MS)),
                    ("step", "3600".into()),
                ],
            ),
            Ask::LabelValues(name) => (format!("/api/v1/label/{name}/values"), whole_span(None)),
            Ask::LabelValuesOf(name, m) => (format!("/api/v1/label/{name}/values"), whole_span(Some(m))),
            Ask::LabelNamesOf(m) => ("/api/v1/labels".into(), whole_span(Some(m))),
            Ask::Series(m) => ("/api/v1/series".into(), whole_span(Some(m))),
        };
        // VictoriaMetrics answers a query asked again from its cache of rollup results (for
        // the part of the range older than 5 minutes): `nocache` makes it evaluate, as the
        // others always do (they ignore the parameter)
        let mut params = params;
        params.push(("nocache", "1".into()));
        let r = http.get(format!("{base}{path}")).query(&params).send().ok()?;
        if !r.status().is_success() {
            eprintln!("  {path} answered {}: {}", r.status(), r.text().unwrap_or_default());
            return None;
        }
        let v: Value = serde_json::from_str(&r.text().ok()?).ok()?;
        Some(v["data"].clone())
    }
}

/// An answer in a comparable form: each series (or string) with its values.
type Canonical = BTreeMap<String, Vec<f64>>;

fn canonical(data: &Value) -> Canonical {
    let mut out = Canonical::new();
    let values = |v: &Value| -> Vec<f64> {
        let one = |p: &Value| p[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        match (v.get("value"), v.get("values")) {
            (Some(p), _) => vec![one(p)],
            (_, Some(Value::Array(ps))) => ps.iter().map(one).collect(),
            _ => Vec::new(),
        }
    };
    let items = data.get("result").unwrap_or(data);
    for item in items.as_array().into_iter().flatten() {
        match item {
            Value::String(s) => {
                out.insert(s.clone(), Vec::new());
            }
            Value::Object(o) => {
                let labels = o.get("metric").unwrap_or(item);
                let key: BTreeMap<&str, &str> = labels
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect();
                out.insert(format!("{key:?}"), values(item));
            }
            _ => {}
        }
    }
    out
}

/// Whether two answers hold the same series with the same values (relative 1e-9).
fn agree(a: &Canonical, b: &Canonical) -> bool {
    first_difference(a, b).is_none()
}

/// The first series where two answers differ, with both sides' values, for the log.
fn first_difference(a: &Canonical, b: &Canonical) -> Option<String> {
    let close = |x: &f64, y: &f64| (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
    if a.len() != b.len() {
        return Some(format!("{} series against {}", a.len(), b.len()));
    }
    a.iter().zip(b).find_map(|((ka, va), (kb, vb))| {
        let same = ka == kb && va.len() == vb.len() && va.iter().zip(vb).all(|(x, y)| close(x, y));
        (!same).then(|| format!("{ka} {va:?} against {kb} {vb:?}"))
    })
}

/// What one system did.
struct Outcome {
    system: System,
    ingest_s: f64,
    rss_mib: f64,
    /// Bytes under the data directory once loaded (WAL, head chunk files, blocks, parts).
    disk_mib: f64,
    /// Bytes the loaded samples take once compacted ([`compacted_bytes`]).
    compacted_bytes: Option<u64>,
    /// Per query: the median latency in ms (`None`: an error or a timeout) and the answer.
    queries: Vec<(Option<f64>, Option<Canonical>)>,
    restart_ready_s: f64,
    restart_first_answer_s: Option<f64>,
    /// Whether the first query answered the same after the restart as before it.
    restart_same: bool,
    /// Ingest alone and beside a query loop (`None`: not measured).
    beside_query: Option<BesideQuery>,
}

/// Ingest with and without a query asked over and over at the same time.
struct BesideQuery {
    /// Samples per second sent alone and beside the query loop.
    alone_sps: f64,
    beside_sps: f64,
    /// Remote-write answer times, sorted, in ms.
    alone_ms: Vec<f64>,
    beside_ms: Vec<f64>,
    /// The answer times of the queries asked while the rounds went out (the last of each
    /// group ends after them), in ms, and how many failed.
    answered_ms: Vec<f64>,
    failed: usize,
}

/// Sends `groups` of rounds in turn alone and beside `ask` asked in a loop by another
/// thread (alone first), and measures both modes.
fn ingest_beside_query(
    base: &str,
    groups: &[&[Vec<std::sync::Arc<Vec<u8>>>]],
    series: usize,
    conns: usize,
    ask: &Ask,
    span: Span,
) -> BesideQuery {
    let mut out = BesideQuery {
        alone_sps: 0.0,
        beside_sps: 0.0,
        alone_ms: Vec::new(),
        beside_ms: Vec::new(),
        answered_ms: Vec::new(),
        failed: 0,
    };
    let (mut alone_s, mut alone_n, mut beside_s, mut beside_n) = (0.0, 0, 0.0, 0);
    for (i, group) in groups.iter().enumerate() {
        let samples = series * group.len();
        if i % 2 == 0 {
            let t = Instant::now();
            out.alone_ms.extend(send_timed(base, group, conns));
            alone_s += t.elapsed().as_secs_f64();
            alone_n += samples;
            continue;
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (times, answered, failed) = std::thread::scope(|scope| {
            let asker = scope.spawn(|| {
                let http = reqwest::blocking::Client::builder().timeout(QUERY_TIMEOUT).build().unwrap();
                let (mut answered, mut failed) = (Vec::new(), 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    match ask.ask(&http, base, span) {
                        Some(_) => answered.push(t.elapsed().as_secs_f64() * 1000.0),
                        None => failed += 1,
                    }
                }
                (answered, failed)
            });
            // the loop's first query is under way before the clock starts
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            let times = send_timed(base, group, conns);
            beside_s += t.elapsed().as_secs_f64();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (answered, failed) = asker.join().expect("query loop");
            (times, answered, failed)
        });
        beside_n += samples;
        out.beside_ms.extend(times);
        out.answered_ms.extend(answered);
        out.failed += failed;
    }
    out.alone_sps = alone_n as f64 / alone_s;
    out.beside_sps = beside_n as f64 / beside_s;
    out.alone_ms.sort_by(|a, b| a.total_cmp(b));
    out.beside_ms.sort_by(|a, b| a.total_cmp(b));
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 1_000_000);
    let days = env("BENCH_DAYS", 0);
    let rounds =
        if days > 0 { days * 86_400_000 / INTERVAL_MS as usize } else { env("BENCH_ROUNDS", 80).max(24) };
    // a multiple of four: alone, beside the loop, alone, beside it again
    let loop_rounds = if days > 0 { 0 } else { env("BENCH_LOOP_ROUNDS", 40) / 4 * 4 };
    let loop_query = env("BENCH_LOOP_QUERY", 11);
    let reps = env("BENCH_REPS", 5).max(1);
    let conns = env("BENCH_CONNS", 4);
    let load_cpus = std::env::var("BENCH_LOAD_CPUS").unwrap_or_else(|_| SERVER_CPU.into());
    let listed = System::wanted();
    // the order the systems load in: rotated between runs, so that drift over the hour a
    // run takes falls on each in turn; the report lists promflow first whatever the order
    let mut systems = listed.clone();
    systems.rotate_left(env("BENCH_ROTATE", 0) % listed.len());
    let specs = all_series(n);
    let all_rounds = rounds + loop_rounds;
    let start_ms = (workload::common::now_ms() - (all_rounds as i64 + 4) * INTERVAL_MS) / 60_000 * 60_000;
    let span = Span { first_ms: start_ms, last_ms: start_ms + (rounds as i64 - 1) * INTERVAL_MS };
    // a long span is encoded as it goes out
    let mut bodies = if days > 0 {
        Vec::new()
    } else {
        eprintln!("encoding {n} series × {all_rounds} rounds …");
        encode_rounds(&specs, all_rounds, start_ms)
    };
    // after the encoding, which uses every CPU while no server runs
    pin_self(CLIENT_CPU);
    let later = bodies.split_off(bodies.len().min(rounds));
    // the long span's generator reads the series; the rounds above no longer need them
    let specs = if days > 0 { specs } else { Vec::new() };
    let groups: Vec<&[Vec<std::sync::Arc<Vec<u8>>>]> =
        if loop_rounds == 0 { Vec::new() } else { later.chunks(loop_rounds / 4).collect() };
    let looped = queries().into_iter().nth(loop_query.saturating_sub(1)).expect("BENCH_LOOP_QUERY");
    let http = reqwest::blocking::Client::builder().timeout(QUERY_TIMEOUT).build().unwrap();
    let only = std::env::var("BENCH_QUERIES").unwrap_or_default();
    let asks: Vec<(&str, Ask)> = if days > 0 { long_queries() } else { queries() }
        .into_iter()
        .enumerate()
        .filter(|(i, _)| only.is_empty() || only.split(',').any(|n| n.trim() == (i + 1).to_string()))
        .map(|(_, q)| q)
        .collect();

    let mut outcomes = Vec::new();
    for system in systems {
        let dir = tempfile::tempdir().unwrap();
        let server = system.start_on(&load_cpus, dir.path(), Duration::from_secs(60));
        eprintln!("{}: loading on CPUs {load_cpus}", system.name());
        let t0 = Instant::now();
        if days > 0 {
            send_history(&server.base, Rounds::new(&specs, start_ms), rounds);
        } else {
            send(&server.base, &bodies, conns);
        }
        let ingest_s = t0.elapsed().as_secs_f64();
        if load_cpus != SERVER_CPU {
            pin_process(server.child.id(), SERVER_CPU);
        }
        if days > 0 {
            let quiet = Duration::from_secs(75);
            let waited = wait_for_compaction(
                system,
                server.child.id(),
                &server.base,
                quiet,
                Duration::from_secs(1800),
                || {},
            );
            eprintln!("{}: compaction still after {:.0} s", system.name(), waited.as_secs_f64());
        }
        if system == System::VictoriaMetrics {
            let _ = http.get(format!("{}/internal/force_flush", server.base)).send();
        }
        std::thread::sleep(Duration::from_secs(5));
        let rss_mib = rss_kib(server.child.id()) as f64 / 1024.0;
        let disk_mib = workload::disk_bytes(dir.path()) as f64 / (1 << 20) as f64;
        eprintln!(
            "{}: loaded in {ingest_s:.0} s, {rss_mib:.0} MiB, {disk_mib:.0} MiB on disk",
            system.name()
        );
        let mut results = Vec::new();
        for (name, ask) in &asks {
            let warm = Instant::now();
            let answer = ask.ask(&http, &server.base, span).map(|d| canonical(&d));
            let reps = if warm.elapsed() < QUICK { reps * QUICK_REPS } else { reps };
            let mut times = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                if ask.ask(&http, &server.base, span).is_none() {
                    break;
                }
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let ms = (times.len() == reps).then(|| median(times));
            eprintln!(
                "{}: {name}: {} ms, {} items",
                system.name(),
                ms.map_or("timeout".into(), millis),
                answer.as_ref().map_or(0, |a| a.len())
            );
            results.push((ms, answer));
        }

        let compacted_bytes = compacted_bytes(system, &server.base, &dir.path().join("data"));
        eprintln!(
            "{}: compacted {}",
            system.name(),
            compacted_bytes.map_or("–".into(), |b| format!(
                "{b} bytes, {:.3} B a sample",
                b as f64 / (n * rounds) as f64
            ))
        );

        // kill -9, then the time until the same data answers again
        let mut server = server;
        let _ = server.child.kill();
        let _ = server.child.wait();
        drop(server);
        let t = Instant::now();
        let server = system.start_within(dir.path(), RESTART_LIMIT);
        let restart_ready_s = t.elapsed().as_secs_f64();
        let first = workload::common::wait_for(RESTART_LIMIT, || {
            asks[0].1.ask(&http, &server.base, span).map(|d| canonical(&d)).filter(|a| !a.is_empty())
        });
        let restart_first_answer_s = first.as_ref().map(|_| t.elapsed().as_secs_f64());
        let restart_same = match (&first, &results[0].1) {
            (Some(after), Some(before)) => agree(after, before),
            _ => false,
        };
        eprintln!(
            "{}: restart ready in {restart_ready_s:.1} s, first answer {:?} s, same {restart_same}",
            system.name(),
            restart_first_answer_s
        );
        let beside_query = (!groups.is_empty()).then(|| {
            eprintln!("{}: ingest beside a loop of {}", system.name(), looped.0);
            let b = ingest_beside_query(&server.base, &groups, n, conns, &looped.1, span);
            eprintln!(
                "{}: alone {:.0}/s, p99 {:.1} ms; beside {:.0}/s, p99 {:.1} ms; queries answered in {:?} ms, {} failed",
                system.name(),
                b.alone_sps,
                percentile(&b.alone_ms, 0.99),
                b.beside_sps,
                percentile(&b.beside_ms, 0.99),
                b.answered_ms,
                b.failed
            );
            b
        });
        outcomes.push(Outcome {
            beside_query,
            system,
            ingest_s,
            rss_mib,
            disk_mib,
            compacted_bytes,
            queries: results,
            restart_ready_s,
            restart_first_answer_s,
            restart_same,
        });
    }

    outcomes.sort_by_key(|o| listed.iter().position(|s| *s == o.system));
    report(n, rounds, reps, &load_cpus, &asks, &outcomes);
    report_beside_query(loop_rounds, looped.0, &outcomes);
}

/// The bytes the loaded data takes once compacted: for promflow and Prometheus, a snapshot
/// with the head written as a block (`/api/v1/admin/tsdb/snapshot`, removed afterwards); for
/// VictoriaMetrics, its `data` and `indexdb` after a forced merge of every partition, once
/// their size has not changed for 15 s (at most 10 minutes).
fn compacted_bytes(system: System, base: &str, data: &std::path::Path) -> Option<u64> {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(900)).build().ok()?;
    if system == System::VictoriaMetrics {
        let _ = http.get(format!("{base}/internal/force_flush")).send();
        let answer = http.get(format!("{base}/internal/force_merge")).send().ok()?;
        if !answer.status().is_success() {
            eprintln!("VictoriaMetrics: force_merge answered {}", answer.status());
            return None;
        }
        let size = || workload::disk_bytes(&data.join("data")) + workload::disk_bytes(&data.join("indexdb"));
        let (started, mut last, mut since) = (Instant::now(), size(), Instant::now());
        while started.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(Duration::from_secs(1));
            let now = size();
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_secs(15) {
                return Some(now);
            }
        }
        return None;
    }
    let text = http.post(format!("{base}/api/v1/admin/tsdb/snapshot")).send().ok()?.text().ok()?;
    let answer: Value = serde_json::from_str(&text).ok()?;
    let name = answer["data"]["name"].as_str()?;
    // Prometheus keeps snapshots under `snapshots/`, promflow under `promflow/snapshots/`
    let dir = [data.join("snapshots").join(name), data.join("promflow").join("snapshots").join(name)]
        .into_iter()
        .find(|d| d.is_dir())?;
    let bytes = workload::disk_bytes(&dir);
    let mut by_file = std::collections::BTreeMap::new();
    files_by_name(&dir, &mut by_file);
    let parts: Vec<String> = by_file.iter().map(|(name, b)| format!("{name} {b}")).collect();
    eprintln!("{}: compacted, bytes by file name: {}", system.name(), parts.join(", "));
    match std::env::var_os("BENCH_KEEP_SNAPSHOT") {
        Some(to) => {
            let to = std::path::PathBuf::from(to);
            let _ = std::fs::remove_dir_all(&to);
            if std::fs::rename(&dir, &to).is_err() {
                eprintln!("{}: could not keep the snapshot at {}", system.name(), to.display());
            }
        }
        None => {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Some(bytes)
}

/// Adds the bytes of every file under `dir` to `out` by the file's name (a block's `index`,
/// its samples, each chunk segment counted as `chunks/`), to show what the bytes go to.
fn files_by_name(dir: &std::path::Path, out: &mut std::collections::BTreeMap<String, u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            files_by_name(&entry.path(), out);
        } else if kind.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let parent =
                entry.path().parent().and_then(|p| p.file_name()).map(|p| p.to_string_lossy().into_owned());
            let key = if parent.as_deref() == Some("chunks") { "chunks/".into() } else { name };
            *out.entry(key).or_default() += entry.metadata().map_or(0, |m| m.len());
        }
    }
}

fn report_beside_query(loop_rounds: usize, looped: &str, outcomes: &[Outcome]) {
    if loop_rounds == 0 {
        return;
    }
    println!(
        "\n{loop_rounds} more rounds, a quarter at a time: alone, beside {looped} asked in a loop, alone, beside it\n"
    );
    println!("| system | alone, samples/s | beside the query, samples/s | beside / alone | write p50 / p99 alone, ms | beside, ms | queries answered (failed), median time, s |");
    println!("|---|---|---|---|---|---|---|");
    for o in outcomes {
        let Some(b) = &o.beside_query else { continue };
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {} ({}), {} |",
            o.system.name(),
            b.alone_sps,
            b.beside_sps,
            b.beside_sps / b.alone_sps,
            percentile(&b.alone_ms, 0.5),
            percentile(&b.alone_ms, 0.99),
            percentile(&b.beside_ms, 0.5),
            percentile(&b.beside_ms, 0.99),
            b.answered_ms.len(),
            b.failed,
            if b.answered_ms.is_empty() {
                "–".into()
            } else {
                format!("{:.1}", median(b.answered_ms.clone()) / 1000.0)
            }
        );
    }
}

/// A median time in milliseconds, to a tenth; to a hundredth under 10 ms, where lookups of
/// about half a millisecond differ by less than a tenth.
fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

fn report(n: usize, rounds: usize, reps: usize, load_cpus: &str, asks: &[(&str, Ask)], outcomes: &[Outcome]) {
    println!(
        "{n} active series × {rounds} samples at 15 s; each query warmed once, then the median of {reps} runs ({} under 10 ms), ms\n",
        reps * QUICK_REPS
    );
    let names: Vec<&str> = outcomes.iter().map(|o| o.system.name()).collect();
    println!("| query | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    let promflow = &outcomes[0];
    for (i, (name, _)) in asks.iter().enumerate() {
        let cells: Vec<String> = outcomes
            .iter()
            .map(|o| {
                let (ms, answer) = &o.queries[i];
                let time = ms.map_or("timeout".to_string(), millis);
                let ratio = match (promflow.queries[i].0, ms) {
                    (Some(p), Some(m)) if o.system != System::Promflow => format!(" ({:.2}×)", p / m),
                    _ => String::new(),
                };
                let differs = match (&promflow.queries[i].1, answer) {
                    (Some(p), Some(a)) if o.system != System::Promflow => match first_difference(p, a) {
                        Some(what) => {
                            eprintln!("{} differs on {name}: {what}", o.system.name());
                            " ≠"
                        }
                        None => "",
                    },
                    _ => "",
                };
                format!("{time}{ratio}{differs}")
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!("\n(×: promflow's time over this system's; ≠: the answer differs from promflow's)\n");
    println!("(loaded on CPUs {load_cpus}; queries, compaction and restart on CPU {SERVER_CPU})\n");
    println!("| system | load, s | RSS loaded, MiB | on disk loaded, MiB | compacted, B a sample | restart to ready, s | to the first answer, s | answer as before |");
    println!("|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {} | {} |",
            o.system.name(),
            o.ingest_s,
            o.rss_mib,
            o.disk_mib,
            o.compacted_bytes.map_or("–".into(), |b| format!("{:.3}", b as f64 / (n * rounds) as f64)),
            o.restart_ready_s,
            o.restart_first_answer_s.map_or("–".into(), |s| format!("{s:.1}")),
            if o.restart_same { "yes" } else { "no" }
        );
    }
}
