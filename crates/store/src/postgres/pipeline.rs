//! The pipeline screens' queries (see `crate::pipeline`), as in `sqlite/pipeline.rs`. Fields are
//! read as `fields::jsonb`; each query names its kind as a literal, so that PostgreSQL can use the
//! partial expression indexes of migration 2 (`... WHERE kind = 'deal'`).

use std::collections::HashMap;

use deadpool_postgres::ClientWrapper;
use estate_crm_domain::schema;
use estate_crm_domain::{FieldErrors, Record, RecordKind};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::records::{RECORD_COLUMNS, record_from_row};
use crate::ids;
use crate::pipeline::{DueTasks, RecordQuery, Scope, StageTotal, lead_source_for_enquiry};
use crate::prepare::{paginate, parse_cursor};
use crate::{Actor, Page, PageRequest, Role, StoreError};

/// At most this many ids in one [`by_ids`] call.
const MAX_IDS: usize = 500;

/// The user whose records a scope limits to, if any.
fn scope_user(actor: &Actor, scope: Scope) -> Option<String> {
    match scope {
        Scope::Visible if actor.role == Role::Admin => None,
        _ => Some(actor.user_id.clone()),
    }
}

/// A filter value as the JSON text it is compared with (`fields::jsonb -> 'name' = $n::jsonb`).
fn json_value(field: &str, value: &Value) -> Result<String, StoreError> {
    match value {
        Value::String(_) | Value::Bool(_) | Value::Number(_) => Ok(value.to_string()),
        _ => {
            Err(StoreError::invalid(FieldErrors::single(field, "can only be filtered by a string, number or boolean")))
        }
    }
}

pub(super) async fn find(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    query: &RecordQuery,
    page: &PageRequest,
) -> Result<Page<Record>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = page.limit.clamp(1, 1000);
    let user = scope_user(actor, query.scope);
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = '{}' AND seq < $1", kind.name());
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(before)];
    if let Some(user) = user {
        values.push(Box::new(user));
        sql.push_str(&format!(" AND (created_by = ${0} OR assigned_agent_id = ${0})", values.len()));
    }
    for (name, value) in &query.equals {
        // Only a schema's own names reach the SQL text, so nothing a client sends can.
        let Some(field) = schema::field(kind, name) else {
            return Err(StoreError::invalid(FieldErrors::single(name, "is not a known field")));
        };
        values.push(Box::new(json_value(field.name, value)?));
        sql.push_str(&format!(" AND fields::jsonb -> '{}' = ${}::TEXT::jsonb", field.name, values.len()));
    }
    values.push(Box::new(i64::try_from(limit).unwrap_or(1000) + 1));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", values.len()));
    let statement = client.prepare_cached(&sql).await?;
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
    let rows = client.query(&statement, &params).await?;
    let records = rows
        .iter()
        .map(|row| Ok((row.try_get::<_, i64>(0)?, record_from_row(row, tag)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    paginate(records, limit)
}

pub(super) async fn due_tasks(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    scope: Scope,
    offset: usize,
    limit: usize,
) -> Result<DueTasks, StoreError> {
    let limit = limit.clamp(1, 1000);
    let user = scope_user(actor, scope);
    let statement = client
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records
             WHERE kind = 'task' AND fields::jsonb -> 'completed' = 'false'::jsonb
               AND ($1::TEXT IS NULL OR created_by = $1 OR assigned_agent_id = $1)
             ORDER BY COALESCE(fields::jsonb ->> 'due_date', '9999-12-31'), seq LIMIT $2 OFFSET $3"
        ))
        .await?;
    let wanted = i64::try_from(limit).unwrap_or(1000) + 1;
    let offset_sql = i64::try_from(offset).unwrap_or(i64::MAX);
    let rows = client.query(&statement, &[&user, &wanted, &offset_sql]).await?;
    let mut items = rows.iter().map(|row| record_from_row(row, tag)).collect::<Result<Vec<_>, _>>()?;
    let next_offset = (items.len() > limit).then(|| offset + limit);
    items.truncate(limit);
    Ok(DueTasks { items, next_offset })
}

pub(super) async fn stage_totals(
    client: &ClientWrapper,
    actor: &Actor,
    scope: Scope,
) -> Result<Vec<StageTotal>, StoreError> {
    let user = scope_user(actor, scope);
    let statement = client
        .prepare_cached(
            "SELECT fields::jsonb ->> 'stage', fields::jsonb ->> 'currency', COUNT(*),
                    COALESCE(SUM(CASE WHEN jsonb_typeof(fields::jsonb -> 'amount') = 'number'
                                      THEN (fields::jsonb ->> 'amount')::FLOAT8 END), 0)
             FROM records
             WHERE kind = 'deal' AND ($1::TEXT IS NULL OR created_by = $1 OR assigned_agent_id = $1)
             GROUP BY 1, 2",
        )
        .await?;
    client
        .query(&statement, &[&user])
        .await?
        .iter()
        .map(|row| {
            Ok(StageTotal {
                stage: row.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
                currency: row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                count: u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
                amount: row.try_get(3)?,
            })
        })
        .collect()
}

pub(super) async fn by_ids(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    ids: &[String],
) -> Result<Vec<Record>, StoreError> {
    if ids.len() > MAX_IDS {
        return Err(StoreError::invalid(FieldErrors::single("ids", "must be at most 500 ids")));
    }
    let mut seqs: Vec<i64> = ids.iter().filter_map(|id| ids::parse(kind.id_prefix(), tag, id)).collect();
    seqs.sort_unstable();
    seqs.dedup();
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM records WHERE seq = ANY($1) AND kind = $2"))
        .await?;
    let rows = client.query(&statement, &[&seqs, &kind.name()]).await?;
    let records = rows.iter().map(|row| record_from_row(row, tag)).collect::<Result<Vec<_>, _>>()?;
    Ok(records.into_iter().filter(|r| actor.may_see(&r.created_by, r.assigned_agent_id())).collect())
}

pub(super) async fn leads_from_enquiries(
    client: &ClientWrapper,
    tag: &str,
    enquiry_ids: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    if enquiry_ids.len() > MAX_IDS {
        return Err(StoreError::invalid(FieldErrors::single("ids", "must be at most 500 ids")));
    }
    let sources: HashMap<String, String> =
        enquiry_ids.iter().map(|id| (lead_source_for_enquiry(id), id.clone())).collect();
    let wanted: Vec<&str> = sources.keys().map(String::as_str).collect();
    let statement = client
        .prepare_cached(
            "SELECT fields::jsonb ->> 'lead_source', MIN(seq) FROM records
             WHERE kind = 'lead' AND fields::jsonb ->> 'lead_source' = ANY($1::TEXT[])
             GROUP BY 1",
        )
        .await?;
    let mut found = HashMap::new();
    for row in client.query(&statement, &[&wanted]).await? {
        let (source, seq): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(enquiry) = sources.get(&source) {
            found.insert(enquiry.clone(), ids::format(RecordKind::Lead.id_prefix(), tag, seq));
        }
    }
    Ok(found)
}
