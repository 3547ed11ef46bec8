//! Prometheus's PromQL corpus asked of 3-node clusters and of one process fed the same
//! samples: each eval of each file, instant or range, gets the same answer from a cluster
//! (whichever node is asked, with one copy of each series or two) as from the one process.
//! The corpus's own expectations are the conformance test's (`tests/promql_conformance.rs`);
//! this one checks that spreading the series over nodes changes no answer.

use promflow_promql::notation::Slot;
use promflow_remote::{Histogram, Sample, TimeSeries};
use promflow_storage::{stale_nan, Labels};
use serde_json::Value;

use crate::cluster::start_cluster;
use crate::common::*;
use crate::promql_script::{self, commands, eval_line, EvalLine};

/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// The flags both the cluster's nodes and the one process run with: remote write in, and
/// blocks long enough that a corpus segment's days of samples stay in the head (a segment's
/// later `load` may write samples before an earlier one's newest).
const FLAGS: [&str; 2] = ["--web.enable-remote-write-receiver", "--storage.tsdb.min-block-duration=100y"];

/// A load's series as remote-write entries: the samples of each series in time order, cut
/// into one entry per run of floats or of histograms, so that a series that turns from
/// floats into histograms is written in the order of its samples.
fn entries(load: &promql_script::Load, offset: i64) -> Vec<TimeSeries> {
    let mut out: Vec<TimeSeries> = Vec::new();
    let mut last: Option<(&Labels, bool)> = None;
    for (labels, t, slot, _start) in load.samples() {
        let t = t + offset;
        let histogram = matches!(slot, Slot::Histogram(_));
        if last != Some((labels, histogram)) {
            let pairs: Vec<(&str, &str)> =
                labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
            out.push(series(&pairs, &[]));
            last = Some((labels, histogram));
        }
        let entry = out.last_mut().unwrap();
        match slot {
            Slot::Value(v) => entry.samples.push(Sample { timestamp: t, value: *v }),
            Slot::Stale => entry.samples.push(Sample { timestamp: t, value: stale_nan() }),
            Slot::Histogram(h) => entry.histograms.push(Histogram::from_float_histogram(t, h)),
            Slot::Empty => {}
        }
    }
    out
}

/// The last time a segment's commands name: its newest sample and its last evaluation.
fn segment_span(segment: &[(usize, Vec<String>)]) -> i64 {
    let mut span = 0;
    for (_, block) in segment {
        let head = block[0].to_lowercase();
        if head.starts_with("load") {
            let load = promql_script::load(block);
            span = span.max(load.samples().map(|s| s.1).max().unwrap_or(0));
        } else if let Ok(e) = eval_line(&block[0]) {
            span = span.max(e.end);
        }
    }
    span
}

/// `query` with each `@ <number>` moved by `offset` milliseconds, as the segment's samples are.
fn shifted(query: &str, offset: i64) -> String {
    let at = regex::Regex::new(r"@\s*(-?[0-9]+(?:\.[0-9]+)?)").unwrap();
    at.replace_all(query, |c: &regex::Captures| {
        let seconds: f64 = c[1].parse().unwrap();
        format!("@ {:.3}", seconds + offset as f64 / 1000.0)
    })
    .into_owned()
}

/// The API path that asks `eval` of a segment moved by `offset`.
fn eval_path(eval: &EvalLine, query: &str, offset: i64) -> String {
    let seconds = |ms: i64| format!("{:.3}", (ms + offset) as f64 / 1000.0);
    if eval.instant {
        format!("/api/v1/query?query={}&time={}", urlencode(query), seconds(eval.start))
    } else {
        format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={:.3}",
            urlencode(query),
            seconds(eval.start),
            seconds(eval.end),
            eval.step as f64 / 1000.0
        )
    }
}

/// What of an answer must agree: the status, the error type, the series and their values
/// (in order for `eval_ordered`), and the annotations.
fn differs(want: &(u16, Value), got: &(u16, Value), ordered: bool) -> Option<String> {
    let ((ws, w), (gs, g)) = (want, got);
    if ws != gs || w["errorType"] != g["errorType"] {
        return Some(format!("status {gs} {} against {ws} {}", g["error"], w["error"]));
    }
    if *ws != 200 {
        return None;
    }
    let sorted = |v: &Value| {
        let mut a: Vec<String> = v.as_array().into_iter().flatten().map(Value::to_string).collect();
        a.sort();
        a
    };
    for key in ["warnings", "infos"] {
        if sorted(&w[key]) != sorted(&g[key]) {
            return Some(format!("{key} {} against {}", g[key], w[key]));
        }
    }
    if ordered {
        let order = |v: &Value| result(v).iter().map(|s| s["metric"].to_string()).collect::<Vec<_>>();
        if order(w) != order(g) {
            return Some(format!("order {:?} against {:?}", order(g), order(w)));
        }
    }
    same(&canonical(g), &canonical(w)).err()
}

