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

use std::cmp::Ordering;

use promflow_storage::{MatchOp, Matcher, Querier};
use sqlparser::ast::{
    self, BinaryOperator, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    JoinConstraint, JoinOperator, ObjectName, SelectItem, SetExpr, SetOperator, SetQuantifier, Spanned,
    TableFactor, TableWithJoins, UnaryOperator,
};

use crate::compile::ColumnKind;
use crate::exec::{ExecError, ALL_TIME};
use crate::rows::{table_columns, Cell, Rows};
use crate::{Column, Source};

/// The schemas of the catalogs.
const CATALOG_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];
/// The namespace oids: `pg_catalog`, `public`, `information_schema`.
const PG_CATALOG: i64 = 11;
const PUBLIC: i64 = 2200;
const INFORMATION_SCHEMA: i64 = 13_000;
/// The first oid of a user table, as in PostgreSQL; metrics' oids are above it.
const FIRST_TABLE_OID: i64 = 16_384;
/// The access method of every table (`heap`).
const HEAP: i64 = 2;
/// The one role: every client connects as it, whatever name it gives.
const ROLE: &str = "promflow";

/// What the server says it is (`version()`): the PostgreSQL version its protocol and catalog
/// follow, then promflow's.
fn version() -> String {
    format!("PostgreSQL 15.0 (promflow {})", env!("CARGO_PKG_VERSION"))
}

/// The types of the catalogs' and tables' columns: oid, name, `format_type` name, collation.
const TYPES: [(i64, &str, &str); 8] = [
    (16, "bool", "boolean"),
    (18, "char", "\"char\""),
    (19, "name", "name"),
    (20, "int8", "bigint"),
    (25, "text", "text"),
    (26, "oid", "oid"),
    (701, "float8", "double precision"),
    (1184, "timestamptz", "timestamp with time zone"),
];

/// The type oid of a table column's kind.
fn type_oid(kind: ColumnKind) -> i64 {
    match kind {
        ColumnKind::Text => 25,
        ColumnKind::Double => 701,
        ColumnKind::Timestamp => 1184,
        ColumnKind::Integer => 20,
        ColumnKind::Boolean => 16,
    }
}

/// Whether `query` reads the catalogs rather than metrics: it names a table of
/// `pg_catalog` or `information_schema` (or one of `pg_catalog`'s tables without its
/// schema, as the search path allows), or has no `FROM` (`SELECT version()`).
pub(crate) fn reads_catalog(query: &ast::Query) -> bool {
    fn body(s: &SetExpr) -> bool {
        match s {
            SetExpr::Select(select) => {
                select.from.is_empty()
                    || select.from.iter().any(|t| {
                        std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)).any(factor)
                    })
            }
            SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
            SetExpr::Query(q) => body(&q.body),
            _ => false,
        }
    }
    fn factor(f: &TableFactor) -> bool {
        match f {
            TableFactor::Table { name, .. } => {
                let (schema, table) = split(name);
                schema.as_ref().is_some_and(|s| CATALOG_SCHEMAS.contains(&s.as_str()))
                    // unqualified, only pg_catalog's (a metric may be named `tables`)
                    || (schema.is_none() && table.starts_with("pg_") && relation_columns(&table).is_some())
            }
            TableFactor::Derived { subquery, .. } => body(&subquery.body),
            _ => false,
        }
    }
    body(&query.body)
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
            V::Text(s) => Some(s.clone()),
            V::Array(a) => {
                let items: Vec<String> =
                    a.iter().map(|v| v.to_text().unwrap_or_else(|| "NULL".into())).collect();
                Some(format!("{{{}}}", items.join(",")))
            }
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            V::Int(i) => Some(*i as f64),
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

/// The columns of a catalog relation, by its name (`None` for names that are not one).
#[rustfmt::skip]
fn relation_columns(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "pg_namespace" => &["oid", "nspname", "nspowner"],
        "pg_class" => &[
            "oid", "relname", "relnamespace", "reltype", "relowner", "relam", "relkind", "relnatts", "relchecks",
            "relhasindex", "relhasrules", "relhastriggers", "relhassubclass", "relrowsecurity",
            "relforcerowsecurity", "relispartition", "reloptions", "reltablespace", "reloftype",
            "relpersistence", "relreplident", "reltoastrelid", "relpartbound", "reltuples", "relpages", "relacl",
        ],
        "pg_attribute" => &[
            "attrelid", "attname", "atttypid", "atttypmod", "attnum", "attnotnull", "attisdropped",
            "atthasdef", "attcollation", "attidentity", "attgenerated", "attlen", "attndims",
        ],
        "pg_type" => &[
            "oid", "typname", "typnamespace", "typowner", "typlen", "typtype", "typcollation", "typbasetype",
            "typelem", "typnotnull",
        ],
        "pg_am" => &["oid", "amname", "amtype"],
        "pg_database" => &[
            "oid", "datname", "datdba", "encoding", "datallowconn", "datistemplate", "datlocprovider", "datcollate",
            "datctype", "daticulocale", "datacl",
        ],
        "pg_roles" | "pg_user" => &["oid", "rolname", "usename", "rolsuper"],
        "tables" => &["table_catalog", "table_schema", "table_name", "table_type"],
        "columns" => &[
            "table_catalog", "table_schema", "table_name", "column_name", "ordinal_position", "data_type",
            "is_nullable", "udt_name",
        ],
        "schemata" => &["catalog_name", "schema_name", "schema_owner"],
        // kept empty: promflow has no constraints, indexes, defaults, policies, rules,
        // triggers, inheritance, publications, statistics objects or comments
        "pg_attrdef" | "pg_collation" | "pg_index" | "pg_constraint" | "pg_inherits" | "pg_policy"
        | "pg_statistic_ext" | "pg_publication" | "pg_publication_namespace" | "pg_publication_rel"
        | "pg_trigger" | "pg_rewrite" | "pg_description" | "pg_tablespace" | "pg_foreign_table"
        | "pg_partitioned_table" | "pg_sequence" | "pg_proc" | "pg_settings" | "pg_extension"
        | "pg_views" | "pg_matviews" | "pg_indexes" => &[],
        _ => return None,
    })
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
const MAX_ROWS: usize = 5_000_000;
/// The most values a query's joins may hold (rows times columns): wide catalog rows make
/// the row count alone too loose a bound on memory.
const MAX_CELLS: usize = 20_000_000;

/// How a relational query runs its metric queries: the server's settings and `now()`.
pub(crate) struct Metrics<'a> {
    pub(crate) settings: &'a crate::exec::Settings,
    pub(crate) now: i64,
}

