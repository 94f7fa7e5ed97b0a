//! `estate-crm export` and `import` on the embedded database (the format is `crate::transfer`).
//!
//! An export reads one snapshot (a read transaction on a connection of its own), so it may run
//! while a server serves: WAL mode keeps the writer going, and the export sees none of its later
//! commits. It takes no lock on the data directory for that reason. An import takes the lock (no
//! server may run on the directory meanwhile) and writes everything in one transaction, so a failed
//! import leaves the database as empty as it found it.

use std::io::{BufRead, Write};
use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Row, TransactionBehavior};

use super::contacts::{insert_search_texts, search_text};
use super::records::{RECORD_COLUMNS, record_from_row};
use super::{lock_data_dir, migrations, open_connection};
use crate::StoreError;
use crate::transfer::{
    Cell, Column, ColumnType, ExportWriter, FORMAT_NAME, FORMAT_VERSION, Header, ImportReader, Item, Sequences,
    SourceStore, TABLES, Table, TransferSummary, tables_that_must_be_empty,
};

/// How many contacts' search rows one statement writes after an import.
const SEARCH_ROWS_PER_INSERT: usize = 100;

/// Writes the database in `data_dir` to `out` as one snapshot; answers what was written.
pub fn export_sqlite(data_dir: &Path, out: impl Write) -> Result<TransferSummary, StoreError> {
    let path = super::SqliteStore::database_path(data_dir);
    if !path.exists() {
        return Err(StoreError::refused(format!(
            "there is no database in {} (no estate-crm.db); check --data-dir",
            data_dir.display()
        )));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|err| StoreError::internal(format!("opening the database {}", path.display()), err))?;
    conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA query_only = ON;")?;
    // Every read below is one snapshot: the first one starts it, the COMMIT ends it.
    conn.execute_batch("BEGIN")?;
    let summary = export_snapshot(&conn, out)?;
    conn.execute_batch("COMMIT")?;
    Ok(summary)
}

fn export_snapshot(conn: &Connection, out: impl Write) -> Result<TransferSummary, StoreError> {
    let schema_version: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if schema_version as usize != migrations::MIGRATIONS.len() {
        return Err(StoreError::refused(format!(
            "the database is at schema version {schema_version} and this estate-crm writes version {}; \
                 run `estate-crm migrate` with the same --data-dir first",
            migrations::MIGRATIONS.len()
        )));
    }
    let tag: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'tag'", [], |row| row.get(0))
        .or_else(|err| if err == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(err) })?;
    let tag =
        tag.ok_or_else(|| StoreError::refused("no server has run on this database yet: there is nothing to export"))?;
    let header = Header {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        store: SourceStore::Sqlite,
        schema_version,
        tag,
        exported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sequences: sequences(conn)?,
    };
    let mut writer = ExportWriter::start(out, header)?;
    for table in TABLES {
        // One statement stepped row by row: memory holds one row at a time, however large the table.
        let mut statement =
            conn.prepare(&format!("SELECT {} FROM {} ORDER BY {}", table.column_list(), table.name, table.key_list()))?;
        let mut rows = statement.query([])?;
        let mut cells = Vec::with_capacity(table.columns.len());
        while let Some(row) = rows.next()? {
            cells.clear();
            for (index, column) in table.columns.iter().enumerate() {
                cells.push(read_cell(row, index, table, column)?);
            }
            writer.row(table, &cells)?;
        }
    }
    Ok(writer.finish()?.1)
}

/// The highest number each counter handed out: deleted records raise `meta.records_seq`, and the
/// AUTOINCREMENT tables remember theirs in `sqlite_sequence`.
fn sequences(conn: &Connection) -> Result<Sequences, StoreError> {
    let autoincrement = |table: &str| -> Result<i64, StoreError> {
        Ok(conn.query_row(
            &format!(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0),
                            COALESCE((SELECT MAX(seq) FROM {table}), 0))"
            ),
            [],
            |row| row.get(0),
        )?)
    };
    Ok(Sequences {
        records: conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM records), 0),
                        COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'records_seq'), 0))",
            [],
            |row| row.get(0),
        )?,
        endpoints: autoincrement("endpoints")?,
        users: autoincrement("users")?,
        tokens: autoincrement("tokens")?,
        hubspot_log: conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM hubspot_log", [], |row| row.get(0))?,
    })
}

