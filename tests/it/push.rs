//! The Pushgateway API with Python's `prometheus_client` (PyPI) as the pushing job: pushed
//! groups are queryable at once and stay current, `pushadd` keeps the group's other
//! families, a push replaces them (the replaced series go stale), a delete removes the group.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs a Python snippet with `prometheus_client` against `url`; `None` when the module is
/// missing outside CI.
fn python(url: &str, code: &str) -> Option<()> {
    if !python_has("prometheus_client") {
        return None;
    }
    let script = format!(
        "from prometheus_client import CollectorRegistry, Gauge, Counter, push_to_gateway, pushadd_to_gateway, delete_from_gateway\nurl = {url:?}\n{code}"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    Some(())
}

fn value(s: &Server, q: &str) -> Option<f64> {
    let (_, v) = s.get_json(&format!(
        "/api/v1/query?query={}",
        form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
    ));
    result(&v).first().and_then(|r| r["value"][1].as_str()?.parse().ok())
}

#[test]
fn a_batch_job_pushes_with_prometheus_client_and_its_group_stays_current_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let promflow =
        start_promflow(dir.path(), "global: {scrape_interval: 1s}\n", &["--web.enable-pushgateway"]);
    let url = promflow.base.clone();
    // `host/1` holds a slash: the client writes it base64url-encoded in the path
    let first = "reg = CollectorRegistry()\ng = Gauge('job_last_success_unixtime', 'Last success', registry=reg)\ng.set(1234.5)\nc = Counter('rows_processed', 'Rows', ['table'], registry=reg)\nc.labels('a').inc(7)\npush_to_gateway(url, job='batch', grouping_key={'instance': 'host/1'}, registry=reg)\n";
    if python(&url, first).is_none() {
        return;
    }
    let sel = "{job=\"batch\",instance=\"host/1\"}";
    assert_eq!(value(&promflow, &format!("job_last_success_unixtime{sel}")), Some(1234.5));
    assert_eq!(value(&promflow, "rows_processed_total{table=\"a\",job=\"batch\"}"), Some(7.0));
    let pushed_at = value(&promflow, &format!("push_time_seconds{sel}")).unwrap();
    assert!((pushed_at - now_ms() as f64 / 1000.0).abs() < 30.0, "{pushed_at}");
    assert_eq!(value(&promflow, &format!("push_failure_time_seconds{sel}")), Some(0.0));

    // the group is ingested again at every scrape interval, as a scraped Pushgateway's is
    let again = wait_for(Duration::from_secs(10), || {
        let n = value(&promflow, &format!("count_over_time(job_last_success_unixtime{sel}[1m])"))?;
        (n >= 3.0).then_some(())
    });
    assert!(again.is_some(), "the pushed value is appended every second");

    // pushadd (POST) replaces only the family it pushes
    python(&url, "reg = CollectorRegistry()\nGauge('batch_size', 'Size', registry=reg).set(3)\npushadd_to_gateway(url, job='batch', grouping_key={'instance': 'host/1'}, registry=reg)\n");
    assert_eq!(value(&promflow, &format!("batch_size{sel}")), Some(3.0));
    assert_eq!(value(&promflow, &format!("job_last_success_unixtime{sel}")), Some(1234.5));
    // push (PUT) replaces the group: the families it lacks go stale at once
    python(&url, "reg = CollectorRegistry()\nGauge('job_last_success_unixtime', 'Last success', registry=reg).set(99)\npush_to_gateway(url, job='batch', grouping_key={'instance': 'host/1'}, registry=reg)\n");
    assert_eq!(value(&promflow, &format!("job_last_success_unixtime{sel}")), Some(99.0));
    assert_eq!(value(&promflow, &format!("batch_size{sel}")), None);
    assert_eq!(value(&promflow, "rows_processed_total"), None);
    // another group of the same job is its own
    python(&url, "reg = CollectorRegistry()\nGauge('job_last_success_unixtime', 'Last success', registry=reg).set(5)\npush_to_gateway(url, job='batch', registry=reg)\n");
    assert_eq!(value(&promflow, "count(job_last_success_unixtime{job=\"batch\"})"), Some(2.0));
    // delete removes one group
    python(&url, "delete_from_gateway(url, job='batch', grouping_key={'instance': 'host/1'})\n");
    assert_eq!(value(&promflow, &format!("job_last_success_unixtime{sel}")), None);
    assert_eq!(value(&promflow, "job_last_success_unixtime{job=\"batch\"}"), Some(5.0));

    // bad input: a clear 400, and the group keeps its metrics (its failure time is noted)
    let bad = client().put(promflow.url("/metrics/job/batch")).body("x{ 1\n").send().unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().unwrap().contains("line 1"));
    let stamped = client().put(promflow.url("/metrics/job/batch")).body("x 1 1000\n").send().unwrap();
    assert_eq!(stamped.status().as_u16(), 400);
    let nojob = client().put(promflow.url("/metrics/instance/x")).body("x 1\n").send().unwrap();
    assert_eq!(nojob.status().as_u16(), 400);
    assert_eq!(value(&promflow, "job_last_success_unixtime{job=\"batch\"}"), Some(5.0));
    assert!(value(&promflow, "push_failure_time_seconds{job=\"batch\"}").unwrap() > 0.0);
}

#[test]
fn the_pushgateway_api_is_off_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let promflow = start_promflow(dir.path(), "", &[]);
    let r = client().put(promflow.url("/metrics/job/batch")).body("x 1\n").send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().unwrap().contains("--web.enable-pushgateway"));
    // the server's own metrics are where they were
    assert_eq!(promflow.get_text("/metrics").0, 200);
}
