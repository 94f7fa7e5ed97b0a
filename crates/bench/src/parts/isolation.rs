//! Part 5: isolation. The four endpoints' deliveries per second, first alone (the baseline),
//! then beside a fifth endpoint that accepts connections and never answers; the figure is the
//! second rate over the first, measured back to back on the same server.

use anyhow::{Context as _, Result};

use super::{DEAD, MAX_IN_FLIGHT, Notes, RETRY_SCHEDULE, Session};
use crate::api::EndpointSpec;
use crate::plan::Plan;

pub async fn measure(plan: &Plan, session: &Session<'_>, notes: &Notes) -> Result<f64> {
    session.settle(plan, notes).await;
    let baseline = session.delivery_rate(plan, plan.isolation_contacts).await.context("the baseline")?;
    let stats = session.receiver.stats();
    stats.stall(DEAD);
    let dead_url = session.receiver.hook_url(DEAD);
    let with_dead = async {
        let id = session
            .api
            .create_endpoint(&EndpointSpec {
                url: &dead_url,
                events: "*",
                retry_schedule: RETRY_SCHEDULE,
                max_in_flight: MAX_IN_FLIGHT,
            })
            .await?;
        let rate = session.delivery_rate(plan, plan.isolation_contacts).await;
        // The dead endpoint goes before its held requests are answered, so that nothing more
        // is queued to it for the parts that follow.
        if let Err(err) = session.api.delete_endpoint(&id).await {
            notes.add(format!("could not delete the dead endpoint: {err:#}"));
        }
        rate
    }
    .await;
    stats.release(DEAD);
    Ok(with_dead.context("beside a dead endpoint")? / baseline)
}
