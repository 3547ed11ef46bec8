//! Relabelling, exactly as Prometheus's `model/relabel` does it.
//!
//! * The regex is fully anchored as `^(?s:<regex>)$` (Prometheus 3.x; `.` matches `\n`), in
//!   Go's RE2 dialect (translated by [`promflow_storage::re2`]).
//! * Source label values are joined with `separator`; a missing label counts as `""`.
//! * `replacement` and a templated `target_label` are expanded like Go's `Regexp.Expand`:
//!   `$1`, `${1}`, `$name`, `${name}`, `$$` for a literal `$`; the longest run of letters,
//!   digits and `_` after `$` is the group name, so `$1x` is the (empty) group named `1x`.
//! * A label set to the empty string is removed.

use std::fmt;

use promflow_storage::{Label, Labels};
use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};

use crate::yaml::Validate;
use crate::Error;

/// The regex a relabel rule matches with when none is given.
pub const DEFAULT_REGEX: &str = "(.*)";

/// How label names are validated: Prometheus 3's `metric_name_validation_scheme`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NameValidationScheme {
    /// Any non-empty UTF-8 string is a valid label name (the default).
    #[default]
    Utf8,
    /// Only `[a-zA-Z_][a-zA-Z0-9_]*` is a valid label name.
    Legacy,
}

impl NameValidationScheme {
    /// Whether `name` is a valid label name under this scheme.
    pub fn is_valid_label_name(self, name: &str) -> bool {
        match self {
            NameValidationScheme::Utf8 => !name.is_empty(),
            NameValidationScheme::Legacy => is_legacy_label_name(name),
        }
    }

    /// The name used in the configuration file (`utf8` or `legacy`).
    pub fn as_str(self) -> &'static str {
        match self {
            NameValidationScheme::Utf8 => "utf8",
            NameValidationScheme::Legacy => "legacy",
        }
    }
}

impl Serialize for NameValidationScheme {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NameValidationScheme {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        match s.as_str() {
            "" | "utf8" => Ok(NameValidationScheme::Utf8),
            "legacy" => Ok(NameValidationScheme::Legacy),
            _ => Err(de::Error::custom(format!("unrecognized ValidationScheme: {s:?}"))),
        }
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_legacy_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Prometheus's `relabelTargetLegacy`: `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`, i.e. a
/// legacy label name in which `$1`, `${1}`, `$name` may stand for characters.
fn is_legacy_target_template(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_alphabetic() || c == b'_' => i += 1,
            b'$' => {
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    let start = i + 1;
                    let mut j = start;
                    while j < b.len() && word(b[j]) {
                        j += 1;
                    }
                    if j == start || j >= b.len() || b[j] != b'}' {
                        return false;
                    }
                    i = j + 1;
                } else {
                    let start = i;
                    while i < b.len() && word(b[i]) {
                        i += 1;
                    }
                    if i == start {
                        return false;
                    }
                }
            }
            // digits may follow once something has started the name
            c if c.is_ascii_digit() && i > 0 => i += 1,
            _ => return false,
        }
    }
    true
}

/// A relabel action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Action {
    /// Write the expanded `replacement` to the expanded `target_label` when the regex matches.
    #[default]
    Replace,
    /// Drop the target/series unless the regex matches the joined source values.
    Keep,
    /// Drop the target/series when the regex matches the joined source values.
    Drop,
    /// Drop unless the joined source values equal the value of `target_label`.
    KeepEqual,
    /// Drop when the joined source values equal the value of `target_label`.
    DropEqual,
    /// Set `target_label` to `md5(joined) mod modulus`.
    HashMod,
    /// Copy every label whose name matches to the name the replacement expands to.
    LabelMap,
    /// Remove every label whose name matches.
    LabelDrop,
    /// Remove every label whose name does not match.
    LabelKeep,
    /// Set `target_label` to the lower-cased joined source values.
    Lowercase,
    /// Set `target_label` to the upper-cased joined source values.
    Uppercase,
}

impl Action {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }

    /// Parses an action name, case-insensitively as Prometheus does.
    pub fn parse(s: &str) -> Result<Action, Error> {
        Ok(match s.to_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return Err(Error::InvalidRelabel(format!("unknown relabel action {s:?}"))),
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Action::parse(&s).map_err(de::Error::custom)
    }
}

