//! The HubSpot integration's storage against a real database file: the cursor starts at the newest
//! event, the purge keeps what the sync still owes HubSpot, and one commit moves the cursor, the
//! mappings and the log together.

mod support;

use estate_crm_domain::RecordKind;
use estate_crm_store::{
    Actor, HubspotCommit, HubspotMapping, HubspotPatch, MappingChange, NewSyncLogEntry, PageRequest, Role, Store,
};
use serde_json::json;
use support::stores::TestStore;

async fn contact(store: &dyn Store, name: &str) -> String {
    let actor = Actor { user_id: "usr_test".into(), role: Role::Admin };
    store.create_record(&actor, RecordKind::Contact, json!({"first_name": name})).await.unwrap().id
}

fn connect() -> HubspotPatch {
    HubspotPatch { access_token: Some("pat-test".into()), ..HubspotPatch::default() }
}

async fn the_cursor_starts_at_the_newest_event_and_the_purge_keeps_what_hubspot_is_owed(store: TestStore) {
    contact(&*store, "Before").await;
    let settings = store.put_hubspot_settings(connect()).await.unwrap();
    assert_eq!(settings.cursor, 1, "what existed before the connection is the backfill's");
    assert!(store.hubspot_events_after(settings.cursor, 10).await.unwrap().is_empty());

    for name in ["A", "B", "C"] {
        contact(&*store, name).await;
    }
    store.purge(i64::MAX).await.unwrap();
    let owed = store.hubspot_events_after(settings.cursor, 10).await.unwrap();
    assert_eq!(owed.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3, 4], "the purge kept them");

    store.commit_hubspot(HubspotCommit { cursor: Some(4), ..HubspotCommit::default() }).await.unwrap();
    store.purge(i64::MAX).await.unwrap();
    let left = store.list_events(Default::default(), PageRequest { limit: 10, cursor: None }).await.unwrap();
    assert_eq!(left.items.len(), 1, "once HubSpot has them, old events may go (the newest stays)");
}

async fn a_commit_moves_cursor_mappings_and_log_together_and_a_pause_waits_for_new_settings(store: TestStore) {
    let settings = store.put_hubspot_settings(connect()).await.unwrap();
    let ada = contact(&*store, "Ada").await;
    let mapping = HubspotMapping { hubspot_id: "901".into(), sent: "{}".into() };
    let line = |action| NewSyncLogEntry {
        kind: RecordKind::Contact,
        record_id: ada.clone(),
        action,
        sent: "{}".into(),
        status: Some(200),
        hubspot_id: Some("901".into()),
        error: None,
    };
    store
        .commit_hubspot(HubspotCommit {
            cursor: Some(1),
            mappings: vec![MappingChange::Set {
                kind: RecordKind::Contact,
                record_id: ada.clone(),
                mapping: mapping.clone(),
            }],
            log: vec![line("upsert")],
            ..HubspotCommit::default()
        })
        .await
        .unwrap();
    let found = store.hubspot_mappings(RecordKind::Contact, vec![ada.clone(), "con_nope1".into()]).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[&ada], mapping);
    // A cursor never goes back, even if an older batch's commit comes late.
    store.commit_hubspot(HubspotCommit { cursor: Some(0), ..HubspotCommit::default() }).await.unwrap();
    assert_eq!(store.hubspot_settings().await.unwrap().unwrap().cursor, 1);

    store
        .commit_hubspot(HubspotCommit {
            mappings: vec![MappingChange::Remove { kind: RecordKind::Contact, record_id: ada.clone() }],
            log: vec![line("archive")],
            ..HubspotCommit::default()
        })
        .await
        .unwrap();
    assert!(store.hubspot_mappings(RecordKind::Contact, vec![ada.clone()]).await.unwrap().is_empty());
    let log = store.hubspot_log(Some(ada.clone()), PageRequest { limit: 1, cursor: None }).await.unwrap();
    assert_eq!(log.items[0].entry.action, "archive", "newest first");
    let rest = store.hubspot_log(Some(ada.clone()), PageRequest { limit: 1, cursor: log.next_cursor }).await.unwrap();
    assert_eq!(rest.items[0].entry.action, "upsert");
    assert!(
        store
            .hubspot_log(Some("con_other1".into()), PageRequest { limit: 5, cursor: None })
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // A pause from a worker that read older settings does not stop newer ones.
    store.pause_hubspot(settings.version - 1, "stale".into()).await.unwrap();
    assert_eq!(store.hubspot_settings().await.unwrap().unwrap().paused_reason, None);
    store.pause_hubspot(settings.version, "HubSpot refused the access token (401)".into()).await.unwrap();
    assert!(store.hubspot_settings().await.unwrap().unwrap().paused_reason.is_some());
    let resumed = store.put_hubspot_settings(connect()).await.unwrap();
    assert_eq!(resumed.paused_reason, None, "saving the settings resumes");
    assert_eq!(resumed.cursor, 1, "and keeps the cursor");
}

both_stores!(
    the_cursor_starts_at_the_newest_event_and_the_purge_keeps_what_hubspot_is_owed,
    a_commit_moves_cursor_mappings_and_log_together_and_a_pause_waits_for_new_settings
);
