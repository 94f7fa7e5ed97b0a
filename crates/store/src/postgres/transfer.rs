//! `estate-crm export` and `import` on PostgreSQL (the format is `crate::transfer`).
//!
//! An export reads one `REPEATABLE READ READ ONLY` snapshot through a server-side cursor (a portal,
//! [`PAGE_ROWS`] rows per round trip), so it may run while servers write and holds one page in
//! memory. An import runs in one transaction that first locks every carried table against writes:
//! a server started meanwhile waits for it, then finds the imported administrator and its token
//! rather than making new ones. Rows go in with one `INSERT ... SELECT FROM UNNEST` of a column
//! array each per batch; the contacts' search rows are then made from the imported contacts. Both sides read and write the stream on a blocking thread, handed over
//! through a small bounded channel, so that neither a slow disk nor a slow pipe blocks the runtime.

use std::io::{BufRead, Write};

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use super::migrations::MIGRATIONS;
use super::{pool, unreachable};
use crate::StoreError;
use crate::error::with_causes;
use crate::transfer::{
    Cell, Column, ColumnType, ExportWriter, FORMAT_NAME, FORMAT_VERSION, Header, ImportReader, Item, Sequences,
    SourceStore, TABLES, Table, TransferSummary, tables_that_must_be_empty,
};

/// Rows fetched per round trip of an export.
const PAGE_ROWS: i32 = 256;
/// Chunks of the stream (a page's lines each, or a batch of rows) waiting between the two sides.
const CHUNKS_AHEAD: usize = 4;
/// The identity columns whose sequences an import moves past the imported rows.
const IDENTITY_TABLES: [&str; 4] = ["endpoints", "users", "tokens", "hubspot_log"];

/// A database error said with its cause (tokio-postgres says only "db error" on its own).
fn failed(context: &str, err: tokio_postgres::Error) -> StoreError {
    StoreError::internal(context.to_owned(), with_causes(&err))
}

/// Writes the database at `url` to `out` as one snapshot; answers what was written.
pub async fn export_postgres(url: &str, out: Box<dyn Write + Send>) -> Result<TransferSummary, StoreError> {
    let (chunks, mut to_write) = mpsc::channel::<Vec<u8>>(CHUNKS_AHEAD);
    let writing = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let mut out = out;
        while let Some(chunk) = to_write.blocking_recv() {
            out.write_all(&chunk).map_err(|err| StoreError::internal("writing the export", err))?;
        }
        out.flush().map_err(|err| StoreError::internal("writing the export", err))
    });
    let exported = export_to(url, &chunks).await;
    drop(chunks);
    let written = writing.await.map_err(|err| StoreError::internal("writing the export", err))?;
    // A failed write ends the channel, which the export then sees as its own failure: the write's
    // error is the one worth saying.
    written?;
    exported
}

async fn export_to(url: &str, chunks: &mpsc::Sender<Vec<u8>>) -> Result<TransferSummary, StoreError> {
    let pool = pool(url, 1)?;
    let mut client = pool.get().await.map_err(unreachable)?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|err| failed("starting the export's snapshot", err))?;
    let header = Header {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        store: SourceStore::Postgresql,
        schema_version: schema_version(&tx).await?,
        tag: tag(&tx).await?,
        exported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sequences: sequences(&tx).await?,
    };
    let mut writer = ExportWriter::start(Vec::new(), header)?;
    for table in TABLES {
        let sql = format!("SELECT {} FROM {} ORDER BY {}", table.column_list(), table.name, table.key_list());
        let portal = tx.bind(sql.as_str(), &[]).await.map_err(|err| failed("reading the database", err))?;
        loop {
            let rows = tx.query_portal(&portal, PAGE_ROWS).await.map_err(|err| failed("reading the database", err))?;
            for row in &rows {
                let cells = table.columns.iter().enumerate().map(|(i, c)| read_cell(row, i, table, c));
                writer.row(table, &cells.collect::<Result<Vec<_>, _>>()?)?;
            }
            hand_over(chunks, std::mem::take(writer.output())).await?;
            if rows.len() < PAGE_ROWS as usize {
                break;
            }
        }
    }
    let (rest, summary) = writer.finish()?;
    hand_over(chunks, rest).await?;
    tx.commit().await.map_err(|err| failed("ending the export's snapshot", err))?;
    Ok(summary)
}

