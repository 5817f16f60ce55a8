//! Damaged files: persisted Parquet files that are missing, shorter than
//! written, or that do not decode.
//!
//! A query reads every Parquet file through [`RecordingFactory`], which
//! notes in the engine's [`Damage`] each file whose metadata or bytes could
//! not be read for a reason that is the file's (not found, a range past its
//! end, a footer or page that does not decode), not a passing failure of
//! the object store. `CHECK TABLE` ([`crate::Engine::check_table`]) reads
//! every file of a table whole and notes (or clears) each. `system.files`
//! shows the notes; with `--skip-damaged-files` scans leave noted files out.
//! The notes live in memory: a restart forgets them until a read or a check
//! finds the damage again.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use tracing::warn;

/// The damaged files this node knows of: path → what is wrong.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    files: Mutex<BTreeMap<String, String>>,
}

impl Damage {
    pub(crate) fn mark(&self, path: &str, reason: String) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if files.get(path) != Some(&reason) {
            warn!(file = path, %reason, "damaged Parquet file");
            files.insert(path.to_string(), reason);
        }
    }

    pub(crate) fn clear(&self, path: &str) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }

    pub(crate) fn get(&self, path: &str) -> Option<String> {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }
}

/// What is wrong with a file, if `e` is about the file rather than the
/// object store's reachability.
pub(crate) fn file_fault(e: &ParquetError) -> Option<String> {
    match e {
        ParquetError::External(inner) => match inner.downcast_ref::<object_store::Error>() {
            Some(object_store::Error::NotFound { .. }) => {
                Some("missing: the object store has no such file".into())
            }
            // A range past the end: the file is shorter than it was written.
            Some(other) if other.to_string().to_lowercase().contains("range") => {
                Some(format!("shorter than written (truncated?): {other}"))
            }
            Some(_) => None,
            None => Some(format!("does not decode: {inner}")),
        },
        other => Some(format!("does not decode: {other}")),
    }
}

/// DataFusion's Parquet reader factory, noting damaged files on the way.
/// Footers (and page indexes) come from the engine's cache of them once
/// read: files never change once written, so a query does not read and
/// decode again the footers the last one read.
#[derive(Debug)]
pub(crate) struct RecordingFactory {
    inner: CachedParquetFileReaderFactory,
    damage: Arc<Damage>,
}

impl RecordingFactory {
    fn new(
        store: Arc<dyn ObjectStore>,
        damage: Arc<Damage>,
        footers: Arc<FileMetadataCache>,
    ) -> Self {
        Self {
            inner: CachedParquetFileReaderFactory::new(store, footers),
            damage,
        }
    }
}

impl crate::Engine {
    /// How every scan reads Parquet files: through the engine's footer
    /// cache, noting damaged files.
    pub(crate) fn parquet_reader(&self) -> RecordingFactory {
        RecordingFactory::new(
            self.inner.store.clone(),
            self.inner.damage.clone(),
            self.inner.footers.clone(),
        )
    }
}

impl ParquetFileReaderFactory for RecordingFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let path = partitioned_file.object_meta.location.to_string();
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(Recording {
            inner,
            path,
            damage: self.damage.clone(),
        }))
    }
}

struct Recording {
    inner: Box<dyn AsyncFileReader + Send>,
    path: String,
    damage: Arc<Damage>,
}

impl Recording {
    fn note<T>(
        path: &str,
        damage: &Damage,
        r: parquet::errors::Result<T>,
    ) -> parquet::errors::Result<T> {
        if let Err(e) = &r
            && let Some(reason) = file_fault(e)
        {
            damage.mark(path, reason);
        }
        r
    }
}

impl AsyncFileReader for Recording {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let (path, damage) = (self.path.clone(), self.damage.clone());
        self.inner
            .get_bytes(range)
            .map(move |r| Self::note(&path, &damage, r))
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let (path, damage) = (self.path.clone(), self.damage.clone());
        self.inner
            .get_byte_ranges(ranges)
            .map(move |r| Self::note(&path, &damage, r))
            .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let (path, damage) = (self.path.clone(), self.damage.clone());
        self.inner
            .get_metadata(options)
            .map(move |r| Self::note(&path, &damage, r))
            .boxed()
    }
}
