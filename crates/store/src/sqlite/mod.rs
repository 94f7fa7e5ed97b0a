//! The embedded store: SQLite in WAL mode, one writer thread with group commit, a small pool of
//! reader connections.

mod auth;
mod checkpoint;
mod contacts;
mod fanout;
mod hubspot;
mod migrations;
mod pipeline;
mod recent;
mod records;
mod transfer;
mod web;
mod webhooks;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use estate_crm_domain::{Record, RecordKind};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::*;
pub use transfer::{export_sqlite, import_sqlite};
use writer::{Writer, WriterState};

/// How many idle reader connections are kept open.
const IDLE_READERS: usize = 8;
/// How many bulk rows are prepared at a time: small enough that the writer starts soon after the
/// request does, large enough that handing runs over costs nothing worth measuring.
const PREPARE_RUN_ROWS: usize = 500;
/// How many prepared runs may wait for the writer (a bound on the memory a bulk request holds).
const PREPARED_RUNS_AHEAD: usize = 4;
/// How many bulk requests are prepared and written at once; others wait their turn. Each one holds a
/// blocking thread while its runs wait for the writer, so this keeps them far below the blocking
/// pool's size (which, reached, would leave a started writer job waiting for a preparer that cannot
/// start).
const BULK_AT_ONCE: usize = 4;

/// Where the database lives and what its payloads say.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The data directory; the database is `estate-crm.db` in it.
    pub data_dir: PathBuf,
    /// The `site_url` every payload carries.
    pub site_url: String,
}

/// Applies the migrations to the database in a data directory without opening a store
/// (`estate-crm migrate`). Fails if a server holds the directory.
pub fn migrate_sqlite(data_dir: &Path) -> Result<SchemaVersions, StoreError> {
    let _lock = lock_data_dir(data_dir)?;
    let mut conn = open_connection(&data_dir.join("estate-crm.db"), true)?;
    migrations::migrate(&mut conn)
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    readers: Readers,
    tag: String,
    feed: Arc<ChangeFeed>,
    /// Recent events, which answer most lane reads without the database (see `recent`).
    recent: Arc<recent::Recent>,
    imports: ImportGauge,
    bulk_slots: tokio::sync::Semaphore,
    preparer: crate::prepare::Preparer,
    /// Delivery rows per endpoint in event ranges that can no longer change (the 24-hour counts).
    row_counts: Arc<web::RowCounts>,
    /// Held for the store's life: one server per data directory.
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in the data directory, applies the migrations and
    /// starts the writer. Fails if another estate-crm holds the directory.
    pub fn open(config: &SqliteConfig) -> Result<SqliteStore, StoreError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let path = config.data_dir.join("estate-crm.db");
        let mut conn = open_connection(&path, true)?;
        migrations::migrate(&mut conn)?;
        let tag = database_tag(&conn)?;
        let feed = Arc::new(ChangeFeed::default());
        // The highest record seq ever handed out that anyone may have seen: the newest record's, or
        // a deleted one's (see `records::delete_one`).
        let last_seq: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM records), 0),
                        COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'records_seq'), 0))",
            [],
            |row| row.get(0),
        )?;
        let preparer = crate::prepare::Preparer {
            tag: tag.clone(),
            site_url: config.site_url.clone(),
            last_seq: Arc::new(AtomicI64::new(last_seq)),
        };
        let recent = Arc::new(recent::Recent::default());
        let state = WriterState {
            tag: tag.clone(),
            site_url: config.site_url.clone(),
            preparer: preparer.clone(),
            routes: None,
            recent: recent.clone(),
        };
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::WAL_LIMIT_PAGES)?;
        let checkpointer = checkpoint::Checkpointer::start(open_connection(&path, false)?)?;
        let writer = Writer::start(conn, state, feed.clone(), checkpointer);
        let readers = Readers { path, idle: Mutex::new(Vec::new()) };
        let inner = Inner {
            writer,
            readers,
            tag,
            feed,
            recent,
            imports: ImportGauge::default(),
            bulk_slots: tokio::sync::Semaphore::new(BULK_AT_ONCE),
            preparer,
            row_counts: Arc::default(),
            _lock: lock,
        };
        Ok(SqliteStore { inner: Arc::new(inner) })
    }

    /// The database file's path.
    pub fn database_path(data_dir: &Path) -> PathBuf {
        data_dir.join("estate-crm.db")
    }

    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.readers.with(|conn| work(conn, &inner.tag)))
            .await
            .map_err(|err| StoreError::internal("reading", err))?
    }
}

