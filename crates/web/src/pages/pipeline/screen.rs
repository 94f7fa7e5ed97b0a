//! The pages every pipeline kind shares: a record's page with its edit form and **Delete** (which
//! asks first), the new-record form (with its contact fixed when it was opened from one), and the
//! handlers behind them. Each kind describes itself once in a [`Screen`].

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::{FieldErrors, Record, RecordKind};
use estate_crm_store::{ErrorKind, StoreError, User};
use maud::{Markup, html};
use serde_json::Value;

use super::form::{FormField, Values, inputs, new_object, patch_object};
use super::{actor, contact_link, contact_name, users};
use crate::WebState;
use crate::form::FormFields;
use crate::pages::{Flash, Input, Section, csrf_field, error_page, flash, shell, when};
use crate::session::Visitor;

/// The confirmation box **Delete** needs.
const CONFIRM: &str = "confirm_delete";

/// One kind's pages.
pub struct Screen {
    /// The kind.
    pub kind: RecordKind,
    /// Its name in a sentence: "lead".
    pub singular: &'static str,
    /// The fields its form shows (`contact_id` is handled apart: fixed once set).
    pub fields: &'static [FormField],
    /// A record's name in headings, given its contact's name.
    pub name: fn(&Record, Option<&str>) -> String,
}

/// `?saved=` after a redirect: what the message says.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SavedQuery {
    saved: Option<String>,
    contact_id: Option<String>,
}

impl SavedQuery {
    fn message(&self, screen: &Screen) -> Option<Flash> {
        match self.saved.as_deref() {
            Some("created") => Some(Flash::Ok(format!("The {} was created.", screen.singular))),
            Some("changed") => Some(Flash::Ok("Saved.".to_owned())),
            Some("unchanged") => Some(Flash::Ok("Nothing changed, so nothing was saved.".to_owned())),
            _ => None,
        }
    }
}

fn base(screen: &Screen) -> String {
    format!("/{}", screen.kind.plural())
}

/// A form refused by validation: the page again, with the API's messages beside their fields.
fn refused(errors: &FieldErrors) -> Option<Flash> {
    let count = errors.fields().len();
    Some(Flash::Error(if count == 1 {
        "Not saved: correct the field marked below.".to_owned()
    } else {
        format!("Not saved: correct the {count} fields marked below.")
    }))
}

/// The validation errors of a store error, if that is what it is.
fn field_errors(err: &StoreError) -> Option<FieldErrors> {
    match err.kind() {
        ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => Some(errors.clone()),
        _ => None,
    }
}

/// `GET /{kind}/new?contact_id=`.
pub async fn new_page(screen: &Screen, state: &WebState, visitor: &Visitor, query: &SavedQuery) -> Response {
    let contact_id = query.contact_id.as_deref().filter(|id| !id.is_empty());
    render_new(screen, state, visitor, contact_id, None, &FieldErrors::new()).await
}

