//! Aggregations evaluated in parts: the parts of an aggregation over two disjoint halves of
//! the series, combined by the executor, answer as the aggregation over all of them does.

use std::sync::atomic::{AtomicUsize, Ordering};

use promflow_batch::{evaluate, evaluate_partial, evaluate_with, AggregatePushdown, PartialAggregate, Steps};
use promflow_plan::{Plan, QueryOptions, QueryResult};
use promflow_promql::{compile, CompileOptions};
use promflow_storage::{Labels, Samples, Series};

mod common;
use common::Memory;

/// The parts of every aggregation asked, over the two halves, counted.
struct Halves {
    halves: [Memory; 2],
    opts: QueryOptions,
    asked: AtomicUsize,
}

impl AggregatePushdown for Halves {
    fn partials(&self, aggregate: &Plan, steps: Steps, _: bool) -> Option<Vec<PartialAggregate>> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.halves.iter().map(|h| evaluate_partial(aggregate, h, &self.opts, steps).ok()).collect()
    }
}

/// 24 series of two metrics over 30 minutes at 15 s: counters that reset now and then, a
/// gauge with a NaN and gaps.
fn all_series() -> Vec<Series> {
    let mut out = Vec::new();
    for job in ["api", "web", "db"] {
        for i in 0..4 {
            let t: Vec<i64> = (0..=120).map(|k| k * 15_000).collect();
            let v = t.iter().enumerate().map(|(k, _)| ((k * (i + 1)) % 50) as f64 * 1.5).collect();
            let labels = Labels::from_pairs([
                ("__name__", "requests_total".to_string()),
                ("job", job.to_string()),
                ("instance", i.to_string()),
            ]);
            out.push(Series { labels, samples: Samples::new(t, v) });
            // a gauge missing every seventh sample, NaN once
            let t: Vec<i64> = (0..=120).filter(|k| k % 7 != i as i64).map(|k| k * 15_000).collect();
            let v = t
                .iter()
                .map(|&t| {
                    if t == 600_000 && i == 2 {
                        f64::NAN
                    } else {
                        (t / 15_000 % 13) as f64 - 4.0 + i as f64 * 0.1
                    }
                })
                .collect();
            let labels = Labels::from_pairs([
                ("__name__", "temperature".to_string()),
                ("job", job.to_string()),
                ("instance", i.to_string()),
            ]);
            out.push(Series { labels, samples: Samples::new(t, v) });
        }
    }
    out
}

#[test]
fn parts_over_halves_combine_to_the_whole() {
    let series = all_series();
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for (k, s) in series.iter().enumerate() {
        if (k / 2) % 2 == 0 { &mut even } else { &mut odd }.push(s.clone());
    }
    let all = Memory(series);
    let queries = [
        "sum(requests_total)",
        "sum by (job) (rate(requests_total[5m]))",
        "sum without (instance) (increase(requests_total[10m]))",
        "avg by (instance) (temperature)",
        "min by (job) (temperature)",
        "max(temperature * 2 - 1)",
        "count by (job) (temperature > -3)",
        "group by (job) (temperature)",
        "avg(avg_over_time(temperature[3m]))",
        "max_over_time(sum(rate(requests_total[5m]))[10m:1m])",
        "sum by (job) (rate(requests_total[5m])) / on (job) count by (job) (temperature)",
    ];
    for q in queries {
        for (start, end, step) in [(1_200_000, 1_200_000, 1), (300_000, 1_800_000, 30_000)] {
            let range = start != end;
            let opts = QueryOptions { start, end, step, range_query: range, ..QueryOptions::instant(start) };
            let plan = compile(q, &CompileOptions::default()).unwrap();
            let whole = evaluate(&plan, &all, &opts).unwrap();
            let halves = Halves {
                halves: [Memory(even.clone()), Memory(odd.clone())],
                opts: opts.clone(),
                asked: AtomicUsize::new(0),
            };
            let parts = evaluate_with(&plan, &all, &opts, Some(&halves)).unwrap();
            assert!(halves.asked.load(Ordering::Relaxed) > 0, "{q}: no aggregation was asked in parts");
            assert_close(&parts.result, &whole.result, q);
        }
    }
}

/// `a` and `b` hold the same series and points, values within a relative 1e-12.
fn assert_close(a: &QueryResult, b: &QueryResult, q: &str) {
    let points = |r: &QueryResult| -> Vec<(Labels, i64, f64)> {
        match r {
            QueryResult::Vector(v) => v.clone(),
            QueryResult::Matrix(m) => {
                m.iter().flat_map(|s| s.samples.iter().map(|x| (s.labels.clone(), x.t, x.v))).collect()
            }
            other => panic!("{q}: unexpected {other:?}"),
        }
    };
    let (a, b) = (points(a), points(b));
    assert_eq!(a.len(), b.len(), "{q}: {a:?} vs {b:?}");
    assert!(!a.is_empty(), "{q}: no points");
    for ((la, ta, va), (lb, tb, vb)) in a.iter().zip(&b) {
        let close = (va.is_nan() && vb.is_nan()) || (va - vb).abs() <= 1e-12 * va.abs().max(vb.abs());
        assert!(la == lb && ta == tb && close, "{q}: {la:?} {ta} {va} vs {lb:?} {tb} {vb}");
    }
}

/// A part of an average whose members' sum overflows is refused (the aggregation is then
/// evaluated over the merged samples, where the mean of `±1e307`s is 0), not sent as ±Inf.
#[test]
fn an_average_whose_part_overflows_is_not_evaluated_in_parts() {
    let big = |point: &str, v: f64| Series {
        labels: Labels::from_pairs([("__name__", "data".to_string()), ("point", point.to_string())]),
        samples: Samples::new(vec![0], vec![v]),
    };
    let part = Memory(vec![big("a", 9.9e307), big("b", 9.9e307)]);
    let opts = QueryOptions::instant(0);
    let steps = Steps { start: 0, end: 0, step: 1, query_start: 0, query_end: 0 };
    let compile_opts = CompileOptions {
        default_subquery_step: std::time::Duration::from_secs(60),
        step: std::time::Duration::ZERO,
        range: std::time::Duration::ZERO,
    };
    let plan = compile("avg(data)", &compile_opts).unwrap();
    assert!(evaluate_partial(&plan, &part, &opts, steps).is_err());
    let sum = compile("sum(data)", &compile_opts).unwrap();
    assert!(
        evaluate_partial(&sum, &part, &opts, steps).is_ok(),
        "a sum that overflows is +Inf in one process too"
    );
}
