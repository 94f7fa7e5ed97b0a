//! Part 3: how fast the API takes contacts, one per request and in bulk.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use tokio::task::JoinSet;

use super::{Notes, Session};
use crate::payload::{self, reserve_contacts};
use crate::plan::Plan;
use crate::stats::{grouped, per_second};

/// What one worker of the single-create load did.
#[derive(Default)]
struct Tally {
    created: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Single POSTs from `single_concurrency` workers, each sending its next request as soon as the
/// last is answered, for the plan's window: created contacts per second.
pub async fn single_creates(plan: &Plan, session: &Session<'_>, notes: &Notes) -> Result<f64> {
    let started = Instant::now();
    let end = started + plan.single_window;
    let mut workers = JoinSet::new();
    for _ in 0..plan.single_concurrency {
        let api = session.api.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            // Each call is bounded by the API client's timeout, so this ends soon after `end`.
            while Instant::now() < end {
                match api.create_contact(reserve_contacts(1)).await {
                    Ok(_) => tally.created += 1,
                    Err(err) => {
                        tally.failed += 1;
                        tally.first_error.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a create worker panicked")?;
        total.created += tally.created;
        total.failed += tally.failed;
        total.first_error = total.first_error.or(tally.first_error);
    }
    let elapsed = started.elapsed();
    session.add_created(total.created);
    let first_error = total.first_error.unwrap_or_default();
    if total.created == 0 {
        bail!("no single create succeeded: {first_error}");
    }
    if total.failed > 0 {
        notes.add(format!(
            "{} of {} single creates failed; the first: {first_error}",
            grouped(total.failed),
            grouped(total.created + total.failed)
        ));
    }
    Ok(per_second(total.created, elapsed))
}

/// Bulk requests of the API's largest size, one after another: rows accepted per second, from
/// the first request sent to the last answer. The bodies are built beforehand.
///
/// It starts once the deliveries of earlier creates have arrived, so that the figure is the bulk
/// API's own rate (its rows' deliveries being sent meanwhile), not that of draining what the single
/// creates queued.
pub async fn bulk_rows(plan: &Plan, session: &Session<'_>, notes: &Notes) -> Result<f64> {
    let batches = payload::new_batches(plan.bulk_rows, plan.bulk_batch_rows);
    session.settle(plan, notes).await;
    let started = Instant::now();
    let mut accepted = 0;
    for batch in &batches {
        let created = session.api.bulk_create(batch).await?;
        session.add_created(created);
        accepted += created;
    }
    Ok(per_second(accepted, started.elapsed()))
}
