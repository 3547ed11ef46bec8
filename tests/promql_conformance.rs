//! Prometheus's PromQL conformance corpus (`../shared/promql-tests/*.test`, Apache-2.0) run
//! against promflow: samples go through storage's real appender into a temporary data
//! directory, and queries through the same querier and executor the HTTP API uses.
//!
//! The script language is described in the corpus's README.md. Each file's pass count is
//! printed; the run fails when a file passes fewer evals than `tests/promql-baseline.txt`
//! records (a regression), or, with `CI=true`, when the corpus is missing. Raise the
//! baseline when a change makes more cases pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use promflow_engine::{QueryOptions, QueryResult};
use promflow_storage::{stale_nan, Db, DbOptions, Labels};

const DEFAULT_CORPUS: &str = "../shared/promql-tests";
const BASELINE: &str = "tests/promql-baseline.txt";

fn corpus_dir() -> PathBuf {
    match std::env::var("PROMQL_TESTS_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CORPUS),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("promql_corpus: test");
        return;
    }
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => {
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "test")).collect()
        }
        Err(_) => Vec::new(),
    };
    if files.is_empty() {
        println!(
            "promql corpus not found at {} (set PROMQL_TESTS_DIR; it is Prometheus's promql/promqltest/testdata/)",
            dir.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            std::process::exit(1);
        }
        return;
    }
    files.sort();
    let baseline = read_baseline();
    let (mut total_pass, mut total) = (0, 0);
    let mut regressions = Vec::new();
    let verbose = std::env::var("PROMQL_VERBOSE").is_ok();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let outcome = run_file(&text, verbose.then_some(name.as_str()));
        total_pass += outcome.passed;
        total += outcome.evals;
        let base = baseline.get(&name).copied().unwrap_or(0);
        let mark = if outcome.passed < base { " REGRESSION" } else { "" };
        println!(
            "promql corpus {name}: {} of {} evals pass (baseline {base}){mark}",
            outcome.passed, outcome.evals
        );
        if outcome.passed < base {
            regressions.push(name);
        }
    }
    println!("promql corpus total: {total_pass} of {total} evals pass");
    if !regressions.is_empty() {
        println!("promql corpus regressions in: {}", regressions.join(", "));
        std::process::exit(1);
    }
}

fn read_baseline() -> BTreeMap<String, usize> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(BASELINE);
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

struct Outcome {
    evals: usize,
    passed: usize,
}

/// A fresh storage directory, as each file and each `clear` starts with.
struct Store {
    _dir: tempfile::TempDir,
    db: Arc<Db>,
}

fn fresh_store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    Store { _dir: dir, db }
}

/// Splits the script into commands: a non-blank, non-comment line and the lines below it up
/// to the next blank or comment line (`clear` alone is a whole command).
fn commands(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out: Vec<(usize, Vec<String>)> = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            if let Some(c) = current.take() {
                out.push(c);
            }
            continue;
        }
        // `clear` is a command of one line; the next line starts a new command
        if line.eq_ignore_ascii_case("clear") {
            out.extend(current.take());
            out.push((i + 1, vec![line.to_string()]));
            continue;
        }
        match current.as_mut() {
            Some((_, lines)) => lines.push(line.to_string()),
            None => current = Some((i + 1, vec![line.to_string()])),
        }
    }
    out.extend(current);
    out
}

fn run_file(text: &str, verbose: Option<&str>) -> Outcome {
    let mut store = fresh_store();
    let mut out = Outcome { evals: 0, passed: 0 };
    for (line_no, block) in commands(text) {
        let head = block[0].to_lowercase();
        if head == "clear" {
            store = fresh_store();
        } else if head.starts_with("load") {
            load(&store.db, &block);
        } else if head.starts_with("eval") {
            out.evals += 1;
            match eval(&store.db, &block) {
                Ok(()) => out.passed += 1,
                Err(e) => {
                    if let Some(file) = verbose {
                        println!("  {file}:{line_no}: {}\n    {e}", block[0]);
                    }
                }
            }
        }
    }
    out
}

// ---- series notation ----

/// Parses a number as the corpus writes them (decimal, exponent, Inf, NaN, signs).
fn number(s: &str) -> Option<f64> {
    let l = s.to_ascii_lowercase();
    let (sign, rest) = match l.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, l.strip_prefix('+').unwrap_or(&l)),
    };
    match rest {
        "inf" | "infinity" => Some(sign * f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => {
            if let Some(hex) = rest.strip_prefix("0x") {
                return i64::from_str_radix(hex, 16).ok().map(|v| sign * v as f64);
            }
            rest.parse::<f64>().ok().map(|v| sign * v)
        }
    }
}

