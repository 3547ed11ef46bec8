//! From SQL text to plans: parse with sqlparser, then lower the one `SELECT` to the engine's
//! plan IR (one plan per value the rows need) and the rows' shape.

use promflow_plan::Plan;
use promflow_plan::{
    AggOp, BinOp, Cardinality, Edges, Grouping, JoinKey, MapFn, Origin, TimeShift, VectorFn, WindowFn,
};
use promflow_storage::{MatchOp, Matcher};
use sqlparser::ast::{
    self, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause,
    OrderByKind, OrderBySort, SelectItem, SetExpr, Spanned, TableFactor, UnaryOperator,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Span, Token, Tokenizer};

use crate::Error;

/// A compiled statement.
#[derive(Debug)]
pub enum Statement {
    /// Run the query and answer its rows.
    Select(Query),
    /// Answer the query's plans as text (`EXPLAIN SELECT …`).
    Explain(Query),
    /// List the tables: the metric names (`SHOW TABLES`).
    ShowTables,
    /// List a table's columns (`DESCRIBE m`): the label names of its series, `ts`, `value`.
    Describe(String),
    /// A query over the catalogs (`pg_catalog`, `information_schema`) or of no table
    /// (`SELECT version()`), answered by the catalog interpreter.
    Catalog(Box<ast::Query>),
    /// A query of no table that calls none of PostgreSQL's catalog functions (`SELECT 1 / 3`,
    /// `SELECT now() - interval '1 hour'`): the relational engine answers it, the catalog
    /// interpreter what the engine cannot plan.
    Expression(Box<ast::Query>),
    /// A query with `WITH`, a join, or a subquery in `FROM`: each metric query in it (a CTE's
    /// or subquery's body, or a metric table with the `WHERE` conjuncts that are its own)
    /// is compiled to plans and run, and the interpreter joins and filters their rows.
    /// Holds the query and `now()`.
    Relational(Box<ast::Query>, i64),
    /// A query the plan IR does not express (filters on values, `OR`, `DISTINCT`, window
    /// functions, `CASE`, casts, set operations, …): planned and run by the relational engine
    /// (DataFusion) over the metrics as tables. Holds the text, and why it does not lower,
    /// which is the answer when the engine cannot plan it either.
    Engine {
        /// The statement's text.
        sql: String,
        /// The lowering's refusal.
        refused: Error,
        /// The plans of a statement the IR expresses but the engine answers as PostgreSQL
        /// does where the IR rounds otherwise (variances): they answer it when the engine
        /// cannot plan it (promflow's own forms, such as `ts` bounds in epoch seconds).
        lowered: Option<Box<Query>>,
    },
}

/// A query: the plans to evaluate, when, and how their results become rows.
#[derive(Clone, Debug)]
pub struct Query {
    /// The metric the query reads (its table).
    pub table: String,
    /// The plans, one per value source of the rows.
    pub parts: Vec<Part>,
    /// With `date_bin` in `GROUP BY`: the buckets' width and origin (milliseconds).
    pub bucket: Option<(i64, i64)>,
    /// The output columns as written (`*` is expanded with the result's label names).
    pub columns: Vec<Column>,
    /// `ORDER BY`: the output column and whether descending; rows sort by their label
    /// columns and `ts` when empty.
    pub order_by: Vec<(OrderKey, bool)>,
    /// `LIMIT`.
    pub limit: Option<usize>,
    /// `OFFSET`.
    pub offset: usize,
    /// Whether rows are groups (an aggregate or `GROUP BY`) rather than samples.
    pub grouped: bool,
    /// The `ts` bounds (inclusive, milliseconds): the plans are evaluated over the samples
    /// within them only, so a window that reaches past them (a cut bucket's) reads what the
    /// bounds leave of it.
    pub bounds: (i64, i64),
    /// Every label the statement names as a column (selected, grouped, ordered or in
    /// `WHERE`): each must be a column of the table, as PostgreSQL checks.
    pub labels: Vec<String>,
    /// The statement's text, when it was prepared to run: the relational engine answers it
    /// instead when the table holds native histograms, which the plan IR's rows lack.
    pub sql: String,
}

/// An `ORDER BY` item's output column. With `*` in the select list the columns are only known
/// from the result (its label names), so items are resolved against the expanded columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderKey {
    /// The output column of this name; with `*`, a label column no series has sorts as `NULL`
    /// everywhere, which is no order at all.
    Name(String),
    /// The output column at this position (0-based), counted after `*` is expanded.
    Position(usize),
}

/// One value source of a query's rows: an output column, or a `HAVING` condition.
#[derive(Clone, Debug)]
pub struct Part {
    /// The output column it computes, or the condition (a name, for `EXPLAIN`).
    pub name: String,
    /// The plans and when to evaluate each. One, at the upper `ts` bound, without time
    /// buckets; with them, one over a range of steps, one per bucket (the `ts` bounds cut the
    /// first and last buckets' windows: [`Query::bounds`]), except for what extrapolates to
    /// its window's edges (`rate`, …): then up to three, the first and last buckets on their
    /// own, with windows that end at the bounds, and the whole buckets between.
    pub segments: Vec<(Plan, Eval)>,
    /// Whether it counts rows: over no rows it is 0, where other aggregates are `NULL`.
    pub counts: bool,
    /// A `HAVING` condition: only the groups in its result are rows.
    pub filter: bool,
}

/// When a plan is evaluated (milliseconds): at `start` only when `start == end`, else at
/// every `step` from `start` to `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eval {
    /// First evaluation.
    pub start: i64,
    /// Last evaluation.
    pub end: i64,
    /// Between evaluations.
    pub step: i64,
}

/// An output column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// The name the client sees.
    pub name: String,
    /// Where its values come from.
    pub source: Source,
}

impl Column {
    /// A text column of a catalog answer (`SHOW TABLES`, `DESCRIBE`, `EXPLAIN`).
    pub(crate) fn text(name: &str) -> Column {
        Column { name: name.into(), source: Source::Label(name.into()) }
    }
}

/// Where a column's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A label's value (`NULL` where the series lacks it).
    Label(String),
    /// The sample's timestamp.
    Ts,
    /// The sample's value.
    Value,
    /// The result of [`Query::parts`]`[i]` for the row's group, of the given type.
    Part(usize, ColumnKind),
    /// The row's time bucket (`date_bin`): its start.
    Bucket,
    /// `*`: every label of the result, then `ts` and `value`.
    Star,
    /// A catalog answer's column, of the given type.
    Computed(ColumnKind),
}

/// A column's SQL type, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// `text`
    Text,
    /// `timestamp`
    Timestamp,
    /// `double`
    Double,
    /// `bigint` (catalog answers: oids, counts, positions)
    Integer,
    /// `boolean` (catalog answers)
    Boolean,
    /// `integer` (32 bits: PostgreSQL's type of an integer literal)
    Int4,
    /// `numeric`: exact decimals, as their text
    Numeric,
    /// `date`, as its text
    Date,
    /// `interval`, as its text
    Interval,
    /// `timestamp` without a time zone
    LocalTimestamp,
    /// `text[]`, as its text (`{a,b}`)
    TextArray,
    /// `bigint[]`, as its text
    IntegerArray,
    /// `double precision[]`, as its text
    DoubleArray,
    /// `jsonb`, as its text: a native histogram, as Prometheus's query API writes it
    Json,
}

impl ColumnKind {
    /// The type's name in API answers.
    pub fn name(self) -> &'static str {
        match self {
            ColumnKind::Text => "text",
            ColumnKind::Timestamp => "timestamp",
            ColumnKind::Double => "double",
            ColumnKind::Integer => "bigint",
            ColumnKind::Boolean => "boolean",
            ColumnKind::Int4 => "integer",
            ColumnKind::Numeric => "numeric",
            ColumnKind::Date => "date",
            ColumnKind::Interval => "interval",
            ColumnKind::LocalTimestamp => "timestamp without time zone",
            ColumnKind::TextArray => "text[]",
            ColumnKind::IntegerArray => "bigint[]",
            ColumnKind::DoubleArray => "double precision[]",
            ColumnKind::Json => "jsonb",
        }
    }

    /// Whether the type's values are integers (`bigint`, `integer`).
    pub fn is_integer(self) -> bool {
        matches!(self, ColumnKind::Integer | ColumnKind::Int4)
    }
}

impl Source {
    /// The column's type.
    pub fn kind(&self) -> ColumnKind {
        match self {
            Source::Label(_) | Source::Star => ColumnKind::Text,
            Source::Ts | Source::Bucket => ColumnKind::Timestamp,
            Source::Value => ColumnKind::Double,
            Source::Part(_, kind) => *kind,
            Source::Computed(kind) => *kind,
        }
    }
}

/// The label a column name stands for (`label_ts` and `label_value` for labels named like the
/// sample columns).
pub(crate) fn label_of_column(column: &str) -> &str {
    match column {
        "label_ts" => "ts",
        "label_value" => "value",
        "label_histogram" => "histogram",
        c => c,
    }
}

