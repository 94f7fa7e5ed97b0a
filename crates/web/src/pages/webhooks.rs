//! Settings → Webhooks: the original product's simple screen over the primary endpoint, with the
//! same store calls and checks as `PUT /api/v1/settings/webhook`, the test button and **Rotate
//! secret**. The endpoint form's values and their translation to the API's JSON, and the rotation's
//! form and once-shown answer, live here too, for the endpoint pages.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use estate_crm_domain::FieldErrors;
use estate_crm_domain::webhook::{BodyFormat, EventFilter};
use estate_crm_store::{Endpoint, Rotation};
use estate_crm_webhooks::endpoint_input::{self, DEFAULT_ROTATION_GRACE, SaveError, SavedSettings};
use estate_crm_webhooks::{TestTarget, send_test, standard_webhooks_secret};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::{
    Flash, Input, JsonObject, Section, Tab, csrf_field, duration_text, error_page, event_checkboxes, field_error,
    flash, now_ms, shell, when,
};
use crate::WebState;
use crate::form::FormFields;
use crate::session::{AdminForm, AdminVisitor, Visitor};

/// An endpoint form's values, as shown and as posted.
#[derive(Debug, Clone, Default)]
pub struct EndpointValues {
    pub url: String,
    pub description: String,
    pub all_events: bool,
    pub events: Vec<String>,
    /// A new secret typed or generated; empty keeps the saved one.
    pub secret: String,
    pub retry_schedule: String,
    pub max_in_flight: String,
    pub active: bool,
    /// The body format's API name (`json`, `slack`); empty keeps the saved one.
    pub format: String,
    /// Whether a secret is saved (it is never shown again).
    pub has_secret: bool,
}

impl EndpointValues {
    /// A new endpoint's defaults: every event, active.
    pub fn fresh() -> Self {
        EndpointValues {
            all_events: true,
            active: true,
            max_in_flight: "16".into(),
            format: BodyFormat::default().as_str().into(),
            ..Default::default()
        }
    }

    /// A saved endpoint's values.
    pub fn from_endpoint(endpoint: &Endpoint) -> Self {
        let (all_events, events) = match &endpoint.events {
            EventFilter::All => (true, Vec::new()),
            EventFilter::Only(names) => (false, names.iter().map(|n| n.as_str().to_owned()).collect()),
        };
        EndpointValues {
            url: endpoint.url.clone(),
            description: endpoint.description.clone().unwrap_or_default(),
            all_events,
            events,
            secret: String::new(),
            retry_schedule: endpoint.retry_schedule.as_ref().map(ToString::to_string).unwrap_or_default(),
            max_in_flight: endpoint.max_in_flight.get().to_string(),
            active: endpoint.active,
            format: endpoint.format.as_str().into(),
            has_secret: endpoint.secret.is_some(),
        }
    }

    /// What a form posted; `has_secret` comes from the saved endpoint.
    pub fn from_form(form: &FormFields, saved: Option<&Endpoint>) -> Self {
        EndpointValues {
            url: form.get("url").to_owned(),
            description: form.get("description").to_owned(),
            all_events: form.has("all_events"),
            events: form.all("events").into_iter().map(str::to_owned).collect(),
            secret: form.get("secret").to_owned(),
            retry_schedule: form.get("retry_schedule").to_owned(),
            max_in_flight: form.get("max_in_flight").to_owned(),
            active: form.has("active"),
            format: form.get("format").to_owned(),
            has_secret: saved.is_some_and(|e| e.secret.is_some()),
        }
    }

    /// The events as the API takes them: `*`, or the ticked names (none is refused there, with the
    /// API's message).
    fn events_json(&self) -> Value {
        if self.all_events { json!("*") } else { json!(self.events) }
    }

    /// The simple settings' JSON, as `PUT /api/v1/settings/webhook` takes it. An empty secret field
    /// keeps the saved secret.
    pub fn settings_json(&self) -> Value {
        let mut body = JsonObject::new();
        body.insert("url".into(), json!(self.url));
        body.insert("events".into(), self.events_json());
        body.insert("active".into(), json!(self.active));
        if !self.secret.is_empty() {
            body.insert("secret".into(), json!(self.secret));
        }
        Value::Object(body)
    }

