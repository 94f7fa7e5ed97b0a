//! Safety of destinations: a server started without `--allow-private-targets` refuses loopback,
//! private, link-local, shared and unspecified destinations, when saved and when sent to.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Receiver, TestApp};

/// A request with the admin token, answered as (status, JSON body).
async fn request(app: &TestApp, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let answer = app.request(method, path, Some(body)).await;
    (answer.status, answer.body)
}

/// Saves `url` by each way there is and checks the refusal: 422 with a url message starting
/// `blocked: ` that contains `words`.
async fn check(app: &TestApp, existing: &str, url: &str, words: &str) {
    let attempts = [
        (Method::POST, "/api/v1/webhooks".to_owned()),
        (Method::PATCH, format!("/api/v1/webhooks/{existing}")),
        (Method::PUT, "/api/v1/settings/webhook".to_owned()),
    ];
    for (method, path) in attempts {
        let (status, body) = request(app, method.clone(), &path, json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path} {url}: {body}");
        let message = body["error"]["fields"]["url"].as_str().unwrap_or_default();
        assert!(message.starts_with("blocked: "), "{method} {path} {url}: {message:?}");
        assert!(message.contains(words), "{method} {path} {url}: {message:?} should say {words:?}");
    }
}

#[tokio::test]
async fn private_destinations_are_refused_when_saved() {
    let app = TestApp::spawn_public_only().await;
    let receiver = Receiver::start().await;
    // A public address is accepted (nothing is sent to it here: no record changes).
    let (status, created) =
        request(&app, Method::POST, "/api/v1/webhooks", json!({"url": "https://93.184.216.34/"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let existing = created["id"].as_str().unwrap();

    check(&app, existing, &receiver.url("/"), "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://2130706433/", "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://0x7f000001/", "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://127.1/", "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://[::1]/", "::1 is a loopback address").await;
    check(&app, existing, "http://[::ffff:127.0.0.1]/", "loopback").await;
    check(&app, existing, "http://0.0.0.0/", "0.0.0.0 is an unspecified address").await;
    check(&app, existing, "http://10.0.0.5/", "10.0.0.5 is a private address").await;
    check(&app, existing, "http://192.168.1.10:8080/hook", "private").await;
    check(&app, existing, "http://172.16.0.1/", "private").await;
    check(&app, existing, "http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address").await;
    check(&app, existing, "http://100.64.0.1/", "100.64.0.1").await;
    check(&app, existing, "http://[fd00::1]/", "unique-local").await;
    check(&app, existing, "http://[fe80::1]/", "link-local").await;
    check(&app, existing, "http://224.0.0.1/", "multicast").await;
    check(&app, existing, "http://LOCALHOST./", "localhost is a loopback address").await;
    check(&app, existing, "http://localhost/", "localhost is a loopback address").await;
    check(&app, existing, "http://api.localhost:9000/", "loopback").await;

    // Nothing refused was saved.
    let (_, listed) = request(&app, Method::GET, "/api/v1/webhooks", json!(null)).await;
    let urls: Vec<&Value> = listed["items"].as_array().unwrap().iter().map(|e| &e["url"]).collect();
    assert_eq!(urls, [&json!("https://93.184.216.34/")]);
    let (_, settings) = request(&app, Method::GET, "/api/v1/settings/webhook", json!(null)).await;
    assert_eq!(settings["has_secret"], false);
    assert_ne!(settings["url"], receiver.url("/"));
}

#[tokio::test]
async fn the_test_button_refuses_a_private_destination_and_sends_nothing() {
    let app = TestApp::spawn_public_only().await;
    let mut receiver = Receiver::start().await;
    for url in [receiver.url("/"), format!("http://localhost:{}/", receiver.address.port())] {
        let (status, result) = request(&app, Method::POST, "/api/v1/settings/webhook/test", json!({"url": url})).await;
        assert_eq!(status, StatusCode::OK, "{url}: {result}");
        assert_eq!(result["ok"], false, "{url}: {result}");
        assert_eq!(result["status_code"], Value::Null, "{url}: {result}");
        let error = result["error"].as_str().unwrap_or_default();
        assert!(error.contains("blocked"), "{url}: error {error:?}");
    }
    assert!(receiver.drain().is_empty(), "a blocked destination received a request");
}

#[tokio::test]
async fn credentials_and_over_long_urls_are_refused() {
    let app = TestApp::spawn_public_only().await;
    let too_long = format!("https://93.184.216.34/{}", "a".repeat(2048));
    let cases = [
        ("https://user:pw@93.184.216.34/", "password"),
        ("https://user@93.184.216.34/", "user"),
        (too_long.as_str(), "2048"),
        ("ftp://93.184.216.34/", "http"),
        ("file:///etc/passwd", "http"),
    ];
    for (url, words) in cases {
        let (status, body) = request(&app, Method::POST, "/api/v1/webhooks", json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        let message = body["error"]["fields"]["url"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{url}: {message:?} should say {words:?}");
        let (status, body) = request(&app, Method::POST, "/api/v1/settings/webhook/test", json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "test button {url}: {body}");
    }
}
