//! The web app's contact reads against a real database file: search by name, email and phone
//! (however written), filters, an agent's own contacts only, the search following creates (alone,
//! in bulk, for an enquiry), updates and deletes (alone and in bulk); a contact's records; and a
//! record's webhook timeline per endpoint.

mod support;

use bytes::Bytes;
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight};
use estate_crm_domain::{EventName, RecordKind};
use estate_crm_store::{
    Actor, BulkOp, ContactQuery, DeliveryStatus, EndpointSource, EndpointSpec, NextStep, Outcome, PageRequest, Role,
    Store,
};
use serde_json::json;
use support::stores::TestStore;

fn admin() -> Actor {
    Actor { user_id: "usr_admin".into(), role: Role::Admin }
}

fn agent(id: &str) -> Actor {
    Actor { user_id: id.into(), role: Role::Agent }
}

fn page(limit: usize) -> PageRequest {
    PageRequest { limit, cursor: None }
}

fn search(text: &str) -> ContactQuery {
    ContactQuery { search: Some(text.into()), ..Default::default() }
}

async fn names(store: &dyn Store, actor: &Actor, query: ContactQuery) -> Vec<String> {
    let found = store.search_contacts(actor, query, page(100)).await.unwrap();
    found.items.iter().map(|r| r.get_str("first_name").unwrap_or("").to_owned()).collect()
}

async fn seed(store: &dyn Store) {
    let rows = [
        json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+44 (20) 7946-0001",
               "status": "VIP", "tags": ["Buyer", "cash"], "lifecycle_stage": "Customer"}),
        json!({"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example", "mobile": "555 123 4567",
               "status": "Active", "tags": ["seller"], "assigned_agent_id": "usr_agent"}),
        json!({"first_name": "Alan", "last_name": "Turing", "email": "alan@example.org", "status": "Active",
               "lifecycle_stage": "lead"}),
    ];
    for row in rows {
        store.create_record(&admin(), RecordKind::Contact, row).await.unwrap();
    }
    store
        .create_record(&agent("usr_agent"), RecordKind::Contact, json!({"first_name": "Own", "email": "own@x.example"}))
        .await
        .unwrap();
}

async fn search_finds_names_emails_and_phones_however_they_were_written(store: TestStore) {
    seed(&*store).await;
    let admin = admin();
    assert_eq!(names(&*store, &admin, search("love")).await, ["Ada"]);
    assert_eq!(names(&*store, &admin, search("ADA lovelace")).await, ["Ada"], "every word, any case");
    assert_eq!(names(&*store, &admin, search("navy.example")).await, ["Grace"]);
    assert_eq!(names(&*store, &admin, search("5551234567")).await, ["Grace"], "a phone's digits alone");
    assert_eq!(names(&*store, &admin, search("7946-0001")).await, ["Ada"], "a phone as written");
    assert_eq!(names(&*store, &admin, search("al")).await, ["Alan"], "a short word is looked for too");
    assert_eq!(names(&*store, &admin, search("@example")).await, ["Alan", "Ada"], "newest first");
    assert!(names(&*store, &admin, search("nobody")).await.is_empty());
    assert_eq!(names(&*store, &admin, search("50%_")).await, Vec::<String>::new(), "wildcards are plain text");
}

async fn filters_combine_and_an_agent_sees_only_their_own(store: TestStore) {
    seed(&*store).await;
    let admin = admin();
    let status = |s: &str| ContactQuery { status: Some(s.into()), ..Default::default() };
    // A new contact's status is Active unless it says otherwise.
    assert_eq!(names(&*store, &admin, status("Active")).await, ["Own", "Alan", "Grace"]);
    let tag = ContactQuery { tag: Some("buyer".into()), ..Default::default() };
    assert_eq!(names(&*store, &admin, tag).await, ["Ada"], "a tag in any case");
    let stage = ContactQuery { lifecycle_stage: Some("LEAD".into()), ..Default::default() };
    assert_eq!(names(&*store, &admin, stage).await, ["Alan"]);
    let assigned = ContactQuery { agent: Some("usr_agent".into()), ..Default::default() };
    assert_eq!(names(&*store, &admin, assigned).await, ["Grace"]);
    let both = ContactQuery { search: Some("an".into()), status: Some("Active".into()), ..Default::default() };
    assert_eq!(names(&*store, &admin, both).await, ["Alan"]);

    let agent = agent("usr_agent");
    assert_eq!(names(&*store, &agent, ContactQuery::default()).await, ["Own", "Grace"], "created or assigned");
    assert_eq!(names(&*store, &agent, search("example")).await, ["Own", "Grace"]);
    assert!(names(&*store, &agent, search("lovelace")).await.is_empty(), "not theirs, not found");
}

