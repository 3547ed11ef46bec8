//! The incremental executor against the batch executor: at every evaluation time, views kept
//! current by a dataflow with two timely workers must equal the batch evaluation over the
//! same samples. Also: what one sample costs, and what views share.

use std::collections::BTreeMap;
use std::sync::Arc;

use promflow_batch::evaluate;
use promflow_incremental::{ElementChange, Grain, Incremental, Unboxed, Value, ViewChange};
use promflow_plan::{Plan, QueryOptions, QueryResult};
use promflow_storage::{stale_nan, Db, DbOptions, Labels};

/// A view's content read as floats: these views hold no histograms.
fn floats(rows: Vec<(Labels, Value)>) -> BTreeMap<Labels, f64> {
    rows.into_iter().map(|(l, v)| (l, v.as_float().expect("a float"))).collect()
}

const LOOKBACK: i64 = 300_000;

/// Series `i` of metric `x`, in job `j{i % jobs}`.
fn series_x(i: i64, jobs: i64) -> Labels {
    Labels::from_pairs([
        ("__name__", "x".to_string()),
        ("job", format!("j{}", i % jobs)),
        ("i", i.to_string()),
    ])
}

/// Samples of 40 series over 20 minutes: irregular intervals, series that stop (their last
/// sample runs out of lookback), staleness markers, and a series that starts late.
fn samples() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for i in 0..40i64 {
        let labels = series_x(i, 4);
        let every = 10_000 + (i % 5) * 7_000;
        let (from, until) =
            (if i == 7 { 400_000 } else { i * 1_000 }, if i % 6 == 0 { 500_000 } else { 1_200_000 });
        let mut t = from;
        while t < until {
            let v = if i % 9 == 0 && t % 240_000 < every {
                stale_nan()
            } else {
                ((t / 1000) * (i + 1)) as f64 * 0.5
            };
            out.push((labels.clone(), t, v));
            t += every;
        }
    }
    out.sort_by_key(|s| s.1);
    out
}

fn compile(query: &str) -> Plan {
    promflow_promql::compile(query, &Default::default()).unwrap()
}

fn batch(db: &Db, query: &str, t: i64) -> BTreeMap<Labels, f64> {
    let opts = QueryOptions { lookback_ms: LOOKBACK, ..QueryOptions::instant(t) };
    match evaluate(&compile(query), db, &opts).unwrap().result {
        QueryResult::Vector(v) => v.into_iter().map(|(l, _, v)| (l, v)).collect(),
        other => panic!("{other:?}"),
    }
}

/// Expressions the incremental executor maintains, each compared with the batch executor.
const VIEWS: &[&str] = &[
    "x",
    "sum by (job) (x)",
    "count by (job) (x)",
    "avg by (job) (x)",
    "max without (i) (x)",
    "quantile by (job) (0.9, x)",
    "sum(rate(x[5m]))",
    "rate(x[2m])",
    "sum by (job) (rate(x[5m]))",
    "increase(x[3m])",
    "delta(x[4m])",
    "irate(x[2m])",
    "predict_linear(x[5m], 60)",
    "max_over_time(x[3m])",
    "count_over_time(x[1m])",
    "x > 100",
    "x * 2",
    "abs(x - 5000)",
    "-x",
    "timestamp(x)",
    "x / ignoring(i) group_left sum by (job) (x)",
    "x / on(i, job) (x + 1)",
    "x and on(job) (x > 200)",
    "x unless on(i) (x > 300)",
    "x or on(i) (x * 0)",
    // `offset`: the same selection with every sample counting later
    "x offset 1m",
    "sum by (job) (rate(x[5m] offset 2m))",
    "x - x offset 30s",
    // each group's k greatest or smallest elements, chosen as the batch executor chooses
    "topk by (job) (2, x)",
    "bottomk(3, rate(x[2m]))",
    "limitk by (job) (2, x)",
    "limit_ratio(0.5, x)",
    "limit_ratio(-0.3, rate(x[2m]))",
    // `fill`: an element alone in its match group meets the fill value (series 7 starts late,
    // every sixth series stops early, so each side has elements the other lacks for a while)
    "x - on(i) fill(0) (x offset 2m)",
    "x / ignoring(i) group_left fill_right(1) sum by (job) (x > 3000)",
    "sum by (job) (x > 2000) > bool on(job) group_right fill_left(5) (x offset 1m)",
    // anchored windows: the last sample at or before the window's start is its left edge, so
    // values change when a sample crosses the start, with no sample arriving
    "increase(x[2m] anchored)",
    "sum by (job) (rate(x[1m] anchored))",
    "changes(x[3m] anchored)",
    "delta(x[90s] anchored offset 1m)",
    "resets(x[2m] anchored)",
    // scalars that change: `time()` at every tick, `scalar(v)` (NaN while `v` has no element
    // or several: series 7 starts late, series 0 stops)
    "time() - timestamp(x)",
    "vector(time())",
    "minute(vector(time() * 60))",
    "x > bool scalar(sum(x{i=\"1\"}))",
    "x * scalar(x{job=\"j1\"})",
    "vector(scalar(x{i=\"7\"}) - 2 * time())",
    "scalar(x{i=\"0\"}) < x",
    // parameters that change: every group's choice is made again when they do
    "topk by (job) (scalar(count(x > 3000) or vector(0)), x)",
    "quantile by (job) (scalar(x{i=\"1\"}) / 5000, x)",
    "limit_ratio(time() % 17 / 17 - 0.5, x)",
    "timestamp(x * 2)",
    // a window function's argument that changes: every series is evaluated again when it does
    "quantile_over_time(scalar(x{i=\"1\"}) / 20000, x[2m])",
    "predict_linear(x[3m], scalar(count(x > 2000) or vector(0)) * 10)",
    "quantile_over_time(time() % 7 / 7, x[1m:20s])",
    // subqueries: the inner expression sampled at every multiple of the step (exactly there,
    // the clock ticking at each step for the values that move with time), nested too
    "max_over_time(x[3m:30s])",
    "sum by (job) (rate(x[5m:1m]))",
    "avg_over_time(rate(x[2m])[4m:45s])",
    "min_over_time(sum by (job) (x)[2m:20s] offset 1m)",
    "rate(sum_over_time(x[1m:15s])[3m:15s])",
    "absent_over_time(x{i=\"0\"}[2m:30s])",
    "deriv(predict_linear(x[2m], 30)[3m:20s])",
    "max_over_time(rate(x[1m])[3m:30s] @ 600)",
    // `@ t`: evaluated at t whatever the evaluation's time (compared from t on: before it, the
    // batch executor reads samples the view has not been fed yet)
    "x @ 300",
    "sum by (job) (rate(x[2m] @ 600))",
    "x @ 500 offset 1m",
    "timestamp(x @ 450)",
    "max_over_time(x[3m] @ 700) - x",
    "predict_linear(x[5m] @ 400, 60)",
    "changes(x[2m] anchored @ 800)",
    // classic histograms: buckets `le` 1, 1.0, 2 and +Inf summed over jobs; quantiles by one
    // label, and a bound written twice (`2`, `2e0`) with the same count, which adds up
    "histogram_quantiles(sum by (le) (label_replace(label_replace(label_replace(x, \"le\", \"$1\", \"job\", \"j(.)\"), \"le\", \"+Inf\", \"le\", \"3\"), \"le\", \"1.0\", \"le\", \"0\")), \"q\", 0.25, 0.9)",
    "histogram_quantile(0.6, label_replace(sum by (le) (label_replace(label_replace(x, \"le\", \"$1\", \"job\", \"j(.)\"), \"le\", \"+Inf\", \"le\", \"0\")), \"le\", \"2e0\", \"le\", \"2\") or sum by (le) (label_replace(label_replace(x, \"le\", \"$1\", \"job\", \"j(.)\"), \"le\", \"+Inf\", \"le\", \"0\")))",
    "label_replace(x, \"k\", \"$1\", \"job\", \"j(.)\")",
    // these change with no sample arriving: series 0 stops at 500s and its lookback runs out,
    // series 7 starts at 400s, series 9 has staleness markers
    "absent(x{i=\"0\"})",
    "absent(x{i=\"9\"})",
    "absent_over_time(x{i=\"7\"}[1m])",
    "vector(1) or on() x",
];