async fn hand_over(chunks: &mpsc::Sender<Vec<u8>>, chunk: Vec<u8>) -> Result<(), StoreError> {
    if chunk.is_empty() {
        return Ok(());
    }
    chunks.send(chunk).await.map_err(|_| StoreError::internal("writing the export", "the output was closed"))
}

async fn schema_version(tx: &tokio_postgres::Transaction<'_>) -> Result<u32, StoreError> {
    let row = tx.query_one("SELECT MAX(version) FROM schema_version", &[]).await.map_err(|err| {
        StoreError::refused(format!(
            "this is not an estate-crm database, or it was never migrated ({})",
            with_causes(&err)
        ))
    })?;
    let version: i32 = row.get::<_, Option<i32>>(0).unwrap_or(0);
    if usize::try_from(version).ok() != Some(MIGRATIONS.len()) {
        return Err(StoreError::refused(format!(
            "the database is at schema version {version} and this estate-crm writes version {}; \
                 run `estate-crm migrate` with the same --database-url first",
            MIGRATIONS.len()
        )));
    }
    Ok(version.unsigned_abs())
}

async fn tag(tx: &tokio_postgres::Transaction<'_>) -> Result<String, StoreError> {
    let row = tx
        .query_opt("SELECT value FROM meta WHERE key = 'tag'", &[])
        .await
        .map_err(|err| failed("reading the database's tag", err))?;
    row.map(|row| row.get(0))
        .ok_or_else(|| StoreError::refused("no server has run on this database yet: there is nothing to export"))
}

/// The highest number each counter handed out. Record seqs are given in blocks of 64 from
/// `record_seq_blocks`; the last block taken may have been used to its end by a server still
/// running, so its end counts. Sequences are not part of the snapshot: read now, they can only be
/// higher, which is safe.
async fn sequences(tx: &tokio_postgres::Transaction<'_>) -> Result<Sequences, StoreError> {
    let identity = |table: &str| {
        format!(
            "GREATEST(COALESCE(pg_sequence_last_value(pg_get_serial_sequence('{table}', 'seq')::regclass), 0),
                      COALESCE((SELECT MAX(seq) FROM {table}), 0))"
        )
    };
    let sql = format!(
        "SELECT GREATEST(COALESCE(pg_sequence_last_value('record_seq_blocks') + 63, 0),
                         COALESCE((SELECT MAX(seq) FROM records), 0)),
                {}, {}, {}, {}",
        identity("endpoints"),
        identity("users"),
        identity("tokens"),
        identity("hubspot_log")
    );
    let row = tx.query_one(sql.as_str(), &[]).await.map_err(|err| failed("reading the counters", err))?;
    Ok(Sequences {
        records: row.get(0),
        endpoints: row.get(1),
        users: row.get(2),
        tokens: row.get(3),
        hubspot_log: row.get(4),
    })
}

fn read_cell(row: &Row, index: usize, table: &Table, column: &Column) -> Result<Cell, StoreError> {
    let read = match column.ty {
        ColumnType::Int64 => row.try_get::<_, Option<i64>>(index).map(|v| v.map(Cell::Int)),
        ColumnType::Int32 => row.try_get::<_, Option<i32>>(index).map(|v| v.map(|n| Cell::Int(n.into()))),
        ColumnType::Bool => row.try_get::<_, Option<bool>>(index).map(|v| v.map(Cell::Bool)),
        ColumnType::Text => row.try_get::<_, Option<String>>(index).map(|v| v.map(Cell::Text)),
        ColumnType::Bytes => row.try_get::<_, Option<Vec<u8>>>(index).map(|v| v.map(Cell::Bytes)),
    };
    read.map(|cell| cell.unwrap_or(Cell::Null))
        .map_err(|err| failed(&format!("reading {}.{}", table.name, column.name), err))
}

