//! The PromQL lexer: the same state machine as Prometheus's `lex.go`. Its modes (inside
//! braces, inside a range's brackets, right after a number in brackets) decide what a
//! character means — keywords are plain identifiers inside braces, `step` is a keyword
//! only inside brackets — and which error message the user sees, so they are kept as is.

use super::ast::{AggregateOp, BinaryOp};
use super::literals::{quote, quote_rune, sharp_u};

/// Keywords that are neither operators nor aggregators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub(crate) enum Keyword {
    Bool,
    By,
    GroupLeft,
    GroupRight,
    Fill,
    FillLeft,
    FillRight,
    Ignoring,
    Offset,
    Smoothed,
    Anchored,
    On,
    Without,
}

/// Words that stand for a value of the query (`start()`, `step()`, `min_of(…)`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Preprocessor {
    Start,
    End,
    Step,
    Range,
    MaxOf,
    MinOf,
}

/// Token kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Eof,
    Comment,
    Identifier,
    /// An identifier containing `:` (only a metric name can).
    MetricIdentifier,
    Number,
    Duration,
    Str,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    /// `=` (label matching).
    Eql,
    EqlRegex,
    NeqRegex,
    At,
    Op(BinaryOp),
    Agg(AggregateOp),
    Kw(Keyword),
    Pre(Preprocessor),
}

/// A token: its kind and byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub pos: usize,
    pub end: usize,
}

/// A lexing error and where Prometheus reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LexError {
    pub pos: usize,
    pub msg: String,
}

fn keyword(word: &str) -> Option<Kind> {
    use AggregateOp as A;
    use Keyword as K;
    use Preprocessor as P;
    Some(match word {
        "and" => Kind::Op(BinaryOp::And),
        "or" => Kind::Op(BinaryOp::Or),
        "unless" => Kind::Op(BinaryOp::Unless),
        "atan2" => Kind::Op(BinaryOp::Atan2),
        "sum" => Kind::Agg(A::Sum),
        "avg" => Kind::Agg(A::Avg),
        "count" => Kind::Agg(A::Count),
        "min" => Kind::Agg(A::Min),
        "max" => Kind::Agg(A::Max),
        "group" => Kind::Agg(A::Group),
        "stddev" => Kind::Agg(A::Stddev),
        "stdvar" => Kind::Agg(A::Stdvar),
        "topk" => Kind::Agg(A::Topk),
        "bottomk" => Kind::Agg(A::Bottomk),
        "count_values" => Kind::Agg(A::CountValues),
        "quantile" => Kind::Agg(A::Quantile),
        "limitk" => Kind::Agg(A::Limitk),
        "limit_ratio" => Kind::Agg(A::LimitRatio),
        "offset" => Kind::Kw(K::Offset),
        "smoothed" => Kind::Kw(K::Smoothed),
        "anchored" => Kind::Kw(K::Anchored),
        "by" => Kind::Kw(K::By),
        "without" => Kind::Kw(K::Without),
        "on" => Kind::Kw(K::On),
        "ignoring" => Kind::Kw(K::Ignoring),
        "group_left" => Kind::Kw(K::GroupLeft),
        "group_right" => Kind::Kw(K::GroupRight),
        "fill" => Kind::Kw(K::Fill),
        "fill_left" => Kind::Kw(K::FillLeft),
        "fill_right" => Kind::Kw(K::FillRight),
        "bool" => Kind::Kw(K::Bool),
        "start" => Kind::Pre(P::Start),
        "end" => Kind::Pre(P::End),
        "step" => Kind::Pre(P::Step),
        "range" => Kind::Pre(P::Range),
        "max_of" => Kind::Pre(P::MaxOf),
        "min_of" => Kind::Pre(P::MinOf),
        "inf" | "nan" => Kind::Number,
        _ => return None,
    })
}

fn duration_keyword(word: &str) -> Option<Preprocessor> {
    match word {
        "step" => Some(Preprocessor::Step),
        "range" => Some(Preprocessor::Range),
        "max_of" => Some(Preprocessor::MaxOf),
        "min_of" => Some(Preprocessor::MinOf),
        _ => None,
    }
}

