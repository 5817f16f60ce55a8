//! Buffer chunks → sorted Parquet files, one or more per time partition.
//!
//! Rows are ordered by time (only the time column is gathered and sorted),
//! split at partition boundaries, and each piece is gathered from the input
//! a few thousand rows at a time into the Parquet writer (zstd, page
//! statistics and page index, bloom filters on id columns), so encoding
//! holds the order, the compressed row group and file beside its input, not
//! a sorted copy of it. Per-column min/max are kept for the catalog so queries can prune
//! files before any I/O, then row groups, then pages. A keyed table's piece
//! is sorted by key and deduplicated whole ([`crate::keys`]).

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow::compute::{SortOptions, concat, interleave_record_batch, sort_to_indices, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sextant_catalog::{ColumnStats, TableDef, TokenIndex};
use std::collections::{BTreeMap, HashSet};

use crate::error::{Result, StorageError};
use crate::keys::KeyOrder;
use crate::state::{Chunk, conform};

/// Rows per Parquet row group by default: large enough for efficient
/// scans, small enough that row-group statistics still prune.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 256 * 1024;

/// Rows gathered in order and handed to the Parquet writer at a time
/// (which encodes and compresses them into its row group as they come).
pub(crate) const GATHER_ROWS: usize = 8 * 1024;

/// One encoded file for one time partition.
pub(crate) struct EncodedFile {
    pub(crate) partition_start_ns: i64,
    pub(crate) min_time_ns: i64,
    pub(crate) max_time_ns: i64,
    pub(crate) rows: u64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) column_stats: BTreeMap<String, ColumnStats>,
}

/// Sorts `batches` by `time_col` and encodes one Parquet file per partition
/// of width `partition_ns`, in row groups of `row_group_rows`, handing
/// each to `sink` as soon as it is encoded (so one is held at a time,
/// however many partitions the rows cover). A keyed table's file is
/// sorted by its key instead, one row per key ([`crate::keys`]).
/// CPU-bound: call from a blocking thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_partitions(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    time_col: &str,
    partition_ns: i64,
    row_group_rows: usize,
    key: Option<&KeyOrder>,
    index: &TokenIndex,
    sink: &mut dyn FnMut(EncodedFile) -> Result<()>,
) -> Result<()> {
    let row_group_rows = row_group_rows.max(1);
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        return Ok(());
    }
    let time_idx = schema.index_of(time_col)?;
    let time_columns: Vec<&dyn Array> = batches
        .iter()
        .map(|b| b.column(time_idx).as_ref())
        .collect();
    let all_times = concat(&time_columns)?;
    let order = sort_to_indices(
        &all_times,
        Some(SortOptions {
            descending: false,
            nulls_first: false,
        }),
        None,
    )?;
    let sorted_times = take(&all_times, &order, None)?;
    drop(all_times);
    let times = time_values(&sorted_times)?;
    // Where each batch starts among all the rows, to find a row's batch.
    let starts: Vec<usize> = batches
        .iter()
        .scan(0, |at, b| {
            let start = *at;
            *at += b.num_rows();
            Some(start)
        })
        .collect();
    let locate = |row: u32| {
        let row = row as usize;
        let b = starts.partition_point(|&s| s <= row) - 1;
        (b, row - starts[b])
    };
    let gather = |range: std::ops::Range<usize>| -> Result<RecordBatch> {
        let rows: Vec<(usize, usize)> = order.values()[range].iter().map(|&r| locate(r)).collect();
        Ok(interleave_record_batch(&batches, &rows)?)
    };

    let mut start = 0;
    while start < times.len() {
        let partition = partition_start(times.value(start), partition_ns);
        // Sorted, so the partition ends at the first time at or past the
        // next one's start, if there is one before the end of time.
        let end = match (times.value(start).div_euclid(partition_ns) + 1).checked_mul(partition_ns)
        {
            Some(next) => start + times.values()[start..].partition_point(|&t| t < next),
            None => times.len(),
        };
        let mut file = FileWriter::new(schema, index, end - start, row_group_rows)?;
        if let Some(k) = key {
            file.write(&crate::keys::sort_dedup(&gather(start..end)?, k)?)?;
        } else {
            let mut at = start;
            while at < end {
                let to = (at + GATHER_ROWS).min(end);
                file.write(&gather(at..to)?)?;
                at = to;
            }
        }
        let (rows, column_stats, bytes) = file.finish()?;
        sink(EncodedFile {
            partition_start_ns: partition,
            min_time_ns: times.value(start),
            max_time_ns: times.value(end - 1),
            rows,
            column_stats,
            bytes,
        })?;
        start = end;
    }
    Ok(())
}