async fn render_new(
    screen: &Screen,
    state: &WebState,
    visitor: &Visitor,
    contact_id: Option<&str>,
    posted: Option<&FormFields>,
    errors: &FieldErrors,
) -> Response {
    let contact = match contact_id {
        Some(id) => match state.store().get_record(&actor(visitor), RecordKind::Contact, id).await {
            Ok(contact) => Some(contact),
            Err(err) => return error_page::store(visitor, &err),
        },
        None => None,
    };
    let users = match users(state).await {
        Ok(users) => users,
        Err(err) => return error_page::store(visitor, &err),
    };
    let values = posted.map_or_else(Values::empty, Values::posted);
    let title = format!("New {}", screen.singular);
    let body = html! {
        h1 { (title) }
        @if !errors.is_empty() { (flash(refused(errors).as_ref())) }
        form.card method="post" action=(base(screen)) novalidate {
            (csrf_field(visitor))
            @match &contact {
                Some(contact) => {
                    input type="hidden" name="contact_id" value=(contact.id);
                    p #fixed-contact { "For " a href=(format!("/contacts/{}", contact.id)) { (contact_name(contact)) } }
                    (crate::pages::field_error("contact_id", errors))
                }
                None => (Input::new("contact_id", "Contact id", posted.map_or("", |f| f.get("contact_id")))
                    .hint("The contact this is for, such as con_1a2b. Opening this form from a contact's page fills it in.")
                    .render(errors)),
            }
            (inputs(screen.fields, &values, errors, &users))
            div.actions { button.primary type="submit" { "Create " (screen.singular) } }
        }
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (status, shell(&title, Some(visitor), Section::Records(screen.kind), body)).into_response()
}

/// `POST /{kind}`: creates the record through `create_record`, as `POST /api/v1/{kind}` does.
pub async fn create(screen: &Screen, state: &WebState, visitor: &Visitor, form: &FormFields) -> Response {
    let mut object = new_object(screen.fields, form);
    let contact_id = form.get("contact_id").trim();
    if !contact_id.is_empty() {
        object.insert("contact_id".to_owned(), Value::String(contact_id.to_owned()));
    }
    match state.store().create_record(&actor(visitor), screen.kind, Value::Object(object)).await {
        Ok(record) => Redirect::to(&format!("{}/{}?saved=created", base(screen), record.id)).into_response(),
        Err(err) => match field_errors(&err) {
            Some(errors) => {
                // The fixed contact stays fixed unless the contact itself was refused.
                let fixed =
                    (!contact_id.is_empty() && !errors.fields().contains_key("contact_id")).then_some(contact_id);
                render_new(screen, state, visitor, fixed, Some(form), &errors).await
            }
            None => error_page::store(visitor, &err),
        },
    }
}

/// `GET /{kind}/{id}`.
pub async fn page(screen: &Screen, state: &WebState, visitor: &Visitor, id: &str, query: &SavedQuery) -> Response {
    match state.store().get_record(&actor(visitor), screen.kind, id).await {
        Ok(record) => {
            render_page(screen, state, visitor, &record, None, &FieldErrors::new(), query.message(screen)).await
        }
        Err(err) => error_page::store(visitor, &err),
    }
}

async fn render_page(
    screen: &Screen,
    state: &WebState,
    visitor: &Visitor,
    record: &Record,
    posted: Option<&FormFields>,
    errors: &FieldErrors,
    message: Option<Flash>,
) -> Response {
    let names = match super::contact_names(state, visitor, std::slice::from_ref(record)).await {
        Ok(names) => names,
        Err(err) => return error_page::store(visitor, &err),
    };
    let users = match users(state).await {
        Ok(users) => users,
        Err(err) => return error_page::store(visitor, &err),
    };
    let contact = record.get_str("contact_id").and_then(|id| names.get(id)).map(String::as_str);
    let title = (screen.name)(record, contact);
    let values = posted.map_or_else(|| Values::of(record), Values::posted);
    let message = message.or_else(|| (!errors.is_empty()).then(|| refused(errors)).flatten());
    let action = format!("{}/{}", base(screen), record.id);
    let body = html! {
        p.crumbs { a href=(base(screen)) { (crate::pages::menu_title(screen.kind)) } " › " (record.id) }
        h1 { (title) }
        (flash(message.as_ref()))
        (facts(record, &names, &users))
        h2 { "Edit" }
        form.card method="post" action=(action) novalidate {
            (csrf_field(visitor))
            (inputs(screen.fields, &values, errors, &users))
            div.actions { button.primary type="submit" { "Save" } }
        }
        h2 { "Delete" }
        (delete_form(visitor, &format!("{action}/delete"), screen.singular, errors))
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (status, shell(&title, Some(visitor), Section::Records(screen.kind), body)).into_response()
}

fn facts(record: &Record, names: &HashMap<String, String>, users: &[User]) -> Markup {
    html! {
        dl.facts {
            dt { "Contact" } dd { (contact_link(record, names)) }
            @if let Some(agent) = record.assigned_agent_id() { dt { "Agent" } dd { (super::user_name(users, agent)) } }
            dt { "Created" } dd { (when(record.created_at.timestamp_millis())) " by " (super::user_name(users, &record.created_by)) }
            dt { "Updated" } dd { (when(record.updated_at.timestamp_millis())) }
        }
    }
}

/// **Delete**, which asks first: without its box ticked, nothing is deleted.
fn delete_form(visitor: &Visitor, action: &str, singular: &str, errors: &FieldErrors) -> Markup {
    html! {
        form.danger method="post" action=(action) {
            (csrf_field(visitor))
            div.check {
                input type="checkbox" id=(format!("f-{CONFIRM}")) name=(CONFIRM) value="on" required
                    aria-describedby=[errors.fields().get(CONFIRM).map(|_| format!("f-{CONFIRM}-error"))];
                label for=(format!("f-{CONFIRM}")) { "Yes, delete this " (singular) " (its webhook goes out to every subscribed endpoint)" }
            }
            (crate::pages::field_error(CONFIRM, errors))
            button.danger type="submit" { "Delete" }
        }
    }
}

/// `POST /{kind}/{id}`: the changed fields through `update_record`, as a PATCH does.
pub async fn save(screen: &Screen, state: &WebState, visitor: &Visitor, id: &str, form: &FormFields) -> Response {
    let actor = actor(visitor);
    let record = match state.store().get_record(&actor, screen.kind, id).await {
        Ok(record) => record,
        Err(err) => return error_page::store(visitor, &err),
    };
    let patch = patch_object(screen.fields, form, &record);
    if patch.is_empty() {
        return Redirect::to(&format!("{}/{id}?saved=unchanged", base(screen))).into_response();
    }
    match state.store().update_record(&actor, screen.kind, id, Value::Object(patch)).await {
        Ok(_) => Redirect::to(&format!("{}/{id}?saved=changed", base(screen))).into_response(),
        Err(err) => match field_errors(&err) {
            Some(errors) => render_page(screen, state, visitor, &record, Some(form), &errors, None).await,
            None => error_page::store(visitor, &err),
        },
    }
}

/// `POST /{kind}/{id}/delete`: through `delete_record`, once its box is ticked.
pub async fn delete(screen: &Screen, state: &WebState, visitor: &Visitor, id: &str, form: &FormFields) -> Response {
    let actor = actor(visitor);
    if !form.has(CONFIRM) {
        let record = match state.store().get_record(&actor, screen.kind, id).await {
            Ok(record) => record,
            Err(err) => return error_page::store(visitor, &err),
        };
        let errors = FieldErrors::single(CONFIRM, "Tick this box to delete it.");
        let message = Some(Flash::Error(format!("Not deleted: confirm that the {} should go.", screen.singular)));
        return render_page(screen, state, visitor, &record, None, &errors, message).await;
    }
    match state.store().delete_record(&actor, screen.kind, id).await {
        Ok(()) => Redirect::to(&format!("{}?deleted=1", base(screen))).into_response(),
        Err(err) => error_page::store(visitor, &err),
    }
}
