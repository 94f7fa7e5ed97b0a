//! The HubSpot integration's tables, as in `sqlite/hubspot.rs`.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::ClientWrapper;
use estate_crm_domain::RecordKind;
use tokio_postgres::Row;

use super::records::RECORD_COLUMNS;
use super::writer::WriteCtx;
use crate::prepare::{paginate, parse_cursor};
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

fn settings_from_row(row: &Row) -> Result<HubspotSettings, StoreError> {
    let stage_map: String = row.try_get(3)?;
    let backfill_kind: Option<String> = row.try_get(10)?;
    let backfill = match backfill_kind.as_deref().and_then(RecordKind::from_name) {
        Some(kind) => Some(Backfill { kind, page_cursor: row.try_get(11)? }),
        None => None,
    };
    Ok(HubspotSettings {
        access_token: row.try_get(0)?,
        base_url: row.try_get(1)?,
        deal_pipeline: row.try_get(2)?,
        stage_map: serde_json::from_str(&stage_map).unwrap_or_default(),
        enabled: row.try_get(4)?,
        rate_limit: u32::try_from(row.try_get::<_, i64>(5)?).unwrap_or(DEFAULT_RATE_LIMIT),
        rate_window_ms: u32::try_from(row.try_get::<_, i64>(6)?).unwrap_or(DEFAULT_RATE_WINDOW_MS),
        paused_reason: row.try_get(7)?,
        version: row.try_get(8)?,
        cursor: row.try_get(9)?,
        backfill,
        backfill_done: u64::try_from(row.try_get::<_, i64>(12)?).unwrap_or(0),
    })
}

pub(super) async fn settings(client: &ClientWrapper) -> Result<Option<HubspotSettings>, StoreError> {
    let statement =
        client.prepare_cached(&format!("SELECT {SETTINGS_COLUMNS} FROM hubspot_settings WHERE id = 1")).await?;
    client.query_opt(&statement, &[]).await?.as_ref().map(settings_from_row).transpose()
}

/// Saves a settings change. The first save starts the cursor at the newest event; any change clears
/// a pause.
pub(super) async fn put_settings(ctx: &mut WriteCtx, patch: HubspotPatch) -> Result<HubspotSettings, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let current = settings(&ctx.client).await?;
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
        next.cursor = ctx.client.query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[]).await?.try_get(0)?;
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
    ctx.client
        .execute(
            "INSERT INTO hubspot_settings (id, access_token, base_url, deal_pipeline, stage_map, enabled, rate_limit,
                 rate_window_ms, paused_reason, version, cursor, updated_at)
             VALUES (1, $1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET access_token = $1, base_url = $2, deal_pipeline = $3, stage_map = $4,
                 enabled = $5, rate_limit = $6, rate_window_ms = $7, paused_reason = NULL, version = $8, updated_at = $10",
            &[
                &next.access_token,
                &next.base_url,
                &next.deal_pipeline,
                &stage_map,
                &next.enabled,
                &i64::from(next.rate_limit),
                &i64::from(next.rate_window_ms),
                &next.version,
                &next.cursor,
                &now,
            ],
        )
        .await?;
    Ok(next)
}

/// Pauses the sync, unless the settings changed since the worker read them (version).
pub(super) async fn pause(ctx: &mut WriteCtx, version: i64, reason: &str) -> Result<(), StoreError> {
    ctx.client
        .execute("UPDATE hubspot_settings SET paused_reason = $2 WHERE id = 1 AND version = $1", &[&version, &reason])
        .await?;
    Ok(())
}

/// Starts (or starts again) a backfill from the first page of contacts.
pub(super) async fn start_backfill(ctx: &mut WriteCtx) -> Result<HubspotSettings, StoreError> {
    let changed = ctx
        .client
        .execute(
            "UPDATE hubspot_settings SET backfill_kind = 'contact', backfill_page = NULL, backfill_done = 0 WHERE id = 1",
            &[],
        )
        .await?;
    if changed == 0 {
        return Err(StoreError::not_found("HubSpot is not connected yet; save its settings first"));
    }
    settings(&ctx.client).await?.ok_or_else(|| StoreError::not_found("HubSpot is not connected yet"))
}