/// An empty store in `dir` that keeps everything in the head.
fn open_db(dir: &tempfile::TempDir) -> std::sync::Arc<Db> {
    let opts = DbOptions { block_duration: i64::MAX, compaction_interval: None, ..Default::default() };
    Db::open(dir.path(), opts).unwrap()
}

/// Appends and commits `samples`.
fn store(db: &std::sync::Arc<Db>, samples: &[(Labels, i64, f64)]) {
    let mut app = db.appender();
    for (l, t, v) in samples {
        app.append(l, *t, *v).unwrap();
    }
    app.commit().unwrap();
}

/// Asserts that a view's content equals the batch executor's answer at `t`, values within
/// rounding.
fn assert_close(got: &BTreeMap<Labels, f64>, want: &BTreeMap<Labels, f64>, query: &str, t: i64) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{query} at {t}");
    for (l, w) in want {
        let g = got[l];
        let close = (g - w).abs() <= 1e-9 * w.abs().max(1.0) || (g.is_nan() && w.is_nan());
        assert!(close, "{query} at {t}, {l}: {g} vs {w}");
    }
}

/// Feeds `all` in time order, reading every view of `queries` every 15 s from 5 s to `until`
/// (from its `@` time on) and comparing it with the batch executor over the same store;
/// returns how many reads were compared.
fn assert_views_equal_batch(all: &[(Labels, i64, f64)], queries: &[&str], until: i64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    store(&db, all);
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let views: Vec<(&str, usize, i64)> = queries
        .iter()
        .map(|q| (*q, inc.install(&compile(q)).unwrap(), compile(q).latest_pinned_ms().unwrap_or(0)))
        .collect();
    let (mut next, mut checked) = (0, 0);
    let mut t = 5_000;
    while t <= until {
        let from = next;
        while next < all.len() && all[next].1 <= t {
            next += 1;
        }
        inc.append(&all[from..next]);
        for (query, id, pinned) in &views {
            if t < *pinned {
                continue;
            }
            let want = batch(&db, query, t);
            let got: BTreeMap<Labels, f64> = floats(inc.read(*id, t).unwrap());
            assert_close(&got, &want, query, t);
            checked += 1;
        }
        // only the next evaluation will be read: the views may forget what came before
        inc.compact(t + 1);
        t += 15_000;
    }
    inc.shutdown();
    checked
}

#[test]
fn views_equal_the_batch_executor_at_every_evaluation() {
    let checked = assert_views_equal_batch(&samples(), VIEWS, 1_700_000);
    assert!(checked >= 100 * VIEWS.len(), "{checked}");
}

/// Errors that hold while their cause does, and go with it: the views raise the batch
/// executor's errors at the same evaluations. Matching: series 12 stops at 500 s and leaves the
/// lookback at 800 s, until then `j0` has two series on the "one" side. Duplicate label sets:
/// `y` copies series 1 of `x` until 600 s, so `rate` without a name gives two series one label
/// set until they leave the window.
#[test]
fn views_raise_the_batch_executors_errors_while_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let mut all = samples();
    let copies: Vec<_> = all
        .iter()
        .filter(|(l, t, _)| l.get("i") == "1" && *t < 600_000)
        .map(|(l, t, v)| {
            let mut l = l.clone();
            l.set("__name__", "y");
            (l, *t, *v)
        })
        .collect();
    all.extend(copies);
    all.sort_by_key(|s| s.1);
    store(&db, &all);
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let queries = [
        "x{i=~\"0|4\"} + on(job) group_left x{i=~\"8|12\"}",
        "x{i=~\"8|12\"} > on(job) x{i=\"4\"}",
        "sum(rate({i=\"1\"}[2m]))",
    ];
    let views: Vec<usize> = queries.iter().map(|q| inc.install(&compile(q)).unwrap()).collect();
    let (mut next, mut failed, mut answered) = (0, 0, 0);
    for t in (5_000..=1_000_000).step_by(15_000) {
        let from = next;
        next = all.partition_point(|s| s.1 <= t);
        inc.append(&all[from..next]);
        for (query, view) in queries.iter().zip(&views) {
            let opts = QueryOptions { lookback_ms: LOOKBACK, ..QueryOptions::instant(t) };
            let want = evaluate(&compile(query), db.as_ref(), &opts).map(|_| ()).map_err(|e| e.to_string());
            let got = inc.read(*view, t).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, want, "{query} at {t}");
            if want.is_err() {
                failed += 1;
            } else {
                answered += 1;
            }
        }
        inc.compact(t + 1);
    }
    assert!(failed > 50 && answered > 20, "{failed} failed, {answered} answered");
    inc.shutdown();
}

