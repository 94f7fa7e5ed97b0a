//! Failed attempts and what follows them: the schedule, Retry-After, 410 Gone, and retries by hand.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit as _, Mac as _};
use hyper::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Received, Receiver, Reply, TestApp};

/// A receiver whose script also notes when each request arrived.
async fn timed(
    mut script: impl FnMut(usize, &Received) -> Reply + Send + 'static,
) -> (Receiver, Arc<Mutex<Vec<Instant>>>) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let noted = times.clone();
    let receiver = Receiver::answering(move |received| {
        let mut times = noted.lock().unwrap();
        times.push(Instant::now());
        let n = times.len();
        drop(times);
        script(n, received)
    })
    .await;
    (receiver, times)
}

/// The gaps between consecutive arrivals.
fn gaps(times: &Mutex<Vec<Instant>>) -> Vec<Duration> {
    times.lock().unwrap().windows(2).map(|w| w[1] - w[0]).collect()
}

/// A local address where nothing listens.
async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The delivery log entry of `webhook_id`, with its body and attempts.
async fn detail(app: &TestApp, webhook_id: &str) -> Value {
    let answer = app.get(&format!("/api/v1/deliveries/{webhook_id}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

fn attempt_codes(detail: &Value) -> Vec<Value> {
    detail["attempts_log"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect()
}

#[tokio::test]
async fn a_failure_then_a_success_on_retry_keeps_the_webhook_id() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering({
        let mut n = 0;
        move |_| {
            n += 1;
            if n == 1 { Reply::status(500) } else { Reply::status(200) }
        }
    })
    .await;
    app.add_endpoint(json!({"url": receiver.url("/")})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let (first, second) = (receiver.next().await, receiver.next().await);
    let id = first.header("webhook-id");
    assert_eq!(second.header("webhook-id"), id);
    assert_eq!(second.body, first.body, "a retry sends the same bytes");

    app.settled_deliveries().await;
    let detail = detail(&app, id).await;
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["attempts"], 2);
    assert_eq!(attempt_codes(&detail), [json!(500), json!(200)]);
    assert!(receiver.drain().is_empty());
}

#[tokio::test]
async fn retries_follow_the_endpoints_schedule() {
    let app = TestApp::spawn().await;
    let (mut receiver, times) = timed(|n, _| if n < 3 { Reply::status(503) } else { Reply::status(204) }).await;
    app.add_endpoint(json!({"url": receiver.url("/"), "retry_schedule": "300ms,300ms"})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let received = receiver.take(3).await;
    for (gap, expected) in gaps(&times).into_iter().zip([300, 300]) {
        assert!(gap >= Duration::from_millis(expected), "attempts {gap:?} apart, the schedule says {expected}ms");
    }
    app.settled_deliveries().await;
    let detail = detail(&app, received[0].header("webhook-id")).await;
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(attempt_codes(&detail), [json!(503), json!(503), json!(204)]);
}

#[tokio::test]
async fn after_the_last_attempt_a_delivery_is_failed_and_kept() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering(|_| Reply::status(500).with_body("down for maintenance")).await;
    let endpoint = app.add_endpoint(json!({"url": receiver.url("/")})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    // The server's schedule is 200ms,200ms: 3 attempts in all.
    let received = receiver.take(3).await;
    let id = received[0].header("webhook-id");
    assert!(received.iter().all(|r| r.header("webhook-id") == id));

    let settled = app.settled_deliveries().await;
    assert_eq!(settled.len(), 1);
    let detail = detail(&app, id).await;
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["attempts"], 3);
    assert_eq!(detail["endpoint_id"], endpoint);
    assert_eq!(detail["next_attempt_at"], Value::Null);
    assert_eq!(attempt_codes(&detail), [json!(500), json!(500), json!(500)]);
    assert_eq!(detail["attempts_log"][2]["response"], "down for maintenance");
    assert!(receiver.drain().is_empty(), "a fourth attempt was made");
    let failed = app.get("/api/v1/deliveries?status=failed").await;
    assert_eq!(failed.body["items"][0]["id"], id);
}

/// How one failed attempt should show in the log.
struct Case {
    what: &'static str,
    url: String,
    status_code: Option<u16>,
    error: Option<&'static str>,
}

#[tokio::test]
async fn failed_attempts_are_recorded_with_their_status_or_error_in_words() {
    let app = TestApp::spawn().await;
    let mut redirect_target = Receiver::start().await;
    let location = redirect_target.url("/elsewhere");
    let redirecting = Receiver::answering(move |_| Reply::status(302).with_header("location", &location)).await;
    let moved = Receiver::answering(move |_| Reply::status(301).with_header("location", "/other")).await;
    let server_error = Receiver::answering(|_| Reply::status(500)).await;
    let not_found = Receiver::answering(|_| Reply::status(404).with_body("no such hook")).await;
    let bad_request = Receiver::answering(|_| Reply::status(400)).await;
    let dead = dead_address().await;
    let cases = [
        Case { what: "302", url: redirecting.url("/"), status_code: Some(302), error: None },
        Case { what: "301", url: moved.url("/"), status_code: Some(301), error: None },
        Case { what: "500", url: server_error.url("/"), status_code: Some(500), error: None },
        Case { what: "404", url: not_found.url("/"), status_code: Some(404), error: None },
        Case { what: "400", url: bad_request.url("/"), status_code: Some(400), error: None },
        Case { what: "refused", url: format!("http://{dead}/"), status_code: None, error: Some("connection refused") },
    ];
    let mut endpoints = Vec::new();
    for case in &cases {
        endpoints.push(app.add_endpoint(json!({"url": case.url, "retry_schedule": ""})).await);
    }
    app.create("contacts", json!({"first_name": "Ada"})).await;
    app.settled_deliveries().await;

    for (case, endpoint) in cases.iter().zip(&endpoints) {
        let log = app.get(&format!("/api/v1/deliveries?endpoint_id={endpoint}")).await;
        let items = log.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{}: {}", case.what, log.body);
        let detail = detail(&app, items[0]["id"].as_str().unwrap()).await;
        assert_eq!(detail["status"], "failed", "{}: {detail}", case.what);
        let attempt = &detail["attempts_log"][0];
        assert_eq!(attempt["status_code"], json!(case.status_code), "{}: {detail}", case.what);
        match case.error {
            Some(words) => {
                let error = attempt["error"].as_str().unwrap_or_default();
                assert!(error.contains(words), "{}: error {error:?} should say {words:?}", case.what);
                assert_eq!(detail["last_error"], attempt["error"], "{}", case.what);
            }
            None => assert_eq!(attempt["error"], Value::Null, "{}: {detail}", case.what),
        }
    }
    assert!(redirect_target.drain().is_empty(), "a redirect was followed");
}

#[tokio::test]
async fn a_timeout_is_a_failed_attempt_told_in_words() {
    let app = TestApp::spawn_with(&["--delivery-timeout", "300ms"]).await;
    let mut slow = Receiver::answering(|_| Reply::status(200).with_delay(Duration::from_secs(2))).await;
    app.add_endpoint(json!({"url": slow.url("/"), "retry_schedule": "100ms"})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let received = slow.take(2).await;
    app.settled_deliveries().await;
    let detail = detail(&app, received[0].header("webhook-id")).await;
    assert_eq!(detail["status"], "failed", "{detail}");
    for attempt in detail["attempts_log"].as_array().unwrap() {
        assert_eq!(attempt["status_code"], Value::Null, "{detail}");
        assert_eq!(attempt["error"], "timed out after 300ms", "{detail}");
        assert!(attempt["duration_ms"].as_u64().unwrap() < 2000, "the attempt waited for the receiver: {detail}");
    }
}

#[tokio::test]
async fn a_redirect_fails_every_attempt_and_is_never_followed() {
    let app = TestApp::spawn().await;
    let mut target = Receiver::start().await;
    let location = target.url("/new-home");
    let mut redirecting = Receiver::answering(move |_| Reply::status(307).with_header("location", &location)).await;
    app.add_endpoint(json!({"url": redirecting.url("/")})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let received = redirecting.take(3).await;
    app.settled_deliveries().await;
    let detail = detail(&app, received[0].header("webhook-id")).await;
    assert_eq!(detail["status"], "failed");
    assert_eq!(attempt_codes(&detail), [json!(307), json!(307), json!(307)]);
    assert!(target.drain().is_empty(), "the redirect target received something");
}

#[tokio::test]
async fn retry_after_on_429_pushes_the_next_attempt_back() {
    let app = TestApp::spawn().await;
    let (mut receiver, times) =
        timed(|n, _| if n == 1 { Reply::status(429).with_header("retry-after", "1") } else { Reply::status(200) })
            .await;
    app.add_endpoint(json!({"url": receiver.url("/"), "retry_schedule": "50ms"})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let (first, second) = (receiver.next().await, receiver.next().await);
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    let gap = gaps(&times)[0];
    assert!(gap >= Duration::from_secs(1), "Retry-After: 1 asked for a second, the retry came after {gap:?}");
    // webhook-timestamp is each attempt's own time: a second or more later here.
    let stamp = |r: &Received| r.header("webhook-timestamp").parse::<i64>().expect("Unix seconds");
    assert!(stamp(&second) > stamp(&first), "the retry carries the first attempt's webhook-timestamp");
    app.settled_deliveries().await;
    assert_eq!(attempt_codes(&detail(&app, first.header("webhook-id")).await), [json!(429), json!(200)]);
}

#[tokio::test]
async fn gone_stops_deliveries_to_the_endpoint() {
    let app = TestApp::spawn().await;
    let mut gone = Receiver::answering(|_| Reply::status(410)).await;
    let mut witness = Receiver::start().await;
    let gone_id = app.add_endpoint(json!({"url": gone.url("/"), "events": "contact.created"})).await;
    app.add_endpoint(json!({"url": witness.url("/"), "events": "contact.created"})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let received = gone.next().await;
    witness.next().await;
    app.settled_deliveries().await;

    let detail = detail(&app, received.header("webhook-id")).await;
    assert_eq!(detail["status"], "failed", "a 410 fails the delivery at once: {detail}");
    assert_eq!(detail["attempts"], 1);
    let endpoint = app.get(&format!("/api/v1/webhooks/{gone_id}")).await;
    assert_eq!(endpoint.body["active"], false, "{}", endpoint.body);
    let reason = endpoint.body["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "disabled_reason {reason:?}");

    app.create("contacts", json!({"first_name": "Grace"})).await;
    witness.next().await;
    app.settled_deliveries().await;
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={gone_id}")).await;
    assert_eq!(log.body["items"].as_array().unwrap().len(), 1, "{}", log.body);
    assert!(gone.drain().is_empty(), "a gone endpoint got a later event");

    // Switching it back on clears the reason.
    let revived = app.patch(&format!("/api/v1/webhooks/{gone_id}"), json!({"active": true})).await;
    assert_eq!(revived.body["active"], true);
    assert_eq!(revived.body["disabled_reason"], Value::Null);
}

#[tokio::test]
async fn gone_stops_the_attempts_queued_behind_it() {
    let app = TestApp::spawn().await;
    let mut gone = Receiver::answering(|_| Reply::status(410)).await;
    let id = app.add_endpoint(json!({"url": gone.url("/"), "max_in_flight": 1})).await;
    let rows: Vec<Value> = (0..4).map(|i| json!({"first_name": format!("Queued {i}")})).collect();
    let created = app.post("/api/v1/contacts/bulk", json!({"create": rows})).await;
    assert!(created.status.is_success(), "{}", created.body);
    let first = gone.next().await;

    let deadline = tokio::time::Instant::now() + crate::helpers::PATIENCE;
    while app.get(&format!("/api/v1/webhooks/{id}")).await.body["active"] != false {
        assert!(tokio::time::Instant::now() < deadline, "the endpoint was never made inactive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One attempt at a time: each of the others could only start after the 410 came back.
    let after: Vec<String> = gone.drain().iter().map(|r| r.header("webhook-id").to_owned()).collect();
    assert!(after.is_empty(), "after {} answered 410 Gone, attempts went on: {after:?}", first.header("webhook-id"));
    // The three never attempted stay in the log, pending, as for a paused endpoint.
    let pending = app.get(&format!("/api/v1/deliveries?endpoint_id={id}&status=pending")).await;
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 3, "{}", pending.body);
}

#[tokio::test]
async fn a_failed_delivery_can_be_retried_by_hand() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering(|_| Reply::status(500)).await;
    app.add_endpoint(json!({"url": receiver.url("/"), "retry_schedule": ""})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let first = receiver.next().await;
    let id = first.header("webhook-id").to_owned();
    app.settled_deliveries().await;
    assert_eq!(detail(&app, &id).await["status"], "failed");

    receiver.answer_with(|_| Reply::status(200));
    let retried = app.post(&format!("/api/v1/deliveries/{id}/retry"), json!({})).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    let again = receiver.next().await;
    assert_eq!(again.header("webhook-id"), id);
    assert_eq!(again.body, first.body);
    app.settled_deliveries().await;
    let detail = detail(&app, &id).await;
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["attempts"], 2);
    assert_eq!(attempt_codes(&detail), [json!(500), json!(200)]);

    let unknown = app.post("/api/v1/deliveries/msg_nonesuch/retry", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_failed_delivery_of_an_endpoint_can_be_retried_at_once() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering(|_| Reply::status(503)).await;
    let mut other = Receiver::answering(|_| Reply::status(500)).await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "retry_schedule": ""})).await;
    let other_id = app.add_endpoint(json!({"url": other.url("/"), "retry_schedule": ""})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    app.create("contacts", json!({"first_name": "Grace"})).await;
    let mut failed: Vec<String> = receiver.take(2).await.iter().map(|r| r.header("webhook-id").to_owned()).collect();
    other.take(2).await;
    app.settled_deliveries().await;

    receiver.answer_with(|_| Reply::status(200));
    let answer = app.post(&format!("/api/v1/webhooks/{id}/retry-failed"), json!({})).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["retried"], 2, "{}", answer.body);
    let mut again: Vec<String> = receiver.take(2).await.iter().map(|r| r.header("webhook-id").to_owned()).collect();
    failed.sort();
    again.sort();
    assert_eq!(again, failed, "the same deliveries, with their webhook-ids");

    app.settled_deliveries().await;
    let succeeded = app.get(&format!("/api/v1/deliveries?endpoint_id={id}&status=succeeded")).await;
    assert_eq!(succeeded.body["items"].as_array().unwrap().len(), 2, "{}", succeeded.body);
    let still_failed = app.get(&format!("/api/v1/deliveries?endpoint_id={other_id}&status=failed")).await;
    assert_eq!(still_failed.body["items"].as_array().unwrap().len(), 2, "another endpoint's were retried too");
    assert!(other.drain().is_empty());

    let unknown = app.post("/api/v1/webhooks/ep_nonesuch/retry-failed", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}

#[tokio::test]
async fn a_retry_uses_the_url_and_secret_the_endpoint_has_when_it_starts() {
    let app = TestApp::spawn().await;
    let mut old = Receiver::answering(|_| Reply::status(500)).await;
    let mut new = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": old.url("/old"), "secret": "old-secret", "retry_schedule": "300ms"})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let first = old.next().await;
    let changed =
        app.patch(&format!("/api/v1/webhooks/{id}"), json!({"url": new.url("/new"), "secret": "new-secret"})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);

    let retried = new.next().await;
    assert_eq!(retried.path, "/new");
    assert_eq!(retried.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(retried.body, first.body);
    let mut mac = Hmac::<Sha256>::new_from_slice(b"new-secret").unwrap();
    mac.update(&retried.body);
    assert_eq!(
        retried.header("x-crm-signature"),
        hex::encode(mac.finalize().into_bytes()),
        "signed with the new secret"
    );
    app.settled_deliveries().await;
    assert!(old.drain().is_empty(), "the old URL got the retry");
}
