//! The event log, the event catalogue and the deal pipeline.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use estate_crm_domain::schema::PIPELINE;
use estate_crm_domain::{EventName, event_catalogue, format_timestamp};
use estate_crm_store::EventFilterQuery;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Caller, Params};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", get(list_events))
        .route("/event-types", get(event_types))
        .route("/pipeline", get(pipeline))
}

async fn list_events(State(state): State<AppState>, _: Admin, params: Params) -> ApiResult<Json<Value>> {
    let event = params
        .get("event")
        .map(|name| EventName::parse(name).ok_or_else(|| ApiError::invalid_field("event", "is not an event name")))
        .transpose()?;
    let since = params
        .get("since")
        .map(|since| {
            chrono::DateTime::parse_from_rfc3339(since)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| ApiError::invalid_field("since", "must be an RFC 3339 time like 2026-04-17T12:34:56Z"))
        })
        .transpose()?;
    let page = state.store.list_events(EventFilterQuery { event, since }, params.page()?).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "event": e.name.as_str(),
                "timestamp": format_timestamp(e.timestamp),
                "body": serde_json::from_slice::<Value>(&e.body).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})))
}

async fn event_types(State(state): State<AppState>, _: Caller) -> Json<Value> {
    let items: Vec<Value> = event_catalogue(&state.settings.site_url)
        .into_iter()
        .map(|info| {
            json!({
                "event": info.name.as_str(),
                "description": info.name.description(),
                "subscribable": info.name.is_subscribable(),
                "sample": info.sample,
            })
        })
        .collect();
    Json(json!({"items": items}))
}

async fn pipeline(_: Caller) -> Json<Value> {
    let items: Vec<Value> = PIPELINE
        .iter()
        .map(|(id, name)| {
            let status = match *id {
                "closed_won" => "won",
                "closed_lost" => "lost",
                _ => "open",
            };
            json!({"id": id, "name": name, "status": status})
        })
        .collect();
    Json(json!({"items": items}))
}
