//! promflow's own metrics (`/metrics`), under Prometheus's names where a part has a Prometheus
//! twin, so the Prometheus mixin's dashboards and alerts work. Each component writes the
//! families it owns (`Db`, the scrape manager, the remote-write queues, the notifier, the
//! rule manager, the live views) through one [`MetricsWriter`]; this module writes the HTTP
//! server's own and the process's.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use promflow_storage::{Histogram, MetricKind, MetricsWriter, Summary};

use crate::AppState;

/// The buckets of `prometheus_http_request_duration_seconds`, Prometheus's.
const DURATION_BUCKETS: &[f64] = &[0.1, 0.2, 0.4, 1.0, 3.0, 8.0, 20.0, 60.0, 120.0];

/// Counts and durations of HTTP requests by handler and status code.
#[derive(Default)]
pub struct HttpMetrics {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    /// `prometheus_engine_query_duration_seconds` by slice (`queue_time`, `prepare_time`,
    /// `inner_eval`, `result_sort`).
    query_slices: Mutex<BTreeMap<&'static str, Summary>>,
    remote_write: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// `/federate` requests that failed reading storage.
    pub federation_errors: std::sync::atomic::AtomicU64,
    /// In a cluster: the aggregations of queries, subscriptions and rules evaluated in parts,
    /// or not (shared with the rules' [`crate::RulePushdown`]).
    pub pushdown: std::sync::Arc<crate::PushdownCounts>,
}

impl HttpMetrics {
    /// Counts from zero, the aggregations evaluated in parts in `pushdown` (shared with the
    /// rules' [`crate::RulePushdown`]).
    pub fn with_pushdown(pushdown: std::sync::Arc<crate::PushdownCounts>) -> HttpMetrics {
        HttpMetrics { pushdown, ..HttpMetrics::default() }
    }

    /// Counts one remote-write request by its protobuf message and compression.
    pub fn observe_remote_write(&self, message: &'static str, encoding: &'static str) {
        if let Ok(mut c) = self.remote_write.lock() {
            *c.entry((message, encoding)).or_default() += 1;
        }
    }

    /// Counts one request and how long it took.
    pub fn observe(&self, handler: &str, code: u16, took: std::time::Duration) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((handler.to_string(), code)).or_default() += 1;
        }
        if let Ok(mut d) = self.durations.lock() {
            d.entry(handler.to_string())
                .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
                .observe(took.as_secs_f64());
        }
    }

    /// Counts where one API query's time went, as Prometheus's engine does.
    pub fn observe_query(&self, t: &crate::query_log::QueryTimings) {
        if let Ok(mut slices) = self.query_slices.lock() {
            for (slice, took) in [
                ("queue_time", t.queue),
                ("prepare_time", t.preparation),
                ("inner_eval", t.eval),
                ("result_sort", std::time::Duration::ZERO),
            ] {
                slices.entry(slice).or_default().observe(took.as_secs_f64());
            }
        }
    }

    fn write(&self, w: &mut MetricsWriter) {
        let mut received = w.family(
            "promflow_remote_write_received_requests_total",
            MetricKind::Counter,
            "Remote-write requests received, by protobuf message and compression.",
        );
        if let Ok(c) = self.remote_write.lock() {
            for ((message, encoding), n) in c.iter() {
                received.sample(&[("encoding", encoding), ("message", message)], *n);
            }
        }
        let mut requests =
            w.family("prometheus_http_requests_total", MetricKind::Counter, "Counter of HTTP requests.");
        if let Ok(c) = self.counts.lock() {
            for ((handler, code), n) in c.iter() {
                requests.sample(&[("code", &code.to_string()), ("handler", handler)], *n);
            }
            // the client library's own count of `/metrics` answers, by the codes it uses
            let mut scrapes = w.family(
                "promhttp_metric_handler_requests_total",
                MetricKind::Counter,
                "Total number of scrapes by HTTP status code.",
            );
            for code in [200u16, 500, 503] {
                let n = c.get(&("/metrics".to_string(), code)).copied().unwrap_or(0);
                scrapes.sample(&[("code", &code.to_string())], n);
            }
        }
        w.gauge("promhttp_metric_handler_requests_in_flight", "Current number of scrapes being served.", 1u8);
        let mut durations = w.family(
            "prometheus_http_request_duration_seconds",
            MetricKind::Histogram,
            "Histogram of latencies for HTTP requests.",
        );
        if let Ok(d) = self.durations.lock() {
            for (handler, h) in d.iter() {
                durations.histogram(&[("handler", handler)], h);
            }
        }
        let mut queries =
            w.family("prometheus_engine_query_duration_seconds", MetricKind::Summary, "Query timings");
        if let Ok(slices) = self.query_slices.lock() {
            for (slice, summary) in slices.iter() {
                queries.summary(&[("slice", slice)], summary);
            }
        }
    }
}

