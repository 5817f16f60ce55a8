//! `sextant`: parse flags, set up logging and signals, run the server.

use clap::Parser;
use sextant_server::SelfTelemetry;
use sextant_server::config::{Cli, Command, LogFormat, ServeConfig};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// jemalloc, with background threads that return freed pages to the
/// system: under sustained ingest, glibc's per-thread arenas kept about
/// seven times the memory in use resident (docs/durability.md, "Overload").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    let Command::Serve(config) = cli.command;
    let telemetry = init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sextant")
        // DataFusion plans by recursion; deep queries need more than 2 MiB.
        .thread_stack_size(8 << 20)
        .build()
        .unwrap_or_else(|e| {
            eprintln!("sextant: cannot start the async runtime: {e}");
            std::process::exit(1)
        });
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signals(shutdown.clone()));
        sextant_server::run(config, shutdown, telemetry).await
    });
    if let Err(e) = result {
        eprintln!("sextant: error: {e}");
        std::process::exit(1);
    }
}

fn filter(flag: &str, value: &str) -> EnvFilter {
    EnvFilter::try_new(value).unwrap_or_else(|e| {
        eprintln!("sextant: bad {flag} '{value}': {e}");
        std::process::exit(2)
    })
}

/// Log lines to stderr (--log-filter, --log-format) and, with
/// --self-telemetry, spans and events to the tables, each with its filter.
fn init_logging(config: &ServeConfig) -> Option<SelfTelemetry> {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let mut layers = vec![
        fmt.with_filter(filter("--log-filter", &config.log_filter))
            .boxed(),
    ];
    let mut telemetry = None;
    if config.self_telemetry {
        let (layer, t) = sextant_server::self_telemetry_channel();
        let f = filter("--self-telemetry-filter", &config.self_telemetry_filter);
        layers.push(layer.with_filter(f).boxed());
        telemetry = Some(t);
    }
    #[cfg(feature = "console")]
    layers.push(console_layer());
    tracing_subscriber::registry().with(layers).init();
    telemetry
}

/// The tokio-console layer (`--features console`); it serves the console on
/// 127.0.0.1:6669, or TOKIO_CONSOLE_BIND.
#[cfg(feature = "console")]
fn console_layer() -> Box<dyn Layer<Registry> + Send + Sync> {
    if !cfg!(tokio_unstable) {
        eprintln!(
            "sextant: built with the console feature but without RUSTFLAGS=\"--cfg tokio_unstable\"; rebuild with it to use tokio-console"
        );
        std::process::exit(2)
    }
    console_subscriber::ConsoleLayer::builder()
        .with_default_env()
        .spawn()
        .boxed()
}

/// First SIGINT/SIGTERM: clean shutdown. Second: exit at once.
async fn on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("sextant: cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("sextant: second signal, exiting without waiting");
    std::process::exit(130);
}
