//! Command-line flags, named and defaulted as Prometheus 3.x names them.

use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

fn duration(s: &str) -> Result<Duration, String> {
    promflow_config::parse_duration(s).map_err(|e| e.to_string())
}

fn log_level(s: &str) -> Result<String, String> {
    match s {
        "debug" | "info" | "warn" | "error" => Ok(s.to_string()),
        _ => Err(format!("enum value must be one of debug,info,warn,error, got '{s}'")),
    }
}

fn log_format(s: &str) -> Result<String, String> {
    match s {
        "logfmt" | "json" => Ok(s.to_string()),
        _ => Err(format!("enum value must be one of logfmt,json, got '{s}'")),
    }
}

/// Parses a byte size as Prometheus's `--storage.tsdb.retention.size` does: a number and a
/// unit among B, KB, MB, GB, TB, PB, EB, in powers of 1024 (`512MB` is 512 MiB).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("invalid size {s:?}: expected a number and a unit such as 512MB"))?;
    let shift = match unit {
        "B" => 0,
        "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        "PB" | "PiB" => 50,
        "EB" | "EiB" => 60,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, PB or EB)"
            ))
        }
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// The retention Prometheus applies for these flags: `--storage.tsdb.retention.time` (or
/// the deprecated `--storage.tsdb.retention`), and 15 days when neither it nor
/// `--storage.tsdb.retention.size` is set. Returns (time in ms, size in bytes); `None` is
/// unlimited.
pub fn retention(flags: &Flags) -> Result<(Option<i64>, Option<u64>), String> {
    let size = match flags.retention_size.as_str() {
        "" | "0" | "0B" => None,
        s => Some(parse_bytes(s)?),
    };
    let time = match (flags.retention_time.as_str(), flags.legacy_retention) {
        ("", Some(d)) => Some(d),
        ("", None) => None,
        (s, _) => Some(duration(s)?),
    }
    .filter(|d| !d.is_zero());
    let time = match (time, size) {
        (None, None) => Some(Duration::from_secs(15 * 24 * 3600)),
        (t, _) => t,
    };
    Ok((time.map(|d| d.as_millis().min(i64::MAX as u128) as i64), size))
}

/// `--storage.tsdb.max-block-duration` in milliseconds, or Prometheus's default: 31 days, or a
/// tenth of the retention time when that is shorter.
pub fn max_block_duration(flags: &Flags, retention_time_ms: Option<i64>) -> i64 {
    const DAYS_31: i64 = 31 * 24 * 3600 * 1000;
    match flags.max_block_duration {
        Some(d) => d.as_millis().min(i64::MAX as u128) as i64,
        None => retention_time_ms.map_or(DAYS_31, |r| (r / 10).min(DAYS_31)),
    }
}

/// The subcommands, for `--help` (the server's flags come first, as in Prometheus's).
pub const SUBCOMMANDS: &str = "Commands (each with --help):
  promflow check config|rules <file>...                       check files, as promtool does
  promflow test rules <test-rule-file>...                     run rule unit tests, as promtool does
  promflow tsdb create-blocks-from openmetrics <in> [<out>]   backfill blocks from OpenMetrics text
  promflow subscribe <server> <query>                         print a query's live result as it changes
  promflow help                                               this text
  promflow --version                                          the version, as Prometheus prints it";

/// `--version`'s text in Prometheus's layout, which scripts parse (`NAME, version X (branch:
/// …, revision: …)` and indented build lines).
pub fn version_text() -> String {
    let platform = format!(
        "{}/{}",
        std::env::consts::OS,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    );
    format!(
        "promflow, version {} (branch: {}, revision: {})\n  build user:       {}\n  build date:       {}\n  rust version:     {}\n  platform:         {platform}\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("PROMFLOW_BUILD_BRANCH").unwrap_or("unknown"),
        option_env!("PROMFLOW_BUILD_REVISION").unwrap_or("unknown"),
        option_env!("PROMFLOW_BUILD_USER").unwrap_or("unknown"),
        option_env!("PROMFLOW_BUILD_DATE").unwrap_or("unknown"),
        option_env!("PROMFLOW_RUSTC_VERSION").unwrap_or("unknown"),
    )
}

