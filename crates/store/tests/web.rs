//! The web app's store calls against a real database file: the 24-hour counts (owed deliveries
//! included), sessions and their limits, passwords ending sessions, and the one-time first admin.

mod support;

use bytes::Bytes;
use estate_crm_domain::RecordKind;
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight};
use estate_crm_store::credentials::hash_password;
use estate_crm_store::{Actor, EndpointSource, EndpointSpec, NewUser, NextStep, Outcome, Role, SessionLimits};
use serde_json::json;
use support::stores::TestStore;

fn outcome(seq: i64, endpoint: &str, next: NextStep) -> Outcome {
    Outcome {
        delivery_seq: seq,
        endpoint_id: Some(endpoint.to_owned()),
        attempt: 1,
        started_at: chrono::Utc::now().timestamp_millis(),
        duration_ms: 3,
        status_code: Some(if next == NextStep::Succeeded { 200 } else { 500 }),
        error: None,
        response: Bytes::new(),
        next,
    }
}

async fn health_counts_delivered_and_failed_in_the_window_and_every_pending_one(store: TestStore) {
    let spec = EndpointSpec {
        url: "http://127.0.0.1:9/hook".into(),
        events: EventFilter::All,
        secret: None,
        active: true,
        description: None,
        retry_schedule: None,
        max_in_flight: MaxInFlight::new(16).unwrap(),
        source: EndpointSource::Api,
        format: BodyFormat::Json,
    };
    let endpoint = store.create_endpoint(spec.clone()).await.unwrap().id;
    let quiet = store
        .create_endpoint(EndpointSpec { events: EventFilter::parse(&json!("deal.won")).unwrap(), ..spec })
        .await
        .unwrap()
        .id;
    let actor = Actor { user_id: "usr_test".into(), role: Role::Admin };
    for name in ["A", "B", "C"] {
        store.create_record(&actor, RecordKind::Contact, json!({"first_name": name})).await.unwrap();
    }
    let day_ago = chrono::Utc::now().timestamp_millis() - 24 * 3600 * 1000;
    let counts = |health: Vec<estate_crm_store::EndpointHealth>, id: &str| {
        let h = health.into_iter().find(|h| h.endpoint_id == id).unwrap();
        (h.delivered, h.pending, h.failed)
    };
    assert_eq!(counts(store.endpoint_health(day_ago).await.unwrap(), &endpoint), (0, 3, 0), "owed ones are pending");

    let due = store.due_deliveries(&endpoint, 0, i64::MAX, 10).await.unwrap();
    store
        .record_outcomes(vec![
            outcome(due[0].seq, &endpoint, NextStep::Succeeded),
            outcome(due[1].seq, &endpoint, NextStep::Failed),
        ])
        .await
        .unwrap();
    let health = store.endpoint_health(day_ago).await.unwrap();
    assert_eq!(counts(health.clone(), &endpoint), (1, 1, 1));
    assert_eq!(counts(health, &quiet), (0, 0, 0), "another endpoint's deliveries are not counted");

    let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
    assert_eq!(
        counts(store.endpoint_health(later).await.unwrap(), &endpoint),
        (0, 1, 0),
        "older events are outside the window"
    );
    store.retry_failed(&endpoint, 0).await.unwrap();
    assert_eq!(
        counts(store.endpoint_health(day_ago).await.unwrap(), &endpoint),
        (1, 2, 0),
        "a retried one is pending again"
    );
}

const LIMITS: SessionLimits = SessionLimits { idle_ms: 1_000, absolute_ms: 10_000 };