/// The arithmetic operators, which mean the same inside and outside brackets.
fn arithmetic(c: char) -> Option<BinaryOp> {
    Some(match c {
        '+' => BinaryOp::Add,
        '-' => BinaryOp::Sub,
        '*' => BinaryOp::Mul,
        '/' => BinaryOp::Div,
        '%' => BinaryOp::Mod,
        '^' => BinaryOp::Pow,
        _ => return None,
    })
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_alpha(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_alnum(c: Option<char>) -> bool {
    c.is_some_and(|c| is_alpha(c) || c.is_ascii_digit())
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

type Lexed = Result<Option<Token>, LexError>;

/// The lexer. `next_token` yields tokens (comments included) until `Eof` or an error.
pub(crate) struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    start: usize,
    width: usize,
    /// The next state is "inside a duration expression" (right after `[` or an operator).
    in_duration: bool,
    paren_depth: i32,
    brace_open: bool,
    bracket_open: bool,
    got_colon: bool,
    got_duration: bool,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(input: &'a str) -> Self {
        Lexer {
            input,
            pos: 0,
            start: 0,
            width: 0,
            in_duration: false,
            paren_depth: 0,
            brace_open: false,
            bracket_open: false,
            got_colon: false,
            got_duration: false,
        }
    }

    /// The next token.
    pub(crate) fn next_token(&mut self) -> Result<Token, LexError> {
        loop {
            let lexed = if self.in_duration {
                self.lex_duration_expr()
            } else if self.brace_open {
                self.lex_inside_braces()
            } else {
                self.lex_statements()
            };
            if let Some(tok) = lexed? {
                return Ok(tok);
            }
        }
    }

    fn next(&mut self) -> Option<char> {
        let c = self.input[self.pos..].chars().next();
        self.width = c.map_or(0, char::len_utf8);
        self.pos += self.width;
        c
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    /// Steps back over the character `next` returned (once per `next`, as in Go).
    fn backup(&mut self) {
        self.pos -= self.width;
    }

    fn accept(&mut self, valid: &str) -> bool {
        match self.next() {
            Some(c) if valid.contains(c) => true,
            _ => {
                self.backup();
                false
            }
        }
    }

    fn is(&self, valid: &str) -> bool {
        self.peek().is_some_and(|c| valid.contains(c))
    }

    fn accept_run(&mut self, valid: &str) {
        while self.accept(valid) {}
    }

    fn emit(&mut self, kind: Kind) -> Lexed {
        let tok = Token { kind, pos: self.start, end: self.pos };
        self.start = self.pos;
        Ok(Some(tok))
    }

    fn ignore(&mut self) -> Lexed {
        self.start = self.pos;
        Ok(None)
    }

    fn error(&self, msg: String) -> Lexed {
        Err(LexError { pos: self.start, msg })
    }

    fn skip_spaces(&mut self) -> Lexed {
        while self.peek().is_some_and(is_space) {
            self.next();
        }
        self.ignore()
    }

    fn lex_statements(&mut self) -> Lexed {
        if self.input[self.pos..].starts_with('#') {
            return self.lex_comment();
        }
        let Some(r) = self.next() else {
            if self.paren_depth != 0 {
                return self.error("unclosed left parenthesis".into());
            }
            if self.bracket_open {
                return self.error("unclosed left bracket".into());
            }
            return self.emit(Kind::Eof);
        };
        if let Some(op) = arithmetic(r) {
            return self.emit(Kind::Op(op));
        }
        match r {
            ',' => self.emit(Kind::Comma),
            c if is_space(c) => self.skip_spaces(),
            '=' => match self.peek() {
                Some('=') => {
                    self.next();
                    self.emit(Kind::Op(BinaryOp::Eqlc))
                }
                Some('~') => self.error("unexpected character after '=': '~'".into()),
                _ => self.emit(Kind::Eql),
            },
            '!' => match self.next() {
                Some('=') => self.emit(Kind::Op(BinaryOp::Neq)),
                t => self.error(format!(
                    "unexpected character after '!': {}",
                    quote_rune(t.unwrap_or('\u{fffd}'))
                )),
            },
            '<' | '>' => {
                let (eq, trim, plain) = if r == '<' {
                    (BinaryOp::Lte, BinaryOp::TrimUpper, BinaryOp::Lss)
                } else {
                    (BinaryOp::Gte, BinaryOp::TrimLower, BinaryOp::Gtr)
                };
                if self.accept("=") {
                    self.emit(Kind::Op(eq))
                } else if self.accept("/") {
                    self.emit(Kind::Op(trim))
                } else {
                    self.emit(Kind::Op(plain))
                }
            }
            c if c.is_ascii_digit() || (c == '.' && is_digit(self.peek())) => {
                self.backup();
                self.lex_number_or_duration()
            }
            '"' | '\'' => self.lex_string(r),
            '`' => self.lex_raw_string(),
            c if is_alpha(c) || c == ':' => {
                if !self.bracket_open {
                    self.backup();
                    return self.lex_keyword_or_identifier();
                }
                // after a number inside brackets: only `:` or a duration keyword may follow
                if c == ':' {
                    if self.got_colon {
                        return self.error("unexpected colon ':'".into());
                    }
                    self.got_colon = true;
                    return self.emit(Kind::Colon);
                }
                if let Some(tok) = self.scan_duration_keyword(c) {
                    return Ok(Some(tok));
                }
                self.error(format!("unexpected character: {}, expected ':'", quote_rune(c)))
            }
            '(' => {
                self.paren_depth += 1;
                self.emit(Kind::LParen)
            }
            ')' => self.right_paren(),
            '{' => {
                self.brace_open = true;
                self.emit(Kind::LBrace)
            }
            '[' => {
                if self.bracket_open {
                    return self.error("unexpected left bracket '['".into());
                }
                self.got_colon = false;
                let tok = self.emit(Kind::LBracket);
                self.skip_spaces()?;
                self.bracket_open = true;
                self.in_duration = true;
                tok
            }
            ']' => {
                if !self.bracket_open {
                    return self.error("unexpected right bracket ']'".into());
                }
                self.bracket_open = false;
                self.emit(Kind::RBracket)
            }
            '@' => self.emit(Kind::At),
            c => self.error(format!("unexpected character: {}", quote_rune(c))),
        }
    }

    /// `)`: Prometheus reports a surplus one just after it.
    fn right_paren(&mut self) -> Lexed {
        let tok = self.emit(Kind::RParen);
        self.paren_depth -= 1;
        if self.paren_depth < 0 {
            return self.error("unexpected right parenthesis ')'".into());
        }
        tok
    }

    fn lex_comment(&mut self) -> Lexed {
        self.pos += 1;
        while self.next().is_some_and(|c| c != '\r' && c != '\n') {}
        self.backup();
        self.emit(Kind::Comment)
    }

    fn lex_inside_braces(&mut self) -> Lexed {
        if self.input[self.pos..].starts_with('#') {
            return self.lex_comment();
        }
        let Some(r) = self.next() else {
            return self.error("unexpected end of input inside braces".into());
        };
        match r {
            c if is_space(c) => self.skip_spaces(),
            c if is_alpha(c) => {
                while is_alnum(self.peek()) {
                    self.next();
                }
                self.emit(Kind::Identifier)
            }
            ',' => self.emit(Kind::Comma),
            '"' | '\'' => self.lex_string(r),
            '`' => self.lex_raw_string(),
            '=' => {
                if self.next() == Some('~') {
                    return self.emit(Kind::EqlRegex);
                }
                self.backup();
                self.emit(Kind::Eql)
            }
            '!' => match self.next() {
                Some('~') => self.emit(Kind::NeqRegex),
                Some('=') => self.emit(Kind::Op(BinaryOp::Neq)),
                nr => self.error(format!(
                    "unexpected character after '!' inside braces: {}",
                    quote_rune(nr.unwrap_or('\u{fffd}'))
                )),
            },
            '{' => self.error("unexpected left brace '{'".into()),
            '}' => {
                self.brace_open = false;
                self.emit(Kind::RBrace)
            }
            c => self.error(format!("unexpected character inside braces: {}", quote_rune(c))),
        }
    }

    fn lex_duration_expr(&mut self) -> Lexed {
        let Some(r) = self.next() else {
            return self.error("unexpected end of input in duration expression".into());
        };
        if let Some(op) = arithmetic(r) {
            return self.emit(Kind::Op(op));
        }
        match r {
            ']' => {
                self.bracket_open = false;
                self.got_colon = false;
                self.in_duration = false;
                self.emit(Kind::RBracket)
            }
            ':' => {
                let tok = self.emit(Kind::Colon);
                if !self.got_duration {
                    return self.error("unexpected colon before duration in duration expression".into());
                }
                if self.got_colon {
                    return self.error("unexpected repeated colon in duration expression".into());
                }
                self.got_colon = true;
                tok
            }
            '(' => {
                self.paren_depth += 1;
                self.emit(Kind::LParen)
            }
            ')' => self.right_paren(),
            c if is_space(c) => self.skip_spaces(),
            ',' => self.emit(Kind::Comma),
            c if c.is_ascii_digit() || (c == '.' && is_digit(self.peek())) => {
                self.backup();
                self.got_duration = true;
                self.in_duration = false;
                self.lex_number_or_duration()
            }
            c => match self.scan_duration_keyword(c) {
                Some(tok) => Ok(Some(tok)),
                None => self.error(format!("unexpected character in duration expression: {}", quote_rune(c))),
            },
        }
    }

    /// After `c`, the first letter: `step`, `range`, `max_of` or `min_of` in any case.
    fn scan_duration_keyword(&mut self, c: char) -> Option<Token> {
        if !matches!(c.to_ascii_lowercase(), 's' | 'r' | 'm') {
            return None;
        }
        while self.peek().is_some_and(is_alpha) {
            self.next();
        }
        let word = self.input[self.start..self.pos].to_ascii_lowercase();
        let pre = duration_keyword(&word)?;
        self.emit(Kind::Pre(pre)).ok().flatten()
    }

    fn lex_number_or_duration(&mut self) -> Lexed {
        if self.scan_number() {
            return self.emit(Kind::Number);
        }
        if self.accept_remaining_duration() {
            self.backup();
            return self.emit(Kind::Duration);
        }
        self.error(format!("bad number or duration syntax: {}", quote(&self.input[self.start..self.pos])))
    }

    fn accept_remaining_duration(&mut self) -> bool {
        if !self.accept("smhdwy") {
            return false;
        }
        // `ms`; bad units such as `hs` are reported when the duration is parsed
        self.accept("s");
        while self.accept("0123456789") {
            self.accept_run("0123456789");
            if !self.accept("smhdw") {
                return false;
            }
            self.accept("s");
        }
        !is_alnum(self.next())
    }

    /// Scans what may be a number; the parser rejects malformed ones.
    fn scan_number(&mut self) -> bool {
        let initial = self.pos;
        let mut digits = "0123456789";
        if self.accept("0") && self.accept("xX") {
            self.accept("_");
            digits = "0123456789abcdefABCDEF";
        }
        self.accept(".");
        self.accept(digits);
        let (mut dot, mut exponent) = (false, false);
        let all = format!("{digits}._eE");
        while self.is(&all) {
            if self.is(".") && dot {
                self.accept(".");
                return false;
            }
            if self.is("eE") && exponent {
                self.accept("eE");
                return false;
            }
            if self.accept(".") {
                dot = true;
                // no fractional hexadecimal literals
                if self.accept("_.") || digits.len() > 10 {
                    return false;
                }
                continue;
            }
            if self.accept("eE") {
                exponent = true;
                self.accept("+-");
                if self.accept("._eE") || self.peek().is_none() {
                    return false;
                }
                continue;
            }
            if self.accept("_") {
                if self.accept("._eE") || self.peek().is_none() {
                    return false;
                }
                continue;
            }
            self.accept_run(digits);
        }
        self.pos != initial && !is_alnum(self.peek())
    }

    fn lex_keyword_or_identifier(&mut self) -> Lexed {
        while self.peek().is_some_and(|c| is_alpha(c) || c.is_ascii_digit() || c == ':') {
            self.next();
        }
        let word = &self.input[self.start..self.pos];
        let kind = match keyword(&word.to_ascii_lowercase()) {
            // fill modifiers are keywords only before `(`, so existing metrics named `fill` work
            Some(Kind::Kw(Keyword::Fill | Keyword::FillLeft | Keyword::FillRight))
                if !self.input[self.pos..].trim_start_matches(is_space).starts_with('(') =>
            {
                Kind::Identifier
            }
            Some(kind) => kind,
            None if word.contains(':') => Kind::MetricIdentifier,
            None => Kind::Identifier,
        };
        self.emit(kind)
    }

    fn lex_string(&mut self, quote: char) -> Lexed {
        loop {
            match self.next() {
                Some('\\') => self.lex_escape(quote)?,
                Some('\u{fffd}') => return self.error("invalid UTF-8 rune".into()),
                None | Some('\n') => return self.error("unterminated quoted string".into()),
                Some(c) if c == quote => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::Str)
    }

    fn lex_raw_string(&mut self) -> Lexed {
        loop {
            match self.next() {
                Some('\u{fffd}') => return self.error("invalid UTF-8 rune".into()),
                None => return self.error("unterminated raw string".into()),
                Some('`') => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::Str)
    }

    /// Validates an escape sequence (the backslash is consumed), as Go's scanner does.
    fn lex_escape(&mut self, quote: char) -> Result<(), LexError> {
        let start = self.start;
        let err = |msg: String| Err(LexError { pos: start, msg });
        let mut ch = self.next();
        let (mut n, base, max) = match ch {
            Some('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => return Ok(()),
            Some(c) if c == quote => return Ok(()),
            Some('0'..='7') => (3, 8, 255),
            Some('x') => {
                ch = self.next();
                (2, 16, 255)
            }
            Some('u') => {
                ch = self.next();
                (4, 16, 0x10ffff)
            }
            Some('U') => {
                ch = self.next();
                (8, 16, 0x10ffff)
            }
            None => return err("escape sequence not terminated".into()),
            Some(c) => return err(format!("unknown escape sequence {}", sharp_u(c))),
        };
        let mut x: u32 = 0;
        while n > 0 {
            let d = ch.and_then(|c| c.to_digit(16)).unwrap_or(16);
            if d >= base {
                return match ch {
                    None => err("escape sequence not terminated".into()),
                    Some(c) => err(format!("illegal character {} in escape sequence", sharp_u(c))),
                };
            }
            x = x * base + d;
            n -= 1;
            if n > 0 {
                ch = self.next();
            }
        }
        if x > max || (0xd800..0xe000).contains(&x) {
            return err("escape sequence is an invalid Unicode code point".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Result<Vec<Kind>, LexError> {
        let mut lx = Lexer::new(input);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token()?;
            if t.kind == Kind::Eof {
                return Ok(out);
            }
            out.push(t.kind);
        }
    }

    #[test]
    fn duration_keywords_only_in_brackets() {
        use Kind::*;
        assert_eq!(
            kinds("x[STep()+1m]").unwrap(),
            [
                Identifier,
                LBracket,
                Pre(Preprocessor::Step),
                LParen,
                RParen,
                Op(BinaryOp::Add),
                Duration,
                RBracket
            ]
        );
        assert_eq!(kinds("fill + fill(1)").unwrap()[0], Identifier);
        assert_eq!(kinds("{sum=\"x\"}").unwrap()[1], Identifier);
    }

    #[test]
    fn errors_match_prometheus() {
        let err = |q: &str| kinds(q).unwrap_err();
        assert_eq!(err("sum("), LexError { pos: 4, msg: "unclosed left parenthesis".into() });
        assert_eq!(err("a)").msg, "unexpected right parenthesis ')'");
        assert_eq!(err("x[5m x]").msg, "unexpected character: 'x', expected ':'");
        assert_eq!(err("5mm").msg, "bad number or duration syntax: \"5mm\"");
        assert_eq!(err("\"\\c\"").msg, "unknown escape sequence U+0063 'c'");
        assert_eq!(err("x[\"5m\"]").msg, "unexpected character in duration expression: '\"'");
    }
}
