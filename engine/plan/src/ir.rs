//! The plan IR: one logical plan that every front end compiles to and both executors run.
//!
//! Nodes are time-series and relational operators, not query-language syntax. Every node
//! produces one of four kinds of value, evaluated at each step of a query:
//!
//! * [`ValueKind::Scalar`]: one number per step;
//! * [`ValueKind::Instant`]: a set of labelled series with at most one value per step;
//! * [`ValueKind::Range`]: a set of labelled series with, per step, the samples of a window;
//! * [`ValueKind::String`]: a constant string.
//!
//! See `docs/architecture.md` for the operator catalogue and the `EXPLAIN` text form that
//! [`Plan`]'s `Display` prints.

use std::fmt;

use promflow_storage::Matcher;

/// The kind of value a plan node produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// One number per step.
    Scalar,
    /// Labelled series, one value per step.
    Instant,
    /// Labelled series, a window of samples per step.
    Range,
    /// A constant string.
    String,
}

impl ValueKind {
    /// The name Prometheus uses in messages ("scalar", "instant vector", …).
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Scalar => "scalar",
            ValueKind::Instant => "instant vector",
            ValueKind::Range => "range vector",
            ValueKind::String => "string",
        }
    }
}

/// Where a selection is anchored in time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeAnchor {
    /// At each evaluation step (the default).
    Step,
    /// At a fixed time in milliseconds (`@ <t>`, `@ start()`, `@ end()` resolved at lowering).
    Fixed(i64),
    /// At the query's start.
    Start,
    /// At the query's end.
    End,
}

/// How a node's time is shifted and anchored: `at` picks the base time, then `offset_ms`
/// is subtracted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeShift {
    /// Milliseconds subtracted from the anchor (negative moves forward).
    pub offset_ms: i64,
    /// The anchor.
    pub at: TimeAnchor,
}

impl Default for TimeShift {
    fn default() -> Self {
        TimeShift { offset_ms: 0, at: TimeAnchor::Step }
    }
}

impl TimeShift {
    /// The time at which a node with this shift is read when evaluated at `step`.
    pub fn apply(&self, step: i64, query_start: i64, query_end: i64) -> i64 {
        let base = match self.at {
            TimeAnchor::Step => step,
            TimeAnchor::Fixed(t) => t,
            TimeAnchor::Start => query_start,
            TimeAnchor::End => query_end,
        };
        base - self.offset_ms
    }

    /// Whether the shift is the identity.
    pub fn is_identity(&self) -> bool {
        self.offset_ms == 0 && self.at == TimeAnchor::Step
    }
}

/// A position in the query text: 1-based line and byte column, as Prometheus prints it in
/// annotations (`(1:7)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePos {
    /// Line, from 1.
    pub line: u32,
    /// Byte column within the line, from 1.
    pub col: u32,
}

/// Where an expression and its arguments start in the query text, so that warnings and infos
/// can point at the sub-expression that caused them. Origins play no part in what a plan
/// computes, so every two origins compare equal: plans that differ only in where their text
/// came from are the same plan (and can share state in the dataflow).
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The start of the whole expression (a function call or aggregation).
    pub expr: Option<SourcePos>,
    /// The start of each argument, in the query's order (an aggregation's parameter first).
    pub args: Vec<Option<SourcePos>>,
}

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Origin {
    /// The start of argument `i`, if known.
    pub fn arg(&self, i: usize) -> Option<SourcePos> {
        self.args.get(i).copied().flatten()
    }
}

/// How a selection treats the edges of its window: Prometheus's experimental extended range
/// selectors (`x[5m] anchored`, `x[5m] smoothed`, `x smoothed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Edges {
    /// Only the samples inside the window (or, for an instant selection, the newest one
    /// within the lookback).
    #[default]
    Plain,
    /// The window also takes the last sample at or before its start (within the lookback)
    /// as its left edge; counter functions then measure without extrapolating.
    Anchored,
    /// Values at the window's edges (or at the instant) are interpolated from the samples
    /// around them, looking as far as the lookback on either side.
    Smoothed,
}