/// `info()`: `up` of six targets, `target_info` of four whose `version` changes at 5 min
/// (the old series stops at 8 min, so both are there in between: the newer wins), and a
/// `build_info` of two.
fn info_samples() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    let series = |name: &str, pairs: &[(&str, String)]| {
        let mut l = vec![("__name__", name.to_string())];
        l.extend(pairs.iter().cloned());
        Labels::from_pairs(l)
    };
    for t in (0..900_000).step_by(15_000) {
        for i in 0..6 {
            let id = [("instance", format!("h{i}")), ("job", "node".to_string())];
            out.push((series("up", &id), t, (i % 2) as f64));
            if i < 4 {
                let version = if t < 300_000 { "1" } else { "2" };
                if t < 480_000 || version == "2" {
                    let mut l = id.to_vec();
                    l.push(("version", version.to_string()));
                    out.push((series("target_info", &l), t, 1.0));
                }
                if (300_000..480_000).contains(&t) {
                    // the old version, scraped a little earlier while both are there
                    let mut l = id.to_vec();
                    l.push(("version", "1".to_string()));
                    out.push((series("target_info", &l), t - 5_000, 1.0));
                }
            }
            if i < 2 {
                let mut l = id.to_vec();
                l.push(("revision", format!("r{i}")));
                out.push((series("build_info", &l), t, 1.0));
            }
        }
    }
    out.sort_by_key(|s| s.1);
    out.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    out
}

#[test]
fn info_views_equal_the_batch_executor() {
    let queries = [
        "info(up)",
        "info(up, {version=~\".+\"})",
        "info(up, {__name__=~\".+_info\"})",
        "info(up, {__name__=\"build_info\", revision=~\".*\"})",
        "sum by (version) (info(up))",
        "info(target_info)",
    ];
    let checked = assert_views_equal_batch(&info_samples(), &queries, 1_000_000);
    assert_eq!(checked, 67 * queries.len());
}

/// Records out of each operator kind while one sample of one series is appended under
/// `sum by (job) (rate(x[<window>]))`, over `n` series.
fn cost_of_one_sample(n: usize, window: &str) -> Vec<(&'static str, u64)> {
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let view = inc.install(&compile(&format!("sum by (job) (rate(x[{window}]))"))).unwrap();
    let labels: Vec<Labels> = (0..n)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", "x".to_string()),
                ("job", format!("j{}", i % 10)),
                ("i", i.to_string()),
            ])
        })
        .collect();
    for t in [0, 15_000, 30_000] {
        let batch: Vec<(Labels, i64, f64)> = labels.iter().map(|l| (l.clone(), t, t as f64)).collect();
        inc.append(&batch);
    }
    // no tick: only the samples' own events run
    inc.advance(40_000);
    assert_eq!(inc.read(view, 35_000).unwrap().len(), 10);
    let before = inc.records_total();
    inc.append(&[(labels[3].clone(), 45_000, 50_000.0)]);
    inc.advance(50_000);
    inc.read(view, 46_000).unwrap();
    let after = inc.records_total();
    inc.shutdown();
    before.iter().zip(after).map(|((name, b), (_, a))| (*name, a - b)).collect()
}

/// One new sample of one series costs the same records whether the view covers 100 series
/// or 10,000, over a 5-minute or a 1-hour window: the executor is incremental, not a
/// recomputation.
#[test]
fn one_sample_costs_the_same_records_whatever_the_series_count_and_window() {
    let base = cost_of_one_sample(100, "5m");
    for (n, window) in [(10_000, "5m"), (100, "1h"), (10_000, "1h")] {
        assert_eq!(cost_of_one_sample(n, window), base, "{n} series, [{window}]");
    }
    // the series' old and new rate, and its group's old and new sum
    assert_eq!(base, [("series", 2), ("elementwise", 0), ("aggregate", 2), ("join", 0)]);
}

/// Views that share a sub-expression share its arrangement: a second rule over
/// `rate(x[5m])` adds one arrangement (its own result), and an identical rule adds none.
#[test]
fn rules_sharing_a_window_function_share_its_arrangement() {
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let first = inc.install(&compile("sum by (job) (rate(x[5m]))")).unwrap();
    assert_eq!(inc.arrangements(), 2, "rate(x[5m]) and the sum");
    let second = inc.install(&compile("max by (job) (rate(x[5m]))")).unwrap();
    assert_eq!(inc.arrangements(), 3, "the second rule adds its result only");
    inc.install(&compile("sum by (job) (rate(x[5m]))")).unwrap();
    inc.install(&compile("rate(x[5m])")).unwrap();
    assert_eq!(inc.arrangements(), 3, "identical expressions add nothing");

    // the shared arrangement serves both views correctly
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let all = samples();
    store(&db, &all);
    inc.append(&all);
    for (view, query) in [(first, "sum by (job) (rate(x[5m]))"), (second, "max by (job) (rate(x[5m]))")] {
        let got: BTreeMap<Labels, f64> = floats(inc.read(view, 1_300_000).unwrap());
        let want = batch(&db, query, 1_300_000);
        assert_eq!(got.len(), want.len(), "{query}");
        for (l, w) in &want {
            assert!((got[l] - w).abs() <= 1e-9 * w.abs().max(1.0), "{query} {l}: {} vs {w}", got[l]);
        }
    }
    inc.shutdown();
}

