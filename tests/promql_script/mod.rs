//! The script language of Prometheus's PromQL test corpus (described in the corpus's
//! README.md), as the tests that run the corpus read it: commands, `load` blocks as series of
//! slots, and `eval` lines as times and an expression. Shared by the corpus run against the
//! executors (`tests/promql_conformance.rs`) and the corpus run against a cluster
//! (`tests/it/cluster_corpus.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use promflow_promql::notation::{expand, number, series_desc, start_offsets, Slot};
use promflow_storage::{FloatHistogram, Labels};

/// The corpus's directory: `PROMQL_TESTS_DIR`, or the copy beside the repository.
pub fn corpus_dir() -> std::path::PathBuf {
    match std::env::var("PROMQL_TESTS_DIR") {
        Ok(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/promql-tests"),
    }
}

/// The corpus's `.test` files, sorted (none when the corpus is not there).
pub fn corpus_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(corpus_dir()) {
        Ok(rd) => {
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "test")).collect()
        }
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// A duration as the scripts write it (`5m`, `10s53ms`), in milliseconds.
pub fn duration_ms(s: &str) -> Option<i64> {
    promflow_config::parse_duration(s).ok().map(|d| d.as_millis() as i64)
}

/// Splits the script into commands: a non-blank, non-comment line and the lines below it up
/// to the next blank or comment line (`clear` alone is a whole command). Each comes with the
/// number of its first line.
pub fn commands(text: &str) -> Vec<(usize, Vec<String>)> {
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

/// A `load` block, read: the interval between slots and each series' slots (the first at
/// time 0).
pub struct Load {
    /// Milliseconds between a series' slots.
    pub interval: i64,
    /// Each series and its slots; a series repeated within the block keeps its last line.
    pub series: Vec<(Labels, Vec<Slot>)>,
    /// The start-timestamp offsets an `@st` line gives the series on the line below it.
    pub start_offsets: Vec<(Labels, Vec<Option<i64>>)>,
    /// The series of every `@st` line, whether or not a line of values followed it.
    pub with_start_timestamps: Vec<Labels>,
}

impl Load {
    /// Each sample of the block in series order: labels, time, slot (empty slots left out),
    /// start timestamp.
    pub fn samples(&self) -> impl Iterator<Item = (&Labels, i64, &Slot, Option<i64>)> {
        self.series.iter().flat_map(move |(labels, slots)| {
            let starts = self.start_offsets.iter().find(|(l, _)| l == labels).map(|(_, o)| o);
            slots.iter().enumerate().filter(|(_, s)| !matches!(s, Slot::Empty)).map(move |(i, slot)| {
                let t = i as i64 * self.interval;
                let start = starts.and_then(|o| o.get(i).copied().flatten()).map(|offset| t + offset);
                (labels, t, slot, start)
            })
        })
    }
}

/// Reads a `load <interval>` or `load_with_nhcb <interval>` block; the latter also gets its
/// classic histograms' native histograms of custom buckets.
pub fn load(block: &[String]) -> Load {
    let mut words = block[0].split_whitespace();
    let with_nhcb = words.next().is_some_and(|w| w == "load_with_nhcb");
    let interval = words.next().and_then(duration_ms).unwrap_or(0);
    let mut out =
        Load { interval, series: Vec::new(), start_offsets: Vec::new(), with_start_timestamps: Vec::new() };
    let mut pending: Option<(Labels, Vec<Option<i64>>)> = None;
    for line in &block[1..] {
        let Some((labels, rest)) = series_desc(line) else { continue };
        if labels.is_empty() {
            continue;
        }
        if let Some(st) = rest.trim_start().strip_prefix("@st") {
            pending = start_offsets(st).map(|o| (labels.clone(), o));
            out.with_start_timestamps.push(labels);
            continue;
        }
        let Some(slots) = expand(rest) else { continue };
        out.start_offsets.retain(|(l, _)| *l != labels);
        if let Some(p) = pending.take().filter(|(l, _)| *l == labels) {
            out.start_offsets.push(p);
        }
        out.series.retain(|(l, _)| *l != labels);
        out.series.push((labels, slots));
    }
    if with_nhcb {
        let nhcb = custom_bucket_histograms(&out.series);
        out.series.extend(nhcb);
    }
    out
}

/// `load_with_nhcb`'s native histograms of custom buckets: the `X_bucket`, `X_count` and
/// `X_sum` series of a block grouped by `X` and their labels without `le`, one histogram at
/// each slot where a member has a float (see the corpus README).
fn custom_bucket_histograms(series: &[(Labels, Vec<Slot>)]) -> Vec<(Labels, Vec<Slot>)> {
    #[derive(Default)]
    struct Parts<'a> {
        buckets: Vec<(f64, &'a [Slot])>,
        count: Option<&'a [Slot]>,
        sum: Option<&'a [Slot]>,
    }
    let mut groups: BTreeMap<Labels, Parts> = BTreeMap::new();
    for (labels, slots) in series {
        let name = labels.metric_name();
        let (base, part) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, 0)
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, 1)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, 2)
        } else {
            continue;
        };
        let mut key = labels.clone();
        key.remove("le");
        key.set("__name__", base);
        let entry = groups.entry(key).or_default();
        match part {
            0 => match number(labels.get("le")) {
                Some(le) if !le.is_nan() => entry.buckets.push((le, slots)),
                _ => {}
            },
            1 => entry.count = Some(slots),
            _ => entry.sum = Some(slots),
        }
    }
    let value = |slots: &[Slot], i: usize| match slots.get(i) {
        Some(Slot::Value(v)) => Some(*v),
        _ => None,
    };
    groups
        .into_iter()
        .filter(|(_, p)| !p.buckets.is_empty())
        .map(|(labels, p)| {
            let len =
                p.buckets.iter().map(|b| b.1.len()).chain(p.count.map(<[Slot]>::len)).max().unwrap_or(0);
            let slots = (0..len)
                .map(|i| {
                    let buckets: Vec<(f64, f64)> =
                        p.buckets.iter().filter_map(|(le, s)| value(s, i).map(|v| (*le, v))).collect();
                    let count = p.count.and_then(|s| value(s, i));
                    let sum = p.sum.and_then(|s| value(s, i));
                    if buckets.is_empty() && count.is_none() && sum.is_none() {
                        return Slot::Empty;
                    }
                    match FloatHistogram::from_classic(&buckets, count, sum.unwrap_or(0.0)) {
                        Ok(h) => Slot::Histogram(Arc::new(h)),
                        Err(_) => Slot::Empty,
                    }
                })
                .collect();
            (labels, slots)
        })
        .collect()
}