/// Functions over the window of samples of each series (range vector → instant vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowFn {
    /// Per-second rate of a counter, extrapolated.
    Rate,
    /// Increase of a counter, extrapolated.
    Increase,
    /// Difference of a gauge, extrapolated.
    Delta,
    /// Per-second rate from the last two samples.
    Irate,
    /// Difference of the last two samples.
    Idelta,
    /// Least-squares slope.
    Deriv,
    /// Least-squares prediction `t` seconds ahead (scalar argument).
    PredictLinear,
    /// Number of value changes.
    Changes,
    /// Number of counter resets.
    Resets,
    /// Mean of the window.
    AvgOverTime,
    /// Minimum of the window.
    MinOverTime,
    /// Maximum of the window.
    MaxOverTime,
    /// Sum of the window.
    SumOverTime,
    /// Sample count of the window.
    CountOverTime,
    /// Last value of the window.
    LastOverTime,
    /// 1 for each series with a sample in the window.
    PresentOverTime,
    /// Population standard deviation of the window.
    StddevOverTime,
    /// Population variance of the window.
    StdvarOverTime,
    /// φ-quantile of the window (scalar argument first).
    QuantileOverTime,
    /// 1 when the selection has no sample in the window.
    AbsentOverTime,
    /// Timestamp of the window's minimum sample, the latest of equal ones; a NaN is replaced
    /// by any later sample (experimental).
    TsOfMinOverTime,
    /// Timestamp of the window's maximum sample, the latest of equal ones (experimental).
    TsOfMaxOverTime,
    /// Timestamp of the last sample (experimental).
    TsOfLastOverTime,
    /// Timestamp of the first sample (experimental).
    TsOfFirstOverTime,
    /// Median absolute deviation (experimental).
    MadOverTime,
    /// First value of the window (experimental).
    FirstOverTime,
    /// Double exponential smoothing with smoothing and trend factors.
    DoubleExponentialSmoothing,
}

impl WindowFn {
    /// Whether the function may read an anchored window (Prometheus's
    /// `AnchoredSafeFunctions`): the counter and change functions, which then measure from the
    /// last sample at or before the window's start without extrapolating.
    pub fn takes_anchored(self) -> bool {
        matches!(
            self,
            WindowFn::Rate | WindowFn::Increase | WindowFn::Delta | WindowFn::Changes | WindowFn::Resets
        )
    }

    /// Whether the value depends on the samples' times against the evaluation time, not only
    /// on their order and spacing: shifting the samples (an `offset`) changes it.
    pub fn reads_sample_times(self) -> bool {
        matches!(
            self,
            WindowFn::PredictLinear
                | WindowFn::TsOfMinOverTime
                | WindowFn::TsOfMaxOverTime
                | WindowFn::TsOfLastOverTime
                | WindowFn::TsOfFirstOverTime
        )
    }
}

/// Functions applied to each series' value at each step (instant vector → instant vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapFn {
    /// `abs`
    Abs,
    /// `ceil`
    Ceil,
    /// `floor`
    Floor,
    /// `exp`
    Exp,
    /// `sqrt`
    Sqrt,
    /// `ln`
    Ln,
    /// `log2`
    Log2,
    /// `log10`
    Log10,
    /// `sgn`
    Sgn,
    /// `round` (optional scalar `to_nearest`)
    Round,
    /// `clamp(min, max)`
    Clamp,
    /// `clamp_min(min)`
    ClampMin,
    /// `clamp_max(max)`
    ClampMax,
    /// Trigonometric and hyperbolic functions.
    Trig(TrigFn),
    /// Calendar functions of the value taken as seconds (or the step time when no argument).
    Date(DateFn),
    /// `timestamp`: the sample's own timestamp in seconds.
    Timestamp,
    /// `start_timestamp`: the selected sample's start timestamp in seconds (0 where it has
    /// none); nothing for a computed vector or when queries use no start timestamps.
    StartTimestamp,
    /// Unary minus.
    Negate,
}

