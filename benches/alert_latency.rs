//! From the sample that crosses a threshold to the alert at the receiver, side by side with
//! Prometheus 2.42: promflow in its default event mode, Prometheus evaluating every interval.
//!
//! Run with `cargo bench --bench alert_latency`. Environment (defaults in brackets):
//! `BENCH_CROSSINGS` [20] per system, `BENCH_INTERVAL_S` [15] evaluation interval,
//! `BENCH_VIA` [direct] `alertmanager` to put a real Alertmanager (Debian's
//! `prometheus-alertmanager`, on the clients' CPU) between the server and the receiver, which
//! then gets Alertmanager's webhook (every alert its own group, `group_wait: 0s`, and
//! `group_interval: 10ms`: an alert that fires again joins its resolved group, which
//! Alertmanager keeps up to 30 s, and waits for the group's next interval).
//!
//! Each server runs alone on CPU 1 with one rule, `temperature > 90` with `for: 0s`, and sends
//! its alerts to a receiver in this process that speaks Alertmanager's API v2 and timestamps
//! each request as it arrives. A crossing is a remote write of 95 (the sample stamped with the
//! wall clock); its latency runs from the write's response to the arrival of the first request
//! that holds the alert firing with a `startsAt` at or after the crossing. After each crossing
//! the value goes back to 20 and the next crossing waits for the resolved alert, then a fixed
//! sequence of pauses spreads the crossings over the evaluation cycle. Printed: p50,
//! p99 and the largest latency per system, as a Markdown table for docs/benchmarks.md.

mod workload;

use std::time::{Duration, Instant};

use workload::common::{self, free_port};
use workload::{env, percentile, pin_self, start_pinned, CLIENT_CPU};

/// The alerts of a recorded request (request line, newline, body): (firing, startsAt in ms).
/// The body is Alertmanager's API v2 (a list of alerts) or its webhook (`alerts`, each with
/// its `status`).
fn alerts_in(request: &str) -> Vec<(bool, i64)> {
    let body = request.split_once('\n').map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let ms = |s: &serde_json::Value| {
        s.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(0, |d| d.timestamp_millis())
    };
    let webhook = v["alerts"].as_array();
    webhook
        .or(v.as_array())
        .into_iter()
        .flatten()
        .map(|a| {
            let firing = match a["status"].as_str() {
                Some(status) if webhook.is_some() => status == "firing",
                _ => ms(&a["endsAt"]) > common::now_ms(),
            };
            (firing, ms(&a["startsAt"]))
        })
        .collect()
}

/// A real Alertmanager that sends every alert at once to the webhook at `port`.
struct Alertmanager {
    child: std::process::Child,
    port: u16,
}

