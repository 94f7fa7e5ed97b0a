//! Fan-out by cursor, as in the SQLite store (see `sqlite/fanout.rs` for the whole story): each
//! endpoint's cursor in the event log, the events after it that it is owed, and settling a
//! subscription before it changes. Keys and the choice of names to read are shared
//! (`crate::fanout_keys`); the SQL is PostgreSQL's.

use deadpool_postgres::ClientWrapper;
use estate_crm_domain::EventName;
use estate_crm_domain::webhook::EventFilter;
use tokio_postgres::Row;

use crate::StoreError;
pub(super) use crate::fanout_keys::{ENDPOINT_BITS, MAX_ENDPOINT_SEQ, delivery_key, names_to_read, split_key};

/// What fan-out needs to know of an endpoint.
#[derive(Debug, Clone)]
pub(super) struct Subscription {
    pub seq: i64,
    pub events: EventFilter,
    pub active: bool,
    /// Every event up to here has its delivery row or is not subscribed to.
    pub cursor: i64,
}

fn subscription_from_row(row: &Row) -> Result<Subscription, StoreError> {
    let events = EventFilter::parse(&serde_json::Value::String(row.try_get(1)?))
        .map_err(|e| StoreError::internal("reading an endpoint's events", e))?;
    Ok(Subscription { seq: row.try_get(0)?, events, active: row.try_get(2)?, cursor: row.try_get(3)? })
}

/// One endpoint's subscription, if the endpoint exists.
pub(super) async fn subscription(
    client: &ClientWrapper,
    endpoint_seq: i64,
) -> Result<Option<Subscription>, StoreError> {
    let statement = client.prepare_cached("SELECT seq, events, active, cursor FROM endpoints WHERE seq = $1").await?;
    client.query_opt(&statement, &[&endpoint_seq]).await?.as_ref().map(subscription_from_row).transpose()
}

/// Every active endpoint's subscription, by seq.
pub(super) async fn active_subscriptions(client: &ClientWrapper) -> Result<Vec<Subscription>, StoreError> {
    let statement =
        client.prepare_cached("SELECT seq, events, active, cursor FROM endpoints WHERE active ORDER BY seq").await?;
    client.query(&statement, &[]).await?.iter().map(subscription_from_row).collect()
}

/// The newest event's seq (0 when there is none).
pub(super) async fn newest_event(client: &ClientWrapper) -> Result<i64, StoreError> {
    let statement = client.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events").await?;
    Ok(client.query_one(&statement, &[]).await?.try_get(0)?)
}

/// An event an endpoint is owed a delivery for.
#[derive(Debug)]
pub(super) struct OwedEvent {
    pub seq: i64,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Read only when asked for.
    pub body: Option<Vec<u8>>,
}

/// Which owed events to read.
pub(super) struct OwedQuery {
    /// Only events after this seq (the cursor is always a lower bound too).
    pub after: i64,
    /// Only events up to this seq.
    pub up_to: i64,
    /// Only events of this name.
    pub name: Option<EventName>,
    pub newest_first: bool,
    pub limit: usize,
    pub with_body: bool,
}

