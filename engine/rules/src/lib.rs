//! Rule groups evaluated at their interval ("tick" evaluation), as Prometheus's rule manager
//! evaluates them: each group at timestamps aligned to its interval by a hash of its name and
//! file, its rules in order, each rule's output committed before the next rule runs.
//!
//! A recording rule's output series are its expression's result with `__name__` set to the
//! rule's name and the rule's labels applied; an alerting rule's are the `ALERTS` and
//! `ALERTS_FOR_STATE` series of its pending and firing alerts (see [`alerting`]). Both are
//! written at the evaluation timestamp; a series the previous evaluation wrote and this one
//! did not gets a staleness marker, so queries stop seeing it at once. The incremental
//! (dataflow) evaluation of the same rules builds on this.
#![warn(missing_docs)]

pub mod alerting;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promflow_storage::{now_ms, stale_nan, Appender, Labels, Querier, METRIC_NAME};

use promflow_incremental::live::{InstallHold, LiveViews, ViewChange};

pub use alerting::{
    Alert, AlertState, AlertingRuleSpec, AlertingState, ElementChange, Notification, NotifyFn,
};

use promflow_batch::{evaluate_with, AggregatePushdown, QueryOptions, QueryResult};
use promflow_incremental::{Grain, Operand, Value};
use promflow_plan::Plan;

/// Compiles a PromQL expression (for the `query` template function): given by the wiring,
/// since the engine knows no query language.
pub type CompileFn = Arc<dyn Fn(&str) -> Result<Plan, String> + Send + Sync>;

/// Where a group is evaluated, in a cluster with a dataflow computation.
pub enum ClusterTurn {
    /// The computation is not formed: every node evaluates the group in batch.
    Batch,
    /// The computation is formed and this node evaluates the group, reading its views.
    Here(Arc<LiveViews>),
    /// The computation is formed and another node evaluates the group: this one skips it.
    Elsewhere,
}

/// Says where a group (by its definition) is evaluated now, in a cluster with a dataflow
/// computation.
pub type ClusterViewsFn = Arc<dyn Fn(&GroupSpec) -> ClusterTurn + Send + Sync>;

/// Opens a batch for a rule group's output: storage's own appender, or in a cluster one
/// that stores each series on the nodes that own it.
pub type AppenderFn = Arc<dyn Fn() -> Box<dyn Appender> + Send + Sync>;

/// One rule evaluation, as `global.query_log_file` records it.
pub struct LoggedRuleQuery<'a> {
    /// The group's rule file.
    pub file: &'a str,
    /// The group's name.
    pub group: &'a str,
    /// The rule's expression, on one line.
    pub query: &'a str,
    /// The evaluation time (the group's timestamp less its `query_offset`), milliseconds.
    pub ts_ms: i64,
    /// How long the rule took, output written included.
    pub duration: Duration,
    /// Why it failed, for a failed evaluation.
    pub error: Option<&'a str>,
}

