//! Sextant's users, their credentials, and what each may do.
//!
//! Credentials arrive as a pgwire SCRAM exchange ([`scram`]; [`md5`] for
//! users who ask for it), an HTTP or
//! gRPC `Authorization` header (Basic: a user's name and password; Bearer:
//! a token) or a Flight SQL handshake. [`Directory`] turns them into a
//! [`Principal`], and answers for each statement or request whether that
//! principal may do an [`Action`] ([`Directory::check`]). Users, their
//! grants and their tokens live in the catalog (SCRAM verifiers and token
//! hashes, never a secret) and in memory, so a revoked grant or token is
//! refused at the very next check. Failed logins are counted per client
//! address and refused for a while once there are too many. On gRPC the
//! [`grpc::authenticator`] interceptor does this for every call.

mod directory;
pub mod grpc;
pub mod md5;
pub mod scram;

pub use directory::{
    Action, Directory, GrantRow, NewUser, Principal, Privilege, TokenRow, UserRow, Via, hash_token,
};
pub use md5::Md5Waiting;
pub use scram::{
    DEFAULT_ITERATIONS, ScramWaiting, Verifier, parse_initial_response, random_nonce, server_first,
};
use sextant_sqlstate::SqlState;

/// What can go wrong with a login, a check or a change of users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client sent something that is not a SCRAM message.
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// Channel binding was asked for; Sextant does not offer it.
    #[error("SCRAM channel binding is not supported on this connection")]
    ChannelBinding,
    /// Wrong password, or no such user (the message is the same).
    #[error("password authentication failed for user \"{0}\"")]
    WrongPassword(String),
    /// A token that is unknown, expired or revoked (the message is the same).
    #[error("invalid token: it is unknown, expired or revoked")]
    InvalidToken,
    /// No credentials where they are needed.
    #[error("{0}")]
    Required(String),
    /// Too many failed logins from one address.
    #[error("too many failed logins from this address: try again in {0} s")]
    TooManyFailures(u64),
    /// The principal may not do this.
    #[error("permission denied {0}")]
    PermissionDenied(String),
    /// A stored verifier that does not parse.
    #[error("invalid SCRAM verifier: {0}")]
    BadVerifier(String),
    /// A bad value in a statement (an empty password, a bad name).
    #[error("{0}")]
    Invalid(String),
    /// `CREATE USER` of a name that is taken.
    #[error("user \"{0}\" already exists")]
    UserExists(String),
    /// A user that does not exist (only to an admin: logins never say).
    #[error("user \"{0}\" does not exist")]
    UserNotFound(String),
    /// `CREATE TOKEN` of a name that is taken.
    #[error("token \"{0}\" already exists")]
    TokenExists(String),
    /// A token that does not exist.
    #[error("token \"{0}\" does not exist")]
    TokenNotFound(String),
    /// A change that would leave no admin (and nobody able to manage users).
    #[error("{0}")]
    LastAdmin(String),
    /// The catalog failed.
    #[error("{0}")]
    Catalog(String),
}

impl AuthError {
    /// The SQLSTATE of the error on pgwire.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            AuthError::Malformed(_) | AuthError::ChannelBinding => SqlState::PROTOCOL_VIOLATION,
            AuthError::WrongPassword(_) => SqlState::INVALID_PASSWORD,
            AuthError::InvalidToken | AuthError::Required(_) | AuthError::TooManyFailures(_) => {
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            }
            AuthError::PermissionDenied(_) => SqlState::INSUFFICIENT_PRIVILEGE,
            AuthError::Invalid(_) => SqlState::INVALID_PARAMETER_VALUE,
            AuthError::UserExists(_) | AuthError::TokenExists(_) => SqlState::DUPLICATE_OBJECT,
            AuthError::UserNotFound(_) | AuthError::TokenNotFound(_) => SqlState::UNDEFINED_OBJECT,
            AuthError::LastAdmin(_) => SqlState::OBJECT_IN_USE,
            AuthError::BadVerifier(_) | AuthError::Catalog(_) => SqlState::INTERNAL_ERROR,
        }
    }

    /// Whether this is a failed login (wrong or missing credentials), as
    /// opposed to a refusal of what a known principal asked for.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            AuthError::WrongPassword(_)
                | AuthError::InvalidToken
                | AuthError::Required(_)
                | AuthError::TooManyFailures(_)
        )
    }
}
