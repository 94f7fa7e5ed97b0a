//! Moving house between the stores: `estate-crm export` writes a database as one stream of JSON
//! lines, `estate-crm import` reads it into an empty database of either kind.
//!
//! The stream is a header line (the format and its version, the store and schema it came from, the
//! database's tag, and the highest number each counter ever handed out), one line per row naming its
//! table, then an end line with the number of rows of each table, so that a file cut short is refused
//! rather than half-read. Bytes (event bodies, receivers' responses) are base64.
//!
//! Both stores share one schema in two dialects, so one table of the carried tables and their typed
//! columns ([`TABLES`]) drives both exports and both imports; each store's module only reads and
//! writes [`Cell`]s. Rows keep their seqs, and the tag travels with them, so every id (records,
//! endpoints, deliveries' `webhook-id`s, users, tokens) stays the same; the importer then moves the
//! store's counters past every imported number, so that no id is ever given twice.
//!
//! Left out on purpose: web sessions (people sign in again; a session's cookie is worth nothing once
//! the old server is stopped) and what each store derives from the rows (both stores'
//! `contact_search` tables are rebuilt from the imported contacts; PostgreSQL's indexes are its own).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::StoreError;

/// The name the header's `format` field carries.
pub(crate) const FORMAT_NAME: &str = "estate-crm export";
/// The version of the line format; an importer refuses any other.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The longest line read: a row's bytes as base64 (event bodies are at most a request's 32 MiB
/// bulk body split into rows, responses at most 64 KiB), with room to spare. A longer line is
/// refused instead of growing memory without end.
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;
/// An import batch ends at this many rows or this many bytes of cells, whichever comes first: few
/// round trips to PostgreSQL, and memory bounded whatever the rows hold.
pub(crate) const BATCH_ROWS: usize = 500;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How a column is typed in both stores (SQLite keeps booleans as 0 and 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// BIGINT / INTEGER.
    Int64,
    /// PostgreSQL INTEGER (SQLite INTEGER).
    Int32,
    /// BOOLEAN (SQLite INTEGER 0 or 1).
    Bool,
    /// TEXT.
    Text,
    /// BYTEA / BLOB: base64 in the file.
    Bytes,
}

/// One carried column.
#[derive(Debug)]
pub(crate) struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
}

/// One carried table: its columns in order, the first `key_len` of them its primary key (the
/// order rows are exported in).
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    pub key_len: usize,
}

impl Table {
    /// The column names joined for a SELECT or an INSERT.
    pub fn column_list(&self) -> String {
        self.columns.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
    }

    /// The primary key's columns joined for an ORDER BY.
    pub fn key_list(&self) -> String {
        self.columns[..self.key_len].iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
    }
}

macro_rules! columns {
    ($($name:ident: $ty:ident),* $(,)?) => {
        &[$(Column { name: stringify!($name), ty: ColumnType::$ty }),*]
    };
}

/// Every table the stream carries, in the order it is written (users before what they own, records
/// and events before what refers to them; nothing depends on the order, it only reads well).
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: columns!(seq: Int64, name: Text, email: Text, role: Text, password_hash: Text, created_at: Int64),
        key_len: 1,
    },
    Table {
        name: "tokens",
        columns: columns!(seq: Int64, user_seq: Int64, name: Text, hash: Text, created_at: Int64),
        key_len: 1,
    },
    Table {
        name: "endpoints",
        columns: columns!(
            seq: Int64, url: Text, events: Text, secret: Text, previous_secret: Text,
            previous_secret_until: Int64, active: Bool, disabled_reason: Text, description: Text,
            retry_schedule: Text, max_in_flight: Int64, is_primary: Bool, created_at: Int64,
            updated_at: Int64, cursor: Int64, source: Text, format: Text,
        ),
        key_len: 1,
    },
    Table {
        name: "records",
        columns: columns!(
            seq: Int64, kind: Text, created_by: Text, assigned_agent_id: Text, email_key: Text,
            created_at: Int64, updated_at: Int64, fields: Text,
        ),
        key_len: 1,
    },
    Table {
        name: "events",
        columns: columns!(seq: Int64, name: Text, created_at: Int64, body: Bytes, record_seq: Int64),
        key_len: 1,
    },
    Table {
        name: "deliveries",
        columns: columns!(
            seq: Int64, event_seq: Int64, endpoint_seq: Int64, status: Int32, attempts: Int32,
            next_attempt_at: Int64, last_attempt_at: Int64, last_duration_ms: Int64,
            last_status_code: Int32, last_error: Text, last_response: Bytes, created_at: Int64,
            updated_at: Int64,
        ),
        key_len: 1,
    },
    Table {
        name: "attempts",
        columns: columns!(
            delivery_seq: Int64, number: Int32, started_at: Int64, duration_ms: Int64,
            status_code: Int32, error: Text, response: Bytes,
        ),
        key_len: 2,
    },
    Table {
        name: "hubspot_settings",
        columns: columns!(
            id: Int32, access_token: Text, base_url: Text, deal_pipeline: Text, stage_map: Text,
            enabled: Bool, rate_limit: Int64, rate_window_ms: Int64, paused_reason: Text,
            version: Int64, cursor: Int64, backfill_kind: Text, backfill_page: Text,
            backfill_done: Int64, updated_at: Int64,
        ),
        key_len: 1,
    },
    Table {
        name: "hubspot_map",
        columns: columns!(kind: Text, record_seq: Int64, record_id: Text, hubspot_id: Text, sent: Text),
        key_len: 2,
    },
    Table {
        name: "hubspot_log",
        columns: columns!(
            seq: Int64, at: Int64, kind: Text, record_id: Text, action: Text, sent: Text,
            status: Int32, hubspot_id: Text, error: Text,
        ),
        key_len: 1,
    },
];

