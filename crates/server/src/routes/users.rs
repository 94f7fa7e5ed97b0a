//! Users and tokens. A token is shown once, in the answer that makes it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use estate_crm_domain::FieldErrors;
use estate_crm_store::credentials::{self, string_field};
use estate_crm_store::{NewUser, Role};
use serde_json::{Value, json};

use crate::auth::{hash_password, hash_token, new_token};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Caller, JsonBody, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", post(create_user))
        .route("/tokens", post(create_token))
        .route("/tokens/{id}", delete(delete_token))
}

fn refuse_unknown(body: &Value, known: &[&str], errors: &mut FieldErrors) -> ApiResult<()> {
    let Value::Object(map) = body else {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    };
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.add(key, "is not a known field");
    }
    Ok(())
}

async fn create_user(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let input = credentials::parse_user_input(&body).map_err(ApiError::invalid)?;
    let password_hash = input.password.as_deref().map(hash_password).transpose()?;
    let new = NewUser { name: input.name, email: input.email, role: input.role, password_hash };
    let user = state.store.create_user(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": user.id, "name": user.name, "email": user.email, "role": user.role.as_str()})),
    ))
}

/// An administrator makes tokens for anyone; any user for themself.
async fn create_token(
    State(state): State<AppState>,
    Caller(actor): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut errors = FieldErrors::new();
    refuse_unknown(&body, &["user_id", "name"], &mut errors)?;
    let user_id = string_field(&body, "user_id", 100, &mut errors).unwrap_or_else(|| actor.user_id.clone());
    let name = string_field(&body, "name", 200, &mut errors).unwrap_or_else(|| "API token".to_owned());
    errors.into_result(()).map_err(ApiError::invalid)?;
    if actor.role != Role::Admin && user_id != actor.user_id {
        return Err(ApiError::forbidden("only an administrator may make tokens for other users"));
    }
    let token = new_token();
    let info = state.store.create_token(&user_id, &name, &hash_token(&token)).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": info.id, "user_id": info.user_id, "name": info.name, "token": token}))))
}

async fn delete_token(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let owner = (actor.role != Role::Admin).then_some(actor.user_id.as_str());
    state.store.delete_token(&id, owner).await?;
    state.auth.forget_all();
    Ok(StatusCode::NO_CONTENT)
}
