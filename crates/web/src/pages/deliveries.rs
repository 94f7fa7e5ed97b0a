//! Settings → Deliveries: the delivery log with its filters, kept live by the script (it fetches the
//! table's rows again every two seconds), and a delivery's page with its body, headers and attempts.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::EventName;
use estate_crm_store::{Delivery, DeliveryFilter, DeliveryStatus, PageRequest};
use maud::{Markup, html};

use super::{
    Flash, Section, Tab, csrf_field, duration_text, error_page, flash, now_ms, shell, status_badge, time_text, when,
};
use crate::WebState;
use crate::session::{AdminForm, AdminVisitor};

/// How many deliveries a page of the log shows.
const PAGE: usize = 50;
/// How many endpoints the filter lists and the log names.
const ENDPOINTS: usize = 500;

/// The log's query: filters, a page, and whether the script wants the rows alone.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LogQuery {
    endpoint_id: Option<String>,
    status: Option<String>,
    event: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    partial: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The rows of a delivery table.
pub fn delivery_rows(items: &[Delivery], urls: &HashMap<String, String>) -> Markup {
    html! {
        @for delivery in items {
            @let href = format!("/settings/deliveries/{}", delivery.id);
            tr data-delivery-id=(delivery.id) data-status=(delivery.status.as_str()) {
                td { a href=(href) { (delivery.event.as_str()) } }
                td.url {
                    @match &delivery.endpoint_id {
                        Some(id) => a href=(format!("/settings/endpoints/{id}")) { (urls.get(id).map_or(id.as_str(), String::as_str)) },
                        None => span.sub { "unsaved settings (test)" },
                    }
                }
                td { (status_badge(delivery.status)) }
                td.num { (delivery.attempts) }
                td.num {
                    @if let Some(code) = delivery.last_status_code { (code) }
                    @else if delivery.last_error.is_some() { span.sub title=[delivery.last_error.as_deref()] { "error" } }
                    @else { "—" }
                }
                td { (when(delivery.updated_at)) }
                td { a href=(href) aria-label=(format!("Open delivery {}", delivery.id)) { "Open" } }
            }
        }
        @if items.is_empty() {
            tr.empty-row { td colspan="7" { "No deliveries match." } }
        }
    }
}

/// A delivery table whose rows the script refreshes from `live_url`.
pub fn deliveries_table(items: &[Delivery], urls: &HashMap<String, String>, live_url: &str) -> Markup {
    html! {
        div.table-wrap {
            table #deliveries {
                caption.visually-hidden { "Deliveries, newest first; the table updates itself" }
                thead { tr {
                    th scope="col" { "Event" } th scope="col" { "Endpoint" } th scope="col" { "Status" }
                    th.num scope="col" { "Attempts" } th.num scope="col" { "Last answer" } th scope="col" { "Updated" }
                    th scope="col" { span.visually-hidden { "Link" } }
                } }
                tbody data-live=(live_url) { (delivery_rows(items, urls)) }
            }
        }
    }
}

async fn endpoint_urls(state: &WebState) -> Result<HashMap<String, String>, estate_crm_store::StoreError> {
    let page = state.store().list_endpoints(PageRequest { limit: ENDPOINTS, cursor: None }).await?;
    Ok(page.items.into_iter().map(|e| (e.id, e.url)).collect())
}

fn query_string(query: &LogQuery, cursor: Option<&str>, partial: bool) -> String {
    let mut pairs = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [("endpoint_id", &query.endpoint_id), ("status", &query.status), ("event", &query.event)] {
        if let Some(value) = non_empty(value) {
            pairs.append_pair(name, value);
        }
    }
    if let Some(cursor) = cursor {
        pairs.append_pair("cursor", cursor);
    }
    if partial {
        pairs.append_pair("partial", "rows");
    }
    pairs.finish()
}

