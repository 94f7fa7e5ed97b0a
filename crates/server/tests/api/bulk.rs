//! Bulk operations: the ids in the order given, one event per row exactly as single operations fire
//! them, and all or nothing.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::errors::assert_error;
use crate::helpers::{Answer, TestApp};

const KINDS: [&str; 5] = ["contacts", "leads", "enquiries", "deals", "tasks"];

async fn bulk(app: &TestApp, plural: &str, body: Value) -> Answer {
    app.post(&format!("/api/v1/{plural}/bulk"), body).await
}

/// The ids a successful bulk request answered.
fn ids_of(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let ids = answer.body["ids"].as_array().unwrap_or_else(|| panic!("{{\"ids\": [...]}}, got {}", answer.body));
    ids.iter().map(|id| id.as_str().expect("an id").to_owned()).collect()
}

/// Everything a client can see: every list and the event log.
async fn snapshot(app: &TestApp) -> Vec<Value> {
    let mut all = Vec::new();
    for plural in KINDS {
        all.push(app.get(&format!("/api/v1/{plural}?limit=1000")).await.body);
    }
    all.push(app.get("/api/v1/events?limit=1000").await.body);
    all
}

/// The events logged after the first `seen`, oldest first, as (name, data).
async fn events_after(app: &TestApp, seen: usize) -> Vec<(String, Value)> {
    let log = app.get("/api/v1/events?limit=1000").await;
    let mut items = log.body["items"].as_array().unwrap().clone();
    items.reverse();
    items[seen..].iter().map(|e| (e["event"].as_str().unwrap().to_owned(), e["body"]["data"].clone())).collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// Sends a bulk request that must be refused with `status` naming exactly `fields`, and checks that
/// it changed nothing at all: every list and the event log are as they were.
async fn check_refused(app: &TestApp, plural: &str, body: Value, status: StatusCode, fields: &[&str]) {
    let before = snapshot(app).await;
    let answer = bulk(app, plural, body).await;
    let code = if status == StatusCode::CONFLICT { "conflict" } else { "validation_failed" };
    assert_error(&answer, status, code, fields);
    assert!(snapshot(app).await == before, "a refused bulk request changed something");
}

#[tokio::test]
async fn bulk_create_answers_ids_in_order_with_one_event_per_row() {
    let app = TestApp::spawn().await;
    let rows = json!([{"first_name": "A0"}, {"first_name": "A1", "email": "a1@example.com"}, {"phone": "2"}]);
    let ids = ids_of(&bulk(&app, "contacts", json!({"create": rows})).await);
    assert_eq!(ids.len(), 3);
    let mut records = Vec::new();
    for (id, row) in ids.iter().zip(rows.as_array().unwrap()) {
        let record = app.get(&format!("/api/v1/contacts/{id}")).await.body;
        for (name, value) in row.as_object().unwrap() {
            assert_eq!(record[name], *value, "{id} holds its row");
        }
        records.push(record);
    }
    let events = events_after(&app, 0).await;
    assert_eq!(names(&events), ["contact.created"; 3]);
    let data: Vec<Value> = events.into_iter().map(|(_, data)| data).collect();
    assert_eq!(data, records, "each event carries its row's contact, in row order");
    let listed = app.get("/api/v1/contacts").await.body["items"].clone();
    assert_eq!(listed, Value::Array(records.into_iter().rev().collect()), "newest first");

    let leads = ids_of(&bulk(&app, "leads", json!({"create": [{"contact_id": ids[2]}, {"contact_id": ids[0]}]})).await);
    for (lead, contact) in leads.iter().zip([&ids[2], &ids[0]]) {
        assert_eq!(app.get(&format!("/api/v1/leads/{lead}")).await.body["contact_id"], contact.as_str());
    }
    let deals = json!({"create": [{"title": "D0"}, {"title": "D1", "stage": "closed_won"}, {"title": "D2", "stage": "closed_lost"}]});
    let deals = ids_of(&bulk(&app, "deals", deals).await);
    let tasks =
        ids_of(&bulk(&app, "tasks", json!({"create": [{"title": "T0"}, {"title": "T1", "completed": true}]})).await);
    assert_eq!(tasks.len(), 2);
    let events = events_after(&app, 3).await;
    assert_eq!(
        names(&events),
        ["lead.created", "lead.created", "deal.created", "deal.created", "deal.won", "deal.created", "deal.lost"],
        "exactly what single creates fire, row by row"
    );
    let event_ids: Vec<&str> = events.iter().map(|(_, data)| data["id"].as_str().unwrap()).collect();
    assert_eq!(event_ids, [&leads[0], &leads[1], &deals[0], &deals[1], &deals[1], &deals[2], &deals[2]]);
    let empty = bulk(&app, "tasks", json!({"create": []})).await;
    assert_eq!(ids_of(&empty), Vec::<String>::new());
}

#[tokio::test]
async fn bulk_update_changes_each_row_and_fires_as_single_updates_would() {
    let app = TestApp::spawn().await;
    let contacts = ids_of(
        &bulk(&app, "contacts", json!({"create": [{"first_name": "A"}, {"first_name": "B"}, {"first_name": "C"}]}))
            .await,
    );
    let deals = ids_of(&bulk(&app, "deals", json!({"create": [{"title": "D0"}, {"title": "D1"}]})).await);
    let tasks = ids_of(&bulk(&app, "tasks", json!({"create": [{"title": "T0"}, {"title": "T1"}]})).await);
    let seen = events_after(&app, 0).await.len();

    let update = json!({"update": [
        {"id": contacts[2], "city": "Austin"},
        {"id": contacts[0], "first_name": "A"},
        {"id": contacts[1], "first_name": "Bee", "tags": ["x"]},
    ]});
    let ids = ids_of(&bulk(&app, "contacts", update).await);
    assert_eq!(ids, [contacts[2].as_str(), &contacts[0], &contacts[1]], "in the order given");
    let events = events_after(&app, seen).await;
    assert_eq!(names(&events), ["contact.updated", "contact.updated"], "the row that changes nothing fires nothing");
    assert_eq!(events[0].1, app.get(&format!("/api/v1/contacts/{}", contacts[2])).await.body);
    assert_eq!(events[1].1, app.get(&format!("/api/v1/contacts/{}", contacts[1])).await.body);
    assert_eq!(events[1].1["first_name"], "Bee");

    let update = json!({"update": [{"id": deals[0], "stage": "closed_won"}, {"id": deals[1], "amount": 5}]});
    ids_of(&bulk(&app, "deals", update).await);
    let update = json!({"update": [{"id": tasks[1], "completed": true}, {"id": tasks[0], "notes": "n"}]});
    ids_of(&bulk(&app, "tasks", update).await);
    let events = events_after(&app, seen + 2).await;
    assert_eq!(names(&events), ["deal.stage_changed", "deal.won", "task.completed"]);
    assert_eq!(events[0].1["previous_stage"], "new");
    assert_eq!(events[2].1["id"], tasks[1].as_str());
    assert_eq!(app.get(&format!("/api/v1/deals/{}", deals[1])).await.body["amount"], 5);
}

#[tokio::test]
async fn bulk_delete_removes_each_row_and_fires_with_the_record_as_it_was() {
    let app = TestApp::spawn().await;
    let contacts = ids_of(
        &bulk(&app, "contacts", json!({"create": [{"first_name": "A"}, {"first_name": "B"}, {"first_name": "C"}]}))
            .await,
    );
    let deals = ids_of(&bulk(&app, "deals", json!({"create": [{"title": "D0"}]})).await);
    let mut before = Vec::new();
    for id in [&contacts[1], &contacts[0]] {
        before.push(app.get(&format!("/api/v1/contacts/{id}")).await.body);
    }
    let seen = events_after(&app, 0).await.len();
    let ids = ids_of(&bulk(&app, "contacts", json!({"delete": [contacts[1], contacts[0]]})).await);
    assert_eq!(ids, [contacts[1].as_str(), &contacts[0]]);
    let events = events_after(&app, seen).await;
    assert_eq!(names(&events), ["contact.deleted", "contact.deleted"]);
    assert_eq!(events.into_iter().map(|(_, data)| data).collect::<Vec<_>>(), before);
    for id in [&contacts[1], &contacts[0]] {
        assert_eq!(app.get(&format!("/api/v1/contacts/{id}")).await.status, StatusCode::NOT_FOUND);
    }
    let left = app.get("/api/v1/contacts").await.body["items"].clone();
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], contacts[2].as_str());

    assert_eq!(ids_of(&bulk(&app, "deals", json!({"delete": [deals[0]]})).await), deals);
    assert_eq!(app.get("/api/v1/deals").await.body["items"], json!([]));
    assert_eq!(events_after(&app, seen + 2).await.len(), 0, "there is no deal.deleted event");
}

