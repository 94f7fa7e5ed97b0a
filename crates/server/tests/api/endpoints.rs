//! The endpoints API (`/api/v1/webhooks`) and the simple settings (`/api/v1/settings/webhook`):
//! what they accept, what they refuse, what they never show, and which events an endpoint gets.

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

use crate::helpers::{Receiver, Reply, TestApp};

/// A URL nothing is sent to in these tests (no record changes while it is saved).
const QUIET_URL: &str = "https://93.184.216.34/hook";

fn whsec(secret: &str) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret.as_bytes()))
}

/// Creates an endpoint with `field: value` and checks the answer: `Ok(shown)` means 201 with the
/// field shown as `shown`; `Err(words)` means 422 whose message for the field contains `words`.
async fn check(app: &TestApp, field: &str, value: Value, expected: Result<Value, &str>) {
    let mut body = json!({"url": QUIET_URL});
    body[field] = value.clone();
    let answer = app.post("/api/v1/webhooks", body).await;
    match expected {
        Ok(shown) => {
            assert_eq!(answer.status, StatusCode::CREATED, "{field} = {value}: {}", answer.body);
            assert_eq!(answer.body[field], shown, "{field} = {value}: {}", answer.body);
            let id = answer.body["id"].as_str().unwrap();
            let stored = app.get(&format!("/api/v1/webhooks/{id}")).await;
            assert_eq!(stored.body[field], shown, "{field} = {value} as stored: {}", stored.body);
        }
        Err(words) => {
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{field} = {value}: {}", answer.body);
            let message = answer.body["error"]["fields"][field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} = {value}: the 422 does not name the field: {}", answer.body));
            assert!(message.contains(words), "{field} = {value}: {message:?} should contain {words:?}");
        }
    }
}

