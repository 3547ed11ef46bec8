//! Start timestamps end to end: taken from remote write 2.0, protobuf scrapes' created
//! timestamps and OpenMetrics `_created` lines (`--enable-feature=st-storage`), kept across
//! `kill -9`, read by PromQL (`use-start-timestamps`), and turned into zero samples
//! (`created-timestamp-zero-ingestion`).

use crate::common;

use std::time::Duration;

use common::*;

/// Remote write 2.0's `Sample` with its `start_timestamp`, which promflow's own sender does
/// not write.
#[derive(Clone, PartialEq, prost::Message)]
struct SampleWithStart {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
    #[prost(int64, tag = "3")]
    start_timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SeriesWithStarts {
    #[prost(uint32, repeated, tag = "1")]
    labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<SampleWithStart>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RequestWithStarts {
    #[prost(string, repeated, tag = "4")]
    symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    timeseries: Vec<SeriesWithStarts>,
}

/// Sends one remote write 2.0 series `name` with (timestamp, value, start timestamp) samples.
fn write_v2(s: &Server, name: &str, samples: &[(i64, f64, i64)]) -> u16 {
    use prost::Message;
    let req = RequestWithStarts {
        symbols: vec![String::new(), "__name__".into(), name.into()],
        timeseries: vec![SeriesWithStarts {
            labels_refs: vec![1, 2],
            samples: samples
                .iter()
                .map(|&(timestamp, value, start_timestamp)| SampleWithStart {
                    value,
                    timestamp,
                    start_timestamp,
                })
                .collect(),
        }],
    };
    let body = zstd::encode_all(&req.encode_to_vec()[..], 3).unwrap();
    client()
        .post(s.url("/api/v1/write"))
        .header("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
        .header("Content-Encoding", "zstd")
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(body)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// The single value of an instant query at `t` (ms), if it has one.
fn value_at(s: &Server, query: &str, t: i64) -> Option<f64> {
    let (_, v) = s.get_json(&format!("/api/v1/query?query={}&time={}", urlencode(query), t as f64 / 1000.0));
    let r = result(&v).first()?;
    r["value"][1].as_str()?.parse().ok()
}

#[test]
fn start_timestamps_from_remote_write_show_resets_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--web.enable-remote-write-receiver",
        "--enable-feature=st-storage",
        "--enable-feature=use-start-timestamps",
    ];
    let s = start_promflow(dir.path(), "global:\n  scrape_interval: 1h\n", &flags);
    let t0 = (now_ms() / 60_000 - 10) * 60_000;
    let minute = 60_000;
    // a counter restarted between its third and fourth samples, higher than before: only
    // its start timestamp shows the reset
    let restarted = t0 + 150_000;
    let samples = [
        (t0, 10.0, t0 - 30_000),
        (t0 + minute, 20.0, t0 - 30_000),
        (t0 + 2 * minute, 30.0, t0 - 30_000),
        (t0 + 3 * minute, 40.0, restarted),
        (t0 + 4 * minute, 50.0, restarted),
    ];
    assert_eq!(write_v2(&s, "requests_total", &samples), 204);
    let at = t0 + 4 * minute;
    let answers = |s: &Server| {
        (
            value_at(s, "resets(requests_total[10m])", at),
            value_at(s, "start_timestamp(requests_total)", at),
            value_at(s, "increase(requests_total[10m])", at),
        )
    };
    // the counts 10..30 and 0..50, each counted from zero at its start inside the window
    let want = (Some(1.0), Some(restarted as f64 / 1000.0), Some(30.0 + 50.0));
    assert_eq!(answers(&s), want);
    let mut s = s;
    s.kill9();
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, free_port(), &flags);
    assert_eq!(answers(&s), want, "after kill -9");
    drop(s);
    // without use-start-timestamps queries answer as if there were none
    let plain = start_promflow_with(dir.path(), &cfg, free_port(), &flags[..2]);
    assert_eq!(value_at(&plain, "resets(requests_total[10m])", at), Some(0.0));
    assert_eq!(value_at(&plain, "start_timestamp(requests_total)", at), None);
}

/// A protobuf counter created at `created_s` (seconds).
fn protobuf_counter(created_s: i64) -> Vec<u8> {
    use promflow_scrape::exposition::protobuf::wire::*;
    encode_delimited(&[MetricFamily {
        name: Some("jobs_total".into()),
        help: None,
        r#type: Some(metric_type::COUNTER),
        metric: vec![Metric {
            counter: Some(Counter {
                value: Some(7.0),
                exemplar: None,
                created_timestamp: Some(Timestamp { seconds: created_s, nanos: 250_000_000 }),
            }),
            ..Default::default()
        }],
        unit: None,
    }])
}

#[test]
fn created_timestamps_of_scrapes_are_start_timestamps_or_zero_samples() {
    let created_s = now_ms() / 1000 - 600;
    let proto = protobuf_counter(created_s);
    let proto_port = serve_http(move |_, _| {
        let ct =
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
        (ct.to_string(), proto.clone())
    });
    let om = format!(
        "# TYPE tasks counter\ntasks_total 3\ntasks_created {created_s}.5\n# TYPE load gauge\nload 1\n# EOF\n"
    );
    let om_port = serve_http(move |_, _| {
        ("application/openmetrics-text; version=1.0.0; charset=utf-8".to_string(), om.clone().into_bytes())
    });
    let config = format!(
        "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\nscrape_configs:\n  - job_name: proto\n    static_configs:\n      - targets: ['127.0.0.1:{proto_port}']\n  - job_name: om\n    static_configs:\n      - targets: ['127.0.0.1:{om_port}']\n"
    );
    let starts = |s: &Server| {
        wait_for(Duration::from_secs(15), || {
            let proto = value_at(s, "start_timestamp(jobs_total)", now_ms())?;
            let om = value_at(s, "start_timestamp(tasks_total)", now_ms())?;
            Some((proto, om))
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(
        dir.path(),
        &config,
        &["--enable-feature=st-storage", "--enable-feature=use-start-timestamps"],
    );
    let created = created_s as f64;
    assert_eq!(starts(&s), Some((created + 0.25, created + 0.5)));
    // the _created line is a start timestamp, not a series
    let (_, v) = s.get_json("/api/v1/query?query=tasks_created");
    assert!(result(&v).is_empty(), "{v}");
    drop(s);

    // zero samples at the start timestamps instead
    let dir = tempfile::tempdir().unwrap();
    let s = start_promflow(dir.path(), &config, &["--enable-feature=created-timestamp-zero-ingestion"]);
    let zero_at = |name: &str, t_ms: i64| {
        wait_for(Duration::from_secs(15), || {
            let (_, v) = s.get_json(&format!(
                "/api/v1/query?query={}&time={}",
                urlencode(&format!("{name}[1s]")),
                t_ms as f64 / 1000.0
            ));
            let first = result(&v).first()?["values"].as_array()?.first()?.clone();
            Some((first[0].as_f64()?, first[1].as_str()?.to_string()))
        })
    };
    let proto_t = created_s * 1000 + 250;
    assert_eq!(zero_at("jobs_total", proto_t), Some((proto_t as f64 / 1000.0, "0".into())));
    let om_t = created_s * 1000 + 500;
    assert_eq!(zero_at("tasks_total", om_t), Some((om_t as f64 / 1000.0, "0".into())));
    // queries use no start timestamps without use-start-timestamps
    assert_eq!(value_at(&s, "start_timestamp(jobs_total)", now_ms()), None);
}