    /// An endpoint's JSON, as the endpoints API takes it. Empty description and schedule mean none
    /// (the server's default schedule); an empty secret field keeps the saved secret.
    pub fn endpoint_json(&self) -> Value {
        let Value::Object(mut body) = self.settings_json() else { unreachable!("an object") };
        let text_or_null = |text: &str| if text.trim().is_empty() { Value::Null } else { json!(text) };
        body.insert("description".into(), text_or_null(&self.description));
        body.insert("retry_schedule".into(), text_or_null(&self.retry_schedule));
        let max = self.max_in_flight.trim();
        if !max.is_empty() {
            // A number goes as a number; anything else as the text, for the API's message about it.
            body.insert("max_in_flight".into(), max.parse::<i64>().map_or_else(|_| json!(max), |n| json!(n)));
        }
        if !self.format.is_empty() {
            body.insert("format".into(), json!(self.format));
        }
        Value::Object(body)
    }

    /// The test button's JSON: the URL and secret in the form, tested before they are saved.
    pub fn test_json(&self) -> JsonObject {
        let mut body = JsonObject::new();
        if !self.url.trim().is_empty() {
            body.insert("url".into(), json!(self.url));
        }
        if !self.secret.is_empty() {
            body.insert("secret".into(), json!(self.secret));
        }
        body
    }
}

/// The signing secret's field, with **Generate**.
pub fn secret_field(values: &EndpointValues, errors: &FieldErrors) -> Markup {
    let hint = if values.has_secret {
        "A secret is set and is never shown again. Type or generate a new one to replace it; leave empty to keep it."
    } else {
        "Receivers check each webhook's signature with it. Leave empty to send unsigned webhooks."
    };
    html! {
        div.secret-row {
            (Input::new("secret", "Signing secret", &values.secret).autocomplete("off").hint(hint).render(errors))
            button.secondary type="submit" name="intent" value="generate" formnovalidate { "Generate" }
        }
    }
}

/// What a body format is called on the pages.
pub fn format_label(format: BodyFormat) -> &'static str {
    match format {
        BodyFormat::Json => "JSON (signed, Standard Webhooks)",
        BodyFormat::Slack => "Slack message",
    }
}

/// The same, short enough for a table column.
pub fn format_short_label(format: BodyFormat) -> &'static str {
    match format {
        BodyFormat::Json => "JSON",
        BodyFormat::Slack => "Slack message",
    }
}

/// The **Format** select; the value goes to the API's parser like any other field.
pub fn format_field(values: &EndpointValues, errors: &FieldErrors) -> Markup {
    let error = errors.fields().get("format");
    let described = if error.is_some() { "f-format-error" } else { "f-format-hint" };
    html! {
        div.field {
            label for="f-format" { "Format" }
            p.hint #f-format-hint { "What each webhook's body is: the signed JSON event, or a line of text for a Slack incoming webhook." }
            select #f-format name="format" aria-invalid=[error.map(|_| "true")] aria-describedby=(described) {
                @for format in [BodyFormat::Json, BodyFormat::Slack] {
                    option value=(format.as_str()) selected[values.format == format.as_str()] { (format_label(format)) }
                }
            }
            (field_error("format", errors))
        }
    }
}

/// The grace periods the rotation form offers, as the API's `grace` takes them.
const GRACE_CHOICES: [(&str, &str); 4] =
    [("1h", "1 hour"), ("24h", "24 hours"), ("168h", "7 days"), ("0s", "None: the old secret stops signing at once")];

/// Until when the endpoint's previous secret still signs beside the current one, if it does.
fn previous_secret_until(endpoint: &Endpoint, now_ms: i64) -> Option<i64> {
    let until = endpoint.previous_secret_until?;
    (endpoint.previous_secret.is_some() && endpoint.secret.is_some() && until > now_ms).then_some(until)
}

