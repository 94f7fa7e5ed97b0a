//! The shared store: PostgreSQL, for several servers on one database (docs/POSTGRES.md).
//!
//! It keeps the SQLite store's semantics, and its shape: one writer task per server doing group
//! commit on a connection of its own (`writer.rs`), readers on a bounded pool of connections with
//! their prepared statements cached per connection (deadpool-postgres), and the same database-free
//! preparation of records (`crate::prepare`).

mod auth;
mod availability;
mod cluster;
mod contacts;
mod fanout;
mod hubspot;
pub(crate) mod migrations;
mod pipeline;
mod recent;
mod records;
mod transfer;
mod web;
mod webhooks;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use estate_crm_domain::{Record, RecordKind};
use serde_json::Value;
use tokio_postgres::NoTls;

use crate::prepare::Preparer;
use crate::*;
use availability::Availability;
pub use cluster::LeaseTtl;
pub use transfer::{export_postgres, import_postgres};
use writer::{Durability, Writer, WriterState};

/// How long a request waits for a free connection before it is answered with an error.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long making a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// When a connection whose database host went silent (gone from the network, not refusing) counts
/// as broken: keepalive probes after 10 s without traffic, 3 unanswered 2 s apart; data unacknowledged
/// for 20 s. The kernel's defaults would leave a request waiting on it for minutes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;
const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(20);
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
    /// Whether the database answers; readers and the writer fail at once while it does not.
    availability: Arc<Availability>,
    writer: Writer,
    tag: String,
    feed: Arc<ChangeFeed>,
    imports: ImportGauge,
    bulk_slots: tokio::sync::Semaphore,
    preparer: Preparer,
    seqs: Arc<records::RecordSeqs>,
    leases: Leases,
    /// Recent events, which answer most lane reads without the database (see `recent`).
    recent: Arc<recent::Recent>,
}

impl PgStore {
    /// Connects, applies the migrations (under their advisory lock) and starts the writer. Fails
    /// with a one-line reason when the database cannot be reached or is newer than this binary.
    pub async fn open(config: &PgConfig) -> Result<PgStore, StoreError> {
        PgStore::open_in_cluster(config, LeaseTtl::default()).await
    }

    /// Opens the store as one server of those sharing the database: it takes its share of the
    /// endpoints under leases that last `lease_ttl` without renewal (docs/POSTGRES.md).
    pub async fn open_in_cluster(config: &PgConfig, lease_ttl: LeaseTtl) -> Result<PgStore, StoreError> {
        let readers = pool(&config.url, config.pool_size.max(1))?;
        let writer_pool = pool(&config.url, 2)?;
        {
            let mut client = writer_pool.get().await.map_err(unreachable)?;
            migrations::migrate(&mut client).await?;
        }
        let tag = database_tag(&readers).await?;
        let feed = Arc::new(ChangeFeed::default());
        let seqs = Arc::new(records::RecordSeqs::default());
        let server = cluster::new_server_id();
        let recent = Arc::new(recent::Recent::default());
        let routes_stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = WriterState {
            tag: tag.clone(),
            site_url: config.site_url.clone(),
            seqs: seqs.clone(),
            routes: None,
            server: server.clone(),
            recent: recent.clone(),
            routes_stale: routes_stale.clone(),
        };
        let availability = Arc::new(Availability::default());
        let writer = Writer::start(writer_pool, availability.clone(), state, feed.clone()).await?;
        let listener = cluster::Hearing { feed: feed.clone(), recent: recent.clone(), routes_stale };
        let leases =
            cluster::join(server, pg_config(&config.url)?, pool(&config.url, 1)?, tag.clone(), listener, lease_ttl)
                .await?;
        let preparer = Preparer {
            tag: tag.clone(),
            site_url: config.site_url.clone(),
            // Unused: seqs come from `seqs`, shared by every server on the database.
            last_seq: Arc::default(),
        };
        let inner = Inner {
            readers,
            availability,
            writer,
            tag,
            feed,
            imports: ImportGauge::default(),
            bulk_slots: tokio::sync::Semaphore::new(BULK_AT_ONCE),
            preparer,
            seqs,
            leases,
            recent,
        };
        Ok(PgStore { inner: Arc::new(inner) })
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.availability.connect(&self.inner.readers).await
    }

