//! The one writer thread and its group commit.
//!
//! Requests hand the writer a closure; the writer takes every closure waiting (up to a bound), runs
//! them in one transaction, each so that its failure undoes only its own work, then commits once and
//! answers them all. The answer goes out only after the commit, so an acknowledged change is durable.
//!
//! The first job of a transaction runs in the transaction itself: if it fails, the transaction (which
//! holds nothing else yet) is rolled back and the next job begins a new one. Each later job runs in a
//! savepoint. A savepoint is not free: while one is open, SQLite copies every page a statement is
//! about to change into a sub-journal, and each statement that may fail halfway ends by cutting that
//! journal back, walking it from its start. The outcome recorder's commits of 2,048 upserts spent a
//! fifth of the writer's time there, and a bulk import copied every page it wrote.
//!
//! Not every commit needs its own fsync. A 201 does: a commit that carries any request's change is
//! synced before anyone is answered. The outcome recorder's commits ([`Durability::Deferred`]) are
//! not: their rows are made durable by the next synced commit or checkpoint (the log is one file,
//! synced up to its end), and a crash before that only sends those deliveries again, with the same
//! `webhook-id`, as any crash during an attempt would. At 1,000 creates a second with one endpoint
//! the recorder committed as often as the API did, so half the writer's fsyncs, and the wait of a
//! create queued behind them, were for rows that need none.
//!
//! The write-ahead log is started again from its beginning only when a writer finds every frame
//! in it copied to the database. The checkpointer copies on its own thread, but under a steady
//! stream of commits there is always a newer frame by the time the writer begins, so the log grew
//! until the 64 MiB limit, and then the writer copied it in one commit (tens of ms). When the
//! checkpointer finds the log past [`super::checkpoint::RESTART_PAGES`] it asks the writer to finish
//! the copy itself between two transactions (a few frames and one sync of the database file), so the
//! next commit starts the log again at its beginning; it does so after a commit that leaves no job
//! queued, if one comes within [`RESTART_WAIT_MAX`], so that no request waits for the copy.
//!
//! Each group commit logs its timings at debug level under the target `estate_crm::timing`
//! (`RUST_LOG=info,estate_crm::timing=debug`): how long its oldest job waited in the queue, how
//! long the jobs ran, and how long the commit (the log's write and fsync) took. That is how a slow
//! create is traced to the step that held it (docs/PERFORMANCE.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use estate_crm_domain::webhook::EventFilter;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::recent::{Recent, RecentNotes};
use crate::{ChangeFeed, Changes, StoreError};

/// How many requests one commit may carry. Bounds the latency a request waits behind others.
const MAX_BATCH: usize = 512;
/// How many requests may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// The log target of the hand-off timings.
pub(crate) const TIMING: &str = "estate_crm::timing";

type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
type Work = Box<dyn FnOnce(&mut WriteCtx<'_>, Undo) -> (Reply, JobEnd) + Send>;

/// Whether a commit must be synced before the job is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Synced before the answer: every change a client or person makes.
    Synced,
    /// Made durable by the next synced commit or checkpoint: rows whose loss in a crash only
    /// repeats work (attempt outcomes: the delivery is sent again, with the same id).
    Deferred,
}

/// A request's work, how durable its commit must be, and when it was queued.
struct Job {
    work: Work,
    durability: Durability,
    queued: Instant,
}

/// How a job's work is undone if it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// By rolling back the transaction: the job is its first.
    Transaction,
    /// By rolling back to a savepoint taken before the job.
    Savepoint,
}

/// What a job leaves of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobEnd {
    /// The transaction goes on: the job's work is in it, or was undone to its savepoint.
    Continue,
    /// The job failed as the first of its transaction: the transaction must be rolled back.
    RollBack,
}

/// What a job sees: the open transaction and the writer's state.
pub(crate) struct WriteCtx<'a> {
    pub tx: &'a Transaction<'a>,
    pub state: &'a mut WriterState,
    /// What this job changed that the dispatcher must hear of.
    pub changes: &'a mut Changes,
    /// What this job wrote that the in-memory ring of recent events must hear of.
    pub recent: &'a mut RecentNotes,
}