/// The tables an import needs empty: the carried ones, and sessions (which belong to users).
pub(crate) fn tables_that_must_be_empty() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|t| t.name).chain(["sessions"])
}

/// One value of one column, in the store-neutral form both stores read and write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    /// Roughly how much memory the cell holds, for bounding a batch.
    fn weight(&self) -> usize {
        match self {
            Cell::Text(text) => text.len() + 8,
            Cell::Bytes(bytes) => bytes.len() + 8,
            _ => 8,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(n) => Value::from(*n),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Text(text) => Value::String(text.clone()),
            Cell::Bytes(bytes) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// The cell a JSON value stands for in a column of this type; `Err` says what was wrong.
    fn from_json(value: Value, ty: ColumnType) -> Result<Cell, String> {
        match (ty, value) {
            (_, Value::Null) => Ok(Cell::Null),
            (ColumnType::Int64, Value::Number(n)) => {
                n.as_i64().map(Cell::Int).ok_or_else(|| format!("{n} is not an integer"))
            }
            (ColumnType::Int32, Value::Number(n)) => n
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .map(Cell::Int)
                .ok_or_else(|| format!("{n} is not a 32-bit integer")),
            (ColumnType::Bool, Value::Bool(b)) => Ok(Cell::Bool(b)),
            (ColumnType::Text, Value::String(text)) => Ok(Cell::Text(text)),
            (ColumnType::Bytes, Value::String(text)) => base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(Cell::Bytes)
                .map_err(|err| format!("not base64 ({err})")),
            (ty, other) => Err(format!("expected {} but found {}", ty.expected(), json_type(&other))),
        }
    }
}

impl ColumnType {
    fn expected(self) -> &'static str {
        match self {
            ColumnType::Int64 | ColumnType::Int32 => "an integer",
            ColumnType::Bool => "true or false",
            ColumnType::Text => "a string",
            ColumnType::Bytes => "a base64 string",
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Which store a stream came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceStore {
    /// The embedded SQLite database.
    Sqlite,
    /// PostgreSQL.
    Postgresql,
}

/// The highest number each counter ever handed out, as the source store knew it: a deleted row's
/// number may be higher than any row's left, and must not be given again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sequences {
    pub records: i64,
    pub endpoints: i64,
    pub users: i64,
    pub tokens: i64,
    pub hubspot_log: i64,
}

impl Sequences {
    /// Each counter raised to at least the highest seq among the rows read.
    fn raised_to(mut self, highest: &BTreeMap<&'static str, i64>) -> Sequences {
        let at_least =
            |current: &mut i64, table: &str| *current = (*current).max(highest.get(table).copied().unwrap_or(0));
        at_least(&mut self.records, "records");
        at_least(&mut self.endpoints, "endpoints");
        at_least(&mut self.users, "users");
        at_least(&mut self.tokens, "tokens");
        at_least(&mut self.hubspot_log, "hubspot_log");
        self
    }
}

/// The first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    pub format: String,
    pub version: u32,
    pub store: SourceStore,
    pub schema_version: u32,
    pub tag: String,
    pub exported_at: String,
    pub sequences: Sequences,
}

/// A row line as written.
#[derive(Serialize)]
struct RowOut<'a> {
    table: &'static str,
    row: &'a Map<String, Value>,
}

