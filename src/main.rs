//! The `promflow` binary: parses Prometheus's flags and runs the server (`server.rs`, which
//! wires storage, scraping, the engine and the HTTP server together) or a subcommand
//! (`tsdb`, `check`, `test rules`, `subscribe`).

mod allocator;
mod check;
mod cli;
mod cluster;
mod cluster_views;
mod dataflow_tls;
mod logging;
mod rules;
mod server;
mod subscribe;
mod tsdb;
mod unittest;

use tracing::{error, warn};

/// `--enable-feature` values promflow acts on. The PromQL language features are always on in
/// promflow (docs/promql-compat.md), so their flags are accepted silently; delayed name removal
/// changes results, so it stays opt-in as in Prometheus; `native-histograms` turns native
/// histogram scraping on for every job that does not say otherwise.
const HONOURED_FEATURES: &[&str] = &[
    "promql-delayed-name-removal",
    "promql-experimental-functions",
    "promql-duration-expr",
    "promql-extended-range-selectors",
    "promql-binop-fill-modifiers",
    "native-histograms",
    "otlp-native-delta-ingestion",
    "otlp-deltatocumulative",
    "exemplar-storage",
    "use-start-timestamps",
    "st-storage",
    "created-timestamp-zero-ingestion",
];

fn main() {
    let mut args = std::env::args_os().skip(1);
    let first = std::env::args_os().nth(1);
    if first.as_deref().is_some_and(|a| a == "--version") {
        print!("{}", cli::version_text());
        return;
    }
    if first.as_deref().is_some_and(|a| a == "help") {
        let _ = <cli::Flags as clap::CommandFactory>::command().print_help();
        return;
    }
    match args.next() {
        Some(a) if a == "tsdb" => std::process::exit(tsdb::main(args.collect())),
        Some(a) if a == "check" => std::process::exit(check::main(args.collect())),
        Some(a) if a == "subscribe" => std::process::exit(subscribe::main(args.collect())),
        Some(a) if a == "test" => {
            if args.next().is_some_and(|a| a == "rules") {
                let files: Vec<_> = args.collect();
                if files.iter().any(|a| a == "--help" || a == "-h") {
                    println!("usage: promflow test rules <test-rule-file>...\n\nRuns rule unit tests, as `promtool test rules` does.");
                    return;
                }
                std::process::exit(unittest::main(files));
            }
            eprintln!("usage: promflow test rules <test-rule-file>...");
            std::process::exit(1);
        }
        _ => {}
    }
    let (mut flags, matches) = cli::parse();
    flags.external_url = cli::external_url(&flags);
    logging::init(&flags.log_level, &flags.log_format);
    logging::quiet_connection_panics();
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
    if let Err(e) = server::run(flags, &matches) {
        error!("{e}");
        std::process::exit(1);
    }
}
