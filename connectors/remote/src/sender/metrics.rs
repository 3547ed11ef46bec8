//! The `prometheus_remote_storage_*` and `prometheus_wal_watcher_*` metrics of the sender,
//! named and labelled as Prometheus 2.42 names them, so existing alerts and dashboards work.

use promflow_storage::MetricKind::{self, Counter, Gauge};
use promflow_storage::MetricsWriter;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds of `prometheus_remote_storage_sent_batch_duration_seconds` (Prometheus's).
const DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0];

/// Why samples were dropped before they were sent.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DropReason {
    /// `write_relabel_configs` dropped the series.
    Relabel,
    /// The WAL had no series record for the sample's ref.
    UnknownSeries,
}

/// One queue's counters and gauges.
#[derive(Debug, Default)]
pub(crate) struct QueueMetrics {
    pub(crate) samples_total: AtomicU64,
    pub(crate) samples_failed: AtomicU64,
    pub(crate) samples_retried: AtomicU64,
    dropped: [AtomicU64; 2],
    pub(crate) samples_pending: AtomicI64,
    pub(crate) bytes_total: AtomicU64,
    /// Metadata entries sent (every attempt), failed, retried; metadata bytes sent.
    pub(crate) metadata_total: AtomicU64,
    pub(crate) metadata_failed: AtomicU64,
    pub(crate) metadata_retried: AtomicU64,
    pub(crate) metadata_bytes: AtomicU64,
    pub(crate) enqueue_retries: AtomicU64,
    pub(crate) shards: AtomicU64,
    pub(crate) shards_desired: AtomicU64,
    /// Newest timestamp sent successfully, in ms (0 before the first).
    pub(crate) highest_sent_ms: AtomicI64,
    /// Cumulative bucket counts, then the count; the sum in microseconds.
    durations: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_us: AtomicU64,
    /// WAL records read: series, samples, tombstones; decode failures; segments missed.
    pub(crate) records: [AtomicU64; 3],
    pub(crate) corruptions: AtomicU64,
    pub(crate) segments_missed: AtomicU64,
    pub(crate) current_segment: AtomicU64,
}