#[tokio::test]
async fn one_invalid_row_and_nothing_is_applied() {
    let app = TestApp::spawn().await;
    let contacts = ids_of(&bulk(&app, "contacts", json!({"create": [{"first_name": "A"}, {"first_name": "B"}]})).await);
    let create = json!({"create": [
        {"first_name": "ok"},
        {"first_name": "x", "email": "not-an-email"},
        {"first_name": "ok too"},
        {"city": "Austin"},
        {"first_name": "y", "preferences": {"beds": "many"}},
        "not an object",
    ]});
    let fields = ["create[1].email", "create[3].first_name", "create[4].preferences.beds", "create[5].body"];
    check_refused(&app, "contacts", create, StatusCode::UNPROCESSABLE_ENTITY, &fields).await;
    let update = json!({"update": [{"id": contacts[0], "city": "Austin"}, {"id": contacts[1], "status": "Gold"}]});
    check_refused(&app, "contacts", update, StatusCode::UNPROCESSABLE_ENTITY, &["update[1].status"]).await;
    let update = json!({"update": [{"id": contacts[0], "first_name": null}]});
    check_refused(&app, "contacts", update, StatusCode::UNPROCESSABLE_ENTITY, &["update[0].first_name"]).await;
    let delete = json!({"delete": [contacts[0], "con_nobody", contacts[1]]});
    check_refused(&app, "contacts", delete, StatusCode::UNPROCESSABLE_ENTITY, &["delete[1].id"]).await;
    let leads = json!({"create": [{"contact_id": contacts[0]}, {"contact_id": "con_nobody"}]});
    check_refused(&app, "leads", leads, StatusCode::UNPROCESSABLE_ENTITY, &["create[1].contact_id"]).await;
    let deals = json!({"create": [{"title": "D", "stage": "closed_won"}, {"title": "E", "probability": 200}]});
    check_refused(&app, "deals", deals, StatusCode::UNPROCESSABLE_ENTITY, &["create[1].probability"]).await;
    // A bad row and a duplicate email together: the bad row is what the client must fix first.
    let both = json!({"create": [{"email": "d@example.com"}, {"email": "D@example.com"}, {"email": "bad"}]});
    check_refused(&app, "contacts", both, StatusCode::UNPROCESSABLE_ENTITY, &["create[2].email"]).await;
}

