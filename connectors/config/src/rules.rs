//! Rule files (`rule_files` in `prometheus.yml`), read the way Prometheus's `rulefmt` reads
//! them: groups of recording and alerting rules, unknown fields rejected, and every check
//! `promtool check rules` makes on a rule's structure.
//!
//! Three checks need more than this crate knows and are left to the caller, which passes them
//! in as functions: parsing `expr` as PromQL, compiling `sql` (promflow's extension: a rule's
//! expression in SQL, `docs/sql.md`) as a standing query, and parsing label and annotation
//! templates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::relabel::is_legacy_label_name;
use crate::Error;

/// A rule file: its groups in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleFile {
    /// The groups.
    pub groups: Vec<RuleGroup>,
}

/// A group: rules evaluated together, in order, at one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleGroup {
    /// `name`, unique within the file.
    pub name: String,
    /// `interval`; `None` means the global `evaluation_interval`.
    pub interval: Option<Duration>,
    /// `query_offset`; `None` means the global `rule_query_offset`.
    pub query_offset: Option<Duration>,
    /// `limit`: most series an alerting rule may produce and a recording rule may write
    /// (0: no limit).
    pub limit: u64,
    /// `evaluation_mode` (promflow's extension, not portable to Prometheus); `None` means the
    /// server's `--rules.evaluation-mode`.
    pub evaluation_mode: Option<EvaluationMode>,
    /// The rules, in evaluation order.
    pub rules: Vec<Rule>,
}

/// How a group's rules are kept current (promflow's extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvaluationMode {
    /// Maintained as dataflow views; alerts move when their data does.
    Event,
    /// Evaluated from scratch at each evaluation, as Prometheus does.
    Tick,
}

impl EvaluationMode {
    /// `event` or `tick`.
    pub fn parse(s: &str) -> Option<EvaluationMode> {
        match s {
            "event" => Some(EvaluationMode::Event),
            "tick" => Some(EvaluationMode::Tick),
            _ => None,
        }
    }
}

/// What a rule produces.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// `record: <metric name>`.
    Record(String),
    /// `alert: <name>`, with `for` and `keep_firing_for`.
    Alert {
        /// The alert's name.
        name: String,
        /// `for`: how long the condition must hold before the alert fires.
        for_: Duration,
        /// `keep_firing_for`: how long the alert keeps firing once the condition is gone.
        keep_firing_for: Duration,
    },
}

/// The language of a rule's expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExprLang {
    /// `expr:`, PromQL.
    PromQL,
    /// `sql:`, a standing SQL query (promflow's extension, not portable to Prometheus).
    Sql,
}

/// One rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Recording or alerting.
    pub kind: RuleKind,
    /// The expression, as written (`expr:` or `sql:`).
    pub expr: String,
    /// Which of the two it is.
    pub lang: ExprLang,
    /// Labels added to (or replacing those of) every output series; templates for alerts.
    pub labels: BTreeMap<String, String>,
    /// Annotations of an alert (templates).
    pub annotations: BTreeMap<String, String>,
    /// 1-based line of the rule in its file.
    pub line: usize,
}

impl Rule {
    /// The `record` or `alert` name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Record(n) => n,
            RuleKind::Alert { name, .. } => name,
        }
    }
}

