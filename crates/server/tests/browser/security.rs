//! What the app refuses and escapes: agents on the settings pages, markup typed by a user or a
//! receiver, and forms posted without their CSRF token or from another site.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Receiver, Reply};
use crate::{MAIN_MENU, PASSWORD, Web};

/// Every settings page an agent must not open.
const SETTINGS_PAGES: [&str; 5] =
    ["/settings/webhooks", "/settings/endpoints", "/settings/endpoints/new", "/settings/deliveries", "/settings/users"];

/// A name that runs script if it is ever written into a page unescaped.
const MARKUP: &str = "<img src=x onerror=alert(1)>";

/// Where the forged and honest forms point the webhook.
const HOOK: &str = "http://127.0.0.1:9/hook";

#[tokio::test]
async fn an_agent_is_refused_the_settings_pages_and_has_no_settings_link() {
    let web = Web::start().await;
    web.make_user("agent", "Ann Agent", "ann@example.com").await;
    web.sign_in("ann@example.com", PASSWORD).await;
    let menu = web.browser.text(MAIN_MENU).await;
    assert!(menu.contains("Dashboard"), "{menu:?}");
    assert!(!menu.contains("Settings"), "an agent's menu has no Settings: {menu:?}");

    let cookie = web.session_cookie().await;
    for page in SETTINGS_PAGES {
        let answer = web.send_as(&cookie, Method::GET, page, None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{page} is refused to an agent");
        let kind = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(kind.starts_with("text/html"), "{page}: the refusal is a page, not {kind:?}");
        web.browser.visit(page).await;
        assert!(!web.browser.has("[id='f-url'], #deliveries, #users, #endpoints").await, "{page} shows nothing");
    }

    web.browser.visit("/account").await;
    let token = web.csrf_token().await;
    let saved = post_settings(&web, &web.app.url(""), Some(&token)).await;
    assert_eq!(saved, StatusCode::FORBIDDEN, "an agent cannot save the webhook settings");
    let settings = web.app.get("/api/v1/settings/webhook").await;
    assert_ne!(settings.body["url"], HOOK, "{}", settings.body);
    web.browser.close().await;
}

#[tokio::test]
async fn markup_typed_by_a_user_or_a_receiver_is_shown_as_text() {
    let web = Web::admin().await;
    let mut receiver = Receiver::answering(|_| Reply::status(200).with_body(MARKUP)).await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "*" })).await;
    web.app.create("contacts", json!({ "first_name": MARKUP, "last_name": "Tables" })).await;
    receiver.next().await;
    let deliveries = web.settled().await;
    let id = deliveries[0]["id"].as_str().expect("a delivery id");

    web.browser.visit(&format!("/settings/deliveries/{id}")).await;
    assert!(web.browser.text("#delivery-body").await.contains(MARKUP), "the name is in the body, as text");
    assert_shown_as_text(&web, "the delivery's page").await;
    web.browser.visit("/settings/deliveries").await;
    assert_shown_as_text(&web, "the delivery log").await;
    let menu = web.browser.text(MAIN_MENU).await;
    if menu.contains("Contacts") {
        web.browser.visit("/contacts").await;
        assert!(web.browser.text("main").await.contains(MARKUP), "the contacts page shows the name");
        assert_shown_as_text(&web, "the contacts page").await;
    }

    web.app.put("/api/v1/settings/webhook", json!({ "url": receiver.url("/test"), "events": "*" })).await;
    web.browser.visit("/settings/webhooks").await;
    web.browser.button("Test Webhook").await.click().await.expect("pressing Test Webhook");
    web.browser.wait_for_text("#test-result", &["200", MARKUP]).await;
    assert_shown_as_text(&web, "the Test Webhook result").await;
    web.browser.close().await;
}

/// No element was made from [`MARKUP`] and no dialog opened.
async fn assert_shown_as_text(web: &Web, page: &str) {
    web.browser.assert_no_dialog().await;
    let images = web.browser.script("return document.querySelectorAll('img[src=\"x\"], [onerror]').length").await;
    assert_eq!(images, 0, "{page}: markup from a record became an element");
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_token_or_from_another_site_is_refused() {
    let web = Web::admin().await;
    web.browser.visit("/settings/webhooks").await;
    let token = web.csrf_token().await;
    let own = web.app.url("");

    let tokenless = post_settings(&web, &own, None).await;
    assert_eq!(tokenless, StatusCode::FORBIDDEN, "a form without its CSRF token is refused");
    let forged = post_settings(&web, &own, Some("forged")).await;
    assert_eq!(forged, StatusCode::FORBIDDEN, "a made-up token is refused");
    let cross = post_settings(&web, "http://attacker.example", Some(&token)).await;
    assert_eq!(cross, StatusCode::FORBIDDEN, "a form from another site is refused, token or not");
    let settings = web.app.get("/api/v1/settings/webhook").await;
    assert_ne!(settings.body["url"], HOOK, "nothing refused was saved: {}", settings.body);

    let honest = post_settings(&web, &own, Some(&token)).await;
    assert!(honest.is_success() || honest.is_redirection(), "the same form with its token is taken: {honest:?}");
    let settings = web.app.get("/api/v1/settings/webhook").await;
    assert_eq!(settings.body["url"], HOOK, "{}", settings.body);
    web.browser.close().await;
}

/// Posts the webhook settings form with the browser's session, from `origin`, with `token`.
async fn post_settings(web: &Web, origin: &str, token: Option<&str>) -> StatusCode {
    let cookie = web.session_cookie().await;
    let mut form = vec![("url", HOOK), ("events", "contact.created"), ("active", "on")];
    form.extend(token.map(|token| ("csrf_token", token)));
    web.send_from(&cookie, Some(origin), Method::POST, "/settings/webhooks", Some(&form)).await.status
}
