//! The PromQL syntax tree.
//!
//! It follows the shape of Prometheus's own tree (`promql/parser/ast.go`) closely, because
//! the canonical text (`format_query`), the type checker's messages and their positions are
//! all defined in terms of that shape: a `-5` literal is a number, not a negation; a range
//! written as a literal is kept apart from one written as an expression; a parenthesised
//! duration prints its parentheses.

use promflow_storage::Matcher;

use super::functions::Function;

/// A byte offset into the query text.
pub type Pos = usize;

/// A byte range of the query text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: Pos,
    /// One past the last byte.
    pub end: Pos,
}

impl Span {
    /// The range from `start` to `end`.
    pub fn new(start: Pos, end: Pos) -> Self {
        Span { start, end }
    }
}

/// The type of value an expression evaluates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// No value (an empty argument list).
    None,
    /// A number.
    Scalar,
    /// An instant vector.
    Vector,
    /// A range vector.
    Matrix,
    /// A string.
    String,
}

impl ValueType {
    /// Prometheus's internal name ("vector", "matrix", …), used by a few messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::None => "none",
            ValueType::Scalar => "scalar",
            ValueType::Vector => "vector",
            ValueType::Matrix => "matrix",
            ValueType::String => "string",
        }
    }

    /// The name the PromQL documentation uses ("instant vector", "range vector", …).
    pub fn documented(self) -> &'static str {
        match self {
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            other => other.name(),
        }
    }
}

/// Binary operators, also used inside duration expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eqlc,
    Neq,
    Gtr,
    Lss,
    Gte,
    Lte,
    /// `</`: trims native histogram buckets above a value.
    TrimUpper,
    /// `>/`: trims native histogram buckets below a value.
    TrimLower,
    And,
    Or,
    Unless,
}

impl BinaryOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Atan2 => "atan2",
            BinaryOp::Eqlc => "==",
            BinaryOp::Neq => "!=",
            BinaryOp::Gtr => ">",
            BinaryOp::Lss => "<",
            BinaryOp::Gte => ">=",
            BinaryOp::Lte => "<=",
            BinaryOp::TrimUpper => "</",
            BinaryOp::TrimLower => ">/",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Unless => "unless",
        }
    }

    /// Binding strength: `or` < `and`/`unless` < comparisons < `+ -` < `* / % atan2` < `^`.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And | BinaryOp::Unless => 2,
            BinaryOp::Eqlc
            | BinaryOp::Neq
            | BinaryOp::Gtr
            | BinaryOp::Lss
            | BinaryOp::Gte
            | BinaryOp::Lte
            | BinaryOp::TrimUpper
            | BinaryOp::TrimLower => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Atan2 => 5,
            BinaryOp::Pow => 6,
        }
    }

    /// Whether the operator is a comparison (the only ones `bool` applies to).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eqlc | BinaryOp::Neq | BinaryOp::Gtr | BinaryOp::Lss | BinaryOp::Gte | BinaryOp::Lte
        )
    }

    /// Whether the operator is `and`, `or` or `unless`.
    pub fn is_set(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
    }
}

/// Aggregation operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum AggregateOp {
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    CountValues,
    Quantile,
    Limitk,
    LimitRatio,
}

impl AggregateOp {
    /// The operator's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateOp::Sum => "sum",
            AggregateOp::Avg => "avg",
            AggregateOp::Count => "count",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Group => "group",
            AggregateOp::Stddev => "stddev",
            AggregateOp::Stdvar => "stdvar",
            AggregateOp::Topk => "topk",
            AggregateOp::Bottomk => "bottomk",
            AggregateOp::CountValues => "count_values",
            AggregateOp::Quantile => "quantile",
            AggregateOp::Limitk => "limitk",
            AggregateOp::LimitRatio => "limit_ratio",
        }
    }

    /// Whether the operator takes a parameter before the vector (`topk(5, …)`).
    pub fn has_param(self) -> bool {
        matches!(
            self,
            AggregateOp::Topk
                | AggregateOp::Bottomk
                | AggregateOp::CountValues
                | AggregateOp::Quantile
                | AggregateOp::Limitk
                | AggregateOp::LimitRatio
        )
    }
}

