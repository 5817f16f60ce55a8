//! The registry of nodes: each node's row (modes, addresses, start), its
//! heartbeat, and whether it stopped cleanly; and the leases through which
//! one node at a time runs each singleton job.

use crate::db::{Tx, params};
use crate::{CatalogError, Lease, NodeInfo, Result};

pub(super) fn register_node(tx: &mut dyn Tx, node: &NodeInfo) -> Result<()> {
    tx.execute(
        "INSERT INTO nodes (id, modes, addresses, started_at_ns, last_heartbeat_ns, stopped) \
         VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (id) DO UPDATE SET \
         modes = excluded.modes, addresses = excluded.addresses, \
         started_at_ns = excluded.started_at_ns, last_heartbeat_ns = excluded.last_heartbeat_ns, \
         stopped = 0",
        params![
            &node.id,
            &node.modes,
            &node.addresses,
            node.started_at_ns,
            node.last_heartbeat_ns
        ],
    )?;
    Ok(())
}

/// Sets the node's heartbeat, and whether it `stopped`.
pub(super) fn beat(tx: &mut dyn Tx, id: &str, now_ns: i64, stopped: bool) -> Result<()> {
    let n = tx.execute(
        "UPDATE nodes SET last_heartbeat_ns = $2, stopped = $3 WHERE id = $1",
        params![id, now_ns, i64::from(stopped)],
    )?;
    if n == 0 {
        return Err(CatalogError::Corrupt(format!(
            "node \"{id}\" is not registered"
        )));
    }
    Ok(())
}

pub(super) fn nodes(tx: &mut dyn Tx) -> Result<Vec<NodeInfo>> {
    tx.query(
        "SELECT id, modes, addresses, started_at_ns, last_heartbeat_ns, stopped \
         FROM nodes ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(NodeInfo {
            id: r.text(0)?,
            modes: r.text(1)?,
            addresses: r.text(2)?,
            started_at_ns: r.int(3)?,
            last_heartbeat_ns: r.int(4)?,
            stopped: r.int(5)? != 0,
        })
    })
    .collect()
}

/// Takes or renews the lease `name` for `holder` until `now_ns + ttl_ns`:
/// free, expired or already `holder`'s. Whether `holder` holds it now.
/// Fails unless `holder` holds the lease `job` at `now_ns` (read in the
/// transaction of the commit it guards).
pub(super) fn check_lease(tx: &mut dyn Tx, job: &str, holder: &str, now_ns: i64) -> Result<()> {
    let current = tx.query_opt(
        "SELECT holder, expires_at_ns FROM leases WHERE name = $1",
        params![job],
    )?;
    let who = match current {
        Some(row) => {
            let (who, until) = (row.text(0)?, row.int(1)?);
            if who == holder && until >= now_ns {
                return Ok(());
            }
            if until >= now_ns {
                format!("node {who}")
            } else {
                "no node".to_string()
            }
        }
        None => "no node".to_string(),
    };
    Err(CatalogError::LeaseNotHeld {
        job: job.to_string(),
        holder: who,
    })
}

pub(super) fn hold_lease(
    tx: &mut dyn Tx,
    name: &str,
    holder: &str,
    now_ns: i64,
    ttl_ns: i64,
) -> Result<bool> {
    let expires = now_ns.saturating_add(ttl_ns);
    let current = tx.query_opt(
        "SELECT holder, expires_at_ns FROM leases WHERE name = $1",
        params![name],
    )?;
    match current {
        None => {
            tx.execute(
                "INSERT INTO leases (name, holder, acquired_at_ns, expires_at_ns) VALUES ($1, $2, $3, $4)",
                params![name, holder, now_ns, expires],
            )?;
            Ok(true)
        }
        Some(row) if row.text(0)? == holder => {
            tx.execute(
                "UPDATE leases SET expires_at_ns = $2 WHERE name = $1",
                params![name, expires],
            )?;
            Ok(true)
        }
        Some(row) if row.int(1)? < now_ns => {
            tx.execute(
                "UPDATE leases SET holder = $2, acquired_at_ns = $3, expires_at_ns = $4 WHERE name = $1",
                params![name, holder, now_ns, expires],
            )?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

pub(super) fn leases(tx: &mut dyn Tx) -> Result<Vec<Lease>> {
    tx.query(
        "SELECT name, holder, acquired_at_ns, expires_at_ns FROM leases ORDER BY name",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(Lease {
            name: r.text(0)?,
            holder: r.text(1)?,
            acquired_at_ns: r.int(2)?,
            expires_at_ns: r.int(3)?,
        })
    })
    .collect()
}
