//! SQL side by side with PostgreSQL 15 and DuckDB over the same rows: a `GROUP BY` over a
//! day of 10,000 series, a time-bucketed aggregate, a join of two metrics and a window
//! function, each system's answer compared with the others'.
//!
//! Run with `cargo bench --bench sql_peers` (needs Debian's `postgresql`, and psycopg and
//! duckdb from PyPI: `python3 -m pip install psycopg duckdb`). Environment (defaults in
//! brackets): `BENCH_SERIES` [10000] series of `cpu`, a tenth as many of `mem`,
//! `BENCH_HISTORY_MIN` [1440] minutes of history at one sample a minute, `BENCH_RUNS` [5]
//! runs of each query on each system.
//!
//! Every system holds the same rows, from one closed form: series `s` is `job-{s % 10}` on
//! `host-{s / 10}`, and its value at minute `i` is `((s·7919 + i·104729) mod 100000) / 100`.
//! promflow's storage is written in process and the real server opened on it; PostgreSQL
//! (its own cluster, plain tables, no index) and DuckDB (in memory) build their tables with
//! the same formula in SQL. One core each: promflow and PostgreSQL (its postmaster, so every
//! backend and parallel worker) are pinned to CPU 1, and the Python client to CPU 0, where
//! DuckDB runs in process with `threads = 1`. promflow and PostgreSQL are asked over the
//! PostgreSQL wire protocol by psycopg; each run reads the whole answer. The systems take
//! turns going first. Printed as Markdown for docs/benchmarks.md.

mod workload;

use std::time::Instant;

use promflow_storage::{Db, DbOptions, Labels};
use workload::common::{free_port, postgres::start_postgres};
use workload::{env, median, start_pinned, SERVER_CPU};

/// The first minute of the history (seconds since the epoch, on the hour).
const T0: i64 = 1_700_000_000 / 3600 * 3600 - 86_400;
const MAX_SAMPLES: usize = 200_000_000;

/// The value of series `s` at minute `i`, the same formula as the SQL the peers build with.
fn value(s: i64, i: i64) -> f64 {
    ((s * 7919 + i * 104_729) % 100_000) as f64 / 100.0
}

/// What PostgreSQL (or DuckDB) builds its table `name` of `series` series with: the labels of
/// series `s`, and the values of series `value_of` (an expression of `s`).
fn table_sql(name: &str, series: i64, minutes: i64, value_of: &str, duckdb: bool) -> String {
    let (rows, div) = if duckdb {
        (format!("range(0, {series}) AS t(s), range(0, {minutes}) AS u(i)"), "//")
    } else {
        (format!("generate_series(0, {series} - 1) AS s, generate_series(0, {minutes} - 1) AS i"), "/")
    };
    format!(
        "CREATE TABLE {name} AS SELECT 'job-' || (s % 10) AS job, 'host-' || lpad((s {div} 10)::text, 4, '0') AS instance, \
         to_timestamp({T0} + i * 60) AS ts, (({value_of}::bigint * 7919 + i::bigint * 104729) % 100000)::float8 / 100 AS value \
         FROM {rows}"
    )
}

/// The series whose values `mem`'s series `s` has: not `cpu`'s own.
const MEM_VALUES: &str = "(s * 13 + 7)";

/// The Python client: runs each query `runs` times on every system, the systems taking
/// turns going first; prints each system's times (ms) and answers as JSON.
const CLIENT: &str = r#"
import json, sys, time, os, psycopg, duckdb
os.sched_setaffinity(0, {int(sys.argv[1])})
promflow_port, pg_port, runs = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
queries = json.loads(sys.argv[5])
duck = duckdb.connect()
duck.execute("SET threads = 1")
duck.execute("SET TimeZone = 'UTC'")
for sql in json.loads(sys.argv[6]):
    duck.execute(sql)
