//! Compaction's merge of a time partition's files, streamed.
//!
//! Each input (a Parquet object, sorted by time as persistence and
//! compaction write them) is decoded a batch at a time, without the rows a
//! delete covers; the inputs' batches are merged in time order a run at a
//! time (the rows of one input up to the next head of another, found by
//! binary search, so files that do not overlap cost no comparison per
//! row); and the merged rows go to one Parquet writer a few thousand at a
//! time. What a merge holds is the inputs' compressed bytes, one batch per
//! input, the rows gathered and the file being written, not the rows of
//! the partition decoded. An input that is not in time order (no writer of
//! ours makes one) still has every row merged, in a file less well sorted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::ScalarBuffer;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use sextant_catalog::TokenIndex;

use crate::error::Result;
use crate::persist::{EncodedFile, FileWriter, GATHER_ROWS, time_values};
use crate::state::conform;

/// One file to merge: its object, and which of its rows to keep (`None`:
/// all of them).
pub(crate) struct MergeInput {
    pub(crate) object: bytes::Bytes,
    pub(crate) keep: Option<Arc<dyn PhysicalExpr>>,
}

/// What a merge wrote and read.
pub(crate) struct Merged {
    /// The file, or `None` when no row is left.
    pub(crate) file: Option<EncodedFile>,
    /// The rows read (those kept).
    pub(crate) rows: usize,
    /// Their bytes in memory, decoded (for the table's bytes per row).
    pub(crate) decoded: usize,
}

/// One input, read a batch at a time.
struct Cursor {
    reader: ParquetRecordBatchReader,
    keep: Option<Arc<dyn PhysicalExpr>>,
    batch: Option<RecordBatch>,
    times: ScalarBuffer<i64>,
    /// The next row of `batch` to merge.
    at: usize,
    /// Where `batch` is among the batches the gathered rows point into.
    slot: usize,
}

impl Cursor {
    /// Reads the next batch that keeps a row; `false` once none is left.
    fn advance(
        &mut self,
        schema: &SchemaRef,
        time: usize,
        rows: &mut usize,
        decoded: &mut usize,
    ) -> Result<bool> {
        self.batch = None;
        for batch in self.reader.by_ref() {
            let batch = conform(&batch?, schema)?;
            let batch = match &self.keep {
                Some(keep) => crate::deletes::keep_matching(&batch, keep)?,
                None => batch,
            };
            if batch.num_rows() == 0 {
                continue;
            }
            *rows += batch.num_rows();
            *decoded += batch.get_array_memory_size();
            self.times = time_values(batch.column(time))?.values().clone();
            self.at = 0;
            self.batch = Some(batch);
            return Ok(true);
        }
        Ok(false)
    }
}

