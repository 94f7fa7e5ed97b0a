//! Endpoints as the record writes need them: which lanes to wake after a commit.

use estate_crm_domain::EventName;
use estate_crm_domain::webhook::EventFilter;
use serde_json::Value;

use super::writer::{Route, WriteCtx};
use crate::{StoreError, ids};

pub(super) const ENDPOINT_PREFIX: &str = "ep";

/// Notes the active endpoints subscribed to this event, so that their lanes wake once the change
/// commits. Nothing is written per endpoint: the event is owed to them through their cursors.
pub(super) async fn wake_subscribers(ctx: &mut WriteCtx, event: EventName) -> Result<(), StoreError> {
    if ctx.state.routes.is_none() {
        ctx.state.routes = Some(load_routes(ctx).await?);
    }
    let routes = ctx.state.routes.as_deref().unwrap_or_default();
    for route in routes.iter().filter(|r| r.events.matches(event)) {
        if !ctx.changes.endpoints.contains(&route.id) {
            ctx.changes.endpoints.insert(route.id.clone());
        }
    }
    Ok(())
}

async fn load_routes(ctx: &WriteCtx) -> Result<Vec<Route>, StoreError> {
    let statement = ctx.client.prepare_cached("SELECT seq, events FROM endpoints WHERE active ORDER BY seq").await?;
    let mut routes = Vec::new();
    for row in ctx.client.query(&statement, &[]).await? {
        let seq: i64 = row.try_get(0)?;
        let events = EventFilter::parse(&Value::String(row.try_get(1)?))
            .map_err(|e| StoreError::internal("reading an endpoint's events", e))?;
        routes.push(Route { id: ids::format(ENDPOINT_PREFIX, &ctx.state.tag, seq), events });
    }
    Ok(routes)
}
