//! Remote read: Prometheus 2.42 with promflow as its `remote_read` storage answers from
//! promflow's samples what promflow answers itself; a direct request gets every sample with
//! the external labels, and the sample limit refuses a larger answer.

mod common;

use std::time::Duration;

use common::*;
use promflow_remote::read::{LabelMatcher, MatcherType, Query, ReadRequest, ReadResponse};

const STEP: i64 = 15_000;

/// Three series `rr{i}` of 40 samples at 15 s: counters growing at different rates.
fn write(promflow: &Server, from: i64) {
    let ts = (0..3)
        .map(|i| {
            let points: Vec<(i64, f64)> =
                (0..40).map(|j| (from + j * STEP, (j * (i + 1)) as f64 * 1.5)).collect();
            series(&[("__name__", "rr"), ("i", &i.to_string())], &points)
        })
        .collect();
    let (code, body) = remote_write(promflow, ts);
    assert_eq!(code, 204, "{body}");
}

fn read(promflow: &Server, req: &ReadRequest) -> (u16, Vec<u8>) {
    let body = req.encode_body();
    let r = client()
        .post(promflow.url("/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

fn query(from: i64, to: i64, matchers: &[(MatcherType, &str, &str)]) -> Query {
    Query {
        start_timestamp_ms: from,
        end_timestamp_ms: to,
        matchers: matchers
            .iter()
            .map(|(t, n, v)| LabelMatcher { r#type: *t as i32, name: n.to_string(), value: v.to_string() })
            .collect(),
        hints: None,
    }
}

#[test]
fn prometheus_reads_promflow_as_remote_storage() {
    let dir = tempfile::tempdir().unwrap();
    let config = "global:\n  external_labels: {site: pf}\n";
    let promflow = start_promflow(dir.path(), config, &["--web.enable-remote-write-receiver"]);
    let from = (now_ms() - 20 * 60_000) / STEP * STEP;
    write(&promflow, from);
    let prom_config = format!(
        "global: {{scrape_interval: 1h}}\nremote_read:\n  - url: {}\n    read_recent: true\n",
        promflow.url("/api/v1/read")
    );
    let Some(prom) = start_prometheus(dir.path(), &prom_config) else { return };

    // the same range query, answered by promflow from its storage and by Prometheus from
    // promflow's remote read
    // evaluation times between samples: a window's start never falls on a sample (Prometheus
    // 2.42 includes a sample there, promflow as Prometheus 3 does not)
    let (start, end) = (from as f64 / 1000.0 + 127.0, (from + 39 * STEP) as f64 / 1000.0);
    for q in ["sum by (i) (rate(rr[2m]))", "max_over_time(rr[5m]) - min_over_time(rr[5m])", "count(rr)"] {
        let path = format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=30",
            form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        );
        let (code, ours) = promflow.get_json(&path);
        assert_eq!(code, 200, "{ours}");
        let (code, theirs) = prom.get_json(&path);
        assert_eq!(code, 200, "{theirs}");
        // Prometheus's series carry the external label promflow's remote read adds
        let mut theirs_c = canonical(&theirs);
        theirs_c = theirs_c
            .into_iter()
            .map(|(k, v)| {
                (
                    k.replace(",\"site\":\"pf\"", "")
                        .replace("\"site\":\"pf\",", "")
                        .replace("{\"site\":\"pf\"}", "{}"),
                    v,
                )
            })
            .collect();
        assert!(!canonical(&ours).is_empty(), "{q}: {ours}");
        same(&canonical(&ours), &theirs_c).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    // a matcher on the external label is the server's: it selects the series
    let (_, v) = prom.get_json("/api/v1/query?query=count(count_over_time(rr%7Bsite%3D%22pf%22%7D%5B1h%5D))");
    assert_eq!(result(&v)[0]["value"][1], "3", "{v}");
}

#[test]
fn a_remote_read_returns_every_sample_with_the_external_labels_within_the_sample_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = "global:\n  external_labels: {site: pf}\n";
    let flags = ["--web.enable-remote-write-receiver", "--storage.remote.read-sample-limit=100"];
    let promflow = start_promflow(dir.path(), config, &flags);
    let from = (now_ms() - 20 * 60_000) / STEP * STEP;
    write(&promflow, from);

    let req = ReadRequest {
        queries: vec![
            query(
                from,
                from + 9 * STEP,
                &[(MatcherType::Eq, "__name__", "rr"), (MatcherType::Re, "i", "0|2")],
            ),
            query(
                from,
                from + 99 * STEP,
                &[
                    (MatcherType::Eq, "site", "pf"),
                    (MatcherType::Neq, "i", "1"),
                    (MatcherType::Eq, "__name__", "rr"),
                ],
            ),
            query(from, from + 99 * STEP, &[(MatcherType::Eq, "site", "elsewhere")]),
        ],
        accepted_response_types: vec![0],
    };
    let (code, body) = read(&promflow, &req);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let resp = ReadResponse::decode_body(&body).unwrap();
    assert_eq!(resp.results.len(), 3);
    let first = &resp.results[0].timeseries;
    assert_eq!(first.len(), 2);
    let labels: Vec<(&str, &str)> =
        first[1].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    assert_eq!(labels, [("__name__", "rr"), ("i", "2"), ("site", "pf")]);
    assert_eq!(first[1].samples.len(), 10, "both ends of the range are inclusive");
    assert_eq!(first[1].samples[9].value, 27.0 * 1.5);
    assert_eq!(resp.results[1].timeseries.len(), 2, "site=\"pf\" is the server's own label");
    assert_eq!(resp.results[1].timeseries[0].samples.len(), 40);
    assert!(resp.results[2].timeseries.is_empty(), "no series has another site");

    // three series of 40 samples are more than the limit of 100
    let all = ReadRequest {
        queries: vec![query(from, from + 99 * STEP, &[(MatcherType::Eq, "__name__", "rr")])],
        accepted_response_types: vec![],
    };
    let (code, body) = read(&promflow, &all);
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("sample limit"), "{}", String::from_utf8_lossy(&body));
    // garbage is a clear error, and the server goes on
    let r = client().post(promflow.url("/api/v1/read")).body("not snappy").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let ok = wait_for(Duration::from_secs(5), || (read(&promflow, &req).0 == 200).then_some(()));
    assert!(ok.is_some());
}