/// The most [`encode_table`] holds beside `bytes` of a table's rows in
/// memory: the rows' order, the rows gathered in it a few thousand at a
/// time, and the files (compressed), less than the rows themselves, or
/// twice that for a keyed table (its rows sorted by key and deduplicated
/// whole); per column what the Parquet writer keeps until a row group is
/// written (its dictionary and the page it fills, up to a mebibyte each);
/// and per file (one per partition of `partitions`) its entry until the
/// step commits. Measured by sextant-benches' `working` tests.
pub(crate) fn encoding_bytes(def: &TableDef, bytes: usize, partitions: usize) -> usize {
    let rows = if def.options.key.is_some() { 2 } else { 1 };
    bytes
        .saturating_mul(rows)
        .saturating_add(def.schema.fields().len() * PER_COLUMN_BYTES)
        .saturating_add(partitions.saturating_mul(PER_FILE_BYTES))
}

/// What a persistence step holds per file it writes until it commits
/// them: the file's catalog entry (path, times, its columns' smallest and
/// largest values as text, about 3.5 KB for 21 columns), the text of it the
/// catalog stores, and the writer's buffers of a small file.
const PER_FILE_BYTES: usize = 8 << 10;

/// The Parquet writer's dictionary page and data page limits (its
/// defaults, a mebibyte each), per column.
const PER_COLUMN_BYTES: usize = 2 << 20;

/// [`encode_partitions`] of a table's rows: its schema, time column,
/// partition width and key.
pub(crate) fn encode_table(
    def: &TableDef,
    batches: &[RecordBatch],
    row_group_rows: usize,
    sink: &mut dyn FnMut(EncodedFile) -> Result<()>,
) -> Result<()> {
    encode_partitions(
        &def.schema,
        batches,
        &def.time_column,
        def.options.partition_duration.as_nanos() as i64,
        row_group_rows,
        KeyOrder::of(def, &def.schema)?.as_ref(),
        &def.options.token_index,
        sink,
    )
}

/// The files an encoder (given its sink) makes, all of them.
pub(crate) fn collect_files(
    encode: impl FnOnce(&mut dyn FnMut(EncodedFile) -> Result<()>) -> Result<()>,
) -> Result<Vec<EncodedFile>> {
    let mut files = vec![];
    encode(&mut |f| {
        files.push(f);
        Ok(())
    })?;
    Ok(files)
}

/// The most time partitions one buffer chunk covers, and about the most
/// one persistence step writes files for (it takes no more chunks once
/// its rows cover this many): what a step holds for each file until its
/// commit (the file's entry, with its columns' statistics) stays bounded,
/// whatever the rows' times. A write covering more is split into several
/// WAL records ([`split_by_partitions`]).
pub(crate) const MAX_PIECE_PARTITIONS: usize = 512;

