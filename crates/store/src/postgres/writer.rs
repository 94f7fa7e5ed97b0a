//! The writer task and its group commit, on PostgreSQL.
//!
//! As in the SQLite store, requests hand the writer a job; the writer takes every job waiting (up to
//! a bound), runs them in one transaction, each so that its failure undoes only its own work (the
//! first by rolling the transaction back, each later one by a savepoint), commits once and answers
//! them all after the commit. One commit carries many requests' writes, which is what makes
//! PostgreSQL's commit (a WAL flush and a round trip) affordable per change.
//!
//! Single creates, the commonest request, are jobs of their own kind ([`Job::Create`]): the creates
//! that follow each other in a batch go in together, their records with one statement and their
//! events with it, under one savepoint (`records::insert_prepared_run`). A round trip to the
//! database is what a request costs here, so a run of two hundred creates costs one instead of two
//! hundred. A create refused for its email is named by that statement and fails alone.
//!
//! The writer is also what keeps the event log's seq order equal to its commit order, which the
//! dispatcher's cursors rely on (an endpoint's cursor moves past an event only once everything
//! before it is settled). A sequence would hand out numbers before commit, so a reader could see
//! seq 11 committed while seq 10 is still in flight, move a cursor past 10 and never deliver it.
//! Instead, every transaction of the writer begins by taking a transaction-level advisory lock,
//! sent with `BEGIN` in the same round trip and held until the commit; that round trip then reads
//! the newest seq (under the lock, so it is the last committed one) and the transaction's events
//! number on from it. Within a server there is one writer, so
//! the lock costs nothing; servers sharing the database take turns, a whole batch per turn. Taking
//! it first, always, means writers of different servers never wait for each other in two orders (a
//! lock taken only at the first event could be waited for while holding a row another writer needs).
//!
//! A transaction that carries nothing but attempts' outcomes ([`Durability::Deferred`]) commits
//! with `synchronous_commit = off`: its `COMMIT` answers once the commit is in PostgreSQL's memory
//! and WAL buffers, without waiting for the WAL's flush. An outcome lost that way (only a crash of
//! PostgreSQL itself can lose one) leaves its delivery pending, so it is attempted again with the
//! same webhook-id, never lost; SQLite's writer treats outcomes the same way. Any other job in the
//! transaction (a create, an endpoint's change) makes its commit synchronous, and a later
//! synchronous commit flushes the earlier asynchronous ones with it. The outcome-only jobs of a batch
//! go first, in a transaction of their own ([`take_synchronous`]): an attempt holds its endpoint's
//! `max_in_flight` permit until its outcome is committed, so an outcome that waited for the creates'
//! statements and flush held the lane back by as much.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use deadpool_postgres::{Object, Pool};
use estate_crm_domain::webhook::EventFilter;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::SimpleQueryMessage;

use super::availability::Availability;
use super::recent::{Recent, RecentNotes};
use super::records;
use crate::prepare::PreparedRecord;
use crate::{Actor, ChangeFeed, Changes, ErrorKind, StoreError};
use estate_crm_domain::Record;

/// How many requests one commit may carry. Bounds the latency a request waits behind others.
const MAX_BATCH: usize = 512;
/// How many requests may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;
/// The log target of the timings (as the SQLite store's).
const TIMING: &str = "estate_crm::timing";
/// How every writer transaction begins: with the writers' advisory lock ("events" in ASCII), held
/// to its commit, and then the newest event seq, read under the lock so that the transaction's
/// events number on from the last committed one. One round trip for the three.
const BEGIN: &str = "BEGIN; SELECT pg_advisory_xact_lock(111559182283891); SELECT COALESCE(MAX(seq), 0) FROM events";

/// What goes before `COMMIT`: a statement that fails in an aborted transaction (see [`commit`]).
const CHECK_WHOLE: &str = "SELECT 1";
/// The same for a transaction of outcomes only, and then its commit made asynchronous:
/// `synchronous_commit` is read when the commit is made, and `SET LOCAL` lasts to its end.
const CHECK_WHOLE_ASYNCHRONOUS: &str = "SELECT 1; SET LOCAL synchronous_commit = off";