/// An active endpoint as waking its lane needs it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub id: String,
    pub events: EventFilter,
}

/// State the writer keeps between batches.
pub(crate) struct WriterState {
    pub tag: String,
    pub site_url: String,
    pub preparer: crate::prepare::Preparer,
    /// The active endpoints, to wake those an event is owed to; `None` when they must be read again.
    pub routes: Option<Vec<Route>>,
    /// Recent events for the lanes' reads, told of each commit before anyone is answered.
    pub recent: Arc<Recent>,
}

/// The handle requests use to reach the writer.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    pub fn start(conn: Connection, state: WriterState, feed: Arc<ChangeFeed>, checkpointer: Checkpointer) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("estate-crm-writer".into())
            .spawn(move || run(conn, state, jobs, &feed, &checkpointer))
            .expect("the operating system refused to start the writer thread");
        Writer { queue }
    }

    /// Runs `work` in the next group commit and answers its result once that commit is durable.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.run_with(Durability::Synced, work).await
    }

    /// Runs `work` in the next group commit and answers once that commit is done, synced or not
    /// as `durability` says (a commit that also carries a synced job is synced).
    pub async fn run_with<T, F>(&self, durability: Durability, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let work: Work = Box::new(move |ctx: &mut WriteCtx<'_>, undo| {
            let result = run_job(ctx, undo, work);
            let end = if result.is_err() && undo == Undo::Transaction { JobEnd::RollBack } else { JobEnd::Continue };
            let reply: Reply = Box::new(move |committed: Result<(), &StoreError>| {
                let result = match committed {
                    Ok(()) => result,
                    Err(err) => Err(err.shared()),
                };
                let _ = answer.send(result);
            });
            (reply, end)
        });
        let job = Job { work, durability, queued: Instant::now() };
        self.queue.send(job).await.map_err(|_| StoreError::internal("writing", "the writer has stopped"))?;
        answered.await.map_err(|_| StoreError::internal("writing", "the writer stopped before answering"))?
    }
}

/// Runs one job's work; on failure its writes are undone as `undo` says (for
/// [`Undo::Transaction`], by the caller rolling the transaction back) and its changes dropped.
fn run_job<T>(
    ctx: &mut WriteCtx<'_>,
    undo: Undo,
    work: impl FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if undo == Undo::Savepoint {
        run_cached(ctx.tx, "SAVEPOINT job")?;
    }
    let mut changes = Changes::default();
    let mut recent = RecentNotes::default();
    let result = work(&mut WriteCtx { tx: ctx.tx, state: &mut *ctx.state, changes: &mut changes, recent: &mut recent });
    let settings_changed = changes.settings_changed;
    if result.is_ok() {
        if undo == Undo::Savepoint {
            run_cached(ctx.tx, "RELEASE job")?;
        }
        ctx.changes.endpoints.extend(changes.endpoints);
        ctx.changes.rescan.extend(changes.rescan);
        ctx.changes.settings_changed |= settings_changed;
        ctx.recent.absorb(recent);
    } else if undo == Undo::Savepoint {
        ctx.tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
    }
    if settings_changed {
        // Read the routes again on next use, whether or not this job's changes stayed.
        ctx.state.routes = None;
    }
    result
}