#[tokio::test]
async fn endpoints_are_created_listed_read_changed_and_deleted() {
    let app = TestApp::spawn().await;
    let created = app
        .post(
            "/api/v1/webhooks",
            json!({"url": QUIET_URL, "events": "contact.created", "description": "the CRM mirror"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(created.body["url"], QUIET_URL);
    assert_eq!(created.body["events"], "contact.created");
    assert_eq!(created.body["active"], true);
    assert_eq!(created.body["has_secret"], false);
    assert_eq!(created.body["description"], "the CRM mirror");

    let listed = app.get("/api/v1/webhooks").await;
    assert_eq!(listed.status, StatusCode::OK);
    let ids: Vec<&str> = listed.body["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);

    let read = app.get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["url"], QUIET_URL);

    let patched = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"events": ["deal.won"], "active": false})).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let read = app.get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(read.body["events"], "deal.won");
    assert_eq!(read.body["active"], false);
    assert_eq!(read.body["url"], QUIET_URL, "a field left out of a PATCH stays");
    assert_eq!(read.body["description"], "the CRM mirror");

    let deleted = app.delete(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/v1/webhooks").await.body["items"], json!([]));
}

#[tokio::test]
async fn events_are_a_comma_list_an_array_or_a_star() {
    let app = TestApp::spawn().await;
    check(&app, "events", json!("contact.created,deal.won"), Ok(json!("contact.created,deal.won"))).await;
    check(&app, "events", json!(" deal.won ,  contact.created "), Ok(json!("contact.created,deal.won"))).await;
    check(&app, "events", json!(["deal.won", "contact.created"]), Ok(json!("contact.created,deal.won"))).await;
    check(&app, "events", json!("*"), Ok(json!("*"))).await;
    check(&app, "events", json!(["*"]), Ok(json!("*"))).await;
    check(&app, "events", json!("deal.stage_changed"), Ok(json!("deal.stage_changed"))).await;
    check(&app, "events", json!("deal.won, deal.won"), Ok(json!("deal.won"))).await;

    check(&app, "events", json!("contact.made"), Err("contact.made")).await;
    check(&app, "events", json!(["deal.won", "deal.signed"]), Err("deal.signed")).await;
    check(&app, "events", json!(5), Err("")).await;
    // The refusal names the valid events.
    let answer = app.post("/api/v1/webhooks", json!({"url": QUIET_URL, "events": "contact.made"})).await;
    let message = answer.body["error"]["fields"]["events"].as_str().unwrap_or_default().to_owned();
    for valid in ["contact.created", "lead.deleted", "enquiry.created", "deal.stage_changed", "task.completed"] {
        assert!(message.contains(valid), "{message:?} should name {valid}");
    }
}

#[tokio::test]
async fn retry_schedules_and_max_in_flight_are_validated() {
    let app = TestApp::spawn().await;
    check(&app, "retry_schedule", json!("30s,5m,2h"), Ok(json!("30s,5m,2h"))).await;
    check(&app, "retry_schedule", json!(" 500ms , 1s"), Ok(json!("500ms,1s"))).await;
    check(&app, "retry_schedule", json!(["500ms", "2h"]), Ok(json!("500ms,2h"))).await;
    check(&app, "retry_schedule", json!(vec!["1s"; 20].join(",")), Ok(json!(vec!["1s"; 20].join(",")))).await;
    check(&app, "retry_schedule", json!(""), Ok(json!(""))).await;
    check(&app, "retry_schedule", json!([]), Ok(json!(""))).await;

    check(&app, "retry_schedule", json!("5x"), Err("5x")).await;
    check(&app, "retry_schedule", json!("5m,soon"), Err("soon")).await;
    check(&app, "retry_schedule", json!("-5s"), Err("")).await;
    check(&app, "retry_schedule", json!(vec!["1s"; 21].join(",")), Err("20")).await;
    check(&app, "retry_schedule", json!(vec!["1s"; 21]), Err("20")).await;
    check(&app, "retry_schedule", json!(30), Err("")).await;

    check(&app, "max_in_flight", json!(1), Ok(json!(1))).await;
    check(&app, "max_in_flight", json!(1024), Ok(json!(1024))).await;
    check(&app, "max_in_flight", json!(0), Err("")).await;
    check(&app, "max_in_flight", json!(-3), Err("")).await;
    check(&app, "max_in_flight", json!(1025), Err("")).await;
    check(&app, "max_in_flight", json!("2"), Err("")).await;
    check(&app, "max_in_flight", json!(2.5), Err("")).await;

    // Nothing refused was saved.
    let listed = app.get("/api/v1/webhooks?limit=1000").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 8, "{}", listed.body);
    // A PATCH is held to the same rules.
    let id = app.add_endpoint(json!({"url": QUIET_URL})).await;
    for bad in [json!({"retry_schedule": "5x"}), json!({"max_in_flight": 0}), json!({"events": "nope"})] {
        let answer = app.patch(&format!("/api/v1/webhooks/{id}"), bad.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", answer.body);
    }
}

#[tokio::test]
async fn urls_must_be_absolute_http_without_credentials_and_short() {
    let app = TestApp::spawn().await;
    check(&app, "url", json!("https://93.184.216.34/a?b=c"), Ok(json!("https://93.184.216.34/a?b=c"))).await;
    let longest = format!("https://93.184.216.34/{}", "a".repeat(2048 - "https://93.184.216.34/".len()));
    assert_eq!(longest.len(), 2048);
    check(&app, "url", json!(longest), Ok(json!(longest))).await;

    check(&app, "url", json!("ftp://93.184.216.34/hook"), Err("http")).await;
    check(&app, "url", json!("/relative/hook"), Err("http")).await;
    check(&app, "url", json!("example.com/hook"), Err("http")).await;
    check(&app, "url", json!("http://user:pw@93.184.216.34/"), Err("password")).await;
    check(&app, "url", json!("http://user@93.184.216.34/"), Err("user")).await;
    check(&app, "url", json!(format!("{longest}a")), Err("2048")).await;
    check(&app, "url", json!(42), Err("")).await;

    let missing = app.post("/api/v1/webhooks", json!({"events": "*"})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", missing.body);
    assert!(missing.body["error"]["fields"]["url"].is_string(), "{}", missing.body);
}

#[tokio::test]
async fn plain_http_is_accepted_with_a_warning() {
    let app = TestApp::spawn().await;
    let plain = app.post("/api/v1/webhooks", json!({"url": "http://93.184.216.34/hook"})).await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.body);
    let warnings = plain.body["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{}", plain.body);
    let warning = warnings[0].as_str().unwrap().to_ascii_lowercase();
    assert!(warning.contains("http") && warning.contains("https"), "{warning}");

    let tls = app.post("/api/v1/webhooks", json!({"url": QUIET_URL})).await;
    assert_eq!(tls.status, StatusCode::CREATED, "{}", tls.body);
    assert_eq!(tls.body["warnings"], json!([]), "{}", tls.body);

    let settings = app.put("/api/v1/settings/webhook", json!({"url": "http://93.184.216.34/primary"})).await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
    assert_eq!(settings.body["warnings"].as_array().map(Vec::len), Some(1), "{}", settings.body);
}

#[tokio::test]
async fn secrets_are_write_only() {
    let app = TestApp::spawn().await;
    let secret = "topsecret-value-1234";
    let created = app.post("/api/v1/webhooks", json!({"url": QUIET_URL, "secret": secret})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["has_secret"], true);
    assert_eq!(created.body["standard_webhooks_secret"], whsec(secret), "the response that set it shows it");
    assert!(created.body.get("secret").is_none(), "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();

    let read = app.get(&format!("/api/v1/webhooks/{id}")).await;
    let listed = app.get("/api/v1/webhooks").await;
    for answer in [&read, &listed] {
        let text = String::from_utf8_lossy(&answer.raw);
        assert!(!text.contains(secret), "the secret leaked: {text}");
        assert!(!text.contains(&whsec(secret)), "the secret leaked in its whsec form: {text}");
    }
    assert_eq!(read.body["has_secret"], true);
    assert!(read.body.get("secret").is_none());
    assert_eq!(listed.body["items"][0]["has_secret"], true);

    // A change that leaves the secret out keeps it; one that sets it shows the new one once.
    let patched = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"description": "x"})).await;
    assert_eq!(patched.body["has_secret"], true, "{}", patched.body);
    assert!(!String::from_utf8_lossy(&patched.raw).contains(secret));
    let rotated = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"secret": "another-secret"})).await;
    assert_eq!(rotated.body["standard_webhooks_secret"], whsec("another-secret"), "{}", rotated.body);
    assert!(!String::from_utf8_lossy(&rotated.raw).contains("another-secret"));

    // "" removes it.
    let removed = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"secret": ""})).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.body["has_secret"], false);
}

