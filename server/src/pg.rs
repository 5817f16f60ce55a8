//! The PostgreSQL wire protocol front end.
//!
//! Connections are served by pgwire with datafusion-postgres's session
//! service (pg_catalog, type mapping, SET/SHOW, transactions). In front of it
//! sits Sextant's statement layer: each statement of a simple query, and the
//! text of each extended-protocol Parse, is first offered to
//! [`sextant_sql::classify`]; Sextant's own statements run here, the rest go
//! on to DataFusion. Every error leaves with a SQLSTATE ([`assign_sqlstate`]).
//!
//! A connection logs in with SCRAM-SHA-256 once a user exists ([`startup::Startup`]);
//! before that, only from loopback and without a password. Its principal is
//! kept with the connection, and every statement runs as it
//! ([`sextant_sql::run_as`]), so every plan is checked for it.
//!
//! This file serves connections and wires the handlers together; logging
//! in and cancelling are [`startup`], statements (simple, extended, COPY)
//! are [`query`].

mod query;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::{DfSessionService, QueryHook};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{
    ConnectionManager, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator,
};
use sextant_storage::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use sextant_sql::Queries;

use self::query::{Parser, Service, SqlStateErrors};
use self::startup::{Cancel, Startup};

/// How long open connections get to finish their statement at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves pgwire on `listener` until `shutdown` is cancelled, then stops
/// accepting and gives open connections [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    engine: Engine,
    tls: Option<sextant_tls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let handlers = Arc::new(Handlers::new(ctx, engine, tls.is_some()));
    let tracker = TaskTracker::new();
    loop {
        let (socket, addr): (_, SocketAddr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "pgwire accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let handlers = handlers.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            debug!(%addr, "pgwire connection");
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                debug!(%addr, error = %e, "pgwire connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        info!(
            connections = tracker.len(),
            "closing pgwire connections still open after the shutdown grace period"
        );
    }
}

struct Handlers {
    service: Arc<Service>,
    startup: Arc<Startup>,
    cancel: Arc<Cancel>,
}

impl Handlers {
    fn new(ctx: Arc<SessionContext>, engine: Engine, tls_required: bool) -> Self {
        let inner = Arc::new(DfSessionService::new_with_hooks(
            ctx.clone(),
            default_hooks(),
        ));
        let connections = Arc::new(ConnectionManager::new());
        let queries = ctx
            .state_ref()
            .read()
            .config()
            .get_extension::<Queries>()
            .map(|q| q.as_ref().clone())
            .unwrap_or_default();
        let directory = sextant_sql::directory(&ctx).expect("the session has the user directory");
        Self {
            service: Arc::new(Service {
                parser: Arc::new(Parser {
                    inner: inner.query_parser(),
                    ctx: ctx.clone(),
                }),
                inner,
                engine,
                ctx,
                queries: queries.clone(),
                directory: directory.clone(),
            }),
            startup: Arc::new(Startup {
                connections: connections.clone(),
                directory: directory.clone(),
                keys: RandomPidSecretKeyGenerator::default(),
                tls_required,
            }),
            cancel: Arc::new(Cancel {
                connections,
                queries,
            }),
        }
    }
}

/// Sextant's session settings, then datafusion-postgres's own hooks:
/// cursors, SET/SHOW, transactions.
fn default_hooks() -> Vec<Arc<dyn QueryHook>> {
    use datafusion_postgres::hooks::cursor::CursorStatementHook;
    use datafusion_postgres::hooks::set_show::SetShowHook;
    use datafusion_postgres::hooks::transactions::TransactionStatementHook;
    vec![
        Arc::new(crate::pg_session::SessionHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ]
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.service.clone()
    }
}
