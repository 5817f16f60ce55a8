//! PostgreSQL's MD5 password authentication, for old clients whose users
//! ask for it (`CREATE USER ... PASSWORD '...' MD5`).
//!
//! The catalog keeps `md5` followed by the hex MD5 of the password and the
//! user's name (what PostgreSQL keeps). A login sends a random 4-byte salt
//! (`AuthenticationMD5Password`); the client answers `md5` followed by the
//! hex MD5 of the stored hash's hex digits and the salt. MD5 is weak: the
//! stored hash is as good as the password for this exchange. SCRAM-SHA-256
//! stays the default.

use crate::AuthError;
use crate::scram::random_bytes;

/// What PostgreSQL stores for `password` of `user`: `md5` + 32 hex digits.
pub fn stored(user: &str, password: &str) -> String {
    format!("md5{:x}", md5::compute(format!("{password}{user}")))
}

/// Whether `text` is a stored MD5 hash as PostgreSQL prints them
/// (pg_dumpall), to be kept as is when given as a password.
pub fn is_stored(text: &str) -> bool {
    text.len() == 35
        && text.starts_with("md5")
        && text[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An MD5 login under way: the salt sent to the client and the hash its
/// answer must be made from.
#[derive(Debug)]
pub struct Md5Waiting {
    user: String,
    stored: Option<String>,
    salt: [u8; 4],
}

impl Md5Waiting {
    /// A login of `user` against `stored` (`None` fails, in the same way).
    pub fn new(user: &str, stored: Option<String>) -> Self {
        Md5Waiting {
            user: user.to_string(),
            stored,
            salt: random_bytes::<4>(),
        }
    }

    /// The salt for `AuthenticationMD5Password`.
    pub fn salt(&self) -> [u8; 4] {
        self.salt
    }

    /// Checks the client's PasswordMessage.
    pub fn finish(self, response: &str) -> Result<(), AuthError> {
        let expected = self
            .stored
            .as_deref()
            .map(|s| salted(s, &self.salt))
            .unwrap_or_default();
        if !expected.is_empty() && constant_time_eq(expected.as_bytes(), response.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::WrongPassword(self.user))
        }
    }
}

/// The client's answer for `stored` and `salt`.
pub(crate) fn salted(stored: &str, salt: &[u8; 4]) -> String {
    let mut input = stored.get(3..).unwrap_or_default().as_bytes().to_vec();
    input.extend_from_slice(salt);
    format!("md5{:x}", md5::compute(input))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_what_postgresql_computes() {
        // PostgreSQL's SELECT 'md5' || md5('secret' || 'bob') (checked with Python's hashlib).
        assert_eq!(
            stored("bob", "secret"),
            "md521f3163f8f86fa10bdefbfbd502a8f06"
        );
        assert!(is_stored(&stored("bob", "secret")));
        assert!(!is_stored("md5 not a hash"));
        assert!(!is_stored("md521F3163F8F86FA10BDEFBFBD502A8F06"));

        let login = Md5Waiting::new("bob", Some(stored("bob", "secret")));
        let answer = salted(&stored("bob", "secret"), &login.salt());
        assert!(answer.starts_with("md5") && answer.len() == 35);
        login.finish(&answer).unwrap();

        let login = Md5Waiting::new("bob", Some(stored("bob", "secret")));
        let wrong = salted(&stored("bob", "guess"), &login.salt());
        assert_eq!(
            login.finish(&wrong),
            Err(AuthError::WrongPassword("bob".into()))
        );
        let nobody = Md5Waiting::new("eve", None);
        assert!(nobody.finish("md5").is_err());
    }
}
