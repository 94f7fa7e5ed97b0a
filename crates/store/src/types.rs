use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight, RetrySchedule};
use estate_crm_domain::{EventName, Timestamp};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees and changes everything.
    Admin,
    /// Sees and changes the records they created or that are assigned to them.
    Agent,
}

impl Role {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    /// Parses the stored and API name.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// The email of the built-in administrator, the user made at the first start to own the server's
/// start-up API token. It has no password until an admin gives it one.
pub const BUILT_IN_ADMIN_EMAIL: &str = "admin@localhost";

/// A user of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its email, unique.
    pub email: String,
    /// What it may do.
    pub role: Role,
}

/// Who is acting, which decides what they see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user's id, recorded as `created_by`.
    pub user_id: String,
    /// The user's role.
    pub role: Role,
}

impl Actor {
    /// Whether this actor may see and change a record created by or assigned to these users.
    pub fn may_see(&self, created_by: &str, assigned_agent_id: Option<&str>) -> bool {
        self.role == Role::Admin || created_by == self.user_id || assigned_agent_id == Some(self.user_id.as_str())
    }
}

/// A user to make.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Its name.
    pub name: String,
    /// Its email.
    pub email: String,
    /// Its role.
    pub role: Role,
    /// The hash of its password, if it has one.
    pub password_hash: Option<String>,
}

/// A token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token's id.
    pub id: String,
    /// Its user.
    pub user_id: String,
    /// Its name.
    pub name: String,
}

/// Which page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many items (1 to 1000).
    pub limit: usize,
    /// Items older than this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
}

/// A page of a list, newest first.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Filters of the event log.
#[derive(Debug, Clone, Default)]
pub struct EventFilterQuery {
    /// Only this event.
    pub event: Option<EventName>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
}

/// A recorded event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its id.
    pub id: String,
    /// Which event.
    pub name: EventName,
    /// When its change committed.
    pub timestamp: Timestamp,
    /// The exact body every delivery of it sends.
    pub body: Bytes,
}

/// A bulk operation on one record kind.
#[derive(Debug, Clone)]
pub enum BulkOp {
    /// Create these records.
    Create(Vec<Value>),
    /// Patch these records; each object carries its `id`.
    Update(Vec<Value>),
    /// Delete these records.
    Delete(Vec<String>),
}

/// Where an endpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSource {
    /// The endpoints API.
    Api,
    /// The simple settings screen (the primary endpoint).
    Settings,
    /// The REST Hooks API (`/api/v1/hooks`) that Zapier and Make call: one event, and a 410 from
    /// its target deletes it rather than pausing it.
    RestHook,
}

impl EndpointSource {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointSource::Api => "api",
            EndpointSource::Settings => "settings",
            EndpointSource::RestHook => "rest_hook",
        }
    }

    /// Parses the stored name.
    pub fn parse(name: &str) -> Option<EndpointSource> {
        match name {
            "api" => Some(EndpointSource::Api),
            "settings" => Some(EndpointSource::Settings),
            "rest_hook" => Some(EndpointSource::RestHook),
            _ => None,
        }
    }
}