/// The column name of label `name`.
pub(crate) fn column_of_label(name: &str) -> String {
    match name {
        "ts" | "value" | "histogram" => format!("label_{name}"),
        n => n.to_string(),
    }
}

fn invalid(span: Span, message: impl Into<String>) -> Error {
    Error::Invalid { message: message.into(), line: span.start.line, column: span.start.column }
}

/// Operators one statement may have. Chained operators parse into a tree as deep as the
/// chain (`1+1+…+1`), and building, compiling, evaluating and dropping that tree recurse
/// once per level: the bound keeps every request within the stack. PostgreSQL's own
/// `max_stack_depth` stops such chains at a similar size.
pub const MAX_OPERATORS: usize = 4_000;
/// Parentheses (sub-expressions, calls, subqueries) one statement may nest.
pub const MAX_NESTING: usize = 200;

/// Operators a statement the relational engine plans may have. DataFusion's planner and
/// optimizer rewrite an expression tree rule by rule, pass by pass, at a cost that grows with
/// the square of a chain's length (2,000 chained operators took 5 s to plan in a debug build),
/// and planning cannot be interrupted by the statement's timeout. Longer statements are
/// interpreted where the interpreter answers them, and refused otherwise.
pub const MAX_ENGINE_OPERATORS: usize = 1_000;

