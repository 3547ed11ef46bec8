//! The web UI in real headless Chromium (Debian's `chromium` and `chromium-driver`, driven
//! over WebDriver) against the real binary: the graph page's table and chart, a live panel
//! following samples pushed through remote write, and the targets page. Each test saves a
//! screenshot under `target/ui-screenshots/` for a person to look at.

#[path = "common/browser.rs"]
mod browser;
use crate::common;

use browser::{Browser, PATIENCE};
use common::*;
use serde_json::Value;

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_promflow(
        dir.path(),
        "global:\n  scrape_interval: 1h\n",
        &["--web.enable-remote-write-receiver"],
    );
    (dir, server)
}

/// Writes `name{host=…}` for each (host, value), one sample a minute over the last ten.
fn write_gauges(server: &Server, name: &str, hosts: &[(&str, f64)]) {
    let now = now_ms();
    let series = hosts
        .iter()
        .map(|(host, v)| {
            let samples: Vec<(i64, f64)> = (0..10).map(|k| (now - (9 - k) * 60_000, v + k as f64)).collect();
            common::series(&[("__name__", name), ("host", host)], &samples)
        })
        .collect();
    let (status, body) = remote_write(server, series);
    assert!(status / 100 == 2, "remote write answered {status}: {body}");
}

#[test]
fn the_graph_page_shows_a_query_as_a_table_and_a_chart() {
    let Some(browser) = Browser::start() else { return };
    let (_dir, server) = start();
    write_gauges(&server, "ui_temp", &[("a", 10.0), ("b", 20.0)]);

    // a Prometheus link (an alert's generatorURL opens the table tab)
    browser.goto(&format!("{}/graph?g0.expr=ui_temp&g0.tab=1", server.base));
    let rows = browser.wait_texts("table.result tbody tr", |rows| rows.len() == 2);
    assert!(rows[0].contains("ui_temp{host=\"a\"}") && rows[0].contains("19"), "{rows:?}");
    assert!(rows[1].contains("ui_temp{host=\"b\"}") && rows[1].contains("29"), "{rows:?}");

    // a second panel: type a query, press Enter
    browser.click(&browser.find("button.add"));
    let editors = wait_for(PATIENCE, || Some(browser.all(".cm-content")).filter(|e| e.len() == 2)).unwrap();
    browser.click(&editors[1]);
    browser.type_into(&editors[1], "sum(ui_temp)\u{E007}");
    let rows = browser.wait_texts(".panel:nth-child(2) table.result tbody tr", |rows| rows.len() == 1);
    assert!(rows[0].contains("48"), "sum of the newest values 19 + 29: {rows:?}");
    // the URL keeps both panels, as Prometheus's links do
    let url = browser.call("GET", "/url", Value::Null);
    assert!(url.as_str().unwrap().contains("g1.expr=sum%28ui_temp%29"), "{url}");

    // an error is shown where the user looks
    browser.type_into(&editors[1], " +\u{E007}");
    browser
        .wait_texts(".panel:nth-child(2) .messages .error", |e| e.iter().any(|t| t.contains("parse error")));

    // the first panel's graph: a chart drawn over the hour, one legend entry per series
    browser.click(&browser.find(".panel:nth-child(1) button.tab.graph"));
    browser.wait_texts(".panel:nth-child(1) .legend li", |l| l.len() == 2);
    let drawn = wait_for(PATIENCE, || Some(browser.drawn_pixels()).filter(|n| *n > 500));
    let shot = browser.screenshot("graph");
    assert!(drawn.is_some(), "the chart has lines drawn (see {})", shot.display());
}