/// promflow's flags. Every flag Prometheus 3.x's server accepts is accepted; those promflow
/// does not implement yet are listed in [`UNIMPLEMENTED`] and draw one warning when set.
#[derive(Parser, Debug)]
#[command(
    name = "promflow",
    about = "The Prometheus-compatible monitoring server, built as a streaming dataflow engine.",
    long_about = None,
    disable_version_flag = true,
    after_help = SUBCOMMANDS
)]
pub struct Flags {
    /// Prometheus configuration file path.
    #[arg(long = "config.file", default_value = "prometheus.yml")]
    pub config_file: String,
    /// Interval at which the configuration file is checked for changes (0 disables).
    #[arg(long = "config.auto-reload-interval", default_value = "30s", value_parser = duration)]
    pub config_auto_reload_interval: Duration,
    /// Address to listen on for UI, API, and telemetry (repeatable).
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9090")]
    pub listen_address: Vec<String>,
    /// Path to the configuration file that can enable TLS or authentication (the exporter
    /// toolkit's format; re-read when it changes).
    #[arg(long = "web.config.file", default_value = "")]
    pub web_config_file: String,
    /// Maximum duration before timing out read of the request.
    #[arg(long = "web.read-timeout", default_value = "5m", value_parser = duration)]
    pub web_read_timeout: Duration,
    /// Maximum number of simultaneous connections across all listeners.
    #[arg(long = "web.max-connections", default_value_t = 512)]
    pub web_max_connections: u64,
    /// Limits the number of concurrent notification subscribers.
    #[arg(long = "web.max-notifications-subscribers", default_value_t = 16)]
    pub web_max_notifications_subscribers: u64,
    /// The URL under which promflow is externally reachable.
    #[arg(long = "web.external-url", default_value = "")]
    pub external_url: String,
    /// Prefix for the internal routes of web endpoints (defaults to the external URL's path).
    #[arg(long = "web.route-prefix", default_value = "")]
    pub route_prefix: String,
    /// Path to static asset directory, available at /user.
    #[arg(long = "web.user-assets", default_value = "")]
    pub user_assets: String,
    /// Enable shutdown and reload via HTTP request.
    #[arg(long = "web.enable-lifecycle", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_lifecycle: bool,
    /// Enable API endpoints for admin control actions.
    #[arg(long = "web.enable-admin-api", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_admin_api: bool,
    /// Enable API endpoint accepting remote write requests.
    #[arg(long = "web.enable-remote-write-receiver", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_remote_write_receiver: bool,
    /// Accept pushes on the Pushgateway API (`/metrics/job/<job>{/<label>/<value>}`,
    /// promflow's extension): pushed groups are ingested at every scrape interval.
    #[arg(long = "web.enable-pushgateway", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_pushgateway: bool,
    /// DNS servers (`host:port`, repeatable) that `dns_sd_configs` ask instead of those of
    /// /etc/resolv.conf (promflow's extension).
    #[arg(long = "discovery.dns-server")]
    pub dns_servers: Vec<String>,
    /// Remote write message versions the receiver accepts.
    #[arg(
        long = "web.remote-write-receiver.accepted-protobuf-messages",
        default_value = "prometheus.WriteRequest"
    )]
    pub remote_write_accepted_messages: Vec<String>,
    /// Enable API endpoint accepting OTLP write requests.
    #[arg(long = "web.enable-otlp-receiver", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_otlp_receiver: bool,
    /// Path to the console template directory.
    #[arg(long = "web.console.templates", default_value = "consoles")]
    pub console_templates: String,
    /// Path to the console library directory.
    #[arg(long = "web.console.libraries", default_value = "console_libraries")]
    pub console_libraries: String,
    /// Document title of the web UI.
    #[arg(long = "web.page-title", default_value = "promflow")]
    pub page_title: String,
    /// Regex for CORS origin. It is fully anchored.
    #[arg(long = "web.cors.origin", default_value = ".*")]
    pub cors_origin: String,
    /// Base path for metrics storage.
    #[arg(long = "storage.tsdb.path", default_value = "data/")]
    pub tsdb_path: String,
    /// How long to retain samples in storage.
    #[arg(long = "storage.tsdb.retention.time", default_value = "")]
    pub retention_time: String,
    /// Maximum number of bytes that can be stored for blocks.
    #[arg(long = "storage.tsdb.retention.size", default_value = "")]
    pub retention_size: String,
    /// How far ahead of the server's clock a sample's timestamp may be (promflow's extension;
    /// 0 takes any): later samples are refused, so that one sample from a wrong clock cannot
    /// make every present-time sample out of bounds.
    #[arg(long = "storage.tsdb.future-limit", default_value = "10m", value_parser = duration)]
    pub future_limit: Duration,
    /// Do not create lockfile in data directory.
    #[arg(long = "storage.tsdb.no-lockfile", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub no_lockfile: bool,
    /// Size of the queue through which head chunks are written to the disk.
    #[arg(long = "storage.tsdb.head-chunks-write-queue-size", default_value_t = 0)]
    pub head_chunks_write_queue_size: i64,
    /// Compress the tsdb WAL.
    #[arg(long = "storage.tsdb.wal-compression", num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub wal_compression: bool,
    /// Compression algorithm for the tsdb WAL.
    #[arg(long = "storage.tsdb.wal-compression-type", default_value = "snappy")]
    pub wal_compression_type: String,
    /// Allow compaction of overlapping blocks.
    #[arg(long = "storage.tsdb.allow-overlapping-compaction", num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub allow_overlapping_compaction: bool,
    /// Delayed compaction upper bound, in percent of the block range.
    #[arg(long = "storage.tsdb.delayed-compaction.max-percent", default_value_t = 10)]
    pub delayed_compaction_max_percent: i64,
    /// Minimum duration of a data block before being persisted.
    #[arg(long = "storage.tsdb.min-block-duration", default_value = "2h", value_parser = duration)]
    pub min_block_duration: Duration,
    /// Maximum duration compacted blocks may span.
    #[arg(long = "storage.tsdb.max-block-duration", value_parser = duration)]
    pub max_block_duration: Option<Duration>,
    /// Max size for a single chunk segment in a block.
    #[arg(long = "storage.tsdb.max-block-chunk-segment-size", default_value = "0B")]
    pub max_block_chunk_segment_size: String,
    /// Base path for metrics storage in agent mode.
    #[arg(long = "storage.agent.path", default_value = "data-agent/")]
    pub agent_path: String,
    /// Compress the agent WAL.
    #[arg(long = "storage.agent.wal-compression", num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub agent_wal_compression: bool,
    /// Minimum age samples may be before being considered for deletion when the WAL is truncated.
    #[arg(long = "storage.agent.retention.min-time", value_parser = duration)]
    pub agent_retention_min: Option<Duration>,
    /// Maximum age samples may be before being forcibly deleted when the WAL is truncated.
    #[arg(long = "storage.agent.retention.max-time", value_parser = duration)]
    pub agent_retention_max: Option<Duration>,
    /// Do not create lockfile in data directory (agent mode).
    #[arg(long = "storage.agent.no-lockfile", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub agent_no_lockfile: bool,
    /// How long to wait flushing sample on shutdown or config reload.
    #[arg(long = "storage.remote.flush-deadline", default_value = "1m", value_parser = duration)]
    pub remote_flush_deadline: Duration,
    /// Maximum overall number of samples to return via the remote read interface.
    #[arg(long = "storage.remote.read-sample-limit", default_value_t = 50_000_000)]
    pub remote_read_sample_limit: i64,
    /// Maximum number of concurrent remote read calls.
    #[arg(long = "storage.remote.read-concurrent-limit", default_value_t = 10)]
    pub remote_read_concurrent_limit: i64,
    /// Maximum number of bytes in a single frame for streaming remote read responses.
    #[arg(long = "storage.remote.read-max-bytes-in-frame", default_value_t = 1_048_576)]
    pub remote_read_max_bytes_in_frame: i64,
    /// Max time to tolerate prometheus outage for restoring "for" state of alert.
    #[arg(long = "rules.alert.for-outage-tolerance", default_value = "1h", value_parser = duration)]
    pub for_outage_tolerance: Duration,
    /// Minimum duration between alert and restored "for" state.
    #[arg(long = "rules.alert.for-grace-period", default_value = "10m", value_parser = duration)]
    pub for_grace_period: Duration,
    /// Minimum amount of time to wait before resending an alert to Alertmanager.
    #[arg(long = "rules.alert.resend-delay", default_value = "1m", value_parser = duration)]
    pub resend_delay: Duration,
    /// How rule expressions are kept current (promflow's extension): `event` maintains each
    /// one as a dataflow view fed by every appended sample and reads it at each evaluation;
    /// `tick` evaluates every rule from scratch at each evaluation, as Prometheus does.
    /// Expressions the dataflow does not maintain are evaluated as in `tick`.
    #[arg(long = "rules.evaluation-mode", default_value = "event", value_parser = ["event", "tick"])]
    pub rules_evaluation_mode: String,
    /// Every node of a promflow cluster, as the `host:port` its HTTP listener is reached at
    /// (repeatable; the same list on every node, this node's own address included;
    /// promflow's extension, `docs/cluster.md`). Without it the server runs alone.
    #[arg(long = "cluster.peer")]
    pub cluster_peers: Vec<String>,
    /// This node's place in the `--cluster.peer` list, counting from 0.
    #[arg(long = "cluster.index")]
    pub cluster_index: Option<usize>,
    /// A file listing every node of the cluster, one `host:port` a line (instead of
    /// `--cluster.peer`): read again at every reload, so that nodes can be added and
    /// removed without a restart.
    #[arg(long = "cluster.peers-file")]
    pub cluster_peers_file: Option<String>,
    /// This node's `host:port` as `--cluster.peers-file` lists it.
    #[arg(long = "cluster.advertise-address")]
    pub cluster_advertise_address: Option<String>,
    /// Where each node's dataflow accepts the others' connections, as `host:port`
    /// (repeatable: one for every `--cluster.peer`, in the same order; promflow's
    /// extension). With it the nodes run one dataflow computation across the cluster.
    #[arg(long = "cluster.dataflow-peer")]
    pub cluster_dataflow_peers: Vec<String>,
    /// A file holding the secret the nodes of a cluster share (at least 16 bytes; promflow's
    /// extension, `docs/cluster.md`). With it the nodes prove it to each other on every
    /// request and dataflow connection, honour the hop header only from a node, and may
    /// require basic authentication of clients. Read once, at start-up.
    #[arg(long = "cluster.secret-file")]
    pub cluster_secret_file: Option<String>,
    /// On how many nodes remote write stores each series; a write is answered once every
    /// copy is stored.
    #[arg(long = "cluster.replication-factor", default_value_t = 1)]
    pub cluster_replication_factor: usize,
    /// Where to serve SQL on the PostgreSQL wire protocol (`psql -h … -p …`; promflow's
    /// extension, `docs/sql.md`); off unless set. It takes the users and the TLS of
    /// `--web.config.file`.
    #[arg(long = "sql.listen-address")]
    pub sql_listen_address: Option<String>,
    /// Live result streams (`/api/v1/subscribe`, promflow's extension): how many
    /// subscriptions one websocket connection may hold.
    #[arg(long = "subscribe.max-per-connection", default_value_t = 100)]
    pub subscribe_max_per_connection: usize,
    /// Live result streams: how many subscriptions the server holds over all connections.
    #[arg(long = "subscribe.max-total", default_value_t = 10_000)]
    pub subscribe_max_total: usize,
    /// Live result streams: samples the subscriptions of one connection may hold, as their
    /// queries read them when subscribed (a view keeps its windows' samples).
    #[arg(long = "subscribe.max-samples-per-connection", default_value_t = 10_000_000)]
    pub subscribe_max_samples_per_connection: usize,
    /// Live result streams: samples the subscriptions of all connections may hold.
    #[arg(long = "subscribe.max-samples-total", default_value_t = 50_000_000)]
    pub subscribe_max_samples_total: usize,
    /// Live result streams: how often a subscribed query that the dataflow does not maintain
    /// (`topk`, subqueries, `offset`, …) is evaluated in batch to find its changes.
    #[arg(long = "subscribe.batch-interval", default_value = "1s", value_parser = duration)]
    pub subscribe_batch_interval: Duration,
    /// Timely worker threads that maintain rule views in `event` mode (promflow's extension).
    #[arg(long = "rules.dataflow-workers", default_value_t = 1)]
    pub rules_dataflow_workers: usize,
    /// Global concurrency limit for independent rules that can run concurrently.
    #[arg(long = "rules.max-concurrent-evals", default_value_t = 4)]
    pub rules_max_concurrent_evals: i64,
    /// The capacity of the queue for pending Alertmanager notifications.
    #[arg(long = "alertmanager.notification-queue-capacity", default_value_t = 10000)]
    pub notification_queue_capacity: i64,
    /// Send any outstanding Alertmanager notifications when shutting down.
    #[arg(long = "alertmanager.drain-notification-queue-on-shutdown", num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub drain_notification_queue: bool,
    /// The maximum lookback duration for retrieving metrics during expression evaluations.
    #[arg(long = "query.lookback-delta", default_value = "5m", value_parser = duration)]
    pub lookback_delta: Duration,
    /// Maximum time a query may take before being aborted.
    #[arg(long = "query.timeout", default_value = "2m", value_parser = duration)]
    pub query_timeout: Duration,
    /// Maximum number of queries executed concurrently.
    #[arg(long = "query.max-concurrency", default_value_t = 20)]
    pub query_max_concurrency: i64,
    /// How many nice steps below the server's CPU priority queries run (0 to 19; 0: at the
    /// same priority), so that ingest keeps its share of the CPU while queries run.
    #[arg(long = "query.niceness", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub query_niceness: i32,
    /// Maximum number of samples a single query can load into memory.
    #[arg(long = "query.max-samples", default_value_t = 50_000_000)]
    pub query_max_samples: usize,
    /// Comma separated feature names to enable (repeatable).
    #[arg(long = "enable-feature", value_delimiter = ',')]
    pub enable_feature: Vec<String>,
    /// Run in agent mode.
    #[arg(long = "agent", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub agent: bool,
    /// Use GOMEMLIMIT-style automatic memory limits (accepted for compatibility).
    #[arg(long = "auto-gomemlimit", num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub auto_gomemlimit: bool,
    /// Ratio of the container memory limit used as the memory limit.
    #[arg(long = "auto-gomemlimit.ratio", default_value_t = 0.9)]
    pub auto_gomemlimit_ratio: f64,
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", default_value = "info", value_parser = log_level)]
    pub log_level: String,
    /// Output format of log messages.
    #[arg(long = "log.format", default_value = "logfmt", value_parser = log_format)]
    pub log_format: String,
    /// Scrape: adjust scrape timestamps by up to the tolerance to align them.
    #[arg(long = "scrape.adjust-timestamps", num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub scrape_adjust_timestamps: bool,
    /// Timestamp tolerance for scrape alignment.
    #[arg(long = "scrape.timestamp-tolerance", default_value = "2ms", value_parser = duration)]
    pub scrape_timestamp_tolerance: Duration,
    /// Interval used by the scrape manager to throttle target group updates.
    #[arg(long = "scrape.discovery-reload-interval", default_value = "5s", value_parser = duration)]
    pub scrape_discovery_reload_interval: Duration,
    /// Prometheus 2.x retention flag, deprecated in favour of --storage.tsdb.retention.time.
    #[arg(long = "storage.tsdb.retention", value_parser = duration)]
    pub legacy_retention: Option<Duration>,
}

