//! Tokens: `CREATE TOKEN` makes a secret (shown once; only its SHA-256 is
//! kept, [`hash_token`]) for a user, optionally limited to one table and
//! expiring; `DROP TOKEN` revokes it at once; and the listing of tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sextant_catalog::StoredToken;

use super::{Directory, Token, TokenRow, catalog_error, check_name, to_json};
use crate::AuthError;
use crate::scram::{random_bytes, sha256};

/// How a token's secret begins (so that scanners and people recognize one).
pub(super) const TOKEN_PREFIX: &str = "sxt_";

/// The hex SHA-256 of a token's secret: what the catalog keeps.
pub fn hash_token(secret: &str) -> String {
    sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Directory {
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
