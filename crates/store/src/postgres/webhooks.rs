//! Endpoints, fan-out, deliveries and their attempts, as in `sqlite/webhooks.rs` (whose comments
//! explain the rules); the SQL is PostgreSQL's.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper;
use estate_crm_domain::webhook::{BodyFormat, EventFilter, MaxInFlight, RetrySchedule};
use estate_crm_domain::{EventName, FieldErrors};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::fanout;
use super::recent::View;
use super::records::insert_events;
use super::writer::{Route, WriteCtx};
use crate::prepare::{paginate, parse_cursor};
use crate::{
    Attempt, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, DueDelivery, Endpoint, EndpointPatch,
    EndpointSource, EndpointSpec, NextStep, Outcome, Page, PageRequest, Rotation, StoreError, TestDelivery, ids,
};

pub(super) const ENDPOINT_PREFIX: &str = "ep";
pub(super) const DELIVERY_PREFIX: &str = "msg";

/// Notes the active endpoints subscribed to this event, so that their lanes wake once the change
/// commits. Nothing is written per endpoint: the event is owed to them through their cursors.
pub(super) async fn wake_subscribers(ctx: &mut WriteCtx, event: EventName) -> Result<(), StoreError> {
    if ctx.state.routes.is_none() {
        ctx.state.routes = Some(load_routes(ctx).await?);
    }
    let routes = ctx.state.routes.as_deref().unwrap_or_default();
    for route in routes.iter().filter(|r| r.events.matches(event)) {
        if !ctx.changes.endpoints.contains(&route.id) {
            ctx.changes.endpoints.insert(route.id.clone());
        }
    }
    Ok(())
}

async fn load_routes(ctx: &WriteCtx) -> Result<Vec<Route>, StoreError> {
    let statement = ctx.client.prepare_cached("SELECT seq, events FROM endpoints WHERE active ORDER BY seq").await?;
    let mut routes = Vec::new();
    for row in ctx.client.query(&statement, &[]).await? {
        let seq: i64 = row.try_get(0)?;
        let events = EventFilter::parse(&Value::String(row.try_get(1)?))
            .map_err(|e| StoreError::internal("reading an endpoint's events", e))?;
        routes.push(Route { id: ids::format(ENDPOINT_PREFIX, &ctx.state.tag, seq), events });
    }
    Ok(routes)
}

const ENDPOINT_COLUMNS: &str = "seq, url, events, secret, previous_secret, previous_secret_until, active, \
    disabled_reason, description, retry_schedule, max_in_flight, is_primary, created_at, updated_at, source, format";

