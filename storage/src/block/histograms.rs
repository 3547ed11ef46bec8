//! A block's native-histogram samples: `histograms.parquet`, present when the block has any.
//!
//! One row per histogram sample, sorted by series then time, with the columns
//!
//! * `series_id` (UInt32): the series' position in the block's index, as in the samples file;
//! * `timestamp` (Int64): milliseconds since the Unix epoch;
//! * `counter_reset_hint` (UInt8): 0 unknown, 1 counter reset, 2 no counter reset, 3 gauge;
//! * `schema` (Int32): -4 to 8, or -53 for custom bucket bounds;
//! * `zero_threshold`, `sum` (Float64);
//! * `positive_index`, `negative_index` (List of Int32): the buckets that count something;
//! * the counts, in one of two forms per row:
//!   - a histogram whose counts are all whole numbers (below 2^53) has `count_delta`,
//!     `zero_count_delta` (Int64) and `positive_delta`, `negative_delta` (List of Int64),
//!     each the difference from the same count of the series' previous row when that row
//!     had this form too (a bucket the previous row lacks counted 0), and from 0 otherwise:
//!     a series' counts are the running sums of its rows' differences. A counter's
//!     differences are small, and dictionary encoding stores them in a few bits;
//!   - any other has `count`, `zero_count` (Float64) and `positive_count`,
//!     `negative_count` (List of Float64) as they are;
//!
//!   the columns of the other form are null;
//! * `custom_bounds` (List of Float64): the upper bounds of custom buckets but the last.
//!
//! Files written before the differences were introduced hold `count`, `zero_count`,
//! `positive_count` and `negative_count` in every row (not nullable) and no difference
//! columns; they are read as they are. A series' float samples stay in the samples file;
//! the index's time span of a series covers both.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int32Builder, Int64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, UInt32Type, UInt8Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch, UInt32Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::SchemaDescriptor;

use super::{finish_optional, io, open_optional, pq, BATCH_ROWS, PAGE_ROWS};
use crate::native_histogram::{exact_integer, hint_byte, hint_of_byte};
use crate::{Error, FloatHistogram, HistogramSample, Timestamp};

/// The block's histogram file.
pub(crate) const HISTOGRAMS_FILE: &str = "histograms.parquet";

fn list(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// The histogram file's Arrow schema.
pub(crate) fn schema() -> SchemaRef {
    let f = |name: &str, nullable: bool| Field::new(name, DataType::Float64, nullable);
    let i = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("counter_reset_hint", DataType::UInt8, false),
        Field::new("schema", DataType::Int32, false),
        f("zero_threshold", false),
        f("sum", false),
        Field::new("positive_index", list(DataType::Int32), false),
        Field::new("negative_index", list(DataType::Int32), false),
        i("count_delta"),
        i("zero_count_delta"),
        Field::new("positive_delta", list(DataType::Int64), true),
        Field::new("negative_delta", list(DataType::Int64), true),
        f("count", true),
        f("zero_count", true),
        Field::new("positive_count", list(DataType::Float64), true),
        Field::new("negative_count", list(DataType::Float64), true),
        Field::new("custom_bounds", list(DataType::Float64), false),
    ]))
}

/// The schema of files written before the counts were stored as differences.
fn schema_absolute() -> SchemaRef {
    let f = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("counter_reset_hint", DataType::UInt8, false),
        Field::new("schema", DataType::Int32, false),
        f("zero_threshold"),
        f("zero_count"),
        f("count"),
        f("sum"),
        Field::new("positive_index", list(DataType::Int32), false),
        Field::new("positive_count", list(DataType::Float64), false),
        Field::new("negative_index", list(DataType::Int32), false),
        Field::new("negative_count", list(DataType::Float64), false),
        Field::new("custom_bounds", list(DataType::Float64), false),
    ]))
}

