//! Alerts reach a real Alertmanager (Debian's `prometheus-alertmanager`) with the labels and
//! annotations Prometheus would send, and are resolved there when the data says so.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_for};

/// A running Alertmanager, killed when dropped.
pub(crate) struct Alertmanager {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's Alertmanager under `dir` on a free port (`None`: not installed, outside CI).
pub(crate) fn start_alertmanager(dir: &std::path::Path) -> Option<Alertmanager> {
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
pub(crate) fn am_alerts(am: &Alertmanager) -> Vec<serde_json::Value> {
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

/// The number of alerts in a recorded request (request line, newline, JSON array).
fn batch_size(recorded: &str) -> usize {
    let body = recorded.split_once('\n').map_or("", |(_, b)| b);
    serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0)
}

#[test]
fn alerts_go_out_in_batches_of_256_and_failed_sends_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let capture = common::start_capture(1);
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: many\n  interval: 1s\n  rules:\n  - alert: Many\n    expr: many > 0\n",
    )
    .unwrap();
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\nalerting:\n  alertmanagers:\n  - path_prefix: /am\n    static_configs:\n    - targets: ['127.0.0.1:{}']\n",
        capture.port
    );
    let pf = common::start_promflow(dir.path(), &config, &["--web.enable-remote-write-receiver"]);
    let now = common::now_ms();
    let series: Vec<_> = (0..300)
        .map(|i| common::series(&[("__name__", "many"), ("i", &i.to_string())], &[(now, 1.0)]))
        .collect();
    let (code, body) = common::remote_write(&pf, series);
    assert_eq!(code, 204, "{body}");
    // 300 firing alerts: a failed first request, its retry, and the rest of the batch
    let bodies = wait_for(Duration::from_secs(20), || {
        let b = capture.bodies.lock().unwrap().clone();
        let alerts: usize = b.iter().skip(1).map(|x| batch_size(x)).sum();
        (alerts >= 300).then_some(b)
    })
    .expect("not every alert was delivered");
    assert!(
        bodies.iter().all(|b| b.starts_with("POST /am/api/v2/alerts HTTP/1.1")),
        "{:?}",
        bodies[0].lines().next()
    );
    let sizes: Vec<usize> = bodies.iter().map(|x| batch_size(x)).collect();
    assert!(sizes.iter().all(|&n| n <= 256), "a batch exceeded 256 alerts: {sizes:?}");
    assert_eq!(bodies[0], bodies[1], "the failed request is retried with the same batch");
    assert_eq!(sizes[..3], [256, 256, 44], "{sizes:?}");
    let (_, metrics) = pf.get_text("/metrics");
    assert!(metrics.contains("prometheus_notifications_errors_total 0"), "a retried send is not an error");
}

/// In event mode (the default) an alert moves when its data does: with a one-minute group
/// interval, each crossing of the threshold (firing, resolved, firing again) reaches the
/// receiver within two seconds of the remote write that carried it, which no tick explains.
#[test]
fn event_mode_alerts_are_sent_when_the_data_crosses_not_at_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let capture = common::start_capture(0);
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: slow\n  interval: 1m\n  rules:\n  - alert: Hot\n    expr: temperature > 90\n",
    )
    .unwrap();
    let config = format!(
        "global:\n  evaluation_interval: 1m\nrule_files:\n  - alerts.yml\nalerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['127.0.0.1:{}']\n",
        capture.port
    );
    let pf = common::start_promflow(dir.path(), &config, &["--web.enable-remote-write-receiver"]);
    let write = |value: f64| {
        let s = common::series(&[("__name__", "temperature"), ("room", "a")], &[(common::now_ms(), value)]);
        let (code, body) = common::remote_write(&pf, vec![s]);
        assert_eq!(code, 204, "{body}");
        std::time::Instant::now()
    };
    let received = || capture.bodies.lock().unwrap().len();
    write(20.0);
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = Vec::new();
    for (value, state) in [(95.0, "firing"), (20.0, "resolved"), (96.0, "firing")] {
        let before = received();
        let sent = write(value);
        let arrived = wait_for(Duration::from_secs(2), || (received() > before).then_some(()));
        arrived.unwrap_or_else(|| panic!("the {state} alert did not arrive within 2 s"));
        latencies.push(capture.arrived.lock().unwrap()[before] - sent);
        let body = capture.bodies.lock().unwrap().last().cloned().unwrap_or_default();
        let alert = serde_json::from_str::<serde_json::Value>(body.split_once('\n').map_or("", |(_, b)| b))
            .ok()
            .and_then(|v| v.get(0).cloned())
            .unwrap_or_else(|| panic!("not an alert: {body}"));
        assert_eq!(alert["labels"]["alertname"], "Hot", "{body}");
        // a firing alert is valid for minutes ahead; a resolved one ended already
        let ends_at = chrono::DateTime::parse_from_rfc3339(alert["endsAt"].as_str().unwrap()).unwrap();
        let ended = ends_at.timestamp_millis() <= common::now_ms();
        assert_eq!(ended, state == "resolved", "{state}: {body}");
        std::thread::sleep(Duration::from_millis(1_000));
    }
    println!("sample to receiver: {latencies:?}");
}

