//! Contacts: create from the form (a bad email refused beside its field, the good one firing
//! `contact.created` to a real receiver), search, edit (`contact.updated`), bulk status on two rows
//! (two `contact.updated`) and a bulk refusal that names its row, delete after the question, the
//! contact's page showing its webhook delivered or failing, an agent seeing only their own, and
//! Export CSV in the shared format.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::Web;
use crate::helpers::{Received, Receiver, Reply};

/// The ids of the table's rows, in order.
async fn row_ids(web: &Web) -> Vec<String> {
    let ids = web
        .browser
        .script("return [...document.querySelectorAll('#contacts tr[data-record-id]')].map(r => r.dataset.recordId)")
        .await;
    ids.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// Waits for the contact's timeline to show `event` with a delivery in one of `states`; answers
/// the row's text and links.
pub(crate) async fn timeline_row(web: &Web, event: &str, states: &[&str]) -> (String, Vec<String>) {
    let script = "const rows = [...document.querySelectorAll('#timeline tr[data-event]')] \
                  .filter(r => r.dataset.event === arguments[0] && arguments[1].includes(r.dataset.status)); \
                  return rows.length ? [rows[0].innerText, [...rows[0].querySelectorAll('a')].map(a => a.getAttribute('href'))] : null";
    let found = web
        .browser
        .eventually(&format!("the timeline to show {event} as {states:?}"), || async {
            let row = web.browser.client().execute(script, vec![json!(event), json!(states)]).await.ok()?;
            (!row.is_null()).then_some(row)
        })
        .await;
    let links = found[1].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
    (found[0].as_str().unwrap_or("").to_owned(), links)
}

fn event_of(received: &Received) -> (String, Value) {
    let body = received.json();
    (body["event"].as_str().unwrap_or("").to_owned(), body["data"].clone())
}

#[tokio::test]
async fn a_contact_is_created_from_the_form_found_edited_and_its_webhooks_shown_delivered() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "*", "description": "Zapier" })).await;
    let browser = &web.browser;

    browser.visit("/contacts/new").await;
    browser.fill("first_name", "Ada").await;
    browser.fill("last_name", "Lovelace").await;
    browser.fill("email", "ada at example").await;
    browser.fill("phone", "+44 20 7946 0001").await;
    browser.fill("tags", "buyer, cash").await;
    browser.fill("preferences.min_price", "250,000").await;
    browser.fill("preferences.locations", "Bath, Bristol").await;
    browser.press("email", "Create contact", "[id='f-email-error']").await;
    let message = browser.text("[id='f-email-error']").await;
    assert!(message.contains("email"), "the API's message beside the field: {message:?}");
    assert_eq!(browser.script("return document.getElementById('f-email').getAttribute('aria-invalid')").await, "true");
    assert_eq!(
        browser.script("return document.getElementById('f-first_name').value").await,
        "Ada",
        "what was typed stays"
    );

    browser.fill("email", "ada@example.com").await;
    browser.press("email", "Create contact", "#timeline").await;
    let (event, data) = event_of(&receiver.next().await);
    assert_eq!(event, "contact.created", "the refused form fired nothing; the good one fired this");
    assert_eq!(data["email"], "ada@example.com");
    assert_eq!(data["tags"], json!(["buyer", "cash"]));
    assert_eq!(data["preferences"], json!({"min_price": 250000, "locations": ["Bath", "Bristol"]}));
    let id = data["id"].as_str().unwrap().to_owned();
    assert_eq!(browser.path().await, format!("/contacts/{id}"));

    let (row, links) = timeline_row(&web, "contact.created", &["succeeded"]).await;
    assert!(row.contains("Zapier") && row.contains("200"), "delivered, with its status code: {row:?}");
    assert!(
        links.iter().any(|href| href.starts_with("/settings/deliveries/msg_")),
        "an admin's row links to the delivery: {links:?}"
    );
    browser.screenshot("contact").await;

    browser.visit("/contacts?q=lovelace").await;
    assert_eq!(row_ids(&web).await, std::slice::from_ref(&id), "search finds it by name");
    browser.visit("/contacts?q=2079460001").await;
    assert_eq!(row_ids(&web).await, std::slice::from_ref(&id), "and by the phone's digits");
    browser.visit("/contacts?q=nobody-like-this").await;
    assert!(row_ids(&web).await.is_empty());

    browser.visit(&format!("/contacts/{id}/edit")).await;
    browser.screenshot("contact-edit").await;
    browser.fill("mobile", "07700 900123").await;
    browser.fill("tags", "").await;
    browser.select("status", "VIP").await;
    browser.press("mobile", "Save", "[role='status'].flash.ok").await;
    let (event, data) = event_of(&receiver.next().await);
    assert_eq!(event, "contact.updated");
    assert_eq!((data["mobile"].as_str(), data["status"].as_str()), (Some("07700 900123"), Some("VIP")));
    assert!(data["tags"].is_null(), "an emptied field is cleared: {data}");
    timeline_row(&web, "contact.updated", &["succeeded"]).await;
    web.browser.close().await;
}

