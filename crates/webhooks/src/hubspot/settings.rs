//! The integration's settings as a client sends them, checked once for every way in: the API's JSON
//! and the web app's settings page (which turns its form into the same JSON object) both go through
//! [`parse_settings`], so a rule and its message exist once. The state shown to people
//! ([`Phase`]) and the saved settings' check ([`check_saved`]) are shared the same way.

use std::collections::BTreeMap;

use estate_crm_domain::FieldErrors;
use estate_crm_domain::schema::PIPELINE;
use estate_crm_store::{HubspotPatch, HubspotSettings};
use serde_json::{Map, Value};

use super::{CheckResult, CheckTarget, check_connection};
use crate::{AddressPolicy, TargetUrl, check_destination};

/// The longest access token.
pub const MAX_TOKEN_BYTES: usize = 512;
/// The longest HubSpot id (pipeline, stage).
pub const MAX_ID_CHARS: usize = 100;
/// The fewest and most requests of the budget.
pub const RATE_REQUESTS: std::ops::RangeInclusive<u64> = 1..=1000;
/// The shortest and longest budget window, in milliseconds.
pub const RATE_WINDOW_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
/// Settings fields a client may send.
pub const FIELDS: &[&str] = &["access_token", "base_url", "deal_pipeline", "stage_map", "enabled", "rate_limit"];
/// What a GET shows besides the settings: a client may send it back, and it is ignored.
const IGNORED: &[&str] =
    &["has_token", "state", "paused_reason", "cursor", "backlog", "counts", "backfill", "last_error"];

/// Checks a settings change, the base URL's destination included. `has_saved_token` says whether a
/// token is already stored: without one, the change must bring one.
pub async fn parse_settings(
    body: &Value,
    has_saved_token: bool,
    policy: AddressPolicy,
) -> Result<HubspotPatch, FieldErrors> {
    let Value::Object(body) = body else {
        return Err(FieldErrors::single("body", "must be a JSON object"));
    };
    let mut errors = FieldErrors::new();
    let mut patch = HubspotPatch::default();
    for (name, value) in body {
        if IGNORED.contains(&name.as_str()) {
            continue;
        }
        if !FIELDS.contains(&name.as_str()) {
            errors.add(name, format!("is not a known field; the fields are {}", FIELDS.join(", ")));
            continue;
        }
        if let Err(message) = parse_field(name, value, &mut patch) {
            errors.add(name, message);
        }
    }
    if let Some(url) = &patch.base_url
        && let Ok(target) = TargetUrl::parse(url)
        && let Err(blocked) = check_destination(&target, policy).await
    {
        errors.add("base_url", format!("{blocked}; HubSpot's API is at a public address"));
    }
    if patch.access_token.is_none() && !has_saved_token && !body.contains_key("access_token") {
        errors.add("access_token", "is required to connect HubSpot");
    }
    errors.into_result(patch)
}

fn parse_field(name: &str, value: &Value, patch: &mut HubspotPatch) -> Result<(), String> {
    match name {
        "access_token" => patch.access_token = Some(access_token(value)?),
        "base_url" => {
            let text = value.as_str().ok_or("must be a string")?.trim();
            let url = TargetUrl::parse(text).map_err(|e| e.to_string())?;
            patch.base_url = Some(url.as_str().trim_end_matches('/').to_owned());
        }
        "deal_pipeline" => patch.deal_pipeline = Some(hubspot_id(value)?),
        "stage_map" => patch.stage_map = Some(parse_stage_map(value)?),
        "enabled" => patch.enabled = Some(value.as_bool().ok_or("must be true or false")?),
        "rate_limit" => {
            let requests = value.get("requests").and_then(Value::as_u64).filter(|n| RATE_REQUESTS.contains(n));
            let per_ms = value.get("per_ms").and_then(Value::as_u64).filter(|n| RATE_WINDOW_MS.contains(n));
            match (requests, per_ms, value.as_object().map(Map::len)) {
                (Some(requests), Some(per_ms), Some(2)) => {
                    patch.rate_limit = Some(requests as u32);
                    patch.rate_window_ms = Some(per_ms as u32);
                }
                _ => {
                    return Err(format!(
                        "must be {} to {} requests per {} to {} milliseconds",
                        RATE_REQUESTS.start(),
                        RATE_REQUESTS.end(),
                        RATE_WINDOW_MS.start(),
                        RATE_WINDOW_MS.end()
                    ));
                }
            }
        }
        _ => return Err("is not a known field".into()),
    }
    Ok(())
}

fn access_token(value: &Value) -> Result<String, String> {
    let token = value.as_str().map(str::trim).unwrap_or_default();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("must be the private app's access token (1 to {MAX_TOKEN_BYTES} bytes, no spaces)"));
    }
    Ok(token.to_owned())
}

fn hubspot_id(value: &Value) -> Result<String, String> {
    match value.as_str().map(str::trim) {
        Some(id) if !id.is_empty() && id.chars().count() <= MAX_ID_CHARS && !id.chars().any(char::is_control) => {
            Ok(id.to_owned())
        }
        _ => Err(format!("must be a HubSpot id: a string of 1 to {MAX_ID_CHARS} characters")),
    }
}

