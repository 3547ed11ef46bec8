//! SQL over HTTP end to end: the real binary, samples pushed through remote write, queries
//! on `/api/v1/sql` compared with the written samples and with their PromQL twins on
//! `/api/v1/query` (the same plan text, the same values).

use crate::common;

use std::collections::BTreeMap;

use common::{client, now_ms, remote_write, result, series, start_promflow, urlencode, Server};
use serde_json::{json, Value};

const STEP_MS: i64 = 15_000;
const SAMPLES: i64 = 20;
/// The bits of Prometheus's staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// The server with the test's samples: four `m` series (one without `instance`, one with a
/// label named `value` and a staleness marker) and `m_odd` with NaN and +Inf; returns the
/// first and last sample times (ms).
fn setup(dir: &std::path::Path) -> (Server, i64, i64) {
    setup_with(dir, &[])
}

/// [`setup`] with more flags.
fn setup_with(dir: &std::path::Path, extra: &[&str]) -> (Server, i64, i64) {
    let flags: Vec<&str> = ["--web.enable-remote-write-receiver"].iter().chain(extra).copied().collect();
    let server = start_promflow(dir, "global:\n  scrape_interval: 15s\n", &flags);
    let t0 = (now_ms() - 10 * 60_000) / 1000 * 1000;
    let points = |f: &dyn Fn(i64) -> f64| (0..SAMPLES).map(|k| (t0 + k * STEP_MS, f(k))).collect::<Vec<_>>();
    let mut marked = points(&|k| 100.0 + k as f64);
    marked[5].1 = f64::from_bits(STALE_NAN);
    let (status, body) = remote_write(
        &server,
        vec![
            series(&[("__name__", "m"), ("job", "a"), ("instance", "i1")], &points(&|k| 1.0 + k as f64)),
            series(&[("__name__", "m"), ("job", "a"), ("instance", "i2")], &points(&|k| 2.0 * k as f64)),
            series(&[("__name__", "m"), ("job", "b"), ("instance", "i1"), ("value", "v")], &marked),
            series(&[("__name__", "m"), ("job", "b")], &points(&|k| 0.5 * k as f64)),
            series(
                &[("__name__", "m_odd"), ("job", "c")],
                &[(t0, 1.0), (t0 + STEP_MS, f64::NAN), (t0 + 2 * STEP_MS, f64::INFINITY)],
            ),
        ],
    );
    assert!(status / 100 == 2, "remote write answered {status}: {body}");
    (server, t0, t0 + (SAMPLES - 1) * STEP_MS)
}

/// Posts `sql` as a form; returns the status and the answer.
fn sql(server: &Server, sql: &str) -> (u16, Value) {
    server.post_form("/api/v1/sql", &[("query", sql)])
}

fn rows(v: &Value) -> Vec<Value> {
    v["data"]["rows"].as_array().unwrap_or_else(|| panic!("no rows in {v}")).clone()
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The `ts` predicate of the written samples' span.
fn bounds(t0: i64, t1: i64) -> String {
    format!("ts >= {} AND ts <= {}", seconds(t0), seconds(t1))
}

#[test]
fn rows_are_the_written_samples_with_labels_as_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let bounds = bounds(t0, t1);

    let (status, v) = sql(
        &server,
        &format!("SELECT job, instance, ts, value FROM m WHERE job = 'a' AND {bounds} ORDER BY instance, ts"),
    );
    assert_eq!(status, 200, "{v}");
    let columns = &v["data"]["columns"];
    assert_eq!(
        columns,
        &json!([{"name": "job", "type": "text"}, {"name": "instance", "type": "text"},
                {"name": "ts", "type": "timestamp"}, {"name": "value", "type": "double"}])
    );
    let got = rows(&v);
    assert_eq!(got.len(), 2 * SAMPLES as usize);
    assert_eq!(got[0], json!(["a", "i1", t0 as f64 / 1000.0, 1.0]));
    assert_eq!(got[1], json!(["a", "i1", (t0 + STEP_MS) as f64 / 1000.0, 2.0]));
    assert_eq!(got[SAMPLES as usize], json!(["a", "i2", t0 as f64 / 1000.0, 0.0]));

    // `*`: every label as a column (`value` renamed), NULL where a series lacks one, and the
    // staleness marker is not a row
    let (_, v) = sql(&server, &format!("SELECT * FROM m WHERE job = 'b' AND {bounds}"));
    let names: Vec<&str> =
        v["data"]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["instance", "job", "label_value", "ts", "value"]);
    let got = rows(&v);
    assert_eq!(got.len(), 2 * SAMPLES as usize - 1, "the staleness marker is no row");
    assert!(got.iter().any(|r| r[0].is_null() && r[2].is_null()), "NULL for missing labels: {got:?}");
    assert!(got.iter().any(|r| r[0] == "i1" && r[2] == "v" && r[4] == 100.0));

    // NULL tests, and the time bounds cut rows
    let (_, v) = sql(
        &server,
        &format!(
            "SELECT value FROM m WHERE instance IS NULL AND ts > {} AND {bounds}",
            seconds(t1 - STEP_MS)
        ),
    );
    assert_eq!(rows(&v), vec![json!([0.5 * (SAMPLES - 1) as f64])]);
    let (_, v) = sql(&server, &format!("SELECT count(*) FROM m WHERE instance <> 'i1' AND {bounds}"));
    assert_eq!(rows(&v), vec![json!([SAMPLES])], "<> excludes the series without the label, as NULL does");

    // NaN and infinities as Prometheus writes them; a JSON body
    let r = client()
        .post(server.url("/api/v1/sql"))
        .header("Content-Type", "application/json")
        .body(json!({"query": format!("SELECT value FROM m_odd WHERE {bounds}")}).to_string())
        .send()
        .unwrap();
    let v: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(rows(&v), vec![json!([1.0]), json!(["NaN"]), json!(["+Inf"])]);
}

/// Pairs of a SQL query and its PromQL twin (`{B}` stands for the `ts` bounds, `{R}` for
/// their range): thirty, the documented set of what SQL covers.
const TWINS: &[(&str, &str)] = &[
    ("SELECT job, sum(value) FROM m WHERE {B} GROUP BY job", "sum by (job) (sum_over_time(m[{R}]))"),
    ("SELECT job, count(value) FROM m WHERE {B} GROUP BY job", "sum by (job) (count_over_time(m[{R}]))"),
    ("SELECT job, max(value) FROM m WHERE {B} GROUP BY job", "max by (job) (max_over_time(m[{R}]))"),
    (
        "SELECT instance, min(value) FROM m WHERE {B} GROUP BY instance",
        "min by (instance) (min_over_time(m[{R}]))",
    ),
    (
        "SELECT job, avg(value) FROM m WHERE {B} GROUP BY job",
        "sum by (job) (sum_over_time(m[{R}])) / sum by (job) (count_over_time(m[{R}]))",
    ),
    ("SELECT sum(value) FROM m WHERE job = 'a' AND {B}", "sum(sum_over_time(m{job=\"a\",job!=\"\"}[{R}]))"),
    (
        "SELECT instance, max(value) FROM m WHERE job IN ('a', 'b') AND {B} GROUP BY instance",
        "max by (instance) (max_over_time(m{job=~\"a|b\",job!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, count(*) FROM m WHERE instance LIKE 'i_' AND {B} GROUP BY job",
        "sum by (job) (count_over_time(m{instance=~\"i.\",instance!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, sum(value) FROM m WHERE instance ~ '2$' AND {B} GROUP BY job",
        "sum by (job) (sum_over_time(m{instance=~\".*(?:2$).*\",instance!=\"\"}[{R}]))",
    ),
    (
        "SELECT max(value) FROM m WHERE label_value = 'v' AND {B}",
        "max(max_over_time(m{value=\"v\",value!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, rate(value) FROM m WHERE job = 'a' AND {B} GROUP BY job",
        "sum by (job) (rate(m{job=\"a\",job!=\"\"}[{R}]))",
    ),
    ("SELECT instance, increase(value) FROM m WHERE {B} GROUP BY 1", "sum by (instance) (increase(m[{R}]))"),
    ("SELECT job, deriv(value) FROM m WHERE {B} GROUP BY job", "sum by (job) (deriv(m[{R}]))"),
    (
        "SELECT job, count(*) FROM m WHERE {B} GROUP BY job HAVING count(*) > 20",
        "sum by (job) (count_over_time(m[{R}]))",
    ),
    (
        "SELECT job, instance, sum(value) FROM m WHERE {B} GROUP BY job, instance",
        "sum by (job, instance) (sum_over_time(m[{R}]))",
    ),
    ("SELECT min(value) FROM m WHERE {B}", "min(min_over_time(m[{R}]))"),
    ("SELECT count(*) FROM m WHERE instance IS NULL AND {B}", "sum(count_over_time(m{instance=\"\"}[{R}]))"),
    (
        "SELECT job, count(*) FROM m WHERE instance IS NOT NULL AND {B} GROUP BY job",
        "sum by (job) (count_over_time(m{instance!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, sum(value) FROM m WHERE job <> 'a' AND {B} GROUP BY job",
        "sum by (job) (sum_over_time(m{job!=\"a\",job!=\"\"}[{R}]))",
    ),
    (
        "SELECT instance, max(value) FROM m WHERE job NOT IN ('b') AND {B} GROUP BY instance",
        "max by (instance) (max_over_time(m{job!~\"b\",job!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, count(*) FROM m WHERE instance NOT LIKE '%1' AND {B} GROUP BY job",
        "sum by (job) (count_over_time(m{instance!~\".*1\",instance!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, count(*) FROM m WHERE instance ILIKE 'I_' AND {B} GROUP BY job",
        "sum by (job) (count_over_time(m{instance=~\"(?i)I.\",instance!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, max(value) FROM m WHERE instance ~* 'I2' AND {B} GROUP BY job",
        "max by (job) (max_over_time(m{instance=~\"(?i).*(?:I2).*\",instance!=\"\"}[{R}]))",
    ),
    (
        "SELECT job, min(value) FROM m WHERE instance !~ '2' AND {B} GROUP BY job",
        "min by (job) (min_over_time(m{instance!~\".*(?:2).*\",instance!=\"\"}[{R}]))",
    ),
    ("SELECT job, irate(value) FROM m WHERE {B} GROUP BY job", "sum by (job) (irate(m[{R}]))"),
    ("SELECT job, idelta(value) FROM m WHERE {B} GROUP BY job", "sum by (job) (idelta(m[{R}]))"),
    (
        "SELECT instance, delta(value) FROM m WHERE job = 'a' AND {B} GROUP BY instance",
        "sum by (instance) (delta(m{job=\"a\",job!=\"\"}[{R}]))",
    ),
    ("SELECT avg(value) FROM m WHERE {B}", "sum(sum_over_time(m[{R}])) / sum(count_over_time(m[{R}]))"),
    (
        "SELECT job, max(value) FROM m WHERE {B} GROUP BY job HAVING min(value) >= 0",
        "max by (job) (max_over_time(m[{R}]))",
    ),
    (
        "SELECT label_value, sum(value) FROM m WHERE {B} GROUP BY label_value",
        "sum by (value) (sum_over_time(m[{R}]))",
    ),
    (
        "SELECT job, max(value) - min(value) AS spread FROM m WHERE {B} GROUP BY job",
        "max by (job) (max_over_time(m[{R}])) - min by (job) (min_over_time(m[{R}]))",
    ),
    (
        "SELECT job, sum(value) / 60 FROM m WHERE {B} GROUP BY job",
        "sum by (job) (sum_over_time(m[{R}])) / 60",
    ),
    (
        "SELECT job, 2 ^ -(max(value)) FROM m WHERE {B} GROUP BY job",
        "2 ^ (max by (job) (max_over_time(m[{R}])) * -1)",
    ),
];

