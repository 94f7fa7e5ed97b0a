//! `/`: for everyone, my open tasks (overdue first), the newest enquiries and my deals by stage with
//! their totals; for administrators also the webhooks' health (delivered, pending and failed in the
//! last 24 hours per endpoint, refreshed live by the script).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use estate_crm_domain::RecordKind;
use estate_crm_store::{PageRequest, Scope, StoreError};
use maud::{Markup, html};

use super::endpoints::{health_by_endpoint, state_badge};
use super::pipeline::deals::{columns, stage_label};
use super::pipeline::enquiries::{enquiry_row, inbox_head, leads_made};
use super::pipeline::tasks::{Today, task_row, tasks_head};
use super::pipeline::{actor, contact_names};
use super::{Section, error_page, shell};
use crate::WebState;
use crate::session::Visitor;

/// `?partial=rows` asks for the health table's rows alone.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DashboardQuery {
    partial: Option<String>,
}

/// `GET /`.
pub async fn page(State(state): State<WebState>, visitor: Visitor, Query(query): Query<DashboardQuery>) -> Response {
    let my_day = match my_day(&state, &visitor).await {
        Ok(my_day) => my_day,
        Err(err) => return error_page::store(&visitor, &err),
    };
    if !visitor.is_admin() {
        let body = html! {
            h1 { "Dashboard" }
            (my_day)
        };
        return shell("Dashboard", Some(&visitor), Section::Dashboard, body).into_response();
    }
    let rows = match health_rows(&state).await {
        Ok(rows) => rows,
        Err(err) => return error_page::store(&visitor, &err),
    };
    if query.partial.as_deref() == Some("rows") {
        return rows.into_response();
    }
    let body = html! {
        h1 { "Dashboard" }
        (my_day)
        h2 #health-heading { "Webhooks in the last 24 hours" }
        div.table-wrap {
            table #webhook-health aria-labelledby="health-heading" {
                thead { tr {
                    th scope="col" { "Endpoint" } th scope="col" { "State" }
                    th.num scope="col" { "Delivered" } th.num scope="col" { "Pending" } th.num scope="col" { "Failed" }
                } }
                tbody data-live="/?partial=rows" { (rows) }
            }
        }
        p { a href="/settings/deliveries" { "The delivery log" } " · " a href="/settings/endpoints" { "Endpoints" } }
    };
    shell("Dashboard", Some(&visitor), Section::Dashboard, body).into_response()
}

async fn health_rows(state: &WebState) -> Result<Markup, estate_crm_store::StoreError> {
    let endpoints = state.store().list_endpoints(PageRequest { limit: 500, cursor: None }).await?;
    let health = health_by_endpoint(state).await?;
    Ok(html! {
        @for endpoint in &endpoints.items {
            @let counts = health.get(&endpoint.id).cloned().unwrap_or_default();
            tr data-endpoint-id=(endpoint.id) {
                td.url { a href=(format!("/settings/endpoints/{}", endpoint.id)) { (endpoint.url) } }
                td { (state_badge(endpoint)) }
                td.num.delivered { (counts.delivered) }
                td.num.pending { (counts.pending) }
                td.num.failed { (counts.failed) }
            }
        }
        @if endpoints.items.is_empty() {
            tr.empty-row { td colspan="5" { "No endpoint yet: set one up under " a href="/settings/webhooks" { "Settings → Webhooks" } "." } }
        }
    })
}

/// How many tasks and enquiries the dashboard shows; the rest are a link away.
const DASHBOARD_ROWS: usize = 8;

/// The visitor's day: their open tasks, the newest enquiries, their deals by stage.
async fn my_day(state: &WebState, visitor: &Visitor) -> Result<Markup, StoreError> {
    let actor = actor(visitor);
    let tasks = state.store().due_tasks(&actor, Scope::Mine, 0, DASHBOARD_ROWS).await?;
    let enquiries = state
        .store()
        .list_records(&actor, RecordKind::Enquiry, PageRequest { limit: DASHBOARD_ROWS, cursor: None })
        .await?;
    let leads = leads_made(state, &enquiries.items).await?;
    let totals = state.store().deal_stage_totals(&actor, Scope::Mine).await?;
    let names = contact_names(state, visitor, &tasks.items).await?;
    let today = Today::now();
    Ok(html! {
        section.dash aria-labelledby="my-tasks" {
            h2 #my-tasks { "My open tasks" }
            @if tasks.items.is_empty() {
                p.empty { "Nothing to do. " a href="/tasks/new" { "New task" } }
            } @else {
                div.table-wrap {
                    table #dashboard-tasks aria-labelledby="my-tasks" {
                        (tasks_head())
                        tbody { @for task in &tasks.items { (task_row(visitor, task, &names, &today, "/")) } }
                    }
                }
                @if tasks.next_offset.is_some() { p.more { a href="/tasks" { "All my tasks" } } }
            }
        }
        section.dash aria-labelledby="new-enquiries" {
            h2 #new-enquiries { "New enquiries" }
            @if enquiries.items.is_empty() {
                p.empty { "No enquiry yet." }
            } @else {
                div.table-wrap {
                    table #dashboard-enquiries aria-labelledby="new-enquiries" {
                        (inbox_head())
                        tbody { @for enquiry in &enquiries.items { (enquiry_row(visitor, enquiry, leads.get(&enquiry.id))) } }
                    }
                }
                p.more { a href="/enquiries" { "The inbox" } }
            }
        }
        section.dash aria-labelledby="my-deals" {
            h2 #my-deals { "My deals by stage" }
            div.table-wrap {
                table #dashboard-deals aria-labelledby="my-deals" {
                    thead { tr { th scope="col" { "Stage" } th.num scope="col" { "Deals" } th.num scope="col" { "Total" } } }
                    tbody {
                        @for column in columns(&totals) {
                            tr data-stage=(column.stage) {
                                th scope="row" { a href=(format!("/deals?stage={}", column.stage)) { (stage_label(column.stage)) } }
                                td.num.deal-count { (column.count) }
                                td.num.deal-total { @if column.count > 0 { (column.total) } @else { "—" } }
                            }
                        }
                    }
                }
            }
            p.more { a href="/deals" { "The pipeline board" } }
        }
    })
}