/// The graph answers "what was the value?": hovering shows the nearest series, its value and
/// its time; twelve series get twelve colours; the load time, resolution and series count show
/// under the controls; the range and end buttons step as Prometheus's do; and the completion
/// list opens below what is typed, leaving its underscores visible.
#[test]
fn the_graph_shows_values_on_hover_and_steps_its_range_and_end() {
    let Some(browser) = Browser::start() else { return };
    let (_dir, server) = start();
    let hosts: Vec<(String, f64)> = (0..12).map(|i| (format!("h{i:02}"), 10.0 * i as f64)).collect();
    let hosts: Vec<(&str, f64)> = hosts.iter().map(|(h, v)| (h.as_str(), *v)).collect();
    write_gauges(&server, "ui_many", &hosts);
    browser.goto(&format!("{}/graph?g0.expr=ui_many&g0.tab=0&g0.range_input=30m", server.base));
    let stats =
        browser.wait_texts(".panel .stats", |s| s.first().is_some_and(|s| s.contains("Result series")));
    assert!(
        stats[0].contains("Load time: ")
            && stats[0].contains("Resolution: 7s")
            && stats[0].contains("Result series: 12"),
        "{stats:?}"
    );
    browser.wait_texts(".legend li", |l| l.len() == 12);
    let colours = browser.script(
        "return new Set([...document.querySelectorAll('.legend .swatch')].map(s => s.style.background)).size;",
    );
    assert_eq!(colours, 12, "every series has a colour of its own");

    // the top of the plot, where the largest series (h11, 110 and up) is
    let over = browser.find(".chart .u-over");
    let height =
        browser.script("return document.querySelector('.chart .u-over').clientHeight;").as_i64().unwrap();
    browser.hover(&over, 0, 2 - height / 2);
    let hover = browser.wait_texts(".chart .hover", |h| h.first().is_some_and(|h| h.contains("value: ")));
    assert!(hover[0].contains("ui_many{host=\"h11\"}") && hover[0].contains("value: 11"), "{hover:?}");
    assert!(hover[0].contains(&chrono::Utc::now().format("%Y-%m-%d").to_string()), "the time: {hover:?}");
    browser.screenshot("graph-hover");

    // − and + step through Prometheus's ranges; « moves the end back by half the range
    let range = || browser.script("return document.querySelector('input.range').value;");
    browser.click(&browser.find("button.range-down"));
    assert_eq!(range(), "15m");
    browser.click(&browser.find("button.range-up"));
    browser.click(&browser.find("button.range-up"));
    assert_eq!(range(), "1h");
    let before = now_ms() / 1000;
    browser.click(&browser.find("button.end-back"));
    let end = browser.script("return Date.parse(document.querySelector('input.end').value + 'Z') / 1000;");
    let end = end.as_f64().unwrap() as i64;
    assert!((before - 1800 - end).abs() <= 5, "the end is half an hour back: {end} against {before}");
    let url = browser.call("GET", "/url", Value::Null);
    assert!(
        url.as_str().unwrap().contains("g0.range_input=1h")
            && url.as_str().unwrap().contains("g0.end_input="),
        "{url}"
    );
    browser.click(&browser.find("button.end-now"));
    assert_eq!(browser.script("return document.querySelector('input.end').value;"), "");

    // the completion list opens below the glyphs of what is typed, not over their underscores
    let editor = browser.find(".cm-content");
    browser.click(&editor);
    browser.type_into(&editor, "\u{E009}a\u{E009}\u{E017}ui_ma");
    browser.find(".cm-tooltip-autocomplete");
    let gap = || {
        browser.script(
            "const r = document.createRange(); r.selectNodeContents(document.querySelector('.cm-line')); \
             return document.querySelector('.cm-tooltip-autocomplete').getBoundingClientRect().top - r.getBoundingClientRect().bottom;",
        )
    };
    // CodeMirror places a tooltip in a later animation frame than the one that shows it: the
    // gap is read once the place has settled (the same twice running), within a bound
    let mut last = gap();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = gap();
        if now == last {
            break;
        }
        last = now;
    }
    browser.screenshot("graph-completion");
    assert!(last.as_f64().unwrap() >= 2.0, "the completion list covers the typed line's bottom: gap {last}");
}

