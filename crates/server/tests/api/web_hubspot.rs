//! Settings → Integrations → HubSpot through the real binary, as a browser without JavaScript uses
//! it, against the HubSpot stand-in: saving through the API's checks, the token never shown, the
//! check button, the backfill, the sync log, roles and CSRF.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::hubspot_standin::{GOOD_TOKEN, HubSpot};
use crate::web::{Browser, Page, admin, make_user};

const PAGE: &str = "/settings/integrations/hubspot";
/// How long the sync may take to show a line in these tests.
const CATCH_UP: Duration = Duration::from_secs(60);

/// The settings form's fields, as a browser sends them, with `changes` replacing or adding fields.
fn settings_form<'a>(csrf: &'a str, changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("csrf_token", csrf),
        ("access_token", ""),
        ("deal_pipeline", "default"),
        ("stage_new", ""),
        ("stage_viewing_scheduled", ""),
        ("stage_offer_made", ""),
        ("stage_negotiation", ""),
        ("stage_closed_won", ""),
        ("stage_closed_lost", ""),
        ("rate_requests", "100"),
        ("rate_per_ms", "1000"),
        ("base_url", "https://api.hubapi.com"),
        ("enabled", "on"),
    ];
    for (name, value) in changes {
        match fields.iter_mut().find(|(n, _)| n == name) {
            Some(field) => field.1 = value,
            None => fields.push((name, value)),
        }
    }
    fields
}

/// Saves the settings from the page, pointing at the stand-in with `token`.
async fn save_from_page(browser: &mut Browser<'_>, hub: &HubSpot, token: &str) -> Page {
    let csrf = browser.get(PAGE).await.csrf();
    let url = hub.url();
    let saved = browser.post(PAGE, &settings_form(&csrf, &[("access_token", token), ("base_url", &url)])).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.html);
    saved
}

/// The text of the element with this id (its first line of markup after the opening tag).
fn element<'p>(html: &'p str, id: &str) -> &'p str {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id} in {html}"));
    &html[start..]
}

#[tokio::test]
async fn settings_saved_from_the_page_reach_the_api_and_the_token_is_never_shown() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;

    let empty = browser.get(PAGE).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.html);
    assert!(empty.html.contains("not set up"), "{}", empty.html);
    assert!(empty.html.contains("<nav class=\"tabs\" aria-label=\"Settings\">"), "{}", empty.html);
    assert!(empty.html.contains("href=\"/settings/integrations/hubspot\" aria-current=\"page\">Integrations</a>"));
    assert!(empty.html.contains("<label for=\"f-access_token\">"));

    // No token yet: the shared rule asks for one, beside its field.
    let csrf = empty.csrf();
    let refused = browser.post(PAGE, &settings_form(&csrf, &[])).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
    assert!(
        refused
            .html
            .contains("<p class=\"field-error\" id=\"f-access_token-error\">is required to connect HubSpot</p>")
    );
    assert_eq!(app.get("/api/v1/integrations/hubspot").await.body["state"], "not_connected");

    let saved = save_from_page(&mut browser, &hub, GOOD_TOKEN).await;
    assert!(saved.html.contains("Saved."), "{}", saved.html);
    assert!(saved.html.contains("a token is saved"), "{}", saved.html);
    assert!(!saved.html.contains(GOOD_TOKEN), "the token is never echoed");
    let shown = browser.get(PAGE).await;
    assert!(!shown.html.contains(GOOD_TOKEN), "the token is never echoed");
    assert!(element(&shown.html, "hubspot-state").contains(">connected<"), "{}", shown.html);
    let state = app.get("/api/v1/integrations/hubspot").await.body;
    assert_eq!(state["state"], "connected", "{state}");
    assert_eq!(state["base_url"], hub.url());
    assert_eq!(state["rate_limit"], json!({"requests": 100, "per_ms": 1000}));

    // An empty token field keeps the saved token; the stage map and switch are saved as the API's.
    let csrf = shown.csrf();
    let url = hub.url();
    let changes = [("base_url", url.as_str()), ("stage_closed_won", "won-stage"), ("enabled", "")];
    let mut fields = settings_form(&csrf, &changes);
    fields.retain(|(name, value)| *name != "enabled" || !value.is_empty());
    let resaved = browser.post(PAGE, &fields).await;
    assert_eq!(resaved.status, StatusCode::OK, "{}", resaved.html);
    let state = app.get("/api/v1/integrations/hubspot").await.body;
    assert_eq!((state["has_token"].clone(), state["enabled"].clone()), (json!(true), json!(false)), "{state}");
    assert_eq!(state["stage_map"], json!({"closed_won": "won-stage"}));
    assert!(element(&resaved.html, "hubspot-state").contains(">disabled<"), "{}", resaved.html);
    assert!(resaved.html.contains("value=\"won-stage\""));
}

