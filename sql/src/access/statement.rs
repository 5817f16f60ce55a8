//! The statements that manage users, privileges and tokens: parsed once
//! ([`parse`], from [`crate::classify`]) into an [`AccessStatement`], then
//! carried out for a principal ([`execute`]) by the server's [`Directory`].

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use sextant_auth::{Action, Directory, NewUser, Principal, Privilege, Via};
use sextant_sqlstate::SqlState;

use crate::SqlError;
use crate::ast::{Done, parse_interval, table_name};
use crate::words::{Usage, quoted, word};

/// One of the statements that manage users, privileges and tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessStatement {
    /// `GRANT privileges ON objects TO users`.
    Grant(Grant),
    /// `REVOKE privileges ON objects FROM users`.
    Revoke(Grant),
    /// `CREATE USER [IF NOT EXISTS] name [WITH] PASSWORD '...' [MD5] [SUPERUSER]`.
    CreateUser {
        name: String,
        password: Secret,
        md5: bool,
        superuser: bool,
        if_not_exists: bool,
    },
    /// `ALTER USER name [WITH] [PASSWORD '...' [MD5]] [SUPERUSER | NOSUPERUSER]`.
    AlterUser {
        name: String,
        password: Option<Secret>,
        md5: bool,
        superuser: Option<bool>,
    },
    /// `DROP USER [IF EXISTS] a, b`.
    DropUsers { names: Vec<String>, if_exists: bool },
    /// `CREATE TOKEN name FOR [USER] user [INSERT ON table] [EXPIRES ...]`.
    CreateToken {
        name: String,
        user: String,
        /// The one table the token may write, if it is limited to one.
        table: Option<String>,
        expires: Option<Expiry>,
    },
    /// `DROP TOKEN [IF EXISTS] name`.
    DropToken { name: String, if_exists: bool },
}

/// What a `GRANT` or `REVOKE` names.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub privileges: Vec<Privilege>,
    /// The tables, or `None` for the whole database.
    pub tables: Option<Vec<String>>,
    pub users: Vec<String>,
}

/// When a token expires: after a while from its creation, or at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    In(Duration),
    /// Nanoseconds since the Unix epoch.
    AtNs(i64),
}

/// A password, which never shows in `Debug` output (logs, panics).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("'***'")
    }
}

const U: Usage = Usage(USAGE);

const USAGE: &str = "CREATE USER name WITH PASSWORD '...' [MD5] [SUPERUSER] | ALTER USER name WITH PASSWORD '...' | \
     DROP USER name | GRANT SELECT|INSERT|ALL ON {DATABASE sextant | ALL TABLES | TABLE t} TO user | \
     REVOKE ... FROM user | CREATE TOKEN name FOR USER user [INSERT ON table] [EXPIRES IN '30 days'] | \
     DROP TOKEN name";

/// `text` with the password of a `CREATE USER` or `ALTER USER` replaced by
/// `'***'`, for logs and `system.queries`.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.to_ascii_lowercase().contains("password") {
        return text.into();
    }
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) =
        datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&dialect, text).tokenize()
    else {
        // Not even tokens: show none of it.
        return "<a statement with a password that does not parse>".into();
    };
    let mut out = String::with_capacity(text.len());
    let mut after_password = false;
    for t in &tokens {
        match t {
            Token::SingleQuotedString(_) if after_password => {
                out.push_str("'***'");
                after_password = false;
            }
            Token::Whitespace(_) => out.push_str(&t.to_string()),
            Token::Word(w) if w.value.eq_ignore_ascii_case("password") => {
                after_password = true;
                out.push_str(&t.to_string());
            }
            other => {
                after_password = false;
                out.push_str(&other.to_string());
            }
        }
    }
    out.into()
}

fn names(p: &mut Parser<'_>) -> Result<Vec<String>, SqlError> {
    let mut out = vec![U.name(p)?];
    while p.consume_token(&Token::Comma) {
        out.push(U.name(p)?);
    }
    Ok(out)
}

fn done(tag: &'static str) -> Done {
    Done {
        tag,
        rows: None,
        batch: None,
    }
}

