//! `/`: for administrators, the webhooks' health (delivered, pending and failed in the last 24 hours
//! per endpoint, refreshed live by the script); for agents, a start page.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use estate_crm_store::PageRequest;
use maud::{Markup, html};

use super::endpoints::{health_by_endpoint, state_badge};
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
    if !visitor.is_admin() {
        let body = html! {
            h1 { "Dashboard" }
            p { "Welcome, " (visitor.user.name) "." }
            p { "Your password and API tokens are under " a href="/account" { "your account" } "." }
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