/// **Rotate secret** for an endpoint that has a secret, posting to `action`; and, while a rotation
/// is in progress, until when the previous secret keeps signing. `grace` is the choice to show
/// selected; a refused one has its message in `errors` under `grace`.
pub fn rotate_section(
    visitor: &Visitor,
    action: &str,
    endpoint: Option<&Endpoint>,
    grace: &str,
    errors: &FieldErrors,
) -> Markup {
    let Some(endpoint) = endpoint.filter(|e| e.secret.is_some()) else { return html! {} };
    let error = errors.fields().get("grace");
    let described = if error.is_some() { "f-grace-error" } else { "f-grace-hint" };
    html! {
        section.rotate aria-labelledby="rotate-heading" {
            h2 #rotate-heading { "Rotate secret" }
            @if let Some(until) = previous_secret_until(endpoint, now_ms()) {
                p #previous-secret { "The previous secret keeps signing until " (when(until)) "." }
            }
            form.card method="post" novalidate action=(action) {
                (csrf_field(visitor))
                div.field {
                    label for="f-grace" { "Keep the old secret valid for" }
                    p.hint #f-grace-hint { "Rotating replaces the signing secret with a new random one, shown once. Until the old one expires, each webhook is signed with both, so receivers can switch without missing one." }
                    select #f-grace name="grace" aria-invalid=[error.map(|_| "true")] aria-describedby=(described) {
                        @for (value, text) in GRACE_CHOICES {
                            option value=(value) selected[grace == value] { (text) }
                        }
                    }
                    (field_error("grace", errors))
                }
                div.actions { button.secondary type="submit" { "Rotate secret" } }
            }
        }
    }
}

/// The answer to a rotation: the new secret, as set and in its `whsec_` form, shown this once.
pub fn new_secret_panel(rotation: Option<&Rotation>) -> Markup {
    let Some(rotation) = rotation else { return html! {} };
    let secret = rotation.endpoint.secret.as_deref().unwrap_or_default();
    html! {
        div.card.token-once #new-secret role="status" {
            p { strong { "The new signing secret, shown this once:" }
                " copy it into your receiver now. It won't be shown again; only a new rotation makes another." }
            div.field {
                label for="f-new-secret" { "New secret" }
                input #f-new-secret type="text" readonly value=(secret) autocomplete="off";
            }
            div.field {
                label for="f-new-secret-standard" { "The same secret for Standard Webhooks libraries (whsec_)" }
                input #f-new-secret-standard type="text" readonly value=(standard_webhooks_secret(secret.as_bytes())) autocomplete="off";
            }
            p {
                @if let Some(until) = rotation.previous_valid_until {
                    "The old secret stays valid, signing beside the new one, until " (when(until)) "."
                } @else {
                    "The old secret no longer signs: webhooks carry the new signature alone."
                }
            }
        }
    }
}

/// The grace a rotation form posted; empty takes the default.
pub fn posted_grace(form: &FormFields) -> Option<&str> {
    Some(form.get("grace")).filter(|g| !g.is_empty())
}

/// The **Active** checkbox.
pub fn active_field(values: &EndpointValues) -> Markup {
    super::checkbox("active", "f-active", "on", "Active", values.active)
}

/// What the test button found.
#[derive(Debug, Clone)]
pub enum TestOutcome {
    /// The receiver answered (or the attempt failed) and it is in the log.
    Sent(estate_crm_webhooks::TestResult),
    /// The test could not be sent: the URL or secret is wrong.
    Refused(String),
}

/// `<div id="test-result">` with the outcome, if there is one.
pub fn test_result(outcome: Option<&TestOutcome>) -> Markup {
    html! {
        div #test-result .test-result aria-live="polite" {
            @if let Some(outcome) = outcome { (test_outcome(outcome)) }
        }
    }
}

/// The inside of `#test-result`: the status code as digits and the first 200 characters of the
/// answer, or the error in words.
pub fn test_outcome(outcome: &TestOutcome) -> Markup {
    html! {
        @match outcome {
            TestOutcome::Sent(result) => {
                div class=(if result.ok { "outcome ok" } else { "outcome failed" }) {
                    p {
                        @if let Some(code) = result.status_code {
                            "Answered " strong.code { (code) } " in " (duration_text(result.duration_ms)) "."
                        } @else {
                            "No answer after " (duration_text(result.duration_ms)) "."
                        }
                        " "
                        a href=(format!("/settings/deliveries/{}", result.delivery_id)) { "See it in the log" }
                    }
                    @if let Some(error) = &result.error { p.error-text { (error) } }
                    @if !result.body.is_empty() { pre.answer { (result.body) } }
                }
            }
            TestOutcome::Refused(message) => {
                div.outcome.failed { p.error-text { "Not sent: " (message) } }
            }
        }
    }
}

