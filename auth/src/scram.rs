//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL does it.
//!
//! A password becomes a [`Verifier`] (salt, iteration count, StoredKey,
//! ServerKey), which is all the catalog keeps: it checks a client's proof
//! but cannot be replayed as one. A login is an exchange: the client's first
//! message → [`server_first`] (with the user's verifier, or
//! [`Verifier::mock`] for a user that does not exist, so that the answer
//! does not tell) → the server's first message → the client's final message
//! → [`ScramWaiting::finish`] → the server's final message, or
//! [`AuthError::WrongPassword`].
//!
//! Passwords are used as their UTF-8 bytes (no SASLprep); PostgreSQL falls
//! back to the same for passwords SASLprep rejects, and clients agree for
//! ASCII passwords.

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2, rand};

use crate::AuthError;

/// PostgreSQL's default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

const KEY_LEN: usize = 32;

/// What is stored for a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys stay out of logs.
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    tag.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

pub(crate) fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut out)
        .expect("the system's random source works");
    out
}

impl Verifier {
    /// The verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        Self::with_salt(password, &random_bytes::<16>(), DEFAULT_ITERATIONS)
    }

    /// The verifier of `password` with `salt` and `iterations` (at least 1).
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).expect("at least 1"),
            salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this verifier was made from (for
    /// protocols that send the password itself, e.g. HTTP Basic over TLS).
    pub fn matches(&self, password: &str) -> bool {
        let other = Self::with_salt(password, &self.salt, self.iterations);
        same(&other.stored_key, &self.stored_key)
    }

    /// A verifier no password matches, the same for the same `user` and
    /// `secret` (a per-server random value): an exchange for a user that
    /// does not exist looks like one for a user that does.
    pub fn mock(user: &str, secret: &[u8]) -> Self {
        let salt = hmac_sha256(secret, user.as_bytes());
        Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: random_bytes(),
            server_key: random_bytes(),
        }
    }

    /// Parses PostgreSQL's text form
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let bad = |why: &str| AuthError::BadVerifier(why.to_string());
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or_else(|| bad("not SCRAM-SHA-256"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("no keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or_else(|| bad("no salt"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| bad("one key"))?;
        let key = |k: &str| -> Result<[u8; KEY_LEN], AuthError> {
            B64.decode(k)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| bad("a key is not 32 bytes of base64"))
        };
        Ok(Verifier {
            iterations: iterations
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad("bad iteration count"))?,
            salt: B64.decode(salt).map_err(|_| bad("salt is not base64"))?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The body of a pgwire SASLInitialResponse: the mechanism's name (a C
/// string), then the length of the client's first message (-1 for none)
/// and the message. Unlike a plain decoder it never reads past `body`.
pub fn parse_initial_response(body: &[u8]) -> Result<(String, Option<Vec<u8>>), AuthError> {
    let bad = |why: &str| AuthError::Malformed(format!("SASLInitialResponse: {why}"));
    let nul = body
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| bad("no mechanism name"))?;
    let mechanism =
        String::from_utf8(body[..nul].to_vec()).map_err(|_| bad("mechanism is not UTF-8"))?;
    let rest = &body[nul + 1..];
    let (len, data) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("no length"))?;
    let len = i32::from_be_bytes(*len);
    if len == -1 {
        return Ok((mechanism, None));
    }
    let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
    if len != data.len() {
        return Err(bad("the length does not match the message"));
    }
    Ok((mechanism, Some(data.to_vec())))
}

/// A fresh server nonce (printable, no commas).
pub fn random_nonce() -> String {
    B64.encode(random_bytes::<18>())
}

/// The exchange after the server's first message.
#[derive(Debug)]
pub struct ScramWaiting {
    user: String,
    verifier: Verifier,
    gs2_header: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// Answers the client's first message (`n,,n=<user>,r=<nonce>`; PostgreSQL
/// clients leave the user empty and name it in the startup packet) with the
/// server's first message, adding `server_nonce` to the client's. `user` (from the
/// startup packet) is the one a failure names.
pub fn server_first(
    user: &str,
    verifier: Verifier,
    client_first: &str,
    server_nonce: &str,
) -> Result<(String, ScramWaiting), AuthError> {
    let malformed = |why: &str| AuthError::Malformed(why.to_string());
    let (cbind, rest) = client_first
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header"))?;
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(AuthError::ChannelBinding),
        _ => return Err(malformed("bad channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header"))?;
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(malformed("bad authorization identity"));
    }
    let mut client_nonce = None;
    for attr in bare.split(',') {
        if let Some(r) = attr.strip_prefix("r=") {
            client_nonce = Some(r);
        } else if attr.starts_with("m=") {
            return Err(malformed("mandatory extensions are not supported"));
        }
    }
    let client_nonce = client_nonce
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_graphic() && b != b','))
        .ok_or_else(|| malformed("no client nonce"))?;
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        B64.encode(&verifier.salt),
        verifier.iterations
    );
    let waiting = ScramWaiting {
        user: user.to_string(),
        verifier,
        gs2_header: format!("{cbind},{authzid},"),
        nonce,
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
    };
    Ok((server_first, waiting))
}

