//! Read-only lists of contacts, leads, enquiries, deals and tasks: one page for every kind, its
//! columns taken from the kind's schema, the records from the same store call as the API's list
//! with the user's role (an agent sees only the records they created or are assigned).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use estate_crm_domain::RecordKind;
use estate_crm_domain::schema::{self, FieldType};
use estate_crm_store::{Actor, PageRequest};
use maud::html;
use serde_json::Value;

use super::{Section, error_page, shell, when};
use crate::WebState;
use crate::session::Visitor;

/// How many records a page shows.
const PAGE: usize = 50;
/// How many of a kind's fields the table shows.
const COLUMNS: usize = 6;
/// Longer values are cut in the table.
const CELL_CHARS: usize = 80;

/// `?cursor=` for older records.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
}

/// The page's title for a kind.
pub fn title(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Contact => "Contacts",
        RecordKind::Lead => "Leads",
        RecordKind::Enquiry => "Enquiries",
        RecordKind::Deal => "Deals",
        RecordKind::Task => "Tasks",
    }
}

/// The fields a table shows: the first few that read well in a cell.
fn columns(kind: RecordKind) -> Vec<&'static str> {
    schema::fields(kind)
        .iter()
        .filter(|field| !matches!(field.ty, FieldType::Preferences | FieldType::Text(10_000)))
        .take(COLUMNS)
        .map(|field| field.name)
        .collect()
}

/// A value as a cell's text.
fn cell(value: Option<&Value>) -> String {
    let text = match value {
        None | Some(Value::Null) => return "—".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect::<Vec<_>>().join(", ")
        }
        Some(other) => other.to_string(),
    };
    if text.chars().count() > CELL_CHARS {
        format!("{}…", text.chars().take(CELL_CHARS).collect::<String>())
    } else {
        text
    }
}

fn label(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut chars = spaced.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// `GET /contacts`, `/leads`, `/enquiries`, `/deals`, `/tasks`.
pub async fn list(kind: RecordKind, state: WebState, visitor: Visitor, query: ListQuery) -> Response {
    let actor = Actor { user_id: visitor.user.id.clone(), role: visitor.user.role };
    let page =
        match state.store().list_records(&actor, kind, PageRequest { limit: PAGE, cursor: query.cursor.clone() }).await
        {
            Ok(page) => page,
            Err(err) => return error_page::store(&visitor, &err),
        };
    let columns = columns(kind);
    let title = title(kind);
    let body = html! {
        h1 { (title) }
        p.lead { "Newest first. Changes come through the API for now." }
        @if page.items.is_empty() {
            p.empty { "Nothing here yet." }
        } @else {
            div.table-wrap {
                table #records {
                    thead { tr {
                        @for name in &columns { th scope="col" { (label(name)) } }
                        th scope="col" { "Created" }
                    } }
                    tbody {
                        @for record in &page.items {
                            tr data-record-id=(record.id) {
                                @for name in &columns { td { (cell(record.get(name))) } }
                                td { (when(record.created_at.timestamp_millis())) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = &page.next_cursor {
            @let next: String = url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
            p.pager { a href=(format!("/{}?cursor={next}", kind.plural())) { "Older" } }
        }
    };
    shell(title, Some(&visitor), Section::Records(kind), body).into_response()
}

/// The handler of one kind's list.
macro_rules! list_of {
    ($name:ident, $kind:expr) => {
        /// The list of this kind.
        pub async fn $name(
            State(state): State<WebState>,
            visitor: Visitor,
            Query(query): Query<ListQuery>,
        ) -> Response {
            list($kind, state, visitor, query).await
        }
    };
}

list_of!(leads, RecordKind::Lead);
list_of!(enquiries, RecordKind::Enquiry);
list_of!(deals, RecordKind::Deal);
list_of!(tasks, RecordKind::Task);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_short_text() {
        assert_eq!(cell(None), "—");
        assert_eq!(cell(Some(&serde_json::json!(["a", "b"]))), "a, b");
        assert_eq!(cell(Some(&serde_json::json!(12.5))), "12.5");
        assert_eq!(cell(Some(&Value::String("x".repeat(100)))).chars().count(), CELL_CHARS + 1);
        assert_eq!(label("first_name"), "First name");
        assert!(columns(RecordKind::Contact).contains(&"first_name"));
    }
}
