//! Rule groups evaluated at their interval ("tick" evaluation), as Prometheus's rule manager
//! evaluates them: each group at timestamps aligned to its interval by a hash of its name and
//! file, its rules in order, each rule's output committed before the next rule runs.
//!
//! This module holds recording rules. A recording rule's output series are its expression's
//! result with `__name__` set to the rule's name and the rule's labels applied, written at the
//! evaluation timestamp; a series the previous evaluation wrote and this one did not gets a
//! staleness marker, so queries stop seeing it at once. The incremental (dataflow) evaluation
//! of the same rules, and alerting rules, build on this.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promflow_storage::{stale_nan, Appender, Labels, Querier, METRIC_NAME};

use crate::batch::{evaluate, QueryOptions, QueryResult};
use crate::Plan;

/// How rules' queries are evaluated: the server's query settings.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// Lookback, sample limit, name removal; `start`, `end` and `deadline` are set per rule.
    pub query: QueryOptions,
    /// `--query.timeout`, per rule evaluation.
    pub timeout: Duration,
}

/// A recording rule, its expression already compiled.
#[derive(Clone, Debug)]
pub struct RecordingRuleSpec {
    /// `record`: the output metric name.
    pub name: String,
    /// The expression as Prometheus prints it (`/api/v1/rules` shows it).
    pub query: String,
    /// The compiled expression.
    pub plan: Plan,
    /// `labels`: set on every output series (an empty value removes the label).
    pub labels: Vec<(String, String)>,
}

/// A group of recording rules.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// `name`.
    pub name: String,
    /// The file the group came from, as given in `rule_files`.
    pub file: String,
    /// Evaluation interval in milliseconds (> 0).
    pub interval_ms: i64,
    /// `query_offset` in milliseconds: queries run this far in the past.
    pub query_offset_ms: i64,
    /// `limit`: most series a rule may write (0: no limit).
    pub limit: u64,
    /// The rules, in order.
    pub rules: Vec<RecordingRuleSpec>,
}

impl GroupSpec {
    /// Prometheus's `Group.EvalTimestamp`: the latest evaluation time at or before `now_ms`,
    /// aligned to the interval and shifted by the group's hash, so every server evaluating
    /// the same group from the same file uses the same timestamps.
    pub fn eval_timestamp(&self, now_ms: i64) -> i64 {
        let interval_ns = (self.interval_ms as i128) * 1_000_000;
        let key = Labels::from_pairs([("name", self.name.as_str()), ("file", self.file.as_str())]);
        let offset = (key.prometheus_hash() as i128) % interval_ns;
        let adj = now_ms as i128 * 1_000_000 - offset;
        let base = adj - adj.rem_euclid(interval_ns);
        ((base + offset) / 1_000_000) as i64
    }
}

/// The health of a rule after its last evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// The last evaluation succeeded.
    Ok,
    /// The last evaluation failed.
    Err,
}

impl Health {
    /// The name `/api/v1/rules` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// What `/api/v1/rules` reports of a rule.
#[derive(Clone, Debug)]
pub struct RuleStatus {
    /// The rule.
    pub spec: RecordingRuleSpec,
    /// Health after the last evaluation.
    pub health: Health,
    /// The last evaluation's error.
    pub last_error: Option<String>,
    /// Wall-clock start of the last evaluation, milliseconds.
    pub last_evaluation_ms: Option<i64>,
    /// How long the last evaluation took.
    pub evaluation_time: Duration,
}

/// What `/api/v1/rules` reports of a group.
#[derive(Clone, Debug)]
pub struct GroupStatus {
    /// The group's name, file, interval and limit.
    pub name: String,
    /// The file.
    pub file: String,
    /// Interval in milliseconds.
    pub interval_ms: i64,
    /// `limit`.
    pub limit: u64,
    /// Its rules.
    pub rules: Vec<RuleStatus>,
    /// Wall-clock start of the last evaluation, milliseconds.
    pub last_evaluation_ms: Option<i64>,
    /// How long the last evaluation of all rules took.
    pub evaluation_time: Duration,
}

/// A group with its evaluation state.
pub struct Group {
    status: GroupStatus,
    spec: GroupSpec,
    /// Per rule, the series written by its last successful evaluation.
    previous: Vec<HashMap<Labels, ()>>,
    /// Series of rules a reload removed from this group: marked stale at the next evaluation.
    orphaned: Vec<Labels>,
    /// The timestamp of the last evaluation's output.
    last_ts: Option<i64>,
}

impl Group {
    /// A group not evaluated yet.
    pub fn new(spec: GroupSpec) -> Self {
        let rules = spec
            .rules
            .iter()
            .map(|r| RuleStatus {
                spec: r.clone(),
                health: Health::Unknown,
                last_error: None,
                last_evaluation_ms: None,
                evaluation_time: Duration::ZERO,
            })
            .collect();
        Group {
            status: GroupStatus {
                name: spec.name.clone(),
                file: spec.file.clone(),
                interval_ms: spec.interval_ms,
                limit: spec.limit,
                rules,
                last_evaluation_ms: None,
                evaluation_time: Duration::ZERO,
            },
            previous: vec![HashMap::new(); spec.rules.len()],
            orphaned: Vec::new(),
            last_ts: None,
            spec,
        }
    }

