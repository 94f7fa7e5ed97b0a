//! Records and their events, inside the writer's transaction, and the record and event reads.

use bytes::Bytes;
use estate_crm_domain::{EventName, FieldErrors, PendingEvent, Record, RecordKind, Timestamp, change, payload};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::webhooks::wake_subscribers;
use super::writer::WriteCtx;
use crate::prepare::{
    Failure, PreparedRecord, PreparedRows, RowColumns, RowFailures, commit_time, fields_json, split_id, timestamp,
};
pub(super) use crate::prepare::{paginate, parse_cursor};
use crate::{Actor, BulkOp, EventFilterQuery, Page, PageRequest, StoreError, StoredEvent, ids};

pub(super) fn create(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    kind: RecordKind,
    input: &Value,
) -> Result<Record, StoreError> {
    let now = commit_time();
    let (record, events) = create_one(ctx, actor, kind, input, now).map_err(|e| e.into_store_error())?;
    record_events(ctx, events, now)?;
    Ok(record)
}

pub(super) fn update(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
    patch: &Value,
) -> Result<Record, StoreError> {
    let now = commit_time();
    let (record, events) = update_one(ctx, actor, kind, id, patch, now).map_err(|e| e.into_store_error())?;
    record_events(ctx, events, now)?;
    Ok(record)
}

pub(super) fn delete(ctx: &mut WriteCtx<'_>, actor: &Actor, kind: RecordKind, id: &str) -> Result<(), StoreError> {
    let now = commit_time();
    let events = delete_one(ctx, actor, kind, id).map_err(|e| e.into_store_error())?;
    record_events(ctx, events, now)
}

/// All or nothing: every row is tried so that the error names each bad one, and any error undoes
/// the whole job (the writer rolls its savepoint back).
pub(super) fn bulk(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    kind: RecordKind,
    op: BulkOp,
) -> Result<Vec<String>, StoreError> {
    let now = commit_time();
    let mut ids = Vec::new();
    let mut events = Vec::new();
    let mut failures = RowFailures::default();
    match op {
        BulkOp::Create(rows) => {
            for (index, row) in rows.iter().enumerate() {
                match create_one(ctx, actor, kind, row, now) {
                    Ok((record, fired)) => {
                        ids.push(record.id);
                        events.extend(fired);
                    }
                    Err(failure) => failures.add(&format!("create[{index}]"), failure),
                }
            }
        }
        BulkOp::Update(rows) => {
            for (index, row) in rows.iter().enumerate() {
                let prefix = format!("update[{index}]");
                let Some((id, patch)) = split_id(row) else {
                    failures.add(
                        &prefix,
                        Failure::Invalid(FieldErrors::single("id", "is required: the id of the record to change")),
                    );
                    continue;
                };
                match update_one(ctx, actor, kind, &id, &patch, now) {
                    Ok((record, fired)) => {
                        ids.push(record.id);
                        events.extend(fired);
                    }
                    Err(failure) => failures.add(&prefix, failure),
                }
            }
        }
        BulkOp::Delete(rows) => {
            for (index, id) in rows.iter().enumerate() {
                match delete_one(ctx, actor, kind, id) {
                    Ok(fired) => {
                        ids.push(id.clone());
                        events.extend(fired);
                    }
                    Err(failure) => failures.add(&format!("delete[{index}]"), failure),
                }
            }
        }
    }
    failures.into_result()?;
    record_events(ctx, events, now)?;
    Ok(ids)
}

fn create_one(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    kind: RecordKind,
    input: &Value,
    now: Timestamp,
) -> Result<(Record, Vec<PendingEvent>), Failure> {
    let seq = ctx.state.preparer.next_seq();
    let id = ids::format(kind.id_prefix(), &ctx.state.tag, seq);
    let mut record = change::create(kind, input, id, &actor.user_id, now).map_err(Failure::Invalid)?;
    check_references(ctx, actor, change::references(&record))?;
    let mut events = Vec::new();
    if kind == RecordKind::Enquiry {
        events.extend(link_enquiry_contact(ctx, actor, &mut record, now)?);
    }
    insert_record(ctx, seq, &record, &RowColumns::of(&record))?;
    events.extend(change::events_on_create(&record));
    Ok((record, events))
}

