//! The event rules of webhooks.md, seen through the event log (`GET /api/v1/events`), and the payload
//! every event carries: exactly `event, timestamp, data, site_url`, compact, `data` as the API shows it.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::{Receiver, TestApp};
use crate::records::assert_utc_seconds;

const ALL_EVENTS: [&str; 13] = [
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "lead.created",
    "lead.updated",
    "lead.deleted",
    "enquiry.created",
    "deal.created",
    "deal.stage_changed",
    "deal.won",
    "deal.lost",
    "task.completed",
    "webhook.test",
];

fn keys(value: &Value) -> Vec<&str> {
    value.as_object().unwrap_or_else(|| panic!("an object, got {value}")).keys().map(String::as_str).collect()
}

/// Reads the event log as a client would and hands out what is new since the last look.
struct Log {
    seen: usize,
}

impl Log {
    fn new() -> Log {
        Log { seen: 0 }
    }

    /// The events logged since the last call, oldest first: their names must be `names`. Checks each
    /// entry's envelope and answers each event's `data`.
    async fn fired(&mut self, app: &TestApp, names: &[&str]) -> Vec<Value> {
        let answer = app.get("/api/v1/events?limit=1000").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let mut items = answer.body["items"].as_array().unwrap().clone();
        items.reverse();
        let new = items.split_off(self.seen);
        self.seen += new.len();
        let got: Vec<&str> = new.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(got, names, "the events fired");
        for entry in &new {
            assert_eq!(keys(entry), ["id", "event", "timestamp", "body"], "{entry}");
            let body = &entry["body"];
            assert_eq!(keys(body), ["event", "timestamp", "data", "site_url"], "{body}");
            assert_eq!(body["event"], entry["event"]);
            assert_eq!(body["timestamp"], entry["timestamp"]);
            assert_utc_seconds(&body["timestamp"]);
        }
        new.into_iter().map(|mut e| e["body"]["data"].take()).collect()
    }
}

fn path(plural: &str, record: &Value) -> String {
    format!("/api/v1/{plural}/{}", record["id"].as_str().unwrap_or_else(|| panic!("no id in {record}")))
}