async fn the_index_follows_updates_deletes_and_bulk_creates_and_pages_by_cursor(store: TestStore) {
    seed(&*store).await;
    let admin = admin();
    let ada = store.search_contacts(&admin, search("lovelace"), page(1)).await.unwrap().items.remove(0);
    store.update_record(&admin, RecordKind::Contact, &ada.id, json!({"last_name": "Byron"})).await.unwrap();
    assert!(names(&*store, &admin, search("lovelace")).await.is_empty());
    assert_eq!(names(&*store, &admin, search("byron")).await, ["Ada"]);
    store.delete_record(&admin, RecordKind::Contact, &ada.id).await.unwrap();
    assert!(names(&*store, &admin, search("byron")).await.is_empty());

    let rows =
        (0..30).map(|n| json!({"first_name": format!("Bulk{n}"), "email": format!("b{n}@bulk.example")})).collect();
    store.bulk(&admin, RecordKind::Contact, BulkOp::Create(rows)).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let found =
            store.search_contacts(&admin, search("bulk.example"), PageRequest { limit: 7, cursor }).await.unwrap();
        seen.extend(found.items.iter().map(|r| r.get_str("first_name").unwrap().to_owned()));
        match found.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30, "every page, no repeats: {seen:?}");
    assert_eq!(seen.first().map(String::as_str), Some("Bulk29"));
}

async fn a_change_to_other_fields_keeps_a_contact_found_and_a_new_phone_is_found_by_its_digits(store: TestStore) {
    seed(&*store).await;
    let admin = admin();
    let ada = store.search_contacts(&admin, search("lovelace"), page(1)).await.unwrap().items.remove(0);
    store.update_record(&admin, RecordKind::Contact, &ada.id, json!({"status": "Inactive"})).await.unwrap();
    assert_eq!(names(&*store, &admin, search("lovelace")).await, ["Ada"], "a status change leaves her found");
    store.update_record(&admin, RecordKind::Contact, &ada.id, json!({"phone": "+1 (212) 555-0188"})).await.unwrap();
    assert_eq!(names(&*store, &admin, search("12125550188")).await, ["Ada"], "the new phone's digits");
    assert!(names(&*store, &admin, search("2079460001")).await.is_empty(), "the old phone's digits are gone");
    assert_eq!(names(&*store, &admin, search("ada LOVELACE")).await, ["Ada"], "the rest of her text stays");
}

async fn contacts_made_for_enquiries_or_changed_in_bulk_are_found_as_they_now_are(store: TestStore) {
    let admin = admin();
    let enquiry = json!({"name": "Ann Lee", "email": "ann@lee.example", "phone": "020 7946 0999",
                         "message": "Is it still for sale?"});
    store.create_record(&admin, RecordKind::Enquiry, enquiry).await.unwrap();
    assert_eq!(names(&*store, &admin, search("lee.example")).await, ["Ann"], "the contact the enquiry made");
    assert_eq!(names(&*store, &admin, search("02079460999")).await, ["Ann"]);

    let rows =
        vec![json!({"first_name": "Cy", "last_name": "Young"}), json!({"first_name": "Di", "last_name": "Young"})];
    let ids = store.bulk(&admin, RecordKind::Contact, BulkOp::Create(rows)).await.unwrap();
    assert_eq!(names(&*store, &admin, search("young")).await, ["Di", "Cy"]);
    let renamed = vec![json!({"id": ids[0], "last_name": "Old"}), json!({"id": ids[1], "status": "VIP"})];
    store.bulk(&admin, RecordKind::Contact, BulkOp::Update(renamed)).await.unwrap();
    assert_eq!(names(&*store, &admin, search("young")).await, ["Di"], "Cy's old name no longer finds him");
    assert_eq!(names(&*store, &admin, search("cy old")).await, ["Cy"]);
    store.bulk(&admin, RecordKind::Contact, BulkOp::Delete(ids.clone())).await.unwrap();
    assert!(names(&*store, &admin, search("young")).await.is_empty());
    assert!(names(&*store, &admin, search("cy")).await.is_empty(), "deleted in bulk, not found");
    assert_eq!(names(&*store, &admin, search("ann")).await, ["Ann"], "the others stay");
}