/// Uninstalling a view drops what only it needed, keeps what another view shares, and the
/// survivor still equals the batch executor; a view installed again starts afresh.
#[test]
fn uninstalled_views_free_what_only_they_needed() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let all = samples();
    store(&db, &all);
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let shared = inc.install(&compile("sum by (job) (rate(x[5m]))")).unwrap();
    let own = inc.install(&compile("max by (job) (rate(x[5m])) > 0")).unwrap();
    let alone = inc.install(&compile("avg_over_time(x[10m])")).unwrap();
    assert_eq!(inc.arrangements(), 4, "rate(x[5m]), each view's result");
    inc.append(&all);
    let t = 1_300_000;
    inc.read(alone, t).unwrap();
    let kept_with_all = inc.samples_kept();
    assert!(kept_with_all > 0);
    let held =
        |holds: &str| inc.arranged_records().into_iter().find(|(h, _)| *h == holds).map_or(0, |(_, n)| n);
    let selected = all.iter().map(|(l, _, _)| l).collect::<std::collections::HashSet<_>>().len() as i64;
    // the workers log their arrangements' batches as they step: the counts follow shortly
    inc.read(shared, t).unwrap();
    inc.read(own, t).unwrap();
    let counted = std::time::Instant::now();
    while (held("series") < selected || held("view") == 0 || held("operator") == 0)
        && counted.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(held("series") >= selected, "a value per series of x, and of the window's: {}", held("series"));
    assert!(held("view") > 0, "the views' results");
    assert!(held("operator") > 0, "max's reduce arranges its input and output");
    assert_eq!(held("copy"), 0, "one process copies nothing");
    let series_with_all = held("series");

    // `avg_over_time` shares nothing: its operator and its kept samples go
    inc.uninstall(alone);
    assert_eq!(inc.arrangements(), 3);
    assert!(inc.read(alone, t).is_err(), "an uninstalled view is not read");
    let kept = std::time::Instant::now();
    while inc.samples_kept() == kept_with_all && kept.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(inc.samples_kept() < kept_with_all, "the dropped operator's samples are no longer kept");
    while held("series") >= series_with_all && kept.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(held("series") < series_with_all, "avg_over_time's own values are no longer held");
    assert!(held("series") > 0, "rate(x[5m]) stays for the other views");

    // `rate(x[5m])` stays for the first view; only the second view's own arrangement goes
    inc.uninstall(own);
    assert_eq!(inc.arrangements(), 2, "rate(x[5m]) and the sum stay");
    inc.append(&[(Labels::from_pairs([("__name__", "x"), ("job", "a"), ("i", "0")]), 1_310_000, 1e6)]);
    let got: BTreeMap<Labels, f64> = floats(inc.read(shared, 1_320_000).unwrap());
    assert!(!got.is_empty(), "the shared view still follows the samples");
    inc.uninstall(shared);
    assert_eq!(inc.arrangements(), 0);
    assert_eq!(inc.views(), 0);
    // every batch made, merged and dropped is counted: nothing is left held
    let freed = std::time::Instant::now();
    let holding = || inc.arranged_records().into_iter().filter(|(_, n)| *n != 0).collect::<Vec<_>>();
    while !holding().is_empty() && freed.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(holding(), vec![], "the dropped arrangements' records are no longer held");

    // installed again: built anew, and it answers
    let again = inc.install(&compile("sum by (job) (rate(x[5m]))")).unwrap();
    assert_eq!(inc.arrangements(), 2);
    inc.append(&[(Labels::from_pairs([("__name__", "x"), ("job", "a"), ("i", "0")]), 1_330_000, 2e6)]);
    assert!(inc.read(again, 1_340_000).is_ok());
    inc.shutdown();
}

/// What the executor cannot maintain yet is refused with a clear error, and leaves nothing
/// behind.
#[test]
fn unsupported_expressions_are_refused() {
    let inc = Incremental::start(1, LOOKBACK).unwrap();
    let refused = [
        "x offset -5m",
        "x @ start()",
        "predict_linear(x[5m] offset 1m, 60)",
        "rate((x @ 500)[5m:1m])",
        "double_exponential_smoothing(x[5m], 0.5, scalar(x{i=\"1\"}) / 10000)",
        "count_values(\"v\", x)",
        "rate(x[5m] smoothed)",
    ];
    for query in refused {
        let err = inc.install(&compile(query)).unwrap_err().to_string();
        assert!(err.starts_with("not supported by the incremental executor"), "{query}: {err}");
    }
    // what Prometheus fails at every evaluation fails to install, with its message
    for (query, message) in
        [("topk(NaN, x)", "Parameter value is NaN"), ("limit_ratio(NaN, x)", "Ratio value is NaN")]
    {
        let err = inc.install(&compile(query)).unwrap_err().to_string();
        assert!(err.contains(message), "{query}: {err}");
    }
    assert_eq!(inc.arrangements(), 0);
    inc.shutdown();
}

/// Counters of 30 series every 15 s (each with its own phase) over two hours, with resets.
fn two_hours() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for i in 0..30i64 {
        let labels = series_x(i, 3);
        let mut v = 0.0;
        let mut t = i * 400;
        while t <= 7_200_000 {
            v = if t % 1_800_000 < 15_000 && i % 4 == 0 { 1.0 } else { v + (i + 1) as f64 };
            out.push((labels.clone(), t, v));
            t += 15_000;
        }
    }
    out.sort_by_key(|s| s.1);
    out
}