/// Trigonometric functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum TrigFn {
    Acos,
    Acosh,
    Asin,
    Asinh,
    Atan,
    Atanh,
    Cos,
    Cosh,
    Sin,
    Sinh,
    Tan,
    Tanh,
    Deg,
    Rad,
}

/// Calendar functions (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum DateFn {
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    DaysInMonth,
    Hour,
    Minute,
    Month,
    Year,
}

/// Aggregation operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
    Limitk,
    LimitRatio,
}

/// Which labels an aggregation or join keys on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Keep exactly these labels.
    By(Vec<String>),
    /// Drop these labels (and the metric name).
    Without(Vec<String>),
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
    /// `</`: a histogram without its observations above a number.
    TrimUpper,
    /// `>/`: a histogram without its observations below a number.
    TrimLower,
}

impl BinOp {
    /// Whether the operator trims histograms (`</`, `>/`).
    pub fn is_trim(self) -> bool {
        matches!(self, BinOp::TrimUpper | BinOp::TrimLower)
    }

    /// Whether the operator is a comparison (filters unless `bool`).
    pub fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le)
    }

    /// Whether the operator is a set operator (`and`, `or`, `unless`).
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// The operator's symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Atan2 => "atan2",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Gt => ">",
            BinOp::Lt => "<",
            BinOp::Ge => ">=",
            BinOp::Le => "<=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
            BinOp::TrimUpper => "</",
            BinOp::TrimLower => ">/",
        }
    }
}

/// Which side of a join may have many series per match group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cardinality {
    /// Each group has at most one series per side.
    OneToOne,
    /// Many on the left; the listed labels are copied from the right.
    ManyToOne(Vec<String>),
    /// Many on the right; the listed labels are copied from the left.
    OneToMany(Vec<String>),
    /// Set operators.
    ManyToMany,
}

/// The join key and cardinality of a vector–vector operation.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinKey {
    /// `on(...)` (By) or `ignoring(...)` (Without).
    pub grouping: Grouping,
    /// Cardinality.
    pub card: Cardinality,
    /// Value standing in for a missing series on the "many" side (the left one unless
    /// `group_right`): PromQL's `fill_left`, or `fill`. `None` drops unmatched groups.
    pub fill_many: Option<f64>,
    /// Value standing in for a missing series on the "one" side: `fill_right`, or `fill`.
    pub fill_one: Option<f64>,
}

/// Label rewrites that keep values.
#[derive(Clone, Debug, PartialEq)]
pub enum Relabel {
    /// `label_replace(v, dst, replacement, src, regex)`.
    Replace {
        /// Destination label.
        dst: String,
        /// Replacement template (`$1`, `${name}`).
        replacement: String,
        /// Source label.
        src: String,
        /// Fully anchored regex over the source value.
        regex: String,
    },
    /// `label_join(v, dst, separator, src...)`.
    Join {
        /// Destination label.
        dst: String,
        /// Separator between values.
        separator: String,
        /// Source labels, in order.
        src: Vec<String>,
    },
}

/// Functions that shape a whole vector rather than each value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VectorFn {
    /// 1 with no labels when the input is empty at a step (labels come from the plan).
    Absent,
    /// Sort ascending by value (instant queries only).
    Sort,
    /// Sort descending by value.
    SortDesc,
    /// Sort by the values of the labels given as string arguments, in natural order, then by
    /// the whole label set (experimental).
    SortByLabel,
    /// `SortByLabel`, descending.
    SortByLabelDesc,
    /// `histogram_quantile(φ, buckets)` over classic `le` buckets.
    HistogramQuantile,
    /// `histogram_quantiles(buckets, "label", φ…)` (experimental): one series per φ, named by
    /// the label; the label name comes first among the arguments, then the φs.
    HistogramQuantiles,
    /// `histogram_fraction(lower, upper, buckets)` over classic buckets.
    HistogramFraction,
    /// `histogram_count`: a native histogram's count of observations.
    HistogramCount,
    /// `histogram_sum`: a native histogram's sum of observations.
    HistogramSum,
    /// `histogram_avg`: sum over count.
    HistogramAvg,
    /// `histogram_stddev`: the standard deviation estimated from the buckets.
    HistogramStddev,
    /// `histogram_stdvar`: the variance estimated from the buckets.
    HistogramStdvar,
    /// The only element's value as a scalar, NaN otherwise.
    Scalar,
}

