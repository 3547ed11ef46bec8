//! The remote-write workload shared by the benchmarks that load a server: node_exporter-like
//! hosts plus an application per host, encoded as Prometheus's remote-write requests, and the
//! senders and process handling around them.
#![allow(dead_code)]

use std::process::Child;
use std::sync::Arc;

use promflow_remote::{Label, Sample, TimeSeries, WriteRequest};

#[path = "../../tests/common/mod.rs"]
pub mod common;

pub const SERIES_PER_REQUEST: usize = 2000;
pub const INTERVAL_MS: i64 = 15_000;
pub const SERVER_CPU: &str = "1";
pub const CLIENT_CPU: usize = 0;

pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// splitmix64: a small deterministic generator, so every run sends the same bytes.
pub struct Rng(u64);

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
pub enum Kind {
    /// A counter growing by whole units up to `step`, reset to 0 once in ~500 samples.
    Counter { step: u64 },
    /// A counter of CPU seconds: up to 15 s per interval in 0.01 steps.
    CpuSeconds,
    /// A gauge walking around `level` by up to 1 %, in whole units.
    Gauge { level: u64 },
    /// A gauge with two decimals (load averages).
    Load,
}

pub struct SeriesSpec {
    pub labels: Vec<Label>,
    pub kind: Kind,
}

pub fn label_set(pairs: &[(&str, &str)]) -> Vec<Label> {
    let mut l: Vec<Label> =
        pairs.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect();
    l.sort_by(|a, b| a.name.cmp(&b.name));
    l
}

/// The series of one host: about 185, node_exporter's usual families plus an application.
pub fn host_series(host: usize, out: &mut Vec<SeriesSpec>) {
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
pub fn all_series(n: usize) -> Vec<SeriesSpec> {
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
pub fn encode_rounds(specs: &[SeriesSpec], rounds: usize, start_ms: i64) -> Vec<Vec<Arc<Vec<u8>>>> {
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
pub struct Running {
    pub child: Child,
    pub base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `rounds` of every request with `conns` senders; each sender owns the chunks
/// `k, k + conns, …` and sends them round by round. Panics on any non-2xx answer.
pub fn send(base: &str, bodies: &[Vec<Arc<Vec<u8>>>], conns: usize) {
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

pub fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get a
    // pointer to it that lives for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Starts `bin args` on the server CPU (`taskset -c SERVER_CPU`), its stderr in
/// `dir/server.log`, and waits until `base + ready` answers 2xx; `name` is for messages.
pub fn start_pinned(
    bin: &str,
    args: &[String],
    dir: &std::path::Path,
    addr: &str,
    ready: &str,
    name: &str,
) -> Running {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = std::process::Command::new("taskset")
        .args(["-c", SERVER_CPU])
        .arg(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start server under taskset");
    let mut server = Running { child, base: format!("http://{addr}") };
    let http = common::client();
    let up = common::wait_for(std::time::Duration::from_secs(60), || {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{name} exited early: {status}");
        }
        http.get(format!("{}{ready}", server.base)).send().ok().filter(|r| r.status().is_success())
    });
    assert!(up.is_some(), "{name} did not become ready");
    server
}
