//! estate-crm's storage: the [`Store`] interface and its embedded SQLite implementation.
//!
//! Every change to a record and the events it fires are written in one transaction. That transaction
//! is the only place where the invariant "an event exists if and only if its change committed" is
//! enforced. From that commit on, the event is owed to every active endpoint subscribed to it: each
//! endpoint's cursor in the event log says what it has been given, and a delivery's row is written
//! when its first attempt ends (see `sqlite/fanout.rs`), so a change costs no row per endpoint.
//!
//! The SQLite implementation funnels every write through one writer thread that runs the pending
//! transactions of many requests as savepoints of one SQLite transaction and commits them together
//! (group commit): a commit costs one fsync whether it carries one change or a thousand, which is
//! what lets a small disk acknowledge thousands of durable changes per second. Readers use their own
//! connections and never wait for the writer (WAL mode).
#![deny(missing_docs)]

mod cluster;
mod contacts;
pub mod credentials;
mod error;
mod fanout_keys;
mod hubspot;
mod ids;
pub mod pipeline;
mod postgres;
mod prepare;
mod sqlite;
mod transfer;
mod types;

use async_trait::async_trait;
use estate_crm_domain::{Record, RecordKind};
use serde_json::Value;

pub use cluster::{HUBSPOT_LEASE, LeaseUse, Leases};
pub use contacts::*;
pub use error::{ErrorKind, StoreError};
pub use hubspot::*;
pub use pipeline::{DueTasks, RecordQuery, Scope, StageTotal};
pub use postgres::{LeaseTtl, PgConfig, PgStore, export_postgres, import_postgres, migrate_postgres};
pub use sqlite::{SqliteConfig, SqliteStore, export_sqlite, import_sqlite, migrate_sqlite};
pub use transfer::{SourceStore, TransferSummary};
pub use types::*;