#[tokio::test]
async fn the_simple_settings_manage_the_primary_endpoint() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let mut other = Receiver::start().await;

    let before = app.get("/api/v1/settings/webhook").await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert_eq!(before.body["has_secret"], false);
    assert_eq!(before.body["standard_webhooks_secret"], Value::Null);

    let put = app
        .put(
            "/api/v1/settings/webhook",
            json!({"url": receiver.url("/hook"), "events": "contact.created, deal.won", "secret": "abc"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["standard_webhooks_secret"], whsec("abc"), "{}", put.body);
    assert!(!String::from_utf8_lossy(&put.raw).contains("\"abc\""), "{}", put.body);

    let settings = app.get("/api/v1/settings/webhook").await;
    assert_eq!(
        settings.body,
        json!({
            "url": receiver.url("/hook"),
            "events": "contact.created,deal.won",
            "active": true,
            "has_secret": true,
            "standard_webhooks_secret": whsec("abc"),
        })
    );
    let listed = app.get("/api/v1/webhooks").await;
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", listed.body);
    assert_eq!(items[0]["is_primary"], true);

    // It delivers like any endpoint.
    app.create("contacts", json!({"first_name": "Ada"})).await;
    assert_eq!(receiver.next().await.header("x-crm-event"), "contact.created");

    // A PUT without the secret changes the rest and keeps it; the primary endpoint stays one.
    let moved = app.put("/api/v1/settings/webhook", json!({"url": other.url("/moved")})).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let settings = app.get("/api/v1/settings/webhook").await;
    assert_eq!(settings.body["url"], other.url("/moved"));
    assert_eq!(settings.body["events"], "contact.created,deal.won");
    assert_eq!(settings.body["has_secret"], true);
    assert_eq!(settings.body["standard_webhooks_secret"], whsec("abc"));
    assert_eq!(app.get("/api/v1/webhooks").await.body["items"].as_array().unwrap().len(), 1);
    app.create("contacts", json!({"first_name": "Grace"})).await;
    let moved_delivery = other.next().await;
    assert_eq!(moved_delivery.path, "/moved");
    assert!(!moved_delivery.header("x-crm-signature").is_empty(), "the kept secret still signs");

    // The settings screen sends back what it read, read-only fields included.
    let echoed = app.put("/api/v1/settings/webhook", settings.body.clone()).await;
    assert_eq!(echoed.status, StatusCode::OK, "{}", echoed.body);
    assert_eq!(app.get("/api/v1/settings/webhook").await.body["has_secret"], true);

    // "" removes the secret.
    let cleared = app.put("/api/v1/settings/webhook", json!({"secret": ""})).await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    let settings = app.get("/api/v1/settings/webhook").await;
    assert_eq!(settings.body["has_secret"], false);
    assert_eq!(settings.body["standard_webhooks_secret"], Value::Null);
    assert_eq!(settings.body["url"], other.url("/moved"));

    // Bad values are refused here too.
    for bad in [json!({"events": "contact.made"}), json!({"url": "ftp://x/"}), json!({"active": "yes"})] {
        let answer = app.put("/api/v1/settings/webhook", bad.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", answer.body);
    }
    assert!(receiver.drain().is_empty(), "the old URL got something after the move");
}

#[tokio::test]
async fn an_endpoint_gets_only_events_from_while_it_is_active_and_subscribed() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let early = app.create("contacts", json!({"first_name": "Before"})).await;

    let id =
        app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "active": false, "max_in_flight": 1})).await;
    let ignored = app.create("contacts", json!({"first_name": "While inactive"})).await;
    // What an event owes is settled when it commits, so the log is complete already.
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={id}")).await;
    assert_eq!(log.body["items"], json!([]), "an inactive endpoint got deliveries");

    let activated = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"active": true})).await;
    assert_eq!(activated.status, StatusCode::OK, "{}", activated.body);
    let later = app.create("contacts", json!({"first_name": "After"})).await;
    // First attempts go in event order, so anything older would have arrived first.
    let first = receiver.next().await;
    assert_eq!(first.json()["data"]["id"], later["id"], "it got an event from before it was active");

    app.settled_deliveries().await;
    assert!(receiver.drain().is_empty());
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={id}")).await;
    assert_eq!(log.body["items"].as_array().unwrap().len(), 1, "{}", log.body);
    let sent: Vec<String> = app.get("/api/v1/events?limit=1000").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["body"]["data"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        sent.contains(&early["id"].as_str().unwrap().to_owned())
            && sent.contains(&ignored["id"].as_str().unwrap().to_owned())
    );

    // Unsubscribed events are not sent either.
    app.patch(&format!("/api/v1/webhooks/{id}"), json!({"events": "deal.created"})).await;
    app.create("contacts", json!({"first_name": "Unsubscribed"})).await;
    let deal = app.create("deals", json!({"title": "Flat"})).await;
    assert_eq!(receiver.next().await.json()["data"]["id"], deal["id"]);
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={id}")).await;
    assert_eq!(log.body["items"].as_array().unwrap().len(), 2, "{}", log.body);
}

