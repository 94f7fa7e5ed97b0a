//! Whether the database answers, so that requests fail at once while it does not.
//!
//! Without this, every request during an outage would try to connect: at best refused at once, at
//! worst (a database host that no longer answers packets) each waiting out the connect timeout while
//! holding its client. Instead, the first failed connection marks the database down; until
//! [`RETRY_EVERY`] has passed, every caller is answered [`ErrorKind::Unavailable`] without touching
//! the network. After that, one caller at a time tries again (a request, a lane's read, `/readyz`),
//! and the first connection made marks it up. No task of its own: nothing runs while nobody asks.
//!
//! [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool, PoolError, TimeoutType};

use crate::StoreError;

/// How long after a failed attempt to connect the next one may be made.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The database as the last attempt to reach it found it; shared by the readers and the writer.
#[derive(Default)]
pub(crate) struct Availability {
    state: Mutex<State>,
}

#[derive(Default)]
enum State {
    #[default]
    Up,
    Down {
        since: Instant,
        /// No attempt before this. Taking an attempt moves it a connect timeout ahead, so that one
        /// attempt at a time is made however many callers there are.
        next_try: Instant,
        /// Why the last attempt failed, for the callers answered meanwhile.
        cause: String,
    },
}

impl Availability {
    /// A connection from `pool`, or at once [`crate::ErrorKind::Unavailable`] while the database is
    /// known to be down and no attempt is due.
    pub(crate) async fn connect(&self, pool: &Pool) -> Result<Object, StoreError> {
        self.take_turn()?;
        match pool.get().await {
            Ok(client) => {
                self.answered();
                Ok(client)
            }
            Err(err) => {
                // Every connection staying busy for the pool's whole wait says the database is
                // slow, not gone: that caller is answered 503, the others still try.
                let busy = matches!(err, PoolError::Timeout(TimeoutType::Wait));
                let err = StoreError::from(err);
                if err.is_unavailable() && !busy {
                    self.failed(&err);
                }
                Err(err)
            }
        }
    }

    /// Whether this caller may try to connect now.
    fn take_turn(&self) -> Result<(), StoreError> {
        let mut state = self.lock();
        let State::Down { since, next_try, cause } = &mut *state else {
            return Ok(());
        };
        let now = Instant::now();
        if now < *next_try {
            let down_for = now.duration_since(*since).as_secs();
            return Err(StoreError::unavailable(
                "reaching the database",
                format!("it has not answered for {down_for} s (last: {cause})"),
            ));
        }
        *next_try = now + super::CONNECT_TIMEOUT;
        Ok(())
    }

    fn answered(&self) {
        let mut state = self.lock();
        if let State::Down { since, .. } = &*state {
            tracing::info!(
                down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "the database answers again"
            );
            *state = State::Up;
        }
    }

    fn failed(&self, err: &StoreError) {
        let mut state = self.lock();
        let now = Instant::now();
        let cause = err.to_string();
        match &mut *state {
            State::Up => {
                // Said once per outage; the callers answered meanwhile are not logged one by one.
                tracing::warn!(
                    error = %cause,
                    "the database cannot be reached; requests are answered 503 until it can, trying again every {} ms",
                    RETRY_EVERY.as_millis()
                );
                *state = State::Down { since: now, next_try: now + RETRY_EVERY, cause };
            }
            State::Down { next_try, cause: last, .. } => {
                *next_try = now + RETRY_EVERY;
                *last = cause;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
