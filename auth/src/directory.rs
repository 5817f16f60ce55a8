//! Users, grants and tokens: kept in the catalog, mirrored in memory.
//!
//! Every change writes the catalog first and memory second under one write
//! lock, so what a check sees is what a restart would see. Checks read
//! memory only.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sextant_catalog::{Catalog, CatalogError, StoredToken, StoredUser};
use sextant_clock::Clock;

use crate::AuthError;
use crate::md5::Md5Waiting;
use crate::scram::{Verifier, random_bytes, sha256};

/// Failed logins one address may make within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted in, and how long an address that
/// made too many is refused.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How a token's secret begins (so that scanners and people recognize one).
const TOKEN_PREFIX: &str = "sxt_";

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// Read (the role `read`).
    Select,
    /// Write (the role `write`): INSERT, COPY FROM, ingest.
    Insert,
    /// Everything (the role `admin`): on the database, also users, tokens,
    /// views, alerts and the whole of the system tables.
    All,
}

impl Privilege {
    /// Its SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::All => "ALL",
        }
    }
}

/// One grant: a privilege on the database (`table: None`) or one table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Grant {
    privilege: Privilege,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    /// The SCRAM-SHA-256 verifier; empty for a user given as an MD5 hash.
    #[serde(default)]
    verifier: String,
    /// `md5` + hex: set for a user who logs in to pgwire with MD5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
    #[serde(default)]
    grants: Vec<Grant>,
    #[serde(skip)]
    created_at_ns: i64,
}

impl Grant {
    /// ALL on the database: an admin.
    const ADMIN: Grant = Grant {
        privilege: Privilege::All,
        table: None,
    };
}

impl User {
    fn is_admin(&self) -> bool {
        self.grants.contains(&Grant::ADMIN)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    /// SHA-256 of the secret, hex.
    hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ns: Option<i64>,
    #[serde(skip)]
    user: String,
    #[serde(skip)]
    created_at_ns: i64,
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, User>,
    tokens: BTreeMap<String, Token>,
    /// Token hash → token name.
    by_hash: HashMap<String, String>,
}

impl State {
    fn admins(&self) -> usize {
        self.users.values().filter(|u| u.is_admin()).count()
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Nobody needs to (no user exists; loopback only).
    Trusted,
    /// A user's password (SCRAM or Basic).
    Password,
    /// A token, by name.
    Token(String),
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    user: String,
    via: Via,
}

impl Principal {
    /// A client let in without credentials while no user exists, under the
    /// name it gave.
    pub fn trusted(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            via: Via::Trusted,
        }
    }

    /// A user who proved its password (a SCRAM exchange that succeeded).
    pub fn password(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            via: Via::Password,
        }
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// How it logged in.
    pub fn via(&self) -> &Via {
        &self.via
    }
}

/// Something a principal asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read a table.
    Select(&'a str),
    /// Write rows into a table (creating it if ingest does so).
    Insert(&'a str),
    /// Change a table (create, alter, drop, flush, compact).
    Manage(&'a str),
    /// Something only an admin may do, described for the error message
    /// ("create users").
    Admin(&'a str),
}

/// How a new user logs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewUser {
    /// `SUPERUSER`: ALL on the database.
    pub admin: bool,
    /// `MD5`: pgwire logs the user in with MD5 instead of SCRAM-SHA-256.
    pub md5: bool,
}

/// A user as `system.users` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub name: String,
    pub admin: bool,
    /// How pgwire logs the user in: `scram-sha-256` or `md5`.
    pub auth_method: &'static str,
    pub created_at_ns: i64,
}

/// A grant as `system.grants` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRow {
    pub user: String,
    pub privilege: Privilege,
    /// `None` for the whole database.
    pub table: Option<String>,
}

/// A token as `system.tokens` shows it (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub name: String,
    pub user: String,
    pub table: Option<String>,
    pub expires_at_ns: Option<i64>,
    pub created_at_ns: i64,
}

