//! End-to-end: acknowledged samples are stored, concurrent writers and head cuts included,
//! and survive `kill -9`; a torn WAL tail is cut, not fatal.

use crate::common;

use common::*;

#[test]
fn acknowledged_samples_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let base = now_ms() - 60_000;
    for batch in 0..20 {
        let samples: Vec<(i64, f64)> =
            (0..5).map(|i| (base + (batch * 5 + i) * 100, (batch * 5 + i) as f64)).collect();
        let (code, body) = remote_write(&s, vec![series(&[("__name__", "durable"), ("k", "v")], &samples)]);
        assert_eq!(code, 204, "{body}");
    }
    s.kill9();
    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, port, &[]);
    let (_, v) = s.get_json(&format!(
        "/api/v1/query?query=count_over_time(durable[1m])&time={}",
        (base + 10_000) as f64 / 1000.0
    ));
    assert_eq!(result(&v)[0]["value"][1], "100", "{v}");
}

/// Two remote-write clients, one an hour behind the other, while the head is cut into
/// blocks again and again: every sample answered 204 is stored, and survives `kill -9`.
#[test]
fn concurrent_writers_lose_no_acknowledged_sample_while_the_head_is_cut() {
    const STEP: i64 = 120_000;
    const REQUESTS: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let base = now_ms() - 24 * 3_600_000;
    let acknowledged: i64 = std::thread::scope(|scope| {
        let writers: Vec<_> = [("ahead", 0i64), ("behind", -59 * 60_000)]
            .into_iter()
            .map(|(name, lag)| {
                let s = &s;
                scope.spawn(move || {
                    let mut acked = 0;
                    for r in 0..REQUESTS {
                        let t = base + r * STEP + lag;
                        let ts: Vec<_> = (0..50)
                            .map(|i| {
                                series(
                                    &[("__name__", "rw_race"), ("writer", name), ("i", &i.to_string())],
                                    &[(t, r as f64)],
                                )
                            })
                            .collect();
                        let (code, body) = remote_write(s, ts);
                        match code {
                            204 => acked += 50,
                            400 => assert!(body.contains("out of bounds"), "{body}"),
                            _ => panic!("{code}: {body}"),
                        }
                    }
                    acked
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert!(acknowledged >= REQUESTS * 50, "too few samples acknowledged: {acknowledged}");
    let stored = |s: &Server| -> i64 {
        let (_, v) = s.get_json(&format!(
            "/api/v1/query?query=sum(count_over_time(rw_race[2d]))&time={}",
            (base + REQUESTS * STEP) as f64 / 1000.0
        ));
        result(&v)[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(stored(&s), acknowledged);
    let (_, tsdb) = s.get_json("/api/v1/status/tsdb");
    s.kill9();
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, free_port(), &[]);
    assert_eq!(stored(&s), acknowledged, "after kill -9 (before it: {tsdb})");
}

#[test]
fn torn_wal_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    let base = now_ms() - 60_000;
    let (code, _) = remote_write(&s, vec![series(&[("__name__", "keep")], &[(base, 1.0)])]);
    assert_eq!(code, 204);
    let (code, _) = remote_write(&s, vec![series(&[("__name__", "keep")], &[(base + 1000, 2.0)])]);
    assert_eq!(code, 204);
    s.kill9();
    // tear the last record in half
    let wal = dir.path().join("data/promflow/wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal).unwrap().flatten().map(|e| e.path()).collect();
    segs.sort();
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, free_port(), &[]);
    let (_, v) = s.get_json(&format!("/api/v1/query?query=keep&time={}", (base + 500) as f64 / 1000.0));
    assert_eq!(result(&v)[0]["value"][1], "1", "{v}");
    let (_, metrics) = s.get_text("/metrics");
    assert!(metrics.contains("prometheus_tsdb_wal_corruptions_total 1"), "{metrics}");
}

#[test]
fn an_unreadable_block_is_skipped_counted_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_promflow(dir.path(), "", &["--web.enable-remote-write-receiver"]);
    // five hours of samples in one request: the head spans enough to cut a block at once
    let end = now_ms() / 60_000 * 60_000;
    let samples: Vec<(i64, f64)> = (0..300).map(|i| (end - (299 - i) * 60_000, i as f64)).collect();
    assert_eq!(remote_write(&s, vec![series(&[("__name__", "blocky")], &samples)]).0, 204);
    let blocks = dir.path().join("data/promflow/blocks");
    // a block in place: a `<ULID>.tmp` directory being written has its meta file before
    // the rename, and a kill then leaves nothing to serve
    let block = wait_for(std::time::Duration::from_secs(30), || {
        std::fs::read_dir(&blocks)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_none() && p.join("meta.json").is_file())
    })
    .expect("no block was cut");
    s.kill9();
    std::fs::write(block.join("samples"), b"not samples").unwrap();
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, free_port(), &[]);
    let (_, metrics) = s.get_text("/metrics");
    assert!(metrics.contains("promflow_tsdb_unreadable_blocks 1"), "{metrics}");
    let (_, v) = s.get_json("/api/v1/status/runtimeinfo");
    assert_eq!(v["data"]["unreadableBlocks"], 1, "{v}");
}

#[test]
fn prometheus_data_directory_is_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("wal")).unwrap();
    std::fs::write(data.join("wal/00000000"), b"prometheus wal bytes").unwrap();
    std::fs::create_dir_all(data.join("01HABCDEFGHJKMNPQRSTVWXYZ0")).unwrap();
    std::fs::write(data.join("01HABCDEFGHJKMNPQRSTVWXYZ0/meta.json"), b"{\"ulid\":\"x\"}").unwrap();
    let mut s = start_promflow(dir.path(), "", &[]);
    s.signal("TERM");
    let _ = s.child.wait();
    assert_eq!(std::fs::read(data.join("wal/00000000")).unwrap(), b"prometheus wal bytes");
    assert_eq!(
        std::fs::read(data.join("01HABCDEFGHJKMNPQRSTVWXYZ0/meta.json")).unwrap(),
        b"{\"ulid\":\"x\"}"
    );
    assert!(s.logs().contains("not served"), "{}", s.logs());
}

/// Exemplars sent by remote write (1.0 and 2.0) are answered by `query_exemplars` and come
/// back from the WAL after `kill -9`.
#[test]
fn remote_written_exemplars_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage"];
    let mut s = start_promflow(dir.path(), "", &flags);
    let t = now_ms() - 10_000;
    let label = |n: &str, v: &str| promflow_remote::Label { name: n.into(), value: v.into() };
    let with_exemplar = |name: &str, trace: &str, t: i64| {
        let mut ts = series(&[("__name__", name)], &[(t, 1.0)]);
        ts.exemplars = vec![promflow_remote::Exemplar {
            labels: vec![label("trace_id", trace)],
            value: 0.5,
            timestamp: t - 1,
        }];
        ts
    };
    assert_eq!(remote_write(&s, vec![with_exemplar("v1_total", "aaa", t)]).0, 204);
    // 2.0 says how many exemplars it stored
    let v2 = promflow_remote::WriteRequestV2::from_v1(&promflow_remote::WriteRequest {
        timeseries: vec![with_exemplar("v2_total", "bbb", t + 1)],
        metadata: vec![],
    });
    let r = client()
        .post(s.url("/api/v1/write"))
        .header("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(promflow_remote::encode_v2(&v2))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers()["x-prometheus-remote-write-exemplars-written"], "1");
    let traces = |s: &Server| -> Vec<String> {
        let (_, v) = s.get_json("/api/v1/query_exemplars?query=%7B__name__%3D~%22v.*%22%7D");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}", s["seriesLabels"]["__name__"], s["exemplars"][0]["labels"]["trace_id"]))
            .collect()
    };
    let want = ["\"v1_total\" \"aaa\"", "\"v2_total\" \"bbb\""];
    assert_eq!(traces(&s), want);
    s.kill9();
    let cfg = dir.path().join("prometheus.yml");
    let s = start_promflow_with(dir.path(), &cfg, free_port(), &flags);
    assert_eq!(traces(&s), want, "after kill -9");
}