/// A boxed future that borrows the writer's context.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// Any work, run with the writer's context, or told why it cannot be (no connection).
type Work =
    Box<dyn for<'a> FnOnce(Result<&'a mut WriteCtx, &'a StoreError>, Undo) -> BoxFuture<'a, (Reply, JobEnd)> + Send>;

/// Whether a job's commit must be on disk before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Answered once the commit's WAL is flushed: anything a client was told is kept.
    Synchronous,
    /// Answered once the commit is in PostgreSQL's memory: work whose loss in a crash of the
    /// database only repeats something (attempts' outcomes; see the module's documentation).
    Deferred,
}

/// What requests hand the writer.
enum Job {
    /// Any work, run alone: undone by its own savepoint (or, first in its transaction, by the
    /// transaction's rollback).
    Work(Work, Durability),
    /// A single create, prepared before it reaches the writer: it goes in with the creates next to
    /// it in the batch.
    Create(Box<CreateJob>),
}

/// A single create waiting for the writer.
pub(crate) struct CreateJob {
    pub actor: Actor,
    pub prepared: PreparedRecord,
    answer: oneshot::Sender<Result<Record, StoreError>>,
}

impl CreateJob {
    /// How the job is answered once its transaction ends: `result` if that committed.
    fn reply(self, result: Result<(), StoreError>) -> Reply {
        let CreateJob { prepared, answer, .. } = self;
        Box::new(move |committed: Result<(), &StoreError>| {
            let result = match committed {
                Ok(()) => result.map(|()| prepared.record),
                Err(err) => Err(err.shared()),
            };
            let _ = answer.send(result);
        })
    }
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
    /// Where record seqs come from.
    pub seqs: Arc<super::records::RecordSeqs>,
    /// The active endpoints, to wake those an event is owed to; `None` when they must be read again.
    pub routes: Option<Vec<Route>>,
    /// Set when another server changed endpoints: the routes are read again at the next transaction,
    /// so that this server's commits wake (and tell the others of) endpoints made elsewhere.
    pub routes_stale: Arc<AtomicBool>,
    /// This server's id in the cluster, so that it ignores its own wake-ups (`cluster.rs`).
    pub server: String,
    /// The events this writer committed lately, which answer most lane reads (`recent.rs`).
    pub recent: Arc<Recent>,
}

/// What a job sees: the connection, inside the open transaction, and the writer's state.
pub(crate) struct WriteCtx {
    pub client: Object,
    pub state: WriterState,
    /// What this job changed that the dispatcher must hear of.
    pub changes: Changes,
    /// What this job wrote that the in-memory ring of recent events must hear of.
    pub recent: RecentNotes,
    /// The last event seq given in this transaction (at first, the newest committed one).
    last_event_seq: i64,
    /// A savepoint could not be taken, released or rolled back (the kind of that error): the
    /// transaction may hold a failed job's work, so it must not commit.
    poisoned: Option<ErrorKind>,
    /// The savepoint of the last job that succeeded is still open: it is released in the same round
    /// trip as the next job's savepoint is taken (or by the commit), not in one of its own.
    savepoint_open: bool,
}

impl WriteCtx {
    /// Numbers `count` new events: answers the first seq, the others follow it. The transaction
    /// holds the writers' lock (see the module's documentation), so nobody else numbers meanwhile.
    pub fn next_event_seqs(&mut self, count: usize) -> i64 {
        let last = self.last_event_seq;
        self.last_event_seq = last + i64::try_from(count).unwrap_or(i64::MAX - last);
        last + 1
    }

    /// The last event seq given in this transaction (at first, the newest committed one).
    pub fn last_event_seq(&self) -> i64 {
        self.last_event_seq
    }
}

