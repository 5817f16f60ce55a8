//! Users: `CREATE USER`, `ALTER USER`, `DROP USER` (which takes the user's
//! tokens with it) and the listing of users. A password given in a
//! statement becomes a SCRAM verifier (and an MD5 hash for MD5 users);
//! each change goes to the catalog, then to memory.

use super::{
    Directory, Grant, NewUser, State, User, UserRow, catalog_error, check_name, last_admin, to_json,
};
use crate::AuthError;
use crate::scram::Verifier;
use sextant_catalog::StoredUser;

impl Directory {
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

    pub(super) fn store_user(
        &self,
        state: &mut State,
        name: &str,
        user: User,
    ) -> Result<(), AuthError> {
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

    /// Whether a user exists.
    pub fn user_exists(&self, name: &str) -> bool {
        self.read().users.contains_key(name)
    }

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
}

/// What is stored for a password given in a statement: a SCRAM verifier
/// or an MD5 hash as PostgreSQL prints them (pg_dumpall output) is kept as
/// is; anything else is the password, kept as a SCRAM verifier and, if
/// `md5` (the user logs in with MD5), as an MD5 hash too.
pub(super) fn secrets_of(
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
