//! `/leads`: the list with filters (status, type, agent), a lead's page and the new-lead form.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use estate_crm_domain::schema::LEAD_TYPES;
use estate_crm_domain::{Record, RecordKind};
use estate_crm_store::{PageRequest, RecordQuery, Scope};
use maud::html;

use super::form::{Widget, field, hinted};
use super::screen::{SavedQuery, Screen};
use super::{PAGE, actor, contact_link, contact_names, escape, snippet, user_name, users};
use crate::WebState;
use crate::pages::{Flash, Section, error_page, flash, shell, when};
use crate::session::{ChangeForm, Visitor};

/// Statuses offered as suggestions; a lead's status is free text in the API.
const STATUSES: &[&str] = &["New", "Contacted", "Qualified", "Unqualified", "Converted", "Lost"];

const TYPE_CHOICES: &[(&str, &str)] = &[
    ("", "Not set"),
    ("Buyer", "Buyer"),
    ("Seller", "Seller"),
    ("Tenant", "Tenant"),
    ("Landlord", "Landlord"),
    ("Investor", "Investor"),
    ("Other", "Other"),
];

/// The lead pages.
pub static SCREEN: Screen = Screen {
    kind: RecordKind::Lead,
    singular: "lead",
    fields: &[
        field("lead_type", "Type", Widget::Choice(TYPE_CHOICES)),
        hinted("status", "Status", Widget::Text, "Such as New, Contacted, Qualified, Converted or Lost."),
        field("lead_source", "Source", Widget::Text),
        field("message", "Message", Widget::Area),
        hinted("property_id", "Property", Widget::Text, "The listing's id in your property system, if any."),
        field("assigned_agent_id", "Agent", Widget::Agent),
    ],
    name: lead_name,
};

fn lead_name(lead: &Record, contact: Option<&str>) -> String {
    let kind = lead.get_str("lead_type").unwrap_or("Lead");
    match contact {
        Some(name) => format!("{kind} lead: {name}"),
        None => format!("{kind} lead {}", lead.id),
    }
}

/// `GET /leads` filters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LeadFilters {
    #[serde(default)]
    status: String,
    #[serde(default)]
    lead_type: String,
    #[serde(default)]
    agent: String,
    cursor: Option<String>,
    deleted: Option<String>,
}

impl LeadFilters {
    fn query(&self, visitor: &Visitor) -> RecordQuery {
        let mut query = RecordQuery::new(Scope::Visible);
        if !self.status.trim().is_empty() {
            query = query.with("status", self.status.trim());
        }
        if let Some(kind) = LEAD_TYPES.iter().find(|t| t.eq_ignore_ascii_case(self.lead_type.trim())) {
            query = query.with("lead_type", *kind);
        }
        if visitor.is_admin() && !self.agent.is_empty() {
            query = query.with("assigned_agent_id", self.agent.as_str());
        }
        query
    }

    /// The filters as a query string, for the pager.
    fn as_query(&self) -> String {
        format!("status={}&lead_type={}&agent={}", escape(&self.status), escape(&self.lead_type), escape(&self.agent))
    }
}

/// `GET /leads`.
pub async fn list(State(state): State<WebState>, visitor: Visitor, Query(filters): Query<LeadFilters>) -> Response {
    let page = PageRequest { limit: PAGE, cursor: filters.cursor.clone() };
    let leads =
        match state.store().find_records(&actor(&visitor), RecordKind::Lead, filters.query(&visitor), page).await {
            Ok(leads) => leads,
            Err(err) => return error_page::store(&visitor, &err),
        };
    let (names, users) = match (contact_names(&state, &visitor, &leads.items).await, users(&state).await) {
        (Ok(names), Ok(users)) => (names, users),
        (Err(err), _) | (_, Err(err)) => return error_page::store(&visitor, &err),
    };
    let message = filters.deleted.as_ref().map(|_| Flash::Ok("The lead was deleted.".to_owned()));
    let body = html! {
        div.heading-row {
            h1 { "Leads" }
            a.button-link href="/leads/new" { "New lead" }
        }
        (flash(message.as_ref()))
        form.filters method="get" action="/leads" role="search" aria-label="Filter leads" {
            div.field {
                label for="f-status" { "Status" }
                input #f-status type="text" name="status" value=(filters.status) list="lead-statuses";
                datalist #lead-statuses { @for status in STATUSES { option value=(status) {} } }
            }
            div.field {
                label for="f-lead_type" { "Type" }
                select #f-lead_type name="lead_type" {
                    option value="" { "Any type" }
                    @for kind in LEAD_TYPES { option value=(kind) selected[filters.lead_type == *kind] { (kind) } }
                }
            }
            @if visitor.is_admin() {
                div.field {
                    label for="f-agent" { "Agent" }
                    select #f-agent name="agent" {
                        option value="" { "Any agent" }
                        @for user in &users { option value=(user.id) selected[filters.agent == user.id] { (user.name) } }
                    }
                }
            }
            div.actions { button.secondary type="submit" { "Filter" } a href="/leads" { "Clear" } }
        }
        @if leads.items.is_empty() {
            p.empty { "No lead matches. Leads are made from a contact's page, from an enquiry (Make lead), or through the API." }
        } @else {
            div.table-wrap {
                table #leads {
                    caption.visually-hidden { "Leads, newest first" }
                    thead { tr {
                        th scope="col" { "Lead" } th scope="col" { "Contact" } th scope="col" { "Type" }
                        th scope="col" { "Status" } th scope="col" { "Source" } th scope="col" { "Agent" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for lead in &leads.items {
                            tr data-record-id=(lead.id) {
                                td { a href=(format!("/leads/{}", lead.id)) {
                                    (lead.get_str("message").map(snippet).filter(|m| !m.is_empty()).unwrap_or_else(|| lead.id.clone()))
                                } }
                                td { (contact_link(lead, &names)) }
                                td { (lead.get_str("lead_type").unwrap_or("—")) }
                                td { span.badge.state-inactive { (lead.get_str("status").unwrap_or("—")) } }
                                td { (lead.get_str("lead_source").unwrap_or("—")) }
                                td { (lead.assigned_agent_id().map_or_else(|| "—".to_owned(), |id| user_name(&users, id))) }
                                td { (when(lead.created_at.timestamp_millis())) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = &leads.next_cursor {
            p.pager { a href=(format!("/leads?{}&cursor={}", filters.as_query(), escape(cursor))) { "Older leads" } }
        }
    };
    shell("Leads", Some(&visitor), Section::Records(RecordKind::Lead), body).into_response()
}

/// `GET /leads/new?contact_id=`.
pub async fn new_page(State(state): State<WebState>, visitor: Visitor, Query(query): Query<SavedQuery>) -> Response {
    super::screen::new_page(&SCREEN, &state, &visitor, &query).await
}

/// `POST /leads`.
pub async fn create(State(state): State<WebState>, ChangeForm { visitor, form }: ChangeForm) -> Response {
    super::screen::create(&SCREEN, &state, &visitor, &form).await
}

/// `GET /leads/{id}`.
pub async fn page(
    State(state): State<WebState>,
    Path(id): Path<String>,
    visitor: Visitor,
    Query(query): Query<SavedQuery>,
) -> Response {
    super::screen::page(&SCREEN, &state, &visitor, &id, &query).await
}

/// `POST /leads/{id}`.
pub async fn save(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    super::screen::save(&SCREEN, &state, &visitor, &id, &form).await
}

/// `POST /leads/{id}/delete`.
pub async fn delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    super::screen::delete(&SCREEN, &state, &visitor, &id, &form).await
}