/// Sends a test to the form's URL and secret, or the saved ones.
pub async fn run_test(state: &WebState, saved: Option<&Endpoint>, values: &EndpointValues) -> TestOutcome {
    let (url, secrets) = match endpoint_input::test_target(saved, &values.test_json(), now_ms()) {
        Ok(target) => target,
        Err(errors) => return TestOutcome::Refused(errors.to_string()),
    };
    let config = &state.inner.config;
    let format = saved.map(|e| e.format).unwrap_or_default();
    let target = TestTarget { endpoint_id: saved.map(|e| e.id.as_str()), url: &url, secrets, format };
    match send_test(&config.store, &config.sender, &config.site_url, target).await {
        Ok(result) => TestOutcome::Sent(result),
        Err(err) => {
            tracing::error!(error = %err, "recording a test failed");
            TestOutcome::Refused("the test could not be recorded; try again in a moment".into())
        }
    }
}

/// Whether the script asked for the test result alone (to put it in place).
pub fn wants_fragment(headers: &HeaderMap) -> bool {
    headers.get("x-requested-with").is_some_and(|v| v.as_bytes() == b"fetch")
}

/// A new secret for **Generate**: 32 random bytes.
pub fn generated_secret() -> String {
    format!("whsec_{}", estate_crm_store::credentials::random_base64(32))
}

struct View<'a> {
    values: &'a EndpointValues,
    errors: &'a FieldErrors,
    message: Option<Flash>,
    test: Option<TestOutcome>,
    /// The primary endpoint as saved, for **Rotate secret**.
    saved: Option<&'a Endpoint>,
    /// A rotation just made, to show its secret once.
    rotation: Option<&'a Rotation>,
    /// The grace to show chosen.
    grace: &'a str,
}

impl<'a> View<'a> {
    fn new(values: &'a EndpointValues, errors: &'a FieldErrors, saved: Option<&'a Endpoint>) -> Self {
        View { values, errors, message: None, test: None, saved, rotation: None, grace: DEFAULT_ROTATION_GRACE }
    }

    fn message(self, message: Option<Flash>) -> Self {
        View { message, ..self }
    }
}

fn render(visitor: &Visitor, view: View<'_>) -> Markup {
    let View { values, errors, message, test, saved, rotation, grace } = view;
    let body = html! {
        h1 { "Webhooks" }
        p.lead { "Send every change in the CRM to one address: paste its URL, choose the events, set a secret, save, and press Test Webhook." }
        (flash(message.as_ref()))
        (new_secret_panel(rotation))
        form.card method="post" novalidate action="/settings/webhooks" {
            (csrf_field(visitor))
            (Input::new("url", "Destination URL", &values.url).kind("url").autocomplete("off")
                .hint("Where webhooks are sent, such as https://example.com/hooks. Empty switches webhooks off.").render(errors))
            (event_checkboxes(values.all_events, &values.events, errors))
            (secret_field(values, errors))
            (active_field(values))
            div.actions {
                button.primary type="submit" { "Save" }
                button.secondary type="submit" formaction="/settings/webhooks/test" data-test { "Test Webhook" }
            }
            (test_result(test.as_ref()))
        }
        (rotate_section(visitor, "/settings/webhooks/rotate-secret", saved, grace, errors))
        p.more { "Several destinations, retry schedules and the delivery log are under "
            a href="/settings/endpoints" { "Endpoints" } " and " a href="/settings/deliveries" { "Deliveries" } "." }
    };
    shell("Webhook settings", Some(visitor), Section::Settings(Tab::Webhooks), body)
}