impl Catalog<'_> {
    /// Whether `f` reads a metric (in a relational query): a table that is neither a common
    /// table expression in scope nor a catalog's. Returns its alias and metric name.
    fn metric_table(&self, f: &TableFactor) -> Option<(String, String)> {
        let TableFactor::Table { name, alias, args: None, .. } = f else { return None };
        let (schema, table) = split(name);
        let catalog = schema.as_ref().is_some_and(|s| CATALOG_SCHEMAS.contains(&s.as_str()))
            || (schema.is_none() && relation_columns(&table).is_some());
        let cte = self.cte(name).is_some();
        // the metric's own spelling: a quoted name keeps its case
        let metric = name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone())?;
        (self.metrics.is_some() && !catalog && !cte)
            .then(|| (alias.as_ref().map_or_else(|| metric.clone(), |a| a.name.value.clone()), metric))
    }

    /// Whether a query may go on holding `rows` rows: within the statement's deadline
    /// (`--query.timeout`) and [`MAX_ROWS`] (nested-loop joins of large tables, metric or
    /// catalog, would otherwise hold the server's memory and a worker for as long as they
    /// take).
    fn check(&self, rows: usize, columns: usize) -> Result<(), ExecError> {
        self.check_deadline()?;
        if rows > MAX_ROWS || rows.saturating_mul(columns) > MAX_CELLS {
            return Err(ExecError::Catalog(format!(
                "the query's joins make more than {MAX_ROWS} rows or {MAX_CELLS} values: bound the tables' ts, or aggregate in CTEs before joining"
            )));
        }
        Ok(())
    }

    /// Whether the statement is still within its deadline and wanted; checked by every
    /// (sub)query run, so that correlated subqueries, run once per row, stop too.
    fn check_deadline(&self) -> Result<(), ExecError> {
        Ok(promflow_plan::Stop { deadline: Some(self.deadline), canceled: self.canceled }.check()?)
    }

    /// The common table expression `name` names, if one in scope does (the innermost).
    fn cte(&self, name: &ObjectName) -> Option<&Relation> {
        let (schema, table) = split(name);
        schema.is_none().then(|| self.ctes.iter().rev().find(|(n, _)| *n == table).map(|(_, r)| r)).flatten()
    }

    /// The rows of a single metric's query (its text), run through its plans.
    fn metric_rows(&self, sql: &str) -> Result<Relation, ExecError> {
        let Some(m) = &self.metrics else { return Err(unsupported("a metric in a catalog query")) };
        let compiled =
            crate::compile::compile(sql, m.now).map_err(|e| ExecError::Catalog(format!("in {sql}: {e}")))?;
        let crate::Statement::Select(q) = compiled else {
            return Err(ExecError::Catalog(format!("{sql} is not a metric's query")));
        };
        let rows = crate::exec::run(&q, self.querier, m.settings, self.deadline)?;
        let value = |c: &Cell| match c {
            Cell::Null => V::Null,
            Cell::Bool(b) => V::Bool(*b),
            Cell::Text(t) => V::Text(t.to_string()),
            // timestamps as seconds since the epoch, as the JSON answer writes them
            Cell::Number(v) | Cell::Timestamp(v) => V::Float(*v),
        };
        Ok(Relation {
            columns: rows.columns.iter().map(|c| c.name.clone()).collect(),
            rows: rows.iter().map(|r| r.cells().map(|c| value(&c)).collect()).collect(),
        })
    }

    /// The metrics as tables, oids stable across queries: a hash of the name, moved on past
    /// a collision (so psql's second query finds the table its first one named).
    fn tables(&mut self, columns: bool) -> Result<&[Table], ExecError> {
        if self.tables.is_none() || (columns && !self.with_columns) {
            let names = self.querier.label_values("__name__", &[], ALL_TIME.0, ALL_TIME.1)?;
            let mut taken = std::collections::HashSet::new();
            let mut tables = Vec::with_capacity(names.len());
            for name in names {
                let span = (i32::MAX as i64) - FIRST_TABLE_OID;
                let mut oid = FIRST_TABLE_OID + (fnv(&name) % span as u64) as i64;
                while !taken.insert(oid) {
                    oid = FIRST_TABLE_OID + (oid - FIRST_TABLE_OID + 1) % span;
                }
                let columns = if columns {
                    let m = Matcher::new(MatchOp::Equal, "__name__", name.as_str())?;
                    table_columns(&self.querier.label_names(&[m], ALL_TIME.0, ALL_TIME.1)?)
                } else {
                    Vec::new()
                };
                tables.push(Table { name, oid, columns });
            }
            self.tables = Some(tables);
            self.with_columns = columns;
        }
        Ok(self.tables.as_deref().unwrap_or_default())
    }

    /// The relation `name` (of `schema`, when given).
    fn relation(&mut self, schema: Option<&str>, name: &str) -> Result<Relation, ExecError> {
        let Some(columns) = relation_columns(name) else {
            return Err(ExecError::NoTable(name.into()));
        };
        let info = schema == Some("information_schema");
        if info != matches!(name, "tables" | "columns" | "schemata") {
            return Err(ExecError::NoTable(format!("{}.{name}", schema.unwrap_or("pg_catalog"))));
        }
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let t = V::text;
        let rows: Vec<Vec<V>> = match name {
            "pg_namespace" => {
                [(PG_CATALOG, "pg_catalog"), (PUBLIC, "public"), (INFORMATION_SCHEMA, "information_schema")]
                    .into_iter()
                    .map(|(oid, n)| vec![V::Int(oid), t(n), V::Int(10)])
                    .collect()
            }
            "schemata" => ["pg_catalog", "public", "information_schema"]
                .into_iter()
                .map(|n| vec![t("promflow"), t(n), t(ROLE)])
                .collect(),
            "pg_class" => self
                .tables(false)?
                .iter()
                .map(|table| {
                    let f = V::Bool(false);
                    vec![
                        V::Int(table.oid),
                        t(&table.name),
                        V::Int(PUBLIC),
                        V::Int(0),
                        V::Int(10),
                        V::Int(HEAP),
                        t("r"),
                        V::Int(0),
                        V::Int(0),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f,
                        V::Null,
                        V::Int(0),
                        V::Int(0),
                        t("p"),
                        t("d"),
                        V::Int(0),
                        V::Null,
                        V::Float(-1.0),
                        V::Int(0),
                        V::Null,
                    ]
                })
                .collect(),
            "pg_attribute" => {
                let mut rows = Vec::new();
                for table in self.tables(true)? {
                    for (i, (column, kind)) in table.columns.iter().enumerate() {
                        let sample = *kind != ColumnKind::Text;
                        rows.push(vec![
                            V::Int(table.oid),
                            t(column),
                            V::Int(type_oid(*kind)),
                            V::Int(-1),
                            V::Int(i as i64 + 1),
                            V::Bool(sample),
                            V::Bool(false),
                            V::Bool(false),
                            V::Int(if sample { 0 } else { 100 }),
                            t(""),
                            t(""),
                            V::Int(-1),
                            V::Int(0),
                        ]);
                    }
                }
                rows
            }
            "tables" => self
                .tables(false)?
                .iter()
                .map(|table| vec![t("promflow"), t("public"), t(&table.name), t("BASE TABLE")])
                .collect(),
            "columns" => {
                let mut rows = Vec::new();
                for table in self.tables(true)? {
                    for (i, (column, kind)) in table.columns.iter().enumerate() {
                        let (_, udt, data_type) =
                            TYPES.iter().find(|x| x.0 == type_oid(*kind)).copied().unwrap_or_default();
                        let nullable = if *kind == ColumnKind::Text { "YES" } else { "NO" };
                        rows.push(vec![
                            t("promflow"),
                            t("public"),
                            t(&table.name),
                            t(column),
                            V::Int(i as i64 + 1),
                            t(data_type),
                            t(nullable),
                            t(udt),
                        ]);
                    }
                }
                rows
            }
            "pg_type" => TYPES
                .iter()
                .map(|(oid, n, _)| {
                    let collation = if *n == "text" { 100 } else { 0 };
                    vec![
                        V::Int(*oid),
                        t(n),
                        V::Int(PG_CATALOG),
                        V::Int(10),
                        V::Int(-1),
                        t("b"),
                        V::Int(collation),
                        V::Int(0),
                        V::Int(0),
                        V::Bool(false),
                    ]
                })
                .collect(),
            "pg_am" => vec![vec![V::Int(HEAP), t("heap"), t("t")]],
            "pg_database" => vec![vec![
                V::Int(1),
                t("promflow"),
                V::Int(10),
                V::Int(6),
                V::Bool(true),
                V::Bool(false),
                t("c"),
                t("C.UTF-8"),
                t("C.UTF-8"),
                V::Null,
                V::Null,
            ]],
            "pg_roles" | "pg_user" => vec![vec![V::Int(10), t(ROLE), t(ROLE), V::Bool(true)]],
            _ => Vec::new(),
        };
        Ok(Relation { columns, rows })
    }

    /// The name of the table with `oid` (`regclass` output), or the oid itself.
    fn table_name(&mut self, oid: &V) -> Result<V, ExecError> {
        let Some(n) = oid.number() else { return Ok(V::Null) };
        let name = self.tables(false)?.iter().find(|t| t.oid as f64 == n).map(|t| t.name.clone());
        Ok(V::Text(name.unwrap_or_else(|| oid.to_text().unwrap_or_default())))
    }
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
                V::Text(_) | V::Array(_) => Some(ColumnKind::Text),
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

