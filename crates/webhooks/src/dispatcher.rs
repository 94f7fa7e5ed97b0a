//! The dispatcher: turns pending deliveries into attempts.
//!
//! One lane per active endpoint. A lane reads its endpoint's due deliveries in order, in batches,
//! starts each attempt as soon as one of the endpoint's `max_in_flight` permits is free, and hands
//! the outcome to one recorder that writes outcomes in batched commits. Lanes share nothing but the
//! HTTP client and the recorder, so a slow or dead endpoint holds up only its own lane.
//!
//! A lane wakes when the store reports new deliveries for its endpoint (right after the commit that
//! made them: no polling delay), when a retry it scheduled comes due, or when deliveries were retried
//! by hand. While a bulk import is being written, lanes hold back their next read for up to
//! [`IMPORT_YIELD`]: on a two-core box the import and its own webhooks otherwise split the CPU, and
//! the import, which a person is waiting for, would take twice as long. No database transaction is
//! open while a request is in flight: reads are short and outcomes go through the store's writer
//! afterwards.
//!
//! A delivery stays `pending` in the database until its outcome is committed, so a crash at any point
//! leaves it to be attempted again after the next start (at least once). Within one process a delivery
//! being attempted is remembered as claimed until its outcome is committed, so it is not started twice.
//!
//! When several servers share the database, a lane runs only for an endpoint whose lease this
//! server holds (the store's [`Leases`]); the lane keeps the lease in use until it has stopped and
//! its attempts' outcomes are committed, so the next holder starts from those outcomes and sends
//! nothing twice. Before each attempt the lane checks that the lease is still good: a server cut
//! off from the database stops starting attempts before another may take the endpoint.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estate_crm_domain::webhook::RetrySchedule;
use estate_crm_store::{DueDelivery, Endpoint, LeaseUse, Leases, NextStep, Outcome, PageRequest, Store, StoreError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::DeliveryMetrics;
use crate::retry::next_step;
use crate::{AttemptOutcome, Message, Sender, TargetUrl};

/// How many due deliveries a lane reads at once.
const CLAIM_BATCH: usize = 256;
/// How many outcomes may wait for the recorder; attempts wait when it is full.
const OUTCOME_QUEUE: usize = 8192;
/// How many outcomes one commit records at most.
const RECORD_BATCH: usize = 2048;
/// A commit of fewer outcomes than this first waits [`RECORD_GATHER`] for more. With single creates
/// each attempt ended alone, and the recorder made a writer transaction of each: five endpoints
/// made five transactions per create, each queued in front of the next create.
const RECORD_GATHER_BELOW: usize = 256;
/// How long a small batch of outcomes waits for more. Nothing waits on it but the delivery's row:
/// the receiver has its webhook already.
const RECORD_GATHER: Duration = Duration::from_millis(2);
/// How long to wait before reading again after the database failed.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The first wait before committing a batch of outcomes again while the database cannot be reached;
/// each wait doubles up to [`RECORD_RETRY_MAX`]. The batch is kept meanwhile.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(200);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);
/// Tries of a batch of outcomes that fails for another reason than an outage, before it is given up.
const RECORD_TRIES: u32 = 3;
/// After this many attempts in a row that reached no receiver (refused, reset, timed out), the
/// endpoint counts as down: its lane stops spending its deliveries' attempts and probes instead.
const DOWN_AFTER: u32 = 20;
/// The first wait between probes of a down endpoint; it doubles up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between probes of a down endpoint.
const PROBE_MAX: Duration = Duration::from_secs(10);
/// How long a lane handed over to another server waits for its attempts to end and their outcomes
/// to be committed before it lets the lease go anyway (the next holder then sends those again).
const HANDOVER_LIMIT: Duration = Duration::from_secs(60);
/// How often a stopping lane looks whether its outcomes are committed.
const SETTLED_POLL: Duration = Duration::from_millis(10);
/// How long a lane holds back its next read while a bulk import is being written. An import of
/// 10,000 rows takes about a tenth of a second here; waiting longer than this keeps deliveries
/// moving (a batch per wait) under imports that follow each other without a break.
const IMPORT_YIELD: Duration = Duration::from_millis(250);

/// The log target of the hand-off timings (`RUST_LOG=info,estate_crm::timing=debug`), shared with
/// the store's writer: a slow delivery is traced to the step that held it.
const TIMING: &str = "estate_crm::timing";

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// The schedule of endpoints that have none of their own.
    pub default_schedule: RetrySchedule,
    /// How long attempts in flight may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

/// The dispatcher. [`Dispatcher::run`] runs it until the token is cancelled.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sender: Sender,
    config: DispatcherConfig,
    metrics: DeliveryMetrics,
}

