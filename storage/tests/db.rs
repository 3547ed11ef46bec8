//! End-to-end tests of the database through its public API.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use promflow_storage::native_histogram::Span;
use promflow_storage::{
    is_stale_nan, stale_nan, CommitStats, Db, DbOptions, Error, FloatHistogram, Labels, LabelsRef, MatchOp,
    Matcher, Querier, Sample,
};

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).unwrap()
}

fn name_eq(name: &str) -> Vec<Matcher> {
    vec![m(MatchOp::Equal, "__name__", name)]
}

const ALL: (i64, i64) = (i64::MIN, i64::MAX);

fn open(dir: &Path) -> Arc<Db> {
    Db::open(dir, DbOptions::default()).unwrap()
}

fn commit(db: &Arc<Db>, samples: &[(&Labels, i64, f64)]) {
    let mut app = db.appender();
    for (l, t, v) in samples {
        app.append(l, *t, *v).unwrap();
    }
    app.commit().unwrap();
}

/// Every series with all its samples, as (labels, [(t, value bits)]).
fn dump(db: &Db) -> Vec<(Labels, Vec<(i64, u64)>)> {
    db.select(&[], ALL.0, ALL.1)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels, s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect()))
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join("promflow/wal")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Copies a directory tree (what a `kill -9` leaves on disk: everything handed to write(2)).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Path → contents of every file under `dir`, skipping `skip`.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn append_commit_query_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let up_a = ls(&[("__name__", "up"), ("job", "a")]);
    let up_b = ls(&[("__name__", "up"), ("job", "b")]);
    let reqs = ls(&[("__name__", "reqs"), ("code", "200")]);
    let mut app = db.appender();
    for t in 0..300 {
        app.append(&up_a, t * 1000, 1.0).unwrap();
        app.append(&up_b, t * 1000, t as f64).unwrap();
    }
    app.append(&reqs, 5, 0.5).unwrap();
    let st = app.commit().unwrap();
    assert_eq!((st.samples, st.new_series), (601, 3));

    let up = db.select(&name_eq("up"), ALL.0, ALL.1).unwrap();
    assert_eq!(up.len(), 2);
    assert_eq!(up[0].labels, up_a);
    assert_eq!(up[1].samples.len(), 300);
    assert_eq!(up[1].samples.view().get(299), Sample { t: 299_000, v: 299.0 });
    let mid = db.select(&name_eq("up"), 10_000, 12_000).unwrap();
    assert_eq!(
        mid[1].samples,
        vec![Sample { t: 10_000, v: 10.0 }, Sample { t: 11_000, v: 11.0 }, Sample { t: 12_000, v: 12.0 }]
            .into()
    );
    assert_eq!(db.series(&[], 0, 5).unwrap(), vec![reqs.clone(), up_a.clone(), up_b.clone()]);
    assert_eq!(db.series(&[], 6, 999).unwrap(), Vec::<Labels>::new());
    assert_eq!(db.label_names(&[], ALL.0, ALL.1).unwrap(), vec!["__name__", "code", "job"]);
    assert_eq!(db.label_names(&[], 1000, 2000).unwrap(), vec!["__name__", "job"]);
    assert_eq!(db.label_values("__name__", &[], ALL.0, ALL.1).unwrap(), vec!["reqs", "up"]);
    assert_eq!(db.label_values("job", &name_eq("up"), 0, 0).unwrap(), vec!["a", "b"]);

    let s = db.stats(10);
    assert_eq!((s.num_series, s.num_samples), (3, 601));
    // chunks of at most 120 samples or 64 bytes: up{job="a"}'s constant samples fill three
    // (120 + 120 + 60), up{job="b"}'s counting ones more, of fewer samples; one for reqs
    assert!(s.num_chunks > 7 && s.num_chunks < 3 + 300 / 10, "{}", s.num_chunks);
    assert_eq!((s.min_time, s.max_time), (Some(0), Some(299_000)));
    assert_eq!(s.series_count_by_metric, vec![("up".to_string(), 2), ("reqs".to_string(), 1)]);
    assert_eq!(s.num_label_pairs, 5);
    assert_eq!(s.wal_segments, 1);
    assert_eq!(s.wal_corruptions, 0);
}

#[test]
fn nothing_visible_before_commit_and_rollback_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let l = ls(&[("__name__", "x")]);
    let mut app = db.appender();
    app.append(&l, 1, 1.0).unwrap();
    assert!(db.select(&[], ALL.0, ALL.1).unwrap().is_empty());
    app.rollback();
    assert!(db.select(&[], ALL.0, ALL.1).unwrap().is_empty());
    assert!(db.label_names(&[], ALL.0, ALL.1).unwrap().is_empty());
    assert_eq!(db.stats(10).num_series, 0);
    drop(db);
    let db = open(dir.path());
    assert!(dump(&db).is_empty());
    // dropping an appender without commit is a rollback too
    let mut app = db.appender();
    app.append(&l, 1, 1.0).unwrap();
    drop(app);
    assert!(dump(&db).is_empty());
}

#[test]
fn out_of_order_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let l = ls(&[("__name__", "x")]);
    commit(&db, &[(&l, 100, 1.0)]);

    let mut app = db.appender();
    assert!(matches!(app.append(&l, 99, 1.0), Err(Error::OutOfOrder)));
    assert!(matches!(app.append(&l, 100, 2.0), Err(Error::DuplicateTimestamp)));
    // NaN with another payload is another value
    assert!(matches!(app.append(&l, 100, f64::NAN), Err(Error::DuplicateTimestamp)));
    // identical repeat: accepted, ignored
    app.append(&l, 100, 1.0).unwrap();
    // the batch stays usable and checks against its own samples
    app.append(&l, 110, 2.0).unwrap();
    assert!(matches!(app.append(&l, 105, 2.0), Err(Error::OutOfOrder)));
    assert!(matches!(app.append(&l, 110, 3.0), Err(Error::DuplicateTimestamp)));
    app.append(&l, 110, 2.0).unwrap();
    let st = app.commit().unwrap();
    assert_eq!((st.samples, st.new_series), (1, 0));
    assert_eq!(dump(&db)[0].1, vec![(100, 1.0f64.to_bits()), (110, 2.0f64.to_bits())]);

    // -0.0 and 0.0 differ by bits
    let z = ls(&[("__name__", "z")]);
    commit(&db, &[(&z, 1, 0.0)]);
    let mut app = db.appender();
    assert!(matches!(app.append(&z, 1, -0.0), Err(Error::DuplicateTimestamp)));
    app.rollback();
}

#[test]
fn invalid_labels_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut app = db.appender();
    assert!(matches!(app.append(&Labels::new(), 1, 1.0), Err(Error::InvalidLabels(_))));
    assert!(matches!(app.append(&ls(&[("", "v")]), 1, 1.0), Err(Error::InvalidLabels(_))));
    // only empty values: the label set is empty
    assert!(matches!(app.append(&ls(&[("a", "")]), 1, 1.0), Err(Error::InvalidLabels(_))));
    // a metric name is not required by storage
    app.append(&ls(&[("a", "b")]), 1, 1.0).unwrap();
    assert_eq!(app.commit().unwrap().samples, 1);
}

#[test]
fn staleness_markers() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let l = ls(&[("__name__", "x")]);
    let ghost = ls(&[("__name__", "ghost")]);
    let mut app = db.appender();
    // a marker for a series that does not exist: dropped
    app.append(&ghost, 1, stale_nan()).unwrap();
    app.append(&l, 1, 5.0).unwrap();
    app.append(&l, 2, stale_nan()).unwrap();
    // already stale: dropped
    app.append(&l, 3, stale_nan()).unwrap();
    let st = app.commit().unwrap();
    assert_eq!((st.samples, st.new_series), (2, 1));
    let d = db.select(&[], ALL.0, ALL.1).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].samples.len(), 2);
    assert!(is_stale_nan(d[0].samples.view().v[1]));
    // a batch that only drops produces nothing
    let mut app = db.appender();
    app.append(&l, 4, stale_nan()).unwrap();
    assert_eq!(app.commit().unwrap().samples, 0);
}

#[test]
fn reopen_replays_everything_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let special = [
        stale_nan(),
        f64::NAN,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::from_bits(0x7ff8_0000_dead_beef),
    ];
    // the head spans from the oldest timestamp on: no block is cut, so that the head alone
    // is replayed
    let open = |dir: &Path| Db::open(dir, manual(128 << 20)).unwrap();
    let before = {
        let db = open(dir.path());
        // time moves forward across series (older samples would be out of bounds); the far
        // end stays within the out-of-bounds window of the later appends
        for (t, value) in [(i64::MIN + 1, None), (0, Some(())), (1_000_000, None)] {
            for (i, v) in special.iter().enumerate() {
                let l = ls(&[("__name__", "special"), ("i", &i.to_string())]);
                commit(&db, &[(&l, t, if value.is_some() { *v } else { 1.0 + (t > 0) as i64 as f64 })]);
            }
        }
        for t in 0..500 {
            commit(&db, &[(&ls(&[("__name__", "load"), ("k", "v")]), t, t as f64 / 3.0)]);
        }
        db.close().unwrap();
        dump(&db)
    };
    let db = open(dir.path());
    assert_eq!(dump(&db), before);
    assert_eq!(db.stats(1).num_samples, 18 + 500);
    // appending continues where it left off, with new series getting fresh refs
    let l = ls(&[("__name__", "load"), ("k", "v")]);
    let mut app = db.appender();
    assert!(matches!(app.append(&l, 499, 0.0), Err(Error::DuplicateTimestamp)));
    app.append(&l, 500, 1.0).unwrap();
    app.append(&ls(&[("__name__", "after")]), 1, 1.0).unwrap();
    assert_eq!(app.commit().unwrap().new_series, 1);
    let before = dump(&db);
    drop(db);
    let db = open(dir.path());
    assert_eq!(dump(&db), before);
    assert_eq!(db.stats(1).num_series, 8);
}

