//! WAL payloads: one write of one table, as `table id (i64 LE)` followed by
//! an Arrow IPC stream holding the batch. Columnar end to end: no per-row work.

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};

/// Encodes one write.
pub(crate) fn encode(table_id: i64, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + 256);
    buf.extend_from_slice(&table_id.to_le_bytes());
    let mut w = StreamWriter::try_new(&mut buf, batch.schema_ref())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

/// The table id of a payload, without decoding the batch.
pub(crate) fn table_id(payload: &[u8]) -> Result<i64> {
    let head: [u8; 8] = payload
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StorageError::Encoding("WAL payload shorter than its header".into()))?;
    Ok(i64::from_le_bytes(head))
}

/// Decodes the batch of a payload.
pub(crate) fn decode_batch(payload: &[u8]) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(Cursor::new(&payload[8..]), None)?;
    let mut batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    match batches.len() {
        1 => Ok(batches.remove(0)),
        n => Err(StorageError::Encoding(format!(
            "WAL payload holds {n} batches, expected 1"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])),
            ],
        )
        .unwrap();
        let p = encode(42, &batch).unwrap();
        assert_eq!(table_id(&p).unwrap(), 42);
        assert_eq!(decode_batch(&p).unwrap(), batch);
        assert!(table_id(&p[..3]).is_err());
    }
}
