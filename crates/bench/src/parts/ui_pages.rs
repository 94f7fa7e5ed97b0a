//! Part 8: the web app's pages over a large delivery log. A server of its own gets two endpoints
//! on the receiver and enough contacts for `plan.ui_deliveries` deliveries (two each), all
//! delivered; then the bench signs in through the real `/login` form and times whole answers
//! of the delivery log, the endpoints page and the contacts table (unfiltered, and searched for
//! one contact, for words every contact has, and for two letters that no contact has, which read
//! the whole search table), one request at a time after a warm-up.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::backlog::queue_backlog;
use super::{MAX_IN_FLIGHT, RETRY_SCHEDULE, shortfall_text};
use crate::api::{Api, EndpointSpec};
use crate::plan::Plan;
use crate::receiver::Receiver;
use crate::server::{Server, Subject};
use crate::stats::{grouped, millis, percentile};
use crate::web::WebSession;

/// The receiver slots of this part's two endpoints (parts 2 to 5 use 1 to 5).
const SLOTS: [usize; 2] = [6, 7];

/// The user the bench signs in as.
const EMAIL: &str = "bench-admin@example.com";
const PASSWORD: &str = "bench admin password";

/// One page's answer times, in milliseconds: the first after the server started, then the
/// median and p99 of those after the warm-up.
pub struct PageTimes {
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct UiPages {
    pub deliveries: PageTimes,
    pub endpoints: PageTimes,
    /// `/contacts`, newest first, over every contact of the part.
    pub contacts: PageTimes,
    /// `/contacts?q=` one contact's email.
    pub contacts_search: PageTimes,
    /// `/contacts?q=` words every contact has.
    pub contacts_search_broad: PageTimes,
    /// `/contacts?q=` two letters no contact has.
    pub contacts_search_short: PageTimes,
    /// The endpoints page when its counts are not shared from a page shown just before.
    pub endpoints_cold_ms: f64,
}

/// What a contacts page with at least one row has.
const CONTACT_ROW: &str = "data-record-id=\"con_";

/// The endpoints page (and the dashboard) share their 24-hour counts for up to a second; a page
/// asked for this long after the last one counts afresh.
const COUNTS_EXPIRED: Duration = Duration::from_millis(1_500);

/// Runs the part on a fresh server, whose peak memory joins `peaks` however the part ends.
pub async fn measure(plan: &Plan, subject: &Subject, receiver: &Receiver, peaks: &mut Vec<f64>) -> Result<UiPages> {
    let server = subject.start(RETRY_SCHEDULE).await?;
    let measured = fill_and_time(plan, &server, receiver).await;
    if measured.is_err() {
        eprintln!("{}", server.log_tail());
    }
    peaks.push(server.stop().await?);
    measured
}

async fn fill_and_time(plan: &Plan, server: &Server, receiver: &Receiver) -> Result<UiPages> {
    let api = Api::new(server.url(), server.token())?;
    for slot in SLOTS {
        let url = receiver.hook_url(slot);
        let spec = EndpointSpec {
            url: &url,
            events: "contact.created",
            retry_schedule: RETRY_SCHEDULE,
            max_in_flight: MAX_IN_FLIGHT,
        };
        api.create_endpoint(&spec).await?;
    }
    let contacts = plan.ui_deliveries.div_ceil(SLOTS.len() as u64);
    // The numbers `queue_backlog` is about to give its contacts start here (nothing else runs).
    let first_contact = crate::payload::reserve_contacts(0);
    let since = receiver.stats().snapshot();
    let started = Instant::now();
    queue_backlog(plan, &api, contacts).await?;
    let deliveries = contacts * SLOTS.len() as u64;
    receiver
        .stats()
        .wait_for(&SLOTS, &since, contacts, started + plan.backlog_create_deadline + plan.drain_deadline)
        .await
        .map_err(|shortfall| anyhow!(shortfall_text(shortfall, deliveries, plan.drain_deadline)))?;
    eprintln!("  {} deliveries in the log after {:.1} s", grouped(deliveries), started.elapsed().as_secs_f64());

    api.create_user(EMAIL, PASSWORD).await?;
    let web = WebSession::sign_in(server.url(), EMAIL, PASSWORD).await.context("signing in through /login")?;
    Ok(UiPages {
        deliveries: time_page(plan, &web, "/settings/deliveries", "id=\"deliveries\"").await?,
        endpoints: time_page(plan, &web, "/settings/endpoints", "id=\"endpoints\"").await?,
        endpoints_cold_ms: time_cold(plan, &web, "/settings/endpoints", "id=\"endpoints\"").await?,
        contacts: time_page(plan, &web, "/contacts", CONTACT_ROW).await?,
        contacts_search: time_page(
            plan,
            &web,
            &format!("/contacts?q=ada-{}%40example", first_contact + contacts / 2),
            CONTACT_ROW,
        )
        .await?,
        contacts_search_broad: time_page(plan, &web, "/contacts?q=ada+lovelace", CONTACT_ROW).await?,
        contacts_search_short: time_page(plan, &web, "/contacts?q=zq", "No contact matches").await?,
    })
}

/// Times `plan.ui_cold_requests` answers of `path`, each asked for [`COUNTS_EXPIRED`] after the
/// one before, and answers their median.
async fn time_cold(plan: &Plan, web: &WebSession, path: &str, marker: &str) -> Result<f64> {
    let mut millis_taken = Vec::with_capacity(plan.ui_cold_requests);
    for _ in 0..plan.ui_cold_requests {
        tokio::time::sleep(COUNTS_EXPIRED).await;
        let sent = Instant::now();
        let page = web.page(path).await?;
        millis_taken.push(millis(sent.elapsed()));
        if !String::from_utf8_lossy(&page).contains(marker) {
            bail!("GET {path} is not the page: no {marker} in it");
        }
    }
    let median = percentile(&millis_taken, 0.5).context("no page was timed")?;
    let slowest = millis_taken.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "  {path} counted afresh: median {median:.2} ms, slowest {slowest:.2} ms over {} requests",
        plan.ui_cold_requests
    );
    Ok(median)
}

/// Fetches `path` `plan.ui_warmup` times, then times `plan.ui_requests` more, each from the
/// request sent to the last byte of the answer. Every answer must be the page (`marker` in it).
async fn time_page(plan: &Plan, web: &WebSession, path: &str, marker: &str) -> Result<PageTimes> {
    let mut millis_taken = Vec::with_capacity(plan.ui_requests);
    let mut first_ms = None;
    for n in 0..plan.ui_warmup + plan.ui_requests {
        let sent = Instant::now();
        let page = web.page(path).await?;
        let taken = millis(sent.elapsed());
        if !String::from_utf8_lossy(&page).contains(marker) {
            bail!("GET {path} is not the page: no {marker} in it");
        }
        first_ms.get_or_insert(taken);
        if n >= plan.ui_warmup {
            millis_taken.push(taken);
        }
    }
    let p50_ms = percentile(&millis_taken, 0.5).context("no page was timed")?;
    let p99_ms = percentile(&millis_taken, 0.99).context("no page was timed")?;
    let first_ms = first_ms.context("no page was timed")?;
    eprintln!(
        "  {path}: first {first_ms:.2} ms, then median {p50_ms:.2} ms, p99 {p99_ms:.2} ms over {} requests",
        plan.ui_requests
    );
    Ok(PageTimes { first_ms, p50_ms, p99_ms })
}