#[test]
fn crash_without_close_keeps_committed_samples() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let l = ls(&[("__name__", "x")]);
    for t in 0..100 {
        commit(&db, &[(&l, t, t as f64)]);
    }
    let mut pending = db.appender();
    pending.append(&l, 1000, 1.0).unwrap();
    // "kill -9": no close, no drop; the files are copied as they are
    let crashed = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), crashed.path());
    let db2 = open(crashed.path());
    let d = dump(&db2);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1.len(), 100);
    assert_eq!(db2.stats(1).wal_corruptions, 0);
    pending.rollback();
    std::mem::forget(db);
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert!(matches!(Db::open(dir.path(), DbOptions::default()), Err(Error::Locked(_))));
    drop(db);
    open(dir.path());
}

fn write_history(dir: &Path, opts: DbOptions, n: i64) -> Vec<(Labels, Vec<(i64, u64)>)> {
    let db = Db::open(dir, opts).unwrap();
    for t in 0..n {
        let l = ls(&[("__name__", "h"), ("s", &(t % 3).to_string())]);
        commit(&db, &[(&l, t, t as f64)]);
    }
    dump(&db)
}

#[test]
fn torn_tail_is_truncated_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_history(dir.path(), DbOptions::default(), 30);
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();

    let db = open(dir.path());
    let s = db.stats(1);
    assert_eq!(s.wal_corruptions, 1);
    assert!(s.wal_truncated_bytes > 0);
    // only the last commit is lost
    let d = dump(&db);
    assert_eq!(d.iter().map(|x| x.1.len()).sum::<usize>(), 29);
    assert_eq!(d[0].1, full[0].1);
    assert_eq!(d[1].1, full[1].1);
    // the log keeps working after the truncation
    commit(&db, &[(&ls(&[("__name__", "h"), ("s", "2")]), 29, 1.0)]);
    drop(db);
    let db = open(dir.path());
    assert_eq!(db.stats(1).wal_corruptions, 0);
    assert_eq!(db.stats(1).num_samples, 30);
}

#[test]
fn flipped_byte_is_truncated_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), DbOptions::default(), 30);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let db = open(dir.path());
    let s = db.stats(1);
    assert_eq!(s.wal_corruptions, 1);
    let kept = std::fs::metadata(&seg).unwrap().len();
    assert!(kept <= at as u64);
    assert_eq!(s.wal_truncated_bytes, bytes.len() as u64 - kept);
    // the samples before the damage are intact and in order
    let d = dump(&db);
    let n: usize = d.iter().map(|x| x.1.len()).sum();
    assert!(n > 10 && n < 30, "{n}");
    let mut ts: Vec<i64> = d.iter().flat_map(|x| x.1.iter().map(|s| s.0)).collect();
    ts.sort();
    assert_eq!(ts, (0..n as i64).collect::<Vec<_>>());
}

#[test]
fn segments_are_cut_at_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { segment_size: 64, ..DbOptions::default() };
    let full = write_history(dir.path(), opts.clone(), 60);
    let segs = segments(dir.path());
    assert!(segs.len() > 5, "{} segments", segs.len());
    assert_eq!(segs[0].file_name().unwrap(), "00000001");
    assert_eq!(segs[1].file_name().unwrap(), "00000002");
    for s in &segs[..segs.len() - 1] {
        assert!(std::fs::metadata(s).unwrap().len() <= 64);
    }
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(dump(&db), full);
    assert_eq!(db.stats(1).wal_segments, segs.len() as u64);

    // a commit bigger than a segment still goes in as one piece
    let l = ls(&[("__name__", "big")]);
    let mut app = db.appender();
    for t in 0..100 {
        app.append(&l, t, 1.0).unwrap();
    }
    app.commit().unwrap();
    drop(db);
    let db = open(dir.path());
    assert_eq!(db.select(&name_eq("big"), ALL.0, ALL.1).unwrap()[0].samples.len(), 100);
}

#[test]
fn corrupt_middle_segment_keeps_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { segment_size: 256, ..DbOptions::default() };
    write_history(dir.path(), opts.clone(), 60);
    let segs = segments(dir.path());
    let mid = &segs[segs.len() / 2];
    let mut bytes = std::fs::read(mid).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(mid, &bytes).unwrap();
    let db = Db::open(dir.path(), opts).unwrap();
    let s = db.stats(1);
    assert_eq!(s.wal_corruptions, 1);
    // the latest sample lives in the last segment and survived
    assert_eq!(s.max_time, Some(59));
    assert!(s.num_samples < 60 && s.num_samples > 50);
}

#[test]
fn matchers_of_all_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = ls(&[("__name__", "http"), ("code", "200"), ("env", "prod")]);
    let b = ls(&[("__name__", "http"), ("code", "500"), ("env", "dev")]);
    let c = ls(&[("__name__", "http"), ("code", "404")]);
    let d = ls(&[("__name__", "cpu"), ("env", "prod")]);
    commit(&db, &[(&a, 1, 1.0), (&b, 1, 1.0), (&c, 1, 1.0), (&d, 1, 1.0)]);
    let q = |ms: Vec<Matcher>| db.series(&ms, ALL.0, ALL.1).unwrap();
    assert_eq!(q(name_eq("http")), vec![a.clone(), c.clone(), b.clone()]);
    assert_eq!(
        q(vec![m(MatchOp::Equal, "__name__", "http"), m(MatchOp::NotEqual, "code", "200")]),
        vec![c.clone(), b.clone()]
    );
    assert_eq!(q(vec![m(MatchOp::Regex, "code", "2..|5..")]), vec![a.clone(), b.clone()]);
    assert_eq!(q(vec![m(MatchOp::Regex, "code", "2")]), Vec::<Labels>::new());
    assert_eq!(
        q(vec![m(MatchOp::NotRegex, "code", "[24].*"), m(MatchOp::Equal, "__name__", "http")]),
        vec![b.clone()]
    );
    assert_eq!(q(vec![m(MatchOp::Equal, "env", ""), m(MatchOp::Regex, "__name__", ".+")]), vec![c.clone()]);
    assert_eq!(q(vec![m(MatchOp::NotEqual, "env", "")]), vec![d.clone(), b.clone(), a.clone()].tap_sort());
    assert_eq!(q(vec![m(MatchOp::Regex, "env", "prod|")]), vec![d.clone(), a.clone(), c.clone()].tap_sort());
    assert_eq!(q(vec![m(MatchOp::NotRegex, "__name__", "cpu")]).len(), 3);
    assert!(matches!(Matcher::new(MatchOp::Regex, "a", "("), Err(Error::InvalidRegex(..))));
}

trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<Labels> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}

#[test]
fn prometheus_data_dir_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("wal/checkpoint.00000002")).unwrap();
    std::fs::write(p.join("wal/00000003"), b"prometheus wal bytes").unwrap();
    std::fs::write(p.join("wal/checkpoint.00000002/00000000"), b"cp").unwrap();
    std::fs::create_dir_all(p.join("chunks_head")).unwrap();
    std::fs::write(p.join("chunks_head/000001"), [0x01, 0x30, 0xbc, 0x91]).unwrap();
    std::fs::create_dir_all(p.join("01HZZZZZZZZZZZZZZZZZZZZZZZ/chunks")).unwrap();
    std::fs::write(p.join("01HZZZZZZZZZZZZZZZZZZZZZZZ/meta.json"), br#"{"version":1}"#).unwrap();
    std::fs::write(p.join("01HZZZZZZZZZZZZZZZZZZZZZZZ/index"), b"idx").unwrap();
    std::fs::write(p.join("01HZZZZZZZZZZZZZZZZZZZZZZZ/chunks/000001"), b"chk").unwrap();
    std::fs::write(p.join("lock"), b"").unwrap();
    std::fs::write(p.join("queries.active"), b"[]").unwrap();
    let before = snapshot(p, &p.join("promflow"));

    let db = open(p);
    commit(&db, &[(&ls(&[("__name__", "x")]), 1, 1.0)]);
    db.close().unwrap();
    drop(db);
    let db = open(p);
    assert_eq!(db.stats(1).num_samples, 1);
    drop(db);

    assert_eq!(snapshot(p, &p.join("promflow")), before);
    assert!(p.join("promflow/wal/00000001").is_file());
}