#[tokio::test]
async fn a_bad_base_url_or_rate_limit_is_shown_beside_its_field_and_nothing_is_saved() {
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    let csrf = browser.get(PAGE).await.csrf();
    let secret = "pat-na1-never-echoed";
    let bad = [("access_token", secret), ("base_url", "ftp://hubspot.example"), ("rate_requests", "0")];
    let refused = browser.post(PAGE, &settings_form(&csrf, &bad)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
    assert!(refused.html.contains("id=\"f-base_url-error\""), "{}", refused.html);
    assert!(refused.html.contains("aria-describedby=\"f-base_url-error\""), "{}", refused.html);
    assert!(refused.html.contains("<p class=\"field-error\" id=\"f-rate_limit-error\">"), "{}", refused.html);
    assert!(refused.html.contains("value=\"ftp://hubspot.example\""), "the field keeps what was typed");
    assert!(!refused.html.contains(secret), "not even a refused token is echoed");
    assert_eq!(app.get("/api/v1/integrations/hubspot").await.body["state"], "not_connected");
}

#[tokio::test]
async fn check_connection_says_connected_or_why_not() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    let page = browser.get(PAGE).await;
    let nothing = browser.post(&format!("{PAGE}/check"), &[("csrf_token", &page.csrf())]).await;
    assert!(nothing.html.contains("save an access token first"), "{}", nothing.html);

    save_from_page(&mut browser, &hub, GOOD_TOKEN).await;
    let csrf = browser.get(PAGE).await.csrf();
    let checked = browser.post(&format!("{PAGE}/check"), &[("csrf_token", &csrf)]).await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.html);
    assert!(checked.html.contains("Connected: token, scopes and stages are fine"), "{}", checked.html);

    hub.accept_token("pat-na1-another");
    let refused = browser.post(&format!("{PAGE}/check"), &[("csrf_token", &csrf)]).await;
    assert!(refused.html.contains("HubSpot refused the access token (401)"), "{}", refused.html);
    assert!(!refused.html.contains("Connected: token"), "{}", refused.html);
}

#[tokio::test]
async fn a_contact_made_through_the_api_shows_in_the_sync_log_and_the_backfill_shows_progress() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    let early = app.create("contacts", json!({"first_name": "Early", "email": "early@example.com"})).await;
    let mut browser = admin(&app).await;
    save_from_page(&mut browser, &hub, GOOD_TOKEN).await;
    let ada = app.create("contacts", json!({"first_name": "Ada", "email": "ada@example.com"})).await;
    let ada = ada["id"].as_str().unwrap();

    let deadline = Instant::now() + CATCH_UP;
    let page = loop {
        let page = browser.get(PAGE).await;
        if page.html.contains(&format!("data-record-id=\"{ada}\"")) {
            break page;
        }
        assert!(Instant::now() < deadline, "the sync log never showed {ada}: {}", page.html);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = element(&page.html, "hubspot-log");
    let row = &log[log.find(&format!("data-record-id=\"{ada}\"")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("href=\"/contacts\"") && row.contains("upsert") && row.contains(">200<"), "{row}");
    let hub_id = &hub.live("contacts")[0].id;
    assert!(row.contains(hub_id.as_str()), "the HubSpot id {hub_id} is in {row}");
    let rows = browser.get(&format!("{PAGE}?partial=rows")).await;
    assert!(rows.html.contains(ada) && !rows.html.contains("<html"), "the live part is the rows alone");

    // The backfill sends what existed before the connection, and its progress is shown.
    let early = early["id"].as_str().unwrap();
    assert!(!page.html.contains(&format!("data-record-id=\"{early}\"")));
    let started = browser.post(&format!("{PAGE}/backfill"), &[("csrf_token", &page.csrf())]).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.html);
    assert!(started.html.contains("id=\"hubspot-backfill\""), "{}", started.html);
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let status = browser.get(&format!("{PAGE}?partial=status")).await;
        if status.html.contains("sent 2 of 2 records") {
            break;
        }
        assert!(Instant::now() < deadline, "the backfill never finished: {}", status.html);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hub.live("contacts").len(), 2);
}

