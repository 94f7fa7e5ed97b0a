//! What a client may send to set up an endpoint, checked once for every way in: the API's JSON and
//! the web app's forms (which it turns into the same JSON object) both go through here, so a rule and
//! its message exist once.

use std::sync::Arc;

use estate_crm_domain::FieldErrors;
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight, RetrySchedule, parse_rotation_grace};
use estate_crm_store::{Endpoint, EndpointPatch, Rotation, Store, StoreError};
use serde_json::{Map, Value};

use crate::{AddressPolicy, TargetUrl, check_destination};

/// The longest signing secret.
pub const MAX_SECRET_BYTES: usize = 512;
/// The longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// The warning an answer carries for a plain `http://` destination.
pub const HTTP_WARNING: &str =
    "this URL uses plain http://: payloads travel unencrypted; use https:// where the receiver allows it";

/// The fields a client sent, checked; `warnings` are for the answer.
#[derive(Debug, Clone)]
pub struct EndpointInput {
    /// The changes to make.
    pub patch: EndpointPatch,
    /// Things worth saying that do not stop the save.
    pub warnings: Vec<&'static str>,
}

/// Which fields a body may carry and which are tolerated but ignored.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    allowed: &'static [&'static str],
    ignored: &'static [&'static str],
}

/// The endpoints API and the endpoint form.
pub const ENDPOINT_SHAPE: Shape = Shape {
    allowed: &["url", "events", "secret", "active", "description", "retry_schedule", "max_in_flight", "format"],
    ignored: &[],
};
/// The simple settings: the screen sends back what it read, read-only fields included.
pub const SETTINGS_SHAPE: Shape =
    Shape { allowed: &["url", "events", "secret", "active"], ignored: &["has_secret", "standard_webhooks_secret"] };

/// Checks an endpoint's fields, its URL's destination included.
pub async fn parse_endpoint(body: &Value, shape: Shape, policy: AddressPolicy) -> Result<EndpointInput, FieldErrors> {
    let Value::Object(body) = body else {
        return Err(FieldErrors::single("body", "must be a JSON object"));
    };
    let mut errors = FieldErrors::new();
    let mut patch = EndpointPatch::default();
    let mut warnings = Vec::new();
    let mut target = None;
    for (name, value) in body {
        if shape.ignored.contains(&name.as_str()) {
            continue;
        }
        if !shape.allowed.contains(&name.as_str()) {
            errors.add(name, "is not a known field");
            continue;
        }
        if let Err(message) = parse_field(name, value, &mut patch, &mut target) {
            errors.add(name, message);
        }
    }
    if let Some(url) = &target {
        if let Err(problem) = destination_allowed(url, policy).await {
            errors.add("url", problem);
        }
        if url.is_plain_http() {
            warnings.push(HTTP_WARNING);
        }
    }
    errors.into_result(EndpointInput { patch, warnings })
}

/// Whether webhooks may go to `url` under `policy`; the refusal in words.
pub async fn destination_allowed(url: &TargetUrl, policy: AddressPolicy) -> Result<(), String> {
    check_destination(url, policy)
        .await
        .map_err(|blocked| format!("{blocked}; webhooks may only go to public addresses"))
}

fn parse_field(
    name: &str,
    value: &Value,
    patch: &mut EndpointPatch,
    target: &mut Option<TargetUrl>,
) -> Result<(), String> {
    match name {
        "url" => {
            let text = value.as_str().ok_or("must be a string")?;
            let url = TargetUrl::parse(text.trim()).map_err(|e| e.to_string())?;
            patch.url = Some(url.as_str().to_owned());
            *target = Some(url);
        }
        "events" => patch.events = Some(EventFilter::parse(value)?),
        "secret" => patch.secret = Some(parse_secret(value)?),
        "active" => patch.active = Some(value.as_bool().ok_or("must be true or false")?),
        "description" => {
            patch.description = Some(match value {
                Value::Null => None,
                // Neither store could keep it the same (PostgreSQL's text has no NUL), and no
                // person types one.
                Value::String(s) if s.contains('\0') => {
                    return Err("may not contain the NUL character (\\u0000)".into());
                }
                Value::String(s) if s.chars().count() <= MAX_DESCRIPTION_CHARS => Some(s.clone()),
                _ => return Err(format!("must be a string of at most {MAX_DESCRIPTION_CHARS} characters")),
            })
        }
        "retry_schedule" => {
            patch.retry_schedule = Some(match value {
                Value::Null => None,
                other => Some(RetrySchedule::parse(other)?),
            })
        }
        "max_in_flight" => {
            patch.max_in_flight = Some(MaxInFlight::new(value.as_i64().ok_or("must be a whole number")?)?)
        }
        "format" => patch.format = Some(BodyFormat::parse(value.as_str().ok_or("must be \"json\" or \"slack\"")?)?),
        _ => return Err("is not a known field".into()),
    }
    Ok(())
}

