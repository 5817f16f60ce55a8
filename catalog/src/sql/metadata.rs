//! Prometheus metric metadata as stored: one row per metric family, its
//! type, help and unit replaced by each newer report.

use crate::db::{Tx, params};
use crate::{MetricMetadata, Result};

pub(super) fn put(tx: &mut dyn Tx, metadata: &[MetricMetadata], now: i64) -> Result<()> {
    for m in metadata {
        tx.execute(
            "INSERT INTO metric_metadata (metric, kind, help, unit, updated_at_ns) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (metric) DO UPDATE SET kind = excluded.kind, help = excluded.help, \
             unit = excluded.unit, updated_at_ns = excluded.updated_at_ns",
            params![&m.metric, &m.kind, &m.help, &m.unit, now],
        )?;
    }
    Ok(())
}

pub(super) fn all(tx: &mut dyn Tx) -> Result<Vec<MetricMetadata>> {
    tx.query(
        "SELECT metric, kind, help, unit FROM metric_metadata ORDER BY metric",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(MetricMetadata {
            metric: r.text(0)?,
            kind: r.text(1)?,
            help: r.text(2)?,
            unit: r.text(3)?,
        })
    })
    .collect()
}
