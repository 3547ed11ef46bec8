//! The `promflow` binary: parses Prometheus's flags and wires storage, scraping, the query
//! engine and the HTTP server together. Nothing else lives here.

mod check;
mod cli;
mod logging;
mod rules;
mod subscribe;
mod tsdb;
mod unittest;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use promflow_config::Config;
use promflow_http::{AppState, QuerySettings, ServerStatus};
use promflow_incremental::live::LiveViews;
use promflow_plan::QueryOptions;
use promflow_rules::{EvalSettings, GroupSpec, Manager as RuleManager};
use promflow_scrape::ScrapeManager;
use promflow_storage::{Db, DbOptions};
use tracing::{error, info, warn};

/// The Prometheus version whose API and semantics promflow follows; API clients such as
/// Grafana read it from `/api/v1/status/buildinfo` and need a semver.
const COMPAT_VERSION: &str = "3.5.0";

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Reads the configuration and the rule files it names; rule files' problems fail the load.
fn load_config(
    path: &str,
    external_url: &str,
    event_mode: bool,
) -> Result<(promflow_config::LoadedConfig, Vec<GroupSpec>), String> {
    let discoveries = [
        "static_configs",
        "file_sd_configs",
        "http_sd_configs",
        "dns_sd_configs",
        "consul_sd_configs",
        "kubernetes_sd_configs",
    ];
    let features = promflow_config::Features {
        rules: true,
        alertmanagers: true,
        remote_write: true,
        remote_read: true,
        service_discoveries: discoveries.into_iter().map(String::from).collect(),
        ..Default::default()
    };
    let opts = promflow_config::LoadOptions { features, ..Default::default() };
    let loaded = Config::load_file_with(std::path::Path::new(path), &opts).map_err(|e| e.to_string())?;
    let groups = rules::load_groups(&loaded.config, external_url, event_mode)?;
    Ok((loaded, groups))
}

/// `--enable-feature` values promflow acts on. The PromQL language features are always on in
/// promflow (docs/promql-compat.md), so their flags are accepted silently; delayed name removal
/// changes results, so it stays opt-in as in Prometheus.
const HONOURED_FEATURES: &[&str] = &[
    "promql-delayed-name-removal",
    "promql-experimental-functions",
    "promql-duration-expr",
    "promql-extended-range-selectors",
    "promql-binop-fill-modifiers",
];

fn main() {
    limit_malloc_arenas();
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(a) if a == "tsdb" => std::process::exit(tsdb::main(args.collect())),
        Some(a) if a == "check" => std::process::exit(check::main(args.collect())),
        Some(a) if a == "subscribe" => std::process::exit(subscribe::main(args.collect())),
        Some(a) if a == "test" => {
            if args.next().is_some_and(|a| a == "rules") {
                std::process::exit(unittest::main(args.collect()));
            }
            eprintln!("usage: promflow test rules <test-rule-file>...");
            std::process::exit(1);
        }
        _ => {}
    }
    let (flags, matches) = cli::parse();
    logging::init(&flags.log_level, &flags.log_format);
    for name in cli::unimplemented_set(&matches) {
        warn!(
            flag = name,
            "flag accepted for compatibility with Prometheus but not implemented by promflow yet"
        );
    }
    for feature in &flags.enable_feature {
        if !HONOURED_FEATURES.contains(&feature.as_str()) {
            warn!(feature = %feature, "feature flag accepted but has no effect in promflow yet");
        }
    }
    if let Err(e) = run(flags, &matches) {
        error!("{e}");
        std::process::exit(1);
    }
}

