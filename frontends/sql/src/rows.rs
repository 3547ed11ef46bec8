//! From the engine's results to SQL rows: samples of a matrix, or groups of instant vectors
//! (one per aggregate column) joined on their labels; then `ORDER BY`, `OFFSET`, `LIMIT`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use promflow_engine::QueryResult;
use promflow_storage::{is_stale_nan, Labels};

use crate::compile::{bin, column_of_label, Column, ColumnKind, Query, Source};

/// One value of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// SQL `NULL`: a label the series lacks, or an aggregate of no rows.
    Null,
    /// A label value.
    Text(String),
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
        let (columns, mut rows) = if self.grouped { self.groups(results) } else { self.samples(results) };
        let keys: Vec<(usize, bool)> = if self.order_by.is_empty() {
            // a stable answer: by the label columns, then ts
            let labels = (0..columns.len()).filter(|&i| matches!(columns[i].source, Source::Label(_)));
            let times =
                (0..columns.len()).filter(|&i| matches!(columns[i].source, Source::Ts | Source::Bucket));
            labels.chain(times).map(|i| (i, false)).collect()
        } else {
            // positions are of the written columns; `*` only appears without grouping, where it
            // is the whole select list's start or end at most once, so map through the names
            let written: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            self.order_by
                .iter()
                .filter_map(|&(i, desc)| columns.iter().position(|c| c.name == written[i]).map(|p| (p, desc)))
                .collect()
        };
        rows.sort_by(|a, b| {
            let order = |&(i, desc): &(usize, bool)| {
                let o = a[i].compare(&b[i]);
                if desc {
                    o.reverse()
                } else {
                    o
                }
            };
            keys.iter().map(order).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
        });
        let rows = rows.into_iter().skip(self.offset).take(self.limit.unwrap_or(usize::MAX)).collect();
        Rows { columns, rows }
    }

    /// One row per sample of the range selection.
    fn samples(&self, results: &[Vec<QueryResult>]) -> (Vec<Column>, Vec<Vec<Cell>>) {
        let series = match results.first().and_then(|segments| segments.first()) {
            Some(QueryResult::Matrix(m)) => m.as_slice(),
            _ => &[],
        };
        let labels: BTreeSet<&str> = series
            .iter()
            .flat_map(|s| s.labels.iter().map(|l| l.name.as_str()))
            .filter(|n| *n != "__name__")
            .collect();
        let columns: Vec<Column> = self
            .columns
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
            .collect();
        let mut rows = Vec::new();
        for s in series {
            for sample in s.samples.iter().filter(|x| !is_stale_nan(x.v)) {
                rows.push(
                    columns
                        .iter()
                        .map(|c| match &c.source {
                            Source::Label(l) => label(&s.labels, l),
                            Source::Ts => Cell::Timestamp(sample.t as f64 / 1000.0),
                            _ => Cell::Number(sample.v),
                        })
                        .collect(),
                );
            }
        }
        (columns, rows)
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
        Rows { columns, rows: metrics.into_iter().map(|m| vec![Cell::Text(m)]).collect() }
    }

    /// `DESCRIBE m`: one row per column of the table, from its series' label names.
    pub fn describe(label_names: &[String]) -> Rows {
        let columns = vec![Column::text("column_name"), Column::text("data_type")];
        let rows = table_columns(label_names)
            .into_iter()
            .map(|(name, kind)| vec![Cell::Text(name), Cell::Text(kind.name().into())])
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
        v => Cell::Text(v.to_string()),
    }
}