/// What the reading thread hands the import.
enum Read {
    Header(Header),
    Item(Item),
}

/// Reads a stream into the empty database at `url` (migrating it first if it needs it), all in one
/// transaction; answers what was imported.
pub async fn import_postgres(url: &str, input: Box<dyn BufRead + Send>) -> Result<TransferSummary, StoreError> {
    let (items, mut read) = mpsc::channel::<Result<Read, StoreError>>(CHUNKS_AHEAD);
    let reading = tokio::task::spawn_blocking(move || {
        let mut reader = match ImportReader::open(input) {
            Ok(reader) => reader,
            Err(err) => {
                let _ = items.blocking_send(Err(err));
                return;
            }
        };
        if items.blocking_send(Ok(Read::Header(reader.header().clone()))).is_err() {
            return; // The import stopped.
        }
        loop {
            let item = reader.next_item().transpose();
            let Some(item) = item else { return };
            let failed = item.is_err();
            if items.blocking_send(item.map(Read::Item)).is_err() || failed {
                return;
            }
        }
    });
    let imported = import_from(url, &mut read).await;
    // Whatever happened, the reading thread ends: it finds the channel closed at its next send.
    drop(read);
    let _ = reading.await;
    imported
}

async fn import_from(
    url: &str,
    read: &mut mpsc::Receiver<Result<Read, StoreError>>,
) -> Result<TransferSummary, StoreError> {
    // The header is checked before the database is touched.
    let header = match read.recv().await {
        Some(Ok(Read::Header(header))) => header,
        Some(Err(err)) => return Err(err),
        _ => return Err(StoreError::refused("the input ended before its header")),
    };
    let pool = pool(url, 1)?;
    let mut client = pool.get().await.map_err(unreachable)?;
    super::migrations::migrate(&mut client).await?;
    let tx = client.transaction().await.map_err(|err| failed("starting the import", err))?;
    let carried: Vec<&str> = tables_that_must_be_empty().chain(["meta"]).collect();
    tx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", carried.join(", ")))
        .await
        .map_err(|err| failed("locking the tables to import into", err))?;
    refuse_unless_empty(&tx).await?;
    loop {
        match read.recv().await {
            Some(Ok(Read::Item(Item::Rows(batch)))) => insert(&tx, batch.table, &batch.rows).await?,
            Some(Ok(Read::Item(Item::End { sequences, summary }))) => {
                // The search rows are not carried: made here from the imported contacts, by the
                // function new writes use.
                super::contacts::rebuild_search(&tx).await?;
                set_counters(&tx, &header.tag, &sequences).await?;
                tx.commit().await.map_err(|err| failed("committing the import", err))?;
                return Ok(summary);
            }
            // The transaction is rolled back when it is dropped: nothing of the import stays.
            Some(Err(err)) => return Err(err),
            Some(Ok(Read::Header(_))) | None => {
                return Err(StoreError::refused("the input ended before its end line"));
            }
        }
    }
}

async fn refuse_unless_empty(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let checks: Vec<String> =
        tables_that_must_be_empty().map(|table| format!("EXISTS (SELECT 1 FROM {table})")).collect();
    let row = tx
        .query_one(format!("SELECT {}", checks.join(", ")).as_str(), &[])
        .await
        .map_err(|err| failed("looking into the database", err))?;
    let holding: Vec<&str> =
        tables_that_must_be_empty().enumerate().filter(|(i, _)| row.get::<_, bool>(*i)).map(|(_, t)| t).collect();
    if holding.is_empty() {
        return Ok(());
    }
    Err(StoreError::refused(format!(
        "the database is not empty (it has {}); import into a new database (createdb) that no server has used",
        holding.join(", ")
    )))
}