fn run_query(query: &ast::Query, catalog: &mut Catalog, outer: Option<&Scope>) -> Result<Answer, ExecError> {
    catalog.check_deadline()?;
    let scoped = catalog.ctes.len();
    if let Some(with) = &query.with {
        if with.recursive {
            return Err(unsupported("WITH RECURSIVE"));
        }
        for cte in &with.cte_tables {
            let relation = relation_of(&cte.query, catalog, outer)?;
            let relation = match cte.alias.columns.as_slice() {
                [] => relation,
                names => {
                    Relation { columns: names.iter().map(|c| c.name.value.clone()).collect(), ..relation }
                }
            };
            catalog.ctes.push((cte.alias.name.value.clone(), relation));
        }
    }
    let body = run_body(&query.body, catalog, outer);
    catalog.ctes.truncate(scoped);
    let ((names, mut rows), scopes) = body?;
    if let Some(order_by) = &query.order_by {
        let ast::OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err(unsupported("ORDER BY ALL"));
        };
        // sort keys: a position, an output column's name, or an expression over the row
        let mut keyed = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let mut keys = Vec::with_capacity(exprs.len());
            for e in exprs {
                let key = match &e.expr {
                    Expr::Value(v) => match &v.value {
                        ast::Value::Number(n, _) => {
                            n.parse::<usize>().ok().and_then(|p| row.get(p.wrapping_sub(1))).cloned()
                        }
                        _ => None,
                    },
                    Expr::Identifier(id) => names.iter().position(|n| *n == id.value).map(|p| row[p].clone()),
                    _ => None,
                };
                let key = match (key, &scopes) {
                    (Some(k), _) => k,
                    (None, Some(scopes)) => {
                        let (columns, empty, source) = &scopes[i];
                        let scope = Scope { columns, empty, row: source, outer, aggregates: &[] };
                        eval(&e.expr, &scope, catalog)?
                    }
                    (None, None) => return Err(unsupported("ORDER BY an expression after UNION")),
                };
                keys.push(key);
            }
            keyed.push((keys, row));
        }
        keyed.sort_by(|(a, _), (b, _)| {
            exprs
                .iter()
                .zip(a.iter().zip(b))
                .map(|(e, (x, y))| {
                    // NULLs sort last ascending, first descending, as in PostgreSQL
                    let o = match (x, y) {
                        (V::Null, V::Null) => Ordering::Equal,
                        (V::Null, _) => Ordering::Greater,
                        (_, V::Null) => Ordering::Less,
                        _ => x.compare(y).unwrap_or(Ordering::Equal),
                    };
                    if matches!(e.options.sort, Some(ast::OrderBySort::Desc)) {
                        o.reverse()
                    } else {
                        o
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        rows = keyed.into_iter().map(|(_, r)| r).collect();
    }
    if let Some(ast::LimitClause::LimitOffset { limit, offset, .. }) = &query.limit_clause {
        let mut number = |e: &Expr| -> Result<usize, ExecError> {
            let scope = Scope { columns: &[], empty: &[], row: &[], outer: None, aggregates: &[] };
            Ok(eval(e, &scope, catalog)?.number().unwrap_or(0.0).max(0.0) as usize)
        };
        let skip = offset.as_ref().map(|o| number(&o.value)).transpose()?.unwrap_or(0);
        let take = limit.as_ref().map(&mut number).transpose()?.unwrap_or(usize::MAX);
        rows = rows.into_iter().skip(skip).take(take).collect();
    }
    Ok((names, rows))
}

/// A SELECT's source rows, kept for `ORDER BY` expressions: column names, empty aliases,
/// values.
type Sources = Vec<(Vec<(String, String)>, Vec<String>, Vec<V>)>;

fn run_body(
    body: &SetExpr,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<(Answer, Option<Sources>), ExecError> {
    match body {
        SetExpr::Select(select) => {
            let (answer, sources) = run_select(select, catalog, outer)?;
            Ok((answer, Some(sources)))
        }
        SetExpr::Query(q) => Ok((run_query(q, catalog, outer)?, None)),
        SetExpr::SetOperation { op: SetOperator::Union, set_quantifier, left, right } => {
            let ((names, mut rows), _) = run_body(left, catalog, outer)?;
            let ((_, more), _) = run_body(right, catalog, outer)?;
            rows.extend(more);
            if !matches!(set_quantifier, SetQuantifier::All) {
                let mut seen = Vec::new();
                rows.retain(|r| {
                    let new = !seen.contains(r);
                    if new {
                        seen.push(r.clone());
                    }
                    new
                });
            }
            Ok(((names, rows), None))
        }
        other => Err(unsupported(other)),
    }
}

/// The rows of `FROM`: (alias, column) per column, the aliases of empty catalogs, rows.
type From = (Vec<(String, String)>, Vec<String>, Vec<Vec<V>>);

/// The rows of a subquery or CTE: a single metric's query runs through its plans, anything
/// else in the interpreter.
fn relation_of(
    query: &ast::Query,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<Relation, ExecError> {
    if catalog.metrics.is_some()
        && !reads_catalog(query)
        && !crate::compile::is_relational(query)
        && !reads_ctes(query, catalog)
    {
        return catalog.metric_rows(&query.to_string());
    }
    let (columns, rows) = run_query(query, catalog, outer)?;
    Ok(Relation { columns, rows })
}

/// A relation's columns under `alias`, as `FROM` reads them.
fn aliased(alias: &str, relation: Relation) -> From {
    (relation.columns.into_iter().map(|c| (alias.to_string(), c)).collect(), Vec::new(), relation.rows)
}

/// Whether a query's `FROM` names a common table expression in scope.
fn reads_ctes(query: &ast::Query, catalog: &Catalog) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else { return true };
    select.from.iter().any(|t| {
        std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)).any(|f| match f {
            TableFactor::Table { name, .. } => catalog.cte(name).is_some(),
            _ => true,
        })
    })
}

fn from_factor(f: &TableFactor, catalog: &mut Catalog, outer: Option<&Scope>) -> Result<From, ExecError> {
    if let Some((alias, metric)) = catalog.metric_table(f) {
        // the table's rows, with the conjuncts of WHERE that are its own
        let own = catalog.own.iter().find(|(a, _)| *a == alias).map(|(_, c)| c.clone()).unwrap_or_default();
        let mut sql = format!("SELECT * FROM \"{}\"", metric.replace('"', "\"\""));
        if !own.is_empty() {
            let own: Vec<String> = own.iter().map(|e| e.to_string()).collect();
            sql = format!("{sql} WHERE {}", own.join(" AND "));
        }
        return Ok(aliased(&alias, catalog.metric_rows(&sql)?));
    }
    match f {
        TableFactor::Table { name, alias, args: None, .. } if catalog.cte(name).is_some() => {
            let relation = catalog.cte(name).cloned().unwrap_or(Relation { columns: vec![], rows: vec![] });
            Ok(aliased(&alias.as_ref().map_or_else(|| split(name).1, |a| a.name.value.clone()), relation))
        }
        TableFactor::Table { name, alias, args: None, .. } => {
            let (schema, table) = split(name);
            let relation = catalog.relation(schema.as_deref(), &table)?;
            let alias = alias.as_ref().map_or(table, |a| a.name.value.clone());
            let empty = if relation.columns.is_empty() { vec![alias.clone()] } else { Vec::new() };
            Ok((relation.columns.into_iter().map(|c| (alias.clone(), c)).collect(), empty, relation.rows))
        }
        TableFactor::Table { name, alias, args: Some(args), .. } => {
            let (_, function) = split(name);
            let scope = Scope { columns: &[], empty: &[], row: &[], outer, aggregates: &[] };
            let values: Vec<V> =
                args.args.iter().map(|a| argument(a, &scope, catalog)).collect::<Result<_, _>>()?;
            let rows = match (function.as_str(), values.as_slice()) {
                ("unnest", [V::Array(items)]) => items.iter().map(|v| vec![v.clone()]).collect(),
                ("unnest", [V::Null]) => Vec::new(),
                // a table is its own only ancestor: promflow has no partitions
                ("pg_partition_ancestors", [oid]) => vec![vec![oid.clone()]],
                _ => return Err(unsupported(format!("the table function {function}"))),
            };
            let alias = alias.as_ref().map_or(function.clone(), |a| a.name.value.clone());
            // `unnest(x) AS y`: y names the column too
            let column = if function == "unnest" { alias.clone() } else { "relid".to_string() };
            Ok((vec![(alias, column)], Vec::new(), rows))
        }
        TableFactor::Derived { subquery, alias, .. } => {
            let Relation { columns: names, rows } = relation_of(subquery, catalog, outer)?;
            let alias = alias.as_ref().map_or(String::new(), |a| a.name.value.clone());
            Ok((names.into_iter().map(|n| (alias.clone(), n)).collect(), Vec::new(), rows))
        }
        other => Err(unsupported(other)),
    }
}

fn from_joins(t: &TableWithJoins, catalog: &mut Catalog, outer: Option<&Scope>) -> Result<From, ExecError> {
    let (mut columns, mut empty, mut rows) = from_factor(&t.relation, catalog, outer)?;
    for join in &t.joins {
        let (right_columns, right_empty, right_rows) = from_factor(&join.relation, catalog, outer)?;
        let (constraint, left_outer) = match &join.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => (c, false),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, true),
            other => return Err(unsupported(format!("{other:?}"))),
        };
        columns.extend(right_columns.iter().cloned());
        empty.extend(right_empty);
        let mut joined = Vec::new();
        let mut pairs = 0usize;
        for left in &rows {
            let mut matched = false;
            for right in &right_rows {
                pairs += 1;
                if pairs.is_multiple_of(4096) {
                    catalog.check(joined.len(), columns.len())?;
                }
                let row: Vec<V> = left.iter().chain(right).cloned().collect();
                let keep = match constraint {
                    JoinConstraint::On(e) => {
                        let scope =
                            Scope { columns: &columns, empty: &empty, row: &row, outer, aggregates: &[] };
                        eval(e, &scope, catalog)?.truth()
                    }
                    JoinConstraint::None => true,
                    other => return Err(unsupported(format!("{other:?}"))),
                };
                if keep {
                    matched = true;
                    joined.push(row);
                }
            }
            if left_outer && !matched {
                joined.push(left.iter().cloned().chain(right_columns.iter().map(|_| V::Null)).collect());
            }
        }
        rows = joined;
    }
    Ok((columns, empty, rows))
}

