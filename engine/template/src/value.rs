//! The values a template computes with, printed as Go's `fmt.Sprint` prints them.

use std::collections::BTreeMap;
use std::fmt;

use promflow_storage::gofmt::format_g;

/// A template value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Go's `nil` (and a missing map key of `args`): prints `<no value>`.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer literal or count.
    Int(i64),
    /// A float64 (`$value`, query results).
    Float(f64),
    /// A string.
    Str(String),
    /// A `map[string]string` (label sets): a missing key is "".
    Labels(BTreeMap<String, String>),
    /// A `map[string]any` (`args`).
    Map(BTreeMap<String, Value>),
    /// A list (`query` results).
    List(Vec<Value>),
    /// A struct with named fields (the template data, a query sample).
    Struct(Vec<(String, Value)>),
}

impl Value {
    /// A query sample: `.Labels` and `.Value`.
    pub fn sample(labels: BTreeMap<String, String>, value: f64) -> Value {
        Value::Struct(vec![("Labels".into(), Value::Labels(labels)), ("Value".into(), Value::Float(value))])
    }

    /// Go's truth: false, 0, nil and empty strings, maps and lists are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Labels(m) => !m.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Struct(_) => true,
        }
    }

    /// Go's name of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Labels(_) => "map[string]string",
            Value::Map(_) => "map[string]interface {}",
            Value::List(_) => "[]interface {}",
            Value::Struct(_) => "struct",
        }
    }

    /// Whether `fmt.Sprint` puts a space between this operand and a neighbour (neither is a
    /// string).
    pub fn is_string(&self) -> bool {
        matches!(self, Value::Str(_))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("<no value>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(v) => f.write_str(&format_g(*v, None)),
            Value::Str(s) => f.write_str(s),
            Value::Labels(m) => write_seq(f, "map[", "]", m.iter().map(|(k, v)| format!("{k}:{v}"))),
            Value::Map(m) => write_seq(f, "map[", "]", m.iter().map(|(k, v)| format!("{k}:{v}"))),
            Value::List(l) => write_seq(f, "[", "]", l.iter().map(|v| v.to_string())),
            Value::Struct(fields) => write_seq(f, "{", "}", fields.iter().map(|(_, v)| v.to_string())),
        }
    }
}

/// `open`, the items separated by spaces, `close`: how Go's `fmt` prints maps, slices and
/// structs.
fn write_seq(
    f: &mut fmt::Formatter<'_>,
    open: &str,
    close: &str,
    items: impl Iterator<Item = String>,
) -> fmt::Result {
    f.write_str(open)?;
    for (i, item) in items.enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        f.write_str(&item)?;
    }
    f.write_str(close)
}
