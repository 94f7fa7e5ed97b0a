//! The sync worker: from its durable cursor in the event log, a batch of contact and deal changes
//! at a time, coalesced to each record's latest state, sent with HubSpot's batch APIs within the
//! request budget; then the cursor, the mappings and the sync log are committed together. Nothing
//! moves unless HubSpot accepted the batch, so a crash or an outage means the batch is sent again
//! (upserts keyed by email and `estate_crm_id` make that harmless).
//!
//! Three sources feed the same sending path, in this order of priority: the event log (contacts'
//! created/updated/deleted, deals' created/stage_changed/won/lost), a backfill walking every
//! existing contact then deal, and the deal sweep. The sweep exists because the event catalogue has
//! no `deal.updated` nor `deal.deleted`: it walks the deals HubSpot holds, and sends those whose
//! mapped state differs from what was last sent, and archives those deleted here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estate_crm_domain::RecordKind;
use estate_crm_store::{
    Actor, Backfill, HUBSPOT_LEASE, HubspotCommit, HubspotMapping, HubspotSettings, MappingChange, NewSyncLogEntry,
    PageRequest, Role, Store, StoreError,
};
use http::Method;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::client::{HubClient, Reply};
use super::mapping::{self, ID_PROPERTY};
use super::rate::Budget;

/// HubSpot's batch limit.
const BATCH_INPUTS: usize = 100;
/// Events read per batch.
const EVENTS_PER_BATCH: usize = 500;
/// How often an idle worker looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Attempts of one call before the batch is given up for now (429s and 5xx).
const CALL_ATTEMPTS: u32 = 4;
/// The first pause after a failed call; doubled each time, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a full sweep of the deals waits before starting over.
const SWEEP_PAUSE: Duration = Duration::from_secs(1);

/// What the API shows of the worker's state besides what the store keeps.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    /// The last failure that will be retried, if the last batch failed.
    pub last_error: Option<String>,
    /// How many batches failed in a row.
    pub failures: u32,
}

/// The handle the API keeps: wakes the worker and reads its status.
#[derive(Clone, Default)]
pub struct HubspotHandle {
    wake: Arc<Notify>,
    status: Arc<Mutex<SyncStatus>>,
}

impl HubspotHandle {
    /// Wakes the worker (the settings changed, a backfill was asked for).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The worker's status.
    pub fn status(&self) -> SyncStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, status: SyncStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }
}

/// The worker.
pub struct HubspotSync {
    store: Arc<dyn Store>,
    client: HubClient,
    handle: HubspotHandle,
    budget: Option<Budget>,
    sweep_after: i64,
    sweep_resume_at: tokio::time::Instant,
}

/// Why a step did not finish.
#[derive(Debug)]
enum StepError {
    /// HubSpot refused the token: pause until the settings change.
    Refused(String),
    /// Try the same batch again later.
    Retry(String),
}

impl From<StoreError> for StepError {
    fn from(err: StoreError) -> StepError {
        StepError::Retry(format!("the database: {err}"))
    }
}

/// What a step did.
enum Progress {
    Worked,
    Idle,
}

/// One record's latest state in a batch.
#[derive(Debug, Clone)]
enum Change {
    Upsert(Value),
    Delete(Value),
}

/// A batch, coalesced: each record once, in the order first seen.
#[derive(Default)]
struct Batch {
    contacts: Vec<(String, Change)>,
    deals: Vec<(String, Change)>,
}

impl Batch {
    fn add(&mut self, kind: RecordKind, change: Change) {
        let Some(id) = record_of(&change).get("id").and_then(Value::as_str).map(str::to_owned) else { return };
        let list = match kind {
            RecordKind::Contact => &mut self.contacts,
            RecordKind::Deal => &mut self.deals,
            _ => return,
        };
        match list.iter_mut().find(|(existing, _)| *existing == id) {
            Some(slot) => slot.1 = change,
            None => list.push((id, change)),
        }
    }

