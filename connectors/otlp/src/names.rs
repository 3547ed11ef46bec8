//! Metric and label names from OTLP names, as Prometheus 3 translates them
//! (`otlp.translation_strategy`).
//!
//! The default strategy escapes names to the legacy character set and adds suffixes:
//! the unit (`s` → `_seconds`, `By/s` → `_bytes_per_second`), `_total` for monotonic sums and
//! `_ratio` for gauges of unit `1`. The UTF-8 strategies keep names as they are, with or
//! without suffixes.

use promflow_config::OtlpConfig;

/// How names are translated (`otlp.translation_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// `UnderscoreEscapingWithSuffixes` (the default).
    EscapeWithSuffixes,
    /// `UnderscoreEscapingWithoutSuffixes`.
    EscapeWithoutSuffixes,
    /// `NoUTF8EscapingWithSuffixes`.
    Utf8WithSuffixes,
    /// `NoTranslation` (and an explicit empty string).
    Verbatim,
}

impl Strategy {
    /// The strategy of a configuration's spelling; `None` for an unknown one.
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "UnderscoreEscapingWithSuffixes" => Strategy::EscapeWithSuffixes,
            "UnderscoreEscapingWithoutSuffixes" => Strategy::EscapeWithoutSuffixes,
            "NoUTF8EscapingWithSuffixes" => Strategy::Utf8WithSuffixes,
            "NoTranslation" | "" => Strategy::Verbatim,
            _ => return None,
        })
    }

    fn escapes(self) -> bool {
        matches!(self, Strategy::EscapeWithSuffixes | Strategy::EscapeWithoutSuffixes)
    }
}

/// What a metric is, as far as its name is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A gauge.
    Gauge,
    /// A monotonic sum (a counter, of any temporality).
    Counter,
    /// A non-monotonic sum, a histogram of either kind, or a summary.
    Other,
}

/// The naming rules in force.
#[derive(Clone, Debug)]
pub struct Namer {
    strategy: Strategy,
    /// `label_name_underscore_sanitization`: `_x` becomes `key_x`.
    underscore_prefix: bool,
    /// `label_name_preserve_multiple_underscores`: `a..b` becomes `a__b`, not `a_b`.
    keep_underscore_runs: bool,
}

impl Namer {
    /// The rules of an `otlp` section; the strategy was checked when the configuration loaded.
    pub fn new(cfg: &OtlpConfig) -> Namer {
        Namer {
            strategy: Strategy::parse(&cfg.translation_strategy).unwrap_or(Strategy::EscapeWithSuffixes),
            underscore_prefix: cfg.label_name_underscore_sanitization,
            keep_underscore_runs: cfg.label_name_preserve_multiple_underscores,
        }
    }

    /// The metric family name of an OTLP metric; an error names a metric whose escaped
    /// name would be empty.
    pub fn metric(&self, name: &str, unit: &str, kind: Kind) -> Result<String, String> {
        match self.strategy {
            Strategy::Verbatim => Ok(name.to_string()),
            Strategy::Utf8WithSuffixes => Ok(utf8_with_suffixes(name, unit, kind)),
            Strategy::EscapeWithoutSuffixes => {
                let escaped = escape_metric_name(name);
                checked_metric(name, escaped)
            }
            Strategy::EscapeWithSuffixes => checked_metric(name, escaped_with_suffixes(name, unit, kind)),
        }
    }

    /// The label name of an attribute key; an error for an empty key, or one that escapes to
    /// underscores only.
    pub fn label(&self, key: &str) -> Result<String, String> {
        if key.is_empty() {
            return Err("label name is empty".into());
        }
        if !self.strategy.escapes() {
            if key.bytes().all(|b| b == b'_') {
                return Err(format!("label name {key:?} is only underscores"));
            }
            return Ok(key.to_string());
        }
        let mut out = if self.keep_underscore_runs {
            key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>()
        } else if key.len() >= 4 && key.starts_with("__") && key.ends_with("__") {
            format!("__{}__", collapse_invalid(&key[2..key.len() - 2]))
        } else {
            collapse_invalid(key)
        };
        if out.starts_with(|c: char| c.is_ascii_digit()) {
            out.insert_str(0, "key_");
        } else if self.underscore_prefix && out.starts_with('_') && !out.starts_with("__") {
            out.insert_str(0, "key");
        }
        if out.bytes().all(|b| b == b'_') {
            return Err(format!("normalization for label name {key:?} resulted in invalid name {out:?}"));
        }
        Ok(out)
    }

