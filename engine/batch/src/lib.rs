//! The batch executor: evaluates a [`Plan`] at every step of a query, one operator at a
//! time, over storage's [`Querier`].
//!
//! Every operator works on whole step ranges: an instant-valued node yields, per series, one
//! optional value per step, so a range query costs one pass per operator rather than one
//! evaluation per step. Window and value functions call [`promflow_kernels`].
#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use promflow_storage::{
    aligned_starts, is_stale_nan, FloatHistogram, HistogramSample, HistogramSeries, Labels, Matcher, Querier,
    Sample, SampleSlice, Samples, Series, StartRun, StartTimestamps, METRIC_NAME,
};

use promflow_kernels::{self as kernels, aggregate_values, combine, extended_window, start, WindowBounds};
use promflow_plan::semantics::{
    absent_labels, compile_relabel, effective_info_name_matchers, grouping_key, parse_le, relabel_one,
    result_labels, strip_metric_identity, INFO_IDENTIFYING_LABELS,
};
use promflow_plan::{
    AggOp, Annotations, BinOp, Cardinality, Edges, Error, Grouping, Level, MapFn, Origin, Plan, Relabel,
    Stop, TimeShift, ValueKind, VectorFn, WindowFn,
};
pub use promflow_plan::{Evaluation, QueryOptions, QueryResult};
pub use pushdown::{evaluate_partial, pushable, AggregatePushdown, PartialAggregate, PartialGroup, Steps};

mod pushdown;
use promflow_storage::gofmt::format_g as go_format_g;

/// One series of an instant-valued intermediate: a value or nothing at each step.
#[derive(Clone, Debug)]
struct StepSeries {
    labels: Labels,
    values: Vec<Option<f64>>,
    /// The native histogram at each step where the series' value is one (`values` has
    /// nothing there); empty when it has none at any step, as most series have.
    hists: Vec<Option<Arc<FloatHistogram>>>,
    /// With delayed name removal: the metric name is to be removed at the end of the query.
    drop_name: bool,
}

impl StepSeries {
    fn new(labels: Labels, values: Vec<Option<f64>>) -> Self {
        StepSeries { labels, values, hists: Vec::new(), drop_name: false }
    }

    /// The histogram at step `i`, if the value there is one.
    fn hist(&self, i: usize) -> Option<&Arc<FloatHistogram>> {
        self.hists.get(i).and_then(Option::as_ref)
    }

    /// Whether the series has a value, float or histogram, at some step.
    fn has_any(&self) -> bool {
        self.values.iter().any(Option::is_some) || self.hists.iter().any(Option::is_some)
    }

    /// Whether the series has a value, float or histogram, at step `i`.
    fn has(&self, i: usize) -> bool {
        self.values[i].is_some() || self.hist(i).is_some()
    }

    /// The value at step `i` as an operand of a binary operator.
    fn operand(&self, i: usize) -> Option<kernels::native::Operand<'_>> {
        match (self.values[i], self.hist(i)) {
            (Some(v), _) => Some(kernels::native::Operand::Float(v)),
            (None, Some(h)) => Some(kernels::native::Operand::Histogram(h)),
            (None, None) => None,
        }
    }

    /// Sets the histogram at step `i` (the float there goes).
    fn set_hist(&mut self, i: usize, h: Option<Arc<FloatHistogram>>) {
        self.values[i] = None;
        if h.is_some() && self.hists.is_empty() {
            self.hists = vec![None; self.values.len()];
        }
        if let Some(slot) = self.hists.get_mut(i) {
            *slot = h;
        }
    }

    /// Takes out whatever the series has at step `i`.
    fn clear(&mut self, i: usize) {
        self.values[i] = None;
        if let Some(slot) = self.hists.get_mut(i) {
            *slot = None;
        }
    }
}

/// What an instant selection answers for each sample it selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selected {
    /// The sample itself.
    Values,
    /// Its timestamp in seconds (`timestamp`).
    Timestamps,
    /// Its start timestamp in seconds, 0 where it has none (`start_timestamp`).
    StartTimestamps,
}

/// A range-valued intermediate: each series' samples and how to find its window at a step.
struct RangeValue {
    series: Vec<(Labels, Samples)>,
    /// The series' native-histogram samples (sorted by labels; a series may be in both lists).
    hists: Vec<(Labels, Vec<HistogramSample>)>,
    range_ms: i64,
    shift: TimeShift,
    /// Anchored and smoothed windows also hold the samples up to `lookback_ms` beyond their
    /// edges (see [`RangeValue::widened`]).
    edges: Edges,
    lookback_ms: i64,
    /// The series' start timestamps (sorted by labels), read for the counter functions when
    /// queries use them; a subquery's windows have none.
    starts: Vec<StartTimestamps>,
}

impl RangeValue {
    /// The start-timestamp runs of the series `labels` (empty when it has none).
    fn starts_of(&self, labels: &Labels) -> &[StartRun] {
        match self.starts.binary_search_by(|s| s.labels.cmp(labels)) {
            Ok(i) => &self.starts[i].runs,
            Err(_) => &[],
        }
    }

    /// The window at `step`.
    fn bounds(&self, step: i64, query_start: i64, query_end: i64) -> WindowBounds {
        let end = self.shift.apply(step, query_start, query_end);
        WindowBounds { start: end - self.range_ms, end, eval_time: step }
    }

    /// The samples an anchored or smoothed window reads: those within the lookback before its
    /// start too, and for smoothed those within the lookback after its end.
    fn widened<'s>(&self, samples: SampleSlice<'s>, b: WindowBounds) -> SampleSlice<'s> {
        let after = if self.edges == Edges::Smoothed { self.lookback_ms } else { 0 };
        window_slice(
            samples,
            WindowBounds { start: b.start - self.lookback_ms, end: b.end + after, eval_time: b.eval_time },
        )
    }

    /// [`RangeValue::widened`] for a series' histograms.
    fn widened_histograms<'h>(&self, hists: &'h [HistogramSample], b: WindowBounds) -> &'h [HistogramSample] {
        let after = if self.edges == Edges::Smoothed { self.lookback_ms } else { 0 };
        histogram_window(hists, b.start - self.lookback_ms, b.end + after)
    }
}

enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<StepSeries>),
    Range(RangeValue),
    Str(String),
}

struct Ctx<'a> {
    querier: &'a dyn Querier,
    opts: QueryOptions,
    steps: Vec<i64>,
    /// Samples held now, what `--query.max-samples` bounds: a group of a window's series
    /// counts only while it is held ([`Ctx::each_range_group`]).
    samples_loaded: usize,
    /// Samples read from storage over the whole evaluation, never lowered: what
    /// [`Evaluation::samples`] reports (the query log's `totalQueryableSamples`, and what a
    /// subscription's view will hold once it has read its history).
    samples_read: usize,
    /// The outermost query's start and end: what `@ start()` and `@ end()` mean, also inside
    /// subqueries, whose own steps cover another range.
    query_start: i64,
    query_end: i64,
    annotations: Annotations,
    /// Inside `histogram_count`, `histogram_sum` or `histogram_avg`: histograms are read as
    /// Prometheus's `HistogramStatsIterator` reads them, with each counter-reset hint that
    /// storage left unknown worked out against the sample before (see [`stats_hints`]).
    histogram_stats: bool,
    /// Inside a subquery, `histogram_quantile`/`histogram_fraction` or a trim operator, which
    /// read the buckets: histograms keep the hints storage gave them.
    needs_buckets: bool,
    /// Where aggregations are evaluated in parts (a cluster's nodes), if anywhere.
    pushdown: Option<&'a dyn AggregatePushdown>,
}

/// Evaluates `plan` over `querier` at the steps of `opts`. An instant query (start == end)
/// returns the value's own shape; a range query always returns a matrix.
pub fn evaluate(plan: &Plan, querier: &dyn Querier, opts: &QueryOptions) -> Result<Evaluation, Error> {
    evaluate_with(plan, querier, opts, None)
}

/// [`evaluate`], asking `pushdown` first for the parts of each aggregation it can be asked
/// for ([`pushable`]).
///
/// A range query whose steps span more than a day and that reads more samples than the limit
/// is evaluated again a day of steps at a time, each slice reading only the samples its steps
/// need, and the slices' series joined: the sample limit then bounds what one slice holds,
/// as Prometheus's bounds what it holds at once, instead of the whole range's samples (a
/// week of `rate(…[1h])` over a few thousand series reads more than the default 50
/// million). A slice that still loads too many samples is split in halves, down to single
/// steps. The points of the joined result count against the limit too. A query within the
/// limit is evaluated whole: slices read the samples where their windows overlap twice, and
/// a block's rows for a series once per slice.
pub fn evaluate_with(
    plan: &Plan,
    querier: &dyn Querier,
    opts: &QueryOptions,
    pushdown: Option<&dyn AggregatePushdown>,
) -> Result<Evaluation, Error> {
    let whole = evaluate_steps(plan, querier, opts, (opts.start, opts.end), pushdown);
    let instant = opts.start == opts.end && !opts.range_query;
    if instant || !matches!(whole, Err(Error::TooManySamples(_))) {
        return whole;
    }
    // the steps are listed again only for a query over the limit
    let steps = opts.steps();
    let per_slice = (SLICE_SPAN_MS / opts.step.max(1)).max(1) as usize;
    if steps.len() <= per_slice {
        return whole;
    }
    let mut pending: Vec<&[i64]> = steps.chunks(per_slice).rev().collect();
    let mut joined = Sliced::default();
    while let Some(slice) = pending.pop() {
        let slice_opts =
            QueryOptions { start: slice[0], end: slice[slice.len() - 1], range_query: true, ..opts.clone() };
        match evaluate_steps(plan, querier, &slice_opts, (opts.start, opts.end), pushdown) {
            Err(Error::TooManySamples(_)) if slice.len() > 1 => {
                let (first, second) = slice.split_at(slice.len() / 2);
                pending.extend([second, first]);
            }
            Err(e) => return Err(e),
            Ok(part) => joined.add(part, opts.max_samples)?,
        }
    }
    Ok(joined.finish())
}

/// The span of steps a slice of a long range query covers ([`evaluate_with`]).
const SLICE_SPAN_MS: i64 = 86_400_000;

/// The slices of a range query evaluated so far, joined by series.
#[derive(Default)]
struct Sliced {
    floats: BTreeMap<Labels, Vec<Sample>>,
    histograms: BTreeMap<Labels, Vec<HistogramSample>>,
    annotations: Annotations,
    samples: usize,
    points: usize,
}

impl Sliced {
    /// Adds the next slice (later steps than every slice before); refuses a join that
    /// would hold more points than `max_samples`.
    fn add(&mut self, part: Evaluation, max_samples: usize) -> Result<(), Error> {
        self.samples += part.samples;
        self.annotations.merge(part.annotations);
        if let QueryResult::Matrix(series) = part.result {
            for s in series {
                self.points += s.samples.len();
                self.floats.entry(s.labels).or_default().extend(s.samples.iter());
            }
        }
        for h in part.histograms {
            self.points += h.samples.len();
            self.histograms.entry(h.labels).or_default().extend(h.samples);
        }
        if self.points > max_samples {
            return Err(Error::TooManySamples("query execution"));
        }
        Ok(())
    }

    fn finish(self) -> Evaluation {
        Evaluation {
            result: QueryResult::Matrix(
                self.floats
                    .into_iter()
                    .map(|(labels, samples)| Series { labels, samples: samples.into_iter().collect() })
                    .collect(),
            ),
            annotations: self.annotations,
            samples: self.samples,
            histograms: self
                .histograms
                .into_iter()
                .map(|(labels, samples)| HistogramSeries { labels, samples })
                .collect(),
        }
    }
}

