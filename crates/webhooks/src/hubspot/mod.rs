//! The HubSpot integration: estate-crm's contacts and deals mirrored into a HubSpot account.
//!
//! It is an endpoint of another kind: it rides the same committed event log with its own durable
//! cursor, and what differs from a webhook is how a batch of events becomes requests (HubSpot's
//! CRM v3 batch APIs, keyed by email for contacts and by the `estate_crm_id` property for deals).
//! - [`HubspotSync`]: the worker (see `sync`).
//! - [`check_connection`]: the settings screen's "check" button.
//! - `settings`: what a client may send as settings, checked once for the API and the web app.
//! - `mapping`: the property and stage mapping, pure.
//! - `rate`: the request budget; `client`: HubSpot over the webhooks' guarded connector.

mod client;
pub mod mapping;
mod rate;
pub mod settings;
mod sync;

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

pub use sync::{HubspotHandle, HubspotSync, SyncStatus};

use crate::AddressPolicy;
use client::HubClient;

/// The scopes the integration needs, as HubSpot names them.
pub const REQUIRED_SCOPES: &[&str] =
    &["crm.objects.contacts.read", "crm.objects.contacts.write", "crm.objects.deals.read", "crm.objects.deals.write"];

/// What the check found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// Whether the integration can work with this token.
    pub ok: bool,
    /// HubSpot's status on the first call (`None` if it could not be reached).
    pub status_code: Option<u16>,
    /// The scopes HubSpot says the token has, if it said.
    pub scopes: Option<Vec<String>>,
    /// What stands in the way, in words a person can act on.
    pub problems: Vec<String>,
}

impl CheckResult {
    /// The API's JSON of it.
    pub fn to_json(&self) -> Value {
        json!({"ok": self.ok, "status_code": self.status_code, "scopes": self.scopes, "problems": self.problems})
    }
}

/// What the check looks at: where HubSpot is, the token, and where deals go.
#[derive(Debug, Clone, Copy)]
pub struct CheckTarget<'a> {
    /// HubSpot's base URL.
    pub base_url: &'a str,
    /// The access token.
    pub token: &'a str,
    /// The deal pipeline.
    pub pipeline: &'a str,
    /// Our stage -> HubSpot stage id.
    pub stage_map: &'a BTreeMap<String, String>,
}

/// Checks a token against HubSpot: reads one contact (the token works), asks for the token's scopes,
/// looks for the `estate_crm_id` property on contacts and deals, and checks that every stage a deal
/// can be sent with exists in the chosen pipeline.
pub async fn check_connection(policy: AddressPolicy, target: CheckTarget<'_>) -> CheckResult {
    let CheckTarget { base_url, token, .. } = target;
    let client = HubClient::new(policy, Duration::from_secs(15));
    let mut problems = Vec::new();
    let first = client.call(base_url, Method::GET, "/crm/v3/objects/contacts?limit=1", token, None).await;
    let status_code = first.status;
    match first.status {
        Some(200) => {}
        Some(401) => problems.push("HubSpot refused the access token (401): check that it was copied whole".into()),
        Some(403) => {
            problems.push("the token may not read contacts (403): add the crm.objects.contacts.read scope".into())
        }
        _ => problems.push(first.message()),
    }
    let mut scopes = None;
    if first.status == Some(200) {
        let info = client
            .call(
                base_url,
                Method::POST,
                "/oauth/v2/private-apps/get/access-token-info",
                token,
                Some(&json!({"tokenKey": token})),
            )
            .await;
        if let Some(list) = info.body.get("scopes").and_then(Value::as_array) {
            let list: Vec<String> = list.iter().filter_map(Value::as_str).map(str::to_owned).collect();
            for scope in REQUIRED_SCOPES {
                if !list.iter().any(|s| s == scope) {
                    problems.push(format!("the private app lacks the {scope} scope"));
                }
            }
            scopes = Some(list);
        }
        for object in ["contacts", "deals"] {
            let path = format!("/crm/v3/properties/{object}/{}", mapping::ID_PROPERTY);
            let property = client.call(base_url, Method::GET, &path, token, None).await;
            if property.status != Some(200) {
                problems.push(format!(
                    "the {object} property {} is missing: create it as docs/HUBSPOT.md says ({})",
                    mapping::ID_PROPERTY,
                    property.message()
                ));
            }
        }
    }
    if first.status == Some(200) {
        problems.extend(check_pipeline(&client, target).await);
    }
    CheckResult { ok: problems.is_empty(), status_code, scopes, problems }
}

/// The stages deals are sent with that the pipeline does not have.
async fn check_pipeline(client: &HubClient, target: CheckTarget<'_>) -> Vec<String> {
    let path = format!("/crm/v3/pipelines/deals/{}", urlencode(target.pipeline));
    let reply = client.call(target.base_url, Method::GET, &path, target.token, None).await;
    if reply.status != Some(200) {
        return vec![format!("the deal pipeline {:?} could not be read: {}", target.pipeline, reply.message())];
    }
    let stages: Vec<&str> = reply
        .body
        .get("stages")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|s| s.get("id").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    estate_crm_domain::schema::PIPELINE
        .iter()
        .map(|(ours, _)| mapping::hub_stage(ours, target.stage_map))
        .filter(|(_, theirs)| !stages.contains(&theirs.as_str()))
        .map(|(ours, theirs)| {
            format!("the stage {ours} maps to {theirs:?}, which the pipeline {:?} does not have", target.pipeline)
        })
        .collect()
}

/// Percent-encodes a path segment (pipeline ids are numbers or `default`, but they come from a person).
fn urlencode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}
