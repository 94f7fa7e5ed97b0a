//! Two checks across the CRM screens: a file from Export CSV on one server imports into another
//! with every field of every contact equal, and a new user's first day (the sample file imported,
//! a contact found, a deal made from it and won on the board, its webhooks seen delivered on the
//! contact's page).

use hyper::Method;
use serde_json::{Map, Value, json};

use crate::Web;
use crate::contacts::timeline_row;
use crate::helpers::Receiver;
use crate::import::{chosen, import_and_wait, upload, write_file};
use crate::pipeline::wait_for_column;

/// Contacts whose values a CSV can get wrong: commas, quotes, line breaks, lists, numbers with
/// fractions, values a spreadsheet would run as formulas (and one that only looks guarded), and a
/// contact with almost nothing set.
fn awkward_contacts() -> Vec<Value> {
    vec![
        json!({
            "first_name": "Zoë", "last_name": "O'Brien, Jr", "prefix": "Dr", "email": "zoe.obrien@example.com",
            "phone": "+44 20 7946 0000", "mobile": "-0", "address": "12 \"The Old Mill\"\nMill Lane",
            "city": "Bath", "state": "Somerset", "zipcode": "BA1 1AA", "country": "United Kingdom",
            "lifecycle_stage": "qualified", "lead_source": "=SUM(A1)", "lead_type": "Buyer", "status": "VIP",
            "assigned_agent_id": "agent-7", "tags": ["cash buyer, no chain", "@home", "\"first\" time"],
            "notes": "Line one\r\nline two, with a comma and \"quotes\"",
            "preferences": {"min_price": 250000, "max_price": 412500.5, "beds": 3, "baths": 2,
                            "locations": ["Widcombe", "Larkhall, upper"], "property_type": "Townhouse"}
        }),
        json!({
            "first_name": "Ana", "last_name": "'=not a formula", "email": "ana@example.com",
            "notes": "@mention, +1, -1, =1+1", "tags": ["=HYPERLINK(\"http://evil.example\")"],
            "preferences": {"beds": 0, "locations": ["Clifton"]}
        }),
        json!({ "first_name": "Min", "email": "min@example.com" }),
    ]
}

/// A contact as the API gives it, without what a new server gives it afresh.
fn comparable(contact: &Value) -> Map<String, Value> {
    let mut fields = contact.as_object().expect("a contact object").clone();
    for fresh in ["id", "created_at", "updated_at", "created_by"] {
        fields.remove(fresh);
    }
    fields
}

/// Every contact the API lists, by email.
async fn contacts_by_email(web: &Web) -> std::collections::BTreeMap<String, Map<String, Value>> {
    let listed = web.app.get("/api/v1/contacts?limit=100").await;
    let items = listed.body["items"].as_array().expect("a list of contacts");
    items.iter().map(|contact| (contact["email"].as_str().unwrap_or("").to_owned(), comparable(contact))).collect()
}

#[tokio::test]
async fn export_csv_from_one_server_imports_into_another_with_every_field_equal() {
    let a = Web::admin().await;
    for contact in awkward_contacts() {
        a.app.create("contacts", contact).await;
    }
    a.browser.visit("/contacts").await;
    let exported = a.send_as(&a.session_cookie().await, Method::GET, "/contacts/export", None).await;
    assert_eq!(exported.status, 200);
    let file_text = String::from_utf8(exported.raw.to_vec()).expect("the export is UTF-8");
    assert!(file_text.contains("'=SUM(A1)") && file_text.contains("'+44 20"), "formulas are guarded: {file_text}");
    let originals = contacts_by_email(&a).await;
    assert_eq!(originals.len(), 3);
    a.browser.close().await;

    let b = Web::admin().await;
    let dir = tempfile::tempdir().expect("a folder for the file");
    let file = write_file(&dir, "contacts-export.csv", &exported.raw);
    upload(&b, "contacts", &file, "#mapping").await;
    assert_eq!(chosen(&b, 0).await, "ignore", "the export's id is not imported");
    assert_eq!(chosen(&b, 1).await, "first_name");
    let mapping_text = b.browser.text("#mapping").await;
    assert!(mapping_text.contains("Preferences: min price"), "the mapping shows fields by label: {mapping_text}");
    import_and_wait(&b, "Import 3 contacts").await;
    assert_eq!(b.browser.text("#refused-count").await, "0");
    let copies = contacts_by_email(&b).await;
    assert_eq!(copies.keys().collect::<Vec<_>>(), originals.keys().collect::<Vec<_>>(), "the same contacts");
    for (email, original) in &originals {
        let copy = &copies[email];
        for (field, value) in original {
            assert_eq!(copy.get(field), Some(value), "{email}: {field} came back equal");
        }
        assert_eq!(copy, original, "{email}: nothing more, nothing less");
    }
    b.browser.close().await;
}

