//! The write path every ingest protocol ends in (line protocol, JSON,
//! remote write, OTLP over HTTP and gRPC, the server's own telemetry):
//! tables and columns made on first sight, rows older than their table's
//! retention dropped and counted (each protocol says so in its own way),
//! then one WAL sync for all the request's batches.

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use sextant_catalog::{Merge, TableKey, TableOptions};
use sextant_storage::{Engine, StorageError};

/// What a write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    /// Rows written, durable.
    pub(crate) rows: usize,
    /// Rows older than their table's retention: dropped, as a query would
    /// never see them (InfluxDB's "points beyond retention policy").
    pub(crate) beyond_retention: usize,
}

impl Written {
    /// How a client is told of the rows beyond retention, in InfluxDB's
    /// words; `None` when there were none.
    pub(crate) fn retention_message(&self) -> Option<String> {
        (self.beyond_retention > 0).then(|| {
            format!(
                "partial write: points beyond retention policy dropped={}",
                self.beyond_retention
            )
        })
    }
}

/// `batch` without the rows older than `table`'s retention, and how many
/// those were.
fn within_retention(
    engine: &Engine,
    table: &str,
    batch: RecordBatch,
) -> Result<(RecordBatch, usize), StorageError> {
    let (Some(def), Some(cutoff)) = (
        engine.table(table),
        engine.retention_cutoff(table, engine.now_ns()),
    ) else {
        return Ok((batch, 0));
    };
    let Some(time) = batch.column_by_name(&def.time_column) else {
        return Ok((batch, 0));
    };
    let time = cast(time, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    let time = time.as_primitive::<TimestampNanosecondType>();
    let keep: BooleanArray = time
        .iter()
        .map(|t| Some(t.is_none_or(|t| t >= cutoff)))
        .collect();
    let dropped = keep.false_count();
    if dropped == 0 {
        return Ok((batch, 0));
    }
    Ok((filter_record_batch(&batch, &keep)?, dropped))
}

/// What a table a protocol creates is like. Line protocol's and remote
/// write's are keyed by their tags (labels) and time, so a retried request
/// changes nothing: a point merges its fields into the stored one, as in
/// InfluxDB; a sample replaces the one of its series and time, as in
/// Prometheus. NDJSON rows and OpenTelemetry records have no natural key
/// (docs/otel-schema.md): append-only.
fn new_table_options(protocol: &str) -> TableOptions {
    let merge = match protocol {
        "line_protocol" => Merge::LastNonNull,
        "prometheus_remote_write" => Merge::LastRow,
        _ => return TableOptions::default(),
    };
    TableOptions {
        key: Some(TableKey {
            columns: vec![],
            tags: true,
            merge,
        }),
        ..TableOptions::default()
    }
}

/// Creates missing tables and columns, drops the rows beyond retention,
/// then writes every batch. The writes are issued together so that one
/// WAL sync covers them all; the call returns once all are durable.
pub(crate) async fn write_batches(
    engine: &Engine,
    batches: Vec<(String, RecordBatch)>,
    protocol: &'static str,
) -> Result<Written, StorageError> {
    let span = tracing::info_span!(
        "ingest",
        protocol,
        tables = batches.len(),
        rows = batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>()
    );
    tracing::Instrument::instrument(
        async move {
            for (table, batch) in &batches {
                engine
                    .ensure_columns(table, batch.schema_ref(), new_table_options(protocol))
                    .await?;
            }
            let mut written = Written::default();
            let mut kept = Vec::with_capacity(batches.len());
            for (table, batch) in batches {
                let (batch, dropped) = within_retention(engine, &table, batch)?;
                written.beyond_retention += dropped;
                if batch.num_rows() > 0 {
                    kept.push((table, batch));
                }
            }
            if written.beyond_retention > 0 {
                sextant_metrics::metrics()
                    .rejected_points
                    .with_label_values(&[protocol, "beyond_retention"])
                    .inc_by(written.beyond_retention as u64);
            }
            let writes = kept
                .into_iter()
                .map(|(table, batch)| async move { (engine.write(&table, batch).await, table) });
            let rows = &sextant_metrics::metrics().ingest_rows;
            for (r, table) in futures::future::join_all(writes).await {
                let n = r?;
                rows.with_label_values(&[protocol, &table]).inc_by(n);
                written.rows += n as usize;
            }
            Ok(written)
        },
        span,
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn ingest_marks_tags_as_the_catalog_reads_them() {
        assert_eq!(
            sextant_ingest::rows::TAG_METADATA,
            sextant_catalog::TAG_METADATA
        );
    }
}
