//! The scrape manager: turns scrape configs into targets (static and file discovery,
//! relabelling), runs one loop per target, and appends what each scrape yields, with
//! Prometheus's report series and staleness markers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promflow_config::{relabel, Config, RelabelConfig, ScrapeConfig};
use promflow_storage::exemplars::Exemplar;
use promflow_storage::json_log::{rfc3339_ms, JsonLog};
use promflow_storage::native_histogram::FloatHistogram;
use promflow_storage::{now_ms, stale_nan, Appender, Db, Labels};
use tokio::sync::watch;

use crate::exposition::{self, MetricMetadata, ParsedExemplar};
use crate::Error;

/// The state of one target as the targets API reports it.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    /// The job's name.
    pub scrape_pool: String,
    /// Labels before relabelling.
    pub discovered_labels: Labels,
    /// Labels after relabelling (empty for dropped targets).
    pub labels: Labels,
    /// Whether relabelling dropped the target.
    pub dropped: bool,
    /// The URL scraped.
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: &'static str,
    /// The last scrape's error, or "".
    pub last_error: String,
    /// When the last scrape started.
    pub last_scrape: Option<chrono::DateTime<chrono::Utc>>,
    /// How long the last scrape took.
    pub last_duration: Duration,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
}

/// What a pool needs from its scrape config, resolved against the global section.
#[derive(Clone, Debug, PartialEq)]
struct PoolSettings {
    job: String,
    interval: Duration,
    timeout: Duration,
    metrics_path: String,
    scheme: String,
    params: BTreeMap<String, Vec<String>>,
    honor_labels: bool,
    honor_timestamps: bool,
    relabel: Vec<RelabelConfig>,
    metric_relabel: Vec<RelabelConfig>,
    sample_limit: usize,
    label_limit: usize,
    label_name_length_limit: usize,
    label_value_length_limit: usize,
    body_size_limit: u64,
    /// Targets the pool may have (`target_limit`, 0 for any number).
    target_limit: usize,
    accept: String,
    client_key: String,
    /// How histograms are read (native, classic kept, classic converted to custom buckets).
    histograms: exposition::HistogramOptions,
    /// `native_histogram_bucket_limit`: 0 for none.
    bucket_limit: usize,
    /// The highest schema a native histogram is kept at (`native_histogram_min_bucket_factor`).
    max_schema: i32,
    /// What is done with start timestamps.
    start_timestamps: StartTimestampOptions,
}

/// Per-target mutable status shared between the loop and the API.
#[derive(Default)]
struct TargetStatus {
    health: &'static str,
    last_error: String,
    last_scrape: Option<chrono::DateTime<chrono::Utc>>,
    last_duration: Duration,
    metadata: Vec<MetricMetadata>,
}

struct Target {
    discovered: Labels,
    labels: Labels,
    url: String,
    status: Arc<Mutex<TargetStatus>>,
    /// `None` while running; `Some(markers)` stops the loop, writing staleness markers for
    /// its series when `markers` is true.
    stop: watch::Sender<Option<bool>>,
}

/// Where a pool's loops log their failed scrapes: the job's `scrape_failure_log_file`, swapped
/// at every configuration load without restarting the loops.
type FailureLogSlot = Arc<Mutex<Option<Arc<JsonLog>>>>;

struct Pool {
    settings: PoolSettings,
    failure_log: FailureLogSlot,
    client: reqwest::Client,
    targets: HashMap<u64, Target>,
    dropped: Vec<Labels>,
    groups: HashMap<String, Vec<(Vec<String>, Labels)>>,
    sd_stop: Option<watch::Sender<bool>>,
    /// Why every target of the pool fails without being scraped (its `target_limit` is
    /// exceeded), shared with the pool's loops; `None` while they scrape.
    forced_error: ForcedError,
}

/// A pool's forced error (see [`Pool::forced_error`]).
type ForcedError = Arc<Mutex<Option<String>>>;

#[derive(Default)]
struct Counters {
    scrapes: AtomicU64,
    failed: AtomicU64,
    sample_limit_exceeded: AtomicU64,
    /// Scrapes refused for a label limit, and for the body size limit.
    label_limits_exceeded: AtomicU64,
    body_size_limit_exceeded: AtomicU64,
    /// Scrape pools restarted with changed settings at a reload, and those whose new
    /// settings could not be applied (the reload fails, the old pool goes on).
    pool_reloads: AtomicU64,
    pool_reloads_failed: AtomicU64,
    out_of_order: AtomicU64,
    duplicate: AtomicU64,
    /// Syncs of a pool that found more targets than its `target_limit`.
    target_limit_exceeded: AtomicU64,
    /// Exemplars storage refused (older than their series' newest, labels too long).
    exemplars_out_of_order: AtomicU64,
    /// Scrapes that failed because a native histogram had more buckets than the limit,
    /// even at the lowest resolution.
    bucket_limit_exceeded: AtomicU64,
    /// HTTP service discovery fetches that failed.
    sd_failures: AtomicU64,
    /// DNS service discovery refreshes, and those that failed.
    dns_lookups: AtomicU64,
    dns_failures: AtomicU64,
    /// Consul service discovery requests that failed.
    consul_failures: AtomicU64,
    /// Kubernetes service discovery's events and failed requests.
    kubernetes: Arc<crate::kubernetes_sd::Counters>,
}

/// What scrapes do with the start (created) timestamps that targets expose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartTimestampOptions {
    /// OpenMetrics `_created` lines are read as their families' start timestamps instead of
    /// being stored as series (`st-storage`, `created-timestamp-zero-ingestion`); protobuf
    /// created timestamps are read either way.
    pub created_lines: bool,
    /// A sample with a start timestamp before it is preceded by a zero sample at that
    /// start timestamp (`created-timestamp-zero-ingestion`).
    pub zero_samples: bool,
}

/// Which targets this server scrapes, by the stable hash of a target's labels after
/// relabelling ([`ScrapeManager::set_target_filter`]): in a cluster, the ones it owns.
pub type TargetFilter = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// The samples a scrape stored (its own, staleness markers and report series), for copies
/// of them kept elsewhere ([`ScrapeManager::set_copies`]).
#[derive(Debug, Default)]
pub struct ScrapedSamples {
    /// Float samples (staleness markers included), each with its series and timestamp.
    pub floats: Vec<(Labels, i64, f64)>,
    /// Native-histogram samples, each with its series and timestamp.
    pub histograms: Vec<(Labels, i64, FloatHistogram)>,
}

impl ScrapedSamples {
    /// Whether there is nothing to copy.
    pub fn is_empty(&self) -> bool {
        self.floats.is_empty() && self.histograms.is_empty()
    }
}

