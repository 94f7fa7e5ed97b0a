//! Endpoints, fan-out, deliveries and their attempts.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight, RetrySchedule};
use estate_crm_domain::{EventName, FieldErrors};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::fanout;
use super::records::{insert_event, paginate, parse_cursor};
use super::writer::{Route, WriteCtx};
use crate::{
    Attempt, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, DueDelivery, Endpoint, EndpointPatch,
    EndpointSource, EndpointSpec, NextStep, Outcome, Page, PageRequest, Rotation, StoreError, TestDelivery, ids,
};

pub(super) const ENDPOINT_PREFIX: &str = "ep";
pub(super) const DELIVERY_PREFIX: &str = "msg";

/// Notes the active endpoints subscribed to this event, so that their lanes wake once the change
/// commits. Nothing is written per endpoint: the event is owed to them through their cursors
/// (see `fanout`).
pub(super) fn wake_subscribers(ctx: &mut WriteCtx<'_>, event: EventName) -> Result<(), StoreError> {
    if ctx.state.routes.is_none() {
        ctx.state.routes = Some(load_routes(ctx.tx, &ctx.state.tag)?);
    }
    let routes = ctx.state.routes.as_deref().unwrap_or_default();
    for route in routes.iter().filter(|r| r.events.matches(event)) {
        if !ctx.changes.endpoints.contains(&route.id) {
            ctx.changes.endpoints.insert(route.id.clone());
        }
    }
    Ok(())
}

fn load_routes(conn: &Connection, tag: &str) -> Result<Vec<Route>, StoreError> {
    let mut statement = conn.prepare_cached("SELECT seq, events FROM endpoints WHERE active = 1 ORDER BY seq")?;
    let routes = statement.query_map([], |row| {
        let seq: i64 = row.get(0)?;
        let events: String = row.get(1)?;
        Ok((seq, events))
    })?;
    let mut out = Vec::new();
    for route in routes {
        let (seq, events) = route?;
        let events = EventFilter::parse(&Value::String(events))
            .map_err(|e| StoreError::internal("reading an endpoint's events", e))?;
        out.push(Route { id: ids::format(ENDPOINT_PREFIX, tag, seq), events });
    }
    Ok(out)
}

const ENDPOINT_COLUMNS: &str = "seq, url, events, secret, previous_secret, previous_secret_until, active, \
    disabled_reason, description, retry_schedule, max_in_flight, is_primary, created_at, updated_at, source, format";

fn endpoint_from_row(row: &Row<'_>, tag: &str) -> rusqlite::Result<Endpoint> {
    let bad = |column: usize, message: String| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
    };
    let events: String = row.get(2)?;
    let schedule: Option<String> = row.get(9)?;
    let max_in_flight: i64 = row.get(10)?;
    let source: String = row.get(14)?;
    let format: String = row.get(15)?;
    Ok(Endpoint {
        id: ids::format(ENDPOINT_PREFIX, tag, row.get(0)?),
        url: row.get(1)?,
        events: EventFilter::parse(&Value::String(events)).map_err(|e| bad(2, e))?,
        secret: row.get(3)?,
        previous_secret: row.get(4)?,
        previous_secret_until: row.get(5)?,
        active: row.get(6)?,
        disabled_reason: row.get(7)?,
        description: row.get(8)?,
        retry_schedule: schedule.map(|s| RetrySchedule::parse_str(&s)).transpose().map_err(|e| bad(9, e))?,
        max_in_flight: MaxInFlight::new(max_in_flight).map_err(|e| bad(10, e))?,
        is_primary: row.get(11)?,
        created_at: millis(row.get(12)?),
        updated_at: millis(row.get(13)?),
        source: EndpointSource::parse(&source).ok_or_else(|| bad(14, format!("unknown endpoint source {source}")))?,
        format: BodyFormat::parse(&format).map_err(|e| bad(15, e))?,
    })
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn endpoint_seq(tag: &str, id: &str) -> Result<i64, StoreError> {
    ids::parse(ENDPOINT_PREFIX, tag, id).ok_or_else(|| StoreError::not_found("no endpoint has this id"))
}

fn find_endpoint(conn: &Connection, tag: &str, seq: i64) -> Result<Option<Endpoint>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE seq = ?1"))?
        .query_row([seq], |row| endpoint_from_row(row, tag))
        .optional()?)
}

pub(super) fn get_endpoint(conn: &Connection, tag: &str, id: &str) -> Result<Endpoint, StoreError> {
    find_endpoint(conn, tag, endpoint_seq(tag, id)?)?.ok_or_else(|| StoreError::not_found("no endpoint has this id"))
}

pub(super) fn primary_endpoint(conn: &Connection, tag: &str) -> Result<Option<Endpoint>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE is_primary = 1"))?
        .query_row([], |row| endpoint_from_row(row, tag))
        .optional()?)
}

pub(super) fn list_endpoints(conn: &Connection, tag: &str, page: &PageRequest) -> Result<Page<Endpoint>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
    ))?;
    let rows = statement
        .query_map(params![before, limit + 1], |row| Ok((row.get::<_, i64>(0)?, endpoint_from_row(row, tag)?)))?;
    paginate(rows.collect::<Result<Vec<_>, _>>()?, page.limit)
}

