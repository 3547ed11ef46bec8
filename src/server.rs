//! The server (`promflow` without a subcommand): storage, scraping, rules, remote storage and
//! the listeners started from the flags and the configuration in that order, served until a
//! signal or `/-/quit`, and stopped in the reverse order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use promflow_config::cluster_secret::ClusterSecret;
use promflow_config::web::WebGuard;
use promflow_config::{Config, LoadedConfig};
use promflow_http::{AppState, QueryLog, QuerySettings, ReloadFn, ServerStatus};
use promflow_incremental::cluster::{fingerprint_of, Credentials, Formation, Handshake, Occupant};
use promflow_incremental::live::LiveViews;
use promflow_incremental::SeriesOwner;
use promflow_plan::QueryOptions;
use promflow_remote::forward::{ClusterWrites, PlacedAppender, Placement};
use promflow_remote::reader::{PeerAccess, RemoteReaders, StandingFanout};
use promflow_remote::RemoteWriter;
use promflow_rules::{EvalSettings, GroupSpec, Manager as RuleManager};
use promflow_scrape::push::PushGateway;
use promflow_scrape::ScrapeManager;
use promflow_storage::{Db, DbOptions, Querier};
use regex::Regex;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::cli;
use crate::cluster::Cluster;
use crate::cluster_views::RuleViews;

