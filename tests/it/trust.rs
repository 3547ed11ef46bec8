//! End-to-end: hostile requests against the real binary get an error in the right class and
//! leave the server running (the security settings themselves are in `web_security.rs`).

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// `n` terms joined by `op`.
fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

#[test]
fn deeply_chained_sql_is_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let sql_port = free_port();
    let s = start_promflow(dir.path(), "", &[&format!("--sql.listen-address=127.0.0.1:{sql_port}")]);
    let sql = |q: &str| s.post_form("/api/v1/sql", &[("query", q)]);
    // what the attack sent: ~30 KB of `1+1+…`, and a WHERE of 20,000 ANDs
    for q in [
        format!("SELECT {}", chain("1", "+", 15_000)),
        format!("SELECT 1 FROM up WHERE {}", chain("job = 'x'", " AND ", 20_000)),
        format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000)),
    ] {
        let (code, v) = sql(&q);
        assert_eq!(code, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("at most"), "{v}");
    }
    // the relational engine plans at most 1,000 operators (its planning time grows with the
    // square of a chain's length): a longer statement over a table is refused before planning
    let (code, v) = sql(&format!("SELECT job FROM up WHERE {}", chain("job = 'x'", " OR ", 1_500)));
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("at most 1000 are allowed in a statement the relational engine plans"),
        "{v}"
    );
    // just within the limit, the answer is right
    let (code, v) = sql(&format!("SELECT {}", chain("1", "+", promflow_sql::MAX_OPERATORS + 1)));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["rows"][0][0].as_f64(), Some((promflow_sql::MAX_OPERATORS + 1) as f64), "{v}");

    // the wire protocol refuses with PostgreSQL's SQLSTATE for it, and goes on serving
    if peer("psql").is_some() {
        let psql = |q: &str| {
            Command::new("psql")
                .env("PGCONNECT_TIMEOUT", "10")
                .args([
                    &format!("host=127.0.0.1 port={sql_port} user=u dbname=d sslmode=disable"),
                    "-v",
                    "VERBOSITY=verbose",
                    "-tAc",
                    q,
                ])
                .output()
                .unwrap()
        };
        let out = psql(&format!("SELECT {}", chain("1", "+", 15_000)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("54001"), "{err}");
        let out = psql("SELECT 40 + 2");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    }
    assert_eq!(s.get_text("/-/healthy").0, 200);
}

#[test]
fn remote_write_refuses_label_sets_the_sender_must_fix_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let t = now_ms();
    for (labels, says) in [
        (vec![("__name__", "m"), ("", "v")], "empty label name"),
        (vec![("__name__", "m"), ("a", "1"), ("a", "2")], "duplicate label name"),
        (vec![("a", "1")], "no metric name"),
    ] {
        let (code, body) = remote_write(&s, vec![series(&labels, &[(t, 1.0)])]);
        assert_eq!(code, 400, "{labels:?}: {body}");
        assert!(body.contains(says), "{labels:?}: {body}");
    }
    let (_, v) = s.get_json("/api/v1/query?query=count({__name__=\"m\"})");
    assert!(result(&v).is_empty(), "a refused series was stored: {v}");
}