/// What takes each scrape's stored samples once they are committed: in a cluster with
/// replicas, the sender of their copies to other nodes. It must not block.
pub type CopySink = Arc<dyn Fn(ScrapedSamples) + Send + Sync>;

/// Owns the scrape pools; `apply` is called at start-up and on every successful reload.
pub struct ScrapeManager {
    db: Arc<Db>,
    runtime: tokio::runtime::Handle,
    /// Set once at start-up, before the first configuration.
    start_timestamps: Mutex<StartTimestampOptions>,
    pools: Mutex<BTreeMap<String, Pool>>,
    counters: Arc<Counters>,
    /// The DNS servers `dns_sd_configs` ask.
    dns_servers: Mutex<Vec<std::net::SocketAddr>>,
    /// Set once at start-up: the targets to scrape, when not all.
    target_filter: Mutex<Option<TargetFilter>>,
    /// Set once at start-up: where the stored samples of every scrape go as well.
    copies: Mutex<Option<CopySink>>,
}

impl ScrapeManager {
    /// A manager appending to `db`, running its loops on `runtime`.
    pub fn new(db: Arc<Db>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(ScrapeManager {
            db,
            runtime,
            start_timestamps: Mutex::new(StartTimestampOptions::default()),
            pools: Mutex::new(BTreeMap::new()),
            counters: Arc::new(Counters::default()),
            dns_servers: Mutex::new(crate::dns_sd::system_servers()),
            target_filter: Mutex::new(None),
            copies: Mutex::new(None),
        })
    }

    /// Hands the samples every scrape stores, once committed, to `sink` as well (a cluster
    /// node's copies of them on other nodes). Set before the first configuration.
    pub fn set_copies(&self, sink: CopySink) {
        if let Ok(mut c) = self.copies.lock() {
            *c = Some(sink);
        }
    }

    /// Scrapes only the targets `filter` keeps (a cluster node's share); the others are
    /// neither scraped nor listed. Set before the first configuration.
    pub fn set_target_filter(&self, filter: TargetFilter) {
        if let Ok(mut f) = self.target_filter.lock() {
            *f = Some(filter);
        }
    }

    /// Sets what scrapes do with start timestamps, for the pools started from now on.
    pub fn set_start_timestamps(&self, opts: StartTimestampOptions) {
        if let Ok(mut s) = self.start_timestamps.lock() {
            *s = opts;
        }
    }

    /// Makes `dns_sd_configs` ask these servers instead of `/etc/resolv.conf`'s (for the
    /// discoveries started from now on).
    pub fn set_dns_servers(&self, servers: Vec<std::net::SocketAddr>) {
        if let Ok(mut s) = self.dns_servers.lock() {
            *s = servers;
        }
    }

