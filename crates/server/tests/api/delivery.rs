//! What a delivery carries (headers, signatures, body), which endpoints get it, and how the
//! delivery log shows it.

use std::collections::HashSet;

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Received, Receiver, Reply, TestApp};

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn whsec(secret: &str) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret.as_bytes()))
}

fn header_map(received: &Received) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &received.headers {
        map.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

/// Checks the signature headers of `received` against the endpoint's secrets: the newest signs
/// X-CRM-Signature, and webhook-signature carries one `v1,` entry per secret, each verifying with
/// the official Standard Webhooks library. No secret, no signature headers.
fn check_signed(received: &Received, secrets: &[&str]) {
    let Some(current) = secrets.first() else {
        assert!(!received.headers.contains_key("x-crm-signature"), "{:?}", received.headers);
        assert!(!received.headers.contains_key("webhook-signature"), "{:?}", received.headers);
        return;
    };
    let crm = received.header("x-crm-signature");
    assert_eq!(crm, hmac_hex(current.as_bytes(), &received.body), "X-CRM-Signature");
    assert!(crm.len() == 64 && crm.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()), "{crm}");

    let entries: Vec<&str> = received.header("webhook-signature").split(' ').collect();
    assert_eq!(entries.len(), secrets.len(), "one v1 entry per valid secret: {entries:?}");
    assert!(entries.iter().all(|e| e.starts_with("v1,")), "{entries:?}");
    let headers = header_map(received);
    for secret in secrets {
        let webhook = standardwebhooks::Webhook::new(&whsec(secret)).expect("a whsec secret");
        webhook
            .verify(&received.body, &headers)
            .unwrap_or_else(|e| panic!("webhook-signature does not verify with {secret:?}: {e:?}"));
    }
    let stranger = standardwebhooks::Webhook::new(&whsec("not-the-secret")).unwrap();
    assert!(stranger.verify(&received.body, &headers).is_err(), "a wrong secret verifies");
}

#[test]
fn the_test_signature_helper_matches_a_known_vector() {
    assert_eq!(
        hmac_hex(b"key", b"The quick brown fox jumps over the lazy dog"),
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
    assert_eq!(whsec("whsec-test-secret"), "whsec_d2hzZWMtdGVzdC1zZWNyZXQ=");
}

#[tokio::test]
async fn a_delivery_carries_the_documented_headers() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    app.add_endpoint(json!({"url": receiver.url("/in"), "secret": "s3cret-key"})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let received = receiver.next().await;
    let now = chrono::Utc::now().timestamp();

    assert_eq!(received.path, "/in");
    assert_eq!(received.header("content-type"), "application/json");
    assert_eq!(received.header("user-agent"), format!("estate-crm/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(received.header("x-crm-event"), "contact.created");
    let id = received.header("webhook-id");
    assert!(!id.is_empty() && !id.contains('.'), "webhook-id {id:?}");
    assert_eq!(received.header("x-crm-delivery"), id);
    let timestamp: i64 = received.header("webhook-timestamp").parse().expect("Unix seconds");
    assert!((timestamp - now).abs() <= 30, "webhook-timestamp {timestamp} is not close to {now}");
    check_signed(&received, &["s3cret-key"]);

    // The webhook-id is the delivery's id in the log.
    let logged = app.get(&format!("/api/v1/deliveries/{id}")).await;
    assert_eq!(logged.status, StatusCode::OK, "{}", logged.body);
    assert_eq!(logged.body["event"], "contact.created");
}

#[tokio::test]
async fn without_a_secret_there_are_no_signature_headers() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "secret": "first"})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    check_signed(&receiver.next().await, &["first"]);

    app.patch(&format!("/api/v1/webhooks/{id}"), json!({"secret": ""})).await;
    app.create("contacts", json!({"first_name": "Grace"})).await;
    let unsigned = receiver.next().await;
    check_signed(&unsigned, &[]);
    assert!(!unsigned.header("webhook-id").is_empty(), "webhook-id is always sent");
    assert!(!unsigned.header("webhook-timestamp").is_empty(), "webhook-timestamp is always sent");
}

