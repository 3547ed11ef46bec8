//! YAML plumbing: a generic value type, null-tolerant field helpers, validation hooks that
//! keep the source position, and the translation of parser errors into [`Error`]s that name
//! file, line, column and the path of the offending field.

use std::collections::BTreeMap;
use std::fmt;

use promflow_storage::Labels;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter, Spanned};

use crate::Error;

/// Any YAML value. Used for the parts of the configuration promflow accepts without
/// interpreting them (service discoveries it does not implement, `sigv4`, …).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum YamlValue {
    /// `null`, `~` or an empty value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (or an integer too large for `i64`).
    Float(f64),
    /// A string.
    String(String),
    /// A sequence.
    Seq(Vec<YamlValue>),
    /// A mapping, in source order; keys are rendered as strings.
    Map(Vec<(String, YamlValue)>),
}

impl YamlValue {
    fn key_string(self) -> String {
        match self {
            YamlValue::Null => "null".into(),
            YamlValue::Bool(b) => b.to_string(),
            YamlValue::Int(i) => i.to_string(),
            YamlValue::Float(f) => f.to_string(),
            YamlValue::String(s) => s,
            other => format!("{other:?}"),
        }
    }

    /// A copy with the values of secret-looking keys (`password`, `secret_key`, `token`, …)
    /// replaced by `<secret>`, the way Prometheus prints secrets.
    pub fn redacted(&self) -> YamlValue {
        match self {
            YamlValue::Seq(v) => YamlValue::Seq(v.iter().map(YamlValue::redacted).collect()),
            YamlValue::Map(m) => YamlValue::Map(
                m.iter()
                    .map(|(k, v)| {
                        let secret = is_secret_key(k) && !matches!(v, YamlValue::Null | YamlValue::Map(_));
                        (k.clone(), if secret { YamlValue::String(SECRET.into()) } else { v.redacted() })
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Keys whose values Prometheus types as `Secret` in the configurations we keep untyped.
fn is_secret_key(k: &str) -> bool {
    matches!(
        k,
        "password"
            | "secret_key"
            | "client_secret"
            | "credentials"
            | "bearer_token"
            | "token"
            | "access_key"
            | "application_credential_secret"
            | "auth_token"
            | "key"
            | "client_certificate_key"
            | "api_key"
            | "consumer_key"
            | "application_secret"
            | "secret"
            | "secret_access_key"
    )
}

/// What Prometheus prints instead of a secret.
pub(crate) const SECRET: &str = "<secret>";

impl<'de> Deserialize<'de> for YamlValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = YamlValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<YamlValue, E> {
                Ok(YamlValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<YamlValue, E> {
                Ok(YamlValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<YamlValue, E> {
                Ok(i64::try_from(v).map(YamlValue::Int).unwrap_or(YamlValue::Float(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<YamlValue, E> {
                Ok(YamlValue::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<YamlValue, E> {
                Ok(YamlValue::String(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<YamlValue, E> {
                Ok(YamlValue::String(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<YamlValue, E> {
                Ok(YamlValue::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<YamlValue, E> {
                Ok(YamlValue::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<YamlValue, D::Error> {
                YamlValue::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<YamlValue, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element::<YamlValue>()? {
                    v.push(x);
                }
                Ok(YamlValue::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<YamlValue, A::Error> {
                let mut m = Vec::new();
                while let Some((k, v)) = a.next_entry::<YamlValue, YamlValue>()? {
                    m.push((k.key_string(), v));
                }
                Ok(YamlValue::Map(m))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for YamlValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            YamlValue::Null => s.serialize_unit(),
            YamlValue::Bool(b) => s.serialize_bool(*b),
            YamlValue::Int(i) => s.serialize_i64(*i),
            YamlValue::Float(f) => s.serialize_f64(*f),
            YamlValue::String(v) => s.serialize_str(v),
            YamlValue::Seq(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            YamlValue::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// A service discovery configuration promflow accepts but does not interpret: any mapping.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UntypedConfig {
    /// The mapping's entries in source order.
    pub fields: Vec<(String, YamlValue)>,
}

impl<'de> Deserialize<'de> for UntypedConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match YamlValue::deserialize(d)? {
            YamlValue::Map(fields) => Ok(UntypedConfig { fields }),
            YamlValue::Null => Ok(UntypedConfig::default()),
            other => Err(de::Error::custom(format!("expected a mapping, got {}", kind(&other)))),
        }
    }
}

impl Serialize for UntypedConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        YamlValue::Map(self.fields.clone()).redacted().serialize(s)
    }
}

fn kind(v: &YamlValue) -> &'static str {
    match v {
        YamlValue::Null => "null",
        YamlValue::Bool(_) => "a boolean",
        YamlValue::Int(_) | YamlValue::Float(_) => "a number",
        YamlValue::String(_) => "a string",
        YamlValue::Seq(_) => "a sequence",
        YamlValue::Map(_) => "a mapping",
    }
}

/// Deserializes `T`, treating an explicit null (`key:` with no value) as `T::default()`, as
/// Go's YAML decoder does for slices, maps and structs.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A configuration section with checks that run once it is parsed (Prometheus's
/// `UnmarshalYAML` validations). The message is Prometheus's wording where there is one.
pub(crate) trait Validate {
    fn validate(&mut self) -> Result<(), String>;
}

const LOC_MARK: &str = "@@at=";

/// A custom error carrying the position of the section that failed validation; the marker is
/// taken out again by [`convert_error`].
fn located<E: de::Error>(loc: &serde_saphyr::Location, msg: String) -> E {
    if loc.line() == 0 {
        E::custom(msg)
    } else {
        E::custom(format!("{LOC_MARK}{}:{}@@{msg}", loc.line(), loc.column()))
    }
}

fn check<T: Validate, E: de::Error>(mut s: Spanned<T>) -> Result<Spanned<T>, E> {
    match s.value.validate() {
        Ok(()) => Ok(s),
        Err(m) => Err(located(&s.referenced, m)),
    }
}

/// A validated section; null is its default.
pub(crate) fn validated<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Validate + Default,
{
    match Option::<Spanned<T>>::deserialize(d)? {
        Some(s) => Ok(check::<T, D::Error>(s)?.value),
        None => Ok(T::default()),
    }
}

/// An optional validated section (null is `None`).
pub(crate) fn validated_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Validate,
{
    match Option::<Spanned<T>>::deserialize(d)? {
        Some(s) => Ok(Some(check::<T, D::Error>(s)?.value)),
        None => Ok(None),
    }
}

/// A list of validated sections; null is the empty list.
pub(crate) fn validated_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Validate,
{
    Ok(validated_spanned_vec(d)?.into_iter().map(|s| s.value).collect())
}

/// A list of validated sections that keep their positions.
pub(crate) fn validated_spanned_vec<'de, D, T>(d: D) -> Result<Vec<Spanned<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Validate,
{
    let v = Option::<Vec<Spanned<T>>>::deserialize(d)?.unwrap_or_default();
    v.into_iter().map(check::<T, D::Error>).collect()
}

/// Whether an optional string is set to something non-empty (Go's `!= ""`).
pub(crate) fn is_set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Serializes a secret as `<secret>`.
pub(crate) fn ser_secret<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(SECRET),
        None => s.serialize_none(),
    }
}

/// A URL with the password of its user information replaced by `xxxxx`, as Prometheus's
/// `config.URL` renders itself (`http://user:xxxxx@host/`).
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:xxxxx@{host}{tail}")
        }
        _ => url.to_string(),
    }
}

/// Serializes a URL with its password redacted ([`redact_url`]).
pub(crate) fn ser_url<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(v))
}

/// Serializes an optional URL with its password redacted ([`redact_url`]).
pub(crate) fn ser_opt_url<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => s.serialize_str(&redact_url(u)),
        None => s.serialize_none(),
    }
}

/// Serde for [`Labels`] as a YAML mapping `name: value`.
pub(crate) mod labels_serde {
    use super::*;

    pub fn serialize<S: Serializer>(l: &Labels, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(l.len()))?;
        for label in l {
            map.serialize_entry(&label.name, &label.value)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        let m = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?.unwrap_or_default();
        for name in m.keys() {
            if name.is_empty() {
                return Err(de::Error::custom(format!("{name:?} is not a valid label name")));
            }
        }
        Ok(Labels::from_pairs(m.into_iter().map(|(k, v)| (k, v.unwrap_or_default()))))
    }
}

/// Turns a parser error into an [`Error::Config`] naming the file, position and field path.
pub(crate) fn convert_error(e: &serde_saphyr::Error, src: &str, file: &str) -> Error {
    let inner = e.without_snippet();
    let mut msg = DefaultMessageFormatter.format_message(inner).into_owned();
    let mut pos = e.location().map(|l| (l.line() as usize, l.column() as usize)).filter(|(l, _)| *l > 0);
    if let Some(start) = msg.find(LOC_MARK) {
        let rest = &msg[start + LOC_MARK.len()..];
        if let Some(end) = rest.find("@@") {
            let mut it = rest[..end].split(':').map(|x| x.parse::<usize>().ok());
            if let (Some(Some(l)), Some(Some(c))) = (it.next(), it.next()) {
                pos = Some((l, c));
            }
            msg = format!("{}{}", &msg[..start], &rest[end + 2..]);
        }
    }
    let path = pos.map(|(l, c)| path_at(src, l, c)).unwrap_or_default();
    let message = if let Some(field) = unknown_field(&msg) {
        let mut m = if path.is_empty() {
            format!("unknown field {field:?} at the top level")
        } else {
            format!("unknown field {field:?} in {path}")
        };
        if let Some(s) = suggest(&field, &expected_fields(&msg)) {
            m.push_str(&format!(" (did you mean {s:?}?)"));
        }
        m
    } else {
        if let Some(i) = msg.find(", set DuplicateKeyPolicy") {
            msg.truncate(i);
        }
        msg = friendlier(&msg);
        if path.is_empty() {
            msg
        } else {
            format!("{path}: {msg}")
        }
    };
    Error::config(file, pos.map(|p| p.0), pos.map(|p| p.1), message)
}

/// Rewords the parser's terse type errors.
fn friendlier(msg: &str) -> String {
    let m = match msg {
        "expected sequence start" => "expected a list",
        "expected mapping start" => "expected a mapping",
        "invalid boolean" => "expected a boolean (true or false)",
        "invalid u8" | "invalid u16" | "invalid u32" | "invalid u64" | "invalid usize" => {
            "expected a non-negative integer"
        }
        "invalid i8" | "invalid i16" | "invalid i32" | "invalid i64" | "invalid isize" => {
            "expected an integer"
        }
        "invalid f32" | "invalid f64" => "expected a number",
        other => {
            if let Some(k) = other.strip_prefix("duplicate mapping key: ") {
                return format!("duplicate key {k:?}");
            }
            other
        }
    };
    m.to_string()
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

fn expected_fields(msg: &str) -> Vec<String> {
    match msg.find("expected one of ") {
        Some(i) => msg[i + "expected one of ".len()..]
            .split(',')
            .map(|f| f.trim().trim_matches('`').to_string())
            .filter(|f| !f.is_empty())
            .collect(),
        None => match msg.find("expected `") {
            Some(i) => vec![msg[i + "expected `".len()..].trim_end_matches('`').to_string()],
            None => vec![],
        },
    }
}

/// The closest known field name, when it is plausibly a typo.
fn suggest(field: &str, known: &[String]) -> Option<String> {
    let mut best: Option<(usize, &String)> = None;
    for k in known {
        let d = edit_distance(field, k);
        if d <= 2.max(field.len() / 5) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

enum Seg {
    Key(String),
    Item(usize),
}

struct Frame {
    indent: usize,
    seg: Seg,
    next_item: usize,
}

/// The path (`scrape_configs[0].relabel_configs[2]`) of the node at `line`/`col` (1-based),
/// worked out from block-style indentation. Best effort: flow collections and exotic layouts
/// give a shorter path, never a wrong panic.
pub(crate) fn path_at(src: &str, line: usize, col: usize) -> String {
    let target = col.saturating_sub(1);
    let mut stack: Vec<Frame> = Vec::new();
    let mut block_scalar: Option<usize> = None;
    for (i, raw) in src.lines().enumerate() {
        let lno = i + 1;
        if lno > line {
            break;
        }
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let content = raw[indent..].trim_end();
        if let Some(bi) = block_scalar {
            if content.is_empty() || indent > bi {
                continue;
            }
            block_scalar = None;
        }
        if content.is_empty() || content.starts_with('#') || (indent == 0 && content.starts_with("---")) {
            continue;
        }
        let limit = if lno == line { target } else { usize::MAX };
        let mut pos = indent;
        let mut c = content;
        while pos < limit {
            if c == "-" || c.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|t| t.indent > pos || (t.indent == pos && matches!(t.seg, Seg::Item(_))))
                {
                    stack.pop();
                }
                let idx = match stack.last_mut() {
                    Some(p) => {
                        p.next_item += 1;
                        p.next_item - 1
                    }
                    None => 0,
                };
                stack.push(Frame { indent: pos, seg: Seg::Item(idx), next_item: 0 });
                let rest = &c[1..];
                let spaces = rest.len() - rest.trim_start_matches(' ').len();
                pos += 1 + spaces;
                c = &rest[spaces..];
                if c.is_empty() {
                    break;
                }
                continue;
            }
            if let Some((key, value)) = split_key(c) {
                while stack.last().is_some_and(|t| t.indent >= pos) {
                    stack.pop();
                }
                stack.push(Frame { indent: pos, seg: Seg::Key(key), next_item: 0 });
                if value.starts_with('|') || value.starts_with('>') {
                    block_scalar = Some(pos);
                }
            }
            break;
        }
    }
    while stack.last().is_some_and(|t| t.indent >= target) {
        stack.pop();
    }
    let mut out = String::new();
    for f in &stack {
        match &f.seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Item(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Splits `key: value` (or `key:`) into the key and the value text.
fn split_key(c: &str) -> Option<(String, &str)> {
    if c.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
        return None;
    }
    if let Some(q) = c.chars().next().filter(|q| *q == '"' || *q == '\'') {
        let end = c[1..].find(q)? + 1;
        let after = c[end + 1..].trim_start();
        let value = after.strip_prefix(':')?;
        return Some((c[1..end].to_string(), value.trim()));
    }
    let idx = c.find(": ").or_else(|| c.strip_suffix(':').map(|k| k.len()))?;
    let key = &c[..idx];
    if key.contains(" #") {
        return None;
    }
    Some((key.trim().to_string(), c[idx + 1..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_indentation() {
        let src = "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n  - job_name: b\n    scrape_intervall: 5s\n    relabel_configs:\n    - source_labels: [a]\n      regex: x\n";
        assert_eq!(path_at(src, 2, 20), "global.scrape_interval");
        assert_eq!(path_at(src, 2, 3), "global");
        assert_eq!(path_at(src, 8, 5), "scrape_configs[1]");
        assert_eq!(path_at(src, 7, 5), "scrape_configs[1]");
        assert_eq!(path_at(src, 6, 9), "scrape_configs[0].static_configs[0]");
        assert_eq!(path_at(src, 11, 7), "scrape_configs[1].relabel_configs[0]");
        assert_eq!(path_at(src, 11, 14), "scrape_configs[1].relabel_configs[0].regex");
        assert_eq!(path_at(src, 1, 1), "");
        assert_eq!(path_at("", 3, 3), "");
    }

    #[test]
    fn compact_sequences() {
        let src = "scrape_configs:\n- job_name: a\n  static_configs:\n  - targets: [x]\n- job_name: b\n  bogus: 1\nrule_files:\n- x\n";
        assert_eq!(path_at(src, 6, 3), "scrape_configs[1]");
        assert_eq!(path_at(src, 4, 5), "scrape_configs[0].static_configs[0]");
        assert_eq!(path_at(src, 8, 3), "rule_files[0]");
    }

    #[test]
    fn suggestions() {
        let known: Vec<String> =
            ["scrape_interval", "scrape_timeout"].iter().map(|s| s.to_string()).collect();
        assert_eq!(suggest("scrape_intervall", &known).as_deref(), Some("scrape_interval"));
        assert_eq!(suggest("zzz", &known), None);
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact_url("http://u:p4ss@proxy:3128"), "http://u:xxxxx@proxy:3128");
        assert_eq!(redact_url("https://u:p@ss:w@h/api/v1/write?x=1"), "https://u:xxxxx@h/api/v1/write?x=1");
        assert_eq!(redact_url("http://u@h/p"), "http://u@h/p");
        assert_eq!(redact_url("http://h/a:b@c"), "http://h/a:b@c");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