    /// Brings the pools in line with `cfg`: pools whose settings are unchanged keep their
    /// loops; changed or removed ones stop (writing staleness markers) and new ones start.
    pub fn apply(self: &Arc<Self>, cfg: &Config) -> Result<(), Error> {
        let mut pools = self.pools.lock().map_err(|_| Error::Poisoned)?;
        let failure_logs = open_failure_logs(cfg)?;
        // Build every new or changed pool's client first, so that a bad TLS file refuses the
        // whole configuration before anything running is touched.
        type HttpSd = Vec<(promflow_config::HttpSdConfig, reqwest::Client)>;
        type ConsulSd = Vec<(promflow_config::ConsulSdConfig, reqwest::Client)>;
        type Fresh<'c> = (PoolSettings, &'c ScrapeConfig, reqwest::Client, HttpSd, ConsulSd);
        let mut fresh: BTreeMap<String, Fresh<'_>> = BTreeMap::new();
        let mut unchanged: Vec<&ScrapeConfig> = Vec::new();
        let start_timestamps = self.start_timestamps.lock().map(|s| *s).unwrap_or_default();
        for sc in &cfg.scrape_configs {
            let settings = pool_settings(sc, start_timestamps);
            let existing = pools.get(&sc.job_name).map(|p| p.settings == settings);
            if existing == Some(true) {
                unchanged.push(sc);
            } else {
                if existing.is_some() {
                    self.counters.pool_reloads.fetch_add(1, Ordering::Relaxed);
                }
                let client = build_client(sc, &settings).inspect_err(|_| {
                    if existing.is_some() {
                        self.counters.pool_reloads_failed.fetch_add(1, Ordering::Relaxed);
                    }
                })?;
                let mut http_sd = Vec::new();
                for h in &sc.http_sd_configs {
                    let timeout = h.refresh_interval.max(Duration::from_secs(1));
                    http_sd.push((h.clone(), crate::client::http_client(&h.http_client(), timeout)?));
                }
                let mut consul_sd = Vec::new();
                for c in &sc.consul_sd_configs {
                    let timeout = c.refresh_interval.max(Duration::from_secs(10));
                    consul_sd.push((c.clone(), crate::client::http_client(&c.http_client(), timeout)?));
                }
                fresh.insert(sc.job_name.clone(), (settings, sc, client, http_sd, consul_sd));
            }
        }
        let removed: Vec<String> = pools
            .keys()
            .filter(|job| !fresh.contains_key(*job) && !unchanged.iter().any(|sc| &sc.job_name == *job))
            .cloned()
            .collect();
        for job in removed {
            if let Some(pool) = pools.remove(&job) {
                stop_pool(pool, |_| true);
            }
        }
        for sc in unchanged {
            if let Some(p) = pools.get(&sc.job_name) {
                *p.failure_log.lock().map_err(|_| Error::Poisoned)? = failure_logs.get(&sc.job_name).cloned();
            }
            self.sync_group(&mut pools, &sc.job_name, "static", static_groups(sc));
        }
        for (job, (settings, sc, client, http_sd, consul_sd)) in fresh {
            let old = pools.remove(&job);
            let pool = Pool {
                settings,
                failure_log: Arc::new(Mutex::new(failure_logs.get(&job).cloned())),
                client,
                targets: HashMap::new(),
                dropped: vec![],
                groups: HashMap::new(),
                sd_stop: None,
                forced_error: ForcedError::default(),
            };
            pools.insert(job.clone(), pool);
            self.sync_group(&mut pools, &job, "static", static_groups(sc));
            if let Some(old) = old {
                // a target that the changed job still has keeps its series: no markers
                let still = pools
                    .get(&job)
                    .map(|p| p.targets.keys().copied().collect::<HashSet<u64>>())
                    .unwrap_or_default();
                stop_pool(old, |h| !still.contains(&h));
            }
            let discovers = !sc.file_sd_configs.is_empty()
                || !sc.http_sd_configs.is_empty()
                || !sc.dns_sd_configs.is_empty()
                || !sc.consul_sd_configs.is_empty()
                || !sc.kubernetes_sd_configs.is_empty();
            if discovers {
                let (tx, rx) = watch::channel(false);
                if let Some(p) = pools.get_mut(&job) {
                    p.sd_stop = Some(tx);
                }
                if !sc.file_sd_configs.is_empty() {
                    let files: Vec<(Vec<String>, Duration)> =
                        sc.file_sd_configs.iter().map(|f| (f.files.clone(), f.refresh_interval)).collect();
                    self.runtime.spawn(file_sd_loop(Arc::clone(self), job.clone(), files, rx.clone()));
                }
                for (i, h) in http_sd.into_iter().enumerate() {
                    let source = format!("http/{i}");
                    self.runtime.spawn(http_sd_loop(Arc::clone(self), job.clone(), source, h, rx.clone()));
                }
                for (i, c) in consul_sd.into_iter().enumerate() {
                    let source = format!("consul/{i}");
                    self.runtime.spawn(consul_sd_loop(Arc::clone(self), job.clone(), source, c, rx.clone()));
                }
                for (i, k) in sc.kubernetes_sd_configs.iter().enumerate() {
                    let mut sink = SdSink {
                        mgr: Arc::clone(self),
                        job: job.clone(),
                        source: format!("kubernetes/{i}"),
                        last: None,
                    };
                    let counters = Arc::clone(&self.counters.kubernetes);
                    let run =
                        crate::kubernetes_sd::run(k.clone(), counters, rx.clone(), move |g| sink.publish(g));
                    self.runtime.spawn(run);
                }
                let servers = self.dns_servers.lock().map(|s| s.clone()).unwrap_or_default();
                for (i, d) in sc.dns_sd_configs.iter().enumerate() {
                    let source = format!("dns/{i}");
                    let dns = (d.clone(), servers.clone());
                    self.runtime.spawn(dns_sd_loop(Arc::clone(self), job.clone(), source, dns, rx.clone()));
                }
            }
        }
        Ok(())
    }

    /// Applies the target filter again to every pool's targets (the cluster's peers changed):
    /// targets this node no longer owns stop, with staleness markers, and those it now owns
    /// start.
    pub fn refilter(self: &Arc<Self>) {
        let Ok(mut pools) = self.pools.lock() else { return };
        type Source = (String, String, Vec<(Vec<String>, Labels)>);
        let sources: Vec<Source> = pools
            .iter()
            .filter_map(|(job, pool)| {
                let (source, groups) = pool.groups.iter().next()?;
                Some((job.clone(), source.clone(), groups.clone()))
            })
            .collect();
        // syncing one source of a pool reconciles all of its targets
        for (job, source, groups) in sources {
            self.sync_group(&mut pools, &job, &source, groups);
        }
    }

    /// Replaces the target groups that `source` contributed to pool `job` and reconciles the
    /// pool's loops.
    fn sync_group(
        self: &Arc<Self>,
        pools: &mut BTreeMap<String, Pool>,
        job: &str,
        source: &str,
        groups: Vec<(Vec<String>, Labels)>,
    ) {
        let Some(pool) = pools.get_mut(job) else { return };
        pool.groups.insert(source.to_string(), groups);
        let mut wanted: HashMap<u64, (Labels, Labels, String)> = HashMap::new();
        let mut dropped = Vec::new();
        for (targets, group_labels) in pool.groups.values().flatten() {
            for addr in targets {
                let discovered = discovered_labels(&pool.settings, addr, group_labels);
                match target_labels(&pool.settings, &discovered) {
                    Some((labels, url)) => {
                        wanted.insert(labels.stable_hash(), (discovered, labels, url));
                    }
                    None => dropped.push(discovered),
                }
            }
        }
        pool.dropped = dropped;
        // another node's targets are its own business: not scraped here, nor counted
        let filter = self.target_filter.lock().ok().and_then(|f| f.clone());
        if let Some(keep) = filter {
            wanted.retain(|h, _| keep(*h));
        }
        // as Prometheus: over the limit, every target stays listed and fails each scrape
        // with this error, unscraped, until discovery or a reload brings the count down
        let limit = pool.settings.target_limit;
        let forced = (limit > 0 && wanted.len() > limit).then(|| {
            self.counters.target_limit_exceeded.fetch_add(1, Ordering::Relaxed);
            format!("target_limit exceeded (number of targets: {}, limit: {limit})", wanted.len())
        });
        if let Ok(mut slot) = pool.forced_error.lock() {
            *slot = forced;
        }
        let gone: Vec<u64> = pool.targets.keys().filter(|h| !wanted.contains_key(h)).copied().collect();
        for h in gone {
            if let Some(t) = pool.targets.remove(&h) {
                let _ = t.stop.send(Some(true));
            }
        }
        for (h, (discovered, labels, url)) in wanted {
            if pool.targets.contains_key(&h) {
                continue;
            }
            let (tx, rx) = watch::channel(None);
            let status = Arc::new(Mutex::new(TargetStatus { health: "unknown", ..Default::default() }));
            let lp = ScrapeLoop {
                db: Arc::clone(&self.db),
                copies: self.copies.lock().ok().and_then(|c| c.clone()),
                client: pool.client.clone(),
                settings: pool.settings.clone(),
                labels: labels.clone(),
                url: url.clone(),
                status: Arc::clone(&status),
                counters: Arc::clone(&self.counters),
                failure_log: Arc::clone(&pool.failure_log),
                forced_error: Arc::clone(&pool.forced_error),
                seen: HashMap::new(),
            };
            self.runtime.spawn(lp.run(rx));
            pool.targets.insert(h, Target { discovered, labels, url, status, stop: tx });
        }
    }

    /// A snapshot of every target, active and dropped.
    pub fn targets(&self) -> Vec<TargetInfo> {
        let Ok(pools) = self.pools.lock() else { return vec![] };
        let mut out = Vec::new();
        for (job, pool) in pools.iter() {
            let mut active: Vec<&Target> = pool.targets.values().collect();
            active.sort_by(|a, b| a.labels.cmp(&b.labels));
            for t in active {
                let st =
                    t.status.lock().map(|s| (s.health, s.last_error.clone(), s.last_scrape, s.last_duration));
                let (health, last_error, last_scrape, last_duration) =
                    st.unwrap_or(("unknown", String::new(), None, Duration::ZERO));
                out.push(TargetInfo {
                    scrape_pool: job.clone(),
                    discovered_labels: t.discovered.clone(),
                    labels: t.labels.clone(),
                    dropped: false,
                    scrape_url: t.url.clone(),
                    health,
                    last_error,
                    last_scrape,
                    last_duration,
                    interval: pool.settings.interval,
                    timeout: pool.settings.timeout,
                });
            }
            for d in &pool.dropped {
                out.push(TargetInfo {
                    scrape_pool: job.clone(),
                    discovered_labels: d.clone(),
                    labels: Labels::new(),
                    dropped: true,
                    scrape_url: String::new(),
                    health: "unknown",
                    last_error: String::new(),
                    last_scrape: None,
                    last_duration: Duration::ZERO,
                    interval: pool.settings.interval,
                    timeout: pool.settings.timeout,
                });
            }
        }
        out
    }

    /// Metric metadata from each target's last successful scrape, with the target's labels.
    pub fn metadata(&self) -> Vec<(Labels, MetricMetadata)> {
        let Ok(pools) = self.pools.lock() else { return vec![] };
        let mut out = Vec::new();
        for pool in pools.values() {
            for t in pool.targets.values() {
                if let Ok(s) = t.status.lock() {
                    out.extend(s.metadata.iter().map(|m| (t.labels.clone(), m.clone())));
                }
            }
        }
        out
    }

    /// Writes the scrape manager's and service discovery's metrics.
    pub fn write_metrics(&self, w: &mut promflow_storage::MetricsWriter) {
        use promflow_storage::MetricKind;
        let c = &self.counters;
        let counters = [
            ("promflow_scrapes_total", "Scrapes attempted.", &c.scrapes),
            ("promflow_scrapes_failed_total", "Scrapes that failed (target down).", &c.failed),
            (
                "prometheus_target_scrapes_exceeded_sample_limit_total",
                "Total number of scrapes that hit the sample limit and were rejected.",
                &c.sample_limit_exceeded,
            ),
            (
                "prometheus_target_scrape_pool_exceeded_label_limits_total",
                "Total number of times scrape pools hit the label limits, during sync or config reload.",
                &c.label_limits_exceeded,
            ),
            (
                "prometheus_target_scrapes_exceeded_body_size_limit_total",
                "Total number of scrapes that hit the body size limit",
                &c.body_size_limit_exceeded,
            ),
            (
                "prometheus_target_scrape_pool_reloads_total",
                "Total number of scrape pool reloads.",
                &c.pool_reloads,
            ),
            (
                "prometheus_target_scrape_pool_reloads_failed_total",
                "Total number of failed scrape pool reloads.",
                &c.pool_reloads_failed,
            ),
            (
                "prometheus_target_scrapes_sample_out_of_order_total",
                "Total number of samples rejected due to not being out of the expected order.",
                &c.out_of_order,
            ),
            (
                "prometheus_target_scrapes_sample_duplicate_timestamp_total",
                "Total number of samples rejected due to duplicate timestamps but different values.",
                &c.duplicate,
            ),
            (
                "prometheus_target_scrape_pool_exceeded_target_limit_total",
                "Total number of times scrape pools hit the target limit, during sync or config reload.",
                &c.target_limit_exceeded,
            ),
            (
                "prometheus_target_scrapes_exceeded_native_histogram_bucket_limit_total",
                "Total number of scrapes that hit the native histogram bucket limit and were rejected.",
                &c.bucket_limit_exceeded,
            ),
            (
                "prometheus_target_scrapes_exemplar_out_of_order_total",
                "Total number of exemplar rejected due to not being out of the expected order.",
                &c.exemplars_out_of_order,
            ),
            (
                "prometheus_sd_http_failures_total",
                "Number of HTTP service discovery refresh failures.",
                &c.sd_failures,
            ),
            (
                "prometheus_sd_consul_rpc_failures_total",
                "The number of Consul RPC call failures.",
                &c.consul_failures,
            ),
            ("prometheus_sd_dns_lookups_total", "The number of DNS-SD lookups.", &c.dns_lookups),
            (
                "prometheus_sd_dns_lookup_failures_total",
                "The number of DNS-SD lookup failures.",
                &c.dns_failures,
            ),
        ];
        for (name, help, counter) in counters {
            w.counter(name, help, counter.load(Ordering::Relaxed));
        }
        c.kubernetes.write_metrics(w);
        let Ok(pools) = self.pools.lock() else { return };
        w.counter(
            "prometheus_target_scrape_pools_total",
            "Total number of scrape pool creation attempts.",
            pools.len(),
        );
        let mut discovered = w.family(
            "prometheus_sd_discovered_targets",
            MetricKind::Gauge,
            "Current number of discovered targets.",
        );
        for (job, p) in pools.iter() {
            discovered.sample(&[("config", job), ("name", "scrape")], p.targets.len() + p.dropped.len());
        }
        let mut targets = w.family(
            "prometheus_target_scrape_pool_targets",
            MetricKind::Gauge,
            "Current number of targets in this scrape pool.",
        );
        for (job, p) in pools.iter() {
            targets.sample(&[("scrape_job", job)], p.targets.len());
        }
    }

    /// Stops every loop at shutdown. Like Prometheus, no staleness markers are written, so
    /// that series stay visible across a restart until the first new scrape.
    pub fn stop(&self) {
        if let Ok(mut pools) = self.pools.lock() {
            for (_, pool) in std::mem::take(&mut *pools) {
                stop_pool(pool, |_| false);
            }
        }
    }
}

