//! The dispatcher's reads against a real database, on both stores: owed first attempts in event order, read
//! again after a lane puts one back, and the batch limit kept.

mod support;

use estate_crm_domain::RecordKind;
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight};
use estate_crm_store::{Actor, EndpointSource, EndpointSpec, Role};
use serde_json::json;
use support::stores::TestStore;

async fn with_three_contacts(store: &TestStore) -> String {
    let endpoint = store
        .create_endpoint(EndpointSpec {
            url: "http://127.0.0.1:9/hook".into(),
            events: EventFilter::All,
            secret: None,
            active: true,
            description: None,
            retry_schedule: None,
            max_in_flight: MaxInFlight::new(16).unwrap(),
            source: EndpointSource::Api,
            format: BodyFormat::Json,
        })
        .await
        .unwrap();
    let actor = Actor { user_id: "usr_test".into(), role: Role::Admin };
    for name in ["A", "B", "C"] {
        store.create_record(&actor, RecordKind::Contact, json!({"first_name": name})).await.unwrap();
    }
    endpoint.id
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

both_stores!();

both_stores!(owed_deliveries_come_in_event_order_and_a_put_back_one_is_read_again);
