//! Records and their events, inside the writer's transaction, and the record and event reads.
//!
//! Rows go in with `UNNEST` of one array per column: one prepared statement inserts one row or a
//! run of five hundred, and a contact whose email is taken is skipped (`ON CONFLICT DO NOTHING`)
//! and named, instead of aborting the transaction as a failed statement does in PostgreSQL.
//!
//! A contact's row of `contact_search` (its searchable text, see `contacts.rs`) is written, changed
//! and deleted by the same statement as the contact, in a data-changing `WITH`: keeping the search
//! right costs no round trip.

use std::collections::HashSet;

use bytes::Bytes;
use deadpool_postgres::ClientWrapper;
use estate_crm_domain::{EventName, FieldErrors, PendingEvent, Record, RecordKind, Timestamp, change, payload};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::contacts::stored_text;
use super::webhooks::wake_subscribers;
use super::writer::WriteCtx;
use crate::prepare::{
    Failure, PreparedRecord, PreparedRows, RowColumns, RowFailures, commit_time, fields_json, paginate, parse_cursor,
    search_text, split_id, timestamp,
};
use crate::{Actor, BulkOp, EventFilterQuery, Page, PageRequest, StoreError, StoredEvent, ids};

/// How many seqs one `nextval` of `record_seq_blocks` hands out (its INCREMENT).
const SEQ_BLOCK: i64 = 64;

/// Record seqs for this server, taken from the database's sequence a block at a time, so that
/// servers sharing the database never give the same seq and a record costs no round trip for it.
#[derive(Default)]
pub(crate) struct RecordSeqs {
    /// The next seq of the current block and the end of that block (exclusive).
    block: Mutex<(i64, i64)>,
}

impl RecordSeqs {
    /// `count` fresh seqs from the block in hand, if it has that many (no round trip).
    pub async fn take_in_hand(&self, count: usize) -> Option<Vec<i64>> {
        let mut block = self.block.lock().await;
        let count = i64::try_from(count).ok()?;
        if block.1 - block.0 < count {
            return None;
        }
        let seqs = (block.0..block.0 + count).collect();
        block.0 += count;
        Some(seqs)
    }

    /// `count` fresh seqs, in increasing order.
    pub async fn take(&self, client: &ClientWrapper, count: usize) -> Result<Vec<i64>, StoreError> {
        let mut block = self.block.lock().await;
        let mut seqs = Vec::with_capacity(count);
        while seqs.len() < count && block.0 < block.1 {
            seqs.push(block.0);
            block.0 += 1;
        }
        let missing = i64::try_from(count - seqs.len()).unwrap_or(i64::MAX);
        if missing > 0 {
            let blocks = (missing + SEQ_BLOCK - 1) / SEQ_BLOCK;
            let statement = client
                .prepare_cached("SELECT nextval('record_seq_blocks') FROM generate_series(1, $1::BIGINT)")
                .await?;
            let mut starts: Vec<i64> = client.query(&statement, &[&blocks]).await?.iter().map(|r| r.get(0)).collect();
            starts.sort_unstable();
            for start in starts {
                *block = (start, start + SEQ_BLOCK);
                while seqs.len() < count && block.0 < block.1 {
                    seqs.push(block.0);
                    block.0 += 1;
                }
            }
        }
        Ok(seqs)
    }
}

pub(super) async fn create(
    ctx: &mut WriteCtx,
    actor: &Actor,
    kind: RecordKind,
    input: &Value,
) -> Result<Record, StoreError> {
    let now = commit_time();
    let (record, events) = create_one(ctx, actor, kind, input, now).await.map_err(Failure::into_store_error)?;
    record_events(ctx, events, now).await?;
    Ok(record)
}

pub(super) async fn update(
    ctx: &mut WriteCtx,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
    patch: &Value,
) -> Result<Record, StoreError> {
    let now = commit_time();
    let (record, events) = update_one(ctx, actor, kind, id, patch, now).await.map_err(Failure::into_store_error)?;
    record_events(ctx, events, now).await?;
    Ok(record)
}

pub(super) async fn delete(ctx: &mut WriteCtx, actor: &Actor, kind: RecordKind, id: &str) -> Result<(), StoreError> {
    let now = commit_time();
    let events = delete_one(ctx, actor, kind, id).await.map_err(Failure::into_store_error)?;
    record_events(ctx, events, now).await
}