fn endpoint_from_row(row: &Row, tag: &str) -> Result<Endpoint, StoreError> {
    let bad = |what: &str, message: String| StoreError::internal(format!("reading an endpoint's {what}"), message);
    let events: String = row.try_get(2)?;
    let schedule: Option<String> = row.try_get(9)?;
    let max_in_flight: i64 = row.try_get(10)?;
    let source: String = row.try_get(14)?;
    let format: String = row.try_get(15)?;
    Ok(Endpoint {
        id: ids::format(ENDPOINT_PREFIX, tag, row.try_get(0)?),
        url: row.try_get(1)?,
        events: EventFilter::parse(&Value::String(events)).map_err(|e| bad("events", e.to_string()))?,
        secret: row.try_get(3)?,
        previous_secret: row.try_get(4)?,
        previous_secret_until: row.try_get(5)?,
        active: row.try_get(6)?,
        disabled_reason: row.try_get(7)?,
        description: row.try_get(8)?,
        retry_schedule: schedule
            .map(|s| RetrySchedule::parse_str(&s))
            .transpose()
            .map_err(|e| bad("retry schedule", e.to_string()))?,
        max_in_flight: MaxInFlight::new(max_in_flight).map_err(|e| bad("max_in_flight", e.to_string()))?,
        is_primary: row.try_get(11)?,
        created_at: millis(row.try_get(12)?),
        updated_at: millis(row.try_get(13)?),
        source: EndpointSource::parse(&source).ok_or_else(|| bad("source", source.clone()))?,
        format: BodyFormat::parse(&format).map_err(|e| bad("format", e.to_string()))?,
    })
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn endpoint_seq(tag: &str, id: &str) -> Result<i64, StoreError> {
    ids::parse(ENDPOINT_PREFIX, tag, id).ok_or_else(|| StoreError::not_found("no endpoint has this id"))
}

async fn find_endpoint(client: &ClientWrapper, tag: &str, seq: i64) -> Result<Option<Endpoint>, StoreError> {
    let statement = client.prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE seq = $1")).await?;
    client.query_opt(&statement, &[&seq]).await?.map(|row| endpoint_from_row(&row, tag)).transpose()
}

pub(super) async fn get_endpoint(client: &ClientWrapper, tag: &str, id: &str) -> Result<Endpoint, StoreError> {
    find_endpoint(client, tag, endpoint_seq(tag, id)?)
        .await?
        .ok_or_else(|| StoreError::not_found("no endpoint has this id"))
}

pub(super) async fn primary_endpoint(client: &ClientWrapper, tag: &str) -> Result<Option<Endpoint>, StoreError> {
    let statement =
        client.prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE is_primary")).await?;
    client.query_opt(&statement, &[]).await?.map(|row| endpoint_from_row(&row, tag)).transpose()
}

pub(super) async fn list_endpoints(
    client: &ClientWrapper,
    tag: &str,
    page: &PageRequest,
) -> Result<Page<Endpoint>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let statement = client
        .prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE seq < $1 ORDER BY seq DESC LIMIT $2"))
        .await?;
    let rows = client.query(&statement, &[&before, &(limit + 1)]).await?;
    let endpoints = rows
        .iter()
        .map(|row| Ok((row.try_get::<_, i64>(0)?, endpoint_from_row(row, tag)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    paginate(endpoints, page.limit)
}

pub(super) async fn create_endpoint(
    ctx: &mut WriteCtx,
    spec: &EndpointSpec,
    primary: bool,
) -> Result<Endpoint, StoreError> {
    let now = Utc::now().timestamp_millis();
    let statement = ctx
        .client
        .prepare_cached(
            "INSERT INTO endpoints (url, events, secret, active, description, retry_schedule, max_in_flight,
                                    is_primary, created_at, updated_at, cursor, source, format)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, (SELECT COALESCE(MAX(seq), 0) FROM events), $10, $11)
             RETURNING seq",
        )
        .await?;
    let source = if primary { EndpointSource::Settings.as_str() } else { spec.source.as_str() };
    let row = ctx
        .client
        .query_one(
            &statement,
            &[
                &spec.url,
                &spec.events.to_string(),
                &spec.secret,
                &spec.active,
                &spec.description,
                &spec.retry_schedule.as_ref().map(ToString::to_string),
                &(spec.max_in_flight.get() as i64),
                &primary,
                &now,
                &source,
                &spec.format.as_str(),
            ],
        )
        .await?;
    let seq: i64 = row.try_get(0)?;
    if seq > fanout::MAX_ENDPOINT_SEQ {
        // A delivery's key holds its endpoint's seq in 20 bits; the job's failure undoes the insert.
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
    find_endpoint(&ctx.client, &ctx.state.tag, seq)
        .await?
        .ok_or_else(|| StoreError::internal("creating an endpoint", "it vanished"))
}

pub(super) async fn update_endpoint(
    ctx: &mut WriteCtx,
    id: &str,
    patch: EndpointPatch,
) -> Result<Endpoint, StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, id)?;
    let old = find_endpoint(&ctx.client, &ctx.state.tag, seq)
        .await?
        .ok_or_else(|| StoreError::not_found("no endpoint has this id"))?;
    apply_patch(ctx, seq, old, patch).await
}

pub(super) async fn put_primary_endpoint(ctx: &mut WriteCtx, patch: EndpointPatch) -> Result<Endpoint, StoreError> {
    match primary_endpoint(&ctx.client, &ctx.state.tag).await? {
        Some(old) => {
            let seq = endpoint_seq(&ctx.state.tag, &old.id)?;
            apply_patch(ctx, seq, old, patch).await
        }
        None => {
            let spec = EndpointSpec::from_patch(patch)
                .ok_or_else(|| StoreError::invalid(FieldErrors::single("url", "is required")))?;
            create_endpoint(ctx, &spec, true).await
        }
    }
}

async fn apply_patch(
    ctx: &mut WriteCtx,
    seq: i64,
    old: Endpoint,
    patch: EndpointPatch,
) -> Result<Endpoint, StoreError> {
    let now = Utc::now().timestamp_millis();
    let mut new = patch.applied_to(&old, now);
    if new.events != old.events || new.active != old.active {
        let subscription = fanout::subscription(&ctx.client, seq)
            .await?
            .ok_or_else(|| StoreError::internal("changing an endpoint", "it vanished"))?;
        fanout::settle_subscription(&ctx.client, &subscription, now).await?;
    }
    let statement = ctx
        .client
        .prepare_cached(
            "UPDATE endpoints SET url = $2, events = $3, secret = $4, previous_secret = $5, previous_secret_until = $6,
                active = $7, disabled_reason = $8, description = $9, retry_schedule = $10, max_in_flight = $11,
                updated_at = $12, format = $13
             WHERE seq = $1",
        )
        .await?;
    ctx.client
        .execute(
            &statement,
            &[
                &seq,
                &new.url,
                &new.events.to_string(),
                &new.secret,
                &new.previous_secret,
                &new.previous_secret_until,
                &new.active,
                &new.disabled_reason,
                &new.description,
                &new.retry_schedule.as_ref().map(ToString::to_string),
                &(new.max_in_flight.get() as i64),
                &now,
                &new.format.as_str(),
            ],
        )
        .await?;
    ctx.changes.settings_changed = true;
    new.updated_at = millis(now);
    Ok(new)
}

