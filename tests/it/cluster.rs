//! A cluster of promflow processes on 127.0.0.1 (`--cluster.peer`, `--cluster.index`):
//! queries on any node are answered from every node's storage, scrape targets are divided
//! among the nodes, and rules read the whole cluster. The oracle is one process that holds
//! all of the data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promflow_config::cluster_secret::{ClusterSecret, CLUSTER_AUTH_HEADER};
use promflow_remote::TimeSeries;

use crate::common::*;

/// The jobs, instances and status codes of the series written.
const JOBS: [&str; 3] = ["api", "web", "batch"];
const INSTANCES: usize = 4;
const CODES: [&str; 2] = ["200", "500"];

/// Starts `n` nodes of one cluster under `dir`, each with `config` and `extra` flags.
pub(crate) fn start_cluster(dir: &Path, n: usize, config: &str, extra: &[&str]) -> Vec<Server> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let cfg = dir.join("cluster.yml");
    std::fs::write(&cfg, config).unwrap();
    let mut nodes: Vec<Server> = (0..n)
        .map(|i| {
            let node_dir: PathBuf = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut flags: Vec<String> =
                ports.iter().map(|p| format!("--cluster.peer=127.0.0.1:{p}")).collect();
            flags.push(format!("--cluster.index={i}"));
            flags.extend(extra.iter().map(|f| f.to_string()));
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            spawn_promflow(&node_dir, &cfg, ports[i], &flags)
        })
        .collect();
    for node in &mut nodes {
        node.wait_ready("/-/ready");
    }
    nodes
}

/// Every 15 s over the half hour up to `end`: the workloads' sample times.
fn sample_times(end: i64) -> Vec<i64> {
    (0..=120).map(|i| end - 30 * 60_000 + i * 15_000).collect()
}

/// Half an hour of samples every 15 s up to `end`: a counter per job, instance and code, and
/// a gauge per instance.
fn workload(end: i64) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    let times = sample_times(end);
    for (j, job) in JOBS.iter().enumerate() {
        for i in 0..INSTANCES {
            let instance = format!("host-{i}:9100");
            for (c, code) in CODES.iter().enumerate() {
                let rate = (j * 7 + i * 3 + c * 11 + 1) as f64;
                let samples: Vec<(i64, f64)> =
                    times.iter().enumerate().map(|(k, &t)| (t, rate * k as f64 * 15.0)).collect();
                out.push(series(
                    &[
                        ("__name__", "http_requests_total"),
                        ("job", job),
                        ("instance", &instance),
                        ("code", code),
                    ],
                    &samples,
                ));
            }
            // no two series alike at any time: `topk` and `bottomk` have no ties to break
            let base = 20.0 + (j * 10 + i) as f64;
            let samples: Vec<(i64, f64)> =
                times.iter().enumerate().map(|(k, &t)| (t, base + (k % 9) as f64 * 0.25)).collect();
            out.push(series(&[("__name__", "temperature"), ("job", job), ("instance", &instance)], &samples));
        }
    }
    out
}

/// Three nodes, each sent a third of the series, answer a bank of instant and range queries
/// as one process sent all of them does, whichever node is asked; so do series lookups.
#[test]
fn three_nodes_answer_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3, "", &["--web.enable-remote-write-receiver"]);
    let single_dir = dir.path().join("single");
    std::fs::create_dir_all(&single_dir).unwrap();
    let single = start_promflow(&single_dir, "", &["--web.enable-remote-write-receiver"]);
    let end = now_ms() / 60_000 * 60_000 - 60_000;
    let all = workload(end);
    let mut shares: Vec<Vec<TimeSeries>> = vec![Vec::new(); nodes.len()];
    for (k, ts) in all.iter().enumerate() {
        shares[k % nodes.len()].push(ts.clone());
    }
    for (node, share) in nodes.iter().zip(shares) {
        assert_eq!(remote_write(node, share).0, 204);
    }
    assert_eq!(remote_write(&single, all).0, 204);
    let before: Vec<(f64, f64)> = nodes.iter().map(aggregations_evaluated).collect();
    answer_alike(&nodes, &single, &QUERIES, end);
    // every aggregation of the bank that can be was evaluated in parts on the nodes, none
    // over merged samples: with one copy of each series, each series counts in one part
    for (i, (node, (parts, merged))) in nodes.iter().zip(before).enumerate() {
        let (parts_after, merged_after) = aggregations_evaluated(node);
        assert_eq!(parts_after - parts, PUSHED_DOWN as f64, "node {i}: aggregations evaluated in parts");
        assert_eq!(merged_after, merged, "node {i}: aggregations evaluated over merged samples");
    }
    let lookup = format!(
        "/api/v1/series?match[]=http_requests_total&start={}&end={}",
        (end - 30 * 60_000) / 1000,
        end / 1000
    );
    let (_, want) = single.get_json(&lookup);
    assert_eq!(want["data"].as_array().map(Vec::len), Some(JOBS.len() * INSTANCES * CODES.len()));
    for node in &nodes {
        assert_eq!(node.get_json(&lookup).1["data"], want["data"]);
    }
    for lookup in
        ["/api/v1/labels", "/api/v1/label/instance/values", "/api/v1/label/job/values?match[]=temperature"]
    {
        let (_, want) = single.get_json(lookup);
        assert!(want["data"].as_array().is_some_and(|d| d.len() >= 3), "{lookup}: {want}");
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(node.get_json(lookup).1["data"], want["data"], "{lookup} on node {i}");
        }
    }
    // the head's counts and cardinalities are the whole cluster's
    for path in ["/api/v1/status/tsdb", "/api/v1/status/tsdb?limit=2"] {
        let (_, want) = single.get_json(path);
        assert!(want["data"]["headStats"]["numSeries"].as_u64().is_some_and(|n| n > 24), "{want}");
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(node.get_json(path).1, want, "{path} on node {i}");
        }
        assert_ne!(own(&nodes[0], path), want.to_string(), "{path}: one node holds every series");
    }
    // classic and native histograms too, and a wider bank over everything
    let histograms = histogram_workload(end);
    for (k, ts) in histograms.iter().enumerate() {
        assert_eq!(remote_write(&nodes[k % nodes.len()], vec![ts.clone()]).0, 204);
    }
    assert_eq!(remote_write(&single, histograms).0, 204);
    answer_alike(&nodes, &single, &WIDE_QUERIES, end);
    // SQL statements read every node too (the sums are of whole numbers and quarters: exact
    // in any order)
    for statement in [
        "SELECT job, count(*), sum(value), max(value) FROM http_requests_total GROUP BY job ORDER BY job",
        "SELECT job, instance, avg(value), min(ts) FROM temperature GROUP BY job, instance ORDER BY job, instance",
        "SELECT count(DISTINCT instance) FROM http_request_duration_seconds_bucket WHERE le = '+Inf'",
        "SHOW TABLES",
    ] {
        let (status, want) = single.post_form("/api/v1/sql", &[("query", statement)]);
        assert_eq!(status, 200, "{statement}: {want}");
        assert!(want["data"]["rows"].as_array().is_some_and(|r| !r.is_empty()), "{statement}: {want}");
        for (i, node) in nodes.iter().enumerate() {
            let (status, got) = node.post_form("/api/v1/sql", &[("query", statement)]);
            assert_eq!((status, &got["data"]), (200, &want["data"]), "{statement} on node {i}: {got}");
        }
    }
}

/// Half an hour of histograms every 15 s up to `end`, per job and instance: a classic one
/// (`http_request_duration_seconds`: cumulative buckets, sum and count) and a native one
/// (`rpc_duration_seconds`).
fn histogram_workload(end: i64) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    let times = sample_times(end);
    for (j, job) in JOBS.iter().enumerate() {
        for i in 0..INSTANCES {
            let instance = format!("host-{i}:9100");
            let per_step = (j * 5 + i + 1) as f64;
            let mut below = 0.0;
            for (b, le) in ["0.1", "0.5", "1", "+Inf"].iter().enumerate() {
                // each bucket takes a share of the observations that grows with `b` and `i`
                below += per_step * (b + 1 + i % 3) as f64;
                let counts: Vec<(i64, f64)> =
                    times.iter().enumerate().map(|(k, &t)| (t, below * k as f64)).collect();
                let name = "http_request_duration_seconds_bucket";
                out.push(series(
                    &[("__name__", name), ("job", job), ("instance", &instance), ("le", le)],
                    &counts,
                ));
            }
            let count: Vec<(i64, f64)> =
                times.iter().enumerate().map(|(k, &t)| (t, below * k as f64)).collect();
            let sum: Vec<(i64, f64)> =
                times.iter().enumerate().map(|(k, &t)| (t, 0.37 * below * k as f64)).collect();
            let labels =
                |name: &'static str| [("__name__", name), ("job", job), ("instance", instance.as_str())];
            out.push(series(&labels("http_request_duration_seconds_count"), &count));
            out.push(series(&labels("http_request_duration_seconds_sum"), &sum));
            out.push(histogram_series(
                &labels("rpc_duration_seconds"),
                times.iter().enumerate().map(|(k, &t)| (t, per_step * k as f64)),
            ));
        }
    }
    out
}

/// A wider bank: every aggregation, the range functions, set operators, label functions,
/// subqueries, `@` and `offset`, and classic and native histograms.
const WIDE_QUERIES: [&str; 72] = [
    "sum(rate(http_requests_total[5m])) by (job)",
    "sum by (job, code) (irate(http_requests_total[1m]))",
    "avg by (job) (temperature)",
    "avg(temperature)",
    "min by (job) (temperature)",
    "max without (instance) (temperature)",
    "group by (job) (temperature)",
    "count by (code) (http_requests_total > 500)",
    "sum by (job) (temperature > bool 25)",
    "stddev by (job) (temperature)",
    "stdvar(temperature)",
    "topk by (job) (1, rate(http_requests_total[5m]))",
    "bottomk(3, sum by (instance) (rate(http_requests_total[5m])))",
    "quantile by (job) (0.5, temperature)",
    "count(count by (instance) (http_requests_total))",
    "sum by (job) (sum by (job, instance) (rate(http_requests_total[5m])))",
    "max(sum by (instance) (http_requests_total))",
    "sum(http_requests_total) / count(http_requests_total)",
    "sum by (job) (rate(http_requests_total[5m])) / on (job) group_left count by (job) (temperature)",
    "http_requests_total and on (instance) (temperature > 25)",
    "temperature unless on (job) (temperature > 30)",
    "http_requests_total{code=\"500\"} or temperature",
    "sum by (job) (http_requests_total{job=~\"a.*|w.*\"})",
    "count({__name__=~\"http_requests_total|temperature\"})",
    "sum by (__name__) ({__name__=~\".+\", job=\"api\"})",
    "label_replace(sum by (job) (temperature), \"team\", \"t-$1\", \"job\", \"(.*)\")",
    "label_join(temperature, \"where\", \"/\", \"job\", \"instance\")",
    "sort_desc(sum by (job) (temperature))",
    "increase(http_requests_total[10m])",
    "delta(temperature[5m])",
    "idelta(temperature[5m])",
    "deriv(temperature[10m])",
    "predict_linear(temperature[10m], 600)",
    "changes(temperature[10m])",
    "resets(http_requests_total[10m])",
    "quantile_over_time(0.9, temperature[10m])",
    "stddev_over_time(temperature[10m])",
    "last_over_time(temperature[5m])",
    "present_over_time(temperature[5m])",
    "count_over_time(http_requests_total[5m])",
    "sum_over_time(temperature[5m])",
    "min_over_time(temperature[10m])",
    "absent_over_time(nonexistent[5m])",
    "absent(temperature{job=\"api\"})",
    "timestamp(temperature)",
    "abs(temperature - 25)",
    "clamp(temperature, 21, 24)",
    "round(temperature, 0.5)",
    "scalar(sum(temperature))",
    "vector(1)",
    "time()",
    "sum(temperature) * 2 + 1",
    "temperature @ end()",
    "sum by (job) (rate(http_requests_total[5m] offset 5m))",
    "rate(http_requests_total[5m:30s])",
    "max_over_time(rate(http_requests_total[2m])[10m:1m])",
    "avg_over_time(sum by (job) (temperature)[10m:])",
    "count_values by (job) (\"v\", round(temperature))",
    "sum by (job) (http_requests_total) > 1000",
    "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))",
    "sum by (job) (rate(http_request_duration_seconds_sum[5m])) / sum by (job) (rate(http_request_duration_seconds_count[5m]))",
    "histogram_quantile(0.9, sum by (job) (rate(rpc_duration_seconds[5m])))",
    "histogram_count(sum(rate(rpc_duration_seconds[5m])))",
    "histogram_sum(rpc_duration_seconds)",
    "histogram_fraction(0, 2, sum(rpc_duration_seconds))",
    "sum(rpc_duration_seconds)",
    "count by (job) (rpc_duration_seconds)",
    "increase(rpc_duration_seconds[10m])",
    "max by (job) (histogram_avg(rate(rpc_duration_seconds[5m])))",
    "sum by (le) (http_request_duration_seconds_bucket) - ignoring (le) group_left sum(http_request_duration_seconds_count)",
    "rpc_duration_seconds",
];