/// A series' labels in any order, with empty values, or twice in one request name one series,
/// whether the server has it yet (looked up ahead of its samples) or not.
#[test]
fn remote_write_takes_a_series_in_any_label_order_and_twice_in_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let t = now_ms() - 60_000;
    let unsorted = [("job", "a"), ("__name__", "m"), ("empty", "")];
    let sorted = [("__name__", "m"), ("job", "a")];
    for round in 0..2 {
        let at = t + round * 30_000;
        let body = vec![
            series(&unsorted, &[(at, 1.0)]),
            series(&[("__name__", "other")], &[(at, 1.0)]),
            series(&sorted, &[(at + 15_000, 2.0)]),
        ];
        let (code, text) = remote_write(&s, body);
        assert_eq!(code, 204, "round {round}: {text}");
    }
    let at = (t + 45_000) as f64 / 1000.0;
    let (_, v) = s.get_json(&format!("/api/v1/query?query=count_over_time(m[2m])&time={at}"));
    let got: Vec<(String, String)> = result(&v)
        .iter()
        .map(|r| (r["metric"].to_string(), r["value"][1].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, vec![(r#"{"job":"a"}"#.to_string(), "4".to_string())], "{v}");
}

/// 200 series with an hour of 15 s samples, ending now.
fn seed_load(s: &Server) -> i64 {
    let end = now_ms();
    let ts: Vec<_> = (0..200)
        .map(|i| {
            let samples: Vec<(i64, f64)> =
                (0..240).map(|k| (end - (239 - k) * 15_000, (i * k % 17) as f64)).collect();
            series(&[("__name__", "load"), ("instance", &format!("i{i}"))], &samples)
        })
        .collect();
    let (code, body) = remote_write(s, ts);
    assert_eq!(code, 204, "{body}");
    end
}

#[test]
fn a_subquery_too_big_for_the_sample_limit_is_refused_before_it_fills_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let end = seed_load(&s);
    let at = end as f64 / 1000.0;
    let rss_before = rss_kib(s.child.id());
    // 3.6 million inner steps for each of 200 series: 720 million points against a limit of 50
    // million; Prometheus answers 422
    let (code, v) = s.get_json(&format!("/api/v1/query?query=max_over_time(load[1h:1ms])&time={at}"));
    assert_eq!(code, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("too many samples"), "{v}");
    let grown_mib = rss_kib(s.child.id()).saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 512, "the refused query grew the server by {grown_mib} MiB");
    // and one the limit allows still answers
    let (code, v) = s.get_json(&format!("/api/v1/query?query=max_over_time(load[1h:1m])&time={at}"));
    assert_eq!((code, result(&v).len()), (200, 200), "{v}");
}

#[test]
fn the_query_timeout_stops_a_query_inside_its_loops() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver", "--query.timeout=1s"]);
    let end = seed_load(&s);
    let q = format!(
        "/api/v1/query_range?query=max_over_time(load[1h:100ms])&start={}&end={}&step=60",
        end as f64 / 1000.0 - 600.0,
        end as f64 / 1000.0
    );
    // the same query with a 1 ms timeout is stopped and answered 503 `timeout`
    let (code, v) = s.get_json(&format!("{q}&timeout=1ms"));
    assert_eq!((code, v["errorType"].as_str()), (503, Some("timeout")), "{v}");
    // without it the query either answers or is stopped by --query.timeout, never long after
    let started = std::time::Instant::now();
    let (code, v) = s.get_json(&q);
    assert!(code == 200 || code == 503, "{v}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "ran {:?} past a 1 s timeout",
        started.elapsed()
    );
}

#[test]
fn a_sample_far_in_the_future_is_refused_and_the_present_stays_writable() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let now = now_ms();
    let (code, body) = remote_write(&s, vec![series(&[("__name__", "clock")], &[(now + 86_400_000, 1.0)])]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ahead of the server's clock"), "{body}");
    // what Prometheus 2.42 and 3 take: a day ahead would make every present sample out of bounds
    let (code, body) = remote_write(&s, vec![series(&[("__name__", "present")], &[(now - 1_000, 1.0)])]);
    assert_eq!(code, 204, "{body}");
}

#[test]
fn queries_wait_for_one_of_max_concurrency_slots_and_a_hung_up_client_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(
        dir.path(),
        "",
        &["--web.enable-remote-write-receiver", "--query.max-concurrency=1", "--query.timeout=5m"],
    );
    let end = seed_load(&s) as f64 / 1000.0;
    // 3,600 steps, each the median of a window of 3,600 subquery points, for 200 series:
    // minutes of work in little memory
    let slow = s.url(&format!(
        "/api/v1/query_range?query=quantile_over_time(0.5,load[1h:1s])&start={}&end={end}&step=1",
        end - 3600.0
    ));
    let hangs_up_after = |secs| {
        let slow = slow.clone();
        std::thread::spawn(move || {
            let client =
                reqwest::blocking::Client::builder().timeout(Duration::from_secs(secs)).build().unwrap();
            assert!(client.get(&slow).send().is_err(), "the slow query answered within {secs} s");
        })
    };
    let fast = "/api/v1/query?query=1%2B1&timeout=3s";
    let client = hangs_up_after(8);
    std::thread::sleep(Duration::from_millis(500));
    // the one slot is taken: a second query waits in the queue until its timeout
    let (code, v) = s.get_json(fast);
    assert_eq!((code, v["errorType"].as_str()), (503, Some("timeout")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("queue"), "{v}");
    // once the client hangs up, its query stops and the slot is free again
    client.join().unwrap();
    let answered = wait_for(Duration::from_secs(20), || (s.get_json(fast).0 == 200).then_some(()));
    assert!(answered.is_some(), "the abandoned query kept its slot:\n{}", s.logs());
}

/// A correlated subquery run once per row of `pg_attribute` over `seed_metrics`' 300
/// metrics: minutes of work in little memory.
const SLOW_SQL: &str =
    "SELECT count(*) FROM pg_attribute a WHERE EXISTS (SELECT 1 FROM pg_class b, pg_class c \
     WHERE b.relname = c.relname AND b.oid = a.attrelid AND c.oid <> a.attrelid)";

