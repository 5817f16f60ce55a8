//! The `sextant` server.
//!
//! Start-up: flags ([`config`]) → catalog and engine (WAL replay) → a
//! DataFusion session whose `sextant.public` schema is the engine's tables
//! and `sextant.system` its system tables → listeners bound → the ready file
//! says where. Requests flow from the front ends ([`pg`], [`http`]) through
//! the statement layer (`sextant-sql`) into DataFusion and the engine.
//! Shutdown: listeners close, open statements get a grace period, queued WAL
//! writes finish and are synced.

pub mod config;
mod copy;
mod error;
pub mod http;
mod node;
pub mod otlp;
pub mod pg;
mod pg_session;
mod prom;
mod self_telemetry;
mod system;
mod web;
mod write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use sextant_catalog::{Catalog, PostgresCatalog, SqliteCatalog};
use sextant_storage::{Engine, EngineConfig, LifecycleConfig, SyncMode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::ServeConfig;
pub use self_telemetry::{SelfTelemetry, TelemetryLayer, channel as self_telemetry_channel};
pub use sextant_sql::SqlError;

/// A start-up failure, with a message for the person starting the server.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

fn context<T, E: std::fmt::Display>(
    r: Result<T, E>,
    what: impl FnOnce() -> String,
) -> Result<T, StartError> {
    r.map_err(|e| format!("{}: {e}", what()).into())
}

/// Safe by default: with no authentication, only loopback addresses, unless
/// `--allow-unauthenticated` says otherwise (then a warning per address).
fn check_exposure(config: &ServeConfig, users_exist: bool) -> Result<(), StartError> {
    if users_exist {
        return Ok(());
    }
    let listeners = [
        (config.pg_addr, "--pg-addr"),
        (config.http_addr, "--http-addr"),
        (config.grpc_addr, "--grpc-addr"),
        (config.flight_addr, "--flight-addr"),
    ];
    for (addr, flag) in listeners {
        if addr.ip().is_loopback() {
            continue;
        }
        if !config.allow_unauthenticated {
            return Err(format!(
                "refusing to listen on {addr} ({flag}): Sextant has no users yet, so no client \
                 authenticates and anyone who can reach that address could read and write \
                 everything; listen on 127.0.0.1, or pass --allow-unauthenticated \
                 (SEXTANT_ALLOW_UNAUTHENTICATED=true) if something else guards the network"
            )
            .into());
        }
        warn!(%addr, flag, "listening beyond loopback without authentication (--allow-unauthenticated): anyone who reaches this address can read and write everything");
    }
    Ok(())
}

/// Runs the server until `shutdown` is cancelled; `telemetry`, if given,
/// writes the server's own spans and logs into its tables.
pub async fn run(
    config: ServeConfig,
    shutdown: CancellationToken,
    telemetry: Option<SelfTelemetry>,
) -> Result<(), StartError> {
    let data_dir = config.data_dir.clone();
    context(sextant_storage::wal::create_dir_durable(&data_dir), || {
        format!("cannot create data directory {}", data_dir.display())
    })?;
    let (store, local_root) = object_store(&config)?;
    let store = sextant_storage::instrument(store);
    // The one clock: the catalog's times, retention, token expiry, ingest
    // times of points that carry none, alert rules.
    let clock = match config.manual_clock {
        Some(start) => {
            warn!("the server runs on a manual clock (--manual-clock): for tests only");
            sextant_clock::Clock::manual(start)
        }
        None => sextant_clock::Clock::System,
    };
    let node_id = node::id(config.node_id.as_deref(), &data_dir)?;
    if config.catalog_ca.is_some() && !config.catalog.as_deref().is_some_and(is_postgres_url) {
        return Err(
            "--catalog-ca applies to a catalog in PostgreSQL (--catalog postgres://...)".into(),
        );
    }
    let restored = config.catalog_snapshot_interval > Duration::ZERO
        && restore_catalog(&config, &data_dir, store.as_ref()).await?;
    let catalog = open_catalog(
        &config,
        &data_dir,
        local_root.as_deref(),
        clock.clone(),
        &node_id,
    )?;
    // Several nodes on one catalog: a cluster.
    let shared = catalog.changes().is_some();
    let secret = match (&config.cluster_secret, shared) {
        (Some(s), _) if s.len() < 16 => {
            return Err("--cluster-secret: use at least 16 characters".into());
        }
        (Some(s), true) => Some(s.clone()),
        (None, true) => {
            return Err(
                "a shared catalog (--catalog postgres://...) needs --cluster-secret \
                 (SEXTANT_CLUSTER_SECRET), the same on every node: nodes present it to each \
                 other when they run query stages and read each other's write buffers"
                    .into(),
            );
        }
        (_, false) => None,
    };
    let engine_config = EngineConfig {
        wal_dir: data_dir.join("wal"),
        wal_sync: match config.wal_sync {
            config::WalSync::Always => SyncMode::Always,
            config::WalSync::Never => SyncMode::Never,
        },
        wal_segment_bytes: config.wal_segment_size,
        buffer_limit_bytes: config.buffer_limit as usize,
        inflight_limit_bytes: config.ingest_inflight_limit as usize,
        persist_age: config.persist_interval,
        backpressure_timeout: config.backpressure_timeout,
        local_object_root: local_root,
        row_group_rows: config.row_group_rows as usize,
        node_id: node_id.clone(),
        // Nodes on a shared catalog may share the object store too.
        object_tag: if shared {
            node_id.clone()
        } else {
            String::new()
        },
        // Other nodes' queries read this node's buffer as of the catalog
        // they read; a minute covers their lag behind the catalog.
        peer_grace: if shared {
            Duration::from_secs(60)
        } else {
            Duration::ZERO
        },
        ingest: config.mode.ingest,
        compact: config.mode.compact,
        skip_damaged_files: config.skip_damaged_files,
        lifecycle: LifecycleConfig {
            compaction_target_bytes: config.compaction_target_size,
            compaction_min_files: config.compaction_min_files as usize,
            interval: config.lifecycle_interval,
            orphan_grace: config.orphan_grace,
            clock: clock.clone(),
        },
    };
    let store_for_engine = store.clone();
    let engine =
        tokio::task::spawn_blocking(move || Engine::open(engine_config, catalog, store_for_engine))
            .await?;
    let engine = context(engine, || {
        format!("cannot open data in {}", data_dir.display())
    })?;
    let directory = context(
        sextant_auth::Directory::open(engine.catalog().clone()),
        || "cannot load users".to_string(),
    )?
    .allow_unauthenticated(config.allow_unauthenticated)
    .with_clock(clock.clone());
    let directory = Arc::new(directory);
    check_exposure(&config, directory.required())?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(sextant_tls::Tls::load(cert, key)?),
        _ => None,
    };
    let ca = match &config.cluster_ca {
        Some(path) => Some(context(std::fs::read(path), || {
            format!("cannot read --cluster-ca {}", path.display())
        })?),
        None => None,
    };
    let cluster = secret.map(|secret| {
        sextant_cluster::Cluster::new(
            engine.clone(),
            node_id.clone(),
            config.mode,
            secret,
            ca.as_deref(),
        )
    });
    let distribute = cluster
        .clone()
        .map(|c| move |b: datafusion::execution::SessionStateBuilder| c.distribute(b));
    let ctx = sextant_sql::session_context(
        &engine,
        store,
        config.query_memory_limit,
        &directory,
        system::schema(&engine)?,
        distribute
            .as_ref()
            .map(|d| d as &dyn Fn(datafusion::execution::SessionStateBuilder) -> _),
    )?;
    let alerts = open_alerts(&engine, &ctx, &config)?.for_node(&node_id, config.mode.compact);
    system::register_alerts(&ctx, &alerts)?;
    // PromQL from SQL (views and alert rules too).
    ctx.register_udtf(
        "promql",
        Arc::new(sextant_promql::PromqlFunction {
            lookback_ms: config.promql_lookback_delta.as_millis() as i64,
            max_samples: config.promql_max_samples,
            subquery_step_ms: config.promql_subquery_step.as_millis() as i64,
        }),
    );
    let queries = sextant_sql::Queries::new(clock.clone());
    sextant_sql::register_cancel_backend(&ctx, &queries);
    system::register_queries(&ctx, &queries)?;
    system::register_access(&ctx, &directory)?;
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(queries));
    let gauges = Arc::new(system::Gauges {
        engine: engine.clone(),
        alerts: alerts.clone(),
        pool: ctx.runtime_env().memory_pool.clone(),
    });
    system::register_metrics(&ctx, gauges.clone())?;
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(alerts.clone()));
    let ctx = Arc::new(ctx);
    // Transform views attach before any write is accepted.
    sextant_sql::start_views(&engine, &ctx).await;
    if restored {
        // The catalog copy can list view rows its base lost with the WAL.
        sextant_sql::rebuild_views(&engine, &ctx).await;
    }

    let pg = bind(config.pg_addr, "pgwire (--pg-addr)").await?;
    let http = bind(config.http_addr, "HTTP (--http-addr)").await?;
    let grpc = bind(config.grpc_addr, "OTLP/gRPC (--grpc-addr)").await?;
    let flight = bind(config.flight_addr, "Arrow Flight SQL (--flight-addr)").await?;
    let addrs = Addrs {
        pg: pg.local_addr()?,
        http: http.local_addr()?,
        grpc: grpc.local_addr()?,
        flight: flight.local_addr()?,
    };
    sextant_sql::pgcompat::set_server_port(&ctx, addrs.pg.port());
    let node_task = node::register(
        engine.catalog().clone(),
        engine.clock().clone(),
        node_id.clone(),
        config.mode.to_string(),
        {
            // Other nodes connect to this one over TLS when it has a certificate.
            let mut registered = addrs.json();
            registered["tls"] = tls.is_some().into();
            registered
        },
        shutdown.clone(),
    )?;
    // A node of a cluster: queries read every ingest node's buffer and run
    // stages on the query nodes; this node runs stages for the others.
    let worker = match &cluster {
        Some(cluster) => {
            let c = cluster.clone();
            context(
                tokio::task::spawn_blocking(move || c.refresh()).await?,
                || "cannot read the node registry".to_string(),
            )?;
            engine.set_buffer_source(cluster.clone());
            tokio::spawn(cluster.clone().run(shutdown.clone()));
            let worker = cluster.worker(&ctx);
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = url::Url::parse(&format!("{scheme}://{}", addrs.flight))
                .map_err(|e| format!("the Flight address as a URL: {e}"))?;
            datafusion_distributed::DistributedExt::set_distributed_local_worker_context(
                ctx.state_ref().write().config_mut(),
                worker.to_local_worker_context(url),
            );
            Some((cluster.clone(), worker))
        }
        None => None,
    };

    let background = tokio::spawn(engine.clone().run_background(shutdown.clone()));
    let lifecycle = tokio::spawn(engine.clone().run_lifecycle(shutdown.clone()));
    let snapshots = tokio::spawn(
        engine
            .clone()
            .run_snapshots(config.catalog_snapshot_interval, shutdown.clone()),
    );
    let refresher = tokio::spawn(sextant_sql::run_refresher(
        engine.clone(),
        ctx.clone(),
        config.view_refresh_interval,
        shutdown.clone(),
    ));
    let scheduler = tokio::spawn(alerts.clone().run(shutdown.clone()));
    // A shared catalog: what other nodes change (tables, files, users).
    let follower = tokio::spawn(engine.clone().follow_catalog(shutdown.clone(), {
        let (directory, alerts) = (directory.clone(), alerts.clone());
        move || {
            if let Err(e) = directory.reload() {
                warn!(error = %e, "reading users and tokens again failed");
            }
            if let Err(e) = alerts.sync() {
                warn!(error = %e, "reading alert rules again failed");
            }
        }
    }));
    // Stopped after the front ends, so their last spans are written too.
    let telemetry_stop = CancellationToken::new();
    let telemetry = telemetry.map(|t| {
        info!("self-telemetry: own spans go to otel_traces, own logs to otel_logs");
        let gauges = gauges.clone();
        tokio::spawn(t.run(
            engine.clone(),
            move || gauges.refresh(),
            config.self_telemetry_interval,
            config.self_telemetry_metrics_interval,
            telemetry_stop.clone(),
        ))
    });
    if let Some(tls) = &tls {
        info!(cert = %config.tls_cert.as_deref().unwrap_or_else(|| Path::new("")).display(), "TLS on every listener; SIGHUP reloads the certificate");
        tokio::spawn(sextant_tls::reload_on_sighup(tls.clone(), shutdown.clone()));
    }
    let pg_task = tokio::spawn(pg::serve(
        pg,
        ctx.clone(),
        engine.clone(),
        tls.as_ref().map(|t| t.acceptor(&[])),
        shutdown.clone(),
    ));
    let http_task = tokio::spawn(http::serve(
        http,
        web::AppState::new(
            engine.clone(),
            alerts,
            gauges,
            directory.clone(),
            config.max_body_size as usize,
            ctx.clone(),
            prom::PromSettings {
                lookback: config.promql_lookback_delta,
                timeout: config.promql_timeout,
                max_samples: config.promql_max_samples,
                subquery_step: config.promql_subquery_step,
            },
        ),
        tls.as_ref().map(|t| t.acceptor(&[b"http/1.1"])),
        shutdown.clone(),
    ));

    let grpc_task = tokio::spawn(otlp::serve_grpc(
        grpc,
        engine.clone(),
        directory.clone(),
        tls.as_ref().map(|t| t.acceptor(&[b"h2"])),
        config.max_body_size as usize,
        shutdown.clone(),
    ));

    let flight_task = tokio::spawn(sextant_flight::serve(
        flight,
        ctx,
        engine.clone(),
        worker,
        tls.as_ref().map(|t| t.acceptor(&[b"h2"])),
        config.max_body_size as usize,
        shutdown.clone(),
    ));

    info!(
        pg = %addrs.pg,
        http = %addrs.http,
        grpc = %addrs.grpc,
        flight = %addrs.flight,
        data_dir = %config.data_dir.display(),
        node = %node_id,
        "sextant is ready"
    );
    if let Some(path) = &config.ready_file {
        write_ready_file(path, &addrs)?;
    }

    shutdown.cancelled().await;
    info!("shutting down: closing listeners, refusing writes");
    engine.refuse_writes();
    let _ = pg_task.await;
    match http_task.await {
        Ok(Err(e)) => warn!(error = %e, "HTTP server stopped with an error"),
        Err(e) => warn!(error = %e, "HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    for (name, task) in [("OTLP/gRPC", grpc_task), ("Flight SQL", flight_task)] {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "{name} server stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "{name} server task failed"),
            Err(_) => warn!("{name} connections still open after 5 s; closing them"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    telemetry_stop.cancel();
    if let Some(t) = telemetry {
        let _ = t.await;
    }
    let _ = background.await;
    let _ = lifecycle.await;
    let _ = refresher.await;
    let _ = scheduler.await;
    let _ = follower.await;
    let _ = snapshots.await;
    if cluster.is_some() && config.mode.ingest {
        // Other nodes read a stopped node's rows from Parquet alone.
        for table in engine.table_names() {
            if let Err(e) = engine.flush_table(&table).await {
                warn!(%table, error = %e, "persisting the buffer before stopping failed; its rows stay in the WAL until this node is back");
            }
        }
    }
    let _ = node_task.await;
    context(engine.close().await, || "closing the WAL".to_string())?;
    info!("shutdown complete: WAL synced");
    Ok(())
}

/// Whether `--catalog` names a PostgreSQL database.
fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The catalog `--catalog` names: the SQLite file in the data directory
/// by default, or a PostgreSQL database.
fn open_catalog(
    config: &ServeConfig,
    data_dir: &Path,
    local_objects: Option<&Path>,
    clock: sextant_clock::Clock,
    node_id: &str,
) -> Result<Arc<dyn Catalog>, StartError> {
    let url = config.catalog.as_deref();
    if let Some(url) = url.filter(|u| is_postgres_url(u)) {
        let what = || "cannot open the catalog in PostgreSQL (--catalog)".to_string();
        let catalog = context(
            PostgresCatalog::connect_with_ca(url, config.catalog_ca.as_deref()),
            what,
        )?;
        let catalog = context(catalog.for_node(node_id), what)?;
        info!(node = node_id, "catalog in PostgreSQL");
        return Ok(Arc::new(catalog.with_clock(clock)));
    }
    let Some(path) = sqlite_catalog_path(config, data_dir) else {
        return Err(format!(
            "--catalog {}: expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
            url.unwrap_or_default()
        )
        .into());
    };
    let what = || format!("cannot open catalog {}", path.display());
    // Data that only a catalog makes sense of: the catalog must be there.
    let catalog = match data_without_catalog(data_dir, local_objects) {
        Some(found) => match SqliteCatalog::open_existing(&path) {
            Err(sextant_catalog::CatalogError::Empty(_)) => {
                return Err(format!(
                    "the catalog {} is missing or holds no catalog, but {found}: refusing to start with an empty catalog, which would hide that data (and drop the WAL's records of tables it does not know). Restore the catalog file from a backup, or move the data directory away to start afresh",
                    path.display()
                )
                .into());
            }
            opened => context(opened, what)?,
        },
        None => context(SqliteCatalog::open(&path), what)?,
    };
    let catalog = context(catalog.for_node(node_id), what)?;
    Ok(Arc::new(catalog.with_clock(clock)))
}

/// The SQLite catalog file `--catalog` names (or the default), `None` for
/// any other URL (PostgreSQL, or one that is not understood).
fn sqlite_catalog_path(config: &ServeConfig, data_dir: &Path) -> Option<PathBuf> {
    match config.catalog.as_deref() {
        None => Some(data_dir.join("catalog.sqlite")),
        Some(url) => url.strip_prefix("sqlite://").map(PathBuf::from),
    }
}

/// A node that lost its disk: no catalog file and no WAL in the data
/// directory, but a catalog snapshot on the object store (whose Parquet
/// files it lists). The snapshot
/// becomes the catalog file (written whole and fsynced before it is put in
/// place), and the log says what it cannot bring back. Whether it did.
async fn restore_catalog(
    config: &ServeConfig,
    data_dir: &Path,
    store: &dyn ObjectStore,
) -> Result<bool, StartError> {
    let Some(path) = sqlite_catalog_path(config, data_dir) else {
        return Ok(false);
    };
    if path.exists() || data_without_catalog(data_dir, None).is_some() {
        return Ok(false);
    }
    let found = context(sextant_storage::fetch_catalog_snapshot(store).await, || {
        "cannot read the catalog snapshot from the object store".to_string()
    })?;
    let Some((bytes, about)) = found else {
        return Ok(false);
    };
    let written = tokio::task::spawn_blocking({
        let path = path.clone();
        move || write_durably(&path, &bytes)
    })
    .await?;
    context(written, || {
        format!("cannot write the restored catalog {}", path.display())
    })?;
    warn!(
        catalog = %path.display(),
        "no catalog here: restored it from the snapshot on the object store ({about})"
    );
    Ok(true)
}

/// Writes `bytes` to `path` as a whole: a temporary file beside it,
/// fsynced, renamed into place, and the directory fsynced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    sextant_storage::wal::create_dir_durable(dir)?;
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    let tmp = PathBuf::from(name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// What a data directory holds that only a catalog makes sense of: WAL
/// segments, or files under the local object directory.
fn data_without_catalog(data_dir: &Path, local_objects: Option<&Path>) -> Option<String> {
    let wal = data_dir.join("wal");
    let segments = std::fs::read_dir(&wal)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .count()
        })
        .unwrap_or(0);
    if segments > 0 {
        return Some(format!("{} holds {segments} WAL segment(s)", wal.display()));
    }
    let root = local_objects?;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                return Some(format!(
                    "{} holds Parquet files (such as {})",
                    root.display(),
                    path.display()
                ));
            }
        }
    }
    None
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    context(TcpListener::bind(addr).await, || {
        format!("cannot listen for {what} on {addr}")
    })
}