fn run_select(
    select: &ast::Select,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<(Answer, Sources), ExecError> {
    // a metric table's own WHERE conjuncts are applied where its rows are read, and not again
    let conditions: Vec<&Expr> = select.selection.as_ref().map(crate::compile::conjuncts).unwrap_or_default();
    let mut consumed = vec![false; conditions.len()];
    let mut own = Vec::new();
    if let Some(now) = catalog.metrics.as_ref().map(|m| m.now) {
        // not the right side of a LEFT JOIN: WHERE filters its NULLs after the join, which a
        // condition applied before it would turn into unmatched rows
        let factors = select.from.iter().flat_map(|t| {
            let inner = t
                .joins
                .iter()
                .filter(|j| !matches!(j.join_operator, JoinOperator::Left(_) | JoinOperator::LeftOuter(_)));
            std::iter::once(&t.relation).chain(inner.map(|j| &j.relation))
        });
        for (alias, _) in factors.filter_map(|f| catalog.metric_table(f)) {
            let mut mine = Vec::new();
            for (c, done) in conditions.iter().zip(consumed.iter_mut()) {
                if let Some(p) = crate::compile::own_predicate(c, &alias, now) {
                    mine.push(p);
                    *done = true;
                }
            }
            own.push((alias, mine));
        }
    }
    let outer_own = std::mem::replace(&mut catalog.own, own);
    // FROM: the cross product of its items (one row of no columns without FROM)
    let from = read_from(select, catalog, outer);
    catalog.own = outer_own;
    let (columns, empty, rows) = from?;
    let mut kept = Vec::new();
    for row in rows {
        let scope = Scope { columns: &columns, empty: &empty, row: &row, outer, aggregates: &[] };
        let mut keep = true;
        for (c, _) in conditions.iter().zip(&consumed).filter(|(_, done)| !**done) {
            if !eval(c, &scope, catalog)?.truth() {
                keep = false;
                break;
            }
        }
        if keep {
            kept.push(row);
        }
    }
    project(select, columns, empty, kept, catalog, outer)
}

/// The rows of a `SELECT`'s `FROM`: the cross product of its items (one row of no columns
/// without `FROM`).
fn read_from(select: &ast::Select, catalog: &mut Catalog, outer: Option<&Scope>) -> Result<From, ExecError> {
    let (mut columns, mut empty, mut rows) = (Vec::new(), Vec::new(), vec![Vec::new()]);
    for t in &select.from {
        let (c, e, r) = from_joins(t, catalog, outer)?;
        catalog.check(rows.len().saturating_mul(r.len()), columns.len() + c.len())?;
        rows = rows
            .iter()
            .flat_map(|left: &Vec<V>| r.iter().map(move |right| [left.clone(), right.clone()].concat()))
            .collect();
        columns.extend(c);
        empty.extend(e);
    }
    Ok((columns, empty, rows))
}

/// The select list over the kept rows (and `DISTINCT`).
fn project(
    select: &ast::Select,
    columns: Vec<(String, String)>,
    empty: Vec<String>,
    kept: Vec<Vec<V>>,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<(Answer, Sources), ExecError> {
    let mut names = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) => names.push(expr_name(e)),
            SelectItem::ExprWithAlias { alias, .. } => names.push(alias.value.clone()),
            SelectItem::Wildcard(_) => names.extend(columns.iter().map(|(_, c)| c.clone())),
            other => return Err(unsupported(other)),
        }
    }
    // each output row's source: a kept row, or with grouping a group's first row and its
    // aggregates' values
    let units = match grouping(select)? {
        None => {
            if select.having.is_some() {
                return Err(unsupported("HAVING without GROUP BY or an aggregate"));
            }
            kept.into_iter().map(|row| (row, Vec::new())).collect()
        }
        Some((keys, calls)) => groups(select, &keys, &calls, (&columns, &empty), kept, catalog, outer)?,
    };
    let mut out = Vec::with_capacity(units.len());
    let mut sources = Vec::with_capacity(units.len());
    for (row, aggregates) in units {
        let scope = Scope { columns: &columns, empty: &empty, row: &row, outer, aggregates: &aggregates };
        let mut values = Vec::with_capacity(names.len());
        for item in &select.projection {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    values.push(eval(e, &scope, catalog)?)
                }
                _ => values.extend(row.iter().cloned()),
            }
        }
        out.push(values);
        sources.push((columns.clone(), empty.clone(), row));
    }
    if select.distinct.is_some() {
        let mut seen: Vec<Vec<V>> = Vec::new();
        let mut i = 0;
        out.retain(|r| {
            let new = !seen.contains(r);
            if new {
                seen.push(r.clone());
            } else {
                sources.remove(i);
            }
            i += usize::from(new);
            new
        });
    }
    Ok(((names, out), sources))
}

