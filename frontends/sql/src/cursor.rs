//! Server-side cursors (`DECLARE … CURSOR`, `FETCH`, `MOVE`, `CLOSE`), which psycopg's named
//! cursors, psql's `FETCH_COUNT` and BI tools use to read a large answer a page at a time.
//!
//! A cursor holds its query's answer, computed once at `DECLARE` within the statement's
//! bounds (timeout and sample limit), and a position in it, as PostgreSQL's does: before the
//! first row, on a row, or after the last. Every direction PostgreSQL takes moves it; a
//! `NO SCROLL` cursor refuses to move backward, as PostgreSQL's does.

use crate::rows::Rows;

/// A cursor statement, parsed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    /// `DECLARE name [NO] SCROLL CURSOR [WITH[OUT] HOLD] FOR query`.
    Declare {
        /// The cursor's name (folded to lower case unless quoted).
        name: String,
        /// `WITH HOLD`: the cursor outlives its transaction.
        hold: bool,
        /// `NO SCROLL`: the cursor only moves forward.
        no_scroll: bool,
        /// The query's text.
        query: String,
    },
    /// `FETCH [direction] [FROM | IN] name`: the rows the cursor moves over.
    Fetch {
        /// The cursor.
        name: String,
        /// Where it moves.
        direction: Direction,
    },
    /// `MOVE [direction] [FROM | IN] name`: moves without answering rows.
    Move {
        /// The cursor.
        name: String,
        /// Where it moves.
        direction: Direction,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    Close(Option<String>),
}

/// Where a `FETCH` or `MOVE` takes a cursor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Direction {
    /// The next rows (`None`: all of them).
    Forward(Option<u64>),
    /// The previous rows, nearest first (`None`: all of them).
    Backward(Option<u64>),
    /// Row `n` (1-based; negative counts from the end; 0 is before the first).
    Absolute(i64),
    /// The row `n` rows away (0: the current row again).
    Relative(i64),
}

/// Why a cursor statement failed, with PostgreSQL's SQLSTATE.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CursorError {
    /// PostgreSQL's SQLSTATE (`42601`, `34000`, `55000`, …).
    pub state: &'static str,
    /// What happened, in PostgreSQL's words.
    pub message: String,
}

fn syntax(message: impl Into<String>) -> CursorError {
    CursorError { state: "42601", message: message.into() }
}

/// The words of a cursor statement, each with whether it was quoted and the byte offset
/// where it ends, up to and including the word `until` (`FOR`, after which a `DECLARE`'s
/// query is text of its own, with its own quotes).
fn words(sql: &str, until: Option<&str>) -> Result<Vec<(String, bool, usize)>, CursorError> {
    let mut out: Vec<(String, bool, usize)> = Vec::new();
    let mut chars = sql.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if let (Some(until), Some((last, false, _))) = (until, out.last()) {
            if last.eq_ignore_ascii_case(until) {
                break;
            }
        }
        if c.is_whitespace() || c == ';' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) if chars.peek().is_some_and(|&(_, c)| c == '"') => {
                        chars.next();
                        word.push('"');
                    }
                    Some((at, '"')) => {
                        out.push((word, true, at + 1));
                        break;
                    }
                    Some((_, c)) => word.push(c),
                    None => return Err(syntax("unterminated quoted identifier")),
                }
            }
        } else {
            let mut end = start;
            while let Some(&(at, c)) = chars.peek() {
                if c.is_whitespace() || c == ';' || c == '"' {
                    break;
                }
                end = at + c.len_utf8();
                chars.next();
            }
            out.push((sql[start..end].to_string(), false, end));
        }
    }
    Ok(out)
}

/// Whether word `i` is the keyword `keyword`.
fn is(words: &[(String, bool, usize)], i: usize, keyword: &str) -> bool {
    words.get(i).is_some_and(|(w, quoted, _)| !quoted && w.eq_ignore_ascii_case(keyword))
}

/// An identifier as PostgreSQL reads it: quoted as written, unquoted in lower case.
fn identifier(word: &(String, bool, usize)) -> String {
    if word.1 {
        word.0.clone()
    } else {
        word.0.to_lowercase()
    }
}

