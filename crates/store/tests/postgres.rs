//! The PostgreSQL store against a real server, each test in a database of its own: migrations,
//! records and their events, the order of the event log under concurrent writers, two servers on one
//! database, users and tokens.

mod support;

use std::collections::HashSet;

use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight};
use estate_crm_domain::{EventName, RecordKind};
use estate_crm_store::{
    Actor, BulkOp, DueDelivery, EndpointSource, EndpointSpec, ErrorKind, EventFilterQuery, NewUser, NextStep, Outcome,
    PageRequest, PgConfig, PgStore, Role, Store, migrate_postgres,
};
use serde_json::json;
use support::pg::TestDatabase;

const SITE: &str = "http://127.0.0.1:8080";

fn admin() -> Actor {
    Actor { user_id: "usr_test".into(), role: Role::Admin }
}

async fn open(db: &TestDatabase) -> PgStore {
    PgStore::open(&PgConfig { url: db.url.clone(), pool_size: 4, site_url: SITE.into() }).await.unwrap()
}

/// Every event in the log, oldest first: (seq from its id order, name).
async fn all_events(store: &PgStore) -> Vec<(String, EventName)> {
    let mut events = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_events(EventFilterQuery::default(), PageRequest { limit: 1000, cursor }).await.unwrap();
        events.extend(page.items.iter().map(|e| (e.id.clone(), e.name)));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    events.reverse();
    events
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn migrations_started_at_once_apply_once_and_a_newer_schema_is_refused() {
    let Some(db) = TestDatabase::create().await else { return };
    let runs: Vec<_> = (0..3).map(|_| tokio::spawn(migrate_postgres_owned(db.url.clone()))).collect();
    let mut found = Vec::new();
    for run in runs {
        found.push(run.await.unwrap().unwrap());
    }
    let newest = found.iter().map(|v| v.now).max().unwrap();
    assert!(newest >= 1);
    assert_eq!(found.iter().filter(|v| v.found == 0).count(), 1, "exactly one run applied them: {found:?}");
    let client = connect(&db.url).await;
    let rows = client.query("SELECT version FROM schema_version", &[]).await.unwrap();
    assert_eq!(rows.len(), 1, "one version row");
    assert_eq!(usize::try_from(rows[0].get::<_, i32>(0)).unwrap(), newest);

    client.execute("UPDATE schema_version SET version = 999", &[]).await.unwrap();
    let refused = migrate_postgres(&db.url).await.unwrap_err().to_string();
    assert!(refused.contains("newer estate-crm (schema version 999"), "{refused}");
    assert!(!refused.contains('\n'), "one line: {refused}");
    let refused = PgStore::open(&PgConfig { url: db.url.clone(), pool_size: 2, site_url: SITE.into() })
        .await
        .err()
        .expect("a store on a newer schema does not open")
        .to_string();
    assert!(refused.contains("upgrade estate-crm"), "{refused}");
}

async fn migrate_postgres_owned(url: String) -> Result<estate_crm_store::SchemaVersions, estate_crm_store::StoreError> {
    migrate_postgres(&url).await
}

#[tokio::test]
async fn an_unreachable_database_is_said_in_one_line() {
    // Nothing listens on port 1; no database is made, so this needs no PostgreSQL.
    let err = PgStore::open(&PgConfig {
        url: "postgres://postgres@127.0.0.1:1/estate".into(),
        pool_size: 2,
        site_url: SITE.into(),
    })
    .await
    .err()
    .expect("no database there")
    .to_string();
    assert!(err.starts_with("reaching the database"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[tokio::test]
async fn a_record_is_created_changed_and_deleted_with_its_events() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let contact = store
        .create_record(&admin(), RecordKind::Contact, json!({"first_name": "Ada", "email": "ada@example.com"}))
        .await
        .unwrap();
    let read = store.get_record(&admin(), RecordKind::Contact, &contact.id).await.unwrap();
    assert_eq!(read.fields, contact.fields, "the fields come back as written, in their order");

    let taken = store
        .create_record(&admin(), RecordKind::Contact, json!({"first_name": "Eve", "email": "ADA@example.com"}))
        .await
        .unwrap_err();
    assert!(matches!(taken.kind(), ErrorKind::Conflict(_)), "{taken}");

    let unchanged = store.update_record(&admin(), RecordKind::Contact, &contact.id, json!({"first_name": "Ada"})).await;
    assert_eq!(unchanged.unwrap().fields, contact.fields);
    let changed = store
        .update_record(&admin(), RecordKind::Contact, &contact.id, json!({"last_name": "Lovelace"}))
        .await
        .unwrap();
    assert_eq!(changed.get_str("last_name"), Some("Lovelace"));
    store.delete_record(&admin(), RecordKind::Contact, &contact.id).await.unwrap();
    let gone = store.get_record(&admin(), RecordKind::Contact, &contact.id).await.unwrap_err();
    assert_eq!(gone.kind(), &ErrorKind::NotFound);

    let names: Vec<EventName> = all_events(&store).await.into_iter().map(|(_, name)| name).collect();
    assert_eq!(
        names,
        vec![EventName::ContactCreated, EventName::ContactUpdated, EventName::ContactDeleted],
        "the refused create and the update that changed nothing fired nothing"
    );

    // A new record never takes the deleted one's id, even after a restart.
    drop(store);
    let store = open(&db).await;
    let next = store.create_record(&admin(), RecordKind::Contact, json!({"first_name": "Bo"})).await.unwrap();
    assert_ne!(next.id, contact.id);
}

#[tokio::test]
async fn an_enquiry_links_or_makes_its_contact() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let enquiry = json!({"name": "Ann Lee", "email": "ann@example.com", "message": "Is it still for sale?"});
    let first = store.create_record(&admin(), RecordKind::Enquiry, enquiry.clone()).await;
    let first = match first {
        Ok(record) => record,
        Err(err) => panic!("an enquiry: {err}"),
    };
    let second = store.create_record(&admin(), RecordKind::Enquiry, enquiry).await.unwrap();
    let contact = first.get_str("contact_id").expect("linked to a contact").to_owned();
    assert_eq!(second.get_str("contact_id"), Some(contact.as_str()), "the second finds the same contact");
    store.get_record(&admin(), RecordKind::Contact, &contact).await.unwrap();
    let names: Vec<EventName> = all_events(&store).await.into_iter().map(|(_, name)| name).collect();
    assert_eq!(names, vec![EventName::ContactCreated, EventName::EnquiryCreated, EventName::EnquiryCreated]);
}

#[tokio::test]
async fn a_bulk_create_is_all_or_nothing_and_names_the_rows_that_failed() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let rows = vec![
        json!({"first_name": "A", "email": "same@example.com"}),
        json!({"first_name": "B", "email": "same@example.com"}),
        json!({"first_name": "C"}),
    ];
    let err = store.bulk(&admin(), RecordKind::Contact, BulkOp::Create(rows)).await.unwrap_err();
    match err.kind() {
        ErrorKind::Conflict(errors) => assert!(errors.to_string().contains("create[1].email"), "{errors}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let invalid = vec![json!({"first_name": "A"}), json!({"first_name": 5})];
    let err = store.bulk(&admin(), RecordKind::Contact, BulkOp::Create(invalid)).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Invalid(_)), "{err}");
    assert!(all_events(&store).await.is_empty(), "nothing of a failed bulk request was written");
    let page = store.list_records(&admin(), RecordKind::Contact, PageRequest { limit: 10, cursor: None }).await;
    assert!(page.unwrap().items.is_empty());

    let rows: Vec<_> =
        (0..1200).map(|n| json!({"first_name": format!("P{n}"), "email": format!("p{n}@x.com")})).collect();
    let ids = store.bulk(&admin(), RecordKind::Contact, BulkOp::Create(rows)).await.unwrap();
    assert_eq!(ids.len(), 1200);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1200, "ids are distinct");
    assert_eq!(all_events(&store).await.len(), 1200);
    let last = store.get_record(&admin(), RecordKind::Contact, &ids[1199]).await.unwrap();
    assert_eq!(last.get_str("first_name"), Some("P1199"), "rows keep their order and their values");

    let updates: Vec<_> = ids[..2].iter().map(|id| json!({"id": id, "email": "taken@x.com"})).collect();
    let err = store.bulk(&admin(), RecordKind::Contact, BulkOp::Update(updates)).await.unwrap_err();
    assert!(err.to_string().contains("update[1].email"), "{err}");
    let deleted = store.bulk(&admin(), RecordKind::Contact, BulkOp::Delete(ids[..3].to_vec())).await.unwrap();
    assert_eq!(deleted, ids[..3].to_vec());
    assert_eq!(all_events(&store).await.len(), 1203);
}