#[tokio::test]
async fn every_bad_row_is_named_at_once() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "A"})).await;
    let deal = app.create("deals", json!({"title": "D"})).await;
    // A missing reference and an invalid value are both invalid rows: the client fixes them in one go.
    let leads = json!({"create": [
        {"contact_id": contact["id"]},
        {"contact_id": "con_nobody"},
        {"contact_id": contact["id"], "lead_type": "Renter"},
    ]});
    let fields = ["create[1].contact_id", "create[2].lead_type"];
    check_refused(&app, "leads", leads, StatusCode::UNPROCESSABLE_ENTITY, &fields).await;
    let tasks = json!({"create": [{"title": "T", "deal_id": "dea_nobody"}, {"title": ""}, {"title": "T", "deal_id": deal["id"]}]});
    let fields = ["create[0].deal_id", "create[1].title"];
    check_refused(&app, "tasks", tasks, StatusCode::UNPROCESSABLE_ENTITY, &fields).await;
}

#[tokio::test]
async fn a_large_bulk_is_all_or_nothing_and_names_bad_rows_far_apart() {
    let app = TestApp::spawn().await;
    // Large requests are prepared in runs that the writer takes as they come: bad rows in the first
    // and in a late run are both named, and the good rows of the runs between are not kept.
    let mut rows: Vec<Value> =
        (0..2_500).map(|n| json!({"first_name": "Row", "email": format!("row-{n}@example.com")})).collect();
    rows[3] = json!({"first_name": "Row", "email": "not an email"});
    rows[2_222] = json!({"first_name": "Row", "preferences": {"beds": "many"}});
    let fields = ["create[3].email", "create[2222].preferences.beds"];
    check_refused(&app, "contacts", json!({"create": rows.clone()}), StatusCode::UNPROCESSABLE_ENTITY, &fields).await;
    // A duplicate email found by the writer late in the request undoes the rows written before it.
    rows[3] = json!({"first_name": "Row", "email": "row-3@example.com"});
    rows[2_222] = json!({"first_name": "Row", "email": "ROW-7@example.com"});
    check_refused(&app, "contacts", json!({"create": rows.clone()}), StatusCode::CONFLICT, &["create[2222].email"])
        .await;
    rows[2_222] = json!({"first_name": "Row"});
    let ids = ids_of(&bulk(&app, "contacts", json!({"create": rows})).await);
    assert_eq!(ids.len(), 2_500);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 2_500, "every row has its own id");
}

