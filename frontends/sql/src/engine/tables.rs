//! Every metric as a DataFusion table: its schema from the metric's label names, and a scan
//! that reads storage's querier with the `WHERE` predicates it can use pushed into the read
//! (label equalities and regular expressions as matchers, `ts` bounds as the time range).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use promflow_storage::{
    is_stale_nan, FloatHistogram, HistogramSeries, MatchOp, Matcher, Querier, Timestamp, METRIC_NAME,
};

use super::histograms;

use crate::compile::{column_of_label, label_of_column};
use crate::exec::ALL_TIME;

/// The rows a table's scan builds at once.
const BATCH_ROWS: usize = 8192;

/// The time zone of `ts`: PostgreSQL's `timestamptz`, always answered in UTC.
pub(super) const UTC: &str = "+00:00";

/// The schema `public`: one table per metric that has series at any time.
pub(crate) struct Metrics {
    pub(crate) querier: Arc<dyn Querier>,
    /// The most samples one scan may read (`--query.max-samples`).
    pub(crate) max_samples: usize,
    /// The bytes the statement's scans may still build their rows in (shared by them all).
    pub(crate) budget: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn names(&self) -> Vec<String> {
        self.querier.label_values(METRIC_NAME, &[], ALL_TIME.0, ALL_TIME.1).unwrap_or_default()
    }
}

#[async_trait]
impl SchemaProvider for Metrics {
    fn table_names(&self) -> Vec<String> {
        self.names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let matcher = Matcher::new(MatchOp::Equal, METRIC_NAME, name).map_err(external)?;
        let labels = self
            .querier
            .label_names(std::slice::from_ref(&matcher), ALL_TIME.0, ALL_TIME.1)
            .map_err(external)?;
        let mut fields: Vec<Field> = labels
            .iter()
            .filter(|l| *l != METRIC_NAME)
            .map(|l| Field::new(column_of_label(l), DataType::Utf8, true))
            .collect();
        // a metric holding native histograms has a histogram column, NULL in its float rows,
        // where the value is NULL in its histogram rows
        let histograms = self.querier.has_histograms(&[matcher], ALL_TIME.0, ALL_TIME.1).map_err(external)?;
        fields.push(ts_field());
        fields.push(Field::new("value", DataType::Float64, histograms));
        if histograms {
            fields.push(Field::new("histogram", histograms::data_type(), true));
        }
        Ok(Some(Arc::new(MetricTable {
            metric: name.to_string(),
            histograms,
            schema: Arc::new(Schema::new(fields)),
            querier: Arc::clone(&self.querier),
            max_samples: self.max_samples,
            budget: Arc::clone(&self.budget),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }
}

/// One metric's table.
struct MetricTable {
    metric: String,
    /// Whether it has a histogram column.
    histograms: bool,
    schema: SchemaRef,
    querier: Arc<dyn Querier>,
    max_samples: usize,
    budget: Arc<AtomicUsize>,
}

impl std::fmt::Debug for MetricTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricTable({})", self.metric)
    }
}

pub(super) fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// What the scan reads: matchers beyond the metric name, and the `ts` range (inclusive).
#[derive(Default)]
struct Read {
    matchers: Vec<Matcher>,
    mint: Option<Timestamp>,
    maxt: Option<Timestamp>,
}

impl Read {
    /// Narrows the read by `filter` when it is a predicate the read can use; whether it was.
    fn take(&mut self, filter: &Expr) -> bool {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else { return false };
        let (column, op, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                Some(swapped) => (c.name.as_str(), swapped, v),
                None => return false,
            },
            _ => return false,
        };
        if column == "ts" {
            // inclusive bounds in whole milliseconds around the literal (which may be finer):
            // the read may take the boundary samples that the re-applied filter drops
            let Some((floor, ceil)) = millis(value) else { return false };
            let (lower, upper) = match op {
                Operator::Gt | Operator::GtEq => (Some(floor), None),
                Operator::Lt | Operator::LtEq => (None, Some(ceil)),
                Operator::Eq => (Some(floor), Some(ceil)),
                _ => return false,
            };
            if let Some(lo) = lower {
                self.mint = Some(self.mint.map_or(lo, |m| m.max(lo)));
            }
            if let Some(hi) = upper {
                self.maxt = Some(self.maxt.map_or(hi, |m| m.min(hi)));
            }
            return true;
        }
        if column == "value" {
            return false;
        }
        let ScalarValue::Utf8(Some(text)) = value else { return false };
        // a label is never empty (empty means absent, NULL): `= ''` matches no row, which the
        // re-applied filter makes sure of; the matcher would select the series without it
        // PostgreSQL's `~` matches anywhere in the value, a matcher the whole value: the
        // pattern is wrapped so that the matcher selects every value `~` could match
        let (op, text) = match op {
            Operator::Eq if !text.is_empty() => (MatchOp::Equal, text.clone()),
            Operator::RegexMatch => (MatchOp::Regex, format!("(?s:.*)(?:{text})(?s:.*)")),
            _ => return false,
        };
        match Matcher::new(op, label_of_column(column), &text) {
            Ok(m) => {
                self.matchers.push(m);
                true
            }
            Err(_) => false,
        }
    }
}

/// A timestamp literal in whole milliseconds, rounded down and up.
pub(super) fn millis(v: &ScalarValue) -> Option<(Timestamp, Timestamp)> {
    let (value, per_ms) = match v {
        ScalarValue::TimestampSecond(Some(s), _) => return s.checked_mul(1000).map(|ms| (ms, ms)),
        ScalarValue::TimestampMillisecond(Some(ms), _) => return Some((*ms, *ms)),
        ScalarValue::TimestampMicrosecond(Some(us), _) => (*us, 1000),
        ScalarValue::TimestampNanosecond(Some(ns), _) => (*ns, 1_000_000),
        _ => return None,
    };
    let floor = value.div_euclid(per_ms);
    Some((floor, if value.rem_euclid(per_ms) == 0 { floor } else { floor + 1 }))
}

#[async_trait]
impl TableProvider for MetricTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Predicates the read can use narrow it, and DataFusion applies them again on the rows
    /// (`Inexact`): the read may return more, never less.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        Ok(filters
            .iter()
            .map(|f| {
                if Read::default().take(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let mut read = Read::default();
        for f in filters {
            read.take(f);
        }
        let mut matchers = vec![Matcher::new(MatchOp::Equal, METRIC_NAME, &self.metric).map_err(external)?];
        matchers.append(&mut read.matchers);
        let (mint, maxt) = (read.mint.unwrap_or(ALL_TIME.0), read.maxt.unwrap_or(ALL_TIME.1));
        let (series, hists) = if mint > maxt {
            (Vec::new(), Vec::new())
        } else {
            let series = self.querier.select(&matchers, mint, maxt).map_err(external)?;
            let hists = if self.histograms {
                self.querier.select_histograms(&matchers, mint, maxt).map_err(external)?
            } else {
                Vec::new()
            };
            (series, hists)
        };
        let samples: usize = series.iter().map(|s| s.samples.len()).sum::<usize>()
            + hists.iter().map(|s| s.samples.len()).sum::<usize>();
        if samples > self.max_samples {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "query processing would load too many samples into memory: table \"{}\" reads {samples} samples, more than --query.max-samples ({}); bound ts",
                self.metric, self.max_samples
            )));
        }
        take_budget(&self.budget, &self.schema, &series, &hists, &self.metric)?;
        let batches = batches(&self.schema, &series, &hists, mint, maxt)?;
        let exec =
            MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&self.schema), projection.cloned())?;
        Ok(exec)
    }
}

