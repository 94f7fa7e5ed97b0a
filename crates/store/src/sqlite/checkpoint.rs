//! Checkpoints on a thread of their own.
//!
//! In WAL mode a commit appends pages to the log, and a checkpoint copies them into the database
//! file and syncs it. By default SQLite runs that checkpoint inside whichever commit takes the log
//! past 1,000 pages, on the writer thread: a 10,000-row import crossed it on every commit and spent
//! about a quarter of its time there. Here a checkpointer thread with its own connection runs a
//! PASSIVE checkpoint, which never waits for or blocks the writer or the readers, soon after commits.
//! The writer still checkpoints by itself once the log reaches [`WAL_LIMIT_PAGES`], so the log stays
//! bounded if the checkpointer ever falls behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

/// The log size (in pages, 64 MiB at the default 4 KiB) at which the writer checkpoints itself.
pub(super) const WAL_LIMIT_PAGES: i64 = 16_384;
/// The log size (in pages, 4 MiB) past which the writer is asked to finish a checkpoint itself, so
/// that the log starts again at its beginning (see the writer's module documentation). A small log
/// keeps readers' lookups in the log's index short and its pages in the cache.
pub(super) const RESTART_PAGES: i64 = 1_024;
/// The least time between two checkpoints: each one syncs the database file, so their rate is
/// bounded however often commits come.
const PAUSE: Duration = Duration::from_millis(50);

/// The handle the writer uses to ask for a checkpoint.
pub(super) struct Checkpointer {
    hint: SyncSender<()>,
    /// Set when the log has grown past [`RESTART_PAGES`] and only the writer can start it again.
    restart: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts the checkpointer thread on `conn`; it stops when the handle is dropped.
    pub fn start(conn: Connection) -> Result<Checkpointer, StoreError> {
        // One pending hint is enough: a checkpoint takes in every commit made before it.
        let (hint, hints) = sync_channel(1);
        let restart = Arc::new(AtomicBool::new(false));
        let asks = Arc::clone(&restart);
        std::thread::Builder::new()
            .name("estate-crm-checkpoint".into())
            .spawn(move || run(&conn, &hints, &asks))
            .map_err(|err| StoreError::internal("starting the checkpoint thread", err))?;
        Ok(Checkpointer { hint, restart })
    }

    /// Whether the writer should finish a checkpoint before its next transaction; answers true
    /// once per request.
    pub fn log_wants_restart(&self) -> bool {
        self.restart.load(Ordering::Relaxed) && self.restart.swap(false, Ordering::AcqRel)
    }

    /// Asks for a checkpoint soon. Never blocks.
    pub fn hint(&self) {
        match self.hint.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                // The thread stopped; the writer's own checkpoints at the limit still bound the log.
            }
        }
    }
}

fn run(conn: &Connection, hints: &Receiver<()>, restart: &AtomicBool) {
    while hints.recv().is_ok() {
        let started = std::time::Instant::now();
        // PASSIVE copies what no reader still needs and gives up on the rest until next time.
        let frames = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)));
        match frames {
            Ok((in_log, copied)) => {
                tracing::debug!(
                    target: super::writer::TIMING,
                    took_us = super::writer::micros(started.elapsed()),
                    in_log,
                    copied,
                    "checkpoint"
                );
                if in_log >= RESTART_PAGES {
                    restart.store(true, Ordering::Release);
                }
            }
            Err(err) => tracing::warn!(error = %err, "a checkpoint failed; the next commit asks again"),
        }
        std::thread::sleep(PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_log_asks_the_writer_once_per_checkpoint_that_found_it() {
        let dir = std::env::temp_dir().join(format!("estate-crm-checkpoint-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB)")
            .unwrap();
        let checkpointer = Checkpointer::start(Connection::open(&path).unwrap()).unwrap();
        checkpointer.hint();
        // A small log: the checkpointer copies it and asks nothing of the writer.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!checkpointer.log_wants_restart());
        // Past RESTART_PAGES (4 KiB pages): the next checkpoint asks, once.
        let page = vec![7u8; 4096];
        for _ in 0..RESTART_PAGES + 64 {
            writer.execute("INSERT INTO t VALUES (?1)", [&page]).unwrap();
        }
        checkpointer.hint();
        let asked = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            checkpointer.log_wants_restart()
        });
        assert!(asked, "the checkpointer never asked the writer to restart the log");
        assert!(!checkpointer.log_wants_restart());
        drop(checkpointer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