/// `GET /settings/deliveries`: the log, or with `partial=rows` its rows alone for the script.
pub async fn log(
    State(state): State<WebState>,
    AdminVisitor(visitor): AdminVisitor,
    Query(query): Query<LogQuery>,
) -> Response {
    let mut problems = Vec::new();
    let status = non_empty(&query.status).and_then(|s| {
        DeliveryStatus::parse(s).or_else(|| {
            problems.push("the status filter must be pending, succeeded or failed");
            None
        })
    });
    let event = non_empty(&query.event).and_then(|e| {
        EventName::parse(e).or_else(|| {
            problems.push("the event filter is not an event");
            None
        })
    });
    let filter = DeliveryFilter { endpoint_id: non_empty(&query.endpoint_id).map(str::to_owned), status, event };
    let limit = query.limit.unwrap_or(PAGE).clamp(1, 200);
    let page = match state.store().list_deliveries(filter, PageRequest { limit, cursor: query.cursor.clone() }).await {
        Ok(page) => page,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let urls = match endpoint_urls(&state).await {
        Ok(urls) => urls,
        Err(err) => return error_page::store(&visitor, &err),
    };
    if query.partial.as_deref() == Some("rows") {
        return delivery_rows(&page.items, &urls).into_response();
    }
    let mut endpoints: Vec<(&String, &String)> = urls.iter().collect();
    endpoints.sort_by(|a, b| a.1.cmp(b.1));
    let chosen = |value: &Option<String>, option: &str| non_empty(value) == Some(option);
    // The first page follows new deliveries; an older page stays as it is.
    let live = if query.cursor.is_none() {
        format!("/settings/deliveries?{}", query_string(&query, None, true))
    } else {
        String::new()
    };
    let body = html! {
        h1 { "Deliveries" }
        @if !problems.is_empty() { (flash(Some(&Flash::Error(format!("Shown without a filter: {}.", problems.join("; ")))))) }
        form.filters method="get" action="/settings/deliveries" {
            div.field {
                label for="f-endpoint_id" { "Endpoint" }
                select #f-endpoint_id name="endpoint_id" {
                    option value="" { "All endpoints" }
                    @for (id, url) in &endpoints { option value=(id) selected[chosen(&query.endpoint_id, id)] { (url) } }
                }
            }
            div.field {
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="" { "Any status" }
                    @for s in [DeliveryStatus::Pending, DeliveryStatus::Succeeded, DeliveryStatus::Failed] {
                        option value=(s.as_str()) selected[chosen(&query.status, s.as_str())] { (s.as_str()) }
                    }
                }
            }
            div.field {
                label for="f-event" { "Event" }
                select #f-event name="event" {
                    option value="" { "Any event" }
                    @for e in EventName::ALL { option value=(e.as_str()) selected[chosen(&query.event, e.as_str())] { (e.as_str()) } }
                }
            }
            div.actions { button.secondary type="submit" { "Filter" } }
        }
        (deliveries_table(&page.items, &urls, &live))
        @if let Some(cursor) = &page.next_cursor {
            p.pager { a href=(format!("/settings/deliveries?{}", query_string(&query, Some(cursor), false))) { "Older deliveries" } }
        }
    };
    shell("Deliveries", Some(&visitor), Section::Settings(Tab::Deliveries), body).into_response()
}

/// `?retried=<Unix ms>` after **Retry now**.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DeliveryQuery {
    /// When the retry was asked for. The flash states that moment only, so it stays true while the
    /// status above it refreshes live (the retry may already have succeeded or failed).
    retried: Option<String>,
    /// `facts` or `attempts`: that part alone, for the script.
    partial: Option<String>,
}