    fn is_empty(&self) -> bool {
        self.contacts.is_empty() && self.deals.is_empty()
    }

    fn len(&self) -> usize {
        self.contacts.len() + self.deals.len()
    }
}

fn record_of(change: &Change) -> &Value {
    match change {
        Change::Upsert(record) | Change::Delete(record) => record,
    }
}

/// The event's record, and what it means for HubSpot; `None` for events the sync does not mirror.
fn change_of(name: &str, body: &[u8]) -> Option<(RecordKind, Change)> {
    let kind = match name.split('.').next()? {
        "contact" => RecordKind::Contact,
        "deal" => RecordKind::Deal,
        _ => return None,
    };
    let body: Value = serde_json::from_slice(body).ok()?;
    let data = body.get("data")?.clone();
    let change = if name.ends_with(".deleted") { Change::Delete(data) } else { Change::Upsert(data) };
    Some((kind, change))
}

/// The actor the backfill lists records as: an administrator sees them all.
fn system_actor() -> Actor {
    Actor { user_id: "hubspot-sync".to_owned(), role: Role::Admin }
}

impl HubspotSync {
    /// A worker; `policy` decides whether HubSpot's base URL may be a private address (tests).
    pub fn new(store: Arc<dyn Store>, policy: crate::AddressPolicy, handle: HubspotHandle) -> HubspotSync {
        HubspotSync {
            store,
            client: HubClient::new(policy, Duration::from_secs(30)),
            handle,
            budget: None,
            sweep_after: 0,
            sweep_resume_at: tokio::time::Instant::now(),
        }
    }

    /// Runs until `stop`, while this server holds the HubSpot lease: one server at a time among
    /// those sharing a database (always, on the embedded store).
    pub async fn run(mut self, stop: CancellationToken) {
        let leases = self.store.leases().clone();
        loop {
            tokio::select! {
                _ = leases.until_may_run(HUBSPOT_LEASE) => {}
                _ = stop.cancelled() => return,
            }
            // The lease is not handed back before the batch being sent is committed.
            let _in_use = leases.use_lease(HUBSPOT_LEASE);
            let lost = stop.child_token();
            let watch = tokio::spawn({
                let (leases, lost) = (leases.clone(), lost.clone());
                async move {
                    leases.lost(HUBSPOT_LEASE).await;
                    lost.cancel();
                }
            });
            self.run_while_held(&stop, &lost).await;
            watch.abort();
            if stop.is_cancelled() {
                return;
            }
            tracing::info!("the HubSpot sync goes on at another server");
        }
    }