/// A node of the logical plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// A constant number at every step.
    Number(f64),
    /// A constant string.
    Str(String),
    /// The evaluation time in seconds at every step.
    Time,
    /// The first or last evaluation time of the whole query in seconds, at every step (also
    /// inside subqueries): PromQL's `start()` and `end()`. `TimeAnchor::Start` or `End`.
    QueryTime(TimeAnchor),
    /// Instant selection: the newest sample within the lookback window of each step.
    Select {
        /// Label matchers (all must hold).
        matchers: Vec<Matcher>,
        /// Time shift.
        shift: TimeShift,
        /// Plain or smoothed (interpolated at the step).
        edges: Edges,
        /// Where the selector starts (`args[0]`), for the warnings of a smoothed selection.
        origin: Origin,
    },
    /// Range selection: the samples within `(t - range, t]` of each step.
    Window {
        /// Label matchers.
        matchers: Vec<Matcher>,
        /// Window length in milliseconds.
        range_ms: i64,
        /// Time shift.
        shift: TimeShift,
        /// Plain, anchored or smoothed window edges.
        edges: Edges,
    },
    /// Evaluates an instant-valued plan at sub-steps to form windows (a subquery).
    SubWindow {
        /// The inner instant plan.
        input: Box<Plan>,
        /// Window length in milliseconds.
        range_ms: i64,
        /// Inner resolution in milliseconds.
        step_ms: i64,
        /// Time shift.
        shift: TimeShift,
    },
    /// A window function applied to each series of a range-valued input.
    WindowFunction {
        /// The function.
        func: WindowFn,
        /// The range-valued input.
        input: Box<Plan>,
        /// Scalar arguments (before or after the window, per the function).
        args: Vec<Plan>,
        /// Where the call and its arguments are in the query text.
        origin: Origin,
    },
    /// A value function applied to each element of an instant vector.
    Map {
        /// The function.
        func: MapFn,
        /// The instant input.
        input: Box<Plan>,
        /// Scalar arguments.
        args: Vec<Plan>,
    },
    /// A function of a whole instant vector.
    VectorFunction {
        /// The function.
        func: VectorFn,
        /// The instant input.
        input: Box<Plan>,
        /// Scalar arguments.
        args: Vec<Plan>,
        /// Labels of the output (for `absent`).
        labels: Vec<(String, String)>,
        /// Where the call and its arguments are in the query text.
        origin: Origin,
    },
    /// Groups series by labels and aggregates each group at each step.
    Aggregate {
        /// The operator.
        op: AggOp,
        /// Grouping labels.
        grouping: Grouping,
        /// The parameter (k, φ, label name).
        param: Option<Box<Plan>>,
        /// The instant input.
        input: Box<Plan>,
        /// Where the aggregation and its parameter are in the query text.
        origin: Origin,
    },
    /// Aggregates every sample in the window of every series of a group at each step: SQL's
    /// aggregates over rows (`percentile_cont`), which PromQL has no operator for (its
    /// aggregations take one value per series). Produced by the SQL front end only.
    AggregateSamples {
        /// The operator (`Quantile` with `param` φ; `Sum` and `Avg` add the samples in
        /// order, series after series, without compensation, as SQL adds rows).
        op: AggOp,
        /// Grouping labels.
        grouping: Grouping,
        /// The operator's constant parameter.
        param: f64,
        /// `Quantile` of the samples in descending order (SQL's `ORDER BY value DESC`), which
        /// rounds as the ascending quantile of the negated samples, negated.
        descending: bool,
        /// The range-valued input.
        input: Box<Plan>,
    },
    /// Vector–vector operation: match series on labels, combine values.
    Join {
        /// The operator.
        op: BinOp,
        /// Left input.
        lhs: Box<Plan>,
        /// Right input.
        rhs: Box<Plan>,
        /// How series are matched.
        key: JoinKey,
        /// Comparison returns 0/1 instead of filtering.
        return_bool: bool,
        /// Where the operation (its left operand) starts in the query, for its annotations.
        origin: Origin,
    },
    /// Vector–scalar or scalar–scalar operation applied per element.
    ScalarOp {
        /// The operator.
        op: BinOp,
        /// Left input.
        lhs: Box<Plan>,
        /// Right input.
        rhs: Box<Plan>,
        /// Comparison returns 0/1 instead of filtering.
        return_bool: bool,
    },
    /// Rewrites labels of every series.
    Relabel {
        /// The rewrite.
        rule: Relabel,
        /// The instant input.
        input: Box<Plan>,
    },
    /// Turns a scalar into a one-element vector with no labels (`vector(s)`).
    ToVector(Box<Plan>),
    /// Adds the data labels of matching info series (`target_info` by default) to each input
    /// series, joined on `instance` and `job` (PromQL's experimental `info()`).
    Info {
        /// The instant input.
        input: Box<Plan>,
        /// The data-label selector (`info(v, {…})`): which info metrics (by `__name__`) and
        /// which of their labels to add; `None` when not given.
        data_matchers: Option<Vec<Matcher>>,
        /// When the info series are read: the time shift of the input's first selection.
        shift: TimeShift,
    },
}

