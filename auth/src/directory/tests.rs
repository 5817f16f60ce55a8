//! Unit tests of the user directory: MD5 and SCRAM logins, grants,
//! tokens and their expiry, and the limit on failed logins.

use super::attempts::MAX_FAILURES;
use super::*;
use crate::scram::Verifier;
use sextant_catalog::SqliteCatalog;
use sextant_sqlstate::SqlState;

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
    assert_eq!(denied.sqlstate(), SqlState::INSUFFICIENT_PRIVILEGE);
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
