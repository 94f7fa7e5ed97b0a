//! Fan-out by cursor: which deliveries an event owes, without writing a row per delivery when it
//! commits.
//!
//! Every endpoint keeps a cursor, an event seq: each event up to it that the endpoint subscribes to
//! has a delivery row (written with its first attempt's outcome, or as pending when the endpoint's
//! subscription changed). The events after the cursor that the endpoint subscribes to and that have
//! no row yet are its *owed* deliveries: pending, not yet attempted. So a change's transaction writes
//! its records and events and nothing per endpoint, and a delivery costs one row, written once, when
//! its first attempt ends.
//!
//! A delivery's key joins its event's seq and its endpoint's seq in one integer
//! ([`delivery_key`]): an owed delivery has its id, the `webhook-id` receivers deduplicate on,
//! before any row exists, it keeps that id on every attempt and after a crash, and keys sort in
//! event order.
//!
//! "Every subscribed endpoint at that moment" stays exact because a change to which events an
//! endpoint receives, or to whether it is active, first writes its owed deliveries as pending rows
//! under the old settings and moves its cursor to the newest event ([`settle_subscription`]); a new
//! endpoint's cursor starts at the newest event.

use estate_crm_domain::EventName;
use estate_crm_domain::webhook::EventFilter;
use rusqlite::{Connection, OptionalExtension, params};

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

fn subscription_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    let events: String = row.get(1)?;
    let events = EventFilter::parse(&serde_json::Value::String(events))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into()))?;
    Ok(Subscription { seq: row.get(0)?, events, active: row.get(2)?, cursor: row.get(3)? })
}

/// One endpoint's subscription, if the endpoint exists.
pub(super) fn subscription(conn: &Connection, endpoint_seq: i64) -> Result<Option<Subscription>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq, events, active, cursor FROM endpoints WHERE seq = ?1")?
        .query_row([endpoint_seq], subscription_from_row)
        .optional()?)
}

/// Every active endpoint's subscription, by seq.
pub(super) fn active_subscriptions(conn: &Connection) -> Result<Vec<Subscription>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT seq, events, active, cursor FROM endpoints WHERE active = 1 ORDER BY seq")?;
    let rows = statement.query_map([], subscription_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Runs a read of several statements in one transaction, so that all of them see the same commit:
/// a delivery read as owed by one statement and as a row by the next must not be missed by both.
pub(super) fn in_snapshot<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let snapshot = conn.unchecked_transaction()?;
    let result = read(&snapshot)?;
    snapshot.commit()?;
    Ok(result)
}

/// The newest event's seq (0 when there is none).
pub(super) fn newest_event(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?.query_row([], |row| row.get(0))?)
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

/// The events `subscription` is owed deliveries for, as `query` asks. A filter of several names
/// reads each name through the `events_by_name` index and merges, so that a rare event after a
/// million others costs no scan of the million.
pub(super) fn owed_events(
    conn: &Connection,
    subscription: &Subscription,
    query: &OwedQuery,
) -> Result<Vec<OwedEvent>, StoreError> {
    let after = query.after.max(subscription.cursor);
    let order = if query.newest_first { "DESC" } else { "ASC" };
    let body = if query.with_body { "e.body" } else { "NULL" };
    let mut owed = Vec::new();
    for name in names_to_read(&subscription.events, query.name) {
        let which = match name {
            Some(_) => "e.name = ?5",
            None => "e.name != 'webhook.test' AND ?5 IS NULL",
        };
        let sql = format!(
            "SELECT e.seq, e.name, e.created_at, {body} FROM events e
             WHERE e.seq > ?1 AND e.seq <= ?2 AND {which}
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = (e.seq << {ENDPOINT_BITS}) | ?3)
             ORDER BY e.seq {order} LIMIT ?4"
        );
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(
            params![after, query.up_to, subscription.seq, query.limit as i64, name.map(EventName::as_str)],
            |row| Ok(OwedEvent { seq: row.get(0)?, name: row.get(1)?, created_at: row.get(2)?, body: row.get(3)? }),
        )?;
        for row in rows {
            owed.push(row?);
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

/// How many deliveries `subscription` is owed: its subscribed events after the cursor, counted in the
/// small `events_by_name` index one name at a time, less those of them that have a row already
/// (few: the cursor stays close behind the oldest delivery not yet attempted).
pub(super) fn count_owed(conn: &Connection, subscription: &Subscription) -> Result<u64, StoreError> {
    let names: Vec<EventName> = match &subscription.events {
        EventFilter::All => EventName::ALL.into_iter().filter(|name| name.is_subscribable()).collect(),
        EventFilter::Only(names) => names.iter().copied().filter(|name| name.is_subscribable()).collect(),
    };
    let mut subscribed: i64 = 0;
    let mut count = conn.prepare_cached("SELECT COUNT(*) FROM events WHERE name = ?1 AND seq > ?2")?;
    for name in &names {
        subscribed += count.query_row(params![name.as_str(), subscription.cursor], |row| row.get::<_, i64>(0))?;
    }
    let placeholders = vec!["?"; names.len()].join(", ");
    let written: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.endpoint_seq = ?1 AND d.seq > ?2 AND e.name IN ({placeholders})"
        ))?
        .query_row(
            rusqlite::params_from_iter(
                [
                    rusqlite::types::Value::from(subscription.seq),
                    delivery_key(subscription.cursor, MAX_ENDPOINT_SEQ).into(),
                ]
                .into_iter()
                .chain(names.iter().map(|name| rusqlite::types::Value::from(name.as_str().to_owned()))),
            ),
            |row| row.get(0),
        )?;
    Ok(u64::try_from(subscribed - written).unwrap_or(0))
}

