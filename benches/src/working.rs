//! The memory persistence and compaction hold while they sort and encode,
//! beside the rows they read, measured through the storage engine on this
//! crate's rows (TSBS cpu over line protocol, OTLP logs) against what they
//! take from the write buffer's work reserve
//! ([`sextant_storage::Engine::take_work_peak`]).
//!
//! The engine runs on a runtime whose threads all count in one
//! [`crate::counting::Group`], so the blocking threads that encode count
//! and tests running beside it do not.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::DataType;
use object_store::local::LocalFileSystem;
use sextant_catalog::{NewTable, SqliteCatalog, TableOptions};
use sextant_ingest::{Precision, line_protocol, otlp};
use sextant_storage::{Engine, EngineConfig, LifecycleConfig, SyncMode};

use crate::counting::Group;

/// A piece of 64 MiB, a reserve of 128 MiB: large enough that no step
/// takes the whole reserve, so each takes what it estimates.
const BUFFER_LIMIT: usize = 512 << 20;

fn engine(dir: &std::path::Path) -> Engine {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let config = EngineConfig {
        wal_dir: dir.join("wal"),
        wal_sync: SyncMode::Never,
        wal_segment_bytes: 64 << 20,
        buffer_limit_bytes: BUFFER_LIMIT,
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

/// `batch` again, every value copied and its times `shift` later.
fn copy_shifted(batch: &RecordBatch, time: usize, shift: i64) -> RecordBatch {
    let all = arrow::array::UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    let mut columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c, &all, None).unwrap())
        .collect();
    let times = batch
        .column(time)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap();
    let tz = match batch.schema().field(time).data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    columns[time] = Arc::new(
        TimestampNanosecondArray::from_iter_values(times.values().iter().map(|t| t + shift))
            .with_timezone_opt(tz),
    );
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// A runtime whose every thread, and this one, counts in `group`.
fn counted_runtime(group: &'static Group) -> tokio::runtime::Runtime {
    group.join();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || group.join())
        .build()
        .unwrap()
}

/// 5,000 rows of TSBS cpu, decoded from line protocol.
fn cpu_rows() -> RecordBatch {
    let lp = crate::line_protocol(5_000);
    let cpu = line_protocol::decode(&lp, Precision::Nanoseconds, crate::START_NS, &|_| None);
    cpu.tables
        .into_iter()
        .next()
        .unwrap()
        .finish()
        .unwrap()
        .unwrap()
}

#[test]
fn persistence_and_compaction_hold_at_most_what_they_reserve() {
    let group = Group::new();
    let rt = counted_runtime(group);
    let cpu = cpu_rows();
    let logs = otlp::decode_logs(&crate::otlp_logs(5_000), crate::START_NS);
    let (_, logs) = logs.tables.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let e = engine(dir.path());
        let mut short = vec![];
        for (name, batch) in [("cpu", &cpu), ("logs", &logs)] {
            let schema = batch.schema();
            let time = schema
                .fields()
                .iter()
                .position(|f| matches!(f.data_type(), DataType::Timestamp(..)))
                .unwrap();
            e.create_table(NewTable {
                name: name.into(),
                schema: schema.clone(),
                time_column: schema.field(time).name().clone(),
                options: TableOptions::default(),
            })
            .await
            .unwrap();
            // Two flushes of about a piece and a half each, then their
            // files compacted (rows three pieces large in memory, which
            // the merge streams). Each copy of the rows is 500 s later, each
            // flush's rows about six days after the last's.
            let piece = e.piece_bytes();
            let mut rows_bytes = 0;
            for round in 0..2i64 {
                let mut written = 0;
                let mut k = 0i64;
                while written < piece * 3 / 2 {
                    let b = copy_shifted(batch, time, (round * 1_000 + k) * 500_000_000_000);
                    written += b.get_array_memory_size();
                    e.write(name, b).await.unwrap();
                    k += 1;
                }
                rows_bytes += written;
                let (held, _) = group.peak_of(e.flush_table(name)).await;
                let reserved = e.take_work_peak();
                eprintln!(
                    "{name}: persisting {written} bytes of rows ({} pieces of {piece}) held at most {held}, reserved at most {reserved}",
                    written.div_ceil(piece)
                );
                if held > reserved {
                    short.push(format!("{name} persistence: held {held} > reserved {reserved}"));
                }
            }
            let (held, summary) = group.peak_of(e.compact_table(name)).await;
            let summary = summary.unwrap();
            let reserved = e.take_work_peak();
            eprintln!("{name}: compaction ({summary:?}) held at most {held}, reserved at most {reserved}");
            if held > reserved {
                short.push(format!("{name} compaction: held {held} > reserved {reserved}"));
            }
            // The merge streams: it holds far less than the rows it merges.
            assert!(summary.files_in >= 2, "{name}: nothing compacted: {summary:?}");
            if held > rows_bytes / 2 {
                short.push(format!(
                    "{name} compaction: held {held} merging {rows_bytes} bytes of rows"
                ));
            }
        }
        e.close().await.unwrap();
        assert!(short.is_empty(), "held more than reserved: {short:#?}");
    });
}

