//! Alerting rules: Prometheus's alert state machine (pending → firing → inactive, `for`,
//! `keep_firing_for`, resolved alerts kept 15 minutes for the notifier), the `ALERTS` and
//! `ALERTS_FOR_STATE` series, templates in labels and annotations, and the restoration of
//! `for` state from `ALERTS_FOR_STATE` after a restart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use promflow_storage::{is_stale_nan, Labels, MatchOp, Matcher, Querier, METRIC_NAME};

use super::{instant_query, EvalSettings};
use promflow_incremental::live::LiveViews;
use promflow_incremental::Value;
use promflow_plan::Plan;
use promflow_template::{AlertData, QueryRows, Template};

/// How long a resolved alert is kept (and re-sent to Alertmanager as resolved).
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// An alerting rule, its expression compiled and its templates parsed.
#[derive(Clone, Debug)]
pub struct AlertingRuleSpec {
    /// `alert`: the alert's name.
    pub name: String,
    /// The expression as Prometheus prints it.
    pub query: String,
    /// The compiled expression.
    pub plan: Plan,
    /// `for`, in milliseconds.
    pub for_ms: i64,
    /// `keep_firing_for`, in milliseconds.
    pub keep_firing_for_ms: i64,
    /// `labels` (templates), with their text for `/api/v1/rules`.
    pub labels: Vec<(String, String, Template)>,
    /// `annotations` (templates), with their text.
    pub annotations: Vec<(String, String, Template)>,
    /// `global.external_labels`, for `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// `--web.external-url`, for `$externalURL`.
    pub external_url: String,
}

/// The state of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Resolved (kept for a while to be reported as resolved).
    Inactive,
    /// Active for less than `for`.
    Pending,
    /// Active for at least `for`.
    Firing,
}

impl AlertState {
    /// The name the API and the `alertstate` label use.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule: one output series of its expression.
#[derive(Clone, Debug)]
pub struct Alert {
    /// The alert's labels: the series' labels without `__name__`, the rule's (expanded)
    /// labels, and `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// Current state.
    pub state: AlertState,
    /// The value of the series at the last evaluation.
    pub value: f64,
    /// When the condition started to hold (ms).
    pub active_at: i64,
    /// When it started firing (ms).
    pub fired_at: Option<i64>,
    /// When it was resolved (ms).
    pub resolved_at: Option<i64>,
    /// Since when it is firing only because of `keep_firing_for` (ms).
    pub keep_firing_since: Option<i64>,
    /// When it was last handed to the notifier (ms).
    pub last_sent_at: Option<i64>,
    /// Until when Alertmanager should consider it firing without a resend (ms).
    pub valid_until: Option<i64>,
}

impl Alert {
    /// Whether an element of the rule's current result has the alert's labels (a firing
    /// alert that `keep_firing_for` keeps has none).
    fn returned(&self) -> bool {
        self.state != AlertState::Inactive && self.keep_firing_since.is_none()
    }

    /// Prometheus's `needsSending`: never while pending; at once when resolved since the
    /// last send; else once `resend_delay_ms` has passed.
    fn needs_sending(&self, t: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if self.resolved_at.is_some_and(|r| self.last_sent_at.is_none_or(|s| r > s)) {
            return true;
        }
        self.last_sent_at.is_none_or(|s| s + resend_delay_ms < t)
    }
}

/// An alert handed to the notifier, in Alertmanager's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The alert's labels.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (ms).
    pub starts_at_ms: i64,
    /// When it was resolved, or until when it is valid (ms).
    pub ends_at_ms: i64,
    /// `<external URL>/graph?g0.expr=…&g0.tab=1`.
    pub generator_url: String,
}

/// Receives the alerts to send after each evaluation of an alerting rule (the notifier).
pub type NotifyFn = std::sync::Arc<dyn Fn(Vec<Notification>) + Send + Sync>;