/// The events `subscription` is owed deliveries for, as `query` asks; a filter of several names
/// reads each through `events_by_name` and merges.
pub(super) async fn owed_events(
    client: &ClientWrapper,
    subscription: &Subscription,
    query: &OwedQuery,
) -> Result<Vec<OwedEvent>, StoreError> {
    let after = query.after.max(subscription.cursor);
    let order = if query.newest_first { "DESC" } else { "ASC" };
    let body = if query.with_body { "e.body" } else { "NULL::BYTEA" };
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut owed = Vec::new();
    for name in names_to_read(&subscription.events, query.name) {
        let which = match name {
            Some(_) => "e.name = $5",
            None => "e.name <> 'webhook.test' AND $5::TEXT IS NULL",
        };
        let sql = format!(
            "SELECT e.seq, e.name, e.created_at, {body} FROM events e
             WHERE e.seq > $1 AND e.seq <= $2 AND {which}
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = (e.seq << {ENDPOINT_BITS}) | $3::BIGINT)
             ORDER BY e.seq {order} LIMIT $4"
        );
        let statement = client.prepare_cached(&sql).await?;
        let rows = client
            .query(&statement, &[&after, &query.up_to, &subscription.seq, &limit, &name.map(EventName::as_str)])
            .await?;
        for row in rows {
            owed.push(OwedEvent {
                seq: row.try_get(0)?,
                name: row.try_get(1)?,
                created_at: row.try_get(2)?,
                body: row.try_get(3)?,
            });
        }
    }
    if query.newest_first {
        owed.sort_unstable_by_key(|event| std::cmp::Reverse(event.seq));
    } else {
        owed.sort_unstable_by_key(|event| event.seq);
    }
    owed.truncate(query.limit);
    Ok(owed)
}

/// How many deliveries `subscription` is owed: its subscribed events after the cursor, less those
/// of them that have a row already.
pub(super) async fn count_owed(client: &ClientWrapper, subscription: &Subscription) -> Result<u64, StoreError> {
    let names: Vec<&str> = match &subscription.events {
        EventFilter::All => {
            EventName::ALL.into_iter().filter(|name| name.is_subscribable()).map(EventName::as_str).collect()
        }
        EventFilter::Only(names) => {
            names.iter().copied().filter(|name| name.is_subscribable()).map(EventName::as_str).collect()
        }
    };
    let subscribed =
        client.prepare_cached("SELECT COUNT(*) FROM events WHERE name = ANY($1::TEXT[]) AND seq > $2").await?;
    let subscribed: i64 = client.query_one(&subscribed, &[&names, &subscription.cursor]).await?.try_get(0)?;
    let written = client
        .prepare_cached(
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.endpoint_seq = $1 AND d.seq > $2 AND e.name = ANY($3::TEXT[])",
        )
        .await?;
    let cursor_key = delivery_key(subscription.cursor, MAX_ENDPOINT_SEQ);
    let written: i64 = client.query_one(&written, &[&subscription.seq, &cursor_key, &names]).await?.try_get(0)?;
    Ok(u64::try_from(subscribed - written).unwrap_or(0))
}

/// Whether event `event_seq` is owed to `subscription`: after its cursor, subscribed to, no row.
pub(super) async fn owed_event(
    client: &ClientWrapper,
    subscription: &Subscription,
    event_seq: i64,
    with_body: bool,
) -> Result<Option<OwedEvent>, StoreError> {
    if !subscription.active || event_seq <= subscription.cursor {
        return Ok(None);
    }
    let query =
        OwedQuery { after: event_seq - 1, up_to: event_seq, name: None, newest_first: false, limit: 1, with_body };
    Ok(owed_events(client, subscription, &query).await?.pop())
}

/// Moves an endpoint's cursor up to just before its oldest owed delivery (or to the newest event
/// when nothing is owed).
pub(super) async fn advance_cursor(client: &ClientWrapper, subscription: &Subscription) -> Result<(), StoreError> {
    let oldest = OwedQuery { after: 0, up_to: i64::MAX, name: None, newest_first: false, limit: 1, with_body: false };
    let cursor = match owed_events(client, subscription, &oldest).await?.first() {
        Some(owed) => owed.seq - 1,
        None => newest_event(client).await?,
    };
    if cursor > subscription.cursor {
        // GREATEST: a cursor never moves back, whoever moved it meanwhile.
        let statement =
            client.prepare_cached("UPDATE endpoints SET cursor = GREATEST(cursor, $2) WHERE seq = $1").await?;
        client.execute(&statement, &[&subscription.seq, &cursor]).await?;
    }
    Ok(())
}

