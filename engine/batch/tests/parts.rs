//! Aggregations evaluated in parts: the parts of an aggregation over two disjoint halves of
//! the series, combined by the executor, answer as the aggregation over all of them does.

use std::sync::atomic::{AtomicUsize, Ordering};

use promflow_batch::{evaluate, evaluate_partial, evaluate_with, AggregatePushdown, PartialAggregate, Steps};
use promflow_plan::{Plan, QueryOptions, QueryResult};
use promflow_promql::{compile, CompileOptions};
use promflow_storage::{Labels, Samples, Series};

mod common;
use common::Memory;

/// The parts of every aggregation asked, over the two halves, counted, and the parts the
/// executor did not use.
struct Halves {
    halves: [Memory; 2],
    opts: QueryOptions,
    asked: AtomicUsize,
    unused: AtomicUsize,
}

impl Halves {
    fn new(halves: [Memory; 2], opts: &QueryOptions) -> Halves {
        Halves { halves, opts: opts.clone(), asked: AtomicUsize::new(0), unused: AtomicUsize::new(0) }
    }
}

impl AggregatePushdown for Halves {
    fn partials(&self, aggregate: &Plan, steps: Steps, _: bool) -> Option<Vec<PartialAggregate>> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.halves.iter().map(|h| evaluate_partial(aggregate, h, &self.opts, steps).ok()).collect()
    }

    fn parts_unused(&self) {
        self.unused.fetch_add(1, Ordering::Relaxed);
    }
}

/// The series alternately in one half and the other, two at a time.
fn halves(series: &[Series]) -> [Memory; 2] {
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for (k, s) in series.iter().enumerate() {
        if (k / 2) % 2 == 0 { &mut even } else { &mut odd }.push(s.clone());
    }
    [Memory(even), Memory(odd)]
}

/// An instant query at 20 minutes and a range query over 25 minutes at 30 s.
fn instant_and_range() -> [QueryOptions; 2] {
    [(1_200_000, 1_200_000, 1), (300_000, 1_800_000, 30_000)].map(|(start, end, step)| QueryOptions {
        start,
        end,
        step,
        range_query: start != end,
        ..QueryOptions::instant(start)
    })
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
    let all = Memory(series.clone());
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
        "count_values(\"value\", temperature)",
        "count_values without (instance) (\"value\", requests_total)",
        // the jobs' series are equal: ties everywhere, which the executor settles itself
        "topk(3, requests_total)",
        "bottomk by (job) (2, rate(requests_total[5m]))",
        "quantile by (job) (0.9, rate(requests_total[5m]))",
        "stddev by (job) (temperature)",
        "stdvar(requests_total)",
    ];
    for q in queries {
        for opts in instant_and_range() {
            let plan = compile(q, &CompileOptions::default()).unwrap();
            let whole = evaluate(&plan, &all, &opts).unwrap();
            let halves = Halves::new(halves(&series), &opts);
            let parts = evaluate_with(&plan, &all, &opts, Some(&halves)).unwrap();
            assert!(halves.asked.load(Ordering::Relaxed) > 0, "{q}: no aggregation was asked in parts");
            assert_close(&parts.result, &whole.result, q);
        }
    }
}

