//! Rule files: `promflow check rules` and `promflow check config` give the verdicts (exit
//! codes) of Debian's `promtool` 2.42 on the same files.

mod common;

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
}
