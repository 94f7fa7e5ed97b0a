//! Users and their tokens. Tokens are stored only as hashes.

use chrono::Utc;
use deadpool_postgres::ClientWrapper;
use estate_crm_domain::FieldErrors;
use tokio_postgres::Row;

use super::writer::WriteCtx;
use crate::{BUILT_IN_ADMIN_EMAIL, NewUser, Role, StoreError, TokenInfo, User, ids};

pub(super) const USER_PREFIX: &str = "usr";
pub(super) const TOKEN_PREFIX: &str = "tok";
const ADMIN_TOKEN_NAME: &str = "admin (from the server's start)";

pub(super) fn user_from_row(row: &Row, tag: &str) -> Result<User, StoreError> {
    let role: &str = row.try_get(3)?;
    Ok(User {
        id: ids::format(USER_PREFIX, tag, row.try_get(0)?),
        name: row.try_get(1)?,
        email: row.try_get(2)?,
        role: Role::parse(role).unwrap_or(Role::Agent),
    })
}

pub(super) async fn find_token(client: &ClientWrapper, tag: &str, hash: &str) -> Result<Option<User>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT u.seq, u.name, u.email, u.role FROM tokens t JOIN users u ON u.seq = t.user_seq WHERE t.hash = $1",
        )
        .await?;
    client.query_opt(&statement, &[&hash]).await?.map(|row| user_from_row(&row, tag)).transpose()
}

/// The built-in administrator is the first user; its start-up token is replaced when the operator
/// gives another one with `--admin-token`.
pub(super) async fn set_admin_token(ctx: &mut WriteCtx, hash: &str, only_if_missing: bool) -> Result<bool, StoreError> {
    let now = Utc::now().timestamp_millis();
    let client = &ctx.client;
    // Made if missing; a second server starting at once finds the first one's.
    client
        .execute(
            "INSERT INTO users (name, email, role, created_at) VALUES ('Administrator', $1, 'admin', $2)
             ON CONFLICT (email) DO NOTHING",
            &[&BUILT_IN_ADMIN_EMAIL, &now],
        )
        .await?;
    let admin: i64 = client.query_one("SELECT seq FROM users WHERE email = $1", &[&BUILT_IN_ADMIN_EMAIL]).await?.get(0);
    let existing: Option<String> = client
        .query_opt("SELECT hash FROM tokens WHERE user_seq = $1 AND name = $2", &[&admin, &ADMIN_TOKEN_NAME])
        .await?
        .map(|row| row.get(0));
    match existing {
        Some(_) if only_if_missing => Ok(false),
        Some(old) if old == hash => Ok(true),
        _ => {
            client
                .execute("DELETE FROM tokens WHERE user_seq = $1 AND name = $2", &[&admin, &ADMIN_TOKEN_NAME])
                .await?;
            client
                .execute(
                    "INSERT INTO tokens (user_seq, name, hash, created_at) VALUES ($1, $2, $3, $4)",
                    &[&admin, &ADMIN_TOKEN_NAME, &hash, &now],
                )
                .await?;
            Ok(true)
        }
    }
}

pub(super) async fn create_user(ctx: &mut WriteCtx, new: &NewUser) -> Result<User, StoreError> {
    let now = Utc::now().timestamp_millis();
    let email = new.email.to_lowercase();
    let inserted = ctx
        .client
        .query_opt(
            "INSERT INTO users (name, email, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email) DO NOTHING RETURNING seq",
            &[&new.name, &email, &new.role.as_str(), &new.password_hash, &now],
        )
        .await?;
    let Some(row) = inserted else {
        return Err(StoreError::conflict(FieldErrors::single("email", "a user with this email already exists")));
    };
    Ok(User {
        id: ids::format(USER_PREFIX, &ctx.state.tag, row.try_get(0)?),
        name: new.name.clone(),
        email,
        role: new.role,
    })
}

pub(super) async fn create_token(
    ctx: &mut WriteCtx,
    user_id: &str,
    name: &str,
    hash: &str,
) -> Result<TokenInfo, StoreError> {
    let no_user = || StoreError::invalid(FieldErrors::single("user_id", "no user has this id"));
    let user_seq = ids::parse(USER_PREFIX, &ctx.state.tag, user_id).ok_or_else(no_user)?;
    let inserted = ctx
        .client
        .query_opt(
            "INSERT INTO tokens (user_seq, name, hash, created_at)
             SELECT seq, $2, $3, $4 FROM users WHERE seq = $1
             RETURNING seq",
            &[&user_seq, &name, &hash, &Utc::now().timestamp_millis()],
        )
        .await?
        .ok_or_else(no_user)?;
    Ok(TokenInfo {
        id: ids::format(TOKEN_PREFIX, &ctx.state.tag, inserted.try_get(0)?),
        user_id: user_id.to_owned(),
        name: name.to_owned(),
    })
}

pub(super) async fn delete_token(ctx: &mut WriteCtx, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
    let tag = &ctx.state.tag;
    let not_found = || StoreError::not_found("no token has this id");
    let seq = ids::parse(TOKEN_PREFIX, tag, id).ok_or_else(not_found)?;
    let owner_seq = owner.map(|o| ids::parse(USER_PREFIX, tag, o).unwrap_or(-1));
    let deleted = ctx
        .client
        .execute("DELETE FROM tokens WHERE seq = $1 AND ($2::BIGINT IS NULL OR user_seq = $2)", &[&seq, &owner_seq])
        .await?;
    if deleted == 0 { Err(not_found()) } else { Ok(()) }
}
