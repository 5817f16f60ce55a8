//! Criterion benchmarks of the storage path under the decoders:
//!
//! - `wal_group_commit/{1,8,64}`: 1 KiB records appended by 1, 8 and 64
//!   concurrent writers with fsync before every acknowledgement (writers
//!   share fsyncs); records/s.
//! - `write_buffer_insert`: `Engine::write` of 5,000-row cpu batches (WAL
//!   without fsync, so the buffer and the WAL encoding are what is timed);
//!   rows/s.
//! - `parquet_persistence`: `FLUSH TABLE` of 200,000 buffered cpu rows to
//!   local files (encode, zstd, write, fsync, catalog commit); MB/s of the
//!   rows' Arrow size.
//!
//! `cargo bench -p sextant-benches --bench storage`

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use object_store::local::LocalFileSystem;
use sextant_catalog::{NewTable, SqliteCatalog, TableOptions};
use sextant_storage::wal::{Wal, WalConfig};
use sextant_storage::{Engine, EngineConfig, LifecycleConfig, SyncMode};

const RECORD: usize = 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wal_group_commit(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("wal_group_commit");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for writers in [1usize, 8, 64] {
        let per_writer = (512 / writers).max(16);
        g.throughput(Throughput::Elements((writers * per_writer) as u64));
        g.bench_function(BenchmarkId::from_parameter(writers), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let wal = Arc::new(
                    Wal::open(
                        WalConfig {
                            dir: dir.path().join("wal"),
                            sync: SyncMode::Always,
                            segment_bytes: 64 << 20,
                        },
                        1,
                        |_, _| Ok(()),
                    )
                    .unwrap(),
                );
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> = (0..writers)
                            .map(|_| {
                                let wal = wal.clone();
                                tokio::spawn(async move {
                                    for _ in 0..per_writer {
                                        wal.append(vec![7u8; RECORD], Box::new(|_| {}))
                                            .await
                                            .unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                    let took = started.elapsed();
                    wal.close().await.unwrap();
                    took
                })
            })
        });
    }
    g.finish();
}

fn cpu_schema() -> SchemaRef {
    let mut fields = vec![Field::new(
        "time",
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )];
    fields.push(Field::new("hostname", DataType::Utf8, true));
    fields.push(Field::new("region", DataType::Utf8, true));
    for f in [
        "usage_user",
        "usage_system",
        "usage_idle",
        "usage_nice",
        "usage_iowait",
    ] {
        fields.push(Field::new(f, DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
}

/// `rows` cpu rows from row `first`: 100 hosts, 10 s apart.
fn cpu_batch(schema: &SchemaRef, first: usize, rows: usize) -> RecordBatch {
    let idx = first..first + rows;
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_iter_values(
                idx.clone()
                    .map(|i| 1_795_305_600_000_000_000 + (i / 100) as i64 * 10_000_000_000),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            idx.clone().map(|i| format!("host_{}", i % 100)),
        )),
        Arc::new(StringArray::from_iter_values(
            idx.clone().map(|i| format!("eu-west-{}", i % 3)),
        )),
    ];
    for k in 0..5 {
        cols.push(Arc::new(Float64Array::from_iter_values(
            idx.clone()
                .map(|i| ((i * 7 + k * 13) % 10_000) as f64 / 100.0),
        )));
    }
    RecordBatch::try_new(schema.clone(), cols).unwrap()
}

fn engine(dir: &std::path::Path, sync: SyncMode) -> Engine {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let config = EngineConfig {
        wal_dir: dir.join("wal"),
        wal_sync: sync,
        wal_segment_bytes: 64 << 20,
        buffer_limit_bytes: 16 << 30,
        inflight_limit_bytes: 1 << 30,
        persist_age: Duration::from_secs(3600),
        backpressure_timeout: Duration::from_secs(30),
        local_object_root: Some(objects.clone()),
        row_group_rows: sextant_storage::DEFAULT_ROW_GROUP_ROWS,
        lifecycle: LifecycleConfig::default(),
        object_tag: String::new(),
        node_id: String::new(),
        peer_grace: Duration::ZERO,
        ingest: true,
        compact: true,
        skip_damaged_files: false,
    };
    let catalog = SqliteCatalog::open(&dir.join("catalog.sqlite")).unwrap();
    let store = LocalFileSystem::new_with_prefix(&objects).unwrap();
    Engine::open(config, Arc::new(catalog), Arc::new(store)).unwrap()
}

async fn create_cpu(e: &Engine, schema: &SchemaRef) {
    e.create_table(NewTable {
        name: "cpu".into(),
        schema: schema.clone(),
        time_column: "time".into(),
        options: TableOptions::default(),
    })
    .await
    .unwrap();
}

fn write_buffer_insert(c: &mut Criterion) {
    let rt = runtime();
    let schema = cpu_schema();
    let rows = 5_000;
    let batch = cpu_batch(&schema, 0, rows);
    let mut g = c.benchmark_group("write_buffer_insert");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("cpu_5000_rows", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let e = engine(dir.path(), SyncMode::Never);
            rt.block_on(async {
                create_cpu(&e, &schema).await;
                let started = Instant::now();
                for _ in 0..iters {
                    e.write("cpu", batch.clone()).await.unwrap();
                }
                let took = started.elapsed();
                e.close().await.unwrap();
                took
            })
        })
    });
    g.finish();
}

fn parquet_persistence(c: &mut Criterion) {
    let rt = runtime();
    let schema = cpu_schema();
    let rows = 200_000;
    let batches: Vec<_> = (0..rows / 10_000)
        .map(|k| cpu_batch(&schema, k * 10_000, 10_000))
        .collect();
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut g = c.benchmark_group("parquet_persistence");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("cpu_200k_rows", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let e = engine(dir.path(), SyncMode::Never);
                total += rt.block_on(async {
                    create_cpu(&e, &schema).await;
                    for b in &batches {
                        e.write("cpu", b.clone()).await.unwrap();
                    }
                    let started = Instant::now();
                    let files = e.flush_table("cpu").await.unwrap();
                    assert!(files >= 1);
                    let took = started.elapsed();
                    e.close().await.unwrap();
                    took
                });
            }
            total
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    wal_group_commit,
    write_buffer_insert,
    parquet_persistence
);
criterion_main!(benches);