/// Stops a pool's discovery and loops; `markers(target hash)` says whether a target's
/// series get staleness markers.
fn stop_pool(pool: Pool, markers: impl Fn(u64) -> bool) {
    if let Some(s) = pool.sd_stop {
        let _ = s.send(true);
    }
    for (h, t) in pool.targets {
        let _ = t.stop.send(Some(markers(h)));
    }
}

fn pool_settings(sc: &ScrapeConfig, start_timestamps: StartTimestampOptions) -> PoolSettings {
    PoolSettings {
        start_timestamps,
        job: sc.job_name.clone(),
        interval: sc.scrape_interval,
        timeout: sc.scrape_timeout,
        metrics_path: sc.metrics_path.clone(),
        scheme: sc.scheme.clone(),
        params: sc.params.clone(),
        honor_labels: sc.honor_labels,
        honor_timestamps: sc.honor_timestamps,
        relabel: sc.relabel_configs.clone(),
        metric_relabel: sc.metric_relabel_configs.clone(),
        sample_limit: sc.sample_limit as usize,
        label_limit: sc.label_limit as usize,
        label_name_length_limit: sc.label_name_length_limit as usize,
        label_value_length_limit: sc.label_value_length_limit as usize,
        body_size_limit: sc.body_size_limit,
        target_limit: sc.target_limit as usize,
        accept: sc.accept_header(),
        client_key: format!(
            "{:?}{:?}{:?}{:?}",
            sc.basic_auth, sc.authorization, sc.tls_config, sc.bearer_token
        ),
        histograms: exposition::HistogramOptions {
            native: sc.scrape_native_histograms_enabled(),
            keep_classic: sc.always_scrape_classic_histograms.unwrap_or(false),
            classic_to_custom_buckets: sc.convert_classic_histograms_to_nhcb.unwrap_or(false),
        },
        bucket_limit: sc.native_histogram_bucket_limit as usize,
        max_schema: max_schema_for(sc.native_histogram_min_bucket_factor),
    }
}