/// Parses `sql` into statements, refusing text whose syntax tree would be deeper than
/// [`MAX_OPERATORS`] and [`MAX_NESTING`] allow, before any tree is built.
pub fn parse(sql: &str) -> Result<Vec<ast::Statement>, Error> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Error::Parse(e.to_string()))?;
    let (operators, deepest) = measure(tokens.iter().map(|t| &t.token));
    if deepest > MAX_NESTING {
        return Err(Error::TooComplex(format!(
            "statement nests {deepest} levels of parentheses; at most {MAX_NESTING} are allowed"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(Error::TooComplex(format!(
            "statement has {operators} operators; at most {MAX_OPERATORS} are allowed"
        )));
    }
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| Error::Parse(e.to_string()))?;
    let _ = ast::VisitMut::visit(&mut statements, &mut FoldIdentifiers);
    let _ = ast::visit_expressions_mut(&mut statements, |e| {
        whole_minutes(e);
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(statements)
}

/// The column an expression names, with or without its table (`ts`, `t.ts`).
pub(crate) fn column_named(e: &Expr) -> Option<&str> {
    match e {
        Expr::Identifier(id) => Some(&id.value),
        Expr::CompoundIdentifier(ids) => ids.last().map(|id| id.value.as_str()),
        _ => None,
    }
}

/// A timestamp written to the minute (`'2026-11-25 18:48'`), which PostgreSQL reads and the
/// front end's parsers (and Arrow's) refuse without seconds, with `:00` added where it is
/// read as a timestamp: `TIMESTAMP[TZ] '…'`, a cast to a timestamp, or a comparison with `ts`.
fn whole_minutes(e: &mut Expr) {
    fn pad(v: &mut ast::ValueWithSpan) {
        let ast::Value::SingleQuotedString(text) = &mut v.value else { return };
        // `YYYY-MM-DD HH:MM`, then a zone or nothing
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
        let minutes_end = if digits(11..13) && b.get(13) == Some(&b':') && digits(14..16) {
            16
        } else if digits(11..12) && b.get(12) == Some(&b':') && digits(13..15) {
            15
        } else {
            return;
        };
        let dated = digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10);
        let separated = matches!(b[10], b' ' | b'T');
        let zone_follows = b.get(minutes_end).is_none_or(|c| matches!(c, b'+' | b'-' | b'Z' | b' '));
        if dated && separated && zone_follows {
            text.insert_str(minutes_end, ":00");
            // an hour of one digit, which Arrow's parser refuses, written with two
            if minutes_end == 15 {
                text.insert(11, '0');
            }
        }
    }
    let timestamp = |t: &ast::DataType| matches!(t, ast::DataType::Timestamp(..));
    let is_ts = |x: &Expr| column_named(x) == Some("ts");
    let literal = |x: &mut Expr| {
        if let Expr::Value(v) = x {
            pad(v);
        }
    };
    match e {
        Expr::TypedString(t) if timestamp(&t.data_type) => pad(&mut t.value),
        Expr::Cast { expr, data_type, .. } if timestamp(data_type) => literal(expr),
        Expr::BinaryOp { left, right, .. } if is_ts(left) => literal(right),
        Expr::BinaryOp { left, right, .. } if is_ts(right) => literal(left),
        Expr::Between { expr, low, high, .. } if is_ts(expr) => {
            literal(low);
            literal(high);
        }
        Expr::In { expr, target: ast::InTarget::List(list), .. } if is_ts(expr) => {
            list.iter_mut().for_each(literal)
        }
        _ => {}
    }
}

/// Folds every unquoted identifier of a statement to lower case, as PostgreSQL does when it
/// reads one: columns, qualified columns, aliases, tables and common table expressions, so
/// `SELECT JOB FROM Cpu C WHERE C.Job = 'api'` names `job`, `cpu` and `c`. Quoted
/// identifiers keep their case. Function names are matched without regard to case anyway.
struct FoldIdentifiers;

fn fold(id: &mut ast::Ident) {
    if id.quote_style.is_none() {
        id.value = id.value.to_lowercase();
    }
}

fn fold_alias(alias: &mut Option<ast::TableAlias>) {
    if let Some(alias) = alias {
        fold(&mut alias.name);
        alias.columns.iter_mut().for_each(|c| fold(&mut c.name));
    }
}

impl ast::VisitorMut for FoldIdentifiers {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> std::ops::ControlFlow<()> {
        match e {
            Expr::Identifier(id) => fold(id),
            Expr::CompoundIdentifier(ids) => ids.iter_mut().for_each(fold),
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &mut ast::ObjectName) -> std::ops::ControlFlow<()> {
        for part in &mut name.0 {
            if let ast::ObjectNamePart::Identifier(id) = part {
                fold(id);
            }
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> std::ops::ControlFlow<()> {
        match f {
            TableFactor::Table { alias, .. }
            | TableFactor::Derived { alias, .. }
            | TableFactor::Function { alias, .. }
            | TableFactor::UNNEST { alias, .. } => fold_alias(alias),
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut ast::Select) -> std::ops::ControlFlow<()> {
        for item in &mut select.projection {
            if let SelectItem::ExprWithAlias { alias, .. } = item {
                fold(alias);
            }
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> std::ops::ControlFlow<()> {
        if let Some(with) = &mut query.with {
            for cte in &mut with.cte_tables {
                fold(&mut cte.alias.name);
                cte.alias.columns.iter_mut().for_each(|c| fold(&mut c.name));
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Refuses `sql` for the relational engine when it has more operators than
/// [`MAX_ENGINE_OPERATORS`]: PostgreSQL's SQLSTATE 54001, as for [`MAX_OPERATORS`].
#[cfg_attr(not(feature = "engine"), allow(dead_code))]
pub(crate) fn engine_may_plan(sql: &str) -> Result<(), Error> {
    let tokens =
        Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().map_err(|e| Error::Parse(e.to_string()))?;
    let (operators, _) = measure(tokens.iter());
    if operators > MAX_ENGINE_OPERATORS {
        return Err(Error::TooComplex(format!(
            "statement has {operators} operators; at most {MAX_ENGINE_OPERATORS} are allowed in a statement the relational engine plans"
        )));
    }
    Ok(())
}

/// The operators of a statement's tokens, and how deep its parentheses nest.
fn measure<'t>(tokens: impl Iterator<Item = &'t Token>) -> (usize, usize) {
    let (mut operators, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    for token in tokens {
        match token {
            Token::LParen | Token::LBracket => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Whitespace(_) | Token::Comma | Token::Number(..) | Token::SingleQuotedString(_) => {}
            Token::Word(w) => {
                use sqlparser::keywords::Keyword as K;
                if matches!(
                    w.keyword,
                    K::AND | K::OR | K::NOT | K::IS | K::LIKE | K::ILIKE | K::BETWEEN | K::IN
                ) {
                    operators += 1;
                }
            }
            _ => operators += 1,
        }
    }
    (operators, deepest)
}

/// The stack SQL is compiled and evaluated on. Syntax trees are walked recursively, one
/// frame or more per level, and [`MAX_OPERATORS`] levels need more than a thread's own stack
/// in an unoptimised build; the memory is reserved, and only what a statement uses is touched.
const SQL_STACK: usize = 256 << 20;

/// Runs `f` on a stack of its own, [`SQL_STACK`] bytes.
pub(crate) fn on_deep_stack<T>(f: impl FnOnce() -> T) -> T {
    stacker::grow(SQL_STACK, f)
}

/// Compiles `sql` with `now_ms` as `now()`.
pub fn compile(sql: &str, now_ms: i64) -> Result<Statement, Error> {
    on_deep_stack(|| compile_here(sql, now_ms))
}

/// Compiles `sql` as [`compile`] does, for running: a query the plan IR does not express is a
/// [`Statement::Engine`] for the relational engine instead of an error.
pub fn prepare(sql: &str, now_ms: i64) -> Result<Statement, Error> {
    match compile(sql, now_ms) {
        Err(refused @ Error::Invalid { .. }) => {
            Ok(Statement::Engine { sql: sql.to_string(), refused, lowered: None })
        }
        #[cfg(feature = "engine")]
        Ok(Statement::Select(query)) if computes_moments(sql) => Ok(Statement::Engine {
            sql: sql.to_string(),
            refused: Error::Invalid {
                message: "the relational engine cannot plan it".into(),
                line: 0,
                column: 0,
            },
            lowered: Some(Box::new(query)),
        }),
        Ok(Statement::Select(mut query)) => {
            run_once(&mut query);
            query.sql = sql.to_string();
            Ok(Statement::Select(query))
        }
        Ok(Statement::Explain(mut query)) => {
            run_once(&mut query);
            Ok(Statement::Explain(query))
        }
        other => other,
    }
}

/// `query`'s plans for running it once rather than maintaining it: sums and averages of its
/// rows as PostgreSQL adds them ([`sum_rows_in_order`]).
pub(crate) fn run_once(query: &mut Query) {
    for part in &mut query.parts {
        for (plan, _) in &mut part.segments {
            sum_rows_in_order(plan);
        }
    }
}

/// A query run once sums and averages its rows as PostgreSQL does, whose answer a client can
/// compare to the last digit: one running sum of the group's samples, series after series
/// and each in time order, the order of a table's rows (the IR's `AggregateSamples`). The
/// plan as compiled sums each series' samples, compensated, then the series: PromQL's
/// `sum(sum_over_time(…))`, which a standing query maintains incrementally.
fn sum_rows_in_order(plan: &mut Plan) {
    /// The window of `sum by (…) (<func>(window))`, and its grouping.
    fn summed(plan: &Plan, func: WindowFn) -> Option<(&Grouping, &Plan)> {
        let Plan::Aggregate { op: AggOp::Sum, grouping, input, .. } = plan else { return None };
        match input.as_ref() {
            Plan::WindowFunction { func: f, input: window, args, .. } if *f == func && args.is_empty() => {
                Some((grouping, window.as_ref()))
            }
            _ => None,
        }
    }
    let rows = |op, grouping: &Grouping, window: &Plan| Plan::AggregateSamples {
        op,
        grouping: grouping.clone(),
        param: 0.0,
        descending: false,
        input: Box::new(window.clone()),
    };
    if let Some((grouping, window)) = summed(plan, WindowFn::SumOverTime) {
        *plan = rows(AggOp::Sum, grouping, window);
        return;
    }
    // `avg`: the sum divided by the count, over one window
    if let Plan::Join { op: BinOp::Div, lhs, rhs, .. } = plan {
        if let (Some((grouping, window)), Some((_, counted))) =
            (summed(lhs, WindowFn::SumOverTime), summed(rhs, WindowFn::CountOverTime))
        {
            if window == counted {
                *plan = rows(AggOp::Avg, grouping, window);
                return;
            }
        }
    }
    for input in plan.children_mut() {
        sum_rows_in_order(input);
    }
}

/// Whether `sql` takes a variance or standard deviation, divides or multiplies. The plan IR
/// merges each series' moments, which rounds otherwise than PostgreSQL's accumulation of the
/// rows in order, and its division by zero and overflow are infinite where PostgreSQL's are
/// errors (22012, 22003); a query run once takes the relational engine's, which is
/// PostgreSQL's. (A standing query
/// keeps the IR's, which is maintained incrementally.)
#[cfg(feature = "engine")]
fn computes_moments(sql: &str) -> bool {
    let Ok(statements) = parse(sql) else { return false };
    let found = ast::visit_expressions(&statements, |e| match e {
        Expr::BinaryOp {
            op: BinaryOperator::Divide | BinaryOperator::Modulo | BinaryOperator::Multiply,
            ..
        } => std::ops::ControlFlow::Break(()),
        Expr::Function(f)
            if f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                matches!(
                    i.value.to_ascii_lowercase().as_str(),
                    "stddev" | "stddev_samp" | "stddev_pop" | "variance" | "var_samp" | "var_pop"
                )
            }) =>
        {
            std::ops::ControlFlow::Break(())
        }
        _ => std::ops::ControlFlow::Continue(()),
    });
    found.is_break()
}

/// [`compile`] on the caller's stack.
fn compile_here(sql: &str, now_ms: i64) -> Result<Statement, Error> {
    let statements = parse(sql)?;
    let [statement] = statements.as_slice() else {
        return Err(Error::Parse(format!("expected one statement, found {}", statements.len())));
    };
    match statement {
        ast::Statement::Query(q) if crate::catalog::reads_catalog(q) => {
            if crate::catalog::reads_catalog_tables(q) || crate::catalog::calls_catalog_function(q) {
                Ok(Statement::Catalog(q.clone()))
            } else {
                Ok(Statement::Expression(q.clone()))
            }
        }
        ast::Statement::Query(q) if is_relational(q) => Ok(Statement::Relational(q.clone(), now_ms)),
        ast::Statement::Query(q) => Ok(Statement::Select(lower_query(q, now_ms)?)),
        ast::Statement::Explain { statement, analyze: false, .. } => match statement.as_ref() {
            ast::Statement::Query(q) => Ok(Statement::Explain(lower_query(q, now_ms)?)),
            other => Err(invalid(other.span(), "EXPLAIN takes a SELECT")),
        },
        ast::Statement::ShowTables { .. } => Ok(Statement::ShowTables),
        // `SHOW server_version`: the setting as `current_setting` answers it, in a column of
        // its name, as PostgreSQL does
        ast::Statement::ShowVariable { variable } => {
            let name: Vec<String> = variable.iter().map(folded).collect();
            let name = name.join(".");
            // the column is named by the setting's canonical name, as in PostgreSQL
            let column =
                crate::catalog::setting(&name).map_or(name.clone(), |(canonical, _)| canonical.to_string());
            let sql = format!(
                "SELECT current_setting('{}') AS \"{}\"",
                name.replace('\'', "''"),
                column.replace('"', "\"\"")
            );
            match parse(&sql)?.pop() {
                Some(ast::Statement::Query(q)) => Ok(Statement::Catalog(q)),
                _ => Err(invalid(statement.span(), "SHOW takes a setting's name")),
            }
        }
        ast::Statement::ExplainTable { table_name, .. } => {
            match table_name.0.last().and_then(|p| p.as_ident()) {
                Some(id) => Ok(Statement::Describe(id.value.clone())),
                None => Err(invalid(table_name.span(), "DESCRIBE takes a metric name")),
            }
        }
        other => Err(invalid(other.span(), "only SELECT, EXPLAIN SELECT, SHOW and DESCRIBE are supported")),
    }
}

/// Whether `q` needs the relational interpreter: `WITH`, a join, several `FROM` items, or a
/// subquery in `FROM` (a single metric's query compiles to plans alone).
pub(crate) fn is_relational(q: &ast::Query) -> bool {
    q.with.is_some()
        || matches!(q.body.as_ref(), SetExpr::Select(s) if s.from.len() > 1
            || s.from.iter().any(|t| !t.joins.is_empty() || matches!(t.relation, TableFactor::Derived { .. })))
}

/// A `WHERE` conjunct of a relational query as a predicate of the metric table `alias`
/// alone (`a.job = 'x'` → `job = 'x'`), when it reads only that table's columns, through
/// its alias, and a single metric's query takes it (labels and `ts` bounds): such a conjunct
/// is applied where the table's rows are read instead of after the join.
pub(crate) fn own_predicate(e: &Expr, alias: &str, now: i64) -> Option<Expr> {
    fn strip(e: &Expr, alias: &str, columns: &mut usize) -> Option<Expr> {
        // each sub-expression in place, in a copy of `e`
        let mut out = e.clone();
        let mut each = |x: &mut Expr| -> Option<()> {
            *x = strip(x, alias, columns)?;
            Some(())
        };
        match &mut out {
            Expr::CompoundIdentifier(ids) => match ids.as_slice() {
                [q, c] if q.value == alias => {
                    *columns += 1;
                    return Some(Expr::Identifier(c.clone()));
                }
                _ => return None,
            },
            Expr::BinaryOp { left, right, .. } => {
                each(left)?;
                each(right)?;
            }
            Expr::Between { expr, low, high, .. } => {
                each(expr)?;
                each(low)?;
                each(high)?;
            }
            Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
                each(expr)?;
                each(pattern)?;
            }
            Expr::In { expr, target: ast::InTarget::List(list), .. } => {
                each(expr)?;
                for x in list.iter_mut() {
                    each(x)?;
                }
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) | Expr::Nested(x) | Expr::UnaryOp { expr: x, .. } => {
                each(x)?
            }
            // literals and now(): no column in them
            Expr::Value(_) | Expr::TypedString(_) | Expr::Interval(_) => {}
            Expr::Function(f) if is_named(f, "now") || is_named(f, "current_timestamp") => {}
            _ => return None,
        }
        Some(out)
    }
    let mut columns = 0;
    let own = strip(e, alias, &mut columns).filter(|_| columns > 0)?;
    let mut bounds = Bounds { lo: 0, hi: now, lo_given: false };
    predicate(&own, &mut Vec::new(), &mut bounds, now).ok().map(|_| own)
}

/// The `ts` bounds of a query, inclusive, in milliseconds.
struct Bounds {
    lo: i64,
    hi: i64,
    /// Whether a predicate set `lo`.
    lo_given: bool,
}

/// The most buckets a query may have (Prometheus's limit on a range query's points).
const MAX_BUCKETS: i64 = 11_000;

/// What a query reads: the selection's matchers and the `ts` bounds; builds its windows.
struct Selection {
    matchers: Vec<Matcher>,
    bounds: Bounds,
}

impl Selection {
    /// The range selection of the samples in `[lo, hi]`, evaluated at `hi`.
    fn window(&self, lo: i64, hi: i64) -> Plan {
        Plan::Window {
            matchers: self.matchers.clone(),
            range_ms: hi - lo + 1,
            shift: TimeShift::default(),
            edges: Edges::Plain,
        }
    }

    /// The plans of an aggregate (`make` builds one over a window) and when to evaluate
    /// them: once over the bounds, or per time bucket (the cut first and last buckets on
    /// their own, the whole ones between as a range of steps).
    fn segments(&self, bucket: Option<(i64, i64)>, make: &dyn Fn(Plan) -> Plan) -> Vec<(Plan, Eval)> {
        let Bounds { lo, hi, .. } = self.bounds;
        let at = |t| Eval { start: t, end: t, step: 1 };
        let Some((width, origin)) = bucket else {
            return vec![(make(self.window(lo, hi)), at(hi))];
        };
        let first = bin(lo, width, origin);
        let last = bin(hi, width, origin);
        if first == last {
            return vec![(make(self.window(lo, hi)), at(hi))];
        }
        let whole = make(self.window(0, width - 1));
        if !reads_window_edges(&whole) {
            // every bucket's whole window, evaluated over the samples within the bounds only
            return vec![(whole, Eval { start: first + width - 1, end: last + width - 1, step: width })];
        }
        let mut out = vec![(make(self.window(lo, first + width - 1)), at(first + width - 1))];
        if last - first > width {
            let eval = Eval { start: first + 2 * width - 1, end: last - 1, step: width };
            out.push((whole, eval));
        }
        out.push((make(self.window(last, hi)), at(hi)));
        out
    }
}

/// Whether a plan's value depends on where its windows start and end, not only on the
/// samples in them: the functions that extrapolate to a window's edges, and
/// `predict_linear`, which predicts from the evaluation's time.
fn reads_window_edges(plan: &Plan) -> bool {
    use promflow_plan::WindowFn::{Delta, Increase, PredictLinear, Rate};
    matches!(plan, Plan::WindowFunction { func: Rate | Increase | Delta | PredictLinear, .. })
        || plan.children().into_iter().any(reads_window_edges)
}

/// The start of the bucket of `t` (`date_bin`).
pub(crate) fn bin(t: i64, width: i64, origin: i64) -> i64 {
    origin + (t - origin).div_euclid(width) * width
}

pub(crate) fn lower_query(q: &ast::Query, now: i64) -> Result<Query, Error> {
    if let Some(with) = &q.with {
        return Err(invalid(with.span(), "EXPLAIN of a query with WITH is not supported yet"));
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Err(invalid(q.body.span(), "only a plain SELECT is supported yet (no UNION, VALUES)"));
    };
    if let Some(d) = &select.distinct {
        return Err(invalid(select.span(), format!("{d} is not supported yet")));
    }
    let metric = table(select)?;
    let mut sel = Selection {
        matchers: vec![matcher(MatchOp::Equal, "__name__", &metric, select.span())?],
        bounds: Bounds { lo: 0, hi: now, lo_given: false },
    };
    if let Some(w) = &select.selection {
        for c in conjuncts(w) {
            predicate(c, &mut sel.matchers, &mut sel.bounds, now)?;
        }
    }
    if sel.bounds.lo > sel.bounds.hi {
        // no sample can satisfy the bounds; keep a valid one-millisecond window with none
        sel.bounds.lo = sel.bounds.hi;
        sel.matchers.push(matcher(MatchOp::Equal, "__name__", "", select.span())?);
    }
    // GROUP BY: label columns, and at most one time bucket
    let mut bucket: Option<(i64, i64)> = None;
    let mut groups = Vec::new();
    let group_exprs = match &select.group_by {
        GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => exprs.as_slice(),
        g => return Err(invalid(select.span(), format!("{g} is not supported"))),
    };
    for e in group_exprs {
        // a position or an alias stands for the select list's expression
        let e = match e {
            Expr::Value(_) if numeral(e).is_some() => numeral(e)
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|i| select.projection.get(i.wrapping_sub(1)))
                .and_then(select_expr)
                .ok_or_else(|| {
                    invalid(e.span(), format!("GROUP BY position {e} is not in the select list"))
                })?,
            Expr::Identifier(id) => select
                .projection
                .iter()
                .find_map(|item| match item {
                    SelectItem::ExprWithAlias { expr: x @ Expr::Function(_), alias }
                        if alias.value == id.value =>
                    {
                        Some(x)
                    }
                    _ => None,
                })
                .unwrap_or(e),
            e => e,
        };
        if let Some(label) = label_column(e) {
            groups.push(label);
            continue;
        }
        match e {
            Expr::Function(f) if is_named(f, "date_bin") => {
                let b = date_bin(f, now)?;
                if bucket.is_some_and(|x| x != b) {
                    return Err(invalid(f.span(), "one date_bin per query"));
                }
                bucket = Some(b);
            }
            e => {
                return Err(invalid(
                    e.span(),
                    "GROUP BY takes label columns and date_bin(…, ts) (no ts, value or other expressions)",
                ))
            }
        }
    }
    if let Some((width, origin)) = bucket {
        if !sel.bounds.lo_given {
            return Err(invalid(
                select.span(),
                "time buckets need a lower bound on ts (for example ts > now() - INTERVAL '1 hour')",
            ));
        }
        let n = (bin(sel.bounds.hi, width, origin) - bin(sel.bounds.lo, width, origin)) / width + 1;
        if n > MAX_BUCKETS {
            return Err(invalid(
                select.span(),
                format!(
                    "{n} time buckets, more than {MAX_BUCKETS}: widen the buckets or narrow the ts bounds"
                ),
            ));
        }
    }
    let mut parts = Vec::new();
    let mut columns = Vec::new();
    let grouped = !group_exprs.is_empty() || select.projection.iter().any(is_aggregate);
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::Wildcard(_) if !grouped => {
                columns.push(Column { name: "*".into(), source: Source::Star });
                continue;
            }
            other => return Err(invalid(other.span(), "this select item is not supported with GROUP BY")),
        };
        let column = match expr {
            Expr::Identifier(id) => {
                let source = match id.value.as_str() {
                    "ts" => Source::Ts,
                    "value" => Source::Value,
                    c => Source::Label(label_of_column(c).to_string()),
                };
                if grouped && !matches!(&source, Source::Label(l) if groups.contains(l)) {
                    return Err(invalid(
                        id.span,
                        format!(
                            "column \"{}\" must appear in the GROUP BY clause or be used in an aggregate",
                            id.value
                        ),
                    ));
                }
                Column { name: alias.unwrap_or_else(|| id.value.clone()), source }
            }
            Expr::Function(f) if is_named(f, "date_bin") => {
                if bucket != Some(date_bin(f, now)?) {
                    return Err(invalid(f.span(), "date_bin(…) must appear in the GROUP BY clause"));
                }
                Column { name: alias.unwrap_or_else(|| "date_bin".into()), source: Source::Bucket }
            }
            e if grouped => {
                let (name, make, counts) = value_expr(e, &groups)?;
                let segments = sel.segments(bucket, &make);
                parts.push(Part {
                    name: alias.clone().unwrap_or_else(|| name.clone()),
                    segments,
                    counts,
                    filter: false,
                });
                // a count is PostgreSQL's bigint; every other aggregate a double
                let kind = if counts || integer_valued(e) { ColumnKind::Integer } else { ColumnKind::Double };
                Column { name: alias.unwrap_or(name), source: Source::Part(parts.len() - 1, kind) }
            }
            e => {
                return Err(invalid(
                    e.span(),
                    "only columns, date_bin, aggregates and arithmetic over aggregates can be selected yet",
                ))
            }
        };
        columns.push(column);
    }
    if let Some(h) = &select.having {
        for c in conjuncts(h) {
            let (name, make) = having(c, &groups)?;
            let segments = sel.segments(bucket, &make);
            parts.push(Part { name, segments, counts: false, filter: true });
        }
    }
    if grouped && parts.is_empty() {
        // the groups come from the aggregates' results: with none, there would be no rows
        return Err(invalid(select.span(), "GROUP BY without an aggregate is not supported yet"));
    }
    if !grouped {
        let Bounds { lo, hi, .. } = sel.bounds;
        let eval = Eval { start: hi, end: hi, step: 1 };
        parts.push(Part {
            name: "samples".into(),
            segments: vec![(sel.window(lo, hi), eval)],
            counts: false,
            filter: false,
        });
    }
    let order_by = match &q.order_by {
        None => Vec::new(),
        Some(o) => match &o.kind {
            OrderByKind::Expressions(exprs) => exprs
                .iter()
                .map(|e| {
                    let desc = match &e.options.sort {
                        None | Some(OrderBySort::Asc) => false,
                        Some(OrderBySort::Desc) => true,
                        Some(OrderBySort::Using(_)) => {
                            return Err(invalid(e.expr.span(), "ORDER BY … USING is not supported"))
                        }
                    };
                    if e.options.nulls_first.is_some() {
                        return Err(invalid(e.expr.span(), "NULLS FIRST/LAST is not supported yet"));
                    }
                    Ok((order_column(&e.expr, &columns)?, desc))
                })
                .collect::<Result<Vec<_>, _>>()?,
            OrderByKind::All(_) => return Err(invalid(q.span(), "ORDER BY ALL is not supported")),
        },
    };
    let (limit, offset) = match &q.limit_clause {
        None => (None, 0),
        Some(LimitClause::LimitOffset { limit, offset, limit_by }) if limit_by.is_empty() => (
            limit.as_ref().map(count).transpose()?,
            offset.as_ref().map(|o| count(&o.value)).transpose()?.unwrap_or(0),
        ),
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => (Some(count(limit)?), count(offset)?),
        Some(l) => return Err(invalid(q.span(), format!("{l} is not supported"))),
    };
    if let Some(fetch) = &q.fetch {
        return Err(invalid(q.span(), format!("{fetch} is not supported by the plan IR")));
    }
    let bounds = (sel.bounds.lo, sel.bounds.hi);
    let mut labels: Vec<String> = sel.matchers.iter().map(|m| m.name.to_string()).collect();
    labels.extend(groups.iter().cloned());
    labels.extend(columns.iter().filter_map(|c| match &c.source {
        Source::Label(l) => Some(l.clone()),
        _ => None,
    }));
    labels.retain(|l| l != "__name__");
    labels.sort();
    labels.dedup();
    Ok(Query {
        table: metric,
        parts,
        bucket,
        columns,
        order_by,
        limit,
        offset,
        grouped,
        bounds,
        labels,
        sql: String::new(),
    })
}

/// The expression of a select item.
fn select_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// `date_bin(INTERVAL '…', ts[, origin])`: the buckets' width and origin (default the epoch).
fn date_bin(f: &ast::Function, now: i64) -> Result<(i64, i64), Error> {
    let args = match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect::<Option<Vec<_>>>(),
        _ => None,
    };
    let usage = || invalid(f.span(), "date_bin takes (INTERVAL '…', ts[, origin])");
    let args = args.ok_or_else(usage)?;
    let (width, origin) = match args.as_slice() {
        [width, ts] if is_ts(ts) => (interval(width)?, 0),
        [width, ts, origin] if is_ts(ts) => (interval(width)?, time(origin, now)?),
        _ => return Err(usage()),
    };
    if width <= 0 {
        return Err(invalid(f.span(), "date_bin's interval must be positive"));
    }
    Ok((width, origin))
}

/// A `HAVING` conjunct, `aggregate <comparison> number`: its name and its plan (the
/// aggregate's, filtered by the comparison, as PromQL's `… > 10` filters).
fn having(e: &Expr, groups: &[String]) -> Result<(String, MakePlan), Error> {
    let usage = || {
        invalid(
            e.span(),
            "HAVING takes comparisons of aggregates (or arithmetic over them) with numbers or with each other, joined by AND",
        )
    };
    let Expr::BinaryOp { left, op, right } = e else { return Err(usage()) };
    let comparison = |op: &BinaryOperator| {
        Some(match op {
            BinaryOperator::Eq => BinOp::Eq,
            BinaryOperator::NotEq => BinOp::Ne,
            BinaryOperator::Gt => BinOp::Gt,
            BinaryOperator::Lt => BinOp::Lt,
            BinaryOperator::GtEq => BinOp::Ge,
            BinaryOperator::LtEq => BinOp::Le,
            _ => return None,
        })
    };
    // a number on the left is flipped to the right: the filter keeps the aggregate's value
    let against_number = match (number(left), number(right)) {
        (Some(_), Some(_)) => return Err(usage()),
        (None, Some(n)) => Some((left, op.clone(), n)),
        (Some(n), None) => Some((right, flip(op), n)),
        (None, None) => None,
    };
    let filter: MakePlan = match against_number {
        Some((side, op, n)) => {
            let op = comparison(&op).ok_or_else(usage)?;
            let (_, make, _) = value_expr(side, groups)?;
            Box::new(move |w| with_number(op, make(w), n))
        }
        None => {
            let op = comparison(op).ok_or_else(usage)?;
            let ((_, l, _), (_, r, _)) = (value_expr(left, groups)?, value_expr(right, groups)?);
            Box::new(move |w: Plan| one_to_one(op, l(w.clone()), r(w)))
        }
    };
    Ok((format!("HAVING {e}"), filter))
}

/// The text of a numeric literal.
fn numeral(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

/// A numeric literal, possibly negated.
fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Value(_) => numeral(e)?.parse().ok(),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => number(expr).map(|n| -n),
        Expr::Nested(inner) => number(inner),
        _ => None,
    }
}

/// The metric a `SELECT` reads: its one table, in the schema `public`.
fn table(select: &ast::Select) -> Result<String, Error> {
    let [from] = select.from.as_slice() else {
        return Err(invalid(
            select.span(),
            "a query reads exactly one metric yet (no joins, no FROM-less SELECT)",
        ));
    };
    if let Some(j) = from.joins.first() {
        return Err(invalid(j.relation.span(), "JOIN is not supported yet"));
    }
    match &from.relation {
        TableFactor::Table { name, args: None, alias: None, .. } => {
            let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident()).map(folded).collect();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            match parts.as_slice() {
                [metric] | ["public", metric] => Ok(metric.to_string()),
                [schema, _] => Err(invalid(
                    name.span(),
                    format!("schema \"{schema}\" is not supported yet (the metrics are in \"public\")"),
                )),
                _ => Err(invalid(name.span(), "a metric name, optionally public.<metric>")),
            }
        }
        other => Err(invalid(other.span(), "FROM takes a metric name (no aliases or subqueries yet)")),
    }
}

/// An identifier as PostgreSQL reads it: folded to lower case unless quoted, so `FROM UP`
/// reads the metric `up`, and a metric with capitals is written `FROM "Up"`.
pub(crate) fn folded(id: &ast::Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_lowercase(),
    }
}

pub(crate) fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        Expr::Nested(inner) => conjuncts(inner),
        e => vec![e],
    }
}