fn read_cell(row: &Row<'_>, index: usize, table: &Table, column: &Column) -> Result<Cell, StoreError> {
    let value = row.get_ref(index)?;
    Ok(match (value, column.ty) {
        (ValueRef::Null, _) => Cell::Null,
        (ValueRef::Integer(n), ColumnType::Int64 | ColumnType::Int32) => Cell::Int(n),
        (ValueRef::Integer(n), ColumnType::Bool) => Cell::Bool(n != 0),
        (ValueRef::Text(text), ColumnType::Text) => Cell::Text(String::from_utf8(text.to_vec()).map_err(|_| {
            StoreError::refused(format!("{}.{} holds text that is not UTF-8", table.name, column.name))
        })?),
        (ValueRef::Blob(bytes) | ValueRef::Text(bytes), ColumnType::Bytes) => Cell::Bytes(bytes.to_vec()),
        (other, ty) => {
            return Err(StoreError::refused(format!(
                "{}.{} holds a {:?} value where {ty:?} belongs",
                table.name,
                column.name,
                other.data_type()
            )));
        }
    })
}

/// Reads a stream into the empty database in `data_dir` (made and migrated if there is none), all
/// in one transaction; answers what was imported.
pub fn import_sqlite(data_dir: &Path, input: impl BufRead) -> Result<TransferSummary, StoreError> {
    // The header is checked before anything is made: a wrong file leaves no database behind.
    let mut reader = ImportReader::open(input)?;
    let _lock = lock_data_dir(data_dir)?;
    let mut conn = open_connection(&super::SqliteStore::database_path(data_dir), true)?;
    migrations::migrate(&mut conn)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    refuse_unless_empty(&tx, data_dir)?;
    let tag = reader.header().tag.clone();
    let summary = loop {
        match reader.next_item()? {
            Some(Item::Rows(batch)) => {
                let mut insert = tx.prepare_cached(&insert_sql(batch.table))?;
                for cells in &batch.rows {
                    insert.execute(rusqlite::params_from_iter(cells.iter().map(SqlCell)))?;
                }
            }
            Some(Item::End { sequences, summary }) => {
                rebuild_contact_search(&tx, &tag)?;
                set_counters(&tx, &tag, &sequences)?;
                break summary;
            }
            None => unreachable!("the reader ends with its end item"),
        }
    };
    tx.commit()?;
    // The whole import sits in the write-ahead log; fold it into the database file now rather than
    // leave the server's first checkpoint a file the size of the database to copy.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(summary)
}

fn refuse_unless_empty(conn: &Connection, data_dir: &Path) -> Result<(), StoreError> {
    let mut holding = Vec::new();
    for table in tables_that_must_be_empty() {
        let any: bool = conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |row| row.get(0))?;
        if any {
            holding.push(table);
        }
    }
    if holding.is_empty() {
        return Ok(());
    }
    Err(StoreError::refused(format!(
        "the database in {} is not empty (it has {}); import into a new --data-dir",
        data_dir.display(),
        holding.join(", ")
    )))
}

fn insert_sql(table: &Table) -> String {
    let placeholders: Vec<String> = (1..=table.columns.len()).map(|n| format!("?{n}")).collect();
    format!("INSERT INTO {} ({}) VALUES ({})", table.name, table.column_list(), placeholders.join(", "))
}

/// A cell as SQLite stores it (booleans as 0 and 1, as the schema has them).
struct SqlCell<'a>(&'a Cell);

impl rusqlite::ToSql for SqlCell<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Cell::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Cell::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Cell::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Cell::Bytes(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
        })
    }
}

/// The contact search rows the write paths keep beside each contact, made for the imported ones
/// by the same function (`search_text`).
fn rebuild_contact_search(conn: &Connection, tag: &str) -> Result<(), StoreError> {
    let mut contacts =
        conn.prepare(&format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = 'contact' ORDER BY seq"))?;
    let mut rows = contacts.query([])?;
    let mut texts: Vec<(i64, String)> = Vec::with_capacity(SEARCH_ROWS_PER_INSERT);
    let flush = |texts: &mut Vec<(i64, String)>| -> Result<(), StoreError> {
        let rows: Vec<(i64, &str)> = texts.iter().map(|(seq, text)| (*seq, text.as_str())).collect();
        insert_search_texts(conn, &rows)?;
        texts.clear();
        Ok(())
    };
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        if let Some(text) = search_text(&record_from_row(row, tag)?) {
            texts.push((seq, text));
        }
        if texts.len() == SEARCH_ROWS_PER_INSERT {
            flush(&mut texts)?;
        }
    }
    flush(&mut texts)
}

/// The tag, and every counter past what the source ever handed out.
fn set_counters(conn: &Connection, tag: &str, sequences: &Sequences) -> Result<(), StoreError> {
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('tag', ?1)", [tag])?;
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('records_seq', CAST(?1 AS TEXT))",
        [sequences.records],
    )?;
    for (table, seq) in [("endpoints", sequences.endpoints), ("users", sequences.users), ("tokens", sequences.tokens)] {
        let raised = conn.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?2) WHERE name = ?1", (table, seq))?;
        if raised == 0 && seq > 0 {
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)", (table, seq))?;
        }
    }
    Ok(())
}
