//! Grants and the checks they decide: [`Directory::check`] answers whether
//! a principal may do an [`Action`] from the grants (and token limits and
//! expiry) in memory now; `GRANT` and `REVOKE` change a user's grants in
//! the catalog and then in memory, never leaving the last admin.

use super::{Action, Directory, Grant, GrantRow, Principal, Privilege, User, Via, last_admin};
use crate::AuthError;

impl Directory {
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

    pub(super) fn change_grants(
        &self,
        users: &[String],
        change: impl Fn(&mut User),
    ) -> Result<(), AuthError> {
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
}

pub(super) fn objects(tables: Option<&[String]>) -> Vec<Option<String>> {
    match tables {
        None => vec![None],
        Some(ts) => ts.iter().cloned().map(Some).collect(),
    }
}

pub(super) fn what(action: Action<'_>) -> String {
    match action {
        Action::Select(t) | Action::Insert(t) | Action::Manage(t) => format!("for table \"{t}\""),
        Action::Admin(what) => format!("to {what}"),
    }
}