/// Flags Prometheus accepts that promflow does not implement yet: setting one starts the
/// server with one warning naming it (see docs/configuration.md).
pub const UNIMPLEMENTED: &[&str] = &[
    "config.auto-reload-interval",
    "web.max-notifications-subscribers",
    "web.user-assets",
    "web.remote-write-receiver.accepted-protobuf-messages",
    "web.console.templates",
    "web.console.libraries",
    "storage.tsdb.no-lockfile",
    "storage.tsdb.head-chunks-write-queue-size",
    "storage.tsdb.wal-compression",
    "storage.tsdb.wal-compression-type",
    "storage.tsdb.allow-overlapping-compaction",
    "storage.tsdb.delayed-compaction.max-percent",
    "storage.tsdb.max-block-chunk-segment-size",
    "storage.agent.path",
    "storage.agent.wal-compression",
    "storage.agent.retention.min-time",
    "storage.agent.retention.max-time",
    "storage.agent.no-lockfile",
    "storage.remote.flush-deadline",
    "storage.remote.read-concurrent-limit",
    "storage.remote.read-max-bytes-in-frame",
    "rules.max-concurrent-evals",
    "alertmanager.notification-queue-capacity",
    "alertmanager.drain-notification-queue-on-shutdown",
    "agent",
    "auto-gomemlimit",
    "auto-gomemlimit.ratio",
    "scrape.adjust-timestamps",
    "scrape.timestamp-tolerance",
    "scrape.discovery-reload-interval",
];

