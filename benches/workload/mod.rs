//! The remote-write workload shared by the benchmarks that load a server: node_exporter-like
//! hosts plus an application per host, encoded as Prometheus's remote-write requests, and the
//! senders and process handling around them.
#![allow(dead_code)]

use std::path::Path;
use std::process::Child;
use std::sync::Arc;

use promflow_remote::{Label, Sample, TimeSeries, WriteRequest};

#[path = "../../tests/it/common/mod.rs"]
pub mod common;

pub const SERIES_PER_REQUEST: usize = 2000;
pub const INTERVAL_MS: i64 = 15_000;
pub const SERVER_CPU: &str = "1";
pub const CLIENT_CPU: usize = 0;

pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// splitmix64: a small deterministic generator, so every run sends the same bytes.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
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

/// Every series' value, round by round: the same walk for every run.
pub struct Walk {
    rng: Rng,
    /// The current round's value of each series.
    pub values: Vec<f64>,
    started: bool,
}

impl Walk {
    /// The walk of `specs`, before its first round.
    pub fn new(specs: &[SeriesSpec]) -> Walk {
        let mut rng = Rng(0x5eed);
        let values = specs
            .iter()
            .map(|s| match s.kind {
                Kind::Counter { step } => (rng.below(1000) * step) as f64,
                Kind::CpuSeconds => rng.below(10_000_000) as f64 / 100.0,
                Kind::Gauge { level } => (level / 2 + rng.below(level)) as f64,
                Kind::Load => rng.below(400) as f64 / 100.0,
            })
            .collect();
        Walk { rng, values, started: false }
    }

    /// Moves to the next round (the first call keeps the starting values).
    pub fn step(&mut self, specs: &[SeriesSpec]) {
        if !std::mem::replace(&mut self.started, true) {
            return;
        }
        let rng = &mut self.rng;
        for (v, spec) in self.values.iter_mut().zip(specs) {
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
    }
}

/// The remote-write bodies: `bodies[round][chunk]`, chunk = 2,000 consecutive series.
pub fn encode_rounds(specs: &[SeriesSpec], rounds: usize, start_ms: i64) -> Vec<Vec<Arc<Vec<u8>>>> {
    encode_churning_rounds(specs, rounds, start_ms, 0)
}

/// [`encode_rounds`] with one host in `churn_period` replaced every round (see
/// [`Rounds::churning`]); 0 replaces none. The walk moves on in this thread while one thread
/// per CPU this process may use encodes the rounds (a million series take about 4 s a round
/// to encode on one core).
pub fn encode_churning_rounds(
    specs: &[SeriesSpec],
    rounds: usize,
    start_ms: i64,
    churn_period: usize,
) -> Vec<Vec<Arc<Vec<u8>>>> {
    let mut gen = Rounds::new(specs, start_ms).churning(churn_period);
    let layout = gen.layout;
    let encoders = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<Vec<Sample>>)>(encoders);
    let rx = std::sync::Mutex::new(rx);
    let mut encoded = vec![Vec::new(); rounds];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..encoders)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        // a statement of its own, so that the queue's lock is released before
                        // the round is encoded (a `while let` would hold it through its body)
                        let next = rx.lock().expect("round queue").recv();
                        let Ok((round, samples)) = next else { return done };
                        done.push((round, layout.encode_block(round, samples, 1)));
                    }
                })
            })
            .collect();
        for _ in 0..rounds {
            tx.send(gen.step_block(1)).expect("round encoders");
        }
        drop(tx);
        for worker in workers {
            for (round, bodies) in worker.join().expect("round encoder") {
                encoded[round] = bodies;
            }
        }
    });
    encoded
}

/// Samples per request when a block of rounds goes out together: about what Prometheus's
/// remote-write shards send.
const SAMPLES_PER_BLOCK_REQUEST: usize = 10_000;

/// What the requests of a round are made of besides the walk's values: the series, the time
/// of the first round and the churn. Threads share it to encode rounds at once.
#[derive(Clone, Copy)]
pub struct RoundLayout<'a> {
    specs: &'a [SeriesSpec],
    start_ms: i64,
    churn_period: usize,
}