/// The `generatorURL`s of the alerts a capture received, in arrival order.
fn generator_urls(capture: &common::Capture) -> Vec<String> {
    let bodies = capture.bodies.lock().unwrap().clone();
    bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b.split_once('\n')?.1).ok())
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["generatorURL"].as_str().map(str::to_string))
        .collect()
}

/// Without `--web.external-url`, an alert's link is absolute (`http://<hostname>:<port>`, as
/// Prometheus defaults the external URL) and a rule's query is its expression on one line,
/// however the rule file lays it out; side by side with Prometheus 2.42 on the same rules.
#[test]
fn alert_links_are_absolute_and_rule_queries_one_line_without_an_external_url() {
    let capture = common::start_capture(0);
    let rules = "groups:\n- name: links\n  interval: 1s\n  rules:\n  - alert: Hot\n    expr: |\n      max by (room) (\n        temperature\n      )\n        > 90\n";
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\nalerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['127.0.0.1:{}']\n",
        capture.port
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let (pf_dir, prom_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(pf_dir.path().join("alerts.yml"), rules).unwrap();
    std::fs::write(prom_dir.path().join("alerts.yml"), rules).unwrap();
    let pf = common::start_promflow(pf_dir.path(), &config, &["--web.enable-remote-write-receiver"]);
    let prom = common::start_prometheus(prom_dir.path(), &config);
    let hot =
        || vec![common::series(&[("__name__", "temperature"), ("room", "a")], &[(common::now_ms(), 95.0)])];
    assert_eq!(common::remote_write(&pf, hot()).0, 204);
    if let Some(prom) = &prom {
        // Prometheus drops what it would send before its Alertmanager is discovered
        let discovered = wait_for(Duration::from_secs(20), || {
            let (_, v) = prom.get_json("/api/v1/alertmanagers");
            v["data"]["activeAlertmanagers"].as_array().is_some_and(|a| !a.is_empty()).then_some(())
        });
        assert!(discovered.is_some(), "Prometheus found no Alertmanager: {}", prom.logs());
        assert_eq!(common::remote_write(prom, hot()).0, 204);
    }

    let query = "max by (room) (temperature) > 90";
    let (_, v) = pf.get_json("/api/v1/rules");
    assert_eq!(v["data"]["groups"][0]["rules"][0]["query"], query, "{v}");
    let link = |port: u16| {
        format!("http://{host}:{port}/graph?g0.expr=max+by+%28room%29+%28temperature%29+%3E+90&g0.tab=1")
    };
    let expected: Vec<String> =
        std::iter::once(link(pf.port)).chain(prom.as_ref().map(|p| link(p.port))).collect();
    let received = wait_for(Duration::from_secs(20), || {
        let urls = generator_urls(&capture);
        expected.iter().all(|e| urls.contains(e)).then_some(urls)
    });
    assert!(
        received.is_some(),
        "expected links {expected:?}, received {:?}; Prometheus's log: {}",
        generator_urls(&capture),
        prom.as_ref().map(|p| p.logs()).unwrap_or_default()
    );
    if let Some(prom) = &prom {
        let (_, theirs) = prom.get_json("/api/v1/rules");
        assert_eq!(theirs["data"]["groups"][0]["rules"][0]["query"], query, "Prometheus: {theirs}");
    }
}