/// All or nothing: every row is tried so that the error names each bad one, and any error undoes
/// the whole job (the writer rolls its savepoint back). A conflict the database itself reports
/// aborts the transaction, so the rows after it are not tried (the checks before each update make
/// that rare: only another server changing the same email at the same moment).
pub(super) async fn bulk(
    ctx: &mut WriteCtx,
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
                match create_one(ctx, actor, kind, row, now).await {
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
                match update_one(ctx, actor, kind, &id, &patch, now).await {
                    Ok((record, fired)) => {
                        ids.push(record.id);
                        events.extend(fired);
                    }
                    Err(failure) => {
                        let aborted = matches!(failure, Failure::Internal(_) | Failure::Conflict(_));
                        failures.add(&prefix, failure);
                        if aborted {
                            break;
                        }
                    }
                }
            }
        }
        BulkOp::Delete(rows) => {
            for (index, id) in rows.iter().enumerate() {
                match delete_one(ctx, actor, kind, id).await {
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
    record_events(ctx, events, now).await?;
    Ok(ids)
}

async fn create_one(
    ctx: &mut WriteCtx,
    actor: &Actor,
    kind: RecordKind,
    input: &Value,
    now: Timestamp,
) -> Result<(Record, Vec<PendingEvent>), Failure> {
    let seq = ctx.state.seqs.clone().take(&ctx.client, 1).await?[0];
    let id = ids::format(kind.id_prefix(), &ctx.state.tag, seq);
    let mut record = change::create(kind, input, id, &actor.user_id, now).map_err(Failure::Invalid)?;
    check_references(ctx, actor, change::references(&record)).await?;
    let mut events = Vec::new();
    if kind == RecordKind::Enquiry {
        events.extend(link_enquiry_contact(ctx, actor, &mut record, now).await?);
    }
    insert_record(ctx, seq, &record, &RowColumns::of(&record)).await?;
    events.extend(change::events_on_create(&record));
    Ok((record, events))
}

/// Writes a prepared record and its events. The two inserts travel together (tokio-postgres
/// pipelines statements issued at once on one connection): a single create then costs the writer
/// one round trip, not two. If the record is refused (its email is taken), the job fails and its
/// savepoint takes the events back with it.
pub(super) async fn insert_prepared(
    ctx: &mut WriteCtx,
    actor: &Actor,
    prepared: PreparedRecord,
) -> Result<Record, StoreError> {
    check_references(ctx, actor, borrowed(&prepared.references)).await.map_err(Failure::into_store_error)?;
    let created_at = prepared.now.timestamp();
    let events: Vec<_> =
        prepared.events.iter().map(|(name, body)| (*name, created_at, body.as_slice(), Some(prepared.seq))).collect();
    let first_event = ctx.next_event_seqs(events.len());
    let record = std::iter::once((prepared.seq, &prepared.record, &prepared.columns));
    let (inserted, ()) =
        tokio::try_join!(insert_records(ctx, record), insert_numbered_events(ctx, first_event, &events))?;
    if !inserted.contains(&prepared.seq) {
        return Err(email_taken().into_store_error());
    }
    for (name, _) in &prepared.events {
        wake_subscribers(ctx, *name).await?;
    }
    Ok(prepared.record)
}

/// Writes a run of single creates, each a request of its own, in one round trip: their records with
/// one statement, and in the same statement the events of the records that went in, numbered on
/// from the transaction's last event with no gap. Answers each create's outcome, in order: written,
/// refused for its email (taken before, or by an earlier create of the run), or refused for a
/// reference. An `Err` is a failure of the whole statement: the caller undoes the run.
pub(super) async fn insert_prepared_run(
    ctx: &mut WriteCtx,
    creates: &[(&Actor, &PreparedRecord)],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut outcomes = Vec::with_capacity(creates.len());
    for (actor, prepared) in creates {
        // Most creates have no references; those that do cost a read each, as alone.
        let checked = check_references(ctx, actor, borrowed(&prepared.references)).await;
        outcomes.push(match checked {
            Ok(()) => Ok(()),
            Err(Failure::Internal(err)) => return Err(err),
            Err(failure) => Err(failure.into_store_error()),
        });
    }
    let to_write: Vec<&PreparedRecord> = creates
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|((_, prepared), _)| *prepared)
        .collect();
    let inserted = insert_records_and_events(ctx, &to_write).await?;
    let mut woken: Vec<EventName> = Vec::new();
    let mut events_written = 0;
    for ((_, prepared), outcome) in creates.iter().zip(outcomes.iter_mut()) {
        if outcome.is_err() {
            continue;
        }
        if !inserted.contains(&prepared.seq) {
            *outcome = Err(email_taken().into_store_error());
            continue;
        }
        events_written += prepared.events.len();
        for (name, _) in &prepared.events {
            if !woken.contains(name) {
                woken.push(*name);
            }
        }
    }
    // The statement numbered the written events from the last seq on; the transaction's count follows.
    ctx.next_event_seqs(events_written);
    for name in woken {
        wake_subscribers(ctx, name).await?;
    }
    Ok(outcomes)
}

/// Inserts the records and, for those that went in (a contact whose email is taken is skipped),
/// their events, all in one statement; answers the seqs of the records inserted. The events are
/// numbered from the transaction's next seq on, in the order given, with no gap for those skipped.
async fn insert_records_and_events(ctx: &WriteCtx, creates: &[&PreparedRecord]) -> Result<HashSet<i64>, StoreError> {
    if creates.is_empty() {
        return Ok(HashSet::new());
    }
    let mut records = RecordColumns::default();
    let mut events = EventColumns::default();
    for prepared in creates {
        records.push(prepared.seq, &prepared.record, &prepared.columns);
        for (name, body) in &prepared.events {
            events.name.push(name.as_str());
            events.created_at.push(prepared.now.timestamp());
            events.body.push(body.as_slice());
            events.record_seq.push(prepared.seq);
        }
    }
    // Data-changing WITH queries all run to their end, whether or not the outer query reads them;
    // `numbered` and `searchable` see only the rows `inserted` returned, so a refused record's
    // events and search row are dropped.
    let statement = ctx
        .client
        .prepare_cached(
            "WITH inserted AS (
                INSERT INTO records (seq, kind, created_by, assigned_agent_id, email_key, created_at, updated_at,
                                     fields)
                SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                                     $7::BIGINT[], $8::TEXT[])
                ON CONFLICT DO NOTHING
                RETURNING seq
             ), numbered AS (
                INSERT INTO events (seq, name, created_at, body, record_seq)
                SELECT $9::BIGINT + row_number() OVER (ORDER BY e.ord), e.name, e.created_at, e.body, e.record_seq
                FROM UNNEST($10::TEXT[], $11::BIGINT[], $12::BYTEA[], $13::BIGINT[])
                     WITH ORDINALITY AS e (name, created_at, body, record_seq, ord)
                WHERE e.record_seq IN (SELECT seq FROM inserted)
                RETURNING seq
             ), searchable AS (
                INSERT INTO contact_search (seq, text)
                SELECT s.seq, s.text FROM UNNEST($14::BIGINT[], $15::TEXT[]) AS s (seq, text)
                WHERE s.seq IN (SELECT seq FROM inserted)
             )
             SELECT seq FROM inserted",
        )
        .await?;
    let rows = ctx
        .client
        .query(
            &statement,
            &[
                &records.seq,
                &records.kind,
                &records.created_by,
                &records.assigned_agent_id,
                &records.email_key,
                &records.created_at,
                &records.updated_at,
                &records.fields,
                &ctx.last_event_seq(),
                &events.name,
                &events.created_at,
                &events.body,
                &events.record_seq,
                &records.search_seq,
                &records.search_text,
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The events table's columns for a run of creates, one array each, for `UNNEST`.
#[derive(Default)]
struct EventColumns<'e> {
    name: Vec<&'static str>,
    created_at: Vec<i64>,
    body: Vec<&'e [u8]>,
    record_seq: Vec<i64>,
}

/// Writes bulk rows as their runs arrive, all or nothing: `expected` rows in all, or the job fails.
/// A conflict or a missing reference names its row.
pub(super) async fn insert_prepared_rows(
    ctx: &mut WriteCtx,
    actor: &Actor,
    mut runs: tokio::sync::mpsc::Receiver<PreparedRows>,
    expected: usize,
) -> Result<Vec<String>, StoreError> {
    let mut failures = RowFailures::default();
    let mut ids = Vec::with_capacity(expected);
    let mut seen = 0;
    while let Some(run) = runs.recv().await {
        seen += run.len();
        for (index, errors) in run.invalid {
            failures.invalid.absorb(&format!("create[{index}]"), errors);
        }
        let mut rows = Vec::with_capacity(run.rows.len());
        for (index, row) in run.rows {
            match check_references(ctx, actor, borrowed(&row.references)).await {
                Ok(()) => rows.push((index, row)),
                Err(failure) => failures.add(&format!("create[{index}]"), failure),
            }
        }
        if !failures.invalid.is_empty() || failures.internal.is_some() {
            // The job fails anyway: the references of the rows left were all that needed looking at.
            continue;
        }
        insert_run(ctx, &rows, &mut failures).await?;
        ids.extend(rows.iter().map(|(_, row)| row.record.id.clone()));
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

/// Inserts a run of bulk rows and their events, one statement per table. Rows whose email is taken
/// (maybe by an earlier row of the same request) are named; the job fails then, and its events go.
async fn insert_run(
    ctx: &mut WriteCtx,
    rows: &[(usize, PreparedRecord)],
    failures: &mut RowFailures,
) -> Result<(), StoreError> {
    let events: Vec<_> = rows
        .iter()
        .flat_map(|(_, row)| {
            row.events.iter().map(|(name, body)| (*name, row.now.timestamp(), body.as_slice(), Some(row.seq)))
        })
        .collect();
    // Both inserts travel together (see `insert_prepared`); a row refused for its email fails the
    // job, whose undoing takes the events back too.
    let first_event = ctx.next_event_seqs(events.len());
    let records = rows.iter().map(|(_, row)| (row.seq, &row.record, &row.columns));
    let (inserted, ()) =
        tokio::try_join!(insert_records(ctx, records), insert_numbered_events(ctx, first_event, &events))?;
    for (index, row) in rows {
        if !inserted.contains(&row.seq) {
            failures.add(&format!("create[{index}]"), email_taken());
        }
    }
    if !failures.conflict.is_empty() {
        return Ok(());
    }
    let mut woken: Vec<EventName> = Vec::new();
    for (name, _, _, _) in &events {
        if !woken.contains(name) {
            woken.push(*name);
            wake_subscribers(ctx, *name).await?;
        }
    }
    Ok(())
}

/// Links an enquiry to the contact with its email, creating that contact when there is none
/// (whose `contact.created` then comes before `enquiry.created`).
async fn link_enquiry_contact(
    ctx: &mut WriteCtx,
    actor: &Actor,
    enquiry: &mut Record,
    now: Timestamp,
) -> Result<Vec<PendingEvent>, Failure> {
    let Some(email) = enquiry.get_str("email").map(estate_crm_domain::normalize_email) else {
        return Ok(vec![]);
    };
    let statement =
        ctx.client.prepare_cached("SELECT seq FROM records WHERE kind = 'contact' AND email_key = $1").await?;
    let existing: Option<i64> = ctx.client.query_opt(&statement, &[&email]).await?.map(|row| row.get(0));
    if let Some(seq) = existing {
        let contact_id = ids::format(RecordKind::Contact.id_prefix(), &ctx.state.tag, seq);
        change::link_enquiry(enquiry, &contact_id);
        return Ok(vec![]);
    }
    let input = change::contact_for_enquiry(enquiry);
    // The enquiry's own fields passed their checks, and the contact is made of the same values.
    let (contact, events) = Box::pin(create_one(ctx, actor, RecordKind::Contact, &input, now)).await?;
    change::link_enquiry(enquiry, &contact.id);
    Ok(events)
}

async fn update_one(
    ctx: &mut WriteCtx,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
    patch: &Value,
    now: Timestamp,
) -> Result<(Record, Vec<PendingEvent>), Failure> {
    let (seq, old) = find_visible(&ctx.client, &ctx.state.tag, actor, kind, id).await?.ok_or(Failure::NotFound)?;
    let Some(new) = change::patch(&old, patch, now).map_err(Failure::Invalid)? else {
        return Ok((old, vec![]));
    };
    check_references(ctx, actor, change::changed_references(&old, &new)).await?;
    let email_key = new.email_key();
    if kind == RecordKind::Contact && email_key.is_some() && email_key != old.email_key() {
        // Checked first so that a bulk update names every taken email without aborting the
        // transaction; the unique index below is what guarantees it.
        let statement = ctx
            .client
            .prepare_cached("SELECT 1 FROM records WHERE kind = 'contact' AND email_key = $1 AND seq <> $2")
            .await?;
        if ctx.client.query_opt(&statement, &[&email_key, &seq]).await?.is_some() {
            return Err(email_taken());
        }
    }
    // The search row is written only when its text changed (a status change leaves it be), and
    // with an upsert, so that a contact without one (written by an older server) gains it.
    let new_text = search_text(&new);
    let changed_text = (new_text != search_text(&old)).then(|| new_text.as_deref().map(stored_text)).flatten();
    let statement = ctx
        .client
        .prepare_cached(
            "WITH updated AS (
                UPDATE records SET assigned_agent_id = $2, email_key = $3, updated_at = $4, fields = $5 WHERE seq = $1
                RETURNING seq
             )
             INSERT INTO contact_search (seq, text) SELECT seq, $6::TEXT FROM updated WHERE $6::TEXT IS NOT NULL
             ON CONFLICT (seq) DO UPDATE SET text = EXCLUDED.text",
        )
        .await?;
    let updated = ctx
        .client
        .execute(
            &statement,
            &[
                &seq,
                &new.assigned_agent_id(),
                &email_key,
                &new.updated_at.timestamp(),
                &fields_json(&new.fields),
                &changed_text,
            ],
        )
        .await;
    match updated {
        Ok(_) => {}
        Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Err(email_taken()),
        Err(err) => return Err(err.into()),
    }
    let events = change::events_on_update(&old, &new);
    Ok((new, events))
}

async fn delete_one(
    ctx: &mut WriteCtx,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
) -> Result<Vec<PendingEvent>, Failure> {
    let (seq, old) = find_visible(&ctx.client, &ctx.state.tag, actor, kind, id).await?.ok_or(Failure::NotFound)?;
    // Seqs come from a sequence that never goes back, so a deleted record's seq is never given again.
    let statement = ctx
        .client
        .prepare_cached(
            "WITH unsearchable AS (DELETE FROM contact_search WHERE seq = $1) DELETE FROM records WHERE seq = $1",
        )
        .await?;
    ctx.client.execute(&statement, &[&seq]).await?;
    Ok(change::events_on_delete(&old))
}

fn email_taken() -> Failure {
    Failure::Conflict(FieldErrors::single("email", "a contact with this email already exists"))
}

fn borrowed<'a>(references: &'a [(&'static str, RecordKind, String)]) -> Vec<(&'static str, RecordKind, &'a str)> {
    references.iter().map(|(field, kind, id)| (*field, *kind, id.as_str())).collect()
}

async fn insert_record(ctx: &WriteCtx, seq: i64, record: &Record, columns: &RowColumns) -> Result<(), Failure> {
    let inserted = insert_records(ctx, std::iter::once((seq, record, columns))).await?;
    if inserted.contains(&seq) { Ok(()) } else { Err(email_taken()) }
}

/// Inserts records, each `(seq, record, columns)`, and the search rows of the contacts among them,
/// with one statement; answers the seqs inserted (a contact whose email is taken is left out).
async fn insert_records<'r>(
    ctx: &WriteCtx,
    records: impl Iterator<Item = (i64, &'r Record, &'r RowColumns)>,
) -> Result<HashSet<i64>, StoreError> {
    let mut columns = RecordColumns::default();
    for (seq, record, row) in records {
        columns.push(seq, record, row);
    }
    let statement = ctx
        .client
        .prepare_cached(
            "WITH inserted AS (
                INSERT INTO records (seq, kind, created_by, assigned_agent_id, email_key, created_at, updated_at,
                                     fields)
                SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                                     $7::BIGINT[], $8::TEXT[])
                ON CONFLICT DO NOTHING
                RETURNING seq
             ), searchable AS (
                INSERT INTO contact_search (seq, text)
                SELECT s.seq, s.text FROM UNNEST($9::BIGINT[], $10::TEXT[]) AS s (seq, text)
                WHERE s.seq IN (SELECT seq FROM inserted)
             )
             SELECT seq FROM inserted",
        )
        .await?;
    let rows = ctx
        .client
        .query(
            &statement,
            &[
                &columns.seq,
                &columns.kind,
                &columns.created_by,
                &columns.assigned_agent_id,
                &columns.email_key,
                &columns.created_at,
                &columns.updated_at,
                &columns.fields,
                &columns.search_seq,
                &columns.search_text,
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The records table's columns, one array each, for `UNNEST`.
#[derive(Default)]
struct RecordColumns<'r> {
    seq: Vec<i64>,
    kind: Vec<&'static str>,
    created_by: Vec<&'r str>,
    assigned_agent_id: Vec<Option<&'r str>>,
    email_key: Vec<Option<&'r str>>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    fields: Vec<&'r str>,
    /// The contacts' rows of `contact_search`: their seqs and their text as stored.
    search_seq: Vec<i64>,
    search_text: Vec<String>,
}

impl<'r> RecordColumns<'r> {
    fn push(&mut self, seq: i64, record: &'r Record, row: &'r RowColumns) {
        self.seq.push(seq);
        self.kind.push(record.kind.name());
        self.created_by.push(&record.created_by);
        self.assigned_agent_id.push(row.assigned_agent_id.as_deref());
        self.email_key.push(row.email_key.as_deref());
        self.created_at.push(record.created_at.timestamp());
        self.updated_at.push(record.updated_at.timestamp());
        self.fields.push(&row.fields_json);
        if let Some(text) = &row.search_text {
            self.search_seq.push(seq);
            self.search_text.push(stored_text(text));
        }
    }
}

/// Numbers and inserts events, each `(name, created_at, body, the seq of the record it is about)`,
/// with one statement; answers the first seq given.
pub(super) async fn insert_events(
    ctx: &mut WriteCtx,
    events: &[(EventName, i64, &[u8], Option<i64>)],
) -> Result<i64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let first = ctx.next_event_seqs(events.len());
    insert_numbered_events(ctx, first, events).await?;
    Ok(first)
}

/// Inserts events numbered from `first` (given by [`WriteCtx::next_event_seqs`]) with one statement.
async fn insert_numbered_events(
    ctx: &WriteCtx,
    first: i64,
    events: &[(EventName, i64, &[u8], Option<i64>)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = (first..).take(events.len()).collect();
    let names: Vec<&str> = events.iter().map(|(name, _, _, _)| name.as_str()).collect();
    let times: Vec<i64> = events.iter().map(|(_, at, _, _)| *at).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|(_, _, body, _)| *body).collect();
    let records: Vec<Option<i64>> = events.iter().map(|(_, _, _, record)| *record).collect();
    let statement = ctx
        .client
        .prepare_cached(
            "INSERT INTO events (seq, name, created_at, body, record_seq)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BYTEA[], $5::BIGINT[])",
        )
        .await?;
    ctx.client.execute(&statement, &[&seqs, &names, &times, &bodies, &records]).await?;
    Ok(())
}

async fn check_references(
    ctx: &WriteCtx,
    actor: &Actor,
    references: Vec<(&'static str, RecordKind, &str)>,
) -> Result<(), Failure> {
    let mut errors = FieldErrors::new();
    for (field, kind, id) in references {
        if find_visible(&ctx.client, &ctx.state.tag, actor, kind, id).await?.is_none() {
            errors.add(field, format!("no {kind} has the id {id:?}"));
        }
    }
    errors.into_result(()).map_err(Failure::Invalid)
}

/// Stamps, encodes and stores the events, and wakes the endpoints subscribed to them. The body
/// bytes made here are the ones every attempt sends.
async fn record_events(ctx: &mut WriteCtx, events: Vec<PendingEvent>, now: Timestamp) -> Result<(), StoreError> {
    let bodies: Vec<(EventName, Vec<u8>, Option<i64>)> = events
        .iter()
        .map(|event| {
            let body = payload::encode(event.name, now, &event.data, &ctx.state.site_url);
            (event.name, body, crate::prepare::record_seq_of(&ctx.state.tag, &event.data))
        })
        .collect();
    let rows: Vec<_> =
        bodies.iter().map(|(name, body, record)| (*name, now.timestamp(), body.as_slice(), *record)).collect();
    insert_events(ctx, &rows).await?;
    for (name, _, _) in &bodies {
        wake_subscribers(ctx, *name).await?;
    }
    Ok(())
}

pub(super) const RECORD_COLUMNS: &str = "seq, kind, created_by, created_at, updated_at, fields";

pub(super) fn record_from_row(row: &Row, tag: &str) -> Result<Record, StoreError> {
    let seq: i64 = row.try_get(0)?;
    let kind_name: &str = row.try_get(1)?;
    let kind = RecordKind::from_name(kind_name)
        .ok_or_else(|| StoreError::internal("reading a record", format!("unknown record kind {kind_name}")))?;
    let fields: Map<String, Value> =
        serde_json::from_str(row.try_get(5)?).map_err(|err| StoreError::internal("reading a record's fields", err))?;
    Ok(Record {
        kind,
        id: ids::format(kind.id_prefix(), tag, seq),
        created_by: row.try_get(2)?,
        created_at: timestamp(row.try_get(3)?),
        updated_at: timestamp(row.try_get(4)?),
        fields,
    })
}

/// The record with this id if it exists, is of this kind, and the actor may see it.
pub(super) async fn find_visible(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
) -> Result<Option<(i64, Record)>, StoreError> {
    let Some(seq) = ids::parse(kind.id_prefix(), tag, id) else {
        return Ok(None);
    };
    let statement =
        client.prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM records WHERE seq = $1 AND kind = $2")).await?;
    let Some(row) = client.query_opt(&statement, &[&seq, &kind.name()]).await? else {
        return Ok(None);
    };
    let record = record_from_row(&row, tag)?;
    Ok(actor.may_see(&record.created_by, record.assigned_agent_id()).then_some((seq, record)))
}

pub(super) async fn get_visible(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
) -> Result<Record, StoreError> {
    find_visible(client, tag, actor, kind, id)
        .await?
        .map(|(_, record)| record)
        .ok_or_else(|| StoreError::not_found(format!("no {kind} has this id")))
}

pub(super) async fn list(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    page: &PageRequest,
) -> Result<Page<Record>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let agent = (actor.role != crate::Role::Admin).then_some(actor.user_id.as_str());
    let statement = client
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records
             WHERE kind = $1 AND seq < $2 AND ($3::TEXT IS NULL OR created_by = $3 OR assigned_agent_id = $3)
             ORDER BY seq DESC LIMIT $4"
        ))
        .await?;
    let rows = client.query(&statement, &[&kind.name(), &before, &agent, &(limit + 1)]).await?;
    let records = rows
        .iter()
        .map(|row| Ok((row.try_get::<_, i64>(0)?, record_from_row(row, tag)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    paginate(records, page.limit)
}

pub(super) async fn list_events(
    client: &ClientWrapper,
    tag: &str,
    filter: &EventFilterQuery,
    page: &PageRequest,
) -> Result<Page<StoredEvent>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let name = filter.event.map(EventName::as_str);
    let since = filter.since.map(|t| t.timestamp());
    let statement = client
        .prepare_cached(
            "SELECT seq, name, created_at, body FROM events
             WHERE seq < $1 AND ($2::TEXT IS NULL OR name = $2) AND ($3::BIGINT IS NULL OR created_at >= $3)
             ORDER BY seq DESC LIMIT $4",
        )
        .await?;
    let rows = client.query(&statement, &[&before, &name, &since, &(limit + 1)]).await?;
    let events = rows
        .iter()
        .map(|row| {
            let seq: i64 = row.try_get(0)?;
            let name: &str = row.try_get(1)?;
            let event = StoredEvent {
                id: ids::format("evt", tag, seq),
                name: EventName::parse(name)
                    .ok_or_else(|| StoreError::internal("reading an event", format!("unknown event {name}")))?,
                timestamp: timestamp(row.try_get(2)?),
                body: Bytes::from(row.try_get::<_, Vec<u8>>(3)?),
            };
            Ok((seq, event))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    paginate(events, page.limit)
}