/// The aggregate functions the interpreter computes over a group's rows.
const AGGREGATES: [&str; 5] = ["count", "sum", "avg", "min", "max"];

fn is_aggregate_call(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.over.is_none() && AGGREGATES.contains(&split(&f.name).1.as_str()))
}

/// Every aggregate call in `e` (not inside another).
fn aggregate_calls<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        e if is_aggregate_call(e) && !out.contains(&e) => out.push(e),
        e if is_aggregate_call(e) => {}
        Expr::BinaryOp { left, right, .. } => {
            aggregate_calls(left, out);
            aggregate_calls(right, out);
        }
        Expr::Nested(x) | Expr::UnaryOp { expr: x, .. } | Expr::Cast { expr: x, .. } => {
            aggregate_calls(x, out)
        }
        Expr::Function(f) => {
            if let FunctionArguments::List(list) = &f.args {
                for a in &list.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a {
                        aggregate_calls(x, out);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A grouped `SELECT`'s `GROUP BY` expressions and the aggregate calls of its select list
/// and `HAVING`.
type Grouped<'s> = (Vec<Expr>, Vec<&'s Expr>);

/// The `GROUP BY` expressions of a grouped `SELECT` (positions and output names stand for
/// the select list's expressions) and its aggregate calls, or `None` when it neither groups
/// nor aggregates.
fn grouping(select: &ast::Select) -> Result<Option<Grouped<'_>>, ExecError> {
    let ast::GroupByExpr::Expressions(exprs, modifiers) = &select.group_by else {
        return Err(unsupported("GROUP BY ALL"));
    };
    if !modifiers.is_empty() {
        return Err(unsupported("GROUP BY modifiers"));
    }
    let mut calls = Vec::new();
    for item in &select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            aggregate_calls(e, &mut calls);
        }
    }
    if let Some(h) = &select.having {
        aggregate_calls(h, &mut calls);
    }
    if exprs.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let item_expr = |i: usize| match select.projection.get(i) {
        Some(SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) => Some(e.clone()),
        _ => None,
    };
    let keys = exprs
        .iter()
        .map(|e| match e {
            Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => {
                    n.parse::<usize>().ok().and_then(|p| item_expr(p.wrapping_sub(1))).ok_or_else(|| {
                        ExecError::Catalog(format!("GROUP BY position {n} is not in the select list"))
                    })
                }
                _ => Ok(e.clone()),
            },
            Expr::Identifier(id) => Ok(select
                .projection
                .iter()
                .find_map(|item| match item {
                    SelectItem::ExprWithAlias { expr, alias } if alias.value == id.value => {
                        Some(expr.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| e.clone())),
            e => Ok(e.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((keys, calls)))
}

/// Whether `e` reads columns only through the `GROUP BY` expressions and aggregate calls.
fn grouped_ok(e: &Expr, keys: &[Expr]) -> bool {
    if keys.contains(e) || is_aggregate_call(e) {
        return true;
    }
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => false,
        Expr::BinaryOp { left, right, .. } => grouped_ok(left, keys) && grouped_ok(right, keys),
        Expr::Nested(x) | Expr::UnaryOp { expr: x, .. } | Expr::Cast { expr: x, .. } => grouped_ok(x, keys),
        Expr::Function(f) => match &f.args {
            FunctionArguments::List(list) => list.args.iter().all(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => grouped_ok(x, keys),
                _ => true,
            }),
            _ => true,
        },
        _ => true,
    }
}

/// A group of a grouped `SELECT`: its first row and its aggregate calls' values.
type Group = (Vec<V>, Vec<(Expr, V)>);

/// The groups of `rows` by `keys` in the order they first appear (one group of no rows when
/// the select aggregates without `GROUP BY`, as SQL has it), each as its first row and its
/// aggregates' values, those that `HAVING` keeps.
fn groups(
    select: &ast::Select,
    keys: &[Expr],
    calls: &[&Expr],
    (columns, empty): (&[(String, String)], &[String]),
    rows: Vec<Vec<V>>,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<Vec<Group>, ExecError> {
    for item in &select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            if !grouped_ok(e, keys) {
                return Err(ExecError::Catalog(format!(
                    "{e} must appear in the GROUP BY clause or be used in an aggregate function"
                )));
            }
        }
    }
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut grouped: Vec<Vec<Vec<V>>> = Vec::new();
    for row in rows {
        let scope = Scope { columns, empty, row: &row, outer, aggregates: &[] };
        let key = keys.iter().map(|k| eval(k, &scope, catalog)).collect::<Result<Vec<_>, _>>()?;
        let at = *index.entry(format!("{key:?}")).or_insert_with(|| {
            grouped.push(Vec::new());
            grouped.len() - 1
        });
        grouped[at].push(row);
    }
    if grouped.is_empty() && keys.is_empty() {
        grouped.push(Vec::new());
    }
    let mut out = Vec::with_capacity(grouped.len());
    for members in grouped {
        let mut values = Vec::with_capacity(calls.len());
        for &call in calls {
            values.push((call.clone(), aggregate(call, &members, (columns, empty), catalog, outer)?));
        }
        let first = members.into_iter().next().unwrap_or_else(|| vec![V::Null; columns.len()]);
        if let Some(h) = &select.having {
            let scope = Scope { columns, empty, row: &first, outer, aggregates: &values };
            if !eval(h, &scope, catalog)?.truth() {
                continue;
            }
        }
        out.push((first, values));
    }
    Ok(out)
}