impl Plan {
    /// The kind of value this node produces.
    pub fn kind(&self) -> ValueKind {
        match self {
            Plan::Number(_) | Plan::Time | Plan::QueryTime(_) => ValueKind::Scalar,
            Plan::Str(_) => ValueKind::String,
            Plan::Window { .. } | Plan::SubWindow { .. } => ValueKind::Range,
            Plan::VectorFunction { func: VectorFn::Scalar, .. } => ValueKind::Scalar,
            Plan::ScalarOp { lhs, rhs, .. } => {
                if lhs.kind() == ValueKind::Scalar && rhs.kind() == ValueKind::Scalar {
                    ValueKind::Scalar
                } else {
                    ValueKind::Instant
                }
            }
            Plan::Map { func: MapFn::Negate, input, .. } if input.kind() == ValueKind::Scalar => {
                ValueKind::Scalar
            }
            _ => ValueKind::Instant,
        }
    }

    /// The children of the node, in evaluation order.
    pub fn children(&self) -> Vec<&Plan> {
        match self {
            Plan::Number(_)
            | Plan::Str(_)
            | Plan::Time
            | Plan::QueryTime(_)
            | Plan::Select { .. }
            | Plan::Window { .. } => vec![],
            Plan::SubWindow { input, .. }
            | Plan::Relabel { input, .. }
            | Plan::ToVector(input)
            | Plan::AggregateSamples { input, .. }
            | Plan::Info { input, .. } => {
                vec![input]
            }
            Plan::WindowFunction { input, args, .. }
            | Plan::Map { input, args, .. }
            | Plan::VectorFunction { input, args, .. } => {
                let mut v: Vec<&Plan> = args.iter().collect();
                v.push(input);
                v
            }
            Plan::Aggregate { param, input, .. } => {
                let mut v: Vec<&Plan> = param.iter().map(|p| p.as_ref()).collect();
                v.push(input);
                v
            }
            Plan::Join { lhs, rhs, .. } | Plan::ScalarOp { lhs, rhs, .. } => vec![lhs, rhs],
        }
    }