fn lock_data_dir(dir: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|err| StoreError::internal(format!("creating the data directory {}", dir.display()), err))?;
    let path = dir.join("estate-crm.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| StoreError::internal(format!("opening {}", path.display()), err))?;
    file.try_lock().map_err(|_| {
        StoreError::internal(
            format!("locking the data directory {}", dir.display()),
            "another estate-crm is using it; stop that one or choose another --data-dir",
        )
    })?;
    Ok(file)
}

fn open_connection(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|err| StoreError::internal(format!("opening the database {}", path.display()), err))?;
    // WAL lets readers work while the writer commits; synchronous=FULL makes every commit durable
    // before a request is answered (group commit keeps that affordable).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;",
    )?;
    // Without the planner's stability guarantee, SQLite 3.50 codes a bound `LIMIT ?` as a constant
    // and marks the statement expired whenever that parameter is bound again, so every run of a
    // cached statement with a LIMIT (each lane read, each cursor move after outcomes) was parsed
    // and planned afresh: 6% of the writer's time in the fan-out trace. With it, bound values never
    // change a plan; the plans here do not depend on them (no ANALYZE statistics, and the one
    // `LIKE ?` has a leading `%`, which no index serves).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // The writer walks every index on every change and keeps a larger cache; readers touch little.
    conn.pragma_update(None, "cache_size", if create { -32_000 } else { -4_000 })?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A random tag made once per database, part of every id (see `ids`).
