//! Live result streams end to end: the real binary, a websocket client on
//! `/api/v1/subscribe`, samples pushed through remote write, and the `promflow subscribe`
//! client.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{metric, now_ms, remote_write, series, start_promflow, wait_for, Server, Subscriber as Client};
use serde_json::{json, Value};
use tungstenite::Message;

/// A sample list as `{metric labels (without the name) → value}`, order aside.
fn samples(list: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|s| {
            (
                s["metric"]["host"].as_str().unwrap_or("").to_string(),
                s["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// promflow with the remote-write receiver and no scrape target, and `extra` flags.
fn server(dir: &tempfile::TempDir, extra: &[&str]) -> Server {
    let flags: Vec<&str> = ["--web.enable-remote-write-receiver"].iter().chain(extra).copied().collect();
    start_promflow(dir.path(), "global:\n  scrape_interval: 1m\n", &flags)
}

fn temp(server: &Server, host: &str, t: i64, v: f64) {
    let (code, body) = remote_write(server, vec![series(&[("__name__", "temp"), ("host", host)], &[(t, v)])]);
    assert_eq!(code, 204, "{body}");
}

#[test]
fn a_subscription_streams_its_snapshot_then_each_change_and_frees_its_view() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let t0 = now_ms();
    temp(&server, "a", t0, 5.0);
    temp(&server, "b", t0, 20.0);
    let (arrangements0, kept0) = (
        metric(&server, "promflow_dataflow_arrangements"),
        metric(&server, "promflow_dataflow_samples_kept"),
    );

    let mut a = Client::connect(&server);
    // a bad query, SQL and a scalar are answered on the socket, which stays open
    a.send(json!({"id": "bad", "query": "sum(("}));
    let bad = a.next();
    assert_eq!(
        (bad["id"].as_str(), bad["type"].as_str(), bad["errorType"].as_str()),
        (Some("bad"), Some("error"), Some("bad_data"))
    );
    a.send(json!({"id": 7, "lang": "sql", "query": "SELECT 1"}));
    assert_eq!(a.next()["type"], "error");
    a.send(json!({"id": 8, "query": "1 + 1"}));
    assert_eq!(a.next()["type"], "error");

    a.send(json!({"id": "hot", "query": "temp > 10"}));
    let snapshot = a.next();
    assert_eq!(
        (snapshot["id"].as_str(), snapshot["type"].as_str()),
        (Some("hot"), Some("snapshot")),
        "{snapshot}"
    );
    assert_eq!(samples(&snapshot["result"]), vec![("b".to_string(), "20".to_string())]);
    assert_eq!(snapshot["result"][0]["metric"]["__name__"], "temp", "a filter keeps the metric name");
    assert!(metric(&server, "promflow_dataflow_arrangements") > arrangements0);

    // a second client on the same query starts from the same state, then sees the same stream
    let mut b = Client::connect(&server);
    b.send(json!({"id": "hot", "query": "temp > 10"}));
    let snapshot_b = b.next();
    assert_eq!(samples(&snapshot_b["result"]), samples(&snapshot["result"]));

    // stamped a little ahead, so that the dataflow's clock (which follows the wall clock)
    // has not passed the sample when it arrives: a late sample counts from its arrival
    let t1 = now_ms() + 300;
    temp(&server, "a", t1, 15.0);
    let added = a.next();
    assert_eq!(added["type"], "change", "{added}");
    assert_eq!(added["time"].as_f64().unwrap(), t1 as f64 / 1000.0, "stamped with the sample's time");
    assert_eq!(samples(&added["added"]), vec![("a".to_string(), "15".to_string())]);
    assert_eq!(samples(&added["changed"]), vec![]);
    assert_eq!(b.next(), added, "the second client gets the same message");

    temp(&server, "b", now_ms(), 30.0);
    let changed = a.next();
    assert_eq!(samples(&changed["changed"]), vec![("b".to_string(), "30".to_string())], "{changed}");
    assert_eq!(b.next(), changed);

    temp(&server, "a", now_ms().max(t1 + 1), 1.0);
    let removed = a.next();
    assert_eq!(removed["removed"].as_array().map(Vec::len), Some(1), "{removed}");
    assert_eq!(removed["removed"][0]["metric"]["host"], "a");
    assert_eq!(b.next(), removed);

    // unsubscribing frees nothing while the other client reads the view; the last one does
    a.send(json!({"id": "hot", "unsubscribe": true}));
    assert_eq!(a.next(), json!({"id": "hot", "type": "unsubscribed"}));
    assert!(metric(&server, "promflow_dataflow_arrangements") > arrangements0);
    assert_eq!(metric(&server, "promflow_subscriptions"), 1.0);
    drop(b);
    let freed = wait_for(Duration::from_secs(10), || {
        let now = (
            metric(&server, "promflow_dataflow_arrangements"),
            metric(&server, "promflow_dataflow_samples_kept"),
        );
        (now == (arrangements0, kept0) && metric(&server, "promflow_subscriptions") == 0.0).then_some(())
    });
    assert!(freed.is_some(), "the view's dataflow state is freed when its last subscription ends");

    // the connection still serves: a new subscription starts from history again
    a.send(json!({"id": "again", "query": "temp"}));
    let again = a.next();
    assert_eq!(
        samples(&again["result"]),
        vec![("a".to_string(), "1".to_string()), ("b".to_string(), "30".to_string())]
    );
}

/// A standing SQL query and its PromQL twin on one connection receive the same stream: the
/// same snapshot, then the same change at each sample, group labels and values alike.
#[test]
fn a_sql_subscription_streams_what_its_promql_twin_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let write = |host: &str, job: &str, t: i64, v: f64| {
        let labels = [("__name__", "temp"), ("host", host), ("job", job)];
        let (code, body) = remote_write(&server, vec![series(&labels, &[(t, v)])]);
        assert_eq!(code, 204, "{body}");
    };
    let t0 = now_ms();
    write("a", "x", t0, 5.0);
    write("b", "y", t0, 20.0);
    write("c", "y", t0, 12.0);

    let mut client = Client::connect(&server);
    // what cannot stand is refused on the socket with the reason
    client.send(json!({"id": "rows", "lang": "sql", "query": "SELECT host, value FROM temp WHERE ts > now() - INTERVAL '5 minutes'"}));
    let refused = client.next();
    assert_eq!((refused["id"].as_str(), refused["errorType"].as_str()), (Some("rows"), Some("bad_data")));
    assert!(refused["error"].as_str().unwrap().contains("aggregates"), "{refused}");

    let sql = "SELECT job, max(value) AS hottest FROM temp WHERE ts > now() - INTERVAL '5 minutes' \
               GROUP BY job HAVING max(value) > 10";
    let promql = "max by (job) (max_over_time(temp[5m])) and max by (job) (max_over_time(temp[5m])) > 10";
    client.send(json!({"id": "sql", "lang": "sql", "query": sql}));
    let mut sql_snapshot = client.next();
    assert!(metric(&server, "promflow_dataflow_arrangements") > 0.0, "a view, not a batch evaluation");
    client.send(json!({"id": "promql", "query": promql}));
    let mut promql_snapshot = client.next();
    for m in [&mut sql_snapshot, &mut promql_snapshot] {
        m.as_object_mut().unwrap().remove("id");
    }
    // one message of each subscription, without their ids
    let pair = |client: &mut Client| {
        let mut got: Vec<Value> = (0..2).map(|_| client.next()).collect();
        got.sort_by_key(|m| m["id"].as_str().unwrap_or("").to_string());
        assert_eq!((got[0]["id"].as_str(), got[1]["id"].as_str()), (Some("promql"), Some("sql")), "{got:?}");
        for m in &mut got {
            m.as_object_mut().unwrap().remove("id");
        }
        let sql = got.pop().unwrap();
        (got.pop().unwrap(), sql)
    };
    assert_eq!(sql_snapshot["type"], "snapshot", "{sql_snapshot}");
    assert_eq!(sql_snapshot["result"].as_array().map(Vec::len), Some(1), "{sql_snapshot}");
    assert_eq!(sql_snapshot["result"][0]["metric"], json!({"job": "y"}), "a row's labels are its group's");
    assert_eq!(sql_snapshot["result"][0]["value"][1], "20");
    // the same evaluation time, or the same content from two starts a moment apart
    assert_eq!(sql_snapshot["result"][0]["metric"], promql_snapshot["result"][0]["metric"]);
    assert_eq!(sql_snapshot["result"][0]["value"][1], promql_snapshot["result"][0]["value"][1]);

    // stamped ahead of the dataflow's clock, so that each counts from its own time
    let t1 = now_ms() + 300;
    write("a", "x", t1, 15.0);
    let (promql_added, sql_added) = pair(&mut client);
    assert_eq!(sql_added, promql_added);
    assert_eq!(sql_added["time"].as_f64().unwrap(), t1 as f64 / 1000.0);
    assert_eq!(sql_added["added"][0]["metric"], json!({"job": "x"}), "{sql_added}");
    assert_eq!(sql_added["added"][0]["value"][1], "15");

    write("b", "y", (now_ms() + 300).max(t1 + 1), 30.0);
    let (promql_changed, sql_changed) = pair(&mut client);
    assert_eq!(sql_changed, promql_changed);
    assert_eq!(sql_changed["changed"][0]["value"][1], "30", "{sql_changed}");
}

#[test]
fn a_query_the_dataflow_does_not_maintain_is_evaluated_in_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &["--subscribe.batch-interval=200ms"]);
    let t0 = now_ms();
    temp(&server, "a", t0, 5.0);
    temp(&server, "b", t0, 20.0);
    let mut client = Client::connect(&server);
    // count_values, which the views do not maintain: one element per value, its label `host`
    client.send(json!({"id": "top", "query": "count_values(\"host\", temp)"}));
    let snapshot = client.next();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let one = |v: &str| (v.to_string(), "1".to_string());
    assert_eq!(samples(&snapshot["result"]), vec![one("20"), one("5")]);
    assert_eq!(metric(&server, "promflow_dataflow_arrangements"), 0.0, "no view");
    temp(&server, "a", t0 + 1000, 50.0);
    let change = client.next();
    assert_eq!(samples(&change["added"]), vec![one("50")], "{change}");
    assert_eq!(change["removed"][0]["metric"]["host"], "5");
    client.send(json!({"id": "top", "unsubscribe": true}));
    assert_eq!(client.next()["type"], "unsubscribed");
    assert_eq!(metric(&server, "promflow_subscriptions"), 0.0);
}

