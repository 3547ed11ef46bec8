//! The graph page with 50 series over a day: promflow's UI and the UI of Debian's Prometheus
//! 2.42 (the classic one Debian ships, at `/classic/graph`) side by side, in the same headless
//! Chromium, on the same samples.
//!
//! Run with `cargo bench --bench ui`. `BENCH_RUNS` [9] runs of each measure on each UI
//! (alternating which goes first), medians reported; `BENCH_ONLY=promflow` runs one UI.
//!
//! Both servers get a day of history of 50 hosts' `node_load1` and
//! `node_network_receive_bytes_total{device="eth0"}` (the benchmark workload's hosts, one
//! sample every 15 s, through remote write), and run on CPU 1; Chromium (1280×900, a
//! laptop's screen) runs on CPU 0. Measured, for `node_load1` and for the `rate` of the
//! counter (50 series each) over `1d` at both UIs' default resolution (the range / 250: a
//! 345 s step):
//!
//! - **open**: from navigating to the page's URL (`?g0.expr=…&g0.tab=0&g0.range_input=1d`)
//!   to the frame after the chart and its 50 legend entries are in the page: loading the
//!   page and its scripts, the range query, drawing (`performance.now()` in a script added to
//!   the page before its own run);
//! - **execute**: from clicking Execute on the open page to the frame after the new chart;
//! - the bytes the page loaded, and the JavaScript heap in use with the chart drawn;
//! - for promflow's live panel (Prometheus has none): from a remote write of one sample per
//!   series being answered to the frame after the redrawn chart.
//!
//! Printed as Markdown for docs/benchmarks.md.

#[path = "../tests/it/common/browser.rs"]
mod browser;
mod workload;

use std::time::{Duration, Instant};

use browser::Browser;
use promflow_remote::{Sample, TimeSeries, WriteRequest};
use serde_json::{json, Value};
use workload::common::{self, free_port, median, now_ms};
use workload::{
    cpu_seconds, env, host_series, pin_self, post_write, send_history, start_pinned, systems, Rounds,
    Running, SeriesSpec, CLIENT_CPU, INTERVAL_MS,
};

const HOSTS: usize = 50;
const DAY_ROUNDS: usize = (86_400_000 / INTERVAL_MS) as usize;

/// A UI under test: where its graph page is and how its page shows a drawn chart.
struct Ui {
    name: &'static str,
    server: Running,
    /// The graph page's path.
    page: &'static str,
    /// The element that holds one drawn chart (replaced when the chart is drawn again).
    chart: &'static str,
    /// One legend entry per series.
    legend: &'static str,
    /// The button that executes the panel's expression.
    execute: &'static str,
}

/// The 50 hosts' series the pages show.
fn specs() -> Vec<SeriesSpec> {
    let mut all = Vec::new();
    for host in 0..HOSTS {
        host_series(host, &mut all);
    }
    let wanted = |s: &SeriesSpec| {
        let get = |name: &str| s.labels.iter().find(|l| l.name == name).map(|l| l.value.as_str());
        match get("__name__") {
            Some("node_load1") => true,
            Some("node_network_receive_bytes_total") => get("device") == Some("eth0"),
            _ => false,
        }
    };
    all.into_iter().filter(wanted).collect()
}

/// Starts `system` on a fresh directory and sends it the day's history.
fn start(
    system: &'static str,
    bin: &str,
    dir: &std::path::Path,
    specs: &[SeriesSpec],
    start_ms: i64,
) -> Running {
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let args = [
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={addr}"),
        "--web.enable-remote-write-receiver".to_string(),
    ];
    let server = start_pinned(bin, &args, dir, &addr, "/-/ready", system);
    let t = Instant::now();
    send_history(&server.base, Rounds::new(specs, start_ms), DAY_ROUNDS);
    eprintln!("{system}: a day of {} series sent in {:.1} s", specs.len(), t.elapsed().as_secs_f64());
    server
}

/// Waits until the servers have used under 50 ms of CPU in 5 s, and at least 70 s since they
/// started (at most three minutes): both compact what the backfill wrote (Prometheus a minute
/// after it starts), and the pages should not be measured against that.
fn wait_until_idle(uis: &[Ui], started: Instant) {
    let deadline = started + Duration::from_secs(180);
    std::thread::sleep((started + Duration::from_secs(70)).saturating_duration_since(Instant::now()));
    loop {
        let before: f64 = uis.iter().map(|u| cpu_seconds(u.server.child.id())).sum();
        std::thread::sleep(Duration::from_secs(5));
        let used: f64 = uis.iter().map(|u| cpu_seconds(u.server.child.id())).sum::<f64>() - before;
        if used < 0.05 || Instant::now() > deadline {
            eprintln!("servers idle ({used:.2} CPU s in the last 5 s)");
            return;
        }
    }
}

