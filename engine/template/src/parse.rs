//! Lexing and parsing of Go `text/template` source into a tree, with Go's error messages.

use crate::Error;

/// A parsed template: a list of nodes.
pub type List = Vec<Node>;

/// A node of the template tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// Literal text.
    Text(String),
    /// `{{ pipeline }}`: evaluated and printed (unless it declares variables).
    Action(Pipeline),
    /// `{{ if }}` … `{{ else }}` … `{{ end }}`.
    If(Pipeline, List, List),
    /// `{{ range }}` … `{{ else }}` … `{{ end }}`.
    Range(Pipeline, List, List),
    /// `{{ with }}` … `{{ else }}` … `{{ end }}`.
    With(Pipeline, List, List),
}

/// Commands joined by `|`, optionally declaring or assigning variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`) with the result.
    pub vars: Vec<String>,
    /// Whether `vars` are declared (`:=`) rather than assigned.
    pub declare: bool,
    /// The commands; each one's result is the last argument of the next.
    pub cmds: Vec<Command>,
}

/// A function call or a single operand: `printf "%s" .X`.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The operands; a function call's name is the first.
    pub args: Vec<Operand>,
}

/// One operand of a command.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// `.` followed by fields (`.Labels.job`; empty for `.` itself).
    Dot(Vec<String>),
    /// `$name` followed by fields.
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    /// A parenthesized pipeline followed by fields.
    Pipe(Box<Pipeline>, Vec<String>),
    /// A string literal.
    Str(String),
    /// A number literal, kept as written (Go keeps ints and floats apart).
    Number(String),
    /// `true` or `false`.
    Bool(bool),
    /// `nil`.
    Nil,
}

/// Parses `src`; `is_func` says which function names exist, `vars` which variables are
/// declared beforehand. The error is Go's message, `<name>:<line>: <what>`.
pub fn parse(name: &str, src: &str, is_func: &dyn Fn(&str) -> bool, vars: &[&str]) -> Result<List, Error> {
    let mut p =
        Parser { name, src, pos: 0, line: 1, is_func, vars: vars.iter().map(|v| v.to_string()).collect() };
    let (list, end) = p.list()?;
    match end {
        Stop::Eof => Ok(list),
        Stop::Else(_) => Err(p.err("unexpected {{else}}")),
        Stop::End => Err(p.err("unexpected {{end}}")),
    }
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    End,
    /// `{{ else }}` or `{{ else if … }}` (the pipeline).
    Else(Option<Pipeline>),
}

struct Parser<'a> {
    name: &'a str,
    src: &'a str,
    pos: usize,
    line: usize,
    is_func: &'a dyn Fn(&str) -> bool,
    vars: Vec<String>,
}