#[tokio::test]
async fn two_servers_writing_at_once_give_distinct_ids_and_an_event_log_in_commit_order() {
    let Some(db) = TestDatabase::create().await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    let mut writes = Vec::new();
    for n in 0..300 {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        writes.push(tokio::spawn(async move {
            store.create_record(&admin(), RecordKind::Contact, json!({"first_name": format!("N{n}")})).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for write in writes {
        assert!(ids.insert(write.await.unwrap().id), "an id given twice");
    }
    // Every acknowledged change has its event, and seqs run 1, 2, 3... with no gap: each commit's
    // events follow the previous commit's, so a reader never sees a later seq before an earlier one.
    let client = connect(&db.url).await;
    let seqs: Vec<i64> =
        client.query("SELECT seq FROM events ORDER BY seq", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<i64>>());
    assert_eq!(all_events(&a).await.len(), 300);
}

#[tokio::test]
async fn agents_see_only_their_own_records() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let ann = Actor { user_id: "usr_ann".into(), role: Role::Agent };
    let bob = Actor { user_id: "usr_bob".into(), role: Role::Agent };
    let mine = store.create_record(&ann, RecordKind::Contact, json!({"first_name": "A"})).await.unwrap();
    store.create_record(&bob, RecordKind::Contact, json!({"first_name": "B"})).await.unwrap();
    let page = store.list_records(&ann, RecordKind::Contact, PageRequest { limit: 10, cursor: None }).await.unwrap();
    assert_eq!(page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![mine.id.clone()]);
    let hidden = store.get_record(&bob, RecordKind::Contact, &mine.id).await.unwrap_err();
    assert_eq!(hidden.kind(), &ErrorKind::NotFound);
    let refused = store.update_record(&bob, RecordKind::Contact, &mine.id, json!({"first_name": "X"})).await;
    assert_eq!(refused.unwrap_err().kind(), &ErrorKind::NotFound);
    let all = store.list_records(&admin(), RecordKind::Contact, PageRequest { limit: 1, cursor: None }).await.unwrap();
    assert_eq!(all.items.len(), 1);
    let rest = store
        .list_records(&admin(), RecordKind::Contact, PageRequest { limit: 1, cursor: all.next_cursor })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1, "the second page has the other record");
    assert!(rest.next_cursor.is_none());
}

#[tokio::test]
async fn users_and_tokens() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    assert!(store.set_admin_token("hash-one", true).await.unwrap());
    assert!(!store.set_admin_token("hash-two", true).await.unwrap(), "kept while one exists");
    assert!(store.find_token("hash-two").await.unwrap().is_none());
    let admin_user = store.find_token("hash-one").await.unwrap().expect("the admin token works");
    assert_eq!(admin_user.role, Role::Admin);
    assert!(store.set_admin_token("hash-two", false).await.unwrap());
    assert!(store.find_token("hash-one").await.unwrap().is_none(), "the replaced token stops working");

    let new =
        || NewUser { name: "Ann".into(), email: "Ann@Example.com".into(), role: Role::Agent, password_hash: None };
    let ann = store.create_user(new()).await.unwrap();
    assert_eq!(ann.email, "ann@example.com");
    let taken = store.create_user(new()).await.unwrap_err();
    assert!(matches!(taken.kind(), ErrorKind::Conflict(_)), "{taken}");
    let token = store.create_token(&ann.id, "laptop", "hash-ann").await.unwrap();
    assert_eq!(store.find_token("hash-ann").await.unwrap().map(|u| u.id), Some(ann.id.clone()));
    let nobody = store.create_token("usr_nope1", "x", "hash-x").await.unwrap_err();
    assert!(matches!(nobody.kind(), ErrorKind::Invalid(_)), "{nobody}");
    let not_hers = store.delete_token(&token.id, Some(&admin_user.id)).await.unwrap_err();
    assert_eq!(not_hers.kind(), &ErrorKind::NotFound);
    store.delete_token(&token.id, Some(&ann.id)).await.unwrap();
    assert!(store.find_token("hash-ann").await.unwrap().is_none());
}

#[tokio::test]
async fn requests_failing_inside_a_group_commit_undo_only_themselves() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    // Each email twice, all at once: many land in the same commit, where the second of a pair fails
    // in its savepoint and the others stay.
    let mut writes = Vec::new();
    for n in 0..200 {
        let store = store.clone();
        let email = format!("pair{}@example.com", n / 2);
        writes.push(tokio::spawn(async move {
            store.create_record(&admin(), RecordKind::Contact, json!({"first_name": "P", "email": email})).await
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for write in writes {
        match write.await.unwrap() {
            Ok(_) => created += 1,
            Err(err) if matches!(err.kind(), ErrorKind::Conflict(_)) => refused += 1,
            Err(err) => panic!("only conflicts may fail: {err}"),
        }
    }
    assert_eq!((created, refused), (100, 100));
    let client = connect(&db.url).await;
    let seqs: Vec<i64> =
        client.query("SELECT seq FROM events ORDER BY seq", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<i64>>(), "one event per contact made, numbered without a gap");
    let records: i64 = client.query_one("SELECT COUNT(*) FROM records", &[]).await.unwrap().get(0);
    assert_eq!(records, 100);
}

#[tokio::test]
async fn connections_cut_by_the_server_are_made_again_without_a_restart() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    store.create_record(&admin(), RecordKind::Contact, json!({"first_name": "Before"})).await.unwrap();
    let admin_url = support::pg::admin_url().expect("a PostgreSQL server");
    let killer = connect(&admin_url).await;
    let database = db.url.rsplit('/').next().unwrap().to_owned();
    let cut: i64 = killer
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .unwrap()
        .get(0);
    assert!(cut >= 2, "the writer's and a reader's connections were cut ({cut})");
    // The request that finds its connection cut fails (nothing of it written); the next ones get new
    // connections. A bounded number of tries, no waiting.
    let mut made = 0;
    for attempt in 0..3 {
        if store
            .create_record(&admin(), RecordKind::Contact, json!({"first_name": format!("After{attempt}")}))
            .await
            .is_ok()
        {
            made += 1;
        }
    }
    assert!(made >= 2, "writes work again after at most one failure ({made} of 3)");
    let events = all_events(&store).await;
    assert_eq!(events.len(), 1 + made, "every acknowledged change has its event, and no failed one has");
}

/// The creates of one group commit go in with one statement: each request still stands alone. Each
/// group of four requests sent at once has one whose email an earlier contact has, two that share an
/// email (the first to reach the writer wins), and one of its own; they land in the same commits.
#[tokio::test]
async fn creates_sharing_a_commit_refuse_exactly_those_whose_email_is_taken() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let earlier = json!({"first_name": "Early", "email": "taken@example.com"});
    let earlier = store.create_record(&admin(), RecordKind::Contact, earlier).await.unwrap();
    const GROUPS: usize = 60;
    let mut writes = Vec::new();
    for n in 0..GROUPS * 4 {
        let store = store.clone();
        let email = match n % 4 {
            0 => "TAKEN@example.com".to_owned(),
            1 | 2 => format!("pair{}@example.com", n / 4),
            _ => format!("own{}@example.com", n / 4),
        };
        writes.push(tokio::spawn(async move {
            let input = json!({"first_name": format!("N{n}"), "email": email});
            (n, store.create_record(&admin(), RecordKind::Contact, input).await)
        }));
    }
    let mut created = vec![earlier.clone()];
    let mut pair_winners = vec![0; GROUPS];
    for write in writes {
        let (n, result) = write.await.unwrap();
        match (n % 4, result) {
            (0, Err(err)) => assert!(matches!(err.kind(), ErrorKind::Conflict(_)), "request {n}: {err}"),
            (0, Ok(record)) => panic!("request {n} took an email already taken: {record:?}"),
            (1 | 2, Ok(record)) => {
                pair_winners[n / 4] += 1;
                created.push(record);
            }
            (1 | 2, Err(err)) => assert!(matches!(err.kind(), ErrorKind::Conflict(_)), "request {n}: {err}"),
            (_, result) => created.push(result.unwrap_or_else(|err| panic!("request {n} had its own email: {err}"))),
        }
    }
    assert!(pair_winners.iter().all(|&won| won == 1), "exactly one of each pair is made: {pair_winners:?}");
    assert_eq!(created.len(), 1 + GROUPS * 2);

    // Each contact made has its one event, the refused ones none, numbered 1, 2, 3... with no gap.
    let client = connect(&db.url).await;
    let events = client.query("SELECT seq, name, body FROM events ORDER BY seq", &[]).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|row| row.get(0)).collect();
    assert_eq!(seqs, (1..=i64::try_from(created.len()).unwrap()).collect::<Vec<i64>>());
    let mut with_event = HashSet::new();
    for row in &events {
        assert_eq!(row.get::<_, &str>(1), "contact.created");
        let body: serde_json::Value = serde_json::from_slice(row.get::<_, &[u8]>(2)).unwrap();
        let id = body["data"]["id"].as_str().expect("the event names its record").to_owned();
        assert!(with_event.insert(id), "one event per contact");
    }
    let made: HashSet<String> = created.iter().map(|record| record.id.clone()).collect();
    assert_eq!(with_event, made, "the events are exactly those of the contacts made");
    let records: i64 = client.query_one("SELECT COUNT(*) FROM records", &[]).await.unwrap().get(0);
    assert_eq!(usize::try_from(records).unwrap(), created.len());
    for record in &created {
        let read = store.get_record(&admin(), RecordKind::Contact, &record.id).await.unwrap();
        assert_eq!(read.fields, record.fields, "what was answered is what is stored");
    }
}

/// A create that the database itself refuses for a reason of its own (here a check this test adds,
/// standing for anything a create should never meet) fails alone even when it shares its commit's
/// statement with others: the others are written again one at a time, with their events, in order.
#[tokio::test]
async fn a_create_the_database_refuses_fails_alone_in_a_shared_commit() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let client = connect(&db.url).await;
    client
        .execute("ALTER TABLE records ADD CONSTRAINT no_poison CHECK (fields NOT LIKE '%Poison%')", &[])
        .await
        .unwrap();
    let poison = json!({"first_name": "Poison"});
    let alone = store.create_record(&admin(), RecordKind::Contact, poison.clone()).await.unwrap_err();
    let mut writes = Vec::new();
    for n in 0..90 {
        let store = store.clone();
        let input = if n % 30 == 7 {
            poison.clone()
        } else {
            json!({"first_name": format!("N{n}"), "email": format!("n{n}@x.com")})
        };
        writes.push(tokio::spawn(async move { (n, store.create_record(&admin(), RecordKind::Contact, input).await) }));
    }
    let mut made = 0;
    for write in writes {
        match write.await.unwrap() {
            (n, Err(err)) if n % 30 == 7 => assert_eq!(err.kind(), alone.kind(), "refused as when alone: {err}"),
            (n, Err(err)) => panic!("request {n} failed with another's: {err}"),
            (n, Ok(_)) if n % 30 == 7 => panic!("request {n} was written past the check"),
            (_, Ok(_)) => made += 1,
        }
    }
    assert_eq!(made, 87);
    let seqs: Vec<i64> =
        client.query("SELECT seq FROM events ORDER BY seq", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs, (1..=87).collect::<Vec<i64>>(), "one event per contact made, numbered without a gap");
    let records: i64 = client.query_one("SELECT COUNT(*) FROM records", &[]).await.unwrap().get(0);
    assert_eq!(records, 87);
}

