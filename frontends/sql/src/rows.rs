//! From the engine's results to SQL rows: samples of a matrix, or groups of instant vectors
//! (one per aggregate column) joined on their labels; then `ORDER BY`, `OFFSET`, `LIMIT`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use promflow_engine::QueryResult;
use promflow_storage::{is_stale_nan, Labels, Sample, Series};

use crate::compile::{bin, column_of_label, Column, ColumnKind, Query, Source};

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
#[derive(Debug, PartialEq)]
pub struct Rows {
    /// The columns, `*` expanded.
    pub columns: Vec<Column>,
    /// The rows, each with one cell per column.
    pub rows: Vec<Vec<Cell>>,
}

impl Query {
    /// The rows of the query from its parts' results (`results[i][j]` is segment `j` of
    /// [`Query::parts`]`[i]` evaluated as the segment says).
    pub fn rows(&self, results: &[Vec<QueryResult>]) -> Rows {
        let (skip, take) = (self.offset, self.limit.unwrap_or(usize::MAX));
        if self.grouped {
            let (columns, mut rows) = self.groups(results);
            let keys = self.sort_keys(&columns);
            sort_rows(&mut rows, &keys);
            let rows = rows.into_iter().skip(skip).take(take).collect();
            return Rows { columns, rows };
        }
        let series = match results.first().and_then(|segments| segments.first()) {
            Some(QueryResult::Matrix(m)) => m.as_slice(),
            _ => &[],
        };
        let columns = self.sample_columns(series);
        let keys = self.sort_keys(&columns);
        let rows = match SeriesOrder::of(&columns, &keys) {
            Some(order) => order.rows(series, &columns, skip, take),
            None => {
                let mut rows: Vec<Vec<Cell>> = series
                    .iter()
                    .flat_map(|s| {
                        let cells = label_cells(&s.labels, &columns);
                        let columns = &columns;
                        live(s).map(move |x| sample_row(&cells, columns, x))
                    })
                    .collect();
                sort_rows(&mut rows, &keys);
                rows.into_iter().skip(skip).take(take).collect()
            }
        };
        Rows { columns, rows }
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
        // positions are of the written columns; `*` only appears without grouping, where it
        // is the whole select list's start or end at most once, so map through the names
        let written: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        self.order_by
            .iter()
            .filter_map(|&(i, desc)| columns.iter().position(|c| c.name == written[i]).map(|p| (p, desc)))
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
                Source::Part(i) => values[*i].map_or(Cell::Null, Cell::Number),
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
                    Source::Part(i) if self.parts[i].counts => Cell::Number(0.0),
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
    let order = |&(i, desc): &(usize, bool)| {
        let o = a[i].compare(&b[i]);
        if desc {
            o.reverse()
        } else {
            o
        }
    };
    keys.iter().map(order).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

/// A series' samples that are rows (staleness markers are not).
fn live(s: &Series) -> impl Iterator<Item = Sample> + '_ {
    s.samples.iter().filter(|x| !is_stale_nan(x.v))
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

/// The row of one sample of a series whose label cells are `cells`.
fn sample_row(cells: &[Cell], columns: &[Column], x: Sample) -> Vec<Cell> {
    columns
        .iter()
        .zip(cells)
        .map(|(c, cell)| match &c.source {
            Source::Label(_) => cell.clone(),
            Source::Ts => Cell::Timestamp(x.t as f64 / 1000.0),
            _ => Cell::Number(x.v),
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

    fn rows(&self, series: &[Series], columns: &[Column], skip: usize, take: usize) -> Vec<Vec<Cell>> {
        let cells: Vec<Vec<Cell>> = series.iter().map(|s| label_cells(&s.labels, columns)).collect();
        let mut order: Vec<usize> = (0..series.len()).collect();
        order.sort_by(|&a, &b| compare_on(self.labels, &cells[a], &cells[b]));
        let mut page = Page { skip, take, out: Vec::new() };
        let mut run = order.as_slice();
        while let Some(&first) = run.first() {
            let len = run
                .iter()
                .take_while(|&&i| compare_on(self.labels, &cells[i], &cells[first]).is_eq())
                .count();
            let (same, rest) = run.split_at(len);
            if same.len() > 1 && self.by_time {
                // stable by time: equal times keep the series' order
                let mut merged: Vec<(usize, Sample)> =
                    same.iter().flat_map(|&i| live(&series[i]).map(move |x| (i, x))).collect();
                merged.sort_by_key(|m| m.1.t);
                merged.into_iter().for_each(|(i, x)| page.add(|| sample_row(&cells[i], columns, x)));
            } else {
                for &i in same {
                    live(&series[i]).for_each(|x| page.add(|| sample_row(&cells[i], columns, x)));
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

/// The rows within `OFFSET` and `LIMIT`, built only for those.
struct Page {
    /// Rows still to skip.
    skip: usize,
    /// Rows to keep.
    take: usize,
    out: Vec<Vec<Cell>>,
}

impl Page {
    fn add(&mut self, row: impl FnOnce() -> Vec<Cell>) {
        if self.skip > 0 {
            self.skip -= 1;
        } else if self.out.len() < self.take {
            self.out.push(row());
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
        Rows { columns, rows: metrics.into_iter().map(|m| vec![Cell::Text(m.into())]).collect() }
    }

    /// `DESCRIBE m`: one row per column of the table, from its series' label names.
    pub fn describe(label_names: &[String]) -> Rows {
        let columns = vec![Column::text("column_name"), Column::text("data_type")];
        let rows = table_columns(label_names)
            .into_iter()
            .map(|(name, kind)| vec![Cell::Text(name.into()), Cell::Text(kind.name().into())])
            .collect();
        Rows { columns, rows }
    }
}

/// A table's columns and their types from its series' label names: the labels (renamed as
/// [`column_of_label`] says), then `ts` and `value`.
pub(crate) fn table_columns(label_names: &[String]) -> Vec<(String, ColumnKind)> {
    let labels =
        label_names.iter().filter(|n| *n != "__name__").map(|n| (column_of_label(n), ColumnKind::Text));
    labels.chain([("ts".into(), ColumnKind::Timestamp), ("value".into(), ColumnKind::Double)]).collect()
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
        let mut rows: Vec<Vec<Cell>> = series
            .iter()
            .flat_map(|s| {
                let cells = label_cells(&s.labels, &columns);
                live(s).map(|x| sample_row(&cells, &columns, x)).collect::<Vec<_>>()
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
                    // ORDER BY names columns of the written select list (`*` is none)
                    Err(crate::Error::Invalid { message, .. })
                        if message.contains("not in the select list") =>
                    {
                        continue
                    }
                    other => panic!("{sql}: {other:?}"),
                };
                assert_eq!(q.rows(&results).rows, sorted_whole(&q, &results), "{sql}");
            }
        }
    }
}