/// Gives an endpoint a new secret; the one it replaces keeps signing for `grace_ms` (none when 0).
pub(super) async fn rotate_secret(
    ctx: &mut WriteCtx,
    id: &str,
    secret: String,
    grace_ms: i64,
) -> Result<Rotation, StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, id)?;
    let mut endpoint = find_endpoint(&ctx.client, &ctx.state.tag, seq)
        .await?
        .ok_or_else(|| StoreError::not_found("no endpoint has this id"))?;
    let now = Utc::now().timestamp_millis();
    let previous = endpoint.secret.take().filter(|_| grace_ms > 0);
    let until = previous.as_ref().map(|_| now.saturating_add(grace_ms));
    ctx.client
        .execute(
            "UPDATE endpoints SET secret = $2, previous_secret = $3, previous_secret_until = $4, updated_at = $5
             WHERE seq = $1",
            &[&seq, &secret, &previous, &until, &now],
        )
        .await?;
    ctx.changes.settings_changed = true;
    endpoint.secret = Some(secret);
    endpoint.previous_secret = previous;
    endpoint.previous_secret_until = until;
    endpoint.updated_at = millis(now);
    Ok(Rotation { endpoint, previous_valid_until: until })
}

/// Deleting an endpoint removes its deliveries too: nothing more is sent to it, and its log goes with it.
pub(super) async fn delete_endpoint(ctx: &mut WriteCtx, id: &str) -> Result<(), StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, id)?;
    if !delete_endpoint_seq(ctx, seq).await? {
        return Err(StoreError::not_found("no endpoint has this id"));
    }
    Ok(())
}

/// Deletes an endpoint and its deliveries; false when there was none.
async fn delete_endpoint_seq(ctx: &mut WriteCtx, seq: i64) -> Result<bool, StoreError> {
    let deleted = ctx.client.execute("DELETE FROM endpoints WHERE seq = $1", &[&seq]).await?;
    if deleted == 0 {
        return Ok(false);
    }
    ctx.client
        .execute(
            "DELETE FROM attempts WHERE delivery_seq IN (SELECT seq FROM deliveries WHERE endpoint_seq = $1)",
            &[&seq],
        )
        .await?;
    ctx.client.execute("DELETE FROM deliveries WHERE endpoint_seq = $1", &[&seq]).await?;
    ctx.changes.settings_changed = true;
    Ok(true)
}

const DELIVERY_COLUMNS: &str = "d.seq, d.event_seq, e.name, d.endpoint_seq, d.status, d.attempts, d.next_attempt_at, \
    d.last_status_code, d.last_error, d.created_at, d.updated_at";

fn delivery_from_row(row: &Row, tag: &str) -> Result<Delivery, StoreError> {
    let name: &str = row.try_get(2)?;
    let status = DeliveryStatus::from_code(i64::from(row.try_get::<_, i32>(4)?));
    let endpoint_seq: Option<i64> = row.try_get(3)?;
    Ok(Delivery {
        id: ids::format(DELIVERY_PREFIX, tag, row.try_get(0)?),
        event_id: ids::format("evt", tag, row.try_get(1)?),
        event: EventName::parse(name).unwrap_or(EventName::WebhookTest),
        endpoint_id: endpoint_seq.map(|seq| ids::format(ENDPOINT_PREFIX, tag, seq)),
        status,
        attempts: unsigned(row.try_get::<_, i32>(5)?),
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| row.try_get(6)).transpose()?,
        last_status_code: row.try_get::<_, Option<i32>>(7)?.map(status_code),
        last_error: row.try_get(8)?,
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
    })
}