#[tokio::test]
async fn bulk_status_fires_one_update_per_row_a_refused_row_is_named_and_delete_asks_first() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app
        .add_endpoint(json!({ "url": receiver.url("/hook"), "events": ["contact.updated", "contact.deleted"] }))
        .await;
    let mut ids = Vec::new();
    for (first, last) in [("Grace", "Hopper"), ("Alan", "Turing"), ("Edsger", "Dijkstra")] {
        let email = format!("{}@example.com", first.to_lowercase());
        ids.push(
            web.app
                .create("contacts", json!({"first_name": first, "last_name": last, "email": email, "tags": ["bulk"]}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let browser = &web.browser;
    browser.visit("/contacts?tag=bulk").await;
    assert_eq!(row_ids(&web).await, [ids[2].clone(), ids[1].clone(), ids[0].clone()], "newest first");
    browser.set_checked(&format!("pick-{}", ids[0]), true).await;
    browser.set_checked(&format!("pick-{}", ids[1]), true).await;
    browser.select("bulk-action", "status").await;
    browser.select("bulk-status", "Inactive").await;
    browser.screenshot("contacts").await;
    browser.press("bulk-action", "Apply", "[role='status'].flash.ok").await;
    let updates = receiver.take(2).await;
    let mut changed: Vec<String> = updates
        .iter()
        .map(|r| {
            let (event, data) = event_of(r);
            assert_eq!((event.as_str(), data["status"].as_str()), ("contact.updated", Some("Inactive")));
            data["id"].as_str().unwrap().to_owned()
        })
        .collect();
    changed.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(changed, expected, "one webhook per ticked row");
    assert!(browser.path().await.contains("tag=bulk"), "back to the same list: {}", browser.path().await);

    // All or nothing: a row deleted meanwhile refuses the whole action, named in the message.
    browser.set_checked(&format!("pick-{}", ids[1]), true).await;
    browser.set_checked(&format!("pick-{}", ids[2]), true).await;
    let deleted = web.app.delete(&format!("/api/v1/contacts/{}", ids[1])).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(event_of(&receiver.next().await).0, "contact.deleted");
    browser.select("bulk-action", "status").await;
    browser.select("bulk-status", "VIP").await;
    browser.press("bulk-action", "Apply", ".row-errors").await;
    let errors = browser.text(".row-errors").await;
    assert!(errors.contains(&ids[1]), "the refused row is named: {errors:?}");
    let untouched = web.app.get(&format!("/api/v1/contacts/{}", ids[2])).await;
    assert_eq!(untouched.body["status"], "Active", "nothing was changed");

    // Delete asks first, then fires contact.deleted.
    browser.visit(&format!("/contacts/{}", ids[2])).await;
    let delete = browser.find_xpath("//a[normalize-space(.)='Delete']").await;
    delete.click().await.expect("following Delete");
    let confirm = browser.button("Delete contact").await;
    assert!(web.app.get(&format!("/api/v1/contacts/{}", ids[2])).await.status == StatusCode::OK, "not yet deleted");
    browser.check_page().await;
    browser.submit(confirm, "[role='status'].flash.ok").await;
    let (event, data) = event_of(&receiver.next().await);
    assert_eq!((event.as_str(), data["id"].as_str()), ("contact.deleted", Some(ids[2].as_str())));
    assert_eq!(web.app.get(&format!("/api/v1/contacts/{}", ids[2])).await.status, StatusCode::NOT_FOUND);
    assert!(receiver.drain().is_empty(), "the refused bulk action fired nothing");
    web.browser.close().await;
}

#[tokio::test]
async fn a_failing_receiver_shows_on_the_contacts_timeline() {
    let web = Web::admin().await;
    let mut receiver = Receiver::answering(|_| Reply::status(500).with_body("down")).await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "contact.created" })).await;
    let contact = web.app.create("contacts", json!({"first_name": "Barbara", "last_name": "Liskov"})).await;
    receiver.next().await;
    web.browser.visit(&format!("/contacts/{}", contact["id"].as_str().unwrap())).await;
    let (row, _) = timeline_row(&web, "contact.created", &["pending", "failed"]).await;
    assert!(row.contains("500"), "the receiver's answer is shown: {row:?}");
    web.browser.close().await;
}