impl QueueMetrics {
    /// Counts `n` samples dropped for `why`.
    pub(crate) fn dropped(&self, why: DropReason, n: u64) {
        self.dropped[why as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Records one request's duration.
    pub(crate) fn observe_duration(&self, secs: f64) {
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.durations[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.durations[DURATION_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }
}

/// What is fixed for a queue's life, for its series' labels.
pub(crate) struct QueueLabels<'a> {
    pub(crate) name: &'a str,
    pub(crate) url: &'a str,
    pub(crate) config: &'a promflow_config::QueueConfig,
}

/// Writes the metrics of every queue, and the ones shared by all (`samples_in`, the newest
/// timestamp read), in the text format.
pub(crate) fn write(
    w: &mut MetricsWriter,
    samples_in: u64,
    highest_in_ms: i64,
    queues: &[(QueueLabels<'_>, &QueueMetrics)],
) {
    w.counter(
        "prometheus_remote_storage_samples_in_total",
        "Samples in to remote storage, compare to samples out for queue managers.",
        samples_in,
    );
    w.gauge(
        "prometheus_remote_storage_highest_timestamp_in_seconds",
        "Highest timestamp that has come into the remote storage via the Appender interface, in seconds since epoch.",
        highest_in_ms.max(0) / 1000,
    );
    type Get = fn(&QueueMetrics, &promflow_config::QueueConfig) -> f64;
    let simple: [(&str, MetricKind, &str, Get); 18] = [
        ("prometheus_remote_storage_samples_total", Counter, "Total number of samples sent to remote storage.", |m, _| m.samples_total.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_samples_failed_total", Counter, "Total number of samples which failed on send to remote storage, non-recoverable errors.", |m, _| m.samples_failed.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_samples_retried_total", Counter, "Total number of samples which failed on send to remote storage but were retried because the send error was recoverable.", |m, _| m.samples_retried.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_samples_pending", Gauge, "The number of samples pending in the queues shards to be sent to the remote storage.", |m, _| m.samples_pending.load(Ordering::Relaxed).max(0) as f64),
        ("prometheus_remote_storage_bytes_total", Counter, "The total number of bytes of data (not metadata) sent by the queue after compression.", |m, _| m.bytes_total.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_enqueue_retries_total", Counter, "Total number of times enqueue has failed because a shards queue was full.", |m, _| m.enqueue_retries.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_shards", Gauge, "The number of shards used for parallel sending to the remote storage.", |m, _| m.shards.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_shards_desired", Gauge, "The number of shards that the queues shard calculation wants to run based on the rate of samples in vs. samples out.", |m, _| m.shards_desired.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_shards_max", Gauge, "The maximum number of shards that the queue is allowed to run.", |_, c| c.max_shards as f64),
        ("prometheus_remote_storage_shards_min", Gauge, "The minimum number of shards that the queue is allowed to run.", |_, c| c.min_shards as f64),
        ("prometheus_remote_storage_shard_capacity", Gauge, "The capacity of each shard of the queue used for parallel sending to the remote storage.", |_, c| c.capacity as f64),
        ("prometheus_remote_storage_max_samples_per_send", Gauge, "The maximum number of samples to be sent, in a single request, to the remote storage.", |_, c| c.max_samples_per_send as f64),
        ("prometheus_remote_storage_queue_highest_sent_timestamp_seconds", Gauge, "Timestamp from a WAL sample, the highest timestamp successfully sent by this queue, in seconds since epoch.", |m, _| (m.highest_sent_ms.load(Ordering::Relaxed).max(0) / 1000) as f64),
        ("prometheus_remote_storage_metadata_total", Counter, "Total number of metadata entries sent to remote storage.", |m, _| m.metadata_total.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_metadata_failed_total", Counter, "Total number of metadata entries which failed on send to remote storage, non-recoverable errors.", |m, _| m.metadata_failed.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_metadata_retried_total", Counter, "Total number of metadata entries which failed on send to remote storage but were retried because the send error was recoverable.", |m, _| m.metadata_retried.load(Ordering::Relaxed) as f64),
        ("prometheus_remote_storage_metadata_bytes_total", Counter, "The total number of bytes of metadata sent by the queue after compression.", |m, _| m.metadata_bytes.load(Ordering::Relaxed) as f64),
        ("promflow_remote_write_wal_segments_missed_total", Counter, "WAL segments deleted before the queue read them (the queue was more than a day behind).", |m, _| m.segments_missed.load(Ordering::Relaxed) as f64),
    ];
    for (name, kind, help, get) in simple {
        let mut family = w.family(name, kind, help);
        for (l, m) in queues {
            family.sample(&[("remote_name", l.name), ("url", l.url)], get(m, l.config));
        }
    }
    let mut dropped = w.family(
        "prometheus_remote_storage_samples_dropped_total",
        Counter,
        "Total number of samples which were dropped after being read from the WAL before being sent via remote write, either via relabelling or unintentionally because of an unknown reference ID.",
    );
    for (l, m) in queues {
        for (i, reason) in ["dropped_series", "unknown_series"].iter().enumerate() {
            let n = m.dropped[i].load(Ordering::Relaxed);
            dropped.sample(&[("reason", reason), ("remote_name", l.name), ("url", l.url)], n);
        }
    }
    let mut durations = w.family(
        "prometheus_remote_storage_sent_batch_duration_seconds",
        MetricKind::Histogram,
        "Duration of send calls to the remote storage.",
    );
    for (l, m) in queues {
        let labels = [("remote_name", l.name), ("url", l.url)];
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            let le = le.to_string();
            let bucket = [labels[0], labels[1], ("le", le.as_str())];
            durations.sample_suffixed("_bucket", &bucket, m.durations[i].load(Ordering::Relaxed));
        }
        let count = m.durations[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        durations
            .sample_suffixed("_bucket", &[labels[0], labels[1], ("le", "+Inf")], count)
            .sample_suffixed("_sum", &labels, m.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6)
            .sample_suffixed("_count", &labels, count);
    }
    let mut records = w.family(
        "prometheus_wal_watcher_records_read_total",
        Counter,
        "Number of records read by the WAL watcher from the WAL.",
    );
    for (l, m) in queues {
        for (i, kind) in ["series", "samples", "tombstones"].iter().enumerate() {
            records.sample(&[("consumer", l.name), ("type", kind)], m.records[i].load(Ordering::Relaxed));
        }
    }
    type PerConsumer = fn(&QueueMetrics) -> u64;
    let per_consumer: [(&str, MetricKind, &str, PerConsumer); 2] = [
        (
            "prometheus_wal_watcher_record_decode_failures_total",
            Counter,
            "Number of records read by the WAL watcher that resulted in an error when decoding.",
            |m| m.corruptions.load(Ordering::Relaxed),
        ),
        (
            "prometheus_wal_watcher_current_segment",
            Gauge,
            "Current segment the WAL watcher is reading records from.",
            |m| m.current_segment.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in per_consumer {
        let mut family = w.family(name, kind, help);
        for (l, m) in queues {
            family.sample(&[("consumer", l.name)], get(m));
        }
    }
}