impl ScramWaiting {
    /// Checks the client's final message (`c=<binding>,r=<nonce>,p=<proof>`);
    /// on success returns the server's final message (`v=<signature>`).
    pub fn finish(self, client_final: &str) -> Result<String, AuthError> {
        let malformed = |why: &str| AuthError::Malformed(why.to_string());
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                binding = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let binding = binding.ok_or_else(|| malformed("no channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(malformed(
                "channel binding does not match the first message",
            ));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(malformed("nonce does not match"));
        }
        let proof: [u8; KEY_LEN] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| malformed("proof is not 32 bytes of base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; KEY_LEN];
        for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
            *k = p ^ s;
        }
        if !same(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(AuthError::WrongPassword(self.user));
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_responses_are_read_within_bounds() {
        let mut ok = b"SCRAM-SHA-256\0".to_vec();
        ok.extend_from_slice(&3i32.to_be_bytes());
        ok.extend_from_slice(b"n,,");
        assert_eq!(
            parse_initial_response(&ok).unwrap(),
            ("SCRAM-SHA-256".to_string(), Some(b"n,,".to_vec()))
        );
        // What pgwire's own decoder panics on: a length past the end.
        let mut long = b"SCRAM-SHA-256\0".to_vec();
        long.extend_from_slice(&1_664_967_273i32.to_be_bytes());
        assert!(parse_initial_response(&long).is_err());
        assert!(parse_initial_response(b"SCRAM-SHA-256\0\0").is_err());
        assert!(parse_initial_response(b"no nul").is_err());
    }

    // RFC 7677, section 3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn pencil() -> Verifier {
        Verifier::with_salt("pencil", &B64.decode(SALT).unwrap(), 4096)
    }

    #[test]
    fn the_rfc_7677_exchange() {
        let (first, waiting) = server_first("user", pencil(), CLIENT_FIRST, SERVER_NONCE).unwrap();
        assert_eq!(first, SERVER_FIRST);
        assert_eq!(waiting.finish(CLIENT_FINAL).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn a_wrong_password_or_a_mock_user_fails_the_same_way() {
        for verifier in [
            Verifier::with_salt("pencil2", &B64.decode(SALT).unwrap(), 4096),
            Verifier::mock("user", b"server secret"),
        ] {
            let (_, waiting) = server_first("user", verifier, CLIENT_FIRST, SERVER_NONCE).unwrap();
            assert_eq!(
                waiting.finish(CLIENT_FINAL),
                Err(AuthError::WrongPassword("user".into()))
            );
        }
        // A mock user's salt is stable, so two attempts look alike.
        let a = server_first("user", Verifier::mock("nobody", b"s"), CLIENT_FIRST, "x").unwrap();
        let b = server_first("user", Verifier::mock("nobody", b"s"), CLIENT_FIRST, "x").unwrap();
        assert_eq!(a.0, b.0);
        assert!(a.0.ends_with(",i=4096"));
    }

    #[test]
    fn tampered_messages_are_refused() {
        let finish = |client_final: &str| {
            let (_, w) = server_first("user", pencil(), CLIENT_FIRST, SERVER_NONCE).unwrap();
            w.finish(client_final)
        };
        // Another nonce, another binding, a flipped proof bit.
        assert!(matches!(
            finish(&CLIENT_FINAL.replace("$k0,p=", "$k1,p=")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            finish(&CLIENT_FINAL.replace("c=biws", "c=eSws")),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(
            finish(&CLIENT_FINAL.replace("p=dHzb", "p=dHza")),
            Err(AuthError::WrongPassword("user".into()))
        );
        assert!(matches!(finish("c=biws,r=x"), Err(AuthError::Malformed(_))));
        assert_eq!(
            server_first("user", pencil(), "p=tls-server-end-point,,n=,r=abc", "x").unwrap_err(),
            AuthError::ChannelBinding
        );
        assert!(server_first("user", pencil(), "n,,n=user", "x").is_err());
        assert!(server_first("user", pencil(), "q,,n=,r=abc", "x").is_err());
    }

    #[test]
    fn verifiers_round_trip_in_postgres_text_form() {
        let v = pencil();
        let text = v.to_string();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
        assert_eq!(Verifier::parse(&text).unwrap(), v);
        assert!(!format!("{v:?}").contains(&B64.encode(v.stored_key)));
        // Two verifiers of one password differ by their salt.
        assert_ne!(Verifier::new("pencil"), Verifier::new("pencil"));
        for bad in [
            "md5abc",
            "SCRAM-SHA-256$0:AA==$AA==:AA==",
            "SCRAM-SHA-256$4096:AA==$AA==:AA==",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_postgres_15_verifier_is_accepted() {
        // `SELECT rolpassword FROM pg_authid` of PostgreSQL 15.18 after
        // `CREATE ROLE u PASSWORD 'pencil'` (password_encryption scram-sha-256).
        const PG: &str = "SCRAM-SHA-256$4096:YMLuh3uxUITD657ZyL9gBg==$GYS8YGe7hI2wU/OGM8TrjqYU+Q37v1pbdUnGejNu9N8=:Im1UOF57Ut7IcWKIzRjgyXM3oOLLpag5aS6ZBgzQ+0c=";
        let parsed = Verifier::parse(PG).unwrap();
        assert_eq!(parsed.to_string(), PG);
        let salt = B64.decode("YMLuh3uxUITD657ZyL9gBg==").unwrap();
        // The same password and salt give PostgreSQL's keys.
        assert_eq!(Verifier::with_salt("pencil", &salt, 4096), parsed);
        let (first, waiting) = server_first("user", parsed, "n,,n=,r=abc", "def").unwrap();
        assert_eq!(first, "r=abcdef,s=YMLuh3uxUITD657ZyL9gBg==,i=4096");
        // The client's side, computed here as RFC 5802 says.
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(4096).unwrap(),
            &salt,
            b"pencil",
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let without_proof = "c=biws,r=abcdef";
        let auth = format!("n=,r=abc,{first},{without_proof}");
        let sig = hmac_sha256(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        let server_final = waiting
            .finish(&format!("{without_proof},p={}", B64.encode(proof)))
            .unwrap();
        let server_key = hmac_sha256(&salted, b"Server Key");
        assert_eq!(
            server_final,
            format!(
                "v={}",
                B64.encode(hmac_sha256(&server_key, auth.as_bytes()))
            )
        );
    }
}
