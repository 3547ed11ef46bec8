//! PromQL's label semantics, shared by every executor: the grouping key of an aggregation or
//! a join, the labels a binary operation's result carries, `label_replace`/`label_join`,
//! `info()`'s info metrics, `absent()`'s labels and the metric identity an operation drops.
//! The value semantics (aggregating values, applying an operator) are in the kernels crate.

use std::collections::HashMap;

use promflow_storage::{Labels, MatchOp, Matcher, METRIC_NAME};

use crate::{Error, Grouping, Plan, Relabel};

/// The labels that name a metric and describe its type and unit: an operation that changes
/// what the values mean removes them all.
const METRIC_IDENTITY_LABELS: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

/// Whether a selection's series all have one metric name (it has `__name__="…"`): dropping the
/// name cannot then give two of its series one label set.
pub fn selects_one_metric(matchers: &[Matcher]) -> bool {
    matchers.iter().any(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal)
}

/// Removes the labels that name a metric and describe its type and unit (`__name__`,
/// `__type__`, `__unit__`): what an operation that changes the values' meaning does.
pub fn strip_metric_identity(l: &mut Labels) {
    l.retain(|x| !METRIC_IDENTITY_LABELS.contains(&x.name.as_str()));
}

/// The labels `info()` joins on.
pub const INFO_IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

/// Which metrics count as info metrics for `info()`: the given name matchers if one of them
/// selects (`=` or `=~`), else `.+_info` narrowed by them, else `target_info`.
pub fn effective_info_name_matchers(name_matchers: &[Matcher], given: bool) -> Vec<Matcher> {
    use promflow_storage::MatchOp;
    if name_matchers.iter().any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Regex)) {
        return name_matchers.to_vec();
    }
    let fixed = |op, v: &str| Matcher::new(op, METRIC_NAME, v).expect("a valid matcher");
    if given && !name_matchers.is_empty() {
        let mut out = vec![fixed(MatchOp::Regex, ".+_info")];
        out.extend(name_matchers.iter().cloned());
        return out;
    }
    vec![fixed(MatchOp::Equal, "target_info")]
}

/// Parses a histogram bucket's `le` label as Prometheus does (`+Inf` and its spellings).
#[allow(clippy::result_unit_err)]
pub fn parse_le(s: &str) -> Result<f64, ()> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        other => other.parse::<f64>().map_err(|_| ()),
    }
}

/// The labels `absent`/`absent_over_time` report: the equality matchers of a plain selection.
pub fn absent_labels(input: &Plan) -> Labels {
    let matchers = match input {
        Plan::Select { matchers, .. } | Plan::Window { matchers, .. } => matchers,
        _ => return Labels::new(),
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in matchers {
        *seen.entry(m.name.as_str()).or_default() += 1;
    }
    Labels::from_pairs(
        matchers
            .iter()
            .filter(|m| {
                m.op == promflow_storage::MatchOp::Equal
                    && m.name != METRIC_NAME
                    && seen[m.name.as_str()] == 1
            })
            .map(|m| (m.name.clone(), m.value.clone())),
    )
}

/// The labels that identify a series' group in an aggregation, or its match key in a join:
/// the `by`/`on` labels, or all but the `without`/`ignoring` labels and the metric name.
pub fn grouping_key(l: &Labels, g: &Grouping) -> Labels {
    match g {
        Grouping::By(names) => Labels::from_pairs(names.iter().map(|n| (n.clone(), l.get(n).to_string()))),
        Grouping::Without(names) => {
            let mut out = l.clone();
            out.retain(|x| x.name != METRIC_NAME && !names.iter().any(|n| *n == x.name));
            out
        }
    }
}

/// The labels of a binary operation's result: `many`'s labels (without the metric identity
/// when `drop_name`), narrowed to the matching labels for one-to-one matches, plus the
/// `group_left`/`group_right` labels `include` copies from `one`.
pub fn result_labels(
    many: &Labels,
    one: &Labels,
    g: &Grouping,
    one_to_one: bool,
    include: &[String],
    drop_name: bool,
) -> Labels {
    let mut l = many.clone();
    if drop_name {
        strip_metric_identity(&mut l);
    }
    if one_to_one {
        match g {
            Grouping::By(names) => l.retain(|x| names.iter().any(|n| *n == x.name)),
            Grouping::Without(names) => l.retain(|x| !names.iter().any(|n| *n == x.name)),
        }
    }
    for name in include {
        l.set(name, one.get(name));
    }
    l
}

/// The regex of a `label_replace`, compiled (none for `label_join`).
pub fn compile_relabel(rule: &Relabel) -> Result<Option<regex::Regex>, Error> {
    match rule {
        Relabel::Replace { regex, .. } => promflow_storage::re2::compile_anchored(regex)
            .map(Some)
            .map_err(|e| Error::Execution(format!("invalid regular expression in label_replace(): {e}"))),
        Relabel::Join { .. } => Ok(None),
    }
}

/// Rewrites one label set; `re` is [`compile_relabel`]'s. Returns whether the destination
/// label was set.
pub fn relabel_one(rule: &Relabel, re: Option<&regex::Regex>, labels: &mut Labels) -> bool {
    match rule {
        Relabel::Replace { dst, replacement, src, .. } => {
            let value = labels.get(src).to_string();
            let Some(caps) = re.and_then(|re| re.captures(&value)) else { return false };
            let mut out = String::new();
            // Go's `Expand` and the regex crate's agree on `$1`, `${1}`, `$name`, and `$1x`.
            caps.expand(replacement, &mut out);
            labels.set(dst, &out);
            true
        }
        Relabel::Join { dst, separator, src } => {
            let joined: Vec<&str> = src.iter().map(|n| labels.get(n)).collect();
            let joined = joined.join(separator);
            labels.set(dst, &joined);
            true
        }
    }
}
