//! The bytes an endpoint is sent, from the event's recorded body and the endpoint's format.
//!
//! The recorded body stays the source of truth: a JSON endpoint gets it as it is, a Slack endpoint
//! gets `{"text": ...}` derived from it by the pure table in `estate_crm_domain::slack`. Both are
//! deterministic, so every attempt of a delivery sends (and signs) the same bytes.

use bytes::Bytes;
use estate_crm_domain::webhook::BodyFormat;
use estate_crm_domain::{EventName, slack};
use serde_json::Value;

/// The body to send for a recorded event body `stored` of event `event`.
pub fn body_for(format: BodyFormat, event: EventName, stored: &Bytes) -> Bytes {
    match format {
        BodyFormat::Json => stored.clone(),
        BodyFormat::Slack => {
            let envelope: Value = serde_json::from_slice(stored).unwrap_or(Value::Null);
            // A triggered sample is recorded as a test but names the event it stands for.
            let event = envelope.get("event").and_then(Value::as_str).and_then(EventName::parse).unwrap_or(event);
            Bytes::from(slack::slack_body(event, envelope.get("data").unwrap_or(&Value::Null)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_recorded_body_and_slack_is_its_summary() {
        let stored = Bytes::from_static(
            br#"{"event":"deal.won","timestamp":"2026-04-17T12:34:56Z","data":{"title":"12 Elm St","amount":450000,"currency":"USD"},"site_url":"x"}"#,
        );
        assert_eq!(body_for(BodyFormat::Json, EventName::DealWon, &stored), stored);
        assert_eq!(
            body_for(BodyFormat::Slack, EventName::WebhookTest, &stored),
            Bytes::from_static(br#"{"text":"Deal won: 12 Elm St, $450,000"}"#)
        );
    }
}