#[tokio::test]
async fn every_endpoint_gets_the_bytes_of_the_event_log() {
    let app = TestApp::spawn_with(&["--site-url", "https://crm.example.com"]).await;
    let mut first = Receiver::start().await;
    let mut second = Receiver::start().await;
    app.add_endpoint(json!({"url": first.url("/"), "secret": "one"})).await;
    app.add_endpoint(json!({"url": second.url("/")})).await;
    let contact = app.create("contacts", json!({"first_name": "Zoë", "tags": ["a", "b"]})).await;

    let (a, b) = (first.next().await, second.next().await);
    assert_eq!(a.body, b.body, "two endpoints got different bytes");
    assert_ne!(a.header("webhook-id"), b.header("webhook-id"), "one delivery per endpoint");

    let text = std::str::from_utf8(&a.body).expect("UTF-8");
    assert!(text.starts_with(r#"{"event":"contact.created","timestamp":""#), "{text}");
    assert!(text.ends_with(r#","site_url":"https://crm.example.com"}"#), "{text}");
    assert!(!text.contains('\n') && !text.contains(": "), "not compact: {text}");
    let body = a.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["event", "timestamp", "data", "site_url"]);
    let timestamp = body["timestamp"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
    assert!(timestamp.ends_with('Z') && timestamp.len() == 20, "{timestamp}");
    assert!((chrono::Utc::now().timestamp() - parsed.timestamp()).abs() <= 30, "{timestamp}");
    assert_eq!(body["data"], contact, "data is the contact as the API returns it");

    let events = app.get("/api/v1/events?event=contact.created").await;
    assert_eq!(events.body["items"][0]["body"], body, "the event log's body");
    for received in [&a, &b] {
        let logged = app.get(&format!("/api/v1/deliveries/{}", received.header("webhook-id"))).await;
        assert_eq!(logged.body["body"].as_str().unwrap().as_bytes(), &received.body[..]);
        assert_eq!(logged.body["event_id"], events.body["items"][0]["id"]);
    }
}

#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_new_one() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "secret": "old-secret"})).await;
    let changed = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"secret": "new-secret"})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    app.create("contacts", json!({"first_name": "Ada"})).await;
    check_signed(&receiver.next().await, &["new-secret", "old-secret"]);
}

#[tokio::test]
async fn an_endpoint_gets_only_the_events_it_subscribed_to() {
    let app = TestApp::spawn().await;
    let mut won_only = Receiver::start().await;
    let mut everything = Receiver::start().await;
    let won_id = app.add_endpoint(json!({"url": won_only.url("/"), "events": "deal.won"})).await;
    // One at a time, so that arrival order is event order.
    app.add_endpoint(json!({"url": everything.url("/"), "events": "*", "max_in_flight": 1})).await;

    app.create("contacts", json!({"first_name": "Ada"})).await;
    let deal = app.create("deals", json!({"title": "Flat on Main Street"})).await;
    let moved =
        app.patch(&format!("/api/v1/deals/{}", deal["id"].as_str().unwrap()), json!({"stage": "closed_won"})).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);

    let won = won_only.next().await;
    assert_eq!(won.header("x-crm-event"), "deal.won");
    assert_eq!(won.json()["data"]["stage"], "closed_won");
    let all: Vec<String> = everything.take(4).await.iter().map(|r| r.header("x-crm-event").to_owned()).collect();
    assert_eq!(all, ["contact.created", "deal.created", "deal.stage_changed", "deal.won"]);

    app.settled_deliveries().await;
    assert!(won_only.drain().is_empty());
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={won_id}")).await;
    let events: Vec<&Value> = log.body["items"].as_array().unwrap().iter().map(|d| &d["event"]).collect();
    assert_eq!(events, [&json!("deal.won")]);
}

/// Lists the delivery log with `query` and checks each delivery's (endpoint, status, event).
async fn check_log(app: &TestApp, query: &str, expected: &[(&str, &str, &str)]) {
    let answer = app.get(&format!("/api/v1/deliveries{query}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
    let items = answer.body["items"].as_array().unwrap_or_else(|| panic!("{query}: not a list: {}", answer.body));
    let found: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or_default();
            (field("endpoint_id"), field("status"), field("event"))
        })
        .collect();
    assert_eq!(found, expected, "{query}");
}

