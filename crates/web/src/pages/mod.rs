//! The pages: each area's handlers in its own file, the shared page shell and form pieces here.

mod auth;
mod contacts;
mod dashboard;
mod deliveries;
pub(crate) mod endpoints;
pub mod error_page;
mod hubspot;
mod import;
pub mod pipeline;
mod users;
mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use estate_crm_domain::{EventName, FieldErrors, RecordKind};
use estate_crm_store::DeliveryStatus;
use maud::{DOCTYPE, Markup, html};

use crate::WebState;
use crate::assets;
use crate::session::Visitor;

/// Every route of the web app.
pub fn router() -> Router<WebState> {
    Router::new()
        .route("/assets/{file}", get(assets::serve))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/setup", get(auth::setup_page).post(auth::setup))
        .route("/", get(dashboard::page))
        .route("/contacts", get(contacts::list).post(contacts::create))
        .route("/contacts/new", get(contacts::new_page))
        .route("/contacts/export", get(contacts::export))
        .route("/contacts/bulk", post(contacts::bulk))
        .route("/contacts/{id}", get(contacts::view))
        .route("/contacts/{id}/edit", get(contacts::edit_page).post(contacts::save))
        .route("/contacts/{id}/delete", get(contacts::confirm_delete).post(contacts::delete))
        .route(
            "/contacts/import",
            get(import::contacts_page).post(import::upload_contacts).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/contacts/import/sample.csv", get(import::sample_contacts))
        .route("/contacts/import/{id}", get(import::contacts_job).post(import::start_contacts))
        .route(
            "/leads/import",
            get(import::leads_page).post(import::upload_leads).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/leads/import/{id}", get(import::leads_job).post(import::start_leads))
        .merge(pipeline_routes())
        .route("/settings", get(|| async { axum::response::Redirect::to("/settings/webhooks") }))
        .route("/settings/webhooks", get(webhooks::page).post(webhooks::save))
        .route("/settings/webhooks/test", post(webhooks::test))
        .route("/settings/webhooks/rotate-secret", post(webhooks::rotate))
        .route("/settings/endpoints", get(endpoints::list).post(endpoints::create))
        .route("/settings/endpoints/new", get(endpoints::new_page))
        .route("/settings/endpoints/{id}", get(endpoints::page).post(endpoints::save))
        .route("/settings/endpoints/{id}/test", post(endpoints::test))
        .route("/settings/endpoints/{id}/retry-failed", post(endpoints::retry_failed))
        .route("/settings/endpoints/{id}/delete", post(endpoints::delete))
        .route("/settings/endpoints/{id}/rotate-secret", post(endpoints::rotate))
        .route("/settings/deliveries", get(deliveries::log))
        .route("/settings/deliveries/{id}", get(deliveries::page))
        .route("/settings/deliveries/{id}/retry", post(deliveries::retry))
        .route("/settings/users", get(users::list).post(users::add))
        .route(
            "/settings/integrations",
            get(|| async { axum::response::Redirect::to("/settings/integrations/hubspot") }),
        )
        .route("/settings/integrations/hubspot", get(hubspot::page).post(hubspot::save))
        .route("/settings/integrations/hubspot/check", post(hubspot::check))
        .route("/settings/integrations/hubspot/backfill", post(hubspot::backfill))
        .route("/settings/users/{id}/password", post(users::reset_password))
        .route("/account", get(users::account))
        .route("/account/password", post(users::change_password))
        .route("/account/tokens", post(users::create_token))
        .route("/account/tokens/{id}/delete", post(users::delete_token))
}

/// The largest CSV upload's body: the file's own limit and room for the form around it.
const UPLOAD_LIMIT: usize = crate::import::csv_file::MAX_BYTES + 64 * 1024;

/// Leads, enquiries, tasks and the deals board.
fn pipeline_routes() -> Router<WebState> {
    use pipeline::{deals, enquiries, leads, tasks};
    Router::new()
        .route("/leads", get(leads::list).post(leads::create))
        .route("/leads/new", get(leads::new_page))
        .route("/leads/{id}", get(leads::page).post(leads::save))
        .route("/leads/{id}/delete", post(leads::delete))
        .route("/enquiries", get(enquiries::list))
        .route("/enquiries/{id}/make-lead", post(enquiries::make_lead))
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/new", get(tasks::new_page))
        .route("/tasks/{id}", get(tasks::page).post(tasks::save))
        .route("/tasks/{id}/complete", post(tasks::complete))
        .route("/tasks/{id}/delete", post(tasks::delete))
        .route("/deals", get(deals::list).post(deals::create))
        .route("/deals/new", get(deals::new_page))
        .route("/deals/{id}", get(deals::page).post(deals::save))
        .route("/deals/{id}/stage", post(deals::move_stage))
        .route("/deals/{id}/delete", post(deals::delete))
}

/// Each endpoint's counts for the last 24 hours, by endpoint id.
pub type Health = std::sync::Arc<std::collections::HashMap<String, estate_crm_store::EndpointHealth>>;

/// Which part of the menu a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The dashboard.
    Dashboard,
    /// A list of records.
    Records(RecordKind),
    /// A settings tab.
    Settings(Tab),
    /// The user's own account.
    Account,
    /// Nothing in the menu.
    Other,
}

/// The settings tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// The simple webhook settings.
    Webhooks,
    /// Endpoints.
    Endpoints,
    /// The delivery log.
    Deliveries,
    /// Users.
    Users,
    /// Integrations with other systems (HubSpot).
    Integrations,
}

