//! Webhook settings: the simple settings (the primary endpoint), the endpoints API, and the test button.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use estate_crm_store::{Endpoint, EndpointSpec};
use estate_crm_webhooks::endpoint_input::{self, ENDPOINT_SHAPE, EndpointInput, SaveError, SavedSettings, Shape};
use estate_crm_webhooks::{TestTarget, send_test, standard_webhooks_secret};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, JsonBody, OptionalJsonBody, Params, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings/webhook", get(get_settings).put(put_settings))
        .route("/settings/webhook/test", post(test_primary))
        .route("/webhooks", get(list_endpoints).post(create_endpoint))
        .route("/webhooks/{id}", get(get_endpoint).patch(update_endpoint).delete(delete_endpoint))
        .route("/webhooks/{id}/test", post(test_endpoint))
        .route("/webhooks/{id}/retry-failed", post(retry_failed))
}

async fn parse_endpoint(state: &AppState, body: &Value, shape: Shape) -> ApiResult<EndpointInput> {
    endpoint_input::parse_endpoint(body, shape, state.settings.policy).await.map_err(ApiError::invalid)
}

/// An endpoint as the API shows it: never its secret.
fn endpoint_json(endpoint: &Endpoint) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events.to_string(),
        "active": endpoint.active,
        "has_secret": endpoint.secret.is_some(),
        "description": endpoint.description,
        "retry_schedule": endpoint.retry_schedule.as_ref().map(ToString::to_string),
        "max_in_flight": endpoint.max_in_flight.get(),
        "disabled_reason": endpoint.disabled_reason,
        "is_primary": endpoint.is_primary,
        "created_at": super::format_millis(endpoint.created_at.timestamp_millis()),
        "updated_at": super::format_millis(endpoint.updated_at.timestamp_millis()),
    }) else {
        unreachable!("json! of an object is an object")
    };
    map
}

/// The response to a create or change: the endpoint, its warnings, and the Standard Webhooks form
/// of a secret set by this very request (the only time it is shown).
fn saved_json(endpoint: &Endpoint, input: &EndpointInput) -> Value {
    let mut map = endpoint_json(endpoint);
    if let (Some(Some(_)), Some(secret)) = (&input.patch.secret, &endpoint.secret) {
        map.insert("standard_webhooks_secret".into(), json!(standard_webhooks_secret(secret.as_bytes())));
    }
    map.insert("warnings".into(), json!(input.warnings));
    Value::Object(map)
}

fn settings_json(endpoint: Option<&Endpoint>) -> Value {
    match endpoint {
        Some(e) => json!({
            "url": e.url,
            "events": e.events.to_string(),
            "active": e.active,
            "has_secret": e.secret.is_some(),
            "standard_webhooks_secret": e.secret.as_ref().map(|s| standard_webhooks_secret(s.as_bytes())),
        }),
        None => {
            json!({"url": "", "events": "", "active": false, "has_secret": false, "standard_webhooks_secret": null})
        }
    }
}

async fn get_settings(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(settings_json(state.store.primary_endpoint().await?.as_ref())))
}

/// PUT changes the fields it names; an empty `url` removes the primary endpoint (see
/// `endpoint_input::save_settings`).
async fn put_settings(State(state): State<AppState>, _: Admin, JsonBody(body): JsonBody) -> ApiResult<Json<Value>> {
    match endpoint_input::save_settings(&state.store, state.settings.policy, &body).await {
        Ok(SavedSettings::Removed) => Ok(Json(settings_json(None))),
        Ok(SavedSettings::Saved(endpoint, input)) => {
            let mut out = settings_json(Some(&endpoint));
            out["warnings"] = json!(input.warnings);
            Ok(Json(out))
        }
        Err(SaveError::Invalid(errors)) => Err(ApiError::invalid(errors)),
        Err(SaveError::Store(err)) => Err(err.into()),
    }
}

async fn list_endpoints(State(state): State<AppState>, _: Admin, params: Params) -> ApiResult<Json<Value>> {
    let page = state.store.list_endpoints(params.page()?).await?;
    let items: Vec<Value> = page.items.iter().map(|e| Value::Object(endpoint_json(e))).collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})))
}

async fn create_endpoint(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let input = parse_endpoint(&state, &body, ENDPOINT_SHAPE).await?;
    let spec =
        EndpointSpec::from_patch(input.patch.clone()).ok_or_else(|| ApiError::invalid_field("url", "is required"))?;
    let endpoint = state.store.create_endpoint(spec).await?;
    Ok((StatusCode::CREATED, Json(saved_json(&endpoint, &input))))
}

async fn get_endpoint(State(state): State<AppState>, _: Admin, PathId(id): PathId) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Object(endpoint_json(&state.store.get_endpoint(&id).await?))))
}

async fn update_endpoint(
    State(state): State<AppState>,
    _: Admin,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    state.store.get_endpoint(&id).await?;
    let input = parse_endpoint(&state, &body, ENDPOINT_SHAPE).await?;
    let endpoint = state.store.update_endpoint(&id, input.patch.clone()).await?;
    Ok(Json(saved_json(&endpoint, &input)))
}

async fn delete_endpoint(State(state): State<AppState>, _: Admin, PathId(id): PathId) -> ApiResult<StatusCode> {
    state.store.delete_endpoint(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn retry_failed(
    State(state): State<AppState>,
    _: Admin,
    PathId(id): PathId,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let count = state.store.retry_failed(&id, chrono::Utc::now().timestamp_millis()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"retried": count}))))
}

async fn test_primary(
    State(state): State<AppState>,
    _: Admin,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Json<Value>> {
    let primary = state.store.primary_endpoint().await?;
    run_test(&state, primary.as_ref(), &body).await
}

async fn test_endpoint(
    State(state): State<AppState>,
    _: Admin,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Json<Value>> {
    let endpoint = state.store.get_endpoint(&id).await?;
    run_test(&state, Some(&endpoint), &body).await
}

/// `{"url", "secret"}` in the body test those values before they are saved (see
/// `endpoint_input::test_target`).
async fn run_test(state: &AppState, saved: Option<&Endpoint>, body: &Value) -> ApiResult<Json<Value>> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (url, secrets) = endpoint_input::test_target(saved, body, now).map_err(ApiError::invalid)?;
    let target = TestTarget { endpoint_id: saved.map(|e| e.id.as_str()), url: &url, secrets };
    let result = send_test(&state.store, &state.sender, &state.settings.site_url, target).await?;
    Ok(Json(json!({
        "ok": result.ok,
        "status_code": result.status_code,
        "body": result.body,
        "error": result.error,
        "duration_ms": result.duration_ms,
        "delivery_id": result.delivery_id,
    })))
}
