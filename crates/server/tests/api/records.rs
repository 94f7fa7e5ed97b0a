//! Records: create, read, list, change and delete each kind as api.md describes, with the defaults,
//! the derived and read-only fields, references, the unique email, and data that outlives the process.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::TestApp;

const CONTACT_KEYS: &[&str] = &[
    "id",
    "first_name",
    "last_name",
    "prefix",
    "email",
    "phone",
    "mobile",
    "address",
    "city",
    "state",
    "zipcode",
    "country",
    "lifecycle_stage",
    "lead_source",
    "lead_type",
    "status",
    "assigned_agent_id",
    "tags",
    "notes",
    "preferences",
    "created_by",
    "created_at",
    "updated_at",
];
const LEAD_KEYS: &[&str] = &[
    "id",
    "contact_id",
    "lead_type",
    "lead_source",
    "status",
    "message",
    "property_id",
    "assigned_agent_id",
    "created_by",
    "created_at",
    "updated_at",
];
const ENQUIRY_KEYS: &[&str] = &[
    "id",
    "name",
    "email",
    "phone",
    "message",
    "property_id",
    "source",
    "contact_id",
    "created_by",
    "created_at",
    "updated_at",
];
const DEAL_KEYS: &[&str] = &[
    "id",
    "title",
    "contact_id",
    "listing_id",
    "amount",
    "currency",
    "probability",
    "stage",
    "expected_close_date",
    "next_action",
    "description",
    "assigned_agent_id",
    "status",
    "stage_changed_at",
    "created_by",
    "created_at",
    "updated_at",
];
const TASK_KEYS: &[&str] = &[
    "id",
    "title",
    "due_date",
    "contact_id",
    "deal_id",
    "assigned_agent_id",
    "notes",
    "completed",
    "completed_at",
    "created_by",
    "created_at",
    "updated_at",
];

/// Asserts that a value is an RFC 3339 UTC time to the second, like `2026-04-17T12:34:56Z`.
pub(super) fn assert_utc_seconds(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("a timestamp, got {value}"));
    assert!(
        text.len() == 20 && text.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{text} is not YYYY-MM-DDTHH:MM:SSZ"
    );
    assert!(chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ").is_ok(), "{text}");
}

fn id_of(record: &Value) -> &str {
    record["id"].as_str().unwrap_or_else(|| panic!("no id in {record}"))
}

/// Creates a record of `plural` from `input` and checks the answer: 201, exactly `keys`, the values
/// in `expected` (defaults included), fresh timestamps, and the same record from a GET.
async fn check_create(app: &TestApp, plural: &str, input: Value, keys: &[&str], expected: Value) -> Value {
    let answer = app.post(&format!("/api/v1/{plural}"), input.clone()).await;
    assert_eq!(answer.status, StatusCode::CREATED, "POST {plural} {input}: {}", answer.body);
    let record = answer.body;
    let mut got: Vec<&str> = record.as_object().expect("an object").keys().map(String::as_str).collect();
    let mut want = keys.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "the fields of a {plural} record");
    for (name, value) in expected.as_object().expect("expected values are an object") {
        assert_eq!(record[name], *value, "{plural}.{name} of {record}");
    }
    assert!(!id_of(&record).is_empty());
    assert_utc_seconds(&record["created_at"]);
    assert_eq!(record["created_at"], record["updated_at"], "a new record was never updated");
    let fetched = app.get(&format!("/api/v1/{plural}/{}", id_of(&record))).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
    assert_eq!(fetched.body, record, "GET answers what POST answered");
    record
}