    /// The children of the node, in evaluation order, to rewrite them.
    pub fn children_mut(&mut self) -> Vec<&mut Plan> {
        match self {
            Plan::Number(_)
            | Plan::Str(_)
            | Plan::Time
            | Plan::QueryTime(_)
            | Plan::Select { .. }
            | Plan::Window { .. } => vec![],
            Plan::SubWindow { input, .. }
            | Plan::Relabel { input, .. }
            | Plan::ToVector(input)
            | Plan::AggregateSamples { input, .. }
            | Plan::Info { input, .. } => {
                vec![input]
            }
            Plan::WindowFunction { input, args, .. }
            | Plan::Map { input, args, .. }
            | Plan::VectorFunction { input, args, .. } => {
                let mut v: Vec<&mut Plan> = args.iter_mut().collect();
                v.push(input);
                v
            }
            Plan::Aggregate { param, input, .. } => {
                let mut v: Vec<&mut Plan> = param.iter_mut().map(|p| p.as_mut()).collect();
                v.push(input);
                v
            }
            Plan::Join { lhs, rhs, .. } | Plan::ScalarOp { lhs, rhs, .. } => vec![lhs, rhs],
        }
    }

    /// The matcher lists of every selection in the plan (and of `info()`'s data-label
    /// selector), in evaluation order: the series the plan can read.
    pub fn selections(&self) -> Vec<&[Matcher]> {
        let mut out = Vec::new();
        self.collect_selections(&mut out);
        out
    }

