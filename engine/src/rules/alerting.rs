//! Alerting rules: Prometheus's alert state machine (pending → firing → inactive, `for`,
//! `keep_firing_for`, resolved alerts kept 15 minutes for the notifier), the `ALERTS` and
//! `ALERTS_FOR_STATE` series, templates in labels and annotations, and the restoration of
//! `for` state from `ALERTS_FOR_STATE` after a restart.

use std::collections::{BTreeMap, HashMap, HashSet};

use promflow_storage::{is_stale_nan, Labels, MatchOp, Matcher, Querier, METRIC_NAME};

use super::{instant_query, EvalSettings, RuleViews};
use crate::template::{AlertData, QueryRows, Template};
use crate::Plan;

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
    let generator_url = format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        rule.external_url.trim_end_matches('/'),
        crate::template::query_escape(&rule.query)
    );
    let mut out = Vec::new();
    let mut alerts: Vec<&mut Alert> = st.active.values_mut().collect();
    alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
    for a in alerts {
        if !a.needs_sending(t, resend_delay_ms) {
            continue;
        }
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
    /// What each element of the last result expanded to ([`Expansions::Reuse`]).
    pub(crate) expansions: HashMap<Labels, Expansion>,
}

/// An element's alert labels and annotations, with the value they were expanded with.
#[derive(Clone, Debug)]
pub(crate) struct Expansion {
    value_bits: u64,
    labels: Labels,
    annotations: BTreeMap<String, String>,
}

/// Whether [`apply`] expands every element's templates, or only those of elements that are
/// new or whose value changed since the last application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expansions {
    /// At a group's evaluation, as Prometheus does at each: templates may run queries.
    Fresh,
    /// Between evaluations, at each change of an event-mode rule's view (several a minute):
    /// an element whose value did not change keeps what it expanded to.
    Reuse,
}

impl AlertingState {
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
    views: Option<&RuleViews>,
    limit: u64,
) -> Result<Vec<(Labels, f64)>, String> {
    let vector = instant_query(&rule.plan, t, querier, settings, views.map(|v| (v, None)))?;
    apply(rule, st, vector, t, querier, settings, limit, Expansions::Fresh)
}

/// Applies the expression's result `vector` at `t` to the rule's alerts: Prometheus's
/// evaluation once the query has run. In event mode a view's change runs it at the change's
/// time; a later call with an earlier `t` (a tick that ran behind an event) changes no state
/// and only reports the current alerts.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    rule: &AlertingRuleSpec,
    st: &mut AlertingState,
    vector: Vec<(Labels, f64)>,
    t: i64,
    querier: &dyn Querier,
    settings: &EvalSettings,
    limit: u64,
    expansions: Expansions,
) -> Result<Vec<(Labels, f64)>, String> {
    if st.applied_at.is_some_and(|last| t < last) {
        return Ok(alerts_series(st));
    }
    st.applied_at = Some(t);
    let template_query = |q: &str| -> Result<QueryRows, String> {
        let compile = settings.compile.as_ref().ok_or("query is not available")?;
        let plan = compile(q)?;
        // template queries are one-off: always in batch
        Ok(instant_query(&plan, t, querier, settings, None)?
            .into_iter()
            .map(|(l, v)| (l.iter().map(|x| (x.name.clone(), x.value.clone())).collect(), v))
            .collect())
    };
    let mut now: HashMap<Labels, Alert> = HashMap::new();
    let mut expanded: HashMap<Labels, Expansion> = HashMap::with_capacity(vector.len());
    let mut previous = std::mem::take(&mut st.expansions);
    for (series, value) in vector {
        let kept = previous
            .remove(&series)
            .filter(|e| expansions == Expansions::Reuse && e.value_bits == value.to_bits());
        if let Some(e) = kept {
            if now.contains_key(&e.labels) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels".into()
                );
            }
            now.insert(e.labels.clone(), new_alert(e.labels.clone(), e.annotations.clone(), value, t));
            expanded.insert(series, e);
            continue;
        }
        let data = AlertData {
            labels: series.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
            external_labels: rule.external_labels.clone(),
            external_url: rule.external_url.clone(),
            value,
        };
        let expand = |tmpl: &Template| {
            tmpl.expand(&data, t as f64 / 1000.0, Some(&template_query)).unwrap_or_else(|e| {
                tracing::warn!(alert = %rule.name, error = %e, "expanding alert template failed");
                format!("<error expanding template: {e}>")
            })
        };
        let mut labels = series.clone();
        labels.remove(METRIC_NAME);
        for (name, _, tmpl) in &rule.labels {
            labels.set(name, &expand(tmpl));
        }
        labels.set("alertname", &rule.name);
        let annotations: BTreeMap<String, String> =
            rule.annotations.iter().map(|(n, _, tmpl)| (n.clone(), expand(tmpl))).collect();
        if now.contains_key(&labels) {
            return Err("vector contains metrics with the same labelset after applying alert labels".into());
        }
        now.insert(labels.clone(), new_alert(labels.clone(), annotations.clone(), value, t));
        expanded.insert(series, Expansion { value_bits: value.to_bits(), labels, annotations });
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
    let mut active_count = 0u64;
    let mut gone = Vec::new();
    for (labels, a) in st.active.iter_mut() {
        if !returned.contains(labels) {
            let keep_firing = a.state == AlertState::Firing && rule.keep_firing_for_ms > 0 && {
                let since = *a.keep_firing_since.get_or_insert(t);
                t - since < rule.keep_firing_for_ms
            };
            if a.state == AlertState::Pending || a.resolved_at.is_some_and(|r| t - r > RESOLVED_RETENTION_MS)
            {
                gone.push(labels.clone());
            }
            if a.state != AlertState::Inactive && !keep_firing {
                a.state = AlertState::Inactive;
                a.resolved_at = Some(t);
            }
            if !keep_firing {
                continue;
            }
        } else {
            a.keep_firing_since = None;
        }
        active_count += 1;
        if a.state == AlertState::Pending && t - a.active_at >= rule.for_ms {
            a.state = AlertState::Firing;
            a.fired_at = Some(t);
        }
    }
    for l in gone {
        st.active.remove(&l);
    }
    if limit > 0 && active_count > limit {
        st.active.clear();
        return Err(format!("exceeded limit of {limit} with {active_count} alerts"));
    }
    Ok(alerts_series(st))
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
        let mut matchers =
            vec![Matcher::new(MatchOp::Equal, METRIC_NAME, "ALERTS_FOR_STATE").expect("literal")];
        for l in a.labels.iter() {
            matchers.push(Matcher::new(MatchOp::Equal, l.name.clone(), l.value.clone()).expect("literal"));
        }
        let Ok(series) = querier.select(&matchers, t - outage_tolerance_ms, t) else { continue };
        // the series with exactly the alert's labels (matchers also match supersets)
        let Some(s) = series.iter().find(|s| s.labels.len() == a.labels.len() + 1) else { continue };
        let Some(last) = s.samples.view().last() else { continue };
        if is_stale_nan(last.v) {
            continue;
        }
        let down_at = last.t / 1000 * 1000;
        let mut active_at = (last.v as i64) * 1000;
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
