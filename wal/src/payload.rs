//! WAL payloads: one write of one table, as `table id (i64 LE)` followed by
//! an Arrow IPC stream holding the batch. Columnar end to end: no per-row work.

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use arrow::error::{ArrowError, Result};

/// Encodes one write.
pub fn encode(table_id: i64, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + 256);
    buf.extend_from_slice(&table_id.to_le_bytes());
    let mut w = StreamWriter::try_new(&mut buf, batch.schema_ref())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

/// The table id of a payload, without decoding the batch.
pub fn table_id(payload: &[u8]) -> Result<i64> {
    let head: [u8; 8] = payload
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            ArrowError::InvalidArgumentError("WAL payload shorter than its header".into())
        })?;
    Ok(i64::from_le_bytes(head))
}

/// Decodes the batch of a payload.
pub fn decode_batch(payload: &[u8]) -> Result<RecordBatch> {
    let body = payload.get(8..).ok_or_else(|| {
        ArrowError::InvalidArgumentError("WAL payload shorter than its header".into())
    })?;
    check_framing(body)?;
    // Arrow's IPC reader asserts instead of failing on some malformed
    // input (a buffer that reaches past the message body): such a payload
    // is refused with an error like any other that does not decode (found
    // by the fuzz target `wal_reader`).
    let read = std::panic::catch_unwind(|| {
        let reader = StreamReader::try_new(Cursor::new(body), None)?;
        reader.collect::<std::result::Result<Vec<_>, _>>()
    });
    let mut batches = read.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the decoder panicked");
        ArrowError::IpcError(format!("malformed Arrow IPC data in a WAL payload: {why}"))
    })??;
    match batches.len() {
        1 => Ok(batches.remove(0)),
        n => Err(ArrowError::InvalidArgumentError(format!(
            "WAL payload holds {n} batches, expected 1"
        ))),
    }
}

/// Walks the IPC stream's messages before Arrow's reader does: each
/// message's metadata must be a valid flatbuffer and its body must lie
/// within the payload, and each batch's row count must be plausible for
/// its body. Arrow's reader allocates what a length field says before it
/// reads, so a damaged length would abort the process on allocation
/// instead of failing (found by the fuzz target `wal_reader`).
fn check_framing(mut rest: &[u8]) -> Result<()> {
    let bad = |why: String| {
        ArrowError::IpcError(format!("malformed Arrow IPC data in a WAL payload: {why}"))
    };
    let word = |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)) };
    while !rest.is_empty() {
        let mut len = word(rest).ok_or_else(|| bad("truncated message length".into()))?;
        rest = &rest[4..];
        if len == u32::MAX {
            len = word(rest).ok_or_else(|| bad("truncated message length".into()))?;
            rest = &rest[4..];
        }
        if len == 0 {
            return Ok(());
        }
        let len = len as usize;
        let meta = rest
            .get(..len)
            .ok_or_else(|| bad(format!("message metadata of {len} bytes past the end")))?;
        let message =
            arrow::ipc::root_as_message(meta).map_err(|e| bad(format!("message metadata: {e}")))?;
        rest = &rest[len..];
        let body = usize::try_from(message.bodyLength())
            .ok()
            .filter(|b| *b <= rest.len())
            .ok_or_else(|| {
                bad(format!(
                    "message body of {} bytes, {} left",
                    message.bodyLength(),
                    rest.len()
                ))
            })?;
        if let Some(batch) = message.header_as_record_batch() {
            // At most one row per bit of the body, or a few for columns
            // without buffers: a generous bound that stops a huge count.
            let most = (body as i64).saturating_mul(8).saturating_add(1 << 16);
            if !(0..=most).contains(&batch.length()) {
                return Err(bad(format!(
                    "a batch of {} rows in a body of {body} bytes",
                    batch.length()
                )));
            }
        }
        rest = &rest[body..];
    }
    Ok(())
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
        assert!(decode_batch(&p[..3]).is_err());
    }

    /// A record batch message whose buffer reaches past the body: Arrow's
    /// reader asserts; the payload is refused with an error (the input the
    /// fuzz target `wal_reader` found, fuzz/corpus/wal_reader).
    #[test]
    fn a_malformed_batch_is_an_error_not_a_panic() {
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/wal_reader/arrow-buffer-past-body"
        ))
        .unwrap();
        // Mode byte (odd: one framed payload), then the payload.
        let e = decode_batch(&input[1..]).unwrap_err();
        assert!(e.to_string().contains("malformed Arrow IPC data"), "{e}");
    }
}
