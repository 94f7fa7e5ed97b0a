//! Leads, enquiries, tasks, the deals board and the agent's dashboard, as people use them: every
//! change made on a page reaches a real receiver as the event the API fires for the same change.
//!
//! Drag and drop: chromedriver's native pointer actions do not fire HTML5 `dragstart` / `drop`
//! events, so the test dispatches those DragEvents itself, with a DataTransfer, from a script in
//! the page (`execute`). That still runs app.js's own handlers, which post the card's stage form;
//! only the mouse gesture is simulated.

use serde_json::{Value, json};

use crate::Web;
use crate::helpers::Receiver;

/// The event names and `data` of the next `n` webhooks.
async fn events(receiver: &mut Receiver, n: usize) -> Vec<(String, Value)> {
    receiver
        .take(n)
        .await
        .into_iter()
        .map(|r| {
            let body = r.json();
            (body["event"].as_str().unwrap_or("").to_owned(), body["data"].clone())
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// The stage of the column that holds the deal's card now, if the card is on the board.
pub(crate) async fn column_of(web: &Web, deal: &str) -> Option<String> {
    let script = "const c = document.querySelector(`#board [data-deal-id='${arguments[0]}']`); \
                  return c ? c.closest('section.column').dataset.stage : null";
    web.browser.script_with(script, vec![json!(deal)]).await.as_str().map(str::to_owned)
}

pub(crate) async fn wait_for_column(web: &Web, deal: &str, stage: &str) {
    web.browser
        .eventually(&format!("deal {deal} in column {stage}"), || async {
            (column_of(web, deal).await.as_deref() == Some(stage)).then_some(())
        })
        .await;
}

/// Drags the deal's card onto a column as a person's mouse would, by dispatching the HTML5 drag
/// events (see the module's note) that app.js listens to.
async fn drag_card(web: &Web, deal: &str, stage: &str) {
    let script = "const card = document.querySelector(`#board [data-deal-id='${arguments[0]}']`); \
        const column = document.querySelector(`#board section.column[data-stage='${arguments[1]}']`); \
        const data = new DataTransfer(); \
        const fire = (target, type) => target.dispatchEvent(new DragEvent(type, \
            { bubbles: true, cancelable: true, dataTransfer: data })); \
        fire(card, 'dragstart'); fire(column, 'dragenter'); \
        const accepted = !fire(column, 'dragover'); \
        fire(column, 'drop'); fire(card, 'dragend'); \
        return accepted;";
    let accepted = web.browser.script_with(script, vec![json!(deal), json!(stage)]).await;
    assert_eq!(accepted, true, "the column accepts the drop (app.js cancels its dragover)");
}

#[tokio::test]
async fn a_deal_moves_across_the_board_by_drag_and_drop_and_by_the_stage_menu() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app
        .add_endpoint(json!({ "url": receiver.url("/hook"), "events": "deal.stage_changed,deal.won,deal.lost",
            // One at a time, so that the receiver sees them in the order they were fired.
            "max_in_flight": 1 }))
        .await;
    let contact = web.app.create("contacts", json!({ "first_name": "Grace", "last_name": "Hopper" })).await;
    let contact_id = contact["id"].as_str().unwrap();
    let deal =
        web.app.create("deals", json!({ "title": "12 Harbour Row", "amount": 450000, "contact_id": contact_id })).await;
    let deal = deal["id"].as_str().unwrap().to_owned();
    web.app.create("deals", json!({ "title": "Flat 3, Mill Lane", "amount": 210000, "stage": "offer_made" })).await;

    let browser = &web.browser;
    browser.visit("/deals").await;
    assert_eq!(column_of(&web, &deal).await.as_deref(), Some("new"));
    let card = browser.text(&format!("[data-deal-id='{deal}']")).await;
    assert!(card.contains("12 Harbour Row") && card.contains("450,000") && card.contains("Grace Hopper"), "{card}");
    assert_eq!(browser.text("section[data-stage='new'] .count-badge").await, "1");
    browser.mark_document().await;

    drag_card(&web, &deal, "viewing_scheduled").await;
    wait_for_column(&web, &deal, "viewing_scheduled").await;
    let moved = events(&mut receiver, 1).await;
    assert_eq!(names(&moved), ["deal.stage_changed"]);
    assert_eq!(
        (moved[0].1["previous_stage"].as_str(), moved[0].1["stage"].as_str()),
        (Some("new"), Some("viewing_scheduled"))
    );
    assert_eq!(browser.text("section[data-stage='new'] .count-badge").await, "0", "the counts follow the move");
    let totals = browser.text("section[data-stage='viewing_scheduled'] .column-figures").await;
    assert!(totals.contains("USD 450,000"), "the column's total: {totals}");
    browser.assert_not_reloaded("a drop").await;

    // The stage menu, as a keyboard or touch user moves a card.
    let menu = browser.find(&format!("[id='stage-of-{deal}']")).await;
    menu.select_by_value("closed_won").await.expect("choosing Closed Won");
    browser
        .find_xpath(&format!("//li[@data-deal-id='{deal}']//button[normalize-space(.)='Move']"))
        .await
        .click()
        .await
        .unwrap();
    wait_for_column(&web, &deal, "closed_won").await;
    let won = events(&mut receiver, 2).await;
    assert_eq!(names(&won), ["deal.stage_changed", "deal.won"], "the same events a PATCH fires, in its order");
    assert_eq!(won[0].1["stage"], "closed_won");
    browser.assert_not_reloaded("the stage menu").await;
    browser.check_page().await;
    browser.screenshot("deals").await;
    // On a phone's width the columns stack, one under another, and nothing scrolls sideways.
    browser.client().set_window_size(390, 844).await.expect("a phone's width");
    let layout = browser
        .script(
            "const [a, b] = document.querySelectorAll('#board section.column'); \
             return [b.getBoundingClientRect().top >= a.getBoundingClientRect().bottom, \
                     document.documentElement.scrollWidth <= window.innerWidth]",
        )
        .await;
    assert_eq!(layout, json!([true, true]), "stacked columns, no sideways scrolling");
    browser.client().set_window_size(1280, 800).await.expect("the usual width");

    // Without the script the same form posts and the board comes back: Lost on the other deal.
    let other = web.app.get("/api/v1/deals?limit=10").await;
    let other =
        other.body["items"].as_array().unwrap().iter().find(|d| d["title"] == "Flat 3, Mill Lane").unwrap().clone();
    let other_id = other["id"].as_str().unwrap();
    let cookie = web.session_cookie().await;
    let csrf = web.csrf_token().await;
    let answer = web
        .send_from(
            &cookie,
            Some(&web.app.url("")),
            hyper::Method::POST,
            &format!("/deals/{other_id}/stage"),
            Some(&[
                ("csrf_token", csrf.as_str()),
                ("stage", "offer_made"),
                ("close", "closed_lost"),
                ("back", "/deals"),
            ]),
        )
        .await;
    assert_eq!(answer.status, 303, "a form's move goes back to the board: {}", answer.body);
    let lost = events(&mut receiver, 2).await;
    assert_eq!(names(&lost), ["deal.stage_changed", "deal.lost"]);
    browser.visit("/deals").await;
    assert_eq!(column_of(&web, other_id).await.as_deref(), Some("closed_lost"));
    browser.visit("/deals?stage=closed_lost").await;
    assert!(browser.text("#deals").await.contains("Flat 3, Mill Lane"), "a stage's own list");

    // A deal's page: its form shows the API's message beside the field and saves nothing.
    browser.visit(&format!("/deals/{deal}")).await;
    assert_eq!(browser.text("main h1").await, "12 Harbour Row");
    browser.fill("amount", "a lot").await;
    browser.press("amount", "Save", "[id='f-amount-error']").await;
    assert_eq!(browser.text("[id='f-amount-error']").await, "must be a number");
    browser.fill("amount", "460000").await;
    browser.press("amount", "Save", ".flash.ok").await;
    assert_eq!(web.app.get(&format!("/api/v1/deals/{deal}")).await.body["amount"], 460000);
    browser.screenshot("deal").await;
    browser.visit(&format!("/deals/new?contact_id={contact_id}")).await;
    browser.fill("title", "Garden flat").await;
    browser.press("title", "Create deal", ".flash.ok").await;
    assert!(browser.text("dl.facts").await.contains("Grace Hopper"), "made for the contact it was opened from");
    assert!(receiver.drain().is_empty(), "saving fields other than the stage fires no stage event");
    web.browser.close().await;
}

#[tokio::test]
async fn a_task_is_completed_from_its_checkbox_in_place() {
    let web = Web::start().await;
    let me = web.make_user("admin", "Ada Admin", "admin@example.com").await;
    web.sign_in("admin@example.com", crate::PASSWORD).await;
    let mut receiver = Receiver::start().await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "task.completed" })).await;
    let task = web
        .app
        .create("tasks", json!({ "title": "Call Grace back", "due_date": "2020-01-02", "assigned_agent_id": me }))
        .await;
    let task = task["id"].as_str().unwrap().to_owned();
    let later = web
        .app
        .create("tasks", json!({ "title": "Send the brochure", "due_date": "2040-06-01", "assigned_agent_id": me }))
        .await;
    let later = later["id"].as_str().unwrap().to_owned();
    web.app.create("tasks", json!({ "title": "Someone else's", "due_date": "2020-01-01" })).await;

    let browser = &web.browser;
    browser.visit("/tasks").await;
    let rows = browser.script("return [...document.querySelectorAll('#tasks tbody tr')].map(r => r.innerText)").await;
    let rows: Vec<&str> = rows.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(rows.len(), 2, "my tasks only: {rows:?}");
    assert!(rows[0].contains("Call Grace back") && rows[0].contains("overdue"), "overdue first: {rows:?}");
    assert!(!rows[1].contains("overdue"), "{rows:?}");
    browser.screenshot("tasks").await;
    browser.mark_document().await;

    browser.find(&format!("[id='done-{task}']")).await.click().await.expect("ticking the task");
    let done = events(&mut receiver, 1).await;
    assert_eq!(names(&done), ["task.completed"]);
    assert_eq!(done[0].1["id"], task.as_str());
    browser
        .eventually("the row to show the task done", || async {
            let done = browser.script_with(
                "const r = document.querySelector(`tr[data-record-id='${arguments[0]}']`); return r && r.dataset.done",
                vec![json!(task)],
            );
            (done.await == "true").then_some(())
        })
        .await;
    browser.assert_not_reloaded("ticking a task").await;
    let api = web.app.get(&format!("/api/v1/tasks/{task}")).await;
    assert_eq!(api.body["completed"], true, "{}", api.body);

    // Without the script: the box ticked and Save pressed post the same form, and the list comes back.
    let cookie = web.session_cookie().await;
    let csrf = web.csrf_token().await;
    let fields = [("csrf_token", csrf.as_str()), ("set", "1"), ("done", "on"), ("back", "/tasks?whose=mine&done=")];
    let answer = web
        .send_from(
            &cookie,
            Some(&web.app.url("")),
            hyper::Method::POST,
            &format!("/tasks/{later}/complete"),
            Some(&fields),
        )
        .await;
    let location = answer.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!((answer.status.as_u16(), location), (303, "/tasks?whose=mine&done="));
    assert_eq!(events(&mut receiver, 1).await[0].1["id"], later.as_str());
    let elsewhere = [("csrf_token", csrf.as_str()), ("set", "1"), ("back", "https://evil.example/")];
    let answer = web
        .send_from(
            &cookie,
            Some(&web.app.url("")),
            hyper::Method::POST,
            &format!("/tasks/{later}/complete"),
            Some(&elsewhere),
        )
        .await;
    let location = answer.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(location, "/tasks", "unticked it opens the task again, and goes back only within the site");
    assert_eq!(web.app.get(&format!("/api/v1/tasks/{later}")).await.body["completed"], false);

    browser.visit("/tasks?whose=mine&done=1").await;
    assert!(browser.text("#tasks").await.contains("Call Grace back"), "the completed list has it");
    browser.visit("/tasks?whose=all&done=").await;
    assert!(browser.text("#tasks").await.contains("Someone else's"), "an admin's list of all tasks");
    browser.visit(&format!("/tasks/{task}")).await;
    assert_eq!(browser.find("[id='f-completed']").await.prop("checked").await.unwrap().as_deref(), Some("true"));
    browser.visit("/tasks/new").await;
    browser.press("title", "Create task", "[id='f-contact_id']").await;
    assert_eq!(browser.text("[id='f-title-error']").await, "is required");
    web.browser.close().await;
}

