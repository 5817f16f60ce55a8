//! Failed logins, counted per client address: an address that failed
//! [`MAX_FAILURES`] times within [`FAILURE_WINDOW`] is refused until the
//! window passes. Every outcome (ok, failed, limited) is counted in the
//! `logins` metric by protocol.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Directory, Principal};
use crate::AuthError;

/// Failed logins one address may make within [`FAILURE_WINDOW`].
pub(super) const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted in, and how long an address that
/// made too many is refused.
pub(super) const FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl Directory {
    /// Refuses an address that failed too often lately.
    pub fn allow_attempt(&self, addr: IpAddr, protocol: &str) -> Result<(), AuthError> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((since, n)) = failures.get(&addr) {
            let elapsed = since.elapsed();
            if *n >= MAX_FAILURES && elapsed < FAILURE_WINDOW {
                count(protocol, "limited");
                return Err(AuthError::TooManyFailures(
                    (FAILURE_WINDOW - elapsed).as_secs().max(1),
                ));
            }
        }
        Ok(())
    }

    /// Counts and logs a failed login.
    pub fn failed(&self, addr: IpAddr, protocol: &str, user: &str, error: &AuthError) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 10_000 {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(addr).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        count(protocol, "failed");
        tracing::warn!(%addr, protocol, user, failures = entry.1, error = %error, "login failed");
    }

    /// Counts a login that succeeded.
    pub fn succeeded(&self, protocol: &str, principal: &Principal) {
        count(protocol, "ok");
        tracing::debug!(protocol, user = principal.user(), "login");
    }
}

pub(super) fn count(protocol: &str, outcome: &str) {
    sextant_metrics::metrics()
        .logins
        .with_label_values(&[protocol, outcome])
        .inc();
}
