//! Rule files: `promflow check rules` and `promflow check config` give the verdicts (exit
//! codes) of Debian's `promtool` 2.42 on the same files.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// (name, rule file text). Only fields Prometheus 2.42 knows.
const CASES: &[(&str, &str)] = &[
    (
        "valid",
        "groups:\n- name: g\n  interval: 30s\n  limit: 10\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    labels: {team: a}\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 1m\n    labels:\n      severity: '{{ if gt $value 1.0 }}page{{ else }}ticket{{ end }}'\n    annotations:\n      summary: '{{ $labels.instance }} down ({{ $value | humanize }})'\n",
    ),
    ("empty file", ""),
    ("empty groups", "groups: []\n"),
    ("record and alert", "groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: x\n"),
    ("neither record nor alert", "groups:\n- name: g\n  rules:\n  - expr: x\n"),
    ("no expr", "groups:\n- name: g\n  rules:\n  - record: a\n"),
    ("bad expr", "groups:\n- name: g\n  rules:\n  - record: a\n    expr: sum((x)\n"),
    ("bad expr function", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: nosuchfunction(x)\n"),
    ("bad record name", "groups:\n- name: g\n  rules:\n  - record: 'a-b'\n    expr: x\n"),
    ("record with for", "groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n    for: 1m\n"),
    (
        "record with keep_firing_for",
        "groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n    keep_firing_for: 1m\n",
    ),
    (
        "record with annotations",
        "groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n    annotations: {s: t}\n",
    ),
    ("bad label name", "groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n    labels: {'a-b': c}\n"),
    ("__name__ label", "groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n    labels: {__name__: c}\n"),
    (
        "bad annotation name",
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    annotations: {'a b': c}\n",
    ),
    ("repeated group", "groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n"),
    ("empty group name", "groups:\n- rules:\n  - record: a\n    expr: x\n"),
    ("unknown rule field", "groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n    lables: {}\n"),
    ("unknown group field", "groups:\n- name: g\n  evaluation_interval: 1m\n  rules: []\n"),
    ("unknown top field", "groups: []\nrules: []\n"),
    ("bad for duration", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    for: 5x\n"),
    ("bad interval", "groups:\n- name: g\n  interval: often\n  rules: []\n"),
    ("not YAML", "groups:\n- name: g\n  rules: [\n"),
    (
        "unclosed template action",
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    annotations: {s: '{{ .Foo '}\n",
    ),
    (
        "template end without block",
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    annotations: {s: 'a {{ end }}'}\n",
    ),
    (
        "template block never closed",
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    labels: {s: '{{ if $value }}a'}\n",
    ),
    (
        "unknown template function",
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    annotations: {s: '{{ humanise $value }}'}\n",
    ),
    (
        "undefined template variable",
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    annotations: {s: '{{ $valeu }}'}\n",
    ),
    (
        "templates Prometheus accepts",
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    annotations: {s: '{{ range query \"up\" }}{{ .Labels.job | toUpper }}{{ end }} {{ $externalLabels.dc }} {{ with $x := 1 }}{{ $x }}{{ end }}'}\n",
    ),
    (
        "duplicate recording rules (lint)",
        "groups:\n- name: g\n  rules:\n  - record: a\n    expr: x\n  - record: a\n    expr: y\n",
    ),
];

fn exit_code(cmd: &mut Command) -> i32 {
    let out = cmd.output().expect("run checker");
    out.status.code().unwrap_or(-1)
}

#[test]
fn check_rules_verdicts_match_promtool() {
    let Some(promtool) = common::peer("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    for (i, (name, text)) in CASES.iter().enumerate() {
        let file = dir.path().join(format!("case{i}.yml"));
        std::fs::write(&file, text).unwrap();
        for extra in [&[][..], &["--lint-fatal"][..]] {
            let theirs = exit_code(Command::new(&promtool).args(["check", "rules"]).args(extra).arg(&file));
            let ours = exit_code(
                Command::new(env!("CARGO_BIN_EXE_promflow")).args(["check", "rules"]).args(extra).arg(&file),
            );
            if theirs != ours {
                mismatches.push(format!("{name} {extra:?}: promtool {theirs}, promflow {ours}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "verdicts differ:\n{}", mismatches.join("\n"));
}

/// `evaluation_mode:` is promflow's extension: `promflow check rules` accepts it with a
/// warning that Prometheus would not (promtool refuses the file); a wrong value fails.
#[test]
fn check_rules_flags_evaluation_mode_as_not_portable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mode.yml");
    let check = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let group = |mode: &str| {
        format!(
            "groups:\n- name: g\n  evaluation_mode: {mode}\n  rules:\n  - record: a\n    expr: vector(1)\n"
        )
    };
    let (code, stderr) = check(&group("tick"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("not portable to Prometheus: group \"g\": evaluation_mode"), "{stderr}");
    let (code, stderr) = check(&group("sometimes"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("evaluation_mode: must be \"event\" or \"tick\""), "{stderr}");
    if let Some(promtool) = common::peer("promtool") {
        std::fs::write(&file, group("tick")).unwrap();
        let status = Command::new(promtool).args(["check", "rules"]).arg(&file).output().unwrap().status;
        assert_eq!(status.code(), Some(1), "promtool accepts what it should not");
    }
}

/// A group's `evaluation_mode` overrides `--rules.evaluation-mode` both ways.
#[test]
fn a_groups_evaluation_mode_overrides_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: ev\n  interval: 1s\n  evaluation_mode: event\n  rules:\n  - record: a\n    expr: sum(up)\n- name: tk\n  interval: 1s\n  rules:\n  - record: b\n    expr: count(up)\n",
    )
    .unwrap();
    let config = "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n";
    for (flag, views) in [("tick", 1), ("event", 2)] {
        let pf = common::start_promflow(dir.path(), config, &[&format!("--rules.evaluation-mode={flag}")]);
        let line = format!("promflow_rule_expressions{{evaluation=\"view\"}} {views}");
        let seen = common::wait_for(std::time::Duration::from_secs(10), || {
            let (_, metrics) = pf.get_text("/metrics");
            metrics.lines().any(|l| l == line).then_some(())
        });
        assert!(seen.is_some(), "--rules.evaluation-mode={flag}: no {line:?}");
    }
}

#[test]
fn check_config_reads_the_rule_files_it_names() {
    let Some(promtool) = common::peer("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("good.rules.yml", CASES[0].1);
    write("bad.rules.yml", CASES[3].1);
    write("ok.yml", "global:\n  evaluation_interval: 30s\nrule_files:\n  - good.rules.yml\n");
    write("glob.yml", "rule_files:\n  - '*.rules.yml'\n");
    write("typo.yml", "global:\n  evaluation_intervall: 30s\n");
    for (cfg, want) in [("ok.yml", 0), ("glob.yml", 1), ("typo.yml", 1)] {
        let path = dir.path().join(cfg);
        let theirs = exit_code(Command::new(&promtool).args(["check", "config"]).arg(&path));
        let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
            .args(["check", "config"])
            .arg(&path)
            .output()
            .unwrap();
        let ours = out.status.code().unwrap_or(-1);
        assert_eq!((theirs, ours), (want, want), "{cfg}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // promtool's output shape: the config line, then each rule file with its rule count
    let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["check", "config"])
        .arg(dir.path().join("ok.yml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  SUCCESS: 1 rule files found"), "{text}");
    assert!(text.contains("valid prometheus config file syntax"), "{text}");
    assert!(text.contains("  SUCCESS: 2 rules found"), "{text}");
    assert!(Path::new(&dir.path().join("ok.yml")).exists());

    // a file SD file that is not there is a warning, the same line as promtool's; so is what
    // the server would only warn about
    write(
        "sd.yml",
        "scrape_configs:\n  - job_name: files\n    file_sd_configs:\n      - files: ['missing-*.json']\n  - job_name: gce\n    gce_sd_configs: [{project: p, zone: z}]\n",
    );
    let check = |bin: &Path| {
        let out =
            Command::new(bin).args(["check", "config", "sd.yml"]).current_dir(dir.path()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, ours) = check(Path::new(env!("CARGO_BIN_EXE_promflow")));
    let (their_code, theirs) = check(&promtool);
    assert_eq!((code, their_code), (Some(0), Some(0)), "{ours}\n{theirs}");
    let missing = "  WARNING: file \"missing-*.json\" for file_sd in scrape job \"files\" does not exist";
    assert!(ours.contains(missing) && theirs.contains(missing), "promflow:\n{ours}\npromtool:\n{theirs}");
    assert!(
        ours.contains("  WARNING: scrape_configs[job=\"gce\"].gce_sd_configs: not implemented yet"),
        "{ours}"
    );
}

const RECORDING_RULES: &str = "groups:
- name: recorded
  interval: 1s
  rules:
  - record: job:rule_input:sum
    expr: sum by (job) (rule_input_total)
  - record: rule_input:count
    expr: count(rule_input_total)
  - record: rule_input_relabelled
    expr: rule_input_total{job=\"a\"} * 2
    labels:
      team: storage
      job: renamed
  - record: rule_input:from_recorded
    expr: 'job:rule_input:sum{job=\"b\"} + 1'
  - record: six
    expr: 2 * 3
";

/// `rule_input_total{job, instance}` with `samples`.
fn input_series(job: &str, inst: &str, samples: &[(i64, f64)]) -> promflow_remote::TimeSeries {
    common::series(&[("__name__", "rule_input_total"), ("job", job), ("instance", inst)], samples)
}

/// Remote-writes the same series to every server.
fn write_to(servers: &[&common::Server], series: &[promflow_remote::TimeSeries]) {
    for server in servers {
        let (code, body) = common::remote_write(server, series.to_vec());
        assert_eq!(code, 204, "{body}");
    }
}

/// Raw recorded samples of `metric` newer than `after_ms`, by series.
fn recorded(
    server: &common::Server,
    metric: &str,
    at_s: f64,
    after_ms: i64,
) -> BTreeMap<String, Vec<(i64, String)>> {
    let (code, v) = server.get_json(&format!("/api/v1/query?query={metric}%5B15s%5D&time={at_s}"));
    assert_eq!(code, 200, "{v}");
    let mut out = BTreeMap::new();
    for s in common::result(&v) {
        let mut labels: Vec<(String, String)> = s["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        labels.sort();
        let points: Vec<(i64, String)> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| ((p[0].as_f64().unwrap() * 1000.0).round() as i64, p[1].as_str().unwrap().to_string()))
            .filter(|(t, _)| *t > after_ms)
            .collect();
        out.insert(format!("{labels:?}"), points);
    }
    out
}

#[test]
fn recording_rules_write_what_prometheus_writes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RECORDING_RULES).unwrap();
    let config = "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n";
    let Some(prom) = common::start_prometheus(dir.path(), config) else { return };
    let pf = common::start_promflow(dir.path(), config, &["--web.enable-remote-write-receiver"]);
    // one minute of samples up to now, the same bytes to both
    let now = common::now_ms() / 1000 * 1000;
    let mut series = Vec::new();
    for (job, inst, slope) in [("a", "x:1", 1.0), ("a", "x:2", 2.0), ("b", "y:1", 5.0)] {
        let samples: Vec<(i64, f64)> = (0..60).map(|k| (now - (59 - k) * 1000, k as f64 * slope)).collect();
        series.push(input_series(job, inst, &samples));
    }
    write_to(&[&prom, &pf], &series);
    // evaluations after both servers hold the data: both use the group's hashed timestamps
    let after = common::now_ms() + 500;
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let at = common::now_ms() as f64 / 1000.0;
    for metric in
        ["job:rule_input:sum", "rule_input:count", "rule_input_relabelled", "rule_input:from_recorded", "six"]
    {
        let theirs = recorded(&prom, metric, at, after);
        let ours = recorded(&pf, metric, at, after);
        assert!(!theirs.is_empty(), "{metric}: Prometheus recorded nothing");
        for (series, points) in &theirs {
            let mine =
                ours.get(series).unwrap_or_else(|| panic!("{metric}: promflow lacks {series}; has {ours:?}"));
            let common_points: Vec<_> = points.iter().filter(|p| mine.iter().any(|m| m.0 == p.0)).collect();
            assert!(
                common_points.len() >= 2,
                "{metric} {series}: evaluation times differ: {points:?} vs {mine:?}"
            );
            for p in common_points {
                assert!(mine.contains(p), "{metric} {series}: {p:?} not in {mine:?}");
            }
        }
        assert_eq!(theirs.len(), ours.len(), "{metric}: {theirs:?} vs {ours:?}");
    }
    // in the default event mode the first three rules read dataflow views; the one that reads
    // an earlier rule's output of the same evaluation does not try, and `2 * 3` is a scalar
    let (_, metrics) = pf.get_text("/metrics");
    for line in [
        "promflow_rule_expressions{evaluation=\"view\"} 3",
        "promflow_rule_expressions{evaluation=\"batch\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in /metrics");
    }
    // the rules API lists the group as Prometheus does
    let (_, theirs) = prom.get_json("/api/v1/rules");
    let (_, ours) = pf.get_json("/api/v1/rules");
    let shape = |v: &serde_json::Value| -> Vec<(String, String, String, String)> {
        let g = &v["data"]["groups"][0];
        g["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    g["file"].as_str().unwrap().to_string(),
                    r["name"].as_str().unwrap().to_string(),
                    r["query"].as_str().unwrap().to_string(),
                    r["type"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(shape(&ours), shape(&theirs));
    assert_eq!(ours["data"]["groups"][0]["interval"], theirs["data"]["groups"][0]["interval"]);
    assert!(
        ours["data"]["groups"][0]["rules"].as_array().unwrap().iter().all(|r| r["health"] == "ok"),
        "{ours}"
    );
    // the labels of a rule with labels, and none on the others (Go's omitempty)
    let labels = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["data"]["groups"][0]["rules"].as_array().unwrap().iter().map(|r| r["labels"].clone()).collect()
    };
    assert_eq!(labels(&ours), labels(&theirs));
    // Prometheus 3 leaves out groups a filter emptied; 2.42 still listed them
    assert!(shape_or_empty(&pf.get_json("/api/v1/rules?type=alert").1).is_empty());
    // the rule-group metrics of Prometheus's mixin, under the same label
    let family = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{rule_group=")) && l.contains(";recorded\"}"))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    let ((_, ours_m), (_, theirs_m)) = (pf.get_text("/metrics"), prom.get_text("/metrics"));
    for (name, at_least) in [
        ("prometheus_rule_evaluations_total", 15.0),
        ("prometheus_rule_group_iterations_total", 3.0),
        ("prometheus_rule_group_rules", 5.0),
    ] {
        assert!(family(&theirs_m, name).is_some(), "Prometheus has no {name}");
        let v = family(&ours_m, name);
        assert!(v.is_some_and(|v| v >= at_least), "{name} is {v:?} in promflow's /metrics");
    }
    assert_eq!(family(&ours_m, "prometheus_rule_evaluation_failures_total"), Some(0.0));
    // rule_name[], rule_group[] and file[] came after 2.42
    assert!(shape_or_empty(&pf.get_json("/api/v1/rules?rule_group[]=nope").1).is_empty());
    assert!(shape_or_empty(&pf.get_json("/api/v1/rules?file[]=nope.yml").1).is_empty());
    let six = shape_or_empty(&pf.get_json("/api/v1/rules?rule_name[]=six&rule_name[]=rule_input:count").1);
    assert_eq!(six, vec![("recorded".to_string(), vec!["rule_input:count".to_string(), "six".to_string()])]);
    for path in ["/api/v1/rules?type=bogus", "/api/v1/rules?type=record"] {
        let (a, b) = (prom.get_json(path), pf.get_json(path));
        assert_eq!((a.0, a.1["error"].clone()), (b.0, b.1["error"].clone()), "{path}");
        assert_eq!(shape_or_empty(&a.1), shape_or_empty(&b.1), "{path}");
    }
}

/// (group, rule names) of a rules answer.
fn shape_or_empty(v: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let Some(groups) = v["data"]["groups"].as_array() else { return Vec::new() };
    groups
        .iter()
        .map(|g| {
            let names =
                g["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string());
            (g["name"].as_str().unwrap().to_string(), names.collect())
        })
        .collect()
}

/// A reload that removes a rule and a group marks their series stale, keeps the rules that
/// stay, and starts the new ones; a broken rule file fails the reload and keeps the rules.
#[test]
fn reloading_rules_marks_removed_series_stale() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let write_rules = |text: &str| std::fs::write(&rules, text).unwrap();
    write_rules(
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: kept\n    expr: vector(1)\n  - record: dropped\n    expr: vector(2)\n- name: gone\n  interval: 1s\n  rules:\n  - record: gone_too\n    expr: vector(3)\n",
    );
    let config = "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n";
    let pf = common::start_promflow(dir.path(), config, &["--web.enable-lifecycle"]);
    let present = |metric: &str| {
        let (_, v) = pf.get_json(&format!("/api/v1/query?query={metric}"));
        !common::result(&v).is_empty()
    };
    let waited = common::wait_for(std::time::Duration::from_secs(10), || {
        (present("kept") && present("dropped") && present("gone_too")).then_some(())
    });
    assert!(waited.is_some(), "rules did not record");

    write_rules("groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: kept\n    expr: vector(1)\n  - record: added\n    expr: vector(4)\n");
    let reload =
        |pf: &common::Server| common::client().post(pf.url("/-/reload")).send().unwrap().status().as_u16();
    assert_eq!(reload(&pf), 200);
    let waited = common::wait_for(std::time::Duration::from_secs(10), || {
        (present("added") && !present("dropped") && !present("gone_too")).then_some(())
    });
    assert!(waited.is_some(), "removed rules' series are still visible or the new rule did not record");
    assert!(present("kept"));
    // the removed rules' views are uninstalled: one view, one arrangement per rule left
    let gauge = |name: &str| {
        let (_, text) = pf.get_text("/metrics");
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    let views = gauge("promflow_rule_expressions{evaluation=\"view\"}");
    assert_eq!((views, gauge("promflow_dataflow_arrangements")), (Some(2.0), Some(2.0)));

    write_rules("groups:\n- name: g\n  rules:\n  - record: 'bad name'\n    expr: vector(1)\n");
    assert_eq!(reload(&pf), 500);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(present("added") && present("kept"), "a failed reload must keep the running rules");
}

const ALERTING_RULES: &str = "groups:
- name: alerting
  interval: 1s
  rules:
  - alert: HighInput
    expr: rule_input_total > 50
    for: 2s
    labels:
      severity: page
      where: '{{ $labels.instance }}'
    annotations:
      summary: '{{ $labels.job }} at {{ $value | humanize }}'
      detail: 'value {{ printf \"%.1f\" $value }} of {{ $labels.__name__ }}'
  - alert: JobSum
    expr: sum by (job) (rule_input_total) > 100
    keep_firing_for: 30s
  - alert: Constant
    expr: vector(1)
";

/// `time` of an RFC 3339 timestamp in whole milliseconds (Prometheus prints nanoseconds).
fn rfc3339_ms(s: &str) -> i64 {
    let (secs, frac) = s.trim_end_matches('Z').split_once('.').unwrap_or((s.trim_end_matches('Z'), "0"));
    let t = chrono::NaiveDateTime::parse_from_str(secs, "%Y-%m-%dT%H:%M:%S").unwrap().and_utc().timestamp();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    t * 1000 + ms
}

/// The alerts of `/api/v1/alerts` as comparable tuples, sorted.
fn alerts_of(server: &common::Server) -> Vec<(String, String, String, String, i64)> {
    let (code, v) = server.get_json("/api/v1/alerts");
    assert_eq!(code, 200, "{v}");
    let mut out: Vec<_> = v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"].to_string(),
                a["annotations"].to_string(),
                a["state"].as_str().unwrap().to_string(),
                a["value"].as_str().unwrap().to_string(),
                rfc3339_ms(a["activeAt"].as_str().unwrap()),
            )
        })
        .collect();
    out.sort();
    out
}

/// In tick mode promflow's alerts are Prometheus's, to the millisecond.
#[test]
fn alerting_rules_behave_as_in_prometheus() {
    alerting_rules_against_prometheus("tick");
}

/// In event mode the alerts are the same, but each became active at the timestamp of the
/// sample that made its condition true, not at the next evaluation.
#[test]
fn event_mode_alerts_become_active_at_the_crossing_sample() {
    alerting_rules_against_prometheus("event");
}

fn alerting_rules_against_prometheus(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alerts.yml"), ALERTING_RULES).unwrap();
    let config =
        "global:\n  evaluation_interval: 1s\n  external_labels: {dc: eu1}\nrule_files:\n  - alerts.yml\n";
    let Some(prom) = common::start_prometheus(dir.path(), config) else { return };
    let mode_flag = format!("--rules.evaluation-mode={mode}");
    let pf = common::start_promflow(dir.path(), config, &["--web.enable-remote-write-receiver", &mode_flag]);
    // the condition starts to hold 4 s from now, in the data itself: both servers have the
    // samples long before, so both see it change at the same evaluation
    let now = common::now_ms() / 1000 * 1000;
    let cross = now + 4_000;
    let mut series = Vec::new();
    for (job, inst, high) in [("a", "x:1", 60.0), ("a", "x:2", 75.5), ("b", "y:1", 10.0)] {
        let samples: Vec<(i64, f64)> =
            (-30..30).map(|k| now + k * 1000).map(|t| (t, if t >= cross { high } else { 1.0 })).collect();
        series.push(input_series(job, inst, &samples));
    }
    write_to(&[&prom, &pf], &series);
    std::thread::sleep(std::time::Duration::from_millis((cross + 4_500 - common::now_ms()).max(0) as u64));
    let (mut theirs, mut ours) = (alerts_of(&prom), alerts_of(&pf));
    assert_eq!(ours.len(), 4, "{ours:#?}");
    // `Constant` holds from each server's first evaluation, which depends on when it started
    for a in theirs.iter_mut().chain(ours.iter_mut()).filter(|a| a.0.contains("Constant")) {
        a.4 = 0;
    }
    if mode == "event" {
        // Prometheus's alerts became active at its first evaluation after the crossing
        for (mine, theirs) in
            ours.iter_mut().zip(theirs.iter_mut()).filter(|(a, _)| !a.0.contains("Constant"))
        {
            assert_eq!(mine.4, cross, "{mine:?}");
            assert!(theirs.4 >= cross && theirs.4 < cross + 1_000, "{theirs:?}");
            theirs.4 = cross;
        }
    }
    assert_eq!(ours, theirs);
    assert!(ours.iter().any(|a| a.2 == "firing" && a.0.contains("HighInput")), "{ours:#?}");
    // the ALERTS and ALERTS_FOR_STATE samples both servers wrote at the same evaluations
    let at = common::now_ms() as f64 / 1000.0;
    for metric in ["ALERTS", "ALERTS_FOR_STATE"] {
        let theirs = recorded(&prom, metric, at, cross);
        let ours = recorded(&pf, metric, at, cross);
        assert_eq!(theirs.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>(), "{metric}");
        // `Constant`'s active time is each server's first evaluation (or watch)
        for (series, points) in theirs.iter().filter(|(s, _)| metric == "ALERTS" || !s.contains("Constant")) {
            let mine = &ours[series];
            let shared: Vec<_> = points.iter().filter(|p| mine.iter().any(|m| m.0 == p.0)).collect();
            // a pending alert (`for: 2s`) has two evaluations, and the first of them falls on
            // the crossing itself, which is not counted, when the group's evaluations land on
            // whole seconds
            let least = if series.contains("\"pending\"") { 1 } else { 2 };
            assert!(shared.len() >= least, "{metric} {series}: {points:?} vs {mine:?}");
            for p in shared {
                assert!(mine.contains(p), "{metric} {series}: {p:?} not in {mine:?}");
            }
        }
    }
    // the rules API describes the alerting rules as Prometheus does
    let describe = |v: &serde_json::Value| -> Vec<String> {
        v["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let keys = [
                    "state",
                    "name",
                    "query",
                    "duration",
                    "keepFiringFor",
                    "labels",
                    "annotations",
                    "type",
                    "health",
                ];
                keys.iter().map(|k| format!("{k}={}", r[k])).collect::<Vec<_>>().join(" ")
            })
            .collect()
    };
    let (theirs, ours) = (prom.get_json("/api/v1/rules").1, pf.get_json("/api/v1/rules").1);
    assert_eq!(describe(&ours), describe(&theirs));
}

/// After `kill -9` and a restart, a pending alert keeps the time it became active, shifted
/// by the downtime (Prometheus's `for` state restoration from `ALERTS_FOR_STATE`).
#[test]
fn pending_alerts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: slow\n  interval: 1s\n  rules:\n  - alert: Long\n    expr: vector(1)\n    for: 15m\n",
    )
    .unwrap();
    let config = "global:\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n";
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let port = common::free_port();
    let active_at = |pf: &common::Server| -> Option<(String, i64)> {
        let (_, v) = pf.get_json("/api/v1/alerts");
        let a = v["data"]["alerts"].as_array()?.first()?.clone();
        Some((a["state"].as_str()?.to_string(), rfc3339_ms(a["activeAt"].as_str()?)))
    };
    let for_state_written = |pf: &common::Server| {
        let (_, v) = pf.get_json("/api/v1/query?query=ALERTS_FOR_STATE");
        !common::result(&v).is_empty()
    };
    let mut pf = common::start_promflow_with(dir.path(), &cfg, port, &[]);
    let ok = common::wait_for(std::time::Duration::from_secs(15), || for_state_written(&pf).then_some(()));
    assert!(ok.is_some(), "ALERTS_FOR_STATE was never written");
    let (state, first) = active_at(&pf).unwrap();
    assert_eq!(state, "pending", "active at {first}, now {}", common::now_ms());
    std::thread::sleep(std::time::Duration::from_secs(5));
    let killed = common::now_ms();
    pf.kill9();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let restarted = common::now_ms();
    let pf = common::start_promflow_with(dir.path(), &cfg, port, &[]);
    // restoration happens after the second evaluation; until then the alert is new
    let restored = common::wait_for(std::time::Duration::from_secs(15), || {
        active_at(&pf).filter(|(_, at)| *at < restarted - 3_000)
    });
    let (state, at) = restored.expect("the alert's active time was not restored");
    assert_eq!(state, "pending", "active at {at}, first {first}, restarted {restarted}");
    // the original time (whole seconds, as ALERTS_FOR_STATE stores it) plus the downtime
    let shift = at - first / 1000 * 1000;
    let down = restarted - killed;
    assert!(shift >= down - 1_000 && shift <= down + 6_000, "shifted by {shift} ms for {down} ms down");
}

/// The first evaluation writes: once `/api/v1/rules` reports a group's first evaluation,
/// the recording rule's sample of it is stored, as in Prometheus 2.42 beside it. The alert
/// makes the group's views follow the clock between evaluations, so the recording rule's view
/// must be installed before the clock passes its first evaluation.
#[test]
fn the_first_evaluation_writes_what_it_recorded() {
    let rules = "groups:\n- name: first\n  interval: 5s\n  rules:\n  - record: job:x:sum\n    expr: sum by (job) (x)\n  - alert: Always\n    expr: x > 0\n    for: 1m\n";
    let config = "global:\n  evaluation_interval: 5s\nrule_files:\n  - rules.yml\n";
    let (pf_dir, prom_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(pf_dir.path().join("rules.yml"), rules).unwrap();
    std::fs::write(prom_dir.path().join("rules.yml"), rules).unwrap();
    let pf = common::start_promflow(pf_dir.path(), config, &["--web.enable-remote-write-receiver"]);
    let prom = common::start_prometheus(prom_dir.path(), config);
    // the start-up log says what was loaded, as Prometheus's does
    let logs = pf.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("completed loading of configuration file") && l.contains("rule_groups=1")),
        "{logs}"
    );
    for (name, server) in std::iter::once(("promflow", &pf)).chain(prom.as_ref().map(|p| ("Prometheus", p))) {
        let written = common::now_ms();
        let x = common::series(&[("__name__", "x"), ("job", "a")], &[(written, 1.0)]);
        assert_eq!(common::remote_write(server, vec![x]).0, 204);
        let evaluated = common::wait_for(std::time::Duration::from_secs(15), || {
            let (_, v) = server.get_json("/api/v1/rules");
            let last =
                v["data"]["groups"][0]["rules"][0]["lastEvaluation"].as_str().unwrap_or("").to_string();
            (!last.is_empty() && !last.starts_with("0001-")).then_some(last)
        });
        let last = evaluated.unwrap_or_else(|| panic!("{name} never evaluated the group"));
        if rfc3339_ms(&last) <= written {
            // the group's first evaluation came before the sample: nothing to judge by
            continue;
        }
        let (_, v) = server.get_json("/api/v1/query?query=count_over_time(job:x:sum%5B1m%5D)");
        let count =
            common::result(&v).first().and_then(|s| s["value"][1].as_str()).unwrap_or("0").to_string();
        assert_ne!(count, "0", "{name}: evaluated at {last} but nothing recorded: {v}");
    }
}

const HISTOGRAM_RULES: &str = "groups:
- name: histograms
  interval: 1s
  rules:
  - record: job:rpc_duration_seconds:rate1m
    expr: sum by (job) (rate(rpc_duration_seconds[1m]))
  - record: job:rpc_duration_seconds:p50
    expr: histogram_quantile(0.5, sum by (job) (rate(rpc_duration_seconds[1m])))
  - alert: SlowRpc
    expr: histogram_quantile(0.5, sum by (job) (rate(rpc_duration_seconds[1m]))) > 0
";

/// Counter native histograms of two instances of one job, a sample a second up to now.
fn histogram_input(now: i64) -> Vec<promflow_remote::TimeSeries> {
    (0..2)
        .map(|i| {
            let instance = format!("api-{i}");
            let labels =
                [("__name__", "rpc_duration_seconds"), ("job", "api"), ("instance", instance.as_str())];
            common::histogram_series(&labels, (0..60).map(|k| (now - (59 - k) * 1000, (k * (i + 2)) as f64)))
        })
        .collect()
}

#[test]
fn recording_rules_and_alerts_over_native_histograms() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), HISTOGRAM_RULES).unwrap();
    let config = "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n";
    // the default event mode: the rules read dataflow views over the histograms
    let pf = common::start_promflow(dir.path(), config, &["--web.enable-remote-write-receiver"]);
    let now = common::now_ms() / 1000 * 1000;
    write_to(&[&pf], &histogram_input(now));
    let expr = "sum%20by%20(job)%20(rate(rpc_duration_seconds%5B1m%5D))";
    // the recorded histogram equals the expression evaluated at the same time
    let mut checked = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let at = common::now_ms() as f64 / 1000.0;
        let (_, v) =
            pf.get_json(&format!("/api/v1/query?query=job:rpc_duration_seconds:rate1m%5B5s%5D&time={at}"));
        let Some(points) = common::result(&v).first().and_then(|s| s["histograms"].as_array().cloned())
        else {
            continue;
        };
        let last = points.last().unwrap();
        let t = last[0].as_f64().unwrap();
        let (_, direct) = pf.get_json(&format!("/api/v1/query?query={expr}&time={t}"));
        assert_eq!(common::result(&direct)[0]["histogram"][1], last[1], "{direct} vs {last}");
        assert!(last[1]["count"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{last}");
        let (_, q) = pf.get_json(&format!("/api/v1/query?query=job:rpc_duration_seconds:p50&time={t}"));
        let (_, qd) = pf.get_json(&format!("/api/v1/query?query=histogram_quantile(0.5,{expr})&time={t}"));
        assert_eq!(common::result(&q)[0]["value"], common::result(&qd)[0]["value"], "{q} vs {qd}");
        checked = true;
        break;
    }
    assert!(checked, "no recorded histogram within 10 s");
    let fired = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (_, v) = pf.get_json("/api/v1/alerts");
        v["data"]["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["labels"]["alertname"] == "SlowRpc"))
    });
    assert!(fired, "the alert over histograms did not fire");
    let (_, metrics) = pf.get_text("/metrics");
    let line = "promflow_rule_expressions{evaluation=\"view\"} 3";
    assert!(metrics.lines().any(|l| l == line), "no {line:?} in /metrics");
}
