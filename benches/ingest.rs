//! Remote-write ingest at ≥100k active series, side by side: promflow, Debian's Prometheus
//! 2.42 and Debian's VictoriaMetrics, each alone in turn on the same pre-encoded requests.
//!
//! Run with `cargo bench --bench ingest`. Environment (defaults in brackets):
//! `BENCH_SERIES` [100000], `BENCH_ROUNDS` [40] samples per series at 15 s,
//! `BENCH_REPS` [3], `BENCH_CONNS` [4] concurrent senders, `BENCH_SYSTEMS`
//! [promflow,prometheus,vm] (promflow always runs: the ratios are against it).
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

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, median, peer, rss_kib, wait_for};
use promflow_remote::{Label, Sample, TimeSeries, WriteRequest};

const SERIES_PER_REQUEST: usize = 2000;
const INTERVAL_MS: i64 = 15_000;
const SERVER_CPU: &str = "1";
const CLIENT_CPU: usize = 0;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// splitmix64: a small deterministic generator, so every run sends the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a series' value moves from one sample to the next.
#[derive(Clone, Copy)]
enum Kind {
    /// A counter growing by whole units up to `step`, reset to 0 once in ~500 samples.
    Counter { step: u64 },
    /// A counter of CPU seconds: up to 15 s per interval in 0.01 steps.
    CpuSeconds,
    /// A gauge walking around `level` by up to 1 %, in whole units.
    Gauge { level: u64 },
    /// A gauge with two decimals (load averages).
    Load,
}

struct SeriesSpec {
    labels: Vec<Label>,
    kind: Kind,
}

fn label_set(pairs: &[(&str, &str)]) -> Vec<Label> {
    let mut l: Vec<Label> =
        pairs.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect();
    l.sort_by(|a, b| a.name.cmp(&b.name));
    l
}

/// The series of one host: about 185, node_exporter's usual families plus an application.
fn host_series(host: usize, out: &mut Vec<SeriesSpec>) {
    let node = format!("host-{host:05}:9100");
    let app = format!("host-{host:05}:8080");
    let mut push = |name: &str, inst: &str, job: &str, extra: &[(&str, &str)], kind: Kind| {
        let mut pairs = vec![("__name__", name), ("instance", inst), ("job", job)];
        pairs.extend_from_slice(extra);
        out.push(SeriesSpec { labels: label_set(&pairs), kind });
    };
    for cpu in ["0", "1", "2", "3"] {
        for mode in ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"] {
            push("node_cpu_seconds_total", &node, "node", &[("cpu", cpu), ("mode", mode)], Kind::CpuSeconds);
        }
    }
    for (dev, fs, mp) in [
        ("/dev/sda1", "ext4", "/"),
        ("/dev/sda2", "ext4", "/var"),
        ("/dev/sdb1", "xfs", "/data"),
        ("tmpfs", "tmpfs", "/run"),
    ] {
        for m in ["node_filesystem_avail_bytes", "node_filesystem_free_bytes", "node_filesystem_size_bytes"] {
            let extra = [("device", dev), ("fstype", fs), ("mountpoint", mp)];
            push(m, &node, "node", &extra, Kind::Gauge { level: 50 << 30 });
        }
    }
    for dev in ["eth0", "lo"] {
        for (m, step) in [
            ("node_network_receive_bytes_total", 2_000_000),
            ("node_network_transmit_bytes_total", 1_000_000),
            ("node_network_receive_packets_total", 2_000),
            ("node_network_transmit_packets_total", 1_500),
        ] {
            push(m, &node, "node", &[("device", dev)], Kind::Counter { step });
        }
    }
    for dev in ["sda", "sdb"] {
        for (m, step) in [
            ("node_disk_read_bytes_total", 4_000_000),
            ("node_disk_written_bytes_total", 8_000_000),
            ("node_disk_reads_completed_total", 300),
            ("node_disk_writes_completed_total", 600),
            ("node_disk_discards_completed_total", 8),
        ] {
            push(m, &node, "node", &[("device", dev)], Kind::Counter { step });
        }
    }
    for m in [
        "Active",
        "Buffers",
        "Cached",
        "Committed_AS",
        "Dirty",
        "Inactive",
        "Mapped",
        "MemAvailable",
        "MemFree",
        "MemTotal",
        "PageTables",
        "SReclaimable",
        "SUnreclaim",
        "Shmem",
        "Slab",
        "SwapCached",
        "SwapFree",
        "SwapTotal",
        "VmallocUsed",
        "Writeback",
    ] {
        push(&format!("node_memory_{m}_bytes"), &node, "node", &[], Kind::Gauge { level: 4 << 30 });
    }
    for m in ["node_load1", "node_load5", "node_load15"] {
        push(m, &node, "node", &[], Kind::Load);
    }
    let handlers = ["/api/v1/orders", "/api/v1/users", "/api/v1/search", "/healthz", "/metrics"];
    for handler in handlers {
        for method in ["GET", "POST"] {
            for code in ["200", "404", "500"] {
                let extra = [("code", code), ("handler", handler), ("method", method)];
                push("http_requests_total", &app, "app", &extra, Kind::Counter { step: 50 });
            }
        }
    }
    let les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
    for handler in handlers {
        for le in les {
            let extra = [("handler", handler), ("le", le)];
            push("http_request_duration_seconds_bucket", &app, "app", &extra, Kind::Counter { step: 40 });
        }
        push(
            "http_request_duration_seconds_count",
            &app,
            "app",
            &[("handler", handler)],
            Kind::Counter { step: 40 },
        );
        push("http_request_duration_seconds_sum", &app, "app", &[("handler", handler)], Kind::CpuSeconds);
    }
}