/// The whole numbers of a histogram's counts (count, zero count, positive and negative
/// buckets), if they all are exactly integers ([`exact_integer`]).
fn whole_counts(h: &FloatHistogram) -> Option<Counts> {
    let whole = exact_integer;
    let buckets = |b: &[(i32, f64)]| b.iter().map(|&(i, c)| Some((i, whole(c)?))).collect::<Option<Vec<_>>>();
    Some(Counts {
        count: whole(h.count)?,
        zero: whole(h.zero_count)?,
        positive: buckets(h.positive_buckets())?,
        negative: buckets(h.negative_buckets())?,
    })
}

/// A histogram's counts as whole numbers, buckets by index.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counts {
    count: i64,
    zero: i64,
    positive: Vec<(i32, i64)>,
    negative: Vec<(i32, i64)>,
}

impl Counts {
    /// The differences of `self` from `prev` (a bucket `prev` lacks counted 0), or `self`
    /// when there is no `prev`.
    fn minus(&self, prev: Option<&Counts>) -> Counts {
        let Some(prev) = prev else { return self.clone() };
        Counts {
            count: self.count.wrapping_sub(prev.count),
            zero: self.zero.wrapping_sub(prev.zero),
            positive: bucket_diff(&self.positive, &prev.positive, |a, b| a.wrapping_sub(b)),
            negative: bucket_diff(&self.negative, &prev.negative, |a, b| a.wrapping_sub(b)),
        }
    }

    /// The counts whose differences from `prev` are `self` (the inverse of [`Counts::minus`]).
    fn plus(&self, prev: Option<&Counts>) -> Counts {
        let Some(prev) = prev else { return self.clone() };
        Counts {
            count: self.count.wrapping_add(prev.count),
            zero: self.zero.wrapping_add(prev.zero),
            positive: bucket_diff(&self.positive, &prev.positive, |a, b| a.wrapping_add(b)),
            negative: bucket_diff(&self.negative, &prev.negative, |a, b| a.wrapping_add(b)),
        }
    }
}

/// `op(count, prev count)` for each bucket of `buckets` (sorted by index), against the
/// bucket of the same index in `prev` (sorted; 0 where it has none).
fn bucket_diff(buckets: &[(i32, i64)], prev: &[(i32, i64)], op: impl Fn(i64, i64) -> i64) -> Vec<(i32, i64)> {
    let mut j = 0;
    buckets
        .iter()
        .map(|&(i, c)| {
            while j < prev.len() && prev[j].0 < i {
                j += 1;
            }
            let before = prev.get(j).filter(|p| p.0 == i).map_or(0, |p| p.1);
            (i, op(c, before))
        })
        .collect()
}

/// Rows buffered column by column until a batch is written.
#[derive(Default)]
struct Columns {
    ids: Vec<u32>,
    ts: Vec<i64>,
    hints: Vec<u8>,
    schemas: Vec<i32>,
    zero_thresholds: Vec<f64>,
    sums: Vec<f64>,
    positive_index: ListBuilder<Int32Builder>,
    negative_index: ListBuilder<Int32Builder>,
    count_delta: Vec<Option<i64>>,
    zero_count_delta: Vec<Option<i64>>,
    positive_delta: ListBuilder<Int64Builder>,
    negative_delta: ListBuilder<Int64Builder>,
    count: Vec<Option<f64>>,
    zero_count: Vec<Option<f64>>,
    positive_count: ListBuilder<Float64Builder>,
    negative_count: ListBuilder<Float64Builder>,
    custom_bounds: ListBuilder<Float64Builder>,
}

/// Writes a block's histogram file, created with the first histogram.
pub(crate) struct HistogramWriter {
    writer: Option<ArrowWriter<File>>,
    columns: Columns,
    /// Histogram samples written.
    pub(crate) samples: u64,
}

impl HistogramWriter {
    pub(crate) fn new() -> Self {
        HistogramWriter { writer: None, columns: Columns::default(), samples: 0 }
    }