fn current(on: bool) -> Option<&'static str> {
    on.then_some("page")
}

/// The page shell: head, menu, and the page's content in `<main>`.
pub fn shell(title: &str, visitor: Option<&Visitor>, section: Section, content: Markup) -> Markup {
    shell_with_head(title, visitor, section, html! {}, content)
}

/// [`shell`] with more in `<head>` (a progress page's `<noscript>` refresh).
pub fn shell_with_head(
    title: &str,
    visitor: Option<&Visitor>,
    section: Section,
    head: Markup,
    content: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · estate-crm" }
                link rel="stylesheet" href=(assets::stylesheet());
                script src=(assets::script()) defer {}
                (head)
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "estate-crm" }
                    @if let Some(visitor) = visitor {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/" aria-current=[current(section == Section::Dashboard)] { "Dashboard" } }
                                @for kind in RecordKind::ALL {
                                    li { a href=(format!("/{}", kind.plural())) aria-current=[current(section == Section::Records(kind))] { (menu_title(kind)) } }
                                }
                                @if visitor.is_admin() {
                                    li { a href="/settings/webhooks" aria-current=[current(matches!(section, Section::Settings(_)))] { "Settings" } }
                                }
                            }
                        }
                        div.me {
                            a href="/account" aria-current=[current(section == Section::Account)] { (visitor.user.name) }
                            form method="post" action="/logout" {
                                (csrf_field(visitor))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    @if let Section::Settings(tab) = section {
                        (settings_tabs(tab))
                    }
                    (content)
                }
            }
        }
    }
}

fn settings_tabs(tab: Tab) -> Markup {
    let tabs = [
        (Tab::Webhooks, "/settings/webhooks", "Webhooks"),
        (Tab::Endpoints, "/settings/endpoints", "Endpoints"),
        (Tab::Deliveries, "/settings/deliveries", "Deliveries"),
        (Tab::Users, "/settings/users", "Users"),
        (Tab::Integrations, "/settings/integrations/hubspot", "Integrations"),
    ];
    html! {
        nav.tabs aria-label="Settings" {
            ul {
                @for (which, href, text) in tabs {
                    li { a href=(href) aria-current=[current(which == tab)] { (text) } }
                }
            }
        }
    }
}

/// The hidden CSRF field every changing form carries.
pub fn csrf_field(visitor: &Visitor) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(visitor.csrf); }
}

/// A page-level message.
#[derive(Debug, Clone)]
pub enum Flash {
    /// Something worked.
    Ok(String),
    /// Something did not.
    Error(String),
}

/// Shows a flash message, if any.
pub fn flash(message: Option<&Flash>) -> Markup {
    html! {
        @match message {
            Some(Flash::Ok(text)) => div.flash.ok role="status" { (text) },
            Some(Flash::Error(text)) => div.flash.error role="alert" { (text) },
            None => {},
        }
    }
}

/// What an input looks like.
pub struct Input<'a> {
    /// The field's name (and `f-NAME` id).
    pub name: &'a str,
    /// The label's text.
    pub label: &'a str,
    /// The input's type.
    pub kind: &'a str,
    /// Its value.
    pub value: &'a str,
    /// A hint shown under the label.
    pub hint: Option<&'a str>,
    /// Whether it must be filled.
    pub required: bool,
    /// The `autocomplete` attribute.
    pub autocomplete: Option<&'a str>,
}

