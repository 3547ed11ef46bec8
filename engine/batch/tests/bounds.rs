//! The batch executor's bounds inside its operators: a query whose client hangs up (or whose
//! deadline passes) between reading its series and combining them stops in the combining
//! loop, and `count_values` refuses an output larger than the sample limit before it holds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use promflow_batch::evaluate;
use promflow_plan::{Error, QueryOptions};
use promflow_promql::{compile, CompileOptions};
use promflow_storage::{Labels, Matcher, Querier, Samples, Series, Timestamp};

/// Series in memory; selecting `late` finds `big`'s series under that name and cancels the
/// query a second later, as a client that hangs up once the reads are done and the operator that
/// combines them runs (every operator checks before it starts, and every read for each series
/// it reads, so only a check inside the operator's own loop stops it).
struct CancelOnTrigger {
    series: Vec<Series>,
    canceled: Arc<AtomicBool>,
}

impl CancelOnTrigger {
    /// `n` series of `big`, each with a distinct value every second over `0..=secs`.
    fn new(n: usize, secs: i64) -> Self {
        let series = (0..n)
            .map(|i| {
                let t: Vec<Timestamp> = (0..=secs).map(|s| s * 1000).collect();
                let v = t.iter().map(|&t| (t as f64) * 1000.0 + i as f64).collect();
                Series {
                    labels: Labels::from_pairs([("__name__", "big".to_string()), ("i", i.to_string())]),
                    samples: Samples::new(t, v),
                }
            })
            .collect();
        CancelOnTrigger { series, canceled: Arc::new(AtomicBool::new(false)) }
    }

    fn matching(&self, matchers: &[Matcher]) -> Vec<&Series> {
        self.series.iter().filter(|s| matchers.iter().all(|m| m.matches(s.labels.get(&m.name)))).collect()
    }
}

impl Querier for CancelOnTrigger {
    fn select(
        &self,
        matchers: &[Matcher],
        _mint: Timestamp,
        _maxt: Timestamp,
    ) -> Result<Vec<Series>, promflow_storage::Error> {
        if matchers.iter().any(|m| m.name == "__name__" && m.matches("late")) {
            let canceled = self.canceled.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(1));
                canceled.store(true, Ordering::Relaxed);
            });
            let renamed = self.series.iter().map(|s| {
                let mut labels = s.labels.clone();
                labels.set("__name__", "late");
                Series { labels, samples: s.samples.clone() }
            });
            return Ok(renamed.collect());
        }
        Ok(self.matching(matchers).into_iter().cloned().collect())
    }

    fn select_histograms(
        &self,
        _matchers: &[Matcher],
        _mint: Timestamp,
        _maxt: Timestamp,
    ) -> Result<Vec<promflow_storage::HistogramSeries>, promflow_storage::Error> {
        Ok(Vec::new())
    }

    fn select_start_timestamps(
        &self,
        _matchers: &[Matcher],
        _mint: Timestamp,
        _maxt: Timestamp,
    ) -> Result<Vec<promflow_storage::StartTimestamps>, promflow_storage::Error> {
        Ok(Vec::new())
    }

    fn series(
        &self,
        matchers: &[Matcher],
        _mint: Timestamp,
        _maxt: Timestamp,
    ) -> Result<Vec<Labels>, promflow_storage::Error> {
        Ok(self.matching(matchers).into_iter().map(|s| s.labels.clone()).collect())
    }

    fn label_names(
        &self,
        _matchers: &[Matcher],
        _mint: Timestamp,
        _maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        Ok(Vec::new())
    }

    fn label_values(
        &self,
        _name: &str,
        _matchers: &[Matcher],
        _mint: Timestamp,
        _maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        Ok(Vec::new())
    }
}

fn range_options(secs: i64, max_samples: usize, canceled: Option<Arc<AtomicBool>>) -> QueryOptions {
    QueryOptions {
        end: secs * 1000,
        step: 1000,
        max_samples,
        canceled,
        range_query: true,
        ..QueryOptions::instant(0)
    }
}

fn run(store: &CancelOnTrigger, query: &str, opts: &QueryOptions) -> Result<usize, Error> {
    let plan = compile(query, &CompileOptions::default()).expect(query);
    evaluate(&plan, store, opts).map(|e| match e.result {
        promflow_plan::QueryResult::Matrix(m) => m.len(),
        other => panic!("{query}: not a matrix: {other:?}"),
    })
}

#[test]
fn a_canceled_query_stops_inside_a_join() {
    // 1,000 series × 1,001 steps: reading `late` takes about 0.2 s in a debug build, the
    // join about 3 s, and the query is canceled a second after `late` is read
    let store = CancelOnTrigger::new(1_000, 1_000);
    let query = "big + on(i) group_left late";
    let opts = range_options(1_000, 50_000_000, Some(store.canceled.clone()));
    let started = std::time::Instant::now();
    let outcome = run(&store, query, &opts);
    assert!(matches!(outcome, Err(Error::Canceled)), "{query}: {outcome:?} after {:?}", started.elapsed());
    // not canceled, it answers
    assert_eq!(run(&store, query, &range_options(1_000, 50_000_000, None)).unwrap(), 1_000);
}

#[test]
fn count_values_refuses_an_output_beyond_the_sample_limit() {
    // 50 series × 101 steps, every value distinct: 5,050 output series of 101 steps each
    let store = CancelOnTrigger::new(50, 100);
    let outcome = run(&store, r#"count_values("v", big)"#, &range_options(100, 100_000, None));
    assert!(matches!(outcome, Err(Error::TooManySamples(_))), "{outcome:?}");
    assert_eq!(
        run(&store, r#"count_values("v", big)"#, &range_options(100, 1_000_000, None)).unwrap(),
        5_050
    );
}