fn matcher(op: MatchOp, name: &str, value: &str, span: Span) -> Result<Matcher, Error> {
    Matcher::new(op, name, value).map_err(|e| invalid(span, format!("invalid pattern: {e}")))
}

/// A regex source matching exactly `s`.
fn quote_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The anchored regex of a LIKE pattern (`%` any run, `_` any one character, `\` escapes).
fn like_regex(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => out.push_str(&quote_regex(&chars.next().map(String::from).unwrap_or_default())),
            c => out.push_str(&quote_regex(&c.to_string())),
        }
    }
    out
}

fn string(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// The label a predicate's left side names (not `ts` or `value`).
fn label_column(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) if !matches!(id.value.as_str(), "ts" | "value") => {
            Some(label_of_column(&id.value).to_string())
        }
        _ => None,
    }
}

/// Adds one conjunct of `WHERE`: label matchers, or `ts` bounds.
fn predicate(e: &Expr, matchers: &mut Vec<Matcher>, bounds: &mut Bounds, now: i64) -> Result<(), Error> {
    let span = e.span();
    // SQL's NULL never compares: a label predicate also requires the label
    let with_label = |m: Matcher, matchers: &mut Vec<Matcher>| -> Result<(), Error> {
        let present = matcher(MatchOp::NotEqual, &m.name, "", span)?;
        matchers.push(m);
        matchers.push(present);
        Ok(())
    };
    match e {
        Expr::BinaryOp { left, op, right } if is_ts(left) || is_ts(right) => {
            let (op, other) = if is_ts(left) { (op.clone(), right) } else { (flip(op), left) };
            // samples are in whole milliseconds, a bound may fall between two
            let (floor, ceil) = millis(time_micros(other, now)?);
            match op {
                BinaryOperator::Gt => {
                    bounds.lo = bounds.lo.max(floor + 1);
                    bounds.lo_given = true;
                }
                BinaryOperator::GtEq => {
                    bounds.lo = bounds.lo.max(ceil);
                    bounds.lo_given = true;
                }
                BinaryOperator::Lt => bounds.hi = bounds.hi.min(ceil - 1),
                BinaryOperator::LtEq => bounds.hi = bounds.hi.min(floor),
                BinaryOperator::Eq => {
                    bounds.lo = bounds.lo.max(ceil);
                    bounds.lo_given = true;
                    bounds.hi = bounds.hi.min(floor);
                }
                op => {
                    return Err(invalid(
                        span,
                        format!("ts {op} is not supported (use <, <=, >, >=, = or BETWEEN)"),
                    ))
                }
            }
            Ok(())
        }
        Expr::Between { expr, negated: false, low, high } if is_ts(expr) => {
            bounds.lo = bounds.lo.max(millis(time_micros(low, now)?).1);
            bounds.lo_given = true;
            bounds.hi = bounds.hi.min(millis(time_micros(high, now)?).0);
            Ok(())
        }
        Expr::BinaryOp { left, op, right } => {
            let (Some(label), Some(v)) = (label_column(left), string(right)) else {
                return Err(invalid(
                    span,
                    "WHERE takes label predicates (a label column against a string) and ts bounds, joined by AND",
                ));
            };
            let m = match op {
                BinaryOperator::Eq => matcher(MatchOp::Equal, &label, v, span)?,
                BinaryOperator::NotEq => matcher(MatchOp::NotEqual, &label, v, span)?,
                // PostgreSQL's regex operators search; label matchers are anchored
                BinaryOperator::PGRegexMatch => {
                    matcher(MatchOp::Regex, &label, &format!(".*(?:{v}).*"), span)?
                }
                BinaryOperator::PGRegexIMatch => {
                    matcher(MatchOp::Regex, &label, &format!("(?i).*(?:{v}).*"), span)?
                }
                BinaryOperator::PGRegexNotMatch => {
                    matcher(MatchOp::NotRegex, &label, &format!(".*(?:{v}).*"), span)?
                }
                BinaryOperator::PGRegexNotIMatch => {
                    matcher(MatchOp::NotRegex, &label, &format!("(?i).*(?:{v}).*"), span)?
                }
                op => return Err(invalid(span, format!("{op} on a label is not supported"))),
            };
            with_label(m, matchers)
        }
        Expr::Like { negated, any: false, expr, pattern, escape_char: None }
        | Expr::ILike { negated, any: false, expr, pattern, escape_char: None } => {
            let (Some(label), Some(p)) = (label_column(expr), string(pattern)) else {
                return Err(invalid(span, "LIKE takes a label column and a string pattern"));
            };
            let case = if matches!(e, Expr::ILike { .. }) { "(?i)" } else { "" };
            let op = if *negated { MatchOp::NotRegex } else { MatchOp::Regex };
            with_label(matcher(op, &label, &format!("{case}{}", like_regex(p)), span)?, matchers)
        }
        Expr::In { expr, target: ast::InTarget::List(list), negated, .. } => {
            let Some(label) = label_column(expr) else {
                return Err(invalid(span, "IN takes a label column"));
            };
            let values = list
                .iter()
                .map(|v| string(v).map(quote_regex).ok_or_else(|| invalid(v.span(), "IN takes strings")))
                .collect::<Result<Vec<_>, _>>()?;
            let op = if *negated { MatchOp::NotRegex } else { MatchOp::Regex };
            with_label(matcher(op, &label, &values.join("|"), span)?, matchers)
        }
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            let Some(label) = label_column(inner) else {
                return Err(invalid(span, "IS NULL takes a label column (ts and value are never NULL)"));
            };
            let op = if matches!(e, Expr::IsNull(_)) { MatchOp::Equal } else { MatchOp::NotEqual };
            matchers.push(matcher(op, &label, "", span)?);
            Ok(())
        }
        Expr::Nested(inner) => predicate(inner, matchers, bounds, now),
        _ => Err(invalid(
            span,
            "WHERE takes label predicates (=, <>, LIKE, ~, IN, IS NULL) and ts bounds, joined by AND",
        )),
    }
}

fn is_ts(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(id) if id.value == "ts")
}

/// Microseconds as whole milliseconds, rounded down and up.
fn millis(micros: i64) -> (i64, i64) {
    let floor = micros.div_euclid(1000);
    (floor, if micros.rem_euclid(1000) == 0 { floor } else { floor + 1 })
}

/// The comparison with its sides swapped (`5 < ts` is `ts > 5`).
fn flip(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        op => op.clone(),
    }
}

/// A point in time in milliseconds (rounded down): see [`time_micros`].
fn time(e: &Expr, now: i64) -> Result<i64, Error> {
    Ok(time_micros(e, now)?.div_euclid(1000))
}

/// A point in time in microseconds, PostgreSQL's precision: `now()`, `now() ± INTERVAL '…'`,
/// a timestamp string (RFC 3339, or `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC) or a number of
/// seconds since the epoch. (`now` is in milliseconds.)
fn time_micros(e: &Expr, now: i64) -> Result<i64, Error> {
    match e {
        Expr::Function(f) if is_named(f, "now") || is_named(f, "current_timestamp") => Ok(now * 1000),
        Expr::BinaryOp { left, op: op @ (BinaryOperator::Minus | BinaryOperator::Plus), right } => {
            let base = time_micros(left, now)?;
            let d = interval(right)? * 1000;
            Ok(if *op == BinaryOperator::Minus { base - d } else { base + d })
        }
        Expr::Nested(inner) => time_micros(inner, now),
        Expr::TypedString(ts) => match &ts.value.value {
            ast::Value::SingleQuotedString(s) => timestamp(s, e.span()),
            _ => Err(invalid(e.span(), "a timestamp string")),
        },
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => timestamp(s, e.span()),
            ast::Value::Number(n, _) => n
                .parse::<f64>()
                .map(|s| (s * 1e6).round() as i64)
                .map_err(|_| invalid(e.span(), "a number of seconds")),
            _ => Err(invalid(e.span(), "a time: now(), a timestamp string or epoch seconds")),
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => time_micros(expr, now).map(|t| -t),
        _ => {
            Err(invalid(e.span(), "a time: now(), now() - INTERVAL '…', a timestamp string or epoch seconds"))
        }
    }
}