/// An aggregate call's value over a group's rows (`NULL`s skipped, as in SQL; `NULL` over no
/// values but for `count`).
fn aggregate(
    call: &Expr,
    rows: &[Vec<V>],
    (columns, empty): (&[(String, String)], &[String]),
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<V, ExecError> {
    let Expr::Function(f) = call else { return Ok(V::Null) };
    let name = split(&f.name).1;
    let FunctionArguments::List(list) = &f.args else { return Err(unsupported(format!("{name}()"))) };
    if list.duplicate_treatment.is_some() || f.filter.is_some() {
        return Err(unsupported(format!("DISTINCT and FILTER in {name}")));
    }
    let arg = match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "count" => None,
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] => Some(x),
        _ => return Err(unsupported(format!("{name} with these arguments"))),
    };
    let Some(arg) = arg else { return Ok(V::Int(rows.len() as i64)) };
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let scope = Scope { columns, empty, row, outer, aggregates: &[] };
        match eval(arg, &scope, catalog)? {
            V::Null => {}
            v => values.push(v),
        }
    }
    let numbers = || values.iter().filter_map(V::number);
    Ok(match name.as_str() {
        "count" => V::Int(values.len() as i64),
        _ if values.is_empty() => V::Null,
        "sum" => V::Float(numbers().sum()),
        "avg" => V::Float(numbers().sum::<f64>() / numbers().count().max(1) as f64),
        "min" | "max" => {
            let pick = if name == "min" { Ordering::Less } else { Ordering::Greater };
            values.iter().skip(1).fold(values[0].clone(), |best, v| {
                if v.compare(&best) == Some(pick) {
                    v.clone()
                } else {
                    best
                }
            })
        }
        _ => V::Null,
    })
}

/// The name PostgreSQL gives an unnamed select item.
fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(id) => id.value.clone(),
        Expr::CompoundIdentifier(ids) => ids.last().map_or_else(String::new, |i| i.value.clone()),
        Expr::Function(f) => split(&f.name).1,
        Expr::Cast { expr, .. } | Expr::Nested(expr) | Expr::Collate { expr, .. } => expr_name(expr),
        Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

fn argument(a: &FunctionArg, scope: &Scope, catalog: &mut Catalog) -> Result<V, ExecError> {
    match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
        | FunctionArg::Named { arg: FunctionArgExpr::Expr(e), .. } => eval(e, scope, catalog),
        other => Err(unsupported(other)),
    }
}

/// Matches `pattern` (a PostgreSQL regular expression) anywhere in `text`.
fn regex_search(text: &V, pattern: &V, case_blind: bool) -> Result<V, ExecError> {
    let (Some(t), Some(p)) = (text.to_text(), pattern.to_text()) else { return Ok(V::Null) };
    let re = regex::RegexBuilder::new(&p)
        .case_insensitive(case_blind)
        .build()
        .map_err(|e| ExecError::Catalog(format!("invalid regular expression: {e}")))?;
    Ok(V::Bool(re.is_match(&t)))
}

/// `LIKE`: `%` any run, `_` one character.
fn like(text: &V, pattern: &V, case_blind: bool) -> Result<V, ExecError> {
    let (Some(t), Some(p)) = (text.to_text(), pattern.to_text()) else { return Ok(V::Null) };
    let mut re = String::from("^");
    for c in p.chars() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex_search(&V::Text(t), &V::Text(re), case_blind)
}

fn compare(op: &BinaryOperator, a: &V, b: &V) -> Option<V> {
    let o = a.compare(b);
    let result = match op {
        BinaryOperator::Eq => o.map(|o| o.is_eq()),
        BinaryOperator::NotEq => o.map(|o| o.is_ne()),
        BinaryOperator::Lt => o.map(|o| o.is_lt()),
        BinaryOperator::LtEq => o.map(|o| o.is_le()),
        BinaryOperator::Gt => o.map(|o| o.is_gt()),
        BinaryOperator::GtEq => o.map(|o| o.is_ge()),
        _ => return None,
    };
    Some(result.map_or(V::Null, V::Bool))
}