    /// Whether this strategy escapes names (so two attribute keys may meet in one label).
    pub fn escapes(&self) -> bool {
        self.strategy.escapes()
    }
}

/// Every run of characters other than ASCII letters and digits as one `_`.
fn collapse_invalid(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

fn checked_metric(original: &str, name: String) -> Result<String, String> {
    if name.is_empty() || (name != original && name.bytes().all(|b| b == b'_')) {
        return Err(format!("normalization for metric {original:?} resulted in empty name"));
    }
    Ok(name)
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// `UnderscoreEscapingWithoutSuffixes`: runs of characters outside `[A-Za-z0-9:_]` become
/// one `_` (dropped at the ends); a leading digit gets a `_`.
fn escape_metric_name(name: &str) -> String {
    let tokens: Vec<&str> =
        name.split(|c: char| !(is_metric_char(c) || c == '_')).filter(|t| !t.is_empty()).collect();
    with_digit_guard(tokens.join("_"))
}

fn with_digit_guard(name: String) -> String {
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name
    }
}

/// The OTel unit's main part and its "per" part as name suffixes (`By/s` → `bytes`,
/// `per_second`); annotations in braces and the unit `1` give none.
fn unit_suffixes(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (unit.trim(), None),
    };
    let braces = |s: &str| s.contains('{') || s.contains('}');
    let main = if main.is_empty() || braces(main) { String::new() } else { main_unit(main).to_string() };
    let per = match per {
        Some(p) if !p.is_empty() && !braces(p) => {
            let p = per_unit(p);
            if p.is_empty() {
                String::new()
            } else {
                format!("per_{p}")
            }
        }
        _ => String::new(),
    };
    (main, per)
}

