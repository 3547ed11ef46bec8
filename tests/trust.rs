//! End-to-end: hostile requests against the real binary get an error in the right class and
//! leave the server running (the security settings themselves are in `web_security.rs`).

mod common;

use std::process::Command;

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
