//! Signing in and out, and the one-time setup of the first administrator.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::FieldErrors;
use estate_crm_store::credentials::{self, hash_token, verify_password};
use estate_crm_store::{Role, UserCredentials};
use maud::{Markup, html};
use serde_json::json;

use super::{Flash, Input, Section, error_page, flash, now_ms, shell};
use crate::WebState;
use crate::session::{self, AnonymousForm, ChangeForm, LIMITS, SESSION_COOKIE, csrf_token, login_secret, set_cookie};

/// The one message a failed sign-in gets: it does not say which of the two was wrong.
const WRONG: &str = "Wrong email or password.";

/// Checked when no user has the email, so that an unknown email takes as long as a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| credentials::hash_password("not anyone's password").unwrap_or_default());

/// `?next=` and `?code=`.
#[derive(Debug, serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this site: `/x`, never `//other.example` or `/\other.example`, and only visible
/// ASCII (a header value cannot hold more).
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\");
    if local && next.len() <= 2000 && next.bytes().all(|b| b.is_ascii_graphic()) { next } else { "/" }
}

fn login_form(csrf: &str, email: &str, next: &str, message: Option<&Flash>) -> Markup {
    let body = html! {
        div.narrow {
            h1 { "Sign in" }
            (flash(message))
            form.card method="post" novalidate action="/login" {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="next" value=(next);
                (Input::new("email", "Email", email).kind("email").required().autocomplete("username").render(&FieldErrors::new()))
                (Input::new("password", "Password", "").kind("password").required().autocomplete("current-password").render(&FieldErrors::new()))
                div.actions { button.primary type="submit" { "Sign in" } }
            }
        }
    };
    shell("Sign in", None, Section::Other, body)
}

fn with_login_cookie(cookie: Option<axum::http::HeaderValue>, status: StatusCode, page: Markup) -> Response {
    let mut response = (status, page).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let (secret, cookie) = login_secret(&headers, state.secure_cookies());
    let next = safe_next(query.next.as_deref().unwrap_or("/"));
    with_login_cookie(cookie, StatusCode::OK, login_form(&csrf_token(&secret), "", next, None))
}

/// `POST /login`: throttled per address and per account; one message for any wrong pair.
pub async fn login(State(state): State<WebState>, posted: AnonymousForm) -> Response {
    let form = &posted.form;
    let (email, password, next) = (form.get("email").trim(), form.get("password"), safe_next(form.get("next")));
    let csrf = form.get("csrf_token");
    let throttle = &state.inner.throttle;
    if let Some(wait) = throttle.wait(posted.address, email, Instant::now()) {
        let message = Flash::Error(format!(
            "Too many failed sign-ins from here or for this account. Try again in {} seconds.",
            wait.as_secs().max(1)
        ));
        return (StatusCode::TOO_MANY_REQUESTS, login_form(csrf, email, next, Some(&message))).into_response();
    }
    let found = match state.store().user_by_email(email).await {
        Ok(found) => found,
        Err(err) => return error_page::failed(&err),
    };
    let user = match check_password(found, password.to_owned()).await {
        Some(user) => user,
        None => {
            throttle.failed(posted.address, email, Instant::now());
            let message = Flash::Error(WRONG.to_owned());
            return (StatusCode::OK, login_form(csrf, email, next, Some(&message))).into_response();
        }
    };
    throttle.succeeded(posted.address, email);
    start_session(&state, &user.id, next).await
}

/// The user, if the password is theirs; argon2 runs off the async threads.
async fn check_password(found: Option<UserCredentials>, password: String) -> Option<estate_crm_store::User> {
    tokio::task::spawn_blocking(move || match found {
        Some(UserCredentials { user, password_hash: Some(hash) }) => verify_password(&password, &hash).then_some(user),
        _ => {
            verify_password(&password, &DUMMY_HASH);
            None
        }
    })
    .await
    .ok()
    .flatten()
}

