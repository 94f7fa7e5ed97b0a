//! The HubSpot integration: estate-crm's contacts and deals mirrored into a HubSpot account.
//!
//! It is an endpoint of another kind: it rides the same committed event log with its own durable
//! cursor, and what differs from a webhook is how a batch of events becomes requests (HubSpot's
//! CRM v3 batch APIs, keyed by email for contacts and by the `estate_crm_id` property for deals).
//! - [`HubspotSync`]: the worker (see `sync`).
//! - [`check_connection`]: the settings screen's "check" button.
//! - `mapping`: the property and stage mapping, pure.
//! - `rate`: the request budget; `client`: HubSpot over the webhooks' guarded connector.

mod client;
pub mod mapping;
mod rate;
mod sync;

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

/// Checks a token against HubSpot: reads one contact (the token works), asks for the token's scopes,
/// and looks for the `estate_crm_id` property on contacts and deals.
pub async fn check_connection(policy: AddressPolicy, base_url: &str, token: &str) -> CheckResult {
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
    CheckResult { ok: problems.is_empty(), status_code, scopes, problems }
}