/// `n` series: whole hosts, the last one cut short.
fn all_series(n: usize) -> Vec<SeriesSpec> {
    let mut out = Vec::with_capacity(n + 200);
    let mut host = 0;
    while out.len() < n {
        host_series(host, &mut out);
        host += 1;
    }
    out.truncate(n);
    out
}

/// The remote-write bodies: `bodies[round][chunk]`, chunk = 2,000 consecutive series.
fn encode_rounds(specs: &[SeriesSpec], rounds: usize, start_ms: i64) -> Vec<Vec<Arc<Vec<u8>>>> {
    let mut rng = Rng(0x5eed);
    let mut value: Vec<f64> = specs
        .iter()
        .map(|s| match s.kind {
            Kind::Counter { step } => (rng.below(1000) * step) as f64,
            Kind::CpuSeconds => rng.below(10_000_000) as f64 / 100.0,
            Kind::Gauge { level } => (level / 2 + rng.below(level)) as f64,
            Kind::Load => rng.below(400) as f64 / 100.0,
        })
        .collect();
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let t = start_ms + round as i64 * INTERVAL_MS;
        let mut bodies = Vec::new();
        for (c, chunk) in specs.chunks(SERIES_PER_REQUEST).enumerate() {
            let base = c * SERIES_PER_REQUEST;
            let timeseries = chunk
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let v = &mut value[base + i];
                    if round > 0 {
                        *v = match spec.kind {
                            Kind::Counter { .. } | Kind::CpuSeconds if rng.below(500) == 0 => 0.0,
                            Kind::Counter { step } => *v + rng.below(step + 1) as f64,
                            // whole hundredths, kept exact by rounding the sum
                            Kind::CpuSeconds => ((*v * 100.0).round() + rng.below(1501) as f64) / 100.0,
                            Kind::Gauge { level } => {
                                let d = rng.below(level / 50 + 1) as f64 - (level / 100) as f64;
                                (*v + d).max(0.0)
                            }
                            Kind::Load => rng.below(400) as f64 / 100.0,
                        };
                    }
                    TimeSeries {
                        labels: spec.labels.clone(),
                        samples: vec![Sample { timestamp: t, value: *v }],
                    }
                })
                .collect();
            bodies.push(Arc::new(promflow_remote::encode(&WriteRequest { timeseries, metadata: vec![] })));
        }
        out.push(bodies);
    }
    out
}