pub(super) fn create_endpoint(
    ctx: &mut WriteCtx<'_>,
    spec: &EndpointSpec,
    primary: bool,
) -> Result<Endpoint, StoreError> {
    let now = Utc::now().timestamp_millis();
    ctx.tx
        .prepare_cached(
            "INSERT INTO endpoints (url, events, secret, active, description, retry_schedule, max_in_flight,
                                    is_primary, created_at, updated_at, cursor, source, format)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, (SELECT COALESCE(MAX(seq), 0) FROM events), ?10, ?11)",
        )?
        .execute(params![
            spec.url,
            spec.events.to_string(),
            spec.secret,
            spec.active,
            spec.description,
            spec.retry_schedule.as_ref().map(ToString::to_string),
            spec.max_in_flight.get() as i64,
            primary,
            now,
            if primary { EndpointSource::Settings.as_str() } else { spec.source.as_str() },
            spec.format.as_str(),
        ])?;
    let seq = ctx.tx.last_insert_rowid();
    if seq > fanout::MAX_ENDPOINT_SEQ {
        // A delivery's key holds its endpoint's seq in 20 bits; seqs are never reused. The savepoint
        // is rolled back, so nothing of this endpoint stays.
        return Err(StoreError::conflict(FieldErrors::single(
            "url",
            format!(
                "this database has numbered {} endpoints over its life, the most it can; \
                 change an existing endpoint instead",
                fanout::MAX_ENDPOINT_SEQ
            ),
        )));
    }
    ctx.changes.settings_changed = true;
    find_endpoint(ctx.tx, &ctx.state.tag, seq)?
        .ok_or_else(|| StoreError::internal("creating an endpoint", "it vanished"))
}

pub(super) fn update_endpoint(ctx: &mut WriteCtx<'_>, id: &str, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, id)?;
    let old =
        find_endpoint(ctx.tx, &ctx.state.tag, seq)?.ok_or_else(|| StoreError::not_found("no endpoint has this id"))?;
    apply_patch(ctx, seq, old, patch)
}

pub(super) fn put_primary_endpoint(ctx: &mut WriteCtx<'_>, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
    match primary_endpoint(ctx.tx, &ctx.state.tag)? {
        Some(old) => {
            let seq = endpoint_seq(&ctx.state.tag, &old.id)?;
            apply_patch(ctx, seq, old, patch)
        }
        None => {
            let spec = EndpointSpec::from_patch(patch)
                .ok_or_else(|| StoreError::invalid(FieldErrors::single("url", "is required")))?;
            create_endpoint(ctx, &spec, true)
        }
    }
}

fn apply_patch(ctx: &mut WriteCtx<'_>, seq: i64, old: Endpoint, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
    let now = Utc::now().timestamp_millis();
    let mut new = patch.applied_to(&old, now);
    if new.events != old.events || new.active != old.active {
        let subscription = fanout::subscription(ctx.tx, seq)?
            .ok_or_else(|| StoreError::internal("changing an endpoint", "it vanished"))?;
        settle(ctx, &subscription, now)?;
    }
    ctx.tx
        .prepare_cached(
            "UPDATE endpoints SET url = ?2, events = ?3, secret = ?4, previous_secret = ?5, previous_secret_until = ?6,
                active = ?7, disabled_reason = ?8, description = ?9, retry_schedule = ?10, max_in_flight = ?11,
                updated_at = ?12, format = ?13
             WHERE seq = ?1",
        )?
        .execute(params![
            seq,
            new.url,
            new.events.to_string(),
            new.secret,
            new.previous_secret,
            new.previous_secret_until,
            new.active,
            new.disabled_reason,
            new.description,
            new.retry_schedule.as_ref().map(ToString::to_string),
            new.max_in_flight.get() as i64,
            now,
            new.format.as_str(),
        ])?;
    ctx.changes.settings_changed = true;
    new.updated_at = millis(now);
    Ok(new)
}

/// Settles a subscription about to change (see `fanout::settle_subscription`) and notes its
/// pending rows for the in-memory reads (`recent`). Any settings change drops every view anyway;
/// the rows' newest event keeps later reads from before it going to memory.
fn settle(ctx: &mut WriteCtx<'_>, old: &fanout::Subscription, now_ms: i64) -> Result<(), StoreError> {
    fanout::settle_subscription(ctx.tx, old, now_ms)?;
    let newest_pending: Option<i64> = ctx
        .tx
        .prepare_cached("SELECT MAX(seq) FROM deliveries WHERE endpoint_seq = ?1 AND status = 0")?
        .query_row([old.seq], |row| row.get(0))?;
    if let Some(key) = newest_pending {
        ctx.recent.row(old.seq, fanout::split_key(key).0);
        ctx.recent.pending(old.seq);
    }
    Ok(())
}