    /// The group's definition.
    pub fn spec(&self) -> &GroupSpec {
        &self.spec
    }

    /// The group's status.
    pub fn status(&self) -> &GroupStatus {
        &self.status
    }

    /// Takes over the series a previous version of this group wrote, for rules that are the
    /// same (name, query and labels), so a reload does not lose their staleness tracking; the
    /// series of rules that are gone are marked stale at the next evaluation.
    pub fn copy_state(&mut self, old: &Group) {
        self.orphaned = old.orphaned.clone();
        self.last_ts = old.last_ts;
        for (j, o) in old.spec.rules.iter().enumerate() {
            let kept = self
                .spec
                .rules
                .iter()
                .any(|r| r.name == o.name && r.query == o.query && r.labels == o.labels);
            if !kept {
                self.orphaned.extend(old.previous[j].keys().cloned());
            }
        }
        for (i, rule) in self.spec.rules.iter().enumerate() {
            let same = old
                .spec
                .rules
                .iter()
                .position(|o| o.name == rule.name && o.query == rule.query && o.labels == rule.labels);
            if let Some(j) = same {
                self.previous[i] = old.previous[j].clone();
                let (health, err, at, took) = {
                    let s = &old.status.rules[j];
                    (s.health, s.last_error.clone(), s.last_evaluation_ms, s.evaluation_time)
                };
                let s = &mut self.status.rules[i];
                (s.health, s.last_error, s.last_evaluation_ms, s.evaluation_time) = (health, err, at, took);
            }
        }
    }

    /// Evaluates every rule at `ts` (the group's evaluation timestamp) and writes the output
    /// through appenders from `appender`, one batch per rule.
    pub fn evaluate(
        &mut self,
        ts: i64,
        querier: &dyn Querier,
        appender: &dyn Fn() -> Box<dyn Appender>,
        base: &EvalSettings,
    ) {
        let started = Instant::now();
        let wall = now_ms();
        let query_ts = ts - self.spec.query_offset_ms;
        if !self.orphaned.is_empty() {
            let mut app = appender();
            for l in self.orphaned.drain(..) {
                let _ = app.append(&l, query_ts, stale_nan());
            }
            if let Err(e) = app.commit() {
                tracing::warn!(group = %self.spec.name, error = %e, "writing staleness markers of removed rules");
            }
        }
        for (i, rule) in self.spec.rules.iter().enumerate() {
            let rule_started = Instant::now();
            let result = record(rule, query_ts, querier, base, self.spec.limit).and_then(|series| {
                let mut app = appender();
                for (labels, v) in &series {
                    if let Err(e) = app.append(labels, query_ts, *v) {
                        tracing::debug!(rule = %rule.name, series = %labels, error = %e, "recording rule sample refused");
                    }
                }
                let now: HashMap<Labels, ()> = series.into_iter().map(|(l, _)| (l, ())).collect();
                for gone in self.previous[i].keys().filter(|l| !now.contains_key(*l)) {
                    let _ = app.append(gone, query_ts, stale_nan());
                }
                app.commit().map_err(|e| format!("writing the output: {e}"))?;
                self.previous[i] = now;
                Ok(())
            });
            let s = &mut self.status.rules[i];
            s.last_evaluation_ms = Some(wall);
            s.evaluation_time = rule_started.elapsed();
            match result {
                Ok(()) => (s.health, s.last_error) = (Health::Ok, None),
                Err(e) => {
                    tracing::warn!(group = %self.spec.name, rule = %rule.name, error = %e, "evaluating rule failed");
                    (s.health, s.last_error) = (Health::Err, Some(e));
                }
            }
        }
        self.status.last_evaluation_ms = Some(wall);
        self.status.evaluation_time = started.elapsed();
        self.last_ts = Some(query_ts);
    }