async fn sessions_end_when_idle_too_long_or_too_old_and_a_new_password_ends_the_others(store: TestStore) {
    let hash = hash_password("a password").unwrap();
    let user = store
        .create_user(NewUser {
            name: "Ann".into(),
            email: "Ann@Example.com".into(),
            role: Role::Agent,
            password_hash: Some(hash),
        })
        .await
        .unwrap();
    assert_eq!(store.user_by_email(" ann@example.COM ").await.unwrap().unwrap().user, user);
    assert!(store.user_by_email("bob@example.com").await.unwrap().is_none());

    store.create_session("one", &user.id, 0, LIMITS).await.unwrap();
    assert_eq!(store.find_session("one", 999, LIMITS).await.unwrap().unwrap().user, user);
    assert!(store.find_session("one", 1_000, LIMITS).await.unwrap().is_none(), "idle for the limit");
    for at in [900, 1_800, 2_700, 3_600, 4_500, 5_400, 6_300, 7_200, 8_100, 9_000, 9_900] {
        store.touch_session("one", at).await.unwrap();
    }
    assert!(store.find_session("one", 9_950, LIMITS).await.unwrap().is_some(), "kept alive by use");
    assert!(store.find_session("one", 10_000, LIMITS).await.unwrap().is_none(), "but not past the absolute limit");
    assert!(store.find_session("unknown", 5, LIMITS).await.unwrap().is_none());

    store.create_session("two", &user.id, 20_000, LIMITS).await.unwrap();
    store.create_session("three", &user.id, 20_000, LIMITS).await.unwrap();
    store.set_password(&user.id, "new hash", Some("two")).await.unwrap();
    assert!(store.find_session("two", 20_001, LIMITS).await.unwrap().is_some(), "the changing session is kept");
    assert!(store.find_session("three", 20_001, LIMITS).await.unwrap().is_none(), "the others end");
    store.delete_session("two").await.unwrap();
    assert!(store.find_session("two", 20_001, LIMITS).await.unwrap().is_none());
}