/// Writes a prepared record and its events.
pub(super) fn insert_prepared(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    prepared: PreparedRecord,
) -> Result<Record, StoreError> {
    insert_one_prepared(ctx, actor, prepared).map_err(Failure::into_store_error)
}

fn insert_one_prepared(ctx: &mut WriteCtx<'_>, actor: &Actor, prepared: PreparedRecord) -> Result<Record, Failure> {
    check_references(ctx, actor, borrowed(&prepared.references))?;
    insert_record(ctx, prepared.seq, &prepared.record, &prepared.columns)?;
    for (name, body) in &prepared.events {
        insert_event(ctx, *name, prepared.now.timestamp(), body, Some(prepared.seq))?;
        wake_subscribers(ctx, *name)?;
    }
    Ok(prepared.record)
}

/// Writes bulk rows as their runs arrive, all or nothing: `expected` rows in all, or the job fails.
/// A conflict or a missing reference names its row.
pub(super) fn insert_prepared_rows(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    runs: impl IntoIterator<Item = PreparedRows>,
    expected: usize,
) -> Result<Vec<String>, StoreError> {
    let mut failures = RowFailures::default();
    let mut ids = Vec::with_capacity(expected);
    let mut seen = 0;
    for run in runs {
        seen += run.len();
        for (index, errors) in run.invalid {
            failures.invalid.absorb(&format!("create[{index}]"), errors);
        }
        let mut rows = run.rows;
        rows.retain(|(index, row)| match check_references(ctx, actor, borrowed(&row.references)) {
            Ok(()) => true,
            Err(failure) => {
                failures.add(&format!("create[{index}]"), failure);
                false
            }
        });
        if !failures.invalid.is_empty() {
            // The job fails anyway: the references of the rows left were all that needed looking at.
            continue;
        }
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            insert_chunk(ctx, chunk, &mut failures)?;
            ids.extend(chunk.iter().map(|(_, row)| row.record.id.clone()));
        }
    }
    if seen != expected {
        return Err(StoreError::internal(
            "preparing bulk rows",
            format!("only {seen} of {expected} rows were prepared"),
        ));
    }
    failures.into_result()?;
    Ok(ids)
}

/// How many bulk rows one INSERT statement writes: each statement costs its start, its end and a
/// lookup in the statement cache, which a few dozen rows share.
const ROWS_PER_INSERT: usize = 32;

/// Inserts a chunk of bulk rows and their events with one statement per table. When the chunk
/// conflicts (an email taken, maybe by an earlier row of the same request), its rows are inserted
/// one at a time to name each conflicting row; the job fails then, so their events are left out.
fn insert_chunk(
    ctx: &mut WriteCtx<'_>,
    chunk: &[(usize, PreparedRecord)],
    failures: &mut RowFailures,
) -> Result<(), StoreError> {
    let records = chunk.iter().map(|(_, row)| (row.seq, &row.record, &row.columns));
    match insert_records(ctx.tx, records) {
        Ok(()) => {}
        Err(Failure::Conflict(_)) => {
            for (index, row) in chunk {
                if let Err(failure) = insert_record(ctx, row.seq, &row.record, &row.columns) {
                    failures.add(&format!("create[{index}]"), failure);
                }
            }
            return Ok(());
        }
        Err(failure) => return Err(failure.into_store_error()),
    }
    if !failures.conflict.is_empty() {
        return Ok(());
    }
    let events: Vec<_> = chunk
        .iter()
        .flat_map(|(_, row)| {
            row.events.iter().map(|(name, body)| (*name, row.now.timestamp(), body.as_slice(), row.seq))
        })
        .collect();
    insert_events(ctx.tx, &events)?;
    // Numbered by SQLite in one statement: the in-memory ring of recent events starts again after them.
    ctx.recent.forget_events();
    let mut woken: Vec<EventName> = Vec::new();
    for (name, _, _, _) in &events {
        if !woken.contains(name) {
            woken.push(*name);
            wake_subscribers(ctx, *name)?;
        }
    }
    Ok(())
}