#[tokio::test]
async fn make_lead_turns_an_enquiry_into_a_lead_once() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "lead.created" })).await;
    let enquiry = web
        .app
        .create(
            "enquiries",
            json!({ "name": "Ada Lovelace", "email": "ada@example.com", "message": "Is the flat on Mill Lane still free?",
                    "property_id": "prop-77", "source": "website" }),
        )
        .await;
    let enquiry_id = enquiry["id"].as_str().unwrap().to_owned();
    let contact_id = enquiry["contact_id"].as_str().unwrap().to_owned();
    web.app
        .create("enquiries", json!({ "name": "<b>Bold</b> Bob", "email": "bob@example.com", "message": "Call me" }))
        .await;

    let browser = &web.browser;
    browser.visit("/enquiries").await;
    let first = browser.text("#enquiries tbody tr:last-child").await;
    assert!(first.contains("Ada Lovelace") && first.contains("Mill Lane"), "{first}");
    assert!(browser.text("#enquiries").await.contains("<b>Bold</b> Bob"), "what people typed is shown as text");
    let link = browser.find(&format!("tr[data-record-id='{enquiry_id}'] a[href='/contacts/{contact_id}']")).await;
    assert_eq!(link.text().await.unwrap(), "Ada Lovelace");
    browser.screenshot("enquiries").await;

    let button = browser
        .find_xpath(&format!("//tr[@data-record-id='{enquiry_id}']//button[normalize-space(.)='Make lead']"))
        .await;
    browser.submit(button, "#fixed-contact, .flash.ok").await;
    assert!(browser.path().await.starts_with("/leads/lea_"), "the new lead's page opens: {}", browser.path().await);
    let made = events(&mut receiver, 1).await;
    assert_eq!(names(&made), ["lead.created"]);
    let lead = &made[0].1;
    assert_eq!(lead["contact_id"], contact_id.as_str());
    assert_eq!(lead["message"], "Is the flat on Mill Lane still free?");
    assert_eq!(lead["property_id"], "prop-77");
    assert_eq!(lead["lead_source"], format!("Enquiry {enquiry_id}"));

    browser.visit("/enquiries").await;
    let row = browser.text(&format!("tr[data-record-id='{enquiry_id}']")).await;
    assert!(row.contains("Open lead") && !row.contains("Make lead"), "the enquiry shows its lead: {row}");
    // An old page's second press opens the same lead instead of making another.
    let cookie = web.session_cookie().await;
    let csrf = web.csrf_token().await;
    let again = web
        .send_from(
            &cookie,
            Some(&web.app.url("")),
            hyper::Method::POST,
            &format!("/enquiries/{enquiry_id}/make-lead"),
            Some(&[("csrf_token", csrf.as_str())]),
        )
        .await;
    let location = again.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(location, format!("/leads/{}", lead["id"].as_str().unwrap()));
    assert!(receiver.drain().is_empty(), "no second lead.created");
    web.browser.close().await;
}