/// The highest schema whose buckets grow by at least `factor` from one to the next
/// (`native_histogram_min_bucket_factor`), as Prometheus picks it: 8 for a factor of 1 or
/// less (none set), -4 at most for large factors.
fn max_schema_for(factor: f64) -> i32 {
    let schemas = promflow_storage::native_histogram::EXPONENTIAL_SCHEMAS;
    if factor <= 1.0 {
        return *schemas.end();
    }
    let floor = (-factor.log2().log2()).floor();
    floor.clamp(f64::from(*schemas.start()), f64::from(*schemas.end())) as i32
}

/// Lowers a native histogram's resolution to `max_schema`, then further while it has more
/// buckets than `limit` (0 for none); refuses it when even schema -4 (or custom buckets,
/// which cannot be merged) has too many.
fn fit_bucket_limits(h: &mut FloatHistogram, limit: usize, max_schema: i32) -> Result<(), String> {
    if h.uses_custom_buckets() {
        let buckets = h.positive_buckets().len();
        if limit > 0 && buckets > limit {
            return Err(format!("histogram bucket limit exceeded: {buckets} custom buckets, limit {limit}"));
        }
        return Ok(());
    }
    if h.schema > max_schema {
        h.reduce_resolution(max_schema);
    }
    let lowest = *promflow_storage::native_histogram::EXPONENTIAL_SCHEMAS.start();
    while limit > 0 && h.positive_buckets().len() + h.negative_buckets().len() > limit {
        if h.schema <= lowest {
            return Err(format!(
                "histogram bucket limit exceeded: {} buckets at schema {lowest}, limit {limit}",
                h.positive_buckets().len() + h.negative_buckets().len()
            ));
        }
        h.reduce_resolution(h.schema - 1);
    }
    Ok(())
}

fn static_groups(sc: &ScrapeConfig) -> Vec<(Vec<String>, Labels)> {
    sc.static_configs.iter().map(|s| (s.targets.clone(), s.labels.clone())).collect()
}

fn build_client(sc: &ScrapeConfig, s: &PoolSettings) -> Result<reqwest::Client, Error> {
    crate::client::http_client(&sc.http_client(), s.timeout)
}

/// The labels a target starts with before relabelling, as Prometheus sets them.
fn discovered_labels(s: &PoolSettings, addr: &str, group: &Labels) -> Labels {
    let mut l = group.clone();
    l.set("__address__", addr);
    l.set("job", &s.job);
    l.set("__scheme__", &s.scheme);
    l.set("__metrics_path__", &s.metrics_path);
    l.set("__scrape_interval__", &promflow_config::format_duration(s.interval));
    l.set("__scrape_timeout__", &promflow_config::format_duration(s.timeout));
    for (k, v) in &s.params {
        if let Some(first) = v.first() {
            l.set(&format!("__param_{k}"), first);
        }
    }
    l
}

/// Relabels a target; `None` when dropped. Returns the final labels and the scrape URL.
fn target_labels(s: &PoolSettings, discovered: &Labels) -> Option<(Labels, String)> {
    let mut l = relabel::process(discovered, &s.relabel)?;
    let addr = l.get("__address__").to_string();
    if addr.is_empty() {
        return None;
    }
    if l.get("instance").is_empty() {
        l.set("instance", &addr);
    }
    let scheme = l.get("__scheme__").to_string();
    if scheme != "http" && scheme != "https" {
        // relabelling (the common `prometheus.io/scheme` annotation rule) can set anything:
        // a target is scraped over HTTP or not at all
        tracing::debug!(target = %addr, scheme = %scheme, "dropping a target whose scheme is neither http nor https");
        return None;
    }
    let path = l.get("__metrics_path__").to_string();
    let mut query: Vec<(String, String)> = Vec::new();
    for (k, vals) in &s.params {
        let from_label = l.get(&format!("__param_{k}")).to_string();
        if !from_label.is_empty() {
            query.push((k.clone(), from_label));
            query.extend(vals.iter().skip(1).map(|v| (k.clone(), v.clone())));
        } else {
            query.extend(vals.iter().map(|v| (k.clone(), v.clone())));
        }
    }
    for x in l.iter() {
        if let Some(k) = x.name.strip_prefix("__param_") {
            if !s.params.contains_key(k) {
                query.push((k.to_string(), x.value.to_string()));
            }
        }
    }
    let mut url = format!("{scheme}://{addr}{path}");
    if !query.is_empty() {
        let q: Vec<String> =
            query.iter().map(|(k, v)| format!("{}={}", url_escape(k), url_escape(v))).collect();
        url.push('?');
        url.push_str(&q.join("&"));
    }
    l.retain(|x| !x.name.starts_with("__"));
    Some((l, url))
}

fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