/// A number; `duration` records that it was written as a duration (`5m`), so it prints so.
#[derive(Clone, Debug, PartialEq)]
pub struct NumberLiteral {
    /// The value (seconds for durations).
    pub val: f64,
    /// Written as a duration.
    pub duration: bool,
    /// Where it was written.
    pub span: Span,
}

/// A duration expression (`[5m+1m]`, `offset step()*2`), evaluated per query.
#[derive(Clone, Debug, PartialEq)]
pub enum DurationExpr {
    /// A number of seconds or a duration literal.
    Number(NumberLiteral),
    /// `step()`: the query's step.
    Step(Span),
    /// `range()`: the query's end minus its start.
    Range(Span),
    /// `min_of(a, b)` (`max` false) or `max_of(a, b)`.
    MinMax {
        /// `max_of` rather than `min_of`.
        max: bool,
        /// First argument.
        lhs: Box<DurationExpr>,
        /// Second argument.
        rhs: Box<DurationExpr>,
        /// From the name to the closing parenthesis.
        span: Span,
    },
    /// Unary minus of a non-literal.
    Neg(Box<DurationExpr>, Pos),
    /// Arithmetic (`+ - * / % ^`).
    Binary(BinaryOp, Box<DurationExpr>, Box<DurationExpr>),
    /// A parenthesised expression (nested parentheses collapse to one pair, as in Prometheus).
    Paren(Box<DurationExpr>, Span),
}

impl DurationExpr {
    /// The range Prometheus attributes to the expression in its messages.
    pub fn span(&self) -> Span {
        match self {
            DurationExpr::Number(n) => n.span,
            DurationExpr::Step(s) | DurationExpr::Range(s) | DurationExpr::Paren(_, s) => *s,
            DurationExpr::MinMax { span, .. } => *span,
            DurationExpr::Neg(e, start) => Span::new(*start, e.span().end),
            DurationExpr::Binary(_, l, r) => Span::new(l.span().start, r.span().end),
        }
    }
}

/// The most seconds a duration may span: an `i64` of nanoseconds, as in Prometheus.
pub const MAX_DURATION_SECONDS: f64 = i64::MAX as f64 / 1e9;

/// A duration in a range, step or offset position.
#[derive(Clone, Debug, PartialEq)]
pub enum Duration {
    /// A literal, resolved when parsing, in nanoseconds.
    Fixed(i64),
    /// An expression, resolved per query.
    Expr(DurationExpr),
}

impl Default for Duration {
    fn default() -> Self {
        Duration::Fixed(0)
    }
}

impl Duration {
    /// Whether an offset is set (a zero literal counts as unset, as in Prometheus).
    pub fn is_set(&self) -> bool {
        !matches!(self, Duration::Fixed(0))
    }
}

/// The `@` modifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// A fixed time in milliseconds.
    Timestamp(i64),
    /// `@ start()`.
    Start,
    /// `@ end()`.
    End,
}

/// An instant vector selector.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorSelector {
    /// The metric name written before the braces.
    pub name: Option<String>,
    /// The matchers written inside the braces, in order (the name is not among them).
    pub matchers: Vec<Matcher>,
    /// `offset`.
    pub offset: Duration,
    /// `@`.
    pub at: Option<At>,
    /// The `anchored` modifier.
    pub anchored: bool,
    /// The `smoothed` modifier.
    pub smoothed: bool,
    /// Set for `info()`'s second argument, which may match everything.
    pub bypass_empty_check: bool,
    /// Where it was written, modifiers included.
    pub span: Span,
}

/// A range vector selector.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixSelector {
    /// The selector (its offset, `@` and `anchored`/`smoothed` apply to the range).
    pub vs: VectorSelector,
    /// The range.
    pub range: Duration,
    /// End of the text, modifiers included.
    pub end: Pos,
}

/// A subquery.
#[derive(Clone, Debug, PartialEq)]
pub struct SubqueryExpr {
    /// The inner expression.
    pub expr: Box<Expr>,
    /// The range.
    pub range: Duration,
    /// The step; `None` means the default evaluation interval.
    pub step: Option<Duration>,
    /// `offset`.
    pub offset: Duration,
    /// `@`.
    pub at: Option<At>,
    /// End of the text, modifiers included.
    pub end: Pos,
}

