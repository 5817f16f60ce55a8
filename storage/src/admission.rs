//! Admission of writes: what bounds ingest's memory before the write
//! buffer. A protocol asks [`Engine::admit`] for a request's bytes (its
//! body, or its decoded message) before it reads or decodes more of it, and
//! holds the [`Admission`] until the write is acknowledged or refused. The
//! engine admits while the write buffer has room and the requests in flight
//! hold less than `EngineConfig::inflight_limit_bytes` together; otherwise
//! the request waits (its body unread, so it costs a connection, not
//! memory) up to `EngineConfig::backpressure_timeout`, and is then refused
//! with a retryable error ([`StorageError::BufferFull`] or
//! [`StorageError::Overloaded`]: SQLSTATE 53000, HTTP 503 with
//! `Retry-After`, gRPC `RESOURCE_EXHAUSTED`). Waiting requests are admitted
//! in arrival order; they may ask for as much as the limit together, and
//! a request beyond that is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{Result, StorageError};
use crate::state::Engine;

/// The gate's unit: permits count KiB, so that a `u32` of them covers any
/// limit up to 4 TiB.
const UNIT: usize = 1024;

/// The bytes of the requests in flight, against their limit.
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    limit_units: usize,
    /// Units the requests waiting for admission ask for together: at most
    /// the limit, so that the queue cannot outgrow what the limit lets in
    /// within the backpressure timeout; a request past it is refused at
    /// once (its client retries later instead of holding a connection).
    waiting: AtomicUsize,
}

/// A request's units among the waiting, until dropped.
struct Waiting<'a>(&'a AtomicUsize, usize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

impl Gate {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        let limit_units = limit_bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize >> 1);
        Self {
            permits: Arc::new(Semaphore::new(limit_units)),
            limit_units,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Units for `bytes`: at least one, at most the whole limit (a request
    /// larger than the limit is admitted alone).
    fn units(&self, bytes: usize) -> u32 {
        bytes.div_ceil(UNIT).clamp(1, self.limit_units) as u32
    }

    fn in_flight_bytes(&self) -> usize {
        (self.limit_units - self.permits.available_permits()) * UNIT
    }
}

/// A request's place among the writes in flight; dropping it lets the next
/// one in.
#[must_use = "an admission lasts as long as it is held"]
pub struct Admission {
    permit: Option<OwnedSemaphorePermit>,
    engine: Engine,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field(
                "units",
                &self.permit.as_ref().map_or(0, |p| p.num_permits()),
            )
            .finish()
    }
}

impl Admission {
    /// Grows the admission to `bytes` in all (e.g. a gzipped body once its
    /// size unpacked is known, or a COPY as its data comes), waiting for
    /// the difference as [`Engine::admit`] does.
    pub async fn grow_to(&mut self, bytes: usize) -> Result<()> {
        let gate = &self.engine.inner.gate;
        let want = gate.units(bytes) as usize;
        let have = self.permit.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return Ok(());
        }
        let deadline = Instant::now() + self.engine.inner.config.backpressure_timeout;
        let more = self.engine.acquire(want - have, deadline).await?;
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }
}

impl Engine {
    /// Admits a write of about `bytes` (see the module's header): waits
    /// while the write buffer is full or the writes in flight hold
    /// `--ingest-inflight-limit`, up to `--backpressure-timeout`.
    pub async fn admit(&self, bytes: usize) -> Result<Admission> {
        let deadline = Instant::now() + self.inner.config.backpressure_timeout;
        self.wait_for_space_until(deadline).await?;
        let units = self.inner.gate.units(bytes) as usize;
        let permit = self.acquire(units, deadline).await?;
        Ok(Admission {
            permit: Some(permit),
            engine: self.clone(),
        })
    }

    async fn acquire(&self, units: usize, deadline: Instant) -> Result<OwnedSemaphorePermit> {
        let gate = &self.inner.gate;
        if let Ok(permit) = gate.permits.clone().try_acquire_many_owned(units as u32) {
            return Ok(permit);
        }
        let ahead = gate.waiting.fetch_add(units, Ordering::SeqCst);
        let _waiting = Waiting(&gate.waiting, units);
        let overloaded = |waited| StorageError::Overloaded {
            in_flight: gate.in_flight_bytes(),
            waiting: ahead * UNIT,
            limit: gate.limit_units * UNIT,
            waited,
        };
        if ahead > 0 && ahead + units > gate.limit_units {
            return Err(overloaded(None));
        }
        let acquire = gate.permits.clone().acquire_many_owned(units as u32);
        tokio::select! {
            p = acquire => p.map_err(|_| StorageError::ShuttingDown),
            _ = tokio::time::sleep_until(deadline) => {
                Err(overloaded(Some(self.inner.config.backpressure_timeout)))
            }
            _ = self.inner.closing.cancelled() => Err(StorageError::ShuttingDown),
        }
    }

    /// Bytes the writes in flight hold (their admissions).
    pub fn inflight_bytes(&self) -> usize {
        self.inner.gate.in_flight_bytes()
    }

    /// Bytes persistence and compaction hold while they work (taken from
    /// the quarter of `--buffer-limit` kept for them).
    pub fn working_bytes(&self) -> usize {
        self.inner.work.in_use()
    }
}
