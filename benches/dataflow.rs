//! The incremental executor alone, in process, under the rules benchmark's rule set and
//! series: what keeping every rule current costs, next to re-evaluating every rule in batch at
//! each evaluation (what Prometheus does). No HTTP, no WAL: the cost of the views themselves,
//! split into the stream (samples in, clock moves) and the evaluations (ticks and reads).
//!
//! Run with `cargo bench --bench dataflow`. Environment (defaults in brackets):
//! `BENCH_SERIES` [20000], `BENCH_HISTORY_MIN` [60] minutes in storage before the views are
//! installed from it, `BENCH_MINUTES` [5] of stream measured (one sample per series every
//! 15 s), `BENCH_INTERVAL_S` [60] evaluation interval, `BENCH_IDLE_MS` [250] how often the
//! clock moves between samples (the server's idle clock), `BENCH_WORKERS` [1],
//! `BENCH_CHUNKS` [1] requests a round arrives in: the clock moves 2 ms on after each, as
//! the server's feed moved it to the wall clock after each request, `BENCH_GRAIN` [1]
//! whether recording rules' views change only at the evaluation times (as in the server) or
//! with every sample (0), `BENCH_ENDS_FROM_MIN` [60] the shortest window kept by its ends and
//! read back from storage, as in the server (0: every window keeps every sample),
//! `BENCH_COMPACT` [0] whether the history is compacted into blocks before the install (1),
//! as the server's would be. To profile the install: `BENCH_INSTALL_ONLY=1` stops after it,
//! and `BENCH_ATTACH_WAIT_S` waits that many seconds before it, printing the process id (for
//! `heaptrack -p`, which then sees the install alone).
//!
//! The views are installed from storage as the server installs them, then the stream is fed
//! round by round: the round's samples, a clock move to their time, idle clock moves until
//! the next round, and at each evaluation time a read of every view (alerting views are also
//! watched). Process CPU (all threads) is measured over the stream; then the same evaluations
//! run in batch over storage holding the same samples.

/// The server's allocator, with the server's settings, so that resident memory is what the
/// server's would be.
#[path = "../src/allocator.rs"]
mod allocator;
mod workload;

use std::sync::Arc;
use std::time::Instant;

use promflow_batch::{evaluate, QueryOptions};
use promflow_incremental::{Grain, Incremental};
use promflow_plan::Plan;
use promflow_storage::{Db, DbOptions, Labels, Querier};
use workload::{all_series, env, rule_set, Walk, INTERVAL_MS};

const LOOKBACK_MS: i64 = 300_000;

/// Where in the evaluation interval the evaluations fall: between rounds, as a group's
/// evaluations fall between scrapes.
const EVAL_OFFSET_MS: i64 = 7_500;
/// How often the server compacts the views' arrangements between reads (`LiveViews`), in
/// the stream's time: a minute of past for the views rules read, none for the rest.
const COMPACT_EVERY_MS: i64 = 5_000;

