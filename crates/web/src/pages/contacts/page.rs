//! A contact's page (its fields, its leads, deals, tasks and enquiries, and its webhook timeline),
//! the new and edit forms, and deleting, which asks first.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::schema::{self, FieldType, PREFERENCES};
use estate_crm_domain::{FieldErrors, Record, RecordKind};
use estate_crm_store::{
    Actor, DeliveryStatus, ErrorKind, PageRequest, StoreError, SyncLogEntry, TimelineDelivery, TimelineEvent, User,
};
use maud::{Markup, html};
use serde_json::Value;

use super::form::{self, Mode, Values};
use super::{actor, display_name};
use crate::WebState;
use crate::pages::pipeline::{deals, money};
use crate::pages::{Flash, Section, csrf_field, error_page, flash, shell, status_badge, time_text, when};
use crate::session::{ChangeForm, Visitor};

/// How many events the timeline shows, newest first.
const TIMELINE_EVENTS: usize = 50;
/// How many of each kind of related record the page lists, newest first.
const RELATED: usize = 20;
/// How many HubSpot sync lines the page shows, newest first.
const SYNC_LINES: usize = 10;

/// `?partial=timeline` (the script refreshes the timeline alone) and `?saved=1` after a save.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    partial: Option<String>,
    saved: Option<String>,
}

fn section() -> Section {
    Section::Records(RecordKind::Contact)
}

async fn users(state: &WebState, visitor: &Visitor) -> Result<Vec<User>, Response> {
    state.store().list_users().await.map_err(|err| error_page::store(visitor, &err))
}

async fn contact(state: &WebState, visitor: &Visitor, id: &str) -> Result<Record, Response> {
    state
        .store()
        .get_record(&actor(visitor), RecordKind::Contact, id)
        .await
        .map_err(|err| error_page::store(visitor, &err))
}

// ---------------------------------------------------------------------------------------------
// The page

/// A field's value as the page shows it.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn facts(record: &Record, users: &[User]) -> Markup {
    let label = |name: &str| {
        let spaced = name.replace('_', " ");
        let mut chars = spaced.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
    };
    html! {
        dl.facts {
            @for field in schema::fields(RecordKind::Contact) {
                @if let Some(value) = record.get(field.name) {
                    @if field.ty == FieldType::Preferences {
                        @for sub in PREFERENCES {
                            @if let Some(part) = value.get(sub.name) {
                                dt { "Preferred " (label(sub.name).to_lowercase()) }
                                dd { (shown(part)) }
                            }
                        }
                    } @else if field.name == "assigned_agent_id" {
                        dt { "Assigned agent" }
                        dd { (users.iter().find(|u| Some(u.id.as_str()) == value.as_str()).map_or_else(|| shown(value), |u| u.name.clone())) }
                    } @else if field.name == "email" {
                        dt { "Email" }
                        dd { a href=(format!("mailto:{}", shown(value))) { (shown(value)) } }
                    } @else if field.name == "notes" {
                        dt { "Notes" }
                        dd.notes { (shown(value)) }
                    } @else {
                        dt { (label(field.name)) }
                        dd { (shown(value)) }
                    }
                }
            }
            dt { "Created" } dd { (when(record.created_at.timestamp_millis())) }
            dt { "Updated" } dd { (when(record.updated_at.timestamp_millis())) }
            dt { "Id" } dd.mono { (record.id) }
        }
    }
}

/// One related record's line: a link to it and a few words about it.
/// A deal's stage and amount as the board shows them: "Closed Won · USD 790,000".
fn deal_detail(deal: &Record) -> String {
    let stage = deal.get_str("stage").map(|stage| deals::stage_label(stage).to_owned());
    let amount = deal.get("amount").and_then(Value::as_f64).map(|amount| {
        let currency = deal.get_str("currency").unwrap_or("");
        format!("{currency} {}", money(amount)).trim_start().to_owned()
    });
    [stage, amount].into_iter().flatten().collect::<Vec<_>>().join(" · ")
}

