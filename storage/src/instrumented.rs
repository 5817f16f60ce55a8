//! An object store that times every request and counts its failures
//! (`sextant_object_store_request_seconds`, `sextant_object_store_errors_total`,
//! by operation), then hands it to the store it wraps.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Wraps `inner` so its requests are measured.
pub fn instrument(inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    Arc::new(Instrumented { inner })
}

#[derive(Debug)]
struct Instrumented {
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

fn record<T>(op: &str, started: Instant, result: &Result<T>) {
    let m = sextant_metrics::metrics();
    m.object_store_seconds
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        m.object_store_errors.with_label_values(&[op]).inc();
    }
}

async fn timed<T>(op: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let result = f.await;
    record(op, started, &result);
    result
}

/// Counts the failed items of a stream (a listing or a batch delete).
fn count_errors<T: Send + 'static>(
    op: &'static str,
    s: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    s.inspect(move |r| {
        if r.is_err() {
            sextant_metrics::metrics()
                .object_store_errors
                .with_label_values(&[op])
                .inc();
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        timed("put", self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        timed(
            "put_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        timed(op, self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        timed("get_ranges", self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        count_errors("delete", self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        count_errors("list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        count_errors("list", self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        timed("list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        timed("copy", self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        timed("rename", self.inner.rename_opts(from, to, options)).await
    }
}