/// The last line: how many rows of each table came before it.
#[derive(Serialize)]
struct EndOut<'a> {
    end: &'a BTreeMap<&'static str, u64>,
}

/// Any line after the header, as read: a row or the end.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    table: Option<String>,
    row: Option<Map<String, Value>>,
    end: Option<BTreeMap<String, u64>>,
}

/// What an export or an import moved, for the one line the command prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSummary {
    /// The database's tag, the part of every id that names it.
    pub tag: String,
    /// The store the rows came from.
    pub source: SourceStore,
    /// Rows per table, in the stream's order.
    pub rows: Vec<(&'static str, u64)>,
}

impl TransferSummary {
    /// Every row, all tables together.
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for TransferSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows (", self.total())?;
        for (n, (table, count)) in self.rows.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{table} {count}")?;
        }
        f.write_str(")")
    }
}

/// Writes a stream: the header, the rows of each table in turn, then the end line.
pub(crate) struct ExportWriter<W: Write> {
    out: W,
    counts: BTreeMap<&'static str, u64>,
    header: Header,
    row: Map<String, Value>,
}

impl<W: Write> ExportWriter<W> {
    /// Writes the header at once.
    pub fn start(mut out: W, header: Header) -> Result<ExportWriter<W>, StoreError> {
        serde_json::to_writer(&mut out, &header).map_err(write_failed)?;
        out.write_all(b"\n").map_err(write_failed)?;
        let counts = TABLES.iter().map(|t| (t.name, 0)).collect();
        Ok(ExportWriter { out, counts, header, row: Map::new() })
    }

    /// Writes one row of `table`, its cells in the table's column order.
    pub fn row(&mut self, table: &'static Table, cells: &[Cell]) -> Result<(), StoreError> {
        self.row.clear();
        for (column, cell) in table.columns.iter().zip(cells) {
            self.row.insert(column.name.to_owned(), cell.to_json());
        }
        serde_json::to_writer(&mut self.out, &RowOut { table: table.name, row: &self.row }).map_err(write_failed)?;
        self.out.write_all(b"\n").map_err(write_failed)?;
        *self.counts.entry(table.name).or_default() += 1;
        Ok(())
    }

    /// What has been written so far, for a writer into memory to hand on (and empty).
    pub fn output(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes the end line and flushes; answers the output and what was written.
    pub fn finish(mut self) -> Result<(W, TransferSummary), StoreError> {
        serde_json::to_writer(&mut self.out, &EndOut { end: &self.counts }).map_err(write_failed)?;
        self.out.write_all(b"\n").map_err(write_failed)?;
        self.out.flush().map_err(write_failed)?;
        let summary = summary(&self.header, &self.counts);
        Ok((self.out, summary))
    }
}

fn write_failed(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::internal("writing the export", err)
}

fn summary(header: &Header, counts: &BTreeMap<&'static str, u64>) -> TransferSummary {
    TransferSummary {
        tag: header.tag.clone(),
        source: header.store,
        rows: TABLES.iter().map(|t| (t.name, counts.get(t.name).copied().unwrap_or(0))).collect(),
    }
}

/// Rows of one table, read together.
#[derive(Debug)]
pub(crate) struct Batch {
    pub table: &'static Table,
    pub rows: Vec<Vec<Cell>>,
}

/// What the reader hands an importer, in order: batches, then the end once every count agreed.
#[derive(Debug)]
pub(crate) enum Item {
    Rows(Batch),
    /// The end line matched every count: the counters to set, and what was read.
    End {
        sequences: Sequences,
        summary: TransferSummary,
    },
}

/// Reads a stream: the header first ([`ImportReader::open`]), then [`Item`]s. Every check of the
/// file is made here, so that the stores' importers only write what they are given: a header of
/// this format and version, known tables with exactly their columns, values of their columns'
/// types, an end line whose counts match the rows read, and nothing after it.
pub(crate) struct ImportReader<R: BufRead> {
    input: R,
    line_number: u64,
    line: Vec<u8>,
    header: Header,
    counts: BTreeMap<&'static str, u64>,
    highest: BTreeMap<&'static str, i64>,
    /// A row read past the end of the previous batch (it belonged to another table).
    held: Option<(&'static Table, Vec<Cell>)>,
    state: ReadState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Rows,
    /// The end line was read and its counts agreed; the end item is still to be handed out.
    EndRead,
    Finished,
}

/// One line after the header, checked.
enum Parsed {
    Row(&'static Table, Vec<Cell>),
    End,
}

impl<R: BufRead> ImportReader<R> {
    /// Reads and checks the header.
    pub fn open(input: R) -> Result<ImportReader<R>, StoreError> {
        let mut input = input;
        let mut line = Vec::new();
        if !read_line(&mut input, &mut line, 1)? {
            return Err(StoreError::refused("the input is empty; give it the file `estate-crm export` wrote"));
        }
        let header: Header = serde_json::from_slice(&line).map_err(|err| {
            StoreError::refused(format!(
                "the first line is not the header of an estate-crm export ({err}); give it the file `estate-crm export` wrote"
            ))
        })?;
        check_header(&header)?;
        Ok(ImportReader {
            input,
            line_number: 1,
            line,
            header,
            counts: TABLES.iter().map(|t| (t.name, 0)).collect(),
            highest: BTreeMap::new(),
            held: None,
            state: ReadState::Rows,
        })
    }

