//! From the engine's results to SQL rows: samples of a matrix, or groups of instant vectors
//! (one per aggregate column) joined on their labels; then `ORDER BY`, `OFFSET`, `LIMIT`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use promflow_plan::QueryResult;
use promflow_storage::{is_stale_nan, Labels, Series};

use crate::compile::{bin, column_of_label, Column, ColumnKind, OrderKey, Query, Source};

/// One value of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// SQL `NULL`: a label the series lacks, or an aggregate of no rows.
    Null,
    /// A label value, shared by the rows of a series (one count, not one copy, per row).
    Text(std::sync::Arc<str>),
    /// A sample's timestamp, in seconds.
    Timestamp(f64),
    /// A number.
    Number(f64),
    /// A truth value (catalog answers).
    Bool(bool),
}

impl Cell {
    /// Orders cells as PostgreSQL does in ascending order: numbers (NaN after every other
    /// number) and text by value, `NULL` last.
    fn compare(&self, other: &Cell) -> Ordering {
        use Cell::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Null, _) => Ordering::Greater,
            (_, Null) => Ordering::Less,
            (Text(a), Text(b)) => a.cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            (Bool(_), _) => Ordering::Greater,
            (_, Bool(_)) => Ordering::Less,
            (Number(a) | Timestamp(a), Number(b) | Timestamp(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            },
            (Text(_), _) => Ordering::Greater,
            (_, Text(_)) => Ordering::Less,
        }
    }
}

/// A query's answer: named, typed columns and their rows.
///
/// Rows of samples are not built: they are read off the evaluated series where they lie, in
/// the answer's order, when asked for (building a vector of cells per sample was most of a
/// rows query's cost, three times the evaluation's in `benches/sql.rs`).
#[derive(Debug)]
pub struct Rows {
    /// The columns, `*` expanded.
    pub columns: Vec<Column>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// Rows built cell by cell: groups, catalogs, joins.
    Cells(Vec<Vec<Cell>>),
    /// Rows of samples, one per (series, sample) of `order`.
    Samples {
        series: Vec<Series>,
        /// Each series' label cells, one per column (`NULL` in the `ts` and `value` columns).
        labels: Vec<Vec<Cell>>,
        /// The rows: a series' index and the index of its sample.
        order: Vec<(u32, u32)>,
    },
}

/// One row of [`Rows`].
#[derive(Clone, Copy)]
pub struct Row<'a> {
    rows: &'a Rows,
    index: usize,
}

impl<'a> Row<'a> {
    /// The cell in column `column` (`NULL` past the last column).
    pub fn get(&self, column: usize) -> Cow<'a, Cell> {
        self.rows.cell(self.index, column)
    }

    /// The row's cells, one per column.
    pub fn cells(self) -> impl Iterator<Item = Cow<'a, Cell>> {
        (0..self.rows.columns.len()).map(move |c| self.get(c))
    }
}

impl Rows {
    /// Rows built cell by cell, each with one cell per column.
    pub fn new(columns: Vec<Column>, rows: Vec<Vec<Cell>>) -> Rows {
        Rows { columns, body: Body::Cells(rows) }
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Cells(rows) => rows.len(),
            Body::Samples { order, .. } => order.len(),
        }
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cell of row `row` in column `column` (`NULL` out of range).
    pub fn cell(&self, row: usize, column: usize) -> Cow<'_, Cell> {
        const NULL: &Cell = &Cell::Null;
        match &self.body {
            Body::Cells(rows) => Cow::Borrowed(rows.get(row).and_then(|r| r.get(column)).unwrap_or(NULL)),
            Body::Samples { series, labels, order } => match order.get(row) {
                Some(&at) if column < self.columns.len() => {
                    sample_cell(series, labels, &self.columns, at, column)
                }
                _ => Cow::Borrowed(NULL),
            },
        }
    }

    /// Row `index` (its cells are `NULL` past the last row).
    pub fn row(&self, index: usize) -> Row<'_> {
        Row { rows: self, index }
    }

    /// The rows in order.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        (0..self.len()).map(move |index| Row { rows: self, index })
    }

    /// Every row as cells.
    pub fn into_cells(self) -> Vec<Vec<Cell>> {
        match self.body {
            Body::Cells(rows) => rows,
            Body::Samples { .. } => self.iter().map(|r| r.cells().map(Cow::into_owned).collect()).collect(),
        }
    }
}