/// Views start from history: a server that (re)starts in the middle of a `[1h]` window loads
/// its views from storage and follows the appends with no gap and no double count, and a
/// rule added later (a reload) starts from history while the others keep going.
#[test]
fn views_start_from_history_in_the_middle_of_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let all = two_hours();
    let append = |from: usize, to: usize| store(&db, &all[from..to]);
    // the restart: 90 minutes of samples are in storage
    let restart = 5_400_000;
    let mut next = all.partition_point(|s| s.1 <= restart);
    append(0, next);
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let mut views = Vec::new();
    // `@ 30m`: a window an hour before the restart's, read from history all the same
    for q in [
        "sum by (job) (rate(x[1h]))",
        "x",
        "increase(x[1h])",
        "rate(x[1h] offset 10m)",
        "sum_over_time(x[10m] @ 1800)",
        // a subquery's steps before the start are the batch executor's
        "max_over_time(rate(x[5m])[30m:1m])",
        "min_over_time(x[10m:1m] @ 1800)",
    ] {
        views.push((q, inc.install_from(&compile(q), db.as_ref(), restart, None).unwrap()));
    }
    let mut t = restart;
    let mut checked = 0;
    while t < 7_200_000 {
        t += 60_000;
        let from = next;
        next = all.partition_point(|s| s.1 <= t);
        append(from, next);
        inc.append(&all[from..next]);
        if t == 6_300_000 {
            // a reload adds a rule that shares rate(x[1h]) and one that needs a new window
            for q in ["max by (job) (rate(x[1h]))", "avg_over_time(x[45m])", "min_over_time(sum(x)[20m:45s])"]
            {
                views.push((q, inc.install_from(&compile(q), db.as_ref(), t, None).unwrap()));
            }
        }
        for (q, id) in &views {
            let want = batch(&db, q, t);
            let got: BTreeMap<Labels, f64> = floats(inc.read(*id, t).unwrap());
            assert_eq!(got.len(), want.len(), "{q} at {t}");
            for (l, w) in &want {
                let g = got.get(l).copied().unwrap_or(f64::NAN);
                assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{q} at {t}, {l}: {g} vs {w}");
            }
            checked += 1;
        }
        inc.compact(t + 1);
    }
    // 14 reads of seven views before the reload, 16 of ten from it on
    assert_eq!(checked, 14 * 7 + 16 * 10);
    inc.shutdown();
}

/// A subscription delivers each change of a view once its time is complete, with no read and
/// no tick: what event-mode alerts run on.
#[test]
fn subscriptions_deliver_each_change_when_its_time_is_complete() {
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let view = inc.install(&compile("sum by (job) (x) > 10")).unwrap();
    let mut changes = inc.subscribe(view, 0, None).unwrap();
    let l = |job: &str, i: &str| Labels::from_pairs([("__name__", "x"), ("job", job), ("i", i)]);
    inc.append(&[(l("a", "1"), 1_000, 4.0), (l("a", "2"), 1_000, 5.0), (l("b", "1"), 1_000, 20.0)]);
    inc.advance(1_500);
    // the first message: the view is empty at the subscription's start
    let first = changes.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(first, (0, ViewChange::Whole(vec![])));
    let job = |j: &str| Arc::new(Labels::from_pairs([("job", j)]));
    let element = |j: &str, was_present, value: Option<f64>| ElementChange {
        labels: job(j),
        was_present,
        value: value.map(Value::float),
    };
    let second = changes.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(second, (1_000, ViewChange::Elements(vec![element("b", false, Some(20.0))])));
    // a crossing: job a's sum goes above 10 at 2 s
    inc.append(&[(l("a", "1"), 2_000, 6.0)]);
    inc.advance(2_001);
    let third = changes.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(third, (2_000, ViewChange::Elements(vec![element("a", false, Some(11.0))])));
    // a changed value is one element (its retraction and addition paired), a departure
    // another; both were present before
    inc.append(&[(l("b", "1"), 2_500, 25.0), (l("a", "1"), 2_500, 1.0)]);
    inc.advance(2_501);
    let (t, change) = changes.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    let ViewChange::Elements(mut elements) = change else { panic!("a change, not the whole view") };
    elements.sort_by(|a, b| a.labels.cmp(&b.labels));
    assert_eq!((t, elements), (2_500, vec![element("a", true, None), element("b", true, Some(25.0))]));
    // nothing is sent for times without a change, but the progress is reported
    inc.advance(3_000);
    assert!(changes.recv_timeout(std::time::Duration::from_millis(300)).is_err());
    assert_eq!(changes.complete_before(), 3_000);
    // unsubscribing ends the subscription on both workers, and with it the senders: the
    // channel disconnects
    inc.unsubscribe(&changes);
    inc.advance(4_000);
    assert_eq!(
        changes.recv_timeout(std::time::Duration::from_secs(10)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
    );
    inc.shutdown();
}

/// A view of constants (`vector(42)`, `absent(…)` of nothing) stays open with the clock: a
/// subscription made after its dataflow has run for a while still gets its first message.
#[test]
fn a_late_subscription_to_a_constant_view_gets_its_first_message() {
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    for (i, query) in ["vector(42)", "absent(nothing)", "vector(1) + 1"].iter().enumerate() {
        let view = inc.install(&compile(query)).unwrap();
        // the workers step the new dataflow, and the clock moves, before anyone subscribes
        let start = 10_000 * (i as i64 + 1);
        inc.advance(start);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut changes = inc.subscribe(view, start, None).unwrap();
        inc.advance(start + 1_000);
        let first = changes.recv_timeout(std::time::Duration::from_secs(10));
        let Ok((t, ViewChange::Whole(elements))) = first else { panic!("{query}: {first:?}") };
        assert_eq!((t, elements.len()), (start, 1), "{query}");
        inc.unsubscribe(&changes);
    }
    inc.shutdown();
}

/// A view with a grain (a recording rule's, read only at its group's evaluation times) equals
/// the batch executor at every time of the grain, with far fewer changes than a view that
/// follows every sample, also when it starts from history.
#[test]
fn views_with_a_grain_equal_the_batch_executor_at_its_times_with_fewer_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let all = samples();
    let queries = ["sum by (job) (rate(x[5m]))", "x", "avg_over_time(x[2m])", "count by (job) (x)"];
    // evaluations every minute, 7 s past the minute
    let grain = Grain::new(60_000, 7_000);
    let fine = Incremental::start(2, LOOKBACK).unwrap();
    let coarse = Incremental::start(2, LOOKBACK).unwrap();
    let install = |inc: &Incremental, g: Option<Grain>, q: &str, t: i64| {
        inc.install_from(&compile(q), db.as_ref(), t, g).unwrap()
    };
    let mut views: Vec<(&str, usize, usize)> = queries[..2]
        .iter()
        .map(|q| (*q, install(&fine, None, q, 0), install(&coarse, Some(grain), q, 0)))
        .collect();
    let check = |views: &[(&str, usize, usize)], t: i64| {
        for (q, f, c) in views {
            let want = batch(&db, q, t);
            for (inc, id, what) in [(&fine, *f, "fine"), (&coarse, *c, "grained")] {
                let got: BTreeMap<Labels, f64> = floats(inc.read(id, t).unwrap());
                assert_eq!(got.len(), want.len(), "{what} {q} at {t}");
                for (l, w) in &want {
                    let g = got.get(l).copied().unwrap_or(f64::NAN);
                    assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{what} {q} at {t}, {l}: {g} vs {w}");
                }
            }
        }
        views.len()
    };
    let (mut next, mut t, mut checked) = (0, 7_000, 0);
    while t < 1_300_000 {
        // half a minute of samples, a clock move (which a view with a grain waits out), the rest
        for until in [t - 30_000, t] {
            let from = next;
            next = all.partition_point(|s| s.1 <= until);
            store(&db, &all[from..next]);
            fine.append(&all[from..next]);
            coarse.append(&all[from..next]);
            if until < t {
                fine.advance(until + 1);
                coarse.advance(until + 1);
            }
        }
        checked += check(&views, t);
        // between its times a view with a grain holds the value of its last one
        let (_, _, c) = views[0];
        assert_eq!(coarse.read(c, t + 5_000).unwrap(), coarse.read(c, t).unwrap());
        if t == 607_000 {
            // a reload: installed after the reads at `t` completed it
            for q in &queries[2..] {
                views.push((q, install(&fine, None, q, t), install(&coarse, Some(grain), q, t)));
            }
        }
        fine.compact(t + 1);
        coarse.compact(t + 1);
        t += 60_000;
    }
    assert_eq!(checked, 22 * 2 + 11 * 2);
    let records = |inc: &Incremental| inc.records_total().iter().map(|(_, n)| n).sum::<u64>();
    let (f, c) = (records(&fine), records(&coarse));
    // samples every 10 to 38 s: several changes a minute per series, one with the grain
    assert!(c * 2 < f, "records with a grain {c}, without {f}");
    fine.shutdown();
    coarse.shutdown();
}