#[test]
fn feed_delivers_committed_batches_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rx = db.subscribe();
    let gone = db.subscribe();
    drop(gone);
    let a = ls(&[("__name__", "a")]);
    let b = ls(&[("__name__", "b")]);

    let mut app = db.appender();
    app.append(&a, 1, 1.0).unwrap();
    app.rollback();
    assert!(rx.try_recv().is_err());

    let mut app = db.appender();
    app.append(&a, 1, 1.0).unwrap();
    app.append(&b, 1, 2.0).unwrap();
    app.append(&a, 2, 3.0).unwrap();
    assert!(rx.try_recv().is_err(), "nothing before commit");
    app.commit().unwrap();
    commit(&db, &[(&b, 5, 5.0)]);

    let first = rx.try_recv().unwrap();
    let got: Vec<(Labels, Sample)> =
        first.samples.iter().map(|(id, s)| ((*first.labels(*id).unwrap()).clone(), *s)).collect();
    assert_eq!(
        got,
        vec![
            (a.clone(), Sample { t: 1, v: 1.0 }),
            (b.clone(), Sample { t: 1, v: 2.0 }),
            (a.clone(), Sample { t: 2, v: 3.0 })
        ]
    );
    // samples name their series by id; the batch carries the labels of those it created
    assert_eq!(first.samples[0].0, first.samples[2].0);
    assert_eq!(first.created.len(), 2);
    let second = rx.try_recv().unwrap();
    assert_eq!(second.samples.len(), 1);
    assert!(second.created.is_empty(), "b was created by the first batch");
    // its labels come from storage
    assert_eq!(*second.labels(second.samples[0].0).unwrap(), b);
    assert!(rx.try_recv().is_err());

    // a batch that stores nothing is not sent
    commit(&db, &[(&b, 5, 5.0)]);
    assert!(rx.try_recv().is_err());
}

#[test]
fn concurrent_commit_makes_pending_sample_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let l = ls(&[("__name__", "race")]);
    let mut slow = db.appender();
    slow.append(&l, 10, 1.0).unwrap();
    slow.append(&l, 30, 3.0).unwrap();
    commit(&db, &[(&l, 20, 2.0)]);
    // t=10 is now out of order: refused, counted and said; t=30 lands on the existing series
    match slow.commit() {
        Err(Error::Refused { refused: 1, staged: 2, stored: 1, reason }) => {
            assert!(matches!(*reason, Error::OutOfOrder), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let s = db.stats(1);
    assert_eq!((s.num_series, s.num_samples, s.commit_refused_samples), (1, 2, 1));
    drop(db);
    let db = open(dir.path());
    assert_eq!(dump(&db)[0].1, vec![(20, 2.0f64.to_bits()), (30, 3.0f64.to_bits())]);
}

#[test]
fn bounds_moved_by_another_commit_do_not_refuse_a_staged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let (a, b) = (ls(&[("__name__", "a")]), ls(&[("__name__", "b")]));
    let mut slow = db.appender();
    slow.append(&a, 0, 1.0).unwrap();
    // another writer moves the head's newest sample two hours on: t=0 is now out of bounds
    // for a new append, but this one was accepted when the head took it
    commit(&db, &[(&b, 2 * HOUR, 2.0)]);
    assert!(matches!(db.appender().append(&a, 1, 1.0), Err(Error::OutOfBounds)));
    assert_eq!(slow.commit().unwrap().samples, 1);
    drop(db);
    let db = open(dir.path());
    assert_eq!(dump(&db)[0], (a, vec![(0, 1.0f64.to_bits())]));
}

#[test]
fn a_head_cut_waits_for_an_appender_with_samples_in_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    let (a, b) = (ls(&[("__name__", "a")]), ls(&[("__name__", "b")]));
    commit(&db, &[(&b, 0, 0.0)]);
    let mut slow = db.appender();
    slow.append(&a, 1000, 1.0).unwrap();
    // the head now spans two blocks: [0, 2h) is cut while `slow` holds a sample in it
    commit(&db, &[(&b, 4 * HOUR, 4.0)]);
    let cutter = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || db.compact().unwrap())
    };
    // the cut cannot finish while `slow` is open (bounded: it gives up after 30 s)
    std::thread::sleep(Duration::from_millis(300));
    assert!(!cutter.is_finished(), "the cut did not wait for the open appender");
    assert_eq!(slow.commit().unwrap().samples, 1);
    let report = cutter.join().unwrap();
    assert!(report.head_blocks >= 1, "{report:?}");
    let blocks = db.blocks();
    assert_eq!((blocks[0].min_time, blocks[0].max_time), (0, 2 * HOUR));
    assert_eq!(blocks[0].num_samples, 2, "the block holds the staged sample");
    let want = vec![
        (a.clone(), vec![(1000, 1.0f64.to_bits())]),
        (b.clone(), vec![(0, 0), (4 * HOUR, 4.0f64.to_bits())]),
    ];
    assert_eq!(dump(&db), want);
    drop(db);
    assert_eq!(dump(&Db::open(dir.path(), manual(1 << 20)).unwrap()), want);
}

#[test]
fn a_sample_committed_during_a_cut_before_its_planned_range_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    let (a, b) = (ls(&[("__name__", "a")]), ls(&[("__name__", "b")]));
    commit(&db, &[(&b, 2 * HOUR, 2.0)]);
    // admitted: within an hour of the newest sample, and older than anything in the head
    let mut slow = db.appender();
    slow.append(&a, 3 * HOUR / 2, 1.5).unwrap();
    commit(&db, &[(&b, 5 * HOUR + 1, 5.0)]);
    // the cut plans [2h, 4h) from the head's oldest sample, then waits for `slow`
    let cutter = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || db.compact().unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(slow.commit().unwrap().samples, 1);
    cutter.join().unwrap();
    let want = vec![
        (a.clone(), vec![(3 * HOUR / 2, 1.5f64.to_bits())]),
        (b.clone(), vec![(2 * HOUR, 2.0f64.to_bits()), (5 * HOUR + 1, 5.0f64.to_bits())]),
    ];
    assert_eq!(dump(&db), want);
    drop(db);
    assert_eq!(dump(&Db::open(dir.path(), manual(1 << 20)).unwrap()), want);
}