impl PartialEq for Rows {
    fn eq(&self, other: &Rows) -> bool {
        self.columns == other.columns
            && self.len() == other.len()
            && self.iter().zip(other.iter()).all(|(a, b)| a.cells().eq(b.cells()))
    }
}

impl Query {
    /// The rows of the query from its parts' results (`results[i][j]` is segment `j` of
    /// [`Query::parts`]`[i]` evaluated as the segment says).
    pub fn rows(&self, results: Vec<Vec<QueryResult>>) -> Rows {
        let (skip, take) = (self.offset, self.limit.unwrap_or(usize::MAX));
        if self.grouped {
            let (columns, mut rows) = self.groups(&results);
            let keys = self.sort_keys(&columns);
            sort_rows(&mut rows, &keys);
            let rows = rows.into_iter().skip(skip).take(take).collect();
            return Rows::new(columns, rows);
        }
        let series = match results.into_iter().next().and_then(|segments| segments.into_iter().next()) {
            Some(QueryResult::Matrix(m)) => m,
            _ => Vec::new(),
        };
        let columns = self.sample_columns(&series);
        let keys = self.sort_keys(&columns);
        let labels: Vec<Vec<Cell>> = series.iter().map(|s| label_cells(&s.labels, &columns)).collect();
        let order = match SeriesOrder::of(&columns, &keys) {
            Some(order) => order.rows(&series, &labels, skip, take),
            None => {
                // any other order: sort every row, by the cells of its series and sample
                let mut all: Vec<(u32, u32)> =
                    (0..series.len()).flat_map(|s| live(&series[s]).map(move |x| (s as u32, x))).collect();
                let cell = |at: (u32, u32), c: usize| sample_cell(&series, &labels, &columns, at, c);
                all.sort_by(|&a, &b| compare_by(&keys, |c| cell(a, c), |c| cell(b, c)));
                all.into_iter().skip(skip).take(take).collect()
            }
        };
        Rows { columns, body: Body::Samples { series, labels, order } }
    }

    /// The sort keys (output column index, descending): `ORDER BY`'s, or for a stable answer
    /// the label columns, then `ts` (or the time bucket).
    fn sort_keys(&self, columns: &[Column]) -> Vec<(usize, bool)> {
        if self.order_by.is_empty() {
            let labels = (0..columns.len()).filter(|&i| matches!(columns[i].source, Source::Label(_)));
            let times =
                (0..columns.len()).filter(|&i| matches!(columns[i].source, Source::Ts | Source::Bucket));
            return labels.chain(times).map(|i| (i, false)).collect();
        }
        // `columns` has `*` expanded: names and positions are resolved against it
        self.order_by
            .iter()
            .filter_map(|(key, desc)| {
                let at = match key {
                    OrderKey::Name(n) => columns.iter().position(|c| &c.name == n),
                    OrderKey::Position(i) => (*i < columns.len()).then_some(*i),
                };
                at.map(|p| (p, *desc))
            })
            .collect()
    }

    /// The output columns of rows of samples: `*` expanded to the result's label names (in
    /// name order), then `ts` and `value`.
    fn sample_columns(&self, series: &[Series]) -> Vec<Column> {
        let labels: BTreeSet<&str> = series
            .iter()
            .flat_map(|s| s.labels.iter().map(|l| l.name.as_str()))
            .filter(|n| *n != "__name__")
            .collect();
        self.columns
            .iter()
            .flat_map(|c| match c.source {
                Source::Star => labels
                    .iter()
                    .map(|l| Column { name: column_of_label(l), source: Source::Label(l.to_string()) })
                    .chain([
                        Column { name: "ts".into(), source: Source::Ts },
                        Column { name: "value".into(), source: Source::Value },
                    ])
                    .collect::<Vec<_>>(),
                _ => vec![c.clone()],
            })
            .collect()
    }

