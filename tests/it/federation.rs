//! `/federate` against real Prometheus 2.42: promflow's answer is byte for byte what
//! Prometheus serves for the same samples and external labels, and a Prometheus scraping it
//! with `honor_labels: true` stores the federated series with their own labels.

use crate::common;

use std::time::Duration;

use common::*;

const GLOBAL: &str = "global:\n  scrape_interval: 1h\n  external_labels:\n    cluster: pf\n";
const MATCH: &str = "{__name__=~\"fed_.*\"}";

/// The same samples for every server: two hosts' gauge (one value in Go's exponent form), a
/// series without `instance`, one ended by a staleness marker, one the selector misses.
fn samples(now: i64) -> Vec<promflow_remote::TimeSeries> {
    vec![
        series(
            &[("__name__", "fed_temp"), ("host", "a"), ("instance", "h1:9100"), ("job", "node")],
            &[(now - 60_000, 1.5), (now - 1_000, 2.5)],
        ),
        series(
            &[("__name__", "fed_temp"), ("host", "b"), ("instance", "h2:9100"), ("job", "node")],
            &[(now - 2_000, 1e9)],
        ),
        series(&[("__name__", "fed_sum"), ("job", "node")], &[(now - 1_500, 3.0)]),
        series(
            &[("__name__", "fed_gone"), ("instance", "x"), ("job", "node")],
            &[(now - 3_000, 1.0), (now - 1_000, promflow_storage::stale_nan())],
        ),
        series(
            &[("__name__", "other_temp"), ("instance", "h1:9100"), ("job", "node")],
            &[(now - 1_000, 7.0)],
        ),
    ]
}

fn federate(server: &Server, query: &str) -> (u16, String, String) {
    let r = client().get(server.url(&format!("/federate{query}"))).send().unwrap();
    let content_type =
        r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (r.status().as_u16(), content_type, r.text().unwrap())
}

fn encoded(selector: &str) -> String {
    form_urlencoded::byte_serialize(selector.as_bytes()).collect()
}

#[test]
fn federation_answers_what_prometheus_answers_and_prometheus_scrapes_it() {
    let dir = tempfile::tempdir().unwrap();
    let promflow =
        start_promflow(dir.path(), GLOBAL, &["--web.enable-remote-write-receiver", "--web.enable-lifecycle"]);
    let now = now_ms();
    let (status, body) = remote_write(&promflow, samples(now));
    assert_eq!(status / 100, 2, "remote write: {body}");

    let (status, content_type, text) = federate(&promflow, &format!("?match[]={}", encoded(MATCH)));
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let expected = format!(
        "# TYPE fed_sum untyped\n\
         fed_sum{{job=\"node\",cluster=\"pf\",instance=\"\"}} 3 {}\n\
         # TYPE fed_temp untyped\n\
         fed_temp{{host=\"a\",instance=\"h1:9100\",job=\"node\",cluster=\"pf\"}} 2.5 {}\n\
         fed_temp{{host=\"b\",instance=\"h2:9100\",job=\"node\",cluster=\"pf\"}} 1e+09 {}\n",
        now - 1_500,
        now - 1_000,
        now - 2_000
    );
    assert_eq!(text, expected);
    // no match[]: an empty answer; a bad selector: 400 with the reason
    assert_eq!(
        federate(&promflow, ""),
        (200, "text/plain; version=0.0.4; charset=utf-8".into(), String::new())
    );
    let (status, _, why) = federate(&promflow, &format!("?match[]={}", encoded("fed_temp{")));
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("match[]"), "{why}");

    // a reload's external labels apply to the next answer
    std::fs::write(dir.path().join("prometheus.yml"), GLOBAL.replace("cluster: pf", "cluster: eu")).unwrap();
    let r = client().post(promflow.url("/-/reload")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, _, reloaded) = federate(&promflow, &format!("?match[]={}", encoded(MATCH)));
    assert_eq!(reloaded, expected.replace("cluster=\"pf\"", "cluster=\"eu\""));
    std::fs::write(dir.path().join("prometheus.yml"), GLOBAL).unwrap();
    assert_eq!(client().post(promflow.url("/-/reload")).send().unwrap().status().as_u16(), 200);

    // the oracle: Prometheus 2.42 with the same samples and external labels
    for sub in ["source", "scraper"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let Some(source) = start_prometheus(&dir.path().join("source"), &format!("{GLOBAL}scrape_configs: []\n"))
    else {
        return;
    };
    let (status, body) = remote_write(&source, samples(now));
    assert_eq!(status / 100, 2, "remote write to Prometheus: {body}");
    let (_, _, theirs) = federate(&source, &format!("?match[]={}", encoded(MATCH)));
    assert_eq!(text, theirs, "promflow's /federate differs from Prometheus 2.42's");

    // a Prometheus federating from promflow keeps the series' own labels (honor_labels), and
    // `instance=""` keeps it from adding its own instance label
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: federate\n    honor_labels: true\n    \
         metrics_path: /federate\n    params:\n      'match[]': ['{MATCH}']\n    static_configs:\n      \
         - targets: ['127.0.0.1:{}']\n",
        promflow.port
    );
    let scraper = start_prometheus(&dir.path().join("scraper"), &config).expect("Prometheus started once");
    let query = format!("/api/v1/query?query={}", encoded("{__name__=~\"fed_.*\"}"));
    let found = wait_for(Duration::from_secs(20), || {
        let (_, v) = scraper.get_json(&query);
        let r = result(&v).clone();
        (r.len() == 3).then_some(r)
    })
    .unwrap_or_else(|| panic!("the scraper never stored the three series: {:?}", scraper.get_json(&query)));
    let by_name: std::collections::BTreeMap<String, &serde_json::Value> = found
        .iter()
        .map(|s| (format!("{}{}", s["metric"]["__name__"], s["metric"]["host"]), &s["metric"]))
        .collect();
    let temp_a = by_name["\"fed_temp\"\"a\""];
    assert_eq!(temp_a["instance"], "h1:9100", "{temp_a}");
    assert_eq!(temp_a["cluster"], "pf", "{temp_a}");
    assert_eq!(temp_a["job"], "node", "honor_labels keeps the series' job: {temp_a}");
    let sum = by_name["\"fed_sum\"null"];
    assert!(sum.get("instance").is_none(), "instance=\"\" keeps the scraper's own out: {sum}");
    let values: Vec<&str> = found.iter().map(|s| s["value"][1].as_str().unwrap()).collect();
    assert!(values.contains(&"2.5") && values.contains(&"1000000000") && values.contains(&"3"), "{values:?}");
}