/// Each row's group as `label=value` pairs (its text cells, by column name: `label_value` is
/// the label `value`; NULL cells left out) → its last cell.
fn sql_groups(v: &Value) -> BTreeMap<String, f64> {
    let names: Vec<String> = v["data"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().trim_start_matches("label_").to_string())
        .collect();
    rows(v)
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            let key: BTreeMap<&str, &str> = names
                .iter()
                .zip(&r[..r.len() - 1])
                .filter_map(|(n, c)| Some((n.as_str(), c.as_str()?)))
                .collect();
            (format!("{key:?}"), r[r.len() - 1].as_f64().unwrap())
        })
        .collect()
}

/// Each series of an instant vector as its `label=value` pairs → its value.
fn promql_groups(v: &Value) -> BTreeMap<String, f64> {
    common::result(v)
        .iter()
        .map(|s| {
            let key: BTreeMap<&str, &str> = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(n, l)| (n.as_str(), l.as_str().unwrap()))
                .collect();
            (format!("{key:?}"), s["value"][1].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn aggregates_compile_to_their_promql_twins_and_give_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let bounds = bounds(t0, t1);
    let range = format!("{}ms", t1 - t0 + 1);
    for (sql_text, promql) in TWINS {
        let sql_text = sql_text.replace("{B}", &bounds);
        let promql = promql.replace("{R}", &range);
        let (status, explained) = sql(&server, &format!("EXPLAIN {sql_text}"));
        assert_eq!(status, 200, "{sql_text}: {explained}");
        let plans = rows(&explained);
        let sql_plan = plans[0][1].as_str().unwrap();
        let (status, twin) = server
            .post_form("/api/v1/query", &[("query", &promql), ("time", &seconds(t1)), ("explain", "1")]);
        assert_eq!(status, 200, "{promql}: {twin}");
        let twin_plan = twin["data"]["result"].as_str().unwrap();
        if sql_plan.contains("AggregateSamples") {
            // a query run once sums and averages its rows in order, as PostgreSQL does,
            // where PromQL sums each series' sum: the windows read are the twin's
            let windows = |plan: &str| -> Vec<String> {
                plan.lines().map(str::trim).filter(|l| l.starts_with("Window ")).map(String::from).collect()
            };
            let mut read = windows(sql_plan);
            read.dedup();
            let mut twin_read = windows(twin_plan);
            twin_read.dedup();
            assert_eq!(read, twin_read, "{sql_text} reads what {promql} reads");
        } else {
            assert_eq!(sql_plan, twin_plan, "{sql_text} and {promql} compile alike");
        }

        let (_, got) = sql(&server, &sql_text);
        let (_, want) = server.post_form("/api/v1/query", &[("query", &promql), ("time", &seconds(t1))]);
        let (got, want) = (sql_groups(&got), promql_groups(&want));
        assert!(!want.is_empty(), "{promql} has a result");
        // the same plan; a sum across series may add in another order between two runs
        let close = |a: &f64, b: &f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
        assert!(
            got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g.0 == w.0 && close(g.1, w.1)),
            "{sql_text} answers as {promql}: {got:?} against {want:?}"
        );
    }
}

#[test]
fn order_limit_empty_tables_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let bounds = bounds(t0, t1);

    let (_, v) = sql(
        &server,
        &format!(
            "SELECT job, max(value) AS top FROM m WHERE {bounds} GROUP BY job ORDER BY top DESC LIMIT 1"
        ),
    );
    assert_eq!(v["data"]["columns"][1]["name"], "top");
    assert_eq!(rows(&v), vec![json!(["b", 100.0 + (SAMPLES - 1) as f64])]);
    // descending puts NULL first, as PostgreSQL does
    let (_, v) = sql(
        &server,
        &format!("SELECT job, instance, count(*) FROM m WHERE {bounds} GROUP BY job, instance ORDER BY 2 DESC, job LIMIT 2 OFFSET 1"),
    );
    assert_eq!(rows(&v), vec![json!(["a", "i2", SAMPLES]), json!(["a", "i1", SAMPLES])]);

    // an aggregate over no rows is one row, as in SQL
    let (_, v) =
        sql(&server, &format!("SELECT count(*), sum(value) FROM m WHERE job = 'nobody' AND {bounds}"));
    assert_eq!(rows(&v), vec![json!([0, null])]);
    // a metric that has no series is no table, as PostgreSQL answers an unknown relation
    let (status, v) = sql(&server, "SELECT count(*), sum(value) FROM no_such_metric");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("relation \"no_such_metric\" does not exist"), "{v}");

    // errors name the problem and the position; the server keeps answering
    let (status, v) = sql(&server, "SELEC job FROM m");
    assert_eq!((status, v["errorType"].as_str()), (400, Some("bad_data")));
    assert!(v["error"].as_str().unwrap().contains("Line: 1, Column: 1"), "{v}");
    let (status, v) = sql(&server, "SELECT job, value FROM m GROUP BY job");
    assert_eq!(status, 400);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains(
            "column \"m.value\" must appear in the GROUP BY clause or be used in an aggregate function"
        ),
        "{e}"
    );
    // the catalogs answer over HTTP too; another schema than public is not the metrics'
    let (status, v) = sql(&server, "SELECT table_name FROM information_schema.tables ORDER BY 1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(rows(&v), vec![json!(["m"]), json!(["m_odd"])]);
    let (status, v) = sql(&server, "SELECT count(*) FROM monitoring.m");
    assert_eq!(status, 400, "not the metric m: {v}");
    assert!(v["error"].as_str().unwrap().contains("relation \"monitoring.m\" does not exist"), "{v}");
    let (status, v) = sql(&server, &format!("SELECT count(*) FROM public.m WHERE {bounds}"));
    assert_eq!((status, rows(&v)), (200, vec![json!([4 * SAMPLES - 1])]));
    // what the plan IR does not express runs on the relational engine
    let (status, v) = sql(
        &server,
        &format!("SELECT DISTINCT job FROM m WHERE (job = 'a' OR job = 'b') AND ts >= to_timestamp({}) ORDER BY job DESC", seconds(t0)),
    );
    assert_eq!((status, rows(&v)), (200, vec![json!(["b"]), json!(["a"])]), "{v}");
    let (status, v) = sql(&server, "SELECT job FROM m WHERE ts > now() - INTERVAL '5 fortnights'");
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap().contains("invalid input syntax for type interval: \"5 fortnights\""),
        "{v}"
    );
    let (status, _) =
        sql(&server, &format!("SELECT count(*) FROM m WHERE ts > now() - INTERVAL '1 hour' AND {bounds}"));
    assert_eq!(status, 200);
}

#[test]
fn time_buckets_and_having() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    // what the buckets must hold, from the written samples of job a (i1: 1 + k, i2: 2k); the
    // second bounds cut samples off the first and last buckets' windows
    let cut = (t0 + 2 * STEP_MS + 1, t1 - 3 * STEP_MS);
    for ((width_s, origin_s), (lo, hi)) in
        [((60, 0), (t0, t1)), ((45, 7), (t0, t1)), ((60, 0), cut), ((45, 7), cut)]
    {
        let bounds = bounds(lo, hi);
        let mut want: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
        for k in 0..SAMPLES {
            let t = t0 + k * STEP_MS;
            if t < lo || t > hi {
                continue;
            }
            let bucket = origin_s * 1000 + (t - origin_s * 1000).div_euclid(width_s * 1000) * width_s * 1000;
            let e = want.entry(bucket).or_default();
            e.0 += 2;
            e.1 += (1 + k) as f64 + (2 * k) as f64;
        }
        let (status, v) = sql(
            &server,
            &format!(
                "SELECT date_bin(INTERVAL '{width_s} seconds', ts, {origin_s}) AS b, job, count(*), sum(value) FROM m \
                 WHERE job = 'a' AND {bounds} GROUP BY b, job ORDER BY b"
            ),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["columns"][0], json!({"name": "b", "type": "timestamp"}));
        let got: Vec<Value> = rows(&v);
        let want: Vec<Value> =
            want.iter().map(|(b, (n, sum))| json!([*b as f64 / 1000.0, "a", n, sum])).collect();
        assert!(want.len() >= 4, "first, middle and last buckets: {want:?}");
        assert_eq!(got, want, "{width_s} s buckets from {origin_s} s, ts in [{lo}, {hi}]");
    }
    let bounds = bounds(t0, t1);

    // HAVING keeps the groups whose condition holds, with what else the row selects
    let (_, v) = sql(
        &server,
        &format!("SELECT job, count(*) FROM m WHERE {bounds} GROUP BY job HAVING max(value) > 50"),
    );
    assert_eq!(rows(&v), vec![json!(["b", 2 * SAMPLES - 1])]);
    let (_, v) = sql(
        &server,
        &format!("SELECT job FROM m WHERE {bounds} GROUP BY job HAVING min(value) >= 0 AND 40 > max(value)"),
    );
    assert_eq!(rows(&v), vec![json!(["a"])]);

    // buckets over the whole history: the relational engine's, not the plan IR's (which needs
    // a lower bound on ts to size them)
    let (status, v) = sql(
        &server,
        "SELECT date_bin(INTERVAL '1 minute', ts) AS b, count(*) FROM m GROUP BY 1 ORDER BY 1 LIMIT 1",
    );
    assert_eq!(status, 200, "{v}");
}

