//! What a statement may ask of the session it runs in (its user, backend
//! pid and settings) and who runs it: given by each front end to the
//! pipeline ([`crate::plan`]) and read by the Postgres rewrites.

use sextant_auth::Principal;

/// What a statement may ask of its session, and who runs it.
pub struct Session<'a> {
    /// The user the connection logged in as (`current_user`).
    pub user: &'a str,
    /// The pgwire backend pid (`pg_backend_pid()`), if on pgwire.
    pub pid: Option<i32>,
    /// A setting's value in this session, if it has one
    /// (`current_setting('name')`).
    pub setting: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
    /// Who runs the statement; `None` for the server's own work
    /// (materialized views, alert rules), which is not checked.
    pub principal: Option<&'a Principal>,
}
