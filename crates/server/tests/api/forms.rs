//! The public enquiry form: no token, urlencoded or JSON, a honeypot, redirects that stay on the
//! site, 16 KiB at most, a rate limit per client address, and answers that reveal nothing.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::{Answer, TestApp};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// Posts to the form, without a token, a body of this content type.
async fn submit(app: &TestApp, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let request = Request::builder()
        .method("POST")
        .uri(app.url("/forms/enquiry"))
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap();
    app.send(request).await
}

/// A urlencoded form body, as a browser sends it.
fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

async fn enquiries(app: &TestApp) -> Vec<Value> {
    app.get("/api/v1/enquiries?limit=1000").await.body["items"].as_array().unwrap().clone()
}

/// Asserts the form's plain acceptance: 201, no redirect, and a body that names nothing stored.
fn assert_accepted(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&answer.raw));
    assert!(answer.headers.get("location").is_none());
    assert_eq!(answer.body, json!({"ok": true}));
}

#[tokio::test]
async fn a_urlencoded_submission_creates_an_enquiry() {
    let app = TestApp::spawn().await;
    let body = form(&[
        ("name", "Jane Doe"),
        ("email", "jane@example.com"),
        ("phone", "+1 555 0100"),
        ("message", "Is 1 Main St still available? Ünïcode & more"),
        ("property_id", "listing-42"),
        ("source", "website"),
        ("website", ""),
        ("submit", "Send"),
        ("utm_campaign", "spring"),
    ]);
    assert_accepted(&submit(&app, URLENCODED, body).await);
    let stored = enquiries(&app).await;
    assert_eq!(stored.len(), 1);
    let enquiry = &stored[0];
    for (name, value) in [
        ("name", "Jane Doe"),
        ("email", "jane@example.com"),
        ("phone", "+1 555 0100"),
        ("message", "Is 1 Main St still available? Ünïcode & more"),
        ("property_id", "listing-42"),
        ("source", "website"),
    ] {
        assert_eq!(enquiry[name], value, "{name}");
    }
    let contacts = app.get("/api/v1/contacts").await.body["items"].clone();
    assert_eq!(contacts[0]["email"], "jane@example.com");
    assert_eq!(enquiry["contact_id"], contacts[0]["id"]);
    assert_eq!(app.event_names().await, ["contact.created", "enquiry.created"]);
    let log = app.get("/api/v1/events").await;
    assert_eq!(log.body["items"][0]["body"]["data"], *enquiry);
}

#[tokio::test]
async fn a_json_submission_creates_an_enquiry_linked_to_a_known_contact() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Jane", "email": "jane@example.com"})).await;
    let body = json!({"name": "Jane", "email": "JANE@example.com", "message": "Hello", "website": "", "consent": true});
    assert_accepted(&submit(&app, "application/json", body.to_string()).await);
    let stored = enquiries(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!((&stored[0]["email"], &stored[0]["message"]), (&json!("JANE@example.com"), &json!("Hello")));
    assert_eq!(stored[0]["contact_id"], contact["id"]);
    assert_eq!(app.event_names().await, ["contact.created", "enquiry.created"], "only enquiry.created is new");
}

#[tokio::test]
async fn the_honeypot_discards_a_submission_quietly() {
    let app = TestApp::spawn().await;
    let real = submit(&app, URLENCODED, form(&[("name", "Real"), ("email", "real@example.com")])).await;
    assert_accepted(&real);
    let events = app.event_names().await;
    let bot = submit(
        &app,
        URLENCODED,
        form(&[("name", "Bot"), ("email", "bot@example.com"), ("website", "http://spam.example")]),
    )
    .await;
    assert_accepted(&bot);
    assert_eq!(bot.raw, real.raw, "the bot cannot tell");
    let bot = json!({"name": "Bot", "email": "bot2@example.com", "website": "x"});
    assert_accepted(&submit(&app, "application/json", bot.to_string()).await);
    let stored = enquiries(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["name"], "Real");
    assert_eq!(app.get("/api/v1/contacts").await.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.event_names().await, events, "a discarded submission fires nothing");
}

#[tokio::test]
async fn a_honeypot_that_is_not_a_string_discards_too() {
    let app = TestApp::spawn().await;
    for website in [json!(1), json!(true), json!(["http://spam.example"]), json!({"url": "http://spam.example"})] {
        let bot = json!({"name": "Bot", "email": "bot@example.com", "website": website});
        assert_accepted(&submit(&app, "application/json", bot.to_string()).await);
    }
    assert_eq!(enquiries(&app).await, Vec::<Value>::new(), "a filled honeypot of any JSON type is a bot");
    assert!(app.event_names().await.is_empty());
}

