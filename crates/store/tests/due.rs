//! The dispatcher's reads against a real database, on both stores: owed first attempts in event order, read
//! again after a lane puts one back, and the batch limit kept; and a lane's reads as it keeps up, which
//! the embedded store answers from memory when it can, giving what the database would at every step.

mod support;

use estate_crm_domain::EventName;
use estate_crm_domain::RecordKind;
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight};
use estate_crm_store::{Actor, EndpointPatch, EndpointSource, EndpointSpec, NextStep, Outcome, Role};
use serde_json::json;
use support::stores::TestStore;

async fn with_three_contacts(store: &TestStore) -> String {
    let endpoint = endpoint(store, EventFilter::All).await;
    let actor = Actor { user_id: "usr_test".into(), role: Role::Admin };
    for name in ["A", "B", "C"] {
        store.create_record(&actor, RecordKind::Contact, json!({"first_name": name})).await.unwrap();
    }
    endpoint
}

async fn endpoint(store: &TestStore, events: EventFilter) -> String {
    store
        .create_endpoint(EndpointSpec {
            url: "http://127.0.0.1:9/hook".into(),
            events,
            secret: None,
            active: true,
            description: None,
            retry_schedule: None,
            max_in_flight: MaxInFlight::new(16).unwrap(),
            source: EndpointSource::Api,
            format: BodyFormat::Json,
        })
        .await
        .unwrap()
        .id
}

fn keys(due: &[estate_crm_store::DueDelivery]) -> Vec<i64> {
    due.iter().map(|d| d.seq).collect()
}

async fn owed_deliveries_come_in_event_order_and_a_put_back_one_is_read_again(store: TestStore) {
    let endpoint = with_three_contacts(&store).await;
    let now = i64::MAX;

    let all = keys(&store.due_deliveries(&endpoint, 0, now, 10).await.unwrap());
    assert_eq!(all.len(), 3, "three contacts owe three deliveries");
    assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "in event order: {all:?}");

    // A lane that put the second back reads again from just before its key.
    let again = keys(&store.due_deliveries(&endpoint, all[1] - 1, now, 10).await.unwrap());
    assert_eq!(again, all[1..].to_vec());
    // After a key, one at a time, the next one and only it.
    assert_eq!(keys(&store.due_deliveries(&endpoint, all[0], now, 1).await.unwrap()), vec![all[1]]);
    assert_eq!(keys(&store.due_deliveries(&endpoint, all[2], now, 10).await.unwrap()), Vec::<i64>::new());
}

/// Records the first attempts of `due` as ending with `next`, as the dispatcher's recorder does.
async fn attempted(store: &TestStore, endpoint: &str, due: &[estate_crm_store::DueDelivery], next: NextStep) {
    let outcomes = due
        .iter()
        .map(|delivery| Outcome {
            delivery_seq: delivery.seq,
            endpoint_id: Some(endpoint.to_owned()),
            attempt: delivery.attempts + 1,
            started_at: 1,
            duration_ms: 1,
            status_code: Some(200),
            error: None,
            response: bytes::Bytes::new(),
            next: next.clone(),
        })
        .collect();
    store.record_outcomes(outcomes).await.unwrap();
}

fn events(due: &[estate_crm_store::DueDelivery]) -> Vec<EventName> {
    due.iter().map(|d| d.event).collect()
}