/// A webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Its id.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Which events it receives.
    pub events: EventFilter,
    /// Its signing secret, if any. Never shown by the API.
    pub secret: Option<String>,
    /// The secret it had before the last change, still valid for signatures until `previous_secret_until`.
    pub previous_secret: Option<String>,
    /// Until when (Unix ms) the previous secret still signs.
    pub previous_secret_until: Option<i64>,
    /// Whether it receives deliveries.
    pub active: bool,
    /// Why it was made inactive by the server (a 410 Gone), if it was.
    pub disabled_reason: Option<String>,
    /// A note for people.
    pub description: Option<String>,
    /// Its retry schedule; `None` uses the server's default.
    pub retry_schedule: Option<RetrySchedule>,
    /// How many attempts may be in flight at once.
    pub max_in_flight: MaxInFlight,
    /// Whether it is the one the simple settings manage.
    pub is_primary: bool,
    /// Which API made it.
    pub source: EndpointSource,
    /// What its deliveries' bodies are.
    pub format: BodyFormat,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Endpoint {
    /// The secrets that sign an attempt starting at `now_ms`: the current one, then the previous one
    /// while it is still valid.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<Vec<u8>> {
        let mut secrets: Vec<Vec<u8>> = self.secret.iter().map(|s| s.as_bytes().to_vec()).collect();
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_until)
            && now_ms < until
            && !secrets.is_empty()
        {
            secrets.push(previous.as_bytes().to_vec());
        }
        secrets
    }
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// Where deliveries go (already validated).
    pub url: String,
    /// Which events it receives.
    pub events: EventFilter,
    /// Its signing secret.
    pub secret: Option<String>,
    /// Whether it receives deliveries.
    pub active: bool,
    /// A note for people.
    pub description: Option<String>,
    /// Its retry schedule; `None` uses the server's default.
    pub retry_schedule: Option<RetrySchedule>,
    /// How many attempts may be in flight at once.
    pub max_in_flight: MaxInFlight,
    /// Which API makes it (the primary endpoint is made by the settings, whatever this says).
    pub source: EndpointSource,
    /// What its deliveries' bodies are.
    pub format: BodyFormat,
}

impl EndpointSpec {
    /// A new endpoint from the fields a client sent, with the defaults for the rest; `None` without
    /// a URL.
    pub fn from_patch(patch: EndpointPatch) -> Option<EndpointSpec> {
        Some(EndpointSpec {
            url: patch.url?,
            events: patch.events.unwrap_or(EventFilter::All),
            secret: patch.secret.flatten(),
            active: patch.active.unwrap_or(true),
            description: patch.description.flatten(),
            retry_schedule: patch.retry_schedule.flatten(),
            max_in_flight: patch.max_in_flight.unwrap_or(MaxInFlight::DEFAULT),
            source: EndpointSource::Api,
            format: patch.format.unwrap_or_default(),
        })
    }
}

/// Changes to an endpoint: `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New events.
    pub events: Option<EventFilter>,
    /// New secret, or `Some(None)` to remove it.
    pub secret: Option<Option<String>>,
    /// Active or not.
    pub active: Option<bool>,
    /// New description.
    pub description: Option<Option<String>>,
    /// New schedule, or `Some(None)` for the server's default.
    pub retry_schedule: Option<Option<RetrySchedule>>,
    /// New limit.
    pub max_in_flight: Option<MaxInFlight>,
    /// New body format.
    pub format: Option<BodyFormat>,
}

impl EndpointPatch {
    /// How long a secret replaced by a patch keeps signing beside the new one, so that receivers can
    /// switch without a gap.
    pub(crate) const REPLACED_SECRET_SIGNS_MS: i64 = 24 * 3600 * 1000;

    /// The endpoint as this patch leaves it at `now_ms`: the same rules for every store.
    pub(crate) fn applied_to(self, old: &Endpoint, now_ms: i64) -> Endpoint {
        let mut new = old.clone();
        if let Some(url) = self.url {
            new.url = url;
        }
        if let Some(events) = self.events {
            new.events = events;
        }
        if let Some(secret) = self.secret
            && secret != old.secret
        {
            new.previous_secret = old.secret.clone();
            new.previous_secret_until = old.secret.as_ref().map(|_| now_ms + Self::REPLACED_SECRET_SIGNS_MS);
            new.secret = secret;
        }
        if let Some(active) = self.active {
            new.active = active;
            if active {
                new.disabled_reason = None;
            }
        }
        if let Some(description) = self.description {
            new.description = description;
        }
        if let Some(schedule) = self.retry_schedule {
            new.retry_schedule = schedule;
        }
        if let Some(max) = self.max_in_flight {
            new.max_in_flight = max;
        }
        if let Some(format) = self.format {
            new.format = format;
        }
        new
    }
}

/// A secret rotation's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    /// The endpoint, with its new secret.
    pub endpoint: Endpoint,
    /// Until when (Unix ms) the replaced secret still signs; `None` when there was none or the grace
    /// was zero.
    pub previous_valid_until: Option<i64>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx was received.
    Succeeded,
    /// Its last attempt failed; it stays in the log and can be retried by hand.
    Failed,
}