#[tokio::test]
async fn every_kind_is_created_with_its_fields_and_defaults() {
    let app = TestApp::spawn().await;
    let contact = check_create(
        &app,
        "contacts",
        json!({"first_name": " Ada ", "email": "ada@example.com", "tags": ["vip"], "preferences": {"beds": 3, "locations": ["Austin"]}}),
        CONTACT_KEYS,
        json!({
            "first_name": "Ada", "last_name": null, "email": "ada@example.com", "tags": ["vip"],
            "preferences": {"beds": 3, "locations": ["Austin"]},
            "lifecycle_stage": "new_lead", "status": "Active", "notes": null,
        }),
    )
    .await;
    let contact_id = id_of(&contact).to_owned();
    check_create(
        &app,
        "contacts",
        json!({"phone": "+1 555 0101", "status": "vip", "lifecycle_stage": "customer"}),
        CONTACT_KEYS,
        json!({"phone": "+1 555 0101", "status": "VIP", "lifecycle_stage": "customer", "email": null}),
    )
    .await;
    check_create(
        &app,
        "leads",
        json!({"contact_id": contact_id, "lead_type": "buyer", "message": "3 beds"}),
        LEAD_KEYS,
        json!({"contact_id": contact_id, "lead_type": "Buyer", "message": "3 beds", "status": "New", "lead_source": null}),
    )
    .await;
    check_create(
        &app,
        "enquiries",
        json!({"name": "Bo", "email": "ADA@example.com", "message": "Still available?"}),
        ENQUIRY_KEYS,
        json!({"name": "Bo", "email": "ADA@example.com", "contact_id": contact_id, "phone": null}),
    )
    .await;
    let deal = check_create(
        &app,
        "deals",
        json!({"title": "1 Main St", "contact_id": contact_id, "amount": 350000, "probability": 12.5, "expected_close_date": "2026-06-30"}),
        DEAL_KEYS,
        json!({
            "title": "1 Main St", "amount": 350000, "probability": 12.5, "expected_close_date": "2026-06-30",
            "currency": "USD", "stage": "new", "status": "open", "description": null,
        }),
    )
    .await;
    assert_utc_seconds(&deal["stage_changed_at"]);
    check_create(
        &app,
        "tasks",
        json!({"title": "Call Ada", "due_date": "2026-05-01T10:00:00Z", "deal_id": id_of(&deal)}),
        TASK_KEYS,
        json!({"title": "Call Ada", "due_date": "2026-05-01T10:00:00Z", "deal_id": id_of(&deal), "completed": false, "completed_at": null}),
    )
    .await;
}

/// Pages through `plural` with `limit` and answers the ids in the order they came and the pages' sizes.
async fn page_through(app: &TestApp, plural: &str, limit: usize) -> (Vec<String>, Vec<usize>) {
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/api/v1/{plural}?limit={limit}"),
            Some(c) => format!("/api/v1/{plural}?limit={limit}&cursor={c}"),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["items"].as_array().expect("items");
        sizes.push(items.len());
        ids.extend(items.iter().map(|r| id_of(r).to_owned()));
        match &page.body["next_cursor"] {
            Value::Null => return (ids, sizes),
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor is a string or null, got {other}"),
        }
        assert!(sizes.len() < 20, "the cursor does not advance");
    }
}

#[tokio::test]
async fn lists_are_newest_first_and_page_with_a_cursor() {
    let app = TestApp::spawn().await;
    let empty = app.get("/api/v1/contacts").await;
    assert_eq!(empty.body, json!({"items": [], "next_cursor": null}));
    let mut created = Vec::new();
    for n in 0..7 {
        created.push(id_of(&app.create("contacts", json!({"first_name": format!("C{n}")})).await).to_owned());
    }
    app.create("tasks", json!({"title": "not a contact"})).await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let all = app.get("/api/v1/contacts").await;
    let ids: Vec<&str> = all.body["items"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, newest_first, "the default page holds all seven, newest first");
    assert_eq!(all.body["next_cursor"], Value::Null);

    assert_eq!(page_through(&app, "contacts", 3).await, (newest_first.clone(), vec![3, 3, 1]));
    assert_eq!(page_through(&app, "contacts", 7).await, (newest_first.clone(), vec![7]));
    assert_eq!(page_through(&app, "contacts", 1).await.1, vec![1; 7]);

    // A record created while paging does not shift the pages after the first.
    let first = app.get("/api/v1/contacts?limit=3").await;
    app.create("contacts", json!({"first_name": "late"})).await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app.get(&format!("/api/v1/contacts?limit=3&cursor={cursor}")).await;
    let ids: Vec<&str> = second.body["items"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, newest_first[3..6]);
}