#[test]
fn the_graph_page_works_by_keyboard_at_a_laptops_width() {
    let Some(browser) = Browser::start() else { return };
    let (_dir, server) = start();
    let long = "a-host-name-long-enough-to-need-wrapping-in-a-table-cell-at-a-small-laptops-width";
    write_gauges(&server, "ui_keys", &[("a", 10.0), (long, 20.0)]);
    browser.resize(1024, 768);
    browser.goto(&format!("{}/graph", server.base));

    // from the top of the page to the editor by Tab; a metric name completed from the
    // server's names (↓ chooses, Tab accepts); Enter executes
    browser.find(".cm-content");
    browser.tab_to(".cm-content");
    browser.press("ui_ke");
    // CodeMirror ignores keys on the list within 75 ms of its opening (a person's reaction
    // time): the test waits as long before each
    let react = || std::thread::sleep(std::time::Duration::from_millis(150));
    browser.wait_texts(".cm-tooltip-autocomplete li", |o| o.iter().any(|t| t.contains("ui_keys")));
    react();
    browser.press("\u{E015}");
    browser.wait_texts(".cm-tooltip-autocomplete li[aria-selected]", |o| {
        o.iter().any(|t| t.contains("ui_keys"))
    });
    react();
    browser.press("\u{E004}");
    let doc = browser.wait_texts(".cm-content", |d| d.first().is_some_and(|t| t.trim() == "ui_keys"));
    browser.press("\u{E007}");
    browser.wait_texts("table.result tbody tr", |rows| rows.len() == 2);
    assert!(browser.all(".cm-tooltip-autocomplete").is_empty(), "Enter closed the completions: {doc:?}");

    // on to the tabs by Tab, → to the graph
    browser.tab_to("button.tab.table");
    browser.press("\u{E014}");
    browser.wait_texts(".legend li", |l| l.len() == 2);
    wait_for(PATIENCE, || Some(browser.drawn_pixels()).filter(|n| *n > 500))
        .unwrap_or_else(|| browser.fail("no chart drawn"));
    let focused = browser.script("return document.activeElement.matches('button.tab.graph');");
    assert_eq!(focused, Value::Bool(true), "the Graph tab has the focus");

    // readable at a laptop's width: nothing wider than the window; the chart follows the
    // window when it narrows
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth;";
    assert_eq!(browser.script(fits), Value::Bool(true), "the page is wider than 1024 px");
    browser.screenshot("keyboard-1024");
    let before = browser.script("return document.querySelector('.chart canvas').width;").as_u64().unwrap();
    browser.resize(800, 768);
    let after = wait_for(PATIENCE, || {
        let w = browser.script("return document.querySelector('.chart canvas').width;").as_u64()?;
        (w < before && w <= 800).then_some(w)
    });
    assert!(after.is_some(), "the chart ({before} px wide) did not narrow with the window");
    assert_eq!(browser.script(fits), Value::Bool(true), "the page is wider than 800 px");
    browser.screenshot("keyboard-800");
}

#[test]
fn a_live_panel_follows_samples_pushed_through_remote_write() {
    let Some(browser) = Browser::start() else { return };
    let (_dir, server) = start();
    write_gauges(&server, "ui_live", &[("a", 1.0)]);

    browser.goto(&format!("{}/graph?g0.expr=ui_live&g0.tab=1&g0.live=1", server.base));
    browser.wait_texts("table.result tbody tr", |rows| rows.len() == 1 && rows[0].contains("10"));
    browser.wait_texts(".live-status", |s| s.iter().any(|t| t.starts_with("live")));
    let push = |v: f64| {
        let ts = common::series(&[("__name__", "ui_live"), ("host", "a")], &[(now_ms(), v)]);
        let (status, body) = remote_write(&server, vec![ts]);
        assert!(status / 100 == 2, "remote write answered {status}: {body}");
    };
    push(77.0);
    browser.wait_texts("table.result tbody tr", |rows| rows.len() == 1 && rows[0].contains("77"));

    // the graph tab, still live: the chart changes when a sample arrives, without a reload
    browser.click(&browser.find("button.tab.graph"));
    wait_for(PATIENCE, || Some(browser.drawn_pixels()).filter(|n| *n > 100))
        .unwrap_or_else(|| browser.fail("no chart drawn"));
    let before = browser.script("return document.querySelector('.chart canvas').toDataURL();");
    push(-50.0);
    let changed = wait_for(PATIENCE, || {
        let now = browser.script("return document.querySelector('.chart canvas').toDataURL();");
        (now != before).then_some(())
    });
    let shot = browser.screenshot("live");
    assert!(changed.is_some(), "the live chart did not change after a push (see {})", shot.display());
    let url = browser.call("GET", "/url", Value::Null);
    assert!(url.as_str().unwrap().contains("g0.live=1"), "{url}");
}

