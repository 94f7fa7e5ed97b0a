//! The thirteen parts of a run, in the issues' order, and what they share.
//!
//! Parts 2 to 5 run against one server, started once with four endpoints on the receiver, as a
//! user's server would be: every create in them queues four deliveries. Part 6 starts a server
//! of its own, so that its million rows weigh on no other figure, and so does part 8 (the web app's
//! pages over a million deliveries), which runs before part 7 so that its server's memory counts.
//! Part 9 (the disk's fsync) runs first; parts 10 (paced creates, one endpoint) and 11 (fan-out of
//! single creates to five endpoints) start servers of their own after part 5; part 12 runs parts 1
//! and 2 again pinned to one core, last; part 13 (1, 2 and 3 servers on one PostgreSQL database)
//! just before it. A part that fails is reported and the run goes on with
//! the next one that can still run.
//!
//! Every server runs on the run's store (SQLite, or a fresh PostgreSQL database with
//! `--database-url`). Comparing the two, each group of parts that shares servers runs on SQLite and
//! then on PostgreSQL before the next group, so that the two sides of a ratio are minutes apart.

mod api_rates;
mod backlog;
mod cluster;
mod fanout;
mod fsync;
mod isolation;
mod latency;
mod one_core;
mod paced;
mod paced_posts;
mod raw_limit;
mod ui_pages;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::api::{Api, EndpointSpec};
use crate::database::Store;
use crate::plan::Plan;
use crate::receiver::{Receiver, Shortfall, Snapshot};
use crate::report::Figures;
use crate::server::{self, Server, Subject};
use crate::stats::{grouped, per_second};

/// The receiver slots of the four endpoints of parts 2 to 5.
pub const HEALTHY: [usize; 4] = [1, 2, 3, 4];

/// The slot of part 5's endpoint that never answers.
pub const DEAD: usize = 5;

/// The per-endpoint concurrency the bench configures (the API accepts up to 1024).
pub const MAX_IN_FLIGHT: u32 = 64;

/// A short schedule: parts 2 to 5 expect no failed attempt, and a dead endpoint should give up
/// within the run.
const RETRY_SCHEDULE: &str = "1s,1s,1s";

/// How often [`Session::settle`] asks the server whether every outcome is recorded.
const RECORDED_POLL: Duration = Duration::from_millis(50);

/// What a run found on one store.
#[derive(Debug)]
pub struct Outcome {
    pub store: Store,
    pub figures: Figures,
    /// One line per part that could not run to its end.
    pub failures: Vec<String>,
    /// The peak memory of every server started on this store, for part 7.
    peaks: Vec<f64>,
    /// Whether failure lines name the store (when a run compares two).
    name_store: bool,
}

impl Outcome {
    fn new(store: Store, name_store: bool) -> Self {
        Self { store, figures: Figures::default(), failures: Vec::new(), peaks: Vec::new(), name_store }
    }

    fn fail(&mut self, part: &str, err: &anyhow::Error) {
        let line = if self.name_store {
            format!("part {part} on {}: {err:#}", self.store.name())
        } else {
            format!("part {part}: {err:#}")
        };
        eprintln!("FAILED {line}");
        self.failures.push(line);
    }

    /// Keeps a part's figure, or records why there is none.
    fn keep<T>(&mut self, part: &str, result: Result<T>) -> Option<T> {
        result.map_err(|err| self.fail(part, &err)).ok()
    }
}

/// What a whole run found: one outcome per store, in the order the stores were given.
#[derive(Debug)]
pub struct Run {
    pub outcomes: Vec<Outcome>,
    /// Things worth knowing that did not stop a part.
    pub notes: Vec<String>,
}

/// Notes gathered while the parts run, shown after the table.
#[derive(Debug, Default)]
pub struct Notes(Mutex<Vec<String>>);

impl Notes {
    pub fn add(&self, note: String) {
        eprintln!("note: {note}");
        self.0.lock().expect("notes lock poisoned").push(note);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().expect("notes lock poisoned"))
    }
}

/// Which parts a run measures: all of them unless some were named with `--part`.
#[derive(Debug, Clone, Copy)]
pub struct Selection(u16);

impl Selection {
    pub fn new(parts: &[u8]) -> Self {
        if parts.is_empty() {
            Selection(u16::MAX)
        } else {
            Selection(parts.iter().fold(0, |bits, part| bits | 1 << part))
        }
    }

    fn has(self, part: u8) -> bool {
        self.0 & (1 << part) != 0
    }