#[tokio::test]
async fn bad_limits_and_cursors_are_refused() {
    let app = TestApp::spawn().await;
    app.create("contacts", json!({"first_name": "A"})).await;
    for query in ["limit=0", "limit=1001", "limit=-1", "limit=ten", "limit=1.5"] {
        let answer = app.get(&format!("/api/v1/contacts?{query}")).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["limit"]);
    }
    for cursor in ["nonsense", "c_", "con_x", "c_!!", "c_zzzzzzzzzzzzzzzzzz"] {
        let answer = app.get(&format!("/api/v1/deals?cursor={cursor}")).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["cursor"]);
    }
    let most = app.get("/api/v1/contacts?limit=1000").await;
    assert_eq!(most.status, StatusCode::OK);
    assert_eq!(most.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn patch_changes_the_named_fields_and_null_clears() {
    let app = TestApp::spawn().await;
    let contact = app
        .create("contacts", json!({"first_name": "Ada", "city": "Austin", "tags": ["a"], "preferences": {"beds": 2}}))
        .await;
    let path = format!("/api/v1/contacts/{}", id_of(&contact));

    let changed = app.patch(&path, json!({"city": "Boston", "last_name": "Lovelace"})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let mut expected = contact.clone();
    expected["city"] = json!("Boston");
    expected["last_name"] = json!("Lovelace");
    expected["updated_at"] = changed.body["updated_at"].clone();
    assert_eq!(changed.body, expected, "only the named fields change");
    assert_utc_seconds(&changed.body["updated_at"]);
    assert_eq!(app.get(&path).await.body, changed.body);

    let cleared = app.patch(&path, json!({"city": null, "tags": null, "preferences": {"beds": 4}})).await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    assert_eq!(cleared.body["city"], Value::Null);
    assert_eq!(cleared.body["tags"], Value::Null);
    assert_eq!(cleared.body["preferences"], json!({"beds": 4}));
    assert_eq!(cleared.body["first_name"], "Ada");
    assert_eq!(app.get(&path).await.body, cleared.body);

    // Clearing the last of first_name, last_name, email and phone would leave a contact without a name.
    let nameless = app.patch(&path, json!({"first_name": null, "last_name": null})).await;
    assert_error(&nameless, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["first_name"]);
    assert_eq!(app.get(&path).await.body, cleared.body, "a refused PATCH changes nothing");

    let deal = app.create("deals", json!({"title": "Sale", "amount": 10})).await;
    let deal_path = format!("/api/v1/deals/{}", id_of(&deal));
    let untitled = app.patch(&deal_path, json!({"title": null})).await;
    assert_error(&untitled, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["title"]);
    let no_amount = app.patch(&deal_path, json!({"amount": null})).await;
    assert_eq!(no_amount.body["amount"], Value::Null);
    assert_eq!(no_amount.body["currency"], "USD");
}

#[tokio::test]
async fn a_patch_that_changes_nothing_writes_and_fires_nothing() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Ada", "status": "VIP", "tags": ["x"]})).await;
    let deal = app.create("deals", json!({"title": "Sale", "stage": "offer_made"})).await;
    let task = app.create("tasks", json!({"title": "Call", "completed": true})).await;
    let events_before = app.event_names().await;
    for (plural, record, patch) in [
        ("contacts", &contact, json!({})),
        ("contacts", &contact, json!({"first_name": " Ada ", "status": "vip", "tags": ["x"], "city": null})),
        ("deals", &deal, json!({"stage": "Offer_Made", "title": "Sale"})),
        ("tasks", &task, json!({"completed": true})),
    ] {
        let path = format!("/api/v1/{plural}/{}", id_of(record));
        let answer = app.patch(&path, patch.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{patch}: {}", answer.body);
        assert_eq!(&answer.body, record, "{patch} changes nothing, updated_at included");
        assert_eq!(&app.get(&path).await.body, record);
    }
    let completed = app.request(Method::POST, &format!("/api/v1/tasks/{}/complete", id_of(&task)), None).await;
    assert_eq!(completed.body, task, "completing a done task changes nothing");
    assert_eq!(app.event_names().await, events_before, "no-op updates fire nothing");
}

#[tokio::test]
async fn delete_answers_204_then_the_record_is_gone() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    let records = [
        ("contacts", app.create("contacts", json!({"email": "gone@example.com"})).await),
        ("leads", app.create("leads", json!({"contact_id": id_of(&contact)})).await),
        ("deals", app.create("deals", json!({"title": "Sale"})).await),
        ("tasks", app.create("tasks", json!({"title": "Call"})).await),
    ];
    for (plural, record) in &records {
        let path = format!("/api/v1/{plural}/{}", id_of(record));
        let deleted = app.delete(&path).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{plural}: {}", deleted.body);
        assert!(deleted.raw.is_empty(), "204 has no body");
        assert_error(&app.get(&path).await, StatusCode::NOT_FOUND, "not_found", &[]);
        assert_error(&app.delete(&path).await, StatusCode::NOT_FOUND, "not_found", &[]);
        assert_error(&app.patch(&path, json!({"notes": "x"})).await, StatusCode::NOT_FOUND, "not_found", &[]);
        let list = app.get(&format!("/api/v1/{plural}")).await;
        assert!(!list.body["items"].as_array().unwrap().iter().any(|r| r["id"] == record["id"]), "{plural}");
    }
    // Ids are never given out again, not even the newest one after its record is gone.
    let fresh = app.create("tasks", json!({"title": "After"})).await;
    assert!(records.iter().all(|(_, r)| r["id"] != fresh["id"]), "{}", fresh["id"]);
    // The email of a deleted contact is free again.
    app.create("contacts", json!({"email": "GONE@example.com"})).await;
    assert_eq!(app.get(&format!("/api/v1/contacts/{}", id_of(&contact))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn enquiries_cannot_be_changed_or_deleted() {
    let app = TestApp::spawn().await;
    let enquiry = app.create("enquiries", json!({"name": "Bo", "email": "bo@example.com"})).await;
    let path = format!("/api/v1/enquiries/{}", id_of(&enquiry));
    for (method, path, body) in [
        (Method::PATCH, path.as_str(), Some(json!({"name": "Other"}))),
        (Method::DELETE, path.as_str(), None),
        (Method::PUT, path.as_str(), Some(json!({"name": "Other"}))),
        (Method::POST, "/api/v1/enquiries/bulk", Some(json!({"delete": [id_of(&enquiry)]}))),
    ] {
        let answer = app.request(method.clone(), path, body).await;
        assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &[]);
    }
    assert_eq!(app.get(&path).await.body, enquiry, "the enquiry is untouched");
}

#[tokio::test]
async fn completing_a_task() {
    let app = TestApp::spawn().await;
    let task = app.create("tasks", json!({"title": "Call"})).await;
    let complete = format!("/api/v1/tasks/{}/complete", id_of(&task));
    let done = app.request(Method::POST, &complete, None).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["completed"], true);
    assert_utc_seconds(&done.body["completed_at"]);
    assert_eq!(done.body["title"], "Call");
    assert_eq!(app.get(&format!("/api/v1/tasks/{}", id_of(&task))).await.body, done.body);

    let again = app.request(Method::POST, &complete, None).await;
    assert_eq!(again.body["completed_at"], done.body["completed_at"], "completing twice keeps the first time");

    let undone = app.patch(&format!("/api/v1/tasks/{}", id_of(&task)), json!({"completed": false})).await;
    assert_eq!(undone.body["completed"], false);
    assert_eq!(undone.body["completed_at"], Value::Null);

    let missing = app.request(Method::POST, "/api/v1/tasks/tsk_nope/complete", None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", &[]);
    let deal = app.create("deals", json!({"title": "not a task"})).await;
    let wrong_kind = app.request(Method::POST, &format!("/api/v1/tasks/{}/complete", id_of(&deal)), None).await;
    assert_error(&wrong_kind, StatusCode::NOT_FOUND, "not_found", &[]);
}

#[tokio::test]
async fn a_deals_status_follows_its_stage() {
    let app = TestApp::spawn().await;
    for (stage, status) in [
        ("new", "open"),
        ("viewing_scheduled", "open"),
        ("offer_made", "open"),
        ("negotiation", "open"),
        ("closed_won", "won"),
        ("closed_lost", "lost"),
    ] {
        let deal = app.create("deals", json!({"title": "Sale", "stage": stage})).await;
        assert_eq!((deal["stage"].as_str(), deal["status"].as_str()), (Some(stage), Some(status)));
        assert_eq!(deal["stage_changed_at"], deal["created_at"], "{stage}");
    }
    let deal = app.create("deals", json!({"title": "Sale", "stage": "negotiation", "amount": 1})).await;
    let path = format!("/api/v1/deals/{}", id_of(&deal));
    for (stage, status) in [("closed_won", "won"), ("Closed_Lost", "lost"), ("offer_made", "open")] {
        let changed = app.patch(&path, json!({"stage": stage})).await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
        assert_eq!(changed.body["stage"], stage.to_lowercase());
        assert_eq!(changed.body["status"], status);
        assert_utc_seconds(&changed.body["stage_changed_at"]);
    }
    let before = app.get(&path).await.body;
    let amount = app.patch(&path, json!({"amount": 2, "probability": 50})).await;
    assert_eq!(amount.body["stage_changed_at"], before["stage_changed_at"], "only a stage change moves it");
    assert_eq!(amount.body["status"], "open");
    let bad = app.patch(&path, json!({"stage": "won"})).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["stage"]);
}

/// Sends `body` with `method` to `path` and expects a 422 naming exactly `fields`.
async fn check_refused(app: &TestApp, method: Method, path: &str, body: Value, fields: &[&str]) {
    let answer = app.request(method.clone(), path, Some(body.clone())).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", fields);
}

#[tokio::test]
async fn read_only_and_unknown_fields_are_refused() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    let deal = app.create("deals", json!({"title": "Sale"})).await;
    let task = app.create("tasks", json!({"title": "Call"})).await;
    let contact_path = format!("/api/v1/contacts/{}", id_of(&contact));
    let deal_path = format!("/api/v1/deals/{}", id_of(&deal));
    let task_path = format!("/api/v1/tasks/{}", id_of(&task));
    let cases: &[(Method, &str, Value, &[&str])] = &[
        (Method::POST, "/api/v1/deals", json!({"title": "S", "status": "won"}), &["status"]),
        (
            Method::POST,
            "/api/v1/deals",
            json!({"title": "S", "stage_changed_at": "2026-01-01T00:00:00Z"}),
            &["stage_changed_at"],
        ),
        (
            Method::POST,
            "/api/v1/tasks",
            json!({"title": "T", "completed_at": "2026-01-01T00:00:00Z"}),
            &["completed_at"],
        ),
        (Method::POST, "/api/v1/enquiries", json!({"name": "N", "contact_id": id_of(&contact)}), &["contact_id"]),
        (Method::POST, "/api/v1/contacts", json!({"first_name": "A", "id": "con_mine"}), &["id"]),
        (
            Method::POST,
            "/api/v1/contacts",
            json!({"first_name": "A", "created_at": "2026-01-01T00:00:00Z"}),
            &["created_at"],
        ),
        (Method::POST, "/api/v1/contacts", json!({"first_name": "A", "created_by": "usr_x"}), &["created_by"]),
        (
            Method::POST,
            "/api/v1/contacts",
            json!({"first_name": "A", "favourite_colour": "blue"}),
            &["favourite_colour"],
        ),
        (
            Method::POST,
            "/api/v1/contacts",
            json!({"first_name": "A", "preferences": {"garden": true}}),
            &["preferences.garden"],
        ),
        (Method::POST, "/api/v1/leads", json!({"contact_id": id_of(&contact), "score": 5}), &["score"]),
        (Method::PATCH, &deal_path, json!({"status": "won"}), &["status"]),
        (Method::PATCH, &deal_path, json!({"stage_changed_at": null}), &["stage_changed_at"]),
        (Method::PATCH, &task_path, json!({"completed_at": "2026-01-01T00:00:00Z"}), &["completed_at"]),
        (Method::PATCH, &contact_path, json!({"updated_at": "2026-01-01T00:00:00Z"}), &["updated_at"]),
        (Method::PATCH, &contact_path, json!({"id": "con_other", "nickname": "A"}), &["id", "nickname"]),
    ];
    let events_before = app.event_names().await;
    for (method, path, body, fields) in cases {
        check_refused(&app, method.clone(), path, body.clone(), fields).await;
    }
    assert_eq!(app.get(&contact_path).await.body, contact);
    assert_eq!(app.get(&deal_path).await.body, deal);
    assert_eq!(app.get(&task_path).await.body, task);
    assert_eq!(app.get("/api/v1/contacts").await.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.event_names().await, events_before);
}

#[tokio::test]
async fn references_must_name_existing_records() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    let deal = app.create("deals", json!({"title": "Sale"})).await;
    let gone = app.create("contacts", json!({"first_name": "Gone"})).await;
    assert_eq!(app.delete(&format!("/api/v1/contacts/{}", id_of(&gone))).await.status, StatusCode::NO_CONTENT);
    let lead = app.create("leads", json!({"contact_id": id_of(&contact)})).await;
    let lead_path = format!("/api/v1/leads/{}", id_of(&lead));
    let cases: &[(Method, &str, Value, &[&str])] = &[
        (Method::POST, "/api/v1/leads", json!({"lead_type": "Buyer"}), &["contact_id"]),
        (Method::POST, "/api/v1/leads", json!({"contact_id": "con_nobody"}), &["contact_id"]),
        (Method::POST, "/api/v1/leads", json!({"contact_id": id_of(&gone)}), &["contact_id"]),
        (Method::POST, "/api/v1/leads", json!({"contact_id": id_of(&deal)}), &["contact_id"]),
        (Method::POST, "/api/v1/leads", json!({"contact_id": 42}), &["contact_id"]),
        (Method::POST, "/api/v1/deals", json!({"title": "S", "contact_id": "con_nobody"}), &["contact_id"]),
        (Method::POST, "/api/v1/tasks", json!({"title": "T", "deal_id": id_of(&contact)}), &["deal_id"]),
        (
            Method::POST,
            "/api/v1/tasks",
            json!({"title": "T", "deal_id": "dea_nobody", "contact_id": "con_nobody"}),
            &["contact_id", "deal_id"],
        ),
        (Method::PATCH, &lead_path, json!({"contact_id": "con_nobody"}), &["contact_id"]),
        (Method::PATCH, &lead_path, json!({"contact_id": null}), &["contact_id"]),
    ];
    for (method, path, body, fields) in cases {
        check_refused(&app, method.clone(), path, body.clone(), fields).await;
    }
    assert_eq!(app.get(&lead_path).await.body, lead);
    let leads = app.get("/api/v1/leads").await;
    assert_eq!(leads.body["items"].as_array().unwrap().len(), 1, "no refused lead was stored");
    let task = app.create("tasks", json!({"title": "T", "contact_id": id_of(&contact), "deal_id": id_of(&deal)})).await;
    assert_eq!(task["deal_id"], deal["id"]);
}