/// What the server and the dispatcher need from storage. Implementations keep the transactional
/// guarantees described in the crate documentation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- records ---
    /// Creates a record with its events (an enquiry also links or creates its contact).
    async fn create_record(&self, actor: &Actor, kind: RecordKind, input: Value) -> Result<Record, StoreError>;
    /// Applies a PATCH; a change that changes nothing writes and fires nothing.
    async fn update_record(
        &self,
        actor: &Actor,
        kind: RecordKind,
        id: &str,
        patch: Value,
    ) -> Result<Record, StoreError>;
    /// Deletes a record, firing its deletion event.
    async fn delete_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<(), StoreError>;
    /// Applies a bulk operation, all or nothing; answers the affected ids in the order given.
    async fn bulk(&self, actor: &Actor, kind: RecordKind, op: BulkOp) -> Result<Vec<String>, StoreError>;
    /// One record, if the actor may see it.
    async fn get_record(&self, actor: &Actor, kind: RecordKind, id: &str) -> Result<Record, StoreError>;
    /// A page of records the actor may see, newest first.
    async fn list_records(
        &self,
        actor: &Actor,
        kind: RecordKind,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError>;
    /// A page of the event log, newest first.
    async fn list_events(&self, filter: EventFilterQuery, page: PageRequest) -> Result<Page<StoredEvent>, StoreError>;

    // --- users and tokens ---
    /// The user a token hash belongs to.
    async fn find_token(&self, token_hash: &str) -> Result<Option<User>, StoreError>;
    /// Sets the built-in administrator's token (its hash), creating that user on first start.
    /// Answers false when `only_if_missing` and a token exists already.
    async fn set_admin_token(&self, token_hash: &str, only_if_missing: bool) -> Result<bool, StoreError>;
    /// Makes a user.
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError>;
    /// Makes a token for a user.
    async fn create_token(&self, user_id: &str, name: &str, token_hash: &str) -> Result<TokenInfo, StoreError>;
    /// Revokes a token; `owner` limits it to that user's tokens.
    async fn delete_token(&self, id: &str, owner: Option<&str>) -> Result<(), StoreError>;

    // --- webhook endpoints ---
    /// Every endpoint, newest first.
    async fn list_endpoints(&self, page: PageRequest) -> Result<Page<Endpoint>, StoreError>;
    /// One endpoint.
    async fn get_endpoint(&self, id: &str) -> Result<Endpoint, StoreError>;
    /// The primary endpoint, the one the simple settings manage.
    async fn primary_endpoint(&self) -> Result<Option<Endpoint>, StoreError>;
    /// Creates an endpoint.
    async fn create_endpoint(&self, spec: EndpointSpec) -> Result<Endpoint, StoreError>;
    /// Changes the fields of an endpoint that the patch names.
    async fn update_endpoint(&self, id: &str, patch: EndpointPatch) -> Result<Endpoint, StoreError>;
    /// Creates or changes the primary endpoint.
    async fn put_primary_endpoint(&self, patch: EndpointPatch) -> Result<Endpoint, StoreError>;
    /// Deletes an endpoint with its deliveries.
    async fn delete_endpoint(&self, id: &str) -> Result<(), StoreError>;

    // --- deliveries ---
    /// A page of the delivery log, newest first.
    async fn list_deliveries(&self, filter: DeliveryFilter, page: PageRequest) -> Result<Page<Delivery>, StoreError>;
    /// One delivery with its attempts and body.
    async fn get_delivery(&self, id: &str) -> Result<DeliveryDetail, StoreError>;
    /// Makes a delivery pending and due now; answers its endpoint's id.
    async fn retry_delivery(&self, id: &str, now_ms: i64) -> Result<String, StoreError>;
    /// Makes every failed delivery of an endpoint pending and due now; answers how many.
    async fn retry_failed(&self, endpoint_id: &str, now_ms: i64) -> Result<u64, StoreError>;
    /// Records a `webhook.test` event and a delivery for it, not yet attempted and never claimed.
    async fn begin_test_delivery(&self, endpoint_id: Option<&str>, body: Vec<u8>) -> Result<TestDelivery, StoreError>;

    // --- the dispatcher's side ---
    /// Up to `limit` due pending deliveries of an endpoint with `seq > after_seq`, in seq order.
    async fn due_deliveries(
        &self,
        endpoint_id: &str,
        after_seq: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// The earliest `next_attempt_at` after `now_ms` among an endpoint's pending deliveries.
    async fn next_due_after(&self, endpoint_id: &str, now_ms: i64) -> Result<Option<i64>, StoreError>;
    /// Records attempts and their consequences in one commit.
    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> Result<(), StoreError>;
    /// Pending deliveries per endpoint (for metrics).
    async fn pending_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Removes finished deliveries and unreferenced events older than `before_ms`; never a pending one.
    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The feed of committed changes the dispatcher waits on: which endpoints got new deliveries or
    /// deliveries due again, and whether endpoint settings changed.
    fn changes(&self) -> &ChangeFeed;
    /// The bulk imports running now, which deliveries make way for.
    fn imports(&self) -> &ImportGauge;

    // --- web app ---
    /// Makes the first administrator with a password, only while no user has a password; answers
    /// `None` when one does already (the one-time setup is over).
    async fn create_first_admin(&self, new: NewUser) -> Result<Option<User>, StoreError>;
    /// Whether any user has a password (after which the one-time setup no longer exists).
    async fn any_password_set(&self) -> Result<bool, StoreError>;
    /// A user and their password hash, by email (any case).
    async fn user_by_email(&self, email: &str) -> Result<Option<UserCredentials>, StoreError>;
    /// A user and their password hash, by id.
    async fn user_by_id(&self, id: &str) -> Result<Option<UserCredentials>, StoreError>;
    /// Every user, oldest first (at most 1000).
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Sets a user's password hash and ends their sessions at once, but `keep` (a session hash).
    async fn set_password(&self, user_id: &str, password_hash: &str, keep: Option<&str>) -> Result<(), StoreError>;
    /// A user's tokens, oldest first.
    async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenInfo>, StoreError>;
    /// Starts a session (by the hash of its cookie) and forgets sessions past `limits`.
    async fn create_session(
        &self,
        token_hash: &str,
        user_id: &str,
        now_ms: i64,
        limits: SessionLimits,
    ) -> Result<(), StoreError>;
    /// The live session with this hash, if it is within `limits` at `now_ms`.
    async fn find_session(
        &self,
        token_hash: &str,
        now_ms: i64,
        limits: SessionLimits,
    ) -> Result<Option<Session>, StoreError>;
    /// Records that a session was used now.
    async fn touch_session(&self, token_hash: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Ends a session.
    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError>;
    /// Every endpoint's delivered and failed deliveries of events since `since_ms`, and its pending
    /// ones now.
    async fn endpoint_health(&self, since_ms: i64) -> Result<Vec<EndpointHealth>, StoreError>;

    // --- integrations ---
    /// Gives an endpoint a new secret; the replaced one keeps signing (beside it) for `grace`.
    async fn rotate_secret(
        &self,
        endpoint_id: &str,
        secret: String,
        grace: std::time::Duration,
    ) -> Result<Rotation, StoreError>;

    // --- hubspot ---
    /// The HubSpot integration's settings and positions, if it was ever set up.
    async fn hubspot_settings(&self) -> Result<Option<HubspotSettings>, StoreError>;
    /// Saves a settings change (the first save starts the cursor at the newest event); clears a pause.
    async fn put_hubspot_settings(&self, patch: HubspotPatch) -> Result<HubspotSettings, StoreError>;
    /// Pauses the sync with a reason, unless the settings moved past `version` meanwhile.
    async fn pause_hubspot(&self, version: i64, reason: String) -> Result<(), StoreError>;
    /// Starts a backfill of every contact and deal from the beginning.
    async fn start_hubspot_backfill(&self) -> Result<HubspotSettings, StoreError>;
    /// Up to `limit` events after `after_seq`, in order.
    async fn hubspot_events_after(&self, after_seq: i64, limit: usize) -> Result<Vec<SyncEvent>, StoreError>;
    /// What HubSpot holds for these records of a kind.
    async fn hubspot_mappings(
        &self,
        kind: RecordKind,
        record_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, HubspotMapping>, StoreError>;
    /// The next mapped deals after `after_seq`, with their records as they are now.
    async fn hubspot_sweep_deals(&self, after_seq: i64, limit: usize) -> Result<Vec<SweptDeal>, StoreError>;
    /// Commits what HubSpot accepted: positions, mappings and log lines, in one transaction.
    async fn commit_hubspot(&self, commit: HubspotCommit) -> Result<(), StoreError>;
    /// The sync log, newest first, optionally for one record.
    async fn hubspot_log(&self, record_id: Option<String>, page: PageRequest)
    -> Result<Page<SyncLogEntry>, StoreError>;
    /// Figures for the integration's state.
    async fn hubspot_counts(&self) -> Result<HubspotCounts, StoreError>;

    // --- web app: pipeline ---
    /// A page of one kind's records that match `query`, newest first.
    async fn find_records(
        &self,
        actor: &Actor,
        kind: RecordKind,
        query: RecordQuery,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError>;
    /// Open tasks, soonest due first (overdue ones lead), undated ones last; `limit` from `offset`.
    async fn due_tasks(&self, actor: &Actor, scope: Scope, offset: usize, limit: usize)
    -> Result<DueTasks, StoreError>;
    /// How many deals each stage holds and their amounts added up, per currency.
    async fn deal_stage_totals(&self, actor: &Actor, scope: Scope) -> Result<Vec<StageTotal>, StoreError>;
    /// The records of a kind with these ids (at most 500) that the actor may see, in no order.
    async fn records_by_ids(
        &self,
        actor: &Actor,
        kind: RecordKind,
        ids: Vec<String>,
    ) -> Result<Vec<Record>, StoreError>;
    /// For each enquiry that **Make lead** turned into a lead, that lead's id (at most 500 enquiries).
    async fn leads_from_enquiries(
        &self,
        enquiry_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>, StoreError>;

    // --- web app: contacts ---
    /// A page of the contacts the actor may see that match `query`, newest first.
    async fn search_contacts(
        &self,
        actor: &Actor,
        query: ContactQuery,
        page: PageRequest,
    ) -> Result<Page<Record>, StoreError>;
    /// The newest `limit` records of `kind` (lead, deal, task, enquiry) whose `contact_id` is this
    /// contact, among those the actor may see.
    async fn records_of_contact(
        &self,
        actor: &Actor,
        kind: RecordKind,
        contact_id: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// The newest `limit` events a record the actor may see fired, each with its webhooks'
    /// state per endpoint (delivered, pending or failed).
    async fn record_timeline(
        &self,
        actor: &Actor,
        kind: RecordKind,
        id: &str,
        limit: usize,
    ) -> Result<Vec<TimelineEvent>, StoreError>;

    // --- cluster ---
    /// Which endpoints (and whether the HubSpot sync) this server runs: everything on the embedded
    /// store; on PostgreSQL, the leases this server holds among those sharing the database.
    fn leases(&self) -> &Leases;
}
