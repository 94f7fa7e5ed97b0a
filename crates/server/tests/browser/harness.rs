//! The harness itself: Chromium runs, and the accessibility check can fail.

use crate::Web;
use crate::axe;

#[tokio::test]
async fn the_accessibility_check_finds_an_image_without_alt_text() {
    let web = Web::start().await;
    let page = "data:text/html,<!doctype html><html lang=en><title>t</title><main><h1>t</h1>\
                <img src='data:image/gif;base64,R0lGODlhAQABAAAAACw='></main></html>";
    web.browser.client().goto(page).await.expect("opening a data: page");
    let found = axe::violations(web.browser.client(), "a page with an unlabelled image").await;
    let ids: Vec<&str> = found.iter().filter_map(|v| v["id"].as_str()).collect();
    assert!(ids.contains(&"image-alt"), "axe missed the image without alt text: {ids:?}");
    web.browser.close().await;
}