/// Links an enquiry to the contact with its email, creating that contact when there is none
/// (whose `contact.created` then comes before `enquiry.created`).
fn link_enquiry_contact(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    enquiry: &mut Record,
    now: Timestamp,
) -> Result<Vec<PendingEvent>, Failure> {
    let Some(email) = enquiry.get_str("email").map(estate_crm_domain::normalize_email) else {
        return Ok(vec![]);
    };
    let existing: Option<i64> = ctx
        .tx
        .prepare_cached("SELECT seq FROM records WHERE kind = 'contact' AND email_key = ?1")?
        .query_row([&email], |row| row.get(0))
        .optional()?;
    if let Some(seq) = existing {
        let contact_id = ids::format(RecordKind::Contact.id_prefix(), &ctx.state.tag, seq);
        change::link_enquiry(enquiry, &contact_id);
        return Ok(vec![]);
    }
    let input = change::contact_for_enquiry(enquiry);
    // The enquiry's own fields passed their checks, and the contact is made of the same values.
    let (contact, events) = create_one(ctx, actor, RecordKind::Contact, &input, now)?;
    change::link_enquiry(enquiry, &contact.id);
    Ok(events)
}

fn update_one(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
    patch: &Value,
    now: Timestamp,
) -> Result<(Record, Vec<PendingEvent>), Failure> {
    let (seq, old) = find_visible(ctx.tx, &ctx.state.tag, actor, kind, id)?.ok_or(Failure::NotFound)?;
    let Some(new) = change::patch(&old, patch, now).map_err(Failure::Invalid)? else {
        return Ok((old, vec![]));
    };
    check_references(ctx, actor, change::changed_references(&old, &new))?;
    let updated = ctx
        .tx
        .prepare_cached(
            "UPDATE records SET assigned_agent_id = ?2, email_key = ?3, updated_at = ?4, fields = ?5 WHERE seq = ?1",
        )?
        .execute(params![
            seq,
            new.assigned_agent_id(),
            new.email_key(),
            new.updated_at.timestamp(),
            fields_json(&new.fields)
        ]);
    map_unique_violation(updated)?;
    super::contacts::update_search_text(ctx.tx, seq, &new)?;
    let events = change::events_on_update(&old, &new);
    Ok((new, events))
}

fn delete_one(ctx: &mut WriteCtx<'_>, actor: &Actor, kind: RecordKind, id: &str) -> Result<Vec<PendingEvent>, Failure> {
    let (seq, old) = find_visible(ctx.tx, &ctx.state.tag, actor, kind, id)?.ok_or(Failure::NotFound)?;
    ctx.tx.prepare_cached("DELETE FROM records WHERE seq = ?1")?.execute([seq])?;
    super::contacts::delete_search_text(ctx.tx, kind, seq)?;
    // Seqs are never handed out twice: if this was the newest record, the next start must still
    // count from it (the records table alone would forget it).
    ctx.tx
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('records_seq', CAST(?1 AS TEXT))
             ON CONFLICT (key) DO UPDATE SET value = excluded.value
             WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        )?
        .execute([seq])?;
    Ok(change::events_on_delete(&old))
}