/// The object store named by `--object-store`, and its local root directory
/// if it is on the local file system.
fn object_store(
    config: &ServeConfig,
) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), StartError> {
    let url = config.object_store.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            absolute(&config.data_dir.join("objects")).display()
        )
    });
    if let Some(path) = url.strip_prefix("file://") {
        let root = absolute(Path::new(path));
        context(sextant_storage::wal::create_dir_durable(&root), || {
            format!("cannot create object directory {}", root.display())
        })?;
        let fs = context(LocalFileSystem::new_with_prefix(&root), || {
            format!("cannot use {} for objects", root.display())
        })?;
        Ok((Arc::new(fs), Some(root)))
    } else if url == "memory://" || url.starts_with("memory://") {
        warn!("object store is memory://: Parquet files are lost when the process exits");
        Ok((Arc::new(InMemory::new()), None))
    } else if url.starts_with("s3://") {
        Ok((s3_store(&url)?, None))
    } else {
        Err(format!(
            "object store '{url}' is not supported: use file:///path, s3://bucket/prefix or memory://"
        )
        .into())
    }
}

/// An S3 (or S3-compatible) bucket, configured by the standard AWS variables
/// (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ALLOW_HTTP`, ...). Requests are retried with backoff for
/// up to 30 seconds; past that, persistence retries on its own schedule while
/// ingest goes on into the WAL (up to `--buffer-limit`).
fn s3_store(url: &str) -> Result<Arc<dyn ObjectStore>, StartError> {
    let rest = &url["s3://".len()..];
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("object store '{url}' names no bucket: use s3://bucket/prefix").into());
    }
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
    };
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60));
    // Our defaults first, then every AWS_* variable on top (as
    // `AmazonS3Builder::from_env` reads them), so AWS_TIMEOUT and the like
    // still override.
    let mut builder = AmazonS3Builder::new()
        .with_retry(retry)
        .with_client_options(options);
    for (key, value) in std::env::vars() {
        if key.starts_with("AWS_")
            && let Ok(key) = key.to_ascii_lowercase().parse()
        {
            builder = builder.with_config(key, value);
        }
    }
    let s3 = context(builder.with_bucket_name(bucket).build(), || {
        format!("cannot use {url} for objects")
    })?;
    let prefix = prefix.trim_matches('/');
    info!(bucket, prefix, "objects are stored in S3");
    if prefix.is_empty() {
        Ok(Arc::new(s3))
    } else {
        Ok(Arc::new(PrefixStore::new(s3, prefix)))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The alert rules, evaluated in a session of their own: the same tables
/// and functions, its own memory pool (--alert-memory-limit).
fn open_alerts(
    engine: &Engine,
    ctx: &SessionContext,
    config: &ServeConfig,
) -> Result<sextant_alerts::Alerts, StartError> {
    let base = ctx.runtime_env();
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(config.alert_memory_limit as usize, 1.0)
        .with_object_store_registry(base.object_store_registry.clone())
        .build_arc()?;
    let session = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
        .with_runtime_env(runtime)
        .build();
    let alerts = sextant_alerts::Alerts::open(
        engine.catalog().clone(),
        session,
        Arc::new(sextant_sql::RulePlanner),
        engine.clock().clone(),
        config.alert_query_timeout,
    );
    context(alerts, || "cannot load alert rules".to_string())
}

/// The addresses the listeners are bound to.
struct Addrs {
    pg: SocketAddr,
    http: SocketAddr,
    grpc: SocketAddr,
    flight: SocketAddr,
}

impl Addrs {
    /// `{"pg": "host:port", "http": ..., "grpc": ..., "flight": ...}`, as
    /// the ready file and the catalog's node registry give them.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "pg": self.pg.to_string(),
            "http": self.http.to_string(),
            "grpc": self.grpc.to_string(),
            "flight": self.flight.to_string(),
        })
    }
}

fn write_ready_file(path: &Path, addrs: &Addrs) -> Result<(), StartError> {
    let body = addrs.json();
    let tmp = path.with_extension("tmp");
    context(std::fs::write(&tmp, body.to_string()), || {
        format!("cannot write ready file {}", tmp.display())
    })?;
    context(std::fs::rename(&tmp, path), || {
        format!("cannot write ready file {}", path.display())
    })?;
    Ok(())
}