/// A timestamp string in microseconds.
fn timestamp(s: &str, span: Span) -> Result<i64, Error> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_micros()));
    }
    Err(invalid(
        span,
        format!("cannot read \"{s}\" as a timestamp (RFC 3339, or YYYY-MM-DD HH:MM:SS in UTC)"),
    ))
}

/// An interval's length in milliseconds: `INTERVAL '5 minutes'`, `INTERVAL '1 hour 30
/// minutes'`, `INTERVAL '5' MINUTE`.
fn interval(e: &Expr) -> Result<i64, Error> {
    let Expr::Interval(i) = e else {
        return Err(invalid(e.span(), "an INTERVAL"));
    };
    let Some(text) = string(&i.value) else {
        return Err(invalid(i.value.span(), "an interval string"));
    };
    let text = match &i.leading_field {
        Some(field) => format!("{text} {field}"),
        None => text.to_string(),
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return Err(invalid(e.span(), format!("cannot read interval \"{text}\" (for example '5 minutes')")));
    }
    let mut ms = 0f64;
    for pair in words.chunks(2) {
        let n: f64 = pair[0]
            .parse()
            .map_err(|_| invalid(e.span(), format!("cannot read \"{}\" in interval \"{text}\"", pair[0])))?;
        let unit = match pair[1].to_ascii_lowercase().as_str() {
            "ms" | "millisecond" | "milliseconds" => 1.0,
            "s" | "sec" | "secs" | "second" | "seconds" => 1e3,
            "min" | "mins" | "minute" | "minutes" => 60e3,
            "h" | "hour" | "hours" => 3_600e3,
            "d" | "day" | "days" => 86_400e3,
            "w" | "week" | "weeks" => 604_800e3,
            u => return Err(invalid(e.span(), format!("unknown interval unit \"{u}\""))),
        };
        ms += n * unit;
    }
    Ok(ms.round() as i64)
}