/// Two malloc arenas instead of glibc's eight per core: memory freed by one thread's arena
/// is not reused by the others', and the server's threads (remote-write decoding, the
/// dataflow worker, history reads) each kept their own peak. With rules over a day of
/// history this took peak RSS from 417 to 269 MiB at 10k series (`docs/architecture.md`).
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread
        // exists
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn run(flags: cli::Flags, matches: &clap::ArgMatches) -> Result<(), String> {
    let (loaded, rule_groups) =
        load_config(&flags.config_file, &flags.external_url, flags.rules_evaluation_mode == "event")
            .map_err(|e| format!("Error loading config (--config.file={}): {e}", flags.config_file))?;
    for w in &loaded.warnings {
        warn!(file = %flags.config_file, "{w}");
    }
    // security settings are checked before anything starts: an unusable one stops the server
    let web = Arc::new(
        promflow_config::web::WebGuard::open(
            (!flags.web_config_file.is_empty()).then(|| std::path::Path::new(&flags.web_config_file)),
        )
        .map_err(|e| {
            format!("Error loading web config (--web.config.file={}): {e}", flags.web_config_file)
        })?,
    );
    let cors_origin = match flags.cors_origin.as_str() {
        ".*" => None,
        re => Some(
            promflow_storage::re2::compile_anchored(re)
                .map_err(|e| format!("--web.cors.origin={re}: {e}"))?,
        ),
    };
    info!(path = %flags.tsdb_path, "opening storage");
    let (retention_time, retention_size) = cli::retention(&flags)?;
    let db_options = DbOptions {
        block_duration: millis(flags.min_block_duration).max(1),
        max_block_duration: cli::max_block_duration(&flags, retention_time),
        retention_time,
        retention_size,
        out_of_order_window: millis(loaded.config.storage.tsdb.out_of_order_time_window),
        future_limit: Some(millis(flags.future_limit)).filter(|&l| l > 0),
        ..DbOptions::default()
    };
    let db = Db::open(&PathBuf::from(&flags.tsdb_path), db_options)
        .map_err(|e| format!("opening storage: {e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("promflow")
        // deeply nested queries recurse through parsing, lowering and evaluation
        .thread_stack_size(16 << 20)
        .build()
        .map_err(|e| format!("starting runtime: {e}"))?;

    let scrape = ScrapeManager::new(Arc::clone(&db), runtime.handle().clone());
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
        config_yaml: RwLock::new(loaded.config.to_redacted_yaml()),
        external_labels: RwLock::new(loaded.config.global.external_labels.clone()),
        flags: cli::flag_values(matches),
        reload_ok: AtomicBool::new(true),
        last_reload_seconds: AtomicI64::new(chrono_now()),
        unimplemented_fields: AtomicI64::new(loaded.warnings.len() as i64),
        start_seconds: chrono_now(),
        ready: AtomicBool::new(false),
        storage_retention: if flags.retention_time.is_empty() {
            "15d".into()
        } else {
            flags.retention_time.clone()
        },
    });
    let notifier = promflow_notifier::Notifier::new(runtime.handle());
    notifier.apply(&loaded.config).map_err(|e| format!("applying configuration: {e}"))?;
    let push = flags.enable_pushgateway.then(|| {
        let interval = loaded.config.global.scrape_interval;
        promflow_scrape::push::PushGateway::start(Arc::clone(&db), interval, runtime.handle())
    });
    let remote_write = promflow_remote::RemoteWriter::new(
        Arc::clone(&db),
        runtime.handle().clone(),
        Some(Arc::clone(&scrape)),
    );
    remote_write.apply(&loaded.config).map_err(|e| format!("applying configuration: {e}"))?;
    let remote_read = Arc::new(promflow_remote::reader::RemoteReaders::new());
    remote_read.apply(&loaded.config).map_err(|e| format!("applying configuration: {e}"))?;
    let delayed_name_removal = flags.enable_feature.iter().any(|f| f == "promql-delayed-name-removal");
    // views remove metric names at once; with delayed removal every rule runs in batch. Views
    // run in tick mode too, for groups that choose `evaluation_mode: event`.
    let live_views = if !delayed_name_removal {
        let querier = Arc::clone(&db) as Arc<dyn promflow_storage::Querier>;
        Some(
            LiveViews::start(
                flags.rules_dataflow_workers,
                millis(flags.lookback_delta),
                |wake| db.subscribe_waking(wake),
                querier,
                true,
            )
            .map_err(|e| format!("starting the rule dataflow: {e}"))?,
        )
    } else {
        None
    };
    let rule_manager = {
        let writer = Arc::clone(&db);
        let sink = Arc::clone(&notifier);
        RuleManager::new(
            Arc::clone(&db) as Arc<dyn promflow_storage::Querier>,
            Arc::new(move || writer.appender()),
            EvalSettings {
                query: QueryOptions {
                    lookback_ms: millis(flags.lookback_delta),
                    max_samples: flags.query_max_samples,
                    delayed_name_removal,
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
                views: live_views.clone(),
            },
        )
    };
    rule_manager.update(rule_groups);

    let reload: promflow_http::ReloadFn = {
        let (path, scrape, status, handle) =
            (flags.config_file.clone(), Arc::clone(&scrape), Arc::clone(&status), runtime.handle().clone());
        let db = Arc::clone(&db);
        let rule_manager = Arc::clone(&rule_manager);
        let notifier = Arc::clone(&notifier);
        let remote_write = Arc::clone(&remote_write);
        let remote_read = Arc::clone(&remote_read);
        let push = push.clone();
        let external_url = flags.external_url.clone();
        let event_mode = flags.rules_evaluation_mode == "event";
        Arc::new(move || {
            let _guard = handle.enter();
            let result = load_config(&path, &external_url, event_mode).and_then(|(l, groups)| {
                scrape.apply(&l.config).map_err(|e| e.to_string())?;
                notifier.apply(&l.config).map_err(|e| e.to_string())?;
                remote_write.apply(&l.config).map_err(|e| e.to_string())?;
                remote_read.apply(&l.config).map_err(|e| e.to_string())?;
                if let Some(push) = &push {
                    push.set_interval(l.config.global.scrape_interval);
                }
                rule_manager.update(groups);
                db.set_out_of_order_window(millis(l.config.storage.tsdb.out_of_order_time_window));
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
    };

    let route_prefix = route_prefix(&flags);
    let (quit, quit_rx) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        db: Arc::clone(&db),
        scrape: Arc::clone(&scrape),
        rules: Arc::clone(&rule_manager),
        live: live_views.clone(),
        notifier: Arc::clone(&notifier),
        remote_write: Arc::clone(&remote_write),
        remote_read: Arc::clone(&remote_read),
        query: QuerySettings {
            lookback_delta: flags.lookback_delta,
            timeout: flags.query_timeout,
            max_samples: flags.query_max_samples,
            delayed_name_removal: flags.enable_feature.iter().any(|f| f == "promql-delayed-name-removal"),
            compile: promflow_promql::CompileOptions {
                default_subquery_step: loaded.config.global.evaluation_interval,
                ..Default::default()
            },
        },
        status: Arc::clone(&status),
        reload: Arc::clone(&reload),
        lifecycle_enabled: flags.enable_lifecycle,
        admin_enabled: flags.enable_admin_api,
        remote_write_enabled: flags.enable_remote_write_receiver,
        remote_read_sample_limit: flags.remote_read_sample_limit,
        push: push.clone(),
        quit: quit.clone(),
        http_metrics: Default::default(),
        subscriptions: promflow_http::Subscriptions::new(
            promflow_http::SubscriptionLimits {
                per_connection: flags.subscribe_max_per_connection,
                total: flags.subscribe_max_total,
                samples_per_connection: flags.subscribe_max_samples_per_connection,
                samples_total: flags.subscribe_max_samples_total,
            },
            flags.subscribe_batch_interval,
        ),
        web: Arc::clone(&web),
        read_timeout: flags.web_read_timeout,
        cors_origin,
        query_slots: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(flags.query_max_concurrency).unwrap_or(1).max(1),
        )),
    });
    let listeners = Arc::new(promflow_http::Listeners::new(
        Arc::clone(&web),
        usize::try_from(flags.web_max_connections).unwrap_or(usize::MAX),
        flags.web_read_timeout,
    ));

    let sql_settings = promflow_sql::Settings {
        lookback_ms: millis(flags.lookback_delta),
        max_samples: flags.query_max_samples,
        timeout: flags.query_timeout,
        canceled: None,
    };
    let sql_querier: Arc<dyn promflow_storage::Querier> = db.clone();
    let sql_query_slots = Arc::clone(&state.query_slots);
    runtime.block_on(async move {
        if let Some(addr) = &flags.sql_listen_address {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("listen on {addr}: {e}"))?;
            info!(address = %addr, "serving SQL on the PostgreSQL wire protocol");
            let serve = promflow_sql::pg::serve(
                listener,
                sql_querier,
                sql_settings,
                sql_query_slots,
                Arc::clone(&web),
            );
            tokio::spawn(serve);
        }
        let app = promflow_http::router(state, &route_prefix);
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
        scrape.apply(&loaded.config).map_err(|e| format!("applying configuration: {e}"))?;
        status.ready.store(true, Ordering::SeqCst);
        info!("server is ready to receive web requests");
        wait_for_signals(reload, quit_rx.clone()).await;
        quit.send_replace(true);
        info!("stopping scrape manager");
        scrape.stop();
        info!("stopping rule manager");
        rule_manager.stop();
        info!("stopping notification manager");
        notifier.stop();
        // let the loops write their staleness markers
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(push) = &push {
            push.stop();
        }
        info!("stopping remote storage");
        let remote = Arc::clone(&remote_write);
        let _ = tokio::task::spawn_blocking(move || remote.stop()).await;
        for s in servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        Ok::<(), String>(())
    })?;
    if let Err(e) = db.close() {
        warn!(error = %e, "closing storage");
    }
    info!("see you next time!");
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
