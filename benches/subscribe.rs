//! Live result streams under load, side by side with Prometheus 2.42 polled: standing queries
//! over active series that each receive one sample per second through remote write.
//!
//! Run with `cargo bench --bench subscribe`. Environment (defaults in brackets):
//! `BENCH_SERIES` [10000] active series, `BENCH_SUBSCRIPTIONS` [1000] queries,
//! `BENCH_SECONDS` [60] measured, `BENCH_ONLY` [both] `promflow` or `prometheus` to run one,
//! `BENCH_PROMFLOW` [the one built] a promflow binary to run, `BENCH_CLUSTER` [0]: with 1,
//! promflow alone two ways instead: one process, and a 3-node cluster whose subscriptions are
//! views on its dataflow computation (the writes go to the first node, which places each
//! series on its node, and the subscriptions to the second). `BENCH_IDLE_S` [0]: with N > 0,
//! the writes stop after the measured seconds and each server's CPU is read over N idle
//! seconds twice: with the clients still subscribed (after [`IDLE_SETTLE`], when the windows
//! have emptied; Prometheus's pollers go on polling), and again after they leave.
//!
//! The series are `bench_load{job, host}` (100 jobs); every second one remote-write request
//! carries a new value for each, stamped with the wall clock. The queries are ten shapes
//! (filters, sums, averages, quantiles, `min_over_time`/`max_over_time` over `[1m]`, …) over
//! each job's series. Each server runs alone on CPU 1; the clients run on CPU 0. After 65 s of
//! writes (windows full), the clients start, then `BENCH_SECONDS` are measured.
//!
//! - promflow: the queries are subscriptions on `/api/v1/subscribe`, 100 per connection. A
//!   write's latency for a query runs from the write's answer to the arrival of the change
//!   message stamped with the write's time (0 when the message came first).
//! - Prometheus has no subscriptions: a client that wants the same results polls them. Here
//!   one poller per 100 queries runs them once a second, as a dashboard refreshing every
//!   second would. A write's latency for a query runs from the write's answer to the end of
//!   the first poll of that query that started after it.
//!
//! Printed: p50/p99/max latency, the server's CPU over the measured seconds, and promflow's
//! resident memory before and after subscribing (per subscription), as Markdown for
//! docs/benchmarks.md; for a cluster, CPU and memory are its nodes' together (every node on
//! CPU 1).

mod workload;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promflow_remote::{Label, Sample, TimeSeries, WriteRequest};
use workload::common::{self, free_port};
use workload::{env, percentile, pin_self, start_pinned, Rng, Running, CLIENT_CPU};

const JOBS: usize = 100;
const CLIENTS_PER_CONNECTION: usize = 100;
const WARM_UP: Duration = Duration::from_secs(65);
/// With `BENCH_IDLE_S`, the wait after the last write before the idle CPU is read: longer
/// than the queries' `[1m]` windows, so that no view is still changing.
const IDLE_SETTLE: Duration = Duration::from_secs(70);

/// The `k`-th query: one of ten shapes over job `k % JOBS`.
fn query(k: usize) -> String {
    let s = format!("bench_load{{job=\"j{}\"}}", k % JOBS);
    match (k / JOBS) % 10 {
        0 => format!("{s} > 50"),
        1 => format!("sum({s})"),
        2 => format!("avg({s})"),
        3 => format!("max({s})"),
        4 => format!("min_over_time({s}[1m])"),
        5 => format!("sum(avg_over_time({s}[1m]))"),
        6 => format!("count({s} > 90)"),
        7 => format!("{s} * 2"),
        8 => format!("quantile(0.9, {s})"),
        _ => format!("max_over_time({s}[1m])"),
    }
}