impl Alertmanager {
    fn start(dir: &std::path::Path, webhook_port: u16) -> Alertmanager {
        let bin = common::peer("prometheus-alertmanager").expect("prometheus-alertmanager is installed");
        let cfg = dir.join("am.yml");
        std::fs::write(
            &cfg,
            format!(
                "route:\n  receiver: bench\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 10ms\n  repeat_interval: 1h\nreceivers:\n- name: bench\n  webhook_configs:\n  - url: http://127.0.0.1:{webhook_port}/\n    send_resolved: true\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let ready = common::wait_for(Duration::from_secs(30), || {
            let url = format!("http://127.0.0.1:{port}/-/ready");
            common::client().get(url).send().ok().filter(|r| r.status().is_success())
        });
        assert!(ready.is_some(), "alertmanager did not start");
        Alertmanager { child, port }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let crossings = env("BENCH_CROSSINGS", 20);
    let interval_s = env("BENCH_INTERVAL_S", 15);
    let via_alertmanager = std::env::var("BENCH_VIA").is_ok_and(|v| v == "alertmanager");
    pin_self(CLIENT_CPU);
    let mut table = Vec::new();
    for (name, bin) in workload::systems("Prometheus 2.42") {
        let receiver = common::start_capture(0);
        let port = receiver.port;
        // the requests that arrived from index `from` on, with their arrival
        let since = |from: usize| -> Vec<(Instant, String)> {
            let arrived = receiver.arrived.lock().unwrap().clone();
            let bodies = receiver.bodies.lock().unwrap().clone();
            arrived.into_iter().zip(bodies).skip(from).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        // the server sends to the receiver, or to an Alertmanager that sends to it
        let alertmanager = via_alertmanager.then(|| Alertmanager::start(dir.path(), port));
        let target = alertmanager.as_ref().map_or(port, |am| am.port);
        std::fs::write(
            dir.path().join("alerts.yml"),
            "groups:\n- name: hot\n  rules:\n  - alert: Hot\n    expr: temperature > 90\n",
        )
        .unwrap();
        let cfg = dir.path().join("bench.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  evaluation_interval: {interval_s}s\nrule_files:\n  - alerts.yml\nalerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let args = [
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={addr}"),
            "--web.enable-remote-write-receiver".to_string(),
        ];
        let server = start_pinned(&bin, &args, dir.path(), &addr, "/-/ready", name);
        let http = common::client();
        let write = |value: f64| {
            let s =
                common::series(&[("__name__", "temperature"), ("room", "a")], &[(common::now_ms(), value)]);
            let body = promflow_remote::encode(&promflow_remote::WriteRequest {
                timeseries: vec![s],
                metadata: vec![],
            });
            workload::post_write(&http, &server.base, body);
        };
        let limit = Duration::from_secs(3 * interval_s as u64 + 10);
        write(20.0);
        std::thread::sleep(Duration::from_secs(2));
        let mut latencies = Vec::new();
        for k in 0..crossings {
            // crossings land at spread-out points of the evaluation cycle (a fixed sequence),
            // not always just after the evaluation that resolved the previous one
            std::thread::sleep(Duration::from_millis((k as u64 * 7_919) % (interval_s as u64 * 1_000)));
            let before = receiver.bodies.lock().unwrap().len();
            let crossed_at = common::now_ms();
            write(95.0);
            let sent = Instant::now();
            let arrival = common::wait_for(limit, || {
                since(before)
                    .into_iter()
                    .find(|(_, b)| {
                        alerts_in(b).iter().any(|&(firing, starts)| firing && starts >= crossed_at - 1_000)
                    })
                    .map(|(at, _)| at)
            });
            let arrival = arrival.unwrap_or_else(|| panic!("{name}: crossing {k} never arrived"));
            latencies.push((arrival - sent).as_secs_f64() * 1000.0);
            // back under the threshold; the next crossing waits for the resolved alert
            let before = receiver.bodies.lock().unwrap().len();
            write(20.0);
            let resolved = common::wait_for(limit, || {
                since(before).iter().any(|(_, b)| alerts_in(b).iter().any(|a| !a.0)).then_some(())
            });
            assert!(resolved.is_some(), "{name}: crossing {k} was never resolved");
            std::thread::sleep(Duration::from_millis(500));
        }
        latencies.sort_by(f64::total_cmp);
        eprintln!("{name}: {latencies:?}");
        table.push((
            name,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
        ));
        drop(server);
        drop(alertmanager);
    }
    let via = if via_alertmanager { ", through Alertmanager" } else { "" };
    println!(
        "{crossings} crossings of `temperature > 90` (`for: 0s`), evaluation interval {interval_s} s{via}\n"
    );
    println!("| system | p50, ms | p99, ms | max, ms |");
    println!("|---|---|---|---|");
    for (name, p50, p99, max) in &table {
        println!("| {name} | {p50:.1} | {p99:.1} | {max:.1} |");
    }
    if table.len() == 2 {
        println!("\npromflow / Prometheus p99: {:.4}×", table[0].2 / table[1].2);
    }
}
