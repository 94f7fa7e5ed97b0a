//! The public enquiry form: no token, urlencoded or JSON, 16 KiB at most, rate limited per client
//! address, with a honeypot. Its answers say nothing about what exists in the CRM.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use estate_crm_domain::RecordKind;
use estate_crm_store::{Actor, Role};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{is_json, read_body};
use crate::state::AppState;

const FORM_LIMIT: usize = 16 * 1024;
/// The `created_by` of enquiries that came through the form.
const FORM_USER: &str = "public-form";
/// The form fields that become the enquiry; anything else a web page posts (buttons, tracking
/// fields) is ignored rather than refused, since visitors cannot fix a page's markup.
const ENQUIRY_FIELDS: &[&str] = &["name", "email", "phone", "message", "property_id", "source"];

pub fn router() -> Router<AppState> {
    Router::new().route("/forms/enquiry", post(submit).layer(DefaultBodyLimit::max(FORM_LIMIT)))
}

async fn submit(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> ApiResult<Response> {
    if !state.form_limiter.allow(client.ip()) {
        return Err(ApiError::rate_limited());
    }
    let fields = read_form(request, &state).await?;
    if fields.get("website").is_some_and(is_filled) {
        // A bot filled the hidden field: answer as if accepted, keep nothing.
        return Ok(accepted(&state, &fields));
    }
    let enquiry: Map<String, Value> = fields
        .iter()
        .filter(|(k, _)| ENQUIRY_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let actor = Actor { user_id: FORM_USER.to_owned(), role: Role::Admin };
    state.store.create_record(&actor, RecordKind::Enquiry, Value::Object(enquiry)).await?;
    Ok(accepted(&state, &fields))
}

/// Whether the honeypot holds anything: only a missing, null or blank value is empty.
fn is_filled(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

async fn read_form(request: Request, state: &AppState) -> ApiResult<Map<String, Value>> {
    let content_type = request.headers().get(CONTENT_TYPE).cloned();
    let json = is_json(content_type.as_ref());
    let urlencoded = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !json && !urlencoded {
        return Err(ApiError::unsupported_media_type("application/x-www-form-urlencoded or application/json"));
    }
    let body = read_body(request, state).await?;
    if json {
        return match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(ApiError::invalid_field("body", "must be a JSON object")),
            Err(_) => Err(ApiError::malformed("the body is not valid JSON")),
        };
    }
    Ok(url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect())
}

/// 201, or 303 to the form's `redirect` when it points at this site.
fn accepted(state: &AppState, fields: &Map<String, Value>) -> Response {
    match fields.get("redirect").and_then(Value::as_str).filter(|to| is_on_site(&state.settings.site_url, to)) {
        Some(to) => (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response(),
        None => (StatusCode::CREATED, Json(json!({"ok": true}))).into_response(),
    }
}

/// A redirect must stay on this site (same scheme, host and port), so the form cannot be used to
/// bounce visitors elsewhere.
fn is_on_site(site_url: &str, target: &str) -> bool {
    let (Ok(site), Ok(target)) = (url::Url::parse(site_url), url::Url::parse(target)) else {
        return false;
    };
    site.origin() == target.origin()
}

#[cfg(test)]
mod tests {
    use super::is_on_site;

    #[test]
    fn redirects_stay_on_site() {
        let site = "https://crm.example.com";
        assert!(is_on_site(site, "https://crm.example.com/thanks"));
        for elsewhere in [
            "https://evil.example/",
            "http://crm.example.com/thanks",
            "//evil.example",
            "/thanks",
            "javascript:alert(1)",
        ] {
            assert!(!is_on_site(site, elsewhere), "{elsewhere}");
        }
    }
}