async fn endpoint(store: &PgStore, events: EventFilter) -> String {
    let spec = EndpointSpec {
        url: "http://127.0.0.1:9/hook".into(),
        events,
        secret: None,
        active: true,
        description: None,
        retry_schedule: None,
        max_in_flight: MaxInFlight::new(16).unwrap(),
        source: EndpointSource::Api,
        format: BodyFormat::Json,
    };
    store.create_endpoint(spec).await.unwrap().id
}

/// First attempts of `due`, succeeded, as the dispatcher's recorder hands them over.
fn succeeded(endpoint: &str, due: &[DueDelivery]) -> Vec<Outcome> {
    due.iter()
        .map(|delivery| Outcome {
            delivery_seq: delivery.seq,
            endpoint_id: Some(endpoint.to_owned()),
            attempt: 1,
            started_at: 1,
            duration_ms: 1,
            status_code: Some(200),
            error: None,
            response: bytes::Bytes::new(),
            next: NextStep::Succeeded,
        })
        .collect()
}

/// The cursors of every endpoint that one commit of outcomes touched move in one statement: each to
/// just before its oldest owed event, by its own subscription, or to the newest event when it is
/// owed nothing.
#[tokio::test]
async fn outcomes_move_each_endpoints_cursor_by_its_own_subscription() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let all = endpoint(&store, EventFilter::All).await;
    let updates = endpoint(&store, EventFilter::Only(vec![EventName::ContactUpdated, EventName::DealWon])).await;
    let mut contacts = Vec::new();
    for name in ["A", "B", "C"] {
        contacts.push(store.create_record(&admin(), RecordKind::Contact, json!({"first_name": name})).await.unwrap());
    }
    store.update_record(&admin(), RecordKind::Contact, &contacts[0].id, json!({"last_name": "L"})).await.unwrap();
    store.create_record(&admin(), RecordKind::Contact, json!({"first_name": "D"})).await.unwrap();
    // Events: 1 to 3 created, 4 updated, 5 created. `all` is owed all five, `updates` only 4.
    let owed_all = store.due_deliveries(&all, 0, i64::MAX, 10).await.unwrap();
    let owed_updates = store.due_deliveries(&updates, 0, i64::MAX, 10).await.unwrap();
    assert_eq!((owed_all.len(), owed_updates.len()), (5, 1));

    // One commit: the first two of `all` (3 is still owed) and the one of `updates` (nothing left).
    let mut outcomes = succeeded(&all, &owed_all[..2]);
    outcomes.extend(succeeded(&updates, &owed_updates));
    store.record_outcomes(outcomes).await.unwrap();
    let client = connect(&db.url).await;
    let cursors = |client: tokio_postgres::Client| async move {
        let rows = client.query("SELECT cursor FROM endpoints ORDER BY seq", &[]).await.unwrap();
        (rows.iter().map(|row| row.get(0)).collect::<Vec<i64>>(), client)
    };
    let (moved, client) = cursors(client).await;
    assert_eq!(moved, vec![2, 5], "before the oldest owed event; the newest event when nothing is owed");

    // The third out of order, then the rest: the cursor waits for the oldest, then passes them all.
    store.record_outcomes(succeeded(&all, &owed_all[3..])).await.unwrap();
    let (moved, client) = cursors(client).await;
    assert_eq!(moved, vec![2, 5], "the third is still owed");
    store.record_outcomes(succeeded(&all, &owed_all[2..3])).await.unwrap();
    let (moved, _) = cursors(client).await;
    assert_eq!(moved, vec![5, 5]);
    assert!(store.due_deliveries(&all, 0, i64::MAX, 10).await.unwrap().is_empty(), "nothing owed is skipped");
}

