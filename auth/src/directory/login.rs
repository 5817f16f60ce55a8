//! Logins: credentials in → a [`Principal`] out. A pgwire login asks for
//! the user's SCRAM verifier or MD5 salt and hands the password check back
//! here ([`Directory::login_password`]); an HTTP or gRPC `authorization`
//! header (Basic or Bearer) goes through [`Directory::authenticate`]; a
//! token through [`Directory::login_token`]. No credentials are let in only
//! while no user exists ([`Directory::anonymous`]). Every outcome is
//! counted and failures feed the per-address limit (`attempts`).

use std::net::IpAddr;

use base64::Engine as _;

use super::tokens::hash_token;
use super::{Directory, Principal, Via};
use crate::AuthError;
use crate::md5::Md5Waiting;
use crate::scram::{Verifier, sha256};

impl Directory {
    /// A client that gave no credentials, from `peer`, calling itself
    /// `user`: let in while no user exists, from loopback (or anywhere with
    /// `--allow-unauthenticated`).
    pub fn anonymous(&self, peer: IpAddr, user: &str) -> Result<Principal, AuthError> {
        if self.required() {
            return Err(AuthError::Required(
                "authentication required: give a user's name and password, or a token".into(),
            ));
        }
        if !peer.is_loopback() && !self.allow_unauthenticated {
            return Err(AuthError::Required(format!(
                "Sextant has no users yet, so it accepts clients on loopback only (this one is {peer}): create an admin first (CREATE USER name WITH SUPERUSER PASSWORD '...'), or start with --allow-unauthenticated"
            )));
        }
        Ok(Principal::trusted(user))
    }

    /// The principal of an HTTP or gRPC `Authorization` header: `Basic`
    /// (a user's name and password), `Bearer` or `Token` (a token), or none.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: IpAddr,
        protocol: &str,
    ) -> Result<Principal, AuthError> {
        // While no user exists nobody logs in, and credentials are not
        // looked at (InfluxDB clients always send a token, say).
        let value = authorization.map(str::trim).filter(|v| !v.is_empty());
        let Some(value) = value.filter(|_| self.required()) else {
            return self.anonymous(peer, "anonymous");
        };
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" | "token" => self.login_token(credentials, peer, protocol),
            "basic" => {
                // Padded or not (Go's Flight client sends it unpadded).
                let lenient = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                let decoded = lenient
                    .decode(credentials)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        AuthError::Invalid(
                            "malformed Basic credentials: expected base64 of user:password".into(),
                        )
                    })?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    AuthError::Invalid(
                        "malformed Basic credentials: no ':' between user and password".into(),
                    )
                })?;
                self.login_password(user, password, peer, protocol)
            }
            other => Err(AuthError::Invalid(format!(
                "unsupported authorization scheme \"{other}\": use Basic (user and password) or Bearer (a token)"
            ))),
        }
    }

    /// The verifier a SCRAM exchange for `user` runs against: the user's, or
    /// for a name nobody has a mock one that fails in the same way.
    pub fn scram_verifier(&self, user: &str) -> Verifier {
        self.read()
            .users
            .get(user)
            .and_then(|u| Verifier::parse(&u.verifier).ok())
            .unwrap_or_else(|| Verifier::mock(user, &self.secret))
    }

    /// The MD5 login pgwire runs for `user`, if the user logs in with MD5
    /// (`None`: SCRAM, also for a name nobody has).
    pub fn md5_login(&self, user: &str) -> Option<Md5Waiting> {
        let stored = self.read().users.get(user)?.md5.clone()?;
        Some(Md5Waiting::new(user, Some(stored)))
    }

    /// Checks a user's name and password (HTTP Basic, Flight handshake).
    pub fn login_password(
        &self,
        user: &str,
        password: &str,
        addr: IpAddr,
        protocol: &str,
    ) -> Result<Principal, AuthError> {
        self.allow_attempt(addr, protocol)?;
        let stored = self.read().users.get(user).cloned();
        let digest = sha256(password.as_bytes());
        let ok = match stored.map(|u| (u.verifier, u.md5)) {
            // Given as an MD5 hash only: that is all there is to check.
            Some((v, Some(md5))) if v.is_empty() => crate::md5::constant_time_eq(
                crate::md5::stored(user, password).as_bytes(),
                md5.as_bytes(),
            ),
            Some((v, _)) => {
                let cached = self
                    .checked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(user)
                    .is_some_and(|(d, cv)| d == &digest && *cv == v);
                cached
                    || Verifier::parse(&v).is_ok_and(|v| v.matches(password)) && {
                        self.checked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(user.to_string(), (digest, v.clone()));
                        true
                    }
            }
            None => {
                // As much work as for a real user, so timing does not tell.
                let _ = Verifier::mock(user, &self.secret).matches(password);
                false
            }
        };
        if !ok {
            let e = AuthError::WrongPassword(user.to_string());
            self.failed(addr, protocol, user, &e);
            return Err(e);
        }
        let p = Principal::password(user);
        self.succeeded(protocol, &p);
        Ok(p)
    }

    /// Checks a token's secret (HTTP and gRPC Bearer, Flight SQL).
    pub fn login_token(
        &self,
        secret: &str,
        addr: IpAddr,
        protocol: &str,
    ) -> Result<Principal, AuthError> {
        self.allow_attempt(addr, protocol)?;
        let hash = hash_token(secret);
        let state = self.read();
        let found = state.by_hash.get(&hash).and_then(|name| {
            let t = state.tokens.get(name)?;
            let live = t.expires_at_ns.is_none_or(|e| e > self.clock.now_ns());
            live.then(|| Principal {
                user: t.user.clone(),
                via: Via::Token(name.clone()),
            })
        });
        drop(state);
        match found {
            Some(p) => {
                self.succeeded(protocol, &p);
                Ok(p)
            }
            None => {
                let e = AuthError::InvalidToken;
                self.failed(addr, protocol, "", &e);
                Err(e)
            }
        }
    }
}