    /// One row per group (and time bucket): the label columns, the bucket, and each
    /// aggregate's value; only the groups that every `HAVING` part has.
    fn groups(&self, results: &[Vec<QueryResult>]) -> (Vec<Column>, Vec<Vec<Cell>>) {
        let mut groups: BTreeMap<(Labels, Option<i64>), Vec<Option<f64>>> = BTreeMap::new();
        for (i, segments) in results.iter().enumerate() {
            for (labels, t, value) in segments.iter().flat_map(points) {
                let bucket = self.bucket.map(|(width, origin)| bin(t, width, origin));
                groups.entry((labels, bucket)).or_insert_with(|| vec![None; results.len()])[i] = Some(value);
            }
        }
        groups
            .retain(|_, values| self.parts.iter().zip(values.iter()).all(|(p, v)| !p.filter || v.is_some()));
        let cell =
            |c: &Column, (labels, bucket): &(Labels, Option<i64>), values: &[Option<f64>]| match &c.source {
                Source::Label(l) => label(labels, l),
                Source::Part(i, _) => values[*i].map_or(Cell::Null, Cell::Number),
                Source::Bucket => bucket.map_or(Cell::Null, |b| Cell::Timestamp(b as f64 / 1000.0)),
                _ => Cell::Null,
            };
        let whole_table = self.bucket.is_none()
            && !self.parts.iter().any(|p| p.filter)
            && !self.columns.iter().any(|c| matches!(c.source, Source::Label(_)));
        if groups.is_empty() && whole_table {
            // an aggregate over no rows is one row: count 0, the others NULL
            let row = self
                .columns
                .iter()
                .map(|c| match c.source {
                    Source::Part(i, _) if self.parts[i].counts => Cell::Number(0.0),
                    _ => Cell::Null,
                })
                .collect();
            return (self.columns.clone(), vec![row]);
        }
        let rows =
            groups.iter().map(|(key, values)| self.columns.iter().map(|c| cell(c, key, values)).collect());
        (self.columns.clone(), rows.collect())
    }
}

/// Sorts rows by `keys` (stable: rows equal on every key keep their order).
fn sort_rows(rows: &mut [Vec<Cell>], keys: &[(usize, bool)]) {
    rows.sort_by(|a, b| compare_on(keys, a, b));
}

/// `a` against `b` on `keys`.
fn compare_on(keys: &[(usize, bool)], a: &[Cell], b: &[Cell]) -> Ordering {
    compare_by(keys, |i| Cow::Borrowed(&a[i]), |i| Cow::Borrowed(&b[i]))
}

/// Row `a` against row `b` on `keys`, given their cells by column.
fn compare_by<'a, 'b>(
    keys: &[(usize, bool)],
    a: impl Fn(usize) -> Cow<'a, Cell>,
    b: impl Fn(usize) -> Cow<'b, Cell>,
) -> Ordering {
    let order = |&(i, desc): &(usize, bool)| {
        let o = a(i).compare(&b(i));
        if desc {
            o.reverse()
        } else {
            o
        }
    };
    keys.iter().map(order).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

/// The indices of a series' samples that are rows (staleness markers are not).
fn live(s: &Series) -> impl Iterator<Item = u32> + '_ {
    s.samples.iter().enumerate().filter(|(_, x)| !is_stale_nan(x.v)).map(|(i, _)| i as u32)
}

/// The cell in column `c` of the row of sample `x` of series `s`, whose label cells are
/// `labels[s]`.
fn sample_cell<'a>(
    series: &[Series],
    labels: &'a [Vec<Cell>],
    columns: &[Column],
    (s, x): (u32, u32),
    c: usize,
) -> Cow<'a, Cell> {
    let sample = series[s as usize].samples.view().get(x as usize);
    match columns[c].source {
        Source::Ts => Cow::Owned(Cell::Timestamp(sample.t as f64 / 1000.0)),
        Source::Label(_) => Cow::Borrowed(&labels[s as usize][c]),
        _ => Cow::Owned(Cell::Number(sample.v)),
    }
}

/// A series' cells for the label columns (`NULL` in the others, filled per sample).
fn label_cells(labels: &Labels, columns: &[Column]) -> Vec<Cell> {
    columns
        .iter()
        .map(|c| match &c.source {
            Source::Label(l) => label(labels, l),
            _ => Cell::Null,
        })
        .collect()
}

/// Rows of samples in an order that sorting the series gives, without sorting the rows: when
/// the sort keys are label columns, then at most `ts` ascending. A series' samples are in
/// time order already, so the rows are the series sorted by their label cells, each run of
/// series with equal cells merged by time; and only the rows within `OFFSET`/`LIMIT` are
/// built. (Sorting every row compared label strings a million times over for 150,000 rows:
/// ten times the evaluation's cost in `benches/sql.rs`.)
struct SeriesOrder<'k> {
    /// The label-column keys.
    labels: &'k [(usize, bool)],
    /// Whether rows of equal label cells are ordered by `ts` (else they keep the series'
    /// order, as the stable sort of rows would).
    by_time: bool,
}