/// Receives every rule evaluation, for the query log.
pub type QueryLogFn = Arc<dyn Fn(&LoggedRuleQuery<'_>) + Send + Sync>;

/// Locks `m`, through a poisoning panic: the summaries stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long rule evaluations took, over every group (Prometheus's
/// `prometheus_rule_evaluation_duration_seconds` and `prometheus_rule_group_duration_seconds`).
#[derive(Default)]
pub struct RuleTimings {
    rules: Mutex<promflow_storage::Summary>,
    groups: Mutex<promflow_storage::Summary>,
}

/// How rules' queries are evaluated: the server's query and rule settings.
#[derive(Clone)]
pub struct EvalSettings {
    /// Lookback, sample limit, name removal; `start`, `end` and `deadline` are set per rule.
    pub query: QueryOptions,
    /// `--query.timeout`, per rule evaluation.
    pub timeout: Duration,
    /// Compiles the expressions of `query` in alert templates (`None`: `query` fails).
    pub compile: Option<CompileFn>,
    /// `--rules.alert.for-outage-tolerance`, milliseconds.
    pub outage_tolerance_ms: i64,
    /// `--rules.alert.for-grace-period`, milliseconds.
    pub for_grace_period_ms: i64,
    /// `--rules.alert.resend-delay`, milliseconds.
    pub resend_delay_ms: i64,
    /// Where firing and resolved alerts go (`None`: nowhere).
    pub notify: Option<NotifyFn>,
    /// Views that keep rule expressions current (`--rules.evaluation-mode=event`); `None`:
    /// every rule is evaluated in batch at every tick.
    pub views: Option<Arc<LiveViews>>,
    /// In a cluster with a dataflow computation, where each group is evaluated: while the
    /// computation is formed, on one node, which reads its views at its evaluations and
    /// watches its alerts' views between them (no views are installed at a group's start:
    /// the computation installs them as it forms); while it is not, on every node, in batch.
    pub cluster_views: Option<ClusterViewsFn>,
    /// Told of every rule evaluation (`None`: nothing is logged).
    pub query_log: Option<QueryLogFn>,
    /// Where evaluation times are summed up.
    pub timings: Arc<RuleTimings>,
    /// In a cluster, where the aggregations of rules evaluated in batch are evaluated in
    /// parts (on the nodes that hold the series) instead of over every node's samples.
    pub pushdown: Option<Arc<dyn PushdownFor>>,
}

/// Where the aggregations of one evaluation are evaluated in parts: a cluster's nodes.
pub trait PushdownFor: Send + Sync {
    /// The pushdown of one evaluation, with `opts`, of the PromQL expression `text`, which
    /// compiles to the plan evaluated; `None` when there is none.
    fn pushdown(&self, text: &str, opts: &QueryOptions) -> Option<Box<dyn AggregatePushdown + '_>>;
}

impl Default for EvalSettings {
    /// Prometheus's defaults: a 5-minute lookback, `--query.timeout=2m`, an outage tolerance
    /// of 1h, a grace period of 10m, a resend delay of 1m; no template queries, no notifier,
    /// no views (every rule in batch).
    fn default() -> Self {
        EvalSettings {
            query: QueryOptions::instant(0),
            timeout: Duration::from_secs(120),
            compile: None,
            outage_tolerance_ms: 3_600_000,
            for_grace_period_ms: 600_000,
            resend_delay_ms: 60_000,
            notify: None,
            views: None,
            cluster_views: None,
            query_log: None,
            timings: Arc::default(),
            pushdown: None,
        }
    }
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

/// A rule of either kind.
#[derive(Clone, Debug)]
pub enum RuleSpec {
    /// A recording rule.
    Record(RecordingRuleSpec),
    /// An alerting rule.
    Alert(AlertingRuleSpec),
}

impl RuleSpec {
    /// The `record` or `alert` name.
    pub fn name(&self) -> &str {
        match self {
            RuleSpec::Record(r) => &r.name,
            RuleSpec::Alert(a) => &a.name,
        }
    }

    /// The compiled expression.
    pub fn plan(&self) -> &Plan {
        match self {
            RuleSpec::Record(r) => &r.plan,
            RuleSpec::Alert(a) => &a.plan,
        }
    }

    /// The expression as printed.
    pub fn query(&self) -> &str {
        match self {
            RuleSpec::Record(r) => &r.query,
            RuleSpec::Alert(a) => &a.query,
        }
    }

    /// The label templates as written, (name, text).
    pub fn labels(&self) -> Vec<(String, String)> {
        match self {
            RuleSpec::Record(r) => r.labels.clone(),
            RuleSpec::Alert(a) => a.labels.iter().map(|(n, t, _)| (n.clone(), t.clone())).collect(),
        }
    }

    /// Whether a reload left this rule unchanged (Prometheus matches rules by name and
    /// labels; the query is compared too, so a changed expression starts afresh).
    fn same_as(&self, other: &RuleSpec) -> bool {
        self.name() == other.name()
            && self.query() == other.query()
            && self.labels() == other.labels()
            && matches!(
                (self, other),
                (RuleSpec::Record(_), RuleSpec::Record(_)) | (RuleSpec::Alert(_), RuleSpec::Alert(_))
            )
    }
}

/// A group of rules.
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
    /// `limit`: most series a recording rule may write, or alerts an alerting rule may
    /// have (0: no limit).
    pub limit: u64,
    /// Whether the group's rules read views and its alerts move with their data (event mode,
    /// when the manager has views), or are evaluated from scratch at each tick.
    pub event_mode: bool,
    /// The rules, in order.
    pub rules: Vec<RuleSpec>,
}

impl GroupSpec {
    /// The expressions of the rules that read views (their text and plan), each with the
    /// grain it is read at: recording rules only at the group's evaluations, alerts at any
    /// time.
    pub fn view_plans(&self) -> Vec<(&str, &Plan, Option<Grain>)> {
        let grain = self.grain();
        self.rules
            .iter()
            .zip(view_rules(self))
            .filter(|(_, ok)| *ok)
            .map(|(rule, _)| match rule {
                RuleSpec::Record(r) => (r.query.as_str(), &r.plan, Some(grain)),
                RuleSpec::Alert(a) => (a.query.as_str(), &a.plan, None),
            })
            .collect()
    }

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

    /// The group's evaluation times, at which its recording rules' views are read.
    pub fn grain(&self) -> Grain {
        // from a positive time: before 0 the division truncates sub-millisecond offsets the
        // other way
        Grain::new(self.interval_ms, self.eval_timestamp(2 * self.interval_ms.max(1)))
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
    pub spec: RuleSpec,
    /// Health after the last evaluation.
    pub health: Health,
    /// The last evaluation's error.
    pub last_error: Option<String>,
    /// Wall-clock start of the last evaluation, milliseconds.
    pub last_evaluation_ms: Option<i64>,
    /// How long the last evaluation took.
    pub evaluation_time: Duration,
    /// An alerting rule's pending and firing alerts.
    pub alerts: Vec<Alert>,
}

impl RuleStatus {
    /// An alerting rule's state: firing if any alert fires, else pending if any is pending.
    pub fn alert_state(&self) -> AlertState {
        if self.alerts.iter().any(|a| a.state == AlertState::Firing) {
            AlertState::Firing
        } else if self.alerts.iter().any(|a| a.state == AlertState::Pending) {
            AlertState::Pending
        } else {
            AlertState::Inactive
        }
    }
}

/// What `/api/v1/rules` reports of a group.
#[derive(Clone, Debug)]
pub struct GroupStatus {
    /// The group's name.
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
    /// Evaluations of the group so far.
    pub iterations: u64,
    /// Evaluations skipped because the group ran late.
    pub missed_iterations: u64,
    /// Rule evaluations so far.
    pub rule_evaluations: u64,
    /// Rule evaluations that failed.
    pub rule_failures: u64,
}

/// A rule's state between evaluations.
#[derive(Clone, Debug, Default)]
struct RuleState {
    /// The series written by the last successful evaluation.
    previous: HashMap<Labels, ()>,
    /// An alerting rule's alerts.
    alerting: AlertingState,
}

/// A group with its evaluation state.
pub struct Group {
    status: GroupStatus,
    spec: GroupSpec,
    state: Vec<RuleState>,
    /// Series of rules a reload removed from this group: marked stale at the next evaluation.
    orphaned: Vec<Labels>,
    /// The timestamp of the last evaluation's output.
    last_ts: Option<i64>,
    /// Per rule: whether it may read a view (see [`view_rules`]).
    view_ok: Vec<bool>,
    /// Whether the rules' views were installed before the group's first reads
    /// ([`LiveViews::prepare`]); a reload makes a new group.
    views_prepared: bool,
}

impl Group {
    /// A group not evaluated yet. With `restore`, its alerting rules restore their `for`
    /// state (see [`Group::restore_for_state`]) before they write `ALERTS` series.
    pub fn new(spec: GroupSpec, restore: bool) -> Self {
        let rules = spec
            .rules
            .iter()
            .map(|r| RuleStatus {
                spec: r.clone(),
                health: Health::Unknown,
                last_error: None,
                last_evaluation_ms: None,
                evaluation_time: Duration::ZERO,
                alerts: Vec::new(),
            })
            .collect();
        let state = spec
            .rules
            .iter()
            .map(|_| RuleState {
                alerting: AlertingState { restored: !restore, ..Default::default() },
                ..Default::default()
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
                iterations: 0,
                missed_iterations: 0,
                rule_evaluations: 0,
                rule_failures: 0,
            },
            state,
            orphaned: Vec::new(),
            last_ts: None,
            view_ok: view_rules(&spec),
            views_prepared: false,
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

    /// Takes over the state of a previous version of this group for rules that are the same
    /// (name, query and labels), so a reload loses neither staleness tracking nor alert
    /// state; the series of rules that are gone are marked stale at the next evaluation.
    pub fn copy_state(&mut self, old: &Group) {
        self.orphaned = old.orphaned.clone();
        self.last_ts = old.last_ts;
        for (j, o) in old.spec.rules.iter().enumerate() {
            if !self.spec.rules.iter().any(|r| r.same_as(o)) {
                self.orphaned.extend(old.state[j].previous.keys().cloned());
            }
        }
        for (i, rule) in self.spec.rules.iter().enumerate() {
            if let Some(j) = old.spec.rules.iter().position(|o| o.same_as(rule)) {
                self.state[i] = old.state[j].clone();
                let o = &old.status.rules[j];
                let s = &mut self.status.rules[i];
                (s.health, s.last_error, s.last_evaluation_ms, s.evaluation_time, s.alerts) = (
                    o.health,
                    o.last_error.clone(),
                    o.last_evaluation_ms,
                    o.evaluation_time,
                    o.alerts.clone(),
                );
            }
        }
    }

    /// Installs the views of the rules that read them, from history at the evaluation at `ts`,
    /// once (the group's first evaluation). Called before the views' clock passes `ts`, so
    /// that their history counts at `ts` and the first evaluation reads them; installed later,
    /// a view is evaluated in batch that once. The hold returned keeps the clock from passing
    /// `ts`: drop it after the evaluation at `ts`.
    pub fn prepare_views<'s>(&mut self, ts: i64, settings: &'s EvalSettings) -> Option<InstallHold<'s>> {
        let views = settings.views.as_deref().filter(|_| !self.views_prepared)?;
        self.views_prepared = true;
        let plans = self.spec.view_plans().into_iter().map(|(_, plan, grain)| (plan, grain));
        Some(views.prepare(plans, ts - self.spec.query_offset_ms))
    }

    /// Evaluates every rule at `ts` (the group's evaluation timestamp) and writes the output
    /// through appenders from `appender`, one batch per rule.
    pub fn evaluate(
        &mut self,
        ts: i64,
        querier: &dyn Querier,
        appender: &dyn Fn() -> Box<dyn Appender>,
        settings: &EvalSettings,
    ) {
        let turn = settings.cluster_views.as_ref().map(|turn| turn(&self.spec));
        if matches!(turn, Some(ClusterTurn::Elsewhere)) {
            self.hand_over();
            return;
        }
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
        let _first = self.prepare_views(ts, settings);
        let grain = self.spec.grain();
        let cluster_views = match turn {
            Some(ClusterTurn::Here(views)) => Some(views),
            _ => None,
        };
        for (i, rule) in self.spec.rules.iter().enumerate() {
            let rule_started = Instant::now();
            let state = &mut self.state[i];
            let views = settings.views.as_deref().or(cluster_views.as_deref()).filter(|_| self.view_ok[i]);
            let output = match rule {
                RuleSpec::Record(r) => {
                    record(r, query_ts, querier, settings, views.map(|v| (v, grain)), self.spec.limit)
                }
                RuleSpec::Alert(a) => alerting::eval(
                    a,
                    &mut state.alerting,
                    query_ts,
                    querier,
                    settings,
                    views,
                    self.spec.limit,
                )
                .map(|series| series.into_iter().map(|(l, v)| (l, Value::float(v))).collect()),
            };
            let result = output.and_then(|series| {
                let mut app = appender();
                for (labels, v) in &series {
                    let appended = match v.operand() {
                        Operand::Float(v) => app.append(labels, query_ts, v),
                        Operand::Histogram(h) => app.append_histogram(labels, query_ts, h.clone()),
                    };
                    if let Err(e) = appended {
                        tracing::debug!(rule = %rule.name(), series = %labels, error = %e, "rule output sample refused");
                    }
                }
                let now: HashMap<Labels, ()> = series.into_iter().map(|(l, _)| (l, ())).collect();
                for gone in state.previous.keys().filter(|l| !now.contains_key(*l)) {
                    let _ = app.append(gone, query_ts, stale_nan());
                }
                app.commit().map_err(|e| format!("writing the output: {e}"))?;
                state.previous = now;
                if let (RuleSpec::Alert(a), Some(notify)) = (rule, &settings.notify) {
                    let due =
                        alerting::to_send(a, &mut state.alerting, ts, settings.resend_delay_ms, self.spec.interval_ms);
                    if !due.is_empty() {
                        notify(due);
                    }
                }
                Ok(())
            });
            let s = &mut self.status.rules[i];
            s.last_evaluation_ms = Some(wall);
            s.evaluation_time = rule_started.elapsed();
            lock(&settings.timings.rules).observe(s.evaluation_time.as_secs_f64());
            if let Some(log) = &settings.query_log {
                log(&LoggedRuleQuery {
                    file: &self.spec.file,
                    group: &self.spec.name,
                    query: rule.query(),
                    ts_ms: query_ts,
                    duration: s.evaluation_time,
                    error: result.as_ref().err().map(String::as_str),
                });
            }
            s.alerts = state.alerting.active_alerts();
            self.status.rule_evaluations += 1;
            match result {
                Ok(()) => (s.health, s.last_error) = (Health::Ok, None),
                Err(e) => {
                    self.status.rule_failures += 1;
                    tracing::warn!(group = %self.spec.name, rule = %rule.name(), error = %e, "evaluating rule failed");
                    (s.health, s.last_error) = (Health::Err, Some(e));
                }
            }
        }
        self.status.last_evaluation_ms = Some(wall);
        self.status.evaluation_time = started.elapsed();
        lock(&settings.timings.groups).observe(self.status.evaluation_time.as_secs_f64());
        self.status.iterations += 1;
        self.last_ts = Some(query_ts);
    }

    /// Leaves the group to the node that evaluates it now, in a cluster: this node's series
    /// and alerts are forgotten (that node writes the series, keeps the alerts and sends
    /// them), and when this node evaluates the group again, each alert takes its `for`
    /// state from the `ALERTS_FOR_STATE` the other node wrote
    /// ([`alerting::AlertingState::taking_over`]).
    fn hand_over(&mut self) {
        self.orphaned.clear();
        for (state, status) in self.state.iter_mut().zip(&mut self.status.rules) {
            state.previous.clear();
            state.alerting.hand_over();
            status.alerts.clear();
        }
    }

    /// Event mode: applies alerting rule `i`'s result as its view changed at `t`, and hands
    /// the alerts due to the notifier at once (the `ALERTS` series are still written at the
    /// group's evaluations). Returns when the rule must be applied again with no change of
    /// data (a pending alert reaching its `for`).
    pub fn apply_view(
        &mut self,
        i: usize,
        t: i64,
        change: ViewChange,
        querier: &dyn Querier,
        settings: &EvalSettings,
    ) -> Option<i64> {
        let RuleSpec::Alert(a) = self.spec.rules.get(i)? else { return None };
        let st = &mut self.state[i].alerting;
        let changes = match change {
            ViewChange::Whole(vector) => st.changes_to(vector),
            ViewChange::Elements(changes) => changes,
        };
        let query_ts = t - self.spec.query_offset_ms;
        let changed = alerting::apply_changes(a, st, changes, query_ts, querier, settings, self.spec.limit)
            .unwrap_or_else(|e| {
                tracing::warn!(group = %self.spec.name, rule = %a.name, error = %e, "applying a view change failed");
                true
            });
        if let Some(notify) = &settings.notify {
            let due = alerting::to_send(a, st, t, settings.resend_delay_ms, self.spec.interval_ms);
            if !due.is_empty() {
                notify(due);
            }
        }
        // the API's alerts show values as of the last evaluation, as Prometheus's do, and
        // states as of their last change
        if changed {
            self.status.rules[i].alerts = st.active_alerts();
        }
        alerting::next_firing(a, st)
    }

    /// The alerting rules whose views drive them in event mode: (index, expression).
    pub fn event_rules(&self) -> Vec<(usize, Plan)> {
        self.spec
            .rules
            .iter()
            .enumerate()
            .filter(|(i, _)| self.view_ok[*i])
            .filter_map(|(i, r)| match r {
                RuleSpec::Alert(a) => Some((i, a.plan.clone())),
                RuleSpec::Record(_) => None,
            })
            .collect()
    }

    /// Restores the `for` state of the group's alerting rules from `ALERTS_FOR_STATE` at
    /// `now_ms` (Prometheus does it after the second evaluation following a start).
    pub fn restore_for_state(&mut self, now_ms: i64, querier: &dyn Querier, settings: &EvalSettings) {
        for (i, rule) in self.spec.rules.iter().enumerate() {
            if let RuleSpec::Alert(a) = rule {
                let st = &mut self.state[i].alerting;
                if !st.restored {
                    alerting::restore_for_state(
                        a,
                        st,
                        now_ms,
                        querier,
                        settings.outage_tolerance_ms,
                        settings.for_grace_period_ms,
                    );
                    self.status.rules[i].alerts = st.active_alerts();
                }
            }
        }
    }

    /// Whether some alerting rule still waits for its `for` state to be restored.
    pub fn needs_restore(&self) -> bool {
        self.spec
            .rules
            .iter()
            .zip(&self.state)
            .any(|(r, s)| matches!(r, RuleSpec::Alert(_)) && !s.alerting.restored)
    }

    /// Writes staleness markers, at `now_ms` (or just after the last output), for every
    /// series the group wrote last: the group was removed.
    pub fn mark_stale(&mut self, now_ms: i64, appender: &dyn Fn() -> Box<dyn Appender>) {
        let ts = self.last_ts.map_or(now_ms, |t| now_ms.max(t + 1));
        let mut app = appender();
        for l in self.orphaned.drain(..) {
            let _ = app.append(&l, ts, stale_nan());
        }
        for state in self.state.iter_mut() {
            for l in state.previous.keys() {
                let _ = app.append(l, ts, stale_nan());
            }
            state.previous.clear();
        }
        if let Err(e) = app.commit() {
            tracing::warn!(group = %self.spec.name, error = %e, "writing staleness markers of a removed group");
        }
    }
}

/// An instant query at `t` as a rule runs it: a vector (a scalar becomes one series without
/// labels), or Prometheus's error for other result types. Its float elements only (alerts
/// and templates read values).
fn instant_query(
    (plan, text): (&Plan, Option<&str>),
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
    views: Option<(&LiveViews, Option<Grain>)>,
) -> Result<Vec<(Labels, f64)>, String> {
    let rows = rows((plan, text), t, querier, settings, views)?;
    Ok(rows.into_iter().filter_map(|(l, v)| Some((l, v.as_float()?))).collect())
}

/// [`instant_query`] with the histogram elements too. From `views` (read at the grain
/// given, if any) when given and the plan is maintained there; otherwise in batch, the
/// aggregations in parts where `settings` has a pushdown and `text` (the PromQL the plan was
/// compiled from) is given.
fn rows(
    (plan, text): (&Plan, Option<&str>),
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
    views: Option<(&LiveViews, Option<Grain>)>,
) -> Result<Vec<(Labels, Value)>, String> {
    if let Some(read) = views.and_then(|(v, grain)| v.read(plan, t, grain)) {
        return read;
    }
    let opts = QueryOptions {
        start: t,
        end: t,
        range_query: false,
        deadline: Some(Instant::now() + settings.timeout),
        ..settings.query.clone()
    };
    let pushdown = text.and_then(|text| settings.pushdown.as_ref()?.pushdown(text, &opts));
    let eval = evaluate_with(plan, querier, &opts, pushdown.as_deref()).map_err(|e| e.to_string())?;
    let mut rows: Vec<(Labels, Value)> = match eval.result {
        QueryResult::Vector(v) => v.into_iter().map(|(l, _, v)| (l, Value::float(v))).collect(),
        QueryResult::Scalar(_, v) => vec![(Labels::new(), Value::float(v))],
        _ => return Err("rule result is not a vector or scalar".into()),
    };
    let histograms = eval.histograms.into_iter();
    rows.extend(
        histograms.filter_map(|s| Some((s.labels, Value::histogram(s.samples.into_iter().next()?.h)))),
    );
    Ok(rows)
}

/// One recording rule's output at `t`: the expression's series renamed and relabelled.
fn record(
    rule: &RecordingRuleSpec,
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
    views: Option<(&LiveViews, Grain)>,
    limit: u64,
) -> Result<Vec<(Labels, Value)>, String> {
    let views = views.map(|(v, grain)| (v, Some(grain)));
    let mut out: Vec<(Labels, Value)> = rows((&rule.plan, Some(&rule.query)), t, querier, settings, views)?
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

/// The wall clock in milliseconds.
/// Runs rule groups on the wall clock, one thread per group, and replaces them on reload.
pub struct Manager {
    querier: Arc<dyn Querier>,
    appender: AppenderFn,
    base: EvalSettings,
    running: Mutex<Vec<Running>>,
    /// What readers of the groups' status see: each running group and its published status,
    /// replaced once an update is done. An update holds `running` while it installs the
    /// views of the new groups' alerts, which takes minutes at a million series; the API and
    /// `/metrics` show the groups before it meanwhile.
    shown: Mutex<Vec<Shown>>,
    /// Whether groups have been started once: only the groups of the first start restore
    /// their alerts' `for` state, as in Prometheus.
    started: AtomicBool,
}

/// A running group as readers of its status find it ([`Manager::groups`]).
#[derive(Clone)]
struct Shown {
    group: Arc<Mutex<Group>>,
    published: Arc<Mutex<GroupStatus>>,
}

struct Running {
    group: Arc<Mutex<Group>>,
    /// The group's status after its last evaluation: what readers get while an evaluation
    /// holds the group (it may hold it for as long as a read of a view waits).
    published: Arc<Mutex<GroupStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Event mode: the watches that drive the group's alerting rules.
    watches: Vec<u64>,
}

impl Running {
    /// Stops the group's thread and its watches, and waits for the thread.
    fn halt(&mut self, views: Option<&LiveViews>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(views) = views {
            for id in self.watches.drain(..) {
                views.unwatch(id);
            }
        }
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Manager {
    /// A manager that reads with `querier`, writes with `appender` and evaluates with the
    /// server's query settings.
    pub fn new(querier: Arc<dyn Querier>, appender: AppenderFn, base: EvalSettings) -> Arc<Self> {
        Arc::new(Manager {
            querier,
            appender,
            base,
            running: Mutex::new(Vec::new()),
            shown: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
        })
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
            r.halt(self.views());
            old_groups.push(r.group);
        }
        let restore = !self.started.swap(true, Ordering::SeqCst);
        for spec in groups {
            let mut group = Group::new(spec, restore);
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
        // the views of rules that are gone go with them (a changed rule is a new expression)
        if let Some(views) = self.views() {
            let plans: Vec<Plan> = running
                .iter()
                .flat_map(|r| {
                    let g = r.group.lock().unwrap_or_else(|e| e.into_inner());
                    g.spec.rules.iter().map(|rule| rule.plan().clone()).collect::<Vec<_>>()
                })
                .collect();
            views.retire_rule_views(|p| plans.contains(p));
        }
        let shown = running
            .iter()
            .map(|r| Shown { group: Arc::clone(&r.group), published: Arc::clone(&r.published) })
            .collect();
        *lock(&self.shown) = shown;
    }

    fn start(&self, group: Group) -> Running {
        let published = Arc::new(Mutex::new(group.status.clone()));
        let group = Arc::new(Mutex::new(group));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, p) = (Arc::clone(&group), Arc::clone(&stop), Arc::clone(&published));
        let (querier, appender, base) =
            (Arc::clone(&self.querier), Arc::clone(&self.appender), self.base.clone());
        let thread = std::thread::Builder::new()
            .name("rule-group".into())
            // deeply nested expressions recurse through evaluation
            .stack_size(16 << 20)
            .spawn(move || run_group(&g, &p, &s, &querier, &*appender, &base))
            .ok();
        let watches = self
            .views()
            .map(|v| watch_alerts(v, &group, &published, &self.querier, &self.base))
            .unwrap_or_default();
        Running { group, published, stop, thread, watches }
    }

    /// Stops every group (at shutdown; no staleness markers are written).
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.iter() {
            r.stop.store(true, Ordering::SeqCst);
        }
        for r in running.iter_mut() {
            r.halt(self.views());
        }
        running.clear();
    }

    /// The status of every group, in configuration order: as it is, or, for a group being
    /// evaluated, as its last evaluation left it (`/metrics` and the API wait neither for an
    /// evaluation nor for an update, during which they see the groups before it).
    pub fn groups(&self) -> Vec<GroupStatus> {
        // taken out first: a reader does not hold the list while it tries each group
        let shown: Vec<Shown> = lock(&self.shown).clone();
        shown
            .iter()
            .map(|s| match s.group.try_lock() {
                Ok(g) => g.status.clone(),
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().status.clone(),
                Err(std::sync::TryLockError::WouldBlock) => lock(&s.published).clone(),
            })
            .collect()
    }

    /// Writes Prometheus's rule-group metrics, labelled `rule_group="<file>;<name>"`.
    pub fn write_metrics(&self, w: &mut promflow_storage::MetricsWriter) {
        use promflow_storage::MetricKind::{Counter, Gauge};
        type Value = fn(&GroupStatus) -> f64;
        let families: [(&str, promflow_storage::MetricKind, &str, Value); 8] = [
            ("prometheus_rule_evaluations_total", Counter, "The total number of rule evaluations.", |g| {
                g.rule_evaluations as f64
            }),
            (
                "prometheus_rule_evaluation_failures_total",
                Counter,
                "The total number of rule evaluation failures.",
                |g| g.rule_failures as f64,
            ),
            (
                "prometheus_rule_group_iterations_total",
                Counter,
                "The total number of scheduled rule group evaluations, whether executed or missed.",
                |g| (g.iterations + g.missed_iterations) as f64,
            ),
            (
                "prometheus_rule_group_iterations_missed_total",
                Counter,
                "The total number of rule group evaluations missed due to slow rule group evaluation.",
                |g| g.missed_iterations as f64,
            ),
            ("prometheus_rule_group_interval_seconds", Gauge, "The interval of a rule group.", |g| {
                g.interval_ms as f64 / 1000.0
            }),
            (
                "prometheus_rule_group_last_duration_seconds",
                Gauge,
                "The duration of the last rule group evaluation.",
                |g| g.evaluation_time.as_secs_f64(),
            ),
            (
                "prometheus_rule_group_last_evaluation_timestamp_seconds",
                Gauge,
                "The timestamp of the last rule group evaluation in seconds.",
                |g| g.last_evaluation_ms.map_or(0.0, |t| t as f64 / 1000.0),
            ),
            ("prometheus_rule_group_rules", Gauge, "The number of rules.", |g| g.rules.len() as f64),
        ];
        let groups = self.groups();
        let keys: Vec<String> = groups.iter().map(|g| format!("{};{}", g.file, g.name)).collect();
        for (name, kind, help, value) in families {
            let mut family = w.family(name, kind, help);
            for (g, key) in groups.iter().zip(&keys) {
                family.sample(&[("rule_group", key)], value(g));
            }
        }
        let timings = &self.base.timings;
        let rules = lock(&timings.rules).clone();
        w.family(
            "prometheus_rule_evaluation_duration_seconds",
            promflow_storage::MetricKind::Summary,
            "The duration for a rule to execute.",
        )
        .summary(&[], &rules);
        let group_times = lock(&timings.groups).clone();
        w.family(
            "prometheus_rule_group_duration_seconds",
            promflow_storage::MetricKind::Summary,
            "The duration of rule group evaluations.",
        )
        .summary(&[], &group_times);
        let (expansions, failures) = promflow_template::expansion_counts();
        w.counter(
            "prometheus_template_text_expansions_total",
            "The total number of template text expansions.",
            expansions,
        );
        w.counter(
            "prometheus_template_text_expansion_failures_total",
            "The total number of template text expansion failures.",
            failures,
        );
    }

    /// The views that keep rule expressions current, in `event` mode.
    fn views(&self) -> Option<&LiveViews> {
        self.base.views.as_deref()
    }

    /// Every pending and firing alert, group by group, rule by rule.
    pub fn alerts(&self) -> Vec<Alert> {
        self.groups().into_iter().flat_map(|g| g.rules).flat_map(|r| r.alerts).collect()
    }
}

/// Watches the views of `group`'s alerting rules on `views` (event mode), so that its alerts
/// move with their data between evaluations, as each change of a view arrives: the watches'
/// ids, for [`LiveViews::unwatch`].
fn watch_alerts(
    views: &LiveViews,
    group: &Arc<Mutex<Group>>,
    published: &Arc<Mutex<GroupStatus>>,
    querier: &Arc<dyn Querier>,
    base: &EvalSettings,
) -> Vec<u64> {
    let rules = group.lock().unwrap_or_else(|e| e.into_inner()).event_rules();
    let mut watches = Vec::new();
    for (i, plan) in rules {
        // without the cluster's turn: a handler held by the computation's views must not hold
        // the computation (through the turn's closure) in a cycle
        let base = EvalSettings { cluster_views: None, ..base.clone() };
        let (g, querier) = (Arc::clone(group), Arc::clone(querier));
        let published = Arc::clone(published);
        let handler = Box::new(move |t: i64, change: ViewChange| {
            let mut g = g.lock().unwrap_or_else(|e| e.into_inner());
            let next = g.apply_view(i, t, change, &*querier, &base);
            // the alerts it changed, for readers that find the group busy
            *lock(&published) = g.status.clone();
            next
        });
        match views.watch(&plan, handler) {
            Some(Ok(id)) => watches.push(id),
            Some(Err(e)) => tracing::warn!(error = %e, "watching an alerting rule's view failed"),
            None => {}
        }
    }
    watches
}

/// On a cluster's dataflow computation: the views a group's alerts are watched on while
/// this node evaluates the group, and the watches, stopped when dropped (the group's loop
/// ends, or unwinds).
struct ClusterWatches {
    views: std::sync::Weak<LiveViews>,
    ids: Vec<u64>,
}

impl Drop for ClusterWatches {
    fn drop(&mut self) {
        if let Some(views) = self.views.upgrade() {
            for id in self.ids.drain(..) {
                views.unwatch(id);
            }
        }
    }
}

impl ClusterWatches {
    /// Watches the group's alerts on the computation's views while this node evaluates it
    /// there (`turn`), and stops watching when it does not, or when the computation that
    /// carried the watches is gone (its views, and the watches with them, went with it).
    fn follow(
        watching: &mut Option<ClusterWatches>,
        turn: Option<ClusterTurn>,
        group: &Arc<Mutex<Group>>,
        published: &Arc<Mutex<GroupStatus>>,
        querier: &Arc<dyn Querier>,
        base: &EvalSettings,
    ) {
        let here = match turn {
            Some(ClusterTurn::Here(views)) => Some(views),
            _ => None,
        };
        let current = watching.as_ref().and_then(|w| w.views.upgrade());
        let same = match (&here, &current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        drop(current);
        // the watches on the computation before, if it is still there, stop
        *watching = None;
        *watching = here.map(|views| ClusterWatches {
            ids: watch_alerts(&views, group, published, querier, base),
            views: Arc::downgrade(&views),
        });
    }
}

/// A group's loop: wait for the next aligned evaluation time, evaluate, publish the status,
/// repeat. Sleeps until
/// the next evaluation (at most a second at a time, should the wall clock jump) unless
/// [`Running::halt`] wakes it to stop. On a cluster's dataflow computation, it also keeps
/// the group's alerts watched on the computation while this node evaluates the group
/// (checked at each wake, at least every second).
fn run_group(
    group: &Arc<Mutex<Group>>,
    published: &Arc<Mutex<GroupStatus>>,
    stop: &AtomicBool,
    querier: &Arc<dyn Querier>,
    appender: &(dyn Fn() -> Box<dyn Appender> + Send + Sync),
    base: &EvalSettings,
) {
    let mut cluster_watches: Option<ClusterWatches> = None;
    let interval = group.lock().unwrap_or_else(|e| e.into_inner()).spec.interval_ms.max(1);
    let first = group.lock().unwrap_or_else(|e| e.into_inner()).spec.eval_timestamp(now_ms()) + interval + 1;
    let mut next = first;
    let mut evaluations = 0u32;
    // event mode: the views' clock waits for each evaluation (announced one ahead)
    let views = base.views.as_deref();
    let mut announced = views.map(|v| {
        v.schedule(next - 1);
        next - 1
    });

    while !stop.load(Ordering::SeqCst) {
        if let Some(turn) = &base.cluster_views {
            let turn = turn(&group.lock().unwrap_or_else(|e| e.into_inner()).spec);
            ClusterWatches::follow(&mut cluster_watches, Some(turn), group, published, querier, base);
        }
        let now = now_ms();
        if now < next {
            std::thread::park_timeout(Duration::from_millis((next - now).min(1000) as u64));
            continue;
        }
        // skipped evaluations (a slow group, a suspended machine) are not caught up, as in
        // Prometheus: the next one is the latest aligned time
        let ts = group.lock().unwrap_or_else(|e| e.into_inner()).spec.eval_timestamp(now);
        // the first evaluation's views are installed while the clock has not passed `ts`,
        // and the clock waits until the evaluation has read them; groups starting together
        // read in the order of their times, so none reads after a later one passed its time
        let first = views.and_then(|v| {
            let hold = group.lock().unwrap_or_else(|e| e.into_inner()).prepare_views(ts, base);
            // outside the group's lock: the earlier group's evaluation runs this group's watches
            if let Some(h) = &hold {
                h.wait_for_earlier();
            }
            // watches apply their changes up to `ts` first (they take the group's lock)
            v.settle(ts);
            hold
        });
        let mut g = group.lock().unwrap_or_else(|e| e.into_inner());
        let missed = ((ts - next + 1) / interval).max(0) as u64;
        if missed > 0 {
            g.status.missed_iterations += missed;
            tracing::warn!(group = %g.spec.name, missed, "rule group evaluation is late; iterations skipped");
        }
        g.evaluate(ts, &**querier, appender, base);
        drop(first);
        evaluations += 1;
        // as Prometheus: restore after a second evaluation, so recording rules the alerts
        // read have caught up with the data received since the start
        if evaluations == 2 && g.needs_restore() {
            g.restore_for_state(now_ms(), &**querier, base);
        }
        *lock(published) = g.status.clone();
        drop(g);
        // + 1: the true evaluation time has a sub-millisecond part `ts` truncated away
        next = ts + interval + 1;
        if let Some(v) = views {
            v.schedule(next - 1);
            if let Some(done) = announced.replace(next - 1) {
                v.unschedule(done);
            }
        }
    }
    if let (Some(v), Some(t)) = (views, announced) {
        v.unschedule(t);
    }
    drop(cluster_watches);
}

/// Which rules of a group may read views: none in a tick-mode group, none when the group
/// queries in the past
/// (`query_offset` waits for late samples, which a view counts from their arrival), and not
/// a rule that reads what an earlier rule of the same group writes in the same evaluation
/// (a view sees that output only after the evaluation time).
pub(crate) fn view_rules(spec: &GroupSpec) -> Vec<bool> {
    if !spec.event_mode {
        return vec![false; spec.rules.len()];
    }
    let mut written: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(spec.rules.len());
    for rule in &spec.rules {
        let plan = rule.plan();
        let reads_earlier = plan.selections().iter().any(|ms| {
            written.iter().any(|name| {
                let l = Labels::from_pairs([(promflow_storage::METRIC_NAME, name.as_str())]);
                // a selection that names no metric, or a matching one, may read the output
                ms.iter().filter(|m| m.name == promflow_storage::METRIC_NAME).all(|m| m.matches_labels(&l))
            })
        });
        out.push(spec.query_offset_ms == 0 && !reads_earlier);
        match rule {
            RuleSpec::Record(r) => written.push(r.name.clone()),
            RuleSpec::Alert(_) => written.extend(["ALERTS".to_string(), "ALERTS_FOR_STATE".to_string()]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::{Db, DbOptions};

    /// `/metrics` and the API read the groups' status while an evaluation holds a group (a
    /// read of a view can wait for seconds) and while an update holds them all (installing
    /// views can take minutes): they get what the last evaluation left.
    #[test]
    fn a_group_held_by_an_evaluation_or_an_update_still_shows_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let writer = Arc::clone(&db);
        let manager = Manager::new(
            Arc::clone(&db) as Arc<dyn Querier>,
            Arc::new(move || writer.appender()),
            EvalSettings::default(),
        );
        let expr = "vector(1)";
        manager.update(vec![GroupSpec {
            name: "g".into(),
            file: "f.yml".into(),
            interval_ms: 3_600_000,
            query_offset_ms: 0,
            limit: 0,
            event_mode: false,
            rules: vec![RuleSpec::Record(RecordingRuleSpec {
                name: "one".into(),
                query: expr.into(),
                plan: promflow_promql::compile(expr, &Default::default()).unwrap(),
                labels: Default::default(),
            })],
        }]);
        // an update under way holds the running groups, an evaluation its group
        let updating = lock(&manager.running);
        let group = Arc::clone(&updating[0].group);
        let held = lock(&group);
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Arc::clone(&manager);
        std::thread::spawn(move || tx.send(reader.groups()).unwrap());
        let seen = rx.recv_timeout(Duration::from_secs(5)).expect("groups() waited for the held group");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name, "g");
        drop(held);
        drop(updating);
        manager.stop();
    }
}