    /// Adds the histograms of series `id` (time order), after those of lower ids.
    pub(crate) fn add(&mut self, dir: &Path, id: u32, hists: &[HistogramSample]) -> Result<(), Error> {
        if hists.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            let path = dir.join(HISTOGRAMS_FILE);
            let file = File::create(&path).map_err(io(|| format!("creating {}", path.display())))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
                .set_data_page_row_count_limit(PAGE_ROWS)
                .build();
            self.writer = Some(
                ArrowWriter::try_new(file, schema(), Some(props))
                    .map_err(pq("starting a block's histogram file"))?,
            );
        }
        let c = &mut self.columns;
        // the previous row's counts, when they were whole numbers
        let mut prev: Option<Counts> = None;
        for s in hists {
            let h = &s.h;
            c.ids.push(id);
            c.ts.push(s.t);
            c.hints.push(hint_byte(h.hint));
            c.schemas.push(h.schema);
            c.zero_thresholds.push(h.zero_threshold);
            c.sums.push(h.sum);
            for (buckets, index) in
                [(h.positive_buckets(), &mut c.positive_index), (h.negative_buckets(), &mut c.negative_index)]
            {
                index.values().append_slice(&buckets.iter().map(|b| b.0).collect::<Vec<_>>());
                index.append(true);
            }
            let whole = whole_counts(h);
            match &whole {
                Some(counts) => {
                    let d = counts.minus(prev.as_ref());
                    c.count_delta.push(Some(d.count));
                    c.zero_count_delta.push(Some(d.zero));
                    for (buckets, list) in
                        [(&d.positive, &mut c.positive_delta), (&d.negative, &mut c.negative_delta)]
                    {
                        list.values().append_slice(&buckets.iter().map(|b| b.1).collect::<Vec<_>>());
                        list.append(true);
                    }
                    c.count.push(None);
                    c.zero_count.push(None);
                    c.positive_count.append(false);
                    c.negative_count.append(false);
                }
                None => {
                    c.count_delta.push(None);
                    c.zero_count_delta.push(None);
                    c.positive_delta.append(false);
                    c.negative_delta.append(false);
                    c.count.push(Some(h.count));
                    c.zero_count.push(Some(h.zero_count));
                    for (buckets, list) in [
                        (h.positive_buckets(), &mut c.positive_count),
                        (h.negative_buckets(), &mut c.negative_count),
                    ] {
                        list.values().append_slice(&buckets.iter().map(|b| b.1).collect::<Vec<_>>());
                        list.append(true);
                    }
                }
            }
            prev = whole;
            c.custom_bounds.values().append_slice(h.custom_bounds());
            c.custom_bounds.append(true);
        }
        self.samples += hists.len() as u64;
        if self.columns.ids.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        let c = &mut self.columns;
        if c.ids.is_empty() {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut c.ids))),
            Arc::new(Int64Array::from(std::mem::take(&mut c.ts))),
            Arc::new(UInt8Array::from(std::mem::take(&mut c.hints))),
            Arc::new(Int32Array::from(std::mem::take(&mut c.schemas))),
            Arc::new(Float64Array::from(std::mem::take(&mut c.zero_thresholds))),
            Arc::new(Float64Array::from(std::mem::take(&mut c.sums))),
            Arc::new(c.positive_index.finish()),
            Arc::new(c.negative_index.finish()),
            Arc::new(Int64Array::from(std::mem::take(&mut c.count_delta))),
            Arc::new(Int64Array::from(std::mem::take(&mut c.zero_count_delta))),
            Arc::new(c.positive_delta.finish()),
            Arc::new(c.negative_delta.finish()),
            Arc::new(Float64Array::from(std::mem::take(&mut c.count))),
            Arc::new(Float64Array::from(std::mem::take(&mut c.zero_count))),
            Arc::new(c.positive_count.finish()),
            Arc::new(c.negative_count.finish()),
            Arc::new(c.custom_bounds.finish()),
        ];
        let batch = RecordBatch::try_new(schema(), columns)
            .map_err(|e| Error::Io("building a histogram record batch".into(), std::io::Error::other(e)))?;
        writer.write(&batch).map_err(pq("writing a block's histograms"))
    }

    /// Completes the file (synced), if the block has histograms.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        self.flush()?;
        finish_optional(self.writer.take(), "finishing a block's histogram file")
    }
}

