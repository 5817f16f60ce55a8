//! Buffer chunks → sorted Parquet files, one or more per time partition.
//!
//! Rows are sorted by time, split at partition boundaries, and each piece is
//! encoded as Parquet (zstd, page statistics and page index, bloom filters
//! on id columns) with per-column min/max kept for the catalog so queries
//! can prune files before any I/O, then row groups, then pages.

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sextant_catalog::{ColumnStats, TableDef};
use std::collections::BTreeMap;

use crate::error::{Result, StorageError};
use crate::keys::KeyOrder;
use crate::state::conform;

/// Rows per Parquet row group by default: large enough for efficient
/// scans, small enough that row-group statistics still prune.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 256 * 1024;

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
/// of width `partition_ns`, in row groups of `row_group_rows`. A keyed
/// table's file is sorted by its key instead, one row per key
/// ([`crate::keys`]). CPU-bound: call from a blocking thread.
pub(crate) fn encode_partitions(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    time_col: &str,
    partition_ns: i64,
    row_group_rows: usize,
    key: Option<&KeyOrder>,
) -> Result<Vec<EncodedFile>> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() == 0 {
        return Ok(vec![]);
    }
    let time_idx = schema.index_of(time_col)?;
    let order = sort_to_indices(
        all.column(time_idx),
        Some(SortOptions {
            descending: false,
            nulls_first: false,
        }),
        None,
    )?;
    let sorted = take_record_batch(&all, &order)?;
    let times = time_values(sorted.column(time_idx))?;

    let mut files = vec![];
    let mut start = 0;
    while start < times.len() {
        let partition = partition_start(times.value(start), partition_ns);
        let next = partition.saturating_add(partition_ns);
        // Sorted, so the partition ends at the first time >= next.
        let end = start + times.values()[start..].partition_point(|&t| t < next);
        let mut piece = sorted.slice(start, end - start);
        if let Some(k) = key {
            piece = crate::keys::sort_dedup(&piece, k)?;
        }
        files.push(EncodedFile {
            partition_start_ns: partition,
            min_time_ns: times.value(start),
            max_time_ns: times.value(end - 1),
            rows: piece.num_rows() as u64,
            column_stats: column_stats(&piece)?,
            bytes: write_parquet(&piece, row_group_rows)?,
        });
        start = end;
    }
    Ok(files)
}

/// [`encode_partitions`] of a table's rows: its schema, time column,
/// partition width and key.
pub(crate) fn encode_table(
    def: &TableDef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<Vec<EncodedFile>> {
    encode_partitions(
        &def.schema,
        batches,
        &def.time_column,
        def.options.partition_duration.as_nanos() as i64,
        row_group_rows,
        KeyOrder::of(def, &def.schema)?.as_ref(),
    )
}

/// Start of the partition holding `t`.
pub(crate) fn partition_start(t: i64, partition_ns: i64) -> i64 {
    t.div_euclid(partition_ns) * partition_ns
}

fn time_values(col: &ArrayRef) -> Result<&TimestampNanosecondArray> {
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

fn write_parquet(batch: &RecordBatch, row_group_rows: usize) -> Result<Vec<u8>> {
    let row_group_rows = row_group_rows.max(1);
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by(format!("sextant {}", env!("CARGO_PKG_VERSION")));
    let ndv = batch.num_rows().clamp(1, row_group_rows) as u64;
    for field in batch.schema().fields() {
        if is_id_column(field.name(), field.data_type()) {
            let col = ColumnPath::from(field.name().as_str());
            props = props
                .set_column_bloom_filter_enabled(col.clone(), true)
                .set_column_bloom_filter_fpp(col.clone(), 0.01)
                .set_column_bloom_filter_max_ndv(col, ndv);
        }
    }
    let props = props.build();
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(out)
}

/// Min/max/null count per column, as strings that `ScalarValue::try_from_string`
/// turns back into typed values for pruning. Types without an order are skipped.
fn column_stats(batch: &RecordBatch) -> Result<BTreeMap<String, ColumnStats>> {
    let mut out = BTreeMap::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let mut stats = ColumnStats {
            null_count: col.null_count() as u64,
            ..Default::default()
        };
        if orderable(field.data_type()) && col.null_count() < col.len() {
            let (min, max) = min_max(col)?;
            stats.min = Some(min.into());
            stats.max = Some(max.into());
        }
        out.insert(field.name().clone(), stats);
    }
    Ok(out)
}

fn orderable(dt: &DataType) -> bool {
    dt.is_numeric()
        || dt.is_temporal()
        || matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Boolean)
}

fn min_max(col: &ArrayRef) -> Result<(String, String)> {
    let order = sort_to_indices(
        col,
        Some(SortOptions {
            descending: false,
            nulls_first: false,
        }),
        None,
    )?;
    let non_null = col.len() - col.null_count();
    let (lo, hi) = (order.value(0) as usize, order.value(non_null - 1) as usize);
    // NaN sorts above every number, as it does in DataFusion's comparisons,
    // so a NaN maximum never prunes a file that holds a match.
    let fmt = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?;
    Ok((fmt.value(lo).to_string(), fmt.value(hi).to_string()))
}

/// The rows of one Parquet object, conformed to `schema`. CPU-bound.
pub(crate) fn decode(bytes: bytes::Bytes, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    reader.map(|b| conform(&b?, schema)).collect()
}
