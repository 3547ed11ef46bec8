//! A three-node cluster on loopback against one process: the cluster holds three times the
//! series, and the figures are what each costs per series and per sample.
//!
//! Run with `cargo bench --bench cluster`. Environment (defaults in brackets):
//! `BENCH_SERIES` [200000] the series of the one process (the cluster gets three times as
//! many), `BENCH_ROUNDS` [20] samples per series at 15 s, `BENCH_REPS` [3], `BENCH_CONNS`
//! [6] concurrent senders (spread over the cluster's nodes), `BENCH_RULES` [0]: with 1,
//! every node evaluates the rules benchmark's rule set (`benches/rules.rs`) as views on the
//! cluster's dataflow computation, and the one process as views on its own. `BENCH_SETTLE_S`
//! [0]: with more, memory per series is read again that long after the load, when the
//! servers have worked off what the load left queued (with the rules, the records the
//! views' arrangements hold are printed at both readings). `BENCH_QUERIES` [0]: with 1, then
//! asks one node (the first) each of [`QUERIES`] five times and reports, per query, the
//! median answer time and the median bytes on the loopback interface per answer (between
//! the nodes, the client's request and answer included).
//!
//! What it fixes: the data is the ingest benchmark's (node_exporter-like hosts), encoded
//! before each run's servers start, stamped from a few minutes before then (so that every
//! run's series are as recent to its rules' windows and to the series count as the
//! first's); the servers, all three nodes included, run on CPU 1 and the
//! load on CPU 0; the order alternates (one process first, then the cluster first).
//!
//! Measured per run, after the first round (which creates the series): samples per second,
//! CPU seconds per million samples (the servers' user and system time), resident memory per
//! active series (the servers' memory after the load less before, over the series), and the
//! bytes between nodes per sample: the loopback interface's bytes during the load, less
//! what the load generator sent, which the one process's run gives per body byte.

mod workload;

use std::time::{Duration, Instant};

use workload::common::{self, median, rss_kib};
use workload::{
    all_series, cpu_seconds, encode_rounds, env, pin_self, post_write, rule_file, start_pinned, Running,
    System, CLIENT_CPU, INTERVAL_MS,
};

/// How many nodes the cluster has.
const NODES: usize = 3;

/// The queries of `BENCH_QUERIES`: (name, query, a range query over the load's span at 15 s).
const QUERIES: [(&str, &str, bool); 6] = [
    ("count of every series", "count({__name__=~\".+\"})", false),
    ("top 5 network rates", "topk(5, rate(node_network_receive_bytes_total[2m]))", false),
    (
        "CPU modes by whole rate",
        "count_values by (mode) (\"cores\", round(rate(node_cpu_seconds_total[2m])))",
        false,
    ),
    ("sum by job of CPU rates", "sum by (job, mode) (rate(node_cpu_seconds_total[2m]))", false),
    (
        "sum by instance of network rates, range",
        "sum by (instance) (rate(node_network_receive_bytes_total[2m]))",
        true,
    ),
    ("max of filesystem bytes, range", "max by (mountpoint) (node_filesystem_avail_bytes)", true),
];

/// How often each query is asked.
const QUERY_REPS: usize = 5;