/// Starts a session for a user and sends them on.
async fn start_session(state: &WebState, user_id: &str, next: &str) -> Response {
    let secret = session::new_secret();
    if let Err(err) = state.store().create_session(&hash_token(&secret), user_id, now_ms(), LIMITS).await {
        return error_page::failed(&err);
    }
    let cookie = set_cookie(SESSION_COOKIE, secret, LIMITS.absolute_ms / 1000, state.secure_cookies());
    let mut response = Redirect::to(next).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `POST /logout`: the session ends at once, here and in the database.
pub async fn logout(State(state): State<WebState>, ChangeForm { visitor, .. }: ChangeForm) -> Response {
    if let Err(err) = state.store().delete_session(&visitor.session_hash).await {
        return error_page::failed(&err);
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, String::new(), 0, state.secure_cookies()));
    response
}

/// `?code=`.
#[derive(Debug, serde::Deserialize)]
pub struct SetupQuery {
    code: Option<String>,
}

/// Whether the setup page exists for this code: the code is the one printed at start and no user
/// has a password yet.
async fn setup_open(state: &WebState, code: &str) -> Result<bool, Response> {
    let Some(expected) = &state.inner.setup_code else {
        return Ok(false);
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes())) {
        return Ok(false);
    }
    state.store().any_password_set().await.map(|set| !set).map_err(|err| error_page::failed(&err))
}

fn setup_form(csrf: &str, code: &str, name: &str, email: &str, errors: &FieldErrors) -> Markup {
    let body = html! {
        div.narrow {
            h1 { "Create the first administrator" }
            p { "This page works once: the account made here signs in to estate-crm and manages its settings and users." }
            form.card method="post" novalidate action="/setup" {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="code" value=(code);
                (Input::new("name", "Name", name).required().autocomplete("name").render(errors))
                (Input::new("email", "Email", email).kind("email").required().autocomplete("username").render(errors))
                (Input::new("password", "Password", "").kind("password").required().autocomplete("new-password")
                    .hint("At least 8 characters.").render(errors))
                div.actions { button.primary type="submit" { "Create admin" } }
            }
        }
    };
    shell("First-run setup", None, Section::Other, body)
}

/// `GET /setup?code=`: the first administrator's form, or 404 once one exists.
pub async fn setup_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(query): Query<SetupQuery>,
) -> Response {
    let code = query.code.unwrap_or_default();
    match setup_open(&state, &code).await {
        Ok(true) => {}
        Ok(false) => return error_page::not_found(None),
        Err(response) => return response,
    }
    let (secret, cookie) = login_secret(&headers, state.secure_cookies());
    with_login_cookie(cookie, StatusCode::OK, setup_form(&csrf_token(&secret), &code, "", "", &FieldErrors::new()))
}

/// `POST /setup`: makes the first administrator (through the same checks as `POST /api/v1/users`)
/// and signs them in.
pub async fn setup(State(state): State<WebState>, posted: AnonymousForm) -> Response {
    let form = &posted.form;
    let _one_at_a_time = state.inner.setup_lock.lock().await;
    match setup_open(&state, form.get("code")).await {
        Ok(true) => {}
        Ok(false) => return error_page::not_found(None),
        Err(response) => return response,
    }
    let (name, email, password) = (form.get("name"), form.get("email"), form.get("password"));
    let body = json!({"name": name, "email": email, "role": Role::Admin.as_str(), "password": password});
    let refused = |errors: &FieldErrors| {
        (StatusCode::UNPROCESSABLE_ENTITY, setup_form(form.get("csrf_token"), form.get("code"), name, email, errors))
            .into_response()
    };
    let input = match credentials::parse_user_input(&body) {
        Ok(input) => input,
        Err(errors) => return refused(&errors),
    };
    let new = match tokio::task::spawn_blocking(move || input.into_new_user()).await {
        Ok(Ok(new)) => new,
        Ok(Err(err)) => return error_page::internal(&err),
        Err(err) => return error_page::internal(&err),
    };
    match state.store().create_first_admin(new).await {
        Ok(Some(user)) => start_session(&state, &user.id, "/settings/webhooks").await,
        Ok(None) => error_page::not_found(None),
        Err(err) => match err.kind() {
            estate_crm_store::ErrorKind::Conflict(errors) | estate_crm_store::ErrorKind::Invalid(errors) => {
                refused(errors)
            }
            _ => error_page::failed(&err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site_and_fits_in_a_header() {
        assert_eq!(safe_next("/settings/webhooks?x=1"), "/settings/webhooks?x=1");
        for bad in ["//evil.example", "/\\evil.example", "https://evil.example", "", "/a\r\nSet-Cookie: x", "/é"] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