fn is_named(f: &ast::Function, name: &str) -> bool {
    f.name.0.len() == 1 && f.name.0[0].as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case(name))
}

fn is_aggregate(item: &SelectItem) -> bool {
    select_expr(item).is_some_and(holds_aggregate)
}

/// Whether an expression calls a function other than `date_bin` (every other function a
/// select list may call is an aggregate).
fn holds_aggregate(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => !is_named(f, "date_bin"),
        Expr::BinaryOp { left, right, .. } => holds_aggregate(left) || holds_aggregate(right),
        Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } => holds_aggregate(inner),
        _ => false,
    }
}

/// `histogram_quantile(φ, agg)`: the quantile of each group's classic histogram, whose
/// buckets are `agg` (`rate(value)`, `increase(value)`, …) grouped by the query's labels and
/// `le`: PromQL's `histogram_quantile(φ, sum by (job, le) (rate(m_bucket[…])))`.
fn histogram_quantile(f: &ast::Function, groups: &[String]) -> Result<(String, MakePlan, bool), Error> {
    let usage = || {
        invalid(
            f.span(),
            "histogram_quantile takes a number and an aggregate of the buckets, such as rate(value)",
        )
    };
    let FunctionArguments::List(list) = &f.args else { return Err(usage()) };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(phi)), FunctionArg::Unnamed(FunctionArgExpr::Expr(buckets))] =
        list.args.as_slice()
    else {
        return Err(usage());
    };
    let phi = number(phi).ok_or_else(usage)?;
    if groups.iter().any(|g| g == "le") {
        return Err(invalid(
            f.span(),
            "histogram_quantile groups the buckets by le itself: le cannot be in GROUP BY",
        ));
    }
    let by_le: Vec<String> = groups.iter().cloned().chain(["le".to_string()]).collect();
    let (_, buckets, _) = value_expr(buckets, &by_le)?;
    let make: MakePlan = Box::new(move |w| Plan::VectorFunction {
        func: VectorFn::HistogramQuantile,
        input: Box::new(buckets(w)),
        args: vec![Plan::Number(phi)],
        labels: vec![],
        origin: Origin::default(),
    });
    Ok(("histogram_quantile".into(), make, false))
}

