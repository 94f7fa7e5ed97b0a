//! The same store test on both stores: SQLite in a temporary directory, PostgreSQL in a fresh
//! database (see `pg.rs`). `both_stores!(name, ...)` makes `name::sqlite` and `name::postgres` of
//! each `async fn name(store: TestStore)`.

#![allow(dead_code)] // Each test binary uses a part.

use std::ops::Deref;
use std::sync::Arc;

use estate_crm_store::{PgConfig, PgStore, SqliteConfig, SqliteStore, Store};

use super::pg::TestDatabase;

const SITE: &str = "http://127.0.0.1:8080";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A store for one test, with what it lives in (fields drop in order: the store before its database).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub kind: Kind,
    _dir: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// Opens a fresh store of this kind; `None` only when the PostgreSQL variants are turned off.
pub async fn open(kind: Kind) -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let (store, database): (Arc<dyn Store>, _) = match kind {
        Kind::Sqlite => {
            let config = SqliteConfig { data_dir: dir.path().to_owned(), site_url: SITE.into() };
            (Arc::new(SqliteStore::open(&config).unwrap()), None)
        }
        Kind::Postgres => {
            let database = TestDatabase::create().await?;
            let config = PgConfig { url: database.url.clone(), pool_size: 4, site_url: SITE.into() };
            (Arc::new(PgStore::open(&config).await.unwrap()), Some(database))
        }
    };
    Some(TestStore { store, kind, _dir: dir, _database: database })
}

/// Runs each named `async fn name(store: TestStore)` on both stores.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let store = $crate::support::stores::open($crate::support::stores::Kind::Sqlite).await;
                    super::$name(store.expect("SQLite always opens")).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(store) = $crate::support::stores::open($crate::support::stores::Kind::Postgres).await {
                        super::$name(store).await;
                    }
                }
            }
        )*
    };
}