/// What the contacts' search was at schema 4: a trigram index on a SQL function of the fields.
const SEARCH_AT_SCHEMA_4: &str = r#"
    DROP TABLE contact_search;
    CREATE FUNCTION contact_search_text(fields TEXT) RETURNS TEXT LANGUAGE SQL IMMUTABLE PARALLEL SAFE AS $$
        SELECT lower(concat_ws(' ', f ->> 'first_name', f ->> 'last_name', f ->> 'email', f ->> 'phone', f ->> 'mobile',
            NULLIF(regexp_replace(f ->> 'phone', '[^0-9]', '', 'g'), ''),
            NULLIF(regexp_replace(f ->> 'mobile', '[^0-9]', '', 'g'), '')))
        FROM (SELECT fields::jsonb AS f) AS record
    $$;
    CREATE INDEX contacts_search ON records USING gin (contact_search_text(fields) gin_trgm_ops) WHERE kind = 'contact';
    UPDATE schema_version SET version = 4;
"#;

async fn search_texts(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client.query("SELECT text FROM contact_search ORDER BY seq", &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

async fn found(store: &PgStore, text: &str) -> Vec<String> {
    let query = estate_crm_store::ContactQuery { search: Some(text.into()), ..Default::default() };
    let page = store.search_contacts(&admin(), query, PageRequest { limit: 10, cursor: None }).await.unwrap();
    page.items.iter().map(|r| r.id.clone()).collect()
}

/// The migration that replaced the trigram index makes each existing contact's search row with the
/// function new writes use: the rows are the same text byte for byte, where the old SQL function
/// differed (it repeated a phone that is digits only), and search finds old contacts as new ones.
#[tokio::test]
async fn the_search_migration_gives_existing_contacts_the_text_new_writes_give() {
    let Some(db) = TestDatabase::create().await else { return };
    migrate_postgres(&db.url).await.unwrap();
    let client = connect(&db.url).await;
    client.batch_execute(SEARCH_AT_SCHEMA_4).await.unwrap();
    let contacts = [
        json!({"first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com", "phone": "+44 (20) 7946-0001"}),
        json!({"first_name": "Bo", "mobile": "5551234567", "status": "VIP"}),
        json!({"first_name": "Émile", "last_name": "Zola"}),
    ];
    for (seq, fields) in (1001_i64..).zip(&contacts) {
        client
            .execute(
                "INSERT INTO records (seq, kind, created_by, created_at, updated_at, fields)
                 VALUES ($1, 'contact', 'usr_test', 0, 0, $2)",
                &[&seq, &fields.to_string()],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "INSERT INTO records (seq, kind, created_by, created_at, updated_at, fields)
             VALUES (1004, 'deal', 'usr_test', 0, 0, '{\"title\":\"Flat\"}')",
            &[],
        )
        .await
        .unwrap();
    let old_function: Vec<String> = client
        .query("SELECT contact_search_text(fields) FROM records WHERE kind = 'contact' ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();

    let versions = migrate_postgres(&db.url).await.unwrap();
    assert_eq!(versions.found, 4);
    let migrated = search_texts(&client).await;
    assert_eq!(migrated.len(), 3, "one row per contact, none for the deal: {migrated:?}");
    assert_eq!(migrated[0], "ada lovelace ada@example.com +44 (20) 7946-0001 442079460001");
    assert_eq!(old_function[1], "bo 5551234567 5551234567", "the old function repeated a phone of digits only");
    assert_eq!(migrated[1], "bo 5551234567");
    let gone = client
        .query_one(
            "SELECT to_regclass('contacts_search') IS NULL AND NOT EXISTS
                 (SELECT 1 FROM pg_proc WHERE proname = 'contact_search_text')",
            &[],
        )
        .await
        .unwrap();
    assert!(gone.get::<_, bool>(0), "the trigram index and its function are dropped");

    let store = open(&db).await;
    let ada = found(&store, "2079460001").await;
    assert_eq!(ada.len(), 1, "an old contact is found by its phone's digits: {ada:?}");
    assert_eq!(found(&store, "ÉMILE").await.len(), 1, "and by a word in another case");

    // The same contacts written anew (the old ones gone first, for their emails) get the same text.
    client.batch_execute("DELETE FROM records WHERE seq > 1000; DELETE FROM contact_search").await.unwrap();
    for fields in contacts {
        store.create_record(&admin(), RecordKind::Contact, fields).await.unwrap();
    }
    assert_eq!(search_texts(&client).await, migrated, "a migrated row is what a new write makes");
}

/// An import into PostgreSQL makes the search rows of the contacts it brings (they are not carried).
#[tokio::test]
async fn an_import_into_postgresql_makes_the_search_rows_of_its_contacts() {
    let (Some(from), Some(to)) = (TestDatabase::create().await, TestDatabase::create().await) else { return };
    let store = open(&from).await;
    let ada = json!({"first_name": "Ada", "email": "ada@example.com", "phone": "+44 (20) 7946-0001"});
    let ada = store.create_record(&admin(), RecordKind::Contact, ada).await.unwrap();
    let doomed = store.create_record(&admin(), RecordKind::Contact, json!({"first_name": "Ada Doomed"})).await.unwrap();
    store.delete_record(&admin(), RecordKind::Contact, &doomed.id).await.unwrap();
    store.create_record(&admin(), RecordKind::Deal, json!({"title": "Ada's flat"})).await.unwrap();
    drop(store);

    let file = tempfile::NamedTempFile::new().unwrap();
    estate_crm_store::export_postgres(&from.url, Box::new(file.reopen().unwrap())).await.unwrap();
    let input = std::io::BufReader::new(file.reopen().unwrap());
    estate_crm_store::import_postgres(&to.url, Box::new(input)).await.unwrap();

    let moved = open(&to).await;
    assert_eq!(found(&moved, "2079460001").await, std::slice::from_ref(&ada.id), "the phone's digits find her");
    assert_eq!(
        found(&moved, "ada").await,
        std::slice::from_ref(&ada.id),
        "the deleted contact and the deal are not found"
    );
    let client = connect(&to.url).await;
    assert_eq!(search_texts(&client).await, ["ada ada@example.com +44 (20) 7946-0001 442079460001"]);
}

/// A deleted contact's search row goes with it, alone or in bulk (a search would not show it, as its
/// record is gone, but the row would be read by every search after).
#[tokio::test]
async fn a_deleted_contact_leaves_no_search_row() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let rows = (0..4).map(|n| json!({"first_name": format!("C{n}")})).collect();
    let ids = store.bulk(&admin(), RecordKind::Contact, BulkOp::Create(rows)).await.unwrap();
    store.create_record(&admin(), RecordKind::Deal, json!({"title": "Flat"})).await.unwrap();
    let client = connect(&db.url).await;
    assert_eq!(search_texts(&client).await, ["c0", "c1", "c2", "c3"]);
    store.delete_record(&admin(), RecordKind::Contact, &ids[0]).await.unwrap();
    store.bulk(&admin(), RecordKind::Contact, BulkOp::Delete(ids[2..].to_vec())).await.unwrap();
    assert_eq!(search_texts(&client).await, ["c1"]);
}

/// Records, at each commit that wrote a row of `table`, the `synchronous_commit` it commits with: a
/// deferred constraint trigger fires inside `COMMIT`, after everything the transaction sent before it.
async fn log_commit_modes(client: &tokio_postgres::Client, table: &str) {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS commit_modes (at_table TEXT NOT NULL, mode TEXT NOT NULL);
             CREATE OR REPLACE FUNCTION log_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO commit_modes VALUES (TG_TABLE_NAME, current_setting('synchronous_commit'));
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER log_commit_mode AFTER INSERT OR UPDATE ON {table}
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION log_commit_mode();"
        ))
        .await
        .unwrap();
}

/// The `synchronous_commit` of each logged row's commit, by table, and the log emptied.
async fn commit_modes(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    let rows = client.query("DELETE FROM commit_modes RETURNING at_table, mode", &[]).await.unwrap();
    let mut modes: Vec<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    modes.sort();
    modes.dedup();
    modes
}

/// A commit that carries only attempts' outcomes does not wait for its WAL flush (a crash of the
/// database can only make those deliveries repeat); a create's commit does, and so does one that
/// carries outcomes beside a create.
#[tokio::test]
async fn outcomes_alone_commit_asynchronously_and_a_create_synchronously() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = open(&db).await;
    let all = endpoint(&store, EventFilter::All).await;
    let client = connect(&db.url).await;
    log_commit_modes(&client, "records").await;
    log_commit_modes(&client, "deliveries").await;
    for name in ["A", "B"] {
        store.create_record(&admin(), RecordKind::Contact, json!({"first_name": name})).await.unwrap();
    }
    assert_eq!(commit_modes(&client).await, vec![("records".to_owned(), "on".to_owned())]);

    let owed = store.due_deliveries(&all, 0, i64::MAX, 10).await.unwrap();
    assert_eq!(owed.len(), 2);
    store.record_outcomes(succeeded(&all, &owed[..1])).await.unwrap();
    assert_eq!(commit_modes(&client).await, vec![("deliveries".to_owned(), "off".to_owned())]);

    // Outcomes and a create sent together: however they are batched, a create's commit is synchronous.
    let actor = admin();
    let create = store.create_record(&actor, RecordKind::Contact, json!({"first_name": "C"}));
    let record = store.record_outcomes(succeeded(&all, &owed[1..]));
    let (created, recorded) = tokio::join!(create, record);
    created.unwrap();
    recorded.unwrap();
    let modes = commit_modes(&client).await;
    assert!(modes.contains(&("records".to_owned(), "on".to_owned())), "{modes:?}");
    assert!(!modes.contains(&("records".to_owned(), "off".to_owned())), "{modes:?}");
    let delivered: i64 = client.query_one("SELECT COUNT(*) FROM deliveries", &[]).await.unwrap().get(0);
    assert_eq!(delivered, 2, "both outcomes are recorded");
}

