//! The test button: one `webhook.test` event, sent at once, signed, without retries, kept in the log.

use hmac::{Hmac, KeyInit as _, Mac as _};
use hyper::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Received, Receiver, Reply, TestApp};

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Presses the button at `path` with `body` and checks the answer's `ok`, `status_code` and
/// `error` (`Some(words)`: the error contains them), and that it has the documented shape.
async fn check(
    app: &TestApp,
    path: &str,
    body: Value,
    ok: bool,
    status_code: Option<u16>,
    error: Option<&str>,
) -> Value {
    let answer = app.post(path, body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{path} {body}: {}", answer.body);
    let result = answer.body;
    assert_eq!(result["ok"], ok, "{path} {body}: {result}");
    assert_eq!(result["status_code"], json!(status_code), "{path} {body}: {result}");
    match error {
        Some(words) => {
            let error = result["error"].as_str().unwrap_or_default();
            assert!(error.contains(words), "{path} {body}: error {error:?} should say {words:?}");
        }
        None => assert_eq!(result["error"], Value::Null, "{path} {body}: {result}"),
    }
    assert!(result["body"].is_string(), "{result}");
    assert!(result["duration_ms"].is_u64(), "{result}");
    result
}

fn assert_is_a_test(received: &Received, secret: Option<&str>) {
    assert_eq!(received.header("x-crm-event"), "webhook.test");
    let body = received.json();
    assert_eq!(body["event"], "webhook.test");
    let contact = &body["data"];
    assert!(contact["id"].is_string() && contact["email"].is_string(), "a fake contact: {contact}");
    assert!(contact.get("first_name").is_some() && contact.get("lifecycle_stage").is_some(), "{contact}");
    match secret {
        Some(secret) => assert_eq!(received.header("x-crm-signature"), hmac_hex(secret.as_bytes(), &received.body)),
        None => assert!(!received.headers.contains_key("x-crm-signature")),
    }
}

#[tokio::test]
async fn the_settings_button_sends_one_signed_test_at_once() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering(|_| Reply::status(200).with_body("thanks")).await;
    app.put("/api/v1/settings/webhook", json!({"url": receiver.url("/hook"), "secret": "button-secret"})).await;

    let result = check(&app, "/api/v1/settings/webhook/test", json!({}), true, Some(200), None).await;
    assert_eq!(result["body"], "thanks");
    // The answer comes once it is done, so the request has already arrived.
    let received = receiver.drain();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].path, "/hook");
    assert_is_a_test(&received[0], Some("button-secret"));

    // It is kept in the delivery log.
    let id = received[0].header("webhook-id");
    let logged = app.get(&format!("/api/v1/deliveries/{id}")).await;
    assert_eq!(logged.status, StatusCode::OK, "{}", logged.body);
    assert_eq!(logged.body["event"], "webhook.test");
    assert_eq!(logged.body["status"], "succeeded");
    assert_eq!(logged.body["attempts"], 1);
    assert_eq!(logged.body["attempts_log"][0]["status_code"], 200);
    assert_eq!(logged.body["body"].as_str().unwrap().as_bytes(), &received[0].body[..]);
    let listed = app.get("/api/v1/deliveries?event=webhook.test").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{}", listed.body);
}

#[tokio::test]
async fn an_endpoints_button_reports_what_the_receiver_answered() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering(|_| Reply::status(200).with_body(&"é".repeat(300))).await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "events": "deal.won"})).await;
    let path = format!("/api/v1/webhooks/{id}/test");

    let result = check(&app, &path, json!({}), true, Some(200), None).await;
    assert_eq!(result["body"], "é".repeat(200), "the first 200 characters of the response");
    assert_is_a_test(&receiver.next().await, None);

    receiver.answer_with(|_| Reply::status(201));
    check(&app, &path, json!({}), true, Some(201), None).await;
    receiver.answer_with(|_| Reply::status(500).with_body("it broke"));
    let result = check(&app, &path, json!({}), false, Some(500), None).await;
    assert_eq!(result["body"], "it broke");
    receiver.answer_with(|_| Reply::status(302).with_header("location", "/elsewhere"));
    check(&app, &path, json!({}), false, Some(302), None).await;
    receiver.answer_with(|_| Reply::status(404));
    check(&app, &path, json!({}), false, Some(404), None).await;
    // A 410 to a test does not switch the endpoint off.
    receiver.answer_with(|_| Reply::status(410));
    check(&app, &path, json!({}), false, Some(410), None).await;
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.body["active"], true);
    assert_eq!(receiver.drain().len(), 5, "one request per press");

    let unknown = app.post("/api/v1/webhooks/ep_nonesuch/test", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    assert!(receiver.drain().is_empty());
}

#[tokio::test]
async fn a_transport_error_is_told_in_words() {
    let app = TestApp::spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    app.put("/api/v1/settings/webhook", json!({"url": format!("http://{dead}/")})).await;
    let result = check(&app, "/api/v1/settings/webhook/test", json!({}), false, None, Some("connection refused")).await;
    assert_eq!(result["body"], "");
    let logged = app.get("/api/v1/deliveries?event=webhook.test").await;
    assert_eq!(logged.body["items"][0]["status"], "failed", "{}", logged.body);
    assert_eq!(logged.body["items"][0]["last_error"], result["error"]);
}