/// How a histogram file stores the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// As differences from the series' previous row where they are whole numbers.
    Differences,
    /// As they are, in every row (files written before differences).
    Absolute,
}

/// An open histogram file.
pub(crate) struct HistogramFile {
    file: File,
    metadata: ArrowReaderMetadata,
    layout: Layout,
    /// Each series' rows (`series_id`, first row, row count), by series: rows are sorted by
    /// series, so a read selects the rows of the series it wants and skips the others'
    /// pages, and whether a series has histograms here needs no read.
    series: Vec<(u32, u64, u64)>,
}

impl HistogramFile {
    /// Opens the block's histogram file; `None` when the block has none.
    pub(crate) fn open(dir: &Path) -> Result<Option<HistogramFile>, Error> {
        // the layout, told by the footer's column names
        let differences = |columns: &SchemaDescriptor| {
            columns.columns().iter().any(|c| c.path().parts().first().is_some_and(|p| p == "count_delta"))
        };
        let expected = |columns: &SchemaDescriptor| {
            if differences(columns) {
                schema()
            } else {
                schema_absolute()
            }
        };
        let Some((file, metadata)) = open_optional(dir, HISTOGRAMS_FILE, expected)? else {
            return Ok(None);
        };
        let layout = if metadata.schema().field_with_name("count_delta").is_ok() {
            Layout::Differences
        } else {
            Layout::Absolute
        };
        let series = series_rows(&file, &metadata)?;
        Ok(Some(HistogramFile { file, metadata, layout, series }))
    }

    /// Whether series `id` has histogram rows in this file.
    pub(crate) fn has(&self, id: u32) -> bool {
        self.series.binary_search_by_key(&id, |&(s, ..)| s).is_ok()
    }

    /// The histograms in `mint..=maxt` of series `ids` (ascending), one list per id.
    pub(crate) fn read(
        &self,
        ids: &[u32],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Vec<HistogramSample>>, Error> {
        let mut out: Vec<Vec<HistogramSample>> = vec![Vec::new(); ids.len()];
        if ids.is_empty() {
            return Ok(out);
        }
        let what = || "reading a block's histograms".to_string();
        let ranges =
            ids.iter().filter_map(|id| self.series.binary_search_by_key(id, |&(s, ..)| s).ok()).map(|i| {
                let (_, first, rows) = self.series[i];
                first as usize..(first + rows) as usize
            });
        let file = self.file.try_clone().map_err(io(what))?;
        let Some(reader) =
            super::rows_reader(file, &self.metadata, ranges).map_err(pq("reading a block's histograms"))?
        else {
            return Ok(out);
        };
        let bad = || Error::Io(what(), std::io::Error::other("malformed row"));
        // the series being read and its previous row's whole counts: differences add up
        // over every row of a series, in or out of the range
        let mut running: Option<(u32, Option<Counts>)> = None;
        for batch in reader {
            let batch = batch.map_err(|e| Error::Io(what(), std::io::Error::other(e)))?;
            let rows = Rows::of(&batch, self.layout).ok_or_else(bad)?;
            for row in 0..batch.num_rows() {
                let (id, t) = (rows.series.value(row), rows.timestamps.value(row));
                let Ok(pos) = ids.binary_search(&id) else { continue };
                if running.as_ref().is_none_or(|r| r.0 != id) {
                    running = Some((id, None));
                }
                let prev = running.as_mut().map(|r| &mut r.1).ok_or_else(bad)?;
                let h = rows.histogram(row, prev).ok_or_else(bad)?;
                if (mint..=maxt).contains(&t) {
                    out[pos].push(HistogramSample { t, h: Arc::new(h) });
                }
            }
        }
        Ok(out)
    }
}

/// Each series' rows in the file (`series_id`, first row, row count), read from its
/// `series_id` column alone (a few bytes a row group: it is dictionary and run-length
/// encoded).
fn series_rows(file: &File, metadata: &ArrowReaderMetadata) -> Result<Vec<(u32, u64, u64)>, Error> {
    let what = || "reading a block's histogram series".to_string();
    let column = ProjectionMask::leaves(metadata.parquet_schema(), [0]);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
        file.try_clone().map_err(io(what))?,
        metadata.clone(),
    )
    .with_projection(column)
    .with_batch_size(BATCH_ROWS)
    .build()
    .map_err(pq("reading a block's histogram series"))?;
    let mut series: Vec<(u32, u64, u64)> = Vec::new();
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| Error::Io(what(), std::io::Error::other(e)))?;
        let ids = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| Error::Io(what(), std::io::Error::other("series_id is not UInt32")))?;
        for &id in ids.values() {
            match series.last_mut() {
                Some((last, _, rows)) if *last == id => *rows += 1,
                Some((last, ..)) if *last > id => {
                    return Err(Error::Io(what(), std::io::Error::other("rows not sorted by series")));
                }
                _ => series.push((id, row, 1)),
            }
            row += 1;
        }
    }
    Ok(series)
}

