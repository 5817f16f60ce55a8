//! A pgwire connection's start: [`Startup`] logs it in (SCRAM-SHA-256, or
//! MD5 for a user created with `MD5`; no password while no user exists,
//! from loopback only) and keeps its [`Principal`] in its session
//! extensions ([`SessionPrincipal`], read back by [`principal`]); the login
//! under way lives there too ([`Login`]). [`Cancel`] answers a
//! CancelRequest by cancelling the backend's statements.

use sextant_sqlstate::SqlState;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{
    ClientInfo, ConnectionHandle, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sextant_auth::{AuthError, Directory, Principal};
use tracing::{debug, info};

use sextant_sql::Queries;

/// Logs a connection in. Once a user exists: SCRAM-SHA-256 (RFC 7677, as
/// PostgreSQL does it), or MD5 for a user created with `MD5`, with the same
/// answer for a wrong password and an unknown user, and failed logins
/// counted per address. With no user yet:
/// no password, from loopback only (unless `--allow-unauthenticated`). The
/// exchange's state lives with the connection (its session extensions).
pub(super) struct Startup {
    pub(super) connections: Arc<ConnectionManager>,
    pub(super) directory: Arc<Directory>,
    pub(super) keys: RandomPidSecretKeyGenerator,
    /// `--tls-cert`: a connection that did not ask for TLS is refused.
    pub(super) tls_required: bool,
}

/// A connection's principal, once it logged in.
pub(super) struct SessionPrincipal(pub(super) std::sync::RwLock<Principal>);

/// A login under way: what the next password message answers.
pub(super) enum Waiting {
    /// AuthenticationSASL was sent: a SASLInitialResponse comes next.
    ScramInitial,
    /// AuthenticationSASLContinue was sent: a SASLResponse comes next.
    ScramFinal(sextant_auth::ScramWaiting),
    /// AuthenticationMD5Password was sent: a PasswordMessage comes next.
    Md5(sextant_auth::Md5Waiting),
}

/// The connection's login under way (in its session extensions).
pub(super) struct Login(std::sync::Mutex<Option<Waiting>>);

/// The principal of a connection; one that never logged in (which pgwire
/// does not allow) is nobody, whom every check refuses.
pub(super) fn principal<C: ClientInfo + ?Sized>(client: &C) -> Principal {
    client
        .session_extensions()
        .get::<SessionPrincipal>()
        .map(|p| p.0.read().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_else(|| Principal::password(""))
}

pub(super) fn fatal(code: SqlState, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.code().to_string(),
        message.into(),
    )))
}

pub(super) fn auth_fatal(e: &AuthError) -> PgWireError {
    fatal(e.sqlstate(), e.to_string())
}

impl Startup {
    fn user<C: ClientInfo>(client: &C) -> String {
        client
            .metadata()
            .get("user")
            .cloned()
            .unwrap_or_else(|| "sextant".to_string())
    }

