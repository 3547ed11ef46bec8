//! Remote read: Prometheus 2.42 with promflow as its `remote_read` storage answers from
//! promflow's samples what promflow answers itself; a direct request gets every sample with
//! the external labels, and the sample limit refuses a larger answer.

use crate::common;

use std::time::Duration;

use common::*;
use promflow_remote::read::{LabelMatcher, MatcherType, Query, ReadRequest, ReadResponse};

const STEP: i64 = 15_000;

/// Three series `rr{i}` of 40 samples at 15 s: counters growing at different rates.
fn write(promflow: &Server, from: i64) {
    let ts = (0..3)
        .map(|i| {
            let points: Vec<(i64, f64)> =
                (0..40).map(|j| (from + j * STEP, (j * (i + 1)) as f64 * 1.5)).collect();
            series(&[("__name__", "rr"), ("i", &i.to_string())], &points)
        })
        .collect();
    let (code, body) = remote_write(promflow, ts);
    assert_eq!(code, 204, "{body}");
}

pub(crate) fn read(server: &Server, req: &ReadRequest) -> (u16, Vec<u8>) {
    let (code, _, body) = read_typed(server, req);
    (code, body)
}

/// A remote-read request's status, answer content type and body.
fn read_typed(server: &Server, req: &ReadRequest) -> (u16, String, Vec<u8>) {
    let r = client()
        .post(server.url("/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(req.encode_body())
        .send()
        .unwrap();
    let content_type =
        r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (r.status().as_u16(), content_type, r.bytes().unwrap().to_vec())
}

pub(crate) fn query(from: i64, to: i64, matchers: &[(MatcherType, &str, &str)]) -> Query {
    Query {
        start_timestamp_ms: from,
        end_timestamp_ms: to,
        matchers: matchers
            .iter()
            .map(|(t, n, v)| LabelMatcher { r#type: *t as i32, name: n.to_string(), value: v.to_string() })
            .collect(),
        hints: None,
    }
}

#[test]
fn prometheus_reads_promflow_as_remote_storage() {
    let dir = tempfile::tempdir().unwrap();
    let config = "global:\n  external_labels: {site: pf}\n";
    let promflow = start_promflow(dir.path(), config, &["--web.enable-remote-write-receiver"]);
    let from = (now_ms() - 20 * 60_000) / STEP * STEP;
    write(&promflow, from);
    let prom_config = format!(
        "global: {{scrape_interval: 1h}}\nremote_read:\n  - url: {}\n    read_recent: true\n",
        promflow.url("/api/v1/read")
    );
    let Some(prom) = start_prometheus(dir.path(), &prom_config) else { return };

    // the same range query, answered by promflow from its storage and by Prometheus from
    // promflow's remote read
    // evaluation times between samples: a window's start never falls on a sample (Prometheus
    // 2.42 includes a sample there, promflow as Prometheus 3 does not)
    let (start, end) = (from as f64 / 1000.0 + 127.0, (from + 39 * STEP) as f64 / 1000.0);
    for q in ["sum by (i) (rate(rr[2m]))", "max_over_time(rr[5m]) - min_over_time(rr[5m])", "count(rr)"] {
        let path = format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=30",
            form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        );
        let (code, ours) = promflow.get_json(&path);
        assert_eq!(code, 200, "{ours}");
        let (code, theirs) = prom.get_json(&path);
        assert_eq!(code, 200, "{theirs}");
        // Prometheus's series carry the external label promflow's remote read adds
        let mut theirs_c = canonical(&theirs);
        theirs_c = theirs_c
            .into_iter()
            .map(|(k, v)| {
                (
                    k.replace(",\"site\":\"pf\"", "")
                        .replace("\"site\":\"pf\",", "")
                        .replace("{\"site\":\"pf\"}", "{}"),
                    v,
                )
            })
            .collect();
        assert!(!canonical(&ours).is_empty(), "{q}: {ours}");
        same(&canonical(&ours), &theirs_c).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    // a matcher on the external label is the server's: it selects the series
    let (_, v) = prom.get_json("/api/v1/query?query=count(count_over_time(rr%7Bsite%3D%22pf%22%7D%5B1h%5D))");
    assert_eq!(result(&v)[0]["value"][1], "3", "{v}");
}

#[test]
fn a_remote_read_returns_every_sample_with_the_external_labels_within_the_sample_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = "global:\n  external_labels: {site: pf}\n";
    let flags = ["--web.enable-remote-write-receiver", "--storage.remote.read-sample-limit=100"];
    let promflow = start_promflow(dir.path(), config, &flags);
    let from = (now_ms() - 20 * 60_000) / STEP * STEP;
    write(&promflow, from);

    let req = ReadRequest {
        queries: vec![
            query(
                from,
                from + 9 * STEP,
                &[(MatcherType::Eq, "__name__", "rr"), (MatcherType::Re, "i", "0|2")],
            ),
            query(
                from,
                from + 99 * STEP,
                &[
                    (MatcherType::Eq, "site", "pf"),
                    (MatcherType::Neq, "i", "1"),
                    (MatcherType::Eq, "__name__", "rr"),
                ],
            ),
            query(from, from + 99 * STEP, &[(MatcherType::Eq, "site", "elsewhere")]),
        ],
        accepted_response_types: vec![0],
    };
    let (code, body) = read(&promflow, &req);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let resp = ReadResponse::decode_body(&body).unwrap();
    assert_eq!(resp.results.len(), 3);
    let first = &resp.results[0].timeseries;
    assert_eq!(first.len(), 2);
    let labels: Vec<(&str, &str)> =
        first[1].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    assert_eq!(labels, [("__name__", "rr"), ("i", "2"), ("site", "pf")]);
    assert_eq!(first[1].samples.len(), 10, "both ends of the range are inclusive");
    assert_eq!(first[1].samples[9].value, 27.0 * 1.5);
    assert_eq!(resp.results[1].timeseries.len(), 2, "site=\"pf\" is the server's own label");
    assert_eq!(resp.results[1].timeseries[0].samples.len(), 40);
    assert!(resp.results[2].timeseries.is_empty(), "no series has another site");

    // three series of 40 samples are more than the limit of 100
    let all = ReadRequest {
        queries: vec![query(from, from + 99 * STEP, &[(MatcherType::Eq, "__name__", "rr")])],
        accepted_response_types: vec![],
    };
    let (code, body) = read(&promflow, &all);
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("sample limit"), "{}", String::from_utf8_lossy(&body));
    // garbage is a clear error, and the server goes on
    let r = client().post(promflow.url("/api/v1/read")).body("not snappy").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let ok = wait_for(Duration::from_secs(5), || (read(&promflow, &req).0 == 200).then_some(()));
    assert!(ok.is_some());

    // a series of native histograms comes back with its histograms, as sent
    let histogram = promflow_remote::Histogram {
        count_float: Some(5.0),
        sum: 7.5,
        schema: 1,
        zero_threshold: 0.001,
        zero_count_float: Some(1.0),
        positive_spans: vec![promflow_remote::BucketSpan { offset: -1, length: 2 }],
        positive_counts: vec![1.0, 3.0],
        timestamp: from + 5 * STEP,
        ..Default::default()
    };
    let mut h = series(&[("__name__", "rr_hist")], &[]);
    h.histograms = vec![histogram.clone()];
    assert_eq!(remote_write(&promflow, vec![h]).0, 204);
    let hreq = ReadRequest {
        queries: vec![query(from, from + 9 * STEP, &[(MatcherType::Eq, "__name__", "rr_hist")])],
        accepted_response_types: vec![0],
    };
    let (code, body) = read(&promflow, &hreq);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let got = &ReadResponse::decode_body(&body).unwrap().results[0].timeseries;
    assert_eq!(got.len(), 1);
    assert!(got[0].samples.is_empty());
    assert_eq!(got[0].histograms, vec![histogram]);
}

/// A streamed series: its labels and its chunks.
type StreamedSeries = (Vec<(String, String)>, Vec<promflow_remote::chunks::Chunk>);

/// The series of a streamed answer, in order, frames checked.
fn streamed_series(code: u16, body: &[u8]) -> Vec<StreamedSeries> {
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(body));
    let mut out: Vec<StreamedSeries> = Vec::new();
    for frame in promflow_remote::chunks::read_frames(body, u64::MAX).unwrap() {
        for s in frame.chunked_series {
            let labels: Vec<(String, String)> = s.labels.into_iter().map(|l| (l.name, l.value)).collect();
            match out.last_mut() {
                Some((last, chunks)) if *last == labels => chunks.extend(s.chunks),
                _ => out.push((labels, s.chunks)),
            }
        }
    }
    out
}

/// Writes `ts` to each server, then asks each for the streamed series named `name` between
/// `from` and `to`: the answers in the servers' order.
fn written_then_streamed(
    servers: &[&Server],
    ts: Vec<promflow_remote::TimeSeries>,
    name: &str,
    from: i64,
    to: i64,
) -> (Vec<StreamedSeries>, Vec<StreamedSeries>) {
    for server in servers {
        let (code, body) = remote_write(server, ts.clone());
        assert!(code / 100 == 2, "{code} {body}");
    }
    let req = ReadRequest {
        queries: vec![query(from, to, &[(MatcherType::Eq, "__name__", name)])],
        accepted_response_types: vec![1, 0],
    };
    let mut answers = servers.iter().map(|s| {
        let (code, content_type, body) = read_typed(s, &req);
        assert_eq!(content_type, promflow_remote::chunks::STREAMED_CONTENT_TYPE);
        streamed_series(code, &body)
    });
    (answers.next().unwrap(), answers.next().unwrap())
}

#[test]
fn streamed_xor_chunks_are_the_bytes_prometheus_streams() {
    let dir = tempfile::tempdir().unwrap();
    let promflow = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let Some(prom) = start_prometheus(dir.path(), "") else { return };
    // 100 samples per series inside one of Prometheus's 2 h chunk ranges (so it keeps them in
    // one head chunk, as promflow's 120-sample chunks do), with irregular steps and values,
    // so every delta-of-delta and XOR case is used
    const HOURS_2: i64 = 7_200_000;
    let from = now_ms() / HOURS_2 * HOURS_2 - HOURS_2 + 60_000;
    let ts: Vec<promflow_remote::TimeSeries> = (0..3)
        .map(|i| {
            let mut t = from;
            let points: Vec<(i64, f64)> = (0..100i64)
                .map(|j| {
                    t += [15_000, 15_000, 14_999, 16_321, 1, 15_000][(j % 6) as usize]
                        * (1 + (j % 25 == 0) as i64 * 40);
                    let v = match (i, j % 4) {
                        (0, _) => j as f64,
                        (1, 0) => 1e9 / (j + 1) as f64,
                        (1, _) => -0.125 * j as f64,
                        // pairs a hair apart: XORs with 31 or more leading zeros
                        (_, 0 | 2) => (j * j % 7) as f64,
                        _ => ((j - 1) * (j - 1) % 7) as f64 + 2f64.powi(-40),
                    };
                    (t, v)
                })
                .collect();
            series(&[("__name__", "xs"), ("i", &i.to_string())], &points)
        })
        .collect();
    let (ours, theirs) =
        written_then_streamed(&[&promflow, &prom], ts.clone(), "xs", from - HOURS_2, from + HOURS_2);
    assert_eq!(ours.len(), 3);
    for ((ol, oc), (tl, tc)) in ours.iter().zip(&theirs) {
        assert_eq!(ol, tl);
        assert_eq!(oc.len(), 1, "100 samples: one chunk");
        assert_eq!(oc, tc, "the same chunks, byte for byte, as Prometheus 2.42 streams for {ol:?}");
        let samples: Vec<(i64, f64)> =
            oc.iter().flat_map(|c| promflow_storage::decode_xor_chunk(&c.data).unwrap()).collect();
        let sent = &ts[ol[1].1.parse::<usize>().unwrap()].samples;
        assert_eq!(samples.len(), sent.len());
        assert!(samples
            .iter()
            .zip(sent)
            .all(|(a, b)| a.0 == b.timestamp && a.1.to_bits() == b.value.to_bits()));
    }
}

#[test]
fn streamed_native_histograms_are_the_float_histogram_chunks_prometheus_streams() {
    use promflow_storage::native_histogram::CounterResetHint;
    let dir = tempfile::tempdir().unwrap();
    let promflow = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let Some(prom) =
        start_prometheus_with(dir.path(), "", free_port(), &["--enable-feature=native-histograms"])
    else {
        return;
    };
    // float histograms (as recording rules and OTLP write them) with a steady layout, 100
    // samples inside one 2 h chunk range: one chunk each side, with irregular steps and
    // counts so that every XOR case is used; one series with negative buckets and a zero
    // bucket, one of custom buckets (whose samples are checked by decoding them)
    const HOURS_2: i64 = 7_200_000;
    let from = now_ms() / HOURS_2 * HOURS_2 - HOURS_2 + 60_000;
    let ts: Vec<promflow_remote::TimeSeries> = (0..2)
        .map(|i| {
            let mut t = from;
            let histograms = (0..100i64)
                .map(|j| {
                    t += [15_000, 15_000, 14_999, 16_321, 1, 15_000][(j % 6) as usize];
                    let grow = j as f64 * [1.0, 0.375][i];
                    let h = if i == 0 {
                        promflow_storage::FloatHistogram::from_buckets(
                            CounterResetHint::Unknown,
                            2,
                            2f64.powi(-128),
                            3.0 + grow,
                            12.0 + 5.0 * grow + (j % 3) as f64,
                            -7.5 + grow * 1.25,
                            vec![(-1, 1.0 + grow), (0, 2.0 + grow), (4, 1.0 + grow)],
                            vec![(3, 4.0 + grow)],
                            vec![],
                        )
                    } else {
                        promflow_storage::FloatHistogram::from_buckets(
                            CounterResetHint::Unknown,
                            promflow_storage::native_histogram::CUSTOM_BUCKETS_SCHEMA,
                            0.0,
                            0.0,
                            6.0 + 3.0 * grow,
                            1e6 + grow.sqrt(),
                            vec![(0, 1.0 + grow), (1, 2.0 + grow), (3, 3.0 + grow)],
                            vec![],
                            vec![0.1, 0.25, 1.0, 2.5],
                        )
                    };
                    promflow_remote::Histogram::from_float_histogram(t, &h.unwrap())
                })
                .collect();
            let mut s = series(&[("__name__", "hs"), ("i", &i.to_string())], &[]);
            s.histograms = histograms;
            s
        })
        .collect();
    let (ours, theirs) =
        written_then_streamed(&[&promflow, &prom], ts.clone(), "hs", from - HOURS_2, from + HOURS_2);
    assert_eq!(ours.len(), 2);
    assert_eq!(theirs.len(), 2);
    for ((ol, oc), (tl, tc)) in ours.iter().zip(&theirs) {
        assert_eq!(ol, tl);
        assert_eq!(oc.len(), 1, "100 samples of one layout: one chunk");
        assert_eq!(oc[0].r#type, promflow_remote::chunks::FLOAT_HISTOGRAM);
        if ol[1].1 == "0" {
            assert_eq!(oc, tc, "the same chunks, byte for byte, as Prometheus 2.42 streams for {ol:?}");
        } else {
            // Prometheus 2.42 predates custom buckets: its chunk leaves their bounds out of the
            // layout, which Prometheus 3 writes (and promflow does); the samples must agree
            assert_eq!((oc[0].min_time_ms, oc[0].max_time_ms), (tc[0].min_time_ms, tc[0].max_time_ms));
        }
        let decoded = promflow_storage::decode_float_histogram_chunk(&oc[0].data).unwrap();
        let sent = &ts[ol[1].1.parse::<usize>().unwrap()].histograms;
        assert_eq!(decoded.len(), sent.len());
        for (d, s) in decoded.iter().zip(sent) {
            assert_eq!(d.t, s.timestamp);
            let mut want = s.to_float_histogram().unwrap();
            want.hint = d.h.hint;
            assert!(d.h.total_cmp(&want).is_eq(), "{:?} != {want:?}", d.h);
        }
    }
}

/// `series` samples every minute over `minutes` (inclusive), ending `ago_end` minutes ago.
fn minutes(name: &str, i: &str, (ago_start, ago_end): (i64, i64), now: i64) -> promflow_remote::TimeSeries {
    let points: Vec<(i64, f64)> = (ago_end..=ago_start).rev().map(|m| (now - m * 60_000, m as f64)).collect();
    series(&[("__name__", name), ("i", i)], &points)
}

/// The value of a one-series instant query, or "" when it has none.
fn value(s: &Server, q: &str) -> (String, Vec<String>) {
    let path =
        format!("/api/v1/query?query={}", form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>());
    let (code, v) = s.get_json(&path);
    assert_eq!(code, 200, "{q}: {v}");
    let warnings =
        v["warnings"].as_array().map(|w| w.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
    let value =
        result(&v).first().map(|r| r["value"][1].as_str().unwrap_or("").to_string()).unwrap_or_default();
    (value, warnings)
}

#[test]
fn promflow_reads_native_histograms_from_prometheus_as_remote_storage() {
    let dir = tempfile::tempdir().unwrap();
    let prom_dir = dir.path().join("prom");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let Some(prom) =
        start_prometheus_with(&prom_dir, "", free_port(), &["--enable-feature=native-histograms"])
    else {
        return;
    };
    // 40 minutes of samples a minute apart, ending now: `ih` as instrumentation sends them
    // (integer counts, buckets as differences: Prometheus streams integer histogram chunks),
    // `fh` as float histograms (float histogram chunks); a counter reset halfway in `ih`
    let now = now_ms() / 60_000 * 60_000;
    let series_of = |name: &str, integer: bool| {
        let histograms = (0..40i64)
            .map(|k| {
                let t = now - (39 - k) * 60_000;
                let n = if integer && k >= 20 { k - 20 } else { k } as u64;
                let buckets = [1 + n, 2 + 3 * n, n];
                let count = buckets.iter().sum::<u64>() + n;
                let mut h = promflow_remote::Histogram {
                    sum: 0.5 * count as f64,
                    schema: 1,
                    zero_threshold: 2f64.powi(-128),
                    positive_spans: vec![
                        promflow_remote::BucketSpan { offset: -1, length: 2 },
                        promflow_remote::BucketSpan { offset: 3, length: 1 },
                    ],
                    timestamp: t,
                    ..Default::default()
                };
                if integer {
                    h.count_int = Some(count);
                    h.zero_count_int = Some(n);
                    let mut prev = 0i64;
                    h.positive_deltas = buckets
                        .iter()
                        .map(|&b| {
                            let d = b as i64 - prev;
                            prev = b as i64;
                            d
                        })
                        .collect();
                } else {
                    h.count_float = Some(count as f64 * 0.25);
                    h.zero_count_float = Some(n as f64 * 0.25);
                    h.positive_counts = buckets.iter().map(|&b| b as f64 * 0.25).collect();
                }
                h
            })
            .collect();
        let mut s = series(&[("__name__", name), ("job", "hist")], &[]);
        s.histograms = histograms;
        s
    };
    let (code, body) = remote_write(&prom, vec![series_of("ih", true), series_of("fh", false)]);
    assert!(code / 100 == 2, "{code} {body}");

    let pf_dir = dir.path().join("pf");
    std::fs::create_dir_all(&pf_dir).unwrap();
    let config = format!("remote_read:\n  - url: {}\n    name: archive\n", prom.url("/api/v1/read"));
    let promflow = start_promflow(&pf_dir, &config, &[]);
    // promflow holds nothing: every sample comes from the endpoint, as Prometheus holds it
    // (quantiles and fractions are left out: Prometheus 2.42 interpolates inside a bucket
    // linearly, Prometheus 3 and promflow exponentially)
    for q in [
        "histogram_count(ih)",
        "histogram_sum(ih)",
        "histogram_count(fh)",
        "histogram_sum(fh)",
        "histogram_count(rate(ih[10m]))",
        "histogram_count(increase(ih[30m]))",
        "histogram_sum(sum(rate(fh[10m])))",
        "count_over_time(ih[1h])",
    ] {
        let (ours, warnings) = value(&promflow, q);
        let (theirs, _) = value(&prom, q);
        assert!(warnings.is_empty(), "{q}: {warnings:?}");
        assert!(!ours.is_empty(), "{q}: no answer");
        let (a, b): (f64, f64) = (ours.parse().unwrap(), theirs.parse().unwrap());
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{q}: promflow {ours}, Prometheus {theirs}");
    }
}

#[test]
fn promflow_queries_read_prometheus_as_remote_storage() {
    let dir = tempfile::tempdir().unwrap();
    // Prometheus 2.42 holds the older history, with the external label both servers share
    let prom_dir = dir.path().join("prom");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let Some(prom) = start_prometheus(&prom_dir, "global:\n  external_labels: {region: eu}\n") else {
        return;
    };
    let now = now_ms() / 60_000 * 60_000;
    let old = vec![
        minutes("hist", "0", (50, 30), now),
        minutes("hist", "1", (50, 30), now),
        minutes("archived_only", "0", (45, 40), now),
        minutes("recent_remote", "0", (6, 5), now),
    ];
    let (code, body) = remote_write(&prom, old);
    assert!(code / 100 == 2, "{code} {body}");

    // promflow holds the last 20 minutes
    let read_config = |extra: &str| {
        format!(
            "global:\n  external_labels: {{region: eu}}\nremote_read:\n  - url: {}\n    name: archive\n{extra}",
            prom.url("/api/v1/read")
        )
    };
    let pf_dir = dir.path().join("pf");
    std::fs::create_dir_all(&pf_dir).unwrap();
    let promflow = start_promflow(&pf_dir, &read_config(""), &["--web.enable-remote-write-receiver"]);
    let local = vec![minutes("hist", "0", (20, 0), now), minutes("hist", "1", (20, 0), now)];
    let (code, body) = remote_write(&promflow, local);
    assert_eq!(code, 204, "{body}");

    // local and remote samples of the same series merge; series only the remote has appear,
    // without the external label the request added
    let (n, warnings) = value(&promflow, "count_over_time(hist{i=\"0\"}[1h])");
    assert_eq!(n, "42", "21 remote + 21 local samples");
    assert!(warnings.is_empty(), "{warnings:?}");
    let path = format!("/api/v1/query?query=archived_only&time={}", (now - 40 * 60_000) / 1000);
    let (_, v) = promflow.get_json(&path);
    let r = result(&v);
    assert_eq!(r.len(), 1, "{v}");
    assert_eq!(r[0]["metric"], serde_json::json!({"__name__": "archived_only", "i": "0"}));
    assert_eq!(value(&promflow, "count(count_over_time(hist[1h]))").0, "2");
    // without read_recent, what is newer than promflow's oldest sample is not asked for
    assert_eq!(value(&promflow, "count_over_time(recent_remote[10m])").0, "");

    // reloaded with read_recent and a required matcher: recent data comes, but only for
    // selections that carry the matcher
    std::fs::write(
        pf_dir.join("prometheus.yml"),
        read_config("    read_recent: true\n    required_matchers: {i: \"0\"}\n"),
    )
    .unwrap();
    promflow.signal("HUP");
    let recent = wait_for(Duration::from_secs(10), || {
        (value(&promflow, "count_over_time(recent_remote{i=\"0\"}[10m])").0 == "2").then_some(())
    });
    assert!(recent.is_some(), "read_recent brings the remote's recent samples");
    assert_eq!(
        value(&promflow, "count_over_time(recent_remote[10m])").0,
        "",
        "no required matcher, no remote read"
    );
    assert_eq!(
        value(&promflow, "count_over_time(hist{i=\"1\"}[1h])").0,
        "21",
        "i=1 is not sent to the endpoint"
    );

    // the endpoint gone: queries answer from local storage, with a warning naming it
    drop(prom);
    let (n, warnings) = value(&promflow, "count_over_time(hist{i=\"0\"}[1h])");
    assert_eq!(n, "21");
    assert!(warnings.iter().any(|w| w.contains("remote_read archive")), "{warnings:?}");
}