/// The columns of one record batch of a histogram file.
struct Rows<'b> {
    series: &'b arrow_array::PrimitiveArray<UInt32Type>,
    timestamps: &'b arrow_array::PrimitiveArray<Int64Type>,
    hints: &'b arrow_array::PrimitiveArray<UInt8Type>,
    schemas: &'b arrow_array::PrimitiveArray<Int32Type>,
    zero_thresholds: &'b arrow_array::PrimitiveArray<Float64Type>,
    sums: &'b arrow_array::PrimitiveArray<Float64Type>,
    counts: &'b arrow_array::PrimitiveArray<Float64Type>,
    zero_counts: &'b arrow_array::PrimitiveArray<Float64Type>,
    /// (positive, negative) indexes, and their float counts.
    index: [&'b ListArray; 2],
    float_counts: [&'b ListArray; 2],
    custom_bounds: &'b ListArray,
    /// The difference columns (count, zero count, positive and negative buckets), in files
    /// that have them.
    differences: Option<Differences<'b>>,
}

/// The difference columns of a batch.
struct Differences<'b> {
    count: &'b arrow_array::PrimitiveArray<Int64Type>,
    zero: &'b arrow_array::PrimitiveArray<Int64Type>,
    buckets: [&'b ListArray; 2],
}

impl<'b> Rows<'b> {
    /// The batch's columns, by name (`None` when one is missing or mistyped).
    fn of(batch: &'b RecordBatch, layout: Layout) -> Option<Rows<'b>> {
        let col = |name: &str| batch.column_by_name(name);
        let list = |name: &str| col(name)?.as_list_opt::<i32>();
        let float = |name: &str| col(name)?.as_primitive_opt::<Float64Type>();
        let differences = match layout {
            Layout::Absolute => None,
            Layout::Differences => Some(Differences {
                count: col("count_delta")?.as_primitive_opt::<Int64Type>()?,
                zero: col("zero_count_delta")?.as_primitive_opt::<Int64Type>()?,
                buckets: [list("positive_delta")?, list("negative_delta")?],
            }),
        };
        Some(Rows {
            series: col("series_id")?.as_primitive_opt::<UInt32Type>()?,
            timestamps: col("timestamp")?.as_primitive_opt::<Int64Type>()?,
            hints: col("counter_reset_hint")?.as_primitive_opt::<UInt8Type>()?,
            schemas: col("schema")?.as_primitive_opt::<Int32Type>()?,
            zero_thresholds: float("zero_threshold")?,
            sums: float("sum")?,
            counts: float("count")?,
            zero_counts: float("zero_count")?,
            index: [list("positive_index")?, list("negative_index")?],
            float_counts: [list("positive_count")?, list("negative_count")?],
            custom_bounds: list("custom_bounds")?,
            differences,
        })
    }

    /// The histogram of `row`; `prev` holds the series' previous row's whole counts and
    /// is updated to this row's.
    fn histogram(&self, row: usize, prev: &mut Option<Counts>) -> Option<FloatHistogram> {
        let ints = |l: &ListArray| l.value(row).as_primitive_opt::<Int32Type>().map(|a| a.values().to_vec());
        let (pi, ni) = (ints(self.index[0])?, ints(self.index[1])?);
        let (count, zero_count, positive, negative) = match &self.differences {
            Some(d) if d.count.is_valid(row) => {
                let whole = |l: &ListArray, index: &[i32]| {
                    let values = l.value(row);
                    let values = values.as_primitive_opt::<Int64Type>()?.values();
                    (values.len() == index.len())
                        .then(|| index.iter().copied().zip(values.iter().copied()).collect())
                };
                let diff = Counts {
                    count: d.count.value(row),
                    zero: d.zero.value(row),
                    positive: whole(d.buckets[0], &pi)?,
                    negative: whole(d.buckets[1], &ni)?,
                };
                let counts = diff.plus(prev.as_ref());
                let floats = |b: &[(i32, i64)]| b.iter().map(|&(i, c)| (i, c as f64)).collect::<Vec<_>>();
                let parts = (
                    counts.count as f64,
                    counts.zero as f64,
                    floats(&counts.positive),
                    floats(&counts.negative),
                );
                *prev = Some(counts);
                parts
            }
            _ => {
                *prev = None;
                let floats = |l: &ListArray, index: Vec<i32>| {
                    let values = l.value(row);
                    let values = values.as_primitive_opt::<Float64Type>()?.values();
                    (values.len() == index.len())
                        .then(|| index.into_iter().zip(values.iter().copied()).collect())
                };
                let (count, zero) = (self.counts.is_valid(row), self.zero_counts.is_valid(row));
                if !count || !zero {
                    return None;
                }
                let positive = floats(self.float_counts[0], pi)?;
                let negative = floats(self.float_counts[1], ni)?;
                (self.counts.value(row), self.zero_counts.value(row), positive, negative)
            }
        };
        let bounds = self.custom_bounds.value(row);
        FloatHistogram::from_parts(
            hint_of_byte(self.hints.value(row))?,
            self.schemas.value(row),
            self.zero_thresholds.value(row),
            zero_count,
            count,
            self.sums.value(row),
            positive,
            negative,
            bounds.as_primitive_opt::<Float64Type>()?.values().to_vec(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of the layout without differences (every count as it is) still reads.
    #[test]
    fn files_of_absolute_counts_read() {
        let dir = tempfile::tempdir().unwrap();
        let floats = |v: &[f64]| {
            let mut b = ListBuilder::new(Float64Builder::new());
            b.values().append_slice(v);
            b.append(true);
            b.finish()
        };
        let ints = |v: &[i32]| {
            let mut b = ListBuilder::new(Int32Builder::new());
            b.values().append_slice(v);
            b.append(true);
            b.finish()
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![0])),
            Arc::new(Int64Array::from(vec![1000])),
            Arc::new(UInt8Array::from(vec![0])),
            Arc::new(Int32Array::from(vec![0])),
            Arc::new(Float64Array::from(vec![0.001])),
            Arc::new(Float64Array::from(vec![1.0])),
            Arc::new(Float64Array::from(vec![4.0])),
            Arc::new(Float64Array::from(vec![7.5])),
            Arc::new(ints(&[0, 1])),
            Arc::new(floats(&[1.0, 2.0])),
            Arc::new(ints(&[])),
            Arc::new(floats(&[])),
            Arc::new(floats(&[])),
        ];
        let batch = RecordBatch::try_new(schema_absolute(), columns).unwrap();
        let file = File::create(dir.path().join(HISTOGRAMS_FILE)).unwrap();
        let mut writer = ArrowWriter::try_new(file, schema_absolute(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let f = HistogramFile::open(dir.path()).unwrap().unwrap();
        assert_eq!(f.layout, Layout::Absolute);
        let got = f.read(&[0], 0, 2000).unwrap();
        let h = &got[0][0].h;
        assert_eq!((h.count, h.zero_count, h.sum), (4.0, 1.0, 7.5));
        assert_eq!(h.positive_buckets(), &[(0, 1.0), (1, 2.0)]);
    }
}