#[tokio::test]
async fn a_lead_is_created_edited_and_deleted_from_its_pages_with_the_apis_messages() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app
        .add_endpoint(json!({ "url": receiver.url("/hook"), "events": "lead.created,lead.updated,lead.deleted" }))
        .await;
    let contact = web.app.create("contacts", json!({ "first_name": "Katherine", "last_name": "Johnson" })).await;
    let contact_id = contact["id"].as_str().unwrap();

    let browser = &web.browser;
    browser.visit(&format!("/leads/new?contact_id={contact_id}")).await;
    assert_eq!(browser.text("#fixed-contact").await, "For Katherine Johnson");
    browser.select("lead_type", "Buyer").await;
    browser.fill("status", "New").await;
    browser.fill("message", "Wants three bedrooms near the park.").await;
    browser.press("status", "Create lead", ".flash.ok").await;
    let created = events(&mut receiver, 1).await;
    assert_eq!(names(&created), ["lead.created"]);
    assert_eq!(
        (created[0].1["lead_type"].as_str(), created[0].1["contact_id"].as_str()),
        (Some("Buyer"), Some(contact_id))
    );
    let lead = created[0].1["id"].as_str().unwrap().to_owned();
    assert_eq!(browser.path().await, format!("/leads/{lead}?saved=created"));

    // A value the API refuses comes back with its message beside the field, nothing saved.
    browser.fill("property_id", &"x".repeat(201)).await;
    browser.fill("status", "Contacted").await;
    browser.press("status", "Save", "[id='f-property_id-error']").await;
    assert_eq!(browser.text("[id='f-property_id-error']").await, "must be at most 200 characters");
    assert_eq!(
        browser.find("[id='f-status']").await.prop("value").await.unwrap().as_deref(),
        Some("Contacted"),
        "what was typed stays"
    );
    browser.screenshot("lead").await;
    assert!(receiver.drain().is_empty(), "a refused form fires nothing");

    browser.fill("property_id", "prop-9").await;
    browser.press("status", "Save", ".flash.ok").await;
    let updated = events(&mut receiver, 1).await;
    assert_eq!(names(&updated), ["lead.updated"]);
    assert_eq!(
        (updated[0].1["status"].as_str(), updated[0].1["property_id"].as_str()),
        (Some("Contacted"), Some("prop-9"))
    );

    // Saving again unchanged fires nothing.
    browser.press("status", "Save", ".flash.ok").await;
    assert!(browser.text(".flash.ok").await.contains("Nothing changed"));

    browser.visit("/leads?status=Contacted&lead_type=&agent=").await;
    assert_eq!(browser.all("#leads tbody tr").await.len(), 1);
    browser.screenshot("leads").await;
    browser.visit("/leads?status=Lost").await;
    assert!(!browser.has("#leads").await, "the status filter leaves it out");
    assert!(receiver.drain().is_empty());

    // Delete asks first: without its box ticked the server deletes nothing.
    browser.visit(&format!("/leads/{lead}")).await;
    let cookie = web.session_cookie().await;
    let csrf = web.csrf_token().await;
    let unconfirmed = web
        .send_from(
            &cookie,
            Some(&web.app.url("")),
            hyper::Method::POST,
            &format!("/leads/{lead}/delete"),
            Some(&[("csrf_token", csrf.as_str())]),
        )
        .await;
    assert_eq!(unconfirmed.status, 422);
    assert_eq!(web.app.get(&format!("/api/v1/leads/{lead}")).await.status, 200, "still there");
    browser.set_checked("confirm_delete", true).await;
    browser.press("confirm_delete", "Delete", ".flash.ok").await;
    assert_eq!(browser.path().await, "/leads?deleted=1");
    let deleted = events(&mut receiver, 1).await;
    assert_eq!((deleted[0].0.as_str(), deleted[0].1["id"].as_str()), ("lead.deleted", Some(lead.as_str())));
    assert_eq!(web.app.get(&format!("/api/v1/leads/{lead}")).await.status, 404);
    web.browser.close().await;
}