/// One slot of a series: a value, a staleness marker, a native histogram (not supported by
/// promflow yet: not loaded, and never matching an expectation), or nothing.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Value(f64),
    Stale,
    Histogram,
    Empty,
}

/// Splits value items on whitespace, keeping each `{{…}}` histogram (with what follows it,
/// such as `x3` or `+{{…}}x2`) as one item.
fn items(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && chars.peek() == Some(&'{') {
            depth += 1;
        } else if c == '}' && chars.peek() == Some(&'}') && depth > 0 {
            depth -= 1;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Expands a series' value items (`1+1x3`, `_x2`, `stale`, `{{…}}`, …); `None` for an item
/// that is not valid notation.
fn expand(text: &str) -> Option<Vec<Slot>> {
    let mut out = Vec::new();
    for item in items(text) {
        let item = item.as_str();
        if item.contains("{{") {
            // a histogram, or a series of them: `{{…}}xK` or `{{…}}+{{…}}xK` is K+1 slots
            let k = item.rsplit_once("}}x").and_then(|(_, k)| k.parse::<usize>().ok()).unwrap_or(0);
            out.extend(std::iter::repeat_n(Slot::Histogram, k + 1));
            continue;
        }
        if item == "_" {
            out.push(Slot::Empty);
            continue;
        }
        if item == "stale" {
            out.push(Slot::Stale);
            continue;
        }
        if let Some(k) = item.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(Slot::Empty, k.parse().ok()?));
            continue;
        }
        match item.rsplit_once('x') {
            Some((lhs, k)) if !lhs.is_empty() && k.chars().all(|c| c.is_ascii_digit()) && !k.is_empty() => {
                let k: usize = k.parse().ok()?;
                // find the operator of A+B / A-B: a sign not at the start and not an exponent's
                let bytes = lhs.as_bytes();
                let op = (1..bytes.len()).find(|&i| {
                    (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
                });
                let (a, b) = match op {
                    Some(i) => {
                        let a = number(&lhs[..i])?;
                        let b = number(&lhs[i + 1..])?;
                        (a, if bytes[i] == b'-' { -b } else { b })
                    }
                    None => (number(lhs)?, 0.0),
                };
                let mut v = a;
                for _ in 0..=k {
                    out.push(Slot::Value(v));
                    v += b;
                }
            }
            _ => out.push(Slot::Value(number(item)?)),
        }
    }
    Some(out)
}

/// Reads a Go-quoted string starting at `s[0] == '"'` or a backquote; returns it and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, q) = chars.next()?;
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Some((out, &s[i + c.len_utf8()..]));
        }
        if c == '\\' && q != '`' {
            let (_, e) = chars.next()?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Parses `name{a="b", "c.d"="e"}` (or `{...}` or a bare name) at the start of `s`; returns
/// the labels and the rest of the line.
fn series_desc(s: &str) -> Option<(Labels, &str)> {
    let s = s.trim_start();
    let name_end = s.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(s.len());
    let name = &s[..name_end];
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.to_string()));
    }
    let mut rest = &s[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut r = body.trim_start();
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = if r.starts_with('"') {
                quoted(r)?
            } else {
                let end = r.find(|c: char| c == '=' || c == ',' || c == '}' || c.is_whitespace())?;
                (r[..end].to_string(), &r[end..])
            };
            let after = after.trim_start();
            if let Some(v) = after.strip_prefix('=') {
                let (value, after) = quoted(v.trim_start())?;
                pairs.push((label, value));
                r = after.trim_start();
            } else {
                // a lone quoted string is the metric name
                pairs.push(("__name__".into(), label));
                r = after;
            }
            r = r.trim_start();
            if let Some(after) = r.strip_prefix(',') {
                r = after.trim_start();
            }
        }
    }
    Some((Labels::from_pairs(pairs), rest))
}

/// Prometheus durations for script times (`1h30m`, `90s`, `0`).
fn duration_ms(s: &str) -> Option<i64> {
    promflow_config::parse_duration(s).ok().map(|d| d.as_millis() as i64)
}

fn load(db: &Arc<Db>, block: &[String]) {
    let interval = block[0].split_whitespace().nth(1).and_then(duration_ms).unwrap_or(0);
    // a series repeated within one block: the later line wins
    let mut series: Vec<(Labels, Vec<Slot>)> = Vec::new();
    for line in &block[1..] {
        let Some((labels, rest)) = series_desc(line) else { continue };
        if labels.is_empty() || rest.trim_start().starts_with("@st") {
            continue;
        }
        let Some(slots) = expand(rest) else { continue };
        series.retain(|(l, _)| *l != labels);
        series.push((labels, slots));
    }
    let mut app = db.appender();
    for (labels, slots) in &series {
        for (i, slot) in slots.iter().enumerate() {
            let t = i as i64 * interval;
            let v = match slot {
                Slot::Value(v) => *v,
                Slot::Stale => stale_nan(),
                Slot::Empty | Slot::Histogram => continue,
            };
            let _ = app.append(labels, t, v);
        }
    }
    let _ = app.commit();
}

