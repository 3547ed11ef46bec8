//! Remote-write ingest at ≥100k active series, side by side: promflow, Debian's Prometheus
//! 2.42 and Debian's VictoriaMetrics, each alone in turn on the same pre-encoded requests.
//!
//! Run with `cargo bench --bench ingest`. Environment (defaults in brackets):
//! `BENCH_SERIES` [100000], `BENCH_ROUNDS` [40] samples per series at 15 s,
//! `BENCH_REPS` [3], `BENCH_CONNS` [4] concurrent senders, `BENCH_SYSTEMS`
//! [promflow,prometheus,vm] (promflow always runs: the ratios are against it),
//! `BENCH_PROMFLOW` [this build's] the promflow binary to run, `BENCH_CHURN` [0] the percentage
//! of hosts replaced by new instances every round (pods coming and going: their series
//! stop and as many new ones start, the old ones with a staleness marker as Prometheus
//! writes when a target disappears; memory is then also read after every send and
//! reported by window of 10 rounds),
//! `BENCH_ROUND_SECONDS` [0] the wall-clock seconds from one round's start to the next (0:
//! each round as soon as the one before is sent; the waits are not timed), and
//! `BENCH_STALE_COMPACTION` [unset] promflow's `stale_series_compaction_threshold`.
//!
//! What it fixes, so every system sees the same load:
//!
//! * the data: node_exporter-like hosts (CPU seconds in 0.01 steps, byte counters, memory and
//!   filesystem gauges, load averages) plus an application's request counters and latency
//!   histogram per host; counters reset now and then; a deterministic generator, no clock;
//! * the requests: Prometheus's remote-write shape, every series once per request with one
//!   sample, 2,000 series per request (Prometheus's `max_samples_per_send`), snappy protobuf,
//!   encoded before any server starts;
//! * the senders: like Prometheus's remote-write shards, each of `BENCH_CONNS` threads owns a
//!   fixed set of requests and sends them in timestamp order over one keep-alive connection,
//!   so no series ever goes out of order;
//! * the CPUs: the server runs under `taskset -c 1`, this process (the load) on CPU 0;
//! * the order: systems rotate between repetitions (A B C, B C A, C A B).
//!
//! Measured per run: the first round (every series is created) and the remaining rounds
//! (steady state) as samples per second, the server's resident memory before the load and 5 s
//! after it, and a check that the server holds every series. Medians of the repetitions
//! are printed as a Markdown table for docs/benchmarks.md.

mod workload;

use std::time::{Duration, Instant};

use workload::common::{self, median, rss_kib};
use workload::{
    all_series, encode_churning_rounds, env, pin_self, send, System, CLIENT_CPU, INTERVAL_MS,
    SERIES_PER_REQUEST,
};

/// Rounds in one window of memory readings under churn.
const CHURN_READING_ROUNDS: usize = 10;