async fn file_sd_loop(
    mgr: Arc<ScrapeManager>,
    job: String,
    files: Vec<(Vec<String>, Duration)>,
    mut stop: watch::Receiver<bool>,
) {
    let refresh = files
        .iter()
        .map(|(_, d)| *d)
        .min()
        .unwrap_or(Duration::from_secs(300))
        .max(Duration::from_millis(100));
    let patterns: Vec<String> = files.into_iter().flat_map(|(f, _)| f).collect();
    let mut sink = SdSink { mgr, job, source: "file".into(), last: None };
    loop {
        sink.publish(crate::file_sd::read_groups(&patterns));
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Where a discovery hands its target groups: the pool of `job`, as `source`'s part of it,
/// when they changed.
struct SdSink {
    mgr: Arc<ScrapeManager>,
    job: String,
    source: String,
    last: Option<Vec<(Vec<String>, Labels)>>,
}

impl SdSink {
    fn publish(&mut self, groups: Vec<(Vec<String>, Labels)>) {
        if self.last.as_ref() == Some(&groups) {
            return;
        }
        if let Ok(mut pools) = self.mgr.pools.lock() {
            self.mgr.sync_group(&mut pools, &self.job, &self.source, groups.clone());
        }
        self.last = Some(groups);
    }
}

/// Fetches one `http_sd_configs` entry every refresh interval; a failed fetch keeps the
/// targets of the last good one.
async fn http_sd_loop(
    mgr: Arc<ScrapeManager>,
    job: String,
    source: String,
    (cfg, client): (promflow_config::HttpSdConfig, reqwest::Client),
    mut stop: watch::Receiver<bool>,
) {
    let mut sink = SdSink { mgr, job, source, last: None };
    loop {
        match crate::http_sd::fetch(&client, &cfg).await {
            Ok(groups) => sink.publish(groups),
            Err(e) => {
                sink.mgr.counters.sd_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(job = %sink.job, url = %cfg.url, error = %e, "http_sd: fetch failed; keeping the last targets");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.refresh_interval.max(Duration::from_millis(100))) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Follows one `consul_sd_configs` entry: a round waits on the catalog for a change (or the
/// refresh interval); a failed round keeps the last targets and is retried after a pause.
async fn consul_sd_loop(
    mgr: Arc<ScrapeManager>,
    job: String,
    source: String,
    (cfg, client): (promflow_config::ConsulSdConfig, reqwest::Client),
    mut stop: watch::Receiver<bool>,
) {
    let mut sink = SdSink { mgr, job, source, last: None };
    let mut index = 0u64;
    let pause = cfg.refresh_interval.clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let started = std::time::Instant::now();
        let round = tokio::select! {
            r = crate::consul_sd::round(&client, &cfg, index) => r,
            _ = stop.changed() => return,
        };
        let mut wait = Duration::ZERO;
        match round {
            Ok(r) => {
                sink.publish(r.groups);
                // an index that goes back (a restarted server) starts the wait over; an answer
                // that did not wait (no change, no blocking) is not asked again at once
                let same = r.index == index;
                index = if r.index < index { 0 } else { r.index };
                if same && started.elapsed() < pause {
                    wait = cfg.refresh_interval;
                }
            }
            Err(e) => {
                sink.mgr.counters.consul_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(job = %sink.job, server = %cfg.server, error = %e, "consul_sd: request failed; keeping the last targets");
                index = 0;
                wait = pause;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Looks one `dns_sd_configs` entry up every refresh interval; a failed lookup keeps the
/// targets of the last good one.
async fn dns_sd_loop(
    mgr: Arc<ScrapeManager>,
    job: String,
    source: String,
    (cfg, servers): (promflow_config::DnsSdConfig, Vec<std::net::SocketAddr>),
    mut stop: watch::Receiver<bool>,
) {
    // per name: a name whose lookup fails keeps its last targets, the others follow theirs
    let mut by_name: BTreeMap<String, Vec<(Vec<String>, Labels)>> = BTreeMap::new();
    let mut sink = SdSink { mgr, job, source, last: None };
    loop {
        for name in &cfg.names {
            let counters = &sink.mgr.counters;
            counters.dns_lookups.fetch_add(1, Ordering::Relaxed);
            match crate::dns_sd::discover(&servers, &cfg, name).await {
                Ok(groups) => {
                    by_name.insert(name.clone(), groups);
                }
                Err(e) => {
                    counters.dns_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job = %sink.job, name = %name, error = %e, "dns_sd: lookup failed; keeping the last targets");
                }
            }
        }
        sink.publish(by_name.values().flatten().cloned().collect());
        tokio::select! {
            _ = tokio::time::sleep(cfg.refresh_interval.max(Duration::from_millis(100))) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One target's scrape loop.
struct ScrapeLoop {
    db: Arc<Db>,
    /// Where the stored samples go as well ([`ScrapeManager::set_copies`]).
    copies: Option<CopySink>,
    client: reqwest::Client,
    settings: PoolSettings,
    labels: Labels,
    url: String,
    status: Arc<Mutex<TargetStatus>>,
    counters: Arc<Counters>,
    failure_log: FailureLogSlot,
    forced_error: ForcedError,
    /// Series written by the previous scrape (without explicit timestamps): the ones that get
    /// a staleness marker when they disappear.
    seen: HashMap<Labels, ()>,
}

impl ScrapeLoop {
    async fn run(mut self, mut stop: watch::Receiver<Option<bool>>) {
        // Spread targets over the interval by a hash of their identity, as Prometheus does,
        // so that all targets of a job are not scraped at the same instant.
        let interval_ms = self.settings.interval.as_millis().max(1) as i64;
        let offset = (self.labels.stable_hash() % interval_ms as u64) as i64;
        let now = now_ms();
        let wait = (offset - now.rem_euclid(interval_ms)).rem_euclid(interval_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            _ = stop.changed() => return,
        }
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_t = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => break,
            }
            last_t = now_ms();
            self.scrape_once(last_t).await;
        }
        if *stop.borrow() != Some(true) {
            return;
        }
        // end of run: every series this target wrote goes stale
        let t = now_ms().max(last_t + 1);
        let db = Arc::clone(&self.db);
        let copies = self.copies.clone();
        let mut seen: Vec<Labels> = self.seen.keys().cloned().collect();
        seen.extend(report_series(&self.labels));
        let _ = tokio::task::spawn_blocking(move || {
            let mut app = db.appender();
            let mut kept = copies.as_ref().map(|_| ScrapedSamples::default());
            for l in &seen {
                let _ = store(app.as_mut(), kept.as_mut(), l, t, ScrapedValue::Float(stale_nan()));
            }
            match app.commit() {
                Ok(_) => pass_on(copies.as_ref(), kept),
                Err(e) => tracing::warn!(error = %e, "writing staleness markers for a stopped target"),
            }
        })
        .await;
    }

    async fn fetch(&self) -> Result<(Vec<u8>, Option<String>), String> {
        let timeout_secs = format!("{}", self.settings.timeout.as_secs_f64());
        let resp = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, self.settings.accept.as_str())
            .header("X-Prometheus-Scrape-Timeout-Seconds", timeout_secs)
            .send()
            .await
            .map_err(|e| describe_reqwest(&e, self.settings.timeout))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("server returned HTTP status {status}"));
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit = self.settings.body_size_limit;
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe_reqwest(&e, self.settings.timeout))? {
            body.extend_from_slice(&chunk);
            if limit > 0 && body.len() as u64 > limit {
                self.counters.body_size_limit_exceeded.fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "body size limit exceeded: the scrape response is larger than {limit} bytes"
                ));
            }
        }
        Ok((body, ct))
    }

    async fn scrape_once(&mut self, t: i64) {
        let started = Instant::now();
        let started_wall = chrono::Utc::now();
        self.counters.scrapes.fetch_add(1, Ordering::Relaxed);
        let forced = self.forced_error.lock().ok().and_then(|f| f.clone());
        let fetched = match forced {
            Some(error) => Err(error),
            None => self.fetch().await,
        };
        let parsed = fetched.and_then(|(body, ct)| {
            let format = exposition::format_from_content_type(ct.as_deref());
            let mut expo = exposition::parse_with(&body, format, &self.settings.histograms)
                .map_err(|e| e.to_string())?;
            if format == exposition::Format::OpenMetrics && self.settings.start_timestamps.created_lines {
                exposition::read_created_lines(&mut expo);
            }
            Ok(expo)
        });
        let duration = started.elapsed();
        let db = Arc::clone(&self.db);
        let settings = self.settings.clone();
        let target = self.labels.clone();
        let prev = std::mem::take(&mut self.seen);
        let counters = Arc::clone(&self.counters);
        let copies = self.copies.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            append_scrape(&db, &settings, &target, prev, t, parsed, duration, &counters, copies.as_ref())
        })
        .await;
        let (seen, err, metadata) = match outcome {
            Ok(o) => o,
            Err(e) => (HashMap::new(), Some(format!("internal error: {e}")), None),
        };
        self.seen = seen;
        if let Some(e) = &err {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            self.log_failure(e);
        }
        if let Ok(mut st) = self.status.lock() {
            st.health = if err.is_none() { "up" } else { "down" };
            // shown by the API and the UI: bounded, whatever the target answered
            st.last_error =
                err.map(|e| promflow_storage::shorten::shortened(&e, 1024).into_owned()).unwrap_or_default();
            st.last_scrape = Some(started_wall);
            st.last_duration = duration;
            if let Some(md) = metadata {
                st.metadata = md;
            }
        }
    }
}

impl ScrapeLoop {
    /// One line in the job's `scrape_failure_log_file`, in the layout of Prometheus's JSON
    /// logs (`time`, `level`, `msg`) with the target's URL.
    fn log_failure(&self, error: &str) {
        let log = self.failure_log.lock().ok().and_then(|l| l.clone());
        if let Some(log) = log {
            log.write(&serde_json::json!({
                "time": rfc3339_ms(now_ms()),
                "level": "ERROR",
                "msg": error,
                "target": self.url,
            }));
        }
    }
}

/// Opens every `scrape_failure_log_file` of `cfg` (each distinct path once, so jobs that share
/// the global file share its handle), keyed by job. A file that cannot be opened refuses the
/// configuration, as in Prometheus.
fn open_failure_logs(cfg: &Config) -> Result<HashMap<String, Arc<JsonLog>>, Error> {
    let mut by_path: HashMap<&str, Arc<JsonLog>> = HashMap::new();
    let mut by_job = HashMap::new();
    for sc in &cfg.scrape_configs {
        let Some(path) = sc.scrape_failure_log_file.as_deref() else { continue };
        let log = match by_path.get(path) {
            Some(l) => Arc::clone(l),
            None => {
                let l = JsonLog::open(path)
                    .map_err(|source| Error::FailureLog { path: path.to_string(), source })?;
                Arc::clone(by_path.entry(path).or_insert(Arc::new(l)))
            }
        };
        by_job.insert(sc.job_name.clone(), log);
    }
    Ok(by_job)
}

fn describe_reqwest(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("Get: context deadline exceeded (timeout {}s)", timeout.as_secs_f64());
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

/// Applies target labels to a scraped series: with `honor_labels` scraped labels win;
/// otherwise a clashing scraped label is kept as `exported_<name>`.
fn merge_target_labels(scraped: &Labels, target: &Labels, honor: bool) -> Labels {
    let mut out = scraped.clone();
    for tl in target.iter() {
        let existing = scraped.get(&tl.name);
        if honor {
            if existing.is_empty() {
                out.set(&tl.name, &tl.value);
            }
        } else {
            if !existing.is_empty() {
                out.set(&format!("exported_{}", tl.name), existing);
            }
            out.set(&tl.name, &tl.value);
        }
    }
    out
}

/// Prometheus's per-sample label limits; a violation fails the whole scrape.
fn check_label_limits(s: &PoolSettings, l: &Labels) -> Option<String> {
    if s.label_limit > 0 && l.len() > s.label_limit {
        return Some(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            l.metric_name(),
            l.len(),
            s.label_limit
        ));
    }
    for x in l.iter() {
        if s.label_name_length_limit > 0 && x.name.len() > s.label_name_length_limit {
            return Some(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, limit: {})",
                l.metric_name(),
                x.name,
                s.label_name_length_limit
            ));
        }
        if s.label_value_length_limit > 0 && x.value.len() > s.label_value_length_limit {
            return Some(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, limit: {})",
                l.metric_name(),
                x.name,
                x.value,
                s.label_value_length_limit
            ));
        }
    }
    None
}