/// The alerts of `st` to send at evaluation time `t`, marked as sent: Prometheus's
/// `sendAlerts` (an alert stays valid for four evaluation intervals or resend delays).
pub fn to_send(
    rule: &AlertingRuleSpec,
    st: &mut AlertingState,
    t: i64,
    resend_delay_ms: i64,
    interval_ms: i64,
) -> Vec<Notification> {
    // event-mode rules ask at every change of their view: most of the time nothing is due
    let mut alerts: Vec<&mut Alert> =
        st.active.values_mut().filter(|a| a.needs_sending(t, resend_delay_ms)).collect();
    if alerts.is_empty() {
        return Vec::new();
    }
    let generator_url = format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        rule.external_url.trim_end_matches('/'),
        promflow_template::query_escape(&rule.query)
    );
    let mut out = Vec::new();
    alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
    for a in alerts {
        a.last_sent_at = Some(t);
        let valid_until = t + 4 * resend_delay_ms.max(interval_ms);
        a.valid_until = Some(valid_until);
        out.push(Notification {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at_ms: a.fired_at.unwrap_or(a.active_at),
            ends_at_ms: a.resolved_at.unwrap_or(valid_until),
            generator_url: generator_url.clone(),
        });
    }
    out
}

/// An alerting rule's state between evaluations.
#[derive(Clone, Debug, Default)]
pub struct AlertingState {
    /// Alerts by their labels.
    pub active: HashMap<Labels, Alert>,
    /// Whether `for` state has been restored (or needs none): until then no `ALERTS` series
    /// are written, as in Prometheus.
    pub restored: bool,
    /// The latest time the rule's result was applied at.
    pub applied_at: Option<i64>,
    /// Whether another node of a cluster evaluated the rule since this one last did: at the
    /// next evaluation, each alert takes the time it became active from the newest
    /// `ALERTS_FOR_STATE` sample that node wrote ([`take_over`]).
    pub taking_over: bool,
    /// What each element of the current result expanded to.
    pub(crate) expansions: HashMap<Labels, Expansion>,
}

/// What an element of the result expanded to: its alert labels and annotations.
#[derive(Clone, Debug)]
pub(crate) struct Expansion {
    labels: Labels,
    annotations: BTreeMap<String, String>,
}

impl AlertingState {
    /// Forgets the alerts: another node of a cluster evaluates the rule from now on, and
    /// this one takes over their `for` state when it evaluates the rule again.
    pub fn hand_over(&mut self) {
        self.active.clear();
        self.expansions.clear();
        self.applied_at = None;
        self.taking_over = true;
    }

    /// The changes that turn the current result into `vector`: every element of `vector`,
    /// and the departure of every current element it lacks.
    pub fn changes_to(&self, vector: Vec<(Arc<Labels>, Value)>) -> Vec<ElementChange> {
        let next: HashSet<&Labels> = vector.iter().map(|(l, _)| &**l).collect();
        let gone: Vec<ElementChange> = self
            .expansions
            .keys()
            .filter(|l| !next.contains(l))
            .map(|l| ElementChange { labels: Arc::new(l.clone()), was_present: true, value: None })
            .collect();
        drop(next);
        let came = vector.into_iter().map(|(labels, v)| ElementChange {
            was_present: self.expansions.contains_key(&*labels),
            labels,
            value: Some(v),
        });
        came.chain(gone).collect()
    }

    /// The alerts that are pending or firing, in label order.
    pub fn active_alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> =
            self.active.values().filter(|a| a.state != AlertState::Inactive).cloned().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }
}

/// Evaluates `rule` at `t` (ms), updating `st`; returns the `ALERTS` and `ALERTS_FOR_STATE`
/// samples to write, or Prometheus's error.
pub fn eval(
    rule: &AlertingRuleSpec,
    st: &mut AlertingState,
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
    views: Option<&LiveViews>,
    limit: u64,
) -> Result<Vec<(Labels, f64)>, String> {
    let vector =
        instant_query((&rule.plan, Some(&rule.query)), t, querier, settings, views.map(|v| (v, None)))?;
    apply(rule, st, vector, t, querier, settings, limit)
}