/// Parses one of this module's statements.
pub(crate) fn parse(sql: &str) -> Result<AccessStatement, SqlError> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| U.syntax(e))?;
    if p.parse_keyword(Keyword::GRANT) {
        let (privileges, tables) = privileges_on(&mut p)?;
        U.expect(&mut p, "to")?;
        let users = names(&mut p)?;
        if p.parse_keywords(&[Keyword::WITH, Keyword::GRANT, Keyword::OPTION]) {
            return Err(SqlError::unsupported(
                "WITH GRANT OPTION is not supported: only admins grant privileges",
            ));
        }
        U.end(&mut p)?;
        return Ok(AccessStatement::Grant(Grant {
            privileges,
            tables,
            users,
        }));
    }
    if p.parse_keyword(Keyword::REVOKE) {
        let (privileges, tables) = privileges_on(&mut p)?;
        U.expect(&mut p, "from")?;
        let users = names(&mut p)?;
        U.end(&mut p)?;
        return Ok(AccessStatement::Revoke(Grant {
            privileges,
            tables,
            users,
        }));
    }
    let verb = if p.parse_keyword(Keyword::CREATE) {
        "create"
    } else if p.parse_keyword(Keyword::ALTER) {
        "alter"
    } else if p.parse_keyword(Keyword::DROP) {
        "drop"
    } else {
        return Err(SqlError::syntax(format!("syntax error; usage: {USAGE}")));
    };
    let token = word(&mut p, "token");
    if !token && !word(&mut p, "user") && !word(&mut p, "role") {
        return Err(SqlError::syntax(format!("syntax error; usage: {USAGE}")));
    }
    match (verb, token) {
        ("create", false) => {
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = U.name(&mut p)?;
            let (password, md5, superuser) = user_options(&mut p)?;
            let password = password.ok_or_else(|| {
                SqlError::syntax(format!(
                    "CREATE USER {name} needs a password: CREATE USER {name} WITH PASSWORD '...'"
                ))
            })?;
            Ok(AccessStatement::CreateUser {
                name,
                password: Secret(password),
                md5,
                superuser: superuser == Some(true),
                if_not_exists,
            })
        }
        ("alter", false) => {
            let name = U.name(&mut p)?;
            if word(&mut p, "rename") {
                return Err(SqlError::unsupported(
                    "ALTER USER ... RENAME is not supported: create the new user and drop the old one",
                ));
            }
            let (password, md5, superuser) = user_options(&mut p)?;
            if password.is_none() && superuser.is_none() && !md5 {
                return Err(SqlError::syntax(format!(
                    "syntax error: ALTER USER {name} takes PASSWORD '...' [MD5], SUPERUSER or NOSUPERUSER"
                )));
            }
            Ok(AccessStatement::AlterUser {
                name,
                password: password.map(Secret),
                md5,
                superuser,
            })
        }
        ("drop", false) => {
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let names = names(&mut p)?;
            U.end(&mut p)?;
            Ok(AccessStatement::DropUsers { names, if_exists })
        }
        ("create", true) => parse_create_token(&mut p),
        ("drop", true) => {
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = U.name(&mut p)?;
            U.end(&mut p)?;
            Ok(AccessStatement::DropToken { name, if_exists })
        }
        _ => Err(SqlError::syntax(format!(
            "syntax error: there is no ALTER TOKEN; usage: {USAGE}"
        ))),
    }
}

/// Runs one of this module's statements for `who`, checking first that
/// `who` may (an admin, or a user about their own password or tokens).
pub(crate) fn execute(
    stmt: &AccessStatement,
    directory: &Directory,
    who: &Principal,
) -> Result<Done, SqlError> {
    let admin = |what: &str| directory.check(who, Action::Admin(what));
    match stmt {
        AccessStatement::Grant(g) => {
            admin("grant privileges")?;
            directory.grant(&g.privileges, g.tables.as_deref(), &g.users)?;
            Ok(done("GRANT"))
        }
        AccessStatement::Revoke(g) => {
            admin("revoke privileges")?;
            directory.revoke(&g.privileges, g.tables.as_deref(), &g.users)?;
            Ok(done("REVOKE"))
        }
        AccessStatement::CreateUser {
            name,
            password,
            md5,
            superuser,
            if_not_exists,
        } => {
            admin("create users")?;
            let options = NewUser {
                admin: *superuser,
                md5: *md5,
            };
            directory.create_user(name, &password.0, options, *if_not_exists)?;
            Ok(done("CREATE ROLE"))
        }
        AccessStatement::AlterUser {
            name,
            password,
            md5,
            superuser,
        } => {
            // Anyone may change their own password (not with a token).
            let own = name == who.user() && superuser.is_none() && *who.via() == Via::Password;
            if !own {
                admin("alter other users")?;
            }
            directory.alter_user(
                name,
                password.as_ref().map(|p| p.0.as_str()),
                *md5,
                *superuser,
            )?;
            Ok(done("ALTER ROLE"))
        }
        AccessStatement::DropUsers { names, if_exists } => {
            admin("drop users")?;
            for u in names {
                directory.drop_user(u, *if_exists)?;
            }
            Ok(done("DROP ROLE"))
        }
        AccessStatement::CreateToken {
            name,
            user,
            table,
            expires,
        } => create_token(name, user, table.as_deref(), *expires, directory, who),
        AccessStatement::DropToken { name, if_exists } => {
            let owner = directory.token_owner(name);
            if owner.as_deref() != Some(who.user()) || matches!(who.via(), Via::Token(_)) {
                admin("drop other users' tokens")?;
            }
            directory.drop_token(name, *if_exists)?;
            Ok(done("DROP TOKEN"))
        }
    }
}