/// One run's figures.
struct Run {
    steady_sps: f64,
    cpu_s_per_msample: f64,
    bytes_per_series: f64,
    /// The same, `BENCH_SETTLE_S` after the load (when that is set).
    settled_bytes_per_series: Option<f64>,
    /// Bytes on the loopback interface during the load, and the request bodies sent.
    loopback_bytes: f64,
    body_bytes: f64,
    samples: f64,
    series: Option<u64>,
    /// The servers' resident memory before the load, in bytes.
    rss_before: f64,
    /// Per query of [`QUERIES`] (with `BENCH_QUERIES`): median seconds and loopback bytes.
    queries: Vec<(f64, f64)>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 200_000);
    let rounds = env("BENCH_ROUNDS", 20).max(2);
    let reps = env("BENCH_REPS", 3);
    let conns = env("BENCH_CONNS", 6);
    let rules = env("BENCH_RULES", 0) == 1;
    let settle = Duration::from_secs(env("BENCH_SETTLE_S", 0) as u64);
    let queries = env("BENCH_QUERIES", 0) == 1;
    pin_self(CLIENT_CPU);
    let (one, many) = (all_series(n), all_series(NODES * n));
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        for k in 0..2 {
            let cluster = (rep + k) % 2 == 1;
            let specs = if cluster { &many } else { &one };
            let start_ms = (common::now_ms() - (rounds as i64 + 4) * INTERVAL_MS) / 60_000 * 60_000;
            let bodies = &encode_rounds(specs, rounds, start_ms);
            let dir = tempfile::tempdir().unwrap();
            let nodes =
                if cluster { start_cluster(dir.path(), rules) } else { vec![start_one(dir.path(), rules)] };
            let series = if cluster { NODES * n } else { n };
            let mut run = load(&nodes, bodies, conns, series);
            eprintln!(
                "rep {rep} {:<8} steady {:>9.0}/s, {:.2} CPU s per million samples, {:.0} B per series, loopback {:.1} MB for {:.1} MB of bodies, series {:?}",
                if cluster { "cluster" } else { "one" },
                run.steady_sps,
                run.cpu_s_per_msample,
                run.bytes_per_series,
                run.loopback_bytes / 1e6,
                run.body_bytes / 1e6,
                run.series
            );
            if rules {
                eprintln!("  arranged records, all nodes: {}", arranged_records(&nodes));
            }
            if !settle.is_zero() {
                std::thread::sleep(settle);
                let settled = (resident_bytes(&nodes) - run.rss_before) / series as f64;
                run.settled_bytes_per_series = Some(settled);
                eprintln!(
                    "  {} s after the load: {settled:.0} B per series{}",
                    settle.as_secs(),
                    if rules {
                        format!(", arranged records {}", arranged_records(&nodes))
                    } else {
                        String::new()
                    }
                );
            }
            if queries {
                run.queries = ask_queries(&nodes[0], start_ms, rounds);
                for ((name, _, _), (secs, bytes)) in QUERIES.iter().zip(&run.queries) {
                    eprintln!("  {name}: {:.1} ms, {:.2} MB on loopback", secs * 1e3, bytes / 1e6);
                }
            }
            runs[usize::from(cluster)].push(run);
        }
    }
    // the load generator's own bytes on loopback, per body byte, from the one process's runs
    let overhead = median(runs[0].iter().map(|r| r.loopback_bytes / r.body_bytes).collect());
    let between = |r: &Run| (r.loopback_bytes - overhead * r.body_bytes).max(0.0) / r.samples;
    println!(
        "one process with {n} series, a {NODES}-node cluster with {} series; {rounds} samples per series at 15 s, {conns} senders{}; medians of {reps}\n",
        NODES * n,
        if rules { ", the rules benchmark's rule set as views" } else { "" }
    );
    println!("| | steady, samples/s | CPU s per million samples | bytes per active series | the same {} s later | bytes between nodes per sample | series held |", settle.as_secs());
    println!("|---|---|---|---|---|---|---|");
    for (name, rs) in [("one process", &runs[0]), ("3-node cluster", &runs[1])] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {} | {:.1} | {} |",
            median(rs.iter().map(|r| r.steady_sps).collect()),
            median(rs.iter().map(|r| r.cpu_s_per_msample).collect()),
            median(rs.iter().map(|r| r.bytes_per_series).collect()),
            match rs.iter().map(|r| r.settled_bytes_per_series).collect::<Option<Vec<f64>>>() {
                Some(settled) => format!("{:.0}", median(settled)),
                None => "—".into(),
            },
            median(rs.iter().map(between).collect()),
            rs.iter().map(|r| r.series.map_or("?".into(), |s| s.to_string())).collect::<Vec<_>>().join(" / "),
        );
    }
    let ratio =
        |f: &dyn Fn(&Run) -> f64| median(runs[1].iter().zip(&runs[0]).map(|(c, o)| f(c) / f(o)).collect());
    println!(
        "\ncluster / one process: memory per series {:.2}×, CPU per sample {:.2}×, steady ingest {:.2}×",
        ratio(&|r| r.bytes_per_series),
        ratio(&|r| r.cpu_s_per_msample),
        ratio(&|r| r.steady_sps),
    );
    if queries {
        println!("\n| query (asked of one node) | one process, ms | cluster, ms | cluster / one | cluster, MB on loopback per answer |");
        println!("|---|---|---|---|---|");
        for (q, (name, _, _)) in QUERIES.iter().enumerate() {
            let secs = |rs: &Vec<Run>| median(rs.iter().map(|r| r.queries[q].0).collect());
            println!(
                "| {name} | {:.1} | {:.1} | {:.2}× | {:.2} |",
                secs(&runs[0]) * 1e3,
                secs(&runs[1]) * 1e3,
                ratio(&|r| r.queries[q].0),
                median(runs[1].iter().map(|r| r.queries[q].1).collect()) / 1e6,
            );
        }
    }
    if !settle.is_zero() {
        println!(
            "memory per series {} s after the load: {:.2}×",
            settle.as_secs(),
            ratio(&|r| r.settled_bytes_per_series.unwrap_or(f64::NAN))
        );
    }
}

/// The configuration every server gets: the rule set, with `rules`.
fn config(dir: &std::path::Path, rules: bool) -> std::path::PathBuf {
    let mut text = String::from("global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n");
    if rules {
        let file = dir.join("rules.yml");
        std::fs::write(&file, rule_file().0).unwrap();
        text += &format!("rule_files: ['{}']\n", file.display());
    }
    let cfg = dir.join("bench.yml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn start_one(dir: &std::path::Path, rules: bool) -> Running {
    let cfg = config(dir, rules);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={addr}"),
        "--web.enable-remote-write-receiver".into(),
    ];
    start_pinned(&workload::promflow_binary(), &args, dir, &addr, "/-/ready", "promflow")
}

