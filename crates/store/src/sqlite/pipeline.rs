//! The pipeline screens' queries (see `crate::pipeline`). Each one names its kind as a literal in
//! the SQL, so that SQLite can use the partial indexes on JSON fields that migration "pipeline"
//! makes (`... WHERE kind = 'deal'`): a parameter would not match an index's WHERE clause.

use std::collections::HashMap;

use estate_crm_domain::schema;
use estate_crm_domain::{FieldErrors, Record, RecordKind};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};
use serde_json::Value;

use super::records::{RECORD_COLUMNS, paginate, parse_cursor, record_from_row};
use crate::ids;
use crate::pipeline::{DueTasks, RecordQuery, Scope, StageTotal, lead_source_for_enquiry};
use crate::{Actor, Page, PageRequest, Role, StoreError};

/// At most this many ids in one [`by_ids`] call.
pub(super) const MAX_IDS: usize = 500;

/// The user whose records a scope limits to, if any.
fn scope_user(actor: &Actor, scope: Scope) -> Option<String> {
    match scope {
        Scope::Visible if actor.role == Role::Admin => None,
        _ => Some(actor.user_id.clone()),
    }
}

/// A JSON value as the SQL value `json_extract` answers for it.
fn sql_value(field: &str, value: &Value) -> Result<SqlValue, StoreError> {
    match value {
        Value::String(s) => Ok(SqlValue::Text(s.clone())),
        Value::Bool(b) => Ok(SqlValue::Integer(i64::from(*b))),
        Value::Number(n) => Ok(n.as_i64().map_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(0.0)), SqlValue::Integer)),
        _ => {
            Err(StoreError::invalid(FieldErrors::single(field, "can only be filtered by a string, number or boolean")))
        }
    }
}

pub(super) fn find(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    query: &RecordQuery,
    page: &PageRequest,
) -> Result<Page<Record>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = page.limit.clamp(1, 1000);
    let user = scope_user(actor, query.scope);
    let mut names = Vec::with_capacity(query.equals.len());
    let mut values = vec![SqlValue::Integer(before)];
    values.extend(user.map(SqlValue::Text));
    for (name, value) in &query.equals {
        // Only a schema's own names reach the SQL text, so nothing a client sends can.
        let Some(field) = schema::field(kind, name) else {
            return Err(StoreError::invalid(FieldErrors::single(name, "is not a known field")));
        };
        names.push(field.name);
        values.push(sql_value(field.name, value)?);
    }
    values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(1000) + 1));
    let sql = find_sql(kind, values.len() > names.len() + 2, &names);
    let mut statement = conn.prepare_cached(&sql)?;
    let rows =
        statement.query_map(params_from_iter(values), |row| Ok((row.get::<_, i64>(0)?, record_from_row(row, tag)?)))?;
    paginate(rows.collect::<Result<Vec<_>, _>>()?, limit)
}

/// The statement of [`find`]: `?1` the cursor, then the user when `scoped`, then one value per
/// field, then the limit.
fn find_sql(kind: RecordKind, scoped: bool, fields: &[&str]) -> String {
    if kind == RecordKind::Deal && scoped && fields == ["stage"] {
        return AGENTS_STAGE.to_owned();
    }
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = '{}' AND seq < ?1", kind.name());
    let mut n = 1;
    if scoped {
        n += 1;
        sql.push_str(&format!(" AND (created_by = ?{n} OR assigned_agent_id = ?{n})"));
    }
    for field in fields {
        n += 1;
        sql.push_str(&format!(" AND json_extract(fields, '$.{field}') = ?{n}"));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", n + 1));
    sql
}

/// An agent's newest deals of one stage (`?1` cursor, `?2` user, `?3` stage, `?4` limit): the newest
/// they created and the newest they are given, each read in order from its own index and merged.
/// Walking the whole stage newest first instead reads every deal of it when the agent has few there.
/// The indexes are named: without statistics the planner prefers `records_by_kind`.
const AGENTS_STAGE: &str = "SELECT seq, kind, created_by, created_at, updated_at, fields FROM records
     WHERE seq IN (
         SELECT seq FROM (SELECT seq FROM records INDEXED BY deals_by_creator
             WHERE kind = 'deal' AND created_by = ?2 AND json_extract(fields, '$.stage') = ?3 AND seq < ?1
             ORDER BY seq DESC LIMIT ?4)
         UNION
         SELECT seq FROM (SELECT seq FROM records INDEXED BY deals_by_agent
             WHERE kind = 'deal' AND assigned_agent_id = ?2 AND json_extract(fields, '$.stage') = ?3 AND seq < ?1
             ORDER BY seq DESC LIMIT ?4))
     ORDER BY seq DESC LIMIT ?4";

/// The task index's sort key: the due date, with undated tasks after every date.
const DUE_KEY: &str = "COALESCE(json_extract(fields, '$.due_date'), '9999-12-31')";

fn due_tasks_sql() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM records
         WHERE kind = 'task' AND json_extract(fields, '$.completed') = 0
           AND (?1 IS NULL OR created_by = ?1 OR assigned_agent_id = ?1)
         ORDER BY {DUE_KEY}, seq LIMIT ?2 OFFSET ?3"
    )
}