impl Dispatcher {
    /// Makes a dispatcher over this store, sending with this sender.
    pub fn new(store: Arc<dyn Store>, sender: Sender, config: DispatcherConfig, metrics: DeliveryMetrics) -> Self {
        Dispatcher { store, sender, config, metrics }
    }

    /// Delivers until `shutdown` is cancelled, then gives attempts in flight the grace period.
    pub async fn run(self, shutdown: CancellationToken) {
        let (outcomes, outcome_queue) = mpsc::channel(OUTCOME_QUEUE);
        let recorder = tokio::spawn(record_outcomes(self.store.clone(), outcome_queue));
        let leases = self.store.leases().clone();
        let mut held = leases.subscribe();
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            sender: self.sender.clone(),
            metrics: self.metrics.clone(),
            outcomes,
            grace: self.config.shutdown_grace,
            leases: leases.clone(),
            shutdown: shutdown.clone(),
        });
        let mut lanes = Lanes::default();
        // Set while the lanes may not match the endpoints because a read of them failed (the
        // database was down): they are read again then, or a settings change would be missed.
        let mut resync_at = self.sync_lanes(&shared, &mut lanes, &shutdown).await;
        loop {
            let changes = tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = held.changed() => {
                    if changed.is_err() {
                        // The store is gone; shutdown follows.
                        shutdown.cancelled().await;
                        break;
                    }
                    resync_at = self.sync_lanes(&shared, &mut lanes, &shutdown).await;
                    continue;
                }
                _ = tokio::time::sleep_until(resync_at.unwrap_or_else(tokio::time::Instant::now)), if resync_at.is_some() => {
                    resync_at = self.sync_lanes(&shared, &mut lanes, &shutdown).await;
                    continue;
                }
                changes = self.store.changes().next() => changes,
            };
            if changes.settings_changed {
                // An endpoint added, made active or deleted changes which leases there are.
                leases.recheck();
                resync_at = self.sync_lanes(&shared, &mut lanes, &shutdown).await;
            }
            for id in &changes.rescan {
                if let Some(lane) = lanes.running.get(id) {
                    lane.signal.rescan.store(true, Ordering::Relaxed);
                    lane.signal.wake.notify_one();
                }
            }
            for id in &changes.endpoints {
                if let Some(lane) = lanes.running.get(id) {
                    lane.signal.wake.notify_one();
                }
            }
        }
        drop(shared);
        for (_, lane) in lanes.running {
            let _ = lane.task.await;
        }
        for (_, task) in lanes.stopping {
            let _ = task.await;
        }
        let _ = recorder.await;
    }

    /// Starts a lane for each active endpoint this server holds without one, stops those of endpoints
    /// gone, inactive or handed over, and gives running lanes their endpoint's new settings.
    /// Answers when to try again if the endpoints could not be read.
    async fn sync_lanes(
        &self,
        shared: &Arc<Shared>,
        lanes: &mut Lanes,
        shutdown: &CancellationToken,
    ) -> Option<tokio::time::Instant> {
        let endpoints = match self.active_endpoints(&shared.leases).await {
            Ok(endpoints) => endpoints,
            Err(err) => {
                tracing::error!(error = %err, "could not read the webhook endpoints; keeping the lanes as they are and reading them again shortly");
                return Some(tokio::time::Instant::now() + ERROR_PAUSE);
            }
        };
        let active: HashSet<String> = endpoints.iter().map(|e| e.id.clone()).collect();
        lanes.stopping.retain(|_, task| !task.is_finished());
        for id in lanes.running.keys().filter(|id| !active.contains(*id)).cloned().collect::<Vec<_>>() {
            if let Some(lane) = lanes.running.remove(&id) {
                lane.stop.cancel();
                lanes.stopping.insert(id, lane.task);
            }
        }
        for endpoint in endpoints {
            let settings = Arc::new(LaneSettings::new(endpoint, &self.config.default_schedule));
            match lanes.running.get(&settings.endpoint.id) {
                Some(lane) => {
                    lane.settings.send_replace(settings);
                    lane.signal.wake.notify_one();
                }
                None => {
                    let id = settings.endpoint.id.clone();
                    let previous = lanes.stopping.remove(&id);
                    let lane = Lane::start(shared.clone(), settings, previous, shutdown.child_token());
                    lanes.running.insert(id, lane);
                }
            }
        }
        None
    }

    /// The active endpoints whose lease this server holds.
    async fn active_endpoints(&self, leases: &Leases) -> Result<Vec<Endpoint>, estate_crm_store::StoreError> {
        let mut endpoints = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.store.list_endpoints(PageRequest { limit: 1000, cursor }).await?;
            endpoints.extend(page.items.into_iter().filter(|e| e.active && leases.holds(&e.id)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(endpoints),
            }
        }
    }
}

