//! Settings → Endpoints: every endpoint with its state and last 24 hours, and an endpoint's page
//! with everything the endpoints API can do with one, **Rotate secret** included.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::FieldErrors;
use estate_crm_store::{DeliveryFilter, Endpoint, EndpointSpec, ErrorKind, PageRequest, Rotation};
use estate_crm_webhooks::endpoint_input::{self, DEFAULT_ROTATION_GRACE, ENDPOINT_SHAPE, SaveError};
use maud::{Markup, html};

use super::deliveries::deliveries_table;
use super::webhooks::{
    EndpointValues, TestOutcome, active_field, format_field, format_short_label, generated_secret, new_secret_panel,
    posted_grace, rotate_section, run_test, secret_field, test_outcome, test_result, wants_fragment,
};
use super::{
    Flash, Health, Input, Section, Tab, csrf_field, error_page, event_checkboxes, field_error, flash, now_ms, shell,
};
use crate::WebState;
use crate::session::{AdminForm, AdminVisitor, Visitor};

/// The window of the counts.
pub const DAY_MS: i64 = 24 * 3600 * 1000;
/// How many endpoints the list shows.
const LIST_LIMIT: usize = 500;
/// How many recent deliveries an endpoint's page shows.
const RECENT: usize = 20;

/// How long counts are shared between pages before they are counted again.
const HEALTH_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Each endpoint's counts for the last 24 hours, by id; at most [`HEALTH_FRESH_FOR`] old, and
/// counted once for all the pages asking at the same moment.
pub async fn health_by_endpoint(state: &WebState) -> Result<Health, estate_crm_store::StoreError> {
    let mut cached = state.inner.health.lock().await;
    if let Some((at, health)) = cached.as_ref()
        && at.elapsed() < HEALTH_FRESH_FOR
    {
        return Ok(health.clone());
    }
    let health = state.store().endpoint_health(now_ms() - DAY_MS).await?;
    let health: Health = std::sync::Arc::new(health.into_iter().map(|h| (h.endpoint_id.clone(), h)).collect());
    *cached = Some((std::time::Instant::now(), health.clone()));
    Ok(health)
}

/// Active, inactive, or disabled and why.
pub fn state_badge(endpoint: &Endpoint) -> Markup {
    html! {
        @if let Some(reason) = &endpoint.disabled_reason {
            span.badge.state-disabled { "disabled" } " " span.reason { (reason) }
        } @else if endpoint.active {
            span.badge.state-active { "active" }
        } @else {
            span.badge.state-inactive { "inactive" }
        }
    }
}

/// The events an endpoint receives, in words.
pub fn events_text(events: &estate_crm_domain::webhook::EventFilter) -> String {
    match events {
        estate_crm_domain::webhook::EventFilter::All => "All events".to_owned(),
        only => only.to_string().replace(',', ", "),
    }
}