/// Gives an endpoint a new secret; the one it replaces keeps signing for `grace_ms` (none when 0).
pub(super) fn rotate_secret(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    secret: String,
    grace_ms: i64,
) -> Result<Rotation, StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, id)?;
    let mut endpoint =
        find_endpoint(ctx.tx, &ctx.state.tag, seq)?.ok_or_else(|| StoreError::not_found("no endpoint has this id"))?;
    let now = Utc::now().timestamp_millis();
    let previous = endpoint.secret.take().filter(|_| grace_ms > 0);
    let until = previous.as_ref().map(|_| now.saturating_add(grace_ms));
    ctx.tx.execute(
        "UPDATE endpoints SET secret = ?2, previous_secret = ?3, previous_secret_until = ?4, updated_at = ?5
         WHERE seq = ?1",
        params![seq, secret, previous, until, now],
    )?;
    ctx.changes.settings_changed = true;
    endpoint.secret = Some(secret);
    endpoint.previous_secret = previous;
    endpoint.previous_secret_until = until;
    endpoint.updated_at = millis(now);
    Ok(Rotation { endpoint, previous_valid_until: until })
}

/// Deleting an endpoint removes its deliveries too: nothing more is sent to it, and its log goes with it.
pub(super) fn delete_endpoint(ctx: &mut WriteCtx<'_>, id: &str) -> Result<(), StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, id)?;
    if !delete_endpoint_seq(ctx, seq)? {
        return Err(StoreError::not_found("no endpoint has this id"));
    }
    Ok(())
}

/// Deletes an endpoint and its deliveries; false when there was none.
fn delete_endpoint_seq(ctx: &mut WriteCtx<'_>, seq: i64) -> Result<bool, StoreError> {
    let deleted = ctx.tx.execute("DELETE FROM endpoints WHERE seq = ?1", [seq])?;
    if deleted == 0 {
        return Ok(false);
    }
    ctx.tx.execute(
        "DELETE FROM attempts WHERE delivery_seq IN (SELECT seq FROM deliveries WHERE endpoint_seq = ?1)",
        [seq],
    )?;
    ctx.tx.execute("DELETE FROM deliveries WHERE endpoint_seq = ?1", [seq])?;
    ctx.changes.settings_changed = true;
    Ok(true)
}

const DELIVERY_COLUMNS: &str = "d.seq, d.event_seq, e.name, d.endpoint_seq, d.status, d.attempts, d.next_attempt_at, \
    d.last_status_code, d.last_error, d.created_at, d.updated_at";

fn delivery_from_row(row: &Row<'_>, tag: &str) -> rusqlite::Result<Delivery> {
    let name: String = row.get(2)?;
    let status = DeliveryStatus::from_code(row.get(4)?);
    let endpoint_seq: Option<i64> = row.get(3)?;
    Ok(Delivery {
        id: ids::format(DELIVERY_PREFIX, tag, row.get(0)?),
        event_id: ids::format("evt", tag, row.get(1)?),
        event: EventName::parse(&name).unwrap_or(EventName::WebhookTest),
        endpoint_id: endpoint_seq.map(|seq| ids::format(ENDPOINT_PREFIX, tag, seq)),
        status,
        attempts: row.get(5)?,
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| row.get(6)).transpose()?,
        last_status_code: row.get(7)?,
        last_error: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

fn delivery_seq(tag: &str, id: &str) -> Result<i64, StoreError> {
    ids::parse(DELIVERY_PREFIX, tag, id).ok_or_else(|| StoreError::not_found("no delivery has this id"))
}

pub(super) fn list_deliveries(
    conn: &Connection,
    tag: &str,
    filter: &DeliveryFilter,
    page: &PageRequest,
) -> Result<Page<Delivery>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    // An id that is not one of ours matches nothing, like any other filter value with no match.
    let endpoint = filter.endpoint_id.as_ref().map(|id| ids::parse(ENDPOINT_PREFIX, tag, id).unwrap_or(-1));
    let mut statement = conn.prepare_cached(&rows_query(filter))?;
    let rows = statement.query_map(
        params![
            before,
            endpoint,
            filter.status.map(DeliveryStatus::code),
            filter.event.map(EventName::as_str),
            limit + 1
        ],
        |row| Ok((row.get::<_, i64>(0)?, delivery_from_row(row, tag)?)),
    )?;
    let mut deliveries = rows.collect::<Result<Vec<_>, _>>()?;
    if filter.status.is_none_or(|status| status == DeliveryStatus::Pending) {
        for subscription in fanout::active_subscriptions(conn)? {
            if endpoint.is_some_and(|seq| seq != subscription.seq) {
                continue;
            }
            deliveries.extend(owed_deliveries(conn, tag, &subscription, filter.event, before, page.limit + 1)?);
        }
        deliveries.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
        deliveries.truncate(page.limit + 1);
    }
    paginate(deliveries, page.limit)
}

/// The delivery log's query for these filters. Only the filters given are written, so that SQLite
/// can use the partial indexes (`failed_deliveries`, `pending_by_endpoint`) that a condition such as
/// `(?3 IS NULL OR d.status = ?3)` hides from it; the parameters keep their numbers (an absent one is
/// bound to NULL and unused). With an event, the events of that name lead (`events_by_name`, newest
/// first) and each one's deliveries are the key range of its seq (see `fanout::delivery_key`),
/// so a rare event costs no scan of a million others.
fn rows_query(filter: &DeliveryFilter) -> String {
    let bits = fanout::ENDPOINT_BITS;
    let mut conditions: Vec<String> = Vec::new();
    let (from, order) = if filter.event.is_some() {
        // The event's own key range is the only index range on `d` (a unary `+` keeps a condition
        // off the index): with the cursor as a range bound instead, each event would scan to the end.
        conditions.extend([
            "e.name = ?4".to_owned(),
            format!("e.seq <= (?1 >> {bits})"),
            format!("d.seq >= (e.seq << {bits})"),
            format!("d.seq < ((e.seq + 1) << {bits})"),
            "+d.seq < ?1".to_owned(),
        ]);
        if filter.endpoint_id.is_some() {
            conditions.push(format!("d.seq = ((e.seq << {bits}) | ?2)"));
        }
        if filter.status.is_some() {
            conditions.push("+d.status = ?3".to_owned());
        }
        // CROSS JOIN keeps the events first; their order is the deliveries' order.
        ("events e CROSS JOIN deliveries d", "e.seq DESC, d.seq DESC")
    } else {
        conditions.push("d.seq < ?1".to_owned());
        if filter.endpoint_id.is_some() {
            conditions.push("d.endpoint_seq = ?2".to_owned());
        }
        if filter.status.is_some() {
            conditions.push("d.status = ?3".to_owned());
        }
        ("deliveries d JOIN events e ON e.seq = d.event_seq", "d.seq DESC")
    };
    // Every parameter is named once, so that all five bind whichever filters are given.
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM {from} WHERE {} AND (?2 IS NULL OR 1) AND (?3 IS NULL OR 1) AND (?4 IS NULL OR 1)
         ORDER BY {order} LIMIT ?5",
        conditions.join(" AND ")
    )
}