/// Deleting a record leaves the records that refer to it (docs/API-NOTES.md); a PATCH that does not
/// name the reference must still work on them.
#[tokio::test]
async fn a_record_whose_reference_was_deleted_can_still_be_changed() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    let deal = app.create("deals", json!({"title": "Sale"})).await;
    let lead = app.create("leads", json!({"contact_id": id_of(&contact)})).await;
    let task = app.create("tasks", json!({"title": "Call", "deal_id": id_of(&deal)})).await;
    assert_eq!(app.delete(&format!("/api/v1/contacts/{}", id_of(&contact))).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("/api/v1/deals/{}", id_of(&deal))).await.status, StatusCode::NO_CONTENT);
    let lead_path = format!("/api/v1/leads/{}", id_of(&lead));
    assert_eq!(app.get(&lead_path).await.body, lead, "the lead stays, still naming its contact");
    let changed = app.patch(&lead_path, json!({"status": "Lost"})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["status"], "Lost");
    let done = app.request(Method::POST, &format!("/api/v1/tasks/{}/complete", id_of(&task)), None).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    // A reference the PATCH names must still exist.
    let renamed = app.patch(&lead_path, json!({"contact_id": "con_nobody"})).await;
    assert_error(&renamed, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["contact_id"]);
}

#[tokio::test]
async fn a_contacts_email_is_unique_whatever_its_case() {
    let app = TestApp::spawn().await;
    let ada = app.create("contacts", json!({"first_name": "Ada", "email": "ada@example.com"})).await;
    let bo = app.create("contacts", json!({"first_name": "Bo", "email": "bo@example.com"})).await;
    let events_before = app.event_names().await;
    for email in ["ada@example.com", "ADA@Example.COM", "  Ada@example.com "] {
        let answer = app.post("/api/v1/contacts", json!({"first_name": "Copy", "email": email})).await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict", &["email"]);
        let answer = app.patch(&format!("/api/v1/contacts/{}", id_of(&bo)), json!({"email": email})).await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict", &["email"]);
    }
    assert_eq!(app.get(&format!("/api/v1/contacts/{}", id_of(&bo))).await.body, bo);
    assert_eq!(app.get("/api/v1/contacts").await.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.event_names().await, events_before, "a refused change fires nothing");

    // A contact may change the case of its own email, and a freed email may be taken.
    let recased = app.patch(&format!("/api/v1/contacts/{}", id_of(&ada)), json!({"email": "Ada@Example.com"})).await;
    assert_eq!(recased.status, StatusCode::OK, "{}", recased.body);
    let freed = app.patch(&format!("/api/v1/contacts/{}", id_of(&ada)), json!({"email": null})).await;
    assert_eq!(freed.status, StatusCode::OK, "{}", freed.body);
    let taken = app.patch(&format!("/api/v1/contacts/{}", id_of(&bo)), json!({"email": "ADA@example.com"})).await;
    assert_eq!(taken.status, StatusCode::OK, "{}", taken.body);
}