/// A script that waits for a chart other than the one the page shows now (`chart` with
/// [`HOSTS`] entries of `legend`), and runs `then` (JavaScript) at the frame after it appears.
fn on_new_chart(ui: &Ui, then: &str) -> String {
    format!(
        "(() => {{ const old = document.querySelector({chart:?}); \
         const seen = new MutationObserver(() => {{ const c = document.querySelector({chart:?}); \
           if (c && c !== old && document.querySelectorAll({legend:?}).length >= {HOSTS}) {{ \
             seen.disconnect(); requestAnimationFrame(() => {{ {then} }}); }} }}); \
         seen.observe(document, {{ childList: true, subtree: true }}); }})();",
        chart = ui.chart,
        legend = ui.legend,
    )
}

/// One page open: (ms to the chart, bytes loaded, JS heap MiB).
fn open(browser: &Browser, ui: &Ui, expr: &str) -> (f64, f64, f64) {
    let url = format!(
        "{}{}?g0.expr={}&g0.tab=0&g0.range_input=1d",
        ui.server.base,
        ui.page,
        form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
    );
    browser.goto("about:blank");
    browser.goto(&url);
    let at =
        common::wait_for(Duration::from_secs(30), || browser.script("return window.__chartAt;").as_f64())
            .unwrap_or_else(|| browser.fail(&format!("{}: no chart of {expr}", ui.name)));
    let loaded = browser.script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')) \
         .reduce((sum, e) => sum + (e.transferSize || e.encodedBodySize || 0), 0);",
    );
    let heap = browser.script("return performance.memory ? performance.memory.usedJSHeapSize : 0;");
    (at, loaded.as_f64().unwrap_or(0.0), heap.as_f64().unwrap_or(0.0) / 1048576.0)
}

/// Clicks Execute: the ms to the frame after the new chart.
fn execute(browser: &Browser, ui: &Ui) -> f64 {
    let script = format!(
        "const answer = arguments[arguments.length - 1]; const t0 = performance.now(); {} \
         document.querySelector({:?}).click();",
        on_new_chart(ui, "answer(performance.now() - t0);"),
        ui.execute
    );
    browser.script_async(&script, json!([])).as_f64().expect("execute answered a time")
}

/// One sample for every series at `ts`, as one remote-write body.
fn round_body(specs: &[SeriesSpec], ts: i64, value: f64) -> Vec<u8> {
    let timeseries = specs
        .iter()
        .map(|s| TimeSeries {
            exemplars: Vec::new(),
            labels: s.labels.clone(),
            samples: vec![Sample { timestamp: ts, value }],
            histograms: Vec::new(),
        })
        .collect();
    promflow_remote::encode(&WriteRequest { timeseries, metadata: vec![] })
}