/// Renders every metric of the server.
pub fn render(state: &AppState) -> String {
    let mut w = MetricsWriter::new();
    let st = &state.status;
    let revision = format!("promflow-{}", env!("CARGO_PKG_VERSION"));
    w.family("prometheus_build_info", MetricKind::Gauge, "A metric with a constant '1' value labeled by version, revision, branch, goversion from which prometheus was built, and the goos and goarch for the build.")
        .sample(
            &[
                ("branch", "main"),
                ("goarch", std::env::consts::ARCH),
                ("goos", std::env::consts::OS),
                ("goversion", "rust"),
                ("revision", &revision),
                ("tags", ""),
                ("version", &st.version),
            ],
            1u8,
        );
    w.gauge(
        "prometheus_config_last_reload_successful",
        "Whether the last configuration reload attempt was successful.",
        st.reload_ok.load(Ordering::SeqCst),
    );
    w.gauge(
        "prometheus_config_last_reload_success_timestamp_seconds",
        "Timestamp of the last successful configuration reload.",
        st.last_reload_seconds.load(Ordering::SeqCst),
    );
    w.gauge("promflow_config_unimplemented_fields", "Configuration fields that Prometheus accepts and promflow accepted but does not implement yet (see docs/configuration.md).", st.unimplemented_fields.load(Ordering::SeqCst));
    w.gauge(
        "prometheus_ready",
        "Whether Prometheus startup was fully completed and the server is ready for normal operation.",
        st.ready.load(Ordering::SeqCst),
    );
    w.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        st.start_seconds,
    );
    if let Some(p) = process_stats() {
        w.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", p.resident_bytes);
        w.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        );
        w.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", p.virtual_bytes);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        w.gauge("process_open_fds", "Number of open file descriptors.", fds.count());
    }
    if let Some(n) = soft_limit("Max open files") {
        w.gauge("process_max_fds", "Maximum number of open file descriptors.", n);
    }
    if let Some(n) = soft_limit("Max address space") {
        w.gauge(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            n,
        );
    }
    let running = state.query_concurrency.saturating_sub(state.query_slots.available_permits());
    w.gauge("prometheus_engine_queries", "The current number of queries being executed or waiting.", running);
    w.gauge(
        "prometheus_engine_queries_concurrent_max",
        "The max number of concurrent queries.",
        state.query_concurrency,
    );
    w.gauge("prometheus_engine_query_log_enabled", "State of the query log.", state.query_log.enabled());
    w.counter(
        "prometheus_engine_query_log_failures_total",
        "The number of query log failures.",
        state.query_log.failures(),
    );
    w.counter(
        "prometheus_web_federation_errors_total",
        "Total number of errors that occurred while sending federation responses.",
        state.http_metrics.federation_errors.load(Ordering::Relaxed),
    );
    w.counter(
        "prometheus_web_federation_warnings_total",
        "Total number of warnings that occurred while sending federation responses.",
        0u64,
    );
    state.db.write_metrics(&mut w);
    state.notifier.write_metrics(&mut w);
    state.rules.write_metrics(&mut w);
    if let Some(views) = state.live.as_deref() {
        views.write_metrics(&mut w, 0);
    }
    if let Some(dataflow) = state.dataflow.as_deref() {
        dataflow.write_metrics(&mut w);
    }
    if let Some(writes) = state.cluster_writes.as_deref() {
        writes.write_metrics(&mut w);
    }
    if state.remote_read.has_cluster_peers() {
        let counts = &state.http_metrics.pushdown;
        let mut aggregations = w.family(
            "promflow_cluster_query_aggregations_total",
            MetricKind::Counter,
            "Aggregations of queries, subscriptions and rules evaluated in batch, evaluated in parts on the cluster's nodes (in_parts), or over every node's samples merged on the node that evaluates them (merged).",
        );
        aggregations.sample(&[("evaluated", "in_parts")], counts.in_parts.load(Ordering::Relaxed));
        aggregations.sample(&[("evaluated", "merged")], counts.merged.load(Ordering::Relaxed));
    }
    w.gauge(
        "promflow_subscriptions",
        "Live result streams subscribed over /api/v1/subscribe.",
        state.subscriptions.live.load(Ordering::Relaxed),
    );
    w.gauge(
        "promflow_subscription_samples",
        "Samples the live subscriptions' queries read when subscribed (what their views hold).",
        state.subscriptions.samples.load(Ordering::Relaxed),
    );
    w.counter(
        "promflow_subscription_slow_consumers_total",
        "Subscription connections closed because the client did not take its messages in time.",
        state.subscriptions.slow_consumers.load(Ordering::Relaxed),
    );
    state.scrape.write_metrics(&mut w);
    state.remote_write.write_metrics(&mut w);
    state.http_metrics.write(&mut w);
    w.finish()
}

/// What `/proc/self/stat` says of the process (Linux only).
struct ProcessStats {
    resident_bytes: u64,
    virtual_bytes: u64,
    cpu_seconds: f64,
}

fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    // fields from the third (`state`) on
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let virtual_bytes: u64 = fields.get(20)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some(ProcessStats {
        resident_bytes: rss_pages * 4096,
        virtual_bytes,
        cpu_seconds: (utime + stime) / ticks,
    })
}

/// The soft limit named `name` in `/proc/self/limits`; "unlimited" as the largest value, as
/// Prometheus's client reports it.
fn soft_limit(name: &str) -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(u64::MAX as f64);
    }
    soft.parse().ok()
}
