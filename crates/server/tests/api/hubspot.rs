//! The HubSpot integration against the HubSpot stand-in: settings, the check, the mirror through
//! failures, rate limits and crashes, a revoked token, the backfill and the sync log.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::errors::user_with_token;
use crate::helpers::TestApp;
use crate::hubspot_standin::{GOOD_TOKEN, HubSpot, Object};

/// How long the mirror may take to catch up in these tests.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Our stage -> HubSpot's default pipeline stage, as docs/HUBSPOT.md documents it.
fn hub_stage(stage: &str) -> &'static str {
    match stage {
        "new" => "appointmentscheduled",
        "viewing_scheduled" => "qualifiedtobuy",
        "offer_made" => "presentationscheduled",
        "negotiation" => "contractsent",
        "closed_won" => "closedwon",
        "closed_lost" => "closedlost",
        other => panic!("unknown stage {other}"),
    }
}

async fn connect(app: &TestApp, hub: &HubSpot, requests: u64, per_ms: u64) -> Value {
    let answer = app
        .put(
            "/api/v1/integrations/hubspot",
            json!({"access_token": GOOD_TOKEN, "base_url": hub.url(),
                   "rate_limit": {"requests": requests, "per_ms": per_ms}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// Every record of a kind, through the API.
async fn all(app: &TestApp, plural: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app.get(&format!("/api/v1/{plural}?limit=1000&cursor={cursor}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        items.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return items,
        }
    }
}

fn text(record: &Value, field: &str) -> String {
    match &record[field] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Where HubSpot's contents differ from estate-crm's (mapped), if they do.
async fn difference(app: &TestApp, hub: &HubSpot) -> Option<String> {
    let contacts = all(app, "contacts").await;
    let deals = all(app, "deals").await;
    let hub_contacts: HashMap<String, Object> =
        hub.live("contacts").into_iter().map(|o| (o.get("estate_crm_id"), o)).collect();
    let hub_deals: HashMap<String, Object> =
        hub.live("deals").into_iter().map(|o| (o.get("estate_crm_id"), o)).collect();
    let with_email: Vec<&Value> = contacts.iter().filter(|c| !text(c, "email").is_empty()).collect();
    if with_email.len() != hub_contacts.len() {
        return Some(format!("{} contacts with an email here, {} in HubSpot", with_email.len(), hub_contacts.len()));
    }
    for contact in &with_email {
        let id = text(contact, "id");
        let Some(theirs) = hub_contacts.get(&id) else { return Some(format!("contact {id} is not in HubSpot")) };
        for (ours, property) in
            [("email", "email"), ("first_name", "firstname"), ("last_name", "lastname"), ("phone", "phone")]
        {
            let expected = if ours == "email" { text(contact, ours).to_lowercase() } else { text(contact, ours) };
            if theirs.get(property) != expected {
                return Some(format!(
                    "contact {id}: {property} is {:?} in HubSpot, {expected:?} here",
                    theirs.get(property)
                ));
            }
        }
    }
    if deals.len() != hub_deals.len() {
        return Some(format!("{} deals here, {} in HubSpot", deals.len(), hub_deals.len()));
    }
    let associations: BTreeSet<(String, String)> = hub.associations().into_iter().collect();
    let contact_hub_ids: HashMap<String, String> =
        hub_contacts.iter().map(|(ours, o)| (ours.clone(), o.id.clone())).collect();
    for deal in &deals {
        let id = text(deal, "id");
        let Some(theirs) = hub_deals.get(&id) else { return Some(format!("deal {id} is not in HubSpot")) };
        let expected = [
            ("dealname", text(deal, "title")),
            ("amount", text(deal, "amount")),
            ("dealstage", hub_stage(&text(deal, "stage")).to_owned()),
            ("pipeline", "default".to_owned()),
        ];
        for (property, value) in expected {
            if theirs.get(property) != value {
                return Some(format!("deal {id}: {property} is {:?} in HubSpot, {value:?} here", theirs.get(property)));
            }
        }
        if let Some(contact_hub_id) = contact_hub_ids.get(&text(deal, "contact_id"))
            && !associations.contains(&(theirs.id.clone(), contact_hub_id.clone()))
        {
            return Some(format!("deal {id} is not associated with its contact in HubSpot"));
        }
    }
    None
}

/// Waits until HubSpot mirrors estate-crm and the sync has committed every event (so its log and
/// mappings are written too), failing with the last difference after [`CATCH_UP`].
async fn wait_until_mirrored(app: &TestApp, hub: &HubSpot) {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let state = app.get("/api/v1/integrations/hubspot").await.body;
        let difference = match difference(app, hub).await {
            None if state["backlog"] == 0 => return,
            None => "the sync has not committed every event yet".to_owned(),
            Some(difference) => difference,
        };
        assert!(Instant::now() < deadline, "HubSpot did not catch up: {difference}; state {state}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the integration's state satisfies `done`.
async fn wait_for_state(app: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let state = app.get("/api/v1/integrations/hubspot").await.body;
        if done(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "waited in vain for {what}: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No HubSpot object was made twice for one of our records.
fn assert_nothing_created_twice(hub: &HubSpot) {
    for object in ["contacts", "deals"] {
        let mut seen = BTreeSet::new();
        for made in hub.all(object) {
            let ours = made.get("estate_crm_id");
            assert!(seen.insert(ours.clone()), "{object}: {ours} was created twice in HubSpot");
        }
    }
    let creations = hub.creations();
    let unique: BTreeSet<_> = creations.iter().collect();
    assert_eq!(unique.len(), creations.len(), "a key was created twice");
}

async fn bulk(app: &TestApp, plural: &str, body: Value) -> Vec<String> {
    let answer = app.post(&format!("/api/v1/{plural}/bulk"), body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn settings_are_for_administrators_and_never_show_the_token() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/api/v1/integrations/hubspot").await.body["state"], "not_connected");

    let refused = app.put("/api/v1/integrations/hubspot", json!({"base_url": hub.url()})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    let refused = app
        .put(
            "/api/v1/integrations/hubspot",
            json!({"access_token": "x", "stage_map": {"sold": "1"}, "colour": "red", "base_url": "ftp://x"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    let raw = refused.body.to_string();
    for field in ["stage_map", "colour", "base_url"] {
        assert!(raw.contains(field), "{field} is named in {raw}");
    }

    let saved = connect(&app, &hub, 100, 10_000).await;
    assert_eq!(saved["state"], "connected");
    assert_eq!(saved["has_token"], true);
    assert_eq!(saved["rate_limit"], json!({"requests": 100, "per_ms": 10_000}));
    let shown = app.get("/api/v1/integrations/hubspot").await;
    assert!(!shown.raw.windows(GOOD_TOKEN.len()).any(|w| w == GOOD_TOKEN.as_bytes()), "the token is never shown");
    assert!(!saved.to_string().contains(GOOD_TOKEN));

    let (_, agent) = user_with_token(&app, "agent-hubspot", "agent").await;
    for (method, path) in [
        (Method::GET, "/api/v1/integrations/hubspot"),
        (Method::PUT, "/api/v1/integrations/hubspot"),
        (Method::POST, "/api/v1/integrations/hubspot/check"),
        (Method::GET, "/api/v1/integrations/hubspot/log"),
    ] {
        let answer = app.request_as(&agent, method.clone(), path, Some(json!({}))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
    }

    let check = app.post("/api/v1/integrations/hubspot/check", json!({})).await;
    assert_eq!(check.status, StatusCode::OK, "{}", check.body);
    assert_eq!(check.body["ok"], true, "{}", check.body);
    assert!(check.body["scopes"].as_array().unwrap().contains(&json!("crm.objects.deals.write")));

    let mapped = app.put("/api/v1/integrations/hubspot", json!({"stage_map": {"closed_won": "won-ish"}})).await;
    assert_eq!(mapped.status, StatusCode::OK, "{}", mapped.body);
    let check = app.post("/api/v1/integrations/hubspot/check", json!({})).await;
    assert_eq!(check.body["ok"], false, "{}", check.body);
    assert_eq!(check.body["problems"].as_array().unwrap().len(), 1, "{}", check.body);
    assert!(check.body["problems"][0].as_str().unwrap().contains("closed_won maps to \"won-ish\""), "{}", check.body);

    hub.accept_token("another-token");
    let check = app.post("/api/v1/integrations/hubspot/check", json!({})).await;
    assert_eq!(check.body["ok"], false);
    assert_eq!(check.body["status_code"], 401);
    assert!(check.body["problems"][0].as_str().unwrap().contains("refused the access token"), "{}", check.body);
}

#[tokio::test]
async fn the_base_url_may_be_private_only_with_allow_private_targets() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn_public_only().await;
    let refused =
        app.put("/api/v1/integrations/hubspot", json!({"access_token": GOOD_TOKEN, "base_url": hub.url()})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert!(refused.body.to_string().contains("base_url"));
}

/// The scenario: thousands of contacts and hundreds of deals created, updated and deleted
/// while HubSpot fails a tenth of the calls and the server is killed twice.
#[tokio::test]
async fn contacts_and_deals_are_mirrored_through_failures_rate_limits_and_crashes() {
    const CONTACTS: usize = 5000;
    const DEALS: usize = 500;
    let hub = HubSpot::start().await;
    hub.limit(20, Duration::from_millis(1000));
    hub.fail_percent(10);
    let app = TestApp::spawn().await;
    connect(&app, &hub, 20, 1000).await;

    let contacts: Vec<Value> = (0..CONTACTS)
        .map(|i| {
            // Every 100th contact has no email: it is skipped, with its reason in the log.
            let email = if i % 100 == 7 { Value::Null } else { json!(format!("Buyer{i}@Example.com")) };
            json!({"first_name": format!("Buyer{i}"), "last_name": "Smith", "email": email, "phone": format!("+44 {i}")})
        })
        .collect();
    let contact_ids = bulk(&app, "contacts", json!({"create": contacts})).await;
    let stages = ["new", "viewing_scheduled", "offer_made", "negotiation"];
    let deals: Vec<Value> = (0..DEALS)
        .map(|i| {
            json!({"title": format!("Flat {i}"), "contact_id": contact_ids[i * 3], "amount": 100_000 + i,
                   "stage": stages[i % stages.len()]})
        })
        .collect();
    let deal_ids = bulk(&app, "deals", json!({"create": deals})).await;

    let app = app.kill_and_restart().await;

    // Updates: half the contacts change name; deals move stage (events), change amount only
    // (no event: the sweep finds them), are won or lost.
    let renamed: Vec<Value> = contact_ids.iter().step_by(2).map(|id| json!({"id": id, "last_name": "Jones"})).collect();
    bulk(&app, "contacts", json!({"update": renamed})).await;
    let deal_updates: Vec<Value> = deal_ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i % 4 {
            0 => json!({"id": id, "stage": "closed_won"}),
            1 => json!({"id": id, "stage": "closed_lost"}),
            2 => json!({"id": id, "amount": 999_999}),
            _ => json!({"id": id, "title": format!("Renamed flat {i}")}),
        })
        .collect();
    bulk(&app, "deals", json!({"update": deal_updates})).await;
    let doomed_contacts: Vec<&String> = contact_ids.iter().skip(1).step_by(10).collect();
    bulk(&app, "contacts", json!({"delete": doomed_contacts})).await;
    let doomed_deals: Vec<&String> = deal_ids.iter().skip(5).step_by(25).collect();
    bulk(&app, "deals", json!({"delete": doomed_deals})).await;

    let app = app.kill_and_restart().await;

    // A few single changes after the second crash, one of them to a contact's email.
    let changed =
        app.patch(&format!("/api/v1/contacts/{}", contact_ids[0]), json!({"email": "moved@example.com"})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let moved = app.patch(&format!("/api/v1/deals/{}", deal_ids[3]), json!({"stage": "offer_made"})).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);

    wait_until_mirrored(&app, &hub).await;
    assert_eq!(hub.over_limit(), 0, "the stand-in's request limit was never passed");
    assert!(hub.injected() > 0, "the stand-in failed some calls on purpose");
    assert!(hub.largest_batch() <= 100);
    assert!(hub.largest_batch() > 1, "changes are sent in batches");
    assert_nothing_created_twice(&hub);
    // The contact whose email changed is the same HubSpot contact, not a second one.
    assert_eq!(hub.all("contacts").iter().filter(|c| c.get("estate_crm_id") == contact_ids[0]).count(), 1);

    let skipped = app.get(&format!("/api/v1/integrations/hubspot/log?record_id={}", contact_ids[7])).await;
    assert_eq!(skipped.status, StatusCode::OK);
    let line = &skipped.body["items"][0];
    assert_eq!(line["action"], "skip", "{}", skipped.body);
    assert!(line["error"].as_str().unwrap().contains("no email"), "{line}");
    let sent = app.get(&format!("/api/v1/integrations/hubspot/log?record_id={}", contact_ids[2])).await;
    let upserted = sent.body["items"].as_array().unwrap().iter().find(|l| l["status_code"] == 200).expect("a 200 line");
    assert!(upserted["hubspot_id"].is_string());
    assert_eq!(upserted["sent"]["lastname"], "Jones", "{upserted}");
    let live_deals = json!(deal_ids.len() - doomed_deals.len());
    let state =
        wait_for_state(&app, "the mappings of the archived deals to go", |s| s["counts"]["deals"] == live_deals).await;
    assert_eq!(state["state"], "connected");
}

#[tokio::test]
async fn a_revoked_token_pauses_the_sync_until_a_working_one_is_saved() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    connect(&app, &hub, 100, 1000).await;
    app.create("contacts", json!({"first_name": "Ada", "email": "ada@example.com"})).await;
    wait_until_mirrored(&app, &hub).await;

    hub.accept_token("pat-na1-rotated");
    app.create("contacts", json!({"first_name": "Bob", "email": "bob@example.com"})).await;
    let paused = wait_for_state(&app, "the pause", |s| s["state"] == "paused").await;
    assert!(paused["paused_reason"].as_str().unwrap().contains("401"), "{paused}");
    assert_eq!(hub.unauthorized(), 1, "a refused token is not tried again and again");
    assert_eq!(hub.live("contacts").len(), 1);
    // The pause outlasts a restart, and a paused sync does not hold up a graceful stop.
    let app = app.restart().await;
    assert_eq!(app.get("/api/v1/integrations/hubspot").await.body["paused_reason"], paused["paused_reason"]);

    // Changes made while paused wait in the event log; several to one record become one request.
    let carol = app.create("contacts", json!({"first_name": "Carol", "email": "carol@example.com"})).await;
    let carol = carol["id"].as_str().unwrap();
    for name in ["Caroline", "Carla", "Carola"] {
        let changed = app.patch(&format!("/api/v1/contacts/{carol}"), json!({"first_name": name})).await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    }

    let resumed = app.put("/api/v1/integrations/hubspot", json!({"access_token": "pat-na1-rotated"})).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    assert_eq!(resumed.body["state"], "connected");
    wait_until_mirrored(&app, &hub).await;
    assert_eq!(hub.live("contacts").len(), 3);
    assert_eq!(hub.unauthorized(), 1);
    let log = app.get(&format!("/api/v1/integrations/hubspot/log?record_id={carol}")).await;
    let lines = log.body["items"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "four changes while paused, one upsert: {}", log.body);
    assert_eq!(lines[0]["sent"]["firstname"], "Carola");
    assert_eq!(lines[0]["status_code"], 200);
}

#[tokio::test]
async fn a_backfill_sends_what_existed_before_the_connection_and_resumes_after_a_crash() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    let contacts: Vec<Value> =
        (0..450).map(|i| json!({"first_name": format!("Old{i}"), "email": format!("old{i}@example.com")})).collect();
    let contact_ids = bulk(&app, "contacts", json!({"create": contacts})).await;
    let deals: Vec<Value> = (0..120)
        .map(|i| json!({"title": format!("Old deal {i}"), "contact_id": contact_ids[i], "stage": "new"}))
        .collect();
    bulk(&app, "deals", json!({"create": deals})).await;

    // A slow budget, so that the crash comes in the middle of the backfill.
    connect(&app, &hub, 2, 1000).await;
    let state = app.get("/api/v1/integrations/hubspot").await.body;
    assert_eq!(state["backlog"], 0, "what existed before the connection is not in the sync's backlog: {state}");
    let started = app.post("/api/v1/integrations/hubspot/backfill", json!({})).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.body["backfill"]["running"], true);
    let midway = wait_for_state(&app, "a first backfill page", |s| s["backfill"]["done"].as_u64() > Some(0)).await;
    assert_eq!(midway["backfill"]["total"], 570);

    let app = app.kill_and_restart().await;
    let state = app.get("/api/v1/integrations/hubspot").await.body;
    assert_eq!(state["backfill"]["running"], true, "the backfill survives the crash: {state}");
    let done = wait_for_state(&app, "the end of the backfill", |s| s["backfill"]["running"] == false).await;
    assert_eq!(done["backfill"]["done"], 570, "{done}");
    wait_until_mirrored(&app, &hub).await;
    assert_nothing_created_twice(&hub);
}

#[tokio::test]
async fn a_batch_hubspot_refuses_is_logged_per_record_and_the_sync_goes_on() {
    let hub = HubSpot::start().await;
    let app = TestApp::spawn().await;
    connect(&app, &hub, 100, 1000).await;
    let mapped = app.put("/api/v1/integrations/hubspot", json!({"stage_map": {"new": "no-such-stage"}})).await;
    assert_eq!(mapped.status, StatusCode::OK, "{}", mapped.body);
    assert_eq!(mapped.body["stage_map"]["new"], "no-such-stage");
    let contact = app.create("contacts", json!({"first_name": "Dee", "email": "dee@example.com"})).await;
    let deal = app.create("deals", json!({"title": "Mews", "stage": "new", "contact_id": contact["id"]})).await;
    let deal = deal["id"].as_str().unwrap();
    wait_for_state(&app, "the batch to be dealt with", |s| s["backlog"] == 0).await;

    let log = app.get(&format!("/api/v1/integrations/hubspot/log?record_id={deal}")).await;
    let line = &log.body["items"][0];
    assert_eq!(line["status_code"], 400, "{}", log.body);
    assert!(line["error"].as_str().unwrap().contains("no-such-stage"), "{line}");
    assert!(line["hubspot_id"].is_null());
    assert!(hub.live("deals").is_empty());
    assert_eq!(hub.live("contacts").len(), 1, "the contact of the same batch went through");

    // After the map is fixed, later changes go through; the refused deal needs its next change
    // (or a backfill) to be sent again.
    app.put("/api/v1/integrations/hubspot", json!({"stage_map": {"new": "appointmentscheduled"}})).await;
    let moved = app.patch(&format!("/api/v1/deals/{deal}"), json!({"stage": "offer_made"})).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    wait_until_mirrored(&app, &hub).await;
    assert_eq!(hub.live("deals").len(), 1);
}
