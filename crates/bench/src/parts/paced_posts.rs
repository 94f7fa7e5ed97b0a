//! Part 10: the latency tail at a steady rate, as a user's receiver sees it.
//!
//! A server of its own with one endpoint on the receiver. Single creates are started open loop
//! at 200 per second, then at 1,000 per second, and each event's latency is the time from the
//! start of its POST to its receipt: the API's own answer time, the commit's fsync, the
//! dispatcher and the send, all in one figure. The 1,000/s phase runs `plan.paced_runs` times
//! on the same server, one after another, so that a tail that comes and goes shows as a spread.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::paced::paced;
use super::{MAX_IN_FLIGHT, Notes, RETRY_SCHEDULE};
use crate::api::{Api, EndpointSpec};
use crate::payload::reserve_contacts;
use crate::plan::Plan;
use crate::receiver::{Arrivals, Receiver};
use crate::server::{Server, Subject};
use crate::stats::{grouped, millis, percentile};

/// This part's endpoint on the shared receiver (parts 2 to 5 use 1 to 5, part 8 6 and 7).
const SLOT: usize = 9;

/// The most creates the bench keeps in flight; at 1,000/s and a few ms each, a handful are.
const CREATES_IN_FLIGHT: usize = 256;

/// How often the bench looks for events still on their way.
const POLL: Duration = Duration::from_millis(20);

pub struct PacedPosts {
    pub p99_200_ms: f64,
    /// Each 1,000/s run's p99, in order.
    pub p99_1000_runs_ms: Vec<f64>,
    /// The slowest event of every 1,000/s run.
    pub max_1000_ms: f64,
}

impl PacedPosts {
    /// The worst run's p99: the figure a user could meet on any run.
    pub fn p99_1000_ms(&self) -> f64 {
        self.p99_1000_runs_ms.iter().copied().fold(0.0, f64::max)
    }

    /// How far the runs' p99 are apart: (highest - lowest) / median.
    pub fn spread(&self) -> Option<f64> {
        spread(&self.p99_1000_runs_ms)
    }
}

/// Runs the part on a fresh server, whose peak memory joins `peaks` however the part ends.
pub async fn measure(
    plan: &Plan,
    subject: &Subject,
    receiver: &Receiver,
    notes: &Notes,
    peaks: &mut Vec<f64>,
) -> Result<PacedPosts> {
    let server = subject.start(RETRY_SCHEDULE).await?;
    let measured = phases(plan, &server, receiver, notes).await;
    if measured.is_err() {
        eprintln!("{}", server.log_tail());
    }
    peaks.push(server.stop().await?);
    measured
}

async fn phases(plan: &Plan, server: &Server, receiver: &Receiver, notes: &Notes) -> Result<PacedPosts> {
    let api = Api::new(server.url(), server.token())?;
    let url = receiver.hook_url(SLOT);
    api.create_endpoint(&EndpointSpec {
        url: &url,
        events: "*",
        retry_schedule: RETRY_SCHEDULE,
        max_in_flight: MAX_IN_FLIGHT,
    })
    .await?;
    let at_200 = phase(plan, &api, receiver, notes, 200).await?;
    eprintln!("  200/s: p99 {:.3} ms, max {:.3} ms", at_200.p99_ms, at_200.max_ms);
    let mut runs = Vec::with_capacity(plan.paced_runs);
    let mut max_1000_ms: f64 = 0.0;
    for run in 1..=plan.paced_runs.max(1) {
        let at_1000 = phase(plan, &api, receiver, notes, 1_000).await?;
        eprintln!("  1,000/s run {run}: p99 {:.3} ms, max {:.3} ms", at_1000.p99_ms, at_1000.max_ms);
        runs.push(at_1000.p99_ms);
        max_1000_ms = max_1000_ms.max(at_1000.max_ms);
    }
    Ok(PacedPosts { p99_200_ms: at_200.p99_ms, p99_1000_runs_ms: runs, max_1000_ms })
}

struct Phase {
    p99_ms: f64,
    max_ms: f64,
}

