//! The HubSpot integration's tables: `hubspot_settings` (one row: settings and durable positions),
//! `hubspot_map` (our record -> HubSpot's id and what it was last sent) and `hubspot_log`.

use std::collections::{BTreeMap, HashMap};

use estate_crm_domain::RecordKind;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::ids;
use super::records::{RECORD_COLUMNS, parse_cursor, record_from_row};
use super::writer::WriteCtx;
use crate::*;

/// The sync log keeps this many newest lines; older ones go as new ones come.
const LOG_KEPT: i64 = 50_000;
/// The defaults a first save starts from.
const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
const DEFAULT_PIPELINE: &str = "default";
/// HubSpot's documented burst limit for private apps: 100 requests per 10 seconds.
const DEFAULT_RATE_LIMIT: u32 = 100;
const DEFAULT_RATE_WINDOW_MS: u32 = 10_000;

const SETTINGS_COLUMNS: &str = "access_token, base_url, deal_pipeline, stage_map, enabled, rate_limit, rate_window_ms, \
     paused_reason, version, cursor, backfill_kind, backfill_page, backfill_done";

fn settings_from_row(row: &Row<'_>) -> rusqlite::Result<HubspotSettings> {
    let stage_map: String = row.get(3)?;
    let backfill_kind: Option<String> = row.get(10)?;
    Ok(HubspotSettings {
        access_token: row.get(0)?,
        base_url: row.get(1)?,
        deal_pipeline: row.get(2)?,
        stage_map: serde_json::from_str(&stage_map).unwrap_or_default(),
        enabled: row.get(4)?,
        rate_limit: row.get(5)?,
        rate_window_ms: row.get(6)?,
        paused_reason: row.get(7)?,
        version: row.get(8)?,
        cursor: row.get(9)?,
        backfill: backfill_kind
            .and_then(|name| RecordKind::from_name(&name))
            .map(|kind| Ok::<_, rusqlite::Error>(Backfill { kind, page_cursor: row.get(11)? }))
            .transpose()?,
        backfill_done: row.get::<_, i64>(12)?.try_into().unwrap_or(0),
    })
}

pub(super) fn settings(conn: &Connection) -> Result<Option<HubspotSettings>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {SETTINGS_COLUMNS} FROM hubspot_settings WHERE id = 1"), [], settings_from_row)
        .optional()?)
}

/// Saves a settings change. The first save starts the cursor at the newest event: what happened
/// before the connection is the backfill's to send. Any change clears a pause, since a pause waits
/// for the settings to change.
pub(super) fn put_settings(ctx: &mut WriteCtx<'_>, patch: HubspotPatch) -> Result<HubspotSettings, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let current = settings(ctx.tx)?;
    let mut next = current.unwrap_or_else(|| HubspotSettings {
        access_token: None,
        base_url: DEFAULT_BASE_URL.to_owned(),
        deal_pipeline: DEFAULT_PIPELINE.to_owned(),
        stage_map: BTreeMap::new(),
        enabled: true,
        rate_limit: DEFAULT_RATE_LIMIT,
        rate_window_ms: DEFAULT_RATE_WINDOW_MS,
        paused_reason: None,
        version: 0,
        cursor: -1,
        backfill: None,
        backfill_done: 0,
    });
    if next.cursor < 0 {
        next.cursor = ctx.tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| row.get(0))?;
    }
    if let Some(token) = patch.access_token {
        next.access_token = Some(token);
    }
    if let Some(url) = patch.base_url {
        next.base_url = url;
    }
    if let Some(pipeline) = patch.deal_pipeline {
        next.deal_pipeline = pipeline;
    }
    if let Some(map) = patch.stage_map {
        next.stage_map = map;
    }
    if let Some(enabled) = patch.enabled {
        next.enabled = enabled;
    }
    if let Some(limit) = patch.rate_limit {
        next.rate_limit = limit;
    }
    if let Some(window) = patch.rate_window_ms {
        next.rate_window_ms = window;
    }
    next.paused_reason = None;
    next.version += 1;
    let stage_map = serde_json::to_string(&next.stage_map).map_err(|e| StoreError::internal("saving", e))?;
    ctx.tx.execute(
        "INSERT INTO hubspot_settings (id, access_token, base_url, deal_pipeline, stage_map, enabled, rate_limit,
             rate_window_ms, paused_reason, version, cursor, updated_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET access_token = ?1, base_url = ?2, deal_pipeline = ?3, stage_map = ?4,
             enabled = ?5, rate_limit = ?6, rate_window_ms = ?7, paused_reason = NULL, version = ?8, updated_at = ?10",
        params![
            next.access_token,
            next.base_url,
            next.deal_pipeline,
            stage_map,
            next.enabled,
            next.rate_limit,
            next.rate_window_ms,
            next.version,
            next.cursor,
            now
        ],
    )?;
    Ok(next)
}