/// Takes whatever `store`'s change feed holds now, without waiting.
async fn drain_changes(store: &PgStore) {
    while tokio::time::timeout(std::time::Duration::ZERO, store.changes().next()).await.is_ok() {}
}

async fn contact(store: &PgStore, name: &str) {
    store.create_record(&admin(), RecordKind::Contact, json!({"first_name": name})).await.unwrap();
}

/// The events of `due`, by seq.
fn event_seqs(due: &[DueDelivery]) -> Vec<i64> {
    due.iter().map(|delivery| delivery.seq >> 20).collect()
}

/// A lane that keeps up with its own server's creates is answered from memory (`recent.rs`); a
/// change committed by another server, once this one hears of it, is read from the database: the
/// read it wakes finds it.
#[tokio::test]
async fn a_create_on_another_server_is_found_by_the_read_its_wake_up_brings() {
    let Some(db) = TestDatabase::create().await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    let all = endpoint(&b, EventFilter::All).await;
    contact(&b, "1").await;
    let first = b.due_deliveries(&all, 0, i64::MAX, 10).await.unwrap();
    assert_eq!(event_seqs(&first), vec![1]);
    b.record_outcomes(succeeded(&all, &first)).await.unwrap();
    contact(&b, "2").await;
    let second = b.due_deliveries(&all, first[0].seq, i64::MAX, 10).await.unwrap();
    assert_eq!(event_seqs(&second), vec![2]);
    b.record_outcomes(succeeded(&all, &second)).await.unwrap();
    assert!(b.due_deliveries(&all, second[0].seq, i64::MAX, 10).await.unwrap().is_empty());

    drain_changes(&b).await;
    contact(&a, "3").await;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !b.changes().next().await.endpoints.contains(&all) {}
    });
    heard.await.expect("b hears of a's create");
    let third = b.due_deliveries(&all, second[0].seq, i64::MAX, 10).await.unwrap();
    assert_eq!(event_seqs(&third), vec![3], "the read after the wake-up finds the other server's event");
}

