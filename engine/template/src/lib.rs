//! Go `text/template` as Prometheus uses it for alert labels and annotations:
//! `{{ $labels.instance }}`, `{{ $value | humanize }}`, `{{ if gt $value 1.0 }}…{{ end }}`,
//! `{{ range query "up" }}{{ .Labels.job }}{{ end }}`.
//!
//! [`Template::parse`] reports Go's parse errors (unclosed actions, unknown functions,
//! undefined variables, unbalanced blocks) and [`Template::expand`] runs the template with
//! Prometheus's data (`.Labels`, `.ExternalLabels`, `.ExternalURL`, `.Value`, and the same
//! as `$labels`, `$externalLabels`, `$externalURL`, `$value`) and functions (Go's builtins
//! plus `humanize*`, `query`, `first`, `label`, `value`, `reReplaceAll`, `match`, `title`, …;
//! see [`funcs`]). `define`, `template`, `block`, `break` and `continue` are not supported.
#![warn(missing_docs)]

mod funcs;
mod parse;
mod value;

use std::collections::BTreeMap;

pub use value::Value;

pub use funcs::query_escape;

use parse::{Command, List, Node, Operand, Pipeline};

/// The variables Prometheus declares before an alert template's text.
const PRESET_VARS: [&str; 4] = ["$labels", "$externalLabels", "$externalURL", "$value"];

/// Why a template could not be parsed or expanded; the messages read as Go's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text is not a template (an unclosed action, an unknown function, an undefined
    /// variable, an unbalanced block).
    #[error("{template}:{line}: {message}")]
    Parse {
        /// The template's name (Prometheus's `__alert_<alertname>`).
        template: String,
        /// The line the problem is on, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Running the template failed (a wrong type, a missing field, a failed query).
    #[error("template: {template}: executing \"{template}\": {message}")]
    Execute {
        /// The template's name.
        template: String,
        /// What failed.
        message: String,
    },
}

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    name: String,
    list: List,
}

/// What an alert template sees.
#[derive(Clone, Debug, Default)]
pub struct AlertData {
    /// The alert's labels (`$labels`).
    pub labels: BTreeMap<String, String>,
    /// `global.external_labels` (`$externalLabels`).
    pub external_labels: BTreeMap<String, String>,
    /// `--web.external-url` (`$externalURL`).
    pub external_url: String,
    /// The alert's value (`$value`).
    pub value: f64,
}

/// A query's result as the `query` function returns it: each series' labels and value.
pub type QueryRows = Vec<(BTreeMap<String, String>, f64)>;

/// Runs a PromQL query for the template's `query` function.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> Result<QueryRows, String>;

/// Checks `text` as Prometheus checks an alert's templates (`promtool check rules`); the
/// error reads like Go's, `<name>:<line>: <what>`.
pub fn check(name: &str, text: &str) -> Result<(), Error> {
    Template::parse(name, text).map(drop)
}

impl Template {
    /// Parses `text`; `name` appears in errors (Prometheus uses `__alert_<alertname>`).
    pub fn parse(name: &str, text: &str) -> Result<Template, Error> {
        let list = parse::parse(name, text, &funcs::exists, &PRESET_VARS)?;
        Ok(Template { name: name.to_string(), list })
    }

    /// Expands the template for an alert at `now_s` (seconds, what `now` returns).
    pub fn expand(&self, data: &AlertData, now_s: f64, query: Option<QueryFn<'_>>) -> Result<String, Error> {
        let root = Value::Struct(vec![
            ("Labels".into(), Value::Labels(data.labels.clone())),
            ("ExternalLabels".into(), Value::Labels(data.external_labels.clone())),
            ("ExternalURL".into(), Value::Str(data.external_url.clone())),
            ("Value".into(), Value::Float(data.value)),
        ]);
        let mut ex = Exec {
            vars: vec![
                ("$".into(), root.clone()),
                ("$labels".into(), Value::Labels(data.labels.clone())),
                ("$externalLabels".into(), Value::Labels(data.external_labels.clone())),
                ("$externalURL".into(), Value::Str(data.external_url.clone())),
                ("$value".into(), Value::Float(data.value)),
            ],
            env: funcs::Env { query, now_s, external_url: data.external_url.clone() },
            out: String::new(),
            steps: 0,
        };
        EXPANSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ex.list(&self.list, &root)
            .and_then(|()| {
                (ex.out.len() <= MAX_OUTPUT)
                    .then_some(())
                    .ok_or_else(|| format!("the template's output exceeds {MAX_OUTPUT} bytes"))
            })
            .map_err(|message| {
                EXPANSION_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Error::Execute { template: self.name.clone(), message }
            })?;
        Ok(ex.out)
    }
}

static EXPANSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EXPANSION_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Template expansions run in this process, and those that failed (Prometheus's
/// `prometheus_template_text_expansions_total` and `…_failures_total`).
pub fn expansion_counts() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (EXPANSIONS.load(Relaxed), EXPANSION_FAILURES.load(Relaxed))
}

/// The most nodes one expansion runs (a `range` over a huge number would otherwise run, and
/// allocate, without end): alert templates need a few hundred.
const MAX_STEPS: u64 = 100_000;
/// The longest text one expansion may produce.
const MAX_OUTPUT: usize = 1 << 20;

struct Exec<'a> {
    vars: Vec<(String, Value)>,
    env: funcs::Env<'a>,
    out: String,
    /// Nodes run so far, bounded by [`MAX_STEPS`].
    steps: u64,
}

impl Exec<'_> {
    fn list(&mut self, list: &List, dot: &Value) -> Result<(), String> {
        for node in list {
            self.node(node, dot)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, dot: &Value) -> Result<(), String> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("the template ran more than {MAX_STEPS} steps"));
        }
        if self.out.len() > MAX_OUTPUT {
            return Err(format!("the template's output exceeds {MAX_OUTPUT} bytes"));
        }
        match node {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(p) => {
                let v = self.pipeline(p, dot)?;
                if p.vars.is_empty() {
                    self.out.push_str(&v.to_string());
                }
            }
            Node::If(p, then, alt) => {
                let v = self.pipeline(p, dot)?;
                let mark = self.vars.len();
                let r = if v.truthy() { self.list(then, dot) } else { self.list(alt, dot) };
                self.vars.truncate(mark);
                r?;
            }
            Node::With(p, then, alt) => {
                let v = self.pipeline(p, dot)?;
                let mark = self.vars.len();
                let r = if v.truthy() { self.list(then, &v) } else { self.list(alt, dot) };
                self.vars.truncate(mark);
                r?;
            }
            Node::Range(p, body, alt) => {
                let mark = self.vars.len();
                let v = self.cmds(&p.cmds, dot)?;
                let items: Vec<(Value, Value)> = match v {
                    Value::List(items) => {
                        items.into_iter().enumerate().map(|(i, x)| (Value::Int(i as i64), x)).collect()
                    }
                    Value::Labels(m) => m.into_iter().map(|(k, x)| (Value::Str(k), Value::Str(x))).collect(),
                    Value::Map(m) => m.into_iter().map(|(k, x)| (Value::Str(k), x)).collect(),
                    Value::Int(n) if n > MAX_STEPS as i64 => {
                        return Err(format!("range over {n} exceeds the template's {MAX_STEPS} steps"))
                    }
                    Value::Int(n) => (0..n.max(0)).map(|i| (Value::Int(i), Value::Int(i))).collect(),
                    Value::Nil => Vec::new(),
                    other => return Err(format!("range can't iterate over {other}")),
                };
                if items.is_empty() {
                    self.list(alt, dot)?;
                }
                for (k, x) in items {
                    let inner = self.vars.len();
                    match p.vars.as_slice() {
                        [v] => self.vars.push((v.clone(), x.clone())),
                        [kv, vv] => {
                            self.vars.push((kv.clone(), k));
                            self.vars.push((vv.clone(), x.clone()));
                        }
                        _ => {}
                    }
                    let r = self.list(body, &x);
                    self.vars.truncate(inner);
                    r?;
                }
                self.vars.truncate(mark);
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, String> {
        let v = self.cmds(&p.cmds, dot)?;
        if let Some(name) = p.vars.first() {
            if p.declare {
                self.vars.push((name.clone(), v.clone()));
            } else if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = v.clone();
            }
        }
        Ok(v)
    }

    fn cmds(&mut self, cmds: &[Command], dot: &Value) -> Result<Value, String> {
        let mut prev: Option<Value> = None;
        for c in cmds {
            prev = Some(self.command(c, dot, prev)?);
        }
        Ok(prev.unwrap_or(Value::Nil))
    }

    fn command(&mut self, c: &Command, dot: &Value, piped: Option<Value>) -> Result<Value, String> {
        if let Some(Operand::Func(name)) = c.args.first() {
            // `and` and `or` stop at the first deciding argument, as Go's do
            let mut args = Vec::with_capacity(c.args.len());
            for a in &c.args[1..] {
                args.push(self.operand(a, dot)?);
            }
            args.extend(piped);
            return funcs::call(name, args, &self.env);
        }
        if c.args.len() > 1 || piped.is_some() {
            return Err("can't give argument to non-function".into());
        }
        self.operand(&c.args[0], dot)
    }

    fn operand(&mut self, o: &Operand, dot: &Value) -> Result<Value, String> {
        Ok(match o {
            Operand::Dot(fields) => fields_of(dot.clone(), fields)?,
            Operand::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                fields_of(v, fields)?
            }
            Operand::Pipe(p, fields) => {
                let mark = self.vars.len();
                let v = self.pipeline(p, dot)?;
                self.vars.truncate(mark);
                fields_of(v, fields)?
            }
            Operand::Func(name) => funcs::call(name, Vec::new(), &self.env)?,
            Operand::Str(s) => Value::Str(s.clone()),
            Operand::Number(n) => match parse::parse_int(n) {
                Some(i) => Value::Int(i),
                None => {
                    Value::Float(n.replace('_', "").parse().map_err(|_| format!("bad number syntax: {n:?}"))?)
                }
            },
            Operand::Bool(b) => Value::Bool(*b),
            Operand::Nil => Value::Nil,
        })
    }
}