    /// `count` record seqs: from the block in hand, else with a connection to take more blocks.
    async fn record_seqs(&self, count: usize) -> Result<Vec<i64>, StoreError> {
        match self.inner.seqs.take_in_hand(count).await {
            Some(seqs) => Ok(seqs),
            None => self.inner.seqs.take(&*self.reader().await?, count).await,
        }
    }
}

/// Applies the migrations without opening a store (`estate-crm migrate`).
pub async fn migrate_postgres(url: &str) -> Result<SchemaVersions, StoreError> {
    let pool = pool(url, 1)?;
    let mut client = pool.get().await.map_err(unreachable)?;
    migrations::migrate(&mut client).await
}

fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let config = pg_config(url)?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|err| StoreError::internal("making the connection pool", err))
}

/// The connection settings of `url`, with this program's timeout and name.
fn pg_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|err| StoreError::internal("reading the database URL", err))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    // Unless the URL says otherwise (`keepalives_idle`, `tcp_user_timeout`).
    if config.get_keepalives_idle() == tokio_postgres::Config::new().get_keepalives_idle() {
        config
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(UNACKNOWLEDGED_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("estate-crm");
    }
    Ok(config)
}

/// The first connection's failure, said as what it means at start.
fn unreachable(err: deadpool_postgres::PoolError) -> StoreError {
    StoreError::internal("reaching the database", crate::error::with_causes(&err))
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

/// Runs `$work` (a `for<'a> |ctx: &'a mut WriteCtx| async` body) in the writer's next group commit.
macro_rules! write {
    ($store:expr, |$ctx:ident| $body:expr) => {
        $store.inner.writer.run(move |$ctx| Box::pin(async move { $body.await })).await
    };
}

#[async_trait]
impl Store for PgStore {
    async fn create_record(&self, actor: &Actor, kind: RecordKind, input: Value) -> Result<Record, StoreError> {
        let actor = actor.clone();
        if kind == RecordKind::Enquiry {
            return write!(self, |ctx| records::create(ctx, &actor, kind, &input));
        }
        let seq = self.record_seqs(1).await?[0];
        let prepared = self.inner.preparer.prepare_numbered(seq, &actor, kind, &input).map_err(StoreError::invalid)?;
        self.inner.writer.create(actor, prepared).await
    }

    async fn update_record(
        &self,
        actor: &Actor,
        kind: RecordKind,
        id: &str,
        patch: Value,
    ) -> Result<Record, StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        write!(self, |ctx| records::update(ctx, &actor, kind, &id, &patch))
    }

    async fn delete_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<(), StoreError> {
        let (actor, id) = (actor.clone(), id.to_owned());
        write!(self, |ctx| records::delete(ctx, &actor, kind, &id))
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
                let seqs = self.record_seqs(expected).await?;
                let (runs, prepared) = tokio::sync::mpsc::channel(PREPARED_RUNS_AHEAD);
                let preparer = self.inner.preparer.clone();
                let rows_actor = actor.clone();
                tokio::task::spawn_blocking(move || {
                    let runs_of_seqs = seqs.chunks(PREPARE_RUN_ROWS);
                    for (n, (run, seqs)) in rows.chunks(PREPARE_RUN_ROWS).zip(runs_of_seqs).enumerate() {
                        let run = preparer.prepare_numbered_rows(seqs, &rows_actor, kind, run, n * PREPARE_RUN_ROWS);
                        if runs.blocking_send(run).is_err() {
                            return; // The writer stopped reading: the request failed.
                        }
                    }
                });
                write!(self, |ctx| records::insert_prepared_rows(ctx, &actor, prepared, expected))
            }
            op => write!(self, |ctx| records::bulk(ctx, &actor, kind, op)),
        }
    }

    async fn get_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<Record, StoreError> {
        records::get_visible(&*self.reader().await?, &self.inner.tag, actor, kind, id).await
    }

    async fn list_records(
        &self,
        actor: &Actor,
        kind: RecordKind,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError> {
        records::list(&*self.reader().await?, &self.inner.tag, actor, kind, &page).await
    }

    async fn list_events(&self, filter: EventFilterQuery, page: PageRequest) -> Result<Page<StoredEvent>, StoreError> {
        records::list_events(&*self.reader().await?, &self.inner.tag, &filter, &page).await
    }

    // --- users and tokens ---

    async fn find_token(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        auth::find_token(&*self.reader().await?, &self.inner.tag, token_hash).await
    }

    async fn set_admin_token(&self, token_hash: &str, only_if_missing: bool) -> Result<bool, StoreError> {
        let hash = token_hash.to_owned();
        write!(self, |ctx| auth::set_admin_token(ctx, &hash, only_if_missing))
    }

    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        write!(self, |ctx| auth::create_user(ctx, &new))
    }

    async fn create_token(&self, user_id: &str, name: &str, token_hash: &str) -> Result<TokenInfo, StoreError> {
        let (user_id, name, hash) = (user_id.to_owned(), name.to_owned(), token_hash.to_owned());
        write!(self, |ctx| auth::create_token(ctx, &user_id, &name, &hash))
    }

    async fn delete_token(&self, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
        let (id, owner) = (id.to_owned(), owner.map(str::to_owned));
        write!(self, |ctx| auth::delete_token(ctx, &id, owner.as_deref()))
    }

    // --- webhook endpoints ---

    async fn list_endpoints(&self, page: PageRequest) -> Result<Page<Endpoint>, StoreError> {
        webhooks::list_endpoints(&*self.reader().await?, &self.inner.tag, &page).await
    }

    async fn get_endpoint(&self, id: &str) -> Result<Endpoint, StoreError> {
        webhooks::get_endpoint(&*self.reader().await?, &self.inner.tag, id).await
    }

    async fn primary_endpoint(&self) -> Result<Option<Endpoint>, StoreError> {
        webhooks::primary_endpoint(&*self.reader().await?, &self.inner.tag).await
    }

    async fn create_endpoint(&self, spec: EndpointSpec) -> Result<Endpoint, StoreError> {
        write!(self, |ctx| webhooks::create_endpoint(ctx, &spec, false))
    }

    async fn update_endpoint(&self, id: &str, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
        let id = id.to_owned();
        write!(self, |ctx| webhooks::update_endpoint(ctx, &id, patch))
    }

    async fn put_primary_endpoint(&self, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
        write!(self, |ctx| webhooks::put_primary_endpoint(ctx, patch))
    }

    async fn delete_endpoint(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        write!(self, |ctx| webhooks::delete_endpoint(ctx, &id))
    }

    // --- deliveries ---

    async fn list_deliveries(&self, filter: DeliveryFilter, page: PageRequest) -> Result<Page<Delivery>, StoreError> {
        let tag = self.inner.tag.clone();
        fanout::in_snapshot(self.reader().await?, move |client| {
            Box::pin(async move { webhooks::list_deliveries(client, &tag, &filter, &page).await })
        })
        .await
    }

    async fn get_delivery(&self, id: &str) -> Result<DeliveryDetail, StoreError> {
        let (tag, id) = (self.inner.tag.clone(), id.to_owned());
        fanout::in_snapshot(self.reader().await?, move |client| {
            Box::pin(async move { webhooks::get_delivery(client, &tag, &id).await })
        })
        .await
    }

    async fn retry_delivery(&self, id: &str, now_ms: i64) -> Result<String, StoreError> {
        let id = id.to_owned();
        write!(self, |ctx| webhooks::retry_delivery(ctx, &id, now_ms))
    }

    async fn retry_failed(&self, endpoint_id: &str, now_ms: i64) -> Result<u64, StoreError> {
        let id = endpoint_id.to_owned();
        write!(self, |ctx| webhooks::retry_failed(ctx, &id, now_ms))
    }

    async fn begin_test_delivery(&self, endpoint_id: Option<&str>, body: Vec<u8>) -> Result<TestDelivery, StoreError> {
        let id = endpoint_id.map(str::to_owned);
        write!(self, |ctx| webhooks::begin_test_delivery(ctx, id.as_deref(), &body))
    }

    // --- the dispatcher's side ---

    async fn due_deliveries(
        &self,
        endpoint_id: &str,
        after_seq: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let endpoint = webhooks::endpoint_seq(&self.inner.tag, endpoint_id)?;
        // Most reads of a lane that keeps up are answered from memory: no round trip.
        if let Some(due) = self.inner.recent.due_after(&self.inner.tag, endpoint, after_seq, limit) {
            return Ok(due);
        }
        let recent = &self.inner.recent;
        let epoch = recent.epoch();
        let client = self.reader().await?;
        // The view travels with the read (pipelined): no round trip of its own.
        let (due, view) = tokio::try_join!(
            webhooks::due_deliveries(&client, &self.inner.tag, endpoint_id, after_seq, now_ms, limit),
            webhooks::lane_view(&client, endpoint)
        )?;
        match view {
            Some(view) => recent.keep_view(endpoint, view, epoch),
            None => recent.drop_view(endpoint),
        }
        Ok(due)
    }

    async fn next_due_after(&self, endpoint_id: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
        webhooks::next_due_after(&*self.reader().await?, &self.inner.tag, endpoint_id, now_ms).await
    }

    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        // Outcomes need no flush of their own: one lost in a crash of the database is attempted
        // again, with the same webhook-id (writer.rs).
        self.inner
            .writer
            .run_with(Durability::Deferred, move |ctx| {
                Box::pin(async move { webhooks::record_outcomes(ctx, &outcomes).await })
            })
            .await
    }

    async fn pending_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let tag = self.inner.tag.clone();
        fanout::in_snapshot(self.reader().await?, move |client| {
            Box::pin(async move { webhooks::pending_counts(client, &tag).await })
        })
        .await
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        write!(self, |ctx| webhooks::purge(ctx, before_ms))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.reader().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    fn changes(&self) -> &ChangeFeed {
        &self.inner.feed
    }

    fn imports(&self) -> &ImportGauge {
        &self.inner.imports
    }

    // --- web app ---

    async fn create_first_admin(&self, new: NewUser) -> Result<Option<User>, StoreError> {
        write!(self, |ctx| web::create_first_admin(ctx, &new))
    }

    async fn any_password_set(&self) -> Result<bool, StoreError> {
        web::any_password_set(&*self.reader().await?).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserCredentials>, StoreError> {
        let email = email.trim().to_lowercase();
        web::user_by_email(&*self.reader().await?, &self.inner.tag, &email).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserCredentials>, StoreError> {
        let Some(seq) = web::user_seq(&self.inner.tag, id) else {
            return Ok(None);
        };
        web::user_by_seq(&*self.reader().await?, &self.inner.tag, seq).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        web::list_users(&*self.reader().await?, &self.inner.tag).await
    }

    async fn set_password(&self, user_id: &str, password_hash: &str, keep: Option<&str>) -> Result<(), StoreError> {
        let (id, hash, keep) = (user_id.to_owned(), password_hash.to_owned(), keep.map(str::to_owned));
        write!(self, |ctx| web::set_password(ctx, &id, &hash, keep.as_deref()))
    }

    async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        web::list_tokens(&*self.reader().await?, &self.inner.tag, user_id).await
    }

    async fn create_session(
        &self,
        token_hash: &str,
        user_id: &str,
        now_ms: i64,
        limits: SessionLimits,
    ) -> Result<(), StoreError> {
        let (hash, id) = (token_hash.to_owned(), user_id.to_owned());
        write!(self, |ctx| web::create_session(ctx, &hash, &id, now_ms, limits))
    }

    async fn find_session(
        &self,
        token_hash: &str,
        now_ms: i64,
        limits: SessionLimits,
    ) -> Result<Option<Session>, StoreError> {
        web::find_session(&*self.reader().await?, &self.inner.tag, token_hash, now_ms, limits).await
    }

    async fn touch_session(&self, token_hash: &str, now_ms: i64) -> Result<(), StoreError> {
        let hash = token_hash.to_owned();
        write!(self, |ctx| web::touch_session(ctx, &hash, now_ms))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let hash = token_hash.to_owned();
        write!(self, |ctx| web::delete_session(ctx, &hash))
    }

    async fn endpoint_health(&self, since_ms: i64) -> Result<Vec<EndpointHealth>, StoreError> {
        let tag = self.inner.tag.clone();
        fanout::in_snapshot(self.reader().await?, move |client| {
            Box::pin(async move { web::endpoint_health(client, &tag, since_ms).await })
        })
        .await
    }

    // --- integrations ---

    async fn rotate_secret(
        &self,
        endpoint_id: &str,
        secret: String,
        grace: std::time::Duration,
    ) -> Result<Rotation, StoreError> {
        let id = endpoint_id.to_owned();
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        write!(self, |ctx| webhooks::rotate_secret(ctx, &id, secret, grace_ms))
    }

    // --- hubspot ---

    async fn hubspot_settings(&self) -> Result<Option<HubspotSettings>, StoreError> {
        hubspot::settings(&*self.reader().await?).await
    }

    async fn put_hubspot_settings(&self, patch: HubspotPatch) -> Result<HubspotSettings, StoreError> {
        write!(self, |ctx| hubspot::put_settings(ctx, patch))
    }

    async fn pause_hubspot(&self, version: i64, reason: String) -> Result<(), StoreError> {
        write!(self, |ctx| hubspot::pause(ctx, version, &reason))
    }

    async fn start_hubspot_backfill(&self) -> Result<HubspotSettings, StoreError> {
        write!(self, |ctx| hubspot::start_backfill(ctx))
    }

    async fn hubspot_events_after(&self, after_seq: i64, limit: usize) -> Result<Vec<SyncEvent>, StoreError> {
        hubspot::events_after(&*self.reader().await?, after_seq, limit).await
    }

    async fn hubspot_mappings(
        &self,
        kind: RecordKind,
        record_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, HubspotMapping>, StoreError> {
        hubspot::mappings(&*self.reader().await?, &self.inner.tag, kind, &record_ids).await
    }

    async fn hubspot_sweep_deals(&self, after_seq: i64, limit: usize) -> Result<Vec<SweptDeal>, StoreError> {
        hubspot::sweep_deals(&*self.reader().await?, &self.inner.tag, after_seq, limit).await
    }

    async fn commit_hubspot(&self, commit: HubspotCommit) -> Result<(), StoreError> {
        write!(self, |ctx| hubspot::commit(ctx, &commit))
    }

    async fn hubspot_log(
        &self,
        record_id: Option<String>,
        page: PageRequest,
    ) -> Result<Page<SyncLogEntry>, StoreError> {
        hubspot::log(&*self.reader().await?, record_id.as_deref(), &page).await
    }

    async fn hubspot_counts(&self) -> Result<HubspotCounts, StoreError> {
        hubspot::counts(&*self.reader().await?).await
    }

    // --- web app: pipeline ---

    async fn find_records(
        &self,
        actor: &Actor,
        kind: RecordKind,
        query: RecordQuery,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError> {
        pipeline::find(&*self.reader().await?, &self.inner.tag, actor, kind, &query, &page).await
    }

    async fn due_tasks(
        &self,
        actor: &Actor,
        scope: Scope,
        offset: usize,
        limit: usize,
    ) -> Result<DueTasks, StoreError> {
        pipeline::due_tasks(&*self.reader().await?, &self.inner.tag, actor, scope, offset, limit).await
    }

    async fn deal_stage_totals(&self, actor: &Actor, scope: Scope) -> Result<Vec<StageTotal>, StoreError> {
        pipeline::stage_totals(&*self.reader().await?, actor, scope).await
    }

    async fn records_by_ids(
        &self,
        actor: &Actor,
        kind: RecordKind,
        ids: Vec<String>,
    ) -> Result<Vec<Record>, StoreError> {
        pipeline::by_ids(&*self.reader().await?, &self.inner.tag, actor, kind, &ids).await
    }

    async fn leads_from_enquiries(
        &self,
        enquiry_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        pipeline::leads_from_enquiries(&*self.reader().await?, &self.inner.tag, &enquiry_ids).await
    }

    // --- web app: contacts ---

    async fn search_contacts(
        &self,
        actor: &Actor,
        query: ContactQuery,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError> {
        contacts::search(&*self.reader().await?, &self.inner.tag, actor, &query, &page).await
    }

    async fn records_of_contact(
        &self,
        actor: &Actor,
        kind: RecordKind,
        contact_id: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        contacts::records_of_contact(&*self.reader().await?, &self.inner.tag, actor, kind, contact_id, limit).await
    }

    async fn record_timeline(
        &self,
        actor: &Actor,
        kind: RecordKind,
        id: &str,
        limit: usize,
    ) -> Result<Vec<TimelineEvent>, StoreError> {
        let (tag, actor, id) = (self.inner.tag.clone(), actor.clone(), id.to_owned());
        fanout::in_snapshot(self.reader().await?, move |client| {
            Box::pin(async move { contacts::timeline(client, &tag, &actor, kind, &id, limit).await })
        })
        .await
    }

    // --- cluster ---

    fn leases(&self) -> &Leases {
        &self.inner.leases
    }
}