/// Writes one sample per series every second, stamped with the wall clock; records each
/// write's time and when its answer came.
struct Writer {
    labels: Vec<Vec<Label>>,
    rng: Rng,
    acks: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl Writer {
    fn new(n: usize) -> Writer {
        let labels = (0..n)
            .map(|i| {
                workload::label_set(&[
                    ("__name__", "bench_load"),
                    ("host", &format!("h{i:05}")),
                    ("job", &format!("j{}", i % JOBS)),
                ])
            })
            .collect();
        Writer { labels, rng: Rng(7), acks: Arc::default() }
    }

    /// Writes every second until `until`.
    fn run(&mut self, base: &str, until: Instant) {
        let http = common::client();
        while Instant::now() < until {
            let tick = Instant::now();
            let t = common::now_ms();
            let timeseries = self
                .labels
                .iter()
                .map(|l| TimeSeries {
                    exemplars: Vec::new(),
                    labels: l.clone(),
                    samples: vec![Sample { timestamp: t, value: self.rng.below(10_000) as f64 / 100.0 }],
                    histograms: Vec::new(),
                })
                .collect();
            let body = promflow_remote::encode(&WriteRequest { timeseries, metadata: vec![] });
            workload::post_write(&http, base, body);
            self.acks.lock().unwrap().insert(t, Instant::now());
            std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
        }
    }
}

/// What the subscribers read of a message.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    time: Option<f64>,
}

/// promflow's subscribers: one thread per connection, recording each change message's time
/// (ms) and arrival. Returns when `until` passes.
fn subscribe_all(
    port: u16,
    subscriptions: usize,
    until: Instant,
) -> Vec<std::thread::JoinHandle<Vec<(i64, Instant)>>> {
    (0..subscriptions.div_ceil(CLIENTS_PER_CONNECTION))
        .map(|c| {
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let url = format!("ws://127.0.0.1:{port}/api/v1/subscribe");
                let (mut socket, _) = tungstenite::client(url, stream).expect("websocket handshake");
                let first = c * CLIENTS_PER_CONNECTION;
                for k in first..(first + CLIENTS_PER_CONNECTION).min(subscriptions) {
                    let m = serde_json::json!({"id": k, "query": query(k)}).to_string();
                    socket.send(tungstenite::Message::Text(m.into())).unwrap();
                }
                let mut seen = Vec::new();
                while Instant::now() < until {
                    let text = match socket.read() {
                        Ok(tungstenite::Message::Text(t)) => t,
                        Ok(_) => continue,
                        Err(tungstenite::Error::Io(e))
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            continue
                        }
                        Err(e) => panic!("subscription connection: {e}"),
                    };
                    let at = Instant::now();
                    // only the type and time are read: the clients share one CPU with the
                    // writer, and a tree of every message's elements is not what is measured
                    let m: Envelope = serde_json::from_str(text.as_str()).unwrap();
                    match m.kind.as_str() {
                        "change" => seen.push(((m.time.unwrap_or(0.0) * 1000.0).round() as i64, at)),
                        "error" => panic!("subscription refused: {text}"),
                        _ => {}
                    }
                }
                seen
            })
        })
        .collect()
}

/// Prometheus's pollers: one thread per 100 queries, each running them once a second and
/// recording (start, end) of each poll of each query. Returns when `until` passes.
fn poll_all(
    base: &str,
    queries: usize,
    until: Instant,
) -> Vec<std::thread::JoinHandle<Vec<(usize, Instant, Instant)>>> {
    (0..queries.div_ceil(CLIENTS_PER_CONNECTION))
        .map(|c| {
            let base = base.to_string();
            std::thread::spawn(move || {
                let http = common::client();
                let first = c * CLIENTS_PER_CONNECTION;
                let mut polls = Vec::new();
                while Instant::now() < until {
                    let round = Instant::now();
                    for k in first..(first + CLIENTS_PER_CONNECTION).min(queries) {
                        let start = Instant::now();
                        let r = http
                            .get(format!("{base}/api/v1/query"))
                            .query(&[("query", query(k))])
                            .send()
                            .expect("query");
                        assert!(r.status().is_success(), "query answered {}", r.status());
                        let _ = r.text();
                        polls.push((k, start, Instant::now()));
                    }
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
                }
                polls
            })
        })
        .collect()
}

