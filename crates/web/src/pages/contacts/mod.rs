//! Contacts: the table with search, filters and bulk actions (assign an agent, set a status,
//! delete), Export CSV, and a contact's page, forms and webhook timeline (`page.rs`).
//!
//! Every change goes through the store call the API uses (`create_record`, `update_record`,
//! `delete_record`, `bulk`), so a form fires exactly the webhooks the same API request fires.

mod export;
pub mod form;
mod page;

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::schema::CONTACT_STATUSES;
use estate_crm_domain::{FieldErrors, Record, RecordKind};
use estate_crm_store::{Actor, BulkOp, ContactQuery, ErrorKind, Page, PageRequest, User};
use maud::{Markup, html};
use serde_json::{Value, json};

pub use page::{confirm_delete, create, delete, edit_page, new_page, save, view};

use super::{Flash, Section, csrf_field, error_page, flash, shell, when};
use crate::WebState;
use crate::session::{ChangeForm, Visitor};

/// How many contacts a page of the table shows.
const PAGE: usize = 50;
/// The most rows one bulk action takes (a page holds [`PAGE`]).
const MAX_BULK: usize = 500;

/// The table's query string: search, filters, page, and a notice after a change.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    agent: String,
    cursor: Option<String>,
    notice: Option<String>,
    n: Option<usize>,
}

fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl ListQuery {
    /// What the store is asked for.
    fn contact_query(&self) -> ContactQuery {
        ContactQuery {
            search: given(&self.q),
            status: given(&self.status),
            lifecycle_stage: given(&self.stage),
            tag: given(&self.tag),
            agent: given(&self.agent),
        }
    }

    /// The search and filters as a query string (no page, no notice): the export link, the pager
    /// and the way back after a bulk action keep the same list.
    fn filters(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("q", &self.q),
            ("status", &self.status),
            ("stage", &self.stage),
            ("tag", &self.tag),
            ("agent", &self.agent),
        ] {
            if !value.trim().is_empty() {
                out.append_pair(name, value.trim());
            }
        }
        out.finish()
    }

    fn is_filtered(&self) -> bool {
        !self.filters().is_empty()
    }

    fn notice(&self) -> Option<Flash> {
        let n = self.n.unwrap_or(0);
        let contacts = if n == 1 { "1 contact".to_owned() } else { format!("{n} contacts") };
        match self.notice.as_deref()? {
            "updated" => Some(Flash::Ok(format!("Updated {contacts}."))),
            "deleted" => Some(Flash::Ok(format!("Deleted {contacts}."))),
            "none" => Some(Flash::Error("Nothing was changed: tick the contacts to change first.".into())),
            _ => None,
        }
    }
}

/// `/contacts` with a query string, or without one.
fn list_href(filters: &str, extra: &str) -> String {
    let joined = [filters, extra].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("&");
    if joined.is_empty() { "/contacts".to_owned() } else { format!("/contacts?{joined}") }
}

/// Who is acting, for the store's visibility rules.
pub fn actor(visitor: &Visitor) -> Actor {
    Actor { user_id: visitor.user.id.clone(), role: visitor.user.role }
}

/// A contact's name as a person reads it; its email, or its id, when it has none.
pub fn display_name(record: &Record) -> String {
    let name = ["prefix", "first_name", "last_name"]
        .iter()
        .filter_map(|field| record.get_str(field))
        .collect::<Vec<_>>()
        .join(" ");
    if !name.trim().is_empty() {
        return name;
    }
    record.get_str("email").map_or_else(|| record.id.clone(), str::to_owned)
}

fn text(record: &Record, field: &str) -> String {
    match record.get(field) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        _ => String::new(),
    }
}

/// What the list shows with its page: users for the agent filter and names.
struct ListView<'a> {
    query: &'a ListQuery,
    page: &'a Page<Record>,
    users: &'a [User],
    message: Option<Flash>,
    /// Per-row messages of a refused bulk action.
    row_errors: Vec<String>,
}