#[test]
fn a_subscription_to_a_rules_expression_shares_its_arrangement() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: g\n  rules:\n  - alert: Hot\n    expr: temp > 10\n",
    )
    .unwrap();
    let server = start_promflow(
        dir.path(),
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n",
        &["--web.enable-remote-write-receiver"],
    );
    temp(&server, "a", now_ms(), 50.0);
    let installed = wait_for(Duration::from_secs(20), || {
        (metric(&server, "promflow_rule_expressions{evaluation=\"view\"}") == 1.0).then_some(())
    });
    assert!(installed.is_some(), "the alert's view is installed");
    let arrangements = metric(&server, "promflow_dataflow_arrangements");
    let mut client = Client::connect(&server);
    client.send(json!({"id": 1, "query": "temp > 10"}));
    let snapshot = client.next();
    assert_eq!(samples(&snapshot["result"]), vec![("a".to_string(), "50".to_string())]);
    assert_eq!(metric(&server, "promflow_dataflow_arrangements"), arrangements, "no new arrangement");
    client.send(json!({"id": 1, "unsubscribe": true}));
    assert_eq!(client.next()["type"], "unsubscribed");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(metric(&server, "promflow_dataflow_arrangements"), arrangements, "the rule keeps its view");
}

#[test]
fn a_slow_client_is_disconnected_while_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    // big change messages: 2,000 series with long labels, all changing at every write
    let pad = "x".repeat(300);
    let write = |t: i64, v: f64| {
        let ts = (0..2000)
            .map(|i| {
                series(&[("__name__", "big"), ("host", &i.to_string()), ("pad", &pad)], &[(t, v + i as f64)])
            })
            .collect();
        assert_eq!(remote_write(&server, ts).0, 204);
    };
    let t0 = now_ms();
    write(t0, 0.0);
    let mut slow = Client::connect(&server);
    slow.send(json!({"id": "s", "query": "big"}));
    let mut fast = Client::connect(&server);
    fast.send(json!({"id": "f", "query": "big"}));
    assert_eq!(fast.next()["type"], "snapshot");
    // the fast client reads on its own thread, counting changes
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&received);
    let reader = std::thread::spawn(move || {
        // until the server goes
        while let Ok(m) = fast.socket.read() {
            if let Message::Text(t) = m {
                if t.as_str().contains("\"type\":\"change\"") {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    });
    let started = Instant::now();
    let mut k = 1;
    let mut disconnected_at = None;
    while started.elapsed() < Duration::from_secs(90) {
        write(t0 + k * 1000, k as f64);
        k += 1;
        std::thread::sleep(Duration::from_millis(200));
        if disconnected_at.is_none() && metric(&server, "promflow_subscription_slow_consumers_total") == 1.0 {
            disconnected_at = Some(received.load(std::sync::atomic::Ordering::Relaxed));
        }
        // a few more writes after the disconnection
        if disconnected_at.is_some_and(|at| received.load(std::sync::atomic::Ordering::Relaxed) >= at + 3) {
            break;
        }
    }
    let at = disconnected_at.expect("the slow client is disconnected within 90 s");
    assert!(
        received.load(std::sync::atomic::Ordering::Relaxed) >= at + 3,
        "the fast client keeps receiving after the slow one is gone"
    );
    // the slow client finds the connection closed after what was buffered (the error
    // message may not fit in a socket that stopped taking data)
    let read_started = Instant::now();
    while let Ok(m) = slow.socket.read() {
        assert!(read_started.elapsed() < Duration::from_secs(60), "the slow client's connection is closed");
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    assert_eq!(metric(&server, "promflow_subscriptions"), 1.0, "the slow client's subscription ended");
    drop(server);
    let _ = reader.join();
}

#[test]
fn the_subscribe_command_prints_one_json_line_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let t0 = now_ms();
    temp(&server, "a", t0, 1.0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["subscribe", &server.base, "temp * 2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || loop {
        let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if v["type"] != "heartbeat" {
            return v;
        }
    };
    let snapshot = next();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(samples(&snapshot["result"]), vec![("a".to_string(), "2".to_string())]);
    temp(&server, "a", t0 + 1000, 4.0);
    let change = next();
    assert_eq!(samples(&change["changed"]), vec![("a".to_string(), "8".to_string())], "{change}");
    let _ = child.kill();
    let _ = child.wait();

    // a refused subscription: the error line, and status 1
    let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["subscribe", &server.base, "sum(("])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["type"], "error");
}

/// Long windows hold their samples in the views: subscriptions are limited by what their
/// queries read, per connection and in total, not only by their number.
#[test]
fn subscriptions_are_limited_by_the_samples_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        server(&dir, &["--subscribe.max-samples-per-connection=6000", "--subscribe.max-samples-total=9000"]);
    // 20 series with an hour of 15 s samples: 4,800 samples in an hour's window
    let end = now_ms();
    let ts: Vec<_> = (0..20)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..240).map(|k| (end - (239 - k) * 15_000, k as f64)).collect();
            series(&[("__name__", "load"), ("host", &format!("h{i}"))], &samples)
        })
        .collect();
    assert_eq!(remote_write(&server, ts).0, 204);
    let mut a = Client::connect(&server);
    a.send(json!({"id": 1, "query": "max_over_time(load[1h])"}));
    assert_eq!(a.next()["type"], "snapshot");
    let held = metric(&server, "promflow_subscription_samples");
    assert!((4_000.0..=5_000.0).contains(&held), "{held}");
    // a second hour-long window does not fit this connection's budget
    a.send(json!({"id": 2, "query": "min_over_time(load[1h])"}));
    let refused = a.next();
    assert_eq!(
        (refused["id"].as_i64(), refused["errorType"].as_str()),
        (Some(2), Some("limit")),
        "{refused}"
    );
    // nor, on another connection, what is left of the total
    let mut b = Client::connect(&server);
    b.send(json!({"id": "b", "query": "min_over_time(load[1h])"}));
    let refused = b.next();
    assert_eq!(refused["errorType"], "limit", "{refused}");
    // a short window still fits
    b.send(json!({"id": "short", "query": "max_over_time(load[5m])"}));
    assert_eq!(b.next()["type"], "snapshot");
    // unsubscribing gives the samples back
    a.send(json!({"id": 1, "unsubscribe": true}));
    assert_eq!(a.next()["type"], "unsubscribed");
    b.send(json!({"id": "b2", "query": "min_over_time(load[1h])"}));
    assert_eq!(b.next()["type"], "snapshot");
}