/// The handle requests use to reach the writer.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on its own connection from `pool`: a pool of two, so that a
    /// connection the database closed is replaced on the next batch while the writer still holds
    /// the dead one.
    pub async fn start(
        pool: Pool,
        availability: Arc<Availability>,
        state: WriterState,
        feed: Arc<ChangeFeed>,
    ) -> Result<Writer, StoreError> {
        let client = pool.get().await?;
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let ctx = WriteCtx {
            client,
            state,
            changes: Changes::default(),
            recent: RecentNotes::default(),
            last_event_seq: 0,
            poisoned: None,
            savepoint_open: false,
        };
        tokio::spawn(run(pool, availability, ctx, jobs, feed));
        Ok(Writer { queue })
    }

    /// Runs `work` in the next group commit and answers its result once that commit is durable.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut WriteCtx) -> BoxFuture<'a, Result<T, StoreError>> + Send + 'static,
    {
        self.run_with(Durability::Synchronous, work).await
    }

    /// Runs `work` in the next group commit and answers its result once that commit is made, as
    /// durable as `durability` asks (a commit that carries any synchronous job is synchronous).
    pub async fn run_with<T, F>(&self, durability: Durability, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut WriteCtx) -> BoxFuture<'a, Result<T, StoreError>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Work = Box::new(move |ctx, undo| {
            Box::pin(async move {
                let result = match ctx {
                    Ok(ctx) => run_job(ctx, undo, work).await,
                    Err(err) => Err(err.shared()),
                };
                let end =
                    if result.is_err() && undo == Undo::Transaction { JobEnd::RollBack } else { JobEnd::Continue };
                let reply: Reply = Box::new(move |committed: Result<(), &StoreError>| {
                    let result = match committed {
                        Ok(()) => result,
                        Err(err) => Err(err.shared()),
                    };
                    let _ = answer.send(result);
                });
                (reply, end)
            })
        });
        self.send(Job::Work(job, durability)).await?;
        answered.await.map_err(|_| StoreError::internal("writing", "the writer stopped before answering"))?
    }

    /// Writes a single create (record and events) in the next group commit, with the creates beside
    /// it, and answers the record once that commit is durable.
    pub async fn create(&self, actor: Actor, prepared: PreparedRecord) -> Result<Record, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.send(Job::Create(Box::new(CreateJob { actor, prepared, answer }))).await?;
        answered.await.map_err(|_| StoreError::internal("writing", "the writer stopped before answering"))?
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.queue.send(job).await.map_err(|_| StoreError::internal("writing", "the writer has stopped"))
    }
}

/// Runs one job's work; on failure its writes are undone as `undo` says (for
/// [`Undo::Transaction`], by the caller rolling the transaction back) and its changes dropped.
async fn run_job<T, F>(ctx: &mut WriteCtx, undo: Undo, work: F) -> Result<T, StoreError>
where
    F: for<'a> FnOnce(&'a mut WriteCtx) -> BoxFuture<'a, Result<T, StoreError>>,
{
    if undo == Undo::Savepoint {
        let take = if ctx.savepoint_open { "RELEASE job; SAVEPOINT job" } else { "SAVEPOINT job" };
        send_savepoint(ctx, take);
        ctx.savepoint_open = true;
    }
    let before = std::mem::take(&mut ctx.changes);
    let last_event_seq = ctx.last_event_seq;
    let notes_before = std::mem::replace(&mut ctx.recent, RecentNotes::began_after(last_event_seq));
    let result = work(&mut *ctx).await;
    let changes = std::mem::replace(&mut ctx.changes, before);
    let mut notes = std::mem::replace(&mut ctx.recent, notes_before);
    if changes.settings_changed {
        // Read the routes again on next use, whether or not this job's changes stay.
        ctx.state.routes = None;
    }
    match &result {
        Ok(_) => {
            // Its savepoint stays open until the next job's is taken or the transaction commits.
            ctx.changes.endpoints.extend(changes.endpoints);
            ctx.changes.rescan.extend(changes.rescan);
            ctx.changes.settings_changed |= changes.settings_changed;
            if ctx.last_event_seq != last_event_seq {
                // Its statements numbered events that memory did not see one by one.
                notes.forget_events();
            }
            ctx.recent.absorb(notes);
        }
        Err(_) => {
            // The seqs this job gave are undone with its events.
            ctx.last_event_seq = last_event_seq;
            if undo == Undo::Savepoint {
                // The savepoint before it was released when this one was taken: none is left open.
                ctx.savepoint_open = false;
                savepoint(ctx, "ROLLBACK TO job; RELEASE job").await?;
            }
        }
    }
    result
}