    /// The sync's loop. It ends between batches once `lost` is cancelled, so a batch sent is
    /// committed before another server may send the next; a batch is dropped unfinished only at
    /// `stop`.
    async fn run_while_held(&mut self, stop: &CancellationToken, lost: &CancellationToken) {
        let mut failures: u32 = 0;
        // Whether the database was unreachable at the last read of the settings: said once per outage.
        let mut database_down = false;
        loop {
            let settings = self.store.hubspot_settings().await;
            match &settings {
                Err(err) if err.is_unavailable() => {
                    if !database_down {
                        tracing::warn!(error = %err, "the HubSpot sync waits for the database");
                    }
                    database_down = true;
                }
                Ok(_) if database_down => {
                    tracing::info!("the database is back; the HubSpot sync goes on");
                    database_down = false;
                }
                _ => {}
            }
            let pause = match settings {
                Ok(Some(settings)) if runnable(&settings) => match self.step_until(&settings, stop).await {
                    Ok(Progress::Worked) => {
                        failures = 0;
                        self.handle.set(SyncStatus::default());
                        Duration::ZERO
                    }
                    Ok(Progress::Idle) => {
                        failures = 0;
                        self.handle.set(SyncStatus::default());
                        IDLE_POLL
                    }
                    Err(StepError::Refused(reason)) => {
                        tracing::warn!(%reason, "HubSpot refused the access token; the sync is paused");
                        if let Err(err) = self.store.pause_hubspot(settings.version, reason).await {
                            tracing::warn!(error = %err, "could not record the HubSpot pause");
                        }
                        IDLE_POLL
                    }
                    Err(StepError::Retry(reason)) => {
                        failures = failures.saturating_add(1);
                        tracing::info!(%reason, failures, "a HubSpot batch failed; it will be sent again");
                        self.handle.set(SyncStatus { last_error: Some(reason), failures });
                        backoff(failures)
                    }
                },
                Ok(_) => IDLE_POLL,
                Err(err) if err.is_unavailable() => IDLE_POLL,
                Err(err) => {
                    tracing::warn!(error = %err, "reading the HubSpot settings failed");
                    IDLE_POLL
                }
            };
            if pause.is_zero() {
                if lost.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = lost.cancelled() => return,
                _ = self.handle.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// A step, dropped unfinished if the server stops: nothing is committed before HubSpot answers,
    /// so the batch is simply sent again after the next start.
    async fn step_until(
        &mut self,
        settings: &HubspotSettings,
        stop: &CancellationToken,
    ) -> Result<Progress, StepError> {
        tokio::select! {
            result = self.step(settings) => result,
            _ = stop.cancelled() => Ok(Progress::Idle),
        }
    }

    /// One batch from the first source that has one.
    async fn step(&mut self, settings: &HubspotSettings) -> Result<Progress, StepError> {
        let window = Duration::from_millis(u64::from(settings.rate_window_ms));
        if !self.budget.as_ref().is_some_and(|b| b.is(settings.rate_limit, window)) {
            self.budget = Some(Budget::new(settings.rate_limit, window));
        }
        let events = self.store.hubspot_events_after(settings.cursor, EVENTS_PER_BATCH).await?;
        if let Some(last) = events.last() {
            let mut batch = Batch::default();
            for event in &events {
                if let Some((kind, change)) = change_of(&event.name, &event.body) {
                    batch.add(kind, change);
                }
            }
            let mut commit = HubspotCommit { cursor: Some(last.seq), ..HubspotCommit::default() };
            self.send(settings, &batch, &mut commit).await?;
            self.store.commit_hubspot(commit).await?;
            return Ok(Progress::Worked);
        }
        if let Some(backfill) = &settings.backfill {
            return self.backfill_page(settings, backfill).await;
        }
        self.sweep(settings).await
    }

    async fn backfill_page(&mut self, settings: &HubspotSettings, at: &Backfill) -> Result<Progress, StepError> {
        let page = PageRequest { limit: BATCH_INPUTS, cursor: at.page_cursor.clone() };
        let records = self.store.list_records(&system_actor(), at.kind, page).await?;
        let mut batch = Batch::default();
        for record in &records.items {
            batch.add(at.kind, Change::Upsert(record.to_api_json()));
        }
        let next = match (records.next_cursor, at.kind) {
            (Some(cursor), kind) => Some(Backfill { kind, page_cursor: Some(cursor) }),
            (None, RecordKind::Contact) => Some(Backfill { kind: RecordKind::Deal, page_cursor: None }),
            (None, _) => None,
        };
        let mut commit =
            HubspotCommit { backfill: Some(next), backfill_sent: batch.len() as u64, ..HubspotCommit::default() };
        self.send(settings, &batch, &mut commit).await?;
        self.store.commit_hubspot(commit).await?;
        Ok(Progress::Worked)
    }

    async fn sweep(&mut self, settings: &HubspotSettings) -> Result<Progress, StepError> {
        if tokio::time::Instant::now() < self.sweep_resume_at {
            return Ok(Progress::Idle);
        }
        let deals = self.store.hubspot_sweep_deals(self.sweep_after, BATCH_INPUTS).await?;
        let Some(last) = deals.last() else {
            self.sweep_after = 0;
            self.sweep_resume_at = tokio::time::Instant::now() + SWEEP_PAUSE;
            return Ok(Progress::Idle);
        };
        let last_seq = last.seq;
        let mut batch = Batch::default();
        for deal in deals {
            match deal.current {
                None => batch.add(RecordKind::Deal, Change::Delete(json!({"id": deal.record_id}))),
                Some(record) => {
                    let record = record.to_api_json();
                    let properties = deal_properties(settings, &record);
                    let contact = record.get("contact_id").and_then(Value::as_str);
                    if mapping::deal_fingerprint(&properties, contact) != deal.mapping.sent {
                        batch.add(RecordKind::Deal, Change::Upsert(record));
                    }
                }
            }
        }
        if batch.is_empty() {
            // Nothing to send: the next page waits like an idle worker, which bounds what a sweep of
            // a large deal list costs (a page of 100 per poll) and never delays an event for long.
            self.sweep_after = last_seq;
            return Ok(Progress::Idle);
        }
        let mut commit = HubspotCommit::default();
        self.send(settings, &batch, &mut commit).await?;
        self.store.commit_hubspot(commit).await?;
        self.sweep_after = last_seq;
        Ok(Progress::Worked)
    }

    /// Sends a batch: contacts first, so that deals can be associated with them.
    async fn send(
        &mut self,
        settings: &HubspotSettings,
        batch: &Batch,
        commit: &mut HubspotCommit,
    ) -> Result<(), StepError> {
        let contact_ids = self.send_contacts(settings, &batch.contacts, commit).await?;
        self.send_deals(settings, &batch.deals, contact_ids, commit).await
    }

    /// Answers the HubSpot ids of the contacts now mapped in this batch.
    async fn send_contacts(
        &mut self,
        settings: &HubspotSettings,
        contacts: &[(String, Change)],
        commit: &mut HubspotCommit,
    ) -> Result<HashMap<String, String>, StepError> {
        let mut known = HashMap::new();
        if contacts.is_empty() {
            return Ok(known);
        }
        let ids = contacts.iter().map(|(id, _)| id.clone()).collect();
        let mapped = self.store.hubspot_mappings(RecordKind::Contact, ids).await?;
        let mut archive = Vec::new();
        let mut update = Vec::new();
        let mut upsert = Vec::new();
        for (id, change) in contacts {
            match (change, mapped.get(id)) {
                (Change::Delete(_), Some(mapping)) => archive.push((id.clone(), mapping.hubspot_id.clone())),
                (Change::Delete(_), None) => {
                    commit.log.push(skip(RecordKind::Contact, id, "deleted before it was ever sent to HubSpot"))
                }
                (Change::Upsert(record), Some(mapping)) => {
                    update.push((id.clone(), mapping.hubspot_id.clone(), mapping::contact_properties(record)))
                }
                (Change::Upsert(record), None) => match mapping::contact_email(record) {
                    Some(email) => upsert.push((id.clone(), email, mapping::contact_properties(record))),
                    None => commit.log.push(skip(
                        RecordKind::Contact,
                        id,
                        "has no email: HubSpot contacts are matched by email, so it is not sent until it has one",
                    )),
                },
            }
        }
        for chunk in archive.chunks(BATCH_INPUTS) {
            self.archive(settings, RecordKind::Contact, chunk, commit).await?;
        }
        for chunk in update.chunks(BATCH_INPUTS) {
            let inputs: Vec<Value> =
                chunk.iter().map(|(_, hub_id, properties)| json!({"id": hub_id, "properties": properties})).collect();
            let reply =
                self.call(settings, "/crm/v3/objects/contacts/batch/update", &json!({"inputs": inputs})).await?;
            let by_hub_id: HashMap<&str, &str> = chunk.iter().map(|(id, hub, _)| (hub.as_str(), id.as_str())).collect();
            let accepted = accepted_ids(&reply, |result| {
                let hub = result.get("id").and_then(Value::as_str)?;
                by_hub_id.get(hub).map(|id| ((*id).to_owned(), hub.to_owned()))
            });
            for (id, hub_id, properties) in chunk {
                let ok = accepted.contains_key(id);
                known.insert(id.clone(), hub_id.clone());
                commit.log.push(logged(RecordKind::Contact, id, "update", properties, &reply, ok.then_some(hub_id)));
            }
        }
        for chunk in upsert.chunks(BATCH_INPUTS) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|(_, email, properties)| json!({"idProperty": "email", "id": email, "properties": properties}))
                .collect();
            let reply =
                self.call(settings, "/crm/v3/objects/contacts/batch/upsert", &json!({"inputs": inputs})).await?;
            let by_email: HashMap<&str, &str> =
                chunk.iter().map(|(id, email, _)| (email.as_str(), id.as_str())).collect();
            let accepted = accepted_ids(&reply, |result| {
                let email = result.pointer("/properties/email").and_then(Value::as_str)?.to_lowercase();
                let id = by_email.get(email.as_str())?;
                Some(((*id).to_owned(), result.get("id").and_then(Value::as_str)?.to_owned()))
            });
            for (id, _, properties) in chunk {
                let hub_id = accepted.get(id);
                if let Some(hub_id) = hub_id {
                    known.insert(id.clone(), hub_id.clone());
                    commit.mappings.push(MappingChange::Set {
                        kind: RecordKind::Contact,
                        record_id: id.clone(),
                        mapping: HubspotMapping {
                            hubspot_id: hub_id.clone(),
                            sent: Value::Object(properties.clone()).to_string(),
                        },
                    });
                }
                commit.log.push(logged(RecordKind::Contact, id, "upsert", properties, &reply, hub_id));
            }
        }
        Ok(known)
    }

    async fn send_deals(
        &mut self,
        settings: &HubspotSettings,
        deals: &[(String, Change)],
        mut contacts: HashMap<String, String>,
        commit: &mut HubspotCommit,
    ) -> Result<(), StepError> {
        if deals.is_empty() {
            return Ok(());
        }
        let ids = deals.iter().map(|(id, _)| id.clone()).collect();
        let mapped = self.store.hubspot_mappings(RecordKind::Deal, ids).await?;
        let mut archive = Vec::new();
        let mut upsert = Vec::new();
        for (id, change) in deals {
            match (change, mapped.get(id)) {
                (Change::Delete(_), Some(mapping)) => archive.push((id.clone(), mapping.hubspot_id.clone())),
                (Change::Delete(_), None) => {
                    commit.log.push(skip(RecordKind::Deal, id, "deleted before it was ever sent to HubSpot"))
                }
                (Change::Upsert(record), _) => {
                    let contact = record.get("contact_id").and_then(Value::as_str).map(str::to_owned);
                    upsert.push((id.clone(), deal_properties(settings, record), contact));
                }
            }
        }
        for chunk in archive.chunks(BATCH_INPUTS) {
            self.archive(settings, RecordKind::Deal, chunk, commit).await?;
        }
        // The contacts these deals belong to that this batch did not send itself.
        let missing: Vec<String> = upsert
            .iter()
            .filter_map(|(_, _, contact)| contact.clone())
            .filter(|contact| !contacts.contains_key(contact))
            .collect();
        if !missing.is_empty() {
            for (id, mapping) in self.store.hubspot_mappings(RecordKind::Contact, missing).await? {
                contacts.insert(id, mapping.hubspot_id);
            }
        }
        for chunk in upsert.chunks(BATCH_INPUTS) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|(id, properties, _)| json!({"idProperty": ID_PROPERTY, "id": id, "properties": properties}))
                .collect();
            let reply = self.call(settings, "/crm/v3/objects/deals/batch/upsert", &json!({"inputs": inputs})).await?;
            let accepted = accepted_ids(&reply, |result| {
                let ours = result.pointer(&format!("/properties/{ID_PROPERTY}")).and_then(Value::as_str)?;
                Some((ours.to_owned(), result.get("id").and_then(Value::as_str)?.to_owned()))
            });
            let mut associations = Vec::new();
            for (id, properties, contact) in chunk {
                let hub_id = accepted.get(id);
                if let Some(hub_id) = hub_id {
                    commit.mappings.push(MappingChange::Set {
                        kind: RecordKind::Deal,
                        record_id: id.clone(),
                        mapping: HubspotMapping {
                            hubspot_id: hub_id.clone(),
                            sent: mapping::deal_fingerprint(properties, contact.as_deref()),
                        },
                    });
                    match contact.as_ref().map(|c| (c, contacts.get(c))) {
                        Some((_, Some(contact_hub_id))) => {
                            associations.push((id.clone(), hub_id.clone(), contact_hub_id.clone()))
                        }
                        Some((contact, None)) => commit.log.push(skip(
                            RecordKind::Deal,
                            id,
                            &format!("not associated: its contact {contact} is not in HubSpot (no email?)"),
                        )),
                        None => {}
                    }
                }
                commit.log.push(logged(RecordKind::Deal, id, "upsert", properties, &reply, hub_id));
            }
            self.associate(settings, &associations, commit).await?;
        }
        Ok(())
    }

    async fn associate(
        &mut self,
        settings: &HubspotSettings,
        pairs: &[(String, String, String)],
        commit: &mut HubspotCommit,
    ) -> Result<(), StepError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let inputs: Vec<Value> =
            pairs.iter().map(|(_, deal, contact)| json!({"from": {"id": deal}, "to": {"id": contact}})).collect();
        let reply = self
            .call(settings, "/crm/v4/associations/deals/contacts/batch/associate/default", &json!({"inputs": inputs}))
            .await?;
        if !is_success(&reply) {
            for (id, deal, contact) in pairs {
                let sent = json!({"deal": deal, "contact": contact});
                commit.log.push(logged(
                    RecordKind::Deal,
                    id,
                    "associate",
                    sent.as_object().unwrap_or(&Map::new()),
                    &reply,
                    None,
                ));
            }
        }
        Ok(())
    }

    async fn archive(
        &mut self,
        settings: &HubspotSettings,
        kind: RecordKind,
        chunk: &[(String, String)],
        commit: &mut HubspotCommit,
    ) -> Result<(), StepError> {
        let inputs: Vec<Value> = chunk.iter().map(|(_, hub_id)| json!({"id": hub_id})).collect();
        let path = format!("/crm/v3/objects/{}s/batch/archive", kind.name());
        let reply = self.call(settings, &path, &json!({"inputs": inputs})).await?;
        for (id, hub_id) in chunk {
            // An object already gone from HubSpot is as archived as it gets: the mapping goes either way.
            commit.mappings.push(MappingChange::Remove { kind, record_id: id.clone() });
            let sent = json!({"id": hub_id});
            commit.log.push(logged(kind, id, "archive", sent.as_object().unwrap_or(&Map::new()), &reply, Some(hub_id)));
        }
        Ok(())
    }

    /// One POST within the budget, with bounded retries on 429, 5xx and transport errors.
    /// A 401 or 403 stops the sync; any other answer is HubSpot's verdict on the batch.
    async fn call(&mut self, settings: &HubspotSettings, path: &str, body: &Value) -> Result<Reply, StepError> {
        let token = settings.access_token.as_deref().unwrap_or_default();
        let mut last = String::new();
        for attempt in 1..=CALL_ATTEMPTS {
            if let Some(budget) = self.budget.as_mut() {
                budget.acquire().await;
            }
            let reply = self.client.call(&settings.base_url, Method::POST, path, token, Some(body)).await;
            match reply.status {
                Some(401 | 403) => return Err(StepError::Refused(refusal(&reply))),
                Some(status) if status != 429 && status < 500 && reply.error.is_none() => return Ok(reply),
                _ => {}
            }
            last = reply.message();
            let wait = reply.retry_after.unwrap_or_else(|| backoff(attempt));
            if let Some(budget) = self.budget.as_mut() {
                budget.hold(wait);
            }
        }
        Err(StepError::Retry(format!("{path}: {last} (after {CALL_ATTEMPTS} attempts)")))
    }
}