/// A native-histogram sample of `rpc_latency{host}` at `t` whose buckets hold `n` each.
fn latency(server: &Server, host: &str, t: i64, n: f64) {
    use promflow_remote::{BucketSpan, Histogram};
    let mut ts = series(&[("__name__", "rpc_latency"), ("host", host)], &[]);
    ts.histograms = vec![Histogram {
        count_float: Some(3.0 * n),
        sum: 2.0 * n,
        schema: 0,
        positive_spans: vec![BucketSpan { offset: 0, length: 3 }],
        positive_counts: vec![n, n, n],
        timestamp: t,
        ..Histogram::default()
    }];
    let (code, body) = remote_write(server, vec![ts]);
    assert_eq!(code, 204, "{body}");
}

#[test]
fn a_subscription_over_native_histograms_streams_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let t0 = now_ms();
    latency(&server, "a", t0, 1.0);
    let mut client = Client::connect(&server);
    client.send(json!({"id": "h", "query": "rpc_latency"}));
    client.send(json!({"id": "n", "query": "histogram_count(rpc_latency) * 2"}));
    let (mut h, mut n) = (None, None);
    for _ in 0..2 {
        let m = client.next();
        assert_eq!(m["type"], "snapshot", "{m}");
        match m["id"].as_str() {
            Some("h") => h = Some(m),
            _ => n = Some(m),
        }
    }
    let (h, n) = (h.unwrap(), n.unwrap());
    // the query API's shape: `histogram` instead of `value`
    assert_eq!(h["result"][0]["histogram"][1]["count"], "3", "{h}");
    assert_eq!(h["result"][0]["histogram"][1]["buckets"].as_array().map(Vec::len), Some(3), "{h}");
    assert_eq!(n["result"][0]["value"][1], "6", "{n}");
    // a newer histogram changes both, as an evaluation at its time would
    latency(&server, "a", now_ms().max(t0 + 1) + 500, 2.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut h_changed, mut n_changed) = (false, false);
    while !(h_changed && n_changed) && Instant::now() < deadline {
        let m = client.next();
        if m["type"] != "change" {
            continue;
        }
        let changed = &m["changed"][0];
        match m["id"].as_str() {
            Some("h") => h_changed |= changed["histogram"][1]["count"] == "6",
            _ => n_changed |= changed["value"][1] == "12",
        }
    }
    assert!(h_changed && n_changed, "the histograms' change did not come within 20 s");
}
