//! The web app's contact reads: the contact list by search and filters, a contact's records, and a
//! record's webhook timeline.
//!
//! Search reads `contact_search`, a narrow table of each contact's searchable text that the
//! write paths keep beside `records` (`search_text`, made with the rest of a row's columns, off
//! the writer thread for creates): each word becomes a `LIKE '%word%'`, checked newest
//! first, so a page stops reading after its rows; a word few contacts have reads the whole table
//! (about 50 ms for 500,000 contacts, see PERFORMANCE.md). An FTS5 trigram index answered such a
//! word in a millisecond but halved bulk creates, the engine's hot path.

use estate_crm_domain::webhook::EventFilter;
use estate_crm_domain::{EventName, Record, RecordKind};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::fanout::delivery_key;
use super::records::{RECORD_COLUMNS, find_visible, paginate, parse_cursor, record_from_row};
use super::webhooks::{DELIVERY_PREFIX, ENDPOINT_PREFIX};
use crate::{
    Actor, ContactQuery, DeliveryStatus, Page, PageRequest, Role, StoreError, TimelineDelivery, TimelineEvent, ids,
};

/// The most endpoints a timeline looks at.
const MAX_ENDPOINTS: i64 = 1000;

pub(super) use crate::prepare::search_text;

/// Writes new contacts' search rows, each `(seq, text)`, with one statement.
pub(super) fn insert_search_texts(conn: &Connection, rows: &[(i64, &str)]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!("INSERT INTO contact_search (seq, text) VALUES {}", vec!["(?, ?)"; rows.len()].join(", "));
    let mut statement = conn.prepare_cached(&sql)?;
    for (n, (seq, text)) in rows.iter().enumerate() {
        statement.raw_bind_parameter(n * 2 + 1, seq)?;
        statement.raw_bind_parameter(n * 2 + 2, text)?;
    }
    statement.raw_execute()?;
    Ok(())
}

/// Follows a contact's change.
pub(super) fn update_search_text(conn: &Connection, seq: i64, record: &Record) -> Result<(), StoreError> {
    if let Some(text) = search_text(record) {
        conn.prepare_cached("UPDATE contact_search SET text = ?2 WHERE seq = ?1")?.execute(params![seq, text])?;
    }
    Ok(())
}

/// Follows a contact's deletion.
pub(super) fn delete_search_text(conn: &Connection, kind: RecordKind, seq: i64) -> Result<(), StoreError> {
    if kind == RecordKind::Contact {
        conn.prepare_cached("DELETE FROM contact_search WHERE seq = ?1")?.execute([seq])?;
    }
    Ok(())
}

/// The `WHERE` terms and their values, built up one filter at a time.
#[derive(Default)]
struct Conditions {
    terms: Vec<String>,
    values: Vec<SqlValue>,
}

impl Conditions {
    fn add(&mut self, term: &str, value: impl Into<SqlValue>) {
        self.values.push(value.into());
        self.terms.push(term.replace('?', &format!("?{}", self.values.len())));
    }

    fn sql(&self) -> String {
        self.terms.join(" AND ")
    }
}

/// The record filters of a query, on `records r`: who may see them, then each filter given.
fn record_conditions(actor: &Actor, query: &ContactQuery, conditions: &mut Conditions) {
    if actor.role != Role::Admin {
        conditions.values.push(actor.user_id.clone().into());
        let n = conditions.values.len();
        conditions.terms.push(format!("(r.created_by = ?{n} OR r.assigned_agent_id = ?{n})"));
    }
    if let Some(status) = &query.status {
        conditions.add("r.fields ->> '$.status' = ?", status.clone());
    }
    if let Some(stage) = &query.lifecycle_stage {
        conditions.add("r.fields ->> '$.lifecycle_stage' = ? COLLATE NOCASE", stage.clone());
    }
    if let Some(tag) = &query.tag {
        conditions.add(
            "EXISTS (SELECT 1 FROM json_each(r.fields, '$.tags') t WHERE t.value = ? COLLATE NOCASE)",
            tag.clone(),
        );
    }
    if let Some(agent) = &query.agent {
        conditions.add("r.assigned_agent_id = ?", agent.clone());
    }
}

pub(super) fn search(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    query: &ContactQuery,
    page: &PageRequest,
) -> Result<Page<Record>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let (sql, values) = search_statement(actor, query, before, limit);
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement
        .query_map(params_from_iter(values.iter()), |row| Ok((row.get::<_, i64>(0)?, record_from_row(row, tag)?)))?;
    paginate(rows.collect::<Result<Vec<_>, _>>()?, page.limit)
}

