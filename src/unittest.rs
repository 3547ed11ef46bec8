//! `promflow test rules <test file>...`: promtool's rule unit tests, with its file format,
//! semantics, output and exit codes.
//!
//! Each test group loads its `input_series` (series notation, one sample per `interval`)
//! into a fresh storage, then evaluates every rule group at every `evaluation_interval` from
//! time 0 to the last `eval_time` (in `group_eval_order` when given), with the same rule
//! engine the server runs. After the evaluation at `t`, the `alert_rule_test`s whose
//! `eval_time` falls in `[t, t + evaluation_interval)` compare the rule's firing alerts
//! (labels and annotations) with `exp_alerts`; at the end every `promql_expr_test` runs its
//! expression at its `eval_time` and compares the samples exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use promflow_plan::{QueryOptions, QueryResult};
use promflow_promql::notation::{expand, series_desc, Slot};
use promflow_rules::{AlertState, EvalSettings, Group, GroupSpec, RuleSpec};
use promflow_storage::gofmt::{format_duration_ms, format_e};
use promflow_storage::{stale_nan, Db, DbOptions, Labels};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    labels: String,
    value: f64,
}

/// Runs `promflow test rules <files>` (`args` after `rules`); returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    if args.is_empty() {
        eprintln!("usage: promflow test rules <test-rule-file>...");
        return 1;
    }
    let mut failed = false;
    for f in args {
        let path = PathBuf::from(f);
        println!("Unit Testing:  {}", path.display());
        match run_file(&path) {
            Ok(()) => println!("  SUCCESS"),
            Err(errors) => {
                failed = true;
                eprintln!("  FAILED:");
                // promtool writes a blank line to stdout after each error
                for e in errors {
                    eprintln!("{e}");
                    println!();
                }
            }
        }
        println!();
    }
    i32::from(failed)
}