#[test]
fn an_appender_a_head_cut_stopped_waiting_for_is_refused_what_the_cut_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { cut_waits_for_appenders: Duration::from_millis(100), ..manual(1 << 20) };
    let db = Db::open(dir.path(), opts).unwrap();
    let (a, b) = (ls(&[("__name__", "a")]), ls(&[("__name__", "b")]));
    commit(&db, &[(&b, 0, 0.0)]);
    let mut stale = db.appender();
    stale.append(&a, 1000, 1.0).unwrap();
    stale.append(&a, 3 * HOUR, 3.0).unwrap();
    commit(&db, &[(&b, 4 * HOUR, 4.0)]);
    db.compact().unwrap();
    // [0, 2h) is in a block and out of the head: t=1000 cannot be stored any more, and the
    // commit says so instead of answering success
    match stale.commit() {
        Err(Error::Refused { refused: 1, staged: 2, stored: 1, reason }) => {
            assert!(matches!(*reason, Error::OutOfBounds), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(dump(&db)[0], (a, vec![(3 * HOUR, 3.0f64.to_bits())]));
}

#[test]
fn a_series_removed_by_a_cut_while_a_batch_holds_it_is_created_again_from_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    let (a, b, c) = (ls(&[("__name__", "a")]), ls(&[("__name__", "b")]), ls(&[("__name__", "c")]));
    commit(&db, &[(&a, 1000, 1.0), (&b, 1000, 1.0), (&c, 2 * HOUR + 1000, 2.0)]);
    // both find their series in the head
    let mut late_a = db.appender();
    late_a.append(&a, 3 * HOUR, 3.0).unwrap();
    let mut late_c = db.appender();
    late_c.append(&c, 7 * HOUR, 7.0).unwrap();

    // [0, 2h) is cut: `a` is left without samples in the head and removed
    commit(&db, &[(&b, 4 * HOUR, 4.0)]);
    assert!(db.compact().unwrap().head_blocks >= 1);
    assert_eq!(late_a.commit().unwrap(), CommitStats { samples: 1, new_series: 1 });
    let a_now = vec![(1000, 1.0f64.to_bits()), (3 * HOUR, 3.0f64.to_bits())];
    assert_eq!(dump(&db)[0], (a.clone(), a_now.clone()));

    // `c` is removed by the next cut, and the cut after forgets its labels: the batch's
    // sample cannot be stored, and the refusal is one a sender retries (not a 400)
    commit(&db, &[(&b, 6 * HOUR, 6.0)]);
    db.compact().unwrap();
    commit(&db, &[(&b, 8 * HOUR, 8.0)]);
    db.compact().unwrap();
    match late_c.commit() {
        Err(e @ Error::Refused { refused: 1, staged: 1, stored: 0, .. }) => {
            assert!(!e.is_sample_error(), "{e}");
            assert!(
                matches!(e, Error::Refused { ref reason, .. } if matches!(**reason, Error::SeriesRemoved))
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // sent again, it is stored
    commit(&db, &[(&c, 7 * HOUR, 7.0)]);
    let want_c = (c.clone(), vec![(2 * HOUR + 1000, 2.0f64.to_bits()), (7 * HOUR, 7.0f64.to_bits())]);
    assert_eq!(dump(&db)[2], want_c);
    drop(db);
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    assert_eq!(dump(&db)[0], (a, a_now));
    assert_eq!(dump(&db)[2], want_c);
}

#[test]
fn stale_series_are_taken_out_of_the_head_into_blocks_and_stay_out_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    let pods: Vec<Labels> = (0..10).map(|i| ls(&[("__name__", "up"), ("pod", &i.to_string())])).collect();
    // an hour of samples across the 2h block boundary; six pods then go away
    let (from, to) = (90 * 60_000, 150 * 60_000);
    for t in (from..=to).step_by(15_000) {
        let v = (t / 1000) as f64 * 0.5;
        commit(&db, &pods.iter().map(|p| (p, t, v)).collect::<Vec<_>>());
    }
    let gone = to + 15_000;
    let last: Vec<(&Labels, i64, f64)> =
        pods.iter().enumerate().map(|(i, p)| (p, gone, if i < 6 { stale_nan() } else { 1.0 })).collect();
    commit(&db, &last);
    let before = dump(&db);
    assert_eq!(db.stats(0).num_stale_series, 6);

    db.set_stale_series_compaction_threshold(0.7);
    assert_eq!(db.compact().unwrap().stale_series_removed, 0, "6 of 10 is below 0.7");
    db.set_stale_series_compaction_threshold(0.5);
    let report = db.compact().unwrap();
    assert_eq!((report.stale_series_removed, report.head_blocks), (6, 0), "{report:?}");
    let stats = db.stats(0);
    assert_eq!((stats.num_series, stats.num_stale_series), (4, 0));
    let blocks = db.blocks();
    let ranges: Vec<_> =
        blocks.iter().map(|b| (b.min_time, b.max_time, b.num_series, b.from_stale_series)).collect();
    assert_eq!(ranges, vec![(0, 2 * HOUR, 6, true), (2 * HOUR, 4 * HOUR, 6, true)]);
    assert_eq!(dump(&db), before, "blocks and head answer what the head alone did");

    // the blocks do not move the head's lower bound: the live pods go on, before and after
    // a restart, which does not bring the removed series back
    commit(&db, &[(&pods[7], gone + 15_000, 2.0)]);
    let before = dump(&db);
    drop(db);
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    assert_eq!(db.stats(0).num_series, 4);
    assert_eq!(dump(&db), before);
    commit(&db, &[(&pods[8], gone + 30_000, 3.0)]);
    // a pod that comes back is a new head series beside its samples in the blocks
    commit(&db, &[(&pods[0], gone + 30_000, 5.0)]);
    assert_eq!(db.stats(0).num_series, 5);
    let pod0 = db.select(&[m(MatchOp::Equal, "pod", "0")], ALL.0, ALL.1).unwrap();
    assert_eq!(pod0[0].samples.len(), 241 + 1 + 1);

    // once the head cuts their ranges, the stale-series blocks are merged with the cut's
    let mut t = gone + 45_000;
    while t < 6 * HOUR {
        commit(&db, &pods[6..].iter().map(|p| (p, t, 1.0)).collect::<Vec<_>>());
        t += 15 * 60_000;
    }
    let before = dump(&db);
    let report = db.compact().unwrap();
    assert_eq!((report.head_blocks, report.merged_blocks), (2, 2), "{report:?}");
    let blocks = db.blocks();
    assert!(blocks.iter().all(|b| !b.from_stale_series), "{blocks:?}");
    assert_eq!(
        blocks.iter().map(|b| (b.min_time, b.max_time)).collect::<Vec<_>>(),
        [(0, 2 * HOUR), (2 * HOUR, 4 * HOUR)]
    );
    assert_eq!(dump(&db), before);
    drop(db);
    assert_eq!(dump(&Db::open(dir.path(), manual(1 << 20)).unwrap()), before);
}

#[test]
fn series_prepared_ahead_take_their_samples_as_if_appended_by_labels() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let (a, b) = (ls(&[("__name__", "a"), ("job", "x")]), ls(&[("__name__", "b")]));
    commit(&db, &[(&a, 1000, 1.0)]);
    let ba: Vec<(&str, &str)> = a.iter().map(|x| (x.name.as_str(), x.value.as_str())).collect();
    let bb: Vec<(&str, &str)> = b.iter().map(|x| (x.name.as_str(), x.value.as_str())).collect();
    let (ra, rb) = (LabelsRef::from_normalized(&ba).unwrap(), LabelsRef::from_normalized(&bb).unwrap());

    let mut app = db.appender();
    // `a` is in the head; `b` is not; `a` again is left to `append_ref`
    let prepared = app.prepare_refs(&[ra, rb, ra]);
    assert!(prepared[0].is_some() && prepared[1].is_none() && prepared[2].is_none(), "{prepared:?}");
    let pa = prepared[0].unwrap();
    app.append_prepared(pa, 2000, 2.0).unwrap();
    assert!(matches!(app.append_prepared(pa, 1500, 9.0), Err(Error::OutOfOrder)));
    app.append_ref(ra, 3000, 3.0).unwrap();
    app.append_ref(rb, 3000, 4.0).unwrap();
    assert_eq!(app.commit().unwrap(), CommitStats { samples: 3, new_series: 1 });
    // another appender, even one whose batch is as long, refuses it
    let mut other = db.appender();
    assert_eq!(other.prepare_refs(&[ra]).len(), 1);
    assert!(matches!(other.append_prepared(pa, 4000, 4.0), Err(Error::NotPrepared)));
    other.rollback();
    let want = vec![
        (a, vec![(1000, 1.0f64.to_bits()), (2000, 2.0f64.to_bits()), (3000, 3.0f64.to_bits())]),
        (b, vec![(3000, 4.0f64.to_bits())]),
    ];
    assert_eq!(dump(&db), want);
}

#[test]
fn concurrent_appenders_from_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rx = db.subscribe();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let own = ls(&[("__name__", "t"), ("thread", &i.to_string())]);
                let shared = ls(&[("__name__", "shared")]);
                for t in 0..200 {
                    let mut app = db.appender();
                    app.append(&own, t, i as f64).unwrap();
                    // the shared series races: a late sample is refused at append or at
                    // commit, and the commit says so
                    let _ = app.append(&shared, t, 0.0);
                    match app.commit() {
                        Ok(_) | Err(Error::Refused { refused: 1, stored: 1, .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = db.stats(10);
    assert_eq!(s.num_series, 5);
    let fed: usize = rx.try_iter().map(|b| b.samples.len()).sum();
    assert_eq!(fed as u64, s.num_samples);
    let before = dump(&db);
    for (_, samples) in &before {
        assert!(samples.windows(2).all(|w| w[0].0 < w[1].0));
    }
    drop(db);
    assert_eq!(dump(&open(dir.path())), before);
}

/// Options for tests that drive compaction by hand.
fn manual(segment_size: u64) -> DbOptions {
    DbOptions { segment_size, compaction_interval: None, ..DbOptions::default() }
}

const HOUR: i64 = 3600 * 1000;

/// Appends `hours` of 15 s samples for `n` series, one commit per timestamp, so the head
/// grows the way scrapes grow it. Values mix decimals, full-precision floats and a staleness
/// marker.
fn ingest(db: &Arc<Db>, n: usize, from: i64, hours: i64) {
    let series: Vec<Labels> = (0..n).map(|i| ls(&[("__name__", "m"), ("i", &i.to_string())])).collect();
    let mut t = from;
    while t < from + hours * HOUR {
        let mut app = db.appender();
        for (i, l) in series.iter().enumerate() {
            let v = match i % 3 {
                0 => (t / 15_000) as f64 * 0.25,
                1 => ((t as f64) / 7.0).sin(),
                _ if t % (5 * HOUR) == 0 => stale_nan(),
                _ => 1e6 + (t / 1000) as f64,
            };
            app.append(l, t, v).unwrap();
        }
        app.commit().unwrap();
        t += 15_000;
    }
}

#[test]
fn a_head_reaching_back_to_the_oldest_timestamp_is_cut_and_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    commit(&db, &[(&ls(&[("__name__", "old")]), i64::MIN + 1, 1.0)]);
    ingest(&db, 2, 0, 4);
    let before = dump(&db);
    let report = db.compact().unwrap();
    assert!(report.head_blocks >= 1, "{report:?}");
    assert_eq!(db.blocks()[0].min_time, i64::MIN);
    assert_eq!(dump(&db), before);
}

#[test]
fn a_backfill_is_cut_into_blocks_as_it_goes_not_at_the_compactors_next_round() {
    let dir = tempfile::tempdir().unwrap();
    // a compactor that would not run by itself during this test
    let opts = DbOptions { compaction_interval: Some(Duration::from_secs(3600)), ..DbOptions::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    ingest(&db, 5, 0, 4);
    // the head spans 4h > 1.5 blocks: the commit that made it so woke the compactor
    let cut = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !db.blocks().is_empty()
    });
    assert!(cut, "no block was cut within 5 s");
    assert_eq!((db.blocks()[0].min_time, db.blocks()[0].max_time), (0, 2 * HOUR));
}

#[test]
fn head_is_cut_into_blocks_and_answers_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(16 << 10)).unwrap();
    ingest(&db, 20, 0, 7);
    let before = dump(&db);
    let wal_before = segments(dir.path()).len();
    let report = db.compact().unwrap();
    // 7h of head: [0,2h) and [2h,4h) are cut (the head keeps more than 1.5 blocks otherwise)
    assert_eq!(report.head_blocks, 2, "{report:?}");
    assert!(report.wal_segments_deleted > 0, "{report:?}");
    assert!(segments(dir.path()).len() < wal_before);
    let blocks = db.blocks();
    assert_eq!(blocks.len(), 2);
    assert_eq!((blocks[0].min_time, blocks[0].max_time), (0, 2 * HOUR));
    assert_eq!(dump(&db), before, "head + blocks answer what the head alone did");
    assert_eq!(db.stats(10).min_time, Some(4 * HOUR));
    // a lookup's cost: in the head and each block in range, its lists and the shortest again
    let all_time = (0, 7 * HOUR);
    assert_eq!(db.lookup_cost(&name_eq("m"), all_time.0, all_time.1), Some(3 * (20 + 20)));
    let one = [m(MatchOp::Equal, "__name__", "m"), m(MatchOp::Equal, "i", "3")];
    assert_eq!(db.lookup_cost(&one, all_time.0, all_time.1), Some(3 * (20 + 1 + 1)));
    assert_eq!(db.lookup_cost(&name_eq("m"), 5 * HOUR, 6 * HOUR), Some(20 + 20), "the head alone");
    assert_eq!(db.lookup_cost(&[m(MatchOp::Regex, "i", "1.*")], all_time.0, all_time.1), None);
    // the cut range no longer takes samples
    let mut app = db.appender();
    assert!(matches!(app.append(&ls(&[("__name__", "m"), ("i", "0")]), HOUR, 1.0), Err(Error::OutOfBounds)));
    app.rollback();
    drop(db);

    let db = Db::open(dir.path(), manual(64 << 10)).unwrap();
    assert_eq!(dump(&db), before, "restart: checkpoint + kept segments + blocks");
    // more data: blocks [4h,6h) follows, and the three 2h blocks are merged into one 6h block
    ingest(&db, 20, 7 * HOUR, 2);
    let all = dump(&db);
    let report = db.compact().unwrap();
    assert_eq!(report.head_blocks, 1, "{report:?}");
    assert_eq!(report.merged_blocks, 1, "{report:?}");
    let blocks = db.blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].min_time, blocks[0].max_time, blocks[0].level), (0, 6 * HOUR, 2));
    assert_eq!(dump(&db), all);
    let m5 = db.select(&[m(MatchOp::Regex, "i", "1|4")], 5 * HOUR, 5 * HOUR + 15_000).unwrap();
    assert_eq!(m5.len(), 2);
    assert_eq!(m5[0].samples.len(), 2);
}