fn borrowed<'a>(references: &'a [(&'static str, RecordKind, String)]) -> Vec<(&'static str, RecordKind, &'a str)> {
    references.iter().map(|(field, kind, id)| (*field, *kind, id.as_str())).collect()
}

fn insert_record(ctx: &mut WriteCtx<'_>, seq: i64, record: &Record, columns: &RowColumns) -> Result<(), Failure> {
    insert_records(ctx.tx, std::iter::once((seq, record, columns)))
}

/// Inserts records, each `(seq, record, columns)`, with one statement.
fn insert_records<'r>(
    conn: &Connection,
    records: impl ExactSizeIterator<Item = (i64, &'r Record, &'r RowColumns)>,
) -> Result<(), Failure> {
    const COLUMNS: usize = 8;
    let sql = multi_row_insert(
        "records (seq, kind, created_by, assigned_agent_id, email_key, created_at, updated_at, fields)",
        COLUMNS,
        records.len(),
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut searchable = Vec::new();
    for (n, (seq, record, columns)) in records.enumerate() {
        let first = n * COLUMNS + 1;
        statement.raw_bind_parameter(first, seq)?;
        statement.raw_bind_parameter(first + 1, record.kind.name())?;
        statement.raw_bind_parameter(first + 2, &record.created_by)?;
        statement.raw_bind_parameter(first + 3, &columns.assigned_agent_id)?;
        statement.raw_bind_parameter(first + 4, &columns.email_key)?;
        statement.raw_bind_parameter(first + 5, record.created_at.timestamp())?;
        statement.raw_bind_parameter(first + 6, record.updated_at.timestamp())?;
        statement.raw_bind_parameter(first + 7, &columns.fields_json)?;
        if let Some(text) = &columns.search_text {
            searchable.push((seq, text.as_str()));
        }
    }
    map_unique_violation(statement.raw_execute())?;
    super::contacts::insert_search_texts(conn, &searchable)?;
    Ok(())
}

/// Inserts events, each `(name, created_at, body, record seq)`, with one statement.
fn insert_events(conn: &Connection, events: &[(EventName, i64, &[u8], i64)]) -> Result<(), StoreError> {
    const COLUMNS: usize = 4;
    if events.is_empty() {
        return Ok(());
    }
    let mut statement =
        conn.prepare_cached(&multi_row_insert("events (name, created_at, body, record_seq)", COLUMNS, events.len()))?;
    for (n, (name, created_at, body, record_seq)) in events.iter().enumerate() {
        let first = n * COLUMNS + 1;
        statement.raw_bind_parameter(first, name.as_str())?;
        statement.raw_bind_parameter(first + 1, created_at)?;
        statement.raw_bind_parameter(first + 2, body)?;
        statement.raw_bind_parameter(first + 3, record_seq)?;
    }
    statement.raw_execute()?;
    Ok(())
}

/// `INSERT INTO {table} VALUES (?, ?), (?, ?), ...`: `rows` groups of `columns` parameters.
fn multi_row_insert(table: &str, columns: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; columns].join(", "));
    format!("INSERT INTO {table} VALUES {}", vec![group; rows].join(", "))
}

/// The only unique constraint a client can hit is a contact's email.
fn map_unique_violation(result: rusqlite::Result<usize>) -> Result<(), Failure> {
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(err, _)) if err.code == ErrorCode::ConstraintViolation => {
            Err(Failure::Conflict(FieldErrors::single("email", "a contact with this email already exists")))
        }
        Err(err) => Err(err.into()),
    }
}