#[tokio::test]
async fn a_contact_needs_a_name_an_email_or_a_phone() {
    let app = TestApp::spawn().await;
    for body in [json!({}), json!({"city": "Austin", "tags": ["x"]}), json!({"first_name": null, "email": null})] {
        check_refused(&app, Method::POST, "/api/v1/contacts", body, &["first_name"]).await;
    }
    check_refused(&app, Method::POST, "/api/v1/enquiries", json!({"message": "hi"}), &["email"]).await;
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    let path = format!("/api/v1/contacts/{}", id_of(&contact));
    check_refused(&app, Method::PATCH, &path, json!({"first_name": null}), &["first_name"]).await;
    assert_eq!(app.get(&path).await.body, contact);
    assert_eq!(app.get("/api/v1/contacts").await.body["items"].as_array().unwrap().len(), 1);
    for body in [json!({"last_name": "L"}), json!({"email": "e@example.com"}), json!({"phone": "1"})] {
        app.create("contacts", body).await;
    }
}

/// A blank value names nobody, as a blank deal or task title is no title.
#[tokio::test]
async fn a_blank_name_or_phone_is_no_name() {
    let app = TestApp::spawn().await;
    for body in [json!({"first_name": ""}), json!({"last_name": "   ", "city": "Austin"}), json!({"phone": " "})] {
        check_refused(&app, Method::POST, "/api/v1/contacts", body, &["first_name"]).await;
    }
    check_refused(&app, Method::POST, "/api/v1/enquiries", json!({"name": "  ", "message": "hi"}), &["email"]).await;
    let contact = app.create("contacts", json!({"first_name": "Ada"})).await;
    let path = format!("/api/v1/contacts/{}", id_of(&contact));
    check_refused(&app, Method::PATCH, &path, json!({"first_name": ""}), &["first_name"]).await;
    assert_eq!(app.get(&path).await.body, contact);
}