#[test]
fn merges_stop_at_the_max_block_duration() {
    let dir = tempfile::tempdir().unwrap();
    // 2h blocks may merge into 6h ones but never into 18h: the max is below it
    let opts = DbOptions { max_block_duration: 12 * HOUR, ..manual(1 << 20) };
    let db = Db::open(dir.path(), opts).unwrap();
    ingest(&db, 2, 0, 22);
    db.compact().unwrap();
    db.compact().unwrap();
    let blocks = db.blocks();
    assert!(blocks.len() >= 3, "{blocks:?}");
    assert!(blocks.iter().all(|b| b.max_time - b.min_time <= 6 * HOUR), "{blocks:?}");
    assert!(blocks.iter().any(|b| b.max_time - b.min_time == 6 * HOUR), "{blocks:?}");
}

#[test]
fn retention_deletes_whole_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { retention_time: Some(3 * HOUR), ..manual(1 << 20) };
    let db = Db::open(dir.path(), opts).unwrap();
    ingest(&db, 3, 0, 9);
    let report = db.compact().unwrap();
    // blocks [0,2h) [2h,4h) [4h,6h) are cut, merged to [0,6h), which is 0h behind the newest
    // end: kept; then nothing is old enough yet
    assert_eq!(report.deleted_blocks, 0, "{report:?}");
    ingest(&db, 3, 9 * HOUR, 8);
    let report = db.compact().unwrap();
    assert!(report.deleted_blocks >= 1, "{report:?}");
    let blocks = db.blocks();
    let newest = blocks.iter().map(|b| b.max_time).max().unwrap();
    assert!(blocks.iter().all(|b| newest - b.max_time <= 3 * HOUR), "{blocks:?}");
    assert!(db.select(&name_eq("m"), 0, HOUR).unwrap().is_empty());
}

#[test]
fn deleted_series_stay_deleted_across_restart_compaction_and_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(64 << 10)).unwrap();
    ingest(&db, 6, 0, 7);
    db.compact().unwrap();
    assert_eq!(db.blocks().len(), 2);
    // series 1 loses [1h, 5h]: in a block, across the block boundary, and in the head
    let victim = [m(MatchOp::Equal, "i", "1")];
    assert_eq!(db.delete_series(&victim, HOUR, 5 * HOUR).unwrap(), 3);
    let check = |db: &Db| {
        let s = db.select(&victim, ALL.0, ALL.1).unwrap();
        assert!(s[0].samples.iter().all(|x| x.t < HOUR || x.t > 5 * HOUR));
        assert_eq!(s[0].samples.len(), ((7 * HOUR - 4 * HOUR) / 15_000) as usize - 1);
        let other = db.select(&[m(MatchOp::Equal, "i", "0")], ALL.0, ALL.1).unwrap();
        assert_eq!(other[0].samples.len(), (7 * HOUR / 15_000) as usize);
        // a series fully deleted in a range is not listed there
        assert!(db.series(&victim, 2 * HOUR, 3 * HOUR).unwrap().is_empty());
    };
    check(&db);
    drop(db);
    let db = Db::open(dir.path(), manual(64 << 10)).unwrap();
    check(&db);
    assert_eq!(db.clean_tombstones().unwrap(), 2);
    check(&db);
    let snap = db.snapshot("snap-1", false).unwrap();
    let before = dump(&db);
    drop(db);
    let db = Db::open(dir.path(), manual(64 << 10)).unwrap();
    check(&db);
    drop(db);
    let copy = Db::open(&snap, manual(64 << 10)).unwrap();
    assert_eq!(dump(&copy), before, "a snapshot serves the same data");
}

#[test]
fn series_lookups_over_whole_blocks_answer_from_the_cache_until_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(64 << 10)).unwrap();
    ingest(&db, 6, 0, 7);
    db.compact().unwrap();
    assert_eq!(db.blocks().len(), 2, "blocks [0, 2h) and [2h, 4h), the head from 4h");
    let cache_counts = |db: &Db| {
        let mut w = promflow_storage::MetricsWriter::new();
        db.write_metrics(&mut w);
        let text = w.finish();
        let count = |name: &str| -> u64 {
            text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap()
        };
        (count("promflow_tsdb_lookup_cache_hits_total "), count("promflow_tsdb_lookup_cache_misses_total "))
    };
    let blocks_only = (0, 4 * HOUR - 1);
    let all = db.series(&name_eq("m"), blocks_only.0, blocks_only.1).unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(db.series(&name_eq("m"), blocks_only.0, blocks_only.1).unwrap(), all);
    assert_eq!(cache_counts(&db), (1, 1), "the second lookup answers from the cache");
    // over every sample: the head's part is read and joined to the blocks' cached part
    assert_eq!(db.series(&name_eq("m"), ALL.0, ALL.1).unwrap(), all);
    assert_eq!(cache_counts(&db), (2, 1), "the same blocks, covered whole, with the head");
    // a range that cuts through both blocks reads their indexes
    assert_eq!(db.series(&name_eq("m"), HOUR, 3 * HOUR).unwrap(), all);
    assert_eq!(cache_counts(&db), (2, 1), "[1h, 3h] covers no block whole");
    // other matchers are another entry
    let one = [m(MatchOp::Equal, "__name__", "m"), m(MatchOp::Equal, "i", "4")];
    assert_eq!(db.series(&one, blocks_only.0, blocks_only.1).unwrap(), vec![all[4].clone()]);
    assert_eq!(cache_counts(&db), (2, 2));
    // a deletion adds tombstones, and the blocks' kept answer is not used again
    assert_eq!(db.delete_series(&[m(MatchOp::Equal, "i", "1")], 0, 4 * HOUR).unwrap(), 3);
    let left = db.series(&name_eq("m"), blocks_only.0, blocks_only.1).unwrap();
    assert_eq!(left.len(), 5, "{left:?}");
    assert!(!left.iter().any(|l| l.get("i") == "1"));
    assert_eq!(cache_counts(&db), (2, 3));
    assert_eq!(db.series(&name_eq("m"), ALL.0, ALL.1).unwrap(), all, "the head holds series 1 after 4h");
}

#[test]
fn out_of_order_window_takes_older_samples_and_they_reach_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { out_of_order_window: 5 * HOUR, ..manual(64 << 10) };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    ingest(&db, 2, 0, 7);
    db.compact().unwrap();
    let l = ls(&[("__name__", "m"), ("i", "0")]);
    let late = |db: &Arc<Db>, t: i64| {
        let mut app = db.appender();
        let r = app.append(&l, t, -1.0);
        app.commit().unwrap();
        r
    };
    // inside a block's range and inside the head, between existing samples
    late(&db, 3 * HOUR + 7).unwrap();
    late(&db, 6 * HOUR + 7).unwrap();
    assert!(matches!(late(&db, HOUR), Err(Error::OutOfBounds)), "older than the window");
    let mut app = db.appender();
    assert!(matches!(app.append(&l, 6 * HOUR, 5.0), Err(Error::DuplicateTimestamp)));
    app.rollback();
    let count = |db: &Db, t: i64| {
        let s = db.select(&[m(MatchOp::Equal, "i", "0")], t - 10, t + 10).unwrap();
        s[0].samples.iter().filter(|x| x.t == t && x.v == -1.0).count()
    };
    assert_eq!((count(&db, 3 * HOUR + 7), count(&db, 6 * HOUR + 7)), (1, 1));
    drop(db);
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!((count(&db, 3 * HOUR + 7), count(&db, 6 * HOUR + 7)), (1, 1), "after replay");
    ingest(&db, 2, 7 * HOUR, 3);
    db.compact().unwrap();
    assert_eq!((count(&db, 3 * HOUR + 7), count(&db, 6 * HOUR + 7)), (1, 1), "after compaction");
    let blocks = db.blocks();
    for w in blocks.windows(2) {
        assert!(w[0].max_time <= w[1].min_time, "blocks do not overlap after merging: {blocks:?}");
    }
}

/// Reads a tail until it returns nothing, as (labels, t, value bits).
fn drain_tail(tail: &mut promflow_storage::wal_tail::WalTail) -> Vec<(Labels, i64, u64)> {
    let mut out = Vec::new();
    loop {
        let got = tail.read(1000).unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got.iter().filter_map(|s| match s.value {
            promflow_storage::wal_tail::TailValue::Float(v) => {
                Some((tail.labels(s.series).unwrap().clone(), s.t, v.to_bits()))
            }
            _ => None,
        }));
    }
}

