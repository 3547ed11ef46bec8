//! SQL side by side with a real PostgreSQL holding the same samples: one table per metric
//! (label columns `text`, `ts timestamptz`, `value float8`), every query of the bank run on
//! both through psql, the answers compared as text. A query promflow refuses counts as
//! refused; one it answers differently counts as wrong, and there must be none of either
//! beyond the queries the bank marks as known to differ (`-- differs: why`).

use crate::common;

use common::postgres::{psql_at, start_postgres};
use common::*;

/// A series of the bank: its metric, labels, and the value of its sample k.
type BankSeries = (&'static str, Vec<(&'static str, &'static str)>, Sample);

/// The value of a series' sample k.
type Sample = fn(i64) -> f64;

/// The series of the bank: gauges, a counter with a reset, and a classic histogram's buckets.
fn series() -> Vec<BankSeries> {
    let mut all: Vec<BankSeries> = vec![
        ("cpu", vec![("job", "api"), ("instance", "a")], |k| 1.0 + 0.5 * k as f64),
        ("cpu", vec![("job", "api"), ("instance", "b")], |k| 12.0 - 0.5 * k as f64),
        ("cpu", vec![("job", "db"), ("instance", "a")], |k| 4.0 + (k % 3) as f64),
        ("cpu", vec![("job", "batch")], |k| 20.0 + 0.25 * k as f64),
        ("mem", vec![("job", "api"), ("instance", "a")], |k| 100.0 + k as f64),
        ("mem", vec![("job", "db"), ("instance", "a")], |k| 200.0 - k as f64),
        ("mem", vec![("job", "cache"), ("instance", "c")], |_| 50.0),
        ("http_requests_total", vec![("handler", "/api"), ("code", "200"), ("method", "GET")], |k| {
            (100 * k) as f64
        }),
        ("http_requests_total", vec![("handler", "/api"), ("code", "500"), ("method", "GET")], |k| {
            (3 * k) as f64
        }),
        ("http_requests_total", vec![("handler", "/login"), ("code", "200"), ("method", "POST")], |k| {
            if k < 6 {
                (10 * k) as f64
            } else {
                (k - 6) as f64
            }
        }),
    ];
    let buckets: [(&'static str, Sample); 4] = [
        ("0.1", |k| (5 * k) as f64),
        ("0.5", |k| (8 * k) as f64),
        ("1", |k| (9 * k) as f64),
        ("+Inf", |k| (10 * k) as f64),
    ];
    for (le, f) in buckets {
        all.push(("http_request_duration_seconds_bucket", vec![("handler", "/api"), ("le", le)], f));
    }
    all
}

const SAMPLES: i64 = 10;

/// The bank: one query a line (`--` starts a comment); each ends in an `ORDER BY` that fixes
/// the row order, or answers one row. Read when the test runs.
const BANK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/sql_bank.sql");

/// What psql prints for `sql`: its rows, or its error's first line (`SQLSTATE: message`).
fn answer(run: impl Fn(&str) -> Result<String, String>, sql: &str) -> Result<String, String> {
    run(sql).map_err(|e| e.lines().next().unwrap_or("").trim_start_matches("ERROR:").trim().to_string())
}

/// Two answers agree when their rows are the same, or both are errors of one SQLSTATE.
fn agree(want: &Result<String, String>, got: &Result<String, String>) -> bool {
    match (want, got) {
        (Ok(want), Ok(got)) => want == got,
        (Err(want), Err(got)) => want.get(..5) == got.get(..5),
        _ => false,
    }
}

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
    // per metric: its label names (sorted, as promflow's columns are) and its rows
    let mut tables: std::collections::BTreeMap<&str, (Vec<&str>, Vec<String>)> = Default::default();
    for (metric, labels, _) in series() {
        let columns = &mut tables.entry(metric).or_default().0;
        columns.extend(labels.iter().map(|(n, _)| *n));
        columns.sort();
        columns.dedup();
    }
    for (metric, labels, value) in series() {
        let samples: Vec<(i64, f64)> = (0..SAMPLES).map(|k| (t0 + k * 60_000, value(k))).collect();
        let mut all = vec![("__name__", metric)];
        all.extend(labels.iter().copied());
        written.push(common::series(&all, &samples));
        let (columns, rows) = tables.get_mut(metric).unwrap();
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                labels.iter().find(|(n, _)| n == c).map_or("NULL".to_string(), |(_, v)| format!("'{v}'"))
            })
            .collect();
        for (t, v) in samples {
            rows.push(format!("({}, to_timestamp({t} / 1000.0), {v})", cells.join(", ")));
        }
    }
    let (status, body) = remote_write(&server, written);
    assert!(status / 100 == 2, "{status} {body}");
    for (metric, (columns, rows)) in &tables {
        let columns: Vec<String> = columns.iter().map(|c| format!("{c} text")).collect();
        pg.psql(&format!(
            "CREATE TABLE {metric} ({}, ts timestamptz, value double precision); INSERT INTO {metric} VALUES {};",
            columns.join(", "),
            rows.join(", ")
        ))
        .unwrap();
    }

    // each query, and why it is known to differ when a `-- differs:` line marks it
    let text = std::fs::read_to_string(BANK).unwrap();
    let (mut bank, mut mark): (Vec<(&str, Option<&str>)>, Option<&str>) = (Vec::new(), None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(why) = line.strip_prefix("-- differs:") {
            mark = Some(why.trim());
        } else if !line.starts_with("--") {
            bank.push((line, mark.take()));
        }
    }
    let (mut agreed, mut refused, mut wrong, mut other_state, mut known, mut fixed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &(q, differs) in &bank {
        let want = answer(|q| pg.psql(q), q);
        let got = answer(|q| psql_at(&psql, sql_port, q), q);
        match (want, got) {
            (want, got) if agree(&want, &got) => match differs {
                None => agreed.push(q),
                Some(_) => fixed.push(q),
            },
            (want, got) if differs.is_some() => {
                known.push(format!("{q}\n  PostgreSQL: {want:?}\n  promflow:   {got:?}"))
            }
            (Ok(_), Err(e)) if e.starts_with("0A000") || e.starts_with("42601") || e.starts_with("54001") => {
                refused.push(format!("{q}: {e}"))
            }
            // both reject it, for reasons PostgreSQL classes differently (a panic is no reason)
            (Err(want), Err(got)) if !got.contains("panicked") => {
                other_state.push(format!("{q}\n  PostgreSQL: {want}\n  promflow:   {got}"))
            }
            (want, got) => wrong.push(format!("{q}\n  PostgreSQL: {want:?}\n  promflow:   {got:?}")),
        }
    }
    eprintln!(
        "{} queries: {} agree, {} known to differ, {} refused, {} rejected by both with another SQLSTATE, {} wrong\nknown to differ:\n{}\nrejected with another SQLSTATE:\n{}\nrefused:\n{}",
        bank.len(),
        agreed.len(),
        known.len(),
        refused.len(),
        other_state.len(),
        wrong.len(),
        known.join("\n"),
        other_state.join("\n"),
        refused.join("\n")
    );
    assert!(wrong.is_empty(), "answers that differ from PostgreSQL's:\n{}", wrong.join("\n"));
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    assert!(
        fixed.is_empty(),
        "marked as differing, and agreeing now (remove the marks):\n{}",
        fixed.join("\n")
    );
}