#[tokio::test]
async fn the_delivery_log_filters_and_shows_attempts() {
    let app = TestApp::spawn().await;
    let long_answer = "x".repeat(3000);
    let answer = long_answer.clone();
    let mut good = Receiver::answering(move |_| Reply::status(200).with_body(&answer)).await;
    let bad = Receiver::answering(|_| Reply::status(500).with_body("broken")).await;
    let good_id = app.add_endpoint(json!({"url": good.url("/")})).await;
    let bad_id = app.add_endpoint(json!({"url": bad.url("/"), "retry_schedule": ""})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    app.create("deals", json!({"title": "Flat"})).await;
    good.take(2).await;
    let all = app.settled_deliveries().await;
    assert_eq!(all.len(), 4, "{all:?}");

    let (g, b) = (good_id.as_str(), bad_id.as_str());
    // Newest first.
    let by_good = format!("?endpoint_id={g}");
    check_log(&app, &by_good, &[(g, "succeeded", "deal.created"), (g, "succeeded", "contact.created")]).await;
    check_log(&app, "?status=failed", &[(b, "failed", "deal.created"), (b, "failed", "contact.created")]).await;
    check_log(&app, "?event=deal.created", &[(b, "failed", "deal.created"), (g, "succeeded", "deal.created")]).await;
    let combined = format!("?endpoint_id={b}&event=contact.created&status=failed");
    check_log(&app, &combined, &[(b, "failed", "contact.created")]).await;
    check_log(&app, "?status=pending", &[]).await;
    check_log(&app, "?endpoint_id=ep_nonesuch", &[]).await;
    for bad_query in ["?status=lost", "?event=contact.made"] {
        let answer = app.get(&format!("/api/v1/deliveries{bad_query}")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad_query}: {}", answer.body);
    }

    // One delivery: its body and each attempt.
    let failed = app.get(&format!("/api/v1/deliveries?endpoint_id={b}&event=contact.created")).await;
    let failed_id = failed.body["items"][0]["id"].as_str().unwrap().to_owned();
    let detail = app.get(&format!("/api/v1/deliveries/{failed_id}")).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    let body: Value = serde_json::from_str(detail.body["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["event"], "contact.created");
    let attempts = detail.body["attempts_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{}", detail.body);
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["response"], "broken");
    assert!(attempts[0]["duration_ms"].is_u64(), "{}", detail.body);
    assert_eq!(detail.body["status"], "failed");
    assert_eq!(detail.body["attempts"], 1);
    assert_eq!(detail.body["last_status_code"], 500);

    let succeeded = app.get(&format!("/api/v1/deliveries?endpoint_id={g}&event=deal.created")).await;
    let detail = app.get(&format!("/api/v1/deliveries/{}", succeeded.body["items"][0]["id"].as_str().unwrap())).await;
    let attempt = &detail.body["attempts_log"][0];
    assert_eq!(attempt["status_code"], 200);
    assert_eq!(attempt["error"], Value::Null);
    assert_eq!(attempt["response"].as_str().unwrap(), &long_answer[..1024], "the first 1 KiB of the response");

    assert_eq!(app.get("/api/v1/deliveries/msg_nonesuch").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_large_response_is_read_in_part_and_kept_to_its_first_kib() {
    let app = TestApp::spawn().await;
    let huge: String = (0..200 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let answer = huge.clone();
    let mut receiver = Receiver::answering(move |_| Reply::status(200).with_body(&answer)).await;
    app.add_endpoint(json!({"url": receiver.url("/"), "retry_schedule": ""})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let id = receiver.next().await.header("webhook-id").to_owned();
    app.settled_deliveries().await;
    let detail = app.get(&format!("/api/v1/deliveries/{id}")).await.body;
    assert_eq!(detail["status"], "succeeded", "{}", detail["attempts_log"]);
    assert_eq!(detail["attempts_log"][0]["response"].as_str().unwrap(), &huge[..1024]);
}

#[tokio::test]
async fn a_bulk_create_gives_one_delivery_per_row_to_each_endpoint() {
    const ROWS: usize = 2000;
    let app = TestApp::spawn().await;
    let mut receivers = [Receiver::start().await, Receiver::start().await];
    for receiver in &receivers {
        app.add_endpoint(json!({"url": receiver.url("/"), "events": "contact.created"})).await;
    }
    let rows: Vec<Value> = (0..ROWS).map(|i| json!({"first_name": format!("Bulk {i}")})).collect();
    let answer = app.post("/api/v1/contacts/bulk", json!({"create": rows})).await;
    assert!(answer.status.is_success(), "{}", answer.body);
    let created: HashSet<String> =
        answer.body["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    assert_eq!(created.len(), ROWS);

    let mut all_ids = HashSet::new();
    for receiver in &mut receivers {
        let received = receiver.take(ROWS).await;
        let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
        assert_eq!(ids.len(), ROWS, "each webhook-id exactly once");
        let contacts: HashSet<String> =
            received.iter().map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(contacts, created, "one webhook per row");
        all_ids.extend(ids.into_iter().map(str::to_owned));
    }
    assert_eq!(all_ids.len(), 2 * ROWS, "deliveries to two endpoints share no id");

    // Once nothing is pending, nothing more arrives: no duplicates.
    let deadline = tokio::time::Instant::now() + crate::helpers::PATIENCE;
    while !app.get("/api/v1/deliveries?status=pending&limit=1").await.body["items"].as_array().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "deliveries still pending");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for receiver in &mut receivers {
        assert!(receiver.drain().is_empty(), "a duplicate arrived");
    }
}

/// The `estate_crm_queue_depth` gauge of one endpoint, read from /metrics.
async fn queue_depth(app: &TestApp, endpoint: &str) -> u64 {
    let metrics = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.raw).into_owned();
    let line = format!("estate_crm_queue_depth{{endpoint=\"{endpoint}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn the_queue_depth_counts_deliveries_waiting_for_their_first_attempt_and_for_a_retry() {
    let app = TestApp::spawn().await;
    // The first attempt is held; one at a time is allowed, so the others wait for their first.
    let mut receiver = Receiver::answering(|_| Reply::status(200).with_delay(std::time::Duration::from_secs(3))).await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "max_in_flight": 1})).await;
    for name in ["A", "B", "C"] {
        app.create("contacts", json!({"first_name": name})).await;
    }
    receiver.next().await;
    assert_eq!(queue_depth(&app, &id).await, 3, "the one in flight and the two waiting");
    // A test sent to the endpoint is in its log but is never queued.
    receiver.answer_with(|_| Reply::status(200));
    let tested = app.post(&format!("/api/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.body);
    assert_eq!(queue_depth(&app, &id).await, 3);
    app.settled_deliveries().await;
    assert_eq!(queue_depth(&app, &id).await, 0);
}
