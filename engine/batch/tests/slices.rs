//! Long range queries over the sample limit evaluated a slice of steps at a time: each step's
//! value is the instant query's at that step (Prometheus's definition of a range query), the
//! sample limit bounds a slice rather than the whole range, and the joined result's points
//! count against it.

use promflow_batch::evaluate;
use promflow_plan::{Error, QueryOptions, QueryResult};
use promflow_promql::{compile, CompileOptions};
use promflow_storage::{Labels, Samples, Series};

mod common;
use common::Memory;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// 20 counters over three days, a sample a minute, each with its own rate and a reset at
/// its own hour.
fn three_days() -> Memory {
    Memory(
        (0..20)
            .map(|i| {
                let t: Vec<i64> = (0..3 * 24 * 60).map(|k| k * MINUTE).collect();
                let reset_at = (i as i64 * 3 + 5) * HOUR;
                let v = t.iter().map(|&t| ((t % reset_at) / MINUTE) as f64 * (i + 1) as f64).collect();
                let labels = Labels::from_pairs([
                    ("__name__", "requests_total".to_string()),
                    ("job", ["api", "web"][i % 2].to_string()),
                    ("instance", i.to_string()),
                ]);
                Series { labels, samples: Samples::new(t, v) }
            })
            .collect(),
    )
}

fn options(start: i64, end: i64, step: i64, max_samples: usize) -> QueryOptions {
    QueryOptions { start, end, step, range_query: start != end, max_samples, ..QueryOptions::instant(start) }
}

fn run(store: &Memory, query: &str, opts: &QueryOptions) -> Result<QueryResult, Error> {
    let range = std::time::Duration::from_millis((opts.end - opts.start) as u64);
    let compile_opts = CompileOptions {
        default_subquery_step: std::time::Duration::from_secs(60),
        step: std::time::Duration::from_millis(opts.step as u64),
        range,
    };
    let plan = compile(query, &compile_opts).map_err(|e| Error::Plan(e.to_string()))?;
    evaluate(&plan, store, opts).map(|e| e.result)
}

/// The matrix's points as (series, time, value).
fn points(r: &QueryResult) -> Vec<(String, i64, f64)> {
    let QueryResult::Matrix(series) = r else { panic!("not a matrix: {r:?}") };
    series.iter().flat_map(|s| s.samples.iter().map(move |p| (s.labels.to_string(), p.t, p.v))).collect()
}

#[test]
fn each_step_of_a_sliced_range_query_is_the_instant_query_at_that_step() {
    let store = three_days();
    let (start, end, step) = (2 * HOUR + 30_000, 3 * 24 * HOUR - 30_000, HOUR);
    // `@ start()` and `@ end()` are the query's, not a slice's: at each step the instant
    // query names the range query's first and last step
    // (the rate, 0 at every step, makes the query read more than the limit, so it is sliced)
    let at = format!(
        "requests_total @ {} - requests_total @ {} + 0 * rate(requests_total[1h])",
        end as f64 / 1000.0,
        start as f64 / 1000.0
    );
    for (query, instant) in [
        ("sum by (job) (rate(requests_total[1h]))", None),
        ("rate(requests_total[1h])", None),
        ("max_over_time(requests_total[2h])", None),
        (
            "requests_total @ end() - requests_total @ start() + 0 * rate(requests_total[1h])",
            Some(at.as_str()),
        ),
        ("max_over_time(rate(requests_total[10m])[1h:5m])", None),
    ] {
        // 20 series × 3 days of samples are over the limit: a day of steps at a time, which fits
        let sliced = run(&store, query, &options(start, end, step, 40_000)).unwrap();
        let got = points(&sliced);
        let mut want = Vec::new();
        let mut t = start;
        while t <= end {
            match run(&store, instant.unwrap_or(query), &options(t, t, 1, 40_000)).unwrap() {
                QueryResult::Vector(v) => want.extend(v.into_iter().map(|(l, _, v)| (l.to_string(), t, v))),
                other => panic!("{query} at {t}: {other:?}"),
            }
            t += step;
        }
        want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        assert!(!want.is_empty(), "{query}");
        assert_eq!(got.len(), want.len(), "{query}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.0 == w.0 && g.1 == w.1 && (g.2 - w.2).abs() <= 1e-9 * w.2.abs().max(1.0),
                "{query}: {g:?} against {w:?}"
            );
        }
    }
}

#[test]
fn a_slice_over_the_sample_limit_is_split_and_the_joined_points_count_against_it() {
    let store = three_days();
    let (start, end) = (2 * HOUR, 3 * 24 * HOUR - MINUTE);
    // a day of 20 series (28,800 samples and a window) is over 20,000: halves are not
    let query = "rate(requests_total[1h])";
    let split = run(&store, query, &options(start, end, HOUR, 20_000)).unwrap();
    assert_eq!(points(&split), points(&run(&store, query, &options(start, end, HOUR, 40_000)).unwrap()));
    // each step alone reads little, but the 20 series × 70 steps answered are 1,400 points
    let refused = run(&store, "requests_total", &options(start, end, HOUR, 1_000));
    assert!(matches!(refused, Err(Error::TooManySamples(_))), "{refused:?}");
    assert!(run(&store, "requests_total", &options(start, end, HOUR, 2_000)).is_ok());
}