fn runnable(settings: &HubspotSettings) -> bool {
    settings.enabled && settings.paused_reason.is_none() && settings.access_token.is_some()
}

fn deal_properties(settings: &HubspotSettings, record: &Value) -> Map<String, Value> {
    mapping::deal_properties(record, &settings.deal_pipeline, &settings.stage_map)
}

fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

fn is_success(reply: &Reply) -> bool {
    reply.error.is_none() && matches!(reply.status, Some(200..=299))
}

/// Why HubSpot refused the token, for the paused state.
fn refusal(reply: &Reply) -> String {
    let what = if reply.status == Some(403) {
        "HubSpot refused the access token's scopes (403)"
    } else {
        "HubSpot refused the access token (401): it was revoked, expired or mistyped"
    };
    match reply.body.get("message").and_then(Value::as_str) {
        Some(said) => format!("{what}: {}; save a working token to resume", said.chars().take(200).collect::<String>()),
        None => format!("{what}; save a working token to resume"),
    }
}

/// The records HubSpot accepted (our id -> HubSpot's id), read from a batch answer's `results`.
fn accepted_ids(reply: &Reply, read: impl Fn(&Value) -> Option<(String, String)>) -> BTreeMap<String, String> {
    if !is_success(reply) {
        return BTreeMap::new();
    }
    let results = reply.body.get("results").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    results.iter().filter_map(read).collect()
}

