//! Settings → Users (list, add, reset a password) and `/account` (one's own password and tokens).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use estate_crm_domain::FieldErrors;
use estate_crm_store::credentials::{self, check_password, hash_token, new_token, verify_password};
use estate_crm_store::{BUILT_IN_ADMIN_EMAIL, ErrorKind, StoreError, User};
use maud::{Markup, html};
use serde_json::json;

use super::{Flash, Input, Section, Tab, csrf_field, error_page, flash, shell};
use crate::WebState;
use crate::session::{AdminForm, AdminVisitor, ChangeForm, Visitor};

/// Hashes a password off the async threads.
async fn hash_password(password: String) -> Result<String, Response> {
    match tokio::task::spawn_blocking(move || credentials::hash_password(&password)).await {
        Ok(Ok(hash)) => Ok(hash),
        Ok(Err(err)) => Err(error_page::internal(&err)),
        Err(err) => Err(error_page::internal(&err)),
    }
}

/// The add-user form's values.
#[derive(Debug, Default)]
struct NewUserValues {
    name: String,
    email: String,
    role: String,
}

struct UsersView {
    values: NewUserValues,
    errors: FieldErrors,
    message: Option<Flash>,
}

fn users_page(visitor: &Visitor, users: &[User], view: UsersView) -> Markup {
    let UsersView { values, errors, message } = view;
    let role = if values.role.is_empty() { "agent" } else { values.role.as_str() };
    let role_error = errors.fields().get("role");
    let body = html! {
        h1 { "Users" }
        (flash(message.as_ref()))
        div.table-wrap {
            table #users {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Password" } } }
                tbody {
                    @for user in users {
                        tr data-user-id=(user.id) {
                            td { (user.name) }
                            td {
                                (user.email)
                                @if user.email == BUILT_IN_ADMIN_EMAIL {
                                    br;
                                    span.sub { "Built in: owns the server's start-up API token. It signs in only once given a password here." }
                                }
                            }
                            td { span class=(format!("badge role-{}", user.role.as_str())) { (user.role.as_str()) } }
                            td {
                                details {
                                    summary { "Reset password" }
                                    form.inline method="post" action=(format!("/settings/users/{}/password", user.id)) {
                                        (csrf_field(visitor))
                                        @let id = format!("f-new_password-{}", user.id);
                                        label for=(id) { "New password for " (user.name) }
                                        input id=(id) name="new_password" type="password" autocomplete="new-password" minlength="8" required;
                                        button.secondary type="submit" { "Reset password" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add a user" }
        form.card method="post" novalidate action="/settings/users" {
            (csrf_field(visitor))
            (Input::new("name", "Name", &values.name).required().render(&errors))
            (Input::new("email", "Email", &values.email).kind("email").required().render(&errors))
            div.field {
                label for="f-role" { "Role" }
                select #f-role name="role" aria-invalid=[role_error.map(|_| "true")] aria-describedby=[role_error.map(|_| "f-role-error")] {
                    option value="agent" selected[role == "agent"] { "agent: their own contacts and work" }
                    option value="admin" selected[role == "admin"] { "admin: everything, settings included" }
                }
                (super::field_error("role", &errors))
            }
            (Input::new("password", "Password", "").kind("password").required().autocomplete("new-password")
                .hint("At least 8 characters; they can change it under their account.").render(&errors))
            div.actions { button.primary type="submit" { "Add user" } }
        }
    };
    shell("Users", Some(visitor), Section::Settings(Tab::Users), body)
}

async fn render_users(state: &WebState, visitor: &Visitor, status: StatusCode, view: UsersView) -> Response {
    match state.store().list_users().await {
        Ok(users) => (status, users_page(visitor, &users, view)).into_response(),
        Err(err) => error_page::store(visitor, &err),
    }
}

/// `GET /settings/users`.
pub async fn list(State(state): State<WebState>, AdminVisitor(visitor): AdminVisitor) -> Response {
    let view = UsersView { values: NewUserValues::default(), errors: FieldErrors::new(), message: None };
    render_users(&state, &visitor, StatusCode::OK, view).await
}

fn field_errors(err: &StoreError) -> Option<FieldErrors> {
    match err.kind() {
        ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => Some(errors.clone()),
        _ => None,
    }
}

/// `POST /settings/users`: the same checks as `POST /api/v1/users`; a password is required here,
/// since the user is made to sign in.
pub async fn add(State(state): State<WebState>, AdminForm { visitor, form }: AdminForm) -> Response {
    let values = NewUserValues {
        name: form.get("name").to_owned(),
        email: form.get("email").to_owned(),
        role: form.get("role").to_owned(),
    };
    let password = form.get("password");
    let body = json!({"name": values.name, "email": values.email, "role": values.role, "password": password});
    let refused = |errors: FieldErrors, values: NewUserValues| UsersView {
        values,
        errors,
        message: Some(Flash::Error("Not added: correct the fields marked below.".into())),
    };
    let input = match credentials::parse_user_input(&body) {
        Ok(_) if password.is_empty() => {
            let view = refused(FieldErrors::single("password", "is required"), values);
            return render_users(&state, &visitor, StatusCode::UNPROCESSABLE_ENTITY, view).await;
        }
        Ok(input) => input,
        Err(errors) => {
            return render_users(&state, &visitor, StatusCode::UNPROCESSABLE_ENTITY, refused(errors, values)).await;
        }
    };
    let new = match tokio::task::spawn_blocking(move || input.into_new_user()).await {
        Ok(Ok(new)) => new,
        Ok(Err(err)) => return error_page::internal(&err),
        Err(err) => return error_page::internal(&err),
    };
    match state.store().create_user(new).await {
        Ok(user) => {
            let message = Some(Flash::Ok(format!("Added {} ({}).", user.name, user.role.as_str())));
            let view = UsersView { values: NewUserValues::default(), errors: FieldErrors::new(), message };
            render_users(&state, &visitor, StatusCode::OK, view).await
        }
        Err(err) => match field_errors(&err) {
            Some(errors) => {
                render_users(&state, &visitor, StatusCode::UNPROCESSABLE_ENTITY, refused(errors, values)).await
            }
            None => error_page::store(&visitor, &err),
        },
    }
}

/// `POST /settings/users/{id}/password`: sets a new password and ends that user's sessions (but
/// the administrator's own, when they reset their own).
pub async fn reset_password(
    State(state): State<WebState>,
    Path(id): Path<String>,
    AdminForm { visitor, form }: AdminForm,
) -> Response {
    let password = form.get("new_password").to_owned();
    let empty = NewUserValues::default;
    if let Err(message) = check_password(&password) {
        let view = UsersView {
            values: empty(),
            errors: FieldErrors::new(),
            message: Some(Flash::Error(format!("Not reset: the new password {message}."))),
        };
        return render_users(&state, &visitor, StatusCode::UNPROCESSABLE_ENTITY, view).await;
    }
    let hash = match hash_password(password).await {
        Ok(hash) => hash,
        Err(response) => return response,
    };
    let keep = (id == visitor.user.id).then_some(visitor.session_hash.as_str());
    if let Err(err) = state.store().set_password(&id, &hash, keep).await {
        return error_page::store(&visitor, &err);
    }
    let message =
        Some(Flash::Ok("Password reset. That user's sessions have ended; they sign in with the new password.".into()));
    render_users(&state, &visitor, StatusCode::OK, UsersView { values: empty(), errors: FieldErrors::new(), message })
        .await
}

struct AccountView {
    errors: FieldErrors,
    message: Option<Flash>,
    /// A token just made, shown this once.
    new_token: Option<String>,
}

async fn render_account(state: &WebState, visitor: &Visitor, status: StatusCode, view: AccountView) -> Response {
    let tokens = match state.store().list_tokens(&visitor.user.id).await {
        Ok(tokens) => tokens,
        Err(err) => return error_page::store(visitor, &err),
    };
    let errors = &view.errors;
    let body = html! {
        h1 { "Your account" }
        p { (visitor.user.name) " · " (visitor.user.email) " · " (visitor.user.role.as_str()) }
        (flash(view.message.as_ref()))
        @if let Some(token) = &view.new_token {
            div.card.token-once role="status" {
                p { strong { "Your new token, shown this once:" } " copy it now; only its name is kept in view." }
                label for="new-token" { "New token" }
                input #new-token type="text" readonly value=(token);
            }
        }
        h2 { "Change password" }
        form.card method="post" novalidate action="/account/password" {
            (csrf_field(visitor))
            (Input::new("current_password", "Current password", "").kind("password").required().autocomplete("current-password").render(errors))
            (Input::new("new_password", "New password", "").kind("password").required().autocomplete("new-password")
                .hint("At least 8 characters. Your other sessions end when it changes.").render(errors))
            div.actions { button.primary type="submit" { "Change password" } }
        }
        h2 { "API tokens" }
        p { "A token lets a program use the API as you: send it as " code { "Authorization: Bearer <token>" } "." }
        @if tokens.is_empty() { p.empty { "You have no token." } } @else {
            div.table-wrap {
                table #tokens {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for token in &tokens {
                            tr data-token-id=(token.id) {
                                td { (token.name) }
                                td.mono { (token.id) }
                                td {
                                    form method="post" action=(format!("/account/tokens/{}/delete", token.id)) {
                                        (csrf_field(visitor))
                                        button.danger.small type="submit" aria-label=(format!("Delete token {}", token.name)) { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        form.card method="post" novalidate action="/account/tokens" {
            (csrf_field(visitor))
            (Input::new("name", "Token name", "").hint("What uses it, such as \"website import\".").render(errors))
            div.actions { button.secondary type="submit" { "Create token" } }
        }
    };
    (status, shell("Your account", Some(visitor), Section::Account, body)).into_response()
}

/// `GET /account`.
pub async fn account(State(state): State<WebState>, visitor: Visitor) -> Response {
    let view = AccountView { errors: FieldErrors::new(), message: None, new_token: None };
    render_account(&state, &visitor, StatusCode::OK, view).await
}

/// `POST /account/password`: checks the current password (throttled like signing in), sets the new
/// one and ends every other session of the user at once.
pub async fn change_password(State(state): State<WebState>, ChangeForm { visitor, form }: ChangeForm) -> Response {
    let (current, new) = (form.get("current_password").to_owned(), form.get("new_password").to_owned());
    let refuse = |errors: FieldErrors| AccountView {
        errors,
        message: Some(Flash::Error("Not changed: correct the fields marked below.".into())),
        new_token: None,
    };
    let throttle = &state.inner.throttle;
    if let Some(wait) = throttle.account_wait(&visitor.user.email, std::time::Instant::now()) {
        let errors = FieldErrors::single(
            "current_password",
            format!("too many wrong tries; try again in {} seconds", wait.as_secs().max(1)),
        );
        return render_account(&state, &visitor, StatusCode::TOO_MANY_REQUESTS, refuse(errors)).await;
    }
    let stored = match state.store().user_by_id(&visitor.user.id).await {
        Ok(Some(found)) => found.password_hash,
        Ok(None) => return error_page::not_found(Some(&visitor)),
        Err(err) => return error_page::store(&visitor, &err),
    };
    let matches = match stored {
        Some(hash) => tokio::task::spawn_blocking(move || verify_password(&current, &hash)).await.unwrap_or(false),
        None => false,
    };
    if !matches {
        throttle.account_failed(&visitor.user.email, std::time::Instant::now());
        let errors = FieldErrors::single("current_password", "is not your current password");
        return render_account(&state, &visitor, StatusCode::UNPROCESSABLE_ENTITY, refuse(errors)).await;
    }
    if let Err(message) = check_password(&new) {
        return render_account(
            &state,
            &visitor,
            StatusCode::UNPROCESSABLE_ENTITY,
            refuse(FieldErrors::single("new_password", message)),
        )
        .await;
    }
    let hash = match hash_password(new).await {
        Ok(hash) => hash,
        Err(response) => return response,
    };
    if let Err(err) = state.store().set_password(&visitor.user.id, &hash, Some(&visitor.session_hash)).await {
        return error_page::store(&visitor, &err);
    }
    let message = Some(Flash::Ok("Password changed. Your other sessions have ended.".into()));
    render_account(
        &state,
        &visitor,
        StatusCode::OK,
        AccountView { errors: FieldErrors::new(), message, new_token: None },
    )
    .await
}

/// `POST /account/tokens`: a token for oneself, shown once.
pub async fn create_token(State(state): State<WebState>, ChangeForm { visitor, form }: ChangeForm) -> Response {
    let name = match form.get("name").trim() {
        "" => "API token".to_owned(),
        name if name.chars().count() <= 200 => name.to_owned(),
        _ => {
            let errors = FieldErrors::single("name", "must be at most 200 characters");
            let view =
                AccountView { errors, message: Some(Flash::Error("No token was made.".into())), new_token: None };
            return render_account(&state, &visitor, StatusCode::UNPROCESSABLE_ENTITY, view).await;
        }
    };
    let token = new_token();
    if let Err(err) = state.store().create_token(&visitor.user.id, &name, &hash_token(&token)).await {
        return error_page::store(&visitor, &err);
    }
    let message = Some(Flash::Ok(format!("Token \"{name}\" made.")));
    render_account(
        &state,
        &visitor,
        StatusCode::OK,
        AccountView { errors: FieldErrors::new(), message, new_token: Some(token) },
    )
    .await
}

/// `POST /account/tokens/{id}/delete`: one's own tokens only; it stops working at once.
pub async fn delete_token(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, .. }: ChangeForm,
) -> Response {
    if let Err(err) = state.store().delete_token(&id, Some(&visitor.user.id)).await {
        return error_page::store(&visitor, &err);
    }
    (state.inner.config.on_token_revoked)();
    let message = Some(Flash::Ok("Token deleted.".into()));
    render_account(
        &state,
        &visitor,
        StatusCode::OK,
        AccountView { errors: FieldErrors::new(), message, new_token: None },
    )
    .await
}
