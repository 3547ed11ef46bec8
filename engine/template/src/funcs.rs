//! The functions a Prometheus template can call: Go's builtins and Prometheus's own
//! (`template/template.go`), with their argument conversions and error texts.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use promflow_storage::gofmt::format_g;

use super::{QueryFn, Value};

/// What functions read besides their arguments.
pub(crate) struct Env<'a> {
    /// The `query` function's engine, if the caller gives one.
    pub query: Option<QueryFn<'a>>,
    /// Evaluation time in seconds (`now`).
    pub now_s: f64,
    /// `--web.external-url` (`externalURL`, `pathPrefix`).
    pub external_url: String,
}

const NAMES: &[&str] = &[
    // Go's builtins
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    "call",
    // Prometheus's
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "stripPort",
    "stripDomain",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "toDuration",
    "now",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "urlQueryEscape",
    "tmpl",
];

/// Whether a function of this name exists.
pub(crate) fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

fn want(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!("wrong number of args for {name}: want {n} got {}", args.len()));
    }
    Ok(())
}

fn string_arg(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        other => Err(format!("wrong type for value; expected string; got {} (in {name})", other.type_name())),
    }
}

/// Prometheus's `ConvertToFloat`.
fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => {
            parse_go_float(s).ok_or_else(|| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))
        }
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s.trim_start_matches(['+', '-']).to_ascii_lowercase().as_str() {
        "inf" | "infinity" => Some(if s.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY }),
        "nan" => Some(f64::NAN),
        _ => s.replace('_', "").parse().ok(),
    }
}

fn sample_of(name: &str, v: &Value) -> Result<(BTreeMap<String, String>, f64), String> {
    if let Value::Struct(fields) = v {
        let labels = fields.iter().find_map(|(n, x)| match (n.as_str(), x) {
            ("Labels", Value::Labels(m)) => Some(m.clone()),
            _ => None,
        });
        let value = fields.iter().find_map(|(n, x)| match (n.as_str(), x) {
            ("Value", Value::Float(f)) => Some(*f),
            _ => None,
        });
        if let (Some(l), Some(v)) = (labels, value) {
            return Ok((l, v));
        }
    }
    Err(format!("wrong type for value; expected *template.sample; got {} (in {name})", v.type_name()))
}

