//! The relational engine: Apache DataFusion plans and runs the SQL that does not lower to
//! promflow's plan IR (filters on any column, `OR`, `DISTINCT`, window functions, `CASE`,
//! casts, string and date functions, set operations, subqueries), over the metrics as
//! tables ([`tables`]). Its answers become [`Rows`] like every other statement's.

mod checked;
mod datetime;
pub(crate) mod histograms;
mod ir;
mod missing;
mod moments;
mod ordered;
mod postgres;
mod promql;
mod rejected;
mod series;
mod sums;
mod tables;
mod udf;

pub(crate) use postgres::epoch_seconds_as_times;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::{SessionConfig, SessionContext};
use promflow_storage::Querier;

use futures_util::StreamExt;

use crate::catalog::{MAX_CELLS, MAX_ROWS};
use crate::compile::{Column, ColumnKind, Source};
use crate::exec::{ExecError, Settings};
use crate::rows::{Cell, Rows};

/// The memory one statement's operators (sorts, joins, aggregations) may hold, and, apart
/// from it, the rows its table scans may build.
const MEMORY_LIMIT: usize = 1 << 30;

/// Runs `sql` over the metrics of `querier` within `settings`' timeout, cancellation and
/// sample limit. Blocking: call it off the async threads (it runs DataFusion on the current
/// Tokio runtime, or on one of its own outside any).
pub(crate) fn run(sql: &str, querier: &Arc<dyn Querier>, settings: &Settings) -> Result<Rows, ExecError> {
    let work = answer(sql.to_string(), Arc::clone(querier), settings.clone(), MEMORY_LIMIT);
    // planning recurses over the statement's expressions, which nest as deep as the parser
    // allows: on a deep stack
    crate::compile::on_deep_stack(|| match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(work),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| ExecError::Catalog(format!("starting the SQL engine: {e}")))?
            .block_on(work),
    })
}

/// A querier called from DataFusion's async code, each call run on a thread of its own: a
/// querier may wait on a runtime itself (a cluster's reads of the other nodes), which it
/// cannot do on a thread that is driving one. A statement makes a few calls, one a table or
/// a part at most, so a thread each costs little.
struct OffRuntime(Arc<dyn Querier>);