/// The cursor statement `sql` is, if it is one.
pub(crate) fn parse(sql: &str) -> Option<Result<Command, CursorError>> {
    let first = sql.split_whitespace().next()?.trim_end_matches(';').to_ascii_uppercase();
    if !matches!(first.as_str(), "DECLARE" | "FETCH" | "MOVE" | "CLOSE") {
        return None;
    }
    let until = (first == "DECLARE").then_some("FOR");
    Some(words(sql, until).and_then(|w| match first.as_str() {
        "DECLARE" => declare(sql, &w),
        "CLOSE" => close(&w),
        _ => {
            let (direction, name) = movement(&w[1..])?;
            Ok(if first == "FETCH" {
                Command::Fetch { name, direction }
            } else {
                Command::Move { name, direction }
            })
        }
    }))
}

fn declare(sql: &str, w: &[(String, bool, usize)]) -> Result<Command, CursorError> {
    let name = w.get(1).map(identifier).ok_or_else(|| syntax("syntax error at end of input"))?;
    let mut i = 2;
    let mut no_scroll = false;
    loop {
        if is(w, i, "BINARY") {
            return Err(CursorError {
                state: "0A000",
                message: "BINARY cursors are not supported: ask for binary results on the protocol instead"
                    .into(),
            });
        } else if is(w, i, "NO") && is(w, i + 1, "SCROLL") {
            no_scroll = true;
            i += 2;
        } else if ["SCROLL", "ASENSITIVE", "INSENSITIVE"].iter().any(|k| is(w, i, k)) {
            i += 1;
        } else {
            break;
        }
    }
    if !is(w, i, "CURSOR") {
        return Err(syntax(format!("syntax error at or near \"{}\"", w.get(i).map_or("", |x| &x.0))));
    }
    i += 1;
    let mut hold = false;
    if (is(w, i, "WITH") || is(w, i, "WITHOUT")) && is(w, i + 1, "HOLD") {
        hold = is(w, i, "WITH");
        i += 2;
    }
    if !is(w, i, "FOR") {
        return Err(syntax(format!("syntax error at or near \"{}\"", w.get(i).map_or("", |x| &x.0))));
    }
    let query = sql[w[i].2..].trim().to_string();
    if query.trim_end_matches(';').trim().is_empty() {
        return Err(syntax("syntax error at end of input"));
    }
    Ok(Command::Declare { name, hold, no_scroll, query })
}

fn close(w: &[(String, bool, usize)]) -> Result<Command, CursorError> {
    match w {
        [_, all] if is(w, 1, "ALL") && !all.1 => Ok(Command::Close(None)),
        [_, name] => Ok(Command::Close(Some(identifier(name)))),
        _ => Err(syntax("CLOSE takes one cursor name, or ALL")),
    }
}

/// A count in a direction: a signed integer.
fn count(word: Option<&(String, bool, usize)>) -> Option<i64> {
    word.filter(|w| !w.1).and_then(|w| w.0.parse().ok())
}

/// The direction and the cursor's name of a `FETCH` or `MOVE` (its words after the verb).
fn movement(w: &[(String, bool, usize)]) -> Result<(Direction, String), CursorError> {
    let (direction, used) = if is(w, 0, "NEXT") {
        (Direction::Forward(Some(1)), 1)
    } else if is(w, 0, "PRIOR") {
        (Direction::Backward(Some(1)), 1)
    } else if is(w, 0, "FIRST") {
        (Direction::Absolute(1), 1)
    } else if is(w, 0, "LAST") {
        (Direction::Absolute(-1), 1)
    } else if is(w, 0, "ALL") {
        (Direction::Forward(None), 1)
    } else if is(w, 0, "ABSOLUTE") || is(w, 0, "RELATIVE") {
        let n = count(w.get(1)).ok_or_else(|| syntax("ABSOLUTE and RELATIVE take a count"))?;
        (if is(w, 0, "ABSOLUTE") { Direction::Absolute(n) } else { Direction::Relative(n) }, 2)
    } else if is(w, 0, "FORWARD") || is(w, 0, "BACKWARD") {
        let forward = is(w, 0, "FORWARD");
        let (n, used) = if is(w, 1, "ALL") {
            (None, 2)
        } else if let Some(n) = count(w.get(1)) {
            (Some(n), 2)
        } else {
            (Some(1), 1)
        };
        let signed = |n: Option<i64>, forward: bool| match n {
            None if forward => Direction::Forward(None),
            None => Direction::Backward(None),
            Some(n) if (n >= 0) == forward => Direction::Forward(Some(n.unsigned_abs())),
            Some(n) => Direction::Backward(Some(n.unsigned_abs())),
        };
        (signed(n, forward), used)
    } else if let Some(n) = count(w.first()) {
        (
            if n >= 0 {
                Direction::Forward(Some(n as u64))
            } else {
                Direction::Backward(Some(n.unsigned_abs()))
            },
            1,
        )
    } else {
        (Direction::Forward(Some(1)), 0)
    };
    // a count of 0 fetches the current row again, as RELATIVE 0 does
    let direction = match direction {
        Direction::Forward(Some(0)) | Direction::Backward(Some(0)) => Direction::Relative(0),
        d => d,
    };
    let rest = &w[used..];
    let rest = if is(rest, 0, "FROM") || is(rest, 0, "IN") { &rest[1..] } else { rest };
    match rest {
        [name] => Ok((direction, identifier(name))),
        [] => Err(syntax("syntax error at end of input: the cursor's name is missing")),
        [_, extra, ..] => Err(syntax(format!("syntax error at or near \"{}\"", extra.0))),
    }
}

