//! What the web app reads and writes besides records and webhooks: sign-in sessions, users'
//! passwords, and the delivery counts of the dashboard and the endpoints pages.

use estate_crm_domain::FieldErrors;
use rusqlite::{Connection, OptionalExtension, params};

use super::auth::{TOKEN_PREFIX, USER_PREFIX, create_user, user_from_row};
use super::fanout::{self, Subscription, delivery_key};
use super::webhooks::ENDPOINT_PREFIX;
use super::writer::WriteCtx;
use crate::{EndpointHealth, NewUser, Session, SessionLimits, StoreError, TokenInfo, User, UserCredentials, ids};

/// The seq of a user id of this database.
pub(super) fn user_seq(tag: &str, id: &str) -> Option<i64> {
    ids::parse(USER_PREFIX, tag, id)
}

fn user_seq_or_not_found(tag: &str, id: &str) -> Result<i64, StoreError> {
    user_seq(tag, id).ok_or_else(|| StoreError::not_found("no user has this id"))
}

pub(super) fn any_password_set(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE password_hash IS NOT NULL)")?
        .query_row([], |row| row.get(0))?)
}

/// Checks and inserts in one transaction, so two setup forms sent at once make one administrator.
pub(super) fn create_first_admin(ctx: &mut WriteCtx<'_>, new: &NewUser) -> Result<Option<User>, StoreError> {
    if any_password_set(ctx.tx)? {
        return Ok(None);
    }
    if new.password_hash.is_none() {
        return Err(StoreError::invalid(FieldErrors::single("password", "is required")));
    }
    create_user(ctx, new).map(Some)
}

/// The one user matching `condition` (on `users`, with `?1` bound to `value`).
pub(super) fn user_where(
    conn: &Connection,
    tag: &str,
    condition: &str,
    value: rusqlite::types::Value,
) -> Result<Option<UserCredentials>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT seq, name, email, role, password_hash FROM users WHERE {condition}"))?
        .query_row([value], |row| Ok(UserCredentials { user: user_from_row(row, tag)?, password_hash: row.get(4)? }))
        .optional()?)
}