/// Twelve series over 3 hours, every 15 s with jitter: counters with resets, a gap longer
/// than a tail (25 minutes), a series that stops, staleness markers.
fn three_hours() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for i in 0..12i64 {
        let labels = series_x(i, 3);
        let mut v = 0.0;
        for k in 0..720i64 {
            let t = k * 15_000 + (i * 37 + k * 13) % 500;
            let gap = i == 5 && (6_000_000..7_500_000).contains(&t);
            if gap || (i == 6 && t > 7_200_000) {
                continue;
            }
            v = if i % 3 == 0 && k % 40 == 39 { 1.0 } else { v + (i + 1) as f64 };
            let stale = i == 8 && k % 100 == 50;
            out.push((labels.clone(), t, if stale { stale_nan() } else { v }));
        }
    }
    out.sort_by_key(|s| s.1);
    out
}

/// Long windows kept by their ends (the tail read back from storage as the window moves,
/// the newest sample and a count) and `max`/`min_over_time` kept as candidates equal the
/// batch executor at every minute, with and without a grain, through gaps, resets, stale
/// markers, and samples out of order (one inside the window, one older than it), while
/// holding a fraction of the samples a view that keeps every one holds.
#[test]
fn windows_kept_by_their_ends_read_back_storage_and_equal_the_batch_executor() {
    let queries = [
        "increase(x[1h])",
        "rate(x[1h])",
        "delta(x[1h])",
        "count_over_time(x[1h])",
        "last_over_time(x[1h])",
        "present_over_time(x[1h])",
        "sum by (job) (rate(x[1h]))",
        "max_over_time(x[1h])",
        "min_over_time(x[50m])",
        "sum_over_time(x[1h])",
        "avg_over_time(x[1h])",
        "sum by (job) (avg_over_time(x[1h]))",
    ];
    let (kept, all_kept, _) = windows_kept_by_their_ends_equal_the_batch_executor(three_hours(), &queries);
    // the windows kept by their ends hold their tails, the extremes their candidates
    assert!(kept * 3 < all_kept, "kept {kept} of {all_kept}");
}

/// Series sampled every 10 minutes, less often than a tail is long, in windows kept by their
/// ends: each continuation reads on as far as the series' next samples, so every sample is
/// read back about once per view, not the whole window again at every sample.
#[test]
fn sparse_series_read_each_sample_back_about_once() {
    let mut all = Vec::new();
    for i in 0..6i64 {
        let labels = series_x(i, 3);
        for k in 0..18i64 {
            all.push((labels.clone(), k * 600_000 + i * 7_000, (k * (i + 1)) as f64));
        }
    }
    all.sort_by_key(|s| s.1);
    let queries = ["increase(x[1h])", "count_over_time(x[1h])", "sum_over_time(x[1h])"];
    let (_, _, read_back) = windows_kept_by_their_ends_equal_the_batch_executor(all.clone(), &queries);
    // each query is installed twice where windows are kept by their ends (with and without a
    // grain); reading the whole window at every sample read 2.1 times this (checked)
    let once = (queries.len() * 2 * all.len()) as u64;
    assert!(read_back <= once, "{read_back} samples read back, {once} would be each once per view");
}

/// `sum_over_time` and `avg_over_time` kept by their ends fold the samples past the tail by
/// pieces; a window holding a value those sums cannot take as a batch fold does (NaN, an
/// infinity, a value near overflow) keeps every sample while it holds it, and equals the
/// batch executor throughout.
#[test]
fn sums_kept_by_pieces_keep_every_sample_of_a_window_with_unfoldable_values() {
    let mut all = three_hours();
    let at = |s: &(Labels, i64, f64), i: &str, from: i64| s.0.get("i") == i && s.1 >= from;
    let mut changed = [false; 2];
    for s in all.iter_mut() {
        for (n, (i, from, v)) in
            [("1", 6_000_000, f64::NAN), ("4", 8_000_000, f64::INFINITY)].iter().enumerate()
        {
            if !changed[n] && at(s, i, *from) {
                s.2 = *v;
                changed[n] = true;
            }
        }
        // a sum that overflows, where the mean does not
        if at(s, "2", 7_000_000) && s.1 < 8_000_000 {
            s.2 = 1e308;
        }
    }
    let queries = ["sum_over_time(x[1h])", "avg_over_time(x[1h])", "sum by (job) (sum_over_time(x[1h]))"];
    windows_kept_by_their_ends_equal_the_batch_executor(all, &queries);
}