/// Starts the cluster's nodes, and waits until their dataflow computation has formed.
fn start_cluster(dir: &std::path::Path, rules: bool) -> Vec<Running> {
    let cfg = config(dir, rules);
    workload::start_cluster(dir, &cfg, NODES, true, &[])
}

/// The records the nodes' arrangements hold, by what they hold
/// (`promflow_dataflow_arranged_records`), summed over `nodes`: with the rules on the
/// cluster's computation, `copy` is what every node keeps of the views every node reads.
fn arranged_records(nodes: &[Running]) -> String {
    let http = common::client();
    let mut by_holds: std::collections::BTreeMap<String, f64> = Default::default();
    for node in nodes {
        let text =
            http.get(format!("{}/metrics", node.base)).send().and_then(|r| r.text()).unwrap_or_default();
        for line in text.lines().filter_map(|l| l.strip_prefix("promflow_dataflow_arranged_records{holds=\""))
        {
            let Some((holds, value)) = line.split_once("\"} ") else { continue };
            *by_holds.entry(holds.to_string()).or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    by_holds.iter().map(|(h, v)| format!("{h} {v:.0}")).collect::<Vec<_>>().join(", ")
}

/// The resident memory of `nodes`' processes together, in bytes.
fn resident_bytes(nodes: &[Running]) -> f64 {
    nodes.iter().map(|n| rss_kib(n.child.id()) as f64 * 1024.0).sum()
}

/// The bytes the loopback interface has received.
fn loopback_bytes() -> f64 {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    dev.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Sends every round to `nodes` (sender `k` to node `k` modulo their number), the first
/// round untimed, and measures the rest.
fn load(nodes: &[Running], bodies: &[Vec<std::sync::Arc<Vec<u8>>>], conns: usize, series: usize) -> Run {
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let rss = || resident_bytes(nodes);
    let cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = rss();
    send_spread(nodes, &bodies[..1], conns);
    let (cpu0, lo0) = (cpu(), loopback_bytes());
    let t = Instant::now();
    send_spread(nodes, &bodies[1..], conns);
    let took = t.elapsed().as_secs_f64();
    let (cpu1, lo1) = (cpu(), loopback_bytes());
    std::thread::sleep(Duration::from_secs(5));
    let samples = (series * (bodies.len() - 1)) as f64;
    let body_bytes: usize = bodies[1..].iter().flatten().map(|b| b.len()).sum();
    Run {
        steady_sps: samples / took,
        cpu_s_per_msample: (cpu1 - cpu0) / samples * 1e6,
        bytes_per_series: (rss() - rss_before) / series as f64,
        settled_bytes_per_series: None,
        rss_before,
        loopback_bytes: lo1 - lo0,
        body_bytes: body_bytes as f64,
        samples,
        // asked of one node, which counts the whole cluster's
        series: System::Promflow.series_count(&nodes[0]),
        queries: Vec::new(),
    }
}

/// Asks `node` each of [`QUERIES`] [`QUERY_REPS`] times (range queries over the `rounds`
/// samples from `start_ms`): the median seconds and loopback bytes of each.
fn ask_queries(node: &Running, start_ms: i64, rounds: usize) -> Vec<(f64, f64)> {
    let http = common::client();
    let end_ms = start_ms + (rounds as i64 - 1) * INTERVAL_MS;
    QUERIES
        .iter()
        .map(|(name, query, range)| {
            let url = if *range {
                format!(
                    "{}/api/v1/query_range?query={}&start={}&end={}&step=15",
                    node.base,
                    common::urlencode(query),
                    start_ms / 1000,
                    end_ms / 1000
                )
            } else {
                format!(
                    "{}/api/v1/query?query={}&time={}",
                    node.base,
                    common::urlencode(query),
                    end_ms / 1000
                )
            };
            let (mut secs, mut bytes) = (Vec::new(), Vec::new());
            for _ in 0..QUERY_REPS {
                let (lo, t) = (loopback_bytes(), Instant::now());
                let answer = http.get(&url).send().and_then(|r| r.error_for_status()).and_then(|r| r.text());
                secs.push(t.elapsed().as_secs_f64());
                bytes.push(loopback_bytes() - lo);
                assert!(answer.is_ok_and(|a| a.contains("\"success\"")), "{name} failed");
            }
            (median(secs), median(bytes))
        })
        .collect()
}

/// [`workload::send`] over several nodes: each sender owns every `conns`-th request of each
/// round and sends it to node `k` modulo the number of nodes.
fn send_spread(nodes: &[Running], bodies: &[Vec<std::sync::Arc<Vec<u8>>>], conns: usize) {
    std::thread::scope(|scope| {
        for k in 0..conns {
            let base = &nodes[k % nodes.len()].base;
            scope.spawn(move || {
                let http = common::client();
                for round in bodies {
                    for body in round.iter().skip(k).step_by(conns) {
                        post_write(&http, base, body.as_ref().clone());
                    }
                }
            });
        }
    });
}