/// Up to `limit` of an endpoint's owed deliveries with keys below `before`, newest first, as the log
/// shows them: pending, no attempt yet, due since their event.
fn owed_deliveries(
    conn: &Connection,
    tag: &str,
    subscription: &fanout::Subscription,
    event: Option<EventName>,
    before: i64,
    limit: usize,
) -> Result<Vec<(i64, Delivery)>, StoreError> {
    let query = fanout::OwedQuery {
        after: 0,
        up_to: fanout::split_key(before).0,
        name: event,
        newest_first: true,
        limit,
        with_body: false,
    };
    let mut out = Vec::new();
    for owed in fanout::owed_events(conn, subscription, &query)? {
        let key = fanout::delivery_key(owed.seq, subscription.seq);
        if key < before {
            out.push((key, owed_delivery(tag, subscription.seq, &owed)?));
        }
    }
    Ok(out)
}

fn owed_delivery(tag: &str, endpoint_seq: i64, owed: &fanout::OwedEvent) -> Result<Delivery, StoreError> {
    let event = EventName::parse(&owed.name)
        .ok_or_else(|| StoreError::internal("reading an event", format!("unknown event {}", owed.name)))?;
    let created_ms = owed.created_at.saturating_mul(1000);
    Ok(Delivery {
        id: ids::format(DELIVERY_PREFIX, tag, fanout::delivery_key(owed.seq, endpoint_seq)),
        event_id: ids::format("evt", tag, owed.seq),
        event,
        endpoint_id: Some(ids::format(ENDPOINT_PREFIX, tag, endpoint_seq)),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(created_ms),
        last_status_code: None,
        last_error: None,
        created_at: created_ms,
        updated_at: created_ms,
    })
}

/// The owed delivery with this key, if it is one: its endpoint is active and subscribed, and its
/// event is after the cursor with no row.
fn find_owed(conn: &Connection, key: i64, with_body: bool) -> Result<Option<(i64, fanout::OwedEvent)>, StoreError> {
    let (event_seq, endpoint_seq) = fanout::split_key(key);
    let Some(subscription) = fanout::subscription(conn, endpoint_seq)? else {
        return Ok(None);
    };
    Ok(fanout::owed_event(conn, &subscription, event_seq, with_body)?.map(|owed| (endpoint_seq, owed)))
}

pub(super) fn get_delivery(conn: &Connection, tag: &str, id: &str) -> Result<DeliveryDetail, StoreError> {
    let seq = delivery_seq(tag, id)?;
    let found = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.seq = ?1"
        ))?
        .query_row([seq], |row| Ok((delivery_from_row(row, tag)?, row.get::<_, Vec<u8>>(11)?)))
        .optional()?;
    let Some((delivery, body)) = found else {
        return match find_owed(conn, seq, true)? {
            Some((endpoint_seq, owed)) => Ok(DeliveryDetail {
                delivery: owed_delivery(tag, endpoint_seq, &owed)?,
                body: Bytes::from(owed.body.unwrap_or_default()),
                attempts: Vec::new(),
            }),
            None => Err(StoreError::not_found("no delivery has this id")),
        };
    };
    let mut statement = conn.prepare_cached(
        "SELECT number, started_at, duration_ms, status_code, error, response FROM attempts
         WHERE delivery_seq = ?1 ORDER BY number",
    )?;
    let attempts = statement.query_map([seq], attempt_from_row)?.collect::<Result<Vec<_>, _>>()?;
    let mut attempts: Vec<Attempt> = attempts.into_iter().filter(|a| a.number < delivery.attempts).collect();
    let latest = conn
        .prepare_cached(
            "SELECT attempts, last_attempt_at, last_duration_ms, last_status_code, last_error, last_response
             FROM deliveries WHERE seq = ?1 AND last_attempt_at IS NOT NULL",
        )?
        .query_row([seq], attempt_from_row)
        .optional()?;
    attempts.extend(latest);
    Ok(DeliveryDetail { delivery, body: Bytes::from(body), attempts })
}

