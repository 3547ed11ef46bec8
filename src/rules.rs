//! Wiring of `rule_files`: read and check them, compile their expressions, and hand the
//! groups to the engine's rule manager.

use promflow_config::rules::{EvaluationMode, ExprLang, RuleFile, RuleKind};
use promflow_config::Config;
use promflow_rules::{AlertingRuleSpec, GroupSpec, RecordingRuleSpec, RuleSpec};
use promflow_template::Template;

/// The rule groups of every file `config.rule_files` names, or every problem found (a server
/// refuses the whole configuration then, as Prometheus does). `external_url` is what alert
/// templates see as `$externalURL`.
pub fn load_groups(config: &Config, external_url: &str, event_mode: bool) -> Result<Vec<GroupSpec>, String> {
    let settings = RuleSettings {
        event_mode,
        evaluation_interval: config.global.evaluation_interval,
        query_offset: config.global.rule_query_offset,
        external_labels: config
            .global
            .external_labels
            .iter()
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .collect(),
        external_url: external_url.to_string(),
    };
    // as Prometheus's filepath.Glob: a rule file that does not exist is no match, not an error
    let files: Vec<_> = promflow_config::rules::expand_rule_files(&config.rule_files)
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    load_files(&files, &settings)
}

/// What rule groups take from their surroundings.
pub struct RuleSettings {
    /// `--rules.evaluation-mode=event`: the default of groups without `evaluation_mode`.
    pub event_mode: bool,
    /// The default group interval and subquery step.
    pub evaluation_interval: std::time::Duration,
    /// The default `query_offset`.
    pub query_offset: std::time::Duration,
    /// `$externalLabels`.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// `$externalURL`, and the base of alerts' generator URLs.
    pub external_url: String,
}

/// The rule groups of `paths`, compiled.
pub fn load_files(paths: &[std::path::PathBuf], settings: &RuleSettings) -> Result<Vec<GroupSpec>, String> {
    let mut groups = Vec::new();
    let external_labels = &settings.external_labels;
    let external_url = settings.external_url.as_str();
    for path in paths {
        let file = RuleFile::load(path, &crate::check::rule_checks()).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            format!("loading rules from {}: {}", path.display(), list.join("; "))
        })?;
        for g in file.groups {
            let interval = g.interval.unwrap_or(settings.evaluation_interval);
            let compile = promflow_promql::CompileOptions {
                default_subquery_step: settings.evaluation_interval,
                ..Default::default()
            };
            let mut rules = Vec::new();
            for r in &g.rules {
                let failed = |e: String| format!("{}: rule {:?}: {e}", path.display(), r.name());
                let (plan, query) = match r.lang {
                    ExprLang::PromQL => (
                        promflow_promql::compile(&r.expr, &compile).map_err(|e| failed(e.to_string()))?,
                        promflow_promql::one_line_query(&r.expr).unwrap_or_else(|_| r.expr.clone()),
                    ),
                    // the SQL as written: the rules API shows it as the rule's query
                    ExprLang::Sql => {
                        (promflow_sql::standing(&r.expr).map_err(|e| failed(e.to_string()))?, r.expr.clone())
                    }
                };
                rules.push(match &r.kind {
                    RuleKind::Record(name) => {
                        let labels = r.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        RuleSpec::Record(RecordingRuleSpec { name: name.clone(), query, plan, labels })
                    }
                    RuleKind::Alert { name, for_, keep_firing_for } => {
                        let templates = |m: &std::collections::BTreeMap<String, String>| {
                            m.iter()
                                .map(|(k, v)| {
                                    Template::parse(&format!("__alert_{name}"), v)
                                        .map(|t| (k.clone(), v.clone(), t))
                                        .map_err(|e| format!("{}: alert {name:?}: {e}", path.display()))
                                })
                                .collect::<Result<Vec<_>, String>>()
                        };
                        RuleSpec::Alert(AlertingRuleSpec {
                            name: name.clone(),
                            query,
                            plan,
                            for_ms: for_.as_millis() as i64,
                            keep_firing_for_ms: keep_firing_for.as_millis() as i64,
                            labels: templates(&r.labels)?,
                            annotations: templates(&r.annotations)?,
                            external_labels: external_labels.clone(),
                            external_url: external_url.to_string(),
                        })
                    }
                });
            }
            groups.push(GroupSpec {
                name: g.name,
                file: path.display().to_string(),
                interval_ms: (interval.as_millis() as i64).max(1),
                query_offset_ms: g.query_offset.unwrap_or(settings.query_offset).as_millis() as i64,
                limit: g.limit,
                event_mode: g.evaluation_mode.map_or(settings.event_mode, |m| m == EvaluationMode::Event),
                rules,
            });
        }
    }
    Ok(groups)
}