/// `topk` and `bottomk` combine the members each part ranks when no tie decides what one
/// evaluation keeps, and the executor evaluates them itself where one does: the answers
/// (instant ones in their order by value) are the same either way.
#[test]
fn ranked_parts_combine_unless_ties_decide() {
    let mut series = Vec::new();
    for (j, job) in ["api", "web", "db"].into_iter().enumerate() {
        for i in 0..5 {
            let t: Vec<i64> = (0..=120).map(|k| k * 15_000).collect();
            // apart by at least 10 at every step; the rates differ too
            let slope = 0.001 * (j * 5 + i + 1) as f64;
            let v = (0..=120).map(|k| 1000.0 * j as f64 + 10.0 * i as f64 + k as f64 * slope).collect();
            let labels = Labels::from_pairs([
                ("__name__", "queue_length".to_string()),
                ("job", job.to_string()),
                ("instance", i.to_string()),
            ]);
            series.push(Series { labels, samples: Samples::new(t, v) });
        }
    }
    let all = Memory(series.clone());
    // (query, whether the parts settle it at both steps)
    let cases = [
        ("topk(3, queue_length)", true),
        ("bottomk(4, queue_length)", true),
        ("topk by (job) (2, queue_length)", true),
        ("bottomk without (instance) (1, rate(queue_length[5m]))", true),
        ("topk(100, queue_length)", true),
        ("topk(0, queue_length)", true),
        ("topk(2, queue_length * 0)", false),
        ("bottomk by (instance) (2, queue_length > 10000)", true),
    ];
    for (q, settled) in cases {
        for opts in instant_and_range() {
            let plan = compile(q, &CompileOptions::default()).unwrap();
            let whole = evaluate(&plan, &all, &opts).unwrap();
            let halves = Halves::new(halves(&series), &opts);
            let parts = evaluate_with(&plan, &all, &opts, Some(&halves)).unwrap();
            assert_eq!(halves.asked.load(Ordering::Relaxed), 1, "{q}");
            assert_eq!(halves.unused.load(Ordering::Relaxed) == 0, settled, "{q}: parts used");
            let empty = match &whole.result {
                QueryResult::Vector(v) => v.is_empty(),
                QueryResult::Matrix(m) => m.is_empty(),
                _ => false,
            };
            if empty {
                assert_eq!(parts.result, whole.result, "{q}");
            } else {
                assert_close(&parts.result, &whole.result, q);
            }
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

/// `count` series of two metrics in two zones, one a host, at five steps a minute apart
/// (with `gaps`, each step missing one time in five), each value drawn from `values`.
fn random_series(next: &mut impl FnMut(u64) -> u64, count: u64, values: &[f64], gaps: bool) -> Vec<Series> {
    (0..count)
        .map(|i| {
            let t: Vec<i64> = (0..=4).filter(|_| !gaps || next(5) > 0).map(|k| k * 60_000).collect();
            let v = t.iter().map(|_| values[next(values.len() as u64) as usize]).collect();
            let labels = Labels::from_pairs([
                ("__name__", ["load", "util"][next(2) as usize].to_string()),
                ("zone", ["a", "b"][next(2) as usize].to_string()),
                ("host", format!("h{i:02}")),
            ]);
            Series { labels, samples: Samples::new(t, v) }
        })
        .collect()
}

/// `series` split at random into two parts, each in the order given.
fn split_at_random(next: &mut impl FnMut(u64) -> u64, series: &[Series]) -> [Vec<Series>; 2] {
    let mut split = [Vec::new(), Vec::new()];
    for s in series {
        split[next(2) as usize].push(s.clone());
    }
    split
}

/// Over many small random cases full of ties and NaNs, split at random between two parts,
/// `topk` and `bottomk` from the parts answer as one evaluation does, whether the parts
/// settle them or the executor evaluates them itself; and the parts settle some.
#[test]
fn ranked_parts_answer_as_one_evaluation_over_random_ties() {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut next = move |below: u64| rng.u64(..below);
    let mut settled = 0;
    for case in 0..300 {
        let count = 8 + next(8);
        let series = random_series(&mut next, count, &[0.0, 1.0, 2.0, 2.5, 7.0, f64::NAN], false);
        let split = split_at_random(&mut next, &series);
        let op = ["topk", "bottomk"][next(2) as usize];
        let by = ["", " by (zone)"][next(2) as usize];
        // the metric names dropped or not: the parts meet the members in another order then
        let input = ["{__name__=~\"load|util\"}", "{__name__=~\"load|util\"} * 1"][next(2) as usize];
        let q = format!("{op}{by} ({}, {input})", 1 + next(4));
        let all = Memory(series);
        for opts in [
            QueryOptions::instant(240_000),
            QueryOptions {
                start: 0,
                end: 240_000,
                step: 60_000,
                range_query: true,
                ..QueryOptions::instant(0)
            },
        ] {
            let plan = compile(&q, &CompileOptions::default()).unwrap();
            let whole = evaluate(&plan, &all, &opts).unwrap();
            let halves = Halves::new([Memory(split[0].clone()), Memory(split[1].clone())], &opts);
            let parts = evaluate_with(&plan, &all, &opts, Some(&halves)).unwrap();
            assert_eq!(format!("{:?}", parts.result), format!("{:?}", whole.result), "case {case}: {q}");
            settled += usize::from(halves.unused.load(Ordering::Relaxed) == 0);
        }
    }
    assert!(settled > 30, "only {settled} of 600 settled by the parts");
}

/// Over random cases split at random between two parts, `quantile`, `stddev` and `stdvar`
/// from their members' parts answer bit for bit as one evaluation does, annotations included.
/// A standard deviation or variance over an input that drops metric names is not asked of
/// the parts (the order of its members, which its sum follows, goes with the names) unless
/// names are removed late.
#[test]
fn member_parts_answer_bit_for_bit_as_one_evaluation() {
    let mut rng = fastrand::Rng::with_seed(0x5851_f42d_4c95_7f2d);
    let mut next = move |below: u64| rng.u64(..below);
    let mut asked_over_dropped_names = 0;
    for case in 0..300 {
        let count = 4 + next(12);
        let mut series =
            random_series(&mut next, count, &[0.1, 0.7, 1e-3, 3.3, 1e6 + 0.1, -2.2, f64::NAN], true);
        // in label order, as storage's queriers select them
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        let split = split_at_random(&mut next, &series);
        let ops = [
            "quantile(0.9, ",
            "quantile(1.5, ",
            "quantile by (zone) (0.25, ",
            "stddev(",
            "stdvar by (zone) (",
        ];
        let op = ops[next(ops.len() as u64) as usize];
        let names_dropped = next(2) == 1;
        let input = if names_dropped { "{__name__=~\"load|util\"} * 1" } else { "{__name__=~\"load|util\"}" };
        let q = format!("{op}{input})");
        let delayed_name_removal = next(2) == 1;
        let all = Memory(series);
        for opts in [
            QueryOptions::instant(240_000),
            QueryOptions {
                start: 0,
                end: 240_000,
                step: 60_000,
                range_query: true,
                ..QueryOptions::instant(0)
            },
        ] {
            let opts = QueryOptions { delayed_name_removal, ..opts };
            let plan = compile(&q, &CompileOptions::default()).unwrap();
            let whole = evaluate(&plan, &all, &opts).unwrap();
            let halves = Halves::new([Memory(split[0].clone()), Memory(split[1].clone())], &opts);
            let parts = evaluate_with(&plan, &all, &opts, Some(&halves)).unwrap();
            let context = format!("case {case}: {q}, names removed late: {delayed_name_removal}");
            assert_eq!(format!("{:?}", parts.result), format!("{:?}", whole.result), "{context}");
            assert_eq!(parts.annotations.entries(), whole.annotations.entries(), "{context}");
            let asked = halves.asked.load(Ordering::Relaxed) > 0;
            let order_lost = op.starts_with("std") && names_dropped && !delayed_name_removal;
            assert_eq!(asked, !order_lost, "{context}");
            assert_eq!(halves.unused.load(Ordering::Relaxed), 0, "{context}");
            asked_over_dropped_names += usize::from(asked && names_dropped && op.starts_with("std"));
        }
    }
    assert!(asked_over_dropped_names > 10, "names removed late: {asked_over_dropped_names} cases asked");
}
