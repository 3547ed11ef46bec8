//! A rule group evaluated by hand over a real storage, in tick mode (the batch executor) and
//! in event mode (the rules read live views fed by storage's append feed).

/// A group evaluated by hand over a real storage: output naming, staleness markers when a
/// series disappears, and the errors Prometheus gives; in tick mode (batch) and in event mode
/// (the rule reads a dataflow view fed by storage's append feed).
#[test]
fn recording_rule_group_semantics() {
    recording_rule_group_semantics_in(false);
    recording_rule_group_semantics_in(true);
}

fn recording_rule_group_semantics_in(event_mode: bool) {
    use promflow_incremental::live::LiveViews;
    use promflow_plan::QueryOptions;
    use promflow_rules::{EvalSettings, Group, GroupSpec, Health, RecordingRuleSpec, RuleSpec};
    use promflow_storage::{is_stale_nan, Db, DbOptions, Labels, Matcher, Querier};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
    let views = event_mode.then(|| {
        LiveViews::start(
            2,
            5_000,
            |wake| db.subscribe_waking(wake),
            Arc::clone(&db) as Arc<dyn Querier>,
            false,
        )
        .unwrap()
    });
    let mut app = db.appender();
    for a in ["1", "2"] {
        app.append(&Labels::from_pairs([("__name__", "x"), ("a", a)]), 1_000, 1.0).unwrap();
    }
    app.commit().unwrap();
    let rule = |name: &str, expr: &str, labels: &[(&str, &str)]| {
        RuleSpec::Record(RecordingRuleSpec {
            name: name.into(),
            query: expr.into(),
            plan: promflow_promql::compile(expr, &Default::default()).unwrap(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    };
    let spec = GroupSpec {
        name: "g".into(),
        file: "f.yml".into(),
        interval_ms: 1000,
        query_offset_ms: 0,
        limit: 0,
        event_mode: true,
        rules: vec![
            rule("r", "x", &[("team", "t")]),
            rule("collapsed", "x", &[("a", "")]),
            // a view of its own, first needed after `r` read its view at the same time
            rule("total", "sum(x)", &[]),
        ],
    };
    let settings = EvalSettings {
        query: QueryOptions { lookback_ms: 5_000, ..QueryOptions::instant(0) },
        views: views.clone(),
        ..EvalSettings::default()
    };
    let writer = Arc::clone(&db);
    let appender = move || writer.appender();
    let mut group = Group::new(spec.clone(), false);
    group.evaluate(2_000, &*db, &appender, &settings);
    let status = group.status();
    assert_eq!(status.rules[0].health, Health::Ok);
    assert_eq!(status.rules[1].health, Health::Err);
    assert_eq!(
        status.rules[1].last_error.as_deref(),
        Some("vector contains metrics with the same labelset after applying rule labels")
    );
    let name = |n: &str| vec![Matcher::new(promflow_storage::MatchOp::Equal, "__name__", n).unwrap()];
    let out = db.select(&name("r"), 0, 100_000).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].labels, Labels::from_pairs([("__name__", "r"), ("a", "1"), ("team", "t")]));
    assert_eq!(out[0].samples.iter().map(|s| (s.t, s.v)).collect::<Vec<_>>(), vec![(2_000, 1.0)]);
    let total = db.select(&name("total"), 0, 100_000).unwrap();
    assert_eq!(total.len(), 1, "{total:?}");
    assert_eq!(total[0].samples.iter().map(|s| (s.t, s.v)).collect::<Vec<_>>(), vec![(2_000, 2.0)]);

    // x leaves the lookback: the rule's series get staleness markers at the next evaluation
    group.evaluate(9_000, &*db, &appender, &settings);
    let out = db.select(&name("r"), 0, 100_000).unwrap();
    for s in &out {
        let last = s.samples.view().last().unwrap();
        assert_eq!(last.t, 9_000);
        assert!(is_stale_nan(last.v), "{s:?}");
    }

    // a limit below the output size fails the rule and writes nothing
    let mut limited =
        Group::new(GroupSpec { limit: 1, rules: vec![rule("lim", "x", &[])], ..spec.clone() }, false);
    limited.evaluate(3_000, &*db, &appender, &settings);
    assert_eq!(limited.status().rules[0].last_error.as_deref(), Some("exceeded limit of 1 with 2 series"));
    assert!(db.select(&name("lim"), 0, 100_000).unwrap().is_empty());

    // evaluation times are aligned to the interval, shifted by the group's hash
    let every = GroupSpec { interval_ms: 60_000, ..spec };
    let now = 1_800_000_123_456;
    let ts = every.eval_timestamp(now);
    assert!(ts <= now && ts > now - 60_000);
    // times are truncated to milliseconds, as Prometheus stamps samples
    assert_eq!(every.eval_timestamp(ts + 60_000), ts);
    assert_eq!(every.eval_timestamp(ts + 60_001), ts + 60_000);
    // recording rules' views change at exactly those times
    for name in ["g", "node-recording", "alerts", "k8s.rules"] {
        let g = GroupSpec { name: name.into(), ..every.clone() };
        for now in [now, now + 17_000, 1_700_000_000_001] {
            let ts = g.eval_timestamp(now);
            assert!(g.grain().contains(ts) && !g.grain().contains(ts - 1), "{name} at {now}");
        }
    }
    if let Some(views) = views {
        // `r`, `collapsed` and `lim` read one shared view of `x`, `total` one of its own
        assert_eq!(views.counts(), (2, 0));
        assert_eq!(views.arrangements(), 2);
    }
}