/// Adds to `set` the partitions (start times) `chunk`'s rows cover: every
/// partition from its first time to its last when they are few, else
/// exactly those its rows fall in.
pub(crate) fn add_partitions(chunk: &Chunk, def: &TableDef, set: &mut HashSet<i64>) {
    let width = partition_width(def);
    let (first, last) = (
        partition_start(chunk.min_time_ns, width),
        partition_start(chunk.max_time_ns, width),
    );
    let span = (last as i128 - first as i128) / width as i128;
    if span < MAX_PIECE_PARTITIONS as i128 {
        set.extend((0..=span as i64).map(|i| first + i * width));
        return;
    }
    match crate::state::time_array(&chunk.batch, def) {
        Ok(times) => set.extend(times.values().iter().map(|&t| partition_start(t, width))),
        Err(_) => set.extend([first, last]),
    }
}

/// `batch` in pieces whose rows each cover at most
/// [`MAX_PIECE_PARTITIONS`] time partitions: itself if it covers no more,
/// else its rows in time order, cut where a partition starts.
pub(crate) fn split_by_partitions(batch: RecordBatch, def: &TableDef) -> Result<Vec<RecordBatch>> {
    let width = partition_width(def);
    let times = crate::state::time_array(&batch, def)?;
    let (Some(min), Some(max)) = (arrow::compute::min(times), arrow::compute::max(times)) else {
        return Ok(vec![batch]);
    };
    let span =
        (partition_start(max, width) as i128 - partition_start(min, width) as i128) / width as i128;
    if span < MAX_PIECE_PARTITIONS as i128 {
        return Ok(vec![batch]);
    }
    let order = sort_to_indices(times, None, None)?;
    let sorted = arrow::compute::take_record_batch(&batch, &order)?;
    drop(batch);
    let times = crate::state::time_array(&sorted, def)?.values();
    let mut pieces = vec![];
    let (mut start, mut partitions, mut current) = (0, 0, None);
    for (row, &t) in times.iter().enumerate() {
        let p = partition_start(t, width);
        if current == Some(p) {
            continue;
        }
        current = Some(p);
        if partitions == MAX_PIECE_PARTITIONS {
            pieces.push(sorted.slice(start, row - start));
            (start, partitions) = (row, 0);
        }
        partitions += 1;
    }
    pieces.push(sorted.slice(start, times.len() - start));
    Ok(pieces)
}

fn partition_width(def: &TableDef) -> i64 {
    (def.options.partition_duration.as_nanos() as i64).max(1)
}

/// Start of the partition holding `t` (the earliest time there is, for
/// the partition that would start before it).
pub(crate) fn partition_start(t: i64, partition_ns: i64) -> i64 {
    t.div_euclid(partition_ns).saturating_mul(partition_ns)
}

pub(crate) fn time_values(col: &ArrayRef) -> Result<&TimestampNanosecondArray> {
    col.as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .ok_or_else(|| StorageError::Encoding(format!("time column is {}", col.data_type())))
}

/// Whether a column gets a bloom filter: text or binary ids (`trace_id`,
/// `span_id`, `request_id`, `id`), looked up by equality, whose random
/// values min/max statistics cannot prune.
pub(crate) fn is_id_column(name: &str, dt: &DataType) -> bool {
    let name = name.to_ascii_lowercase();
    (name == "id" || name.ends_with("_id"))
        && matches!(
            dt,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::FixedSizeBinary(_)
        )
}

/// One Parquet file written a row group at a time, keeping each column's
/// null count and its smallest and largest values for the catalog.
pub(crate) struct FileWriter {
    writer: ArrowWriter<Vec<u8>>,
    schema: SchemaRef,
    rows: u64,
    columns: Vec<ColumnBounds>,
    /// The token index of the columns meant for search, if any.
    tokens: Option<crate::tokens::IndexBuilder>,
}

/// A column's null count, and its smallest and largest values so far (one
/// row each, copied out of the batches written, which are not kept).
#[derive(Default)]
struct ColumnBounds {
    null_count: u64,
    min: Option<ArrayRef>,
    max: Option<ArrayRef>,
}