/// Applies the expression's result `vector` at `t` to the rule's alerts: Prometheus's
/// evaluation once the query has run, every element's templates expanded. A later call with
/// an earlier `t` (a tick that ran behind an event-mode change) changes no state and only
/// reports the current alerts.
pub fn apply(
    rule: &AlertingRuleSpec,
    st: &mut AlertingState,
    vector: Vec<(Labels, f64)>,
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
    limit: u64,
) -> Result<Vec<(Labels, f64)>, String> {
    if st.applied_at.is_some_and(|last| t < last) {
        return Ok(alerts_series(st));
    }
    st.applied_at = Some(t);
    let mut now: HashMap<Labels, Alert> = HashMap::new();
    let mut expanded: HashMap<Labels, Expansion> = HashMap::with_capacity(vector.len());
    for (series, value) in vector {
        let e = expand(rule, &series, value, t, querier, settings);
        if now.contains_key(&e.labels) {
            return Err(SAME_LABELSET.into());
        }
        now.insert(e.labels.clone(), new_alert(e.labels.clone(), e.annotations.clone(), value, t));
        expanded.insert(series, e);
    }
    st.expansions = expanded;
    let returned: HashSet<Labels> = now.keys().cloned().collect();
    for (labels, fresh) in now {
        match st.active.get_mut(&labels) {
            Some(a) if a.state != AlertState::Inactive => {
                a.value = fresh.value;
                a.annotations = fresh.annotations;
            }
            _ => {
                st.active.insert(labels, fresh);
            }
        }
    }
    for (labels, a) in st.active.iter_mut() {
        if returned.contains(labels) {
            a.keep_firing_since = None;
        } else {
            leave(rule, a, t);
        }
    }
    if std::mem::take(&mut st.taking_over) && st.restored {
        take_over(st, t, querier, settings.outage_tolerance_ms);
    }
    sweep(rule, st, t, limit)?;
    Ok(alerts_series(st))
}

const SAME_LABELSET: &str = "vector contains metrics with the same labelset after applying alert labels";

pub use promflow_incremental::ElementChange;

/// Applies the changes of an event-mode rule's result at `t`, between evaluations: the
/// alerts end as [`apply`] would leave them given the whole result, but only the changed
/// elements are looked at (and every alert's clocks: `for`, `keep_firing_for`, the retention
/// of resolved alerts). An element keeps the alert labels and annotations it expanded to at
/// the last evaluation or when it appeared; evaluations expand everything again, as
/// Prometheus does at each. Returns whether an alert appeared, changed state or went away.
pub fn apply_changes(
    rule: &AlertingRuleSpec,
    st: &mut AlertingState,
    changes: Vec<ElementChange>,
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
    limit: u64,
) -> Result<bool, String> {
    if st.applied_at.is_some_and(|last| t < last) {
        return Ok(false);
    }
    st.applied_at = Some(t);
    let mut changed = false;
    let mut error = None;
    // an alert whose element leaves stays if an arriving element takes its labels, as in a
    // whole evaluation, which knows alerts by their labels
    // alerts are of float elements: a histogram element is none (as in a batch evaluation)
    let floats = changes.into_iter().map(|mut c| {
        c.value = c.value.filter(|v| v.as_float().is_some());
        c
    });
    let (gone, came): (Vec<_>, Vec<_>) = floats.partition(|c| c.value.is_none());
    let mut leaving: HashSet<Labels> = HashSet::new();
    for c in gone {
        if let Some(e) = st.expansions.remove(&*c.labels) {
            leaving.insert(e.labels);
        }
    }
    let came = came.into_iter().filter_map(|c| Some((Arc::unwrap_or_clone(c.labels), c.value?.as_float()?)));
    for (series, value) in came {
        if !st.expansions.contains_key(&series) {
            let e = expand(rule, &series, value, t, querier, settings);
            let taken = st.active.get(&e.labels).is_some_and(Alert::returned) && !leaving.contains(&e.labels);
            if taken {
                error.get_or_insert(SAME_LABELSET.to_string());
                continue;
            }
            st.expansions.insert(series.clone(), e);
        }
        let Some(e) = st.expansions.get(&series) else { continue };
        leaving.remove(&e.labels);
        match st.active.get_mut(&e.labels) {
            Some(a) if a.state != AlertState::Inactive => {
                a.value = value;
                changed |= a.keep_firing_since.take().is_some();
            }
            _ => {
                st.active
                    .insert(e.labels.clone(), new_alert(e.labels.clone(), e.annotations.clone(), value, t));
                changed = true;
            }
        }
    }
    for labels in leaving {
        if let Some(a) = st.active.get_mut(&labels) {
            changed |= leave(rule, a, t);
        }
    }
    changed |= sweep(rule, st, t, limit)?;
    match error {
        Some(e) => Err(e),
        None => Ok(changed),
    }
}

