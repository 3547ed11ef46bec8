//! Whole-system benchmark, side by side with Debian's Prometheus 2.42 in the same run:
//! remote-write ingest throughput, query latency (medians) and resident memory.
//!
//! Run with `cargo bench --bench side_by_side` (release build; needs `prometheus` installed).
//! Environment: `BENCH_SERIES` (default 2000), `BENCH_POINTS` (default 240, at 15 s),
//! `BENCH_REPS` (default 9). Results go to stdout as a Markdown table for docs/benchmarks.md.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n_series = env("BENCH_SERIES", 2000);
    let points = env("BENCH_POINTS", 240) as i64;
    let reps = env("BENCH_REPS", 9);
    let dir = tempfile::tempdir().unwrap();
    let Some(prom) = start_prometheus(dir.path(), "global:\n  scrape_interval: 15s\n") else {
        eprintln!("prometheus is not installed; nothing to compare with");
        return;
    };
    let pf = start_promflow(
        dir.path(),
        "global:\n  scrape_interval: 15s\n",
        &["--web.enable-remote-write-receiver"],
    );
    let base = (now_ms() - (points + 4) * 15_000) / 60_000 * 60_000;

    // batches of 100 series × all their points, the same bytes to both servers
    let mut batches = Vec::new();
    for chunk in 0..n_series.div_ceil(100) {
        let mut ts = Vec::new();
        for s in chunk * 100..((chunk + 1) * 100).min(n_series) {
            let job = format!("job{}", s % 10);
            let inst = format!("host{s}:9100");
            let samples: Vec<(i64, f64)> = (0..points)
                .map(|k| (base + k * 15_000 + (s as i64 % 997), (k * (1 + s as i64 % 7)) as f64))
                .collect();
            ts.push(series(
                &[("__name__", "bench_requests_total"), ("job", &job), ("instance", &inst)],
                &samples,
            ));
        }
        batches.push(ts);
    }
    let total = (n_series as i64 * points) as f64;
    let mut ingest = Vec::new();
    for server in [&pf, &prom] {
        let start = Instant::now();
        for b in &batches {
            let (code, body) = remote_write(server, b.clone());
            assert_eq!(code, 204, "{body}");
        }
        ingest.push(total / start.elapsed().as_secs_f64());
    }

    let end_s = (base + points * 15_000) / 1000;
    let start_s = end_s - 3600.min(points * 15);
    let queries = [
        ("instant selector", format!("/api/v1/query?query=bench_requests_total&time={end_s}")),
        ("sum by (job) (rate[5m]), instant", format!("/api/v1/query?query=sum%20by%20(job)%20(rate(bench_requests_total%5B5m%5D))&time={end_s}")),
        ("sum by (job) (rate[5m]), 1h range, step 60s", format!("/api/v1/query_range?query=sum%20by%20(job)%20(rate(bench_requests_total%5B5m%5D))&start={start_s}&end={end_s}&step=60")),
        ("max(series) - min(series), 1h range, step 15s", format!("/api/v1/query_range?query=max(bench_requests_total)%20-%20min(bench_requests_total)&start={start_s}&end={end_s}&step=15")),
        ("label values of instance", "/api/v1/label/instance/values".to_string()),
    ];
    println!("| measure | promflow | Prometheus 2.42 | promflow / Prometheus |");
    println!("|---|---|---|---|");
    println!(
        "| remote-write ingest, samples/s ({n_series} series × {points} points) | {:.0} | {:.0} | {:.2} |",
        ingest[0],
        ingest[1],
        ingest[0] / ingest[1]
    );
    let c = client();
    for (name, path) in &queries {
        let mut med = Vec::new();
        for server in [&pf, &prom] {
            let mut times = Vec::new();
            for _ in 0..reps {
                let start = Instant::now();
                let r = c.get(server.url(path)).send().unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().unwrap();
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            med.push(median(times));
        }
        println!("| {name}: median ms | {:.2} | {:.2} | {:.2} |", med[0], med[1], med[0] / med[1]);
    }
    let (a, b) = (rss_kib(pf.child.id()), rss_kib(prom.child.id()));
    println!(
        "| resident memory after the run, MiB | {:.1} | {:.1} | {:.2} |",
        a as f64 / 1024.0,
        b as f64 / 1024.0,
        a as f64 / b as f64
    );
}