/// [`evaluate_with`] over the steps of `opts` alone, in a query that spans `query_span`
/// (what `@ start()` and `@ end()` mean).
fn evaluate_steps(
    plan: &Plan,
    querier: &dyn Querier,
    opts: &QueryOptions,
    query_span: (i64, i64),
    pushdown: Option<&dyn AggregatePushdown>,
) -> Result<Evaluation, Error> {
    let mut ctx = Ctx {
        querier,
        opts: opts.clone(),
        steps: opts.steps(),
        samples_loaded: 0,
        samples_read: 0,
        query_start: query_span.0,
        query_end: query_span.1,
        annotations: Annotations::default(),
        histogram_stats: false,
        needs_buckets: false,
        pushdown,
    };
    let instant = opts.start == opts.end && !opts.range_query;
    if !instant && !matches!(plan.kind(), ValueKind::Scalar | ValueKind::Instant) {
        return Err(Error::Plan(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            plan.kind().name()
        )));
    }
    let value = match ctx.eval(plan)? {
        Value::Vector(v) => Value::Vector(finish_names(v)?),
        other => other,
    };
    let steps = ctx.steps.clone();
    let histograms = match &value {
        Value::Vector(series) => step_histograms(series, &steps, instant),
        Value::Range(r) => {
            let b = r.bounds(steps[0], opts.start, opts.end);
            r.hists
                .iter()
                .filter_map(|(labels, samples)| {
                    let w = histogram_window(samples, b.start, b.end);
                    (!w.is_empty()).then(|| HistogramSeries { labels: labels.clone(), samples: w.to_vec() })
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let result = match value {
        Value::Str(s) => QueryResult::String(opts.start, s),
        Value::Scalar(vals) if instant => QueryResult::Scalar(opts.start, vals[0]),
        Value::Scalar(vals) => QueryResult::Matrix(vec![Series {
            labels: Labels::new(),
            samples: Samples::new(steps.clone(), vals),
        }]),
        Value::Vector(series) if instant => {
            let mut out: Vec<(Labels, i64, f64)> =
                series.into_iter().filter_map(|s| s.values[0].map(|v| (s.labels, opts.start, v))).collect();
            if !preserves_order(plan) {
                out.sort_by(|a, b| a.0.cmp(&b.0));
            }
            QueryResult::Vector(out)
        }
        Value::Vector(series) => {
            let mut out: Vec<Series> = series
                .into_iter()
                .filter_map(|s| {
                    let samples: Samples = steps
                        .iter()
                        .zip(&s.values)
                        .filter_map(|(&t, v)| v.map(|v| Sample { t, v }))
                        .collect();
                    (!samples.is_empty()).then_some(Series { labels: s.labels, samples })
                })
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryResult::Matrix(out)
        }
        Value::Range(r) => {
            let bounds = r.bounds(steps[0], opts.start, opts.end);
            let mut out: Vec<Series> = r
                .series
                .iter()
                .filter_map(|(labels, samples)| {
                    let w = match r.edges {
                        Edges::Plain => window_slice(samples.view(), bounds).to_samples(),
                        edges => kernels::extend_window(
                            r.widened(samples.view(), bounds),
                            bounds,
                            edges == Edges::Smoothed,
                        ),
                    };
                    (!w.is_empty()).then(|| Series { labels: labels.clone(), samples: w })
                })
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryResult::Matrix(out)
        }
    };
    Ok(Evaluation { result, annotations: ctx.annotations, samples: ctx.samples_read, histograms })
}

/// The histogram points of an instant-valued result (at the first step only for an instant
/// query), sorted by labels.
fn step_histograms(series: &[StepSeries], steps: &[i64], instant: bool) -> Vec<HistogramSeries> {
    let steps = if instant { &steps[..1] } else { steps };
    let mut out: Vec<HistogramSeries> = series
        .iter()
        .filter(|s| !s.hists.is_empty())
        .filter_map(|s| {
            let samples: Vec<HistogramSample> = steps
                .iter()
                .enumerate()
                .filter_map(|(i, &t)| s.hist(i).map(|h| HistogramSample { t, h: Arc::clone(h) }))
                .collect();
            (!samples.is_empty()).then(|| HistogramSeries { labels: s.labels.clone(), samples })
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

/// The histogram samples (sorted by time) in the window `(start, end]`.
fn histogram_window(samples: &[HistogramSample], start: i64, end: i64) -> &[HistogramSample] {
    let from = samples.partition_point(|s| s.t <= start);
    let to = samples.partition_point(|s| s.t <= end);
    &samples[from..to.max(from)]
}

/// Works out the counter-reset hints storage left unknown, as Prometheus's
/// `HistogramStatsIterator` does for `histogram_count`, `histogram_sum` and `histogram_avg`,
/// which read no buckets: a histogram after another is a reset or not by comparing the two
/// (the first read keeps its hint). Aggregations then see the hints, and warn where a reset
/// meets a histogram that says it is none.
fn stats_hints(samples: &mut [HistogramSample]) {
    use promflow_storage::native_histogram::CounterResetHint::{CounterReset, NotCounterReset, Unknown};
    for i in 1..samples.len() {
        if samples[i].h.hint != Unknown {
            continue;
        }
        let reset = samples[i].h.detect_reset(&samples[i - 1].h);
        Arc::make_mut(&mut samples[i].h).hint = if reset { CounterReset } else { NotCounterReset };
    }
}

/// Forgets the reset hints of `samples` ([`kernels::native::forget_reset_hint`]).
fn forget_reset_hints(samples: &mut [HistogramSample]) {
    samples.iter_mut().for_each(|s| kernels::native::forget_reset_hint(&mut s.h));
}

/// Joins each series' float samples with its histogram samples (both lists sorted by labels):
/// (labels, floats, histograms if it has any), sorted by labels.
fn with_histograms(
    floats: Vec<(Labels, Samples)>,
    hists: Vec<(Labels, Vec<HistogramSample>)>,
) -> Vec<(Labels, Samples, Option<Vec<HistogramSample>>)> {
    if hists.is_empty() {
        return floats.into_iter().map(|s| (s.0, s.1, None)).collect();
    }
    let mut out = Vec::with_capacity(floats.len().max(hists.len()));
    let mut floats = floats.into_iter().peekable();
    let mut hists = hists.into_iter().peekable();
    loop {
        let order = match (floats.peek(), hists.peek()) {
            (Some(f), Some(h)) => f.0.cmp(&h.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        match order {
            std::cmp::Ordering::Less => {
                let f = floats.next().expect("peeked");
                out.push((f.0, f.1, None));
            }
            std::cmp::Ordering::Greater => {
                let h = hists.next().expect("peeked");
                out.push((h.0, Samples::default(), Some(h.1)));
            }
            std::cmp::Ordering::Equal => {
                let (f, h) = (floats.next().expect("peeked"), hists.next().expect("peeked"));
                out.push((f.0, f.1, Some(h.1)));
            }
        }
    }
    out
}

/// Prometheus's info about a quantile or fraction of a histogram with NaN observations.
fn nan_note_text(note: kernels::native::NaNNote, name: &str) -> String {
    use kernels::native::NaNNote;
    let mut text = match note {
        NaNNote::QuantileIsNaN => "input to histogram_quantile has NaN observations, result is NaN",
        NaNNote::QuantileSkewed => {
            "input to histogram_quantile has NaN observations, result is skewed higher"
        }
        NaNNote::FractionExcludes => {
            "input to histogram_fraction has NaN observations, which are excluded from all fractions"
        }
    }
    .to_string();
    if !name.is_empty() {
        text.push_str(&format!(" for metric name {name:?}"));
    }
    text
}

/// Whether the plan's top operator defines the order of an instant result.
fn preserves_order(plan: &Plan) -> bool {
    matches!(
        plan,
        Plan::VectorFunction {
            func: VectorFn::Sort | VectorFn::SortDesc | VectorFn::SortByLabel | VectorFn::SortByLabelDesc,
            ..
        } | Plan::Aggregate { op: AggOp::Topk | AggOp::Bottomk, .. }
    )
}

/// The samples of `samples` (sorted by time) inside `bounds`.
fn window_slice(samples: SampleSlice<'_>, b: WindowBounds) -> SampleSlice<'_> {
    samples.window(b.start, b.end)
}

impl Ctx<'_> {
    fn check_deadline(&self) -> Result<(), Error> {
        self.opts.stop().check()
    }

    /// Refuses, before anything is allocated, an output of one value per step for each of
    /// `series` series that alone would hold more points than the sample limit; checks the
    /// deadline, as every operator does before its loop over series.
    fn reserve_steps(&self, series: usize) -> Result<(), Error> {
        if series.saturating_mul(self.steps.len()) > self.opts.max_samples {
            return Err(Error::TooManySamples("query execution"));
        }
        self.check_deadline()
    }

    fn count_samples(&mut self, n: usize) -> Result<(), Error> {
        self.samples_loaded += n;
        self.samples_read += n;
        if self.samples_loaded > self.opts.max_samples {
            return Err(Error::TooManySamples("query execution"));
        }
        Ok(())
    }

    /// The histograms of the matching series in `mint..=maxt`. Under `histogram_count`,
    /// `histogram_sum` and `histogram_avg` their unknown reset hints are worked out as
    /// Prometheus's reader yields them ([`stats_hints`]), the first one in the range against
    /// the sample before it when there is one within a lookback: Prometheus's chunks say
    /// "no reset" of every histogram but a chunk's first, and a chunk starts at a reset.
    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<HistogramSeries>, Error> {
        if !self.histogram_stats || self.needs_buckets {
            return Ok(self.querier.select_histograms(matchers, mint, maxt)?);
        }
        let mut hists =
            self.querier.select_histograms(matchers, mint.saturating_sub(self.opts.lookback_ms), maxt)?;
        for h in hists.iter_mut() {
            stats_hints(&mut h.samples);
            h.samples.retain(|s| s.t >= mint);
        }
        hists.retain(|h| !h.samples.is_empty());
        Ok(hists)
    }

    fn anchored_span(&self, shift: &TimeShift) -> (i64, i64) {
        let (first, last) = (self.steps[0], *self.steps.last().unwrap_or(&self.steps[0]));
        let a = shift.apply(first, self.query_start, self.query_end);
        let b = shift.apply(last, self.query_start, self.query_end);
        (a.min(b), a.max(b))
    }

    fn eval(&mut self, plan: &Plan) -> Result<Value, Error> {
        self.check_deadline()?;
        let n = self.steps.len();
        Ok(match plan {
            Plan::Number(v) => Value::Scalar(vec![*v; n]),
            Plan::Str(s) => Value::Str(s.clone()),
            Plan::Time => Value::Scalar(self.steps.iter().map(|&t| t as f64 / 1000.0).collect()),
            Plan::QueryTime(at) => {
                let shift = TimeShift { offset_ms: 0, at: *at };
                let t = |step| shift.apply(step, self.query_start, self.query_end) as f64 / 1000.0;
                Value::Scalar(self.steps.iter().map(|&s| t(s)).collect())
            }
            Plan::Select { matchers, shift, edges: Edges::Smoothed, origin } => {
                Value::Vector(self.select_smoothed(matchers, shift, origin)?)
            }
            Plan::Select { matchers, shift, .. } => {
                Value::Vector(self.select(matchers, shift, Selected::Values)?)
            }
            Plan::Window { matchers, range_ms, shift, edges } => {
                let (mut r, (mint, maxt)) = self.window_frame(matchers, *range_ms, shift, *edges)?;
                let series = self.querier.select(matchers, mint, maxt)?;
                r.series = self.window_series(series)?;
                Value::Range(r)
            }
            Plan::SubWindow { input, range_ms, step_ms, shift } => {
                self.subquery(input, *range_ms, *step_ms, shift)?
            }
            Plan::WindowFunction { func, input, args, origin } => {
                self.window_function(*func, input, args, origin)?
            }
            Plan::Map { func, input, args } => self.map(*func, input, args)?,
            Plan::VectorFunction { func, input, args, labels, origin } => {
                self.vector_function(*func, input, args, labels, origin)?
            }
            Plan::Aggregate { op, grouping, param, input, origin } => {
                let combined = match self.pushed_down(plan) {
                    Some(parts) if pushdown::by_members(*op) => {
                        let param = self.aggregate_param(*op, param.as_deref())?;
                        match pushdown::members(parts, n, &mut self.annotations) {
                            Some(members) => {
                                Some(self.aggregate_vector(*op, grouping, &param, members, origin)?)
                            }
                            None => {
                                if let Some(pushdown) = self.pushdown {
                                    pushdown.parts_unused();
                                }
                                None
                            }
                        }
                    }
                    Some(parts) => {
                        let (k, _) = self.aggregate_param(*op, param.as_deref())?;
                        let combined = pushdown::combine(*op, grouping, &k, parts, n, &mut self.annotations);
                        if let (None, Some(pushdown)) = (&combined, self.pushdown) {
                            pushdown.parts_unused();
                        }
                        combined
                    }
                    None => None,
                };
                match combined {
                    Some(v) => Value::Vector(v),
                    None => self.aggregate(*op, grouping, param.as_deref(), input, origin)?,
                }
            }
            Plan::AggregateSamples { op, grouping, param, descending, input } => {
                self.aggregate_samples(*op, grouping, *param, *descending, input)?
            }
            Plan::Join { op, lhs, rhs, key, return_bool, origin } => {
                // trimming reads buckets: histograms keep the hints storage gave them
                let outer = self.needs_buckets;
                self.needs_buckets |= op.is_trim();
                let operands = self.eval_vector(lhs).and_then(|l| Ok((l, self.eval_vector(rhs)?)));
                self.needs_buckets = outer;
                let (l, r) = operands?;
                if op.is_set() {
                    Value::Vector(set_op(*op, l, r, &key.grouping, self.opts.stop())?)
                } else {
                    let delayed = self.opts.delayed_name_removal;
                    let (joined, notes) = join(*op, l, r, key, *return_bool, delayed, self.opts.stop())?;
                    self.note_binary(*op, notes, origin);
                    Value::Vector(joined)
                }
            }
            Plan::ScalarOp { op, lhs, rhs, return_bool } => self.scalar_op(*op, lhs, rhs, *return_bool)?,
            Plan::Relabel { rule, input } => {
                let v = self.eval_vector(input)?;
                Value::Vector(relabel(rule, v)?)
            }
            Plan::Info { input, data_matchers, shift } => {
                let v = self.eval_vector(input)?;
                Value::Vector(self.info(v, data_matchers.as_deref(), shift)?)
            }
            Plan::ToVector(input) => {
                let s = self.eval_scalar(input)?;
                Value::Vector(vec![StepSeries::new(Labels::new(), s.into_iter().map(Some).collect())])
            }
        })
    }

    /// The parts of the aggregation `plan` from the pushdown, when there is one and it has
    /// them.
    fn pushed_down(&self, plan: &Plan) -> Option<Vec<PartialAggregate>> {
        let pushdown =
            self.pushdown.filter(|_| pushable(plan) && pushdown::parts_wanted(plan, &self.opts))?;
        let steps = Steps {
            start: self.opts.start,
            end: self.opts.end,
            step: self.opts.step,
            query_start: self.query_start,
            query_end: self.query_end,
        };
        pushdown.partials(plan, steps, pushdown::names_may_collide(plan, &self.opts))
    }

    fn eval_vector(&mut self, plan: &Plan) -> Result<Vec<StepSeries>, Error> {
        match self.eval(plan)? {
            Value::Vector(v) => Ok(v),
            _ => Err(Error::Plan(format!("expected instant vector, got {}", plan.kind().name()))),
        }
    }

    fn eval_scalar(&mut self, plan: &Plan) -> Result<Vec<f64>, Error> {
        match self.eval(plan)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(Error::Plan(format!("expected scalar, got {}", plan.kind().name()))),
        }
    }

    fn eval_range(&mut self, plan: &Plan) -> Result<RangeValue, Error> {
        match self.eval(plan)? {
            Value::Range(r) => Ok(r),
            _ => Err(Error::Plan(format!("expected range vector, got {}", plan.kind().name()))),
        }
    }

    /// Smoothed instant selection: per step, the value at the step's time interpolated from
    /// the samples within the lookback on either side (see [`kernels::smoothed_value`], and
    /// [`kernels::native::smoothed_histogram`] for histograms). A series with floats and
    /// histograms within the lookback of a step has no value there, with a warning.
    fn select_smoothed(
        &mut self,
        matchers: &[Matcher],
        shift: &TimeShift,
        origin: &Origin,
    ) -> Result<Vec<StepSeries>, Error> {
        let (lo, hi) = self.anchored_span(shift);
        let lookback = self.opts.lookback_ms;
        let (mint, maxt) = (lo - lookback + 1, hi + lookback);
        let series = self.querier.select(matchers, mint, maxt)?;
        let hists = self.querier.select_histograms(matchers, mint, maxt)?;
        let series = with_histograms(
            series.into_iter().map(|s| (s.labels, s.samples)).collect(),
            hists.into_iter().map(|h| (h.labels, h.samples)).collect(),
        );
        self.reserve_steps(series.len())?;
        let mut out = Vec::with_capacity(series.len());
        for (labels, floats, hists) in series {
            self.check_deadline()?;
            let samples = floats.without_stale_markers();
            let hists = hists.unwrap_or_default();
            self.count_samples(samples.len() + hists.len())?;
            let mut values = Vec::with_capacity(self.steps.len());
            let mut step_hists: Vec<Option<Arc<FloatHistogram>>> = Vec::new();
            let mut notes = Vec::new();
            let mut mixed = false;
            for (i, &step) in self.steps.iter().enumerate() {
                let t = shift.apply(step, self.query_start, self.query_end);
                let b = WindowBounds { start: t - lookback, end: t + lookback, eval_time: step };
                let around = histogram_window(&hists, b.start, b.end);
                let window = window_slice(samples.view(), b);
                if !around.is_empty() && !window.is_empty() {
                    mixed = true;
                    values.push(None);
                } else if !around.is_empty() {
                    values.push(None);
                    step_hists.resize(i, None);
                    step_hists.push(kernels::native::smoothed_histogram(around, t, &mut notes).map(Arc::new));
                } else {
                    values.push(kernels::smoothed_value(window, t));
                }
            }
            let name = labels.get(METRIC_NAME).to_string();
            if mixed {
                self.annotations.add(
                    Level::Warning,
                    format!("encountered a mix of histograms and floats for metric name {name:?}"),
                    origin.arg(0),
                );
            }
            self.note_window(&notes, &name, origin);
            let mut s = StepSeries::new(labels, values);
            if step_hists.iter().any(Option::is_some) {
                step_hists.resize(self.steps.len(), None);
                s.hists = step_hists;
            }
            if s.has_any() {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Instant selection: per step, the newest sample in `(t - lookback, t]` unless it is a
    /// staleness marker, answered as `what` says.
    fn select(
        &mut self,
        matchers: &[Matcher],
        shift: &TimeShift,
        what: Selected,
    ) -> Result<Vec<StepSeries>, Error> {
        let (lo, hi) = self.anchored_span(shift);
        let lookback = self.opts.lookback_ms;
        let series = self.querier.select(matchers, lo - lookback + 1, hi)?;
        let hists = self.select_histograms(matchers, lo - lookback + 1, hi)?;
        let starts = match what {
            Selected::StartTimestamps => {
                self.querier.select_start_timestamps(matchers, lo - lookback + 1, hi)?
            }
            _ => Vec::new(),
        };
        let series = with_histograms(
            series.into_iter().map(|s| (s.labels, s.samples)).collect(),
            hists.into_iter().map(|h| (h.labels, h.samples)).collect(),
        );
        self.reserve_steps(series.len())?;
        let mut out = Vec::with_capacity(series.len());
        let no_hists: Vec<HistogramSample> = Vec::new();
        for (labels, floats, hists) in series {
            self.check_deadline()?;
            self.count_samples(floats.len() + hists.as_ref().map_or(0, Vec::len))?;
            let samples = floats.view();
            let hs = hists.as_ref().unwrap_or(&no_hists);
            // each sample's start timestamp, when that is what is selected
            let (fstarts, hstarts) = match what {
                Selected::StartTimestamps => {
                    let runs = match starts.binary_search_by(|s| s.labels.cmp(&labels)) {
                        Ok(i) => &starts[i].runs[..],
                        Err(_) => &[],
                    };
                    (
                        aligned_starts(runs, samples.t.iter().copied()),
                        aligned_starts(runs, hs.iter().map(|h| h.t)),
                    )
                }
                _ => (Vec::new(), Vec::new()),
            };
            let as_seconds = |ms: i64| Some(ms as f64 / 1000.0);
            let mut values = Vec::with_capacity(self.steps.len());
            let mut step_hists = Vec::with_capacity(if hists.is_some() { self.steps.len() } else { 0 });
            let mut any = false;
            for &step in &self.steps {
                let t = shift.apply(step, self.query_start, self.query_end);
                let idx = samples.t.partition_point(|&x| x <= t);
                let float = (idx > 0).then(|| samples.get(idx - 1));
                let hidx = hs.partition_point(|x| x.t <= t);
                let hist = (hidx > 0).then(|| &hs[hidx - 1]);
                // the newer of the two is the series' sample; a series never has both at once
                let (v, h) = match (float, hist) {
                    (_, Some(h)) if float.is_none_or(|f| f.t < h.t) => match what {
                        _ if h.t <= t - lookback => (None, None),
                        Selected::Values => (None, Some(Arc::clone(&h.h))),
                        Selected::Timestamps => (as_seconds(h.t), None),
                        Selected::StartTimestamps => (as_seconds(hstarts[hidx - 1]), None),
                    },
                    (Some(x), _) if x.t > t - lookback && !is_stale_nan(x.v) => match what {
                        Selected::Values => (Some(x.v), None),
                        Selected::Timestamps => (as_seconds(x.t), None),
                        Selected::StartTimestamps => (as_seconds(fstarts[idx - 1]), None),
                    },
                    _ => (None, None),
                };
                any |= v.is_some() || h.is_some();
                values.push(v);
                if hists.is_some() {
                    step_hists.push(h);
                }
            }
            if any {
                let mut s = StepSeries::new(labels, values);
                if step_hists.iter().any(Option::is_some) {
                    s.hists = step_hists;
                }
                out.push(s);
            }
        }
        Ok(out)
    }

    fn subquery(
        &mut self,
        input: &Plan,
        range_ms: i64,
        step_ms: i64,
        shift: &TimeShift,
    ) -> Result<Value, Error> {
        let (lo, hi) = self.anchored_span(shift);
        let step = step_ms.max(1);
        // inner steps are the multiples of the step inside (lo - range, hi]
        let first = (lo - range_ms).div_euclid(step) * step + step;
        // every inner step is at least one sample per series: refuse what cannot fit
        let inner_steps = (hi - first) / step + 1;
        if inner_steps > self.opts.max_samples as i64 {
            return Err(Error::TooManySamples("subquery evaluation"));
        }
        let inner_opts = QueryOptions { start: first, end: hi, step, ..self.opts.clone() };
        let mut inner = Ctx {
            querier: self.querier,
            steps: inner_opts.steps(),
            opts: inner_opts,
            samples_loaded: self.samples_loaded,
            samples_read: self.samples_read,
            query_start: self.query_start,
            query_end: self.query_end,
            annotations: Annotations::default(),
            histogram_stats: self.histogram_stats,
            // a subquery's counter functions need the buckets to see resets
            needs_buckets: true,
            pushdown: self.pushdown,
        };
        if inner.steps.is_empty() {
            return Ok(Value::Range(RangeValue {
                series: vec![],
                hists: vec![],
                range_ms,
                shift: *shift,
                edges: Edges::Plain,
                lookback_ms: 0,
                starts: Vec::new(),
            }));
        }
        let (series, hists): (Vec<(Labels, Samples)>, _) = match inner.eval(input)? {
            // a window's series carry no marks: names marked for removal go here
            Value::Vector(v) => {
                let v = finish_names(v)?;
                // a subquery may skip the sample of a reset, or return it at several steps:
                // its histograms' reset hints say nothing, as in Prometheus
                let hists = step_histograms(&v, &inner.steps, false)
                    .into_iter()
                    .map(|mut h| {
                        forget_reset_hints(&mut h.samples);
                        (h.labels, h.samples)
                    })
                    .collect();
                let series = v
                    .into_iter()
                    .map(|s| {
                        let samples = inner
                            .steps
                            .iter()
                            .zip(s.values)
                            .filter_map(|(&t, v)| v.map(|v| Sample { t, v }))
                            .collect();
                        (s.labels, samples)
                    })
                    .collect();
                (series, hists)
            }
            Value::Scalar(v) => (vec![(Labels::new(), Samples::new(inner.steps.clone(), v))], Vec::new()),
            _ => return Err(Error::Plan("subquery over a non-instant expression".into())),
        };
        self.samples_loaded = inner.samples_loaded;
        self.samples_read = inner.samples_read;
        self.annotations.merge(std::mem::take(&mut inner.annotations));
        // the points a subquery produces are held in memory like loaded samples
        self.count_samples(series.iter().map(|(_, s)| s.len()).sum())?;
        Ok(Value::Range(RangeValue {
            series,
            hists,
            range_ms,
            shift: *shift,
            edges: Edges::Plain,
            lookback_ms: 0,
            starts: Vec::new(),
        }))
    }

    /// A window over a selection without its series: the span it reads (`mint..=maxt`), its
    /// native histograms and start timestamps, the histograms counted against the limit.
    fn window_frame(
        &mut self,
        matchers: &[Matcher],
        range_ms: i64,
        shift: &TimeShift,
        edges: Edges,
    ) -> Result<(RangeValue, (i64, i64)), Error> {
        let (lo, hi) = self.anchored_span(shift);
        let lookback_ms = self.opts.lookback_ms;
        let (before, after) = match edges {
            Edges::Plain => (0, 0),
            Edges::Anchored => (lookback_ms, 0),
            Edges::Smoothed => (lookback_ms, lookback_ms),
        };
        let (mint, maxt) = (lo - range_ms - before + 1, hi + after);
        let hists = self.select_histograms(matchers, mint, maxt)?;
        // extended windows read no start timestamps, as in Prometheus
        let starts = if self.opts.use_start_timestamps && edges == Edges::Plain {
            self.querier.select_start_timestamps(matchers, mint, maxt)?
        } else {
            Vec::new()
        };
        self.count_samples(hists.iter().map(|h| h.samples.len()).sum())?;
        let r = RangeValue {
            series: Vec::new(),
            hists: hists.into_iter().map(|h| (h.labels, h.samples)).collect(),
            range_ms,
            shift: *shift,
            edges,
            lookback_ms,
            starts,
        };
        Ok((r, (mint, maxt)))
    }

    /// The float series of a window, without staleness markers, counted against the limit.
    fn window_series(&mut self, series: Vec<Series>) -> Result<Vec<(Labels, Samples)>, Error> {
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            self.check_deadline()?;
            let samples = s.samples.without_stale_markers();
            self.count_samples(samples.len())?;
            out.push((s.labels, samples));
        }
        Ok(out)
    }

    /// Hands `each` the range value of `input`, whole, or a group of series at a time where
    /// `input` is a window over a selection of floats only ([`Querier::select_in_groups`]):
    /// a week of `rate` over thousands of series then never holds all its samples at once.
    /// A group's samples count against the limit while `each` holds them, and are let go
    /// with the group, as Prometheus counts the samples a query holds at once.
    fn each_range_group(
        &mut self,
        input: &Plan,
        each: &mut dyn FnMut(&mut Self, &mut RangeValue) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let Plan::Window { matchers, range_ms, shift, edges } = input else {
            let mut r = self.eval_range(input)?;
            return each(self, &mut r);
        };
        let (mut r, (mint, maxt)) = self.window_frame(matchers, *range_ms, shift, *edges)?;
        if !r.hists.is_empty() {
            // a series may have floats and histograms: they are joined by labels, whole
            let series = self.querier.select(matchers, mint, maxt)?;
            r.series = self.window_series(series)?;
            return each(self, &mut r);
        }
        let querier = self.querier;
        let mut outcome = Ok(());
        querier.select_in_groups(matchers, mint, maxt, &mut |group| {
            let held = self.samples_loaded;
            outcome = self.window_series(group).and_then(|series| {
                r.series = series;
                each(self, &mut r)
            });
            r.series = Vec::new();
            self.samples_loaded = held;
            outcome.is_ok()
        })?;
        outcome
    }

    fn window_function(
        &mut self,
        func: WindowFn,
        input: &Plan,
        args: &[Plan],
        origin: &Origin,
    ) -> Result<Value, Error> {
        let arg_vals: Vec<Vec<f64>> = args.iter().map(|a| self.eval_scalar(a)).collect::<Result<_, _>>()?;
        let n = self.steps.len();
        if func == WindowFn::AbsentOverTime {
            let r = self.eval_range(input)?;
            let mut values = vec![Some(1.0); n];
            for (i, &step) in self.steps.iter().enumerate() {
                let b = r.bounds(step, self.query_start, self.query_end);
                if r.series.iter().any(|(_, s)| !window_slice(s.view(), b).is_empty())
                    || r.hists.iter().any(|(_, h)| !histogram_window(h, b.start, b.end).is_empty())
                {
                    values[i] = None;
                }
            }
            return Ok(Value::Vector(vec![StepSeries::new(absent_labels(input), values)]));
        }
        let keep_name = matches!(func, WindowFn::LastOverTime | WindowFn::FirstOverTime);
        let mut out = Vec::new();
        self.each_range_group(input, &mut |ctx, r| {
            ctx.window_function_over(func, r, &arg_vals, origin, &mut out)
        })?;
        if keep_name {
            Ok(Value::Vector(out))
        } else {
            Ok(Value::Vector(self.drop_names(out)?))
        }
    }

    /// [`Ctx::window_function`] over the series of `r` (one group of them), appending each
    /// series with a value at some step to `out`.
    fn window_function_over(
        &mut self,
        func: WindowFn,
        r: &mut RangeValue,
        arg_vals: &[Vec<f64>],
        origin: &Origin,
        out: &mut Vec<StepSeries>,
    ) -> Result<(), Error> {
        let n = self.steps.len();
        let series = with_histograms(std::mem::take(&mut r.series), std::mem::take(&mut r.hists));
        self.reserve_steps(out.len() + series.len())?;
        out.reserve(series.len());
        let mut step_args = vec![0.0; arg_vals.len()];
        let steps = self.steps.clone();
        let reads_starts =
            matches!(func, WindowFn::Rate | WindowFn::Increase | WindowFn::Irate | WindowFn::Resets);
        for (labels, samples, hists) in series {
            self.check_deadline()?;
            let mut values = Vec::with_capacity(n);
            let mut out_hists = Vec::new();
            let mut any = false;
            let all_hists = hists.as_deref().unwrap_or(&[]);
            // the start timestamps of the series' floats and histograms, when it has any
            let runs = if reads_starts { r.starts_of(&labels) } else { &[] };
            let starts = (!runs.is_empty()).then(|| {
                let floats = aligned_starts(runs, samples.view().t.iter().copied());
                (floats, aligned_starts(runs, all_hists.iter().map(|h| h.t)))
            });
            let mut overlap = false;
            // where the last step's window started: windows move forward with the steps
            let (mut from, mut last_start) = (0, i64::MIN);
            for (i, &step) in steps.iter().enumerate() {
                let b = r.bounds(step, self.query_start, self.query_end);
                for (a, vals) in step_args.iter_mut().zip(arg_vals) {
                    *a = vals[i];
                }
                if b.start < last_start {
                    from = 0;
                }
                let in_window = samples.view().window_range_from(from, b.start, b.end);
                (from, last_start) = (in_window.start, b.start);
                let window = samples.view().slice(in_window.clone());
                let hwindow = match r.edges {
                    Edges::Plain => histogram_window(all_hists, b.start, b.end),
                    _ => r.widened_histograms(all_hists, b),
                };
                if !hwindow.is_empty() {
                    let hstarts = starts.as_ref().map_or(&[][..], |(_, h)| {
                        let from = all_hists.partition_point(|x| x.t <= b.start);
                        &h[from..from + hwindow.len()]
                    });
                    let (v, h) = match r.edges {
                        Edges::Plain => self.window_over_histograms(
                            func,
                            window,
                            (hwindow, hstarts),
                            b,
                            r,
                            &step_args,
                            &labels,
                            origin,
                        ),
                        edges => self.extended_window_over_histograms(
                            func,
                            r.widened(samples.view(), b),
                            hwindow,
                            b,
                            edges,
                            &labels,
                            origin,
                        ),
                    };
                    values.push(v);
                    out_hists.resize(i, None);
                    out_hists.push(h.map(Arc::new));
                    continue;
                }
                if func == WindowFn::QuantileOverTime && !window.is_empty() {
                    check_quantile(&mut self.annotations, step_args[0], origin, 0);
                }
                let v = match (r.edges, &starts) {
                    (Edges::Plain, Some((fstarts, _))) => {
                        let wst = &fstarts[in_window];
                        overlap |= matches!(func, WindowFn::Rate | WindowFn::Increase)
                            && start::any_overlap(wst, window.t.iter().copied());
                        match func {
                            WindowFn::Rate | WindowFn::Increase => {
                                start::counter_rate(window, wst, b, func == WindowFn::Rate).0
                            }
                            WindowFn::Irate => start::instant_rate(window, wst),
                            _ => Some(start::resets(window, wst) as f64),
                        }
                    }
                    (Edges::Plain, None) => kernels::window(func, window, b, &step_args),
                    (edges, _) => extended_window(func, r.widened(samples.view(), b), b, edges, &step_args)?,
                };
                any |= v.is_some();
                values.push(v);
            }
            if overlap {
                self.note_start_overlap(&labels, origin);
            }
            if any && matches!(func, WindowFn::Rate | WindowFn::Increase) {
                let name = labels.get(METRIC_NAME);
                if !name.is_empty()
                    && !["_total", "_sum", "_count", "_bucket"].iter().any(|s| name.ends_with(s))
                {
                    self.annotations.add(
                        Level::Info,
                        format!(
                            "metric might not be a counter, name does not end in \
                             _total/_sum/_count/_bucket: {name:?}"
                        ),
                        origin.arg(0),
                    );
                }
            }
            out_hists.resize(if out_hists.is_empty() { 0 } else { n }, None);
            let s = StepSeries { labels, values, hists: out_hists, drop_name: false };
            if s.has_any() {
                out.push(s);
            }
        }
        Ok(())
    }

    /// A window function over a window that holds native histograms (and maybe floats): the
    /// kernel's answer ([`kernels::native::window`]), its notes as annotations.
    #[allow(clippy::too_many_arguments)]
    fn window_over_histograms(
        &mut self,
        func: WindowFn,
        floats: SampleSlice<'_>,
        (hists, starts): (&[HistogramSample], &[i64]),
        b: WindowBounds,
        r: &RangeValue,
        args: &[f64],
        labels: &Labels,
        origin: &Origin,
    ) -> (Option<f64>, Option<FloatHistogram>) {
        let mut notes = Vec::new();
        let answer = kernels::native::window(func, floats, hists, starts, b, r.range_ms, args, &mut notes);
        self.note_window(&notes, labels.get(METRIC_NAME), origin);
        answer
    }

    /// Prometheus's warning for a series whose samples' counts overlap (see
    /// [`start::overlaps`]).
    fn note_start_overlap(&mut self, labels: &Labels, origin: &Origin) {
        self.note_window(&[kernels::native::WindowNote::StartOverlap], labels.get(METRIC_NAME), origin);
    }

    /// The annotations of a function over a window of histograms.
    fn note_window(&mut self, notes: &[kernels::native::WindowNote], name: &str, origin: &Origin) {
        use kernels::native::WindowNote;
        for note in notes {
            let (level, text) = match note {
                WindowNote::NotCounter => {
                    (Level::Warning, format!("this native histogram metric is not a counter: {name:?}"))
                }
                WindowNote::NotGauge => {
                    (Level::Warning, format!("this native histogram metric is not a gauge: {name:?}"))
                }
                WindowNote::MixedSchemas => (
                    Level::Warning,
                    format!(
                        "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {name:?}"
                    ),
                ),
                WindowNote::ReconciledSubtraction => {
                    (Level::Info, "mismatched custom buckets were reconciled during subtraction".to_string())
                }
                WindowNote::ReconciledAddition => {
                    (Level::Info, "mismatched custom buckets were reconciled during addition".to_string())
                }
                WindowNote::MixedFloatsAndHistograms => (
                    Level::Warning,
                    format!("encountered a mix of histograms and floats for metric name {name:?}"),
                ),
                WindowNote::IgnoredHistograms => (
                    Level::Info,
                    format!("ignored histograms in a range containing both floats and histograms for metric name {name:?}"),
                ),
                WindowNote::StartOverlap => (
                    Level::Warning,
                    format!("sample has start time that overlaps with previous sample timestamp for metric {name:?}"),
                ),
                WindowNote::Sum(sum) => {
                    self.note_sum(*sum, origin);
                    continue;
                }
            };
            self.annotations.add(level, text, origin.arg(0));
        }
    }

    /// A function over an anchored or smoothed window that holds histograms: the kernel's
    /// answer ([`kernels::native::extended_window`]), its notes as annotations.
    #[allow(clippy::too_many_arguments)]
    fn extended_window_over_histograms(
        &mut self,
        func: WindowFn,
        floats: SampleSlice<'_>,
        hists: &[HistogramSample],
        b: WindowBounds,
        edges: Edges,
        labels: &Labels,
        origin: &Origin,
    ) -> (Option<f64>, Option<FloatHistogram>) {
        let mut notes = Vec::new();
        let smoothed = edges == Edges::Smoothed;
        let answer = kernels::native::extended_window(func, floats, hists, b, smoothed, &mut notes);
        self.note_window(&notes, labels.get(METRIC_NAME), origin);
        answer
    }

    /// The annotations of a sum of histograms.
    fn note_sum(&mut self, notes: kernels::native::SumNotes, origin: &Origin) {
        if notes.reconciled {
            self.annotations.add(
                Level::Info,
                "mismatched custom buckets were reconciled during aggregation".into(),
                origin.arg(0),
            );
        }
        if notes.conflicting_resets {
            self.annotations.add(
                Level::Warning,
                "conflicting counter resets during histogram aggregation".into(),
                origin.arg(0),
            );
        }
    }

    /// Every sample in the windows of each group's series, aggregated at each step
    /// ([`Plan::AggregateSamples`]); a group with no sample in a window has no value there.
    /// Sums and averages add the samples in order, uncompensated, as SQL's aggregates of
    /// rows do.
    fn aggregate_samples(
        &mut self,
        op: AggOp,
        grouping: &Grouping,
        param: f64,
        descending: bool,
        input: &Plan,
    ) -> Result<Value, Error> {
        let r = self.eval_range(input)?;
        let mut groups: HashMap<Labels, Vec<usize>> = HashMap::new();
        for (i, (labels, _)) in r.series.iter().enumerate() {
            groups.entry(grouping_key(labels, grouping)).or_default().push(i);
        }
        self.reserve_steps(groups.len())?;
        let mut out = Vec::with_capacity(groups.len());
        let mut vals = Vec::new();
        for (key, members) in groups {
            self.check_deadline()?;
            let mut values = Vec::with_capacity(self.steps.len());
            for &step in &self.steps {
                let b = r.bounds(step, self.query_start, self.query_end);
                // SQL's sum and average of rows: one running sum, series after series in
                // time order (a table's row order), as PostgreSQL adds doubles, with no
                // compensation (PromQL's `sum` of `sum_over_time` is compensated)
                if matches!(op, AggOp::Sum | AggOp::Avg) {
                    let (mut sum, mut n) = (0.0, 0usize);
                    for &i in &members {
                        let window = window_slice(r.series[i].1.view(), b).v;
                        sum = window.iter().fold(sum, |s, v| s + v);
                        n += window.len();
                    }
                    values.push((n > 0).then(|| if op == AggOp::Avg { sum / n as f64 } else { sum }));
                    continue;
                }
                vals.clear();
                for &i in &members {
                    vals.extend_from_slice(window_slice(r.series[i].1.view(), b).v);
                }
                // a sample quantile is SQL's percentile_cont (the operator has no PromQL
                // syntax), interpolated as PostgreSQL interpolates it
                let value = match op {
                    // in descending order: PostgreSQL interpolates from the top, which is
                    // the negation of the ascending quantile of the negated samples, exactly
                    AggOp::Quantile if descending => {
                        vals.iter_mut().for_each(|v| *v = -*v);
                        -kernels::percentile_cont(param, &mut vals)
                    }
                    AggOp::Quantile => kernels::percentile_cont(param, &mut vals),
                    op => aggregate_values(op, &mut vals, param),
                };
                values.push((!vals.is_empty()).then_some(value));
            }
            if values.iter().any(Option::is_some) {
                out.push(StepSeries::new(key, values));
            }
        }
        Ok(Value::Vector(out))
    }

    fn map(&mut self, func: MapFn, input: &Plan, args: &[Plan]) -> Result<Value, Error> {
        let arg_vals: Vec<Vec<f64>> = args.iter().map(|a| self.eval_scalar(a)).collect::<Result<_, _>>()?;
        if func == MapFn::Negate && input.kind() == ValueKind::Scalar {
            return Ok(Value::Scalar(self.eval_scalar(input)?.into_iter().map(|v| -v).collect()));
        }
        if let (MapFn::Timestamp, Plan::Select { matchers, shift, edges: Edges::Plain, .. }) = (func, input) {
            let v = self.select(matchers, shift, Selected::Timestamps)?;
            return Ok(Value::Vector(self.drop_names(v)?));
        }
        if func == MapFn::StartTimestamp {
            // a computed vector's samples have no start timestamps (nor any sample when
            // queries use none): nothing, as in Prometheus
            return match input {
                Plan::Select { matchers, shift, edges: Edges::Plain, .. }
                    if self.opts.use_start_timestamps =>
                {
                    let v = self.select(matchers, shift, Selected::StartTimestamps)?;
                    Ok(Value::Vector(self.drop_names(v)?))
                }
                _ => {
                    self.eval_vector(input)?;
                    Ok(Value::Vector(Vec::new()))
                }
            };
        }
        let mut v = self.eval_vector(input)?;
        // a histogram is negated bucket by bucket; the other functions are of floats and
        // leave histograms out, as Prometheus's do
        for s in v.iter_mut().filter(|s| !s.hists.is_empty()) {
            if func == MapFn::Negate {
                for h in s.hists.iter_mut().flatten() {
                    Arc::make_mut(h).scale(-1.0);
                }
            } else {
                s.hists.clear();
            }
        }
        v.retain(StepSeries::has_any);
        let steps = self.steps.clone();
        let mut step_args = vec![0.0; arg_vals.len()];
        for s in v.iter_mut() {
            self.check_deadline()?;
            for (i, val) in s.values.iter_mut().enumerate() {
                if let Some(x) = val {
                    for (a, vals) in step_args.iter_mut().zip(&arg_vals) {
                        *a = vals[i];
                    }
                    // clamp with min > max yields nothing, as in Prometheus
                    if func == MapFn::Clamp && step_args[1] < step_args[0] {
                        *val = None;
                        continue;
                    }
                    *x = kernels::map(func, *x, &step_args, steps[i]);
                }
            }
        }
        Ok(Value::Vector(self.drop_names(v)?))
    }

    fn vector_function(
        &mut self,
        func: VectorFn,
        input: &Plan,
        args: &[Plan],
        labels: &[(String, String)],
        origin: &Origin,
    ) -> Result<Value, Error> {
        let n = self.steps.len();
        let sorts = matches!(
            func,
            VectorFn::Sort | VectorFn::SortDesc | VectorFn::SortByLabel | VectorFn::SortByLabelDesc
        );
        if sorts && n > 1 {
            self.annotations.add(
                Level::Warning,
                "sort is ineffective for range queries since results are always ordered by labels".into(),
                origin.expr,
            );
        }
        match func {
            VectorFn::Absent => {
                let v = self.eval_vector(input)?;
                let values =
                    (0..n).map(|i| if v.iter().any(|s| s.has(i)) { None } else { Some(1.0) }).collect();
                Ok(Value::Vector(vec![StepSeries::new(Labels::from_pairs(labels.iter().cloned()), values)]))
            }
            VectorFn::Scalar => {
                let v = self.eval_vector(input)?;
                Ok(Value::Scalar(
                    (0..n)
                        .map(|i| {
                            let mut it = v.iter().filter_map(|s| s.values[i]);
                            match (it.next(), it.next()) {
                                (Some(x), None) => x,
                                _ => f64::NAN,
                            }
                        })
                        .collect(),
                ))
            }
            VectorFn::SortByLabel | VectorFn::SortByLabelDesc => {
                let names = args
                    .iter()
                    .map(|a| match self.eval(a)? {
                        Value::Str(s) => Ok(s),
                        _ => Err(Error::Plan("sort_by_label takes label names as strings".into())),
                    })
                    .collect::<Result<Vec<String>, Error>>()?;
                let mut v = self.eval_vector(input)?;
                v.sort_by(|a, b| {
                    let by_names = names
                        .iter()
                        .map(|l| kernels::natural_cmp(a.labels.get(l), b.labels.get(l)))
                        .find(|o| o.is_ne())
                        .unwrap_or_else(|| a.labels.cmp(&b.labels));
                    if func == VectorFn::SortByLabelDesc {
                        by_names.reverse()
                    } else {
                        by_names
                    }
                });
                Ok(Value::Vector(v))
            }
            VectorFn::Sort | VectorFn::SortDesc => {
                let mut v = self.eval_vector(input)?;
                // sorting is by value: histograms are left out, as Prometheus leaves them
                for s in v.iter_mut() {
                    s.hists.clear();
                }
                v.retain(StepSeries::has_any);
                if n == 1 {
                    let descending = func == VectorFn::SortDesc;
                    v.sort_by(|a, b| cmp_nan_last(a.values[0], b.values[0], descending));
                }
                Ok(Value::Vector(v))
            }
            VectorFn::HistogramQuantile | VectorFn::HistogramQuantiles | VectorFn::HistogramFraction => {
                let outer = std::mem::replace(&mut self.needs_buckets, true);
                let answer = self.classic_histograms(func, input, args, origin);
                self.needs_buckets = outer;
                answer
            }
            VectorFn::HistogramCount
            | VectorFn::HistogramSum
            | VectorFn::HistogramAvg
            | VectorFn::HistogramStddev
            | VectorFn::HistogramStdvar => {
                // histogram_count, _sum and _avg read histograms as Prometheus's stats
                // iterator does (see `histogram_stats`)
                let stats = matches!(
                    func,
                    VectorFn::HistogramCount | VectorFn::HistogramSum | VectorFn::HistogramAvg
                );
                let outer = self.histogram_stats;
                self.histogram_stats |= stats;
                let input = self.eval_vector(input);
                self.histogram_stats = outer;
                // of the histograms only: float samples give nothing
                let out = input?
                    .into_iter()
                    .filter(|s| !s.hists.is_empty())
                    .map(|s| {
                        let values = s
                            .hists
                            .iter()
                            .map(|h| h.as_deref().and_then(|h| kernels::native::statistic(func, h)))
                            .collect();
                        StepSeries { values, hists: Vec::new(), ..s }
                    })
                    .collect();
                Ok(Value::Vector(self.drop_names(out)?))
            }
        }
    }

    /// `histogram_quantile`, `histogram_quantiles` and `histogram_fraction` over classic
    /// histograms: series that differ only in `le` are one histogram's cumulative buckets.
    fn classic_histograms(
        &mut self,
        func: VectorFn,
        input: &Plan,
        args: &[Plan],
        origin: &Origin,
    ) -> Result<Value, Error> {
        let n = self.steps.len();
        // the parameters, each a scalar per step, and where the buckets are in the call
        let (params, quantile_label, buckets_arg) = match func {
            VectorFn::HistogramQuantile => (vec![self.eval_scalar(&args[0])?], None, 1),
            VectorFn::HistogramFraction => {
                (vec![self.eval_scalar(&args[0])?, self.eval_scalar(&args[1])?], None, 2)
            }
            _ => {
                let label = match args.first().map(|a| self.eval(a)).transpose()? {
                    Some(Value::Str(l)) => l,
                    _ => return Err(Error::Plan("histogram_quantiles needs a label name".into())),
                };
                let qs = args[1..].iter().map(|a| self.eval_scalar(a)).collect::<Result<Vec<_>, _>>()?;
                (qs, Some(label), 0)
            }
        };
        if func != VectorFn::HistogramFraction {
            let first_q_arg = if func == VectorFn::HistogramQuantile { 0 } else { 2 };
            for (i, qs) in params.iter().enumerate() {
                for &q in qs {
                    check_quantile(&mut self.annotations, q, origin, first_q_arg + i);
                }
            }
        }
        let v = self.eval_vector(input)?;
        // group buckets by their labels without `le` (buckets of different metrics never mix:
        // the name is part of the key)
        let mut groups: HashMap<Labels, Vec<(f64, usize)>> = HashMap::new();
        for (idx, s) in v.iter().enumerate() {
            let le = s.labels.get("le");
            let Ok(ub) = parse_le(le) else {
                if s.values.iter().any(Option::is_some) {
                    let name = if self.opts.delayed_name_removal { s.labels.get(METRIC_NAME) } else { "" };
                    let mut message =
                        format!("bucket label \"le\" is missing or has a malformed value of {le:?}");
                    if !name.is_empty() {
                        message.push_str(&format!(" for metric name {name:?}"));
                    }
                    self.annotations.add(Level::Warning, message, origin.arg(buckets_arg));
                }
                continue;
            };
            let mut key = s.labels.clone();
            key.remove("le");
            groups.entry(key).or_default().push((ub, idx));
        }
        // one output series per group, or per group and quantile for histogram_quantiles
        let outputs = if func == VectorFn::HistogramQuantiles { params.len() } else { 1 };
        self.reserve_steps(groups.len().saturating_mul(outputs))?;
        let mut out = Vec::with_capacity(groups.len() * outputs);
        // native histograms, each its own answer, unless classic buckets of the same labels
        // have values at the step: then neither has an answer there, and a warning says why
        let mut clashes: std::collections::HashSet<(Labels, usize)> = std::collections::HashSet::new();
        for s in v.iter().filter(|s| !s.hists.is_empty()) {
            self.check_deadline()?;
            let name = if self.opts.delayed_name_removal { s.labels.get(METRIC_NAME) } else { "" };
            let classic = groups.get(&s.labels);
            let mut values = vec![Vec::with_capacity(n); outputs];
            // the step index reads the histogram, the parameters and the classic buckets
            #[allow(clippy::needless_range_loop)]
            for i in 0..n {
                let h = s.hist(i).filter(|_| {
                    let clash = classic.is_some_and(|m| m.iter().any(|&(_, idx)| v[idx].values[i].is_some()));
                    if clash {
                        clashes.insert((s.labels.clone(), i));
                        let mut message =
                            "vector contains a mix of classic and native histograms".to_string();
                        if !name.is_empty() {
                            message.push_str(&format!(" for metric name {name:?}"));
                        }
                        self.annotations.add(Level::Warning, message, origin.arg(buckets_arg));
                    }
                    !clash
                });
                for (o, vals) in values.iter_mut().enumerate() {
                    let Some(h) = h else {
                        vals.push(None);
                        continue;
                    };
                    let (value, note) = match func {
                        VectorFn::HistogramFraction => {
                            kernels::native::histogram_fraction(params[0][i], params[1][i], h)
                        }
                        _ => kernels::native::histogram_quantile(params[o][i], h),
                    };
                    if let Some(note) = note {
                        self.annotations.add(Level::Info, nan_note_text(note, name), origin.arg(buckets_arg));
                    }
                    vals.push(Some(value));
                }
            }
            for (o, vals) in values.into_iter().enumerate() {
                let mut l = s.labels.clone();
                if let Some(label) = &quantile_label {
                    l.set(label, &promflow_storage::gofmt::format_openmetrics_float(params[o][0]));
                }
                out.push(StepSeries::new(l, vals));
            }
        }
        let mut buckets = Vec::new();
        for (labels, members) in groups {
            self.check_deadline()?;
            let name = if self.opts.delayed_name_removal {
                labels.get(METRIC_NAME).to_string()
            } else {
                String::new()
            };
            let mut values = vec![Vec::with_capacity(n); outputs];
            for (i, &step) in self.steps.iter().enumerate() {
                buckets.clear();
                if clashes.is_empty() || !clashes.contains(&(labels.clone(), i)) {
                    buckets.extend(members.iter().filter_map(|&(ub, idx)| v[idx].values[i].map(|c| (ub, c))));
                }
                for (o, vals) in values.iter_mut().enumerate() {
                    if buckets.is_empty() {
                        vals.push(None);
                        continue;
                    }
                    let value = if func == VectorFn::HistogramFraction {
                        kernels::bucket_fraction(params[0][i], params[1][i], &mut buckets)
                    } else {
                        let q = if func == VectorFn::HistogramQuantile { params[0][i] } else { params[o][i] };
                        let bq = kernels::bucket_quantile(q, &mut buckets);
                        if let Some(fix) = bq.forced_monotonic {
                            self.annotations.add_monotonicity_fix(&name, origin.arg(buckets_arg), step, fix);
                        }
                        bq.value
                    };
                    vals.push(Some(value));
                }
            }
            for (o, vals) in values.into_iter().enumerate() {
                let mut l = labels.clone();
                if let Some(label) = &quantile_label {
                    // Prometheus names each quantile by its first step's value
                    l.set(label, &promflow_storage::gofmt::format_openmetrics_float(params[o][0]));
                }
                out.push(StepSeries::new(l, vals));
            }
        }
        Ok(Value::Vector(self.drop_names(out)?))
    }

    /// One group's aggregate at one step where some members are native histograms: a sum
    /// or an average of histograms (none when floats are among them, or the histograms
    /// cannot be added), a count that counts them, or the float aggregate of the floats with
    /// the histograms left out (an info says so), as Prometheus aggregates.
    fn aggregate_histograms(
        &mut self,
        op: AggOp,
        floats: &mut [f64],
        hists: &[(&str, &FloatHistogram)],
        param: f64,
        origin: &Origin,
    ) -> (Option<f64>, Option<FloatHistogram>) {
        use kernels::native::AggregateNote;
        let mut notes = Vec::new();
        let each: Vec<&FloatHistogram> = hists.iter().map(|h| h.1).collect();
        let answer = kernels::native::aggregate(op, floats, &each, param, &mut notes);
        for note in notes {
            let (level, text) = match note {
                AggregateNote::MixedFloatsAndHistograms => {
                    (Level::Warning, "encountered a mix of histograms and floats for aggregation".to_string())
                }
                // Prometheus names the metric of the histogram that could not be added
                AggregateNote::MixedSchemas { at } => (
                    Level::Warning,
                    format!(
                        "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {:?}",
                        hists.get(at).map_or("", |h| h.0)
                    ),
                ),
                AggregateNote::IgnoredHistograms => {
                    let name = match op {
                        AggOp::Min => "min",
                        AggOp::Max => "max",
                        AggOp::Stddev => "stddev",
                        AggOp::Stdvar => "stdvar",
                        _ => "quantile",
                    };
                    (Level::Info, format!("ignored histogram in {name} aggregation"))
                }
                AggregateNote::Sum(sum) => {
                    self.note_sum(sum, origin);
                    continue;
                }
            };
            self.annotations.add(level, text, origin.arg(0));
        }
        answer
    }

    fn aggregate(
        &mut self,
        op: AggOp,
        grouping: &Grouping,
        param: Option<&Plan>,
        input: &Plan,
        origin: &Origin,
    ) -> Result<Value, Error> {
        let param = self.aggregate_param(op, param)?;
        let v = self.eval_vector(input)?;
        Ok(Value::Vector(self.aggregate_vector(op, grouping, &param, v, origin)?))
    }

    /// An aggregation's parameter: a number at each step (`topk`'s k, `quantile`'s φ, …), or
    /// `count_values`' label name.
    fn aggregate_param(&mut self, op: AggOp, param: Option<&Plan>) -> Result<(Vec<f64>, String), Error> {
        Ok(match (op, param) {
            (AggOp::CountValues, Some(p)) => match self.eval(p)? {
                Value::Str(s) => (vec![], s),
                _ => return Err(Error::Plan("count_values needs a string parameter".into())),
            },
            (_, Some(p)) => (self.eval_scalar(p)?, String::new()),
            _ => (vec![], String::new()),
        })
    }

    /// The aggregation `op` of the series `v` with its parameter ([`Self::aggregate_param`]).
    fn aggregate_vector(
        &mut self,
        op: AggOp,
        grouping: &Grouping,
        (param_num, param_str): &(Vec<f64>, String),
        v: Vec<StepSeries>,
        origin: &Origin,
    ) -> Result<Vec<StepSeries>, Error> {
        let n = self.steps.len();
        if op == AggOp::Quantile {
            // Prometheus reports NaN, then the largest and the smallest out-of-range φ
            if param_num.iter().any(|q| q.is_nan()) {
                check_quantile(&mut self.annotations, f64::NAN, origin, 0);
            }
            let max = param_num.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = param_num.iter().copied().fold(f64::INFINITY, f64::min);
            if max > 1.0 {
                check_quantile(&mut self.annotations, max, origin, 0);
            }
            if min < 0.0 {
                check_quantile(&mut self.annotations, min, origin, 0);
            }
        }
        if op == AggOp::CountValues && param_str.is_empty() {
            return Err(Error::Execution(format!("invalid label name {param_str:?}")));
        }
        let (groups, members) = self.groups(&v, grouping)?;
        match op {
            AggOp::LimitRatio => {
                // Prometheus: all-zero ratios give nothing, NaN fails, and ratios beyond ±1
                // are capped with a warning
                if param_num.iter().all(|&r| r == 0.0) {
                    return Ok(vec![]);
                }
                if param_num.iter().any(|r| r.is_nan()) {
                    return Err(Error::Execution("Ratio value is NaN".into()));
                }
                let max = param_num.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let min = param_num.iter().copied().fold(f64::INFINITY, f64::min);
                for (bad, cap) in [(max, 1.0), (min, -1.0)] {
                    if bad.abs() > 1.0 && bad.signum() == cap {
                        self.annotations.add(
                            Level::Warning,
                            format!(
                                "ratio value should be between -1 and 1, got {}, capping to {}",
                                go_format_g(bad, None),
                                go_format_g(cap, None)
                            ),
                            origin.arg(0),
                        );
                    }
                }
                // a series is kept by where its label hash falls in [0, 1): the same series
                // for the same ratio at every step and on every server
                let mut out = Vec::new();
                for mut s in v {
                    let offset = s.labels.prometheus_hash() as f64 / u64::MAX as f64;
                    for (i, &r) in param_num.iter().enumerate() {
                        let r = r.clamp(-1.0, 1.0);
                        let keep = (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r);
                        if !keep {
                            s.clear(i);
                        }
                    }
                    if s.has_any() {
                        out.push(s);
                    }
                }
                Ok(out)
            }
            AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => {
                // topk and bottomk rank values: histograms are left out; limitk keeps them
                if op != AggOp::Limitk && v.iter().any(|s| s.hists.iter().any(Option::is_some)) {
                    let name = if op == AggOp::Topk { "topk" } else { "bottomk" };
                    self.annotations.add(
                        Level::Info,
                        format!("ignored histogram in {name} aggregation"),
                        origin.arg(1),
                    );
                }
                let mut keep = vec![vec![None; n]; v.len()];
                let mut keep_hists: Vec<Vec<Option<Arc<FloatHistogram>>>> = vec![Vec::new(); v.len()];
                for step in 0..n {
                    self.check_deadline()?;
                    let k = param_num[step];
                    if k.is_nan() {
                        return Err(Error::Execution("Parameter value is NaN".into()));
                    }
                    let k = kernels::rank_count(k);
                    for m in &members {
                        if op == AggOp::Limitk {
                            let present = m
                                .iter()
                                .filter(|&&i| v[i].values[step].is_some() || v[i].hist(step).is_some());
                            for &i in present.take(k) {
                                keep[i][step] = v[i].values[step];
                                if let Some(h) = v[i].hist(step) {
                                    keep_hists[i].resize(n, None);
                                    keep_hists[i][step] = Some(Arc::clone(h));
                                }
                            }
                            continue;
                        }
                        let present: Vec<(usize, f64)> =
                            m.iter().filter_map(|&i| v[i].values[step].map(|x| (i, x))).collect();
                        for i in kernels::heap_select(&present, k, op == AggOp::Topk) {
                            keep[i][step] = v[i].values[step];
                        }
                    }
                }
                let mut out: Vec<StepSeries> = v
                    .into_iter()
                    .zip(keep.into_iter().zip(keep_hists))
                    .map(|(s, (values, hists))| StepSeries {
                        labels: s.labels,
                        values,
                        hists,
                        drop_name: s.drop_name,
                    })
                    .filter(StepSeries::has_any)
                    .collect();
                if n == 1 {
                    out.sort_by(|a, b| cmp_nan_last(a.values[0], b.values[0], op == AggOp::Topk));
                }
                Ok(out)
            }
            AggOp::CountValues => {
                let mut out: HashMap<Labels, Vec<Option<f64>>> = HashMap::new();
                for (g, m) in members.iter().enumerate() {
                    for &i in m {
                        self.check_deadline()?;
                        for step in 0..n {
                            // a histogram counts under its text, as Prometheus writes it
                            let text = match (v[i].values[step], v[i].hist(step)) {
                                (Some(x), _) => Some(promflow_plan::format::format_value(x)),
                                (None, Some(h)) => Some(h.go_string()),
                                (None, None) => None,
                            };
                            if let Some(text) = text {
                                let mut l = groups[g].clone();
                                l.set(param_str, &text);
                                // every distinct value is a series of a value per step
                                if !out.contains_key(&l) {
                                    self.reserve_steps(out.len() + 1)?;
                                }
                                let e = out.entry(l).or_insert_with(|| vec![None; n]);
                                e[step] = Some(e[step].unwrap_or(0.0) + 1.0);
                            }
                        }
                    }
                }
                Ok(out.into_iter().map(|(labels, values)| StepSeries::new(labels, values)).collect())
            }
            _ => {
                let mut out = Vec::with_capacity(groups.len());
                let mut buf: Vec<f64> = Vec::new();
                let mut hbuf: Vec<(&str, &FloatHistogram)> = Vec::new();
                let with_hists = v.iter().any(|s| !s.hists.is_empty());
                for (g, m) in members.iter().enumerate() {
                    self.check_deadline()?;
                    let mut values = Vec::with_capacity(n);
                    let mut hists = Vec::with_capacity(if with_hists { n } else { 0 });
                    for step in 0..n {
                        buf.clear();
                        buf.extend(m.iter().filter_map(|&i| v[i].values[step]));
                        hbuf.clear();
                        hbuf.extend(
                            m.iter().filter_map(|&i| {
                                v[i].hist(step).map(|h| (v[i].labels.get(METRIC_NAME), &**h))
                            }),
                        );
                        let p = param_num.get(step).copied().unwrap_or(f64::NAN);
                        let (value, hist) = if hbuf.is_empty() {
                            ((!buf.is_empty()).then(|| aggregate_values(op, &mut buf, p)), None)
                        } else {
                            self.aggregate_histograms(op, &mut buf, &hbuf, p, origin)
                        };
                        values.push(value);
                        if with_hists {
                            hists.push(hist.map(Arc::new));
                        }
                    }
                    // a group keeps `__name__` only under `by (__name__)`; it is dropped at the
                    // end if any member's name was to be dropped
                    let drop_name = m.iter().any(|&i| v[i].drop_name);
                    if !hists.iter().any(Option::is_some) {
                        hists.clear();
                    }
                    out.push(StepSeries { labels: groups[g].clone(), values, hists, drop_name });
                }
                Ok(out)
            }
        }
    }

    /// The groups of `v` under `grouping`, in the order their first member comes, and each
    /// group's members (indices into `v`).
    fn groups(&self, v: &[StepSeries], grouping: &Grouping) -> Result<(Vec<Labels>, Vec<Vec<usize>>), Error> {
        let mut groups: Vec<Labels> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<Labels, usize> = HashMap::new();
        for (i, s) in v.iter().enumerate() {
            self.check_deadline()?;
            let key = grouping_key(&s.labels, grouping);
            let g = *index.entry(key.clone()).or_insert_with(|| {
                groups.push(key);
                members.push(Vec::new());
                groups.len() - 1
            });
            members[g].push(i);
        }
        Ok((groups, members))
    }

    fn scalar_op(&mut self, op: BinOp, lhs: &Plan, rhs: &Plan, return_bool: bool) -> Result<Value, Error> {
        let (lk, rk) = (lhs.kind(), rhs.kind());
        if lk == ValueKind::Scalar && rk == ValueKind::Scalar {
            let l = self.eval_scalar(lhs)?;
            let r = self.eval_scalar(rhs)?;
            return Ok(Value::Scalar(l.into_iter().zip(r).map(|(a, b)| kernels::binary(op, a, b)).collect()));
        }
        let scalar_left = lk == ValueKind::Scalar;
        let (vec_plan, sc_plan) = if scalar_left { (rhs, lhs) } else { (lhs, rhs) };
        let sc = self.eval_scalar(sc_plan)?;
        let outer = self.needs_buckets;
        self.needs_buckets |= op.is_trim();
        let v = self.eval_vector(vec_plan);
        self.needs_buckets = outer;
        let mut v = v?;
        // comparisons and trims keep the metric name, as in Prometheus
        let drop_name = !(op.is_comparison() || op.is_trim()) || return_bool;
        let mut notes = Vec::new();
        for s in v.iter_mut() {
            self.check_deadline()?;
            for (i, val) in s.values.iter_mut().enumerate() {
                if let Some(x) = *val {
                    if op.is_trim() {
                        // a trim cuts histograms: a float has no element, and an info says so
                        let (f, scalar) =
                            (kernels::native::Operand::Float(x), kernels::native::Operand::Float(sc[i]));
                        let (l, r) = if scalar_left { (scalar, f) } else { (f, scalar) };
                        kernels::native::binary(op, l, r, &mut notes);
                        *val = None;
                        continue;
                    }
                    let (a, b) = if scalar_left { (sc[i], x) } else { (x, sc[i]) };
                    let r = kernels::binary(op, a, b);
                    *val = if op.is_comparison() {
                        if return_bool {
                            Some(r)
                        } else if r == 1.0 {
                            Some(x)
                        } else {
                            None
                        }
                    } else {
                        Some(r)
                    };
                }
            }
        }
        // histograms: scaled by `*` and `/`, trimmed, kept or not by `==` and `!=` of
        // histograms, left out (with an info) by what does not take them
        for s in v.iter_mut().filter(|s| !s.hists.is_empty()) {
            for (i, &x) in sc.iter().enumerate() {
                let Some(h) = s.hist(i).cloned() else { continue };
                let (hist, scalar) =
                    (kernels::native::Operand::Histogram(&h), kernels::native::Operand::Float(x));
                let (l, r) = if scalar_left { (scalar, hist) } else { (hist, scalar) };
                match kernels::native::binary(op, l, r, &mut notes) {
                    None => s.set_hist(i, None),
                    Some((_, keep)) if return_bool => {
                        s.set_hist(i, None);
                        s.values[i] = Some(if keep { 1.0 } else { 0.0 });
                    }
                    Some((_, false)) => s.set_hist(i, None),
                    Some((result, true)) if !op.is_comparison() => s.set_hist(i, result.map(Arc::new)),
                    Some(_) => {}
                }
            }
        }
        self.note_binary(op, notes, &Origin::default());
        v.retain(StepSeries::has_any);
        if drop_name {
            Ok(Value::Vector(self.drop_names(v)?))
        } else {
            Ok(Value::Vector(v))
        }
    }

    /// The annotations of binary operations over histograms.
    fn note_binary(&mut self, op: BinOp, notes: Vec<kernels::native::BinaryNote>, origin: &Origin) {
        use kernels::native::BinaryNote;
        let what = |addition: bool| if addition { "addition" } else { "subtraction" };
        for note in notes {
            let (level, text) = match note {
                BinaryNote::Incompatible(text) => (Level::Info, text),
                BinaryNote::IncompatibleLayout => (
                    Level::Warning,
                    format!("incompatible bucket layout encountered for binary operator {}", op.symbol()),
                ),
                BinaryNote::Reconciled(addition) => (
                    Level::Info,
                    format!("mismatched custom buckets were reconciled during {}", what(addition)),
                ),
                BinaryNote::CounterResetCollision(addition) => (
                    Level::Warning,
                    format!("conflicting counter resets during histogram {}", what(addition)),
                ),
            };
            self.annotations.add(level, text, origin.expr);
        }
    }

    /// `info()`: adds to each series the labels of the info series that share its `instance`
    /// and `job`, following Prometheus's `promql/info.go`.
    fn info(
        &mut self,
        base: Vec<StepSeries>,
        data_matchers: Option<&[Matcher]>,
        shift: &TimeShift,
    ) -> Result<Vec<StepSeries>, Error> {
        let n = self.steps.len();
        let (name_matchers, data): (Vec<Matcher>, Vec<Matcher>) =
            data_matchers.unwrap_or_default().iter().cloned().partition(|m| m.name == METRIC_NAME);
        let effective = effective_info_name_matchers(&name_matchers, data_matchers.is_some());
        // info series in the input itself pass through unchanged
        let ignored: Vec<bool> =
            base.iter().map(|s| effective.iter().all(|m| m.matches(s.labels.get(METRIC_NAME)))).collect();
        let mut id_values: Vec<(&str, Vec<String>)> = Vec::new();
        for id in INFO_IDENTIFYING_LABELS {
            let mut vals: Vec<String> = base
                .iter()
                .zip(&ignored)
                .filter(|(_, &ign)| !ign)
                .map(|(s, _)| s.labels.get(id).to_string())
                .filter(|v| !v.is_empty())
                .collect();
            vals.sort();
            vals.dedup();
            if !vals.is_empty() {
                id_values.push((id, vals));
            }
        }
        let info_series = if id_values.is_empty() {
            Vec::new()
        } else {
            let mut matchers = Vec::new();
            for (id, vals) in &id_values {
                let alternatives: Vec<String> = vals.iter().map(|v| regex::escape(v)).collect();
                matchers.push(
                    Matcher::new(promflow_storage::MatchOp::Regex, *id, alternatives.join("|"))
                        .map_err(|e| Error::Execution(e.to_string()))?,
                );
            }
            matchers.extend(data.iter().cloned());
            matchers.extend(effective_info_name_matchers(&name_matchers, !name_matchers.is_empty()));
            // an info series holds floats: one with histograms is the query's error, as in
            // Prometheus
            let (lo, hi) = self.anchored_span(shift);
            let hists = self.querier.select_histograms(&matchers, lo - self.opts.lookback_ms + 1, hi)?;
            if let Some(h) = hists.first() {
                return Err(Error::Execution(format!(
                    "this should be an info metric, with float samples: {}",
                    h.labels
                )));
            }
            // values are the samples' own timestamps: the newest version of an info series wins
            self.select(&matchers, shift, Selected::Timestamps)?
        };
        let info_sig = |name: &str, l: &Labels| {
            let mut sig = vec![name.to_string()];
            sig.extend(INFO_IDENTIFYING_LABELS.iter().map(|id| l.get(id).to_string()));
            sig
        };
        let mut info_names: Vec<&str> = info_series.iter().map(|s| s.labels.get(METRIC_NAME)).collect();
        info_names.sort();
        info_names.dedup();
        let all_match_empty = data.iter().all(|m| m.matches(""));
        let mut out = JoinOutput::new(n);
        for step in 0..n {
            self.check_deadline()?;
            let mut by_sig: HashMap<Vec<String>, (&Labels, f64)> = HashMap::new();
            for s in &info_series {
                let Some(t) = s.values[step] else { continue };
                let sig = info_sig(s.labels.get(METRIC_NAME), &s.labels);
                match by_sig.get(&sig) {
                    Some(&(_, et)) if et > t => {}
                    Some(&(el, et)) if et == t => {
                        return Err(Error::Execution(format!(
                            "found duplicate series for info metric: existing {el} @ {}, new {} @ {}",
                            (et * 1000.0).round() as i64,
                            s.labels,
                            (t * 1000.0).round() as i64
                        )));
                    }
                    _ => {
                        by_sig.insert(sig, (&s.labels, t));
                    }
                }
            }
            for (b, &ign) in base.iter().zip(&ignored) {
                let Some(value) = b.values[step] else { continue };
                if ign {
                    out.set_marked(b.labels.clone(), b.drop_name, step, value)?;
                    continue;
                }
                let mut added = Labels::new();
                let mut matched = false;
                for name in &info_names {
                    let Some((il, _)) = by_sig.get(&info_sig(name, &b.labels)) else { continue };
                    matched = true;
                    for l in il.iter().filter(|l| l.name != METRIC_NAME) {
                        if !data.is_empty() && !data.iter().any(|m| m.name == l.name) {
                            continue;
                        }
                        let existing = added.get(&l.name);
                        if !existing.is_empty() && existing != l.value {
                            return Err(Error::Execution(format!("conflicting label: {}", l.name)));
                        }
                        if !b.labels.contains(&l.name) {
                            added.set(&l.name, &l.value);
                        }
                    }
                }
                if !matched && !all_match_empty {
                    continue;
                }
                let mut labels = b.labels.clone();
                for l in added.iter() {
                    labels.set(&l.name, &l.value);
                }
                out.set_marked(labels, b.drop_name, step, value)?;
            }
        }
        Ok(out.series)
    }

    /// Removes the metric name (with `__type__` and `__unit__`) from every series and merges
    /// those that become equal; with delayed name removal, only marks them for removal at the
    /// end of the query (see [`finish_names`]), so that later operators still see the name.
    fn drop_names(&self, mut v: Vec<StepSeries>) -> Result<Vec<StepSeries>, Error> {
        if self.opts.delayed_name_removal {
            for s in v.iter_mut() {
                s.drop_name = true;
            }
            return Ok(v);
        }
        for s in v.iter_mut() {
            strip_metric_identity(&mut s.labels);
        }
        merge_same_labels(v)
    }
}

/// With delayed name removal, removes the names marked for removal from the query's result;
/// series that become equal merge, and two values at one step are an error.
fn finish_names(mut v: Vec<StepSeries>) -> Result<Vec<StepSeries>, Error> {
    if !v.iter().any(|s| s.drop_name) {
        return Ok(v);
    }
    for s in v.iter_mut().filter(|s| s.drop_name) {
        strip_metric_identity(&mut s.labels);
        s.drop_name = false;
    }
    merge_same_labels(v)
}

/// Records Prometheus's warning for a quantile outside [0, 1] (or NaN).
fn check_quantile(annotations: &mut Annotations, q: f64, origin: &Origin, arg: usize) {
    if q.is_nan() || !(0.0..=1.0).contains(&q) {
        annotations.add(
            Level::Warning,
            format!("quantile value should be between 0 and 1, got {}", go_format_g(q, None)),
            origin.arg(arg),
        );
    }
}

/// Orders values ascending or descending with NaN (and absent values) last either way, as
/// Prometheus's `sort`, `topk` and `bottomk` do.
fn cmp_nan_last(a: Option<f64>, b: Option<f64>, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (x, y) = (a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN));
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if descending => y.total_cmp(&x),
        _ => x.total_cmp(&y),
    }
}

/// Merges series that ended up with identical labels (after dropping the metric name);
/// two values at the same step are Prometheus's duplicate-labelset error.
fn merge_same_labels(v: Vec<StepSeries>) -> Result<Vec<StepSeries>, Error> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(v.len());
    let mut out: Vec<StepSeries> = Vec::with_capacity(v.len());
    for s in v {
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&i) => {
                let target = &mut out[i];
                for step in 0..s.values.len() {
                    if !s.has(step) {
                        continue;
                    }
                    if target.has(step) {
                        return Err(Error::Execution(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                    match s.values[step] {
                        Some(x) => target.values[step] = Some(x),
                        None => target.set_hist(step, s.hist(step).cloned()),
                    }
                }
            }
        }
    }
    Ok(out)
}

fn set_op(
    op: BinOp,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    g: &Grouping,
    stop: Stop<'_>,
) -> Result<Vec<StepSeries>, Error> {
    let n = l.first().or(r.first()).map(|s| s.values.len()).unwrap_or(0);
    let sig = |s: &StepSeries| grouping_key(&s.labels, g);
    // per signature, at which steps the other side has a value
    let mut rsig: HashMap<Labels, Vec<bool>> = HashMap::new();
    for s in &r {
        stop.check()?;
        let e = rsig.entry(sig(s)).or_insert_with(|| vec![false; n]);
        for (i, present) in e.iter_mut().enumerate() {
            *present |= s.has(i);
        }
    }
    match op {
        BinOp::And | BinOp::Unless => {
            let want = op == BinOp::And;
            let mut out = Vec::with_capacity(l.len());
            for mut s in l {
                stop.check()?;
                let present = rsig.get(&sig(&s));
                for i in 0..n {
                    if present.is_some_and(|p| p[i]) != want {
                        s.clear(i);
                    }
                }
                if s.has_any() {
                    out.push(s);
                }
            }
            Ok(out)
        }
        _ => {
            let mut lsig: HashMap<Labels, Vec<bool>> = HashMap::new();
            for s in &l {
                stop.check()?;
                let e = lsig.entry(sig(s)).or_insert_with(|| vec![false; n]);
                for (i, present) in e.iter_mut().enumerate() {
                    *present |= s.has(i);
                }
            }
            let mut out = l;
            for mut s in r {
                stop.check()?;
                if let Some(p) = lsig.get(&sig(&s)) {
                    for (i, &present) in p.iter().enumerate() {
                        if present {
                            s.clear(i);
                        }
                    }
                }
                if s.has_any() {
                    out.push(s);
                }
            }
            // a right-hand series may complete a left-hand one with the same labels at the
            // steps the left lacks (`x or vector(0)` in a subquery): they are one series
            merge_same_labels(out)
        }
    }
}

fn join(
    op: BinOp,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    key: &promflow_plan::JoinKey,
    return_bool: bool,
    delayed_name_removal: bool,
    stop: Stop<'_>,
) -> Result<(Vec<StepSeries>, Vec<kernels::native::BinaryNote>), Error> {
    use kernels::native::Operand;
    let mut notes = Vec::new();
    let n = lhs.first().or(rhs.first()).map_or(0, |s| s.values.len());
    let (g, card) = (&key.grouping, &key.card);
    // "many" is the side whose labels the result keeps; "one" must be unique per signature.
    let swapped = matches!(card, Cardinality::OneToMany(_));
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let include: &[String] = match card {
        Cardinality::ManyToOne(l) | Cardinality::OneToMany(l) => l,
        _ => &[],
    };
    let one_to_one = matches!(card, Cardinality::OneToOne);
    let one_sigs: Vec<Labels> = one.iter().map(|s| grouping_key(&s.labels, g)).collect();
    let mut by_sig: HashMap<&Labels, Vec<usize>> = HashMap::new();
    for (i, s) in one_sigs.iter().enumerate() {
        by_sig.entry(s).or_default().push(i);
    }
    // arithmetic removes the name at once; `bool` comparisons like functions (delayed or not)
    let strip_name = !(op.is_comparison() || op.is_trim()) || (return_bool && !delayed_name_removal);
    let mut out = JoinOutput::new(n);
    // signatures that had a many-side value at a step (one-to-one: at most one may match)
    let mut seen_many: HashMap<(Labels, usize), ()> = HashMap::new();
    let no_labels = Labels::new();
    for m in &many {
        stop.check()?;
        let sig = grouping_key(&m.labels, g);
        let candidates = by_sig.get(&sig).map(Vec::as_slice).unwrap_or(&[]);
        for step in 0..n {
            let Some(mv) = m.operand(step) else { continue };
            let mut matched = candidates.iter().filter(|&&i| one[i].has(step));
            let first = matched.next();
            if matched.next().is_some() {
                let side = if swapped { "left" } else { "right" };
                return Err(Error::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}];many-to-many matching not allowed: matching labels must be unique on one side",
                    sig,
                    candidates.iter().filter(|&&i| one[i].has(step)).map(|&i| one[i].labels.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
            let repeated = seen_many.insert((sig.clone(), step), ()).is_some();
            if repeated && one_to_one && first.is_some() {
                return Err(Error::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                ));
            }
            let (ov, one_labels) = match first {
                Some(&oi) => (one[oi].operand(step).unwrap_or(Operand::Float(f64::NAN)), &one[oi].labels),
                None => match key.fill_one {
                    Some(v) => (Operand::Float(v), &no_labels),
                    None => continue,
                },
            };
            let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
            let value = match (lv, rv) {
                (Operand::Float(lv), Operand::Float(rv)) if !op.is_trim() => {
                    combine(op, lv, rv, return_bool).map(StepValue::Float)
                }
                (lv, rv) => match kernels::native::binary(op, lv, rv, &mut notes) {
                    None => None,
                    Some((_, keep)) if return_bool => Some(StepValue::Float(if keep { 1.0 } else { 0.0 })),
                    Some((result, keep)) => {
                        result.filter(|_| keep).map(|h| StepValue::Histogram(Arc::new(h)))
                    }
                },
            };
            if let Some(value) = value {
                let labels = result_labels(&m.labels, one_labels, g, one_to_one, include, strip_name);
                // a filtering comparison keeps the left series as it is, mark included
                out.set(labels, !strip_name && m.drop_name, step, value)?;
            }
        }
    }
    if let Some(fill) = key.fill_many {
        // one-side series whose group has no many-side value at a step: the match group's
        // labels, with the fill value standing in for the many side
        for (oi, o) in one.iter().enumerate() {
            stop.check()?;
            for step in 0..n {
                let Some(ov) = o.values[step] else { continue };
                if seen_many.contains_key(&(one_sigs[oi].clone(), step)) {
                    continue;
                }
                let (lv, rv) = if swapped { (ov, fill) } else { (fill, ov) };
                if let Some(value) = combine(op, lv, rv, return_bool) {
                    out.set(one_sigs[oi].clone(), false, step, StepValue::Float(value))?;
                }
            }
        }
    }
    let mut series = out.series;
    if return_bool && delayed_name_removal {
        for s in series.iter_mut() {
            s.drop_name = true;
        }
    }
    Ok((series, notes))
}

/// A join's value at a step.
enum StepValue {
    Float(f64),
    Histogram(Arc<FloatHistogram>),
}

/// The series a join produces, one per label set.
struct JoinOutput {
    n: usize,
    index: HashMap<Labels, usize>,
    series: Vec<StepSeries>,
}

impl JoinOutput {
    fn new(n: usize) -> Self {
        JoinOutput { n, index: HashMap::new(), series: Vec::new() }
    }

    /// [`JoinOutput::set`] for a series whose name may be marked for removal; a second value at
    /// a step is Prometheus's duplicate-labelset error.
    fn set_marked(&mut self, labels: Labels, drop_name: bool, step: usize, value: f64) -> Result<(), Error> {
        let i = self.slot(labels, drop_name);
        if self.series[i].values[step].is_some() {
            return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
        }
        self.series[i].values[step] = Some(value);
        Ok(())
    }

    /// Sets the value of `labels` at `step`; a second value there is Prometheus's error.
    fn set(&mut self, labels: Labels, drop_name: bool, step: usize, value: StepValue) -> Result<(), Error> {
        let i = self.slot(labels, drop_name);
        if self.series[i].has(step) {
            return Err(Error::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        match value {
            StepValue::Float(v) => self.series[i].values[step] = Some(v),
            StepValue::Histogram(h) => self.series[i].set_hist(step, Some(h)),
        }
        Ok(())
    }

    /// The index of the series with `labels`, added if new.
    fn slot(&mut self, labels: Labels, drop_name: bool) -> usize {
        match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push(StepSeries {
                    labels,
                    values: vec![None; self.n],
                    hists: Vec::new(),
                    drop_name,
                });
                self.series.len() - 1
            }
        }
    }
}

fn relabel(rule: &Relabel, mut v: Vec<StepSeries>) -> Result<Vec<StepSeries>, Error> {
    let re = compile_relabel(rule)?;
    let dst = match rule {
        Relabel::Replace { dst, .. } | Relabel::Join { dst, .. } => dst,
    };
    for s in v.iter_mut() {
        // a name set explicitly stays, delayed name removal or not
        if relabel_one(rule, re.as_ref(), &mut s.labels) {
            s.drop_name &= dst != METRIC_NAME;
        }
    }
    merge_same_labels(v)
}