/// A bank of instant and range queries: selectors, rates, aggregations, joins, subqueries.
const QUERIES: [&str; 18] = [
    "http_requests_total",
    "temperature",
    "rate(http_requests_total[5m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance) (increase(http_requests_total[10m]))",
    "count(http_requests_total)",
    "topk(3, http_requests_total)",
    "bottomk(2, temperature)",
    "avg_over_time(temperature[10m])",
    "max by (code) (http_requests_total) - min by (code) (http_requests_total)",
    "http_requests_total{code=\"500\"} / on (job, instance) temperature",
    "sum by (job) (rate(http_requests_total{code=\"500\"}[5m])) / sum by (job) (rate(http_requests_total[5m]))",
    "temperature > on (job) group_left avg by (job) (temperature)",
    "max_over_time(sum(rate(http_requests_total[5m]))[10m:1m])",
    "quantile(0.9, temperature)",
    "count_values(\"value\", temperature)",
    "absent(nonexistent_metric)",
    "http_requests_total offset 10m",
];

/// How many aggregations of [`QUERIES`] are evaluated in parts on the nodes, instant and
/// range query together: `sum`, `count`, `max`, `min`, `avg`, `topk`, `bottomk`,
/// `quantile` and `count_values` over selections and functions of one series (thirteen in
/// each form).
const PUSHED_DOWN: usize = 26;

/// The aggregations of API queries a node evaluated in parts on the nodes, and over every
/// node's samples merged.
fn aggregations_evaluated(node: &Server) -> (f64, f64) {
    (
        metric(node, "promflow_cluster_query_aggregations_total{evaluated=\"in_parts\"}"),
        metric(node, "promflow_cluster_query_aggregations_total{evaluated=\"merged\"}"),
    )
}

/// Each node answers each query, instant at `end` and over the 25 minutes before it, as
/// `single` does, with no warnings of its own.
fn answer_alike(nodes: &[Server], single: &Server, queries: &[&str], end: i64) {
    let mut differ = Vec::new();
    for q in queries {
        let instant = format!("/api/v1/query?query={}&time={}", urlencode(q), end / 1000);
        let range = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60",
            urlencode(q),
            (end - 25 * 60_000) / 1000,
            end / 1000
        );
        for path in [instant, range] {
            let (status, want) = single.get_json(&path);
            assert_eq!(status, 200, "{q}: {want}");
            // one process's own warnings (a sort in a range query) only: none of the cluster's
            let warnings = want["warnings"].clone();
            let want = canonical(&want);
            for (i, node) in nodes.iter().enumerate() {
                let (status, got) = node.get_json(&path);
                if status != 200 || got["warnings"] != warnings {
                    differ.push(format!("{q} on node {i}: {status} {got}"));
                } else if let Err(e) = same(&canonical(&got), &want) {
                    differ.push(format!("{q} on node {i} differs from one process: {e}"));
                }
            }
        }
    }
    assert!(differ.is_empty(), "{} answers differ:\n{}", differ.len(), differ.join("\n"));
}

/// Remote-writes `ts` to `node` as a copy from another node (`promflow-cluster-hop`): the
/// node stores it itself, wherever the series belong.
fn write_here(node: &Server, ts: Vec<TimeSeries>) {
    let body = promflow_remote::encode(&promflow_remote::WriteRequest { timeseries: ts, metadata: vec![] });
    let r = client()
        .post(node.url("/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .header("promflow-cluster-hop", "1")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().unwrap_or_default());
}

/// With two copies of every series, the nodes' parts of an aggregation count each series
/// once (a node is asked again without the copies another counts), in queries and in a
/// subscription evaluated in batch; a series whose copies
/// differ (each node holds part of its samples) is aggregated over the merged samples. Both
/// answer as one process does. A request for a part that is not a node's, or that does not
/// decode, is refused.
#[test]
fn aggregations_count_each_series_once() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--web.enable-remote-write-receiver", "--cluster.replication-factor=2"];
    let mut nodes = start_cluster(dir.path(), 3, "", &extra);
    let single_dir = dir.path().join("single");
    std::fs::create_dir_all(&single_dir).unwrap();
    let single = start_promflow(&single_dir, "", &["--web.enable-remote-write-receiver"]);
    let end = now_ms() / 60_000 * 60_000 - 60_000;
    let all = workload(end);
    for (k, ts) in all.iter().enumerate() {
        assert_eq!(remote_write(&nodes[k % nodes.len()], vec![ts.clone()]).0, 204);
    }
    assert_eq!(remote_write(&single, all).0, 204);
    let aggregations = [
        "sum by (job) (rate(http_requests_total[5m]))",
        "count(http_requests_total)",
        "avg by (instance) (temperature)",
        "max_over_time(sum(rate(http_requests_total[5m]))[10m:1m])",
    ];
    let before: Vec<(f64, f64)> = nodes.iter().map(aggregations_evaluated).collect();
    answer_alike(&nodes, &single, &aggregations, end);
    for (i, (node, (parts, merged))) in nodes.iter().zip(&before).enumerate() {
        let (parts_after, merged_after) = aggregations_evaluated(node);
        assert_eq!(parts_after - parts, 2.0 * aggregations.len() as f64, "node {i}: in parts");
        assert_eq!(merged_after, *merged, "node {i}: over merged samples");
    }
    // a subscription evaluated in batch (no dataflow here) counts in parts too
    let (in_parts, _) = aggregations_evaluated(&nodes[1]);
    let mut socket = Subscriber::connect(&nodes[1]);
    socket.send(serde_json::json!({"id": "c", "query": "count(http_requests_total)"}));
    let snapshot = socket.next();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let counted = JOBS.len() * INSTANCES * CODES.len();
    assert_eq!(snapshot["result"][0]["value"][1], counted.to_string(), "{snapshot}");
    assert!(
        aggregations_evaluated(&nodes[1]).0 > in_parts,
        "the subscription's count was not evaluated in parts"
    );
    drop(socket);
    // one series, its samples up to 90 s before the end on node 0 alone and the rest on
    // node 1 alone: every query below reads some of both
    let times: Vec<i64> = (0..=40).map(|i| end - 20 * 60_000 + i * 30_000).collect();
    let samples: Vec<(i64, f64)> = times.iter().map(|&t| (t, (t / 1000 % 97) as f64)).collect();
    let labels = [("__name__", "split_metric"), ("part", "one")];
    write_here(&nodes[0], vec![series(&labels, &samples[..38])]);
    write_here(&nodes[1], vec![series(&labels, &samples[38..])]);
    write_here(&nodes[2], vec![series(&[("__name__", "split_metric"), ("part", "two")], &samples)]);
    assert_eq!(remote_write(&single, vec![series(&labels, &samples)]).0, 204);
    assert_eq!(
        remote_write(&single, vec![series(&[("__name__", "split_metric"), ("part", "two")], &samples)]).0,
        204
    );
    let before: Vec<(f64, f64)> = nodes.iter().map(aggregations_evaluated).collect();
    answer_alike(&nodes, &single, &["sum(split_metric)", "count(count_over_time(split_metric[5m]))"], end);
    for (i, (node, (_, merged))) in nodes.iter().zip(&before).enumerate() {
        assert_eq!(aggregations_evaluated(node).1 - merged, 4.0, "node {i}: over merged samples");
    }
    // the part endpoint takes only well-formed requests from other nodes
    let post = |hop: bool, body: &[u8]| {
        let mut r = client().post(nodes[0].url("/api/v1/cluster/partial")).body(body.to_vec());
        if hop {
            r = r.header("promflow-cluster-hop", "1");
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(post(false, b""), 400);
    assert_eq!(post(true, b"\xff\xff\xff\xff garbage"), 400);
    let request = promflow_remote::partial::PartialRequest {
        query: "sum(http_requests_total)".into(),
        aggregate: 1,
        step_ms: 1000,
        timeout_ms: 5000,
        ..Default::default()
    };
    assert_eq!(post(true, &request.encode_body()), 422);
    // the wider bank, each series and histogram in two copies, answers as one process too
    let histograms = histogram_workload(end);
    for (k, ts) in histograms.iter().enumerate() {
        assert_eq!(remote_write(&nodes[k % nodes.len()], vec![ts.clone()]).0, 204);
    }
    assert_eq!(remote_write(&single, histograms).0, 204);
    let before: Vec<(f64, f64)> = nodes.iter().map(aggregations_evaluated).collect();
    answer_alike(&nodes, &single, &WIDE_QUERIES, end);
    let up: Vec<(f64, f64)> = nodes
        .iter()
        .zip(&before)
        .map(|(n, (p, m))| (aggregations_evaluated(n).0 - p, aggregations_evaluated(n).1 - m))
        .collect();
    // and so do the two nodes left when one is killed, without a warning: every series has
    // a copy on them. Their aggregations are evaluated in parts as with every node up, each
    // series counted in the copy a node that answered holds; so are lookups
    nodes[2].kill9();
    let before: Vec<(f64, f64)> = nodes[..2].iter().map(aggregations_evaluated).collect();
    answer_alike(&nodes[..2], &single, &WIDE_QUERIES, end);
    for (i, (node, (parts, merged))) in nodes[..2].iter().zip(&before).enumerate() {
        let (parts_after, merged_after) = aggregations_evaluated(node);
        assert_eq!(
            (parts_after - parts, merged_after - merged),
            up[i],
            "node {i}: (in parts, merged) with a node down"
        );
    }
    let lookup = format!(
        "/api/v1/series?match[]=http_requests_total&start={}&end={}",
        (end - 60_000) / 1000,
        end / 1000
    );
    for path in [lookup.as_str(), "/api/v1/labels", "/api/v1/label/instance/values"] {
        let (_, want) = single.get_json(path);
        for (i, node) in nodes[..2].iter().enumerate() {
            let (status, got) = node.get_json(path);
            assert_eq!((status, &got["data"]), (200, &want["data"]), "{path} on node {i}");
            assert!(got["warnings"].is_null(), "{path} on node {i}: {got}");
        }
    }
}

/// With a node killed, the others still answer, from the nodes that are up, with a warning
/// naming the peer that did not answer; label lookups leave it out. Without replication the
/// series the dead node owns are missing until it returns.
#[test]
fn a_dead_node_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, "", &["--web.enable-remote-write-receiver"]);
    let end = now_ms() / 60_000 * 60_000;
    let all = workload(end);
    let half = all.len() / 2;
    assert_eq!(remote_write(&nodes[0], all[..half].to_vec()).0, 204);
    assert_eq!(remote_write(&nodes[2], all[half..].to_vec()).0, 204);
    // each series is stored by its owner: what the dead node owned is missing
    let text = own(&nodes[2], "/federate?match[]=temperature");
    let lost = text.lines().filter(|l| l.starts_with("temperature{")).count();
    let dead = format!("127.0.0.1:{}", nodes[2].port);
    nodes[2].kill9();
    let q = format!("/api/v1/query?query={}&time={}", urlencode("count(temperature)"), end / 1000);
    let (status, v) = nodes[1].get_json(&q);
    assert_eq!(status, 200, "{v}");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains(&dead), "no warning names the dead peer: {v}");
    let up = JOBS.len() * INSTANCES - lost;
    assert_eq!(result(&v)[0]["value"][1], up.to_string(), "{v}");
    let (status, v) = nodes[1].get_json("/api/v1/label/__name__/values");
    assert_eq!(status, 200, "{v}");
    assert!(v["data"].as_array().is_some_and(|names| !names.is_empty()), "{v}");
    // lookups name the dead peer too: what only it held is missing from them
    for path in ["/api/v1/label/__name__/values", "/api/v1/labels", "/api/v1/series?match[]=temperature"] {
        let (status, v) = nodes[1].get_json(path);
        assert_eq!(status, 200, "{v}");
        assert!(v["warnings"].to_string().contains(&dead), "{path}: no warning names the dead peer: {v}");
    }
}