fn run(
    mut conn: Connection,
    mut state: WriterState,
    mut jobs: mpsc::Receiver<Job>,
    feed: &ChangeFeed,
    checkpointer: &Checkpointer,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut syncing = SyncMode::Full;
    let mut log_restart = LogRestart::default();
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let waited = batch.iter().map(|job| started.saturating_duration_since(job.queued)).max().unwrap_or_default();
        let jobs_in_batch = batch.len();
        let wanted = sync_mode_for(batch.iter().map(|job| job.durability));
        let must_sync = wanted == SyncMode::Full;
        if let Err(err) = syncing.set(&conn, wanted)
            && must_sync
        {
            // Committing unsynced would answer a 201 that is not durable: the jobs are dropped
            // unrun, which answers each caller with an error.
            tracing::error!(error = %err, "could not make commits synced again; refusing this batch");
            batch.clear();
            continue;
        }
        let mut changes = Changes::default();
        let mut commit_took = Duration::ZERO;
        let committed = commit_batch(&mut conn, &mut state, &mut batch, &mut changes, &mut commit_took);
        if committed.is_ok() {
            feed.publish(changes);
            checkpointer.hint();
        } else {
            state.routes = None;
        }
        tracing::debug!(
            target: TIMING,
            jobs = jobs_in_batch,
            synced = must_sync,
            queue_wait_us = micros(waited),
            run_us = micros(started.elapsed().saturating_sub(commit_took)),
            commit_us = micros(commit_took),
            "group commit"
        );
        if log_restart.due(checkpointer.log_wants_restart(), jobs.is_empty(), Instant::now()) {
            finish_checkpoint(&conn);
        }
    }
}

/// How long a log restart the checkpointer asked for may wait for a moment when no job is queued,
/// before the writer makes it anyway (the log must not grow without bound under a steady stream).
const RESTART_WAIT_MAX: Duration = Duration::from_millis(200);

/// When the writer finishes a checkpoint so that the log starts again (see the module
/// documentation). It takes about a millisecond, and up to tens when the disk is busy, and every job
/// queued meanwhile waits for it: made as the next job arrived (as it once was), it delayed that job
/// by all of it, so it is made after a commit that left nothing queued instead.
#[derive(Debug, Default)]
struct LogRestart {
    wanted_since: Option<Instant>,
}

impl LogRestart {
    /// Whether to restart the log now, after a commit. `asked`: the checkpointer asks (once per
    /// ask); `idle`: no job is waiting.
    fn due(&mut self, asked: bool, idle: bool, now: Instant) -> bool {
        if asked && self.wanted_since.is_none() {
            self.wanted_since = Some(now);
        }
        match self.wanted_since {
            Some(since) if idle || now.saturating_duration_since(since) >= RESTART_WAIT_MAX => {
                self.wanted_since = None;
                true
            }
            _ => false,
        }
    }
}

/// The connection's `synchronous` setting, changed only between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    /// Every commit syncs the log.
    Full,
    /// Commits do not sync; the next one that does, or a checkpoint, makes them durable.
    Normal,
}

impl SyncMode {
    /// Changes the setting if it differs; on failure it is left as it was.
    fn set(&mut self, conn: &Connection, wanted: SyncMode) -> rusqlite::Result<()> {
        if *self != wanted {
            // Parsed every time on purpose: SQLite applies this setting while it compiles the
            // statement, so a cached statement run again would change nothing.
            conn.execute_batch(match wanted {
                SyncMode::Full => "PRAGMA synchronous = FULL",
                SyncMode::Normal => "PRAGMA synchronous = NORMAL",
            })?;
            *self = wanted;
        }
        Ok(())
    }
}

/// Runs a statement that every job repeats (its savepoint) from the statement cache:
/// `execute_batch` parses it anew each time, two statements parsed per create. Only for statements
/// that act when run, not when compiled (unlike `PRAGMA synchronous`).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.raw_execute()?;
    Ok(())
}

/// A commit is synced when any of its jobs must be: one fsync covers the whole log up to its end.
fn sync_mode_for(mut jobs: impl Iterator<Item = Durability>) -> SyncMode {
    if jobs.any(|durability| durability == Durability::Synced) { SyncMode::Full } else { SyncMode::Normal }
}

/// Copies what the checkpointer has not yet copied of the log into the database, between two
/// transactions, so that the next commit starts the log again at its beginning.
fn finish_checkpoint(conn: &Connection) {
    let started = Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1)) {
        Ok(in_log) => tracing::debug!(target: TIMING, took_us = micros(started.elapsed()), in_log, "log restart"),
        Err(err) => tracing::warn!(error = %err, "finishing a checkpoint failed; the checkpointer asks again"),
    }
}

pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn commit_batch(
    conn: &mut Connection,
    state: &mut WriterState,
    batch: &mut Vec<Job>,
    changes: &mut Changes,
    commit_took: &mut Duration,
) -> Result<(), ()> {
    let mut jobs = batch.drain(..).peekable();
    let mut recent = RecentNotes::default();
    while jobs.peek().is_some() {
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(err) => {
                let err = StoreError::internal("starting a transaction", err);
                tracing::error!(error = %err, "the writer could not start a transaction");
                // The jobs left are dropped unrun, which answers each caller with an error.
                return Err(());
            }
        };
        let mut ctx = WriteCtx { tx: &tx, state: &mut *state, changes: &mut *changes, recent: &mut recent };
        let first = jobs.next().expect("a job is waiting");
        let (reply, end) = (first.work)(&mut ctx, Undo::Transaction);
        if end == JobEnd::RollBack {
            // Nothing else is in the transaction yet: rolling it back undoes exactly this job, which
            // answers its own error. The next job begins a new transaction.
            if let Err(err) = tx.rollback() {
                tracing::error!(error = %err, "rolling back a failed job failed");
            }
            reply(Ok(()));
            continue;
        }
        let mut replies = vec![reply];
        replies.extend(jobs.by_ref().map(|job| (job.work)(&mut ctx, Undo::Savepoint).0));
        let commit_started = Instant::now();
        let committed = tx.commit().map_err(|err| StoreError::internal("committing", err));
        *commit_took = commit_started.elapsed();
        match &committed {
            // Before the answers and the wake-ups: a read that follows either must find the commit's
            // events in memory.
            Ok(()) => state.recent.apply(recent, changes.settings_changed),
            Err(err) => {
                tracing::error!(error = %err, "a group commit failed; every request in it is answered with an error")
            }
        }
        for reply in replies {
            reply(committed.as_ref().map(|_| ()));
        }
        return committed.map_err(|_| ());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_restarted_when_no_job_waits_or_once_it_has_waited_too_long() {
        let start = Instant::now();
        let mut restart = LogRestart::default();
        assert!(!restart.due(false, true, start), "nobody asked");
        assert!(!restart.due(true, false, start), "a job is waiting");
        assert!(!restart.due(false, false, start + RESTART_WAIT_MAX / 2), "still a job waiting, not for long");
        assert!(restart.due(false, true, start + RESTART_WAIT_MAX / 2), "the ask is kept until the queue is empty");
        assert!(!restart.due(false, true, start + RESTART_WAIT_MAX), "done once per ask");
        assert!(restart.due(true, true, start), "asked with nothing waiting: at once");
        let later = start + RESTART_WAIT_MAX;
        assert!(!restart.due(true, false, later));
        assert!(restart.due(false, false, later + RESTART_WAIT_MAX), "made anyway once it has waited too long");
    }

    #[test]
    fn a_commit_is_synced_when_any_of_its_jobs_must_be() {
        use Durability::*;
        assert_eq!(sync_mode_for([Deferred, Deferred].into_iter()), SyncMode::Normal);
        assert_eq!(sync_mode_for([Deferred, Synced, Deferred].into_iter()), SyncMode::Full);
        assert_eq!(sync_mode_for([Synced].into_iter()), SyncMode::Full);
    }

    #[test]
    fn the_sync_setting_changes_only_between_transactions_and_sticks() {
        let conn = Connection::open_in_memory().unwrap();
        let setting = |conn: &Connection| conn.query_row("PRAGMA synchronous", [], |row| row.get::<_, i64>(0)).unwrap();
        let mut mode = SyncMode::Full;
        conn.execute_batch("PRAGMA synchronous = FULL").unwrap();
        mode.set(&conn, SyncMode::Normal).unwrap();
        assert_eq!((mode, setting(&conn)), (SyncMode::Normal, 1));
        mode.set(&conn, SyncMode::Full).unwrap();
        assert_eq!((mode, setting(&conn)), (SyncMode::Full, 2));
    }
}