#[test]
fn a_wal_tail_reads_every_committed_sample_across_segments_and_resumes_from_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(128)).unwrap();
    let (a, b) = (ls(&[("__name__", "a")]), ls(&[("__name__", "b"), ("x", "1")]));
    commit(&db, &[(&a, 1000, 1.0)]);
    // a tail from the end sees only what comes after it, with the labels of series defined
    // before it
    let mut tail = db.tail_wal(None).unwrap();
    assert!(drain_tail(&mut tail).is_empty());
    for t in 2..40 {
        let v = if t == 39 { stale_nan() } else { -(t as f64) };
        commit(&db, &[(&a, t * 1000, t as f64), (&b, t * 1000, v)]);
    }
    let got = drain_tail(&mut tail);
    assert_eq!(got.len(), 76, "every sample of the 38 commits");
    assert!(segments(dir.path()).len() > 3, "the commits span several segments");
    assert_eq!(got[0], (a.clone(), 2000, 2f64.to_bits()));
    assert_eq!(got[75], (b.clone(), 39_000, stale_nan().to_bits()));
    // a tail opened at a position reads what follows it, and nothing twice
    let mid = {
        let mut t = db.tail_wal(None).unwrap();
        commit(&db, &[(&a, 40_000, 40.0)]);
        drain_tail(&mut t);
        t.position()
    };
    commit(&db, &[(&b, 41_000, 41.0)]);
    let mut resumed = db.tail_wal(Some(mid)).unwrap();
    assert_eq!(drain_tail(&mut resumed), vec![(b.clone(), 41_000, 41f64.to_bits())]);
    assert_eq!(mid.to_string().parse::<promflow_storage::wal_tail::WalPosition>().unwrap(), mid);
    // a fresh database reads the same from the start of the WAL
    let mut all = db.tail_wal(Some(Default::default())).unwrap();
    assert_eq!(drain_tail(&mut all).len(), 1 + 76 + 2);
}

#[test]
fn checkpoints_keep_the_segments_a_wal_tail_has_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(4 << 10)).unwrap();
    let mut tail = db.tail_wal(None).unwrap();
    ingest(&db, 5, 0, 5);
    let want: usize = dump(&db).iter().map(|s| s.1.len()).sum();
    let report = db.compact().unwrap();
    assert!(report.head_blocks >= 1, "{report:?}");
    assert_eq!(report.wal_segments_deleted, 0, "the tail has read nothing yet");
    let got = drain_tail(&mut tail);
    assert_eq!(got.len(), want, "every sample, though the head was cut meanwhile");
    drop(tail);
    ingest(&db, 5, 5 * HOUR, 2);
    let report = db.compact().unwrap();
    assert!(report.wal_segments_deleted > 0, "without a tail, old segments go: {report:?}");
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn samples_beyond_the_future_limit_are_refused_and_present_ones_still_taken() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { future_limit: Some(10 * 60_000), ..DbOptions::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    let l = ls(&[("__name__", "clock")]);
    let now = wall_ms();
    let mut app = db.appender();
    assert!(matches!(app.append(&l, now + 24 * HOUR, 1.0), Err(Error::TooFarInFuture { .. })));
    app.append(&l, now + 60_000, 1.0).unwrap();
    app.commit().unwrap();
    // a present-time sample of another series is still within bounds
    commit(&db, &[(&ls(&[("__name__", "other")]), now - 30 * 60_000, 2.0)]);
    assert_eq!(db.stats(1).out_of_bounds_samples, 1);
}

#[test]
fn retention_is_not_measured_from_blocks_in_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { retention_time: Some(15 * 24 * HOUR), ..manual(1 << 20) };
    let db = Db::open(dir.path(), opts).unwrap();
    let l = ls(&[("__name__", "m")]);
    let now = wall_ms() / HOUR * HOUR;
    // present-day blocks, then (no future limit here) two samples 30 days ahead
    for h in 0..6 {
        commit(&db, &[(&l, now - (6 - h) * HOUR, h as f64)]);
    }
    let future = now + 30 * 24 * HOUR;
    commit(&db, &[(&l, future, 1.0), (&l, future + 4 * HOUR, 2.0)]);
    let report = db.compact().unwrap();
    assert!(report.head_blocks >= 3, "{report:?}");
    assert_eq!(report.deleted_blocks, 0, "present-day blocks were deleted for a block 30 days ahead");
    let present: usize = dump(&db)[0].1.iter().filter(|(t, _)| *t < now).count();
    assert_eq!(present, 6);
}

/// A small exponential histogram with `n` observations.
fn hist(n: f64) -> FloatHistogram {
    let spans = [Span { offset: 0, length: 2 }];
    FloatHistogram::from_spans(0, 0.001, 0.0, n, n * 1.5, (&spans, &[n - 1.0, 1.0]), (&[], &[]), Vec::new())
        .unwrap()
}

#[test]
fn histograms_share_the_series_timeline_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = |dir: &Path| Db::open(dir, manual(128 << 20)).unwrap();
    let l = ls(&[("__name__", "latency"), ("job", "a")]);
    let floats_only = ls(&[("__name__", "up")]);
    {
        let db = open(dir.path());
        let mut app = db.appender();
        app.append(&l, 10, 1.0).unwrap();
        app.append_histogram(&l, 20, hist(3.0)).unwrap();
        app.append(&l, 30, 2.0).unwrap();
        app.append_histogram(&l, 40, hist(4.0)).unwrap();
        // the same histogram again is dropped; another one at the same time is refused
        app.append_histogram(&l, 40, hist(4.0)).unwrap();
        assert!(matches!(app.append_histogram(&l, 40, hist(5.0)), Err(Error::DuplicateTimestamp)));
        assert!(matches!(app.append_histogram(&l, 35, hist(5.0)), Err(Error::OutOfOrder)));
        assert!(matches!(app.append(&l, 40, 4.0), Err(Error::DuplicateTimestamp)));
        app.append(&floats_only, 10, 1.0).unwrap();
        assert_eq!(app.commit().unwrap().samples, 5);
        // a float after the histograms, in a later batch, and a stale marker
        let mut app = db.appender();
        app.append(&l, 50, stale_nan()).unwrap();
        assert!(matches!(app.append_histogram(&l, 45, hist(1.0)), Err(Error::OutOfOrder)));
        app.commit().unwrap();
        db.close().unwrap();
    }
    let db = open(dir.path());
    let hs = db.select_histograms(&name_eq("latency"), ALL.0, ALL.1).unwrap();
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].labels, l);
    let got: Vec<(i64, f64)> = hs[0].samples.iter().map(|s| (s.t, s.h.count)).collect();
    assert_eq!(got, vec![(20, 3.0), (40, 4.0)]);
    assert_eq!(*hs[0].samples[1].h, hist(4.0));
    let floats: Vec<i64> =
        db.select(&name_eq("latency"), ALL.0, ALL.1).unwrap()[0].samples.iter().map(|s| s.t).collect();
    assert_eq!(floats, vec![10, 30, 50]);
    // the range bounds apply; a series without histograms has none; the series is found by
    // its histograms alone
    assert_eq!(db.select_histograms(&name_eq("latency"), 21, 40).unwrap()[0].samples.len(), 1);
    assert!(db.select_histograms(&name_eq("latency"), 21, 39).unwrap().is_empty());
    assert!(db.select_histograms(&name_eq("up"), ALL.0, ALL.1).unwrap().is_empty());
    assert_eq!(db.series(&name_eq("latency"), 39, 41).unwrap(), vec![l.clone()]);
    assert_eq!(db.stats(1).num_samples, 6);
    // order continues across the reopen: the stale marker at 50 is the newest sample
    let mut app = db.appender();
    assert!(matches!(app.append_histogram(&l, 49, hist(1.0)), Err(Error::OutOfOrder)));
    app.append_histogram(&l, 60, hist(6.0)).unwrap();
    app.commit().unwrap();
    assert_eq!(db.select_histograms(&name_eq("latency"), 55, 65).unwrap()[0].samples[0].h.count, 6.0);
}

/// Every series' histogram samples, as (labels, [(t, count)]).
fn dump_histograms(db: &Db) -> Vec<(Labels, Vec<(i64, f64)>)> {
    db.select_histograms(&[], ALL.0, ALL.1)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels, s.samples.iter().map(|x| (x.t, x.h.count)).collect()))
        .collect()
}

