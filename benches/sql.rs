//! SQL against its PromQL twin over a long history: the same questions asked both ways of
//! the same storage, in process (no HTTP, no JSON), alternating, medians reported; then both
//! ways over HTTP, the real server opened on the same storage, answers read whole.
//!
//! Run with `cargo bench --bench sql`. Environment (defaults in brackets): `BENCH_SERIES`
//! [5000] series of the rules benchmark's hosts (node_cpu_seconds_total is 32 of every ~185),
//! `BENCH_HISTORY_MIN` [360] minutes of history at one sample per series every 15 s,
//! `BENCH_RUNS` [7] runs of each query each way.
//!
//! A SQL run is compile + execute + rows (`promflow_sql::compile`, `Statement::execute`); a
//! PromQL run is compile + evaluate (`promflow_promql::compile`, `promflow_batch::evaluate`)
//! of the twin at the same time(s); each includes freeing its answer, and each goes first in
//! every other run. Over HTTP, a SQL run is `POST /api/v1/sql` and a PromQL
//! run `GET /api/v1/query` (or `/api/v1/query_range` for the buckets), each until its whole
//! JSON answer is read: what a client waits for. The server runs on CPU 1, the client on
//! CPU 0. Printed as Markdown for docs/benchmarks.md.

mod workload;

use std::time::{Duration, Instant};

use promflow_batch::{evaluate, QueryOptions};
use promflow_storage::{Db, DbOptions, Labels};
use workload::common::{client, free_port};
use workload::{all_series, env, median, pin_self, start_pinned, Walk, CLIENT_CPU, INTERVAL_MS};

const LOOKBACK_MS: i64 = 300_000;
const MAX_SAMPLES: usize = 200_000_000;

/// A question asked both ways: its name, the SQL, the PromQL twin, and whether the twin is
/// a range evaluation at the SQL's bucket width (else one instant evaluation at the end).
struct Pair {
    name: &'static str,
    sql: String,
    promql: String,
    step_ms: Option<i64>,
}