/// One column of a batch, as the array PostgreSQL unnests.
enum ColumnValues {
    Int64(Vec<Option<i64>>),
    Int32(Vec<Option<i32>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl ColumnValues {
    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            ColumnValues::Int64(v) => v,
            ColumnValues::Int32(v) => v,
            ColumnValues::Bool(v) => v,
            ColumnValues::Text(v) => v,
            ColumnValues::Bytes(v) => v,
        }
    }
}

fn sql_array_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int64 => "bigint[]",
        ColumnType::Int32 => "integer[]",
        ColumnType::Bool => "boolean[]",
        ColumnType::Text => "text[]",
        ColumnType::Bytes => "bytea[]",
    }
}

/// A batch's cells column by column. The reader checked every value's type; a cell that still does
/// not fit its column is said, not written.
fn columns_of(table: &Table, rows: &[Vec<Cell>]) -> Result<Vec<ColumnValues>, StoreError> {
    let mismatch =
        |column: &Column| StoreError::refused(format!("{}.{} has a value of another type", table.name, column.name));
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let cells = rows.iter().map(|row| &row[i]);
            Ok(match column.ty {
                ColumnType::Int64 => ColumnValues::Int64(
                    cells
                        .map(|cell| match cell {
                            Cell::Null => Ok(None),
                            Cell::Int(n) => Ok(Some(*n)),
                            _ => Err(mismatch(column)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                ColumnType::Int32 => ColumnValues::Int32(
                    cells
                        .map(|cell| match cell {
                            Cell::Null => Ok(None),
                            Cell::Int(n) => i32::try_from(*n).map(Some).map_err(|_| mismatch(column)),
                            _ => Err(mismatch(column)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                ColumnType::Bool => ColumnValues::Bool(
                    cells
                        .map(|cell| match cell {
                            Cell::Null => Ok(None),
                            Cell::Bool(b) => Ok(Some(*b)),
                            _ => Err(mismatch(column)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                ColumnType::Text => ColumnValues::Text(
                    cells
                        .map(|cell| match cell {
                            Cell::Null => Ok(None),
                            Cell::Text(text) => Ok(Some(text.clone())),
                            _ => Err(mismatch(column)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                ColumnType::Bytes => ColumnValues::Bytes(
                    cells
                        .map(|cell| match cell {
                            Cell::Null => Ok(None),
                            Cell::Bytes(bytes) => Ok(Some(bytes.clone())),
                            _ => Err(mismatch(column)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
            })
        })
        .collect()
}

async fn insert(tx: &deadpool_postgres::Transaction<'_>, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
    let arrays: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| format!("${}::{}", i + 1, sql_array_type(column.ty)))
        .collect();
    let sql =
        format!("INSERT INTO {} ({}) SELECT * FROM UNNEST({})", table.name, table.column_list(), arrays.join(", "));
    let statement = tx.prepare_cached(&sql).await.map_err(|err| failed("preparing the import", err))?;
    let values = columns_of(table, rows)?;
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(ColumnValues::param).collect();
    tx.execute(&statement, &params).await.map_err(|err| failed(&format!("importing rows of {}", table.name), err))?;
    Ok(())
}

/// The tag, and every counter past what the source ever handed out: the record block sequence (the
/// next block starts 64 past the highest seq) and each identity column.
async fn set_counters(
    tx: &deadpool_postgres::Transaction<'_>,
    tag: &str,
    sequences: &Sequences,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('tag', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&tag],
    )
    .await
    .map_err(|err| failed("saving the database's tag", err))?;
    if sequences.records > 0 {
        tx.execute("SELECT setval('record_seq_blocks', $1)", &[&sequences.records])
            .await
            .map_err(|err| failed("moving the record counter", err))?;
    }
    let counters = [sequences.endpoints, sequences.users, sequences.tokens, sequences.hubspot_log];
    for (table, seq) in IDENTITY_TABLES.into_iter().zip(counters) {
        if seq > 0 {
            tx.execute(&format!("SELECT setval(pg_get_serial_sequence('{table}', 'seq'), $1)"), &[&seq])
                .await
                .map_err(|err| failed(&format!("moving the {table} counter"), err))?;
        }
    }
    Ok(())
}