/// Rewrites kingpin's `--no-<flag>` negations into `--<flag>=false` before clap sees them.
fn normalise_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let bools: Vec<String> = Flags::command()
        .get_arguments()
        .filter(|a| a.get_num_args().is_some_and(|n| n.min_values() == 0))
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    args.into_iter()
        .map(|a| match a.strip_prefix("--no-") {
            Some(rest) if bools.iter().any(|b| b == rest) => format!("--{rest}=false"),
            _ => a,
        })
        .collect()
}

/// Parses the process arguments; on error clap prints the message and exits (code 2).
pub fn parse() -> (Flags, ArgMatches) {
    let args = normalise_args(std::env::args());
    let matches = Flags::command().get_matches_from(args);
    let flags = Flags::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (flags, matches)
}

/// The unimplemented flags the user set explicitly.
pub fn unimplemented_set(matches: &ArgMatches) -> Vec<&'static str> {
    let cmd = Flags::command();
    UNIMPLEMENTED
        .iter()
        .copied()
        .filter(|name| {
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(*name))
                .is_some_and(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        })
        .collect()
}

/// `--web.external-url` as Prometheus computes it: `http://<hostname>:<port>` of the first
/// listen address when the flag is unset, and without a trailing `/` on its path. Alert links
/// (`generatorURL`) and templates' `$externalURL` are built from it.
pub fn external_url(flags: &Flags) -> String {
    if !flags.external_url.is_empty() {
        return flags.external_url.trim_end_matches('/').to_string();
    }
    // what Go's os.Hostname reads on Linux
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let port = flags.listen_address.first().and_then(|a| a.rsplit_once(':')).map_or("9090", |(_, p)| p);
    format!("http://{host}:{port}")
}