/// Sends a savepoint command without waiting for its answer, so that it travels with the job's
/// first statement rather than costing a round trip of its own (commands on one connection run in
/// the order they are sent). A failure is not lost: it aborts the transaction, so whatever the job
/// then sends fails, its `ROLLBACK TO job` fails and poisons the transaction, and the commit of an
/// aborted transaction fails (see [`commit`]); nothing of the batch is acknowledged.
fn send_savepoint(ctx: &mut WriteCtx, sql: &'static str) {
    // tokio-postgres sends a request on its future's first poll; the connection reads the answer
    // and drops it once the future is gone. Were a request ever not sent, a failed job's rollback
    // to the missing savepoint would fail and poison the batch: refused, never half-written.
    let mut sent = std::pin::pin!(ctx.client.batch_execute(sql));
    if let Poll::Ready(Err(err)) = sent.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        ctx.poisoned = Some(StoreError::from(err).kind().clone());
    }
}

/// Runs a savepoint command; if it fails, the transaction is poisoned.
async fn savepoint(ctx: &mut WriteCtx, sql: &str) -> Result<(), StoreError> {
    let done = ctx.client.batch_execute(sql).await.map_err(StoreError::from);
    if let Err(err) = &done {
        ctx.poisoned = Some(err.kind().clone());
    }
    done
}

async fn run(
    pool: Pool,
    availability: Arc<Availability>,
    mut ctx: WriteCtx,
    mut jobs: mpsc::Receiver<Job>,
    feed: Arc<ChangeFeed>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if ctx.client.is_closed() {
            // The database closed the connection (a restart, a failover, an administrator): a new
            // one for this batch; the dead one leaves the pool for good. While the database is down
            // the batch is answered at once (`Availability` says so once per outage).
            match availability.connect(&pool).await {
                Ok(client) => drop(Object::take(std::mem::replace(&mut ctx.client, client))),
                Err(err) => {
                    if !err.is_unavailable() {
                        tracing::error!(error = %err, "the writer has no connection to the database");
                    }
                    refuse(&mut batch, &err).await;
                    continue;
                }
            }
        }
        let mut synchronous = take_synchronous(&mut batch);
        for part in [&mut batch, &mut synchronous] {
            if !part.is_empty() {
                commit_and_publish(&mut ctx, part, &feed).await;
            }
        }
    }
}

/// Takes the batch's synchronous jobs out of it, in their order, and leaves its outcome-only ones:
/// those commit first, in a transaction of their own, so that attempts' outcomes (and the
/// `max_in_flight` permits their attempts hold until then) do not wait for creates' statements and
/// WAL flush. Every job of a batch was sent before the batch began and none is answered yet, so
/// this order is one they could have had.
fn take_synchronous(batch: &mut Vec<Job>) -> Vec<Job> {
    let (deferred, synchronous) = batch.drain(..).partition(|job| matches!(job, Job::Work(_, Durability::Deferred)));
    *batch = deferred;
    synchronous
}

/// Commits `batch` (answering every job) and tells the ring of recent events and the dispatcher.
async fn commit_and_publish(ctx: &mut WriteCtx, batch: &mut Vec<Job>, feed: &ChangeFeed) {
    let jobs_in_batch = batch.len();
    let started = Instant::now();
    let committed = commit_batch(ctx, batch).await;
    tracing::debug!(
        target: TIMING,
        jobs = jobs_in_batch,
        took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "group commit"
    );
    let changes = std::mem::take(&mut ctx.changes);
    let notes = std::mem::take(&mut ctx.recent);
    match committed {
        Ok(()) => {
            // Before anyone hears of the commit, so that the reads it brings find its events.
            ctx.state.recent.apply(notes, ctx.last_event_seq, changes.settings_changed);
            feed.publish(changes)
        }
        Err(kind) => {
            // Whatever this transaction did may or may not be in.
            ctx.state.recent.forget_all();
            ctx.state.routes = None;
            if kind == ErrorKind::Unavailable {
                // The connection broke, perhaps after COMMIT reached the database: the batch
                // may be committed though its callers were answered 503. Its lanes are woken
                // as if it were, so that what it made owed goes out; a wake for nothing costs
                // a read.
                feed.publish(changes);
            }
        }
    }
}

/// Answers every job of the batch with `err`, unrun.
async fn refuse(batch: &mut Vec<Job>, err: &StoreError) {
    for job in batch.drain(..) {
        match job {
            Job::Work(work, _) => {
                let (reply, _) = work(Err(err), Undo::Transaction).await;
                reply(Ok(()));
            }
            Job::Create(create) => create.reply(Err(err.shared()))(Ok(())),
        }
    }
}

