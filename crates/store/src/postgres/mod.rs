//! The shared store: PostgreSQL, for several servers on one database (docs/POSTGRES.md).
//!
//! It keeps the SQLite store's semantics, and its shape: one writer task per server doing group
//! commit on a connection of its own (`writer.rs`), readers on a bounded pool of connections with
//! their prepared statements cached per connection (deadpool-postgres), and the same database-free
//! preparation of records (`crate::prepare`).

mod auth;
pub(crate) mod migrations;
mod records;
mod webhooks;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use estate_crm_domain::{Record, RecordKind};
use serde_json::Value;
use tokio_postgres::NoTls;

use crate::prepare::Preparer;
use crate::*;
use writer::{Writer, WriterState};

pub use migrations::SchemaVersions;

/// How long a request waits for a free connection before it is answered with an error.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long making a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many bulk requests are prepared and written at once; others wait their turn.
const BULK_AT_ONCE: usize = 4;
/// How many bulk rows are prepared at a time, and how many runs may wait for the writer.
const PREPARE_RUN_ROWS: usize = 500;
const PREPARED_RUNS_AHEAD: usize = 4;

/// Which database, how many connections, and what payloads say.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// A `postgres://` URL.
    pub url: String,
    /// The most connections readers hold at once (the writer has one more of its own).
    pub pool_size: usize,
    /// The `site_url` every payload carries.
    pub site_url: String,
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    readers: Pool,
    writer: Writer,
    tag: String,
    feed: Arc<ChangeFeed>,
    imports: ImportGauge,
    bulk_slots: tokio::sync::Semaphore,
    preparer: Preparer,
    seqs: Arc<records::RecordSeqs>,
}

impl PgStore {
    /// Connects, applies the migrations (under their advisory lock) and starts the writer. Fails
    /// with a one-line reason when the database cannot be reached or is newer than this binary.
    pub async fn open(config: &PgConfig) -> Result<PgStore, StoreError> {
        let readers = pool(&config.url, config.pool_size.max(1))?;
        let writer_pool = pool(&config.url, 1)?;
        {
            let mut client = writer_pool.get().await.map_err(unreachable)?;
            migrations::migrate(&mut client).await?;
        }
        let tag = database_tag(&readers).await?;
        let feed = Arc::new(ChangeFeed::default());
        let seqs = Arc::new(records::RecordSeqs::default());
        let state =
            WriterState { tag: tag.clone(), site_url: config.site_url.clone(), seqs: seqs.clone(), routes: None };
        let writer = Writer::start(writer_pool, state, feed.clone()).await?;
        let preparer = Preparer {
            tag: tag.clone(),
            site_url: config.site_url.clone(),
            // Unused: seqs come from `seqs`, shared by every server on the database.
            last_seq: Arc::default(),
        };
        let inner = Inner {
            readers,
            writer,
            tag,
            feed,
            imports: ImportGauge::default(),
            bulk_slots: tokio::sync::Semaphore::new(BULK_AT_ONCE),
            preparer,
            seqs,
        };
        Ok(PgStore { inner: Arc::new(inner) })
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.inner.readers.get().await?)
    }
}

/// Applies the migrations without opening a store (`estate-crm migrate`).
pub async fn migrate_postgres(url: &str) -> Result<SchemaVersions, StoreError> {
    let pool = pool(url, 1)?;
    let mut client = pool.get().await.map_err(unreachable)?;
    migrations::migrate(&mut client).await
}

fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|err| StoreError::internal("reading the database URL", err))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    if config.get_application_name().is_none() {
        config.application_name("estate-crm");
    }
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|err| StoreError::internal("making the connection pool", err))
}

/// The first connection's failure, said as what it means at start.
fn unreachable(err: deadpool_postgres::PoolError) -> StoreError {
    StoreError::internal("reaching the database", err)
}

/// A random tag made once per database, part of every id (see `ids`). Two servers starting at once
/// on a new database agree on one: the first insert wins and both read it back.
async fn database_tag(pool: &Pool) -> Result<String, StoreError> {
    let client = pool.get().await?;
    let random = uuid::Uuid::new_v4().as_u128();
    let tag: String =
        (0..4).map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz"[((random >> (i * 5)) % 26) as usize])).collect();
    client.execute("INSERT INTO meta (key, value) VALUES ('tag', $1) ON CONFLICT (key) DO NOTHING", &[&tag]).await?;
    Ok(client.query_one("SELECT value FROM meta WHERE key = 'tag'", &[]).await?.get(0))
}

impl PgStore {
    // --- records ---

    /// See [`Store::create_record`].
    pub async fn create_record(&self, actor: &Actor, kind: RecordKind, input: Value) -> Result<Record, StoreError> {
        let actor = actor.clone();
        if kind == RecordKind::Enquiry {
            return self
                .inner
                .writer
                .run(move |ctx| Box::pin(async move { records::create(ctx, &actor, kind, &input).await }))
                .await;
        }
        let seq = self.inner.seqs.take(&*self.reader().await?, 1).await?[0];
        let prepared = self.inner.preparer.prepare_numbered(seq, &actor, kind, &input).map_err(StoreError::invalid)?;
        self.inner
            .writer
            .run(move |ctx| Box::pin(async move { records::insert_prepared(ctx, &actor, prepared).await }))
            .await
    }