/// Every flag and its value as text, for `/api/v1/status/flags`.
pub fn flag_values(matches: &ArgMatches) -> Vec<(String, String)> {
    let cmd = Flags::command();
    let mut out = Vec::new();
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let id = a.get_id().as_str();
        let value = matches
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        out.push((long.to_string(), value));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negated_bools() {
        let args = normalise_args(["promflow".to_string(), "--no-web.enable-lifecycle".to_string()]);
        assert_eq!(args[1], "--web.enable-lifecycle=false");
        let m = Flags::command().get_matches_from(args);
        assert!(!Flags::from_arg_matches(&m).unwrap().enable_lifecycle);
    }

    #[test]
    fn defaults_match_prometheus() {
        let m = Flags::command().get_matches_from(["promflow"]);
        let f = Flags::from_arg_matches(&m).unwrap();
        assert_eq!(f.config_file, "prometheus.yml");
        assert_eq!(f.tsdb_path, "data/");
        assert_eq!(f.listen_address, vec!["0.0.0.0:9090"]);
        assert_eq!(f.lookback_delta, Duration::from_secs(300));
        assert_eq!(f.query_timeout, Duration::from_secs(120));
        assert_eq!(f.query_max_samples, 50_000_000);
        assert!(unimplemented_set(&m).is_empty());
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Flags::command().try_get_matches_from(["promflow", "--query.timeout=abc"]).is_err());
        assert!(Flags::command().try_get_matches_from(["promflow", "--log.level=loud"]).is_err());
        assert!(Flags::command().try_get_matches_from(["promflow", "--no-such-flag"]).is_err());
    }
}
