//! How the engine is set up: [`EngineConfig`] (the WAL, the write buffer,
//! persistence) with its [`LifecycleConfig`] (retention, compaction and
//! clean-up). The server fills them from its own configuration; the engine
//! keeps them in its state for every part to read.

use std::path::PathBuf;
use std::time::Duration;

use sextant_clock::Clock;

use crate::wal::SyncMode;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory of the WAL segments.
    pub wal_dir: PathBuf,
    /// fsync before acknowledging (the default) or not.
    pub wal_sync: SyncMode,
    /// Rotate WAL segments past this size.
    pub wal_segment_bytes: u64,
    /// Write-buffer size past which writers wait; persistence starts at
    /// half. It counts what persistence holds while it encodes, too.
    pub buffer_limit_bytes: usize,
    /// Bytes the ingest requests in flight may hold together
    /// ([`crate::Engine::admit`]).
    pub inflight_limit_bytes: usize,
    /// Buffered rows older than this are persisted even if the buffer is small.
    pub persist_age: Duration,
    /// How long a writer waits for buffer space before it gets a retryable error.
    pub backpressure_timeout: Duration,
    /// When objects live on the local file system, their root directory, so
    /// persisted files can be fsynced before the WAL that covers them is deleted.
    pub local_object_root: Option<PathBuf>,
    /// Rows per Parquet row group (the unit row-group pruning skips).
    pub row_group_rows: usize,
    /// Retention, compaction and clean-up of unreferenced objects.
    pub lifecycle: LifecycleConfig,
    /// This node's id: the holder of the leases it takes
    /// ([`crate::Engine::hold_lease`]).
    pub node_id: String,
    /// This node's mark in the names of the objects it writes
    /// (`<seq>-<tag>-<n>.parquet`), so that nodes sharing one object store
    /// never write the same name; empty for a store only this node writes.
    pub object_tag: String,
    /// How long other nodes may still read what this node let go, by a
    /// catalog they read before: chunks it persisted stay in memory for
    /// their queries ([`crate::Engine::buffered_since`]), files it replaced
    /// (compaction, retention) stay in the object store. Zero when no other
    /// node reads this node's data.
    pub peer_grace: Duration,
    /// This node accepts writes (`--mode` has `ingest`).
    pub ingest: bool,
    /// This node runs the singleton jobs when it holds their lease
    /// (`--mode` has `compact`).
    pub compact: bool,
    /// Scans leave out files found damaged (`--skip-damaged-files`)
    /// instead of failing on them.
    pub skip_damaged_files: bool,
}

/// How files are kept in shape.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Compaction writes files of about this size.
    pub compaction_target_bytes: u64,
    /// The background compacts a partition once it has this many files
    /// smaller than half the target (`COMPACT TABLE` at two).
    pub compaction_min_files: usize,
    /// How often retention, compaction and clean-up run in the background.
    pub interval: Duration,
    /// An object no catalog entry names is deleted when it is older than this
    /// (by the object store's own modification time).
    pub orphan_grace: Duration,
    /// The time of day retention and compaction records read.
    pub clock: Clock,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            compaction_target_bytes: 128 << 20,
            compaction_min_files: 8,
            interval: Duration::from_secs(60),
            orphan_grace: Duration::from_secs(3600),
            clock: Clock::System,
        }
    }
}