/// With `--cluster.replication-factor=2` a write to any node is stored on two nodes; with
/// one node killed under ingest, the others keep answering writes, and every sample answered
/// 2xx is queryable from the survivors.
#[test]
fn replicated_writes_survive_a_killed_node() {
    const SERIES: usize = 60;
    const ROUNDS: i64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--web.enable-remote-write-receiver", "--cluster.replication-factor=2"];
    let mut nodes = start_cluster(dir.path(), 3, "", &extra);
    let base = now_ms() / 1000 * 1000 - 60_000;
    let round = |r: i64| -> Vec<TimeSeries> {
        (0..SERIES)
            .map(|s| {
                series(&[("__name__", "replicated"), ("s", &s.to_string())], &[(base + r * 1000, r as f64)])
            })
            .collect()
    };
    // local copies, by node: /federate answers from the node's own storage
    let copies = |node: &Server| -> usize {
        let text = own(node, "/federate?match[]=replicated");
        text.lines().filter(|l| l.starts_with("replicated{")).count()
    };
    let mut answered = 0;
    for r in 0..ROUNDS {
        if r == ROUNDS / 2 {
            assert_eq!(nodes.iter().map(copies).sum::<usize>(), 2 * SERIES, "not two copies of each series");
            nodes[2].kill9();
        }
        let to = if r < ROUNDS / 2 { r as usize % 3 } else { r as usize % 2 };
        let (status, body) = remote_write(&nodes[to], round(r));
        assert_eq!(status, 204, "round {r} to node {to}: {body}");
        answered += 1;
    }
    // with one node down, both survivors hold a copy of every series written since
    for (i, node) in nodes[..2].iter().enumerate() {
        assert_eq!(copies(node), SERIES, "node {i} lacks copies written after the kill");
    }
    let q = format!(
        "/api/v1/query?query={}&time={}",
        urlencode("sum(count_over_time(replicated[10m]))"),
        (base + ROUNDS * 1000) / 1000
    );
    for (i, node) in nodes[..2].iter().enumerate() {
        let (status, v) = node.get_json(&q);
        assert_eq!(status, 200, "{v}");
        assert_eq!(result(&v)[0]["value"][1], (answered * SERIES).to_string(), "node {i}: {v}");
    }
}

/// The instances of a node's active targets (only those up, with `up_only`).
fn active_targets(node: &Server, up_only: bool) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&own(node, "/api/v1/targets?state=active")).unwrap_or_default();
    v["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| !up_only || t["health"] == "up")
        .map(|t| t["labels"]["instance"].as_str().unwrap_or("").to_string())
        .collect()
}

/// What `node` answers `path` as another node asks it (`promflow-cluster-hop`): from its own
/// storage and state alone.
fn own(node: &Server, path: &str) -> String {
    let r = client().get(node.url(path)).header("promflow-cluster-hop", "1").send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.text().unwrap_or_default()
}

/// `n` scrape targets that each expose `thing 1`, and a configuration scraping them every
/// second as job `things`.
fn things(n: usize) -> (Vec<u16>, String) {
    let targets: Vec<u16> =
        (0..n).map(|_| serve_http(|_, _| ("text/plain".into(), b"thing 1\n".to_vec()))).collect();
    let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = format!(
        "scrape_configs:\n  - job_name: things\n    scrape_interval: 1s\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    (targets, config)
}

/// Each scrape target is scraped by exactly one node, and every node's queries see them all.
#[test]
fn nodes_divide_the_scrape_targets() {
    let (targets, config) = things(6);
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3, &config, &[]);
    // every target up on exactly one node
    let scraped = |node: &Server| active_targets(node, true);
    let owners = wait_for(Duration::from_secs(30), || {
        let per_node: Vec<Vec<String>> = nodes.iter().map(scraped).collect();
        (per_node.iter().map(Vec::len).sum::<usize>() == targets.len()).then_some(per_node)
    })
    .expect("the targets were not all scraped within 30 s");
    let mut all: Vec<&String> = owners.iter().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), targets.len(), "a target was scraped twice: {owners:?}");
    // any node's queries see every target's samples
    for (i, node) in nodes.iter().enumerate() {
        let seen = wait_for(Duration::from_secs(10), || {
            let (_, v) = node.get_json(&format!("/api/v1/query?query={}", urlencode("count(thing)")));
            let n = result(&v).first().and_then(|r| r["value"][1].as_str().map(String::from));
            (n.as_deref() == Some("6")).then_some(())
        });
        assert!(seen.is_some(), "node {i} does not see the six targets' samples");
    }
}

/// Every node answers what one server answers of its own scrapes and storage: the targets
/// (each node scrapes its share), the metadata of their metrics, federation, remote read
/// served to another server, and exemplars; a node asked as a peer answers its own.
#[test]
fn targets_metadata_federation_and_exemplars_are_the_clusters() {
    use promflow_remote::read::{MatcherType, ReadRequest, ReadResponse};
    const TARGETS: usize = 6;
    let exposition = "# HELP thing_total Things done.\n# TYPE thing_total counter\nthing_total 1\n";
    let targets: Vec<u16> = (0..TARGETS)
        .map(|_| serve_http(move |_, _| ("text/plain".into(), exposition.as_bytes().to_vec())))
        .collect();
    let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = format!(
        "scrape_configs:\n  - job_name: things\n    scrape_interval: 1s\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage"];
    let nodes = start_cluster(dir.path(), 3, &config, &extra);
    let single_dir = dir.path().join("single");
    std::fs::create_dir_all(&single_dir).unwrap();
    let single = start_promflow(&single_dir, &config, &extra);
    let up = |node: &Server, path: &str| {
        let (_, v) = node.get_json(path);
        let active = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let mut urls: Vec<String> = active
            .iter()
            .filter(|t| t["health"] == "up")
            .map(|t| t["scrapeUrl"].as_str().unwrap_or("").to_string())
            .collect();
        urls.sort();
        urls
    };
    let all_up = wait_for(Duration::from_secs(30), || {
        let want = up(&single, "/api/v1/targets");
        (want.len() == TARGETS && nodes.iter().all(|n| up(n, "/api/v1/targets") == want)).then_some(())
    });
    assert!(all_up.is_some(), "not every node lists every target up: {:?}", up(&nodes[0], "/api/v1/targets"));
    // a node asked as a peer lists its own share
    let shares: usize = nodes.iter().map(|n| active_targets(n, false).len()).sum();
    assert_eq!(shares, TARGETS);
    for path in ["/api/v1/metadata", "/api/v1/metadata?metric=thing_total"] {
        let (_, want) = single.get_json(path);
        assert!(want["data"]["thing_total"].is_array(), "{path}: {want}");
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(node.get_json(path).1["data"], want["data"], "{path} on node {i}");
        }
    }
    let target_metadata = |node: &Server| {
        let (_, v) = node.get_json("/api/v1/targets/metadata?metric=thing_total");
        let mut instances: Vec<String> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["target"]["instance"].as_str().unwrap_or("").to_string())
            .collect();
        instances.sort();
        instances
    };
    let want = target_metadata(&single);
    assert_eq!(want.len(), TARGETS);
    for node in &nodes {
        assert_eq!(target_metadata(node), want);
    }
    // federation and remote read: every node's series, each once
    let federated = |text: &str| {
        let mut series: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("thing_total{"))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        series.sort();
        series
    };
    let want = federated(&single.get_text("/federate?match[]=thing_total").1);
    assert_eq!(want.len(), TARGETS);
    let now = now_ms();
    let read_request = ReadRequest {
        queries: vec![crate::remote_read::query(
            now - 60_000,
            now,
            &[(MatcherType::Eq, "__name__", "thing_total")],
        )],
        accepted_response_types: vec![],
    };
    let read_series = |node: &Server| {
        let (code, body) = crate::remote_read::read(node, &read_request);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        ReadResponse::decode_body(&body).unwrap().results[0].timeseries.len()
    };
    assert_eq!(read_series(&single), TARGETS);
    let mut held = 0;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(federated(&node.get_text("/federate?match[]=thing_total").1), want, "node {i}");
        assert_eq!(read_series(node), TARGETS, "remote read of node {i}");
        held += federated(&own(node, "/federate?match[]=thing_total")).len();
    }
    assert_eq!(held, TARGETS, "the nodes' own storage holds each target's series once");
    // exemplars written through one node are stored on their series' owner, found from any
    let t = now_ms() - 10_000;
    let traced: Vec<TimeSeries> = (0..6)
        .map(|s| {
            let mut ts = series(&[("__name__", "traced_total"), ("s", &s.to_string())], &[(t, 1.0)]);
            ts.exemplars = vec![promflow_remote::Exemplar {
                labels: vec![promflow_remote::Label { name: "trace_id".into(), value: format!("t{s}") }],
                value: 0.5,
                timestamp: t - 1,
            }];
            ts
        })
        .collect();
    assert_eq!(remote_write(&nodes[0], traced.clone()).0, 204);
    assert_eq!(remote_write(&single, traced).0, 204);
    let exemplars = format!(
        "/api/v1/query_exemplars?query=traced_total&start={}&end={}",
        (t - 60_000) / 1000,
        (t + 60_000) / 1000
    );
    let (_, want) = single.get_json(&exemplars);
    assert_eq!(want["data"].as_array().map(Vec::len), Some(6), "{want}");
    let canonical = |v: &serde_json::Value| {
        let mut items: Vec<String> =
            v["data"].as_array().into_iter().flatten().map(|i| i.to_string()).collect();
        items.sort();
        items
    };
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(canonical(&node.get_json(&exemplars).1), canonical(&want), "exemplars on node {i}");
    }
}

/// The series named `name` that `node` holds in its own storage (/federate asked as a peer
/// answers from it), by their labels, with the timestamp of the latest sample of each.
fn held(node: &Server, name: &str) -> BTreeMap<String, i64> {
    let text = own(node, &format!("/federate?match[]={name}"));
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let mut fields = l.split(' ');
            let labels = fields.next()?.to_string();
            Some((labels, fields.nth(1)?.parse().ok()?))
        })
        .collect()
}

/// The series named `name` that `nodes` hold in their own storage, by their labels, with
/// how many of the nodes hold each.
fn holders(nodes: &[Server], name: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for labels in nodes.iter().flat_map(|node| held(node, name).into_keys()) {
        *out.entry(labels).or_insert(0) += 1;
    }
    out
}

