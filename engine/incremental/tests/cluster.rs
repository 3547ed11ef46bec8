//! Two executors joined into one timely computation over loopback TCP, as two processes of a
//! cluster are: each is appended half of the series, and each reads and follows (by
//! subscription) the whole of every view, equal to that of one executor appended all of them. Each executor has its own table of
//! label sets, so a key that crosses between them must bring its labels along.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use promflow_incremental::{Incremental, Value};
use promflow_storage::Labels;

const LOOKBACK: i64 = 300_000;

/// Views whose elements are computed from series of both halves: aggregations, joins across
/// the halves, a subquery, `topk` and a classic histogram's quantile.
const VIEWS: &[&str] = &[
    "sum by (job) (x)",
    "count(x)",
    "sum by (job) (rate(x[2m]))",
    "max_over_time(x[3m:30s])",
    "topk by (job) (2, x)",
    "x / ignoring(i) group_left sum by (job) (x)",
    "label_replace(x, \"k\", \"$1\", \"job\", \"j(.)\") > 100",
    "histogram_quantile(0.5, sum by (le) (label_replace(x, \"le\", \"$1\", \"job\", \"j(.)\")))",
];

/// 24 series over 15 minutes, each every 15 s, in time order.
fn samples() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for i in 0..24i64 {
        let labels = Labels::from_pairs([
            ("__name__", "x".to_string()),
            ("job", format!("j{}", i % 4)),
            ("i", i.to_string()),
        ]);
        for k in 0..60 {
            let t = k * 15_000 + i * 100;
            out.push((labels.clone(), t, ((k + 1) * (i + 1)) as f64 * 3.5));
        }
    }
    out.sort_by_key(|s| s.1);
    out
}

fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn as_map(rows: Vec<(Labels, Value)>) -> BTreeMap<Labels, u64> {
    rows.into_iter().map(|(l, v)| (l, v.as_float().expect("a float").to_bits())).collect()
}

#[test]
fn two_processes_compute_one_view() {
    let addresses = vec![free_address(), free_address()];
    // each start waits for the other: both at once
    let starting: Vec<_> = (0..2)
        .map(|index| {
            let addresses = addresses.clone();
            std::thread::spawn(move || Incremental::start_in_cluster(2, addresses, index, LOOKBACK))
        })
        .collect();
    let nodes: Vec<Incremental> = starting.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    let one = Incremental::start(2, LOOKBACK).unwrap();
    let mut views = Vec::new();
    // every process follows every view by subscription too, as a client of it would
    let mut followed = Vec::new();
    for q in VIEWS {
        let plan = promflow_promql::compile(q, &Default::default()).unwrap();
        let ids: Vec<usize> = nodes.iter().map(|n| n.install(&plan).unwrap()).collect();
        for (i, (n, id)) in nodes.iter().zip(&ids).enumerate() {
            followed.push((q, i, n.subscribe(*id, 0, None).unwrap(), HashMap::new(), views.len()));
        }
        views.push((q, ids, one.install(&plan).unwrap()));
    }
    let all = samples();
    let mut fed = 0;
    for t in (60_000..=900_000).step_by(60_000) {
        let upto = all.iter().position(|s| s.1 > t).unwrap_or(all.len());
        for (labels, ts, v) in &all[fed..upto] {
            let half = labels.get("i").parse::<usize>().unwrap() % 2;
            nodes[half].append(&[(labels.clone(), *ts, *v)]);
            one.append(&[(labels.clone(), *ts, *v)]);
        }
        fed = upto;
        // a read waits for every process to pass `t`: both move their clocks first
        for n in &nodes {
            n.complete(t);
        }
        let mut wanted = Vec::new();
        for (q, ids, single) in &views {
            let want = as_map(one.read(*single, t).unwrap());
            assert!(!want.is_empty(), "{q} at {t}: empty");
            for (i, (n, id)) in nodes.iter().zip(ids).enumerate() {
                assert_eq!(as_map(n.read(*id, t).unwrap()), want, "{q} at {t}, process {i}");
            }
            wanted.push(want);
        }
        for (q, i, sub, content, view) in followed.iter_mut() {
            sub.follow_through(t, content, Duration::from_secs(30)).unwrap();
            let got = as_map(content.iter().map(|(l, v)| (l.clone(), v.clone())).collect());
            assert_eq!(got, wanted[*view], "{q} at {t}, followed in process {i}");
        }
    }
    for (_, i, sub, _, _) in &followed {
        nodes[*i].unsubscribe(sub);
    }
    // each waits for the other to finish
    std::thread::scope(|s| {
        for n in &nodes {
            s.spawn(move || n.shutdown());
        }
    });
}