dsn = "host=127.0.0.1 port={} user=promflow dbname={} connect_timeout=30"
promflow = psycopg.connect(dsn.format(promflow_port, "promflow"), autocommit=True)
pg = psycopg.connect(dsn.format(pg_port, "postgres"), autocommit=True)
def run(system, sql):
    t = time.perf_counter()
    if system == "duckdb":
        rows = duck.execute(sql).fetchall()
    else:
        rows = (promflow if system == "promflow" else pg).execute(sql).fetchall()
    return (time.perf_counter() - t) * 1000, rows
def same(rows):
    # numbers to 9 significant digits, times as epoch seconds
    def cell(v):
        if isinstance(v, float):
            return float(f"{v:.9g}")
        if hasattr(v, "timestamp"):
            return v.timestamp()
        return v
    return [[cell(v) for v in r] for r in rows]
out = []
systems = ["promflow", "postgresql", "duckdb"]
for q in queries:
    times = {s: [] for s in systems}
    answers = {}
    for r in range(runs):
        order = systems[r % 3:] + systems[:r % 3]
        for s in order:
            ms, rows = run(s, q[s])
            times[s].append(ms)
            answers[s] = same(rows)
    out.append({"times": times, "rows": len(answers["postgresql"]),
                "agree": answers["promflow"] == answers["postgresql"] == answers["duckdb"],
                "answers": {s: answers[s][:3] for s in systems}})