    fn any(self, parts: std::ops::RangeInclusive<u8>) -> bool {
        parts.into_iter().any(|part| self.has(part))
    }

    /// Only the parts of `group` this selection has.
    fn within(self, group: &[u8]) -> Self {
        Selection(group.iter().fold(0, |bits, part| bits | (self.0 & (1 << part))))
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The parts that start servers, in the order they run; a group shares what it starts. When a
/// run compares stores, each group runs on every store before the next group begins, so that the
/// two sides of each comparison are taken minutes apart, not a whole run apart. Part 7 is read
/// off the others' servers, and parts 1 and 9 measure the machine, once for every store.
const SERVER_GROUPS: [&[u8]; 7] = [&[2, 3, 4, 5], &[10], &[11], &[6], &[8], &[13], &[12]];

/// Runs the selected parts on each of `stores` and gathers their figures.
pub async fn run(plan: &Plan, server_bin: Option<PathBuf>, selection: Selection, stores: &[Store]) -> Result<Run> {
    let notes = Notes::default();
    note_busy_machine(&notes);
    let receiver = Receiver::start(loopback(0)).await?;
    let name_store = stores.len() > 1;
    let mut outcomes: Vec<Outcome> = stores.iter().map(|store| Outcome::new(store.clone(), name_store)).collect();

    let machine = measure_machine(plan, &receiver, selection, &mut outcomes[0]).await;
    for outcome in &mut outcomes {
        outcome.figures.raw_limit_per_s = machine.raw_limit_per_s;
        outcome.figures.fsync_p50_ms = machine.fsync_p50_ms;
        outcome.figures.fsync_p99_ms = machine.fsync_p99_ms;
        outcome.figures.fsync_max_ms = machine.fsync_max_ms;
    }

    let binary = match server::binary(server_bin) {
        Ok(binary) => binary,
        Err(err) => {
            for outcome in &mut outcomes {
                outcome.fail("2-8, 10-13 (no server to measure)", &err);
            }
            return Ok(Run { outcomes, notes: notes.take() });
        }
    };
    for group in SERVER_GROUPS {
        let parts = selection.within(group);
        if parts.is_empty() {
            continue;
        }
        for outcome in &mut outcomes {
            let subject = Subject { binary: binary.clone(), store: outcome.store.clone() };
            if name_store {
                eprintln!("on {}:", subject.store.name());
            }
            run_group(plan, &subject, &receiver, &notes, outcome, parts).await;
        }
    }

    // Part 7 is read off the sampler of every server the run started on the store.
    if selection.has(7) {
        for outcome in &mut outcomes {
            outcome.figures.server_peak_rss_mb = outcome.peaks.iter().copied().reduce(f64::max);
            if outcome.figures.server_peak_rss_mb.is_none() {
                outcome.fail("7 (server memory)", &anyhow!("no server ran long enough to be sampled"));
            }
        }
    }
    Ok(Run { outcomes, notes: notes.take() })
}

/// Parts 9 (the disk's fsync) and 1 (the bare client's limit): what the machine allows, whatever
/// the store. A failure is recorded in `outcome`.
async fn measure_machine(plan: &Plan, receiver: &Receiver, selection: Selection, outcome: &mut Outcome) -> Figures {
    let mut machine = Figures::default();
    if selection.has(9) {
        progress(&format!("9/13 fsync: {} small writes, each synced, in the temp directory", plan.fsync_probes));
        if let Some(fsync) = outcome.keep("9 (fsync)", fsync::measure(plan.fsync_probes).await) {
            machine.fsync_p50_ms = Some(fsync.p50_ms);
            machine.fsync_p99_ms = Some(fsync.p99_ms);
            machine.fsync_max_ms = Some(fsync.max_ms);
        }
    }
    if selection.has(1) {
        progress(&format!(
            "1/13 raw limit: a bare client, {} connections, {:?}",
            plan.raw_connections, plan.raw_window
        ));
        let raw = raw_limit::measure(plan, receiver).await;
        machine.raw_limit_per_s = outcome.keep("1 (raw limit)", raw);
    }
    machine
}

/// Runs the parts of one of [`SERVER_GROUPS`] on the subject.
async fn run_group(
    plan: &Plan,
    subject: &Subject,
    receiver: &Receiver,
    notes: &Notes,
    outcome: &mut Outcome,
    selection: Selection,
) {
    if selection.any(2..=5) {
        match Session::start(subject, receiver).await {
            Ok(session) => {
                run_session_parts(plan, &session, notes, outcome, selection).await;
                match session.server.stop().await {
                    Ok(peak) => outcome.peaks.push(peak),
                    Err(err) => outcome.fail("2-5 (stopping the server)", &err),
                }
            }
            Err(err) => outcome.fail("2-5 (starting the server)", &err),
        }
    }

    if selection.has(10) {
        progress(&format!(
            "10/13 paced creates, one endpoint: 200/s, then 1,000/s {} times, {:?} each",
            plan.paced_runs, plan.paced_window
        ));
        let posts = paced_posts::measure(plan, subject, receiver, notes, &mut outcome.peaks).await;
        if let Some(posts) = outcome.keep("10 (paced creates)", posts) {
            outcome.figures.paced200_post_p99_ms = Some(posts.p99_200_ms);
            outcome.figures.paced1000_post_p99_ms = Some(posts.p99_1000_ms());
            outcome.figures.paced1000_post_max_ms = Some(posts.max_1000_ms);
            outcome.figures.paced1000_post_p99_ms_spread = posts.spread();
            outcome.figures.paced1000_post_p99_ms_runs = posts.p99_1000_runs_ms;
        }
    }

    if selection.has(11) {
        progress(&format!(
            "11/13 fan-out: {} single creates at concurrency {} x {} endpoints",
            grouped(plan.fanout_creates),
            plan.fanout_concurrency,
            fanout::SLOTS.len()
        ));
        let delivered = fanout::measure(plan, subject, receiver, &mut outcome.peaks).await;
        let delivered = outcome.keep("11 (fan-out)", delivered);
        outcome.figures.fanout5_deliveries_per_s = delivered;
        outcome.figures.fanout5_ratio =
            delivered.zip(outcome.figures.raw_limit_per_s).map(|(delivered, limit)| delivered / limit);
    }

    if selection.has(6) {
        progress(&format!(
            "6/13 backlog: {} deliveries pending to a down endpoint, then up",
            grouped(plan.backlog_deliveries)
        ));
        let backlog = backlog::measure(plan, subject, notes, &mut outcome.peaks).await;
        if let Some(backlog) = outcome.keep("6 (backlog)", backlog) {
            outcome.figures.backlog_drain_per_s = Some(backlog.drain_per_s);
            outcome.figures.backlog_peak_rss_mb = Some(backlog.peak_rss_mb);
            outcome.figures.backlog_api_p99_ms = Some(backlog.api_p99_ms);
        }
    }

    if selection.has(8) {
        progress(&format!(
            "8/13 web pages: the delivery log, the endpoints page and the contacts over {} deliveries",
            grouped(plan.ui_deliveries)
        ));
        let pages = ui_pages::measure(plan, subject, receiver, &mut outcome.peaks).await;
        if let Some(pages) = outcome.keep("8 (web pages)", pages) {
            outcome.figures.ui_deliveries_page_ms = Some(pages.deliveries.p50_ms);
            outcome.figures.ui_deliveries_page_p99_ms = Some(pages.deliveries.p99_ms);
            outcome.figures.ui_endpoints_page_ms = Some(pages.endpoints.p50_ms);
            outcome.figures.ui_endpoints_page_p99_ms = Some(pages.endpoints.p99_ms);
            outcome.figures.ui_endpoints_page_cold_ms = Some(pages.endpoints_cold_ms);
            outcome.figures.ui_endpoints_page_first_ms = Some(pages.endpoints.first_ms);
            outcome.figures.ui_contacts_page_ms = Some(pages.contacts.p50_ms);
            outcome.figures.ui_contacts_page_p99_ms = Some(pages.contacts.p99_ms);
            outcome.figures.ui_contacts_search_ms = Some(pages.contacts_search.p50_ms);
            outcome.figures.ui_contacts_search_p99_ms = Some(pages.contacts_search.p99_ms);
            outcome.figures.ui_contacts_search_broad_ms = Some(pages.contacts_search_broad.p50_ms);
            outcome.figures.ui_contacts_search_short_ms = Some(pages.contacts_search_short.p50_ms);
        }
    }

    if selection.has(13) {
        run_cluster_part(plan, subject, receiver, notes, outcome).await;
    }

    if selection.has(12) {
        progress("12/13 one core: parts 1 and 2 again under `taskset -c 0`");
        let pinned = one_core::measure(plan, subject).await;
        outcome.figures.one_core_ratio_to_limit = outcome.keep("12 (one core)", pinned);
    }
}

/// Part 13 with 1, 2 and 3 servers, each count on a database of its own; on SQLite, a note.
async fn run_cluster_part(plan: &Plan, subject: &Subject, receiver: &Receiver, notes: &Notes, outcome: &mut Outcome) {
    if subject.store == Store::Sqlite {
        notes.add("part 13 (several servers on one database) runs only with --database-url: skipped on SQLite".into());
        return;
    }
    for servers in 1..=cluster::MAX_SERVERS {
        progress(&format!(
            "13/13 one database, {servers} server(s): {} single creates spread over them x {} endpoints",
            grouped(plan.cluster_creates),
            cluster::SLOTS.len()
        ));
        let run = cluster::measure(plan, subject, receiver, servers, &mut outcome.peaks).await;
        if let Some(run) = outcome.keep(&format!("13 ({servers} servers)"), run) {
            outcome.figures.cluster_deliveries_per_s[servers - 1] = Some(run.deliveries_per_s);
            outcome.figures.cluster_repeats[servers - 1] = Some(run.repeats as f64);
        }
    }
}

/// Parts 2 to 5 (those selected), on the shared server.
async fn run_session_parts(
    plan: &Plan,
    session: &Session<'_>,
    notes: &Notes,
    outcome: &mut Outcome,
    selection: Selection,
) {
    if selection.has(2) {
        progress(&format!(
            "2/13 deliveries: {} contacts x {} endpoints",
            grouped(plan.throughput_contacts),
            HEALTHY.len()
        ));
        let delivered = session.delivery_rate(plan, plan.throughput_contacts).await;
        let delivered = outcome.keep("2 (deliveries)", delivered);
        outcome.figures.deliveries_per_s = delivered;
        outcome.figures.ratio_to_limit =
            delivered.zip(outcome.figures.raw_limit_per_s).map(|(delivered, limit)| delivered / limit);
    }

    if selection.has(3) {
        progress(&format!(
            "3/13 API: single creates at concurrency {} for {:?}, then {} rows in bulk",
            plan.single_concurrency,
            plan.single_window,
            grouped(plan.bulk_rows)
        ));
        let single = api_rates::single_creates(plan, session, notes).await;
        outcome.figures.api_single_creates_per_s = outcome.keep("3 (single creates)", single);
        let bulk = api_rates::bulk_rows(plan, session, notes).await;
        outcome.figures.api_bulk_rows_per_s = outcome.keep("3 (bulk rows)", bulk);
    }

    if selection.has(4) {
        progress(&format!("4/13 latency: {} events/s for {:?}", grouped(plan.latency_rate_per_s), plan.latency_window));
        if let Some(latency) = outcome.keep("4 (latency)", latency::measure(plan, session, notes).await) {
            outcome.figures.latency_p50_ms = Some(latency.p50_ms);
            outcome.figures.latency_p99_ms = Some(latency.p99_ms);
        }
    }

    if selection.has(5) {
        progress(&format!(
            "5/13 isolation: {} contacts without, then with, an endpoint that never answers",
            grouped(plan.isolation_contacts)
        ));
        let isolation = isolation::measure(plan, session, notes).await;
        outcome.figures.isolation_ratio = outcome.keep("5 (isolation)", isolation);
    }

    if !outcome.failures.is_empty() {
        eprintln!("{}", session.server.log_tail());
    }
}

/// The server of parts 2 to 5, its four endpoints on the receiver, and what has been created.
pub struct Session<'r> {
    pub server: Server,
    pub api: Api,
    pub receiver: &'r Receiver,
    /// The receiver's counts when the endpoints were made.
    start: Snapshot,
    /// The ids of the healthy endpoints.
    endpoints: Vec<String>,
    /// Contacts created so far; each owes one delivery to every healthy endpoint.
    created: AtomicU64,
    /// Set once deliveries are known to be missing: waiting for them again would only spend
    /// another deadline.
    lost: AtomicBool,
}

impl<'r> Session<'r> {
    async fn start(subject: &Subject, receiver: &'r Receiver) -> Result<Self> {
        let server = subject.start(RETRY_SCHEDULE).await?;
        let api = Api::new(server.url(), server.token())?;
        let mut endpoints = Vec::with_capacity(HEALTHY.len());
        for slot in HEALTHY {
            let url = receiver.hook_url(slot);
            let id = api
                .create_endpoint(&EndpointSpec {
                    url: &url,
                    events: "*",
                    retry_schedule: RETRY_SCHEDULE,
                    max_in_flight: MAX_IN_FLIGHT,
                })
                .await
                .map_err(|err| anyhow!("{err:#}\n{}", server.log_tail()))?;
            endpoints.push(id);
        }
        Ok(Self {
            server,
            api,
            start: receiver.stats().snapshot(),
            endpoints,
            receiver,
            created: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        })
    }