/// Whether event `event_seq` is owed to `subscription`: after its cursor, subscribed to, no row.
pub(super) fn owed_event(
    conn: &Connection,
    subscription: &Subscription,
    event_seq: i64,
    with_body: bool,
) -> Result<Option<OwedEvent>, StoreError> {
    if !subscription.active || event_seq <= subscription.cursor {
        return Ok(None);
    }
    let query =
        OwedQuery { after: event_seq - 1, up_to: event_seq, name: None, newest_first: false, limit: 1, with_body };
    Ok(owed_events(conn, subscription, &query)?.pop())
}

/// Moves an endpoint's cursor up to just before its oldest owed delivery (or to the newest event
/// when nothing is owed). Called after first attempts' outcomes are written, so each event is
/// looked at about once on its way under the cursor.
pub(super) fn advance_cursor(conn: &Connection, subscription: &Subscription) -> Result<(), StoreError> {
    let oldest = OwedQuery { after: 0, up_to: i64::MAX, name: None, newest_first: false, limit: 1, with_body: false };
    let cursor = match owed_events(conn, subscription, &oldest)?.first() {
        Some(owed) => owed.seq - 1,
        None => newest_event(conn)?,
    };
    if cursor > subscription.cursor {
        conn.prepare_cached("UPDATE endpoints SET cursor = ?2 WHERE seq = ?1")?
            .execute(params![subscription.seq, cursor])?;
    }
    Ok(())
}

/// Before an endpoint's subscription changes (its events, or whether it is active): writes what
/// it is owed under the old settings as pending rows, due now, and moves its cursor to the newest
/// event, so that events committed from now on are judged by the new settings alone.
pub(super) fn settle_subscription(conn: &Connection, old: &Subscription, now_ms: i64) -> Result<(), StoreError> {
    if old.active {
        for name in names_to_read(&old.events, None) {
            let which = match name {
                Some(_) => "e.name = ?4",
                None => "e.name != 'webhook.test' AND ?4 IS NULL",
            };
            conn.prepare_cached(&format!(
                "INSERT INTO deliveries (seq, event_seq, endpoint_seq, status, attempts, next_attempt_at, created_at, updated_at)
                 SELECT (e.seq << {ENDPOINT_BITS}) | ?2, e.seq, ?2, 0, 0, ?3, ?3, ?3 FROM events e
                 WHERE e.seq > ?1 AND {which}
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = (e.seq << {ENDPOINT_BITS}) | ?2)"
            ))?
            .execute(params![old.cursor, old.seq, now_ms, name.map(EventName::as_str)])?;
        }
    }
    conn.prepare_cached("UPDATE endpoints SET cursor = (SELECT COALESCE(MAX(seq), 0) FROM events) WHERE seq = ?1")?
        .execute([old.seq])?;
    Ok(())
}