/// What every lane shares.
struct Shared {
    store: Arc<dyn Store>,
    sender: Sender,
    metrics: DeliveryMetrics,
    outcomes: mpsc::Sender<Recorded>,
    grace: Duration,
    /// Which endpoints this server may deliver.
    leases: Leases,
    /// The whole dispatcher's stop, as against one lane's (a hand-over).
    shutdown: CancellationToken,
}

/// An endpoint's settings as a lane uses them, resolved once per change.
struct LaneSettings {
    endpoint: Endpoint,
    url: Result<TargetUrl, String>,
    schedule: RetrySchedule,
    /// The secrets that sign while a replaced secret still does, and once it no longer does (the
    /// same when none was replaced): looked up per attempt instead of copied for each.
    secrets_until_previous_ends: Vec<Vec<u8>>,
    secrets_after_previous_ends: Vec<Vec<u8>>,
}

impl LaneSettings {
    fn new(endpoint: Endpoint, default_schedule: &RetrySchedule) -> LaneSettings {
        let url = TargetUrl::parse(&endpoint.url).map_err(|e| format!("the endpoint's URL is not valid: {e}"));
        let schedule = endpoint.retry_schedule.clone().unwrap_or_else(|| default_schedule.clone());
        // `Endpoint::signing_secrets` changes its answer only when the replaced secret's time ends.
        let ends = endpoint.previous_secret_until.unwrap_or(i64::MIN);
        let secrets_until_previous_ends = endpoint.signing_secrets(ends.saturating_sub(1));
        let secrets_after_previous_ends = endpoint.signing_secrets(ends);
        LaneSettings { endpoint, url, schedule, secrets_until_previous_ends, secrets_after_previous_ends }
    }

    /// The secrets that sign an attempt started at `now_ms`, as `Endpoint::signing_secrets` says.
    fn signing_secrets(&self, now_ms: i64) -> &[Vec<u8>] {
        match self.endpoint.previous_secret_until {
            Some(ends) if now_ms < ends => &self.secrets_until_previous_ends,
            _ => &self.secrets_after_previous_ends,
        }
    }
}

/// The lanes: those running, and those stopped but still ending their attempts (an endpoint made
/// inactive, deleted or handed to another server), which a new lane of the same endpoint waits for.
#[derive(Default)]
struct Lanes {
    running: HashMap<String, Lane>,
    stopping: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// How the rest of the dispatcher reaches a lane.
struct Lane {
    settings: watch::Sender<Arc<LaneSettings>>,
    signal: Arc<Signal>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Wake-ups of a lane and what it must know when it wakes.
#[derive(Default)]
struct Signal {
    wake: Notify,
    /// Older deliveries became due: read from the start again.
    rescan: AtomicBool,
    /// The earliest retry this lane scheduled that it has not looked for yet (Unix ms).
    retry_at: Mutex<Option<i64>>,
    /// Deliveries being attempted or whose outcome is not committed yet, and those settled since the
    /// lane's current read began (see [`Claims`]).
    claims: Mutex<Claims>,
    /// The receiver answered 410 Gone: start nothing more; the lane is stopped once the endpoint's
    /// new state (inactive) is committed.
    gone: AtomicBool,
    /// Attempts in a row that reached no receiver; any HTTP answer resets it.
    unreachable_in_a_row: AtomicU32,
}

/// What keeps a delivery from being started twice within one process.
///
/// A read can return a delivery as pending while its outcome is being committed; once that commit
/// releases it, the read's copy is stale. So a delivery released after the current read began may not
/// be claimed from that read.
#[derive(Default)]
struct Claims {
    in_progress: HashSet<i64>,
    settled_since_read: HashSet<i64>,
}

impl Signal {
    fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called just before a read of due deliveries.
    fn begin_read(&self) {
        self.claims().settled_since_read.clear();
    }

