//! Slack endpoints: `"format": "slack"` posts `{"text": ...}` with the one-line summary of each
//! event to a receiver standing in for a Slack incoming webhook, which refuses what Slack would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Received, Receiver, Reply, TestApp};

/// What Slack's incoming webhooks accept: a JSON object whose `text` is a non-empty string (at
/// most 40,000 characters), with `&`, `<` and `>` escaped unless they are Slack markup. Answers
/// what is wrong, or `None`.
fn slack_would_refuse(received: &Received) -> Option<String> {
    if !received.header("content-type").starts_with("application/json") {
        return Some(format!("content-type {:?}", received.header("content-type")));
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&received.body) else {
        return Some("not a JSON object".into());
    };
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    if text.trim().is_empty() || text.chars().count() > 40_000 {
        return Some(format!("text {text:?}"));
    }
    if text.contains('<') || text.contains('>') || text.contains('\n') {
        return Some(format!("unescaped markup or a line break in {text:?}"));
    }
    if body.len() != 1 {
        return Some(format!("more than text: {body:?}"));
    }
    None
}

/// A stand-in for Slack: 200 "ok" to what Slack accepts, 400 "invalid_payload" otherwise.
async fn fake_slack() -> Receiver {
    Receiver::answering(|received| match slack_would_refuse(received) {
        None => Reply::status(200).with_body("ok"),
        Some(_) => Reply::status(400).with_body("invalid_payload"),
    })
    .await
}

fn text(received: &Received) -> String {
    received.json()["text"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn every_event_kind_arrives_as_a_readable_line() {
    let app = TestApp::spawn().await;
    let mut slack = fake_slack().await;
    let created = app
        .post("/api/v1/webhooks", json!({"url": slack.url("/services/T0/B0/x"), "events": "*", "format": "slack"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["format"], "slack");

    let contact =
        app.create("contacts", json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"})).await;
    let contact_path = format!("/api/v1/contacts/{}", contact["id"].as_str().unwrap());
    app.patch(&contact_path, json!({"phone": "+1 555 0199"})).await;
    let lead =
        app.create("leads", json!({"contact_id": contact["id"], "lead_type": "Buyer", "lead_source": "Website"})).await;
    let lead_path = format!("/api/v1/leads/{}", lead["id"].as_str().unwrap());
    app.patch(&lead_path, json!({"message": "Wants a garden"})).await;
    app.delete(&lead_path).await;
    app.create("enquiries", json!({"name": "Bob Stone", "email": "bob@example.com", "message": "Still for sale?"}))
        .await;
    let deal = app.create("deals", json!({"title": "12 Elm St", "amount": 450000, "currency": "USD"})).await;
    app.patch(&format!("/api/v1/deals/{}", deal["id"].as_str().unwrap()), json!({"stage": "closed_won"})).await;
    app.create("deals", json!({"title": "Barn", "stage": "closed_lost", "amount": 99.5, "currency": "EUR"})).await;
    let task = app.create("tasks", json!({"title": "Call Ada back"})).await;
    let done = app.post(&format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    app.delete(&contact_path).await;

    let received = slack.take(14).await;
    let mut by_event: HashMap<String, Vec<String>> = HashMap::new();
    for r in &received {
        assert_eq!(slack_would_refuse(r), None, "{:?}", String::from_utf8_lossy(&r.body));
        by_event.entry(r.header("x-crm-event").to_owned()).or_default().push(text(r));
    }
    let expected = [
        ("contact.created", "New contact: Ada Lovelace &lt;ada@example.com&gt;"),
        ("contact.updated", "Contact updated: Ada Lovelace &lt;ada@example.com&gt;"),
        ("contact.deleted", "Contact deleted: Ada Lovelace &lt;ada@example.com&gt;"),
        ("lead.created", "New lead: Buyer lead from Website (New)"),
        ("lead.updated", "Lead updated: Buyer lead from Website (New) \u{201c}Wants a garden\u{201d}"),
        ("lead.deleted", "Lead deleted: Buyer lead from Website (New) \u{201c}Wants a garden\u{201d}"),
        ("enquiry.created", "New enquiry from Bob Stone &lt;bob@example.com&gt;: \u{201c}Still for sale?\u{201d}"),
        ("deal.stage_changed", "Deal moved from New to Closed Won: 12 Elm St, $450,000"),
        ("deal.won", "Deal won: 12 Elm St, $450,000"),
        ("deal.lost", "Deal lost: Barn, €99.50"),
        ("task.completed", "Task completed: Call Ada back"),
    ];
    for (event, line) in expected {
        assert!(by_event.get(event).is_some_and(|texts| texts.iter().any(|t| t == line)), "{event}: {by_event:?}");
    }
    assert!(by_event["deal.created"].contains(&"New deal: 12 Elm St, $450,000".to_owned()), "{by_event:?}");
    assert_eq!(by_event["contact.created"].len(), 2, "the enquiry's new contact too");

    // Logged like any delivery, and every one succeeded: the stand-in accepted each body.
    let deliveries = app.settled_deliveries().await;
    assert_eq!(deliveries.len(), 14);
    assert!(deliveries.iter().all(|d| d["status"] == "succeeded"), "{deliveries:?}");

    // The test button speaks Slack too.
    let id = created.body["id"].as_str().unwrap();
    let test = app.post(&format!("/api/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(test.body["ok"], true, "{}", test.body);
    assert!(text(&slack.next().await).starts_with("Test webhook from estate-crm: Ms Jane Doe"));
}

#[tokio::test]
async fn a_retry_sends_the_same_bytes_and_json_stays_the_default() {
    let app = TestApp::spawn().await;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let mut slack = Receiver::answering(move |received| {
        let mut seen = seen.lock().unwrap();
        seen.push(received.body.clone());
        Reply::status(if seen.len() == 1 { 503 } else { 200 })
    })
    .await;
    let id = app.add_endpoint(json!({"url": slack.url("/"), "events": "deal.won", "format": "slack"})).await;
    app.create("deals", json!({"title": "12 Elm St", "stage": "closed_won", "amount": 450000})).await;
    let (first, second) = (slack.next().await, slack.next().await);
    assert_eq!(first.body, second.body, "every attempt posts the same bytes");
    assert_eq!(text(&second), "Deal won: 12 Elm St, $450,000");

    // Back to JSON: the recorded envelope, as any endpoint gets it.
    let patched = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"format": "json"})).await;
    assert_eq!(patched.body["format"], "json", "{}", patched.body);
    app.create("deals", json!({"title": "13 Elm St", "stage": "closed_won"})).await;
    assert_eq!(slack.next().await.json()["event"], "deal.won");

    let refused = app.patch(&format!("/api/v1/webhooks/{id}"), json!({"format": "xml"})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body["error"]["fields"]["format"].is_string(), "{}", refused.body);
    let plain = app.add_endpoint(json!({"url": slack.url("/plain"), "events": "*"})).await;
    assert_eq!(app.get(&format!("/api/v1/webhooks/{plain}")).await.body["format"], "json");
}
