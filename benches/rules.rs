//! What keeping rules current costs, side by side with Prometheus 2.42: process CPU and peak
//! memory of each server with and without the same rule set, under the same remote-write
//! stream, each measured alone in turn.
//!
//! Run with `cargo bench --bench rules`. Environment (defaults in brackets): `BENCH_SERIES`
//! [20000] active series, `BENCH_HISTORY_MIN` [55] minutes of history sent before the
//! stream, `BENCH_MINUTES` [10] of live stream (one sample per series every 15 s, stamped with
//! the wall clock), `BENCH_INTERVAL_S` [60] evaluation interval, `BENCH_REPS` [3],
//! `BENCH_REP_FROM` [0] the first repetition's number (the rotation of the runs follows it, so
//! that repetitions can be run in several sittings), `BENCH_ONLY` [all] one of `promflow`, `prometheus` to run only that system with its rules,
//! or without them with `:without` after the name (for profiling; no ratio is printed then). `BENCH_PROMFLOW` [this build's] the promflow
//! binary to run. `BENCH_SETTLE_S` [one evaluation interval and a round] how long after the
//! reload the measurement starts: at a million series the views take in their history for
//! longer than the default, which would put that work in the measured window. The reported
//! scale is `BENCH_SERIES=50000
//! BENCH_HISTORY_MIN=1440 BENCH_MINUTES=10`.
//!
//! Per repetition every combination runs once, rotated: promflow and Prometheus, each with
//! the rule set and without it. A run starts the server pinned to CPU 1 (`taskset`) without
//! rules and sends the history as fast as the server takes it (every series with 20 samples
//! per request, encoded as it goes), then the rounds whose time passed meanwhile (in blocks
//! too), then the stream until the server's compaction has been still for 75 s (merges after a backfill are
//! no part of the rules' cost; the window still holds the compactions a stream causes). Then the
//! rule set (or none) is loaded by a reload (SIGHUP), as on a server restarted over its
//! data: rules loaded earlier would write their outputs at the wall clock and put a day of
//! history out of bounds. Then the stream runs in real time. Measured: the server's CPU time
//! (user + system, `/proc/<pid>/stat`) over the stream only, from one evaluation interval and
//! a round after the reload (the time to catch up with the history, whose CPU is printed
//! apart); its peak resident memory (`VmHWM`, reset through `clear_refs` after the history,
//! so that it is the peak with the rules, not the backfill's) and its resident memory at the
//! end (`VmRSS`). Rule CPU is the CPU with rules minus the CPU without them, per system and
//! repetition; medians are printed as a Markdown table for docs/benchmarks.md. Each run also
//! prints the part of its CPU spent compacting storage: at the reported scale a block merge
//! can fall in one run's window and not in another's, and is no part of the rules' cost.
//!
//! The rule set (`rule_file`) follows the node-exporter and application mixins: recording
//! rules over `rate`, `increase`, `avg_over_time` and `max_over_time` with `[5m]`, `[1h]` and
//! `[1d]` windows, sums and ratios by instance and job that share those sub-expressions,
//! classic histogram quantiles, and alerting rules.

mod workload;

use std::path::Path;
use std::time::{Duration, Instant};

use workload::common::{self, free_port, median, peer};
use workload::{
    all_series, cpu_seconds, env, pin_self, rss_mib, rule_file, send, send_history, start_pinned, Rounds,
    Running, CLIENT_CPU, HISTORY_BLOCK_ROUNDS, INTERVAL_MS,
};

#[derive(Clone, Copy, PartialEq)]
enum System {
    Promflow,
    Prometheus,
}

