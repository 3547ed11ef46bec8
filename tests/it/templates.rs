//! Alert templates: every expected expansion below is first confirmed by Debian's
//! `promtool test rules` 2.42 (the expected text is an `exp_annotations` value, so promtool
//! fails the run if Prometheus expands the template differently), then required from
//! promflow's template engine on the same data.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use promflow_template::{AlertData, Template};

/// (template, what Prometheus expands it to) for the series
/// `test_metric{instance="host-1.example.com:9100", job="node"}` = 1234567.5.
const CASES: &[(&str, &str)] = &[
    ("{{ $labels.instance }} of {{ $labels.job }}", "host-1.example.com:9100 of node"),
    ("{{ .Labels.job }} {{ $labels.__name__ }}", "node test_metric"),
    ("{{ $value }}", "1.2345675e+06"),
    ("{{ .Value }}", "1.2345675e+06"),
    ("{{ $value | humanize }}", "1.235M"),
    ("{{ humanize 0.000123 }}", "123u"),
    ("{{ humanize 0 }}", "0"),
    ("{{ $value | humanize1024 }}", "1.177Mi"),
    ("{{ humanizePercentage 0.98765 }}", "98.77%"),
    ("{{ humanizeDuration 93784 }}", "1d 2h 3m 4s"),
    ("{{ humanizeDuration 0.0005 }}", "500us"),
    ("{{ humanizeDuration 42.25 }}", "42.25s"),
    ("{{ humanizeTimestamp 1700000000 }}", "2023-11-14 22:13:20 +0000 UTC"),
    ("{{ printf \"%.2f\" $value }}", "1234567.50"),
    ("{{ printf \"%d items, %s\" 3 \"ok\" }}", "3 items, ok"),
    ("{{ printf \"%5.1f|%-4s|\" 2.25 \"a\" }}", "  2.2|a   |"),
    ("{{ printf \"%d\" $value }}", "%!d(float64=1.2345675e+06)"),
    ("{{ if gt $value 1000.0 }}big{{ else }}small{{ end }}", "big"),
    ("{{ if eq $labels.job \"x\" }}x{{ else if eq $labels.job \"node\" }}n{{ else }}?{{ end }}", "n"),
    (
        "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
        "__name__=test_metric;instance=host-1.example.com:9100;job=node;",
    ),
    ("{{ with $labels.missing }}has{{ else }}none{{ end }}", "none"),
    ("[{{ $labels.missing }}]", "[]"),
    ("{{ $x := 40 }}{{ $x }}", "40"),
    ("{{ toUpper $labels.job }} {{ toLower \"AbC\" }} {{ title \"disk full\" }}", "NODE abc Disk Full"),
    ("{{ reReplaceAll \"^([^.]+)\\\\..*$\" \"$1\" $labels.instance }}", "host-1"),
    (
        "{{ $labels.instance | stripPort }} {{ $labels.instance | stripDomain }}",
        "host-1.example.com host-1:9100",
    ),
    ("{{ match \"^host-[0-9]\" $labels.instance }}", "true"),
    ("{{ len $labels }} {{ index $labels \"job\" }}", "3 node"),
    ("{{ and true false }} {{ or \"\" \"dflt\" }} {{ not 0 }}", "false dflt true"),
    ("{{ \"a<b\" | html }} {{ \"a b&c\" | urlquery }}", "a&lt;b a+b%26c"),
    ("{{- \"trim\" -}}   !", "trim!"),
    ("{{ graphLink \"up == 0\" }}", "/graph?g0.expr=up+%3D%3D+0&g0.tab=0"),
    ("{{ parseDuration \"1h30m\" }}", "5400"),
    ("{{ print 1 2 \"x\" 3 }}", "1 2x3"),
    ("{{ $externalLabels.cluster }}", "eu1"),
];

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[test]
fn templates_expand_as_prometheus_expands_them() {
    // the oracle: promtool accepts every expectation
    if let Some(promtool) = common::peer("promtool") {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = String::from("groups:\n- name: t\n  rules:\n");
        let mut tests = String::from(
            "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  external_labels:\n    cluster: eu1\n  input_series:\n  - series: 'test_metric{instance=\"host-1.example.com:9100\", job=\"node\"}'\n    values: '1234567.5'\n  alert_rule_test:\n",
        );
        for (i, (template, expected)) in CASES.iter().enumerate() {
            rules.push_str(&format!(
                "  - alert: T{i}\n    expr: test_metric\n    annotations:\n      out: {}\n",
                yaml_quote(template)
            ));
            tests.push_str(&format!(
                "  - eval_time: 0m\n    alertname: T{i}\n    exp_alerts:\n    - exp_labels: {{instance: host-1.example.com:9100, job: node}}\n      exp_annotations:\n        out: {}\n",
                yaml_quote(expected)
            ));
        }
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        std::fs::write(dir.path().join("tests.yml"), tests).unwrap();
        let out = Command::new(promtool)
            .args(["test", "rules", "tests.yml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool disagrees with an expectation:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // promflow on the same data
    let labels: BTreeMap<String, String> =
        [("__name__", "test_metric"), ("instance", "host-1.example.com:9100"), ("job", "node")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
    let data = AlertData {
        labels,
        external_labels: [("cluster".to_string(), "eu1".to_string())].into(),
        external_url: String::new(),
        value: 1234567.5,
    };
    let mut wrong = Vec::new();
    for (i, (template, expected)) in CASES.iter().enumerate() {
        let got =
            Template::parse(&format!("__alert_T{i}"), template).and_then(|t| t.expand(&data, 0.0, None));
        if got.as_deref() != Ok(*expected) {
            wrong.push(format!("{template}: got {got:?}, Prometheus gives {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} differ:\n{}", wrong.len(), CASES.len(), wrong.join("\n"));
}
