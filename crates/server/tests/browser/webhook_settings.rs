//! Settings → Webhooks: validation beside the field, saving, the secret never shown again, and
//! Test Webhook's answer shown in place.

use serde_json::json;

use crate::Web;
use crate::chrome::field_css;
use crate::helpers::{Receiver, Reply};

const BAD_URL: &str = "ftp://example.com/hook";
const SECRET: &str = "a-signing-secret-nobody-sees-again";

#[tokio::test]
async fn a_bad_url_is_refused_beside_its_field_then_a_good_one_is_saved() {
    let web = Web::admin().await;
    let receiver = Receiver::start().await;
    let browser = &web.browser;
    browser.visit("/settings/webhooks").await;

    browser.fill("url", BAD_URL).await;
    browser.set_checked("all-events", false).await;
    browser.set_checked("event-contact.created", true).await;
    browser.press("url", "Save", "[id='f-url-error']").await;
    let shown = browser.text("[id='f-url-error']").await;
    let api = web.app.put("/api/v1/settings/webhook", json!({ "url": BAD_URL, "events": "contact.created" })).await;
    assert_eq!(api.status, 422, "{}", api.body);
    assert_eq!(shown, api.body["error"]["fields"]["url"], "the page says what the API says about the URL");
    assert_field_marked_invalid(&web, "url").await;
    let saved = web.app.get("/api/v1/settings/webhook").await;
    assert_ne!(saved.body["url"], BAD_URL, "a refused URL is not saved");

    browser.fill("url", &receiver.url("/hook")).await;
    browser.fill("secret", SECRET).await;
    browser.set_checked("active", true).await;
    browser.press("url", "Save", "[role='status'].flash.ok").await;
    assert!(browser.text("[role='status'].flash.ok").await.contains("Saved"));
    assert!(!browser.has("[id='f-url-error']").await, "no error is left once the URL is good");

    let saved = web.app.get("/api/v1/settings/webhook").await;
    assert_eq!(saved.body["url"], receiver.url("/hook"), "{}", saved.body);
    assert!(saved.body["events"].as_str().unwrap_or("").contains("contact.created"), "{}", saved.body);
    assert_eq!(saved.body["has_secret"], true, "{}", saved.body);
    assert_eq!(saved.body["active"], true, "{}", saved.body);
    let secret_field = browser.find(&field_css("secret")).await.prop("value").await.expect("the secret's value");
    assert_eq!(secret_field.as_deref(), Some(""), "a saved secret is never shown again");
    let source = browser.client().source().await.expect("the page source");
    assert!(!source.contains(SECRET), "the saved secret is nowhere in the page");
    web.browser.close().await;
}

/// The field `#f-NAME` is marked invalid and described by its error, which comes right after it.
pub async fn assert_field_marked_invalid(web: &Web, name: &str) {
    let field = web.browser.find(&field_css(name)).await;
    assert_eq!(field.attr("aria-invalid").await.unwrap().as_deref(), Some("true"), "#f-{name} is aria-invalid");
    let described_by = field.attr("aria-describedby").await.unwrap().unwrap_or_default();
    assert!(
        described_by.split_whitespace().any(|id| id == format!("f-{name}-error")),
        "#f-{name} is described by its error, not {described_by:?}"
    );
    let next = web
        .browser
        .script_with(
            "return document.getElementById(arguments[0]).nextElementSibling?.id ?? null",
            vec![json!(format!("f-{name}"))],
        )
        .await;
    assert_eq!(next, json!(format!("f-{name}-error")), "the error comes right after #f-{name}");
}

/// A receiver body of 200 characters and a tail that Test Webhook must not show.
fn long_body(head: &str) -> String {
    format!("{head:-<200}TAIL")
}

#[tokio::test]
async fn test_webhook_shows_the_status_code_and_body_in_place() {
    let web = Web::admin().await;
    let mut healthy = Receiver::answering(|_| Reply::status(200).with_body(&long_body("accepted by the office"))).await;
    let failing = Receiver::answering(|_| Reply::status(500).with_body("boom: the receiver is down")).await;
    let browser = &web.browser;
    browser.visit("/settings/webhooks").await;
    save_url(&web, &healthy.url("/hook")).await;

    browser.mark_document().await;
    browser.button("Test Webhook").await.click().await.expect("pressing Test Webhook");
    let shown = browser.wait_for_text("#test-result", &["200", "accepted by the office"]).await;
    assert!(!shown.contains("TAIL"), "only the first 200 characters are shown: {shown:?}");
    browser.assert_not_reloaded("Test Webhook").await;
    let live = browser.find("#test-result").await.attr("aria-live").await.unwrap();
    assert_eq!(live.as_deref(), Some("polite"), "the result is announced");
    assert_eq!(healthy.next().await.json()["event"], "webhook.test", "the receiver got a test event");
    browser.check_page().await;
    browser.screenshot("settings-webhooks").await;

    save_url(&web, &failing.url("/hook")).await;
    browser.mark_document().await;
    browser.button("Test Webhook").await.click().await.expect("pressing Test Webhook");
    browser.wait_for_text("#test-result", &["500", "boom: the receiver is down"]).await;
    browser.assert_not_reloaded("Test Webhook").await;
    browser.check_page().await;
    web.browser.close().await;
}

/// Saves the webhook settings with `url` and every event.
async fn save_url(web: &Web, url: &str) {
    web.browser.fill("url", url).await;
    web.browser.set_checked("all-events", true).await;
    web.browser.set_checked("active", true).await;
    web.browser.press("url", "Save", "[role='status'].flash.ok").await;
}
