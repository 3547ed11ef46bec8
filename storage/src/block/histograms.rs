//! A block's native-histogram samples: `histograms.parquet`, present when the block has any.
//!
//! One row per histogram sample, sorted by series then time, with the columns
//!
//! * `series_id` (UInt32): the series' position in the block's index, as in the samples file;
//! * `timestamp` (Int64): milliseconds since the Unix epoch;
//! * `counter_reset_hint` (UInt8): 0 unknown, 1 counter reset, 2 no counter reset, 3 gauge;
//! * `schema` (Int32): -4 to 8, or -53 for custom bucket bounds;
//! * `zero_threshold`, `zero_count`, `count`, `sum` (Float64);
//! * `positive_index`, `negative_index` (List of Int32) with `positive_count`,
//!   `negative_count` (List of Float64): the buckets that count something, by index;
//! * `custom_bounds` (List of Float64): the upper bounds of custom buckets but the last.
//!
//! A series' float samples stay in `samples.parquet`; the index's time span of a series
//! covers both.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int32Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, UInt32Type, UInt8Type};
use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, UInt32Array, UInt8Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{finish_optional, io, open_optional, pq, BATCH_ROWS, PAGE_ROWS};
use crate::native_histogram::{hint_byte, hint_of_byte};
use crate::{Error, FloatHistogram, HistogramSample, Timestamp};

/// The block's histogram file.
pub(crate) const HISTOGRAMS_FILE: &str = "histograms.parquet";

fn list(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// The histogram file's Arrow schema.
pub(crate) fn schema() -> SchemaRef {
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

/// Rows buffered column by column until a batch is written.
#[derive(Default)]
struct Columns {
    ids: Vec<u32>,
    ts: Vec<i64>,
    hints: Vec<u8>,
    schemas: Vec<i32>,
    floats: [Vec<f64>; 4],
    positive_index: ListBuilder<Int32Builder>,
    positive_count: ListBuilder<Float64Builder>,
    negative_index: ListBuilder<Int32Builder>,
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
        for s in hists {
            let h = &s.h;
            c.ids.push(id);
            c.ts.push(s.t);
            c.hints.push(hint_byte(h.hint));
            c.schemas.push(h.schema);
            for (col, v) in c.floats.iter_mut().zip([h.zero_threshold, h.zero_count, h.count, h.sum]) {
                col.push(v);
            }
            for (buckets, index, count) in [
                (h.positive_buckets(), &mut c.positive_index, &mut c.positive_count),
                (h.negative_buckets(), &mut c.negative_index, &mut c.negative_count),
            ] {
                index.values().append_slice(&buckets.iter().map(|b| b.0).collect::<Vec<_>>());
                count.values().append_slice(&buckets.iter().map(|b| b.1).collect::<Vec<_>>());
                index.append(true);
                count.append(true);
            }
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
        let [zt, zc, count, sum] = std::mem::take(&mut c.floats);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut c.ids))),
            Arc::new(Int64Array::from(std::mem::take(&mut c.ts))),
            Arc::new(UInt8Array::from(std::mem::take(&mut c.hints))),
            Arc::new(Int32Array::from(std::mem::take(&mut c.schemas))),
            Arc::new(Float64Array::from(zt)),
            Arc::new(Float64Array::from(zc)),
            Arc::new(Float64Array::from(count)),
            Arc::new(Float64Array::from(sum)),
            Arc::new(c.positive_index.finish()),
            Arc::new(c.positive_count.finish()),
            Arc::new(c.negative_index.finish()),
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

/// An open histogram file.
pub(crate) struct HistogramFile {
    file: File,
    metadata: ArrowReaderMetadata,
}

impl HistogramFile {
    /// Opens the block's histogram file; `None` when the block has none.
    pub(crate) fn open(dir: &Path) -> Result<Option<HistogramFile>, Error> {
        let opened = open_optional(dir, HISTOGRAMS_FILE, schema())?;
        Ok(opened.map(|(file, metadata)| HistogramFile { file, metadata }))
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
        let file = self.file.try_clone().map_err(io(|| "reading a block's histograms".to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(pq("reading a block's histograms"))?;
        let bad = || Error::Io("reading a block's histograms".into(), std::io::Error::other("malformed row"));
        for batch in reader {
            let batch = batch
                .map_err(|e| Error::Io("reading a block's histograms".into(), std::io::Error::other(e)))?;
            let col = |i: usize| batch.column(i);
            let (sid, ts) = (col(0).as_primitive::<UInt32Type>(), col(1).as_primitive::<Int64Type>());
            let (hints, schemas) = (col(2).as_primitive::<UInt8Type>(), col(3).as_primitive::<Int32Type>());
            let float = |i: usize| col(i).as_primitive::<Float64Type>();
            let (zt, zc, count, sum) = (float(4), float(5), float(6), float(7));
            let lists: Vec<_> = (8..13).map(|i| col(i).as_list::<i32>()).collect();
            let ints =
                |l: usize, row: usize| lists[l].value(row).as_primitive::<Int32Type>().values().to_vec();
            let floats =
                |l: usize, row: usize| lists[l].value(row).as_primitive::<Float64Type>().values().to_vec();
            for row in 0..batch.num_rows() {
                let (id, t) = (sid.value(row), ts.value(row));
                let Ok(pos) = ids.binary_search(&id) else { continue };
                if t < mint || t > maxt {
                    continue;
                }
                let (pi, pc, ni, nc) = (ints(0, row), floats(1, row), ints(2, row), floats(3, row));
                if pi.len() != pc.len() || ni.len() != nc.len() {
                    return Err(bad());
                }
                let h = FloatHistogram::from_parts(
                    hint_of_byte(hints.value(row)).ok_or_else(bad)?,
                    schemas.value(row),
                    zt.value(row),
                    zc.value(row),
                    count.value(row),
                    sum.value(row),
                    pi.into_iter().zip(pc).collect(),
                    ni.into_iter().zip(nc).collect(),
                    floats(4, row),
                )
                .ok_or_else(bad)?;
                out[pos].push(HistogramSample { t, h: Arc::new(h) });
            }
        }
        Ok(out)
    }
}
