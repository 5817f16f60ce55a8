//! Users and tokens as stored: a user's row holds its name and a JSON body
//! (SCRAM verifier, grants); a token's row its hash, user and expiry.
//! Dropping a user drops its tokens with it.

use rusqlite::{OptionalExtension, params};

use super::SqliteCatalog;
use crate::{CatalogError, Result, StoredToken, StoredUser};

pub(super) fn users(cat: &SqliteCatalog) -> Result<Vec<StoredUser>> {
    let conn = cat.conn();
    let mut stmt =
        conn.prepare_cached("SELECT name, body, created_at_ns FROM users ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredUser {
            name: r.get(0)?,
            body: r.get(1)?,
            created_at_ns: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn create_user(cat: &SqliteCatalog, user: &StoredUser) -> Result<()> {
    let n = cat.conn().execute(
        "INSERT INTO users (name, body, created_at_ns) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO NOTHING",
        params![user.name, user.body, user.created_at_ns],
    )?;
    if n == 0 {
        return Err(CatalogError::UserExists(user.name.clone()));
    }
    Ok(())
}

pub(super) fn update_user(cat: &SqliteCatalog, name: &str, body: &str) -> Result<()> {
    let n = cat.conn().execute(
        "UPDATE users SET body = ?2 WHERE name = ?1",
        params![name, body],
    )?;
    if n == 0 {
        return Err(CatalogError::UserNotFound(name.to_string()));
    }
    Ok(())
}

pub(super) fn drop_user(cat: &SqliteCatalog, name: &str) -> Result<()> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM tokens WHERE user_name = ?1", [name])?;
    if tx.execute("DELETE FROM users WHERE name = ?1", [name])? == 0 {
        return Err(CatalogError::UserNotFound(name.to_string()));
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn tokens(cat: &SqliteCatalog) -> Result<Vec<StoredToken>> {
    let conn = cat.conn();
    let mut stmt = conn
        .prepare_cached("SELECT name, user_name, body, created_at_ns FROM tokens ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredToken {
            name: r.get(0)?,
            user: r.get(1)?,
            body: r.get(2)?,
            created_at_ns: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn create_token(cat: &SqliteCatalog, token: &StoredToken) -> Result<()> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    let user: Option<String> = tx
        .query_row(
            "SELECT name FROM users WHERE name = ?1",
            [&token.user],
            |r| r.get(0),
        )
        .optional()?;
    if user.is_none() {
        return Err(CatalogError::UserNotFound(token.user.clone()));
    }
    let n = tx.execute(
        "INSERT INTO tokens (name, user_name, body, created_at_ns) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO NOTHING",
        params![token.name, token.user, token.body, token.created_at_ns],
    )?;
    if n == 0 {
        return Err(CatalogError::TokenExists(token.name.clone()));
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn drop_token(cat: &SqliteCatalog, name: &str) -> Result<()> {
    if cat
        .conn()
        .execute("DELETE FROM tokens WHERE name = ?1", [name])?
        == 0
    {
        return Err(CatalogError::TokenNotFound(name.to_string()));
    }
    Ok(())
}
