//! REST Hooks, as Zapier and Make use them: subscribe a target URL to one event, receive it,
//! unsubscribe (or answer 410 and be removed); sample data for mapping fields; `/me`.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PATIENCE, Receiver, Reply, TestApp};

async fn subscribe(app: &TestApp, target_url: &str, event: &str) -> String {
    let answer = app.post("/api/v1/hooks", json!({"target_url": target_url, "event": event})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["target_url"], target_url);
    assert_eq!(answer.body["event"], event);
    answer.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_hook_receives_its_one_event_and_a_410_removes_it() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = subscribe(&app, &receiver.url("/zap"), "deal.won").await;
    let endpoint = app.get(&format!("/api/v1/webhooks/{id}")).await.body;
    assert_eq!((endpoint["source"].as_str(), endpoint["events"].as_str()), (Some("rest_hook"), Some("deal.won")));

    app.create("contacts", json!({"first_name": "Not for the hook"})).await;
    app.create("deals", json!({"title": "12 Elm St", "stage": "closed_won", "amount": 450000})).await;
    let first = receiver.next().await;
    assert_eq!(first.header("x-crm-event"), "deal.won", "only the subscribed event arrives");
    assert_eq!(first.json()["data"]["title"], "12 Elm St");

    // Zapier answers 410 once the Zap is turned off: the hook goes, not just pauses.
    receiver.answer_with(|_| Reply::status(410));
    app.create("deals", json!({"title": "13 Elm St", "stage": "closed_won"})).await;
    assert_eq!(receiver.next().await.json()["data"]["title"], "13 Elm St");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.get(&format!("/api/v1/webhooks/{id}")).await.status != StatusCode::NOT_FOUND {
        assert!(tokio::time::Instant::now() < deadline, "the hook is still there after a 410");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.create("deals", json!({"title": "14 Elm St", "stage": "closed_won"})).await;
    let listed = app.get("/api/v1/webhooks").await.body;
    assert_eq!(listed["items"], json!([]), "{listed}");
    assert_eq!(app.delete(&format!("/api/v1/hooks/{id}")).await.status, StatusCode::NOT_FOUND);
    assert!(receiver.drain().is_empty(), "nothing more is sent to a removed hook");
}

#[tokio::test]
async fn an_ordinary_endpoint_only_pauses_on_410_and_is_not_a_hook() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering(|_| Reply::status(410)).await;
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "events": "deal.won"})).await;
    assert_eq!(app.delete(&format!("/api/v1/hooks/{id}")).await.status, StatusCode::NOT_FOUND);
    app.create("deals", json!({"title": "A", "stage": "closed_won"})).await;
    receiver.next().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let endpoint = app.get(&format!("/api/v1/webhooks/{id}")).await;
        assert_eq!(endpoint.status, StatusCode::OK);
        if endpoint.body["active"] == false {
            assert_eq!(endpoint.body["source"], "api");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the endpoint never paused");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unsubscribing_removes_the_hook() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = subscribe(&app, &receiver.url("/zap"), "contact.created").await;
    assert_eq!(app.delete(&format!("/api/v1/hooks/{id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.status, StatusCode::NOT_FOUND);
    // A second endpoint proves the contact's webhook went out, and that the hook got none.
    let mut witness = Receiver::start().await;
    app.add_endpoint(json!({"url": witness.url("/"), "events": "contact.created"})).await;
    app.create("contacts", json!({"first_name": "After"})).await;
    witness.next().await;
    assert!(receiver.drain().is_empty());
}

#[tokio::test]
async fn subscriptions_are_checked_like_endpoints() {
    let app = TestApp::spawn().await;
    #[track_caller]
    fn check(answer: &crate::helpers::Answer, field: &str) {
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
        assert!(answer.body["error"]["fields"][field].is_string(), "{field}: {}", answer.body);
    }
    let url = "http://127.0.0.1:9/zap";
    check(&app.post("/api/v1/hooks", json!({"target_url": url, "event": "*"})).await, "event");
    check(&app.post("/api/v1/hooks", json!({"target_url": url, "event": "deal.won,deal.lost"})).await, "event");
    check(&app.post("/api/v1/hooks", json!({"target_url": url, "event": "webhook.test"})).await, "event");
    check(&app.post("/api/v1/hooks", json!({"target_url": url})).await, "event");
    check(&app.post("/api/v1/hooks", json!({"target_url": "ftp://x", "event": "deal.won"})).await, "target_url");
    check(
        &app.post("/api/v1/hooks", json!({"target_url": "http://u:p@x.com/", "event": "deal.won"})).await,
        "target_url",
    );
    check(&app.post("/api/v1/hooks", json!({"target_url": url, "event": "deal.won", "x": 1})).await, "x");

    // The same address rules as any endpoint: a production server refuses loopback targets.
    let public_only = TestApp::spawn_public_only().await;
    check(&public_only.post("/api/v1/hooks", json!({"target_url": url, "event": "deal.won"})).await, "target_url");
}

#[tokio::test]
async fn samples_are_the_newest_events_data_or_a_fake_one() {
    let app = TestApp::spawn().await;
    let fake = app.get("/api/v1/hooks/samples/deal.won").await;
    assert_eq!(fake.status, StatusCode::OK, "{}", fake.body);
    let fake = fake.body.as_array().cloned().unwrap();
    assert_eq!(fake.len(), 1);
    assert_eq!(fake[0]["stage"], "closed_won", "the catalogue's sample deal: {fake:?}");

    for title in ["One", "Two", "Three", "Four"] {
        app.create("deals", json!({"title": title, "stage": "closed_won"})).await;
    }
    let real = app.get("/api/v1/hooks/samples/deal.won").await.body;
    let titles: Vec<&str> = real.as_array().unwrap().iter().map(|d| d["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Four", "Three", "Two"], "newest first, a few");
    assert_eq!(app.get("/api/v1/hooks/samples/nope.never").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn me_says_who_the_token_belongs_to() {
    let app = TestApp::spawn().await;
    let me = app.get("/api/v1/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["role"], "admin");
    assert!(me.body["id"].is_string() && me.body["name"].is_string(), "{}", me.body);

    let user =
        app.post("/api/v1/users", json!({"name": "Ada Lovelace", "email": "ada@example.com", "role": "agent"})).await;
    assert_eq!(user.status, StatusCode::CREATED, "{}", user.body);
    let token = app.post("/api/v1/tokens", json!({"user_id": user.body["id"], "name": "zapier"})).await;
    let token = token.body["token"].as_str().unwrap().to_owned();
    let me = app.request_as(&token, Method::GET, "/api/v1/me", None).await.body;
    assert_eq!(me, json!({"id": user.body["id"], "name": "Ada Lovelace", "email": "ada@example.com", "role": "agent"}));
    // An agent cannot subscribe hooks (they see only their own records).
    let refused = app
        .request_as(
            &token,
            Method::POST,
            "/api/v1/hooks",
            Some(json!({"target_url": "http://127.0.0.1:9/", "event": "deal.won"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(app.request_as("", Method::GET, "/api/v1/me", None).await.status, StatusCode::UNAUTHORIZED);
}