fn unsigned(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn status_code(code: i32) -> u16 {
    u16::try_from(code).unwrap_or(0)
}

fn delivery_seq(tag: &str, id: &str) -> Result<i64, StoreError> {
    ids::parse(DELIVERY_PREFIX, tag, id).ok_or_else(|| StoreError::not_found("no delivery has this id"))
}

pub(super) async fn list_deliveries(
    client: &ClientWrapper,
    tag: &str,
    filter: &DeliveryFilter,
    page: &PageRequest,
) -> Result<Page<Delivery>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    // An id that is not one of ours matches nothing, like any other filter value with no match.
    let endpoint = filter.endpoint_id.as_ref().map(|id| ids::parse(ENDPOINT_PREFIX, tag, id).unwrap_or(-1));
    let status = filter.status.map(|s| s.code() as i32);
    let statement = client
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.seq < $1 AND ($2::BIGINT IS NULL OR d.endpoint_seq = $2)
               AND ($3::INTEGER IS NULL OR d.status = $3) AND ($4::TEXT IS NULL OR e.name = $4)
             ORDER BY d.seq DESC LIMIT $5"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&before, &endpoint, &status, &filter.event.map(EventName::as_str), &(limit + 1)])
        .await?;
    let mut deliveries = rows
        .iter()
        .map(|row| Ok((row.try_get::<_, i64>(0)?, delivery_from_row(row, tag)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    if filter.status.is_none_or(|status| status == DeliveryStatus::Pending) {
        for subscription in fanout::active_subscriptions(client).await? {
            if endpoint.is_some_and(|seq| seq != subscription.seq) {
                continue;
            }
            deliveries.extend(owed_deliveries(client, tag, &subscription, filter.event, before, page.limit + 1).await?);
        }
        deliveries.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
        deliveries.truncate(page.limit + 1);
    }
    paginate(deliveries, page.limit)
}

/// Up to `limit` of an endpoint's owed deliveries with keys below `before`, newest first.
async fn owed_deliveries(
    client: &ClientWrapper,
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
    for owed in fanout::owed_events(client, subscription, &query).await? {
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

/// The owed delivery with this key, if it is one.
async fn find_owed(
    client: &ClientWrapper,
    key: i64,
    with_body: bool,
) -> Result<Option<(i64, fanout::OwedEvent)>, StoreError> {
    let (event_seq, endpoint_seq) = fanout::split_key(key);
    let Some(subscription) = fanout::subscription(client, endpoint_seq).await? else {
        return Ok(None);
    };
    Ok(fanout::owed_event(client, &subscription, event_seq, with_body).await?.map(|owed| (endpoint_seq, owed)))
}

pub(super) async fn get_delivery(client: &ClientWrapper, tag: &str, id: &str) -> Result<DeliveryDetail, StoreError> {
    let seq = delivery_seq(tag, id)?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.seq = $1"
        ))
        .await?;
    let Some(row) = client.query_opt(&statement, &[&seq]).await? else {
        return match find_owed(client, seq, true).await? {
            Some((endpoint_seq, owed)) => Ok(DeliveryDetail {
                delivery: owed_delivery(tag, endpoint_seq, &owed)?,
                body: Bytes::from(owed.body.unwrap_or_default()),
                attempts: Vec::new(),
            }),
            None => Err(StoreError::not_found("no delivery has this id")),
        };
    };
    let delivery = delivery_from_row(&row, tag)?;
    let body: Vec<u8> = row.try_get(11)?;
    let statement = client
        .prepare_cached(
            "SELECT number, started_at, duration_ms, status_code, error, response FROM attempts
             WHERE delivery_seq = $1 ORDER BY number",
        )
        .await?;
    let mut attempts = Vec::new();
    for row in client.query(&statement, &[&seq]).await? {
        let attempt = attempt_from_row(&row)?;
        if attempt.number < delivery.attempts {
            attempts.push(attempt);
        }
    }
    let statement = client
        .prepare_cached(
            "SELECT attempts, last_attempt_at, last_duration_ms, last_status_code, last_error, last_response
             FROM deliveries WHERE seq = $1 AND last_attempt_at IS NOT NULL",
        )
        .await?;
    if let Some(row) = client.query_opt(&statement, &[&seq]).await? {
        attempts.push(attempt_from_row(&row)?);
    }
    Ok(DeliveryDetail { delivery, body: Bytes::from(body), attempts })
}

/// An attempt from `number, started_at, duration_ms, status_code, error, response`.
fn attempt_from_row(row: &Row) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        number: unsigned(row.try_get(0)?),
        started_at: row.try_get(1)?,
        duration_ms: u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
        status_code: row.try_get::<_, Option<i32>>(3)?.map(status_code),
        error: row.try_get(4)?,
        response: Bytes::from(row.try_get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
    })
}

pub(super) async fn retry_delivery(ctx: &mut WriteCtx, id: &str, now_ms: i64) -> Result<String, StoreError> {
    let seq = delivery_seq(&ctx.state.tag, id)?;
    let endpoint: Option<Option<i64>> = ctx
        .client
        .query_opt("SELECT endpoint_seq FROM deliveries WHERE seq = $1", &[&seq])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let Some(endpoint) = endpoint else {
        // An owed delivery is pending and due already: its first attempt comes in event order.
        return match find_owed(&ctx.client, seq, false).await? {
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
    ctx.client
        .execute(
            "UPDATE deliveries SET status = 0, next_attempt_at = $2, updated_at = $2 WHERE seq = $1",
            &[&seq, &now_ms],
        )
        .await?;
    ctx.recent.pending(endpoint);
    let endpoint_id = ids::format(ENDPOINT_PREFIX, &ctx.state.tag, endpoint);
    ctx.changes.rescan.insert(endpoint_id.clone());
    Ok(endpoint_id)
}

pub(super) async fn retry_failed(ctx: &mut WriteCtx, endpoint_id: &str, now_ms: i64) -> Result<u64, StoreError> {
    let seq = endpoint_seq(&ctx.state.tag, endpoint_id)?;
    find_endpoint(&ctx.client, &ctx.state.tag, seq)
        .await?
        .ok_or_else(|| StoreError::not_found("no endpoint has this id"))?;
    let changed = ctx
        .client
        .execute(
            "UPDATE deliveries SET status = 0, next_attempt_at = $2, updated_at = $2 WHERE endpoint_seq = $1 AND status = 2",
            &[&seq, &now_ms],
        )
        .await?;
    ctx.recent.pending(seq);
    ctx.changes.rescan.insert(endpoint_id.to_owned());
    Ok(changed)
}

/// The test delivery starts out `failed` with no attempt, so the dispatcher never claims it; the
/// outcome of the one attempt the test button makes replaces that.
pub(super) async fn begin_test_delivery(
    ctx: &mut WriteCtx,
    endpoint_id: Option<&str>,
    body: &[u8],
) -> Result<TestDelivery, StoreError> {
    let endpoint = endpoint_id.map(|id| endpoint_seq(&ctx.state.tag, id)).transpose()?;
    let now = Utc::now();
    let event_seq = insert_events(ctx, &[(EventName::WebhookTest, now.timestamp(), body, None)]).await?;
    let seq = fanout::delivery_key(event_seq, endpoint.unwrap_or(0));
    ctx.client
        .execute(
            "INSERT INTO deliveries (seq, event_seq, endpoint_seq, status, next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, 2, 0, $4, $4)",
            &[&seq, &event_seq, &endpoint, &now.timestamp_millis()],
        )
        .await?;
    Ok(TestDelivery { seq, id: ids::format(DELIVERY_PREFIX, &ctx.state.tag, seq) })
}

/// Up to `limit` due deliveries of an endpoint with keys above `after_key`, in key (event) order:
/// rows due again merged with owed first attempts (see `sqlite/webhooks.rs`).
pub(super) async fn due_deliveries(
    client: &ClientWrapper,
    tag: &str,
    endpoint_id: &str,
    after_key: i64,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<DueDelivery>, StoreError> {
    let endpoint = endpoint_seq(tag, endpoint_id)?;
    let statement = client
        .prepare_cached(
            "SELECT d.seq, d.attempts, e.name, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.endpoint_seq = $1 AND d.status = 0 AND d.seq > $2 AND d.next_attempt_at <= $3
             ORDER BY d.seq LIMIT $4",
        )
        .await?;
    // The rows due again and the endpoint's cursor are read in one round trip (pipelined).
    let (rows, subscription) = tokio::try_join!(
        async {
            Ok::<_, StoreError>(client.query(&statement, &[&endpoint, &after_key, &now_ms, &(limit as i64)]).await?)
        },
        fanout::subscription(client, endpoint)
    )?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let name: &str = row.try_get(2)?;
        due.push(due_delivery(tag, row.try_get(0)?, unsigned(row.try_get(1)?), name, row.try_get(3)?));
    }
    if let Some(subscription) = subscription.filter(|s| s.active) {
        let query = fanout::OwedQuery {
            after: fanout::split_key(after_key).0 - 1,
            up_to: i64::MAX,
            name: None,
            newest_first: false,
            limit: limit + 1,
            with_body: true,
        };
        for owed in fanout::owed_events(client, &subscription, &query).await? {
            let key = fanout::delivery_key(owed.seq, endpoint);
            if key > after_key {
                due.push(due_delivery(tag, key, 0, &owed.name, owed.body.unwrap_or_default()));
            }
        }
        due.sort_unstable_by_key(|delivery| delivery.seq);
        due.truncate(limit);
    }
    Ok(due)
}

fn due_delivery(tag: &str, key: i64, attempts: u32, name: &str, body: Vec<u8>) -> DueDelivery {
    DueDelivery {
        seq: key,
        id: ids::format(DELIVERY_PREFIX, tag, key),
        attempts,
        event: EventName::parse(name).unwrap_or(EventName::WebhookTest),
        body: Bytes::from(body),
    }
}

/// What memory needs to answer an endpoint's next reads (`recent.rs`): its subscription and the
/// newest event it has a row for, read in one statement, when it is active and has no pending row
/// (a row due again is only found in the database).
pub(super) async fn lane_view(client: &ClientWrapper, endpoint: i64) -> Result<Option<View>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT events, cursor,
                    EXISTS (SELECT 1 FROM deliveries WHERE endpoint_seq = $1 AND status = 0),
                    (SELECT MAX(seq) FROM deliveries WHERE endpoint_seq = $1)
             FROM endpoints WHERE seq = $1 AND active",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&endpoint]).await? else {
        return Ok(None);
    };
    if row.try_get::<_, bool>(2)? {
        return Ok(None);
    }
    let events = EventFilter::parse(&Value::String(row.try_get(0)?))
        .map_err(|e| StoreError::internal("reading an endpoint's events", e))?;
    let newest_row: Option<i64> = row.try_get(3)?;
    Ok(Some(View { events, floor: row.try_get(1)?, rows_up_to: newest_row.map_or(0, |key| fanout::split_key(key).0) }))
}

pub(super) async fn next_due_after(
    client: &ClientWrapper,
    tag: &str,
    endpoint_id: &str,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let endpoint = endpoint_seq(tag, endpoint_id)?;
    let statement = client
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE endpoint_seq = $1 AND status = 0 AND next_attempt_at > $2",
        )
        .await?;
    Ok(client.query_one(&statement, &[&endpoint, &now_ms]).await?.try_get(0)?)
}