/// The live panel: ms from each remote write's answer to the frame after the redrawn chart.
fn live(browser: &Browser, ui: &Ui, specs: &[SeriesSpec], pushes: usize) -> Vec<f64> {
    let url =
        format!("{}{}?g0.expr=node_load1&g0.tab=0&g0.range_input=1d&g0.live=1", ui.server.base, ui.page);
    browser.goto(&url);
    browser.wait_texts(".live-status", |s| s.iter().any(|t| t.starts_with("live")));
    let http = common::client();
    let load: Vec<SeriesSpec> = specs
        .iter()
        .filter(|s| s.labels.iter().any(|l| l.name == "__name__" && l.value == "node_load1"))
        .map(|s| SeriesSpec { labels: s.labels.clone(), kind: s.kind })
        .collect();
    let mut latencies = Vec::new();
    for push in 0..pushes {
        std::thread::sleep(Duration::from_millis(500));
        browser.script(&format!(
            "window.__redrawnAt = null; {}",
            on_new_chart(ui, "window.__redrawnAt = Date.now();")
        ));
        post_write(&http, &ui.server.base, round_body(&load, now_ms(), push as f64));
        let answered = now_ms();
        let at = common::wait_for(Duration::from_secs(10), || {
            browser.script("return window.__redrawnAt;").as_f64()
        })
        .unwrap_or_else(|| browser.fail("the live chart was not redrawn"));
        latencies.push(at - answered as f64);
    }
    latencies
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = env("BENCH_RUNS", 9).max(1);
    pin_self(CLIENT_CPU);
    let specs = specs();
    let now = now_ms() / INTERVAL_MS * INTERVAL_MS;
    let start_ms = now - DAY_ROUNDS as i64 * INTERVAL_MS;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut uis = Vec::new();
    let started = Instant::now();
    for ((system, bin), dir) in systems("Prometheus 2.42").into_iter().zip(&dirs) {
        let server = start(system, &bin, dir.path(), &specs, start_ms);
        uis.push(if system == "promflow" {
            Ui {
                name: system,
                server,
                page: "/graph",
                chart: ".chart",
                legend: ".legend li",
                execute: "button.execute",
            }
        } else {
            Ui {
                name: system,
                server,
                page: "/classic/graph",
                chart: ".graph_area .graph",
                legend: ".legend ul li",
                execute: "input.execute_btn",
            }
        });
    }
    wait_until_idle(&uis, started);
    let browser = Browser::start_on(Some(CLIENT_CPU)).expect("chromium and chromedriver are installed");

    let queries = [
        ("node_load1", "node_load1"),
        ("rate of a counter", "rate(node_network_receive_bytes_total{device=\"eth0\"}[5m])"),
    ];
    // per UI and query: open ms, execute ms, bytes, heap
    type Measures = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut results: Vec<Vec<Measures>> =
        uis.iter().map(|_| queries.iter().map(|_| Default::default()).collect()).collect();
    for (q, (_, expr)) in queries.iter().enumerate() {
        // warm-up: the browser's cache, both servers' first reads
        for ui in &uis {
            watching(&browser, ui, || open(&browser, ui, expr));
            browser.screenshot(&format!("bench-{}-{q}", ui.name.split(' ').next().unwrap()));
        }
        for run in 0..runs {
            for k in 0..uis.len() {
                let i = (run + k) % uis.len();
                let ui = &uis[i];
                let (ms, bytes, heap) = watching(&browser, ui, || open(&browser, ui, expr));
                let exec = execute(&browser, ui);
                let m = &mut results[i][q];
                m.0.push(ms);
                m.1.push(exec);
                m.2.push(bytes);
                m.3.push(heap);
            }
        }
    }

    println!(
        "{HOSTS} series over a day (one sample every 15 s), step 345 s (both UIs' default for 1d), \
         Chromium 1280×900, {runs} runs, medians\n"
    );
    let names: Vec<&str> = uis.iter().map(|u| u.name).collect();
    println!("| measure | {} | ratio |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(names.len()));
    for (q, (label, _)) in queries.iter().enumerate() {
        let row = |what: &str, pick: &dyn Fn(&Measures) -> Vec<f64>, unit: &str| {
            let values: Vec<f64> = results.iter().map(|r| median(pick(&r[q]))).collect();
            let cells: Vec<String> = values.iter().map(|v| format!("{v:.0} {unit}")).collect();
            let ratio =
                if values.len() == 2 { format!("{:.2}", values[0] / values[1]) } else { "–".into() };
            println!("| {what}, {label} | {} | {ratio} |", cells.join(" | "));
        };
        row("open to chart", &|m| m.0.clone(), "ms");
        row("execute to chart", &|m| m.1.clone(), "ms");
        row("bytes loaded", &|m| m.2.iter().map(|b| b / 1024.0).collect(), "KiB");
        row("JS heap", &|m| m.3.clone(), "MiB");
    }

    if let Some(ui) = uis.iter().find(|u| u.name == "promflow") {
        let mut latencies = live(&browser, ui, &specs, runs.max(15));
        latencies.sort_by(f64::total_cmp);
        browser.screenshot("bench-promflow-live");
        println!(
            "\npromflow's live panel (node_load1, 1d, seeded from the range query): remote write answered \
             → chart redrawn, median {:.0} ms, p90 {:.0} ms over {} pushes",
            median(latencies.clone()),
            workload::percentile(&latencies, 0.9),
            latencies.len()
        );
    }
}

/// Runs `f` with a script added to every page the browser opens meanwhile that notes
/// (`window.__chartAt`, ms since the navigation started) the frame after the chart appears.
fn watching<T>(browser: &Browser, ui: &Ui, f: impl FnOnce() -> T) -> T {
    let cdp = |cmd: &str, params: Value| {
        browser.call("POST", "/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
    };
    let added = cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": on_new_chart(ui, "window.__chartAt = performance.now();")}),
    );
    let answer = f();
    cdp("Page.removeScriptToEvaluateOnNewDocument", json!({"identifier": added["identifier"]}));
    answer
}