/// `[WITH] [ENCRYPTED] PASSWORD '...' | MD5 | SUPERUSER | NOSUPERUSER | ADMIN
/// | LOGIN`: the password, whether pgwire logs the user in with MD5, and
/// admin or not.
type UserOptions = (Option<String>, bool, Option<bool>);

fn user_options(p: &mut Parser<'_>) -> Result<UserOptions, SqlError> {
    let _ = p.parse_keyword(Keyword::WITH);
    let (mut password, mut md5, mut superuser) = (None, false, None);
    loop {
        if word(p, "encrypted") {
            U.expect(p, "password")?;
            password = Some(quoted(p, "the password")?);
        } else if word(p, "password") {
            if p.parse_keyword(Keyword::NULL) {
                return Err(SqlError::unsupported(
                    "PASSWORD NULL is not supported: every user logs in with a password",
                ));
            }
            password = Some(quoted(p, "the password")?);
        } else if word(p, "superuser") || word(p, "admin") {
            superuser = Some(true);
        } else if word(p, "nosuperuser") {
            superuser = Some(false);
        } else if word(p, "md5") {
            md5 = true;
        } else if word(p, "login") {
        } else if p.peek_token().token == Token::EOF {
            return Ok((password, md5, superuser));
        } else {
            return Err(SqlError::syntax(format!(
                "syntax error: unexpected {}: a user takes PASSWORD '...', MD5, SUPERUSER or NOSUPERUSER",
                p.peek_token().token
            )));
        }
    }
}