/// What an element expands to at `t`: its alert labels (the series' labels without
/// `__name__`, the rule's labels, `alertname`) and annotations.
fn expand(
    rule: &AlertingRuleSpec,
    series: &Labels,
    value: f64,
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
) -> Expansion {
    let template_query = |q: &str| -> Result<QueryRows, String> {
        let compile = settings.compile.as_ref().ok_or("query is not available")?;
        let plan = compile(q)?;
        // template queries are one-off: always in batch
        Ok(instant_query((&plan, None), t, querier, settings, None)?
            .into_iter()
            .map(|(l, v)| (l.iter().map(|x| (x.name.to_string(), x.value.to_string())).collect(), v))
            .collect())
    };
    let data = AlertData {
        labels: series.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect(),
        external_labels: rule.external_labels.clone(),
        external_url: rule.external_url.clone(),
        value,
    };
    let run = |tmpl: &Template| {
        tmpl.expand(&data, t as f64 / 1000.0, Some(&template_query)).unwrap_or_else(|e| {
            tracing::warn!(alert = %rule.name, error = %e, "expanding alert template failed");
            format!("<error expanding template: {e}>")
        })
    };
    let mut labels = series.clone();
    labels.remove(METRIC_NAME);
    for (name, _, tmpl) in &rule.labels {
        labels.set(name, &run(tmpl));
    }
    labels.set("alertname", &rule.name);
    let annotations = rule.annotations.iter().map(|(n, _, tmpl)| (n.clone(), run(tmpl))).collect();
    Expansion { labels, annotations }
}

/// An alert whose element left the result at `t`: a pending one is dropped (by [`sweep`]),
/// a firing one resolves, unless `keep_firing_for` keeps it firing from `t` on.
/// Returns whether the alert changed.
fn leave(rule: &AlertingRuleSpec, a: &mut Alert, t: i64) -> bool {
    match a.state {
        AlertState::Inactive => return false,
        AlertState::Pending => a.state = AlertState::Inactive,
        AlertState::Firing if rule.keep_firing_for_ms > 0 => {
            if a.keep_firing_since.is_some() {
                return false;
            }
            a.keep_firing_since = Some(t);
        }
        AlertState::Firing => {
            a.state = AlertState::Inactive;
            a.resolved_at = Some(t);
        }
    }
    true
}

/// Moves every alert's clocks to `t`: pending alerts whose `for` has passed fire, firing
/// alerts whose `keep_firing_for` has run out resolve, dropped pending alerts and resolved
/// alerts past their retention go; then applies the rule's `limit`. Returns whether an
/// alert changed or went.
fn sweep(rule: &AlertingRuleSpec, st: &mut AlertingState, t: i64, limit: u64) -> Result<bool, String> {
    let mut active_count = 0u64;
    let mut changed = false;
    st.active.retain(|_, a| {
        if a.state == AlertState::Inactive {
            // a pending alert that left was never resolved: it goes at once
            let keep = a.resolved_at.is_some_and(|r| t - r <= RESOLVED_RETENTION_MS);
            changed |= !keep;
            return keep;
        }
        if let Some(since) = a.keep_firing_since {
            if t - since >= rule.keep_firing_for_ms {
                a.state = AlertState::Inactive;
                a.resolved_at = Some(t);
                changed = true;
                return true;
            }
        } else if a.state == AlertState::Pending && t - a.active_at >= rule.for_ms {
            a.state = AlertState::Firing;
            a.fired_at = Some(t);
            changed = true;
        }
        active_count += 1;
        true
    });
    if limit > 0 && active_count > limit {
        st.active.clear();
        return Err(format!("exceeded limit of {limit} with {active_count} alerts"));
    }
    Ok(changed)
}

/// A pending alert that became active at `t`.
fn new_alert(labels: Labels, annotations: BTreeMap<String, String>, value: f64, t: i64) -> Alert {
    Alert {
        labels,
        annotations,
        state: AlertState::Pending,
        value,
        active_at: t,
        fired_at: None,
        resolved_at: None,
        keep_firing_since: None,
        last_sent_at: None,
        valid_until: None,
    }
}