pub(super) async fn events_after(
    client: &ClientWrapper,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<SyncEvent>, StoreError> {
    let statement =
        client.prepare_cached("SELECT seq, name, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2").await?;
    client
        .query(&statement, &[&after_seq, &(limit as i64)])
        .await?
        .iter()
        .map(|row| {
            Ok(SyncEvent {
                seq: row.try_get(0)?,
                name: row.try_get(1)?,
                body: bytes::Bytes::from(row.try_get::<_, Vec<u8>>(2)?),
            })
        })
        .collect()
}

pub(super) async fn mappings(
    client: &ClientWrapper,
    tag: &str,
    kind: RecordKind,
    record_ids: &[String],
) -> Result<HashMap<String, HubspotMapping>, StoreError> {
    let seqs: Vec<i64> = record_ids.iter().filter_map(|id| ids::parse(kind.id_prefix(), tag, id)).collect();
    let statement = client
        .prepare_cached("SELECT record_id, hubspot_id, sent FROM hubspot_map WHERE kind = $1 AND record_seq = ANY($2)")
        .await?;
    let mut found = HashMap::new();
    for row in client.query(&statement, &[&kind.name(), &seqs]).await? {
        found.insert(row.try_get(0)?, HubspotMapping { hubspot_id: row.try_get(1)?, sent: row.try_get(2)? });
    }
    Ok(found)
}

/// The next mapped deals after `after_seq`, each with its record as it is now (or `None`).
pub(super) async fn sweep_deals(
    client: &ClientWrapper,
    tag: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<SweptDeal>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT m.record_seq, m.record_id, m.hubspot_id, m.sent, {} FROM hubspot_map m
             LEFT JOIN records r ON r.seq = m.record_seq AND r.kind = 'deal'
             WHERE m.kind = 'deal' AND m.record_seq > $1 ORDER BY m.record_seq LIMIT $2",
            RECORD_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ")
        ))
        .await?;
    let mut swept = Vec::new();
    for row in client.query(&statement, &[&after_seq, &(limit as i64)]).await? {
        let current = match row.try_get::<_, Option<i64>>(4)? {
            Some(_) => Some(record_from_row_at(&row, 4, tag)?),
            None => None,
        };
        swept.push(SweptDeal {
            seq: row.try_get(0)?,
            record_id: row.try_get(1)?,
            mapping: HubspotMapping { hubspot_id: row.try_get(2)?, sent: row.try_get(3)? },
            current,
        });
    }
    Ok(swept)
}

/// A record from the record columns starting at column `first` of a wider row.
fn record_from_row_at(row: &Row, first: usize, tag: &str) -> Result<Record, StoreError> {
    let seq: i64 = row.try_get(first)?;
    let kind_name: &str = row.try_get(first + 1)?;
    let kind = RecordKind::from_name(kind_name)
        .ok_or_else(|| StoreError::internal("reading a record", format!("unknown record kind {kind_name}")))?;
    let fields = serde_json::from_str(row.try_get(first + 5)?)
        .map_err(|err| StoreError::internal("reading a record's fields", err))?;
    Ok(Record {
        kind,
        id: ids::format(kind.id_prefix(), tag, seq),
        created_by: row.try_get(first + 2)?,
        created_at: crate::prepare::timestamp(row.try_get(first + 3)?),
        updated_at: crate::prepare::timestamp(row.try_get(first + 4)?),
        fields,
    })
}