fn parse_stage_map(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err("must be an object of our deal stage -> HubSpot stage id".into());
    };
    let mut stages = BTreeMap::new();
    for (ours, theirs) in map {
        if !PIPELINE.iter().any(|(key, _)| key == ours) {
            let keys: Vec<&str> = PIPELINE.iter().map(|(key, _)| *key).collect();
            return Err(format!("{ours:?} is not a deal stage; the stages are {}", keys.join(", ")));
        }
        stages.insert(ours.clone(), hubspot_id(theirs).map_err(|e| format!("{ours}: {e}"))?);
    }
    Ok(stages)
}

/// Where the integration stands, as the API and the settings page show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No token saved yet.
    NotConnected,
    /// Turned off by an administrator.
    Disabled,
    /// Stopped by itself (HubSpot refused the token), with why, until the settings change.
    Paused(String),
    /// Running.
    Connected,
}

impl Phase {
    /// The phase of the saved settings (`None`: never set up).
    pub fn of(settings: Option<&HubspotSettings>) -> Phase {
        let Some(settings) = settings else { return Phase::NotConnected };
        match (settings.enabled, &settings.paused_reason, &settings.access_token) {
            (false, _, _) => Phase::Disabled,
            (true, Some(reason), _) => Phase::Paused(reason.clone()),
            (true, None, None) => Phase::NotConnected,
            (true, None, Some(_)) => Phase::Connected,
        }
    }

    /// The API's name of it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::NotConnected => "not_connected",
            Phase::Disabled => "disabled",
            Phase::Paused(_) => "paused",
            Phase::Connected => "connected",
        }
    }
}

/// What the check says when there is nothing to check.
pub const NOT_CONNECTED: &str = "HubSpot is not connected: save an access token first";

/// Runs [`check_connection`] with the saved settings; `None` when no token is saved.
pub async fn check_saved(policy: AddressPolicy, settings: Option<&HubspotSettings>) -> Option<CheckResult> {
    let settings = settings?;
    let token = settings.access_token.as_deref()?;
    let target = CheckTarget {
        base_url: &settings.base_url,
        token,
        pipeline: &settings.deal_pipeline,
        stage_map: &settings.stage_map,
    };
    Some(check_connection(policy, target).await)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    async fn parse(body: Value, has_saved_token: bool) -> Result<HubspotPatch, FieldErrors> {
        parse_settings(&body, has_saved_token, AddressPolicy::AllowPrivate).await
    }

    #[tokio::test]
    async fn a_token_is_required_only_while_none_is_saved() {
        let errors = parse(json!({"deal_pipeline": "default"}), false).await.unwrap_err();
        assert_eq!(errors.fields().get("access_token").map(String::as_str), Some("is required to connect HubSpot"));
        let patch = parse(json!({"deal_pipeline": "default"}), true).await.unwrap();
        assert_eq!((patch.access_token, patch.deal_pipeline.as_deref()), (None, Some("default")));
        let errors = parse(json!({"access_token": "has a space"}), false).await.unwrap_err();
        assert!(errors.fields()["access_token"].starts_with("must be the private app's access token"), "{errors}");
    }

    #[tokio::test]
    async fn every_bad_field_is_named_and_what_a_get_shows_is_ignored() {
        let body = json!({"access_token": "pat", "base_url": "ftp://x", "stage_map": {"sold": "1"},
            "rate_limit": {"requests": 0, "per_ms": 1000}, "colour": "red", "has_token": true, "state": "connected"});
        let errors = parse(body, false).await.unwrap_err();
        let named: Vec<&str> = errors.fields().keys().map(String::as_str).collect();
        assert_eq!(named, ["base_url", "colour", "rate_limit", "stage_map"]);
        assert_eq!(errors.fields()["rate_limit"], "must be 1 to 1000 requests per 100 to 600000 milliseconds");
    }

    #[tokio::test]
    async fn a_private_base_url_is_refused_unless_allowed() {
        let body = json!({"access_token": "pat", "base_url": "http://127.0.0.1:9/"});
        let errors = parse_settings(&body, false, AddressPolicy::PublicOnly).await.unwrap_err();
        assert!(errors.fields()["base_url"].ends_with("HubSpot's API is at a public address"), "{errors}");
        let patch = parse(body, false).await.unwrap();
        assert_eq!(patch.base_url.as_deref(), Some("http://127.0.0.1:9"));
    }

    fn settings(enabled: bool, paused: Option<&str>, token: Option<&str>) -> HubspotSettings {
        HubspotSettings {
            access_token: token.map(str::to_owned),
            base_url: "https://api.hubapi.com".into(),
            deal_pipeline: "default".into(),
            stage_map: BTreeMap::new(),
            enabled,
            rate_limit: 100,
            rate_window_ms: 10_000,
            paused_reason: paused.map(str::to_owned),
            version: 1,
            cursor: 0,
            backfill: None,
            backfill_done: 0,
        }
    }

    #[test]
    fn the_phase_follows_the_settings() {
        assert_eq!(Phase::of(None), Phase::NotConnected);
        assert_eq!(Phase::of(Some(&settings(true, None, Some("t")))), Phase::Connected);
        assert_eq!(Phase::of(Some(&settings(false, Some("401"), Some("t")))), Phase::Disabled);
        assert_eq!(Phase::of(Some(&settings(true, Some("401"), Some("t")))), Phase::Paused("401".into()));
        assert_eq!(Phase::of(Some(&settings(true, None, None))).as_str(), "not_connected");
    }
}
