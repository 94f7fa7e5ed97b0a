//! What Zapier, Make and developers' tools call: REST Hooks (`/hooks`), sample data for mapping
//! fields, who a token belongs to (`/me`), and triggering a sample of an event.
//!
//! A REST hook is an ordinary endpoint made for one event, with `source` `rest_hook`: it is
//! delivered, retried, logged and checked for safe destinations exactly as any endpoint; only a
//! 410 from its target deletes it instead of pausing it (in the store, where 410s are handled).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight};
use estate_crm_domain::{EventName, FieldErrors, sample_data};
use estate_crm_store::{Endpoint, EndpointSource, EndpointSpec, EventFilterQuery, PageRequest};
use estate_crm_webhooks::{TargetUrl, TestResult, TestTarget, send_sample};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::webhooks::{HTTP_WARNING, destination_allowed};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, CurrentUser, JsonBody, PathId};
use crate::state::AppState;

/// How many recent events `GET /hooks/samples/{event}` answers: enough for a mapping screen.
const SAMPLES: usize = 3;
/// The most endpoints one trigger sends to at once; the rest wait for a free slot.
const TRIGGER_CONCURRENCY: usize = 16;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/hooks", post(subscribe))
        .route("/hooks/{id}", delete(unsubscribe))
        .route("/hooks/samples/{event}", get(samples))
        .route("/me", get(me))
        .route("/event-types/{event}/trigger", post(trigger))
}

/// `POST /hooks {"target_url", "event"}`: a new endpoint for that one event.
async fn subscribe(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    };
    let mut errors = FieldErrors::new();
    for name in body.keys().filter(|k| !["target_url", "event"].contains(&k.as_str())) {
        errors.add(name, "is not a known field; a REST hook takes target_url and event");
    }
    let event = match body.get("event").map(|v| v.as_str().map(str::trim)) {
        None => Err("is required".to_owned()),
        Some(Some(name)) => subscribable_event(name),
        Some(None) => Err("must be a string".to_owned()),
    };
    let event = event.map_err(|m| errors.add("event", m)).ok();
    let target = match body.get("target_url").map(Value::as_str) {
        None => Err("is required".to_owned()),
        Some(Some(text)) => TargetUrl::parse(text.trim()).map_err(|e| e.to_string()),
        Some(None) => Err("must be a string".to_owned()),
    };
    let target = match target {
        Ok(url) => match destination_allowed(&state, &url).await {
            Ok(()) => Some(url),
            Err(problem) => {
                errors.add("target_url", problem);
                None
            }
        },
        Err(problem) => {
            errors.add("target_url", problem);
            None
        }
    };
    let (Some(event), Some(target)) = (event, target) else {
        return Err(ApiError::invalid(errors));
    };
    errors.into_result(()).map_err(ApiError::invalid)?;
    let spec = EndpointSpec {
        url: target.as_str().to_owned(),
        events: EventFilter::Only(vec![event]),
        secret: None,
        active: true,
        description: Some(format!("REST hook for {event}")),
        retry_schedule: None,
        max_in_flight: MaxInFlight::DEFAULT,
        source: EndpointSource::RestHook,
        format: BodyFormat::Json,
    };
    let endpoint = state.store.create_endpoint(spec).await?;
    let mut out = hook_json(&endpoint, event);
    out["warnings"] = json!(if target.is_plain_http() { vec![HTTP_WARNING] } else { vec![] });
    Ok((StatusCode::CREATED, Json(out)))
}

fn subscribable_event(name: &str) -> Result<EventName, String> {
    match EventFilter::parse(&Value::String(name.to_owned()))? {
        EventFilter::Only(events) if events.len() == 1 => Ok(events[0]),
        _ => Err("must name one event; a REST hook subscribes to a single event".to_owned()),
    }
}

fn hook_json(endpoint: &Endpoint, event: EventName) -> Value {
    json!({
        "id": endpoint.id,
        "target_url": endpoint.url,
        "event": event.as_str(),
        "active": endpoint.active,
        "created_at": super::format_millis(endpoint.created_at.timestamp_millis()),
    })
}

