//! Running a compiled statement against storage with the batch executor: what both the
//! HTTP endpoint and the PostgreSQL wire protocol answer.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promflow_plan::QueryOptions;
use promflow_storage::{Labels, MatchOp, Matcher, Querier, Series, Timestamp};

use crate::compile::{label_of_column, Column, Query, Source, Statement};
use crate::rows::{Cell, Rows};

/// The smallest and largest sample times a catalog query reads.
pub(crate) const ALL_TIME: (i64, i64) = (i64::MIN / 2, i64::MAX / 2);

/// The evaluation settings of the server (`--query.*` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// An instant selection's lookback.
    pub lookback_ms: i64,
    /// The most samples one evaluation may hold.
    pub max_samples: usize,
    /// How long a statement may run.
    pub timeout: Duration,
    /// Set when nobody waits for the answer any more (the client hung up or sent a cancel
    /// request): the statement stops where it would stop for its deadline.
    pub canceled: Option<Arc<AtomicBool>>,
}

/// Why a statement that compiled could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The engine refused or failed the plan (too many samples, a timeout, …).
    #[error(transparent)]
    Engine(#[from] promflow_plan::Error),
    /// Storage could not be read.
    #[error("reading storage: {0}")]
    Storage(#[from] promflow_storage::Error),
    /// A metric with no series (a query or `DESCRIBE` of it), or an unknown catalog table:
    /// PostgreSQL's `undefined_table`.
    #[error("relation \"{0}\" does not exist")]
    NoTable(String),
    /// A catalog query the catalog interpreter cannot answer, or a query the relational
    /// engine cannot plan or run.
    #[error("{0}")]
    Catalog(String),
    /// A query neither the plan IR nor the relational engine takes: why it does not lower.
    #[error(transparent)]
    Refused(#[from] crate::Error),
    /// A statement PostgreSQL rejects as well (an unknown column or function, a division by
    /// zero, text that is not a number, …): its SQLSTATE and message.
    #[error("{message}")]
    Sql {
        /// PostgreSQL's SQLSTATE for the error (`42703`, `22012`, …).
        state: &'static str,
        /// What happened, in PostgreSQL's words where it has them.
        message: String,
    },
}

impl ExecError {
    /// Whether another executor may still answer the statement: the relational engine
    /// cannot plan it (a feature or function it lacks), rather than the statement being
    /// wrong.
    #[cfg_attr(not(feature = "engine"), allow(dead_code))]
    fn others_may_answer(&self) -> bool {
        matches!(self, ExecError::Catalog(_) | ExecError::Sql { state: "42883", .. })
    }
}

impl Statement {
    /// Answers the statement from `querier` (blocking: run it off an async runtime's
    /// threads).
    pub fn execute(&self, querier: &Arc<dyn Querier>, settings: &Settings) -> Result<Rows, ExecError> {
        #[cfg(feature = "engine")]
        match self {
            // the plan IR's rows are of floats: a table holding native histograms is read by
            // the relational engine, which gives it its histogram column
            Statement::Select(query)
                if !query.sql.is_empty() && holds_histograms(querier.as_ref(), &query.table)? =>
            {
                let sql = crate::engine::epoch_seconds_as_times(&query.sql);
                crate::compile::engine_may_plan(&sql).map_err(ExecError::Refused)?;
                return crate::engine::run(&sql, querier, settings);
            }
            Statement::Engine { sql, refused, lowered } => {
                crate::compile::engine_may_plan(sql).map_err(ExecError::Refused)?;
                let answer = crate::engine::run(sql, querier, settings);
                let unplanned = |e: &ExecError| {
                    e.others_may_answer()
                        || matches!(e, ExecError::Sql { state, .. } if state.starts_with("42") || *state == "0A000")
                };
                // `ts` bounds in epoch seconds, which PostgreSQL does not compare, are
                // promflow's extension: read as times where the statement has no other sense
                if lowered.is_none() && answer.as_ref().is_err_and(unplanned) {
                    let times = crate::engine::epoch_seconds_as_times(sql);
                    if times != *sql {
                        if let Ok(rows) = crate::engine::run(&times, querier, settings) {
                            return Ok(rows);
                        }
                    }
                }
                // what the engine cannot plan, the IR answers when it expresses the statement
                if let (Some(query), Err(e)) = (lowered, &answer) {
                    if unplanned(e) {
                        tracing::debug!(error = %e, sql = %sql, "the relational engine cannot run a statement; the plan IR answers it");
                        return crate::compile::on_deep_stack(|| {
                            run(query, querier.as_ref(), settings, Instant::now() + settings.timeout)
                        });
                    }
                }
                // the engine's planning errors are of its own making: the lowering's says what
                // promflow takes
                return match answer {
                    // the lowering knows promflow's functions (`rate`, `histogram_quantile`, …)
                    // and its refusal says why it cannot use them here
                    Err(ExecError::Sql { state: "42883", .. }) => Err(ExecError::Refused(refused.clone())),
                    Err(ExecError::Catalog(e)) => {
                        tracing::debug!(error = %e, sql = %sql, "the relational engine cannot run a statement either");
                        Err(ExecError::Refused(refused.clone()))
                    }
                    answer => answer,
                };
            }
            // joins, CTEs and subqueries over metrics, and statements of no table: the
            // relational engine, or the interpreter for what it cannot plan (PostgreSQL's
            // catalog functions, statements too long to plan); when neither answers, the
            // engine's error stands
            Statement::Relational(query, _) | Statement::Expression(query) => {
                let sql = query.to_string();
                if crate::compile::engine_may_plan(&sql).is_ok() {
                    match crate::engine::run(&sql, querier, settings) {
                        Err(e) if e.others_may_answer() => {
                            tracing::debug!(error = %e, "the relational engine cannot run a statement; interpreting it");
                            return crate::compile::on_deep_stack(|| {
                                self.execute_here(querier.as_ref(), settings)
                            })
                            .map_err(|interpreted| match interpreted {
                                ExecError::Catalog(_) => e,
                                other => other,
                            });
                        }
                        answer => return answer,
                    }
                }
            }
            _ => {}
        }
        crate::compile::on_deep_stack(|| self.execute_here(querier.as_ref(), settings))
    }

    /// [`Statement::execute`] on the caller's stack.
    fn execute_here(&self, querier: &dyn Querier, settings: &Settings) -> Result<Rows, ExecError> {
        match self {
            Statement::Engine { refused, .. } => Err(ExecError::Refused(refused.clone())),
            Statement::Explain(query) => {
                // one row per part, with its first segment's plan (the others differ in ranges)
                let rows = query
                    .parts
                    .iter()
                    .map(|p| {
                        vec![
                            Cell::Text(p.name.as_str().into()),
                            Cell::Text(p.segments[0].0.to_string().into()),
                        ]
                    })
                    .collect();
                Ok(Rows::new(vec![Column::text("column"), Column::text("plan")], rows))
            }
            Statement::ShowTables => {
                Ok(Rows::tables(querier.label_values("__name__", &[], ALL_TIME.0, ALL_TIME.1)?))
            }
            Statement::Describe(metric) => {
                let name = Matcher::new(MatchOp::Equal, "__name__", metric.as_str())?;
                let names = querier.label_names(std::slice::from_ref(&name), ALL_TIME.0, ALL_TIME.1)?;
                if names.is_empty() {
                    return Err(ExecError::NoTable(metric.clone()));
                }
                Ok(Rows::describe(&names, querier.has_histograms(&[name], ALL_TIME.0, ALL_TIME.1)?))
            }
            Statement::Catalog(query) | Statement::Expression(query) => {
                crate::catalog::answer(query, querier, None, settings)
            }
            Statement::Relational(query, now) => {
                let metrics = crate::catalog::Metrics { settings, now: *now };
                crate::catalog::answer(query, querier, Some(metrics), settings)
            }
            Statement::Select(query) => run(query, querier, settings, Instant::now() + settings.timeout),
        }
    }
}

/// Whether the table of metric `table` holds native histograms (it has a histogram column).
pub(crate) fn holds_histograms(querier: &dyn Querier, table: &str) -> Result<bool, ExecError> {
    let metric = Matcher::new(MatchOp::Equal, "__name__", table)?;
    Ok(querier.has_histograms(&[metric], ALL_TIME.0, ALL_TIME.1)?)
}

/// The rows of a single metric's query: its plans evaluated, then turned into rows.
pub(crate) fn run(
    query: &Query,
    querier: &dyn Querier,
    settings: &Settings,
    deadline: Instant,
) -> Result<Rows, ExecError> {
    // a table is a metric that has series at any time, as `SHOW TABLES` lists them
    let tables = querier.label_values("__name__", &[], ALL_TIME.0, ALL_TIME.1)?;
    if !tables.contains(&query.table) {
        return Err(ExecError::NoTable(query.table.clone()));
    }
    // its rows would lack the histograms: only the relational engine reads them
    if holds_histograms(querier, &query.table)? {
        return Err(ExecError::Sql {
            state: "0A000",
            message: format!(
                "table \"{}\" holds native histograms: this statement's form reads floats only",
                query.table
            ),
        });
    }
    let star = query.columns.iter().any(|c| c.source == Source::Star);
    let mut expanded = None;
    if !query.labels.is_empty() || star {
        let metric = Matcher::new(MatchOp::Equal, "__name__", query.table.as_str())?;
        let columns = querier.label_names(&[metric], ALL_TIME.0, ALL_TIME.1)?;
        // `*` is every column of the table, as in PostgreSQL: the label names of all the
        // metric's series, not only of those the query reads (a label they lack is NULL)
        if star {
            let mut q = query.clone();
            q.columns = query
                .columns
                .iter()
                .flat_map(|c| match c.source {
                    Source::Star => crate::rows::table_columns(&columns, false)
                        .into_iter()
                        .map(|(name, _)| match name.as_str() {
                            "ts" => Column { name, source: Source::Ts },
                            "value" => Column { name, source: Source::Value },
                            _ => Column { source: Source::Label(label_of_column(&name).to_string()), name },
                        })
                        .collect::<Vec<_>>(),
                    _ => vec![c.clone()],
                })
                .collect();
            expanded = Some(q);
        }
        // a label no series of the metric has is not one of its columns
        if let Some(missing) = query.labels.iter().find(|l| !columns.contains(l)) {
            let column = match missing.as_str() {
                "ts" | "value" => format!("label_{missing}"),
                other => other.to_string(),
            };
            return Err(ExecError::Sql {
                state: "42703",
                message: format!("column \"{column}\" does not exist"),
            });
        }
    }
    let query = expanded.as_ref().unwrap_or(query);
    let querier = Within { querier, lo: query.bounds.0, hi: query.bounds.1, reads: Mutex::default() };
    let mut results = Vec::with_capacity(query.parts.len());
    for part in &query.parts {
        let mut segments = Vec::with_capacity(part.segments.len());
        for (plan, eval) in &part.segments {
            let opts = QueryOptions {
                start: eval.start,
                end: eval.end,
                step: eval.step,
                lookback_ms: settings.lookback_ms,
                max_samples: settings.max_samples,
                deadline: Some(deadline),
                delayed_name_removal: false,
                use_start_timestamps: false,
                range_query: eval.start != eval.end,
                canceled: settings.canceled.clone(),
            };
            segments.push(promflow_batch::evaluate(plan, &querier, &opts)?.result);
        }
        results.push(segments);
    }
    Ok(query.rows(results))
}

/// A querier that reads only the samples within `lo..=hi`: a query's `ts` bounds.
struct Within<'q> {
    querier: &'q dyn Querier,
    lo: Timestamp,
    hi: Timestamp,
    /// The selections read so far, by matchers and range: a query's plans (`count(*)`,
    /// `avg`'s sum and count, `max`) select the same series over the same range, and each
    /// is read and decoded once. The series' samples share their buffers with the reads'.
    reads: Mutex<Vec<Read>>,
}

/// A selection [`Within`] has read: its matchers (name, operator, value), range and series.
struct Read {
    matchers: Vec<(String, MatchOp, String)>,
    mint: Timestamp,
    maxt: Timestamp,
    series: Vec<Series>,
}

impl Within<'_> {
    /// A read's range narrowed to the bounds.
    fn clip(&self, mint: Timestamp, maxt: Timestamp) -> (Timestamp, Timestamp) {
        (mint.max(self.lo), maxt.min(self.hi))
    }
}