/// With `--cluster.replication-factor=2` a scraped series is stored on the node that scrapes
/// it and sent to one more as a replica, so a node killed with its targets leaves their
/// samples to be read on the others. Recorded series and alerts, which every node
/// evaluates, are stored on the two nodes each hashes to. The nodes take one another's
/// copies without `--web.enable-remote-write-receiver`.
#[test]
fn scraped_series_have_replicas_that_outlive_their_node() {
    let (targets, config) = things(6);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: doubled\n    interval: 1s\n    rules:\n      - record: thing:doubled\n        expr: thing * 2\n      - alert: ThingUp\n        expr: thing > 0\n        for: 1h\n",
    )
    .unwrap();
    let config = format!("{config}rule_files: ['{}']\n", rules.display());
    let mut nodes = start_cluster(dir.path(), 3, &config, &["--cluster.replication-factor=2"]);
    // each target's `name` series, one per target, by the number of nodes holding it
    for name in ["thing", "thing:doubled", "ALERTS", "ALERTS_FOR_STATE"] {
        let placed = wait_for(Duration::from_secs(30), || {
            let h = holders(&nodes, name);
            (h.len() == targets.len() && h.values().all(|&n| n == 2)).then_some(())
        });
        assert!(placed.is_some(), "not every {name} series is on two nodes: {:?}", holders(&nodes, name));
    }
    let sent: f64 = nodes
        .iter()
        .map(|n| {
            let (_, text) = n.get_text("/metrics");
            text.lines()
                .find_map(|l| l.strip_prefix("promflow_cluster_replica_samples_total{outcome=\"sent\"} "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .sum();
    assert!(sent > 0.0, "no replicas counted as sent");
    // the node that scrapes the most targets: the targets' ports, and so their placement,
    // change from run to run, and a node may scrape none
    let (victim, lost) =
        (0..nodes.len()).map(|i| (i, active_targets(&nodes[i], true))).max_by_key(|(_, t)| t.len()).unwrap();
    assert!(!lost.is_empty(), "no node scrapes a target");
    nodes[victim].kill9();
    // the victim's targets are scraped by nobody now, but their samples are on the survivors
    let q = format!("/api/v1/query?query={}", urlencode("count(last_over_time(thing[5m]))"));
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != victim) {
        let (status, v) = node.get_json(&q);
        assert_eq!(status, 200, "{v}");
        assert_eq!(result(&v)[0]["value"][1], "6", "node {i} lost node {victim}'s targets {lost:?}: {v}");
    }
}

/// With a replication factor of 2, a scraped series whose replica node is down has its
/// replica on the next node of its ranking meanwhile: the samples scraped during the gap
/// have two copies too.
#[test]
fn a_scraped_series_replica_goes_to_the_next_node_while_its_own_is_down() {
    let (targets, config) = things(6);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &config, &["--cluster.replication-factor=2"]);
    let placed = wait_for(Duration::from_secs(30), || {
        let h = holders(&nodes, "thing");
        (h.len() == targets.len() && h.values().all(|&n| n == 2)).then_some(())
    });
    assert!(placed.is_some(), "not every series is on two nodes: {:?}", holders(&nodes, "thing"));
    // a series scraped by one node with its replica on another: every series has one
    let scraped: Vec<Vec<String>> = nodes.iter().map(|n| active_targets(n, true)).collect();
    let held_now: Vec<BTreeMap<String, i64>> = nodes.iter().map(|n| held(n, "thing")).collect();
    let (series, scraper, replica) = (0..nodes.len())
        .flat_map(|s| scraped[s].iter().map(move |instance| (s, instance)))
        .find_map(|(s, instance)| {
            let labels = held_now[s].keys().find(|l| l.contains(&format!("instance=\"{instance}\"")))?;
            let r = (0..nodes.len()).find(|&r| r != s && held_now[r].contains_key(labels))?;
            Some((labels.clone(), s, r))
        })
        .expect("no scraped series has a replica");
    let third = (0..nodes.len()).find(|&n| n != scraper && n != replica).unwrap();
    assert!(!held_now[third].contains_key(&series), "{series} is on three nodes");
    nodes[replica].kill9();
    let killed_at = now_ms();
    // the third node takes the series' replicas from now on
    let copied = wait_for(Duration::from_secs(30), || {
        held(&nodes[third], "thing").get(&series).is_some_and(|&t| t > killed_at).then_some(())
    });
    assert!(
        copied.is_some(),
        "node {third} holds no sample of {series} scraped by node {scraper} since its replica node {replica} was killed"
    );
    let sent = metric(&nodes[scraper], "promflow_cluster_replica_samples_total{outcome=\"sent\"}");
    assert!(sent > 0.0, "no replicas counted as sent: {sent}");
}

/// A recording rule evaluated on a node reads every node's storage.
#[test]
fn rules_read_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        // the same selection twice in a group: the second rule reads the peers as the first;
        // counts are asked of the nodes in parts, the samples of the maxima over relabelled
        // series (a label rewrite mixes series: not evaluated in parts) read from them
        "groups:\n  - name: totals\n    interval: 1s\n    rules:\n      - record: job:temperature:count\n        expr: count by (job) (temperature)\n      - record: job:temperature:count_again\n        expr: count by (job) (temperature)\n      - record: job:temperature:max\n        expr: max by (job) (label_replace(temperature, \"node\", \"$1\", \"instance\", \"(.*)\"))\n      - record: job:temperature:max_again\n        expr: max by (job) (label_replace(temperature, \"node\", \"$1\", \"instance\", \"(.*)\"))\n",
    )
    .unwrap();
    let config = format!("rule_files: ['{}']\n", rules.display());
    let nodes = start_cluster(dir.path(), 3, &config, &["--web.enable-remote-write-receiver"]);
    // written to two nodes, stored where each series belongs: every node evaluates the rule
    // over samples most of which it does not hold
    let now = now_ms();
    let all = workload(now);
    assert_eq!(remote_write(&nodes[1], all[..all.len() / 2].to_vec()).0, 204);
    assert_eq!(remote_write(&nodes[2], all[all.len() / 2..].to_vec()).0, 204);
    let counts = wait_for(Duration::from_secs(20), || {
        let (_, v) = nodes[0].get_json(&format!(
            "/api/v1/query?query={}",
            urlencode("{__name__=~\"job:temperature:count(_again)?\"}")
        ));
        let counts: Vec<(String, String)> = result(&v)
            .iter()
            .map(|r| {
                (
                    r["metric"]["job"].as_str().unwrap_or("").into(),
                    r["value"][1].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        (counts.len() == 2 * JOBS.len() && counts.iter().all(|(_, n)| *n == INSTANCES.to_string()))
            .then_some(counts)
    });
    assert!(counts.is_some(), "the rule did not count every node's series");
    // every node evaluates the rule, and each recorded series is stored on the one node it
    // hashes to
    let holders = holders(&nodes, "job:temperature:count");
    assert!(
        holders.len() == JOBS.len() && holders.values().all(|&n| n == 1),
        "recorded series by the number of nodes storing them: {holders:?}"
    );
    // each evaluation asks each other node once per count rule for its part of the count,
    // and reads each other node once per `max` rule's selection: one remote read answers
    // both the selection's floats and its histograms, which the executor asks for apart (and
    // the second rule's selection is read again, not answered with the first's leftover)
    let sum = |node: &Server, prefix: &str, containing: &str| -> f64 {
        let (_, text) = node.get_text("/metrics");
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(containing))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let counts = || {
        let evaluations: f64 =
            nodes.iter().map(|n| sum(n, "prometheus_rule_group_iterations_total{", "totals")).sum();
        let asked = |handler: &str| -> f64 {
            nodes
                .iter()
                .map(|n| sum(n, "prometheus_http_requests_total{", &format!("handler=\"{handler}\"")))
                .sum()
        };
        (evaluations, asked("/api/v1/read"), asked("/api/v1/cluster/partial"))
    };
    // over a few seconds of evaluations alone (no query of the test's in between)
    let before = counts();
    std::thread::sleep(Duration::from_secs(4));
    let after = counts();
    let (evaluations, reads, parts) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    // two rules of each kind an evaluation, each asked of each of the other nodes
    let expected = evaluations * (nodes.len() - 1) as f64 * 2.0;
    let near = |n: f64| n >= expected * 0.5 && n < expected * 1.5;
    assert!(
        evaluations >= 3.0 && near(reads) && near(parts),
        "{parts} parts and {reads} remote reads for {evaluations} evaluations of two rules of each kind over the other nodes"
    );
}

/// An OTLP/JSON export of `n` cumulative sums (`jobs_done_total{k=…}` once translated),
/// each a sample at `t_ms` that started at `start_ms`, and one exponential histogram.
fn otlp_export(n: usize, start_ms: i64, t_ms: i64) -> serde_json::Value {
    let (start, t) = ((start_ms * 1_000_000).to_string(), (t_ms * 1_000_000).to_string());
    let points: Vec<serde_json::Value> = (0..n)
        .map(|k| {
            serde_json::json!({
                "attributes": [{"key": "k", "value": {"stringValue": k.to_string()}}],
                "startTimeUnixNano": start, "timeUnixNano": t, "asDouble": (k + 1) as f64,
            })
        })
        .collect();
    serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "worker"}},
            {"key": "service.instance.id", "value": {"stringValue": "w-1"}},
        ]},
        "scopeMetrics": [{"metrics": [
            {"name": "jobs.done", "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": points}},
            {"name": "job.seconds", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [{
                "startTimeUnixNano": start, "timeUnixNano": t, "count": "3", "sum": 1.5, "scale": 0,
                "zeroCount": "0", "positive": {"offset": 0, "bucketCounts": ["1", "2"]},
            }]}},
        ]}],
    }]})
}

