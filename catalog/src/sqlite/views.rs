//! Materialized views: a view is a table row plus a `views` row (its query,
//! spec and refresh progress); committed files invalidate the view buckets
//! they touch, and a refresh commits a bucket's new files, clears its
//! invalidation and records progress in one transaction. Plain views are
//! a `plain_views` row each (name, query, columns).

use rusqlite::params;

use super::tables::{insert_files, insert_table};
use super::{SqliteCatalog, from_json, to_json};
use crate::{
    CatalogError, Invalidation, NewTable, NewView, ParquetFile, PlainView, Refresh, Result,
    TableDef, ViewDef, ViewProgress, ViewSpec,
};

/// Records invalidations; a bucket already invalid keeps the newer generation.
pub(super) fn insert_invalidations(
    tx: &rusqlite::Transaction<'_>,
    inv: &[Invalidation],
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO invalidations (view_id, bucket_ns, generation) VALUES (?1, ?2, ?3) \
         ON CONFLICT (view_id, bucket_ns) DO UPDATE SET \
         generation = max(generation, excluded.generation)",
    )?;
    for i in inv {
        stmt.execute(params![i.view_id, i.bucket_ns, i.generation as i64])?;
    }
    Ok(())
}

pub(super) const VIEW_QUERY: &str = "SELECT v.table_id, t.name, v.base_table_id, coalesce(b.name, ''), \
     v.query, v.spec, v.progress FROM views v JOIN tables t ON t.id = v.table_id \
     LEFT JOIN tables b ON b.id = v.base_table_id";

pub(super) fn read_view(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ViewDef>> {
    let name: String = row.get(1)?;
    let spec: String = row.get(5)?;
    let progress: String = row.get(6)?;
    let table_id = row.get(0)?;
    let base_table_id = row.get(2)?;
    let base_table = row.get(3)?;
    let query = row.get(4)?;
    Ok((|| {
        Ok(ViewDef {
            spec: from_json::<ViewSpec>(&spec, &format!("view {name}"))?,
            progress: from_json::<ViewProgress>(&progress, &format!("view {name}"))?,
            table_id,
            name,
            base_table_id,
            base_table,
            query,
        })
    })())
}

pub(super) fn create_view(
    cat: &SqliteCatalog,
    table: NewTable,
    view: NewView,
) -> Result<(TableDef, ViewDef)> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    let def = insert_table(&tx, &table, cat.clock.now_ns())?;
    let id = def.id;
    tx.execute(
        "INSERT INTO views (table_id, base_table_id, query, spec, progress) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id,
            view.base_table_id,
            view.query,
            to_json(&view.spec)?,
            to_json(&view.progress)?
        ],
    )?;
    let vdef = tx.query_row(
        &format!("{VIEW_QUERY} WHERE v.table_id = ?1"),
        [id],
        read_view,
    )??;
    tx.commit()?;
    Ok((def, vdef))
}

pub(super) fn views(cat: &SqliteCatalog) -> Result<Vec<ViewDef>> {
    let conn = cat.conn();
    let mut stmt = conn.prepare_cached(&format!("{VIEW_QUERY} ORDER BY t.name"))?;
    let rows = stmt.query_map([], read_view)?;
    rows.map(|r| r?).collect()
}

pub(super) fn invalidations(cat: &SqliteCatalog) -> Result<Vec<Invalidation>> {
    let conn = cat.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT view_id, bucket_ns, generation FROM invalidations ORDER BY view_id, bucket_ns",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Invalidation {
            view_id: r.get(0)?,
            bucket_ns: r.get(1)?,
            generation: r.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn set_view_progress(
    cat: &SqliteCatalog,
    view_id: i64,
    progress: &ViewProgress,
) -> Result<()> {
    let n = cat.conn().execute(
        "UPDATE views SET progress = ?1 WHERE table_id = ?2",
        params![to_json(progress)?, view_id],
    )?;
    if n == 0 {
        return Err(CatalogError::TableNotFound(format!("view id {view_id}")));
    }
    Ok(())
}

pub(super) fn commit_refresh(cat: &SqliteCatalog, r: Refresh<'_>) -> Result<Vec<ParquetFile>> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    for id in r.remove {
        let n = tx.execute(
            "DELETE FROM files WHERE id = ?1 AND table_id = ?2",
            params![id, r.view_id],
        )?;
        if n == 0 {
            return Err(CatalogError::FileNotFound(*id));
        }
    }
    let added = insert_files(&tx, r.view_id, &r.add, cat.clock.now_ns())?;
    {
        let mut clear = tx.prepare_cached(
            "DELETE FROM invalidations WHERE view_id = ?1 AND bucket_ns = ?2 \
             AND generation <= ?3",
        )?;
        for d in r.done {
            clear.execute(params![r.view_id, d.bucket_ns, d.generation as i64])?;
        }
    }
    insert_invalidations(&tx, r.invalidate)?;
    if let Some(p) = r.progress {
        tx.execute(
            "UPDATE views SET progress = ?1 WHERE table_id = ?2",
            params![to_json(p)?, r.view_id],
        )?;
    }
    tx.commit()?;
    Ok(added)
}

pub(super) fn create_plain_view(
    cat: &SqliteCatalog,
    view: &PlainView,
    replace: bool,
) -> Result<()> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    let table: i64 = tx.query_row(
        "SELECT count(*) FROM tables WHERE name = ?1",
        [&view.name],
        |r| r.get(0),
    )?;
    if table > 0 {
        return Err(CatalogError::RelationExists(view.name.clone()));
    }
    let columns = super::tables::encode_schema(&view.columns)?;
    let sql = if replace {
        "INSERT INTO plain_views (name, query, columns, created_at_ns) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET query = excluded.query, columns = excluded.columns"
    } else {
        "INSERT INTO plain_views (name, query, columns, created_at_ns) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO NOTHING"
    };
    let n = tx.execute(
        sql,
        params![view.name, view.query, columns, view.created_at_ns],
    )?;
    if n == 0 {
        return Err(CatalogError::RelationExists(view.name.clone()));
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn drop_plain_view(cat: &SqliteCatalog, name: &str) -> Result<()> {
    if !super::delete_named(cat, "plain_views", name)? {
        return Err(CatalogError::ViewNotFound(name.to_string()));
    }
    Ok(())
}

pub(super) fn plain_views(cat: &SqliteCatalog) -> Result<Vec<PlainView>> {
    let rows = super::named_rows(
        cat,
        "SELECT name, query, columns, created_at_ns FROM plain_views ORDER BY name",
    )?;
    rows.into_iter()
        .map(|(name, query, columns, created_at_ns)| {
            Ok(PlainView {
                name,
                query,
                columns: super::tables::decode_schema(&columns)?,
                created_at_ns,
            })
        })
        .collect()
}