/// `GET /settings/endpoints`.
pub async fn list(State(state): State<WebState>, AdminVisitor(visitor): AdminVisitor) -> Response {
    let page = match state.store().list_endpoints(PageRequest { limit: LIST_LIMIT, cursor: None }).await {
        Ok(page) => page,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let health = match health_by_endpoint(&state).await {
        Ok(health) => health,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let body = html! {
        div.heading-row {
            h1 { "Endpoints" }
            form method="get" action="/settings/endpoints/new" { button.primary type="submit" { "Add endpoint" } }
        }
        div.table-wrap {
            table #endpoints {
                caption.visually-hidden { "Endpoints, with their deliveries in the last 24 hours" }
                thead { tr {
                    th scope="col" { "URL" } th scope="col" { "State" } th scope="col" { "Events" } th scope="col" { "Format" }
                    th.num scope="col" { "Delivered (24 h)" } th.num scope="col" { "Pending" } th.num scope="col" { "Failed (24 h)" }
                } }
                tbody {
                    @for endpoint in &page.items {
                        @let counts = health.get(&endpoint.id).cloned().unwrap_or_default();
                        tr data-endpoint-id=(endpoint.id) {
                            td.url {
                                a href=(format!("/settings/endpoints/{}", endpoint.id)) { (endpoint.url) }
                                @if endpoint.is_primary { " " span.badge.primary { "settings" } }
                                @if let Some(description) = &endpoint.description { div.sub { (description) } }
                            }
                            td { (state_badge(endpoint)) }
                            td.events { (events_text(&endpoint.events)) }
                            td.format { (format_short_label(endpoint.format)) }
                            td.num.delivered { (counts.delivered) }
                            td.num.pending { (counts.pending) }
                            td.num.failed { (counts.failed) }
                        }
                    }
                    @if page.items.is_empty() {
                        tr.empty-row { td colspan="7" { "No endpoint yet. Add one, or set the destination URL under "
                            a href="/settings/webhooks" { "Webhooks" } "." } }
                    }
                }
            }
        }
    };
    shell("Endpoints", Some(&visitor), Section::Settings(Tab::Endpoints), body).into_response()
}

/// The fields of an endpoint's form (without the buttons).
fn endpoint_fields(visitor: &Visitor, values: &EndpointValues, errors: &FieldErrors) -> Markup {
    html! {
        (csrf_field(visitor))
        (Input::new("url", "URL", &values.url).kind("url").required().autocomplete("off").render(errors))
        (Input::new("description", "Description", &values.description).hint("A note for people, such as which system receives it.").render(errors))
        (event_checkboxes(values.all_events, &values.events, errors))
        (secret_field(values, errors))
        (format_field(values, errors))
        (Input::new("retry_schedule", "Retry schedule", &values.retry_schedule)
            .hint("Delays between attempts, such as 30s,5m,2h. Empty uses the server's default.").render(errors))
        (Input::new("max_in_flight", "Max in flight", &values.max_in_flight).kind("number")
            .hint("How many attempts may be on their way to it at once, 1 to 1024.").render(errors))
        (active_field(values))
    }
}

fn new_form(visitor: &Visitor, values: &EndpointValues, errors: &FieldErrors, message: Option<Flash>) -> Markup {
    let body = html! {
        h1 { "Add an endpoint" }
        (flash(message.as_ref()))
        form.card method="post" novalidate action="/settings/endpoints" {
            (endpoint_fields(visitor, values, errors))
            div.actions { button.primary type="submit" { "Add endpoint" } a.button-link href="/settings/endpoints" { "Cancel" } }
        }
    };
    shell("Add an endpoint", Some(visitor), Section::Settings(Tab::Endpoints), body)
}

/// `GET /settings/endpoints/new`.
pub async fn new_page(AdminVisitor(visitor): AdminVisitor) -> Response {
    new_form(&visitor, &EndpointValues::fresh(), &FieldErrors::new(), None).into_response()
}

fn not_saved() -> Option<Flash> {
    Some(Flash::Error("Not saved: correct the fields marked below.".into()))
}

/// `POST /settings/endpoints`: creates through the endpoints API's own checks.
pub async fn create(State(state): State<WebState>, AdminForm { visitor, form }: AdminForm) -> Response {
    let mut values = EndpointValues::from_form(&form, None);
    if form.get("intent") == "generate" {
        values.secret = generated_secret();
        let message = Some(Flash::Ok("A new secret is in the field: copy it for your receiver.".into()));
        return new_form(&visitor, &values, &FieldErrors::new(), message).into_response();
    }
    let input = match endpoint_input::parse_endpoint(&values.endpoint_json(), ENDPOINT_SHAPE, state.inner.config.policy)
        .await
    {
        Ok(input) => input,
        Err(errors) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, new_form(&visitor, &values, &errors, not_saved()))
                .into_response();
        }
    };
    let Some(spec) = EndpointSpec::from_patch(input.patch) else {
        let errors = FieldErrors::single("url", "is required");
        return (StatusCode::UNPROCESSABLE_ENTITY, new_form(&visitor, &values, &errors, not_saved())).into_response();
    };
    match state.store().create_endpoint(spec).await {
        Ok(endpoint) => Redirect::to(&format!("/settings/endpoints/{}", endpoint.id)).into_response(),
        Err(err) => error_page::store(&visitor, &err),
    }
}

/// What an endpoint's page shows besides the saved endpoint.
#[derive(Default)]
struct View {
    values: Option<EndpointValues>,
    errors: FieldErrors,
    message: Option<Flash>,
    test: Option<TestOutcome>,
    /// A rotation just made, to show its secret once.
    rotation: Option<Rotation>,
    /// The grace the rotation form shows chosen; the default when `None`.
    grace: Option<String>,
}