#[test]
fn show_tables_and_describe_list_metrics_and_their_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = setup(dir.path());
    let (status, v) = sql(&server, "SHOW TABLES");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["columns"], json!([{"name": "table_name", "type": "text"}]));
    let tables = rows(&v);
    assert!(tables.contains(&json!(["m"])) && tables.contains(&json!(["m_odd"])), "{tables:?}");

    let (_, v) = sql(&server, "DESCRIBE m");
    assert_eq!(
        rows(&v),
        vec![
            json!(["instance", "text"]),
            json!(["job", "text"]),
            json!(["label_value", "text"]),
            json!(["ts", "timestamp"]),
            json!(["value", "double"]),
        ]
    );
    let (status, v) = sql(&server, "DESCRIBE no_such_metric");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("relation \"no_such_metric\" does not exist"), "{v}");
}

/// Runs `sql` through the real `psql` against promflow's wire protocol on `port`; returns
/// psql's exit status, its unaligned output (`|` between fields) and its errors.
fn psql(bin: &std::path::Path, port: u16, sql: &str) -> (bool, String, String) {
    let out = std::process::Command::new(bin)
        .args([
            "-X",
            "-A",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "promflow",
            "-d",
            "promflow",
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn psql_queries_over_the_postgresql_wire_protocol() {
    let Some(bin) = common::peer("psql") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_server, t0, t1) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);
    let bounds = bounds(t0, t1);

    let (ok, out, err) =
        psql(&bin, port, &format!("SELECT job, count(*), max(value) FROM m WHERE {bounds} GROUP BY job"));
    assert!(ok, "psql failed: {err}");
    let want = format!("job|count|max\na|{}|38\nb|{}|119\n(2 rows)\n", 2 * SAMPLES, 2 * SAMPLES - 1);
    assert_eq!(out, want);

    // timestamps as PostgreSQL writes timestamptz, NULL as nothing, NaN and infinities
    // as PostgreSQL writes a timestamptz: no fraction for whole seconds
    let first = chrono::DateTime::from_timestamp_millis(t0).unwrap().format("%Y-%m-%d %H:%M:%S+00");
    let (ok, out, err) = psql(&bin, port, &format!("SELECT instance, ts, value FROM m WHERE job = 'b' AND {bounds} ORDER BY instance DESC, ts LIMIT 1"));
    assert!(ok, "{err}");
    assert_eq!(out, format!("instance|ts|value\n|{first}|0\n(1 row)\n"));
    let (_, out, _) = psql(&bin, port, &format!("SELECT value FROM m_odd WHERE {bounds}"));
    assert_eq!(out, "value\n1\nNaN\nInfinity\n(3 rows)\n");

    // what a newcomer types first: `*` with ORDER BY (names and positions of the expanded
    // columns), a table name in capitals (folded, as PostgreSQL folds it), a misspelled table
    // (PostgreSQL's 42P01), and the server's version, which the start-up, SHOW and version()
    // agree on
    let order = format!("FROM M WHERE job = 'a' AND {bounds} ORDER BY ts DESC, instance LIMIT 3");
    let (ok, star, err) = psql(&bin, port, &format!("SELECT * {order}"));
    assert!(ok, "{err}");
    // every column of the table, as in PostgreSQL: `label_value` too, which the rows read
    // here lack
    let (_, named, _) = psql(&bin, port, &format!("SELECT instance, job, label_value, ts, value {order}"));
    assert_eq!(star, named);
    assert!(star.starts_with("instance|job|label_value|ts|value\ni1|a||"), "{star}");
    let (_, by_position, _) = psql(&bin, port, &format!("SELECT * {}", order.replace("ts DESC", "4 DESC")));
    assert_eq!(by_position, star);
    let verbose = std::process::Command::new(&bin)
        .args(["-X", "-v", "VERBOSITY=verbose", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "promflow", "-d", "promflow", "-c", "SELECT * FROM mm"])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    let err = String::from_utf8_lossy(&verbose.stderr);
    assert!(err.contains("42P01: relation \"mm\" does not exist"), "{err}");
    let (_, shown, _) = psql(&bin, port, "SHOW server_version");
    let (_, version, _) = psql(&bin, port, "SELECT version()");
    let shown = shown.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        shown.starts_with("15.") && version.contains(&format!("PostgreSQL {shown}")),
        "{shown} / {version}"
    );

    // errors reach psql as errors, and the server goes on answering
    let (ok, _, err) = psql(&bin, port, "SELECT job, value FROM m GROUP BY job");
    assert!(!ok && err.contains("must appear in the GROUP BY clause"), "{err}");
    let (ok, _, err) = psql(&bin, port, "DESCRIBE nothing_here");
    assert!(!ok && err.contains("relation \"nothing_here\" does not exist"), "{err}");
    let (ok, out, err) = psql(&bin, port, "SHOW TABLES");
    assert!(ok && out.contains("\nm\n") && out.contains("\nm_odd\n"), "{out} {err}");
}

#[test]
fn psql_describes_tables_from_the_catalogs() {
    let Some(bin) = common::peer("psql") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_server, _, _) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);

    // psql's \dt and \d read pg_catalog: every query they send must be answered
    let (ok, out, err) = psql(&bin, port, "\\dt");
    assert!(ok && err.is_empty(), "{err}");
    assert_eq!(
        out,
        "List of relations\nSchema|Name|Type|Owner\npublic|m|table|promflow\npublic|m_odd|table|promflow\n(2 rows)\n"
    );
    let (ok, out, err) = psql(&bin, port, "\\dt m_*");
    assert!(ok && out.contains("public|m_odd|table") && !out.contains("public|m|"), "{out} {err}");
    let (ok, out, err) = psql(&bin, port, "\\d m");
    assert!(ok && err.is_empty(), "{err}");
    assert_eq!(
        out,
        "Table \"public.m\"\nColumn|Type|Collation|Nullable|Default\ninstance|text|||\njob|text|||\n\
         label_value|text|||\nts|timestamp with time zone|||\nvalue|double precision|||\n"
    );
    // the verbose and listing commands too: \d+, \dt+, \l, \l+, \dn, \dn+, \du, \db, \dp
    let (ok, out, err) = psql(&bin, port, "\\d+ m");
    assert!(ok && err.is_empty(), "{err}");
    assert_eq!(
        out,
        "Table \"public.m\"\nColumn|Type|Collation|Nullable|Default|Storage|Compression|Stats target|Description\n\
         instance|text||||extended|||\njob|text||||extended|||\nlabel_value|text||||extended|||\n\
         ts|timestamp with time zone||||plain|||\nvalue|double precision||||plain|||\n\
         Access method: heap\n"
    );
    let (ok, out, err) = psql(&bin, port, "\\dt+ m");
    assert!(ok && out.contains("public|m|table|promflow|permanent|heap||"), "{out} {err}");
    let (ok, out, err) = psql(&bin, port, "\\l");
    assert!(ok && out.contains("\npromflow|promflow|UTF8|") && out.contains("(1 row)"), "{out} {err}");
    let (ok, out, err) = psql(&bin, port, "\\l+");
    assert!(ok && out.contains("|pg_default|") && out.contains("(1 row)"), "{out} {err}");
    for schemas in ["\\dn", "\\dn+"] {
        let (ok, out, err) = psql(&bin, port, schemas);
        assert!(ok && out.contains("\npublic|promflow") && out.contains("(1 row)"), "{schemas}: {out} {err}");
    }
    let (ok, out, err) = psql(&bin, port, "\\du");
    assert!(ok && out.contains("\npromflow|Superuser, Create role, Create DB|{}"), "{out} {err}");
    let (ok, out, err) = psql(&bin, port, "\\db");
    assert!(ok && out.contains("\npg_default|promflow|\npg_global|promflow|\n"), "{out} {err}");
    let (ok, out, err) = psql(&bin, port, "\\dp m_odd");
    assert!(ok && out.contains("\npublic|m_odd|table|||\n"), "{out} {err}");
    let (_, _, err) = psql(&bin, port, "\\d nothing_here");
    assert!(err.contains("Did not find any relation named \"nothing_here\""), "{err}");

    // information_schema and the session's functions, as drivers and BI tools read them
    let (ok, out, err) = psql(
        &bin,
        port,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'm_odd' ORDER BY ordinal_position",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "column_name|data_type|is_nullable\njob|text|YES\nts|timestamp with time zone|YES\n\
         value|double precision|YES\n(3 rows)\n"
    );
    let (ok, out, err) = psql(
        &bin,
        port,
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'm%' ORDER BY 1",
    );
    assert!(ok && out == "table_name\nm\nm_odd\n(2 rows)\n", "{out} {err}");
    let (ok, out, err) =
        psql(&bin, port, "SELECT current_schema(), current_database(), version() LIKE 'PostgreSQL %'");
    assert!(ok && out.contains("public|promflow|t"), "{out} {err}");
    // grouping in the interpreter; what it does not take is an error that names it
    let (ok, out, err) = psql(&bin, port, "SELECT relkind, count(*) > 0 FROM pg_class GROUP BY relkind");
    assert!(ok && out.contains("\nr|t\n(1 row)"), "{out} {err}");
    let (ok, out, err) = psql(
        &bin,
        port,
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT sum(n) FROM t",
    );
    assert!(ok && out.contains("\n6\n"), "{out} {err}");
}

/// A Python program that queries promflow's wire protocol with psycopg (from PyPI) and
/// prints what it received as JSON.
const PSYCOPG: &str = r#"
import json, sys, psycopg
from datetime import datetime, timezone
port, bounds, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dsn = f"host=127.0.0.1 port={port} user=promflow dbname=promflow connect_timeout=10"
out = {}
with psycopg.connect(dsn, cursor_factory=psycopg.ClientCursor) as conn:
    cur = conn.execute(f"SELECT job, count(*), max(value) FROM m WHERE {bounds} GROUP BY job ORDER BY job")
    out["columns"] = [[d.name, d.type_code] for d in cur.description]
    out["rows"] = cur.fetchall()
    cur = conn.execute(f"SELECT ts, value FROM m WHERE instance = %s AND job = %s AND {bounds} ORDER BY ts LIMIT 1", ["i2", "a"])
    ts, value = cur.fetchone()
    out["first"] = [ts.isoformat(), value]
    try:
        conn.execute("SELECT value FROM m GROUP BY job")
    except psycopg.Error as e:
        out["error"] = [e.sqlstate, str(e)]
