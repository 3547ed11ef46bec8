//! `promflow check config|rules …`: promtool's checks, with its arguments, output and exit
//! codes (0 valid, 1 invalid, 3 lint problems under `--lint-fatal`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use promflow_config::rules::{RuleChecks, RuleFile, RuleKind};
use promflow_config::Config;

#[derive(Parser, Debug)]
#[command(name = "promflow check", about = "Check the resources for validity.")]
struct CheckArgs {
    #[command(subcommand)]
    command: CheckCommand,
}

#[derive(Subcommand, Debug)]
enum CheckCommand {
    /// Check if the config files are valid or not.
    Config {
        /// Only check the config file syntax, ignoring file and content validation (rule
        /// files are not read).
        #[arg(long = "syntax-only")]
        syntax_only: bool,
        #[command(flatten)]
        lint: LintArgs,
        /// The config files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check if the rule files are valid or not.
    Rules {
        #[command(flatten)]
        lint: LintArgs,
        /// The rule files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// promtool's lint options, shared by `check config` and `check rules`.
#[derive(clap::Args, Debug)]
struct LintArgs {
    /// Linting checks to apply to the rule files.
    #[arg(long, value_enum, default_value = "duplicate-rules")]
    lint: Lint,
    /// Make lint errors exit with exit code 3.
    #[arg(long = "lint-fatal")]
    lint_fatal: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Lint {
    All,
    DuplicateRules,
    None,
}

const SUCCESS: i32 = 0;
const FAILURE: i32 = 1;
const LINT_FAILURE: i32 = 3;

/// Runs `promflow check <args>` (`args` starts after `check`) and returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let parsed = match CheckArgs::try_parse_from(std::iter::once("promflow check".into()).chain(args)) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { FAILURE } else { SUCCESS };
        }
    };
    match parsed.command {
        CheckCommand::Rules { lint: LintArgs { lint, lint_fatal }, files } => {
            let mut code = SUCCESS;
            for f in &files {
                code = code.max(check_rule_file(f, lint, lint_fatal));
            }
            code
        }
        CheckCommand::Config { syntax_only, lint: LintArgs { lint, lint_fatal }, files } => {
            let mut code = SUCCESS;
            for f in &files {
                code = code.max(check_config_file(f, syntax_only, lint, lint_fatal));
            }
            code
        }
    }
}

fn check_config_file(path: &Path, syntax_only: bool, lint: Lint, lint_fatal: bool) -> i32 {
    println!("Checking {}", path.display());
    let opts = promflow_config::LoadOptions { features: crate::server::features(), ..Default::default() };
    let loaded = match Config::load_file_with(path, &opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("  FAILED: {e}");
            println!();
            return FAILURE;
        }
    };
    // what the server would accept with a warning, and file SD files that are not there, as
    // promtool reports them
    for w in &loaded.warnings {
        println!("  WARNING: {w}");
    }
    for sc in &loaded.config.scrape_configs {
        for file in sc.file_sd_configs.iter().flat_map(|f| &f.files) {
            if promflow_config::glob(file).map_or(true, |found| found.is_empty()) {
                println!(
                    "  WARNING: file {file:?} for file_sd in scrape job {:?} does not exist",
                    sc.job_name
                );
            }
        }
    }
    let rule_files = if syntax_only {
        Vec::new()
    } else {
        promflow_config::rules::expand_rule_files(&loaded.config.rule_files)
    };
    if !syntax_only {
        println!("  SUCCESS: {} rule files found", rule_files.len());
    }
    println!(" SUCCESS: {} is valid prometheus config file syntax", path.display());
    println!();
    let mut code = SUCCESS;
    for f in &rule_files {
        code = code.max(check_rule_file(f, lint, lint_fatal));
    }
    code
}

/// The checks promtool makes on `expr`, labels and annotations.
pub fn rule_checks() -> RuleChecks<'static> {
    RuleChecks {
        parse_expr: &|e: &str| promflow_promql::parse(e).map(drop).map_err(|e| e.to_string()),
        parse_sql: &|e: &str| promflow_sql::standing(e).map(drop).map_err(|e| e.to_string()),
        parse_template: &|name: &str, text: &str| {
            promflow_template::check(name, text).map_err(|e| e.to_string())
        },
    }
}

fn check_rule_file(path: &Path, lint: Lint, lint_fatal: bool) -> i32 {
    println!("Checking {}", path.display());
    let file = match RuleFile::load(path, &rule_checks()) {
        Ok(f) => f,
        Err(errors) => {
            eprintln!("  FAILED:");
            for e in errors {
                eprintln!("{e}");
            }
            println!();
            return FAILURE;
        }
    };
    if lint != Lint::None {
        let dups = duplicate_recording_rules(&file);
        if !dups.is_empty() {
            eprintln!("  FAILED:");
            eprintln!("lint error {} duplicate rule(s) found.", dups.len());
            for (name, labels) in &dups {
                eprintln!("Metric: {name}\nLabel(s):");
                for (k, v) in labels {
                    eprintln!("\t{k}: {v}");
                }
            }
            eprintln!("Might cause inconsistency while recording expressions");
            println!();
            return if lint_fatal { LINT_FAILURE } else { SUCCESS };
        }
    }
    // promflow runs these files, so they pass; the warning says Prometheus would not
    for w in file.not_portable() {
        eprintln!("  WARNING: not portable to Prometheus: {w}");
    }
    println!("  SUCCESS: {} rules found", file.num_rules());
    println!();
    SUCCESS
}

/// Recording rules that write the same metric with the same labels as an earlier one (in
/// any group of the file): promtool's `duplicate-rules` lint.
fn duplicate_recording_rules(file: &RuleFile) -> Vec<(String, BTreeMap<String, String>)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut dups = Vec::new();
    for rule in file.groups.iter().flat_map(|g| &g.rules) {
        if let RuleKind::Record(name) = &rule.kind {
            let key = (name.clone(), rule.labels.clone());
            if !seen.insert(key.clone()) {
                dups.push(key);
            }
        }
    }
    dups
}
