//! What the HubSpot integration keeps: its settings (with the access token, never shown), its
//! durable positions (the event-log cursor and the backfill's place), the map
//! from our records to HubSpot's objects, and the sync log.
//!
//! The positions live beside the settings in one row, but the sync worker moves them only through
//! [`HubspotCommit`], in the same transaction as the mapping and log rows of the batch HubSpot
//! accepted: the cursor never runs ahead of what HubSpot has.

use std::collections::BTreeMap;

use std::fmt;

use bytes::Bytes;
use estate_crm_domain::{Record, RecordKind};

/// The integration's settings and positions as stored. Its `Debug` leaves the token out.
#[derive(Clone, PartialEq)]
pub struct HubspotSettings {
    /// The private app's access token. Never shown by the API, never logged.
    pub access_token: Option<String>,
    /// Where HubSpot's API is (`https://api.hubapi.com`, or a sandbox or stand-in).
    pub base_url: String,
    /// The HubSpot pipeline deals go into.
    pub deal_pipeline: String,
    /// Our deal stage -> the HubSpot stage id in that pipeline.
    pub stage_map: BTreeMap<String, String>,
    /// Whether the sync runs.
    pub enabled: bool,
    /// At most this many requests ...
    pub rate_limit: u32,
    /// ... in any window of this many milliseconds.
    pub rate_window_ms: u32,
    /// Why the sync stopped by itself (HubSpot refused the token), until the settings change.
    pub paused_reason: Option<String>,
    /// Raised by every settings change, so that a worker acting on older settings cannot pause newer ones.
    pub version: i64,
    /// The last event seq whose changes HubSpot has (or that needed nothing from HubSpot).
    pub cursor: i64,
    /// A backfill in progress, if any.
    pub backfill: Option<Backfill>,
    /// How many records the last or current backfill has sent.
    pub backfill_done: u64,
}

/// Where a backfill is: which kind it is walking, and the list cursor of its next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backfill {
    /// Contacts first, then deals.
    pub kind: RecordKind,
    /// The next page's cursor (`None`: the first page of that kind).
    pub page_cursor: Option<String>,
}

/// A settings change; `None` leaves a field as it is. Its `Debug` leaves the token out.
#[derive(Clone, Default)]
pub struct HubspotPatch {
    /// A new access token.
    pub access_token: Option<String>,
    /// A new base URL.
    pub base_url: Option<String>,
    /// A new pipeline.
    pub deal_pipeline: Option<String>,
    /// A new stage map.
    pub stage_map: Option<BTreeMap<String, String>>,
    /// Turns the sync on or off.
    pub enabled: Option<bool>,
    /// A new request budget.
    pub rate_limit: Option<u32>,
    /// A new budget window.
    pub rate_window_ms: Option<u32>,
}

/// An event of the log as the sync reads it.
#[derive(Debug, Clone)]
pub struct SyncEvent {
    /// Its place in the log.
    pub seq: i64,
    /// Its name (`contact.created`, ...).
    pub name: String,
    /// The exact body webhooks send: `data` is the record.
    pub body: Bytes,
}

/// One of our records as HubSpot knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubspotMapping {
    /// HubSpot's object id.
    pub hubspot_id: String,
    /// The properties last sent, as JSON, so that a sweep sends only what changed.
    pub sent: String,
}

/// A mapped deal as the sweep sees it: what HubSpot was sent, and the record now (`None`: deleted).
#[derive(Debug, Clone)]
pub struct SweptDeal {
    /// The record's seq, the sweep's position.
    pub seq: i64,
    /// Our id.
    pub record_id: String,
    /// What HubSpot knows.
    pub mapping: HubspotMapping,
    /// The record as it is now.
    pub current: Option<Record>,
}

/// A mapping change.
#[derive(Debug, Clone)]
pub enum MappingChange {
    /// HubSpot holds this record under this id, with these properties.
    Set {
        /// Contact or deal.
        kind: RecordKind,
        /// Our id.
        record_id: String,
        /// HubSpot's id and what it was sent.
        mapping: HubspotMapping,
    },
    /// HubSpot no longer holds this record (archived).
    Remove {
        /// Contact or deal.
        kind: RecordKind,
        /// Our id.
        record_id: String,
    },
}

/// A line of the sync log to write.
#[derive(Debug, Clone)]
pub struct NewSyncLogEntry {
    /// Contact or deal.
    pub kind: RecordKind,
    /// Our id.
    pub record_id: String,
    /// `upsert`, `update`, `archive`, `associate` or `skip`.
    pub action: &'static str,
    /// The properties sent (JSON), or what was skipped.
    pub sent: String,
    /// HubSpot's status code, if a request was made.
    pub status: Option<u16>,
    /// HubSpot's id, if known.
    pub hubspot_id: Option<String>,
    /// What went wrong or why it was skipped.
    pub error: Option<String>,
}

/// A line of the sync log as listed.
#[derive(Debug, Clone)]
pub struct SyncLogEntry {
    /// Its id.
    pub id: String,
    /// When it was written (Unix ms).
    pub at_ms: i64,
    /// The entry itself.
    pub entry: NewSyncLogEntry,
}

/// What one batch HubSpot accepted changes, committed at once.
#[derive(Debug, Clone, Default)]
pub struct HubspotCommit {
    /// Moves the event cursor here.
    pub cursor: Option<i64>,
    /// Moves the backfill on: `Some(None)` ends it; `backfill_sent` records are added to its count.
    pub backfill: Option<Option<Backfill>>,
    /// Records the backfill sent in this batch.
    pub backfill_sent: u64,
    /// The mapping rows to write or remove.
    pub mappings: Vec<MappingChange>,
    /// The sync log lines.
    pub log: Vec<NewSyncLogEntry>,
}

/// Figures for the integration's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubspotCounts {
    /// Contacts HubSpot holds for us.
    pub contacts: u64,
    /// Deals HubSpot holds for us.
    pub deals: u64,
    /// The newest event's seq (the cursor's distance to it is the backlog).
    pub newest_event: i64,
    /// Contacts and deals in estate-crm (the backfill's total).
    pub records: u64,
}

/// Shows whether a token is set, never the token: settings may end up in a log line.
fn redacted(token: &Option<String>) -> &'static str {
    if token.is_some() { "<set>" } else { "<none>" }
}

impl fmt::Debug for HubspotSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubspotSettings")
            .field("access_token", &redacted(&self.access_token))
            .field("base_url", &self.base_url)
            .field("deal_pipeline", &self.deal_pipeline)
            .field("stage_map", &self.stage_map)
            .field("enabled", &self.enabled)
            .field("rate_limit", &self.rate_limit)
            .field("rate_window_ms", &self.rate_window_ms)
            .field("paused_reason", &self.paused_reason)
            .field("version", &self.version)
            .field("cursor", &self.cursor)
            .field("backfill", &self.backfill)
            .field("backfill_done", &self.backfill_done)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for HubspotPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubspotPatch")
            .field("access_token", &redacted(&self.access_token))
            .field("base_url", &self.base_url)
            .field("deal_pipeline", &self.deal_pipeline)
            .field("stage_map", &self.stage_map)
            .field("enabled", &self.enabled)
            .field("rate_limit", &self.rate_limit)
            .field("rate_window_ms", &self.rate_window_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let patch = HubspotPatch { access_token: Some("pat-secret-123".into()), ..HubspotPatch::default() };
        let shown = format!("{patch:?}");
        assert!(!shown.contains("pat-secret-123") && shown.contains("<set>"), "{shown}");
    }
}