/// The search's SQL and its values: rows older than `before`, one more than `limit`.
fn search_statement(actor: &Actor, query: &ContactQuery, before: i64, limit: i64) -> (String, Vec<SqlValue>) {
    let terms = query.search_terms();
    let mut conditions = Conditions::default();
    let sql = if terms.is_empty() {
        conditions.add("r.kind = ?", "contact".to_owned());
        conditions.add("r.seq < ?", before);
        record_conditions(actor, query, &mut conditions);
        conditions.values.push(limit.saturating_add(1).into());
        format!(
            "SELECT {columns} FROM records r WHERE {filters} ORDER BY r.seq DESC LIMIT ?{n}",
            columns = prefixed(RECORD_COLUMNS),
            filters = conditions.sql(),
            n = conditions.values.len()
        )
    } else {
        for term in &terms {
            conditions.add("s.text LIKE ?", format!("%{term}%"));
        }
        conditions.add("s.seq < ?", before);
        conditions.add("r.kind = ?", "contact".to_owned());
        record_conditions(actor, query, &mut conditions);
        conditions.values.push(limit.saturating_add(1).into());
        // CROSS JOIN keeps the search table as the outer loop, read newest first; the records
        // are looked up by key for the rows that match.
        format!(
            "SELECT {columns} FROM contact_search s CROSS JOIN records r ON r.seq = s.seq
             WHERE {filters} ORDER BY s.seq DESC LIMIT ?{n}",
            columns = prefixed(RECORD_COLUMNS),
            filters = conditions.sql(),
            n = conditions.values.len()
        )
    };
    (sql, conditions.values)
}

/// `seq, kind, ...` as `r.seq, r.kind, ...`.
fn prefixed(columns: &str) -> String {
    columns.split(", ").map(|column| format!("r.{column}")).collect::<Vec<_>>().join(", ")
}

pub(super) fn records_of_contact(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    contact_id: &str,
    limit: usize,
) -> Result<Vec<Record>, StoreError> {
    if kind == RecordKind::Contact {
        return Ok(Vec::new());
    }
    let agent = (actor.role != Role::Admin).then_some(actor.user_id.as_str());
    let mut statement = conn.prepare_cached(&records_of_contact_sql())?;
    let limit = i64::try_from(limit).unwrap_or(1000);
    let rows = statement.query_map(params![contact_id, kind.name(), agent, limit], |row| record_from_row(row, tag))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// `kind != 'contact'` is spelled out so that the partial index `records_by_contact` applies.
fn records_of_contact_sql() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM records
         WHERE fields ->> '$.contact_id' = ?1 AND kind != 'contact' AND kind = ?2
           AND (?3 IS NULL OR created_by = ?3 OR assigned_agent_id = ?3)
         ORDER BY seq DESC LIMIT ?4"
    )
}

/// An endpoint as the timeline needs it.
struct TimelineEndpoint {
    seq: i64,
    url: String,
    description: Option<String>,
    events: EventFilter,
    active: bool,
    cursor: i64,
}

