//! Part 6: the backlog. A server of its own queues deliveries to an endpoint whose port has
//! nothing listening (every attempt is refused), then a receiver starts on that port and the
//! bench times the drain, samples the server's memory, and probes the API while it drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::paced::paced;
use super::{MAX_IN_FLIGHT, Notes, RETRY_SCHEDULE, loopback, shortfall_text};
use crate::api::{Api, EndpointSpec};
use crate::payload::{Batch, reserve_contacts};
use crate::plan::Plan;
use crate::receiver::{Receiver, SLOTS};
use crate::server::{Server, Subject};
use crate::stats::{grouped, millis, per_second, percentile};

/// The backlog endpoint's slot on its own receiver.
const SLOT: usize = 1;

/// The longest schedule the API takes: 20 retries a second apart, so that deliveries stay
/// pending while the endpoint is down, and are retried within a second once it is up.
const DOWN_RETRY_SCHEDULE: &str = "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";

/// Probes in flight at once; at 50/s a healthy API has one or two.
const PROBES_IN_FLIGHT: usize = 64;

/// How long the probes may take to finish once the drain is over.
const PROBES_FINISH: Duration = Duration::from_secs(40);

pub struct Backlog {
    pub drain_per_s: f64,
    pub peak_rss_mb: f64,
    pub api_p99_ms: f64,
}

/// Runs the part on a fresh server, whose peak memory joins `peaks` however the part ends.
pub async fn measure(plan: &Plan, subject: &Subject, notes: &Notes, peaks: &mut Vec<f64>) -> Result<Backlog> {
    let server = subject.start(RETRY_SCHEDULE).await?;
    let drained = drain(plan, &server, notes).await;
    if drained.is_err() {
        eprintln!("{}", server.log_tail());
    }
    let peak_rss_mb = server.stop().await?;
    peaks.push(peak_rss_mb);
    let (drain_per_s, api_p99_ms) = drained?;
    Ok(Backlog { drain_per_s, peak_rss_mb, api_p99_ms })
}

/// Answers the drain rate and the API's p99 in milliseconds while draining.
async fn drain(plan: &Plan, server: &Server, notes: &Notes) -> Result<(f64, f64)> {
    let api = Api::new(server.url(), server.token())?;
    let down = loopback(free_port()?);
    let endpoint = api
        .create_endpoint(&EndpointSpec {
            url: &format!("http://{down}/hook/{SLOT}"),
            // Only contacts, so that the API probes (tasks) add nothing to the backlog.
            events: "contact.created",
            retry_schedule: DOWN_RETRY_SCHEDULE,
            max_in_flight: MAX_IN_FLIGHT,
        })
        .await?;
    let pending = plan.backlog_deliveries;
    let queued_in = queue_backlog(plan, &api, pending).await?;
    eprintln!("  {} deliveries queued in {:.1} s; the endpoint comes up", grouped(pending), queued_in.as_secs_f64());

    let receiver = Receiver::start(down).await.context("bringing the endpoint up")?;
    let up = Instant::now();
    // Deliveries that ran out of attempts while the endpoint was down (possible when queueing
    // took longer than the schedule) are sent again, as an operator would after an outage.
    if let Err(err) = api.retry_failed(&endpoint).await {
        notes.add(format!("backlog: retrying failed deliveries: {err:#}"));
    }
    let draining = Arc::new(AtomicBool::new(true));
    let most_probes = plan.probe_rate_per_s * plan.drain_deadline.as_secs().max(1);
    let probes = tokio::spawn(probe_api(plan.probe_rate_per_s, most_probes, api.clone(), Arc::clone(&draining)));
    let drained = receiver.stats().wait_for(&[SLOT], &[0; SLOTS], pending, up + plan.drain_deadline).await;
    draining.store(false, Ordering::Release);
    let probes = tokio::time::timeout(PROBES_FINISH, probes)
        .await
        .context("the API probes did not finish")?
        .context("the API probes panicked")?;

    let last = drained.map_err(|shortfall| anyhow!(shortfall_text(shortfall, pending, plan.drain_deadline)))?;
    let drain_time = last.saturating_duration_since(up);
    eprintln!("  drained in {:.2} s", drain_time.as_secs_f64());
    if probes.failed > 0 {
        notes.add(format!(
            "backlog: {} of {} API probes failed; the first: {}",
            grouped(probes.failed),
            grouped(probes.failed + probes.millis.len() as u64),
            probes.first_error.unwrap_or_default()
        ));
    }
    let api_p99 = percentile(&probes.millis, 0.99).context("no API probe was answered while the backlog drained")?;
    Ok((per_second(pending, drain_time), api_p99))
}

/// Creates `contacts` contacts in bulk, building each body only when it is sent so that a
/// million rows never sit in memory at once; answers how long it took.
pub(super) async fn queue_backlog(plan: &Plan, api: &Api, contacts: u64) -> Result<Duration> {
    let first = reserve_contacts(contacts);
    let started = Instant::now();
    let deadline = started + plan.backlog_create_deadline;
    let mut created = 0;
    while created < contacts {
        if Instant::now() >= deadline {
            bail!(
                "created only {} of {} contacts in {} s",
                grouped(created),
                grouped(contacts),
                plan.backlog_create_deadline.as_secs()
            );
        }
        let rows = plan.bulk_batch_rows.min(contacts - created);
        let accepted = api.bulk_create(&Batch::new(first + created, rows)).await?;
        if accepted != rows {
            bail!("a bulk create of {rows} rows made {accepted}");
        }
        created += rows;
    }
    Ok(started.elapsed())
}

/// What the API probes saw.
struct Probes {
    millis: Vec<f64>,
    failed: u64,
    first_error: Option<String>,
}

/// Creates tasks at `rate_per_s` (at most `most` of them) while `draining` holds, each timed
/// from request to answer. A task is a durable write, so it meets whatever the drain does to
/// the store.
async fn probe_api(rate_per_s: u64, most: u64, api: Api, draining: Arc<AtomicBool>) -> Probes {
    let load = paced(
        rate_per_s,
        most,
        PROBES_IN_FLIGHT,
        || !draining.load(Ordering::Acquire),
        |n| {
            let api = api.clone();
            async move {
                let sent = Instant::now();
                api.create_task(n).await.map(|()| millis(sent.elapsed()))
            }
        },
    )
    .await;
    let mut probes = Probes { millis: Vec::with_capacity(load.results.len()), failed: load.skipped, first_error: None };
    for result in load.results {
        match result {
            Ok(ms) => probes.millis.push(ms),
            Err(err) => {
                probes.failed += 1;
                probes.first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    probes
}

/// A loopback port with nothing listening on it now, to be listened on later.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(loopback(0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
