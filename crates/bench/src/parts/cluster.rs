//! Part 13: several servers on one PostgreSQL database. For 1, 2 and 3 servers, a fresh database
//! and that many servers on it; six endpoints on the receiver, made through the first server
//! before the others start (so that every server knows them from its start); then
//! `plan.cluster_creates` single creates from `plan.fanout_concurrency` clients, client i sending
//! to server i mod n. The figure is distinct deliveries per second: each endpoint's distinct
//! `webhook-id`s, from the first POST to the last new id received.
//!
//! Servers that each deliver every endpoint send some deliveries twice; a receiver deduplicates
//! them on the webhook-id, so those repeats are no throughput: they are counted apart, as what the
//! receivers got beyond the distinct ones by the time the last distinct one arrived. When each
//! endpoint is delivered by one server at a time, the repeats are zero and the figure is the same
//! count. SQLite has one server per data directory, so the part runs only with `--database-url`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::task::JoinSet;

use super::fanout::create_while_left;
use super::{MAX_IN_FLIGHT, RETRY_SCHEDULE, shortfall_text};
use crate::api::{Api, EndpointSpec};
use crate::database::{BenchDatabase, Store};
use crate::plan::Plan;
use crate::receiver::Receiver;
use crate::server::{Server, Subject};
use crate::stats::{grouped, per_second};

/// This part's six endpoints on the shared receiver: more than three, so that three servers can
/// share the work.
pub const SLOTS: [usize; 6] = [16, 17, 18, 19, 20, 21];

/// The most servers the part starts on one database.
pub const MAX_SERVERS: usize = 3;

/// What `servers` servers on one database delivered.
#[derive(Debug, Clone, Copy)]
pub struct ClusterRun {
    pub deliveries_per_s: f64,
    /// Receipts beyond the distinct deliveries (the same webhook-id at the same endpoint again).
    pub repeats: u64,
}

/// Runs the part with `servers` servers on a fresh database; their peak memory joins `peaks`.
pub async fn measure(
    plan: &Plan,
    subject: &Subject,
    receiver: &Receiver,
    servers: usize,
    peaks: &mut Vec<f64>,
) -> Result<ClusterRun> {
    let Store::Postgres { admin_url } = &subject.store else {
        bail!("several servers share a database only on PostgreSQL (--database-url)");
    };
    let database = Arc::new(BenchDatabase::create(admin_url).await?);
    let mut started = Vec::with_capacity(servers);
    let measured = start_and_time(plan, subject, &database, receiver, servers, &mut started).await;
    if measured.is_err()
        && let Some(server) = started.first()
    {
        eprintln!("{}", server.log_tail());
    }
    for server in started {
        peaks.push(server.stop().await?);
    }
    measured
}

async fn start_and_time(
    plan: &Plan,
    subject: &Subject,
    database: &Arc<BenchDatabase>,
    receiver: &Receiver,
    servers: usize,
    started: &mut Vec<Server>,
) -> Result<ClusterRun> {
    let first = Server::start_on(&subject.binary, Some(Arc::clone(database)), RETRY_SCHEDULE).await?;
    let first_api = Api::new(first.url(), first.token())?;
    started.push(first);
    for slot in SLOTS {
        first_api
            .create_endpoint(&EndpointSpec {
                url: &receiver.hook_url(slot),
                events: "*",
                retry_schedule: RETRY_SCHEDULE,
                max_in_flight: MAX_IN_FLIGHT,
            })
            .await?;
    }
    for _ in 1..servers {
        started.push(Server::start_on(&subject.binary, Some(Arc::clone(database)), RETRY_SCHEDULE).await?);
    }
    let apis = started.iter().map(|server| Api::new(server.url(), server.token())).collect::<Result<Vec<_>>>()?;

    let creates = plan.cluster_creates;
    let since = receiver.stats().start_tracking_ids();
    let timed = create_and_wait(plan, &apis, receiver, creates).await;
    let repeats = SLOTS.iter().map(|&slot| receiver.stats().id_counts(slot, &since).repeats).sum();
    receiver.stats().stop_tracking_ids();
    let (expected, window) = timed?;
    eprintln!(
        "  {servers} server(s): {} distinct deliveries in {:.2} s, {} repeats",
        grouped(expected),
        window.as_secs_f64(),
        grouped(repeats)
    );
    Ok(ClusterRun { deliveries_per_s: per_second(expected, window), repeats })
}

/// Sends the creates over the servers and waits for every endpoint's distinct deliveries;
/// answers how many and the window.
async fn create_and_wait(
    plan: &Plan,
    apis: &[Api],
    receiver: &Receiver,
    creates: u64,
) -> Result<(u64, std::time::Duration)> {
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(creates));
    let mut clients = JoinSet::new();
    for client in 0..plan.fanout_concurrency {
        clients.spawn(create_while_left(apis[client % apis.len()].clone(), Arc::clone(&left)));
    }
    while let Some(joined) = clients.join_next().await {
        joined.context("a create client panicked")??;
    }
    let expected = creates * SLOTS.len() as u64;
    let last = receiver
        .stats()
        .wait_for_unique(&SLOTS, creates, started + plan.delivery_deadline)
        .await
        .map_err(|shortfall| anyhow!(shortfall_text(shortfall, expected, plan.delivery_deadline)))?;
    Ok((expected, last.saturating_duration_since(started)))
}