    /// Counts contacts a part created, so that later parts can wait for their deliveries.
    pub fn add_created(&self, contacts: u64) {
        self.created.fetch_add(contacts, Ordering::Relaxed);
    }

    /// Waits until every contact created so far has reached every healthy endpoint and the server
    /// has recorded every outcome, so that a part starts on an idle server. A shortfall is noted,
    /// not fatal: the part can still run.
    pub async fn settle(&self, plan: &Plan, notes: &Notes) {
        if self.lost.load(Ordering::Relaxed) {
            return;
        }
        let created = self.created.load(Ordering::Relaxed);
        let deadline = Instant::now() + plan.delivery_deadline;
        let waited = self.receiver.stats().wait_for(&HEALTHY, &self.start, created, deadline).await;
        if let Err(shortfall) = waited {
            self.lost.store(true, Ordering::Relaxed);
            notes.add(format!(
                "before this part, {} (earlier deliveries were lost or late)",
                shortfall_text(shortfall, created * HEALTHY.len() as u64, plan.delivery_deadline)
            ));
            return;
        }
        // A receipt comes before its outcome is recorded: a part that started then would share the
        // server's one writer with the last part's outcomes and measure them too.
        if let Err(why) = self.wait_until_recorded(deadline).await {
            notes.add(format!("before this part, {why}"));
        }
    }