/// A lane that keeps up: reads from the start, attempts what it read, then reads after the last
/// key as new events commit. Each step checks what a database read gives, through every change that
/// decides what is owed: new events, a test, a scheduled retry come due, a changed filter, a bulk
/// import, a pause.
async fn a_lane_that_keeps_up_reads_each_owed_event_once_through_every_change(store: TestStore) {
    let actor = Actor { user_id: "usr_test".into(), role: Role::Admin };
    let create = |name: &'static str| {
        let store = &store;
        let actor = &actor;
        async move { store.create_record(actor, RecordKind::Contact, json!({"first_name": name})).await.unwrap() }
    };
    let endpoint = endpoint(&store, EventFilter::All).await;
    let now = i64::MAX - 1;

    create("A").await;
    let first = store.due_deliveries(&endpoint, 0, now, 10).await.unwrap();
    assert_eq!(events(&first), vec![EventName::ContactCreated]);
    let mut cursor = first[0].seq;
    attempted(&store, &endpoint, &first, NextStep::Succeeded).await;

    // New events after the cursor, each once, with their bodies; a test is owed to nobody.
    create("B").await;
    store.begin_test_delivery(Some(&endpoint), b"{}".to_vec()).await.unwrap();
    create("C").await;
    let next = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
    assert_eq!(events(&next), vec![EventName::ContactCreated; 2]);
    assert!(next.iter().all(|d| d.seq > cursor && d.attempts == 0 && d.body.starts_with(b"{")));
    assert!(next.iter().zip(&next[1..]).all(|(a, b)| a.seq < b.seq));
    assert_eq!(store.due_deliveries(&endpoint, cursor, now, 1).await.unwrap().len(), 1, "the limit holds");
    // The first of them goes well, the second is to be tried again later.
    attempted(&store, &endpoint, &next[..1], NextStep::Succeeded).await;
    attempted(&store, &endpoint, &next[1..], NextStep::RetryAt(1_000)).await;
    cursor = next[1].seq;
    assert!(store.due_deliveries(&endpoint, cursor, 999, 10).await.unwrap().is_empty(), "not due before its time");

    // A read from before the retry's key finds the retry once due; new events follow it.
    create("D").await;
    let with_retry = store.due_deliveries(&endpoint, next[0].seq, now, 10).await.unwrap();
    assert_eq!(with_retry.iter().map(|d| d.attempts).collect::<Vec<_>>(), vec![1, 0]);
    assert_eq!(with_retry[0].seq, next[1].seq);
    attempted(&store, &endpoint, &with_retry, NextStep::Succeeded).await;
    cursor = with_retry[1].seq;
    // From further back (as after a rescan that stopped short): what has a row is not owed. Twice,
    // so that the second read may be answered from what the first learned.
    for _ in 0..2 {
        assert!(store.due_deliveries(&endpoint, first[0].seq, now, 10).await.unwrap().is_empty());
    }

    // Only deals from now on: contacts created after the change are owed nothing.
    let patch = EndpointPatch { events: Some(EventFilter::Only(vec![EventName::DealCreated])), ..Default::default() };
    store.update_endpoint(&endpoint, patch).await.unwrap();
    create("E").await;
    store.create_record(&actor, RecordKind::Deal, json!({"title": "12 Elm St"})).await.unwrap();
    let deals = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
    assert_eq!(events(&deals), vec![EventName::DealCreated]);
    attempted(&store, &endpoint, &deals, NextStep::Succeeded).await;
    cursor = deals[0].seq;
    store.create_record(&actor, RecordKind::Deal, json!({"title": "14 Elm St"})).await.unwrap();
    let again = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
    assert_eq!(events(&again), vec![EventName::DealCreated]);
    assert!(again[0].seq > cursor);

    // A bulk import's deals are owed too, after the one not yet attempted.
    let rows: Vec<_> = (0..3).map(|n| json!({"title": format!("{n} Oak St")})).collect();
    store.bulk(&actor, RecordKind::Deal, estate_crm_store::BulkOp::Create(rows)).await.unwrap();
    let with_bulk = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
    assert_eq!(with_bulk.len(), 4);
    assert_eq!(with_bulk[0].seq, again[0].seq);
    attempted(&store, &endpoint, &with_bulk, NextStep::Succeeded).await;
    cursor = with_bulk[3].seq;
    store.create_record(&actor, RecordKind::Deal, json!({"title": "16 Elm St"})).await.unwrap();
    let last = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
    assert_eq!(events(&last), vec![EventName::DealCreated]);
    attempted(&store, &endpoint, &last, NextStep::Succeeded).await;
    cursor = last[0].seq;

    // Every event again: a contact created before the change stays owed nothing, one after is owed.
    create("F").await;
    store
        .update_endpoint(&endpoint, EndpointPatch { events: Some(EventFilter::All), ..Default::default() })
        .await
        .unwrap();
    create("G").await;
    for _ in 0..2 {
        assert_eq!(
            events(&store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap()),
            vec![EventName::ContactCreated]
        );
    }
    // The newer of two attempted first: the older is still owed, the newer is not.
    create("H").await;
    let both = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
    assert_eq!(both.len(), 2);
    attempted(&store, &endpoint, &both[1..], NextStep::Succeeded).await;
    for _ in 0..2 {
        let left = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
        assert_eq!(left.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![both[0].seq]);
    }
    store.create_record(&actor, RecordKind::Deal, json!({"title": "18 Elm St"})).await.unwrap();
    assert_eq!(store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap().len(), 2);

    // Paused: nothing more is owed.
    store.update_endpoint(&endpoint, EndpointPatch { active: Some(false), ..Default::default() }).await.unwrap();
    let paused = store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap();
    assert_eq!(paused.len(), 2, "what was owed before the pause stays, as pending rows: {paused:?}");
    assert!(paused.iter().all(|d| d.attempts == 0));
    store.create_record(&actor, RecordKind::Deal, json!({"title": "20 Elm St"})).await.unwrap();
    assert_eq!(store.due_deliveries(&endpoint, cursor, now, 10).await.unwrap().len(), 2);
}

both_stores!(
    owed_deliveries_come_in_event_order_and_a_put_back_one_is_read_again,
    a_lane_that_keeps_up_reads_each_owed_event_once_through_every_change,
);
