//! The write path every ingest protocol ends in (line protocol, JSON,
//! remote write, OTLP over HTTP and gRPC, the server's own telemetry):
//! tables and columns made on first sight, then one WAL sync for all the
//! request's batches.

use arrow::array::RecordBatch;
use sextant_catalog::TableOptions;
use sextant_storage::{Engine, StorageError};

/// Creates missing tables and columns, then writes every batch. The writes
/// are issued together so that one WAL sync covers them all; the call
/// returns once all are durable. Returns the number of rows written.
pub(crate) async fn write_batches(
    engine: &Engine,
    batches: Vec<(String, RecordBatch)>,
    protocol: &'static str,
) -> Result<usize, StorageError> {
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
                    .ensure_columns(table, batch.schema_ref(), TableOptions::default())
                    .await?;
            }
            let writes = batches
                .into_iter()
                .map(|(table, batch)| async move { (engine.write(&table, batch).await, table) });
            let mut written = 0;
            let rows = &sextant_metrics::metrics().ingest_rows;
            for (r, table) in futures::future::join_all(writes).await {
                let n = r?;
                rows.with_label_values(&[protocol, &table]).inc_by(n);
                written += n as usize;
            }
            Ok(written)
        },
        span,
    )
    .await
}