fn eval(e: &Expr, scope: &Scope, catalog: &mut Catalog) -> Result<V, ExecError> {
    if let Some((_, v)) = scope.aggregates.iter().find(|(call, _)| call == e) {
        return Ok(v.clone());
    }
    Ok(match e {
        Expr::Identifier(id) => scope.lookup(None, &id.value).map_err(|e| at(e, id.span))?,
        Expr::CompoundIdentifier(ids) => match ids.as_slice() {
            [.., q, c] => scope.lookup(Some(&q.value), &c.value).map_err(|e| at(e, q.span))?,
            [c] => scope.lookup(None, &c.value).map_err(|e| at(e, c.span))?,
            [] => V::Null,
        },
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n
                .parse::<i64>()
                .map(V::Int)
                .or_else(|_| n.parse::<f64>().map(V::Float))
                .map_err(|_| unsupported(n))?,
            ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => V::text(s.clone()),
            ast::Value::Boolean(b) => V::Bool(*b),
            ast::Value::Null => V::Null,
            other => return Err(unsupported(other)),
        },
        Expr::Nested(e) | Expr::Collate { expr: e, .. } => eval(e, scope, catalog)?,
        Expr::UnaryOp { op: UnaryOperator::Not, expr } => match eval(expr, scope, catalog)? {
            V::Null => V::Null,
            v => V::Bool(!v.truth()),
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match eval(expr, scope, catalog)? {
            V::Int(i) => V::Int(-i),
            v => v.number().map_or(V::Null, |f| V::Float(-f)),
        },
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            let l = eval(left, scope, catalog)?;
            if l != V::Null && !l.truth() {
                return Ok(V::Bool(false));
            }
            let r = eval(right, scope, catalog)?;
            match (l, r) {
                (_, r) if r != V::Null && !r.truth() => V::Bool(false),
                (V::Null, _) | (_, V::Null) => V::Null,
                _ => V::Bool(true),
            }
        }
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
            let l = eval(left, scope, catalog)?;
            if l.truth() {
                return Ok(V::Bool(true));
            }
            let r = eval(right, scope, catalog)?;
            match (l, r) {
                (_, r) if r.truth() => V::Bool(true),
                (V::Null, _) | (_, V::Null) => V::Null,
                _ => V::Bool(false),
            }
        }
        Expr::BinaryOp { left, op, right } => {
            let (l, r) = (eval(left, scope, catalog)?, eval(right, scope, catalog)?);
            if let Some(v) = compare(op, &l, &r) {
                return Ok(v);
            }
            let custom = match op {
                BinaryOperator::PGCustomBinaryOperator(parts) => parts.last().map(String::as_str),
                _ => None,
            };
            match (op, custom) {
                (BinaryOperator::PGRegexMatch, _) | (_, Some("~")) => regex_search(&l, &r, false)?,
                (BinaryOperator::PGRegexIMatch, _) | (_, Some("~*")) => regex_search(&l, &r, true)?,
                (BinaryOperator::PGRegexNotMatch, _) | (_, Some("!~")) => {
                    match regex_search(&l, &r, false)? {
                        V::Bool(b) => V::Bool(!b),
                        v => v,
                    }
                }
                (BinaryOperator::PGRegexNotIMatch, _) | (_, Some("!~*")) => match regex_search(&l, &r, true)?
                {
                    V::Bool(b) => V::Bool(!b),
                    v => v,
                },
                (BinaryOperator::StringConcat, _) => match (l, r) {
                    (V::Array(mut a), V::Array(b)) => {
                        a.extend(b);
                        V::Array(a)
                    }
                    (V::Array(a), V::Null) | (V::Null, V::Array(a)) => V::Array(a),
                    (l, r) => match (l.to_text(), r.to_text()) {
                        (Some(a), Some(b)) => V::Text(a + &b),
                        _ => V::Null,
                    },
                },
                (BinaryOperator::Plus | BinaryOperator::Minus, _) => match (l, r) {
                    (V::Int(a), V::Int(b)) => V::Int(if *op == BinaryOperator::Plus { a + b } else { a - b }),
                    (l, r) => match (l.number(), r.number()) {
                        (Some(a), Some(b)) => {
                            V::Float(if *op == BinaryOperator::Plus { a + b } else { a - b })
                        }
                        _ => V::Null,
                    },
                },
                (BinaryOperator::Multiply | BinaryOperator::Divide | BinaryOperator::Modulo, _) => {
                    // IEEE arithmetic, as PromQL's and the aggregates' (a division by zero
                    // is ±Inf or NaN)
                    match (l.number(), r.number()) {
                        (Some(a), Some(b)) => V::Float(match op {
                            BinaryOperator::Multiply => a * b,
                            BinaryOperator::Divide => a / b,
                            _ => a % b,
                        }),
                        _ => V::Null,
                    }
                }
                _ => return Err(unsupported(format!("the operator {op}"))),
            }
        }
        Expr::Like { negated, expr, pattern, .. } | Expr::ILike { negated, expr, pattern, .. } => {
            let blind = matches!(e, Expr::ILike { .. });
            match like(&eval(expr, scope, catalog)?, &eval(pattern, scope, catalog)?, blind)? {
                V::Bool(b) => V::Bool(b != *negated),
                v => v,
            }
        }
        Expr::IsNull(e) => V::Bool(eval(e, scope, catalog)? == V::Null),
        Expr::IsNotNull(e) => V::Bool(eval(e, scope, catalog)? != V::Null),
        Expr::IsTrue(e) => V::Bool(eval(e, scope, catalog)?.truth()),
        Expr::IsFalse(e) => V::Bool(eval(e, scope, catalog)? == V::Bool(false)),
        Expr::In { expr, target: ast::InTarget::List(list), negated, .. } => {
            let v = eval(expr, scope, catalog)?;
            let mut found = false;
            for item in list {
                found |= v.compare(&eval(item, scope, catalog)?).is_some_and(|o| o.is_eq());
            }
            if v == V::Null {
                V::Null
            } else {
                V::Bool(found != *negated)
            }
        }
        Expr::In { expr, target: ast::InTarget::Subquery(subquery), negated, .. } => {
            let v = eval(expr, scope, catalog)?;
            let (_, rows) = run_query(subquery, catalog, Some(scope))?;
            let found = rows.iter().any(|r| r.first().and_then(|x| v.compare(x)).is_some_and(|o| o.is_eq()));
            V::Bool(found != *negated)
        }
        Expr::Between { expr, negated, low, high } => {
            let v = eval(expr, scope, catalog)?;
            let (lo, hi) = (eval(low, scope, catalog)?, eval(high, scope, catalog)?);
            match (v.compare(&lo), v.compare(&hi)) {
                (Some(a), Some(b)) => V::Bool((a.is_ge() && b.is_le()) != *negated),
                _ => V::Null,
            }
        }
        Expr::Case { operand, conditions, else_result, .. } => {
            let operand = operand.as_ref().map(|o| eval(o, scope, catalog)).transpose()?;
            for w in conditions {
                let hit = match &operand {
                    Some(o) => o.compare(&eval(&w.condition, scope, catalog)?).is_some_and(|x| x.is_eq()),
                    None => eval(&w.condition, scope, catalog)?.truth(),
                };
                if hit {
                    return eval(&w.result, scope, catalog);
                }
            }
            match else_result {
                Some(e) => eval(e, scope, catalog)?,
                None => V::Null,
            }
        }
        Expr::Cast { kind: CastKind::DoubleColon | CastKind::Cast, expr, data_type, .. } => {
            let v = eval(expr, scope, catalog)?;
            cast(v, data_type, catalog)?
        }
        Expr::Subquery(q) => {
            let (_, rows) = run_query(q, catalog, Some(scope))?;
            rows.into_iter().next().and_then(|r| r.into_iter().next()).unwrap_or(V::Null)
        }
        Expr::Exists { subquery, negated } => {
            let (_, rows) = run_query(subquery, catalog, Some(scope))?;
            V::Bool(rows.is_empty() == *negated)
        }
        Expr::AnyOp { left, compare_op, right, .. } => {
            let l = eval(left, scope, catalog)?;
            let V::Array(items) = eval(right, scope, catalog)? else { return Ok(V::Null) };
            V::Bool(items.iter().any(|x| compare(compare_op, &l, x).is_some_and(|v| v.truth())))
        }
        Expr::Function(f) => function(f, scope, catalog)?,
        other => return Err(unsupported(other)),
    })
}

