//! The HTTP API: each resource's routes in its own file, merged here.

mod deliveries;
mod events;
mod forms;
mod ops;
mod records;
mod users;
mod webhooks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::extract::JSON_LIMIT;
use crate::state::{AppState, RequestLabel};

/// The whole API, and the web app's pages beside it (`web`, a router with its own state).
pub fn router(state: AppState, web: Router) -> Router {
    let api = Router::new()
        .merge(records::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(deliveries::router())
        .merge(users::router());
    Router::new()
        .nest("/api/v1", api)
        .merge(forms::router())
        .merge(ops::router())
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(middleware::from_fn(crate::drain::drain_unread_body))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
        .merge(web)
}

/// Unknown paths: the API's JSON 404, or the web app's page for a browser asking for HTML outside
/// `/api/`.
async fn not_found(request: Request) -> Response {
    let wants_html = request
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html && !request.uri().path().starts_with("/api/") {
        return estate_crm_web::not_found_html();
    }
    ApiError::not_found("there is nothing at this path; the API lives under /api/v1/").into_response()
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