# psycopg's default cursor: the extended protocol, the server binds the parameters
lo, hi = (datetime.fromtimestamp(t / 1000, timezone.utc) for t in (t0, t1))
first = "SELECT ts, value FROM m WHERE instance = %s AND job = %s AND ts >= %s AND ts <= %s ORDER BY ts LIMIT 1"
with psycopg.connect(dsn) as conn:
    cur = conn.execute("SELECT job, count(*), max(value) FROM m WHERE ts >= %s AND ts <= %s AND job = %s GROUP BY job",
                       [t0 / 1000, t1 / 1000, "b"])
    out["extended_columns"] = [[d.name, d.type_code] for d in cur.description]
    out["extended_rows"] = cur.fetchall()
    ts, value = conn.execute(first, ["i2", "a", lo, hi]).fetchone()
    out["extended_first"] = [ts.isoformat(), value]
    cur = conn.cursor(binary=True)
    ts, value = cur.execute(first, ["i2", "a", lo, hi]).fetchone()
    out["binary_first"] = [ts.isoformat(), value]
    out["binary_int4"] = cur.execute("SELECT %s::int4 + 1", [41]).fetchone()[0]
    typed = ("SELECT 2.5::numeric(3, 2), DATE '2024-05-01', INTERVAL '9 minutes', array_agg(x ORDER BY x),"
             " -12345.000678::numeric(12, 6), INTERVAL '-1 day 2 hours', ARRAY[1.5, NULL]::float8[]"
             " FROM (VALUES ('b'), ('a')) AS t(x)")
    out["binary_typed"] = [str(v) for v in cur.execute(typed).fetchone()]
    out["text_typed"] = [str(v) for v in conn.execute(typed).fetchone()]
    # parameters sent in binary (%b): numeric, date, interval and an array
    from decimal import Decimal
    from datetime import date, timedelta
    out["binary_parameters"] = [str(v) for v in cur.execute(
        "SELECT %b::numeric * 2, %b::date + 1, %b::interval * 2, array_length(%b::int8[], 1)",
        [Decimal("-1.25"), date(2024, 5, 1), timedelta(minutes=9, microseconds=5), [1, None, 3]]).fetchone()]
    # Python lists: text[] of no declared type where ANY takes an array, int8[] where typed
    out["any"] = conn.execute("SELECT job, count(*) FROM m WHERE job = ANY(%s) AND ts >= %s AND ts <= %s"
                              " AND value >= 0 GROUP BY job ORDER BY job", [["b", "x y"], lo, hi]).fetchall()
    out["int_array"] = conn.execute("SELECT %s::int8[]", [[1, None, 3]]).fetchone()[0]
    prepared = [conn.execute(first, ["i1", "a", lo, hi], prepare=True).fetchone()[1] for _ in range(2)]
    out["prepared"] = prepared
    out["star"] = [d.name for d in conn.execute("SELECT * FROM m WHERE job = %s AND ts >= %s AND ts <= %s", ["b", lo, hi]).description]
    try:
        conn.execute("SELECT value FROM m WHERE job = %s GROUP BY job", ["a"])
    except psycopg.Error as e:
        out["extended_error"] = [e.sqlstate, str(e)]
print(json.dumps(out))
"#;

/// Runs the Python program `program` with `args`; answers what it printed, as JSON.
fn run_python(program: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn psycopg_queries_over_the_postgresql_wire_protocol() {
    if !common::python_has("psycopg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_server, t0, t1) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);
    let bounds = bounds(t0, t1);
    let v = run_python(PSYCOPG, &[&port.to_string(), &bounds, &t0.to_string(), &t1.to_string()]);
    // text, int8 and float8 (PostgreSQL's type oids 25, 20 and 701)
    assert_eq!(v["columns"], json!([["job", 25], ["count", 20], ["max", 701]]));
    assert_eq!(v["rows"], json!([["a", 2 * SAMPLES, 38.0], ["b", 2 * SAMPLES - 1, 119.0]]));
    let first =
        chrono::DateTime::from_timestamp_millis(t0).unwrap().format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
    assert_eq!(v["first"], json!([first, 0.0]), "timestamptz reaches Python as a datetime");
    assert!(v["error"][1].as_str().unwrap().contains("GROUP BY"), "{v}");
    // the extended protocol: numbers, text and datetimes bound by the server, text and binary
    // results, named prepared statements
    assert_eq!(v["extended_columns"], v["columns"]);
    assert_eq!(v["extended_rows"], json!([["b", 2 * SAMPLES - 1, 119.0]]));
    assert_eq!(v["extended_first"], v["first"]);
    assert_eq!(v["binary_first"], v["first"], "binary timestamptz and float8");
    assert_eq!(v["binary_int4"], 42);
    // numeric, date, interval and arrays reach Python as theirs, in text and in binary
    let typed = json!([
        "2.50",
        "2024-05-01",
        "0:09:00",
        "['a', 'b']",
        "-12345.000678",
        "-1 day, 2:00:00",
        "[1.5, None]"
    ]);
    assert_eq!(v["text_typed"], typed, "{v}");
    assert_eq!(v["binary_typed"], typed, "{v}");
    assert_eq!(v["binary_parameters"], json!(["-2.50", "2024-05-02", "0:18:00.000010", "3"]), "{v}");
    assert_eq!(v["prepared"], json!([1.0, 1.0]));
    assert_eq!(v["any"], json!([["b", 2 * SAMPLES - 1]]), "{v}");
    assert_eq!(v["int_array"], json!([1, null, 3]), "{v}");
    assert_eq!(v["star"], json!(["instance", "job", "label_value", "ts", "value"]));
    assert_eq!(v["extended_error"][0], "42803", "{v}");
}

/// A Python program that queries promflow with asyncpg (PyPI), which asks for every result
/// column in binary format and prepares every statement. (Arrays of numbers are left out:
/// asyncpg learns their element types with a recursive catalog query promflow does not run.)
const ASYNCPG: &str = r#"
import asyncio, json, sys, asyncpg
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
port, bounds, t0 = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="promflow", database="promflow", timeout=10)
    out = {}
    rows = await conn.fetch(f"SELECT job, count(*), max(value) FROM m WHERE {bounds} GROUP BY job ORDER BY job")
    out["rows"] = [list(r) for r in rows]
    row = await conn.fetchrow(
        "SELECT round(avg(value)::numeric, 3), DATE '2024-05-01', INTERVAL '1 day 02:03:04.5',"
        f" array_agg(DISTINCT job ORDER BY job) FILTER (WHERE value < 2) FROM m WHERE {bounds}")
    out["typed"] = [str(v) for v in row]
    stmt = await conn.prepare(f"SELECT instance, value FROM m WHERE job = $1 AND {bounds} ORDER BY instance, ts LIMIT 2")
    out["prepared"] = [list(r) for r in await stmt.fetch("a")]
    # parameters typed by the statement, which asyncpg sends in binary
    row = await conn.fetchrow(
        "SELECT $1::numeric * 2, $2::date, $3::interval, count(*) FROM m WHERE ts >= $4 AND value > $5 LIMIT $6",
        Decimal("-1.25"), date(2024, 5, 1), timedelta(minutes=9), datetime.fromtimestamp(t0 / 1000, timezone.utc),
        100.0, 5)
    out["typed_parameters"] = [str(v) for v in row]
    async with conn.transaction():
        out["cursor"] = [r["value"] async for r in conn.cursor(
            f"SELECT value FROM m WHERE job = 'a' AND instance = 'i1' AND {bounds} ORDER BY ts", prefetch=7)]
    await conn.close()
    print(json.dumps(out))
asyncio.run(asyncio.wait_for(main(), 60))
"#;

#[test]
fn asyncpg_reads_every_type_in_binary() {
    if !common::python_has("asyncpg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_server, t0, t1) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);
    // bounds as PostgreSQL writes them (not the epoch seconds promflow also takes)
    let bounds = format!("ts >= to_timestamp({}) AND ts <= to_timestamp({})", seconds(t0), seconds(t1));
    let v = run_python(ASYNCPG, &[&port.to_string(), &bounds, &t0.to_string()]);
    assert_eq!(v["rows"], json!([["a", 2 * SAMPLES, 38.0], ["b", 2 * SAMPLES - 1, 119.0]]), "{v}");
    // the average of m's 79 finite samples within the bounds, to three decimals
    let values: Vec<f64> = (0..SAMPLES)
        .flat_map(|k| {
            let k = k as f64;
            [1.0 + k, 2.0 * k, 100.0 + k, 0.5 * k]
        })
        .enumerate()
        .filter(|&(i, _)| i != 5 * 4 + 2)
        .map(|(_, v)| v)
        .collect();
    let avg = values.iter().sum::<f64>() / values.len() as f64;
    assert_eq!(
        v["typed"],
        json!([format!("{avg:.3}"), "2024-05-01", "1 day, 2:03:04.500000", "['a', 'b']"]),
        "{v}"
    );
    assert_eq!(v["prepared"], json!([["i1", 1.0], ["i1", 2.0]]), "{v}");
    // m's samples above 100 are b/i1's after the first, but for its staleness marker
    assert_eq!(
        v["typed_parameters"],
        json!(["-2.50", "2024-05-01", "0:09:00", (SAMPLES - 2).to_string()]),
        "{v}"
    );
    let cursor: Vec<f64> = (0..SAMPLES).map(|k| 1.0 + k as f64).collect();
    assert_eq!(v["cursor"], json!(cursor), "{v}");
}

/// A Python program that reads answers through server-side cursors with psycopg: named
/// cursors in text and binary, scrolling, `WITH HOLD`, and the errors PostgreSQL gives.
const PSYCOPG_CURSORS: &str = r#"
import json, sys, psycopg
dsn = f"host=127.0.0.1 port={sys.argv[1]} user=promflow dbname=promflow connect_timeout=10"
query = "SELECT ts, value FROM m WHERE instance = %s AND job = %s ORDER BY ts"
out = {}
def state(run):
    try:
        run()
    except psycopg.Error as e:
        return [e.sqlstate, str(e).strip()]
with psycopg.connect(dsn) as conn:
    with conn.cursor("page through") as cur:
        cur.itersize = 7
        cur.execute(query, ["i1", "a"])
        out["columns"] = [[d.name, d.type_code] for d in cur.description]
        out["first"] = [v for _, v in cur.fetchmany(2)]
        out["rest"] = [v for _, v in cur]
    with conn.cursor("scroll", binary=True, scrollable=True) as cur:
        cur.execute(query, ["i2", "a"])
        out["binary"] = [v for _, v in cur.fetchmany(3)]
        cur.scroll(-2)
        out["scrolled"] = cur.fetchone()[1]
        cur.scroll(0, mode="absolute")
        out["absolute"] = cur.fetchone()[1]
    with conn.cursor("forward", scrollable=False) as cur:
        cur.execute(query, ["i1", "a"])
        cur.fetchone()
        out["backward"] = state(lambda: cur.scroll(-1))
    conn.rollback()
    held = conn.cursor("held", withhold=True)
    held.execute("SELECT job, count(*) FROM m GROUP BY job ORDER BY job")
    gone = conn.cursor("gone")
    gone.execute("SELECT 1")
    conn.commit()
    out["held"] = held.fetchall()
    held.close()
    out["gone"] = state(lambda: conn.execute('FETCH 1 FROM "gone"'))
    conn.rollback()
    out["missing"] = state(lambda: conn.execute("CLOSE nothing"))
    conn.rollback()
    # a WITH HOLD cursor whose transaction rolls back is gone too; DISCARD ALL closes the rest
    undone = conn.cursor("undone", withhold=True)
    undone.execute("SELECT 1")
    conn.rollback()
    out["undone"] = state(lambda: conn.execute('FETCH 1 FROM "undone"'))
    conn.rollback()
    kept = conn.cursor("kept", withhold=True)
    kept.execute("SELECT 1")
    conn.commit()
    conn.autocommit = True
    conn.execute("DISCARD ALL")
    out["discarded"] = state(lambda: conn.execute('FETCH 1 FROM "kept"'))
    conn.autocommit = False
    out["bad_query"] = state(lambda: conn.cursor("bad").execute("SELECT nothing FROM m"))
    conn.rollback()
with psycopg.connect(dsn, autocommit=True) as conn:
    out["outside"] = state(lambda: conn.execute("DECLARE c CURSOR FOR SELECT 1"))
print(json.dumps(out))
"#;

/// Server-side cursors page through an answer as PostgreSQL's do: psycopg's named cursors
/// (text, binary, scrollable, `WITH HOLD`) and psql's `FETCH_COUNT`.
#[test]
fn cursors_page_through_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_server, _, _) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);
    let values = |f: &dyn Fn(i64) -> f64| (0..SAMPLES).map(f).collect::<Vec<_>>();

    if let Some(bin) = common::peer("psql") {
        // psql reads the answer through a cursor, FETCH_COUNT rows at a time
        let out = std::process::Command::new(&bin)
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "promflow"])
            .args(["-d", "promflow", "-v", "FETCH_COUNT=6", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                let script = "SELECT value FROM m WHERE instance = 'i1' AND job = 'a' ORDER BY ts;\n\
                              BEGIN;\nDECLARE c SCROLL CURSOR FOR SELECT value FROM m WHERE job = 'b' \
                              AND instance IS NULL ORDER BY ts;\nMOVE FORWARD 3 IN c;\nFETCH 2 FROM c;\n\
                              FETCH PRIOR FROM c;\nFETCH LAST FROM c;\nCLOSE c;\nCOMMIT;\n";
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .expect("run psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
        let mut want: Vec<String> = values(&|k| 1.0 + k as f64).iter().map(|v| v.to_string()).collect();
        want.extend(["1.5", "2", "1.5", "9.5"].map(String::from));
        let got: Vec<&str> =
            stdout.lines().filter(|l| !l.is_empty() && !l.chars().any(char::is_alphabetic)).collect();
        assert_eq!(got, want, "{stdout}");
    }

    if !common::python_has("psycopg") {
        return;
    }
    let v = run_python(PSYCOPG_CURSORS, &[&port.to_string()]);
    assert_eq!(v["columns"], json!([["ts", 1184], ["value", 701]]), "{v}");
    assert_eq!(v["first"], json!(values(&|k| 1.0 + k as f64)[..2]));
    assert_eq!(v["rest"], json!(values(&|k| 1.0 + k as f64)[2..]));
    assert_eq!(v["binary"], json!([0.0, 2.0, 4.0]));
    assert_eq!(v["scrolled"], json!(2.0), "a scroll back and a fetch: the second row again");
    assert_eq!(v["absolute"], json!(0.0));
    assert_eq!(v["backward"][0], "55000", "{v}");
    assert_eq!(v["held"], json!([["a", 2 * SAMPLES], ["b", 2 * SAMPLES - 1]]), "WITH HOLD outlives COMMIT");
    assert_eq!(v["gone"][0], "34000", "a cursor without HOLD ends with its transaction: {v}");
    assert_eq!(v["missing"], json!(["34000", "cursor \"nothing\" does not exist"]));
    assert_eq!(v["undone"][0], "34000", "a rolled-back WITH HOLD cursor is closed: {v}");
    assert_eq!(v["discarded"][0], "34000", "DISCARD ALL closes cursors: {v}");
    assert_eq!(v["bad_query"][0], "42703", "{v}");
    assert_eq!(v["outside"][0], "25P01", "{v}");
}

/// A Python program that reflects promflow's tables with SQLAlchemy's PostgreSQL dialect
/// (over psycopg) and queries them through its expression language, bound parameters and
/// streamed results (a server-side cursor).
const SQLALCHEMY: &str = r#"
import json, sys, sqlalchemy as sa
engine = sa.create_engine(f"postgresql+psycopg://promflow@127.0.0.1:{sys.argv[1]}/promflow")
inspector = sa.inspect(engine)
out = {
    "schemas": inspector.get_schema_names(),
    "tables": inspector.get_table_names(),
    "views": inspector.get_view_names(),
    "columns": [[c["name"], str(c["type"]), c["nullable"]] for c in inspector.get_columns("m")],
    "pk": inspector.get_pk_constraint("m")["constrained_columns"],
    "fks": inspector.get_foreign_keys("m"),
    "indexes": inspector.get_indexes("m"),
    "unique": inspector.get_unique_constraints("m"),
    "comment": inspector.get_table_comment("m")["text"],
    "has_table": [inspector.has_table("m"), inspector.has_table("nothing_here")],
}
m = sa.Table("m", sa.MetaData(), autoload_with=engine)
with engine.connect() as conn:
    query = sa.select(m.c.job, sa.func.count(), sa.func.max(m.c.value)).group_by(m.c.job).order_by(m.c.job)
    out["grouped"] = [list(r) for r in conn.execute(query)]
    out["bound"] = conn.execute(sa.text("SELECT sum(value) FROM m WHERE job = :job AND instance = :i"), {"job": "a", "i": "i1"}).scalar()
    streamed = conn.execution_options(stream_results=True, max_row_buffer=4).execute(
        sa.select(m.c.value).where(m.c.job == "a", m.c.instance == "i2").order_by(m.c.ts))
    out["streamed"] = [r[0] for r in streamed]
print(json.dumps(out))
"#;

/// pgjdbc (Debian's), as Metabase and other JDBC tools use it, reflects the metrics' tables
/// and columns through its database metadata, and runs a query and a prepared statement, the
/// latter read in binary once pgjdbc prepares it on the server.
#[test]
fn jdbc_reflects_and_queries_the_metrics() {
    const DRIVER: &str = "/usr/share/java/postgresql.jar";
    let java = std::process::Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success());
    if !java || !std::path::Path::new(DRIVER).exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("java or pgjdbc is not installed; .ci/install-peers installs them");
        }
        eprintln!("SKIP: java or {DRIVER} is missing (apt-get install openjdk-17-jdk-headless libpostgresql-jdbc-java)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_server, t0, _) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/jdbc/Jdbc.java");
    let out = std::process::Command::new("java")
        .args(["-cp", DRIVER, program, &port.to_string(), &t0.to_string()])
        .output()
        .expect("run java");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let answer = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    assert_eq!(answer("product"), "PostgreSQL 15");
    assert_eq!(answer("schemas"), "information_schema;pg_catalog;public");
    assert_eq!(answer("tables"), "public,m,TABLE;public,m_odd,TABLE");
    assert_eq!(
        answer("columns"),
        "instance,text,12,1,1;job,text,12,1,2;label_value,text,12,1,3;ts,timestamptz,93,1,4;value,float8,8,1,5"
    );
    for none in ["primary_keys", "imported_keys", "indexes"] {
        assert_eq!(answer(none), "", "{none}");
    }
    // job a: i1 (1 + k) and i2 (2k); job b: 100 + k (one sample a staleness marker) and 0.5k
    let top_b = 100.0 + (SAMPLES - 1) as f64;
    assert_eq!(
        answer("query"),
        format!("a,{},{:?};b,{},{top_b:?}", 2 * SAMPLES, 2.0 * (SAMPLES - 1) as f64, 2 * SAMPLES - 1)
    );
    let day = chrono::DateTime::from_timestamp_millis(t0).unwrap().date_naive();
    assert_eq!(answer("prepared"), format!("i1,{t0},1.0,1.0,{day}"));
}