/// Merges `inputs` (files of the partition starting at `partition_start_ns`)
/// into one file sorted by `schema`'s column `time`: each input read
/// `batch_rows` rows at a time, the file written in row groups of
/// `row_group_rows`; `rows_hint` (the inputs' rows, at most) sizes its bloom
/// filters and token index (of the columns `index` names). CPU-bound: call from a blocking thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn merge_sorted(
    schema: &SchemaRef,
    index: &TokenIndex,
    time: usize,
    partition_start_ns: i64,
    inputs: Vec<MergeInput>,
    batch_rows: usize,
    row_group_rows: usize,
    rows_hint: usize,
) -> Result<Merged> {
    let (mut rows, mut decoded) = (0, 0);
    let mut cursors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let reader = ParquetRecordBatchReaderBuilder::try_new(input.object)?
            .with_batch_size(batch_rows.max(1))
            .build()?;
        let mut cursor = Cursor {
            reader,
            keep: input.keep,
            batch: None,
            times: ScalarBuffer::from(Vec::<i64>::new()),
            at: 0,
            slot: 0,
        };
        if cursor.advance(schema, time, &mut rows, &mut decoded)? {
            cursors.push(cursor);
        }
    }
    if cursors.is_empty() {
        return Ok(Merged {
            file: None,
            rows,
            decoded,
        });
    }
    // The batches the gathered rows point into, and the rows (batch, row).
    let mut held: Vec<RecordBatch> = vec![];
    let mut gathered: Vec<(usize, usize)> = Vec::with_capacity(GATHER_ROWS);
    for c in cursors.iter_mut() {
        c.slot = held.len();
        held.push(c.batch.clone().expect("a cursor has a batch"));
    }
    // Each input's next row: (time, input), the smallest first; ties go
    // to the earlier input, so rows of equal time keep the inputs' order.
    let mut heads: BinaryHeap<Reverse<(i64, usize)>> = cursors
        .iter()
        .enumerate()
        .map(|(i, c)| Reverse((c.times[0], i)))
        .collect();
    let mut file = FileWriter::new(schema, index, rows_hint, row_group_rows)?;
    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    while let Some(Reverse((_, i))) = heads.pop() {
        let next = heads.peek().map(|Reverse(head)| *head);
        let c = &mut cursors[i];
        let rest = &c.times[c.at..];
        // This input's rows before the next input's head (all of them when
        // it is the last), at least one, and no more than fill the gather.
        let run = match next {
            None => rest.len(),
            Some((t, j)) if i < j => rest.partition_point(|&x| x <= t),
            Some((t, _)) => rest.partition_point(|&x| x < t),
        };
        let run = run.clamp(1, GATHER_ROWS - gathered.len());
        for &t in &rest[..run] {
            min_time = min_time.min(t);
            max_time = max_time.max(t);
        }
        gathered.extend((c.at..c.at + run).map(|r| (c.slot, r)));
        c.at += run;
        let live = if c.at < c.times.len() {
            true
        } else if c.advance(schema, time, &mut rows, &mut decoded)? {
            c.slot = held.len();
            held.push(c.batch.clone().expect("advanced"));
            true
        } else {
            false
        };
        if live {
            heads.push(Reverse((c.times[c.at], i)));
        }
        if gathered.len() == GATHER_ROWS {
            let refs: Vec<&RecordBatch> = held.iter().collect();
            file.write(&interleave_record_batch(&refs, &gathered)?)?;
            gathered.clear();
            // Only the inputs' current batches are pointed into from now.
            held.clear();
            for c in cursors.iter_mut() {
                if let Some(batch) = &c.batch {
                    c.slot = held.len();
                    held.push(batch.clone());
                }
            }
        }
    }
    if !gathered.is_empty() {
        let refs: Vec<&RecordBatch> = held.iter().collect();
        file.write(&interleave_record_batch(&refs, &gathered)?)?;
    }
    drop(held);
    let (written, column_stats, bytes) = file.finish()?;
    Ok(Merged {
        file: Some(EncodedFile {
            partition_start_ns,
            min_time_ns: min_time,
            max_time_ns: max_time,
            rows: written,
            column_stats,
            bytes,
        }),
        rows,
        decoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new("n", DataType::Int64, false),
            Field::new("body", DataType::Utf8, true),
        ]))
    }

    /// A file of rows (time, n), written a batch of `batch` rows at a time
    /// in row groups of 1,000.
    fn file(rows: &[(i64, i64)], batch: usize) -> bytes::Bytes {
        let mut w = FileWriter::new(&schema(), &TokenIndex::Auto, rows.len(), 1000).unwrap();
        for part in rows.chunks(batch) {
            let b = RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(TimestampNanosecondArray::from_iter_values(
                        part.iter().map(|r| r.0),
                    )),
                    Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.1))),
                    Arc::new(StringArray::from_iter_values(
                        part.iter().map(|r| format!("row {}", r.1)),
                    )),
                ],
            )
            .unwrap();
            w.write(&b).unwrap();
        }
        w.finish().unwrap().2.into()
    }

    fn read(f: &EncodedFile) -> Vec<(i64, i64, String)> {
        let batches =
            crate::persist::decode(bytes::Bytes::from(f.bytes.clone()), &schema()).unwrap();
        let mut out = vec![];
        for b in batches {
            let t = time_values(b.column(0)).unwrap();
            let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let s = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                out.push((t.value(i), n.value(i), s.value(i).to_string()));
            }
        }
        out
    }

    fn merge(inputs: Vec<MergeInput>, batch_rows: usize) -> Merged {
        merge_sorted(
            &schema(),
            &TokenIndex::Auto,
            0,
            0,
            inputs,
            batch_rows,
            1000,
            100_000,
        )
        .unwrap()
    }

    /// Interleaved inputs, disjoint ones, equal times across inputs, and
    /// batches smaller than a run: the merge is the rows sorted by time,
    /// ties in the inputs' order, every row once, with their times' bounds.
    #[test]
    fn a_merge_is_every_row_once_in_time_order() {
        // Input k holds times k, k+3, k+6, ... (interleaved), then a run of
        // its own far later (disjoint), and time 50,000 in every input.
        let mut all = vec![];
        let mut inputs = vec![];
        for k in 0..3i64 {
            let mut rows: Vec<(i64, i64)> =
                (0..5_000).map(|i| (k + 3 * i, k * 1_000_000 + i)).collect();
            rows.push((50_000, k * 1_000_000 + 9_999));
            rows.extend((0..4_000).map(|i| (100_000 + k * 10_000 + i, k * 1_000_000 + 10_000 + i)));
            all.extend(rows.iter().map(|r| (r.0, k, r.1)));
            inputs.push(MergeInput {
                object: file(&rows, 777),
                keep: None,
            });
        }
        // A stable sort by time keeps equal times in input order.
        all.sort_by_key(|r| (r.0, r.1));
        let merged = merge(inputs, 500);
        assert_eq!(merged.rows, all.len());
        let f = merged.file.unwrap();
        assert_eq!(
            (f.min_time_ns, f.max_time_ns, f.rows),
            (0, 123_999, all.len() as u64)
        );
        let got = read(&f);
        let want: Vec<(i64, i64, String)> = all
            .iter()
            .map(|&(t, _, n)| (t, n, format!("row {n}")))
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "first difference at {:?}",
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }

    /// Rows a delete covers are left out; an input with none left, or no
    /// rows at all, adds nothing; no row left at all writes no file.
    #[test]
    fn a_merge_leaves_out_what_deletes_cover() {
        use datafusion::logical_expr::{col, lit};
        let keep = crate::deletes::compile(&col("n").gt_eq(lit(10i64)), &schema()).unwrap();
        let none = crate::deletes::compile(&col("n").lt(lit(0i64)), &schema()).unwrap();
        let a: Vec<(i64, i64)> = (0..20).map(|i| (i * 2, i)).collect();
        let b: Vec<(i64, i64)> = (0..20).map(|i| (i * 2 + 1, 100 + i)).collect();
        let merged = merge(
            vec![
                MergeInput {
                    object: file(&a, 7),
                    keep: Some(keep.clone()),
                },
                MergeInput {
                    object: file(&b, 7),
                    keep: Some(none.clone()),
                },
                MergeInput {
                    object: file(&b, 7),
                    keep: None,
                },
            ],
            4,
        );
        let got: Vec<i64> = read(merged.file.as_ref().unwrap())
            .iter()
            .map(|r| r.1)
            .collect();
        let mut want: Vec<(i64, i64)> = a.iter().filter(|r| r.1 >= 10).copied().collect();
        want.extend(&b);
        want.sort();
        assert_eq!(got, want.iter().map(|r| r.1).collect::<Vec<_>>());
        let merged = merge(
            vec![MergeInput {
                object: file(&a, 7),
                keep: Some(none),
            }],
            4,
        );
        assert!(merged.file.is_none());
        assert_eq!(merged.rows, 0);
    }
}