/// An attempt from `number, started_at, duration_ms, status_code, error, response`, whether it comes
/// from the history or from the delivery's own latest-attempt columns.
fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        number: row.get(0)?,
        started_at: row.get(1)?,
        duration_ms: row.get(2)?,
        status_code: row.get(3)?,
        error: row.get(4)?,
        response: Bytes::from(row.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
    })
}

pub(super) fn retry_delivery(ctx: &mut WriteCtx<'_>, id: &str, now_ms: i64) -> Result<String, StoreError> {
    let seq = delivery_seq(&ctx.state.tag, id)?;
    let endpoint: Option<Option<i64>> =
        ctx.tx.query_row("SELECT endpoint_seq FROM deliveries WHERE seq = ?1", [seq], |row| row.get(0)).optional()?;
    let Some(endpoint) = endpoint else {
        // An owed delivery is pending and due already: its first attempt comes in event order.
        return match find_owed(ctx.tx, seq, false)? {
            Some((endpoint_seq, _)) => Ok(ids::format(ENDPOINT_PREFIX, &ctx.state.tag, endpoint_seq)),
            None => Err(StoreError::not_found("no delivery has this id")),
        };
    };
    let Some(endpoint) = endpoint else {
        return Err(StoreError::invalid(FieldErrors::single(
            "id",
            "this test was sent to settings that were never saved; there is no endpoint to retry it to",
        )));
    };
    ctx.tx.execute(
        "UPDATE deliveries SET status = 0, next_attempt_at = ?2, updated_at = ?2 WHERE seq = ?1",
        params![seq, now_ms],
    )?;
    let endpoint_id = ids::format(ENDPOINT_PREFIX, &ctx.state.tag, endpoint);
    ctx.recent.pending(endpoint);
    ctx.changes.rescan.insert(endpoint_id.clone());
    Ok(endpoint_id)
}

pub(super) fn retry_failed(ctx: &mut WriteCtx<'_>, endpoint_id: &str, now_ms: i64) -> Result<u64, StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, endpoint_id)?;
    find_endpoint(ctx.tx, &ctx.state.tag, seq)?.ok_or_else(|| StoreError::not_found("no endpoint has this id"))?;
    let changed = ctx.tx.execute(
        "UPDATE deliveries SET status = 0, next_attempt_at = ?2, updated_at = ?2 WHERE endpoint_seq = ?1 AND status = 2",
        params![seq, now_ms],
    )?;
    ctx.recent.pending(seq);
    ctx.changes.rescan.insert(endpoint_id.to_owned());
    Ok(changed as u64)
}

/// The test delivery starts out `failed` with no attempt, so the dispatcher never claims it; the
/// outcome of the one attempt the test button makes replaces that.
pub(super) fn begin_test_delivery(
    ctx: &mut WriteCtx<'_>,
    endpoint_id: Option<&str>,
    body: &[u8],
) -> Result<TestDelivery, StoreError> {
    let endpoint = endpoint_id.map(|id| endpoint_seq(&ctx.state.tag, id)).transpose()?;
    let now = Utc::now();
    let event_seq = insert_event(ctx, EventName::WebhookTest, now.timestamp(), body, None)?;
    let seq = fanout::delivery_key(event_seq, endpoint.unwrap_or(0));
    ctx.tx.execute(
        "INSERT INTO deliveries (seq, event_seq, endpoint_seq, status, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, 2, 0, ?4, ?4)",
        params![seq, event_seq, endpoint, now.timestamp_millis()],
    )?;
    Ok(TestDelivery { seq, id: ids::format(DELIVERY_PREFIX, &ctx.state.tag, seq) })
}

