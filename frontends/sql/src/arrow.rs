//! Rows as an Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream` on
//! `/api/v1/sql`): one record batch, columns typed as the JSON answer names them.
//!
//! | column type | Arrow type |
//! |---|---|
//! | `text` | `Utf8` |
//! | `timestamp` | `Timestamp(Millisecond, "UTC")` |
//! | `double` | `Float64` (NaN and ±Inf as they are) |
//! | `bigint` | `Int64` |
//! | `jsonb` (a native histogram) | `Utf8`, the JSON text |
//! | `boolean` | `Boolean` |
//!
//! Every column is nullable (`NULL` where a series lacks a label, or an aggregate of no rows).

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};

use crate::rows::{Cell, Rows};
use crate::ColumnKind;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Rows {
    /// The rows as an Arrow IPC stream: the schema, one record batch, the end marker.
    pub fn to_arrow_stream(&self) -> Result<Vec<u8>, ArrowError> {
        let batch = self.to_record_batch("UTC")?;
        let mut out = Vec::new();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        Ok(out)
    }

    /// The rows as one Arrow record batch, times in the time zone named `time_zone`.
    pub(crate) fn to_record_batch(&self, time_zone: &str) -> Result<RecordBatch, ArrowError> {
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (i, column) in self.columns.iter().enumerate() {
            let cells = self.iter().map(|r| r.get(i));
            let (data_type, array): (DataType, ArrayRef) = match column.source.kind() {
                ColumnKind::Text
                | ColumnKind::Numeric
                | ColumnKind::Date
                | ColumnKind::Interval
                | ColumnKind::TextArray
                | ColumnKind::IntegerArray
                | ColumnKind::DoubleArray
                | ColumnKind::Json => {
                    let mut values = StringBuilder::new();
                    for c in cells {
                        match c.as_ref() {
                            Cell::Text(s) => values.append_value(s),
                            _ => values.append_null(),
                        }
                    }
                    (DataType::Utf8, Arc::new(values.finish()))
                }
                ColumnKind::Timestamp | ColumnKind::LocalTimestamp => {
                    let values: TimestampMillisecondArray = cells
                        .map(|c| match *c {
                            Cell::Timestamp(s) | Cell::Number(s) if s.is_finite() => {
                                Some((s * 1000.0).round() as i64)
                            }
                            _ => None,
                        })
                        .collect();
                    let data_type = DataType::Timestamp(TimeUnit::Millisecond, Some(time_zone.into()));
                    (data_type, Arc::new(values.with_timezone(time_zone)))
                }
                ColumnKind::Double => {
                    let values: Float64Array = cells.map(|c| number(&c)).collect();
                    (DataType::Float64, Arc::new(values))
                }
                ColumnKind::Integer | ColumnKind::Int4 => {
                    let values: Int64Array = cells.map(|c| number(&c).map(|v| v as i64)).collect();
                    (DataType::Int64, Arc::new(values))
                }
                ColumnKind::Boolean => {
                    let values: BooleanArray = cells
                        .map(|c| match *c {
                            Cell::Bool(b) => Some(b),
                            _ => None,
                        })
                        .collect();
                    (DataType::Boolean, Arc::new(values))
                }
            };
            fields.push(Field::new(&column.name, data_type, true));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        if arrays.is_empty() {
            Ok(RecordBatch::new_empty(schema))
        } else {
            RecordBatch::try_new(schema, arrays)
        }
    }
}

/// A number cell's value (`NULL` for any other).
fn number(c: &Cell) -> Option<f64> {
    match c {
        Cell::Number(v) | Cell::Timestamp(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, Source};
    use arrow_array::{Array, StringArray};

    #[test]
    fn rows_round_trip_through_an_arrow_stream() {
        let rows = Rows::new(
            vec![
                Column { name: "job".into(), source: Source::Label("job".into()) },
                Column { name: "ts".into(), source: Source::Ts },
                Column { name: "value".into(), source: Source::Value },
            ],
            vec![
                vec![Cell::Text("a".into()), Cell::Timestamp(1.5), Cell::Number(f64::NAN)],
                vec![Cell::Null, Cell::Timestamp(2.0), Cell::Number(3.0)],
            ],
        );
        let bytes = rows.to_arrow_stream().unwrap();
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 2);
        let job = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((job.value(0), job.is_null(1)), ("a", true));
        let ts = b.column(1).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
        assert_eq!((ts.value(0), ts.value(1)), (1500, 2000));
        let value = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(value.value(0).is_nan());
        assert_eq!(value.value(1), 3.0);
    }
}