/// The `ALERTS` and `ALERTS_FOR_STATE` samples of the pending and firing alerts (none until
/// `for` state is restored, as in Prometheus).
fn alerts_series(st: &AlertingState) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    if !st.restored {
        return out;
    }
    for a in st.active.values().filter(|a| a.state != AlertState::Inactive) {
        let mut alerts = a.labels.clone();
        alerts.set(METRIC_NAME, "ALERTS");
        alerts.set("alertstate", a.state.as_str());
        out.push((alerts, 1.0));
        let mut for_state = a.labels.clone();
        for_state.set(METRIC_NAME, "ALERTS_FOR_STATE");
        out.push((for_state, (a.active_at / 1000) as f64));
    }
    out
}

/// When a pending alert of `st` reaches its `for` with no change of the data: the time an
/// event-mode rule must be applied again to fire it on time.
pub fn next_firing(rule: &AlertingRuleSpec, st: &AlertingState) -> Option<i64> {
    st.active.values().filter(|a| a.state == AlertState::Pending).map(|a| a.active_at + rule.for_ms).min()
}

/// The `for` state of alerts another node of a cluster evaluated until now: each alert
/// became active when the newest `ALERTS_FOR_STATE` sample within `outage_tolerance_ms` of
/// `t` says, if that is earlier. Unlike a restart's restoration, nothing is shifted and no
/// grace period applies: the other node kept the alert's clock running, and this node goes
/// on from where it was.
fn take_over(st: &mut AlertingState, t: i64, querier: &dyn Querier, outage_tolerance_ms: i64) {
    for a in st.active.values_mut() {
        if let Some((_, active_since_s)) = last_for_state(&a.labels, t, querier, outage_tolerance_ms) {
            a.active_at = a.active_at.min(active_since_s as i64 * 1000);
        }
    }
}

/// The newest sample, within `outage_tolerance_ms` of `t`, of the `ALERTS_FOR_STATE` series of
/// the alert with `labels`: its time (ms) and value (when the alert became active, in
/// seconds). `None` when there is none, or it is a staleness marker (the alert ended).
fn last_for_state(
    labels: &Labels,
    t: i64,
    querier: &dyn Querier,
    outage_tolerance_ms: i64,
) -> Option<(i64, f64)> {
    let mut matchers = vec![Matcher::new(MatchOp::Equal, METRIC_NAME, "ALERTS_FOR_STATE").expect("literal")];
    for l in labels.iter() {
        matchers.push(Matcher::new(MatchOp::Equal, l.name.clone(), l.value.clone()).expect("literal"));
    }
    let series = querier.select(&matchers, t - outage_tolerance_ms, t).ok()?;
    // the series with exactly the alert's labels (matchers also match supersets)
    let s = series.iter().find(|s| s.labels.len() == labels.len() + 1)?;
    let last = s.samples.view().last()?;
    (!is_stale_nan(last.v)).then_some((last.t, last.v))
}

