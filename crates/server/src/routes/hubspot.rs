//! The HubSpot integration's settings, state, check button, backfill and sync log.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use estate_crm_domain::FieldErrors;
use estate_crm_domain::schema::PIPELINE;
use estate_crm_store::{HubspotPatch, HubspotSettings, PageRequest};
use estate_crm_webhooks::hubspot::{CheckTarget, check_connection};
use estate_crm_webhooks::{TargetUrl, check_destination};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, JsonBody, Params};
use crate::routes::format_millis;
use crate::state::AppState;

const MAX_TOKEN_BYTES: usize = 512;
const MAX_ID_CHARS: usize = 100;
/// Settings fields; `has_token` and the state fields are what a GET shows and may be sent back.
const FIELDS: &[&str] = &["access_token", "base_url", "deal_pipeline", "stage_map", "enabled", "rate_limit"];
const IGNORED: &[&str] =
    &["has_token", "state", "paused_reason", "cursor", "backlog", "counts", "backfill", "last_error"];

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
    let patch = parse_settings(&state, &body).await?;
    let existing = state.store.hubspot_settings().await?;
    if patch.access_token.is_none() && existing.as_ref().and_then(|s| s.access_token.as_ref()).is_none() {
        return Err(ApiError::invalid_field("access_token", "is required to connect HubSpot"));
    }
    let saved = state.store.put_hubspot_settings(patch).await?;
    state.hubspot.wake();
    Ok(Json(state_json(&state, Some(&saved)).await?))
}

async fn parse_settings(state: &AppState, body: &Value) -> ApiResult<HubspotPatch> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    };
    let mut errors = FieldErrors::new();
    let mut patch = HubspotPatch::default();
    for (name, value) in body {
        if IGNORED.contains(&name.as_str()) {
            continue;
        }
        if !FIELDS.contains(&name.as_str()) {
            errors.add(name, format!("is not a known field; the fields are {}", FIELDS.join(", ")));
            continue;
        }
        if let Err(message) = parse_field(name, value, &mut patch) {
            errors.add(name, message);
        }
    }
    if let Some(url) = &patch.base_url
        && let Ok(target) = TargetUrl::parse(url)
        && let Err(blocked) = check_destination(&target, state.settings.policy).await
    {
        errors.add("base_url", format!("{blocked}; HubSpot's API is at a public address"));
    }
    errors.into_result(patch).map_err(ApiError::invalid)
}

fn parse_field(name: &str, value: &Value, patch: &mut HubspotPatch) -> Result<(), String> {
    match name {
        "access_token" => {
            let token = value.as_str().map(str::trim).unwrap_or_default();
            if token.is_empty() || token.len() > MAX_TOKEN_BYTES || token.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!(
                    "must be the private app's access token (1 to {MAX_TOKEN_BYTES} bytes, no spaces)"
                ));
            }
            patch.access_token = Some(token.to_owned());
        }
        "base_url" => {
            let text = value.as_str().ok_or("must be a string")?.trim();
            let url = TargetUrl::parse(text).map_err(|e| e.to_string())?;
            patch.base_url = Some(url.as_str().trim_end_matches('/').to_owned());
        }
        "deal_pipeline" => patch.deal_pipeline = Some(hubspot_id(value)?),
        "stage_map" => patch.stage_map = Some(parse_stage_map(value)?),
        "enabled" => patch.enabled = Some(value.as_bool().ok_or("must be true or false")?),
        "rate_limit" => {
            let requests = value.get("requests").and_then(Value::as_u64).filter(|n| (1..=1000).contains(n));
            let per_ms = value.get("per_ms").and_then(Value::as_u64).filter(|n| (100..=600_000).contains(n));
            match (requests, per_ms, value.as_object().map(Map::len)) {
                (Some(requests), Some(per_ms), Some(2)) => {
                    patch.rate_limit = Some(requests as u32);
                    patch.rate_window_ms = Some(per_ms as u32);
                }
                _ => return Err("must be {\"requests\": 1 to 1000, \"per_ms\": 100 to 600000}".into()),
            }
        }
        _ => return Err("is not a known field".into()),
    }
    Ok(())
}

fn hubspot_id(value: &Value) -> Result<String, String> {
    match value.as_str().map(str::trim) {
        Some(id) if !id.is_empty() && id.chars().count() <= MAX_ID_CHARS && !id.chars().any(char::is_control) => {
            Ok(id.to_owned())
        }
        _ => Err(format!("must be a HubSpot id: a string of 1 to {MAX_ID_CHARS} characters")),
    }
}

fn parse_stage_map(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err("must be an object of our deal stage -> HubSpot stage id".into());
    };
    let mut stages = BTreeMap::new();
    for (ours, theirs) in map {
        if !PIPELINE.iter().any(|(key, _)| key == ours) {
            let keys: Vec<&str> = PIPELINE.iter().map(|(key, _)| *key).collect();
            return Err(format!("{ours:?} is not a deal stage; the stages are {}", keys.join(", ")));
        }
        stages.insert(ours.clone(), hubspot_id(theirs).map_err(|e| format!("{ours}: {e}"))?);
    }
    Ok(stages)
}

/// The settings and state as the API shows them: never the token.
async fn state_json(state: &AppState, settings: Option<&HubspotSettings>) -> ApiResult<Value> {
    let Some(settings) = settings else {
        return Ok(json!({"state": "not_connected", "has_token": false}));
    };
    let counts = state.store.hubspot_counts().await?;
    let status = state.hubspot.status();
    let phase = match (&settings.enabled, &settings.paused_reason, &settings.access_token) {
        (false, _, _) => "disabled",
        (true, Some(_), _) => "paused",
        (true, None, None) => "not_connected",
        (true, None, Some(_)) => "connected",
    };
    Ok(json!({
        "state": phase,
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
    let Some((settings, token)) = settings.and_then(|s| s.access_token.clone().map(|token| (s, token))) else {
        return Err(ApiError::not_found("HubSpot is not connected: save an access token first"));
    };
    let target = CheckTarget {
        base_url: &settings.base_url,
        token: &token,
        pipeline: &settings.deal_pipeline,
        stage_map: &settings.stage_map,
    };
    Ok(Json(check_connection(state.settings.policy, target).await.to_json()))
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