impl System {
    fn name(self) -> &'static str {
        self.measured().name()
    }

    /// The same system as the other benchmarks name it.
    fn measured(self) -> workload::System {
        match self {
            System::Promflow => workload::System::Promflow,
            System::Prometheus => workload::System::Prometheus,
        }
    }

    /// Starts the server in `dir` without rules; `load_rules` gives it its rule set later.
    fn start(self, dir: &Path, interval_s: usize) -> Running {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = write_config(dir, None, interval_s);
        let bin = if self == System::Promflow { workload::promflow_binary() } else { "prometheus".into() };
        let args = [
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
            "--web.enable-remote-write-receiver".to_string(),
        ];
        start_pinned(&bin, &args, dir, &addr, "/-/ready", self.name())
    }
}

/// Writes the server's configuration in `dir`, with `rules` as its rule file if given.
fn write_config(dir: &Path, rules: Option<&str>, interval_s: usize) -> std::path::PathBuf {
    let cfg = dir.join("bench.yml");
    let mut config = format!("global:\n  scrape_interval: 15s\n  evaluation_interval: {interval_s}s\n");
    if let Some(text) = rules {
        std::fs::write(dir.join("rules.yml"), text).unwrap();
        config.push_str("rule_files:\n  - rules.yml\n");
    }
    std::fs::write(&cfg, config).unwrap();
    cfg
}

/// Rewrites the configuration with `rules` (or none) and reloads it with SIGHUP, as both
/// servers do; waits until the API lists `count` rules (at most 15 minutes: at a million
/// series promflow installs the alerts' views from the history during the reload) and says
/// how long that took.
fn load_rules(server: &Running, dir: &Path, rules: Option<&str>, interval_s: usize, count: usize) {
    write_config(dir, rules, interval_s);
    let started = Instant::now();
    // SAFETY: kill(2) with a pid this process started and still holds
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGHUP) };
    let loaded = common::wait_for(Duration::from_secs(900), || {
        rule_healths(&server.base).filter(|h| h.len() == count).map(|_| ())
    });
    assert!(loaded.is_some(), "the server did not load its {count} rules");
    eprintln!("  {count} rules loaded {:.1} s after the reload signal", started.elapsed().as_secs_f64());
}

/// The health of every rule the server's `/api/v1/rules` lists, or `None` if it does not
/// answer.
fn rule_healths(base: &str) -> Option<Vec<String>> {
    let text = common::client().get(format!("{base}/api/v1/rules")).send().ok()?.text().ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let rules = v["data"]["groups"]
        .as_array()?
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default());
    Some(rules.map(|r| r["health"].as_str().unwrap_or("?").to_string()).collect())
}

/// How long compaction must stay still to count as done: both servers look for work to
/// compact once a minute.
const COMPACTION_QUIET: Duration = Duration::from_secs(75);

/// Keeps the stream going, each round when due, until the server's compaction has not moved
/// for `COMPACTION_QUIET` (at most 20 minutes); returns how long that took.
fn wait_for_compaction(system: System, pid: u32, base: &str, rounds: &mut Rounds) -> Duration {
    workload::wait_for_compaction(
        system.measured(),
        pid,
        base,
        COMPACTION_QUIET,
        Duration::from_secs(1200),
        || {
            while rounds.next_ms() <= common::now_ms() {
                send(base, &[rounds.next_block(1)], 2);
            }
        },
    )
}

/// Seconds the server has spent compacting its storage (see [`workload::System::compaction_seconds`]).
fn compaction_seconds(system: System, pid: u32, base: &str) -> f64 {
    system.measured().compaction_seconds(pid, base)
}