impl RoundLayout<'_> {
    /// The generation of `spec`'s host in round `round` (0 without churn).
    fn generation(&self, spec: &SeriesSpec, round: usize) -> usize {
        let Some(instance) = spec.labels.iter().find(|l| l.name == "instance") else { return 0 };
        let host: usize = instance.value.get(5..10).and_then(|d| d.parse().ok()).unwrap_or(0);
        (round + host % self.churn_period.max(1)) / self.churn_period.max(1)
    }

    /// The labels of `spec` in round `round`.
    fn labels_in_round(&self, spec: &SeriesSpec, round: usize) -> Vec<Label> {
        let mut labels = spec.labels.clone();
        if self.churn_period == 0 {
            return labels;
        }
        let generation = self.generation(spec, round);
        if let Some(instance) = labels.iter_mut().find(|l| l.name == "instance").filter(|_| generation > 0) {
            instance.value = instance.value.replacen(':', &format!("-g{generation}:"), 1);
        }
        labels
    }

    /// The series `spec` stood for until round `round` replaced its host, if it did: that
    /// series gets a staleness marker in the round, as Prometheus writes one (and remote
    /// write forwards it) when a target disappears.
    fn replaced_in_round(&self, spec: &SeriesSpec, round: usize) -> Option<Vec<Label>> {
        let replaced = self.churn_period > 0
            && round > 0
            && self.generation(spec, round) != self.generation(spec, round - 1);
        replaced.then(|| self.labels_in_round(spec, round - 1))
    }

    /// The requests of the `k` rounds from `round` on, `samples` holding each series' `k`
    /// samples: 2,000 series per request for one round (Prometheus's shape for live data),
    /// about 10,000 samples per request for more (a backfill's).
    fn encode_block(&self, round: usize, mut samples: Vec<Vec<Sample>>, k: usize) -> Vec<Arc<Vec<u8>>> {
        let per_request = if k == 1 { SERIES_PER_REQUEST } else { (SAMPLES_PER_BLOCK_REQUEST / k).max(1) };
        self.specs
            .chunks(per_request)
            .zip(samples.chunks_mut(per_request))
            .map(|(chunk, samples)| {
                let mut timeseries: Vec<TimeSeries> = chunk
                    .iter()
                    .zip(samples)
                    .map(|(spec, s)| TimeSeries {
                        exemplars: Vec::new(),
                        labels: self.labels_in_round(spec, round),
                        samples: std::mem::take(s),
                        histograms: Vec::new(),
                    })
                    .collect();
                let stale = Sample {
                    timestamp: self.start_ms + round as i64 * INTERVAL_MS,
                    value: promflow_storage::stale_nan(),
                };
                timeseries.extend(chunk.iter().filter_map(|spec| {
                    Some(TimeSeries {
                        exemplars: Vec::new(),
                        labels: self.replaced_in_round(spec, round)?,
                        samples: vec![stale.clone()],
                        histograms: Vec::new(),
                    })
                }));
                Arc::new(promflow_remote::encode(&WriteRequest { timeseries, metadata: vec![] }))
            })
            .collect()
    }
}

/// The workload's rounds, encoded as they are needed, so that a day of history for 50k series
/// (288 M samples) never sits in memory: one walk, one round every 15 s from `start_ms`.
pub struct Rounds<'a> {
    layout: RoundLayout<'a>,
    walk: Walk,
    next: usize,
}

impl<'a> Rounds<'a> {
    /// The rounds of `specs` whose first is stamped `start_ms`.
    pub fn new(specs: &'a [SeriesSpec], start_ms: i64) -> Self {
        Rounds { layout: RoundLayout { specs, start_ms, churn_period: 0 }, walk: Walk::new(specs), next: 0 }
    }

    /// Replaces one host in `period` every round, as pods come and go: host `h` is a new
    /// instance (`host-00042-g3:9100`, generation 3) from round `r` on whenever
    /// `(r + h) % period == 0`, so that each round `1/period` of the series are new and as
    /// many stop. Its values go on from the old instance's. 0 replaces none.
    pub fn churning(mut self, period: usize) -> Self {
        self.layout.churn_period = period;
        self
    }

    /// The timestamp of the next round.
    pub fn next_ms(&self) -> i64 {
        self.layout.start_ms + self.next as i64 * INTERVAL_MS
    }

    /// The next `k` rounds as one set of requests in which every series carries its `k`
    /// samples (see [`RoundLayout::encode_block`] for their shape).
    pub fn next_block(&mut self, k: usize) -> Vec<Arc<Vec<u8>>> {
        let (round, samples) = self.step_block(k);
        self.layout.encode_block(round, samples, k)
    }