impl OffRuntime {
    fn call<T: Send>(&self, f: impl FnOnce(&dyn Querier) -> T + Send) -> T {
        let inner = self.0.as_ref();
        std::thread::scope(|s| s.spawn(|| f(inner)).join())
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Querier for OffRuntime {
    fn select(
        &self,
        matchers: &[promflow_storage::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<promflow_storage::Series>, promflow_storage::Error> {
        self.call(|q| q.select(matchers, mint, maxt))
    }

    fn select_histograms(
        &self,
        matchers: &[promflow_storage::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<promflow_storage::HistogramSeries>, promflow_storage::Error> {
        self.call(|q| q.select_histograms(matchers, mint, maxt))
    }

    fn has_histograms(
        &self,
        matchers: &[promflow_storage::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<bool, promflow_storage::Error> {
        self.call(|q| q.has_histograms(matchers, mint, maxt))
    }

    fn select_start_timestamps(
        &self,
        matchers: &[promflow_storage::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<promflow_storage::StartTimestamps>, promflow_storage::Error> {
        self.call(|q| q.select_start_timestamps(matchers, mint, maxt))
    }

    fn series(
        &self,
        matchers: &[promflow_storage::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<promflow_storage::Labels>, promflow_storage::Error> {
        self.call(|q| q.series(matchers, mint, maxt))
    }

    fn label_names(
        &self,
        matchers: &[promflow_storage::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        self.call(|q| q.label_names(matchers, mint, maxt))
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[promflow_storage::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        self.call(|q| q.label_values(name, matchers, mint, maxt))
    }
}

/// [`run`], with `budget` bytes for the rows of the statement's table scans.
async fn answer(
    sql: String,
    querier: Arc<dyn Querier>,
    settings: Settings,
    budget: usize,
) -> Result<Rows, ExecError> {
    let querier: Arc<dyn Querier> = Arc::new(OffRuntime(querier));
    // times are answered in UTC, as promflow's PostgreSQL sessions' `TimeZone` says
    let config = SessionConfig::new()
        .with_information_schema(false)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
        .set_str("datafusion.execution.time_zone", "+00:00")
        .set_bool("datafusion.sql_parser.parse_float_as_decimal", true)
        // a table's rows are aggregated in the order its scan gives them, as PostgreSQL's
        // serial plans do, so that sums and moments of doubles round as PostgreSQL's
        .set_bool("datafusion.optimizer.enable_round_robin_repartition", false);
    let runtime =
        RuntimeEnvBuilder::new().with_memory_limit(MEMORY_LIMIT, 1.0).build_arc().map_err(engine_error)?;
    let mut ctx = SessionContext::new_with_config_rt(config, runtime);
    let functions = [
        postgres::functions(),
        missing::functions(),
        datetime::functions(),
        series::functions(),
        checked::functions(),
        histograms::functions(),
    ];
    for function in functions.into_iter().flatten() {
        ctx.register_udf(function);
    }
    // PostgreSQL's `every` is the standard's name of `bool_and`
    let every = datafusion::functions_aggregate::bool_and_or::bool_and_udaf()
        .as_ref()
        .clone()
        .with_aliases(["every"]);
    ctx.register_udaf(every);
    ctx.register_function_rewrite(checked::rewrite()).map_err(engine_error)?;
    for aggregate in ordered::aggregates().into_iter().chain(moments::aggregates()).chain(sums::aggregates())
    {
        ctx.register_udaf(aggregate);
    }
    // the parts the plan IR expresses run on promflow's executors, as tables of DataFusion's
    let mut lifted = ir::lift(&sql, chrono::Utc::now().timestamp_millis());
    // the IR's rows are of floats: a statement reading a table that holds native histograms
    // is DataFusion's whole
    for part in &lifted.parts {
        if crate::exec::holds_histograms(querier.as_ref(), &part.table)? {
            lifted = ir::Lifted { sql: sql.clone(), parts: Vec::new(), explain: false };
            break;
        }
    }
    let ir::Lifted { sql, parts, explain } = lifted;
    let postgres::Rewritten { sql, named, names } = postgres::rewrite(&sql)?;
    let metrics = tables::Metrics {
        querier,
        max_samples: settings.max_samples,
        budget: Arc::new(std::sync::atomic::AtomicUsize::new(budget)),
    };
    let deadline = std::time::Instant::now() + settings.timeout;
    ctx.register_udtf(
        "promql",
        Arc::new(promql::Promql {
            querier: Arc::clone(&metrics.querier),
            settings: settings.clone(),
            deadline,
            budget: Arc::clone(&metrics.budget),
        }),
    );
    ir::register(&ctx, &parts, &metrics.querier, &settings, deadline, &metrics.budget);
    let catalog = ctx.catalog("datafusion").ok_or_else(|| ExecError::Catalog("no default catalog".into()))?;
    catalog.register_schema("public", Arc::new(metrics)).map_err(engine_error)?;
    // the answer is held whole before it is sent: bounded as the interpreter's joins are
    let run = async {
        let frame = match (ctx.sql(&sql).await, named) {
            // the select list's expressions named alike by DataFusion: named by position
            (Err(e), Some(named))
                if e.to_string().contains("Projections require unique expression names") =>
            {
                ctx.sql(&named).await?
            }
            (frame, _) => frame?,
        };
        let schema = frame.schema().as_arrow().clone();
        let mut stream = frame.execute_stream().await?;
        let (mut batches, mut rows) = (Vec::new(), 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            if rows > MAX_ROWS || rows.saturating_mul(batch.num_columns()) > MAX_CELLS {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the answer has more than {MAX_ROWS} rows or {MAX_CELLS} values: bound the tables' ts, aggregate, or add a LIMIT"
                )));
            }
            batches.push(batch);
        }
        Ok::<_, DataFusionError>((schema, batches))
    };
    let (schema, batches) = tokio::select! {
        done = tokio::time::timeout(settings.timeout, run) => match done {
            Ok(answer) => answer.map_err(engine_error)?,
            Err(_) => return Err(promflow_plan::Error::Timeout("SQL statement evaluation").into()),
        },
        () = canceled(settings.canceled.clone()) => return Err(promflow_plan::Error::Canceled.into()),
    };
    // PostgreSQL's names where the select list gives them (DataFusion's are its expressions)
    let names = names.filter(|n| n.len() == schema.fields().len());
    let columns: Vec<Column> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Column {
            name: names.as_ref().map_or_else(|| f.name().clone(), |n| n[i].clone()),
            source: Source::Computed(kind(f.data_type())),
        })
        .collect();
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(cells(batch)?);
    }
    if explain && columns.len() == 2 {
        // after DataFusion's plan, the plans of the parts promflow's executors run
        for (part, plan) in ir::explained(&parts) {
            rows.push(vec![Cell::Text(part.into()), Cell::Text(plan.into())]);
        }
    }
    Ok(Rows::new(columns, rows))
}

/// Resolves once `flag` is set (never without one).
async fn canceled(flag: Option<Arc<AtomicBool>>) {
    let Some(flag) = flag else { return std::future::pending().await };
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A DataFusion error as promflow answers it: PostgreSQL's SQLSTATE where the statement is
/// wrong in PostgreSQL too, [`ExecError::Catalog`] where the engine lacks a feature (another
/// executor may answer, or the statement is refused with 0A000).
fn engine_error(e: DataFusionError) -> ExecError {
    classify(&e)
}

/// [`engine_error`] of a borrowed error (shared ones are borrowed from their `Arc`).
fn classify(e: &DataFusionError) -> ExecError {
    use datafusion::arrow::error::ArrowError;
    use datafusion::common::SchemaError;
    let sql = |state: &'static str, message: String| ExecError::Sql { state, message };
    match e {
        DataFusionError::ResourcesExhausted(m) => promflow_plan::Error::Execution(m.clone()).into(),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => classify(inner),
        DataFusionError::Shared(inner) => classify(inner),
        DataFusionError::Collection(all) if !all.is_empty() => classify(&all[0]),
        DataFusionError::External(inner) => {
            if let Some(inner) = inner.downcast_ref::<DataFusionError>() {
                classify(inner)
            } else if let Some(e) = inner.downcast_ref::<missing::PostgresError>() {
                sql(e.state, e.message.clone())
            } else if let Some(ArrowError::DivideByZero) = inner.downcast_ref::<ArrowError>() {
                sql("22012", "division by zero".into())
            } else if let Some(e) = inner.downcast_ref::<promflow_plan::Error>() {
                // a PromQL evaluation's (`promql()`): too many samples, a timeout, …
                use promflow_plan::Error as E;
                ExecError::Engine(match e {
                    E::Timeout(what) => E::Timeout(what),
                    E::Canceled => E::Canceled,
                    E::TooManySamples(what) => E::TooManySamples(what),
                    other => E::Execution(other.to_string()),
                })
            } else if let Some(e) = inner.downcast_ref::<promflow_promql::Error>() {
                sql("22023", format!("promql: {e}"))
            } else {
                ExecError::Catalog(inner.to_string())
            }
        }
        DataFusionError::SchemaError(e, _) => match e.as_ref() {
            // PostgreSQL quotes an unqualified name only
            SchemaError::FieldNotFound { field, .. } => match &field.relation {
                Some(table) => sql("42703", format!("column {table}.{} does not exist", field.name)),
                None => sql("42703", format!("column \"{}\" does not exist", field.name)),
            },
            SchemaError::AmbiguousReference { field } => {
                sql("42702", format!("column reference \"{}\" is ambiguous", field.name))
            }
            other => sql("42P09", other.to_string()),
        },
        DataFusionError::ArrowError(e, _) => match e.as_ref() {
            ArrowError::DivideByZero => sql("22012", "division by zero".into()),
            ArrowError::ArithmeticOverflow(m) => sql("22003", format!("value out of range: {m}")),
            ArrowError::CastError(m) | ArrowError::ParseError(m) => match unclassified(m) {
                ExecError::Catalog(_) => cast_error(m),
                known => known,
            },
            other => ExecError::Catalog(other.to_string()),
        },
        // "table 'datafusion.public.m' not found": PostgreSQL's undefined_table, named as
        // PostgreSQL names it (`m`, `monitoring.m`)
        DataFusionError::Plan(m) if m.starts_with("table '") && m.ends_with("' not found") => {
            let path = &m["table '".len()..m.len() - "' not found".len()];
            let path = path.strip_prefix("datafusion.").unwrap_or(path);
            ExecError::NoTable(path.strip_prefix("public.").unwrap_or(path).to_string())
        }
        DataFusionError::Plan(m) => {
            let first = m.lines().next().unwrap_or(m).to_string();
            if let Some(name) = m.strip_prefix("Invalid function '").and_then(|r| r.split('\'').next()) {
                if is_postgresql_function(name) {
                    sql("0A000", format!("function {name} is not supported yet"))
                } else {
                    sql("42883", format!("function {name} does not exist"))
                }
            } else if m.contains("must be in GROUP BY or an aggregate function") {
                // "… column \"m.value\" must appear in the GROUP BY clause or must be part of
                // an aggregate function, …": PostgreSQL's words for it
                let column = m.split('"').nth(1).unwrap_or("?");
                sql(
                    "42803",
                    format!("column \"{column}\" must appear in the GROUP BY clause or be used in an aggregate function"),
                )
            } else if m.starts_with("Aggregate functions are not allowed in the WHERE clause") {
                sql("42803", "aggregate functions are not allowed in WHERE".into())
            } else if m.starts_with("promql: ") {
                // `promql()`'s arguments: invalid_parameter_value
                sql("22023", first)
            } else if m.starts_with("Order by column out of bounds") {
                sql("42P10", first)
            } else if m.contains("Failed to coerce arguments") || m.contains("No function matches") {
                let name = m.split('\'').nth(1).unwrap_or("?");
                sql("42883", format!("function {name} does not exist with these argument types"))
            } else if m.starts_with("Cannot infer common argument type") {
                sql("42883", format!("operator does not exist: {first}"))
            } else {
                unclassified(&first)
            }
        }
        DataFusionError::Execution(m) if m.starts_with("Cannot cast") || m.starts_with("Can't cast") => {
            cast_error(m)
        }
        // AT TIME ZONE's zone: invalid_parameter_value
        DataFusionError::Execution(m) if m.starts_with("time zone \"") => sql("22023", m.clone()),
        DataFusionError::Execution(m) if m.contains("Divide by zero") => {
            sql("22012", "division by zero".into())
        }
        e => unclassified(&e.message()),
    }
}

/// A failed cast: a number out of the target type's range ("Can't cast value 8206154752.0 to
/// type Int32", "value of 3000000000 is out of range Int32") is PostgreSQL's `integer out of
/// range` (22003), anything else bad input text (22P02).
fn cast_error(m: &str) -> ExecError {
    // "value of 3000000000 is out of range Int32" (a decimal's cast)
    let out_of_range = m.strip_prefix("value of ").and_then(|r| r.split(" is out of range ").nth(1));
    let Some(target) =
        m.strip_prefix("Can't cast value ").and_then(|r| r.split(" to type ").nth(1)).or(out_of_range)
    else {
        return ExecError::Sql { state: "22P02", message: m.to_string() };
    };
    let name = match target.trim() {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        other => other,
    };
    ExecError::Sql { state: "22003", message: format!("{name} out of range") }
}

/// Whether PostgreSQL 15 has a function named `name` (`postgres_functions.txt`, from its
/// `pg_catalog`): one the engine lacks is then refused as not supported rather than reported
/// as undefined.
fn is_postgresql_function(name: &str) -> bool {
    static NAMES: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            include_str!("postgres_functions.txt").lines().filter(|l| !l.starts_with('#')).collect()
        })
        .contains(name.to_ascii_lowercase().as_str())
}

/// An error message no variant of DataFusion's errors classifies: the engine lacks what the
/// statement asks for ([`ExecError::Catalog`]), unless the words say otherwise.
fn unclassified(m: &str) -> ExecError {
    // "Invalid input syntax for type interval: \"5 fortnights\"": invalid_datetime_format
    match m.strip_prefix("Invalid input syntax for type ") {
        Some(rest) => {
            ExecError::Sql { state: "22007", message: format!("invalid input syntax for type {rest}") }
        }
        None => ExecError::Catalog(m.to_string()),
    }
}

/// The type clients see for an Arrow type.
fn kind(t: &DataType) -> ColumnKind {
    match t {
        t if histograms::is_histogram(t) => ColumnKind::Json,
        DataType::Boolean => ColumnKind::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            ColumnKind::Int4
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ColumnKind::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnKind::Double,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => ColumnKind::Numeric,
        DataType::Timestamp(_, Some(_)) => ColumnKind::Timestamp,
        DataType::Timestamp(_, None) | DataType::Date64 => ColumnKind::LocalTimestamp,
        DataType::Date32 => ColumnKind::Date,
        DataType::Interval(_) | DataType::Duration(_) => ColumnKind::Interval,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::FixedSizeList(f, _) => match kind(f.data_type()) {
            ColumnKind::Integer | ColumnKind::Int4 => ColumnKind::IntegerArray,
            ColumnKind::Double => ColumnKind::DoubleArray,
            _ => ColumnKind::TextArray,
        },
        _ => ColumnKind::Text,
    }
}

/// A batch's rows as cells.
fn cells(batch: &RecordBatch) -> Result<Vec<Vec<Cell>>, ExecError> {
    let options = FormatOptions::default();
    let mut rows = vec![Vec::with_capacity(batch.num_columns()); batch.num_rows()];
    for column in batch.columns() {
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)
            .map_err(|e| ExecError::Catalog(e.to_string()))?;
        for (i, row) in rows.iter_mut().enumerate() {
            row.push(cell(column.as_ref(), i, &formatter));
        }
    }
    Ok(rows)
}

/// Row `i` of `array` as a cell: numbers, times and truth values as themselves, every other
/// type as PostgreSQL's text for it.
fn cell(array: &dyn Array, i: usize, formatter: &ArrayFormatter<'_>) -> Cell {
    use datafusion::arrow::datatypes as t;
    if array.is_null(i) {
        return Cell::Null;
    }
    match array.data_type() {
        t if histograms::is_histogram(t) => match histograms::get(array.as_struct(), i) {
            Some(h) => {
                let mut json = String::new();
                promflow_plan::format::write_histogram(&mut json, &h);
                Cell::Text(json.into())
            }
            None => Cell::Null,
        },
        DataType::Boolean => Cell::Bool(array.as_boolean().value(i)),
        DataType::Int8 => Cell::Number(f64::from(array.as_primitive::<t::Int8Type>().value(i))),
        DataType::Int16 => Cell::Number(f64::from(array.as_primitive::<t::Int16Type>().value(i))),
        DataType::Int32 => Cell::Number(f64::from(array.as_primitive::<t::Int32Type>().value(i))),
        DataType::Int64 => Cell::Number(array.as_primitive::<t::Int64Type>().value(i) as f64),
        DataType::UInt8 => Cell::Number(f64::from(array.as_primitive::<t::UInt8Type>().value(i))),
        DataType::UInt16 => Cell::Number(f64::from(array.as_primitive::<t::UInt16Type>().value(i))),
        DataType::UInt32 => Cell::Number(f64::from(array.as_primitive::<t::UInt32Type>().value(i))),
        DataType::UInt64 => Cell::Number(array.as_primitive::<t::UInt64Type>().value(i) as f64),
        DataType::Float32 => Cell::Number(f64::from(array.as_primitive::<t::Float32Type>().value(i))),
        DataType::Float64 => Cell::Number(array.as_primitive::<t::Float64Type>().value(i)),
        DataType::Float16 => Cell::Number(formatter.value(i).to_string().parse().unwrap_or(f64::NAN)),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => array.as_primitive::<t::TimestampSecondType>().value(i) as f64,
                TimeUnit::Millisecond => {
                    array.as_primitive::<t::TimestampMillisecondType>().value(i) as f64 / 1e3
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<t::TimestampMicrosecondType>().value(i) as f64 / 1e6
                }
                TimeUnit::Nanosecond => {
                    array.as_primitive::<t::TimestampNanosecondType>().value(i) as f64 / 1e9
                }
            };
            Cell::Timestamp(v)
        }
        DataType::Date64 => Cell::Timestamp(array.as_primitive::<t::Date64Type>().value(i) as f64 / 1e3),
        DataType::Duration(unit) => {
            let v = match unit {
                TimeUnit::Second => {
                    array.as_primitive::<t::DurationSecondType>().value(i) as i128 * 1_000_000_000
                }
                TimeUnit::Millisecond => {
                    array.as_primitive::<t::DurationMillisecondType>().value(i) as i128 * 1_000_000
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<t::DurationMicrosecondType>().value(i) as i128 * 1_000
                }
                TimeUnit::Nanosecond => array.as_primitive::<t::DurationNanosecondType>().value(i) as i128,
            };
            // PostgreSQL's difference of two times: whole days, then the time of day
            let day = 86_400_000_000_000i128;
            Cell::Text(interval_text(0, (v / day) as i64, (v % day) as i64).into())
        }
        DataType::Interval(t::IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<t::IntervalMonthDayNanoType>().value(i);
            Cell::Text(interval_text(v.months, i64::from(v.days), v.nanoseconds).into())
        }
        DataType::Interval(t::IntervalUnit::DayTime) => {
            let v = array.as_primitive::<t::IntervalDayTimeType>().value(i);
            Cell::Text(interval_text(0, i64::from(v.days), i64::from(v.milliseconds) * 1_000_000).into())
        }
        DataType::Interval(t::IntervalUnit::YearMonth) => {
            Cell::Text(interval_text(array.as_primitive::<t::IntervalYearMonthType>().value(i), 0, 0).into())
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) | DataType::FixedSizeList(..) => {
            Cell::Text(array_text(array, i).into())
        }
        _ => Cell::Text(formatter.value(i).to_string().into()),
    }
}

/// An interval as PostgreSQL writes it (`IntervalStyle` `postgres`): `1 year 2 mons 3 days
/// 04:05:06.5`, the time of day alone when there is nothing else (`00:09:00`).
fn interval_text(months: i32, days: i64, nanos: i64) -> String {
    let mut parts = Vec::new();
    let unit = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        parts.push(unit(i64::from(years), "year", "years"));
    }
    if months != 0 {
        parts.push(unit(i64::from(months), "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days, "day", "days"));
    }
    let micros = nanos / 1_000;
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let micros = micros.unsigned_abs();
        let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
        let fraction = if fraction == 0 {
            String::new()
        } else {
            format!(".{fraction:06}").trim_end_matches('0').to_string()
        };
        parts.push(format!(
            "{sign}{:02}:{:02}:{:02}{fraction}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        ));
    }
    parts.join(" ")
}

/// Row `i` of a list array as PostgreSQL's array text: `{a,"b c",NULL}`.
fn array_text(array: &dyn Array, i: usize) -> String {
    use datafusion::arrow::array::{FixedSizeListArray, LargeListArray, ListArray};
    let values = if let Some(list) = array.as_any().downcast_ref::<ListArray>() {
        list.value(i)
    } else if let Some(list) = array.as_any().downcast_ref::<LargeListArray>() {
        list.value(i)
    } else if let Some(list) = array.as_any().downcast_ref::<FixedSizeListArray>() {
        list.value(i)
    } else {
        return String::new();
    };
    let options = FormatOptions::default();
    let Ok(formatter) = ArrayFormatter::try_new(values.as_ref(), &options) else { return String::new() };
    let items: Vec<String> = (0..values.len())
        .map(|j| match cell(values.as_ref(), j, &formatter) {
            Cell::Null => "NULL".to_string(),
            Cell::Number(v) if kind(values.data_type()) == ColumnKind::Double => crate::rows::float8_text(v),
            Cell::Number(v) => format!("{}", v as i64),
            Cell::Bool(b) => if b { "t" } else { "f" }.to_string(),
            Cell::Text(s) => quoted_element(&s),
            Cell::Timestamp(_) => quoted_element(&formatter.value(j).to_string()),
        })
        .collect();
    format!("{{{}}}", items.join(","))
}

/// An array element in PostgreSQL's array text: quoted when it is empty, `NULL`, or holds
/// a delimiter, a brace, a quote, a backslash or white space.
fn quoted_element(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.eq_ignore_ascii_case("null")
        && !s.chars().any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::{Db, DbOptions, Labels};

    /// The engine over `db`'s samples, with `budget` bytes for its scans' rows.
    fn engine_over(db: Arc<Db>, budget: usize) -> impl Fn(&str) -> Result<Rows, ExecError> {
        let querier: Arc<dyn Querier> = db;
        let settings = Settings {
            lookback_ms: 300_000,
            max_samples: 1_000_000,
            timeout: Duration::from_secs(30),
            canceled: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        move |sql: &str| runtime.block_on(answer(sql.into(), Arc::clone(&querier), settings.clone(), budget))
    }

    #[test]
    fn the_table_scans_of_a_statement_share_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let mut app = db.appender();
        let series = Labels::from_pairs([("__name__", "m"), ("job", "a")]);
        for t in 0..1000 {
            app.append(&series, t, 1.0).unwrap();
        }
        app.commit().unwrap();
        let run = engine_over(db, 30_000);
        // 1,000 rows of 21 bytes each fit in 30,000 bytes; a self-join reads them twice
        let one = run("SELECT count(*) FROM m WHERE value > 0").unwrap();
        assert_eq!(one.cell(0, 0).into_owned(), Cell::Number(1000.0));
        match run("SELECT count(*) FROM m a, m b WHERE a.value > 0") {
            Err(ExecError::Engine(promflow_plan::Error::Execution(m))) => {
                assert!(m.contains("bound ts"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn histograms_add_up_by_group_as_promql_adds_them() {
        use promflow_storage::native_histogram::CounterResetHint;
        use promflow_storage::FloatHistogram;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let h = |n: f64| {
            let buckets = vec![(0, n), (1, 2.0 * n)];
            FloatHistogram::from_buckets(
                CounterResetHint::Unknown,
                0,
                0.0,
                0.0,
                3.0 * n,
                n,
                buckets,
                Vec::new(),
                Vec::new(),
            )
            .unwrap()
        };
        let mut app = db.appender();
        for (instance, n) in [("a", 1.0), ("b", 2.0)] {
            let series = Labels::from_pairs([("__name__", "h"), ("job", "j"), ("instance", instance)]);
            app.append_histogram(&series, 1000, h(n)).unwrap();
        }
        app.commit().unwrap();
        let run = engine_over(db, 1 << 20);
        let text = |rows: &Rows, column: usize| match rows.cell(0, column).into_owned() {
            Cell::Text(t) => t.to_string(),
            other => panic!("{other:?}"),
        };
        let rows = run(
            "SELECT job, sum(histogram), avg(histogram), histogram_count(sum(histogram)) FROM h GROUP BY job",
        )
        .unwrap();
        let written = |n: f64| {
            let mut out = String::new();
            promflow_plan::format::write_histogram(&mut out, &h(n));
            out
        };
        assert_eq!(text(&rows, 1), written(3.0));
        assert_eq!(text(&rows, 2), written(1.5));
        assert_eq!(rows.cell(0, 3).into_owned(), Cell::Number(9.0));
        assert_eq!(rows.columns[1].source.kind(), ColumnKind::Json);
    }

    #[test]
    fn a_series_longer_than_an_answer_is_refused_before_it_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let run = engine_over(db, 1 << 20);
        // 10¹² integers would be 8 TB: refused, in the scalar and in FROM with a bound computed
        for sql in [
            "SELECT cardinality(generate_series(1, 1000000000000))",
            "SELECT cardinality(range(0, 1000000000000, 2))",
            "SELECT count(*) FROM generate_series(1, (SELECT 1000000000000)) g",
            "SELECT count(*) FROM generate_series(TIMESTAMP '2000-01-01 00:00:00', (SELECT TIMESTAMP '2100-01-01 00:00:00'), INTERVAL '1 second') g",
        ] {
            match run(sql) {
                Err(ExecError::Sql { state: "54000", .. }) => {}
                other => panic!("{sql}: {other:?}"),
            }
        }
        // within the bound, the rows are there
        let rows = run("SELECT count(*), max(g) FROM generate_series(1, (SELECT 1000)) g").unwrap();
        assert_eq!(rows.cell(0, 0).into_owned(), Cell::Number(1000.0));
        let mixed = run("SELECT count(*) FROM generate_series(TIMESTAMP '2000-01-01 00:00:00', (SELECT TIMESTAMP '2000-03-01 00:00:00'), INTERVAL '1 month -29 days') g");
        assert!(matches!(mixed, Err(ExecError::Sql { state: "0A000", .. })), "{mixed:?}");
    }
}