impl Querier for Within<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, promflow_storage::Error> {
        let (mint, maxt) = self.clip(mint, maxt);
        let key: Vec<_> = matchers.iter().map(|m| (m.name.clone(), m.op, m.value.clone())).collect();
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(read) = reads.iter().find(|r| r.matchers == key && r.mint == mint && r.maxt == maxt) {
            return Ok(read.series.clone());
        }
        let series = self.querier.select(matchers, mint, maxt)?;
        reads.push(Read { matchers: key, mint, maxt, series: series.clone() });
        Ok(series)
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<promflow_storage::HistogramSeries>, promflow_storage::Error> {
        let (mint, maxt) = self.clip(mint, maxt);
        self.querier.select_histograms(matchers, mint, maxt)
    }

    fn has_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<bool, promflow_storage::Error> {
        let (mint, maxt) = self.clip(mint, maxt);
        self.querier.has_histograms(matchers, mint, maxt)
    }

    fn select_start_timestamps(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<promflow_storage::StartTimestamps>, promflow_storage::Error> {
        let (mint, maxt) = self.clip(mint, maxt);
        self.querier.select_start_timestamps(matchers, mint, maxt)
    }

    fn series(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Labels>, promflow_storage::Error> {
        let (mint, maxt) = self.clip(mint, maxt);
        self.querier.series(matchers, mint, maxt)
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        let (mint, maxt) = self.clip(mint, maxt);
        self.querier.label_names(matchers, mint, maxt)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        let (mint, maxt) = self.clip(mint, maxt);
        self.querier.label_values(name, matchers, mint, maxt)
    }
}
