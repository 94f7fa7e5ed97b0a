//! The admin's dashboard: webhook health per endpoint over the last 24 hours, updated live.

use serde_json::json;

use crate::Web;
use crate::helpers::Receiver;

#[tokio::test]
async fn the_dashboard_counts_a_new_delivery_without_a_reload() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    let id =
        web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "*", "description": "Office" })).await;
    let browser = &web.browser;
    browser.visit("/").await;
    let cell = |class: &str| format!("#webhook-health tr[data-endpoint-id='{id}'] .{class}");
    assert_eq!(browser.text(&cell("delivered")).await.trim(), "0");
    browser.mark_document().await;

    web.app.create("contacts", json!({ "first_name": "Grace", "last_name": "Hopper" })).await;
    receiver.next().await;
    web.settled().await;
    browser
        .eventually("the delivered count to reach 1", || async {
            let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null";
            let now = browser.client().execute(script, vec![json!(cell("delivered"))]).await.ok()?;
            (now == "1").then_some(())
        })
        .await;
    assert_eq!(browser.text(&cell("failed")).await.trim(), "0");
    assert_eq!(browser.text(&cell("pending")).await.trim(), "0");
    browser.assert_not_reloaded("the dashboard's live counts").await;
    browser.check_page().await;
    browser.screenshot("dashboard").await;
    web.browser.close().await;
}