    /// The header read by [`ImportReader::open`].
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next batch of one table's rows, then the end, then `None`; `Err` for anything wrong
    /// with the file.
    pub fn next_item(&mut self) -> Result<Option<Item>, StoreError> {
        match self.state {
            ReadState::Finished => return Ok(None),
            ReadState::EndRead => {
                self.state = ReadState::Finished;
                return self.end_item().map(Some);
            }
            ReadState::Rows => {}
        }
        let mut batch = self.held.take().map(|(table, cells)| Batch { table, rows: vec![cells] });
        let mut weight = batch.as_ref().map_or(0, |b| b.rows.iter().flatten().map(Cell::weight).sum());
        loop {
            if batch.as_ref().is_some_and(|b| b.rows.len() >= BATCH_ROWS || weight >= BATCH_BYTES) {
                return Ok(batch.map(Item::Rows));
            }
            match self.next_parsed()? {
                Parsed::Row(table, cells) => match &mut batch {
                    Some(b) if !std::ptr::eq(b.table, table) => {
                        self.held = Some((table, cells));
                        return Ok(batch.map(Item::Rows));
                    }
                    Some(b) => {
                        weight += cells.iter().map(Cell::weight).sum::<usize>();
                        b.rows.push(cells);
                    }
                    None => {
                        weight += cells.iter().map(Cell::weight).sum::<usize>();
                        batch = Some(Batch { table, rows: vec![cells] });
                    }
                },
                Parsed::End => {
                    // The rows before the end line go first; the end item follows on the next call.
                    self.state = ReadState::EndRead;
                    return match batch {
                        Some(b) => Ok(Some(Item::Rows(b))),
                        None => self.next_item(),
                    };
                }
            }
        }
    }

    fn next_parsed(&mut self) -> Result<Parsed, StoreError> {
        self.line_number += 1;
        if !read_line(&mut self.input, &mut self.line, self.line_number)? {
            return Err(StoreError::refused(format!(
                "the file ends after line {} without its end line: it was cut short; export it again",
                self.line_number - 1
            )));
        }
        let n = self.line_number;
        let line: LineIn = serde_json::from_slice(&self.line)
            .map_err(|err| StoreError::refused(format!("line {n} is not a line of an estate-crm export ({err})")))?;
        match line {
            LineIn { table: Some(table), row: Some(row), end: None } => {
                let (table, cells) =
                    row_cells(&table, row).map_err(|why| StoreError::refused(format!("line {n}: {why}")))?;
                *self.counts.entry(table.name).or_default() += 1;
                if let (Some(Cell::Int(seq)), Some(first)) = (cells.first(), table.columns.first())
                    && first.name == "seq"
                {
                    let highest = self.highest.entry(table.name).or_insert(0);
                    *highest = (*highest).max(*seq);
                }
                Ok(Parsed::Row(table, cells))
            }
            LineIn { table: None, row: None, end: Some(end) } => {
                self.check_end(&end).map_err(|why| StoreError::refused(format!("line {n}, the end line: {why}")))?;
                Ok(Parsed::End)
            }
            _ => Err(StoreError::refused(format!(
                "line {n} is neither a row ({{\"table\", \"row\"}}) nor the end line ({{\"end\"}})"
            ))),
        }
    }

