//! The delivery log and a delivery's page: live rows without a reload, filters, the body,
//! headers and attempts of one delivery, and Retry now.

use serde_json::{Value, json};

use crate::Web;
use crate::helpers::{Receiver, Reply};

const ROWS: &str = "#deliveries tr[data-delivery-id]";

/// The rows of the log now: (delivery id, status, text).
async fn rows(web: &Web) -> Vec<(String, String, String)> {
    let rows = web
        .browser
        .script_with(
            "return [...document.querySelectorAll(arguments[0])].map(r => \
             [r.dataset.deliveryId, r.dataset.status, r.innerText, \
              [...r.querySelectorAll('a')].map(a => a.getAttribute('href'))])",
            vec![json!(ROWS)],
        )
        .await;
    rows.as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let id = row[0].as_str().unwrap_or("").to_owned();
            let links: Vec<&str> = row[3].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            assert!(
                links.iter().any(|href| *href == format!("/settings/deliveries/{id}")),
                "row {id} links to its delivery: {links:?}"
            );
            (id, row[1].as_str().unwrap_or("").to_owned(), row[2].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_contact_created_through_the_api_appears_in_the_live_log_and_its_status_changes_there() {
    let web = Web::admin().await;
    let mut receiver = Receiver::answering(|_| Reply::status(500).with_body("not yet")).await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "contact.created" })).await;
    web.browser.visit("/settings/deliveries").await;
    assert!(rows(&web).await.is_empty(), "no delivery yet");
    web.browser.mark_document().await;

    web.app.create("contacts", json!({ "first_name": "Grace", "last_name": "Hopper" })).await;
    let settled = web.settled().await;
    let id = settled[0]["id"].as_str().expect("a delivery id").to_owned();
    let row = live_row(&web, &id, "failed").await;
    assert!(row.contains("contact.created"), "the row names the event: {row:?}");

    receiver.drain();
    receiver.answer_with(|_| Reply::status(200).with_body("ok"));
    let retried = web.app.post(&format!("/api/v1/deliveries/{id}/retry"), json!({})).await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    receiver.next().await;
    live_row(&web, &id, "succeeded").await;
    web.browser.assert_not_reloaded("the live log").await;
    web.browser.check_page().await;
    web.browser.close().await;
}

/// Waits for the log to show delivery `id` with `status`, without a reload; answers the row's text.
async fn live_row(web: &Web, id: &str, status: &str) -> String {
    let row = web
        .browser
        .eventually(&format!("delivery {id} to show as {status}"), || async {
            rows(web).await.into_iter().find(|(row_id, shown, _)| row_id == id && shown == status)
        })
        .await;
    web.browser.assert_not_reloaded("the live log").await;
    row.2
}

#[tokio::test]
async fn a_failed_delivery_is_retried_from_its_page() {
    let web = Web::admin().await;
    let mut receiver = Receiver::answering(|_| Reply::status(500).with_body("down for maintenance")).await;
    let endpoint = web
        .app
        .add_endpoint(json!({ "url": receiver.url("/hook"), "events": "contact.created", "secret": "shared-secret" }))
        .await;
    web.app.create("contacts", json!({ "first_name": "Ada", "last_name": "Lovelace" })).await;
    web.app.create("contacts", json!({ "first_name": "Alan", "last_name": "Turing" })).await;
    let failed = web.settled().await;
    assert!(failed.iter().all(|d| d["status"] == "failed"), "{failed:?}");
    let delivery = delivery_whose_body_has(&web, &failed, "Lovelace").await;
    let id = delivery["id"].as_str().expect("a delivery id").to_owned();
    let attempts = delivery["attempts"].as_u64().expect("an attempt count") as usize;
    receiver.drain();

    web.browser.visit(&format!("/settings/deliveries?status=failed&endpoint_id={endpoint}")).await;
    let listed = rows(&web).await;
    assert_eq!(listed.len(), 2, "both failed deliveries are listed: {listed:?}");
    assert!(listed.iter().all(|(_, status, _)| status == "failed"), "{listed:?}");
    web.browser.visit("/settings/deliveries?status=succeeded").await;
    assert!(rows(&web).await.is_empty(), "the status filter leaves out failed deliveries");
    receiver.answer_with(|_| Reply::status(200).with_body("ok"));

    let browser = &web.browser;
    browser.visit(&format!("/settings/deliveries/{id}")).await;
    assert!(browser.text("main h1").await.contains(&id), "the heading names the delivery");
    assert_eq!(browser.text("#delivery-status").await.trim(), "failed");
    let body = browser.text("#delivery-body").await;
    assert!(body.contains("contact.created") && body.contains("Lovelace"), "{body}");
    assert!(body.contains("\n  "), "the body is shown as formatted JSON: {body}");
    let headers = browser.text("#delivery-headers").await.to_ascii_lowercase();
    assert!(headers.contains("x-crm-signature") && headers.contains("webhook-id"), "{headers}");
    let attempt_rows = browser.all("#attempts tbody tr").await;
    assert_eq!(attempt_rows.len(), attempts, "one row per attempt");
    assert!(browser.text("#attempts").await.contains("500"), "each attempt shows its status code");

    browser.button("Retry now").await.click().await.expect("pressing Retry now");
    assert_eq!(receiver.next().await.json()["data"]["last_name"], "Lovelace", "the retry reached the receiver");
    browser.wait_for_text_reloading("#delivery-status", "succeeded").await;
    assert_eq!(browser.all("#attempts tbody tr").await.len(), attempts + 1, "the retry is one more attempt");
    let said = browser.text(".flash.ok").await;
    assert!(said.contains("Retry requested at"), "the message says when, not what became of it: {said}");
    browser.screenshot("delivery").await;
    let api = web.app.get(&format!("/api/v1/deliveries/{id}")).await;
    assert_eq!(api.body["status"], "succeeded", "{}", api.body);

    browser.visit("/settings/deliveries").await;
    browser.screenshot("deliveries").await;
    web.browser.close().await;
}

/// The delivery among `deliveries` whose body contains `text`, as the API details it.
async fn delivery_whose_body_has(web: &Web, deliveries: &[Value], text: &str) -> Value {
    for delivery in deliveries {
        let detail = web.app.get(&format!("/api/v1/deliveries/{}", delivery["id"].as_str().unwrap_or(""))).await;
        if detail.body["body"].as_str().unwrap_or("").contains(text) {
            return detail.body;
        }
    }
    panic!("no delivery's body has {text:?}: {deliveries:?}");
}