async fn a_contact_lists_its_records_of_each_kind(store: TestStore) {
    let admin = admin();
    let contact = store.create_record(&admin, RecordKind::Contact, json!({"first_name": "Ada"})).await.unwrap();
    let other = store.create_record(&admin, RecordKind::Contact, json!({"first_name": "Bob"})).await.unwrap();
    let lead = json!({"contact_id": contact.id, "lead_type": "Buyer"});
    let lead = store.create_record(&admin, RecordKind::Lead, lead).await.unwrap();
    store.create_record(&admin, RecordKind::Lead, json!({"contact_id": other.id, "lead_type": "Buyer"})).await.unwrap();
    let deal = store
        .create_record(&admin, RecordKind::Deal, json!({"title": "Flat", "contact_id": contact.id}))
        .await
        .unwrap();
    let leads = store.records_of_contact(&admin, RecordKind::Lead, &contact.id, 10).await.unwrap();
    assert_eq!(leads.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [lead.id.as_str()]);
    let deals = store.records_of_contact(&admin, RecordKind::Deal, &contact.id, 10).await.unwrap();
    assert_eq!(deals.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [deal.id.as_str()]);
    assert!(store.records_of_contact(&agent("usr_x"), RecordKind::Lead, &contact.id, 10).await.unwrap().is_empty());
}

fn endpoint(events: EventFilter) -> EndpointSpec {
    EndpointSpec {
        url: "http://127.0.0.1:9/hook".into(),
        events,
        secret: None,
        active: true,
        description: None,
        retry_schedule: None,
        max_in_flight: MaxInFlight::new(16).unwrap(),
        source: EndpointSource::Api,
        format: BodyFormat::Json,
    }
}

async fn a_timeline_shows_each_event_owed_then_delivered_per_endpoint(store: TestStore) {
    let admin = admin();
    let all = store.create_endpoint(endpoint(EventFilter::All)).await.unwrap();
    let deals_only = store.create_endpoint(endpoint(EventFilter::Only(vec![EventName::DealWon]))).await.unwrap();
    let contact = store.create_record(&admin, RecordKind::Contact, json!({"first_name": "Ada"})).await.unwrap();
    store.update_record(&admin, RecordKind::Contact, &contact.id, json!({"status": "VIP"})).await.unwrap();

    let timeline = store.record_timeline(&admin, RecordKind::Contact, &contact.id, 10).await.unwrap();
    let names: Vec<_> = timeline.iter().map(|e| e.name).collect();
    assert_eq!(names, [EventName::ContactUpdated, EventName::ContactCreated], "newest first");
    for event in &timeline {
        assert_eq!(event.deliveries.len(), 1, "only the endpoint that takes contact events: {event:?}");
        assert_eq!(event.deliveries[0].endpoint_id, all.id);
        assert_eq!(event.deliveries[0].status, DeliveryStatus::Pending, "owed, not tried yet");
        assert_eq!(event.deliveries[0].attempts, 0);
    }
    assert!(timeline.iter().all(|e| e.deliveries.iter().all(|d| d.endpoint_id != deals_only.id)));

    let due = store.due_deliveries(&all.id, 0, i64::MAX, 10).await.unwrap();
    let created = due.iter().find(|d| d.event == EventName::ContactCreated).unwrap();
    assert_eq!(created.id, timeline[1].deliveries[0].id, "the timeline names the delivery the receiver gets");
    store
        .record_outcomes(vec![Outcome {
            delivery_seq: created.seq,
            endpoint_id: Some(all.id.clone()),
            attempt: 1,
            started_at: 1_000,
            duration_ms: 3,
            status_code: Some(204),
            error: None,
            response: Bytes::new(),
            next: NextStep::Succeeded,
        }])
        .await
        .unwrap();
    let timeline = store.record_timeline(&admin, RecordKind::Contact, &contact.id, 10).await.unwrap();
    let delivered = &timeline[1].deliveries[0];
    assert_eq!(
        (delivered.status, delivered.last_status_code, delivered.last_attempt_at),
        (DeliveryStatus::Succeeded, Some(204), Some(1_000))
    );
    assert_eq!(timeline[0].deliveries[0].status, DeliveryStatus::Pending, "the other is still owed");

    let stranger = store.record_timeline(&agent("usr_x"), RecordKind::Contact, &contact.id, 10).await;
    assert!(stranger.is_err(), "an agent sees only the timeline of their own records");
}

both_stores!(
    search_finds_names_emails_and_phones_however_they_were_written,
    filters_combine_and_an_agent_sees_only_their_own,
    the_index_follows_updates_deletes_and_bulk_creates_and_pages_by_cursor,
    a_change_to_other_fields_keeps_a_contact_found_and_a_new_phone_is_found_by_its_digits,
    contacts_made_for_enquiries_or_changed_in_bulk_are_found_as_they_now_are,
    a_contact_lists_its_records_of_each_kind,
    a_timeline_shows_each_event_owed_then_delivered_per_endpoint
);