/// The body as indented JSON (or as it is, if it is not JSON).
fn formatted_body(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// `GET /settings/deliveries/{id}`.
pub async fn page(
    State(state): State<WebState>,
    AdminVisitor(visitor): AdminVisitor,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> Response {
    let detail = match state.store().get_delivery(&id).await {
        Ok(detail) => detail,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let delivery = &detail.delivery;
    let endpoint = match &delivery.endpoint_id {
        Some(endpoint_id) => state.store().get_endpoint(endpoint_id).await.ok(),
        None => None,
    };
    match query.partial.as_deref() {
        Some("facts") => return facts(delivery, endpoint.as_ref()).into_response(),
        Some("attempts") => return attempts(&detail.attempts).into_response(),
        _ => {}
    }
    let signed = endpoint.as_ref().is_some_and(|e| e.secret.is_some());
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("user-agent", format!("estate-crm/{}", env!("CARGO_PKG_VERSION"))),
        ("x-crm-event", delivery.event.as_str().to_owned()),
        ("x-crm-delivery", delivery.id.clone()),
        ("webhook-id", delivery.id.clone()),
        ("webhook-timestamp", "the attempt's start, in Unix seconds".to_owned()),
    ];
    if signed {
        headers.push((
            "x-crm-signature",
            "HMAC-SHA256 of the body with the endpoint's secret, made at each attempt".into(),
        ));
        headers.push(("webhook-signature", "v1,… (Standard Webhooks), made at each attempt".into()));
    }
    let message = query.retried.as_deref().map(retry_requested);
    let body = html! {
        p.crumbs { a href="/settings/deliveries" { "Deliveries" } " / " }
        h1 { "Delivery " span.mono { (delivery.id) } }
        (flash(message.as_ref()))
        div.live-region data-live=(format!("/settings/deliveries/{}?partial=facts", delivery.id)) { (facts(delivery, endpoint.as_ref())) }
        form method="post" action=(format!("/settings/deliveries/{}/retry", delivery.id)) {
            (csrf_field(&visitor))
            button.primary type="submit" { "Retry now" }
        }
        h2 { "Body" }
        pre #delivery-body .code { (formatted_body(&detail.body)) }
        h2 { "Headers sent" }
        div.table-wrap {
            table #delivery-headers {
                thead { tr { th scope="col" { "Header" } th scope="col" { "Value" } } }
                tbody { @for (name, value) in &headers { tr { td.mono { (name) } td { (value) } } } }
            }
        }
        h2 { "Attempts" }
        div.live-region data-live=(format!("/settings/deliveries/{}?partial=attempts", delivery.id)) { (attempts(&detail.attempts)) }
    };
    shell(&format!("Delivery {}", delivery.id), Some(&visitor), Section::Settings(Tab::Deliveries), body)
        .into_response()
}

/// The flash after **Retry now**: when it was asked for, never what became of it (the live status
/// says that).
fn retry_requested(at: &str) -> Flash {
    match at.parse::<i64>() {
        Ok(ms) => Flash::Ok(format!("Retry requested at {}.", time_text(ms))),
        Err(_) => Flash::Ok("Retry requested.".into()),
    }
}

/// A delivery's status and facts (refreshed live).
fn facts(delivery: &Delivery, endpoint: Option<&estate_crm_store::Endpoint>) -> Markup {
    html! {
        dl.facts {
            dt { "Status" } dd { span #delivery-status class=(format!("badge status-{}", delivery.status.as_str())) { (delivery.status.as_str()) } }
            dt { "Event" } dd { (delivery.event.as_str()) " " span.sub.mono { (delivery.event_id) } }
            dt { "Endpoint" } dd {
                @match (&delivery.endpoint_id, endpoint) {
                    (Some(id), Some(e)) => a href=(format!("/settings/endpoints/{id}")) { (e.url) },
                    (Some(id), None) => span.mono { (id) },
                    (None, _) => "A test of settings that were not saved",
                }
            }
            dt { "Attempts" } dd { (delivery.attempts) }
            dt { "Created" } dd { (when(delivery.created_at)) }
            @if let Some(next) = delivery.next_attempt_at { dt { "Next attempt" } dd { (when(next)) } }
        }
    }
}

/// A delivery's attempts (refreshed live).
fn attempts(attempts: &[estate_crm_store::Attempt]) -> Markup {
    html! {
        div.table-wrap {
            table #attempts {
                thead { tr {
                    th.num scope="col" { "#" } th scope="col" { "Started" } th.num scope="col" { "Status code" }
                    th.num scope="col" { "Duration" } th scope="col" { "Answer (first 1 KiB) or error" }
                } }
                tbody {
                    @for attempt in attempts {
                        tr {
                            td.num { (attempt.number) }
                            td { (when(attempt.started_at)) }
                            td.num { @if let Some(code) = attempt.status_code { (code) } @else { "—" } }
                            td.num { (duration_text(attempt.duration_ms)) }
                            td {
                                @if let Some(error) = &attempt.error { p.error-text { (error) } }
                                @if !attempt.response.is_empty() { pre.answer { (String::from_utf8_lossy(&attempt.response)) } }
                            }
                        }
                    }
                }
            }
        }
        @if attempts.is_empty() { p.empty { "No attempt yet." } }
    }
}

/// `POST /settings/deliveries/{id}/retry`.
pub async fn retry(
    State(state): State<WebState>,
    Path(id): Path<String>,
    AdminForm { visitor, .. }: AdminForm,
) -> Response {
    match state.store().retry_delivery(&id, now_ms()).await {
        Ok(_) => Redirect::to(&format!("/settings/deliveries/{id}?retried={}", now_ms())).into_response(),
        Err(err) => error_page::store(&visitor, &err),
    }
}