/// `percentile_cont(φ) WITHIN GROUP (ORDER BY value [ASC|DESC])`: the φ-quantile of the
/// group's samples, interpolated linearly between the two nearest (PostgreSQL's definition,
/// and PromQL's `quantile`), over every sample of every series of the group: the IR's
/// `AggregateSamples`, which PromQL has no syntax for.
fn percentile_cont(f: &ast::Function, groups: &[String]) -> Result<(String, MakePlan, bool), Error> {
    let usage = || invalid(f.span(), "percentile_cont takes a fraction and WITHIN GROUP (ORDER BY value)");
    let FunctionArguments::List(list) = &f.args else { return Err(usage()) };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(fraction))] = list.args.as_slice() else {
        return Err(usage());
    };
    let [order] = f.within_group.as_slice() else { return Err(usage()) };
    if !matches!(&order.expr, Expr::Identifier(id) if id.value == "value")
        || f.filter.is_some()
        || f.over.is_some()
    {
        return Err(usage());
    }
    let phi = number(fraction).ok_or_else(usage)?;
    if !(0.0..=1.0).contains(&phi) {
        return Err(invalid(fraction.span(), format!("percentile value {phi} is not between 0 and 1")));
    }
    let descending = match order.options.sort {
        Some(OrderBySort::Desc) => true,
        Some(OrderBySort::Using(_)) => return Err(usage()),
        _ => false,
    };
    let grouping = Grouping::By(groups.to_vec());
    let make: MakePlan = Box::new(move |w| Plan::AggregateSamples {
        op: AggOp::Quantile,
        grouping: grouping.clone(),
        param: phi,
        descending,
        input: Box::new(w),
    });
    Ok(("percentile_cont".into(), make, false))
}

/// A join of two plans that each give one element per group, matched on all their labels.
fn one_to_one(op: BinOp, lhs: Plan, rhs: Plan) -> Plan {
    Plan::Join {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        key: JoinKey {
            grouping: Grouping::Without(vec![]),
            card: Cardinality::OneToOne,
            fill_many: None,
            fill_one: None,
        },
        return_bool: false,
        origin: Origin::default(),
    }
}

/// `plan op n` for each element.
fn with_number(op: BinOp, plan: Plan, n: f64) -> Plan {
    Plan::ScalarOp { op, lhs: Box::new(plan), rhs: Box::new(Plan::Number(n)), return_bool: false }
}

/// An arithmetic operator of a value expression.
fn arithmetic(op: &BinaryOperator) -> Option<BinOp> {
    Some(match op {
        BinaryOperator::Plus => BinOp::Add,
        BinaryOperator::Minus => BinOp::Sub,
        BinaryOperator::Multiply => BinOp::Mul,
        BinaryOperator::Divide => BinOp::Div,
        BinaryOperator::Modulo => BinOp::Mod,
        BinaryOperator::PGExp => BinOp::Pow,
        _ => return None,
    })
}

/// A value computed per group: an aggregate, or arithmetic over aggregates and numbers
/// (`max(value) - min(value)`, `sum(value) / 60`). Returns its column name (the aggregate's,
/// or PostgreSQL's `?column?` for an expression), how to build its plan over a window, and
/// whether it counts rows (a bare `count`). Arithmetic is PromQL's (IEEE: a division by zero
/// is ±Inf or NaN, not an error).
/// A division of integers is PostgreSQL's bigint division (`count(*) / 3` truncates),
/// which the plan IR's doubles do not follow: the relational engine answers it.
fn integer_arithmetic(e: &Expr) -> Error {
    invalid(e.span(), "a division of integers (counts) truncates, which the plan IR does not express")
}

/// Whether a select item of a grouped query is a `bigint` in PostgreSQL: a count, an integer
/// literal, or a sum, difference or product of them.
fn integer_valued(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => is_named(f, "count"),
        Expr::Value(v) => {
            matches!(&v.value, ast::Value::Number(n, _) if n.bytes().all(|b| b.is_ascii_digit()))
        }
        Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } => integer_valued(inner),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Plus | BinaryOperator::Minus | BinaryOperator::Multiply,
            right,
        } => integer_valued(left) && integer_valued(right),
        _ => false,
    }
}

fn value_expr(e: &Expr, groups: &[String]) -> Result<(String, MakePlan, bool), Error> {
    match e {
        Expr::Function(f) if is_named(f, "histogram_quantile") => histogram_quantile(f, groups),
        Expr::Function(f) if is_named(f, "percentile_cont") => percentile_cont(f, groups),
        Expr::Function(f) if !is_named(f, "date_bin") => {
            let (name, make) = aggregate(f, groups)?;
            let counts = name == "count";
            Ok((name, make, counts))
        }
        Expr::Nested(inner) => value_expr(inner, groups),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => {
            let (_, make, _) = value_expr(expr, groups)?;
            Ok(("?column?".into(), Box::new(move |w| with_number(BinOp::Mul, make(w), -1.0)), false))
        }
        Expr::BinaryOp { left, op, right } if arithmetic(op).is_some() => {
            if matches!(op, BinaryOperator::Divide | BinaryOperator::Modulo)
                && integer_valued(left)
                && integer_valued(right)
            {
                return Err(integer_arithmetic(e));
            }
            let op = arithmetic(op).unwrap_or(BinOp::Add);
            let make: MakePlan = match (number(left), number(right)) {
                (Some(_), Some(_)) => {
                    return Err(invalid(e.span(), "an expression of numbers alone is not a value of the group"))
                }
                (None, Some(n)) => {
                    let (_, l, _) = value_expr(left, groups)?;
                    Box::new(move |w| with_number(op, l(w), n))
                }
                (Some(n), None) => {
                    let (_, r, _) = value_expr(right, groups)?;
                    Box::new(move |w| Plan::ScalarOp {
                        op,
                        lhs: Box::new(Plan::Number(n)),
                        rhs: Box::new(r(w)),
                        return_bool: false,
                    })
                }
                (None, None) => {
                    let ((_, l, _), (_, r, _)) = (value_expr(left, groups)?, value_expr(right, groups)?);
                    Box::new(move |w: Plan| one_to_one(op, l(w.clone()), r(w)))
                }
            };
            Ok(("?column?".into(), make, false))
        }
        e => Err(invalid(
            e.span(),
            "a grouped query selects label columns of its GROUP BY, date_bin, aggregates of value, and arithmetic (+ - * / % ^) over aggregates and numbers",
        )),
    }
}

/// Builds a part's plan over a window.
type MakePlan = Box<dyn Fn(Plan) -> Plan>;