/// `privileges ON objects`: `None` for the whole database.
fn privileges_on(p: &mut Parser<'_>) -> Result<(Vec<Privilege>, Option<Vec<String>>), SqlError> {
    let mut privileges = vec![];
    loop {
        let privilege = if word(p, "select") || word(p, "read") {
            Privilege::Select
        } else if word(p, "insert") || word(p, "write") {
            Privilege::Insert
        } else if word(p, "all") {
            let _ = word(p, "privileges");
            Privilege::All
        } else if word(p, "admin") {
            Privilege::All
        } else {
            return Err(SqlError::syntax(format!(
                "syntax error: expected SELECT, INSERT or ALL (or the roles read, write, admin), found {}",
                p.peek_token().token
            )));
        };
        privileges.push(privilege);
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    U.expect(p, "on")?;
    if word(p, "database") {
        let db = U.name(p)?;
        if db != sextant_catalog::DATABASE_NAME {
            return Err(SqlError::new(
                SqlState::INVALID_CATALOG_NAME,
                format!(
                    "database \"{db}\" does not exist (there is one: {})",
                    sextant_catalog::DATABASE_NAME
                ),
            ));
        }
        return Ok((privileges, None));
    }
    if word(p, "all") {
        U.expect(p, "tables")?;
        if word(p, "in") {
            U.expect(p, "schema")?;
            let _ = U.name(p)?;
        }
        return Ok((privileges, None));
    }
    let _ = p.parse_keyword(Keyword::TABLE);
    let tables = p
        .parse_comma_separated(|p| p.parse_object_name(false))
        .map_err(|e| U.syntax(e))?
        .iter()
        .map(table_name)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((privileges, Some(tables)))
}

/// `CREATE TOKEN name FOR [USER] user [INSERT ON table] [EXPIRES ...]`.
fn parse_create_token(p: &mut Parser<'_>) -> Result<AccessStatement, SqlError> {
    let name = U.name(p)?;
    U.expect(p, "for")?;
    let _ = word(p, "user");
    let user = U.name(p)?;
    let mut table = None;
    let mut expires = None;
    loop {
        if word(p, "insert") {
            U.expect(p, "on")?;
            let _ = p.parse_keyword(Keyword::TABLE);
            let t = p.parse_object_name(false).map_err(|e| U.syntax(e))?;
            table = Some(table_name(&t)?);
        } else if word(p, "expires") {
            if word(p, "in") {
                let _ = p.parse_keyword(Keyword::INTERVAL);
                expires = Some(Expiry::In(parse_interval(&quoted(p, "the interval")?)?));
            } else {
                let _ = p.parse_keyword(Keyword::TIMESTAMP);
                let text = quoted(p, "the expiry time")?;
                let at = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(&text)
                    .map_err(|_| {
                        SqlError::new(
                            SqlState::INVALID_DATETIME_FORMAT,
                            format!(
                                "'{text}' is not a time: use e.g. EXPIRES '2027-01-01T00:00:00Z' or EXPIRES IN '30 days'"
                            ),
                        )
                    })?;
                expires = Some(Expiry::AtNs(at));
            }
        } else {
            U.end(p)?;
            break;
        }
    }
    Ok(AccessStatement::CreateToken {
        name,
        user,
        table,
        expires,
    })
}

/// Makes the token: one row with its secret.
fn create_token(
    token: &str,
    user: &str,
    table: Option<&str>,
    expires: Option<Expiry>,
    directory: &Directory,
    who: &Principal,
) -> Result<Done, SqlError> {
    let expires_at_ns = expires.map(|e| match e {
        Expiry::In(d) => directory.now_ns().saturating_add(d.as_nanos() as i64),
        Expiry::AtNs(at) => at,
    });
    // A user may make tokens of their own (never more than they may do);
    // a token cannot make tokens.
    if user != who.user() || matches!(who.via(), Via::Token(_)) {
        directory.check(who, Action::Admin("create tokens for other users"))?;
    }
    let secret = directory.create_token(token, user, table, expires_at_ns)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("token_name", DataType::Utf8, false),
        Field::new("user_name", DataType::Utf8, false),
        Field::new("token", DataType::Utf8, false),
        Field::new(
            "expires_at",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![token])) as ArrayRef,
            Arc::new(StringArray::from(vec![user])),
            Arc::new(StringArray::from(vec![secret])),
            Arc::new(TimestampNanosecondArray::from(vec![expires_at_ns]).with_timezone("UTC")),
        ],
    )
    .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(Done {
        tag: "CREATE TOKEN",
        rows: None,
        batch: Some(batch),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("CREATE USER bob WITH  PASSWORD 'hunter2' SUPERUSER"),
            "CREATE USER bob WITH  PASSWORD '***' SUPERUSER"
        );
        assert_eq!(
            redact("alter user bob encrypted password 'x''y'"),
            "alter user bob encrypted password '***'"
        );
        assert_eq!(redact("SELECT 'password'"), "SELECT 'password'");
        assert_eq!(redact("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn statements_parse_once() {
        let s = parse("GRANT select, INSERT ON TABLE cpu, \"Mem\" TO bob, alice").unwrap();
        assert_eq!(
            s,
            AccessStatement::Grant(Grant {
                privileges: vec![Privilege::Select, Privilege::Insert],
                tables: Some(vec!["cpu".into(), "Mem".into()]),
                users: vec!["bob".into(), "alice".into()],
            })
        );
        let s = parse("CREATE USER bob WITH PASSWORD 'hunter2' SUPERUSER").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
        let s = parse("CREATE TOKEN t FOR bob INSERT ON cpu EXPIRES IN '2 days'").unwrap();
        assert_eq!(
            s,
            AccessStatement::CreateToken {
                name: "t".into(),
                user: "bob".into(),
                table: Some("cpu".into()),
                expires: Some(Expiry::In(Duration::from_secs(2 * 86400))),
            }
        );
        assert!(parse("ALTER TOKEN t").is_err());
        assert!(parse("GRANT SELECT ON cpu").is_err());
    }
}
