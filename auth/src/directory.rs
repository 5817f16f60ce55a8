//! Users, grants and tokens: kept in the catalog, mirrored in memory.
//!
//! Every change writes the catalog first and memory second under one write
//! lock, so what a check sees is what a restart would see. Checks read
//! memory only.
//!
//! This file holds the types (users, grants, tokens, [`Principal`],
//! [`Action`]), the [`Directory`] and its loading from the catalog. What the
//! directory does is split by job: [`login`] (credentials → principal),
//! [`attempts`] (failed logins per address), [`grants`] (the checks, GRANT
//! and REVOKE), [`users`] (CREATE, ALTER, DROP USER) and [`tokens`]
//! (CREATE and DROP TOKEN).

mod attempts;
mod grants;
mod login;
#[cfg(test)]
mod tests;
mod tokens;
mod users;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sextant_catalog::{Catalog, CatalogError};
use sextant_clock::Clock;

use crate::AuthError;
use crate::scram::random_bytes;

pub use tokens::hash_token;

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

/// The users and tokens `catalog` holds.
fn load(catalog: &dyn Catalog) -> Result<State, AuthError> {
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
    Ok(state)
}

impl Directory {
    /// Loads the users and tokens from `catalog`.
    pub fn open(catalog: Arc<dyn Catalog>) -> Result<Self, AuthError> {
        let state = load(catalog.as_ref())?;
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

    /// Reads the users and tokens again, for changes another node made to
    /// a shared catalog.
    pub fn reload(&self) -> Result<(), AuthError> {
        let state = load(self.catalog.as_ref())?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
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