    /// Moves the walk on by `k` rounds: the first of them and each series' `k` samples.
    fn step_block(&mut self, k: usize) -> (usize, Vec<Vec<Sample>>) {
        assert!(k == 1 || self.layout.churn_period == 0, "series churn is for live rounds");
        let round = self.next;
        let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(k); self.layout.specs.len()];
        for _ in 0..k {
            let timestamp = self.next_ms();
            self.walk.step(self.layout.specs);
            for (s, value) in samples.iter_mut().zip(&self.walk.values) {
                s.push(Sample { timestamp, value: *value });
            }
            self.next += 1;
        }
        (round, samples)
    }
}

/// Rounds of history per block of requests: every series with 20 samples (5 minutes).
pub const HISTORY_BLOCK_ROUNDS: usize = 20;

/// Sends the next `count` rounds of `rounds` as history, in blocks that a second thread
/// encodes while the previous one is sent, and gives the generator back for the stream.
pub fn send_history<'a>(base: &str, mut rounds: Rounds<'a>, count: usize) -> Rounds<'a> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let encoder = scope.spawn(move || {
            let mut left = count;
            while left > 0 {
                let k = left.min(HISTORY_BLOCK_ROUNDS);
                left -= k;
                if tx.send(rounds.next_block(k)).is_err() {
                    break;
                }
            }
            rounds
        });
        for block in rx {
            send(base, &[block], 2);
        }
        encoder.join().expect("history encoder")
    })
}

