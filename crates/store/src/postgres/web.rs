//! What the web app reads and writes besides records and webhooks: sign-in sessions, users'
//! passwords, and the delivery counts of the dashboard and the endpoints pages (as in
//! `sqlite/web.rs`).

use deadpool_postgres::ClientWrapper;
use estate_crm_domain::FieldErrors;
use estate_crm_domain::webhook::EventFilter;

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

pub(super) async fn any_password_set(client: &ClientWrapper) -> Result<bool, StoreError> {
    let statement =
        client.prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE password_hash IS NOT NULL)").await?;
    Ok(client.query_one(&statement, &[]).await?.try_get(0)?)
}

/// Checks and inserts in one transaction, under a lock on the users table's setup row, so two setup
/// forms sent at once (even to two servers) make one administrator.
pub(super) async fn create_first_admin(ctx: &mut WriteCtx, new: &NewUser) -> Result<Option<User>, StoreError> {
    // A transaction-level advisory lock: the second server's check waits for the first's commit.
    ctx.client.execute("SELECT pg_advisory_xact_lock($1)", &[&FIRST_ADMIN_LOCK]).await?;
    if any_password_set(&ctx.client).await? {
        return Ok(None);
    }
    if new.password_hash.is_none() {
        return Err(StoreError::invalid(FieldErrors::single("password", "is required")));
    }
    create_user(ctx, new).await.map(Some)
}

/// The advisory lock the one-time setup runs under ("setup" in ASCII).
const FIRST_ADMIN_LOCK: i64 = 0x0073_6574_7570;

/// The user with this email (any case).
pub(super) async fn user_by_email(
    client: &ClientWrapper,
    tag: &str,
    email: &str,
) -> Result<Option<UserCredentials>, StoreError> {
    let statement =
        client.prepare_cached("SELECT seq, name, email, role, password_hash FROM users WHERE email = $1").await?;
    credentials(client.query_opt(&statement, &[&email]).await?, tag)
}

/// The user with this seq.
pub(super) async fn user_by_seq(
    client: &ClientWrapper,
    tag: &str,
    seq: i64,
) -> Result<Option<UserCredentials>, StoreError> {
    let statement =
        client.prepare_cached("SELECT seq, name, email, role, password_hash FROM users WHERE seq = $1").await?;
    credentials(client.query_opt(&statement, &[&seq]).await?, tag)
}

fn credentials(row: Option<tokio_postgres::Row>, tag: &str) -> Result<Option<UserCredentials>, StoreError> {
    row.map(|row| Ok(UserCredentials { user: user_from_row(&row, tag)?, password_hash: row.try_get(4)? })).transpose()
}

pub(super) async fn list_users(client: &ClientWrapper, tag: &str) -> Result<Vec<User>, StoreError> {
    let statement = client.prepare_cached("SELECT seq, name, email, role FROM users ORDER BY seq LIMIT 1000").await?;
    client.query(&statement, &[]).await?.iter().map(|row| user_from_row(row, tag)).collect()
}

pub(super) async fn set_password(
    ctx: &mut WriteCtx,
    user_id: &str,
    hash: &str,
    keep: Option<&str>,
) -> Result<(), StoreError> {
    let seq = user_seq_or_not_found(&ctx.state.tag, user_id)?;
    if ctx.client.execute("UPDATE users SET password_hash = $2 WHERE seq = $1", &[&seq, &hash]).await? == 0 {
        return Err(StoreError::not_found("no user has this id"));
    }
    ctx.client.execute("DELETE FROM sessions WHERE user_seq = $1 AND hash IS DISTINCT FROM $2", &[&seq, &keep]).await?;
    Ok(())
}

pub(super) async fn list_tokens(
    client: &ClientWrapper,
    tag: &str,
    user_id: &str,
) -> Result<Vec<TokenInfo>, StoreError> {
    let Some(seq) = user_seq(tag, user_id) else {
        return Ok(Vec::new());
    };
    let statement =
        client.prepare_cached("SELECT seq, name FROM tokens WHERE user_seq = $1 ORDER BY seq LIMIT 1000").await?;
    client
        .query(&statement, &[&seq])
        .await?
        .iter()
        .map(|row| {
            Ok(TokenInfo {
                id: ids::format(TOKEN_PREFIX, tag, row.try_get(0)?),
                user_id: user_id.to_owned(),
                name: row.try_get(1)?,
            })
        })
        .collect()
}

