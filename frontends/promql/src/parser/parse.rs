//! The parser: recursive descent with precedence climbing over the lexer's tokens.
//!
//! It accepts the language of Prometheus's yacc grammar (`generated_parser.y`) and resolves
//! its ambiguities the same way, which decides some surprising cases: `foo offset 5m + 1`
//! adds 1 to the shifted selector while `foo[5m + 1]` is a 301 s range; `-2 ^ 2` is
//! `-(2 ^ 2)`; `sum` is a metric name unless `(`, `by` or `without` follows.
//!
//! Syntax errors name the innermost construct that Prometheus's grammar has an error rule
//! for ("in aggregation", "in grouping opts", …), which is why constructs push a context.

use std::collections::VecDeque;

use promflow_plan::format::format_value;
use promflow_storage::{MatchOp, Matcher, METRIC_NAME};

use super::ast::*;
use super::functions;
use super::lexer::{Keyword, Kind, LexError, Lexer, Preprocessor, Token};
use super::literals::{parse_duration, parse_number, quote, unquote};
use super::ParseError;

pub(crate) type PResult<T> = Result<T, ParseError>;

/// Where a syntax error happened and what was expected there, for "unexpected X in C,
/// expected E".
type Context = (&'static str, &'static str);

const AGGREGATION: Context = ("aggregation", "");
const OFFSET: Context = ("offset", "number, duration, step(), or range()");
const AT: Context = ("@", "timestamp");
const RANGE_START: Context = ("subquery or range selector", "number, duration, step(), or range()");
const RANGE_END: Context = ("subquery or range", "\":\" or \"]\"");
const STEP_START: Context = ("subquery selector", "number, duration, step(), range(), or \"]\"");
const STEP_END: Context = ("subquery selector", "\"]\"");
const GROUPING_OPEN: Context = ("grouping opts", "\"(\"");
const GROUPING_LABEL: Context = ("grouping opts", "label");
const GROUPING_NEXT: Context = ("grouping opts", "\",\" or \")\"");
const MATCHER_START: Context = ("label matching", "identifier or \"}\"");
const MATCHER_OP: Context = ("label matching", "label matching operator");
const MATCHER_VALUE: Context = ("label matching", "string");
const MATCHER_NEXT: Context = ("label matching", "\",\" or \"}\"");

/// How deeply expressions may nest. Everything downstream (checking, printing, lowering,
/// evaluation) recurses over the tree, so the parser refuses trees that could exhaust a
/// thread's stack instead of crashing.
const MAX_NESTING: usize = 500;

fn out_of_range(seconds: f64) -> bool {
    seconds.abs() > MAX_DURATION_SECONDS
}

/// Tokens that may name a metric: identifiers and most keywords.
fn is_metric_name(kind: Kind) -> bool {
    use Keyword::*;
    match kind {
        Kind::Identifier | Kind::MetricIdentifier | Kind::Agg(_) | Kind::Pre(_) => true,
        Kind::Op(op) => op.is_set(),
        Kind::Kw(k) => matches!(k, By | Without | Offset | Fill | FillLeft | FillRight | Anchored | Smoothed),
        _ => false,
    }
}

/// Tokens that may name a label in `by (…)`, `on (…)`, ….
fn is_label_name(kind: Kind) -> bool {
    match kind {
        Kind::Identifier | Kind::MetricIdentifier | Kind::Agg(_) | Kind::Pre(_) => true,
        Kind::Op(op) => op.is_set() || op == BinaryOp::Atan2,
        Kind::Kw(k) => k != Keyword::Without,
        _ => false,
    }
}

/// The value after `@`.
enum AtValue {
    Seconds(f64),
    Start,
    End,
}