/// `DELETE /hooks/{id}`: only a REST hook; the endpoints API manages the others.
async fn unsubscribe(State(state): State<AppState>, _: Admin, PathId(id): PathId) -> ApiResult<StatusCode> {
    let endpoint = state.store.get_endpoint(&id).await.map_err(|_| no_hook())?;
    if endpoint.source != EndpointSource::RestHook {
        return Err(no_hook());
    }
    state.store.delete_endpoint(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn no_hook() -> ApiError {
    ApiError::not_found("no REST hook has this id")
}

/// `GET /hooks/samples/{event}`: the `data` of the newest few events of that kind, newest first, or
/// the catalogue's fake one while there is none, so a mapping screen always has fields to show.
async fn samples(State(state): State<AppState>, _: Admin, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let event = EventName::parse(&name).ok_or_else(|| unknown_event(&name))?;
    let recent = state
        .store
        .list_events(EventFilterQuery { event: Some(event), since: None }, PageRequest { limit: SAMPLES, cursor: None })
        .await?;
    let mut items: Vec<Value> = recent
        .items
        .iter()
        .filter_map(|e| serde_json::from_slice::<Value>(&e.body).ok())
        .filter_map(|mut body| body.get_mut("data").map(Value::take))
        .collect();
    if items.is_empty() {
        items.push(sample_data(event));
    }
    Ok(Json(Value::Array(items)))
}

fn unknown_event(name: &str) -> ApiError {
    let names: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    let shown: String = name.chars().take(100).collect();
    ApiError::not_found(format!("{shown:?} is not an event; events are {}", names.join(", ")))
}

/// `GET /me`: who the token belongs to, for the "test connection" step of Zapier and Make.
async fn me(CurrentUser(user): CurrentUser) -> Json<Value> {
    Json(json!({"id": user.id, "name": user.name, "email": user.email, "role": user.role.as_str()}))
}

/// `POST /event-types/{event}/trigger`: a sample of the event, sent at once to every active endpoint
/// subscribed to it, as the test button sends; answers each endpoint's result.
async fn trigger(State(state): State<AppState>, _: Admin, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let event = EventName::parse(&name).ok_or_else(|| unknown_event(&name))?;
    if !event.is_subscribable() {
        return Err(ApiError::invalid_field(
            "event",
            "webhook.test has no subscribers; use the test button (POST /api/v1/webhooks/{id}/test)",
        ));
    }
    let endpoints = subscribed_endpoints(&state, event).await?;
    let mut sends = JoinSet::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(TRIGGER_CONCURRENCY));
    for (index, endpoint) in endpoints.iter().enumerate() {
        let (state, endpoint, slots) = (state.clone(), endpoint.clone(), slots.clone());
        sends.spawn(async move {
            let _slot = slots.acquire_owned().await;
            (index, send_to(&state, &endpoint, event).await)
        });
    }
    let mut results: Vec<Option<Value>> = vec![None; endpoints.len()];
    while let Some(joined) = sends.join_next().await {
        let (index, result) = joined.map_err(|e| ApiError::internal(&e))?;
        let endpoint = &endpoints[index];
        results[index] = Some(match result {
            Ok(r) => json!({
                "endpoint_id": endpoint.id, "url": endpoint.url, "ok": r.ok, "status_code": r.status_code,
                "body": r.body, "error": r.error, "duration_ms": r.duration_ms, "delivery_id": r.delivery_id,
            }),
            Err(err) => return Err(err),
        });
    }
    Ok(Json(json!({"event": event.as_str(), "results": results.into_iter().flatten().collect::<Vec<_>>()})))
}

async fn send_to(state: &AppState, endpoint: &Endpoint, event: EventName) -> ApiResult<TestResult> {
    let url = match TargetUrl::parse(&endpoint.url) {
        Ok(url) => url,
        Err(err) => {
            return Ok(TestResult {
                ok: false,
                status_code: None,
                body: String::new(),
                error: Some(format!("the endpoint's URL is not valid: {err}")),
                duration_ms: 0,
                delivery_id: String::new(),
            });
        }
    };
    let target = TestTarget {
        endpoint_id: Some(&endpoint.id),
        url: &url,
        secrets: endpoint.signing_secrets(chrono::Utc::now().timestamp_millis()),
        format: endpoint.format,
    };
    Ok(send_sample(&state.store, &state.sender, &state.settings.site_url, target, event).await?)
}

async fn subscribed_endpoints(state: &AppState, event: EventName) -> ApiResult<Vec<Endpoint>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = state.store.list_endpoints(PageRequest { limit: 1000, cursor }).await?;
        out.extend(page.items.into_iter().filter(|e| e.active && e.events.matches(event)));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out.reverse(); // oldest first, as they were made
    Ok(out)
}