/// 300 metrics of 6 columns: `pg_attribute` has about 1,800 rows.
fn seed_metrics(s: &Server) {
    let ts: Vec<_> = (0..300)
        .map(|i| {
            series(&[("__name__", &format!("m{i}")), ("a", "1"), ("b", "2"), ("c", "3")], &[(now_ms(), 1.0)])
        })
        .collect();
    assert_eq!(remote_write(s, ts).0, 204);
}

/// Runs `sql` over the wire protocol with psycopg and sends a cancel request (libpq's, as
/// psql's Ctrl-C) `cancel_after` seconds after it was sent; `on_sent` runs meanwhile. Returns
/// psycopg's SQLSTATE (`null` when the statement answered) and how long it ran, or `None`
/// without psycopg.
fn cancel_over_the_wire(
    port: u16,
    sql: &str,
    cancel_after: f64,
    on_sent: impl FnOnce(),
) -> Option<serde_json::Value> {
    const SCRIPT: &str = r#"
import json, sys, threading, time
import psycopg
port, sql, after = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = psycopg.connect(f"host=127.0.0.1 port={port} user=promflow dbname=promflow", autocommit=True)
result = {}
def run():
    started = time.monotonic()
    try:
        conn.execute(sql).fetchall()
        result["sqlstate"] = None
    except psycopg.Error as e:
        result["sqlstate"], result["message"] = e.sqlstate, str(e)
    result["seconds"] = time.monotonic() - started
worker = threading.Thread(target=run)
worker.start()
print("sent", flush=True)
time.sleep(after)
(getattr(conn, "cancel_safe", None) or conn.cancel)()
worker.join(120)
print(json.dumps(result), flush=True)
"#;
    if !Command::new("python3").args(["-c", "import psycopg"]).status().is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("CI").is_err(),
            "psycopg is not installed; .ci/install-peers installs it from PyPI"
        );
        eprintln!("SKIP: psycopg is not installed");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, &port.to_string(), sql, &cancel_after.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("sent"));
    on_sent();
    let result = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = child.wait();
    Some(serde_json::from_str(&result).unwrap_or_else(|e| panic!("{e}: {result:?}")))
}

#[test]
fn sql_statements_take_query_slots_and_stop_when_their_client_leaves_or_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let sql_port = free_port();
    let s = start_promflow(
        dir.path(),
        "",
        &[
            "--web.enable-remote-write-receiver",
            "--query.max-concurrency=1",
            "--query.timeout=5m",
            &format!("--sql.listen-address=127.0.0.1:{sql_port}"),
        ],
    );
    seed_metrics(&s);
    let fast = "/api/v1/query?query=1%2B1&timeout=1s";
    let queued = |s: &Server| {
        let (code, v) = s.get_json(fast);
        assert_eq!((code, v["errorType"].as_str()), (503, Some("timeout")), "{v}");
        assert!(v["error"].as_str().unwrap().contains("queue"), "{v}");
    };
    let slot_freed = |s: &Server, by: &str| {
        let answered = wait_for(Duration::from_secs(20), || (s.get_json(fast).0 == 200).then_some(()));
        assert!(answered.is_some(), "{by} kept its slot:\n{}", s.logs());
    };

    // over HTTP: the statement holds the one slot until its client hangs up
    let url = s.url("/api/v1/sql");
    let client = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(6)).build().unwrap();
        let answer = client.post(&url).form(&[("query", SLOW_SQL)]).send();
        assert!(answer.is_err(), "the slow statement answered within 6 s");
    });
    std::thread::sleep(Duration::from_millis(1500));
    queued(&s);
    client.join().unwrap();
    slot_freed(&s, "a statement whose HTTP client hung up");

    // over the wire protocol: the same slots, and a cancel request stops the statement
    let canceled = cancel_over_the_wire(sql_port, SLOW_SQL, 4.0, || {
        std::thread::sleep(Duration::from_millis(1500));
        queued(&s);
    });
    if let Some(v) = canceled {
        assert_eq!(v["sqlstate"], "57014", "{v}");
        assert!(v["message"].as_str().unwrap().contains("user request"), "{v}");
        assert!(v["seconds"].as_f64().unwrap() < 20.0, "{v}");
        slot_freed(&s, "a canceled wire-protocol statement");
    }
}