/// Installs `queries` over `all` as views kept by their ends and as views that keep every
/// sample, with and without a grain; feeds the samples minute by minute (with two out of
/// order: one inside the window, one older than it) and compares every view with the batch
/// executor at every minute. Returns the samples the two kinds of views kept at the end, and
/// those the views kept by their ends read back.
fn windows_kept_by_their_ends_equal_the_batch_executor(
    all: Vec<(Labels, i64, f64)>,
    queries: &[&str],
) -> (i64, i64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    db.set_out_of_order_window(7_200_000);
    let grain = Grain::new(60_000, 7_000);
    let ends = Incremental::start(2, LOOKBACK).unwrap();
    ends.read_back_from(db.clone(), 3_600_000);
    let every = Incremental::start(2, LOOKBACK).unwrap();
    let start = 5_400_000 + 7_000;
    let mut next = all.partition_point(|s| s.1 <= start);
    store(&db, &all[..next]);
    let mut views: Vec<(&str, &Incremental, usize)> = Vec::new();
    for &q in queries {
        for (inc, g) in [(&ends, None), (&ends, Some(grain)), (&every, None), (&every, Some(grain))] {
            views.push((q, inc, inc.install_from(&compile(q), db.as_ref(), start, g).unwrap()));
        }
    }
    let late = |i: i64, t: i64| vec![(series_x(i, 3), t, 1e6)];
    let (mut t, mut checked) = (start, 0);
    while t < 10_800_000 {
        t += 60_000;
        let from = next;
        next = all.partition_point(|s| s.1 <= t);
        let mut batch_of = all[from..next].to_vec();
        if t == start + 20 * 60_000 {
            // out of order: inside the window, and older than it
            batch_of.extend(late(2, t - 600_000 + 1));
            batch_of.extend(late(4, t - 4_200_000 + 1));
        }
        store(&db, &batch_of);
        ends.append(&batch_of);
        every.append(&batch_of);
        for (q, inc, id) in &views {
            let want = batch(&db, q, t);
            let got: BTreeMap<Labels, f64> = floats(inc.read(*id, t).unwrap());
            assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{q} at {t}");
            for (l, w) in &want {
                let g = got[l];
                let close = g == *w || (g - w).abs() <= 1e-9 * w.abs().max(1.0) || (g.is_nan() && w.is_nan());
                assert!(close, "{q} at {t}, {l}: {g} vs {w}");
            }
            checked += 1;
        }
        ends.compact(t + 1);
        every.compact(t + 1);
    }
    assert_eq!(checked, 90 * queries.len() * 4);
    let kept = (ends.samples_kept(), every.samples_kept(), ends.read_back_samples());
    ends.shutdown();
    every.shutdown();
    kept
}

/// Expressions the hub holds ([`Incremental::install_hub`]): selections and window functions,
/// arithmetic and comparisons with constants, value functions, aggregations (with members that
/// leave as their series stop), each compared with the batch executor.
const HUB_VIEWS: &[&str] = &[
    "x",
    "x offset 2m",
    "x > 300",
    "abs(x - 1000) * 2",
    "sum by (job) (x)",
    "count by (job) (x > 100)",
    "avg(x)",
    "max without (i) (x)",
    "quantile by (job) (0.9, x)",
    "stddev by (job) (x)",
    "topk by (job) (2, x)",
    "bottomk(3, x)",
    "rate(x[2m])",
    "sum by (job) (rate(x[5m]))",
    "max_over_time(x[1m])",
    "avg_over_time(x[3m] offset 1m)",
    "sort_desc(sum by (job) (x))",
];

/// Hub views installed once [`HUB_VIEWS`] hold content: new nodes over theirs.
const LATE_HUB_VIEWS: &[&str] =
    &["sum by (job) (x > 300)", "abs(x - 1000) * 2 + 1", "max_over_time(x[1m]) * 10", "-sum by (job) (x)"];

/// What a client subscribed to a hub view sees, added up, equals the batch executor at every
/// evaluation, for views installed at the start and later, over nodes that hold content;
/// ending the subscriptions and views frees every node and sample the hub held.
#[test]
fn hub_subscriptions_equal_the_batch_executor_and_free_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let all = samples();
    store(&db, &all);
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let mut views: Vec<_> = HUB_VIEWS
        .iter()
        .map(|q| {
            let view = inc.install_hub(&compile(q), None, None).unwrap_or_else(|e| panic!("{q}: {e}"));
            (*q, view, inc.subscribe(view, 0, None).unwrap(), std::collections::HashMap::new())
        })
        .collect();
    assert!(inc.arrangements() > 0);
    let (mut next, mut checked) = (0, 0);
    let mut t = 5_000;
    while t <= 1_700_000 {
        let from = next;
        while next < all.len() && all[next].1 <= t {
            next += 1;
        }
        inc.append(&all[from..next]);
        inc.complete(t);
        for (query, _, sub, content) in views.iter_mut() {
            sub.follow_through(t, content, std::time::Duration::from_secs(30)).unwrap();
            let want = batch(&db, query, t);
            let got: BTreeMap<Labels, f64> =
                content.iter().map(|(l, v)| (l.clone(), v.as_float().expect("a float"))).collect();
            assert_close(&got, &want, query, t);
            checked += 1;
        }
        if t == 800_000 {
            // late: subscriptions to nodes that hold content (their first message computes it
            // from the leaves up), and new nodes over existing ones (which start from it)
            let late = HUB_VIEWS.iter().chain(LATE_HUB_VIEWS).map(|q| {
                let view = inc.install_hub(&compile(q), None, None).unwrap_or_else(|e| panic!("{q}: {e}"));
                (*q, view, inc.subscribe(view, t, None).unwrap(), std::collections::HashMap::new())
            });
            views.extend(late.collect::<Vec<_>>());
        }
        t += 15_000;
    }
    assert!(checked >= 100 * HUB_VIEWS.len(), "{checked}");
    for (_, view, sub, _) in views.drain(..) {
        inc.unsubscribe(&sub);
        inc.uninstall(view);
    }
    assert_eq!(inc.arrangements(), 0, "every hub node goes with the last view using it");
    let freed = (0..1000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        inc.samples_kept() == 0
    });
    assert!(freed, "the hub's leaves let their samples go: {}", inc.samples_kept());
    inc.shutdown();
}