    /// Marks a delivery from the current read as being attempted; false if it already is or was
    /// settled since the read began.
    fn claim(&self, seq: i64) -> bool {
        let mut claims = self.claims();
        !claims.settled_since_read.contains(&seq) && claims.in_progress.insert(seq)
    }

    /// Gives up a claim without an attempt.
    fn unclaim(&self, seq: i64) {
        self.claims().in_progress.remove(&seq);
    }

    fn endpoint_is_down(&self) -> bool {
        self.unreachable_in_a_row.load(Ordering::Acquire) >= DOWN_AFTER
    }

    /// Waits until every attempt this lane claimed has its outcome committed.
    async fn outcomes_committed(&self) {
        while !self.claims().in_progress.is_empty() {
            tokio::time::sleep(SETTLED_POLL).await;
        }
    }
}

impl Signal {
    /// Called once an outcome is committed: the delivery may be read again, and a scheduled retry
    /// sets the lane's timer.
    fn release(&self, seq: i64, next: &NextStep) {
        let mut claims = self.claims();
        claims.in_progress.remove(&seq);
        claims.settled_since_read.insert(seq);
        drop(claims);
        if let NextStep::RetryAt(at) = next {
            let mut retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
            *retry_at = Some(retry_at.map_or(*at, |current| current.min(*at)));
            drop(retry_at);
            self.wake.notify_one();
        }
    }
}

impl Lane {
    /// Starts a lane; if an earlier lane of the endpoint is still stopping, this one begins once that
    /// one has ended, so that an attempt of the old lane is never started again by the new one.
    fn start(
        shared: Arc<Shared>,
        settings: Arc<LaneSettings>,
        previous: Option<tokio::task::JoinHandle<()>>,
        stop: CancellationToken,
    ) -> Lane {
        // In use from before the lane's first check of the lease to after its last outcome.
        let lease = shared.leases.use_lease(&settings.endpoint.id);
        let (settings_tx, settings_rx) = watch::channel(settings);
        let signal = Arc::new(Signal::default());
        let worker = LaneWorker { shared, settings: settings_rx, signal: signal.clone(), stop: stop.clone(), lease };
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            worker.run().await;
        });
        Lane { settings: settings_tx, signal, stop, task }
    }
}

struct LaneWorker {
    shared: Arc<Shared>,
    settings: watch::Receiver<Arc<LaneSettings>>,
    signal: Arc<Signal>,
    stop: CancellationToken,
    /// Dropped once the lane has stopped and its outcomes are committed: the lease may go.
    lease: LeaseUse,
}

