//! Following a catalog that other nodes change too (PostgreSQL): when the
//! catalog says another node committed something, [`Engine::sync_catalog`]
//! reads it again and takes in tables created, altered or dropped
//! elsewhere, the files other nodes persisted, compacted or expired, and
//! plain and materialized views. This node's buffered rows and its WAL
//! positions stay as they are. A materialized view is refreshed by the
//! node holding the `views` lease; every node marks the buckets its own
//! writes invalidate and publishes them in the catalog for that node
//! ([`Engine::publish_invalidations`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sextant_catalog::TableDef;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Result;
use crate::state::{Engine, TableState};

/// How often the catalog is read again without a notification, in case
/// one was missed.
const POLL: Duration = Duration::from_secs(10);

impl Engine {
    /// Takes in what other nodes changed in the catalog; see the module.
    pub async fn sync_catalog(&self) -> Result<()> {
        // A read this node's own commits overtook is read again.
        for _ in 0..3 {
            if !self.sync_once().await? {
                break;
            }
        }
        self.take_in_deletes().await?;
        Ok(())
    }

    /// One read of the catalog, taken in; whether it was stale for a table
    /// (this node committed files of it meanwhile).
    async fn sync_once(&self) -> Result<bool> {
        let _ddl = self.inner.ddl.lock().await;
        // This node's own commits from here on make what is read stale for
        // their tables (the read may come before them, its taking in
        // after).
        let commits: BTreeMap<i64, u64> = self
            .states()
            .iter()
            .map(|s| (s.def().id, s.data().local_commits))
            .collect();
        let (tables, mut files, views, plain_views) = self
            .in_catalog(|catalog| {
                Ok((
                    catalog.tables()?,
                    catalog.all_files_and_positions()?,
                    catalog.views()?,
                    catalog.plain_views()?,
                ))
            })
            .await?;
        let (mut seen, mut stale) = (BTreeSet::new(), false);
        for def in tables {
            let (files, positions) = files.remove(&def.id).unwrap_or_default();
            // Versions here go above the other nodes' (a hybrid clock).
            for v in files.iter().filter_map(|f| crate::keys::newest_in(&f.file)) {
                self.inner.versions.observe(v);
            }
            seen.insert(def.name.clone());
            match self.state(&def.name) {
                Some(state) if state.def().id == def.id => {
                    let seen = commits.get(&def.id).copied();
                    stale |= !self.take_in(&state, def, files, positions, seen).await;
                }
                other => {
                    if let Some(old) = other {
                        self.forget(&old);
                    }
                    info!(table = %def.name, id = def.id, "table created by another node");
                    self.put_table(TableState::new(def, files, positions));
                }
            }
        }
        let gone: Vec<Arc<TableState>> = {
            let tables = self.inner.tables.read().unwrap_or_else(|e| e.into_inner());
            tables
                .iter()
                .filter(|(name, _)| !seen.contains(*name))
                .map(|(_, state)| state.clone())
                .collect()
        };
        for state in gone {
            info!(table = %state.def().name, "table dropped by another node");
            self.forget(&state);
        }
        // Materialized views: new ones attached (their tables are in by
        // now), known ones with the progress their refresher recorded.
        for view in views {
            match self.view_state(&view.name) {
                Some(known) if known.def().table_id == view.table_id => {
                    known
                        .def
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .progress = view.progress;
                }
                _ => {
                    let name = view.name.clone();
                    match self.attach_view(view, BTreeMap::new()) {
                        Ok(()) => {
                            info!(view = %name, "materialized view created by another node");
                            self.invalidate_buffered(&name);
                        }
                        Err(e) => warn!(view = %name, error = %e, "materialized view not taken in"),
                    }
                }
            }
        }
        *self
            .inner
            .plain_views
            .write()
            .unwrap_or_else(|e| e.into_inner()) = plain_views
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        Ok(stale)
    }

    /// A table this node knows, as the catalog has it now: its schema and
    /// options, and exactly the catalog's files (under the locks this node's
    /// own persistence and compaction take while they commit) unless this
    /// node committed files of it since the read (`commits` is how many it
    /// had before): then the read is stale (false) and is not taken (the
    /// positions go with the files they were read with).
    async fn take_in(
        &self,
        state: &TableState,
        def: TableDef,
        files: Vec<sextant_catalog::ParquetFile>,
        positions: BTreeMap<String, u64>,
        commits: Option<u64>,
    ) -> bool {
        let _persisting = state.persisting.lock().await;
        let _compacting = state.compacting.lock().await;
        {
            let mut d = state.def.write().unwrap_or_else(|e| e.into_inner());
            let persisted_seq = d.persisted_seq.max(def.persisted_seq);
            *d = TableDef {
                persisted_seq,
                ..def
            };
        }
        let mut data = state.data();
        if Some(data.local_commits) != commits {
            return false;
        }
        data.positions = positions;
        let listed: HashSet<i64> = files.iter().map(|f| f.id).collect();
        // Files another node replaced or expired: that node deletes them.
        data.files.retain(|f| listed.contains(&f.id));
        let have: HashSet<i64> = data.files.iter().map(|f| f.id).collect();
        data.files.extend(
            files
                .into_iter()
                .filter(|f| !have.contains(&f.id))
                .map(Arc::new),
        );
        true
    }

    /// Drops a table from memory only (the catalog no longer has it, and
    /// the node that dropped it deletes its files).
    fn forget(&self, state: &TableState) {
        let (name, id) = (state.def().name, state.def().id);
        self.detach_view(id);
        self.inner
            .tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        let data = std::mem::take(&mut *state.data());
        self.inner.buffered.fetch_sub(data.bytes, Ordering::SeqCst);
    }

    /// Whether other nodes share this node's catalog (PostgreSQL): what
    /// they read of this node's data is kept a while for them
    /// (`EngineConfig::peer_grace` is not zero).
    pub fn shares_catalog(&self) -> bool {
        !self.inner.config.peer_grace.is_zero()
    }

    /// Takes or renews this node's lease on `job` for `ttl`; whether it may
    /// run the job now. A catalog that cannot say counts as no.
    pub async fn hold_lease(&self, job: &str, ttl: Duration) -> bool {
        if !self.inner.config.compact {
            return false;
        }
        let (node, name, now) = (
            self.inner.config.node_id.clone(),
            job.to_string(),
            self.now_ns(),
        );
        let ttl_ns = ttl.as_nanos().min(i64::MAX as u128) as i64;
        let held = self
            .in_catalog(move |catalog| catalog.hold_lease(&name, &node, now, ttl_ns))
            .await;
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                warn!(job, error = %e, "cannot renew the job's lease; not running it");
                false
            }
        };
        let mut leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
        let had = leases.contains(job);
        if held && !had {
            info!(job, node = %self.inner.config.node_id, "lease taken: this node runs the job");
            leases.insert(job.to_string());
        } else if !held && had {
            info!(job, "lease lost: another node runs the job");
            leases.remove(job);
        }
        held
    }

    /// Follows the catalog until `shutdown`: [`Engine::sync_catalog`] after
    /// each change another node commits, and every 10 s in case a
    /// notification was missed. Does nothing for a catalog only this node
    /// changes (SQLite).
    pub async fn follow_catalog(self, shutdown: CancellationToken, on_change: impl Fn() + Send) {
        let Some(mut changes) = self.inner.catalog.changes() else {
            return;
        };
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => return,
            }
            changes.borrow_and_update();
            match self.sync_catalog().await {
                Ok(()) => on_change(),
                Err(e) => warn!(error = %e, "reading the catalog's changes failed; trying again"),
            }
        }
    }
}