/// The Prometheus version whose API and semantics promflow follows; API clients such as
/// Grafana read it from `/api/v1/status/buildinfo` and need a semver.
const COMPAT_VERSION: &str = "3.5.0";

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Runs the server until it is told to stop; an error is a reason not to start.
pub(crate) fn run(mut flags: cli::Flags, matches: &clap::ArgMatches) -> Result<(), String> {
    let cluster = cluster_from_flags(&mut flags, matches)?;
    // two ways of taking OTLP's deltas: one at most, as Prometheus refuses both
    if has_feature(&flags, "otlp-deltatocumulative") && has_feature(&flags, "otlp-native-delta-ingestion") {
        return Err(
            "cannot enable otlp-deltatocumulative and otlp-native-delta-ingestion features at the same time"
                .into(),
        );
    }
    let (loaded, rule_groups) = load_config(
        &flags.config_file,
        &flags.external_url,
        flags.rules_evaluation_mode == "event",
        &load_options(&flags),
    )
    .map_err(|e| format!("Error loading config (--config.file={}): {e}", flags.config_file))?;
    for w in &loaded.warnings {
        warn!(file = %flags.config_file, "{w}");
    }
    info!(
        file = %flags.config_file,
        rule_groups = rule_groups.len(),
        "completed loading of configuration file"
    );
    // security settings are checked before anything starts: an unusable one stops the server
    let security = Security::open(&flags, cluster.is_some())?;
    let db = open_storage(&flags, &loaded.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("promflow")
        // deeply nested queries recurse through parsing, lowering and evaluation
        .thread_stack_size(16 << 20)
        .build()
        .map_err(|e| format!("starting runtime: {e}"))?;
    let cluster = cluster.map(|c| Arc::new(RwLock::new(c)));
    let server =
        Components::start(&flags, matches, &loaded, rule_groups, &db, cluster, &security, runtime.handle())?;
    let reload = server.reload_handler(&flags, &db, runtime.handle().clone());
    let (quit, quit_rx) = watch::channel(false);
    let state =
        server.app_state(&flags, &loaded.config, &db, &security, Arc::clone(&reload), quit.clone())?;
    runtime.block_on(server.serve(&flags, &loaded.config, state, reload, (quit, quit_rx)))?;
    if let Err(e) = db.close() {
        warn!(error = %e, "closing storage");
    }
    info!("see you next time!");
    Ok(())
}

/// The cluster this node belongs to (`--cluster.peer`, `--cluster.index`), if any. Without
/// `--cluster.dataflow-peer` a cluster evaluates rules in batch over every node's storage
/// (`docs/cluster.md`), so an explicit `--rules.evaluation-mode=event` is refused, and the
/// default becomes `tick`.
fn cluster_from_flags(flags: &mut cli::Flags, matches: &clap::ArgMatches) -> Result<Option<Cluster>, String> {
    let cluster = match (&flags.cluster_peers_file, flags.cluster_peers.is_empty(), flags.cluster_index) {
        (Some(file), true, None) => {
            let me = flags.cluster_advertise_address.as_deref().ok_or(
                "--cluster.peers-file needs --cluster.advertise-address: this node's host:port as the file lists it",
            )?;
            Cluster::from_file(Path::new(file), me)?
        }
        (Some(_), _, _) => {
            return Err(
                "--cluster.peers-file takes the place of --cluster.peer and --cluster.index: give one or the other"
                    .into(),
            )
        }
        (None, ..) if flags.cluster_advertise_address.is_some() => {
            return Err("--cluster.advertise-address names this node in --cluster.peers-file, which is not given".into())
        }
        (None, true, None) if flags.cluster_replication_factor == 1 => return Ok(None),
        (None, true, None) => {
            return Err(
                "--cluster.replication-factor needs a cluster (--cluster.peer, --cluster.index)".into()
            )
        }
        (None, false, None) => {
            return Err("--cluster.peer needs --cluster.index: this node's place in the list".into())
        }
        (None, _, Some(index)) => Cluster::new(flags.cluster_peers.clone(), index)?,
    };
    if route_prefix(flags) != "/" {
        return Err("--cluster.peer: the nodes of a cluster reach each other's API at its root, so --web.route-prefix (or a path in --web.external-url) cannot be used in a cluster yet".into());
    }
    let copies = flags.cluster_replication_factor;
    if copies == 0 || copies > cluster.peers().len() {
        return Err(format!(
            "--cluster.replication-factor={copies}: a series is stored on 1 to {} nodes (the peers given)",
            cluster.peers().len()
        ));
    }
    // without the cluster's computation a node's views would see only the samples it stores
    if flags.rules_evaluation_mode == "event" && flags.cluster_dataflow_peers.is_empty() {
        if matches.value_source("rules_evaluation_mode") == Some(clap::parser::ValueSource::CommandLine) {
            return Err("--rules.evaluation-mode=event is not available in a cluster without --cluster.dataflow-peer: a node's views would see only the samples it stores (use tick, or form the cluster's dataflow)".into());
        }
        flags.rules_evaluation_mode = "tick".into();
    }
    info!(peers = ?cluster.peers(), me = %cluster.me(), "running as a node of a cluster");
    Ok(Some(cluster))
}

/// The cluster's dataflow computation, and the rules' views it carries.
type ClusterDataflow = (Arc<Formation>, Arc<RuleViews>);

/// The cluster's dataflow computation (`--cluster.dataflow-peer`), if the nodes run one:
/// its listener is bound here, so an address that cannot be listened at stops the server.
/// The computation's processes are fixed, so it needs the fixed `--cluster.peer` list.
/// It carries the rules' views `views` makes (in tick mode, none). The processes prove the
/// cluster's secret to each other, if it has one, and their connections are carried in TLS
/// when the web configuration serves TLS, relayed on `runtime`.
fn dataflow_formation(
    flags: &cli::Flags,
    cluster: Option<&Cluster>,
    security: &Security,
    runtime: &tokio::runtime::Handle,
    views: impl FnOnce(Cluster) -> Arc<RuleViews>,
) -> Result<Option<ClusterDataflow>, String> {
    if flags.cluster_dataflow_peers.is_empty() {
        return Ok(None);
    }
    let Some(cluster) = cluster.filter(|_| flags.cluster_peers_file.is_none()) else {
        return Err("--cluster.dataflow-peer needs --cluster.peer and --cluster.index: a dataflow computation's nodes are fixed, and --cluster.peers-file can change them".into());
    };
    let addresses = flags.cluster_dataflow_peers.clone();
    if addresses.len() != cluster.peers().len() {
        return Err(format!(
            "--cluster.dataflow-peer is given {} times for {} --cluster.peer: one for every node, in the same order",
            addresses.len(),
            cluster.peers().len()
        ));
    }
    // the same checks as the peers': host:port, each once
    Cluster::new(addresses.clone(), cluster.index())
        .map_err(|e| e.replace("--cluster.peer", "--cluster.dataflow-peer"))?;
    let here = &addresses[cluster.index()];
    let listener = std::net::TcpListener::bind(here.as_str())
        .map_err(|e| format!("--cluster.dataflow-peer={here}: cannot listen there: {e}"))?;
    let me = Handshake {
        index: cluster.index(),
        processes: addresses.len(),
        workers: flags.rules_dataflow_workers.max(1),
        // where a series' samples are kept follows the peers' placement, which every
        // process must compute alike
        fingerprint: fingerprint_of((dataflow_fingerprint(flags), cluster.peers())),
    };
    let placed = cluster.clone();
    let owner: SeriesOwner = Arc::new(move |series| placed.owner(series));
    info!(peers = ?addresses, "forming the cluster's dataflow");
    let views = views(cluster.clone());
    let occupant = Arc::clone(&views) as Arc<dyn Occupant>;
    let credentials = security
        .cluster_secret
        .as_ref()
        .map(|s| Arc::new(DataflowCredentials(s.clone())) as Arc<dyn Credentials>);
    let tls = security.web.current().is_ok_and(|s| s.tls.is_some());
    let tunnel = tls
        .then(|| crate::dataflow_tls::tunnel(addresses.clone(), Arc::clone(&security.web), runtime.clone()));
    if tls {
        info!("the cluster's dataflow connections are carried in TLS");
    }
    Formation::start(
        listener,
        addresses,
        me,
        (credentials, tunnel),
        (owner, millis(flags.lookback_delta)),
        occupant,
    )
    .map(|f| Some((Arc::new(f), views)))
    .map_err(|e| format!("starting the cluster's dataflow: {e}"))
}

/// The cluster's secret as the dataflow's set-up proves and checks it.
struct DataflowCredentials(ClusterSecret);

impl Credentials for DataflowCredentials {
    fn prove(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.0.prove(parts)
    }
    fn verify(&self, parts: &[&[u8]], proof: &[u8]) -> bool {
        self.0.verify(parts, proof)
    }
}

/// What the nodes of a dataflow computation must agree on: the build (which decides how
/// views are built) and the lookback delta.
fn dataflow_fingerprint(flags: &cli::Flags) -> u64 {
    promflow_incremental::cluster::fingerprint_of((
        env!("CARGO_PKG_VERSION"),
        option_env!("PROMFLOW_BUILD_REVISION"),
        millis(flags.lookback_delta),
    ))
}

/// A cluster's peers, shared by the parts that place targets, series and reads, and
/// replaced when `--cluster.peers-file` is read again.
type SharedCluster = Arc<RwLock<Cluster>>;

/// The peers now in force.
fn current(cluster: &SharedCluster) -> Cluster {
    cluster.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How remote write places series on `cluster`'s nodes.
fn placement(cluster: &Cluster) -> Placement {
    let ranked = cluster.clone();
    Placement {
        peers: cluster.peers().to_vec(),
        me: cluster.index(),
        rank: Arc::new(move |series: u64| ranked.ranking(series)),
    }
}

/// What a reload does with `--cluster.peers-file`: reads it again and, when the peers
/// changed, hands the new list to the scrape filter, the placement of writes and the reads.
struct PeersReload {
    file: Option<String>,
    me: String,
    replication: usize,
    cluster: Option<SharedCluster>,
    writes: Option<Arc<ClusterWrites>>,
    reads: Arc<RemoteReaders>,
}

impl PeersReload {
    /// The peer list `--cluster.peers-file` now holds, when it differs from the one in
    /// force; an unreadable or invalid file fails the reload.
    fn read(&self) -> Result<Option<Cluster>, String> {
        let (Some(file), Some(shared)) = (&self.file, &self.cluster) else { return Ok(None) };
        let fresh = Cluster::from_file(Path::new(file), &self.me)?;
        if self.replication > fresh.peers().len() {
            return Err(format!(
                "--cluster.peers-file={file} lists {} nodes, fewer than --cluster.replication-factor={}",
                fresh.peers().len(),
                self.replication
            ));
        }
        Ok((fresh.peers() != current(shared).peers()).then_some(fresh))
    }

    /// Puts `fresh` in force for the placement of writes, the scrape filter and the reads
    /// (which take it at their next `apply`).
    fn take(&self, fresh: Cluster) {
        let Some(shared) = &self.cluster else { return };
        info!(peers = ?fresh.peers(), "the cluster's peers changed");
        if let Some(writes) = &self.writes {
            writes.set_placement(placement(&fresh));
        }
        self.reads.set_cluster_peers(fresh.others().map(String::from).collect());
        *shared.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }
}

/// What the server implements, for the configuration's "not implemented yet" warnings (the
/// server's and `promflow check config`'s).
pub(crate) fn features() -> promflow_config::Features {
    let discoveries = [
        "static_configs",
        "file_sd_configs",
        "http_sd_configs",
        "dns_sd_configs",
        "consul_sd_configs",
        "kubernetes_sd_configs",
    ];
    promflow_config::Features {
        rules: true,
        alertmanagers: true,
        remote_write: true,
        remote_read: true,
        query_log: true,
        scrape_failure_log: true,
        otlp: true,
        exemplars: true,
        service_discoveries: discoveries.into_iter().map(String::from).collect(),
        ..Default::default()
    }
}

/// Reads the configuration and the rule files it names; rule files' problems fail the load.
fn load_config(
    path: &str,
    external_url: &str,
    event_mode: bool,
    opts: &promflow_config::LoadOptions,
) -> Result<(LoadedConfig, Vec<GroupSpec>), String> {
    let loaded = Config::load_file_with(std::path::Path::new(path), opts).map_err(|e| e.to_string())?;
    let groups = crate::rules::load_groups(&loaded.config, external_url, event_mode)?;
    Ok((loaded, groups))
}

/// The security settings: `--web.config.file`, `--web.cors.origin` and
/// `--cluster.secret-file`.
struct Security {
    web: Arc<WebGuard>,
    /// `None` for the default `.*`: every origin, answered `*`.
    cors_origin: Option<Regex>,
    /// The secret this node's cluster shares, if it has one.
    cluster_secret: Option<ClusterSecret>,
    /// How this node reaches the other nodes of its cluster (its scheme, TLS and secret).
    peer_access: PeerAccess,
}

impl Security {
    /// Reads the settings; `in_cluster`: whether this node is one of a cluster's. A setting
    /// that cannot be honoured is refused: a cluster secret without a cluster, and in a
    /// cluster, basic authentication without a cluster secret (the nodes would have no
    /// credentials for each other), and TLS with the cluster's dataflow computation (whose
    /// connections are not encrypted). With TLS, the nodes reach each other over HTTPS.
    fn open(flags: &cli::Flags, in_cluster: bool) -> Result<Security, String> {
        let web_config =
            (!flags.web_config_file.is_empty()).then(|| std::path::Path::new(&flags.web_config_file));
        let mut web = WebGuard::open(web_config).map_err(|e| {
            format!("Error loading web config (--web.config.file={}): {e}", flags.web_config_file)
        })?;
        let cluster_secret = match &flags.cluster_secret_file {
            None => None,
            Some(_) if !in_cluster => {
                return Err(
                    "--cluster.secret-file needs a cluster (--cluster.peer or --cluster.peers-file)".into()
                )
            }
            Some(file) => Some(
                ClusterSecret::read(Path::new(file)).map_err(|e| format!("--cluster.secret-file: {e}"))?,
            ),
        };
        let peer_tls = web.current().ok().and_then(|s| s.config.peer_tls());
        let mut peer_access = PeerAccess::default();
        if in_cluster {
            peer_access = PeerAccess::new(cluster_secret.as_ref(), peer_tls).map_err(|e| {
                format!("reaching the cluster's other nodes with the TLS settings of --web.config.file: {e}")
            })?;
            if web.requires_auth() && cluster_secret.is_none() {
                return Err("in a cluster, a --web.config.file with basic authentication needs --cluster.secret-file: the nodes authenticate to each other with the cluster's secret".into());
            }
        }
        if let Some(secret) = &cluster_secret {
            web = web.admitting_nodes(secret.clone());
            info!("the nodes of the cluster authenticate with its secret");
        }
        let cors_origin = match flags.cors_origin.as_str() {
            ".*" => None,
            re => Some(
                promflow_storage::re2::compile_anchored(re)
                    .map_err(|e| format!("--web.cors.origin={re}: {e}"))?,
            ),
        };
        Ok(Security { web: Arc::new(web), cors_origin, cluster_secret, peer_access })
    }
}

/// Opens the database under `--storage.tsdb.path` with the flags' block and retention settings.
fn open_storage(flags: &cli::Flags, config: &Config) -> Result<Arc<Db>, String> {
    info!(path = %flags.tsdb_path, "opening storage");
    let (retention_time, retention_size) = cli::retention(flags)?;
    let db_options = DbOptions {
        block_duration: millis(flags.min_block_duration).max(1),
        max_block_duration: cli::max_block_duration(flags, retention_time),
        retention_time,
        retention_size,
        out_of_order_window: millis(config.storage.tsdb.out_of_order_time_window),
        future_limit: Some(millis(flags.future_limit)).filter(|&l| l > 0),
        max_exemplars: max_exemplars(exemplar_storage(flags), config),
        start_timestamps: has_feature(flags, "st-storage"),
        ..DbOptions::default()
    };
    let db = Db::open(&PathBuf::from(&flags.tsdb_path), db_options)
        .map_err(|e| format!("opening storage: {e}"))?;
    db.set_stale_series_compaction_threshold(config.storage.tsdb.stale_series_compaction_threshold);
    Ok(db)
}

/// The server's running parts around storage.
struct Components {
    scrape: Arc<ScrapeManager>,
    status: Arc<ServerStatus>,
    notifier: Arc<promflow_notifier::Notifier>,
    push: Option<Arc<PushGateway>>,
    otlp: Option<Arc<promflow_otlp::Receiver>>,
    remote_write: Arc<RemoteWriter>,
    remote_read: Arc<RemoteReaders>,
    live_views: Option<Arc<LiveViews>>,
    rule_manager: Arc<RuleManager>,
    query_log: Arc<QueryLog>,
    /// In a cluster, where remote write stores each series.
    cluster_writes: Option<Arc<ClusterWrites>>,
    /// The cluster's peers now in force, if this node is in one.
    cluster: Option<SharedCluster>,
    /// The cluster's dataflow computation, with `--cluster.dataflow-peer`.
    dataflow: Option<Arc<Formation>>,
    /// The rules' views on it.
    rule_views: Option<Arc<RuleViews>>,
    /// How many aggregations of queries and rules were evaluated in parts on the nodes.
    pushdown_counts: Arc<promflow_http::PushdownCounts>,
}

impl Components {
    /// Starts every part but scraping, which starts once the listeners are bound
    /// ([`Components::serve`]).
    #[allow(clippy::too_many_arguments)]
    fn start(
        flags: &cli::Flags,
        matches: &clap::ArgMatches,
        loaded: &LoadedConfig,
        rule_groups: Vec<GroupSpec>,
        db: &Arc<Db>,
        cluster: Option<SharedCluster>,
        security: &Security,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Components, String> {
        let config = &loaded.config;
        let scrape = ScrapeManager::new(Arc::clone(db), runtime.clone());
        if let Some(cluster) = &cluster {
            let cluster = Arc::clone(cluster);
            scrape.set_target_filter(Arc::new(move |target| {
                cluster.read().unwrap_or_else(|e| e.into_inner()).owns(target)
            }));
        }
        scrape.set_start_timestamps(start_timestamp_options(flags));
        if !flags.dns_servers.is_empty() {
            let servers = flags
                .dns_servers
                .iter()
                .map(|s| {
                    s.parse::<std::net::SocketAddr>().map_err(|e| format!("--discovery.dns-server={s}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            scrape.set_dns_servers(servers);
        }
        let status = Arc::new(ServerStatus {
            version: COMPAT_VERSION.to_string(),
            config_yaml: RwLock::new(config.to_redacted_yaml()),
            external_labels: RwLock::new(config.global.external_labels.clone()),
            flags: cli::flag_values(matches),
            reload_ok: AtomicBool::new(true),
            last_reload_seconds: AtomicI64::new(now_seconds()),
            unimplemented_fields: AtomicI64::new(loaded.warnings.len() as i64),
            start_seconds: now_seconds(),
            ready: AtomicBool::new(false),
            storage_retention: if flags.retention_time.is_empty() {
                "15d".into()
            } else {
                flags.retention_time.clone()
            },
        });
        let notifier = promflow_notifier::Notifier::new(runtime);
        notifier.apply(config).map_err(|e| format!("applying configuration: {e}"))?;
        let push = flags
            .enable_pushgateway
            .then(|| PushGateway::start(Arc::clone(db), config.global.scrape_interval, runtime));
        let otlp = flags.enable_otlp_receiver.then(|| {
            let deltas = if has_feature(flags, "otlp-native-delta-ingestion") {
                promflow_otlp::Deltas::Stored
            } else if has_feature(flags, "otlp-deltatocumulative") {
                promflow_otlp::Deltas::Accumulated
            } else {
                promflow_otlp::Deltas::Refused
            };
            let zero_samples = start_timestamp_options(flags).zero_samples;
            Arc::new(promflow_otlp::Receiver::new(config, deltas, millis(flags.lookback_delta), zero_samples))
        });
        let remote_write = RemoteWriter::new(Arc::clone(db), runtime.clone(), Some(Arc::clone(&scrape)));
        remote_write.apply(config).map_err(|e| format!("applying configuration: {e}"))?;
        let remote_read = Arc::new(match &cluster {
            Some(c) => {
                let others = current(c).others().map(String::from).collect();
                RemoteReaders::with_cluster_peers(
                    others,
                    &security.peer_access,
                    flags.cluster_replication_factor,
                )
                .map_err(|e| e.to_string())?
            }
            None => RemoteReaders::new(),
        });
        remote_read.apply(config).map_err(|e| format!("applying configuration: {e}"))?;
        let query_log = Arc::new(QueryLog::default());
        open_query_log(&query_log, config)?;
        // a node's views would see its own samples only: in a cluster, rules read every
        // node's storage, as queries do, and views only on the cluster's computation
        let (live_views, rule_querier) = match &cluster {
            Some(_) => {
                let fanout = StandingFanout::new(Arc::clone(db), Arc::clone(&remote_read), runtime.clone());
                (None, Arc::new(fanout) as Arc<dyn Querier>)
            }
            None => (start_live_views(flags, db)?, Arc::clone(db) as Arc<dyn Querier>),
        };
        // in tick mode no rule reads views, and the computation forms with none
        let views = |cluster| {
            let stores = (Arc::clone(db), Arc::clone(&rule_querier));
            Arc::new(RuleViews::new(cluster, stores, &rule_groups, Arc::new(promflow_http::compile_shared)))
        };
        let (dataflow, rule_views) = match dataflow_formation(
            flags,
            cluster.as_ref().map(current).as_ref(),
            security,
            runtime,
            views,
        )? {
            Some((formation, views)) => (Some(formation), Some(views)),
            None => (None, None),
        };
        let cluster_writes = match &cluster {
            Some(c) => {
                let writes = ClusterWrites::new(
                    placement(&current(c)),
                    flags.cluster_replication_factor,
                    &security.peer_access,
                );
                Some(Arc::new(writes.map_err(|e| e.to_string())?))
            }
            None => None,
        };
        // in a cluster, what the rules write is stored where each series belongs
        let rule_writer: promflow_rules::AppenderFn = match &cluster_writes {
            Some(writes) => {
                let (writes, db, runtime) = (Arc::clone(writes), Arc::clone(db), runtime.clone());
                Arc::new(move || {
                    Box::new(PlacedAppender::new(Arc::clone(&writes), Arc::clone(&db), runtime.clone()))
                        as Box<dyn promflow_storage::Appender>
                })
            }
            None => {
                let db = Arc::clone(db);
                Arc::new(move || db.appender())
            }
        };
        // in a cluster, rules evaluated in batch aggregate in parts on the nodes, as queries do
        let pushdown_counts = Arc::new(promflow_http::PushdownCounts::default());
        let rule_pushdown = cluster.as_ref().map(|_| {
            let (db, readers, counts) =
                (Arc::clone(db), Arc::clone(&remote_read), Arc::clone(&pushdown_counts));
            Arc::new(promflow_http::RulePushdown::new(db, readers, runtime.clone(), counts))
                as Arc<dyn promflow_rules::PushdownFor>
        });
        let rule_manager = start_rules(
            flags,
            (rule_querier, rule_pushdown),
            rule_writer,
            &notifier,
            (live_views.clone(), dataflow.clone().zip(rule_views.clone())),
            &query_log,
        );
        rule_manager.update(rule_groups);
        // scraped series are stored where they are scraped, with replicas on the next nodes
        if let Some(writes) = cluster_writes.as_ref().filter(|_| flags.cluster_replication_factor > 1) {
            let (writes, runtime) = (Arc::clone(writes), runtime.clone());
            scrape.set_copies(Arc::new(move |stored| writes.send_replicas(stored, &runtime)));
        }
        Ok(Components {
            scrape,
            status,
            notifier,
            push,
            otlp,
            remote_write,
            remote_read,
            live_views,
            rule_manager,
            query_log,
            cluster_writes,
            cluster,
            dataflow,
            rule_views,
            pushdown_counts,
        })
    }

    /// What `SIGHUP` and `/-/reload` run: the configuration and rule files read again and
    /// applied to every part, or the running configuration kept when they are invalid.
    fn reload_handler(&self, flags: &cli::Flags, db: &Arc<Db>, runtime: tokio::runtime::Handle) -> ReloadFn {
        let path = flags.config_file.clone();
        let external_url = flags.external_url.clone();
        let event_mode = flags.rules_evaluation_mode == "event";
        let load_options = load_options(flags);
        let exemplar_storage = exemplar_storage(flags);
        let (scrape, status, db) = (Arc::clone(&self.scrape), Arc::clone(&self.status), Arc::clone(db));
        let (rule_manager, notifier) = (Arc::clone(&self.rule_manager), Arc::clone(&self.notifier));
        let (remote_write, remote_read) = (Arc::clone(&self.remote_write), Arc::clone(&self.remote_read));
        let push = self.push.clone();
        let otlp = self.otlp.clone();
        let query_log = Arc::clone(&self.query_log);
        let rule_views = self.rule_views.clone();
        let peers = PeersReload {
            file: flags.cluster_peers_file.clone(),
            me: flags.cluster_advertise_address.clone().unwrap_or_default(),
            replication: flags.cluster_replication_factor,
            cluster: self.cluster.clone(),
            writes: self.cluster_writes.clone(),
            reads: Arc::clone(&self.remote_read),
        };
        Arc::new(move || {
            let _guard = runtime.enter();
            let result =
                load_config(&path, &external_url, event_mode, &load_options).and_then(|(l, groups)| {
                    // a new peer list is checked first and taken last, once the rest applied
                    let fresh_peers = peers.read()?;
                    scrape.apply(&l.config).map_err(|e| e.to_string())?;
                    notifier.apply(&l.config).map_err(|e| e.to_string())?;
                    remote_write.apply(&l.config).map_err(|e| e.to_string())?;
                    remote_read.apply(&l.config).map_err(|e| e.to_string())?;
                    open_query_log(&query_log, &l.config)?;
                    if let Some(push) = &push {
                        push.set_interval(l.config.global.scrape_interval);
                    }
                    if let Some(otlp) = &otlp {
                        otlp.apply(&l.config);
                    }
                    if let Some(views) = &rule_views {
                        views.set_groups(&groups);
                    }
                    rule_manager.update(groups);
                    db.set_out_of_order_window(millis(l.config.storage.tsdb.out_of_order_time_window));
                    db.set_stale_series_compaction_threshold(
                        l.config.storage.tsdb.stale_series_compaction_threshold,
                    );
                    db.set_max_exemplars(max_exemplars(exemplar_storage, &l.config));
                    if let Some(fresh) = fresh_peers {
                        peers.take(fresh);
                        remote_read.apply(&l.config).map_err(|e| e.to_string())?;
                        scrape.refilter();
                    }
                    for w in &l.warnings {
                        warn!(file = %path, "{w}");
                    }
                    Ok(l)
                });
            match result {
                Ok(l) => {
                    status.record_reload(true, Some(l.config.to_redacted_yaml()), l.warnings.len());
                    status.set_external_labels(l.config.global.external_labels.clone());
                    info!(file = %path, "completed loading of configuration file");
                    Ok(())
                }
                Err(e) => {
                    status.record_reload(false, None, 0);
                    error!(file = %path, error = %e, "error reloading config; keeping the running configuration");
                    Err(e)
                }
            }
        })
    }

    /// What the HTTP handlers share.
    fn app_state(
        &self,
        flags: &cli::Flags,
        config: &Config,
        db: &Arc<Db>,
        security: &Security,
        reload: ReloadFn,
        quit: watch::Sender<bool>,
    ) -> Result<Arc<AppState>, String> {
        let query_pool = promflow_http::QueryPool::new(flags.query_niceness)
            .map_err(|e| format!("starting the query threads: {e}"))?;
        Ok(Arc::new(AppState {
            db: Arc::clone(db),
            scrape: Arc::clone(&self.scrape),
            rules: Arc::clone(&self.rule_manager),
            live: self.live_views.clone(),
            notifier: Arc::clone(&self.notifier),
            remote_write: Arc::clone(&self.remote_write),
            remote_read: Arc::clone(&self.remote_read),
            cluster_writes: self.cluster_writes.clone(),
            dataflow: self.dataflow.clone(),
            query: QuerySettings {
                lookback_delta: flags.lookback_delta,
                timeout: flags.query_timeout,
                max_samples: flags.query_max_samples,
                delayed_name_removal: delayed_name_removal(flags),
                use_start_timestamps: use_start_timestamps(flags),
                compile: promflow_promql::CompileOptions {
                    default_subquery_step: config.global.evaluation_interval,
                    ..Default::default()
                },
            },
            status: Arc::clone(&self.status),
            reload,
            lifecycle_enabled: flags.enable_lifecycle,
            admin_enabled: flags.enable_admin_api,
            remote_write_enabled: flags.enable_remote_write_receiver,
            start_zero_samples: start_timestamp_options(flags).zero_samples,
            otlp: self.otlp.clone(),
            remote_read_sample_limit: flags.remote_read_sample_limit,
            push: self.push.clone(),
            quit,
            http_metrics: promflow_http::HttpMetrics::with_pushdown(Arc::clone(&self.pushdown_counts)),
            subscriptions: promflow_http::Subscriptions::new(
                promflow_http::SubscriptionLimits {
                    per_connection: flags.subscribe_max_per_connection,
                    total: flags.subscribe_max_total,
                    samples_per_connection: flags.subscribe_max_samples_per_connection,
                    samples_total: flags.subscribe_max_samples_total,
                },
                flags.subscribe_batch_interval,
            ),
            web: Arc::clone(&security.web),
            read_timeout: flags.web_read_timeout,
            cors_origin: security.cors_origin.clone(),
            query_log: Arc::clone(&self.query_log),
            page_title: flags.page_title.clone(),
            query_concurrency: query_concurrency(flags),
            query_slots: Arc::new(tokio::sync::Semaphore::new(query_concurrency(flags))),
            query_pool: Arc::new(query_pool),
        }))
    }

    /// Binds the listeners, starts scraping, and serves until a signal or `/-/quit`; then
    /// stops scraping, rules, notifications, pushes and remote storage, in that order.
    async fn serve(
        self,
        flags: &cli::Flags,
        config: &Config,
        state: Arc<AppState>,
        reload: ReloadFn,
        (quit, quit_rx): (watch::Sender<bool>, watch::Receiver<bool>),
    ) -> Result<(), String> {
        if let Some(addr) = &flags.sql_listen_address {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("listen on {addr}: {e}"))?;
            info!(address = %addr, "serving SQL on the PostgreSQL wire protocol");
            let settings = promflow_sql::Settings {
                lookback_ms: millis(flags.lookback_delta),
                max_samples: flags.query_max_samples,
                timeout: flags.query_timeout,
                canceled: None,
            };
            // in a cluster, every node's series, as over HTTP
            let querier = promflow_http::sql::statement_storage(&state, tokio::runtime::Handle::current());
            let slots = Arc::clone(&state.query_slots);
            let pool = state.query_pool.handle().clone();
            tokio::spawn(promflow_sql::pg::serve(
                listener,
                querier,
                settings,
                slots,
                pool,
                Arc::clone(&state.web),
            ));
        }
        let listeners = Arc::new(promflow_http::Listeners::new(
            Arc::clone(&state.web),
            usize::try_from(flags.web_max_connections).unwrap_or(usize::MAX),
            flags.web_read_timeout,
        ));
        let app = promflow_http::router(state, &route_prefix(flags));
        let mut servers = Vec::new();
        for addr in &flags.listen_address {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("listen on {addr}: {e}"))?;
            info!(address = %addr, "listening");
            let (app, listeners) = (app.clone(), Arc::clone(&listeners));
            let mut stop = quit_rx.clone();
            servers.push(tokio::spawn(async move {
                promflow_http::serve(listener, app, listeners, async move {
                    let _ = stop.wait_for(|q| *q).await;
                })
                .await
            }));
        }
        // scraping starts once the listeners are bound, so that a server scraping itself
        // finds itself there at its first scrape
        self.scrape.apply(config).map_err(|e| format!("applying configuration: {e}"))?;
        self.status.ready.store(true, Ordering::SeqCst);
        info!("server is ready to receive web requests");
        wait_for_signals(reload, quit_rx.clone()).await;
        quit.send_replace(true);
        info!("stopping scrape manager");
        self.scrape.stop();
        info!("stopping rule manager");
        self.rule_manager.stop();
        if let Some(dataflow) = &self.dataflow {
            dataflow.stop();
        }
        info!("stopping notification manager");
        self.notifier.stop();
        // let the loops write their staleness markers
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(push) = &self.push {
            push.stop();
        }
        info!("stopping remote storage");
        let remote = Arc::clone(&self.remote_write);
        let _ = tokio::task::spawn_blocking(move || remote.stop()).await;
        for s in servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        Ok(())
    }
}

/// Opens `global.query_log_file` (or closes the log without one); a file that cannot be
/// opened fails the configuration load, as in Prometheus.
fn open_query_log(log: &QueryLog, config: &Config) -> Result<(), String> {
    let path = config.global.query_log_file.as_deref();
    log.apply(path).map_err(|e| format!("opening the query log {}: {e}", path.unwrap_or_default()))
}

/// `--query.max-concurrency`, at least one.
fn query_concurrency(flags: &cli::Flags) -> usize {
    usize::try_from(flags.query_max_concurrency).unwrap_or(1).max(1)
}

/// Whether `--enable-feature` names `feature`.
fn has_feature(flags: &cli::Flags, feature: &str) -> bool {
    flags.enable_feature.iter().any(|f| f == feature)
}

/// How the configuration is read: `--enable-feature=native-histograms` (jobs scrape native
/// histograms unless their configuration says otherwise, as in Prometheus 3), and
/// `st-storage` or `created-timestamp-zero-ingestion` (jobs offer protobuf first).
fn load_options(flags: &cli::Flags) -> promflow_config::LoadOptions {
    promflow_config::LoadOptions {
        features: features(),
        native_histograms: has_feature(flags, "native-histograms"),
        proto_first: has_feature(flags, "st-storage")
            || has_feature(flags, "created-timestamp-zero-ingestion"),
        ..Default::default()
    }
}

/// What ingestion does with start timestamps: `--enable-feature=st-storage` keeps them with
/// their samples, `created-timestamp-zero-ingestion` stores a zero sample at each; either reads
/// OpenMetrics `_created` lines as start timestamps.
fn start_timestamp_options(flags: &cli::Flags) -> promflow_scrape::StartTimestampOptions {
    let zero_samples = has_feature(flags, "created-timestamp-zero-ingestion");
    promflow_scrape::StartTimestampOptions {
        created_lines: zero_samples || has_feature(flags, "st-storage"),
        zero_samples,
    }
}

/// `--enable-feature=exemplar-storage`.
fn exemplar_storage(flags: &cli::Flags) -> bool {
    has_feature(flags, "exemplar-storage")
}

/// The exemplars storage keeps: `storage.exemplars.max_exemplars` with
/// `--enable-feature=exemplar-storage`, as in Prometheus; none without the flag.
fn max_exemplars(exemplar_storage: bool, config: &Config) -> usize {
    if exemplar_storage {
        usize::try_from(config.storage.exemplars.max_exemplars).unwrap_or(0)
    } else {
        0
    }
}

/// `--enable-feature=promql-delayed-name-removal`.
fn delayed_name_removal(flags: &cli::Flags) -> bool {
    has_feature(flags, "promql-delayed-name-removal")
}

/// `--enable-feature=use-start-timestamps`.
fn use_start_timestamps(flags: &cli::Flags) -> bool {
    has_feature(flags, "use-start-timestamps")
}

/// The live views over the incremental executor, which rules in event mode and
/// subscriptions read. Views remove metric names at once and read no start timestamps, so
/// with delayed name removal or start timestamps in use there are none and every rule runs
/// in batch.
fn start_live_views(flags: &cli::Flags, db: &Arc<Db>) -> Result<Option<Arc<LiveViews>>, String> {
    if delayed_name_removal(flags) || use_start_timestamps(flags) {
        return Ok(None);
    }
    let querier = Arc::clone(db) as Arc<dyn Querier>;
    // views run in tick mode too, for groups that choose `evaluation_mode: event`
    LiveViews::start(
        flags.rules_dataflow_workers,
        millis(flags.lookback_delta),
        |wake| db.subscribe_waking(wake),
        querier,
        true,
    )
    .map(Some)
    .map_err(|e| format!("starting the rule dataflow: {e}"))
}

/// The rule manager: rule expressions compiled from PromQL, evaluated over storage (or read
/// from live views), written back to storage, and alerts sent through the notifier.
fn start_rules(
    flags: &cli::Flags,
    (querier, pushdown): (Arc<dyn Querier>, Option<Arc<dyn promflow_rules::PushdownFor>>),
    writer: promflow_rules::AppenderFn,
    notifier: &Arc<promflow_notifier::Notifier>,
    (views, dataflow): (Option<Arc<LiveViews>>, Option<ClusterDataflow>),
    query_log: &Arc<QueryLog>,
) -> Arc<RuleManager> {
    let sink = Arc::clone(notifier);
    let log = Arc::clone(query_log);
    RuleManager::new(
        querier,
        writer,
        EvalSettings {
            query: QueryOptions {
                lookback_ms: millis(flags.lookback_delta),
                max_samples: flags.query_max_samples,
                delayed_name_removal: delayed_name_removal(flags),
                use_start_timestamps: use_start_timestamps(flags),
                ..QueryOptions::instant(0)
            },
            timeout: flags.query_timeout,
            compile: Some(Arc::new(move |q: &str| {
                promflow_promql::compile(q, &Default::default()).map_err(|e| e.to_string())
            })),
            outage_tolerance_ms: millis(flags.for_outage_tolerance),
            for_grace_period_ms: millis(flags.for_grace_period),
            resend_delay_ms: millis(flags.resend_delay),
            notify: Some(Arc::new(move |alerts: Vec<promflow_rules::Notification>| {
                sink.send(
                    alerts
                        .into_iter()
                        .map(|a| promflow_notifier::Alert {
                            labels: a.labels,
                            annotations: a.annotations,
                            starts_at_ms: a.starts_at_ms,
                            ends_at_ms: a.ends_at_ms,
                            generator_url: a.generator_url,
                        })
                        .collect(),
                )
            })),
            views,
            cluster_views: dataflow.map(|(formation, views)| {
                Arc::new(move |group: &promflow_rules::GroupSpec| views.turn(&formation, group))
                    as promflow_rules::ClusterViewsFn
            }),
            timings: Arc::default(),
            pushdown,
            query_log: Some(Arc::new(move |q: &promflow_rules::LoggedRuleQuery<'_>| {
                if !log.enabled() {
                    return;
                }
                let entry = promflow_http::LoggedQuery {
                    query: q.query,
                    start_ms: q.ts_ms,
                    end_ms: q.ts_ms,
                    step_ms: 0,
                    origin: promflow_http::QueryOrigin::RuleGroup { file: q.file, name: q.group },
                    error: q.error,
                };
                log.log(&entry, promflow_http::QueryTimings { eval: q.duration, ..Default::default() });
            })),
        },
    )
}

/// The server's clock in whole seconds since the epoch.
fn now_seconds() -> i64 {
    promflow_storage::now_ms() / 1000
}

/// `--web.route-prefix`, defaulting to the path of `--web.external-url`, as in Prometheus.
fn route_prefix(flags: &cli::Flags) -> String {
    if !flags.route_prefix.is_empty() {
        return flags.route_prefix.clone();
    }
    let url = flags.external_url.as_str();
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    match after_scheme.find('/') {
        Some(i) => after_scheme[i..].to_string(),
        None => "/".to_string(),
    }
}

/// Waits for SIGTERM, SIGINT or `/-/quit`; SIGHUP reloads the configuration.
async fn wait_for_signals(reload: promflow_http::ReloadFn, mut quit: tokio::sync::watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let f = Arc::clone(&reload);
                let _ = tokio::task::spawn_blocking(move || f()).await;
            }
            _ = term.recv() => { info!("received SIGTERM, exiting gracefully"); return; }
            _ = int.recv() => { info!("received SIGINT, exiting gracefully"); return; }
            _ = quit.wait_for(|q| *q) => { info!("received termination request via web service, exiting gracefully"); return; }
        }
    }
}