/// The series every scrape reports about itself, in the order `append_scrape` writes them.
const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// The report series of a target: its labels with each report metric name.
fn report_series(target: &Labels) -> [Labels; 5] {
    REPORT_SERIES.map(|name| {
        let mut l = target.clone();
        l.set(promflow_storage::METRIC_NAME, name);
        l
    })
}

/// A scraped sample's value.
enum ScrapedValue {
    Float(f64),
    Histogram(FloatHistogram),
}

/// A scraped sample, relabelled and timed, before it is appended.
struct Scraped {
    labels: Labels,
    t: i64,
    value: ScrapedValue,
    /// Whether `t` is the target's own timestamp (such samples get no staleness markers).
    explicit: bool,
    /// Its start timestamp, if the target gave one.
    start: Option<i64>,
    exemplars: Vec<ParsedExemplar>,
}

type ScrapeOutcome = (HashMap<Labels, ()>, Option<String>, Option<Vec<MetricMetadata>>);

/// Hands `kept` to `sink`, when there is both and something kept.
fn pass_on(sink: Option<&CopySink>, kept: Option<ScrapedSamples>) {
    if let (Some(sink), Some(kept)) = (sink, kept) {
        if !kept.is_empty() {
            sink(kept);
        }
    }
}

/// Appends one scrape's samples, staleness markers and report series in one commit, and
/// then hands what it stored to `copies`.
#[allow(clippy::too_many_arguments)]
fn append_scrape(
    db: &Arc<Db>,
    s: &PoolSettings,
    target: &Labels,
    prev: HashMap<Labels, ()>,
    t: i64,
    parsed: Result<exposition::Exposition, String>,
    duration: Duration,
    counters: &Counters,
    copies: Option<&CopySink>,
) -> ScrapeOutcome {
    let mut app = db.appender();
    // what is stored, for the copies (only when there are copies to make)
    let mut kept = copies.map(|_| ScrapedSamples::default());
    let mut seen: HashMap<Labels, ()> = HashMap::new();
    let mut err = None;
    let (mut scraped, mut post_relabel, mut added) = (0usize, 0usize, 0usize);
    let mut metadata = None;
    match parsed {
        Err(e) => err = Some(e),
        Ok(expo) => {
            scraped = expo.samples.len() + expo.histograms.len();
            let mut batch: Vec<Scraped> = Vec::with_capacity(scraped);
            let floats = expo.samples.into_iter().map(|s| {
                let exemplars = s.exemplar.into_iter().collect();
                (s.labels, s.timestamp_ms, s.start_ms, ScrapedValue::Float(s.value), exemplars)
            });
            let histograms = expo.histograms.into_iter().map(|h| {
                (h.labels, h.timestamp_ms, h.start_ms, ScrapedValue::Histogram(h.histogram), h.exemplars)
            });
            for (labels, timestamp_ms, start, mut value, exemplars) in floats.chain(histograms) {
                let mut l = merge_target_labels(&labels, target, s.honor_labels);
                if !s.metric_relabel.is_empty() {
                    match relabel::process(&l, &s.metric_relabel) {
                        Some(x) => l = x,
                        None => continue,
                    }
                }
                if let Some(e) = check_label_limits(s, &l) {
                    counters.label_limits_exceeded.fetch_add(1, Ordering::Relaxed);
                    err = Some(e);
                    break;
                }
                if let ScrapedValue::Histogram(h) = &mut value {
                    if let Err(e) = fit_bucket_limits(h, s.bucket_limit, s.max_schema) {
                        counters.bucket_limit_exceeded.fetch_add(1, Ordering::Relaxed);
                        err = Some(e);
                        break;
                    }
                }
                let explicit = s.honor_timestamps && timestamp_ms.is_some();
                let ts = if explicit { timestamp_ms.unwrap_or(t) } else { t };
                batch.push(Scraped { labels: l, t: ts, value, explicit, start, exemplars });
            }
            if err.is_none() && s.sample_limit > 0 && batch.len() > s.sample_limit {
                counters.sample_limit_exceeded.fetch_add(1, Ordering::Relaxed);
                err =
                    Some(format!("sample limit exceeded: {} samples, limit {}", batch.len(), s.sample_limit));
            }
            if err.is_none() {
                post_relabel = batch.len();
                let mut dup_check: HashSet<Labels> = HashSet::with_capacity(batch.len());
                for Scraped { labels: l, t: ts, value: v, explicit, start, exemplars } in batch {
                    if !dup_check.insert(l.clone()) {
                        counters.duplicate.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // a zero sample where the count began, before the sample
                    let start = start.filter(|&st| st != 0);
                    if let Some(st) = start.filter(|&st| s.start_timestamps.zero_samples && st < ts) {
                        // refused as out of order once stored: the start does not move
                        let zero = match &v {
                            ScrapedValue::Float(_) => ScrapedValue::Float(0.0),
                            ScrapedValue::Histogram(h) => {
                                ScrapedValue::Histogram(FloatHistogram::empty_like(h))
                            }
                        };
                        let _ = store(app.as_mut(), kept.as_mut(), &l, st, zero);
                    }
                    match store(app.as_mut(), kept.as_mut(), &l, ts, v) {
                        Ok(()) => {}
                        Err(
                            promflow_storage::Error::OutOfOrder
                            | promflow_storage::Error::OutOfBounds
                            | promflow_storage::Error::TooFarInFuture { .. },
                        ) => {
                            counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(promflow_storage::Error::DuplicateTimestamp) => {
                            counters.duplicate.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, series = %l, "scrape: sample rejected");
                            continue;
                        }
                    }
                    if let Some(st) = start {
                        let _ = app.set_start_timestamp(&l, ts, st);
                    }
                    for e in exemplars {
                        let t = e.timestamp_ms.unwrap_or(ts);
                        let exemplar = Exemplar { labels: e.labels, value: e.value, t };
                        if let Err(err) = app.append_exemplar(&l, exemplar) {
                            counters.exemplars_out_of_order.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %err, series = %l, "scrape: exemplar rejected");
                        }
                    }
                    if !explicit {
                        if !prev.contains_key(&l) {
                            added += 1;
                        }
                        seen.insert(l, ());
                    }
                }
                metadata = Some(expo.metadata);
            }
        }
    }
    if err.is_some() {
        // a failed scrape appends nothing but staleness markers and the report
        app.rollback();
        app = db.appender();
        kept = kept.map(|_| ScrapedSamples::default());
        seen.clear();
        scraped = 0;
        post_relabel = 0;
        added = 0;
    }
    for l in prev.keys() {
        if !seen.contains_key(l) {
            let _ = store(app.as_mut(), kept.as_mut(), l, t, ScrapedValue::Float(stale_nan()));
        }
    }
    let up = if err.is_none() { 1.0 } else { 0.0 };
    let values = [up, duration.as_secs_f64(), scraped as f64, post_relabel as f64, added as f64];
    for (l, v) in report_series(target).iter().zip(values) {
        let _ = store(app.as_mut(), kept.as_mut(), l, t, ScrapedValue::Float(v));
    }
    if let Err(e) = app.commit() {
        tracing::error!(error = %e, job = %s.job, "scrape: commit failed");
        return (HashMap::new(), Some(format!("storage: {e}")), None);
    }
    pass_on(copies, kept);
    (seen, err, metadata)
}

