//! Sextant's storage engine.
//!
//! A write is validated against its table's schema, appended to the [`wal`]
//! (group commit, fsync before acknowledgement), and applied to the in-memory
//! write buffer, where the next query sees it. The [`Engine`] persists
//! buffered rows as sorted Parquet files on object storage (by size, by age,
//! or on `FLUSH TABLE`), commits the file list to the catalog, and only then
//! lets the WAL drop the records. Queries see each table through
//! [`SextantTable`], which unions buffer chunks with Parquet files after
//! pruning both by time and column statistics.

mod admission;
mod config;
mod damage;
mod deletes;
mod engine;
mod error;
mod follow;
mod instrumented;
mod keys;
mod lifecycle;
mod merge;
mod persist;
mod provider;
mod remote;
mod snapshot;
mod state;
mod tokens;
mod views;
pub use sextant_wal as wal;

pub use admission::Admission;
pub use config::{EngineConfig, LifecycleConfig};
pub use deletes::{DeletePlan, DeleteStats, predicate_expr};
pub use engine::{FileCheck, TableStats, WalStats, is_text};
pub use error::{Result, StorageError};
pub use instrumented::instrument;
pub use keys::{decode_dedup, encode_dedup};
pub use lifecycle::CompactionSummary;
pub use persist::DEFAULT_ROW_GROUP_ROWS;
pub use provider::{
    OBJECT_STORE_URL, PlainViewTable, SextantSchema, SextantSink, SextantTable, counting_scans,
    decode_table_scan, encode_table_scan, object_store_url,
};
pub use remote::{BufferRequest, BufferScanExec, BufferSource};
pub use sextant_clock::Clock;
pub use snapshot::{MANIFEST_OBJECT, SNAPSHOT_OBJECT, fetch as fetch_catalog_snapshot};
pub use state::{Chunk, Engine, Snapshot, TransformFn, ViewStatus, conform};
pub use tokens::{FUNCTION_NAME as MATCHES_TERM, indexed_columns, matches_term_udf};
pub use views::{BucketRefresh, RefreshOutcome, VIEWS_LEASE, ViewStats, bucket_start};
pub use wal::SyncMode;
