//! SQL side by side with a real PostgreSQL holding the same samples: one table per metric
//! (label columns `text`, `ts timestamptz`, `value float8`), every query of the bank run on
//! both through psql, the answers compared as text. A query promflow refuses counts as
//! refused; one it answers differently counts as wrong, and there must be none.

use crate::common;

use common::postgres::{psql_at, start_postgres};
use common::*;

/// A series of the bank: its metric, labels, and the value of its sample k.
type BankSeries = (&'static str, Vec<(&'static str, &'static str)>, fn(i64) -> f64);

/// The series of the bank.
fn series() -> Vec<BankSeries> {
    vec![
        ("cpu", vec![("job", "api"), ("instance", "a")], |k| 1.0 + 0.5 * k as f64),
        ("cpu", vec![("job", "api"), ("instance", "b")], |k| 12.0 - 0.5 * k as f64),
        ("cpu", vec![("job", "db"), ("instance", "a")], |k| 4.0 + (k % 3) as f64),
        ("cpu", vec![("job", "batch")], |k| 20.0 + 0.25 * k as f64),
        ("mem", vec![("job", "api"), ("instance", "a")], |k| 100.0 + k as f64),
        ("mem", vec![("job", "db"), ("instance", "a")], |k| 200.0 - k as f64),
        ("mem", vec![("job", "cache"), ("instance", "c")], |_| 50.0),
    ]
}

const SAMPLES: i64 = 10;

/// The bank: queries a monitoring user writes, by category; each ends in an `ORDER BY` that
/// fixes the row order, or answers one row.
const BANK: &[&str] = &[
    // aggregates and grouping
    "SELECT count(*) FROM cpu",
    "SELECT job, count(*), min(value), max(value), sum(value), avg(value) FROM cpu GROUP BY job ORDER BY job",
    "SELECT job, instance, count(*) FROM cpu GROUP BY job, instance ORDER BY job, instance",
    "SELECT job, max(value) - min(value) AS spread FROM cpu GROUP BY job HAVING count(*) > 5 ORDER BY spread DESC",
    "SELECT count(instance), count(*) FROM cpu",
    // filters on any column
    "SELECT job, instance, value FROM cpu WHERE value > 10 ORDER BY job, instance, ts",
    "SELECT job, value FROM cpu WHERE value BETWEEN 4 AND 6 ORDER BY job, ts",
    "SELECT job, instance, value FROM cpu WHERE job = 'api' OR instance IS NULL ORDER BY job, instance, ts",
    "SELECT count(*) FROM cpu WHERE NOT (job = 'api') AND value >= 5",
    "SELECT job, value FROM cpu WHERE job LIKE 'ba%' ORDER BY ts",
    "SELECT DISTINCT job FROM cpu WHERE job ~ '^(api|db)$' ORDER BY job",
    "SELECT DISTINCT job FROM cpu WHERE job ~ 'p' ORDER BY job",
    "SELECT job, instance FROM cpu WHERE instance IN ('b', 'c') GROUP BY job, instance ORDER BY job",
    // DISTINCT
    "SELECT DISTINCT job FROM cpu ORDER BY job",
    "SELECT count(DISTINCT job), count(DISTINCT instance) FROM cpu",
    "SELECT DISTINCT job, instance FROM cpu ORDER BY job, instance",
    // CASE, COALESCE, strings
    "SELECT job, CASE WHEN value > 10 THEN 'high' ELSE 'low' END AS level, count(*) FROM cpu GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT COALESCE(instance, 'none') AS i, max(value) FROM cpu GROUP BY 1 ORDER BY 1",
    "SELECT upper(job), length(job) FROM cpu GROUP BY job ORDER BY 1",
    "SELECT job || '/' || COALESCE(instance, '-') AS k FROM cpu GROUP BY 1 ORDER BY 1",
    "SELECT replace(job, 'a', 'A'), lower(upper(job)) FROM cpu GROUP BY job ORDER BY 1",
    // time
    "SELECT date_trunc('hour', ts) AS h, count(*) FROM cpu GROUP BY 1 ORDER BY 1",
    "SELECT ts, value FROM cpu WHERE job = 'db' ORDER BY ts DESC LIMIT 3",
    "SELECT min(ts), max(ts) FROM mem",
    // window functions
    "SELECT job, instance, value, row_number() OVER (PARTITION BY job, instance ORDER BY ts) AS n FROM cpu WHERE job = 'api' ORDER BY job, instance, n",
    "SELECT ts, value - lag(value) OVER (ORDER BY ts) AS d FROM cpu WHERE job = 'db' ORDER BY ts",
    "SELECT job, value, rank() OVER (ORDER BY value DESC) FROM mem ORDER BY 3, job LIMIT 5",
    "SELECT job, sum(value) OVER (PARTITION BY job) FROM mem WHERE ts = (SELECT max(ts) FROM mem) ORDER BY job",
    // set operations
    "SELECT job FROM cpu UNION SELECT job FROM mem ORDER BY 1",
    "SELECT job FROM cpu INTERSECT SELECT job FROM mem ORDER BY 1",
    "SELECT job FROM mem EXCEPT SELECT job FROM cpu ORDER BY 1",
    "SELECT count(*) FROM (SELECT job FROM cpu UNION ALL SELECT job FROM mem) AS both_tables",
    // subqueries
    "SELECT DISTINCT job FROM cpu WHERE job IN (SELECT job FROM mem) ORDER BY 1",
    "SELECT DISTINCT c.job FROM cpu c WHERE EXISTS (SELECT 1 FROM mem m WHERE m.job = c.job) ORDER BY 1",
    "SELECT job, value FROM mem WHERE value > (SELECT avg(value) FROM mem) ORDER BY job, value",
    // joins and CTEs
    "SELECT c.job, c.value + m.value FROM cpu c JOIN mem m ON c.job = m.job AND c.instance = m.instance AND c.ts = m.ts ORDER BY 1, 2",
    "SELECT c.job, m.job FROM (SELECT DISTINCT job FROM cpu) c LEFT JOIN (SELECT DISTINCT job FROM mem) m ON c.job = m.job ORDER BY 1",
    "WITH t AS (SELECT job, avg(value) AS a FROM cpu GROUP BY job) SELECT job, a FROM t WHERE a > 5 ORDER BY job",
    // no table, generated rows, filtered aggregates
    "SELECT 1 + 2, 'x' || 'y', 7.0::float8 / 2",
    "SELECT count(*) FILTER (WHERE value > 10), count(*) FROM cpu",
    "SELECT x FROM generate_series(1, 5) AS g(x) ORDER BY x DESC",
    "SELECT round(value), abs(value - 10) FROM cpu WHERE job = 'api' AND instance = 'b' ORDER BY ts",
];

#[test]
fn a_bank_of_queries_answers_as_postgresql_does() {
    let Some(psql) = common::peer("psql") else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = start_postgres(dir.path()) else { return };
    let sql_port = free_port();
    let server = start_promflow(
        dir.path(),
        "global:\n  scrape_interval: 1h\n",
        &["--web.enable-remote-write-receiver", &format!("--sql.listen-address=127.0.0.1:{sql_port}")],
    );
    // the same samples in both: whole minutes, a few minutes ago
    let t0 = (now_ms() - 20 * 60_000) / 60_000 * 60_000;
    let mut written = Vec::new();
    let mut tables: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (metric, labels, value) in series() {
        let samples: Vec<(i64, f64)> = (0..SAMPLES).map(|k| (t0 + k * 60_000, value(k))).collect();
        let mut all = vec![("__name__", metric)];
        all.extend(labels.iter().copied());
        written.push(common::series(&all, &samples));
        let instance = labels
            .iter()
            .find(|(n, _)| *n == "instance")
            .map_or("NULL".to_string(), |(_, v)| format!("'{v}'"));
        let job = labels.iter().find(|(n, _)| *n == "job").map(|(_, v)| *v).unwrap();
        for (t, v) in samples {
            tables
                .entry(metric)
                .or_default()
                .push(format!("({instance}, '{job}', to_timestamp({t} / 1000.0), {v})"));
        }
    }
    let (status, body) = remote_write(&server, written);
    assert!(status / 100 == 2, "{status} {body}");
    for (metric, rows) in &tables {
        pg.psql(&format!(
            "CREATE TABLE {metric} (instance text, job text, ts timestamptz, value double precision); INSERT INTO {metric} VALUES {};",
            rows.join(", ")
        ))
        .unwrap();
    }

    let (mut agree, mut refused, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
    for q in BANK {
        let want = pg.psql(q).unwrap_or_else(|e| panic!("PostgreSQL refuses {q}: {e}"));
        match psql_at(&psql, sql_port, q) {
            Ok(got) if got == want => agree.push(*q),
            Ok(got) => wrong.push(format!("{q}\n  PostgreSQL: {want:?}\n  promflow:   {got:?}")),
            Err(e) => refused.push(format!("{q}: {}", e.trim())),
        }
    }
    eprintln!(
        "{} queries: {} agree, {} refused, {} wrong\nrefused:\n  {}",
        BANK.len(),
        agree.len(),
        refused.len(),
        wrong.len(),
        refused.join("\n  ")
    );
    assert!(wrong.is_empty(), "answers that differ from PostgreSQL's:\n{}", wrong.join("\n"));
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}