/// The users, their grants and tokens, and the failed-login counts.
pub struct Directory {
    catalog: Arc<dyn Catalog>,
    state: RwLock<State>,
    /// Per-process secret for the mock verifiers of users that do not exist.
    secret: [u8; 32],
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// User → (SHA-256 of a password that matched, the verifier it matched):
    /// Basic auth on every request would otherwise run PBKDF2 every time.
    checked: Mutex<HashMap<String, ([u8; 32], String)>>,
    /// `--allow-unauthenticated`: with no users, clients beyond loopback
    /// are let in too.
    allow_unauthenticated: bool,
    /// The time tokens expire by.
    clock: Clock,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

fn catalog_error(e: CatalogError) -> AuthError {
    match e {
        CatalogError::UserExists(n) => AuthError::UserExists(n),
        CatalogError::UserNotFound(n) => AuthError::UserNotFound(n),
        CatalogError::TokenExists(n) => AuthError::TokenExists(n),
        CatalogError::TokenNotFound(n) => AuthError::TokenNotFound(n),
        e => AuthError::Catalog(e.to_string()),
    }
}

/// The hex SHA-256 of a token's secret: what the catalog keeps.
pub fn hash_token(secret: &str) -> String {
    sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What is stored for a password given in a statement: a SCRAM verifier
/// or an MD5 hash as PostgreSQL prints them (pg_dumpall output) is kept as
/// is; anything else is the password, kept as a SCRAM verifier and, if
/// `md5` (the user logs in with MD5), as an MD5 hash too.
fn secrets_of(
    user: &str,
    password: &str,
    md5: bool,
) -> Result<(String, Option<String>), AuthError> {
    if password.starts_with("SCRAM-SHA-256$") {
        if md5 {
            return Err(AuthError::Invalid(
                "MD5 needs the password itself or its MD5 hash, not a SCRAM verifier".into(),
            ));
        }
        return Ok((Verifier::parse(password)?.to_string(), None));
    }
    if crate::md5::is_stored(password) {
        return Ok((String::new(), Some(password.to_string())));
    }
    if password.is_empty() {
        return Err(AuthError::Invalid("a password must not be empty".into()));
    }
    let stored = md5.then(|| crate::md5::stored(user, password));
    Ok((Verifier::new(password).to_string(), stored))
}

impl Directory {
    /// Loads the users and tokens from `catalog`.
    pub fn open(catalog: Arc<dyn Catalog>) -> Result<Self, AuthError> {
        let mut state = State::default();
        for u in catalog.users().map_err(catalog_error)? {
            let mut user: User = serde_json::from_str(&u.body)
                .map_err(|e| AuthError::Catalog(format!("user {}: {e}", u.name)))?;
            user.created_at_ns = u.created_at_ns;
            state.users.insert(u.name, user);
        }
        for t in catalog.tokens().map_err(catalog_error)? {
            let mut token: Token = serde_json::from_str(&t.body)
                .map_err(|e| AuthError::Catalog(format!("token {}: {e}", t.name)))?;
            token.user = t.user;
            token.created_at_ns = t.created_at_ns;
            state.by_hash.insert(token.hash.clone(), t.name.clone());
            state.tokens.insert(t.name, token);
        }
        Ok(Self {
            catalog,
            state: RwLock::new(state),
            secret: random_bytes(),
            failures: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
            allow_unauthenticated: false,
            clock: Clock::System,
        })
    }

    /// The directory with token expiry read from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time of day, as the directory reads it (token expiry).
    pub fn now_ns(&self) -> i64 {
        self.clock.now_ns()
    }

    /// With no users, let in clients beyond loopback too
    /// (`--allow-unauthenticated`).
    pub fn allow_unauthenticated(mut self, allow: bool) -> Self {
        self.allow_unauthenticated = allow;
        self
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether clients must authenticate: true once a user exists.
    pub fn required(&self) -> bool {
        !self.read().users.is_empty()
    }

    // ---- logins ----

    /// A client that gave no credentials, from `peer`, calling itself
    /// `user`: let in while no user exists, from loopback (or anywhere with
    /// `--allow-unauthenticated`).
    pub fn anonymous(&self, peer: IpAddr, user: &str) -> Result<Principal, AuthError> {
        if self.required() {
            return Err(AuthError::Required(
                "authentication required: give a user's name and password, or a token".into(),
            ));
        }
        if !peer.is_loopback() && !self.allow_unauthenticated {
            return Err(AuthError::Required(format!(
                "Sextant has no users yet, so it accepts clients on loopback only (this one is {peer}): create an admin first (CREATE USER name WITH SUPERUSER PASSWORD '...'), or start with --allow-unauthenticated"
            )));
        }
        Ok(Principal::trusted(user))
    }

    /// The principal of an HTTP or gRPC `Authorization` header: `Basic`
    /// (a user's name and password), `Bearer` or `Token` (a token), or none.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: IpAddr,
        protocol: &str,
    ) -> Result<Principal, AuthError> {
        // While no user exists nobody logs in, and credentials are not
        // looked at (InfluxDB clients always send a token, say).
        let value = authorization.map(str::trim).filter(|v| !v.is_empty());
        let Some(value) = value.filter(|_| self.required()) else {
            return self.anonymous(peer, "anonymous");
        };
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" | "token" => self.login_token(credentials, peer, protocol),
            "basic" => {
                // Padded or not (Go's Flight client sends it unpadded).
                let lenient = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                let decoded = lenient
                    .decode(credentials)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        AuthError::Invalid(
                            "malformed Basic credentials: expected base64 of user:password".into(),
                        )
                    })?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    AuthError::Invalid(
                        "malformed Basic credentials: no ':' between user and password".into(),
                    )
                })?;
                self.login_password(user, password, peer, protocol)
            }
            other => Err(AuthError::Invalid(format!(
                "unsupported authorization scheme \"{other}\": use Basic (user and password) or Bearer (a token)"
            ))),
        }
    }

    /// Refuses an address that failed too often lately.
    pub fn allow_attempt(&self, addr: IpAddr, protocol: &str) -> Result<(), AuthError> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((since, n)) = failures.get(&addr) {
            let elapsed = since.elapsed();
            if *n >= MAX_FAILURES && elapsed < FAILURE_WINDOW {
                count(protocol, "limited");
                return Err(AuthError::TooManyFailures(
                    (FAILURE_WINDOW - elapsed).as_secs().max(1),
                ));
            }
        }
        Ok(())
    }

    /// Counts and logs a failed login.
    pub fn failed(&self, addr: IpAddr, protocol: &str, user: &str, error: &AuthError) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 10_000 {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(addr).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        count(protocol, "failed");
        tracing::warn!(%addr, protocol, user, failures = entry.1, error = %error, "login failed");
    }

    /// Counts a login that succeeded.
    pub fn succeeded(&self, protocol: &str, principal: &Principal) {
        count(protocol, "ok");
        tracing::debug!(protocol, user = principal.user(), "login");
    }

    /// The verifier a SCRAM exchange for `user` runs against: the user's, or
    /// for a name nobody has a mock one that fails in the same way.
    pub fn scram_verifier(&self, user: &str) -> Verifier {
        self.read()
            .users
            .get(user)
            .and_then(|u| Verifier::parse(&u.verifier).ok())
            .unwrap_or_else(|| Verifier::mock(user, &self.secret))
    }

    /// The MD5 login pgwire runs for `user`, if the user logs in with MD5
    /// (`None`: SCRAM, also for a name nobody has).
    pub fn md5_login(&self, user: &str) -> Option<Md5Waiting> {
        let stored = self.read().users.get(user)?.md5.clone()?;
        Some(Md5Waiting::new(user, Some(stored)))
    }

    /// Checks a user's name and password (HTTP Basic, Flight handshake).
    pub fn login_password(
        &self,
        user: &str,
        password: &str,
        addr: IpAddr,
        protocol: &str,
    ) -> Result<Principal, AuthError> {
        self.allow_attempt(addr, protocol)?;
        let stored = self.read().users.get(user).cloned();
        let digest = sha256(password.as_bytes());
        let ok = match stored.map(|u| (u.verifier, u.md5)) {
            // Given as an MD5 hash only: that is all there is to check.
            Some((v, Some(md5))) if v.is_empty() => crate::md5::constant_time_eq(
                crate::md5::stored(user, password).as_bytes(),
                md5.as_bytes(),
            ),
            Some((v, _)) => {
                let cached = self
                    .checked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(user)
                    .is_some_and(|(d, cv)| d == &digest && *cv == v);
                cached
                    || Verifier::parse(&v).is_ok_and(|v| v.matches(password)) && {
                        self.checked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(user.to_string(), (digest, v.clone()));
                        true
                    }
            }
            None => {
                // As much work as for a real user, so timing does not tell.
                let _ = Verifier::mock(user, &self.secret).matches(password);
                false
            }
        };
        if !ok {
            let e = AuthError::WrongPassword(user.to_string());
            self.failed(addr, protocol, user, &e);
            return Err(e);
        }
        let p = Principal::password(user);
        self.succeeded(protocol, &p);
        Ok(p)
    }

    /// Checks a token's secret (HTTP and gRPC Bearer, Flight SQL).
    pub fn login_token(
        &self,
        secret: &str,
        addr: IpAddr,
        protocol: &str,
    ) -> Result<Principal, AuthError> {
        self.allow_attempt(addr, protocol)?;
        let hash = hash_token(secret);
        let state = self.read();
        let found = state.by_hash.get(&hash).and_then(|name| {
            let t = state.tokens.get(name)?;
            let live = t.expires_at_ns.is_none_or(|e| e > self.clock.now_ns());
            live.then(|| Principal {
                user: t.user.clone(),
                via: Via::Token(name.clone()),
            })
        });
        drop(state);
        match found {
            Some(p) => {
                self.succeeded(protocol, &p);
                Ok(p)
            }
            None => {
                let e = AuthError::InvalidToken;
                self.failed(addr, protocol, "", &e);
                Err(e)
            }
        }
    }

    // ---- checks ----

    /// Whether `who` may do `action` now (grants, token limits and expiry as
    /// they are at this moment).
    pub fn check(&self, who: &Principal, action: Action<'_>) -> Result<(), AuthError> {
        let state = self.read();
        if let Via::Trusted = who.via {
            return if state.users.is_empty() {
                Ok(())
            } else {
                Err(AuthError::Required(
                    "authentication is required now that a user exists: reconnect with a user's name and password".into(),
                ))
            };
        }
        let Some(user) = state.users.get(&who.user) else {
            return Err(AuthError::Required(format!(
                "user \"{}\" no longer exists",
                who.user
            )));
        };
        if let Via::Token(name) = &who.via {
            let Some(token) = state.tokens.get(name) else {
                return Err(AuthError::InvalidToken);
            };
            if token
                .expires_at_ns
                .is_some_and(|e| e <= self.clock.now_ns())
            {
                return Err(AuthError::InvalidToken);
            }
            if let Some(only) = &token.table
                && action != Action::Insert(only)
            {
                return Err(AuthError::PermissionDenied(format!(
                    "{}: token \"{name}\" may only write table \"{only}\"",
                    what(action)
                )));
            }
        }
        let allowed = user.grants.iter().any(|g| {
            let on = |t: &str| g.table.as_deref().is_none_or(|gt| gt == t);
            match action {
                Action::Select(t) => g.privilege != Privilege::Insert && on(t),
                Action::Insert(t) => g.privilege != Privilege::Select && on(t),
                Action::Manage(t) => g.privilege == Privilege::All && on(t),
                Action::Admin(_) => g.privilege == Privilege::All && g.table.is_none(),
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied(format!(
                "{}: user \"{}\" {}",
                what(action),
                who.user,
                match action {
                    Action::Select(_) => "has no SELECT on it",
                    Action::Insert(_) => "has no INSERT on it",
                    Action::Manage(_) => "has no ALL on it",
                    Action::Admin(_) => "is not an admin",
                }
            )))
        }
    }

    /// Whether `who` is an admin (sees all of the system tables).
    pub fn is_admin(&self, who: &Principal) -> bool {
        self.check(who, Action::Admin("")).is_ok()
    }

    /// The tables `who` may read by name, or `None` if it may read every
    /// table (a SELECT or ALL on the database).
    pub fn readable_tables(&self, who: &Principal) -> Option<Vec<String>> {
        let state = self.read();
        if let Via::Trusted = who.via {
            // Before the first user everyone may read everything; after,
            // a trusted session may read nothing.
            return if state.users.is_empty() {
                None
            } else {
                Some(vec![])
            };
        }
        let Some(user) = state.users.get(&who.user) else {
            return Some(vec![]);
        };
        if let Via::Token(name) = &who.via {
            let usable = state.tokens.get(name).is_some_and(|t| {
                // An ingest token only writes; an expired one does nothing.
                t.table.is_none() && t.expires_at_ns.is_none_or(|e| e > self.clock.now_ns())
            });
            if !usable {
                return Some(vec![]);
            }
        }
        let reads = || {
            user.grants
                .iter()
                .filter(|g| g.privilege != Privilege::Insert)
        };
        if reads().any(|g| g.table.is_none()) {
            return None;
        }
        Some(reads().filter_map(|g| g.table.clone()).collect())
    }

    // ---- changes ----

    /// `CREATE USER`. The first user must be an admin, or nobody could
    /// manage users once logins are required. Returns false if the user
    /// exists and `if_not_exists` is set.
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        options: NewUser,
        if_not_exists: bool,
    ) -> Result<bool, AuthError> {
        check_name(name, "user")?;
        let (verifier, md5) = secrets_of(name, password, options.md5)?;
        let admin = options.admin;
        let mut state = self.write();
        if state.users.contains_key(name) {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(AuthError::UserExists(name.into()))
            };
        }
        if !admin && state.admins() == 0 {
            return Err(AuthError::LastAdmin(format!(
                "the first user must be an admin, or nobody could manage users once logins are required: CREATE USER {name} WITH SUPERUSER PASSWORD '...'"
            )));
        }
        let user = User {
            verifier,
            md5,
            grants: if admin { vec![Grant::ADMIN] } else { vec![] },
            created_at_ns: self.clock.now_ns(),
        };
        self.catalog
            .create_user(&StoredUser {
                name: name.into(),
                body: to_json(&user),
                created_at_ns: user.created_at_ns,
            })
            .map_err(catalog_error)?;
        state.users.insert(name.into(), user);
        Ok(true)
    }

    /// `ALTER USER`: a new password (with MD5 or not) and/or admin or not.
    pub fn alter_user(
        &self,
        name: &str,
        password: Option<&str>,
        md5: bool,
        admin: Option<bool>,
    ) -> Result<(), AuthError> {
        if md5 && password.is_none() {
            return Err(AuthError::Invalid(format!(
                "MD5 needs the password: ALTER USER {name} PASSWORD '...' MD5"
            )));
        }
        let secrets = password.map(|p| secrets_of(name, p, md5)).transpose()?;
        let mut state = self.write();
        let mut user = state
            .users
            .get(name)
            .cloned()
            .ok_or_else(|| AuthError::UserNotFound(name.into()))?;
        if let Some((verifier, md5)) = secrets {
            user.verifier = verifier;
            user.md5 = md5;
        }
        match admin {
            Some(true) if !user.is_admin() => user.grants.push(Grant::ADMIN),
            Some(false) if user.is_admin() => {
                if state.admins() == 1 {
                    return Err(last_admin(name));
                }
                user.grants.retain(|g| g != &Grant::ADMIN);
            }
            _ => {}
        }
        self.store_user(&mut state, name, user)
    }

    fn store_user(&self, state: &mut State, name: &str, user: User) -> Result<(), AuthError> {
        self.catalog
            .update_user(name, &to_json(&user))
            .map_err(catalog_error)?;
        state.users.insert(name.into(), user);
        Ok(())
    }

    /// `DROP USER`, with its tokens. Returns false if there was no such
    /// user and `if_exists` is set.
    pub fn drop_user(&self, name: &str, if_exists: bool) -> Result<bool, AuthError> {
        let mut state = self.write();
        let Some(user) = state.users.get(name) else {
            return if if_exists {
                Ok(false)
            } else {
                Err(AuthError::UserNotFound(name.into()))
            };
        };
        if user.is_admin() && state.admins() == 1 && state.users.len() > 1 {
            return Err(last_admin(name));
        }
        self.catalog.drop_user(name).map_err(catalog_error)?;
        state.users.remove(name);
        let gone: Vec<String> = state
            .tokens
            .iter()
            .filter(|(_, t)| t.user == name)
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            if let Some(t) = state.tokens.remove(&n) {
                state.by_hash.remove(&t.hash);
            }
        }
        Ok(true)
    }

    /// `GRANT privileges ON tables (None: the database) TO users`.
    pub fn grant(
        &self,
        privileges: &[Privilege],
        tables: Option<&[String]>,
        users: &[String],
    ) -> Result<(), AuthError> {
        self.change_grants(users, |user| {
            for p in privileges {
                for table in objects(tables) {
                    let g = Grant {
                        privilege: *p,
                        table,
                    };
                    if !user.grants.contains(&g) {
                        user.grants.push(g);
                    }
                }
            }
            user.grants.sort();
        })
    }

    /// `REVOKE privileges ON tables FROM users`. Revoking SELECT or INSERT
    /// also takes them out of an ALL on the same object.
    pub fn revoke(
        &self,
        privileges: &[Privilege],
        tables: Option<&[String]>,
        users: &[String],
    ) -> Result<(), AuthError> {
        self.change_grants(users, |user| {
            for p in privileges {
                for table in objects(tables) {
                    let mut kept = vec![];
                    for g in user.grants.drain(..) {
                        if g.table != table
                            || (*p != Privilege::All
                                && g.privilege != *p
                                && g.privilege != Privilege::All)
                        {
                            kept.push(g);
                        } else if g.privilege == Privilege::All && *p != Privilege::All {
                            // ALL minus one: the other one stays.
                            let other = if *p == Privilege::Select {
                                Privilege::Insert
                            } else {
                                Privilege::Select
                            };
                            kept.push(Grant {
                                privilege: other,
                                table: g.table,
                            });
                        }
                    }
                    user.grants = kept;
                }
            }
            user.grants.sort();
            user.grants.dedup();
        })
    }

    fn change_grants(&self, users: &[String], change: impl Fn(&mut User)) -> Result<(), AuthError> {
        let mut state = self.write();
        let mut changed = vec![];
        for name in users {
            let mut user = state
                .users
                .get(name)
                .cloned()
                .ok_or_else(|| AuthError::UserNotFound(name.clone()))?;
            change(&mut user);
            changed.push((name.clone(), user));
        }
        let admins_after = state.admins()
            - changed
                .iter()
                .filter(|(n, u)| state.users[n].is_admin() && !u.is_admin())
                .count();
        if admins_after == 0 {
            return Err(last_admin(&changed[0].0));
        }
        for (name, user) in changed {
            self.store_user(&mut state, &name, user)?;
        }
        Ok(())
    }

    /// `CREATE TOKEN name FOR USER user [ON TABLE table] [EXPIRES at]`:
    /// returns the secret, which is shown this once.
    pub fn create_token(
        &self,
        name: &str,
        user: &str,
        table: Option<&str>,
        expires_at_ns: Option<i64>,
    ) -> Result<String, AuthError> {
        check_name(name, "token")?;
        let now = self.clock.now_ns();
        if expires_at_ns.is_some_and(|e| e <= now) {
            return Err(AuthError::Invalid(
                "the token would expire before it is made: EXPIRES must be in the future".into(),
            ));
        }
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(random_bytes::<32>())
        );
        let mut state = self.write();
        if !state.users.contains_key(user) {
            return Err(AuthError::UserNotFound(user.into()));
        }
        let token = Token {
            hash: hash_token(&secret),
            table: table.map(str::to_string),
            expires_at_ns,
            user: user.into(),
            created_at_ns: now,
        };
        self.catalog
            .create_token(&StoredToken {
                name: name.into(),
                user: user.into(),
                body: to_json(&token),
                created_at_ns: now,
            })
            .map_err(catalog_error)?;
        state.by_hash.insert(token.hash.clone(), name.into());
        state.tokens.insert(name.into(), token);
        Ok(secret)
    }

    /// `DROP TOKEN`: the token stops working at once.
    pub fn drop_token(&self, name: &str, if_exists: bool) -> Result<bool, AuthError> {
        let mut state = self.write();
        if !state.tokens.contains_key(name) {
            return if if_exists {
                Ok(false)
            } else {
                Err(AuthError::TokenNotFound(name.into()))
            };
        }
        self.catalog.drop_token(name).map_err(catalog_error)?;
        if let Some(t) = state.tokens.remove(name) {
            state.by_hash.remove(&t.hash);
        }
        Ok(true)
    }

    /// The owner of a token, if it exists.
    pub fn token_owner(&self, name: &str) -> Option<String> {
        self.read().tokens.get(name).map(|t| t.user.clone())
    }

    /// Whether a user exists.
    pub fn user_exists(&self, name: &str) -> bool {
        self.read().users.contains_key(name)
    }

    // ---- listings ----

    pub fn users(&self) -> Vec<UserRow> {
        self.read()
            .users
            .iter()
            .map(|(name, u)| UserRow {
                name: name.clone(),
                admin: u.is_admin(),
                auth_method: if u.md5.is_some() {
                    "md5"
                } else {
                    "scram-sha-256"
                },
                created_at_ns: u.created_at_ns,
            })
            .collect()
    }

    pub fn grants(&self) -> Vec<GrantRow> {
        self.read()
            .users
            .iter()
            .flat_map(|(name, u)| {
                u.grants.iter().map(move |g| GrantRow {
                    user: name.clone(),
                    privilege: g.privilege,
                    table: g.table.clone(),
                })
            })
            .collect()
    }

    pub fn tokens(&self) -> Vec<TokenRow> {
        self.read()
            .tokens
            .iter()
            .map(|(name, t)| TokenRow {
                name: name.clone(),
                user: t.user.clone(),
                table: t.table.clone(),
                expires_at_ns: t.expires_at_ns,
                created_at_ns: t.created_at_ns,
            })
            .collect()
    }
}