/// An open cursor: its answer and where it stands.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// The query's answer.
    pub rows: Rows,
    /// Where the cursor stands: 0 before the first row, `n` on row `n`, `len + 1` after the
    /// last.
    position: usize,
    /// Whether it outlives its transaction.
    pub hold: bool,
    /// Whether the transaction that declared it is still open: a rollback of it closes even
    /// a `WITH HOLD` cursor, as in PostgreSQL.
    pub pending: bool,
    /// Whether it refuses to move backward.
    no_scroll: bool,
}

impl Cursor {
    /// A cursor before the first row of `rows`.
    pub fn new(rows: Rows, hold: bool, no_scroll: bool) -> Cursor {
        Cursor { rows, position: 0, hold, pending: false, no_scroll }
    }

    /// Moves in `direction` and answers the (0-based) indices of the rows it moved onto, in
    /// the order a `FETCH` answers them.
    pub fn step(&mut self, direction: Direction) -> Result<Vec<usize>, CursorError> {
        let len = self.rows.len();
        let after = len + 1;
        let backward = match direction {
            Direction::Backward(n) => n != Some(0),
            Direction::Absolute(n) => (n.max(0) as usize).min(after) < self.position || n < 0,
            Direction::Relative(n) => n < 0,
            Direction::Forward(_) => false,
        };
        if backward && self.no_scroll {
            return Err(CursorError {
                state: "55000",
                message: "cursor can only scan forward: declare it with SCROLL to move backward".into(),
            });
        }
        let p = self.position;
        Ok(match direction {
            Direction::Forward(n) => {
                let n = n.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
                let to = p.saturating_add(n);
                self.position = if to > len { after } else { to };
                (p + 1..=to.min(len)).map(|r| r - 1).collect()
            }
            Direction::Backward(n) => {
                let n = n.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
                let from = p.saturating_sub(n);
                self.position = if n >= p { 0 } else { from };
                (from.max(1)..p).rev().map(|r| r - 1).collect()
            }
            Direction::Absolute(n) => self.land(if n >= 0 { n as i128 } else { after as i128 + n as i128 }),
            Direction::Relative(n) => self.land(p as i128 + n as i128),
        })
    }