    /// The end line's counts must be the rows read, table by table.
    fn check_end(&self, end: &BTreeMap<String, u64>) -> Result<(), String> {
        if let Some(unknown) = end.keys().find(|name| table_named(name).is_none()) {
            return Err(format!("it counts rows of a table this estate-crm does not know, {unknown:?}"));
        }
        for table in TABLES {
            let said = end.get(table.name).copied().unwrap_or(0);
            let read = self.counts.get(table.name).copied().unwrap_or(0);
            if said != read {
                return Err(format!(
                    "it says {said} rows of {} but {read} were read: the file was changed or cut; export it again",
                    table.name
                ));
            }
        }
        Ok(())
    }

    fn end_item(&mut self) -> Result<Item, StoreError> {
        // Nothing may follow the end line but blank lines: a file with more was put together by hand.
        loop {
            self.line_number += 1;
            if !read_line(&mut self.input, &mut self.line, self.line_number)? {
                break;
            }
            if !self.line.iter().all(u8::is_ascii_whitespace) {
                return Err(StoreError::refused(format!(
                    "line {} follows the end line; export the file again",
                    self.line_number
                )));
            }
        }
        Ok(Item::End {
            sequences: self.header.sequences.raised_to(&self.highest),
            summary: summary(&self.header, &self.counts),
        })
    }
}

/// Reads one line into `line` (without its newline), at most [`MAX_LINE_BYTES`]; `false` at the end.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>, number: u64) -> Result<bool, StoreError> {
    line.clear();
    // `take` of the reference, not of the reader: the reader goes on to the next line.
    let read = std::io::Read::take(&mut *input, MAX_LINE_BYTES + 1)
        .read_until(b'\n', line)
        .map_err(|err| StoreError::internal("reading the import", err))?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if u64::try_from(line.len()).unwrap_or(u64::MAX) > MAX_LINE_BYTES {
        return Err(StoreError::refused(format!("line {number} is longer than {} MiB", MAX_LINE_BYTES >> 20)));
    }
    Ok(true)
}

fn check_header(header: &Header) -> Result<(), StoreError> {
    if header.format != FORMAT_NAME {
        return Err(StoreError::refused(format!(
            "the first line names the format {:?}, not {FORMAT_NAME:?}",
            header.format
        )));
    }
    if header.version != FORMAT_VERSION {
        return Err(StoreError::refused(format!(
            "the file is in version {} of the export format; this estate-crm reads version {FORMAT_VERSION}",
            header.version
        )));
    }
    if header.tag.is_empty() || header.tag.len() > 16 || !header.tag.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(StoreError::refused(format!("the header's tag {:?} is not a database tag", header.tag)));
    }
    Ok(())
}

fn table_named(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// A row's cells in its table's column order: every column there, of its type, and no other.
fn row_cells(table: &str, mut row: Map<String, Value>) -> Result<(&'static Table, Vec<Cell>), String> {
    let table = table_named(table).ok_or_else(|| format!("{table:?} is not a table this estate-crm knows"))?;
    let mut cells = Vec::with_capacity(table.columns.len());
    for column in table.columns {
        let value =
            row.remove(column.name).ok_or_else(|| format!("a row of {} has no {:?}", table.name, column.name))?;
        let cell = Cell::from_json(value, column.ty).map_err(|why| format!("{}.{}: {why}", table.name, column.name))?;
        cells.push(cell);
    }
    if let Some(unknown) = row.keys().next() {
        return Err(format!("a row of {} has a column this estate-crm does not know, {unknown:?}", table.name));
    }
    Ok((table, cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            store: SourceStore::Sqlite,
            schema_version: 8,
            tag: "abcd".to_owned(),
            exported_at: "2026-01-01T00:00:00Z".to_owned(),
            sequences: Sequences { records: 70, ..Sequences::default() },
        }
    }

    fn table(name: &str) -> &'static Table {
        table_named(name).unwrap()
    }

    /// A stream of `users` rows 1..=users and one event, as the exporter writes it.
    fn stream(users: i64) -> String {
        let mut out = Vec::new();
        let mut writer = ExportWriter::start(&mut out, header()).unwrap();
        for seq in 1..=users {
            let cells = [
                Cell::Int(seq),
                Cell::Text(format!("User {seq}")),
                Cell::Text(format!("u{seq}@example.com")),
                Cell::Text("agent".into()),
                Cell::Null,
                Cell::Int(0),
            ];
            writer.row(table("users"), &cells).unwrap();
        }
        writer.row(table("events"), &event()).unwrap();
        writer.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    fn event() -> [Cell; 5] {
        [Cell::Int(9), Cell::Text("contact.created".into()), Cell::Int(1), Cell::Bytes(vec![0, 255, b'{']), Cell::Null]
    }

    /// Every item of a stream, or the reader's error as text.
    fn read_all(text: &str) -> Result<Vec<Item>, String> {
        let mut reader = ImportReader::open(text.as_bytes()).map_err(|e| e.to_string())?;
        let mut items = Vec::new();
        while let Some(item) = reader.next_item().map_err(|e| e.to_string())? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn a_stream_reads_back_in_batches_of_one_table_then_the_end() {
        let items = read_all(&stream(1_200)).unwrap();
        let batches: Vec<(&str, usize)> = items
            .iter()
            .filter_map(|item| match item {
                Item::Rows(b) => Some((b.table.name, b.rows.len())),
                Item::End { .. } => None,
            })
            .collect();
        assert_eq!(batches, vec![("users", 500), ("users", 500), ("users", 200), ("events", 1)]);
        let Some(Item::Rows(events)) = items.get(3) else { panic!("the events batch") };
        assert_eq!(events.rows[0], event(), "bytes and nulls come back as they went");
        let Some(Item::End { sequences, summary }) = items.last() else { panic!("the end comes last") };
        assert_eq!(sequences.users, 1_200, "a counter is raised to the highest seq read");
        assert_eq!(sequences.records, 70, "and kept where it was higher");
        assert_eq!(summary.total(), 1_201);
        assert_eq!(summary.tag, "abcd");
    }

    #[test]
    fn a_stream_cut_short_is_refused() {
        let whole = stream(3);
        let without_end = whole.lines().take(4).collect::<Vec<_>>().join("\n") + "\n";
        let error = read_all(&without_end).expect_err("no end line");
        assert!(error.contains("cut short"), "{error}");
        let mid_line = &whole[..whole.len() - 20];
        let error = read_all(mid_line).expect_err("the end line cut");
        assert!(error.contains("is not a line of an estate-crm export"), "{error}");
    }

    #[test]
    fn a_stream_whose_counts_disagree_is_refused() {
        let whole = stream(3);
        let mut lines: Vec<&str> = whole.lines().collect();
        lines.remove(2); // the second user
        let error = read_all(&lines.join("\n")).expect_err("a row missing");
        assert!(error.contains("says 3 rows of users but 2 were read"), "{error}");
    }

    #[test]
    fn wrong_lines_are_refused_with_their_number() {
        let whole = stream(1);
        let check = |from: &str, to: &str, expected: &str| {
            let changed = whole.replacen(from, to, 1);
            assert_ne!(changed, whole, "{from} is in the stream");
            let error = read_all(&changed).err().unwrap_or_else(|| panic!("{to} is refused"));
            assert!(error.contains(expected), "{to}: {error}");
        };
        check("\"format\":\"estate-crm export\"", "\"format\":\"csv\"", "names the format");
        check("\"version\":1", "\"version\":2", "version 2 of the export format");
        check("\"tag\":\"abcd\"", "\"tag\":\"AB\"", "not a database tag");
        check("\"table\":\"users\"", "\"table\":\"people\"", "line 2: \"people\" is not a table");
        check("\"role\":\"agent\"", "\"role\":7", "users.role: expected a string but found a number");
        check("\"created_at\":0}", "\"created_at\":0,\"x\":1}", "does not know, \"x\"");
        check("\"name\":\"User 1\",", "", "has no \"name\"");
        check("\"body\":\"AP97\"", "\"body\":\"#\"", "events.body: not base64");
        let trailing = whole.clone() + "{\"table\":\"users\"}\n";
        let error = read_all(&trailing).expect_err("a line after the end");
        assert!(error.contains("follows the end line"), "{error}");
        assert!(read_all("").err().unwrap().contains("the input is empty"));
    }
}