/// Calls function `name`.
pub(crate) fn call(name: &str, args: Vec<Value>, env: &Env<'_>) -> Result<Value, String> {
    let s = Value::Str;
    Ok(match name {
        "and" => args.iter().find(|v| !v.truthy()).or(args.last()).cloned().unwrap_or(Value::Nil),
        "or" => args.iter().find(|v| v.truthy()).or(args.last()).cloned().unwrap_or(Value::Nil),
        "not" => {
            want(name, &args, 1)?;
            Value::Bool(!args[0].truthy())
        }
        "len" => {
            want(name, &args, 1)?;
            Value::Int(match &args[0] {
                Value::Str(x) => x.len(),
                Value::Labels(m) => m.len(),
                Value::Map(m) => m.len(),
                Value::List(l) => l.len(),
                other => return Err(format!("len of type {}", other.type_name())),
            } as i64)
        }
        "index" => {
            let mut it = args.into_iter();
            let mut v = it.next().ok_or("wrong number of args for index: want at least 1 got 0")?;
            for key in it {
                v = match (v, key) {
                    (Value::Labels(m), Value::Str(k)) => Value::Str(m.get(&k).cloned().unwrap_or_default()),
                    (Value::Map(m), Value::Str(k)) => m.get(&k).cloned().unwrap_or(Value::Nil),
                    (Value::List(l), Value::Int(i)) => l
                        .get(
                            usize::try_from(i)
                                .map_err(|_| format!("error calling index: index out of range: {i}"))?,
                        )
                        .cloned()
                        .ok_or_else(|| format!("error calling index: index out of range: {i}"))?,
                    (c, k) => {
                        return Err(format!(
                            "can't index item of type {} with {}",
                            c.type_name(),
                            k.type_name()
                        ))
                    }
                };
            }
            v
        }
        "slice" => {
            let (first, rest) = args.split_first().ok_or("wrong number of args for slice")?;
            let idx: Vec<usize> = rest
                .iter()
                .map(|v| match v {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err("error calling slice: invalid index".to_string()),
                })
                .collect::<Result<_, _>>()?;
            match first {
                Value::Str(x) => {
                    let (a, b) = (idx.first().copied().unwrap_or(0), idx.get(1).copied().unwrap_or(x.len()));
                    s(x.get(a..b).ok_or("error calling slice: index out of range")?.to_string())
                }
                Value::List(l) => {
                    let (a, b) = (idx.first().copied().unwrap_or(0), idx.get(1).copied().unwrap_or(l.len()));
                    Value::List(l.get(a..b).ok_or("error calling slice: index out of range")?.to_vec())
                }
                other => return Err(format!("can't slice item of type {}", other.type_name())),
            }
        }
        "print" => s(sprint(&args)),
        "println" => s(args.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => {
            let (f, rest) =
                args.split_first().ok_or("wrong number of args for printf: want at least 1 got 0")?;
            s(sprintf(&string_arg(name, f)?, rest))
        }
        "eq" => {
            let (a, rest) = args.split_first().ok_or("missing argument for comparison")?;
            if rest.is_empty() {
                return Err("missing argument for comparison".into());
            }
            let mut any = false;
            for b in rest {
                any |= compare(a, b)? == Some(Ordering::Equal);
            }
            Value::Bool(any)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(name, &args, 2)?;
            let ord = compare(&args[0], &args[1])?;
            if name != "ne" && ord.is_none() {
                return Err("invalid type for comparison".into());
            }
            Value::Bool(match name {
                "ne" => ord != Some(Ordering::Equal),
                "lt" => ord == Some(Ordering::Less),
                "le" => ord != Some(Ordering::Greater),
                "gt" => ord == Some(Ordering::Greater),
                _ => ord != Some(Ordering::Less),
            })
        }
        "html" => s(html_escape(&sprint(&args))),
        "js" => s(js_escape(&sprint(&args))),
        "urlquery" | "urlQueryEscape" => s(query_escape(&sprint(&args))),
        "call" | "tmpl" => return Err(format!("{name} is not supported by promflow yet")),
        "query" => {
            want(name, &args, 1)?;
            let q = string_arg(name, &args[0])?;
            let run = env.query.ok_or("query is not available here")?;
            let rows = run(&q).map_err(|e| format!("error calling query: {e}"))?;
            Value::List(rows.into_iter().map(|(l, v)| Value::sample(l, v)).collect())
        }
        "first" => match args.as_slice() {
            [Value::List(l)] => {
                l.first().cloned().ok_or("error calling first: first() called on vector with no elements")?
            }
            _ => return Err("wrong type for value; expected template.queryResult (in first)".into()),
        },
        "label" => {
            want(name, &args, 2)?;
            let (labels, _) = sample_of(name, &args[1])?;
            s(labels.get(&string_arg(name, &args[0])?).cloned().unwrap_or_default())
        }
        "value" => {
            want(name, &args, 1)?;
            Value::Float(sample_of(name, &args[0])?.1)
        }
        "strvalue" => {
            want(name, &args, 1)?;
            s(sample_of(name, &args[0])?.0.get("__value__").cloned().unwrap_or_default())
        }
        "args" => Value::Map(args.into_iter().enumerate().map(|(i, v)| (format!("arg{i}"), v)).collect()),
        "reReplaceAll" => {
            want(name, &args, 3)?;
            let (pat, repl, text) =
                (string_arg(name, &args[0])?, string_arg(name, &args[1])?, string_arg(name, &args[2])?);
            let re = regex::Regex::new(&promflow_storage::re2::translate(&pat))
                .map_err(|e| format!("error calling reReplaceAll: {e}"))?;
            s(re.replace_all(&text, repl.as_str()).into_owned())
        }
        "match" => {
            want(name, &args, 2)?;
            let (pat, text) = (string_arg(name, &args[0])?, string_arg(name, &args[1])?);
            let re = regex::Regex::new(&promflow_storage::re2::translate(&pat))
                .map_err(|e| format!("error calling match: {e}"))?;
            Value::Bool(re.is_match(&text))
        }
        "safeHtml" | "toUpper" | "toLower" | "title" | "stripPort" | "stripDomain" | "graphLink"
        | "tableLink" => {
            want(name, &args, 1)?;
            let x = string_arg(name, &args[0])?;
            s(match name {
                "toUpper" => x.to_uppercase(),
                "toLower" => x.to_lowercase(),
                "title" => title(&x),
                "stripPort" => split_host_port(&x).map_or(x.clone(), |(h, _)| h.to_string()),
                "stripDomain" => strip_domain(&x),
                "graphLink" => format!("/graph?g0.expr={}&g0.tab=0", query_escape(&x)),
                "tableLink" => format!("/graph?g0.expr={}&g0.tab=1", query_escape(&x)),
                _ => x,
            })
        }
        "sortByLabel" => {
            want(name, &args, 2)?;
            let label = string_arg(name, &args[0])?;
            let Value::List(mut rows) = args[1].clone() else {
                return Err("wrong type for value; expected template.queryResult (in sortByLabel)".into());
            };
            let key = |v: &Value| {
                sample_of("sortByLabel", v).map(|(l, _)| l.get(&label).cloned().unwrap_or_default())
            };
            rows.sort_by_key(|r| key(r).unwrap_or_default());
            Value::List(rows)
        }
        "humanize" | "humanize1024" | "humanizeDuration" | "humanizePercentage" | "humanizeTimestamp"
        | "toTime" | "toDuration" => {
            want(name, &args, 1)?;
            let v = to_float(&args[0]).map_err(|e| format!("error calling {name}: {e}"))?;
            s(match name {
                "humanize" => humanize(v),
                "humanize1024" => humanize1024(v),
                "humanizeDuration" => humanize_duration(v),
                "humanizePercentage" => format!("{}%", format_g(v * 100.0, Some(4))),
                "toDuration" => promflow_storage::gofmt::format_duration((v * 1e9) as i64),
                _ if !v.is_finite() && name == "humanizeTimestamp" => format_g(v, Some(4)),
                _ => go_time(v).ok_or_else(|| format!("error calling {name}: time out of range"))?,
            })
        }
        "now" => Value::Float(env.now_s),
        "pathPrefix" => s(url_path(&env.external_url)),
        "externalURL" => s(env.external_url.clone()),
        "parseDuration" => {
            want(name, &args, 1)?;
            let d = string_arg(name, &args[0])?;
            let (neg, body) = match d.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, d.as_str()),
            };
            let secs = parse_prom_duration(body)
                .ok_or_else(|| format!("error calling parseDuration: not a valid duration string: {d:?}"))?;
            Value::Float(if neg { -secs } else { secs })
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

/// Go's comparison of basic kinds; `None` means unordered (only `eq`/`ne` accept it).
fn compare(a: &Value, b: &Value) -> Result<Option<Ordering>, String> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => (x == y).then_some(Ordering::Equal),
        (Value::Nil, Value::Nil) => Some(Ordering::Equal),
        (
            Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_),
            Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_),
        ) => return Err("incompatible types for comparison".into()),
        _ => return Err("invalid type for comparison".into()),
    })
}

