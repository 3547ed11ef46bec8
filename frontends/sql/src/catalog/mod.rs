//! The catalogs clients read to learn the tables: the `pg_catalog` tables that psql's `\dt`
//! and `\d`, drivers and BI tools query, `information_schema.tables`/`.columns`, and the
//! session's functions (`version()`, `current_schema()`).
//!
//! They are metadata, not samples, so they do not go through the plan IR: a small
//! interpreter evaluates the query over relations built from storage's metric and label
//! names when the query runs. It takes the SQL such clients send (joins, scalar subqueries,
//! `CASE`, casts to `regclass`/`regtype`, regular expressions, `UNION`) and evaluates lazily:
//! expressions over the catalogs promflow keeps empty (constraints, indexes, policies, …)
//! are never evaluated, as there are no rows to evaluate them on.
//!
//! The same interpreter answers relational queries over metrics (`WITH`, joins, subqueries
//! in `FROM`): each metric query in them (a CTE's or subquery's body over one metric, or a
//! metric table with the `WHERE` conjuncts that are its own) runs through its plans, and its
//! rows become a relation (`docs/sql.md`, "Joins, subqueries and CTEs").
//!
//! The relations of the catalogs are in `tables.rs`; the interpreter's query, aggregate and
//! expression evaluation in `query.rs`, `aggregate.rs` and `expr.rs`.

mod aggregate;
mod expr;
#[cfg(feature = "engine")]
pub(crate) use expr::{quote_ident, size_text};
mod query;
mod tables;

use std::cmp::Ordering;

use promflow_storage::Querier;
use sqlparser::ast::{self, Expr, ObjectName, SetExpr, TableFactor};

use crate::compile::ColumnKind;
use crate::exec::ExecError;
use crate::rows::{Cell, Rows};
use crate::{Column, Source};
use query::run_query;
use tables::relation_columns;

/// The schemas of the catalogs.
const CATALOG_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];
/// The namespace oids: `pg_catalog`, `public`, `information_schema`, `pg_toast` (empty).
const PG_CATALOG: i64 = 11;
const PUBLIC: i64 = 2200;
const INFORMATION_SCHEMA: i64 = 13_000;
const PG_TOAST: i64 = 99;
/// The first oid of a user table, as in PostgreSQL; metrics' oids are above it.
const FIRST_TABLE_OID: i64 = 16_384;
/// The access method of every table (`heap`).
const HEAP: i64 = 2;
/// The one role: every client connects as it, whatever name it gives.
const ROLE: &str = "promflow";

/// What the server says it is (`version()`): the PostgreSQL version its protocol and catalog
/// follow, then promflow's.
fn version() -> String {
    format!("PostgreSQL {}", server_version())
}

/// The `server_version` setting, the same at start-up, in `SHOW` and in `current_setting`:
/// the PostgreSQL version first (what drivers parse), then promflow's.
pub(crate) fn server_version() -> String {
    format!("15.0 (promflow {})", env!("CARGO_PKG_VERSION"))
}

/// The session settings clients read on connect (`SHOW`, `current_setting`), by their
/// canonical names, with the values promflow's sessions have. `SET` changes none of them.
const SETTINGS: [(&str, &str); 14] = [
    ("server_version_num", "150000"),
    ("search_path", "\"$user\", public"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("standard_conforming_strings", "on"),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("integer_datetimes", "on"),
    ("max_identifier_length", "63"),
    ("is_superuser", "off"),
    ("application_name", ""),
];

/// The setting `name` (any case; `transaction isolation level` as `SHOW` spells it): its
/// canonical name and value.
pub(crate) fn setting(name: &str) -> Option<(&'static str, String)> {
    let name =
        if name.eq_ignore_ascii_case("transaction.isolation.level") { "transaction_isolation" } else { name };
    if name.eq_ignore_ascii_case("server_version") {
        return Some(("server_version", server_version()));
    }
    SETTINGS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(n, v)| (n, v.to_string()))
}