#[test]
fn the_targets_page_shows_a_broken_target_with_its_error() {
    let Some(browser) = Browser::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: broken\n    static_configs:\n      - targets: ['127.0.0.1:{closed}']\n        labels: {{team: ui}}\n"
    );
    let server = start_promflow(dir.path(), &config, &[]);

    browser.goto(&format!("{}/targets", server.base));
    let rows = browser.wait_texts("tr.target", |rows| rows.iter().any(|r| r.contains("DOWN")));
    let row = rows.iter().find(|r| r.contains("DOWN")).unwrap();
    assert!(row.contains(&format!("127.0.0.1:{closed}")), "{row}");
    assert!(row.contains("team=\"ui\""), "the target's labels: {row}");
    let errors = browser.wait_texts("tr.target td.error", |e| e.iter().any(|t| !t.is_empty()));
    assert!(errors.iter().any(|e| e.contains("refused")), "the scrape error: {errors:?}");
    browser.wait_texts(".pool h2", |h| h.iter().any(|t| t.contains("broken (0/1 up)")));
    browser.screenshot("targets");
}

#[test]
fn the_alerts_rules_status_and_sql_pages_show_what_the_server_holds() {
    let Some(browser) = Browser::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: ui\n    interval: 1s\n    rules:\n      - alert: UiNever\n        expr: ui_heat > 1000\n      - alert: UiHot\n        expr: ui_heat > 5\n        labels: {severity: page}\n        annotations: {summary: 'host {{ $labels.host }} is hot'}\n      - record: ui:heat:sum\n        expr: sum(ui_heat)\n",
    )
    .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1h\n  evaluation_interval: 1s\nrule_files: ['{}']\n",
        dir.path().join("rules.yml").display()
    );
    let server = start_promflow(dir.path(), &config, &["--web.enable-remote-write-receiver"]);
    write_gauges(&server, "ui_heat", &[("a", -10.0), ("b", 100.0)]);

    // alerts: the firing rule open with its alert, the inactive one listed
    browser.goto(&format!("{}/alerts", server.base));
    // the newest sample's value (the API's `1.09e+02` in plain notation), once an evaluation
    // after it has run (the page reads the rules again every 5 s)
    let alerts = browser.wait_texts("tr.alert.firing", |a| a.iter().any(|t| t.contains("109")));
    assert_eq!(alerts.len(), 1, "only host b is above 5: {alerts:?}");
    assert!(alerts[0].contains("host=\"b\"") && alerts[0].contains("host b is hot"), "{alerts:?}");
    assert!(alerts[0].contains("severity=\"page\""), "{alerts:?}");
    // firing before inactive, though the file lists the inactive rule first
    browser.wait_texts("details.rule summary", |r| {
        r.len() == 2 && r[0].contains("UiHot") && r[1].contains("UiNever")
    });
    browser.screenshot("alerts");
    // only what is firing
    browser.click(&browser.find("input.show-inactive"));
    browser.wait_texts("details.rule summary", |r| r.len() == 1 && r[0].contains("UiHot"));

    // rules: the group and its three rules, evaluated
    browser.goto(&format!("{}/rules", server.base));
    let rules = browser.wait_texts("tr.rule", |r| r.len() == 3 && r.iter().all(|t| t.contains("OK")));
    assert!(rules.iter().any(|r| r.contains("record: ui:heat:sum")), "{rules:?}");
    // an alerting rule shows its annotations; an expression links to its table in the graph page
    assert!(rules.iter().any(|r| r.contains("summary: host {{ $labels.host }} is hot")), "{rules:?}");
    let links =
        browser.script("return [...document.querySelectorAll('tr.rule pre.query a')].map(a => a.href);");
    assert!(
        links.as_array().is_some_and(|l| l
            .iter()
            .any(|h| h.as_str().is_some_and(|h| h.contains("/graph?g0.expr=ui_heat+%3E+5")))),
        "{links}"
    );

    // status: build information, and the metric with the most series among the highest
    browser.goto(&format!("{}/status", server.base));
    let tables = browser.wait_texts("table.ranking", |t| t.iter().any(|t| t.contains("ui_heat")));
    assert!(!tables.is_empty());
    let kv = browser.wait_texts("table.kv", |t| {
        t.iter().any(|t| t.contains("version")) && t.iter().any(|t| t.contains("storageRetention"))
    });
    assert!(
        kv.iter().all(|t| !t.contains("goroutineCount") && !t.contains("GOGC")),
        "Go's runtime fields: {kv:?}"
    );
    browser.screenshot("status");
    // a ranked name opens its series in the graph page; a label pair its selector
    browser.script(
        "[...document.querySelectorAll('table.ranking a')].find(a => a.textContent === 'ui_heat').click();",
    );
    browser.wait_texts("table.result tbody tr", |r| r.len() == 2);
    browser.goto(&format!("{}/status", server.base));
    browser.wait_texts("table.ranking", |t| t.iter().any(|t| t.contains("host=b")));
    browser.script(
        "[...document.querySelectorAll('table.ranking a')].find(a => a.textContent === 'host=b').click();",
    );
    let rows = browser.wait_texts("table.result tbody tr", |r| !r.is_empty());
    assert!(rows.iter().all(|r| r.contains("host=\"b\"")), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("ui_heat{host=\"b\"}")), "{rows:?}");

    // the SQL console, from its URL
    let sql =
        "SELECT host, max(value) AS hottest FROM ui_heat WHERE ts > now() - INTERVAL '1 hour' GROUP BY host";
    let url = format!(
        "{}/sql?q={}",
        server.base,
        form_urlencoded::byte_serialize(sql.as_bytes()).collect::<String>()
    );
    browser.goto(&url);
    let rows = browser.wait_texts("table.result tbody tr", |r| r.len() == 2);
    assert!(rows[0].contains('a') && rows[0].contains("-1"), "{rows:?}");
    assert!(rows[1].contains('b') && rows[1].contains("109"), "{rows:?}");
    browser.screenshot("sql");
}