#[test]
fn a_target_relabelled_to_another_scheme_is_dropped_not_linked() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "scrape_configs:\n  - job_name: evil\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n    relabel_configs:\n      - target_label: __scheme__\n        replacement: javascript\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let s = start_promflow_with(dir.path(), &dir.path().join("prometheus.yml"), port, &[]);
    let targets = wait_for(Duration::from_secs(20), || {
        let (_, v) = s.get_json("/api/v1/targets?state=any");
        (!v["data"]["droppedTargets"].as_array()?.is_empty()).then_some(v)
    })
    .expect("the target was neither dropped nor kept");
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert!(active.is_empty(), "{targets}");
}

#[test]
fn passwords_in_urls_are_redacted_in_the_status_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = "remote_write:\n  - url: http://writer:s3cret@127.0.0.1:1/api/v1/write\nscrape_configs:\n  - job_name: p\n    proxy_url: http://proxyuser:pr0xy@127.0.0.1:3128\n    static_configs:\n      - targets: ['127.0.0.1:1']\n";
    let s = start_promflow(dir.path(), config, &[]);
    let (_, v) = s.get_json("/api/v1/status/config");
    let yaml = v["data"]["yaml"].as_str().unwrap();
    assert!(!yaml.contains("s3cret") && !yaml.contains("pr0xy"), "{yaml}");
    assert!(yaml.contains("http://writer:xxxxx@127.0.0.1:1/api/v1/write"), "{yaml}");
    assert!(yaml.contains("http://proxyuser:xxxxx@127.0.0.1:3128"), "{yaml}");
}

#[test]
fn small_bodies_cannot_become_huge_labels_and_errors_stay_short() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let post = |body: Vec<u8>, encoding: &str| {
        let r = client()
            .post(s.url("/api/v1/write"))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", encoding)
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let huge_value = |len: usize| promflow_remote::WriteRequest {
        timeseries: vec![series(&[("__name__", "bomb"), ("payload", &"a".repeat(len))], &[(now_ms(), 1.0)])],
        metadata: vec![],
    };
    // a few kilobytes of zstd that would decompress to 200 MiB are refused without decoding
    let raw = prost::Message::encode_to_vec(&huge_value(200 << 20));
    let body = zstd::bulk::compress(&raw, 3).unwrap();
    assert!(body.len() < 64 << 10, "the bomb is {} bytes", body.len());
    let rss_before = rss_kib(s.child.id());
    let (code, answer) = post(body, "zstd");
    assert!(code == 400 || code == 413, "{code}: {}", &answer[..answer.len().min(300)]);
    assert!(answer.len() < 2048, "the answer is {} bytes", answer.len());
    assert!(rss_kib(s.child.id()).saturating_sub(rss_before) < 100 << 10, "the bomb grew the server");
    // a 1 MiB label value fits the size limits but is refused for its length, briefly
    let (code, answer) = post(promflow_remote::encode(&huge_value(1 << 20)), "snappy");
    assert_eq!(code, 400, "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains("label value of 1048576 bytes") && answer.len() < 2048, "{answer:.300}");
    let (_, v) = s.get_json("/api/v1/query?query=bomb");
    assert!(result(&v).is_empty());
    // a many-to-many error quotes the series, but not without end
    let many: Vec<_> = (0..2000)
        .map(|i| {
            series(&[("__name__", "mm"), ("i", &format!("{i}-{}", "x".repeat(200)))], &[(now_ms(), 1.0)])
        })
        .collect();
    assert_eq!(remote_write(&s, many).0, 204);
    let (code, v) = s.get_json("/api/v1/query?query=mm%20%2B%20on()%20mm");
    assert_eq!(code, 422, "{v:.300}");
    assert!(v["error"].as_str().unwrap().len() <= 4200, "{} bytes", v["error"].as_str().unwrap().len());
}

#[test]
fn catalog_queries_are_bounded_in_rows_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver", "--query.timeout=3s"]);
    seed_metrics(&s);
    let sql = |q: &str| s.post_form("/api/v1/sql", &[("query", q)]);
    let rss_before = rss_kib(s.child.id());
    let (code, v) = sql("SELECT count(*) FROM pg_attribute a, pg_attribute b, pg_attribute c");
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("more than"), "{v}");
    assert!(rss_kib(s.child.id()).saturating_sub(rss_before) < 1 << 20, "the refused join took a GiB");
    // a correlated subquery runs once per row (1,800 times 90,000 pairs here): the
    // statement's timeout stops it
    let started = std::time::Instant::now();
    let (code, v) = sql(SLOW_SQL);
    assert_eq!((code, v["errorType"].as_str()), (503, Some("timeout")), "{v}");
    assert!(started.elapsed() < Duration::from_secs(20), "ran {:?} past a 3 s timeout", started.elapsed());
    assert_eq!(s.get_text("/-/healthy").0, 200);
}