/// Up to `limit` due deliveries of an endpoint with keys above `after_key`, in key (event) order:
/// rows due again (retries, deliveries retried by hand) merged with owed first attempts.
///
/// The two statements need not share a snapshot: a row written between them is one whose first
/// attempt just ended, so it is not due now, and the lane that made it has its retry time. Rows are
/// read first, so no delivery can be read twice.
pub(super) fn due_deliveries(
    conn: &Connection,
    tag: &str,
    endpoint_id: &str,
    after_key: i64,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<DueDelivery>, StoreError> {
    let endpoint = endpoint_seq(tag, endpoint_id)?;
    let mut statement = conn.prepare_cached(
        "SELECT d.seq, d.attempts, e.name, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.endpoint_seq = ?1 AND d.status = 0 AND d.seq > ?2 AND d.next_attempt_at <= ?3
         ORDER BY d.seq LIMIT ?4",
    )?;
    let rows = statement.query_map(params![endpoint, after_key, now_ms, limit as i64], |row| {
        let name: String = row.get(2)?;
        Ok(due_delivery(tag, row.get(0)?, row.get(1)?, event_name(&name), Bytes::from(row.get::<_, Vec<u8>>(3)?)))
    })?;
    let mut due = rows.collect::<Result<Vec<_>, _>>()?;
    if let Some(subscription) = fanout::subscription(conn, endpoint)?.filter(|s| s.active) {
        // The event of `after_key` itself may still owe this endpoint (a lane that put a delivery
        // back reads again from just before its key), so the read starts at that event, one more
        // is read in case it is `after_key`'s own, and keys are compared below.
        let query = fanout::OwedQuery {
            after: fanout::split_key(after_key).0 - 1,
            up_to: i64::MAX,
            name: None,
            newest_first: false,
            limit: limit + 1,
            with_body: true,
        };
        for owed in fanout::owed_events(conn, &subscription, &query)? {
            let key = fanout::delivery_key(owed.seq, endpoint);
            if key > after_key {
                due.push(due_delivery(tag, key, 0, event_name(&owed.name), Bytes::from(owed.body.unwrap_or_default())));
            }
        }
        due.sort_unstable_by_key(|delivery| delivery.seq);
        due.truncate(limit);
    }
    Ok(due)
}

pub(super) fn due_delivery(tag: &str, key: i64, attempts: u32, event: EventName, body: Bytes) -> DueDelivery {
    DueDelivery { seq: key, id: ids::format(DELIVERY_PREFIX, tag, key), attempts, event, body }
}

fn event_name(name: &str) -> EventName {
    EventName::parse(name).unwrap_or(EventName::WebhookTest)
}

/// What memory needs to answer an endpoint's next reads (see `recent`): its subscription, when it
/// is active and has no pending row (a row due again is only found in the database).
pub(super) fn lane_view(conn: &Connection, endpoint: i64) -> Result<Option<super::recent::View>, StoreError> {
    let Some(subscription) = fanout::subscription(conn, endpoint)?.filter(|s| s.active) else {
        return Ok(None);
    };
    let pending: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM deliveries WHERE endpoint_seq = ?1 AND status = 0)")?
        .query_row([endpoint], |row| row.get(0))?;
    Ok((!pending).then_some(super::recent::View { events: subscription.events, floor: subscription.cursor }))
}

pub(super) fn next_due_after(
    conn: &Connection,
    tag: &str,
    endpoint_id: &str,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let endpoint = endpoint_seq(tag, endpoint_id)?;
    Ok(conn
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE endpoint_seq = ?1 AND status = 0 AND next_attempt_at > ?2",
        )?
        .query_row(params![endpoint, now_ms], |row| row.get(0))?)
}

pub(super) fn record_outcomes(ctx: &mut WriteCtx<'_>, outcomes: &[Outcome]) -> Result<(), StoreError> {
    let now = Utc::now().timestamp_millis();
    let tx: &Connection = ctx.tx;
    let mut first_attempts = FirstAttempts::prepare(tx)?;
    // Endpoints whose owed deliveries got rows: their cursors may move up.
    let mut first_attempted = std::collections::BTreeSet::new();
    for outcome in outcomes {
        let (status, next_attempt_at) = match &outcome.next {
            NextStep::Succeeded => (DeliveryStatus::Succeeded, 0),
            NextStep::RetryAt(at) => (DeliveryStatus::Pending, *at),
            NextStep::Failed | NextStep::Gone { .. } => (DeliveryStatus::Failed, 0),
        };
        let attempt = AttemptRow { outcome, status, next_attempt_at, now };
        let recorded =
            if outcome.attempt == 1 { first_attempts.record(&attempt)? } else { record_later_attempt(tx, &attempt)? };
        if !recorded {
            // Its endpoint was deleted meanwhile, and the delivery with it; or this attempt does not
            // follow the recorded ones (a stale copy), and must not overwrite them.
            continue;
        }
        let (event_seq, endpoint) = fanout::split_key(outcome.delivery_seq);
        ctx.recent.row(endpoint, event_seq);
        if status == DeliveryStatus::Pending {
            ctx.recent.pending(endpoint);
        }
        if outcome.attempt == 1 && endpoint != 0 {
            first_attempted.insert(endpoint);
        }
        if matches!(outcome.next, NextStep::Gone { .. }) && is_rest_hook(ctx.tx, endpoint)? {
            // REST Hooks: a 410 means the subscriber (Zapier, Make) dropped it; it goes, with its log.
            delete_endpoint_seq(ctx, endpoint)?;
            first_attempts.endpoint_deleted(endpoint);
            continue;
        }
        if let NextStep::Gone { reason } = &outcome.next
            && let Some(subscription) = fanout::subscription(ctx.tx, endpoint)?
        {
            // What it is still owed stays in the log as pending, as if the endpoint were paused.
            settle(ctx, &subscription, now)?;
            ctx.tx.execute(
                "UPDATE endpoints SET active = 0, disabled_reason = ?2, updated_at = ?3 WHERE seq = ?1",
                params![endpoint, reason, now],
            )?;
            ctx.changes.settings_changed = true;
        }
    }
    for endpoint in first_attempted {
        if let Some(subscription) = fanout::subscription(ctx.tx, endpoint)?.filter(|s| s.active) {
            fanout::advance_cursor(ctx.tx, &subscription)?;
        }
    }
    Ok(())
}