/// Appends `value` to series `l` at `t`, and keeps what was stored in `kept`.
fn store(
    app: &mut dyn Appender,
    kept: Option<&mut ScrapedSamples>,
    l: &Labels,
    t: i64,
    value: ScrapedValue,
) -> Result<(), promflow_storage::Error> {
    match value {
        ScrapedValue::Float(v) => {
            app.append(l, t, v)?;
            if let Some(k) = kept {
                k.floats.push((l.clone(), t, v));
            }
        }
        ScrapedValue::Histogram(h) => {
            let copy = kept.as_ref().map(|_| h.clone());
            app.append_histogram(l, t, h)?;
            if let (Some(k), Some(h)) = (kept, copy) {
                k.histograms.push((l.clone(), t, h));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_labels_clash() {
        let scraped = Labels::from_pairs([("__name__", "x"), ("job", "inner")]);
        let target = Labels::from_pairs([("job", "outer"), ("instance", "h:1")]);
        let merged = merge_target_labels(&scraped, &target, false);
        assert_eq!(merged.get("job"), "outer");
        assert_eq!(merged.get("exported_job"), "inner");
        let honored = merge_target_labels(&scraped, &target, true);
        assert_eq!(honored.get("job"), "inner");
        assert_eq!(honored.get("instance"), "h:1");
    }
}
