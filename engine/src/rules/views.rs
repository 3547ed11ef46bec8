//! Rule expressions read from views that the incremental executor keeps current, instead of
//! being evaluated from scratch at every tick (`--rules.evaluation-mode=event`).
//!
//! [`RuleViews`] subscribes to storage's append feed when it starts. A rule's view is
//! installed at its first evaluation and starts from history (the querier, over the
//! expression's longest window plus the lookback); from then on the feed keeps it current.
//! Storage may deliver a sample both in that history and in the feed: the per-series
//! operator ignores a sample whose timestamp it already holds, so nothing counts twice.
//!
//! Before each read every batch committed so far is taken from the feed, so a view read at
//! `t` has seen every sample acknowledged before the read. An expression the incremental
//! executor does not maintain is evaluated by the batch executor, as in tick mode.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use promflow_storage::{CommittedBatch, Labels, Querier};

use crate::dataflow::{Incremental, ViewId};
use crate::Plan;

/// How long a view keeps its past: reads more than this before the newest read are not
/// answered correctly (a rule reads at its group's evaluation time, close to now).
const KEEP_MS: i64 = 3_600_000;

/// Rule views over one storage, fed by its append feed.
pub struct RuleViews {
    inc: Incremental,
    feed: Mutex<Receiver<Arc<CommittedBatch>>>,
    querier: Arc<dyn Querier>,
    /// Each expression seen, with its view (`None`: not maintained, evaluated in batch).
    views: Mutex<Vec<(Plan, Option<ViewId>)>>,
}

impl RuleViews {
    /// Starts `workers` dataflow workers over `feed` (subscribed before any view is
    /// installed) and `querier` (for history). A thread takes the feed every 50 ms, so that it
    /// does not pile up between evaluations.
    pub fn start(
        workers: usize,
        lookback_ms: i64,
        feed: Receiver<Arc<CommittedBatch>>,
        querier: Arc<dyn Querier>,
    ) -> Result<Arc<RuleViews>, String> {
        let views = Arc::new(RuleViews {
            inc: Incremental::start(workers, lookback_ms)?,
            feed: Mutex::new(feed),
            querier,
            views: Mutex::new(Vec::new()),
        });
        let weak: Weak<RuleViews> = Arc::downgrade(&views);
        std::thread::Builder::new()
            .name("rule-views-feed".into())
            .spawn(move || {
                while let Some(v) = weak.upgrade() {
                    v.take_feed();
                    drop(v);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .map_err(|e| format!("starting the feed thread: {e}"))?;
        Ok(views)
    }

    /// Hands every batch committed so far to the views.
    fn take_feed(&self) {
        let feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(batch) = feed.try_recv() {
            self.inc.append_from(batch.samples.iter().map(|(l, s)| (l.as_ref(), s.t, s.v)));
        }
    }

    /// `plan`'s value at `t` from its view, or `None` when the incremental executor does not
    /// maintain it (the caller evaluates it in batch).
    pub fn read(&self, plan: &Plan, t: i64) -> Option<Result<Vec<(Labels, f64)>, String>> {
        let view = {
            let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
            match views.iter().find(|(p, _)| p == plan) {
                Some((_, view)) => *view,
                None => {
                    self.take_feed();
                    // everything committed until now, even ahead of `t`: a later delivery of
                    // the same samples through the feed is ignored
                    let view = match self.inc.install_from(plan, self.querier.as_ref(), t) {
                        Ok(v) => Some(v),
                        Err(crate::Error::Unsupported(what)) => {
                            tracing::info!(%what, "rule expression evaluated in batch, not as a view");
                            None
                        }
                        Err(e) => return Some(Err(e.to_string())),
                    };
                    views.push((plan.clone(), view));
                    view
                }
            }
        }?;
        self.take_feed();
        let rows = self.inc.read(view, t).map_err(|e| e.to_string());
        self.inc.compact(t - KEEP_MS);
        Some(rows)
    }

    /// Records out of each kind of dataflow operator so far.
    pub fn records_total(&self) -> Vec<(&'static str, u64)> {
        self.inc.records_total()
    }

    /// Arrangements the views registered.
    pub fn arrangements(&self) -> usize {
        self.inc.arrangements()
    }

    /// How many rule expressions are maintained as views, and how many in batch.
    pub fn counts(&self) -> (usize, usize) {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let live = views.iter().filter(|(_, v)| v.is_some()).count();
        (live, views.len() - live)
    }
}

/// Which rules of a group may read views: none when the group queries in the past
/// (`query_offset` waits for late samples, which a view counts from their arrival), and not
/// a rule that reads what an earlier rule of the same group writes in the same evaluation
/// (a view sees that output only after the evaluation time).
pub(crate) fn view_rules(spec: &super::GroupSpec) -> Vec<bool> {
    let mut written: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(spec.rules.len());
    for rule in &spec.rules {
        let plan = match rule {
            super::RuleSpec::Record(r) => &r.plan,
            super::RuleSpec::Alert(a) => &a.plan,
        };
        let reads_earlier = plan.selections().iter().any(|ms| {
            written.iter().any(|name| {
                let l = Labels::from_pairs([(promflow_storage::METRIC_NAME, name.as_str())]);
                // a selection that names no metric, or a matching one, may read the output
                ms.iter().filter(|m| m.name == promflow_storage::METRIC_NAME).all(|m| m.matches_labels(&l))
            })
        });
        out.push(spec.query_offset_ms == 0 && !reads_earlier);
        match rule {
            super::RuleSpec::Record(r) => written.push(r.name.clone()),
            super::RuleSpec::Alert(_) => {
                written.extend(["ALERTS".to_string(), "ALERTS_FOR_STATE".to_string()])
            }
        }
    }
    out
}