fn is_rest_hook(conn: &Connection, seq: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT source FROM endpoints WHERE seq = ?1")?
        .query_row([seq], |row| row.get::<_, String>(0))
        .optional()?
        .is_some_and(|source| source == EndpointSource::RestHook.as_str()))
}

/// An attempt's outcome as its delivery row takes it.
struct AttemptRow<'a> {
    outcome: &'a Outcome,
    status: DeliveryStatus,
    next_attempt_at: i64,
    now: i64,
}

/// A first attempt written as a delivery row: a new row for an owed delivery, or the row of one
/// written as pending (or of a test) that has no attempt yet. `?11` is the event, `?12` the endpoint.
///
/// One row of `VALUES`, on purpose: the form `INSERT ... SELECT ... WHERE EXISTS (... deliveries
/// ...)` made SQLite copy the row into a temporary table first (the SELECT reads the table it
/// writes) and keep a statement journal (a multi-row insert may fail halfway), which cost more than
/// the row itself; whether the endpoint still exists is asked once per batch instead.
pub(super) const FIRST_ATTEMPT_INSERT: &str =
    "INSERT INTO deliveries (seq, status, attempts, next_attempt_at, last_status_code, last_error, updated_at,
         last_attempt_at, last_duration_ms, last_response, event_seq, endpoint_seq, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
         COALESCE((SELECT created_at * 1000 FROM events WHERE seq = ?11), ?7))
     ON CONFLICT (seq) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
         next_attempt_at = excluded.next_attempt_at, last_status_code = excluded.last_status_code,
         last_error = excluded.last_error, updated_at = excluded.updated_at,
         last_attempt_at = excluded.last_attempt_at, last_duration_ms = excluded.last_duration_ms,
         last_response = excluded.last_response
     WHERE deliveries.attempts = 0";

/// A first attempt over a row already written, for a delivery whose endpoint is gone or that has
/// none (a test): no new row may be made for it.
const FIRST_ATTEMPT_UPDATE: &str = "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4,
        last_status_code = ?5, last_error = ?6, updated_at = ?7, last_attempt_at = ?8, last_duration_ms = ?9,
        last_response = ?10
     WHERE seq = ?1 AND attempts = 0";

/// Writes the first attempts of one batch of outcomes, with its statement prepared once (finding a
/// cached statement hashes its whole text) and each endpoint's existence looked up once.
struct FirstAttempts<'c> {
    conn: &'c Connection,
    insert: rusqlite::CachedStatement<'c>,
    endpoint_exists: std::collections::HashMap<i64, bool>,
}

impl<'c> FirstAttempts<'c> {
    fn prepare(conn: &'c Connection) -> Result<FirstAttempts<'c>, StoreError> {
        Ok(FirstAttempts {
            conn,
            insert: conn.prepare_cached(FIRST_ATTEMPT_INSERT)?,
            endpoint_exists: std::collections::HashMap::new(),
        })
    }

    /// False when the delivery can take no first attempt: its endpoint is gone, or another copy
    /// of this attempt was recorded first.
    fn record(&mut self, attempt: &AttemptRow<'_>) -> Result<bool, StoreError> {
        let (event_seq, endpoint) = fanout::split_key(attempt.outcome.delivery_seq);
        let written = if endpoint != 0 && self.exists(endpoint)? {
            execute_with_attempt(&mut self.insert, attempt, &[&event_seq, &endpoint])?
        } else {
            execute_with_attempt(&mut *self.conn.prepare_cached(FIRST_ATTEMPT_UPDATE)?, attempt, &[])?
        };
        Ok(written > 0)
    }

    fn exists(&mut self, endpoint: i64) -> Result<bool, StoreError> {
        if let Some(known) = self.endpoint_exists.get(&endpoint) {
            return Ok(*known);
        }
        let exists = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM endpoints WHERE seq = ?1)")?
            .query_row([endpoint], |row| row.get(0))?;
        self.endpoint_exists.insert(endpoint, exists);
        Ok(exists)
    }

    /// The batch deleted this endpoint: its later outcomes find no row and make none.
    fn endpoint_deleted(&mut self, endpoint: i64) {
        self.endpoint_exists.insert(endpoint, false);
    }
}

