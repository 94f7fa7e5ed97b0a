//! Errors as the API answers them: `{"error": {"code", "message", "fields"}}` with the right status.
//!
//! Every error becomes a response here and nowhere else. Client errors carry a stable code and a
//! message a person can act on; internal errors answer an opaque 500 and are logged with their cause.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use estate_crm_domain::FieldErrors;
use estate_crm_store::{ErrorKind, StoreError};
use serde_json::json;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: BTreeMap<String, String>,
    /// Seconds for the `Retry-After` header, when the client should try again later.
    retry_after: Option<u32>,
}

/// How long a client is told to wait before sending again while the database is unavailable. The
/// store tries the database again every half second, so the next try usually finds it if it is back.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), fields: BTreeMap::new(), retry_after: None }
    }

    /// 400: the body is not valid JSON.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    /// 401: no token or an unknown one.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid API token in the header Authorization: Bearer <token>",
        )
    }

    /// 403: the user's role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such record.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this path does not accept that method")
    }

    /// 413: the body is too large.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large: at most 1 MiB (32 MiB for bulk requests, 16 KiB for the public form)",
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the body as {expected} with a matching Content-Type header"),
        )
    }

    /// 422: field values are invalid.
    pub fn invalid(errors: FieldErrors) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", summary(&errors));
        error.fields = errors.fields().clone();
        error
    }

    /// 422 for one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid(FieldErrors::single(field, message))
    }

    /// 409: a unique value is taken.
    pub fn conflict(errors: FieldErrors) -> Self {
        let mut error = Self::new(StatusCode::CONFLICT, "conflict", summary(&errors));
        error.fields = errors.fields().clone();
        error
    }

    /// 429: too many requests.
    pub fn rate_limited() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; wait a minute and try again")
    }

    /// 500, logged with its cause; the client learns nothing of the internals.
    pub fn internal(err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(err), "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "something went wrong on the server; it was logged")
    }

    /// 503 with `Retry-After`: the database is unreachable. Nothing a client sent caused it, so the
    /// same request may be sent again.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        error.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECS);
        error
    }
}

fn summary(errors: &FieldErrors) -> String {
    match errors.fields().len() {
        1 => format!("{errors}"),
        n => format!("{n} fields are invalid: {errors}"),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err.kind() {
            ErrorKind::NotFound => ApiError::not_found(err.to_string()),
            ErrorKind::Invalid(errors) => ApiError::invalid(errors.clone()),
            ErrorKind::Conflict(errors) => ApiError::conflict(errors.clone()),
            // Not logged one by one: the store says once when the database goes and comes back.
            ErrorKind::Unavailable => ApiError::unavailable(UNAVAILABLE_MESSAGE),
            _ => ApiError::internal(&err),
        }
    }
}

/// What a client is told while the database is unavailable. A change answered this way was not
/// acknowledged: it may be sent again (a create sent again after a connection broke mid-commit may
/// exist twice; a contact's unique email answers 409 then).
pub const UNAVAILABLE_MESSAGE: &str =
    "the server cannot reach its database right now; send the request again after the Retry-After delay";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message, "fields": self.fields}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