impl<'a> Input<'a> {
    /// A text input.
    pub fn new(name: &'a str, label: &'a str, value: &'a str) -> Self {
        Input { name, label, kind: "text", value, hint: None, required: false, autocomplete: None }
    }

    /// Of another type.
    pub fn kind(mut self, kind: &'a str) -> Self {
        self.kind = kind;
        self
    }

    /// With a hint.
    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// Required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// With an `autocomplete` value.
    pub fn autocomplete(mut self, value: &'a str) -> Self {
        self.autocomplete = Some(value);
        self
    }

    /// The label, the input, and its error beside it if the field has one.
    pub fn render(&self, errors: &FieldErrors) -> Markup {
        let id = format!("f-{}", self.name);
        let error = errors.fields().get(self.name);
        let error_id = format!("{id}-error");
        let hint_id = format!("{id}-hint");
        let described = match (error.is_some(), self.hint.is_some()) {
            (true, _) => Some(error_id.clone()),
            (false, true) => Some(hint_id.clone()),
            (false, false) => None,
        };
        html! {
            div.field {
                label for=(id) { (self.label) }
                @if let Some(hint) = self.hint { p.hint id=(hint_id) { (hint) } }
                input id=(id) name=(self.name) type=(self.kind) value=(self.value) required[self.required]
                    autocomplete=[self.autocomplete] aria-invalid=[error.map(|_| "true")] aria-describedby=[described];
                (field_error(self.name, errors))
            }
        }
    }
}

/// A field's error, `<p class="field-error" id="f-NAME-error">`, if it has one.
pub fn field_error(name: &str, errors: &FieldErrors) -> Markup {
    html! {
        @if let Some(message) = errors.fields().get(name) {
            p.field-error id=(format!("f-{name}-error")) { (message) }
        }
    }
}

/// A checkbox with its label after it.
pub fn checkbox(name: &str, id: &str, value: &str, label: &str, checked: bool) -> Markup {
    html! {
        div.check {
            input type="checkbox" id=(id) name=(name) value=(value) checked[checked];
            label for=(id) { (label) }
        }
    }
}

/// The event checkboxes, with **All events**, as the original settings screen has them.
pub fn event_checkboxes(all: bool, chosen: &[String], errors: &FieldErrors) -> Markup {
    let error = errors.fields().get("events");
    html! {
        fieldset.events aria-describedby=[error.map(|_| "f-events-error")] aria-invalid=[error.map(|_| "true")] {
            legend { "Events" }
            (checkbox("all_events", "f-all-events", "on", "All events", all))
            div.event-grid {
                @for event in EventName::ALL.into_iter().filter(|e| e.is_subscribable()) {
                    (checkbox("events", &format!("f-event-{}", event.as_str()), event.as_str(), event.as_str(),
                        chosen.iter().any(|c| c == event.as_str())))
                }
            }
            (field_error("events", errors))
        }
    }
}

/// A status badge.
pub fn status_badge(status: DeliveryStatus) -> Markup {
    html! { span class=(format!("badge status-{}", status.as_str())) { (status.as_str()) } }
}

/// A time, readable and machine-readable.
pub fn when(ms: i64) -> Markup {
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) { (time_text(ms)) }
    }
}

/// A moment as the pages write it, for plain text such as a flash message.
pub fn time_text(ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A measured duration in whole milliseconds; 0 means it took less than one, and says so.
pub fn duration_text(ms: u64) -> String {
    if ms == 0 { "<1 ms".to_owned() } else { format!("{ms} ms") }
}

/// The current time, Unix ms.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The JSON object a form becomes before the shared validation reads it.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// A record kind's name in the menu and as its list's title.
pub fn menu_title(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Contact => "Contacts",
        RecordKind::Lead => "Leads",
        RecordKind::Enquiry => "Enquiries",
        RecordKind::Deal => "Deals",
        RecordKind::Task => "Tasks",
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn a_duration_under_a_millisecond_is_not_called_zero() {
        assert_eq!(duration_text(0), "<1 ms");
        assert_eq!(duration_text(1), "1 ms");
        assert_eq!(duration_text(1500), "1500 ms");
    }
}