/// A signing secret; `""` or null removes it.
pub fn parse_secret(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s.len() <= MAX_SECRET_BYTES && !s.chars().any(char::is_control) => Ok(Some(s.clone())),
        _ => Err(format!("must be a string of at most {MAX_SECRET_BYTES} bytes")),
    }
}

/// Why saving the simple settings did not happen.
#[derive(Debug)]
pub enum SaveError {
    /// A field is wrong.
    Invalid(FieldErrors),
    /// The store failed or refused.
    Store(StoreError),
}

impl From<StoreError> for SaveError {
    fn from(err: StoreError) -> Self {
        SaveError::Store(err)
    }
}

/// What saving the simple settings did.
#[derive(Debug)]
pub enum SavedSettings {
    /// The primary endpoint as saved, with the input's warnings.
    Saved(Box<Endpoint>, EndpointInput),
    /// An empty URL switched webhooks off: the primary endpoint is gone.
    Removed,
}

/// Saves the simple settings (the primary endpoint) from a body of [`SETTINGS_SHAPE`]. An empty `url`
/// removes the primary endpoint, as clearing the URL on the original settings screen switches
/// webhooks off; the rest of the body is still checked, so a typo is refused, not ignored.
pub async fn save_settings(
    store: &Arc<dyn Store>,
    policy: AddressPolicy,
    body: &Value,
) -> Result<SavedSettings, SaveError> {
    if body.get("url").is_some_and(|u| u.is_null() || u.as_str().is_some_and(|s| s.trim().is_empty())) {
        let mut rest = body.clone();
        if let Value::Object(fields) = &mut rest {
            fields.shift_remove("url");
        }
        parse_endpoint(&rest, SETTINGS_SHAPE, policy).await.map_err(SaveError::Invalid)?;
        if let Some(primary) = store.primary_endpoint().await? {
            store.delete_endpoint(&primary.id).await?;
        }
        return Ok(SavedSettings::Removed);
    }
    let input = parse_endpoint(body, SETTINGS_SHAPE, policy).await.map_err(SaveError::Invalid)?;
    let endpoint = store.put_primary_endpoint(input.patch.clone()).await?;
    Ok(SavedSettings::Saved(Box::new(endpoint), input))
}

/// How long the replaced secret keeps signing when a rotation names no grace: as long as a secret
/// changed through PATCH keeps it.
pub const DEFAULT_ROTATION_GRACE: &str = "24h";

/// Gives an endpoint a new random secret (shown once by the caller); the replaced one keeps signing
/// for `grace` (such as `24h`, `0s`; [`DEFAULT_ROTATION_GRACE`] when `None`). The API and the web
/// app both rotate through here, so the secret's making and the grace's rules exist once.
pub async fn rotate_secret(
    store: &Arc<dyn Store>,
    endpoint_id: &str,
    grace: Option<&str>,
) -> Result<Rotation, SaveError> {
    let grace = parse_rotation_grace(grace.unwrap_or(DEFAULT_ROTATION_GRACE))
        .map_err(|message| SaveError::Invalid(FieldErrors::single("grace", message)))?;
    Ok(store.rotate_secret(endpoint_id, new_rotation_secret(), grace).await?)
}

/// 32 random bytes, as URL-safe base64 text: the secret's UTF-8 bytes are the HMAC key, as for any
/// secret a person chose.
pub fn new_rotation_secret() -> String {
    estate_crm_store::credentials::random_base64(32)
}

/// Where a test goes and what signs it: `{"url", "secret"}` test those values before they are saved;
/// a field left out is taken from the saved endpoint.
pub fn test_target(
    saved: Option<&Endpoint>,
    body: &Map<String, Value>,
    now_ms: i64,
) -> Result<(TargetUrl, Vec<Vec<u8>>), FieldErrors> {
    if let Some(unknown) = body.keys().find(|k| !["url", "secret"].contains(&k.as_str())) {
        return Err(FieldErrors::single(unknown, "is not a known field; a test takes url and secret"));
    }
    let url_text = match body.get("url") {
        Some(Value::String(url)) => url.trim().to_owned(),
        Some(_) => return Err(FieldErrors::single("url", "must be a string")),
        None => saved
            .map(|e| e.url.clone())
            .ok_or_else(|| FieldErrors::single("url", "is required: no webhook URL is saved yet"))?,
    };
    let url = TargetUrl::parse(&url_text).map_err(|e| FieldErrors::single("url", e.to_string()))?;
    let secrets = match body.get("secret") {
        Some(value) => parse_secret(value)
            .map_err(|m| FieldErrors::single("secret", m))?
            .map(|s| vec![s.into_bytes()])
            .unwrap_or_default(),
        None => saved.map(|e| e.signing_secrets(now_ms)).unwrap_or_default(),
    };
    Ok((url, secrets))
}