impl DeliveryStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses the API name.
    pub fn parse(name: &str) -> Option<DeliveryStatus> {
        match name {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }

    pub(crate) fn code(self) -> i64 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Succeeded => 1,
            DeliveryStatus::Failed => 2,
        }
    }

    pub(crate) fn from_code(code: i64) -> DeliveryStatus {
        match code {
            0 => DeliveryStatus::Pending,
            1 => DeliveryStatus::Succeeded,
            _ => DeliveryStatus::Failed,
        }
    }
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only in this status.
    pub status: Option<DeliveryStatus>,
    /// Only of this event.
    pub event: Option<EventName>,
}

/// A delivery: one event to one endpoint.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its id, also the `webhook-id` header.
    pub id: String,
    /// The event's id.
    pub event_id: String,
    /// The event's name.
    pub event: EventName,
    /// The endpoint (none for a test of unsaved settings).
    pub endpoint_id: Option<String>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// How many attempts were made.
    pub attempts: u32,
    /// When the next attempt is due (pending only), Unix ms.
    pub next_attempt_at: Option<i64>,
    /// The last attempt's status code.
    pub last_status_code: Option<u16>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When it was created, Unix ms.
    pub created_at: i64,
    /// When it last changed, Unix ms.
    pub updated_at: i64,
}

/// One attempt of a delivery.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// When it started, Unix ms.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// The response's status, if one came.
    pub status_code: Option<u16>,
    /// What went wrong, in words.
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub response: Bytes,
}

/// A delivery with its body and attempts.
#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    /// The delivery.
    pub delivery: Delivery,
    /// The exact body sent.
    pub body: Bytes,
    /// Its attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// A delivery the dispatcher should attempt.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// Its position in the delivery order.
    pub seq: i64,
    /// Its id.
    pub id: String,
    /// The event's name.
    pub event: EventName,
    /// The exact bytes to send.
    pub body: Bytes,
    /// Attempts made so far.
    pub attempts: u32,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// It succeeded.
    Succeeded,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// No attempt is left; it is failed.
    Failed,
    /// The receiver answered 410 Gone: the delivery fails and the endpoint is made inactive.
    Gone {
        /// Why, kept on the endpoint.
        reason: String,
    },
}

/// The result of one attempt, to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The delivery's seq.
    pub delivery_seq: i64,
    /// The endpoint it went to.
    pub endpoint_id: Option<String>,
    /// The attempt's number (1 for the first).
    pub attempt: u32,
    /// When it started, Unix ms.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// The response's status, if one came.
    pub status_code: Option<u16>,
    /// What went wrong, in words.
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub response: Bytes,
    /// What happens next.
    pub next: NextStep,
}

/// A test delivery, recorded before it is sent so that its id is the `webhook-id`.
#[derive(Debug, Clone)]
pub struct TestDelivery {
    /// Its seq, for recording the outcome.
    pub seq: i64,
    /// Its id.
    pub id: String,
}

/// What changed since the dispatcher last looked: the store publishes, the dispatcher takes.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    pending: Mutex<Changes>,
    notify: Notify,
}

/// A batch of changes, see [`ChangeFeed`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Endpoints that got new deliveries (with higher seqs than any before).
    pub endpoints: HashSet<String>,
    /// Endpoints whose older deliveries became due again (retried by hand): look from the start.
    pub rescan: HashSet<String>,
    /// Whether endpoint settings changed (the dispatcher reloads them).
    pub settings_changed: bool,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.rescan.is_empty() && !self.settings_changed
    }
}

impl ChangeFeed {
    /// Adds changes and wakes the taker. The set is bounded by the number of endpoints.
    pub fn publish(&self, changes: Changes) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.endpoints.extend(changes.endpoints);
        pending.rescan.extend(changes.rescan);
        let settings_changed = changes.settings_changed;
        pending.settings_changed |= settings_changed;
        let wake = !pending.is_empty();
        drop(pending);
        if wake {
            self.notify.notify_one();
        }
    }

    /// Waits for changes and takes them all.
    pub async fn next(&self) -> Changes {
        loop {
            let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            if !taken.is_empty() {
                return taken;
            }
            // `notify_one` stores a permit when nobody waits, so a publish between the take and
            // this await is not lost.
            self.notify.notified().await;
        }
    }
}