/// `fmt.Sprint`: a space between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 && !v.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&v.to_string());
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %q %d %f %e %g %x %t %c %%`, with
/// flags `-+ 0#`, width and precision.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        // widths and precisions are capped: a template must not make a gigabyte of padding
        const MAX_PAD: usize = 10_000;
        let mut width = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some((width.unwrap_or(0) * 10 + d as usize).min(MAX_PAD));
            chars.next();
        }
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = (p * 10 + d as usize).min(MAX_PAD);
                chars.next();
            }
            prec = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={arg})", arg.type_name());
        let numeric = matches!(arg, Value::Int(_) | Value::Float(_));
        let body = match (verb, arg) {
            ('v', _) => arg.to_string(),
            ('s', Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Nil) => bad(),
            ('s', _) => {
                let x = arg.to_string();
                match prec {
                    Some(p) => x.chars().take(p).collect(),
                    None => x,
                }
            }
            ('q', Value::Str(x)) => format!("{x:?}"),
            ('d', Value::Int(i)) => i.to_string(),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('X', Value::Int(i)) => format!("{i:X}"),
            ('x', Value::Str(x)) => x.bytes().map(|b| format!("{b:02x}")).collect(),
            ('c', Value::Int(i)) => char::from_u32(*i as u32).map(String::from).unwrap_or_else(bad),
            ('t', Value::Bool(b)) => b.to_string(),
            ('f' | 'F' | 'e' | 'E' | 'g' | 'G', Value::Float(v)) => float_verb(verb, *v, prec),
            _ => bad(),
        };
        let body = if numeric && (plus || space) && !body.starts_with('-') && !body.starts_with('%') {
            format!("{}{body}", if plus { '+' } else { ' ' })
        } else {
            body
        };
        let len = body.chars().count();
        match width {
            Some(w) if w > len && minus => out.push_str(&format!("{body}{}", " ".repeat(w - len))),
            Some(w) if w > len && zero && numeric => {
                let (sign, digits) = match body.strip_prefix(['-', '+']) {
                    Some(d) => (&body[..1], d),
                    None => ("", body.as_str()),
                };
                out.push_str(&format!("{sign}{}{digits}", "0".repeat(w - len)));
            }
            Some(w) if w > len => out.push_str(&format!("{}{body}", " ".repeat(w - len))),
            _ => out.push_str(&body),
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..].iter().map(|a| format!("{}={a}", a.type_name())).collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn float_verb(verb: char, v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    match verb {
        'f' | 'F' => format!("{v:.*}", prec.unwrap_or(6)),
        'e' | 'E' => {
            let s = format!("{v:.*e}", prec.unwrap_or(6));
            let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
            let e: i32 = e.parse().unwrap_or(0);
            let out = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
            if verb == 'E' {
                out.to_uppercase()
            } else {
                out
            }
        }
        _ => {
            let out = format_g(v, prec.map(|p| p.max(1)));
            if verb == 'G' {
                out.to_uppercase()
            } else {
                out
            }
        }
    }
}

fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return format_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", format_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (secs, mins, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        return if days != 0 {
            format!("{sign}{days}d {hours}h {mins}m {secs}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {mins}m {secs}s")
        } else if mins != 0 {
            format!("{sign}{mins}m {secs}s")
        } else {
            format!("{sign}{}s", format_g(v, Some(4)))
        };
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", format_g(v, Some(4)))
}

/// A float of seconds as Go prints a UTC `time.Time`: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn go_time(v: f64) -> Option<String> {
    let secs = v.floor();
    let nanos = ((v - secs) * 1e9).round() as u32;
    let t = chrono::DateTime::from_timestamp(secs as i64, nanos.min(999_999_999))?;
    let frac =
        if nanos == 0 { String::new() } else { format!(".{nanos:09}").trim_end_matches('0').to_string() };
    Some(format!("{}{frac} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S")))
}

/// A Prometheus duration (`1h30m`, `5m`, `250ms`) in seconds.
fn parse_prom_duration(s: &str) -> Option<f64> {
    if s == "0" {
        return Some(0.0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = match &rest[..unit_len] {
            "y" => 365.0 * 86400.0,
            "w" => 7.0 * 86400.0,
            "d" => 86400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += num * unit;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Title case as `cases.Title(language.AmericanEnglish, cases.NoLower)`: the first letter of
/// each word upper-cased, the rest left alone.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !(c.is_alphanumeric() || c == '\'');
    }
    out
}

/// `net.SplitHostPort`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':')?));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

fn strip_domain(s: &str) -> String {
    let (host, port) = match split_host_port(s) {
        Some((h, p)) => (h.to_string(), Some(p.to_string())),
        None => (s.to_string(), None),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return s.to_string();
    }
    let short = host.split('.').next().unwrap_or("").to_string();
    match port {
        Some(p) if short.contains(':') => format!("[{short}]:{p}"),
        Some(p) => format!("{short}:{p}"),
        None => short,
    }
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The path of a URL (`pathPrefix`).
fn url_path(url: &str) -> String {
    let after = url.split_once("://").map_or(url, |(_, r)| r);
    match after.find('/') {
        Some(i) => after[i..].split(['?', '#']).next().unwrap_or("").to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_like_go() {
        let f = |fmt: &str, args: Vec<Value>| sprintf(fmt, &args);
        assert_eq!(f("%.2f", vec![Value::Float(2.25678)]), "2.26");
        assert_eq!(
            f("%5.1f|%-5d|%05d", vec![Value::Float(2.25), Value::Int(42), Value::Int(-7)]),
            "  2.2|42   |-0007"
        );
        assert_eq!(f("%d", vec![Value::Float(1.5)]), "%!d(float64=1.5)");
        assert_eq!(f("%s %s", vec![Value::Str("a".into())]), "a %!s(MISSING)");
        assert_eq!(f("%s", vec![Value::Str("a".into()), Value::Int(1)]), "a%!(EXTRA int=1)");
        assert_eq!(f("%e", vec![Value::Float(1234.5)]), "1.234500e+03");
        assert_eq!(f("%g %v", vec![Value::Float(1e21), Value::Float(0.5)]), "1e+21 0.5");
        assert_eq!(
            f("%q %x %t %%", vec![Value::Str("a\"b".into()), Value::Int(255), Value::Bool(true)]),
            "\"a\\\"b\" ff true %"
        );
        assert_eq!(f("%99999999999999999999d", vec![Value::Int(1)]).len(), 10_000, "padding is capped");
    }

    #[test]
    fn humanizers_like_prometheus() {
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize(1234.0), "1.234k");
        assert_eq!(humanize(0.00123), "1.23m");
        assert_eq!(humanize(-1500000.0), "-1.5M");
        assert_eq!(humanize1024(1536.0), "1.5ki");
        assert_eq!(humanize_duration(3661.0), "1h 1m 1s");
        assert_eq!(humanize_duration(59.5), "59.5s");
        assert_eq!(humanize_duration(0.0015), "1.5ms");
        assert_eq!(go_time(1_700_000_000.5).unwrap(), "2023-11-14 22:13:20.5 +0000 UTC");
        assert_eq!(strip_domain("host.example.com:9100"), "host:9100");
        assert_eq!(strip_domain("10.0.0.1:9100"), "10.0.0.1:9100");
        assert_eq!(query_escape("a b/c"), "a+b%2Fc");
        assert_eq!(parse_prom_duration("1h30m"), Some(5400.0));
        assert_eq!(title("hello big-world"), "Hello Big-World");
    }
}