/// A counter native histogram every 10 s for ten minutes, reset at 5 min, beside a float
/// series of another metric.
fn histogram_samples() -> Vec<(Labels, i64, Value)> {
    use promflow_storage::native_histogram::Span;
    let h = Labels::from_pairs([("__name__", "h"), ("job", "a")]);
    let mut out = Vec::new();
    for k in 0..60i64 {
        let n = (if k < 30 { k } else { k - 30 } + 1) as f64;
        let buckets = [n, 2.0 * n, n];
        let spans = [Span { offset: 0, length: 3 }];
        let hist = promflow_storage::FloatHistogram::from_spans(
            0,
            0.001,
            n,
            5.0 * n,
            3.0 * n,
            (&spans, &buckets),
            (&[], &[]),
            vec![],
        )
        .unwrap();
        out.push((h.clone(), k * 10_000, Value::histogram(std::sync::Arc::new(hist))));
    }
    out
}

#[test]
fn views_over_native_histograms_equal_the_batch_executor() {
    let queries = [
        "h",
        "rate(h[1m])",
        "sum by (job) (rate(h[1m]))",
        "increase(h[125s] anchored)",
        "resets(h[95s] anchored)",
        "histogram_count(h) * 2",
        "histogram_quantile(0.5, rate(h[1m]))",
        "count_over_time(h[1m])",
        "h * 2",
        "h </ 0.5",
        "rate(h[1m]) >/ 0.1",
    ];
    let all = histogram_samples();
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let mut app = db.appender();
    for (l, t, v) in &all {
        app.append_histogram(l, *t, v.as_histogram().unwrap().clone()).unwrap();
    }
    app.commit().unwrap();
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let views: Vec<(&str, usize)> = queries.iter().map(|q| (*q, inc.install(&compile(q)).unwrap())).collect();
    let (mut next, mut histograms) = (0, 0);
    let mut t = 5_000;
    while t <= 660_000 {
        let from = next;
        while next < all.len() && all[next].1 <= t {
            next += 1;
        }
        inc.append(&all[from..next]);
        for (query, id) in &views {
            let opts = QueryOptions { lookback_ms: LOOKBACK, ..QueryOptions::instant(t) };
            let want = evaluate(&compile(query), db.as_ref(), &opts).unwrap();
            let want_floats: BTreeMap<Labels, f64> = match want.result {
                QueryResult::Vector(v) => v.into_iter().map(|(l, _, v)| (l, v)).collect(),
                other => panic!("{query}: {other:?}"),
            };
            let want_hists: BTreeMap<Labels, _> =
                want.histograms.into_iter().map(|s| (s.labels, s.samples[0].h.clone())).collect();
            let (mut got_floats, mut got_hists) = (BTreeMap::new(), BTreeMap::new());
            for (l, v) in inc.read(*id, t).unwrap() {
                match v.unbox() {
                    Unboxed::Float(x) => drop(got_floats.insert(l, x)),
                    Unboxed::Histogram(h) => drop(got_hists.insert(l, h)),
                }
            }
            assert_close(&got_floats, &want_floats, query, t);
            assert_eq!(
                got_hists.keys().collect::<Vec<_>>(),
                want_hists.keys().collect::<Vec<_>>(),
                "{query} at {t}"
            );
            for (l, w) in &want_hists {
                let g = &got_hists[l];
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
                assert!(close(g.count, w.count) && close(g.sum, w.sum), "{query} at {t}: {g:?} vs {w:?}");
                histograms += 1;
            }
        }
        inc.compact(t + 1);
        t += 15_000;
    }
    inc.shutdown();
    assert!(histograms > 100, "only {histograms} histograms compared");
}

/// The append feed names series by storage id: their labels are asked for once per series,
/// not per sample, and again only after storage has removed series (so that the routes of
/// series gone under churn are not kept). The samples reach the views either way.
#[test]
fn the_feed_asks_for_a_series_labels_once_until_storage_removes_series() {
    let inc = Incremental::start(2, LOOKBACK).unwrap();
    let view = inc.install(&compile("sum by (job) (x)")).unwrap();
    let labels = |id: u64| {
        Some(Arc::new(Labels::from_pairs([
            ("__name__", "x".to_string()),
            ("job", format!("j{}", id % 2)),
            ("i", id.to_string()),
        ])))
    };
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let labels_of = |id: u64| {
        asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // id 9 is gone from storage: its samples go nowhere
        if id == 9 {
            None
        } else {
            labels(id)
        }
    };
    let feed = |t: i64, removals: u64| {
        let samples = [1u64, 2, 3, 9].map(|id| (id, t, Value::float(id as f64)));
        inc.append_by_id(samples, removals, labels_of);
    };
    let asked_now = || asked.load(std::sync::atomic::Ordering::Relaxed);
    feed(0, 0);
    assert_eq!(asked_now(), 4);
    feed(15_000, 0);
    assert_eq!(asked_now(), 5, "only the series storage did not know is asked again");
    feed(30_000, 1);
    assert_eq!(asked_now(), 9, "after a removal every series is asked again");
    inc.advance(40_000);
    let sums = floats(inc.read(view, 30_000).unwrap());
    let by_job: Vec<f64> = sums.values().copied().collect();
    assert_eq!(by_job, vec![2.0, 4.0], "{sums:?}");
    inc.shutdown();
}