#[tokio::test]
async fn an_agent_sees_and_exports_only_their_own_contacts_and_no_settings_links() {
    let web = Web::admin().await;
    let agent_id = web.make_user("agent", "Grace Agent", "grace@agency.example").await;
    let receiver = Receiver::start().await;
    web.app.add_endpoint(json!({ "url": receiver.url("/secret-path?token=abc"), "events": "*" })).await;
    let theirs = web
        .app
        .create("contacts", json!({"first_name": "Assigned", "last_name": "Smith", "assigned_agent_id": agent_id}))
        .await;
    let hidden = web
        .app
        .create("contacts", json!({"first_name": "Hidden", "last_name": "Smith", "email": "=cmd@example.com"}))
        .await;
    let admin_cookie = web.session_cookie().await;
    let all = web.send_as(&admin_cookie, Method::GET, "/contacts/export?q=smith", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.headers["content-type"], "text/csv; charset=utf-8");
    let text = String::from_utf8(all.raw.to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "id,first_name,last_name,prefix,email,phone,mobile,address,city,state,zipcode,country,lifecycle_stage,\
         lead_source,lead_type,status,assigned_agent_id,tags,notes,preferences.min_price,preferences.max_price,\
         preferences.beds,preferences.baths,preferences.locations,preferences.property_type,created_at,updated_at"
    );
    let rows: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 2, "every row of the filtered list: {text}");
    assert!(
        rows[0].starts_with(&format!("{},Hidden,Smith,,'=cmd@example.com,", hidden["id"].as_str().unwrap())),
        "newest first, a formula guarded: {}",
        rows[0]
    );

    web.sign_out().await;
    web.sign_in("grace@agency.example", crate::PASSWORD).await;
    let browser = &web.browser;
    browser.visit("/contacts/new").await;
    browser.fill("first_name", "Own").await;
    browser.fill("last_name", "Smith").await;
    browser.press("first_name", "Create contact", "#timeline").await;
    let own = browser.path().await.trim_start_matches("/contacts/").to_owned();
    let (row, links) = timeline_row(&web, "contact.created", &["succeeded", "pending"]).await;
    assert!(
        links.is_empty() && !row.contains("secret-path"),
        "no settings links or URLs for agents: {row:?} {links:?}"
    );

    browser.visit("/contacts").await;
    assert_eq!(row_ids(&web).await, [own.clone(), theirs["id"].as_str().unwrap().to_owned()]);
    browser.visit("/contacts?q=smith").await;
    assert_eq!(row_ids(&web).await.len(), 2, "search keeps to their own");
    let hidden_page = web
        .send_as(
            &web.session_cookie().await,
            Method::GET,
            &format!("/contacts/{}", hidden["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(hidden_page.status, StatusCode::NOT_FOUND);

    let export = web.send_as(&web.session_cookie().await, Method::GET, "/contacts/export?q=smith", None).await;
    let text = String::from_utf8(export.raw.to_vec()).unwrap();
    assert_eq!(text.lines().count(), 3, "the header and their two: {text}");
    assert!(!text.contains("Hidden"));

    web.browser.close().await;
}