    /// Polls `/metrics` until no healthy endpoint is owed a delivery, or says why it stopped.
    async fn wait_until_recorded(&self, deadline: Instant) -> Result<()> {
        loop {
            let depths = self.api.queue_depths().await?;
            let owed: u64 = self.endpoints.iter().filter_map(|id| depths.get(id)).sum();
            if owed == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(anyhow!("the server still had {} deliveries to record", grouped(owed)));
            }
            tokio::time::sleep(RECORDED_POLL).await;
        }
    }

    /// Creates `contacts` new contacts through the bulk API and answers the healthy endpoints'
    /// deliveries per second, from the first request sent to the last receipt.
    ///
    /// The first commit happens some time after the first request is sent, so the window is
    /// at least the true one and the rate errs low, never high.
    pub async fn delivery_rate(&self, plan: &Plan, contacts: u64) -> Result<f64> {
        let batches = crate::payload::new_batches(contacts, plan.bulk_batch_rows);
        let since = self.receiver.stats().snapshot();
        let started = Instant::now();
        for batch in &batches {
            let created = self.api.bulk_create(batch).await?;
            self.add_created(created);
            if created != batch.rows {
                return Err(anyhow!("a bulk create of {} rows made {created}", batch.rows));
            }
        }
        let deadline = started + plan.delivery_deadline;
        let expected = contacts * HEALTHY.len() as u64;
        let last = self.receiver.stats().wait_for(&HEALTHY, &since, contacts, deadline).await.map_err(|shortfall| {
            self.lost.store(true, Ordering::Relaxed);
            anyhow!(shortfall_text(shortfall, expected, plan.delivery_deadline))
        })?;
        let window = last.saturating_duration_since(started);
        eprintln!("  {} deliveries in {:.2} s", grouped(expected), window.as_secs_f64());
        Ok(per_second(expected, window))
    }
}

/// "received 49,812 of 50,000 deliveries in 120 s (about 415/s)".
pub fn shortfall_text(shortfall: Shortfall, expected: u64, waited: Duration) -> String {
    format!(
        "received {} of {} deliveries in {} s (about {}/s)",
        grouped(shortfall.received),
        grouped(expected),
        waited.as_secs(),
        grouped(per_second(shortfall.received, waited) as u64)
    )
}

/// Other work on the machine lowers every figure, and by different amounts from one part to
/// the next, so a run that starts on a busy machine says so.
fn note_busy_machine(notes: &Notes) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|first| first.parse::<f64>().ok()));
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    if let Some(load) = load.filter(|&load| load >= cores as f64) {
        notes.add(format!(
            "the machine was busy when the run began (load average {load:.1} on {cores} cores): \
             figures may be low, and the ratio noisier than usual"
        ));
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn progress(line: &str) {
    eprintln!("part {line}");
}