async fn endpoint_page(state: &WebState, visitor: &Visitor, id: &str, view: View) -> Response {
    let endpoint = match state.store().get_endpoint(id).await {
        Ok(endpoint) => endpoint,
        Err(err) => return error_page::store(visitor, &err),
    };
    let counts = match health_by_endpoint(state).await {
        Ok(health) => health.get(id).cloned().unwrap_or_default(),
        Err(err) => return error_page::store(visitor, &err),
    };
    let filter = DeliveryFilter { endpoint_id: Some(endpoint.id.clone()), ..Default::default() };
    let recent = match state.store().list_deliveries(filter, PageRequest { limit: RECENT, cursor: None }).await {
        Ok(page) => page.items,
        Err(err) => return error_page::store(visitor, &err),
    };
    let values = view.values.clone().unwrap_or_else(|| EndpointValues::from_endpoint(&endpoint));
    let status = if view.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let base = format!("/settings/endpoints/{}", endpoint.id);
    let urls = HashMap::from([(endpoint.id.clone(), endpoint.url.clone())]);
    let body = html! {
        p.crumbs { a href="/settings/endpoints" { "Endpoints" } " / " }
        h1 { "Endpoint " span.mono { (endpoint.url) } }
        p { (state_badge(&endpoint)) @if endpoint.is_primary { " " span.badge.primary { "settings" } " This is the endpoint the Webhooks tab manages." } }
        (flash(view.message.as_ref()))
        (new_secret_panel(view.rotation.as_ref()))
        section.counts aria-label="Last 24 hours" {
            div.count.delivered { span.label { "Delivered (24 h)" } span.value #count-delivered { (counts.delivered) } }
            div.count.pending { span.label { "Pending" } span.value #count-pending { (counts.pending) } }
            div.count.failed { span.label { "Failed (24 h)" } span.value #count-failed { (counts.failed) } }
        }
        div.row-actions {
            form method="post" action=(format!("{base}/retry-failed")) {
                (csrf_field(visitor)) button.secondary type="submit" { "Retry all failed" }
            }
        }
        h2 { "Settings" }
        form.card method="post" novalidate action=(base) {
            (endpoint_fields(visitor, &values, &view.errors))
            div.actions {
                button.primary type="submit" { "Save" }
                button.secondary type="submit" formaction=(format!("{base}/test")) data-test { "Test Webhook" }
            }
            (test_result(view.test.as_ref()))
        }
        (rotate_section(visitor, &format!("{base}/rotate-secret"), Some(&endpoint),
            view.grace.as_deref().unwrap_or(DEFAULT_ROTATION_GRACE), &view.errors))
        h2 { "Recent deliveries" }
        (deliveries_table(&recent, &urls, &format!("/settings/deliveries?endpoint_id={}&partial=rows&limit={RECENT}", endpoint.id)))
        p { a href=(format!("/settings/deliveries?endpoint_id={}", endpoint.id)) { "All of this endpoint's deliveries" } }
        h2 { "Delete" }
        form.danger method="post" action=(format!("{base}/delete")) {
            (csrf_field(visitor))
            p { "Deleting an endpoint removes its deliveries from the log; nothing more is sent to it." }
            (remove_deliveries_field(&view.errors))
            button.danger type="submit" { "Delete" }
        }
    };
    (status, shell("Endpoint", Some(visitor), Section::Settings(Tab::Endpoints), body)).into_response()
}

/// `GET /settings/endpoints/{id}`.
pub async fn page(
    State(state): State<WebState>,
    AdminVisitor(visitor): AdminVisitor,
    Path(id): Path<String>,
) -> Response {
    endpoint_page(&state, &visitor, &id, View::default()).await
}

/// `POST /settings/endpoints/{id}`: saves the fields through the endpoints API's own checks.
pub async fn save(
    State(state): State<WebState>,
    Path(id): Path<String>,
    AdminForm { visitor, form }: AdminForm,
) -> Response {
    let saved = match state.store().get_endpoint(&id).await {
        Ok(saved) => saved,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let mut values = EndpointValues::from_form(&form, Some(&saved));
    if form.get("intent") == "generate" {
        values.secret = generated_secret();
        let message =
            Some(Flash::Ok("A new secret is in the field: copy it for your receiver, then Save to keep it.".into()));
        return endpoint_page(&state, &visitor, &id, View { values: Some(values), message, ..Default::default() })
            .await;
    }
    let input = match endpoint_input::parse_endpoint(&values.endpoint_json(), ENDPOINT_SHAPE, state.inner.config.policy)
        .await
    {
        Ok(input) => input,
        Err(errors) => {
            return endpoint_page(
                &state,
                &visitor,
                &id,
                View { values: Some(values), errors, message: not_saved(), ..Default::default() },
            )
            .await;
        }
    };
    match state.store().update_endpoint(&id, input.patch).await {
        Ok(_) => {
            let mut text = "Saved.".to_owned();
            for warning in &input.warnings {
                text.push_str(&format!(" Note: {warning}."));
            }
            endpoint_page(&state, &visitor, &id, View { message: Some(Flash::Ok(text)), ..Default::default() }).await
        }
        Err(err) => match err.kind() {
            ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => {
                let view =
                    View { values: Some(values), errors: errors.clone(), message: not_saved(), ..Default::default() };
                endpoint_page(&state, &visitor, &id, view).await
            }
            _ => error_page::store(&visitor, &err),
        },
    }
}

/// `POST /settings/endpoints/{id}/test`.
pub async fn test(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    AdminForm { visitor, form }: AdminForm,
) -> Response {
    let saved = match state.store().get_endpoint(&id).await {
        Ok(saved) => saved,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let values = EndpointValues::from_form(&form, Some(&saved));
    let outcome = run_test(&state, Some(&saved), &values).await;
    if wants_fragment(&headers) {
        return test_outcome(&outcome).into_response();
    }
    endpoint_page(&state, &visitor, &id, View { values: Some(values), test: Some(outcome), ..Default::default() }).await
}

/// `POST /settings/endpoints/{id}/retry-failed`.
pub async fn retry_failed(
    State(state): State<WebState>,
    Path(id): Path<String>,
    AdminForm { visitor, .. }: AdminForm,
) -> Response {
    let message = match state.store().retry_failed(&id, now_ms()).await {
        Ok(0) => "There was no failed delivery to retry.".to_owned(),
        Ok(1) => "1 failed delivery will be sent again now.".to_owned(),
        Ok(n) => format!("{n} failed deliveries will be sent again now."),
        Err(err) => return error_page::store(&visitor, &err),
    };
    endpoint_page(&state, &visitor, &id, View { message: Some(Flash::Ok(message)), ..Default::default() }).await
}

/// The delete form's field that must be ticked: deleting an endpoint also empties its part of the
/// delivery log, so the form says so and asks for it, with or without JavaScript.
const REMOVE_DELIVERIES: &str = "remove_deliveries";

/// The **Also remove its deliveries from the log** checkbox, required, with its error if any.
fn remove_deliveries_field(errors: &FieldErrors) -> Markup {
    let id = format!("f-{REMOVE_DELIVERIES}");
    let error = errors.fields().get(REMOVE_DELIVERIES);
    let error_id = format!("{id}-error");
    html! {
        div.check {
            input type="checkbox" id=(id) name=(REMOVE_DELIVERIES) value="on" required
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())];
            label for=(id) { "Also remove its deliveries from the log" }
        }
        (field_error(REMOVE_DELIVERIES, errors))
    }
}

/// `POST /settings/endpoints/{id}/delete`: deletes only when the form confirms the deliveries go
/// too; otherwise the page comes back with the box marked and nothing is deleted.
pub async fn delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    AdminForm { visitor, form }: AdminForm,
) -> Response {
    if !form.has(REMOVE_DELIVERIES) {
        let view = View {
            errors: FieldErrors::single(REMOVE_DELIVERIES, "Tick this box to delete the endpoint with its deliveries."),
            message: Some(Flash::Error("Not deleted: confirm that its deliveries leave the log too.".into())),
            ..Default::default()
        };
        return endpoint_page(&state, &visitor, &id, view).await;
    }
    match state.store().delete_endpoint(&id).await {
        Ok(()) => Redirect::to("/settings/endpoints").into_response(),
        Err(err) => error_page::store(&visitor, &err),
    }
}

/// `POST /settings/endpoints/{id}/rotate-secret`: **Rotate secret**, through the same call as
/// `POST /api/v1/webhooks/{id}/rotate-secret`; the answer shows the new secret once.
pub async fn rotate(
    State(state): State<WebState>,
    Path(id): Path<String>,
    AdminForm { visitor, form }: AdminForm,
) -> Response {
    let grace = posted_grace(&form);
    let view = match endpoint_input::rotate_secret(state.store(), &id, grace).await {
        Ok(rotation) => View { rotation: Some(rotation), ..Default::default() },
        Err(SaveError::Invalid(errors)) => View {
            errors,
            message: Some(Flash::Error("Not rotated: correct the field marked below.".into())),
            grace: grace.map(str::to_owned),
            ..Default::default()
        },
        Err(SaveError::Store(err)) => return error_page::store(&visitor, &err),
    };
    endpoint_page(&state, &visitor, &id, view).await
}
