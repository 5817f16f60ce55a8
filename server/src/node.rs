//! This process as a node: its id (`--node-id`, kept in the data directory
//! so that the WAL there and the positions the catalog records for it stay
//! together), its registration in the catalog with its addresses, the
//! heartbeat that says it is alive, and its clean stop. `system.nodes`
//! reads the registry ([`state`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sextant_catalog::{Catalog, NodeInfo};
use sextant_clock::Clock;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{StartError, context};

/// How often a node heartbeats.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// The file in the data directory that keeps the node's id.
const ID_FILE: &str = "node-id";

/// This node's id: the one its data directory keeps; on a new data
/// directory `--node-id`, or a new `node-` + 12 hex digits, then kept.
/// A `--node-id` other than the kept one is refused: the WAL in the
/// directory belongs to the kept id's positions in the catalog.
pub(crate) fn id(flag: Option<&str>, data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join(ID_FILE);
    let kept = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
    };
    match (kept, flag) {
        (Some(kept), Some(flag)) if kept != flag => Err(format!(
            "--node-id {flag}: the data directory {} belongs to node {kept} (its WAL is that \
             node's); start it as {kept}, or give node {flag} a data directory of its own",
            data_dir.display()
        )
        .into()),
        (Some(kept), _) => Ok(kept),
        (None, flag) => {
            let id = match flag {
                Some(flag) => flag.to_string(),
                None => format!("node-{:012x}", rand::random::<u64>() >> 16),
            };
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "--node-id {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
                )
                .into());
            }
            context(
                crate::write_durably(&path, format!("{id}\n").as_bytes()),
                || format!("cannot write {}", path.display()),
            )?;
            Ok(id)
        }
    }
}

/// Registers the node with its listeners' addresses, then heartbeats every
/// [`HEARTBEAT`] until `shutdown`. The returned task records the clean stop.
pub(crate) fn register(
    catalog: Arc<dyn Catalog>,
    clock: Clock,
    id: String,
    modes: String,
    addresses: serde_json::Value,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let now = clock.now_ns();
    context(
        catalog.register_node(&NodeInfo {
            id: id.clone(),
            modes,
            addresses: addresses.to_string(),
            started_at_ns: now,
            last_heartbeat_ns: now,
            stopped: false,
        }),
        || format!("cannot register node {id} in the catalog"),
    )?;
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(e) = catalog.heartbeat(&id, clock.now_ns()) {
                        warn!(node = %id, error = %e, "heartbeat not recorded in the catalog");
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        if let Err(e) = catalog.stop_node(&id, clock.now_ns()) {
            warn!(node = %id, error = %e, "clean stop not recorded in the catalog");
        }
    }))
}
