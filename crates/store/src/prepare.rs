//! What both stores do with records before and around the database: numbering, validating and
//! encoding new records (outside the writer), naming the rows of a bulk request that failed, and
//! the page cursors of the list endpoints. Nothing here touches a database.

use chrono::{DateTime, Utc};
use estate_crm_domain::{EventName, FieldErrors, Record, RecordKind, Timestamp, change, payload};
use serde_json::{Map, Value};

use crate::{Actor, Page, StoreError, ids};

/// The time a change is stamped with: now, to the second (the precision of the API and payloads).
pub(crate) fn commit_time() -> Timestamp {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// Why one row failed: kept apart from `StoreError` so that bulk can name the row.
pub(crate) enum Failure {
    NotFound,
    Invalid(FieldErrors),
    Conflict(FieldErrors),
    Internal(StoreError),
}

impl Failure {
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            Failure::NotFound => StoreError::not_found("no such record"),
            Failure::Invalid(errors) => StoreError::invalid(errors),
            Failure::Conflict(errors) => StoreError::conflict(errors),
            Failure::Internal(err) => err,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::Internal(err)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(err: rusqlite::Error) -> Self {
        Failure::Internal(err.into())
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(err: tokio_postgres::Error) -> Self {
        Failure::Internal(err.into())
    }
}

#[derive(Default)]
pub(crate) struct RowFailures {
    pub(crate) invalid: FieldErrors,
    pub(crate) conflict: FieldErrors,
    pub(crate) internal: Option<StoreError>,
}

impl RowFailures {
    pub(crate) fn add(&mut self, prefix: &str, failure: Failure) {
        match failure {
            Failure::NotFound => self.invalid.add(format!("{prefix}.id"), "no such record"),
            Failure::Invalid(errors) => self.invalid.absorb(prefix, errors),
            Failure::Conflict(errors) => self.conflict.absorb(prefix, errors),
            Failure::Internal(err) => self.internal = self.internal.take().or(Some(err)),
        }
    }

    /// A database failure wins; then invalid rows (422); then conflicts (409).
    pub(crate) fn into_result(self) -> Result<(), StoreError> {
        if let Some(err) = self.internal {
            return Err(err);
        }
        if !self.invalid.is_empty() {
            return Err(StoreError::invalid(self.invalid));
        }
        if !self.conflict.is_empty() {
            return Err(StoreError::conflict(self.conflict));
        }
        Ok(())
    }
}

pub(crate) fn split_id(row: &Value) -> Option<(String, Value)> {
    let mut object = row.as_object()?.clone();
    let id = object.shift_remove("id")?.as_str()?.to_owned();
    Some((id, Value::Object(object)))
}

/// A new record validated, numbered and encoded before it reaches the writer, so that the one
/// writer thread spends its time on inserts alone. (Enquiries are made in the writer: they depend on
/// which contact has their email.)
pub(crate) struct PreparedRecord {
    pub(crate) seq: i64,
    /// The record; in bulk, without its field values (only its id is answered), which keeps a
    /// 10,000-row request's memory to what the writer needs.
    pub(crate) record: Record,
    pub(crate) columns: RowColumns,
    pub(crate) references: Vec<(&'static str, RecordKind, String)>,
    pub(crate) events: Vec<(EventName, Vec<u8>)>,
    pub(crate) now: Timestamp,
}

/// What the records table stores of a record beside its common columns.
pub(crate) struct RowColumns {
    pub(crate) assigned_agent_id: Option<String>,
    pub(crate) email_key: Option<String>,
    pub(crate) fields_json: String,
    /// A contact's searchable text (see [`search_text`]).
    pub(crate) search_text: Option<String>,
}

impl RowColumns {
    pub(crate) fn of(record: &Record) -> RowColumns {
        RowColumns {
            assigned_agent_id: record.assigned_agent_id().map(str::to_owned),
            email_key: record.email_key(),
            fields_json: fields_json(&record.fields),
            search_text: search_text(record),
        }
    }
}

/// Numbers and encodes new records outside the writer.
#[derive(Clone)]
pub(crate) struct Preparer {
    pub tag: String,
    pub site_url: String,
    /// The last record seq handed out. Seeded from the database at open; only ever grows, so a seq
    /// (and so an id) is never reused, not even one of a record that was deleted.
    pub last_seq: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Preparer {
    pub fn next_seq(&self) -> i64 {
        self.last_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    pub fn prepare(&self, actor: &Actor, kind: RecordKind, input: &Value) -> Result<PreparedRecord, FieldErrors> {
        self.prepare_numbered(self.next_seq(), actor, kind, input)
    }

    /// Prepares a record under a seq handed out elsewhere (by a database sequence, when several
    /// servers share one database and an in-process counter would give the same seq twice).
    pub fn prepare_numbered(
        &self,
        seq: i64,
        actor: &Actor,
        kind: RecordKind,
        input: &Value,
    ) -> Result<PreparedRecord, FieldErrors> {
        let now = commit_time();
        let record = change::create(kind, input, ids::format(kind.id_prefix(), &self.tag, seq), &actor.user_id, now)?;
        let events = change::event_names_on_create(&record)
            .into_iter()
            .map(|name| (name, payload::encode(name, now, &record, &self.site_url)))
            .collect();
        let references = change::references(&record).into_iter().map(|(f, k, id)| (f, k, id.to_owned())).collect();
        Ok(PreparedRecord { seq, columns: RowColumns::of(&record), references, record, events, now })
    }

    /// Prepares a run of bulk rows, the first of which has index `first_index` in the request.
    /// Invalid rows travel with the valid ones, so that the writer can add the rows whose references
    /// are missing and the answer names every bad row at once (`create[3].email`).
    pub fn prepare_rows(&self, actor: &Actor, kind: RecordKind, rows: &[Value], first_index: usize) -> PreparedRows {
        let seqs: Vec<i64> = rows.iter().map(|_| self.next_seq()).collect();
        self.prepare_numbered_rows(&seqs, actor, kind, rows, first_index)
    }

    /// [`Preparer::prepare_rows`] with the seqs handed out elsewhere, one per row.
    pub fn prepare_numbered_rows(
        &self,
        seqs: &[i64],
        actor: &Actor,
        kind: RecordKind,
        rows: &[Value],
        first_index: usize,
    ) -> PreparedRows {
        let mut invalid = Vec::new();
        let mut prepared = Vec::with_capacity(rows.len());
        for ((index, row), seq) in (first_index..).zip(rows).zip(seqs) {
            match self.prepare_numbered(*seq, actor, kind, row) {
                Ok(mut record) => {
                    record.record.fields = Map::new();
                    prepared.push((index, record));
                }
                Err(row_errors) => invalid.push((index, row_errors)),
            }
        }
        PreparedRows { rows: prepared, invalid }
    }
}

/// A run of bulk rows after preparation: the valid ones and the errors of the others, each with its
/// index in the request.
pub(crate) struct PreparedRows {
    pub(crate) rows: Vec<(usize, PreparedRecord)>,
    pub(crate) invalid: Vec<(usize, FieldErrors)>,
}

impl PreparedRows {
    pub(crate) fn len(&self) -> usize {
        self.rows.len() + self.invalid.len()
    }
}

pub(crate) fn fields_json(fields: &Map<String, Value>) -> String {
    serde_json::to_string(fields).expect("a JSON map always serialises")
}

pub(crate) fn timestamp(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// Cursors are the seq of the last item of a page, in base 36 behind a `c`.
pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<i64, StoreError> {
    match cursor {
        None => Ok(i64::MAX),
        Some(cursor) => ids::parse("c", "", cursor)
            .ok_or_else(|| StoreError::invalid(FieldErrors::single("cursor", "is not a cursor this server gave out"))),
    }
}

/// Cuts a page fetched with one extra row, which says whether a next page exists.
pub(crate) fn paginate<T>(mut rows: Vec<(i64, T)>, limit: usize) -> Result<Page<T>, StoreError> {
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(seq, _)| ids::format("c", "", *seq))
    } else {
        None
    };
    Ok(Page { items: rows.into_iter().map(|(_, item)| item).collect(), next_cursor })
}

/// A contact's searchable text: names, email, phones, and the phones' digits alone (so that
/// `2079460001` finds `+44 (20) 7946-0001`); `None` for other kinds.
pub(crate) fn search_text(record: &Record) -> Option<String> {
    if record.kind != RecordKind::Contact {
        return None;
    }
    let mut parts: Vec<String> = ["first_name", "last_name", "email", "phone", "mobile"]
        .iter()
        .filter_map(|field| record.get_str(field).map(str::to_owned))
        .collect();
    for phone in ["phone", "mobile"].iter().filter_map(|field| record.get_str(field)) {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() && digits != phone {
            parts.push(digits);
        }
    }
    Some(parts.join(" "))
}

/// The seq of the record an event's `data` is (its `id`, `con_...`), if it is one of ours.
pub(crate) fn record_seq_of(tag: &str, data: &Value) -> Option<i64> {
    let id = data.get("id")?.as_str()?;
    let (prefix, _) = id.split_once('_')?;
    ids::parse(prefix, tag, id)
}