#[tokio::test]
async fn a_redirect_on_this_site_answers_303_and_one_elsewhere_is_ignored() {
    let app = TestApp::spawn().await;
    let thanks = app.url("/thanks?from=form");
    let answer = submit(&app, URLENCODED, form(&[("name", "Jane"), ("redirect", &thanks)])).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&answer.raw));
    assert_eq!(answer.headers.get("location").and_then(|v| v.to_str().ok()), Some(thanks.as_str()));
    assert_eq!(enquiries(&app).await.len(), 1, "a redirected submission is stored too");

    let other_port = format!("http://{}:{}/thanks", app.address.ip(), app.address.port() ^ 1);
    let https = format!("https://{}/thanks", app.address);
    for elsewhere in [
        "https://evil.example/thanks",
        "//evil.example/thanks",
        "/thanks",
        "javascript:alert(1)",
        other_port.as_str(),
        https.as_str(),
    ] {
        let answer = submit(&app, URLENCODED, form(&[("name", "Jane"), ("redirect", elsewhere)])).await;
        assert_accepted(&answer);
    }
    let json_redirect = json!({"name": "Jane", "redirect": thanks}).to_string();
    assert_eq!(submit(&app, "application/json", json_redirect).await.status, StatusCode::SEE_OTHER);
    assert_eq!(enquiries(&app).await.len(), 8);
}

#[tokio::test]
async fn a_redirect_follows_the_site_url() {
    let app = TestApp::spawn_with(&["--site-url", "https://crm.example.com"]).await;
    let answer =
        submit(&app, URLENCODED, form(&[("name", "Jane"), ("redirect", "https://crm.example.com/thanks")])).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers["location"], "https://crm.example.com/thanks");
    let local = app.url("/thanks");
    assert_accepted(&submit(&app, URLENCODED, form(&[("name", "Jane"), ("redirect", &local)])).await);
}

#[tokio::test]
async fn a_submission_over_16_kib_answers_413() {
    let app = TestApp::spawn().await;
    let filler = |size: usize| {
        let head = form(&[("name", "Jane"), ("email", "jane@example.com"), ("notes", "")]);
        format!("{head}{}", "x".repeat(size - head.len()))
    };
    let answer = submit(&app, URLENCODED, filler(16 * 1024 + 1)).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &[]);
    let big_json = json!({"name": "Jane", "message": "m".repeat(20_000)}).to_string();
    assert_error(
        &submit(&app, "application/json", big_json).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &[],
    );
    assert!(enquiries(&app).await.is_empty());
    assert!(app.event_names().await.is_empty());
    assert_accepted(&submit(&app, URLENCODED, filler(16 * 1024)).await);
    assert_eq!(enquiries(&app).await.len(), 1);
}

#[tokio::test]
async fn too_many_submissions_from_one_address_answer_429() {
    let app = TestApp::spawn_with(&["--form-rate-per-minute", "3"]).await;
    for n in 0..3 {
        let answer = submit(&app, URLENCODED, form(&[("name", &format!("Jane {n}"))])).await;
        assert_accepted(&answer);
    }
    let answer = submit(&app, URLENCODED, form(&[("name", "Jane 3")])).await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited", &[]);
    assert_eq!(enquiries(&app).await.len(), 3);
    // The limit is the form's: the API is not held back by it.
    assert_eq!(app.create("enquiries", json!({"name": "By the API"})).await["name"], "By the API");
}

#[tokio::test]
async fn the_forms_answers_reveal_nothing() {
    let app = TestApp::spawn().await;
    let known = app.create("contacts", json!({"first_name": "Jane", "email": "jane@example.com"})).await;
    let first = submit(&app, URLENCODED, form(&[("name", "Jane"), ("email", "jane@example.com")])).await;
    let second = submit(&app, URLENCODED, form(&[("name", "Nobody"), ("email", "nobody@example.com")])).await;
    assert_accepted(&first);
    assert_eq!(first.raw, second.raw, "a known email and a new one get the same answer");
    let text = String::from_utf8_lossy(&first.raw).into_owned();
    let stored = enquiries(&app).await;
    for secret in [
        known["id"].as_str().unwrap(),
        stored[0]["id"].as_str().unwrap(),
        stored[1]["id"].as_str().unwrap(),
        "jane",
        "nobody",
        "\"id\"",
    ] {
        assert!(!text.contains(secret), "the answer {text} mentions {secret}");
    }
    for name in ["location", "set-cookie"] {
        assert!(first.headers.get(name).is_none(), "{name}");
    }
}

#[tokio::test]
async fn the_form_takes_only_urlencoded_or_json() {
    let app = TestApp::spawn().await;
    for content_type in ["text/plain", "multipart/form-data; boundary=x", ""] {
        let answer = submit(&app, content_type, "name=Jane").await;
        assert_error(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", &[]);
    }
    assert_error(
        &submit(&app, "application/json", "{\"name\": ").await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
        &[],
    );
    assert_error(
        &submit(&app, "application/json", "[1]").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        &["body"],
    );
    let invalid = submit(&app, URLENCODED, form(&[("name", "Jane"), ("email", "not-an-email")])).await;
    assert_error(&invalid, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["email"]);
    let empty = submit(&app, URLENCODED, form(&[("message", "who am I?")])).await;
    assert_error(&empty, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["email"]);
    assert!(enquiries(&app).await.is_empty());
    assert_accepted(&submit(&app, "application/x-www-form-urlencoded; charset=UTF-8", "name=Jane").await);
}