pub(super) async fn commit(ctx: &mut WriteCtx, commit: &HubspotCommit) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let tag = ctx.state.tag.clone();
    let client = &ctx.client;
    if let Some(cursor) = commit.cursor {
        client.execute("UPDATE hubspot_settings SET cursor = GREATEST(cursor, $1) WHERE id = 1", &[&cursor]).await?;
    }
    if let Some(backfill) = &commit.backfill {
        // Only a backfill still running moves on: one started again meanwhile begins afresh.
        client
            .execute(
                "UPDATE hubspot_settings SET backfill_kind = $1, backfill_page = $2, backfill_done = backfill_done + $3
                 WHERE id = 1 AND backfill_kind IS NOT NULL",
                &[
                    &backfill.as_ref().map(|b| b.kind.name()),
                    &backfill.as_ref().and_then(|b| b.page_cursor.clone()),
                    &(commit.backfill_sent as i64),
                ],
            )
            .await?;
    }
    for change in &commit.mappings {
        match change {
            MappingChange::Set { kind, record_id, mapping } => {
                let Some(seq) = ids::parse(kind.id_prefix(), &tag, record_id) else { continue };
                client
                    .execute(
                        "INSERT INTO hubspot_map (kind, record_seq, record_id, hubspot_id, sent) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (kind, record_seq) DO UPDATE SET hubspot_id = $4, sent = $5",
                        &[&kind.name(), &seq, record_id, &mapping.hubspot_id, &mapping.sent],
                    )
                    .await?;
            }
            MappingChange::Remove { kind, record_id } => {
                let Some(seq) = ids::parse(kind.id_prefix(), &tag, record_id) else { continue };
                client
                    .execute("DELETE FROM hubspot_map WHERE kind = $1 AND record_seq = $2", &[&kind.name(), &seq])
                    .await?;
            }
        }
    }
    if !commit.log.is_empty() {
        let insert = client
            .prepare_cached(
                "INSERT INTO hubspot_log (at, kind, record_id, action, sent, status, hubspot_id, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await?;
        for line in &commit.log {
            let status = line.status.map(i32::from);
            client
                .execute(
                    &insert,
                    &[
                        &now,
                        &line.kind.name(),
                        &line.record_id,
                        &line.action,
                        &line.sent,
                        &status,
                        &line.hubspot_id,
                        &line.error,
                    ],
                )
                .await?;
        }
        client
            .execute("DELETE FROM hubspot_log WHERE seq <= (SELECT MAX(seq) FROM hubspot_log) - $1", &[&LOG_KEPT])
            .await?;
    }
    Ok(())
}

pub(super) async fn log(
    client: &ClientWrapper,
    record_id: Option<&str>,
    page: &PageRequest,
) -> Result<Page<SyncLogEntry>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let statement = client
        .prepare_cached(
            "SELECT seq, at, kind, record_id, action, sent, status, hubspot_id, error FROM hubspot_log
             WHERE seq < $1 AND ($2::TEXT IS NULL OR record_id = $2) ORDER BY seq DESC LIMIT $3",
        )
        .await?;
    let mut entries = Vec::new();
    for row in client.query(&statement, &[&before, &record_id, &(limit + 1)]).await? {
        let seq: i64 = row.try_get(0)?;
        let kind: &str = row.try_get(2)?;
        let action: &str = row.try_get(4)?;
        entries.push((
            seq,
            SyncLogEntry {
                id: ids::format("hsl", "", seq),
                at_ms: row.try_get(1)?,
                entry: NewSyncLogEntry {
                    kind: RecordKind::from_name(kind).unwrap_or(RecordKind::Contact),
                    record_id: row.try_get(3)?,
                    action: action_name(action),
                    sent: row.try_get(5)?,
                    status: row.try_get::<_, Option<i32>>(6)?.and_then(|s| u16::try_from(s).ok()),
                    hubspot_id: row.try_get(7)?,
                    error: row.try_get(8)?,
                },
            },
        ));
    }
    paginate(entries, page.limit)
}

/// The stored action names, back as the static names the log entry carries.
fn action_name(stored: &str) -> &'static str {
    ["upsert", "update", "archive", "associate", "skip", "error"].into_iter().find(|a| *a == stored).unwrap_or("other")
}

pub(super) async fn counts(client: &ClientWrapper) -> Result<HubspotCounts, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM hubspot_map WHERE kind = 'contact'),
                    (SELECT COUNT(*) FROM hubspot_map WHERE kind = 'deal'),
                    (SELECT COALESCE(MAX(seq), 0) FROM events),
                    (SELECT COUNT(*) FROM records WHERE kind IN ('contact', 'deal'))",
            &[],
        )
        .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(HubspotCounts {
        contacts: count(row.try_get(0)?),
        deals: count(row.try_get(1)?),
        newest_event: row.try_get(2)?,
        records: count(row.try_get(3)?),
    })
}