/// One phase at `rate_per_s` for the plan's window: each event's time from POST start to receipt.
async fn phase(plan: &Plan, api: &Api, receiver: &Receiver, notes: &Notes, rate_per_s: u64) -> Result<Phase> {
    let stats = receiver.stats();
    stats.start_recording();
    let measured = post_and_wait(plan, api, receiver, notes, rate_per_s).await;
    stats.stop_recording();
    let samples = measured?;
    Ok(Phase {
        p99_ms: percentile(&samples, 0.99).unwrap_or_default(),
        max_ms: samples.iter().copied().fold(0.0, f64::max),
    })
}

async fn post_and_wait(
    plan: &Plan,
    api: &Api,
    receiver: &Receiver,
    notes: &Notes,
    rate_per_s: u64,
) -> Result<Vec<f64>> {
    let count = rate_per_s * plan.paced_window.as_secs().max(1);
    let load = paced(
        rate_per_s,
        count,
        CREATES_IN_FLIGHT,
        || false,
        |_| {
            let api = api.clone();
            async move {
                let posted = Instant::now();
                let id = api.create_contact(reserve_contacts(1)).await?;
                anyhow::Ok((id, posted, posted.elapsed()))
            }
        },
    )
    .await;
    if load.achieved_per_s < 0.9 * rate_per_s as f64 {
        notes.add(format!("paced {rate_per_s}/s: the bench sent {:.0} creates/s", load.achieved_per_s));
    }
    let mut posted = Vec::with_capacity(load.results.len());
    let mut failed = 0u64;
    for result in load.results {
        match result {
            Ok(answer) => posted.push(answer),
            Err(_) => failed += 1,
        }
    }
    if load.skipped + failed > 0 {
        notes.add(format!(
            "paced {rate_per_s}/s: of {} creates, {} failed and {} were skipped with {CREATES_IN_FLIGHT} in flight",
            grouped(count),
            grouped(failed),
            grouped(load.skipped)
        ));
    }
    if posted.is_empty() {
        bail!("no create was answered at {rate_per_s}/s");
    }
    // The API's own share of the tail: from the POST's start to its answer.
    let answers: Vec<f64> = posted.iter().map(|(_, _, answered_in)| millis(*answered_in)).collect();
    eprintln!(
        "  {rate_per_s}/s: the API's answers p99 {:.3} ms, max {:.3} ms",
        percentile(&answers, 0.99).unwrap_or_default(),
        answers.iter().copied().fold(0.0, f64::max)
    );
    let ids: Vec<String> = posted.iter().map(|(id, _, _)| id.clone()).collect();
    let arrivals = wait_for_arrivals(plan, receiver, &ids).await?;
    Ok(posted
        .iter()
        .zip(arrivals)
        .map(|((_, posted_at, _), arrived)| millis(arrived.last.saturating_duration_since(*posted_at)))
        .collect())
}

/// Waits until every event has reached the endpoint, or says how many have not.
async fn wait_for_arrivals(plan: &Plan, receiver: &Receiver, ids: &[String]) -> Result<Vec<Arrivals>> {
    let deadline = Instant::now() + plan.delivery_deadline;
    loop {
        let arrivals = receiver.stats().arrivals_of(ids);
        let complete: Vec<Arrivals> = arrivals.iter().flatten().copied().collect();
        if complete.len() == ids.len() {
            return Ok(complete);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of {} events had not arrived after {} s",
                grouped((ids.len() - complete.len()) as u64),
                grouped(ids.len() as u64),
                plan.delivery_deadline.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// (highest - lowest) / median; None for no runs.
fn spread(runs: &[f64]) -> Option<f64> {
    let median = percentile(runs, 0.5)?;
    let highest = runs.iter().copied().fold(f64::MIN, f64::max);
    let lowest = runs.iter().copied().fold(f64::MAX, f64::min);
    Some(if median > 0.0 { (highest - lowest) / median } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_the_range_over_the_median() {
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[4.0]), Some(0.0));
        // Median 5: (6 - 4) / 5.
        assert_eq!(spread(&[4.0, 6.0, 5.0]), Some(0.4));
        let posts = PacedPosts { p99_200_ms: 1.0, p99_1000_runs_ms: vec![2.0, 9.0, 3.0], max_1000_ms: 20.0 };
        assert_eq!(posts.p99_1000_ms(), 9.0);
        assert_eq!(posts.spread(), Some(7.0 / 3.0));
    }
}