/// Whether a byte may continue an identifier (Go: letters, digits, `_`; ASCII here).
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> Error {
        Error::Parse { template: self.name.to_string(), line: self.line, message: msg.to_string() }
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn advance(&mut self, n: usize) {
        self.line += self.src[self.pos..self.pos + n].matches('\n').count();
        self.pos += n;
    }

    /// Nodes up to the end of input, `{{ end }}` or `{{ else }}`.
    fn list(&mut self) -> Result<(List, Stop), Error> {
        let mut out = Vec::new();
        loop {
            let Some(open) = self.rest().find("{{") else {
                if !self.rest().is_empty() {
                    out.push(Node::Text(self.rest().to_string()));
                }
                self.advance(self.rest().len());
                return Ok((out, Stop::Eof));
            };
            let mut text = self.rest()[..open].to_string();
            let trim_left = self.rest()[open + 2..].starts_with("- ")
                || self.rest()[open + 2..].starts_with("-\t")
                || self.rest()[open + 2..].starts_with("-\n");
            if trim_left {
                text = text.trim_end().to_string();
            }
            if !text.is_empty() {
                out.push(Node::Text(text));
            }
            self.advance(open + 2 + usize::from(trim_left));
            self.skip_space();
            if self.rest().starts_with("/*") {
                let Some(close) = self.rest().find("*/") else { return Err(self.err("unclosed comment")) };
                self.advance(close + 2);
                self.skip_space();
                self.close_action()?;
                continue;
            }
            let word = self.peek_word();
            match word.as_str() {
                "end" => {
                    self.advance(3);
                    self.close_action()?;
                    return Ok((out, Stop::End));
                }
                "else" => {
                    self.advance(4);
                    self.skip_space();
                    if self.peek_word() == "if" {
                        self.advance(2);
                        let pipe = self.pipeline(true)?;
                        return Ok((out, Stop::Else(Some(pipe))));
                    }
                    self.close_action()?;
                    return Ok((out, Stop::Else(None)));
                }
                "if" | "range" | "with" => {
                    self.advance(word.len());
                    let saved = self.vars.len();
                    let pipe = self.pipeline(true)?;
                    let (body, alt) = self.block_body(&word)?;
                    self.vars.truncate(saved);
                    out.push(match word.as_str() {
                        "if" => Node::If(pipe, body, alt),
                        "range" => Node::Range(pipe, body, alt),
                        _ => Node::With(pipe, body, alt),
                    });
                }
                "define" | "template" | "block" | "break" | "continue" => {
                    return Err(self.err(&format!("{{{{{word}}}}} is not supported by promflow yet")));
                }
                _ => {
                    let pipe = self.pipeline(true)?;
                    out.push(Node::Action(pipe));
                }
            }
        }
    }

    /// The body of an if/range/with up to its `{{ end }}`, with its else branch (an
    /// `{{ else if }}` chain becomes a nested if).
    fn block_body(&mut self, word: &str) -> Result<(List, List), Error> {
        let (body, end) = self.list()?;
        match end {
            Stop::End => Ok((body, Vec::new())),
            Stop::Eof => Err(self.err("unexpected EOF")),
            Stop::Else(None) => {
                let (alt, end) = self.list()?;
                match end {
                    Stop::End => Ok((body, alt)),
                    Stop::Eof => Err(self.err("unexpected EOF")),
                    Stop::Else(_) => Err(self.err("expected end; found {{else}}")),
                }
            }
            Stop::Else(Some(pipe)) if word == "if" => {
                let (inner, alt) = self.block_body("if")?;
                Ok((body, vec![Node::If(pipe, inner, alt)]))
            }
            Stop::Else(Some(_)) => Err(self.err("expected end; found {{else if}}")),
        }
    }

    fn skip_space(&mut self) {
        let n = self.rest().len() - self.rest().trim_start().len();
        self.advance(n);
    }

    fn peek_word(&self) -> String {
        self.rest().bytes().take_while(|&b| ident_byte(b)).map(char::from).collect()
    }

    /// Consumes `}}` or `-}}` (trimming the following text's leading space).
    fn close_action(&mut self) -> Result<(), Error> {
        self.skip_space();
        if self.rest().starts_with("-}}") {
            self.advance(3);
            let n = self.rest().len() - self.rest().trim_start().len();
            self.advance(n);
            return Ok(());
        }
        if self.rest().starts_with("}}") {
            self.advance(2);
            return Ok(());
        }
        if self.rest().is_empty() {
            return Err(self.err("unclosed action"));
        }
        Err(self.err(&format!("unexpected {:?} in command", self.rest().chars().next().unwrap_or(' '))))
    }

    /// A pipeline up to `}}` (`top`) or `)`.
    fn pipeline(&mut self, top: bool) -> Result<Pipeline, Error> {
        let mut pipe = Pipeline { vars: Vec::new(), declare: false, cmds: Vec::new() };
        // `$a, $b :=` or `$x =`
        let save = (self.pos, self.line);
        self.skip_space();
        let mut names = Vec::new();
        while self.rest().starts_with('$') {
            let name = self.var_name();
            self.skip_space();
            names.push(name);
            if self.rest().starts_with(',') && names.len() == 1 {
                self.advance(1);
                self.skip_space();
                continue;
            }
            break;
        }
        if !names.is_empty()
            && (self.rest().starts_with(":=")
                || (self.rest().starts_with('=') && !self.rest().starts_with("==")))
        {
            let declare = self.rest().starts_with(":=");
            self.advance(if declare { 2 } else { 1 });
            if !declare {
                for n in &names {
                    if !self.vars.contains(n) {
                        return Err(self.err(&format!("undefined variable \"{n}\"")));
                    }
                }
            }
            pipe.vars = names;
            pipe.declare = declare;
        } else {
            (self.pos, self.line) = save;
        }
        loop {
            let cmd = self.command(top)?;
            pipe.cmds.push(cmd);
            self.skip_space();
            if self.rest().starts_with('|') {
                self.advance(1);
                continue;
            }
            break;
        }
        if top {
            self.close_action()?;
        } else if self.rest().starts_with(')') {
            self.advance(1);
        } else {
            return Err(self.err("unclosed left paren"));
        }
        if pipe.declare {
            self.vars.extend(pipe.vars.iter().cloned());
        }
        Ok(pipe)
    }

    fn var_name(&mut self) -> String {
        let n = 1 + self.rest()[1..].bytes().take_while(|&b| ident_byte(b)).count();
        let name = self.rest()[..n].to_string();
        self.advance(n);
        name
    }

    fn fields(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while self.rest().starts_with('.') && self.rest()[1..].bytes().next().is_some_and(ident_byte) {
            self.advance(1);
            let w = self.peek_word();
            self.advance(w.len());
            out.push(w);
        }
        out
    }

    fn command(&mut self, top: bool) -> Result<Command, Error> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            let r = self.rest();
            if r.is_empty() {
                return Err(self.err("unclosed action"));
            }
            if r.starts_with("}}") || r.starts_with("-}}") || r.starts_with('|') || r.starts_with(')') {
                if r.starts_with(')') && top {
                    return Err(self.err("unexpected right paren"));
                }
                break;
            }
            args.push(self.operand()?);
        }
        if args.is_empty() {
            return Err(self.err("missing value for command"));
        }
        Ok(Command { args })
    }

    fn operand(&mut self) -> Result<Operand, Error> {
        let r = self.rest();
        let b = r.as_bytes()[0];
        Ok(match b {
            b'.' => {
                if r[1..].bytes().next().is_some_and(ident_byte) {
                    Operand::Dot(self.fields())
                } else {
                    self.advance(1);
                    Operand::Dot(Vec::new())
                }
            }
            b'$' => {
                let name = self.var_name();
                if !self.vars.contains(&name) {
                    return Err(self.err(&format!("undefined variable \"{name}\"")));
                }
                Operand::Var(name, self.fields())
            }
            b'(' => {
                self.advance(1);
                let inner = self.pipeline(false)?;
                Operand::Pipe(Box::new(inner), self.fields())
            }
            b'"' => {
                let mut i = 1;
                let bytes = r.as_bytes();
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\n' {
                        return Err(self.err("unterminated quoted string"));
                    }
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return Err(self.err("unterminated quoted string"));
                }
                let s = promflow_storage::gofmt::unescape(&r[1..i]);
                self.advance(i + 1);
                Operand::Str(s)
            }
            b'`' => {
                let Some(end) = r[1..].find('`') else {
                    return Err(self.err("unterminated raw quoted string"));
                };
                let s = r[1..1 + end].to_string();
                self.advance(end + 2);
                Operand::Str(s)
            }
            b'-' | b'+' | b'0'..=b'9' => {
                let n = r
                    .bytes()
                    .enumerate()
                    .take_while(|&(i, c)| {
                        c.is_ascii_alphanumeric()
                            || c == b'.'
                            || c == b'_'
                            || (i == 0 && (c == b'-' || c == b'+'))
                            || ((c == b'-' || c == b'+')
                                && i > 0
                                && matches!(r.as_bytes()[i - 1], b'e' | b'E'))
                    })
                    .count();
                let lit = r[..n].to_string();
                if lit.parse::<f64>().is_err() && parse_int(&lit).is_none() {
                    return Err(self.err(&format!("bad number syntax: \"{lit}\"")));
                }
                self.advance(n);
                Operand::Number(lit)
            }
            _ if ident_byte(b) => {
                let w = self.peek_word();
                self.advance(w.len());
                match w.as_str() {
                    "true" => Operand::Bool(true),
                    "false" => Operand::Bool(false),
                    "nil" => Operand::Nil,
                    _ if (self.is_func)(&w) => Operand::Func(w),
                    _ => return Err(self.err(&format!("function \"{w}\" not defined"))),
                }
            }
            _ => return Err(self.err(&format!("unexpected {:?} in command", char::from(b)))),
        })
    }
}

/// Go's integer literal syntax (decimal, 0x, 0o, 0b, underscores).
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let body = body.replace('_', "");
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        i64::from_str_radix(b, 2).ok()?
    } else {
        body.parse().ok()?
    };
    Some(if neg { -v } else { v })
}