fn objects(tables: Option<&[String]>) -> Vec<Option<String>> {
    match tables {
        None => vec![None],
        Some(ts) => ts.iter().cloned().map(Some).collect(),
    }
}

fn what(action: Action<'_>) -> String {
    match action {
        Action::Select(t) | Action::Insert(t) | Action::Manage(t) => format!("for table \"{t}\""),
        Action::Admin(what) => format!("to {what}"),
    }
}

fn last_admin(name: &str) -> AuthError {
    AuthError::LastAdmin(format!(
        "\"{name}\" is the last admin: make another user an admin first (ALTER USER ... WITH SUPERUSER)"
    ))
}

fn check_name(name: &str, what: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control()) {
        return Err(AuthError::Invalid(format!(
            "invalid {what} name \"{name}\": 1 to 63 characters, no control characters"
        )));
    }
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("users and tokens serialize")
}

fn count(protocol: &str, outcome: &str) {
    sextant_metrics::metrics()
        .logins
        .with_label_values(&[protocol, outcome])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_catalog::SqliteCatalog;

    /// A directory on a manual clock, which the tests move.
    fn directory() -> (Arc<dyn Catalog>, Directory) {
        let catalog: Arc<dyn Catalog> = Arc::new(SqliteCatalog::in_memory().unwrap());
        let d = Directory::open(catalog.clone())
            .unwrap()
            .with_clock(Clock::manual(1_767_225_600_000_000_000));
        (catalog, d)
    }

    const ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const ADMIN: NewUser = NewUser {
        admin: true,
        md5: false,
    };
    const MD5: NewUser = NewUser {
        admin: false,
        md5: true,
    };

    /// The answer a client sends to an MD5 challenge.
    fn md5_answer(user: &str, password: &str, salt: [u8; 4]) -> String {
        crate::md5::salted(&crate::md5::stored(user, password), &salt)
    }

    #[test]
    fn md5_users_are_asked_for_md5_and_keep_it_until_a_new_password() {
        let (catalog, d) = directory();
        d.create_user("root", "rootpw", ADMIN, false).unwrap();
        assert!(d.md5_login("root").is_none());
        assert!(d.md5_login("nobody").is_none());
        d.create_user("old", "oldpw", MD5, false).unwrap();
        let login = d.md5_login("old").unwrap();
        let salt = login.salt();
        login.finish(&md5_answer("old", "oldpw", salt)).unwrap();
        let login = d.md5_login("old").unwrap();
        let salt = login.salt();
        assert!(login.finish(&md5_answer("old", "wrong", salt)).is_err());
        // Basic auth and SCRAM still work with the password.
        d.login_password("old", "oldpw", ADDR, "test").unwrap();
        assert!(d.scram_verifier("old").matches("oldpw"));
        let row = |d: &Directory| d.users().into_iter().find(|u| u.name == "old").unwrap();
        assert_eq!(row(&d).auth_method, "md5");
        // It survives a restart.
        let d = Directory::open(catalog).unwrap();
        assert!(d.md5_login("old").is_some());
        // A new password without MD5 is SCRAM only.
        d.alter_user("old", Some("newpw"), false, None).unwrap();
        assert!(d.md5_login("old").is_none());
        assert_eq!(row(&d).auth_method, "scram-sha-256");
        assert!(matches!(
            d.alter_user("old", None, true, None),
            Err(AuthError::Invalid(_))
        ));
        // An MD5 hash from pg_dumpall is kept as is, and implies MD5.
        let hash = crate::md5::stored("dumped", "dumpedpw");
        d.create_user("dumped", &hash, NewUser::default(), false)
            .unwrap();
        let login = d.md5_login("dumped").unwrap();
        let salt = login.salt();
        login
            .finish(&md5_answer("dumped", "dumpedpw", salt))
            .unwrap();
        d.login_password("dumped", "dumpedpw", ADDR, "test")
            .unwrap();
        assert!(d.login_password("dumped", &hash, ADDR, "test").is_err());
        // A SCRAM verifier cannot become an MD5 hash.
        let verifier = Verifier::new("x").to_string();
        assert!(matches!(
            d.create_user("v", &verifier, MD5, false),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn grants_decide_what_a_user_may_do() {
        let (catalog, d) = directory();
        let trusted = Principal::trusted("anyone");
        assert!(d.check(&trusted, Action::Admin("x")).is_ok());
        assert_eq!(d.readable_tables(&trusted), None);
        assert!(matches!(
            d.create_user("reader", "pw", NewUser::default(), false),
            Err(AuthError::LastAdmin(_))
        ));
        d.create_user("root", "rootpw", ADMIN, false).unwrap();
        assert!(matches!(
            d.check(&trusted, Action::Select("t")),
            Err(AuthError::Required(_))
        ));
        assert_eq!(d.readable_tables(&trusted), Some(vec![]));
        d.create_user("reader", "pw", NewUser::default(), false)
            .unwrap();
        assert!(
            !d.create_user("reader", "pw", NewUser::default(), true)
                .unwrap()
        );
        d.grant(
            &[Privilege::Select],
            Some(&["cpu".into()]),
            &["reader".into()],
        )
        .unwrap();
        let reader = d.login_password("reader", "pw", ADDR, "test").unwrap();
        assert!(d.check(&reader, Action::Select("cpu")).is_ok());
        let denied = d.check(&reader, Action::Insert("cpu")).unwrap_err();
        assert_eq!(denied.sqlstate(), "42501");
        assert_eq!(
            denied.to_string(),
            "permission denied for table \"cpu\": user \"reader\" has no INSERT on it"
        );
        assert!(d.check(&reader, Action::Select("mem")).is_err());
        assert_eq!(d.readable_tables(&reader), Some(vec!["cpu".to_string()]));
        let root = d.login_password("root", "rootpw", ADDR, "test").unwrap();
        assert!(d.check(&root, Action::Admin("create users")).is_ok());
        assert_eq!(d.readable_tables(&root), None);
        // ALL on the table, minus INSERT, leaves SELECT.
        d.grant(&[Privilege::All], Some(&["mem".into()]), &["reader".into()])
            .unwrap();
        assert!(d.check(&reader, Action::Manage("mem")).is_ok());
        d.revoke(
            &[Privilege::Insert],
            Some(&["mem".into()]),
            &["reader".into()],
        )
        .unwrap();
        assert!(d.check(&reader, Action::Insert("mem")).is_err());
        assert!(d.check(&reader, Action::Select("mem")).is_ok());
        // The last admin stays.
        assert!(matches!(
            d.alter_user("root", None, false, Some(false)),
            Err(AuthError::LastAdmin(_))
        ));
        assert!(matches!(
            d.revoke(&[Privilege::All], None, &["root".into()]),
            Err(AuthError::LastAdmin(_))
        ));
        // All of it comes back from the catalog.
        let again = Directory::open(catalog).unwrap();
        assert_eq!(again.grants(), d.grants());
        assert!(again.login_password("reader", "pw", ADDR, "test").is_ok());
        assert!(again.check(&reader, Action::Select("mem")).is_ok());
    }

    #[test]
    fn tokens_are_limited_expire_and_are_revoked_at_once() {
        let (catalog, d) = directory();
        d.create_user("root", "pw", ADMIN, false).unwrap();
        let secret = d.create_token("ingest", "root", Some("cpu"), None).unwrap();
        assert!(secret.starts_with("sxt_"));
        let p = d.login_token(&secret, ADDR, "test").unwrap();
        assert_eq!(p.user(), "root");
        assert!(d.check(&p, Action::Insert("cpu")).is_ok());
        assert!(d.check(&p, Action::Insert("mem")).is_err());
        assert!(d.check(&p, Action::Select("cpu")).is_err());
        // An ingest token of an admin reads nothing, not even system tables.
        assert_eq!(d.readable_tables(&p), Some(vec![]));
        assert!(!catalog.tokens().unwrap()[0].body.contains(&secret));
        d.drop_token("ingest", false).unwrap();
        assert_eq!(
            d.check(&p, Action::Insert("cpu")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            d.login_token(&secret, ADDR, "test"),
            Err(AuthError::InvalidToken)
        );
        let soon = d.now_ns() + 300_000_000;
        let secret = d.create_token("brief", "root", None, Some(soon)).unwrap();
        let p = d.login_token(&secret, ADDR, "test").unwrap();
        assert!(d.check(&p, Action::Select("cpu")).is_ok());
        assert_eq!(d.readable_tables(&p), None);
        d.clock.set(soon);
        assert_eq!(d.readable_tables(&p), Some(vec![]));
        assert_eq!(
            d.check(&p, Action::Select("cpu")),
            Err(AuthError::InvalidToken)
        );
        assert!(d.create_token("past", "root", None, Some(1)).is_err());
    }

    #[test]
    fn failed_logins_look_alike_and_are_limited() {
        let (_, d) = directory();
        d.create_user("root", "pw", ADMIN, false).unwrap();
        let addr: IpAddr = "10.0.0.9".parse().unwrap();
        let unknown = d.login_password("nobody", "x", addr, "test").unwrap_err();
        let wrong = d.login_password("root", "x", addr, "test").unwrap_err();
        assert_eq!(unknown.sqlstate(), wrong.sqlstate());
        assert_eq!(
            wrong.to_string(),
            "password authentication failed for user \"root\""
        );
        for _ in 2..MAX_FAILURES {
            let _ = d.login_password("root", "x", addr, "test");
        }
        assert!(matches!(
            d.login_password("root", "pw", addr, "test"),
            Err(AuthError::TooManyFailures(_))
        ));
        // Another address is not held up.
        assert!(d.login_password("root", "pw", ADDR, "test").is_ok());
    }
}