fn database_tag(conn: &Connection) -> Result<String, StoreError> {
    let existing: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'tag'", [], |row| row.get(0)).ok();
    if let Some(tag) = existing {
        return Ok(tag);
    }
    let random = uuid::Uuid::new_v4().as_u128();
    let tag: String =
        (0..4).map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz"[((random >> (i * 5)) % 26) as usize])).collect();
    conn.execute("INSERT INTO meta (key, value) VALUES ('tag', ?1)", [&tag])?;
    Ok(tag)
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(&self, work: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_connection(&self.path, false)?,
        };
        let result = work(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_record(&self, actor: &Actor, kind: RecordKind, input: Value) -> Result<Record, StoreError> {
        let actor = actor.clone();
        if kind == RecordKind::Enquiry {
            return self.inner.writer.run(move |ctx| records::create(ctx, &actor, kind, &input)).await;
        }
        let prepared = self.inner.preparer.prepare(&actor, kind, &input).map_err(StoreError::invalid)?;
        self.inner.writer.run(move |ctx| records::insert_prepared(ctx, &actor, prepared)).await
    }

    async fn update_record(
        &self,
        actor: &Actor,
        kind: RecordKind,
        id: &str,
        patch: Value,
    ) -> Result<Record, StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.inner.writer.run(move |ctx| records::update(ctx, &actor, kind, &id, &patch)).await
    }

    async fn delete_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<(), StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.inner.writer.run(move |ctx| records::delete(ctx, &actor, kind, &id)).await
    }

    async fn bulk(&self, actor: &Actor, kind: RecordKind, op: BulkOp) -> Result<Vec<String>, StoreError> {
        let actor = actor.clone();
        let _slot =
            self.inner.bulk_slots.acquire().await.map_err(|err| StoreError::internal("waiting to import", err))?;
        let _importing = self.inner.imports.start();
        match op {
            BulkOp::Create(rows) if kind != RecordKind::Enquiry => {
                // Validating and encoding thousands of rows is CPU work: it runs on a blocking thread,
                // in runs that the writer inserts as they come, so that preparing and writing overlap.
                let expected = rows.len();
                let (runs, prepared) = std::sync::mpsc::sync_channel(PREPARED_RUNS_AHEAD);
                let preparer = self.inner.preparer.clone();
                let rows_actor = actor.clone();
                tokio::task::spawn_blocking(move || {
                    for (n, run) in rows.chunks(PREPARE_RUN_ROWS).enumerate() {
                        let run = preparer.prepare_rows(&rows_actor, kind, run, n * PREPARE_RUN_ROWS);
                        if runs.send(run).is_err() {
                            return; // The writer stopped reading: the request failed.
                        }
                    }
                });
                self.inner.writer.run(move |ctx| records::insert_prepared_rows(ctx, &actor, prepared, expected)).await
            }
            op => self.inner.writer.run(move |ctx| records::bulk(ctx, &actor, kind, op)).await,
        }
    }

    async fn get_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<Record, StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.read(move |conn, tag| records::get_visible(conn, tag, &actor, kind, &id)).await
    }

    async fn list_records(
        &self,
        actor: &Actor,
        kind: RecordKind,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError> {
        let actor = actor.clone();
        self.read(move |conn, tag| records::list(conn, tag, &actor, kind, &page)).await
    }

    async fn list_events(&self, filter: EventFilterQuery, page: PageRequest) -> Result<Page<StoredEvent>, StoreError> {
        self.read(move |conn, tag| records::list_events(conn, tag, &filter, &page)).await
    }

    async fn find_token(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        let hash = token_hash.to_owned();
        self.read(move |conn, tag| auth::find_token(conn, tag, &hash)).await
    }

    async fn set_admin_token(&self, token_hash: &str, only_if_missing: bool) -> Result<bool, StoreError> {
        let hash = token_hash.to_owned();
        self.inner.writer.run(move |ctx| auth::set_admin_token(ctx, &hash, only_if_missing)).await
    }

    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.inner.writer.run(move |ctx| auth::create_user(ctx, &new)).await
    }

    async fn create_token(&self, user_id: &str, name: &str, token_hash: &str) -> Result<TokenInfo, StoreError> {
        let (user_id, name, hash) = (user_id.to_owned(), name.to_owned(), token_hash.to_owned());
        self.inner.writer.run(move |ctx| auth::create_token(ctx, &user_id, &name, &hash)).await
    }

    async fn delete_token(&self, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
        let (id, owner) = (id.to_owned(), owner.map(str::to_owned));
        self.inner.writer.run(move |ctx| auth::delete_token(ctx, &id, owner.as_deref())).await
    }

    async fn list_endpoints(&self, page: PageRequest) -> Result<Page<Endpoint>, StoreError> {
        self.read(move |conn, tag| webhooks::list_endpoints(conn, tag, &page)).await
    }

    async fn get_endpoint(&self, id: &str) -> Result<Endpoint, StoreError> {
        let id = id.to_owned();
        self.read(move |conn, tag| webhooks::get_endpoint(conn, tag, &id)).await
    }

    async fn primary_endpoint(&self) -> Result<Option<Endpoint>, StoreError> {
        self.read(webhooks::primary_endpoint).await
    }

    async fn create_endpoint(&self, spec: EndpointSpec) -> Result<Endpoint, StoreError> {
        self.inner.writer.run(move |ctx| webhooks::create_endpoint(ctx, &spec, false)).await
    }

    async fn update_endpoint(&self, id: &str, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
        let id = id.to_owned();
        self.inner.writer.run(move |ctx| webhooks::update_endpoint(ctx, &id, patch)).await
    }

    async fn put_primary_endpoint(&self, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
        self.inner.writer.run(move |ctx| webhooks::put_primary_endpoint(ctx, patch)).await
    }

    async fn delete_endpoint(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.inner.writer.run(move |ctx| webhooks::delete_endpoint(ctx, &id)).await
    }

    async fn list_deliveries(&self, filter: DeliveryFilter, page: PageRequest) -> Result<Page<Delivery>, StoreError> {
        self.read(move |conn, tag| {
            fanout::in_snapshot(conn, |conn| webhooks::list_deliveries(conn, tag, &filter, &page))
        })
        .await
    }

    async fn get_delivery(&self, id: &str) -> Result<DeliveryDetail, StoreError> {
        let id = id.to_owned();
        self.read(move |conn, tag| fanout::in_snapshot(conn, |conn| webhooks::get_delivery(conn, tag, &id))).await
    }

    async fn retry_delivery(&self, id: &str, now_ms: i64) -> Result<String, StoreError> {
        let id = id.to_owned();
        self.inner.writer.run(move |ctx| webhooks::retry_delivery(ctx, &id, now_ms)).await
    }

    async fn retry_failed(&self, endpoint_id: &str, now_ms: i64) -> Result<u64, StoreError> {
        let id = endpoint_id.to_owned();
        self.inner.writer.run(move |ctx| webhooks::retry_failed(ctx, &id, now_ms)).await
    }

    async fn begin_test_delivery(&self, endpoint_id: Option<&str>, body: Vec<u8>) -> Result<TestDelivery, StoreError> {
        let id = endpoint_id.map(str::to_owned);
        self.inner.writer.run(move |ctx| webhooks::begin_test_delivery(ctx, id.as_deref(), &body)).await
    }

    async fn due_deliveries(
        &self,
        endpoint_id: &str,
        after_seq: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let endpoint = webhooks::endpoint_seq(&self.inner.tag, endpoint_id)?;
        // Most reads of a lane that keeps up are answered from memory, on this thread: no hand-off
        // to the blocking pool and no read of pages SQLite dropped at the last commit.
        if let Some(due) = self.inner.recent.due_after(&self.inner.tag, endpoint, after_seq, limit) {
            return Ok(due);
        }
        let id = endpoint_id.to_owned();
        let recent = self.inner.recent.clone();
        self.read(move |conn, tag| {
            let epoch = recent.epoch();
            let due = webhooks::due_deliveries(conn, tag, &id, after_seq, now_ms, limit)?;
            if !recent.has_view(endpoint)
                && let Some(view) = webhooks::lane_view(conn, endpoint)?
            {
                recent.keep_view(endpoint, view, epoch);
            }
            Ok(due)
        })
        .await
    }

    async fn next_due_after(&self, endpoint_id: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let id = endpoint_id.to_owned();
        self.read(move |conn, tag| webhooks::next_due_after(conn, tag, &id, now_ms)).await
    }

    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        // Outcomes need no sync of their own: one lost in a crash is attempted again (writer.rs).
        self.inner
            .writer
            .run_with(writer::Durability::Deferred, move |ctx| webhooks::record_outcomes(ctx, &outcomes))
            .await
    }

    async fn pending_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn, tag| fanout::in_snapshot(conn, |conn| webhooks::pending_counts(conn, tag))).await
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.inner.writer.run(move |ctx| webhooks::purge(ctx, before_ms)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn, _| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn rotate_secret(
        &self,
        endpoint_id: &str,
        secret: String,
        grace: std::time::Duration,
    ) -> Result<Rotation, StoreError> {
        let id = endpoint_id.to_owned();
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        self.inner.writer.run(move |ctx| webhooks::rotate_secret(ctx, &id, secret, grace_ms)).await
    }

    fn changes(&self) -> &ChangeFeed {
        &self.inner.feed
    }

    fn imports(&self) -> &ImportGauge {
        &self.inner.imports
    }

    async fn create_first_admin(&self, new: NewUser) -> Result<Option<User>, StoreError> {
        self.inner.writer.run(move |ctx| web::create_first_admin(ctx, &new)).await
    }

    async fn any_password_set(&self) -> Result<bool, StoreError> {
        self.read(|conn, _| web::any_password_set(conn)).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserCredentials>, StoreError> {
        let email = email.trim().to_lowercase();
        self.read(move |conn, tag| web::user_where(conn, tag, "email = ?1", rusqlite::types::Value::from(email))).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserCredentials>, StoreError> {
        let Some(seq) = web::user_seq(&self.inner.tag, id) else {
            return Ok(None);
        };
        self.read(move |conn, tag| web::user_where(conn, tag, "seq = ?1", rusqlite::types::Value::from(seq))).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(web::list_users).await
    }

    async fn set_password(&self, user_id: &str, password_hash: &str, keep: Option<&str>) -> Result<(), StoreError> {
        let (id, hash, keep) = (user_id.to_owned(), password_hash.to_owned(), keep.map(str::to_owned));
        self.inner.writer.run(move |ctx| web::set_password(ctx, &id, &hash, keep.as_deref())).await
    }

    async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let id = user_id.to_owned();
        self.read(move |conn, tag| web::list_tokens(conn, tag, &id)).await
    }

    async fn create_session(
        &self,
        token_hash: &str,
        user_id: &str,
        now_ms: i64,
        limits: SessionLimits,
    ) -> Result<(), StoreError> {
        let (hash, id) = (token_hash.to_owned(), user_id.to_owned());
        self.inner.writer.run(move |ctx| web::create_session(ctx, &hash, &id, now_ms, limits)).await
    }

    async fn find_session(
        &self,
        token_hash: &str,
        now_ms: i64,
        limits: SessionLimits,
    ) -> Result<Option<Session>, StoreError> {
        let hash = token_hash.to_owned();
        self.read(move |conn, tag| web::find_session(conn, tag, &hash, now_ms, limits)).await
    }

    async fn touch_session(&self, token_hash: &str, now_ms: i64) -> Result<(), StoreError> {
        let hash = token_hash.to_owned();
        self.inner.writer.run(move |ctx| web::touch_session(ctx, &hash, now_ms)).await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let hash = token_hash.to_owned();
        self.inner.writer.run(move |ctx| web::delete_session(ctx, &hash)).await
    }

    async fn endpoint_health(&self, since_ms: i64) -> Result<Vec<EndpointHealth>, StoreError> {
        let counts = self.inner.row_counts.clone();
        self.read(move |conn, tag| fanout::in_snapshot(conn, |conn| web::endpoint_health(conn, tag, since_ms, &counts)))
            .await
    }

    // --- hubspot ---
    async fn hubspot_settings(&self) -> Result<Option<HubspotSettings>, StoreError> {
        self.read(|conn, _| hubspot::settings(conn)).await
    }

    async fn put_hubspot_settings(&self, patch: HubspotPatch) -> Result<HubspotSettings, StoreError> {
        self.inner.writer.run(move |ctx| hubspot::put_settings(ctx, patch)).await
    }

    async fn pause_hubspot(&self, version: i64, reason: String) -> Result<(), StoreError> {
        self.inner.writer.run(move |ctx| hubspot::pause(ctx, version, &reason)).await
    }

    async fn start_hubspot_backfill(&self) -> Result<HubspotSettings, StoreError> {
        self.inner.writer.run(hubspot::start_backfill).await
    }

    async fn hubspot_events_after(&self, after_seq: i64, limit: usize) -> Result<Vec<SyncEvent>, StoreError> {
        self.read(move |conn, _| hubspot::events_after(conn, after_seq, limit)).await
    }

    async fn hubspot_mappings(
        &self,
        kind: RecordKind,
        record_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, HubspotMapping>, StoreError> {
        self.read(move |conn, tag| hubspot::mappings(conn, tag, kind, &record_ids)).await
    }

    async fn hubspot_sweep_deals(&self, after_seq: i64, limit: usize) -> Result<Vec<SweptDeal>, StoreError> {
        self.read(move |conn, tag| hubspot::sweep_deals(conn, tag, after_seq, limit)).await
    }

    async fn commit_hubspot(&self, commit: HubspotCommit) -> Result<(), StoreError> {
        self.inner.writer.run(move |ctx| hubspot::commit(ctx, &commit)).await
    }

    async fn hubspot_log(
        &self,
        record_id: Option<String>,
        page: PageRequest,
    ) -> Result<Page<SyncLogEntry>, StoreError> {
        self.read(move |conn, _| hubspot::log(conn, record_id.as_deref(), &page)).await
    }

    async fn hubspot_counts(&self) -> Result<HubspotCounts, StoreError> {
        self.read(|conn, _| hubspot::counts(conn)).await
    }

    async fn find_records(
        &self,
        actor: &Actor,
        kind: RecordKind,
        query: RecordQuery,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError> {
        let actor = actor.clone();
        self.read(move |conn, tag| pipeline::find(conn, tag, &actor, kind, &query, &page)).await
    }

    async fn due_tasks(
        &self,
        actor: &Actor,
        scope: Scope,
        offset: usize,
        limit: usize,
    ) -> Result<DueTasks, StoreError> {
        let actor = actor.clone();
        self.read(move |conn, tag| pipeline::due_tasks(conn, tag, &actor, scope, offset, limit)).await
    }

    async fn deal_stage_totals(&self, actor: &Actor, scope: Scope) -> Result<Vec<StageTotal>, StoreError> {
        let actor = actor.clone();
        self.read(move |conn, _| pipeline::stage_totals(conn, &actor, scope)).await
    }

    async fn records_by_ids(
        &self,
        actor: &Actor,
        kind: RecordKind,
        ids: Vec<String>,
    ) -> Result<Vec<Record>, StoreError> {
        let actor = actor.clone();
        self.read(move |conn, tag| pipeline::by_ids(conn, tag, &actor, kind, &ids)).await
    }

    async fn leads_from_enquiries(
        &self,
        enquiry_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.read(move |conn, tag| pipeline::leads_from_enquiries(conn, tag, &enquiry_ids)).await
    }

    // --- web app: contacts ---
    async fn search_contacts(
        &self,
        actor: &Actor,
        query: ContactQuery,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError> {
        let actor = actor.clone();
        self.read(move |conn, tag| contacts::search(conn, tag, &actor, &query, &page)).await
    }

    async fn records_of_contact(
        &self,
        actor: &Actor,
        kind: RecordKind,
        contact_id: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let (actor, contact_id) = (actor.clone(), contact_id.to_owned());
        self.read(move |conn, tag| contacts::records_of_contact(conn, tag, &actor, kind, &contact_id, limit)).await
    }

    async fn record_timeline(
        &self,
        actor: &Actor,
        kind: RecordKind,
        id: &str,
        limit: usize,
    ) -> Result<Vec<TimelineEvent>, StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.read(move |conn, tag| {
            fanout::in_snapshot(conn, |conn| contacts::timeline(conn, tag, &actor, kind, &id, limit))
        })
        .await
    }

    // --- cluster ---

    fn leases(&self) -> &Leases {
        // One server per data directory (its lock file): it holds everything, always.
        static EVERYTHING: std::sync::OnceLock<Leases> = std::sync::OnceLock::new();
        EVERYTHING.get_or_init(Leases::everything)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached statement with a bound LIMIT is run, not parsed again, each time it is rebound.
    #[test]
    fn a_rebound_limit_does_not_make_sqlite_prepare_the_statement_again() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db"), true).unwrap();
        assert!(conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG).unwrap());
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3);").unwrap();
        let sql = "SELECT n FROM t ORDER BY n LIMIT ?1";
        let mut counts = Vec::new();
        for limit in [1_i64, 2, 3] {
            let mut statement = conn.prepare_cached(sql).unwrap();
            counts.push(statement.query_map([limit], |row| row.get::<_, i64>(0)).unwrap().count());
            // SQLITE_STMTSTATUS_REPREPARE: how often SQLite compiled it again since it was made.
            assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0, "limit {limit}");
        }
        assert_eq!(counts, [1, 2, 3]);
    }

    /// A first attempt's row is written as it is, not first copied into a temporary table: that
    /// copy (and the statement journal that came with it) cost the writer more than the row.
    #[test]
    fn a_first_attempt_is_written_without_a_temporary_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("t.db"), true).unwrap();
        migrations::migrate(&mut conn).unwrap();
        let mut explain = conn.prepare(&format!("EXPLAIN {}", webhooks::FIRST_ATTEMPT_INSERT)).unwrap();
        let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
        let opcodes: Vec<String> = explain
            .query_map(rusqlite::params_from_iter(nulls), |row| row.get::<_, String>(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(opcodes.iter().any(|op| op == "Insert"), "{opcodes:?}");
        assert!(!opcodes.iter().any(|op| op == "OpenEphemeral"), "{opcodes:?}");
    }
}