pub(super) fn due_tasks(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    scope: Scope,
    offset: usize,
    limit: usize,
) -> Result<DueTasks, StoreError> {
    let limit = limit.clamp(1, 1000);
    let user = scope_user(actor, scope);
    let mut statement = conn.prepare_cached(&due_tasks_sql())?;
    let wanted = i64::try_from(limit).unwrap_or(1000) + 1;
    let offset_sql = i64::try_from(offset).unwrap_or(i64::MAX);
    let mut items = statement
        .query_map(rusqlite::params![user, wanted, offset_sql], |row| record_from_row(row, tag))?
        .collect::<Result<Vec<_>, _>>()?;
    let next_offset = (items.len() > limit).then(|| offset + limit);
    items.truncate(limit);
    Ok(DueTasks { items, next_offset })
}

/// Read from `deals_totals` alone: its entries hold every value the sums need. Named, because
/// without statistics the planner would rather walk `records_by_kind` and parse each deal.
const STAGE_TOTALS: &str = "SELECT json_extract(fields, '$.stage'), json_extract(fields, '$.currency'),
            COUNT(*), TOTAL(json_extract(fields, '$.amount'))
     FROM records INDEXED BY deals_totals
     WHERE kind = 'deal' AND (?1 IS NULL OR created_by = ?1 OR assigned_agent_id = ?1)
     GROUP BY json_extract(fields, '$.stage'), json_extract(fields, '$.currency')";

pub(super) fn stage_totals(conn: &Connection, actor: &Actor, scope: Scope) -> Result<Vec<StageTotal>, StoreError> {
    let user = scope_user(actor, scope);
    let mut statement = conn.prepare_cached(STAGE_TOTALS)?;
    let rows = statement.query_map([user], |row| {
        Ok(StageTotal {
            stage: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
            currency: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
            count: row.get::<_, i64>(2)?.try_into().unwrap_or(0),
            amount: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn by_ids_sql() -> String {
    format!("SELECT {RECORD_COLUMNS} FROM records WHERE seq IN (SELECT value FROM json_each(?1)) AND kind = ?2")
}

pub(super) fn by_ids(
    conn: &Connection,
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
    // A `json_each` of the seqs keeps one cached statement for any number of ids.
    let list = serde_json::to_string(&seqs).expect("numbers serialise");
    let mut statement = conn.prepare_cached(&by_ids_sql())?;
    let rows = statement.query_map(rusqlite::params![list, kind.name()], |row| record_from_row(row, tag))?;
    let records = rows.collect::<Result<Vec<_>, _>>()?;
    Ok(records.into_iter().filter(|r| actor.may_see(&r.created_by, r.assigned_agent_id())).collect())
}

/// Each source's first lead: the sources are the outer loop (CROSS JOIN keeps that order), so each
/// one is a look-up in `leads_by_source` rather than a pass over every lead.
const LEADS_FROM_ENQUIRIES: &str = "SELECT sources.value, MIN(records.seq)
     FROM json_each(?1) AS sources CROSS JOIN records
     WHERE records.kind = 'lead' AND json_extract(records.fields, '$.lead_source') = sources.value
     GROUP BY sources.value";

pub(super) fn leads_from_enquiries(
    conn: &Connection,
    tag: &str,
    enquiry_ids: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    if enquiry_ids.len() > MAX_IDS {
        return Err(StoreError::invalid(FieldErrors::single("ids", "must be at most 500 ids")));
    }
    let sources: HashMap<String, String> =
        enquiry_ids.iter().map(|id| (lead_source_for_enquiry(id), id.clone())).collect();
    let list = serde_json::to_string(&sources.keys().collect::<Vec<_>>()).expect("strings serialise");
    let mut statement = conn.prepare_cached(LEADS_FROM_ENQUIRIES)?;
    let rows = statement.query_map([list], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
    let mut found = HashMap::new();
    for row in rows {
        let (source, seq) = row?;
        if let Some(enquiry) = sources.get(&source) {
            found.insert(enquiry.clone(), ids::format(RecordKind::Lead.id_prefix(), tag, seq));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How SQLite runs `sql`: the details of its query plan, joined.
    fn plan(sql: &str) -> String {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let parameters = statement.parameter_count();
        let rows = statement
            .query_map(params_from_iter(vec![SqlValue::Null; parameters]), |row| row.get::<_, String>(3))
            .unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
    }

    #[test]
    fn the_board_and_the_lists_read_their_partial_indexes_not_every_record() {
        let stage = plan(&find_sql(RecordKind::Deal, false, &["stage"]));
        assert!(stage.contains("deals_by_stage") && !stage.contains("TEMP B-TREE"), "newest first: {stage}");
        let agents = plan(&find_sql(RecordKind::Deal, true, &["stage"]));
        assert!(agents.contains("deals_by_creator") && agents.contains("deals_by_agent"), "{agents}");
        assert!(!agents.contains("SCAN records"), "{agents}");
        let status = plan(&find_sql(RecordKind::Lead, false, &["status"]));
        assert!(status.contains("leads_by_status"), "{status}");
        let tasks = plan(&due_tasks_sql());
        assert!(tasks.contains("tasks_by_due") && !tasks.contains("TEMP B-TREE"), "in index order: {tasks}");
        let totals = plan(STAGE_TOTALS);
        assert!(totals.contains("deals_totals") && !totals.contains("TEMP B-TREE"), "{totals}");
        let made = plan(LEADS_FROM_ENQUIRIES);
        let by_ids = plan(&by_ids_sql());
        assert!(by_ids.contains("SEARCH records") && by_ids.contains("seq=?"), "one look-up per id: {by_ids}");
        assert!(made.contains("leads_by_source"), "{made}");
    }
}