/// How the series of the two sides of a vector–vector operation match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cardinality {
    /// One to one.
    OneToOne,
    /// `group_left`.
    ManyToOne,
    /// `group_right`.
    OneToMany,
    /// Set operators.
    ManyToMany,
}

/// Vector matching of a binary expression between two instant vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorMatching {
    /// Cardinality.
    pub card: Cardinality,
    /// `on(…)` or `ignoring(…)` labels.
    pub labels: Vec<String>,
    /// `on` rather than `ignoring`.
    pub on: bool,
    /// Labels listed in `group_left(…)`/`group_right(…)`.
    pub include: Vec<String>,
    /// `fill_left(v)` or `fill(v)`.
    pub fill_lhs: Option<f64>,
    /// `fill_right(v)` or `fill(v)`.
    pub fill_rhs: Option<f64>,
}

/// A binary expression.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryExpr {
    /// The operator.
    pub op: BinaryOp,
    /// Left operand.
    pub lhs: Box<Expr>,
    /// Right operand.
    pub rhs: Box<Expr>,
    /// Matching, present only when both sides are instant vectors (after type checking).
    pub matching: Option<VectorMatching>,
    /// `bool`.
    pub return_bool: bool,
}

/// An aggregation.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateExpr {
    /// The operator.
    pub op: AggregateOp,
    /// The aggregated expression.
    pub expr: Box<Expr>,
    /// The parameter of `topk`, `quantile`, `count_values`, ….
    pub param: Option<Box<Expr>>,
    /// `by`/`without` labels.
    pub grouping: Vec<String>,
    /// `without` rather than `by`.
    pub without: bool,
    /// Where it was written.
    pub span: Span,
}

/// A function call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The function.
    pub func: &'static Function,
    /// The arguments.
    pub args: Vec<Expr>,
    /// From the name to the closing parenthesis.
    pub span: Span,
}

/// A PromQL expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A number.
    Number(NumberLiteral),
    /// A string.
    String(String, Span),
    /// An instant vector selector.
    Selector(Box<VectorSelector>),
    /// A range vector selector.
    Matrix(Box<MatrixSelector>),
    /// A subquery.
    Subquery(Box<SubqueryExpr>),
    /// A parenthesised expression.
    Paren(Box<Expr>, Span),
    /// Unary `-` (`neg` true) or `+` of a non-literal, starting at the operator.
    Unary {
        /// Minus rather than plus.
        neg: bool,
        /// The operand.
        expr: Box<Expr>,
        /// Position of the operator.
        start: Pos,
    },
    /// A binary expression.
    Binary(Box<BinaryExpr>),
    /// An aggregation.
    Aggregate(AggregateExpr),
    /// A function call.
    Call(Call),
}

impl Expr {
    /// The type of value the expression evaluates to.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(..) => ValueType::String,
            Expr::Selector(_) | Expr::Aggregate(_) => ValueType::Vector,
            Expr::Matrix(_) | Expr::Subquery(_) => ValueType::Matrix,
            Expr::Paren(e, _) | Expr::Unary { expr: e, .. } => e.value_type(),
            Expr::Binary(b) => {
                if b.lhs.value_type() == ValueType::Scalar && b.rhs.value_type() == ValueType::Scalar {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Call(c) => c.func.return_type,
        }
    }

    /// The text range Prometheus attributes to the expression.
    pub fn span(&self) -> Span {
        match self {
            Expr::Number(n) => n.span,
            Expr::String(_, s) | Expr::Paren(_, s) => *s,
            Expr::Selector(vs) => vs.span,
            Expr::Matrix(m) => Span::new(m.vs.span.start, m.end),
            Expr::Subquery(s) => Span::new(s.expr.span().start, s.end),
            Expr::Unary { expr, start, .. } => Span::new(*start, expr.span().end),
            Expr::Binary(b) => Span::new(b.lhs.span().start, b.rhs.span().end),
            Expr::Aggregate(a) => a.span,
            Expr::Call(c) => c.span,
        }
    }
}