fn filters_form(query: &ListQuery, users: &[User]) -> Markup {
    html! {
        form.filters role="search" method="get" action="/contacts" {
            div.field.search {
                label for="f-q" { "Search" }
                input #f-q type="search" name="q" value=(query.q) placeholder="Name, email or phone";
            }
            div.field {
                label for="f-filter-status" { "Status" }
                select #f-filter-status name="status" {
                    option value="" selected[query.status.is_empty()] { "Any" }
                    @for status in CONTACT_STATUSES {
                        option value=(status) selected[query.status == *status] { (status) }
                    }
                }
            }
            div.field {
                label for="f-filter-stage" { "Lifecycle stage" }
                input #f-filter-stage type="text" name="stage" value=(query.stage);
            }
            div.field {
                label for="f-filter-tag" { "Tag" }
                input #f-filter-tag type="text" name="tag" value=(query.tag);
            }
            div.field {
                label for="f-filter-agent" { "Agent" }
                (form::agent_select("f-filter-agent", "agent", &query.agent, users, "Any", &FieldErrors::new()))
            }
            div.actions {
                button.primary type="submit" { "Search" }
                @if query.is_filtered() { a.button-link href="/contacts" { "Clear" } }
            }
        }
    }
}

fn bulk_bar(users: &[User]) -> Markup {
    html! {
        fieldset.bulk {
            legend { "With the ticked contacts" }
            div.bulk-row {
                div.field {
                    label for="f-bulk-action" { "Action" }
                    select #f-bulk-action name="action" {
                        option value="assign" { "Assign to agent" }
                        option value="status" { "Set status" }
                        option value="delete" { "Delete" }
                    }
                }
                div.field {
                    label for="f-bulk-agent" { "Agent" }
                    (form::agent_select("f-bulk-agent", "agent", "", users, "Nobody", &FieldErrors::new()))
                }
                div.field {
                    label for="f-bulk-status" { "Status" }
                    select #f-bulk-status name="status" {
                        @for status in CONTACT_STATUSES { option value=(status) { (status) } }
                        option value="" { "None" }
                    }
                }
                div.actions { button.secondary type="submit" { "Apply" } }
            }
        }
    }
}

fn table(view: &ListView<'_>, names: &HashMap<&str, &str>) -> Markup {
    html! {
        div.table-wrap {
            table #contacts {
                caption.visually-hidden { "Contacts, newest first" }
                thead { tr {
                    th scope="col" {
                        input #f-select-all type="checkbox" hidden data-select-all="ids" aria-label="Select every contact on this page";
                    }
                    th scope="col" { "Name" }
                    th scope="col" { "Email" }
                    th scope="col" { "Phone" }
                    th scope="col" { "Status" }
                    th scope="col" { "Stage" }
                    th scope="col" { "Tags" }
                    th scope="col" { "Agent" }
                    th scope="col" { "Created" }
                } }
                tbody {
                    @for record in &view.page.items {
                        @let name = display_name(record);
                        @let phone = record.get_str("phone").or(record.get_str("mobile")).unwrap_or("");
                        @let agent = record.assigned_agent_id().unwrap_or("");
                        tr data-record-id=(record.id) {
                            td {
                                input id=(format!("f-pick-{}", record.id)) type="checkbox" name="ids" value=(record.id)
                                    aria-label=(format!("Select {name}"));
                            }
                            td { a href=(format!("/contacts/{}", record.id)) { (name) } }
                            td.email { (text(record, "email")) }
                            td { (phone) }
                            td {
                                @if let Some(status) = record.get_str("status") {
                                    span class=(format!("badge contact-{}", status.to_lowercase())) { (status) }
                                }
                            }
                            td { (text(record, "lifecycle_stage")) }
                            td { (text(record, "tags")) }
                            td { (names.get(agent).copied().unwrap_or(agent)) }
                            td { (when(record.created_at.timestamp_millis())) }
                        }
                    }
                }
            }
        }
    }
}