/// An OTLP export sent to one node is stored as remote write is: each series on the two
/// nodes that own it, with its start timestamps, so that with one owner killed every
/// series still has its zero sample at its start (`created-timestamp-zero-ingestion`) where
/// only the copy survives.
#[test]
fn otlp_is_stored_where_each_series_belongs() {
    const SERIES: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        "--web.enable-remote-write-receiver",
        "--web.enable-otlp-receiver",
        "--enable-feature=created-timestamp-zero-ingestion",
        "--cluster.replication-factor=2",
    ];
    let mut nodes = start_cluster(dir.path(), 3, "", &extra);
    let t = now_ms() / 1000 * 1000 - 10_000;
    let body = otlp_export(SERIES, t - 60_000, t).to_string();
    let r = client()
        .post(nodes[0].url("/api/v1/otlp/v1/metrics"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    let held = |node: &Server| -> Vec<String> {
        let text = own(node, "/federate?match[]=jobs_done_total");
        text.lines().filter(|l| l.starts_with("jobs_done_total{")).map(|l| l.to_string()).collect()
    };
    let copies: Vec<Vec<String>> = nodes.iter().map(held).collect();
    assert_eq!(copies.iter().map(Vec::len).sum::<usize>(), 2 * SERIES, "not two copies of each series");
    // the series only node 1 and node 2 hold reached node 2 as copies from node 0
    let only_copied = copies[2].iter().filter(|l| !copies[0].contains(l)).count();
    assert!(only_copied > 0, "no series went to nodes 1 and 2 alone: {copies:?}");
    nodes[1].kill9();
    let q = |query: &str| {
        let (status, v) =
            nodes[0].get_json(&format!("/api/v1/query?query={}&time={}", urlencode(query), t / 1000 + 1));
        assert_eq!(status, 200, "{v}");
        result(&v).clone()
    };
    let counts = q("count_over_time(jobs_done_total[5m])");
    assert_eq!(counts.len(), SERIES, "{counts:?}");
    for c in &counts {
        assert_eq!(c["value"][1], "2", "the sample and the zero at its start: {c}");
    }
    assert_eq!(q("sum(jobs_done_total)")[0]["value"][1], ((SERIES * (SERIES + 1)) / 2).to_string());
    let histogram = q("histogram_count(job_seconds)");
    assert_eq!(histogram.len(), 1, "{histogram:?}");
    assert_eq!(histogram[0]["value"][1], "3");
}

/// A pushed group lives on one node whichever node the pushes reach: a push to another
/// node is relayed there, and so is a delete.
#[test]
fn a_pushed_group_lives_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = "global: {scrape_interval: 1s}\n";
    let nodes = start_cluster(dir.path(), 3, config, &["--web.enable-pushgateway"]);
    let push = |node: &Server, method: &str, body: &str| -> u16 {
        let url = node.url("/metrics/job/nightly/instance/host-1");
        let r = match method {
            "PUT" => client().put(url),
            "POST" => client().post(url),
            _ => client().delete(url),
        };
        r.body(body.to_string()).send().unwrap().status().as_u16()
    };
    assert_eq!(push(&nodes[0], "PUT", "rows_done 1\n"), 200);
    assert_eq!(push(&nodes[1], "PUT", "rows_done 2\n"), 200);
    assert_eq!(push(&nodes[2], "POST", "batch_size 9\n"), 200);
    // held by one node: the only one whose own storage has the group's push times
    let holders = |name: &str| -> usize {
        nodes
            .iter()
            .filter(|n| own(n, &format!("/federate?match[]={name}")).contains(&format!("{name}{{")))
            .count()
    };
    assert_eq!(holders("push_time_seconds"), 1, "the group is held by more than one node");
    let value = |node: &Server, q: &str| -> Vec<String> {
        let (_, v) = node.get_json(&format!("/api/v1/query?query={}", urlencode(q)));
        result(&v).iter().map(|r| r["value"][1].as_str().unwrap_or("").to_string()).collect()
    };
    // ingested again every second, always the last value pushed
    std::thread::sleep(Duration::from_millis(3000));
    for node in &nodes {
        assert_eq!(value(node, "min_over_time(rows_done[2s])"), ["2"]);
        assert_eq!(value(node, "batch_size"), ["9"]);
    }
    assert_eq!(push(&nodes[1], "DELETE", ""), 202);
    let gone = wait_for(Duration::from_secs(10), || value(&nodes[2], "rows_done").is_empty().then_some(()));
    assert!(gone.is_some(), "the deleted group's series did not go stale");
}

/// With `--cluster.peers-file`, a reload takes a new peer list: a node added to the file of
/// the two first nodes takes its share of their targets, each target is still scraped once,
/// and remote write places series on the new node.
#[test]
fn a_reloaded_peer_list_moves_targets_and_series() {
    // enough that the third node has a share whatever the ports hash to: (2/3)^30 of runs
    // would leave it none
    const TARGETS: usize = 30;
    let targets: Vec<u16> =
        (0..TARGETS).map(|_| serve_http(|_, _| ("text/plain".into(), b"thing 1\n".to_vec()))).collect();
    let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = format!(
        "scrape_configs:\n  - job_name: things\n    scrape_interval: 1s\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.yml");
    std::fs::write(&cfg, &config).unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let two = format!("# the first two\n{}\n{}\n", address(0), address(1));
    let three = format!("{two}{}\n", address(2));
    let mut nodes: Vec<Server> = (0..3)
        .map(|i| {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let peers = node_dir.join("peers.txt");
            std::fs::write(&peers, if i < 2 { &two } else { &three }).unwrap();
            let flags = [
                format!("--cluster.peers-file={}", peers.display()),
                format!("--cluster.advertise-address={}", address(i)),
                "--web.enable-remote-write-receiver".to_string(),
                "--web.enable-lifecycle".to_string(),
            ];
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            spawn_promflow(&node_dir, &cfg, ports[i], &flags)
        })
        .collect();
    for node in &mut nodes {
        node.wait_ready("/-/ready");
    }
    let scraped = |node: &Server| active_targets(node, false);
    // the first two divide the targets between them; the third, alone in knowing all three
    // nodes, takes its own share: some targets are scraped twice until the others reload
    let before: Vec<usize> = wait_for(Duration::from_secs(30), || {
        let counts: Vec<usize> = nodes.iter().map(|n| scraped(n).len()).collect();
        (counts[0] + counts[1] == TARGETS && counts[2] > 0).then_some(counts)
    })
    .expect("the targets were not listed");
    assert!(before[2] > 0 && before[2] < TARGETS, "{before:?}");
    for (i, node) in nodes[..2].iter().enumerate() {
        std::fs::write(dir.path().join(format!("node{i}/peers.txt")), &three).unwrap();
        let r = client().post(node.url("/-/reload")).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "node {i}: {}", r.text().unwrap_or_default());
    }
    let after: Vec<Vec<String>> = nodes.iter().map(scraped).collect();
    assert_eq!(after[2].len(), before[2], "the third node's share changed");
    assert_eq!(after.iter().map(Vec::len).sum::<usize>(), TARGETS, "{after:?}");
    let mut all: Vec<String> = after.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), TARGETS, "a target is scraped by two nodes: {after:?}");
    // a series written through the first node goes where the three-node placement puts it
    let now = now_ms();
    let written: Vec<TimeSeries> = (0..30)
        .map(|s| series(&[("__name__", "placed"), ("s", &s.to_string())], &[(now, s as f64)]))
        .collect();
    assert_eq!(remote_write(&nodes[0], written).0, 204);
    let text = own(&nodes[2], "/federate?match[]=placed");
    assert!(text.lines().any(|l| l.starts_with("placed{")), "no series placed on the new node");
    // a file that no longer lists the node fails the reload and keeps the peers
    std::fs::write(dir.path().join("node0/peers.txt"), format!("{}\n", address(1))).unwrap();
    let r = client().post(nodes[0].url("/-/reload")).send().unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert_eq!(scraped(&nodes[0]), after[0], "a failed reload changed the targets");
}

/// A cluster flag set wrong stops the server at start-up, saying which.
#[test]
fn a_wrong_cluster_setting_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = refused_start(dir.path(), &["--cluster.peer=127.0.0.1:1", "--cluster.peer=127.0.0.1:2"]);
    assert!(log.contains("--cluster.index"), "{log}");
    let log = refused_start(dir.path(), &["--cluster.peer=127.0.0.1:1", "--cluster.index=1"]);
    assert!(log.contains("outside"), "{log}");
    let log = refused_start(dir.path(), &["--cluster.peer=nowhere", "--cluster.index=0"]);
    assert!(log.contains("host:port"), "{log}");
    let log = refused_start(
        dir.path(),
        &["--cluster.peer=127.0.0.1:1", "--cluster.index=0", "--rules.evaluation-mode=event"],
    );
    assert!(log.contains("evaluation-mode"), "{log}");
    let log = refused_start(
        dir.path(),
        &["--cluster.peer=127.0.0.1:1", "--cluster.index=0", "--cluster.replication-factor=2"],
    );
    assert!(log.contains("replication-factor"), "{log}");
    let log = refused_start(
        dir.path(),
        &["--cluster.peer=127.0.0.1:1", "--cluster.index=0", "--web.route-prefix=/prom"],
    );
    assert!(log.contains("route-prefix"), "{log}");
    let peers = dir.path().join("peers.txt");
    std::fs::write(&peers, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let file = format!("--cluster.peers-file={}", peers.display());
    let log = refused_start(dir.path(), &[&file]);
    assert!(log.contains("--cluster.advertise-address"), "{log}");
    let log = refused_start(dir.path(), &[&file, "--cluster.advertise-address=127.0.0.1:3"]);
    assert!(log.contains("does not list this node"), "{log}");
    let log = refused_start(dir.path(), &[&file, "--cluster.peer=127.0.0.1:1", "--cluster.index=0"]);
    assert!(log.contains("one or the other"), "{log}");
    let log = refused_start(dir.path(), &["--cluster.advertise-address=127.0.0.1:3"]);
    assert!(log.contains("not given"), "{log}");
}

/// With a `--web.config.file` that serves TLS and requires client certificates, the nodes
/// reach each other over HTTPS, each presenting its own certificate: reads of the others'
/// storage, label lookups, aggregations in parts and scraped replicas all cross. The
/// cluster's dataflow computation forms over connections carried in TLS, and its rule
/// reads its views.
#[test]
fn nodes_reach_each_other_over_tls() {
    use crate::web_security::{curl, mutual_tls_web_config, Pki};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let web = format!("--web.config.file={}", mutual_tls_web_config(dir.path(), "").display());
    let (targets, config) = things(6);
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: things\n    interval: 1s\n    rules:\n      - record: job:thing:count\n        expr: count by (job) (thing)\n",
    )
    .unwrap();
    let cfg = dir.path().join("cluster.yml");
    std::fs::write(&cfg, format!("{config}rule_files: ['{}']\n", rules.display())).unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: Vec<String> = ports.iter().map(|p| format!("--cluster.peer=127.0.0.1:{p}")).collect();
    let dataflow: Vec<String> =
        (0..3).map(|_| format!("--cluster.dataflow-peer=127.0.0.1:{}", free_port())).collect();
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut flags: Vec<String> = peers.clone();
            flags.extend(dataflow.iter().cloned());
            flags.extend([
                format!("--cluster.index={i}"),
                web.clone(),
                "--cluster.replication-factor=2".into(),
            ]);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            spawn_promflow(&node_dir, &cfg, ports[i], &flags)
        })
        .collect();
    let (ca, cert, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
    let get = |port: u16, path: &str| {
        let url = format!("https://127.0.0.1:{port}{path}");
        curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url])
    };
    // as another node asks: answered from the node's own storage
    let own = |port: u16, path: &str| {
        let url = format!("https://127.0.0.1:{port}{path}");
        curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, "-H", "promflow-cluster-hop: 1", &url])
    };
    for &port in &ports {
        let ready = wait_for(Duration::from_secs(30), || (get(port, "/-/ready").0 == 200).then_some(()));
        assert!(ready.is_some(), "the node on {port} is not ready over TLS");
    }
    let count = format!("/api/v1/query?query={}", urlencode("count(thing)"));
    for &port in &ports {
        let seen = wait_for(Duration::from_secs(30), || {
            let (_, body) = get(port, &count);
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (result(&v).first()?["value"][1] == "6" && v["warnings"].is_null()).then_some(())
        });
        assert!(seen.is_some(), "the node on {port} does not see the six targets: {:?}", get(port, &count));
        // the samples themselves (remote read) and the label lookups of every node
        let read = wait_for(Duration::from_secs(10), || {
            let (_, body) = get(port, &format!("/api/v1/query?query={}", urlencode("thing")));
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (result(&v).len() == targets.len() && v["warnings"].is_null()).then_some(())
        });
        assert!(read.is_some(), "the node on {port} does not read the six series");
        let listed = wait_for(Duration::from_secs(10), || {
            let (_, body) = get(port, "/api/v1/label/instance/values");
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["data"].as_array()?.len() == targets.len()).then_some(())
        });
        assert!(listed.is_some(), "the node on {port} does not list the six instances");
        // the parts of an aggregation cross too. Asked a few seconds back: at the newest
        // samples a scraped series' replica can lag its scraper's copy, and copies that differ
        // are aggregated over their merged samples instead
        let in_parts = || {
            let (_, text) = get(port, "/metrics");
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("promflow_cluster_query_aggregations_total{evaluated=\"in_parts\"} ")
                })
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let in_parts = wait_for(Duration::from_secs(30), || {
            let at = (now_ms() - 5_000) as f64 / 1000.0;
            get(port, &format!("{count}&time={at}"));
            in_parts().filter(|n| *n > 0.0)
        });
        assert!(in_parts.is_some(), "the count was never evaluated in parts");
    }
    // each target's series on two nodes: the scraped replicas crossed too
    let placed = wait_for(Duration::from_secs(30), || {
        let mut holders: BTreeMap<String, usize> = BTreeMap::new();
        for &port in &ports {
            let (_, text) = own(port, "/federate?match[]=thing");
            for line in text.lines().filter(|l| l.starts_with("thing{")) {
                *holders.entry(line.split(' ').next().unwrap_or("").to_string()).or_insert(0) += 1;
            }
        }
        (holders.len() == targets.len() && holders.values().all(|&n| n == 2)).then_some(())
    });
    assert!(placed.is_some(), "not every series is on two nodes");
    // the dataflow computation forms over TLS, and the rule's evaluator reads its view: the
    // recorded count is the whole cluster's
    let value = |port: u16, name: &str| -> Option<f64> {
        let (_, text) = get(port, "/metrics");
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let formed = wait_for(Duration::from_secs(60), || {
        ports.iter().all(|&p| value(p, "promflow_cluster_dataflow_up") == Some(1.0)).then_some(())
    });
    assert!(formed.is_some(), "the dataflow did not form over TLS");
    for node in &nodes {
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        assert!(log.contains("carried in TLS"), "{log}");
    }
    let recorded = format!("/api/v1/query?query={}", urlencode("job:thing:count"));
    let counted = wait_for(Duration::from_secs(30), || {
        let read = ports.iter().any(|&p| value(p, "promflow_rule_view_reads_total").is_some_and(|n| n > 0.0));
        let (_, body) = get(ports[0], &recorded);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (read && result(&v).first()?["value"][1] == "6").then_some(())
    });
    assert!(counted.is_some(), "no rule read its view over TLS: {:?}", get(ports[0], &recorded));
}