/// Runs `a` and `b` `runs` times each, each first in every other run (neither pays for the
/// other's leftovers every time); their times in milliseconds.
fn alternate(runs: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> (Vec<f64>, Vec<f64>) {
    let (mut a_ms, mut b_ms) = (Vec::new(), Vec::new());
    for run in 0..runs {
        if run % 2 == 0 {
            a_ms.push(a());
            b_ms.push(b());
        } else {
            b_ms.push(b());
            a_ms.push(a());
        }
    }
    (a_ms, b_ms)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_SERIES", 5000);
    let history_min = env("BENCH_HISTORY_MIN", 360) as i64;
    let runs = env("BENCH_RUNS", 7).max(1);

    let specs = all_series(n);
    let labels: Vec<Labels> = specs
        .iter()
        .map(|s| Labels::from_pairs(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str()))))
        .collect();
    let rounds = history_min * 60_000 / INTERVAL_MS;
    let end = 1_700_000_000_000 / 300_000 * 300_000;
    let start = end - rounds * INTERVAL_MS;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
    let mut walk = Walk::new(&specs);
    let t_write = Instant::now();
    for round in 1..=rounds {
        walk.step(&specs);
        let mut app = db.appender();
        for (l, v) in labels.iter().zip(&walk.values) {
            app.append(l, start + round * INTERVAL_MS, *v).unwrap();
        }
        app.commit().unwrap();
    }
    eprintln!("{} samples written in {:.1} s", rounds * n as i64, t_write.elapsed().as_secs_f64());

    // the window (start, end]: SQL's `ts > start AND ts <= end`, PromQL's `[range]` at end
    let range = format!("{history_min}m");
    let bounds = format!("ts > {} AND ts <= {}", start as f64 / 1000.0, end as f64 / 1000.0);
    let m = "node_cpu_seconds_total";
    let pairs = [
        Pair {
            name: "avg by mode",
            sql: format!("SELECT mode, avg(value) FROM {m} WHERE {bounds} GROUP BY mode"),
            promql: format!("sum by (mode) (sum_over_time({m}[{range}])) / sum by (mode) (count_over_time({m}[{range}]))"),
            step_ms: None,
        },
        Pair {
            name: "max by mode",
            sql: format!("SELECT mode, max(value) FROM {m} WHERE {bounds} GROUP BY mode"),
            promql: format!("max by (mode) (max_over_time({m}[{range}]))"),
            step_ms: None,
        },
        Pair {
            name: "rate by mode",
            sql: format!("SELECT mode, rate(value) FROM {m} WHERE {bounds} GROUP BY mode"),
            promql: format!("sum by (mode) (rate({m}[{range}]))"),
            step_ms: None,
        },
        Pair {
            name: "sum by mode, 5 min buckets",
            sql: format!(
                "SELECT date_bin(INTERVAL '5 minutes', ts, TIMESTAMP '1970-01-01') AS b, mode, sum(value) FROM {m} \
                 WHERE {bounds} GROUP BY b, mode"
            ),
            promql: format!("sum by (mode) (sum_over_time({m}[5m]))"),
            step_ms: Some(300_000),
        },
        Pair {
            name: "rows of one mode",
            sql: format!("SELECT instance, cpu, ts, value FROM {m} WHERE mode = 'user' AND {bounds}"),
            promql: format!("{m}{{mode=\"user\"}}[{range}]"),
            step_ms: None,
        },
    ];

    let settings = promflow_sql::Settings {
        lookback_ms: LOOKBACK_MS,
        max_samples: MAX_SAMPLES,
        timeout: Duration::from_secs(600),
        canceled: None,
    };
    println!(
        "{n} series, {history_min} min of history at 15 s ({} samples), {runs} runs each way, medians\n",
        rounds * n as i64
    );
    println!("| query | SQL, ms | PromQL twin, ms | SQL / PromQL | rows |");
    println!("|---|---|---|---|---|");
    let querier: std::sync::Arc<dyn promflow_storage::Querier> = db.clone();
    for pair in &pairs {
        let mut rows = 0;
        let sql_run = || {
            let t = Instant::now();
            let statement =
                promflow_sql::compile(&pair.sql, end).unwrap_or_else(|e| panic!("{}: {e}", pair.sql));
            let answer =
                statement.execute(&querier, &settings).unwrap_or_else(|e| panic!("{}: {e}", pair.sql));
            rows = answer.len();
            drop(answer);
            t.elapsed().as_secs_f64() * 1000.0
        };
        let promql_run = || {
            let t = Instant::now();
            let plan =
                promflow_promql::compile(&pair.promql, &Default::default()).expect("the twin compiles");
            // the buckets' ends: the first whole bucket's end after the window's start, to the end
            let (from, step) = match pair.step_ms {
                Some(step) => ((start / step + 1) * step + step - 1, step),
                None => (end, 1),
            };
            let opts = QueryOptions {
                start: from,
                end,
                step,
                lookback_ms: LOOKBACK_MS,
                max_samples: MAX_SAMPLES,
                deadline: None,
                delayed_name_removal: false,
                use_start_timestamps: false,
                range_query: pair.step_ms.is_some(),
                canceled: None,
            };
            let result = evaluate(&plan, db.as_ref(), &opts).expect("the twin evaluates");
            drop(result);
            t.elapsed().as_secs_f64() * 1000.0
        };
        let (sql_ms, promql_ms) = alternate(runs, sql_run, promql_run);
        let (s, p) = (median(sql_ms), median(promql_ms));
        println!("| {} | {s:.1} | {p:.1} | {:.2} | {rows} |", pair.name, s / p);
    }

    // over HTTP: the server on the same storage
    // the server takes the storage's lock: every handle on it is let go first
    drop(querier);
    drop(db);
    pin_self(CLIENT_CPU);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let args = [
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.path().display()),
        format!("--web.listen-address={addr}"),
        format!("--query.max-samples={MAX_SAMPLES}"),
    ];
    let server =
        start_pinned(env!("CARGO_BIN_EXE_promflow"), &args, dir.path(), &addr, "/-/ready", "promflow");
    let http = client();
    let seconds = |ms: i64| format!("{}", ms as f64 / 1000.0);
    println!("\nOver HTTP, answers read whole:\n");
    println!("| query | SQL, ms | PromQL twin, ms | SQL / PromQL | answer bytes, SQL / PromQL |");
    println!("|---|---|---|---|---|");
    for pair in &pairs {
        let (mut sql_bytes, mut twin_bytes) = (0, 0);
        let sql_run = || {
            let t = Instant::now();
            let r = http.post(format!("{}/api/v1/sql", server.base)).form(&[("query", &pair.sql)]).send();
            let body = r.and_then(|r| r.error_for_status()).and_then(|r| r.bytes()).expect("SQL answered");
            sql_bytes = body.len();
            t.elapsed().as_secs_f64() * 1000.0
        };
        let promql_run = || {
            let t = Instant::now();
            let r = match pair.step_ms {
                Some(step) => http.get(format!("{}/api/v1/query_range", server.base)).query(&[
                    ("query", pair.promql.as_str()),
                    ("start", &seconds((start / step + 1) * step + step - 1)),
                    ("end", &seconds(end)),
                    ("step", &seconds(step)),
                ]),
                None => http
                    .get(format!("{}/api/v1/query", server.base))
                    .query(&[("query", pair.promql.as_str()), ("time", &seconds(end))]),
            };
            let body =
                r.send().and_then(|r| r.error_for_status()).and_then(|r| r.bytes()).expect("twin answered");
            twin_bytes = body.len();
            t.elapsed().as_secs_f64() * 1000.0
        };
        let (sql_ms, promql_ms) = alternate(runs, sql_run, promql_run);
        let (s, p) = (median(sql_ms), median(promql_ms));
        println!("| {} | {s:.1} | {p:.1} | {:.2} | {sql_bytes} / {twin_bytes} |", pair.name, s / p);
    }
}
