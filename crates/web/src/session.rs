//! Who is asking: sign-in sessions, CSRF tokens and the same-origin check, as extractors that every
//! page handler takes, so that no page can forget them.
//!
//! - A session is a random cookie (`ecrm_session`); the database keeps only its SHA-256, with its
//!   user, start and last use. It ends after [`LIMITS`]: 12 hours without use, 7 days in all.
//! - A form's CSRF token is derived from the session's secret (a keyed hash the page shows and the
//!   post must bring back), so it changes with every session and needs no storage. Before signing
//!   in, the login and setup forms use a short-lived random cookie (`ecrm_login`) the same way.
//! - Every changing request must also come from this site: an `Origin` header naming another site,
//!   or `null`, is refused whatever the token says.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use estate_crm_store::credentials::{hash_token, random_base64};
use estate_crm_store::{Role, SessionLimits, User};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::WebState;
use crate::form::FormFields;
use crate::pages::error_page;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ecrm_session";
/// The cookie that ties the login and setup forms to their browser before a session exists.
pub const LOGIN_COOKIE: &str = "ecrm_login";
/// 12 hours without use, 7 days in all.
pub const LIMITS: SessionLimits = SessionLimits { idle_ms: 12 * 3600 * 1000, absolute_ms: 7 * 24 * 3600 * 1000 };
/// A session's last use is written at most this often (a page load is a read, not a write).
const TOUCH_EVERY_MS: i64 = 60_000;
/// The largest form body accepted.
const FORM_LIMIT: usize = 64 * 1024;

/// The CSRF token that goes with a secret (a session's or a login cookie's).
pub fn csrf_token(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("estate-crm csrf\n{secret}").as_bytes()))
}

/// Whether `given` is the CSRF token of `secret`, compared in constant time.
pub fn csrf_matches(secret: &str, given: &str) -> bool {
    bool::from(csrf_token(secret).as_bytes().ct_eq(given.as_bytes()))
}

/// Whether a changing request comes from this site: no `Origin` (a client that is not a browser,
/// still bound by the CSRF token) or one naming this server as the site URL or the `Host` header say.
pub fn same_origin(headers: &HeaderMap, site_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if origin.eq_ignore_ascii_case(site_origin(site_url)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    !host.is_empty()
        && origin
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest.eq_ignore_ascii_case(host))
}

/// `scheme://host:port` of a URL.
fn site_origin(site_url: &str) -> &str {
    let after_scheme = site_url.find("://").map_or(0, |i| i + 3);
    match site_url[after_scheme..].find('/') {
        Some(slash) => &site_url[..after_scheme + slash],
        None => site_url,
    }
}

/// A cookie's value from the request, if it is there.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, for the whole site, Secure on an https site.
pub fn set_cookie(name: &'static str, value: String, max_age_s: i64, secure: bool) -> HeaderValue {
    let cookie = Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age_s))
        .build();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new session secret for a cookie.
pub fn new_secret() -> String {
    random_base64(32)
}

/// The client's address, or the unspecified address when the server was not told (in-process tests).
pub fn client_address(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(address)| address.ip())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A signed-in user, with what their forms must carry.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// Who.
    pub user: User,
    /// The CSRF token of their forms.
    pub csrf: String,
    /// The stored hash of their session's cookie.
    pub session_hash: String,
}

impl Visitor {
    /// Whether they are an administrator.
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
}

/// Sends a visitor without a session to the login page, to come back here after.
fn to_login(parts: &Parts) -> Response {
    let next = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // Escaped as a query value, but with its slashes kept: `/login?next=/settings/webhooks`.
    let next = url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>().replace("%2F", "/");
    Redirect::to(&format!("/login?next={next}")).into_response()
}

impl FromRequestParts<WebState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Self::Rejection> {
        let Some(secret) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts));
        };
        let hash = hash_token(&secret);
        let now = now_ms();
        let session = match state.store().find_session(&hash, now, LIMITS).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(to_login(parts)),
            Err(err) => return Err(error_page::failed(&err)),
        };
        if now - session.last_seen_at >= TOUCH_EVERY_MS
            && let Err(err) = state.store().touch_session(&hash, now).await
        {
            tracing::warn!(error = %err, "recording a session's use failed");
        }
        Ok(Visitor { user: session.user, csrf: csrf_token(&secret), session_hash: hash })
    }
}

/// A signed-in administrator; anyone else gets the 403 page.
#[derive(Debug, Clone)]
pub struct AdminVisitor(pub Visitor);

impl FromRequestParts<WebState> for AdminVisitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Self::Rejection> {
        let visitor = Visitor::from_request_parts(parts, state).await?;
        if !visitor.is_admin() {
            return Err(error_page::forbidden(Some(&visitor), "Only administrators may open the settings."));
        }
        Ok(AdminVisitor(visitor))
    }
}

/// Reads a form body (bounded) after the same-origin check.
async fn read_form(request: Request, state: &WebState) -> Result<(Parts, FormFields), Response> {
    let (parts, body) = request.into_parts();
    if !same_origin(&parts.headers, state.site_url()) {
        return Err(error_page::forbidden(None, "This form was sent from another site, so it was refused."));
    }
    let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
        error_page::status(StatusCode::PAYLOAD_TOO_LARGE, "Too large", "The form was larger than 64 KiB.")
    })?;
    Ok((parts, FormFields::parse(&bytes)))
}

fn refused_token() -> Response {
    error_page::forbidden(
        None,
        "This form's security token is missing or out of date. Go back, reload the page and send it again.",
    )
}

/// A changing form from a signed-in user: same origin, and its CSRF token matches their session.
#[derive(Debug)]
pub struct ChangeForm {
    /// Who sent it.
    pub visitor: Visitor,
    /// Its fields.
    pub form: FormFields,
}