/// Takes the bytes the rows of `series` and `hists` will hold in `schema` (timestamp, value,
/// label values and offsets, buckets) out of the statement's `budget`: the rows are built
/// whole.
pub(super) fn take_budget(
    budget: &AtomicUsize,
    schema: &SchemaRef,
    series: &[promflow_storage::Series],
    hists: &[HistogramSeries],
    table: &str,
) -> Result<(), DataFusionError> {
    let labels = schema.fields().len() - 2;
    let row = |labels_of: &promflow_storage::Labels| {
        16 + labels * 4 + labels_of.iter().map(|l| l.value.len()).sum::<usize>()
    };
    let floats: usize = series.iter().map(|s| s.samples.len() * row(&s.labels)).sum();
    let histograms: usize = hists
        .iter()
        .map(|s| {
            let buckets: usize =
                s.samples.iter().map(|h| h.h.positive_buckets().len() + h.h.negative_buckets().len()).sum();
            s.samples.len() * (row(&s.labels) + HISTOGRAM_ROW_BYTES) + buckets * 12
        })
        .sum();
    let bytes = floats + histograms;
    if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(bytes)).is_err() {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "the statement's tables would take more than {} MiB of rows (table \"{table}\": {} MiB): bound ts",
            super::MEMORY_LIMIT >> 20,
            bytes >> 20
        )));
    }
    Ok(())
}

/// A histogram's bytes in a row beside its buckets: its numbers and its lists' offsets.
const HISTOGRAM_ROW_BYTES: usize = 64;

/// A `ts` column: milliseconds in UTC.
pub(super) fn ts_field() -> Field {
    Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())), false)
}