/// One record of each kind, as created, and the ids of two records deleted afterwards (the newest
/// of all among them, whose id is the one a careless sequence would hand out again).
async fn one_of_each(app: &TestApp) -> (Vec<(&'static str, Value)>, Vec<(&'static str, String)>) {
    let contact = app.create("contacts", json!({"first_name": "Ada", "email": "ada@example.com"})).await;
    let lead = app.create("leads", json!({"contact_id": id_of(&contact), "lead_type": "Seller"})).await;
    let enquiry = app.create("enquiries", json!({"name": "Bo Li", "email": "bo@example.com"})).await;
    let deal = app.create("deals", json!({"title": "Sale", "stage": "closed_won", "amount": 5})).await;
    let task = app.create("tasks", json!({"title": "Call", "completed": true})).await;
    let mut deleted = Vec::new();
    for (plural, body) in [("contacts", json!({"first_name": "Gone"})), ("tasks", json!({"title": "Gone"}))] {
        let record = app.create(plural, body).await;
        assert_eq!(app.delete(&format!("/api/v1/{plural}/{}", id_of(&record))).await.status, StatusCode::NO_CONTENT);
        deleted.push((plural, id_of(&record).to_owned()));
    }
    let records =
        vec![("contacts", contact), ("leads", lead), ("enquiries", enquiry), ("deals", deal), ("tasks", task)];
    (records, deleted)
}