print(json.dumps(out))
"#;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let series = env("BENCH_SERIES", 10_000) as i64;
    let minutes = env("BENCH_HISTORY_MIN", 1440) as i64;
    let runs = env("BENCH_RUNS", 5).max(1);
    let mem_series = (series / 10).max(1);

    // promflow: written in process, then the real server on the same storage
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t = Instant::now();
    {
        let db = Db::open(&data, DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let labels = |metric: &str, s: i64| {
            let (job, instance) = (format!("job-{}", s % 10), format!("host-{:04}", s / 10));
            Labels::from_pairs([("__name__", metric), ("instance", instance.as_str()), ("job", job.as_str())])
        };
        let cpu: Vec<Labels> = (0..series).map(|s| labels("cpu", s)).collect();
        let mem: Vec<Labels> = (0..mem_series).map(|s| labels("mem", s)).collect();
        for i in 0..minutes {
            let at = (T0 + i * 60) * 1000;
            let mut app = db.appender();
            for (s, l) in cpu.iter().enumerate() {
                app.append(l, at, value(s as i64, i)).unwrap();
            }
            for (s, l) in mem.iter().enumerate() {
                // MEM_VALUES
                app.append(l, at, value(s as i64 * 13 + 7, i)).unwrap();
            }
            app.commit().unwrap();
        }
    }
    let samples = (series + mem_series) * minutes;
    eprintln!("promflow: {samples} samples written in {:.1} s", t.elapsed().as_secs_f64());
    let addr = format!("127.0.0.1:{}", free_port());
    let sql_port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let args = [
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", data.display()),
        format!("--web.listen-address={addr}"),
        format!("--sql.listen-address=127.0.0.1:{sql_port}"),
        format!("--query.max-samples={MAX_SAMPLES}"),
        "--query.timeout=10m".to_string(),
    ];
    let t = Instant::now();
    let _server =
        start_pinned(env!("CARGO_BIN_EXE_promflow"), &args, dir.path(), &addr, "/-/ready", "promflow");
    eprintln!("promflow: ready in {:.1} s", t.elapsed().as_secs_f64());

    // PostgreSQL: its own cluster, pinned to the server's CPU, the same rows built in SQL
    let pg = start_postgres(dir.path()).expect("PostgreSQL is installed");
    let pinned = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", SERVER_CPU, &pg.pid().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset");
    assert!(pinned.success(), "pinning PostgreSQL");
    let t = Instant::now();
    for table in [
        table_sql("cpu", series, minutes, "s", false),
        table_sql("mem", mem_series, minutes, MEM_VALUES, false),
    ] {
        pg.psql(&table).expect("PostgreSQL builds its table");
    }
    pg.psql("VACUUM ANALYZE").expect("PostgreSQL analyzes its tables");
    eprintln!("PostgreSQL: tables built in {:.1} s", t.elapsed().as_secs_f64());
    let duck_tables = [
        table_sql("cpu", series, minutes, "s", true),
        table_sql("mem", mem_series, minutes, MEM_VALUES, true),
    ];

    let end = T0 + (minutes - 1) * 60;
    let at = |seconds_before: i64| {
        chrono::DateTime::from_timestamp(end - seconds_before, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S+00")
            .to_string()
    };
    let start = at((minutes - 1) * 60);
    let (hour, six_hours) = (at(3600 - 60), at(6 * 3600 - 60));
    let same = |sql: String| [("promflow", sql.clone()), ("postgresql", sql.clone()), ("duckdb", sql)];
    let bucket = |f: &str| {
        format!(
            "SELECT {f}(INTERVAL '1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, job, avg(value) \
             FROM cpu WHERE ts >= '{start}' GROUP BY 1, 2 ORDER BY 1, 2"
        )
    };
    let queries: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "`GROUP BY` over the whole day",
            same("SELECT job, count(*), avg(value), max(value) FROM cpu GROUP BY job ORDER BY job".into()).to_vec(),
        ),
        (
            "hourly buckets by job",
            vec![("promflow", bucket("date_bin")), ("postgresql", bucket("date_bin")), ("duckdb", bucket("time_bucket"))],
        ),
        (
            "join of two metrics, last hour",
            same(format!(
                "SELECT c.job, avg(c.value - m.value) FROM cpu c JOIN mem m ON c.instance = m.instance \
                 AND c.job = m.job AND c.ts = m.ts WHERE c.ts >= '{hour}' AND m.ts >= '{hour}' GROUP BY c.job ORDER BY 1"
            ))
            .to_vec(),
        ),
        (
            "window function (`lag`), one job, 6 hours",
            same(format!(
                "SELECT instance, max(d) AS biggest FROM (SELECT instance, value - lag(value) OVER \
                 (PARTITION BY instance ORDER BY ts) AS d FROM cpu WHERE job = 'job-3' AND ts >= '{six_hours}') t \
                 GROUP BY instance ORDER BY biggest DESC, instance LIMIT 10"
            ))
            .to_vec(),
        ),
    ];
    let texts: Vec<serde_json::Value> = queries
        .iter()
        .map(|(_, q)| {
            serde_json::Value::Object(q.iter().map(|(s, t)| (s.to_string(), t.clone().into())).collect())
        })
        .collect();
    let out = std::process::Command::new("python3")
        .args(["-c", CLIENT, &workload::CLIENT_CPU.to_string(), &sql_port.to_string(), &pg.port.to_string()])
        .arg(runs.to_string())
        .arg(serde_json::to_string(&texts).unwrap())
        .arg(serde_json::to_string(&duck_tables).unwrap())
        .output()
        .expect("run the Python client");
    assert!(out.status.success(), "client: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();

    println!(
        "{series} series of `cpu` and {mem_series} of `mem`, {minutes} min at 60 s ({samples} rows), {runs} runs, medians\n"
    );
    println!("| query | rows | promflow, ms | PostgreSQL, ms | DuckDB, ms | **promflow / PostgreSQL** | **promflow / DuckDB** | same answer |");
    println!("|---|---|---|---|---|---|---|---|");
    for ((name, q), r) in queries.iter().zip(&results) {
        let ms =
            |s: &str| median(r["times"][s].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect());
        let (p, g, d) = (ms("promflow"), ms("postgresql"), ms("duckdb"));
        println!(
            "| {name} | {} | {p:.1} | {g:.1} | {d:.1} | **{:.2}** | **{:.2}** | {} |",
            r["rows"],
            p / g,
            p / d,
            if r["agree"] == true { "yes" } else { "no" }
        );
        if r["agree"] != true {
            eprintln!("answers differ for {}: {}", q[0].1, r["answers"]);
        }
    }
    println!("\nRaw times (ms):\n");
    for ((name, _), r) in queries.iter().zip(&results) {
        println!("- {name}: {}", r["times"]);
    }
}