/// SQLAlchemy (PyPI) reflects the metrics as tables through its PostgreSQL dialect and
/// queries them, as Superset and other SQLAlchemy-based tools do.
#[test]
fn sqlalchemy_reflects_and_queries_the_metrics() {
    if !common::python_has("psycopg") || !common::python_has("sqlalchemy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_server, _, _) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);
    let v = run_python(SQLALCHEMY, &[&port.to_string()]);
    assert_eq!(v["schemas"], json!(["information_schema", "public"]), "{v}");
    assert_eq!(v["tables"], json!(["m", "m_odd"]), "{v}");
    assert_eq!(v["views"], json!([]));
    assert_eq!(
        v["columns"],
        json!([
            ["instance", "TEXT", true],
            ["job", "TEXT", true],
            ["label_value", "TEXT", true],
            ["ts", "TIMESTAMP", true],
            ["value", "DOUBLE PRECISION", true]
        ]),
        "{v}"
    );
    assert_eq!(v["pk"], json!([]));
    assert_eq!(v["fks"], json!([]));
    assert_eq!(v["indexes"], json!([]));
    assert_eq!(v["unique"], json!([]));
    assert_eq!(v["comment"], Value::Null);
    assert_eq!(v["has_table"], json!([true, false]));
    assert_eq!(v["grouped"], json!([["a", 2 * SAMPLES, 38.0], ["b", 2 * SAMPLES - 1, 119.0]]), "{v}");
    assert_eq!(v["bound"], json!((1..=SAMPLES).sum::<i64>() as f64));
    assert_eq!(v["streamed"], json!((0..SAMPLES).map(|k| 2.0 * k as f64).collect::<Vec<_>>()));
}

/// Rules may give `sql:` instead of `expr:` (promflow's extension): a standing query records
/// the same series as its PromQL twin and alerts on its `HAVING`; `promflow check rules`
/// accepts the file with a warning that Prometheus would not.
#[test]
fn standing_sql_rules_record_and_alert_like_their_promql_twins() {
    let dir = tempfile::tempdir().unwrap();
    let window = "FROM temp WHERE ts > now() - INTERVAL '5 minutes' GROUP BY job";
    let rules = format!(
        "groups:
- name: standing
  interval: 1s
  rules:
  - record: sql:temp:max
    sql: SELECT job, max(value) {window}
  - record: promql:temp:max
    expr: max by (job) (max_over_time(temp[5m]))
  - record: sql:temp:avg
    sql: SELECT job, avg(value) {window}
  - record: promql:temp:avg
    expr: sum by (job) (sum_over_time(temp[5m])) / sum by (job) (count_over_time(temp[5m]))
  - alert: Hot
    sql: SELECT job, max(value) {window} HAVING max(value) > 10
"
    );
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not portable to Prometheus: group \"standing\", rule \"sql:temp:max\": sql"),
        "{stderr}"
    );
    if let Some(promtool) = common::peer("promtool") {
        let status =
            std::process::Command::new(promtool).args(["check", "rules"]).arg(&file).output().unwrap();
        assert_eq!(status.status.code(), Some(1), "promtool accepts what it should not");
    }
    std::fs::write(
        dir.path().join("bad.yml"),
        "groups:\n- name: g\n  rules:\n  - record: a\n    sql: SELECT sum(value) FROM temp\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["check", "rules"])
        .arg(dir.path().join("bad.yml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("could not compile SQL: a standing query's ts bounds slide with now()"), "{text}");

    let server = start_promflow(
        dir.path(),
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n",
        &["--web.enable-remote-write-receiver"],
    );
    let t0 = now_ms() - 60_000;
    let (status, body) = remote_write(
        &server,
        vec![
            series(&[("__name__", "temp"), ("job", "x"), ("host", "a")], &[(t0, 5.0), (t0 + 15_000, 7.0)]),
            series(&[("__name__", "temp"), ("job", "y"), ("host", "b")], &[(t0, 20.0), (t0 + 15_000, 30.0)]),
            series(&[("__name__", "temp"), ("job", "y"), ("host", "c")], &[(t0, 25.0)]),
        ],
    );
    assert!(status / 100 == 2, "{body}");
    let by_job = |query: &str| -> BTreeMap<String, String> {
        let (_, v) = server.get_json(&format!("/api/v1/query?query={query}"));
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["metric"]["job"].as_str().unwrap_or("").to_string(),
                    s["value"][1].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let recorded = common::wait_for(std::time::Duration::from_secs(20), || {
        let all = ["sql:temp:max", "promql:temp:max", "sql:temp:avg", "promql:temp:avg"].map(by_job);
        all.iter().all(|r| r.len() == 2).then_some(all)
    });
    let [sql_max, promql_max, sql_avg, promql_avg] = recorded.expect("every rule records both jobs");
    let expect = |pairs: [(&str, &str); 2]| pairs.map(|(j, v)| (j.to_string(), v.to_string())).into();
    assert_eq!(sql_max, expect([("x", "7"), ("y", "30")]));
    assert_eq!(sql_max, promql_max);
    assert_eq!(sql_avg, expect([("x", "6"), ("y", "25")]));
    assert_eq!(sql_avg, promql_avg);

    let firing = common::wait_for(std::time::Duration::from_secs(20), || {
        let (_, v) = server.get_json("/api/v1/alerts");
        let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
        (alerts.len() == 1 && alerts[0]["state"] == "firing").then_some(alerts)
    });
    let alerts = firing.expect("the SQL alert fires");
    assert_eq!(alerts[0]["labels"], json!({"alertname": "Hot", "job": "y"}));
    assert_eq!(alerts[0]["value"], "3e+01");
    let (_, rules) = server.get_json("/api/v1/rules");
    let queries: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["query"].as_str())
        .collect();
    assert!(
        queries[0].starts_with("SELECT job, max(value) FROM temp"),
        "the rules API shows the SQL: {queries:?}"
    );
}

/// `stddev` and `variance` (sample and population) over each group's samples, arithmetic
/// over aggregates, and `HAVING` over such arithmetic, against the written samples.
#[test]
fn stddev_variance_and_arithmetic_over_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let bounds = bounds(t0, t1);
    // the rows of each job, as setup wrote them (the staleness marker is no row)
    let job_a: Vec<f64> = (0..SAMPLES).flat_map(|k| [1.0 + k as f64, 2.0 * k as f64]).collect();
    let job_b: Vec<f64> = (0..SAMPLES)
        .filter(|k| *k != 5)
        .map(|k| 100.0 + k as f64)
        .chain((0..SAMPLES).map(|k| 0.5 * k as f64))
        .collect();
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let squares: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
        let spread = v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min);
        [
            (squares / (n - 1.0)).sqrt(),
            squares / n,
            (squares / n).sqrt(),
            squares / (n - 1.0),
            spread,
            mean * 2.0,
        ]
    };
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT job, stddev(value), var_pop(value), stddev_pop(value), variance(value), \
             max(value) - min(value) AS spread, (sum(value) / count(*)) * 2 AS twice_mean \
             FROM m WHERE {bounds} GROUP BY job ORDER BY job"
        ),
    );
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> =
        v["data"]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["job", "stddev", "var_pop", "stddev_pop", "variance", "spread", "twice_mean"]);
    let got = rows(&v);
    assert_eq!(got.len(), 2, "{v}");
    for (row, samples) in got.iter().zip([&job_a, &job_b]) {
        let want = stats(samples);
        for (i, w) in want.iter().enumerate() {
            let g = row[i + 1].as_f64().unwrap_or_else(|| panic!("column {} of {row}", names[i + 1]));
            assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{}: {g} against {w} in {row}", names[i + 1]);
        }
    }

    // percentile_cont over every row of the group, interpolated as PostgreSQL does
    let percentile = |v: &[f64], phi: f64| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let pos = phi * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT job, percentile_cont(0.5) WITHIN GROUP (ORDER BY value), \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY value) AS p90, \
             percentile_cont(0.25) WITHIN GROUP (ORDER BY value DESC) AS top_quarter \
             FROM m WHERE {bounds} GROUP BY job ORDER BY job"
        ),
    );
    assert_eq!(status, 200, "{v}");
    for (row, samples) in rows(&v).iter().zip([&job_a, &job_b]) {
        for (i, phi) in [0.5, 0.9, 0.75].into_iter().enumerate() {
            let (g, w) = (row[i + 1].as_f64().unwrap(), percentile(samples, phi));
            assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "φ {phi}: {g} against {w} in {row}");
        }
    }
    let (_, explained) = sql(
        &server,
        &format!("EXPLAIN SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY value) FROM m WHERE {bounds}"),
    );
    let plan = rows(&explained)[0][1].as_str().unwrap().to_string();
    assert!(plan.starts_with("AggregateSamples Quantile by() param=0.9"), "{plan}");

    // HAVING over arithmetic and between two aggregates
    let (_, v) = sql(
        &server,
        &format!(
            "SELECT job, count(*) FROM m WHERE {bounds} GROUP BY job HAVING max(value) - min(value) > 50"
        ),
    );
    assert_eq!(rows(&v), vec![json!(["b", 39])], "{v}");
    let (_, v) = sql(
        &server,
        &format!("SELECT job FROM m WHERE {bounds} GROUP BY job HAVING sum(value) > count(*) * 50"),
    );
    assert_eq!(rows(&v), vec![json!(["b"])], "only b's mean is above 50: {v}");

    // a constant is each group's, as in PostgreSQL (the relational engine answers it, with
    // the `ts` bounds in epoch seconds read as times)
    let (_, v) = sql(&server, &format!("SELECT job, 1 + 2 FROM m WHERE {bounds} GROUP BY job ORDER BY job"));
    assert_eq!(rows(&v), vec![json!(["a", 3]), json!(["b", 3])], "{v}");
    let (_, v) = sql(
        &server,
        &format!("SELECT job, max(value) || 'x' FROM m WHERE {bounds} GROUP BY job ORDER BY job"),
    );
    assert_eq!(rows(&v), vec![json!(["a", "38x"]), json!(["b", "119x"])], "{v}");
    // other functions are not aggregates
    for (q, why) in [
        (
            format!("SELECT job, percentile_cont(value) FROM m WHERE {bounds} GROUP BY job"),
            "takes a fraction",
        ),
        (
            format!("SELECT percentile_cont(1.5) WITHIN GROUP (ORDER BY value) FROM m WHERE {bounds}"),
            "percentile value 1.5 is not between 0 and 1",
        ),
    ] {
        let (status, v) = sql(&server, &q);
        assert_eq!(status, 400, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{q}: {v}");
    }
}