impl LaneWorker {
    async fn run(mut self) {
        let endpoint_id = self.settings.borrow().endpoint.id.clone();
        let mut permits = Permits::new(self.settings.borrow().endpoint.max_in_flight.get());
        let mut in_flight = JoinSet::new();
        // Start from the beginning: after a start, whatever was pending or in flight is due again.
        let mut cursor = 0;
        let mut rescanning = true;
        let mut timer: Option<i64> = None;
        let mut probe_wait = PROBE_FIRST;
        let mut outage = OutageLog::default();
        'lane: while !self.stop.is_cancelled() {
            permits.resize(self.settings.borrow().endpoint.max_in_flight.get());
            let mut batch = CLAIM_BATCH;
            if self.signal.endpoint_is_down() {
                if !self.wait_to_probe(&endpoint_id, &mut in_flight, &mut probe_wait).await {
                    break;
                }
                if self.signal.endpoint_is_down() {
                    // Probe with the oldest due delivery, alone.
                    batch = 1;
                    self.signal.rescan.store(true, Ordering::Relaxed);
                }
            } else {
                probe_wait = PROBE_FIRST;
            }
            // A bulk import takes the CPU first on a small machine; its webhooks follow at once. After
            // a wait, the batch read next is sent whatever happens, so deliveries always move.
            let waited_for_import = self.shared.store.imports().busy();
            if waited_for_import {
                tokio::select! {
                    _ = self.shared.store.imports().wait_idle(IMPORT_YIELD) => {}
                    _ = self.stop.cancelled() => break,
                }
            }
            if self.signal.rescan.swap(false, Ordering::Relaxed) {
                cursor = 0;
                rescanning = true;
            }
            let now = now_ms();
            self.signal.begin_read();
            let read_started = Instant::now();
            let due = match self.shared.store.due_deliveries(&endpoint_id, cursor, now, batch).await {
                Ok(due) => {
                    outage.over(&endpoint_id);
                    tracing::debug!(
                        target: TIMING,
                        endpoint = %endpoint_id,
                        due = due.len(),
                        read_us = micros(read_started.elapsed()),
                        "lane read"
                    );
                    due
                }
                Err(err) => {
                    outage.failed(&endpoint_id, "could not read due deliveries", &err);
                    self.pause(ERROR_PAUSE).await;
                    continue;
                }
            };
            let caught_up = due.len() < batch;
            // Set when an import began while this batch was being started: read again after it.
            let mut made_way = false;
            for delivery in due {
                cursor = delivery.seq;
                if !self.signal.claim(delivery.seq) {
                    continue;
                }
                let permit = tokio::select! {
                    permit = permits.acquire() => permit,
                    _ = self.stop.cancelled() => {
                        self.signal.unclaim(delivery.seq);
                        break 'lane;
                    }
                };
                if !self.shared.leases.may_run(&endpoint_id) {
                    drop(permit);
                    self.signal.unclaim(delivery.seq);
                    cursor = delivery.seq - 1;
                    self.until_lease_is_good(&endpoint_id).await;
                    continue 'lane;
                }
                let probing = batch == 1;
                let making_way = !waited_for_import && self.shared.store.imports().busy();
                if self.signal.gone.load(Ordering::Acquire)
                    || (self.signal.endpoint_is_down() && !probing)
                    || making_way
                {
                    drop(permit);
                    self.signal.unclaim(delivery.seq);
                    // Read it again next time: it was not attempted.
                    cursor = delivery.seq - 1;
                    made_way = making_way;
                    break;
                }
                // The attempt uses the endpoint's URL and secret as they are when it starts.
                let settings = self.settings.borrow().clone();
                in_flight.spawn(attempt(self.shared.clone(), self.signal.clone(), settings, delivery, permit));
                while in_flight.try_join_next().is_some() {}
            }
            if self.signal.gone.load(Ordering::Acquire) {
                // Sync stops this lane when the endpoint's inactive state is committed; a lane for the
                // endpoint starts afresh if it is made active again.
                self.stop.cancelled().await;
                break;
            }
            if !caught_up || made_way {
                continue;
            }
            if rescanning {
                rescanning = false;
                timer = match self.shared.store.next_due_after(&endpoint_id, now).await {
                    Ok(next) => next,
                    Err(err) => {
                        outage.failed(&endpoint_id, "could not read the next retry time", &err);
                        Some(now + ERROR_PAUSE.as_millis() as i64)
                    }
                };
            }
            if let Some(at) = self.signal.retry_at.lock().unwrap_or_else(|e| e.into_inner()).take() {
                timer = Some(timer.map_or(at, |t| t.min(at)));
            }
            let sleep = timer.map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)));
            tokio::select! {
                _ = self.signal.wake.notified() => {}
                _ = self.stop.cancelled() => break,
                _ = self.settings.changed() => {}
                _ = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => {
                    timer = None;
                    cursor = 0;
                    rescanning = true;
                }
            }
            while in_flight.try_join_next().is_some() {}
        }
        self.finish(in_flight).await;
    }

    /// While the endpoint is down: lets the attempts in flight finish (their outcome says whether it
    /// is back), then waits before the next probe, each wait twice the last up to [`PROBE_MAX`]. A
    /// retry by hand probes at once. Answers false when the lane must stop.
    async fn wait_to_probe(&self, endpoint_id: &str, in_flight: &mut JoinSet<()>, wait: &mut Duration) -> bool {
        while in_flight.join_next().await.is_some() {}
        if !self.signal.endpoint_is_down() {
            tracing::info!(endpoint = %endpoint_id, "the endpoint answers again; delivering at full pace");
            *wait = PROBE_FIRST;
            return true;
        }
        if *wait == PROBE_FIRST {
            tracing::warn!(
                endpoint = %endpoint_id,
                "the endpoint is unreachable; holding its deliveries and probing it with one at a time"
            );
        }
        let sleep = tokio::time::sleep(*wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = self.stop.cancelled() => return false,
                _ = self.signal.wake.notified() => {
                    if self.signal.rescan.load(Ordering::Relaxed) {
                        *wait = PROBE_FIRST;
                        return true;
                    }
                }
            }
        }
        *wait = (*wait * 2).min(PROBE_MAX);
        true
    }

    /// Holds the lane while its lease is not good (not renewed in time, or being handed over):
    /// until it is renewed, or the lane is stopped.
    async fn until_lease_is_good(&self, endpoint_id: &str) {
        tracing::warn!(endpoint = %endpoint_id, "this server's lease of the endpoint is not good now; holding its deliveries");
        tokio::select! {
            _ = self.shared.leases.until_may_run(endpoint_id) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    async fn pause(&self, how_long: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(how_long) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// Lets attempts in flight end and their outcomes be committed, then lets the lease go. At
    /// shutdown they get the grace period; a lane handed over to another server gets up to
    /// [`HANDOVER_LIMIT`] (each attempt has its own timeout). What does not finish stays pending in
    /// the database and is attempted again by the endpoint's next holder or after the next start.
    async fn finish(self, mut in_flight: JoinSet<()>) {
        let signal = self.signal.clone();
        let settled = async {
            while in_flight.join_next().await.is_some() {}
            signal.outcomes_committed().await;
        };
        let limit = async {
            if !self.shared.shutdown.is_cancelled() {
                tokio::select! {
                    _ = tokio::time::sleep(HANDOVER_LIMIT) => return,
                    _ = self.shared.shutdown.cancelled() => {}
                }
            }
            tokio::time::sleep(self.shared.grace).await;
        };
        let in_time = tokio::select! {
            _ = settled => true,
            _ = limit => false,
        };
        if !in_time {
            tracing::warn!(
                unfinished = in_flight.len(),
                "attempts still in flight or unrecorded as the lane stopped were given up; they will be attempted again"
            );
            in_flight.abort_all();
        }
        drop(self.lease);
    }
}

/// The endpoint's `max_in_flight` as a semaphore whose size follows the setting.
struct Permits {
    semaphore: Arc<Semaphore>,
    size: usize,
}

impl Permits {
    fn new(size: usize) -> Permits {
        Permits { semaphore: Arc::new(Semaphore::new(size)), size }
    }

    fn resize(&mut self, size: usize) {
        if size > self.size {
            self.semaphore.add_permits(size - self.size);
        } else if size < self.size {
            // Permits in use are forgotten as they come back, so the limit shrinks without
            // interrupting attempts.
            let semaphore = self.semaphore.clone();
            let excess = u32::try_from(self.size - size).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(permits) = semaphore.acquire_many(excess).await {
                    permits.forget();
                }
            });
        }
        self.size = size;
    }

    async fn acquire(&self) -> OwnedSemaphorePermit {
        self.semaphore.clone().acquire_owned().await.expect("the lane never closes its semaphore")
    }
}