impl ColumnBounds {
    fn add(&mut self, col: &ArrayRef) -> Result<()> {
        self.null_count += col.null_count() as u64;
        if orderable(col.data_type()) && col.null_count() < col.len() {
            let (lo, hi) = min_max(col)?;
            self.min = Some(extreme(self.min.take(), col, lo, |(lo, _)| lo)?);
            self.max = Some(extreme(self.max.take(), col, hi, |(_, hi)| hi)?);
        }
        Ok(())
    }
}

/// Row `i` of `col` copied out, or the smaller or larger (`pick`) of it and
/// `so_far`.
fn extreme(
    so_far: Option<ArrayRef>,
    col: &ArrayRef,
    i: usize,
    pick: fn((usize, usize)) -> usize,
) -> Result<ArrayRef> {
    let row = take(col, &UInt32Array::from(vec![i as u32]), None)?;
    let Some(so_far) = so_far else {
        return Ok(row);
    };
    let both = concat(&[so_far.as_ref(), row.as_ref()])?;
    let i = pick(min_max(&both)?);
    Ok(take(&both, &UInt32Array::from(vec![i as u32]), None)?)
}

impl FileWriter {
    /// A writer for a file of `rows` rows (which sizes the bloom filters),
    /// with a token index of the columns `index` names.
    pub(crate) fn new(
        schema: &SchemaRef,
        index: &TokenIndex,
        rows: usize,
        row_group_rows: usize,
    ) -> Result<Self> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_created_by(format!("sextant {}", env!("CARGO_PKG_VERSION")));
        let ndv = rows.clamp(1, row_group_rows) as u64;
        for field in schema.fields() {
            let col = ColumnPath::from(field.name().as_str());
            // Timestamps, sorted or nearly (the time column, an end or an
            // observed time beside it), as deltas: a dictionary of values
            // that are almost all distinct costs more than the values.
            if matches!(field.data_type(), DataType::Timestamp(_, _)) {
                props = props
                    .set_column_dictionary_enabled(col.clone(), false)
                    .set_column_encoding(col.clone(), Encoding::DELTA_BINARY_PACKED);
            }
            if is_id_column(field.name(), field.data_type()) {
                props = props
                    .set_column_bloom_filter_enabled(col.clone(), true)
                    .set_column_bloom_filter_fpp(col.clone(), 0.01)
                    .set_column_bloom_filter_max_ndv(col.clone(), ndv);
                // Random ids, as text: the lengths apart from the bytes,
                // which zstd then packs to near their entropy (hex to
                // about half); a dictionary of them only adds its indexes.
                if crate::engine::is_text(field.data_type()) {
                    props = props
                        .set_column_dictionary_enabled(col.clone(), false)
                        .set_column_encoding(col, Encoding::DELTA_LENGTH_BYTE_ARRAY);
                }
            }
        }
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props.build()))?;
        Ok(Self {
            writer,
            schema: schema.clone(),
            tokens: crate::tokens::IndexBuilder::new(schema, index, rows, row_group_rows),
            rows: 0,
            columns: schema
                .fields()
                .iter()
                .map(|_| ColumnBounds::default())
                .collect(),
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        for (col, bounds) in batch.columns().iter().zip(&mut self.columns) {
            bounds.add(col)?;
        }
        self.rows += batch.num_rows() as u64;
        if let Some(tokens) = &mut self.tokens {
            tokens.add(batch);
        }
        self.writer.write(batch)?;
        Ok(())
    }

    /// The rows written, each column's statistics (as strings that
    /// `ScalarValue::try_from_string` turns back into typed values for
    /// pruning; types without an order have none), and the file.
    pub(crate) fn finish(mut self) -> Result<(u64, BTreeMap<String, ColumnStats>, Vec<u8>)> {
        if let Some(tokens) = self.tokens.take() {
            // The last row group is written first, to know them all.
            self.writer.flush()?;
            let groups: Vec<usize> = self
                .writer
                .flushed_row_groups()
                .iter()
                .map(|g| g.num_rows() as usize)
                .collect();
            if let Some(kv) = tokens.finish(&groups) {
                self.writer.append_key_value_metadata(kv);
            }
        }
        let mut stats = BTreeMap::new();
        for (field, bounds) in self.schema.fields().iter().zip(self.columns) {
            let mut s = ColumnStats {
                null_count: bounds.null_count,
                ..Default::default()
            };
            if let (Some(min), Some(max)) = (bounds.min, bounds.max) {
                s.min = Some(format_value(&min)?.into());
                s.max = Some(format_value(&max)?.into());
            }
            stats.insert(field.name().clone(), s);
        }
        let bytes = self.writer.into_inner()?;
        Ok((self.rows, stats, bytes))
    }
}