fn related_line(record: &Record) -> Markup {
    let (href, title, detail) = match record.kind {
        RecordKind::Lead => (
            format!("/leads/{}", record.id),
            record.get_str("lead_type").unwrap_or("Lead").to_owned(),
            record.get_str("status").unwrap_or("").to_owned(),
        ),
        RecordKind::Deal => {
            (format!("/deals/{}", record.id), record.get_str("title").unwrap_or("Deal").to_owned(), deal_detail(record))
        }
        RecordKind::Task => (
            "/tasks".to_owned(),
            record.get_str("title").unwrap_or("Task").to_owned(),
            if record.get("completed").and_then(Value::as_bool) == Some(true) {
                "done".to_owned()
            } else {
                record.get_str("due_date").map(|d| format!("due {d}")).unwrap_or_default()
            },
        ),
        _ => (
            "/enquiries".to_owned(),
            record.get_str("source").unwrap_or("Enquiry").to_owned(),
            record.get_str("message").map(|m| m.chars().take(80).collect()).unwrap_or_default(),
        ),
    };
    html! {
        li data-record-id=(record.id) {
            a href=(href) { (title) }
            @if !detail.is_empty() { " " span.sub { (detail) } }
            " " span.sub { (time_text(record.created_at.timestamp_millis())) }
        }
    }
}

fn related(title: &str, records: &[Record], new_link: Option<(&str, String)>) -> Markup {
    html! {
        section.related aria-labelledby=(format!("h-{}", title.to_lowercase())) {
            div.heading-row {
                h3 id=(format!("h-{}", title.to_lowercase())) { (title) }
                @if let Some((text, href)) = new_link { a href=(href) { (text) } }
            }
            @if records.is_empty() {
                p.empty { "None." }
            } @else {
                ul.related-list { @for record in records { (related_line(record)) } }
                @if records.len() == RELATED { p.sub { "The newest " (RELATED) " are shown." } }
            }
        }
    }
}

/// Where a delivery goes, as the viewer may see it: the whole URL for admins, the host for agents
/// (a receiver's URL often carries its own secret).
fn endpoint_name(delivery: &TimelineDelivery, admin: bool) -> String {
    if let Some(description) = &delivery.endpoint_description
        && !description.trim().is_empty()
    {
        return description.clone();
    }
    if admin {
        return delivery.endpoint_url.clone();
    }
    url::Url::parse(&delivery.endpoint_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| "an endpoint".to_owned())
}

fn delivery_state(delivery: &TimelineDelivery) -> Markup {
    html! {
        @match delivery.status {
            DeliveryStatus::Succeeded => {
                (status_badge(DeliveryStatus::Succeeded)) " "
                @if let Some(code) = delivery.last_status_code { span.code { (code) } " " }
                @if let Some(at) = delivery.last_attempt_at { (when(at)) }
            }
            DeliveryStatus::Failed => {
                (status_badge(DeliveryStatus::Failed)) " "
                @if let Some(code) = delivery.last_status_code { span.code { (code) } " " }
                @if let Some(error) = &delivery.last_error { span.error-text { (error) } " " }
                "after " (delivery.attempts) @if delivery.attempts == 1 { " attempt" } @else { " attempts" }
            }
            DeliveryStatus::Pending => {
                (status_badge(DeliveryStatus::Pending)) " "
                @if delivery.attempts == 0 {
                    span.sub { "not tried yet" }
                } @else {
                    span.sub {
                        (delivery.attempts) @if delivery.attempts == 1 { " attempt" } @else { " attempts" }
                        @if let Some(code) = delivery.last_status_code { ", last answered " (code) }
                        @if let Some(at) = delivery.next_attempt_at { "; next at " (time_text(at)) }
                    }
                }
            }
        }
    }
}

/// An event on the contact's timeline: the contact's own, or one of its deals' (named and linked,
/// since "did the sale reach the accounts tool?" is asked from the client's side too).
struct ShownEvent {
    event: TimelineEvent,
    deal: Option<(String, String)>,
}