#[tokio::test]
async fn a_duplicate_email_within_a_bulk_is_a_conflict() {
    let app = TestApp::spawn().await;
    let existing = app.create("contacts", json!({"email": "taken@example.com"})).await;
    let create = json!({"create": [{"email": "new@example.com"}, {"first_name": "x"}, {"email": " NEW@Example.com"}]});
    check_refused(&app, "contacts", create, StatusCode::CONFLICT, &["create[2].email"]).await;
    let create = json!({"create": [{"email": "other@example.com"}, {"email": "Taken@example.com"}]});
    check_refused(&app, "contacts", create, StatusCode::CONFLICT, &["create[1].email"]).await;
    let ids = ids_of(
        &bulk(&app, "contacts", json!({"create": [{"email": "one@example.com"}, {"email": "two@example.com"}]})).await,
    );
    let update =
        json!({"update": [{"id": ids[0], "email": "three@example.com"}, {"id": ids[1], "email": "THREE@example.com"}]});
    check_refused(&app, "contacts", update, StatusCode::CONFLICT, &["update[1].email"]).await;
    let update = json!({"update": [{"id": ids[0], "email": "TAKEN@example.com"}]});
    check_refused(&app, "contacts", update, StatusCode::CONFLICT, &["update[0].email"]).await;
    // Swapping emails through a free one in the same request is fine: rows apply in order.
    let swap = json!({"update": [
        {"id": ids[0], "email": "tmp@example.com"},
        {"id": ids[1], "email": "one@example.com"},
        {"id": ids[0], "email": "two@example.com"},
    ]});
    ids_of(&bulk(&app, "contacts", swap).await);
    assert_eq!(app.get(&format!("/api/v1/contacts/{}", ids[0])).await.body["email"], "two@example.com");
    assert_eq!(app.get(&format!("/api/v1/contacts/{}", existing["id"].as_str().unwrap())).await.body, existing);
}

#[tokio::test]
async fn every_conflicting_row_is_named_however_the_rows_are_grouped() {
    let app = TestApp::spawn().await;
    app.create("contacts", json!({"email": "taken@example.com"})).await;
    // The writer inserts rows in groups: two conflicts side by side, a row that conflicts with one
    // written just before it, and conflicts far apart are each named, and no other row is.
    let mut rows: Vec<Value> = (0..1_200).map(|n| json!({"email": format!("bulk-{n}@example.com")})).collect();
    rows[40] = json!({"email": "TAKEN@example.com"});
    rows[41] = json!({"email": "bulk-0@example.com"});
    rows[43] = json!({"email": "bulk-42@example.com"});
    rows[1_199] = json!({"email": " taken@example.com"});
    let fields = ["create[40].email", "create[41].email", "create[43].email", "create[1199].email"];
    check_refused(&app, "contacts", json!({"create": rows}), StatusCode::CONFLICT, &fields).await;
}