/// On the cluster's dataflow computation a group's alerts move with their data, as in one
/// server's event mode: with an interval of a day, the group is all but never evaluated
/// during the test (its first evaluation is at its next aligned time, anywhere in the next
/// day), so an alert that fires and resolves does so through its evaluator's watch of the
/// alert's view.
#[test]
fn alerts_move_with_their_data_on_the_clusters_computation() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: hot\n    interval: 1d\n    rules:\n      - alert: Hot\n        expr: temp > 10\n",
    )
    .unwrap();
    let config = format!("rule_files: ['{}']\n", rules.display());
    let cluster = DataflowCluster::new(dir.path(), 3, &config, &["--web.enable-remote-write-receiver"]);
    let nodes: Vec<Server> = (0..3).map(|i| cluster.spawn(i)).collect();
    assert!(formed(&nodes, 1.0), "the dataflow did not form");
    // the groups' loops take up their watches within a second of the computation forming
    std::thread::sleep(Duration::from_secs(2));
    // the alert as the nodes answer it: the evaluator's answer holds it
    let states = || -> Vec<String> {
        nodes
            .iter()
            .flat_map(|n| {
                let (_, v) = n.get_json("/api/v1/alerts");
                let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
                alerts
                    .into_iter()
                    .filter(|a| a["labels"]["alertname"] == "Hot" && a["labels"]["host"] == "a")
                    .map(|a| a["state"].as_str().unwrap_or("").to_string())
            })
            .collect()
    };
    let temp = |v: f64| vec![series(&[("__name__", "temp"), ("host", "a")], &[(now_ms(), v)])];
    assert_eq!(remote_write(&nodes[1], temp(20.0)).0, 204);
    let fired = wait_for(Duration::from_secs(30), || states().iter().any(|s| s == "firing").then_some(()));
    assert!(fired.is_some(), "the alert did not fire between evaluations: {:?}", states());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(remote_write(&nodes[2], temp(5.0)).0, 204);
    let resolved = wait_for(Duration::from_secs(30), || states().is_empty().then_some(()));
    assert!(resolved.is_some(), "the alert did not resolve between evaluations: {:?}", states());
}

/// The next change of `client`'s subscription that gives `host` the value `value` (among at
/// most 20 messages).
fn change_with(client: &mut Subscriber, host: &str, value: f64) -> serde_json::Value {
    for _ in 0..20 {
        let message = client.next();
        let lists = [&message["added"], &message["changed"]];
        let has = lists.iter().filter_map(|l| l.as_array()).flatten().any(|s| {
            s["metric"]["host"] == host
                && s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) == Some(value)
        });
        if message["type"] == "change" && has {
            return message;
        }
    }
    panic!("no change of {host} to {value} in 20 messages");
}

/// A subscription on any node of the cluster's computation is a view that every node installs
/// (through the computation's sequenced log), in the hub of the node the client is on, which
/// every node feeds the samples it stores: its snapshot
/// is one process's, and its changes come at the samples' own times whichever node stores
/// them, where an evaluation in batch (here every 2 s) stamps a change with its own time.
/// While a node is dead the subscription goes on in batch, and it is a view again once the
/// computation forms again: the client sees one stream throughout. Unsubscribing frees the
/// view on every node.
#[test]
fn subscriptions_are_views_on_the_clusters_computation() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--web.enable-remote-write-receiver", "--subscribe.batch-interval=2s"];
    let cluster = DataflowCluster::new(dir.path(), 3, "", &extra);
    let mut nodes: Vec<Server> = (0..3).map(|i| cluster.spawn(i)).collect();
    let single_dir = dir.path().join("single");
    std::fs::create_dir_all(&single_dir).unwrap();
    let single = start_promflow(&single_dir, "", &extra);
    assert!(formed(&nodes, 1.0), "the dataflow did not form");
    let temp = |node: &Server, host: &str, t: i64, v: f64| {
        let ts = vec![series(&[("__name__", "temp"), ("host", host)], &[(t, v)])];
        let (code, body) = remote_write(node, ts);
        assert_eq!(code, 204, "{body}");
    };
    let t0 = now_ms();
    let hosts = ["a", "b", "c", "d", "e", "f"];
    for (i, host) in hosts.iter().enumerate() {
        temp(&nodes[i % 3], host, t0, 5.0 + 3.0 * i as f64);
        temp(&single, host, t0, 5.0 + 3.0 * i as f64);
    }
    let arrangements = |nodes: &[Server]| {
        nodes.iter().map(|n| metric(n, "promflow_dataflow_arrangements")).collect::<Vec<_>>()
    };
    let before = arrangements(&nodes);
    let query = serde_json::json!({"id": "hot", "query": "temp > 10"});
    let mut client = Subscriber::connect(&nodes[1]);
    client.send(query.clone());
    let snapshot = client.next();
    let mut alone = Subscriber::connect(&single);
    alone.send(query);
    let snapshot_alone = alone.next();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["result"].as_array().map(Vec::len), Some(4), "{snapshot}");
    // the elements, not the times (each server's own)
    let elements = |v: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        let list = v["result"].as_array().cloned().unwrap_or_default();
        list.iter().map(|s| (s["metric"].to_string(), s["value"][1].clone())).collect()
    };
    assert_eq!(elements(&snapshot), elements(&snapshot_alone), "one process's snapshot");
    let installed = wait_for(Duration::from_secs(10), || {
        before.iter().zip(arrangements(&nodes)).all(|(b, a)| a > *b).then_some(())
    });
    assert!(installed.is_some(), "not installed on every node: {before:?} → {:?}", arrangements(&nodes));
    // in the hub of the client's node, which the others feed: no dataflow of its own
    for node in &nodes {
        assert!(metric(node, "promflow_dataflow_hub_nodes") > 0.0, "not in the hub");
    }
    // stamped a little ahead, so that the computation's clock has not passed the sample when
    // it arrives (a late sample counts from its arrival)
    // each host written to another node, and stored where its labels hash
    for (k, host) in hosts.iter().enumerate() {
        let (t, v) = (now_ms() + 300, 30.0 + k as f64);
        temp(&nodes[k % 3], host, t, v);
        let change = change_with(&mut client, host, v);
        assert_eq!(change["time"].as_f64(), Some(t as f64 / 1000.0), "at the sample's time: {change}");
    }
    // a dead node: the stream goes on, its changes evaluated in batch
    nodes[2].kill9();
    let left = wait_for(Duration::from_secs(30), || {
        nodes[..2].iter().all(|n| dataflow_state(n).0 == 0.0).then_some(())
    });
    assert!(left.is_some(), "the survivors did not leave the computation");
    temp(&nodes[0], "a", now_ms(), 40.0);
    change_with(&mut client, "a", 40.0);
    // the computation forms again, and the subscription is a view on it again
    nodes[2] = cluster.spawn(2);
    assert!(formed(&nodes[..2], 2.0) && formed(&nodes[2..], 1.0), "the dataflow did not form again");
    let back = (0..20).any(|k| {
        let (t, v) = (now_ms() + 300, 50.0 + k as f64);
        temp(&nodes[2], "b", t, v);
        change_with(&mut client, "b", v)["time"].as_f64() == Some(t as f64 / 1000.0)
    });
    assert!(back, "the subscription did not become a view again");
    client.send(serde_json::json!({"id": "hot", "unsubscribe": true}));
    let freed = wait_for(Duration::from_secs(10), || (arrangements(&nodes) == before).then_some(()));
    assert!(freed.is_some(), "not freed on every node: {before:?} → {:?}", arrangements(&nodes));
}

/// `promflow_cluster_dataflow_up` and `promflow_cluster_dataflow_formations_total` of a node.
fn dataflow_state(node: &Server) -> (f64, f64) {
    (metric(node, "promflow_cluster_dataflow_up"), metric(node, "promflow_cluster_dataflow_formations_total"))
}

/// A cluster whose nodes form one dataflow computation (`--cluster.dataflow-peer`): the
/// HTTP and dataflow ports of every node, and the configuration they share.
struct DataflowCluster {
    dir: PathBuf,
    cfg: PathBuf,
    ports: Vec<u16>,
    dataflow_ports: Vec<u16>,
    extra: Vec<String>,
}

