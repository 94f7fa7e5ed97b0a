//! Users and their tokens. Tokens are stored only as hashes.

use chrono::Utc;
use estate_crm_domain::FieldErrors;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::writer::WriteCtx;
use crate::{BUILT_IN_ADMIN_EMAIL, NewUser, Role, StoreError, TokenInfo, User, ids};

pub(super) const USER_PREFIX: &str = "usr";
pub(super) const TOKEN_PREFIX: &str = "tok";
const ADMIN_TOKEN_NAME: &str = "admin (from the server's start)";

pub(super) fn user_from_row(row: &rusqlite::Row<'_>, tag: &str) -> rusqlite::Result<User> {
    let role: String = row.get(3)?;
    Ok(User {
        id: ids::format(USER_PREFIX, tag, row.get(0)?),
        name: row.get(1)?,
        email: row.get(2)?,
        role: Role::parse(&role).unwrap_or(Role::Agent),
    })
}

pub(super) fn find_token(conn: &Connection, tag: &str, hash: &str) -> Result<Option<User>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT u.seq, u.name, u.email, u.role FROM tokens t JOIN users u ON u.seq = t.user_seq WHERE t.hash = ?1",
        )?
        .query_row([hash], |row| user_from_row(row, tag))
        .optional()?)
}

/// The built-in administrator is the first user; its start-up token is replaced when the operator
/// gives another one with `--admin-token`.
pub(super) fn set_admin_token(ctx: &mut WriteCtx<'_>, hash: &str, only_if_missing: bool) -> Result<bool, StoreError> {
    let now = Utc::now().timestamp_millis();
    let admin: Option<i64> = ctx
        .tx
        .query_row("SELECT seq FROM users WHERE email = ?1", [BUILT_IN_ADMIN_EMAIL], |row| row.get(0))
        .optional()?;
    let admin = match admin {
        Some(seq) => seq,
        None => {
            ctx.tx.execute(
                "INSERT INTO users (name, email, role, created_at) VALUES ('Administrator', ?1, 'admin', ?2)",
                params![BUILT_IN_ADMIN_EMAIL, now],
            )?;
            ctx.tx.last_insert_rowid()
        }
    };
    let existing: Option<String> = ctx
        .tx
        .query_row(
            "SELECT hash FROM tokens WHERE user_seq = ?1 AND name = ?2",
            params![admin, ADMIN_TOKEN_NAME],
            |row| row.get(0),
        )
        .optional()?;
    match existing {
        Some(_) if only_if_missing => Ok(false),
        Some(old) if old == hash => Ok(true),
        _ => {
            ctx.tx.execute("DELETE FROM tokens WHERE user_seq = ?1 AND name = ?2", params![admin, ADMIN_TOKEN_NAME])?;
            ctx.tx.execute(
                "INSERT INTO tokens (user_seq, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![admin, ADMIN_TOKEN_NAME, hash, now],
            )?;
            Ok(true)
        }
    }
}

pub(super) fn create_user(ctx: &mut WriteCtx<'_>, new: &NewUser) -> Result<User, StoreError> {
    let now = Utc::now().timestamp_millis();
    let inserted = ctx.tx.execute(
        "INSERT INTO users (name, email, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![new.name, new.email.to_lowercase(), new.role.as_str(), new.password_hash, now],
    );
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(err, _)) if err.code == ErrorCode::ConstraintViolation => {
            return Err(StoreError::conflict(FieldErrors::single("email", "a user with this email already exists")));
        }
        Err(err) => return Err(err.into()),
    }
    Ok(User {
        id: ids::format(USER_PREFIX, &ctx.state.tag, ctx.tx.last_insert_rowid()),
        name: new.name.clone(),
        email: new.email.to_lowercase(),
        role: new.role,
    })
}

pub(super) fn create_token(
    ctx: &mut WriteCtx<'_>,
    user_id: &str,
    name: &str,
    hash: &str,
) -> Result<TokenInfo, StoreError> {
    let tag = ctx.state.tag.clone();
    let user_seq = ids::parse(USER_PREFIX, &tag, user_id)
        .filter(|seq| {
            ctx.tx
                .query_row("SELECT 1 FROM users WHERE seq = ?1", [seq], |_| Ok(()))
                .optional()
                .ok()
                .flatten()
                .is_some()
        })
        .ok_or_else(|| StoreError::invalid(FieldErrors::single("user_id", "no user has this id")))?;
    ctx.tx.execute(
        "INSERT INTO tokens (user_seq, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![user_seq, name, hash, Utc::now().timestamp_millis()],
    )?;
    Ok(TokenInfo {
        id: ids::format(TOKEN_PREFIX, &tag, ctx.tx.last_insert_rowid()),
        user_id: user_id.to_owned(),
        name: name.to_owned(),
    })
}

pub(super) fn delete_token(ctx: &mut WriteCtx<'_>, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
    let tag = ctx.state.tag.clone();
    let not_found = || StoreError::not_found("no token has this id");
    let seq = ids::parse(TOKEN_PREFIX, &tag, id).ok_or_else(not_found)?;
    let owner_seq = owner.map(|o| ids::parse(USER_PREFIX, &tag, o).unwrap_or(-1));
    let deleted = ctx
        .tx
        .execute("DELETE FROM tokens WHERE seq = ?1 AND (?2 IS NULL OR user_seq = ?2)", params![seq, owner_seq])?;
    if deleted == 0 { Err(not_found()) } else { Ok(()) }
}