pub(crate) struct Parser<'a> {
    input: &'a str,
    lexer: Lexer<'a>,
    ahead: VecDeque<Result<Token, LexError>>,
    contexts: Vec<Context>,
    /// End of the last consumed token (Prometheus's "last closing" position).
    last_end: Pos,
    /// Nesting so far: one per recursive descent and per operator a loop has chained on,
    /// which bounds the height of the tree being built.
    nesting: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(input: &'a str) -> Self {
        Parser {
            input,
            lexer: Lexer::new(input),
            ahead: VecDeque::new(),
            contexts: Vec::new(),
            last_end: 0,
            nesting: 0,
        }
    }

    /// Parses a whole query.
    pub(crate) fn parse_query(&mut self) -> PResult<Expr> {
        if self.peek()?.kind == Kind::Eof {
            return Err(self.error(0, "no expression found in input"));
        }
        let e = self.parse_expr(0)?;
        if self.peek()?.kind != Kind::Eof {
            return Err(self.syntax_error());
        }
        Ok(e)
    }

    // ---- tokens ----

    fn fill(&mut self, n: usize) {
        while self.ahead.len() < n && !matches!(self.ahead.back(), Some(Err(_))) {
            let tok = loop {
                match self.lexer.next_token() {
                    Ok(t) if t.kind == Kind::Comment => continue,
                    other => break other,
                }
            };
            self.ahead.push_back(tok);
        }
    }

    fn lex_error(e: &LexError) -> ParseError {
        ParseError { pos: e.pos, msg: e.msg.clone() }
    }

    fn peek(&mut self) -> PResult<Token> {
        self.fill(1);
        self.ahead[0].as_ref().copied().map_err(Self::lex_error)
    }

    /// The kind of the token after the next one.
    fn peek2(&mut self) -> PResult<Kind> {
        self.fill(2);
        match self.ahead.get(1) {
            Some(Ok(t)) => Ok(t.kind),
            Some(Err(e)) => Err(Self::lex_error(e)),
            None => self.peek().map(|t| t.kind),
        }
    }

    fn advance(&mut self) -> PResult<Token> {
        let t = self.peek()?;
        self.ahead.pop_front();
        self.last_end = t.end;
        Ok(t)
    }

    fn eat(&mut self, kind: Kind) -> PResult<bool> {
        let found = self.peek()?.kind == kind;
        if found {
            self.advance()?;
        }
        Ok(found)
    }

    fn expect(&mut self, kind: Kind) -> PResult<Token> {
        if self.peek()?.kind == kind {
            self.advance()
        } else {
            Err(self.syntax_error())
        }
    }

    fn text(&self, t: &Token) -> &'a str {
        &self.input[t.pos..t.end]
    }

    // ---- errors ----

    fn error(&self, pos: Pos, msg: impl Into<String>) -> ParseError {
        ParseError { pos, msg: msg.into() }
    }

    /// How Prometheus names a token in "unexpected …".
    fn describe(&self, t: &Token) -> String {
        let text = self.text(t);
        let short = |s: &str| match s.char_indices().nth(10) {
            Some((i, _)) => format!("{}...", quote(&s[..i])),
            None => quote(s),
        };
        match t.kind {
            Kind::Eof => "end of input".into(),
            Kind::Identifier => format!("identifier {}", quote(text)),
            Kind::MetricIdentifier => format!("metric identifier {}", quote(text)),
            Kind::Number => format!("number {}", short(text)),
            Kind::Duration => format!("duration {}", short(text)),
            Kind::Str => format!("string {}", short(text)),
            Kind::Comment => format!("comment {}", short(text)),
            Kind::Kw(_) => format!("<{text}>"),
            Kind::Op(_) | Kind::EqlRegex | Kind::NeqRegex | Kind::At => format!("<op:{text}>"),
            Kind::Agg(_) => format!("<aggr:{text}>"),
            _ => short(text),
        }
    }

    /// "unexpected <next token>" in the given context.
    fn unexpected(&mut self, (context, expected): Context) -> ParseError {
        let t = match self.peek() {
            Ok(t) => t,
            Err(lex) => return lex,
        };
        let mut msg = format!("unexpected {}", self.describe(&t));
        if !context.is_empty() {
            msg.push_str(&format!(" in {context}"));
        }
        if !expected.is_empty() {
            msg.push_str(&format!(", expected {expected}"));
        }
        self.error(t.pos, msg)
    }

    /// A syntax error reported in the innermost enclosing context.
    fn syntax_error(&mut self) -> ParseError {
        let context = self.contexts.last().copied().unwrap_or(("", ""));
        self.unexpected(context)
    }

    /// Counts one level of nesting; fails past [`MAX_NESTING`].
    fn nest(&mut self) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            let pos = self.peek()?.pos;
            return Err(
                self.error(pos, format!("query is nested too deeply (more than {MAX_NESTING} levels)"))
            );
        }
        Ok(())
    }

    fn in_context<T>(&mut self, context: Context, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        self.contexts.push(context);
        let result = f(self);
        self.contexts.pop();
        result
    }

    // ---- expressions ----

    fn parse_expr(&mut self, min_prec: u8) -> PResult<Expr> {
        let saved = self.nesting;
        self.nest()?;
        let mut lhs = self.parse_unary()?;
        while let Kind::Op(op) = self.peek()?.kind {
            if op.precedence() < min_prec {
                break;
            }
            self.nest()?;
            self.advance()?;
            let (matching, return_bool) = self.parse_bin_modifiers()?;
            // `^` is right-associative, the others left-associative
            let next = if op == BinaryOp::Pow { op.precedence() } else { op.precedence() + 1 };
            let rhs = self.parse_expr(next)?;
            lhs = Expr::Binary(Box::new(BinaryExpr {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                matching: Some(matching),
                return_bool,
            }));
        }
        self.nesting = saved;
        Ok(lhs)
    }

    /// Unary `+`/`-` binds tighter than `*` but looser than `^`; on a literal it folds in.
    fn parse_unary(&mut self) -> PResult<Expr> {
        let t = self.peek()?;
        let neg = match t.kind {
            Kind::Op(BinaryOp::Sub) => true,
            Kind::Op(BinaryOp::Add) => false,
            _ => return self.parse_operand(),
        };
        self.advance()?;
        Ok(match self.parse_expr(BinaryOp::Pow.precedence())? {
            Expr::Number(mut n) => {
                if neg {
                    n.val = -n.val;
                }
                n.span.start = t.pos;
                Expr::Number(n)
            }
            e => Expr::Unary { neg, expr: Box::new(e), start: t.pos },
        })
    }

    /// A primary expression and its postfix modifiers (`[…]`, `offset`, `@`, `anchored`,
    /// `smoothed`), which bind tighter than any operator.
    fn parse_operand(&mut self) -> PResult<Expr> {
        let saved = self.nesting;
        let mut e = self.parse_primary()?;
        loop {
            let t = self.peek()?;
            e = match t.kind {
                Kind::LBracket => {
                    self.nest()?;
                    self.parse_range(e)?
                }
                Kind::Kw(Keyword::Offset) => {
                    self.advance()?;
                    let d = self.in_context(OFFSET, Self::parse_offset_duration)?;
                    self.set_offset(e, d)?
                }
                Kind::At => {
                    self.advance()?;
                    let at = self.in_context(AT, Self::parse_at_value)?;
                    self.set_at(e, at)?
                }
                Kind::Kw(k @ (Keyword::Anchored | Keyword::Smoothed)) => {
                    self.advance()?;
                    self.set_extended(e, k == Keyword::Anchored)?
                }
                _ => {
                    self.nesting = saved;
                    return Ok(e);
                }
            };
        }
    }

    fn parse_primary(&mut self) -> PResult<Expr> {
        let t = self.peek()?;
        match t.kind {
            Kind::Number | Kind::Duration => {
                self.advance()?;
                Ok(Expr::Number(self.number_literal(&t)?))
            }
            Kind::Str => {
                self.advance()?;
                Ok(Expr::String(unquote(self.text(&t)), Span::new(t.pos, t.end)))
            }
            Kind::LParen => {
                self.advance()?;
                let e = self.parse_expr(0)?;
                let close = self.expect(Kind::RParen)?;
                Ok(Expr::Paren(Box::new(e), Span::new(t.pos, close.end)))
            }
            Kind::LBrace => self.parse_selector(None),
            Kind::Identifier | Kind::Pre(_) if self.peek2()? == Kind::LParen => self.parse_call(),
            Kind::Agg(op)
                if matches!(self.peek2()?, Kind::LParen | Kind::Kw(Keyword::By | Keyword::Without)) =>
            {
                self.parse_aggregate(op)
            }
            kind if is_metric_name(kind) => {
                self.advance()?;
                self.parse_selector(Some(t))
            }
            _ => Err(self.syntax_error()),
        }
    }

    fn number_literal(&self, t: &Token) -> PResult<NumberLiteral> {
        let text = self.text(t);
        let span = Span::new(t.pos, t.end);
        if t.kind == Kind::Duration {
            let ns = parse_duration(text).map_err(|e| self.error(t.pos, e))?;
            let val = (ns / 1_000_000_000) as f64 + (ns % 1_000_000_000) as f64 / 1e9;
            return Ok(NumberLiteral { val, duration: true, span });
        }
        let val = parse_number(text).map_err(|e| self.error(t.pos, format!("error parsing number: {e}")))?;
        Ok(NumberLiteral { val, duration: false, span })
    }

    // ---- selectors ----

    /// A vector selector; `name` is the metric name token, already consumed.
    fn parse_selector(&mut self, name: Option<Token>) -> PResult<Expr> {
        let mut span = name.map_or_else(Span::default, |t| Span::new(t.pos, t.end));
        let mut matchers = Vec::new();
        if self.peek()?.kind == Kind::LBrace {
            let (m, braces) = self.parse_label_matchers()?;
            matchers = m;
            span = if name.is_some() { Span::new(span.start, braces.end) } else { braces };
        }
        Ok(Expr::Selector(Box::new(VectorSelector {
            name: name.map(|t| self.text(&t).to_string()),
            matchers,
            offset: Duration::default(),
            at: None,
            anchored: false,
            smoothed: false,
            bypass_empty_check: false,
            span,
        })))
    }

    fn parse_label_matchers(&mut self) -> PResult<(Vec<Matcher>, Span)> {
        let open = self.advance()?;
        let mut out = Vec::new();
        loop {
            let t = self.peek()?;
            let name = match t.kind {
                Kind::RBrace => {
                    self.advance()?;
                    return Ok((out, Span::new(open.pos, t.end)));
                }
                Kind::Identifier => self.text(&t).to_string(),
                Kind::Str => unquote(self.text(&t)),
                _ => return Err(self.unexpected(MATCHER_START)),
            };
            self.advance()?;
            let op = match self.peek()?.kind {
                Kind::Eql => Some(MatchOp::Equal),
                Kind::Op(BinaryOp::Neq) => Some(MatchOp::NotEqual),
                Kind::EqlRegex => Some(MatchOp::Regex),
                Kind::NeqRegex => Some(MatchOp::NotRegex),
                _ => None,
            };
            let matcher = match op {
                Some(op) => {
                    self.advance()?;
                    let v = self.peek()?;
                    if v.kind != Kind::Str {
                        return Err(self.unexpected(MATCHER_VALUE));
                    }
                    self.advance()?;
                    Matcher::new(op, name, unquote(self.text(&v)))
                }
                // a quoted name alone is the metric name: `{"my.metric"}`
                None if t.kind == Kind::Str => Matcher::new(MatchOp::Equal, METRIC_NAME, name),
                None => return Err(self.unexpected(MATCHER_OP)),
            };
            out.push(matcher.map_err(|e| self.error(t.pos, e.to_string()))?);
            match self.peek()?.kind {
                Kind::Comma => {
                    self.advance()?;
                }
                Kind::RBrace => {}
                _ => return Err(self.unexpected(MATCHER_NEXT)),
            }
        }
    }

    // ---- functions and aggregations ----

    fn parse_call(&mut self) -> PResult<Expr> {
        let name_tok = self.advance()?;
        let (args, end) = self.parse_call_body()?;
        let name = self.text(&name_tok);
        let func = functions::lookup(name)
            .ok_or_else(|| self.error(name_tok.pos, format!("unknown function with name {}", quote(name))))?;
        Ok(Expr::Call(Call { func, args, span: Span::new(name_tok.pos, end) }))
    }

    /// `( expr, … )`; returns the arguments and the end of the closing parenthesis.
    fn parse_call_body(&mut self) -> PResult<(Vec<Expr>, Pos)> {
        self.expect(Kind::LParen)?;
        let mut args = Vec::new();
        if self.peek()?.kind == Kind::RParen {
            return Ok((args, self.advance()?.end));
        }
        loop {
            args.push(self.parse_expr(0)?);
            let t = self.peek()?;
            match t.kind {
                Kind::Comma => {
                    self.advance()?;
                    if self.peek()?.kind == Kind::RParen {
                        return Err(self.error(t.pos, "trailing commas not allowed in function call args"));
                    }
                }
                Kind::RParen => return Ok((args, self.advance()?.end)),
                _ => return Err(self.syntax_error()),
            }
        }
    }

    fn parse_aggregate(&mut self, op: AggregateOp) -> PResult<Expr> {
        let op_tok = self.advance()?;
        let (args, grouping, end) = self.in_context(AGGREGATION, |p| {
            let mut grouping = p.parse_aggregate_modifier()?;
            let (args, mut end) = p.parse_call_body()?;
            if grouping.is_none() {
                grouping = p.parse_aggregate_modifier()?;
                end = p.last_end;
            }
            Ok((args, grouping, end))
        })?;
        if args.is_empty() {
            return Err(self.error(op_tok.pos, "no arguments for aggregate expression provided"));
        }
        let wanted = if op.has_param() { 2 } else { 1 };
        if args.len() != wanted {
            return Err(self.error(
                op_tok.pos,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {wanted}, got {}",
                    args.len()
                ),
            ));
        }
        let mut args = args.into_iter().map(Box::new);
        let param = if op.has_param() { args.next() } else { None };
        let (without, grouping) = grouping.unwrap_or_default();
        Ok(Expr::Aggregate(AggregateExpr {
            op,
            expr: args.next().expect("argument count checked"),
            param,
            grouping,
            without,
            span: Span::new(op_tok.pos, end),
        }))
    }

    /// An optional `by (…)` or `without (…)`.
    fn parse_aggregate_modifier(&mut self) -> PResult<Option<(bool, Vec<String>)>> {
        let without = match self.peek()?.kind {
            Kind::Kw(Keyword::By) => false,
            Kind::Kw(Keyword::Without) => true,
            _ => return Ok(None),
        };
        self.advance()?;
        Ok(Some((without, self.parse_grouping_labels()?)))
    }

    /// `( label, … )`, keywords and quoted names allowed, a trailing comma too.
    fn parse_grouping_labels(&mut self) -> PResult<Vec<String>> {
        if self.peek()?.kind != Kind::LParen {
            return Err(self.unexpected(GROUPING_OPEN));
        }
        self.advance()?;
        let mut labels = Vec::new();
        if self.eat(Kind::RParen)? {
            return Ok(labels);
        }
        loop {
            let t = self.peek()?;
            let label = match t.kind {
                Kind::Str => unquote(self.text(&t)),
                kind if is_label_name(kind) => self.text(&t).to_string(),
                _ => return Err(self.unexpected(GROUPING_LABEL)),
            };
            if label.is_empty() {
                return Err(self.error(t.pos, format!("invalid label name for grouping: {}", quote(&label))));
            }
            self.advance()?;
            labels.push(label);
            match self.peek()?.kind {
                Kind::Comma => {
                    self.advance()?;
                    if self.eat(Kind::RParen)? {
                        return Ok(labels);
                    }
                }
                Kind::RParen => {
                    self.advance()?;
                    return Ok(labels);
                }
                _ => return Err(self.unexpected(GROUPING_NEXT)),
            }
        }
    }

    /// `bool`, `on`/`ignoring (…)`, `group_left`/`group_right [(…)]`, fill modifiers.
    fn parse_bin_modifiers(&mut self) -> PResult<(VectorMatching, bool)> {
        let mut vm = VectorMatching {
            card: Cardinality::OneToOne,
            labels: Vec::new(),
            on: false,
            include: Vec::new(),
            fill_lhs: None,
            fill_rhs: None,
        };
        let return_bool = self.eat(Kind::Kw(Keyword::Bool))?;
        if let Kind::Kw(k @ (Keyword::On | Keyword::Ignoring)) = self.peek()?.kind {
            self.advance()?;
            vm.on = k == Keyword::On;
            vm.labels = self.parse_grouping_labels()?;
            if let Kind::Kw(g @ (Keyword::GroupLeft | Keyword::GroupRight)) = self.peek()?.kind {
                self.advance()?;
                vm.card =
                    if g == Keyword::GroupLeft { Cardinality::ManyToOne } else { Cardinality::OneToMany };
                // a `(` right after group_x is its label list, never the right-hand side
                if self.peek()?.kind == Kind::LParen {
                    vm.include = self.parse_grouping_labels()?;
                }
            }
        }
        let (first, second) = match self.peek()?.kind {
            Kind::Kw(Keyword::Fill) => {
                self.advance()?;
                let v = self.parse_fill_value()?;
                vm.fill_lhs = Some(v);
                vm.fill_rhs = Some(v);
                return Ok((vm, return_bool));
            }
            Kind::Kw(Keyword::FillLeft) => (Keyword::FillLeft, Keyword::FillRight),
            Kind::Kw(Keyword::FillRight) => (Keyword::FillRight, Keyword::FillLeft),
            _ => return Ok((vm, return_bool)),
        };
        for side in [first, second] {
            if !self.eat(Kind::Kw(side))? {
                break;
            }
            let v = Some(self.parse_fill_value()?);
            if side == Keyword::FillLeft {
                vm.fill_lhs = v;
            } else {
                vm.fill_rhs = v;
            }
        }
        Ok((vm, return_bool))
    }

    /// `( [+|-] number )`.
    fn parse_fill_value(&mut self) -> PResult<f64> {
        self.expect(Kind::LParen)?;
        let neg = self.eat(Kind::Op(BinaryOp::Sub))? || {
            self.eat(Kind::Op(BinaryOp::Add))?;
            false
        };
        let t = self.peek()?;
        if !matches!(t.kind, Kind::Number | Kind::Duration) {
            return Err(self.syntax_error());
        }
        self.advance()?;
        let v = self.number_literal(&t)?.val;
        self.expect(Kind::RParen)?;
        Ok(if neg { -v } else { v })
    }

    // ---- modifiers ----

    /// `[range]` or `[range:step]` after `e`.
    fn parse_range(&mut self, e: Expr) -> PResult<Expr> {
        let open = self.advance()?;
        let range = self.in_context(RANGE_START, Self::parse_positive_duration)?;
        let t = self.peek()?;
        match t.kind {
            Kind::RBracket => {
                self.advance()?;
                let msg = match e {
                    Expr::Selector(vs) if vs.offset.is_set() => "no offset modifiers allowed before range",
                    Expr::Selector(vs) if vs.at.is_some() => "no @ modifiers allowed before range",
                    Expr::Selector(vs) => {
                        return Ok(Expr::Matrix(Box::new(MatrixSelector { vs: *vs, range, end: t.end })))
                    }
                    _ => "ranges only allowed for vector selectors",
                };
                Err(self.error(open.pos, msg))
            }
            Kind::Colon => {
                self.advance()?;
                let step = if self.peek()?.kind == Kind::RBracket {
                    None
                } else {
                    Some(self.in_context(STEP_START, Self::parse_positive_duration)?)
                };
                if self.peek()?.kind != Kind::RBracket {
                    return Err(self.unexpected(STEP_END));
                }
                let close = self.advance()?;
                Ok(Expr::Subquery(Box::new(SubqueryExpr {
                    expr: Box::new(e),
                    range,
                    step,
                    offset: Duration::default(),
                    at: None,
                    end: close.end,
                })))
            }
            _ => Err(self.unexpected(RANGE_END)),
        }
    }

    /// A range or subquery step: a literal must be positive (an expression is checked when
    /// it is evaluated).
    fn parse_positive_duration(&mut self) -> PResult<Duration> {
        match self.parse_duration_expr(0)? {
            DurationExpr::Number(n) if n.val <= 0.0 => {
                Err(self.error(n.span.start, "duration must be greater than 0"))
            }
            DurationExpr::Number(n) => Ok(Duration::Fixed((n.val * 1e9).round() as i64)),
            e => Ok(Duration::Expr(e)),
        }
    }

    /// The duration after `offset`. A literal, `step()`, `range()`, `min_of`/`max_of` or a
    /// signed parenthesis ends it, so `offset 5m + 1` adds 1 to the selector; only an
    /// unsigned parenthesis may be followed by more duration arithmetic.
    fn parse_offset_duration(&mut self) -> PResult<Duration> {
        let t = self.peek()?;
        let d = match t.kind {
            Kind::Number | Kind::Duration => {
                self.advance()?;
                let n = self.number_literal(&t)?;
                if out_of_range(n.val) {
                    return Err(self.error(t.pos, "duration out of range"));
                }
                DurationExpr::Number(n)
            }
            Kind::Op(op @ (BinaryOp::Add | BinaryOp::Sub)) => {
                self.advance()?;
                let operand = match self.peek()?.kind {
                    Kind::Number | Kind::Duration | Kind::Pre(_) | Kind::LParen => {
                        self.parse_duration_primary()?
                    }
                    _ => return Err(self.syntax_error()),
                };
                self.apply_unary(op == BinaryOp::Sub, t.pos, operand)?
            }
            Kind::Pre(_) => self.parse_duration_primary()?,
            _ => self.parse_duration_expr(0)?,
        };
        Ok(match d {
            DurationExpr::Number(n) => Duration::Fixed((n.val * 1e9).round() as i64),
            e => Duration::Expr(e),
        })
    }

    fn parse_duration_expr(&mut self, min_prec: u8) -> PResult<DurationExpr> {
        let saved = self.nesting;
        self.nest()?;
        let mut lhs = self.parse_duration_unary()?;
        loop {
            let t = self.peek()?;
            let op = match t.kind {
                Kind::Op(
                    op @ (BinaryOp::Add
                    | BinaryOp::Sub
                    | BinaryOp::Mul
                    | BinaryOp::Div
                    | BinaryOp::Mod
                    | BinaryOp::Pow),
                ) if op.precedence() >= min_prec => op,
                _ => {
                    self.nesting = saved;
                    return Ok(lhs);
                }
            };
            self.nest()?;
            self.advance()?;
            let next = if op == BinaryOp::Pow { op.precedence() } else { op.precedence() + 1 };
            let rhs = self.parse_duration_expr(next)?;
            if matches!(&rhs, DurationExpr::Number(n) if n.val == 0.0) {
                match op {
                    BinaryOp::Div => return Err(self.error(t.pos, "division by zero")),
                    BinaryOp::Mod => return Err(self.error(t.pos, "modulo by zero")),
                    _ => {}
                }
            }
            lhs = DurationExpr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn parse_duration_unary(&mut self) -> PResult<DurationExpr> {
        let t = self.peek()?;
        let neg = match t.kind {
            Kind::Op(BinaryOp::Sub) => true,
            Kind::Op(BinaryOp::Add) => false,
            _ => return self.parse_duration_primary(),
        };
        self.advance()?;
        let operand = self.parse_duration_expr(BinaryOp::Pow.precedence())?;
        self.apply_unary(neg, t.pos, operand)
    }

    /// A sign folds into a literal; a minus on anything else is kept, a plus dropped.
    fn apply_unary(&self, neg: bool, pos: Pos, e: DurationExpr) -> PResult<DurationExpr> {
        match e {
            DurationExpr::Number(mut n) => {
                if neg {
                    n.val = -n.val;
                }
                if out_of_range(n.val) {
                    return Err(self.error(pos, "duration out of range"));
                }
                n.span.start = pos;
                Ok(DurationExpr::Number(n))
            }
            e if neg => Ok(DurationExpr::Neg(Box::new(e), pos)),
            e => Ok(e),
        }
    }

    fn parse_duration_primary(&mut self) -> PResult<DurationExpr> {
        let t = self.peek()?;
        match t.kind {
            Kind::Number | Kind::Duration => {
                self.advance()?;
                let n = self.number_literal(&t)?;
                if out_of_range(n.val) {
                    return Err(self.error(t.pos, "duration out of range"));
                }
                Ok(DurationExpr::Number(n))
            }
            Kind::Pre(p @ (Preprocessor::Step | Preprocessor::Range)) => {
                self.advance()?;
                self.expect(Kind::LParen)?;
                let span = Span::new(t.pos, self.expect(Kind::RParen)?.end);
                Ok(if p == Preprocessor::Step { DurationExpr::Step(span) } else { DurationExpr::Range(span) })
            }
            Kind::Pre(p @ (Preprocessor::MaxOf | Preprocessor::MinOf)) => {
                self.advance()?;
                self.expect(Kind::LParen)?;
                let lhs = self.parse_duration_expr(0)?;
                self.expect(Kind::Comma)?;
                let rhs = self.parse_duration_expr(0)?;
                let end = self.expect(Kind::RParen)?.end;
                Ok(DurationExpr::MinMax {
                    max: p == Preprocessor::MaxOf,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                    span: Span::new(t.pos, end),
                })
            }
            Kind::LParen => {
                self.advance()?;
                let inner = self.parse_duration_expr(0)?;
                self.expect(Kind::RParen)?;
                Ok(match inner {
                    // nested parentheses print as one pair, as in Prometheus
                    p @ DurationExpr::Paren(..) => p,
                    DurationExpr::Number(n) => {
                        let span = Span::new(t.pos, n.span.end);
                        DurationExpr::Paren(Box::new(DurationExpr::Number(n)), span)
                    }
                    e => {
                        let span = e.span();
                        DurationExpr::Paren(Box::new(e), span)
                    }
                })
            }
            _ => Err(self.syntax_error()),
        }
    }

    fn parse_at_value(&mut self) -> PResult<AtValue> {
        let t = self.peek()?;
        match t.kind {
            Kind::Number | Kind::Duration => {
                self.advance()?;
                Ok(AtValue::Seconds(self.number_literal(&t)?.val))
            }
            Kind::Op(op @ (BinaryOp::Add | BinaryOp::Sub)) => {
                self.advance()?;
                let n = self.peek()?;
                if !matches!(n.kind, Kind::Number | Kind::Duration) {
                    return Err(self.syntax_error());
                }
                self.advance()?;
                let v = self.number_literal(&n)?.val;
                Ok(AtValue::Seconds(if op == BinaryOp::Sub { -v } else { v }))
            }
            Kind::Pre(p @ (Preprocessor::Start | Preprocessor::End)) => {
                self.advance()?;
                self.expect(Kind::LParen)?;
                self.expect(Kind::RParen)?;
                Ok(if p == Preprocessor::Start { AtValue::Start } else { AtValue::End })
            }
            _ => Err(self.syntax_error()),
        }
    }

    /// The offset, `@` and end of the selector or subquery a modifier follows.
    fn modifier_slots<'e>(
        &self,
        e: &'e mut Expr,
        modifier: &str,
    ) -> PResult<(&'e mut Duration, &'e mut Option<At>, &'e mut Pos)> {
        let start = e.span().start;
        match e {
            Expr::Selector(vs) => Ok((&mut vs.offset, &mut vs.at, &mut vs.span.end)),
            Expr::Matrix(m) => Ok((&mut m.vs.offset, &mut m.vs.at, &mut m.end)),
            Expr::Subquery(s) => Ok((&mut s.offset, &mut s.at, &mut s.end)),
            _ => Err(self.error(
                start,
                format!(
                    "{modifier} modifier must be preceded by an instant vector selector or range vector selector or a subquery"
                ),
            )),
        }
    }

    fn set_offset(&self, mut e: Expr, d: Duration) -> PResult<Expr> {
        let start = e.span().start;
        let (offset, _, end) = self.modifier_slots(&mut e, "offset")?;
        if offset.is_set() {
            return Err(self.error(start, "offset may not be set multiple times"));
        }
        *offset = d;
        *end = self.last_end;
        Ok(e)
    }

    fn set_at(&self, mut e: Expr, v: AtValue) -> PResult<Expr> {
        let start = e.span().start;
        let at = match v {
            AtValue::Seconds(ts) => {
                if !ts.is_finite() || ts >= i64::MAX as f64 || ts <= i64::MIN as f64 {
                    // Go's %f
                    let shown = if ts.is_finite() { format!("{ts:.6}") } else { format_value(ts) };
                    return Err(self.error(start, format!("timestamp out of bounds for @ modifier: {shown}")));
                }
                At::Timestamp((ts * 1000.0).round() as i64)
            }
            AtValue::Start => At::Start,
            AtValue::End => At::End,
        };
        let (_, slot, end) = self.modifier_slots(&mut e, "@")?;
        if slot.is_some() {
            return Err(self.error(start, "@ <timestamp> may not be set multiple times"));
        }
        *slot = Some(at);
        *end = self.last_end;
        Ok(e)
    }

    /// `anchored` or `smoothed` after a selector.
    fn set_extended(&self, mut e: Expr, anchored: bool) -> PResult<Expr> {
        let start = e.span().start;
        let name = if anchored { "anchored" } else { "smoothed" };
        let vs = match &mut e {
            Expr::Selector(vs) => vs,
            Expr::Matrix(m) => &mut m.vs,
            Expr::Subquery(_) => {
                return Err(self.error(start, format!("{name} modifier is not supported for subqueries")))
            }
            _ => return Err(self.error(start, format!("{name} modifier not implemented"))),
        };
        if anchored {
            vs.anchored = true;
        } else {
            vs.smoothed = true;
        }
        if vs.anchored && vs.smoothed {
            return Err(self.error(start, "anchored and smoothed modifiers cannot be used together"));
        }
        Ok(e)
    }
}