/// Records a batch of attempts' outcomes. First attempts, nearly all of a busy dispatcher's, go in
/// with one statement (one round trip for the batch, where a statement each made the recorder's
/// commit as slow as thousands of round trips); retries, rarer, one at a time after them, so that a
/// retry recorded in the same batch as its first attempt still follows it.
pub(super) async fn record_outcomes(ctx: &mut WriteCtx, outcomes: &[Outcome]) -> Result<(), StoreError> {
    let now = Utc::now().timestamp_millis();
    let attempts: Vec<AttemptColumns<'_>> = outcomes
        .iter()
        .map(|outcome| {
            let (status, next_attempt_at) = match &outcome.next {
                NextStep::Succeeded => (DeliveryStatus::Succeeded, 0),
                NextStep::RetryAt(at) => (DeliveryStatus::Pending, *at),
                NextStep::Failed | NextStep::Gone { .. } => (DeliveryStatus::Failed, 0),
            };
            AttemptColumns::of(outcome, status, next_attempt_at, now)
        })
        .collect();
    let firsts: Vec<&AttemptColumns<'_>> = attempts.iter().filter(|attempt| attempt.attempt == 1).collect();
    let mut recorded = record_first_attempts(&ctx.client, &firsts).await?;
    for attempt in attempts.iter().filter(|attempt| attempt.attempt != 1) {
        if record_later_attempt(&ctx.client, attempt).await? {
            recorded.insert(attempt.delivery_seq);
        }
    }

    // Endpoints whose owed deliveries got rows: their cursors may move up.
    let mut first_attempted = std::collections::BTreeSet::new();
    for outcome in outcomes {
        if !recorded.contains(&outcome.delivery_seq) {
            // Its endpoint was deleted meanwhile, or this attempt does not follow the recorded ones.
            continue;
        }
        let (event_seq, endpoint) = fanout::split_key(outcome.delivery_seq);
        if outcome.attempt == 1 && endpoint != 0 {
            first_attempted.insert(endpoint);
        }
        // What the lanes' reads from memory must know (`recent.rs`).
        ctx.recent.row(endpoint, event_seq);
        if matches!(outcome.next, NextStep::RetryAt(_)) {
            ctx.recent.pending(endpoint);
        }
        if matches!(outcome.next, NextStep::Gone { .. }) && is_rest_hook(&ctx.client, endpoint).await? {
            // REST Hooks: a 410 means the subscriber dropped it; it goes, with its log.
            delete_endpoint_seq(ctx, endpoint).await?;
            continue;
        }
        if let NextStep::Gone { reason } = &outcome.next
            && let Some(subscription) = fanout::subscription(&ctx.client, endpoint).await?
        {
            // What it is still owed stays in the log as pending, as if the endpoint were paused.
            fanout::settle_subscription(&ctx.client, &subscription, now).await?;
            ctx.client
                .execute(
                    "UPDATE endpoints SET active = FALSE, disabled_reason = $2, updated_at = $3 WHERE seq = $1",
                    &[&endpoint, reason, &now],
                )
                .await?;
            ctx.changes.settings_changed = true;
        }
    }
    let first_attempted: Vec<i64> = first_attempted.into_iter().collect();
    fanout::advance_cursors(&ctx.client, &first_attempted).await
}