/// The types of the catalogs' and tables' columns: oid, name, `format_type` name, the oid of
/// its array type.
const TYPES: [(i64, &str, &str, i64); 9] = [
    (16, "bool", "boolean", 1000),
    (18, "char", "\"char\"", 1002),
    (19, "name", "name", 1003),
    (20, "int8", "bigint", 1016),
    (25, "text", "text", 1009),
    (26, "oid", "oid", 1028),
    (701, "float8", "double precision", 1022),
    (1184, "timestamptz", "timestamp with time zone", 1185),
    (3802, "jsonb", "jsonb", 3807),
];

/// The oid of the type named `name` (as `pg_type` or `format_type` names it), as
/// `to_regtype` and `::regtype` find it.
fn type_named(name: &str) -> Option<i64> {
    let name = name.trim().trim_start_matches("pg_catalog.");
    TYPES.iter().find(|t| t.1.eq_ignore_ascii_case(name) || t.2.eq_ignore_ascii_case(name)).map(|t| t.0)
}

/// The type oid of a table column's kind.
fn type_oid(kind: ColumnKind) -> i64 {
    match kind {
        ColumnKind::Text => 25,
        ColumnKind::Double => 701,
        ColumnKind::Timestamp => 1184,
        ColumnKind::Integer => 20,
        ColumnKind::Boolean => 16,
        ColumnKind::Int4 => 23,
        ColumnKind::Numeric => 1700,
        ColumnKind::Date => 1082,
        ColumnKind::Interval => 1186,
        ColumnKind::LocalTimestamp => 1114,
        ColumnKind::TextArray => 1009,
        ColumnKind::IntegerArray => 1016,
        ColumnKind::DoubleArray => 1022,
        ColumnKind::Json => 3802,
    }
}

/// Whether `query` reads the catalogs rather than metrics: it names a table of
/// `pg_catalog` or `information_schema` (or one of `pg_catalog`'s tables without its
/// schema, as the search path allows), or has no `FROM` (`SELECT version()`).
pub(crate) fn reads_catalog(query: &ast::Query) -> bool {
    reads(query, true)
}

/// Whether `query` names a table of `pg_catalog` or `information_schema`.
pub(crate) fn reads_catalog_tables(query: &ast::Query) -> bool {
    reads(query, false)
}

/// Whether `query` names a catalog table, or, when `tableless` counts, has no `FROM`.
fn reads(query: &ast::Query, tableless: bool) -> bool {
    reads_body(&query.body, tableless)
}

fn reads_body(s: &SetExpr, tableless: bool) -> bool {
    match s {
        SetExpr::Select(select) => {
            (tableless && select.from.is_empty())
                || select.from.iter().any(|t| {
                    std::iter::once(&t.relation)
                        .chain(t.joins.iter().map(|j| &j.relation))
                        .any(|f| reads_factor(f, tableless))
                })
        }
        SetExpr::SetOperation { left, right, .. } => {
            reads_body(left, tableless) || reads_body(right, tableless)
        }
        SetExpr::Query(q) => reads_body(&q.body, tableless),
        _ => false,
    }
}

fn reads_factor(f: &TableFactor, tableless: bool) -> bool {
    match f {
        TableFactor::Table { name, .. } => {
            let (schema, table) = split(name);
            schema.as_ref().is_some_and(|s| CATALOG_SCHEMAS.contains(&s.as_str()))
                // unqualified, only pg_catalog's (a metric may be named `tables`)
                || (schema.is_none() && table.starts_with("pg_") && relation_columns(&table).is_some())
        }
        TableFactor::Derived { subquery, .. } => reads_body(&subquery.body, tableless),
        _ => false,
    }
}

/// Whether `query` calls one of PostgreSQL's session or catalog functions, which the catalog
/// interpreter answers as promflow's server (`version()`, `current_setting(…)`,
/// `pg_…`, `has_…_privilege`, …) where the relational engine would answer as itself.
pub(crate) fn calls_catalog_function(query: &ast::Query) -> bool {
    let is_catalog_function = |name: &str| {
        let name = name.to_ascii_lowercase();
        name.starts_with("pg_")
            || (name.starts_with("has_") && name.ends_with("_privilege"))
            || matches!(
                name.as_str(),
                "version"
                    | "current_schema"
                    | "current_schemas"
                    | "current_database"
                    | "current_catalog"
                    | "current_user"
                    | "session_user"
                    | "current_setting"
                    | "format_type"
                    | "to_regtype"
                    | "obj_description"
                    | "col_description"
                    | "shobj_description"
                    | "quote_ident"
            )
    };
    let found = ast::visit_expressions(query, |e| {
        let called = match e {
            Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.as_str()),
            // `current_schema` and its like need no parentheses
            Expr::Identifier(i) if i.quote_style.is_none() => Some(i.value.as_str()),
            _ => None,
        };
        match called {
            Some(name) if is_catalog_function(name) => std::ops::ControlFlow::Break(()),
            _ => std::ops::ControlFlow::Continue(()),
        }
    });
    found.is_break()
}