/// An aggregate over the group's samples in a window: its column name and how to build its
/// plan over a window (the window function per series, then the aggregation across the
/// group). The range functions (`rate`, `increase`, `delta`, `irate`, `idelta`, `deriv`)
/// are each series' value over its samples, summed across the group (PromQL's
/// `sum by (…) (rate(m[…]))`): over a group of one series, the function of its `(ts, value)`.
fn aggregate(f: &ast::Function, groups: &[String]) -> Result<(String, MakePlan), Error> {
    let name = f.name.to_string().to_ascii_lowercase();
    let FunctionArguments::List(list) = &f.args else {
        return Err(invalid(f.span(), format!("{name} takes one argument")));
    };
    if list.duplicate_treatment.is_some()
        || f.filter.is_some()
        || f.over.is_some()
        || !f.within_group.is_empty()
    {
        return Err(invalid(f.span(), "DISTINCT, FILTER, OVER and WITHIN GROUP are not supported yet"));
    }
    let arg_ok = match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(id)))] => id.value == "value",
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => name == "count",
        _ => false,
    };
    if !arg_ok {
        return Err(invalid(f.span(), format!("{name}() takes the value column (count also takes *)")));
    }
    let by = Grouping::By(groups.to_vec());
    let per_series = |func, window: Plan| Plan::WindowFunction {
        func,
        input: Box::new(window),
        args: vec![],
        origin: Origin::default(),
    };
    let sum_by = {
        let by = by.clone();
        move |input: Plan| Plan::Aggregate {
            op: AggOp::Sum,
            grouping: by.clone(),
            param: None,
            input: Box::new(input),
            origin: Origin::default(),
        }
    };
    let over = |op, func| {
        let by = by.clone();
        move |window: Plan| Plan::Aggregate {
            op,
            grouping: by.clone(),
            param: None,
            input: Box::new(per_series(func, window)),
            origin: Origin::default(),
        }
    };
    let make: MakePlan = match name.as_str() {
        "sum" => Box::new(over(AggOp::Sum, WindowFn::SumOverTime)),
        "count" => Box::new(over(AggOp::Sum, WindowFn::CountOverTime)),
        "min" => Box::new(over(AggOp::Min, WindowFn::MinOverTime)),
        "max" => Box::new(over(AggOp::Max, WindowFn::MaxOverTime)),
        "rate" => Box::new(over(AggOp::Sum, WindowFn::Rate)),
        "increase" => Box::new(over(AggOp::Sum, WindowFn::Increase)),
        "delta" => Box::new(over(AggOp::Sum, WindowFn::Delta)),
        "irate" => Box::new(over(AggOp::Sum, WindowFn::Irate)),
        "idelta" => Box::new(over(AggOp::Sum, WindowFn::Idelta)),
        "deriv" => Box::new(over(AggOp::Sum, WindowFn::Deriv)),
        "avg" => {
            let (sum, count) = (over(AggOp::Sum, WindowFn::SumOverTime), over(AggOp::Sum, WindowFn::CountOverTime));
            Box::new(move |window: Plan| one_to_one(BinOp::Div, sum(window.clone()), count(window)))
        }
        // the group's samples' variance from each series' count, mean and variance (the
        // within-series and between-series sums of squares), so that no sample is read twice
        // and no sum of squares of raw values cancels: Σ nᵢ·varᵢ + Σ nᵢ·(meanᵢ − mean)²
        "stddev" | "stddev_samp" | "stddev_pop" | "variance" | "var_samp" | "var_pop" => {
            let (sum, count) = (over(AggOp::Sum, WindowFn::SumOverTime), over(AggOp::Sum, WindowFn::CountOverTime));
            let (sample, root) = (!name.ends_with("_pop"), name.starts_with("stddev"));
            let by = by.clone();
            Box::new(move |w: Plan| {
                let n_i = per_series(WindowFn::CountOverTime, w.clone());
                let within = sum_by(one_to_one(BinOp::Mul, n_i.clone(), per_series(WindowFn::StdvarOverTime, w.clone())));
                let mean = one_to_one(BinOp::Div, sum(w.clone()), count(w.clone()));
                let deviation = Plan::Join {
                    op: BinOp::Sub,
                    lhs: Box::new(per_series(WindowFn::AvgOverTime, w.clone())),
                    rhs: Box::new(mean),
                    key: JoinKey {
                        grouping: by.clone(),
                        card: Cardinality::ManyToOne(vec![]),
                        fill_many: None,
                        fill_one: None,
                    },
                    return_bool: false,
                    origin: Origin::default(),
                };
                let between = sum_by(one_to_one(BinOp::Mul, n_i, with_number(BinOp::Pow, deviation, 2.0)));
                let n = count(w);
                let degrees = if sample { with_number(BinOp::Sub, n, 1.0) } else { n };
                let variance = one_to_one(BinOp::Div, one_to_one(BinOp::Add, within, between), degrees);
                if root {
                    Plan::Map { func: MapFn::Sqrt, input: Box::new(variance), args: vec![] }
                } else {
                    variance
                }
            })
        }
        // PromQL's functions of a native histogram, which the relational engine answers
        n if n.starts_with("histogram_") => {
            return Err(invalid(
                f.span(),
                format!("{name}() takes a native histogram (a table's histogram column), or sum(histogram) or avg(histogram)"),
            ))
        }
        _ => {
            return Err(invalid(
                f.span(),
                format!(
                    "aggregate {name}() is not supported yet (count, sum, avg, min, max, stddev, stddev_pop, variance, var_pop, rate, increase, delta, irate, idelta, deriv are)"
                ),
            ))
        }
    };
    Ok((name, make))
}

/// The output column an `ORDER BY` item names: a column name or alias, or a 1-based position.
/// Without `*` it must be one of the written columns; with `*` the result's label columns are
/// output columns too, known only once the result is there.
fn order_column(e: &Expr, columns: &[Column]) -> Result<OrderKey, Error> {
    let star = columns.iter().any(|c| c.source == Source::Star);
    match e {
        Expr::Identifier(id) if star || columns.iter().any(|c| c.name == id.value) => {
            Ok(OrderKey::Name(id.value.clone()))
        }
        Expr::Identifier(id) => {
            Err(invalid(id.span, format!("ORDER BY column \"{}\" is not in the select list", id.value)))
        }
        e => match numeral(e) {
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|&i| i >= 1 && (star || i <= columns.len()))
                .map(|i| OrderKey::Position(i - 1))
                .ok_or_else(|| invalid(e.span(), format!("ORDER BY position {n} is not in the select list"))),
            None => Err(invalid(e.span(), "ORDER BY takes a column name or position")),
        },
    }
}

/// A non-negative integer literal (`LIMIT`, `OFFSET`).
fn count(e: &Expr) -> Result<usize, Error> {
    numeral(e).and_then(|n| n.parse().ok()).ok_or_else(|| invalid(e.span(), "a non-negative integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_bounds_between_milliseconds_keep_the_samples_postgresql_keeps() {
        let now = 1_800_000_000_000;
        let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
            .and_then(|d| d.and_hms_milli_opt(21, 21, 0, 312))
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap();
        // the inclusive millisecond bounds of one `ts` predicate
        let bounds = |predicate_sql: &str| {
            let e = sqlparser::parser::Parser::new(&PostgreSqlDialect {})
                .try_with_sql(predicate_sql)
                .and_then(|mut p| p.parse_expr())
                .unwrap();
            let mut b = Bounds { lo: 0, hi: now, lo_given: false };
            predicate(&e, &mut Vec::new(), &mut b, now).unwrap();
            (b.lo, b.hi)
        };
        // a sample at .312 is before .3121 and after .3119, not after .3121
        assert_eq!(bounds("ts < '2026-11-25 21:21:00.3121'"), (0, at));
        assert_eq!(bounds("ts <= '2026-11-25 21:21:00.3121'"), (0, at));
        assert_eq!(bounds("ts > '2026-11-25 21:21:00.3119'"), (at, now));
        assert_eq!(bounds("ts >= '2026-11-25 21:21:00.3121'"), (at + 1, now));
        assert_eq!(bounds("ts = '2026-11-25 21:21:00.3121'"), (at + 1, at));
        assert_eq!(bounds("ts BETWEEN '2026-11-25 21:21:00.3119' AND '2026-11-25 21:21:00.3121'"), (at, at));
        // whole milliseconds are as written
        assert_eq!(bounds("ts < '2026-11-25 21:21:00.312'"), (0, at - 1));
        assert_eq!(bounds("ts >= '2026-11-25 21:21:00.312'"), (at, now));
    }

    #[test]
    fn timestamps_to_the_minute_are_read_where_a_timestamp_is() {
        let text = |sql: &str| parse(sql).unwrap()[0].to_string();
        assert_eq!(
            text("SELECT TIMESTAMP '2024-01-01 00:00', '2024-01-01 9:30+02'::timestamptz FROM m WHERE ts >= '2026-11-25 18:48'"),
            "SELECT TIMESTAMP '2024-01-01 00:00:00', '2024-01-01 09:30:00+02'::TIMESTAMPTZ FROM m WHERE ts >= '2026-11-25 18:48:00'"
        );
        // text elsewhere is text, and seconds already there stay
        assert_eq!(
            text("SELECT '2024-01-01 00:00' FROM m WHERE ts BETWEEN '2024-01-01 00:00:30' AND '2024-01-01T01:00Z'"),
            "SELECT '2024-01-01 00:00' FROM m WHERE ts BETWEEN '2024-01-01 00:00:30' AND '2024-01-01T01:00:00Z'"
        );
    }
}