impl<'k> SeriesOrder<'k> {
    fn of(columns: &[Column], keys: &'k [(usize, bool)]) -> Option<SeriesOrder<'k>> {
        let n = keys.iter().take_while(|(i, _)| matches!(columns[*i].source, Source::Label(_))).count();
        let by_time = match &keys[n..] {
            [] => false,
            [(i, false)] if columns[*i].source == Source::Ts => true,
            _ => return None,
        };
        Some(SeriesOrder { labels: &keys[..n], by_time })
    }

    /// The rows within `skip` and `take`, as (series, sample) indices.
    fn rows(&self, series: &[Series], cells: &[Vec<Cell>], skip: usize, take: usize) -> Vec<(u32, u32)> {
        let mut order: Vec<usize> = (0..series.len()).collect();
        order.sort_by(|&a, &b| compare_on(self.labels, &cells[a], &cells[b]));
        let samples: usize = series.iter().map(|s| s.samples.len()).sum();
        let mut page = Page { skip, take, out: Vec::with_capacity(samples.saturating_sub(skip).min(take)) };
        let mut run = order.as_slice();
        while let Some(&first) = run.first() {
            let len = run
                .iter()
                .take_while(|&&i| compare_on(self.labels, &cells[i], &cells[first]).is_eq())
                .count();
            let (same, rest) = run.split_at(len);
            if same.len() > 1 && self.by_time {
                // stable by time: equal times keep the series' order
                let mut merged: Vec<(u32, u32)> =
                    same.iter().flat_map(|&i| live(&series[i]).map(move |x| (i as u32, x))).collect();
                merged.sort_by_key(|&(s, x)| series[s as usize].samples.view().get(x as usize).t);
                merged.into_iter().for_each(|at| page.add(at));
            } else {
                for &i in same {
                    live(&series[i]).for_each(|x| page.add((i as u32, x)));
                }
            }
            if page.full() {
                break;
            }
            run = rest;
        }
        page.out
    }
}

/// The rows within `OFFSET` and `LIMIT`.
struct Page {
    /// Rows still to skip.
    skip: usize,
    /// Rows to keep.
    take: usize,
    out: Vec<(u32, u32)>,
}

impl Page {
    fn add(&mut self, row: (u32, u32)) {
        if self.skip > 0 {
            self.skip -= 1;
        } else if self.out.len() < self.take {
            self.out.push(row);
        }
    }

    fn full(&self) -> bool {
        self.skip == 0 && self.out.len() >= self.take
    }
}

/// The (labels, time, value) points of an evaluation: an instant vector's elements, or every
/// point of a range evaluation's series.
fn points(r: &QueryResult) -> Vec<(Labels, i64, f64)> {
    match r {
        QueryResult::Vector(v) => v.clone(),
        QueryResult::Matrix(m) => {
            m.iter().flat_map(|s| s.samples.iter().map(move |x| (s.labels.clone(), x.t, x.v))).collect()
        }
        _ => Vec::new(),
    }
}

impl Rows {
    /// `SHOW TABLES`: one row per metric name.
    pub fn tables(metrics: Vec<String>) -> Rows {
        let columns = vec![Column::text("table_name")];
        Rows::new(columns, metrics.into_iter().map(|m| vec![Cell::Text(m.into())]).collect())
    }