/// Events another server committed are not skipped by this server's memory, whether or not their
/// wake-up has arrived yet: this server's next commit begins after them, so memory holds only what
/// follows (`recent.rs`'s unit tests take the case without a wake-up alone).
#[tokio::test]
async fn events_another_server_committed_are_not_skipped() {
    let Some(db) = TestDatabase::create().await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    contact(&a, "1").await;
    let all = endpoint(&b, EventFilter::All).await;
    contact(&b, "2").await;
    let first = b.due_deliveries(&all, 0, i64::MAX, 10).await.unwrap();
    assert_eq!(event_seqs(&first), vec![2], "event 1 predates the endpoint");
    b.record_outcomes(succeeded(&all, &first)).await.unwrap();
    contact(&a, "3").await;
    contact(&b, "4").await;
    let next = b.due_deliveries(&all, first[0].seq, i64::MAX, 10).await.unwrap();
    assert_eq!(event_seqs(&next), vec![3, 4], "event 3, committed by the other server, is owed too");
}

/// A server that read the active endpoints before another server made one wakes it with its own
/// creates once it has heard of it: its commits tell the other server, which holds the endpoint.
#[tokio::test]
async fn creates_on_one_server_wake_an_endpoint_made_on_another() {
    let Some(db) = TestDatabase::create().await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    contact(&a, "1").await; // a reads the active endpoints now: none.
    let all = endpoint(&b, EventFilter::All).await;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !a.changes().next().await.settings_changed {}
    });
    heard.await.expect("a hears of b's new endpoint");
    drain_changes(&b).await;
    contact(&a, "2").await;
    let woken = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !b.changes().next().await.endpoints.contains(&all) {}
    });
    woken.await.expect("a's create wakes the endpoint b made");
    let due = b.due_deliveries(&all, 0, i64::MAX, 10).await.unwrap();
    assert_eq!(event_seqs(&due), vec![2]);
}
