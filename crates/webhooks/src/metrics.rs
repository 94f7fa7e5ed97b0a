//! The dispatcher's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The label of an attempt's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `succeeded`, `retrying`, `failed` or `gone`.
    pub outcome: &'static str,
}

/// Counters and histograms the dispatcher updates.
#[derive(Clone)]
pub struct DeliveryMetrics {
    pub(crate) attempts: Family<OutcomeLabel, Counter>,
    pub(crate) latency: Histogram,
}

impl DeliveryMetrics {
    /// Makes the metrics and registers them.
    pub fn register(registry: &mut Registry) -> DeliveryMetrics {
        let metrics = DeliveryMetrics {
            attempts: Family::default(),
            latency: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0]),
        };
        registry.register(
            "estate_crm_delivery_attempts",
            "Webhook delivery attempts by outcome",
            metrics.attempts.clone(),
        );
        registry.register(
            "estate_crm_attempt_duration_seconds",
            "How long a webhook delivery attempt took",
            metrics.latency.clone(),
        );
        metrics
    }

    /// Metrics that go nowhere (for tools that do not serve /metrics).
    pub fn unregistered() -> DeliveryMetrics {
        Self::register(&mut Registry::default())
    }

    pub(crate) fn observe(&self, outcome: &'static str, seconds: f64) {
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
        self.latency.observe(seconds);
    }
}