/// A name's schema (lowercase) and last part.
fn split(name: &ObjectName) -> (Option<String>, String) {
    let parts: Vec<String> =
        name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).collect();
    match parts.as_slice() {
        [.., schema, table] => (Some(schema.clone()), table.clone()),
        [table] => (None, table.clone()),
        [] => (None, String::new()),
    }
}

/// A value of the interpreter.
#[derive(Clone, Debug, PartialEq)]
enum V {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Array(Vec<V>),
    /// A `regclass`: a table's oid, written as the table's name.
    Class(i64, String),
}

impl V {
    fn text(s: impl Into<String>) -> V {
        V::Text(s.into())
    }

    /// The value as PostgreSQL's text output writes it.
    fn to_text(&self) -> Option<String> {
        match self {
            V::Null => None,
            V::Bool(b) => Some(if *b { "t" } else { "f" }.into()),
            V::Int(i) => Some(i.to_string()),
            V::Float(f) => Some(f.to_string()),
            V::Text(s) | V::Class(_, s) => Some(s.clone()),
            V::Array(a) => {
                let items: Vec<String> =
                    a.iter().map(|v| v.to_text().unwrap_or_else(|| "NULL".into())).collect();
                Some(format!("{{{}}}", items.join(",")))
            }
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            V::Int(i) | V::Class(i, _) => Some(*i as f64),
            V::Float(f) => Some(*f),
            V::Text(s) => s.trim().parse().ok(),
            V::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }

    /// SQL's truth: `NULL` is not true.
    fn truth(&self) -> bool {
        match self {
            V::Bool(b) => *b,
            V::Text(s) => matches!(s.as_str(), "t" | "true"),
            _ => false,
        }
    }

    /// Compares as PostgreSQL would after casting an untyped literal to the other side's
    /// type; `None` when either is `NULL`.
    fn compare(&self, other: &V) -> Option<Ordering> {
        match (self, other) {
            (V::Null, _) | (_, V::Null) => None,
            (V::Text(a), V::Text(b)) => Some(a.cmp(b)),
            (V::Bool(a), V::Bool(b)) => Some(a.cmp(b)),
            (V::Bool(a), V::Text(_)) => Some(a.cmp(&other.truth())),
            (V::Text(_), V::Bool(b)) => Some(self.truth().cmp(b)),
            (a, b) => match (a.number(), b.number()) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => Some(a.to_text().cmp(&b.to_text())),
            },
        }
    }
}

/// `e` with where in the query its cause is, as the compiler's errors say it (an error
/// already placed, or of another kind, is left as it is).
fn at(e: ExecError, span: sqlparser::tokenizer::Span) -> ExecError {
    match e {
        ExecError::Catalog(m) if !m.contains(" at line ") && span.start.line > 0 => {
            ExecError::Catalog(format!("{m} at line {}, column {}", span.start.line, span.start.column))
        }
        e => e,
    }
}

/// Why a catalog query could not be answered.
fn unsupported(what: impl std::fmt::Display) -> ExecError {
    ExecError::Catalog(format!("{what} is not supported in catalog queries"))
}

/// A relation: named columns and rows.
#[derive(Clone, Debug, Default)]
struct Relation {
    columns: Vec<String>,
    rows: Vec<Vec<V>>,
}

/// A metric as a table: its oid and its columns with their types.
struct Table {
    name: String,
    oid: i64,
    columns: Vec<(String, ColumnKind)>,
}

