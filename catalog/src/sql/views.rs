//! Materialized views: a view is a table row plus a `views` row (its query,
//! spec and refresh progress); committed files invalidate the view buckets
//! they touch, and a refresh commits a bucket's new files, clears its
//! invalidation and records progress in one transaction. Plain views are
//! a `plain_views` row each (name, query, columns).

use super::tables::{decode_schema, delete_files, encode_schema, insert_files, insert_table};
use super::{from_json, to_json};
use crate::db::{Row, Tx, params};
use crate::{
    CatalogError, Invalidation, NewTable, NewView, PlainView, Refresh, Result, TableDef, ViewDef,
    ViewProgress, ViewSpec,
};

/// Records invalidations; a bucket a node already invalidated keeps the
/// newer of its generations.
pub(super) fn insert_invalidations(tx: &mut dyn Tx, inv: &[Invalidation]) -> Result<()> {
    for i in inv {
        tx.execute(
            "INSERT INTO invalidations (view_id, node_id, bucket_ns, generation) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (view_id, node_id, bucket_ns) DO UPDATE SET generation = \
             CASE WHEN invalidations.generation > excluded.generation \
             THEN invalidations.generation ELSE excluded.generation END",
            params![i.view_id, &i.node, i.bucket_ns, i.generation],
        )?;
    }
    Ok(())
}

/// The invalidations of a catalog from before nodes (node `''`) become
/// the first node's, as its positions do.
pub(super) fn adopt_invalidations(tx: &mut dyn Tx, node: &str) -> Result<()> {
    tx.execute(
        "UPDATE invalidations SET node_id = $1 WHERE node_id = '' \
         AND NOT EXISTS (SELECT 1 FROM invalidations i WHERE i.node_id = $1)",
        params![node],
    )?;
    Ok(())
}

fn read_invalidation(r: &Row) -> Result<Invalidation> {
    Ok(Invalidation {
        view_id: r.int(0)?,
        node: r.text(1)?,
        bucket_ns: r.int(2)?,
        generation: r.uint(3)?,
    })
}

const VIEW_QUERY: &str = "SELECT v.table_id, t.name, v.base_table_id, coalesce(b.name, ''), \
     v.query, v.spec, v.progress FROM views v JOIN tables t ON t.id = v.table_id \
     LEFT JOIN tables b ON b.id = v.base_table_id";

fn read_view(row: &Row) -> Result<ViewDef> {
    let name = row.text(1)?;
    Ok(ViewDef {
        spec: from_json::<ViewSpec>(&row.text(5)?, &format!("view {name}"))?,
        progress: from_json::<ViewProgress>(&row.text(6)?, &format!("view {name}"))?,
        table_id: row.int(0)?,
        base_table_id: row.int(2)?,
        base_table: row.text(3)?,
        query: row.text(4)?,
        name,
    })
}

pub(super) fn create_view(
    tx: &mut dyn Tx,
    node: &str,
    table: &NewTable,
    view: &NewView,
    now: i64,
) -> Result<(TableDef, ViewDef)> {
    let def = insert_table(tx, node, table, now)?;
    tx.execute(
        "INSERT INTO views (table_id, base_table_id, query, spec, progress) \
         VALUES ($1, $2, $3, $4, $5)",
        params![
            def.id,
            view.base_table_id,
            &view.query,
            to_json(&view.spec)?,
            to_json(&view.progress)?
        ],
    )?;
    let row = tx
        .query_opt(
            &format!("{VIEW_QUERY} WHERE v.table_id = $1"),
            params![def.id],
        )?
        .ok_or_else(|| CatalogError::TableNotFound(table.name.clone()))?;
    let vdef = read_view(&row)?;
    Ok((def, vdef))
}

pub(super) fn views(tx: &mut dyn Tx) -> Result<Vec<ViewDef>> {
    tx.query(&format!("{VIEW_QUERY} ORDER BY t.name"), &[])?
        .iter()
        .map(read_view)
        .collect()
}

pub(super) fn invalidations(tx: &mut dyn Tx) -> Result<Vec<Invalidation>> {
    tx.query(
        "SELECT view_id, node_id, bucket_ns, generation FROM invalidations \
         ORDER BY view_id, bucket_ns, node_id",
        &[],
    )?
    .iter()
    .map(read_invalidation)
    .collect()
}

pub(super) fn view_invalidations(
    tx: &mut dyn Tx,
    view_id: i64,
    limit: usize,
) -> Result<Vec<Invalidation>> {
    tx.query(
        "SELECT view_id, node_id, bucket_ns, generation FROM invalidations \
         WHERE view_id = $1 ORDER BY bucket_ns, node_id LIMIT $2",
        params![view_id, limit.min(i64::MAX as usize) as i64],
    )?
    .iter()
    .map(read_invalidation)
    .collect()
}

pub(super) fn set_view_progress(
    tx: &mut dyn Tx,
    view_id: i64,
    progress: &ViewProgress,
) -> Result<()> {
    let n = tx.execute(
        "UPDATE views SET progress = $1 WHERE table_id = $2",
        params![to_json(progress)?, view_id],
    )?;
    if n == 0 {
        return Err(CatalogError::TableNotFound(format!("view id {view_id}")));
    }
    Ok(())
}

pub(super) fn commit_refresh(tx: &mut dyn Tx, r: &Refresh<'_>, now: i64) -> Result<Vec<i64>> {
    if let Some((job, holder)) = r.lease {
        super::nodes::check_lease(tx, job, holder, now)?;
    }
    delete_files(tx, r.view_id, r.remove)?;
    let added = insert_files(tx, r.view_id, &r.add, now)?;
    for d in r.done {
        tx.execute(
            "DELETE FROM invalidations WHERE view_id = $1 AND node_id = $2 \
             AND bucket_ns = $3 AND generation <= $4",
            params![r.view_id, &d.node, d.bucket_ns, d.generation],
        )?;
    }
    insert_invalidations(tx, r.invalidate)?;
    if let Some(p) = r.progress {
        set_view_progress(tx, r.view_id, p)?;
    }
    Ok(added)
}

pub(super) fn create_plain_view(tx: &mut dyn Tx, view: &PlainView, replace: bool) -> Result<()> {
    let tables = tx.query_int(
        "SELECT count(*) FROM tables WHERE name = $1",
        params![&view.name],
    )?;
    if tables > 0 {
        return Err(CatalogError::RelationExists(view.name.clone()));
    }
    let sql = if replace {
        "INSERT INTO plain_views (name, query, columns, created_at_ns) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET query = excluded.query, columns = excluded.columns"
    } else {
        "INSERT INTO plain_views (name, query, columns, created_at_ns) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING"
    };
    let n = tx.execute(
        sql,
        params![
            &view.name,
            &view.query,
            encode_schema(&view.columns)?,
            view.created_at_ns
        ],
    )?;
    if n == 0 {
        return Err(CatalogError::RelationExists(view.name.clone()));
    }
    Ok(())
}

pub(super) fn plain_views(tx: &mut dyn Tx) -> Result<Vec<PlainView>> {
    tx.query(
        "SELECT name, query, columns, created_at_ns FROM plain_views ORDER BY name",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(PlainView {
            name: r.text(0)?,
            query: r.text(1)?,
            columns: decode_schema(&r.text(2)?)?,
            created_at_ns: r.int(3)?,
        })
    })
    .collect()
}