/// Every eval of the PromQL corpus answers alike on a 3-node cluster with one copy of each
/// series, on one with two copies, whichever node is asked, and on one process. Each
/// `clear`-separated segment of each file is loaded by remote write (to the next node in
/// turn) at its own offset in time, days after the one before, and its evals (and `@` times)
/// are moved by the same offset.
#[test]
fn the_promql_corpus_answers_alike_on_a_cluster() {
    let files = promql_script::corpus_files();
    if files.is_empty() {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "the PromQL corpus is missing");
        println!("promql corpus not found: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["single", "r1", "r2"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let single = start_promflow(&dir.path().join("single"), "", &FLAGS);
    // a cluster that keeps one copy of each series, and one that keeps two
    let clusters: Vec<(usize, Vec<Server>)> = [1, 2]
        .into_iter()
        .map(|r| {
            let mut flags = FLAGS.to_vec();
            let replication = format!("--cluster.replication-factor={r}");
            flags.push(&replication);
            (r, start_cluster(&dir.path().join(format!("r{r}")), 3, "", &flags))
        })
        .collect();
    let (mut offset, mut asked, mut writes) = (DAY_MS, 0usize, 0usize);
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let cmds = commands(&text);
        for segment in cmds.split(|(_, b)| b[0].eq_ignore_ascii_case("clear")) {
            for (line, block) in segment {
                let head = block[0].to_lowercase();
                if head.starts_with("load") {
                    let ts = entries(&promql_script::load(block), offset);
                    let want = remote_write(&single, ts.clone());
                    for (r, nodes) in &clusters {
                        let got = remote_write(&nodes[writes % nodes.len()], ts.clone());
                        if want.0 != got.0 {
                            failures.push(format!(
                                "{name}:{line} with {r} copies: write {} {} against {} {}",
                                got.0, got.1, want.0, want.1
                            ));
                        }
                    }
                    writes += 1;
                } else if head.starts_with("eval") {
                    let Ok(eval) = eval_line(&block[0]) else { continue };
                    // an instant eval that expects a range vector is asked at the range's end
                    let at = block[1..].iter().find_map(|l| {
                        let w: Vec<&str> =
                            l.strip_prefix("expect range vector")?.split_whitespace().collect();
                        promql_script::duration_ms(w.get(3)?)
                    });
                    let eval = match at {
                        Some(end) if eval.instant => EvalLine { start: end, end, ..eval },
                        _ => eval,
                    };
                    let path = eval_path(&eval, &shifted(&eval.query, offset), offset);
                    let want = single.get_json(&path);
                    for (r, nodes) in &clusters {
                        let i = asked % nodes.len();
                        let got = nodes[i].get_json(&path);
                        if let Some(why) = differs(&want, &got, eval.command == "eval_ordered") {
                            failures.push(format!(
                                "{name}:{line} on node {i} of {r} copies: {}\n  {why}",
                                block[0]
                            ));
                        }
                    }
                    asked += 1;
                }
            }
            // the next segment starts whole days after this one's last sample and evaluation
            offset += (segment_span(segment) / DAY_MS + 2) * DAY_MS;
        }
    }
    // and the head's counts and cardinalities are one process's, copies counted once
    for path in ["/api/v1/status/tsdb", "/api/v1/status/tsdb?limit=3"] {
        let (_, want) = single.get_json(path);
        for (r, nodes) in &clusters {
            for (i, node) in nodes.iter().enumerate() {
                let (status, got) = node.get_json(path);
                if status != 200 || got != want {
                    failures.push(format!("{path} on node {i} of {r} copies: {got}\n  against {want}"));
                }
            }
        }
    }
    println!(
        "promql corpus on two clusters: {asked} evals, {} answers differ from one process's",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} answers of {asked} evals differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Where a file's segments start: each after the one before by whole days past its span.
#[test]
fn segments_are_moved_past_each_other() {
    let text = "load 1h\n  a 1+1x30\n\neval instant at 2d a\n  a 3\n\nclear\n\nload 5m\n  b 1\n";
    let cmds = commands(text);
    let spans: Vec<i64> = cmds.split(|(_, b)| b[0].eq_ignore_ascii_case("clear")).map(segment_span).collect();
    assert_eq!(spans, vec![2 * DAY_MS, 0]);
    assert_eq!(shifted("a @ 100 + b @ -2.5", 2 * DAY_MS), "a @ 172900.000 + b @ 172797.500");
}