/// Reads an Arrow IPC stream from stdin with pyarrow (PyPI) and prints its schema and rows as
/// JSON: timestamps as float seconds, NaN and ±Inf as the JSON answer writes them.
const PYARROW: &str = r#"
import json, math, sys
import pyarrow.ipc as ipc
table = ipc.open_stream(sys.stdin.buffer.read()).read_all()
def cell(v):
    if hasattr(v, "timestamp"):
        return v.timestamp()
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    return v
rows = [[cell(v) for v in row] for row in zip(*[c.to_pylist() for c in table.columns])]
print(json.dumps({"schema": [[f.name, str(f.type)] for f in table.schema], "rows": rows}))
"#;

/// With `Accept: application/vnd.apache.arrow.stream`, `/api/v1/sql` answers an Arrow IPC
/// stream that pyarrow reads into the same columns and rows as the JSON answer.
#[test]
fn arrow_ipc_answers_carry_the_json_answers_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let bounds = bounds(t0, t1);
    let arrow = |q: &str| {
        let r = client()
            .post(server.url("/api/v1/sql"))
            .header("Accept", "application/vnd.apache.arrow.stream")
            .form(&[("query", q)])
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let media = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (status, media, r.bytes().unwrap().to_vec())
    };
    for (q, schema) in [
        (
            format!("SELECT job, instance, ts, value FROM m WHERE {bounds} ORDER BY job, instance, ts"),
            json!([
                ["job", "string"],
                ["instance", "string"],
                ["ts", "timestamp[ms, tz=UTC]"],
                ["value", "double"]
            ]),
        ),
        (
            format!("SELECT ts, value FROM m_odd WHERE {bounds}"),
            json!([["ts", "timestamp[ms, tz=UTC]"], ["value", "double"]]),
        ),
        (
            format!("SELECT job, count(*) AS n, avg(value) FROM m WHERE {bounds} GROUP BY job"),
            json!([["job", "string"], ["n", "int64"], ["avg", "double"]]),
        ),
        (
            format!("SELECT job, ts, value FROM m WHERE job = 'none' AND {bounds}"),
            json!([["job", "string"], ["ts", "timestamp[ms, tz=UTC]"], ["value", "double"]]),
        ),
    ] {
        let (status, media, body) = arrow(&q);
        assert_eq!((status, media.as_str()), (200, "application/vnd.apache.arrow.stream"), "{q}");
        let mut child = std::process::Command::new("python3")
            .args(["-c", PYARROW])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run python3");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &body).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pyarrow (installed by .ci/install-peers): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(read["schema"], schema, "{q}");
        let (_, json_answer) = sql(&server, &q);
        assert_eq!(read["rows"], json_answer["data"]["rows"], "{q}: the Arrow rows are the JSON rows");
    }
    // an error stays the API's JSON error
    let (status, media, body) = arrow("SELECT FROM");
    assert_eq!((status, media.as_str()), (400, "application/json"), "{}", String::from_utf8_lossy(&body));
}

