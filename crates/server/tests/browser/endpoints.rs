//! Settings → Endpoints: adding one with the form, the list, an endpoint's page with its
//! 24-hour counts and recent deliveries, saving it, Test Webhook and Retry all failed.

use serde_json::{Value, json};

use crate::Web;
use crate::chrome::field_css;
use crate::helpers::{Receiver, Reply};

/// The endpoint's row on the list.
fn row_css(id: &str) -> String {
    format!("#endpoints tr[data-endpoint-id='{id}']")
}

#[tokio::test]
async fn an_endpoint_added_with_the_form_is_listed_and_shows_its_deliveries() {
    let web = Web::admin().await;
    let mut receiver = Receiver::answering(|_| Reply::status(200).with_body("pong")).await;
    let browser = &web.browser;
    let url = receiver.url("/office");

    browser.visit("/settings/endpoints/new").await;
    browser.fill("url", &url).await;
    browser.fill("description", "The office's CRM mirror").await;
    browser.set_checked("all-events", false).await;
    browser.set_checked("event-contact.created", true).await;
    browser.set_checked("event-deal.won", true).await;
    browser.fill("retry_schedule", "1s,1s").await;
    browser.fill("max_in_flight", "4").await;
    let add = browser
        .find_xpath("//form[.//*[@id='f-url']]//button[normalize-space(.)='Add endpoint' or normalize-space(.)='Save']")
        .await;
    browser.submit(add, "#endpoints, #count-delivered").await;

    let listed = web.app.get("/api/v1/webhooks").await;
    let endpoint = only_endpoint(&listed.body);
    let id = endpoint["id"].as_str().expect("an endpoint id").to_owned();
    assert_eq!(endpoint["url"], url.as_str());
    assert_eq!(endpoint["description"], "The office's CRM mirror");
    let events = endpoint["events"].to_string();
    assert!(events.contains("contact.created") && events.contains("deal.won"), "{events}");

    web.app.create("contacts", json!({ "first_name": "Grace", "last_name": "Hopper" })).await;
    receiver.next().await;
    web.settled().await;

    browser.visit("/settings/endpoints").await;
    let row = browser.text(&row_css(&id)).await;
    assert!(row.contains(&url) || row.contains("The office's CRM mirror"), "the row names the endpoint: {row:?}");
    browser.screenshot("endpoints").await;

    browser.visit(&format!("/settings/endpoints/{id}")).await;
    let shown_url = browser.find(&field_css("url")).await.prop("value").await.unwrap();
    assert_eq!(shown_url.as_deref(), Some(url.as_str()), "the form holds the endpoint's URL");
    // The page shares its counts with others for a moment, so they may trail by that much.
    browser.wait_for_text_reloading("#count-delivered", "1").await;
    assert_eq!(browser.text("#count-pending").await.trim(), "0");
    assert_eq!(browser.text("#count-failed").await.trim(), "0");
    let recent = browser.all("#deliveries tr[data-delivery-id]").await;
    assert_eq!(recent.len(), 1, "the endpoint's recent deliveries are listed");

    browser.mark_document().await;
    browser.button("Test Webhook").await.click().await.expect("pressing Test Webhook");
    browser.wait_for_text("#test-result", &["200", "pong"]).await;
    browser.assert_not_reloaded("Test Webhook").await;
    assert_eq!(receiver.next().await.json()["event"], "webhook.test");
    browser.screenshot("endpoint").await;

    browser.fill("description", "Mirror at the head office").await;
    browser.press("url", "Save", "[role='status'].flash.ok").await;
    let saved = web.app.get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(saved.body["description"], "Mirror at the head office", "{}", saved.body);
    web.browser.close().await;
}

fn only_endpoint(list: &Value) -> Value {
    let items = list["items"].as_array().or_else(|| list.as_array()).cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "one endpoint: {list}");
    items[0].clone()
}

#[tokio::test]
async fn retry_all_failed_sends_the_failed_deliveries_again_and_delete_removes_the_endpoint() {
    let web = Web::admin().await;
    let mut receiver = Receiver::answering(|_| Reply::status(503).with_body("busy")).await;
    let id = web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "contact.created" })).await;
    for name in ["Ada", "Alan"] {
        web.app.create("contacts", json!({ "first_name": name })).await;
    }
    let failed = web.settled().await;
    assert!(failed.len() == 2 && failed.iter().all(|d| d["status"] == "failed"), "{failed:?}");
    receiver.drain();
    receiver.answer_with(|_| Reply::status(200).with_body("ok"));

    let browser = &web.browser;
    browser.visit(&format!("/settings/endpoints/{id}")).await;
    browser.wait_for_text_reloading("#count-failed", "2").await;
    browser.button("Retry all failed").await.click().await.expect("pressing Retry all failed");
    receiver.take(2).await;
    let retried = web.settled().await;
    assert!(retried.iter().all(|d| d["status"] == "succeeded"), "{retried:?}");
    browser.visit(&format!("/settings/endpoints/{id}")).await;
    browser.wait_for_text_reloading("#count-delivered", "2").await;
    assert_eq!(browser.text("#count-failed").await.trim(), "0");

    // Deleting also empties the endpoint's part of the log, so the form asks for that to be ticked.
    browser.set_checked("remove_deliveries", true).await;
    let delete = browser.find_xpath("//form[contains(@action, '/delete')]//button[normalize-space(.)='Delete']").await;
    browser.submit(delete, "#endpoints").await;
    assert!(!browser.has(&row_css(&id)).await, "a deleted endpoint leaves the list");
    let gone = web.app.get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    web.browser.close().await;
}