pub(super) async fn create_session(
    ctx: &mut WriteCtx,
    hash: &str,
    user_id: &str,
    now_ms: i64,
    limits: SessionLimits,
) -> Result<(), StoreError> {
    let seq = user_seq_or_not_found(&ctx.state.tag, user_id)?;
    // Signing in is rare, so it is where ended sessions are cleared away.
    ctx.client
        .execute(
            "DELETE FROM sessions WHERE last_seen_at <= $1 OR created_at <= $2",
            &[&(now_ms - limits.idle_ms), &(now_ms - limits.absolute_ms)],
        )
        .await?;
    ctx.client
        .execute(
            "INSERT INTO sessions (hash, user_seq, created_at, last_seen_at) VALUES ($1, $2, $3, $3)",
            &[&hash, &seq, &now_ms],
        )
        .await?;
    Ok(())
}

pub(super) async fn find_session(
    client: &ClientWrapper,
    tag: &str,
    hash: &str,
    now_ms: i64,
    limits: SessionLimits,
) -> Result<Option<Session>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT u.seq, u.name, u.email, u.role, s.created_at, s.last_seen_at
             FROM sessions s JOIN users u ON u.seq = s.user_seq
             WHERE s.hash = $1 AND s.last_seen_at > $2 AND s.created_at > $3",
        )
        .await?;
    client
        .query_opt(&statement, &[&hash, &(now_ms - limits.idle_ms), &(now_ms - limits.absolute_ms)])
        .await?
        .map(|row| {
            Ok(Session { user: user_from_row(&row, tag)?, created_at: row.try_get(4)?, last_seen_at: row.try_get(5)? })
        })
        .transpose()
}

pub(super) async fn touch_session(ctx: &mut WriteCtx, hash: &str, now_ms: i64) -> Result<(), StoreError> {
    ctx.client
        .execute("UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $2) WHERE hash = $1", &[&hash, &now_ms])
        .await?;
    Ok(())
}

pub(super) async fn delete_session(ctx: &mut WriteCtx, hash: &str) -> Result<(), StoreError> {
    ctx.client.execute("DELETE FROM sessions WHERE hash = $1", &[&hash]).await?;
    Ok(())
}

/// The first event at or after `since_s` (Unix seconds), by bisecting the event seqs: events are
/// numbered in commit order, so their times rise with their seqs (see `sqlite/web.rs`).
async fn first_event_since(client: &ClientWrapper, since_s: i64) -> Result<i64, StoreError> {
    let next_from =
        client.prepare_cached("SELECT seq, created_at FROM events WHERE seq >= $1 ORDER BY seq LIMIT 1").await?;
    let bounds = client
        .query_one(
            "SELECT COALESCE((SELECT MIN(seq) FROM events), 1), COALESCE((SELECT MAX(seq) FROM events), 0) + 1",
            &[],
        )
        .await?;
    let (mut low, mut high): (i64, i64) = (bounds.try_get(0)?, bounds.try_get(1)?);
    // Invariant: every event before `low` is older than `since_s`; none from `high` on is.
    while low < high {
        let middle = low + (high - low) / 2;
        let next = client.query_opt(&next_from, &[&middle]).await?;
        match next.map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1))) {
            Some((seq, at)) if seq < high && at < since_s => low = seq + 1,
            _ => high = middle,
        }
    }
    Ok(low)
}

/// Each endpoint's delivered, failed and pending deliveries since `since_ms`: one count of its rows
/// in the key range of the window (`deliveries_by_endpoint`), and its owed deliveries (pending).
pub(super) async fn endpoint_health(
    client: &ClientWrapper,
    tag: &str,
    since_ms: i64,
) -> Result<Vec<EndpointHealth>, StoreError> {
    let from_event = first_event_since(client, since_ms.div_euclid(1000)).await?;
    let from_key = delivery_key(from_event, 0);
    let endpoints = client.query("SELECT seq, events, active, cursor FROM endpoints ORDER BY seq DESC", &[]).await?;
    let counts = client
        .prepare_cached(
            "SELECT COUNT(*) FILTER (WHERE seq >= $2 AND status = 1),
                    COUNT(*) FILTER (WHERE seq >= $2 AND status = 2),
                    COUNT(*) FILTER (WHERE status = 0)
             FROM deliveries WHERE endpoint_seq = $1 AND (seq >= $2 OR status = 0)",
        )
        .await?;
    let mut out = Vec::with_capacity(endpoints.len());
    for row in endpoints {
        let (seq, events, active, cursor): (i64, String, bool, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        let counted = client.query_one(&counts, &[&seq, &from_key]).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let owed = match EventFilter::parse(&serde_json::Value::String(events)) {
            Ok(events) if active => fanout::count_owed(client, &Subscription { seq, events, active, cursor }).await?,
            _ => 0,
        };
        out.push(EndpointHealth {
            endpoint_id: ids::format(ENDPOINT_PREFIX, tag, seq),
            delivered: count(counted.try_get(0)?),
            failed: count(counted.try_get(1)?),
            pending: count(counted.try_get(2)?) + owed,
        });
    }
    Ok(out)
}
