//! The incremental executor's first views against the batch executor: at every evaluation
//! time, `x`, `sum by (job) (x)` and `count by (job) (x)` kept current by a dataflow with two
//! timely workers must equal the batch evaluation over the same samples.

use std::collections::BTreeMap;

use promflow_engine::dataflow::{AggKind, Incremental, ViewSpec};
use promflow_engine::{evaluate, QueryOptions, QueryResult};
use promflow_storage::{stale_nan, Db, DbOptions, Labels, MatchOp, Matcher};

const LOOKBACK: i64 = 300_000;

/// Samples of 40 series over 20 minutes: irregular intervals, series that stop (their last
/// sample runs out of lookback), staleness markers, and a series that starts late.
fn samples() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for i in 0..40i64 {
        let labels = Labels::from_pairs([
            ("__name__", "x".to_string()),
            ("job", format!("j{}", i % 4)),
            ("i", i.to_string()),
        ]);
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

fn batch(db: &Db, query: &str, t: i64) -> BTreeMap<Labels, f64> {
    let plan = promflow_promql::compile(query, &Default::default()).unwrap();
    let opts = QueryOptions { lookback_ms: LOOKBACK, ..QueryOptions::instant(t) };
    match evaluate(&plan, db, &opts).unwrap().result {
        QueryResult::Vector(v) => v.into_iter().map(|(l, _, v)| (l, v)).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn views_equal_the_batch_executor_at_every_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        DbOptions { block_duration: i64::MAX, compaction_interval: None, ..Default::default() },
    )
    .unwrap();
    let all = samples();
    let mut app = db.appender();
    for (l, t, v) in &all {
        app.append(l, *t, *v).unwrap();
    }
    app.commit().unwrap();

    let inc = Incremental::start(2).unwrap();
    let x = vec![Matcher::new(MatchOp::Equal, "__name__", "x").unwrap()];
    let views = [
        ("x", inc.install(ViewSpec { matchers: x.clone(), lookback_ms: LOOKBACK, aggregate: None })),
        (
            "sum by (job) (x)",
            inc.install(ViewSpec {
                matchers: x.clone(),
                lookback_ms: LOOKBACK,
                aggregate: Some((AggKind::Sum, vec!["job".into()])),
            }),
        ),
        (
            "count by (job) (x)",
            inc.install(ViewSpec {
                matchers: x,
                lookback_ms: LOOKBACK,
                aggregate: Some((AggKind::Count, vec!["job".into()])),
            }),
        ),
    ];
    let mut next = 0;
    let mut checked = 0;
    let mut t = 5_000;
    while t <= 1_700_000 {
        let from = next;
        while next < all.len() && all[next].1 <= t {
            next += 1;
        }
        inc.append(&all[from..next]);
        inc.advance(t + 1);
        for (query, id) in &views {
            let want = batch(&db, query, t);
            let got: BTreeMap<Labels, f64> = inc.read(*id, t).into_iter().collect();
            assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{query} at {t}");
            for (l, w) in &want {
                let g = got[l];
                assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{query} at {t}, {l}: {g} vs {w}");
            }
            checked += 1;
        }
        // only the next evaluation will be read: the views may forget what came before
        inc.compact(t + 1);
        t += 15_000;
    }
    assert!(checked > 300);
    inc.shutdown();
}

/// One new sample of one series costs the same records whether the view covers 100 series
/// or 10,000: the executor is incremental, not a recomputation.
#[test]
fn one_sample_costs_the_same_records_for_100_and_10k_series() {
    let cost = |n: usize| -> [u64; 2] {
        let inc = Incremental::start(2).unwrap();
        let x = vec![Matcher::new(MatchOp::Equal, "__name__", "x").unwrap()];
        inc.install(ViewSpec {
            matchers: x,
            lookback_ms: LOOKBACK,
            aggregate: Some((AggKind::Sum, vec!["job".into()])),
        });
        let labels: Vec<Labels> = (0..n)
            .map(|i| {
                Labels::from_pairs([
                    ("__name__", "x".to_string()),
                    ("job", format!("j{}", i % 10)),
                    ("i", i.to_string()),
                ])
            })
            .collect();
        let batch: Vec<(Labels, i64, f64)> = labels.iter().map(|l| (l.clone(), 1_000, 1.0)).collect();
        inc.append(&batch);
        inc.advance(2_000);
        inc.read(0, 1_500);
        let before = inc.records_total();
        inc.append(&[(labels[3].clone(), 2_000, 5.0)]);
        inc.advance(3_000);
        inc.read(0, 2_500);
        let after = inc.records_total();
        inc.shutdown();
        [after[0].1 - before[0].1, after[1].1 - before[1].1]
    };
    let (small, large) = (cost(100), cost(10_000));
    assert_eq!(small, large, "records for one sample: {small:?} with 100 series, {large:?} with 10k");
    // the series' old and new value, and its group's old and new sum
    assert_eq!(small, [2, 2]);
}