    /// Writes staleness markers, at `now_ms` (or just after the last output), for every
    /// series the group wrote last: the group was removed.
    pub fn mark_stale(&mut self, now_ms: i64, appender: &dyn Fn() -> Box<dyn Appender>) {
        let ts = self.last_ts.map_or(now_ms, |t| now_ms.max(t + 1));
        let mut app = appender();
        for l in self.orphaned.drain(..) {
            let _ = app.append(&l, ts, stale_nan());
        }
        for series in self.previous.iter_mut() {
            for l in series.keys() {
                let _ = app.append(l, ts, stale_nan());
            }
            series.clear();
        }
        if let Err(e) = app.commit() {
            tracing::warn!(group = %self.spec.name, error = %e, "writing staleness markers of a removed group");
        }
    }
}

/// One recording rule's output at `t`: the expression's series renamed and relabelled.
fn record(
    rule: &RecordingRuleSpec,
    t: i64,
    querier: &dyn Querier,
    base: &EvalSettings,
    limit: u64,
) -> Result<Vec<(Labels, f64)>, String> {
    let opts = QueryOptions {
        start: t,
        end: t,
        range_query: false,
        deadline: Some(Instant::now() + base.timeout),
        ..base.query.clone()
    };
    let eval = evaluate(&rule.plan, querier, &opts).map_err(|e| e.to_string())?;
    let vector = match eval.result {
        QueryResult::Vector(v) => v.into_iter().map(|(l, _, v)| (l, v)).collect(),
        QueryResult::Scalar(_, v) => vec![(Labels::new(), v)],
        _ => return Err("rule result is not a vector or scalar".into()),
    };
    let mut out: Vec<(Labels, f64)> = vector
        .into_iter()
        .map(|(mut l, v)| {
            l.set(METRIC_NAME, &rule.name);
            for (n, val) in &rule.labels {
                l.set(n, val);
            }
            (l, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("vector contains metrics with the same labelset after applying rule labels".into());
    }
    if limit > 0 && out.len() as u64 > limit {
        return Err(format!("exceeded limit of {limit} with {} series", out.len()));
    }
    Ok(out)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs rule groups on the wall clock, one thread per group, and replaces them on reload.
pub struct Manager {
    querier: Arc<dyn Querier>,
    appender: Arc<dyn Fn() -> Box<dyn Appender> + Send + Sync>,
    base: EvalSettings,
    running: Mutex<Vec<Running>>,
}

struct Running {
    group: Arc<Mutex<Group>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Manager {
    /// A manager that reads with `querier`, writes with `appender` and evaluates with the
    /// server's query settings.
    pub fn new(
        querier: Arc<dyn Querier>,
        appender: Arc<dyn Fn() -> Box<dyn Appender> + Send + Sync>,
        base: EvalSettings,
    ) -> Arc<Self> {
        Arc::new(Manager { querier, appender, base, running: Mutex::new(Vec::new()) })
    }

    /// Replaces the running groups with `groups`. A group with the same file and name as a
    /// running one takes over its state; a running group that is gone writes staleness
    /// markers for its series.
    pub fn update(&self, groups: Vec<GroupSpec>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let old: Vec<Running> = std::mem::take(&mut *running);
        for r in &old {
            r.stop.store(true, Ordering::SeqCst);
        }
        let mut old_groups = Vec::new();
        for mut r in old {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
            old_groups.push(r.group);
        }
        for spec in groups {
            let mut group = Group::new(spec);
            if let Some(i) = old_groups.iter().position(|g| {
                let g = g.lock().unwrap_or_else(|e| e.into_inner());
                g.spec.file == group.spec.file && g.spec.name == group.spec.name
            }) {
                let prev = old_groups.swap_remove(i);
                group.copy_state(&prev.lock().unwrap_or_else(|e| e.into_inner()));
            }
            running.push(self.start(group));
        }
        for gone in old_groups {
            gone.lock().unwrap_or_else(|e| e.into_inner()).mark_stale(now_ms(), &*self.appender);
        }
    }

    fn start(&self, group: Group) -> Running {
        let group = Arc::new(Mutex::new(group));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (Arc::clone(&group), Arc::clone(&stop));
        let (querier, appender, base) =
            (Arc::clone(&self.querier), Arc::clone(&self.appender), self.base.clone());
        let thread = std::thread::Builder::new()
            .name("rule-group".into())
            // deeply nested expressions recurse through evaluation
            .stack_size(16 << 20)
            .spawn(move || run_group(&g, &s, &*querier, &*appender, &base))
            .ok();
        Running { group, stop, thread }
    }

    /// Stops every group (at shutdown; no staleness markers are written).
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.iter() {
            r.stop.store(true, Ordering::SeqCst);
        }
        for r in running.iter_mut() {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
        running.clear();
    }

    /// The status of every group, in configuration order.
    pub fn groups(&self) -> Vec<GroupStatus> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.iter().map(|r| r.group.lock().unwrap_or_else(|e| e.into_inner()).status.clone()).collect()
    }
}

/// A group's loop: wait for the next aligned evaluation time, evaluate, repeat; checks `stop`
/// at least every 100 ms.
fn run_group(
    group: &Mutex<Group>,
    stop: &AtomicBool,
    querier: &dyn Querier,
    appender: &(dyn Fn() -> Box<dyn Appender> + Send + Sync),
    base: &EvalSettings,
) {
    let interval = group.lock().unwrap_or_else(|e| e.into_inner()).spec.interval_ms.max(1);
    let first = group.lock().unwrap_or_else(|e| e.into_inner()).spec.eval_timestamp(now_ms()) + interval + 1;
    let mut next = first;
    while !stop.load(Ordering::SeqCst) {
        let now = now_ms();
        if now < next {
            std::thread::sleep(Duration::from_millis((next - now).min(100) as u64));
            continue;
        }
        // skipped evaluations (a slow group, a suspended machine) are not caught up, as in
        // Prometheus: the next one is the latest aligned time
        let ts = group.lock().unwrap_or_else(|e| e.into_inner()).spec.eval_timestamp(now);
        group.lock().unwrap_or_else(|e| e.into_inner()).evaluate(ts, querier, appender, base);
        // + 1: the true evaluation time has a sub-millisecond part `ts` truncated away
        next = ts + interval + 1;
    }
}