async fn the_first_admin_is_made_once(store: TestStore) {
    assert!(!store.any_password_set().await.unwrap());
    let new = |email: &str| NewUser {
        name: "Ann".into(),
        email: email.into(),
        role: Role::Admin,
        password_hash: Some("hash".into()),
    };
    assert!(store.create_first_admin(new("ann@example.com")).await.unwrap().is_some());
    assert!(store.any_password_set().await.unwrap());
    assert!(store.create_first_admin(new("eve@example.com")).await.unwrap().is_none(), "setup is over");
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn counts_remembered_for_settled_event_ranges_still_follow_status_changes(store: TestStore) {
    let spec = EndpointSpec {
        url: "http://127.0.0.1:9/hook".into(),
        events: EventFilter::All,
        secret: None,
        active: true,
        description: None,
        retry_schedule: None,
        max_in_flight: MaxInFlight::new(16).unwrap(),
        source: EndpointSource::Api,
        format: BodyFormat::Json,
    };
    let endpoint = store.create_endpoint(spec).await.unwrap().id;
    let actor = Actor { user_id: "usr_test".into(), role: Role::Admin };
    // More events than one remembered range holds, so that whole ranges are counted once and kept.
    let rows: Vec<_> = (0..10_000).map(|n| json!({"first_name": format!("C{n}")})).collect();
    store.bulk(&actor, RecordKind::Contact, estate_crm_store::BulkOp::Create(rows)).await.unwrap();
    let due = store.due_deliveries(&endpoint, 0, i64::MAX, 20_000).await.unwrap();
    assert_eq!(due.len(), 10_000);
    let mut outcomes: Vec<Outcome> = due.iter().map(|d| outcome(d.seq, &endpoint, NextStep::Succeeded)).collect();
    outcomes[17].next = NextStep::Failed;
    store.record_outcomes(outcomes).await.unwrap();

    let day_ago = chrono::Utc::now().timestamp_millis() - 24 * 3600 * 1000;
    let counts = |health: Vec<estate_crm_store::EndpointHealth>| {
        let h = health.into_iter().find(|h| h.endpoint_id == endpoint).unwrap();
        (h.delivered, h.pending, h.failed)
    };
    assert_eq!(counts(store.endpoint_health(day_ago).await.unwrap()), (9_999, 0, 1), "counted");
    assert_eq!(counts(store.endpoint_health(day_ago).await.unwrap()), (9_999, 0, 1), "remembered");
    store.retry_failed(&endpoint, 0).await.unwrap();
    assert_eq!(counts(store.endpoint_health(day_ago).await.unwrap()), (9_999, 1, 0), "a retry in a remembered range");
    store.create_record(&actor, RecordKind::Contact, json!({"first_name": "New"})).await.unwrap();
    assert_eq!(counts(store.endpoint_health(day_ago).await.unwrap()), (9_999, 2, 0), "a new one is owed");
}

async fn the_log_filtered_by_event_pages_newest_first_with_the_other_filters(store: TestStore) {
    let spec = EndpointSpec {
        url: "http://127.0.0.1:9/hook".into(),
        events: EventFilter::All,
        secret: None,
        active: true,
        description: None,
        retry_schedule: None,
        max_in_flight: MaxInFlight::new(16).unwrap(),
        source: EndpointSource::Api,
        format: BodyFormat::Json,
    };
    let first = store.create_endpoint(spec.clone()).await.unwrap().id;
    let second = store.create_endpoint(spec).await.unwrap().id;
    let actor = Actor { user_id: "usr_test".into(), role: Role::Admin };
    for name in ["A", "B", "C"] {
        store.create_record(&actor, RecordKind::Contact, json!({"first_name": name})).await.unwrap();
        store.create_record(&actor, RecordKind::Deal, json!({"title": name})).await.unwrap();
    }
    for endpoint in [&first, &second] {
        let due = store.due_deliveries(endpoint, 0, i64::MAX, 10).await.unwrap();
        let outcomes = due
            .iter()
            .enumerate()
            .map(|(n, d)| outcome(d.seq, endpoint, if n == 0 { NextStep::Failed } else { NextStep::Succeeded }))
            .collect();
        store.record_outcomes(outcomes).await.unwrap();
    }
    let page = |limit, cursor| estate_crm_store::PageRequest { limit, cursor };
    let filter = |endpoint: Option<&String>, status, event: &str| estate_crm_store::DeliveryFilter {
        endpoint_id: endpoint.cloned(),
        status,
        event: estate_crm_domain::EventName::parse(event),
    };
    let ids = |items: &[estate_crm_store::Delivery]| items.iter().map(|d| d.id.clone()).collect::<Vec<_>>();

    let all = store.list_deliveries(filter(None, None, "contact.created"), page(100, None)).await.unwrap().items;
    assert_eq!(all.len(), 6, "three contacts to two endpoints");
    assert!(all.iter().all(|d| d.event.as_str() == "contact.created"));
    let keys: Vec<&String> = all.iter().map(|d| &d.id).collect();
    let one = store.list_deliveries(filter(None, None, "contact.created"), page(4, None)).await.unwrap();
    let two = store.list_deliveries(filter(None, None, "contact.created"), page(4, one.next_cursor)).await.unwrap();
    assert_eq!([ids(&one.items), ids(&two.items)].concat().iter().collect::<Vec<_>>(), keys, "newest first, in pages");
    assert!(two.next_cursor.is_none());

    let mine = store.list_deliveries(filter(Some(&second), None, "contact.created"), page(100, None)).await.unwrap();
    assert_eq!(mine.items.len(), 3);
    assert!(mine.items.iter().all(|d| d.endpoint_id.as_ref() == Some(&second)));
    let failed = store
        .list_deliveries(
            filter(Some(&first), Some(estate_crm_store::DeliveryStatus::Failed), "contact.created"),
            page(100, None),
        )
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 1, "the first endpoint's first contact failed");
    let none = store.list_deliveries(filter(None, None, "deal.won"), page(100, None)).await.unwrap();
    assert!(none.items.is_empty());
}

both_stores!(
    health_counts_delivered_and_failed_in_the_window_and_every_pending_one,
    sessions_end_when_idle_too_long_or_too_old_and_a_new_password_ends_the_others,
    the_first_admin_is_made_once,
    counts_remembered_for_settled_event_ranges_still_follow_status_changes,
    the_log_filtered_by_event_pages_newest_first_with_the_other_filters
);