/// Runs and commits the batch, answering every job; a failure's kind says whether the batch may be
/// committed after all ([`ErrorKind::Unavailable`]: the connection broke).
async fn commit_batch(ctx: &mut WriteCtx, batch: &mut Vec<Job>) -> Result<(), ErrorKind> {
    let mut jobs = batch.drain(..).peekable();
    while jobs.peek().is_some() {
        ctx.poisoned = None;
        ctx.savepoint_open = false;
        if ctx.state.routes_stale.swap(false, Ordering::AcqRel) {
            ctx.state.routes = None;
        }
        match begin(&ctx.client).await {
            Ok(newest) => {
                ctx.last_event_seq = newest;
                ctx.recent = RecentNotes::began_after(newest);
            }
            Err(err) => {
                tracing::error!(error = %err, "the writer could not start a transaction");
                // The BEGIN may have gone through and the lock not: end what was begun.
                let _ = ctx.client.batch_execute("ROLLBACK").await;
                let mut rest: Vec<Job> = jobs.collect();
                refuse(&mut rest, &err).await;
                return Err(err.kind().clone());
            }
        }
        let mut replies = Vec::new();
        // Whether the transaction must wait for its WAL flush: any job but an outcome-only one.
        let mut synchronous = false;
        if let Some(Job::Work(first, durability)) = jobs.next_if(|job| matches!(job, Job::Work(..))) {
            synchronous |= durability == Durability::Synchronous;
            let (reply, end) = first(Ok(&mut *ctx), Undo::Transaction).await;
            if end == JobEnd::RollBack {
                // Nothing else is in the transaction yet: rolling it back undoes exactly this job,
                // which answers its own error. The next job begins a new transaction.
                if let Err(err) = ctx.client.batch_execute("ROLLBACK").await {
                    tracing::error!(error = %err, "rolling back a failed job failed");
                }
                reply(Ok(()));
                continue;
            }
            replies.push(reply);
        }
        while let Some(job) = jobs.next() {
            match job {
                Job::Work(work, durability) => {
                    synchronous |= durability == Durability::Synchronous;
                    replies.push(work(Ok(&mut *ctx), Undo::Savepoint).await.0);
                }
                Job::Create(create) => {
                    synchronous = true;
                    let mut run = vec![*create];
                    while let Some(Job::Create(next)) = jobs.next_if(|job| matches!(job, Job::Create(_))) {
                        run.push(*next);
                    }
                    replies.extend(run_creates(ctx, run).await);
                }
            }
        }
        let committed = commit(ctx, synchronous).await;
        if let Err(err) = &committed {
            tracing::error!(error = %err, "a group commit failed; every request in it is answered with an error");
            // The transaction may still be open (aborted): end it, so the next batch starts clean.
            let _ = ctx.client.batch_execute("ROLLBACK").await;
        }
        for reply in replies {
            reply(committed.as_ref().map(|_| ()));
        }
        return committed.map_err(|err| err.kind().clone());
    }
    Ok(())
}

/// Writes a run of consecutive single creates with one statement under one savepoint, and answers
/// how each is to be replied to. If the statement fails as a whole (not for an email: for something
/// no create should cause), the run is undone and its creates are tried again one at a time, each
/// under its own savepoint, so that only the one at fault fails.
async fn run_creates(ctx: &mut WriteCtx, run: Vec<CreateJob>) -> Vec<Reply> {
    let take = if ctx.savepoint_open { "RELEASE job; SAVEPOINT job" } else { "SAVEPOINT job" };
    send_savepoint(ctx, take);
    ctx.savepoint_open = true;
    let before = std::mem::take(&mut ctx.changes);
    let last_event_seq = ctx.last_event_seq;
    let creates: Vec<(&Actor, &PreparedRecord)> = run.iter().map(|job| (&job.actor, &job.prepared)).collect();
    let written = records::insert_prepared_run(ctx, &creates).await;
    let changes = std::mem::replace(&mut ctx.changes, before);
    match written {
        Ok(outcomes) => {
            ctx.changes.endpoints.extend(changes.endpoints);
            ctx.changes.rescan.extend(changes.rescan);
            ctx.changes.settings_changed |= changes.settings_changed;
            note_created_events(ctx, last_event_seq, &run, &outcomes);
            run.into_iter().zip(outcomes).map(|(job, outcome)| job.reply(outcome)).collect()
        }
        Err(err) => {
            ctx.last_event_seq = last_event_seq;
            ctx.savepoint_open = false;
            if savepoint(ctx, "ROLLBACK TO job; RELEASE job").await.is_err() {
                // The transaction holds the run's work: it will not commit, and every job says so.
                return run.into_iter().map(|job| job.reply(Err(err.shared()))).collect();
            }
            tracing::warn!(error = %err, creates = run.len(), "a run of creates failed together; trying each alone");
            let mut replies = Vec::with_capacity(run.len());
            for job in run {
                replies.push(run_create_alone(ctx, job).await);
            }
            replies
        }
    }
}

