//! The delivery log: every delivery with its attempts, and retries by hand.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use estate_crm_domain::EventName;
use estate_crm_store::{Delivery, DeliveryFilter, DeliveryStatus};
use serde_json::{Value, json};

use super::format_millis;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Params, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/deliveries", get(list))
        .route("/deliveries/{id}", get(get_one))
        .route("/deliveries/{id}/retry", post(retry))
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event": d.event.as_str(),
        "endpoint_id": d.endpoint_id,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(format_millis),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": format_millis(d.created_at),
        "updated_at": format_millis(d.updated_at),
    })
}

async fn list(State(state): State<AppState>, _: Admin, params: Params) -> ApiResult<Json<Value>> {
    let filter = DeliveryFilter {
        endpoint_id: params.get("endpoint_id").map(str::to_owned),
        status: params
            .get("status")
            .map(|s| {
                DeliveryStatus::parse(s)
                    .ok_or_else(|| ApiError::invalid_field("status", "must be one of pending, succeeded, failed"))
            })
            .transpose()?,
        event: params
            .get("event")
            .map(|name| EventName::parse(name).ok_or_else(|| ApiError::invalid_field("event", "is not an event name")))
            .transpose()?,
    };
    let page = state.store.list_deliveries(filter, params.page()?).await?;
    let items: Vec<Value> = page.items.iter().map(delivery_json).collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})))
}

async fn get_one(State(state): State<AppState>, _: Admin, PathId(id): PathId) -> ApiResult<Json<Value>> {
    let detail = state.store.get_delivery(&id).await?;
    let mut out = delivery_json(&detail.delivery);
    out["body"] = json!(String::from_utf8_lossy(&detail.body));
    out["attempts_log"] = detail
        .attempts
        .iter()
        .map(|a| {
            json!({
                "number": a.number,
                "at": format_millis(a.started_at),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "response": String::from_utf8_lossy(&a.response),
            })
        })
        .collect();
    Ok(Json(out))
}

async fn retry(State(state): State<AppState>, _: Admin, PathId(id): PathId) -> ApiResult<(StatusCode, Json<Value>)> {
    state.store.retry_delivery(&id, chrono::Utc::now().timestamp_millis()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "status": "pending"}))))
}