/// A server under test: its process (killed on drop) and where to reach it.
struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum System {
    Promflow,
    Prometheus,
    VictoriaMetrics,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Promflow => "promflow",
            System::Prometheus => "Prometheus 2.42",
            System::VictoriaMetrics => "VictoriaMetrics",
        }
    }

    fn start(self, dir: &Path) -> Running {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.join("bench.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").unwrap();
        let data = dir.join("data");
        let (bin, args, ready): (String, Vec<String>, &str) = match self {
            // the same flags: promflow takes Prometheus's command line
            System::Promflow | System::Prometheus => (
                if self == System::Promflow { env!("CARGO_BIN_EXE_promflow") } else { "prometheus" }
                    .to_string(),
                vec![
                    format!("--config.file={}", cfg.display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    format!("--web.listen-address={addr}"),
                    "--web.enable-remote-write-receiver".into(),
                ],
                "/-/ready",
            ),
            System::VictoriaMetrics => (
                "victoria-metrics".into(),
                vec![
                    format!("-storageDataPath={}", data.display()),
                    format!("-httpListenAddr={addr}"),
                    "-retentionPeriod=100y".into(),
                    "-loggerLevel=ERROR".into(),
                    "-search.maxUniqueTimeseries=10000000".into(),
                ],
                "/health",
            ),
        };
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new("taskset")
            .args(["-c", SERVER_CPU])
            .arg(&bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start server under taskset");
        let mut server = Running { child, base: format!("http://{addr}") };
        let http = common::client();
        let up = wait_for(Duration::from_secs(60), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{} exited early: {status}", self.name());
            }
            http.get(format!("{}{ready}", server.base)).send().ok().filter(|r| r.status().is_success())
        });
        assert!(up.is_some(), "{} did not become ready", self.name());
        server
    }

    /// How many series the server holds, by its own count.
    fn series_count(self, server: &Running) -> Option<u64> {
        let http = common::client();
        if self == System::VictoriaMetrics {
            let _ = http.get(format!("{}/internal/force_flush", server.base)).send();
        }
        let url = format!("{}/api/v1/query?query=count(%7B__name__%3D~%22.%2B%22%7D)", server.base);
        let v: serde_json::Value = serde_json::from_str(&http.get(url).send().ok()?.text().ok()?).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// Sends `rounds` of every request with `conns` senders; each sender owns the chunks
/// `k, k + conns, …` and sends them round by round. Panics on any non-2xx answer.
fn send(base: &str, bodies: &[Vec<Arc<Vec<u8>>>], conns: usize) {
    let url = format!("{base}/api/v1/write");
    std::thread::scope(|scope| {
        for k in 0..conns {
            let url = &url;
            scope.spawn(move || {
                let http = common::client();
                for round in bodies {
                    for body in round.iter().skip(k).step_by(conns) {
                        let r = http
                            .post(url)
                            .header("Content-Type", "application/x-protobuf")
                            .header("Content-Encoding", "snappy")
                            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                            .body(body.as_ref().clone())
                            .send()
                            .expect("remote write");
                        let code = r.status();
                        let text = r.text().unwrap_or_default();
                        assert!(code.is_success(), "remote write answered {code}: {text}");
                    }
                }
            });
        }
    });
}

struct Run {
    create_sps: f64,
    steady_sps: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    series: Option<u64>,
}

fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get a
    // pointer to it that lives for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 100_000);
    let rounds = env("BENCH_ROUNDS", 40).max(2);
    let reps = env("BENCH_REPS", 3);
    let conns = env("BENCH_CONNS", 4);
    pin_self(CLIENT_CPU);
    let only = std::env::var("BENCH_SYSTEMS").unwrap_or_else(|_| "promflow,prometheus,vm".into());
    let wanted = |name: &str| only.split(',').any(|s| s.trim() == name);
    let mut systems = vec![System::Promflow];
    if wanted("prometheus") && peer("prometheus").is_some() {
        systems.push(System::Prometheus);
    }
    if wanted("vm") && peer("victoria-metrics").is_some() {
        systems.push(System::VictoriaMetrics);
    }
    let specs = all_series(n);
    // whole minutes, ending a minute before now: inside every system's accepted window
    let start_ms = (common::now_ms() - (rounds as i64 + 4) * INTERVAL_MS) / 60_000 * 60_000;
    eprintln!("encoding {n} series × {rounds} rounds …");
    let bodies = encode_rounds(&specs, rounds, start_ms);
    let bytes: usize = bodies.iter().flatten().map(|b| b.len()).sum();
    eprintln!("{} requests, {:.1} MB snappy", bodies.len() * bodies[0].len(), bytes as f64 / 1e6);
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
            let t1 = Instant::now();
            send(&server.base, &bodies[1..], conns);
            let steady = t1.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_secs(5));
            let rss_after = rss_kib(pid);
            let series = system.series_count(&server);
            let run = Run {
                create_sps: n as f64 / create,
                steady_sps: (n * (rounds - 1)) as f64 / steady,
                rss_before_mib: rss_before as f64 / 1024.0,
                rss_after_mib: rss_after as f64 / 1024.0,
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

    println!("{n} active series, {rounds} samples each at 15 s, {SERIES_PER_REQUEST} series per request, {conns} senders; medians of {reps}\n");
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
