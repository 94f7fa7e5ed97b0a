//! Part 11: fan-out from single creates. A server of its own with five endpoints on the
//! receiver takes `plan.fanout_creates` single creates from `plan.fanout_concurrency` clients at
//! once, each sending its next as soon as the last is answered; the figure is the five
//! endpoints' deliveries per second, from the first POST to the last receipt.
//!
//! Unlike part 2, whose bulk requests hand the dispatcher thousands of events per commit, each
//! commit here carries a handful of events, so what a delivery costs on its own (waking a lane,
//! reading what it is owed, signing, sending, recording the outcome) decides the rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::task::JoinSet;

use super::{MAX_IN_FLIGHT, RETRY_SCHEDULE, shortfall_text};
use crate::api::{Api, EndpointSpec};
use crate::payload::reserve_contacts;
use crate::plan::Plan;
use crate::receiver::Receiver;
use crate::server::{Server, Subject};
use crate::stats::{grouped, per_second};

/// This part's five endpoints on the shared receiver.
pub const SLOTS: [usize; 5] = [10, 11, 12, 13, 14];

/// Runs the part on a fresh server, whose peak memory joins `peaks` however the part ends.
pub async fn measure(plan: &Plan, subject: &Subject, receiver: &Receiver, peaks: &mut Vec<f64>) -> Result<f64> {
    let server = subject.start(RETRY_SCHEDULE).await?;
    let measured = create_and_time(plan, &server, receiver).await;
    if measured.is_err() {
        eprintln!("{}", server.log_tail());
    }
    peaks.push(server.stop().await?);
    measured
}

async fn create_and_time(plan: &Plan, server: &Server, receiver: &Receiver) -> Result<f64> {
    let api = Api::new(server.url(), server.token())?;
    for slot in SLOTS {
        api.create_endpoint(&EndpointSpec {
            url: &receiver.hook_url(slot),
            events: "*",
            retry_schedule: RETRY_SCHEDULE,
            max_in_flight: MAX_IN_FLIGHT,
        })
        .await?;
    }
    let creates = plan.fanout_creates;
    let since = receiver.stats().snapshot();
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(creates));
    let mut clients = JoinSet::new();
    for _ in 0..plan.fanout_concurrency {
        clients.spawn(create_while_left(api.clone(), Arc::clone(&left)));
    }
    while let Some(joined) = clients.join_next().await {
        joined.context("a create client panicked")??;
    }
    let expected = creates * SLOTS.len() as u64;
    let last = receiver
        .stats()
        .wait_for(&SLOTS, &since, creates, started + plan.delivery_deadline)
        .await
        .map_err(|shortfall| anyhow!(shortfall_text(shortfall, expected, plan.delivery_deadline)))?;
    let window = last.saturating_duration_since(started);
    eprintln!("  {} deliveries in {:.2} s", grouped(expected), window.as_secs_f64());
    Ok(per_second(expected, window))
}

/// Takes creates off `left` one at a time until none are left; any failure ends the part,
/// since every create must be delivered for the figure to count.
pub(super) async fn create_while_left(api: Api, left: Arc<AtomicU64>) -> Result<()> {
    while left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
        if let Err(err) = api.create_contact(reserve_contacts(1)).await {
            bail!("a single create failed: {err:#}");
        }
    }
    Ok(())
}