/// A relabel regex: the source as written and its compiled, fully anchored form.
#[derive(Clone, Debug)]
pub struct Regex {
    source: String,
    re: regex::Regex,
}

impl Regex {
    /// Compiles `source` as Prometheus does: Go RE2 syntax, anchored as `^(?s:source)$`.
    pub fn new(source: &str) -> Result<Regex, Error> {
        let re = promflow_storage::re2::compile_anchored(source)
            .map_err(|e| Error::InvalidRelabel(e.to_string()))?;
        Ok(Regex { source: source.to_string(), re })
    }

    /// The regex as written in the configuration (without the anchors).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// The compiled, anchored regex.
    pub fn compiled(&self) -> &regex::Regex {
        &self.re
    }
}

impl Default for Regex {
    fn default() -> Self {
        static DEFAULT: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                #[allow(clippy::expect_used)]
                Regex::new(DEFAULT_REGEX).expect("the default relabel regex compiles")
            })
            .clone()
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Regex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `regex:` with no value is Go's nil regexp, which Prometheus turns into "".
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Regex::new(&s).map_err(de::Error::custom)
    }
}

fn default_separator() -> String {
    ";".to_string()
}

fn default_replacement() -> String {
    "$1".to_string()
}

fn is_default_separator(s: &str) -> bool {
    s == ";"
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One relabel rule (`relabel_configs`, `metric_relabel_configs`, `write_relabel_configs`,
/// `alert_relabel_configs`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched against `regex`.
    #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    /// Joins the source values (default `;`).
    #[serde(default = "default_separator", deserialize_with = "crate::yaml::nullable")]
    pub separator: String,
    /// The regex (default `(.*)`), fully anchored.
    pub regex: Regex,
    /// The modulus for `hashmod`.
    #[serde(skip_serializing_if = "is_zero")]
    pub modulus: u64,
    /// The label written by `replace`, `hashmod`, `lowercase`, `uppercase`, or compared by
    /// `keepequal`/`dropequal`. May use `$1`-style references for `replace`.
    #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
    pub target_label: String,
    /// The replacement for `replace` and `labelmap` (default `$1`).
    #[serde(default = "default_replacement", deserialize_with = "crate::yaml::nullable")]
    pub replacement: String,
    /// The action (default `replace`).
    pub action: Action,
    /// How `target_label` (and the `labelmap` result) is validated. Not part of the YAML: it
    /// comes from `metric_name_validation_scheme` of the enclosing scrape config or global.
    #[serde(skip)]
    pub name_validation_scheme: NameValidationScheme,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: default_separator(),
            regex: Regex::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: default_replacement(),
            action: Action::Replace,
            name_validation_scheme: NameValidationScheme::Utf8,
        }
    }
}