struct Run {
    create_sps: f64,
    steady_sps: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    /// Under churn: resident memory (MiB) read after each send, by window of
    /// [`CHURN_READING_ROUNDS`] rounds. Stale series leave the head once a minute, so memory
    /// saws up and down within a window; one reading per window would catch the saw at a
    /// different point each time.
    rss_readings_mib: Vec<Vec<f64>>,
    series: Option<u64>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 100_000);
    let rounds = env("BENCH_ROUNDS", 40).max(2);
    let reps = env("BENCH_REPS", 3);
    let conns = env("BENCH_CONNS", 4);
    let churn = env("BENCH_CHURN", 0).min(100);
    let churn_period = 100usize.checked_div(churn).unwrap_or(0);
    let round_every = Duration::from_secs(env("BENCH_ROUND_SECONDS", 0) as u64);
    pin_self(CLIENT_CPU);
    let systems = System::wanted();
    let specs = all_series(n);
    // whole minutes, ending a minute before now: inside every system's accepted window
    let start_ms = (common::now_ms() - (rounds as i64 + 4) * INTERVAL_MS) / 60_000 * 60_000;
    eprintln!("encoding {n} series × {rounds} rounds …");
    let encoding = Instant::now();
    let bodies = encode_churning_rounds(&specs, rounds, start_ms, churn_period);
    let bytes: usize = bodies.iter().flatten().map(|b| b.len()).sum();
    eprintln!(
        "{} requests, {:.1} MB snappy, encoded in {:.0} s",
        bodies.len() * bodies[0].len(),
        bytes as f64 / 1e6,
        encoding.elapsed().as_secs_f64()
    );
    drop(specs);

    let mut runs: Vec<Vec<Run>> = systems.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for i in 0..systems.len() {
            let which = (rep + i) % systems.len();
            let system = systems[which];
            let dir = tempfile::tempdir().unwrap();
            let server = system.start(dir.path());
            std::thread::sleep(Duration::from_secs(2));
            let pid = server.child.id();
            let rss_before = rss_kib(pid);
            eprintln!("rep {rep} {}: pid {pid}, sending", system.name());
            let t0 = Instant::now();
            send(&server.base, &bodies[..1], conns);
            let create = t0.elapsed().as_secs_f64();
            let mut steady = 0.0;
            let mut rss_readings_mib: Vec<Vec<f64>> = Vec::new();
            // under churn, memory is read between sends (the reading is not timed)
            let group = if churn > 0 { CHURN_READING_ROUNDS } else { rounds };
            // paced rounds go one at a time, each at its start time
            let per_send = if round_every.is_zero() { group } else { 1 };
            let mut next = 1;
            while next < rounds {
                let end =
                    (next + per_send - (next % per_send)).min(next + group - (next % group)).min(rounds);
                if let Some(wait) = (t0 + round_every * next as u32).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let t1 = Instant::now();
                send(&server.base, &bodies[next..end], conns);
                steady += t1.elapsed().as_secs_f64();
                if churn > 0 {
                    let window = (end - 1) / CHURN_READING_ROUNDS;
                    rss_readings_mib.resize_with(rss_readings_mib.len().max(window + 1), Vec::new);
                    rss_readings_mib[window].push(rss_kib(pid) as f64 / 1024.0);
                }
                next = end;
            }
            std::thread::sleep(Duration::from_secs(5));
            let rss_after = rss_kib(pid);
            let series = system.series_count(&server);
            let run = Run {
                create_sps: n as f64 / create,
                steady_sps: (n * (rounds - 1)) as f64 / steady,
                rss_before_mib: rss_before as f64 / 1024.0,
                rss_after_mib: rss_after as f64 / 1024.0,
                rss_readings_mib,
                series,
            };
            eprintln!(
                "rep {rep} {:<16} create {:>9.0}/s steady {:>9.0}/s rss {:.0} → {:.0} MiB, series {:?}",
                system.name(),
                run.create_sps,
                run.steady_sps,
                run.rss_before_mib,
                run.rss_after_mib,
                run.series
            );
            runs[which].push(run);
        }
    }

    let churned =
        if churn > 0 { format!(", {churn} % of the hosts replaced every round") } else { String::new() };
    println!("{n} active series, {rounds} samples each at 15 s, {SERIES_PER_REQUEST} series per request, {conns} senders{churned}; medians of {reps}\n");
    println!("| system | first round (series created), samples/s | steady, samples/s | RSS idle → loaded, MiB | bytes per active series | series held |");
    println!("|---|---|---|---|---|---|");
    for (system, rs) in systems.iter().zip(&runs) {
        let per_series: Vec<f64> =
            rs.iter().map(|r| (r.rss_after_mib - r.rss_before_mib) * 1048576.0 / n as f64).collect();
        println!(
            "| {} | {:.0} | {:.0} | {:.0} → {:.0} | {:.0} | {} |",
            system.name(),
            median(rs.iter().map(|r| r.create_sps).collect()),
            median(rs.iter().map(|r| r.steady_sps).collect()),
            median(rs.iter().map(|r| r.rss_before_mib).collect()),
            median(rs.iter().map(|r| r.rss_after_mib).collect()),
            median(per_series),
            rs.iter().map(|r| r.series.map_or("?".into(), |s| s.to_string())).collect::<Vec<_>>().join(" / "),
        );
    }
    if churn > 0 {
        println!(
            "\nresident memory per active series (B) in each window of {CHURN_READING_ROUNDS} rounds, \
             read after every send: median of the window's medians over the repetitions \
             (lowest–highest reading):\n"
        );
        for (system, rs) in systems.iter().zip(&runs) {
            let per_series_b = |mib: f64, r: &Run| (mib - r.rss_before_mib) * 1048576.0 / n as f64;
            let windows = rs.iter().map(|r| r.rss_readings_mib.len()).min().unwrap_or(0);
            let per_series: Vec<String> = (0..windows)
                .map(|i| {
                    let mid = median(
                        rs.iter().map(|r| per_series_b(median(r.rss_readings_mib[i].clone()), r)).collect(),
                    );
                    let all: Vec<f64> = rs
                        .iter()
                        .flat_map(|r| r.rss_readings_mib[i].iter().map(|&m| per_series_b(m, r)))
                        .collect();
                    let low = all.iter().copied().fold(f64::INFINITY, f64::min);
                    let high = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    format!("{mid:.0} ({low:.0}–{high:.0})")
                })
                .collect();
            println!("- {}: {}", system.name(), per_series.join(" → "));
        }
    }
    if systems.len() > 1 {
        let pf = &runs[0];
        for (system, rs) in systems.iter().zip(&runs).skip(1) {
            let ratio =
                |f: &dyn Fn(&Run) -> f64| median(pf.iter().zip(rs).map(|(a, b)| f(a) / f(b)).collect());
            println!(
                "\npromflow / {}: steady ingest {:.2}×, first round {:.2}×, memory per active series {:.2}×",
                system.name(),
                ratio(&|r| r.steady_sps),
                ratio(&|r| r.create_sps),
                ratio(&|r| r.rss_after_mib - r.rss_before_mib),
            );
        }
    }
}