/// Checks that every record reads back as it was, deleted ones stay deleted, the lists hold them,
/// the event log is unchanged, and new records get ids never given out before.
async fn check_survived(app: &TestApp, records: &[(&str, Value)], deleted: &[(&str, String)], events: &[String]) {
    for (plural, record) in records {
        let answer = app.get(&format!("/api/v1/{plural}/{}", id_of(record))).await;
        assert_eq!(answer.status, StatusCode::OK, "{plural}: {}", answer.body);
        assert_eq!(&answer.body, record, "{plural}");
    }
    for (plural, id) in deleted {
        assert_error(&app.get(&format!("/api/v1/{plural}/{id}")).await, StatusCode::NOT_FOUND, "not_found", &[]);
    }
    let contacts = app.get("/api/v1/contacts").await;
    assert_eq!(contacts.body["items"].as_array().unwrap().len(), 2, "Ada and the enquiry's contact");
    assert_eq!(app.event_names().await, events);
    // The unique email still holds, and new ids collide neither with live ids nor with deleted ones.
    let copy = app.post("/api/v1/contacts", json!({"email": "ADA@example.com"})).await;
    assert_error(&copy, StatusCode::CONFLICT, "conflict", &["email"]);
    let mut old: Vec<&str> = records.iter().map(|(_, r)| id_of(r)).collect();
    old.extend(deleted.iter().map(|(_, id)| id.as_str()));
    for (plural, body) in [("contacts", json!({"first_name": "New"})), ("tasks", json!({"title": "New"}))] {
        let fresh = app.create(plural, body).await;
        assert!(!old.contains(&id_of(&fresh)), "{plural}: the id {} was given out before", fresh["id"]);
    }
}