/// Creates, changes and deletes a record of `plural`, checking that each step fires the one event in
/// `names` with the record as the API shows it (for the deletion: as it was).
async fn check_lifecycle(app: &TestApp, plural: &str, create: Value, change: Value, names: [&str; 3]) {
    let mut log = Log { seen: app.event_names().await.len() };
    let created = app.create(plural, create).await;
    assert_eq!(log.fired(app, &names[..1]).await, std::slice::from_ref(&created), "{plural} created");
    assert_eq!(app.get(&path(plural, &created)).await.body, created);

    let changed = app.patch(&path(plural, &created), change).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_ne!(changed.body, created);
    assert_eq!(log.fired(app, &names[1..2]).await, std::slice::from_ref(&changed.body), "{plural} updated");
    assert_eq!(app.get(&path(plural, &created)).await.body, changed.body);

    assert_eq!(app.delete(&path(plural, &created)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(log.fired(app, &names[2..]).await, [changed.body], "{plural} deleted: the record as it was");
}

#[tokio::test]
async fn contacts_and_leads_fire_created_updated_deleted() {
    let app = TestApp::spawn().await;
    check_lifecycle(
        &app,
        "contacts",
        json!({"first_name": "Ada", "email": "ada@example.com", "preferences": {"beds": 3}}),
        json!({"city": "Austin", "preferences": null}),
        ["contact.created", "contact.updated", "contact.deleted"],
    )
    .await;
    let contact = app.create("contacts", json!({"first_name": "Bo"})).await;
    check_lifecycle(
        &app,
        "leads",
        json!({"contact_id": contact["id"], "lead_type": "Buyer"}),
        json!({"status": "Qualified", "lead_type": null}),
        ["lead.created", "lead.updated", "lead.deleted"],
    )
    .await;
}

#[tokio::test]
async fn an_enquiry_from_a_new_email_creates_its_contact_first() {
    let app = TestApp::spawn().await;
    let mut log = Log::new();
    let enquiry = app
        .create(
            "enquiries",
            json!({"name": "Jane van Doe", "email": "Jane@Example.com", "phone": "+1 555", "source": "web"}),
        )
        .await;
    let data = log.fired(&app, &["contact.created", "enquiry.created"]).await;
    let contacts = app.get("/api/v1/contacts").await.body["items"].clone();
    assert_eq!(contacts.as_array().unwrap().len(), 1);
    let contact = &contacts[0];
    assert_eq!(enquiry["contact_id"], contact["id"], "the enquiry links the new contact");
    assert_eq!(
        (&contact["first_name"], &contact["last_name"], &contact["email"], &contact["phone"]),
        (&json!("Jane"), &json!("van Doe"), &json!("Jane@Example.com"), &json!("+1 555"))
    );
    assert_eq!(data, [contact.clone(), enquiry.clone()]);
    assert_eq!(app.get(&path("enquiries", &enquiry)).await.body, enquiry);
}

#[tokio::test]
async fn an_enquiry_from_a_known_email_links_that_contact_and_fires_only_enquiry_created() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Jane", "email": "jane@example.com"})).await;
    let mut log = Log { seen: 1 };
    for email in ["jane@example.com", "JANE@EXAMPLE.COM", " Jane@example.com "] {
        let enquiry = app.create("enquiries", json!({"name": "Someone Else", "email": email})).await;
        assert_eq!(enquiry["contact_id"], contact["id"], "{email}");
        assert_eq!(log.fired(&app, &["enquiry.created"]).await, [enquiry]);
    }
    // Without an email there is nothing to link.
    let enquiry = app.create("enquiries", json!({"name": "Phone Only", "phone": "+1 555"})).await;
    assert_eq!(enquiry["contact_id"], Value::Null);
    assert_eq!(log.fired(&app, &["enquiry.created"]).await, [enquiry]);
    assert_eq!(app.get("/api/v1/contacts").await.body["items"], json!([contact]), "no contact was added or changed");
}

#[tokio::test]
async fn a_deal_created_at_a_closed_stage_is_won_or_lost_at_once() {
    let app = TestApp::spawn().await;
    let mut log = Log::new();
    for (stage, names) in [
        ("closed_won", &["deal.created", "deal.won"][..]),
        ("closed_lost", &["deal.created", "deal.lost"]),
        ("negotiation", &["deal.created"]),
    ] {
        let deal = app.create("deals", json!({"title": "Sale", "stage": stage})).await;
        let data = log.fired(&app, names).await;
        assert!(data.iter().all(|d| *d == deal), "{stage}: every event carries the deal as the API shows it");
    }
}

#[tokio::test]
async fn a_stage_change_fires_stage_changed_then_won_or_lost() {
    let app = TestApp::spawn().await;
    let deal = app.create("deals", json!({"title": "Sale", "amount": 100})).await;
    let deal_path = path("deals", &deal);
    let mut log = Log { seen: 1 };
    for (stage, previous, names) in [
        ("viewing_scheduled", "new", &["deal.stage_changed"][..]),
        ("closed_won", "viewing_scheduled", &["deal.stage_changed", "deal.won"]),
        ("negotiation", "closed_won", &["deal.stage_changed"]),
        ("closed_lost", "negotiation", &["deal.stage_changed", "deal.lost"]),
    ] {
        let changed = app.patch(&deal_path, json!({"stage": stage})).await.body;
        let data = log.fired(&app, names).await;
        let mut with_previous = changed.clone();
        with_previous["previous_stage"] = json!(previous);
        assert_eq!(data[0], with_previous, "deal.stage_changed carries the deal plus previous_stage");
        assert_eq!(keys(&data[0]).last(), Some(&"previous_stage"));
        if let Some(closing) = data.get(1) {
            assert_eq!(*closing, changed, "deal.won/lost carry the deal alone");
        }
    }
    // Changes that leave the stage alone fire nothing: there is no deal.updated.
    for change in
        [json!({"amount": 200, "probability": 90}), json!({"stage": "closed_lost"}), json!({"title": "Renamed"})]
    {
        assert_eq!(app.patch(&deal_path, change.clone()).await.status, StatusCode::OK, "{change}");
    }
    log.fired(&app, &[]).await;
    assert_eq!(app.delete(&deal_path).await.status, StatusCode::NO_CONTENT);
    log.fired(&app, &[]).await;
}

#[tokio::test]
async fn task_completed_fires_only_from_not_done_to_done() {
    let app = TestApp::spawn().await;
    let mut log = Log::new();
    let task = app.create("tasks", json!({"title": "Call"})).await;
    let task_path = path("tasks", &task);
    let complete = format!("{task_path}/complete");
    log.fired(&app, &[]).await;
    app.patch(&task_path, json!({"title": "Call back", "notes": "twice"})).await;
    log.fired(&app, &[]).await;

    let done = app.patch(&task_path, json!({"completed": true})).await.body;
    assert_eq!(log.fired(&app, &["task.completed"]).await, std::slice::from_ref(&done));
    app.patch(&task_path, json!({"completed": true})).await;
    app.request(Method::POST, &complete, None).await;
    app.patch(&task_path, json!({"notes": "done already"})).await;
    log.fired(&app, &[]).await;

    app.patch(&task_path, json!({"completed": false})).await;
    log.fired(&app, &[]).await;
    let again = app.request(Method::POST, &complete, None).await.body;
    assert_eq!(log.fired(&app, &["task.completed"]).await, [again]);

    let other = app.create("tasks", json!({"title": "Email"})).await;
    let first = app.request(Method::POST, &format!("{}/complete", path("tasks", &other)), None).await.body;
    let second = app.request(Method::POST, &format!("{}/complete", path("tasks", &other)), None).await.body;
    assert_eq!(first, second);
    assert_eq!(log.fired(&app, &["task.completed"]).await, [first], "completing twice fires once");

    // A task created done never went from not done to done; deleting tasks fires nothing.
    let created_done = app.create("tasks", json!({"title": "Old", "completed": true})).await;
    assert_eq!(app.delete(&path("tasks", &created_done)).await.status, StatusCode::NO_CONTENT);
    log.fired(&app, &[]).await;
}

#[tokio::test]
async fn updates_that_change_nothing_fire_nothing() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Ada", "status": "VIP", "tags": ["a", "b"]})).await;
    let lead = app.create("leads", json!({"contact_id": contact["id"], "lead_type": "Buyer"})).await;
    let deal = app.create("deals", json!({"title": "Sale", "stage": "negotiation", "amount": 5})).await;
    let mut log = Log::new();
    log.fired(&app, &["contact.created", "lead.created", "deal.created"]).await;
    for (plural, record, change) in [
        ("contacts", &contact, json!({"first_name": "Ada", "status": "vip", "tags": ["a", "b"], "city": null})),
        ("contacts", &contact, json!({})),
        ("leads", &lead, json!({"lead_type": "BUYER", "contact_id": contact["id"]})),
        ("deals", &deal, json!({"stage": "negotiation", "amount": 5})),
    ] {
        let answer = app.patch(&path(plural, record), change).await;
        assert_eq!(&answer.body, record);
    }
    let same = json!({"update": [{"id": contact["id"], "first_name": "Ada"}]});
    assert_eq!(app.post("/api/v1/contacts/bulk", same).await.status, StatusCode::OK);
    log.fired(&app, &[]).await;
    // Tags are a list: another order is a change.
    app.patch(&path("contacts", &contact), json!({"tags": ["b", "a"]})).await;
    log.fired(&app, &["contact.updated"]).await;
}