fn check_references(
    ctx: &WriteCtx<'_>,
    actor: &Actor,
    references: Vec<(&'static str, RecordKind, &str)>,
) -> Result<(), Failure> {
    let mut errors = FieldErrors::new();
    for (field, kind, id) in references {
        if find_visible(ctx.tx, &ctx.state.tag, actor, kind, id)?.is_none() {
            errors.add(field, format!("no {kind} has the id {id:?}"));
        }
    }
    errors.into_result(()).map_err(Failure::Invalid)
}

/// Stamps, encodes and stores each event, and wakes the endpoints subscribed to it. The body
/// bytes made here are the ones every attempt sends.
fn record_events(ctx: &mut WriteCtx<'_>, events: Vec<PendingEvent>, now: Timestamp) -> Result<(), StoreError> {
    for event in events {
        let body = payload::encode(event.name, now, &event.data, &ctx.state.site_url);
        let record_seq = crate::prepare::record_seq_of(&ctx.state.tag, &event.data);
        insert_event(ctx, event.name, now.timestamp(), &body, record_seq)?;
        wake_subscribers(ctx, event.name)?;
    }
    Ok(())
}

/// Stores an event; `record_seq` is the record it is about (none for a test), which a record's
/// webhook timeline reads it by.
pub(super) fn insert_event(
    ctx: &mut WriteCtx<'_>,
    name: EventName,
    created_at: i64,
    body: &[u8],
    record_seq: Option<i64>,
) -> Result<i64, StoreError> {
    ctx.tx
        .prepare_cached("INSERT INTO events (name, created_at, body, record_seq) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![name.as_str(), created_at, body, record_seq])?;
    let seq = ctx.tx.last_insert_rowid();
    ctx.recent.event(seq, name, body);
    Ok(seq)
}

pub(super) const RECORD_COLUMNS: &str = "seq, kind, created_by, created_at, updated_at, fields";

pub(super) fn record_from_row(row: &Row<'_>, tag: &str) -> rusqlite::Result<Record> {
    let seq: i64 = row.get(0)?;
    let kind_name: String = row.get(1)?;
    let kind =
        RecordKind::from_name(&kind_name).ok_or_else(|| corrupt(1, format!("unknown record kind {kind_name}")))?;
    let fields: String = row.get(5)?;
    let fields: Map<String, Value> = serde_json::from_str(&fields).map_err(|e| corrupt(5, e.to_string()))?;
    Ok(Record {
        kind,
        id: ids::format(kind.id_prefix(), tag, seq),
        created_by: row.get(2)?,
        created_at: timestamp(row.get(3)?),
        updated_at: timestamp(row.get(4)?),
        fields,
    })
}

fn corrupt(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

/// The record with this id if it exists, is of this kind, and the actor may see it.
pub(super) fn find_visible(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
) -> Result<Option<(i64, Record)>, StoreError> {
    let Some(seq) = ids::parse(kind.id_prefix(), tag, id) else {
        return Ok(None);
    };
    let found = conn
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM records WHERE seq = ?1 AND kind = ?2"))?
        .query_row(params![seq, kind.name()], |row| record_from_row(row, tag))
        .optional()?;
    Ok(found.filter(|r| actor.may_see(&r.created_by, r.assigned_agent_id())).map(|r| (seq, r)))
}

pub(super) fn get_visible(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
) -> Result<Record, StoreError> {
    find_visible(conn, tag, actor, kind, id)?
        .map(|(_, record)| record)
        .ok_or_else(|| StoreError::not_found(format!("no {kind} has this id")))
}

pub(super) fn list(
    conn: &Connection,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    page: &PageRequest,
) -> Result<Page<Record>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let agent = (actor.role != crate::Role::Admin).then_some(actor.user_id.as_str());
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM records
         WHERE kind = ?1 AND seq < ?2 AND (?3 IS NULL OR created_by = ?3 OR assigned_agent_id = ?3)
         ORDER BY seq DESC LIMIT ?4"
    ))?;
    let rows = statement.query_map(params![kind.name(), before, agent, limit + 1], |row| {
        Ok((row.get::<_, i64>(0)?, record_from_row(row, tag)?))
    })?;
    paginate(rows.collect::<Result<Vec<_>, _>>()?, page.limit)
}

pub(super) fn list_events(
    conn: &Connection,
    tag: &str,
    filter: &EventFilterQuery,
    page: &PageRequest,
) -> Result<Page<StoredEvent>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let name = filter.event.map(EventName::as_str);
    let since = filter.since.map(|t| t.timestamp());
    let mut statement = conn.prepare_cached(
        "SELECT seq, name, created_at, body FROM events
         WHERE seq < ?1 AND (?2 IS NULL OR name = ?2) AND (?3 IS NULL OR created_at >= ?3)
         ORDER BY seq DESC LIMIT ?4",
    )?;
    let rows = statement.query_map(params![before, name, since, limit + 1], |row| {
        let seq: i64 = row.get(0)?;
        let name: String = row.get(1)?;
        let event = StoredEvent {
            id: ids::format("evt", tag, seq),
            name: EventName::parse(&name).ok_or_else(|| corrupt(1, format!("unknown event {name}")))?,
            timestamp: timestamp(row.get(2)?),
            body: Bytes::from(row.get::<_, Vec<u8>>(3)?),
        };
        Ok((seq, event))
    })?;
    paginate(rows.collect::<Result<Vec<_>, _>>()?, page.limit)
}