fn endpoints(conn: &Connection) -> Result<Vec<TimelineEndpoint>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT seq, url, description, events, active, cursor FROM endpoints ORDER BY seq LIMIT ?1")?;
    let rows = statement.query_map([MAX_ENDPOINTS], |row| {
        let events: String = row.get(3)?;
        let events = EventFilter::parse(&serde_json::Value::String(events))
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into()))?;
        Ok(TimelineEndpoint {
            seq: row.get(0)?,
            url: row.get(1)?,
            description: row.get(2)?,
            events,
            active: row.get(4)?,
            cursor: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A record's newest events.
const TIMELINE_SQL: &str = "SELECT seq, name, created_at FROM events WHERE record_seq = ?1 ORDER BY seq DESC LIMIT ?2";

/// Read in one snapshot (the caller's), so that a delivery whose first attempt is being recorded is
/// seen either as owed or as its row, never as neither.
pub(super) fn timeline(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
    limit: usize,
) -> Result<Vec<TimelineEvent>, StoreError> {
    let Some((record_seq, _)) = find_visible(conn, tag, actor, kind, id)? else {
        return Err(StoreError::not_found(format!("no {kind} has this id")));
    };
    let mut statement = conn.prepare_cached(TIMELINE_SQL)?;
    let rows = statement.query_map(params![record_seq, i64::try_from(limit).unwrap_or(1000)], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
    })?;
    let events = rows.collect::<Result<Vec<_>, _>>()?;
    let endpoints = endpoints(conn)?;
    let mut timeline = Vec::with_capacity(events.len());
    for (seq, name, created_at) in events {
        let Some(name) = EventName::parse(&name) else { continue };
        let mut deliveries = Vec::new();
        for endpoint in &endpoints {
            if let Some(delivery) = delivery_state(conn, tag, seq, name, endpoint)? {
                deliveries.push(delivery);
            }
        }
        timeline.push(TimelineEvent {
            id: ids::format("evt", tag, seq),
            name,
            at: chrono::DateTime::from_timestamp(created_at, 0).unwrap_or_default(),
            deliveries,
        });
    }
    Ok(timeline)
}

/// Where event `event_seq`'s webhook to `endpoint` stands: its row if its first attempt ended (or
/// it was written as pending), else pending if the endpoint is owed it, else `None` (the endpoint
/// does not take this event, or did not exist or was paused when it committed).
fn delivery_state(
    conn: &Connection,
    tag: &str,
    event_seq: i64,
    name: EventName,
    endpoint: &TimelineEndpoint,
) -> Result<Option<TimelineDelivery>, StoreError> {
    let key = delivery_key(event_seq, endpoint.seq);
    let row = conn
        .prepare_cached(
            "SELECT status, attempts, last_status_code, last_error, last_attempt_at, next_attempt_at
             FROM deliveries WHERE seq = ?1",
        )?
        .query_row([key], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, Option<u16>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Option<i64>>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })
        .optional()?;
    let base = |status: DeliveryStatus| TimelineDelivery {
        id: ids::format(DELIVERY_PREFIX, tag, key),
        endpoint_id: ids::format(ENDPOINT_PREFIX, tag, endpoint.seq),
        endpoint_url: endpoint.url.clone(),
        endpoint_description: endpoint.description.clone(),
        status,
        attempts: 0,
        last_status_code: None,
        last_error: None,
        last_attempt_at: None,
        next_attempt_at: None,
    };
    if let Some((status, attempts, code, error, last_at, next_at)) = row {
        let status = DeliveryStatus::from_code(status);
        return Ok(Some(TimelineDelivery {
            attempts,
            last_status_code: code,
            last_error: error,
            last_attempt_at: last_at,
            next_attempt_at: (status == DeliveryStatus::Pending).then_some(next_at),
            ..base(status)
        }));
    }
    let owed = endpoint.active && endpoint.events.matches(name) && event_seq > endpoint.cursor;
    Ok(owed.then(|| base(DeliveryStatus::Pending)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str, values: &[SqlValue]) -> String {
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = statement.query_map(params_from_iter(values.iter()), |row| row.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        conn
    }

    #[test]
    fn a_search_reads_the_search_table_newest_first_without_sorting() {
        let conn = migrated();
        let query =
            ContactQuery { search: Some("lovelace ada".into()), status: Some("VIP".into()), ..Default::default() };
        let agent = Actor { user_id: "usr_a".into(), role: Role::Agent };
        let (sql, values) = search_statement(&agent, &query, i64::MAX, 50);
        let plan = plan(&conn, &sql, &values);
        assert!(plan.starts_with("SEARCH s USING INTEGER PRIMARY KEY"), "the search table drives the loop: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        assert!(plan.contains("SEARCH r USING INTEGER PRIMARY KEY"), "{plan}");
    }

    #[test]
    fn the_unsearched_list_walks_the_kind_index_without_sorting() {
        let conn = migrated();
        let admin = Actor { user_id: "usr_a".into(), role: Role::Admin };
        let (sql, values) = search_statement(&admin, &ContactQuery::default(), i64::MAX, 50);
        let plan = plan(&conn, &sql, &values);
        assert!(plan.contains("records_by_kind") && !plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn a_contacts_records_are_found_by_index() {
        let conn = migrated();
        let values =
            [SqlValue::from("con_x".to_owned()), SqlValue::from("lead".to_owned()), SqlValue::Null, SqlValue::from(20)];
        let plan = plan(&conn, &records_of_contact_sql(), &values);
        assert!(plan.contains("records_by_contact") && !plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn a_records_events_are_found_by_index() {
        let conn = migrated();
        let plan = plan(&conn, TIMELINE_SQL, &[SqlValue::from(1), SqlValue::from(50)]);
        assert!(plan.contains("events_by_record"), "{plan}");
    }
}