/// What the catalogs are built from, read once per query and only as far as it needs.
struct Catalog<'a> {
    querier: &'a dyn Querier,
    tables: Option<Vec<Table>>,
    with_columns: bool,
    /// How to run the metric queries of a relational query (`None` for catalog queries).
    metrics: Option<Metrics<'a>>,
    /// When the statement must give up (`--query.timeout`).
    deadline: std::time::Instant,
    /// Set when nobody waits for the answer any more.
    canceled: Option<&'a std::sync::atomic::AtomicBool>,
    /// The common table expressions in scope, innermost last.
    ctes: Vec<(String, Relation)>,
    /// For the `SELECT` whose `FROM` is being read: each metric table's own `WHERE`
    /// conjuncts (by alias), applied where its rows are read.
    own: Vec<(String, Vec<Expr>)>,
}

/// The most rows a query's joins may make.
pub(crate) const MAX_ROWS: usize = 5_000_000;
/// The most values a query's joins may hold (rows times columns): wide catalog rows make
/// the row count alone too loose a bound on memory.
pub(crate) const MAX_CELLS: usize = 20_000_000;

/// How a relational query runs its metric queries: the server's settings and `now()`.
pub(crate) struct Metrics<'a> {
    pub(crate) settings: &'a crate::exec::Settings,
    pub(crate) now: i64,
}

/// FNV-1a: a hash that does not change between builds (oids must not).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A row being evaluated: each column's table alias and name, the values, and the row of
/// the query around it (correlated subqueries read it).
struct Scope<'a> {
    columns: &'a [(String, String)],
    /// Aliases of relations that have no columns (the empty catalogs): their columns read
    /// as `NULL` after a `LEFT JOIN`.
    empty: &'a [String],
    row: &'a [V],
    outer: Option<&'a Scope<'a>>,
    /// In a grouped `SELECT`: the group's value of each aggregate call.
    aggregates: &'a [(Expr, V)],
}

impl Scope<'_> {
    fn lookup(&self, qualifier: Option<&str>, name: &str) -> Result<V, ExecError> {
        let found = self
            .columns
            .iter()
            .position(|(alias, column)| column == name && qualifier.is_none_or(|q| q == alias));
        match found {
            Some(i) => Ok(self.row[i].clone()),
            None if qualifier.is_some_and(|q| self.empty.iter().any(|e| e == q)) => Ok(V::Null),
            None => match self.outer {
                Some(outer) => outer.lookup(qualifier, name),
                None => Err(ExecError::Catalog(format!(
                    "column {}{name} does not exist",
                    qualifier.map(|q| format!("{q}.")).unwrap_or_default()
                ))),
            },
        }
    }
}

/// Answers a catalog query from `querier` within `settings`' timeout.
pub(crate) fn answer<'a>(
    query: &ast::Query,
    querier: &'a dyn Querier,
    metrics: Option<Metrics<'a>>,
    settings: &'a crate::exec::Settings,
) -> Result<Rows, ExecError> {
    let mut catalog = Catalog {
        querier,
        tables: None,
        with_columns: false,
        metrics,
        deadline: std::time::Instant::now() + settings.timeout,
        canceled: settings.canceled.as_deref(),
        ctes: Vec::new(),
        own: Vec::new(),
    };
    let (names, rows) = run_query(query, &mut catalog, None)?;
    let columns = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            // a column's type is its values' (text when all are NULL or there are none)
            let kind = rows.iter().find_map(|r| match &r[i] {
                V::Bool(_) => Some(ColumnKind::Boolean),
                V::Int(_) => Some(ColumnKind::Integer),
                V::Float(_) => Some(ColumnKind::Double),
                V::Text(_) | V::Array(_) | V::Class(..) => Some(ColumnKind::Text),
                V::Null => None,
            });
            Column { name: name.clone(), source: Source::Computed(kind.unwrap_or(ColumnKind::Text)) }
        })
        .collect();
    let cell = |v: &V| match v {
        V::Null => Cell::Null,
        V::Bool(b) => Cell::Bool(*b),
        V::Int(i) => Cell::Number(*i as f64),
        V::Float(f) => Cell::Number(*f),
        v => Cell::Text(v.to_text().unwrap_or_default().into()),
    };
    let rows = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    Ok(Rows::new(columns, rows))
}

type Answer = (Vec<String>, Vec<Vec<V>>);