fn orderable(dt: &DataType) -> bool {
    dt.is_numeric()
        || dt.is_temporal()
        || matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Boolean)
}

/// The positions of the smallest and largest non-null values of `col`,
/// which holds at least one.
fn min_max(col: &ArrayRef) -> Result<(usize, usize)> {
    let order = sort_to_indices(
        col,
        Some(SortOptions {
            descending: false,
            nulls_first: false,
        }),
        None,
    )?;
    let non_null = col.len() - col.null_count();
    // NaN sorts above every number, as it does in DataFusion's comparisons,
    // so a NaN maximum never prunes a file that holds a match.
    Ok((order.value(0) as usize, order.value(non_null - 1) as usize))
}

/// The value of a one-row array, as text.
fn format_value(row: &ArrayRef) -> Result<String> {
    let fmt = ArrayFormatter::try_new(row.as_ref(), &FormatOptions::default())?;
    Ok(fmt.value(0).to_string())
}

/// The rows of one Parquet object, conformed to `schema`. CPU-bound.
pub(crate) fn decode(bytes: bytes::Bytes, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    reader.map(|b| conform(&b?, schema)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::sync::Arc;

    /// Timestamps are written as deltas and text ids without a dictionary
    /// (lengths apart from bytes); other text keeps its dictionary; what
    /// is read back is what was written.
    #[test]
    fn timestamps_are_deltas_and_text_ids_have_no_dictionary() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("trace_id", DataType::Utf8, true),
            Field::new("service_name", DataType::Utf8, true),
        ]));
        let n = 5000;
        let times = TimestampNanosecondArray::from_iter_values((0..n).map(|i| i * 1_000_003))
            .with_timezone("UTC");
        let ids: StringArray = (0..n)
            .map(|i| {
                Some(format!(
                    "{:032x}",
                    (i as u128).wrapping_mul(0x9e3779b97f4a7c15)
                ))
            })
            .collect();
        let services: StringArray = (0..n).map(|i| Some(format!("svc-{}", i % 7))).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(times), Arc::new(ids), Arc::new(services)],
        )
        .unwrap();
        let mut files = vec![];
        encode_partitions(
            &schema,
            std::slice::from_ref(&batch),
            "time",
            i64::MAX,
            1 << 20,
            None,
            &TokenIndex::Auto,
            &mut |f| {
                files.push(f);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        let bytes = bytes::Bytes::from(files.remove(0).bytes);
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let rg = reader.metadata().row_group(0);
        let column = |name: &str| {
            (0..rg.num_columns())
                .map(|i| rg.column(i))
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        let time = column("time");
        assert!(time.encodings().any(|e| e == Encoding::DELTA_BINARY_PACKED));
        assert!(time.dictionary_page_offset().is_none());
        let id = column("trace_id");
        assert!(
            id.encodings()
                .any(|e| e == Encoding::DELTA_LENGTH_BYTE_ARRAY)
        );
        assert!(id.dictionary_page_offset().is_none());
        assert!(column("service_name").dictionary_page_offset().is_some());
        let back = decode(bytes, &schema).unwrap();
        let back = arrow::compute::concat_batches(&schema, &back).unwrap();
        assert_eq!(back, batch);
    }
}