#[test]
fn histograms_are_cut_into_blocks_merged_and_deleted_with_the_floats() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(64 << 10)).unwrap();
    let only = ls(&[("__name__", "latency"), ("job", "only_histograms")]);
    let mixed = ls(&[("__name__", "latency"), ("job", "mixed")]);
    let custom = FloatHistogram::from_classic(&[(0.5, 1.0), (f64::INFINITY, 3.0)], None, 2.0).unwrap();
    let mut t = 0;
    while t < 7 * HOUR {
        let mut app = db.appender();
        let n = (t / 60_000) as f64 + 2.0;
        app.append_histogram(&only, t, if t % (2 * HOUR) == 0 { custom.clone() } else { hist(n) }).unwrap();
        // floats in the first hour, histograms after
        if t < HOUR {
            app.append(&mixed, t, n).unwrap();
        } else {
            app.append_histogram(&mixed, t, hist(n)).unwrap();
        }
        app.append(&ls(&[("__name__", "up"), ("job", "floats")]), t, 1.0).unwrap();
        app.commit().unwrap();
        t += 60_000;
    }
    let before = (dump(&db), dump_histograms(&db));
    let mixed_eq = [m(MatchOp::Equal, "job", "mixed")];
    let histograms_of = |db: &Db, matchers: &[Matcher]| {
        db.select_histograms(matchers, ALL.0, ALL.1)
            .unwrap()
            .into_iter()
            .map(|s| (s.labels, s.samples.iter().map(|x| (x.t, x.h.count)).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    let mixed_before = histograms_of(&db, &mixed_eq);
    assert_eq!(mixed_before.len(), 1);
    assert!(db.has_histograms(&name_eq("latency"), ALL.0, ALL.1).unwrap());
    assert!(!db.has_histograms(&name_eq("up"), ALL.0, ALL.1).unwrap());
    let exact = db.select_histograms(&name_eq("latency"), 0, 0).unwrap()[0].samples[0].h.clone();
    assert_eq!(*exact, custom);
    let report = db.compact().unwrap();
    assert_eq!(report.head_blocks, 2, "{report:?}");
    assert_eq!((dump(&db), dump_histograms(&db)), before, "head + blocks answer what the head alone did");
    // one series' rows read alone from the blocks, and which series have any told by them
    assert_eq!(histograms_of(&db, &mixed_eq), mixed_before);
    assert!(db.has_histograms(&mixed_eq, 2 * HOUR, 3 * HOUR).unwrap());
    assert!(!db.has_histograms(&name_eq("up"), ALL.0, ALL.1).unwrap());
    // read back from a block bit for bit, custom bounds included
    assert_eq!(*db.select_histograms(&name_eq("latency"), 0, 0).unwrap()[0].samples[0].h, custom);
    assert_eq!(db.series(&name_eq("latency"), 3 * HOUR, 3 * HOUR).unwrap().len(), 2);
    drop(db);

    let db = Db::open(dir.path(), manual(64 << 10)).unwrap();
    assert_eq!((dump(&db), dump_histograms(&db)), before, "restart");
    let mut app = db.appender();
    for t in (7 * HOUR..9 * HOUR).step_by(60_000) {
        app.append_histogram(&only, t, hist(1.0)).unwrap();
    }
    app.commit().unwrap();
    let all = dump_histograms(&db);
    let report = db.compact().unwrap();
    assert_eq!(report.merged_blocks, 1, "{report:?}");
    assert_eq!(dump_histograms(&db), all, "merged");
    let only_eq = [m(MatchOp::Equal, "job", "only_histograms")];
    db.delete_series(&only_eq, HOUR, 5 * HOUR).unwrap();
    let left = &db.select_histograms(&only_eq, ALL.0, ALL.1).unwrap()[0].samples;
    assert!(left.iter().all(|s| s.t < HOUR || s.t > 5 * HOUR));
    assert!(left.iter().any(|s| s.t > 5 * HOUR) && left.iter().any(|s| s.t < HOUR));
}

#[test]
fn exemplars_are_kept_bounded_in_order_and_replayed_from_the_wal() {
    use promflow_storage::exemplars::{Exemplar, ExemplarError};
    let dir = tempfile::tempdir().unwrap();
    let opts = || DbOptions { max_exemplars: 3, compaction_interval: None, ..Default::default() };
    let a = ls(&[("__name__", "rpc_seconds_bucket"), ("le", "0.5")]);
    let ex = |trace: &str, t: i64| Exemplar { labels: ls(&[("trace_id", trace)]), value: 0.25, t };
    {
        let db = Db::open(dir.path(), opts()).unwrap();
        let mut app = db.appender();
        app.append(&a, 1000, 1.0).unwrap();
        app.append_exemplar(&a, ex("t1", 900)).unwrap();
        // a repeat is dropped, an older one refused
        app.append_exemplar(&a, ex("t1", 900)).unwrap();
        assert!(matches!(
            app.append_exemplar(&a, ex("t0", 800)),
            Err(promflow_storage::Error::Exemplar(ExemplarError::OutOfOrder))
        ));
        app.commit().unwrap();
        let mut app = db.appender();
        app.append(&a, 2000, 2.0).unwrap();
        app.append_exemplar(&a, ex("t2", 1900)).unwrap();
        app.commit().unwrap();
        // a series with no sample in its batch and none stored keeps no exemplar
        let mut app = db.appender();
        app.append(&a, 3000, 3.0).unwrap();
        app.append_exemplar(&ls(&[("__name__", "never")]), ex("t9", 2900)).unwrap();
        app.commit().unwrap();
        assert_eq!(db.exemplar_counts(), (2, 3));
        // not closed: the WAL has them
    }
    let db = Db::open(dir.path(), opts()).unwrap();
    let got = db.select_exemplars(&[name_eq("rpc_seconds_bucket")], 0, 10_000);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].series, a);
    assert_eq!(got[0].exemplars, vec![ex("t1", 900), ex("t2", 1900)]);
    assert!(db.select_exemplars(&[name_eq("never")], 0, 10_000).is_empty());
    assert_eq!(db.select_exemplars(&[name_eq("rpc_seconds_bucket")], 1000, 10_000)[0].exemplars.len(), 1);
    db.set_max_exemplars(1);
    assert_eq!(db.exemplar_counts(), (1, 1));
    drop(db);
    // without exemplar storage none are kept or read back
    let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
    assert_eq!(db.exemplar_counts(), (0, 0));
}

/// Every series' start timestamp per float sample (0 where it has none).
fn starts(db: &Db) -> Vec<(Labels, Vec<(i64, i64)>)> {
    let runs = db.select_start_timestamps(&[], ALL.0, ALL.1).unwrap();
    db.select(&[], ALL.0, ALL.1)
        .unwrap()
        .into_iter()
        .map(|s| {
            let r = runs.iter().find(|r| r.labels == s.labels).map_or(&[][..], |r| &r.runs[..]);
            let st = promflow_storage::aligned_starts(r, s.samples.view().t.iter().copied());
            (s.labels, s.samples.view().t.iter().copied().zip(st).collect())
        })
        .collect()
}

#[test]
fn start_timestamps_are_kept_replayed_cut_into_blocks_and_merged() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || DbOptions { start_timestamps: true, ..manual(1 << 20) };
    let counter = ls(&[("__name__", "requests_total")]);
    let delta = ls(&[("__name__", "delta_total")]);
    let plain = ls(&[("__name__", "plain_total")]);
    // 7 hours at one minute: the counter resets every 3 hours, the delta counts each minute
    let expected = |t: i64| (t - t % (3 * HOUR) - 1000, t - 60_000);
    {
        let db = Db::open(dir.path(), opts()).unwrap();
        let mut t = 0;
        while t < 7 * HOUR {
            let mut app = db.appender();
            let (counter_start, delta_start) = expected(t);
            app.append(&counter, t, (t % (3 * HOUR)) as f64).unwrap();
            app.set_start_timestamp(&counter, t, counter_start).unwrap();
            app.append(&delta, t, 1.0).unwrap();
            app.set_start_timestamp(&delta, t, delta_start).unwrap();
            app.append(&plain, t, 1.0).unwrap();
            app.commit().unwrap();
            t += 60_000;
        }
    }
    let want: Vec<(Labels, Vec<(i64, i64)>)> = {
        let ts: Vec<i64> = (0..7 * 60).map(|i| i * 60_000).collect();
        let mut w = vec![
            (delta.clone(), ts.iter().map(|&t| (t, expected(t).1)).collect()),
            (plain.clone(), ts.iter().map(|&t| (t, 0)).collect()),
            (counter.clone(), ts.iter().map(|&t| (t, expected(t).0)).collect()),
        ];
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    };
    // replayed from the WAL after a crash (never closed)
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(starts(&db), want);
    // cut into blocks, and the blocks merged
    let report = db.compact().unwrap();
    assert_eq!(report.head_blocks, 2, "{report:?}");
    assert_eq!(starts(&db), want, "blocks and head");
    let runs = db.select_start_timestamps(&name_eq("requests_total"), ALL.0, ALL.1).unwrap();
    assert!(runs[0].runs.len() <= 5, "one run per reset and block: {:?}", runs[0].runs);
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(starts(&db), want, "restart with blocks");
    // without the option, appends keep none (stored ones still read)
    let db2 = {
        drop(db);
        Db::open(dir.path(), manual(1 << 20)).unwrap()
    };
    let mut app = db2.appender();
    let late = ls(&[("__name__", "late_total")]);
    app.append(&late, 7 * HOUR, 1.0).unwrap();
    app.set_start_timestamp(&late, 7 * HOUR, 5).unwrap();
    app.commit().unwrap();
    assert!(db2.select_start_timestamps(&name_eq("late_total"), ALL.0, ALL.1).unwrap().is_empty());
}

#[test]
fn an_out_of_order_sample_without_a_start_timestamp_is_not_given_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || DbOptions { start_timestamps: true, out_of_order_window: HOUR, ..manual(1 << 20) };
    let a = ls(&[("__name__", "a_total")]);
    {
        let db = Db::open(dir.path(), opts()).unwrap();
        for t in [1000, 3000] {
            let mut app = db.appender();
            app.append(&a, t, 1.0).unwrap();
            app.set_start_timestamp(&a, t, 500).unwrap();
            app.commit().unwrap();
        }
        let mut app = db.appender();
        app.append(&a, 2000, 1.0).unwrap();
        app.commit().unwrap();
        assert_eq!(starts(&db), vec![(a.clone(), vec![(1000, 500), (2000, 0), (3000, 500)])]);
    }
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(starts(&db), vec![(a, vec![(1000, 500), (2000, 0), (3000, 500)])], "replayed");
}

