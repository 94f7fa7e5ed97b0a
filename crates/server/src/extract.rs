//! Extractors: the caller's identity, and request bodies and queries that fail in the API's error shape.

use std::collections::HashMap;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use bytes::Bytes;
use estate_crm_store::{Actor, PageRequest, Role, User};
use serde_json::Value;

use crate::auth::Authenticator;
use crate::error::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl<S> FromRequestParts<S> for Caller
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        Ok(Caller(Actor { user_id: user.id, role: user.role }))
    }
}

/// The user the bearer token belongs to, whole (for `GET /api/v1/me`).
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl<S> FromRequestParts<S> for CurrentUser
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let user = Authenticator::from_ref(state).authenticate(token).await?.ok_or_else(ApiError::unauthorized)?;
        Ok(CurrentUser(user))
    }
}

/// The `{id}` of a path. An id that cannot even be read (not UTF-8) names nothing: 404, in the API's
/// error shape rather than the framework's plain text.
#[derive(Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| PathId(id))
            .map_err(|_| ApiError::not_found("no record has this id"))
    }
}

/// An authenticated administrator; anyone else gets 403.
#[derive(Debug, Clone)]
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(actor) = Caller::from_request_parts(parts, state).await?;
        if actor.role != Role::Admin {
            return Err(ApiError::forbidden("only an administrator may do this"));
        }
        Ok(Admin)
    }
}

/// The largest JSON body, except where a route says otherwise.
pub const JSON_LIMIT: usize = 1024 * 1024;

/// A JSON body: 415 without a JSON content type, 413 over the route's limit, 400 when it does not parse.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body that claims to be JSON, read but not yet parsed, for a handler that decides when to
/// parse it: 415 without a JSON content type, 413 over the route's limit.
#[derive(Debug)]
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::unsupported_media_type("JSON (application/json)"));
        }
        read_body(req, state).await.map(JsonBytes)
    }
}

impl JsonBytes {
    /// Parses the body; 400 when it is not JSON.
    pub fn parse(&self) -> Result<Value, ApiError> {
        parse_json(&self.0)
    }
}

/// Like [`JsonBody`], but an empty body (with or without a content type) is `{}`.
#[derive(Debug)]
pub struct OptionalJsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(CONTENT_TYPE).cloned();
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(Value::Object(Default::default())));
        }
        if !is_json(content_type.as_ref()) {
            return Err(ApiError::unsupported_media_type("JSON (application/json)"));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

pub(crate) fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Reads the body within the limit the route set with `DefaultBodyLimit`.
pub(crate) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large()
        } else {
            ApiError::malformed(format!("the request body could not be read: {}", rejection.body_text()))
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let what = match err.classify() {
            serde_json::error::Category::Eof => "the JSON body ends too early",
            serde_json::error::Category::Io | serde_json::error::Category::Syntax => "the body is not valid JSON",
            serde_json::error::Category::Data => "the JSON body could not be read",
        };
        ApiError::malformed(format!("{what} (line {}, column {})", err.line(), err.column()))
    })
}

/// Query parameters as strings, so that every bad value answers in the API's error shape.
#[derive(Debug)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::malformed("the query string could not be read"))?;
        Ok(Params(map))
    }
}

impl Params {
    /// `?limit=` (1 to 1000, default 50) and `?cursor=`.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.0.get("limit") {
            None => 50,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| ApiError::invalid_field("limit", "must be a whole number from 1 to 1000"))?,
        };
        let cursor = self.0.get("cursor").filter(|c| !c.is_empty()).cloned();
        Ok(PageRequest { limit, cursor })
    }

    /// A parameter, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}