// ---- eval ----

struct Expectation {
    fail: Option<Option<(bool, String)>>,
    needs_warn_or_info: bool,
    ordered: bool,
    range_vector: Option<(i64, i64, i64)>,
    string: Option<String>,
    scalar: Option<f64>,
    series: Vec<(Labels, Vec<Slot>)>,
}

fn parse_expect(lines: &[String]) -> Result<Expectation, String> {
    let mut e = Expectation {
        fail: None,
        needs_warn_or_info: false,
        ordered: false,
        range_vector: None,
        string: None,
        scalar: None,
        series: Vec::new(),
    };
    for line in lines {
        if let Some(rest) = line.strip_prefix("expect ") {
            let rest = rest.trim();
            let (kind, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            match kind {
                "fail" => {
                    let tail = tail.trim();
                    e.fail = Some(if let Some(m) = tail.strip_prefix("msg:") {
                        Some((false, m.trim().to_string()))
                    } else {
                        tail.strip_prefix("regex:").map(|r| (true, r.trim().to_string()))
                    });
                }
                "warn" | "info" => e.needs_warn_or_info = true,
                "ordered" => e.ordered = true,
                "string" => e.string = Some(quoted(tail.trim()).map(|(s, _)| s).unwrap_or_default()),
                "range" => {
                    // expect range vector from A to B step S
                    let w: Vec<&str> = tail.split_whitespace().collect();
                    if w.len() >= 7 {
                        e.range_vector = Some((
                            duration_ms(w[2]).ok_or("bad from")?,
                            duration_ms(w[4]).ok_or("bad to")?,
                            duration_ms(w[6]).ok_or("bad step")?,
                        ));
                    }
                }
                _ => {}
            }
            continue;
        }
        if let Some(m) = line.strip_prefix("expected_fail_message") {
            e.fail = Some(Some((false, m.trim().to_string())));
            continue;
        }
        if let Some(r) = line.strip_prefix("expected_fail_regexp") {
            e.fail = Some(Some((true, r.trim().to_string())));
            continue;
        }
        if let Some(v) = number(line.trim()).or_else(|| {
            let t = line.trim();
            t.parse::<i64>().ok().map(|v| v as f64)
        }) {
            if !line.trim().contains(char::is_whitespace) {
                e.scalar = Some(v);
                continue;
            }
        }
        let (labels, rest) =
            series_desc(line).ok_or_else(|| format!("cannot parse expected series {line:?}"))?;
        let slots = expand(rest).ok_or_else(|| format!("cannot parse expected values {rest:?}"))?;
        if slots.iter().any(|s| matches!(s, Slot::Histogram)) {
            return Err("native histogram expectation".into());
        }
        e.series.push((labels, slots));
    }
    Ok(e)
}

fn almost_equal(a: f64, b: f64) -> bool {
    if promflow_storage::is_stale_nan(a) || promflow_storage::is_stale_nan(b) {
        return a.to_bits() == b.to_bits();
    }
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    let eps = 1e-6;
    let sum = a.abs() + b.abs();
    if a == 0.0 || b == 0.0 || sum < f64::MIN_POSITIVE {
        return (a - b).abs() < eps * f64::MIN_POSITIVE;
    }
    (a - b).abs() / sum.min(f64::MAX) < eps
}

fn eval(db: &Arc<Db>, block: &[String]) -> Result<(), String> {
    let head = &block[0];
    let (cmd, rest) = head.split_once(' ').ok_or("bad eval line")?;
    let legacy_fail = cmd == "eval_fail";
    let legacy_ordered = cmd == "eval_ordered";
    let legacy_warn = cmd == "eval_warn" || cmd == "eval_info";
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (start, end, step, query) = match words.first() {
        Some(&"instant") => {
            // instant at <T> <expr>
            let t = duration_ms(words.get(2).ok_or("no time")?).ok_or("bad time")?;
            let q = rest.splitn(4, ' ').nth(3).ok_or("no expression")?;
            (t, t, 1, q.to_string())
        }
        Some(&"range") => {
            // range from <A> to <B> step <S> <expr>
            let a = duration_ms(words.get(2).ok_or("no from")?).ok_or("bad from")?;
            let b = duration_ms(words.get(4).ok_or("no to")?).ok_or("bad to")?;
            let s = duration_ms(words.get(6).ok_or("no step")?).ok_or("bad step")?;
            let q = rest.splitn(8, ' ').nth(7).ok_or("no expression")?;
            (a, b, s, q.to_string())
        }
        _ => return Err("unknown eval form".into()),
    };
    let mut exp = parse_expect(&block[1..])?;
    if legacy_fail && exp.fail.is_none() {
        exp.fail = Some(None);
    }
    exp.ordered |= legacy_ordered;
    exp.needs_warn_or_info |= legacy_warn;
    let instant = words[0] == "instant";
    let (start, end) = match exp.range_vector {
        Some((_, to, _)) if instant => (to, to),
        _ => (start, end),
    };
    let compile_opts =
        promflow_promql::CompileOptions { default_subquery_step: std::time::Duration::from_secs(60) };
    let result =
        promflow_promql::compile(&query, &compile_opts).map_err(|e| e.to_string()).and_then(|plan| {
            let opts = QueryOptions {
                start,
                end,
                step,
                lookback_ms: 300_000,
                max_samples: 50_000_000,
                deadline: None,
            };
            promflow_engine::evaluate(&plan, db.as_ref(), &opts).map_err(|e| e.to_string())
        });
    if let Some(expected) = &exp.fail {
        return match (&result, expected) {
            (Ok(_), _) => Err("expected an error, got a result".into()),
            (Err(_), None) => Ok(()),
            (Err(e), Some((false, msg))) if e == msg => Ok(()),
            (Err(e), Some((true, re))) if regex::Regex::new(re).is_ok_and(|r| r.is_match(e)) => Ok(()),
            (Err(e), Some((_, m))) => Err(format!("error {e:?} does not match {m:?}")),
        };
    }
    let result = result?;
    if exp.needs_warn_or_info {
        return Err("warnings and infos are not produced yet".into());
    }
    compare(&result, &exp, instant && exp.range_vector.is_none(), start, step)
}

fn compare(
    result: &QueryResult,
    exp: &Expectation,
    instant: bool,
    start: i64,
    step: i64,
) -> Result<(), String> {
    match result {
        QueryResult::Scalar(_, v) => match exp.scalar {
            Some(e) if almost_equal(*v, e) => Ok(()),
            other => Err(format!("scalar {v}, expected {other:?}")),
        },
        QueryResult::String(_, s) => match &exp.string {
            Some(e) if e == s => Ok(()),
            other => Err(format!("string {s:?}, expected {other:?}")),
        },
        QueryResult::Vector(v) => {
            if exp.scalar.is_some() {
                return Err("vector where a scalar was expected".into());
            }
            if v.len() != exp.series.len() {
                return Err(format!("{} elements, expected {}: {:?}", v.len(), exp.series.len(), v));
            }
            for (i, (labels, _, val)) in v.iter().enumerate() {
                let pos = exp
                    .series
                    .iter()
                    .position(|(l, _)| l == labels)
                    .ok_or_else(|| format!("unexpected {labels}"))?;
                if exp.ordered && pos != i {
                    return Err(format!("{labels} at position {i}, expected {pos}"));
                }
                match exp.series[pos].1.first() {
                    Some(Slot::Value(e)) if almost_equal(*val, *e) => {}
                    other => return Err(format!("{labels}: {val}, expected {other:?}")),
                }
            }
            Ok(())
        }
        QueryResult::Matrix(m) => {
            if instant && exp.range_vector.is_none() && m.is_empty() && exp.series.is_empty() {
                return Ok(());
            }
            let (start, step) = match exp.range_vector {
                Some((from, _, s)) => (from, s),
                None => (start, step),
            };
            if m.len() != exp.series.len() {
                return Err(format!("{} series, expected {}", m.len(), exp.series.len()));
            }
            for s in m {
                let (_, slots) = exp
                    .series
                    .iter()
                    .find(|(l, _)| *l == s.labels)
                    .ok_or_else(|| format!("unexpected {}", s.labels))?;
                let expected: Vec<(i64, f64)> = slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, sl)| match sl {
                        Slot::Value(v) => Some((start + i as i64 * step, *v)),
                        Slot::Stale => Some((start + i as i64 * step, stale_nan())),
                        Slot::Empty | Slot::Histogram => None,
                    })
                    .collect();
                if expected.len() != s.samples.len() {
                    return Err(format!(
                        "{}: {} points, expected {}",
                        s.labels,
                        s.samples.len(),
                        expected.len()
                    ));
                }
                for (p, (t, v)) in s.samples.iter().zip(&expected) {
                    if p.t != *t || !almost_equal(p.v, *v) {
                        return Err(format!("{}: ({}, {}), expected ({t}, {v})", s.labels, p.t, p.v));
                    }
                }
            }
            Ok(())
        }
    }
}