/// The benchmark rule set, in the node-exporter and application mixins' style: recording
/// rules (name, expression) and alerting rules (name, expression, `for`).
pub struct RuleSet {
    pub recording: Vec<(String, String)>,
    pub alerts: Vec<(String, String, &'static str)>,
}

/// The rule set the rules benchmarks run: `rate`, `increase`, `avg_over_time` and
/// `max_over_time` over `[5m]`, `[1h]` and `[1d]`, sums and ratios by instance and job that
/// share those sub-expressions, classic histogram quantiles, and alerting rules.
pub fn rule_set() -> RuleSet {
    let mut recording: Vec<(String, String)> = Vec::new();
    let counters = [
        "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total",
        "node_network_receive_packets_total",
        "node_network_transmit_packets_total",
        "node_disk_read_bytes_total",
        "node_disk_written_bytes_total",
        "node_disk_reads_completed_total",
        "node_disk_writes_completed_total",
        "http_requests_total",
        "http_request_duration_seconds_count",
    ];
    for c in counters {
        let short = c.trim_end_matches("_total");
        for w in ["5m", "1h"] {
            recording.push((
                format!("instance:{short}:rate{w}"),
                format!("sum by (instance, job) (rate({c}[{w}]))"),
            ));
            recording.push((format!("job:{short}:rate{w}"), format!("sum by (job) (rate({c}[{w}]))")));
        }
        recording
            .push((format!("instance:{short}:increase1d"), format!("sum by (instance) (increase({c}[1d]))")));
    }
    recording.push((
        "instance:node_cpu_utilisation:rate5m".into(),
        "1 - avg without (cpu) (sum without (mode) (rate(node_cpu_seconds_total{mode=~\"idle|iowait|steal\"}[5m])))"
            .into(),
    ));
    recording.push((
        "instance:node_cpu_seconds:rate1h".into(),
        "sum without (cpu) (rate(node_cpu_seconds_total[1h]))".into(),
    ));
    recording.push((
        "instance:node_load1_per_cpu:ratio".into(),
        "node_load1 / on (instance, job) count without (cpu) (count without (mode) (node_cpu_seconds_total{mode=\"idle\"}))"
            .into(),
    ));
    recording.push((
        "instance:node_memory_utilisation:ratio".into(),
        "1 - (node_memory_MemAvailable_bytes / on (instance, job) node_memory_MemTotal_bytes)".into(),
    ));
    for g in [
        "node_load1",
        "node_load5",
        "node_load15",
        "node_memory_MemAvailable_bytes",
        "node_memory_Cached_bytes",
    ] {
        for w in ["1h", "1d"] {
            recording.push((format!("instance:{g}:avg{w}"), format!("avg_over_time({g}[{w}])")));
            recording.push((format!("instance:{g}:max{w}"), format!("max_over_time({g}[{w}])")));
        }
    }
    recording.push((
        "instance:node_filesystem_avail:ratio".into(),
        "node_filesystem_avail_bytes / on (instance, job, device, mountpoint, fstype) node_filesystem_size_bytes"
            .into(),
    ));
    for (name, q) in [("p99", "0.99"), ("p90", "0.9"), ("p50", "0.5")] {
        recording.push((
            format!("handler:http_request_duration_seconds:{name}5m"),
            format!("histogram_quantile({q}, sum by (handler, le) (rate(http_request_duration_seconds_bucket[5m])))"),
        ));
    }
    for (name, q) in [("p99", "0.99"), ("p50", "0.5")] {
        recording.push((
            format!("handler:http_request_duration_seconds:{name}1h"),
            format!("histogram_quantile({q}, sum by (handler, le) (rate(http_request_duration_seconds_bucket[1h])))"),
        ));
    }
    recording.push((
        "handler:http_request_duration_seconds:mean5m".into(),
        "sum by (handler) (rate(http_request_duration_seconds_sum[5m])) / on (handler) sum by (handler) (rate(http_request_duration_seconds_count[5m]))"
            .into(),
    ));
    recording.push((
        "instance:node_network_receive_bytes_excluding_lo:rate5m".into(),
        "sum by (instance, job) (rate(node_network_receive_bytes_total{device!=\"lo\"}[5m]))".into(),
    ));
    recording.push((
        "instance:node_memory_cached:ratio".into(),
        "node_memory_Cached_bytes / on (instance, job) node_memory_MemTotal_bytes".into(),
    ));
    recording.push((
        "handler:http_requests_errors:ratio5m".into(),
        "sum by (handler) (rate(http_requests_total{code=\"500\"}[5m])) / on (handler) sum by (handler) (rate(http_requests_total[5m]))"
            .into(),
    ));
    let mut alerts: Vec<(String, String, &'static str)> = Vec::new();
    for (name, expr, f) in [
        ("NodeFilesystemAlmostFull", "node_filesystem_avail_bytes / on (instance, job, device, mountpoint, fstype) node_filesystem_size_bytes < 0.05", "1h"),
        ("NodeHighLoad", "node_load15 > 3.9", "15m"),
        ("NodeMemoryLow", "node_memory_MemAvailable_bytes / on (instance, job) node_memory_MemTotal_bytes < 0.01", "15m"),
        ("NodeNetworkReceiveBurst", "rate(node_network_receive_bytes_total[5m]) > 1e9", "5m"),
        ("NodeDiskWriteBurst", "rate(node_disk_written_bytes_total[5m]) > 1e9", "5m"),
        ("NodeCPUBusy", "sum without (mode) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m])) > 0.99", "15m"),
        ("HttpErrors", "sum by (instance, handler) (rate(http_requests_total{code=\"500\"}[5m])) > 100", "5m"),
        ("HttpSlow", "histogram_quantile(0.99, sum by (instance, le) (rate(http_request_duration_seconds_bucket[5m]))) > 10", "10m"),
        ("HttpTrafficDrop", "sum by (instance) (rate(http_requests_total[5m])) < 0.001", "10m"),
        ("HttpDailyVolumeLow", "sum by (instance) (increase(http_requests_total[1d])) < 1", "1h"),
        ("NodeLoadSustained", "avg_over_time(node_load1[1h]) > 3.95", "0s"),
        ("NodeDiskReadsStalled", "rate(node_disk_reads_completed_total[1h]) == 0", "30m"),
        ("NodeNetworkTransmitBurst", "rate(node_network_transmit_bytes_total[5m]) > 1e9", "5m"),
        ("NodeDiskReadBurst", "rate(node_disk_read_bytes_total[5m]) > 1e9", "5m"),
        ("HttpErrorsSustained", "sum by (instance) (rate(http_requests_total{code=\"500\"}[1h])) > 50", "30m"),
        ("NodeLoadPeakDaily", "max_over_time(node_load15[1d]) > 3.99", "1h"),
        ("HttpSlowHandler", "handler:http_request_duration_seconds:mean5m > 5", "10m"),
    ] {
        alerts.push((name.to_string(), expr.to_string(), f));
    }
    RuleSet { recording, alerts }
}

/// The rule set as a Prometheus rule file: (file text, number of rules).
pub fn rule_file() -> (String, usize) {
    let RuleSet { recording, alerts } = rule_set();
    let n = recording.len() + alerts.len();
    let mut text = String::from("groups:\n- name: node-recording\n  rules:\n");
    for (record, expr) in &recording {
        text.push_str(&format!("  - record: {record}\n    expr: '{}'\n", expr.replace('\'', "''")));
    }
    text.push_str("- name: alerts\n  rules:\n");
    for (alert, expr, f) in &alerts {
        text.push_str(&format!(
            "  - alert: {alert}\n    expr: '{}'\n    for: {f}\n    labels:\n      severity: warning\n    annotations:\n      summary: '{{{{ $labels.instance }}}} at {{{{ $value }}}}'\n",
            expr.replace('\'', "''")
        ));
    }
    (text, n)
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

/// Posts one encoded remote-write body to `base`; panics unless it is answered 2xx.
pub fn post_write(http: &reqwest::blocking::Client, base: &str, body: Vec<u8>) {
    let r = http
        .post(format!("{base}/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .expect("remote write");
    let code = r.status();
    let text = r.text().unwrap_or_default();
    assert!(code.is_success(), "remote write answered {code}: {text}");
}

/// User plus system CPU seconds the process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_of(&format!("/proc/{pid}/stat"))
}

/// User plus system CPU seconds in a `/proc/…/stat` file (a process's or a thread's).
pub fn cpu_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // the fields after the command name, which is in parentheses and may hold spaces
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    let hz = 100.0; // sysconf(_SC_CLK_TCK) on Linux
    (ticks(11) + ticks(12)) / hz
}

/// Sends `rounds` of every request with `conns` senders; each sender owns the chunks
/// `k, k + conns, …` and sends them round by round. Panics on any non-2xx answer.
pub fn send(base: &str, bodies: &[Vec<Arc<Vec<u8>>>], conns: usize) {
    send_timed(base, bodies, conns);
}

/// Sends as [`send`] does, and gives each request's answer time in milliseconds (in no
/// particular order).
pub fn send_timed(base: &str, bodies: &[Vec<Arc<Vec<u8>>>], conns: usize) -> Vec<f64> {
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..conns)
            .map(|k| {
                scope.spawn(move || {
                    let http = common::client();
                    let mut times = Vec::new();
                    for round in bodies {
                        for body in round.iter().skip(k).step_by(conns) {
                            let body = body.as_ref().clone();
                            let t = std::time::Instant::now();
                            post_write(&http, base, body);
                            times.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    times
                })
            })
            .collect();
        senders.into_iter().flat_map(|s| s.join().expect("sender")).collect()
    })
}

/// Calls `meanwhile` every 5 s until `system`'s compaction ([`System::compaction_seconds`])
/// has not moved for `quiet`, at most `limit`; returns how long that took.
pub fn wait_for_compaction(
    system: System,
    pid: u32,
    base: &str,
    quiet: std::time::Duration,
    limit: std::time::Duration,
    mut meanwhile: impl FnMut(),
) -> std::time::Duration {
    let started = std::time::Instant::now();
    let (mut last, mut quiet_since) = (system.compaction_seconds(pid, base), std::time::Instant::now());
    while quiet_since.elapsed() < quiet && started.elapsed() < limit {
        meanwhile();
        std::thread::sleep(std::time::Duration::from_secs(5));
        let now = system.compaction_seconds(pid, base);
        if now - last > 0.05 {
            (last, quiet_since) = (now, std::time::Instant::now());
        }
    }
    started.elapsed()
}

/// Bytes of the files under `dir`, at any depth (a server's data directory).
pub fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .map(|(path, kind)| match kind {
            k if k.is_dir() => disk_bytes(&path),
            k if k.is_file() => std::fs::metadata(&path).map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The median of `xs` (the upper one of an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The value below which a share `p` of `sorted` lies (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A process's resident memory in MiB, at its peak (`VmHWM:`) or now (`VmRSS:`).
pub fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The systems a side-by-side benchmark runs: promflow, and Prometheus (under `name`) when
/// it is installed; `BENCH_ONLY=promflow` or `BENCH_ONLY=prometheus` keeps one (to profile
/// it), and `BENCH_PROMFLOW` names another promflow binary (to compare two builds). (name,
/// binary).
pub fn systems(prometheus_name: &'static str) -> Vec<(&'static str, String)> {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut systems = Vec::new();
    if only.is_empty() || only == "promflow" {
        systems.push(("promflow", promflow_binary()));
    }
    if common::peer("prometheus").is_some() && (only.is_empty() || only == "prometheus") {
        systems.push((prometheus_name, "prometheus".to_string()));
    }
    systems
}

/// The promflow binary a benchmark runs: this build's, or the one `BENCH_PROMFLOW` names
/// (to compare two builds).
pub fn promflow_binary() -> String {
    std::env::var("BENCH_PROMFLOW").unwrap_or_else(|_| env!("CARGO_BIN_EXE_promflow").to_string())
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

/// Moves every thread of process `pid` onto the CPUs `cpus` (a `taskset` list); threads it
/// starts later inherit them.
pub fn pin_process(pid: u32, cpus: &str) {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset");
    assert!(status.success(), "taskset -a -p -c {cpus} {pid}: {status}");
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
    start_on_cpus(SERVER_CPU, bin, args, dir, addr, ready, name, std::time::Duration::from_secs(60))
}

/// Starts `nodes` promflow nodes of one cluster under `dir` with the configuration `cfg`, the
/// remote-write receiver and `extra` flags, each pinned as [`start_pinned`] pins a server;
/// with `dataflow`, they form one dataflow computation (`--cluster.dataflow-peer`), and this
/// waits until it has formed.
pub fn start_cluster(
    dir: &std::path::Path,
    cfg: &std::path::Path,
    nodes: usize,
    dataflow: bool,
    extra: &[String],
) -> Vec<Running> {
    let ports: Vec<u16> = (0..nodes).map(|_| common::free_port()).collect();
    let dataflow_ports: Vec<u16> = (0..nodes).map(|_| common::free_port()).collect();
    let running: Vec<Running> = (0..nodes)
        .map(|i| {
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let addr = format!("127.0.0.1:{}", ports[i]);
            let mut args = vec![
                format!("--config.file={}", cfg.display()),
                format!("--storage.tsdb.path={}", node_dir.join("data").display()),
                format!("--web.listen-address={addr}"),
                "--web.enable-remote-write-receiver".into(),
                format!("--cluster.index={i}"),
            ];
            args.extend(ports.iter().map(|p| format!("--cluster.peer=127.0.0.1:{p}")));
            if dataflow {
                args.extend(dataflow_ports.iter().map(|p| format!("--cluster.dataflow-peer=127.0.0.1:{p}")));
            }
            args.extend(extra.iter().cloned());
            start_pinned(&promflow_binary(), &args, &node_dir, &addr, "/-/ready", "promflow node")
        })
        .collect();
    if dataflow {
        let http = common::client();
        let formed = common::wait_for(std::time::Duration::from_secs(60), || {
            running
                .iter()
                .all(|n| {
                    let metrics = http.get(format!("{}/metrics", n.base)).send().and_then(|r| r.text());
                    metrics.unwrap_or_default().lines().any(|l| l == "promflow_cluster_dataflow_up 1")
                })
                .then_some(())
        });
        assert!(formed.is_some(), "the cluster's dataflow did not form");
    }
    running
}

/// Starts `bin args` as [`start_pinned`] does, on the CPUs `cpus` (a `taskset` list such as
/// `1` or `0,1`), waiting at most `limit` for the server to be ready (a restart that replays a
/// large write-ahead log takes longer than a fresh start).
#[allow(clippy::too_many_arguments)]
pub fn start_on_cpus(
    cpus: &str,
    bin: &str,
    args: &[String],
    dir: &std::path::Path,
    addr: &str,
    ready: &str,
    name: &str,
    limit: std::time::Duration,
) -> Running {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = std::process::Command::new("taskset")
        .args(["-c", cpus])
        .arg(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start server under taskset");
    let mut server = Running { child, base: format!("http://{addr}") };
    let http = common::client();
    let up = common::wait_for(limit, || {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{name} exited early: {status}");
        }
        http.get(format!("{}{ready}", server.base)).send().ok().filter(|r| r.status().is_success())
    });
    assert!(up.is_some(), "{name} did not become ready");
    server
}

/// A system under test in the side-by-side remote-write benchmarks.
#[derive(Clone, Copy, PartialEq)]
pub enum System {
    Promflow,
    Prometheus,
    VictoriaMetrics,
}

impl System {
    /// promflow, and the peers `BENCH_SYSTEMS` [promflow,prometheus,vm] names that are
    /// installed; promflow always runs, as the ratios are against it.
    pub fn wanted() -> Vec<System> {
        let only = std::env::var("BENCH_SYSTEMS").unwrap_or_else(|_| "promflow,prometheus,vm".into());
        let wanted = |name: &str| only.split(',').any(|s| s.trim() == name);
        let mut systems = vec![System::Promflow];
        if wanted("prometheus") && common::peer("prometheus").is_some() {
            systems.push(System::Prometheus);
        }
        if wanted("vm") && common::peer("victoria-metrics").is_some() {
            systems.push(System::VictoriaMetrics);
        }
        systems
    }

    pub fn name(self) -> &'static str {
        match self {
            System::Promflow => "promflow",
            System::Prometheus => "Prometheus 2.42",
            System::VictoriaMetrics => "VictoriaMetrics",
        }
    }

    /// Starts the system on the data in `dir/data` and waits at most 60 s until it is ready.
    pub fn start(self, dir: &Path) -> Running {
        self.start_within(dir, std::time::Duration::from_secs(60))
    }

    /// [`System::start`], waiting at most `limit` for it to be ready.
    pub fn start_within(self, dir: &Path, limit: std::time::Duration) -> Running {
        self.start_on(SERVER_CPU, dir, limit)
    }

    /// [`System::start_within`] on the CPUs `cpus` (a `taskset` list). The servers size their
    /// thread pools (Go's `GOMAXPROCS`, promflow's runtimes) by the CPUs they start on.
    pub fn start_on(self, cpus: &str, dir: &Path, limit: std::time::Duration) -> Running {
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.join("bench.yml");
        let mut config = String::from("global:\n  scrape_interval: 15s\n");
        // Prometheus 2.42 refuses the key it does not know
        let stale_threshold = std::env::var("BENCH_STALE_COMPACTION").unwrap_or_default();
        if self == System::Promflow && !stale_threshold.is_empty() {
            config +=
                &format!("storage:\n  tsdb:\n    stale_series_compaction_threshold: {stale_threshold}\n");
        }
        std::fs::write(&cfg, config).unwrap();
        let data = dir.join("data");
        let (bin, args, ready): (String, Vec<String>, &str) = match self {
            // the same flags: promflow takes Prometheus's command line
            System::Promflow | System::Prometheus => (
                if self == System::Promflow { promflow_binary() } else { "prometheus".into() },
                vec![
                    format!("--config.file={}", cfg.display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    format!("--web.listen-address={addr}"),
                    "--web.enable-remote-write-receiver".into(),
                    // snapshots: what the data takes once written as a block
                    "--web.enable-admin-api".into(),
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
        start_on_cpus(cpus, &bin, &args, dir, &addr, ready, self.name(), limit)
    }

    /// Seconds the server has spent compacting its storage, which runs on a schedule of its
    /// own (a block range completes, merges follow): promflow's compaction thread's CPU,
    /// Prometheus's own total of compaction durations (wall time; its compactions run on one
    /// goroutine). VictoriaMetrics's background merges are not counted (0).
    pub fn compaction_seconds(self, pid: u32, base: &str) -> f64 {
        match self {
            System::Promflow => std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|t| {
                    let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    comm.starts_with("promflow-compac")
                })
                .map(|t| cpu_of(&t.path().join("stat").to_string_lossy()))
                .sum(),
            System::Prometheus => {
                let text = common::client()
                    .get(format!("{base}/metrics"))
                    .send()
                    .and_then(|r| r.text())
                    .unwrap_or_default();
                text.lines()
                    .find_map(|l| l.strip_prefix("prometheus_tsdb_compaction_duration_seconds_sum "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0.0)
            }
            System::VictoriaMetrics => 0.0,
        }
    }

    /// How many series the server holds, by its own count.
    pub fn series_count(self, server: &Running) -> Option<u64> {
        let http = common::client();
        if self == System::VictoriaMetrics {
            let _ = http.get(format!("{}/internal/force_flush", server.base)).send();
        }
        let url = format!("{}/api/v1/query?query=count(%7B__name__%3D~%22.%2B%22%7D)", server.base);
        let v: serde_json::Value = serde_json::from_str(&http.get(url).send().ok()?.text().ok()?).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}