pub(super) fn list_users(conn: &Connection, tag: &str) -> Result<Vec<User>, StoreError> {
    let mut statement = conn.prepare_cached("SELECT seq, name, email, role FROM users ORDER BY seq LIMIT 1000")?;
    let rows = statement.query_map([], |row| user_from_row(row, tag))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn set_password(
    ctx: &mut WriteCtx<'_>,
    user_id: &str,
    hash: &str,
    keep: Option<&str>,
) -> Result<(), StoreError> {
    let seq = user_seq_or_not_found(&ctx.state.tag, user_id)?;
    if ctx.tx.execute("UPDATE users SET password_hash = ?2 WHERE seq = ?1", params![seq, hash])? == 0 {
        return Err(StoreError::not_found("no user has this id"));
    }
    ctx.tx.execute("DELETE FROM sessions WHERE user_seq = ?1 AND hash IS NOT ?2", params![seq, keep])?;
    Ok(())
}

pub(super) fn list_tokens(conn: &Connection, tag: &str, user_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
    let Some(seq) = user_seq(tag, user_id) else {
        return Ok(Vec::new());
    };
    let mut statement =
        conn.prepare_cached("SELECT seq, name FROM tokens WHERE user_seq = ?1 ORDER BY seq LIMIT 1000")?;
    let rows = statement.query_map([seq], |row| {
        Ok(TokenInfo {
            id: ids::format(TOKEN_PREFIX, tag, row.get(0)?),
            user_id: user_id.to_owned(),
            name: row.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn create_session(
    ctx: &mut WriteCtx<'_>,
    hash: &str,
    user_id: &str,
    now_ms: i64,
    limits: SessionLimits,
) -> Result<(), StoreError> {
    let seq = user_seq_or_not_found(&ctx.state.tag, user_id)?;
    // Signing in is rare, so it is where ended sessions are cleared away.
    ctx.tx.execute(
        "DELETE FROM sessions WHERE last_seen_at <= ?1 OR created_at <= ?2",
        params![now_ms - limits.idle_ms, now_ms - limits.absolute_ms],
    )?;
    ctx.tx.execute(
        "INSERT INTO sessions (hash, user_seq, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
        params![hash, seq, now_ms],
    )?;
    Ok(())
}

pub(super) fn find_session(
    conn: &Connection,
    tag: &str,
    hash: &str,
    now_ms: i64,
    limits: SessionLimits,
) -> Result<Option<Session>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT u.seq, u.name, u.email, u.role, s.created_at, s.last_seen_at
             FROM sessions s JOIN users u ON u.seq = s.user_seq
             WHERE s.hash = ?1 AND s.last_seen_at > ?2 AND s.created_at > ?3",
        )?
        .query_row(params![hash, now_ms - limits.idle_ms, now_ms - limits.absolute_ms], |row| {
            Ok(Session { user: user_from_row(row, tag)?, created_at: row.get(4)?, last_seen_at: row.get(5)? })
        })
        .optional()?)
}

pub(super) fn touch_session(ctx: &mut WriteCtx<'_>, hash: &str, now_ms: i64) -> Result<(), StoreError> {
    ctx.tx
        .execute("UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?2) WHERE hash = ?1", params![hash, now_ms])?;
    Ok(())
}

pub(super) fn delete_session(ctx: &mut WriteCtx<'_>, hash: &str) -> Result<(), StoreError> {
    ctx.tx.execute("DELETE FROM sessions WHERE hash = ?1", [hash])?;
    Ok(())
}

/// The first event at or after `since_s` (Unix seconds), found by bisecting the event seqs: events
/// are numbered in commit order, so their times rise with their seqs, and about twenty lookups by
/// primary key replace an index on time that every event's insert would pay for.
fn first_event_since(conn: &Connection, since_s: i64) -> Result<i64, StoreError> {
    let mut next_from =
        conn.prepare_cached("SELECT seq, created_at FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let (mut low, mut high): (i64, i64) =
        // Two subqueries: MIN and MAX together in one SELECT make SQLite scan the whole table.
        conn.query_row("SELECT COALESCE((SELECT MIN(seq) FROM events), 1), COALESCE((SELECT MAX(seq) FROM events), 0) + 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    // Invariant: every event before `low` is older than `since_s`; none from `high` on is.
    while low < high {
        let middle = low + (high - low) / 2;
        match next_from.query_row([middle], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))).optional()? {
            Some((seq, at)) if seq < high && at < since_s => low = seq + 1,
            // The first event from `middle` on is recent (or beyond `high`): so are all from `middle`.
            _ => high = middle,
        }
    }
    Ok(low)
}

/// How many events a bucket of [`RowCounts`] spans.
const BUCKET_EVENTS: i64 = 4096;
/// How many bucket counts are remembered at most.
const MAX_BUCKETS: usize = 100_000;

/// How many delivery rows each endpoint has per bucket of event seqs, for buckets that can no longer
/// change: every event of the bucket is at or below the endpoint's cursor, so each of its deliveries
/// has its row already (fan-out writes rows only above the cursor), and retries change a row's status,
/// never whether it exists. Rows disappear only by the purge, of finished deliveries older than the
/// retention (days), and with their endpoint, whose seq is never used again.
#[derive(Debug, Default)]
pub(crate) struct RowCounts {
    /// `(endpoint seq, bucket)` → rows.
    buckets: std::sync::Mutex<std::collections::HashMap<(i64, i64), i64>>,
}

impl RowCounts {
    /// The rows of `endpoint_seq` with keys from `from_key` on: whole buckets below the cursor from
    /// memory (counted once), the rest counted now.
    fn rows_since(
        &self,
        conn: &Connection,
        endpoint_seq: i64,
        cursor: i64,
        from_event: i64,
    ) -> Result<i64, StoreError> {
        let mut count =
            conn.prepare_cached("SELECT COUNT(*) FROM deliveries WHERE endpoint_seq = ?1 AND seq >= ?2 AND seq < ?3")?;
        let mut between = |from_event: i64, to_event: i64| -> Result<i64, StoreError> {
            let range = params![endpoint_seq, delivery_key(from_event, 0), delivery_key(to_event, 0)];
            Ok(count.query_row(range, |row| row.get(0))?)
        };
        let first_whole = from_event.div_euclid(BUCKET_EVENTS) + i64::from(from_event.rem_euclid(BUCKET_EVENTS) != 0);
        // Whole buckets end at or below the cursor + 1: every event in them is at or below the cursor.
        let last_whole = (cursor + 1).div_euclid(BUCKET_EVENTS);
        if first_whole >= last_whole {
            return between(from_event, i64::MAX >> 20);
        }
        let mut total = between(from_event, first_whole * BUCKET_EVENTS)?;
        for bucket in first_whole..last_whole {
            let known = self.buckets.lock().unwrap_or_else(|e| e.into_inner()).get(&(endpoint_seq, bucket)).copied();
            total += match known {
                Some(rows) => rows,
                None => {
                    let rows = between(bucket * BUCKET_EVENTS, (bucket + 1) * BUCKET_EVENTS)?;
                    let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                    if buckets.len() >= MAX_BUCKETS {
                        // Windows move forward: the oldest buckets are the ones no longer asked for.
                        let oldest = first_whole;
                        buckets.retain(|(_, b), _| *b >= oldest);
                        if buckets.len() >= MAX_BUCKETS {
                            buckets.clear();
                        }
                    }
                    buckets.insert((endpoint_seq, bucket), rows);
                    rows
                }
            };
        }
        Ok(total + between(last_whole * BUCKET_EVENTS, i64::MAX >> 20)?)
    }
}

/// Counts come from indexes alone: all of an endpoint's rows since the window's start
/// (`deliveries_by_endpoint`, through [`RowCounts`]), the failed ones (`failed_deliveries`, whose key
/// holds the endpoint's seq) and the pending ones (`pending_by_endpoint`); delivered is what is left.
/// Owed deliveries, which have no row yet, are pending (see `fanout`).
pub(super) fn endpoint_health(
    conn: &Connection,
    tag: &str,
    since_ms: i64,
    row_counts: &RowCounts,
) -> Result<Vec<EndpointHealth>, StoreError> {
    let from_event = first_event_since(conn, since_ms.div_euclid(1000))?;
    let from_key = delivery_key(from_event, 0);
    let mut endpoints = conn.prepare_cached("SELECT seq, events, active, cursor FROM endpoints ORDER BY seq DESC")?;
    let subscriptions = endpoints
        .query_map([], |row| {
            let events: String = row.get(1)?;
            Ok((row.get::<_, i64>(0)?, events, row.get::<_, bool>(2)?, row.get::<_, i64>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut failed = conn.prepare_cached(&format!(
        "SELECT COUNT(*) FROM deliveries WHERE status = 2 AND seq >= ?2 AND (seq & {}) = ?1",
        fanout::MAX_ENDPOINT_SEQ
    ))?;
    // Named, or the planner walks every row of the endpoint in `deliveries_by_endpoint` instead.
    let mut pending = conn.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(seq >= ?2), 0) FROM deliveries INDEXED BY pending_by_endpoint
         WHERE status = 0 AND endpoint_seq = ?1",
    )?;
    let mut out = Vec::with_capacity(subscriptions.len());
    for (seq, events, active, cursor) in subscriptions {
        let all_rows = row_counts.rows_since(conn, seq, cursor, from_event)?;
        let failed_rows: i64 = failed.query_row(params![seq, from_key], |row| row.get(0))?;
        let (pending_rows, recent_pending_rows): (i64, i64) =
            pending.query_row(params![seq, from_key], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let owed = match estate_crm_domain::webhook::EventFilter::parse(&serde_json::Value::String(events)) {
            Ok(events) if active => fanout::count_owed(conn, &Subscription { seq, events, active, cursor })?,
            _ => 0,
        };
        out.push(EndpointHealth {
            endpoint_id: ids::format(ENDPOINT_PREFIX, tag, seq),
            delivered: u64::try_from(all_rows - failed_rows - recent_pending_rows).unwrap_or(0),
            pending: u64::try_from(pending_rows).unwrap_or(0) + owed,
            failed: u64::try_from(failed_rows).unwrap_or(0),
        });
    }
    Ok(out)
}