/// `v.F1.F2…`: struct fields, or map keys (a missing key gives the zero value, as
/// Prometheus's `missingkey=zero`).
fn fields_of(mut v: Value, fields: &[String]) -> Result<Value, String> {
    for f in fields {
        v = match v {
            Value::Labels(m) => Value::Str(m.get(f).cloned().unwrap_or_default()),
            Value::Map(m) => m.get(f).cloned().unwrap_or(Value::Nil),
            Value::Struct(fs) => fs
                .into_iter()
                .find(|(n, _)| n == f)
                .map(|(_, x)| x)
                .ok_or_else(|| format!("can't evaluate field {f}"))?,
            Value::Nil => return Err(format!("nil pointer evaluating .{f}")),
            other => return Err(format!("can't evaluate field {f} in type {}", other.type_name())),
        };
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> AlertData {
        AlertData {
            labels: [("instance", "host-1:9100"), ("job", "node")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            external_labels: [("cluster".to_string(), "eu1".to_string())].into(),
            external_url: "http://prom.example:9090/prefix".into(),
            value: 1234567.5,
        }
    }

    fn run(text: &str) -> String {
        let t = Template::parse("__alert_T", text).unwrap_or_else(|e| panic!("{text}: {e}"));
        t.expand(&data(), 1_700_000_000.0, None).unwrap_or_else(|e| format!("ERR {e}"))
    }

    /// A `range` over a huge number, found by the fuzzer: it allocated every iteration before
    /// running one, until the process ran out of memory.
    #[test]
    fn expansion_is_bounded_in_steps_and_output() {
        assert_eq!(run("{{ range 3 }}x{{ end }}"), "xxx");
        let crash = "{{ range 0 }}{ `+}{{ end }}{{ range 0000002049638230412172401 }}{ }+}{{ end }}";
        assert!(run(crash).starts_with("ERR template: __alert_T: executing"), "{}", run(crash));
        assert!(run("{{ range 99999 }}{{ range 99999 }}x{{ end }}{{ end }}").contains("steps"));
        let wide = format!("{{{{ range 5000 }}}}{}{{{{ end }}}}", "y".repeat(1000));
        assert!(run(&wide).contains("output exceeds"), "{}", &run(&wide)[..80]);
    }

    #[test]
    fn expands_what_alerts_use() {
        assert_eq!(run("{{ $labels.instance }} of {{ .Labels.job }} down"), "host-1:9100 of node down");
        assert_eq!(run("{{ $value }}"), "1.2345675e+06");
        assert_eq!(run("{{ $value | humanize }}"), "1.235M");
        assert_eq!(run("{{ humanize1024 1048576 }}"), "1Mi");
        assert_eq!(run("{{ humanizePercentage 0.12345 }}"), "12.35%");
        assert_eq!(run("{{ humanizeDuration 93784 }}"), "1d 2h 3m 4s");
        assert_eq!(run("{{ humanizeDuration 0.25 }}"), "250ms");
        assert_eq!(run("{{ printf \"%.2f\" $value }}"), "1234567.50");
        assert_eq!(run("{{ printf \"%s=%d\" \"a\" 3 }}"), "a=3");
        assert_eq!(run("{{ if gt $value 1000.0 }}big{{ else }}small{{ end }}"), "big");
        assert_eq!(run("{{ if eq $labels.job \"x\" }}x{{ else if eq $labels.job \"node\" }}n{{ end }}"), "n");
        assert_eq!(
            run("{{ $externalLabels.cluster }} {{ $externalURL }}"),
            "eu1 http://prom.example:9090/prefix"
        );
        assert_eq!(run("{{ $labels.missing }}|"), "|");
        assert_eq!(
            run("{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}"),
            "instance=host-1:9100;job=node;"
        );
        assert_eq!(run("{{ with $labels.job }}job {{ . }}{{ end }}"), "job node");
        assert_eq!(run("{{ $x := 3 }}{{ $x }}"), "3");
        assert_eq!(run("{{ toUpper \"a\" | printf \"%s!\" }}"), "A!");
        assert_eq!(run("{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}"), "host-1");
        assert_eq!(run("{{ stripPort $labels.instance }}"), "host-1");
        assert_eq!(run("{{ title \"hello world\" }}"), "Hello World");
        assert_eq!(run("{{ match \"^host\" $labels.instance }}"), "true");
        assert_eq!(run("{{- \"a\" -}}  \n {{ \"b\" }}"), "ab");
        assert_eq!(run("{{ pathPrefix }}"), "/prefix");
        assert_eq!(run("{{ len $labels }}"), "2");
        assert_eq!(run("{{ index $labels \"job\" }}"), "node");
        assert_eq!(run("{{ and 1 0 }} {{ or 0 \"x\" }} {{ not true }}"), "0 x false");
    }

    #[test]
    fn query_results_are_samples() {
        let q = |e: &str| -> Result<QueryRows, String> {
            assert_eq!(e, "up");
            Ok(vec![
                ([("job".to_string(), "b".to_string())].into(), 0.0),
                ([("job".to_string(), "a".to_string())].into(), 1.0),
            ])
        };
        let t = Template::parse(
            "t",
            "{{ range query \"up\" | sortByLabel \"job\" }}{{ .Labels.job }}:{{ .Value }} {{ end }}{{ with query \"up\" }}{{ . | first | label \"job\" }}{{ end }}",
        )
        .unwrap();
        assert_eq!(t.expand(&data(), 0.0, Some(&q)).unwrap(), "a:1 b:0 b");
    }

    #[test]
    fn parse_errors_read_like_go() {
        let err = |t: &str| Template::parse("__alert_A", t).unwrap_err().to_string();
        assert_eq!(err("{{ .Foo "), "__alert_A:1: unclosed action");
        assert_eq!(err("{{ humanise $value }}"), "__alert_A:1: function \"humanise\" not defined");
        assert_eq!(err("{{ $nope }}"), "__alert_A:1: undefined variable \"$nope\"");
        assert_eq!(err("a\n{{ if $value }}b"), "__alert_A:2: unexpected EOF");
        assert_eq!(err("{{ end }}"), "__alert_A:1: unexpected {{end}}");
        assert_eq!(err("{{ else }}"), "__alert_A:1: unexpected {{else}}");
        assert_eq!(err("{{ \"abc }}"), "__alert_A:1: unterminated quoted string");
        assert_eq!(err("{{ (len $labels }}"), "__alert_A:1: unclosed left paren");
        assert_eq!(err("{{ }}"), "__alert_A:1: missing value for command");
    }

    #[test]
    fn execution_errors_are_reported() {
        assert!(run("{{ first (query \"x\") }}").starts_with("ERR"));
        assert!(run("{{ gt $value 1 }}").contains("incompatible types for comparison"));
    }
}
