//! Native histograms at rest, side by side: promflow and Debian's Prometheus 2.42
//! (`--enable-feature=native-histograms`) take the same remote-written native-histogram
//! series, and the benchmark measures the resident memory each holds per active series and
//! the bytes per histogram sample of the blocks each cuts.
//!
//! Run with `cargo bench --bench native_histograms`. Environment (defaults in brackets):
//! `BENCH_SERIES` [5000] histogram series, `BENCH_ROUNDS` [960] samples per series at 15 s
//! (four hours, so that both cut two-hour blocks), `BENCH_REPS` [3].
//!
//! The data: each series is a latency histogram of schema 3 whose observations spread over
//! about 24 buckets around a per-series centre; each round adds a deterministic number of
//! observations to each bucket, as a service's traffic would, and series reset now and then.
//! Requests are Prometheus's remote-write shape (2,000 series a request, one sample each),
//! encoded before any server starts. The server runs under `taskset -c 1`, the load on CPU 0,
//! and the systems alternate between repetitions.
//!
//! Measured per run: resident memory before the load and after its first two hours (the
//! difference over the series count is the memory per active series; neither system has cut
//! a block yet), and once the head's oldest two hours are in a block, that block's bytes
//! over its histogram samples.

mod workload;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use promflow_remote::{BucketSpan, Histogram, Label, TimeSeries, WriteRequest};
use workload::common::{self, free_port, median, peer, rss_kib};
use workload::{
    env, pin_self, send, start_pinned, Rng, Running, CLIENT_CPU, INTERVAL_MS, SERIES_PER_REQUEST,
};

#[derive(Clone, Copy, PartialEq)]
enum System {
    Promflow,
    Prometheus,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Promflow => "promflow",
            System::Prometheus => "Prometheus 2.42",
        }
    }

    fn start(self, dir: &Path) -> Running {
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join("bench.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").unwrap();
        let bin = match self {
            System::Promflow => env!("CARGO_BIN_EXE_promflow"),
            System::Prometheus => "prometheus",
        };
        let args = vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
            "--web.enable-remote-write-receiver".into(),
            "--enable-feature=native-histograms".into(),
        ];
        start_pinned(bin, &args, dir, &addr, "/-/ready", self.name())
    }
}

/// One series' histogram state: its centre bucket and its buckets' counts.
struct Series {
    labels: Vec<Label>,
    first: i32,
    counts: Vec<i64>,
    zero: i64,
    sum: f64,
}

fn all_series(n: usize) -> Vec<Series> {
    let mut rng = Rng(42);
    (0..n)
        .map(|i| {
            let labels = vec![
                Label { name: "__name__".into(), value: "http_request_duration_seconds".into() },
                Label { name: "handler".into(), value: format!("/api/v{}", i % 40) },
                Label { name: "instance".into(), value: format!("host-{}:9100", i / 40) },
                Label { name: "job".into(), value: "api".into() },
            ];
            // centred between 2^-10 and 2^2 at schema 3: 8 buckets a doubling
            let first = -80 + rng.below(96) as i32;
            Series { labels, first, counts: vec![0; 24], zero: 0, sum: 0.0 }
        })
        .collect()
}

/// Every round's requests: each series gets one histogram per round.
fn encode_rounds(specs: &mut [Series], rounds: usize, start_ms: i64) -> Vec<Vec<Arc<Vec<u8>>>> {
    let mut rng = Rng(7);
    (0..rounds)
        .map(|round| {
            let t = start_ms + round as i64 * INTERVAL_MS;
            specs
                .chunks_mut(SERIES_PER_REQUEST)
                .map(|chunk| {
                    let timeseries = chunk
                        .iter_mut()
                        .map(|s| {
                            if rng.below(2000) == 0 {
                                s.counts.iter_mut().for_each(|c| *c = 0);
                                s.zero = 0;
                                s.sum = 0.0;
                            }
                            // a bell over the buckets, more in the middle
                            for (b, c) in s.counts.iter_mut().enumerate() {
                                let weight = 12 - (b as i64 - 12).abs();
                                *c += rng.below(weight as u64 + 1) as i64;
                            }
                            s.zero += rng.below(2) as i64;
                            s.sum += rng.below(1000) as f64 / 100.0;
                            let mut prev = 0;
                            let deltas = s
                                .counts
                                .iter()
                                .map(|&c| {
                                    let d = c - prev;
                                    prev = c;
                                    d
                                })
                                .collect();
                            let count = s.counts.iter().sum::<i64>() + s.zero;
                            TimeSeries {
                                labels: s.labels.clone(),
                                samples: Vec::new(),
                                exemplars: Vec::new(),
                                histograms: vec![Histogram {
                                    count_int: Some(count as u64),
                                    sum: s.sum,
                                    schema: 3,
                                    zero_threshold: 1e-128,
                                    zero_count_int: Some(s.zero as u64),
                                    positive_spans: vec![BucketSpan { offset: s.first, length: 24 }],
                                    positive_deltas: deltas,
                                    timestamp: t,
                                    ..Histogram::default()
                                }],
                            }
                        })
                        .collect();
                    Arc::new(promflow_remote::encode(&WriteRequest { timeseries, metadata: Vec::new() }))
                })
                .collect()
        })
        .collect()
}