/// The rows of `series` and `hists` within `mint..=maxt` in batches of the table's schema
/// (label columns, `ts`, `value`, and `histogram` when the schema has it): one per sample,
/// staleness markers left out; a histogram's row has no value, a float's no histogram.
pub(super) fn batches(
    schema: &SchemaRef,
    series: &[promflow_storage::Series],
    hists: &[HistogramSeries],
    mint: Timestamp,
    maxt: Timestamp,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    let fields = schema.fields();
    let label_count = fields.iter().position(|f| f.name() == "ts").unwrap_or(fields.len());
    let labels: Vec<&str> = fields[..label_count].iter().map(|f| label_of_column(f.name())).collect();
    let with_histograms = fields.len() > label_count + 2;
    let mut rows = RowBatches {
        schema,
        labels: labels.iter().map(|_| StringBuilder::new()).collect(),
        ts: TimestampMillisecondBuilder::new().with_timezone(UTC),
        values: Float64Builder::new(),
        hists: with_histograms.then(Vec::new),
        count: 0,
        out: Vec::new(),
    };
    for s in series {
        let values_of = label_values(&labels, &s.labels);
        for sample in s.samples.iter().filter(|x| x.t >= mint && x.t <= maxt && !is_stale_nan(x.v)) {
            rows.push(&values_of, sample.t, Some(sample.v), None)?;
        }
    }
    if with_histograms {
        for s in hists {
            let values_of = label_values(&labels, &s.labels);
            for sample in s.samples.iter().filter(|x| x.t >= mint && x.t <= maxt) {
                rows.push(&values_of, sample.t, None, Some(&sample.h))?;
            }
        }
    }
    if rows.count > 0 || rows.out.is_empty() {
        rows.flush()?;
    }
    Ok(rows.out)
}

/// The values of labels `names` in `labels`, `None` where absent.
fn label_values<'l>(names: &[&str], labels: &'l promflow_storage::Labels) -> Vec<Option<&'l str>> {
    names.iter().map(|name| Some(labels.get(name)).filter(|v| !v.is_empty())).collect()
}

/// The batches [`batches`] builds, and the one being built.
struct RowBatches<'a> {
    schema: &'a SchemaRef,
    labels: Vec<StringBuilder>,
    ts: TimestampMillisecondBuilder,
    values: Float64Builder,
    /// The `histogram` column's, when the schema has it.
    hists: Option<Vec<Option<&'a FloatHistogram>>>,
    /// Rows in the batch being built.
    count: usize,
    out: Vec<RecordBatch>,
}

impl<'a> RowBatches<'a> {
    fn push(
        &mut self,
        labels: &[Option<&str>],
        t: Timestamp,
        value: Option<f64>,
        hist: Option<&'a FloatHistogram>,
    ) -> Result<(), DataFusionError> {
        for (b, v) in self.labels.iter_mut().zip(labels) {
            b.append_option(*v);
        }
        self.ts.append_value(t);
        self.values.append_option(value);
        if let Some(h) = &mut self.hists {
            h.push(hist);
        }
        self.count += 1;
        if self.count == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataFusionError> {
        let mut columns: Vec<ArrayRef> =
            self.labels.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        columns.push(Arc::new(self.ts.finish()));
        columns.push(Arc::new(self.values.finish()));
        if let Some(h) = &mut self.hists {
            columns.push(histograms::array(h.drain(..)));
        }
        self.out.push(RecordBatch::try_new(Arc::clone(self.schema), columns)?);
        self.count = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::binary_expr;
    use datafusion::prelude::{col, lit};

    fn read(filters: &[Expr]) -> Read {
        let mut r = Read::default();
        for f in filters {
            assert!(r.take(f), "{f} is pushed");
        }
        r
    }

    #[test]
    fn ts_bounds_are_inclusive_whole_milliseconds_around_the_literal() {
        let micros = |us| lit(ScalarValue::TimestampMicrosecond(Some(us), Some(UTC.into())));
        let r = read(&[col("ts").gt(micros(1_500)), col("ts").lt(micros(9_500))]);
        assert_eq!((r.mint, r.maxt), (Some(1), Some(10)));
        let r = read(&[micros(2_000).lt_eq(col("ts"))]);
        assert_eq!((r.mint, r.maxt), (Some(2), None));
        assert!(!Read::default().take(&col("ts").not_eq(micros(1))));
    }

    #[test]
    fn a_regular_expression_matches_anywhere_as_postgresql_s_does() {
        let r = read(&[binary_expr(col("job"), Operator::RegexMatch, lit("p"))]);
        let m = &r.matchers[0];
        assert!(m.matches("api") && m.matches("p") && !m.matches("db"), "{m}");
        // `= ''` is never pushed: the matcher would select the series without the label
        assert!(!Read::default().take(&col("job").eq(lit(""))));
    }
}