/// An `eval` line, read: its command, its times and its expression.
pub struct EvalLine {
    /// `eval`, `eval_fail`, `eval_ordered`, `eval_warn` or `eval_info`.
    pub command: String,
    /// Whether it is an instant evaluation (`start == end`).
    pub instant: bool,
    /// First evaluation time, milliseconds.
    pub start: i64,
    /// Last evaluation time, milliseconds.
    pub end: i64,
    /// Milliseconds between evaluations (1 for an instant evaluation).
    pub step: i64,
    /// The PromQL expression.
    pub query: String,
}

/// Reads `eval… instant at <T> <expr>` or `eval… range from <A> to <B> step <S> <expr>`.
pub fn eval_line(head: &str) -> Result<EvalLine, String> {
    let (command, rest) = head.split_once(' ').ok_or("bad eval line")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (instant, start, end, step, query) = match words.first() {
        Some(&"instant") => {
            let t = duration_ms(words.get(2).ok_or("no time")?).ok_or("bad time")?;
            let q = rest.splitn(4, ' ').nth(3).ok_or("no expression")?;
            (true, t, t, 1, q)
        }
        Some(&"range") => {
            let a = duration_ms(words.get(2).ok_or("no from")?).ok_or("bad from")?;
            let b = duration_ms(words.get(4).ok_or("no to")?).ok_or("bad to")?;
            let s = duration_ms(words.get(6).ok_or("no step")?).ok_or("bad step")?;
            let q = rest.splitn(8, ' ').nth(7).ok_or("no expression")?;
            (false, a, b, s, q)
        }
        _ => return Err("unknown eval form".into()),
    };
    Ok(EvalLine { command: command.to_string(), instant, start, end, step, query: query.to_string() })
}