/// The checks of a rule that need the query language and the template language.
pub struct RuleChecks<'a> {
    /// Parses a PromQL expression; the error is shown after "could not parse expression: ".
    pub parse_expr: &'a dyn Fn(&str) -> Result<(), String>,
    /// Compiles a rule's `sql:` as a standing query; the error is shown after "could not
    /// compile SQL: ".
    pub parse_sql: &'a dyn Fn(&str) -> Result<(), String>,
    /// Parses a label or annotation template of an alerting rule: (template name, text).
    pub parse_template: &'a dyn Fn(&str, &str) -> Result<(), String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawFile {
    #[serde(deserialize_with = "crate::yaml::nullable")]
    groups: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawGroup {
    #[serde(deserialize_with = "crate::yaml::nullable")]
    name: String,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    interval: Option<String>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    query_offset: Option<String>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    limit: u64,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    evaluation_mode: Option<String>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawRule {
    #[serde(deserialize_with = "crate::yaml::nullable")]
    record: String,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    alert: String,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    expr: String,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    sql: String,
    #[serde(rename = "for", deserialize_with = "crate::yaml::nullable")]
    for_: Option<String>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    keep_firing_for: Option<String>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    annotations: BTreeMap<String, String>,
}

impl RuleFile {
    /// Reads and checks a rule file. Every problem found is returned, as promtool lists them
    /// all; a file that cannot be read or is not valid YAML gives one error.
    pub fn load(path: &Path, checks: &RuleChecks<'_>) -> Result<RuleFile, Vec<Error>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![Error::config(&path.display().to_string(), None, None, e.to_string())])?;
        RuleFile::parse(&text, &path.display().to_string(), checks)
    }

    /// Parses and checks the text of a rule file named `file`.
    pub fn parse(text: &str, file: &str, checks: &RuleChecks<'_>) -> Result<RuleFile, Vec<Error>> {
        let raw: RawFile = crate::config::parse_yaml(text, file).map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        let mut names = BTreeSet::new();
        let mut out = RuleFile::default();
        for g in raw.groups {
            let line = g.referenced.line() as usize;
            let g = g.value;
            let at = |msg: String| Error::config(file, Some(line), None, msg);
            if g.name.is_empty() {
                errors.push(at("Groupname must not be empty".into()));
            } else if !names.insert(g.name.clone()) {
                errors.push(at(format!("groupname: \"{}\" is repeated in the same file", g.name)));
            }
            let duration = |field: &str, v: &Option<String>, errors: &mut Vec<Error>| {
                v.as_deref().and_then(|s| match crate::parse_duration(s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        errors.push(at(format!("group \"{}\": {field}: {e}", g.name)));
                        None
                    }
                })
            };
            let mut group = RuleGroup {
                name: g.name.clone(),
                interval: duration("interval", &g.interval, &mut errors),
                query_offset: duration("query_offset", &g.query_offset, &mut errors),
                limit: g.limit,
                evaluation_mode: g.evaluation_mode.as_deref().and_then(|m| {
                    let mode = EvaluationMode::parse(m);
                    if mode.is_none() {
                        errors.push(at(format!(
                            "group \"{}\": evaluation_mode: must be \"event\" or \"tick\", not {m:?}",
                            g.name
                        )));
                    }
                    mode
                }),
                rules: Vec::new(),
            };
            for (i, r) in g.rules.into_iter().enumerate() {
                let line = r.referenced.line() as usize;
                let r = r.value;
                let shown = if r.alert.is_empty() { r.record.clone() } else { r.alert.clone() };
                let mut fail = |msg: String| {
                    errors.push(Error::config(
                        file,
                        Some(line),
                        None,
                        format!("group \"{}\", rule {}, \"{shown}\": {msg}", g.name, i + 1),
                    ))
                };
                if let Some(rule) = check_rule(r, line, checks, &mut fail) {
                    group.rules.push(rule);
                }
            }
            out.groups.push(group);
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// What Prometheus would refuse in this file: the groups and rules that use promflow's
    /// extensions (`evaluation_mode`, `sql:`).
    pub fn not_portable(&self) -> Vec<String> {
        let mut found = Vec::new();
        for g in &self.groups {
            if g.evaluation_mode.is_some() {
                found.push(format!(
                    "group \"{}\": evaluation_mode is a promflow extension; Prometheus refuses it",
                    g.name
                ));
            }
            for r in g.rules.iter().filter(|r| r.lang == ExprLang::Sql) {
                found.push(format!(
                    "group \"{}\", rule \"{}\": sql is a promflow extension; Prometheus refuses it",
                    g.name,
                    r.name()
                ));
            }
        }
        found
    }

    /// Number of rules in all groups.
    pub fn num_rules(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }
}

/// `rulefmt.Rule.Validate` and the template checks; reports through `fail` and returns the
/// rule when nothing failed.
fn check_rule(
    r: RawRule,
    line: usize,
    checks: &RuleChecks<'_>,
    fail: &mut dyn FnMut(String),
) -> Option<Rule> {
    let mut ok = true;
    let mut bad = |msg: String| {
        ok = false;
        fail(msg)
    };
    match (r.record.is_empty(), r.alert.is_empty()) {
        (false, false) => bad("only one of 'record' and 'alert' must be set".into()),
        (true, true) => bad("one of 'record' or 'alert' must be set".into()),
        _ => {}
    }
    let (expr, lang) = match (r.expr.is_empty(), r.sql.is_empty()) {
        (false, false) => {
            bad("only one of 'expr' and 'sql' must be set".into());
            (r.expr, ExprLang::PromQL)
        }
        (true, true) => {
            bad("field 'expr' must be set in rule".into());
            (r.expr, ExprLang::PromQL)
        }
        (false, true) => {
            if let Err(e) = (checks.parse_expr)(&r.expr) {
                bad(format!("could not parse expression: {e}"));
            }
            (r.expr, ExprLang::PromQL)
        }
        (true, false) => {
            if let Err(e) = (checks.parse_sql)(&r.sql) {
                bad(format!("could not compile SQL: {e}"));
            }
            (r.sql, ExprLang::Sql)
        }
    };
    let mut duration = |field: &str, v: &Option<String>| match v.as_deref().map(crate::parse_duration) {
        None => Duration::ZERO,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            bad(format!("{field}: {e}"));
            Duration::ZERO
        }
    };
    let for_ = duration("for", &r.for_);
    let keep_firing_for = duration("keep_firing_for", &r.keep_firing_for);
    if !r.record.is_empty() {
        if !r.annotations.is_empty() {
            bad("invalid field 'annotations' in recording rule".into());
        }
        if !for_.is_zero() {
            bad("invalid field 'for' in recording rule".into());
        }
        if !keep_firing_for.is_zero() {
            bad("invalid field 'keep_firing_for' in recording rule".into());
        }
        if !is_valid_metric_name(&r.record) {
            bad(format!("invalid recording rule name: {}", r.record));
        }
    }
    for name in r.labels.keys() {
        if !is_legacy_label_name(name) || name == "__name__" {
            bad(format!("invalid label name: {name}"));
        }
    }
    for name in r.annotations.keys() {
        if !is_legacy_label_name(name) {
            bad(format!("invalid annotation name: {name}"));
        }
    }
    if !r.alert.is_empty() {
        for (what, map) in [("label", &r.labels), ("annotation", &r.annotations)] {
            for (name, text) in map {
                if let Err(e) = (checks.parse_template)(&format!("__alert_{}", r.alert), text) {
                    bad(format!("{what} {name:?}: template: {e}"));
                }
            }
        }
    }
    if !ok {
        return None;
    }
    let kind = if r.record.is_empty() {
        RuleKind::Alert { name: r.alert, for_, keep_firing_for }
    } else {
        RuleKind::Record(r.record)
    };
    Some(Rule { kind, expr, lang, labels: r.labels, annotations: r.annotations, line })
}

/// The files `rule_files` globs name (a `*` or `?` is allowed in the last path element
/// only), each glob's matches sorted.
pub fn expand_rule_files(globs: &[String]) -> Vec<PathBuf> {
    globs.iter().flat_map(|g| crate::expand_glob(g)).map(PathBuf::from).collect()
}

/// `model.IsValidMetricName` under the legacy scheme: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str, _: &str) -> Result<(), String> {
        Ok(())
    }

    fn parse(text: &str) -> Result<RuleFile, Vec<String>> {
        let checks = RuleChecks {
            parse_expr: &|e: &str| if e.contains("((") { Err("unclosed".into()) } else { Ok(()) },
            parse_sql: &|e: &str| if e.contains("SELECT") { Ok(()) } else { Err("not a SELECT".into()) },
            parse_template: &any,
        };
        RuleFile::parse(text, "r.yml", &checks).map_err(|v| v.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn reads_groups_and_rules() {
        let f = parse(
            "groups:\n- name: g\n  interval: 30s\n  limit: 5\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    labels: {team: a}\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    annotations:\n      summary: '{{ $labels.instance }} down'\n",
        )
        .unwrap();
        assert_eq!(f.num_rules(), 2);
        let g = &f.groups[0];
        assert_eq!((g.interval, g.limit), (Some(Duration::from_secs(30)), 5));
        assert_eq!(g.rules[0].kind, RuleKind::Record("job:up:sum".into()));
        assert_eq!(g.rules[0].line, 6);
        assert!(
            matches!(&g.rules[1].kind, RuleKind::Alert { name, for_, .. } if name == "Down" && for_.as_secs() == 300)
        );
        assert_eq!(parse("").unwrap().num_rules(), 0);
    }

    #[test]
    fn reports_every_structural_problem() {
        let errs = parse(
            "groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: x\n  - expr: y\n  - record: 'bad name'\n    expr: ((x\n    for: 1m\n    annotations: {a: b}\n  - alert: A\n    expr: x\n    labels: {__name__: x, 'b-c': d}\n- name: g\n  rules: []\n- rules: []\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "only one of 'record' and 'alert' must be set",
            "one of 'record' or 'alert' must be set",
            "could not parse expression: unclosed",
            "invalid field 'for' in recording rule",
            "invalid field 'annotations' in recording rule",
            "invalid recording rule name: bad name",
            "invalid label name: __name__",
            "invalid label name: b-c",
            "groupname: \"g\" is repeated in the same file",
            "Groupname must not be empty",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert!(all.starts_with("r.yml:4:"), "{all}");
        let unknown =
            parse("groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n    lables: {}\n").unwrap_err();
        assert!(unknown[0].contains("lables"), "{unknown:?}");
    }

    #[test]
    fn a_rule_in_sql_is_read_checked_and_flagged_as_not_portable() {
        let f = parse(
            "groups:\n- name: g\n  rules:\n  - record: job:load:max\n    sql: SELECT job, max(value) FROM load WHERE ts > now() - INTERVAL '5 minutes' GROUP BY job\n  - record: b\n    expr: up\n",
        )
        .unwrap();
        let r = &f.groups[0].rules[0];
        assert_eq!(r.lang, ExprLang::Sql);
        assert!(r.expr.starts_with("SELECT job"));
        assert_eq!(f.groups[0].rules[1].lang, ExprLang::PromQL);
        assert_eq!(
            f.not_portable(),
            vec!["group \"g\", rule \"job:load:max\": sql is a promflow extension; Prometheus refuses it"]
        );
        let errs = parse(
            "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n    sql: SELECT 1\n  - record: b\n    sql: DELETE FROM x\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(errs.contains("only one of 'expr' and 'sql' must be set"), "{errs}");
        assert!(errs.contains("could not compile SQL: not a SELECT"), "{errs}");
    }
}
