//! `/enquiries`: the inbox, newest first, each linked to its contact; **Make lead** turns one into
//! a lead through `create_record`, which fires `lead.created` as the API would. The lead carries
//! the enquiry's contact, message and property, and `lead_source` "Enquiry ID", by which the inbox
//! knows the enquiry was dealt with (enquiries themselves are never changed: the API only creates
//! and reads them).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::{Record, RecordKind};
use estate_crm_store::pipeline::lead_source_for_enquiry;
use estate_crm_store::{PageRequest, StoreError};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::{PAGE, actor, escape, snippet};
use crate::WebState;
use crate::pages::{Section, csrf_field, error_page, shell, when};
use crate::session::{ChangeForm, Visitor};

/// `?cursor=` for older enquiries.
#[derive(Debug, Default, serde::Deserialize)]
pub struct InboxQuery {
    cursor: Option<String>,
}

/// Which of these enquiries became leads, and which lead.
pub async fn leads_made(state: &WebState, enquiries: &[Record]) -> Result<HashMap<String, String>, StoreError> {
    if enquiries.is_empty() {
        return Ok(HashMap::new());
    }
    state.store().leads_from_enquiries(enquiries.iter().map(|e| e.id.clone()).collect()).await
}

/// An enquiry's sender as the inbox names them.
fn sender(enquiry: &Record) -> String {
    enquiry
        .get_str("name")
        .or_else(|| enquiry.get_str("email"))
        .or_else(|| enquiry.get_str("phone"))
        .unwrap_or("Someone")
        .to_owned()
}

/// One enquiry's row: who, what, where from, when, and the lead or **Make lead**.
pub fn enquiry_row(visitor: &Visitor, enquiry: &Record, lead: Option<&String>) -> Markup {
    html! {
        tr data-record-id=(enquiry.id) data-done=[lead.map(|_| "true")] {
            td {
                @match enquiry.get_str("contact_id") {
                    Some(contact) => a href=(format!("/contacts/{contact}")) { (sender(enquiry)) },
                    None => (sender(enquiry)),
                }
                @if let Some(email) = enquiry.get_str("email") { div.sub { (email) } }
            }
            td { (enquiry.get_str("message").map(snippet).unwrap_or_default()) }
            td { (enquiry.get_str("source").unwrap_or("—")) }
            td { (when(enquiry.created_at.timestamp_millis())) }
            td {
                @match lead {
                    Some(lead) => { span.badge.state-active { "Lead made" } " " a href=(format!("/leads/{lead}")) { "Open lead" } }
                    None => form.inline method="post" action=(format!("/enquiries/{}/make-lead", enquiry.id)) {
                        (csrf_field(visitor))
                        button.secondary.small type="submit" aria-label=(format!("Make lead from {}’s enquiry", sender(enquiry))) { "Make lead" }
                    },
                }
            }
        }
    }
}

/// The inbox table's head.
pub fn inbox_head() -> Markup {
    html! {
        thead { tr {
            th scope="col" { "From" } th scope="col" { "Message" } th scope="col" { "Source" }
            th scope="col" { "Received" } th scope="col" { "Lead" }
        } }
    }
}

/// `GET /enquiries`.
pub async fn list(State(state): State<WebState>, visitor: Visitor, Query(query): Query<InboxQuery>) -> Response {
    let page = PageRequest { limit: PAGE, cursor: query.cursor.clone() };
    let enquiries = match state.store().list_records(&actor(&visitor), RecordKind::Enquiry, page).await {
        Ok(enquiries) => enquiries,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let leads = match leads_made(&state, &enquiries.items).await {
        Ok(leads) => leads,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let body = html! {
        h1 { "Enquiries" }
        p.lead { "Newest first. Make lead turns an enquiry into a lead for its contact; the enquiry then shows its lead." }
        @if enquiries.items.is_empty() {
            p.empty { "No enquiry yet. Enquiries arrive through the API (POST /api/v1/enquiries), from your website's forms." }
        } @else {
            div.table-wrap {
                table #enquiries {
                    caption.visually-hidden { "Enquiries, newest first" }
                    (inbox_head())
                    tbody { @for enquiry in &enquiries.items { (enquiry_row(&visitor, enquiry, leads.get(&enquiry.id))) } }
                }
            }
        }
        @if let Some(cursor) = &enquiries.next_cursor {
            p.pager { a href=(format!("/enquiries?cursor={}", escape(cursor))) { "Older enquiries" } }
        }
    };
    shell("Enquiries", Some(&visitor), Section::Records(RecordKind::Enquiry), body).into_response()
}

/// `POST /enquiries/{id}/make-lead`: the lead, once; a second press opens the lead already made.
pub async fn make_lead(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, .. }: ChangeForm,
) -> Response {
    let actor = actor(&visitor);
    let enquiry = match state.store().get_record(&actor, RecordKind::Enquiry, &id).await {
        Ok(enquiry) => enquiry,
        Err(err) => return error_page::store(&visitor, &err),
    };
    match leads_made(&state, std::slice::from_ref(&enquiry)).await {
        Ok(made) if made.contains_key(&id) => return Redirect::to(&format!("/leads/{}", made[&id])).into_response(),
        Ok(_) => {}
        Err(err) => return error_page::store(&visitor, &err),
    }
    match state.store().create_record(&actor, RecordKind::Lead, lead_from(&enquiry)).await {
        Ok(lead) => Redirect::to(&format!("/leads/{}?saved=created", lead.id)).into_response(),
        Err(err) => error_page::store(&visitor, &err),
    }
}

/// The lead an enquiry becomes.
fn lead_from(enquiry: &Record) -> Value {
    let mut lead = json!({ "lead_source": lead_source_for_enquiry(&enquiry.id), "status": "New" });
    for (from, to) in [("contact_id", "contact_id"), ("message", "message"), ("property_id", "property_id")] {
        if let Some(value) = enquiry.get(from).filter(|v| !v.is_null()) {
            lead[to] = value.clone();
        }
    }
    lead
}