/// Pauses the sync, unless the settings changed since the worker read them (version).
pub(super) fn pause(ctx: &mut WriteCtx<'_>, version: i64, reason: &str) -> Result<(), StoreError> {
    ctx.tx.execute(
        "UPDATE hubspot_settings SET paused_reason = ?2 WHERE id = 1 AND version = ?1",
        params![version, reason],
    )?;
    Ok(())
}

/// Starts (or starts again) a backfill from the first page of contacts.
pub(super) fn start_backfill(ctx: &mut WriteCtx<'_>) -> Result<HubspotSettings, StoreError> {
    let changed = ctx.tx.execute(
        "UPDATE hubspot_settings SET backfill_kind = 'contact', backfill_page = NULL, backfill_done = 0 WHERE id = 1",
        [],
    )?;
    if changed == 0 {
        return Err(StoreError::not_found("HubSpot is not connected yet; save its settings first"));
    }
    settings(ctx.tx)?.ok_or_else(|| StoreError::not_found("HubSpot is not connected yet"))
}

pub(super) fn events_after(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<SyncEvent>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT seq, name, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows = statement.query_map(params![after_seq, limit as i64], |row| {
        Ok(SyncEvent { seq: row.get(0)?, name: row.get(1)?, body: bytes::Bytes::from(row.get::<_, Vec<u8>>(2)?) })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn mappings(
    conn: &Connection,
    tag: &str,
    kind: RecordKind,
    record_ids: &[String],
) -> Result<HashMap<String, HubspotMapping>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT hubspot_id, sent FROM hubspot_map WHERE kind = ?1 AND record_seq = ?2")?;
    let mut found = HashMap::new();
    for id in record_ids {
        let Some(seq) = ids::parse(kind.id_prefix(), tag, id) else { continue };
        let mapping = statement
            .query_row(params![kind.name(), seq], |row| {
                Ok(HubspotMapping { hubspot_id: row.get(0)?, sent: row.get(1)? })
            })
            .optional()?;
        if let Some(mapping) = mapping {
            found.insert(id.clone(), mapping);
        }
    }
    Ok(found)
}

/// The next mapped deals after `after_seq`, each with its record as it is now (or `None`).
pub(super) fn sweep_deals(
    conn: &Connection,
    tag: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<SweptDeal>, StoreError> {
    let mut mapped = conn.prepare_cached(
        "SELECT record_seq, record_id, hubspot_id, sent FROM hubspot_map
         WHERE kind = 'deal' AND record_seq > ?1 ORDER BY record_seq LIMIT ?2",
    )?;
    let rows = mapped.query_map(params![after_seq, limit as i64], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            HubspotMapping { hubspot_id: row.get(2)?, sent: row.get(3)? },
        ))
    })?;
    let rows: Vec<_> = rows.collect::<Result<_, _>>()?;
    let mut record =
        conn.prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM records WHERE seq = ?1 AND kind = 'deal'"))?;
    let mut swept = Vec::with_capacity(rows.len());
    for (seq, record_id, mapping) in rows {
        let current = record.query_row([seq], |row| record_from_row(row, tag)).optional()?;
        swept.push(SweptDeal { seq, record_id, mapping, current });
    }
    Ok(swept)
}

