//! Wiring of `rule_files`: read and check them, compile their expressions, and hand the
//! groups to the engine's rule manager.

use std::path::Path;

use promflow_config::rules::{RuleFile, RuleKind};
use promflow_config::Config;
use promflow_engine::rules::{GroupSpec, RecordingRuleSpec};

/// The recording-rule groups of every file `config.rule_files` names, or every problem found
/// (a server refuses the whole configuration then, as Prometheus does). Alerting rules are
/// reported in `warnings` and skipped: they are not evaluated yet.
pub fn load_groups(config: &Config, warnings: &mut Vec<String>) -> Result<Vec<GroupSpec>, String> {
    let mut groups = Vec::new();
    let mut alerts = 0usize;
    for path in promflow_config::rules::expand_rule_files(&config.rule_files) {
        let file = RuleFile::load(&path, &crate::check::rule_checks()).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            format!("loading rules from {}: {}", path.display(), list.join("; "))
        })?;
        for g in file.groups {
            let interval = g.interval.unwrap_or(config.global.evaluation_interval);
            let compile = promflow_promql::CompileOptions {
                default_subquery_step: config.global.evaluation_interval,
                ..Default::default()
            };
            let mut rules = Vec::new();
            for r in &g.rules {
                let RuleKind::Record(name) = &r.kind else {
                    alerts += 1;
                    continue;
                };
                let plan = promflow_promql::compile(&r.expr, &compile)
                    .map_err(|e| format!("{}: rule {name:?}: {e}", path.display()))?;
                let query = promflow_promql::format_query(&r.expr).unwrap_or_else(|_| r.expr.clone());
                let labels = r.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                rules.push(RecordingRuleSpec { name: name.clone(), query, plan, labels });
            }
            groups.push(GroupSpec {
                name: g.name,
                file: display(&path),
                interval_ms: (interval.as_millis() as i64).max(1),
                query_offset_ms: g.query_offset.unwrap_or(config.global.rule_query_offset).as_millis() as i64,
                limit: g.limit,
                rules,
            });
        }
    }
    if alerts > 0 {
        warnings.push(format!(
            "rule_files: {alerts} alerting rule(s) are not evaluated yet; recording rules are"
        ));
    }
    Ok(groups)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
