//! promflow's own metrics in the text exposition format, under Prometheus's names where a
//! part has a Prometheus twin, so the Prometheus mixin's dashboards and alerts work.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::AppState;

/// Counts of HTTP requests by handler and status code.
#[derive(Default)]
pub struct HttpMetrics {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
    remote_write: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl HttpMetrics {
    /// Counts one remote-write request by its protobuf message and compression.
    pub fn observe_remote_write(&self, message: &'static str, encoding: &'static str) {
        if let Ok(mut c) = self.remote_write.lock() {
            *c.entry((message, encoding)).or_default() += 1;
        }
    }

    /// Counts one request.
    pub fn observe(&self, handler: &str, code: u16) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((handler.to_string(), code)).or_default() += 1;
        }
    }

    fn write(&self, out: &mut String) {
        header(
            out,
            "promflow_remote_write_received_requests_total",
            "counter",
            "Remote-write requests received, by protobuf message and compression.",
        );
        if let Ok(c) = self.remote_write.lock() {
            for ((message, encoding), n) in c.iter() {
                let _ = writeln!(
                    out,
                    "promflow_remote_write_received_requests_total{{encoding=\"{encoding}\",message=\"{message}\"}} {n}"
                );
            }
        }
        header(out, "prometheus_http_requests_total", "counter", "Counter of HTTP requests.");
        if let Ok(c) = self.counts.lock() {
            for ((handler, code), n) in c.iter() {
                let _ = writeln!(
                    out,
                    "prometheus_http_requests_total{{code=\"{code}\",handler=\"{handler}\"}} {n}"
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, typ: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {typ}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

/// Renders every metric of the server.
pub fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(8192);
    let st = &state.status;
    header(&mut out, "prometheus_build_info", "gauge", "A metric with a constant '1' value labeled by version, revision, branch, goversion from which prometheus was built, and the goos and goarch for the build.");
    let _ = writeln!(
        out,
        "prometheus_build_info{{branch=\"main\",goarch=\"{}\",goos=\"{}\",goversion=\"rust\",revision=\"promflow-{}\",tags=\"\",version=\"{}\"}} 1",
        std::env::consts::ARCH,
        std::env::consts::OS,
        env!("CARGO_PKG_VERSION"),
        st.version
    );
    gauge(
        &mut out,
        "prometheus_config_last_reload_successful",
        "Whether the last configuration reload attempt was successful.",
        st.reload_ok.load(Ordering::SeqCst) as u8,
    );
    gauge(
        &mut out,
        "prometheus_config_last_reload_success_timestamp_seconds",
        "Timestamp of the last successful configuration reload.",
        st.last_reload_seconds.load(Ordering::SeqCst),
    );
    gauge(&mut out, "promflow_config_unimplemented_fields", "Configuration fields that Prometheus accepts and promflow accepted but does not implement yet (see docs/configuration.md).", st.unimplemented_fields.load(Ordering::SeqCst));
    gauge(
        &mut out,
        "prometheus_ready",
        "Whether Prometheus startup was fully completed and the server is ready for normal operation.",
        st.ready.load(Ordering::SeqCst) as u8,
    );
    gauge(
        &mut out,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        st.start_seconds,
    );
    if let Some((rss, cpu)) = process_stats() {
        gauge(&mut out, "process_resident_memory_bytes", "Resident memory size in bytes.", rss);
        counter(
            &mut out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    let s = state.db.stats(0);
    gauge(&mut out, "prometheus_tsdb_head_series", "Total number of series in the head block.", s.num_series);
    gauge(&mut out, "prometheus_tsdb_head_chunks", "Total number of chunks in the head block.", s.num_chunks);
    counter(
        &mut out,
        "prometheus_tsdb_head_samples_appended_total",
        "Total number of appended samples.",
        s.num_samples,
    );
    gauge(
        &mut out,
        "prometheus_tsdb_head_min_time",
        "Minimum time bound of the head block.",
        s.min_time.unwrap_or(0),
    );
    gauge(
        &mut out,
        "prometheus_tsdb_head_max_time",
        "Maximum timestamp of the head block.",
        s.max_time.unwrap_or(0),
    );
    counter(
        &mut out,
        "prometheus_tsdb_wal_corruptions_total",
        "Total number of WAL corruptions.",
        s.wal_corruptions,
    );
    counter(
        &mut out,
        "promflow_wal_truncated_bytes_total",
        "Bytes cut from torn or corrupt WAL tails at start-up.",
        s.wal_truncated_bytes,
    );
    gauge(&mut out, "promflow_wal_segments", "Number of WAL segment files.", s.wal_segments);
    gauge(
        &mut out,
        "promflow_tsdb_unreadable_blocks",
        "Blocks in the data directory that could not be read and are not served.",
        s.unreadable_blocks,
    );
    gauge(&mut out, "prometheus_tsdb_blocks_loaded", "Number of currently loaded data blocks", s.num_blocks);
    gauge(
        &mut out,
        "prometheus_tsdb_storage_blocks_bytes",
        "The number of bytes that are currently used for local storage by all blocks.",
        s.blocks_bytes,
    );
    gauge(&mut out, "promflow_wal_bytes", "Bytes of the WAL's segments and checkpoint.", s.wal_bytes);
    counter(
        &mut out,
        "prometheus_tsdb_out_of_bound_samples_total",
        "Total number of out of bound samples ingestion failed attempts.",
        s.out_of_bounds_samples,
    );
    let n = &state.notifier.stats;
    counter(
        &mut out,
        "prometheus_notifications_sent_total",
        "Total number of alerts sent.",
        n.sent.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "prometheus_notifications_errors_total",
        "Total number of sent alerts affected by errors.",
        n.errors.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "prometheus_notifications_dropped_total",
        "Total number of alerts dropped due to errors when sending to Alertmanager.",
        n.dropped.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "prometheus_notifications_queue_length",
        "The number of alert notifications in the queue.",
        state.notifier.queue_length(),
    );
    gauge(
        &mut out,
        "prometheus_notifications_queue_capacity",
        "The capacity of the alert notifications queue.",
        promflow_notifier::QUEUE_CAPACITY,
    );
    write_rule_metrics(&mut out, &state.rules.groups());
    if let Some(views) = state.live.as_deref() {
        write_dataflow_metrics(&mut out, views);
    }
    gauge(
        &mut out,
        "promflow_subscriptions",
        "Live result streams subscribed over /api/v1/subscribe.",
        state.subscriptions.live.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "promflow_subscription_samples",
        "Samples the live subscriptions' queries read when subscribed (what their views hold).",
        state.subscriptions.samples.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "promflow_subscription_slow_consumers_total",
        "Subscription connections closed because the client did not take its messages in time.",
        state.subscriptions.slow_consumers.load(Ordering::Relaxed),
    );
    state.scrape.write_metrics(&mut out);
    state.remote_write.write_metrics(&mut out);
    state.http_metrics.write(&mut out);
    out
}

/// Resident memory in bytes and CPU seconds from /proc (Linux only).
fn process_stats() -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some((rss_pages * 4096, (utime + stime) / ticks))
}

/// The incremental executor's metrics (promflow's own), in `--rules.evaluation-mode=event`.
fn write_dataflow_metrics(out: &mut String, views: &promflow_incremental::live::LiveViews) {
    header(
        out,
        "promflow_dataflow_records_total",
        "counter",
        "Records (value changes) out of the dataflow's operators, by kind of operator.",
    );
    for (operator, n) in views.records_total() {
        let _ = writeln!(out, "promflow_dataflow_records_total{{operator=\"{operator}\"}} {n}");
    }
    gauge(
        out,
        "promflow_dataflow_arrangements",
        "Arrangements the views of rules and subscriptions registered (shared sub-expressions count once).",
        views.arrangements(),
    );
    gauge(
        out,
        "promflow_dataflow_samples_kept",
        "Samples the rule views' per-series operators hold: windows' samples, candidates for a window's extreme, and the oldest samples of windows kept by their ends.",
        views.samples_kept(),
    );
    let (live, batch) = views.counts();
    header(out, "promflow_rule_expressions", "gauge", "Rule expressions by how they are evaluated.");
    let _ = writeln!(out, "promflow_rule_expressions{{evaluation=\"view\"}} {live}");
    let _ = writeln!(out, "promflow_rule_expressions{{evaluation=\"batch\"}} {batch}");
}

/// Prometheus's rule-group metrics, labelled `rule_group="<file>;<name>"`.
fn write_rule_metrics(out: &mut String, groups: &[promflow_rules::GroupStatus]) {
    type Value = fn(&promflow_rules::GroupStatus) -> f64;
    let families: [(&str, &str, &str, Value); 8] = [
        ("prometheus_rule_evaluations_total", "counter", "The total number of rule evaluations.", |g| {
            g.rule_evaluations as f64
        }),
        (
            "prometheus_rule_evaluation_failures_total",
            "counter",
            "The total number of rule evaluation failures.",
            |g| g.rule_failures as f64,
        ),
        (
            "prometheus_rule_group_iterations_total",
            "counter",
            "The total number of scheduled rule group evaluations, whether executed or missed.",
            |g| (g.iterations + g.missed_iterations) as f64,
        ),
        (
            "prometheus_rule_group_iterations_missed_total",
            "counter",
            "The total number of rule group evaluations missed due to slow rule group evaluation.",
            |g| g.missed_iterations as f64,
        ),
        ("prometheus_rule_group_interval_seconds", "gauge", "The interval of a rule group.", |g| {
            g.interval_ms as f64 / 1000.0
        }),
        (
            "prometheus_rule_group_last_duration_seconds",
            "gauge",
            "The duration of the last rule group evaluation.",
            |g| g.evaluation_time.as_secs_f64(),
        ),
        (
            "prometheus_rule_group_last_evaluation_timestamp_seconds",
            "gauge",
            "The timestamp of the last rule group evaluation in seconds.",
            |g| g.last_evaluation_ms.map_or(0.0, |t| t as f64 / 1000.0),
        ),
        ("prometheus_rule_group_rules", "gauge", "The number of rules.", |g| g.rules.len() as f64),
    ];
    for (name, typ, help, value) in families {
        header(out, name, typ, help);
        for g in groups {
            let key = format!("{};{}", g.file, g.name)
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "{name}{{rule_group=\"{key}\"}} {}", value(g));
        }
    }
}