fn duration(s: &str) -> Result<Duration, String> {
    promflow_config::parse_duration(s).map_err(|e| e.to_string())
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

fn run_file(path: &Path) -> Result<(), Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("  {e}")])?;
    let file: TestFile = serde_saphyr::from_str(&text).map_err(|e| vec![format!("  {e}")])?;
    let eval_interval = file
        .evaluation_interval
        .as_deref()
        .map(duration)
        .transpose()
        .map_err(|e| vec![e])?
        .unwrap_or(Duration::from_secs(60));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let rule_files: Vec<PathBuf> = file
        .rule_files
        .iter()
        .flat_map(|f| promflow_config::expand_glob(&dir.join(f).display().to_string()))
        .map(PathBuf::from)
        // as promtool: a rule file that does not exist is no match of its glob, not an error
        .filter(|p| p.exists())
        .collect();
    let mut errors = Vec::new();
    for tg in &file.tests {
        if let Err(mut e) = run_group(tg, &rule_files, eval_interval, &file.group_eval_order) {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn run_group(
    tg: &TestGroup,
    rule_files: &[PathBuf],
    eval_interval: Duration,
    order: &[String],
) -> Result<(), Vec<String>> {
    let interval =
        tg.interval.as_deref().map(duration).transpose().map_err(|e| vec![e])?.unwrap_or(eval_interval);
    let tmp = tempfile::tempdir().map_err(|e| vec![format!("  temporary storage: {e}")])?;
    let db = Db::open(
        tmp.path(),
        DbOptions { block_duration: i64::MAX, compaction_interval: None, ..Default::default() },
    )
    .map_err(|e| vec![format!("  storage: {e}")])?;
    load_series(&db, &tg.input_series, ms(interval))?;
    let settings = crate::rules::RuleSettings {
        // promtool's semantics
        event_mode: false,
        evaluation_interval: eval_interval,
        query_offset: Duration::ZERO,
        external_labels: tg.external_labels.clone(),
        external_url: tg.external_url.clone(),
    };
    let mut specs: Vec<GroupSpec> =
        crate::rules::load_files(rule_files, &settings).map_err(|e| vec![format!("  {e}")])?;
    if !order.is_empty() {
        specs.sort_by_key(|g| order.iter().position(|n| *n == g.name).unwrap_or(usize::MAX));
    }
    let mut groups: Vec<Group> = specs.into_iter().map(|s| Group::new(s, true)).collect();
    // promtool's semantics: every rule evaluated from scratch at each tick (no views)
    let eval = EvalSettings {
        compile: Some(Arc::new(|q: &str| {
            promflow_promql::compile(q, &Default::default()).map_err(|e| e.to_string())
        })),
        ..EvalSettings::default()
    };
    let parse_time = |s: &str| duration(s).map(ms).map_err(|e| vec![format!("  {e}")]);
    let mut alert_tests: Vec<(i64, &AlertTest)> = tg
        .alert_rule_test
        .iter()
        .map(|t| parse_time(&t.eval_time).map(|at| (at, t)))
        .collect::<Result<_, _>>()?;
    alert_tests.sort_by_key(|(t, _)| *t);
    let expr_times: Vec<i64> =
        tg.promql_expr_test.iter().map(|t| parse_time(&t.eval_time)).collect::<Result<_, _>>()?;
    let max_t = alert_tests.iter().map(|(t, _)| *t).chain(expr_times.iter().copied()).max().unwrap_or(0);
    let step = ms(eval_interval).max(1);
    let writer = Arc::clone(&db);
    let appender = move || writer.appender();
    let mut errors = Vec::new();
    let mut next_alert_test = 0;
    let mut ts = 0i64;
    while ts <= max_t {
        for g in groups.iter_mut() {
            g.evaluate(ts, &*db, &appender, &eval);
            for r in &g.status().rules {
                if let Some(e) = &r.last_error {
                    errors.push(format!(
                        "    rule: {}, time: {}, err: {e}",
                        r.spec.name(),
                        format_duration_ms(ts)
                    ));
                }
            }
        }
        while next_alert_test < alert_tests.len() && alert_tests[next_alert_test].0 < ts + step {
            let (at, test) = alert_tests[next_alert_test];
            next_alert_test += 1;
            if at < ts {
                continue;
            }
            if let Some(e) = check_alerts(&groups, test, at) {
                errors.push(e);
            }
        }
        ts += step;
    }
    for (test, at) in tg.promql_expr_test.iter().zip(&expr_times) {
        if let Some(e) = check_expr(&db, test, *at, &eval) {
            errors.push(e);
        }
    }
    if !tg.name.is_empty() && !errors.is_empty() {
        errors.insert(0, format!("    name: {},", tg.name));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn load_series(db: &Arc<Db>, series: &[InputSeries], interval_ms: i64) -> Result<(), Vec<String>> {
    let mut app = db.appender();
    for s in series {
        let (labels, _) =
            series_desc(&s.series).ok_or_else(|| vec![format!("  bad input series {:?}", s.series)])?;
        let slots =
            expand(&s.values).ok_or_else(|| vec![format!("  bad values {:?} of {}", s.values, s.series)])?;
        for (i, slot) in slots.iter().enumerate() {
            let t = i as i64 * interval_ms;
            let appended = match slot {
                Slot::Value(v) => app.append(&labels, t, *v),
                Slot::Stale => app.append(&labels, t, stale_nan()),
                Slot::Histogram(h) => app.append_histogram(&labels, t, (**h).clone()),
                Slot::Empty => continue,
            };
            appended.map_err(|e| vec![format!("  {}: {e}", s.series)])?;
        }
    }
    app.commit().map(drop).map_err(|e| vec![format!("  {e}")])
}

type AlertKey = (Labels, BTreeMap<String, String>);

fn check_alerts(groups: &[Group], test: &AlertTest, at: i64) -> Option<String> {
    let mut got: Vec<AlertKey> = Vec::new();
    for g in groups {
        for r in &g.status().rules {
            if let RuleSpec::Alert(a) = &r.spec {
                if a.name == test.alertname {
                    got.extend(
                        r.alerts
                            .iter()
                            .filter(|x| x.state == AlertState::Firing)
                            .map(|x| (x.labels.clone(), x.annotations.clone())),
                    );
                }
            }
        }
    }
    let mut exp: Vec<AlertKey> = test
        .exp_alerts
        .iter()
        .map(|e| {
            let mut l = Labels::from_pairs(e.exp_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            l.set("alertname", &test.alertname);
            (l, e.exp_annotations.clone())
        })
        .collect();
    got.sort();
    exp.sort();
    if got == exp {
        return None;
    }
    // promtool's layout: `[]` for no alerts, else one numbered block per alert
    let show = |v: &[AlertKey]| {
        if v.is_empty() {
            return "[]".to_string();
        }
        let alerts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, (l, a))| {
                let ann: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!(
                    "            {i}:\n              Labels:{l}\n              Annotations:{{{}}}",
                    ann.join(", ")
                )
            })
            .collect();
        format!("[\n{}\n            ]", alerts.join("\n"))
    };
    Some(format!(
        "    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
        test.alertname,
        eval_time(at),
        show(&exp),
        show(&got)
    ))
}

/// A test's `eval_time` as promtool prints it: Prometheus's duration notation (`1m`, `1h30m`).
fn eval_time(ms: i64) -> String {
    promflow_config::format_duration(std::time::Duration::from_millis(ms.max(0) as u64))
}

fn check_expr(db: &Arc<Db>, test: &ExprTest, at: i64, eval: &EvalSettings) -> Option<String> {
    let fail = |what: String| Some(format!("    expr: {:?}, time: {}, {what}", test.expr, eval_time(at)));
    let plan = match promflow_promql::compile(&test.expr, &Default::default()) {
        Ok(p) => p,
        Err(e) => return fail(format!("err: {e}")),
    };
    let opts = QueryOptions { start: at, end: at, ..eval.query.clone() };
    let got: Vec<(Labels, f64)> = match promflow_batch::evaluate(&plan, &**db, &opts).map(|e| e.result) {
        Ok(QueryResult::Vector(v)) => v.into_iter().map(|(l, _, v)| (l, v)).collect(),
        Ok(QueryResult::Scalar(_, v)) => vec![(Labels::new(), v)],
        Ok(_) => return fail("err: expression did not evaluate to a vector or scalar".into()),
        Err(e) => return fail(format!("err: {e}")),
    };
    let mut exp = Vec::new();
    for s in &test.exp_samples {
        match series_desc(&s.labels) {
            Some((l, _)) => exp.push((l, s.value)),
            None => return fail(format!("err: bad labels {:?}", s.labels)),
        }
    }
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    exp.sort_by(|a, b| a.0.cmp(&b.0));
    let same = got.len() == exp.len() && got.iter().zip(&exp).all(|(g, e)| g.0 == e.0 && g.1 == e.1);
    if same {
        return None;
    }
    // promtool's layout: `labels value` with the value in Go's %E, joined by ", "; `nil` for none
    let show = |v: &[(Labels, f64)]| {
        let items: Vec<String> = v.iter().map(|(l, x)| format!("{l} {}", format_e(*x))).collect();
        if items.is_empty() {
            "nil".to_string()
        } else {
            items.join(", ")
        }
    };
    // the same series, each value equal but for its last bits: say so, as it is what a rule
    // test written against Prometheus 2.x meets first
    let last_bits = got.len() == exp.len()
        && got.iter().zip(&exp).all(|(g, e)| g.0 == e.0 && (g.1 == e.1 || close_but_for_last_bits(g.1, e.1)));
    let note = if last_bits {
        "\n        note: the values differ only in their last bits: Prometheus 3's Kahan-compensated \
         sum and avg and its left-open windows can change the last digits of what Prometheus 2.x \
         computed; write the values promflow gives (docs/promql-compat.md)"
    } else {
        ""
    };
    Some(format!(
        "    expr: {:?}, time: {},\n        exp: {}\n        got: {}{note}",
        test.expr,
        eval_time(at),
        show(&exp),
        show(&got)
    ))
}

/// Whether two floats differ only in their last few bits (at most 64 units in the last place).
fn close_but_for_last_bits(a: f64, b: f64) -> bool {
    if !a.is_finite() || !b.is_finite() || a.signum() != b.signum() {
        return false;
    }
    a.to_bits().abs_diff(b.to_bits()) <= 64
}