impl FromRequest<WebState> for ChangeForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let (_, form) = read_form(Request::from_parts(parts, body), state).await?;
        if !bool::from(visitor.csrf.as_bytes().ct_eq(form.get("csrf_token").as_bytes())) {
            return Err(refused_token());
        }
        Ok(ChangeForm { visitor, form })
    }
}

/// [`ChangeForm`] from an administrator.
#[derive(Debug)]
pub struct AdminForm {
    /// Who sent it.
    pub visitor: Visitor,
    /// Its fields.
    pub form: FormFields,
}

impl FromRequest<WebState> for AdminForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let AdminVisitor(_) = AdminVisitor::from_request_parts(&mut parts, state).await?;
        let ChangeForm { visitor, form } = ChangeForm::from_request(Request::from_parts(parts, body), state).await?;
        Ok(AdminForm { visitor, form })
    }
}

/// The login or setup form, before a session: same origin, and its token matches the login cookie.
#[derive(Debug)]
pub struct AnonymousForm {
    /// Its fields.
    pub form: FormFields,
    /// Where it came from, for throttling.
    pub address: IpAddr,
}

impl FromRequest<WebState> for AnonymousForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        let (parts, form) = read_form(request, state).await?;
        let secret = cookie_value(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
        if secret.is_empty() || !csrf_matches(&secret, form.get("csrf_token")) {
            return Err(refused_token());
        }
        Ok(AnonymousForm { form, address: client_address(&parts) })
    }
}

/// The login cookie's secret: the one the browser has, or a new one to set.
pub fn login_secret(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    match cookie_value(headers, LOGIN_COOKIE).filter(|s| s.len() >= 32) {
        Some(secret) => (secret, None),
        None => {
            let secret = new_secret();
            let cookie = set_cookie(LOGIN_COOKIE, secret.clone(), 3600, secure);
            (secret, Some(cookie))
        }
    }
}

/// A file sent from a signed-in user's upload form (`multipart/form-data`): same origin, and its
/// `csrf_token` field matches their session. A file that could not be read is a message for the
/// form, not a rejection.
#[derive(Debug)]
pub struct UploadForm {
    /// Who sent it.
    pub visitor: Visitor,
    /// The file's name and bytes, or why it could not be read (with the status to answer).
    pub file: Result<(String, axum::body::Bytes), (StatusCode, String)>,
}

/// The form field that carries the file.
pub const UPLOAD_FIELD: &str = "file";

impl FromRequest<WebState> for UploadForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers, state.site_url()) {
            return Err(error_page::forbidden(None, "This form was sent from another site, so it was refused."));
        }
        let request = Request::from_parts(parts, body);
        let mut multipart = match axum::extract::Multipart::from_request(request, state).await {
            Ok(multipart) => multipart,
            Err(_) => {
                let message = "Choose a CSV file with the form's file field and send it again.".to_owned();
                return Ok(UploadForm { visitor, file: Err((StatusCode::BAD_REQUEST, message)) });
            }
        };
        let mut token = String::new();
        let mut file = Err((StatusCode::BAD_REQUEST, "Choose a CSV file to upload.".to_owned()));
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(err) => {
                    file = Err(upload_error(&err));
                    break;
                }
            };
            match field.name() {
                Some("csrf_token") => token = field.text().await.unwrap_or_default(),
                Some(UPLOAD_FIELD) => {
                    let name = field.file_name().unwrap_or("").to_owned();
                    file = field.bytes().await.map(|bytes| (name, bytes)).map_err(|err| upload_error(&err));
                }
                _ => {}
            }
        }
        if !bool::from(visitor.csrf.as_bytes().ct_eq(token.as_bytes())) {
            return Err(refused_token());
        }
        Ok(UploadForm { visitor, file })
    }
}

fn upload_error(err: &axum::extract::multipart::MultipartError) -> (StatusCode, String) {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let message =
            "The file is larger than the server takes. Split it into smaller files and upload them one at a time.";
        (StatusCode::PAYLOAD_TOO_LARGE, message.to_owned())
    } else {
        (StatusCode::BAD_REQUEST, format!("The upload could not be read ({err}). Send the file again."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_csrf_token_belongs_to_its_secret_alone() {
        let token = csrf_token("secret-one");
        assert!(csrf_matches("secret-one", &token));
        assert!(!csrf_matches("secret-two", &token));
        assert!(!csrf_matches("secret-one", ""));
        assert!(!csrf_matches("secret-one", &token[..10]));
        assert_ne!(csrf_token("secret-one"), "secret-one");
    }

    #[test]
    fn only_this_sites_origin_passes() {
        let site = "http://127.0.0.1:8080";
        assert!(same_origin(&headers(&[]), site), "no Origin: a client that is not a browser");
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080")]), site));
        assert!(same_origin(&headers(&[("origin", "http://localhost:8080"), ("host", "localhost:8080")]), site));
        assert!(!same_origin(&headers(&[("origin", "http://evil.example"), ("host", "127.0.0.1:8080")]), site));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:8080")]), site));
        assert!(!same_origin(&headers(&[("origin", "http://127.0.0.1:8081"), ("host", "127.0.0.1:8080")]), site));
        assert!(same_origin(&headers(&[("origin", "https://crm.example.com")]), "https://crm.example.com/"));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_on_https() {
        let plain = set_cookie(SESSION_COOKIE, "abc".into(), 60, false);
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("ecrm_session=abc") && plain.contains("HttpOnly") && plain.contains("SameSite=Lax"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie(SESSION_COOKIE, "abc".into(), 60, true).to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let map = headers(&[("cookie", "a=1; ecrm_session=xyz; b=2")]);
        assert_eq!(cookie_value(&map, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie_value(&map, "missing"), None);
    }
}