/// Writes a retry's outcome over the delivery's latest attempt, moving that one into the history.
/// False when the attempt does not follow the recorded ones, or the delivery is gone.
fn record_later_attempt(tx: &Connection, attempt: &AttemptRow<'_>) -> Result<bool, StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts (delivery_seq, number, started_at, duration_ms, status_code, error, response)
         SELECT seq, attempts, last_attempt_at, last_duration_ms, last_status_code, last_error, last_response
         FROM deliveries WHERE seq = ?1 AND attempts = ?2 - 1 AND last_attempt_at IS NOT NULL",
    )?
    .execute(params![attempt.outcome.delivery_seq, attempt.outcome.attempt])?;
    let mut update = tx.prepare_cached(
        "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_status_code = ?5,
            last_error = ?6, updated_at = ?7, last_attempt_at = ?8, last_duration_ms = ?9, last_response = ?10
         WHERE seq = ?1 AND attempts = ?3 - 1",
    )?;
    Ok(execute_with_attempt(&mut update, attempt, &[])? > 0)
}

/// Runs `statement` with an attempt's columns bound as ?1 to ?10 (delivery seq, status, attempt
/// number, next attempt, status code, error, now, start, duration, response) and `more` from ?11 on.
fn execute_with_attempt(
    statement: &mut rusqlite::Statement<'_>,
    attempt: &AttemptRow<'_>,
    more: &[&dyn rusqlite::ToSql],
) -> Result<usize, StoreError> {
    let outcome = attempt.outcome;
    let duration_ms = outcome.duration_ms as i64;
    let columns: [&dyn rusqlite::ToSql; 10] = [
        &outcome.delivery_seq,
        &attempt.status.code(),
        &outcome.attempt,
        &attempt.next_attempt_at,
        &outcome.status_code,
        &outcome.error,
        &attempt.now,
        &outcome.started_at,
        &duration_ms,
        &outcome.response.as_ref(),
    ];
    let all: Vec<&dyn rusqlite::ToSql> = columns.iter().chain(more).copied().collect();
    Ok(statement.execute(all.as_slice())?)
}

/// Pending deliveries per endpoint: rows waiting for a retry plus owed first attempts.
pub(super) fn pending_counts(conn: &Connection, tag: &str) -> Result<Vec<(String, u64)>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT endpoint_seq, COUNT(*) FROM deliveries WHERE status = 0 AND endpoint_seq IS NOT NULL GROUP BY endpoint_seq",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)? as u64)))?;
    let mut counts: std::collections::BTreeMap<i64, u64> = rows.collect::<Result<_, _>>()?;
    for subscription in fanout::active_subscriptions(conn)? {
        *counts.entry(subscription.seq).or_default() += fanout::count_owed(conn, &subscription)?;
    }
    Ok(counts.into_iter().map(|(seq, count)| (ids::format(ENDPOINT_PREFIX, tag, seq), count)).collect())
}

/// Removes, in bounded chunks, finished deliveries last changed before `before_ms`, their attempts,
/// and events older than that which no delivery refers to any more. Pending deliveries stay.
pub(super) fn purge(ctx: &mut WriteCtx<'_>, before_ms: i64) -> Result<u64, StoreError> {
    const CHUNK: i64 = 10_000;
    ctx.tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS purge_batch (seq INTEGER PRIMARY KEY); DELETE FROM purge_batch;",
    )?;
    ctx.tx.execute(
        "INSERT INTO purge_batch (seq) SELECT seq FROM deliveries WHERE status != 0 AND updated_at < ?1 LIMIT ?2",
        params![before_ms, CHUNK],
    )?;
    ctx.tx.execute("DELETE FROM attempts WHERE delivery_seq IN (SELECT seq FROM purge_batch)", [])?;
    let deliveries = ctx.tx.execute("DELETE FROM deliveries WHERE seq IN (SELECT seq FROM purge_batch)", [])?;
    if deliveries > 0 {
        // An event whose row went may read as owed again in the database; memory must not differ.
        ctx.recent.forget_events();
    }
    // Delivery keys sort by event, so the oldest delivery left names the oldest event a row still
    // refers to; every older event is unreferenced by rows. (Cheaper than an index on `event_seq`.)
    // Events after an active endpoint's cursor may be owed to it, so they stay; an endpoint owed
    // nothing has its cursor moved to the newest event first, so that it holds nothing back. The
    // newest event always stays: the next event's seq follows it, and seqs must never come back.
    for subscription in fanout::active_subscriptions(ctx.tx)? {
        fanout::advance_cursor(ctx.tx, &subscription)?;
    }
    let events = ctx.tx.execute(
        "DELETE FROM events WHERE seq IN (
            SELECT seq FROM events WHERE created_at < ?1
              AND seq < COALESCE((SELECT event_seq FROM deliveries ORDER BY seq LIMIT 1), 9223372036854775807)
              AND seq <= COALESCE((SELECT MIN(cursor) FROM endpoints WHERE active = 1), 9223372036854775807)
              AND seq <= COALESCE((SELECT cursor FROM hubspot_settings WHERE enabled = 1), 9223372036854775807)
              AND seq < (SELECT MAX(seq) FROM events)
            ORDER BY seq LIMIT ?2)",
        params![before_ms / 1000, CHUNK],
    )?;
    Ok((deliveries + events) as u64)
}
