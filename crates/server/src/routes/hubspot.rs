//! The HubSpot integration's settings, state, check button, backfill and sync log.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use estate_crm_store::{HubspotSettings, PageRequest};
use estate_crm_webhooks::hubspot::settings::{NOT_CONNECTED, Phase, check_saved, parse_settings};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, JsonBody, Params};
use crate::routes::format_millis;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/integrations/hubspot", get(get_state).put(put_settings))
        .route("/integrations/hubspot/check", post(check))
        .route("/integrations/hubspot/backfill", post(backfill))
        .route("/integrations/hubspot/log", get(log))
}

async fn get_state(_: Admin, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let settings = state.store.hubspot_settings().await?;
    Ok(Json(state_json(&state, settings.as_ref()).await?))
}

async fn put_settings(_: Admin, State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Json<Value>> {
    let existing = state.store.hubspot_settings().await?;
    let has_token = existing.as_ref().is_some_and(|s| s.access_token.is_some());
    let patch = parse_settings(&body, has_token, state.settings.policy).await.map_err(ApiError::invalid)?;
    let saved = state.store.put_hubspot_settings(patch).await?;
    state.hubspot.wake();
    Ok(Json(state_json(&state, Some(&saved)).await?))
}

/// The settings and state as the API shows them: never the token.
async fn state_json(state: &AppState, settings: Option<&HubspotSettings>) -> ApiResult<Value> {
    let Some(settings) = settings else {
        return Ok(json!({"state": "not_connected", "has_token": false}));
    };
    let counts = state.store.hubspot_counts().await?;
    let status = state.hubspot.status();
    Ok(json!({
        "state": Phase::of(Some(settings)).as_str(),
        "paused_reason": settings.paused_reason,
        "last_error": status.last_error,
        "has_token": settings.access_token.is_some(),
        "base_url": settings.base_url,
        "deal_pipeline": settings.deal_pipeline,
        "stage_map": settings.stage_map,
        "enabled": settings.enabled,
        "rate_limit": {"requests": settings.rate_limit, "per_ms": settings.rate_window_ms},
        "cursor": settings.cursor,
        "backlog": (counts.newest_event - settings.cursor).max(0),
        "counts": {"contacts": counts.contacts, "deals": counts.deals},
        "backfill": {
            "running": settings.backfill.is_some(),
            "phase": settings.backfill.as_ref().map(|b| b.kind.plural()),
            "done": settings.backfill_done,
            "total": counts.records,
        },
    }))
}

async fn check(_: Admin, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let settings = state.store.hubspot_settings().await?;
    match check_saved(state.settings.policy, settings.as_ref()).await {
        Some(result) => Ok(Json(result.to_json())),
        None => Err(ApiError::not_found(NOT_CONNECTED)),
    }
}

async fn backfill(_: Admin, State(state): State<AppState>) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let settings = state.store.start_hubspot_backfill().await?;
    state.hubspot.wake();
    Ok((axum::http::StatusCode::ACCEPTED, Json(state_json(&state, Some(&settings)).await?)))
}

async fn log(_: Admin, State(state): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    let page: PageRequest = params.page()?;
    let record_id = params.get("record_id").map(str::to_owned);
    let page = state.store.hubspot_log(record_id, page).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|line| {
            let sent: Value = serde_json::from_str(&line.entry.sent).unwrap_or(Value::Null);
            json!({
                "id": line.id,
                "at": format_millis(line.at_ms),
                "record_type": line.entry.kind.name(),
                "record_id": line.entry.record_id,
                "action": line.entry.action,
                "sent": sent,
                "status_code": line.entry.status,
                "hubspot_id": line.entry.hubspot_id,
                "error": line.entry.error,
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})))
}