/// `histogram_quantile(φ, rate(value))` over a classic histogram's buckets compiles to
/// PromQL's `histogram_quantile(φ, sum by (…, le) (rate(…)))` and answers as it does.
#[test]
fn histogram_quantile_over_buckets_is_its_promql_twin() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    // two instances of one job; each bucket's counter grows at its own pace
    let mut buckets = Vec::new();
    for (instance, pace) in [("i1", 1.0), ("i2", 3.0)] {
        for (le, share) in [("0.1", 0.2), ("0.5", 0.7), ("+Inf", 1.0)] {
            let points: Vec<(i64, f64)> =
                (0..SAMPLES).map(|k| (t0 + k * STEP_MS, (k as f64) * 10.0 * pace * share)).collect();
            buckets.push(series(
                &[("__name__", "lat_bucket"), ("job", "a"), ("instance", instance), ("le", le)],
                &points,
            ));
        }
    }
    let (status, body) = remote_write(&server, buckets);
    assert!(status / 100 == 2, "{body}");
    let range = format!("{}ms", t1 - t0 + 1);
    let bounds = bounds(t0, t1);
    for (sql_text, promql) in [
        (
            format!("SELECT job, histogram_quantile(0.9, rate(value)) FROM lat_bucket WHERE {bounds} GROUP BY job"),
            format!("histogram_quantile(0.9, sum by (job, le) (rate(lat_bucket[{range}])))"),
        ),
        (
            format!("SELECT instance, histogram_quantile(0.5, increase(value)) AS median FROM lat_bucket WHERE {bounds} GROUP BY instance"),
            format!("histogram_quantile(0.5, sum by (instance, le) (increase(lat_bucket[{range}])))"),
        ),
    ] {
        let (status, explained) = sql(&server, &format!("EXPLAIN {sql_text}"));
        assert_eq!(status, 200, "{explained}");
        let (_, twin) =
            server.post_form("/api/v1/query", &[("query", &promql), ("time", &seconds(t1)), ("explain", "1")]);
        assert_eq!(rows(&explained)[0][1], twin["data"]["result"], "{sql_text} and {promql} compile alike");
        let (_, got) = sql(&server, &sql_text);
        let (_, want) = server.post_form("/api/v1/query", &[("query", &promql), ("time", &seconds(t1))]);
        let (got, want) = (sql_groups(&got), promql_groups(&want));
        assert!(!want.is_empty() && got == want, "{sql_text}: {got:?} against {want:?}");
    }
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT le, histogram_quantile(0.9, rate(value)) FROM lat_bucket WHERE {bounds} GROUP BY le"
        ),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("le cannot be in GROUP BY"), "{v}");
}

/// `WITH`, subqueries in `FROM` and joins: each metric query in them runs through its plans,
/// and the interpreter joins and filters their rows (a metric table's own `WHERE` conjuncts
/// are applied where its rows are read).
#[test]
fn ctes_subqueries_and_joins_over_metric_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let bounds = bounds(t0, t1);

    let (status, v) = sql(
        &server,
        &format!(
            "WITH mx AS (SELECT job, max(value) AS top FROM m WHERE {bounds} GROUP BY job), \
                  n AS (SELECT job, count(*) AS samples FROM m WHERE {bounds} GROUP BY job) \
             SELECT mx.job, mx.top, n.samples, mx.top / n.samples AS ratio \
             FROM mx JOIN n ON mx.job = n.job ORDER BY mx.job"
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        rows(&v),
        // count is bigint, as in PostgreSQL
        vec![json!(["a", 38.0, 40, 38.0 / 40.0]), json!(["b", 119.0, 39, 119.0 / 39.0])]
    );

    let (_, v) = sql(
        &server,
        &format!(
            "SELECT job, top FROM (SELECT job, max(value) AS top FROM m WHERE {bounds} GROUP BY job) t \
             WHERE top > 100"
        ),
    );
    assert_eq!(rows(&v), vec![json!(["b", 119.0])], "{v}");

    // two series of one metric joined on their timestamps; x's bounds use now(), which only
    // the metric's own query (where they are applied) understands
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT x.ts, x.value, y.value, y.value - x.value AS gap FROM m x JOIN m y ON x.ts = y.ts \
             WHERE x.job = 'a' AND x.instance = 'i1' AND x.ts > now() - INTERVAL '1 hour' \
             AND y.job = 'a' AND y.instance = 'i2' AND y.ts >= {} AND y.ts <= {} \
             ORDER BY x.ts LIMIT 3",
            seconds(t0),
            seconds(t1)
        ),
    );
    assert_eq!(status, 200, "{v}");
    let want: Vec<Value> = (0..3)
        .map(|k| {
            let (x, y) = (1.0 + k as f64, 2.0 * k as f64);
            json!([(t0 + k * STEP_MS) as f64 / 1000.0, x, y, y - x])
        })
        .collect();
    assert_eq!(rows(&v), want, "{v}");

    // a condition over both tables is the interpreter's, after the join (y = 2k > x = 1 + k
    // from k = 2 on)
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT x.ts FROM m x, m y WHERE x.ts = y.ts AND x.instance = 'i1' AND y.instance = 'i2' \
             AND x.job = 'a' AND y.job = 'a' AND {} AND y.value > x.value",
            bounds.replace("ts", "x.ts")
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(rows(&v).len(), SAMPLES as usize - 2, "{v}");
    assert_eq!(rows(&v)[0], json!([(t0 + 2 * STEP_MS) as f64 / 1000.0]));

    // aggregates over a join's rows, grouped and filtered by HAVING (y − x = k − 1 for k in
    // 0..20: mean 8.5)
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT x.job, count(*) AS pairs, avg(y.value - x.value) AS gap, max(y.value) \
             FROM m x JOIN m y ON x.ts = y.ts AND x.job = y.job \
             WHERE x.instance = 'i1' AND y.instance = 'i2' AND {} GROUP BY x.job HAVING count(*) > 5",
            bounds.replace("ts", "x.ts")
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(rows(&v), vec![json!(["a", 20, 8.5, 38.0])], "{v}");
    let (_, v) =
        sql(&server, &format!("SELECT count(*) FROM (SELECT job FROM m WHERE job = 'none' AND {bounds}) t"));
    assert_eq!(rows(&v), vec![json!([0])], "an aggregate over no rows is one row: {v}");
    // WHERE on the right side of a LEFT JOIN filters after the join (y's rows of i2 are all
    // job a, so none is left), not before it (which would keep every x with NULLs)
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT x.ts, y.value FROM m x LEFT JOIN m y ON x.ts = y.ts AND y.instance = 'i2' \
             WHERE x.job = 'a' AND x.instance = 'i1' AND {} AND y.job = 'b'",
            bounds.replace("ts", "x.ts")
        ),
    );
    assert_eq!((status, rows(&v).len()), (200, 0), "{v}");

    // errors name the problem and its place
    let (status, v) = sql(
        &server,
        &format!("SELECT x.nope FROM m x JOIN m y ON x.ts = y.ts WHERE {}", bounds.replace("ts", "x.ts")),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("column x.nope does not exist"), "{v}");

    // an answer too large to hold is stopped (79⁴ rows); counting them holds none
    let (status, v) = sql(&server, "SELECT a.ts FROM m a, m b, m c, m d");
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("more than 5000000 rows"), "{v}");
    let (status, v) = sql(&server, "SELECT count(*) FROM m a, m b");
    assert_eq!((status, rows(&v)), (200, vec![json!([79 * 79])]), "{v}");
    let (status, v) =
        sql(&server, "SELECT x.instance, count(*) FROM m x JOIN m y ON x.ts = y.ts GROUP BY x.job");
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("must appear in the GROUP BY clause"), "{v}");
}

/// `promql(query, start, end, step)` and `promql(query, time)`: a PromQL query's answer as
/// rows, the same points `/api/v1/query_range` and `/api/v1/query` answer, which SQL can then
/// join and aggregate.
#[test]
fn promql_table_function_answers_the_apis_points_as_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let expr = "sum by (job) (m)";
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT job, ts, value FROM promql('{expr}', to_timestamp({}), to_timestamp({}), INTERVAL '1 minute') ORDER BY job, ts",
            seconds(t0),
            seconds(t1)
        ),
    );
    assert_eq!(status, 200, "{v}");
    let (_, api) = server.get_json(&format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=60",
        urlencode(expr),
        seconds(t0),
        seconds(t1)
    ));
    let mut want = Vec::new();
    for s in result(&api) {
        for p in s["values"].as_array().unwrap() {
            let value: f64 = p[1].as_str().unwrap().parse().unwrap();
            want.push(json!([s["metric"]["job"], p[0].as_f64().unwrap(), value]));
        }
    }
    assert!(want.len() >= 8, "{api}");
    assert_eq!(rows(&v), want, "the range query's points");

    // an instant query at a time, joined with a metric's table: every label is a column
    let within = format!("ts >= to_timestamp({}) AND ts <= to_timestamp({})", seconds(t0), seconds(t1));
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT p.job, p.instance, p.value, t.n FROM promql('m', {at}) AS p \
             JOIN (SELECT job, count(*) AS n FROM m WHERE {bounds} GROUP BY job) AS t ON p.job = t.job \
             WHERE p.instance = 'i1' ORDER BY p.job",
            at = seconds(t1),
            bounds = within
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        rows(&v),
        vec![json!(["a", "i1", SAMPLES as f64, 2 * SAMPLES]), json!(["b", "i1", 119.0, 2 * SAMPLES - 1])]
    );
    let (_, v) = sql(&server, &format!("SELECT * FROM promql('m{{job=\"a\"}}', {})", seconds(t1)));
    let names: Vec<&str> =
        v["data"]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["__name__", "instance", "job", "ts", "value"], "{v}");

    // a query that does not parse, and arguments that are not what they must be
    for (q, error) in [
        ("SELECT * FROM promql('sum(', now())", "promql: "),
        (
            "SELECT * FROM promql('m', now() - INTERVAL '1 hour', now(), INTERVAL '0 seconds')",
            "the step must be positive",
        ),
        (
            "SELECT * FROM promql('m', now() - INTERVAL '1 year', now(), INTERVAL '1 second')",
            "more than 11000 points",
        ),
        ("SELECT * FROM promql('\"text\"', now())", "a string result is no table"),
    ] {
        let (status, v) = sql(&server, q);
        assert_eq!(status, 400, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(error), "{q}: {v}");
    }
}

