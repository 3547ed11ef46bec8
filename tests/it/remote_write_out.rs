//! The remote-write sender against real receivers: Prometheus 2.42 (with its receiver on)
//! stopped for a minute, promflow killed with SIGKILL meanwhile, and every sample still
//! arrives; a batch the receiver refuses for good is dropped and counted; VictoriaMetrics
//! takes the same protocol.

use crate::common;

use std::time::Duration;

use common::*;

const SERIES: usize = 10;

/// `samples` one-second samples per series of `rw_out{i}` from `from`, and one of `dropme`.
fn write_batch(server: &Server, from: i64, samples: usize, value: f64) {
    let mut ts: Vec<_> = (0..SERIES)
        .map(|i| {
            let points: Vec<(i64, f64)> =
                (0..samples).map(|j| (from + j as i64 * 1000, value + j as f64)).collect();
            series(&[("__name__", "rw_out"), ("i", &i.to_string())], &points)
        })
        .collect();
    ts.push(series(&[("__name__", "dropme")], &[(from, 1.0)]));
    let (code, body) = remote_write(server, ts);
    assert_eq!(code, 204, "{body}");
}

/// A metric's value for the queue in promflow's /metrics (summed over its lines).
fn queue_metric(server: &Server, name: &str) -> f64 {
    let (_, text) = server.get_text("/metrics");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("remote_name=\"prom\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per series `i`: (sample count, sum) that Prometheus holds for `rw_out{site="pf"}`.
fn received(prom: &Server) -> Vec<(String, f64)> {
    let q = "count_over_time(rw_out{site=\"pf\"}[1h])";
    let url = format!("/api/v1/query?query={}&time={}", urlencode(q), now_ms() as f64 / 1000.0);
    let Ok(r) = client().get(prom.url(&url)).send() else { return Vec::new() };
    let v: serde_json::Value = serde_json::from_str(&r.text().unwrap_or_default()).unwrap_or_default();
    let mut out: Vec<(String, f64)> = v["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let n = s["value"][1].as_str().unwrap_or("0").parse().unwrap_or(0.0);
                    (s["metric"]["i"].as_str().unwrap_or("").to_string(), n)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Waits until Prometheus holds `want` samples of every series.
fn wait_received(prom: &Server, want: f64, limit: Duration) -> Vec<(String, f64)> {
    let mut last = Vec::new();
    let ok = wait_for(limit, || {
        last = received(prom);
        (last.len() == SERIES && last.iter().all(|(_, n)| *n == want)).then_some(())
    });
    assert!(ok.is_some(), "Prometheus holds {last:?}, not {want} samples of each of {SERIES} series");
    last
}

fn promflow_config(prom_port: u16) -> String {
    // promflow takes samples up to an hour out of order; Prometheus here takes none
    format!(
        "global:\n  external_labels: {{site: pf}}\nstorage:\n  tsdb: {{out_of_order_time_window: 1h}}\nremote_write:\n  - url: http://127.0.0.1:{prom_port}/api/v1/write\n    name: prom\n    queue_config: {{batch_send_deadline: 200ms, min_backoff: 100ms, max_backoff: 2s}}\n    write_relabel_configs:\n      - {{source_labels: [__name__], regex: dropme, action: drop}}\n"
    )
}

#[test]
fn every_sample_reaches_prometheus_through_a_minute_long_outage_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let prom_config = "global: {scrape_interval: 1h}\n";
    let Some(mut prom) = start_prometheus_on(dir.path(), prom_config, prom_port) else { return };
    let config = promflow_config(prom_port);
    let flags = ["--web.enable-remote-write-receiver"];
    let mut promflow = start_promflow(dir.path(), &config, &flags);
    let base = now_ms() - 10 * 60 * 1000;

    // the queue follows the WAL: what is written is sent, with the external labels, without
    // the series the relabelling drops
    write_batch(&promflow, base, 20, 100.0);
    wait_received(&prom, 20.0, Duration::from_secs(30));
    let (_, dropped) = prom.get_json("/api/v1/query?query=dropme");
    assert!(result(&dropped).is_empty(), "{dropped}");
    assert!(queue_metric(&promflow, "prometheus_remote_storage_samples_dropped_total") >= 1.0);
    assert!(queue_metric(&promflow, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds") > 0.0);

    // the receiver goes away for a minute; samples keep coming, and promflow is killed and
    // restarted meanwhile
    let outage = std::time::Instant::now();
    prom.signal("TERM");
    let _ = prom.child.wait();
    write_batch(&promflow, base + 20_000, 20, 200.0);
    let retried = wait_for(Duration::from_secs(20), || {
        (queue_metric(&promflow, "prometheus_remote_storage_samples_retried_total") > 0.0).then_some(())
    });
    assert!(retried.is_some(), "the queue retries while the receiver is down");
    assert!(queue_metric(&promflow, "prometheus_remote_storage_samples_pending") > 0.0);
    promflow.kill9();
    let promflow = start_promflow(dir.path(), "", &flags);
    write_batch(&promflow, base + 40_000, 20, 300.0);
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));

    // back: every sample of the three batches arrives, once
    let Some(prom) = start_prometheus_on(dir.path(), prom_config, prom_port) else { return };
    wait_received(&prom, 60.0, Duration::from_secs(60));
    let (_, sum) = prom.get_json(&format!(
        "/api/v1/query?query=sum(sum_over_time(rw_out[1h]))&time={}",
        now_ms() as f64 / 1000.0
    ));
    // per series: 20 × (100 + 200 + 300) + 3 × (0 + … + 19)
    let want = SERIES as f64 * (20.0 * 600.0 + 3.0 * 190.0);
    assert_eq!(result(&sum)[0]["value"][1].as_str(), Some(want.to_string().as_str()), "{sum}");

    // a batch the receiver refuses for good (a sample out of order for it) is dropped and
    // counted, and the queue goes on
    let now = now_ms();
    for t in [now, now - 60_000] {
        let (code, body) = remote_write(&promflow, vec![series(&[("__name__", "rw_ooo")], &[(t, 1.0)])]);
        assert_eq!(code, 204, "{body}");
        // the older sample goes in a later request (in one request Prometheus drops it quietly)
        let there = wait_for(Duration::from_secs(30), || {
            let (_, v) = prom.get_json("/api/v1/query?query=rw_ooo");
            (!result(&v).is_empty()).then_some(())
        });
        assert!(there.is_some());
    }
    let failed = wait_for(Duration::from_secs(30), || {
        (queue_metric(&promflow, "prometheus_remote_storage_samples_failed_total") >= 1.0).then_some(())
    });
    assert!(failed.is_some(), "the refused sample is counted as failed:\n{}", promflow.logs());
    let (code, body) = remote_write(&promflow, vec![series(&[("__name__", "rw_after")], &[(now_ms(), 7.0)])]);
    assert_eq!(code, 204, "{body}");
    let after = wait_for(Duration::from_secs(30), || {
        let (_, v) = prom.get_json("/api/v1/query?query=rw_after");
        (!result(&v).is_empty()).then_some(())
    });
    assert!(after.is_some(), "samples after a dropped batch still arrive");
}

#[test]
fn victoria_metrics_takes_promflows_remote_write() {
    let Some(bin) = peer("victoria-metrics") else { return };
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let log = std::fs::File::create(dir.path().join("vm.log")).unwrap();
    let mut vm = std::process::Command::new(bin)
        .arg(format!("-storageDataPath={}", dir.path().join("vm-data").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
        .arg("-retentionPeriod=100y")
        .arg("-search.latencyOffset=0s")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let vm_url = format!("http://127.0.0.1:{vm_port}");
    let up = wait_for(Duration::from_secs(30), || {
        client().get(format!("{vm_url}/health")).send().ok().filter(|r| r.status().is_success())
    });
    assert!(up.is_some(), "VictoriaMetrics did not start");
    let config = format!(
        "global:\n  external_labels: {{site: pf}}\nremote_write:\n  - url: {vm_url}/api/v1/write\n    name: prom\n    queue_config: {{batch_send_deadline: 200ms}}\n"
    );
    let promflow = start_promflow(dir.path(), &config, &["--web.enable-remote-write-receiver"]);
    let base = now_ms() - 60_000;
    write_batch(&promflow, base, 20, 100.0);
    let mut last = String::new();
    let got = wait_for(Duration::from_secs(30), || {
        let _ = client().get(format!("{vm_url}/internal/force_flush")).send();
        last = client()
            .get(format!("{vm_url}/api/v1/export?match[]={}", urlencode("rw_out{site=\"pf\"}")))
            .send()
            .ok()?
            .text()
            .ok()?;
        let lines: Vec<serde_json::Value> =
            last.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let complete =
            lines.len() == SERIES && lines.iter().all(|l| l["values"].as_array().map(Vec::len) == Some(20));
        complete.then_some(lines)
    });
    let _ = vm.kill();
    let _ = vm.wait();
    let lines = got.unwrap_or_else(|| panic!("VictoriaMetrics holds:\n{last}"));
    let first = &lines.iter().find(|l| l["metric"]["i"] == "0").unwrap();
    assert_eq!(first["timestamps"][0], base);
    assert_eq!(first["values"][19], 119.0);
    assert_eq!(queue_metric(&promflow, "prometheus_remote_storage_samples_failed_total"), 0.0);
}

#[test]
fn a_queue_sends_remote_write_2_0_and_falls_back_to_1_0_for_a_receiver_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(prom) = start_prometheus(dir.path(), "global: {scrape_interval: 1h}\n") else { return };
    let receiver_dir = dir.path().join("receiver");
    std::fs::create_dir_all(&receiver_dir).unwrap();
    let receiver = start_promflow(&receiver_dir, "", &["--web.enable-remote-write-receiver"]);
    let endpoint = |url: String, name: &str| {
        format!("  - url: {url}\n    name: {name}\n    protobuf_message: io.prometheus.write.v2.Request\n    queue_config: {{batch_send_deadline: 200ms}}\n")
    };
    let config = format!(
        "global:\n  external_labels: {{site: pf}}\nremote_write:\n{}{}",
        endpoint(receiver.url("/api/v1/write"), "promflow"),
        endpoint(prom.url("/api/v1/write"), "prom")
    );
    let sender = start_promflow(dir.path(), &config, &["--web.enable-remote-write-receiver"]);
    write_batch(&sender, now_ms() - 60_000, 20, 100.0);
    // promflow takes 2.0; Prometheus 2.42 answers a 2.0 body as an empty 1.0 request, so the
    // queue sends 1.0 to it
    for server in [&receiver, &prom] {
        let got = wait_for(Duration::from_secs(30), || {
            let (_, v) =
                server.get_json("/api/v1/query?query=count_over_time(rw_out%7Bsite%3D%22pf%22%7D%5B10m%5D)");
            let r = result(&v);
            (r.len() == SERIES && r.iter().all(|s| s["value"][1] == "20")).then_some(())
        });
        assert!(got.is_some(), "{} holds every sample", server.base);
    }
    let (_, text) = receiver.get_text("/metrics");
    let requests = |message: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("promflow_remote_write_received_requests_total") && l.contains(message))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(requests("io.prometheus.write.v2.Request") >= 1.0, "{text}");
    assert_eq!(requests("message=\"prometheus.WriteRequest\""), 0.0);
    assert!(sender.logs().contains("does not know 2.0"), "the fallback is logged");
}

/// The remote-write requests a capture took, decoded.
fn requests(capture: &Capture) -> Vec<promflow_remote::WriteRequest> {
    let raw = capture.raw.lock().unwrap();
    raw.iter()
        .map(|b| promflow_remote::WriteRequest::decode_body(b).expect("a remote-write 1.0 body"))
        .collect()
}

#[test]
fn queues_send_the_scrape_targets_metric_metadata() {
    let (kept, quiet) = (start_capture(0), start_capture(0));
    let (port, quiet_port) = (kept.port, quiet.port);
    let dir = tempfile::tempdir().unwrap();
    let self_port = free_port();
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: self\n    static_configs: [{{targets: ['127.0.0.1:{self_port}']}}]\nremote_write:\n  - url: http://127.0.0.1:{port}/write\n    name: prom\n    metadata_config: {{send_interval: 1s, max_samples_per_send: 40}}\n  - url: http://127.0.0.1:{quiet_port}/write\n    name: quiet\n    metadata_config: {{send: false}}\n"
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let s = start_promflow_with(dir.path(), &cfg, self_port, &[]);
    let families = |reqs: &[promflow_remote::WriteRequest]| -> Vec<promflow_remote::MetricMetadata> {
        reqs.iter().flat_map(|r| r.metadata.clone()).collect()
    };
    let found = wait_for(Duration::from_secs(20), || {
        families(&requests(&kept)).into_iter().find(|m| m.metric_family_name == "promflow_scrapes_total")
    });
    let m = found.expect("promflow's own scrape metadata is sent");
    assert_eq!(m.r#type, 1, "a counter");
    assert_eq!(m.help, "Scrapes attempted.");
    // metadata travels in requests of its own, each within max_samples_per_send; a second
    // round comes a send_interval later
    let rounds = wait_for(Duration::from_secs(10), || {
        let reqs = requests(&kept);
        let with: Vec<&promflow_remote::WriteRequest> =
            reqs.iter().filter(|r| !r.metadata.is_empty()).collect();
        assert!(with.iter().all(|r| r.timeseries.is_empty() && r.metadata.len() <= 40));
        let n = families(&reqs).iter().filter(|m| m.metric_family_name == "promflow_scrapes_total").count();
        (n >= 2).then_some(n)
    });
    assert!(rounds.is_some(), "metadata is sent again every send_interval");
    assert!(queue_metric(&s, "prometheus_remote_storage_metadata_total") > 0.0);
    // the samples still go, to both endpoints; the one with send: false gets no metadata
    let samples = wait_for(Duration::from_secs(10), || {
        requests(&quiet).iter().any(|r| !r.timeseries.is_empty()).then_some(())
    });
    assert!(samples.is_some());
    assert!(families(&requests(&quiet)).is_empty(), "send: false sends no metadata");
}

#[test]
fn a_reloaded_endpoint_goes_on_from_its_place_and_an_unchanged_one_keeps_running() {
    let (at_a, at_b, at_c) = (start_capture(0), start_capture(0), start_capture(0));
    let (a, b, c) = (at_a.port, at_b.port, at_c.port);
    let dir = tempfile::tempdir().unwrap();
    let config = |moved: u16| {
        format!(
            "remote_write:\n  - url: http://127.0.0.1:{moved}/write\n    name: moving\n    metadata_config: {{send: false}}\n    queue_config: {{batch_send_deadline: 100ms}}\n  - url: http://127.0.0.1:{c}/write\n    name: steady\n    metadata_config: {{send: false}}\n    queue_config: {{batch_send_deadline: 100ms}}\n"
        )
    };
    let s = start_promflow(dir.path(), &config(a), &["--web.enable-remote-write-receiver"]);
    let samples = |kept: &Capture| -> Vec<(String, i64)> {
        let reqs = requests(kept);
        let mut out: Vec<(String, i64)> = reqs
            .iter()
            .flat_map(|r| r.timeseries.iter())
            .filter(|t| t.labels.iter().any(|l| l.value == "rw_out"))
            .flat_map(|t| {
                let i = t.labels.iter().find(|l| l.name == "i").map(|l| l.value.clone()).unwrap_or_default();
                t.samples.iter().map(move |x| (i.clone(), x.timestamp))
            })
            .collect();
        out.sort();
        out
    };
    let from = now_ms() - 60_000;
    write_batch(&s, from, 5, 0.0);
    let sent = wait_for(Duration::from_secs(20), || (samples(&at_a).len() == 5 * SERIES).then_some(()));
    assert!(sent.is_some(), "the first endpoint gets the first samples: {}", samples(&at_a).len());
    assert!(
        wait_for(Duration::from_secs(10), || (samples(&at_c).len() == 5 * SERIES).then_some(())).is_some()
    );

    // the endpoint moves to another URL under the same name: the new queue starts from the
    // old one's place, so the new receiver gets what follows and nothing twice
    std::fs::write(dir.path().join("prometheus.yml"), config(b)).unwrap();
    s.signal("HUP");
    let reloaded = wait_for(Duration::from_secs(10), || {
        let (_, v) = s.get_json("/api/v1/status/config");
        v["data"]["yaml"].as_str().is_some_and(|y| y.contains(&format!("127.0.0.1:{b}"))).then_some(())
    });
    assert!(reloaded.is_some(), "the reload took");
    write_batch(&s, from + 5_000, 3, 10.0);
    let moved = wait_for(Duration::from_secs(20), || (samples(&at_b).len() == 3 * SERIES).then_some(()));
    assert!(moved.is_some(), "the moved endpoint gets the new samples: {:?}", samples(&at_b));
    assert!(samples(&at_b).iter().all(|(_, t)| *t >= from + 5_000), "nothing sent twice");
    assert_eq!(samples(&at_a).len(), 5 * SERIES, "the old URL gets nothing more");
    let steady = wait_for(Duration::from_secs(20), || (samples(&at_c).len() == 8 * SERIES).then_some(()));
    assert!(
        steady.is_some(),
        "the unchanged endpoint keeps sending, each sample once: {}",
        samples(&at_c).len()
    );
}

/// With `send_native_histograms` and `send_exemplars`, a queue sends the histograms and
/// exemplars it stored to Prometheus 2.42 (native histograms and exemplar storage on), which
/// answers the same `histogram_count`, `histogram_sum` and `query_exemplars`.
#[test]
fn native_histograms_and_exemplars_go_out_when_asked_for() {
    use promflow_remote::{BucketSpan, Exemplar, Histogram, Label};
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let flags = ["--enable-feature=native-histograms,exemplar-storage"];
    let Some(prom) = start_prometheus_with(dir.path(), "global: {}\n", prom_port, &flags) else { return };
    let config = format!(
        "remote_write:\n  - url: http://127.0.0.1:{prom_port}/api/v1/write\n    name: prom\n    send_native_histograms: true\n    send_exemplars: true\n    queue_config: {{batch_send_deadline: 200ms}}\n"
    );
    let pf = start_promflow(
        dir.path(),
        &config,
        &["--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage"],
    );
    let t = now_ms() - 30_000;
    let histogram = |k: i64| Histogram {
        count_int: Some(3 * k as u64),
        sum: 4.5 * k as f64,
        schema: 0,
        zero_threshold: 0.001,
        zero_count_int: Some(0),
        positive_spans: vec![BucketSpan { offset: 1, length: 2 }],
        positive_deltas: vec![k, k],
        timestamp: t + k * 1000,
        ..Histogram::default()
    };
    let mut hs = series(&[("__name__", "rpc_seconds"), ("site", "pf")], &[]);
    hs.histograms = (1..=5).map(histogram).collect();
    let mut counter = series(&[("__name__", "requests_total"), ("site", "pf")], &[(t, 1.0), (t + 1000, 2.0)]);
    counter.exemplars = vec![Exemplar {
        labels: vec![Label { name: "trace_id".into(), value: "feedface".into() }],
        value: 1.0,
        timestamp: t + 1000,
    }];
    let (code, body) = remote_write(&pf, vec![hs, counter]);
    assert_eq!(code, 204, "{body}");

    let at = (t + 5000) as f64 / 1000.0;
    let value = |s: &Server, q: &str| -> Option<String> {
        let (_, v) = s.get_json(&format!("/api/v1/query?query={}&time={at}", urlencode(q)));
        v["data"]["result"][0]["value"][1].as_str().map(str::to_string)
    };
    let arrived = wait_for(Duration::from_secs(30), || value(&prom, "histogram_count(rpc_seconds)"));
    assert_eq!(arrived.as_deref(), Some("15"), "Prometheus has the histograms");
    for q in [
        "histogram_count(rpc_seconds)",
        "histogram_sum(rpc_seconds)",
        "histogram_count(rate(rpc_seconds[4s]))",
    ] {
        assert_eq!(value(&pf, q), value(&prom, q), "{q}");
    }
    let exemplars = wait_for(Duration::from_secs(30), || {
        let (_, v) = prom.get_json("/api/v1/query_exemplars?query=requests_total");
        let trace = v["data"][0]["exemplars"][0]["labels"]["trace_id"].as_str()?.to_string();
        Some(trace)
    });
    assert_eq!(exemplars.as_deref(), Some("feedface"));
}