    /// Moves onto row `target` (clamped to before the first and after the last) and answers
    /// it when it is a row.
    fn land(&mut self, target: i128) -> Vec<usize> {
        let len = self.rows.len() as i128;
        self.position = target.clamp(0, len + 1) as usize;
        if (1..=len).contains(&target) {
            vec![target as usize - 1]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{Column, Source};
    use crate::rows::Cell;

    fn five() -> Cursor {
        let columns = vec![Column { name: "n".into(), source: Source::Value }];
        let rows = (1..=5).map(|n| vec![Cell::Number(n as f64)]).collect();
        Cursor::new(Rows::new(columns, rows), false, false)
    }

    #[test]
    fn statements_parse_as_postgresql_writes_them() {
        assert_eq!(
            parse("DECLARE \"Big\" NO SCROLL CURSOR WITH HOLD FOR SELECT 1;"),
            Some(Ok(Command::Declare {
                name: "Big".into(),
                hold: true,
                no_scroll: true,
                query: "SELECT 1;".into()
            }))
        );
        assert_eq!(
            parse("declare c cursor for\nselect * from m"),
            Some(Ok(Command::Declare {
                name: "c".into(),
                hold: false,
                no_scroll: false,
                query: "select * from m".into()
            }))
        );
        let fetch = |d| Some(Ok(Command::Fetch { name: "c".into(), direction: d }));
        assert_eq!(parse("FETCH FORWARD 100 FROM \"c\""), fetch(Direction::Forward(Some(100))));
        assert_eq!(parse("FETCH C"), fetch(Direction::Forward(Some(1))));
        assert_eq!(parse("fetch all in c;"), fetch(Direction::Forward(None)));
        assert_eq!(parse("FETCH -2 FROM c"), fetch(Direction::Backward(Some(2))));
        assert_eq!(parse("FETCH BACKWARD -3 c"), fetch(Direction::Forward(Some(3))));
        assert_eq!(parse("FETCH LAST FROM c"), fetch(Direction::Absolute(-1)));
        assert_eq!(
            parse("MOVE ABSOLUTE 3 FROM c"),
            Some(Ok(Command::Move { name: "c".into(), direction: Direction::Absolute(3) }))
        );
        assert_eq!(parse("CLOSE ALL"), Some(Ok(Command::Close(None))));
        assert_eq!(parse("CLOSE \"ALL\""), Some(Ok(Command::Close(Some("ALL".into())))));
        assert_eq!(parse("SELECT 1"), None);
        for bad in
            ["DECLARE c FOR SELECT 1", "DECLARE c CURSOR FOR ", "FETCH 2 FROM", "FETCH 1 FROM c d", "CLOSE"]
        {
            assert_eq!(parse(bad).unwrap().unwrap_err().state, "42601", "{bad}");
        }
        assert_eq!(parse("DECLARE c BINARY CURSOR FOR SELECT 1").unwrap().unwrap_err().state, "0A000");
        // the query's own quotes are the query's
        assert_eq!(
            parse(r#"DECLARE c CURSOR FOR SELECT 'x"y'"#),
            Some(Ok(Command::Declare {
                name: "c".into(),
                hold: false,
                no_scroll: false,
                query: r#"SELECT 'x"y'"#.into()
            }))
        );
        assert_eq!(parse("FETCH 0 FROM c"), fetch(Direction::Relative(0)));
        assert_eq!(parse("FETCH BACKWARD 0 FROM c"), fetch(Direction::Relative(0)));
    }

    #[test]
    fn a_cursor_moves_as_postgresqls_does() {
        let mut c = five();
        assert_eq!(c.step(Direction::Forward(Some(2))).unwrap(), [0, 1]);
        assert_eq!(c.step(Direction::Forward(Some(3))).unwrap(), [2, 3, 4]);
        // on the last row: the next fetch answers nothing and goes past it
        assert_eq!(c.step(Direction::Forward(Some(1))).unwrap(), Vec::<usize>::new());
        assert_eq!(c.step(Direction::Backward(Some(2))).unwrap(), [4, 3]);
        assert_eq!(c.step(Direction::Relative(0)).unwrap(), [3]);
        assert_eq!(c.step(Direction::Backward(None)).unwrap(), [2, 1, 0]);
        assert_eq!(c.step(Direction::Absolute(-2)).unwrap(), [3]);
        assert_eq!(c.step(Direction::Absolute(9)).unwrap(), Vec::<usize>::new());
        assert_eq!(c.step(Direction::Backward(Some(1))).unwrap(), [4]);
        assert_eq!(c.step(Direction::Absolute(0)).unwrap(), Vec::<usize>::new());
        assert_eq!(c.step(Direction::Forward(None)).unwrap(), [0, 1, 2, 3, 4]);
        let mut forward_only = Cursor { no_scroll: true, ..five() };
        assert_eq!(forward_only.step(Direction::Forward(Some(3))).unwrap(), [0, 1, 2]);
        assert_eq!(forward_only.step(Direction::Backward(Some(1))).unwrap_err().state, "55000");
        assert_eq!(forward_only.step(Direction::Absolute(1)).unwrap_err().state, "55000");
        assert_eq!(forward_only.step(Direction::Absolute(5)).unwrap(), [4]);
    }
}
