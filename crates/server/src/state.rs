//! The state every handler shares: cheap handles, cloned per request.

use std::sync::Arc;

use axum::extract::FromRef;
use estate_crm_store::Store;
use estate_crm_webhooks::{AddressPolicy, Sender};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::auth::Authenticator;
use crate::rate_limit::RateLimiter;

/// The handles handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The records, events and deliveries.
    pub store: Arc<dyn Store>,
    /// Token checks.
    pub auth: Authenticator,
    /// The HTTP client of the test button.
    pub sender: Sender,
    /// Settings fixed at start.
    pub settings: Arc<Settings>,
    /// What /metrics shows.
    pub metrics: Arc<Metrics>,
    /// The public form's per-address limit.
    pub form_limiter: Arc<RateLimiter>,
    /// Wakes the HubSpot sync and reads its status.
    pub hubspot: estate_crm_webhooks::hubspot::HubspotHandle,
}

/// Settings fixed at start.
#[derive(Debug)]
pub struct Settings {
    /// The `site_url` of payloads, and the origin a form redirect must stay on.
    pub site_url: String,
    /// Whether private destinations are allowed.
    pub policy: AddressPolicy,
}

/// The label of a counted HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// The method.
    pub method: String,
    /// The status class: 2xx, 4xx, ...
    pub status: String,
}

/// The label of a queue-depth gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The endpoint's id.
    pub endpoint: String,
}

/// The Prometheus registry and the server's own metrics.
pub struct Metrics {
    /// Everything /metrics encodes.
    pub registry: Registry,
    /// HTTP requests by method and status class.
    pub requests: Family<RequestLabel, Counter>,
    /// Pending deliveries per endpoint, refreshed at each scrape.
    pub queue_depth: Family<EndpointLabel, Gauge>,
}

impl Metrics {
    /// Registers the server's metrics in `registry`.
    pub fn new(mut registry: Registry) -> Metrics {
        let requests = Family::<RequestLabel, Counter>::default();
        let queue_depth = Family::<EndpointLabel, Gauge>::default();
        registry.register("estate_crm_http_requests", "HTTP requests by method and status class", requests.clone());
        registry.register("estate_crm_queue_depth", "Pending webhook deliveries per endpoint", queue_depth.clone());
        Metrics { registry, requests, queue_depth }
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
