//! Pages for what went wrong: not found, forbidden, too many tries, and the opaque 500 (whose cause
//! is logged, never shown).

use axum::http::StatusCode;
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

/// A store error as a page: not found is a 404, anything else a 500 (validation errors are shown
/// on their forms before this is reached).
pub fn store(visitor: &Visitor, err: &StoreError) -> Response {
    match err.kind() {
        ErrorKind::NotFound => not_found(Some(visitor)),
        ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => {
            page(StatusCode::UNPROCESSABLE_ENTITY, Some(visitor), "Not saved", &errors.to_string())
        }
        _ => internal(err),
    }
}
