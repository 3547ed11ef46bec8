//! Alerts reach a real Alertmanager (Debian's `prometheus-alertmanager`) with the labels and
//! annotations Prometheus would send, and are resolved there when the data says so.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_for};

/// A running Alertmanager, killed when dropped.
struct Alertmanager {
    child: std::process::Child,
    base: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_alertmanager(dir: &std::path::Path) -> Option<Alertmanager> {
    let bin = common::peer("prometheus-alertmanager")?;
    let port = free_port();
    let cfg = dir.join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: nowhere\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n- name: nowhere\n",
    )
    .unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("am.log")).unwrap())
        .spawn()
        .expect("start alertmanager");
    let am = Alertmanager { child, base: format!("http://127.0.0.1:{port}") };
    let up = wait_for(Duration::from_secs(30), || {
        common::client().get(format!("{}/-/ready", am.base)).send().ok().filter(|r| r.status().is_success())
    });
    assert!(
        up.is_some(),
        "alertmanager did not start: {}",
        std::fs::read_to_string(dir.join("am.log")).unwrap_or_default()
    );
    Some(am)
}

/// Alertmanager's active alerts as JSON.
fn am_alerts(am: &Alertmanager) -> Vec<serde_json::Value> {
    let text = common::client()
        .get(format!("{}/api/v2/alerts?active=true", am.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap().as_array().cloned().unwrap_or_default()
}

#[test]
fn alerts_fire_and_resolve_in_a_real_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let Some(am) = start_alertmanager(dir.path()) else { return };
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: watch\n  interval: 1s\n  rules:\n  - alert: DiskFull\n    expr: disk_used_ratio > 0.9\n    labels:\n      severity: page\n    annotations:\n      summary: '{{ $labels.instance }} disk at {{ $value | humanizePercentage }}'\n",
    )
    .unwrap();
    let am_addr = am.base.trim_start_matches("http://");
    let config = format!(
        "global:\n  evaluation_interval: 1s\n  external_labels:\n    cluster: test\nrule_files:\n  - alerts.yml\nalerting:\n  alert_relabel_configs:\n  - target_label: via\n    replacement: promflow\n  alertmanagers:\n  - static_configs:\n    - targets: ['{am_addr}']\n"
    );
    let pf = common::start_promflow(
        dir.path(),
        &config,
        &["--web.enable-remote-write-receiver", "--web.external-url=http://promflow.example:9090"],
    );
    let (_, v) = pf.get_json("/api/v1/alertmanagers");
    assert_eq!(v["data"]["activeAlertmanagers"][0]["url"], format!("{}/api/v2/alerts", am.base), "{v}");

    let write = |value: f64| {
        let now = common::now_ms();
        let s =
            common::series(&[("__name__", "disk_used_ratio"), ("instance", "db-1:9100")], &[(now, value)]);
        let (code, body) = common::remote_write(&pf, vec![s]);
        assert_eq!(code, 204, "{body}");
    };
    write(0.95);
    let fired = wait_for(Duration::from_secs(20), || am_alerts(&am).into_iter().next());
    let alert = fired.expect("the alert never reached Alertmanager");
    assert_eq!(
        alert["labels"],
        serde_json::json!({"alertname": "DiskFull", "cluster": "test", "instance": "db-1:9100", "severity": "page", "via": "promflow"})
    );
    assert_eq!(alert["annotations"]["summary"], "db-1:9100 disk at 95%");
    assert_eq!(
        alert["generatorURL"],
        "http://promflow.example:9090/graph?g0.expr=disk_used_ratio+%3E+0.9&g0.tab=1"
    );
    assert_eq!(alert["status"]["state"], "active");

    // the data goes back under the threshold: the resolved alert leaves Alertmanager's list
    write(0.5);
    let resolved = wait_for(Duration::from_secs(20), || am_alerts(&am).is_empty().then_some(()));
    assert!(resolved.is_some(), "the alert was not resolved: {:?}", am_alerts(&am));
    let (_, metrics) = pf.get_text("/metrics");
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("prometheus_notifications_sent_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(sent.is_some_and(|n| n >= 2.0), "firing and resolved sends are counted: {sent:?}");
}
