//! The relational engine: Apache DataFusion plans and runs the SQL that does not lower to
//! promflow's plan IR (filters on any column, `OR`, `DISTINCT`, window functions, `CASE`,
//! casts, string and date functions, set operations, subqueries), over the metrics as
//! tables ([`tables`]). Its answers become [`Rows`] like every other statement's.

mod tables;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
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
    let work = answer(order_by_expressions(sql), Arc::clone(querier), settings.clone(), MEMORY_LIMIT);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(work),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| ExecError::Catalog(format!("starting the SQL engine: {e}")))?
            .block_on(work),
    }
}

/// [`run`], with `budget` bytes for the rows of the statement's table scans.
async fn answer(
    sql: String,
    querier: Arc<dyn Querier>,
    settings: Settings,
    budget: usize,
) -> Result<Rows, ExecError> {
    let config = SessionConfig::new()
        .with_information_schema(false)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
    let runtime =
        RuntimeEnvBuilder::new().with_memory_limit(MEMORY_LIMIT, 1.0).build_arc().map_err(engine_error)?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_udf(round_half_even());
    let metrics = tables::Metrics {
        querier,
        max_samples: settings.max_samples,
        budget: Arc::new(std::sync::atomic::AtomicUsize::new(budget)),
    };
    let catalog = ctx.catalog("datafusion").ok_or_else(|| ExecError::Catalog("no default catalog".into()))?;
    catalog.register_schema("public", Arc::new(metrics)).map_err(engine_error)?;
    // the answer is held whole before it is sent: bounded as the interpreter's joins are
    let run = async {
        let frame = ctx.sql(&sql).await?;
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
    let columns: Vec<Column> = schema
        .fields()
        .iter()
        .map(|f| Column { name: f.name().clone(), source: Source::Computed(kind(f.data_type())) })
        .collect();
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(cells(batch)?);
    }
    Ok(Rows::new(columns, rows))
}

/// PostgreSQL's `round(double precision)`: to the nearest integer, halves to even (`rint`),
/// where DataFusion's rounds halves away from zero (PostgreSQL's `round(numeric)`).
fn round_half_even() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::Float64Array;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    let round = |args: &[ColumnarValue]| -> Result<ColumnarValue, DataFusionError> {
        match &args[0] {
            ColumnarValue::Array(a) => {
                let values: Float64Array =
                    a.as_primitive::<datafusion::arrow::datatypes::Float64Type>().unary(f64::round_ties_even);
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
            ColumnarValue::Scalar(datafusion::common::ScalarValue::Float64(v)) => Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Float64(v.map(f64::round_ties_even)),
            )),
            other => Err(DataFusionError::Internal(format!("round of {other:?}"))),
        }
    };
    datafusion::logical_expr::create_udf(
        "round",
        vec![DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(round),
    )
}

/// `sql` with each `ORDER BY <position>` of a `SELECT` written as the expression (or alias) at
/// that position: DataFusion refuses a position that names an expression over the grouping
/// columns (`SELECT upper(job) … GROUP BY job ORDER BY 1`), which PostgreSQL takes.
fn order_by_expressions(sql: &str) -> String {
    use sqlparser::ast::{Expr, OrderByKind, SelectItem, SetExpr, Statement, Value};
    let Ok(mut statements) = crate::compile::parse(sql) else { return sql.to_string() };
    let [Statement::Query(query)] = statements.as_mut_slice() else { return sql.to_string() };
    let SetExpr::Select(select) = query.body.as_ref() else { return sql.to_string() };
    let Some(order_by) = query.order_by.as_mut() else { return sql.to_string() };
    let OrderByKind::Expressions(items) = &mut order_by.kind else { return sql.to_string() };
    for item in items {
        let Expr::Value(v) = &item.expr else { continue };
        let Value::Number(n, _) = &v.value else { continue };
        let Some(selected) = n.parse::<usize>().ok().and_then(|i| select.projection.get(i.wrapping_sub(1)))
        else {
            continue;
        };
        match selected {
            SelectItem::UnnamedExpr(e) => item.expr = e.clone(),
            SelectItem::ExprWithAlias { alias, .. } => item.expr = Expr::Identifier(alias.clone()),
            _ => {}
        }
    }
    statements[0].to_string()
}

/// Resolves once `flag` is set (never without one).
async fn canceled(flag: Option<Arc<AtomicBool>>) {
    let Some(flag) = flag else { return std::future::pending().await };
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn engine_error(e: DataFusionError) -> ExecError {
    match e {
        DataFusionError::ResourcesExhausted(m) => promflow_plan::Error::Execution(m).into(),
        DataFusionError::External(inner) => ExecError::Catalog(inner.to_string()),
        DataFusionError::Context(_, inner) => engine_error(*inner),
        // "table 'datafusion.public.m' not found": PostgreSQL's undefined_table
        DataFusionError::Plan(m) if m.starts_with("table '") && m.ends_with("' not found") => {
            let path = &m["table '".len()..m.len() - "' not found".len()];
            ExecError::NoTable(path.rsplit('.').next().unwrap_or(path).to_string())
        }
        e => ExecError::Catalog(e.strip_backtrace()),
    }
}

/// The type clients see for an Arrow type.
fn kind(t: &DataType) -> ColumnKind {
    match t {
        DataType::Boolean => ColumnKind::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => ColumnKind::Integer,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => ColumnKind::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnKind::Double,
        DataType::Decimal128(..) | DataType::Decimal256(..) => ColumnKind::Double,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => ColumnKind::Timestamp,
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

fn cell(array: &dyn Array, i: usize, formatter: &ArrayFormatter<'_>) -> Cell {
    use datafusion::arrow::datatypes as t;
    if array.is_null(i) {
        return Cell::Null;
    }
    match array.data_type() {
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
        DataType::Date32 => {
            Cell::Timestamp(f64::from(array.as_primitive::<t::Date32Type>().value(i)) * 86_400.0)
        }
        DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::Float16 => {
            Cell::Number(formatter.value(i).to_string().parse().unwrap_or(f64::NAN))
        }
        _ => Cell::Text(formatter.value(i).to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::{Db, DbOptions, Labels};

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
        let querier: Arc<dyn Querier> = db;
        let settings = Settings {
            lookback_ms: 300_000,
            max_samples: 1_000_000,
            timeout: Duration::from_secs(30),
            canceled: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let run =
            |sql: &str| runtime.block_on(answer(sql.into(), Arc::clone(&querier), settings.clone(), 30_000));
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
}