    /// AuthenticationOk, the server's parameters, the backend key, and
    /// ReadyForQuery: the connection is open as `who`.
    async fn finish<C>(&self, client: &mut C, who: Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret_key) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (handle, guard) = self.connections.register(pid, secret_key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert(guard);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = sextant_sql::pgcompat::settings::SERVER_VERSION.to_string();
        parameters.is_superuser = self.directory.is_admin(&who);
        client
            .session_extensions()
            .insert(SessionPrincipal(std::sync::RwLock::new(who)));
        finish_authentication(client, &parameters).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let peer = client.socket_addr().ip();
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if self.tls_required && !client.is_secure() {
                    return Err(fatal(
                        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                        "this server requires TLS: connect with sslmode=require (or verify-full)",
                    ));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let user = Self::user(client);
                if !self.directory.required() {
                    let who = self
                        .directory
                        .anonymous(peer, &user)
                        .map_err(|e| auth_fatal(&e))?;
                    return self.finish(client, who).await;
                }
                self.directory
                    .allow_attempt(peer, "pgwire")
                    .map_err(|e| auth_fatal(&e))?;
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                // MD5 for the users who asked for it, else SCRAM (also for
                // a name nobody has).
                let (waiting, request) = match self.directory.md5_login(&user) {
                    Some(md5) => {
                        let salt = md5.salt().to_vec();
                        (Waiting::Md5(md5), Authentication::MD5Password(salt))
                    }
                    None => (
                        Waiting::ScramInitial,
                        Authentication::SASL(vec!["SCRAM-SHA-256".to_string()]),
                    ),
                };
                client
                    .session_extensions()
                    .insert(Login(std::sync::Mutex::new(Some(waiting))));
                client
                    .send(PgWireBackendMessage::Authentication(request))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let user = Self::user(client);
                let login = client
                    .session_extensions()
                    .get_or_insert_with(|| Login(std::sync::Mutex::new(None)));
                let waiting = login.0.lock().unwrap_or_else(|e| e.into_inner()).take();
                let failed = |e: AuthError| {
                    self.directory.failed(peer, "pgwire", &user, &e);
                    auth_fatal(&e)
                };
                match waiting {
                    None => {
                        return Err(failed(AuthError::Malformed(
                            "a password message before the server asked for one".into(),
                        )));
                    }
                    Some(Waiting::Md5(md5)) => {
                        let password = msg.into_password()?;
                        md5.finish(&password.password).map_err(failed)?;
                        let who = Principal::password(user);
                        self.directory.succeeded("pgwire", &who);
                        self.finish(client, who).await?;
                    }
                    Some(Waiting::ScramInitial) => {
                        // Read here, not by pgwire's decoder, which panics
                        // on a length past the end of the message.
                        let (mechanism, first) = match msg {
                            PasswordMessageFamily::Raw(body) => {
                                sextant_auth::parse_initial_response(&body).map_err(failed)?
                            }
                            other => {
                                let m = other.into_sasl_initial_response()?;
                                (m.auth_method, m.data.map(|d| d.to_vec()))
                            }
                        };
                        if mechanism != "SCRAM-SHA-256" {
                            return Err(failed(AuthError::Malformed(format!(
                                "SASL mechanism {mechanism} is not offered: use SCRAM-SHA-256"
                            ))));
                        }
                        let first = first.unwrap_or_default();
                        let first = std::str::from_utf8(&first).map_err(|_| {
                            failed(AuthError::Malformed("client-first is not UTF-8".into()))
                        })?;
                        let (server_first, next) = sextant_auth::server_first(
                            &user,
                            self.directory.scram_verifier(&user),
                            first,
                            &sextant_auth::random_nonce(),
                        )
                        .map_err(failed)?;
                        *login.0.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Waiting::ScramFinal(next));
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into_bytes().into()),
                            ))
                            .await?;
                    }
                    Some(Waiting::ScramFinal(waiting)) => {
                        let response = msg.into_sasl_response()?;
                        let last = std::str::from_utf8(&response.data).map_err(|_| {
                            failed(AuthError::Malformed("client-final is not UTF-8".into()))
                        })?;
                        let server_final = waiting.finish(last).map_err(failed)?;
                        client
                            .feed(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(server_final.into_bytes().into()),
                            ))
                            .await?;
                        let who = Principal::password(user);
                        self.directory.succeeded("pgwire", &who);
                        self.finish(client, who).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A pgwire CancelRequest (psql's Ctrl-C): pgwire checks the backend's pid
/// and secret key and interrupts a statement still being planned; every
/// statement of that backend is cancelled in the registry too, which stops
/// one whose rows are streaming.
pub(super) struct Cancel {
    pub(super) connections: Arc<ConnectionManager>,
    pub(super) queries: Queries,
}

#[async_trait]
impl CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let pid = request.pid;
        let known = self.connections.cancel(pid, &request.secret_key).await;
        if known {
            let n = self.queries.cancel_pid(pid);
            info!(pid, statements = n, "cancel request");
        } else {
            debug!(
                pid,
                "cancel request for an unknown backend or with a wrong key"
            );
        }
    }
}
