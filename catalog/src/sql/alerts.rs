//! Alert rules, their events (the newest [`ALERT_EVENTS_KEPT`]) and the
//! outbox of notifications to deliver: a rule's evaluation commits its
//! state, events and deliveries together; a delivery is finished (or
//! rescheduled) with the event that records it.

use crate::db::{Tx, params};
use crate::{AlertEvent, CatalogError, Delivery, Result, StoredAlert};

/// How many alert events the catalog keeps (the oldest go first).
const ALERT_EVENTS_KEPT: i64 = 100_000;

/// Appends alert events, dropping the oldest beyond [`ALERT_EVENTS_KEPT`].
fn insert_alert_events(tx: &mut dyn Tx, events: &[AlertEvent]) -> Result<()> {
    for e in events {
        tx.execute(
            "INSERT INTO alert_events (alert, time_ns, body) VALUES ($1, $2, $3)",
            params![&e.alert, e.time_ns, &e.body],
        )?;
    }
    if !events.is_empty() {
        tx.execute(
            "DELETE FROM alert_events WHERE id <= (SELECT max(id) FROM alert_events) - $1",
            params![ALERT_EVENTS_KEPT],
        )?;
    }
    Ok(())
}

pub(super) fn create_alert(tx: &mut dyn Tx, alert: &StoredAlert) -> Result<()> {
    let n = tx.execute(
        "INSERT INTO alerts (name, definition, state, created_at_ns) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
        params![
            &alert.name,
            &alert.definition,
            &alert.state,
            alert.created_at_ns
        ],
    )?;
    if n == 0 {
        return Err(CatalogError::AlertExists(alert.name.clone()));
    }
    Ok(())
}

pub(super) fn drop_alert(tx: &mut dyn Tx, name: &str) -> Result<()> {
    if tx.execute("DELETE FROM alerts WHERE name = $1", params![name])? == 0 {
        return Err(CatalogError::AlertNotFound(name.to_string()));
    }
    tx.execute("DELETE FROM alert_outbox WHERE alert = $1", params![name])?;
    Ok(())
}

pub(super) fn alerts(tx: &mut dyn Tx) -> Result<Vec<StoredAlert>> {
    tx.query(
        "SELECT name, definition, state, created_at_ns FROM alerts ORDER BY name",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(StoredAlert {
            name: r.text(0)?,
            definition: r.text(1)?,
            state: r.text(2)?,
            created_at_ns: r.int(3)?,
        })
    })
    .collect()
}

pub(super) fn commit_alert(
    tx: &mut dyn Tx,
    name: &str,
    state: &str,
    events: &[AlertEvent],
    deliveries: &[String],
) -> Result<Vec<i64>> {
    if tx.execute(
        "UPDATE alerts SET state = $2 WHERE name = $1",
        params![name, state],
    )? == 0
    {
        return Err(CatalogError::AlertNotFound(name.to_string()));
    }
    insert_alert_events(tx, events)?;
    deliveries
        .iter()
        .map(|body| {
            tx.query_int(
                "INSERT INTO alert_outbox (alert, body) VALUES ($1, $2) RETURNING id",
                params![name, body],
            )
        })
        .collect()
}

pub(super) fn finish_delivery(
    tx: &mut dyn Tx,
    id: i64,
    event: &AlertEvent,
    retry: Option<&str>,
) -> Result<()> {
    insert_alert_events(tx, std::slice::from_ref(event))?;
    match retry {
        Some(body) => tx.execute(
            "UPDATE alert_outbox SET body = $2 WHERE id = $1",
            params![id, body],
        )?,
        None => tx.execute("DELETE FROM alert_outbox WHERE id = $1", params![id])?,
    };
    Ok(())
}

pub(super) fn deliveries(tx: &mut dyn Tx) -> Result<Vec<Delivery>> {
    tx.query("SELECT id, alert, body FROM alert_outbox ORDER BY id", &[])?
        .iter()
        .map(|r| {
            Ok(Delivery {
                id: r.int(0)?,
                alert: r.text(1)?,
                body: r.text(2)?,
            })
        })
        .collect()
}

pub(super) fn alert_events(tx: &mut dyn Tx, limit: usize) -> Result<Vec<AlertEvent>> {
    tx.query(
        "SELECT alert, time_ns, body FROM \
         (SELECT id, alert, time_ns, body FROM alert_events ORDER BY id DESC LIMIT $1) AS newest \
         ORDER BY id",
        params![limit as i64],
    )?
    .iter()
    .map(|r| {
        Ok(AlertEvent {
            alert: r.text(0)?,
            time_ns: r.int(1)?,
            body: r.text(2)?,
        })
    })
    .collect()
}
