//! Pages for what went wrong: not found, forbidden, too many tries, the database out of reach (503),
//! and the opaque 500 (whose cause is logged, never shown).

use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use estate_crm_store::{ErrorKind, StoreError};
use maud::html;

use super::{Section, shell};
use crate::session::Visitor;

/// A page with a status, a heading and a sentence.
pub fn status(code: StatusCode, title: &str, message: &str) -> Response {
    page(code, None, title, message)
}

fn page(code: StatusCode, visitor: Option<&Visitor>, title: &str, message: &str) -> Response {
    let body = html! {
        h1 { (title) }
        p { (message) }
        p { a href="/" { "Back to the dashboard" } }
    };
    (code, shell(title, visitor, Section::Other, body)).into_response()
}

/// 403 with the reason.
pub fn forbidden(visitor: Option<&Visitor>, message: &str) -> Response {
    page(StatusCode::FORBIDDEN, visitor, "Not allowed", message)
}

/// 404.
pub fn not_found(visitor: Option<&Visitor>) -> Response {
    page(StatusCode::NOT_FOUND, visitor, "Not found", "There is nothing at this address; it may have been deleted.")
}

/// The 404 page for a path the server has nothing at, for browsers, with the pages' headers.
pub fn not_found_html() -> Response {
    crate::with_security_headers(not_found(None))
}

/// 500: logs the cause and shows nothing of it.
pub fn internal(err: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %err, "a page failed");
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not finish this. Nothing was changed; try again in a moment.",
    )
}

/// 503 while the database cannot be reached: nothing the visitor did, and it passes by itself. Not
/// logged one by one (the store says once when the database goes and when it is back).
pub fn unavailable(visitor: Option<&Visitor>) -> Response {
    let mut response = page(
        StatusCode::SERVICE_UNAVAILABLE,
        visitor,
        "Back in a moment",
        "The server cannot reach its database right now. Try again in a few seconds; if you were saving \
         something, check whether it was saved before sending it again.",
    );
    response.headers_mut().insert(RETRY_AFTER, 1.into());
    response
}

/// A store error where no form can show it: the 503 page while the database cannot be reached,
/// else the opaque 500.
pub fn failed(err: &StoreError) -> Response {
    match err.kind() {
        ErrorKind::Unavailable => unavailable(None),
        _ => internal(err),
    }
}

/// A store error as a page: not found is a 404, the database out of reach a 503, anything else a
/// 500 (validation errors are shown on their forms before this is reached).
pub fn store(visitor: &Visitor, err: &StoreError) -> Response {
    match err.kind() {
        ErrorKind::NotFound => not_found(Some(visitor)),
        ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => {
            page(StatusCode::UNPROCESSABLE_ENTITY, Some(visitor), "Not saved", &errors.to_string())
        }
        ErrorKind::Unavailable => unavailable(Some(visitor)),
        _ => internal(err),
    }
}