#[tokio::test]
async fn a_refused_bulk_sharing_a_commit_with_others_undoes_only_its_own_rows() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    app.create("contacts", json!({"email": "taken@example.com"})).await;
    // Requests sent at once share the writer's commits, as the first job of one or after others.
    // Each refused bulk wrote its first row before its second conflicted; that row must go, and
    // every other request's work must stay.
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..40 {
        let app = app.clone();
        requests.spawn(async move {
            let body = if n % 2 == 0 {
                json!({"create": [{"email": format!("refused-{n}@example.com")}, {"email": "taken@example.com"}]})
            } else {
                json!({"create": [{"email": format!("kept-{n}@example.com")}]})
            };
            (n, bulk(&app, "contacts", body).await)
        });
    }
    while let Some(answer) = requests.join_next().await {
        let (n, answer) = answer.expect("the request task");
        if n % 2 == 0 {
            assert_error(&answer, StatusCode::CONFLICT, "conflict", &["create[1].email"]);
        } else {
            assert_eq!(ids_of(&answer).len(), 1);
        }
    }
    let contacts = app.get("/api/v1/contacts?limit=1000").await.body;
    let mut emails: Vec<&str> =
        contacts["items"].as_array().unwrap().iter().map(|c| c["email"].as_str().unwrap()).collect();
    emails.sort();
    let mut expected: Vec<String> = (1..40).step_by(2).map(|n| format!("kept-{n}@example.com")).collect();
    expected.push("taken@example.com".into());
    expected.sort();
    assert_eq!(emails, expected);
    assert_eq!(events_after(&app, 0).await.len(), 21, "one contact.created per contact kept");
}

#[tokio::test]
async fn more_than_10000_rows_are_refused() {
    let app = TestApp::spawn().await;
    let rows = |row: Value| Value::Array(vec![row; 10_001]);
    check_refused(
        &app,
        "contacts",
        json!({"create": rows(json!({"first_name": "A"}))}),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["create"],
    )
    .await;
    check_refused(
        &app,
        "tasks",
        json!({"update": rows(json!({"id": "tsk_x", "title": "T"}))}),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["update"],
    )
    .await;
    check_refused(
        &app,
        "deals",
        json!({"delete": rows(json!("dea_x"))}),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["delete"],
    )
    .await;
    // Exactly 10,000 rows pass the count and are judged row by row.
    let answer = bulk(&app, "contacts", json!({"update": vec![json!({"first_name": "no id"}); 10_000]})).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    let fields = answer.body["error"]["fields"].as_object().unwrap();
    assert_eq!(fields.len(), 10_000);
    assert!(fields.contains_key("update[0].id") && fields.contains_key("update[9999].id"));
}

#[tokio::test]
async fn a_bulk_body_has_exactly_one_of_create_update_delete() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "A"})).await;
    let id = contact["id"].as_str().unwrap();
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for (body, fields) in [
        (json!({}), &["body"][..]),
        (json!([]), &["body"]),
        (json!([{"first_name": "A"}]), &["body"]),
        (json!({"create": [{"first_name": "A"}], "delete": [id]}), &["body"]),
        (json!({"create": [], "update": []}), &["body"]),
        (json!({"upsert": [{"first_name": "A"}]}), &["upsert"]),
        (json!({"create": {"first_name": "A"}}), &["create"]),
        (json!({"delete": id}), &["delete"]),
        (json!({"update": [{"first_name": "B"}]}), &["update[0].id"]),
        (json!({"update": [{"id": 7, "first_name": "B"}]}), &["update[0].id"]),
        (json!({"update": ["just text"]}), &["update[0].id"]),
        (json!({"update": [{"id": "con_nobody", "first_name": "B"}]}), &["update[0].id"]),
        (json!({"update": [{"id": id, "first_name": "B"}, {"id": "con_nobody"}]}), &["update[1].id"]),
        (json!({"delete": ["con_nobody"]}), &["delete[0].id"]),
        (json!({"delete": [id, id]}), &["delete[1].id"]),
        (json!({"delete": [{"id": id}, 5]}), &["delete[0]", "delete[1]"]),
    ] {
        check_refused(&app, "contacts", body, unprocessable, fields).await;
    }
    let deal = app.create("deals", json!({"title": "Sale"})).await;
    let other_kind = json!({"delete": [deal["id"]]});
    check_refused(&app, "contacts", other_kind, unprocessable, &["delete[0].id"]).await;
    assert_eq!(app.get(&format!("/api/v1/contacts/{id}")).await.body, contact);
}