#[tokio::test]
async fn events_from_before_a_subscription_change_are_still_delivered() {
    let app = TestApp::spawn().await;
    // The first attempt is held for a while, and one attempt at a time is allowed, so the second
    // contact's delivery is still waiting for its first attempt when the subscription changes.
    let mut receiver = Receiver::answering({
        let mut n = 0;
        move |_| {
            n += 1;
            let reply = Reply::status(200);
            if n == 1 { reply.with_delay(Duration::from_millis(500)) } else { reply }
        }
    })
    .await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "max_in_flight": 1})).await;
    let first = app.create("contacts", json!({"first_name": "First"})).await;
    assert_eq!(receiver.next().await.json()["data"]["id"], first["id"]);
    let waiting = app.create("contacts", json!({"first_name": "Waiting"})).await;

    let changed = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"events": "deal.created"})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    // Both are pending in the log: the one whose attempt is in flight and the one waiting.
    let pending = app.get(&format!("/api/v1/deliveries?endpoint_id={id}&status=pending")).await;
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 2, "{}", pending.body);
    app.create("contacts", json!({"first_name": "After the change"})).await;
    let deal = app.create("deals", json!({"title": "Flat"})).await;

    // The contact committed while it was subscribed arrives, then the deal; the later contact never.
    assert_eq!(receiver.next().await.json()["data"]["id"], waiting["id"]);
    assert_eq!(receiver.next().await.json()["data"]["id"], deal["id"]);
    let settled = app.settled_deliveries().await;
    assert_eq!(settled.len(), 3, "{settled:?}");
    assert!(receiver.drain().is_empty());
}
