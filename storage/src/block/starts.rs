//! A block's start timestamps: `start_timestamps.parquet`, present when some sample of the
//! block has one.
//!
//! One row per run of consecutive samples of a series that share a start timestamp (see
//! [`crate::start`]), sorted by series then time, with the columns
//!
//! * `series_id` (UInt32): the series' position in the block's index;
//! * `from_timestamp`, `to_timestamp` (Int64): the first and last sample of the run, in
//!   milliseconds since the Unix epoch;
//! * `start_timestamp` (Int64): the start timestamp of every sample of the run.
//!
//! A sample whose time no run of its series covers has no start timestamp. A cumulative
//! counter takes one row per reset; a delta series one row per sample.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt32Type};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::{finish_optional, io, open_optional, pq, BATCH_ROWS, PAGE_ROWS};
use crate::{Error, StartRun, Timestamp};

/// The block's start-timestamp file.
pub(crate) const STARTS_FILE: &str = "start_timestamps.parquet";

/// The file's Arrow schema.
fn schema() -> SchemaRef {
    let ts = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        ts("from_timestamp"),
        ts("to_timestamp"),
        ts("start_timestamp"),
    ]))
}

/// Writes a block's start-timestamp file, created with the first run.
#[derive(Default)]
pub(crate) struct StartWriter {
    writer: Option<ArrowWriter<File>>,
    ids: Vec<u32>,
    columns: [Vec<i64>; 3],
}

impl StartWriter {
    /// Adds the runs of series `id` (time order), after those of lower ids.
    pub(crate) fn add(&mut self, dir: &Path, id: u32, runs: &[StartRun]) -> Result<(), Error> {
        if runs.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            let path = dir.join(STARTS_FILE);
            let file = File::create(&path).map_err(io(|| format!("creating {}", path.display())))?;
            let mut props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
                .set_data_page_row_count_limit(PAGE_ROWS)
                .set_dictionary_enabled(false);
            for col in ["series_id", "from_timestamp", "to_timestamp", "start_timestamp"] {
                props = props.set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
            }
            self.writer = Some(
                ArrowWriter::try_new(file, schema(), Some(props.build()))
                    .map_err(pq("starting a block's start-timestamp file"))?,
            );
        }
        for r in runs {
            self.ids.push(id);
            for (col, v) in self.columns.iter_mut().zip([r.from, r.to, r.start]) {
                col.push(v);
            }
        }
        if self.ids.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        if self.ids.is_empty() {
            return Ok(());
        }
        let [from, to, start] = std::mem::take(&mut self.columns);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut self.ids))),
            Arc::new(Int64Array::from(from)),
            Arc::new(Int64Array::from(to)),
            Arc::new(Int64Array::from(start)),
        ];
        let batch = RecordBatch::try_new(schema(), columns).map_err(|e| {
            Error::Io("building a start-timestamp record batch".into(), std::io::Error::other(e))
        })?;
        writer.write(&batch).map_err(pq("writing a block's start timestamps"))
    }

    /// Completes the file (synced), if the block has start timestamps.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        self.flush()?;
        finish_optional(self.writer.take(), "finishing a block's start-timestamp file")
    }
}

/// An open start-timestamp file.
pub(crate) struct StartFile {
    file: File,
    metadata: ArrowReaderMetadata,
}

impl StartFile {
    /// Opens the block's start-timestamp file; `None` when the block has none.
    pub(crate) fn open(dir: &Path) -> Result<Option<StartFile>, Error> {
        let opened = open_optional(dir, STARTS_FILE, |_| schema())?;
        Ok(opened.map(|(file, metadata)| StartFile { file, metadata }))
    }

    /// The runs overlapping `mint..=maxt` of series `ids` (ascending), clamped to it, one
    /// list per id.
    pub(crate) fn read(
        &self,
        ids: &[u32],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Vec<StartRun>>, Error> {
        let mut out: Vec<Vec<StartRun>> = vec![Vec::new(); ids.len()];
        if ids.is_empty() {
            return Ok(out);
        }
        let what = || "reading a block's start timestamps".to_string();
        let file = self.file.try_clone().map_err(io(what))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(pq("reading a block's start timestamps"))?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::Io(what(), std::io::Error::other(e)))?;
            let sid = batch.column(0).as_primitive::<UInt32Type>();
            let col = |i: usize| batch.column(i).as_primitive::<Int64Type>();
            let (from, to, start) = (col(1), col(2), col(3));
            for row in 0..batch.num_rows() {
                let Ok(pos) = ids.binary_search(&sid.value(row)) else { continue };
                let run = StartRun { from: from.value(row), to: to.value(row), start: start.value(row) };
                if run.to < mint || run.from > maxt {
                    continue;
                }
                out[pos].push(StartRun { from: run.from.max(mint), to: run.to.min(maxt), ..run });
            }
        }
        Ok(out)
    }
}