    /// `DESCRIBE m`: one row per column of the table, from its series' label names and
    /// whether they hold native histograms.
    pub fn describe(label_names: &[String], histograms: bool) -> Rows {
        let columns = vec![Column::text("column_name"), Column::text("data_type")];
        let rows = table_columns(label_names, histograms)
            .into_iter()
            .map(|(name, kind)| vec![Cell::Text(name.into()), Cell::Text(kind.name().into())])
            .collect();
        Rows::new(columns, rows)
    }
}

/// A table's columns and their types from its series' label names: the labels (renamed as
/// [`column_of_label`] says), then `ts` and `value`, and `histogram` when its series hold
/// native histograms.
pub(crate) fn table_columns(label_names: &[String], histograms: bool) -> Vec<(String, ColumnKind)> {
    let labels =
        label_names.iter().filter(|n| *n != "__name__").map(|n| (column_of_label(n), ColumnKind::Text));
    let histogram = histograms.then(|| ("histogram".into(), ColumnKind::Json));
    labels
        .chain([("ts".into(), ColumnKind::Timestamp), ("value".into(), ColumnKind::Double)])
        .chain(histogram)
        .collect()
}

fn label(labels: &Labels, name: &str) -> Cell {
    match labels.get(name) {
        "" => Cell::Null,
        v => Cell::Text(v.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, Statement};
    use promflow_storage::Sample;

    /// Series that tie on `job`, interleave in time, lack a label, and hold a staleness marker.
    fn results() -> Vec<Vec<QueryResult>> {
        let series = |pairs: &[(&str, &str)], times: &[i64]| Series {
            labels: Labels::from_pairs(pairs.iter().copied()),
            samples: times
                .iter()
                .map(|&t| Sample {
                    t,
                    v: if t == 7 { f64::from_bits(promflow_storage::STALE_NAN_BITS) } else { t as f64 },
                })
                .collect(),
        };
        let m = vec![
            series(&[("job", "b"), ("instance", "2")], &[1, 4, 6]),
            series(&[("job", "a"), ("instance", "9")], &[2, 3, 7, 8]),
            series(&[("instance", "5")], &[1, 2]),
            series(&[("job", "b"), ("instance", "1")], &[2, 4, 5]),
            series(&[("job", "a"), ("instance", "3")], &[1, 3, 9]),
        ];
        vec![vec![QueryResult::Matrix(m)]]
    }

    /// Every row, sorted as a whole: what the rows ordered through their series must equal.
    fn sorted_whole(q: &Query, results: &[Vec<QueryResult>]) -> Vec<Vec<Cell>> {
        let Some(QueryResult::Matrix(series)) = results[0].first() else { unreachable!() };
        let columns = q.sample_columns(series);
        let keys = q.sort_keys(&columns);
        let labels: Vec<Vec<Cell>> = series.iter().map(|s| label_cells(&s.labels, &columns)).collect();
        let mut rows: Vec<Vec<Cell>> = (0..series.len())
            .flat_map(|s| live(&series[s]).map(move |x| (s as u32, x)))
            .map(|at| {
                (0..columns.len())
                    .map(|c| sample_cell(series, &labels, &columns, at, c).into_owned())
                    .collect()
            })
            .collect();
        sort_rows(&mut rows, &keys);
        rows.into_iter().skip(q.offset).take(q.limit.unwrap_or(usize::MAX)).collect()
    }

    #[test]
    fn rows_ordered_through_their_series_are_the_rows_sorted_whole() {
        let results = results();
        for order in [
            "",
            "ORDER BY job",
            "ORDER BY job DESC",
            "ORDER BY job, ts",
            "ORDER BY job DESC, ts",
            "ORDER BY instance DESC, job",
            "ORDER BY ts",
            "ORDER BY job, ts DESC",
            "ORDER BY value DESC",
            "ORDER BY job LIMIT 4 OFFSET 3",
            "LIMIT 2 OFFSET 20",
        ] {
            for select in ["job, ts, value", "job, instance, ts, value", "*", "value, job"] {
                let sql = format!("SELECT {select} FROM m WHERE ts > 0 {order}");
                let q = match compile(&sql, 100) {
                    Ok(Statement::Select(q)) => q,
                    // ORDER BY names columns of the select list
                    Err(crate::Error::Invalid { message, .. })
                        if message.contains("not in the select list") && select != "*" =>
                    {
                        continue
                    }
                    other => panic!("{sql}: {other:?}"),
                };
                assert_eq!(q.rows(results.clone()).into_cells(), sorted_whole(&q, &results), "{sql}");
            }
        }
    }
}

/// A `double precision` as PostgreSQL writes it (`extra_float_digits` 1, its default): the
/// shortest text that reads back as the same number, in positional notation for decimal
/// exponents from -4 to 14 and in scientific notation (`1e+15`, `2.5e-05`) outside them.
pub(crate) fn float8_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` is the shortest round-trip digits with their exponent: `1.5e-5`
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..15).contains(&exponent) {
        v.to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod float8_text_tests {
    use super::float8_text;

    #[test]
    fn doubles_are_written_as_postgresql_writes_them() {
        for (v, text) in [
            (1.0, "1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (0.0001, "0.0001"),
            (0.000025, "2.5e-05"),
            (-1.5e300, "-1.5e+300"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(float8_text(v), text);
        }
    }
}