fn list_page(visitor: &Visitor, view: ListView<'_>) -> Markup {
    let filters = view.query.filters();
    let names: HashMap<&str, &str> = view.users.iter().map(|u| (u.id.as_str(), u.name.as_str())).collect();
    let body = html! {
        div.heading-row {
            h1 { "Contacts" }
            div.row-actions {
                a.button.primary href="/contacts/new" { "New contact" }
                a.button.secondary href="/contacts/import" { "Import CSV" }
                a.button.secondary href=(format!("/contacts/export{}", if filters.is_empty() { String::new() } else { format!("?{filters}") }))
                    download { "Export CSV" }
            }
        }
        (flash(view.message.as_ref()))
        @if !view.row_errors.is_empty() {
            ul.row-errors aria-label="Why each row was refused" {
                @for line in &view.row_errors { li { (line) } }
            }
        }
        (filters_form(view.query, view.users))
        @if view.page.items.is_empty() {
            p.empty {
                @if view.query.is_filtered() { "No contact matches. " a href="/contacts" { "Show every contact" } "." }
                @else { "No contacts yet. " a href="/contacts/new" { "Add the first" } " or " a href="/contacts/import" { "import a CSV" } "." }
            }
        } @else {
            form #bulk method="post" action="/contacts/bulk" {
                (csrf_field(visitor))
                input type="hidden" name="back" value=(filters);
                (bulk_bar(view.users))
                (table(&view, &names))
            }
        }
        nav.pager aria-label="Pages" {
            @if view.query.cursor.is_some() {
                a href=(list_href(&filters, "")) { "Newest" }
            }
            @if let Some(cursor) = &view.page.next_cursor {
                @let next: String = url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
                a href=(list_href(&filters, &format!("cursor={next}"))) { "Older" }
            }
        }
    };
    shell("Contacts", Some(visitor), Section::Records(RecordKind::Contact), body)
}

/// Renders the table for `query`, with a message and a status.
async fn render_list(
    state: &WebState,
    visitor: &Visitor,
    query: &ListQuery,
    status: StatusCode,
    message: Option<Flash>,
    row_errors: Vec<String>,
) -> Response {
    let request = PageRequest { limit: PAGE, cursor: query.cursor.clone() };
    let actor = actor(visitor);
    let (page, users) =
        tokio::join!(state.store().search_contacts(&actor, query.contact_query(), request), state.store().list_users());
    let (page, users) = match (page, users) {
        (Ok(page), Ok(users)) => (page, users),
        (Err(err), _) | (_, Err(err)) => return error_page::store(visitor, &err),
    };
    let message = message.or_else(|| query.notice());
    let view = ListView { query, page: &page, users: &users, message, row_errors };
    (status, list_page(visitor, view)).into_response()
}

/// `GET /contacts`.
pub async fn list(State(state): State<WebState>, visitor: Visitor, Query(query): Query<ListQuery>) -> Response {
    render_list(&state, &visitor, &query, StatusCode::OK, None, Vec::new()).await
}

/// `GET /contacts/export`: the same query string as the table.
pub async fn export(State(state): State<WebState>, visitor: Visitor, Query(query): Query<ListQuery>) -> Response {
    export::response(state.store().clone(), actor(&visitor), query.contact_query())
}

/// The list a bulk form came from, from its `back` field (re-read, so only filters come through).
fn back_query(form: &crate::form::FormFields) -> ListQuery {
    serde_urlencoded_lite(form.get("back"))
}

fn serde_urlencoded_lite(query: &str) -> ListQuery {
    let mut list = ListQuery::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "q" => list.q = value,
            "status" => list.status = value,
            "stage" => list.stage = value,
            "tag" => list.tag = value,
            "agent" => list.agent = value,
            _ => {}
        }
    }
    list
}

/// What a bulk form asks for.
enum BulkAction {
    Assign(Option<String>),
    Status(Option<String>),
    Delete,
}

impl BulkAction {
    fn from_form(form: &crate::form::FormFields) -> Option<BulkAction> {
        match form.get("action") {
            "assign" => Some(BulkAction::Assign(given(form.get("agent")))),
            "status" => Some(BulkAction::Status(given(form.get("status")))),
            "delete" => Some(BulkAction::Delete),
            _ => None,
        }
    }

