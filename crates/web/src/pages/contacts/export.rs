//! Export CSV: every contact of the filtered list (not only the page shown), streamed a thousand
//! rows at a time, in the format import reads back (docs/WEB.md, "CSV format").

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use estate_crm_domain::schema::{self, Access, FieldType, PREFERENCES};
use estate_crm_domain::{Record, RecordKind, format_timestamp};
use estate_crm_store::{Actor, ContactQuery, PageRequest, Store};
use serde_json::Value;
use tokio::sync::mpsc;

/// Rows read from the store per step; each step becomes one chunk of the response.
const ROWS_PER_CHUNK: usize = 1000;
/// Chunks made ahead of a slow client (a bound on the memory one download holds).
const CHUNKS_AHEAD: usize = 2;

/// A column of the file: a field of the record, one of its preferences, or a common field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Id,
    Field(&'static str),
    Preference(&'static str),
    CreatedAt,
    UpdatedAt,
}

/// The columns in the contract's order.
fn columns() -> Vec<Column> {
    let mut columns = vec![Column::Id];
    for field in schema::fields(RecordKind::Contact).iter().filter(|f| f.access == Access::Writable) {
        if field.ty == FieldType::Preferences {
            columns.extend(PREFERENCES.iter().map(|sub| Column::Preference(sub.name)));
        } else {
            columns.push(Column::Field(field.name));
        }
    }
    columns.extend([Column::CreatedAt, Column::UpdatedAt]);
    columns
}

fn header_name(column: Column) -> String {
    match column {
        Column::Id => "id".to_owned(),
        Column::Field(name) => name.to_owned(),
        Column::Preference(name) => format!("preferences.{name}"),
        Column::CreatedAt => "created_at".to_owned(),
        Column::UpdatedAt => "updated_at".to_owned(),
    }
}

/// A value as its cell: strings as they are, numbers as JSON writes them, lists joined with `; `.
fn cell_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items.iter().map(|item| cell_text(Some(item))).collect::<Vec<_>>().join("; "),
        Some(other) => other.to_string(),
    }
}

/// A cell a spreadsheet would run as a formula gets a leading `'` (import strips exactly one). So
/// does a value that already starts with `'`s before such a character (`'=x`), or import would take
/// its own `'` for the guard and the round trip would lose it.
fn guarded(text: String) -> String {
    let after_quotes = text.trim_start_matches('\'');
    if after_quotes.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text }
}

fn cell(record: &Record, column: Column) -> String {
    let text = match column {
        Column::Id => record.id.clone(),
        Column::Field(name) => cell_text(record.get(name)),
        Column::Preference(name) => cell_text(record.get("preferences").and_then(|p| p.get(name))),
        Column::CreatedAt => format_timestamp(record.created_at),
        Column::UpdatedAt => format_timestamp(record.updated_at),
    };
    guarded(text)
}

/// The header row, or a run of rows, as CSV bytes.
fn write_rows(header: bool, records: &[Record]) -> Result<Bytes, csv::Error> {
    let columns = columns();
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    if header {
        writer.write_record(columns.iter().map(|c| header_name(*c)))?;
    }
    for record in records {
        writer.write_record(columns.iter().map(|c| cell(record, *c)))?;
    }
    writer.into_inner().map(Bytes::from).map_err(|err| csv::Error::from(err.into_error()))
}

/// The response body: chunks from the task that reads the store.
struct Chunks(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// `GET /contacts/export?...`: the list's filters, every matching row the actor may see.
pub fn response(store: std::sync::Arc<dyn Store>, actor: Actor, query: ContactQuery) -> Response {
    let (chunks, receiver) = mpsc::channel(CHUNKS_AHEAD);
    tokio::spawn(async move {
        if let Err(err) = produce(store.as_ref(), &actor, query, &chunks).await {
            // The status line is long gone: ending the body with an error makes the client see a
            // failed download rather than a file that looks whole.
            tracing::warn!(error = %err, "exporting contacts failed");
            let _ = chunks.send(Err(std::io::Error::other(err))).await;
        }
    });
    let filename = format!("contacts-{}.csv", chrono::Utc::now().format("%Y-%m-%d"));
    let mut response = Body::from_stream(Chunks(receiver)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// Reads the list page by page and sends each page's rows; stops when the client goes away.
async fn produce(
    store: &dyn Store,
    actor: &Actor,
    query: ContactQuery,
    chunks: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), String> {
    let header = write_rows(true, &[]).map_err(|e| e.to_string())?;
    if chunks.send(Ok(header)).await.is_err() {
        return Ok(());
    }
    let mut cursor = None;
    loop {
        let page = store
            .search_contacts(actor, query.clone(), PageRequest { limit: ROWS_PER_CHUNK, cursor })
            .await
            .map_err(|e| e.to_string())?;
        let rows = write_rows(false, &page.items).map_err(|e| e.to_string())?;
        if chunks.send(Ok(rows)).await.is_err() {
            return Ok(());
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::import::csv_file::unguard;

    #[test]
    fn every_guarded_value_comes_back_exactly_through_imports_unguard() {
        for value in ["=SUM(A1)", "+44 20", "-0", "@home", "\tx", "'=x", "''+y", "'quoted'", "x=y", "", "'"] {
            assert_eq!(unguard(&guarded(value.to_owned())), value, "{value:?}");
        }
        assert_eq!(guarded("'=x".to_owned()), "''=x", "a value's own quote before a formula is guarded too");
    }

    #[test]
    fn the_header_follows_the_contract() {
        let header = String::from_utf8(write_rows(true, &[]).unwrap().to_vec()).unwrap();
        assert!(header.starts_with("id,first_name,last_name,prefix,email,"), "{header}");
        assert!(header.contains(
            ",notes,preferences.min_price,preferences.max_price,preferences.beds,preferences.baths,\
             preferences.locations,preferences.property_type,created_at,updated_at\r\n"
        ));
    }

    #[test]
    fn cells_are_quoted_guarded_and_joined() {
        let record = Record {
            kind: RecordKind::Contact,
            id: "con_abcd1".into(),
            created_by: "usr_abcd1".into(),
            created_at: chrono::DateTime::from_timestamp(1_764_633_600, 0).unwrap(),
            updated_at: chrono::DateTime::from_timestamp(1_764_633_601, 0).unwrap(),
            fields: json!({
                "first_name": "=HYPERLINK(\"x\")", "last_name": "O'Neil, Jr", "phone": "+44 20 7946 0000",
                "tags": ["vip", "buyer"], "preferences": {"min_price": 250000, "baths": 1.5, "locations": ["Leeds"]},
            })
            .as_object()
            .unwrap()
            .clone(),
        };
        let row = String::from_utf8(write_rows(false, &[record]).unwrap().to_vec()).unwrap();
        assert!(row.starts_with("con_abcd1,\"'=HYPERLINK(\"\"x\"\")\",\"O'Neil, Jr\",,,'+44 20 7946 0000,"), "{row}");
        assert!(
            row.contains(",vip; buyer,,250000,,,1.5,Leeds,,2025-12-02T00:00:00Z,2025-12-02T00:00:01Z\r\n"),
            "{row}"
        );
    }
}