async fn is_rest_hook(client: &ClientWrapper, seq: i64) -> Result<bool, StoreError> {
    let statement = client.prepare_cached("SELECT source FROM endpoints WHERE seq = $1").await?;
    let source: Option<String> = client.query_opt(&statement, &[&seq]).await?.map(|row| row.try_get(0)).transpose()?;
    Ok(source.is_some_and(|source| source == EndpointSource::RestHook.as_str()))
}

/// An attempt's columns in PostgreSQL's types, bound as $1 to $10: delivery seq, status, attempt
/// number, next attempt, status code, error, now, start, duration, response.
struct AttemptColumns<'o> {
    delivery_seq: i64,
    status: i32,
    attempt: i32,
    next_attempt_at: i64,
    status_code: Option<i32>,
    error: &'o Option<String>,
    now: i64,
    started_at: i64,
    duration_ms: i64,
    response: &'o [u8],
}

impl<'o> AttemptColumns<'o> {
    fn of(outcome: &'o Outcome, status: DeliveryStatus, next_attempt_at: i64, now: i64) -> Self {
        AttemptColumns {
            delivery_seq: outcome.delivery_seq,
            status: status.code() as i32,
            attempt: i32::try_from(outcome.attempt).unwrap_or(i32::MAX),
            next_attempt_at,
            status_code: outcome.status_code.map(i32::from),
            error: &outcome.error,
            now,
            started_at: outcome.started_at,
            duration_ms: i64::try_from(outcome.duration_ms).unwrap_or(i64::MAX),
            response: outcome.response.as_ref(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.delivery_seq,
            &self.status,
            &self.attempt,
            &self.next_attempt_at,
            &self.status_code,
            self.error,
            &self.now,
            &self.started_at,
            &self.duration_ms,
            &self.response,
        ]
    }
}

/// Writes deliveries' first attempts, with one statement: a new row for an owed delivery, or the
/// row of one written as pending (or of a test) that has no attempt yet. Answers the seqs written;
/// one is left out when neither applies (its endpoint was deleted, or the attempt was recorded).
async fn record_first_attempts(
    client: &ClientWrapper,
    attempts: &[&AttemptColumns<'_>],
) -> Result<std::collections::HashSet<i64>, StoreError> {
    if attempts.is_empty() {
        return Ok(Default::default());
    }
    let mut columns = FirstAttemptColumns::default();
    for attempt in attempts {
        let (event_seq, endpoint) = fanout::split_key(attempt.delivery_seq);
        columns.seq.push(attempt.delivery_seq);
        columns.status.push(attempt.status);
        columns.next_attempt_at.push(attempt.next_attempt_at);
        columns.status_code.push(attempt.status_code);
        columns.error.push(attempt.error.as_deref());
        columns.started_at.push(attempt.started_at);
        columns.duration_ms.push(attempt.duration_ms);
        columns.response.push(attempt.response);
        columns.event_seq.push(event_seq);
        columns.endpoint_seq.push((endpoint != 0).then_some(endpoint));
    }
    // ON CONFLICT DO UPDATE may not touch one row twice in a statement; the dispatcher sends each
    // delivery's first attempt once, and DISTINCT ON keeps that true whatever a caller passes.
    let statement = client
        .prepare_cached(
            "INSERT INTO deliveries AS d (seq, status, attempts, next_attempt_at, last_status_code, last_error, updated_at,
                 last_attempt_at, last_duration_ms, last_response, event_seq, endpoint_seq, created_at)
             SELECT DISTINCT ON (u.seq) u.seq, u.status, 1, u.next_attempt_at, u.status_code, u.error, $11,
                 u.started_at, u.duration_ms, u.response, u.event_seq, u.endpoint_seq,
                 COALESCE((SELECT created_at * 1000 FROM events WHERE seq = u.event_seq), $11)
             FROM UNNEST($1::BIGINT[], $2::INTEGER[], $3::BIGINT[], $4::INTEGER[], $5::TEXT[], $6::BIGINT[],
                         $7::BIGINT[], $8::BYTEA[], $9::BIGINT[], $10::BIGINT[])
                 AS u(seq, status, next_attempt_at, status_code, error, started_at, duration_ms, response,
                      event_seq, endpoint_seq)
             WHERE EXISTS (SELECT 1 FROM endpoints WHERE seq = u.endpoint_seq)
                OR EXISTS (SELECT 1 FROM deliveries WHERE seq = u.seq)
             ORDER BY u.seq
             ON CONFLICT (seq) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                 next_attempt_at = excluded.next_attempt_at, last_status_code = excluded.last_status_code,
                 last_error = excluded.last_error, updated_at = excluded.updated_at,
                 last_attempt_at = excluded.last_attempt_at, last_duration_ms = excluded.last_duration_ms,
                 last_response = excluded.last_response
             WHERE d.attempts = 0
             RETURNING d.seq",
        )
        .await?;
    let now = attempts[0].now;
    let rows = client
        .query(
            &statement,
            &[
                &columns.seq,
                &columns.status,
                &columns.next_attempt_at,
                &columns.status_code,
                &columns.error,
                &columns.started_at,
                &columns.duration_ms,
                &columns.response,
                &columns.event_seq,
                &columns.endpoint_seq,
                &now,
            ],
        )
        .await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// First attempts' columns, one array each, for `UNNEST`.
#[derive(Default)]
struct FirstAttemptColumns<'o> {
    seq: Vec<i64>,
    status: Vec<i32>,
    next_attempt_at: Vec<i64>,
    status_code: Vec<Option<i32>>,
    error: Vec<Option<&'o str>>,
    started_at: Vec<i64>,
    duration_ms: Vec<i64>,
    response: Vec<&'o [u8]>,
    event_seq: Vec<i64>,
    endpoint_seq: Vec<Option<i64>>,
}

/// Writes a retry's outcome over the delivery's latest attempt, moving that one into the history.
async fn record_later_attempt(client: &ClientWrapper, attempt: &AttemptColumns<'_>) -> Result<bool, StoreError> {
    let history = client
        .prepare_cached(
            "INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status_code, error, response)
             SELECT seq, attempts, last_attempt_at, last_duration_ms, last_status_code, last_error,
                    COALESCE(last_response, ''::BYTEA)
             FROM deliveries WHERE seq = $1 AND attempts = $2 - 1 AND last_attempt_at IS NOT NULL
             ON CONFLICT (delivery_seq, number) DO UPDATE SET started_at = excluded.started_at,
                 duration_ms = excluded.duration_ms, status_code = excluded.status_code, error = excluded.error,
                 response = excluded.response",
        )
        .await?;
    client.execute(&history, &[&attempt.delivery_seq, &attempt.attempt]).await?;
    let statement = client
        .prepare_cached(
            "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = $4, last_status_code = $5,
                last_error = $6, updated_at = $7, last_attempt_at = $8, last_duration_ms = $9, last_response = $10
             WHERE seq = $1 AND attempts = $3 - 1",
        )
        .await?;
    Ok(client.execute(&statement, &attempt.params()).await? > 0)
}

/// Pending deliveries per endpoint: rows waiting for a retry plus owed first attempts.
pub(super) async fn pending_counts(client: &ClientWrapper, tag: &str) -> Result<Vec<(String, u64)>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT endpoint_seq, COUNT(*) FROM deliveries WHERE status = 0 AND endpoint_seq IS NOT NULL
             GROUP BY endpoint_seq",
        )
        .await?;
    let mut counts = std::collections::BTreeMap::<i64, u64>::new();
    for row in client.query(&statement, &[]).await? {
        counts.insert(row.try_get(0)?, u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0));
    }
    for subscription in fanout::active_subscriptions(client).await? {
        *counts.entry(subscription.seq).or_default() += fanout::count_owed(client, &subscription).await?;
    }
    Ok(counts.into_iter().map(|(seq, count)| (ids::format(ENDPOINT_PREFIX, tag, seq), count)).collect())
}