/// The contact's events and its listed deals' events, newest first, at most [`TIMELINE_EVENTS`].
async fn timeline_events(
    state: &WebState,
    actor: &Actor,
    id: &str,
    deals: &[Record],
) -> Result<Vec<ShownEvent>, StoreError> {
    let store = state.store();
    let own = store.record_timeline(actor, RecordKind::Contact, id, TIMELINE_EVENTS).await?;
    let mut shown: Vec<ShownEvent> = own.into_iter().map(|event| ShownEvent { event, deal: None }).collect();
    for deal in deals {
        let title = deal.get_str("title").unwrap_or(&deal.id).to_owned();
        match store.record_timeline(actor, RecordKind::Deal, &deal.id, TIMELINE_EVENTS).await {
            Ok(events) => shown.extend(
                events.into_iter().map(|event| ShownEvent { event, deal: Some((deal.id.clone(), title.clone())) }),
            ),
            // Deleted or handed to someone else since the list was read: its events are not ours to show.
            Err(err) if *err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    // Newest first; within one second the order each record's own list had is kept.
    shown.sort_by_key(|shown| std::cmp::Reverse(shown.event.at));
    shown.truncate(TIMELINE_EVENTS);
    Ok(shown)
}

/// The timeline's rows (also what `?partial=timeline` answers).
fn timeline_rows(events: &[ShownEvent], admin: bool) -> Markup {
    html! {
        @if events.is_empty() {
            tr.empty-row { td colspan="3" { "No event yet." } }
        }
        @for ShownEvent { event, deal } in events {
            @let rows = event.deliveries.len().max(1);
            @for (n, delivery) in event.deliveries.iter().enumerate() {
                tr data-event=(event.name.as_str()) data-status=(delivery.status.as_str()) data-delivery-id=(delivery.id) {
                    @if n == 0 {
                        th scope="rowgroup" rowspan=(rows) { (event_heading(event, deal.as_ref())) }
                    }
                    td.url {
                        @if admin {
                            a href=(format!("/settings/deliveries/{}", delivery.id)) { (endpoint_name(delivery, admin)) }
                        } @else {
                            (endpoint_name(delivery, admin))
                        }
                    }
                    td { (delivery_state(delivery)) }
                }
            }
            @if event.deliveries.is_empty() {
                tr data-event=(event.name.as_str()) {
                    th scope="rowgroup" { (event_heading(event, deal.as_ref())) }
                    td colspan="2" { span.sub { "No endpoint took this event." } }
                }
            }
        }
    }
}

/// An event's name, its deal when it is a deal's, and when it happened.
fn event_heading(event: &TimelineEvent, deal: Option<&(String, String)>) -> Markup {
    html! {
        span.event-name { (event.name.as_str()) } br;
        @if let Some((id, title)) = deal {
            span.sub { "Deal " a href=(format!("/deals/{id}")) { (title) } } br;
        }
        span.sub { (when(event.at.timestamp_millis())) }
    }
}

/// The HubSpot sync's lines for this contact, when the integration has sent it.
fn hubspot_lines(lines: &[SyncLogEntry]) -> Markup {
    html! {
        @if !lines.is_empty() {
            section aria-labelledby="h-hubspot" {
                h2 #h-hubspot { "HubSpot" }
                div.table-wrap {
                    table #hubspot-lines {
                        thead { tr {
                            th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "Answer" }
                            th scope="col" { "HubSpot id" }
                        } }
                        tbody {
                            @for line in lines {
                                tr {
                                    td { (when(line.at_ms)) }
                                    td { (line.entry.action) }
                                    td {
                                        @if let Some(code) = line.entry.status { (code) " " }
                                        @if let Some(error) = &line.entry.error { span.error-text { (error) } }
                                    }
                                    td.mono { (line.entry.hubspot_id.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn timeline(id: &str, events: &[ShownEvent], admin: bool) -> Markup {
    html! {
        section aria-labelledby="h-webhooks" {
            h2 #h-webhooks { "Webhooks" }
            p.lead {
                "Every event this contact and its deals fired, newest first, and where each endpoint's webhook stands."
                @if events.len() == TIMELINE_EVENTS { " The newest " (TIMELINE_EVENTS) " events are shown." }
            }
            div.table-wrap {
                table #timeline {
                    thead { tr { th scope="col" { "Event" } th scope="col" { "Endpoint" } th scope="col" { "Delivery" } } }
                    tbody data-live=(format!("/contacts/{id}?partial=timeline")) aria-live="polite" {
                        (timeline_rows(events, admin))
                    }
                }
            }
        }
    }
}

/// `GET /contacts/{id}`.
pub async fn view(
    State(state): State<WebState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let actor = actor(&visitor);
    let store = state.store();
    if query.partial.as_deref() == Some("timeline") {
        let events = match store.records_of_contact(&actor, RecordKind::Deal, &id, RELATED).await {
            Ok(deals) => timeline_events(&state, &actor, &id, &deals).await,
            Err(err) => Err(err),
        };
        return match events {
            Ok(events) => timeline_rows(&events, visitor.is_admin()).into_response(),
            Err(err) => error_page::store(&visitor, &err),
        };
    }
    let record = match contact(&state, &visitor, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    let (leads, deals, tasks, enquiries, users) = tokio::join!(
        store.records_of_contact(&actor, RecordKind::Lead, &id, RELATED),
        store.records_of_contact(&actor, RecordKind::Deal, &id, RELATED),
        store.records_of_contact(&actor, RecordKind::Task, &id, RELATED),
        store.records_of_contact(&actor, RecordKind::Enquiry, &id, RELATED),
        store.list_users(),
    );
    // The sync lines are extra: the page stands without them.
    let sync_lines = store
        .hubspot_log(Some(id.clone()), PageRequest { limit: SYNC_LINES, cursor: None })
        .await
        .map(|page| page.items)
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "reading a contact's HubSpot sync lines failed");
            Vec::new()
        });
    let (leads, deals, tasks, enquiries, users) = match (leads, deals, tasks, enquiries, users) {
        (Ok(l), Ok(d), Ok(t), Ok(e), Ok(u)) => (l, d, t, e, u),
        (Err(err), ..) | (_, Err(err), ..) | (_, _, Err(err), ..) | (.., Err(err), _) | (.., Err(err)) => {
            return error_page::store(&visitor, &err);
        }
    };
    let events = match timeline_events(&state, &actor, &id, &deals).await {
        Ok(events) => events,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let name = display_name(&record);
    let message = query.saved.as_deref().map(|_| Flash::Ok("Saved.".into()));
    let body = html! {
        p.crumbs { a href="/contacts" { "Contacts" } }
        div.heading-row {
            h1 { (name) }
            div.row-actions {
                a.button.primary href=(format!("/contacts/{id}/edit")) { "Edit" }
                a.button.danger href=(format!("/contacts/{id}/delete")) { "Delete" }
            }
        }
        (flash(message.as_ref()))
        div.contact-layout {
            section.card aria-labelledby="h-details" {
                h2 #h-details { "Details" }
                (facts(&record, &users))
            }
            div.related-all {
                (related("Leads", &leads, Some(("New lead", format!("/leads/new?contact_id={id}")))))
                (related("Deals", &deals, Some(("New deal", format!("/deals/new?contact_id={id}")))))
                (related("Tasks", &tasks, Some(("New task", format!("/tasks/new?contact_id={id}")))))
                (related("Enquiries", &enquiries, None))
            }
        }
        (timeline(&id, &events, visitor.is_admin()))
        (hubspot_lines(&sync_lines))
    };
    shell(&name, Some(&visitor), section(), body).into_response()
}

// ---------------------------------------------------------------------------------------------
// New and edit

struct FormView<'a> {
    /// The contact being edited; none for a new one.
    record: Option<&'a Record>,
    values: Values,
    errors: FieldErrors,
}

fn form_page(visitor: &Visitor, users: &[User], view: FormView<'_>) -> Markup {
    let (title, action, button) = match view.record {
        Some(record) => (format!("Edit {}", display_name(record)), format!("/contacts/{}/edit", record.id), "Save"),
        None => ("New contact".to_owned(), "/contacts".to_owned(), "Create contact"),
    };
    let unplaced = form::unplaced_errors(&view.errors);
    let body = html! {
        p.crumbs {
            a href="/contacts" { "Contacts" }
            @if let Some(record) = view.record { " › " a href=(format!("/contacts/{}", record.id)) { (display_name(record)) } }
        }
        h1 { (title) }
        @if !view.errors.is_empty() {
            div.flash.error role="alert" {
                "Not saved: correct the fields marked below."
                @for line in &unplaced { br; (line) }
            }
        }
        form.card.contact-form method="post" novalidate action=(action) {
            (csrf_field(visitor))
            (form::fields(&view.values, &view.errors, users))
            div.actions {
                button.primary type="submit" { (button) }
                a.button-link href=(view.record.map_or_else(|| "/contacts".to_owned(), |r| format!("/contacts/{}", r.id))) { "Cancel" }
            }
        }
    };
    shell(&title, Some(visitor), section(), body)
}

/// `GET /contacts/new`.
pub async fn new_page(State(state): State<WebState>, visitor: Visitor) -> Response {
    let users = match users(&state, &visitor).await {
        Ok(users) => users,
        Err(response) => return response,
    };
    let view = FormView { record: None, values: Values::default(), errors: FieldErrors::new() };
    form_page(&visitor, &users, view).into_response()
}

/// The field messages of a refused save, if it was refused for its fields.
fn field_errors(err: &estate_crm_store::StoreError) -> Option<FieldErrors> {
    match err.kind() {
        ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => Some(errors.clone()),
        _ => None,
    }
}

/// `POST /contacts`: the form as `POST /api/v1/contacts`.
pub async fn create(State(state): State<WebState>, ChangeForm { visitor, form }: ChangeForm) -> Response {
    let values = Values::from_form(&form);
    let input = values.to_json(Mode::Create);
    match state.store().create_record(&actor(&visitor), RecordKind::Contact, input).await {
        Ok(record) => Redirect::to(&format!("/contacts/{}", record.id)).into_response(),
        Err(err) => match field_errors(&err) {
            Some(errors) => refused(&state, &visitor, None, values, errors).await,
            None => error_page::store(&visitor, &err),
        },
    }
}

async fn refused(
    state: &WebState,
    visitor: &Visitor,
    record: Option<&Record>,
    values: Values,
    errors: FieldErrors,
) -> Response {
    let users = match users(state, visitor).await {
        Ok(users) => users,
        Err(response) => return response,
    };
    let view = FormView { record, values, errors };
    (StatusCode::UNPROCESSABLE_ENTITY, form_page(visitor, &users, view)).into_response()
}

/// `GET /contacts/{id}/edit`.
pub async fn edit_page(State(state): State<WebState>, visitor: Visitor, Path(id): Path<String>) -> Response {
    let record = match contact(&state, &visitor, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    let users = match users(&state, &visitor).await {
        Ok(users) => users,
        Err(response) => return response,
    };
    let view = FormView { record: Some(&record), values: Values::from_record(&record), errors: FieldErrors::new() };
    form_page(&visitor, &users, view).into_response()
}

/// `POST /contacts/{id}/edit`: the form as a PATCH naming every field; an emptied one is cleared.
pub async fn save(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    let record = match contact(&state, &visitor, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    let values = Values::from_form(&form);
    let patch = values.to_json(Mode::Edit);
    match state.store().update_record(&actor(&visitor), RecordKind::Contact, &id, patch).await {
        Ok(_) => Redirect::to(&format!("/contacts/{id}?saved=1")).into_response(),
        Err(err) => match field_errors(&err) {
            Some(errors) => refused(&state, &visitor, Some(&record), values, errors).await,
            None => error_page::store(&visitor, &err),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Delete

/// `GET /contacts/{id}/delete`: asks first.
pub async fn confirm_delete(State(state): State<WebState>, visitor: Visitor, Path(id): Path<String>) -> Response {
    let record = match contact(&state, &visitor, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    let name = display_name(&record);
    let body = html! {
        p.crumbs { a href="/contacts" { "Contacts" } " › " a href=(format!("/contacts/{id}")) { (name) } }
        h1 { "Delete " (name) "?" }
        form.danger method="post" action=(format!("/contacts/{id}/delete")) {
            (csrf_field(&visitor))
            p { "The contact is removed for good and " code { "contact.deleted" } " is sent to the endpoints that take it. "
                "Its leads, deals, tasks and enquiries stay." }
            div.actions {
                button.danger type="submit" { "Delete contact" }
                a.button-link href=(format!("/contacts/{id}")) { "Keep it" }
            }
        }
    };
    shell(&format!("Delete {name}"), Some(&visitor), section(), body).into_response()
}

/// `POST /contacts/{id}/delete`.
pub async fn delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, .. }: ChangeForm,
) -> Response {
    match state.store().delete_record(&actor(&visitor), RecordKind::Contact, &id).await {
        Ok(()) => Redirect::to("/contacts?notice=deleted&n=1").into_response(),
        Err(err) => error_page::store(&visitor, &err),
    }
}

/// The bulk delete's question, with the ticked contacts carried to the confirming post.
pub fn confirm_bulk_delete(visitor: &Visitor, ids: &[String], back: &str) -> Response {
    let count = if ids.len() == 1 { "1 contact".to_owned() } else { format!("{} contacts", ids.len()) };
    let back_href = if back.is_empty() { "/contacts".to_owned() } else { format!("/contacts?{back}") };
    let body = html! {
        p.crumbs { a href=(back_href) { "Contacts" } }
        h1 { "Delete " (count) "?" }
        form.danger method="post" action="/contacts/bulk" {
            (csrf_field(visitor))
            input type="hidden" name="action" value="delete";
            input type="hidden" name="confirm" value="yes";
            input type="hidden" name="back" value=(back);
            @for id in ids { input type="hidden" name="ids" value=(id); }
            p { "They are removed for good, all or none, and each sends " code { "contact.deleted" } "." }
            div.actions {
                button.danger type="submit" { "Delete " (count) }
                a.button-link href=(back_href) { "Keep them" }
            }
        }
    };
    shell(&format!("Delete {count}"), Some(visitor), section(), body).into_response()
}