#[test]
fn histograms_read_back_from_blocks_exactly_from_any_range() {
    use promflow_storage::native_histogram::CounterResetHint;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), manual(1 << 20)).unwrap();
    let l = ls(&[("__name__", "latency")]);
    // whole counts (stored as differences) with a moving layout, negative buckets and
    // resets, and now and then counts that are not whole (stored as they are)
    let histogram = |k: i64| {
        let base = (k % 50) as f64;
        let fraction = if k % 7 == 3 { 0.25 } else { 0.0 };
        let shift = (k / 20 % 3) as i32;
        let positive: Vec<(i32, f64)> =
            (0..4).map(|j| (shift + j, base * f64::from(j + 1) + fraction)).collect();
        let negative = if k % 2 == 0 { vec![(-1, base + 1.0)] } else { vec![] };
        let zero = (k % 3) as f64;
        let count = positive.iter().chain(&negative).map(|b| b.1).sum::<f64>() + zero;
        FloatHistogram::from_buckets(
            CounterResetHint::Unknown,
            1,
            0.001,
            zero,
            count,
            base * 1.5,
            positive,
            negative,
            vec![],
        )
        .unwrap()
    };
    let mut want = Vec::new();
    for k in 0..(5 * 60) {
        let t = k * 60_000;
        let mut app = db.appender();
        app.append_histogram(&l, t, histogram(k)).unwrap();
        app.commit().unwrap();
        want.push((t, histogram(k)));
    }
    let report = db.compact().unwrap();
    assert_eq!(report.head_blocks, 1, "{report:?}");
    let read = |mint: i64, maxt: i64| -> Vec<(i64, FloatHistogram)> {
        let got = db.select_histograms(&name_eq("latency"), mint, maxt).unwrap();
        got.into_iter().flat_map(|s| s.samples).map(|s| (s.t, (*s.h).clone())).collect()
    };
    assert_eq!(read(ALL.0, ALL.1), want);
    // ranges that start inside the block: the differences before them still add up
    for (mint, maxt) in [(30 * 60_000 + 1, 90 * 60_000), (90 * 60_000, 150 * 60_000)] {
        let inside: Vec<_> = want.iter().filter(|(t, _)| (mint..=maxt).contains(t)).cloned().collect();
        assert_eq!(read(mint, maxt), inside);
    }
}

#[test]
fn a_selection_read_in_parts_holds_every_series_once_sorted_while_commits_go_on() {
    // more series than one read of the head takes, so the selection takes its lock several
    // times and commits land between the parts
    const SERIES: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    // labels whose order differs from the order the series were created in
    let labels: Vec<Labels> = (0..SERIES)
        .map(|i| ls(&[("__name__", "x"), ("k", &format!("{:05}", (i * 7919) % SERIES))]))
        .collect();
    for t in 1..=10 {
        let samples: Vec<(&Labels, i64, f64)> = labels.iter().map(|l| (l, t, t as f64)).collect();
        commit(&db, &samples);
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for t in 11..=60 {
                let samples: Vec<(&Labels, i64, f64)> = labels.iter().map(|l| (l, t, t as f64)).collect();
                commit(&db, &samples);
            }
        });
        for _ in 0..5 {
            let got = db.select(&name_eq("x"), 1, 10).unwrap();
            assert_eq!(got.len(), SERIES);
            assert!(got.windows(2).all(|w| w[0].labels < w[1].labels), "sorted and unique");
            for s in &got {
                let values: Vec<f64> = s.samples.iter().map(|x| x.v).collect();
                assert_eq!(values, (1..=10).map(f64::from).collect::<Vec<_>>());
            }
        }
        writer.join().unwrap();
    });
    let all = db.select(&name_eq("x"), 1, 60).unwrap();
    assert!(all.iter().all(|s| s.samples.len() == 60));
}

/// A start that maps the head's chunk files back answers as one that replays the WAL
/// alone: after cuts into blocks, out-of-order samples (before the blocks' end, within the
/// head, into a deleted range), deletions of part of a series and of all it has in the
/// head, staleness markers, a crash that loses the chunks not yet written out, and a
/// second start after more samples.
#[test]
fn a_start_from_the_chunk_files_answers_as_one_from_the_wal_alone() {
    const N: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { out_of_order_window: 4 * HOUR, ..manual(256 << 10) };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    // enough series that chunks fill the megabyte buffered before a write to the files
    ingest(&db, N, 0, 5);
    db.compact().unwrap();
    assert!(!db.blocks().is_empty());
    let head_min = db.stats(0).min_time.unwrap();
    let series = |i: usize| ls(&[("__name__", "m"), ("i", &i.to_string())]);
    let late = |db: &Arc<Db>, i: usize, t: i64| {
        let mut app = db.appender();
        app.append(&series(i), t, -1.5).unwrap();
        app.commit().unwrap();
    };
    late(&db, 0, head_min + 7);
    late(&db, 1, head_min - 10 * 60_000 + 7);
    late(&db, 2, head_min + 30 * 60_000 + 7);
    let only = |i: usize| [m(MatchOp::Equal, "i", &i.to_string())];
    assert!(db.delete_series(&only(7), head_min + 20 * 60_000, head_min + 50 * 60_000).unwrap() > 0);
    assert!(db.delete_series(&only(8), head_min, 5 * HOUR).unwrap() > 0);
    ingest(&db, N, 5 * HOUR, 1);
    late(&db, 7, head_min + 30 * 60_000 + 7);
    let before = dump(&db);

    // "kill -9": the files as they are, chunks still in the write buffer not among them
    let crashed = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), crashed.path());
    drop(db);
    let wal_only = tempfile::tempdir().unwrap();
    copy_tree(crashed.path(), wal_only.path());
    std::fs::remove_dir_all(wal_only.path().join("promflow/head_chunks")).unwrap();
    let mapped = Db::open(crashed.path(), opts.clone()).unwrap();
    let replayed = Db::open(wal_only.path(), opts.clone()).unwrap();
    let (ms, rs) = (mapped.stats(0), replayed.stats(0));
    assert!(ms.samples_from_chunk_files > 100 * 480, "{}", ms.samples_from_chunk_files);
    assert_eq!(rs.samples_from_chunk_files, 0);
    same(&dump(&mapped), &before, "mapped");
    same(&dump(&replayed), &before, "replayed");
    let counts = |s: &promflow_storage::DbStats| {
        (s.num_series, s.num_samples, s.num_stale_series, s.min_time, s.max_time)
    };
    assert_eq!(counts(&ms), counts(&rs));

    // both go on alike, and start again alike
    for db in [&mapped, &replayed] {
        ingest(db, N, 6 * HOUR, 1);
        late(db, 3, 6 * HOUR + 7);
    }
    let after = dump(&replayed);
    same(&dump(&mapped), &after, "mapped, going on");
    drop((mapped, replayed));
    let mapped = Db::open(crashed.path(), opts.clone()).unwrap();
    assert!(mapped.stats(0).samples_from_chunk_files > 0);
    same(&dump(&mapped), &after, "mapped, again");
    assert_eq!(counts(&mapped.stats(0)), counts(&Db::open(wal_only.path(), opts).unwrap().stats(0)));
}

/// Asserts two dumps are equal, naming the first series and sample that differ.
fn same(got: &[(Labels, Vec<(i64, u64)>)], want: &[(Labels, Vec<(i64, u64)>)], what: &str) {
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{what}: series");
        if let Some(i) = (0..g.1.len().max(w.1.len())).find(|&i| g.1.get(i) != w.1.get(i)) {
            let around = |v: &[(i64, u64)]| v[i.saturating_sub(2)..(i + 3).min(v.len())].to_vec();
            panic!(
                "{what}: {:?} differs at sample {i} of {}/{}: got {:?}, want {:?}",
                g.0,
                g.1.len(),
                w.1.len(),
                around(&g.1),
                around(&w.1)
            );
        }
    }
    assert_eq!(got.len(), want.len(), "{what}: series count");
}

/// When the WAL lost samples that the chunk files hold (its last segments gone, as a power
/// loss may leave it), the chunks' samples are served and later appends follow them.
#[test]
fn samples_the_chunk_files_hold_beyond_the_wal_are_kept_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let l = ls(&[("__name__", "x")]);
    let db = Db::open(dir.path(), manual(4 << 10)).unwrap();
    for t in 0..1000 {
        commit(&db, &[(&l, t * 1000, t as f64 * 0.5)]);
    }
    drop(db);
    let wal = segments(dir.path());
    assert!(wal.len() > 3, "{wal:?}");
    for p in &wal[wal.len() - 2..] {
        std::fs::remove_file(p).unwrap();
    }
    let db = Db::open(dir.path(), manual(4 << 10)).unwrap();
    let got = &dump(&db)[0].1;
    let newest = got.last().unwrap().0;
    // the full chunks' 960 samples at least, and the newest of them is the series' newest
    assert!(got.len() >= 960 && newest >= 959_000, "{} samples to {newest}", got.len());
    assert_eq!(
        got.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..got.len() as i64).map(|t| t * 1000).collect::<Vec<_>>()
    );
    let mut app = db.appender();
    assert!(app.append(&l, newest, 7.0).is_err(), "a different value at the newest time");
    app.rollback();
    commit(&db, &[(&l, newest + 1000, 1.0)]);
    assert_eq!(dump(&db)[0].1.len(), got.len() + 1);
}