/// Under a route prefix, `/` and `/<prefix>/` lead to the graph page, as in Prometheus; the
/// status pages at Prometheus 3's paths (`/config`, `/flags`, `/tsdb-status`,
/// `/service-discovery`) show the configuration, the flags, the head's statistics, and each
/// target's labels before and after relabelling (a dropped one too); every page has the
/// `--web.page-title`.
#[test]
fn prefixed_roots_redirect_and_the_status_pages_of_prometheus_3_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1h\nscrape_configs:\n  - job_name: self\n    metrics_path: /prom/metrics\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n  - job_name: gone\n    static_configs: [{{targets: ['127.0.0.1:1']}}]\n    relabel_configs: [{{action: drop, source_labels: [job], regex: gone}}]\n"
        ),
    )
    .unwrap();
    let mut server =
        spawn_promflow(dir.path(), &cfg, port, &["--web.route-prefix=/prom", "--web.page-title=Lab <east>"]);
    server.wait_ready("/prom/-/ready");
    let plain =
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/", "/prom/", "/prom"] {
        let r = plain.get(format!("{}{path}", server.base)).send().unwrap();
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        assert_eq!(r.headers()["location"], "/prom/graph", "{path}");
    }
    for page in ["config", "flags", "tsdb-status", "service-discovery"] {
        let r = plain.get(format!("{}/prom/{page}", server.base)).send().unwrap();
        assert_eq!(r.status(), 200, "/prom/{page}");
        // `--web.page-title`, escaped
        assert!(r.text().unwrap().contains("<title>Lab &lt;east&gt;</title>"), "/prom/{page}");
    }

    let Some(browser) = Browser::start() else { return };
    browser.goto(&format!("{}/prom/config", server.base));
    browser.wait_texts("pre.config", |t| t.iter().any(|t| t.contains("job_name: gone")));
    browser.goto(&format!("{}/prom/flags", server.base));
    browser
        .wait_texts("table.kv", |t| t.iter().any(|t| t.contains("web.route-prefix") && t.contains("/prom")));
    browser.goto(&format!("{}/prom/tsdb-status", server.base));
    browser.wait_texts("div.tsdb table.kv", |t| t.iter().any(|t| t.contains("Series")));
    browser.goto(&format!("{}/prom/service-discovery", server.base));
    let pools = browser.wait_texts("table.discovery", |t| {
        t.iter().any(|t| t.contains("Dropped")) && t.iter().any(|t| t.contains("instance=\"127.0.0.1:"))
    });
    assert!(pools.iter().any(|t| t.contains("job=\"gone\"") && t.contains("Dropped")), "{pools:?}");
    browser.screenshot("service-discovery");
}

