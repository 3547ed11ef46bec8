//! `promql(query, time)` and `promql(query, start, end, step)`: a PromQL query's answer as a
//! table, so that SQL can filter, join and aggregate what PromQL computes. The query is
//! compiled by promflow's PromQL front end and evaluated by the batch executor, as
//! `/api/v1/query` and `/api/v1/query_range` evaluate it; its rows are a label column per
//! label name of the result (`__name__` too), then `ts` and `value`, one row per point, and
//! a `histogram` column when the result holds native histograms.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use promflow_plan::{QueryOptions, QueryResult};
use promflow_storage::{Querier, Samples, Series, Timestamp};

use super::tables::{batches, external, millis, take_budget, ts_field};
use crate::compile::column_of_label;
use crate::exec::{Settings, ALL_TIME};

/// Most points a range evaluation may have per series, as `/api/v1/query_range` allows.
const MAX_POINTS: i64 = 11_000;

/// The `promql` table function of one statement.
pub(super) struct Promql {
    pub(super) querier: Arc<dyn Querier>,
    pub(super) settings: Settings,
    /// The statement's deadline: every call of one statement shares it.
    pub(super) deadline: Instant,
    /// The statement's bytes for rows, shared with its tables' scans.
    pub(super) budget: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Promql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Promql")
    }
}

impl TableFunctionImpl for Promql {
    /// DataFusion has folded the arguments' constant expressions (`now() - INTERVAL '1
    /// hour'`) to literals before the call.
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let (query, start, end, step) = match args.exprs() {
            [query, at] => (text(query)?, time(at)?, time(at)?, None),
            [query, start, end, step] => (text(query)?, time(start)?, time(end)?, Some(duration(step)?)),
            _ => return plan_err!("promql: takes (query, time) or (query, start, end, step)"),
        };
        if end < start {
            return plan_err!("promql: the end is before the start");
        }
        let step_ms = step.unwrap_or(1);
        if (end - start) / step_ms > MAX_POINTS {
            return plan_err!(
                "promql: more than {MAX_POINTS} points per series; use a longer step or a shorter range"
            );
        }
        let options = promflow_promql::CompileOptions {
            step: Duration::from_millis(step.unwrap_or(0) as u64),
            range: Duration::from_millis((end - start) as u64),
            ..Default::default()
        };
        let plan = promflow_promql::compile(&query, &options).map_err(external)?;
        let evaluation = promflow_batch::evaluate(
            &plan,
            self.querier.as_ref(),
            &QueryOptions {
                start,
                end,
                step: step_ms,
                lookback_ms: self.settings.lookback_ms,
                max_samples: self.settings.max_samples,
                deadline: Some(self.deadline),
                delayed_name_removal: false,
                use_start_timestamps: false,
                range_query: step.is_some(),
                canceled: self.settings.canceled.clone(),
            },
        )
        .map_err(external)?;
        let series = series_of(evaluation.result)?;
        let hists = evaluation.histograms;
        let mut names: Vec<&str> = series
            .iter()
            .map(|s| &s.labels)
            .chain(hists.iter().map(|h| &h.labels))
            .flat_map(|l| l.iter().map(|l| l.name.as_ref()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut fields: Vec<Field> =
            names.iter().map(|l| Field::new(column_of_label(l), DataType::Utf8, true)).collect();
        fields.push(ts_field());
        // a result holding native histograms has a histogram column, as a metric's table has
        fields.push(Field::new("value", DataType::Float64, !hists.is_empty()));
        if !hists.is_empty() {
            fields.push(Field::new("histogram", super::histograms::data_type(), true));
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        take_budget(&self.budget, &schema, &series, &hists, "promql")?;
        let rows = batches(&schema, &series, &hists, ALL_TIME.0, ALL_TIME.1)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![rows])?))
    }
}

/// A result as series of points: an instant vector's samples each a series of one point, a
/// scalar one series without labels.
fn series_of(result: QueryResult) -> Result<Vec<Series>, DataFusionError> {
    let one = |labels, t, v| Series { labels, samples: Samples::new(vec![t], vec![v]) };
    Ok(match result {
        QueryResult::Matrix(series) => series,
        QueryResult::Vector(points) => points.into_iter().map(|(labels, t, v)| one(labels, t, v)).collect(),
        QueryResult::Scalar(t, v) => vec![one(Default::default(), t, v)],
        QueryResult::String(..) => return plan_err!("promql: a string result is no table"),
    })
}

/// The literal `e` folded to, or an error naming what the argument must be.
fn literal<'e>(e: &'e Expr, what: &str) -> Result<&'e ScalarValue, DataFusionError> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Ok(v),
        other => plan_err!("promql: {what} must be a constant, not {other}"),
    }
}

fn text(e: &Expr) -> Result<String, DataFusionError> {
    match literal(e, "the query")? {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Ok(s.clone())
        }
        other => plan_err!("promql: the query must be text, not {}", other.data_type()),
    }
}

/// A time: a timestamp, or seconds since the epoch.
fn time(e: &Expr) -> Result<Timestamp, DataFusionError> {
    let v = literal(e, "a time")?;
    if let Some((floor, _)) = millis(v) {
        return Ok(floor);
    }
    match v.cast_to(&DataType::Float64) {
        Ok(ScalarValue::Float64(Some(s))) if s.is_finite() => Ok((s * 1000.0).round() as Timestamp),
        _ => {
            plan_err!("promql: a time must be a timestamp or seconds since the epoch, not {}", v.data_type())
        }
    }
}

/// A step: an interval of days and smaller units, or seconds.
fn duration(e: &Expr) -> Result<i64, DataFusionError> {
    let v = literal(e, "the step")?;
    let ms = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(i)) => i.days as i64 * 86_400_000 + i.milliseconds as i64,
        other => match other.cast_to(&DataType::Float64) {
            Ok(ScalarValue::Float64(Some(s))) if s.is_finite() => (s * 1000.0).round() as i64,
            _ => {
                return plan_err!(
                    "promql: the step must be an interval or seconds, not {}",
                    other.data_type()
                )
            }
        },
    };
    if ms <= 0 {
        return plan_err!("promql: the step must be positive");
    }
    Ok(ms)
}