/// Rows whose times are scattered over decades, one a day: a file per
/// row (hourly partitions). Each write covers 5,000 partitions, so it is
/// split into records of at most 512, and persistence takes at most about
/// 1,000 partitions' files a step: what it holds while it works (its peak
/// less what it keeps: the files' catalog entries, which the table keeps
/// in memory) stays within what it reserves. The first 10-million pgfuzz
/// run found this: one step wrote a file for each of tens of thousands of
/// partitions and held 3 GiB (three copies of every file's column
/// statistics, and every encoded file until the last was written).
#[test]
fn persistence_of_rows_scattered_over_decades_holds_at_most_what_it_reserves() {
    let group = Group::new();
    let rt = counted_runtime(group);
    let cpu = cpu_rows();
    let schema = cpu.schema();
    let time = schema
        .fields()
        .iter()
        .position(|f| matches!(f.data_type(), DataType::Timestamp(..)))
        .unwrap();
    let day = 86_400_000_000_000i64;
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let e = engine(dir.path());
        e.create_table(NewTable {
            name: "scattered".into(),
            schema: schema.clone(),
            time_column: schema.field(time).name().clone(),
            options: TableOptions::default(),
        })
        .await
        .unwrap();
        let mut rows = 0;
        for copy in 0..2i64 {
            let mut b = copy_shifted(&cpu, time, 0);
            let mut columns = b.columns().to_vec();
            let tz = match schema.field(time).data_type() {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            // Descending, so the write's rows are out of time order.
            columns[time] = Arc::new(
                TimestampNanosecondArray::from_iter_values(
                    (0..b.num_rows() as i64).map(|i| (copy * 5_000 + 4_999 - i) * day),
                )
                .with_timezone_opt(tz),
            );
            b = RecordBatch::try_new(schema.clone(), columns).unwrap();
            rows += b.num_rows();
            e.write("scattered", b).await.unwrap();
        }
        let (held, kept, files) = group.peak_and_kept_of(e.flush_table("scattered")).await;
        let files = files.unwrap();
        let reserved = e.take_work_peak();
        let working = held.saturating_sub(kept.max(0) as usize);
        eprintln!(
            "scattered: persisting {rows} rows, one a day, wrote {files} files; held at most {held}, \
             of which the table keeps {kept} ({} a file): {working} while working, reserved at most {reserved}",
            kept / files.max(1) as isize
        );
        let stats = e.table_stats();
        let t = stats.iter().find(|t| t.def.name == "scattered").unwrap();
        assert_eq!((t.files, t.persisted_rows, t.buffered_rows), (10_000, 10_000, 0));
        e.close().await.unwrap();
        assert!(working <= reserved, "held {working} > reserved {reserved} while working");
    });
}
