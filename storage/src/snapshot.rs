//! Catalog snapshots on the object store, so that the data outlives the
//! machine: with the Parquet files in a bucket and the SQLite catalog on
//! the local disk, losing the disk would leave files nobody can read.
//!
//! The engine keeps a copy of the whole catalog beside the data:
//! [`SNAPSHOT_OBJECT`] (one consistent SQLite file, `VACUUM INTO`) and then
//! [`MANIFEST_OBJECT`] (JSON: when, by which node, what it lists, how many
//! acknowledged rows were not persisted yet). A snapshot is taken soon
//! (within [`DEBOUNCE`]) after files are committed or retired, at most every
//! `catalog_snapshot_interval` for any other change (users, alerts, DDL),
//! at start and at shutdown. Every object PUT replaces the object whole,
//! so a reader sees the old snapshot or the new one.
//!
//! A file a commit replaced (compaction, retention, a dropped table) is
//! deleted from the store only once a snapshot taken after its retirement
//! is uploaded ([`Engine::snapshot_covers`]): the latest snapshot never
//! names a deleted file.
//!
//! A node started on an empty data directory with no catalog finds the
//! snapshot ([`fetch`]) and starts from it: every table, view, alert, user
//! and persisted row comes back; what was only in the lost WAL does not,
//! and the manifest says how much that was at the time of the snapshot.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::Result;
use crate::state::Engine;

/// The catalog's copy: a SQLite database file.
pub const SNAPSHOT_OBJECT: &str = "_catalog/catalog.sqlite";
/// What the copy holds, as JSON, written after it.
pub const MANIFEST_OBJECT: &str = "_catalog/manifest.json";
/// How long after a commit of files the snapshot is taken (commits that
/// come close together share one).
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(200);

/// The engine's side of snapshots.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    /// Woken when files were committed or retired.
    wake: Notify,
    /// When the latest uploaded snapshot was begun; `None` before the
    /// first. Set only while the snapshot loop runs.
    taken: Mutex<Option<Instant>>,
    /// The snapshot loop runs: retired files wait for a snapshot.
    active: std::sync::atomic::AtomicBool,
    /// One snapshot at a time, so that a later one is uploaded later.
    one: tokio::sync::Mutex<()>,
}

impl Engine {
    /// Asks for a snapshot soon: files were committed or retired.
    pub(crate) fn snapshot_soon(&self) {
        self.inner.snapshots.wake.notify_one();
    }