pub(super) fn commit(ctx: &mut WriteCtx<'_>, commit: &HubspotCommit) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let tag = ctx.state.tag.clone();
    if let Some(cursor) = commit.cursor {
        ctx.tx.execute("UPDATE hubspot_settings SET cursor = MAX(cursor, ?1) WHERE id = 1", [cursor])?;
    }
    if let Some(backfill) = &commit.backfill {
        // Only a backfill still running moves on: one started again meanwhile begins afresh.
        ctx.tx.execute(
            "UPDATE hubspot_settings SET backfill_kind = ?1, backfill_page = ?2, backfill_done = backfill_done + ?3
             WHERE id = 1 AND backfill_kind IS NOT NULL",
            params![
                backfill.as_ref().map(|b| b.kind.name()),
                backfill.as_ref().and_then(|b| b.page_cursor.clone()),
                commit.backfill_sent as i64
            ],
        )?;
    }
    for change in &commit.mappings {
        match change {
            MappingChange::Set { kind, record_id, mapping } => {
                let Some(seq) = ids::parse(kind.id_prefix(), &tag, record_id) else { continue };
                ctx.tx.execute(
                    "INSERT INTO hubspot_map (kind, record_seq, record_id, hubspot_id, sent) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, record_seq) DO UPDATE SET hubspot_id = ?4, sent = ?5",
                    params![kind.name(), seq, record_id, mapping.hubspot_id, mapping.sent],
                )?;
            }
            MappingChange::Remove { kind, record_id } => {
                let Some(seq) = ids::parse(kind.id_prefix(), &tag, record_id) else { continue };
                ctx.tx.execute(
                    "DELETE FROM hubspot_map WHERE kind = ?1 AND record_seq = ?2",
                    params![kind.name(), seq],
                )?;
            }
        }
    }
    if !commit.log.is_empty() {
        let mut insert = ctx.tx.prepare_cached(
            "INSERT INTO hubspot_log (at, kind, record_id, action, sent, status, hubspot_id, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for line in &commit.log {
            insert.execute(params![
                now,
                line.kind.name(),
                line.record_id,
                line.action,
                line.sent,
                line.status,
                line.hubspot_id,
                line.error
            ])?;
        }
        ctx.tx.execute("DELETE FROM hubspot_log WHERE seq <= (SELECT MAX(seq) FROM hubspot_log) - ?1", [LOG_KEPT])?;
    }
    Ok(())
}

pub(super) fn log(
    conn: &Connection,
    record_id: Option<&str>,
    page: &PageRequest,
) -> Result<Page<SyncLogEntry>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let mut statement = conn.prepare_cached(
        "SELECT seq, at, kind, record_id, action, sent, status, hubspot_id, error FROM hubspot_log
         WHERE seq < ?1 AND (?2 IS NULL OR record_id = ?2) ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = statement.query_map(params![before, record_id, limit + 1], |row| {
        let seq: i64 = row.get(0)?;
        let kind: String = row.get(2)?;
        let action: String = row.get(4)?;
        Ok((
            seq,
            SyncLogEntry {
                id: ids::format("hsl", "", seq),
                at_ms: row.get(1)?,
                entry: NewSyncLogEntry {
                    kind: RecordKind::from_name(&kind).unwrap_or(RecordKind::Contact),
                    record_id: row.get(3)?,
                    action: action_name(&action),
                    sent: row.get(5)?,
                    status: row.get(6)?,
                    hubspot_id: row.get(7)?,
                    error: row.get(8)?,
                },
            },
        ))
    })?;
    super::records::paginate(rows.collect::<Result<Vec<_>, _>>()?, page.limit)
}

/// The stored action names, back as the static names the log entry carries.
fn action_name(stored: &str) -> &'static str {
    ["upsert", "update", "archive", "associate", "skip", "error"].into_iter().find(|a| *a == stored).unwrap_or("other")
}

pub(super) fn counts(conn: &Connection) -> Result<HubspotCounts, StoreError> {
    let mapped = |kind: &str| -> Result<u64, StoreError> {
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM hubspot_map WHERE kind = ?1", [kind], |row| row.get(0))?;
        Ok(n.try_into().unwrap_or(0))
    };
    let newest_event: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| row.get(0))?;
    let records: i64 =
        conn.query_row("SELECT COUNT(*) FROM records WHERE kind IN ('contact', 'deal')", [], |row| row.get(0))?;
    Ok(HubspotCounts {
        contacts: mapped("contact")?,
        deals: mapped("deal")?,
        newest_event,
        records: records.try_into().unwrap_or(0),
    })
}