/// Prometheus's `RestoreForState` for one rule at `t` (ms): an alert that was pending or
/// firing before a restart keeps the time it became active, from the newest
/// `ALERTS_FOR_STATE` sample within `outage_tolerance_ms`, shifted by the downtime, and
/// never fires sooner than `grace_ms` after the restart.
pub fn restore_for_state(
    rule: &AlertingRuleSpec,
    st: &mut AlertingState,
    t: i64,
    querier: &dyn Querier,
    outage_tolerance_ms: i64,
    grace_ms: i64,
) {
    st.restored = true;
    if rule.for_ms < grace_ms {
        return;
    }
    for a in st.active.values_mut() {
        let Some((last_t, last_v)) = last_for_state(&a.labels, t, querier, outage_tolerance_ms) else {
            continue;
        };
        let down_at = last_t / 1000 * 1000;
        let mut active_at = (last_v as i64) * 1000;
        let remaining = rule.for_ms - (down_at - active_at);
        if remaining <= 0 {
            // it was firing: the next evaluation decides again
        } else if remaining < grace_ms {
            active_at = t + grace_ms - rule.for_ms;
        } else {
            active_at += t - down_at;
        }
        a.active_at = active_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::{Db, DbOptions};

    fn rule(for_ms: i64, keep_firing_for_ms: i64) -> AlertingRuleSpec {
        let template = |text: &str| Template::parse("__alert_T", text).expect("valid template");
        AlertingRuleSpec {
            name: "T".into(),
            query: "x > 0".into(),
            plan: Plan::Number(1.0),
            for_ms,
            keep_firing_for_ms,
            labels: vec![("severity".into(), "page".into(), template("page"))],
            annotations: vec![("summary".into(), String::new(), template("{{ $labels.i }} is up"))],
            external_labels: BTreeMap::new(),
            external_url: String::new(),
        }
    }

    /// Everything about an alert but its annotations, which event mode expands less often.
    fn states(st: &AlertingState) -> Vec<String> {
        let mut v: Vec<String> = st
            .active
            .values()
            .map(|a| {
                format!(
                    "{:?} {:?} {} {} {:?} {:?} {:?}",
                    a.labels, a.state, a.value, a.active_at, a.fired_at, a.resolved_at, a.keep_firing_since
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Applying only the changed elements of each result, and nothing at the times in
    /// between, leaves the alerts as applying every whole result does: `for`,
    /// `keep_firing_for`, resolution, retention and elements that come back.
    #[test]
    fn applying_changes_equals_applying_whole_results() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        let settings = EvalSettings::default();
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| rng.u64(..n);
        for (for_ms, keep_ms) in [(0, 0), (30_000, 0), (90_000, 0), (30_000, 45_000), (0, 20_000)] {
            let rule = rule(for_ms, keep_ms);
            let (mut whole, mut delta) = (AlertingState::default(), AlertingState::default());
            let mut current: BTreeMap<Labels, f64> = BTreeMap::new();
            let mut t = 1_000_000;
            let mut fired = false;
            for step in 0..400 {
                t += 1 + next(20_000) as i64;
                let mut vector = current.clone();
                for i in 0..8 {
                    let series = Labels::from_pairs([("__name__", "x"), ("i", &i.to_string())]);
                    match next(10) {
                        0 | 1 => {
                            vector.remove(&series);
                        }
                        2 | 3 => {
                            vector.insert(series, next(4) as f64);
                        }
                        _ => {}
                    }
                }
                // a time with no change: the handler asked to be called for its clocks
                let changes: Vec<ElementChange> = if step % 5 == 4 {
                    Vec::new()
                } else {
                    let change = |l: &Labels, value| element(l, current.contains_key(l), value);
                    let left = current.keys().filter(|l| !vector.contains_key(*l)).map(|l| change(l, None));
                    let came = vector
                        .iter()
                        .filter(|(l, v)| current.get(*l).is_none_or(|old| old.to_bits() != v.to_bits()))
                        .map(|(l, v)| change(l, Some(*v)));
                    let changes = left.chain(came).collect();
                    current = vector;
                    changes
                };
                let all = current.iter().map(|(l, v)| (l.clone(), *v)).collect();
                apply(&rule, &mut whole, all, t, &*db, &settings, 0).expect("applied");
                apply_changes(&rule, &mut delta, changes, t, &*db, &settings, 0).expect("applied");
                assert_eq!(states(&delta), states(&whole), "for {for_ms} keep {keep_ms}, step {step} at {t}");
                fired |= whole.active.values().any(|a| a.state == AlertState::Firing);
            }
            assert!(fired, "for {for_ms} keep {keep_ms}: the sequence fires");
        }
    }

    fn element(labels: &Labels, was_present: bool, value: Option<f64>) -> ElementChange {
        ElementChange { labels: Arc::new(labels.clone()), was_present, value: value.map(Value::float) }
    }

    /// Two series with the same alert labels (they differ only in `__name__`): one leaves
    /// as the other arrives, and the alert stays, as a whole evaluation keeps it.
    #[test]
    fn an_alert_stays_when_another_series_takes_its_labels() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        let (rule, settings) = (rule(60_000, 0), EvalSettings::default());
        let x = Labels::from_pairs([("__name__", "x"), ("i", "1")]);
        let y = Labels::from_pairs([("__name__", "y"), ("i", "1")]);
        let (mut whole, mut delta) = (AlertingState::default(), AlertingState::default());
        apply(&rule, &mut whole, vec![(x.clone(), 1.0)], 1000, &*db, &settings, 0).expect("applied");
        apply_changes(&rule, &mut delta, vec![element(&x, false, Some(1.0))], 1000, &*db, &settings, 0)
            .expect("applied");
        apply(&rule, &mut whole, vec![(y.clone(), 2.0)], 2000, &*db, &settings, 0).expect("applied");
        let swap = vec![element(&x, true, None), element(&y, false, Some(2.0))];
        assert_eq!(apply_changes(&rule, &mut delta, swap, 2000, &*db, &settings, 0), Ok(false));
        assert_eq!(states(&delta), states(&whole));
        assert_eq!(delta.active.values().map(|a| a.active_at).collect::<Vec<_>>(), [1000]);
        // the same labels from a second series at once: Prometheus's error
        let x = Labels::from_pairs([("__name__", "x"), ("i", "1")]);
        let err =
            apply_changes(&rule, &mut delta, vec![element(&x, false, Some(3.0))], 3000, &*db, &settings, 0);
        assert_eq!(err, Err(SAME_LABELSET.to_string()));
    }

    /// A node that handed a rule over takes over the `for` state the other node wrote at
    /// its next evaluation: the alert keeps the time it became active and fires when it
    /// would have, with no restart's grace period; an alert with no `ALERTS_FOR_STATE`
    /// starts over.
    #[test]
    fn a_handed_over_alert_keeps_its_for_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        let (rule, settings) = (rule(120_000, 0), EvalSettings::default());
        let series = |i: &str| Labels::from_pairs([("__name__", "x"), ("i", i)]);
        let mut st = AlertingState { restored: true, ..Default::default() };
        apply(&rule, &mut st, vec![(series("1"), 1.0)], 1_000_000, &*db, &settings, 0).expect("applied");
        st.hand_over();
        assert!(st.active.is_empty());
        // the other node evaluated it meanwhile, since 990 s, and wrote its for state
        let mut app = db.appender();
        let mut for_state = st_labels(&rule, "1");
        for_state.set(METRIC_NAME, "ALERTS_FOR_STATE");
        app.append(&for_state, 1_030_000, 990.0).expect("appended");
        app.commit().expect("committed");
        let back = vec![(series("1"), 1.0), (series("2"), 1.0)];
        apply(&rule, &mut st, back.clone(), 1_045_000, &*db, &settings, 0).expect("applied");
        let active_at = |st: &AlertingState, i: &str| st.active[&st_labels(&rule, i)].active_at;
        assert_eq!((active_at(&st, "1"), active_at(&st, "2")), (990_000, 1_045_000));
        assert!(!st.taking_over);
        // 120 s after 990 s: firing, as on the node that evaluated it before
        apply(&rule, &mut st, back, 1_110_000, &*db, &settings, 0).expect("applied");
        assert_eq!(st.active[&st_labels(&rule, "1")].state, AlertState::Firing);
        assert_eq!(st.active[&st_labels(&rule, "2")].state, AlertState::Pending);
    }

    /// The labels of the alert `rule` makes of the series `x{i="<i>"}`.
    fn st_labels(rule: &AlertingRuleSpec, i: &str) -> Labels {
        Labels::from_pairs([("alertname", rule.name.as_str()), ("i", i), ("severity", "page")])
    }

    #[test]
    fn changes_beyond_the_limit_fail_and_drop_the_alerts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), DbOptions::default()).expect("db");
        let (rule, settings) = (rule(0, 0), EvalSettings::default());
        let mut st = AlertingState::default();
        let series = |i: usize| Labels::from_pairs([("__name__", "x"), ("i", &i.to_string())]);
        let two = vec![element(&series(1), false, Some(1.0)), element(&series(2), false, Some(1.0))];
        assert_eq!(apply_changes(&rule, &mut st, two, 1000, &*db, &settings, 2), Ok(true));
        let third = vec![element(&series(3), false, Some(1.0))];
        let err = apply_changes(&rule, &mut st, third, 2000, &*db, &settings, 2).expect_err("over the limit");
        assert_eq!(err, "exceeded limit of 2 with 3 alerts");
        assert!(st.active.is_empty());
    }
}