#[tokio::test]
async fn a_new_user_imports_the_sample_finds_a_contact_wins_its_deal_and_sees_the_webhooks_delivered() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app
        .add_endpoint(json!({ "url": receiver.url("/hook"), "description": "Accounts",
            "events": "deal.created,deal.stage_changed,deal.won", "max_in_flight": 1 }))
        .await;
    let browser = &web.browser;

    // The upload page offers the sample; the user downloads it and uploads it again.
    browser.visit("/contacts/import").await;
    let offered = browser.find("a[href='/contacts/import/sample.csv']").await;
    assert!(offered.text().await.unwrap().contains("sample file"));
    let sample = web.send_as(&web.session_cookie().await, Method::GET, "/contacts/import/sample.csv", None).await;
    assert_eq!(sample.status, 200);
    let rows = sample.raw.iter().filter(|byte| **byte == b'\n').count() - 1;
    let dir = tempfile::tempdir().expect("a folder for the download");
    let file = write_file(&dir, "sample-contacts.csv", &sample.raw);
    upload(&web, "contacts", &file, "#mapping").await;
    import_and_wait(&web, &format!("Import {rows} contacts")).await;
    assert_eq!(browser.text("#refused-count").await, "0");

    // From the summary to the contacts, and a search by surname.
    let to_contacts = browser.find_xpath("//main//a[@href='/contacts']").await;
    browser.submit(to_contacts, "#f-q").await;
    browser.fill("q", "Flores").await;
    browser.press("q", "Search", "#contacts").await;
    let contact = browser.find_xpath("//table[@id='contacts']//a[normalize-space(.)='Isabella Flores']").await;
    browser.submit(contact, "#timeline").await;
    let contact_page = browser.path().await;
    assert_eq!(browser.text("main h1").await, "Isabella Flores");

    // New deal from the contact's page: the contact is already chosen.
    let new_deal = browser.find_xpath("//a[normalize-space(.)='New deal']").await;
    browser.submit(new_deal, "#fixed-contact").await;
    assert!(browser.text("#fixed-contact").await.contains("Isabella Flores"));
    browser.fill("title", "Duplex on River Way").await;
    browser.fill("amount", "790000").await;
    browser.press("title", "Create deal", "main h1").await;
    let deal_page = browser.path().await;
    let deal = deal_page.trim_start_matches("/deals/").split('?').next().unwrap().to_owned();
    assert!(deal_page.starts_with("/deals/") && !deal.is_empty(), "on the new deal's page: {deal_page}");

    // To the board, where the stage menu moves it to Closed Won.
    let board = browser.find_xpath("//main//a[@href='/deals']").await;
    browser.submit(board, "#board").await;
    let menu = browser.find(&format!("[id='stage-of-{deal}']")).await;
    menu.select_by_value("closed_won").await.expect("choosing Closed Won");
    let move_button =
        browser.find_xpath(&format!("//li[@data-deal-id='{deal}']//button[normalize-space(.)='Move']")).await;
    move_button.click().await.expect("pressing Move");
    wait_for_column(&web, &deal, "closed_won").await;
    let received: Vec<String> =
        receiver.take(3).await.iter().map(|r| r.json()["event"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(received, ["deal.created", "deal.stage_changed", "deal.won"], "the receiver got the deal's webhooks");

    // Back to the contact from the card, where the deal's webhooks show as delivered.
    let card_contact =
        browser.find_xpath(&format!("//li[@data-deal-id='{deal}']//a[normalize-space(.)='Isabella Flores']")).await;
    browser.submit(card_contact, "#timeline").await;
    assert_eq!(browser.path().await, contact_page);
    for event in ["deal.created", "deal.stage_changed", "deal.won"] {
        let (row, links) = timeline_row(&web, event, &["succeeded"]).await;
        assert!(row.contains("Accounts") && row.contains("200"), "{event} delivered, with its code: {row:?}");
        assert!(row.contains("Duplex on River Way"), "{event} names its deal: {row:?}");
        assert!(links.contains(&format!("/deals/{deal}")), "{event} links to its deal: {links:?}");
    }
    let deals = browser.text("section[aria-labelledby='h-deals'] ul").await;
    assert!(deals.contains("Closed Won · USD 790,000"), "the deal's stage and amount as the board shows them: {deals}");
    browser.screenshot("contact-with-deal").await;
    web.browser.close().await;
}