impl RelabelConfig {
    /// Checks the rule the way Prometheus's `relabel.Config.Validate` does, under the rule's
    /// `name_validation_scheme`. Errors use Prometheus's wording.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(Error::InvalidRelabel)
    }

    fn check(&self) -> Result<(), String> {
        use Action::*;
        let a = self.action;
        let scheme = self.name_validation_scheme;
        for l in &self.source_labels {
            if l.is_empty() {
                return Err(format!("{l:?} is not a valid label name"));
            }
        }
        if self.modulus == 0 && a == HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(a, Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual)
            && self.target_label.is_empty()
        {
            return Err(format!("relabel configuration for {a} action requires 'target_label' value"));
        }
        let templated = self.target_label.contains('$');
        let valid_with_vars = |v: &str| match scheme {
            NameValidationScheme::Utf8 => scheme.is_valid_label_name(v),
            NameValidationScheme::Legacy => is_legacy_target_template(v),
        };
        let invalid_target = || format!("{:?} is invalid 'target_label' for {a} action", self.target_label);
        if a == Replace && !templated && !scheme.is_valid_label_name(&self.target_label) {
            return Err(invalid_target());
        }
        if a == Replace && templated && !valid_with_vars(&self.target_label) {
            return Err(invalid_target());
        }
        if matches!(a, Lowercase | Uppercase | KeepEqual | DropEqual)
            && !scheme.is_valid_label_name(&self.target_label)
        {
            return Err(invalid_target());
        }
        if matches!(a, Lowercase | Uppercase | KeepEqual | DropEqual)
            && self.replacement != default_replacement()
        {
            return Err(format!("'replacement' can not be set for {a} action"));
        }
        if a == LabelMap && !valid_with_vars(&self.replacement) {
            return Err(format!("{:?} is invalid 'replacement' for {a} action", self.replacement));
        }
        if a == HashMod && !scheme.is_valid_label_name(&self.target_label) {
            return Err(invalid_target());
        }
        if matches!(a, DropEqual | KeepEqual)
            && (self.regex.as_str() != DEFAULT_REGEX
                || self.modulus != 0
                || !is_default_separator(&self.separator)
                || self.replacement != default_replacement())
        {
            return Err(format!(
                "{a} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(a, LabelDrop | LabelKeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || !is_default_separator(&self.separator)
                || self.replacement != default_replacement())
        {
            return Err(format!("{a} action requires only 'regex', and no other fields"));
        }
        Ok(())
    }
}

impl Validate for RelabelConfig {
    fn validate(&mut self) -> Result<(), String> {
        self.check()
    }
}

/// Applies `cfgs` in order to a copy of `labels`. `None` means a rule dropped the target or
/// series; otherwise the relabelled set (which may be empty).
pub fn process(labels: &Labels, cfgs: &[RelabelConfig]) -> Option<Labels> {
    let mut out = labels.clone();
    if process_in_place(&mut out, cfgs) {
        Some(out)
    } else {
        None
    }
}

/// Applies `cfgs` in order to `labels` in place; returns `false` when a rule drops it (the
/// labels are then in an unspecified intermediate state).
pub fn process_in_place(labels: &mut Labels, cfgs: &[RelabelConfig]) -> bool {
    cfgs.iter().all(|cfg| relabel(cfg, labels))
}

fn relabel(cfg: &RelabelConfig, lb: &mut Labels) -> bool {
    let val = match cfg.source_labels.as_slice() {
        [] => String::new(),
        [one] => lb.get(one).to_string(),
        many => {
            let mut s = String::new();
            for (i, name) in many.iter().enumerate() {
                if i > 0 {
                    s.push_str(&cfg.separator);
                }
                s.push_str(lb.get(name));
            }
            s
        }
    };
    match cfg.action {
        Action::Drop => {
            if cfg.regex.is_match(&val) {
                return false;
            }
        }
        Action::Keep => {
            if !cfg.regex.is_match(&val) {
                return false;
            }
        }
        Action::DropEqual => {
            if lb.get(&cfg.target_label) == val {
                return false;
            }
        }
        Action::KeepEqual => {
            if lb.get(&cfg.target_label) != val {
                return false;
            }
        }
        Action::Replace => {
            let Some(caps) = cfg.regex.compiled().captures(&val) else {
                return true;
            };
            let target = expand(cfg.regex.compiled(), &caps, &cfg.target_label);
            if !cfg.name_validation_scheme.is_valid_label_name(&target) {
                return true;
            }
            let res = expand(cfg.regex.compiled(), &caps, &cfg.replacement);
            // an empty value removes the label
            lb.set(&target, &res);
        }
        Action::Lowercase => lb.set(&cfg.target_label, &lowercase(&val)),
        Action::Uppercase => lb.set(&cfg.target_label, &uppercase(&val)),
        Action::HashMod => {
            let hash = crate::md5::md5(val.as_bytes());
            let mut last8 = [0u8; 8];
            last8.copy_from_slice(&hash[8..]);
            // modulus is non-zero after validation; guard anyway
            let m = u64::from_be_bytes(last8).checked_rem(cfg.modulus).unwrap_or(0);
            lb.set(&cfg.target_label, &m.to_string());
        }
        Action::LabelMap => {
            let snapshot: Vec<Label> = lb.iter().cloned().collect();
            for l in snapshot {
                if let Some(caps) = cfg.regex.compiled().captures(&l.name) {
                    let name = expand(cfg.regex.compiled(), &caps, &cfg.replacement);
                    // Prometheus would create a label with an empty name here; such a series
                    // is rejected later anyway, so skip it.
                    if !name.is_empty() {
                        lb.set(&name, &l.value);
                    }
                }
            }
        }
        Action::LabelDrop => lb.retain(|l| !cfg.regex.is_match(&l.name)),
        Action::LabelKeep => lb.retain(|l| cfg.regex.is_match(&l.name)),
    }
    true
}

/// Go's `strings.ToLower`: per-rune simple case mapping.
fn lowercase(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut l = c.to_lowercase();
            match (l.next(), l.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

/// Go's `strings.ToUpper`: per-rune simple case mapping (`ß` stays `ß`).
fn uppercase(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

/// Go's `Regexp.Expand` for a template against one match.
pub fn expand(re: &regex::Regex, caps: &regex::Captures<'_>, template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        match extract(rest) {
            None => out.push('$'),
            Some((name, num, r)) => {
                rest = r;
                let m = match num {
                    Some(n) => caps.get(n),
                    None => re.capture_names().position(|n| n == Some(name)).and_then(|i| caps.get(i)),
                };
                if let Some(m) = m {
                    out.push_str(m.as_str());
                }
            }
        }
    }
    out.push_str(rest);
    out
}

/// Go's `regexp.extract`: the name after `$`, its group number if it is one, and the rest.
fn extract(s: &str) -> Option<(&str, Option<usize>, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let len: usize = body
        .chars()
        .take_while(|c| c.is_alphabetic() || c.is_numeric() || *c == '_')
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let name = &body[..len];
    let mut rest = &body[len..];
    if brace {
        rest = rest.strip_prefix('}')?;
    }
    let mut num: Option<usize> = Some(0);
    for b in name.bytes() {
        match num {
            Some(n) if b.is_ascii_digit() && n < 100_000_000 => num = Some(n * 10 + (b - b'0') as usize),
            _ => {
                num = None;
                break;
            }
        }
    }
    if name.len() > 1 && name.starts_with('0') {
        num = None;
    }
    Some((name, num, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    fn rule(f: impl FnOnce(&mut RelabelConfig)) -> RelabelConfig {
        let mut c = RelabelConfig::default();
        f(&mut c);
        c.validate().unwrap();
        c
    }

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    #[test]
    fn replace_with_groups() {
        let input = ls(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = re("f(.*)");
            c.target_label = "d".into();
            c.replacement = "ch${1}-ch${1}".into();
        });
        assert_eq!(
            process(&input, &[r]).unwrap(),
            ls(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")])
        );
    }

    #[test]
    fn replace_chain_and_multiple_sources() {
        let input = ls(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        let r1 = rule(|c| {
            c.source_labels = vec!["a".into(), "b".into()];
            c.regex = re("f(.*);(.*)r");
            c.target_label = "a".into();
            c.replacement = "b${1}${2}m".into();
        });
        let r2 = rule(|c| {
            c.source_labels = vec!["c".into(), "a".into()];
            c.regex = re("(b).*b(.*)ba(.*)");
            c.target_label = "d".into();
            c.replacement = "$1$2$2$3".into();
        });
        assert_eq!(
            process(&input, &[r1, r2]).unwrap(),
            ls(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")])
        );
    }

    #[test]
    fn replace_no_match_and_delete() {
        let input = ls(&[("a", "boo")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = re("f");
            c.target_label = "b".into();
            c.replacement = "bar".into();
        });
        assert_eq!(process(&input, &[r]).unwrap(), input);

        // an empty expansion deletes the (templated) target label
        let input = ls(&[("a", "foo"), ("f", "baz")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = re("(f).*");
            c.target_label = "$1".into();
            c.replacement = "$2".into();
        });
        assert_eq!(process(&input, &[r]).unwrap(), ls(&[("a", "foo")]));
    }

    #[test]
    fn replace_go_expand_semantics() {
        let input = ls(&[("a", "foo")]);
        let run = |repl: &str| {
            let r = rule(|c| {
                c.source_labels = vec!["a".into()];
                c.regex = re("(?P<first>f)(o+)");
                c.target_label = "t".into();
                c.replacement = repl.into();
            });
            process(&input, &[r]).unwrap().get("t").to_string()
        };
        assert_eq!(run("$1x"), ""); // group named "1x" does not exist
        assert_eq!(run("${1}x"), "fx");
        assert_eq!(run("$first-$2"), "f-oo");
        assert_eq!(run("${first}"), "f");
        assert_eq!(run("$$1"), "$1");
        assert_eq!(run("a$"), "a$");
        assert_eq!(run("$-"), "$-");
        assert_eq!(run("${1"), "${1");
        assert_eq!(run("$01"), ""); // leading zero: a name, not group 1
        assert_eq!(run("$9"), "");
        assert_eq!(run("literal"), "literal");
    }

    #[test]
    fn replace_default_copies_whole_value_and_missing_source_is_empty() {
        let input = ls(&[("__address__", "host:9100")]);
        let r = rule(|c| {
            c.source_labels = vec!["__address__".into()];
            c.target_label = "instance".into();
        });
        assert_eq!(process(&input, &[r]).unwrap().get("instance"), "host:9100");
        // static value with no sources: the default regex matches ""
        let r = rule(|c| {
            c.target_label = "env".into();
            c.replacement = "prod".into();
        });
        assert_eq!(process(&input, &[r]).unwrap().get("env"), "prod");
    }

    #[test]
    fn dot_matches_newline() {
        let input = ls(&[("a", "foo\nbar")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = re("foo.bar");
            c.action = Action::Keep;
        });
        assert!(process(&input, &[r]).is_some());
    }

    #[test]
    fn keep_and_drop() {
        let input = ls(&[("a", "foo")]);
        let mk = |action, regex: &str| {
            rule(|c| {
                c.source_labels = vec!["a".into()];
                c.regex = re(regex);
                c.action = action;
            })
        };
        assert!(process(&input, &[mk(Action::Drop, ".*o.*")]).is_none());
        assert_eq!(process(&input, &[mk(Action::Drop, "no-match")]).unwrap(), input);
        // anchored: "f|o" does not match "foo" as a whole
        assert_eq!(process(&input, &[mk(Action::Drop, "f|o")]).unwrap(), input);
        assert!(process(&input, &[mk(Action::Keep, "no-match")]).is_none());
        assert_eq!(process(&input, &[mk(Action::Keep, "f.*")]).unwrap(), input);
        // a drop stops processing
        let later = rule(|c| {
            c.target_label = "x".into();
            c.replacement = "y".into();
        });
        assert!(process(&input, &[mk(Action::Drop, "foo"), later]).is_none());
    }

    #[test]
    fn keepequal_dropequal() {
        let same = ls(&[("a", "1"), ("b", "1")]);
        let diff = ls(&[("a", "1"), ("b", "2")]);
        let mk = |action| {
            rule(|c| {
                c.source_labels = vec!["a".into()];
                c.target_label = "b".into();
                c.action = action;
            })
        };
        assert!(process(&same, &[mk(Action::KeepEqual)]).is_some());
        assert!(process(&diff, &[mk(Action::KeepEqual)]).is_none());
        assert!(process(&same, &[mk(Action::DropEqual)]).is_none());
        assert!(process(&diff, &[mk(Action::DropEqual)]).is_some());
    }

    #[test]
    fn hashmod_matches_prometheus() {
        let mk = |src: &str, target: &str| {
            rule(|c| {
                c.source_labels = vec![src.into()];
                c.target_label = target.into();
                c.modulus = 1000;
                c.action = Action::HashMod;
            })
        };
        let out = process(&ls(&[("a", "foo"), ("b", "bar"), ("c", "baz")]), &[mk("c", "d")]).unwrap();
        assert_eq!(out.get("d"), "976");
        let out = process(&ls(&[("a", "foo\nbar")]), &[mk("a", "b")]).unwrap();
        assert_eq!(out.get("b"), "734");
    }

    #[test]
    fn labelmap() {
        let input = ls(&[("a", "foo"), ("b1", "bar"), ("b2", "baz")]);
        let r = rule(|c| {
            c.regex = re("(b.*)");
            c.replacement = "bar_${1}".into();
            c.action = Action::LabelMap;
        });
        assert_eq!(
            process(&input, &[r]).unwrap(),
            ls(&[("a", "foo"), ("b1", "bar"), ("b2", "baz"), ("bar_b1", "bar"), ("bar_b2", "baz")])
        );
        let input = ls(&[("__meta_kubernetes_pod_label_app", "web"), ("__meta_other", "x")]);
        let r = rule(|c| {
            c.regex = re("__meta_kubernetes_pod_label_(.+)");
            c.action = Action::LabelMap;
        });
        assert_eq!(process(&input, &[r]).unwrap().get("app"), "web");
    }

    #[test]
    fn labeldrop_labelkeep() {
        let input = ls(&[("a", "foo"), ("b1", "bar"), ("b2", "baz")]);
        let drop = rule(|c| {
            c.regex = re("b.*");
            c.action = Action::LabelDrop;
        });
        assert_eq!(process(&input, &[drop]).unwrap(), ls(&[("a", "foo")]));
        let keep = rule(|c| {
            c.regex = re("b.*");
            c.action = Action::LabelKeep;
        });
        assert_eq!(process(&input, &[keep]).unwrap(), ls(&[("b1", "bar"), ("b2", "baz")]));
    }

    #[test]
    fn lowercase_uppercase() {
        let input = ls(&[("foo", "bAr123Foo"), ("s", "straße")]);
        let lower = rule(|c| {
            c.source_labels = vec!["foo".into()];
            c.target_label = "lo".into();
            c.action = Action::Lowercase;
        });
        let upper = rule(|c| {
            c.source_labels = vec!["foo".into(), "s".into()];
            c.target_label = "up".into();
            c.action = Action::Uppercase;
        });
        let out = process(&input, &[lower, upper]).unwrap();
        assert_eq!(out.get("lo"), "bar123foo");
        assert_eq!(out.get("up"), "BAR123FOO;STRAßE");
    }

    #[test]
    fn invalid_target_from_template_is_skipped() {
        let input = ls(&[("a", "foo")]);
        let mut r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = re("(.*)");
            c.target_label = "${1}-x".into();
            c.replacement = "v".into();
        });
        // under UTF-8 validation "foo-x" is a fine name
        assert_eq!(process(&input, std::slice::from_ref(&r)).unwrap().get("foo-x"), "v");
        r.name_validation_scheme = NameValidationScheme::Legacy;
        assert!(r.validate().is_err());
    }

    #[test]
    fn validation_errors() {
        let bad = |f: &dyn Fn(&mut RelabelConfig)| {
            let mut c = RelabelConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(&|c| c.action = Action::Replace),
            "relabel configuration for replace action requires 'target_label' value"
        );
        assert_eq!(
            bad(&|c| {
                c.action = Action::HashMod;
                c.target_label = "x".into();
            }),
            "relabel configuration for hashmod requires non-zero modulus"
        );
        assert_eq!(
            bad(&|c| {
                c.action = Action::LabelDrop;
                c.source_labels = vec!["a".into()];
            }),
            "labeldrop action requires only 'regex', and no other fields"
        );
        assert_eq!(
            bad(&|c| {
                c.action = Action::LabelKeep;
                c.target_label = "a".into();
            }),
            "labelkeep action requires only 'regex', and no other fields"
        );
        assert_eq!(
            bad(&|c| {
                c.action = Action::KeepEqual;
                c.target_label = "a".into();
                c.regex = re("x");
            }),
            "keepequal action requires only 'source_labels' and `target_label`, and no other fields"
        );
        assert_eq!(
            bad(&|c| {
                c.action = Action::Lowercase;
                c.target_label = "a".into();
                c.replacement = "x".into();
            }),
            "'replacement' can not be set for lowercase action"
        );
        assert_eq!(
            bad(&|c| {
                c.name_validation_scheme = NameValidationScheme::Legacy;
                c.target_label = "foo.bar".into();
            }),
            "\"foo.bar\" is invalid 'target_label' for replace action"
        );
        assert!(Action::parse("Replace").is_ok());
        assert_eq!(Action::parse("bogus").unwrap_err().to_string(), "unknown relabel action \"bogus\"");
        assert!(Regex::new("(").is_err());
    }

    #[test]
    fn legacy_target_templates() {
        for ok in ["abc", "_a1", "$1", "${1}", "foo_$1", "${1}_bar", "$name", "a${b}c9"] {
            assert!(is_legacy_target_template(ok), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "$", "${}", "${1", "a.b", "$-"] {
            assert!(!is_legacy_target_template(bad), "{bad}");
        }
    }
}