struct Run {
    cpu_s: f64,
    peak_rss_mib: f64,
    end_rss_mib: f64,
    rule_health: String,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 20_000);
    let history_min = env("BENCH_HISTORY_MIN", 55);
    let minutes = env("BENCH_MINUTES", 10);
    let interval_s = env("BENCH_INTERVAL_S", 60);
    let reps = env("BENCH_REPS", 3);
    let rep_from = env("BENCH_REP_FROM", 0);
    pin_self(CLIENT_CPU);
    if peer("prometheus").is_none() {
        eprintln!("prometheus not installed: nothing to compare with");
        return;
    }
    let (rules, rule_count) = rule_file();
    let specs = all_series(n);
    let history_rounds = history_min * 60_000 / INTERVAL_MS as usize;
    // after the history, one evaluation interval and a round of stream let both servers catch
    // up with it before the CPU is measured: promflow's views take in what arrived after
    // their installation, Prometheus runs its first evaluations
    let settle_ms = match env("BENCH_SETTLE_S", 0) {
        0 => interval_s as i64 * 1000 + INTERVAL_MS,
        s => s as i64 * 1000,
    };
    let measured_rounds = minutes * 60_000 / INTERVAL_MS as usize;
    let combos = [
        (System::Promflow, true),
        (System::Prometheus, true),
        (System::Promflow, false),
        (System::Prometheus, false),
    ];
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let (only, only_with_rules) = match only.strip_suffix(":without") {
        Some(system) => (system.to_string(), false),
        None => (only, true),
    };
    let mut runs: Vec<Vec<Run>> = combos.iter().map(|_| Vec::new()).collect();
    for rep in rep_from..rep_from + reps {
        for i in 0..combos.len() {
            let which = (rep + i) % combos.len();
            let (system, with_rules) = combos[which];
            if !only.is_empty()
                && (with_rules != only_with_rules || !system.name().to_lowercase().starts_with(&only))
            {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let server = system.start(dir.path(), interval_s);
            let pid = server.child.id();
            // the samples' times: history up to now, then one round every 15 s
            let now = common::now_ms() / INTERVAL_MS * INTERVAL_MS;
            let start_ms = now - history_rounds as i64 * INTERVAL_MS;
            eprintln!("rep {rep} {} rules={with_rules}: history", system.name());
            let cpu_start = cpu_seconds(pid);
            let history_started = Instant::now();
            let mut rounds = send_history(&server.base, Rounds::new(&specs, start_ms), history_rounds);
            // the rounds whose time passed while the history went, in blocks as the history
            // went: Prometheus takes a million series a round (2,000 series a request) barely
            // faster than they come, and would take hours to catch up one round at a time
            while rounds.next_ms() <= common::now_ms() {
                let due = (common::now_ms() - rounds.next_ms()) / INTERVAL_MS + 1;
                send(&server.base, &[rounds.next_block((due as usize).min(HISTORY_BLOCK_ROUNDS))], 2);
            }
            let history_s = history_started.elapsed().as_secs_f64();
            // both servers merge blocks after a backfill (promflow's compactor used 36 s of CPU
            // at the reported scale); that is no part of the rules' cost, so it ends first
            let compaction_wait = wait_for_compaction(system, pid, &server.base, &mut rounds);
            let cpu_history = cpu_seconds(pid);
            let history_peak_mib = rss_mib(pid, "VmHWM:");
            // "5" resets the peak resident set size to the current one (proc(5))
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
            // the rules come after the history, as to a server restarted over its data: their
            // outputs, written at the wall clock, would put a day of history out of bounds
            let (rules, count) = if with_rules { (Some(rules.as_str()), rule_count) } else { (None, 0) };
            load_rules(&server, dir.path(), rules, interval_s, count);
            // the stream, each round when due
            let measure_from = common::now_ms() + settle_ms;
            let (mut cpu0, mut t0, mut measured) = (cpu_history, Instant::now(), None);
            let mut compaction0 = 0.0;
            while measured.is_none_or(|m| m < measured_rounds) {
                let due = rounds.next_ms();
                let wait = due - common::now_ms();
                if wait > 0 {
                    std::thread::sleep(Duration::from_millis(wait as u64));
                }
                if measured.is_none() && due >= measure_from {
                    (cpu0, t0, measured) = (cpu_seconds(pid), Instant::now(), Some(0));
                    compaction0 = compaction_seconds(system, pid, &server.base);
                }
                send(&server.base, &[rounds.next_block(1)], 2);
                measured = measured.map(|m| m + 1);
            }
            // the last round's evaluations
            std::thread::sleep(Duration::from_millis(INTERVAL_MS as u64));
            let cpu_s = cpu_seconds(pid) - cpu0;
            let compaction_s = compaction_seconds(system, pid, &server.base) - compaction0;
            let elapsed = t0.elapsed().as_secs_f64();
            let healths = rule_healths(&server.base).unwrap_or_default();
            let ok = healths.iter().filter(|h| *h == "ok").count();
            let run = Run {
                cpu_s,
                peak_rss_mib: rss_mib(pid, "VmHWM:"),
                end_rss_mib: rss_mib(pid, "VmRSS:"),
                rule_health: format!("{ok}/{} ok", healths.len()),
            };
            eprintln!(
                "rep {rep} {:<16} rules={with_rules:<5} cpu {:.1} s over {:.0} s (of which compaction {:.1} s; history and its compaction {:.1} s in {:.0} + {:.0} s, peak {:.0} MiB; catching up {:.1} s), rss peak {:.0} / end {:.0} MiB, rules {}",
                system.name(),
                run.cpu_s,
                elapsed,
                compaction_s,
                cpu_history - cpu_start,
                history_s,
                compaction_wait.as_secs_f64(),
                history_peak_mib,
                cpu0 - cpu_history,
                run.peak_rss_mib,
                run.end_rss_mib,
                run.rule_health
            );
            if with_rules {
                // what each server's rules cost it: promflow's views, and how long
                // Prometheus's group evaluations take against their interval
                let prefixes: &[&str] = match system {
                    System::Promflow => &["promflow_dataflow", "promflow_rule_expressions"],
                    System::Prometheus => &[
                        "prometheus_rule_group_last_duration_seconds",
                        "prometheus_rule_group_iterations_total",
                        "prometheus_rule_group_iterations_missed_total",
                    ],
                };
                let metrics =
                    common::client().get(format!("{}/metrics", server.base)).send().unwrap().text().unwrap();
                for l in metrics.lines().filter(|l| prefixes.iter().any(|p| l.starts_with(p))) {
                    eprintln!("  {l}");
                }
            }
            runs[which].push(run);
        }
    }
    if !only.is_empty() {
        return;
    }
    println!(
        "{n} active series, {history_min} min of history, {} s of stream to catch up, then {minutes} min of stream at 15 s measured, {rule_count} rules every {interval_s} s; medians of {reps}\n",
        settle_ms / 1000
    );
    println!("| system | CPU with rules, s | CPU without, s | rule CPU, s | peak RSS with / without, MiB | RSS at the end with / without, MiB | rule health |");
    println!("|---|---|---|---|---|---|---|");
    let mut rule_cpu = Vec::new();
    for (k, system) in [System::Promflow, System::Prometheus].iter().enumerate() {
        let (with, without) = (&runs[k], &runs[k + 2]);
        let diff: Vec<f64> = with.iter().zip(without).map(|(a, b)| a.cpu_s - b.cpu_s).collect();
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} | {:.0} / {:.0} | {} |",
            system.name(),
            median(with.iter().map(|r| r.cpu_s).collect()),
            median(without.iter().map(|r| r.cpu_s).collect()),
            median(diff.clone()),
            median(with.iter().map(|r| r.peak_rss_mib).collect()),
            median(without.iter().map(|r| r.peak_rss_mib).collect()),
            median(with.iter().map(|r| r.end_rss_mib).collect()),
            median(without.iter().map(|r| r.end_rss_mib).collect()),
            with.iter().map(|r| r.rule_health.clone()).collect::<Vec<_>>().join(", "),
        );
        rule_cpu.push(diff);
    }
    let ratio: Vec<f64> = rule_cpu[0].iter().zip(&rule_cpu[1]).map(|(a, b)| a / b).collect();
    println!("\npromflow / Prometheus rule CPU: {:.2}× (median of per-repetition ratios)", median(ratio));
}