impl DataflowCluster {
    fn new(dir: &Path, n: usize, config: &str, extra: &[&str]) -> DataflowCluster {
        let cfg = dir.join("cluster.yml");
        std::fs::write(&cfg, config).unwrap();
        DataflowCluster {
            dir: dir.to_path_buf(),
            cfg,
            ports: (0..n).map(|_| free_port()).collect(),
            dataflow_ports: (0..n).map(|_| free_port()).collect(),
            extra: extra.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// Starts node `i` (again, after a kill, on the same data) and waits until it serves.
    fn spawn(&self, i: usize) -> Server {
        let mut node = self.spawn_unready(i);
        node.wait_ready("/-/ready");
        node
    }

    /// Starts node `i` without waiting for it.
    fn spawn_unready(&self, i: usize) -> Server {
        let node_dir = self.dir.join(format!("node{i}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let mut flags: Vec<String> =
            self.ports.iter().map(|p| format!("--cluster.peer=127.0.0.1:{p}")).collect();
        flags.extend(self.dataflow_ports.iter().map(|p| format!("--cluster.dataflow-peer=127.0.0.1:{p}")));
        flags.push(format!("--cluster.index={i}"));
        flags.extend(self.extra.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        spawn_promflow(&node_dir, &self.cfg, self.ports[i], &flags)
    }
}

/// Waits until every node of `nodes` is in the cluster's dataflow, formed `times` times.
fn formed(nodes: &[Server], times: f64) -> bool {
    wait_for(Duration::from_secs(60), || {
        nodes.iter().all(|n| dataflow_state(n) == (1.0, times)).then_some(())
    })
    .is_some()
}

#[test]
fn the_dataflow_forms_again_when_a_killed_node_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DataflowCluster::new(dir.path(), 3, "", &[]);
    // a node is ready before the others start: it serves while its dataflow waits for them
    let mut nodes = vec![cluster.spawn(0)];
    assert_eq!(dataflow_state(&nodes[0]), (0.0, 0.0), "formed with one node of three");
    nodes.push(cluster.spawn(1));
    nodes.push(cluster.spawn(2));
    assert!(
        formed(&nodes, 1.0),
        "the dataflow did not form: {:?}",
        nodes.iter().map(dataflow_state).collect::<Vec<_>>()
    );
    nodes[2].kill9();
    let survivors_lost = wait_for(Duration::from_secs(30), || {
        nodes[..2]
            .iter()
            .all(|n| dataflow_state(n).0 == 0.0 && metric(n, "promflow_cluster_dataflow_losses_total") == 1.0)
            .then_some(())
    });
    assert!(survivors_lost.is_some(), "the survivors did not notice the lost node");
    // the survivors go on answering while the dataflow is down
    let (status, _) = nodes[0].get_json("/api/v1/query?query=up");
    assert_eq!(status, 200);
    nodes[2] = cluster.spawn(2);
    assert!(
        formed(&nodes[..2], 2.0) && formed(&nodes[2..], 1.0),
        "the dataflow did not form again: {:?}",
        nodes.iter().map(dataflow_state).collect::<Vec<_>>()
    );
}

/// A node that stalls while samples flow (stopped with SIGSTOP, as a paused virtual machine
/// or a swapping host stalls) makes the others leave the computation: none of the nodes dies
/// of it, and the computation forms again once the node goes on. timely fails every worker
/// of a computation that lost a process, and closing an input that still held samples,
/// while a worker unwound, used to panic a second time and abort the whole server.
#[test]
fn a_node_stalled_under_load_takes_no_node_down() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    // many views, each with its own inputs, as a real rule set has
    let mut text = String::from("groups:\n  - name: rates\n    interval: 1s\n    rules:\n");
    for i in 0..40 {
        text += &format!(
            "      - record: job:load:rate1m_{i}\n        expr: sum by (job) (rate(load_total{{job=~\"job-{}.*\"}}[1m]))\n",
            i % 10
        );
    }
    std::fs::write(&rules, text).unwrap();
    let config = format!("rule_files: ['{}']\n", rules.display());
    let cluster = DataflowCluster::new(dir.path(), 3, &config, &["--web.enable-remote-write-receiver"]);
    let mut nodes: Vec<Server> = (0..3).map(|i| cluster.spawn(i)).collect();
    assert!(formed(&nodes, 1.0), "the dataflow did not form");
    // two writers, to the nodes that keep running, each with its own series
    let writing = std::sync::Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = nodes[1..]
        .iter()
        .map(|node| {
            let (base, writing) = (node.base.clone(), std::sync::Arc::clone(&writing));
            std::thread::spawn(move || {
                let http = client();
                let mut round = 0.0;
                while writing.load(Ordering::Relaxed) {
                    let t = now_ms();
                    let ts = (0..2_000)
                        .map(|i| {
                            let (job, instance) = (format!("job-{}", i % 10), format!("{base}/{i}"));
                            series(
                                &[("__name__", "load_total"), ("job", &job), ("instance", &instance)],
                                &[(t, round)],
                            )
                        })
                        .collect();
                    // a write the stalled node holds up may fail: the load goes on
                    let _ = try_remote_write(&http, &base, ts);
                    round += 1.0;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    // a node that exited fails the test with its log (a stopped one has not exited)
    let none_exited = |nodes: &mut [Server]| {
        for (i, node) in nodes.iter_mut().enumerate() {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("node {i} exited ({status}):\n{}", node.logs());
            }
        }
    };
    nodes[0].signal("STOP");
    let left = wait_for(Duration::from_secs(60), || {
        none_exited(&mut nodes);
        nodes[1..].iter().all(|n| dataflow_state(n).0 == 0.0).then_some(())
    });
    nodes[0].signal("CONT");
    assert!(left.is_some(), "the running nodes did not leave the computation of a stalled node");
    let again = wait_for(Duration::from_secs(90), || {
        none_exited(&mut nodes);
        nodes
            .iter()
            .all(|n| matches!(dataflow_state(n), (up, times) if up == 1.0 && times >= 2.0))
            .then_some(())
    });
    writing.store(false, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    none_exited(&mut nodes);
    assert!(
        again.is_some(),
        "the dataflow did not form again: {:?}",
        nodes.iter().map(dataflow_state).collect::<Vec<_>>()
    );
}

/// The samples of the recorded series `name` over the 4 s before `at_ms`, by labels and
/// timestamp, as `node` answers for the whole cluster.
fn recorded(node: &Server, name: &str, at_ms: i64) -> BTreeMap<(String, String), f64> {
    let path = format!(
        "/api/v1/query?query={}&time={:.3}",
        urlencode(&format!("{name}[4s]")),
        at_ms as f64 / 1000.0
    );
    let (status, v) = node.get_json(&path);
    assert_eq!(status, 200, "{v}");
    let mut out = BTreeMap::new();
    for r in result(&v) {
        for point in r["values"].as_array().unwrap() {
            let value: f64 = point[1].as_str().unwrap().parse().unwrap();
            out.insert((r["metric"].to_string(), point[0].to_string()), value);
        }
    }
    out
}

/// Whether `node`'s recorded series agree with `single`'s at the evaluations both made in
/// the 4 s before now: what differs, if anything.
fn recorded_alike(node: &Server, single: &Server, names: &[&str]) -> Result<(), String> {
    let at = now_ms();
    for name in names {
        let (got, want) = (recorded(node, name, at), recorded(single, name, at));
        let common: Vec<_> = want.keys().filter(|k| got.contains_key(*k)).collect();
        if common.len() < 3 {
            return Err(format!("{name}: {} evaluations in common: {got:?} against {want:?}", common.len()));
        }
        for k in common {
            let (g, w) = (got[k], want[k]);
            if (g - w).abs() > 1e-9 * w.abs().max(1.0) {
                return Err(format!("{name} {k:?}: {g} where one process has {w}"));
            }
        }
    }
    Ok(())
}

/// The firing alerts' names and jobs.
fn firing(node: &Server) -> Vec<(String, String)> {
    let (_, v) = node.get_json("/api/v1/alerts");
    let mut out: Vec<(String, String)> = v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            (a["labels"]["alertname"].as_str().unwrap().into(), a["labels"]["job"].as_str().unwrap().into())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rules_read_the_clusters_views_as_one_process_reads_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:
  - name: rates
    interval: 1s
    rules:
      - record: job:http_requests:rate5m
        expr: sum by (job) (rate(http_requests_total[5m]))
      - record: job:temperature:max
        expr: max by (job) (temperature)
      - alert: Warm
        expr: max by (job) (temperature) > 25
  - name: chained
    interval: 1s
    rules:
      - record: all:temperature:max
        expr: max(job:temperature:max)
",
    )
    .unwrap();
    // an Alertmanager for the cluster and one for the single process, when installed
    let managers = ["am-cluster", "am-single"].map(|name| {
        let am_dir = dir.path().join(name);
        std::fs::create_dir_all(&am_dir).unwrap();
        crate::alerting::start_alertmanager(&am_dir)
    });
    let config = |am: &Option<crate::alerting::Alertmanager>| {
        let mut config = format!("rule_files: ['{}']\n", rules.display());
        if let Some(am) = am {
            let target = am.base.trim_start_matches("http://");
            config +=
                &format!("alerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['{target}']\n");
        }
        config
    };
    let extra = ["--web.enable-remote-write-receiver", "--cluster.replication-factor=2"];
    let cluster = DataflowCluster::new(dir.path(), 3, &config(&managers[0]), &extra);
    let mut nodes: Vec<Server> = (0..3).map(|i| cluster.spawn(i)).collect();
    let single_dir = dir.path().join("single");
    std::fs::create_dir_all(&single_dir).unwrap();
    // the same rule file, so the groups evaluate at the same times
    let single_cfg = single_dir.join("single.yml");
    std::fs::write(&single_cfg, config(&managers[1])).unwrap();
    let single =
        start_promflow_with(&single_dir, &single_cfg, free_port(), &["--web.enable-remote-write-receiver"]);
    assert!(formed(&nodes, 1.0), "the dataflow did not form");
    // every rule is a view on the cluster's computation
    for (i, node) in nodes.iter().enumerate() {
        let (_, text) = node.get_text("/metrics");
        assert!(text.contains("promflow_rule_expressions{evaluation=\"view\"} 4"), "node {i}:\n{text}");
    }
    // the series stopped a minute ago: `rate`'s extrapolation is cut short at the window's
    // end, and the rate moves with time alone, on every node, at the evaluator's times
    let all = workload(now_ms() - 60_000);
    let half = all.len() / 2;
    assert_eq!(remote_write(&nodes[1], all[..half].to_vec()).0, 204);
    assert_eq!(remote_write(&nodes[2], all[half..].to_vec()).0, 204);
    assert_eq!(remote_write(&single, all).0, 204);
    // the chained group reads a series that stays the same: a series that moves at every
    // evaluation is read as its owner had it at the evaluation's time, which a recorded
    // series reaches as late as its group's evaluation and the copy to its owner take
    let names = ["job:http_requests:rate5m", "job:temperature:max", "all:temperature:max"];
    let agree = |nodes: &[&Server]| {
        let mut last = Err(String::new());
        for _ in 0..20 {
            std::thread::sleep(Duration::from_secs(1));
            last = nodes.iter().try_for_each(|n| recorded_alike(n, &single, &names));
            if last.is_ok() {
                break;
            }
        }
        last
    };
    if let Err(e) = agree(&nodes.iter().collect::<Vec<_>>()) {
        panic!("the cluster's recorded series differ from one process's: {e}");
    }
    // each group is evaluated on one node, which reads its views (the computation answers
    // them), and every node's rules API shows each group as its evaluator has it
    let evaluator = |group: &str| {
        let by = evaluated_lately(&nodes, group);
        assert_eq!(by.len(), 1, "{group} is evaluated by nodes {by:?}");
        by[0]
    };
    for group in ["rates", "chained"] {
        let node = evaluator(group);
        assert!(metric(&nodes[node], "promflow_rule_view_reads_total") > 0.0, "node {node} read no views");
        for (i, n) in nodes.iter().enumerate() {
            let (_, v) = n.get_json("/api/v1/rules");
            let shown = v["data"]["groups"].as_array().unwrap().iter().find(|g| g["name"] == group).cloned();
            let age = shown.as_ref().map_or(f64::MAX, |g| seconds_since(&g["lastEvaluation"]));
            assert!(age < 3.0, "node {i} shows {group} evaluated {age} s ago: {shown:?}");
        }
    }
    let want_firing = firing(&single);
    assert_eq!(want_firing.len(), 2, "{want_firing:?}");
    for node in &nodes {
        assert_eq!(firing(node), want_firing);
    }
    // a group's evaluator notifies its Alertmanager of its alerts; Alertmanager holds each
    // once, as it holds the single process's
    if let [Some(cluster_am), Some(single_am)] = &managers {
        let labels = |am: &crate::alerting::Alertmanager| {
            let mut out: Vec<String> =
                crate::alerting::am_alerts(am).iter().map(|a| a["labels"].to_string()).collect();
            out.sort();
            out
        };
        let alike = wait_for(Duration::from_secs(20), || {
            let (got, want) = (labels(cluster_am), labels(single_am));
            (want.len() == 2 && got == want).then_some(())
        });
        assert!(
            alike.is_some(),
            "Alertmanager holds {:?} from the cluster, {:?} from one process",
            labels(cluster_am),
            labels(single_am)
        );
    }
    // the alerts' evaluator lost: the computation stops, the others evaluate in batch over
    // the copies, and take the alerts over as they were
    let lost = evaluator("rates");
    let active_since = active_at(&nodes[lost]);
    assert_eq!(active_since.len(), 2, "{active_since:?}");
    nodes[lost].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != lost).collect();
    assert!(
        wait_for(Duration::from_secs(30), || (dataflow_state(&nodes[survivors[0]]).0 == 0.0).then_some(()))
            .is_some(),
        "the loss went unnoticed"
    );
    if let Err(e) = agree(&survivors.iter().map(|&i| &nodes[i]).collect::<Vec<_>>()) {
        panic!("with a node down, the recorded series differ from one process's: {e}");
    }
    // every survivor evaluates every group since the loss (one survivor may notice the loss
    // a moment after the other)
    let all_evaluate =
        wait_for(Duration::from_secs(10), || (evaluated_lately(&nodes, "rates") == survivors).then_some(()));
    assert!(
        all_evaluate.is_some(),
        "evaluated by {:?}, not every survivor",
        evaluated_lately(&nodes, "rates")
    );
    for &i in &survivors {
        assert_eq!(active_at(&nodes[i]), active_since, "node {i} took the alerts over otherwise");
    }
    // back: the views are installed again from every node's history, and agree again
    nodes[lost] = cluster.spawn(lost);
    let formed_again =
        survivors.iter().all(|&i| formed(&nodes[i..=i], 2.0)) && formed(&nodes[lost..=lost], 1.0);
    assert!(formed_again, "the dataflow did not form again");
    if let Err(e) = agree(&nodes.iter().collect::<Vec<_>>()) {
        panic!("after the node returned, the recorded series differ from one process's: {e}");
    }
    for node in &nodes {
        assert_eq!(firing(node), want_firing);
    }
}

/// The nodes whose own status (as a peer asks for it) shows `group` evaluated in the last 3 s.
fn evaluated_lately(nodes: &[Server], group: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let Ok(r) = client().get(node.url("/api/v1/rules")).header("promflow-cluster-hop", "1").send() else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&r.text().unwrap_or_default()).unwrap_or_default();
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        if groups.iter().any(|g| g["name"] == group && seconds_since(&g["lastEvaluation"]) < 3.0) {
            out.push(i);
        }
    }
    out
}

/// An RFC 3339 time in an API answer, in milliseconds.
fn time_ms(t: &serde_json::Value) -> i64 {
    let t = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap_or_default()).expect("an RFC 3339 time");
    t.timestamp_millis()
}

/// Seconds from an RFC 3339 time in an API answer until now.
fn seconds_since(t: &serde_json::Value) -> f64 {
    (now_ms() - time_ms(t)) as f64 / 1000.0
}

/// Each alert `node` answers, by its labels: when it became active, in whole seconds (the
/// precision of `ALERTS_FOR_STATE`, which a node taking an alert over reads).
fn active_at(node: &Server) -> BTreeMap<String, i64> {
    let (_, v) = node.get_json("/api/v1/alerts");
    let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
    alerts.iter().map(|a| (a["labels"].to_string(), time_ms(&a["activeAt"]) / 1000)).collect()
}

/// How many rules `node` reads from views, while its computation is formed.
fn view_rules(node: &Server) -> Option<usize> {
    let (_, text) = node.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("promflow_rule_expressions{evaluation=\"view\"} "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn changed_rules_form_the_dataflow_again_once_every_node_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let one_rule =
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - record: a\n        expr: sum(up)\n";
    std::fs::write(&rules, one_rule).unwrap();
    let config = format!("rule_files: ['{}']\n", rules.display());
    let cluster = DataflowCluster::new(dir.path(), 3, &config, &["--web.enable-lifecycle"]);
    let nodes: Vec<Server> = (0..3).map(|i| cluster.spawn(i)).collect();
    assert!(formed(&nodes, 1.0), "the dataflow did not form");
    assert!(nodes.iter().all(|n| view_rules(n) == Some(1)));
    std::fs::write(&rules, format!("{one_rule}      - record: b\n        expr: count(up)\n")).unwrap();
    let reload = |node: &Server| {
        let r = client().post(node.url("/-/reload")).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
    };
    // one node with the new rules: it leaves, and the others cannot form with it
    reload(&nodes[0]);
    let apart =
        wait_for(Duration::from_secs(30), || nodes.iter().all(|n| dataflow_state(n).0 == 0.0).then_some(()));
    assert!(apart.is_some(), "nodes with other rules stayed in one computation");
    std::thread::sleep(Duration::from_secs(3));
    assert!(nodes.iter().all(|n| dataflow_state(n).0 == 0.0), "nodes with other rules formed a computation");
    for node in &nodes[1..] {
        reload(node);
    }
    assert!(
        formed(&nodes, 2.0),
        "the dataflow did not form again: {:?}",
        nodes.iter().map(dataflow_state).collect::<Vec<_>>()
    );
    assert!(nodes.iter().all(|n| view_rules(n) == Some(2)), "the new rule's view is missing");
}

#[test]
fn a_wrong_dataflow_setting_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let peers = ["--cluster.peer=127.0.0.1:1", "--cluster.peer=127.0.0.1:2", "--cluster.index=0"];
    fn with<'a>(peers: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [peers, extra].concat()
    }
    let log = refused_start(dir.path(), &with(&peers, &["--cluster.dataflow-peer=127.0.0.1:3"]));
    assert!(log.contains("one for every node"), "{log}");
    let log = refused_start(
        dir.path(),
        &with(&peers, &["--cluster.dataflow-peer=127.0.0.1:3", "--cluster.dataflow-peer=127.0.0.1:3"]),
    );
    assert!(log.contains("--cluster.dataflow-peer"), "{log}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("--cluster.dataflow-peer={}", taken.local_addr().unwrap());
    let log = refused_start(dir.path(), &with(&peers, &[&taken, "--cluster.dataflow-peer=127.0.0.1:4"]));
    assert!(log.contains("cannot listen"), "{log}");
    let log = refused_start(dir.path(), &["--cluster.dataflow-peer=127.0.0.1:3"]);
    assert!(log.contains("needs --cluster.peer"), "{log}");
}

/// A cluster with a secret (`--cluster.secret-file`) whose clients need a password
/// (`--web.config.file`): the nodes reach each other with the secret, for copies, reads and
/// the dataflow, while a client without the password, or with it but posing as a node (the
/// hop header), is refused.
#[test]
fn nodes_with_a_secret_serve_clients_behind_basic_authentication() {
    use crate::web_security::{users_yaml, PASSWORD, USER};
    const SERIES: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, users_yaml()).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "9f2c54d1b7e04a6c8e13f0a9d2b6c7e5\n").unwrap();
    let web_flag = format!("--web.config.file={}", web.display());
    let secret_flag = format!("--cluster.secret-file={}", secret.display());
    let extra =
        ["--web.enable-remote-write-receiver", "--cluster.replication-factor=2", &web_flag, &secret_flag];
    let cluster = DataflowCluster::new(dir.path(), 3, "", &extra);
    let nodes: Vec<Server> = (0..3).map(|i| cluster.spawn_unready(i)).collect();
    let nodes: Vec<Server> = nodes
        .into_iter()
        .map(|mut n| {
            n.wait_logged_ready();
            n
        })
        .collect();
    let get = |node: &Server, path: &str| {
        let r = client().get(node.url(path)).basic_auth(USER, Some(PASSWORD)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let value = |node: &Server, name: &str| -> Option<f64> {
        let (_, text) = get(node, "/metrics");
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let formed = wait_for(Duration::from_secs(60), || {
        nodes.iter().all(|n| value(n, "promflow_cluster_dataflow_up") == Some(1.0)).then_some(())
    });
    assert!(formed.is_some(), "the dataflow did not form between nodes holding the secret");
    let t = now_ms() - 5_000;
    let batch: Vec<TimeSeries> = (0..SERIES)
        .map(|s| series(&[("__name__", "secured"), ("s", &s.to_string())], &[(t, s as f64)]))
        .collect();
    let body =
        promflow_remote::encode(&promflow_remote::WriteRequest { timeseries: batch, metadata: vec![] });
    let write = |node: &Server, auth: bool, headers: &[(&str, &str)]| {
        let mut r = client()
            .post(node.url("/api/v1/write"))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .body(body.clone());
        if auth {
            r = r.basic_auth(USER, Some(PASSWORD));
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    assert_eq!(write(&nodes[0], false, &[]).0, 401, "a client without the password was let in");
    // a client with the password cannot pose as a node: with the hop header, or a made-up token
    for posing in [[("promflow-cluster-hop", "1")], [("promflow-cluster-auth", "00ff")]] {
        let (status, body) = write(&nodes[0], true, &posing);
        assert_eq!(status, 401, "{posing:?}: {body}");
    }
    let (status, body) = write(&nodes[0], true, &[]);
    assert_eq!(status, 204, "{body}");
    // two copies of each series, made by node 0 on the nodes that own them: each node's own
    // storage, as a node holding the secret asks it
    let token = ClusterSecret::read(&secret).unwrap();
    let held_here = |node: &Server| {
        let r = client()
            .get(node.url("/federate?match[]=secured"))
            .header("promflow-cluster-hop", "1")
            .header(CLUSTER_AUTH_HEADER, token.http_token())
            .send()
            .unwrap();
        r.text().unwrap_or_default().lines().filter(|l| l.starts_with("secured{")).count()
    };
    let copies: usize = nodes.iter().map(held_here).sum();
    assert_eq!(copies, 2 * SERIES);
    // a client's federation is the whole cluster's, each series once
    let (status, text) = get(&nodes[1], "/federate?match[]=secured");
    assert_eq!((status, text.lines().filter(|l| l.starts_with("secured{")).count()), (200, SERIES), "{text}");
    // every node reads the others' storage, with the secret, to answer for the cluster
    for (i, node) in nodes.iter().enumerate() {
        let (status, text) = get(node, &format!("/api/v1/query?query={}", urlencode("count(secured)")));
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(result(&v)[0]["value"][1], SERIES.to_string(), "node {i}: {v}");
        // the count was evaluated in parts on the nodes, whose requests carried the secret
        let in_parts = value(node, "promflow_cluster_query_aggregations_total{evaluated=\"in_parts\"}");
        assert_eq!(in_parts, Some(1.0), "node {i}");
    }
}

/// A cluster secret that cannot be honoured stops the server at start-up, saying why.
#[test]
fn an_unusable_cluster_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let peers = ["--cluster.peer=127.0.0.1:1", "--cluster.peer=127.0.0.1:2", "--cluster.index=0"];
    let short = dir.path().join("short");
    std::fs::write(&short, "0123456789\n").unwrap();
    let short = format!("--cluster.secret-file={}", short.display());
    let log = refused_start(dir.path(), &[&peers[..], &[short.as_str()]].concat());
    assert!(log.contains("at least 16"), "{log}");
    let missing = format!("--cluster.secret-file={}", dir.path().join("none").display());
    let log = refused_start(dir.path(), &[&peers[..], &[missing.as_str()]].concat());
    assert!(log.contains("--cluster.secret-file") && log.contains("none"), "{log}");
    let good = dir.path().join("secret");
    std::fs::write(&good, "0123456789abcdef0123").unwrap();
    let good = format!("--cluster.secret-file={}", good.display());
    let log = refused_start(dir.path(), &[good.as_str()]);
    assert!(log.contains("needs a cluster"), "{log}");
    // without a secret, the nodes would have no password for each other
    let web = dir.path().join("web.yml");
    std::fs::write(&web, crate::web_security::users_yaml()).unwrap();
    let web = format!("--web.config.file={}", web.display());
    let log = refused_start(dir.path(), &[&peers[..], &[web.as_str()]].concat());
    assert!(log.contains("needs --cluster.secret-file"), "{log}");
}