fn cast(v: V, data_type: &DataType, catalog: &mut Catalog) -> Result<V, ExecError> {
    let name = match data_type {
        DataType::Custom(name, _) => split(name).1,
        DataType::Text | DataType::Varchar(_) | DataType::String(_) => "text".into(),
        DataType::Int(_) | DataType::Integer(_) | DataType::BigInt(_) | DataType::SmallInt(_) => {
            "int8".into()
        }
        DataType::Boolean | DataType::Bool => "bool".into(),
        other => other.to_string().to_ascii_lowercase(),
    };
    Ok(match name.as_str() {
        _ if v == V::Null => V::Null,
        "text" | "name" | "char" | "bpchar" => V::Text(v.to_text().unwrap_or_default()),
        "oid" | "int8" | "int4" | "int2" | "regproc" => v.number().map_or(V::Null, |n| V::Int(n as i64)),
        "bool" => V::Bool(v.truth()),
        "regclass" => match v {
            V::Text(name) => {
                let oid = catalog.tables(false)?.iter().find(|t| t.name == name).map(|t| t.oid);
                oid.map(V::Int).ok_or(ExecError::NoTable(name))?
            }
            v => catalog.table_name(&v)?,
        },
        "regtype" => {
            let oid = v.number().unwrap_or(0.0) as i64;
            TYPES.iter().find(|t| t.0 == oid).map_or(V::Int(oid), |t| V::text(t.2))
        }
        "regnamespace" => {
            let oid = v.number().unwrap_or(0.0) as i64;
            V::text(match oid {
                PG_CATALOG => "pg_catalog",
                INFORMATION_SCHEMA => "information_schema",
                _ => "public",
            })
        }
        _ => v,
    })
}

fn function(f: &ast::Function, scope: &Scope, catalog: &mut Catalog) -> Result<V, ExecError> {
    let (_, name) = split(&f.name);
    let args: Vec<V> = match &f.args {
        FunctionArguments::None => Vec::new(),
        FunctionArguments::List(list) => {
            list.args.iter().map(|a| argument(a, scope, catalog)).collect::<Result<_, _>>()?
        }
        FunctionArguments::Subquery(q) if name == "array" => {
            let (_, rows) = run_query(q, catalog, Some(scope))?;
            return Ok(V::Array(rows.into_iter().filter_map(|r| r.into_iter().next()).collect()));
        }
        FunctionArguments::Subquery(_) => return Err(unsupported(format!("{name}(SELECT …)"))),
    };
    let first = args.first().cloned().unwrap_or(V::Null);
    Ok(match name.as_str() {
        "version" => V::text(version()),
        "current_schema" => V::text("public"),
        "current_schemas" => V::Array(vec![V::text("pg_catalog"), V::text("public")]),
        "current_database" => V::text("promflow"),
        "current_user" | "session_user" | "user" | "pg_get_userbyid" => V::text(ROLE),
        "pg_table_is_visible"
        | "pg_type_is_visible"
        | "has_table_privilege"
        | "has_schema_privilege"
        | "has_database_privilege" => V::Bool(true),
        "pg_relation_is_publishable" | "pg_is_in_recovery" => V::Bool(false),
        "pg_encoding_to_char" => V::text("UTF8"),
        "pg_get_expr"
        | "pg_get_constraintdef"
        | "pg_get_indexdef"
        | "pg_get_viewdef"
        | "obj_description"
        | "col_description"
        | "shobj_description"
        | "pg_get_statisticsobjdef_columns" => V::Null,
        // sizes are storage's, not a table's: unknown
        "pg_table_size" | "pg_relation_size" | "pg_total_relation_size" | "pg_database_size" => V::Null,
        "pg_size_pretty" => first.to_text().map_or(V::Null, V::Text),
        "format_type" => {
            let oid = first.number().unwrap_or(0.0) as i64;
            TYPES.iter().find(|t| t.0 == oid).map_or(V::Null, |t| V::text(t.2))
        }
        "array_to_string" => match (&first, args.get(1)) {
            (V::Array(items), Some(sep)) => {
                let sep = sep.to_text().unwrap_or_default();
                V::Text(items.iter().filter_map(V::to_text).collect::<Vec<_>>().join(&sep))
            }
            _ => V::Null,
        },
        "coalesce" => args.into_iter().find(|v| *v != V::Null).unwrap_or(V::Null),
        "lower" => first.to_text().map_or(V::Null, |s| V::Text(s.to_lowercase())),
        "upper" => first.to_text().map_or(V::Null, |s| V::Text(s.to_uppercase())),
        "quote_ident" => first.to_text().map_or(V::Null, |s| V::Text(quote_ident(&s))),
        "current_setting" => match first.to_text().as_deref() {
            Some("server_version") => V::text("15.0"),
            Some("server_version_num") => V::text("150000"),
            Some("search_path") => V::text("public"),
            Some(other) => {
                return Err(ExecError::Catalog(format!("unrecognized configuration parameter \"{other}\"")))
            }
            None => V::Null,
        },
        other => return Err(at(unsupported(format!("the function {other}()")), f.name.span())),
    })
}

/// An identifier quoted as PostgreSQL quotes it when it needs to be.
fn quote_ident(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}