#[tokio::test]
async fn a_slow_receiver_times_out_in_words() {
    let app = TestApp::spawn_with(&["--delivery-timeout", "300ms"]).await;
    let receiver = Receiver::answering(|_| Reply::status(200).with_delay(std::time::Duration::from_secs(2))).await;
    let id = app.add_endpoint(json!({"url": receiver.url("/")})).await;
    let started = std::time::Instant::now();
    check(&app, &format!("/api/v1/webhooks/{id}/test"), json!({}), false, None, Some("timed out after 300ms")).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "the test waited for the receiver");
}

#[tokio::test]
async fn unsaved_values_can_be_tested() {
    let app = TestApp::spawn().await;
    let mut saved = Receiver::start().await;
    let mut candidate = Receiver::start().await;
    app.put("/api/v1/settings/webhook", json!({"url": saved.url("/saved"), "secret": "saved-secret"})).await;
    let button = "/api/v1/settings/webhook/test";

    check(&app, button, json!({"url": candidate.url("/new"), "secret": "new-secret"}), true, Some(200), None).await;
    let received = candidate.drain();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/new");
    assert_is_a_test(&received[0], Some("new-secret"));

    // A field left out is taken from the saved endpoint.
    check(&app, button, json!({"url": candidate.url("/new")}), true, Some(200), None).await;
    assert_is_a_test(&candidate.drain()[0], Some("saved-secret"));
    check(&app, button, json!({"secret": "other-secret"}), true, Some(200), None).await;
    let received = saved.drain();
    assert_eq!(received.len(), 1);
    assert_is_a_test(&received[0], Some("other-secret"));
    check(&app, button, json!({"url": candidate.url("/new"), "secret": ""}), true, Some(200), None).await;
    assert_is_a_test(&candidate.drain()[0], None);

    // Nothing of it was saved.
    let settings = app.get("/api/v1/settings/webhook").await;
    assert_eq!(settings.body["url"], saved.url("/saved"));
    assert_eq!(settings.body["has_secret"], true);
    assert_eq!(app.get("/api/v1/webhooks").await.body["items"].as_array().unwrap().len(), 1);

    // Unsaved settings can be tested before anything is saved, and bad values are refused.
    let fresh = TestApp::spawn().await;
    check(&fresh, button, json!({"url": candidate.url("/first")}), true, Some(200), None).await;
    assert_eq!(candidate.drain().len(), 1);
    for bad in [json!({"url": "ftp://example.com/"}), json!({"url": 5}), json!({"colour": "red"})] {
        let answer = fresh.post(button, bad.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", answer.body);
    }
    let nothing_saved = fresh.post(button, json!({})).await;
    assert_eq!(nothing_saved.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", nothing_saved.body);
}

#[tokio::test]
async fn webhook_test_is_never_sent_to_subscriptions() {
    let app = TestApp::spawn().await;
    let mut everything = Receiver::start().await;
    let mut tested = Receiver::start().await;
    let everything_id = app.add_endpoint(json!({"url": everything.url("/"), "events": "*", "max_in_flight": 1})).await;
    let tested_id = app.add_endpoint(json!({"url": tested.url("/"), "events": "*"})).await;

    check(&app, &format!("/api/v1/webhooks/{tested_id}/test"), json!({}), true, Some(200), None).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    // First attempts go in event order: a webhook.test fanned out would arrive first.
    assert_eq!(everything.next().await.header("x-crm-event"), "contact.created");
    let at_tested: Vec<String> = tested.take(2).await.iter().map(|r| r.header("x-crm-event").to_owned()).collect();
    assert_eq!(at_tested, ["webhook.test", "contact.created"]);

    app.settled_deliveries().await;
    assert!(everything.drain().is_empty() && tested.drain().is_empty());
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={everything_id}&event=webhook.test")).await;
    assert_eq!(log.body["items"], json!([]), "{}", log.body);
}

#[tokio::test]
async fn a_failed_test_is_not_retried() {
    let app = TestApp::spawn().await;
    // The server retries after 200ms. The test fails, then a record change fails once and is
    // retried: a retry of the test would have been due first.
    let mut receiver = Receiver::answering({
        let mut n = 0;
        move |_| {
            n += 1;
            if n <= 2 { Reply::status(500) } else { Reply::status(200) }
        }
    })
    .await;
    let id = app.add_endpoint(json!({"url": receiver.url("/")})).await;
    let result = check(&app, &format!("/api/v1/webhooks/{id}/test"), json!({}), false, Some(500), None).await;
    assert_eq!(result["ok"], false);
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let events: Vec<String> = receiver.take(3).await.iter().map(|r| r.header("x-crm-event").to_owned()).collect();
    assert_eq!(events, ["webhook.test", "contact.created", "contact.created"]);

    app.settled_deliveries().await;
    assert!(receiver.drain().is_empty(), "the failed test was retried");
    let log = app.get("/api/v1/deliveries?event=webhook.test").await;
    let test = &log.body["items"][0];
    assert_eq!(test["status"], "failed", "{}", log.body);
    assert_eq!(test["attempts"], 1, "{}", log.body);
    assert_eq!(test["next_attempt_at"], Value::Null, "{}", log.body);
}