/// The oldest block's bytes and histogram samples, once one exists (Prometheus's and
/// promflow's `meta.json` both count samples in `stats.numSamples`).
fn first_block(data: &Path) -> Option<(u64, u64)> {
    let mut blocks: Vec<(i64, std::path::PathBuf)> = std::fs::read_dir(data)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(e.path().join("meta.json")).ok()?).ok()?;
            Some((meta["minTime"].as_i64()?, e.path()))
        })
        .collect();
    blocks.sort();
    let (_, dir) = blocks.into_iter().next()?;
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).ok()?).ok()?;
    let samples = meta["stats"]["numSamples"].as_u64()?;
    let bytes = walk_size(&dir);
    Some((bytes, samples))
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Where each system keeps its blocks.
fn blocks_dir(system: System, data: &Path) -> std::path::PathBuf {
    match system {
        System::Promflow => data.join("promflow").join("blocks"),
        System::Prometheus => data.to_path_buf(),
    }
}

struct Run {
    bytes_per_series: f64,
    bytes_per_sample: Option<f64>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 5000);
    let rounds = env("BENCH_ROUNDS", 960).max(2);
    let reps = env("BENCH_REPS", 3);
    pin_self(CLIENT_CPU);
    let mut systems = vec![System::Promflow];
    if peer("prometheus").is_some() {
        systems.push(System::Prometheus);
    }
    let start_ms = (common::now_ms() - (rounds as i64 + 4) * INTERVAL_MS) / 7_200_000 * 7_200_000;
    eprintln!("encoding {n} histogram series × {rounds} rounds …");
    let mut specs = all_series(n);
    let bodies = encode_rounds(&mut specs, rounds, start_ms);
    let mut runs: Vec<Vec<Run>> = systems.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for i in 0..systems.len() {
            let which = (rep + i) % systems.len();
            let system = systems[which];
            let dir = tempfile::tempdir().unwrap();
            let server = system.start(dir.path());
            let pid = server.child.id();
            std::thread::sleep(Duration::from_secs(2));
            let before = rss_kib(pid);
            // memory after the first two hours, before either system cuts a block
            let (first, rest) = bodies.split_at(bodies.len() / 2);
            send(&server.base, first, 1);
            std::thread::sleep(Duration::from_secs(5));
            let after = rss_kib(pid);
            let bytes_per_series = (after.saturating_sub(before) * 1024) as f64 / n as f64;
            send(&server.base, rest, 1);
            // the head holds four hours: both cut the oldest two into a block within a
            // compaction round or two
            let blocks = blocks_dir(system, &dir.path().join("data"));
            let block = common::wait_for(Duration::from_secs(150), || first_block(&blocks));
            let bytes_per_sample = block.map(|(bytes, samples)| bytes as f64 / samples.max(1) as f64);
            eprintln!(
                "rep {rep} {}: {:.0} B/series, block {:?} B/sample",
                system.name(),
                bytes_per_series,
                bytes_per_sample
            );
            runs[which].push(Run { bytes_per_series, bytes_per_sample });
            drop(server);
        }
    }
    println!("| system | memory per active histogram series (B) | bytes per histogram sample in a block |");
    println!("|---|---|---|");
    let medians = |r: &[Run]| {
        let disk: Vec<f64> = r.iter().filter_map(|r| r.bytes_per_sample).collect();
        let disk = if disk.is_empty() { f64::NAN } else { median(disk) };
        (median(r.iter().map(|r| r.bytes_per_series).collect()), disk)
    };
    let (base_mem, base_disk) = medians(&runs[0]);
    for (i, system) in systems.iter().enumerate() {
        let (mem, disk) = medians(&runs[i]);
        if i == 0 {
            println!("| {} | {mem:.0} | {disk:.2} |", system.name());
        } else {
            println!(
                "| {} | {mem:.0} (promflow {:.2}×) | {disk:.2} (promflow {:.2}×) |",
                system.name(),
                base_mem / mem,
                base_disk / disk
            );
        }
    }
}