fn skip(kind: RecordKind, id: &str, why: &str) -> NewSyncLogEntry {
    NewSyncLogEntry {
        kind,
        record_id: id.to_owned(),
        action: "skip",
        sent: String::new(),
        status: None,
        hubspot_id: None,
        error: Some(why.to_owned()),
    }
}

fn logged(
    kind: RecordKind,
    id: &str,
    action: &'static str,
    sent: &Map<String, Value>,
    reply: &Reply,
    hub_id: Option<&String>,
) -> NewSyncLogEntry {
    let error = match (is_success(reply), hub_id) {
        (true, Some(_)) => None,
        (true, None) => Some(batch_error(reply).unwrap_or_else(|| "HubSpot did not return this record".to_owned())),
        (false, _) => Some(reply.message()),
    };
    NewSyncLogEntry {
        kind,
        record_id: id.to_owned(),
        action,
        sent: Value::Object(sent.clone()).to_string(),
        status: reply.status,
        hubspot_id: hub_id.cloned(),
        error,
    }
}

/// The first error of a 207 multi-status answer.
fn batch_error(reply: &Reply) -> Option<String> {
    let first = reply.body.get("errors")?.as_array()?.first()?;
    first.get("message").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_each_records_latest_change_in_first_seen_order() {
        let mut batch = Batch::default();
        batch.add(RecordKind::Contact, Change::Upsert(json!({"id": "a", "n": 1})));
        batch.add(RecordKind::Contact, Change::Upsert(json!({"id": "b"})));
        batch.add(RecordKind::Contact, Change::Upsert(json!({"id": "a", "n": 2})));
        batch.add(RecordKind::Contact, Change::Delete(json!({"id": "b"})));
        batch.add(RecordKind::Lead, Change::Upsert(json!({"id": "l"})));
        assert_eq!(batch.len(), 2);
        assert!(matches!(&batch.contacts[0], (id, Change::Upsert(r)) if id == "a" && r["n"] == 2));
        assert!(matches!(&batch.contacts[1], (id, Change::Delete(_)) if id == "b"));
    }

    #[test]
    fn only_contact_and_deal_events_are_mirrored() {
        let body = br#"{"event":"x","timestamp":"t","data":{"id":"con_a1"},"site_url":"s"}"#;
        assert!(matches!(change_of("contact.deleted", body), Some((RecordKind::Contact, Change::Delete(_)))));
        assert!(matches!(change_of("deal.won", body), Some((RecordKind::Deal, Change::Upsert(_)))));
        assert!(change_of("lead.created", body).is_none());
        assert!(change_of("task.completed", body).is_none());
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(3), FIRST_BACKOFF * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