#[tokio::test]
async fn a_delivery_body_is_four_keys_in_order_compact_utf8() {
    let mut receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    app.add_endpoint(json!({"url": receiver.url("/hook"), "events": "*"})).await;
    let contact =
        app.create("contacts", json!({"first_name": "Zoë", "last_name": "O\"Neil", "notes": "a/b <c> é"})).await;
    let received = receiver.next().await;
    let raw = std::str::from_utf8(&received.body).expect("UTF-8");
    assert!(raw.starts_with(r#"{"event":"contact.created","timestamp":""#), "{raw}");
    assert!(raw.contains(r#""first_name":"Zoë""#), "non-ASCII is sent as UTF-8, not escaped: {raw}");
    let body = received.json();
    assert_eq!(keys(&body), ["event", "timestamp", "data", "site_url"]);
    assert_eq!(serde_json::to_vec(&body).unwrap(), received.body, "compact: no whitespace between tokens");
    assert_utc_seconds(&body["timestamp"]);
    assert_eq!(body["timestamp"], contact["created_at"], "stamped when the change was committed");
    assert_eq!(body["data"], app.get(&path("contacts", &contact)).await.body);
    assert_eq!(body["site_url"], format!("http://{}", app.address), "the default site URL");
    assert_eq!(received.header("content-type"), "application/json");
    assert_eq!(received.header("x-crm-event"), "contact.created");
    // The event log holds the same bytes.
    let log = app.get("/api/v1/events").await;
    assert_eq!(serde_json::to_vec(&log.body["items"][0]["body"]).unwrap(), received.body);
}

#[tokio::test]
async fn site_url_is_the_servers_site_url() {
    let app = TestApp::spawn_with(&["--site-url", "https://crm.example.com"]).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    app.create("deals", json!({"title": "Sale", "stage": "closed_won"})).await;
    let log = app.get("/api/v1/events").await;
    let items = log.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|e| e["body"]["site_url"] == "https://crm.example.com"), "{}", log.body);
    let types = app.get("/api/v1/event-types").await;
    let samples = types.body["items"].as_array().unwrap();
    assert!(samples.iter().all(|t| t["sample"]["site_url"] == "https://crm.example.com"), "{}", types.body);
}

#[tokio::test]
async fn the_event_log_is_newest_first_and_filters_by_event_and_since() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    app.patch(&path("contacts", &contact), json!({"city": "Austin"})).await;
    app.create("contacts", json!({"first_name": "Bo"})).await;
    app.create("deals", json!({"title": "Sale", "stage": "closed_won"})).await;
    let all = app.get("/api/v1/events").await.body;
    let newest_first = ["deal.won", "deal.created", "contact.created", "contact.updated", "contact.created"];
    let names = |page: &Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&all), newest_first);
    assert_eq!(all["next_cursor"], Value::Null);

    let first = app.get("/api/v1/events?limit=2").await.body;
    assert_eq!(names(&first), newest_first[..2]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest = app.get(&format!("/api/v1/events?limit=3&cursor={cursor}")).await.body;
    assert_eq!(names(&rest), newest_first[2..]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let created = app.get("/api/v1/events?event=contact.created").await.body;
    assert_eq!(names(&created), ["contact.created", "contact.created"]);
    assert_eq!(names(&app.get("/api/v1/events?event=deal.lost").await.body), Vec::<String>::new());
    assert_eq!(names(&app.get("/api/v1/events?since=2000-01-01T00:00:00Z").await.body), newest_first);
    assert_eq!(names(&app.get("/api/v1/events?since=2999-01-01T00:00:00Z").await.body), Vec::<String>::new());
    let latest = all["items"][0]["timestamp"].as_str().unwrap().to_owned();
    let since_latest = app.get(&format!("/api/v1/events?since={latest}")).await.body;
    assert_eq!(since_latest["items"][0], all["items"][0], "since includes its own second");
    let since = app.get(&format!("/api/v1/events?since={latest}&event=contact.created")).await.body;
    assert!(names(&since).iter().all(|n| n == "contact.created"));

    for query in ["event=contact.exploded", "event=Contact.Created"] {
        assert_error(
            &app.get(&format!("/api/v1/events?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            &["event"],
        );
    }
    for query in ["since=yesterday", "since=2026-04-17", "since=1713357296"] {
        assert_error(
            &app.get(&format!("/api/v1/events?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            &["since"],
        );
    }
}

#[tokio::test]
async fn event_types_list_all_13_events_with_a_description_and_a_sample() {
    let app = TestApp::spawn().await;
    let answer = app.get("/api/v1/event-types").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let items = answer.body["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|t| t["event"].as_str().unwrap()).collect();
    assert_eq!(names, ALL_EVENTS);
    for item in items {
        let name = item["event"].as_str().unwrap();
        let description = item["description"].as_str().unwrap_or("");
        assert!(description.len() > 10 && !description.contains('\n'), "{name}: a one-line description");
        let sample = &item["sample"];
        assert_eq!(keys(sample), ["event", "timestamp", "data", "site_url"], "{name}");
        assert_eq!(sample["event"], name);
        assert_utc_seconds(&sample["timestamp"]);
        assert_eq!(sample["site_url"], format!("http://{}", app.address));
        assert!(sample["data"]["id"].is_string(), "{name}: the sample data is a record");
    }
    let sample = |name: &str| items.iter().find(|t| t["event"] == name).unwrap()["sample"]["data"].clone();
    // A sample has the same shape as a real payload's data.
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    assert_eq!(keys(&sample("contact.created")), keys(&contact));
    assert_eq!(keys(&sample("webhook.test")), keys(&contact), "the test button sends a fake contact");
    let deal = app.create("deals", json!({"title": "Sale"})).await;
    assert_eq!(keys(&sample("deal.won")), keys(&deal));
    assert_eq!(sample("deal.stage_changed")["previous_stage"].as_str().map(str::is_empty), Some(false));
}

#[tokio::test]
async fn the_pipeline_lists_the_six_stages_in_order() {
    let app = TestApp::spawn().await;
    let answer = app.get("/api/v1/pipeline").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let stages: Vec<(&str, &str)> = answer.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [
            ("new", "New"),
            ("viewing_scheduled", "Viewing Scheduled"),
            ("offer_made", "Offer Made"),
            ("negotiation", "Negotiation"),
            ("closed_won", "Closed Won"),
            ("closed_lost", "Closed Lost"),
        ]
    );
}
