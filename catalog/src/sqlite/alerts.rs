//! Alert rules, their events (the newest [`ALERT_EVENTS_KEPT`]) and the
//! outbox of notifications to deliver: a rule's evaluation commits its
//! state, events and deliveries together; a delivery is finished (or
//! rescheduled) with the event that records it.

use rusqlite::params;

use super::SqliteCatalog;
use crate::{AlertEvent, CatalogError, Delivery, Result, StoredAlert};

/// How many alert events the catalog keeps (the oldest go first).
pub(super) const ALERT_EVENTS_KEPT: i64 = 100_000;

/// Appends alert events, dropping the oldest beyond [`ALERT_EVENTS_KEPT`].
pub(super) fn insert_alert_events(
    tx: &rusqlite::Transaction<'_>,
    events: &[AlertEvent],
) -> Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO alert_events (alert, time_ns, body) VALUES (?1, ?2, ?3)")?;
    for e in events {
        stmt.execute(params![e.alert, e.time_ns, e.body])?;
    }
    if !events.is_empty() {
        tx.execute(
            "DELETE FROM alert_events WHERE id <= (SELECT max(id) FROM alert_events) - ?1",
            [ALERT_EVENTS_KEPT],
        )?;
    }
    Ok(())
}

pub(super) fn create_alert(cat: &SqliteCatalog, alert: &StoredAlert) -> Result<()> {
    let conn = cat.conn();
    let n = conn.execute(
        "INSERT INTO alerts (name, definition, state, created_at_ns) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO NOTHING",
        params![
            alert.name,
            alert.definition,
            alert.state,
            alert.created_at_ns
        ],
    )?;
    if n == 0 {
        return Err(CatalogError::AlertExists(alert.name.clone()));
    }
    Ok(())
}

pub(super) fn drop_alert(cat: &SqliteCatalog, name: &str) -> Result<()> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    if tx.execute("DELETE FROM alerts WHERE name = ?1", [name])? == 0 {
        return Err(CatalogError::AlertNotFound(name.to_string()));
    }
    tx.execute("DELETE FROM alert_outbox WHERE alert = ?1", [name])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn alerts(cat: &SqliteCatalog) -> Result<Vec<StoredAlert>> {
    let conn = cat.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT name, definition, state, created_at_ns FROM alerts ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredAlert {
            name: r.get(0)?,
            definition: r.get(1)?,
            state: r.get(2)?,
            created_at_ns: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn commit_alert(
    cat: &SqliteCatalog,
    name: &str,
    state: &str,
    events: &[AlertEvent],
    deliveries: &[String],
) -> Result<Vec<i64>> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    if tx.execute(
        "UPDATE alerts SET state = ?2 WHERE name = ?1",
        [name, state],
    )? == 0
    {
        return Err(CatalogError::AlertNotFound(name.to_string()));
    }
    insert_alert_events(&tx, events)?;
    let mut ids = Vec::with_capacity(deliveries.len());
    {
        let mut stmt =
            tx.prepare_cached("INSERT INTO alert_outbox (alert, body) VALUES (?1, ?2)")?;
        for body in deliveries {
            stmt.execute([name, body])?;
            ids.push(tx.last_insert_rowid());
        }
    }
    tx.commit()?;
    Ok(ids)
}

pub(super) fn finish_delivery(
    cat: &SqliteCatalog,
    id: i64,
    event: &AlertEvent,
    retry: Option<&str>,
) -> Result<()> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    insert_alert_events(&tx, std::slice::from_ref(event))?;
    match retry {
        Some(body) => tx.execute(
            "UPDATE alert_outbox SET body = ?2 WHERE id = ?1",
            params![id, body],
        )?,
        None => tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [id])?,
    };
    tx.commit()?;
    Ok(())
}

pub(super) fn deliveries(cat: &SqliteCatalog) -> Result<Vec<Delivery>> {
    let conn = cat.conn();
    let mut stmt = conn.prepare_cached("SELECT id, alert, body FROM alert_outbox ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Delivery {
            id: r.get(0)?,
            alert: r.get(1)?,
            body: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn alert_events(cat: &SqliteCatalog, limit: usize) -> Result<Vec<AlertEvent>> {
    let conn = cat.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT alert, time_ns, body FROM \
         (SELECT id, alert, time_ns, body FROM alert_events ORDER BY id DESC LIMIT ?1) \
         ORDER BY id",
    )?;
    let rows = stmt.query_map(params![limit as i64], |r| {
        Ok(AlertEvent {
            alert: r.get(0)?,
            time_ns: r.get(1)?,
            body: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}
