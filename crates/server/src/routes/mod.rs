//! The HTTP API: each resource's routes in its own file, merged here.

mod deliveries;
mod events;
mod forms;
mod hubspot;
mod ops;
mod records;
mod users;
mod webhooks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::error::ApiError;
use crate::extract::JSON_LIMIT;
use crate::state::{AppState, RequestLabel};

/// The whole API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(records::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(deliveries::router())
        .merge(users::router())
        .merge(hubspot::router());
    Router::new()
        .nest("/api/v1", api)
        .merge(forms::router())
        .merge(ops::router())
        .fallback(|| async { ApiError::not_found("there is nothing at this path; the API lives under /api/v1/") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(middleware::from_fn(crate::drain::drain_unread_body))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    state.metrics.requests.get_or_create(&RequestLabel { method, status }).inc();
    response
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds.
pub(crate) fn format_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