#[tokio::test]
async fn agents_get_403_and_a_post_without_its_csrf_token_changes_nothing() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    let url = hub.url();
    let fields = settings_form("", &[("access_token", GOOD_TOKEN), ("base_url", &url)]);
    let without: Vec<_> = fields.iter().filter(|(name, _)| *name != "csrf_token").cloned().collect();
    assert_eq!(browser.post(PAGE, &without).await.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.post(&format!("{PAGE}/backfill"), &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.post(&format!("{PAGE}/check"), &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/api/v1/integrations/hubspot").await.body["state"], "not_connected");

    make_user(&app, "agent@example.com", "agent").await;
    let mut agent = Browser::new(&app);
    agent.sign_in("agent@example.com", "agent-password").await;
    for path in [PAGE, "/settings/integrations"] {
        let page = agent.get(path).await;
        let page = if page.status == StatusCode::SEE_OTHER { agent.get(page.location()).await } else { page };
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    let csrf = agent.get("/").await.csrf();
    let fields = settings_form(&csrf, &[("access_token", GOOD_TOKEN), ("base_url", &url)]);
    assert_eq!(agent.post(PAGE, &fields).await.status, StatusCode::FORBIDDEN);
    for action in ["check", "backfill"] {
        let posted = agent.post(&format!("{PAGE}/{action}"), &[("csrf_token", &csrf)]).await;
        assert_eq!(posted.status, StatusCode::FORBIDDEN, "{action}");
    }
    assert_eq!(app.get("/api/v1/integrations/hubspot").await.body["state"], "not_connected");
}

/// The record ids of the sync log's rows on a page.
fn log_record_ids(html: &str) -> Vec<String> {
    let log = element(html, "hubspot-log");
    log.split("data-record-id=\"").skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn the_sync_log_is_paged_with_the_stores_cursor() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    save_from_page(&mut browser, &hub, GOOD_TOKEN).await;
    let mut made = std::collections::BTreeSet::new();
    for n in 0..55 {
        let contact = app.create("contacts", json!({"first_name": "C", "email": format!("c{n}@example.com")})).await;
        made.insert(contact["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + CATCH_UP;
    while app.get("/api/v1/integrations/hubspot").await.body["counts"]["contacts"] != 55 {
        assert!(Instant::now() < deadline, "the contacts never all reached the stand-in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let first = browser.get(PAGE).await;
    let newest = log_record_ids(&first.html);
    assert_eq!(newest.len(), 50, "{}", first.html);
    let marker = "<p class=\"pager\"><a href=\"";
    let start = first.html.find(marker).expect("a link to older lines") + marker.len();
    let older_href = first.html[start..].split('"').next().unwrap().to_owned();
    assert!(older_href.starts_with(&format!("{PAGE}?cursor=")), "{older_href}");

    let second = browser.get(&older_href).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.html);
    let older = log_record_ids(&second.html);
    assert_eq!(older.len(), 5, "{}", second.html);
    assert!(!second.html.contains("class=\"pager\""), "the last page links no further");
    assert!(!element(&second.html, "hubspot-log").contains("data-live"), "an older page does not refresh");
    let shown: std::collections::BTreeSet<String> = newest.into_iter().chain(older).collect();
    assert_eq!(shown, made, "every line once, across the two pages");
}