fn main_unit(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// A suffix cleaned as a name part: characters outside `[A-Za-z0-9:]` become `_`, runs of `_`
/// collapse, one leading `_` goes.
fn clean_suffix(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if is_metric_char(c) { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    match out.strip_prefix('_') {
        Some(rest) => rest.to_string(),
        None => out,
    }
}

/// The default strategy: tokens split at every character outside `[A-Za-z0-9:]`, the unit
/// suffixes added unless a token already is the suffix, then `total` or `ratio`.
fn escaped_with_suffixes(name: &str, unit: &str, kind: Kind) -> String {
    let mut tokens: Vec<String> =
        name.split(|c: char| !is_metric_char(c)).filter(|t| !t.is_empty()).map(String::from).collect();
    let (main, per) = unit_suffixes(unit);
    let (mut main, mut per) = (clean_suffix(&main), clean_suffix(&per));
    if per == "per_" {
        per.clear();
    }
    if let Some(p) = per.strip_suffix('_') {
        per = p.to_string();
    }
    if !per.is_empty() {
        if let Some(m) = main.strip_suffix('_') {
            main = m.to_string();
        }
    }
    for suffix in [main, per] {
        if !suffix.is_empty() && !tokens.contains(&suffix) {
            tokens.push(suffix);
        }
    }
    let last = match kind {
        Kind::Counter => Some("total"),
        Kind::Gauge if unit == "1" => Some("ratio"),
        _ => None,
    };
    if let Some(last) = last {
        tokens.retain(|t| t != last);
        tokens.push(last.to_string());
    }
    with_digit_guard(tokens.join("_"))
}

/// `NoUTF8EscapingWithSuffixes`: the name as it is, with the unit, `per` and `total` or
/// `ratio` suffixes, each trimmed first where the name already ends with it.
fn utf8_with_suffixes(name: &str, unit: &str, kind: Kind) -> String {
    let trim = |name: &mut String, suffix: &str| {
        if name.ends_with(suffix) && name.len() > suffix.len() + 1 {
            name.truncate(name.len() - suffix.len() - 1);
        }
    };
    let mut out = name.to_string();
    let (main, per) = unit_suffixes(unit);
    let last = match kind {
        Kind::Gauge if unit == "1" => Some("ratio"),
        Kind::Counter => Some("total"),
        _ => None,
    };
    if let Some(last) = last {
        trim(&mut out, last);
    }
    if !per.is_empty() {
        trim(&mut out, &per);
    }
    if !main.is_empty() && !out.ends_with(&main) {
        out.push('_');
        out.push_str(&main);
    }
    for suffix in [Some(per.as_str()).filter(|p| !p.is_empty()), last].into_iter().flatten() {
        out.push('_');
        out.push_str(suffix);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namer(strategy: &str) -> Namer {
        Namer::new(&OtlpConfig { translation_strategy: strategy.into(), ..Default::default() })
    }

    #[test]
    fn metric_names_follow_each_strategy() {
        let cases = [
            (
                "http.server.duration",
                "s",
                Kind::Other,
                "http_server_duration_seconds",
                "http.server.duration_seconds",
                "http_server_duration",
            ),
            (
                "test.counter",
                "By",
                Kind::Counter,
                "test_counter_bytes_total",
                "test.counter_bytes_total",
                "test_counter",
            ),
            ("total_requests", "", Kind::Counter, "requests_total", "total_requests_total", "total_requests"),
            ("cpu.usage", "1", Kind::Gauge, "cpu_usage_ratio", "cpu.usage_ratio", "cpu_usage"),
            (
                "http.requests",
                "1",
                Kind::Counter,
                "http_requests_total",
                "http.requests_total",
                "http_requests",
            ),
            ("foo", "{req}/s", Kind::Counter, "foo_per_second_total", "foo_per_second_total", "foo"),
            ("2xx.count", "1", Kind::Counter, "_2xx_count_total", "2xx.count_total", "_2xx_count"),
            (
                "cpu.utilization",
                "%",
                Kind::Gauge,
                "cpu_utilization_percent",
                "cpu.utilization_percent",
                "cpu_utilization",
            ),
            ("speed", "km/h", Kind::Gauge, "speed_km_per_hour", "speed_km_per_hour", "speed"),
            (
                "metric__with__x",
                "unit__y",
                Kind::Gauge,
                "metric_with_x_unit_y",
                "metric__with__x_unit__y",
                "metric__with__x",
            ),
            ("seconds.spent", "s", Kind::Other, "seconds_spent", "seconds.spent_seconds", "seconds_spent"),
            (
                "throughput_bytes_per_second",
                "By/s",
                Kind::Gauge,
                "throughput_bytes_per_second_per_second",
                "throughput_bytes_per_second",
                "throughput_bytes_per_second",
            ),
        ];
        for (name, unit, kind, escaped, utf8, bare) in cases {
            assert_eq!(
                namer("UnderscoreEscapingWithSuffixes").metric(name, unit, kind).unwrap(),
                escaped,
                "{name} {unit}"
            );
            assert_eq!(
                namer("NoUTF8EscapingWithSuffixes").metric(name, unit, kind).unwrap(),
                utf8,
                "{name} {unit}"
            );
            assert_eq!(
                namer("UnderscoreEscapingWithoutSuffixes").metric(name, unit, kind).unwrap(),
                bare,
                "{name} {unit}"
            );
            assert_eq!(namer("NoTranslation").metric(name, unit, kind).unwrap(), name);
        }
        assert!(namer("UnderscoreEscapingWithSuffixes").metric("...", "", Kind::Gauge).is_err());
        assert!(namer("UnderscoreEscapingWithoutSuffixes").metric(".", "", Kind::Gauge).is_err());
        assert_eq!(namer("UnderscoreEscapingWithoutSuffixes").metric("___", "", Kind::Gauge).unwrap(), "___");
    }

    #[test]
    fn label_names_follow_both_sanitisation_settings() {
        let with = |sanitize: bool, preserve: bool| Namer {
            strategy: Strategy::EscapeWithSuffixes,
            underscore_prefix: sanitize,
            keep_underscore_runs: preserve,
        };
        // the label name with both settings on, underscores collapsed, and both off
        type Expected = Option<&'static str>;
        let cases: [(&str, Expected, Expected, Expected); 9] = [
            ("http.method", Some("http_method"), Some("http_method"), Some("http_method")),
            ("foo..bar", Some("foo__bar"), Some("foo_bar"), Some("foo_bar")),
            ("_private", Some("key_private"), Some("key_private"), Some("_private")),
            ("__a", Some("__a"), Some("key_a"), Some("_a")),
            ("2xx", Some("key_2xx"), Some("key_2xx"), Some("key_2xx")),
            ("__x.y__", Some("__x_y__"), Some("__x_y__"), Some("__x_y__")),
            ("ñame", Some("key_ame"), Some("key_ame"), Some("_ame")),
            (".", Some("key_"), Some("key_"), None),
            ("...", None, Some("key_"), None),
        ];
        for (key, both, collapse, neither) in cases {
            assert_eq!(with(true, true).label(key).ok().as_deref(), both, "{key}");
            assert_eq!(with(true, false).label(key).ok().as_deref(), collapse, "{key}");
            assert_eq!(with(false, false).label(key).ok().as_deref(), neither, "{key}");
        }
        assert_eq!(namer("NoTranslation").label("http.method").unwrap(), "http.method");
        assert!(namer("NoTranslation").label("").is_err());
    }
}