    /// Whether the latest uploaded snapshot was begun after `retired_at`
    /// (so it does not name a file retired then), or snapshots are off.
    pub(crate) fn snapshot_covers(&self, retired_at: Instant) -> bool {
        let s = &self.inner.snapshots;
        if !s.active.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        s.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|taken| taken > retired_at)
    }

    /// Whether a snapshot was uploaded since start, or snapshots are off:
    /// until then, the latest snapshot may still name objects this node
    /// no longer knows, which must not be taken for orphans.
    pub(crate) fn snapshot_taken(&self) -> bool {
        let s = &self.inner.snapshots;
        !s.active.load(std::sync::atomic::Ordering::SeqCst)
            || s.taken.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The snapshot loop: a snapshot at start, soon after file commits, at
    /// most every `interval` for other changes, and a last one at
    /// shutdown. Does nothing when `interval` is zero or the catalog keeps
    /// no snapshots (PostgreSQL).
    pub async fn run_snapshots(self, interval: Duration, shutdown: CancellationToken) {
        if interval.is_zero() {
            return;
        }
        let s = &self.inner.snapshots;
        s.active.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut uploaded: Option<u64> = None;
        let mut last = Instant::now();
        let mut urgent = true;
        loop {
            let changes = self.inner.catalog.change_count();
            let due = urgent || last.elapsed() >= interval;
            if due && uploaded != Some(changes) {
                match self.take_snapshot().await {
                    Ok(false) => {
                        // The catalog keeps no snapshots: nothing waits.
                        s.active.store(false, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    Ok(true) => {
                        uploaded = Some(changes);
                        last = Instant::now();
                    }
                    Err(e) => {
                        warn!(error = %e, "could not write the catalog snapshot to the object store; will retry")
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = s.wake.notified() => {
                    urgent = true;
                    tokio::time::sleep(DEBOUNCE).await;
                }
                _ = tokio::time::sleep(interval.min(Duration::from_secs(1))) => urgent = false,
            }
        }
        if uploaded != Some(self.inner.catalog.change_count())
            && let Err(e) = self.take_snapshot().await
        {
            warn!(error = %e, "could not write the catalog snapshot at shutdown");
        }
    }

    /// Takes a snapshot now when retired files wait for one (so that
    /// `COMPACT TABLE` and the lifecycle pass delete them at once).
    pub(crate) async fn snapshot_for_retired(&self, newest: Instant) {
        if !self.snapshot_covers(newest)
            && let Err(e) = self.take_snapshot().await
        {
            warn!(error = %e, "could not write the catalog snapshot to the object store; replaced files are kept until it works");
        }
    }

    /// Copies the catalog and uploads the copy, then the manifest. `false`:
    /// the catalog keeps no snapshots.
    async fn take_snapshot(&self) -> Result<bool> {
        let _one = self.inner.snapshots.one.lock().await;
        let started = Instant::now();
        let catalog = self.inner.catalog.clone();
        let Some(bytes) = self.in_catalog(move |_| catalog.snapshot()).await? else {
            self.inner
                .snapshots
                .active
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return Ok(false);
        };
        let size = bytes.len();
        let store = &self.inner.store;
        store
            .put(&ObjectPath::from(SNAPSHOT_OBJECT), PutPayload::from(bytes))
            .await?;
        *self
            .inner
            .snapshots
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(started);

        let (mut tables, mut files, mut rows, mut buffered) = (0usize, 0usize, 0u64, 0u64);
        for state in self.states() {
            tables += 1;
            let data = state.data();
            files += data.files.len();
            rows += data.files.iter().map(|f| f.file.rows).sum::<u64>();
            buffered += data
                .chunks
                .iter()
                .map(|c| c.batch.num_rows() as u64)
                .sum::<u64>();
        }
        let taken_at = chrono::DateTime::from_timestamp_nanos(self.now_ns()).to_rfc3339();
        let manifest = json!({
            "format": 1,
            "taken_at": taken_at,
            "node": self.inner.config.node_id,
            "tables": tables,
            "files": files,
            "persisted_rows": rows,
            "unpersisted_rows": buffered,
            "bytes": size,
        });
        store
            .put(
                &ObjectPath::from(MANIFEST_OBJECT),
                PutPayload::from(manifest.to_string().into_bytes()),
            )
            .await?;
        debug!(
            bytes = size,
            tables,
            files,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "catalog snapshot written to the object store"
        );
        Ok(true)
    }
}

/// The catalog snapshot in `store`, if there is one: the database file's
/// bytes and a sentence saying what it holds and what it cannot (read from
/// the manifest).
pub async fn fetch(store: &dyn ObjectStore) -> Result<Option<(Vec<u8>, String)>> {
    let bytes = match store.get(&ObjectPath::from(SNAPSHOT_OBJECT)).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let manifest = match store.get(&ObjectPath::from(MANIFEST_OBJECT)).await {
        Ok(got) => serde_json::from_slice::<serde_json::Value>(&got.bytes().await?).ok(),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let about = match manifest {
        Some(m) => format!(
            "the snapshot was taken at {} by node {} and lists {} tables with {} files ({} rows); \
             at that moment {} acknowledged rows were in the old node's WAL and write buffer only, \
             and they are lost, with whatever it acknowledged after that and did not persist",
            m["taken_at"].as_str().unwrap_or("?"),
            m["node"].as_str().unwrap_or("?"),
            m["tables"],
            m["files"],
            m["persisted_rows"],
            m["unpersisted_rows"],
        ),
        None => "the snapshot has no manifest, so what it misses is unknown".to_string(),
    };
    info!(
        bytes = bytes.len(),
        "catalog snapshot found on the object store"
    );
    Ok(Some((bytes.to_vec(), about)))
}