/// A native histogram's element shows in the table as its count, sum and buckets, and its
/// series is charted in the graph (its count) and drawn as a heatmap of its buckets, not
/// reported as an error.
#[test]
fn a_native_histogram_shows_its_buckets_in_the_table_and_the_graph() {
    use promflow_remote::{BucketSpan, Histogram};
    let Some(browser) = Browser::start() else { return };
    let (_dir, server) = start();
    let now = now_ms();
    let mut ts = common::series(&[("__name__", "ui_latency"), ("host", "a")], &[]);
    ts.histograms = (0..10)
        .map(|k| Histogram {
            count_float: Some(6.0 + k as f64),
            sum: 9.5,
            schema: 0,
            zero_threshold: 0.001,
            zero_count_float: Some(1.0),
            positive_spans: vec![BucketSpan { offset: 1, length: 2 }],
            positive_counts: vec![2.0, 3.0 + k as f64],
            timestamp: now - (9 - k) * 60_000,
            ..Histogram::default()
        })
        .collect();
    let (status, body) = remote_write(&server, vec![ts]);
    assert_eq!(status, 204, "{body}");

    browser.goto(&format!("{}/graph?g0.expr=ui_latency&g0.tab=1", server.base));
    let rows = browser.wait_texts("table.result > tbody > tr", |rows| rows.len() == 1);
    assert!(rows[0].contains("count: 15") && rows[0].contains("sum: 9.5"), "{rows:?}");
    let buckets = browser.wait_texts("table.buckets tr", |b| b.len() == 3);
    assert!(buckets[0].contains("[-0.001, 0.001]") && buckets[0].contains('1'), "{buckets:?}");
    assert!(buckets[2].contains("(2, 4]") && buckets[2].contains("12"), "{buckets:?}");
    // and as a chart of bars, one per bucket, the fullest the tallest
    let heights = browser.script(
        "return [...document.querySelectorAll('svg.bucket-chart rect')].map(r => Number(r.getAttribute('height')))",
    );
    let heights: Vec<f64> = heights.as_array().unwrap().iter().filter_map(|h| h.as_f64()).collect();
    assert_eq!(heights.len(), 3, "{heights:?}");
    assert!(heights[2] > heights[1] && heights[1] > heights[0] && heights[0] > 0.0, "{heights:?}");
    assert!(browser.all(".messages .error").is_empty(), "no error is shown");

    browser.click(&browser.find("button.tab.graph"));
    browser.wait_texts(".legend li", |l| l.len() == 1);
    let drawn = wait_for(PATIENCE, || Some(browser.drawn_pixels()).filter(|n| *n > 100));
    let shot = browser.screenshot("histogram");
    assert!(drawn.is_some(), "the histogram's count is drawn (see {})", shot.display());
    // and its buckets as a heatmap: a row per bucket, labelled by its upper bound, the
    // fullest cell (the top bucket's, last) the darkest
    browser.wait_texts("figure.heatmap figcaption", |c| c.len() == 1);
    let labels =
        browser.script("return [...document.querySelectorAll('svg.heatmap text')].map(t => t.textContent)");
    assert_eq!(labels, serde_json::json!(["0.001", "2", "4"]), "rows, lowest first");
    let cells = browser.script(
        "return [...document.querySelectorAll('svg.heatmap rect.cell')].map(r => \
         [Number(r.getAttribute('x')), Number(r.getAttribute('y')), Number(r.getAttribute('fill-opacity'))])",
    );
    let cells: Vec<(f64, f64, f64)> = cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap(), c[2].as_f64().unwrap()))
        .collect();
    let rows: std::collections::BTreeSet<u64> = cells.iter().map(|c| c.1 as u64).collect();
    assert_eq!(rows.len(), 3, "{cells:?}");
    assert!(cells.len() >= 30 && cells.len().is_multiple_of(3), "every point has its 3 buckets: {cells:?}");
    let top = cells.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
    let last = cells.iter().map(|c| c.0).fold(0.0, f64::max);
    let darkest: Vec<_> = cells.iter().filter(|c| c.2 == 1.0).collect();
    assert!(darkest.iter().all(|c| c.1 == top), "{cells:?}");
    assert!(darkest.iter().any(|c| c.0 == last), "{cells:?}");
    assert!(cells.iter().all(|c| c.2 > 0.0 && c.2 <= 1.0), "{cells:?}");
    browser.screenshot("histogram-heatmap");
}