/// An outcome on its way to the database, and the lane to tell once it is there.
struct Recorded {
    outcome: Outcome,
    signal: Arc<Signal>,
    /// When servers share the database, the attempt's `max_in_flight` permit, given back once the
    /// outcome is committed or given up (when this is dropped).
    _permit: Option<OwnedSemaphorePermit>,
}

async fn attempt(
    shared: Arc<Shared>,
    signal: Arc<Signal>,
    settings: Arc<LaneSettings>,
    delivery: DueDelivery,
    permit: OwnedSemaphorePermit,
) {
    let number = delivery.attempts.saturating_add(1);
    let started = now_ms();
    let result = match &settings.url {
        Ok(url) => {
            let message = Message {
                delivery_id: &delivery.id,
                event_name: delivery.event.as_str(),
                body: crate::body_for(settings.endpoint.format, delivery.event, &delivery.body),
                secrets: settings.signing_secrets(started),
            };
            shared.sender.send(url, &message).await
        }
        Err(problem) => AttemptOutcome {
            status: None,
            error: Some(problem.clone()),
            response_head: bytes::Bytes::new(),
            retry_after: None,
            duration: Duration::ZERO,
            started_at_unix_ms: started,
        },
    };
    if result.status.is_some() {
        signal.unreachable_in_a_row.store(0, Ordering::Release);
    } else {
        signal.unreachable_in_a_row.fetch_add(1, Ordering::AcqRel);
    }
    let next = next_step(&result, number, &settings.schedule, now_ms());
    if matches!(next, NextStep::Gone { .. }) {
        // Before the permit is given back, so no attempt queued behind this one starts.
        signal.gone.store(true, Ordering::Release);
    }
    // Alone on its database, a server gives the permit back as soon as the answer is in: the
    // outcome's commit is quick and a crash repeats nothing but what it cuts off. When servers share
    // the database, an attempt counts until its outcome is committed, so that a server that dies
    // leaves at most `max_in_flight` webhooks per endpoint for the next holder to send again (a
    // commit there waits its turn behind the other servers' writers: tens of milliseconds in which
    // a fast receiver would otherwise take many more).
    let permit = if shared.leases.holds_everything() {
        drop(permit);
        None
    } else {
        Some(permit)
    };
    shared.metrics.observe(outcome_label(&next), result.duration.as_secs_f64());
    let outcome = Outcome {
        delivery_seq: delivery.seq,
        endpoint_id: Some(settings.endpoint.id.clone()),
        attempt: number,
        started_at: result.started_at_unix_ms,
        duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        status_code: result.status,
        error: result.error,
        response: result.response_head,
        next,
    };
    if shared.outcomes.send(Recorded { outcome, signal, _permit: permit }).await.is_err() {
        tracing::warn!("the outcome recorder has stopped; this delivery will be attempted again after a restart");
    }
}

