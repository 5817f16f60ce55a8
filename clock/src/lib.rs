//! The one clock of a server: the system's, or a manual one that only moves
//! when told to (`--manual-clock`, moved by `POST /debug/clock`), so tests
//! step through hours of retention, token expiry and alert time without
//! waiting for them. The server makes one [`Clock`] and passes it to the
//! catalog (timestamps it records), the storage engine (retention), the user
//! directory (token expiry) and the alert scheduler; each reads the time of
//! day from it, never from the system directly. Durations (timeouts,
//! intervals between background runs) use tokio's monotonic time instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Nanoseconds since the Unix epoch, from the system clock.
pub fn system_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Where the time of day comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// A clock that reads what it was last set to.
    Manual(Arc<ManualClock>),
}

/// The state of a manual clock.
#[derive(Debug)]
pub struct ManualClock {
    now_ns: AtomicI64,
    moved: Notify,
}

impl Clock {
    /// A manual clock that reads `start_ns` until it is moved.
    pub fn manual(start_ns: i64) -> Self {
        Clock::Manual(Arc::new(ManualClock {
            now_ns: AtomicI64::new(start_ns),
            moved: Notify::new(),
        }))
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }

    /// Nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> i64 {
        match self {
            Clock::System => system_now_ns(),
            Clock::Manual(m) => m.now_ns.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock to `to_ns` (never backwards); returns the time
    /// it reads. A system clock cannot be moved.
    pub fn set(&self, to_ns: i64) -> Option<i64> {
        let Clock::Manual(m) = self else {
            return None;
        };
        let now = m.now_ns.fetch_max(to_ns, Ordering::SeqCst).max(to_ns);
        m.moved.notify_waiters();
        Some(now)
    }

    /// Returns once the clock reads `at_ns` or later (a system clock may
    /// return early; callers check the time again).
    pub async fn sleep_until(&self, at_ns: i64) {
        match self {
            Clock::System => {
                // At most an hour at a time, so a jump of the system clock
                // is noticed within the hour.
                let wait = at_ns.saturating_sub(system_now_ns()).min(3_600_000_000_000);
                if wait > 0 {
                    tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
                }
            }
            Clock::Manual(m) => loop {
                let moved = m.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if m.now_ns.load(Ordering::SeqCst) >= at_ns {
                    return;
                }
                moved.await;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now_ns(), 1_000);
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_until(5_000).await });
        tokio::task::yield_now().await;
        clock.set(4_000);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        assert_eq!(clock.set(3_000), Some(4_000), "never backwards");
        clock.set(5_000);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Clock::System.set(1), None);
    }
}
