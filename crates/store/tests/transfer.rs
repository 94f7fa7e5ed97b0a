//! Export and import at the store's level: an export read from a SQLite store that is open and
//! writing, imported into a new data directory, answers contact searches there (the search rows
//! are rebuilt from the imported contacts, not carried) and numbers new records past the old ones.

mod support;

use estate_crm_domain::RecordKind;
use estate_crm_store::{
    Actor, ContactQuery, PageRequest, Role, SourceStore, SqliteConfig, SqliteStore, Store, export_sqlite, import_sqlite,
};
use serde_json::json;

const SITE: &str = "http://127.0.0.1:8080";

fn admin() -> Actor {
    Actor { user_id: "usr_admin".into(), role: Role::Admin }
}

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(&SqliteConfig { data_dir: dir.to_owned(), site_url: SITE.into() }).unwrap()
}

async fn found(store: &SqliteStore, text: &str) -> Vec<String> {
    let query = ContactQuery { search: Some(text.into()), ..Default::default() };
    let page = store.search_contacts(&admin(), query, PageRequest { limit: 10, cursor: None }).await.unwrap();
    page.items.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn an_export_of_an_open_store_imports_with_its_search_rows_and_counters() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open(from.path());
    let ada = store
        .create_record(&admin(), RecordKind::Contact, json!({"first_name": "Ada", "phone": "+44 (20) 7946-0001"}))
        .await
        .unwrap();
    store.create_record(&admin(), RecordKind::Deal, json!({"title": "Elm St"})).await.unwrap();
    let doomed = store.create_record(&admin(), RecordKind::Contact, json!({"first_name": "Doomed"})).await.unwrap();
    store.delete_record(&admin(), RecordKind::Contact, &doomed.id).await.unwrap();

    // The store stays open (as a serving server's would) while the export reads its snapshot.
    let mut stream = Vec::new();
    let exported = export_sqlite(from.path(), &mut stream).unwrap();
    assert_eq!(exported.source, SourceStore::Sqlite);
    assert_eq!(exported.rows.iter().find(|(table, _)| *table == "records"), Some(&("records", 2)));
    drop(store);

    let imported = import_sqlite(to.path(), stream.as_slice()).unwrap();
    assert_eq!(imported, exported, "what was read is what was written");
    let moved = open(to.path());
    assert_eq!(found(&moved, "2079460001").await, [ada.id.as_str()], "the phone's digits find her");
    assert_eq!(found(&moved, "ada").await, [ada.id.as_str()]);
    let newcomer = moved.create_record(&admin(), RecordKind::Contact, json!({"first_name": "Newcomer"})).await.unwrap();
    assert_eq!(found(&moved, "newcomer").await, [newcomer.id.as_str()]);
    assert!(newcomer.id != doomed.id && newcomer.id != ada.id, "{} is new", newcomer.id);
    assert_eq!(&newcomer.id[..8], &ada.id[..8], "the same tag: con_ and four letters");
}