/// `GET /settings/webhooks`.
pub async fn page(State(state): State<WebState>, AdminVisitor(visitor): AdminVisitor) -> Response {
    let saved = match state.store().primary_endpoint().await {
        Ok(saved) => saved,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let values = saved.as_ref().map_or_else(EndpointValues::fresh, EndpointValues::from_endpoint);
    render(&visitor, View::new(&values, &FieldErrors::new(), saved.as_ref())).into_response()
}

/// `POST /settings/webhooks`: saves through the API's own rules, or fills in a generated secret.
pub async fn save(State(state): State<WebState>, AdminForm { visitor, form }: AdminForm) -> Response {
    let saved = match state.store().primary_endpoint().await {
        Ok(saved) => saved,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let mut values = EndpointValues::from_form(&form, saved.as_ref());
    let no_errors = FieldErrors::new();
    if form.get("intent") == "generate" {
        values.secret = generated_secret();
        let message =
            Some(Flash::Ok("A new secret is in the field: copy it for your receiver, then Save to keep it.".into()));
        return render(&visitor, View::new(&values, &no_errors, saved.as_ref()).message(message)).into_response();
    }
    match endpoint_input::save_settings(state.store(), state.inner.config.policy, &values.settings_json()).await {
        Ok(SavedSettings::Saved(endpoint, input)) => {
            let mut text = "Saved.".to_owned();
            for warning in &input.warnings {
                text.push_str(&format!(" Note: {warning}."));
            }
            let values = EndpointValues::from_endpoint(&endpoint);
            let view = View::new(&values, &no_errors, Some(&endpoint)).message(Some(Flash::Ok(text)));
            render(&visitor, view).into_response()
        }
        Ok(SavedSettings::Removed) => {
            let values = EndpointValues::fresh();
            let message = Some(Flash::Ok("Saved. Webhooks are off: there is no destination URL.".into()));
            render(&visitor, View::new(&values, &no_errors, None).message(message)).into_response()
        }
        Err(SaveError::Invalid(errors)) => refused(&visitor, View::new(&values, &errors, saved.as_ref())),
        Err(SaveError::Store(err)) => match err.kind() {
            estate_crm_store::ErrorKind::Invalid(errors) | estate_crm_store::ErrorKind::Conflict(errors) => {
                refused(&visitor, View::new(&values, errors, saved.as_ref()))
            }
            _ => error_page::store(&visitor, &err),
        },
    }
}

fn refused(visitor: &Visitor, view: View<'_>) -> Response {
    let message = Some(Flash::Error("Not saved: correct the fields marked below.".into()));
    (StatusCode::UNPROCESSABLE_ENTITY, render(visitor, view.message(message))).into_response()
}

/// `POST /settings/webhooks/test`: tests the URL and secret in the form (or the saved ones); the
/// script puts the answer in place, and without it the page comes back with the answer filled in.
pub async fn test(
    State(state): State<WebState>,
    headers: HeaderMap,
    AdminForm { visitor, form }: AdminForm,
) -> Response {
    let saved = match state.store().primary_endpoint().await {
        Ok(saved) => saved,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let values = EndpointValues::from_form(&form, saved.as_ref());
    let outcome = run_test(&state, saved.as_ref(), &values).await;
    if wants_fragment(&headers) {
        return test_outcome(&outcome).into_response();
    }
    let no_errors = FieldErrors::new();
    render(&visitor, View { test: Some(outcome), ..View::new(&values, &no_errors, saved.as_ref()) }).into_response()
}

/// `POST /settings/webhooks/rotate-secret`: the primary endpoint's **Rotate secret**, through the
/// same call as `POST /api/v1/settings/webhook/rotate-secret`; the answer shows the new secret once.
pub async fn rotate(State(state): State<WebState>, AdminForm { visitor, form }: AdminForm) -> Response {
    let saved = match state.store().primary_endpoint().await {
        Ok(Some(saved)) => saved,
        Ok(None) => {
            let values = EndpointValues::fresh();
            let message =
                Some(Flash::Error("Not rotated: no webhook URL is saved yet; save one with a secret first.".into()));
            let page = render(&visitor, View::new(&values, &FieldErrors::new(), None).message(message));
            return (StatusCode::NOT_FOUND, page).into_response();
        }
        Err(err) => return error_page::store(&visitor, &err),
    };
    let grace = posted_grace(&form);
    match endpoint_input::rotate_secret(state.store(), &saved.id, grace).await {
        Ok(rotation) => {
            let values = EndpointValues::from_endpoint(&rotation.endpoint);
            let no_errors = FieldErrors::new();
            let view = View { rotation: Some(&rotation), ..View::new(&values, &no_errors, Some(&rotation.endpoint)) };
            render(&visitor, view).into_response()
        }
        Err(SaveError::Invalid(errors)) => {
            let values = EndpointValues::from_endpoint(&saved);
            let message = Some(Flash::Error("Not rotated: correct the field marked below.".into()));
            let view = View { grace: grace.unwrap_or_default(), ..View::new(&values, &errors, Some(&saved)) };
            (StatusCode::UNPROCESSABLE_ENTITY, render(&visitor, view.message(message))).into_response()
        }
        Err(SaveError::Store(err)) => error_page::store(&visitor, &err),
    }
}