    fn collect_selections<'a>(&'a self, out: &mut Vec<&'a [Matcher]>) {
        match self {
            Plan::Select { matchers, .. } | Plan::Window { matchers, .. } => out.push(matchers),
            Plan::Info { data_matchers: Some(ms), .. } => out.push(ms),
            _ => {}
        }
        for c in self.children() {
            c.collect_selections(out);
        }
    }

    /// Whether the plan reads the evaluation time (`time()`, and the date functions without
    /// an argument), so that its value changes with the clock alone.
    pub fn reads_time(&self) -> bool {
        let own = match self {
            Plan::Time => true,
            // of a computed vector, its elements' time is the evaluation's
            Plan::Map { func: MapFn::Timestamp, input, .. } => !matches!(**input, Plan::Select { .. }),
            _ => false,
        };
        own || self.children().iter().any(|c| c.reads_time())
    }

    /// The latest time an `@ t` pins a selection or window to (its offset taken off), if
    /// any: an evaluation before it reads samples after the evaluation time.
    pub fn latest_pinned_ms(&self) -> Option<i64> {
        let own = match self {
            Plan::Select { shift, .. } | Plan::Window { shift, .. } | Plan::SubWindow { shift, .. } => {
                match shift.at {
                    TimeAnchor::Fixed(t) => Some(t - shift.offset_ms),
                    _ => None,
                }
            }
            _ => None,
        };
        self.children().iter().filter_map(|c| c.latest_pinned_ms()).chain(own).max()
    }

    /// The longest look-back any selection in the plan needs, in milliseconds (windows plus
    /// offsets), not counting the lookback delta.
    pub fn max_window_ms(&self) -> i64 {
        let own = match self {
            Plan::Window { range_ms, shift, .. } => range_ms + shift.offset_ms.max(0),
            Plan::Select { shift, .. } => shift.offset_ms.max(0),
            Plan::SubWindow { range_ms, shift, input, .. } => {
                range_ms + shift.offset_ms.max(0) + input.max_window_ms()
            }
            _ => 0,
        };
        self.children().iter().map(|c| c.max_window_ms()).max().unwrap_or(0).max(own)
    }

    fn explain_line(&self) -> String {
        match self {
            Plan::Number(n) => format!("Number {}", crate::format::format_value(*n)),
            Plan::Str(s) => format!("String {s:?}"),
            Plan::Time => "Time".into(),
            Plan::QueryTime(at) => format!("QueryTime{}", fmt_shift(&TimeShift { offset_ms: 0, at: *at })),
            Plan::Select { matchers, shift, edges, .. } => {
                format!("Select {}{}{}", fmt_matchers(matchers), fmt_shift(shift), fmt_edges(*edges))
            }
            Plan::Window { matchers, range_ms, shift, edges } => format!(
                "Window {} range={}ms{}{}",
                fmt_matchers(matchers),
                range_ms,
                fmt_shift(shift),
                fmt_edges(*edges)
            ),
            Plan::SubWindow { range_ms, step_ms, shift, .. } => {
                format!("SubWindow range={range_ms}ms step={step_ms}ms{}", fmt_shift(shift))
            }
            Plan::WindowFunction { func, .. } => format!("WindowFunction {func:?}"),
            Plan::Map { func, .. } => format!("Map {func:?}"),
            Plan::VectorFunction { func, labels, .. } => {
                if labels.is_empty() {
                    format!("VectorFunction {func:?}")
                } else {
                    format!("VectorFunction {func:?} labels={labels:?}")
                }
            }
            Plan::Aggregate { op, grouping, .. } => format!("Aggregate {op:?} {}", fmt_grouping(grouping)),
            Plan::AggregateSamples { op, grouping, param, descending, .. } => format!(
                "AggregateSamples {op:?}{} {} param={}",
                if *descending { " descending" } else { "" },
                fmt_grouping(grouping),
                crate::format::format_value(*param)
            ),
            Plan::Join { op, key, return_bool, .. } => {
                let mut line =
                    format!("Join {} {} card={:?}", op.symbol(), fmt_grouping(&key.grouping), key.card);
                if *return_bool {
                    line.push_str(" bool");
                }
                if let Some(v) = key.fill_many {
                    line.push_str(&format!(" fill_many={}", crate::format::format_value(v)));
                }
                if let Some(v) = key.fill_one {
                    line.push_str(&format!(" fill_one={}", crate::format::format_value(v)));
                }
                line
            }
            Plan::ScalarOp { op, return_bool, .. } => {
                format!("ScalarOp {}{}", op.symbol(), if *return_bool { " bool" } else { "" })
            }
            Plan::Relabel { rule, .. } => format!("Relabel {rule:?}"),
            Plan::ToVector(_) => "ToVector".into(),
            Plan::Info { data_matchers, shift, .. } => match data_matchers {
                Some(ms) => format!("Info {}{}", fmt_matchers(ms), fmt_shift(shift)),
                None => format!("Info{}", fmt_shift(shift)),
            },
        }
    }

    fn explain(&self, depth: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}{}", "  ".repeat(depth), self.explain_line())?;
        for c in self.children() {
            c.explain(depth + 1, f)?;
        }
        Ok(())
    }
}

fn fmt_matchers(ms: &[Matcher]) -> String {
    let parts: Vec<String> = ms.iter().map(|m| m.to_string()).collect();
    format!("{{{}}}", parts.join(", "))
}

fn fmt_shift(s: &TimeShift) -> String {
    let mut out = String::new();
    if s.offset_ms != 0 {
        out.push_str(&format!(" offset={}ms", s.offset_ms));
    }
    match s.at {
        TimeAnchor::Step => {}
        TimeAnchor::Fixed(t) => out.push_str(&format!(" at={t}ms")),
        TimeAnchor::Start => out.push_str(" at=start"),
        TimeAnchor::End => out.push_str(" at=end"),
    }
    out
}

fn fmt_edges(e: Edges) -> &'static str {
    match e {
        Edges::Plain => "",
        Edges::Anchored => " anchored",
        Edges::Smoothed => " smoothed",
    }
}

fn fmt_grouping(g: &Grouping) -> String {
    match g {
        Grouping::By(l) => format!("by({})", l.join(", ")),
        Grouping::Without(l) => format!("without({})", l.join(", ")),
    }
}

impl fmt::Display for Plan {
    /// The `EXPLAIN` text form: one operator per line, children indented below their parent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.explain(0, f)
    }
}
