//! The test button: one `webhook.test` event, sent at once, without retries, kept in the log.
//!
//! `estate-crm trigger` uses the same path for a sample of any event ([`send_sample`]). Its body
//! and `X-CRM-Event` name the event it stands for, but it is recorded as a test: an event recorded
//! under its own name would be owed to every endpoint subscribed to it and sent a second time.

use std::sync::Arc;

use estate_crm_domain::webhook::BodyFormat;
use estate_crm_domain::{EventName, payload, sample_data};
use estate_crm_store::{NextStep, Outcome, Store, StoreError};

use crate::{Message, Sender, TargetUrl};

/// What the test button answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// True for a 2xx alone.
    pub ok: bool,
    /// The response's status, if one came.
    pub status_code: Option<u16>,
    /// The first 200 characters of the response body.
    pub body: String,
    /// What went wrong, in words.
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// The delivery that keeps it in the log.
    pub delivery_id: String,
}

/// Where and how a test is sent.
pub struct TestTarget<'a> {
    /// The saved endpoint it belongs to, if any.
    pub endpoint_id: Option<&'a str>,
    /// The URL to send to.
    pub url: &'a TargetUrl,
    /// The secrets to sign with.
    pub secrets: Vec<Vec<u8>>,
    /// The body the endpoint takes.
    pub format: BodyFormat,
}

/// Sends one test event and records it with its attempt.
pub async fn send_test(
    store: &Arc<dyn Store>,
    sender: &Sender,
    site_url: &str,
    target: TestTarget<'_>,
) -> Result<TestResult, StoreError> {
    send_sample(store, sender, site_url, target, EventName::WebhookTest).await
}

/// Sends a sample of `event` (its catalogue data) at once, without retries, and records it as a test.
pub async fn send_sample(
    store: &Arc<dyn Store>,
    sender: &Sender,
    site_url: &str,
    target: TestTarget<'_>,
    event: EventName,
) -> Result<TestResult, StoreError> {
    let body = payload::encode(event, chrono::Utc::now(), &sample_data(event), site_url);
    let delivery = store.begin_test_delivery(target.endpoint_id, body.clone()).await?;
    let message = Message {
        delivery_id: &delivery.id,
        event_name: event.as_str(),
        body: crate::body_for(target.format, event, &body.into()),
        secrets: &target.secrets,
    };
    let result = sender.send(target.url, &message).await;
    let ok = result.is_success();
    let outcome = Outcome {
        delivery_seq: delivery.seq,
        endpoint_id: target.endpoint_id.map(str::to_owned),
        attempt: 1,
        started_at: result.started_at_unix_ms,
        duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        status_code: result.status,
        error: result.error.clone(),
        response: result.response_head.clone(),
        // A test never retries, and a 410 to a test does not switch the endpoint off.
        next: if ok { NextStep::Succeeded } else { NextStep::Failed },
    };
    store.record_outcomes(vec![outcome]).await?;
    Ok(TestResult {
        ok,
        status_code: result.status,
        body: String::from_utf8_lossy(&result.response_head).chars().take(200).collect(),
        error: result.error,
        duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        delivery_id: delivery.id,
    })
}
