//! Part 4: at a steady event rate, the time from the API's answer to the receipt, by event.
//!
//! One sample per event: from the moment its create is answered to the moment the last of the
//! four endpoints has it, which is when the event has reached everyone subscribed. A webhook
//! may even arrive before the answer does; that counts as zero.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::paced::paced;
use super::{HEALTHY, Notes, Session};
use crate::payload::reserve_contacts;
use crate::plan::Plan;
use crate::receiver::Arrivals;
use crate::stats::{grouped, millis, percentile};

/// The most creates the bench keeps in flight; at 1,000/s and a few ms each, a handful are.
const MAX_IN_FLIGHT: usize = 256;

/// How often the bench looks for events still on their way.
const POLL: Duration = Duration::from_millis(50);

pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub async fn measure(plan: &Plan, session: &Session<'_>, notes: &Notes) -> Result<Latency> {
    session.settle(plan, notes).await;
    let stats = session.receiver.stats();
    stats.start_recording();
    let measured = answers_to_receipts(plan, session, notes).await;
    stats.stop_recording();
    let samples = measured?;
    Ok(Latency {
        p50_ms: percentile(&samples, 0.50).unwrap_or_default(),
        p99_ms: percentile(&samples, 0.99).unwrap_or_default(),
    })
}

/// Sends the creates and answers each event's latency in milliseconds.
async fn answers_to_receipts(plan: &Plan, session: &Session<'_>, notes: &Notes) -> Result<Vec<f64>> {
    let count = plan.latency_rate_per_s * plan.latency_window.as_secs().max(1);
    let load = paced(
        plan.latency_rate_per_s,
        count,
        MAX_IN_FLIGHT,
        || false,
        |_| {
            let api = session.api.clone();
            async move {
                let id = api.create_contact(reserve_contacts(1)).await?;
                anyhow::Ok((id, Instant::now()))
            }
        },
    )
    .await;
    if load.achieved_per_s < 0.9 * plan.latency_rate_per_s as f64 {
        notes.add(format!(
            "latency: the bench sent {:.0} events/s of the {} asked for",
            load.achieved_per_s, plan.latency_rate_per_s
        ));
    }
    let mut answered = Vec::with_capacity(load.results.len());
    let mut failed = 0u64;
    for result in load.results {
        match result {
            Ok(answer) => answered.push(answer),
            Err(_) => failed += 1,
        }
    }
    session.add_created(answered.len() as u64);
    if load.skipped + failed > 0 {
        notes.add(format!(
            "latency: of {} creates, {} failed and {} were skipped with {MAX_IN_FLIGHT} in flight",
            grouped(count),
            grouped(failed),
            grouped(load.skipped)
        ));
    }
    if answered.is_empty() {
        bail!("no create was answered");
    }
    let ids: Vec<String> = answered.iter().map(|(id, _)| id.clone()).collect();
    let arrivals = wait_for_arrivals(plan, session, &ids).await?;
    Ok(answered
        .iter()
        .zip(arrivals)
        .map(|((_, answered_at), arrived)| millis(arrived.last.saturating_duration_since(*answered_at)))
        .collect())
}

/// Waits until every event has reached every endpoint, or says how many have not.
async fn wait_for_arrivals(plan: &Plan, session: &Session<'_>, ids: &[String]) -> Result<Vec<Arrivals>> {
    let endpoints = HEALTHY.len() as u32;
    let deadline = Instant::now() + plan.delivery_deadline;
    loop {
        let arrivals = session.receiver.stats().arrivals_of(ids);
        let complete: Vec<Arrivals> =
            arrivals.iter().flatten().filter(|arrived| arrived.count >= endpoints).copied().collect();
        if complete.len() == ids.len() {
            return Ok(complete);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of {} events had not reached all {endpoints} endpoints after {} s",
                grouped((ids.len() - complete.len()) as u64),
                grouped(ids.len() as u64),
                plan.delivery_deadline.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