#[tokio::test]
async fn an_agents_dashboard_and_lists_show_only_their_own() {
    let web = Web::admin().await;
    let ann = web.make_user("agent", "Ann Agent", "ann@example.com").await;
    let bob = web.make_user("agent", "Bob Agent", "bob@example.com").await;
    let anns_contact = web
        .app
        .create("contacts", json!({ "first_name": "Ann's", "last_name": "Buyer", "assigned_agent_id": ann }))
        .await;
    let anns_contact = anns_contact["id"].as_str().unwrap();
    let bobs_contact = web
        .app
        .create("contacts", json!({ "first_name": "Bob's", "last_name": "Seller", "assigned_agent_id": bob }))
        .await;
    let bobs_contact = bobs_contact["id"].as_str().unwrap();
    for (agent, contact, who) in [(&ann, anns_contact, "Ann"), (&bob, bobs_contact, "Bob")] {
        web.app.create("deals", json!({ "title": format!("{who}'s deal"), "amount": 100000, "contact_id": contact, "assigned_agent_id": agent })).await;
        web.app
            .create(
                "tasks",
                json!({ "title": format!("{who}'s task"), "due_date": "2020-03-01", "assigned_agent_id": agent }),
            )
            .await;
        web.app
            .create(
                "leads",
                json!({ "contact_id": contact, "message": format!("{who}'s lead"), "assigned_agent_id": agent }),
            )
            .await;
    }
    // More closed deals than a closed column shows.
    let won: Vec<Value> = (0..6)
        .map(|n| json!({ "title": format!("Ann's sale {n}"), "stage": "closed_won", "assigned_agent_id": ann }))
        .collect();
    let bulk = web.app.post("/api/v1/deals/bulk", json!({ "create": won })).await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    web.sign_out().await;
    web.sign_in("ann@example.com", crate::PASSWORD).await;

    let browser = &web.browser;
    browser.visit("/").await;
    let tasks = browser.text("#dashboard-tasks").await;
    assert!(tasks.contains("Ann's task") && tasks.contains("overdue") && !tasks.contains("Bob's"), "{tasks}");
    assert_eq!(browser.text("#dashboard-deals tr[data-stage='new'] .deal-count").await, "1");
    assert_eq!(browser.text("#dashboard-deals tr[data-stage='new'] .deal-total").await, "USD 100,000");
    assert!(!browser.has("#webhook-health").await, "agents do not see the webhooks' health");
    browser.screenshot("dashboard-agent").await;

    browser.visit("/deals").await;
    let board = browser.text("#board").await;
    assert!(board.contains("Ann's deal") && !board.contains("Bob's"), "{board}");
    assert_eq!(
        browser.all("section[data-stage='closed_won'] [data-deal-id]").await.len(),
        5,
        "a closed column is bounded"
    );
    assert_eq!(browser.text("section[data-stage='closed_won'] .count-badge").await, "6");
    let more = browser.find("section[data-stage='closed_won'] .more a").await;
    assert_eq!(more.text().await.unwrap(), "1 more in Closed Won");
    browser.submit(more, "#deals").await;
    assert_eq!(browser.all("#deals tbody tr[data-record-id]").await.len(), 6, "the stage's list has them all");
    browser.visit("/leads").await;
    let leads = browser.text("#leads").await;
    assert!(leads.contains("Ann's lead") && !leads.contains("Bob's"), "{leads}");
    browser.visit("/tasks").await;
    let tasks = browser.text("#tasks").await;
    assert!(tasks.contains("Ann's task") && !tasks.contains("Bob's"), "{tasks}");
    browser.visit("/enquiries").await;

    let bobs_deal = web.app.get("/api/v1/deals?limit=10").await;
    let bobs_deal =
        bobs_deal.body["items"].as_array().unwrap().iter().find(|d| d["title"] == "Bob's deal").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let cookie = web.session_cookie().await;
    let page = web.send_as(&cookie, hyper::Method::GET, &format!("/deals/{bobs_deal}"), None).await;
    assert_eq!(page.status, 404, "another agent's deal is not there for her");
    web.browser.visit("/deals").await;
    let csrf = web.csrf_token().await;
    let moved = web
        .send_from(
            &cookie,
            Some(&web.app.url("")),
            hyper::Method::POST,
            &format!("/deals/{bobs_deal}/stage"),
            Some(&[("csrf_token", csrf.as_str()), ("stage", "closed_won")]),
        )
        .await;
    assert_eq!(moved.status, 404, "nor can she move it");
    let api = web.app.get(&format!("/api/v1/deals/{bobs_deal}")).await;
    assert_eq!(api.body["stage"], "new");
    web.browser.close().await;
}