/// A subquery or common table expression that is a query of one metric the plan IR takes
/// runs on promflow's executors inside DataFusion's statement: PromQL's range functions are
/// SQL aggregates there, with window functions, joins and set operations around them, and
/// `EXPLAIN` shows both parts.
#[test]
fn plan_ir_parts_run_inside_relational_statements() {
    let dir = tempfile::tempdir().unwrap();
    let (server, t0, t1) = setup(dir.path());
    let bounds = bounds(t0, t1);
    let alone = |q: &str| {
        let (status, v) = sql(&server, q);
        assert_eq!(status, 200, "{q}: {v}");
        rows(&v)
    };
    let rates = alone(&format!("SELECT job, rate(value) FROM m WHERE {bounds} GROUP BY job ORDER BY job"));
    assert_eq!(rates.len(), 2, "{rates:?}");

    // a window function over the rates: DataFusion's, over what the kernels computed
    let ranked = alone(&format!(
        "SELECT job, r, rank() OVER (ORDER BY r DESC) AS place \
         FROM (SELECT job, rate(value) AS r FROM m WHERE {bounds} GROUP BY job) t ORDER BY job"
    ));
    let place = |job: &str| if rates[0][1].as_f64() > rates[1][1].as_f64() { job == "b" } else { job == "a" };
    for (row, alone) in ranked.iter().zip(&rates) {
        assert_eq!(row[0], alone[0]);
        assert_eq!(row[1], alone[1], "the same kernels, the same rate");
        assert_eq!(row[2], json!(if place(row[0].as_str().unwrap()) { 2 } else { 1 }), "{ranked:?}");
    }

    // common table expressions of increase and of count, joined
    let joined = alone(&format!(
        "WITH inc AS (SELECT job, increase(value) AS up FROM m WHERE {bounds} GROUP BY job), \
              n AS (SELECT job, count(*) AS samples FROM m WHERE {bounds} GROUP BY job) \
         SELECT inc.job, inc.up, n.samples FROM inc JOIN n USING (job) ORDER BY 1"
    ));
    let increases =
        alone(&format!("SELECT job, increase(value) FROM m WHERE {bounds} GROUP BY job ORDER BY job"));
    let counts = alone(&format!("SELECT job, count(*) FROM m WHERE {bounds} GROUP BY job ORDER BY job"));
    for ((row, up), n) in joined.iter().zip(&increases).zip(&counts) {
        assert_eq!(json!([row[0], row[1], row[2]]), json!([up[0], up[1], n[1]]), "{joined:?}");
    }

    // a CTE that reads another CTE is DataFusion's own; the one it reads is the IR's
    let nested = alone(&format!(
        "WITH per AS (SELECT job, max(value) AS high FROM m WHERE {bounds} GROUP BY job), \
              best AS (SELECT max(high) AS high FROM per) SELECT high FROM best"
    ));
    assert_eq!(nested, vec![json!([119.0])]);

    // EXPLAIN: DataFusion's plan, then the IR part's
    let explained = alone(&format!(
        "EXPLAIN SELECT job, rank() OVER (ORDER BY r DESC) \
         FROM (SELECT job, rate(value) AS r FROM m WHERE {bounds} GROUP BY job) t"
    ));
    let text: Vec<String> = explained.iter().map(|r| format!("{} | {}", r[0], r[1])).collect();
    assert!(text.iter().any(|r| r.contains("logical_plan") && r.contains("pg_ir_part_0")), "{text:#?}");
    assert!(
        text.iter()
            .any(|r| r.contains("promflow plan IR (pg_ir_part_0(), r)") && r.contains("WindowFunction Rate")),
        "{text:#?}"
    );
}

/// Counter native histograms of two instances of job `api`, a sample every 15 s from `t0`:
/// sample `k` of instance `i` has `n = k·(i+2)` observations in each of four buckets
/// ([`common::histogram_series`]).
fn native_histograms(t0: i64) -> Vec<promflow_remote::TimeSeries> {
    (0..2i64)
        .map(|i| {
            let instance = format!("api-{i}");
            let labels = [("__name__", "rpc_seconds"), ("job", "api"), ("instance", instance.as_str())];
            common::histogram_series(&labels, (0..SAMPLES).map(|k| (t0 + k * STEP_MS, (k * (i + 2)) as f64)))
        })
        .collect()
}

/// The single number of an instant query's answer of one element.
fn promql_number(server: &Server, query: &str, t: i64) -> f64 {
    let (_, v) = server.post_form("/api/v1/query", &[("query", query), ("time", &seconds(t))]);
    let result = result(&v);
    assert_eq!(result.len(), 1, "{query}: {v}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

/// A metric holding native histograms is a table with a `histogram` column (`jsonb`, the
/// object the query API writes), read by PromQL's histogram functions of the same names and
/// added up by `sum` and `avg` as PromQL adds them; the answers are their PromQL twins'.
#[test]
fn native_histograms_are_a_column_that_sql_reads_and_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (server, t0, t1) = setup_with(dir.path(), &[&format!("--sql.listen-address=127.0.0.1:{port}")]);
    let (status, body) = remote_write(&server, native_histograms(t0));
    assert!(status / 100 == 2, "{body}");

    let (status, v) = sql(&server, "DESCRIBE rpc_seconds");
    assert_eq!(status, 200, "{v}");
    let columns: Vec<(String, String)> = rows(&v)
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
        .collect();
    let names: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["instance", "job", "ts", "value", "histogram"], "{v}");
    assert_eq!(columns[4].1, "jsonb");
    // a table of floats has none
    let (_, v) = sql(&server, "DESCRIBE m");
    assert!(rows(&v).iter().all(|r| r[0] != "histogram"), "{v}");

    // rows: the histogram as the query API writes it, no value
    let (status, v) = sql(
        &server,
        &format!("SELECT instance, ts, value, histogram FROM rpc_seconds WHERE {} ORDER BY instance, ts DESC LIMIT 1", bounds(t0, t1)),
    );
    assert_eq!(status, 200, "{v}");
    let row = &rows(&v)[0];
    let (_, api) = server
        .post_form("/api/v1/query", &[("query", "rpc_seconds{instance=\"api-0\"}"), ("time", &seconds(t1))]);
    assert_eq!(row[0], "api-0");
    assert_eq!(row[2], Value::Null, "a histogram's row has no value");
    assert_eq!(row[3], result(&api)[0]["histogram"][1], "{v} against {api}");
    assert_eq!(row[3]["count"], (4 * 2 * (SAMPLES - 1)).to_string());
    assert_eq!(v["data"]["columns"][3], json!({"name": "histogram", "type": "jsonb"}));
    let (_, v) = sql(
        &server,
        &format!("SELECT count(*), count(histogram), count(value) FROM rpc_seconds WHERE {}", bounds(t0, t1)),
    );
    assert_eq!(rows(&v)[0], json!([2 * SAMPLES, 2 * SAMPLES, 0]), "{v}");

    // functions of one histogram, at one time, against PromQL's
    let at = t0 + 7 * STEP_MS;
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT instance, histogram_count(histogram), histogram_sum(histogram), histogram_avg(histogram), \
             histogram_quantile(0.9, histogram), histogram_fraction(0, 1.5, histogram), histogram_stddev(histogram) \
             FROM rpc_seconds WHERE ts = {} ORDER BY instance",
            seconds(at)
        ),
    );
    assert_eq!(status, 200, "{v}");
    let got = rows(&v);
    assert_eq!(got.len(), 2, "{v}");
    for (i, row) in got.iter().enumerate() {
        let selector = format!("rpc_seconds{{instance=\"api-{i}\"}}");
        let n = (7 * (i + 2)) as f64;
        assert_eq!(row[1].as_f64(), Some(4.0 * n), "{v}");
        assert_eq!(row[2].as_f64(), Some(3.0 * n), "{v}");
        for (column, promql) in [
            (3, format!("histogram_avg({selector})")),
            (4, format!("histogram_quantile(0.9, {selector})")),
            (5, format!("histogram_fraction(0, 1.5, {selector})")),
            (6, format!("histogram_stddev({selector})")),
        ] {
            assert_eq!(row[column].as_f64(), Some(promql_number(&server, &promql, at)), "{promql}: {v}");
        }
    }

    // sum and avg of a group's histograms, and functions of the sum
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT job, sum(histogram) AS total, avg(histogram), histogram_quantile(0.5, sum(histogram)) \
             FROM rpc_seconds WHERE ts = {} GROUP BY job",
            seconds(at)
        ),
    );
    assert_eq!(status, 200, "{v}");
    let row = &rows(&v)[0];
    for (column, promql) in [(1, "sum by (job) (rpc_seconds)"), (2, "avg by (job) (rpc_seconds)")] {
        let (_, api) = server.post_form("/api/v1/query", &[("query", promql), ("time", &seconds(at))]);
        assert_eq!(row[column], result(&api)[0]["histogram"][1], "{promql}: {v} against {api}");
    }
    assert_eq!(
        row[3].as_f64(),
        Some(promql_number(&server, "histogram_quantile(0.5, sum by (job) (rpc_seconds))", at)),
        "{v}"
    );

    // a PromQL answer of histograms has the column too
    let (status, v) = sql(
        &server,
        &format!(
            "SELECT histogram, histogram_count(histogram) FROM promql('sum by (job) (rpc_seconds)', {})",
            seconds(at)
        ),
    );
    assert_eq!(status, 200, "{v}");
    let (_, api) =
        server.post_form("/api/v1/query", &[("query", "sum by (job) (rpc_seconds)"), ("time", &seconds(at))]);
    assert_eq!(rows(&v)[0][0], result(&api)[0]["histogram"][1], "{v}");
    assert_eq!(rows(&v)[0][1].as_f64(), Some(4.0 * 7.0 * 5.0), "{v}");

    // a function of a float is refused, with what it takes
    let (status, v) = sql(&server, "SELECT histogram_count(value) FROM m");
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("takes a native histogram"), "{v}");

    // over the wire protocol a histogram is jsonb, which drivers decode
    if common::python_has("psycopg") {
        let got = run_python(
            r#"
import json, sys, psycopg
with psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="promflow", dbname="promflow", connect_timeout=10) as conn:
    out = []
    for binary in (False, True):
        cur = conn.cursor(binary=binary)
        cur.execute("SELECT histogram FROM rpc_seconds WHERE instance = 'api-1' ORDER BY ts DESC LIMIT 1")
        h = cur.fetchone()[0]
        out.append({"oid": cur.description[0].type_code, "count": h["count"], "buckets": len(h["buckets"])})
    print(json.dumps(out))
"#,
            &[&port.to_string()],
        );
        let want = json!({"oid": 3802, "count": (4 * 3 * (SAMPLES - 1)).to_string(), "buckets": 4});
        assert_eq!(got, json!([want, want]), "text and binary");
    }
}
