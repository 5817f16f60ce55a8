//! Users and tokens as stored: a user's row holds its name and a JSON body
//! (SCRAM verifier, grants); a token's row its hash, user and expiry.
//! Dropping a user drops its tokens with it.

use crate::db::{Tx, params};
use crate::{CatalogError, Result, StoredToken, StoredUser};

pub(super) fn users(tx: &mut dyn Tx) -> Result<Vec<StoredUser>> {
    tx.query(
        "SELECT name, body, created_at_ns FROM users ORDER BY name",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(StoredUser {
            name: r.text(0)?,
            body: r.text(1)?,
            created_at_ns: r.int(2)?,
        })
    })
    .collect()
}

pub(super) fn create_user(tx: &mut dyn Tx, user: &StoredUser) -> Result<()> {
    let n = tx.execute(
        "INSERT INTO users (name, body, created_at_ns) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
        params![&user.name, &user.body, user.created_at_ns],
    )?;
    if n == 0 {
        return Err(CatalogError::UserExists(user.name.clone()));
    }
    Ok(())
}

pub(super) fn update_user(tx: &mut dyn Tx, name: &str, body: &str) -> Result<()> {
    let n = tx.execute(
        "UPDATE users SET body = $2 WHERE name = $1",
        params![name, body],
    )?;
    if n == 0 {
        return Err(CatalogError::UserNotFound(name.to_string()));
    }
    Ok(())
}

pub(super) fn drop_user(tx: &mut dyn Tx, name: &str) -> Result<()> {
    tx.execute("DELETE FROM tokens WHERE user_name = $1", params![name])?;
    if tx.execute("DELETE FROM users WHERE name = $1", params![name])? == 0 {
        return Err(CatalogError::UserNotFound(name.to_string()));
    }
    Ok(())
}

pub(super) fn tokens(tx: &mut dyn Tx) -> Result<Vec<StoredToken>> {
    tx.query(
        "SELECT name, user_name, body, created_at_ns FROM tokens ORDER BY name",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(StoredToken {
            name: r.text(0)?,
            user: r.text(1)?,
            body: r.text(2)?,
            created_at_ns: r.int(3)?,
        })
    })
    .collect()
}

pub(super) fn create_token(tx: &mut dyn Tx, token: &StoredToken) -> Result<()> {
    let users = tx.query_int(
        "SELECT count(*) FROM users WHERE name = $1",
        params![&token.user],
    )?;
    if users == 0 {
        return Err(CatalogError::UserNotFound(token.user.clone()));
    }
    let n = tx.execute(
        "INSERT INTO tokens (name, user_name, body, created_at_ns) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
        params![&token.name, &token.user, &token.body, token.created_at_ns],
    )?;
    if n == 0 {
        return Err(CatalogError::TokenExists(token.name.clone()));
    }
    Ok(())
}