fn outcome_label(next: &NextStep) -> &'static str {
    match next {
        NextStep::Succeeded => "succeeded",
        NextStep::RetryAt(_) => "retrying",
        NextStep::Failed => "failed",
        NextStep::Gone { .. } => "gone",
    }
}

/// Writes outcomes in batches: whatever has arrived while the previous commit ran goes in the next.
async fn record_outcomes(store: Arc<dyn Store>, mut queue: mpsc::Receiver<Recorded>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while queue.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        // The writer serves an import first; these outcomes wait a little and go in one commit.
        store.imports().wait_idle(IMPORT_YIELD).await;
        if batch.len() < RECORD_GATHER_BELOW {
            tokio::time::sleep(RECORD_GATHER).await;
        }
        while batch.len() < RECORD_BATCH
            && let Ok(recorded) = queue.try_recv()
        {
            batch.push(recorded);
        }
        let (outcomes, mut settled): (Vec<Outcome>, Vec<Settled>) = batch.drain(..).map(Recorded::split).unzip();
        let record_started = Instant::now();
        if !commit_outcomes(&*store, &outcomes, &queue).await {
            // The deliveries stay pending in the database; they are attempted again after a
            // restart. Releasing them here would send them again at once, in a loop.
            settled.clear();
        }
        tracing::debug!(
            target: TIMING,
            outcomes = outcomes.len(),
            record_us = micros(record_started.elapsed()),
            "outcomes recorded"
        );
        for settled in settled {
            settled.signal.release(settled.delivery_seq, &settled.next);
        }
    }
}

