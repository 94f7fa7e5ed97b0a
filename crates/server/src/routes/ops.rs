//! Operations: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::{AppState, EndpointLabel};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(|| async { Json(crate::openapi::document()) }))
}

/// How long `/readyz` waits for the database before answering not ready: a load balancer's probe
/// gets its answer in time even when the database's host stopped answering packets.
const READY_WAIT: Duration = Duration::from_secs(2);

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(READY_WAIT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "not ready");
            Err(ApiError::unavailable("not ready: the database does not answer"))
        }
        Err(_) => Err(ApiError::unavailable("not ready: the database did not answer within 2 s")),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.pending_counts().await {
        Ok(counts) => {
            state.metrics.queue_depth.clear();
            for (endpoint, count) in counts {
                state.metrics.queue_depth.get_or_create(&EndpointLabel { endpoint }).set(count as i64);
            }
        }
        Err(err) => tracing::warn!(error = %err, "could not count pending deliveries for /metrics"),
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, [(CONTENT_TYPE, "text/plain")], String::new());
    }
    (StatusCode::OK, [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}