#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let app = TestApp::spawn().await;
    let (records, deleted) = one_of_each(&app).await;
    let events = app.event_names().await;
    let app = app.restart().await;
    check_survived(&app, &records, &deleted, &events).await;
}

#[tokio::test]
async fn data_survives_a_kill() {
    let app = TestApp::spawn().await;
    let (records, deleted) = one_of_each(&app).await;
    let events = app.event_names().await;
    let app = app.kill_and_restart().await;
    check_survived(&app, &records, &deleted, &events).await;
}

#[tokio::test]
async fn the_id_of_a_deleted_record_is_never_given_again_even_after_a_restart() {
    let app = TestApp::spawn().await;
    let mut seen = Vec::new();
    for name in ["A", "B"] {
        seen.push(app.create("contacts", json!({"first_name": name})).await["id"].as_str().unwrap().to_owned());
    }
    // The newest record goes, and the server restarts, crashing once and stopping cleanly once.
    let deleted = app.delete(&format!("/api/v1/contacts/{}", seen[1])).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let app = app.kill_and_restart().await;
    let later = app.create("contacts", json!({"first_name": "C"})).await["id"].as_str().unwrap().to_owned();
    assert!(!seen.contains(&later), "{later} was given before: {seen:?}");
    seen.push(later.clone());
    let deleted = app.delete(&format!("/api/v1/contacts/{later}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let app = app.restart().await;
    let last = app.create("contacts", json!({"first_name": "D"})).await["id"].as_str().unwrap().to_owned();
    assert!(!seen.contains(&last), "{last} was given before: {seen:?}");
}