/// Moves the cursors of these endpoints (the active ones among them) as [`advance_cursor`] does,
/// all in one statement: each up to just before its oldest owed event, or to the newest event when
/// nothing is owed. The subscription is read from the `events` column as it is stored (`*` or names
/// joined by commas, as `EventFilter` writes it), so no endpoint costs a round trip of its own.
pub(super) async fn advance_cursors(client: &ClientWrapper, endpoint_seqs: &[i64]) -> Result<(), StoreError> {
    if endpoint_seqs.is_empty() {
        return Ok(());
    }
    let statement = client
        .prepare_cached(&format!(
            "UPDATE endpoints ep SET cursor = moved.cursor
             FROM (
                SELECT s.seq, COALESCE(
                    (SELECT e.seq - 1 FROM events e
                     WHERE e.seq > s.cursor
                       AND CASE WHEN '*' = ANY(s.names) THEN e.name <> 'webhook.test' ELSE e.name = ANY(s.names) END
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = (e.seq << {ENDPOINT_BITS}) | s.seq)
                     ORDER BY e.seq LIMIT 1),
                    (SELECT COALESCE(MAX(seq), 0) FROM events)) AS cursor
                FROM (SELECT seq, cursor, string_to_array(replace(events, ' ', ''), ',') AS names
                      FROM endpoints WHERE seq = ANY($1::BIGINT[]) AND active) AS s
             ) AS moved
             WHERE ep.seq = moved.seq AND moved.cursor > ep.cursor"
        ))
        .await?;
    client.execute(&statement, &[&endpoint_seqs]).await?;
    Ok(())
}

/// Before an endpoint's subscription changes: writes what it is owed under the old settings as
/// pending rows, due now, and moves its cursor to the newest event.
pub(super) async fn settle_subscription(
    client: &ClientWrapper,
    old: &Subscription,
    now_ms: i64,
) -> Result<(), StoreError> {
    if old.active {
        for name in names_to_read(&old.events, None) {
            let which = match name {
                Some(_) => "e.name = $4",
                None => "e.name <> 'webhook.test' AND $4::TEXT IS NULL",
            };
            let statement = client
                .prepare_cached(&format!(
                    "INSERT INTO deliveries (seq, event_seq, endpoint_seq, status, attempts, next_attempt_at, created_at, updated_at)
                     SELECT (e.seq << {ENDPOINT_BITS}) | $2::BIGINT, e.seq, $2, 0, 0, $3, $3, $3 FROM events e
                     WHERE e.seq > $1 AND {which}
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = (e.seq << {ENDPOINT_BITS}) | $2::BIGINT)"
                ))
                .await?;
            client.execute(&statement, &[&old.cursor, &old.seq, &now_ms, &name.map(EventName::as_str)]).await?;
        }
    }
    let statement = client
        .prepare_cached("UPDATE endpoints SET cursor = (SELECT COALESCE(MAX(seq), 0) FROM events) WHERE seq = $1")
        .await?;
    client.execute(&statement, &[&old.seq]).await?;
    Ok(())
}

/// Runs a read of several statements in one snapshot (REPEATABLE READ), so that a delivery read as
/// owed by one statement and as a row by the next is not missed by both. A read given up halfway
/// (its request dropped) takes its connection out of the pool rather than hand back one inside a
/// transaction.
pub(super) async fn in_snapshot<T>(
    client: deadpool_postgres::Object,
    read: impl for<'a> FnOnce(&'a ClientWrapper) -> super::writer::BoxFuture<'a, Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut guard = SnapshotGuard { client: Some(client) };
    let (result, ended) = {
        let client = guard.client.as_ref().expect("held until the end");
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let result = read(client).await;
        let ended = client.batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" }).await;
        (result, ended)
    };
    if ended.is_ok() {
        // Back to the pool, outside any transaction.
        drop(guard.client.take());
    }
    ended?;
    result
}

/// Takes a connection out of the pool if it is dropped while still holding it.
struct SnapshotGuard {
    client: Option<deadpool_postgres::Object>,
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}