/// User plus system CPU seconds of this process, all threads.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 20_000);
    let history_min = env("BENCH_HISTORY_MIN", 60);
    let minutes = env("BENCH_MINUTES", 5);
    let interval_ms = env("BENCH_INTERVAL_S", 60) as i64 * 1000;
    let idle_ms = env("BENCH_IDLE_MS", 250).max(1) as i64;
    let workers = env("BENCH_WORKERS", 1);
    let chunks = env("BENCH_CHUNKS", 1).max(1);
    let grain = (env("BENCH_GRAIN", 1) == 1).then(|| Grain::new(interval_ms, EVAL_OFFSET_MS));
    let ends_from_min = env("BENCH_ENDS_FROM_MIN", 60);
    let compact = env("BENCH_COMPACT", 0) == 1;

    let rules = rule_set();
    let alert_count = rules.alerts.len();
    let recording_count = rules.recording.len();
    let exprs: Vec<String> = rules
        .recording
        .into_iter()
        .map(|(_, e)| e)
        .chain(rules.alerts.into_iter().map(|(_, e, _)| e))
        .collect();
    let plans: Vec<Plan> =
        exprs.iter().map(|e| promflow_promql::compile(e, &Default::default()).expect(e)).collect();
    let specs = all_series(n);
    let labels: Vec<Labels> = specs
        .iter()
        .map(|s| Labels::from_pairs(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str()))))
        .collect();
    let mut walk = Walk::new(&specs);
    let history_rounds = history_min as i64 * 60_000 / INTERVAL_MS;
    let stream_rounds = minutes as i64 * 60_000 / INTERVAL_MS;
    // the stream starts at a whole evaluation interval; evaluations fall `EVAL_OFFSET_MS` into it
    let start = 1_700_000_000_000 / interval_ms * interval_ms - history_rounds * INTERVAL_MS;

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
    let append_to_db = |t: i64, values: &[f64]| {
        let mut app = db.appender();
        for (l, v) in labels.iter().zip(values) {
            app.append(l, t, *v).unwrap();
        }
        app.commit().unwrap();
    };
    for round in 0..history_rounds {
        walk.step(&specs);
        append_to_db(start + round * INTERVAL_MS, &walk.values);
    }
    let stream_start = start + history_rounds * INTERVAL_MS;
    if compact {
        // as the server's compactor leaves it: the history in blocks, the newest hours in the head
        db.compact().unwrap();
    }

    let attach_wait_s = env("BENCH_ATTACH_WAIT_S", 0);
    if attach_wait_s > 0 {
        eprintln!("pid {} waits {attach_wait_s} s", std::process::id());
        std::thread::sleep(std::time::Duration::from_secs(attach_wait_s as u64));
    }
    // the stream, through the views; the peak resident memory is reset so that it is the install's
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before_mib = workload::common::rss_kib(std::process::id()) / 1024;
    let cpu0 = process_cpu_s();
    let wall0 = Instant::now();
    let inc = Incremental::start(workers, LOOKBACK_MS).unwrap();
    if ends_from_min > 0 {
        inc.read_back_from(Arc::clone(&db) as Arc<dyn Querier>, ends_from_min as i64 * 60_000);
    }
    // the server's clock follows the wall clock: it is at the present when views are installed
    inc.advance(stream_start - 1);
    let views: Vec<_> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let grain = grain.filter(|_| i < recording_count);
            inc.install_from(p, db.as_ref(), stream_start - 1, grain).expect("maintained")
        })
        .collect();
    let mut watches: Vec<_> =
        views[views.len() - alert_count..].iter().map(|v| inc.subscribe(*v, 0, None).unwrap()).collect();
    // the history is taken in once the views answer a read
    for v in &views {
        inc.read(*v, stream_start - 1).unwrap();
    }
    let installed_cpu = process_cpu_s() - cpu0;
    let installed_records: u64 = inc.records_total().iter().map(|(_, n)| n).sum();
    let mut stream_values = Vec::new();
    let (mut moves, mut reads, mut changes) = (0u64, 0u64, 0u64);
    let mut read_cpu = 0.0;
    eprintln!("views installed; the stream starts");
    let rss_installed = workload::common::rss_kib(std::process::id());
    let install_peak_mib = workload::rss_mib(std::process::id(), "VmHWM:");
    let arranged_installed = inc.arranged_records();
    if env("BENCH_INSTALL_ONLY", 0) == 1 {
        println!(
            "install from history: {installed_cpu:.2} s CPU; resident memory: {rss_before_mib} MiB before, peak {install_peak_mib:.0} MiB during it, {} MiB after",
            rss_installed / 1024
        );
        return;
    }
    let cpu1 = process_cpu_s();
    for round in 0..stream_rounds {
        let t = stream_start + round * INTERVAL_MS;
        walk.step(&specs);
        let per_chunk = n.div_ceil(chunks);
        for (k, (ls, vs)) in labels.chunks(per_chunk).zip(walk.values.chunks(per_chunk)).enumerate() {
            inc.append_from(ls.iter().zip(vs).map(|(l, v)| (l, t, promflow_incremental::Value::float(*v))));
            if k + 1 < chunks {
                inc.advance(t + 2 * (k as i64 + 1));
            }
        }
        stream_values.push(walk.values.clone());
        // the clock after the samples, then idle moves and evaluations until the next round
        let mut clock = t + 2 * (chunks as i64 - 1);
        while clock < t + INTERVAL_MS {
            if clock % interval_ms == EVAL_OFFSET_MS {
                let r0 = process_cpu_s();
                for v in &views {
                    inc.read(*v, clock).unwrap();
                    reads += 1;
                }
                // as the server's rule views: a minute of past kept
                inc.compact(clock - 60_000);
                read_cpu += process_cpu_s() - r0;
            } else {
                inc.advance(clock);
                if clock % COMPACT_EVERY_MS == 0 {
                    inc.compact(clock - 60_000);
                }
            }
            moves += 1;
            for w in &mut watches {
                while w.try_next().is_ok() {
                    changes += 1;
                }
            }
            // the next idle move or evaluation, whichever comes first
            let next_eval =
                (clock - EVAL_OFFSET_MS).div_euclid(interval_ms) * interval_ms + interval_ms + EVAL_OFFSET_MS;
            clock = ((clock / idle_ms + 1) * idle_ms).min(next_eval);
        }
    }
    let last = stream_start + stream_rounds * INTERVAL_MS;
    for v in &views {
        inc.read(*v, last).unwrap();
    }
    let stream_cpu = process_cpu_s() - cpu1;
    let stream_wall = wall0.elapsed().as_secs_f64();
    eprintln!("the stream ended");
    let rss_streamed = workload::common::rss_kib(std::process::id());
    let samples_kept = inc.samples_kept();
    let records: u64 = inc.records_total().iter().map(|(_, n)| n).sum::<u64>() - installed_records;
    let per_operator = inc.records_total();
    let arrangements = inc.arrangements();
    let arranged_streamed = inc.arranged_records();
    // what one idle clock move costs, with nothing else going on
    let idle0 = process_cpu_s();
    let idle_moves = 2_000;
    for k in 1..=idle_moves {
        inc.advance(last + k);
    }
    inc.read(views[0], last + idle_moves).unwrap();
    let idle_cpu = process_cpu_s() - idle0;
    inc.shutdown();

    // the same evaluations in batch
    for (round, values) in stream_values.iter().enumerate() {
        append_to_db(stream_start + round as i64 * INTERVAL_MS, values);
    }
    let batch0 = process_cpu_s();
    let mut evaluations = 0u64;
    let mut t = stream_start + EVAL_OFFSET_MS;
    while t <= last {
        if t % interval_ms == EVAL_OFFSET_MS {
            for p in &plans {
                let opts = QueryOptions { lookback_ms: LOOKBACK_MS, ..QueryOptions::instant(t) };
                evaluate(p, db.as_ref(), &opts).unwrap();
                evaluations += 1;
            }
        }
        t += INTERVAL_MS;
    }
    let batch_cpu = process_cpu_s() - batch0;

    let samples = (n as i64 * stream_rounds) as f64;
    println!(
        "{n} series, {history_min} min of history, {minutes} min of stream in {chunks} request(s) a round, {} rules every {} s, recording views {}, clock every {idle_ms} ms, {workers} worker(s)",
        plans.len(),
        interval_ms / 1000,
        if grain.is_some() { "at the evaluation times" } else { "at every sample" }
    );
    println!("install from history: {installed_cpu:.2} s CPU, {arrangements} arrangements");
    println!(
        "stream: {stream_cpu:.2} s CPU ({stream_wall:.1} s wall with install), {:.2} µs per sample; {moves} clock moves, {reads} reads ({read_cpu:.2} s CPU), {changes} watch changes",
        stream_cpu / samples * 1e6
    );
    println!(
        "records: {records} in the stream ({:.1} per sample); since the start {per_operator:?}",
        records as f64 / samples
    );
    println!(
        "resident memory: {rss_before_mib} MiB before the install, peak {install_peak_mib:.0} MiB during it, {} MiB with the views installed, {} MiB after the stream; {} samples kept in the views (windows from {ends_from_min} min kept by their ends)",
        rss_installed / 1024,
        rss_streamed / 1024,
        samples_kept
    );
    println!("records the arrangements hold: {arranged_installed:?} installed, {arranged_streamed:?} after the stream");
    println!("idle clock move: {:.1} µs CPU", idle_cpu / idle_moves as f64 * 1e6);
    println!("batch: {batch_cpu:.2} s CPU for {evaluations} rule evaluations");
    println!("incremental / batch CPU: {:.2}×", stream_cpu / batch_cpu);
}