/// How many bulk imports are being parsed, prepared and written right now.
///
/// The dispatcher holds back its next reads while one is (see the webhooks crate), so that on a
/// small machine an import gets the CPU first and its webhooks follow at once; attempts in flight
/// go on, and the wait is bounded, so deliveries keep moving under back-to-back imports. Cheap to
/// clone; clones count the same imports.
#[derive(Debug, Clone, Default)]
pub struct ImportGauge {
    state: Arc<tokio::sync::watch::Sender<Imports>>,
}

#[derive(Debug, Default)]
struct Imports {
    running: usize,
    /// When the last import ended.
    last_end: Option<Instant>,
}

impl Imports {
    /// How long it has been since an import last ran; `None` while one runs.
    fn quiet_for(&self) -> Option<Duration> {
        match (self.running, self.last_end) {
            (0, Some(end)) => Some(end.elapsed()),
            (0, None) => Some(Duration::MAX),
            _ => None,
        }
    }
}

/// How long the gauge must stay at zero before waiters go on. A client sending a large file in
/// requests of 10,000 rows has the next one on its way within a few milliseconds of an answer;
/// without this, every answer would let deliveries start just as the next request needs the CPU.
const IMPORT_SETTLE: Duration = Duration::from_millis(20);

impl ImportGauge {
    /// Counts an import as running until the guard is dropped.
    pub fn start(&self) -> ImportGuard {
        self.state.send_modify(|imports| imports.running += 1);
        ImportGuard { state: self.state.clone() }
    }

    /// Whether an import is running.
    pub fn busy(&self) -> bool {
        self.state.borrow().running > 0
    }

    /// Returns once no import has run for [`IMPORT_SETTLE`] (at once if none has), or after `at_most`.
    pub async fn wait_idle(&self, at_most: Duration) {
        let mut state = self.state.subscribe();
        let settled = async {
            loop {
                let quiet = match state.wait_for(|imports| imports.running == 0).await {
                    Ok(idle) => idle.quiet_for().unwrap_or_default(),
                    Err(_) => return,
                };
                if quiet >= IMPORT_SETTLE {
                    return;
                }
                tokio::time::sleep(IMPORT_SETTLE - quiet).await;
                if !state.has_changed().unwrap_or(false) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(at_most, settled).await;
    }
}

/// An import in progress, see [`ImportGauge::start`].
#[derive(Debug)]
pub struct ImportGuard {
    state: Arc<tokio::sync::watch::Sender<Imports>>,
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        self.state.send_modify(|imports| {
            imports.running = imports.running.saturating_sub(1);
            imports.last_end = Some(Instant::now());
        });
    }
}

/// How long a web session lasts: it ends after `idle_ms` without use or `absolute_ms` after it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The longest time between two uses, in ms.
    pub idle_ms: i64,
    /// The longest life, in ms.
    pub absolute_ms: i64,
}

/// A live web session and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whose it is.
    pub user: User,
    /// When it began, Unix ms.
    pub created_at: i64,
    /// When it was last used (recorded at most about once a minute), Unix ms.
    pub last_seen_at: i64,
}

/// A user with the hash of their password, for signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentials {
    /// The user.
    pub user: User,
    /// The argon2 hash of their password, if they have one.
    pub password_hash: Option<String>,
}

/// An endpoint's deliveries in a window of time, for the dashboard and the endpoints pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The endpoint.
    pub endpoint_id: String,
    /// Deliveries of events since the window's start that succeeded.
    pub delivered: u64,
    /// Deliveries waiting for an attempt now, whenever their event was.
    pub pending: u64,
    /// Deliveries of events since the window's start that failed.
    pub failed: u64,
}

/// How far a database's schema is, and how far this binary can take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersions {
    /// The database's version before anything was applied.
    pub found: usize,
    /// The version it is at now.
    pub now: usize,
}