    /// See [`Store::update_record`].
    pub async fn update_record(
        &self,
        actor: &Actor,
        kind: RecordKind,
        id: &str,
        patch: Value,
    ) -> Result<Record, StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.inner
            .writer
            .run(move |ctx| Box::pin(async move { records::update(ctx, &actor, kind, &id, &patch).await }))
            .await
    }

    /// See [`Store::delete_record`].
    pub async fn delete_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<(), StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.inner.writer.run(move |ctx| Box::pin(async move { records::delete(ctx, &actor, kind, &id).await })).await
    }

    /// See [`Store::bulk`].
    pub async fn bulk(&self, actor: &Actor, kind: RecordKind, op: BulkOp) -> Result<Vec<String>, StoreError> {
        let actor = actor.clone();
        let _slot =
            self.inner.bulk_slots.acquire().await.map_err(|err| StoreError::internal("waiting to import", err))?;
        let _importing = self.inner.imports.start();
        match op {
            BulkOp::Create(rows) if kind != RecordKind::Enquiry => {
                // Validating and encoding thousands of rows is CPU work: it runs on a blocking thread,
                // in runs that the writer inserts as they come, so that preparing and writing overlap.
                let expected = rows.len();
                let seqs = self.inner.seqs.take(&*self.reader().await?, expected).await?;
                let (runs, prepared) = tokio::sync::mpsc::channel(PREPARED_RUNS_AHEAD);
                let preparer = self.inner.preparer.clone();
                let rows_actor = actor.clone();
                tokio::task::spawn_blocking(move || {
                    for (n, (run, seqs)) in rows.chunks(PREPARE_RUN_ROWS).zip(seqs.chunks(PREPARE_RUN_ROWS)).enumerate()
                    {
                        let run = preparer.prepare_numbered_rows(seqs, &rows_actor, kind, run, n * PREPARE_RUN_ROWS);
                        if runs.blocking_send(run).is_err() {
                            return; // The writer stopped reading: the request failed.
                        }
                    }
                });
                self.inner
                    .writer
                    .run(move |ctx| {
                        Box::pin(async move { records::insert_prepared_rows(ctx, &actor, prepared, expected).await })
                    })
                    .await
            }
            op => {
                self.inner
                    .writer
                    .run(move |ctx| Box::pin(async move { records::bulk(ctx, &actor, kind, op).await }))
                    .await
            }
        }
    }

    /// See [`Store::get_record`].
    pub async fn get_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<Record, StoreError> {
        records::get_visible(&*self.reader().await?, &self.inner.tag, actor, kind, id).await
    }

    /// See [`Store::list_records`].
    pub async fn list_records(
        &self,
        actor: &Actor,
        kind: RecordKind,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError> {
        records::list(&*self.reader().await?, &self.inner.tag, actor, kind, &page).await
    }

    /// See [`Store::list_events`].
    pub async fn list_events(
        &self,
        filter: EventFilterQuery,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, StoreError> {
        records::list_events(&*self.reader().await?, &self.inner.tag, &filter, &page).await
    }

    // --- users and tokens ---

    /// See [`Store::find_token`].
    pub async fn find_token(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        auth::find_token(&*self.reader().await?, &self.inner.tag, token_hash).await
    }

    /// See [`Store::set_admin_token`].
    pub async fn set_admin_token(&self, token_hash: &str, only_if_missing: bool) -> Result<bool, StoreError> {
        let hash = token_hash.to_owned();
        self.inner
            .writer
            .run(move |ctx| Box::pin(async move { auth::set_admin_token(ctx, &hash, only_if_missing).await }))
            .await
    }

    /// See [`Store::create_user`].
    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.inner.writer.run(move |ctx| Box::pin(async move { auth::create_user(ctx, &new).await })).await
    }

    /// See [`Store::create_token`].
    pub async fn create_token(&self, user_id: &str, name: &str, token_hash: &str) -> Result<TokenInfo, StoreError> {
        let (user_id, name, hash) = (user_id.to_owned(), name.to_owned(), token_hash.to_owned());
        self.inner
            .writer
            .run(move |ctx| Box::pin(async move { auth::create_token(ctx, &user_id, &name, &hash).await }))
            .await
    }

    /// See [`Store::delete_token`].
    pub async fn delete_token(&self, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
        let (id, owner) = (id.to_owned(), owner.map(str::to_owned));
        self.inner
            .writer
            .run(move |ctx| Box::pin(async move { auth::delete_token(ctx, &id, owner.as_deref()).await }))
            .await
    }

    /// See [`Store::ping`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.reader().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// See [`Store::changes`].
    pub fn changes(&self) -> &ChangeFeed {
        &self.inner.feed
    }

    /// See [`Store::imports`].
    pub fn imports(&self) -> &ImportGauge {
        &self.inner.imports
    }
}