/// Removes, in bounded chunks, finished deliveries last changed before `before_ms`, their attempts,
/// and events older than that which nothing refers to any more. Pending deliveries stay, and so do
/// events an active endpoint or the HubSpot sync may still owe, and the newest event.
pub(super) async fn purge(ctx: &mut WriteCtx, before_ms: i64) -> Result<u64, StoreError> {
    const CHUNK: i64 = 10_000;
    // Rows and events go: nothing memory knows of them holds any more (`recent.rs`).
    ctx.recent.forget_events();
    ctx.recent.forget_views();
    let batch: Vec<i64> = ctx
        .client
        .query("SELECT seq FROM deliveries WHERE status <> 0 AND updated_at < $1 LIMIT $2", &[&before_ms, &CHUNK])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    ctx.client.execute("DELETE FROM attempts WHERE delivery_seq = ANY($1)", &[&batch]).await?;
    let deliveries = ctx.client.execute("DELETE FROM deliveries WHERE seq = ANY($1)", &[&batch]).await?;
    for subscription in fanout::active_subscriptions(&ctx.client).await? {
        fanout::advance_cursor(&ctx.client, &subscription).await?;
    }
    let events = ctx
        .client
        .execute(
            "DELETE FROM events WHERE seq IN (
                SELECT seq FROM events WHERE created_at < $1
                  AND seq < COALESCE((SELECT event_seq FROM deliveries ORDER BY seq LIMIT 1), 9223372036854775807)
                  AND seq <= COALESCE((SELECT MIN(cursor) FROM endpoints WHERE active), 9223372036854775807)
                  AND seq <= COALESCE((SELECT cursor FROM hubspot_settings WHERE enabled), 9223372036854775807)
                  AND seq < (SELECT MAX(seq) FROM events)
                ORDER BY seq LIMIT $2)",
            &[&(before_ms / 1000), &CHUNK],
        )
        .await?;
    Ok(deliveries + events)
}