#[test]
fn a_prometheus_scraping_native_histograms_gets_them_in_the_protobuf_format() {
    let dir = tempfile::tempdir().unwrap();
    let promflow = start_promflow(dir.path(), GLOBAL, &["--web.enable-remote-write-receiver"]);
    let now = now_ms();
    let histogram = promflow_remote::Histogram {
        count_float: Some(9.0),
        sum: 7.5,
        schema: 1,
        zero_threshold: 0.001,
        zero_count_float: Some(1.0),
        positive_spans: vec![promflow_remote::BucketSpan { offset: -2, length: 2 }],
        positive_counts: vec![1.0, 2.0],
        negative_spans: vec![promflow_remote::BucketSpan { offset: 0, length: 1 }],
        negative_counts: vec![5.0],
        timestamp: now - 1_000,
        ..Default::default()
    };
    let mut h = series(&[("__name__", "fed_latency"), ("job", "api")], &[]);
    h.histograms = vec![histogram];
    let gauge = series(&[("__name__", "fed_temp"), ("job", "api")], &[(now - 1_000, 2.5)]);
    assert_eq!(remote_write(&promflow, vec![h, gauge]).0, 204);
    // the text format has no native histograms
    let (_, content_type, text) = federate(&promflow, &format!("?match[]={}", encoded(MATCH)));
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("fed_latency") && text.contains("fed_temp"), "{text}");

    // Prometheus 2.42 with native histograms asks for protobuf first
    std::fs::create_dir_all(dir.path().join("scraper")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: federate\n    honor_labels: true\n    \
         metrics_path: /federate\n    params:\n      'match[]': ['{MATCH}']\n    static_configs:\n      \
         - targets: ['127.0.0.1:{}']\n",
        promflow.port
    );
    let Some(scraper) = start_prometheus_with(
        &dir.path().join("scraper"),
        &config,
        free_port(),
        &["--enable-feature=native-histograms"],
    ) else {
        return;
    };
    let answer = |q: &str| {
        let (_, v) = scraper.get_json(&format!("/api/v1/query?query={}", encoded(q)));
        result(&v).first().and_then(|r| r["value"][1].as_str().map(String::from))
    };
    let count = wait_for(Duration::from_secs(20), || answer("histogram_count(fed_latency)"));
    assert_eq!(count.as_deref(), Some("9"), "the scraper stored the native histogram");
    assert_eq!(answer("histogram_sum(fed_latency)").as_deref(), Some("7.5"));
    assert_eq!(answer("fed_temp").as_deref(), Some("2.5"));
    let (_, v) = scraper.get_json(&format!("/api/v1/query?query={}", encoded("fed_latency")));
    assert_eq!(result(&v)[0]["metric"]["cluster"], "pf", "{v}");
    // two positive buckets, one negative and the zero bucket
    let buckets = &result(&v)[0]["histogram"][1]["buckets"];
    assert_eq!(buckets.as_array().map(Vec::len), Some(4), "{v}");
}
