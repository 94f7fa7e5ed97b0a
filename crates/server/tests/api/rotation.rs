//! Secret rotation: `POST /api/v1/webhooks/{id}/rotate-secret` shows a new secret once; during the
//! grace period receivers holding the old secret and the new one both verify every delivery, and
//! after it only the new one does.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, Received, Receiver, SignatureCheck, TestApp};

const BOTH: SignatureCheck = SignatureCheck { standard: true, crm: true, crm_previous: false };

async fn rotate(app: &TestApp, path: &str, body: Value) -> Value {
    let answer = app.post(path, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// Makes a contact and answers the webhook it fires.
async fn next_delivery(app: &TestApp, receiver: &mut Receiver) -> Received {
    app.create("contacts", json!({"first_name": "Rota"})).await;
    receiver.next().await
}

#[tokio::test]
async fn during_the_grace_both_secrets_verify_and_after_it_only_the_new_one() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "secret": "first-secret"})).await;

    let rotated = rotate(&app, &format!("/api/v1/webhooks/{id}/rotate-secret"), json!({"grace": "1h"})).await;
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert!(second.len() >= 32 && second != "first-secret", "{rotated}");
    assert_eq!(rotated["standard_webhooks_secret"], format!("whsec_{}", base64_of(&second)));
    assert!(rotated["previous_secret_valid_until"].is_string(), "{rotated}");
    // Shown once: the endpoint never shows it again.
    assert!(
        !app.get(&format!("/api/v1/webhooks/{id}")).await.raw.windows(second.len()).any(|w| w == second.as_bytes())
    );

    let during = next_delivery(&app, &mut receiver).await;
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2, "{:?}", during.headers);
    assert_eq!(during.check_signatures(&second), BOTH);
    assert_eq!(
        during.check_signatures("first-secret"),
        SignatureCheck { standard: true, crm: false, crm_previous: true },
        "the old secret verifies webhook-signature and X-CRM-Signature-Previous"
    );

    // A second rotation with a short grace: the second secret is now the previous one, for a second.
    let rotated = rotate(&app, &format!("/api/v1/webhooks/{id}/rotate-secret"), json!({"grace": "1s"})).await;
    let third = rotated["secret"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let after = loop {
        let delivery = next_delivery(&app, &mut receiver).await;
        if delivery.header("webhook-signature").split(' ').count() == 1 {
            break delivery;
        }
        // Still within the grace: both hold.
        assert_eq!(delivery.check_signatures(&third), BOTH);
        assert!(delivery.check_signatures(&second).standard);
        assert!(tokio::time::Instant::now() < deadline, "the grace of 1s never ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(after.check_signatures(&third), BOTH);
    assert_eq!(after.check_signatures(&second), SignatureCheck { standard: false, crm: false, crm_previous: false });
    assert!(!after.headers.contains_key("x-crm-signature-previous"), "{:?}", after.headers);
}

#[tokio::test]
async fn a_zero_grace_switches_at_once_and_bad_graces_are_refused() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "secret": "old"})).await;
    let path = format!("/api/v1/webhooks/{id}/rotate-secret");
    for grace in [json!("8d"), json!("169h"), json!("soon"), json!(-1), json!("")] {
        let answer = app.post(&path, json!({ "grace": grace })).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{grace}: {}", answer.body);
        assert!(answer.body["error"]["fields"]["grace"].is_string(), "{}", answer.body);
    }
    let answer = app.post(&path, json!({"grace": "1h", "extra": 1})).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    assert_eq!(app.post("/api/v1/webhooks/ep_nope/rotate-secret", json!({})).await.status, StatusCode::NOT_FOUND);

    let rotated = rotate(&app, &path, json!({"grace": "0s"})).await;
    assert_eq!(rotated["previous_secret_valid_until"], Value::Null);
    let secret = rotated["secret"].as_str().unwrap();
    let delivery = next_delivery(&app, &mut receiver).await;
    assert_eq!(delivery.check_signatures(secret), BOTH);
    assert!(!delivery.check_signatures("old").standard);
}

#[tokio::test]
async fn the_primary_endpoint_rotates_through_the_settings() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let path = "/api/v1/settings/webhook/rotate-secret";
    assert_eq!(app.post(path, json!({})).await.status, StatusCode::NOT_FOUND, "nothing to rotate yet");
    let saved =
        app.put("/api/v1/settings/webhook", json!({"url": receiver.url("/"), "events": "*", "secret": "s1"})).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    // An empty body takes the default grace, a day.
    let answer = app.request(hyper::Method::POST, path, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let secret = answer.body["secret"].as_str().unwrap().to_owned();
    let delivery = next_delivery(&app, &mut receiver).await;
    assert_eq!(delivery.check_signatures(&secret), BOTH);
    assert!(delivery.check_signatures("s1").standard && delivery.check_signatures("s1").crm_previous);
    let settings = app.get("/api/v1/settings/webhook").await.body;
    assert_eq!(settings["standard_webhooks_secret"], answer.body["standard_webhooks_secret"]);
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