/// Notes for the in-memory ring the events a run of creates wrote: the statement numbered them
/// from `last_event_seq` on, in the run's order, those of the creates written only.
fn note_created_events(
    ctx: &mut WriteCtx,
    last_event_seq: i64,
    run: &[CreateJob],
    outcomes: &[Result<(), StoreError>],
) {
    let mut notes = RecentNotes::began_after(last_event_seq);
    let mut seq = last_event_seq;
    for (job, _) in run.iter().zip(outcomes).filter(|(_, outcome)| outcome.is_ok()) {
        for (name, body) in &job.prepared.events {
            seq += 1;
            notes.event(seq, *name, body);
        }
    }
    if seq != ctx.last_event_seq {
        // Not the count the statement numbered: memory cannot tell which is which.
        notes.forget_events();
    }
    ctx.recent.absorb(notes);
}

/// Writes one create under its own savepoint, as any other job.
async fn run_create_alone(ctx: &mut WriteCtx, job: CreateJob) -> Reply {
    let CreateJob { actor, prepared, answer } = job;
    let result = run_job(ctx, Undo::Savepoint, move |ctx| {
        Box::pin(async move { records::insert_prepared(ctx, &actor, prepared).await })
    })
    .await;
    Box::new(move |committed: Result<(), &StoreError>| {
        let result = match committed {
            Ok(()) => result,
            Err(err) => Err(err.shared()),
        };
        let _ = answer.send(result);
    })
}

/// Begins a writer transaction (see [`BEGIN`]); answers the newest event seq.
async fn begin(client: &Object) -> Result<i64, StoreError> {
    let messages =
        client.simple_query(BEGIN).await.map_err(|err| StoreError::postgres("starting a transaction", err))?;
    let newest = messages.iter().rev().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    });
    newest
        .and_then(|newest| newest.parse().ok())
        .ok_or_else(|| StoreError::internal("starting a transaction", "the newest event seq was not answered"))
}

/// Commits the transaction, if it is whole. PostgreSQL answers `COMMIT` of a transaction that an
/// error aborted by rolling it back *without an error*, so a statement goes first that fails in an
/// aborted transaction; both travel in one round trip. An asynchronous commit (`synchronous`
/// false: see [`Durability::Deferred`]) says so with `SET LOCAL`, in the same round trip.
async fn commit(ctx: &mut WriteCtx, synchronous: bool) -> Result<(), StoreError> {
    if let Some(kind) = &ctx.poisoned {
        let why = "a request's work could not be undone alone";
        return Err(match kind {
            // The connection broke: nothing of the transaction is committed.
            ErrorKind::Unavailable => StoreError::unavailable("committing", why),
            _ => StoreError::internal("committing", why),
        });
    }
    // The other servers hear what changed once it commits, in the same round trip. A connection
    // that breaks here may break after the database committed: the callers are answered
    // Unavailable (not acknowledged), though their changes may be in.
    let check = if synchronous { CHECK_WHOLE } else { CHECK_WHOLE_ASYNCHRONOUS };
    let sql = match super::cluster::notify_sql(&ctx.state.server, &ctx.changes) {
        Some(notify) => format!("{check}; {notify}; COMMIT"),
        None => format!("{check}; COMMIT"),
    };
    ctx.client.batch_execute(&sql).await.map_err(|err| StoreError::postgres("committing", err))
}