fn metric(base: &str, name: &str) -> f64 {
    let text =
        common::client().get(format!("{base}/metrics")).send().and_then(|r| r.text()).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// How a system runs in this benchmark.
enum Setup {
    /// One server: promflow or Prometheus (`bin`).
    One { bin: String, promflow: bool },
    /// promflow as a cluster of [`CLUSTER_NODES`] nodes with its dataflow computation.
    Cluster,
}

/// The nodes of a `BENCH_CLUSTER` cluster.
const CLUSTER_NODES: usize = 3;

/// The systems to run, by name.
fn setups() -> Vec<(&'static str, Setup)> {
    if env("BENCH_CLUSTER", 0) == 1 {
        let one = Setup::One { bin: workload::promflow_binary(), promflow: true };
        return vec![("promflow, one process", one), ("promflow, 3 nodes", Setup::Cluster)];
    }
    workload::systems("Prometheus 2.42 (polled every second)")
        .into_iter()
        .map(|(name, bin)| (name, Setup::One { promflow: name == "promflow", bin }))
        .collect()
}

/// Starts `setup` under `dir`: its servers (one, or a cluster's nodes).
fn start(setup: &Setup, dir: &std::path::Path, subscriptions: usize, name: &str) -> Vec<Running> {
    let cfg = dir.join("bench.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").unwrap();
    let limit = vec![format!("--subscribe.max-total={subscriptions}")];
    match setup {
        Setup::One { bin, promflow } => {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut args = vec![
                format!("--config.file={}", cfg.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={addr}"),
                "--web.enable-remote-write-receiver".to_string(),
            ];
            if *promflow {
                args.extend(limit);
            }
            vec![start_pinned(bin, &args, dir, &addr, "/-/ready", name)]
        }
        Setup::Cluster => workload::start_cluster(dir, &cfg, CLUSTER_NODES, true, &limit),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 10_000);
    let subscriptions = env("BENCH_SUBSCRIPTIONS", 1000);
    let seconds = env("BENCH_SECONDS", 60);
    let idle = Duration::from_secs(env("BENCH_IDLE_S", 0) as u64);
    pin_self(CLIENT_CPU);
    let mut table = Vec::new();
    let mut idle_table = Vec::new();
    for (name, setup) in setups() {
        let promflow = !matches!(setup, Setup::One { promflow: false, .. });
        let dir = tempfile::tempdir().unwrap();
        let servers = start(&setup, dir.path(), subscriptions, name);
        // written to the first node, subscribed on the second
        let server = &servers[0];
        let asked = servers.get(1).unwrap_or(server);
        let port: u16 = asked.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
        let cpu_seconds = || pids.iter().map(|p| workload::cpu_seconds(*p)).sum::<f64>();
        let rss_each = || pids.iter().map(|p| workload::rss_mib(*p, "VmRSS:")).collect::<Vec<f64>>();
        let rss_mib = || rss_each().iter().sum::<f64>();
        let mut writer = Writer::new(n);
        let acks = Arc::clone(&writer.acks);
        writer.run(&server.base, Instant::now() + WARM_UP);
        let (rss_before, each_before) = (rss_mib(), rss_each());
        // the clients start, then a few seconds for every view's history before measuring
        let end = Instant::now() + Duration::from_secs(seconds as u64 + 15);
        let measure_from = Instant::now() + Duration::from_secs(15);
        // with an idle reading, the clients stay through it
        let clients_end = if idle.is_zero() { end } else { end + IDLE_SETTLE + idle };
        let (subscribers, pollers) = if promflow {
            (subscribe_all(port, subscriptions, clients_end), Vec::new())
        } else {
            (Vec::new(), poll_all(&server.base, subscriptions, clients_end))
        };
        writer.run(&server.base, measure_from);
        // the dataflow's gauges while every client is subscribed
        let gauges: Vec<(&str, f64)> = if promflow {
            ["promflow_subscriptions", "promflow_dataflow_arrangements", "promflow_dataflow_samples_kept"]
                .into_iter()
                .map(|m| (m, metric(&asked.base, m)))
                .collect()
        } else {
            Vec::new()
        };
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        writer.run(&server.base, end);
        let cpu = cpu_seconds() - cpu0;
        let elapsed = t0.elapsed().as_secs_f64();
        let (rss_after, each_after) = (rss_mib(), rss_each());
        // the servers' CPU over the next `idle` seconds, in % of one core
        let idle_share = || {
            let cpu0 = cpu_seconds();
            std::thread::sleep(idle);
            (cpu_seconds() - cpu0) / idle.as_secs_f64() * 100.0
        };
        let idle_with_clients = (!idle.is_zero()).then(|| {
            std::thread::sleep(IDLE_SETTLE);
            idle_share()
        });
        // writes answered in the measured seconds, early enough for what they cause to be seen
        let cutoff = end - Duration::from_secs(2);
        let acks: HashMap<i64, Instant> = acks
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| **a >= t0 && **a < cutoff)
            .map(|(t, a)| (*t, *a))
            .collect();
        let mut latencies: Vec<f64> = Vec::new();
        if promflow {
            for handle in subscribers {
                for (t, at) in handle.join().expect("subscriber") {
                    if let Some(&ack) = acks.get(&t) {
                        latencies.push(at.saturating_duration_since(ack).as_secs_f64() * 1000.0);
                    }
                }
            }
        } else {
            let mut acked: Vec<Instant> = acks.values().copied().collect();
            acked.sort();
            for handle in pollers {
                let mut polls = handle.join().expect("poller");
                polls.sort_by_key(|p| (p.0, p.1));
                // each write's latency for a query: to the end of the first poll started after
                for w in &acked {
                    let mut k = usize::MAX;
                    for &(q, start, end) in &polls {
                        if q != k && start >= *w {
                            k = q;
                            latencies.push((end - *w).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
        }
        assert!(!latencies.is_empty(), "{name}: no change was seen");
        if let Some(with_clients) = idle_with_clients {
            // the clients have left (their threads are joined): a moment for the server to see it
            std::thread::sleep(Duration::from_secs(5));
            if promflow {
                assert_eq!(metric(&asked.base, "promflow_subscriptions"), 0.0, "{name}: subscriptions left");
            }
            idle_table.push((name, with_clients, idle_share()));
        }
        latencies.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: {} latencies, cpu {cpu:.1} s over {elapsed:.0} s, rss {rss_before:.0} -> {rss_after:.0} MiB",
            latencies.len()
        );
        for (m, value) in gauges {
            eprintln!("  {m} {value}");
        }
        if pids.len() > 1 {
            let each: Vec<String> =
                each_before.iter().zip(&each_after).map(|(b, a)| format!("{b:.0} -> {a:.0}")).collect();
            eprintln!("  rss of each node, MiB: {}", each.join(", "));
        }
        table.push((
            name,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
            cpu,
            (rss_before, rss_after),
        ));
        drop(servers);
    }
    println!(
        "{n} active series written every second, {subscriptions} standing queries, {seconds} s measured\n"
    );
    println!(
        "| system | p50, ms | p99, ms | max, ms | server CPU, s | RSS before / with the clients, MiB | KiB per subscription |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, p50, p99, max, cpu, (before, after)) in &table {
        let per = (after - before) * 1024.0 / subscriptions as f64;
        println!(
            "| {name} | {p50:.1} | {p99:.1} | {max:.1} | {cpu:.1} | {before:.0} / {after:.0} | {per:.1} |"
        );
    }
    if !idle_table.is_empty() {
        println!("\nIdle (no writes), server CPU over {} s, % of one core\n", idle.as_secs());
        println!("| system | with {subscriptions} idle subscriptions | after the clients leave |");
        println!("|---|---|---|");
        for (name, with_clients, without) in &idle_table {
            println!("| {name} | {with_clients:.2} | {without:.2} |");
        }
    }
    if table.len() == 2 && table[1].0.starts_with("Prometheus") {
        println!(
            "promflow / Prometheus p99: {:.4}×, server CPU: {:.2}×",
            table[0].2 / table[1].2,
            table[0].4 / table[1].4
        );
    }
}