    /// The bulk operation, all rows at once: one webhook per row, all or nothing.
    fn operation(&self, ids: &[String]) -> BulkOp {
        let patch = |field: &str, value: &Option<String>| -> BulkOp {
            BulkOp::Update(ids.iter().map(|id| json!({ "id": id, field: value })).collect())
        };
        match self {
            BulkAction::Assign(agent) => patch("assigned_agent_id", agent),
            BulkAction::Status(status) => patch("status", status),
            BulkAction::Delete => BulkOp::Delete(ids.to_vec()),
        }
    }
}

/// The bulk answer's messages (`update[3].status`), each said of its row's contact.
fn row_messages(errors: &FieldErrors, ids: &[String]) -> Vec<String> {
    errors
        .fields()
        .iter()
        .map(|(key, message)| {
            let (row, field) = key.split_once('.').unwrap_or((key.as_str(), ""));
            let index = row.split_once('[').and_then(|(_, rest)| rest.trim_end_matches(']').parse::<usize>().ok());
            let which = index.and_then(|i| ids.get(i)).map_or_else(|| row.to_owned(), |id| format!("Contact {id}"));
            match field {
                "" => format!("{which}: {message}"),
                "id" => format!("{which}: no such contact now (deleted meanwhile, or not yours)"),
                field => format!("{which}: {field} {message}"),
            }
        })
        .collect()
}

/// `POST /contacts/bulk`: assign, set status, or (after a confirmation) delete the ticked rows.
pub async fn bulk(State(state): State<WebState>, ChangeForm { visitor, form }: ChangeForm) -> Response {
    let back = back_query(&form);
    let ids: Vec<String> = form.all("ids").into_iter().map(str::to_owned).collect();
    if ids.is_empty() {
        return Redirect::to(&list_href(&back.filters(), "notice=none")).into_response();
    }
    if ids.len() > MAX_BULK {
        let message = format!("At most {MAX_BULK} contacts can be changed at once.");
        return render_list(
            &state,
            &visitor,
            &back,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(Flash::Error(message)),
            vec![],
        )
        .await;
    }
    let Some(action) = BulkAction::from_form(&form) else {
        let message = "Choose what to do with the ticked contacts.".to_owned();
        return render_list(
            &state,
            &visitor,
            &back,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(Flash::Error(message)),
            vec![],
        )
        .await;
    };
    if matches!(action, BulkAction::Delete) && form.get("confirm") != "yes" {
        return page::confirm_bulk_delete(&visitor, &ids, &back.filters());
    }
    match state.store().bulk(&actor(&visitor), RecordKind::Contact, action.operation(&ids)).await {
        Ok(done) => {
            let notice = if matches!(action, BulkAction::Delete) { "deleted" } else { "updated" };
            Redirect::to(&list_href(&back.filters(), &format!("notice={notice}&n={}", done.len()))).into_response()
        }
        Err(err) => match err.kind() {
            ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => {
                let message = Flash::Error("Nothing was changed: every row must pass, and these did not.".into());
                let rows = row_messages(errors, &ids);
                render_list(&state, &visitor, &back, StatusCode::UNPROCESSABLE_ENTITY, Some(message), rows).await
            }
            _ => error_page::store(&visitor, &err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_survive_a_round_trip_and_nothing_else_does() {
        let query = serde_urlencoded_lite("q=ada+l&status=VIP&cursor=c1&notice=updated&stage=&tag=a%26b");
        assert_eq!(query.filters(), "q=ada+l&status=VIP&tag=a%26b");
        assert_eq!(list_href("", ""), "/contacts");
        assert_eq!(list_href("q=x", "n=1"), "/contacts?q=x&n=1");
    }

    #[test]
    fn bulk_messages_name_their_contact() {
        let mut errors = FieldErrors::new();
        errors.add("update[1].status", "must be one of Active, Inactive");
        errors.add("delete[0].id", "no such record");
        let ids = vec!["con_a".to_owned(), "con_b".to_owned()];
        assert_eq!(
            row_messages(&errors, &ids),
            [
                "Contact con_a: no such contact now (deleted meanwhile, or not yours)",
                "Contact con_b: status must be one of Active, Inactive"
            ]
        );
    }
}