/// What the recorder keeps of an outcome while the outcome itself goes to the store: whom to tell
/// once it is committed.
struct Settled {
    signal: Arc<Signal>,
    delivery_seq: i64,
    next: NextStep,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Recorded {
    fn split(self) -> (Outcome, Settled) {
        let settled = Settled {
            signal: self.signal,
            delivery_seq: self.outcome.delivery_seq,
            next: self.outcome.next.clone(),
            _permit: self._permit,
        };
        (self.outcome, settled)
    }
}

/// Commits a batch of outcomes; false if it was given up.
///
/// While the database cannot be reached the batch is kept and tried again, each wait twice the last
/// up to [`RECORD_RETRY_MAX`], for as long as the outage lasts: meanwhile the outcome queue fills
/// and attempts wait for room in it, so deliveries are held back, not lost, and their claims last
/// until their outcomes are in. A retry after a commit whose answer was lost records nothing twice
/// (an outcome only fills a row whose attempts are the ones before it). Any other failure is tried
/// [`RECORD_TRIES`] times. Once the server is stopping (every lane gone, so `queue` is closed), an
/// outage is not waited out: the deliveries are attempted again after the next start.
async fn commit_outcomes(store: &dyn Store, outcomes: &[Outcome], queue: &mpsc::Receiver<Recorded>) -> bool {
    let mut wait = RECORD_RETRY_FIRST;
    let mut failures = 0;
    let mut outage_since: Option<Instant> = None;
    loop {
        match store.record_outcomes(outcomes.to_vec()).await {
            Ok(()) => {
                if let Some(since) = outage_since {
                    tracing::info!(
                        count = outcomes.len(),
                        held_ms = micros(since.elapsed()) / 1000,
                        "the database is back; the attempt outcomes held meanwhile are recorded"
                    );
                }
                return true;
            }
            Err(err) if err.is_unavailable() && queue.is_closed() => {
                tracing::warn!(
                    error = %err,
                    count = outcomes.len(),
                    "stopping while the database cannot be reached: these deliveries are attempted again after the next start"
                );
                return false;
            }
            Err(err) if err.is_unavailable() => {
                if outage_since.is_none() {
                    // Once per outage: this batch is held until the database is back.
                    tracing::warn!(
                        error = %err,
                        count = outcomes.len(),
                        "the database cannot be reached; attempt outcomes are held until it can"
                    );
                    outage_since = Some(Instant::now());
                }
            }
            Err(err) => {
                failures += 1;
                if failures == RECORD_TRIES {
                    tracing::error!(error = %err, count = outcomes.len(), "could not record attempt outcomes");
                    return false;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECORD_RETRY_MAX);
    }
}

/// A lane's failed reads, logged once per outage of the database rather than once per try.
#[derive(Default)]
struct OutageLog {
    since: Option<Instant>,
}

impl OutageLog {
    fn failed(&mut self, endpoint_id: &str, what: &str, err: &StoreError) {
        if !err.is_unavailable() {
            tracing::error!(endpoint = %endpoint_id, error = %err, "{what}");
        } else if self.since.is_none() {
            tracing::warn!(
                endpoint = %endpoint_id,
                error = %err,
                "the database cannot be reached; the lane pauses and reads again every {} s",
                ERROR_PAUSE.as_secs()
            );
            self.since = Some(Instant::now());
        }
    }

    fn over(&mut self, endpoint_id: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                endpoint = %endpoint_id,
                paused_ms = micros(since.elapsed()) / 1000,
                "the database is back; the lane delivers again"
            );
        }
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight};
    use estate_crm_store::EndpointSource;

    use super::*;

    fn endpoint(previous_secret_until: Option<i64>) -> Endpoint {
        Endpoint {
            id: "ep_1".to_owned(),
            url: "https://hooks.example.com/".to_owned(),
            events: EventFilter::All,
            secret: Some("new".to_owned()),
            previous_secret: previous_secret_until.map(|_| "old".to_owned()),
            previous_secret_until,
            active: true,
            disabled_reason: None,
            description: None,
            retry_schedule: None,
            max_in_flight: MaxInFlight::DEFAULT,
            is_primary: false,
            source: EndpointSource::Api,
            format: BodyFormat::Json,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    /// A lane signs with the secrets the endpoint says for the moment each attempt starts: the
    /// replaced one too until its time ends, and not from then on.
    #[test]
    fn a_lane_signs_with_the_endpoints_secrets_of_the_moment() {
        let schedule = RetrySchedule::parse_str("1s").expect("a valid schedule");
        for until in [None, Some(1_000), Some(i64::MIN), Some(i64::MAX)] {
            let settings = LaneSettings::new(endpoint(until), &schedule);
            for now in [i64::MIN, 0, 998, 999, 1_000, 1_001, i64::MAX - 1, i64::MAX] {
                assert_eq!(
                    settings.signing_secrets(now),
                    settings.endpoint.signing_secrets(now).as_slice(),
                    "until {until:?}, now {now}"
                );
            }
        }
        let rotating = LaneSettings::new(endpoint(Some(1_000)), &schedule);
        assert_eq!(rotating.signing_secrets(999).len(), 2);
        assert_eq!(rotating.signing_secrets(1_000).len(), 1);
    }
}
