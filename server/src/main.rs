//! `sextant`: parse flags, set up logging and signals, run the server.

use clap::Parser;
use sextant_server::config::{Cli, Command, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing::info;

fn main() {
    let cli = Cli::parse();
    let Command::Serve(config) = cli.command;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter).unwrap_or_else(|e| {
        eprintln!("sextant: bad --log-filter '{}': {e}", config.log_filter);
        std::process::exit(2)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
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
        sextant_server::run(config, shutdown).await
    });
    if let Err(e) = result {
        eprintln!("sextant: error: {e}");
        std::process::exit(1);
    }
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
